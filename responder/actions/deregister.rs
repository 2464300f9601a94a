//! `deregister`: take the workload out of every ELBv2 target group of its VPC it is registered
//! in, so it stops taking traffic: an `awsvpc` task or an instance by its private IP (`ip`
//! target groups), an instance by its id (`instance` target groups). A task with `bridge` or
//! `host` networking is registered as its container instance and a port: not covered (the
//! step fails, the workload's IP being unknown). Always scoped to the workload's VPC: the same
//! private address can be a different target in another VPC. Release does not re-register.

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
    /// The VPC whose target groups were looked at.
    #[serde(default)]
    pub vpc_id: Option<String>,
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
        "ec2:DescribeNetworkInterfaces",
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
        let instance_id = match &ctx.incident.target {
            Target::Ec2Instance(i) => Some(i.instance_id.clone()),
            _ => None,
        };
        let (ip, vpc) = match (&ctx.earlier.containment, &ctx.incident.target) {
            (Some(record), _) => (record.ip.clone(), record.vpc_id.clone()),
            (None, Target::EcsTask(task)) => match describe_task(ctx.clients, task).await? {
                Some(facts) => {
                    let vpc = match &facts.eni_id {
                        Some(eni) => vpc_of_interface(ctx.clients, eni).await?,
                        None => None,
                    };
                    (facts.ipv4, vpc)
                }
                None => (None, None),
            },
            (None, Target::Ec2Instance(i)) => (
                i.network_interfaces
                    .first()
                    .and_then(|e| e.private_ip.clone()),
                i.vpc_id.clone(),
            ),
            _ => (None, None),
        };
        let ip =
            ip.ok_or_else(|| StepError::Refused("the workload's IP is unknown (a task without awsvpc networking is registered by container instance and port, which deregister does not cover)".to_string()))?;
        let vpc = vpc.ok_or_else(|| {
            StepError::Refused(format!(
                "the VPC of {ip} is unknown: the same private address may be another target in another VPC, so nothing is deregistered"
            ))
        })?;
        deregister(ctx.clients, ip, instance_id, vpc, params).await
    }

    fn summary(output: &DeregisterOutput) -> String {
        let vpc = output.vpc_id.as_deref().unwrap_or("its VPC");
        match output.deregistered.len() {
            0 => format!("{} was in no target group of {vpc}", output.ip),
            n => format!(
                "{} removed from {} of {vpc}",
                output.ip,
                crate::report::count(n, "target group", "target groups")
            ),
        }
    }
}

/// The VPC of a network interface (DescribeNetworkInterfaces).
async fn vpc_of_interface(clients: &Clients, eni: &str) -> Result<Option<String>, StepError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(eni)
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
    Ok(output
        .network_interfaces()
        .first()
        .and_then(|n| n.vpc_id())
        .map(str::to_string))
}

async fn deregister(
    clients: &Clients,
    ip: String,
    instance_id: Option<String>,
    vpc_id: String,
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
            // Targets are registered by IP or by instance id, as the group's type says.
            let wanted = match group.target_type().map(|t| t.as_str()) {
                Some("ip") => Some(ip),
                Some("instance") => instance_id.as_deref(),
                _ => None,
            };
            let same_vpc = group.vpc_id() == Some(vpc_id.as_str());
            let allowed = params
                .target_groups
                .as_ref()
                .is_none_or(|globs| globs.iter().any(|g| g.is_match(arn)));
            let Some(wanted) = wanted.filter(|_| same_vpc && allowed) else {
                continue;
            };
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
                .filter(|t| t.id() == Some(wanted))
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
                        vpc_id: Some(vpc_id.clone()),
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
        vpc_id: Some(vpc_id),
        deregistered: removed,
    })
}
