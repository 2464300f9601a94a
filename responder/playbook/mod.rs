//! Playbooks: YAML rules that say what to do about which findings, plus global guardrails.
//!
//! The types here are the format's documentation: the committed JSON Schema
//! (`playbooks/schema.json`) is generated from them (the actions' parameters come from the
//! [action registry](crate::actions)). [`conditions`] says which findings a rule matches (pure);
//! [`load`] reads files and checks what serde cannot.

mod checks;
pub mod conditions;
pub mod guard;
mod load;
mod positions;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use conditions::{Conditions, Glob, SeverityThreshold};
pub use guard::{BlastRadius, Breaker, MinHealthy};
pub use load::{json_schema, PlaybookError, PlaybookErrors, DEFAULT_PLAYBOOKS};

use crate::actions::ActionSpec;

/// One playbook file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "GuardDuty responder playbook")]
pub struct PlaybookFile {
    /// `defaults`: evaluate the rules built into the responder after this directory's rules,
    /// so a team's rules decide first and the defaults cover the rest. Guardrails set here
    /// replace the built-in ones.
    #[serde(default)]
    pub extends: Option<Extends>,
    /// Global safety settings. At most one file in a playbook directory may set them.
    #[serde(default)]
    pub guardrails: Option<Guardrails>,
    /// Rules, evaluated in file order (files in name order). The first match decides unless it
    /// says `continue: true`.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// What a playbook directory builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Extends {
    /// The playbooks built into the responder (`playbooks/default.yaml` of its release).
    Defaults,
}

/// Global safety settings applied before any rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// A tag on the task, service, cluster or instance that exempts it from containment
    /// (isolate, deregister, stop, revoke-sessions). Evidence and notification still happen.
    #[serde(default = "Guardrails::default_exempt_tag")]
    pub exempt_tag: TagCondition,
    /// Skip GuardDuty's generated sample findings (`additionalInfo.sample`).
    #[serde(default = "yes")]
    pub ignore_sample_findings: bool,
    /// Skip findings that have been archived (suppressed) in GuardDuty.
    #[serde(default = "yes")]
    pub ignore_archived: bool,
    /// Findings below this severity (a number or a band name) are skipped before any rule.
    #[serde(default)]
    pub min_severity: Option<SeverityThreshold>,
    /// How much of one ECS service containment may take at once (a rule may set its own).
    #[serde(default)]
    pub blast_radius: BlastRadius,
    /// Across the account: after this many containments in a window, notify only.
    #[serde(default)]
    pub breaker: Breaker,
    /// How long a containment in `approve` mode waits for a person, in minutes (default 60);
    /// then `responder approve` refuses it.
    #[serde(default = "Guardrails::default_approval_minutes")]
    pub approval_expiry_minutes: u32,
}

fn yes() -> bool {
    true
}

impl Guardrails {
    fn default_approval_minutes() -> u32 {
        60
    }

    fn default_exempt_tag() -> TagCondition {
        TagCondition {
            key: "incident-responder:exempt".to_string(),
            value: "true".to_string(),
        }
    }
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            exempt_tag: Guardrails::default_exempt_tag(),
            ignore_sample_findings: true,
            ignore_archived: true,
            min_severity: None,
            blast_radius: BlastRadius::default(),
            breaker: Breaker::default(),
            approval_expiry_minutes: Guardrails::default_approval_minutes(),
        }
    }
}

/// An exact tag key and value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagCondition {
    /// The tag key.
    pub key: String,
    /// The tag value.
    pub value: String,
}

impl TagCondition {
    /// Whether a tag is this one: the key exactly, the value in any case.
    pub fn matches(&self, key: Option<&str>, value: Option<&str>) -> bool {
        key == Some(self.key.as_str()) && value.is_some_and(|v| v.eq_ignore_ascii_case(&self.value))
    }
}

impl fmt::Display for TagCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// What a rule does with the findings it matches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Record and print the plan; make no change anywhere.
    DryRun,
    /// Only send the notification.
    NotifyOnly,
    /// Preserve evidence and notify now; containment waits for a person's
    /// `responder approve FINDING_ID` (or `reject`) until the approval expires.
    Approve,
    /// Carry out every step.
    Enforce,
}

