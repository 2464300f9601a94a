//! `isolate`: cut a workload off the network, reversibly, recording exactly what changed.
//!
//! An ordered ladder of rungs, each recorded:
//! - `sg-swap` — replace the ENI's security groups, first with an allow-all "untracking" group
//!   (so existing flows become untracked) and then with the quarantine group, which cuts them
//!   ([connection tracking](https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html)).
//!   EC2 refuses this on requester-managed ENIs, which every Fargate (and ECS `awsvpc`) task has.
//! - `nacl-quarantine` — DENY the task's /32 (and /128) in both directions in the network ACLs
//!   of the VPC's subnets, at free rule numbers in a reserved range before the ACL's own rules.
//!   ACLs are stateless, so established connections are cut too. An ACL only sees traffic that
//!   crosses a subnet boundary: traffic to hosts in the task's own subnet, and a public-IP
//!   task's direct internet traffic, are not cut — the outcome says so, and a task with a
//!   public IP counts as not isolated (so the rule's fallback runs).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, NetworkAcl, RuleAction, Tag as Ec2Tag};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::workload::describe_task;
use super::{aws, Clients, StepError};
use crate::incident::{Ec2InstanceTarget, EcsTaskTarget};
use crate::playbook::{IsolateParams, IsolationRung, RuleRange};

/// Tags that mark the groups this tool creates, so they are found again instead of duplicated.
pub const ROLE_TAG: &str = "incident-responder:role";
/// The ACL's catch-all rule; never ours, never counted.
const DEFAULT_RULE: i32 = 32767;

/// One network ACL entry this tool created (and must remove on release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaclEntry {
    pub acl_id: String,
    pub rule_number: i32,
    pub egress: bool,
    pub cidr: String,
    pub ipv6: bool,
    pub action: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<(i32, i32)>,
}

/// One ENI whose security groups were swapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgSwap {
    pub eni_id: String,
    pub original_groups: Vec<String>,
    pub quarantine_group: String,
    pub untracking_group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RungAttempt {
    pub rung: IsolationRung,
    /// `applied`, `not_applicable` or `failed`.
    pub result: String,
    pub detail: String,
}

/// What isolation did, stored in the ledger so `release` can undo exactly that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainmentRecord {
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rung: Option<IsolationRung>,
    pub attempts: Vec<RungAttempt>,
    #[serde(default)]
    pub sg_swaps: Vec<SgSwap>,
    #[serde(default)]
    pub nacl_entries: Vec<NaclEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub eni_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// What the network isolation does not cover, in words.
    #[serde(default)]
    pub gaps: Vec<String>,
    /// The ACLs as they were before, for evidence.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub acls_before: Value,
}

/// How isolation ended when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Isolated {
    Contained(Box<ContainmentRecord>),
    /// Changes were made (and are recorded, so `release` can undo them) but the workload is
    /// not fully cut off: the step counts as failed so the rule's fallback runs.
    Incomplete {
        record: Box<ContainmentRecord>,
        why: String,
    },
    /// The workload is already stopped or gone: nothing to isolate (not an error).
    Gone(String),
}

struct EniFacts {
    vpc_id: Option<String>,
    groups: Vec<String>,
    requester_managed: bool,
    public_ip: Option<String>,
}

async fn describe_eni(clients: &Clients, eni_id: &str) -> Result<EniFacts, StepError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(eni_id)
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
    let eni = output.network_interfaces().first().ok_or_else(|| {
        StepError::Refused(format!("EC2 does not know network interface {eni_id}"))
    })?;
    Ok(EniFacts {
        vpc_id: eni.vpc_id().map(str::to_string),
        groups: eni
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        requester_managed: eni.requester_managed().unwrap_or(false),
        public_ip: eni
            .association()
            .and_then(|a| a.public_ip())
            .map(str::to_string),
    })
}

