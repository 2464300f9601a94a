//! The ladder: for a task, each rung in the rule's order until one applies; for an instance,
//! the security-group swap on each of its ENIs.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::Filter;

use super::describe::{describe_vpc, start_learning_subnets};
use super::endpoints::{agent_acls, guardduty_endpoints};
use super::lockdown::lock_down;
use super::nacl::nacl_quarantine;
use super::sg_swap::{sg_swap, SwapTarget};
use super::{
    ContainmentRecord, IsolateOutput, IsolateParams, IsolationRung, NaclEntry, RungAttempt,
    SharedIntent, SharedNetwork,
};
use crate::actions::drain::{describe_container_instance, tenants, Bounds};
use crate::actions::ledger::StepLog;
use crate::actions::workload::describe_task;
use crate::actions::{aws, Clients, Failure, StepError};
use crate::incident::{Ec2InstanceTarget, EcsTaskTarget};
use crate::network::reach::{reachability, DestinationClass, Reachability, Verdict};
use crate::network::Workload;
use crate::plan::guard::{instance_cut, InstanceCut};

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

/// What containing a task reads before it changes anything: the task, its interface and its
/// VPC. Read while the ledger is consulted (the response lock, the guard, the step's claim) so
/// that those round trips and these overlap; only reads, so a response that then stands back
/// has changed nothing.
pub struct Prefetched {
    read: Result<Read, StepError>,
    /// The changes the reads told the step's claim to write down (see [`prefetch_instance`]):
    /// taken back if the step fails before making them.
    told: Vec<serde_json::Value>,
}

impl From<Result<Read, StepError>> for Prefetched {
    fn from(read: Result<Read, StepError>) -> Prefetched {
        Prefetched {
            read,
            told: Vec::new(),
        }
    }
}

enum Read {
    /// The workload has stopped or is gone: nothing to isolate.
    Gone(String),
    Task(Box<TaskNetwork>),
    Instance(Box<InstanceNetwork>),
    /// A task that shares its container instance's network (`bridge` or `host`).
    Shared(Box<SharedInstance>),
}

/// A task with no network interface of its own: its container instance is the unit of
/// containment, cut off only within the blast radius of every service sharing it.
struct SharedInstance {
    /// The instance, as the instance ladder takes it.
    instance: Ec2InstanceTarget,
    /// What isolating the instance reads.
    network: Prefetched,
    /// What cutting the instance cuts, or why it must not be cut.
    verdict: Result<InstanceCut, String>,
}

struct TaskNetwork {
    eni_id: String,
    ip: String,
    ipv6: Option<String>,
    subnet_id: String,
    eni: EniFacts,
    vpc_id: String,
    /// The VPC as the network model needs it, when a rung of the rule uses the model.
    vpc: Option<crate::network::Vpc>,
}

impl Prefetched {
    /// What was read, or the outcome it already decides: an error, or a workload gone.
    fn settled(&self) -> Result<Result<&Read, IsolateOutput>, StepError> {
        match &self.read {
            Err(error) => Err(error.clone()),
            Ok(Read::Gone(why)) => Ok(Err(IsolateOutput::Gone { why: why.clone() })),
            Ok(read) => Ok(Ok(read)),
        }
    }
}

/// A read made for another kind of workload than the finding's (a caller's mistake).
fn mismatched() -> StepError {
    StepError::Refused("the network read given is for another kind of workload".to_string())
}

/// What isolating an instance reads before changing anything.
struct InstanceNetwork {
    found: aws_sdk_ec2::types::Instance,
    vpc_id: String,
    /// Its interfaces, each with why it is left alone, if it is.
    enis: Vec<SwapTarget>,
    /// The GuardDuty endpoint's addresses, when the agent is to keep reporting.
    endpoints: Vec<super::endpoints::Endpoint>,
    vpc: crate::network::Vpc,
    /// The responder's own groups in the VPC, as they are now.
    groups: Vec<aws_sdk_ec2::types::SecurityGroup>,
}

/// Read what [`isolate_instance`] needs. The finding names the instance's VPC: what depends
/// on the VPC is read alongside DescribeInstances, and read again if EC2 says another VPC.
///
/// `tell`, when given, is sent the swaps the step will write down as soon as the instance and
/// the responder's groups are read (the first round trip), so the step's claim can carry them
/// (see [`super::sg_swap::intents_before_claim`]); dropped unsent when they are not known yet.
pub async fn prefetch_instance(
    clients: &Clients,
    instance: &Ec2InstanceTarget,
    params: &IsolateParams,
    region: &str,
    tell: Option<IntentsBeforeClaim>,
) -> Prefetched {
    read_instance(clients, instance, params, region, tell).await
}

/// Where the intents a step's claim may carry are sent.
pub type IntentsBeforeClaim = tokio::sync::oneshot::Sender<Vec<serde_json::Value>>;

/// The refusal for a rule that cannot isolate an instance: only sg-swap can.
fn without_sg_swap(params: &IsolateParams) -> Option<StepError> {
    (!params.rungs.contains(&IsolationRung::SgSwap)).then(|| {
        StepError::Refused(
            "this rule's isolate rungs do not include sg-swap, the only rung for an EC2 instance"
                .to_string(),
        )
    })
}

