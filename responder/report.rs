//! The report for one received event: what was understood, decided and (later) done.
//! The same value is printed by the CLI, returned by the Lambda, sent in notifications and
//! written to the audit ledger.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::actions::isolate::IsolateOutput;
use crate::actions::{ActionName, StepOutput};
use crate::event::{EventError, Inbound};
use crate::incident::{Incident, SeverityBand, Target};
use crate::network::reach::Verdict;
use crate::plan::{Decision, Step};
use crate::playbook::Mode;
use crate::respond::ReleaseSummary;

/// The longest SNS subject: "less than 100 characters long".
pub const SUBJECT_MAX: usize = 99;

/// `1 entry`, `3 entries`: counts in words people read, not `entr(ies)`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The decision as one word, for JSON consumers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Steps were planned (and carried out, unless only printed).
    Act,
    /// Nothing is to be done.
    Skip,
    /// A stopped task's quarantine is to be released.
    Release,
    /// The scheduled sweep for quarantine entries left behind.
    Sweep,
    /// A running task's images checked against held ones.
    Watch,
    /// The event could not be handled.
    Error,
}

impl DecisionKind {
    /// The kind as one lowercase word (`act`, `skip`, `release`, `error`).
    pub fn name(self) -> &'static str {
        match self {
            DecisionKind::Act => "act",
            DecisionKind::Skip => "skip",
            DecisionKind::Release => "release",
            DecisionKind::Sweep => "sweep",
            DecisionKind::Watch => "watch",
            DecisionKind::Error => "error",
        }
    }
}

/// How one step turned out (absent in a plan that has not been executed).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Carried out by this invocation.
    Done {
        /// One line for people.
        summary: String,
        /// What the action did, typed.
        detail: StepOutput,
    },
    /// Not carried out here (dry-run, exempt, done before, withheld, ...).
    Skipped {
        /// Why.
        reason: String,
        /// What an earlier invocation did, when it did this step (so a retry's report and
        /// notice still say what is in force).
        #[serde(skip_serializing_if = "Option::is_none")]
        earlier: Option<StepOutput>,
    },
    /// Tried and failed.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether a retry may succeed (throttling, 5xx).
        retryable: bool,
        /// Changes made before the failure, kept and recorded (so `release` can undo them).
        #[serde(skip_serializing_if = "Option::is_none")]
        partial: Option<StepOutput>,
    },
}

impl Outcome {
    /// Not carried out here, for this reason.
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome::Skipped {
            reason: reason.into(),
            earlier: None,
        }
    }

    /// What the step did, now or in an earlier invocation.
    pub fn output(&self) -> Option<&StepOutput> {
        match self {
            Outcome::Done { detail, .. } => Some(detail),
            Outcome::Skipped { earlier, .. } => earlier.as_ref(),
            Outcome::Failed { partial, .. } => partial.as_ref(),
        }
    }

    /// The output of a step done now.
    pub fn done(detail: StepOutput) -> Outcome {
        Outcome::Done {
            summary: detail.summary(),
            detail,
        }
    }
}

/// A shared value serialised as the value itself (serde's `rc` feature would do the same for
/// every `Arc` in the build).
pub(crate) fn serialize_shared<S: serde::Serializer>(
    value: &std::sync::Arc<serde_json::Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(value.as_ref(), serializer)
}

/// One step of the plan, with its outcome once executed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The action.
    pub action: ActionName,
    /// The rule that asked for the step.
    pub rule: String,
    /// The mode the step runs in.
    pub mode: Mode,
    /// Why the step is in the plan.
    pub reason: String,
    /// The action's parameters, as JSON.
    #[serde(serialize_with = "serialize_shared")]
    pub params: std::sync::Arc<serde_json::Value>,
    /// How the step turned out; absent until it is executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// How long the step took, in milliseconds, once executed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl From<&Step> for StepReport {
    fn from(step: &Step) -> Self {
        StepReport {
            action: step.action,
            rule: step.rule.clone(),
            mode: step.mode,
            reason: step.reason.clone(),
            params: step.params.clone(),
            outcome: None,
            duration_ms: None,
        }
    }
}

