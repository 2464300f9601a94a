//! `responder sweep`: quarantine entries left behind. A STOPPED event missed, a release that
//! failed, an invocation that died: an entry for an address outlives its workload and blocks
//! the next one given that address. The sweep matches every entry in the reserved range
//! against the ledger, releases the quarantines whose workload is gone, and reports — never
//! touches — entries no record explains.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::release::{containment_of, with_intended, FindingRelease};
use super::Responder;
use crate::actions::ledger::{StepRecord, StepStatus};
use crate::actions::sweep::{liveness, reserved_entries, FoundEntry, Liveness};
use crate::actions::StepError;
use crate::network::parse_cidr;

/// A quarantine the sweep leaves in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The finding it was made for.
    pub finding_id: String,
    /// The workload (task ARN or instance id).
    pub target: String,
    /// Why it stays.
    pub why: String,
}

/// What the sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepReport {
    /// Entries looked at (in the reserved range of every ACL of the region).
    pub entries_in_range: usize,
    /// Quarantines released because their workload is gone.
    pub released: Vec<FindingRelease>,
    /// Quarantines left in place.
    pub kept: Vec<Kept>,
    /// Entries in the range that no ledger record explains: someone else's, never touched.
    pub unrecognised: Vec<FoundEntry>,
    /// What could not be checked or done.
    pub errors: Vec<String>,
}

impl SweepReport {
    /// One line per finding and entry, for people.
    pub fn to_text(&self) -> String {
        let mut lines = vec![format!(
            "{} in the reserved range; {} released, {} kept, {} unrecognised",
            crate::report::count(self.entries_in_range, "entry", "entries"),
            self.released.len(),
            self.kept.len(),
            self.unrecognised.len()
        )];
        for release in &self.released {
            lines.push(format!("released  finding {}", release.finding_id));
        }
        for kept in &self.kept {
            lines.push(format!(
                "kept      finding {} ({}): {}",
                kept.finding_id, kept.target, kept.why
            ));
        }
        for entry in &self.unrecognised {
            lines.push(format!(
                "unknown   {} #{} {} {} {} (left alone: no record of this responder made it)",
                entry.acl_id,
                entry.rule_number,
                if entry.egress { "egress" } else { "ingress" },
                entry.action,
                entry.cidr
            ));
        }
        for error in &self.errors {
            lines.push(format!("error     {error}"));
        }
        lines.join("\n") + "\n"
    }
}

/// A recorded quarantine: its finding, workload and entries (canonical).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The finding.
    pub finding_id: String,
    /// The workload.
    pub target: String,
    /// Where the isolate step stands.
    pub status: StepStatus,
    /// Its entries (recorded and intended), as (ACL, number, direction, CIDR).
    pub entries: BTreeSet<(String, i32, bool, String)>,
}

/// What to do, decided from what was found. Pure.
#[derive(Debug, Default, PartialEq)]
pub struct SweepPlan {
    /// Findings whose quarantine to release.
    pub release: Vec<String>,
    /// Quarantines that stay, with why.
    pub kept: Vec<Kept>,
    /// Entries no record explains.
    pub unrecognised: Vec<FoundEntry>,
}

fn key(entry: &FoundEntry) -> (String, i32, bool, String) {
    (
        entry.acl_id.clone(),
        entry.rule_number,
        entry.egress,
        entry.cidr.clone(),
    )
}

/// Which quarantines to release: those with an entry still present whose workload is gone.
/// Released records explain nothing (their entries were removed; one present now is
/// someone else's). Pure.
pub fn classify(
    found: &[FoundEntry],
    records: &[Recorded],
    liveness: &BTreeMap<String, Liveness>,
) -> SweepPlan {
    let present: BTreeSet<(String, i32, bool, String)> = found.iter().map(key).collect();
    let mut plan = SweepPlan::default();
    let mut explained = BTreeSet::new();
    for record in records.iter().filter(|r| r.status != StepStatus::Released) {
        let still: Vec<_> = record.entries.intersection(&present).cloned().collect();
        if still.is_empty() {
            continue;
        }
        explained.extend(still);
        let why = match (record.status, liveness.get(&record.target)) {
            (StepStatus::Claimed, _) => Some("isolation is in progress".to_string()),
            (_, Some(Liveness::Gone)) => None,
            (_, Some(Liveness::Running)) => Some("the workload still runs".to_string()),
            (_, None) => Some("whether the workload runs could not be told".to_string()),
        };
        match why {
            None => plan.release.push(record.finding_id.clone()),
            Some(why) => plan.kept.push(Kept {
                finding_id: record.finding_id.clone(),
                target: record.target.clone(),
                why,
            }),
        }
    }
    plan.unrecognised = found
        .iter()
        .filter(|e| !explained.contains(&key(e)))
        .cloned()
        .collect();
    plan
}

