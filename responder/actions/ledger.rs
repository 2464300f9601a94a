//! The incident ledger in DynamoDB: one partition per finding, one item per step, claimed
//! with conditional writes so a replayed, republished or concurrently delivered finding never
//! repeats a finished step, plus an audit item for every received event.
//!
//! Items (`pk`, `sk`):
//! - `finding#{id}`, `step#{action}` — status `claimed` | `done` | `failed` | `released`,
//!   `owner` (invocation), `lease_until`, `attempts`, `rule`, `detail` (JSON), `updated_at`,
//!   and `intended` (JSON each): changes written down before they are made.
//! - `finding#{id}`, `lock` — held while one invocation responds to the finding, so a second
//!   delivery arriving meanwhile stands back instead of racing it step by step. Let go in one
//!   transaction with the last step's outcome and the audit record ([`Ledger::close`]).
//! - `task#{task arn}`, `finding#{id}` — lets a task's STOPPED event or `release TASK_ARN` find
//!   the containment records of that task.
//! - `isolations#{shard}` (16), `finding#{id}` — every finding isolation was attempted for,
//!   until released: what the sweep reads instead of scanning the table.
//! - `hold#{image key}`, `finding#{id}` — an image `hold-deployment` holds: new tasks started
//!   from it are reported (once per task: `finding#{id}`, `watch#{task arn}`) until release.
//! - `guard#{partition}:{region}:{account}:{cluster}`, `services` — per ECS service (attribute
//!   `svc:{name}`), the set of its tasks in containment: the blast-radius guard (`guard.rs`).
//! - `breaker`, `window#{n}` — the findings contained in window `n`: the breaker (`guard.rs`).
//! - `finding#{id}` or `audit#{date}#{shard}` (16 a day), `audit#{time}#{invocation}` — the
//!   full report (without the ACL snapshots if it would not fit an item); expires
//!   through the table's TTL attribute `expires_at`. Step items never expire: `release` needs them.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{aws, StepError};

/// What the ledger calls.
pub const PERMISSIONS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
];

/// How long a claim protects a step (and the response lock) from other invocations when the
/// invocation has no deadline (the CLI). Lambda invocations claim until their deadline plus
/// [`LEASE_MARGIN`] instead: a claim made 55 s into a 60 s invocation then expires 7 s later,
/// not 90 s later, so Lambda's first asynchronous retry (about a minute after the invocation
/// ended) finds it expired and finishes the job.
pub const LEASE: Duration = Duration::from_secs(90);

/// Beyond its deadline an invocation is stopped by Lambda; the margin covers clock
/// differences between hosts.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Partitions a day for audit records of events that are not about one finding.
pub const AUDIT_SHARDS: u8 = 16;

/// DynamoDB refuses items over 400 KB; what a step or report records stays under this.
const ITEM_BUDGET: usize = 350 * 1024;

/// Bulky parts a record can do without: copies of what the evidence bucket keeps.
const BULKY: &[&str] = &["acls_before"];

/// The JSON text of a record, small enough for one item: the ACL snapshots (kept in the
/// evidence bucket) are left out of a record that would not fit, and it says so.
fn fit_item(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= ITEM_BUDGET {
        return text;
    }
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for key in BULKY {
                    map.remove(*key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut smaller = value.clone();
    strip(&mut smaller);
    if let Value::Object(map) = &mut smaller {
        map.insert(
            "omitted_for_size".to_string(),
            serde_json::json!({"keys": BULKY, "bytes": text.len(), "see": "the evidence bucket (network-acls-before.json)"}),
        );
    }
    let text = smaller.to_string();
    if text.len() <= ITEM_BUDGET {
        return text;
    }
    // Nothing this responder writes gets here; if it did, the item must still be written.
    serde_json::json!({"omitted_for_size": {"bytes": text.len()}, "decision": value.get("decision"), "finding_id": value.get("finding_id")}).to_string()
}

/// Where a step stands in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// An invocation holds the step and is carrying it out.
    Claimed,
    /// The step finished successfully.
    Done,
    /// The step failed; a later invocation may claim it again.
    Failed,
    /// The step's changes were undone by a release.
    Released,
}

impl StepStatus {
    /// The status as stored in the item's `status` attribute.
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Claimed => "claimed",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
            StepStatus::Released => "released",
        }
    }

    fn parse(text: &str) -> Option<StepStatus> {
        [
            StepStatus::Claimed,
            StepStatus::Done,
            StepStatus::Failed,
            StepStatus::Released,
        ]
        .into_iter()
        .find(|s| s.name() == text)
    }
}

