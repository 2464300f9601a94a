//! `hold-deployment`: ECS replaces a quarantined service task from the same task definition,
//! and a deployment may start more tasks from the compromised image. This action records the
//! task's images (by the digest ECS reports, and by reference) so that every other task seen
//! running one of them is reported — the Task State Change events the stack receives carry
//! each container's image and the digest ECS resolved (AWS's event reference says ECR images;
//! ECS has resolved tags to digests for other registries too since 2024).
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
    /// What new tasks are matched on (`digest:…`, `image:…`).
    pub keys: Vec<String>,
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

/// The keys an image is held and looked up under: its digest when ECS reports it (the
/// image's content) and its reference (what a task without a digest can be matched on; a tag
/// may since point to other content, and the same content under another tag or registry host
/// is not matched by reference).
pub fn image_keys(container: &ContainerState) -> Vec<String> {
    let digest = container
        .image_digest
        .as_ref()
        .map(|d| format!("digest:{d}"));
    let image = container.image.as_ref().map(|i| format!("image:{i}"));
    digest.into_iter().chain(image).collect()
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
                let keys = image_keys(&c);
                (!keys.is_empty()).then_some(HeldImage {
                    keys,
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
        let writes = futures::future::join_all(held.iter().flat_map(|h| {
            let value = serde_json::to_value(h).unwrap_or_default();
            h.keys.iter().map(move |key| {
                let value = value.clone();
                async move { ctx.ledger.put_hold(key, finding_id, &value).await }
            })
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
                (None, Some(image)) => format!("{image} (by reference: ECS reported no digest)"),
                (None, None) => h.keys.join(", "),
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
    fn an_image_is_held_and_found_by_digest_and_by_reference() {
        let image = Some("repo/app:1");
        assert_eq!(
            image_keys(&container(image, Some("sha256:ab"))),
            ["digest:sha256:ab", "image:repo/app:1"]
        );
        assert_eq!(image_keys(&container(image, None)), ["image:repo/app:1"]);
        assert!(image_keys(&container(None, None)).is_empty());
    }
}