async fn read_instance(
    clients: &Clients,
    instance: &Ec2InstanceTarget,
    params: &IsolateParams,
    region: &str,
    tell: Option<IntentsBeforeClaim>,
) -> Prefetched {
    // Nothing to read for a rule that cannot isolate an instance.
    if let Some(refusal) = without_sg_swap(params) {
        return Prefetched::from(Err(refusal));
    }
    let endpoints_of = |vpc_id: String| async move {
        if params.keep_guardduty_agent {
            guardduty_endpoints(clients, &vpc_id, region).await
        } else {
            Ok(Vec::new())
        }
    };
    let vpc_reads = |vpc_id: String| async move {
        tokio::try_join!(
            endpoints_of(vpc_id.clone()),
            describe_vpc(clients, &vpc_id),
            super::sg_swap::responder_groups(clients, &vpc_id)
        )
    };
    // The instance and its attached interfaces together: DescribeInstances does not say which
    // ENIs are requester-managed (ECS task ENIs attached to the instance, for one), and EC2
    // refuses changes to those. Paginated: EC2 refuses an unpaginated describe of interfaces
    // in an account with many, unless filtered by VPC, subnet, group or address.
    let attached_to = clients
        .ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(&instance.instance_id)
                .build(),
        )
        .max_results(1000)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>();
    let instance_reads = async {
        let (described, attached) = tokio::join!(
            clients
                .ec2
                .describe_instances()
                .instance_ids(&instance.instance_id)
                .send(),
            async {
                attached_to
                    .await
                    .map_err(aws("EC2 DescribeNetworkInterfaces"))
            }
        );
        let output = match described {
            Ok(output) => output,
            Err(error) if error.code() == Some("InvalidInstanceID.NotFound") => return Ok(None),
            Err(error) => return Err(aws("EC2 DescribeInstances")(error)),
        };
        let found = output
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .cloned();
        Ok::<_, StepError>(found.map(|found| (found, attached)))
    };
    let hinted = instance.vpc_id.as_deref();
    // The finding names the VPC: what depends on it is read alongside, and read again if EC2
    // says another VPC. The responder's groups come back in the first round trip, with the
    // instance: enough to say what the swap will write down.
    let mut told = Vec::new();
    let first = async {
        let groups = async {
            match hinted {
                Some(vpc_id) => Some(super::sg_swap::responder_groups(clients, vpc_id).await),
                None => None,
            }
        };
        let (read, groups) = tokio::join!(instance_reads, groups);
        if let Some(tell) = tell {
            let intents = match (&read, &groups) {
                (Ok(Some((found, Ok(attached)))), Some(Ok(groups)))
                    if found.vpc_id() == hinted
                        && !is_going(found)
                        && unattached(found, attached).is_empty() =>
                {
                    super::sg_swap::intents_before_claim(&swap_targets(found, attached), groups)
                }
                _ => Vec::new(),
            };
            told = intents.clone();
            let _ = tell.send(intents);
        }
        (read, groups)
    };
    let rest = async {
        match hinted {
            Some(vpc_id) => Some(tokio::try_join!(
                endpoints_of(vpc_id.to_string()),
                describe_vpc(clients, vpc_id)
            )),
            None => None,
        }
    };
    let ((read, early_groups), early_rest) = tokio::join!(first, rest);
    let read = async {
        let Some((found, attached)) = read? else {
            return Ok(Read::Gone("EC2 no longer knows the instance".to_string()));
        };
        if is_going(&found) {
            let state = found
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string());
            return Ok(Read::Gone(format!(
                "the instance is {}",
                state.unwrap_or_default()
            )));
        }
        let vpc_id = found
            .vpc_id()
            .ok_or_else(|| StepError::Refused("the instance reports no VPC".to_string()))?
            .to_string();
        // An interface the filtered describe did not return (EC2's describes may lag behind an
        // attachment; the describe failed) is described by id: never taken as modifiable unread.
        let mut attached = attached.unwrap_or_else(|error| {
            tracing::warn!(error = %error, "attached interfaces not read by instance; reading them by id");
            Vec::new()
        });
        let missing = unattached(&found, &attached);
        if !missing.is_empty() {
            let described = clients
                .ec2
                .describe_network_interfaces()
                .set_network_interface_ids(Some(missing))
                .send()
                .await
                .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
            attached.extend(described.network_interfaces().iter().cloned());
        }
        let enis = swap_targets(&found, &attached);
        if enis.is_empty() {
            return Err(StepError::Refused(
                "the instance has no network interface".to_string(),
            ));
        }
        let (endpoints, vpc, groups) = match (early_groups, early_rest) {
            (Some(groups), Some(rest)) if hinted == Some(vpc_id.as_str()) => {
                let (endpoints, vpc) = rest?;
                (endpoints, vpc, groups?)
            }
            // The finding named no VPC, or another one: read the instance's.
            _ => vpc_reads(vpc_id.clone()).await?,
        };
        Ok(Read::Instance(Box::new(InstanceNetwork {
            found,
            vpc_id,
            enis,
            endpoints,
            vpc,
            groups,
        })))
    };
    Prefetched {
        read: read.await,
        told,
    }
}

/// The instance's interfaces `attached` does not describe.
fn unattached(
    found: &aws_sdk_ec2::types::Instance,
    attached: &[aws_sdk_ec2::types::NetworkInterface],
) -> Vec<String> {
    found
        .network_interfaces()
        .iter()
        .filter_map(|eni| eni.network_interface_id())
        .filter(|id| {
            !attached
                .iter()
                .any(|e| e.network_interface_id() == Some(*id))
        })
        .map(str::to_string)
        .collect()
}

/// Terminated or on its way: nothing to isolate.
fn is_going(found: &aws_sdk_ec2::types::Instance) -> bool {
    matches!(
        found.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("terminated" | "shutting-down")
    )
}

/// The instance's interfaces, each with why it is left alone, if it is: ECS trunk interfaces
/// (awsvpc trunking) and EKS branch interfaces (security groups for pods) carry groups the
/// service manages; a requester-managed one (`attached` says which) EC2 will not change.
fn swap_targets(
    found: &aws_sdk_ec2::types::Instance,
    attached: &[aws_sdk_ec2::types::NetworkInterface],
) -> Vec<SwapTarget> {
    found
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            let eni_id = eni.network_interface_id()?.to_string();
            let managed = attached.iter().any(|e| {
                e.network_interface_id() == Some(eni_id.as_str())
                    && e.requester_managed() == Some(true)
            });
            let unmodifiable = match eni.interface_type() {
                Some(kind @ ("trunk" | "branch")) => Some(format!(
                    "a {kind} interface: its groups belong to ECS or EKS, not to the instance"
                )),
                _ if managed => Some(
                    "requester-managed (created by a service for its own use): EC2 refuses changes to its groups".to_string(),
                ),
                _ => None,
            };
            Some(SwapTarget {
                eni_id,
                groups: eni
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
                unmodifiable,
            })
        })
        .collect()
}

