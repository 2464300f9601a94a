//! `deregister`: take the task's IP out of every ELBv2 target group it is registered in, so it
//! stops taking traffic (and a quarantined task failing health checks is not left half-in).
//! Release does not re-register: the scheduler replaces the task.

use serde_json::{json, Value};

use super::{aws, Clients, StepError};
use crate::playbook::DeregisterParams;

pub async fn deregister(
    clients: &Clients,
    ip: &str,
    vpc_id: Option<&str>,
    params: &DeregisterParams,
) -> Result<Value, StepError> {
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
            clients
                .elbv2
                .deregister_targets()
                .target_group_arn(arn)
                .set_targets(Some(targets))
                .send()
                .await
                .map_err(aws("ELBv2 DeregisterTargets"))?;
            removed.push(json!({"target_group_arn": arn, "ip": ip, "ports": ports}));
        }
        marker = page.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    Ok(json!({
        "summary": format!("{ip} removed from {} target group(s)", removed.len()),
        "deregistered": removed,
    }))
}
