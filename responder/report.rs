//! The report for one received event: what was understood, decided and (later) done.
//! The same value is printed by the CLI, returned by the Lambda, sent in notifications and
//! written to the audit ledger.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::event::{EventError, Inbound};
use crate::incident::{Incident, SeverityBand, Target};
use crate::plan::{Decision, SkipReason, Step};
use crate::playbook::Mode;

/// The decision as one word, for JSON consumers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Act,
    Skip,
    Error,
}

/// How one step turned out (absent in a plan that has not been executed).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Done { detail: serde_json::Value },
    Skipped { reason: String },
    Failed { error: String, retryable: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub action: crate::playbook::ActionName,
    pub rule: String,
    pub mode: Mode,
    pub reason: String,
    pub params: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl From<&Step> for StepReport {
    fn from(step: &Step) -> Self {
        StepReport {
            action: step.action,
            rule: step.rule.clone(),
            mode: step.mode,
            reason: step.reason.clone(),
            params: step.params.clone(),
            outcome: None,
            duration_ms: None,
        }
    }
}

/// One line of `--output json`; one audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Where the event came from (a file name, `-` for stdin, or the Lambda request id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub finding_id: Option<String>,
    pub finding_type: Option<String>,
    pub severity: Option<f64>,
    pub band: Option<SeverityBand>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub count: Option<u64>,
    pub target: Option<Target>,
    pub decision: DecisionKind,
    pub rule: Option<String>,
    pub mode: Option<Mode>,
    pub steps: Vec<StepReport>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Set when the event could not be handled; the CLI then exits with status 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// A report for an event that could not be read.
    pub fn for_error(input: Option<String>, error: &EventError) -> Report {
        Report {
            input,
            finding_id: None,
            finding_type: None,
            severity: None,
            band: None,
            account_id: None,
            region: None,
            count: None,
            target: None,
            decision: DecisionKind::Error,
            rule: None,
            mode: None,
            steps: Vec::new(),
            reason: error.to_string(),
            skip_code: None,
            notes: Vec::new(),
            error: Some(error.to_string()),
        }
    }

    /// A report for a parsed event and its decision (steps not yet executed).
    pub fn for_decision(input: Option<String>, inbound: &Inbound, decision: &Decision) -> Report {
        let incident: Option<&Incident> = match inbound {
            Inbound::Finding { incident, .. } => Some(incident),
            Inbound::Foreign { .. } => None,
        };
        let (kind, rule, mode, steps, notes, skip_code) = match decision {
            Decision::Act(plan) => (
                DecisionKind::Act,
                Some(plan.rule.clone()),
                Some(plan.mode),
                plan.steps.iter().map(StepReport::from).collect(),
                plan.notes.clone(),
                None,
            ),
            Decision::Skip(reason) => (
                DecisionKind::Skip,
                None,
                None,
                Vec::new(),
                Vec::new(),
                Some(reason.code()),
            ),
        };
        // A foreign event is a skip for the ledger, but an error for someone replaying files.
        let error = match decision {
            Decision::Skip(reason @ SkipReason::NotAGuardDutyFinding { .. }) => {
                Some(reason.describe())
            }
            _ => None,
        };
        Report {
            input,
            finding_id: incident.map(|i| i.finding_id.clone()),
            finding_type: incident.map(|i| i.finding_type.clone()),
            severity: incident.map(|i| i.severity),
            band: incident.map(|i| i.band),
            account_id: incident.map(|i| i.account_id.clone()),
            region: incident.map(|i| i.region.clone()),
            count: incident.map(|i| i.count),
            target: incident.map(|i| i.target.clone()),
            decision: kind,
            rule,
            mode,
            steps,
            reason: decision.reason(),
            skip_code,
            notes,
            error,
        }
    }

    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }

    pub fn to_json_line(&self) -> String {
        // Serialising plain data with string keys cannot fail; fall back to an error object.
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"decision": "error", "error": format!("cannot serialise report: {e}")})
                .to_string()
        })
    }

    /// Text for people: short, aligned, styled (the caller strips styles when not a TTY).
    pub fn to_text(&self) -> String {
        let bold = Style::new().bold();
        let dim = Style::new().dimmed();
        let red = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
        let green = Style::new().fg_color(Some(AnsiColor::Green.into())).bold();
        let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into())).bold();
        let mut out = String::new();
        let label = |out: &mut String, name: &str| {
            let _ = write!(out, "  {dim}{name:<9}{dim:#} ");
        };
        if let Some(input) = &self.input {
            let _ = writeln!(out, "{bold}{input}{bold:#}");
        }
        if let (Some(id), Some(kind), Some(severity), Some(band)) = (
            &self.finding_id,
            &self.finding_type,
            self.severity,
            self.band,
        ) {
            let band_style = match band {
                SeverityBand::Critical | SeverityBand::High => red,
                SeverityBand::Medium => yellow,
                SeverityBand::Low => dim,
            };
            label(&mut out, "finding");
            let _ = writeln!(
                out,
                "{kind}  {band_style}{band} {severity}{band_style:#}  {dim}{id}{dim:#}"
            );
        }
        if let Some(target) = &self.target {
            label(&mut out, "target");
            let _ = writeln!(out, "{}", target.label());
        }
        label(&mut out, "decision");
        match self.decision {
            DecisionKind::Act => {
                let _ = writeln!(
                    out,
                    "{green}ACT{green:#}  rule {}  mode {}",
                    self.rule.as_deref().unwrap_or("?"),
                    self.mode.map(Mode::name).unwrap_or("?")
                );
            }
            DecisionKind::Skip => {
                let style = if self.error.is_some() { red } else { yellow };
                let _ = writeln!(out, "{style}SKIP{style:#} {}", self.reason);
            }
            DecisionKind::Error => {
                let _ = writeln!(out, "{red}ERROR{red:#} {}", self.reason);
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            label(&mut out, if i == 0 { "steps" } else { "" });
            let outcome = match &step.outcome {
                None => String::new(),
                Some(Outcome::Done { .. }) => format!("  {green}done{green:#}"),
                Some(Outcome::Skipped { reason }) => {
                    format!("  {yellow}skipped{yellow:#} {reason}")
                }
                Some(Outcome::Failed { error, .. }) => format!("  {red}failed{red:#} {error}"),
            };
            let _ = writeln!(
                out,
                "{}. {bold}{:<17}{bold:#} {dim}{}{dim:#}{outcome}",
                i + 1,
                step.action.name(),
                step.reason
            );
        }
        for note in &self.notes {
            label(&mut out, "note");
            let _ = writeln!(out, "{note}");
        }
        out
    }
}
