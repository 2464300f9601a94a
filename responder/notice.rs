//! Notices people read, all from the report (the one source of truth), in several formats: the
//! SNS text (subject and body), an Amazon Q Developer in chat applications (formerly AWS
//! Chatbot) custom notification, which Slack and Microsoft Teams channels show as a card, and a
//! Slack Block Kit message for an incoming webhook. Each says the severity, the finding, the
//! resource with console links, what was done and what failed, what the workload can still
//! reach, how to release, and where the evidence is. Pure.

use serde_json::{json, Value};

use crate::actions::StepOutput;
use crate::incident::Target;
use crate::network::reach::Verdict;
use crate::report::{Outcome, Report};

/// A notice's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeFormat {
    /// The SNS subject and body (email, SMS, any subscriber).
    Text,
    /// An Amazon Q Developer in chat applications custom notification (JSON).
    Chatbot,
    /// A Slack Block Kit message (JSON), for an incoming webhook.
    Slack,
}

impl NoticeFormat {
    /// Every format, by the name the CLI takes.
    pub const ALL: &'static [(&'static str, NoticeFormat)] = &[
        ("text", NoticeFormat::Text),
        ("chatbot", NoticeFormat::Chatbot),
        ("slack", NoticeFormat::Slack),
    ];

    /// The format with this name.
    pub fn parse(name: &str) -> Option<NoticeFormat> {
        NoticeFormat::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

/// The notice in `format`: text is the subject, a blank line and the body; the others are JSON.
pub fn render(report: &Report, format: NoticeFormat, subject_prefix: Option<&str>) -> String {
    let facts = Facts::of(report, subject_prefix);
    match format {
        NoticeFormat::Text => format!("{}\n\n{}", facts.subject, facts.body),
        NoticeFormat::Chatbot => facts.chatbot().to_string(),
        NoticeFormat::Slack => facts.slack().to_string(),
    }
}

/// The Amazon Q Developer in chat applications custom notification for a report.
pub fn chatbot(report: &Report, subject_prefix: Option<&str>) -> Value {
    Facts::of(report, subject_prefix).chatbot()
}

/// What every format says, gathered once.
struct Facts {
    subject: String,
    body: String,
    finding_id: Option<String>,
    severity: String,
    finding_type: String,
    /// (label, value, console link)
    resource: Vec<(&'static str, String, Option<String>)>,
    related: Vec<String>,
    done: Vec<String>,
    failed: Vec<String>,
    not_done: Vec<String>,
    /// Steps of a plan not carried out (a dry run, `responder render`).
    planned: Vec<String>,
    /// Destination classes still reachable, with the rule that decides.
    open: Vec<String>,
    notes: Vec<String>,
    release: Option<String>,
    /// (s3:// location, console link)
    evidence: Option<(String, String)>,
}

impl Facts {
    fn of(report: &Report, subject_prefix: Option<&str>) -> Facts {
        let (subject, body) = report.notification(subject_prefix);
        let region = report.region.clone().unwrap_or_default();
        let console = console_base(&region);
        let mut resource = Vec::new();
        let mut related = Vec::new();
        if let Some(account) = &report.account_id {
            resource.push(("Account", account.clone(), None));
        }
        if !region.is_empty() {
            resource.push(("Region", region.clone(), None));
        }
        match &report.target {
            Some(Target::EcsTask(task)) => {
                resource.push(("Cluster", task.cluster_name.clone(), None));
                if let Some(service) = &task.service {
                    resource.push(("Service", service.clone(), None));
                }
                resource.push((
                    "Task",
                    task.task_id.clone(),
                    Some(format!(
                        "{console}/ecs/v2/clusters/{}/tasks/{}?region={region}",
                        task.cluster_name, task.task_id
                    )),
                ));
                related.push(task.task_arn.clone());
                related.push(task.cluster_arn.clone());
            }
            Some(Target::Ec2Instance(instance)) => {
                resource.push((
                    "Instance",
                    instance.instance_id.clone(),
                    Some(format!(
                        "{console}/ec2/home?region={region}#InstanceDetails:instanceId={}",
                        instance.instance_id
                    )),
                ));
                related.push(instance.instance_id.clone());
            }
            Some(other) => resource.push(("Resource", other.label(), None)),
            None => {}
        }
        if let Some(id) = &report.finding_id {
            resource.push((
                "Finding",
                id.clone(),
                Some(format!(
                    "{console}/guardduty/home?region={region}#/findings?macros=current&fId={id}"
                )),
            ));
        }
        let (mut done, mut failed, mut not_done, mut planned) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut evidence = None;
        let mut contained = false;
        for step in &report.steps {
            let name = step.action.name();
            match &step.outcome {
                Some(Outcome::Done {
                    summary, detail, ..
                }) => {
                    if name != "notify" {
                        done.push(format!("{name}: {summary}"));
                    }
                    match detail {
                        StepOutput::Evidence(stored) => {
                            evidence = Some((
                                format!("s3://{}/{}", stored.bucket, stored.prefix),
                                // The bucket is in the function's region, which the report
                                // does not name: the console finds the bucket by name.
                                format!(
                                    "{console}/s3/buckets/{}?prefix={}",
                                    stored.bucket, stored.prefix
                                ),
                            ))
                        }
                        StepOutput::Isolate(isolated) => {
                            contained |= isolated.contained().is_some()
                        }
                        _ => {}
                    }
                }
                Some(Outcome::Failed { error, .. }) => failed.push(format!("{name}: {error}")),
                Some(Outcome::Skipped {
                    reason, earlier, ..
                }) => {
                    if let Some(StepOutput::Isolate(isolated)) = earlier {
                        contained |= isolated.contained().is_some();
                    }
                    if name != "notify" {
                        not_done.push(format!("{name}: {reason}"));
                    }
                }
                None => planned.push(format!("{name}: {}", step.reason)),
            }
        }
        let open = report
            .containment()
            .map(|record| {
                record
                    .reachability
                    .iter()
                    .filter(|row| row.verdict == Verdict::Open)
                    .map(|row| format!("{}: {}", row.class.name(), row.reason))
                    .collect()
            })
            .unwrap_or_default();
        let release = report
            .finding_id
            .as_ref()
            .filter(|_| contained)
            .map(|id| format!("responder release {id}"));
        Facts {
            subject,
            body,
            finding_id: report.finding_id.clone(),
            severity: match (report.band, report.severity) {
                (Some(band), Some(score)) => format!("{} ({score})", band.name()),
                (Some(band), None) => band.name().to_string(),
                _ => "-".to_string(),
            },
            finding_type: report
                .finding_type
                .clone()
                .unwrap_or_else(|| "event".to_string()),
            resource,
            related,
            done,
            failed,
            not_done,
            planned,
            open,
            notes: report.notes.clone(),
            release,
            evidence,
        }
    }

    /// The titled lists every format shows, in order, the empty ones left out.
    fn sections(&self) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
        [
            ("Done", &self.done),
            ("Failed", &self.failed),
            ("Not done", &self.not_done),
            ("Planned, not carried out", &self.planned),
            ("Still reachable", &self.open),
            ("Notes", &self.notes),
        ]
        .into_iter()
        .filter(|(_, lines)| !lines.is_empty())
    }

    fn chatbot(&self) -> Value {
        let mut description = vec![
            format!("*{}*, severity {}", self.finding_type, self.severity),
            String::new(),
        ];
        for (label, value, link) in &self.resource {
            description.push(match link {
                Some(link) => format!("*{label}:* {value} ({link})"),
                None => format!("*{label}:* {value}"),
            });
        }
        for (title, lines) in self.sections() {
            description.push(String::new());
            description.push(format!("*{title}*"));
            description.extend(lines.iter().map(|l| format!("• {l}")));
        }
        let mut next_steps = Vec::new();
        if let Some(release) = &self.release {
            next_steps.push(format!(
                "Release once the investigation allows it: `{release}`"
            ));
        }
        if let Some((location, _)) = &self.evidence {
            next_steps.push(format!("Evidence: {location}"));
        }
        let mut notice = json!({
            "version": "1.0",
            "source": "custom",
            "id": self.finding_id,
            "content": {
                "textType": "client-markdown",
                "title": clip(&self.subject, 250),
                "description": clip(&description.join("\n"), 8000),
                "nextSteps": next_steps,
                "keywords": [self.severity.split(' ').next().unwrap_or("-"), self.finding_type.rsplit('/').next().unwrap_or("")],
            },
            "metadata": {
                // One thread per finding: a republished finding's notices follow the first.
                "threadId": self.finding_id,
                "summary": clip(&self.subject, 250),
                "eventType": "GuardDutyRuntimeResponse",
                "relatedResources": self.related,
            },
        });
        // Without a finding (an unreadable event), no id and no thread rather than nulls.
        if self.finding_id.is_none() {
            if let Some(object) = notice.as_object_mut() {
                object.remove("id");
            }
            if let Some(metadata) = notice["metadata"].as_object_mut() {
                metadata.remove("threadId");
            }
        }
        notice
    }

    fn slack(&self) -> Value {
        let mut blocks = vec![json!({
            "type": "header",
            "text": {"type": "plain_text", "text": clip(&self.subject, 150)},
        })];
        let mut fields = vec![
            json!({"type": "mrkdwn", "text": clip(&format!("*Severity*\n{}", escape(&self.severity)), 2000)}),
            json!({"type": "mrkdwn", "text": clip(&format!("*Finding type*\n{}", escape(&self.finding_type)), 2000)}),
        ];
        for (label, value, link) in &self.resource {
            let value = match link {
                Some(link) => format!("<{link}|{}>", escape(value)),
                None => escape(value),
            };
            fields.push(
                json!({"type": "mrkdwn", "text": clip(&format!("*{label}*\n{value}"), 2000)}),
            );
        }
        // Slack takes at most 10 fields per section.
        for chunk in fields.chunks(10) {
            blocks.push(json!({"type": "section", "fields": chunk}));
        }
        for (title, lines) in self.sections() {
            let text = lines
                .iter()
                .map(|l| format!("• {}", escape(l)))
                .collect::<Vec<_>>()
                .join("\n");
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": clip(&format!("*{title}*\n{text}"), 3000)},
            }));
        }
        let mut context = Vec::new();
        if let Some(release) = &self.release {
            context.push(format!("Release: `{}`", escape(release)));
        }
        if let Some((location, link)) = &self.evidence {
            context.push(format!("Evidence: <{link}|{}>", escape(location)));
        }
        if !context.is_empty() {
            blocks.push(json!({
                "type": "context",
                "elements": context.iter().map(|c| json!({"type": "mrkdwn", "text": clip(c, 2000)})).collect::<Vec<_>>(),
            }));
        }
        // The fallback text is mrkdwn too.
        json!({"text": clip(&escape(&self.subject), 3000), "blocks": blocks})
    }
}

/// The AWS console's address for a region (China and GovCloud have their own).
fn console_base(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://{region}.console.amazonaws.cn")
    } else if region.starts_with("us-gov-") {
        "https://console.amazonaws-us-gov.com".to_string()
    } else {
        format!("https://{region}.console.aws.amazon.com")
    }
}

/// Slack's mrkdwn treats these three as markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_text_is_clipped_with_an_ellipsis() {
        assert_eq!(NoticeFormat::parse("slack"), Some(NoticeFormat::Slack));
        assert_eq!(NoticeFormat::parse("teams"), None);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(escape("<a & b>"), "&lt;a &amp; b&gt;");
        assert_eq!(
            console_base("cn-north-1"),
            "https://cn-north-1.console.amazonaws.cn"
        );
    }
}
