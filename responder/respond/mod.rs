//! `respond`: the one entry point the Lambda and the CLI share. Parse and decide (pure), then
//! carry out the plan ([`steps`]: phases, the ledger's claims, each action's `run`), notify once
//! per state of the response ([`notify`]), or release a stopped task's quarantine
//! ([`release`]). Every received event leaves an audit record. [`sweep`] finds quarantines
//! left behind.

mod approval;
mod notify;
mod release;
mod steps;
mod sweep;
mod watch;

use std::time::{Instant, SystemTime};

use chrono::Utc;

use crate::actions::ledger::Ledger;
use crate::actions::{Clients, Config, ConfigError, StepError, ENV_TABLE};
use crate::event::{parse_event, Inbound};
use crate::incident::Incident;
use crate::plan::Decision;
use crate::playbook::{Mode, PlaybookSet};
use crate::report::{Execution, Outcome, Report};

pub use release::{FindingRelease, ReleaseResult, ReleaseSummary, SessionsRelease, SessionsResult};
pub use sweep::{classify, Kept, Recorded, SweepPlan, SweepReport};
pub use watch::{HeldMatch, WatchResult};

/// Everything a response needs, built once per Lambda container (or CLI run).
#[derive(Clone, Debug)]
pub struct Responder {
    /// The SDK clients.
    pub clients: Clients,
    /// Resource names and the mode ceiling.
    pub config: Config,
    /// The playbooks in force.
    pub playbooks: PlaybookSet,
}

/// A report and whether the caller should ask for a retry.
#[derive(Debug, Clone)]
pub struct Response {
    /// What was decided and done.
    pub report: Report,
    /// A step failed in a way a retry can fix: the Lambda returns an error so the event is
    /// delivered again (the ledger keeps finished steps from repeating).
    pub retryable: bool,
}

impl Responder {
    /// Clients and configuration from the environment.
    pub async fn from_env(playbooks: PlaybookSet) -> Result<Responder, ConfigError> {
        Ok(Responder {
            clients: Clients::from_env().await?,
            config: Config::from_env()?,
            playbooks,
        })
    }

    /// The ledger, for a command that cannot work without it (`holding`: what it needs there).
    fn required_ledger(
        &self,
        invocation_id: &str,
        holding: &'static str,
    ) -> Result<Ledger, StepError> {
        self.ledger(invocation_id, None)
            .ok_or(StepError::MissingConfig(ENV_TABLE, holding))
    }

    fn ledger(&self, invocation_id: &str, deadline: Option<SystemTime>) -> Option<Ledger> {
        self.config.ledger_table.as_ref().map(|table| {
            Ledger::new(
                self.clients.dynamodb.clone(),
                table,
                attempt_owner(invocation_id),
                self.config.audit_ttl_days,
            )
            .with_deadline(deadline)
        })
    }

    /// Handle one received event end to end. `ceiling` caps every rule's mode on top of the
    /// deployment's `RESPONDER_MODE`; `deadline` (the Lambda invocation's) bounds its claims.
    pub async fn respond(
        &self,
        input: Option<String>,
        bytes: &[u8],
        invocation_id: &str,
        ceiling: Option<Mode>,
        deadline: Option<SystemTime>,
    ) -> Response {
        self.respond_as(input, bytes, invocation_id, ceiling, deadline, None)
            .await
    }

    /// [`Responder::respond`]; with `approved_by`, the containment a rule in `approve` mode
    /// deferred runs now (see [`Responder::approve`]).
    async fn respond_as(
        &self,
        input: Option<String>,
        bytes: &[u8],
        invocation_id: &str,
        ceiling: Option<Mode>,
        deadline: Option<SystemTime>,
        approved_by: Option<&str>,
    ) -> Response {
        let started = Instant::now();
        let started_at = Utc::now();
        let ceiling = [self.config.mode_ceiling, ceiling]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Mode::Enforce);
        let ledger = self.ledger(invocation_id, deadline);
        let mut execution = Execution {
            invocation_id: invocation_id.to_string(),
            started_at: started_at.to_rfc3339(),
            ..Execution::default()
        };