/// How a containment step waiting for a person is reported (and how the notice knows).
pub const AWAITING_APPROVAL: &str = "awaiting approval";

/// One line of `--output json`; one audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Where the event came from (a file name, `-` for stdin, or the Lambda request id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The finding's id, when the event was a finding.
    pub finding_id: Option<String>,
    /// The finding type.
    pub finding_type: Option<String>,
    /// GuardDuty's severity score.
    pub severity: Option<f64>,
    /// The severity band.
    pub band: Option<SeverityBand>,
    /// The account that owns the resource.
    pub account_id: Option<String>,
    /// The finding's region.
    pub region: Option<String>,
    /// How many times GuardDuty has seen the activity.
    pub count: Option<u64>,
    /// What the finding is about.
    pub target: Option<Target>,
    /// The process Runtime Monitoring observed (its command line redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::incident::ProcessSummary>,
    /// The decision, as one word.
    pub decision: DecisionKind,
    /// The rule that decided, when one matched.
    pub rule: Option<String>,
    /// The mode the plan runs in, when acting.
    pub mode: Option<Mode>,
    /// The deciding rule's own mode, when acting: differs from `mode` when a deployment-wide
    /// ceiling (`RESPONDER_MODE`, `replay --dry-run`) capped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_mode: Option<Mode>,
    /// The planned steps, with their outcomes once executed.
    pub steps: Vec<StepReport>,
    /// The reason for the decision, or the error, for people.
    pub reason: String,
    /// The skip reason's code (e.g. `sample_finding`), when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_code: Option<&'static str>,
    /// Things a reader should know (exemptions applied, duplicate steps dropped, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Set when the event could not be handled; the CLI then exits with status 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What ECS's scheduler will do with a contained service task, from the service's settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_outlook: Option<crate::actions::scheduler::EcsOutlook>,
    /// Containment held back by the blast-radius guard or the breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<Withheld>,
    /// How the plan was carried out (absent for a plan that was only printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution: Option<Execution>,
}

/// Containment the guard or the breaker held back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Withheld {
    /// Which limit held it back.
    pub by: WithheldBy,
    /// Why, with the numbers.
    pub reason: String,
}

/// The limit that held containment back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithheldBy {
    /// The per-service blast-radius guard.
    BlastRadius,
    /// The account-wide breaker.
    Breaker,
}

impl Withheld {
    /// The note that heads the report and the notification.
    pub fn loud(&self) -> String {
        match self.by {
            WithheldBy::Breaker => format!("CONTAINMENT WITHHELD (breaker): {}", self.reason),
            WithheldBy::BlastRadius => {
                format!("CONTAINMENT WITHHELD (blast-radius guard): {}", self.reason)
            }
        }
    }
}

/// Facts about carrying out a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Execution {
    /// The invocation that handled the event (the Lambda request id, or a `cli-...` id).
    pub invocation_id: String,
    /// When handling began (RFC 3339).
    pub started_at: String,
    /// How long handling took, in milliseconds.
    pub duration_ms: u64,
    /// From receipt to the workload being cut off, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containment_ms: Option<u64>,
    /// Where the audit record was written (`pk / sk` in the ledger table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
    /// Approvals that expired now, nobody having decided them (finding ids); each was told.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired_approvals: Vec<String>,
    /// A step failed in a way a retry can fix (throttling, 5xx): the Lambda returns an error
    /// so the event is retried; the ledger keeps finished steps from repeating.
    pub retryable: bool,
    /// What a release (task stopped, or `responder release`) did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseSummary>,
    /// What the scheduled sweep did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<crate::respond::SweepReport>,
    /// Held images a running task runs (a Task State Change checked for `hold-deployment`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::respond::WatchResult>,
}

impl Report {
    /// A report for an event that could not be read.
    pub fn for_error(input: Option<String>, error: &EventError) -> Report {
        Report {
            input,
            finding_id: None,
            finding_type: None,
            severity: None,
            band: None,
            account_id: None,
            region: None,
            count: None,
            target: None,
            process: None,
            decision: DecisionKind::Error,
            rule: None,
            mode: None,
            rule_mode: None,
            steps: Vec::new(),
            reason: error.to_string(),
            skip_code: None,
            notes: Vec::new(),
            error: Some(error.to_string()),
            ecs_outlook: None,
            withheld: None,
            execution: None,
        }
    }

