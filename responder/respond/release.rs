//! Releasing what `isolate` recorded: for one finding (`responder release FINDING_ID`), or for
//! every finding of a task (`responder release TASK_ARN`, and the task's STOPPED event, where
//! only the ACL entries matter: they would block the next task given the same IP).

use serde::{Deserialize, Serialize};

use super::steps::recorded_isolation;
use super::Responder;
use crate::actions::hold::{self, HoldOutput};
use crate::actions::isolate::lockdown::GroupLockdown;
use crate::actions::isolate::{ContainmentRecord, NaclEntry, SgSwap, SharedIntent};
use crate::actions::ledger::{Ledger, StepRecord, StepStatus};
use crate::actions::protect::{self, Protection};
use crate::actions::release::{release, ReleaseOutput};
use crate::actions::revoke_sessions::{self, Revocation, RevokeOutput};
use crate::actions::scale::{self, ScaleOutput, ServiceScale};
use crate::actions::tag::mark_task_state;
use crate::actions::{Clients, StepError, ENV_TABLE};

/// What a release did, finding by finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseSummary {
    /// The task, when released by task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// One entry per finding recorded for the target.
    pub findings: Vec<FindingRelease>,
}

impl ReleaseSummary {
    /// The ledger knows nothing to release for the target (a mistyped id, most likely).
    pub fn nothing_recorded(&self) -> bool {
        self.findings.iter().all(|f| {
            f.result == ReleaseResult::NothingRecorded
                && f.service_scale.is_none()
                && f.lifted_holds.is_empty()
                && f.sessions.is_none()
                && f.protection.is_none()
                && f.drain.is_none()
        })
    }

    /// One line per finding, for people.
    pub fn to_text(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        if let Some(task) = &self.task_arn {
            lines.push(format!(
                "task {task}: {}",
                crate::report::count(self.findings.len(), "finding", "findings")
            ));
        }
        for finding in &self.findings {
            let what = match &finding.result {
                ReleaseResult::Released { target, detail } => {
                    format!("released {target}: {}", detail.summary())
                }
                ReleaseResult::AlreadyReleased { at } => format!("already released at {at}"),
                ReleaseResult::NothingRecorded => "no containment recorded".to_string(),
                ReleaseResult::NoChanges { status } => {
                    format!("isolate step is {status} with no containment changes")
                }
                ReleaseResult::Kept { target, why } => format!("kept {target}: {why}"),
            };
            lines.push(format!("finding {}: {what}", finding.finding_id));
            if !finding.lifted_holds.is_empty() {
                lines.push(format!(
                    "finding {}: no longer watching {}",
                    finding.finding_id,
                    finding.lifted_holds.join(", ")
                ));
            }
            if let Some(protection) = &finding.protection {
                lines.push(format!(
                    "finding {}: {}",
                    finding.finding_id,
                    protection.summary()
                ));
            }
            if let Some(drain) = &finding.drain {
                lines.push(format!("finding {}: {drain}", finding.finding_id));
            }
            if let Some(sessions) = &finding.sessions {
                lines.push(format!(
                    "finding {}: {}",
                    finding.finding_id,
                    sessions.summary()
                ));
            }
            if let Some(scale) = &finding.service_scale {
                lines.push(format!(
                    "finding {}: {}",
                    finding.finding_id,
                    scale.summary()
                ));
            }
        }
        lines.join("\n") + "\n"
    }
}

/// The release of one finding's containment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingRelease {
    /// The finding.
    pub finding_id: String,
    /// What happened.
    #[serde(flatten)]
    pub result: ReleaseResult,
    /// The service's desired count, when `scale-service` lowered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_scale: Option<ScaleRelease>,
    /// The image keys `hold-deployment` held, no longer watched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lifted_holds: Vec<String>,
    /// The role's revocation policy, removed or narrowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsRelease>,
    /// The instance's protection from termination, put back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<ProtectionRelease>,
    /// The container instance `drain-instance` drained: ACTIVE again, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<String>,
}

