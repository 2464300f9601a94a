//! `protect-instance`: keep an EC2 instance — the evidence — from being destroyed while it is
//! investigated: termination protection on, shutdown from inside the instance stops it instead
//! of terminating it, and, in an Auto Scaling group, the instance moved to Standby so the group
//! neither replaces it on a failed health check nor terminates it on scale-in (the group keeps
//! its desired capacity, launching a replacement: no outage from this). Each previous setting is
//! written down first; `release` puts back the two settings where they are still as this step
//! left them, and leaves the instance in Standby (putting it back in service raises the group's
//! desired capacity, which is a person's decision, or the instance is terminated anyway).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Action, Clients, Failure, Phase, StepContext, StepError};
use crate::incident::{Target, TargetKind};

/// The `protect-instance` action.
pub struct ProtectInstance;

/// The step's item in the ledger.
pub const STEP_KEY: &str = "step#protect-instance";

/// Parameters of `protect-instance`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectParams {
    /// Move the instance to Standby in its Auto Scaling group (default true), without lowering
    /// the group's desired capacity: the group launches a replacement and leaves this one be.
    #[serde(default = "yes")]
    pub standby: bool,
}

fn yes() -> bool {
    true
}

impl Default for ProtectParams {
    fn default() -> Self {
        ProtectParams { standby: true }
    }
}

/// What was set, and what it was before (what `release` restores).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// The instance.
    pub instance_id: String,
    /// `DisableApiTermination` before.
    pub termination_protection_before: bool,
    /// `InstanceInitiatedShutdownBehavior` before (`stop` or `terminate`).
    pub shutdown_behavior_before: String,
    /// Termination protection was turned on by this step.
    pub termination_protection_set: bool,
    /// The shutdown behaviour was changed to `stop` by this step.
    pub shutdown_stop_set: bool,
    /// The Auto Scaling group, when the instance is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling_group: Option<String>,
    /// The instance was moved to Standby by this step.
    #[serde(default)]
    pub entered_standby: bool,
    /// A Spot instance: EC2 allows no termination protection for it.
    #[serde(default)]
    pub spot: bool,
}

impl Action for ProtectInstance {
    const NAME: &'static str = "protect-instance";
    const PHASE: Phase = Phase::Preserve;
    const PURPOSE: &'static str =
        "keep the instance from being terminated or replaced while it is investigated";
    // It changes no traffic, and keeps evidence: it runs for exempt workloads and before approval.
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = &[TargetKind::Ec2Instance];
    const PERMISSIONS: &'static [&'static str] = &[
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceAttribute",
        "ec2:ModifyInstanceAttribute",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:EnterStandby",
    ];

    type Params = ProtectParams;
    type Output = Protection;

    async fn run(
        ctx: &StepContext<'_>,
        params: &ProtectParams,
    ) -> Result<Protection, Failure<Protection>> {
        let Target::Ec2Instance(instance) = &ctx.incident.target else {
            return Err(StepError::Refused(format!(
                "protect-instance acts on EC2 instances; this is a {}",
                ctx.incident.target.kind().name()
            ))
            .into());
        };
        let id = instance.instance_id.as_str();
        // An earlier attempt's record keeps the settings from before any change of ours.
        let earlier = ctx
            .written_down
            .iter()
            .find_map(|v| serde_json::from_value::<Protection>(v.clone()).ok());
        let ((termination, shutdown), group, spot) = tokio::try_join!(
            instance_settings(ctx.clients, id),
            async {
                if params.standby {
                    auto_scaling_group(ctx.clients, id).await
                } else {
                    Ok(None)
                }
            },
            is_spot(ctx.clients, id)
        )?;
        let mut protection = earlier.unwrap_or_else(|| Protection {
            instance_id: id.to_string(),
            termination_protection_before: termination,
            shutdown_behavior_before: shutdown.clone(),
            ..Protection::default()
        });
        protection.spot = spot;
        let protect = !termination && !spot;
        let stop = shutdown != "stop";
        protection.termination_protection_set |= protect;
        protection.shutdown_stop_set |= stop;
        let standby = match &group {
            Some((name, state)) if state == "InService" => {
                protection.auto_scaling_group = Some(name.clone());
                protection.entered_standby = true;
                true
            }
            Some((name, _)) => {
                protection.auto_scaling_group = Some(name.clone());
                false
            }
            None => false,
        };
        // Written down first: release finds what to put back even if this attempt dies.
        ctx.ledger
            .record_intent(
                &ctx.incident.finding_id,
                STEP_KEY,
                &[serde_json::to_value(&protection).unwrap_or_default()],
            )
            .await?;
        // Each change on its own: one refused must not cancel the others. What did not
        // happen is not reported (nor released) as done.
        let group = protection.auto_scaling_group.clone();
        let (protected, stopped, in_standby) = tokio::join!(
            async {
                match protect {
                    true => set_termination_protection(ctx.clients, id, true).await,
                    false => Ok(()),
                }
            },
            async {
                match stop {
                    true => set_shutdown_behavior(ctx.clients, id, "stop").await,
                    false => Ok(()),
                }
            },
            async {
                match (&group, standby) {
                    (Some(group), true) => enter_standby(ctx.clients, group, id).await,
                    _ => Ok(()),
                }
            }
        );
        let mut first_error = None;
        if let Err(error) = protected {
            protection.termination_protection_set = false;
            first_error.get_or_insert(error);
        }
        if let Err(error) = stopped {
            protection.shutdown_stop_set = false;
            first_error.get_or_insert(error);
        }
        if let Err(error) = in_standby {
            protection.entered_standby = false;
            first_error.get_or_insert(error);
        }
        match first_error {
            None => Ok(protection),
            Some(error) => Err(Failure {
                error,
                partial: Some(protection),
            }),
        }
    }

    fn summary(output: &Protection) -> String {
        let mut done = Vec::new();
        if output.termination_protection_set {
            done.push("termination protection on".to_string());
        }
        if output.shutdown_stop_set {
            done.push("shutdown from inside now stops it".to_string());
        }
        match (&output.auto_scaling_group, output.entered_standby) {
            (Some(group), true) => done.push(format!(
                "in Standby in Auto Scaling group {group} (the group launches a replacement)"
            )),
            (Some(group), false) => done.push(format!(
                "in Auto Scaling group {group}, not in service: left as it was"
            )),
            (None, _) => {}
        }
        if output.spot {
            done.push(
                "a Spot instance: EC2 allows no termination protection, and may reclaim it"
                    .to_string(),
            );
        }
        if done.is_empty() {
            "already protected: nothing changed".to_string()
        } else {
            done.join("; ")
        }
    }
}

