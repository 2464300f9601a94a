//! The `nacl-quarantine` rung: DENY the task's addresses in every network ACL guarding a subnet
//! of its VPC, at numbers the [`allocator`](super::allocator) chooses, rolled back if any entry
//! cannot be made. Also the removal `release` uses.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{NetworkAcl, RuleAction};
use serde_json::Value;

pub(super) use super::allocator::TaskCidrs;
use super::allocator::{choose_numbers, wanted_entries, WantedEntry};
use super::endpoints::Endpoint;
use super::ladder::RungError;
use super::{NaclEntry, RuleRange};
use crate::actions::workload::{acl_json, describe_acls};
use crate::actions::{aws, Clients, StepError};

/// The ACL's catch-all rule; never ours, never counted.
const DEFAULT_RULE: i32 = 32767;

fn entry_cidr(entry: &aws_sdk_ec2::types::NetworkAclEntry) -> Option<&str> {
    entry.cidr_block().or(entry.ipv6_cidr_block())
}

pub(super) async fn nacl_quarantine(
    clients: &Clients,
    vpc_id: &str,
    task_subnet: Option<&str>,
    cidrs: &TaskCidrs,
    range: RuleRange,
    endpoints: &[Endpoint],
) -> Result<(Vec<NaclEntry>, Value), RungError> {
    let acls = describe_acls(clients, vpc_id).await?;
    let before = Value::Array(acls.iter().map(acl_json).collect());
    // Every ACL that guards a subnet of the VPC: traffic from the task into any other subnet
    // (NAT gateways, endpoints, load balancers, data stores) crosses one of them.
    let in_use: Vec<&NetworkAcl> = acls
        .iter()
        .filter(|a| !a.associations().is_empty())
        .collect();
    if in_use.is_empty() {
        return Err(RungError::NotApplicable(format!(
            "no network ACL in {vpc_id} is associated with a subnet"
        )));
    }
    let endpoint_subnets: BTreeSet<&str> = endpoints
        .iter()
        .filter_map(|e| e.subnet_id.as_deref())
        .filter(|s| Some(*s) != task_subnet)
        .collect();

    let mut plan: Vec<NaclEntry> = Vec::new();
    for acl in &in_use {
        let acl_id = acl.network_acl_id().unwrap_or_default().to_string();
        let guards_endpoint = acl
            .associations()
            .iter()
            .any(|a| a.subnet_id().is_some_and(|s| endpoint_subnets.contains(s)));
        let wanted = wanted_entries(cidrs, guards_endpoint);
        for egress in [false, true] {
            let existing: Vec<&aws_sdk_ec2::types::NetworkAclEntry> = acl
                .entries()
                .iter()
                .filter(|e| e.egress() == Some(egress) && e.rule_number() != Some(DEFAULT_RULE))
                .collect();
            let mine: Vec<&WantedEntry> = wanted.iter().filter(|w| w.egress == egress).collect();
            // Entries from an earlier attempt for this very address are kept, not duplicated.
            let missing: Vec<&WantedEntry> = mine
                .into_iter()
                .filter(|w| {
                    !existing.iter().any(|e| {
                        entry_cidr(e) == Some(w.cidr.as_str())
                            && (e.rule_action() == Some(&RuleAction::Allow)) == w.allow
                            && range.contains(e.rule_number().unwrap_or(0))
                    })
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            let used: BTreeSet<i32> = existing.iter().filter_map(|e| e.rule_number()).collect();
            let first_foreign = existing
                .iter()
                .filter_map(|e| e.rule_number())
                .filter(|n| !range.contains(*n))
                .min()
                .unwrap_or(DEFAULT_RULE);
            let numbers =
                choose_numbers(&used, first_foreign, range, missing.len()).map_err(|why| {
                    RungError::Failed(StepError::Refused(format!(
                        "network ACL {acl_id} ({}): {why}",
                        if egress { "egress" } else { "ingress" }
                    )))
                })?;
            // Allows first (lower numbers), then denies.
            let mut ordered = missing;
            ordered.sort_by_key(|w| !w.allow);
            for (wanted, number) in ordered.into_iter().zip(numbers) {
                plan.push(NaclEntry {
                    acl_id: acl_id.clone(),
                    rule_number: number,
                    egress,
                    cidr: wanted.cidr.clone(),
                    ipv6: wanted.ipv6,
                    action: if wanted.allow { "allow" } else { "deny" }.to_string(),
                    protocol: if wanted.ports.is_some() { "6" } else { "-1" }.to_string(),
                    ports: wanted.ports,
                });
            }
        }
    }

    let mut created: Vec<NaclEntry> = Vec::new();
    for entry in &plan {
        let mut request = clients
            .ec2
            .create_network_acl_entry()
            .network_acl_id(&entry.acl_id)
            .rule_number(entry.rule_number)
            .egress(entry.egress)
            .protocol(&entry.protocol)
            .rule_action(if entry.action == "allow" {
                RuleAction::Allow
            } else {
                RuleAction::Deny
            });
        request = if entry.ipv6 {
            request.ipv6_cidr_block(&entry.cidr)
        } else {
            request.cidr_block(&entry.cidr)
        };
        if let Some((from, to)) = entry.ports {
            request = request.port_range(
                aws_sdk_ec2::types::PortRange::builder()
                    .from(from)
                    .to(to)
                    .build(),
            );
        }
        if let Err(error) = request.send().await {
            let error = aws("EC2 CreateNetworkAclEntry")(error);
            // Never leave a half-applied quarantine behind.
            remove_entries(clients, &created).await;
            return Err(RungError::Failed(error));
        }
        created.push(entry.clone());
    }
    // Entries from an earlier attempt that already existed are part of the record too.
    let mut all = existing_entries_for(&acls, cidrs, range);
    for entry in created {
        if !all.contains(&entry) {
            all.push(entry);
        }
    }
    Ok((all, before))
}

fn existing_entries_for(
    acls: &[NetworkAcl],
    cidrs: &TaskCidrs,
    range: RuleRange,
) -> Vec<NaclEntry> {
    let ours: BTreeSet<&str> = std::iter::once(cidrs.ipv4.as_str())
        .chain(cidrs.ipv6.as_deref())
        .collect();
    let mut entries = Vec::new();
    for acl in acls.iter().filter(|a| !a.associations().is_empty()) {
        for e in acl.entries() {
            let number = e.rule_number().unwrap_or(0);
            let Some(cidr) = entry_cidr(e) else { continue };
            if range.contains(number) && ours.contains(cidr) {
                entries.push(NaclEntry {
                    acl_id: acl.network_acl_id().unwrap_or_default().to_string(),
                    rule_number: number,
                    egress: e.egress().unwrap_or(false),
                    cidr: cidr.to_string(),
                    ipv6: e.ipv6_cidr_block().is_some(),
                    action: e
                        .rule_action()
                        .map(|a| a.as_str().to_string())
                        .unwrap_or_default(),
                    protocol: e.protocol().unwrap_or("-1").to_string(),
                    ports: e.port_range().and_then(|p| Some((p.from()?, p.to()?))),
                });
            }
        }
    }
    entries
}

/// Delete entries this tool created; best effort, each result reported.
pub(crate) async fn remove_entries(
    clients: &Clients,
    entries: &[NaclEntry],
) -> Vec<(NaclEntry, Result<(), StepError>)> {
    let mut results = Vec::new();
    for entry in entries {
        let result = clients
            .ec2
            .delete_network_acl_entry()
            .network_acl_id(&entry.acl_id)
            .rule_number(entry.rule_number)
            .egress(entry.egress)
            .send()
            .await
            .map(|_| ())
            .map_err(aws("EC2 DeleteNetworkAclEntry"));
        results.push((entry.clone(), result));
    }
    results
}
