//! `hold-deployment`: ECS replaces a quarantined service task from the same task definition,
//! and a deployment may start more tasks from the compromised image. This action records the
//! task's images (by digest where ECS knows it: images in Amazon ECR; by reference otherwise)
//! so that every task later started from one of them is reported — the Task State Change
//! events the stack receives carry each container's image and, for ECR images, its digest.
//! It changes nothing in AWS; `release` lifts the hold.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload::describe_task;
use super::{Action, Failure, Phase, StepContext, StepError};
use crate::event::ContainerState;
use crate::incident::{Target, TargetKind};

/// The `hold-deployment` action.
pub struct HoldDeployment;

/// The step's item in the ledger.
pub const STEP_KEY: &str = "step#hold-deployment";

/// Parameters of `hold-deployment` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldParams {}

/// The images held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldOutput {
    /// One per container.
    pub held: Vec<HeldImage>,
}

/// One held image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeldImage {
    /// The container that ran it.
    pub container: Option<String>,
    /// The image reference.
    pub image: Option<String>,
    /// The image digest, when ECS knows it.
    pub digest: Option<String>,
    /// What new tasks are matched on (`digest:…` or `image:…`).
    pub key: String,
    /// The service whose task ran it.
    #[serde(default)]
    pub service: Option<String>,
    /// The task that ran it.
    #[serde(default)]
    pub task_arn: String,
    /// The finding that holds it.
    #[serde(default)]
    pub finding_id: String,
}

/// The key a container's image is held and looked up under: the digest when known (the image's
/// content), else the reference (a tag may since point elsewhere: said in the report).
pub fn hold_key(image: Option<&str>, digest: Option<&str>) -> Option<String> {
    match (digest, image) {
        (Some(digest), _) => Some(format!("digest:{digest}")),
        (None, Some(image)) => Some(format!("image:{image}")),
        (None, None) => None,
    }
}

/// The keys a container in a Task State Change event is looked up under: its digest and its
/// reference (an image held by reference matches a task that reports the digest too).
pub fn lookup_keys(container: &ContainerState) -> Vec<String> {
    let mut keys: Vec<String> = [
        hold_key(None, container.image_digest.as_deref()),
        hold_key(container.image.as_deref(), None),
    ]
    .into_iter()
    .flatten()
    .collect();
    keys.dedup();
    keys
}

impl Action for HoldDeployment {
    const NAME: &'static str = "hold-deployment";
    const PHASE: Phase = Phase::Preserve;
    const PURPOSE: &'static str =
        "record the task's images, so every new task started from them is reported";
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask];
    const PERMISSIONS: &'static [&'static str] = &["ecs:DescribeTasks"];

    type Params = HoldParams;
    type Output = HoldOutput;

    async fn run(
        ctx: &StepContext<'_>,
        _params: &HoldParams,
    ) -> Result<HoldOutput, Failure<HoldOutput>> {
        let Target::EcsTask(task) = &ctx.incident.target else {
            return Err(StepError::Refused(format!(
                "hold-deployment acts on ECS tasks; this is a {}",
                ctx.incident.target.kind().name()
            ))
            .into());
        };
        let finding_id = &ctx.incident.finding_id;
        // DescribeTasks knows the digests; a task ECS no longer lists leaves the finding's
        // image references.
        let containers: Vec<ContainerState> = match describe_task(ctx.clients, task).await? {
            Some(facts) => facts.raw["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ContainerState {
                    name: c["name"].as_str().map(str::to_string),
                    image: c["image"].as_str().map(str::to_string),
                    image_digest: c["imageDigest"].as_str().map(str::to_string),
                })
                .collect(),
            None => task
                .containers
                .iter()
                .map(|c| ContainerState {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_digest: None,
                })
                .collect(),
        };
        let held: Vec<HeldImage> = containers
            .into_iter()
            .filter_map(|c| {
                Some(HeldImage {
                    key: hold_key(c.image.as_deref(), c.image_digest.as_deref())?,
                    container: c.name,
                    image: c.image,
                    digest: c.image_digest,
                    service: task.service.clone(),
                    task_arn: task.task_arn.clone(),
                    finding_id: finding_id.clone(),
                })
            })
            .collect();
        if held.is_empty() {
            return Err(StepError::Refused(
                "neither ECS nor the finding names the task's images: nothing to hold".to_string(),
            )
            .into());
        }
        let writes = futures::future::join_all(held.iter().map(|h| async move {
            let value = serde_json::to_value(h).unwrap_or_default();
            ctx.ledger.put_hold(&h.key, finding_id, &value).await
        }))
        .await;
        // A hold not written is not kept: say so rather than report it held.
        if let Some(error) = writes.into_iter().find_map(Result::err) {
            return Err(Failure {
                error,
                partial: Some(HoldOutput { held }),
            });
        }
        Ok(HoldOutput { held })
    }

    fn summary(output: &HoldOutput) -> String {
        let images: Vec<String> = output
            .held
            .iter()
            .map(|h| match (&h.digest, &h.image) {
                (Some(digest), Some(image)) => format!("{image} ({digest})"),
                (Some(digest), None) => digest.clone(),
                (None, Some(image)) => format!("{image} (by reference: no digest known)"),
                (None, None) => h.key.clone(),
            })
            .collect();
        format!(
            "held {}: new tasks started from it are reported until release",
            images.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: Option<&str>, digest: Option<&str>) -> ContainerState {
        ContainerState {
            name: Some("app".into()),
            image: image.map(str::to_string),
            image_digest: digest.map(str::to_string),
        }
    }

    #[test]
    fn an_image_is_held_by_digest_when_known_and_found_by_either() {
        let image = Some("repo/app:1");
        assert_eq!(
            hold_key(image, Some("sha256:ab")).as_deref(),
            Some("digest:sha256:ab")
        );
        assert_eq!(hold_key(image, None).as_deref(), Some("image:repo/app:1"));
        assert_eq!(hold_key(None, None), None);
        // A started task reporting digest and reference is found under a hold of either.
        let keys = lookup_keys(&container(image, Some("sha256:ab")));
        assert_eq!(keys, ["digest:sha256:ab", "image:repo/app:1"]);
        assert_eq!(lookup_keys(&container(image, None)), ["image:repo/app:1"]);
    }
}