/// What became of `protect-instance`'s settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectionRelease {
    /// The instance.
    pub instance_id: String,
    /// Settings put back as they were.
    pub restored: Vec<String>,
    /// Settings left as they are, and why.
    pub left_alone: Vec<String>,
}

impl ProtectionRelease {
    /// One line for people.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.restored.is_empty() {
            parts.push(format!("put back: {}", self.restored.join(", ")));
        }
        if !self.left_alone.is_empty() {
            parts.push(format!("left: {}", self.left_alone.join("; ")));
        }
        format!("instance {}: {}", self.instance_id, parts.join("; "))
    }
}

/// What became of `revoke-sessions`' policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionsRelease {
    /// The role.
    pub role_name: String,
    /// The inline policy.
    pub policy_name: String,
    /// What was done.
    pub result: SessionsResult,
    /// Credentials issued before this instant were denied.
    pub issued_before: String,
    /// Why the policy was left as it is, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What was done with a revocation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionsResult {
    /// Deleted: the role's older credentials work again until they expire.
    Removed,
    /// Not there any more (someone removed it).
    AlreadyGone,
    /// The workload stopped: its addresses are no longer denied (the next workload given
    /// one must not be), the time deny stays until `release`.
    AddressesLifted,
    /// IAM refused the change (e.g. the role lost its `incident-responder:revocable` tag): a
    /// person removes the policy, if it is there.
    LeftAlone,
}

impl SessionsRelease {
    /// One line for people.
    pub fn summary(&self) -> String {
        match self.result {
            SessionsResult::Removed => format!(
                "revocation policy {} removed from role {}: credentials issued before {} work again until they expire",
                self.policy_name, self.role_name, self.issued_before
            ),
            SessionsResult::AlreadyGone => format!(
                "revocation policy {} was no longer on role {}",
                self.policy_name, self.role_name
            ),
            SessionsResult::AddressesLifted => format!(
                "role {} no longer denies the stopped workload's addresses; credentials issued before {} stay denied until `responder release`",
                self.role_name, self.issued_before
            ),
            SessionsResult::LeftAlone => format!(
                "revocation policy {} on role {} not changed: {}; remove it by hand if it is there",
                self.policy_name,
                self.role_name,
                self.why.as_deref().unwrap_or("refused")
            ),
        }
    }
}

