//! `deregister`: take the task's IP out of every ELBv2 target group it is registered in, so it
//! stops taking traffic (and a quarantined task failing health checks is not left half-in).
//! Release does not re-register: the scheduler replaces the task.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload::describe_task;
use super::{aws, Action, Clients, Failure, Phase, StepContext, StepError};
use crate::incident::{Target, TargetKind};
use crate::playbook::Glob;

/// The `deregister` action.
pub struct Deregister;

/// Parameters of `deregister`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeregisterParams {
    /// Only target groups whose ARN matches one of these globs (default: every target group
    /// the workload is registered in).
    #[serde(default)]
    pub target_groups: Option<Vec<Glob>>,
}

/// Where the workload was taken out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeregisterOutput {
    /// The workload's IP, as registered.
    pub ip: String,
    /// Each target group it was removed from.
    pub deregistered: Vec<Deregistered>,
}

/// One target group the workload was removed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deregistered {
    /// The target group.
    pub target_group_arn: String,
    /// The ports it was registered on.
    pub ports: Vec<Option<i32>>,
}

impl Action for Deregister {
    const NAME: &'static str = "deregister";
    const PHASE: Phase = Phase::Preserve;
    const PURPOSE: &'static str = "take the workload out of its load balancer target groups";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask, TargetKind::Ec2Instance];
    const PERMISSIONS: &'static [&'static str] = &[
        "ecs:DescribeTasks",
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DeregisterTargets",
    ];

    type Params = DeregisterParams;
    type Output = DeregisterOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &DeregisterParams,
    ) -> Result<DeregisterOutput, Failure<DeregisterOutput>> {
        let (ip, vpc) = match (&ctx.earlier.containment, &ctx.incident.target) {
            (Some(record), _) => (record.ip.clone(), record.vpc_id.clone()),
            (None, Target::EcsTask(task)) => {
                let facts = describe_task(ctx.clients, task).await?;
                (facts.and_then(|f| f.ipv4), None)
            }
            (None, Target::Ec2Instance(i)) => (
                i.network_interfaces
                    .first()
                    .and_then(|e| e.private_ip.clone()),
                i.vpc_id.clone(),
            ),
            _ => (None, None),
        };
        let ip =
            ip.ok_or_else(|| StepError::Refused("the workload's IP is unknown".to_string()))?;
        deregister(ctx.clients, ip, vpc.as_deref(), params).await
    }

    fn summary(output: &DeregisterOutput) -> String {
        format!(
            "{} removed from {}",
            output.ip,
            crate::report::count(output.deregistered.len(), "target group", "target groups")
        )
    }
}

async fn deregister(
    clients: &Clients,
    ip: String,
    vpc_id: Option<&str>,
    params: &DeregisterParams,
) -> Result<DeregisterOutput, Failure<DeregisterOutput>> {
    let ip = ip.as_str();
    let mut removed = Vec::new();
    let mut marker = None;
    loop {
        let page = clients
            .elbv2
            .describe_target_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(aws("ELBv2 DescribeTargetGroups"))?;
        for group in page.target_groups() {
            let Some(arn) = group.target_group_arn() else {
                continue;
            };
            let is_ip = group.target_type().is_some_and(|t| t.as_str() == "ip");
            let same_vpc = vpc_id.is_none() || group.vpc_id() == vpc_id;
            let allowed = params
                .target_groups
                .as_ref()
                .is_none_or(|globs| globs.iter().any(|g| g.is_match(arn)));
            if !(is_ip && same_vpc && allowed) {
                continue;
            }
            let health = clients
                .elbv2
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(aws("ELBv2 DescribeTargetHealth"))?;
            let targets: Vec<_> = health
                .target_health_descriptions()
                .iter()
                .filter_map(|d| d.target())
                .filter(|t| t.id() == Some(ip))
                .cloned()
                .collect();
            if targets.is_empty() {
                continue;
            }
            let ports: Vec<Option<i32>> = targets.iter().map(|t| t.port()).collect();
            let result = clients
                .elbv2
                .deregister_targets()
                .target_group_arn(arn)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(aws("ELBv2 DeregisterTargets"));
            if let Err(error) = result {
                // Groups already left are reported with the failure.
                return Err(Failure {
                    error,
                    partial: Some(DeregisterOutput {
                        ip: ip.to_string(),
                        deregistered: removed,
                    }),
                });
            }
            removed.push(Deregistered {
                target_group_arn: arn.to_string(),
                ports,
            });
        }
        marker = page.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    Ok(DeregisterOutput {
        ip: ip.to_string(),
        deregistered: removed,
    })
}
