//! The `sg-swap` rung: the workload's ENIs get an allow-all "untracking" group, then the
//! quarantine group (no ingress; egress only to the GuardDuty endpoint on 443). Flows allowed by
//! all-traffic rules for 0.0.0.0/0 and ::/0 in both directions are untracked, and an untracked
//! flow ends when its rule goes, so the second swap is meant to end them; AWS documents no time
//! for an existing tracked flow to become untracked (reports say a packet must cross it meanwhile)
//! ([connection tracking](https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-connection-tracking.html)).
//!
//! The groups are found by tag or created once per VPC, and their rules are reconciled on every
//! use: a tagged group with other rules is put back to exactly what it must be, never trusted.
//! The ENIs' groups are read back after the second swap (not between the two, which would
//! hold the quarantine back a round trip); the responder's own groups are never recorded as a
//! workload's originals.

use std::collections::BTreeSet;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Ipv6Range, SecurityGroup, Tag as Ec2Tag};

use super::endpoints::Endpoint;
use super::ladder::RungError;
use super::{IsolateParams, SgSwap};
use crate::actions::ledger::StepLog;
use crate::actions::{aws, Clients, StepError};

/// Tags that mark the groups this tool creates, so they are found again instead of duplicated.
pub const ROLE_TAG: &str = "incident-responder:role";

/// One ENI to swap.
pub(super) struct SwapTarget {
    pub(super) eni_id: String,
    pub(super) groups: Vec<String>,
    /// EC2 refuses changes (requester-managed) or the groups belong to a service (a trunk or
    /// branch interface of ECS or EKS): left alone and said so.
    pub(super) unmodifiable: Option<String>,
}

/// One security group rule in a comparable form: protocol, ports, and one CIDR.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupRule {
    protocol: String,
    from: Option<i32>,
    to: Option<i32>,
    cidr: String,
}

impl GroupRule {
    fn all(cidr: &str) -> GroupRule {
        GroupRule {
            protocol: "-1".to_string(),
            from: None,
            to: None,
            cidr: cidr.to_string(),
        }
    }

    fn permission(&self) -> IpPermission {
        let mut builder = IpPermission::builder().ip_protocol(&self.protocol);
        if self.protocol != "-1" {
            builder = builder.set_from_port(self.from).set_to_port(self.to);
        }
        if self.cidr.contains(':') {
            builder.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(&self.cidr).build())
        } else {
            builder.ip_ranges(IpRange::builder().cidr_ip(&self.cidr).build())
        }
        .build()
    }
}

/// Rules of a described group. Rules that name other groups or prefix lists are returned apart:
/// they have no place in the responder's groups and are revoked whole.
fn rules_of(permissions: &[IpPermission]) -> (BTreeSet<GroupRule>, Vec<IpPermission>) {
    let mut rules = BTreeSet::new();
    let mut foreign = Vec::new();
    for p in permissions {
        let protocol = p.ip_protocol().unwrap_or("-1").to_string();
        let (from, to) = if protocol == "-1" {
            (None, None)
        } else {
            (p.from_port(), p.to_port())
        };
        for range in p.ip_ranges() {
            if let Some(cidr) = range.cidr_ip() {
                rules.insert(GroupRule {
                    protocol: protocol.clone(),
                    from,
                    to,
                    cidr: cidr.to_string(),
                });
            }
        }
        for range in p.ipv6_ranges() {
            if let Some(cidr) = range.cidr_ipv6() {
                rules.insert(GroupRule {
                    protocol: protocol.clone(),
                    from,
                    to,
                    cidr: cidr.to_string(),
                });
            }
        }
        if !p.user_id_group_pairs().is_empty() || !p.prefix_list_ids().is_empty() {
            foreign.push(
                IpPermission::builder()
                    .ip_protocol(&protocol)
                    .set_from_port(from)
                    .set_to_port(to)
                    .set_user_id_group_pairs(Some(p.user_id_group_pairs().to_vec()))
                    .set_prefix_list_ids(Some(p.prefix_list_ids().to_vec()))
                    .build(),
            );
        }
    }
    (rules, foreign)
}

/// The rules a responder group must have: (ingress, egress).
struct Desired {
    ingress: BTreeSet<GroupRule>,
    egress: BTreeSet<GroupRule>,
}

/// The groups this tool made in the VPC (both roles), as they are now: read before the swap,
/// alongside the workload's description.
pub(super) async fn responder_groups(
    clients: &Clients,
    vpc_id: &str,
) -> Result<Vec<SecurityGroup>, StepError> {
    groups_with_roles(clients, vpc_id, &["quarantine", "untracking"]).await
}