/// How much longer than DescribeTasks a task finding waits for a listing of the account's
/// subnets under way.
const LISTING_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// Read what [`isolate_task`] needs. With the subnet's VPC known (EC2 has no call that moves a
/// subnet: learnt from the account's subnets, listed alongside a container's first
/// DescribeTasks, or from an earlier response), the interface and the VPC are described
/// together: one round trip fewer.
pub async fn prefetch(
    clients: &Clients,
    task: &EcsTaskTarget,
    params: &IsolateParams,
    region: &str,
    bounds: Bounds<'_>,
) -> Prefetched {
    Prefetched::from(read_task(clients, task, params, region, bounds).await)
}

async fn read_task(
    clients: &Clients,
    task: &EcsTaskTarget,
    params: &IsolateParams,
    region: &str,
    bounds: Bounds<'_>,
) -> Result<Read, StepError> {
    let uses_model = params
        .rungs
        .iter()
        .any(|r| matches!(r, IsolationRung::NaclQuarantine | IsolationRung::SgSwap));
    let listing = if uses_model {
        start_learning_subnets(clients)
    } else {
        None
    };
    let facts = describe_task(clients, task).await;
    if let Some(listing) = listing {
        // A little longer than DescribeTasks, not as long as a slow or throttled listing takes:
        // it goes on in the background, and a subnet it has not learnt yet is learnt from the
        // task's interface.
        let _ = tokio::time::timeout(LISTING_GRACE, listing).await;
    }
    let Some(facts) = facts? else {
        return Ok(Read::Gone(
            "ECS no longer lists the task (MISSING): stopped tasks are listed for at least an hour after they stop".to_string(),
        ));
    };
    // Only a task whose containers have stopped is gone. In DEACTIVATING (load balancer
    // draining, up to the deregistration delay) and STOPPING (SIGTERM, then stopTimeout, which a
    // process can trap) the containers still run with their network: quarantined like a running
    // task. Their STOPPED event waits for this isolation and then releases it.
    const GOING: &[&str] = &["DEPROVISIONING", "STOPPED", "DELETED"];
    if let Some(status) = facts.last_status.as_deref().filter(|s| GOING.contains(s)) {
        return Ok(Read::Gone(format!(
            "the task is {status}: its containers have stopped, nothing to isolate"
        )));
    }
    let (Some(eni_id), Some(ip), Some(subnet_id)) = (facts.eni_id, facts.ipv4, facts.subnet_id)
    else {
        let Some(container_instance) = facts.container_instance_arn else {
            return Err(StepError::Refused(
                "the task has no network interface of its own and ECS names no container instance for it".to_string(),
            ));
        };
        let definition = facts.raw["taskDefinitionArn"].as_str().map(str::to_string);
        return read_shared(
            clients,
            task,
            &container_instance,
            definition.as_deref(),
            params,
            region,
            bounds,
        )
        .await;
    };
    let remembered = clients.stable.vpc_of(&subnet_id).filter(|_| uses_model);
    let (eni, mut vpc) = match &remembered {
        Some(vpc_id) => {
            let (eni, vpc) = tokio::join!(
                describe_eni(clients, &eni_id),
                describe_vpc(clients, vpc_id)
            );
            (eni?, Some(vpc?))
        }
        None => (describe_eni(clients, &eni_id).await?, None),
    };
    let vpc_id = eni
        .vpc_id
        .clone()
        .ok_or_else(|| StepError::Refused(format!("network interface {eni_id} reports no VPC")))?;
    clients.stable.remember_subnet(&subnet_id, &vpc_id);
    if uses_model && vpc.as_ref().is_none_or(|v| v.vpc_id != vpc_id) {
        vpc = Some(describe_vpc(clients, &vpc_id).await?);
    }
    Ok(Read::Task(Box::new(TaskNetwork {
        eni_id,
        ip,
        ipv6: facts.ipv6,
        subnet_id,
        eni,
        vpc_id,
        vpc,
    })))
}

/// Read what cutting a shared container instance needs: the instance, the tasks that share
/// it and their services, and whether the blast radius allows the cut.
#[allow(clippy::too_many_arguments)]
async fn read_shared(
    clients: &Clients,
    task: &EcsTaskTarget,
    container_instance_arn: &str,
    task_definition_arn: Option<&str>,
    params: &IsolateParams,
    region: &str,
    bounds: Bounds<'_>,
) -> Result<Read, StepError> {
    if params.shared_network == SharedNetwork::Refuse {
        return Err(StepError::Refused(
            "the task has no network interface of its own (bridge or host network mode), and this rule does not cut its container instance (shared_network: refuse)".to_string(),
        ));
    }
    // No interface of its own: bridge or host, or `none` (no network at all). The definition
    // says which, read alongside the container instance.
    let mode = async {
        let Some(arn) = task_definition_arn else {
            return Ok(None);
        };
        let described = crate::actions::workload::describe_task_definition(clients, arn).await?;
        Ok::<_, StepError>(
            described
                .as_deref()
                .and_then(|d| d.network_mode())
                .map(|m| m.as_str().to_string()),
        )
    };
    let (mode, found) = tokio::join!(
        mode,
        describe_container_instance(clients, &task.cluster_arn, container_instance_arn)
    );
    if mode?.as_deref() == Some("none") {
        return Err(StepError::Refused(
            "the task's network mode is none: it has no network of its own to cut, and its container instance is not cut for it".to_string(),
        ));
    }
    let Some(found) = found? else {
        return Err(StepError::Refused(format!(
            "the task shares the network of container instance {container_instance_arn}, which ECS does not describe"
        )));
    };
    let Some(instance_id) = found.ec2_instance_id else {
        return Err(StepError::Refused(format!(
            "container instance {container_instance_arn} names no EC2 instance (an external instance?): nothing here can cut it off"
        )));
    };
    let instance = Ec2InstanceTarget {
        instance_id: instance_id.clone(),
        network_interfaces: Vec::new(),
        vpc_id: None,
        subnet_id: None,
        instance_profile_arn: None,
        tags: Default::default(),
    };
    let (tenants, network) = tokio::join!(
        tenants(
            clients,
            &task.cluster_arn,
            container_instance_arn,
            bounds.exempt_tag
        ),
        read_instance(clients, &instance, params, region, None)
    );
    let (tenants, services) = tenants?;
    let network = network.read?;
    let instance_exempt = match &network {
        Read::Instance(read) => read
            .found
            .tags()
            .iter()
            .any(|t| bounds.exempt_tag.matches(t.key(), t.value())),
        _ => false,
    };
    let verdict = if instance_exempt {
        Err(format!(
            "instance {instance_id} carries the exemption tag {}",
            bounds.exempt_tag
        ))
    } else {
        instance_cut(
            bounds.blast_radius,
            &instance_id,
            &task.task_arn,
            &tenants,
            &services,
        )
    };
    Ok(Read::Shared(Box::new(SharedInstance {
        instance,
        network: Prefetched::from(Ok(network)),
        verdict,
    })))
}

