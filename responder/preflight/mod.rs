//! `responder preflight`: what containment would achieve in this account, before any finding.
//! Pure — from what [`inventory`](crate::actions::inventory) read and the playbooks in force,
//! using the same planner and network model the responder uses when it contains (there is no
//! second model): for each service, the rule a High Runtime finding on one of its tasks would
//! meet, the entries the quarantine would plan, and what would stay open; per VPC, the ACL
//! capacity; GuardDuty's coverage; what defeats containment, with the fix; the responder's own
//! resources. Rendered by [`render`].

pub mod render;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_json::json;

use crate::actions::inventory::{ClusterInfo, Inventory, ServiceInfo};
use crate::actions::isolate::{IsolateParams, IsolationRung};
use crate::actions::ActionSpec;
use crate::event::{parse_value, Inbound};
use crate::network::quarantine::{self, Limits};
use crate::network::reach::{open_classes, reachability, DestinationClass, Reachability};
use crate::network::{Destination, RouteTarget, Vpc, Workload, DEFAULT_RULE};
use crate::plan::{plan, Decision};
use crate::playbook::{Glob, PlaybookSet};

/// The whole assessment.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// One per service.
    pub services: Vec<ServiceVerdict>,
    /// One per VPC with services.
    pub vpcs: Vec<VpcCapacity>,
    /// GuardDuty Runtime Monitoring.
    pub guardduty: Coverage,
    /// What defeats containment, with the fix.
    pub defeaters: Vec<Defeater>,
    /// The responder's own resources and settings.
    pub responder: Vec<Check>,
}

impl Preflight {
    /// Every service whose rule contains would be contained.
    pub fn all_contained_as_intended(&self) -> bool {
        self.services.iter().all(|s| {
            !matches!(
                s.outcome,
                Outcome::NotContained { .. } | Outcome::Refused { .. }
            )
        })
    }
}

/// What would happen to a task of one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceVerdict {
    /// `cluster/service`.
    pub service: String,
    /// The VPC its tasks are in.
    pub vpc_id: Option<String>,
    /// The rule a High Runtime finding on one of its tasks would meet.
    pub rule: Option<String>,
    /// The steps it would take.
    pub steps: Vec<String>,
    /// The rung the quarantine would use.
    pub rung: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// Per destination class, after the planned quarantine (empty when nothing is planned).
    pub reachability: Vec<Reachability>,
    /// Its security groups are used by nothing but its tasks (the service lockdown's
    /// condition), and tagged for it.
    pub lockdown: Lockdown,
    /// What was assessed: a running task's address, or an address of the service's subnet.
    pub assessed: String,
}

/// The service lockdown's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lockdown {
    /// Exclusive and tagged: the rung would apply if listed.
    Available,
    /// Exclusive, not tagged `incident-responder:lockdown=allowed`.
    NotTagged,
    /// Other interfaces use the groups.
    Shared,
}

/// What containment would achieve.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Outcome {
    /// Every class cut but those the rule accepts.
    Contained {
        /// Quarantine entries it would create.
        entries: usize,
    },
    /// The quarantine would leave classes open that the rule does not accept.
    NotContained {
        /// The open classes, with reasons.
        open: Vec<String>,
    },
    /// The quarantine would be refused (owner rules, no room, quota).
    Refused {
        /// Why.
        why: String,
    },
    /// The rule does not contain (notify, evidence...): as intended.
    NotPlanned {
        /// Why.
        why: String,
    },
}

/// Capacity of a VPC's network ACLs.
#[derive(Debug, Clone, Serialize)]
pub struct VpcCapacity {
    /// The VPC.
    pub vpc_id: String,
    /// Per ACL: entries used and free per direction and family.
    pub acls: Vec<AclUse>,
    /// Tasks that could be held in quarantine at once (planning one after another).
    pub tasks_at_once: usize,
    /// The GuardDuty data-plane endpoint is in the VPC.
    pub guardduty_endpoint: bool,
    /// A quarantined task's agent could still reach it (an ACL guards only the endpoint).
    pub agent_path_kept: bool,
}

