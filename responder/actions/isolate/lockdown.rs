//! The opt-in `service-sg-lockdown` rung, for what no network ACL can cut (the task's own
//! subnet, a public IP): when every network interface using the task's security groups belongs
//! to a task of the same ECS service — and each group is tagged
//! `incident-responder:lockdown=allowed` by its owner — the groups' rules are replaced: first
//! allow-all for 0.0.0.0/0 and ::/0 both ways (meant to make TCP and UDP flows untracked; an idle
//! one may stay tracked), then only
//! the GuardDuty agent's egress. Every task of the service is contained with it. The rules are
//! recorded exactly, written down in the ledger before the first change (so a retry after a
//! later rung failed, or after a death, restores what the group had, not the lockdown it
//! finds), and restored by `release`.
//!
//! What it cannot do is said, not hidden: ICMP and other protocols, and connections through NAT
//! gateways, load balancers or endpoints, stay tracked and outlive the change until idle.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Ipv6Range, PrefixListId, UserIdGroupPair};
use serde::{Deserialize, Serialize};

use super::endpoints::Endpoint;
use super::ladder::RungError;
use crate::actions::ledger::StepLog;
use crate::actions::{aws, Clients, StepError};
use crate::incident::EcsTaskTarget;

/// The tag a security group's owner sets to let the responder lock it down.
pub const LOCKDOWN_TAG: (&str, &str) = ("incident-responder:lockdown", "allowed");

/// One rule of a group, saved exactly (so it can be put back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRule {
    /// IP protocol (`-1`, `tcp`, `6`...).
    pub protocol: String,
    /// First port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i32>,
    /// Last port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i32>,
    /// IPv4 ranges with their descriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv4: Vec<(String, Option<String>)>,
    /// IPv6 ranges with their descriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<(String, Option<String>)>,
    /// Referenced groups (group id, owner account, description).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<(String, Option<String>, Option<String>)>,
    /// Prefix lists with their descriptions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_lists: Vec<(String, Option<String>)>,
}

impl SavedRule {
    fn of(p: &IpPermission) -> SavedRule {
        SavedRule {
            protocol: p.ip_protocol().unwrap_or("-1").to_string(),
            from: p.from_port(),
            to: p.to_port(),
            ipv4: p
                .ip_ranges()
                .iter()
                .filter_map(|r| {
                    Some((
                        r.cidr_ip()?.to_string(),
                        r.description().map(str::to_string),
                    ))
                })
                .collect(),
            ipv6: p
                .ipv6_ranges()
                .iter()
                .filter_map(|r| {
                    Some((
                        r.cidr_ipv6()?.to_string(),
                        r.description().map(str::to_string),
                    ))
                })
                .collect(),
            groups: p
                .user_id_group_pairs()
                .iter()
                .filter_map(|g| {
                    Some((
                        g.group_id()?.to_string(),
                        g.user_id().map(str::to_string),
                        g.description().map(str::to_string),
                    ))
                })
                .collect(),
            prefix_lists: p
                .prefix_list_ids()
                .iter()
                .filter_map(|l| {
                    Some((
                        l.prefix_list_id()?.to_string(),
                        l.description().map(str::to_string),
                    ))
                })
                .collect(),
        }
    }

