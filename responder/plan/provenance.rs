//! Provenance: act only on findings that come from where this deployment expects them. Pure.
//!
//! What this stops: events that are not GuardDuty's as EventBridge delivers them (sources
//! beginning `aws.` cannot be sent with `PutEvents`), a forged export replayed into the
//! function, findings from accounts and regions the deployment does not name, and findings that
//! aim the responder at resources outside their own account, region and partition. What it
//! cannot stop: a principal allowed `lambda:InvokeFunction` on the function can write any
//! envelope, so that permission is as good as the function's own (SECURITY.md).

use serde::Serialize;

use crate::incident::{ArnParts, Incident, Target};

/// Where findings may come from (`RESPONDER_ACCOUNTS`, `RESPONDER_REGIONS`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// Accounts whose findings are handled, as the finding's account and as the account whose
    /// bus delivered it; `None` accepts any.
    pub accounts: Option<Vec<String>>,
    /// Regions whose findings are handled; `None` accepts any.
    pub regions: Option<Vec<String>>,
    /// Refuse findings that did not come in an EventBridge envelope (the Lambda sets this: it
    /// is only ever sent EventBridge events; the CLI replays exports, which have none).
    pub require_envelope: bool,
}

impl Provenance {
    /// Findings about `account`'s resources are handled here.
    pub fn allows_account(&self, account: &str) -> bool {
        allowed(&self.accounts, account)
    }
}

/// Which provenance check refused a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvenanceCheck {
    /// No EventBridge envelope.
    Envelope,
    /// The finding's region, or the envelope's, is not allowed or they disagree.
    Region,
    /// The finding's account, or the delivering account, is not allowed.
    Account,
    /// An ARN in the finding lies outside the finding's account, region or partition.
    ResourceArn,
}

impl ProvenanceCheck {
    /// The check's name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProvenanceCheck::Envelope => "envelope",
            ProvenanceCheck::Region => "region",
            ProvenanceCheck::Account => "account",
            ProvenanceCheck::ResourceArn => "resource_arn",
        }
    }
}

/// Why a finding is refused: the check and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// The check that failed.
    pub check: ProvenanceCheck,
    /// What it found, for people.
    pub detail: String,
}

fn allowed(list: &Option<Vec<String>>, value: &str) -> bool {
    list.as_ref()
        .is_none_or(|list| list.iter().any(|item| item == "*" || item == value))
}

fn refuse(check: ProvenanceCheck, detail: String) -> Option<Refusal> {
    Some(Refusal { check, detail })
}

/// The first provenance check the incident fails, if any.
pub fn check(incident: &Incident, provenance: &Provenance) -> Option<Refusal> {
    use ProvenanceCheck::*;
    match &incident.origin {
        None if provenance.require_envelope => {
            return refuse(
                Envelope,
                "a bare finding, not an EventBridge event from aws.guardduty: this deployment acts only on events EventBridge delivers".to_string(),
            )
        }
        Some(origin) => {
            if let Some(bus_region) = origin.region.as_deref() {
                if bus_region != incident.region {
                    return refuse(
                        Region,
                        format!(
                            "the event says it originated in {bus_region}, but the finding is in {}: GuardDuty publishes a finding in its own region, and EventBridge keeps that region when it forwards an event",
                            incident.region
                        ),
                    );
                }
            }
            if let Some(via) = origin.account.as_deref() {
                if !allowed(&provenance.accounts, via) {
                    return refuse(
                        Account,
                        format!("delivered by account {via}, which RESPONDER_ACCOUNTS does not list"),
                    );
                }
            }
        }
        None => {}
    }
    if !allowed(&provenance.regions, &incident.region) {
        return refuse(
            Region,
            format!(
                "the finding is in region {}, which RESPONDER_REGIONS does not list",
                incident.region
            ),
        );
    }
    if !allowed(&provenance.accounts, &incident.account_id) {
        return refuse(
            Account,
            format!(
                "the finding is about account {}, which RESPONDER_ACCOUNTS does not list",
                incident.account_id
            ),
        );
    }
    resource_arns_agree(incident)
}

/// Every ARN the responder would act on is in the finding's account and region, and in one
/// partition; an ECS task belongs to the cluster the finding names.
fn resource_arns_agree(incident: &Incident) -> Option<Refusal> {
    let partition = incident
        .finding_arn
        .as_deref()
        .and_then(ArnParts::parse)
        .map(|p| p.partition);
    let mut arns: Vec<(&str, &str, bool)> = Vec::new();
    match &incident.target {
        Target::EcsTask(task) => {
            arns.push(("task", &task.task_arn, true));
            arns.push(("cluster", &task.cluster_arn, true));
        }
        Target::Ec2Instance(instance) => {
            if let Some(profile) = &instance.instance_profile_arn {
                // IAM is global: its ARNs have no region.
                arns.push(("instance profile", profile, false));
            }
        }
        Target::EksWorkload(_) | Target::Unsupported { .. } => {}
    }
    let mut first_partition = partition;
    for (what, arn, regional) in arns {
        let Some(parts) = ArnParts::parse(arn) else {
            return refuse(
                ProvenanceCheck::ResourceArn,
                format!("the {what} ARN {arn} is not an ARN"),
            );
        };
        let region_wrong = regional && parts.region != incident.region;
        if parts.account != incident.account_id || region_wrong {
            return refuse(
                ProvenanceCheck::ResourceArn,
                format!(
                    "the {what} ARN {arn} is in account {} region {}, but the finding is about account {} region {}",
                    parts.account,
                    if parts.region.is_empty() { "(global)" } else { parts.region },
                    incident.account_id,
                    incident.region
                ),
            );
        }
        match first_partition {
            Some(expected) if expected != parts.partition => {
                return refuse(
                    ProvenanceCheck::ResourceArn,
                    format!(
                        "the {what} ARN {arn} is in partition {}, the finding in {expected}",
                        parts.partition
                    ),
                )
            }
            _ => first_partition = Some(parts.partition),
        }
    }
    if let Target::EcsTask(task) = &incident.target {
        let task_cluster = ArnParts::parse(&task.task_arn)
            .and_then(|p| p.resource.strip_prefix("task/"))
            .and_then(|rest| rest.split_once('/'))
            .map(|(cluster, _)| cluster);
        let cluster_name =
            ArnParts::parse(&task.cluster_arn).and_then(|p| p.resource.strip_prefix("cluster/"));
        if let (Some(of_task), Some(named)) = (task_cluster, cluster_name) {
            if of_task != named {
                return refuse(
                    ProvenanceCheck::ResourceArn,
                    format!(
                        "the task ARN {} is in cluster {of_task}, but the finding names cluster {named}",
                        task.task_arn
                    ),
                );
            }
        }
    }
    None
}
