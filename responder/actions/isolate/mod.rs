//! `isolate`: cut a workload off the network, reversibly, recording exactly what changed.
//!
//! An ordered ladder of rungs ([`ladder`]), each attempt recorded:
//! - `sg-swap` ([`sg_swap`]) — replace the ENI's security groups, first with an allow-all
//!   "untracking" group (meant to make existing flows untracked; AWS documents no time for
//!   that, and an idle flow may stay tracked) and then with the quarantine group, which ends
//!   untracked flows
//!   ([connection tracking](https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html)).
//!   EC2 refuses this on requester-managed ENIs, which every Fargate (and ECS `awsvpc`) task has.
//! - `nacl-quarantine` ([`nacl`], numbers from [`allocator`]) — DENY the task's /32 (and /128)
//!   in both directions in the network ACLs of the VPC's subnets, at free rule numbers in a
//!   reserved range before the ACL's own rules. ACLs are stateless, so established connections
//!   are cut too. An ACL only sees traffic that crosses a subnet boundary: traffic to hosts in
//!   the task's own subnet, and a public-IP task's direct internet traffic, are not cut — the
//!   outcome says so, and a task with a public IP counts as not isolated (so the rule's fallback
//!   runs).
//!
//! The GuardDuty agent's path to its VPC endpoint ([`endpoints`]) is kept open when asked.

mod describe;
mod endpoints;
mod ladder;
pub mod lockdown;
pub(crate) mod nacl;
mod sg_swap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, Failure, Phase, StepContext, StepError};
use crate::actions::ledger::StepLog;
use crate::incident::{Target, TargetKind};
use crate::network::quarantine::Headroom;
use crate::network::reach::{DestinationClass, Reachability, Verdict};
use crate::network::Acl;

pub(crate) use describe::acl as model_acl;
pub use describe::describe_vpc;
pub use ladder::{prefetch, prefetch_instance, IntentsBeforeClaim, Prefetched};
pub use sg_swap::ROLE_TAG;

/// The isolate step's item in the ledger (`step#` and the action's name, as every step's).
pub const STEP_KEY: &str = "step#isolate";

/// The `isolate` action.
pub struct Isolate;