/// One ACL's use of its quota.
#[derive(Debug, Clone, Serialize)]
pub struct AclUse {
    /// The ACL.
    pub acl_id: String,
    /// Subnets it guards.
    pub subnets: usize,
    /// IPv4 entries in use (default rule included): inbound, outbound.
    pub ipv4_used: (usize, usize),
    /// IPv6 entries in use (default rule included): inbound, outbound.
    pub ipv6_used: (usize, usize),
    /// The quota per direction and family.
    pub quota: usize,
}

/// GuardDuty Runtime Monitoring coverage.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Checks, each passed or not.
    pub checks: Vec<Check>,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub what: String,
    /// Passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Something that defeats containment, and the fix.
#[derive(Debug, Clone, Serialize)]
pub struct Defeater {
    /// Where (a service, an ACL, a VPC, a cluster).
    pub subject: String,
    /// What.
    pub problem: String,
    /// What to change.
    pub fix: String,
}

/// A High Runtime finding on a task of the service, as the playbooks would see it.
fn synthetic_finding(
    cluster: &ClusterInfo,
    service: &ServiceInfo,
    task_arn: &str,
) -> Option<Inbound> {
    let mut parts = cluster.arn.split(':');
    let (region, account) = (parts.nth(3)?, parts.next()?);
    let finding = json!({
        "schemaVersion": "2.0",
        "id": "preflight",
        "type": "Execution:Runtime/ReverseShell",
        "severity": 8,
        "accountId": account,
        "region": region,
        "resource": {
            "resourceType": "ECSCluster",
            "ecsClusterDetails": {
                "name": cluster.name,
                "arn": cluster.arn,
                "tags": cluster.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                "taskDetails": {
                    "arn": task_arn,
                    "group": format!("service:{}", service.name),
                    "launchType": service.launch_type,
                    "tags": [],
                },
            },
        },
        "service": {"count": 1, "archived": false},
    });
    parse_value(finding).ok()
}

/// The address to assess: a running task's, or one inside the service's first subnet.
fn workload_of(service: &ServiceInfo, vpc: &Vpc) -> Option<(Workload, String)> {
    if let Some(task) = service.tasks.first() {
        return Some((
            Workload {
                ipv4: task.ipv4.parse().ok()?,
                ipv6: task
                    .ipv6
                    .as_deref()
                    .and_then(|v| v.parse::<Ipv6Addr>().ok()),
                subnet_id: task.subnet_id.clone(),
                public_ip: service.public_ip.then(|| "assigned".to_string()),
            },
            format!("running task {} ({})", task.task_arn, task.ipv4),
        ));
    }
    let subnet = service.subnets.iter().find_map(|s| vpc.subnet(s))?;
    let net = subnet.cidr?;
    let ipv4 = Ipv4Addr::from(u32::from(net.network()) + 10);
    Some((
        Workload {
            ipv4,
            ipv6: None,
            subnet_id: subnet.id.clone(),
            public_ip: service.public_ip.then(|| "assigned".to_string()),
        },
        format!("no running task: an address of {} ({ipv4})", subnet.id),
    ))
}

fn vpc_of<'a>(inventory: &'a Inventory, service: &ServiceInfo) -> Option<&'a Vpc> {
    inventory
        .vpcs
        .values()
        .find(|v| service.subnets.iter().any(|s| v.subnet(s).is_some()))
}

/// ACLs where the agent's ALLOW could go: every subnet they guard holds only the GuardDuty
/// endpoint's interfaces (the same rule the quarantine applies).
fn agent_acls(inventory: &Inventory, vpc: &Vpc, workload_subnet: &str) -> BTreeSet<String> {
    let Some(endpoint) = vpc.endpoints.iter().find(|e| e.is_guardduty_agent()) else {
        return BTreeSet::new();
    };
    vpc.acls
        .iter()
        .filter(|acl| {
            !acl.subnet_ids.is_empty()
                && acl.subnet_ids.iter().all(|s| {
                    s != workload_subnet
                        && endpoint.subnet_ids.contains(s)
                        && inventory.enis_by_subnet.get(s).is_none_or(|enis| {
                            enis.iter()
                                .all(|e| endpoint.network_interface_ids.contains(e))
                        })
                })
        })
        .map(|acl| acl.id.clone())
        .collect()
}

fn limits_of(params: &IsolateParams, agent_acls: BTreeSet<String>) -> Limits {
    Limits {
        first: i32::from(params.nacl_rule_range.first),
        last: i32::from(params.nacl_rule_range.last),
        quota: params.nacl_entry_quota,
        agent_acls,
    }
}