/// Isolate a task that shares its container instance's network: the instance, when the
/// blast radius of every service on it allows.
async fn isolate_shared(
    clients: &Clients,
    log: StepLog<'_>,
    task: &EcsTaskTarget,
    params: &IsolateParams,
    region: &str,
    shared: &SharedInstance,
) -> Result<IsolateOutput, Failure<IsolateOutput>> {
    let instance_id = &shared.instance.instance_id;
    let held_back = |why: &str| {
        StepError::Refused(format!(
            "the task shares the network of its container instance ({instance_id}; bridge or host network mode), so only cutting the instance would contain it, and that is held back: {why}. `drain-instance` has ECS move the service tasks off the instance; a later delivery of this finding counts again"
        ))
    };
    let cut = match &shared.verdict {
        Ok(cut) => cut,
        Err(why) => return Err(held_back(why).into()),
    };
    // An instance already gone takes no slot.
    if let Err(gone) = shared.network.settled()? {
        return Ok(gone);
    }
    // Slots an earlier attempt of this step took (it wrote them down first) are this
    // finding's; a slot held otherwise belongs to another finding's cut.
    let mine: BTreeSet<String> = log
        .written_down
        .iter()
        .filter_map(|v| serde_json::from_value::<SharedIntent>(v.clone()).ok())
        .flat_map(|i| i.shared_with)
        .collect();
    // The other tasks cut with the instance take their services' slots first, each a
    // conditional write, so tasks contained by other findings count and racing findings
    // cannot both pass.
    let admissions = futures::future::join_all(cut.slots.iter().map(|slot| {
        log.ledger
            .admit_to_service(&slot.task_arn, &slot.service, slot.cap)
    }))
    .await;
    // `taken`: every slot this finding holds (recorded); `newly`: those taken by this attempt,
    // the only ones a failure here gives back (an earlier attempt's cut may still stand).
    let mut taken = Vec::new();
    let mut newly_taken = Vec::new();
    let mut refused = Vec::new();
    let mut failed = None;
    for (slot, admission) in cut.slots.iter().zip(admissions) {
        match admission {
            Ok(crate::actions::guard::Admission::Admitted { newly, .. })
                if newly || mine.contains(&slot.task_arn) =>
            {
                if newly {
                    newly_taken.push(slot.task_arn.clone());
                }
                taken.push(slot.task_arn.clone())
            }
            Ok(crate::actions::guard::Admission::Admitted { .. }) => {}
            Ok(crate::actions::guard::Admission::Full { holders }) => refused.push(format!(
                "service {} has {} contained already ({}), at most {} at once",
                slot.service,
                holders.len(),
                holders.join(", "),
                slot.cap
            )),
            Err(error) => {
                failed.get_or_insert(error);
            }
        }
    }
    let give_back = async |taken: &[String]| {
        for task in taken {
            if let Err(error) = log.ledger.leave_service(task).await {
                tracing::warn!(error = %error, "blast-radius slot not given back");
            }
        }
    };
    if let Some(error) = failed {
        give_back(&newly_taken).await;
        return Err(error.into());
    }
    if !refused.is_empty() {
        give_back(&newly_taken).await;
        return Err(held_back(&refused.join("; ")).into());
    }
    // Written down before any change: a failure or a death after the swap leaves a record
    // that still says a shared instance was cut and which slots go with it.
    let intent = SharedIntent {
        shared_by_task: task.task_arn.clone(),
        shared_with: taken.clone(),
    };
    if let Err(error) = log
        .intend(&[serde_json::to_value(&intent).unwrap_or_default()])
        .await
    {
        give_back(&newly_taken).await;
        return Err(error.into());
    }
    let output = Box::pin(isolate_instance(
        clients,
        log,
        &shared.instance,
        params,
        region,
        &shared.network,
    ))
    .await;
    // On an error the instance may be cut already (a partial rung, a retryable failure): the
    // slots stay with the written-down intent, and release gives them back; what was cut is
    // said the same way as when it succeeds.
    let cut = cut.summary.clone();
    let shared_by = |output: &mut IsolateOutput| {
        let (IsolateOutput::Contained { record } | IsolateOutput::Incomplete { record, .. }) =
            output
        else {
            return;
        };
        record.shared_by_task = Some(task.task_arn.clone());
        record.shared_with = taken.clone();
        record.notes.insert(
            0,
            format!(
                "the task has no network interface of its own (bridge or host network mode): its container instance is the unit of containment; {cut}"
            ),
        );
        record.notes.push(
            "the ECS agent on the instance is cut off too: ECS neither starts nor stops tasks there until release and keeps counting them as running (a load balancer's failed health checks still get them replaced); stops asked for meanwhile happen when release reconnects it. The task's STOPPED event does not release the instance (a person does, with `responder release`)".to_string(),
        );
    };
    match output {
        Ok(mut output) => {
            shared_by(&mut output);
            Ok(output)
        }
        Err(mut failure) => {
            if let Some(partial) = &mut failure.partial {
                shared_by(partial);
            }
            Err(failure)
        }
    }
}

