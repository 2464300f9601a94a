//! `tag`: mark the workload (and its ENI) with the incident id and state, so anyone looking at
//! it in the console sees that it is under investigation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Action, Clients, Failure, Phase, StepContext, StepError};
use crate::incident::{Incident, Target, TargetKind};

/// The tag naming the finding a workload is under investigation for.
pub const INCIDENT_TAG: &str = "incident-responder:incident";
/// The tag saying where the response stands (`contained`, `released`, ...).
pub const STATE_TAG: &str = "incident-responder:state";

/// The `tag` action.
pub struct Tag;

/// Parameters of `tag`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagParams {
    /// Extra tags to add besides the incident id and state.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// What was tagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagOutput {
    /// The state written in [`STATE_TAG`].
    pub state: String,
    /// Every resource tagged (task ARN or instance id, and ENIs).
    pub resources: Vec<String>,
    /// The tags written.
    pub tags: BTreeMap<String, String>,
}

impl Action for Tag {
    const NAME: &'static str = "tag";
    const PHASE: Phase = Phase::Preserve;
    const PURPOSE: &'static str = "mark the workload with the incident id and state";
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask, TargetKind::Ec2Instance];
    const PERMISSIONS: &'static [&'static str] = &["ecs:TagResource", "ec2:CreateTags"];

    type Params = TagParams;
    type Output = TagOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &TagParams,
    ) -> Result<TagOutput, Failure<TagOutput>> {
        let earlier = ctx.earlier;
        let state = match (&earlier.containment, earlier.isolate_failed) {
            (Some(_), _) => "contained",
            (None, true) => "isolation-failed",
            (None, false) => "investigating",
        };
        let enis = earlier
            .containment
            .as_ref()
            .map(|c| c.eni_ids.clone())
            .unwrap_or_default();
        Ok(tag(ctx.clients, ctx.incident, state, &enis, params).await?)
    }

    fn summary(output: &TagOutput) -> String {
        format!(
            "{} tagged {STATE_TAG}={}",
            crate::report::count(output.resources.len(), "resource", "resources"),
            output.state
        )
    }
}

/// Tag the target. `state` is e.g. `contained`, `isolation-failed`, `investigating`.
async fn tag(
    clients: &Clients,
    incident: &Incident,
    state: &str,
    eni_ids: &[String],
    params: &TagParams,
) -> Result<TagOutput, StepError> {
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
    Ok(TagOutput {
        state: state.to_string(),
        resources: tagged,
        tags: tags.into_iter().collect(),
    })
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