/// Assess everything read.
/// `contained_clusters` is the stack's `ContainedClusterNames` (the clusters where its policy
/// allows StopTask), when known.
pub fn assess(
    inventory: &Inventory,
    playbooks: &PlaybookSet,
    contained_clusters: Option<&Glob>,
) -> Preflight {
    let mut services = Vec::new();
    let mut defeaters = Vec::new();
    let default_params = IsolateParams::default();
    for cluster in &inventory.clusters {
        for service in &cluster.services {
            let verdict = assess_service(inventory, playbooks, cluster, service, &mut defeaters);
            let stops =
                verdict.steps.iter().any(|s| s == "stop") || stop_fallback(playbooks, &verdict);
            // The policy's resource is `arn:...:cluster/${ContainedClusterNames}`: the pattern
            // meets the cluster's name only, never the rest of its ARN.
            let allowed = contained_clusters.is_none_or(|g| g.is_match(&cluster.name));
            if stops && !allowed {
                defeaters.push(Defeater {
                    subject: format!("cluster {}", cluster.name),
                    problem: "the rule may stop tasks here, but the stack's ContainedClusterNames does not include this cluster: StopTask would be denied".to_string(),
                    fix: "add the cluster to ContainedClusterNames (or use a rule without stop for it)".to_string(),
                });
            }
            services.push(verdict);
        }
    }
    // Capacity as the rules that would quarantine in each VPC configure it (their quota and
    // reserved range), the tightest quota first.
    let vpcs = inventory
        .vpcs
        .values()
        .map(|vpc| {
            let params = services
                .iter()
                .filter(|s: &&ServiceVerdict| s.vpc_id.as_deref() == Some(vpc.vpc_id.as_str()))
                .filter_map(|s| {
                    s.rule
                        .as_deref()
                        .and_then(|r| isolate_params_of(playbooks, r))
                })
                .min_by_key(|p| p.nacl_entry_quota)
                .unwrap_or_else(|| default_params.clone());
            capacity(inventory, vpc, &params, &mut defeaters)
        })
        .collect();
    Preflight {
        services,
        vpcs,
        guardduty: coverage(inventory),
        defeaters,
        responder: responder_checks(inventory, playbooks, contained_clusters),
    }
}

fn isolate_params_of(playbooks: &PlaybookSet, rule: &str) -> Option<IsolateParams> {
    playbooks
        .rules
        .iter()
        .find(|r| r.rule.name == rule)
        .and_then(|r| {
            r.rule.actions.iter().find_map(|a| match a {
                ActionSpec::Isolate(p) => Some(p.clone()),
                _ => None,
            })
        })
}

fn stop_fallback(playbooks: &PlaybookSet, verdict: &ServiceVerdict) -> bool {
    playbooks
        .rules
        .iter()
        .filter(|r| Some(&r.rule.name) == verdict.rule.as_ref())
        .flat_map(|r| &r.rule.actions)
        .any(|a| matches!(a, ActionSpec::Isolate(p) if p.fallback == crate::actions::isolate::IsolateFallback::Stop))
}