    fn permission(&self) -> IpPermission {
        // Lists left out when empty: an empty list is not "no ranges" to every implementation.
        fn some<T>(items: Vec<T>) -> Option<Vec<T>> {
            (!items.is_empty()).then_some(items)
        }
        IpPermission::builder()
            .ip_protocol(&self.protocol)
            .set_from_port(self.from)
            .set_to_port(self.to)
            .set_ip_ranges(some(
                self.ipv4
                    .iter()
                    .map(|(cidr, d)| {
                        IpRange::builder()
                            .cidr_ip(cidr)
                            .set_description(d.clone())
                            .build()
                    })
                    .collect(),
            ))
            .set_ipv6_ranges(some(
                self.ipv6
                    .iter()
                    .map(|(cidr, d)| {
                        Ipv6Range::builder()
                            .cidr_ipv6(cidr)
                            .set_description(d.clone())
                            .build()
                    })
                    .collect(),
            ))
            .set_user_id_group_pairs(some(
                self.groups
                    .iter()
                    .map(|(id, user, d)| {
                        UserIdGroupPair::builder()
                            .group_id(id)
                            .set_user_id(user.clone())
                            .set_description(d.clone())
                            .build()
                    })
                    .collect(),
            ))
            .set_prefix_list_ids(some(
                self.prefix_lists
                    .iter()
                    .map(|(id, d)| {
                        PrefixListId::builder()
                            .prefix_list_id(id)
                            .set_description(d.clone())
                            .build()
                    })
                    .collect(),
            ))
            .build()
    }
}

/// A group locked down, with the rules it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLockdown {
    /// The security group.
    pub group_id: String,
    /// The service whose tasks are the only users of the group.
    pub service: String,
    /// Its inbound rules before.
    pub ingress: Vec<SavedRule>,
    /// Its outbound rules before.
    pub egress: Vec<SavedRule>,
}

fn all(cidr: &str) -> SavedRule {
    SavedRule {
        protocol: "-1".to_string(),
        from: None,
        to: None,
        ipv4: if cidr.contains(':') {
            Vec::new()
        } else {
            vec![(cidr.to_string(), None)]
        },
        ipv6: if cidr.contains(':') {
            vec![(cidr.to_string(), None)]
        } else {
            Vec::new()
        },
        groups: Vec::new(),
        prefix_lists: Vec::new(),
    }
}

/// Replace a group's rules with `ingress` and `egress`.
async fn set_rules(
    clients: &Clients,
    group_id: &str,
    (old_in, old_out): (&[SavedRule], &[SavedRule]),
    (new_in, new_out): (&[SavedRule], &[SavedRule]),
) -> Result<(), StepError> {
    let ec2 = &clients.ec2;
    let list = |rules: &[SavedRule]| rules.iter().map(SavedRule::permission).collect::<Vec<_>>();
    if !old_in.is_empty() {
        ec2.revoke_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(list(old_in)))
            .send()
            .await
            .map_err(aws("EC2 RevokeSecurityGroupIngress"))?;
    }
    if !old_out.is_empty() {
        ec2.revoke_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(list(old_out)))
            .send()
            .await
            .map_err(aws("EC2 RevokeSecurityGroupEgress"))?;
    }
    if !new_in.is_empty() {
        ec2.authorize_security_group_ingress()
            .group_id(group_id)
            .set_ip_permissions(Some(list(new_in)))
            .send()
            .await
            .map_err(aws("EC2 AuthorizeSecurityGroupIngress"))?;
    }
    if !new_out.is_empty() {
        ec2.authorize_security_group_egress()
            .group_id(group_id)
            .set_ip_permissions(Some(list(new_out)))
            .send()
            .await
            .map_err(aws("EC2 AuthorizeSecurityGroupEgress"))?;
    }
    Ok(())
}

/// The network interfaces of the service's running tasks.
async fn service_enis(
    clients: &Clients,
    task: &EcsTaskTarget,
    service: &str,
) -> Result<BTreeSet<String>, StepError> {
    let arns = clients
        .ecs
        .list_tasks()
        .cluster(&task.cluster_arn)
        .service_name(service)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws("ECS ListTasks"))?;
    let mut enis = BTreeSet::new();
    for chunk in arns.chunks(100) {
        let described = clients
            .ecs
            .describe_tasks()
            .cluster(&task.cluster_arn)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws("ECS DescribeTasks"))?;
        for t in described.tasks() {
            enis.extend(
                t.attachments()
                    .iter()
                    .flat_map(|a| a.details())
                    .filter(|d| d.name() == Some("networkInterfaceId"))
                    .filter_map(|d| d.value().map(str::to_string)),
            );
        }
    }
    Ok(enis)
}

