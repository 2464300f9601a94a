//! `notify`: one SNS message per response — a short subject, a body people can act on, and the
//! full report as JSON in the `report` message attribute (plus `severity_band`, `decision` and
//! `finding_type` attributes for subscription filter policies). Sent last, even when earlier
//! steps failed. With a chat topic configured (`RESPONDER_CHAT_TOPIC_ARN`), the same report goes
//! there alongside, as an Amazon Q Developer in chat applications (AWS Chatbot) custom
//! notification, which Slack and Teams channels mapped to that topic show as a card.

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
    /// Also set the finding's workflow status in Security Hub and add a note naming the
    /// incident and what was done (`security_hub: {}` for NOTIFIED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_hub: Option<super::security_hub::SecurityHubParams>,
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
    /// The chat topic's message id, when one is configured and took the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_message_id: Option<String>,
    /// Why the chat card was not sent, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_error: Option<String>,
    /// The finding as updated in Security Hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_hub: Option<super::security_hub::SecurityHubUpdate>,
    /// Why Security Hub was not updated, when it was asked and was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_hub_error: Option<String>,
    /// The Slack message went to the webhook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slack_posted: bool,
    /// Why the Slack message did not go, when a webhook is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_error: Option<String>,
}

impl Action for Notify {
    const NAME: &'static str = "notify";
    const PHASE: Phase = Phase::Notify;
    const PURPOSE: &'static str = "tell people what was found and done";
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = TargetKind::ALL;
    const PERMISSIONS: &'static [&'static str] = &[
        "sns:Publish",
        "securityhub:BatchUpdateFindings",
        "secretsmanager:GetSecretValue",
    ];

    type Params = NotifyParams;
    type Output = NotifyOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &NotifyParams,
    ) -> Result<NotifyOutput, Failure<NotifyOutput>> {
        let topic = ctx.config.topic()?;
        let prefix = params.subject_prefix.as_deref();
        let chat = async {
            match &ctx.config.chat_topic_arn {
                None => Ok(None),
                Some(chat_topic) => publish_card(ctx.clients, chat_topic, ctx.report, prefix)
                    .await
                    .map(Some),
            }
        };
        let hub = async {
            match &params.security_hub {
                None => None,
                Some(hub) => Some(
                    super::security_hub::update(
                        ctx.clients,
                        ctx.incident.finding_arn.as_deref(),
                        ctx.report,
                        hub,
                    )
                    .await,
                ),
            }
        };
        // The text first: when it fails the step is retried, and a card or note already out
        // would go twice. Then the card and Security Hub together.
        let mut sent = notify(ctx.clients, topic, ctx.report, prefix).await?;
        let slack = async {
            match &ctx.config.slack_webhook_secret {
                None => None,
                Some(secret) => {
                    Some(super::webhook::post_slack(ctx.clients, secret, ctx.report, prefix).await)
                }
            }
        };
        let (card, hub, slack) = tokio::join!(chat, hub, slack);
        match slack {
            None => {}
            Some(Ok(())) => sent.slack_posted = true,
            Some(Err(error)) => sent.slack_error = Some(error.to_string()),
        }
        match card {
            Ok(id) => sent.chat_message_id = id.flatten(),
            // The text went out, so the step is done (a retry would send it twice); the card's
            // failure is said in the summary, not hidden.
            Err(error) => sent.chat_error = Some(error.to_string()),
        }
        match hub {
            None => {}
            Some(Ok(update)) => sent.security_hub = Some(update),
            // Said, not raised, for the same reason as the card.
            Some(Err(error)) => sent.security_hub_error = Some(error.to_string()),
        }
        Ok(sent)
    }

    fn summary(output: &NotifyOutput) -> String {
        let chat = match (&output.chat_message_id, &output.chat_error) {
            (_, Some(error)) => format!(" (the chat card was NOT sent: {error})"),
            (Some(_), None) => " (and the chat card)".to_string(),
            (None, None) => String::new(),
        };
        let hub = match (&output.security_hub, &output.security_hub_error) {
            (_, Some(error)) => format!(" (Security Hub NOT updated: {error})"),
            (Some(update), None) => {
                format!(" (Security Hub workflow set to {})", update.workflow_status)
            }
            (None, None) => String::new(),
        };
        let slack = match (output.slack_posted, &output.slack_error) {
            (_, Some(error)) => format!(" (the Slack message was NOT posted: {error})"),
            (true, None) => " (and to Slack)".to_string(),
            (false, None) => String::new(),
        };
        format!(
            "sent to {}: {}{chat}{hub}{slack}",
            output.topic_arn, output.subject
        )
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
        chat_message_id: None,
        chat_error: None,
        security_hub: None,
        security_hub_error: None,
        slack_posted: false,
        slack_error: None,
    })
}

/// Publish a plain message (a notice that is not a response's report: an approval expired).
pub(crate) async fn publish_text(
    clients: &Clients,
    topic_arn: &str,
    subject: &str,
    body: &str,
) -> Result<(), StepError> {
    clients
        .sns
        .publish()
        .topic_arn(topic_arn)
        .subject(crate::report::subject_line(subject))
        .message(body)
        .send()
        .await
        .map_err(aws("SNS Publish"))?;
    Ok(())
}

/// Publish the report's chat card to the chat topic; its message id.
async fn publish_card(
    clients: &Clients,
    topic_arn: &str,
    report: &Report,
    subject_prefix: Option<&str>,
) -> Result<Option<String>, StepError> {
    let card = crate::notice::chatbot(report, subject_prefix).to_string();
    let output = clients
        .sns
        .publish()
        .topic_arn(topic_arn)
        .message(card)
        .send()
        .await
        .map_err(aws("SNS Publish (chat card)"))?;
    Ok(output.message_id().map(str::to_string))
}
