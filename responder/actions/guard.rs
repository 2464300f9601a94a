//! The blast-radius guard and the breaker, held in the ledger so concurrent invocations agree:
//! each admission is one conditional write, so two findings racing for the last slot of a
//! service (or of the breaker's window) cannot both win. What the numbers allow is decided in
//! [`crate::plan::guard`].

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

fn string_set(
    item: Option<&std::collections::HashMap<String, AttributeValue>>,
    name: &str,
) -> Vec<String> {
    item.and_then(|item| item.get(name))
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default()
}

impl Ledger {
    /// The members of a set attribute of an item (read consistently: this decides).
    async fn holders(&self, pk: &str, sk: &str, attribute: &str) -> Result<Vec<String>, StepError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("DynamoDB GetItem (blast-radius guard)"))?;
        Ok(string_set(item.item(), attribute))
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
        if cap == 0 {
            // No slot to take; one already held (a retry) stays held.
            let holders = self.holders(&pk, SERVICES_SK, &attribute).await?;
            return Ok(if holders.iter().any(|h| h == task_arn) {
                Admission::Admitted {
                    holders: holders.len(),
                    newly: false,
                }
            } else {
                Admission::Full { holders }
            });
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(SERVICES_SK))
            .update_expression("ADD #tasks :task")
            .condition_expression(
                "attribute_not_exists(#tasks) OR contains(#tasks, :arn) OR size(#tasks) < :cap",
            )
            .expression_attribute_names("#tasks", &attribute)
            .expression_attribute_values(":task", AttributeValue::Ss(vec![task_arn.to_string()]))
            .expression_attribute_values(":arn", s(task_arn))
            .expression_attribute_values(":cap", n(cap))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Admission::Admitted {
                holders: string_set(output.attributes(), &attribute).len().max(1),
                newly: true,
            }),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Admission::Full {
                    holders: self.holders(&pk, SERVICES_SK, &attribute).await?,
                })
            }
            Err(error) => Err(aws("DynamoDB UpdateItem (blast-radius guard)")(error)),
        }
    }

    /// Give back the task's slot, whichever service it was taken for (release knows only the
    /// task). Harmless when it holds none.
    pub async fn leave_service(&self, task_arn: &str) -> Result<(), StepError> {
        let pk = guard_pk(task_arn);
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(SERVICES_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("DynamoDB GetItem (blast-radius guard)"))?;
        let Some(item) = item.item() else {
            return Ok(());
        };
        let held: Vec<&String> = item
            .iter()
            .filter(|(name, value)| {
                name.starts_with("svc:")
                    && value
                        .as_ss()
                        .is_ok_and(|tasks| tasks.iter().any(|t| t == task_arn))
            })
            .map(|(name, _)| name)
            .collect();
        for (i, attribute) in held.into_iter().enumerate() {
            let placeholder = format!("#s{i}");
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s(SERVICES_SK))
                .update_expression(format!("DELETE {placeholder} :task"))
                .expression_attribute_names(&placeholder, attribute)
                .expression_attribute_values(
                    ":task",
                    AttributeValue::Ss(vec![task_arn.to_string()]),
                )
                .send()
                .await
                .map_err(aws("DynamoDB UpdateItem (blast-radius guard release)"))?;
        }
        Ok(())
    }

    /// Take back a finding this invocation counted against the breaker's window, when its
    /// containment was held back after all (by the blast-radius guard).
    pub async fn leave_breaker(&self, window: i64, finding_id: &str) -> Result<(), StepError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s("breaker"))
            .key("sk", s(format!("window#{window}")))
            .update_expression("DELETE findings :finding")
            .expression_attribute_values(
                ":finding",
                AttributeValue::Ss(vec![finding_id.to_string()]),
            )
            .send()
            .await
            .map_err(aws("DynamoDB UpdateItem (breaker release)"))?;
        Ok(())
    }

    /// Count the finding against the breaker's window `window` (at most `max` findings).
    pub async fn admit_to_breaker(
        &self,
        window: i64,
        window_ends: i64,
        finding_id: &str,
        max: u32,
    ) -> Result<Admission, StepError> {
        if max == 0 {
            return Ok(Admission::Full {
                holders: Vec::new(),
            });
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s("breaker"))
            .key("sk", s(format!("window#{window}")))
            // The window's item goes with the table's TTL a day after it ends.
            .update_expression("ADD findings :finding SET expires_at = :expires")
            .condition_expression(
                "attribute_not_exists(findings) OR contains(findings, :id) OR size(findings) < :max",
            )
            .expression_attribute_values(
                ":finding",
                AttributeValue::Ss(vec![finding_id.to_string()]),
            )
            .expression_attribute_values(":id", s(finding_id))
            .expression_attribute_values(":max", n(max))
            .expression_attribute_values(":expires", n(window_ends + 86_400))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let before = string_set(output.attributes(), "findings");
                let counted_before = before.iter().any(|f| f == finding_id);
                Ok(Admission::Admitted {
                    holders: before.len() + usize::from(!counted_before),
                    newly: !counted_before,
                })
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Admission::Full {
                    holders: self
                        .holders("breaker", &format!("window#{window}"), "findings")
                        .await?,
                })
            }
            Err(error) => Err(aws("DynamoDB UpdateItem (breaker)")(error)),
        }
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