/// The VPC as read before, or described now.
async fn model_of(
    clients: &Clients,
    network: &TaskNetwork,
) -> Result<crate::network::Vpc, StepError> {
    match &network.vpc {
        Some(vpc) => Ok(vpc.clone()),
        None => describe_vpc(clients, &network.vpc_id).await,
    }
}

/// Isolate an ECS task: its ENI, then each rung in order until one applies.
pub(super) async fn isolate_task(
    clients: &Clients,
    log: StepLog<'_>,
    task: &EcsTaskTarget,
    params: &IsolateParams,
    region: &str,
    read: &Prefetched,
) -> Result<IsolateOutput, Failure<IsolateOutput>> {
    let network = match read.settled()? {
        Err(gone) => return Ok(gone),
        Ok(Read::Task(network)) => network,
        Ok(Read::Shared(shared)) => {
            return isolate_shared(clients, log, task, params, region, shared).await
        }
        Ok(_) => return Err(mismatched().into()),
    };
    let TaskNetwork {
        eni_id,
        ip,
        subnet_id,
        eni,
        vpc_id,
        ..
    } = network.as_ref();
    let (eni_id, ip, subnet_id, vpc_id) = (
        eni_id.clone(),
        ip.clone(),
        subnet_id.clone(),
        vpc_id.clone(),
    );
    let ipv4: Ipv4Addr = ip
        .parse()
        .map_err(|_| StepError::Refused(format!("the task's address {ip:?} is not IPv4")))?;
    let ipv6: Option<Ipv6Addr> = network.ipv6.as_deref().and_then(|v6| v6.parse().ok());
    let workload = Workload {
        ipv4,
        ipv6,
        subnet_id: subnet_id.clone(),
        public_ip: eni.public_ip.clone(),
    };
    let mut record = ContainmentRecord {
        target: task.task_arn.clone(),
        ip: Some(ip.clone()),
        ipv6: network.ipv6.clone(),
        eni_ids: vec![eni_id.clone()],
        vpc_id: Some(vpc_id.clone()),
        subnet_id: Some(subnet_id.clone()),
        ..ContainmentRecord::default()
    };

    let mut failures = Vec::new();
    let mut open = Vec::new();
    // A rung's retryable error after entries were made: Lambda's retry finishes the job.
    let mut retry = None;
    for rung in &params.rungs {
        let attempt = match rung {
            IsolationRung::SgSwap if eni.requester_managed => Err(RungError::NotApplicable(
                "the ENI is requester-managed (every Fargate and awsvpc task ENI): EC2 refuses security-group changes on it".to_string(),
            )),
            // A read failing within a rung is that rung's failure (`?` here ends the rung, not
            // the ladder), so what earlier rungs changed stays on record.
            IsolationRung::SgSwap => async {
                let endpoints = if params.keep_guardduty_agent {
                    guardduty_endpoints(clients, &vpc_id, region).await?
                } else {
                    Vec::new()
                };
                let vpc = model_of(clients, network).await?;
                let target = SwapTarget {
                    eni_id: eni_id.clone(),
                    groups: eni.groups.clone(),
                    unmodifiable: None,
                };
                sg_swap(clients, log, &vpc_id, &[target], params, &endpoints, None)
                    .await
                    .map(|(swaps, skipped)| {
                        record.sg_swaps = swaps;
                        record.notes.extend(skipped);
                        record.reachability =
                            security_group_reachability(&reachability(&vpc, &workload, &BTreeSet::new()));
                        open = open_reasons(&record.reachability, &params.accept_open);
                        "security groups swapped: untracking group, then quarantine group".to_string()
                    })
            }
            .await,
            IsolationRung::ServiceSgLockdown => async {
                let endpoints = if params.keep_guardduty_agent {
                    guardduty_endpoints(clients, &vpc_id, region).await?
                } else {
                    Vec::new()
                };
                let vpc = model_of(clients, network).await?;
                lock_down(clients, log, task, &eni.groups, &endpoints, ipv6.is_some()).await.map(|locked| {
                    let service = task.service.as_deref().unwrap_or("?");
                    record.notes.push(format!(
                        "every task of service {service} is contained with this task: its security groups are locked down until `responder release`"
                    ));
                    // As the first rung: the model's own verdicts, since the lockdown turns
                    // no class from open to cut (an empty table would claim everything cut).
                    if record.reachability.is_empty() {
                        record.reachability = reachability(&vpc, &workload, &BTreeSet::new());
                    }
                    for row in &mut record.reachability {
                        if row.verdict == Verdict::Open
                            && !matches!(row.class, DestinationClass::Dns | DestinationClass::LinkLocalServices)
                        {
                            row.reason = format!(
                                "{}; the service lockdown refuses new connections and may end TCP and UDP flows in its untracking step (AWS does not document that a tracked flow becomes untracked; reports say only one that carries a packet meanwhile does), but ICMP, other protocols and connections through NAT gateways, load balancers or endpoints stay tracked until idle",
                                row.reason
                            );
                        }
                    }
                    open = open_reasons(&record.reachability, &params.accept_open);
                    let ids: Vec<&str> = locked.iter().map(|g| g.group_id.as_str()).collect();
                    let detail = format!("rules of {} replaced (untracking, then quarantine)", ids.join(", "));
                    record.group_lockdowns = locked;
                    detail
                })
            }
            .await,
            IsolationRung::NaclQuarantine => async {
                let vpc = model_of(clients, network).await?;
                let agent = if params.keep_guardduty_agent {
                    agent_acls(clients, &vpc, region, &subnet_id).await?
                } else {
                    BTreeSet::new()
                };
                if params.keep_guardduty_agent && agent.is_empty() {
                    let why = if vpc.endpoints.iter().any(|e| e.is_guardduty_agent()) {
                        "no network ACL guards only the GuardDuty endpoint, so an ALLOW for it would open other paths too"
                    } else {
                        "the VPC has no GuardDuty endpoint (one shared from another VPC is not seen here)"
                    };
                    record.notes.push(format!(
                        "the GuardDuty agent is cut off while quarantined: {why}"
                    ));
                }
                match nacl_quarantine(clients, log, &vpc, &workload, params, agent).await {
                    Ok(done) => {
                        let acls: BTreeSet<&str> =
                            done.entries.iter().map(|e| e.acl_id.as_str()).collect();
                        let detail = format!(
                            "{} for {ip} in {} {}",
                            crate::report::count(done.entries.len(), "entry", "entries"),
                            if acls.len() == 1 { "network ACL" } else { "network ACLs" },
                            acls.into_iter().collect::<Vec<_>>().join(", ")
                        );
                        record.nacl_entries = done.entries;
                        record.acls_before = done.acls_before;
                        record.acls_after = done.acls_after;
                        record.headroom = done.headroom;
                        record.notes.extend(
                            done.skipped
                                .into_iter()
                                .map(|(acl, why)| format!("{acl} left alone: {why}")),
                        );
                        if record.reachability.is_empty() {
                            record.reachability = done.reachability;
                            open = done.open;
                        } else {
                            // After a security-group rung: a class is cut if either cuts it.
                            record.reachability =
                                combined(&record.reachability, &done.reachability);
                            open = open_reasons(&record.reachability, &params.accept_open);
                        }
                        Ok(detail)
                    }
                    Err(RungError::Partial { error, entries }) => {
                        // Entries exist but the rung did not finish (not verified, or not
                        // rolled back): keep them on record (release undoes them), claim nothing.
                        record.nacl_entries = entries;
                        open.push(format!("not confirmed cut: {error}"));
                        if error.is_retryable() {
                            retry = Some(error);
                        }
                        Ok("entries made, then the rung failed; they stay on record for release".to_string())
                    }
                    Err(other) => Err(other),
                }
            }
            .await,
        };
        match attempt {
            Ok(detail) => {
                record.attempts.push(RungAttempt {
                    rung: *rung,
                    result: "applied".to_string(),
                    detail,
                });
                record.rung = Some(*rung);
                if open.is_empty() {
                    break;
                }
                // Still open: a later rung may cut what this one cannot.
            }
            Err(error) => {
                let (result, detail, fatal) = match error {
                    RungError::NotApplicable(d) => ("not_applicable", d, None),
                    RungError::Failed(e) => ("failed", e.to_string(), Some(e)),
                    RungError::Partial { error, .. } => ("failed", error.to_string(), Some(error)),
                    RungError::Swapped { error, swaps } => {
                        record.notes.push(swaps_not_put_back(&swaps));
                        record.sg_swaps = swaps;
                        ("failed", error.to_string(), Some(error))
                    }
                    RungError::Locked { error, groups } => {
                        let ids: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
                        record.notes.push(not_put_back("lockdown", &ids));
                        record.group_lockdowns = groups;
                        ("failed", error.to_string(), Some(error))
                    }
                };
                failures.push(format!("{}: {detail}", rung.name()));
                record.attempts.push(RungAttempt {
                    rung: *rung,
                    result: result.to_string(),
                    detail,
                });
                if let Some(error) = fatal.filter(StepError::is_retryable) {
                    // Throttled or AWS-side failure: stop climbing, let the retry redo it.
                    open.push(format!("{}: {error}", rung.name()));
                    retry = Some(error);
                    break;
                }
            }
        }
        if retry.is_some() {
            break;
        }
    }
    // What an earlier rung (or a failed one) changed stays on record for the retry and release.
    let changed = record.rung.is_some()
        || !record.nacl_entries.is_empty()
        || !record.sg_swaps.is_empty()
        || !record.group_lockdowns.is_empty();
    if let Some(error) = retry {
        return Err(Failure {
            error,
            partial: changed.then(|| IsolateOutput::Incomplete {
                record: Box::new(record),
                why: format!("still open: {}", open.join("; ")),
            }),
        });
    }
    if record.rung.is_none() {
        let why = format!("no isolation rung succeeded ({})", failures.join("; "));
        return Err(Failure {
            error: StepError::Refused(why.clone()),
            partial: changed.then(|| IsolateOutput::Incomplete {
                record: Box::new(record),
                why,
            }),
        });
    }
    if open.is_empty() {
        return Ok(IsolateOutput::Contained {
            record: Box::new(record),
        });
    }
    Ok(IsolateOutput::Incomplete {
        record: Box::new(record),
        why: format!("still open: {}", open.join("; ")),
    })
}

