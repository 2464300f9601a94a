//! `release`: undo a containment from its ledger record — restore the original security
//! groups and delete exactly the network ACL entries that were added. Each change is checked
//! against what is there now: an entry or group someone else changed since is left alone and
//! reported.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use serde_json::{json, Value};

use super::isolate::{remove_entries, ContainmentRecord, NaclEntry};
use super::{aws, Clients, StepError};

/// Undo the record. `nacl_only` is for a task's STOPPED event: its ENI is gone, only the ACL
/// entries (which would block the next task that gets the same IP) matter.
pub async fn release(
    clients: &Clients,
    record: &ContainmentRecord,
    nacl_only: bool,
) -> Result<Value, StepError> {
    let mut removed = Vec::new();
    let mut left = Vec::new();
    let mut failed = Vec::new();
    let still_ours = still_present(clients, &record.nacl_entries).await?;
    let (ours, gone): (Vec<NaclEntry>, Vec<NaclEntry>) = record
        .nacl_entries
        .iter()
        .cloned()
        .partition(|e| still_ours.contains(e));
    for entry in gone {
        left.push(json!({"entry": entry, "why": "no longer present as created (already removed or replaced)"}));
    }
    for (entry, result) in remove_entries(clients, &ours).await {
        match result {
            Ok(()) => removed.push(entry),
            Err(error) => failed.push(json!({"entry": entry, "error": error.to_string()})),
        }
    }

    let mut restored = Vec::new();
    if !nacl_only {
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
                    left.push(json!({"eni_id": swap.eni_id, "why": "the network interface no longer exists"}));
                    continue;
                }
                Err(error) => return Err(aws("EC2 DescribeNetworkInterfaces")(error)),
            };
            if groups != [swap.quarantine_group.clone()] {
                left.push(json!({"eni_id": swap.eni_id, "why": format!("its groups changed since quarantine ({groups:?}); not overwritten")}));
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
                Ok(_) => restored.push(json!({"eni_id": swap.eni_id, "groups": swap.original_groups})),
                Err(error) => failed.push(json!({"eni_id": swap.eni_id, "error": aws("EC2 ModifyNetworkInterfaceAttribute")(error).to_string()})),
            }
        }
    }
    let detail = json!({
        "removed_nacl_entries": removed,
        "restored_security_groups": restored,
        "left_alone": left,
        "failed": failed,
        "summary": format!("{} network ACL entr(ies) removed, {} ENI(s) restored, {} left alone, {} failed",
            removed.len(), restored.len(), left.len(), failed.len()),
    });
    if !failed.is_empty() {
        return Err(StepError::Refused(format!("release incomplete: {detail}")));
    }
    Ok(detail)
}

/// The recorded entries that are still in their ACLs exactly as created.
async fn still_present(
    clients: &Clients,
    entries: &[NaclEntry],
) -> Result<Vec<NaclEntry>, StepError> {
    let mut acl_ids: Vec<&str> = entries.iter().map(|e| e.acl_id.as_str()).collect();
    acl_ids.sort();
    acl_ids.dedup();
    if acl_ids.is_empty() {
        return Ok(Vec::new());
    }
    let output = clients
        .ec2
        .describe_network_acls()
        .set_network_acl_ids(Some(acl_ids.iter().map(|s| s.to_string()).collect()))
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkAcls"))?;
    Ok(entries
        .iter()
        .filter(|wanted| {
            output.network_acls().iter().any(|acl| {
                acl.network_acl_id() == Some(wanted.acl_id.as_str())
                    && acl.entries().iter().any(|e| {
                        e.rule_number() == Some(wanted.rule_number)
                            && e.egress() == Some(wanted.egress)
                            && e.cidr_block().or(e.ipv6_cidr_block()) == Some(wanted.cidr.as_str())
                    })
            })
        })
        .cloned()
        .collect())
}
