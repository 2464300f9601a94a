//! Containment waiting for a person (a rule in `approve` mode): one ledger item per finding,
//! `finding#{id}` / `approval`, written when the response first defers its containment and
//! decided once — approved, rejected, or expired — with a conditional write, so two people (or a
//! person and the clock) cannot both decide it.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::ledger::{finding_pk, n, s, Ledger};
use super::{aws, StepError};

const SORT_KEY: &str = "approval";
/// The partition listing findings whose approval may still be pending, `approval#{id}` each.
const INDEX_PK: &str = "approvals";
const INDEX_PREFIX: &str = "approval#";

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person approved: the containment ran (or is running).
    Approved,
    /// A person rejected it: nothing more is done.
    Rejected,
    /// Nobody decided in time: nothing more is done, and people were told.
    Expired,
}

impl ApprovalStatus {
    /// The status as one word.
    pub fn name(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// A deferred containment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The finding.
    pub finding_id: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// The rule that asked for approval.
    pub rule: String,
    /// What approval will do, a line per step (`isolate: cut the workload off ...`).
    pub steps: Vec<String>,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// Until when it may be approved (RFC 3339).
    pub expires_at: String,
    /// Who decided, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// The event as received: approval answers it again, with the containment enforced.
    #[serde(default, skip_serializing)]
    pub event: String,
}

impl Approval {
    /// Past its expiry at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at).is_ok_and(|at| at < now)
    }
}

/// Ask for approval, once per finding: a republished finding neither renews nor resets it.
/// Returns the approval as recorded (this request, or the earlier one).
pub async fn request(
    ledger: &Ledger,
    finding_id: &str,
    rule: &str,
    steps: Vec<String>,
    expiry_minutes: u32,
    event: &[u8],
) -> Result<Approval, StepError> {
    let now = Utc::now();
    let expires = now + Duration::minutes(i64::from(expiry_minutes));
    let approval = Approval {
        finding_id: finding_id.to_string(),
        status: ApprovalStatus::Pending,
        rule: rule.to_string(),
        steps,
        requested_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires_at: expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        decided_by: None,
        decided_at: None,
        event: String::from_utf8_lossy(event).into_owned(),
    };
    // The index first (the expiry schedule finds pending approvals there): an approval it
    // does not list would expire unseen. Only once: a republished finding must not move it.
    let indexed = ledger
        .client
        .put_item()
        .table_name(&ledger.table)
        .item("pk", s(INDEX_PK))
        .item("sk", s(format!("{INDEX_PREFIX}{finding_id}")))
        .item("expires", n(expires.timestamp()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    if let Err(error) = indexed {
        if !error
            .as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception())
        {
            return Err(aws("DynamoDB PutItem (approval index)")(error));
        }
    }
    let written = ledger
        .client
        .put_item()
        .table_name(&ledger.table)
        .item("pk", s(finding_pk(finding_id)))
        .item("sk", s(SORT_KEY))
        .item("status", s(approval.status.name()))
        .item("expires", n(expires.timestamp()))
        .item(
            "record",
            s(serde_json::to_string(&approval).unwrap_or_default()),
        )
        .item("event", s(&approval.event))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match written {
        Ok(_) => Ok(approval),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            get(ledger, finding_id).await?.ok_or_else(|| {
                StepError::Refused(format!(
                    "finding {finding_id}'s approval changed while being written; retry"
                ))
            })
        }
        Err(error) => Err(aws("DynamoDB PutItem (approval)")(error)),
    }
}

/// The finding's approval, if one was asked for.
pub async fn get(ledger: &Ledger, finding_id: &str) -> Result<Option<Approval>, StepError> {
    let output = ledger
        .client
        .get_item()
        .table_name(&ledger.table)
        .key("pk", s(finding_pk(finding_id)))
        .key("sk", s(SORT_KEY))
        .consistent_read(true)
        .send()
        .await
        .map_err(aws("DynamoDB GetItem (approval)"))?;
    let Some(item) = output.item() else {
        return Ok(None);
    };
    let text = |key: &str| match item.get(key) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let mut approval: Approval = text("record")
        .and_then(|r| serde_json::from_str(&r).ok())
        .ok_or_else(|| {
            StepError::Refused(format!("finding {finding_id}'s approval is unreadable"))
        })?;
    approval.event = text("event").unwrap_or_default();
    if let Some(status) = text("status") {
        approval.status = match status.as_str() {
            "approved" => ApprovalStatus::Approved,
            "rejected" => ApprovalStatus::Rejected,
            "expired" => ApprovalStatus::Expired,
            _ => ApprovalStatus::Pending,
        };
    }
    approval.decided_by = text("decided_by");
    approval.decided_at = text("decided_at");
    Ok(Some(approval))
}

