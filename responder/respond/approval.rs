//! A person's decision on containment a rule in `approve` mode deferred: `approve` answers the
//! recorded event again with that containment enforced (guard, breaker and claims as for any
//! response, so nothing is done twice); `reject` records the refusal. Either only while the
//! approval is pending and unexpired.

use super::{Responder, Response};
use crate::actions::approval::{self, Approval, ApprovalStatus};
use crate::actions::StepError;
use crate::playbook::Mode;

impl Responder {
    /// Approve the finding's deferred containment and carry it out now. Approving again what
    /// was approved carries out whatever is not done yet (finished steps are not repeated).
    pub async fn approve(
        &self,
        finding_id: &str,
        by: &str,
        invocation_id: &str,
    ) -> Result<Response, StepError> {
        let ledger = self.required_ledger(invocation_id, "the ledger table holding approvals")?;
        let (approval, approver) =
            match approval::decide(&ledger, finding_id, ApprovalStatus::Approved, by).await {
                Ok(approval) => (approval, by.to_string()),
                Err(refusal) => match approval::get(&ledger, finding_id).await? {
                    Some(done) if done.status == ApprovalStatus::Approved => {
                        let approver = done.decided_by.clone().unwrap_or_else(|| "?".to_string());
                        (done, approver)
                    }
                    _ => return Err(refusal),
                },
            };
        // The recorded event must be the finding approved, under the rule that asked.
        let inbound = crate::event::parse_event(approval.event.as_bytes())
            .map_err(|e| StepError::Refused(format!("the recorded event is unreadable: {e}")))?;
        let crate::event::Inbound::Finding { incident, .. } = &inbound else {
            return Err(StepError::Refused(
                "the recorded event is not a finding".to_string(),
            ));
        };
        if incident.finding_id != finding_id {
            return Err(StepError::Refused(format!(
                "the recorded event is finding {}, not {finding_id}",
                incident.finding_id
            )));
        }
        if let crate::plan::Decision::Act(plan) =
            crate::plan::decide(&inbound, &self.playbooks, Mode::Enforce)
        {
            if plan.rule != approval.rule {
                return Err(StepError::Refused(format!(
                    "the playbooks changed since approval was asked: rule {} decides now, not {} (run with the stack's playbooks)",
                    plan.rule, approval.rule
                )));
            }
        }
        // Boxed: a whole response.
        Ok(Box::pin(self.respond_as(
            Some(format!("approval of {finding_id} by {approver}")),
            approval.event.as_bytes(),
            invocation_id,
            None,
            None,
            Some(&approver),
        ))
        .await)
    }

    /// Reject the finding's deferred containment: it will not happen.
    pub async fn reject(
        &self,
        finding_id: &str,
        by: &str,
        invocation_id: &str,
    ) -> Result<Approval, StepError> {
        let ledger = self.required_ledger(invocation_id, "the ledger table holding approvals")?;
        approval::decide(&ledger, finding_id, ApprovalStatus::Rejected, by).await
    }
}

impl Responder {
    /// Expire every pending approval past its expiry, telling people for each (once: the
    /// expiry is a conditional write). Cheap when no rule can ask for approval.
    pub(super) async fn expire_approvals(
        &self,
        ledger: Option<&crate::actions::ledger::Ledger>,
    ) -> Result<Vec<String>, StepError> {
        let asks = self
            .playbooks
            .rules
            .iter()
            .any(|r| r.rule.mode == Mode::Approve)
            || self.config.mode_ceiling == Some(Mode::Approve);
        let Some(ledger) = ledger.filter(|_| asks) else {
            return Ok(Vec::new());
        };
        let mut expired = Vec::new();
        let mut errors = Vec::new();
        for approval in approval::expire_due(ledger).await? {
            let finding_id = approval.finding_id.clone();
            // Each on its own: one failed notice must not hold back the others. An untold
            // expiry stays listed, and the next run tells it.
            let told = async {
                if let Some(topic) = &self.config.topic_arn {
                    let subject =
                        format!("[Approval expired] containment NOT done for finding {finding_id}");
                    let body = format!(
                        "Nobody approved or rejected the containment of finding {finding_id} (rule {}) by {}.\nNot done: {}.\nThe finding was preserved and reported when it arrived; its workload may still be compromised. Contain it by hand, or change the rule's mode.",
                        approval.rule,
                        approval.expires_at,
                        approval.steps.join("; ")
                    );
                    crate::actions::notify::publish_text(&self.clients, topic, &subject, &body)
                        .await?;
                }
                approval::told(ledger, &finding_id).await
            };
            match told.await {
                Ok(()) => expired.push(finding_id),
                Err(error) => errors.push(error),
            }
        }
        if let Some(error) = errors.into_iter().next() {
            return Err(error);
        }
        Ok(expired)
    }
}
