//! The `nacl-quarantine` rung. The network model plans the entries from the VPC as described
//! just before; they are created together, and rolled back if any cannot be made. EC2 refuses a
//! taken rule number and an entry over the quota, so a plan from a view gone stale is refused,
//! never wrong: it is made again from fresh describes under a per-VPC lock that concurrent
//! invocations respect (rule numbers are a shared resource). Then the ACLs are described again
//! and the model says what is cut: the rung succeeds only if nothing but the accepted classes
//! stays open. Also the removal `release` uses.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::RuleAction;

use super::describe::{acl, describe_acls, described_acls};
use super::ladder::RungError;
use super::{IsolateParams, NaclEntry};
use crate::actions::ledger::StepLog;
use crate::actions::{aws, Clients, StepError};
use crate::network::quarantine::{self, Headroom, Limits, PlannedEntry};
use crate::network::reach::{open_classes, reachability, DestinationClass, Reachability};
use crate::network::{Acl, Vpc, Workload};

/// How long the VPC's rule-number lock protects an allocation: longer than planning and
/// creating a handful of entries takes, short enough that a crashed holder is soon forgotten.
const LOCK_LEASE: Duration = Duration::from_secs(20);
/// How long an invocation waits for another one's allocation in the same VPC.
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// Attempts under the lock at least, when a number was taken meanwhile: by responders that
/// made their one attempt without the lock (each makes only one, so the holder's turn comes),
/// or by someone outside this tool. After these, attempts go on while half the lease is left.
const ATTEMPTS: usize = 3;

/// What the rung did and found.
pub(super) struct Quarantined {
    /// Entries created.
    pub(super) entries: Vec<NaclEntry>,
    /// The ACLs before (evidence).
    pub(super) acls_before: Vec<Acl>,
    /// The model's verdicts from a fresh describe after the entries were made.
    pub(super) reachability: Vec<Reachability>,
    /// The ACLs as that describe found them (evidence).
    pub(super) acls_after: Vec<aws_sdk_ec2::types::NetworkAcl>,
    /// Room left per ACL.
    pub(super) headroom: Vec<Headroom>,
    /// ACLs that needed no entry, and why.
    pub(super) skipped: Vec<(String, String)>,
    /// Classes open that the rule does not accept, with reasons: empty means contained.
    pub(super) open: Vec<String>,
}

pub(super) async fn nacl_quarantine(
    clients: &Clients,
    log: StepLog<'_>,
    vpc: &Vpc,
    workload: &Workload,
    params: &IsolateParams,
    agent_acls: BTreeSet<String>,
) -> Result<Quarantined, RungError> {
    // The agent's path to its endpoint is open on purpose: reported apart, and accepted.
    let agent_subnets: BTreeSet<String> = vpc
        .acls
        .iter()
        .filter(|a| agent_acls.contains(&a.id))
        .flat_map(|a| a.subnet_ids.iter().cloned())
        .collect();
    let mut accepted = params.accept_open.clone();
    if !agent_subnets.is_empty() {
        accepted.push(DestinationClass::GuarddutyAgent);
    }
    let limits = Limits {
        first: i32::from(params.nacl_rule_range.first),
        last: i32::from(params.nacl_rule_range.last),
        quota: params.nacl_entry_quota,
        agent_acls,
    };
    // Entries an earlier attempt of this step wrote down before making them, then died (or
    // failed before rolling back): those that exist exactly as written are ours, kept rather
    // than made twice.
    let written_down: Vec<NaclEntry> = log
        .written_down
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    // First from the VPC as just described, without the VPC's lock: AWS refuses a taken rule
    // number (`NetworkAclEntryAlreadyExists`) and an entry over the quota, and a refused
    // attempt is rolled back, so a view that went stale costs another attempt, never a wrong
    // entry. Only then, under the lock, from fresh describes: responders containing tasks of
    // one VPC at once take turns instead of colliding again.
    let (before, plan, created) = match attempt(
        clients,
        log,
        vpc,
        &vpc.acls,
        workload,
        &limits,
        &written_down,
        true,
    )
    .await
    {
        Attempt::Made(before, plan, created) => (before, plan, created),
        Attempt::Failed(error) => return Err(error),
        Attempt::Contended(_) => {
            let lock = format!("vpc#{}", vpc.vpc_id);
            log.ledger
                .lock(&lock, "nacl-rule-numbers", LOCK_LEASE, LOCK_WAIT)
                .await?;
            let allocated = allocate(clients, log, vpc, workload, &limits, &written_down).await;
            if let Err(error) = log.ledger.unlock(&lock, "nacl-rule-numbers").await {
                // The lease runs out on its own.
                tracing::warn!(vpc_id = %vpc.vpc_id, error = %error, "VPC rule-number lock not released");
            }
            allocated?
        }
    };

    // Verify from what AWS now holds, not from what was asked for.
    let acls_after = described_acls(clients, &vpc.vpc_id)
        .await
        .map_err(|error| RungError::Partial {
            error,
            entries: created.clone(),
        })?;
    let mut after = vpc.clone();
    after.acls = acls_after.iter().filter_map(acl).collect();
    let table = reachability(&after, workload, &agent_subnets);
    let open = open_classes(&table, &accepted)
        .into_iter()
        .filter_map(|class| table.iter().find(|r| r.class == class))
        .map(|r| format!("{}: {}", r.class.name(), r.reason))
        .collect();
    Ok(Quarantined {
        entries: created,
        acls_before: before,
        reachability: table,
        acls_after,
        headroom: plan.headroom,
        skipped: plan.skipped,
        open,
    })
}

