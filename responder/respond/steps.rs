//! Carrying out a plan, in phases:
//!
//! 1. contain — `isolate` (the critical path: only the calls it needs come before it),
//! 2. preserve — `evidence`, `snapshot-volumes`, `tag`, `deregister`, concurrently,
//! 3. `stop` — only after evidence was preserved, unless the rule forces it (also the
//!    isolate fallback),
//! 4. `notify` — last, even when earlier steps failed.
//!
//! Each step is claimed in the ledger first, so replays, republished findings and concurrent
//! deliveries never repeat a finished step; failures are isolated per step.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::Responder;
use crate::actions::isolate::{self, IsolateFallback, IsolateOutput};
use crate::actions::ledger::{Claim, Finish, Ledger, StepRecord, StepStatus};
use crate::actions::stop::StopParams;
use crate::actions::{
    output_from_ledger, run_action, workload, ActionName, ActionSpec, Clients, Earlier, Phase,
    StepContext, StepError, StepOutput, ENV_TABLE,
};
use crate::incident::{Incident, Target};
use crate::plan::{ActPlan, Step};
use crate::playbook::Mode;
use crate::report::{Outcome, Report, StepReport};

/// Where a step stands after this invocation. The notification is keyed on these, so a
/// replay that changes nothing sends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepState {
    Done,
    Failed,
    Skipped,
    /// Claimed by another invocation that has not finished.
    InProgressElsewhere,
    Released,
}

impl StepState {
    pub(super) fn name(self) -> &'static str {
        match self {
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::InProgressElsewhere => "in-progress",
            StepState::Released => "released",
        }
    }

    fn of_record(status: StepStatus) -> StepState {
        match status {
            StepStatus::Claimed => StepState::InProgressElsewhere,
            StepStatus::Done => StepState::Done,
            StepStatus::Failed => StepState::Failed,
            StepStatus::Released => StepState::Released,
        }
    }
}

/// One response to one finding: what every step needs to know about the invocation.
pub(super) struct Invocation<'a> {
    pub(super) responder: &'a Responder,
    /// The clients for the finding's account: this one's, or a member account's.
    pub(super) clients: &'a Clients,
    pub(super) incident: &'a Incident,
    pub(super) raw: &'a crate::event::RawFinding,
    /// The event as received, kept with a containment that waits for approval.
    pub(super) event: &'a [u8],
    /// The finding's approval, when the plan has containment in `approve` mode and one was
    /// asked for before (decided or not).
    pub(super) approval: Option<crate::actions::approval::Approval>,
    pub(super) ledger: Option<&'a Ledger>,
    pub(super) started: Instant,
    /// The plan's limits on containment.
    pub(super) guard: crate::plan::Guard,
}

/// How one step went in this invocation.
pub(super) struct StepRun {
    pub(super) outcome: Outcome,
    pub(super) ms: u64,
    pub(super) state: StepState,
    /// What an earlier invocation recorded, when it did the step.
    pub(super) previous: Option<StepOutput>,
    /// The outcome still to write in the ledger, when this invocation ran the step. Written
    /// alongside the next phase's first calls, which read what came before from [`Progress`],
    /// not from the ledger: the notice goes out a round trip or two sooner. The last (the
    /// notice's) is written with the response's end, in one transaction with the lock let go
    /// and the audit record ([`Ledger::close`]).
    pub(super) unrecorded: Option<Finish>,
}

impl StepRun {
    pub(super) fn skipped(reason: String) -> StepRun {
        StepRun {
            outcome: Outcome::skipped(reason),
            ms: 0,
            state: StepState::Skipped,
            previous: None,
            unrecorded: None,
        }
    }

    pub(super) fn failed(error: &StepError) -> StepRun {
        StepRun {
            outcome: failed(error, None),
            ms: 0,
            state: StepState::Failed,
            previous: None,
            unrecorded: None,
        }
    }
}

/// What happened to each step so far.
#[derive(Default)]
pub(super) struct Progress {
    outcomes: BTreeMap<ActionName, Outcome>,
    durations: BTreeMap<ActionName, u64>,
    pub(super) states: BTreeMap<ActionName, StepState>,
    pub(super) earlier: Earlier,
    containment_ms: Option<u64>,
    exempt_on: Option<String>,
    /// Containment held back by the blast-radius guard or the breaker, and why.
    withheld: Option<(crate::report::Withheld, bool)>,
    /// This invocation took a slot of the task's service (given back if nothing was contained).
    took_service_slot: bool,
    /// Outcomes of steps run here, still to write in the ledger.
    unrecorded: Vec<Finish>,
}