/// The groups in the VPC tagged with one of `roles`.
async fn groups_with_roles(
    clients: &Clients,
    vpc_id: &str,
    roles: &[&str],
) -> Result<Vec<SecurityGroup>, StepError> {
    let output = clients
        .ec2
        .describe_security_groups()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(
            Filter::builder()
                .name(format!("tag:{ROLE_TAG}"))
                .set_values(Some(roles.iter().map(|r| r.to_string()).collect()))
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 DescribeSecurityGroups"))?;
    Ok(output.security_groups().to_vec())
}

fn has_role(group: &SecurityGroup, role: &str) -> bool {
    group
        .tags()
        .iter()
        .any(|t| t.key() == Some(ROLE_TAG) && t.value() == Some(role))
}

/// Find a group this tool made in the VPC (by role tag; among `known` when the groups were
/// just read), or make it once; then make its rules exactly `desired`.
async fn ensure_group(
    clients: &Clients,
    vpc_id: &str,
    role: &str,
    name: &str,
    description: &str,
    desired: &Desired,
    known: Option<&[SecurityGroup]>,
) -> Result<String, StepError> {
    let find = || async {
        Ok::<_, StepError>(
            groups_with_roles(clients, vpc_id, &[role])
                .await?
                .into_iter()
                .next(),
        )
    };
    let found = match known.and_then(|groups| groups.iter().find(|g| has_role(g, role))) {
        Some(group) => Some(group.clone()),
        None => find().await?,
    };
    let group = match found {
        Some(group) => group,
        None => {
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
                Ok(_) => {}
                // Another invocation created it first: use theirs.
                Err(error) if error.code() == Some("InvalidGroup.Duplicate") => {}
                Err(error) => return Err(aws("EC2 CreateSecurityGroup")(error)),
            }
            // EC2's describes may lag behind a create, ours or another invocation's
            // ([eventual consistency](https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html)):
            // look again, briefly, before concluding that the name is taken by a group
            // without our tag.
            let mut found = None;
            for pause in [0, 200, 400, 800] {
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                found = find().await?;
                if found.is_some() {
                    break;
                }
            }
            found.ok_or_else(|| {
                StepError::Refused(format!(
                    "security group {name} exists but has no {ROLE_TAG} tag: rename it or tag it"
                ))
            })?
        }
    };
    let id = group
        .group_id()
        .ok_or_else(|| StepError::Refused(format!("security group {name} has no id")))?
        .to_string();
    reconcile(clients, &id, &group, desired).await?;
    Ok(id)
}

/// Revoke what a responder group must not have, authorize what it lacks. A rule gone before
/// its revoke (another invocation making the same group right, the first time it is used) has
/// the group read again and made right from what it is then: three passes at most.
async fn reconcile(
    clients: &Clients,
    id: &str,
    group: &aws_sdk_ec2::types::SecurityGroup,
    desired: &Desired,
) -> Result<(), StepError> {
    let mut group = group.clone();
    // EC2's reads may lag behind its changes: each read again waits a little longer.
    let mut pauses = [250, 500].into_iter();
    while reconcile_once(clients, id, &group, desired).await? == Revoked::Stale {
        let Some(pause) = pauses.next() else {
            // Another invocation is making the group right at the same time: a retry finds
            // it done.
            return Err(StepError::Aws {
                operation: "EC2 RevokeSecurityGroupIngress/Egress",
                code: "InvalidPermission.NotFound".to_string(),
                message: format!(
                    "security group {id}: rules gone before their revoke three times (another invocation making it right too); it is not known to hold only its own rules"
                ),
                retryable: true,
            });
        };
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        let output = clients
            .ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
            .map_err(aws("EC2 DescribeSecurityGroups"))?;
        group = output
            .security_groups()
            .first()
            .cloned()
            .ok_or_else(|| StepError::Refused(format!("security group {id} is gone")))?;
    }
    Ok(())
}

/// Whether every rule a revoke named was in the group.
#[derive(PartialEq)]
enum Revoked {
    All,
    /// EC2 did not know a rule (`InvalidPermission.NotFound`, or named among the unknown in its
    /// answer): the group changed since it was read.
    Stale,
}