/// Plan and create under the lock, from fresh describes. Returns the ACLs as planned from, the
/// plan and the entries.
async fn allocate(
    clients: &Clients,
    log: StepLog<'_>,
    vpc: &Vpc,
    workload: &Workload,
    limits: &Limits,
    written_down: &[NaclEntry],
) -> Result<(Vec<Acl>, quarantine::Plan, Vec<NaclEntry>), RungError> {
    let mut last_error = None;
    let started = std::time::Instant::now();
    let mut attempts = 0;
    // Within the lease, with room for the verification after.
    while attempts < ATTEMPTS || started.elapsed() < LOCK_LEASE / 2 {
        attempts += 1;
        let acls = describe_acls(clients, &vpc.vpc_id).await?;
        match attempt(
            clients,
            log,
            vpc,
            &acls,
            workload,
            limits,
            written_down,
            false,
        )
        .await
        {
            Attempt::Made(before, plan, created) => return Ok((before, plan, created)),
            Attempt::Failed(error) => return Err(error),
            // Someone outside the lock took a number meanwhile: describe again and re-plan.
            Attempt::Contended(error) => last_error = Some(error),
        }
    }
    Err(RungError::Failed(last_error.unwrap_or_else(|| {
        StepError::Refused("rule numbers kept being taken".to_string())
    })))
}

/// How one attempt to plan and make the entries ended.
enum Attempt {
    /// Made: the ACLs planned from, the plan, the entries (kept and made).
    Made(Vec<Acl>, quarantine::Plan, Vec<NaclEntry>),
    /// Refused because the ACLs changed since they were described (a number taken, the quota
    /// reached): nothing of this attempt is left; plan again from a fresh describe.
    Contended(StepError),
    /// Failed for good; nothing of this attempt is left.
    Failed(RungError),
}

/// Seconds before the invocation's deadline under which the intents are written before the
/// entries are made rather than alongside.
pub(super) const INTENT_FIRST_WITHIN: i64 = 10;