/// A scaled-in service's desired count, put back or left alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRelease {
    /// The service.
    pub service: String,
    /// Its desired count after the release.
    pub desired_count: Option<i32>,
    /// Put back to what it was before the finding.
    pub restored: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl ScaleRelease {
    /// One line for people.
    pub fn summary(&self) -> String {
        match (&self.why, self.desired_count) {
            (None, Some(n)) => format!("service {} scaled back to {n}", self.service),
            (why, _) => format!(
                "service {} left as it is: {}",
                self.service,
                why.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// What happened to one finding's containment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReleaseResult {
    /// Undone now.
    Released {
        /// The task ARN or instance id.
        target: String,
        /// What was undone and what was left alone.
        detail: ReleaseOutput,
    },
    /// Undone before.
    AlreadyReleased {
        /// When.
        at: String,
    },
    /// The ledger has no isolate step for the finding.
    NothingRecorded,
    /// The isolate step changed nothing (e.g. the task was already gone).
    NoChanges {
        /// The step's status.
        status: String,
    },
    /// Left in place on purpose.
    Kept {
        /// The instance.
        target: String,
        /// Why.
        why: String,
    },
}

impl Responder {
    /// Release the containment recorded for a finding id, or for every finding of an ECS task
    /// ARN.
    pub async fn release(
        &self,
        target: &str,
        invocation_id: &str,
    ) -> Result<ReleaseSummary, StepError> {
        if target.starts_with("arn:") {
            let ledger = self.ledger(invocation_id, None);
            return self.release_task(target, ledger.as_ref(), false).await;
        }
        let ledger = self.required_ledger(
            invocation_id,
            "the ledger table holding the containment records",
        )?;
        let finding = Box::pin(self.release_finding(target, &ledger, false, false)).await?;
        Ok(ReleaseSummary {
            task_arn: None,
            findings: vec![finding],
        })
    }

    /// `nacl_only`: the task is gone, only its ACL entries matter.
    pub(super) async fn release_task(
        &self,
        task_arn: &str,
        ledger: Option<&Ledger>,
        nacl_only: bool,
    ) -> Result<ReleaseSummary, StepError> {
        let ledger = ledger.ok_or(StepError::MissingConfig(
            ENV_TABLE,
            "the ledger table holding the containment records",
        ))?;
        let mut findings = Vec::new();
        for finding_id in ledger.findings_for_task(task_arn).await? {
            findings.push(
                Box::pin(self.release_finding(&finding_id, ledger, nacl_only, nacl_only)).await?,
            );
        }
        // Its slot in the service's blast-radius count: the service may contain another.
        ledger.leave_service(task_arn).await?;
        Ok(ReleaseSummary {
            task_arn: Some(task_arn.to_string()),
            findings,
        })
    }

    /// `nacl_only`: the workload is gone, only its ACL entries matter. `task_stopped`: the
    /// task's STOPPED event asks, which leaves a shared container instance cut.
    pub(super) async fn release_finding(
        &self,
        finding_id: &str,
        ledger: &Ledger,
        nacl_only: bool,
        task_stopped: bool,
    ) -> Result<FindingRelease, StepError> {
        let clients = &Box::pin(self.finding_clients(finding_id, ledger)).await?;
        let result = match ledger.get_step(finding_id, crate::actions::isolate::STEP_KEY).await? {
            None => ReleaseResult::NothingRecorded,
            // Isolation is still under way: what it adds must be released too, so this waits
            // for it (the STOPPED event is retried; a person is told to try again).
            Some(step) if step.held() => {
                return Err(StepError::InProgress(format!(
                    "finding {finding_id} is being isolated right now (by {}); release once it has finished",
                    step.owner
                )))
            }
            Some(step) if step.status == StepStatus::Released => ReleaseResult::AlreadyReleased {
                at: step.updated_at,
            },
            Some(step) => match with_intended(containment_of(&step), &step) {
                None => ReleaseResult::NoChanges {
                    status: step.status.name().to_string(),
                },
                // A container instance cut off for a task sharing its network stays cut when
                // the task stops (its host may be what is compromised): a person releases it.
                Some(record)
                    if task_stopped
                        && (record.shared_by_task.is_some()
                            || (!record.sg_swaps.is_empty() && !record.target.contains(":ecs:"))) =>
                {
                    ReleaseResult::Kept {
                        target: record.target,
                        why: "a container instance cut off for a task that shares its network; released by a person (`responder release`), not by the task stopping".to_string(),
                    }
                }
                Some(record) => {
                    let detail = release(clients, &record, nacl_only).await?;
                    let stored = serde_json::to_value(&detail).unwrap_or_default();
                    ledger
                        .mark_released(finding_id, crate::actions::isolate::STEP_KEY, &stored)
                        .await?;
                    let task = Some(&record.target)
                        .filter(|t| t.contains(":ecs:"))
                        .or(record.shared_by_task.as_ref());
                    if let Some(task) = task {
                        ledger.leave_service(task).await?;
                    }
                    for task in &record.shared_with {
                        ledger.leave_service(task).await?;
                    }
                    if !nacl_only && record.target.starts_with("arn:aws:ecs:") {
                        // Best effort: the task may be gone.
                        let _ = mark_task_state(clients, &record.target, "released").await;
                    }
                    ReleaseResult::Released {
                        target: record.target,
                        detail,
                    }
                }
            },
        };
        // Nothing of this isolation is left to sweep for.
        if !matches!(
            result,
            ReleaseResult::NothingRecorded | ReleaseResult::Kept { .. }
        ) {
            if let Err(error) = ledger.unindex_isolation(finding_id).await {
                tracing::warn!(finding_id, error = %error, "isolation index not updated; the sweep will look again");
            }
        }
        // A stopped task's event releases only what blocks its address; the service's count
        // is for a person's `release`.
        let (service_scale, lifted_holds) = if nacl_only {
            (None, Vec::new())
        } else {
            (
                self.release_scale(clients, finding_id, ledger).await?,
                self.lift_holds(finding_id, ledger).await?,
            )
        };
        let sessions = self
            .release_sessions(clients, finding_id, ledger, nacl_only)
            .await?;
        let (protection, drain) = if nacl_only {
            (None, None)
        } else {
            (
                Box::pin(self.release_protection(clients, finding_id, ledger)).await?,
                Box::pin(release_drain(clients, finding_id, ledger)).await?,
            )
        };
        Ok(FindingRelease {
            finding_id: finding_id.to_string(),
            result,
            service_scale,
            lifted_holds,
            sessions,
            protection,
            drain,
        })
    }

    /// The clients for the account the finding's workload is in: this one's, or, with a
    /// member role configured, the account its step records name (every claim records it).
    async fn finding_clients(
        &self,
        finding_id: &str,
        ledger: &Ledger,
    ) -> Result<Clients, StepError> {
        if self.config.member_role.is_none() {
            return Ok(self.clients.clone());
        }
        let steps = ledger.steps(finding_id).await?;
        match steps.iter().find_map(|s| s.account.as_deref()) {
            Some(account) => self.clients_for(Some(account)).await,
            // Recorded before claims named the account, when only this account's workloads
            // were ever acted on.
            None => Ok(self.clients.clone()),
        }
    }

    /// Remove `revoke-sessions`' policy; for a stopped workload (`addresses_only`), only its
    /// address deny, which would otherwise deny the next workload given the address.
    async fn release_sessions(
        &self,
        clients: &Clients,
        finding_id: &str,
        ledger: &Ledger,
        addresses_only: bool,
    ) -> Result<Option<SessionsRelease>, StepError> {
        let Some(step) = to_release(
            ledger,
            finding_id,
            revoke_sessions::STEP_KEY,
            "sessions are being revoked",
        )
        .await?
        else {
            return Ok(None);
        };
        // What the step did (put for certain), or, when it failed or died, the last policy it
        // said it would put (which may never have been put).
        let (revocation, put) = match step.output::<RevokeOutput>() {
            Some(RevokeOutput::Revoked(revocation)) => (Some(revocation), true),
            Some(RevokeOutput::NoRole { .. }) => (None, false),
            None => (step.last_intent::<Revocation>(), false),
        };
        let Some(revocation) = revocation else {
            return Ok(None);
        };
        let mut released = SessionsRelease {
            role_name: revocation.role_name.clone(),
            policy_name: revocation.policy_name.clone(),
            result: SessionsResult::Removed,
            issued_before: revocation.issued_before.clone(),
            why: None,
        };
        // A refusal is reported, not raised: the other findings of a stopped task are released
        // all the same. What a retry may fix (throttling) is raised, so the event is retried.
        let mut left_alone = |error: StepError| -> Result<(), StepError> {
            if error.is_retryable() {
                return Err(error);
            }
            released.result = SessionsResult::LeftAlone;
            released.why = Some(error.to_string());
            Ok(())
        };
        if addresses_only {
            // Only a policy certainly put is narrowed: a failed attempt's intent must not
            // become a policy now.
            if !put || revocation.denied_addresses.is_empty() {
                return Ok(None);
            }
            match revoke_sessions::put_policy(clients, &revocation, &[]).await {
                Ok(()) => {
                    released.result = SessionsResult::AddressesLifted;
                    // A person's release may have deleted the policy while this put it back.
                    let now = ledger
                        .get_step(finding_id, revoke_sessions::STEP_KEY)
                        .await?;
                    if now.is_some_and(|s| s.standing() == StepStatus::Released) {
                        revoke_sessions::delete_policy(clients, &revocation).await?;
                        released.result = SessionsResult::Removed;
                    }
                }
                Err(error) => left_alone(error)?,
            }
            return Ok(Some(released));
        }
        match revoke_sessions::delete_policy(clients, &revocation).await {
            Ok(true) => {}
            Ok(false) => released.result = SessionsResult::AlreadyGone,
            // Refused where nothing was certainly put: most likely nothing is there.
            Err(error) if !put && !error.is_retryable() => {
                released.result = SessionsResult::AlreadyGone;
                released.why = Some(format!("the step never put it for certain ({error})"));
            }
            Err(error) => left_alone(error)?,
        }
        let stored = serde_json::to_value(&released).unwrap_or_default();
        ledger
            .mark_released(finding_id, revoke_sessions::STEP_KEY, &stored)
            .await?;
        Ok(Some(released))
    }

    /// Put back the instance's termination protection and shutdown behaviour where they are
    /// still as `protect-instance` left them; the instance stays in Standby (a person's call).
    async fn release_protection(
        &self,
        clients: &Clients,
        finding_id: &str,
        ledger: &Ledger,
    ) -> Result<Option<ProtectionRelease>, StepError> {
        let Some(step) = to_release(
            ledger,
            finding_id,
            protect::STEP_KEY,
            "instance is being protected",
        )
        .await?
        else {
            return Ok(None);
        };
        // What the step recorded (a failure keeps only the changes that happened), else what
        // it wrote down before dying.
        let protection = step
            .output::<Protection>()
            .or_else(|| step.last_intent::<Protection>());
        let Some(protection) = protection else {
            return Ok(None);
        };
        let id = protection.instance_id.as_str();
        let mut released = ProtectionRelease {
            instance_id: id.to_string(),
            restored: Vec::new(),
            left_alone: Vec::new(),
        };
        match protect::instance_settings(clients, id).await {
            Err(StepError::Aws { code, .. })
                if code.starts_with("InvalidInstanceID") || code == "IncorrectInstanceState" =>
            {
                released
                    .left_alone
                    .push("the instance no longer exists".to_string());
            }
            Err(error) => return Err(error),
            Ok((termination, shutdown)) => {
                if protection.termination_protection_set {
                    if termination {
                        protect::set_termination_protection(clients, id, false).await?;
                        released
                            .restored
                            .push("termination protection off".to_string());
                    } else {
                        released.left_alone.push(
                            "termination protection: already off (someone changed it)".to_string(),
                        );
                    }
                }
                if protection.shutdown_stop_set {
                    if shutdown == "stop" {
                        protect::set_shutdown_behavior(
                            clients,
                            id,
                            &protection.shutdown_behavior_before,
                        )
                        .await?;
                        released.restored.push(format!(
                            "shutdown behaviour {}",
                            protection.shutdown_behavior_before
                        ));
                    } else {
                        released.left_alone.push(format!(
                            "shutdown behaviour: {shutdown} now (someone changed it)"
                        ));
                    }
                }
            }
        }
        if protection.entered_standby {
            // Said only when it is in Standby now (the step may have failed to put it there).
            if let Some((group, state)) = protect::auto_scaling_group(clients, id).await? {
                if state == "Standby" {
                    released.left_alone.push(format!(
                        "in Standby in Auto Scaling group {group}: put it back in service (aws autoscaling exit-standby; the group's desired capacity grows by one, and its termination policy then removes an instance) or terminate it"
                    ));
                }
            }
        }
        let stored = serde_json::to_value(&released).unwrap_or_default();
        ledger
            .mark_released(finding_id, protect::STEP_KEY, &stored)
            .await?;
        Ok(Some(released))
    }

    /// Stop watching for the images a finding held.
    async fn lift_holds(
        &self,
        finding_id: &str,
        ledger: &Ledger,
    ) -> Result<Vec<String>, StepError> {
        let Some(step) = ledger.get_step(finding_id, hold::STEP_KEY).await? else {
            return Ok(Vec::new());
        };
        if matches!(step.standing(), StepStatus::Released | StepStatus::Claimed) {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = step
            .output::<HoldOutput>()
            .map(|o| o.held.into_iter().flat_map(|h| h.keys).collect())
            .unwrap_or_default();
        for key in &keys {
            ledger.lift_hold(key, finding_id).await?;
        }
        ledger
            .mark_released(
                finding_id,
                hold::STEP_KEY,
                &serde_json::json!({"lifted": keys}),
            )
            .await?;
        Ok(keys)
    }

    /// Put a scaled-in service back to its count, unless someone changed the count since.
    async fn release_scale(
        &self,
        clients: &Clients,
        finding_id: &str,
        ledger: &Ledger,
    ) -> Result<Option<ScaleRelease>, StepError> {
        let Some(step) = to_release(
            ledger,
            finding_id,
            scale::STEP_KEY,
            "service is being scaled",
        )
        .await?
        else {
            return Ok(None);
        };
        let scaled = match step.output::<ScaleOutput>() {
            Some(ScaleOutput::Scaled(scale)) => Some(scale),
            // The first intent: the count before any attempt lowered it.
            _ => step
                .intended
                .iter()
                .find_map(|v| serde_json::from_value::<ServiceScale>(v.clone()).ok()),
        };
        let Some(scale) = scaled else {
            return Ok(None);
        };
        let now = scale::desired_count(clients, &scale.cluster_arn, &scale.service).await?;
        let result = match now.map(|(count, _)| count) {
            Some(count) if count == scale.desired_count => {
                scale::set_desired_count(
                    clients,
                    &scale.cluster_arn,
                    &scale.service,
                    scale.previous_desired_count,
                )
                .await?;
                ScaleRelease {
                    service: scale.service,
                    desired_count: Some(scale.previous_desired_count),
                    restored: true,
                    why: None,
                }
            }
            Some(count) => ScaleRelease {
                service: scale.service,
                desired_count: Some(count),
                restored: false,
                why: Some(format!(
                    "its desired count is {count}, not the {} this response set: someone changed it since",
                    scale.desired_count
                )),
            },
            None => ScaleRelease {
                service: scale.service,
                desired_count: None,
                restored: false,
                why: Some("ECS no longer knows the service".to_string()),
            },
        };
        let stored = serde_json::to_value(&result).unwrap_or_default();
        ledger
            .mark_released(finding_id, scale::STEP_KEY, &stored)
            .await?;
        Ok(Some(result))
    }
}

/// The recorded containment, plus every change an attempt said it was about to make and may
/// have made before it died (each is checked against what AWS holds before it is removed).
pub(super) fn with_intended(
    record: Option<ContainmentRecord>,
    step: &StepRecord,
) -> Option<ContainmentRecord> {
    let intended: Vec<NaclEntry> = step
        .intended
        .iter()
        .filter_map(|value| serde_json::from_value(value.clone()).ok())
        .collect();
    let swaps: Vec<SgSwap> = step
        .intended
        .iter()
        .filter_map(|value| serde_json::from_value(value.clone()).ok())
        .collect();
    let shared: Vec<SharedIntent> = step
        .intended
        .iter()
        .filter_map(|value| serde_json::from_value(value.clone()).ok())
        .collect();
    let lockdowns: Vec<GroupLockdown> = step
        .intended
        .iter()
        .filter_map(|value| serde_json::from_value(value.clone()).ok())
        .collect();
    if intended.is_empty() && swaps.is_empty() && shared.is_empty() && lockdowns.is_empty() {
        return record;
    }
    let mut record = record.unwrap_or_default();
    for lockdown in lockdowns {
        if !record
            .group_lockdowns
            .iter()
            .any(|g| g.group_id == lockdown.group_id)
        {
            record.group_lockdowns.push(lockdown);
        }
    }
    for intent in shared {
        record.shared_by_task.get_or_insert(intent.shared_by_task);
        for task in intent.shared_with {
            if !record.shared_with.contains(&task) {
                record.shared_with.push(task);
            }
        }
    }
    for swap in swaps {
        if !record.sg_swaps.iter().any(|s| s.eni_id == swap.eni_id) {
            record.sg_swaps.push(swap);
        }
    }
    for entry in intended {
        let known = record.nacl_entries.iter().any(|e| {
            e.acl_id == entry.acl_id
                && e.rule_number == entry.rule_number
                && e.egress == entry.egress
        });
        if !known {
            record.nacl_entries.push(entry);
        }
    }
    Some(record)
}

/// The containment changes in an isolate step item, done or partly applied.
pub(crate) fn containment_of(step: &StepRecord) -> Option<ContainmentRecord> {
    recorded_isolation(&step.detail)?.record().cloned()
}

/// Set the container instance `drain-instance` drained ACTIVE again, when it is still
/// DRAINING: new tasks may be placed there again (ECS does not move the replaced ones back).
async fn release_drain(
    clients: &Clients,
    finding_id: &str,
    ledger: &Ledger,
) -> Result<Option<String>, StepError> {
    use crate::actions::drain::{self, Drain};
    let Some(step) = to_release(
        ledger,
        finding_id,
        drain::STEP_KEY,
        "container instance is being drained",
    )
    .await?
    else {
        return Ok(None);
    };
    // What the step recorded decides (a DRAINING call ECS refused says `drained: false`); the
    // intent only when it recorded nothing (it died after writing the intent).
    let recorded = step
        .output::<Drain>()
        .or_else(|| step.last_intent::<Drain>());
    let Some(recorded) = recorded.filter(|d| d.drained) else {
        return Ok(None);
    };
    let arn = &recorded.container_instance_arn;
    let said = match drain::describe_container_instance(clients, &recorded.cluster_arn, arn).await {
        Err(StepError::Aws { code, .. }) if code == "ClusterNotFoundException" => {
            format!("container instance {arn}: the cluster no longer exists")
        }
        Err(error) => return Err(error),
        Ok(None) => format!("container instance {arn}: no longer registered"),
        Ok(Some(found)) if found.status == "DRAINING" => {
            drain::set_status(
                clients,
                &recorded.cluster_arn,
                arn,
                aws_sdk_ecs::types::ContainerInstanceStatus::Active,
            )
            .await?;
            format!(
                "container instance {arn} ACTIVE again: tasks may be placed there (the ones ECS moved away stay where they are)"
            )
        }
        Ok(Some(found)) => format!(
            "container instance {arn} left {} (someone changed it)",
            found.status
        ),
    };
    ledger
        .mark_released(
            finding_id,
            drain::STEP_KEY,
            &serde_json::Value::from(said.clone()),
        )
        .await?;
    Ok(Some(said))
}

/// A step's item to release: `None` when there is none or it is released already; an error
/// (a retry will do) while another invocation is still at it (`doing`, for the message).
async fn to_release(
    ledger: &Ledger,
    finding_id: &str,
    step_key: &str,
    doing: &str,
) -> Result<Option<StepRecord>, StepError> {
    let Some(step) = ledger.get_step(finding_id, step_key).await? else {
        return Ok(None);
    };
    match step.standing() {
        StepStatus::Released => Ok(None),
        StepStatus::Claimed => Err(StepError::InProgress(format!(
            "finding {finding_id}'s {doing} right now (by {}); release once it has finished",
            step.owner
        ))),
        StepStatus::Done | StepStatus::Failed => Ok(Some(step)),
    }
}