fn assess_service(
    inventory: &Inventory,
    playbooks: &PlaybookSet,
    cluster: &ClusterInfo,
    service: &ServiceInfo,
    defeaters: &mut Vec<Defeater>,
) -> ServiceVerdict {
    let name = format!("{}/{}", cluster.name, service.name);
    let vpc = vpc_of(inventory, service);
    let lockdown = lockdown_of(inventory, service);
    let mut verdict = ServiceVerdict {
        service: name.clone(),
        vpc_id: vpc.map(|v| v.vpc_id.clone()),
        rule: None,
        steps: Vec::new(),
        rung: None,
        outcome: Outcome::NotPlanned {
            why: "no rule matched".to_string(),
        },
        reachability: Vec::new(),
        lockdown,
        assessed: String::new(),
    };
    let task_arn = service
        .tasks
        .first()
        .map(|t| t.task_arn.clone())
        .unwrap_or_else(|| format!("{}/preflight", cluster.arn.replace(":cluster/", ":task/")));
    let Some(Inbound::Finding { incident, .. }) = synthetic_finding(cluster, service, &task_arn)
    else {
        verdict.outcome = Outcome::NotPlanned {
            why: "the cluster ARN could not be read".to_string(),
        };
        return verdict;
    };
    let Decision::Act(planned) = plan(&incident, playbooks) else {
        return verdict;
    };
    verdict.rule = Some(planned.rule.clone());
    verdict.steps = planned
        .steps
        .iter()
        .map(|s| s.action.name().to_string())
        .collect();
    let watched = verdict
        .steps
        .iter()
        .any(|s| s == "hold-deployment" || s == "scale-service");
    if !service.target_groups.is_empty() && !watched {
        defeaters.push(Defeater {
            subject: format!("service {name}"),
            problem: "it sits behind a load balancer: once the quarantine cuts the load balancer's checks, ECS counts the task unhealthy, starts a replacement from the same task definition (the same image, possibly compromised the same way) and stops the quarantined task with its in-memory state; its rule neither watches for nor stops those replacements".to_string(),
            fix: "add `hold-deployment` to the rule to hear of every task running the image, or `scale-service` (after evidence) to stop replacements at the cost of the service; keep `evidence` before either".to_string(),
        });
    }
    let Some(params) = planned.steps.iter().find_map(|s| match &s.spec {
        ActionSpec::Isolate(p) => Some(p.clone()),
        _ => None,
    }) else {
        verdict.outcome = Outcome::NotPlanned {
            why: format!("rule {} does not isolate", planned.rule),
        };
        return verdict;
    };
    let Some(vpc) = vpc else {
        verdict.outcome = Outcome::Refused {
            why: "the service's subnets were not found (not awsvpc, or outside the VPCs looked at)"
                .to_string(),
        };
        return verdict;
    };
    let Some((workload, assessed)) = workload_of(service, vpc) else {
        verdict.outcome = Outcome::Refused {
            why: "no address could be assessed for the service".to_string(),
        };
        return verdict;
    };
    verdict.assessed = assessed;
    // A public IP or an IPv6 address matters only where the subnet's default route goes
    // straight to an internet gateway (or an egress-only one): then the traffic leaves from
    // the task's own subnet, and no ACL entry limited to the task can cut it.
    let default_route_to = |default: &str, gateway: fn(&RouteTarget) -> bool| {
        vpc.route_table_of(&workload.subnet_id).is_some_and(|t| {
            t.routes.iter().any(|r| {
                matches!(&r.destination, Destination::Cidr(n) if n.to_string() == default)
                    && gateway(&r.target)
            })
        })
    };
    if service.public_ip
        && default_route_to("0.0.0.0/0", |t| {
            matches!(t, RouteTarget::InternetGateway(_))
        })
    {
        defeaters.push(Defeater {
            subject: format!("service {name}"),
            problem: "its tasks get public IPs in subnets whose default route is an internet gateway: their internet traffic leaves from their own subnet, where no ACL entry limited to them can cut it".to_string(),
            fix: "run the tasks in private subnets behind a NAT gateway (assignPublicIp DISABLED)".to_string(),
        });
    }
    let internet_v6 = default_route_to("::/0", |t| {
        matches!(
            t,
            RouteTarget::InternetGateway(_) | RouteTarget::EgressOnlyInternetGateway(_)
        )
    });
    if workload.ipv6.is_some() && internet_v6 {
        defeaters.push(Defeater {
            subject: format!("service {name}"),
            problem: "its tasks are dual-stack and their subnets send ::/0 to an internet gateway: that traffic leaves from their own subnet, where no ACL entry limited to them can cut it".to_string(),
            fix: "route the tasks' subnets' ::/0 elsewhere (or remove it), or accept `internet-ipv6` knowingly".to_string(),
        });
    }
    if !params.rungs.contains(&IsolationRung::NaclQuarantine) {
        verdict.outcome = Outcome::Refused {
            why: "the rule's isolate has no nacl-quarantine rung, the only one a task's requester-managed interface allows".to_string(),
        };
        return verdict;
    }
    verdict.rung = Some(IsolationRung::NaclQuarantine.name().to_string());
    let agent = if params.keep_guardduty_agent {
        agent_acls(inventory, vpc, &workload.subnet_id)
    } else {
        BTreeSet::new()
    };
    let agent_subnets: BTreeSet<String> = vpc
        .acls
        .iter()
        .filter(|a| agent.contains(&a.id))
        .flat_map(|a| a.subnet_ids.iter().cloned())
        .collect();
    let mut accepted = params.accept_open.clone();
    if !agent_subnets.is_empty() {
        accepted.push(DestinationClass::GuarddutyAgent);
    }
    match quarantine::plan(vpc, &workload, &limits_of(&params, agent)) {
        Err(refusals) => {
            let why: Vec<String> = refusals
                .iter()
                .map(|r| format!("{}: {}", r.acl_id, r.why))
                .collect();
            verdict.outcome = Outcome::Refused {
                why: why.join("; "),
            };
        }
        Ok(entries) => {
            let after = quarantine::with_entries(vpc, &entries.entries);
            let table = reachability(&after, &workload, &agent_subnets);
            let open: Vec<String> = open_classes(&table, &accepted)
                .into_iter()
                .filter_map(|c| table.iter().find(|r| r.class == c))
                .map(|r| format!("{}: {}", r.class.name(), r.reason))
                .collect();
            verdict.outcome = if open.is_empty() {
                Outcome::Contained {
                    entries: entries.entries.len(),
                }
            } else {
                Outcome::NotContained { open }
            };
            verdict.reachability = table;
        }
    }
    verdict
}

