//! Planning a network ACL quarantine, before anything is created: which ACLs need entries
//! (only those guarding a subnet other than the workload's own, where entries can match), the
//! rule numbers (free, in the reserved range, ahead of any of the owner's rules that would let
//! the workload's address through), and the quota (per ACL, per direction, IPv4 and IPv6
//! counted apart, the default rule included). A layout it cannot cut is refused, not papered
//! over with entries that match nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Acl, AclEntry, Vpc, Workload};

/// How the quarantine may use an ACL.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The lowest rule number the responder may use.
    pub first: i32,
    /// The highest.
    pub last: i32,
    /// Entries per ACL, per direction and address family, default rules included (AWS's
    /// default quota is 20).
    pub quota: usize,
    /// ACLs where the GuardDuty agent's ALLOW pair may go: those whose subnets hold nothing but
    /// the GuardDuty endpoint's interfaces, so the ALLOW opens nothing else.
    pub agent_acls: BTreeSet<String>,
}

/// An entry to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEntry {
    /// The ACL.
    pub acl_id: String,
    /// The rule number.
    pub rule_number: i32,
    /// Outbound (true) or inbound.
    pub egress: bool,
    /// ALLOW (the GuardDuty agent's path) or DENY.
    pub allow: bool,
    /// The workload's address as a host CIDR.
    pub cidr: IpNet,
    /// IP protocol number, `-1` for all.
    pub protocol: i32,
    /// TCP port range.
    pub ports: Option<(u16, u16)>,
}

impl PlannedEntry {
    /// The entry as the model sees it.
    pub fn as_acl_entry(&self) -> AclEntry {
        AclEntry {
            rule_number: self.rule_number,
            egress: self.egress,
            allow: self.allow,
            protocol: self.protocol,
            cidr: self.cidr,
            ports: self.ports,
            icmp: None,
        }
    }
}

/// How many more workloads an ACL can hold in quarantine after this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headroom {
    /// The ACL.
    pub acl_id: String,
    /// Further workloads (IPv4-only, DENY entries only) it can take: the smaller of the free
    /// reserved numbers and the quota left, per direction.
    pub tasks: usize,
}

/// The plan: entries to create, ACLs left alone and why, and what room is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Entries to create, ALLOW before DENY within an ACL.
    pub entries: Vec<PlannedEntry>,
    /// ACLs that need no entry, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Room left per ACL that got entries.
    pub headroom: Vec<Headroom>,
}

impl Plan {
    /// The fewest further workloads any ACL of the plan can take.
    pub fn vpc_headroom(&self) -> Option<usize> {
        self.headroom.iter().map(|h| h.tasks).min()
    }
}

/// Why an ACL cannot take the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The ACL.
    pub acl_id: String,
    /// Why, in words.
    pub why: String,
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

fn host_address(cidr: &IpNet) -> IpAddr {
    cidr.addr()
}

/// Plan the quarantine of `workload`. Pure.
pub fn plan(vpc: &Vpc, workload: &Workload, limits: &Limits) -> Result<Plan, Vec<Refusal>> {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut headroom = Vec::new();
    let mut refusals = Vec::new();
    for acl in &vpc.acls {
        let remote: Vec<&String> = acl
            .subnet_ids
            .iter()
            .filter(|s| **s != workload.subnet_id)
            .collect();
        if remote.is_empty() {
            let why = if acl.subnet_ids.is_empty() {
                "guards no subnet"
            } else {
                "guards only the workload's own subnet, where no entry can match its traffic"
            };
            skipped.push((acl.id.clone(), why.to_string()));
            continue;
        }
        // IPv6 entries only where IPv6 traffic can arrive: a remote subnet with IPv6.
        let remote_v6 = remote
            .iter()
            .any(|s| vpc.subnet(s).is_some_and(|s| !s.ipv6_cidrs.is_empty()));
        let hosts: Vec<IpNet> = workload
            .host_cidrs()
            .into_iter()
            .filter(|c| matches!(c, IpNet::V4(_)) || remote_v6)
            .collect();
        let agent = limits.agent_acls.contains(&acl.id);
        match plan_acl(acl, &hosts, agent, limits) {
            Ok((mut planned, tasks)) => {
                entries.append(&mut planned);
                headroom.push(Headroom {
                    acl_id: acl.id.clone(),
                    tasks,
                });
            }
            Err(why) => refusals.push(Refusal {
                acl_id: acl.id.clone(),
                why,
            }),
        }
    }
    if refusals.is_empty() {
        Ok(Plan {
            entries,
            skipped,
            headroom,
        })
    } else {
        Err(refusals)
    }
}