/// What the two-step security-group swap can be credited with, given the paths the model
/// finds. New connections are refused and untracked TCP/UDP flows cut, but ICMP and other
/// protocols are always tracked, and so is every connection through a NAT gateway, a load
/// balancer, Global Accelerator, a firewall endpoint, a transit gateway attachment, an interface
/// endpoint or an egress-only internet gateway: those outlive the swap until they go idle
/// ([connection tracking](https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html)).
/// So no class is "cut" by the swap alone; the stateless ACL rung cuts what it can.
fn security_group_reachability(paths: &[Reachability]) -> Vec<Reachability> {
    paths
        .iter()
        .map(|path| {
            let (verdict, reason) = match (path.verdict, path.class) {
                (Verdict::NoPath, _) => (Verdict::NoPath, path.reason.clone()),
                (_, DestinationClass::Dns | DestinationClass::LinkLocalServices) => {
                    (Verdict::Open, path.reason.clone())
                }
                _ => (
                    Verdict::Open,
                    "the quarantine security group refuses new connections and the untracking step may end TCP and UDP flows (AWS does not document that a tracked flow becomes untracked; reports say only one that carries a packet while the allow-all group is in effect does, about one round trip), but ICMP, other protocols and connections through NAT gateways, load balancers, firewall or interface endpoints and transit gateways are always tracked and outlive the swap until idle".to_string(),
                ),
            };
            Reachability {
                class: path.class,
                verdict,
                reason,
                rules: Vec::new(),
            }
        })
        .collect()
}