pub fn eni_json(eni: &aws_sdk_ec2::types::NetworkInterface) -> Value {
    json!({
        "networkInterfaceId": eni.network_interface_id(),
        "description": eni.description(),
        "interfaceType": eni.interface_type().map(|t| t.as_str()),
        "requesterManaged": eni.requester_managed(),
        "requesterId": eni.requester_id(),
        "status": eni.status().map(|s| s.as_str()),
        "vpcId": eni.vpc_id(),
        "subnetId": eni.subnet_id(),
        "privateIpAddress": eni.private_ip_address(),
        "publicIp": eni.association().and_then(|a| a.public_ip()),
        "groups": eni.groups().iter().map(|g| json!({"groupId": g.group_id(), "groupName": g.group_name()})).collect::<Vec<_>>(),
        "macAddress": eni.mac_address(),
    })
}

/// Isolate an ECS task.
pub async fn isolate_task(
    clients: &Clients,
    task: &EcsTaskTarget,
    params: &IsolateParams,
    region: &str,
) -> Result<Isolated, StepError> {
    let Some(facts) = describe_task(clients, task).await? else {
        return Ok(Isolated::Gone(
            "ECS no longer knows the task (MISSING): it stopped over an hour ago".to_string(),
        ));
    };
    if facts.last_status.as_deref() == Some("STOPPED") {
        return Ok(Isolated::Gone("the task is already STOPPED".to_string()));
    }
    let (Some(eni_id), Some(ip)) = (facts.eni_id.clone(), facts.ipv4.clone()) else {
        return Err(StepError::Refused(
            "the task has no network interface of its own (bridge or host network mode): \
             isolating its container instance would cut every task on it"
                .to_string(),
        ));
    };
    let eni = describe_eni(clients, &eni_id).await?;
    let vpc_id = eni
        .vpc_id
        .clone()
        .ok_or_else(|| StepError::Refused(format!("network interface {eni_id} reports no VPC")))?;
    let mut record = ContainmentRecord {
        target: task.task_arn.clone(),
        ip: Some(ip.clone()),
        ipv6: facts.ipv6.clone(),
        eni_ids: vec![eni_id.clone()],
        vpc_id: Some(vpc_id.clone()),
        subnet_id: facts.subnet_id.clone(),
        ..ContainmentRecord::default()
    };
    let endpoints = if params.keep_guardduty_agent {
        guardduty_endpoints(clients, &vpc_id, region).await?
    } else {
        Vec::new()
    };

    let mut failures = Vec::new();
    for rung in &params.rungs {
        let attempt = match rung {
            IsolationRung::SgSwap if eni.requester_managed => Err(RungError::NotApplicable(
                "the ENI is requester-managed (every Fargate and awsvpc task ENI): EC2 refuses security-group changes on it".to_string(),
            )),
            IsolationRung::SgSwap => {
                sg_swap(clients, &vpc_id, &[(eni_id.clone(), eni.groups.clone())], params, &endpoints)
                    .await
                    .map(|swaps| {
                        record.sg_swaps = swaps;
                        "security groups swapped: untracking group, then quarantine group".to_string()
                    })
            }
            IsolationRung::NaclQuarantine => {
                let cidrs = TaskCidrs {
                    ipv4: format!("{ip}/32"),
                    ipv6: facts.ipv6.as_ref().map(|v6| format!("{v6}/128")),
                };
                nacl_quarantine(clients, &vpc_id, facts.subnet_id.as_deref(), &cidrs, params.nacl_rule_range, &endpoints)
                    .await
                    .map(|(entries, before)| {
                        let acls: BTreeSet<&str> = entries.iter().map(|e| e.acl_id.as_str()).collect();
                        let detail = format!(
                            "{} DENY/ALLOW entries for {ip} in network ACL(s) {}",
                            entries.len(),
                            acls.into_iter().collect::<Vec<_>>().join(", ")
                        );
                        record.nacl_entries = entries;
                        record.acls_before = before;
                        detail
                    })
            }
        };
        match attempt {
            Ok(detail) => {
                record.attempts.push(RungAttempt {
                    rung: *rung,
                    result: "applied".to_string(),
                    detail,
                });
                record.rung = Some(*rung);
                break;
            }
            Err(error) => {
                let (result, detail, fatal) = match error {
                    RungError::NotApplicable(d) => ("not_applicable", d, None),
                    RungError::Failed(e) => ("failed", e.to_string(), Some(e)),
                };
                failures.push(format!("{}: {detail}", rung_name(*rung)));
                record.attempts.push(RungAttempt {
                    rung: *rung,
                    result: result.to_string(),
                    detail,
                });
                if let Some(error) = fatal.filter(StepError::is_retryable) {
                    // Throttled or AWS-side failure: stop climbing, let the retry redo it.
                    return Err(error);
                }
            }
        }
    }
    match record.rung {
        Some(IsolationRung::NaclQuarantine) => {
            record.gaps.push(format!(
                "network ACLs only see traffic that crosses a subnet boundary: traffic between {ip} and hosts in its own subnet ({}) is not cut",
                facts.subnet_id.as_deref().unwrap_or("unknown")
            ));
            if let Some(public_ip) = &eni.public_ip {
                let why = format!(
                    "the task has public IP {public_ip}: its direct internet traffic does not cross another subnet, so the network ACL quarantine cannot cut it"
                );
                record.gaps.push(why.clone());
                return Ok(Isolated::Incomplete {
                    record: Box::new(record),
                    why,
                });
            }
            Ok(Isolated::Contained(Box::new(record)))
        }
        Some(IsolationRung::SgSwap) => Ok(Isolated::Contained(Box::new(record))),
        None => Err(StepError::Refused(format!(
            "no isolation rung succeeded ({})",
            failures.join("; ")
        ))),
    }
}