impl Mode {
    /// The mode's name as written in playbooks (`dry-run`, `notify-only`, `enforce`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::NotifyOnly => "notify-only",
            Mode::Approve => "approve",
            Mode::Enforce => "enforce",
        }
    }

    /// The stricter of two modes: a deployment-wide `dry-run` caps every rule.
    pub fn capped_at(self, ceiling: Mode) -> Mode {
        self.min(ceiling)
    }

    /// The mode with this name, ignoring case and surrounding spaces.
    pub fn parse(text: &str) -> Option<Mode> {
        [Mode::DryRun, Mode::NotifyOnly, Mode::Approve, Mode::Enforce]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(text.trim()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule: which findings, what to do, in which mode.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique across all playbook files; appears in reports, the ledger and notifications.
    pub name: String,
    /// What the rule is for, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Which findings the rule is for: conditions that must all hold (a list holds when any
    /// entry matches). Required and never empty, so no rule matches everything by accident;
    /// a deliberate catch-all says `finding_types: ["*"]`.
    #[serde(rename = "match")]
    #[schemars(required, schema_with = "conditions_schema")]
    pub conditions: Option<Conditions>,
    /// Conditions that, when they all hold, take the finding out of this rule.
    #[serde(default)]
    pub exclude: Option<Conditions>,
    /// What the rule does with the findings it matches.
    pub mode: Mode,
    /// Ordered steps. Phases run in this order and the list must follow it: contain
    /// (isolate, revoke-sessions), preserve (evidence, snapshot-volumes, tag, deregister),
    /// stop, notify.
    pub actions: Vec<ActionSpec>,
    /// Keep evaluating later rules after this one matched (their steps are added).
    #[serde(rename = "continue", default)]
    pub continue_matching: bool,
    /// This rule's own blast-radius guard, instead of the guardrails' one.
    #[serde(default)]
    pub blast_radius: Option<BlastRadius>,
}

/// `match` is an object with at least one condition, never `null`.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Conditions>()
}

/// A rule together with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    /// The rule.
    pub rule: Rule,
    /// The playbook file it came from.
    pub source: String,
    /// Where the rule starts in its file (1-based line and column).
    pub location: Option<(usize, usize)>,
    /// Where its `name` is.
    pub name_location: Option<(usize, usize)>,
    /// Each of the rule's actions as a plan shows it, in order: the same for every finding,
    /// so made once, when the playbook is loaded.
    pub planned: Vec<PlannedAction>,
}

/// An action's parameters as JSON and the reason for its step, as every plan shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    /// The action these were made from.
    pub action: ActionSpec,
    /// The parameters, shared by every plan's step.
    pub params: std::sync::Arc<serde_json::Value>,
    /// Why a step with these parameters is in a plan.
    pub reason: String,
}

impl PlannedAction {
    /// As [`ActionSpec::params_json`] and [`ActionSpec::reason`] make them.
    pub fn of(action: &ActionSpec) -> PlannedAction {
        PlannedAction {
            action: action.clone(),
            params: std::sync::Arc::new(action.params_json()),
            reason: action.reason(),
        }
    }
}

impl LoadedRule {
    /// `file:line` of the rule, for messages.
    pub fn place(&self) -> String {
        match self.name_location.or(self.location) {
            Some((line, _)) => format!("{}:{line}", self.source),
            None => self.source.clone(),
        }
    }
}

/// Every playbook in force: guardrails and rules in evaluation order.
#[derive(Debug, Clone)]
pub struct PlaybookSet {
    /// The guardrails in force (the defaults when no file sets them).
    pub guardrails: Guardrails,
    /// Every rule, in evaluation order.
    pub rules: Vec<LoadedRule>,
    /// Where the set came from (file names), for reports.
    pub sources: Vec<String>,
    /// What is valid but probably not what the author meant (a rule partly shadowed by one
    /// in an earlier file); `validate` prints these, the Lambda logs them.
    pub warnings: Vec<PlaybookError>,
}
