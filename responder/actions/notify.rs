//! `notify`: one SNS message per response — a short subject, a body people can act on, and the
//! full report as JSON in the `report` message attribute (plus `severity_band`, `decision` and
//! `finding_type` attributes for subscription filter policies). Sent last, even when earlier
//! steps failed.

use std::collections::HashMap;

use aws_sdk_sns::types::MessageAttributeValue;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{aws, Action, Clients, Failure, Phase, StepContext, StepError};
use crate::incident::TargetKind;
use crate::report::Report;

/// SNS limits a whole message (body and attributes) to 256 KiB.
const MAX_REPORT_ATTRIBUTE: usize = 200 * 1024;

/// The `notify` action.
pub struct Notify;

/// Parameters of `notify`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyParams {
    /// Text put before the subject, e.g. `[prod]`.
    #[serde(default)]
    pub subject_prefix: Option<String>,
}

/// The message sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyOutput {
    /// The topic.
    pub topic_arn: String,
    /// SNS's id for the message.
    pub message_id: Option<String>,
    /// Its subject.
    pub subject: String,
}

impl Action for Notify {
    const NAME: &'static str = "notify";
    const PHASE: Phase = Phase::Notify;
    const PURPOSE: &'static str = "tell people what was found and done";
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = TargetKind::ALL;
    const PERMISSIONS: &'static [&'static str] = &["sns:Publish"];

    type Params = NotifyParams;
    type Output = NotifyOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &NotifyParams,
    ) -> Result<NotifyOutput, Failure<NotifyOutput>> {
        let topic = ctx.config.topic()?;
        Ok(notify(
            ctx.clients,
            topic,
            ctx.report,
            params.subject_prefix.as_deref(),
        )
        .await?)
    }

    fn summary(output: &NotifyOutput) -> String {
        format!("sent to {}: {}", output.topic_arn, output.subject)
    }
}

/// Publish a report's notification to the topic.
pub(crate) async fn notify(
    clients: &Clients,
    topic_arn: &str,
    report: &Report,
    subject_prefix: Option<&str>,
) -> Result<NotifyOutput, StepError> {
    let (subject, body) = report.notification(subject_prefix);
    let mut report_json = report.to_json_line();
    if report_json.len() > MAX_REPORT_ATTRIBUTE {
        report_json = json!({"truncated": true, "finding_id": report.finding_id}).to_string();
    }
    let mut attributes = HashMap::new();
    let string = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
    };
    for (name, value) in [
        ("report", Some(report_json.as_str())),
        ("decision", Some(report.decision.name())),
        ("severity_band", report.band.map(|b| b.name())),
        ("finding_type", report.finding_type.as_deref()),
    ] {
        if let Some(value) = value {
            let attribute = string(value)
                .map_err(|e| StepError::Refused(format!("SNS attribute {name}: {e}")))?;
            attributes.insert(name.to_string(), attribute);
        }
    }
    let output = clients
        .sns
        .publish()
        .topic_arn(topic_arn)
        .subject(&subject)
        .message(&body)
        .set_message_attributes(Some(attributes))
        .send()
        .await
        .map_err(aws("SNS Publish"))?;
    Ok(NotifyOutput {
        topic_arn: topic_arn.to_string(),
        message_id: output.message_id().map(str::to_string),
        subject,
    })
}
