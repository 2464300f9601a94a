//! GuardDuty Runtime Monitoring incident responder.
//!
//! Data flows one way: an EventBridge event is parsed ([`event`], [`finding`]) into an
//! [`incident::Incident`], matched against [`playbook`]s and turned into a [`plan::Decision`]
//! — all pure — and then carried out. The [`report::Report`] says what was decided and done.

pub mod actions;
pub mod emulator;
pub mod event;
pub mod finding;
pub mod incident;
pub mod plan;
pub mod playbook;
pub mod report;
pub mod respond;

use event::{parse_event, Inbound};
use plan::{Decision, SkipReason};
use playbook::{Mode, PlaybookSet};
use report::Report;

/// Parse one event and decide what to do about it, without doing anything. Pure.
///
/// `ceiling` caps every rule's mode (a deployment in `dry-run` never mutates).
pub fn decide(
    input: Option<String>,
    bytes: &[u8],
    playbooks: &PlaybookSet,
    ceiling: Mode,
) -> (Report, Option<(Inbound, Decision)>) {
    let inbound = match parse_event(bytes) {
        Ok(inbound) => inbound,
        Err(error) => return (Report::for_error(input, &error), None),
    };
    let decision = decide_inbound(&inbound, playbooks, ceiling);
    let report = Report::for_decision(input, &inbound, &decision);
    (report, Some((inbound, decision)))
}

/// The decision for an event already parsed. Pure.
pub fn decide_inbound(inbound: &Inbound, playbooks: &PlaybookSet, ceiling: Mode) -> Decision {
    match inbound {
        Inbound::Finding { incident, .. } => plan::plan(incident, playbooks).capped_at(ceiling),
        Inbound::Foreign {
            source,
            detail_type,
        } => Decision::Skip(SkipReason::NotAGuardDutyFinding {
            source: source.clone(),
            detail_type: detail_type.clone(),
        }),
        Inbound::TaskStateChange(change) if change.last_status.as_deref() == Some("STOPPED") => {
            Decision::Release {
                task_arn: change.task_arn.clone(),
                reason: format!(
                    "ECS task {} stopped ({}): release the network ACL quarantine entries recorded for it, so the next task given its IP is not blocked",
                    change.task_arn,
                    change.stopped_reason.as_deref().unwrap_or("no reason given")
                ),
            }
        }
        Inbound::TaskStateChange(change) => Decision::Skip(SkipReason::TaskNotStopped {
            task_arn: change.task_arn.clone(),
            last_status: change.last_status.clone(),
        }),
    }
}
