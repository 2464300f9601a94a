//! `respond`: the one entry point the Lambda and the CLI share. Parse and decide (pure), then
//! carry out the plan through the ledger and the action modules:
//!
//! 1. contain — `isolate` (the critical path: only the calls it needs come before it),
//! 2. preserve — `evidence`, `snapshot-volumes`, `tag`, `deregister`, concurrently,
//! 3. `stop` — only after evidence was preserved, unless the rule forces it,
//! 4. `notify` — last, even when earlier steps failed.
//!
//! Each step is claimed in the ledger first, so replays, republished findings and concurrent
//! deliveries never repeat a finished step. Failures are isolated per step; every event leaves
//! an audit record.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::actions::isolate::{self, ContainmentRecord, Isolated};
use crate::actions::ledger::{Claim, Ledger, StepRecord, StepStatus};
use crate::actions::{
    deregister, evidence, notify, release, snapshot, stop, tag, workload, Clients, Config,
    StepError, ENV_TABLE,
};
use crate::event::{parse_event, Inbound};
use crate::incident::{Incident, Target};
use crate::plan::{ActPlan, Decision, Step};
use crate::playbook::{Action, ActionName, IsolateFallback, Mode, PlaybookSet, StopParams};
use crate::report::{Execution, Outcome, Report, StepReport};

/// Everything a response needs, built once per Lambda container (or CLI run).
#[derive(Clone, Debug)]
pub struct Responder {
    pub clients: Clients,
    pub config: Config,
    pub playbooks: PlaybookSet,
}

/// A report and whether the caller should ask for a retry.
#[derive(Debug, Clone)]
pub struct Response {
    pub report: Report,
    pub retryable: bool,
}

/// What happened to each step so far, shared between phases.
#[derive(Default)]
struct Progress {
    outcomes: BTreeMap<ActionName, Outcome>,
    durations: BTreeMap<ActionName, u64>,
    /// Where each step stands after this invocation (`done`, `failed`, `skipped`,
    /// `in-progress` elsewhere, ...): the notification is keyed on it.
    state: BTreeMap<ActionName, &'static str>,
    containment: Option<ContainmentRecord>,
    containment_ms: Option<u64>,
    evidence_done: bool,
    isolate_failed: bool,
    exempt_on: Option<String>,
}

impl Responder {
    pub async fn from_env(
        playbooks: PlaybookSet,
    ) -> Result<Responder, crate::actions::ConfigError> {
        Ok(Responder {
            clients: Clients::from_env().await,
            config: Config::from_env()?,
            playbooks,
        })
    }

    fn ledger(&self, invocation_id: &str) -> Option<Ledger> {
        self.config.ledger_table.as_ref().map(|table| {
            Ledger::new(
                self.clients.dynamodb.clone(),
                table,
                invocation_id,
                self.config.audit_ttl_days,
            )
        })
    }

    /// Handle one received event end to end. `ceiling` caps every rule's mode on top of the
    /// deployment's `RESPONDER_MODE`.
    pub async fn respond(
        &self,
        input: Option<String>,
        bytes: &[u8],
        invocation_id: &str,
        ceiling: Option<Mode>,
    ) -> Response {
        let started = Instant::now();
        let started_at = Utc::now();
        let ceiling = [self.config.mode_ceiling, ceiling]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Mode::Enforce);
        let ledger = self.ledger(invocation_id);
        let mut execution = Execution {
            invocation_id: invocation_id.to_string(),
            started_at: started_at.to_rfc3339(),
            ..Execution::default()
        };