        let mut holds_lock = false;
        // Steps' outcomes written with the audit record.
        let mut finishes = Vec::new();
        // A member account's finding acts through that account's role.
        let mut member_clients: Option<Clients> = None;
        let mut report = match parse_event(bytes) {
            Err(error) => Report::for_error(input, &error),
            Ok(inbound) => {
                let mut decision = crate::plan::decide(&inbound, &self.playbooks, ceiling);
                if let Some(by) = approved_by {
                    decision = crate::plan::approved(decision, by);
                }
                if let Inbound::Finding { incident, .. } = &inbound {
                    decision =
                        match crate::plan::provenance::check(incident, &self.config.provenance) {
                            Some(refusal) => {
                                Decision::Skip(crate::plan::SkipReason::Untrusted(refusal))
                            }
                            None => {
                                let decision = crate::plan::for_region(
                                    decision,
                                    &incident.region,
                                    self.config.region.as_deref(),
                                );
                                // Boxed: it holds the role's first AssumeRole, rarely run.
                                let (decision, clients, retry) =
                                    Box::pin(self.across_accounts(decision, incident)).await;
                                member_clients = clients;
                                execution.retryable |= retry;
                                decision
                            }
                        };
                }
                // Containment waiting for a person: where its approval stands. Approved (the
                // run after `responder approve` died, or a later delivery): carried out now;
                // the step claims keep it from running twice.
                let mut approval = None;
                if let (Inbound::Finding { incident, .. }, Some(ledger), None) =
                    (&inbound, &ledger, approved_by)
                {
                    let waits = matches!(&decision, Decision::Act(plan) if plan.steps.iter().any(|s| s.mode == Mode::Approve && s.action.is_containment()));
                    if waits {
                        match crate::actions::approval::get(ledger, &incident.finding_id).await {
                            Ok(found) => approval = found,
                            Err(error) => execution.retryable |= error.is_retryable(),
                        }
                    }
                }
                if let Some(found) = approval
                    .as_ref()
                    .filter(|a| a.status == crate::actions::approval::ApprovalStatus::Approved)
                {
                    decision =
                        crate::plan::approved(decision, found.decided_by.as_deref().unwrap_or("?"));
                }
                let mut report = Report::for_decision(input, &inbound, &decision);
                match (&inbound, &decision) {
                    (Inbound::Finding { incident, raw }, Decision::Act(plan)) => {
                        // Every claim says whose workload it is: `release` acts there.
                        let ledger = ledger.clone().map(|l| l.for_account(&incident.account_id));
                        let invocation = steps::Invocation {
                            responder: self,
                            clients: member_clients.as_ref().unwrap_or(&self.clients),
                            incident,
                            raw,
                            event: bytes,
                            approval,
                            ledger: ledger.as_ref(),
                            started,
                            guard: plan.guard,
                        };
                        // Boxed: its nested futures are too deep a type to lay out inline in callers'.
                        let carried = Box::pin(invocation.carry_out(plan, &mut report)).await;
                        holds_lock = carried.holds_lock;
                        finishes = carried.finishes;
                        execution.containment_ms = carried.containment_ms;
                        // Another invocation holds part of the work: if it dies, nobody would
                        // finish or tell. Asking Lambda to retry costs little (finished steps
                        // are skipped, an unchanged state is not notified again).
                        if carried.held_elsewhere {
                            execution.retryable = true;
                            report.notes.push("another invocation holds part of this response: this one asks to be retried, so the work is finished and told even if that invocation dies".to_string());
                        }
                    }
                    (
                        _,
                        Decision::Sweep {
                            first,
                            last,
                            approvals_only,
                        },
                    ) => {
                        if ceiling == Mode::DryRun {
                            report.notes.push("dry-run: nothing swept".to_string());
                        } else {
                            match Box::pin(self.expire_approvals(ledger.as_ref())).await {
                                Ok(expired) => execution.expired_approvals = expired,
                                Err(error) => {
                                    execution.retryable |= error.is_retryable();
                                    report.notes.push(format!("approvals not expired: {error}"));
                                }
                            }
                        }
                        if ceiling != Mode::DryRun && !*approvals_only {
                            // Boxed, like every branch's work: only one runs, and their
                            // futures side by side would make this one's state large.
                            match Box::pin(self.sweep(*first, *last, invocation_id)).await {
                                Ok(swept) => {
                                    // Something left unchecked or unreleased: try again.
                                    execution.retryable |= !swept.errors.is_empty();
                                    execution.sweep = Some(swept);
                                }
                                Err(error) => {
                                    execution.retryable |= error.is_retryable();
                                    report.error = Some(error.to_string());
                                }
                            }
                        }
                    }
                    (
                        _,
                        Decision::Watch {
                            task_arn,
                            group,
                            containers,
                        },
                    ) => match &ledger {
                        None => report
                            .notes
                            .push(format!("held images not checked: {ENV_TABLE} is not set")),
                        Some(ledger) => match Box::pin(self.watch(
                            task_arn,
                            group.as_deref(),
                            containers,
                            ledger,
                            ceiling,
                            &report,
                        ))
                        .await
                        {
                            Ok(watched) => execution.watch = Some(watched),
                            Err(error) => {
                                execution.retryable |= error.is_retryable();
                                report.error = Some(error.to_string());
                            }
                        },
                    },
                    (_, Decision::Release { task_arn, .. }) => {
                        if ceiling == Mode::DryRun {
                            report.notes.push("dry-run: nothing released".to_string());
                        } else {
                            match Box::pin(self.release_task(task_arn, ledger.as_ref(), true)).await
                            {
                                Ok(summary) => execution.release = Some(summary),
                                Err(error) => {
                                    execution.retryable |= error.is_retryable();
                                    report.error = Some(error.to_string());
                                }
                            }
                        }
                    }
                    _ => {}
                }
                report
            }
        };