/// Isolate an EC2 instance: the SG swap on each of its ENIs.
pub(super) async fn isolate_instance(
    clients: &Clients,
    log: StepLog<'_>,
    instance: &Ec2InstanceTarget,
    params: &IsolateParams,
    region: &str,
    read: &Prefetched,
) -> Result<IsolateOutput, Failure<IsolateOutput>> {
    // What the reads told the claim to write down, taken back when no swap will be made.
    let take_back = async || {
        let told: Vec<serde_json::Value> = read
            .told
            .iter()
            .filter(|intent| log.written_down.contains(intent))
            .cloned()
            .collect();
        log.withdraw(&told).await;
    };
    let network = match read.settled() {
        Ok(Ok(Read::Instance(network))) => network,
        settled => {
            take_back().await;
            return match settled {
                Ok(Err(gone)) => Ok(gone),
                Ok(Ok(_)) => Err(mismatched().into()),
                Err(error) => Err(error.into()),
            };
        }
    };
    let InstanceNetwork {
        found,
        vpc_id,
        enis,
        endpoints,
        vpc,
        groups,
    } = network.as_ref();
    let vpc_id = vpc_id.clone();
    if let Some(refusal) = without_sg_swap(params) {
        return Err(refusal.into());
    }
    let workload = match (found.private_ip_address(), found.subnet_id()) {
        (Some(ip), Some(subnet)) => Some(Workload {
            ipv4: match ip.parse() {
                Ok(ipv4) => ipv4,
                Err(_) => {
                    take_back().await;
                    return Err(StepError::Refused(format!(
                        "the instance's address {ip:?} is not IPv4"
                    ))
                    .into());
                }
            },
            ipv6: found
                .network_interfaces()
                .first()
                .and_then(|e| e.ipv6_addresses().first())
                .and_then(|a| a.ipv6_address())
                .and_then(|a| a.parse().ok()),
            subnet_id: subnet.to_string(),
            public_ip: found.public_ip_address().map(str::to_string),
        }),
        _ => None,
    };
    let swap_error = |e: RungError| match e {
        RungError::NotApplicable(d) => (StepError::Refused(d), Vec::new()),
        RungError::Failed(e)
        | RungError::Partial { error: e, .. }
        | RungError::Locked { error: e, .. } => (e, Vec::new()),
        RungError::Swapped { error, swaps } => (error, swaps),
    };
    // No interface whose groups may change: refused before any change (no ACL entry either).
    if let Some(why) = super::sg_swap::nothing_to_swap(enis) {
        return Err(StepError::Refused(why).into());
    }
    // What the swap can be credited with depends on the model alone, not on the swap: the
    // stateless ACL entries for what it cannot end are made alongside it, not after it.
    let model_table = workload
        .as_ref()
        .map(|w| reachability(vpc, w, &BTreeSet::new()));
    let swap_table = model_table.as_deref().map(security_group_reachability);
    let acl_rung = async {
        let workload = workload.as_ref()?;
        let open = open_reasons(swap_table.as_deref()?, &params.accept_open);
        if open.is_empty() || !params.rungs.contains(&IsolationRung::NaclQuarantine) {
            return None;
        }
        let agent = if params.keep_guardduty_agent {
            match agent_acls(clients, vpc, region, &workload.subnet_id).await {
                Ok(agent) => agent,
                Err(error) => return Some(Err(RungError::Failed(error))),
            }
        } else {
            BTreeSet::new()
        };
        Some(nacl_quarantine(clients, log, vpc, workload, params, agent).await)
    };
    let (swapped, acls) = tokio::join!(
        sg_swap(clients, log, &vpc_id, enis, params, endpoints, Some(groups)),
        acl_rung
    );
    let mut record = ContainmentRecord {
        target: instance.instance_id.clone(),
        eni_ids: enis.iter().map(|t| t.eni_id.clone()).collect(),
        ip: found.private_ip_address().map(str::to_string),
        vpc_id: Some(vpc_id),
        subnet_id: found.subnet_id().map(str::to_string),
        ..ContainmentRecord::default()
    };
    let swapped = match swapped {
        Ok((swaps, notes)) => {
            record.rung = Some(IsolationRung::SgSwap);
            record.attempts.push(RungAttempt {
                rung: IsolationRung::SgSwap,
                result: "applied".to_string(),
                detail: format!(
                    "security groups swapped on {}",
                    crate::report::count(swaps.len(), "ENI", "ENIs")
                ),
            });
            record.sg_swaps = swaps;
            record.notes = notes;
            None
        }
        Err(error) => {
            let (error, swaps) = swap_error(error);
            if !swaps.is_empty() {
                record.notes.push(swaps_not_put_back(&swaps));
                record.sg_swaps = swaps;
            }
            Some(error)
        }
    };
    // Entries made alongside a swap that failed stand: the step fails with them on record
    // (release takes them out, a retry adopts them), so that no report hides a change made.
    let made_entries = match &acls {
        Some(Ok(done)) => !done.entries.is_empty(),
        Some(Err(RungError::Partial { entries, .. })) => !entries.is_empty(),
        _ => false,
    };
    if let Some(error) = &swapped {
        if !made_entries && record.sg_swaps.is_empty() {
            return Err(error.clone().into());
        }
        record.attempts.push(RungAttempt {
            rung: IsolationRung::SgSwap,
            result: "failed".to_string(),
            detail: error.to_string(),
        });
    }
    if workload.is_none() {
        let failed = swapped
            .as_ref()
            .map(|e| format!("the security-group swap failed: {e}; "))
            .unwrap_or_default();
        return Ok(IsolateOutput::Incomplete {
            record: Box::new(record),
            why: format!("{failed}the instance reports no private address or subnet: what the swap cut cannot be evaluated"),
        });
    }
    // A swap that failed is credited with nothing: the model's own reasons stand.
    record.reachability = match swapped {
        None => swap_table.unwrap_or_default(),
        Some(_) => model_table.unwrap_or_default(),
    };
    let mut open = open_reasons(&record.reachability, &params.accept_open);
    // A retryable error of either rung, once something is changed: Lambda's retry finishes
    // the job, and this attempt's changes stay on record meanwhile.
    let mut retry = swapped.clone().filter(StepError::is_retryable);
    // Connections the swap cannot end (tracked through a NAT gateway, a transit gateway or an
    // endpoint) are cut by the stateless ACLs, when the rule allows that rung too.
    if let Some(acls) = acls {
        let attempt = match acls {
            Ok(done) => {
                let detail = format!(
                    "{} network ACL entries for the connections the swap cannot end",
                    done.entries.len()
                );
                if record.rung.is_none() {
                    record.rung = Some(IsolationRung::NaclQuarantine);
                }
                record.nacl_entries = done.entries;
                record.acls_before = done.acls_before;
                record.acls_after = done.acls_after;
                record.headroom = done.headroom;
                record.reachability = combined(&record.reachability, &done.reachability);
                open = open_reasons(&record.reachability, &params.accept_open);
                RungAttempt {
                    rung: IsolationRung::NaclQuarantine,
                    result: "applied".to_string(),
                    detail,
                }
            }
            Err(RungError::Partial { error, entries }) => {
                if record.rung.is_none() && !entries.is_empty() {
                    record.rung = Some(IsolationRung::NaclQuarantine);
                }
                record.nacl_entries = entries;
                open.push(format!("not confirmed cut: {error}"));
                let detail = error.to_string();
                if error.is_retryable() {
                    retry.get_or_insert(error);
                }
                RungAttempt {
                    rung: IsolationRung::NaclQuarantine,
                    result: "failed".to_string(),
                    detail,
                }
            }
            // (Only the swap leaves interfaces swapped: `Swapped` is never the ACL rung's.)
            Err(
                RungError::Failed(error)
                | RungError::Swapped { error, .. }
                | RungError::Locked { error, .. },
            ) if error.is_retryable() => {
                let attempt = RungAttempt {
                    rung: IsolationRung::NaclQuarantine,
                    result: "failed".to_string(),
                    detail: error.to_string(),
                };
                open.push(format!("the network ACL rung failed: {error}"));
                retry.get_or_insert(error);
                attempt
            }
            Err(
                RungError::Failed(error)
                | RungError::Swapped { error, .. }
                | RungError::Locked { error, .. },
            ) => RungAttempt {
                rung: IsolationRung::NaclQuarantine,
                result: "failed".to_string(),
                detail: error.to_string(),
            },
            Err(RungError::NotApplicable(detail)) => RungAttempt {
                rung: IsolationRung::NaclQuarantine,
                result: "not_applicable".to_string(),
                detail,
            },
        };
        record.attempts.push(attempt);
    }
    if let Some(error) = &swapped {
        open.push(format!("the security-group swap failed: {error}"));
    }
    let output = if open.is_empty() {
        IsolateOutput::Contained {
            record: Box::new(record),
        }
    } else {
        IsolateOutput::Incomplete {
            record: Box::new(record),
            why: format!("still open: {}", open.join("; ")),
        }
    };
    match retry {
        Some(error) => Err(Failure {
            error,
            partial: Some(output),
        }),
        None => Ok(output),
    }
}