/// Lock down the task's groups. Refused (not applicable) unless every group is tagged for it
/// and used by nothing but the service's tasks.
pub(super) async fn lock_down(
    clients: &Clients,
    log: StepLog<'_>,
    task: &EcsTaskTarget,
    groups: &[String],
    endpoints: &[Endpoint],
    ipv6: bool,
) -> Result<Vec<GroupLockdown>, RungError> {
    let Some(service) = task.service.as_deref() else {
        return Err(RungError::NotApplicable(
            "the task belongs to no ECS service".to_string(),
        ));
    };
    if groups.is_empty() {
        return Err(RungError::NotApplicable(
            "the task's interface has no security group".to_string(),
        ));
    }
    let described = clients
        .ec2
        .describe_security_groups()
        .set_group_ids(Some(groups.to_vec()))
        .send()
        .await
        .map_err(aws("EC2 DescribeSecurityGroups"))?;
    for group in described.security_groups() {
        let tagged = group
            .tags()
            .iter()
            .any(|t| t.key() == Some(LOCKDOWN_TAG.0) && t.value() == Some(LOCKDOWN_TAG.1));
        if !tagged {
            return Err(RungError::NotApplicable(format!(
                "security group {} is not tagged {}={}: its owner has not allowed a lockdown",
                group.group_id().unwrap_or("?"),
                LOCKDOWN_TAG.0,
                LOCKDOWN_TAG.1
            )));
        }
    }
    let members = service_enis(clients, task, service).await?;
    let users = clients
        .ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("group-id")
                .set_values(Some(groups.to_vec()))
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
    let outsiders: Vec<String> = users
        .network_interfaces()
        .iter()
        .filter_map(|e| e.network_interface_id())
        .filter(|id| !members.contains(*id))
        .map(str::to_string)
        .collect();
    if !outsiders.is_empty() {
        return Err(RungError::NotApplicable(format!(
            "the task's security groups are also used by {} outside service {service}: a lockdown would cut them too",
            outsiders.join(", ")
        )));
    }

    // IPv6 rules only where the task has IPv6 traffic to untrack.
    let mut untracking_in = vec![all("0.0.0.0/0")];
    if ipv6 {
        untracking_in.push(all("::/0"));
    }
    let untracking_out = untracking_in.clone();
    let quarantine_out: Vec<SavedRule> = endpoints
        .iter()
        .map(|e| SavedRule {
            protocol: "tcp".to_string(),
            from: Some(443),
            to: Some(443),
            ipv4: vec![(format!("{}/32", e.ip), Some("GuardDuty agent".to_string()))],
            ipv6: Vec::new(),
            groups: Vec::new(),
            prefix_lists: Vec::new(),
        })
        .collect();
    // What an earlier attempt of this step wrote down: the groups' rules before it changed
    // them (what a group holds now may be that attempt's lockdown).
    let written_down: Vec<GroupLockdown> = log
        .written_down
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    let mut done: Vec<GroupLockdown> = Vec::new();
    // Puts back every group changed so far (nothing half-applied) and takes back what is
    // written down for those put back; the step then fails with `error`, and with the groups
    // not put back on record.
    let put_back = async |done: &[GroupLockdown], error: StepError| {
        let mut restored = Vec::new();
        let mut standing = Vec::new();
        for saved in done {
            match restore(clients, saved).await {
                Ok(()) => restored.push(serde_json::to_value(saved).unwrap_or_default()),
                Err(_) => standing.push(saved.clone()),
            }
        }
        log.withdraw(&restored).await;
        if standing.is_empty() {
            RungError::Failed(error)
        } else {
            RungError::Locked {
                error,
                groups: standing,
            }
        }
    };
    let expected: BTreeSet<&str> = quarantine_out
        .iter()
        .flat_map(|r| r.ipv4.iter().map(|(c, _)| c.as_str()))
        .collect();
    // No inbound rule, and outbound only TCP 443 to the agent's addresses (EC2 may have merged
    // them into fewer rules): nothing to another group, a prefix list or IPv6.
    let holds_quarantine = |ingress: &[SavedRule], egress: &[SavedRule]| {
        let only_agent = egress.iter().all(|r| {
            r.protocol == "tcp"
                && r.from == Some(443)
                && r.to == Some(443)
                && r.ipv6.is_empty()
                && r.groups.is_empty()
                && r.prefix_lists.is_empty()
        });
        let cidrs: BTreeSet<&str> = egress
            .iter()
            .flat_map(|r| r.ipv4.iter().map(|(c, _)| c.as_str()))
            .collect();
        ingress.is_empty() && only_agent && cidrs == expected
    };
    for group in described.security_groups() {
        let Some(id) = group.group_id() else { continue };
        let now_in: Vec<SavedRule> = group.ip_permissions().iter().map(SavedRule::of).collect();
        let now_out: Vec<SavedRule> = group
            .ip_permissions_egress()
            .iter()
            .map(SavedRule::of)
            .collect();
        let earlier = written_down.iter().find(|w| w.group_id == id);
        let saved = match earlier {
            Some(earlier) => earlier.clone(),
            None => {
                let saved = GroupLockdown {
                    group_id: id.to_string(),
                    service: service.to_string(),
                    ingress: now_in.clone(),
                    egress: now_out.clone(),
                };
                let intent = serde_json::to_value(&saved).unwrap_or_default();
                if let Err(error) = log.intend(std::slice::from_ref(&intent)).await {
                    // Its answer may be lost after it was written: taken back (the group is
                    // not changed), so no release puts this snapshot over later rules.
                    log.withdraw(&[intent]).await;
                    return Err(put_back(&done, error).await);
                }
                saved
            }
        };
        // Locked down already by an earlier attempt of this step (its rules written down):
        // never the allow-all rules again on a group that holds the quarantine rules.
        if earlier.is_some() && holds_quarantine(&now_in, &now_out) {
            done.push(saved);
            continue;
        }
        let steps = async {
            set_rules(
                clients,
                id,
                (&now_in, &now_out),
                (&untracking_in, &untracking_out),
            )
            .await?;
            // Whatever the group holds now goes (EC2 may have merged the ranges into fewer rules).
            let (now_in, now_out) = current_rules(clients, id).await?;
            set_rules(clients, id, (&now_in, &now_out), (&[], &quarantine_out)).await?;
            let (after_in, after_out) = current_rules(clients, id).await?;
            if !holds_quarantine(&after_in, &after_out) {
                return Err(StepError::Refused(format!(
                    "security group {id} does not hold the quarantine rules after the change: someone else is changing it"
                )));
            }
            Ok(())
        };
        done.push(saved);
        if let Err(error) = steps.await {
            // Put every group back as it was; nothing half-applied.
            return Err(put_back(&done, error).await);
        }
    }
    Ok(done)
}

/// A group's rules as they are now: (ingress, egress).
async fn current_rules(
    clients: &Clients,
    group_id: &str,
) -> Result<(Vec<SavedRule>, Vec<SavedRule>), StepError> {
    let now = clients
        .ec2
        .describe_security_groups()
        .group_ids(group_id)
        .send()
        .await
        .map_err(aws("EC2 DescribeSecurityGroups"))?;
    let Some(group) = now.security_groups().first() else {
        return Err(StepError::Refused(format!(
            "security group {group_id} no longer exists"
        )));
    };
    Ok((
        group.ip_permissions().iter().map(SavedRule::of).collect(),
        group
            .ip_permissions_egress()
            .iter()
            .map(SavedRule::of)
            .collect(),
    ))
}

/// Put a locked-down group's rules back: whatever it has now goes, the saved rules return.
pub(crate) async fn restore(clients: &Clients, saved: &GroupLockdown) -> Result<(), StepError> {
    let (current_in, current_out) = current_rules(clients, &saved.group_id).await?;
    set_rules(
        clients,
        &saved.group_id,
        (&current_in, &current_out),
        (&saved.ingress, &saved.egress),
    )
    .await
}
