//! `stop`: StopTask with a reason naming the finding, only after evidence is preserved (unless
//! the rule forces it). A task that is already stopped or gone is an outcome, not an error.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use serde_json::{json, Value};

use super::{aws, Clients, StepError};
use crate::incident::{Incident, Target};

pub async fn stop(clients: &Clients, incident: &Incident, rule: &str) -> Result<Value, StepError> {
    let Target::EcsTask(task) = &incident.target else {
        return Err(StepError::Refused(format!(
            "stop acts on ECS tasks; this is a {}",
            incident.target.kind().name()
        )));
    };
    // StopTask's reason is limited to 255 characters.
    let mut reason = format!(
        "incident-responder rule {rule}: GuardDuty {} finding {}",
        incident.finding_type, incident.finding_id
    );
    reason.truncate(255);
    match super::workload::describe_task(clients, task).await? {
        None => {
            return Ok(
                json!({"summary": "already gone (MISSING)", "result": "already gone", "detail": "ECS no longer knows the task (MISSING)"}),
            )
        }
        Some(facts) if facts.last_status.as_deref() == Some("STOPPED") => {
            return Ok(json!({"summary": "already stopped", "result": "already stopped"}))
        }
        Some(_) => {}
    }
    let result = clients
        .ecs
        .stop_task()
        .cluster(&task.cluster_arn)
        .task(&task.task_arn)
        .reason(&reason)
        .send()
        .await;
    match result {
        Ok(output) => Ok(json!({
            "summary": format!("StopTask sent: {reason}"),
            "result": "stopped",
            "reason": reason,
            "last_status": output.task().and_then(|t| t.last_status()),
        })),
        // The task went away between the two calls.
        Err(error)
            if error.code() == Some("InvalidParameterException")
                && error.message().is_some_and(|m| m.contains("not found")) =>
        {
            Ok(
                json!({"summary": "already gone", "result": "already gone", "detail": error.message()}),
            )
        }
        Err(error) => Err(aws("ECS StopTask")(error)),
    }
}