/// The note for what a failed swap (`change`: "swap", the interfaces' ids) or lockdown
/// ("lockdown", the groups' ids) could not put back.
fn not_put_back(change: &str, ids: &[&str]) -> String {
    let (carries, own) = match change {
        "lockdown" => (
            "hold the untracking (allow-all) or the quarantine rules",
            "its own rules",
        ),
        _ => (
            "carry the untracking (allow-all) or the quarantine group",
            "its original groups",
        ),
    };
    format!(
        "the {change} failed and {} could not be put back: each may {carries}; {own} are on record and `responder release` restores them",
        ids.join(", ")
    )
}

/// The note for interfaces a failed swap could not put back.
fn swaps_not_put_back(swaps: &[super::SgSwap]) -> String {
    let ids: Vec<&str> = swaps.iter().map(|s| s.eni_id.as_str()).collect();
    not_put_back("swap", &ids)
}

/// Open classes the rule does not accept, with the model's reasons.
fn open_reasons(table: &[Reachability], accepted: &[DestinationClass]) -> Vec<String> {
    crate::network::reach::open_classes(table, accepted)
        .into_iter()
        .filter_map(|class| table.iter().find(|r| r.class == class))
        .map(|r| format!("{}: {}", r.class.name(), r.reason))
        .collect()
}

/// A class is cut if either the security group or the ACLs cut it.
fn combined(security_group: &[Reachability], acls: &[Reachability]) -> Vec<Reachability> {
    security_group
        .iter()
        .map(|sg| match acls.iter().find(|a| a.class == sg.class) {
            Some(acl) if sg.verdict == Verdict::Open && acl.verdict == Verdict::Cut => acl.clone(),
            _ => sg.clone(),
        })
        .collect()
}

/// Why a rung did not apply.
pub(super) enum RungError {
    /// It cannot work here (e.g. sg-swap on a requester-managed ENI); try the next.
    NotApplicable(String),
    /// It was tried and failed.
    Failed(StepError),
    /// It made changes and then failed: the changes are kept on record.
    Partial {
        /// What went wrong.
        error: StepError,
        /// The entries made.
        entries: Vec<NaclEntry>,
    },
    /// The group swap failed after changing interfaces it could not put back: they may carry
    /// the untracking or the quarantine group, and their swaps are kept on record.
    Swapped {
        /// What went wrong.
        error: StepError,
        /// The interfaces not put back.
        swaps: Vec<super::SgSwap>,
    },
    /// The service lockdown failed after changing groups it could not put back: they may hold
    /// the untracking or the quarantine rules, and their own rules are kept on record.
    Locked {
        /// What went wrong.
        error: StepError,
        /// The groups not put back.
        groups: Vec<super::lockdown::GroupLockdown>,
    },
}

impl From<StepError> for RungError {
    fn from(error: StepError) -> Self {
        RungError::Failed(error)
    }
}