/// `DisableApiTermination` and `InstanceInitiatedShutdownBehavior`, as EC2 says now.
pub async fn instance_settings(clients: &Clients, id: &str) -> Result<(bool, String), StepError> {
    use aws_sdk_ec2::types::InstanceAttributeName;
    let (termination, shutdown) = tokio::try_join!(
        async {
            clients
                .ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(InstanceAttributeName::DisableApiTermination)
                .send()
                .await
                .map_err(aws("EC2 DescribeInstanceAttribute"))
        },
        async {
            clients
                .ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
                .send()
                .await
                .map_err(aws("EC2 DescribeInstanceAttribute"))
        }
    )?;
    Ok((
        termination
            .disable_api_termination()
            .and_then(|v| v.value())
            .unwrap_or(false),
        shutdown
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value())
            .unwrap_or("stop")
            .to_string(),
    ))
}

/// Whether the instance is a Spot instance (EC2 refuses termination protection for those).
async fn is_spot(clients: &Clients, id: &str) -> Result<bool, StepError> {
    let described = clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(aws("EC2 DescribeInstances"))?;
    Ok(described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .any(|i| i.instance_lifecycle().map(|l| l.as_str()) == Some("spot")))
}

/// Termination protection on or off.
pub async fn set_termination_protection(
    clients: &Clients,
    id: &str,
    on: bool,
) -> Result<(), StepError> {
    clients
        .ec2
        .modify_instance_attribute()
        .instance_id(id)
        .disable_api_termination(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(on)
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 ModifyInstanceAttribute"))?;
    Ok(())
}

/// What a shutdown from inside the instance does (`stop` or `terminate`).
pub async fn set_shutdown_behavior(
    clients: &Clients,
    id: &str,
    behavior: &str,
) -> Result<(), StepError> {
    clients
        .ec2
        .modify_instance_attribute()
        .instance_id(id)
        .instance_initiated_shutdown_behavior(
            aws_sdk_ec2::types::AttributeValue::builder()
                .value(behavior)
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 ModifyInstanceAttribute"))?;
    Ok(())
}

/// The instance's Auto Scaling group and its lifecycle state there, if it is in one.
pub async fn auto_scaling_group(
    clients: &Clients,
    id: &str,
) -> Result<Option<(String, String)>, StepError> {
    let described = clients
        .autoscaling
        .describe_auto_scaling_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(aws("Auto Scaling DescribeAutoScalingInstances"))?;
    Ok(described.auto_scaling_instances().first().map(|i| {
        (
            i.auto_scaling_group_name().unwrap_or_default().to_string(),
            i.lifecycle_state().unwrap_or_default().to_string(),
        )
    }))
}

async fn enter_standby(clients: &Clients, group: &str, id: &str) -> Result<(), StepError> {
    clients
        .autoscaling
        .enter_standby()
        .auto_scaling_group_name(group)
        .instance_ids(id)
        // The group keeps its capacity: it launches a replacement, the service does not shrink.
        .should_decrement_desired_capacity(false)
        .send()
        .await
        .map_err(aws("Auto Scaling EnterStandby"))?;
    Ok(())
}