    /// A report for a parsed event and its decision (steps not yet executed).
    pub fn for_decision(input: Option<String>, inbound: &Inbound, decision: &Decision) -> Report {
        let incident: Option<&Incident> = match inbound {
            Inbound::Finding { incident, .. } => Some(incident),
            Inbound::Foreign { .. } | Inbound::TaskStateChange(_) | Inbound::Sweep { .. } => None,
        };
        let (kind, rule, mode, steps, notes, skip_code) = match decision {
            Decision::Act(plan) => (
                DecisionKind::Act,
                Some(plan.rule.clone()),
                Some(plan.mode),
                plan.steps.iter().map(StepReport::from).collect(),
                plan.notes.clone(),
                None,
            ),
            Decision::Skip(reason) => (
                DecisionKind::Skip,
                None,
                None,
                Vec::new(),
                Vec::new(),
                Some(reason.code()),
            ),
            Decision::Release { .. } => (
                DecisionKind::Release,
                None,
                None,
                Vec::new(),
                Vec::new(),
                None,
            ),
            Decision::Watch { .. } => (
                DecisionKind::Watch,
                None,
                None,
                Vec::new(),
                Vec::new(),
                None,
            ),
            Decision::Sweep { .. } => (
                DecisionKind::Sweep,
                None,
                None,
                Vec::new(),
                Vec::new(),
                None,
            ),
        };
        Report {
            input,
            finding_id: incident.map(|i| i.finding_id.clone()),
            finding_type: incident.map(|i| i.finding_type.clone()),
            severity: incident.map(|i| i.severity),
            band: incident.map(|i| i.band),
            account_id: incident.map(|i| i.account_id.clone()),
            region: incident.map(|i| i.region.clone()),
            count: incident.map(|i| i.count),
            target: incident.map(|i| i.target.clone()),
            process: incident.and_then(|i| i.process.clone()),
            decision: kind,
            rule,
            mode,
            rule_mode: match decision {
                Decision::Act(plan) => Some(plan.rule_mode),
                _ => None,
            },
            steps,
            reason: decision.reason(),
            skip_code,
            notes,
            error: None,
            ecs_outlook: None,
            withheld: None,
            execution: None,
        }
    }

