//! GuardDuty Runtime Monitoring incident responder.
//!
//! Data flows one way: an EventBridge event is parsed ([`event`], [`finding`]) into an
//! [`incident::Incident`], matched against [`playbook`]s and turned into a [`plan::Decision`]
//! — all pure — and then carried out. The [`report::Report`] says what was decided and done.

#![warn(missing_docs, unreachable_pub)]

pub mod actions;
pub mod event;
pub mod finding;
pub mod incident;
pub mod network;
pub mod notice;
pub mod plan;
pub mod playbook;
pub mod preflight;
pub mod redact;
pub mod report;
pub mod respond;

use event::{parse_event, Inbound};
use plan::Decision;
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
    let decision = plan::decide(&inbound, playbooks, ceiling);
    let report = Report::for_decision(input, &inbound, &decision);
    (report, Some((inbound, decision)))
}