/// Decide a pending, unexpired approval. Anything else is refused with what it is instead.
pub async fn decide(
    ledger: &Ledger,
    finding_id: &str,
    to: ApprovalStatus,
    by: &str,
) -> Result<Approval, StepError> {
    let now = Utc::now();
    let Some(mut approval) = get(ledger, finding_id).await? else {
        return Err(StepError::Refused(format!(
            "nothing awaits approval for finding {finding_id}"
        )));
    };
    let refusal = match approval.status {
        ApprovalStatus::Pending if approval.expired(now) => Some(format!(
            "finding {finding_id}'s approval expired at {}: nothing was contained (a republished finding asks again only once this record is removed)",
            approval.expires_at
        )),
        ApprovalStatus::Pending => None,
        ApprovalStatus::Expired => Some(format!(
            "finding {finding_id}'s approval expired at {}: nothing was contained",
            approval.expires_at
        )),
        decided => Some(format!(
            "finding {finding_id}'s containment was already {} by {} at {}",
            decided.name(),
            approval.decided_by.as_deref().unwrap_or("?"),
            approval.decided_at.as_deref().unwrap_or("?")
        )),
    };
    if let Some(refusal) = refusal {
        return Err(StepError::Refused(refusal));
    }
    if !settle(ledger, finding_id, to, by, now).await? {
        return Err(StepError::Refused(format!(
            "finding {finding_id}'s approval was decided (or expired) just now by someone else"
        )));
    }
    approval.status = to;
    approval.decided_by = Some(by.to_string());
    approval.decided_at = Some(now.to_rfc3339_opts(SecondsFormat::Secs, true));
    Ok(approval)
}

/// Move a pending approval to `to`, recording who and when: before its expiry for a person's
/// decision, after it for [`ApprovalStatus::Expired`]. One conditional write, so a person and
/// the clock cannot both win; `Ok(false)` when the condition did not hold.
async fn settle(
    ledger: &Ledger,
    finding_id: &str,
    to: ApprovalStatus,
    by: &str,
    now: DateTime<Utc>,
) -> Result<bool, StepError> {
    let in_time = if to == ApprovalStatus::Expired {
        "expires < :now"
    } else {
        "expires >= :now"
    };
    let updated = ledger
        .client
        .update_item()
        .table_name(&ledger.table)
        .key("pk", s(finding_pk(finding_id)))
        .key("sk", s(SORT_KEY))
        .update_expression("SET #status = :to, decided_by = :by, decided_at = :at")
        .condition_expression(format!("#status = :pending AND {in_time}"))
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":to", s(to.name()))
        .expression_attribute_values(":by", s(by))
        .expression_attribute_values(":at", s(now.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .expression_attribute_values(":pending", s(ApprovalStatus::Pending.name()))
        .expression_attribute_values(":now", n(now.timestamp()))
        .send()
        .await;
    match updated {
        Ok(_) => Ok(true),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(error) => Err(aws("DynamoDB UpdateItem (approval)")(error)),
    }
}

/// Expire every pending approval past its expiry, and list those expired but not yet told
/// (each stays listed until [`told`] is called for it, so a notice that failed is sent by the
/// next run). Decided approvals leave the index.
pub async fn expire_due(ledger: &Ledger) -> Result<Vec<Approval>, StepError> {
    let now = Utc::now();
    let mut to_tell = Vec::new();
    for item in ledger.query_prefix(INDEX_PK, INDEX_PREFIX).await? {
        let Some(AttributeValue::S(key)) = item.get("sk") else {
            continue;
        };
        let Some(finding_id) = key.strip_prefix(INDEX_PREFIX) else {
            continue;
        };
        let Some(mut approval) = get(ledger, finding_id).await? else {
            told(ledger, finding_id).await?;
            continue;
        };
        match approval.status {
            ApprovalStatus::Pending if approval.expired(now) => {
                // Decided in between: the next run sees how.
                if settle(ledger, finding_id, ApprovalStatus::Expired, "expiry", now).await? {
                    approval.status = ApprovalStatus::Expired;
                    to_tell.push(approval);
                }
            }
            ApprovalStatus::Pending => {}
            // Expired by an earlier run whose notice did not go out.
            ApprovalStatus::Expired => to_tell.push(approval),
            ApprovalStatus::Approved | ApprovalStatus::Rejected => told(ledger, finding_id).await?,
        }
    }
    Ok(to_tell)
}

/// The approval's outcome was told (or needs no telling): it leaves the index.
pub async fn told(ledger: &Ledger, finding_id: &str) -> Result<(), StepError> {
    ledger
        .client
        .delete_item()
        .table_name(&ledger.table)
        .key("pk", s(INDEX_PK))
        .key("sk", s(format!("{INDEX_PREFIX}{finding_id}")))
        .send()
        .await
        .map_err(aws("DynamoDB DeleteItem (approval index)"))?;
    Ok(())
}