/// A revoke's answer: a rule EC2 did not know is `Stale`, not a failure.
fn revoked<O, E, R>(
    result: Result<O, aws_sdk_ec2::error::SdkError<E, R>>,
    unknown: impl Fn(&O) -> bool,
    operation: &'static str,
) -> Result<Revoked, StepError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + crate::actions::aws::HttpStatus,
{
    match result {
        Ok(output) if unknown(&output) => Ok(Revoked::Stale),
        Ok(_) => Ok(Revoked::All),
        Err(error) if error.code() == Some("InvalidPermission.NotFound") => Ok(Revoked::Stale),
        Err(error) => Err(aws(operation)(error)),
    }
}

/// One pass of [`reconcile`] from the group as read; `Stale` when a revoke found a rule gone.
async fn reconcile_once(
    clients: &Clients,
    id: &str,
    group: &aws_sdk_ec2::types::SecurityGroup,
    desired: &Desired,
) -> Result<Revoked, StepError> {
    let ec2 = &clients.ec2;
    let (ingress, foreign_ingress) = rules_of(group.ip_permissions());
    let (egress, foreign_egress) = rules_of(group.ip_permissions_egress());
    let revoke_in: Vec<IpPermission> = ingress
        .difference(&desired.ingress)
        .map(GroupRule::permission)
        .chain(foreign_ingress)
        .collect();
    let revoke_out: Vec<IpPermission> = egress
        .difference(&desired.egress)
        .map(GroupRule::permission)
        .chain(foreign_egress)
        .collect();
    if !revoke_in.is_empty() {
        let result = ec2
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(revoke_in))
            .send()
            .await;
        let unknown = |o: &aws_sdk_ec2::operation::revoke_security_group_ingress::RevokeSecurityGroupIngressOutput| {
            !o.unknown_ip_permissions().is_empty()
        };
        if revoked(result, unknown, "EC2 RevokeSecurityGroupIngress")? == Revoked::Stale {
            return Ok(Revoked::Stale);
        }
    }
    if !revoke_out.is_empty() {
        let result = ec2
            .revoke_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(revoke_out))
            .send()
            .await;
        let unknown = |o: &aws_sdk_ec2::operation::revoke_security_group_egress::RevokeSecurityGroupEgressOutput| {
            !o.unknown_ip_permissions().is_empty()
        };
        if revoked(result, unknown, "EC2 RevokeSecurityGroupEgress")? == Revoked::Stale {
            return Ok(Revoked::Stale);
        }
    }
    let add_in: Vec<IpPermission> = desired
        .ingress
        .difference(&ingress)
        .map(GroupRule::permission)
        .collect();
    let add_out: Vec<IpPermission> = desired
        .egress
        .difference(&egress)
        .map(GroupRule::permission)
        .collect();
    if !add_in.is_empty() {
        let result = ec2
            .authorize_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(add_in))
            .send()
            .await;
        ignore_duplicate(result, "EC2 AuthorizeSecurityGroupIngress")?;
    }
    if !add_out.is_empty() {
        let result = ec2
            .authorize_security_group_egress()
            .group_id(id)
            .set_ip_permissions(Some(add_out))
            .send()
            .await;
        ignore_duplicate(result, "EC2 AuthorizeSecurityGroupEgress")?;
    }
    Ok(Revoked::All)
}

/// A rule another invocation added meanwhile is what we wanted anyway.
fn ignore_duplicate<T, E, R>(
    result: Result<T, aws_sdk_ec2::error::SdkError<E, R>>,
    operation: &'static str,
) -> Result<(), StepError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + crate::actions::aws::HttpStatus,
{
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some("InvalidPermission.Duplicate") => Ok(()),
        Err(error) => Err(aws(operation)(error)),
    }
}

/// The groups an ENI has now.
async fn groups_of(
    clients: &Clients,
    eni_ids: &[String],
) -> Result<Vec<(String, Vec<String>)>, StepError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(eni_ids.to_vec()))
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
    Ok(output
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
        .collect())
}

/// What the step writes down for one interface before swapping its groups.
fn swap_intent(
    eni_id: &str,
    original_groups: Vec<String>,
    quarantine: &str,
    untracking: &str,
) -> serde_json::Value {
    serde_json::to_value(SgSwap {
        eni_id: eni_id.to_string(),
        original_groups,
        quarantine_group: quarantine.to_string(),
        untracking_group: untracking.to_string(),
    })
    .unwrap_or_default()
}

