//! `tag`: mark the workload (and its ENI) with the incident id and state, so anyone looking at
//! it in the console sees that it is under investigation.

use serde_json::{json, Value};

use super::{aws, Clients, StepError};
use crate::incident::{Incident, Target};
use crate::playbook::TagParams;

pub const INCIDENT_TAG: &str = "incident-responder:incident";
pub const STATE_TAG: &str = "incident-responder:state";

/// Tag the target. `state` is e.g. `contained`, `isolation-failed`, `investigating`.
pub async fn tag(
    clients: &Clients,
    incident: &Incident,
    state: &str,
    eni_ids: &[String],
    params: &TagParams,
) -> Result<Value, StepError> {
    let mut tags: Vec<(String, String)> = vec![
        (INCIDENT_TAG.to_string(), incident.finding_id.clone()),
        (STATE_TAG.to_string(), state.to_string()),
    ];
    tags.extend(params.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut tagged = Vec::new();
    match &incident.target {
        Target::EcsTask(task) => {
            clients
                .ecs
                .tag_resource()
                .resource_arn(&task.task_arn)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .send()
                .await
                .map_err(aws("ECS TagResource"))?;
            tagged.push(task.task_arn.clone());
        }
        Target::Ec2Instance(instance) => tagged.push(instance.instance_id.clone()),
        _ => {
            return Err(StepError::Refused(format!(
                "tagging a {} is not supported",
                incident.target.kind().name()
            )))
        }
    }
    let ec2_resources: Vec<String> = match &incident.target {
        Target::Ec2Instance(i) => std::iter::once(i.instance_id.clone())
            .chain(eni_ids.iter().cloned())
            .collect(),
        _ => eni_ids.to_vec(),
    };
    if !ec2_resources.is_empty() {
        clients
            .ec2
            .create_tags()
            .set_resources(Some(ec2_resources.clone()))
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(aws("EC2 CreateTags"))?;
        for id in ec2_resources {
            if !tagged.contains(&id) {
                tagged.push(id);
            }
        }
    }
    Ok(json!({
        "summary": format!("{} resource(s) tagged {STATE_TAG}={state}", tagged.len()),
        "resources": tagged,
        "tags": tags.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    }))
}

/// Set the state tag on a task (e.g. `released`). Best effort: the task may be gone.
pub async fn mark_task_state(
    clients: &Clients,
    task_arn: &str,
    state: &str,
) -> Result<(), StepError> {
    clients
        .ecs
        .tag_resource()
        .resource_arn(task_arn)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key(STATE_TAG)
                .value(state)
                .build(),
        )
        .send()
        .await
        .map_err(aws("ECS TagResource"))?;
    Ok(())
}