/// A step item as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The finding the step belongs to.
    pub finding_id: String,
    /// The item's sort key (e.g. `step#{action}`).
    pub key: String,
    /// Where the step stands.
    pub status: StepStatus,
    /// The invocation that last claimed the step.
    pub owner: String,
    /// The rule that asked for the step, if recorded.
    pub rule: Option<String>,
    /// When the item last changed (RFC 3339).
    pub updated_at: String,
    /// Until when the claim holds (epoch seconds).
    pub lease_until: i64,
    /// How many times the step has been claimed.
    pub attempts: u32,
    /// The account of the workload the step acted on (recorded with each claim): where
    /// `release` acts.
    pub account: Option<String>,
    /// What the step recorded when it finished (JSON; null if nothing).
    pub detail: Value,
    /// Changes the step said it was about to make, before making them (JSON each): kept
    /// across retries and finishes, so `release` undoes a change whose invocation died before
    /// recording it.
    pub intended: Vec<Value>,
}

impl StepRecord {
    /// The output the step recorded: a finished step's detail, or the partial output a failed
    /// one kept (`{"error", "partial"}`).
    pub fn output<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let recorded = self.detail.get("partial").unwrap_or(&self.detail);
        serde_json::from_value(recorded.clone()).ok()
    }

    /// The last intent of this shape the step wrote down.
    pub fn last_intent<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        self.intended
            .iter()
            .rev()
            .find_map(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Claimed by an invocation whose lease still runs. A claim whose lease ran out belongs to
    /// an attempt that died (and whose retries may all have failed): what it made is released
    /// like a failed step's, never kept "in progress" for ever.
    pub fn held(&self) -> bool {
        self.status == StepStatus::Claimed && self.lease_until >= Utc::now().timestamp()
    }

    /// The status as the step stands: an expired claim counts as failed.
    pub fn standing(&self) -> StepStatus {
        match self.status {
            StepStatus::Claimed if !self.held() => StepStatus::Failed,
            status => status,
        }
    }
}

/// One claimed step of one finding, for writing down the changes it is about to make.
#[derive(Clone, Copy)]
pub struct StepLog<'a> {
    /// The ledger.
    pub ledger: &'a Ledger,
    /// What an earlier attempt of the step wrote down before it died or failed: changes that
    /// may exist already.
    pub written_down: &'a [Value],
    /// The finding.
    pub finding_id: &'a str,
    /// The step's item (`step#{action}`).
    pub step_key: &'a str,
}

impl StepLog<'_> {
    /// Write down changes before making them (see [`Ledger::record_intent`]).
    pub async fn intend(&self, intents: &[Value]) -> Result<(), StepError> {
        self.ledger
            .record_intent(self.finding_id, self.step_key, intents)
            .await
    }

    /// Take back written-down changes that were not made (or were undone). A failure is
    /// logged, not returned: release checks each written-down change against AWS before it
    /// undoes it, so a stale one costs a check, never a wrong change.
    pub async fn withdraw(&self, intents: &[Value]) {
        if let Err(error) = self
            .ledger
            .withdraw_intents(self.finding_id, self.step_key, intents)
            .await
        {
            tracing::warn!(error = %error, step = self.step_key, "changes not made were not taken back from the record");
        }
    }
}

/// The answer to "may I run this step?".
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Yes: this invocation holds the step until it finishes or the lease runs out. An
    /// earlier attempt that died or failed may have written down changes it was making.
    Acquired {
        /// What that attempt wrote down (see [`Ledger::record_intent`]).
        written_down: Vec<Value>,
        /// The item as it was before this claim, so a claim taken alongside a check that then
        /// says "do not" can be given back exactly ([`Ledger::give_back`]).
        previous: Previous,
    },
    /// No: it already happened (or was released, or another invocation holds it).
    Taken(StepRecord),
}

/// A step's ledger item as it was before a claim (none: there was no item).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Previous(Option<HashMap<String, AttributeValue>>);

/// The DynamoDB incident ledger, used by one invocation (the owner of its claims).
#[derive(Clone, Debug)]
pub struct Ledger {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
    owner: String,
    audit_ttl: Duration,
    /// The invocation's deadline (epoch seconds), when it has one: claims last until then.
    deadline: Option<i64>,
    /// The account of the workload this response acts on, written with every claim.
    account: Option<String>,
}

/// How a step's finish changes its item; only its owner may ([`OWNER_CONDITION`]).
const FINISH_UPDATE: &str = "SET #status = :status, detail = :detail, updated_at = :now";
const OWNER_CONDITION: &str = "#owner = :owner";

fn built(error: aws_sdk_dynamodb::error::BuildError) -> StepError {
    StepError::Refused(format!("DynamoDB TransactWriteItems not built: {error}"))
}

fn finish_names() -> HashMap<String, String> {
    HashMap::from([
        ("#status".to_string(), "status".to_string()),
        ("#owner".to_string(), "owner".to_string()),
    ])
}

/// How a claimed step ended, written by [`Ledger::close`].
#[derive(Debug, Clone)]
pub struct Finish {
    /// The finding.
    pub finding_id: String,
    /// The step's item (`step#…`).
    pub step_key: String,
    /// How it ended.
    pub status: StepStatus,
    /// What it recorded.
    pub detail: Value,
}