fn lockdown_of(inventory: &Inventory, service: &ServiceInfo) -> Lockdown {
    let members: BTreeSet<&str> = service.tasks.iter().map(|t| t.eni_id.as_str()).collect();
    let exclusive = service.security_groups.iter().all(|g| {
        inventory
            .enis_by_group
            .get(g)
            .is_none_or(|enis| enis.iter().all(|e| members.contains(e.as_str())))
    });
    let tagged = service
        .security_groups
        .iter()
        .all(|g| inventory.lockdown_allowed.contains(g));
    match (exclusive, tagged) {
        (false, _) => Lockdown::Shared,
        (true, false) => Lockdown::NotTagged,
        (true, true) => Lockdown::Available,
    }
}

fn capacity(
    inventory: &Inventory,
    vpc: &Vpc,
    params: &IsolateParams,
    defeaters: &mut Vec<Defeater>,
) -> VpcCapacity {
    let quota = params.nacl_entry_quota;
    let mut acls = Vec::new();
    for acl in &vpc.acls {
        let used = |egress: bool, v6: bool| {
            acl.entries
                .iter()
                .filter(|e| e.egress == egress && matches!(e.cidr, ipnet::IpNet::V6(_)) == v6)
                .count()
        };
        // AWS always has the IPv4 default rule, listed or not.
        let with_default = |n: usize, egress: bool| {
            let listed = acl
                .entries
                .iter()
                .any(|e| e.egress == egress && e.rule_number == DEFAULT_RULE);
            n + usize::from(!listed)
        };
        let usage = AclUse {
            acl_id: acl.id.clone(),
            subnets: acl.subnet_ids.len(),
            ipv4_used: (
                with_default(used(false, false), false),
                with_default(used(true, false), true),
            ),
            ipv6_used: (used(false, true), used(true, true)),
            quota,
        };
        let free = quota.saturating_sub(usage.ipv4_used.0.max(usage.ipv4_used.1));
        if !acl.subnet_ids.is_empty() && free <= 2 {
            defeaters.push(Defeater {
                subject: format!("network ACL {}", acl.id),
                problem: format!("{free} IPv4 entries left per direction of a quota of {quota} (the rules' `nacl_entry_quota`): few tasks can be quarantined at once"),
                fix: "remove unused entries, or request a higher quota (Rules per network ACL, up to 40) and set `nacl_entry_quota` to it".to_string(),
            });
        }
        let range = params.nacl_rule_range;
        let owner_allows: Vec<i32> = acl
            .entries
            .iter()
            .filter(|e| e.allow && range.contains(e.rule_number))
            .map(|e| e.rule_number)
            .collect();
        if !owner_allows.is_empty() {
            defeaters.push(Defeater {
                subject: format!("network ACL {}", acl.id),
                problem: format!(
                    "ALLOW {} {owner_allows:?} inside the reserved range {}-{}: a quarantine entry must come before them and may find no free number",
                    if owner_allows.len() == 1 { "rule" } else { "rules" },
                    range.first, range.last
                ),
                fix: format!(
                    "re-create those rules above the reserved range ({} and up), keeping their order (a rule number cannot be changed in place), or set `nacl_rule_range` below them",
                    range.last + 1
                ),
            });
        }
        acls.push(usage);
    }
    // How many tasks at once: plan one after another in a subnet with tasks.
    let subnet = inventory
        .clusters
        .iter()
        .flat_map(|c| &c.services)
        .flat_map(|s| s.subnets.iter())
        .find_map(|s| vpc.subnet(s));
    let mut tasks_at_once = 0;
    if let Some(net) = subnet.and_then(|s| s.cidr.map(|c| (s.id.clone(), c))) {
        let limits = limits_of(params, BTreeSet::new());
        let mut state = vpc.clone();
        while tasks_at_once < 200 {
            let workload = Workload {
                ipv4: Ipv4Addr::from(u32::from(net.1.network()) + 4 + tasks_at_once as u32),
                ipv6: None,
                subnet_id: net.0.clone(),
                public_ip: None,
            };
            match quarantine::plan(&state, &workload, &limits) {
                Ok(plan) => state = quarantine::with_entries(&state, &plan.entries),
                Err(_) => break,
            }
            tasks_at_once += 1;
        }
    }
    let endpoint = vpc.endpoints.iter().find(|e| e.is_guardduty_agent());
    let agent_path_kept = subnet.is_some_and(|s| !agent_acls(inventory, vpc, &s.id).is_empty());
    if let Some(endpoint) = endpoint {
        let nat_subnets: BTreeSet<&str> = vpc
            .nat_gateways
            .iter()
            .map(|n| n.subnet_id.as_str())
            .collect();
        let shares = vpc.acls.iter().any(|acl| {
            acl.subnet_ids
                .iter()
                .any(|s| endpoint.subnet_ids.contains(s))
                && acl
                    .subnet_ids
                    .iter()
                    .any(|s| nat_subnets.contains(s.as_str()))
        });
        if shares {
            let fix = if endpoint.guardduty_managed {
                "GuardDuty created this endpoint and picks its subnets: create and manage the agent's endpoint yourself in subnets of its own with an ACL of its own, or accept that a quarantined task's agent stops reporting"
            } else {
                "put the GuardDuty endpoint in subnets of its own with an ACL of its own"
            };
            defeaters.push(Defeater {
                subject: format!("VPC {}", vpc.vpc_id),
                problem: "the GuardDuty endpoint's subnet shares a network ACL with a NAT gateway's: an ALLOW for the agent would open the internet on 443, so a quarantined task's agent is cut off".to_string(),
                fix: fix.to_string(),
            });
        }
    }
    VpcCapacity {
        vpc_id: vpc.vpc_id.clone(),
        acls,
        tasks_at_once,
        guardduty_endpoint: endpoint.is_some(),
        agent_path_kept,
    }
}

