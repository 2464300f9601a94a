//! The blast-radius guard and the breaker, held in the ledger so concurrent invocations agree:
//! each admission is one conditional write, so two findings racing for the last slot of a
//! service (or of the breaker's window) cannot both win. What the numbers allow is decided in
//! [`crate::plan::guard`].

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::ledger::{n, s, Ledger};
use super::{aws, StepError};
use crate::incident::ArnParts;

/// How an admission went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted (or admitted before: a retry, a republished finding); this many hold a slot
    /// now, this one included.
    Admitted {
        /// Holders, this one included.
        holders: usize,
        /// Whether this admission added it (not a retry or a republished finding).
        newly: bool,
    },
    /// Every slot is taken (`cap` may be 0: there was none to take).
    Full {
        /// Who holds the slots.
        holders: Vec<String>,
    },
}

/// The guard item of the task's cluster, from the task ARN alone (so release, which knows only
/// the task, finds it): `guard#{partition}:{region}:{account}:{cluster}`.
pub fn guard_pk(task_arn: &str) -> String {
    let cluster = ArnParts::parse(task_arn)
        .map(|p| {
            let name = p
                .resource
                .strip_prefix("task/")
                .and_then(|rest| rest.split_once('/'))
                .map_or("", |(cluster, _)| cluster);
            format!("{}:{}:{}:{name}", p.partition, p.region, p.account)
        })
        .unwrap_or_default();
    format!("guard#{cluster}")
}

const SERVICES_SK: &str = "services";

fn service_attribute(service: &str) -> String {
    format!("svc:{service}")
}

fn string_set(item: Option<&HashMap<String, AttributeValue>>, name: &str) -> Vec<String> {
    item.and_then(|item| item.get(name))
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default()
}

fn one(member: &str) -> AttributeValue {
    AttributeValue::Ss(vec![member.to_string()])
}

fn breaker_sk(window: i64) -> String {
    format!("window#{window}")
}

/// Which set an admission or a release is about: an item and one of its set attributes.
struct Set<'a> {
    pk: &'a str,
    sk: &'a str,
    attribute: &'a str,
    /// For errors: "blast-radius guard" or "breaker".
    what: &'static str,
}

impl Ledger {
    /// The item, read consistently (this decides).
    async fn guard_item(
        &self,
        set: &Set<'_>,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StepError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(set.pk))
            .key("sk", s(set.sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("DynamoDB GetItem (guard)"))?;
        Ok(output.item().cloned())
    }

    /// Add `member` to the set unless it already holds `cap` others: one conditional write,
    /// so of concurrent admissions for the last place exactly one wins. `expires_at`, when
    /// given, is set on the item for the table's TTL.
    async fn admit(
        &self,
        set: &Set<'_>,
        member: &str,
        cap: u32,
        expires_at: Option<i64>,
    ) -> Result<Admission, StepError> {
        if cap == 0 {
            // No place to take; one already held (a retry) stays held.
            let holders = string_set(self.guard_item(set).await?.as_ref(), set.attribute);
            return Ok(if holders.iter().any(|h| h == member) {
                Admission::Admitted {
                    holders: holders.len(),
                    newly: false,
                }
            } else {
                Admission::Full { holders }
            });
        }
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(set.pk))
            .key("sk", s(set.sk))
            .update_expression(match expires_at {
                Some(_) => "ADD #set :member SET expires_at = :expires",
                None => "ADD #set :member",
            })
            .condition_expression(
                "attribute_not_exists(#set) OR contains(#set, :id) OR size(#set) < :cap",
            )
            .expression_attribute_names("#set", set.attribute)
            .expression_attribute_values(":member", one(member))
            .expression_attribute_values(":id", s(member))
            .expression_attribute_values(":cap", n(cap))
            .return_values(ReturnValue::AllOld);
        if let Some(expires_at) = expires_at {
            update = update.expression_attribute_values(":expires", n(expires_at));
        }
        match update.send().await {
            Ok(output) => {
                let before = string_set(output.attributes(), set.attribute);
                let held_before = before.iter().any(|h| h == member);
                Ok(Admission::Admitted {
                    holders: before.len() + usize::from(!held_before),
                    newly: !held_before,
                })
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Admission::Full {
                    holders: string_set(self.guard_item(set).await?.as_ref(), set.attribute),
                })
            }
            Err(error) => Err(aws(set.what)(error)),
        }
    }

    /// Take `member` out of the set (harmless when it is not in it).
    async fn remove(&self, set: &Set<'_>, member: &str) -> Result<(), StepError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(set.pk))
            .key("sk", s(set.sk))
            .update_expression("DELETE #set :member")
            .expression_attribute_names("#set", set.attribute)
            .expression_attribute_values(":member", one(member))
            .send()
            .await
            .map_err(aws(set.what))?;
        Ok(())
    }

    /// Take one of the service's `cap` containment slots for the task.
    pub async fn admit_to_service(
        &self,
        task_arn: &str,
        service: &str,
        cap: u32,
    ) -> Result<Admission, StepError> {
        let pk = guard_pk(task_arn);
        let attribute = service_attribute(service);
        let set = Set {
            pk: &pk,
            sk: SERVICES_SK,
            attribute: &attribute,
            what: "DynamoDB UpdateItem (blast-radius guard)",
        };
        self.admit(&set, task_arn, cap, None).await
    }

    /// Give back the task's slot, whichever service it was taken for (release knows only the
    /// task). Harmless when it holds none.
    pub async fn leave_service(&self, task_arn: &str) -> Result<(), StepError> {
        let pk = guard_pk(task_arn);
        let all = Set {
            pk: &pk,
            sk: SERVICES_SK,
            attribute: "",
            what: "DynamoDB UpdateItem (blast-radius guard release)",
        };
        let Some(item) = self.guard_item(&all).await? else {
            return Ok(());
        };
        for (attribute, tasks) in &item {
            let holds = attribute.starts_with("svc:")
                && tasks.as_ss().is_ok_and(|t| t.iter().any(|t| t == task_arn));
            if holds {
                self.remove(&Set { attribute, ..all }, task_arn).await?;
            }
        }
        Ok(())
    }

    /// Count the finding against the breaker's window `window` (at most `max` findings); the
    /// window's item goes with the table's TTL a day after the window ends.
    pub async fn admit_to_breaker(
        &self,
        window: i64,
        window_ends: i64,
        finding_id: &str,
        max: u32,
    ) -> Result<Admission, StepError> {
        let sk = breaker_sk(window);
        let set = Set {
            pk: "breaker",
            sk: &sk,
            attribute: "findings",
            what: "DynamoDB UpdateItem (breaker)",
        };
        self.admit(&set, finding_id, max, Some(window_ends + 86_400))
            .await
    }

    /// Take back a finding this invocation counted against the breaker's window, when its
    /// containment was held back after all (by the blast-radius guard).
    pub async fn leave_breaker(&self, window: i64, finding_id: &str) -> Result<(), StepError> {
        let sk = breaker_sk(window);
        let set = Set {
            pk: "breaker",
            sk: &sk,
            attribute: "findings",
            what: "DynamoDB UpdateItem (breaker release)",
        };
        self.remove(&set, finding_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_item_is_found_from_the_task_arn_alone() {
        assert_eq!(
            guard_pk("arn:aws:ecs:us-east-1:111122223333:task/prod/0123abcd"),
            "guard#aws:us-east-1:111122223333:prod"
        );
        assert_eq!(
            guard_pk("arn:aws:ecs:us-east-1:111122223333:task/0123abcd"),
            "guard#aws:us-east-1:111122223333:"
        );
    }
}
