//! The AWS calls of `responder sweep`: every quarantine-range entry of the region's network
//! ACLs, and whether the workload a recorded quarantine was for still runs. Read-only; what
//! it finds is released through `release`.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use serde::Serialize;

use super::{aws, Clients, StepError};
use crate::network::parse_cidr;

/// What the sweep calls, beyond `release` and the ledger.
pub const PERMISSIONS: &[&str] = &[
    "ec2:DescribeNetworkAcls",
    "ecs:DescribeTasks",
    "ec2:DescribeInstances",
];

/// An entry found in a network ACL's reserved range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FoundEntry {
    /// The ACL.
    pub acl_id: String,
    /// Its rule number.
    pub rule_number: i32,
    /// Outbound (true) or inbound.
    pub egress: bool,
    /// Its CIDR, canonical.
    pub cidr: String,
    /// `allow` or `deny`.
    pub action: String,
}

/// Whether a workload still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// It runs: its quarantine still matters.
    Running,
    /// Stopped, terminated or unknown to its service: its address may go to another workload.
    Gone,
}

/// Every entry numbered `first..=last` in the region's network ACLs (all pages).
pub async fn reserved_entries(
    clients: &Clients,
    first: i32,
    last: i32,
) -> Result<Vec<FoundEntry>, StepError> {
    let acls = clients
        .ec2
        .describe_network_acls()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws("EC2 DescribeNetworkAcls"))?;
    let mut found = Vec::new();
    for acl in &acls {
        let Some(acl_id) = acl.network_acl_id() else {
            continue;
        };
        for entry in acl.entries() {
            let Some(number) = entry.rule_number().filter(|n| (first..=last).contains(n)) else {
                continue;
            };
            let Some(cidr) = entry
                .cidr_block()
                .or(entry.ipv6_cidr_block())
                .and_then(parse_cidr)
            else {
                continue;
            };
            found.push(FoundEntry {
                acl_id: acl_id.to_string(),
                rule_number: number,
                egress: entry.egress().unwrap_or_default(),
                cidr: cidr.to_string(),
                action: entry
                    .rule_action()
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
            });
        }
    }
    found.sort();
    Ok(found)
}

/// Does the workload a quarantine was recorded for still run? `target` is an ECS task ARN
/// or an EC2 instance id, as the containment record names it.
pub async fn liveness(clients: &Clients, target: &str) -> Result<Liveness, StepError> {
    if let Some(task) = target.strip_prefix("arn:").filter(|t| t.contains(":task/")) {
        // arn:PARTITION:ecs:REGION:ACCOUNT:task/CLUSTER/ID
        let cluster = task
            .split(":task/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let output = match clients
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .tasks(target)
            .send()
            .await
        {
            Ok(output) => output,
            // ECS deletes no cluster that still has tasks (DeleteCluster): its tasks are gone.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_cluster_not_found_exception()) =>
            {
                return Ok(Liveness::Gone)
            }
            Err(error) => return Err(aws("ECS DescribeTasks")(error)),
        };
        let Some(task) = output.tasks().first() else {
            // MISSING: stopped over an hour ago. Any other failure says nothing about it.
            let missing = output
                .failures()
                .iter()
                .any(|f| f.reason() == Some("MISSING"));
            return if missing {
                Ok(Liveness::Gone)
            } else {
                Err(StepError::Refused(format!(
                    "ECS DescribeTasks could not tell whether {target} runs: {:?}",
                    output
                        .failures()
                        .iter()
                        .filter_map(|f| f.reason())
                        .collect::<Vec<_>>()
                )))
            };
        };
        let running = task
            .last_status()
            .is_some_and(|s| !matches!(s, "STOPPED" | "DELETED" | "DEPROVISIONING"));
        return Ok(if running {
            Liveness::Running
        } else {
            Liveness::Gone
        });
    }
    let output = clients
        .ec2
        .describe_instances()
        .instance_ids(target)
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) if error.code() == Some("InvalidInstanceID.NotFound") => {
            return Ok(Liveness::Gone)
        }
        Err(error) => return Err(aws("EC2 DescribeInstances")(error)),
    };
    let state = output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find_map(|i| {
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
        });
    Ok(match state.as_deref() {
        None | Some("terminated") | Some("shutting-down") => Liveness::Gone,
        Some(_) => Liveness::Running,
    })
}
