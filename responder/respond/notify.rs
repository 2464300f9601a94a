//! Notify once per state of the response: the ledger key is where every step stands, so a
//! replay or a second delivery that changes nothing sends nothing, while an escalation, a retry
//! that finished a failed step, or a crash before notifying sends again.

use std::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::steps::{already_reason, failed, Invocation, Progress, StepRun, StepState};
use crate::actions::ledger::{Claim, Finish, StepStatus};
use crate::actions::{run_action, StepError, ENV_TABLE};
use crate::plan::Step;
use crate::playbook::Mode;
use crate::report::{Outcome, Report};

impl Invocation<'_> {
    /// Send the notice for the report as it stands, unless this state was already sent.
    pub(super) async fn notify(
        &self,
        step: &Step,
        progress: &Progress,
        report: &Report,
    ) -> StepRun {
        let started = Instant::now();
        if step.mode == Mode::DryRun {
            return StepRun::skipped("dry-run: not sent".to_string());
        }
        let Some(ledger) = self.ledger else {
            return StepRun::failed(&StepError::MissingConfig(ENV_TABLE, "the ledger table"));
        };
        if progress
            .states
            .values()
            .any(|s| *s == StepState::InProgressElsewhere)
        {
            return StepRun::skipped(
                "another invocation is carrying out this finding's steps and will notify"
                    .to_string(),
            );
        }
        let mut hasher = Sha256::new();
        for (action, state) in &progress.states {
            hasher.update(format!("{}={};", action.name(), state.name()));
        }
        let key = format!("step#notify#{}", &hex::encode(hasher.finalize())[..12]);
        let finding_id = &self.incident.finding_id;
        match ledger.claim(finding_id, &key, &step.rule).await {
            Err(error) => return StepRun::failed(&error),
            Ok(Claim::Taken(record)) => {
                return StepRun::skipped(format!(
                    "already notified of this state ({})",
                    already_reason(&record)
                ))
            }
            Ok(Claim::Acquired { .. }) => {}
        }
        let ctx = self.context(step, ledger, &[], &progress.earlier, report, None);
        let (status, outcome, stored) = match run_action(&step.spec, &ctx).await {
            Ok(output) => {
                let stored = serde_json::to_value(&output).unwrap_or_default();
                (StepStatus::Done, Outcome::done(output), stored)
            }
            Err(failure) => (
                StepStatus::Failed,
                failed(&failure.error, None),
                json!({"error": failure.error.to_string()}),
            ),
        };
        // Written with the response's end (the lock let go, the audit record): one write.
        StepRun {
            outcome,
            ms: started.elapsed().as_millis() as u64,
            state: if status == StepStatus::Done {
                StepState::Done
            } else {
                StepState::Failed
            },
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
