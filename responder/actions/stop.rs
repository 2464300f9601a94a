//! `stop`: StopTask with a reason naming the finding, only after evidence is preserved (unless
//! the rule forces it). A task that is already stopped or gone is an outcome, not an error.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Action, Earlier, Failure, Phase, StepContext, StepError};
use crate::incident::{Target, TargetKind};

/// The `stop` action.
pub struct Stop;

/// Parameters of `stop`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// Stop even when evidence could not be preserved.
    #[serde(default)]
    pub force: bool,
}

/// How the stop ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StopOutput {
    /// StopTask was accepted.
    Stopped {
        /// The reason given to ECS (shown in the console and DescribeTasks).
        reason: String,
        /// The task's status in StopTask's answer.
        last_status: Option<String>,
    },
    /// The task had stopped already.
    AlreadyStopped,
    /// ECS no longer knows the task.
    AlreadyGone {
        /// How we know.
        detail: String,
    },
}

impl Action for Stop {
    const NAME: &'static str = "stop";
    const PHASE: Phase = Phase::Stop;
    const PURPOSE: &'static str = "stop the task after evidence is preserved";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask];
    const PERMISSIONS: &'static [&'static str] = &["ecs:DescribeTasks", "ecs:StopTask"];

    type Params = StopParams;
    type Output = StopOutput;

    async fn run(
        ctx: &StepContext<'_>,
        _params: &StopParams,
    ) -> Result<StopOutput, Failure<StopOutput>> {
        let incident = ctx.incident;
        let Target::EcsTask(task) = &incident.target else {
            return Err(StepError::Refused(format!(
                "stop acts on ECS tasks; this is a {}",
                incident.target.kind().name()
            ))
            .into());
        };
        // StopTask's reason is limited to 255 characters.
        let mut reason = format!(
            "incident-responder rule {}: GuardDuty {} finding {}",
            ctx.rule, incident.finding_type, incident.finding_id
        );
        truncate_at_char(&mut reason, 255);
        match super::workload::describe_task(ctx.clients, task).await? {
            None => {
                return Ok(StopOutput::AlreadyGone {
                    detail: "ECS no longer knows the task (MISSING)".to_string(),
                })
            }
            Some(facts) if facts.last_status.as_deref() == Some("STOPPED") => {
                return Ok(StopOutput::AlreadyStopped)
            }
            Some(_) => {}
        }
        let result = ctx
            .clients
            .ecs
            .stop_task()
            .cluster(&task.cluster_arn)
            .task(&task.task_arn)
            .reason(&reason)
            .send()
            .await;
        match result {
            Ok(output) => Ok(StopOutput::Stopped {
                reason,
                last_status: output
                    .task()
                    .and_then(|t| t.last_status())
                    .map(str::to_string),
            }),
            // The task went away between the two calls.
            Err(error)
                if error.code() == Some("InvalidParameterException")
                    && error.message().is_some_and(|m| m.contains("not found")) =>
            {
                Ok(StopOutput::AlreadyGone {
                    detail: error.message().unwrap_or_default().to_string(),
                })
            }
            Err(error) => Err(aws("ECS StopTask")(error).into()),
        }
    }

    fn summary(output: &StopOutput) -> String {
        match output {
            StopOutput::Stopped { reason, .. } => format!("StopTask sent: {reason}"),
            StopOutput::AlreadyStopped => "already stopped".to_string(),
            StopOutput::AlreadyGone { .. } => "already gone (MISSING)".to_string(),
        }
    }

    fn reason(params: &StopParams) -> String {
        if params.force {
            "stop the task, even if evidence could not be preserved (force)".to_string()
        } else {
            Self::PURPOSE.to_string()
        }
    }

    fn withheld(params: &StopParams, earlier: &Earlier) -> Option<String> {
        (!params.force && !earlier.evidence_done).then(|| {
            "evidence was not preserved, so the task is not stopped (set `stop: {force: true}` to stop anyway)".to_string()
        })
    }
}

/// Shorten to at most `max` bytes on a character boundary (`String::truncate` panics inside a
/// character, and finding types come from outside).
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