/// The entries one ACL needs, and the workloads it can take after them.
fn plan_acl(
    acl: &Acl,
    hosts: &[IpNet],
    agent: bool,
    limits: &Limits,
) -> Result<(Vec<PlannedEntry>, usize), String> {
    let mut planned = Vec::new();
    let mut room_after = usize::MAX;
    for egress in [false, true] {
        let direction = if egress { "outbound" } else { "inbound" };
        let existing: Vec<&AclEntry> = acl.entries.iter().filter(|e| e.egress == egress).collect();
        let mut wanted: Vec<PlannedEntry> = Vec::new();
        for host in hosts {
            if agent && matches!(host, IpNet::V4(_)) {
                // Inbound: workload → endpoint:443. Outbound: endpoint → workload, ephemeral.
                wanted.push(PlannedEntry {
                    acl_id: acl.id.clone(),
                    rule_number: 0,
                    egress,
                    allow: true,
                    cidr: *host,
                    protocol: 6,
                    ports: Some(if egress { (1024, 65535) } else { (443, 443) }),
                });
            }
            wanted.push(PlannedEntry {
                acl_id: acl.id.clone(),
                rule_number: 0,
                egress,
                allow: false,
                cidr: *host,
                protocol: -1,
                ports: None,
            });
        }
        // The entries must come before any of the owner's rules that would match the
        // workload's address and let something through.
        let blocking_allow = existing
            .iter()
            .filter(|e| e.allow && hosts.iter().any(|h| e.cidr.contains(&host_address(h))))
            .map(|e| e.rule_number)
            .min();
        let limit = match blocking_allow {
            Some(owner) => limits.last.min(owner - 1),
            None => limits.last,
        };
        let taken: BTreeSet<i32> = existing.iter().map(|e| e.rule_number).collect();
        let free: Vec<i32> = (limits.first..=limit)
            .filter(|n| !taken.contains(n))
            .collect();
        if free.len() < wanted.len() {
            return Err(match blocking_allow {
                Some(owner) if owner <= limits.last => format!(
                    "{direction} rule {owner} lets the workload's address through and fewer than {} free rule numbers lie before it in the reserved range {}-{}",
                    wanted.len(),
                    limits.first,
                    limits.last
                ),
                _ => format!(
                    "{direction}: {} in the reserved range {}-{}, {} needed",
                    crate::report::count(free.len(), "free rule number", "free rule numbers"),
                    limits.first,
                    limits.last,
                    wanted.len()
                ),
            });
        }
        for family_probe in hosts {
            let used = existing
                .iter()
                .filter(|e| same_family(&e.cidr, family_probe))
                .count();
            let adding = wanted
                .iter()
                .filter(|w| same_family(&w.cidr, family_probe))
                .count();
            if used + adding > limits.quota {
                return Err(format!(
                    "{direction} {} entries: {used} in use (default rule included) + {adding} would exceed the quota of {}",
                    if matches!(family_probe, IpNet::V4(_)) { "IPv4" } else { "IPv6" },
                    limits.quota
                ));
            }
            if matches!(family_probe, IpNet::V4(_)) {
                let quota_left = limits.quota - used - adding;
                let numbers_left = free.len() - wanted.len();
                room_after = room_after.min(quota_left.min(numbers_left));
            }
        }
        // ALLOW entries first: they must be evaluated before the DENY.
        wanted.sort_by_key(|w| !w.allow);
        for (mut entry, number) in wanted.into_iter().zip(free) {
            entry.rule_number = number;
            planned.push(entry);
        }
    }
    Ok((
        planned,
        if room_after == usize::MAX {
            0
        } else {
            room_after
        },
    ))
}

/// The VPC with the planned entries added, as AWS would hold them once created.
pub fn with_entries(vpc: &Vpc, entries: &[PlannedEntry]) -> Vpc {
    let mut after = vpc.clone();
    for entry in entries {
        if let Some(acl) = after.acls.iter_mut().find(|a| a.id == entry.acl_id) {
            acl.entries.push(entry.as_acl_entry());
        }
    }
    after
}