impl Action for Isolate {
    const NAME: &'static str = "isolate";
    const PHASE: Phase = Phase::Contain;
    const PURPOSE: &'static str = "cut the workload off the network, reversibly";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask, TargetKind::Ec2Instance];
    const PERMISSIONS: &'static [&'static str] = &[
        "ecs:DescribeTasks",
        // a task sharing its container instance's network
        "ecs:DescribeTaskDefinition",
        "ecs:DescribeContainerInstances",
        "ecs:DescribeServices",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeVpcEndpoints",
        // the network model
        "ec2:DescribeSubnets",
        "ec2:DescribeRouteTables",
        "ec2:DescribeNatGateways",
        "ec2:DescribeTransitGatewayVpcAttachments",
        // nacl-quarantine (DeleteNetworkAclEntry: rolling back a half-applied quarantine)
        "ec2:DescribeNetworkAcls",
        "ec2:CreateNetworkAclEntry",
        "ec2:DeleteNetworkAclEntry",
        // sg-swap
        "ec2:DescribeSecurityGroups",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupEgress",
        "ec2:ModifyNetworkInterfaceAttribute",
        // service-sg-lockdown
        "ecs:ListTasks",
    ];

    type Params = IsolateParams;
    type Output = IsolateOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &IsolateParams,
    ) -> Result<IsolateOutput, Failure<IsolateOutput>> {
        let incident = ctx.incident;
        let log = StepLog {
            ledger: ctx.ledger,
            finding_id: &incident.finding_id,
            step_key: STEP_KEY,
            written_down: ctx.written_down,
        };
        let output = match &incident.target {
            Target::EcsTask(task) => {
                // The indexes (how a STOPPED event and the sweep find this record) are written
                // alongside: read here, the task's reads come first and they are answered
                // before any change; read beforehand, they go out with the first changes, as
                // the changes' intents do (the same window, the same rule near the deadline).
                let own;
                let read = match ctx.prefetched {
                    Some(read) => read,
                    None => {
                        own = ladder::prefetch(
                            ctx.clients,
                            task,
                            params,
                            &incident.region,
                            ctx.bounds,
                        )
                        .await;
                        &own
                    }
                };
                let near_deadline = ctx
                    .ledger
                    .seconds_left()
                    .is_some_and(|left| left < nacl::INTENT_FIRST_WITHIN);
                let isolate =
                    ladder::isolate_task(ctx.clients, log, task, params, &incident.region, read);
                // Indexed by task too, so `responder release TASK_ARN` finds a shared
                // instance's isolation; the task's STOPPED event leaves that one be.
                let indexes = index(ctx.ledger, incident);
                let (indexes, isolated) = if near_deadline {
                    indexes.await?;
                    (Ok(()), isolate.await)
                } else {
                    tokio::join!(indexes, isolate)
                };
                let isolated = isolated?;
                if let Err(error) = indexes {
                    // What was changed is still recorded under the finding, for `release`.
                    return Err(Failure {
                        error,
                        partial: Some(isolated),
                    });
                }
                isolated
            }
            Target::Ec2Instance(instance) => {
                let own;
                let read = match ctx.prefetched {
                    Some(read) => read,
                    None => {
                        own = ladder::prefetch_instance(
                            ctx.clients,
                            instance,
                            params,
                            &incident.region,
                            None,
                        )
                        .await;
                        &own
                    }
                };
                let (sweep_index, isolated) = tokio::join!(
                    ctx.ledger.index_isolation(&incident.finding_id),
                    ladder::isolate_instance(
                        ctx.clients,
                        log,
                        instance,
                        params,
                        &incident.region,
                        read
                    )
                );
                let isolated = isolated?;
                if let Err(error) = sweep_index {
                    return Err(Failure {
                        error,
                        partial: Some(isolated),
                    });
                }
                isolated
            }
            other => {
                return Err(StepError::Refused(format!(
                    "isolate does not act on a {}: contain it with the platform's own controls",
                    other.kind().name()
                ))
                .into())
            }
        };
        match output {
            IsolateOutput::Incomplete { ref why, .. } => Err(Failure {
                error: StepError::Refused(format!("not fully isolated: {why}")),
                partial: Some(output),
            }),
            output => Ok(output),
        }
    }

    fn reason(params: &IsolateParams) -> String {
        match params.fallback {
            IsolateFallback::Stop => format!(
                "{}; if it cannot, stop the task once evidence is preserved (fallback: stop)",
                Self::PURPOSE
            ),
            IsolateFallback::None => Self::PURPOSE.to_string(),
        }
    }

    fn summary(output: &IsolateOutput) -> String {
        match output {
            IsolateOutput::Contained { record } => {
                let how = match record.rung {
                    Some(IsolationRung::NaclQuarantine) => format!(
                        "{} network ACL entries for {} (nacl-quarantine)",
                        record.nacl_entries.len(),
                        record.ip.as_deref().unwrap_or("?")
                    ),
                    Some(IsolationRung::SgSwap) => format!(
                        "security groups of {} swapped for the quarantine group (sg-swap)",
                        record.eni_ids.join(", ")
                    ),
                    Some(IsolationRung::ServiceSgLockdown) => format!(
                        "security groups {} of the service locked down (service-sg-lockdown)",
                        record
                            .group_lockdowns
                            .iter()
                            .map(|g| g.group_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => "not isolated".to_string(),
                };
                let open = record.open_classes();
                if open.is_empty() {
                    how
                } else {
                    format!(
                        "{how}; still open, as the rule accepts: {}",
                        open.join(", ")
                    )
                }
            }
            IsolateOutput::Incomplete { why, .. } => format!("not fully isolated: {why}"),
            IsolateOutput::Gone { why } => format!("nothing to isolate: {why}"),
        }
    }
}

/// Write the indexes through which a task's STOPPED event and the sweep find this finding's
/// isolation record.
pub async fn index(
    ledger: &crate::actions::ledger::Ledger,
    incident: &crate::incident::Incident,
) -> Result<(), StepError> {
    match &incident.target {
        Target::EcsTask(task) => {
            let (task_index, sweep_index) = tokio::join!(
                ledger.index_task(&task.task_arn, &incident.finding_id),
                ledger.index_isolation(&incident.finding_id)
            );
            task_index.and(sweep_index)
        }
        _ => ledger.index_isolation(&incident.finding_id).await,
    }
}

/// How isolation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum IsolateOutput {
    /// The workload is cut off as far as the rung can say.
    Contained {
        /// What changed.
        record: Box<ContainmentRecord>,
    },
    /// Changes were made (and are recorded, so `release` can undo them) but the workload is
    /// not fully cut off: the step counts as failed so the rule's fallback runs.
    Incomplete {
        /// What changed.
        record: Box<ContainmentRecord>,
        /// What stays open.
        why: String,
    },
    /// The workload is already stopped or gone: nothing to isolate (not an error).
    Gone {
        /// How we know.
        why: String,
    },
}

impl IsolateOutput {
    /// The changes made, if any.
    pub fn record(&self) -> Option<&ContainmentRecord> {
        match self {
            IsolateOutput::Contained { record } | IsolateOutput::Incomplete { record, .. } => {
                Some(record)
            }
            IsolateOutput::Gone { .. } => None,
        }
    }

    /// The record, when the workload is contained.
    pub fn contained(&self) -> Option<&ContainmentRecord> {
        match self {
            IsolateOutput::Contained { record } => Some(record),
            _ => None,
        }
    }
}