impl Progress {
    fn absorb(&mut self, action: ActionName, run: StepRun) {
        let StepRun {
            outcome,
            ms,
            state,
            previous,
            unrecorded,
        } = run;
        self.unrecorded.extend(unrecorded);
        match action {
            ActionName::Isolate => match (&outcome, previous) {
                (Outcome::Done { detail, .. }, _) => {
                    self.earlier.instance_cut = cuts_instance(Some(detail));
                    self.earlier.containment = containment(detail)
                }
                // Done by an earlier invocation: later steps still need what it changed.
                (Outcome::Skipped { .. }, Some(previous)) => {
                    self.earlier.instance_cut = cuts_instance(Some(&previous));
                    self.earlier.containment = containment(&previous)
                }
                (Outcome::Failed { partial, .. }, _) => {
                    self.earlier.instance_cut = cuts_instance(partial.as_ref());
                    self.earlier.isolate_failed = true
                }
                (Outcome::Skipped { .. }, None) => {}
            },
            // Done now, or done before (a replay): either way the evidence exists.
            ActionName::Evidence => {
                self.earlier.evidence_done =
                    matches!(outcome, Outcome::Done { .. }) || previous.is_some()
            }
            _ => {}
        }
        if action != ActionName::Notify {
            self.states.insert(action, state);
        }
        self.durations.insert(action, ms);
        self.outcomes.insert(action, outcome);
    }

    fn fail_all(&mut self, steps: &[Step], outcome: &Outcome) {
        for step in steps {
            self.outcomes.insert(step.action, outcome.clone());
        }
    }

    fn write(&self, report: &mut Report, steps: &[Step]) {
        report.steps = steps
            .iter()
            .map(|step| {
                let mut out = StepReport::from(step);
                out.outcome = self.outcomes.get(&step.action).cloned();
                out.duration_ms = self.durations.get(&step.action).copied();
                out
            })
            .collect();
        if let Some(exempt) = &self.exempt_on {
            if !report.notes.iter().any(|n| n == exempt) {
                report.notes.push(exempt.clone());
            }
        }
    }
}

fn containment(output: &StepOutput) -> Option<crate::actions::isolate::ContainmentRecord> {
    match output {
        StepOutput::Isolate(isolated) => isolated.contained().cloned(),
        _ => None,
    }
}

/// What carrying out a plan leaves for the invocation's result.
#[derive(Debug, Default)]
pub(super) struct CarriedOut {
    /// From receipt to containment, when the workload was contained now.
    pub(super) containment_ms: Option<u64>,
    /// Another invocation holds the response or a step with a live claim: if it dies, only a
    /// retry of this event finishes the work.
    pub(super) held_elsewhere: bool,
    /// This invocation holds the finding's response lock: the caller lets it go.
    pub(super) holds_lock: bool,
    /// Outcomes the caller writes with the lock let go and the audit record.
    pub(super) finishes: Vec<Finish>,
}