/// The swaps [`sg_swap`] will write down, from what was read before the step's claim (the
/// instance's interfaces and the responder's groups in the VPC), so the claim carries them and
/// the swap itself need not wait for another write. The same values `sg_swap` computes: an
/// interface it reads the same way is not written down twice. Nothing when a responder group
/// is still to be made, nor for an interface that carries only the responder's groups (an
/// earlier attempt's record, read with the claim, says what its groups were).
pub(super) fn intents_before_claim(
    targets: &[SwapTarget],
    known: &[SecurityGroup],
) -> Vec<serde_json::Value> {
    let id_of = |role: &str| {
        known
            .iter()
            .find(|g| has_role(g, role))
            .and_then(|g| g.group_id())
    };
    let (Some(quarantine), Some(untracking)) = (id_of("quarantine"), id_of("untracking")) else {
        return Vec::new();
    };
    targets
        .iter()
        .filter(|t| t.unmodifiable.is_none())
        .filter_map(|target| {
            let original: Vec<String> = target
                .groups
                .iter()
                .filter(|g| g.as_str() != quarantine && g.as_str() != untracking)
                .cloned()
                .collect();
            (!original.is_empty())
                .then(|| swap_intent(&target.eni_id, original, quarantine, untracking))
        })
        .collect()
}

/// Why each interface the swap leaves alone is left alone.
fn left_alone(targets: &[SwapTarget]) -> Vec<String> {
    targets
        .iter()
        .filter_map(|t| {
            t.unmodifiable
                .as_ref()
                .map(|why| format!("{} left alone: {why}", t.eni_id))
        })
        .collect()
}

/// Why the swap cannot apply at all: no interface whose groups may change. Known before any
/// call, so a caller can refuse before changing anything else.
pub(super) fn nothing_to_swap(targets: &[SwapTarget]) -> Option<String> {
    targets.iter().all(|t| t.unmodifiable.is_some()).then(|| {
        format!(
            "no network interface whose groups the account may change ({})",
            left_alone(targets).join("; ")
        )
    })
}