        let (mut report, finding_id) = match parse_event(bytes) {
            Err(error) => (Report::for_error(input, &error), None),
            Ok(inbound) => {
                let decision = crate::decide_inbound(&inbound, &self.playbooks, ceiling);
                let mut report = Report::for_decision(input, &inbound, &decision);
                match (&inbound, &decision) {
                    (Inbound::Finding { incident, raw }, Decision::Act(plan)) => {
                        let progress = self
                            .execute(incident, raw, plan, ledger.as_ref(), &mut report, started)
                            .await;
                        execution.containment_ms = progress.containment_ms;
                    }
                    (_, Decision::Release { task_arn, .. }) => {
                        if ceiling == Mode::DryRun {
                            report.notes.push("dry-run: nothing released".to_string());
                        } else {
                            match self.release_task(task_arn, ledger.as_ref(), true).await {
                                Ok(detail) => execution.release = Some(detail),
                                Err(error) => {
                                    execution.retryable |= error.is_retryable();
                                    report.error = Some(error.to_string());
                                }
                            }
                        }
                    }
                    _ => {}
                }
                let finding_id = report.finding_id.clone();
                (report, finding_id)
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
                let value = serde_json::to_value(&report).unwrap_or(Value::Null);
                match ledger
                    .put_audit(finding_id.as_deref(), &value, started_at)
                    .await
                {
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

    async fn execute(
        &self,
        incident: &Incident,
        raw: &Value,
        plan: &ActPlan,
        ledger: Option<&Ledger>,
        report: &mut Report,
        started: Instant,
    ) -> Progress {
        let mut progress = Progress::default();
        let needs_ledger = plan.steps.iter().any(|s| s.mode != Mode::DryRun);
        let ledger = match (ledger, needs_ledger) {
            (Some(ledger), _) => Some(ledger),
            (None, false) => None,
            (None, true) => {
                let error = StepError::MissingConfig(
                    ENV_TABLE,
                    "the ledger table that makes retries safe; nothing is done without it",
                );
                for step in &plan.steps {
                    progress.outcomes.insert(step.action, failed(&error));
                }
                write_outcomes(report, &plan.steps, &progress, None);
                return progress;
            }
        };
        // One invocation responds to a finding at a time; a concurrent delivery stands back.
        let mut locked = false;
        if let Some(ledger) = ledger.filter(|_| needs_ledger) {
            match ledger.claim(&incident.finding_id, "lock", &plan.rule).await {
                Ok(Claim::Acquired) => locked = true,
                Ok(Claim::Taken(holder)) => {
                    let reason = format!(
                        "another invocation ({}) is responding to this finding right now",
                        holder.owner
                    );
                    for step in &plan.steps {
                        progress.outcomes.insert(
                            step.action,
                            Outcome::Skipped {
                                reason: reason.clone(),
                            },
                        );
                    }
                    write_outcomes(report, &plan.steps, &progress, None);
                    return progress;
                }
                Err(error) => {
                    for step in &plan.steps {
                        progress.outcomes.insert(step.action, failed(&error));
                    }
                    write_outcomes(report, &plan.steps, &progress, None);
                    return progress;
                }
            }
        }
        self.execute_locked(incident, raw, plan, ledger, report, started, &mut progress)
            .await;
        if let (true, Some(ledger)) = (locked, ledger) {
            if let Err(error) = ledger.unclaim(&incident.finding_id, "lock").await {
                // The lease runs out on its own; a later delivery then proceeds.
                tracing::warn!(finding_id = %incident.finding_id, error = %error, "response lock not released");
            }
        }
        progress
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute_locked(
        &self,
        incident: &Incident,
        raw: &Value,
        plan: &ActPlan,
        ledger: Option<&Ledger>,
        report: &mut Report,
        started: Instant,
        progress: &mut Progress,
    ) {
        let fallback_stop = plan.steps.iter().find_map(|s| match &s.spec {
            Action::Isolate(p) if p.fallback == IsolateFallback::Stop => Some(s.clone()),
            _ => None,
        });

        // 1. Contain.
        // Only worth a call when containment will really run (not in dry-run or notify-only).
        if plan
            .steps
            .iter()
            .any(|s| s.action.is_containment() && s.mode == Mode::Enforce)
        {
            progress.exempt_on = self.service_exemption(incident).await;
        }
        for step in plan
            .steps
            .iter()
            .filter(|s| s.action.phase() == crate::playbook::Phase::Contain)
        {
            self.run(step, incident, raw, ledger, progress, started)
                .await;
        }
        // 2. Preserve, concurrently: each step's outcome is independent of the others'.
        let preserve: Vec<&Step> = plan
            .steps
            .iter()
            .filter(|s| s.action.phase() == crate::playbook::Phase::Preserve)
            .collect();
        let view = ProgressView::of(progress);
        let results = futures::future::join_all(preserve.iter().map(|step| {
            let view = &view;
            async move {
                (
                    step.action,
                    self.run_one(step, incident, raw, ledger, view).await,
                )
            }
        }))
        .await;
        for (action, run) in results {
            absorb(progress, action, run);
        }
        // 3. Stop (planned, or the isolate fallback).
        let stop_step = plan
            .steps
            .iter()
            .find(|s| s.action == ActionName::Stop)
            .cloned()
            .or_else(|| {
                fallback_stop.filter(|_| progress.isolate_failed).map(|isolate| Step {
                    action: ActionName::Stop,
                    params: json!({"force": false}),
                    rule: isolate.rule.clone(),
                    mode: isolate.mode,
                    reason: "fallback: isolation did not succeed, so the task is stopped once evidence is preserved".to_string(),
                    spec: Action::Stop(StopParams { force: false }),
                })
            });
        let mut steps = plan.steps.clone();
        if let Some(stop_step) = &stop_step {
            if !steps.iter().any(|s| s.action == ActionName::Stop) {
                let at = steps
                    .iter()
                    .position(|s| s.action == ActionName::Notify)
                    .unwrap_or(steps.len());
                steps.insert(at, stop_step.clone());
            }
            self.run(stop_step, incident, raw, ledger, progress, started)
                .await;
        }
        // 4. Notify, last, with everything above in the message.
        if let Some(notify_step) = plan.steps.iter().find(|s| s.action == ActionName::Notify) {
            write_outcomes(report, &steps, progress, progress.exempt_on.as_deref());
            let view = ProgressView::of(progress);
            let run = self
                .notify(notify_step, incident, ledger, &view, report)
                .await;
            absorb(progress, ActionName::Notify, run);
        }
        write_outcomes(report, &steps, progress, progress.exempt_on.as_deref());
    }

    /// Is the task's service tagged exempt? (Service tags are not in findings.)
    async fn service_exemption(&self, incident: &Incident) -> Option<String> {
        let Target::EcsTask(task) = &incident.target else {
            return None;
        };
        let tag = &self.playbooks.guardrails.exempt_tag;
        match workload::describe_service(&self.clients, task).await {
            Ok(service) => service
                .filter(|s| {
                    s.tags
                        .iter()
                        .any(|(k, v)| *k == tag.key && v.eq_ignore_ascii_case(&tag.value))
                })
                .map(|_| {
                    format!(
                        "exempt: tag {tag} on service {}; containment skipped",
                        task.service.as_deref().unwrap_or("?")
                    )
                }),
            Err(error) => {
                // Not knowing must not block containment of a live threat; say so.
                tracing::warn!(error = %error, "service tags unknown; exemption not checked");
                None
            }
        }
    }

    async fn run(
        &self,
        step: &Step,
        incident: &Incident,
        raw: &Value,
        ledger: Option<&Ledger>,
        progress: &mut Progress,
        started: Instant,
    ) {
        let view = ProgressView::of(progress);
        let run = self.run_one(step, incident, raw, ledger, &view).await;
        if step.action == ActionName::Isolate {
            let record_in = |detail: &Value| -> Option<ContainmentRecord> {
                serde_json::from_value(detail.get("record")?.clone()).ok()
            };
            match (&run.outcome, &run.previous) {
                (Outcome::Done { detail }, _) => {
                    progress.containment = record_in(detail);
                    if progress.containment.is_some() {
                        progress.containment_ms = Some(started.elapsed().as_millis() as u64);
                    }
                }
                // Done by an earlier invocation: later steps still need what it changed.
                (Outcome::Skipped { .. }, Some(previous)) => {
                    progress.containment = record_in(previous)
                }
                (Outcome::Failed { .. }, _) => progress.isolate_failed = true,
                (Outcome::Skipped { .. }, None) => {}
            }
        }
        absorb(progress, step.action, run);
    }

    /// Claim, run, record one step. Returns the outcome, its duration and, when this
    /// invocation carried it out, its status for the notification key.
    async fn run_one(
        &self,
        step: &Step,
        incident: &Incident,
        raw: &Value,
        ledger: Option<&Ledger>,
        progress: &ProgressView,
    ) -> StepRun {
        let started = Instant::now();
        let skipped = |reason: String| StepRun::skipped(reason);
        match step.mode {
            Mode::DryRun => return skipped("dry-run: not carried out".to_string()),
            Mode::NotifyOnly if step.action != ActionName::Notify => {
                return skipped("notify-only mode: not carried out".to_string())
            }
            _ => {}
        }
        if step.action.is_containment() {
            if let Some(exempt) = &progress.exempt_on {
                return skipped(exempt.clone());
            }
        }
        if step.action == ActionName::Stop {
            let force = matches!(step.spec, Action::Stop(StopParams { force: true }));
            if !force && !progress.evidence_done {
                return skipped("evidence was not preserved, so the task is not stopped (set `stop: {force: true}` to stop anyway)".to_string());
            }
        }
        let Some(ledger) = ledger else {
            return StepRun::failed(&StepError::MissingConfig(ENV_TABLE, "the ledger table"));
        };
        let key = format!("step#{}", step.action.name());
        match ledger.claim(&incident.finding_id, &key, &step.rule).await {
            Err(error) => return StepRun::failed(&error),
            Ok(Claim::Taken(record)) => {
                return StepRun {
                    outcome: already(&record),
                    ms: elapsed(started),
                    state: match record.status {
                        StepStatus::Claimed => "in-progress",
                        status => status.name(),
                    },
                    previous: (record.status == StepStatus::Done).then_some(record.detail),
                }
            }
            Ok(Claim::Acquired) => {}
        }
        let (status, outcome, stored) =
            match self.carry_out(step, incident, raw, ledger, progress).await {
                Ok(detail) => (
                    StepStatus::Done,
                    Outcome::Done {
                        detail: detail.clone(),
                    },
                    detail,
                ),
                // Partial changes (e.g. ACL entries) stay in the ledger so release can undo them.
                Err((error, partial)) => (
                    StepStatus::Failed,
                    failed(&error),
                    json!({"error": error.to_string(), "record": partial}),
                ),
            };
        if let Err(error) = ledger
            .finish(&incident.finding_id, &key, status, &stored)
            .await
        {
            tracing::error!(finding_id = %incident.finding_id, step = step.action.name(), error = %error, "step outcome not recorded");
        }
        let ms = elapsed(started);
        tracing::info!(finding_id = %incident.finding_id, rule = %step.rule, step = step.action.name(), outcome = status.name(), duration_ms = ms, "step finished");
        StepRun {
            outcome,
            ms,
            state: status.name(),
            previous: None,
        }
    }

    /// The action itself. On failure, optionally a record of partial changes to keep.
    async fn carry_out(
        &self,
        step: &Step,
        incident: &Incident,
        raw: &Value,
        ledger: &Ledger,
        progress: &ProgressView,
    ) -> Result<Value, (StepError, Option<Value>)> {
        let plain = |e: StepError| (e, None);
        let clients = &self.clients;
        match &step.spec {
            Action::Isolate(params) => {
                let result = match &incident.target {
                    Target::EcsTask(task) => {
                        let (index, isolated) = tokio::join!(
                            ledger.index_task(&task.task_arn, &incident.finding_id),
                            isolate::isolate_task(clients, task, params, &incident.region)
                        );
                        index.map_err(plain)?;
                        isolated
                    }
                    Target::Ec2Instance(instance) => {
                        isolate::isolate_instance(clients, instance, params, &incident.region).await
                    }
                    other => Err(StepError::Refused(format!(
                        "isolate does not act on a {}: contain it with the platform's own controls",
                        other.kind().name()
                    ))),
                };
                match result.map_err(plain)? {
                    Isolated::Contained(record) => Ok(json!({
                        "summary": isolation_summary(&record),
                        "isolation": isolate::summary(&record),
                        "record": record,
                    })),
                    Isolated::Incomplete { record, why } => Err((
                        StepError::Refused(format!("not fully isolated: {why}")),
                        serde_json::to_value(&record).ok(),
                    )),
                    Isolated::Gone(why) => Ok(json!({"summary": format!("nothing to isolate: {why}"), "gone": why})),
                }
            }
            Action::Evidence(params) => {
                let bucket = self.config.bucket().map_err(plain)?;
                let detail = evidence::preserve(clients, bucket, incident, raw, progress.containment.as_ref(), params.legal_hold)
                    .await
                    .map_err(plain)?;
                let count = detail["objects"].as_array().map_or(0, Vec::len);
                let mut detail = detail;
                detail["summary"] = json!(format!(
                    "{count} object(s) and a manifest in s3://{bucket}/{}{}",
                    detail["prefix"].as_str().unwrap_or(""),
                    if detail["legal_hold"] == true { " (legal hold)" } else { "" }
                ));
                Ok(detail)
            }
            Action::SnapshotVolumes(_) => snapshot::snapshot_volumes(clients, incident).await.map_err(plain),
            Action::Tag(params) => {
                let state = match (&progress.containment, progress.isolate_failed) {
                    (Some(_), _) => "contained",
                    (None, true) => "isolation-failed",
                    (None, false) => "investigating",
                };
                let enis = progress.containment.as_ref().map(|c| c.eni_ids.clone()).unwrap_or_default();
                tag::tag(clients, incident, state, &enis, params).await.map_err(plain)
            }
            Action::Deregister(params) => {
                let (ip, vpc) = match (&progress.containment, &incident.target) {
                    (Some(record), _) => (record.ip.clone(), record.vpc_id.clone()),
                    (None, Target::EcsTask(task)) => {
                        let facts = workload::describe_task(clients, task).await.map_err(plain)?;
                        (facts.and_then(|f| f.ipv4), None)
                    }
                    (None, Target::Ec2Instance(i)) => (i.network_interfaces.first().and_then(|e| e.private_ip.clone()), i.vpc_id.clone()),
                    _ => (None, None),
                };
                let ip = ip.ok_or_else(|| plain(StepError::Refused("the workload's IP is unknown".to_string())))?;
                deregister::deregister(clients, &ip, vpc.as_deref(), params).await.map_err(plain)
            }
            Action::Stop(_) => stop::stop(clients, incident, &step.rule).await.map_err(plain),
            Action::RevokeSessions(_) => Err(plain(StepError::Refused(
                "revoke-sessions is not implemented yet: revoke the instance role's sessions in IAM (AWSRevokeOlderSessions)".to_string(),
            ))),
            Action::Notify(_) => Err(plain(StepError::Refused("notify runs in its own phase".to_string()))),
        }
    }

    /// Notify once per state of the response: the key is where every step stands, so a replay
    /// or a second delivery that changes nothing sends nothing, while an escalation, a retry that
    /// finished a failed step, or a crash before notifying sends again.
    async fn notify(
        &self,
        step: &Step,
        incident: &Incident,
        ledger: Option<&Ledger>,
        progress: &ProgressView,
        report: &Report,
    ) -> StepRun {
        let started = Instant::now();
        if step.mode == Mode::DryRun {
            return StepRun::skipped("dry-run: not sent".to_string());
        }
        let Some(ledger) = ledger else {
            return StepRun::failed(&StepError::MissingConfig(ENV_TABLE, "the ledger table"));
        };
        let topic = match self.config.topic() {
            Ok(topic) => topic,
            Err(error) => return StepRun::failed(&error),
        };
        if progress.state.values().any(|s| *s == "in-progress") {
            return StepRun::skipped(
                "another invocation is carrying out this finding's steps and will notify"
                    .to_string(),
            );
        }
        let mut hasher = Sha256::new();
        for (action, state) in &progress.state {
            hasher.update(format!("{}={state};", action.name()));
        }
        let key = format!("step#notify#{}", &hex::encode(hasher.finalize())[..12]);
        match ledger.claim(&incident.finding_id, &key, &step.rule).await {
            Err(error) => return StepRun::failed(&error),
            Ok(Claim::Taken(record)) => {
                return StepRun::skipped(format!(
                    "already notified of this state ({})",
                    already_reason(&record)
                ))
            }
            Ok(Claim::Acquired) => {}
        }
        let prefix = match &step.spec {
            Action::Notify(p) => p.subject_prefix.as_deref(),
            _ => None,
        };
        let (status, outcome) = match notify::notify(&self.clients, topic, report, prefix).await {
            Ok(mut detail) => {
                detail["summary"] = json!(format!(
                    "sent to {topic}: {}",
                    detail["subject"].as_str().unwrap_or("")
                ));
                (StepStatus::Done, Outcome::Done { detail })
            }
            Err(error) => (StepStatus::Failed, failed(&error)),
        };
        let detail = match &outcome {
            Outcome::Done { detail } => detail.clone(),
            Outcome::Failed { error, .. } => json!({"error": error}),
            Outcome::Skipped { .. } => Value::Null,
        };
        if let Err(error) = ledger
            .finish(&incident.finding_id, &key, status, &detail)
            .await
        {
            tracing::error!(error = %error, "notify outcome not recorded");
        }
        StepRun {
            outcome,
            ms: elapsed(started),
            state: status.name(),
            previous: None,
        }
    }

    /// Release the containment recorded for a finding (or every finding of a task).
    /// `nacl_only`: the task is gone, only its ACL entries matter.
    pub async fn release(&self, target: &str, invocation_id: &str) -> Result<Value, StepError> {
        let ledger = self.ledger(invocation_id).ok_or(StepError::MissingConfig(
            ENV_TABLE,
            "the ledger table holding the containment records",
        ))?;
        if target.starts_with("arn:") {
            return self.release_task(target, Some(&ledger), false).await;
        }
        self.release_finding(target, &ledger, false).await
    }

    async fn release_task(
        &self,
        task_arn: &str,
        ledger: Option<&Ledger>,
        nacl_only: bool,
    ) -> Result<Value, StepError> {
        let ledger = ledger.ok_or(StepError::MissingConfig(
            ENV_TABLE,
            "the ledger table holding the containment records",
        ))?;
        let findings = ledger.findings_for_task(task_arn).await?;
        let mut released = Vec::new();
        for finding_id in findings {
            released.push(self.release_finding(&finding_id, ledger, nacl_only).await?);
        }
        Ok(json!({"task_arn": task_arn, "findings": released}))
    }

    async fn release_finding(
        &self,
        finding_id: &str,
        ledger: &Ledger,
        nacl_only: bool,
    ) -> Result<Value, StepError> {
        let Some(step) = ledger.get_step(finding_id, "step#isolate").await? else {
            return Ok(json!({"finding_id": finding_id, "result": "no containment recorded"}));
        };
        if step.status == StepStatus::Released {
            return Ok(
                json!({"finding_id": finding_id, "result": "already released", "at": step.updated_at}),
            );
        }
        let Some(record) = containment_of(&step) else {
            return Ok(
                json!({"finding_id": finding_id, "result": format!("isolate step is {} with no containment changes", step.status.name())}),
            );
        };
        let detail = release::release(&self.clients, &record, nacl_only).await?;
        ledger
            .mark_released(finding_id, "step#isolate", &detail)
            .await?;
        if !nacl_only && record.target.starts_with("arn:aws:ecs:") {
            // Best effort: the task may be gone.
            let _ = tag::mark_task_state(&self.clients, &record.target, "released").await;
        }
        Ok(
            json!({"finding_id": finding_id, "result": "released", "target": record.target, "detail": detail}),
        )
    }
}

/// The containment changes in an isolate step item, done or partly applied.
pub fn containment_of(step: &StepRecord) -> Option<ContainmentRecord> {
    serde_json::from_value(step.detail.get("record")?.clone()).ok()
}

fn isolation_summary(record: &ContainmentRecord) -> String {
    match record.rung {
        Some(crate::playbook::IsolationRung::NaclQuarantine) => format!(
            "{} network ACL entries for {} (nacl-quarantine)",
            record.nacl_entries.len(),
            record.ip.as_deref().unwrap_or("?")
        ),
        Some(crate::playbook::IsolationRung::SgSwap) => format!(
            "security groups of {} swapped for the quarantine group (sg-swap)",
            record.eni_ids.join(", ")
        ),
        None => "not isolated".to_string(),
    }
}

/// A read-only copy of what concurrent steps need to know.
struct ProgressView {
    containment: Option<ContainmentRecord>,
    isolate_failed: bool,
    evidence_done: bool,
    exempt_on: Option<String>,
    state: BTreeMap<ActionName, &'static str>,
}

impl ProgressView {
    fn of(progress: &Progress) -> ProgressView {
        ProgressView {
            containment: progress.containment.clone(),
            isolate_failed: progress.isolate_failed,
            evidence_done: progress.evidence_done,
            exempt_on: progress.exempt_on.clone(),
            state: progress.state.clone(),
        }
    }
}

/// How one step went in this invocation.
struct StepRun {
    outcome: Outcome,
    ms: u64,
    /// Where the step stands: `done`, `failed`, `skipped`, `in-progress` (elsewhere), ...
    state: &'static str,
    /// The recorded detail when an earlier invocation already did it.
    previous: Option<Value>,
}

impl StepRun {
    fn skipped(reason: String) -> StepRun {
        StepRun {
            outcome: Outcome::Skipped { reason },
            ms: 0,
            state: "skipped",
            previous: None,
        }
    }

    fn failed(error: &StepError) -> StepRun {
        StepRun {
            outcome: failed(error),
            ms: 0,
            state: "failed",
            previous: None,
        }
    }
}

fn absorb(progress: &mut Progress, action: ActionName, run: StepRun) {
    let StepRun {
        outcome,
        ms,
        state,
        previous,
    } = run;
    if action == ActionName::Evidence {
        // Done now, or done before (a replay): either way the evidence exists.
        progress.evidence_done = matches!(outcome, Outcome::Done { .. }) || previous.is_some();
    }
    if action != ActionName::Notify {
        progress.state.insert(action, state);
    }
    progress.durations.insert(action, ms);
    progress.outcomes.insert(action, outcome);
}

fn write_outcomes(report: &mut Report, steps: &[Step], progress: &Progress, exempt: Option<&str>) {
    report.steps = steps
        .iter()
        .map(|step| {
            let mut out = StepReport::from(step);
            out.outcome = progress.outcomes.get(&step.action).cloned();
            out.duration_ms = progress.durations.get(&step.action).copied();
            out
        })
        .collect();
    if let Some(exempt) = exempt {
        if !report.notes.iter().any(|n| n == exempt) {
            report.notes.push(exempt.to_string());
        }
    }
}

fn failed(error: &StepError) -> Outcome {
    Outcome::Failed {
        error: error.to_string(),
        retryable: error.is_retryable(),
    }
}

/// The outcome for a step the ledger says is not ours to run.
fn already(record: &StepRecord) -> Outcome {
    Outcome::Skipped {
        reason: already_reason(record),
    }
}

fn already_reason(record: &StepRecord) -> String {
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

fn elapsed(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}