/// Isolate an EC2 instance: the SG swap on each of its ENIs.
pub async fn isolate_instance(
    clients: &Clients,
    instance: &Ec2InstanceTarget,
    params: &IsolateParams,
    region: &str,
) -> Result<Isolated, StepError> {
    let output = clients
        .ec2
        .describe_instances()
        .instance_ids(&instance.instance_id)
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) if error.code() == Some("InvalidInstanceID.NotFound") => {
            return Ok(Isolated::Gone(
                "EC2 no longer knows the instance".to_string(),
            ))
        }
        Err(error) => return Err(aws("EC2 DescribeInstances")(error)),
    };
    let Some(found) = output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
    else {
        return Ok(Isolated::Gone(
            "EC2 no longer knows the instance".to_string(),
        ));
    };
    let state = found
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    if matches!(state.as_deref(), Some("terminated" | "shutting-down")) {
        return Ok(Isolated::Gone(format!(
            "the instance is {}",
            state.unwrap_or_default()
        )));
    }
    let vpc_id = found
        .vpc_id()
        .ok_or_else(|| StepError::Refused("the instance reports no VPC".to_string()))?
        .to_string();
    let enis: Vec<(String, Vec<String>)> = found
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            Some((
                eni.network_interface_id()?.to_string(),
                eni.groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
            ))
        })
        .collect();
    if enis.is_empty() {
        return Err(StepError::Refused(
            "the instance has no network interface".to_string(),
        ));
    }
    if !params.rungs.contains(&IsolationRung::SgSwap) {
        return Err(StepError::Refused(
            "this rule's isolate rungs do not include sg-swap, the only rung for an EC2 instance"
                .to_string(),
        ));
    }
    let endpoints = if params.keep_guardduty_agent {
        guardduty_endpoints(clients, &vpc_id, region).await?
    } else {
        Vec::new()
    };
    let swaps = sg_swap(clients, &vpc_id, &enis, params, &endpoints)
        .await
        .map_err(|e| match e {
            RungError::NotApplicable(d) => StepError::Refused(d),
            RungError::Failed(e) => e,
        })?;
    Ok(Isolated::Contained(Box::new(ContainmentRecord {
        target: instance.instance_id.clone(),
        rung: Some(IsolationRung::SgSwap),
        attempts: vec![RungAttempt {
            rung: IsolationRung::SgSwap,
            result: "applied".to_string(),
            detail: format!("security groups swapped on {} ENI(s)", swaps.len()),
        }],
        eni_ids: enis.iter().map(|(id, _)| id.clone()).collect(),
        sg_swaps: swaps,
        ip: found.private_ip_address().map(str::to_string),
        vpc_id: Some(vpc_id),
        subnet_id: found.subnet_id().map(str::to_string),
        ..ContainmentRecord::default()
    })))
}

enum RungError {
    NotApplicable(String),
    Failed(StepError),
}

impl From<StepError> for RungError {
    fn from(error: StepError) -> Self {
        RungError::Failed(error)
    }
}

