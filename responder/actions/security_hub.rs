//! The GuardDuty finding as Security Hub holds it, updated after acting (an option of
//! `notify`): its workflow status, and a note naming the incident and what was done.
//! `BatchUpdateFindings` answers 200 even for findings it did not update; those come back in
//! `UnprocessedFindings`, and are reported as not updated.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Clients, StepError};
use crate::incident::ArnParts;
use crate::report::{Outcome, Report};

/// What `notify` calls for it.
pub const PERMISSIONS: &[&str] = &["securityhub:BatchUpdateFindings"];

/// Security Hub's note text is at most 512 characters.
const NOTE_MAX: usize = 512;

/// The workflow status set on the finding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkflowStatus {
    /// The resource owner was told; the investigation goes on (default).
    #[default]
    Notified,
    /// Reviewed and dealt with: only when your process treats the responder's action as the
    /// resolution.
    Resolved,
}

impl WorkflowStatus {
    fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Notified => "NOTIFIED",
            WorkflowStatus::Resolved => "RESOLVED",
        }
    }
}

/// `notify: {security_hub: {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityHubParams {
    /// The workflow status to set (NOTIFIED or RESOLVED; default NOTIFIED).
    #[serde(default)]
    pub workflow_status: WorkflowStatus,
}

/// The finding as updated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityHubUpdate {
    /// The finding's id in Security Hub (GuardDuty's finding ARN).
    pub id: String,
    /// GuardDuty's product ARN in Security Hub.
    pub product_arn: String,
    /// The workflow status set.
    pub workflow_status: String,
    /// The note added.
    pub note: String,
}

/// Set the finding's workflow status and note in Security Hub.
pub async fn update(
    clients: &Clients,
    finding_arn: Option<&str>,
    report: &Report,
    params: &SecurityHubParams,
) -> Result<SecurityHubUpdate, StepError> {
    let Some(id) = finding_arn else {
        return Err(StepError::Refused(
            "the finding has no ARN: Security Hub knows it by that".to_string(),
        ));
    };
    let Some(parts) = ArnParts::parse(id) else {
        return Err(StepError::Refused(format!(
            "{id} is not an ARN: Security Hub knows the finding by its ARN"
        )));
    };
    let product_arn = format!(
        "arn:{}:securityhub:{}::product/aws/guardduty",
        parts.partition, parts.region
    );
    let note = note(report);
    let status = params.workflow_status.as_str();
    let identifier = aws_sdk_securityhub::types::AwsSecurityFindingIdentifier::builder()
        .id(id)
        .product_arn(&product_arn)
        .build();
    let note_update = aws_sdk_securityhub::types::NoteUpdate::builder()
        .text(&note)
        .updated_by("guardduty-responder")
        .build();
    // Security Hub reports per finding, in a 200 answer; a concurrent update or an internal
    // failure passes, so those are tried again briefly (the same update, idempotent).
    let mut pause = std::time::Duration::from_millis(300);
    let answer = loop {
        let answer = clients
            .securityhub
            .batch_update_findings()
            .finding_identifiers(identifier.clone())
            .note(note_update.clone())
            .workflow(
                aws_sdk_securityhub::types::WorkflowUpdate::builder()
                    .status(aws_sdk_securityhub::types::WorkflowStatus::from(status))
                    .build(),
            )
            .send()
            .await
            .map_err(aws("Security Hub BatchUpdateFindings"))?;
        let passing = answer.unprocessed_findings().first().is_some_and(|u| {
            matches!(
                u.error_code(),
                Some("ConcurrentUpdateError" | "InternalFailure")
            )
        });
        if !passing || pause > std::time::Duration::from_secs(2) {
            break answer;
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    };
    if let Some(unprocessed) = answer.unprocessed_findings().first() {
        return Err(StepError::Refused(format!(
            "Security Hub did not update finding {id}: {}: {} (is Security Hub on, with GuardDuty's integration, in {}?)",
            unprocessed.error_code().unwrap_or("unknown"),
            unprocessed.error_message().unwrap_or(""),
            parts.region
        )));
    }
    Ok(SecurityHubUpdate {
        id: id.to_string(),
        product_arn,
        workflow_status: status.to_string(),
        note,
    })
}

/// The note: the verdict, what each step did, and how to release; within Security Hub's limit.
fn note(report: &Report) -> String {
    let (subject, _) = report.notification(None);
    let steps: Vec<String> = report
        .steps
        .iter()
        .filter(|s| s.action.name() != "notify")
        .map(|s| {
            let word = match &s.outcome {
                Some(Outcome::Done { .. }) => "done",
                Some(Outcome::Failed { .. }) => "failed",
                Some(Outcome::Skipped { .. }) | None => "not done",
            };
            format!("{} {word}", s.action.name())
        })
        .collect();
    let mut text = format!("guardduty-responder: {subject}. {}.", steps.join(", "));
    if let Some(id) = report
        .finding_id
        .as_ref()
        .filter(|_| report.containment().is_some())
    {
        text.push_str(&format!(" Release: responder release {id}"));
    }
    if text.chars().count() > NOTE_MAX {
        text = text.chars().take(NOTE_MAX - 1).collect::<String>() + "…";
    }
    text
}