/// Plan from `acls` and make what is missing. `optimistic`: the view was not taken under the
/// VPC's lock, so a refusal to plan may come from a stale view and is worth a fresh one.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    clients: &Clients,
    log: StepLog<'_>,
    vpc: &Vpc,
    acls: &[Acl],
    workload: &Workload,
    limits: &Limits,
    written_down: &[NaclEntry],
    optimistic: bool,
) -> Attempt {
    // Plan as if our earlier entries were not there, so the plan picks the same numbers and
    // only what is missing is made.
    let (view, adopted) = without_entries(acls, written_down);
    let mut planning = vpc.clone();
    planning.acls = view;
    let plan = match quarantine::plan(&planning, workload, limits) {
        Ok(plan) => plan,
        Err(refusals) => {
            let why: Vec<String> = refusals
                .iter()
                .map(|r| format!("{}: {}", r.acl_id, r.why))
                .collect();
            let error = StepError::Refused(format!(
                "the network ACLs cannot hold a quarantine that would cut this task ({})",
                why.join("; ")
            ));
            return if optimistic {
                Attempt::Contended(error)
            } else {
                Attempt::Failed(RungError::Failed(error))
            };
        }
    };
    let (kept, to_make): (Vec<&PlannedEntry>, Vec<&PlannedEntry>) = plan
        .entries
        .iter()
        .partition(|e| adopted.contains(&recorded(e)));
    let stale: Vec<NaclEntry> = adopted
        .iter()
        .filter(|a| !plan.entries.iter().any(|e| recorded(e) == **a))
        .cloned()
        .collect();
    // Written down so that `release` finds them if this invocation dies while they are being
    // made: alongside the entries (one round trip less on the containment path), or first
    // when the invocation is close to its deadline, the one death a Lambda function sees
    // coming. A death in between (out of memory, a crash) can leave an entry no record names:
    // `responder sweep` reports it.
    let intents: Vec<serde_json::Value> = to_make
        .iter()
        .map(|e| serde_json::to_value(recorded(e)).unwrap_or_default())
        .collect();
    // An entry an earlier attempt wrote down and the describe did not show (it may lag) may
    // stand already: a refusal of its number is settled by reading, as after a lost answer.
    let creates = futures::future::join_all(
        to_make
            .iter()
            .map(|e| create(clients, e, written_down.contains(&recorded(e)))),
    );
    let near_deadline = log
        .ledger
        .seconds_left()
        .is_some_and(|left| left < INTENT_FIRST_WITHIN);
    let (intended, results): (Result<(), StepError>, Vec<Result<(), CreateFailure>>) =
        if near_deadline {
            match log.intend(&intents).await {
                Err(error) => {
                    // Its answer may be lost after it was written: nothing was made.
                    log.withdraw(&intents).await;
                    return Attempt::Failed(RungError::Failed(error));
                }
                Ok(()) => (Ok(()), creates.await),
            }
        } else {
            tokio::join!(log.intend(&intents), creates)
        };
    let mut created: Vec<NaclEntry> = kept.iter().map(|e| recorded(e)).collect();
    let mut made = Vec::new();
    // Made or not, nobody can say yet: kept written down and on record.
    let mut uncertain = Vec::new();
    let mut error = intended.as_ref().err().cloned();
    for (planned, result) in to_make.iter().zip(results) {
        match result {
            Ok(()) => made.push(recorded(planned)),
            Err(failure) => {
                if failure.uncertain {
                    uncertain.push(recorded(planned));
                }
                error.get_or_insert(failure.error);
            }
        }
    }
    let Some(error) = error else {
        // Ours, but no longer what the task needs (the subnets changed meanwhile).
        remove_entries(clients, &stale).await;
        created.append(&mut made);
        return Attempt::Made(acls.to_vec(), plan, created);
    };
    // Never leave a half-applied quarantine behind, nor an entry not written down.
    let mut survivors: Vec<NaclEntry> = remove_entries(clients, &made)
        .await
        .into_iter()
        .filter_map(|(entry, removed)| removed.is_err().then_some(entry))
        .collect();
    let (unrolled, unsure) = (survivors.len(), uncertain.len());
    survivors.append(&mut uncertain);
    // What was written down and not made (or made and removed) may be another response's
    // numbers by now: withdrawn, whether the intents' write was answered or not. What could
    // not be removed stays written down, and on the step's record.
    let not_made: Vec<serde_json::Value> = intents
        .iter()
        .filter(|i| {
            !survivors
                .iter()
                .any(|s| serde_json::to_value(s).ok().as_ref() == Some(*i))
        })
        .cloned()
        .collect();
    log.withdraw(&not_made).await;
    if unsure > 0 {
        // Retryable whatever refused the last try: the retry adopts what exists exactly as
        // written down (release checks the same). The entries adopted now stay too.
        let rolled = if unrolled > 0 {
            format!(
                "; {} could not be rolled back",
                crate::report::count(unrolled, "entry", "entries")
            )
        } else {
            String::new()
        };
        survivors.extend(kept.iter().map(|e| recorded(e)));
        return Attempt::Failed(RungError::Partial {
            error: StepError::Aws {
                operation: "EC2 CreateNetworkAclEntry",
                code: "Unsettled".to_string(),
                message: format!(
                    "{error}; whether {} made is not known yet{rolled}",
                    crate::report::count(unsure, "entry was", "entries were")
                ),
                retryable: true,
            },
            entries: survivors,
        });
    }
    if !survivors.is_empty() {
        return Attempt::Failed(RungError::Partial {
            error: StepError::Refused(format!(
                "{error}; {} could not be rolled back",
                crate::report::count(survivors.len(), "entry", "entries")
            )),
            entries: survivors,
        });
    }
    // Without the lock, others may have filled the quota since the describe; under it, the
    // fresh plan counted the quota, so a refusal means the configured quota is above the
    // account's, which no retry mends.
    let contended = matches!(&error, StepError::Aws { code, .. }
        if code == "NetworkAclEntryAlreadyExists"
            || (optimistic && code == "NetworkAclEntryLimitExceeded"));
    if contended {
        return Attempt::Contended(error);
    }
    remove_entries(clients, &adopted).await;
    Attempt::Failed(RungError::Failed(error))
}