fn coverage(inventory: &Inventory) -> Coverage {
    let gd = &inventory.guardduty;
    let mut checks = vec![
        Check {
            what: "GuardDuty detector enabled".to_string(),
            ok: gd.enabled,
            detail: match (&gd.detector_id, &gd.error) {
                (_, Some(error)) => error.clone(),
                (Some(id), None) => id.clone(),
                (None, None) => "no detector in this region".to_string(),
            },
        },
        Check {
            what: "Runtime Monitoring enabled".to_string(),
            ok: gd.runtime_monitoring,
            detail: "feature RUNTIME_MONITORING".to_string(),
        },
        Check {
            what: "GuardDuty manages the ECS Fargate agent".to_string(),
            ok: gd.fargate_agent_management,
            detail: "additional configuration ECS_FARGATE_AGENT_MANAGEMENT".to_string(),
        },
    ];
    for cluster in &inventory.clusters {
        // GuardDuty compares the tag exactly (key and value are case-sensitive): `false`
        // excludes a cluster from automated agent management, `true` includes it when the
        // automation is off.
        let tag = cluster.tags.get("GuardDutyManaged").map(String::as_str);
        let fargate_services = cluster
            .services
            .iter()
            .any(|s| s.launch_type.as_deref() != Some("EC2"));
        if fargate_services {
            let (ok, why) = match (gd.fargate_agent_management, tag) {
                (_, Some("true")) => (true, "tagged GuardDutyManaged=true"),
                (true, Some("false")) => (false, "tagged GuardDutyManaged=false: excluded from automated agent management"),
                (true, _) => (true, "automated agent management is on and the cluster is not excluded"),
                (false, _) => (false, "automated agent management is off and the cluster is not tagged GuardDutyManaged=true"),
            };
            checks.push(Check {
                what: format!("GuardDuty agent set up for Fargate tasks of cluster {}", cluster.name),
                ok,
                detail: format!("{why}; coverage is per task: tasks started before the agent was set up are covered only once replaced (GuardDuty's coverage page lists each task)"),
            });
        }
        let ec2_services = cluster
            .services
            .iter()
            .any(|s| s.launch_type.as_deref() == Some("EC2"));
        if ec2_services {
            checks.push(Check {
                what: format!("GuardDuty agent on the container instances of cluster {}", cluster.name),
                ok: gd.ec2_agent_management,
                detail: if gd.ec2_agent_management {
                    "EC2_AGENT_MANAGEMENT is on".to_string()
                } else {
                    "EC2_AGENT_MANAGEMENT is off: install the agent on the container instances yourself, or turn it on".to_string()
                },
            });
        }
    }
    for vpc in inventory.vpcs.values() {
        let present = vpc.endpoints.iter().any(|e| e.is_guardduty_agent());
        checks.push(Check {
            what: format!("GuardDuty endpoint in {}", vpc.vpc_id),
            ok: present,
            detail: if present {
                "com.amazonaws.REGION.guardduty-data (or -fips)".to_string()
            } else {
                "none: the agent cannot report from this VPC (unless an endpoint is shared into it)"
                    .to_string()
            },
        });
    }
    Coverage { checks }
}

