//! `responder demo`: the main job end to end against a local emulator. Seeds a Fargate service,
//! points the crypto-mining sample at one of its tasks, responds, and shows what was contained,
//! stored and sent; then that a replay changes nothing and that `release` undoes the quarantine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Value};

use crate::fixture::{self, Fixture};
use crate::proxy::FaultProxy;
use crate::{sdk_config, EmulatorError, Moto};
use responder::actions::isolate::NaclEntry;
use responder::actions::ledger::Ledger;
use responder::actions::workload::describe_acls;
use responder::actions::{Clients, ENV_BUCKET, ENV_TABLE, ENV_TOPIC};
use responder::playbook::PlaybookSet;
use responder::report::Report;
use responder::respond::{ReleaseResult, ReleaseSummary, Responder};

pub const REGION: &str = "us-east-1";

/// Everything the demo did and found, for text or JSON output.
#[derive(Debug, Serialize)]
pub struct DemoResult {
    pub finding_id: String,
    pub task_arn: String,
    pub task_ip: String,
    pub bucket: String,
    pub table: String,
    pub topic_arn: String,
    pub event_file: PathBuf,
    pub emulator: String,
    /// Variables that let `responder replay`/`release` and the AWS CLI act on the same resources.
    pub env: BTreeMap<String, String>,
    pub report: Report,
    /// The entries for the task's address found in the VPC's network ACLs after the
    /// response, described afresh (the same shape as the report's containment record).
    pub nacl_entries: Vec<NaclEntry>,
    pub evidence_keys: Vec<String>,
    pub notification: Option<Notification>,
    pub ledger: Vec<Value>,
    pub replay: ReplaySummary,
    /// None when the demo left everything in place (`--endpoint-url`).
    pub release: Option<ReleaseSummary>,
    /// Entries for the task's IP still in any ACL after the release.
    pub entries_after_release: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Notification {
    pub subject: String,
    pub body: String,
    pub attributes: Vec<String>,
    /// The full report carried in the `report` message attribute.
    #[serde(skip)]
    pub report: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct ReplaySummary {
    /// Calls that changed something outside the ledger's own bookkeeping.
    pub mutating_calls: Vec<String>,
    pub step_outcomes: Vec<String>,
}

/// Run the demo. With `endpoint` an emulator already running is used and everything is left in
/// place; otherwise moto is started, and stopped at the end.
pub async fn run(endpoint: Option<&str>) -> Result<DemoResult, EmulatorError> {
    let moto = match endpoint {
        Some(_) => None,
        None => Some(Moto::start().await?),
    };
    let emulator = endpoint
        .map(str::to_string)
        .or_else(|| moto.as_ref().map(|m| m.endpoint.clone()))
        .unwrap_or_default();
    crate::pin_task_states(&emulator).await?;
    // The proxy makes the emulator answer as AWS does (requester-managed task ENIs, ACL quota).
    let proxy = FaultProxy::start(&emulator)
        .await
        .map_err(EmulatorError::Spawn)?;
    let config = sdk_config(&proxy.endpoint, REGION);
    let clients = Clients::from_sdk_config(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = format!("demo{}", chrono::Utc::now().format("%H%M%S%3f"));
    let fixture = fixture::seed_fargate(&clients, &sqs, &name, 2).await?;
    // Runtime Monitoring on Fargate reports through this endpoint; the quarantine keeps it open.
    fixture::add_guardduty_endpoint(&clients, &fixture).await?;
    let task = fixture
        .tasks
        .first()
        .cloned()
        .ok_or_else(|| EmulatorError::Seed("no task started".to_string()))?;
    let finding_id = format!("{name}0b6c9e2f04a1d4e7f8a3b5c6d7e8f90");
    let event = fixture::miner_finding_for(&fixture, &task, &finding_id);
    let event_file = std::env::temp_dir().join(format!("responder-{name}-finding.json"));
    let event_text = serde_json::to_string_pretty(&event).unwrap_or_default();
    std::fs::write(&event_file, &event_text).map_err(EmulatorError::Spawn)?;

    let responder = Responder {
        clients: clients.clone(),
        config: fixture.config(),
        playbooks: PlaybookSet::defaults().map_err(|e| EmulatorError::Seed(e.to_string()))?,
    };
    let label = Some(event_file.display().to_string());
    let first = responder
        .respond(
            label.clone(),
            event_text.as_bytes(),
            &format!("{name}-1"),
            None,
            None,
        )
        .await;

    let acls = describe_acls(&clients, &fixture.vpc_id)
        .await
        .map_err(|e| EmulatorError::Seed(e.to_string()))?;
    let nacl_entries = entries_for(&acls, &task.ip);
    let evidence_keys = list_keys(&clients, &fixture.bucket).await?;
    let notification = read_notification(&sqs, &fixture.queue_url).await?;
    let ledger = Ledger::new(clients.dynamodb.clone(), &fixture.table, "demo", 400);
    let ledger_steps = ledger
        .steps(&finding_id)
        .await
        .map_err(|e| EmulatorError::Seed(e.to_string()))?
        .into_iter()
        .map(|s| json!({"step": s.key, "status": s.status.name(), "owner": s.owner, "updated_at": s.updated_at}))
        .collect();

    // A replay (as GuardDuty's republishing would cause) must change nothing.
    proxy.clear_calls();
    let again = responder
        .respond(
            label,
            event_text.as_bytes(),
            &format!("{name}-2"),
            None,
            None,
        )
        .await;
    let replay = ReplaySummary {
        mutating_calls: proxy
            .mutating_calls()
            .into_iter()
            .filter(|c| c.service != "dynamodb")
            .map(|c| format!("{} {}", c.service, c.operation))
            .collect(),
        step_outcomes: again
            .report
            .steps
            .iter()
            .map(|s| format!("{}: {}", s.action, outcome_word(s)))
            .collect(),
    };

    let (release, entries_after_release) = if endpoint.is_some() {
        (None, None)
    } else {
        let released = responder
            .release(&finding_id, &format!("{name}-release"))
            .await
            .map_err(|e| EmulatorError::Seed(format!("release: {e}")))?;
        let acls = describe_acls(&clients, &fixture.vpc_id)
            .await
            .map_err(|e| EmulatorError::Seed(e.to_string()))?;
        (Some(released), Some(entries_for(&acls, &task.ip).len()))
    };

    Ok(DemoResult {
        env: env_for(&emulator, &fixture),
        finding_id,
        task_arn: task.arn.clone(),
        task_ip: task.ip.clone(),
        bucket: fixture.bucket.clone(),
        table: fixture.table.clone(),
        topic_arn: fixture.topic_arn.clone(),
        event_file,
        emulator,
        report: first.report,
        nacl_entries,
        evidence_keys,
        notification,
        ledger: ledger_steps,
        replay,
        release,
        entries_after_release,
    })
}

fn outcome_word(step: &responder::report::StepReport) -> String {
    match &step.outcome {
        Some(responder::report::Outcome::Done { .. }) => "done".to_string(),
        Some(responder::report::Outcome::Skipped { reason, .. }) => format!("skipped ({reason})"),
        Some(responder::report::Outcome::Failed { error, .. }) => format!("failed ({error})"),
        None => "not run".to_string(),
    }
}

fn env_for(emulator: &str, fixture: &Fixture) -> BTreeMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", emulator),
        ("AWS_REGION", fixture.region.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        (ENV_BUCKET, fixture.bucket.as_str()),
        (ENV_TABLE, fixture.table.as_str()),
        (ENV_TOPIC, fixture.topic_arn.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// ACL entries whose CIDR is the task's address.
fn entries_for(acls: &[aws_sdk_ec2::types::NetworkAcl], ip: &str) -> Vec<NaclEntry> {
    let cidr = format!("{ip}/32");
    let mut found = Vec::new();
    for acl in acls {
        let acl_id = acl.network_acl_id().unwrap_or_default().to_string();
        let entries = acl
            .entries()
            .iter()
            .filter(|e| e.cidr_block() == Some(cidr.as_str()))
            .map(|e| NaclEntry {
                acl_id: acl_id.clone(),
                rule_number: e.rule_number().unwrap_or_default(),
                egress: e.egress().unwrap_or_default(),
                cidr: cidr.clone(),
                ipv6: false,
                action: e
                    .rule_action()
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
                protocol: e.protocol().unwrap_or_default().to_string(),
                ports: e.port_range().and_then(|p| Some((p.from()?, p.to()?))),
            });
        found.extend(entries);
    }
    found
}

async fn list_keys(clients: &Clients, bucket: &str) -> Result<Vec<String>, EmulatorError> {
    let output = clients
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| EmulatorError::Seed(format!("ListObjectsV2: {e}")))?;
    Ok(output
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect())
}

/// The first notification waiting in the queue.
pub async fn read_notification(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Option<Notification>, EmulatorError> {
    Ok(read_all_notifications(sqs, queue_url)
        .await?
        .into_iter()
        .next())
}

/// Notifications as a subscriber receives them (SNS's JSON envelope in each SQS message),
/// removed from the queue once read.
pub async fn read_all_notifications(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<Notification>, EmulatorError> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .map_err(|e| EmulatorError::Seed(format!("ReceiveMessage: {e}")))?;
    let mut notifications = Vec::new();
    for message in output.messages() {
        if let Some(handle) = message.receipt_handle() {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(|e| EmulatorError::Seed(format!("DeleteMessage: {e}")))?;
        }
        let Some(envelope) = message
            .body()
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
        else {
            continue;
        };
        notifications.push(Notification {
            subject: envelope["Subject"].as_str().unwrap_or("").to_string(),
            body: envelope["Message"].as_str().unwrap_or("").to_string(),
            report: envelope["MessageAttributes"]["report"]["Value"]
                .as_str()
                .and_then(|r| serde_json::from_str(r).ok()),
            attributes: envelope["MessageAttributes"]
                .as_object()
                .map(|a| a.keys().cloned().collect())
                .unwrap_or_default(),
        });
    }
    Ok(notifications)
}

impl DemoResult {
    /// The demo for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Emulator: {} (moto, behind the AWS-fidelity proxy)",
            self.emulator
        );
        let _ = writeln!(
            out,
            "Finding:  {} replayed from {}",
            self.finding_id,
            self.event_file.display()
        );
        let _ = writeln!(out, "Task:     {} ({})\n", self.task_arn, self.task_ip);
        let _ = writeln!(out, "== What was decided and done");
        out.push_str(&self.report.to_text());
        let _ = writeln!(
            out,
            "\n== Contained: network ACL entries for {}/32",
            self.task_ip
        );
        for e in &self.nacl_entries {
            let ports = match e.ports {
                Some((from, to)) if from == to => format!(" tcp {from}"),
                Some((from, to)) => format!(" tcp {from}-{to}"),
                None => " all traffic".to_string(),
            };
            let _ = writeln!(
                out,
                "  {}  #{:<3} {:<7} {:<5} {}{ports}",
                e.acl_id,
                e.rule_number,
                if e.egress { "egress" } else { "ingress" },
                e.action.to_uppercase(),
                e.cidr
            );
        }
        let _ = writeln!(out, "\n== Stored: evidence in s3://{}", self.bucket);
        for key in &self.evidence_keys {
            let _ = writeln!(out, "  {key}");
        }
        let _ = writeln!(out, "\n== Sent: notification on {}", self.topic_arn);
        match &self.notification {
            Some(n) => {
                let _ = writeln!(out, "  Subject: {}", n.subject);
                for line in n.body.lines() {
                    let _ = writeln!(out, "  | {line}");
                }
                let _ = writeln!(out, "  Attributes: {}", n.attributes.join(", "));
            }
            None => {
                let _ = writeln!(out, "  (no message received)");
            }
        }
        let _ = writeln!(
            out,
            "\n== Ledger {} for finding {}",
            self.table, self.finding_id
        );
        for step in &self.ledger {
            let _ = writeln!(
                out,
                "  {:<28} {}",
                step["step"].as_str().unwrap_or(""),
                step["status"].as_str().unwrap_or("")
            );
        }
        let _ = writeln!(out, "\n== Replay of the same finding");
        for line in &self.replay.step_outcomes {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(
            out,
            "  changes outside the ledger (lock and audit record): {}",
            if self.replay.mutating_calls.is_empty() {
                "none".to_string()
            } else {
                self.replay.mutating_calls.join(", ")
            }
        );
        match (&self.release, self.entries_after_release) {
            (Some(release), Some(left)) => {
                let summary = release
                    .findings
                    .iter()
                    .map(|f| match &f.result {
                        ReleaseResult::Released { detail, .. } => detail.summary(),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let _ = writeln!(out, "\n== Release ({summary})");
                let _ = writeln!(
                    out,
                    "  entries for {} left in the ACLs: {left}",
                    self.task_ip
                );
            }
            _ => {
                let _ = writeln!(out, "\n== Left in place. To inspect and release:");
                for (k, v) in &self.env {
                    let _ = writeln!(out, "  export {k}={v}");
                }
                let _ = writeln!(out, "  responder release {}", self.finding_id);
            }
        }
        out
    }
}