/// The ACLs without the entries in `ours` that exist exactly as recorded, and those entries.
fn without_entries(acls: &[Acl], ours: &[NaclEntry]) -> (Vec<Acl>, Vec<NaclEntry>) {
    let mut found = Vec::new();
    let view = acls
        .iter()
        .map(|acl| {
            let mut acl = acl.clone();
            acl.entries.retain(|entry| {
                let existing = recorded(&PlannedEntry {
                    acl_id: acl.id.clone(),
                    rule_number: entry.rule_number,
                    egress: entry.egress,
                    allow: entry.allow,
                    cidr: entry.cidr,
                    protocol: entry.protocol,
                    ports: entry.ports,
                });
                let mine = entry.icmp.is_none() && ours.contains(&existing);
                if mine {
                    found.push(existing);
                }
                !mine
            });
            acl
        })
        .collect();
    (view, found)
}

fn recorded(planned: &PlannedEntry) -> NaclEntry {
    NaclEntry {
        acl_id: planned.acl_id.clone(),
        rule_number: planned.rule_number,
        egress: planned.egress,
        cidr: planned.cidr.to_string(),
        ipv6: matches!(planned.cidr, ipnet::IpNet::V6(_)),
        action: if planned.allow { "allow" } else { "deny" }.to_string(),
        protocol: planned.protocol.to_string(),
        ports: planned
            .ports
            .map(|(from, to)| (i32::from(from), i32::from(to))),
    }
}

/// Tries of one entry's creation (the SDK's own retries are off for it, below).
const CREATE_TRIES: u32 = 4;

/// Why an entry was not made, and whether it may have been all the same.
struct CreateFailure {
    error: StepError,
    /// A try may have made it (its answer lost) and no read has settled it.
    uncertain: bool,
}