fn recorded(step: &StepRecord) -> Option<Recorded> {
    let record = with_intended(containment_of(step), step)?;
    Some(Recorded {
        finding_id: step.finding_id.clone(),
        target: record.target.clone(),
        status: step.standing(),
        entries: record
            .nacl_entries
            .iter()
            .map(|e| {
                let cidr = parse_cidr(&e.cidr).map_or_else(|| e.cidr.clone(), |c| c.to_string());
                (e.acl_id.clone(), e.rule_number, e.egress, cidr)
            })
            .collect(),
    })
}

impl Responder {
    /// Release quarantines whose workload is gone; report entries in `first..=last` that no
    /// record explains.
    pub async fn sweep(
        &self,
        first: i32,
        last: i32,
        invocation_id: &str,
    ) -> Result<SweepReport, StepError> {
        let ledger = self.required_ledger(
            invocation_id,
            "the ledger table holding the containment records",
        )?;
        let (found, steps) = tokio::try_join!(
            reserved_entries(&self.clients, first, last),
            ledger.isolate_records()
        )?;
        let records: Vec<Recorded> = steps.iter().filter_map(recorded).collect();
        let present: BTreeSet<_> = found.iter().map(key).collect();
        let targets: BTreeSet<&str> = records
            .iter()
            .filter(|r| r.status != StepStatus::Released && !r.target.is_empty())
            .filter(|r| r.entries.iter().any(|e| present.contains(e)))
            .map(|r| r.target.as_str())
            .collect();
        let mut report = SweepReport {
            entries_in_range: found.len(),
            ..SweepReport::default()
        };
        let mut alive = BTreeMap::new();
        for target in targets {
            match liveness(&self.clients, target).await {
                Ok(state) => {
                    alive.insert(target.to_string(), state);
                }
                Err(error) => report.errors.push(format!("{target}: {error}")),
            }
        }
        let plan = classify(&found, &records, &alive);
        report.kept = plan.kept;
        report.unrecognised = plan.unrecognised;
        for finding_id in plan.release {
            // The workload is gone: only its ACL entries matter (its interface went with it).
            match Box::pin(self.release_finding(&finding_id, &ledger, true, false)).await {
                Ok(released) => report.released.push(released),
                Err(error) => report.errors.push(format!("finding {finding_id}: {error}")),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(acl: &str, number: i32, egress: bool, cidr: &str) -> FoundEntry {
        FoundEntry {
            acl_id: acl.into(),
            rule_number: number,
            egress,
            cidr: cidr.into(),
            action: "deny".into(),
        }
    }

    fn recorded(finding: &str, target: &str, status: StepStatus, number: i32) -> Recorded {
        Recorded {
            finding_id: finding.into(),
            target: target.into(),
            status,
            entries: [false, true]
                .into_iter()
                .map(|egress| {
                    (
                        "acl-1".to_string(),
                        number,
                        egress,
                        "10.0.1.5/32".to_string(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn only_gone_workloads_are_released_and_strangers_are_left_alone() {
        let entries = vec![
            found("acl-1", 1, false, "10.0.1.5/32"),
            found("acl-1", 1, true, "10.0.1.5/32"),
            found("acl-1", 2, false, "10.0.1.5/32"),
            found("acl-1", 2, true, "10.0.1.5/32"),
            found("acl-1", 3, false, "10.0.1.5/32"),
            found("acl-1", 7, false, "192.0.2.0/24"),
        ];
        let records = vec![
            recorded("gone", "task-a", StepStatus::Done, 1),
            recorded("alive", "task-b", StepStatus::Done, 2),
            recorded("in-flight", "task-c", StepStatus::Claimed, 3),
            recorded("released", "task-d", StepStatus::Released, 7),
        ];
        let liveness = BTreeMap::from([
            ("task-a".to_string(), Liveness::Gone),
            ("task-b".to_string(), Liveness::Running),
        ]);
        let plan = classify(&entries, &records, &liveness);
        assert_eq!(plan.release, ["gone"]);
        let kept: Vec<(&str, &str)> = plan
            .kept
            .iter()
            .map(|k| (k.finding_id.as_str(), k.why.as_str()))
            .collect();
        assert_eq!(
            kept,
            [
                ("alive", "the workload still runs"),
                ("in-flight", "isolation is in progress")
            ]
        );
        assert_eq!(
            plan.unrecognised,
            [found("acl-1", 7, false, "192.0.2.0/24")]
        );
    }
}
