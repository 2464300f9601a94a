//! `release`: undo a containment from its ledger record — restore the original security
//! groups and delete exactly the network ACL entries that were added. Each change is checked
//! against what is there now: an entry or group someone else changed since is left alone and
//! reported.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use super::isolate::nacl::remove_entries;
use super::isolate::{ContainmentRecord, NaclEntry};
use super::{aws, Clients, StepError};
use crate::network::{parse_cidr, Acl};

/// What `release` calls (besides the ledger).
pub const PERMISSIONS: &[&str] = &[
    "ec2:DescribeSecurityGroups",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:DescribeNetworkAcls",
    "ec2:DeleteNetworkAclEntry",
    "ec2:DescribeNetworkInterfaces",
    "ec2:ModifyNetworkInterfaceAttribute",
    "ecs:TagResource",
    // scale-service: the count put back
    "ecs:DescribeServices",
    // drain-instance: the container instance set ACTIVE again
    "ecs:DescribeContainerInstances",
    "ecs:UpdateContainerInstancesState",
    "ecs:UpdateService",
    // protect-instance: termination protection and shutdown behaviour put back
    "ec2:DescribeInstanceAttribute",
    "ec2:ModifyInstanceAttribute",
    "autoscaling:DescribeAutoScalingInstances",
    // revoke-sessions: the policy removed, or narrowed when the workload stops
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
];

/// What a release undid, and what it left alone and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseOutput {
    /// ACL entries deleted.
    pub removed_nacl_entries: Vec<NaclEntry>,
    /// ENIs given their original groups back.
    pub restored_security_groups: Vec<RestoredGroups>,
    /// Locked-down security groups given their rules back.
    #[serde(default)]
    pub restored_group_rules: Vec<String>,
    /// Changes not undone because they are no longer as made.
    pub left_alone: Vec<LeftAlone>,
    /// Changes whose undo failed.
    pub failed: Vec<FailedUndo>,
}

impl ReleaseOutput {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{} removed, {} restored, {} left alone, {} failed",
            crate::report::count(
                self.removed_nacl_entries.len(),
                "network ACL entry",
                "network ACL entries"
            ),
            crate::report::count(self.restored_security_groups.len(), "ENI", "ENIs"),
            self.left_alone.len(),
            self.failed.len()
        )
    }
}

/// An ENI whose groups were restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredGroups {
    /// The network interface.
    pub eni_id: String,
    /// The groups it has again.
    pub groups: Vec<String>,
}

/// A change not undone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftAlone {
    /// The ACL entry, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<NaclEntry>,
    /// The ENI, when it is a group swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    /// Why it was left.
    pub why: String,
}

/// An undo that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedUndo {
    /// The ACL entry, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<NaclEntry>,
    /// The ENI, when it is a group swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eni_id: Option<String>,
    /// The error.
    pub error: String,
}