/// The end of one response, for [`Ledger::close`].
pub struct End<'a> {
    /// Outcomes not yet recorded.
    pub finishes: Vec<Finish>,
    /// The finding whose response lock this invocation holds, if it holds one.
    pub lock_of: Option<&'a str>,
    /// The finding the audit record is about, if any.
    pub audit_of: Option<&'a str>,
    /// The report.
    pub report: &'a Value,
    /// When the event was received.
    pub at: DateTime<Utc>,
}

/// What [`Ledger::close`] did.
pub struct Closed {
    /// Where the audit record is, or why it is not.
    pub audit: Result<String, StepError>,
    /// Why the response lock was not let go (its lease then runs out on its own).
    pub unlock: Option<StepError>,
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The sweep's index partition of isolations: `isolations#{shard}`.
fn isolations_pk(shard: u8) -> String {
    format!("isolations#{shard:02}")
}

/// A finding's shard of the isolation index.
fn isolation_shard(finding_id: &str) -> u8 {
    Sha256::digest(finding_id.as_bytes())[0] % AUDIT_SHARDS
}

/// The partition key of a finding's items: `finding#{id}`.
pub fn finding_pk(finding_id: &str) -> String {
    format!("finding#{finding_id}")
}

impl Ledger {
    /// A ledger on `table` whose claims belong to `owner` (the invocation id); audit records
    /// expire after `audit_ttl_days` days.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        owner: impl Into<String>,
        audit_ttl_days: u32,
    ) -> Ledger {
        Ledger {
            client,
            table: table.into(),
            owner: owner.into(),
            audit_ttl: Duration::from_secs(u64::from(audit_ttl_days) * 86_400),
            deadline: None,
            account: None,
        }
    }

    /// Claims record `account` as the workload's (a member account's, or this one's).
    pub fn for_account(mut self, account: &str) -> Ledger {
        self.account = Some(account.to_string());
        self
    }