fn responder_checks(
    inventory: &Inventory,
    playbooks: &PlaybookSet,
    contained_clusters: Option<&Glob>,
) -> Vec<Check> {
    let r = &inventory.responder;
    let mut checks = vec![
        Check {
            what: "clusters where the stack may stop tasks".to_string(),
            ok: contained_clusters.is_some(),
            detail: match contained_clusters {
                Some(glob) => format!("ContainedClusterNames {}", glob.pattern()),
                None => "unknown (set RESPONDER_CONTAINED_CLUSTERS to the stack's ContainedClusterNames): every cluster assumed, so a stop the stack's policy would deny is not reported".to_string(),
            },
        },
        Check {
            what: "mode".to_string(),
            ok: r.mode.as_deref().is_none_or(|m| m == "enforce"),
            detail: match r.mode.as_deref() {
                None | Some("enforce") => "enforce: rules contain as they say".to_string(),
                Some(mode) => {
                    format!("{mode}: nothing is contained until the stack's Mode is enforce")
                }
            },
        },
        Check {
            what: "playbooks valid".to_string(),
            ok: true,
            detail: format!(
                "{} in {}",
                crate::report::count(playbooks.rules.len(), "rule", "rules"),
                playbooks.sources.join(", ")
            ),
        },
    ];
    let known = |value: Option<bool>, yes: &str, no: &str, unset: &str| match value {
        Some(true) => (true, yes.to_string()),
        Some(false) => (false, no.to_string()),
        None => (false, unset.to_string()),
    };
    let (ok, detail) = known(
        r.bucket_object_lock,
        "Object Lock enabled",
        "no Object Lock: evidence can be deleted",
        "not configured (RESPONDER_EVIDENCE_BUCKET)",
    );
    checks.push(Check {
        what: "evidence bucket".to_string(),
        ok,
        detail,
    });
    let (ok, detail) = known(
        r.ledger_table,
        "exists",
        "missing",
        "not configured (RESPONDER_LEDGER_TABLE)",
    );
    checks.push(Check {
        what: "ledger table".to_string(),
        ok,
        detail,
    });
    checks.push(Check {
        what: "notification topic subscribed to".to_string(),
        ok: r.topic_subscriptions.is_some_and(|n| n > 0),
        detail: match r.topic_subscriptions {
            Some(n) => crate::report::count(n, "subscription", "subscriptions"),
            None => "not configured (RESPONDER_TOPIC_ARN)".to_string(),
        },
    });
    for error in &r.errors {
        checks.push(Check {
            what: "read".to_string(),
            ok: false,
            detail: error.clone(),
        });
    }
    checks
}

#[cfg(test)]
mod tests;
