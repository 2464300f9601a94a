//! A person's decision on containment a rule in `approve` mode deferred: `approve` answers the
//! recorded event again with that containment enforced (guard, breaker and claims as for any
//! response, so nothing is done twice); `reject` records the refusal. Either only while the
//! approval is pending and unexpired.

use super::{Responder, Response};
use crate::actions::approval::{self, Approval, ApprovalStatus};
use crate::actions::{StepError, ENV_TABLE};
use crate::playbook::Mode;

impl Responder {
    /// Approve the finding's deferred containment and carry it out now.
    pub async fn approve(
        &self,
        finding_id: &str,
        by: &str,
        invocation_id: &str,
    ) -> Result<Response, StepError> {
        let ledger = self
            .ledger(invocation_id, None)
            .ok_or(StepError::MissingConfig(
                ENV_TABLE,
                "the ledger table holding approvals",
            ))?;
        let approval = approval::decide(&ledger, finding_id, ApprovalStatus::Approved, by).await?;
        // Boxed: a whole response.
        Ok(Box::pin(self.respond_as(
            Some(format!("approval of {finding_id} by {by}")),
            approval.event.as_bytes(),
            invocation_id,
            None,
            None,
            Some(by),
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
        let ledger = self
            .ledger(invocation_id, None)
            .ok_or(StepError::MissingConfig(
                ENV_TABLE,
                "the ledger table holding approvals",
            ))?;
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
        for approval in approval::expire_due(ledger).await? {
            let finding_id = approval.finding_id.clone();
            if let Some(topic) = &self.config.topic_arn {
                let subject =
                    format!("[Approval expired] containment NOT done for finding {finding_id}");
                let body = format!(
                    "Nobody approved or rejected the containment of finding {finding_id} (rule {}) by {}.\nNot done: {}.\nThe finding was preserved and reported when it arrived; its workload may still be compromised. Contain it by hand, or change the rule's mode.",
                    approval.rule,
                    approval.expires_at,
                    approval.steps.join("; ")
                );
                crate::actions::notify::publish_text(&self.clients, topic, &subject, &body).await?;
            }
            expired.push(finding_id);
        }
        Ok(expired)
    }
}