    /// Claims last until the invocation's deadline (plus [`LEASE_MARGIN`]) rather than
    /// [`LEASE`] from the claim.
    pub fn with_deadline(mut self, deadline: Option<std::time::SystemTime>) -> Ledger {
        self.deadline = deadline
            .and_then(|d| d.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        self
    }

    /// When a claim made now expires (epoch seconds).
    pub fn lease_until(&self, now: DateTime<Utc>) -> i64 {
        match self.deadline {
            Some(deadline) => deadline + LEASE_MARGIN.as_secs() as i64,
            None => now.timestamp() + LEASE.as_secs() as i64,
        }
    }

    /// Claim a step: succeeds when the step was never claimed, failed before, or its claim
    /// expired; otherwise returns what is recorded.
    pub async fn claim(
        &self,
        finding_id: &str,
        step_key: &str,
        rule: &str,
    ) -> Result<Claim, StepError> {
        self.claim_with(finding_id, step_key, rule, &[]).await
    }

    /// [`Ledger::claim`], writing down in the same call changes the step is about to make
    /// (see [`Ledger::record_intent`]): known from reads made before the claim, they cost no
    /// round trip of their own. Returned among the claim's `written_down`.
    pub async fn claim_with(
        &self,
        finding_id: &str,
        step_key: &str,
        rule: &str,
        intents: &[Value],
    ) -> Result<Claim, StepError> {
        let now = Utc::now();
        let lease_until = self.lease_until(now);
        let (account_set, account) = match &self.account {
            Some(account) => (", account = :account", Some(s(account))),
            None => ("", None),
        };
        let intended_set = if intents.is_empty() {
            ""
        } else {
            ", intended = list_append(if_not_exists(intended, :none), :new)"
        };
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(finding_pk(finding_id)))
            .key("sk", s(step_key))
            .update_expression(format!(
                "SET #status = :claimed, #owner = :owner, lease_until = :lease, #rule = :rule, \
                 updated_at = :now, attempts = if_not_exists(attempts, :zero) + :one{account_set}{intended_set}"
            ))
            // A claim this invocation already holds is its own: the SDK retried a write whose
            // answer was lost. (Lambda's retry of a dead invocation is another owner: it finds
            // the claim expired.) Never a step it finished: that stays done.
            .condition_expression(
                "attribute_not_exists(pk) OR #status = :failed OR \
                 (#status = :claimed AND (lease_until < :epoch OR #owner = :owner))",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#rule", "rule")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":failed", s("failed"))
            .expression_attribute_values(":owner", s(&self.owner))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":epoch", n(now.timestamp()))
            .expression_attribute_values(":rule", s(rule))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            // The item as it was: an earlier attempt's written-down changes, in the same call.
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld);
        let request = match account {
            Some(account) => request.expression_attribute_values(":account", account),
            None => request,
        };
        let request = if intents.is_empty() {
            request
        } else {
            let items: Vec<AttributeValue> = intents.iter().map(|i| s(i.to_string())).collect();
            request
                .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
                .expression_attribute_values(":new", AttributeValue::L(items))
        };
        // An item a transaction is writing (a step's finish, the response's end) refuses other
        // writes for those milliseconds (TransactionConflictException), and the SDK does not
        // retry that: tried again here a few times before it counts as an error.
        let mut pause = Duration::from_millis(20);
        let result = loop {
            let result = request.clone().send().await;
            let conflict = result.as_ref().err().is_some_and(|e| {
                e.as_service_error()
                    .is_some_and(|e| e.is_transaction_conflict_exception())
            });
            if !conflict || pause > Duration::from_millis(160) {
                break result;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        };
        match result {
            Ok(output) => {
                let mut written_down = output.attributes().map(intended_of).unwrap_or_default();
                for intent in intents {
                    if !written_down.contains(intent) {
                        written_down.push(intent.clone());
                    }
                }
                Ok(Claim::Acquired {
                    written_down,
                    previous: Previous(output.attributes().filter(|a| !a.is_empty()).cloned()),
                })
            }
            Err(error) => {
                let conditional = error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception());
                if !conditional {
                    return Err(aws("DynamoDB UpdateItem (claim step)")(error));
                }
                match self.get_step(finding_id, step_key).await? {
                    Some(record) => Ok(Claim::Taken(record)),
                    // Deleted between the two calls: nobody holds it, but do not race; report.
                    None => Err(StepError::Refused(format!(
                        "the ledger item {step_key} changed while being claimed; retry"
                    ))),
                }
            }
        }
    }

    /// Take a short lock on a shared resource (`pk`/`sk`, e.g. a VPC's network ACL rule
    /// numbers), waiting up to `wait` while another invocation holds it. A holder that crashed
    /// is forgotten when its `lease` runs out.
    pub async fn lock(
        &self,
        pk: &str,
        sk: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<(), StepError> {
        let deadline = std::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(25);
        loop {
            let now = Utc::now();
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .item("owner", s(&self.owner))
                // Never past the invocation's own claims: a holder that died is forgotten
                // by the time Lambda's retry comes.
                .item(
                    "lease_until",
                    n((now.timestamp() + lease.as_secs() as i64).min(self.lease_until(now))),
                )
                .item("updated_at", s(now.to_rfc3339()))
                .condition_expression(
                    "attribute_not_exists(pk) OR lease_until < :now OR #owner = :owner",
                )
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":now", n(now.timestamp()))
                .expression_attribute_values(":owner", s(&self.owner))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    if std::time::Instant::now() + pause > deadline {
                        return Err(StepError::Aws {
                            operation: "DynamoDB PutItem (lock)",
                            code: "LockBusy".to_string(),
                            message: format!(
                                "{pk} {sk} stayed locked by another invocation for {wait:?}"
                            ),
                            retryable: true,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(400));
                }
                Err(error) => return Err(aws("DynamoDB PutItem (lock)")(error)),
            }
        }
    }

    /// Release a lock taken with [`Ledger::lock`].
    pub async fn unlock(&self, pk: &str, sk: &str) -> Result<(), StepError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&self.owner))
            .send()
            .await
            .map_err(aws("DynamoDB DeleteItem (unlock)"))?;
        Ok(())
    }

    /// Give back a claim this invocation will not use, leaving the item as it was before
    /// (an earlier attempt's failure and written-down changes included). Only the owner may.
    pub async fn give_back(
        &self,
        finding_id: &str,
        step_key: &str,
        previous: Previous,
    ) -> Result<(), StepError> {
        let Previous(Some(item)) = previous else {
            return self.unclaim(finding_id, step_key).await;
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&self.owner))
            .send()
            .await
            .map_err(aws("DynamoDB PutItem (give back a claim)"))?;
        Ok(())
    }

    /// Seconds left before the invocation's deadline, when it has one.
    pub fn seconds_left(&self) -> Option<i64> {
        self.deadline.map(|d| d - Utc::now().timestamp())
    }

    /// Let go of a claim without recording an outcome (the per-finding response lock).
    pub async fn unclaim(&self, finding_id: &str, key: &str) -> Result<(), StepError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(finding_pk(finding_id)))
            .key("sk", s(key))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(&self.owner))
            .send()
            .await
            .map_err(aws("DynamoDB DeleteItem (unclaim)"))?;
        Ok(())
    }

    /// Record how a claimed step ended. Only the owner may finish its claim.
    pub async fn finish(
        &self,
        finding_id: &str,
        step_key: &str,
        status: StepStatus,
        detail: &Value,
    ) -> Result<(), StepError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(finding_pk(finding_id)))
            .key("sk", s(step_key))
            .update_expression(FINISH_UPDATE)
            .condition_expression(OWNER_CONDITION)
            .set_expression_attribute_names(Some(finish_names()))
            .set_expression_attribute_values(Some(self.finish_values(status, detail)))
            .send()
            .await
            .map_err(aws("DynamoDB UpdateItem (finish step)"))?;
        Ok(())
    }

    fn finish_values(&self, status: StepStatus, detail: &Value) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (":status".to_string(), s(status.name())),
            (":detail".to_string(), s(fit_item(detail))),
            (":now".to_string(), s(Utc::now().to_rfc3339())),
            (":owner".to_string(), s(&self.owner)),
        ])
    }

    /// The end of a response in one write: the steps' outcomes not yet recorded, the response
    /// lock let go, the audit record. All or none, so no later delivery takes the lock before
    /// the outcomes are in. Should the transaction fail (a condition no longer holds: the
    /// lock's lease ran out and another invocation took it; throttling), the same writes are
    /// made one at a time: the outcomes, then the lock and the audit record together, as
    /// before transactions. The audit record is written whatever happens.
    pub async fn close(&self, end: &End<'_>) -> Closed {
        if end.finishes.is_empty() && end.lock_of.is_none() {
            let audit = self.put_audit(end.audit_of, end.report, end.at).await;
            return Closed {
                audit,
                unlock: None,
            };
        }
        match self.close_in_one(end).await {
            Ok(audit) => Closed {
                audit: Ok(audit),
                unlock: None,
            },
            Err(error) => {
                tracing::warn!(error = %error, "the response's end not written in one transaction: one write at a time");
                self.finish_each(&end.finishes).await;
                let unlock = async {
                    match end.lock_of {
                        Some(finding_id) => self.unclaim(finding_id, "lock").await.err(),
                        None => None,
                    }
                };
                let (audit, unlock) =
                    tokio::join!(self.put_audit(end.audit_of, end.report, end.at), unlock);
                Closed { audit, unlock }
            }
        }
    }

    /// Record how several claimed steps ended, in one transaction when there are several;
    /// should it fail (a condition no longer holds, throttling), one write at a time.
    pub async fn finish_all(&self, finishes: &[Finish]) {
        if finishes.len() > 1 {
            let written = match finishes
                .iter()
                .map(|step| self.finish_item(step))
                .collect::<Result<Vec<_>, StepError>>()
            {
                Ok(items) => self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("DynamoDB TransactWriteItems (finish steps)")),
                Err(error) => Err(error),
            };
            match written {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(error = %error, "steps' outcomes not written in one transaction: one write at a time");
                }
            }
        }
        self.finish_each(finishes).await;
    }

    /// Each step's outcome in its own write, concurrently.
    async fn finish_each(&self, finishes: &[Finish]) {
        futures::future::join_all(finishes.iter().map(|step| async move {
            if let Err(error) = self
                .finish(&step.finding_id, &step.step_key, step.status, &step.detail)
                .await
            {
                tracing::error!(finding_id = %step.finding_id, step = %step.step_key, error = %error, "step outcome not recorded");
            }
        }))
        .await;
    }

    /// A step's finish as part of a transaction.
    fn finish_item(
        &self,
        step: &Finish,
    ) -> Result<aws_sdk_dynamodb::types::TransactWriteItem, StepError> {
        let update = aws_sdk_dynamodb::types::Update::builder()
            .table_name(&self.table)
            .key("pk", s(finding_pk(&step.finding_id)))
            .key("sk", s(&step.step_key))
            .update_expression(FINISH_UPDATE)
            .condition_expression(OWNER_CONDITION)
            .set_expression_attribute_names(Some(finish_names()))
            .set_expression_attribute_values(Some(self.finish_values(step.status, &step.detail)))
            .build()
            .map_err(built)?;
        Ok(aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .update(update)
            .build())
    }

    async fn close_in_one(&self, end: &End<'_>) -> Result<String, StepError> {
        use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
        let mut items = Vec::with_capacity(end.finishes.len() + 2);
        for step in &end.finishes {
            items.push(self.finish_item(step)?);
        }
        if let Some(finding_id) = end.lock_of {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(finding_pk(finding_id)))
                .key("sk", s("lock"))
                .condition_expression("#owner = :owner")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":owner", s(&self.owner))
                .build()
                .map_err(built)?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        let (place, item) = self.audit_item(end.audit_of, end.report, end.at);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(built)?;
        items.push(TransactWriteItem::builder().put(put).build());
        // The SDK gives the call an idempotency token (ClientRequestToken) before its retries:
        // a retry of a transaction whose answer was lost is answered as the first was, not
        // refused by the lock it already deleted.
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(aws("DynamoDB TransactWriteItems (end of the response)"))?;
        Ok(place)
    }

    /// Say, before making them, which changes a claimed step is about to make. Appended to
    /// what earlier attempts said (never replaced), and untouched by [`Ledger::finish`].
    pub async fn record_intent(
        &self,
        finding_id: &str,
        step_key: &str,
        intents: &[Value],
    ) -> Result<(), StepError> {
        if intents.is_empty() {
            return Ok(());
        }
        let items: Vec<AttributeValue> = intents.iter().map(|i| s(i.to_string())).collect();
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(finding_pk(finding_id)))
            .key("sk", s(step_key))
            .update_expression("SET intended = list_append(if_not_exists(intended, :none), :new)")
            .condition_expression("#owner = :owner AND #status = :claimed")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":new", AttributeValue::L(items))
            .expression_attribute_values(":owner", s(&self.owner))
            .expression_attribute_values(":claimed", s("claimed"))
            .send()
            .await
            .map_err(aws("DynamoDB UpdateItem (record intent)"))?;
        Ok(())
    }

    /// Withdraw changes this attempt wrote down and then did not make (refused and rolled
    /// back): they may name rule numbers another response now holds, which a later release
    /// must not take for this one's. Appended as a marker, so what else was written down stays.
    pub async fn withdraw_intents(
        &self,
        finding_id: &str,
        step_key: &str,
        intents: &[Value],
    ) -> Result<(), StepError> {
        if intents.is_empty() {
            return Ok(());
        }
        let marker = serde_json::json!({ WITHDRAWN: intents });
        self.record_intent(finding_id, step_key, &[marker]).await
    }

    /// Mark a finished (or partly applied) step released, keeping what was done.
    pub async fn mark_released(
        &self,
        finding_id: &str,
        step_key: &str,
        release_detail: &Value,
    ) -> Result<(), StepError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(finding_pk(finding_id)))
            .key("sk", s(step_key))
            .update_expression("SET #status = :released, released = :detail, updated_at = :now")
            // A claim whose lease ran out is a dead attempt's: released like a failed step.
            .condition_expression(
                "#status IN (:done, :failed) OR (#status = :claimed AND lease_until < :epoch)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":epoch", n(Utc::now().timestamp()))
            .expression_attribute_values(":released", s("released"))
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":failed", s("failed"))
            .expression_attribute_values(":detail", s(release_detail.to_string()))
            .expression_attribute_values(":now", s(Utc::now().to_rfc3339()))
            .send()
            .await
            .map_err(aws("DynamoDB UpdateItem (mark released)"))?;
        Ok(())
    }

    /// One step item (a strongly consistent read); `None` when there is none.
    pub async fn get_step(
        &self,
        finding_id: &str,
        step_key: &str,
    ) -> Result<Option<StepRecord>, StepError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(finding_pk(finding_id)))
            .key("sk", s(step_key))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws("DynamoDB GetItem"))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| step_record(finding_id, item)))
    }

    /// Every isolate step item of every finding isolation was attempted for (the
    /// `isolations#{shard}` index: 16 queries, never a scan of the table's audit items).
    pub async fn isolate_records(&self) -> Result<Vec<StepRecord>, StepError> {
        let keys: Vec<String> = (0..AUDIT_SHARDS).map(isolations_pk).collect();
        let shards =
            futures::future::join_all(keys.iter().map(|pk| self.query_prefix(pk, "finding#")))
                .await;
        let mut ids = Vec::new();
        for items in shards {
            ids.extend(
                items?
                    .iter()
                    .filter_map(|item| match item.get("finding_id") {
                        Some(AttributeValue::S(id)) => Some(id.clone()),
                        _ => None,
                    }),
            );
        }
        let steps = futures::future::join_all(
            ids.iter()
                .map(|id| self.get_step(id, crate::actions::isolate::STEP_KEY)),
        )
        .await;
        let mut records = Vec::new();
        for step in steps {
            records.extend(step?);
        }
        Ok(records)
    }

    /// Index a finding whose isolation may change ACLs or groups, for the sweep.
    pub async fn index_isolation(&self, finding_id: &str) -> Result<(), StepError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(isolations_pk(isolation_shard(finding_id))))
            .item("sk", s(finding_pk(finding_id)))
            .item("finding_id", s(finding_id))
            .item("updated_at", s(Utc::now().to_rfc3339()))
            .send()
            .await
            .map_err(aws("DynamoDB PutItem (isolation index)"))?;
        Ok(())
    }

    /// Drop a released finding from the sweep's index.
    pub async fn unindex_isolation(&self, finding_id: &str) -> Result<(), StepError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(isolations_pk(isolation_shard(finding_id))))
            .key("sk", s(finding_pk(finding_id)))
            .send()
            .await
            .map_err(aws("DynamoDB DeleteItem (isolation index)"))?;
        Ok(())
    }

    /// Every step item of a finding (audit items excluded).
    pub async fn steps(&self, finding_id: &str) -> Result<Vec<StepRecord>, StepError> {
        let items = self.query_prefix(&finding_pk(finding_id), "step#").await?;
        Ok(items
            .iter()
            .filter_map(|item| step_record(finding_id, item))
            .collect())
    }

    pub(super) async fn query_prefix(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StepError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws("DynamoDB Query"))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Remember that a task has containment records under a finding.
    pub async fn index_task(&self, task_arn: &str, finding_id: &str) -> Result<(), StepError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("task#{task_arn}")))
            .item("sk", s(finding_pk(finding_id)))
            .item("finding_id", s(finding_id))
            .item("updated_at", s(Utc::now().to_rfc3339()))
            .send()
            .await
            .map_err(aws("DynamoDB PutItem (task index)"))?;
        Ok(())
    }

    /// The ids of the findings that recorded containment of a task.
    pub async fn findings_for_task(&self, task_arn: &str) -> Result<Vec<String>, StepError> {
        let items = self
            .query_prefix(&format!("task#{task_arn}"), "finding#")
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| match item.get("finding_id") {
                Some(AttributeValue::S(id)) => Some(id.clone()),
                _ => None,
            })
            .collect())
    }

    /// Hold an image for a finding (`hold#{key}` / `finding#{id}`): tasks started from it are
    /// reported until the finding is released.
    pub async fn put_hold(
        &self,
        key: &str,
        finding_id: &str,
        hold: &Value,
    ) -> Result<(), StepError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("hold#{key}")))
            .item("sk", s(finding_pk(finding_id)))
            .item("finding_id", s(finding_id))
            .item("detail", s(hold.to_string()))
            .item("updated_at", s(Utc::now().to_rfc3339()))
            .send()
            .await
            .map_err(aws("DynamoDB PutItem (hold)"))?;
        Ok(())
    }

    /// The holds on an image key, each as written.
    pub async fn holds(&self, key: &str) -> Result<Vec<Value>, StepError> {
        let items = self
            .query_prefix(&format!("hold#{key}"), "finding#")
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| match item.get("detail") {
                Some(AttributeValue::S(text)) => serde_json::from_str(text).ok(),
                _ => None,
            })
            .collect())
    }

    /// Lift a finding's hold on an image key.
    pub async fn lift_hold(&self, key: &str, finding_id: &str) -> Result<(), StepError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("hold#{key}")))
            .key("sk", s(finding_pk(finding_id)))
            .send()
            .await
            .map_err(aws("DynamoDB DeleteItem (hold)"))?;
        Ok(())
    }

    /// The audit record of one received event. Written even for skips and failures.
    pub async fn put_audit(
        &self,
        finding_id: Option<&str>,
        report: &Value,
        at: DateTime<Utc>,
    ) -> Result<String, StepError> {
        let (place, item) = self.audit_item(finding_id, report, at);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws("DynamoDB PutItem (audit)"))?;
        Ok(place)
    }

    /// Where an audit record goes (`pk / sk`) and the item.
    fn audit_item(
        &self,
        finding_id: Option<&str>,
        report: &Value,
        at: DateTime<Utc>,
    ) -> (String, HashMap<String, AttributeValue>) {
        // Events without a finding (task state changes, foreign events) come in bursts during
        // deployments: spread over 16 partitions a day, not one hot key.
        let pk = match finding_id {
            Some(id) => finding_pk(id),
            None => {
                let shard = Sha256::digest(self.owner.as_bytes())[0] % AUDIT_SHARDS;
                format!("audit#{}#{shard:02}", at.format("%Y-%m-%d"))
            }
        };
        let sk = format!("audit#{}#{}", at.to_rfc3339(), self.owner);
        let expires_at = at.timestamp() + self.audit_ttl.as_secs() as i64;
        let place = format!("{pk} / {sk}");
        let item = HashMap::from([
            ("pk".to_string(), s(pk)),
            ("sk".to_string(), s(sk)),
            ("report".to_string(), s(fit_item(report))),
            (
                "decision".to_string(),
                s(report["decision"].as_str().unwrap_or("unknown")),
            ),
            ("expires_at".to_string(), n(expires_at)),
            ("updated_at".to_string(), s(at.to_rfc3339())),
        ]);
        (place, item)
    }

    /// Audit records of a finding, oldest first (for people inspecting the ledger).
    pub async fn audits(&self, finding_id: &str) -> Result<Vec<Value>, StepError> {
        let items = self.query_prefix(&finding_pk(finding_id), "audit#").await?;
        Ok(items
            .iter()
            .filter_map(|item| match item.get("report") {
                Some(AttributeValue::S(text)) => serde_json::from_str(text).ok(),
                _ => None,
            })
            .collect())
    }
}