/// Undo the record. `nacl_only` is for a task's STOPPED event: its ENI is gone, only the ACL
/// entries (which would block the next task that gets the same IP) matter.
pub async fn release(
    clients: &Clients,
    record: &ContainmentRecord,
    nacl_only: bool,
) -> Result<ReleaseOutput, StepError> {
    let mut removed = Vec::new();
    let mut left = Vec::new();
    let mut failed = Vec::new();
    let (still_ours, acls_gone) =
        still_present(clients, record.vpc_id.as_deref(), &record.nacl_entries).await?;
    let (ours, gone): (Vec<NaclEntry>, Vec<NaclEntry>) = record
        .nacl_entries
        .iter()
        .cloned()
        .partition(|e| still_ours.contains(e));
    for entry in gone {
        let why = if acls_gone.contains(&entry.acl_id) {
            format!("network ACL {} no longer exists", entry.acl_id)
        } else {
            "not present as recorded (never created, already removed, or replaced)".to_string()
        };
        left.push(LeftAlone {
            entry: Some(entry),
            eni_id: None,
            why,
        });
    }
    for (entry, result) in remove_entries(clients, &ours).await {
        match result {
            Ok(()) => removed.push(entry),
            Err(error) => failed.push(FailedUndo {
                entry: Some(entry),
                eni_id: None,
                error: error.to_string(),
            }),
        }
    }

    let mut restored = Vec::new();
    let mut restored_rules = Vec::new();
    if !nacl_only {
        // A stopped task's service goes on (ECS replaces the task) with the locked-down groups:
        // only an explicit release gives them their rules back.
        for lockdown in &record.group_lockdowns {
            match super::isolate::lockdown::restore(clients, lockdown).await {
                Ok(()) => restored_rules.push(lockdown.group_id.clone()),
                Err(error) => failed.push(FailedUndo {
                    entry: None,
                    eni_id: None,
                    error: format!("security group {}: {error}", lockdown.group_id),
                }),
            }
        }
        for swap in &record.sg_swaps {
            let current = clients
                .ec2
                .describe_network_interfaces()
                .network_interface_ids(&swap.eni_id)
                .send()
                .await;
            let groups: Vec<String> = match current {
                Ok(output) => output
                    .network_interfaces()
                    .first()
                    .map(|eni| {
                        eni.groups()
                            .iter()
                            .filter_map(|g| g.group_id().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(error) if error.code() == Some("InvalidNetworkInterfaceID.NotFound") => {
                    left.push(LeftAlone {
                        entry: None,
                        eni_id: Some(swap.eni_id.clone()),
                        why: "the network interface no longer exists".to_string(),
                    });
                    continue;
                }
                Err(error) => return Err(aws("EC2 DescribeNetworkInterfaces")(error)),
            };
            // Ours: the quarantine group, or the untracking one an attempt died after setting.
            let ours = groups == [swap.quarantine_group.clone()]
                || groups == [swap.untracking_group.clone()];
            if !ours {
                left.push(LeftAlone {
                    entry: None,
                    eni_id: Some(swap.eni_id.clone()),
                    why: format!(
                        "its groups changed since quarantine ({groups:?}); not overwritten"
                    ),
                });
                continue;
            }
            match clients
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(&swap.eni_id)
                .set_groups(Some(swap.original_groups.clone()))
                .send()
                .await
            {
                Ok(_) => restored.push(RestoredGroups {
                    eni_id: swap.eni_id.clone(),
                    groups: swap.original_groups.clone(),
                }),
                Err(error) => failed.push(FailedUndo {
                    entry: None,
                    eni_id: Some(swap.eni_id.clone()),
                    error: aws("EC2 ModifyNetworkInterfaceAttribute")(error).to_string(),
                }),
            }
        }
    }
    let output = ReleaseOutput {
        removed_nacl_entries: removed,
        restored_security_groups: restored,
        restored_group_rules: restored_rules,
        left_alone: left,
        failed,
    };
    if !output.failed.is_empty() {
        let failures: Vec<&str> = output.failed.iter().map(|f| f.error.as_str()).collect();
        return Err(StepError::Refused(format!(
            "release incomplete ({}): {}",
            output.summary(),
            failures.join("; ")
        )));
    }
    Ok(output)
}

/// The recorded entries that are still in their ACLs exactly as created.
async fn still_present(
    clients: &Clients,
    vpc_id: Option<&str>,
    entries: &[NaclEntry],
) -> Result<(Vec<NaclEntry>, Vec<String>), StepError> {
    let mut acl_ids: Vec<String> = entries.iter().map(|e| e.acl_id.clone()).collect();
    acl_ids.sort();
    acl_ids.dedup();
    if acl_ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // The VPC's ACLs, not NetworkAclIds: one ACL deleted since must not fail the release of
    // the rest (an unknown id fails the whole call).
    let request = clients.ec2.describe_network_acls();
    let request = match vpc_id {
        Some(vpc) => request.filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc)
                .build(),
        ),
        None => request.set_network_acl_ids(Some(acl_ids.clone())),
    };
    let output = request
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkAcls"))?;
    let acls: Vec<Acl> = output
        .network_acls()
        .iter()
        .filter_map(crate::actions::isolate::model_acl)
        .collect();
    let gone: Vec<String> = acl_ids
        .into_iter()
        .filter(|id| !acls.iter().any(|a| &a.id == id))
        .collect();
    let present = entries
        .iter()
        .filter(|wanted| {
            let cidr = parse_cidr(&wanted.cidr);
            acls.iter().any(|acl| {
                acl.id == wanted.acl_id
                    && acl.entries.iter().any(|e| {
                        e.rule_number == wanted.rule_number
                            && e.egress == wanted.egress
                            // Compared in canonical form: `10.0.1.5/32` is `10.0.1.5/32`
                            // however it was written.
                            && Some(e.cidr) == cidr
                    })
            })
        })
        .cloned()
        .collect();
    Ok((present, gone))
}