/// Make one entry. The SDK's retries are off for this call and made here instead, to know
/// when an earlier try may have made the entry though its answer was lost (a timeout, a lost
/// connection, a 5xx): EC2 then refuses the next try as `NetworkAclEntryAlreadyExists`, which
/// would otherwise read as another response's number (the entry left made and unrecorded, and
/// the quarantine planned again at other numbers). The ACL is then described: the entry as
/// planned at its number counts as made. (Throttling is taken to leave nothing made: EC2
/// refuses the call for its request rate.) The tries together keep within the SDK's
/// operation timeout.
async fn create(
    clients: &Clients,
    entry: &PlannedEntry,
    written_down_before: bool,
) -> Result<(), CreateFailure> {
    let started = std::time::Instant::now();
    let mut maybe_made = written_down_before;
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        let left = crate::actions::OPERATION_TIMEOUT.saturating_sub(started.elapsed());
        let tried = tokio::time::timeout(left, create_once(clients, entry))
            .await
            .unwrap_or_else(|_| {
                Err(StepError::Aws {
                    operation: "EC2 CreateNetworkAclEntry",
                    code: "no response".to_string(),
                    message: "no answer within the operation's time".to_string(),
                    retryable: true,
                })
            });
        let error = match tried {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let (exists, retryable, throttled) = match &error {
            StepError::Aws {
                code, retryable, ..
            } => (
                code == "NetworkAclEntryAlreadyExists",
                *retryable,
                is_throttling(code),
            ),
            _ => (false, false, false),
        };
        if exists && maybe_made {
            return settle(clients, entry, error, started).await;
        }
        maybe_made |= retryable && !throttled;
        let out_of_time = started.elapsed() + pause >= crate::actions::OPERATION_TIMEOUT;
        if !retryable || tries >= CREATE_TRIES || out_of_time {
            if maybe_made {
                return settle(clients, entry, error, started).await;
            }
            return Err(CreateFailure {
                error,
                uncertain: false,
            });
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// After a try that may have made the entry: made if the ACL holds it as planned at its
/// number; not made if another entry holds the number; otherwise (nothing there, which a read
/// lagging behind the create would show too, or no read) uncertain. The read keeps within
/// the time left of the tries' 15 s (the VPC's lock is held meanwhile).
async fn settle(
    clients: &Clients,
    entry: &PlannedEntry,
    error: StepError,
    started: std::time::Instant,
) -> Result<(), CreateFailure> {
    let left = crate::actions::OPERATION_TIMEOUT.saturating_sub(started.elapsed());
    let read = clients
        .ec2
        .describe_network_acls()
        .network_acl_ids(&entry.acl_id)
        .send();
    let described = match tokio::time::timeout(left, read).await {
        Ok(answer) => answer.map_err(aws("EC2 DescribeNetworkAcls")).map(Some),
        Err(_) => Ok(None),
    };
    let planned = entry.as_acl_entry();
    let at_number = described.ok().flatten().and_then(|d| {
        d.network_acls()
            .iter()
            .filter_map(acl)
            .flat_map(|found| found.entries)
            .find(|e| e.rule_number == planned.rule_number && e.egress == planned.egress)
    });
    match at_number {
        Some(found) if found == planned => Ok(()),
        Some(_) => Err(CreateFailure {
            error,
            uncertain: false,
        }),
        None => Err(CreateFailure {
            error,
            uncertain: true,
        }),
    }
}

/// Throttling codes: EC2 refused the call for its request rate.
fn is_throttling(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "RequestLimitExceeded" | "TooManyRequestsException" | "SlowDown"
        )
}

/// One try at making the entry, without the SDK's retries.
async fn create_once(clients: &Clients, entry: &PlannedEntry) -> Result<(), StepError> {
    let mut request = clients
        .ec2
        .create_network_acl_entry()
        .network_acl_id(&entry.acl_id)
        .rule_number(entry.rule_number)
        .egress(entry.egress)
        .protocol(entry.protocol.to_string())
        .rule_action(if entry.allow {
            RuleAction::Allow
        } else {
            RuleAction::Deny
        });
    request = match entry.cidr {
        ipnet::IpNet::V6(v6) => request.ipv6_cidr_block(v6.to_string()),
        ipnet::IpNet::V4(v4) => request.cidr_block(v4.to_string()),
    };
    if let Some((from, to)) = entry.ports {
        request = request.port_range(
            aws_sdk_ec2::types::PortRange::builder()
                .from(i32::from(from))
                .to(i32::from(to))
                .build(),
        );
    }
    request
        .customize()
        .config_override(
            aws_sdk_ec2::config::Builder::default()
                .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled()),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(aws("EC2 CreateNetworkAclEntry"))
}

/// Delete entries this tool created; best effort, each result reported.
pub(crate) async fn remove_entries(
    clients: &Clients,
    entries: &[NaclEntry],
) -> Vec<(NaclEntry, Result<(), StepError>)> {
    let results = futures::future::join_all(entries.iter().map(|entry| async move {
        clients
            .ec2
            .delete_network_acl_entry()
            .network_acl_id(&entry.acl_id)
            .rule_number(entry.rule_number)
            .egress(entry.egress)
            .send()
            .await
            .map(|_| ())
            .map_err(aws("EC2 DeleteNetworkAclEntry"))
    }))
    .await;
    entries.iter().cloned().zip(results).collect()
}