fn step_record(finding_id: &str, item: &HashMap<String, AttributeValue>) -> Option<StepRecord> {
    let text = |key: &str| match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let number = |key: &str| match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    Some(StepRecord {
        finding_id: finding_id.to_string(),
        key: text("sk")?,
        status: StepStatus::parse(&text("status")?)?,
        owner: text("owner").unwrap_or_default(),
        rule: text("rule"),
        updated_at: text("updated_at").unwrap_or_default(),
        lease_until: number("lease_until").unwrap_or(0),
        attempts: number("attempts").unwrap_or(0).try_into().unwrap_or(0),
        account: text("account"),
        detail: text("detail")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(Value::Null),
        intended: intended_of(item),
    })
}

/// The changes an item's `intended` list wrote down.
/// The key of a marker in a step's written-down changes that withdraws earlier ones.
const WITHDRAWN: &str = "withdrawn";

/// The changes written down and not withdrawn, in order.
fn intended_of(item: &HashMap<String, AttributeValue>) -> Vec<Value> {
    let Some(AttributeValue::L(items)) = item.get("intended") else {
        return Vec::new();
    };
    let mut intended: Vec<Value> = Vec::new();
    for value in items.iter().filter_map(|i| match i {
        AttributeValue::S(text) => serde_json::from_str::<Value>(text).ok(),
        _ => None,
    }) {
        match value.get(WITHDRAWN).and_then(Value::as_array) {
            Some(withdrawn) => intended.retain(|i| !withdrawn.contains(i)),
            // A retried claim carries its intents again: one of each, in its latest place.
            None => {
                intended.retain(|i| *i != value);
                intended.push(value);
            }
        }
    }
    intended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withdrawn_intents_are_no_longer_written_down_and_a_later_one_counts_again() {
        let entry = |n: u32| serde_json::json!({"acl_id": "acl-1", "rule_number": n});
        let list = |values: Vec<Value>| {
            HashMap::from([(
                "intended".to_string(),
                AttributeValue::L(values.iter().map(|v| s(v.to_string())).collect()),
            )])
        };
        let swap = serde_json::json!({"eni_id": "eni-1"});
        let item = list(vec![
            swap.clone(),
            entry(1),
            entry(2),
            serde_json::json!({ WITHDRAWN: [entry(1), entry(2)] }),
            entry(3),
        ]);
        assert_eq!(intended_of(&item), vec![swap.clone(), entry(3)]);
        let again = list(vec![
            entry(1),
            serde_json::json!({ WITHDRAWN: [entry(1)] }),
            entry(1),
        ]);
        assert_eq!(intended_of(&again), vec![entry(1)]);
    }

    #[test]
    fn a_steps_output_is_its_detail_or_what_a_failure_kept_and_intents_are_read_latest_first() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Out {
            done: bool,
        }
        let record = |detail: Value, intended: Vec<Value>| StepRecord {
            finding_id: "f".to_string(),
            key: "step#x".to_string(),
            status: StepStatus::Failed,
            owner: "o".to_string(),
            rule: None,
            updated_at: String::new(),
            lease_until: 0,
            attempts: 1,
            account: None,
            detail,
            intended,
        };
        let finished = record(serde_json::json!({"done": true}), Vec::new());
        assert_eq!(finished.output::<Out>(), Some(Out { done: true }));
        let failed = record(
            serde_json::json!({"error": "refused", "partial": {"done": false}}),
            vec![
                serde_json::json!({"done": true}),
                serde_json::json!({"other": 1}),
            ],
        );
        assert_eq!(failed.output::<Out>(), Some(Out { done: false }));
        assert_eq!(failed.last_intent::<Out>(), Some(Out { done: true }));
        let nothing_kept = record(
            serde_json::json!({"error": "refused", "partial": null}),
            Vec::new(),
        );
        assert_eq!(nothing_kept.output::<Out>(), None);
        assert_eq!(nothing_kept.last_intent::<Out>(), None);
    }

    #[test]
    fn a_record_too_big_for_an_item_leaves_out_the_acl_snapshots_and_says_so() {
        let small = serde_json::json!({"record": {"nacl_entries": [1, 2], "acls_before": [3]}});
        assert_eq!(fit_item(&small), small.to_string());
        let snapshot: Vec<Value> = (0..5000)
            .map(|i| serde_json::json!({"id": format!("acl-{i:017}"), "entries": "x".repeat(60)}))
            .collect();
        let big = serde_json::json!({
            "result": "contained",
            "record": {"nacl_entries": [{"acl_id": "acl-1", "rule_number": 1}], "acls_before": snapshot},
        });
        assert!(big.to_string().len() > 400 * 1024);
        let fitted: Value = serde_json::from_str(&fit_item(&big)).unwrap();
        assert!(fit_item(&big).len() <= ITEM_BUDGET);
        assert_eq!(
            fitted["record"]["nacl_entries"][0]["rule_number"], 1,
            "what release needs stays"
        );
        assert!(fitted["record"].get("acls_before").is_none());
        assert_eq!(fitted["omitted_for_size"]["keys"][0], "acls_before");
    }
}