fn rung_name(rung: IsolationRung) -> &'static str {
    match rung {
        IsolationRung::SgSwap => "sg-swap",
        IsolationRung::NaclQuarantine => "nacl-quarantine",
    }
}

/// An address of a GuardDuty VPC endpoint interface.
#[derive(Debug, Clone)]
struct Endpoint {
    ip: String,
    subnet_id: Option<String>,
}

/// The GuardDuty data-plane VPC endpoint's interfaces, so the agent can keep reporting.
async fn guardduty_endpoints(
    clients: &Clients,
    vpc_id: &str,
    region: &str,
) -> Result<Vec<Endpoint>, StepError> {
    let output = clients
        .ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(
            Filter::builder()
                .name("service-name")
                .values(format!("com.amazonaws.{region}.guardduty-data"))
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 DescribeVpcEndpoints"))?;
    let eni_ids: Vec<String> = output
        .vpc_endpoints()
        .iter()
        .flat_map(|e| e.network_interface_ids().iter().cloned())
        .collect();
    if eni_ids.is_empty() {
        return Ok(Vec::new());
    }
    let enis = clients
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(eni_ids))
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces (GuardDuty endpoint)"))?;
    Ok(enis
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            Some(Endpoint {
                ip: eni.private_ip_address()?.to_string(),
                subnet_id: eni.subnet_id().map(str::to_string),
            })
        })
        .collect())
}