/// Swap the groups of every modifiable ENI. Returns the swaps and notes: per ENI left alone,
/// why, and what reading the groups back found.
pub(super) async fn sg_swap(
    clients: &Clients,
    log: StepLog<'_>,
    vpc_id: &str,
    targets: &[SwapTarget],
    params: &IsolateParams,
    endpoints: &[Endpoint],
    known_groups: Option<&[SecurityGroup]>,
) -> Result<(Vec<SgSwap>, Vec<String>), RungError> {
    if let Some(why) = nothing_to_swap(targets) {
        return Err(RungError::NotApplicable(why));
    }
    let skipped = left_alone(targets);
    let modifiable: Vec<&SwapTarget> = targets
        .iter()
        .filter(|t| t.unmodifiable.is_none())
        .collect();
    let quarantine_rules = Desired {
        ingress: BTreeSet::new(),
        egress: endpoints
            .iter()
            .map(|e| GroupRule {
                protocol: "tcp".to_string(),
                from: Some(443),
                to: Some(443),
                cidr: format!("{}/32", e.ip),
            })
            .collect(),
    };
    let untracking_rules = Desired {
        ingress: [GroupRule::all("0.0.0.0/0"), GroupRule::all("::/0")].into(),
        egress: [GroupRule::all("0.0.0.0/0"), GroupRule::all("::/0")].into(),
    };
    let untracking_name = format!("{}-untracking", params.quarantine_group_name);
    // What is written down for an interface this attempt did not leave swapped (`settled`:
    // none swapped yet, or put back) is taken back: a record left naming it would have a later
    // release "restore" its groups over another finding's quarantine. Never a record whose
    // interface, as read, carried a group it names: an earlier attempt's swap may stand there
    // (a stale record is the lesser harm).
    let take_back = async |settled: &[&str], written_now: &[serde_json::Value]| {
        let mut stale: Vec<serde_json::Value> = Vec::new();
        for intent in log.written_down.iter().chain(written_now) {
            let settled_eni = serde_json::from_value::<SgSwap>(intent.clone()).is_ok_and(|swap| {
                settled.contains(&swap.eni_id.as_str())
                    && targets.iter().any(|t| {
                        t.eni_id == swap.eni_id
                            && !t
                                .groups
                                .iter()
                                .any(|g| *g == swap.quarantine_group || *g == swap.untracking_group)
                    })
            });
            if settled_eni && !stale.contains(intent) {
                stale.push(intent.clone());
            }
        }
        log.withdraw(&stale).await;
    };
    let unswapped: Vec<&str> = modifiable.iter().map(|t| t.eni_id.as_str()).collect();
    // The two groups together.
    let groups = tokio::try_join!(
        ensure_group(
            clients,
            vpc_id,
            "quarantine",
            &params.quarantine_group_name,
            "incident-responder quarantine: no ingress; egress only to the GuardDuty endpoint",
            &quarantine_rules,
            known_groups,
        ),
        ensure_group(
            clients,
            vpc_id,
            "untracking",
            &untracking_name,
            "incident-responder step 1 of 2: allow-all so existing flows become untracked",
            &untracking_rules,
            known_groups,
        )
    );
    let (quarantine, untracking) = match groups {
        Ok(groups) => groups,
        Err(error) => {
            take_back(&unswapped, &[]).await;
            return Err(error.into());
        }
    };
    let ours = [quarantine.as_str(), untracking.as_str()];

    // The originals are the groups before us: never the responder's own (an earlier, lost
    // record would otherwise be "restored" to quarantine). An ENI that carries only ours was
    // swapped by an attempt that died: what it wrote down before swapping says what they were.
    let written_down: Vec<SgSwap> = log
        .written_down
        .iter()
        .filter_map(|v| serde_json::from_value::<SgSwap>(v.clone()).ok())
        .collect();
    let mut originals = Vec::new();
    for target in &modifiable {
        let mut original: Vec<String> = target
            .groups
            .iter()
            .filter(|g| !ours.contains(&g.as_str()))
            .cloned()
            .collect();
        if original.is_empty() {
            original = written_down
                .iter()
                .find(|s| s.eni_id == target.eni_id)
                .map(|s| s.original_groups.clone())
                .unwrap_or_default();
        }
        if original.is_empty() {
            take_back(&unswapped, &[]).await;
            return Err(RungError::Failed(StepError::Refused(format!(
                "{} already carries only the responder's groups: its original groups are not known here; release the finding that quarantined it",
                target.eni_id
            ))));
        }
        originals.push((target.eni_id.clone(), original));
    }
    // Written down before the first change, so release restores them even if this dies (with
    // the step's claim already, when its reads said what they are: then nothing is written).
    let intents: Vec<serde_json::Value> = originals
        .iter()
        .map(|(eni_id, original_groups)| {
            swap_intent(eni_id, original_groups.clone(), &quarantine, &untracking)
        })
        .collect();
    // Those the claim carried (or an earlier attempt wrote) are written down already.
    let unwritten: Vec<serde_json::Value> = intents
        .iter()
        .filter(|intent| !log.written_down.contains(intent))
        .cloned()
        .collect();
    if let Err(error) = log.intend(&unwritten).await {
        take_back(&unswapped, &[]).await;
        return Err(RungError::Failed(error));
    }
    let eni_ids: Vec<String> = originals.iter().map(|(id, _)| id.clone()).collect();
    let swap_of = |(eni_id, original_groups): &(String, Vec<String>)| SgSwap {
        eni_id: eni_id.clone(),
        original_groups: original_groups.clone(),
        quarantine_group: quarantine.clone(),
        untracking_group: untracking.clone(),
    };
    // Puts the groups back and takes back what is written down for each interface that has
    // them again. The step then fails with `error`, and with the swaps of the interfaces not
    // put back on record: they may carry either of the responder's groups.
    let put_back = async |done: &[&(String, Vec<String>)], error: StepError| {
        let mut settled: Vec<&str> = Vec::new();
        // Interfaces this attempt found past the untracking step are left as they are.
        let mut standing: Vec<SgSwap> = originals
            .iter()
            .filter(|swap| !done.contains(swap))
            .map(swap_of)
            .collect();
        for swap in done {
            let restored = clients
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(&swap.0)
                .set_groups(Some(swap.1.clone()))
                .send()
                .await;
            match restored {
                Ok(_) => settled.push(swap.0.as_str()),
                Err(_) => standing.push(swap_of(swap)),
            }
        }
        take_back(&settled, &intents).await;
        if standing.is_empty() {
            RungError::Failed(error)
        } else {
            RungError::Swapped {
                error,
                swaps: standing,
            }
        }
    };

    // Sets `group` on the interfaces (together); the first error, if any.
    let swap_all = async |group: &str, enis: &[&(String, Vec<String>)]| {
        let results = futures::future::join_all(enis.iter().map(|(eni, _)| {
            clients
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(eni)
                .groups(group)
                .send()
        }))
        .await;
        results
            .into_iter()
            .find_map(Result::err)
            .map(aws("EC2 ModifyNetworkInterfaceAttribute"))
    };
    // An interface an earlier attempt swapped (its swap written down, then the step failed
    // or died) and that reads as carrying only the responder's groups is past the untracking
    // step: it gets the quarantine group alone, never the allow-all group again. A read that
    // lags behind that attempt's swaps (EC2 documents no bound) shows the workload's groups
    // and gets both steps, as a first attempt does.
    let past_untracking = |eni: &str| {
        written_down.iter().any(|s| s.eni_id == eni)
            && modifiable.iter().any(|t| {
                t.eni_id == eni
                    && !t.groups.is_empty()
                    && t.groups.iter().all(|g| ours.contains(&g.as_str()))
            })
    };
    let every: Vec<&(String, Vec<String>)> = originals.iter().collect();
    let (past, first): (Vec<&(String, Vec<String>)>, Vec<_>) =
        originals.iter().partition(|(eni, _)| past_untracking(eni));
    // Step 1: the untracking group; those past it get the quarantine group alongside, so
    // that none is left with the allow-all group if step 1 fails elsewhere.
    let (untracked, quarantined) =
        tokio::join!(swap_all(&untracking, &first), swap_all(&quarantine, &past));
    if let Some(error) = untracked.or(quarantined) {
        // Every interface of this step goes back, not only those whose call answered: a call
        // that failed may have been made (its answer lost, then throttled retries). Setting
        // the original groups again changes nothing where they are.
        return Err(put_back(&first, error).await);
    }
    // Step 2: the quarantine group, as soon as the first swap is answered: the groups are
    // read back after it, not between (a round trip less before the quarantine stands).
    // (Those past the untracking step had it set again in step 1: setting it again changes
    // nothing where it is, and needs no read to be right.)
    if let Some(error) = swap_all(&quarantine, &first).await {
        // Those of step 1 carry the untracking group or the quarantine group: they go back.
        return Err(put_back(&first, error).await);
    }
    let mut notes = skipped;
    let foreign = |now: &[(String, Vec<String>)]| {
        now.iter()
            .find(|(_, groups)| groups.iter().any(|g| !ours.contains(&g.as_str())))
            .cloned()
    };
    // A read that shows a group not the responder's may only lag behind the swaps (EC2 is
    // eventually consistent): read once more, a moment later, before concluding.
    let mut read_back = groups_of(clients, &eni_ids).await;
    if read_back.as_deref().is_ok_and(|now| foreign(now).is_some()) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // A second read that fails leaves the first one's answer standing.
        if let Ok(again) = groups_of(clients, &eni_ids).await {
            read_back = Ok(again);
        }
    }
    match read_back {
        // EC2 answered both swaps: they stand and are on record, read back or not.
        Err(error) => notes.push(format!(
            "the groups were not read back after the swap: {error}"
        )),
        Ok(now) => {
            // A group that is not the responder's: someone else is changing the interface
            // (an operator, a release): put back, as before any change of ours.
            if let Some((eni, groups)) = foreign(&now) {
                let error = StepError::Refused(format!(
                    "{eni} has groups {groups:?} after the swap, not {quarantine}: someone else is changing it; put back"
                ));
                return Err(put_back(&every, error).await);
            }
            // Only the responder's groups, but not the quarantine group alone: another
            // response's first swap on the same instance came after ours, or the read lags
            // behind the swap. The quarantine group is set again (that response sets it too)
            // rather than the workload's groups put back, which would undo its quarantine.
            let again: Vec<&(String, Vec<String>)> = originals
                .iter()
                .filter(|(eni, _)| {
                    now.iter().any(|(id, groups)| {
                        id == eni && groups.as_slice() != std::slice::from_ref(&quarantine)
                    })
                })
                .collect();
            if !again.is_empty() {
                let enis = again
                    .iter()
                    .map(|(eni, _)| eni.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                // Failing, the step fails with its swaps still written down (a retry or a
                // release finds them) and puts nothing back: the untracking group seen is a
                // response's own, which sets the quarantine group next, or a read behind the
                // quarantine; putting back would undo either.
                if let Some(error) = swap_all(&quarantine, &again).await {
                    return Err(RungError::Swapped {
                        error,
                        swaps: originals.iter().map(swap_of).collect(),
                    });
                }
                notes.push(format!(
                    "{enis} carried the untracking group after the swap (another response's first swap, or a read behind the swap): the quarantine group was set again"
                ));
            }
        }
    }
    Ok((originals.iter().map(swap_of).collect(), notes))
}