/// Isolation rungs, tried in order until one applies and succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationRung {
    /// Replace the ENI's security groups (first an allow-all group so tracked connections are
    /// re-evaluated, then the quarantine group). Refused by EC2 on requester-managed ENIs
    /// such as every Fargate task's.
    SgSwap,
    /// DENY the workload's /32 (and /128) in both directions in the network ACLs of the other
    /// subnets of its VPC, ahead of the owner's rules. Stateless, so it also cuts established
    /// connections; what it cuts is verified with the network model.
    NaclQuarantine,
    /// Opt-in, for what no ACL cuts (the own subnet, a public IP): replace the rules of the
    /// task's security groups — only when every interface using them belongs to the same ECS
    /// service and each group is tagged `incident-responder:lockdown=allowed`. Contains every
    /// task of the service; restored by `release`.
    ServiceSgLockdown,
}

impl IsolationRung {
    /// The rung's name in playbooks and messages.
    pub fn name(self) -> &'static str {
        match self {
            IsolationRung::SgSwap => "sg-swap",
            IsolationRung::NaclQuarantine => "nacl-quarantine",
            IsolationRung::ServiceSgLockdown => "service-sg-lockdown",
        }
    }
}

/// What to do when every isolation rung failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IsolateFallback {
    /// Report the failure and carry on with the other steps.
    #[default]
    None,
    /// Stop the task once evidence is preserved.
    Stop,
}

/// Parameters of `isolate`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolateParams {
    /// Rungs to try, in order.
    #[serde(default = "IsolateParams::default_rungs")]
    pub rungs: Vec<IsolationRung>,
    /// Network ACL rule numbers reserved for quarantine entries. They must sit before the
    /// ACL's existing rules to take effect.
    #[serde(default)]
    pub nacl_rule_range: RuleRange,
    /// Keep the GuardDuty agent reporting while quarantined: allow HTTPS between the workload
    /// and the GuardDuty VPC endpoint's addresses, ahead of the DENY entries.
    #[serde(default = "yes")]
    pub keep_guardduty_agent: bool,
    /// Name of the quarantine security group created (once per VPC) for the SG swap.
    #[serde(default = "IsolateParams::default_quarantine_group")]
    pub quarantine_group_name: String,
    /// Destination classes the rule accepts staying open. No network ACL can cut traffic
    /// inside the workload's own subnet, DNS to the Route 53 Resolver, or the link-local
    /// services (instance and task metadata, Time Sync), so the default accepts those three;
    /// `[]` demands everything cut. Classes: internet-via-nat, internet-via-igw,
    /// internet-ipv6, other-subnets, peered-transit-on-premises, gateway-endpoints,
    /// interface-endpoints, other-routes, load-balancers-in-own-subnet, same-subnet, dns,
    /// link-local-services, guardduty-agent.
    #[serde(default = "IsolateParams::default_accept_open")]
    pub accept_open: Vec<DestinationClass>,
    /// Entries a network ACL may hold per direction and address family, default rules
    /// included: AWS's default quota is 20 (up to 40 on request).
    #[serde(default = "IsolateParams::default_quota")]
    #[schemars(range(min = 1, max = 40))]
    pub nacl_entry_quota: usize,
    /// What to do when no rung succeeded.
    #[serde(default)]
    pub fallback: IsolateFallback,
    /// A task with no network interface of its own (`bridge` or `host` network mode on EC2)
    /// shares its container instance's network: `cut-instance` (default) isolates the instance,
    /// with every task sharing it, only when the blast radius of each of their services allows
    /// and none is exempt; `refuse` leaves it open and says so.
    #[serde(default)]
    pub shared_network: SharedNetwork,
}

/// What `isolate` does for a task that shares its container instance's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SharedNetwork {
    /// Isolate the container instance, within every sharing service's blast radius.
    #[default]
    CutInstance,
    /// Do not isolate the task (report it open).
    Refuse,
}

fn yes() -> bool {
    true
}

impl IsolateParams {
    fn default_rungs() -> Vec<IsolationRung> {
        vec![IsolationRung::SgSwap, IsolationRung::NaclQuarantine]
    }

    fn default_quarantine_group() -> String {
        "incident-responder-quarantine".to_string()
    }

    fn default_accept_open() -> Vec<DestinationClass> {
        vec![
            DestinationClass::SameSubnet,
            DestinationClass::Dns,
            DestinationClass::LinkLocalServices,
        ]
    }

    fn default_quota() -> usize {
        20
    }
}