/// Find a group this tool made in the VPC (by role tag), or make it once.
async fn ensure_group(
    clients: &Clients,
    vpc_id: &str,
    role: &str,
    name: &str,
    description: &str,
    configure: impl AsyncFnOnce(&str) -> Result<(), StepError>,
) -> Result<String, StepError> {
    let find = || async {
        let output = clients
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .filters(
                Filter::builder()
                    .name(format!("tag:{ROLE_TAG}"))
                    .values(role)
                    .build(),
            )
            .send()
            .await
            .map_err(aws("EC2 DescribeSecurityGroups"))?;
        Ok::<_, StepError>(
            output
                .security_groups()
                .first()
                .and_then(|g| g.group_id())
                .map(str::to_string),
        )
    };
    if let Some(id) = find().await? {
        return Ok(id);
    }
    let created = clients
        .ec2
        .create_security_group()
        .vpc_id(vpc_id)
        .group_name(name)
        .description(description)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .tags(Ec2Tag::builder().key(ROLE_TAG).value(role).build())
                .tags(Ec2Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await;
    match created {
        Ok(output) => {
            let id = output
                .group_id()
                .ok_or_else(|| {
                    StepError::Refused("CreateSecurityGroup returned no id".to_string())
                })?
                .to_string();
            configure(&id).await?;
            Ok(id)
        }
        // Another invocation created it first: use theirs.
        Err(error) if error.code() == Some("InvalidGroup.Duplicate") => {
            find().await?.ok_or_else(|| {
                StepError::Refused(format!(
                    "security group {name} exists but has no {ROLE_TAG} tag"
                ))
            })
        }
        Err(error) => Err(aws("EC2 CreateSecurityGroup")(error)),
    }
}

async fn sg_swap(
    clients: &Clients,
    vpc_id: &str,
    enis: &[(String, Vec<String>)],
    params: &IsolateParams,
    endpoints: &[Endpoint],
) -> Result<Vec<SgSwap>, RungError> {
    let quarantine = ensure_group(
        clients,
        vpc_id,
        "quarantine",
        &params.quarantine_group_name,
        "incident-responder quarantine: no ingress; egress only to the GuardDuty endpoint",
        async |id: &str| {
            // A new group allows all egress; take that away, then allow only the agent's path.
            let ec2 = &clients.ec2;
            ec2.revoke_security_group_egress()
                .group_id(id)
                .ip_permissions(all_traffic("0.0.0.0/0"))
                .send()
                .await
                .map_err(aws("EC2 RevokeSecurityGroupEgress"))?;
            for endpoint in endpoints {
                ec2.authorize_security_group_egress()
                    .group_id(id)
                    .ip_permissions(
                        aws_sdk_ec2::types::IpPermission::builder()
                            .ip_protocol("tcp")
                            .from_port(443)
                            .to_port(443)
                            .ip_ranges(
                                aws_sdk_ec2::types::IpRange::builder()
                                    .cidr_ip(format!("{}/32", endpoint.ip))
                                    .description("GuardDuty agent")
                                    .build(),
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(aws("EC2 AuthorizeSecurityGroupEgress"))?;
            }
            Ok(())
        },
    )
    .await?;
    let untracking_name = format!("{}-untracking", params.quarantine_group_name);
    let untracking = ensure_group(
        clients,
        vpc_id,
        "untracking",
        &untracking_name,
        "incident-responder step 1 of 2: allow-all so existing flows become untracked",
        async |id: &str| {
            clients
                .ec2
                .authorize_security_group_ingress()
                .group_id(id)
                .ip_permissions(all_traffic("0.0.0.0/0"))
                .send()
                .await
                .map_err(aws("EC2 AuthorizeSecurityGroupIngress"))?;
            Ok(())
        },
    )
    .await?;

    let mut swaps = Vec::new();
    for (eni_id, original) in enis {
        for (step, group) in [("untracking", &untracking), ("quarantine", &quarantine)] {
            let result = clients
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(eni_id)
                .groups(group)
                .send()
                .await;
            if let Err(error) = result {
                let error = aws("EC2 ModifyNetworkInterfaceAttribute")(error);
                // Put back what was already changed so nothing is left half-applied.
                for (done_eni, groups) in enis
                    .iter()
                    .take(swaps.len() + usize::from(step == "quarantine"))
                {
                    let _ = clients
                        .ec2
                        .modify_network_interface_attribute()
                        .network_interface_id(done_eni)
                        .set_groups(Some(groups.clone()))
                        .send()
                        .await;
                }
                return Err(RungError::Failed(error));
            }
        }
        swaps.push(SgSwap {
            eni_id: eni_id.clone(),
            original_groups: original.clone(),
            quarantine_group: quarantine.clone(),
            untracking_group: untracking.clone(),
        });
    }
    Ok(swaps)
}

fn all_traffic(cidr: &str) -> aws_sdk_ec2::types::IpPermission {
    aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("-1")
        .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip(cidr).build())
        .build()
}

struct TaskCidrs {
    ipv4: String,
    ipv6: Option<String>,
}

/// The entries one ACL needs for one task, before rule numbers are chosen.
#[derive(Debug, Clone, PartialEq)]
struct WantedEntry {
    egress: bool,
    cidr: String,
    ipv6: bool,
    allow: bool,
    ports: Option<(i32, i32)>,
}

/// Pure: choose rule numbers for the wanted entries in one direction of one ACL.
/// Numbers come from the reserved range, below the first rule that is not ours, and the
/// ALLOW entries get the lower numbers so they are evaluated before the DENY.
fn choose_numbers(
    used: &BTreeSet<i32>,
    first_foreign: i32,
    range: RuleRange,
    count: usize,
) -> Result<Vec<i32>, String> {
    let last = i32::from(range.last).min(first_foreign - 1);
    let free: Vec<i32> = (i32::from(range.first)..=last)
        .filter(|n| !used.contains(n))
        .take(count)
        .collect();
    if free.len() < count {
        let why = if first_foreign <= i32::from(range.last) {
            format!(" before the ACL's first own rule {first_foreign}")
        } else {
            String::new()
        };
        return Err(format!(
            "no room: {count} rule number(s) needed in the reserved range {}-{}{why}, {} free",
            range.first,
            range.last,
            free.len()
        ));
    }
    Ok(free)
}

fn wanted_entries(cidrs: &TaskCidrs, allow_agent: bool) -> Vec<WantedEntry> {
    let mut wanted = Vec::new();
    for egress in [false, true] {
        if allow_agent {
            // Ingress: task → endpoint:443. Egress: endpoint → task on ephemeral ports.
            wanted.push(WantedEntry {
                egress,
                cidr: cidrs.ipv4.clone(),
                ipv6: false,
                allow: true,
                ports: Some(if egress { (1024, 65535) } else { (443, 443) }),
            });
        }
        wanted.push(WantedEntry {
            egress,
            cidr: cidrs.ipv4.clone(),
            ipv6: false,
            allow: false,
            ports: None,
        });
        if let Some(v6) = &cidrs.ipv6 {
            wanted.push(WantedEntry {
                egress,
                cidr: v6.clone(),
                ipv6: true,
                allow: false,
                ports: None,
            });
        }
    }
    wanted
}

fn entry_cidr(entry: &aws_sdk_ec2::types::NetworkAclEntry) -> Option<&str> {
    entry.cidr_block().or(entry.ipv6_cidr_block())
}

pub fn acl_json(acl: &NetworkAcl) -> Value {
    json!({
        "networkAclId": acl.network_acl_id(),
        "isDefault": acl.is_default(),
        "vpcId": acl.vpc_id(),
        "associations": acl.associations().iter().map(|a| a.subnet_id()).collect::<Vec<_>>(),
        "entries": acl.entries().iter().map(|e| json!({
            "ruleNumber": e.rule_number(), "egress": e.egress(), "ruleAction": e.rule_action().map(|r| r.as_str()),
            "protocol": e.protocol(), "cidrBlock": e.cidr_block(), "ipv6CidrBlock": e.ipv6_cidr_block(),
            "portRange": e.port_range().map(|p| json!({"from": p.from(), "to": p.to()})),
        })).collect::<Vec<_>>(),
    })
}

pub async fn describe_acls(clients: &Clients, vpc_id: &str) -> Result<Vec<NetworkAcl>, StepError> {
    let output = clients
        .ec2
        .describe_network_acls()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkAcls"))?;
    Ok(output.network_acls().to_vec())
}

async fn nacl_quarantine(
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
                            && in_range(e.rule_number().unwrap_or(0), range)
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
                .filter(|n| !in_range(*n, range))
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

fn in_range(number: i32, range: RuleRange) -> bool {
    (i32::from(range.first)..=i32::from(range.last)).contains(&number)
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
            if in_range(number, range) && ours.contains(cidr) {
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
pub async fn remove_entries(
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

/// Summary of a record for reports.
pub fn summary(record: &ContainmentRecord) -> Value {
    let mut by_acl: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in &record.nacl_entries {
        by_acl.entry(&e.acl_id).or_default().push(format!(
            "#{} {} {} {}{}",
            e.rule_number,
            if e.egress { "egress" } else { "ingress" },
            e.action.to_uppercase(),
            e.cidr,
            e.ports
                .map(|(f, t)| format!(" tcp {f}-{t}"))
                .unwrap_or_default()
        ));
    }
    json!({
        "rung": record.rung,
        "ip": record.ip,
        "eni_ids": record.eni_ids,
        "nacl_entries": by_acl,
        "sg_swaps": record.sg_swaps,
        "attempts": record.attempts,
        "gaps": record.gaps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_from_the_range_below_foreign_rules() {
        let used: BTreeSet<i32> = [1, 2, 100].into_iter().collect();
        let range = RuleRange { first: 1, last: 99 };
        assert_eq!(choose_numbers(&used, 100, range, 2).unwrap(), vec![3, 4]);
        // A foreign rule at 4 leaves only 3 free before it.
        let err = choose_numbers(&used, 4, range, 2).unwrap_err();
        assert!(err.contains("before the ACL's first own rule 4"), "{err}");
        let full: BTreeSet<i32> = (1..=99).collect();
        assert!(choose_numbers(&full, 100, range, 1)
            .unwrap_err()
            .contains("0 free"));
    }

    #[test]
    fn allow_entries_for_the_agent_and_ipv6_denies() {
        let cidrs = TaskCidrs {
            ipv4: "10.0.1.5/32".to_string(),
            ipv6: Some("2600:1f18::5/128".to_string()),
        };
        let wanted = wanted_entries(&cidrs, true);
        assert_eq!(wanted.len(), 6);
        let ingress_allow = wanted.iter().find(|w| !w.egress && w.allow).unwrap();
        assert_eq!(ingress_allow.ports, Some((443, 443)));
        let egress_allow = wanted.iter().find(|w| w.egress && w.allow).unwrap();
        assert_eq!(egress_allow.ports, Some((1024, 65535)));
        assert_eq!(wanted.iter().filter(|w| w.ipv6 && !w.allow).count(), 2);
        assert_eq!(wanted_entries(&cidrs, false).len(), 4);
    }
}