        execution.retryable |= report.steps.iter().any(|s| {
            matches!(
                s.outcome,
                Some(Outcome::Failed {
                    retryable: true,
                    ..
                })
            )
        });
        execution.duration_ms = started.elapsed().as_millis() as u64;
        // The audit record: every received event leaves one, whatever happened.
        match &ledger {
            Some(ledger) => {
                report.execution = Some(execution.clone());
                let value = serde_json::to_value(&report).unwrap_or_default();
                // With the last outcomes, and the response lock let go: nothing is done after.
                let closed = ledger
                    .close(&crate::actions::ledger::End {
                        finishes,
                        lock_of: report.finding_id.as_deref().filter(|_| holds_lock),
                        audit_of: report.finding_id.as_deref(),
                        report: &value,
                        at: started_at,
                    })
                    .await;
                let audit = closed.audit;
                if let Some(error) = closed.unlock {
                    // The lease runs out on its own; a later delivery then proceeds.
                    tracing::warn!(error = %error, "response lock not released");
                }
                match audit {
                    Ok(key) => execution.audit = Some(key),
                    Err(error) => {
                        tracing::error!(error = %error, report = %value, "audit record not written");
                        report
                            .notes
                            .push(format!("audit record not written: {error}"));
                        execution.retryable |= error.is_retryable();
                    }
                }
            }
            None => report
                .notes
                .push(format!("no audit record: {ENV_TABLE} is not set")),
        }
        let retryable = execution.retryable;
        report.execution = Some(execution);
        tracing::info!(
            finding_id = report.finding_id.as_deref().unwrap_or(""),
            decision = report.decision.name(),
            rule = report.rule.as_deref().unwrap_or(""),
            retryable,
            "event handled"
        );
        Response { report, retryable }
    }
}

impl Responder {
    /// Where the finding's resource is another account's: act there through the member role
    /// when one is configured and can be assumed (the clients for it are returned), otherwise
    /// keep only what works from here. The flag asks for a retry (the role's account was
    /// unreachable, not refused).
    async fn across_accounts(
        &self,
        decision: Decision,
        incident: &Incident,
    ) -> (Decision, Option<Clients>, bool) {
        let account = incident.account_id.as_str();
        let acting = self.config.account_id.as_deref();
        if acting.is_none_or(|acting| acting == account) {
            return (decision, None, false);
        }
        let Some(role) = &self.config.member_role else {
            return (
                crate::plan::for_account(decision, account, acting),
                None,
                false,
            );
        };
        let partition = incident
            .finding_arn
            .as_deref()
            .and_then(crate::incident::ArnParts::parse)
            .map_or(self.config.partition.as_str(), |p| p.partition);
        let role_arn = role.arn(partition, account);
        // A dry run changes nothing and assumes nothing: the plan says where it would act.
        let acts = matches!(&decision, Decision::Act(plan) if plan.steps.iter().any(|s| s.mode != Mode::DryRun));
        if !acts {
            return (
                crate::plan::through_member_role(decision, account, &role_arn, false),
                None,
                false,
            );
        }
        match self.clients.in_account(account, role, partition).await {
            Ok(clients) => (
                crate::plan::through_member_role(decision, account, &role_arn, true),
                Some(clients),
                false,
            ),
            Err(error) => (
                crate::plan::member_role_refused(
                    decision,
                    account,
                    acting.unwrap_or_default(),
                    &error.to_string(),
                ),
                None,
                error.is_retryable(),
            ),
        }
    }

    /// The clients for a recorded workload's account: this one's, or a member account's
    /// through its role (release and a stopped task's event act where the containment is).
    pub(super) async fn clients_for(&self, account: Option<&str>) -> Result<Clients, StepError> {
        let own = self.config.account_id.as_deref();
        match (account, own) {
            (Some(account), Some(own)) if account != own => match &self.config.member_role {
                // Only where findings may come from, as for a response.
                Some(_) if !self.config.provenance.allows_account(account) => {
                    Err(StepError::Refused(format!(
                        "the workload is in account {account}, which {} does not list",
                        crate::actions::ENV_ACCOUNTS
                    )))
                }
                Some(role) => {
                    self.clients
                        .in_account(account, role, &self.config.partition)
                        .await
                }
                None => Err(StepError::Refused(format!(
                    "the workload is in account {account}: set {} to act there",
                    crate::actions::ENV_MEMBER_ROLE
                ))),
            },
            _ => Ok(self.clients.clone()),
        }
    }
}

/// The owner of this attempt's claims: the invocation id and a value of its own. Lambda keeps
/// the request id across retries, and AWS does not say that two concurrent deliveries of one
/// event never share it; a claim is this attempt's only if this attempt made it. (A retry finds
/// the dead attempt's claims expired: they end with its deadline.)
fn attempt_owner(invocation_id: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let nonce = RandomState::new().hash_one(std::time::SystemTime::now()) & 0xffff_ffff;
    format!("{invocation_id}~{nonce:08x}")
}