impl Invocation<'_> {
    /// Carry out the plan and write every step's outcome into the report.
    pub(super) async fn carry_out(&self, plan: &ActPlan, report: &mut Report) -> CarriedOut {
        let mut progress = Progress::default();
        let needs_ledger = plan.steps.iter().any(|s| s.mode != Mode::DryRun);
        let ledger = match (self.ledger, needs_ledger) {
            (_, false) => None,
            (Some(ledger), true) => Some(ledger),
            (None, true) => {
                let error = StepError::MissingConfig(
                    ENV_TABLE,
                    "the ledger table that makes retries safe; nothing is done without it",
                );
                progress.fail_all(&plan.steps, &failed(&error, None));
                progress.write(report, &plan.steps);
                return CarriedOut::default();
            }
        };
        // Containment's reads (the task, its interface, its VPC) run alongside everything
        // the ledger must say first, which they do not depend on: the response lock, then the
        // guard and the step's claim. Only reads, so a response that stands back changed
        // nothing.
        let (mut prefetched_tx, prefetched) = tokio::sync::oneshot::channel();
        // An instance's swaps, known from its first reads, ride on isolate's claim.
        let (intents_tx, intents_before_claim) = tokio::sync::oneshot::channel();
        let prefetch = async {
            let clients = &self.clients;
            let settled = clients.stable.isolation_settled(&self.incident.finding_id);
            let read = async {
                let tell = intents_tx;
                match (
                    enforced_isolate(plan).filter(|_| !settled),
                    &self.incident.target,
                ) {
                    (Some(params), Target::EcsTask(task)) => {
                        drop(tell);
                        let bounds = crate::actions::drain::Bounds {
                            blast_radius: &self.guard.blast_radius,
                            exempt_tag: &self.responder.playbooks.guardrails.exempt_tag,
                        };
                        Some(
                            isolate::prefetch(clients, task, params, &self.incident.region, bounds)
                                .await,
                        )
                    }
                    (Some(params), Target::Ec2Instance(instance)) => Some(
                        isolate::prefetch_instance(
                            clients,
                            instance,
                            params,
                            &self.incident.region,
                            Some(tell),
                        )
                        .await,
                    ),
                    _ => None,
                }
            };
            // Stopped as soon as nobody is listening: the response stood back, or found the
            // step done or held back.
            let read = tokio::select! {
                read = read => read,
                () = prefetched_tx.closed() => None,
            };
            match read {
                Some(read) => {
                    let _ = prefetched_tx.send(read);
                }
                None => drop(prefetched_tx),
            }
            std::future::pending::<CarriedOut>().await
        };
        let work = async {
            // One invocation responds to a finding at a time; a concurrent delivery stands
            // back. The service (exemption tag, guard numbers) is read alongside the lock.
            let finding_id = &self.incident.finding_id;
            // Containment waiting for approval reads the exemption too: an exempt service's
            // containment is never put to a person.
            let contains = plan.steps.iter().any(|s| {
                s.action.is_containment() && matches!(s.mode, Mode::Enforce | Mode::Approve)
            });
            let (lock, service) = tokio::join!(
                async {
                    match ledger {
                        Some(ledger) => Some(ledger.claim(finding_id, "lock", &plan.rule).await),
                        None => None,
                    }
                },
                async {
                    if contains {
                        Some(self.service_exemption().await)
                    } else {
                        None
                    }
                }
            );
            match lock {
                None | Some(Ok(Claim::Acquired { .. })) => {}
                Some(Ok(Claim::Taken(holder))) => {
                    let reason = format!(
                        "another invocation ({}) is responding to this finding right now",
                        holder.owner
                    );
                    progress.fail_all(&plan.steps, &Outcome::skipped(reason));
                    progress.write(report, &plan.steps);
                    return CarriedOut {
                        held_elsewhere: true,
                        ..CarriedOut::default()
                    };
                }
                Some(Err(error)) => {
                    progress.fail_all(&plan.steps, &failed(&error, None));
                    progress.write(report, &plan.steps);
                    return CarriedOut::default();
                }
            }
            self.phases(
                plan,
                report,
                &mut progress,
                service,
                prefetched,
                intents_before_claim,
            )
            .await;
            CarriedOut {
                // Released by the caller, alongside the audit record.
                holds_lock: ledger.is_some(),
                containment_ms: progress.containment_ms,
                held_elsewhere: progress
                    .states
                    .values()
                    .any(|s| *s == StepState::InProgressElsewhere),
                finishes: std::mem::take(&mut progress.unrecorded),
            }
        };
        // The prefetch never ends on its own: the response decides when it is over.
        tokio::select! {
            carried = work => carried,
            carried = prefetch => carried,
        }
    }

    async fn phases(
        &self,
        plan: &ActPlan,
        report: &mut Report,
        progress: &mut Progress,
        service: Option<ServiceRead>,
        prefetched: tokio::sync::oneshot::Receiver<isolate::Prefetched>,
        intents_before_claim: tokio::sync::oneshot::Receiver<Vec<Value>>,
    ) {
        let in_phase = |phase: Phase| plan.steps.iter().filter(move |s| s.action.phase() == phase);

        // 1. Contain. The service-tag exemption was read with the lock (only when containment
        // will run). Then the guard and the breaker, in the ledger, before any change, and
        // alongside them the containment steps' claims: a claim the guard then refuses is
        // given back as it was.
        // The preserve phase's steps (in enforce mode, not containment) are claimed once the
        // containment claims are answered, while containment goes on: when it is over they
        // start with their reads, a round trip sooner, and the containment path waits for
        // nothing more.
        let (claims_answered, containment_claimed) = tokio::sync::oneshot::channel::<()>();
        let preserve_claims = async {
            if containment_claimed.await.is_err() {
                return BTreeMap::new();
            }
            futures::future::join_all(
                in_phase(Phase::Preserve)
                    .filter(|s| s.mode == Mode::Enforce && !s.action.is_containment())
                    .filter_map(|step| Some((step, self.ledger?)))
                    .map(|(step, ledger)| async move {
                        let key = format!("step#{}", step.action.name());
                        let claim = ledger
                            .claim(&self.incident.finding_id, &key, &step.rule)
                            .await;
                        (step.action, claim)
                    }),
            )
            .await
            .into_iter()
            .collect::<BTreeMap<_, _>>()
        };
        let contain = async {
            let mut early_claims = BTreeMap::new();
            if let Some(service) = service {
                let unknown;
                (progress.exempt_on, progress.earlier.service, unknown) = service;
                let enforces = plan
                    .steps
                    .iter()
                    .any(|s| s.action.is_containment() && s.mode == Mode::Enforce);
                if progress.exempt_on.is_none() && enforces {
                    let mut intents_before_claim = Some(intents_before_claim);
                    let claims = futures::future::join_all(
                        in_phase(Phase::Contain)
                            .filter(|s| s.mode == Mode::Enforce)
                            .filter_map(|step| Some((step, self.ledger?)))
                            .map(|(step, ledger)| {
                                let intents = intents_before_claim
                                    .take_if(|_| step.action == ActionName::Isolate);
                                async move {
                                    // Sent after the first round trip's reads, or dropped.
                                    let intents = match intents {
                                        Some(intents) => intents.await.unwrap_or_default(),
                                        None => Vec::new(),
                                    };
                                    let key = format!("step#{}", step.action.name());
                                    let claim = ledger
                                        .claim_with(
                                            &self.incident.finding_id,
                                            &key,
                                            &step.rule,
                                            &intents,
                                        )
                                        .await;
                                    (step.action, claim)
                                }
                            }),
                    );
                    let ((), claims) = tokio::join!(self.guard(plan, progress, unknown), claims);
                    early_claims.extend(claims);
                    // The next phase's steps are claimed now, while containment goes on.
                    let _ = claims_answered.send(());
                }
                if let Some((withheld, _)) = &progress.withheld {
                    report.notes.insert(0, withheld.loud());
                    report.withheld = Some(withheld.clone());
                }
            }
            let mut prefetched = Some(prefetched);
            for step in in_phase(Phase::Contain) {
                // A later containment step may read an earlier one's record (drain-instance reads
                // isolate's): written first.
                self.record(std::mem::take(&mut progress.unrecorded)).await;
                let run = match early_claims.remove(&step.action) {
                    Some(claim) => {
                        // Read by now, or nearly: it started with the response. Waited for only
                        // when the step will run; otherwise the reads are stopped.
                        let runs = matches!(claim, Ok(Claim::Acquired { .. }))
                            && progress.withheld.is_none();
                        let read = match (step.action, prefetched.take()) {
                            (ActionName::Isolate, Some(receiver)) if runs => receiver.await.ok(),
                            (ActionName::Isolate, Some(receiver)) => {
                                drop(receiver);
                                None
                            }
                            (_, receiver) => {
                                prefetched = receiver;
                                None
                            }
                        };
                        self.run_claimed(step, claim, progress, report, read.as_ref())
                            .await
                    }
                    None => self.run_step(step, progress, report).await,
                };
                let contained_now = step.action == ActionName::Isolate
                    && matches!(&run.outcome, Outcome::Done { detail: StepOutput::Isolate(o), .. } if o.contained().is_some());
                if contained_now {
                    progress.containment_ms = Some(self.started.elapsed().as_millis() as u64);
                }
                progress.absorb(step.action, run);
            }
            // Not needed any more: a read still under way stops.
            drop(prefetched);
            if matches!(
                progress.states.get(&ActionName::Isolate),
                Some(StepState::Done | StepState::Released)
            ) {
                self.clients
                    .stable
                    .settle_isolation(&self.incident.finding_id);
            }
        };
        let ((), mut early_preserve_claims) = tokio::join!(contain, preserve_claims);

        // 2. Preserve, concurrently: each step's outcome is independent of the others'. What
        // ECS's scheduler will do next is read alongside, for the notification.
        let (runs, outlook, ()) = {
            let contained = std::mem::take(&mut progress.unrecorded);
            let view: &Progress = progress;
            let report: &Report = report;
            let steps: Vec<_> = in_phase(Phase::Preserve)
                .map(|step| (step, early_preserve_claims.remove(&step.action)))
                .collect();
            tokio::join!(
                futures::future::join_all(steps.into_iter().map(|(step, claim)| async move {
                    let run = match claim {
                        Some(claim) => self.run_preclaimed(step, claim, view, report).await,
                        None => self.run_step(step, view, report).await,
                    };
                    (step.action, run)
                })),
                self.ecs_outlook(view),
                self.record(contained)
            )
        };
        for (action, run) in runs {
            progress.absorb(action, run);
        }
        if let Some(outlook) = outlook {
            let forecast = match &outlook {
                Ok(outlook) => format!("ECS next: {}", outlook.forecast),
                Err(error) => format!("ECS next: not known ({error}); a service task that fails its health checks is replaced from the same task definition"),
            };
            // The plan's general note gives way to the service's own numbers.
            report
                .notes
                .retain(|n| !n.starts_with(crate::plan::ECS_NOTE));
            report.notes.push(forecast);
            report.ecs_outlook = outlook.ok();
        }

        // 3. Stop: planned, or the isolate fallback when isolation failed.
        let mut steps = plan.steps.clone();
        let stop_step = plan
            .steps
            .iter()
            .find(|s| s.action == ActionName::Stop)
            .cloned()
            .or_else(|| fallback_stop(plan).filter(|_| progress.earlier.isolate_failed));
        if let Some(stop_step) = stop_step {
            if !steps.iter().any(|s| s.action == ActionName::Stop) {
                let at = steps
                    .iter()
                    .position(|s| s.action == ActionName::Notify)
                    .unwrap_or(steps.len());
                steps.insert(at, stop_step.clone());
            }
            let preserved = std::mem::take(&mut progress.unrecorded);
            let (run, ()) = tokio::join!(
                self.run_step(&stop_step, progress, report),
                self.record(preserved)
            );
            progress.absorb(ActionName::Stop, run);
        }
        // Then the rest of the phase (scale-service): after the task is stopped, if it is.
        for step in in_phase(Phase::Stop).filter(|s| s.action != ActionName::Stop) {
            let before = std::mem::take(&mut progress.unrecorded);
            let (run, ()) =
                tokio::join!(self.run_step(step, progress, report), self.record(before));
            progress.absorb(step.action, run);
        }

        // A slot taken for a containment that did not happen (the task gone, isolation failed
        // with nothing in place, no stop) is given back; the STOPPED event gives back the rest.
        if progress.took_service_slot
            && progress.earlier.containment.is_none()
            && progress.states.get(&ActionName::Isolate) != Some(&StepState::InProgressElsewhere)
            && !matches!(
                progress.outcomes.get(&ActionName::Isolate),
                Some(Outcome::Failed {
                    partial: Some(_),
                    ..
                })
            )
            && progress.states.get(&ActionName::Stop) != Some(&StepState::Done)
        {
            if let (Target::EcsTask(task), Some(ledger)) = (&self.incident.target, self.ledger) {
                if let Err(error) = ledger.leave_service(&task.task_arn).await {
                    tracing::warn!(error = %error, "blast-radius slot not given back; release or the task's STOPPED event will");
                }
            }
        }

        // Containment in `approve` mode waits for a person: written down (once per finding)
        // before the notice, which says what approval will do and until when.
        self.ask_for_approval(plan, progress, report).await;

        // 4. Notify, last, with everything above in the message.
        if let Some(notify_step) = in_phase(Phase::Notify).next() {
            progress.write(report, &steps);
            let before = std::mem::take(&mut progress.unrecorded);
            let (run, ()) = tokio::join!(
                self.notify(notify_step, progress, report),
                self.record(before)
            );
            progress.absorb(ActionName::Notify, run);
        }
        progress.write(report, &steps);
    }

    /// Is the task's service tagged exempt? (Service tags are not in findings.) Also returns
    /// the service, for what ECS will do next and for the guard, or why it is not known.
    async fn service_exemption(&self) -> ServiceRead {
        let Target::EcsTask(task) = &self.incident.target else {
            return (None, None, None);
        };
        let tag = &self.responder.playbooks.guardrails.exempt_tag;
        match workload::describe_service(self.clients, task).await {
            Ok(service) => {
                let exempt = service
                    .as_ref()
                    .filter(|s| s.tags.iter().any(|(k, v)| tag.matches(Some(k), Some(v))))
                    .map(|_| {
                        format!(
                            "exempt: tag {tag} on service {}; containment skipped",
                            task.service.as_deref().unwrap_or("?")
                        )
                    });
                (exempt, service, None)
            }
            Err(error) => {
                // The guard cannot count the service's tasks either: it holds containment back
                // and asks for a retry.
                tracing::warn!(error = %error, "service unknown; exemption not checked");
                (None, None, Some(error))
            }
        }
    }

    /// The breaker, then (for a service's task) the blast-radius guard: each a conditional
    /// write in the ledger, so concurrent invocations agree. Sets `progress.withheld` when
    /// containment must not go ahead.
    async fn guard(&self, plan: &ActPlan, progress: &mut Progress, unknown: Option<StepError>) {
        use crate::actions::guard::Admission;
        use crate::report::{Withheld, WithheldBy};
        let Some(ledger) = self.ledger else {
            return;
        };
        let guard = plan.guard;
        let now = chrono::Utc::now().timestamp();
        let (window, window_ends) = crate::plan::guard::breaker_window(&guard.breaker, now);
        let service_task = match &self.incident.target {
            Target::EcsTask(task) => task.service.as_ref().map(|service| (task, service)),
            _ => None,
        };
        let breaker = ledger.admit_to_breaker(
            window,
            window_ends,
            &self.incident.finding_id,
            guard.breaker.max_containments,
        );
        let service_admission = async {
            let (task, service) = service_task?;
            if let Some(error) = &unknown {
                return Some(Err((Withheld {
                    by: WithheldBy::BlastRadius,
                    reason: format!(
                        "the blast-radius guard cannot count service {service}'s tasks ({error}); containment is held back and the event retried"
                    ),
                }, true)));
            }
            // ECS does not know the service (deleted): there is nothing to keep running.
            let facts = progress.earlier.service.as_ref()?;
            let desired = u32::try_from(facts.service.desired_count().max(0)).unwrap_or(0);
            let running = u32::try_from(facts.service.running_count().max(0)).unwrap_or(0);
            let (cap, why) = crate::plan::guard::service_cap(&guard.blast_radius, desired, running);
            Some(match ledger.admit_to_service(&task.task_arn, service, cap).await {
                // Taken now, or held already (a redelivery, or another finding's cut of a
                // shared instance): only a slot taken now is this response's to give back.
                Ok(Admission::Admitted { newly, .. }) => Ok(newly),
                Ok(Admission::Full { holders }) => Err((Withheld {
                    by: WithheldBy::BlastRadius,
                    reason: format!(
                        "service {service}: {why}, and {} contained already{}: this task is not contained, so the service keeps serving",
                        holders.len(),
                        if holders.is_empty() { String::new() } else { format!(" ({})", holders.join(", ")) }
                    ),
                }, false)),
                Err(error) => Err((Withheld {
                    by: WithheldBy::BlastRadius,
                    reason: format!("the blast-radius guard could not be consulted ({error}); containment is held back and the event retried"),
                }, true)),
            })
        };
        let (breaker, service) = tokio::join!(breaker, service_admission);
        let counted_now = matches!(breaker, Ok(Admission::Admitted { newly: true, .. }));
        let breaker = match breaker {
            Ok(Admission::Admitted { .. }) => None,
            Ok(Admission::Full { holders }) => Some((Withheld {
                by: WithheldBy::Breaker,
                reason: format!(
                    "BREAKER OPEN: {} findings were admitted for containment in this {}-minute window (limit {}); until it ends the responder preserves evidence and notifies, and contains nothing",
                    holders.len(),
                    guard.breaker.window_minutes,
                    guard.breaker.max_containments
                ),
            }, false)),
            Err(error) => Some((Withheld {
                by: WithheldBy::Breaker,
                reason: format!("the breaker could not be consulted ({error}); containment is held back and the event retried"),
            }, true)),
        };
        progress.took_service_slot = matches!(service, Some(Ok(true)));
        let withheld = breaker.or_else(|| service.and_then(Result::err));
        if let Some((withheld, retry)) = withheld {
            // What was taken for a containment that will not happen is given back: the
            // service's slot, and the breaker's count when this invocation added it.
            if progress.took_service_slot {
                progress.took_service_slot = false;
                if let Some((task, _)) = service_task {
                    if let Err(leave_error) = ledger.leave_service(&task.task_arn).await {
                        tracing::warn!(error = %leave_error, "blast-radius slot not given back");
                    }
                }
            }
            if counted_now && withheld.by == WithheldBy::BlastRadius {
                if let Err(leave_error) = ledger
                    .leave_breaker(window, &self.incident.finding_id)
                    .await
                {
                    tracing::warn!(error = %leave_error, "breaker count not taken back");
                }
            }
            // A guard that could not be consulted is a reason to retry, not to give up.
            progress.withheld = Some((withheld, retry));
        }
    }

    /// What ECS's scheduler will do with a service task this response contained: only when
    /// containment ran here and the task has a service.
    async fn ecs_outlook(
        &self,
        progress: &Progress,
    ) -> Option<Result<crate::actions::scheduler::EcsOutlook, StepError>> {
        let Target::EcsTask(task) = &self.incident.target else {
            return None;
        };
        // Only a task in quarantine has health checks to fail (not one already gone).
        let service = progress
            .earlier
            .service
            .as_ref()
            .filter(|_| progress.exempt_on.is_none())
            // A task contained through its shared container instance: the ECS agent there is
            // cut off too, and what the scheduler does next is not this outlook's.
            .filter(|_| {
                progress
                    .earlier
                    .containment
                    .as_ref()
                    .is_some_and(|c| c.shared_by_task.is_none())
            })?;
        Some(crate::actions::scheduler::outlook(self.clients, task, &service.service).await)
    }

    /// The context a step's `run` sees.
    pub(super) fn context<'a>(
        &'a self,
        step: &'a Step,
        ledger: &'a Ledger,
        written_down: &'a [Value],
        earlier: &'a Earlier,
        report: &'a Report,
        prefetched: Option<&'a isolate::Prefetched>,
    ) -> StepContext<'a> {
        StepContext {
            clients: self.clients,
            config: &self.responder.config,
            incident: self.incident,
            raw_finding: self.raw,
            rule: &step.rule,
            ledger,
            written_down,
            earlier,
            report,
            prefetched,
            bounds: crate::actions::drain::Bounds {
                blast_radius: &self.guard.blast_radius,
                exempt_tag: &self.responder.playbooks.guardrails.exempt_tag,
            },
        }
    }

    /// Record the approval a plan's deferred containment waits for, and say so in the report.
    async fn ask_for_approval(&self, plan: &ActPlan, progress: &Progress, report: &mut Report) {
        use crate::actions::approval::ApprovalStatus;
        let waiting: Vec<&Step> = plan
            .steps
            .iter()
            .filter(|s| s.mode == Mode::Approve && s.action.is_containment())
            .collect();
        let Some(first) = waiting.first() else {
            return;
        };
        // Exempt: nothing to approve (the exemption is in the report already).
        if progress.exempt_on.is_some() {
            return;
        }
        let now = chrono::Utc::now();
        let id = &self.incident.finding_id;
        // Asked before: say where it stands, do not ask again.
        if let Some(approval) = &self.approval {
            let note = match approval.status {
                ApprovalStatus::Pending if approval.expired(now) => format!(
                    "the approval expired at {}: containment not done",
                    approval.expires_at
                ),
                ApprovalStatus::Pending => format!(
                    "APPROVAL NEEDED until {}: `responder approve {id}` will {}; `responder reject {id}` discards it",
                    approval.expires_at,
                    approval.steps.join("; ")
                ),
                status => format!(
                    "containment {} by {} at {}",
                    status.name(),
                    approval.decided_by.as_deref().unwrap_or("?"),
                    approval.decided_at.as_deref().unwrap_or("?")
                ),
            };
            report.notes.insert(0, note);
            return;
        }
        let Some(ledger) = self.ledger else {
            report.notes.push(format!(
                "containment waits for approval, but {ENV_TABLE} is not set: it cannot be recorded, and will not happen"
            ));
            return;
        };
        let steps = waiting
            .iter()
            .map(|s| format!("{}: {}", s.action.name(), s.reason))
            .collect();
        let asked = crate::actions::approval::request(
            ledger,
            id,
            &first.rule,
            steps,
            self.responder.playbooks.guardrails.approval_expiry_minutes,
            self.event,
        )
        .await;
        report.notes.insert(0, match asked {
            Ok(approval) if approval.status == ApprovalStatus::Pending => format!(
                "APPROVAL NEEDED until {}: `responder approve {id}` will {}; `responder reject {id}` discards it",
                approval.expires_at,
                approval.steps.join("; ")
            ),
            Ok(approval) => format!(
                "containment {} by {} at {}",
                approval.status.name(),
                approval.decided_by.as_deref().unwrap_or("?"),
                approval.decided_at.as_deref().unwrap_or("?")
            ),
            Err(error) => format!("containment waits for approval, but the request was not recorded ({error}): it will not happen unless this event is delivered again"),
        });
    }

    /// Claim, run and record one step (every phase but notify).
    async fn run_step(&self, step: &Step, progress: &Progress, report: &Report) -> StepRun {
        let started = Instant::now();
        match step.mode {
            Mode::DryRun => return StepRun::skipped("dry-run: not carried out".to_string()),
            Mode::NotifyOnly => {
                return StepRun::skipped("notify-only mode: not carried out".to_string())
            }
            Mode::Approve if step.action.is_containment() => {
                use crate::actions::approval::ApprovalStatus;
                if let Some(exempt) = &progress.exempt_on {
                    return StepRun::skipped(exempt.clone());
                }
                let closed = self.approval.as_ref().and_then(|a| match a.status {
                    ApprovalStatus::Pending if a.expired(chrono::Utc::now()) => Some(format!(
                        "the approval expired at {}: not done",
                        a.expires_at
                    )),
                    ApprovalStatus::Pending | ApprovalStatus::Approved => None,
                    status => Some(format!(
                        "containment {} by {} at {}: not done",
                        status.name(),
                        a.decided_by.as_deref().unwrap_or("?"),
                        a.decided_at.as_deref().unwrap_or("?")
                    )),
                });
                return StepRun::skipped(closed.unwrap_or_else(|| {
                    format!(
                        "{}: `responder approve {}` carries it out",
                        crate::report::AWAITING_APPROVAL,
                        self.incident.finding_id
                    )
                }));
            }
            Mode::Approve | Mode::Enforce => {}
        }
        if step.action.is_containment() {
            if let Some(exempt) = &progress.exempt_on {
                return StepRun::skipped(exempt.clone());
            }
            if progress.withheld.is_some() {
                // Held back now, but done before (a republished finding in a later window):
                // what is in force is reported as such, not as "not contained".
                if let Some(ledger) = self.ledger {
                    let key = format!("step#{}", step.action.name());
                    if let Ok(Some(record)) = ledger.get_step(&self.incident.finding_id, &key).await
                    {
                        if matches!(record.status, StepStatus::Done | StepStatus::Claimed) {
                            return already_recorded(step.action, record, started);
                        }
                    }
                }
            }
            match &progress.withheld {
                Some((withheld, true)) => {
                    return StepRun::failed(&StepError::Aws {
                        operation: "the blast-radius guard",
                        code: "Unavailable".to_string(),
                        message: withheld.reason.clone(),
                        retryable: true,
                    })
                }
                Some((withheld, false)) => return StepRun::skipped(withheld.reason.clone()),
                None => {}
            }
        }
        if let Some(reason) = step.spec.withheld(&progress.earlier) {
            return StepRun::skipped(reason);
        }
        let Some(ledger) = self.ledger else {
            return StepRun::failed(&StepError::MissingConfig(ENV_TABLE, "the ledger table"));
        };
        let key = format!("step#{}", step.action.name());
        let claim = ledger
            .claim(&self.incident.finding_id, &key, &step.rule)
            .await;
        self.execute(step, claim, ledger, progress, report, None, started)
            .await
    }

    /// A containment step whose claim was taken alongside the guard: run it, or give the claim
    /// back as it was when the guard (or the step's own condition) says no.
    async fn run_claimed(
        &self,
        step: &Step,
        claim: Result<Claim, StepError>,
        progress: &Progress,
        report: &Report,
        prefetched: Option<&isolate::Prefetched>,
    ) -> StepRun {
        let started = Instant::now();
        let Some(ledger) = self.ledger else {
            return StepRun::failed(&StepError::MissingConfig(ENV_TABLE, "the ledger table"));
        };
        let refusal = match &progress.withheld {
            Some((withheld, true)) => Some(StepRun::failed(&StepError::Aws {
                operation: "the blast-radius guard",
                code: "Unavailable".to_string(),
                message: withheld.reason.clone(),
                retryable: true,
            })),
            Some((withheld, false)) => Some(StepRun::skipped(withheld.reason.clone())),
            None => step.spec.withheld(&progress.earlier).map(StepRun::skipped),
        };
        match (claim, refusal) {
            // The guard's reason is the one to report, not the ledger's.
            (Err(_), Some(refusal)) => refusal,
            (Ok(Claim::Acquired { previous, .. }), Some(refusal)) => {
                self.give_back(step, previous).await;
                refusal
            }
            (claim, _) => {
                self.execute(step, claim, ledger, progress, report, prefetched, started)
                    .await
            }
        }
    }

    /// A step of a later phase claimed alongside the containment claims (not a containment
    /// step, in `enforce` mode): run it, or give the claim back when what came before
    /// withholds it.
    async fn run_preclaimed(
        &self,
        step: &Step,
        claim: Result<Claim, StepError>,
        progress: &Progress,
        report: &Report,
    ) -> StepRun {
        let started = Instant::now();
        let Some(ledger) = self.ledger else {
            return StepRun::failed(&StepError::MissingConfig(ENV_TABLE, "the ledger table"));
        };
        if let Some(reason) = step.spec.withheld(&progress.earlier) {
            if let Ok(Claim::Acquired { previous, .. }) = claim {
                self.give_back(step, previous).await;
            }
            return StepRun::skipped(reason);
        }
        self.execute(step, claim, ledger, progress, report, None, started)
            .await
    }

    /// Give back a claim this invocation will not use, as the item was.
    async fn give_back(&self, step: &Step, previous: crate::actions::ledger::Previous) {
        let Some(ledger) = self.ledger else {
            return;
        };
        let key = format!("step#{}", step.action.name());
        if let Err(error) = ledger
            .give_back(&self.incident.finding_id, &key, previous)
            .await
        {
            // Held until the lease runs out; a later delivery then claims it.
            tracing::warn!(step = step.action.name(), error = %error, "unused claim not given back");
        }
    }

    /// Write in the ledger how steps run here ended, all at once (one transaction).
    async fn record(&self, unrecorded: Vec<Finish>) {
        let Some(ledger) = self.ledger else {
            return;
        };
        ledger.finish_all(&unrecorded).await;
    }

    /// Run a step given its claim; how it ended is written in the ledger by [`Self::record`].
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        step: &Step,
        claim: Result<Claim, StepError>,
        ledger: &Ledger,
        progress: &Progress,
        report: &Report,
        prefetched: Option<&isolate::Prefetched>,
        started: Instant,
    ) -> StepRun {
        let finding_id = &self.incident.finding_id;
        let key = format!("step#{}", step.action.name());
        let written_down = match claim {
            Err(error) => return StepRun::failed(&error),
            // Held back now, but done before (a republished finding in a later window): what
            // is in force is reported as such, not as "not contained".
            Ok(Claim::Taken(record)) => return already_recorded(step.action, record, started),
            Ok(Claim::Acquired { written_down, .. }) => written_down,
        };
        let ctx = self.context(
            step,
            ledger,
            &written_down,
            &progress.earlier,
            report,
            prefetched,
        );
        let (status, outcome, stored) = match run_action(&step.spec, &ctx).await {
            Ok(output) => {
                let stored = serde_json::to_value(&output).unwrap_or_default();
                (StepStatus::Done, Outcome::done(output), stored)
            }
            // Partial changes (e.g. ACL entries) stay in the ledger so release can undo them.
            Err(failure) => {
                let stored =
                    json!({"error": failure.error.to_string(), "partial": failure.partial});
                (
                    StepStatus::Failed,
                    failed(&failure.error, failure.partial),
                    stored,
                )
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(finding_id = %finding_id, rule = %step.rule, step = step.action.name(), outcome = status.name(), duration_ms = ms, "step finished");
        StepRun {
            outcome,
            ms,
            state: StepState::of_record(status),
            previous: None,
            unrecorded: Some(Finish {
                finding_id: finding_id.clone(),
                step_key: key,
                status,
                detail: stored,
            }),
        }
    }
}

/// The enforced isolate step's parameters, if the plan has one.
fn enforced_isolate(plan: &ActPlan) -> Option<&crate::actions::isolate::IsolateParams> {
    plan.steps.iter().find_map(|s| match &s.spec {
        ActionSpec::Isolate(params) if s.mode == Mode::Enforce => Some(params),
        _ => None,
    })
}

/// The task's service as read for the exemption and the guard: the exemption note, the
/// service, and why it is not known.
type ServiceRead = (
    Option<String>,
    Option<workload::ServiceFacts>,
    Option<StepError>,
);

/// The isolate fallback as a stop step, when the plan asks for one.
fn fallback_stop(plan: &ActPlan) -> Option<Step> {
    plan.steps.iter().find_map(|s| match &s.spec {
        ActionSpec::Isolate(p) if p.fallback == IsolateFallback::Stop => {
            let spec = ActionSpec::Stop(StopParams { force: false });
            Some(Step {
                action: ActionName::Stop,
                params: std::sync::Arc::new(spec.params_json()),
                rule: s.rule.clone(),
                mode: s.mode,
                reason: "fallback: isolation did not succeed, so the task is stopped once evidence is preserved".to_string(),
                spec,
            })
        }
        _ => None,
    })
}

/// The step belongs to an earlier (or concurrent) invocation: say so, and pass on what it did.
fn already_recorded(action: ActionName, record: StepRecord, started: Instant) -> StepRun {
    let previous = (record.status == StepStatus::Done)
        .then(|| output_from_ledger(action, &record.detail))
        .flatten();
    StepRun {
        outcome: Outcome::Skipped {
            reason: already_reason(&record),
            earlier: previous.clone(),
        },
        ms: started.elapsed().as_millis() as u64,
        state: StepState::of_record(record.status),
        previous,
        unrecorded: None,
    }
}

pub(super) fn already_reason(record: &StepRecord) -> String {
    match record.status {
        StepStatus::Claimed => format!(
            "in progress in another invocation ({}, claimed {})",
            record.owner, record.updated_at
        ),
        status => format!(
            "already {} by invocation {} at {}",
            status.name(),
            record.owner,
            record.updated_at
        ),
    }
}

pub(super) fn failed(error: &StepError, partial: Option<StepOutput>) -> Outcome {
    Outcome::Failed {
        error: error.to_string(),
        retryable: error.is_retryable(),
        partial,
    }
}

/// The isolate output recorded in a step item (done, or kept from a failure).
pub(super) fn recorded_isolation(detail: &Value) -> Option<IsolateOutput> {
    serde_json::from_value(detail.clone())
        .ok()
        .or_else(|| serde_json::from_value(detail.get("partial")?.clone()).ok())
}

/// Whether an isolate output cut off a shared container instance (done, or partly).
fn cuts_instance(output: Option<&StepOutput>) -> bool {
    matches!(output, Some(StepOutput::Isolate(o)) if o.record().is_some_and(|r| r.shared_by_task.is_some()))
}