impl Default for IsolateParams {
    fn default() -> Self {
        IsolateParams {
            rungs: IsolateParams::default_rungs(),
            nacl_rule_range: RuleRange::default(),
            keep_guardduty_agent: true,
            quarantine_group_name: IsolateParams::default_quarantine_group(),
            accept_open: IsolateParams::default_accept_open(),
            nacl_entry_quota: IsolateParams::default_quota(),
            fallback: IsolateFallback::None,
            shared_network: SharedNetwork::CutInstance,
        }
    }
}

/// An inclusive range of network ACL rule numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRange {
    /// The lowest number the responder may use.
    #[schemars(range(min = 1, max = 32766))]
    pub first: u16,
    /// The highest number the responder may use.
    #[schemars(range(min = 1, max = 32766))]
    pub last: u16,
}

impl RuleRange {
    /// Is `number` in the range?
    pub fn contains(self, number: i32) -> bool {
        (i32::from(self.first)..=i32::from(self.last)).contains(&number)
    }
}

impl Default for RuleRange {
    /// Below 100, where AWS's own examples and most templates start numbering.
    fn default() -> Self {
        RuleRange { first: 1, last: 99 }
    }
}

/// One network ACL entry this tool created (and must remove on release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaclEntry {
    /// The ACL.
    pub acl_id: String,
    /// Its rule number.
    pub rule_number: i32,
    /// Outbound (true) or inbound.
    pub egress: bool,
    /// The one CIDR the entry matches.
    pub cidr: String,
    /// The CIDR is IPv6.
    pub ipv6: bool,
    /// `allow` or `deny`.
    pub action: String,
    /// IP protocol number (`-1`: all, `6`: TCP).
    pub protocol: String,
    /// TCP port range, when the protocol has ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<(i32, i32)>,
}

/// One ENI whose security groups were swapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgSwap {
    /// The network interface.
    pub eni_id: String,
    /// Its groups before the swap (restored by `release`).
    pub original_groups: Vec<String>,
    /// The group it has now.
    pub quarantine_group: String,
    /// The allow-all group of the first step.
    pub untracking_group: String,
}

/// Written down before a shared container instance is cut: whose finding it is for and the
/// other tasks whose blast-radius slots this finding took, so a release after a failure or a
/// dead invocation knows both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedIntent {
    /// The task whose finding cut its container instance.
    pub shared_by_task: String,
    /// The other tasks cut with it whose slots this finding took.
    pub shared_with: Vec<String>,
}

/// One rung tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RungAttempt {
    /// Which rung.
    pub rung: IsolationRung,
    /// `applied`, `not_applicable` or `failed`.
    pub result: String,
    /// What happened, in words.
    pub detail: String,
}

/// What isolation did, stored in the ledger so `release` can undo exactly that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainmentRecord {
    /// The task ARN or instance id.
    pub target: String,
    /// The ECS task whose finding had its container instance (`target`) isolated: the task
    /// shares the instance's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_by_task: Option<String>,
    /// The other service tasks cut off with that instance: each holds a slot of its service's
    /// blast radius until release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
    /// The rung that applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rung: Option<IsolationRung>,
    /// Every rung tried, in order.
    pub attempts: Vec<RungAttempt>,
    /// ENIs whose groups were swapped.
    #[serde(default)]
    pub sg_swaps: Vec<SgSwap>,
    /// Network ACL entries created.
    #[serde(default)]
    pub nacl_entries: Vec<NaclEntry>,
    /// Security groups locked down, with the rules they had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_lockdowns: Vec<lockdown::GroupLockdown>,
    /// The workload's private IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its IPv6 address, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Its network interfaces.
    #[serde(default)]
    pub eni_ids: Vec<String>,
    /// Its VPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Its subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Per destination class, cut or open and the rule that decides, from a fresh describe
    /// after the change (the network model's verdict, not the entries' mere existence).
    #[serde(default)]
    pub reachability: Vec<Reachability>,
    /// How many more workloads each ACL can hold in quarantine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headroom: Vec<Headroom>,
    /// What else a reader should know (ACLs left alone, the GuardDuty agent's path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The ACLs as they were before, as evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls_before: Vec<Acl>,
    /// The ACLs as the verification read them, right after the entries were made: the
    /// evidence's "after", for this response only (not recorded: a later response that needs
    /// them reads them afresh). EC2 is eventually consistent: a read this soon may not show
    /// every entry yet, as any later read might not either.
    #[serde(skip)]
    pub acls_after: Vec<aws_sdk_ec2::types::NetworkAcl>,
}

impl ContainmentRecord {
    /// Classes the model found open (accepted or not).
    pub fn open_classes(&self) -> Vec<&'static str> {
        self.reachability
            .iter()
            .filter(|r| r.verdict == Verdict::Open)
            .map(|r| r.class.name())
            .collect()
    }

    /// The fewest further workloads any ACL can take, when the quarantine used ACLs.
    pub fn vpc_headroom(&self) -> Option<usize> {
        self.headroom.iter().map(|h| h.tasks).min()
    }
}
