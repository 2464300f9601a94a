//! `scale-service`: lower the desired count of the task's service, so ECS does not keep
//! replacing a compromised task with another from the same image. It never scales up, refuses a
//! daemon service (no desired count), writes the previous count down before changing it, and
//! `release` puts it back unless someone changed it since. Runs in the stop phase: after
//! evidence (scaling in can stop the quarantined task itself; to 0 it will), unless forced.
//! Application Auto Scaling, where it manages the service, can raise the count again: the
//! summary says so.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Action, Clients, Earlier, Failure, Phase, StepContext, StepError};
use crate::incident::{Target, TargetKind};

/// The `scale-service` action.
pub struct ScaleService;

/// The step's item in the ledger.
pub const STEP_KEY: &str = "step#scale-service";

/// Parameters of `scale-service`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleParams {
    /// The desired count to set (default 0: no task of the service runs until release). Only
    /// ever lowers the count.
    #[serde(default)]
    pub desired_count: u32,
    /// Scale even when evidence could not be preserved.
    #[serde(default)]
    pub force: bool,
}

/// How the service was scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ScaleOutput {
    /// UpdateService set the new desired count.
    Scaled(ServiceScale),
    /// The service already wanted no more tasks than asked: nothing changed.
    AlreadyAtOrBelow {
        /// The service.
        service: String,
        /// Its desired count.
        desired_count: i32,
    },
}

/// A service's desired count before and after: what `release` restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceScale {
    /// The cluster.
    pub cluster_arn: String,
    /// The service.
    pub service: String,
    /// The desired count before.
    pub previous_desired_count: i32,
    /// The desired count set.
    pub desired_count: i32,
}

impl Action for ScaleService {
    const NAME: &'static str = "scale-service";
    const PHASE: Phase = Phase::Stop;
    const PURPOSE: &'static str =
        "lower the service's desired count so ECS stops replacing the task from the same image";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask];
    const PERMISSIONS: &'static [&'static str] = &["ecs:DescribeServices", "ecs:UpdateService"];

    type Params = ScaleParams;
    type Output = ScaleOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &ScaleParams,
    ) -> Result<ScaleOutput, Failure<ScaleOutput>> {
        let Target::EcsTask(task) = &ctx.incident.target else {
            return Err(StepError::Refused(format!(
                "scale-service acts on ECS service tasks; this is a {}",
                ctx.incident.target.kind().name()
            ))
            .into());
        };
        let Some(service) = &task.service else {
            return Err(StepError::Refused(
                "the task belongs to no service: nothing replaces it, so there is nothing to scale"
                    .to_string(),
            )
            .into());
        };
        let wanted = i32::try_from(params.desired_count).unwrap_or(i32::MAX);
        let current = match desired_count(ctx.clients, &task.cluster_arn, service).await? {
            None => {
                return Err(
                    StepError::Refused(format!("ECS does not know service {service}")).into(),
                )
            }
            Some((_, true)) => {
                return Err(StepError::Refused(format!(
                    "service {service} is a daemon service: it has no desired count to lower"
                ))
                .into())
            }
            Some((count, false)) => count,
        };
        if current <= wanted {
            return Ok(ScaleOutput::AlreadyAtOrBelow {
                service: service.clone(),
                desired_count: current,
            });
        }
        let scale = ServiceScale {
            cluster_arn: task.cluster_arn.clone(),
            service: service.clone(),
            previous_desired_count: current,
            desired_count: wanted,
        };
        // Written down first: a crash after UpdateService still leaves release the count.
        ctx.ledger
            .record_intent(
                &ctx.incident.finding_id,
                STEP_KEY,
                &[serde_json::to_value(&scale).unwrap_or_default()],
            )
            .await?;
        set_desired_count(ctx.clients, &scale.cluster_arn, service, wanted).await?;
        Ok(ScaleOutput::Scaled(scale))
    }

    fn summary(output: &ScaleOutput) -> String {
        match output {
            ScaleOutput::Scaled(s) => format!(
                "service {} scaled from {} to {} (Application Auto Scaling, if it manages the service, may raise it again)",
                s.service, s.previous_desired_count, s.desired_count
            ),
            ScaleOutput::AlreadyAtOrBelow {
                service,
                desired_count,
            } => format!("service {service} already wants {desired_count}: not changed"),
        }
    }

    fn reason(params: &ScaleParams) -> String {
        format!(
            "lower the service's desired count to {} so ECS stops replacing the task from the same image{}",
            params.desired_count,
            if params.force { " (force: even without evidence)" } else { "" }
        )
    }

    fn withheld(params: &ScaleParams, earlier: &Earlier) -> Option<String> {
        (!params.force && !earlier.evidence_done).then(|| {
            "evidence was not preserved, and scaling in can stop the task itself (to 0 it will): not scaled (set `scale-service: {force: true}` to scale anyway)".to_string()
        })
    }
}

/// The service's desired count now and whether it is a daemon service (None: ECS does not
/// know the service).
pub async fn desired_count(
    clients: &Clients,
    cluster_arn: &str,
    service: &str,
) -> Result<Option<(i32, bool)>, StepError> {
    let described = clients
        .ecs
        .describe_services()
        .cluster(cluster_arn)
        .services(service)
        .send()
        .await
        .map_err(aws("ECS DescribeServices"))?;
    // DescribeServices still returns a deleted service (status INACTIVE): not a service to scale.
    Ok(described
        .services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
        .map(|s| {
            let daemon = s.scheduling_strategy().map(|s| s.as_str()) == Some("DAEMON");
            (s.desired_count(), daemon)
        }))
}

/// UpdateService with a new desired count.
pub async fn set_desired_count(
    clients: &Clients,
    cluster_arn: &str,
    service: &str,
    count: i32,
) -> Result<(), StepError> {
    clients
        .ecs
        .update_service()
        .cluster(cluster_arn)
        .service(service)
        .desired_count(count)
        .send()
        .await
        .map_err(aws("ECS UpdateService"))?;
    Ok(())
}