    /// One CloudWatch Embedded Metric Format line: metrics from the log, with no API call.
    /// Namespace `GuardDutyResponder`, dimension `Decision`.
    pub fn emf_line(&self, timestamp_ms: i64) -> String {
        let count = |wanted: fn(&Outcome) -> bool| {
            self.steps
                .iter()
                .filter(|s| s.outcome.as_ref().is_some_and(wanted))
                .count()
        };
        let execution = self.execution.as_ref();
        let mut metrics = vec![
            serde_json::json!({"Name": "Events", "Unit": "Count"}),
            serde_json::json!({"Name": "StepsDone", "Unit": "Count"}),
            serde_json::json!({"Name": "StepsFailed", "Unit": "Count"}),
            serde_json::json!({"Name": "Duration", "Unit": "Milliseconds"}),
        ];
        let containment_ms = execution.and_then(|e| e.containment_ms);
        if containment_ms.is_some() {
            metrics.push(serde_json::json!({"Name": "ContainmentLatency", "Unit": "Milliseconds"}));
        }
        // Workloads the fullest network ACL can still take in quarantine: alarm before the
        // quota refuses a containment.
        let headroom = self.containment().and_then(|c| c.vpc_headroom());
        if headroom.is_some() {
            metrics.push(serde_json::json!({"Name": "AclHeadroom", "Unit": "Count"}));
        }
        // Containment the guard or the breaker held back: alarm on it.
        let withheld = self.withheld.as_ref().map(|w| w.by);
        if withheld.is_some() {
            metrics.push(serde_json::json!({"Name": "ContainmentWithheld", "Unit": "Count"}));
        }
        if withheld == Some(WithheldBy::Breaker) {
            metrics.push(serde_json::json!({"Name": "BreakerOpen", "Unit": "Count"}));
        }
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": "GuardDutyResponder",
                    "Dimensions": [["Decision"]],
                    "Metrics": metrics,
                }],
            },
            "Decision": self.decision.name(),
            "Events": 1,
            "StepsDone": count(|o| matches!(o, Outcome::Done { .. })),
            "StepsFailed": count(|o| matches!(o, Outcome::Failed { .. })),
            "Duration": execution.map_or(0, |e| e.duration_ms),
            "finding_id": self.finding_id,
            "finding_type": self.finding_type,
            "rule": self.rule,
        });
        if let Some(ms) = containment_ms {
            line["ContainmentLatency"] = ms.into();
        }
        if let Some(tasks) = headroom {
            line["AclHeadroom"] = tasks.into();
        }
        if withheld.is_some() {
            line["ContainmentWithheld"] = 1.into();
        }
        if withheld == Some(WithheldBy::Breaker) {
            line["BreakerOpen"] = 1.into();
        }
        line.to_string()
    }

    /// Whether the event could not be handled (`error` is set).
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }

    /// The report as one line of JSON (`--output json`).
    pub fn to_json_line(&self) -> String {
        // Serialising plain data with string keys cannot fail; fall back to an error object.
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"decision": "error", "error": format!("cannot serialise report: {e}")})
                .to_string()
        })
    }

    /// The notification for this report: a subject (SNS allows 100 characters) and a body
    /// that says what was found, on what, what was done, what failed, and how to release.
    pub fn notification(&self, subject_prefix: Option<&str>) -> (String, String) {
        if let Some(watch) = self.execution.as_ref().and_then(|e| e.watch.as_ref()) {
            let subject = subject_line(&format!(
                "{}[Alert] {}",
                prefix(subject_prefix),
                watch.headline()
            ));
            return (subject, watch.body());
        }
        let finding_type = self.finding_type.as_deref().unwrap_or("event");
        let short_type = finding_type.rsplit('/').next().unwrap_or(finding_type);
        let band = self.band.map(|b| b.name()).unwrap_or("-");
        let target = self
            .target
            .as_ref()
            .map(Target::label)
            .unwrap_or_else(|| "unknown target".to_string());
        let short_target = self
            .target
            .as_ref()
            .map(Target::short_label)
            .unwrap_or_else(|| "unknown target".to_string());
        let failed = self
            .steps
            .iter()
            .any(|s| matches!(s.outcome, Some(Outcome::Failed { .. })));
        // Contained now, or by an earlier invocation whose containment is still in force.
        let contained = self.steps.iter().any(|s| {
            matches!(
                &s.outcome,
                Some(Outcome::Done {
                    detail: StepOutput::Isolate(output),
                    ..
                }) | Some(Outcome::Skipped {
                    earlier: Some(StepOutput::Isolate(output)),
                    ..
                }) if output.contained().is_some()
            )
        });
        // Stopped or gone before it could be isolated: its own verdict, never "contained".
        let gone = self.steps.iter().any(|s| {
            matches!(
                s.outcome.as_ref().and_then(Outcome::output),
                Some(StepOutput::Isolate(IsolateOutput::Gone { .. }))
            )
        });
        let awaiting = self.steps.iter().any(|s| {
            matches!(&s.outcome, Some(Outcome::Skipped { reason, .. }) if reason.starts_with(AWAITING_APPROVAL))
        });
        let verdict = match (self.decision, contained, failed) {
            (DecisionKind::Act, true, false) => "contained",
            (DecisionKind::Act, true, true) => "contained, with failures",
            // Held back on purpose: said loudly, in the subject.
            (DecisionKind::Act, false, _)
                if self
                    .withheld
                    .as_ref()
                    .is_some_and(|w| w.by == WithheldBy::Breaker) =>
            {
                "NOT CONTAINED (breaker open)"
            }
            (DecisionKind::Act, false, _) if self.withheld.is_some() => {
                "NOT CONTAINED (blast-radius guard)"
            }
            (DecisionKind::Act, false, _) if awaiting => "AWAITING APPROVAL",
            // Steps that act on a gone workload fail with it; the body lists them.
            (DecisionKind::Act, false, _) if gone => "workload gone",
            (DecisionKind::Act, false, true) => "ACTION FAILED",
            (DecisionKind::Act, false, false) => "reported",
            (DecisionKind::Skip, _, _) => "skipped",
            (DecisionKind::Release, _, _) => "released",
            (DecisionKind::Sweep, _, _) => "swept",
            (DecisionKind::Watch, _, _) => "held image running",
            (DecisionKind::Error, _, _) => "error",
        };
        let subject = subject_line(&format!(
            "{}[{band}] {verdict}: {short_type} on {short_target}",
            prefix(subject_prefix)
        ));

        let mut body = String::new();
        let _ = writeln!(
            body,
            "GuardDuty finding {finding_type} ({band}, severity {})",
            self.severity.map(|s| s.to_string()).unwrap_or_default()
        );
        if let Some(id) = &self.finding_id {
            let _ = writeln!(
                body,
                "Finding id {id} in account {} ({}), seen {}",
                self.account_id.as_deref().unwrap_or("?"),
                self.region.as_deref().unwrap_or("?"),
                match self.count.unwrap_or(1) {
                    1 => "once".to_string(),
                    n => format!("{n} times"),
                }
            );
        }
        let _ = writeln!(body, "On: {target}");
        if let Some(process) = &self.process {
            let what = [
                process.name.clone(),
                process.executable_path.as_ref().map(|p| format!("({p})")),
                process.pid.map(|p| format!("pid {p}")),
                process
                    .executable_sha256
                    .as_ref()
                    .map(|h| format!("sha256 {h}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            if !what.is_empty() {
                let _ = writeln!(body, "Process: {what}");
            }
            if let Some(command_line) = &process.command_line {
                let _ = writeln!(body, "Command line (secrets redacted): {command_line}");
            }
        }
        let _ = writeln!(body);
        let _ = writeln!(
            body,
            "Decision: {}{}",
            self.reason,
            match (self.mode, self.rule_mode) {
                (Some(m), Some(asked)) if m != asked => {
                    format!(" (mode {m}; the rule says {asked}, capped by RESPONDER_MODE)")
                }
                (Some(m), _) => format!(" (mode {m})"),
                _ => String::new(),
            }
        );
        for (title, wanted) in [
            ("Done", "done"),
            ("Failed", "failed"),
            ("Not done", "skipped"),
        ] {
            let lines: Vec<String> = self
                .steps
                .iter()
                .filter(|step| step.action != ActionName::Notify)
                .filter_map(|step| {
                    let (status, detail) = match &step.outcome {
                        Some(Outcome::Done { summary, .. }) => ("done", summary.clone()),
                        Some(Outcome::Failed { error, .. }) => ("failed", error.clone()),
                        Some(Outcome::Skipped { reason, .. }) => ("skipped", reason.clone()),
                        None => ("skipped", "not executed".to_string()),
                    };
                    (status == wanted).then(|| format!("  - {}: {detail}", step.action))
                })
                .collect();
            if !lines.is_empty() {
                let _ = writeln!(body, "{title}:\n{}", lines.join("\n"));
            }
        }
        if let Some(record) = self.containment() {
            if !record.reachability.is_empty() {
                let _ = writeln!(body, "\nWhat the workload can still reach (network model, from AWS's rules as described after the change):");
                for row in &record.reachability {
                    let _ = writeln!(
                        body,
                        "  {:<7} {:<27} {}",
                        verdict_word(row.verdict),
                        row.class.name(),
                        row.reason
                    );
                }
            }
            for note in &record.notes {
                let _ = writeln!(body, "Note: {note}");
            }
        }
        for note in &self.notes {
            let _ = writeln!(body, "Note: {note}");
        }
        if contained {
            if let Some(id) = &self.finding_id {
                let _ = writeln!(
                    body,
                    "\nTo release the containment once the investigation allows it:\n  responder release {id}\n(restores the original security groups and deletes exactly the network ACL entries that were added)."
                );
            }
        }
        (subject, body)
    }

    /// What isolation changed and found, whether it contained the workload or not.
    pub fn containment(&self) -> Option<&crate::actions::isolate::ContainmentRecord> {
        self.steps
            .iter()
            .find_map(|s| match s.outcome.as_ref()?.output()? {
                StepOutput::Isolate(output) => output.record(),
                _ => None,
            })
    }

    /// Text for people: short, aligned, styled (the caller strips styles when not a TTY).
    pub fn to_text(&self) -> String {
        let bold = Style::new().bold();
        let dim = Style::new().dimmed();
        let red = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
        let green = Style::new().fg_color(Some(AnsiColor::Green.into())).bold();
        let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold();
        let mut out = String::new();
        let label = |out: &mut String, name: &str| {
            let _ = write!(out, "  {dim}{name:<9}{dim:#} ");
        };
        if let Some(input) = &self.input {
            let _ = writeln!(out, "{bold}{input}{bold:#}");
        }
        if let (Some(id), Some(kind), Some(severity), Some(band)) = (
            &self.finding_id,
            &self.finding_type,
            self.severity,
            self.band,
        ) {
            let band_style = match band {
                SeverityBand::Critical | SeverityBand::High => red,
                SeverityBand::Medium => yellow,
                SeverityBand::Low => dim,
            };
            label(&mut out, "finding");
            let _ = writeln!(
                out,
                "{kind}  {band_style}{band} {severity}{band_style:#}  {dim}{id}{dim:#}"
            );
        }
        if let Some(target) = &self.target {
            label(&mut out, "target");
            let _ = writeln!(out, "{}", target.label());
        }
        label(&mut out, "decision");
        match self.decision {
            DecisionKind::Act => {
                let cap = match (self.mode, self.rule_mode) {
                    (Some(mode), Some(asked)) if mode != asked => {
                        format!(" {dim}(the rule says {asked}; capped by --dry-run or RESPONDER_MODE){dim:#}")
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{green}ACT{green:#}  rule {}  mode {}{cap}",
                    self.rule.as_deref().unwrap_or("?"),
                    self.mode.map(Mode::name).unwrap_or("?")
                );
                label(&mut out, "why");
                let _ = writeln!(out, "{}", self.reason);
            }
            DecisionKind::Skip => {
                let style = if self.error.is_some() { red } else { yellow };
                let _ = writeln!(out, "{style}SKIP{style:#} {}", self.reason);
            }
            DecisionKind::Release => {
                let _ = writeln!(out, "{green}RELEASE{green:#} {}", self.reason);
            }
            DecisionKind::Sweep => {
                let _ = writeln!(out, "{green}SWEEP{green:#} {}", self.reason);
            }
            DecisionKind::Watch => {
                let _ = writeln!(out, "{green}WATCH{green:#} {}", self.reason);
            }
            DecisionKind::Error => {
                let _ = writeln!(out, "{red}ERROR{red:#} {}", self.reason);
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            label(&mut out, if i == 0 { "steps" } else { "" });
            let outcome = match &step.outcome {
                None => String::new(),
                Some(Outcome::Done { .. }) => format!("  {green}done{green:#}"),
                Some(Outcome::Skipped { reason, .. }) => {
                    format!("  {yellow}skipped{yellow:#} {reason}")
                }
                Some(Outcome::Failed { error, .. }) => format!("  {red}failed{red:#} {error}"),
            };
            let _ = writeln!(
                out,
                "{}. {bold}{:<17}{bold:#} {dim}{}{dim:#}{outcome}",
                i + 1,
                step.action.name(),
                step.reason
            );
        }
        if let Some(record) = self.containment() {
            for (i, row) in record.reachability.iter().enumerate() {
                label(&mut out, if i == 0 { "reach" } else { "" });
                let style = match row.verdict {
                    Verdict::Open => red,
                    Verdict::Cut => green,
                    Verdict::NoPath => dim,
                };
                let _ = writeln!(
                    out,
                    "{style}{:<7}{style:#} {:<27} {dim}{}{dim:#}",
                    verdict_word(row.verdict),
                    row.class.name(),
                    row.reason
                );
            }
        }
        for note in &self.notes {
            label(&mut out, "note");
            let _ = writeln!(out, "{note}");
        }
        out
    }
}

/// A subject prefix followed by a space, or nothing.
fn prefix(subject_prefix: Option<&str>) -> String {
    subject_prefix
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("{p} "))
        .unwrap_or_default()
}

/// A subject SNS accepts: one line of ASCII under 100 characters.
pub(crate) fn subject_line(raw: &str) -> String {
    // SNS refuses a subject with line breaks or control characters, or of 100 characters
    // or more (its Publish reference); older documentation asked for ASCII, so finding
    // text that is not is replaced, and a rejected subject can never cost the notice.
    let mut subject = raw
        .chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            c if !c.is_ascii() => '?',
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_string();
    if subject.chars().count() > SUBJECT_MAX {
        // Cut at a word boundary when one is near, so no name is shown half.
        let kept: String = subject.chars().take(SUBJECT_MAX - 3).collect();
        let cut = match kept.rfind(' ') {
            Some(space) if space >= 60 => &kept[..space],
            _ => kept.as_str(),
        };
        subject = format!("{}...", cut.trim_end());
    }
    subject
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Cut => "cut",
        Verdict::Open => "OPEN",
        Verdict::NoPath => "no path",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_what_it_carries() {
        let (mut report, _) = crate::decide(
            None,
            include_bytes!("../events/fargate-crypto-miner-high.json"),
            &crate::playbook::PlaybookSet::defaults().unwrap(),
            crate::playbook::Mode::Enforce,
        );
        report.steps[0].outcome = Some(Outcome::done(StepOutput::Isolate(
            crate::actions::isolate::IsolateOutput::Gone {
                why: "stopped".into(),
            },
        )));
        report.steps[1].outcome = Some(Outcome::Failed {
            error: "x".into(),
            retryable: false,
            partial: None,
        });
        report.execution = Some(Execution {
            containment_ms: Some(42),
            duration_ms: 99,
            ..Execution::default()
        });
        let line: serde_json::Value =
            serde_json::from_str(&report.emf_line(1_700_000_000_000)).unwrap();
        let declared: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &declared {
            assert!(line[name].is_number(), "{name} declared but not a number");
        }
        assert_eq!(line["Decision"], "act");
        assert_eq!(line["StepsDone"], 1);
        assert_eq!(line["StepsFailed"], 1);
        assert_eq!(line["ContainmentLatency"], 42);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
            "Decision"
        );
    }

    #[test]
    fn a_long_subject_is_cut_between_words() {
        let event = include_str!("../events/fargate-crypto-miner-high.json").replace(
            "payments-prod",
            "payments-production-eu-central-with-a-very-long-cluster-name-indeed",
        );
        let (report, _) = crate::decide(
            None,
            event.as_bytes(),
            &crate::playbook::PlaybookSet::defaults().unwrap(),
            Mode::DryRun,
        );
        let (subject, body) = report.notification(Some("[prod-account-security-alerts]"));
        assert!(subject.chars().count() < 100, "{subject}");
        let shown = subject
            .strip_suffix("...")
            .expect("cut subjects end with an ellipsis");
        let full = format!(
            "[prod-account-security-alerts] [High] reported: CryptoMinerExecuted on {}",
            report.target.as_ref().unwrap().short_label()
        );
        assert!(full.starts_with(shown), "{shown}");
        assert_eq!(
            full[shown.len()..].chars().next(),
            Some(' '),
            "cut mid-word: {subject}"
        );
        assert!(body.contains("seen once"), "{body}");
        // Control characters and non-ASCII text from a finding never reach the subject.
        let hostile = include_str!("../events/fargate-crypto-miner-high.json").replace(
            r#""name": "payments-prod""#,
            "\"name\": \"p\u{00e9}y\\u0007ments\\nprod\"",
        );
        let (report, _) = crate::decide(
            None,
            hostile.as_bytes(),
            &crate::playbook::PlaybookSet::defaults().unwrap(),
            Mode::DryRun,
        );
        let (subject, body) = report.notification(None);
        assert!(
            subject
                .chars()
                .all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{subject:?}"
        );
        assert!(body.contains(r"y\u{7}ments\u{a}prod"), "{body}");
        assert!(
            !body.chars().any(|c| c.is_control() && c != '\n'),
            "{body:?}"
        );
    }
}
