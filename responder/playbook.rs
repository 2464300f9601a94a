//! Playbooks: YAML rules that say what to do about which findings, plus global guardrails.
//!
//! The types here are the format's documentation: the committed JSON Schema
//! (`playbooks/schema.json`) is generated from them, and parsing rejects unknown keys, unknown
//! actions and mistyped parameters with the file, line and column. Matching is pure.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use globset::GlobMatcher;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::incident::{Incident, LaunchType, SeverityBand, Target, TargetKind};

/// Every `playbooks/*.yaml` compiled into the binary (see `build.rs`), so the Lambda is
/// self-contained.
pub const DEFAULT_PLAYBOOKS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/playbooks.rs"));

/// One playbook file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "GuardDuty responder playbook")]
pub struct PlaybookFile {
    /// Global safety settings. At most one file in a playbook directory may set them.
    #[serde(default)]
    pub guardrails: Option<Guardrails>,
    /// Rules, evaluated in file order (files in name order). The first match decides unless it
    /// says `continue: true`.
    #[serde(default)]
    pub rules: Vec<Rule>,
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
}

fn yes() -> bool {
    true
}

impl Guardrails {
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
        }
    }
}

/// An exact tag key and value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagCondition {
    pub key: String,
    pub value: String,
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
    /// Carry out every step.
    Enforce,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::NotifyOnly => "notify-only",
            Mode::Enforce => "enforce",
        }
    }

    /// The stricter of two modes: a deployment-wide `dry-run` caps every rule.
    pub fn capped_at(self, ceiling: Mode) -> Mode {
        self.min(ceiling)
    }

    pub fn parse(text: &str) -> Option<Mode> {
        [Mode::DryRun, Mode::NotifyOnly, Mode::Enforce]
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
    #[serde(default)]
    pub description: Option<String>,
    /// Conditions that must all hold (a list holds when any entry matches). Empty matches all.
    #[serde(rename = "match", default)]
    pub conditions: Conditions,
    /// Conditions that, when they all hold, take the finding out of this rule.
    #[serde(default)]
    pub exclude: Option<Conditions>,
    pub mode: Mode,
    /// Ordered steps. Phases run in this order and the list must follow it: contain
    /// (isolate, revoke-sessions), preserve (evidence, snapshot-volumes, tag, deregister),
    /// stop, notify.
    #[schemars(with = "Vec<ActionEntry>")]
    pub actions: Vec<Action>,
    /// Keep evaluating later rules after this one matched (their steps are added).
    #[serde(rename = "continue", default)]
    pub continue_matching: bool,
}

/// Conditions on a finding. Every condition given must hold; within a list, any entry may match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Globs over the finding type, e.g. `CryptoCurrency:Runtime/*` or `*:Runtime/*`.
    #[serde(default)]
    pub finding_types: Option<Vec<Glob>>,
    /// Inclusive lower bound: a number (0-10) or a band (Low, Medium, High, Critical).
    #[serde(default)]
    pub min_severity: Option<SeverityThreshold>,
    /// Inclusive upper bound: a number (0-10) or a band (Low, Medium, High, Critical).
    #[serde(default)]
    pub max_severity: Option<SeverityThreshold>,
    /// Kinds of affected workload.
    #[serde(default)]
    pub targets: Option<Vec<TargetKind>>,
    /// ECS launch types (ECS tasks only).
    #[serde(default)]
    pub launch_types: Option<Vec<LaunchType>>,
    /// Globs over the ECS or EKS cluster name or ARN.
    #[serde(default)]
    pub clusters: Option<Vec<Glob>>,
    /// Globs over the ECS service name (tasks started by a service).
    #[serde(default)]
    pub services: Option<Vec<Glob>>,
    /// Globs over the account that owns the resource.
    #[serde(default)]
    pub accounts: Option<Vec<Glob>>,
    /// Globs over the region.
    #[serde(default)]
    pub regions: Option<Vec<Glob>>,
    /// Tag key → value glob; every key must be present on the workload (task tags win over
    /// cluster tags).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, Glob>>,
}

impl Conditions {
    fn is_empty(&self) -> bool {
        self.finding_types.is_none()
            && self.min_severity.is_none()
            && self.max_severity.is_none()
            && self.targets.is_none()
            && self.launch_types.is_none()
            && self.clusters.is_none()
            && self.services.is_none()
            && self.accounts.is_none()
            && self.regions.is_none()
            && self.tags.is_none()
    }

    /// Pure: does this incident satisfy every condition given?
    pub fn matches(&self, incident: &Incident) -> bool {
        let any = |globs: &Option<Vec<Glob>>, values: &[&str]| match globs {
            None => true,
            Some(globs) => globs
                .iter()
                .any(|g| values.iter().any(|value| g.is_match(value))),
        };
        let target = &incident.target;
        let (cluster_values, service_values): (Vec<&str>, Vec<&str>) = match target {
            Target::EcsTask(t) => (
                vec![t.cluster_name.as_str(), t.cluster_arn.as_str()],
                t.service.as_deref().into_iter().collect(),
            ),
            Target::EksWorkload(t) => (
                t.cluster_name
                    .as_deref()
                    .into_iter()
                    .chain(t.cluster_arn.as_deref())
                    .collect(),
                Vec::new(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        any(&self.finding_types, &[incident.finding_type.as_str()])
            && self
                .min_severity
                .is_none_or(|min| min.at_most(incident.severity))
            && self
                .max_severity
                .is_none_or(|max| max.at_least(incident.severity))
            && self
                .targets
                .as_ref()
                .is_none_or(|kinds| kinds.contains(&target.kind()))
            && self.launch_types.as_ref().is_none_or(|types| match target {
                Target::EcsTask(t) => t.launch_type.is_some_and(|lt| types.contains(&lt)),
                _ => false,
            })
            && any(&self.clusters, &cluster_values)
            && any(&self.services, &service_values)
            && any(&self.accounts, &[incident.account_id.as_str()])
            && any(&self.regions, &[incident.region.as_str()])
            && self.tags.as_ref().is_none_or(|wanted| {
                wanted
                    .iter()
                    .all(|(key, glob)| target.tag(key).is_some_and(|v| glob.is_match(v)))
            })
    }
}

/// A glob pattern (`*`, `?`, `[abc]`, `{a,b}`), compiled when the playbook is read.
#[derive(Clone)]
pub struct Glob {
    pattern: String,
    matcher: GlobMatcher,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, globset::Error> {
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()?
            .compile_matcher();
        Ok(Glob {
            pattern: pattern.to_string(),
            matcher,
        })
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        Glob::new(&pattern)
            .map_err(|e| de::Error::custom(format!("invalid glob {pattern:?}: {}", e.kind())))
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.pattern)
    }
}

impl JsonSchema for Glob {
    fn schema_name() -> Cow<'static, str> {
        "Glob".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A glob: `*` any run of characters, `?` one character, `[abc]` a class, `{a,b}` alternatives."
        })
    }
}

/// A severity threshold: a GuardDuty score or a band name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeverityThreshold {
    Score(f64),
    Band(SeverityBand),
}

impl SeverityThreshold {
    /// `severity` is at or above this threshold.
    pub fn at_most(self, severity: f64) -> bool {
        match self {
            SeverityThreshold::Score(min) => severity >= min,
            SeverityThreshold::Band(band) => SeverityBand::of(severity) >= band,
        }
    }

    /// `severity` is at or below this threshold.
    pub fn at_least(self, severity: f64) -> bool {
        match self {
            SeverityThreshold::Score(max) => severity <= max,
            SeverityThreshold::Band(band) => SeverityBand::of(severity) <= band,
        }
    }

    /// The lowest score the threshold admits (for consistency checks).
    fn lowest_score(self) -> f64 {
        match self {
            SeverityThreshold::Score(s) => s,
            SeverityThreshold::Band(SeverityBand::Low) => 0.0,
            SeverityThreshold::Band(SeverityBand::Medium) => 4.0,
            SeverityThreshold::Band(SeverityBand::High) => 7.0,
            SeverityThreshold::Band(SeverityBand::Critical) => 9.0,
        }
    }

    /// The highest score the threshold admits as an upper bound.
    fn highest_score(self) -> f64 {
        match self {
            SeverityThreshold::Score(s) => s,
            SeverityThreshold::Band(SeverityBand::Low) => 3.99,
            SeverityThreshold::Band(SeverityBand::Medium) => 6.99,
            SeverityThreshold::Band(SeverityBand::High) => 8.99,
            SeverityThreshold::Band(SeverityBand::Critical) => 10.0,
        }
    }
}

impl fmt::Display for SeverityThreshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeverityThreshold::Score(s) => write!(f, "{s}"),
            SeverityThreshold::Band(b) => write!(f, "{b}"),
        }
    }
}

impl Serialize for SeverityThreshold {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SeverityThreshold::Score(s) => serializer.serialize_f64(*s),
            SeverityThreshold::Band(b) => serializer.serialize_str(b.name()),
        }
    }
}

impl<'de> Deserialize<'de> for SeverityThreshold {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ThresholdVisitor;
        const EXPECTED: &str = "a severity from 0 to 10 or one of Low, Medium, High, Critical";

        impl Visitor<'_> for ThresholdVisitor {
            type Value = SeverityThreshold;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.is_finite() && (0.0..=10.0).contains(&v) {
                    Ok(SeverityThreshold::Score(v))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &EXPECTED))
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                if v <= 10 {
                    Ok(SeverityThreshold::Score(v as f64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Unsigned(v), &EXPECTED))
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &EXPECTED)),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                SeverityBand::parse(v)
                    .map(SeverityThreshold::Band)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &EXPECTED))
            }
        }

        deserializer.deserialize_any(ThresholdVisitor)
    }
}

impl JsonSchema for SeverityThreshold {
    fn schema_name() -> Cow<'static, str> {
        "SeverityThreshold".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A GuardDuty severity score (0-10) or a band: Low < 4, Medium 4-6.9, High 7-8.9, Critical >= 9.",
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": 10},
                {"type": "string", "enum": ["Low", "Medium", "High", "Critical", "low", "medium", "high", "critical"]}
            ]
        })
    }
}

/// The actions a playbook can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    Isolate,
    RevokeSessions,
    Evidence,
    SnapshotVolumes,
    Tag,
    Deregister,
    Stop,
    Notify,
}

/// Execution phases, in order. A rule lists its actions in phase order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Contain,
    Preserve,
    Stop,
    Notify,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Contain => "contain",
            Phase::Preserve => "preserve",
            Phase::Stop => "stop",
            Phase::Notify => "notify",
        }
    }
}

impl ActionName {
    pub const ALL: [ActionName; 8] = [
        ActionName::Isolate,
        ActionName::RevokeSessions,
        ActionName::Evidence,
        ActionName::SnapshotVolumes,
        ActionName::Tag,
        ActionName::Deregister,
        ActionName::Stop,
        ActionName::Notify,
    ];
    const NAMES: &'static [&'static str] = &[
        "isolate",
        "revoke-sessions",
        "evidence",
        "snapshot-volumes",
        "tag",
        "deregister",
        "stop",
        "notify",
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActionName::Isolate => "isolate",
            ActionName::RevokeSessions => "revoke-sessions",
            ActionName::Evidence => "evidence",
            ActionName::SnapshotVolumes => "snapshot-volumes",
            ActionName::Tag => "tag",
            ActionName::Deregister => "deregister",
            ActionName::Stop => "stop",
            ActionName::Notify => "notify",
        }
    }

    pub fn parse(text: &str) -> Option<ActionName> {
        ActionName::ALL.into_iter().find(|a| a.name() == text)
    }

    pub fn phase(self) -> Phase {
        match self {
            ActionName::Isolate | ActionName::RevokeSessions => Phase::Contain,
            ActionName::Evidence
            | ActionName::SnapshotVolumes
            | ActionName::Tag
            | ActionName::Deregister => Phase::Preserve,
            ActionName::Stop => Phase::Stop,
            ActionName::Notify => Phase::Notify,
        }
    }

    /// Containment changes the workload; the exemption guardrail removes these steps.
    pub fn is_containment(self) -> bool {
        matches!(
            self,
            ActionName::Isolate
                | ActionName::RevokeSessions
                | ActionName::Deregister
                | ActionName::Stop
        )
    }

    /// Why a step of this kind is in a plan, for people reading the report.
    pub fn purpose(self) -> &'static str {
        match self {
            ActionName::Isolate => "cut the workload off the network, reversibly",
            ActionName::RevokeSessions => "revoke the instance role's active sessions",
            ActionName::Evidence => {
                "preserve the finding and the workload's state before anything is torn down"
            }
            ActionName::SnapshotVolumes => "snapshot the instance's EBS volumes for forensics",
            ActionName::Tag => "mark the workload with the incident id and state",
            ActionName::Deregister => "take the workload out of its load balancer target groups",
            ActionName::Stop => "stop the workload after evidence is preserved",
            ActionName::Notify => "tell people what was found and done",
        }
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Isolation rungs, tried in order until one applies and succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationRung {
    /// Replace the ENI's security groups (first an allow-all group so tracked connections are
    /// re-evaluated, then the quarantine group). Refused by EC2 on requester-managed ENIs
    /// such as every Fargate task's.
    SgSwap,
    /// DENY the workload's /32 (and /128) in both directions in its subnet's network ACL,
    /// ahead of the existing entries. Stateless, so it also cuts established connections.
    NaclQuarantine,
}

/// What to do when every isolation rung failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IsolateFallback {
    /// Report the failure and carry on with the other steps.
    #[default]
    None,
    /// Stop the task once evidence is preserved.
    Stop,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolateParams {
    /// Rungs to try, in order.
    #[serde(default = "IsolateParams::default_rungs")]
    pub rungs: Vec<IsolationRung>,
    /// Network ACL rule numbers reserved for quarantine entries. They must sit before the
    /// ACL's existing rules to take effect.
    #[serde(default)]
    pub nacl_rule_range: RuleRange,
    /// Keep the GuardDuty agent reporting while quarantined: allow HTTPS between the workload
    /// and the GuardDuty VPC endpoint's addresses, ahead of the DENY entries.
    #[serde(default = "yes")]
    pub keep_guardduty_agent: bool,
    /// Name of the quarantine security group created (once per VPC) for the SG swap.
    #[serde(default = "IsolateParams::default_quarantine_group")]
    pub quarantine_group_name: String,
    /// What to do when no rung succeeded.
    #[serde(default)]
    pub fallback: IsolateFallback,
}

impl IsolateParams {
    fn default_rungs() -> Vec<IsolationRung> {
        vec![IsolationRung::SgSwap, IsolationRung::NaclQuarantine]
    }

    fn default_quarantine_group() -> String {
        "incident-responder-quarantine".to_string()
    }
}

impl Default for IsolateParams {
    fn default() -> Self {
        IsolateParams {
            rungs: IsolateParams::default_rungs(),
            nacl_rule_range: RuleRange::default(),
            keep_guardduty_agent: true,
            quarantine_group_name: IsolateParams::default_quarantine_group(),
            fallback: IsolateFallback::None,
        }
    }
}

/// An inclusive range of network ACL rule numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleRange {
    #[schemars(range(min = 1, max = 32766))]
    pub first: u16,
    #[schemars(range(min = 1, max = 32766))]
    pub last: u16,
}

impl Default for RuleRange {
    /// Below 100, where AWS's own examples and most templates start numbering.
    fn default() -> Self {
        RuleRange { first: 1, last: 99 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceParams {
    /// Put an S3 Object Lock legal hold on every evidence object when the bucket has Object Lock.
    #[serde(default = "yes")]
    pub legal_hold: bool,
}

impl Default for EvidenceParams {
    fn default() -> Self {
        EvidenceParams { legal_hold: true }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagParams {
    /// Extra tags to add besides the incident id and state.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeregisterParams {
    /// Only target groups whose ARN matches one of these globs (default: every target group
    /// the workload is registered in).
    #[serde(default)]
    pub target_groups: Option<Vec<Glob>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// Stop even when evidence could not be preserved.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyParams {
    /// Text put before the subject, e.g. `[prod]`.
    #[serde(default)]
    pub subject_prefix: Option<String>,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

/// One step of a rule: an action name with its typed parameters. Written as `- evidence`
/// or `- isolate: {fallback: stop}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "ActionWithParameters")]
pub enum Action {
    Isolate(IsolateParams),
    RevokeSessions(NoParams),
    Evidence(EvidenceParams),
    SnapshotVolumes(NoParams),
    Tag(TagParams),
    Deregister(DeregisterParams),
    Stop(StopParams),
    Notify(NotifyParams),
}

impl Action {
    pub fn name(&self) -> ActionName {
        match self {
            Action::Isolate(_) => ActionName::Isolate,
            Action::RevokeSessions(_) => ActionName::RevokeSessions,
            Action::Evidence(_) => ActionName::Evidence,
            Action::SnapshotVolumes(_) => ActionName::SnapshotVolumes,
            Action::Tag(_) => ActionName::Tag,
            Action::Deregister(_) => ActionName::Deregister,
            Action::Stop(_) => ActionName::Stop,
            Action::Notify(_) => ActionName::Notify,
        }
    }

    /// The parameters as JSON, for reports.
    pub fn params_json(&self) -> serde_json::Value {
        let value = match self {
            Action::Isolate(p) => serde_json::to_value(p),
            Action::RevokeSessions(p) | Action::SnapshotVolumes(p) => serde_json::to_value(p),
            Action::Evidence(p) => serde_json::to_value(p),
            Action::Tag(p) => serde_json::to_value(p),
            Action::Deregister(p) => serde_json::to_value(p),
            Action::Stop(p) => serde_json::to_value(p),
            Action::Notify(p) => serde_json::to_value(p),
        };
        value.unwrap_or(serde_json::Value::Null)
    }

    fn with_params<'de, A: MapAccess<'de>>(
        name: ActionName,
        map: &mut A,
    ) -> Result<Action, A::Error> {
        // `- evidence:` (a null value) means "defaults", like `- evidence`.
        fn params<'de, A: MapAccess<'de>, P: Deserialize<'de> + Default>(
            map: &mut A,
        ) -> Result<P, A::Error> {
            Ok(map.next_value::<Option<P>>()?.unwrap_or_default())
        }
        Ok(match name {
            ActionName::Isolate => Action::Isolate(params(map)?),
            ActionName::RevokeSessions => Action::RevokeSessions(params(map)?),
            ActionName::Evidence => Action::Evidence(params(map)?),
            ActionName::SnapshotVolumes => Action::SnapshotVolumes(params(map)?),
            ActionName::Tag => Action::Tag(params(map)?),
            ActionName::Deregister => Action::Deregister(params(map)?),
            ActionName::Stop => Action::Stop(params(map)?),
            ActionName::Notify => Action::Notify(params(map)?),
        })
    }

    fn with_defaults(name: ActionName) -> Action {
        match name {
            ActionName::Isolate => Action::Isolate(IsolateParams::default()),
            ActionName::RevokeSessions => Action::RevokeSessions(NoParams {}),
            ActionName::Evidence => Action::Evidence(EvidenceParams::default()),
            ActionName::SnapshotVolumes => Action::SnapshotVolumes(NoParams {}),
            ActionName::Tag => Action::Tag(TagParams::default()),
            ActionName::Deregister => Action::Deregister(DeregisterParams::default()),
            ActionName::Stop => Action::Stop(StopParams::default()),
            ActionName::Notify => Action::Notify(NotifyParams::default()),
        }
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionVisitor;

        fn known<E: de::Error>(name: &str) -> Result<ActionName, E> {
            ActionName::parse(name).ok_or_else(|| E::unknown_variant(name, ActionName::NAMES))
        }

        impl<'de> Visitor<'de> for ActionVisitor {
            type Value = Action;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an action name (e.g. `evidence`) or one action name with its parameters (e.g. `isolate: {fallback: stop}`)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Action, E> {
                Ok(Action::with_defaults(known(v)?))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Action, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::invalid_length(0, &self));
                };
                let action = Action::with_params(known(&key)?, &mut map)?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a step names exactly one action; `{key}` is followed by `{extra}` (start a new `- ` item for another action)"
                    )));
                }
                Ok(action)
            }
        }

        deserializer.deserialize_any(ActionVisitor)
    }
}

/// Schema of one `actions` entry: the bare name or the one-key map.
pub struct ActionEntry;

impl JsonSchema for ActionEntry {
    fn schema_name() -> Cow<'static, str> {
        "Action".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let with_params = generator.subschema_for::<Action>();
        let bare = generator.subschema_for::<ActionName>();
        json_schema!({
            "description": "An action name, or one action name mapped to its parameters.",
            "oneOf": [bare, with_params]
        })
    }
}

/// A rule together with the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    pub rule: Rule,
    pub source: String,
}

/// Every playbook in force: guardrails and rules in evaluation order.
#[derive(Debug, Clone)]
pub struct PlaybookSet {
    pub guardrails: Guardrails,
    pub rules: Vec<LoadedRule>,
    /// Where the set came from (file names), for reports.
    pub sources: Vec<String>,
}

/// A problem in a playbook, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct PlaybookError {
    pub file: String,
    /// 1-based line and column.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

/// All the problems found, so a user fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PlaybookErrors(pub Vec<PlaybookError>);

impl PlaybookSet {
    /// The playbooks compiled into the binary.
    pub fn defaults() -> Result<PlaybookSet, PlaybookErrors> {
        PlaybookSet::from_sources(
            DEFAULT_PLAYBOOKS
                .iter()
                .map(|(name, text)| (name.to_string(), text.to_string())),
        )
    }

    /// Read every `*.yaml`/`*.yml` in a directory (name order), or one file.
    pub fn load_path(path: &Path) -> Result<PlaybookSet, PlaybookErrors> {
        let io_error = |file: &Path, e: std::io::Error| {
            PlaybookErrors(vec![PlaybookError {
                file: file.display().to_string(),
                location: None,
                message: format!("cannot read: {e}"),
            }])
        };
        let mut files = Vec::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| io_error(path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error(path, e))?;
                let file = entry.path();
                let is_yaml = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == "yaml" || e == "yml");
                if is_yaml && file.is_file() {
                    files.push(file);
                }
            }
            files.sort();
            if files.is_empty() {
                return Err(PlaybookErrors(vec![PlaybookError {
                    file: path.display().to_string(),
                    location: None,
                    message: "no *.yaml or *.yml playbook files in this directory".to_string(),
                }]));
            }
        } else {
            files.push(path.to_path_buf());
        }
        let mut sources = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| io_error(&file, e))?;
            sources.push((file.display().to_string(), text));
        }
        PlaybookSet::from_sources(sources)
    }

    /// Parse and validate playbook texts given as (file name, contents).
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<PlaybookSet, PlaybookErrors> {
        let mut errors = Vec::new();
        let mut guardrails: Option<(Guardrails, String)> = None;
        let mut rules = Vec::new();
        let mut names = Vec::new();
        for (file, text) in sources {
            names.push(file.clone());
            let parsed: PlaybookFile = match serde_yaml_ng::from_str(&text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    errors.push(yaml_error(&file, &e));
                    continue;
                }
            };
            if let Some(g) = parsed.guardrails {
                if let Some((_, first)) = &guardrails {
                    errors.push(PlaybookError {
                        file: file.clone(),
                        location: nth_line_of(&text, "guardrails:", 0).map(|l| (l, 1)),
                        message: format!(
                            "guardrails are already set in {first}; set them in one file only"
                        ),
                    });
                } else {
                    guardrails = Some((g, file.clone()));
                }
            }
            let mut earlier_names: Vec<String> = Vec::new();
            for rule in parsed.rules {
                let occurrence = earlier_names.iter().filter(|n| **n == rule.name).count();
                earlier_names.push(rule.name.clone());
                for message in rule_problems(&rule) {
                    errors.push(PlaybookError {
                        file: file.clone(),
                        location: nth_line_of(&text, &rule.name, occurrence).map(|l| (l, 1)),
                        message: format!("rule {:?}: {message}", rule.name),
                    });
                }
                rules.push(LoadedRule {
                    rule,
                    source: file.clone(),
                });
            }
        }
        let mut seen = HashSet::new();
        for loaded in &rules {
            if !seen.insert(loaded.rule.name.as_str()) {
                errors.push(PlaybookError {
                    file: loaded.source.clone(),
                    location: None,
                    message: format!(
                        "rule name {:?} is used more than once; names identify rules in the ledger and must be unique",
                        loaded.rule.name
                    ),
                });
            }
        }
        if rules.is_empty() && errors.is_empty() {
            errors.push(PlaybookError {
                file: names.join(", "),
                location: None,
                message: "no rules: every finding would be skipped".to_string(),
            });
        }
        if !errors.is_empty() {
            return Err(PlaybookErrors(errors));
        }
        Ok(PlaybookSet {
            guardrails: guardrails.map(|(g, _)| g).unwrap_or_default(),
            rules,
            sources: names,
        })
    }
}

/// Problems serde cannot see: consistency within a rule.
fn rule_problems(rule: &Rule) -> Vec<String> {
    let mut problems = Vec::new();
    if rule.name.trim().is_empty() {
        problems.push("the name is empty".to_string());
    }
    if rule.actions.is_empty() {
        problems.push(
            "no actions: a rule must do something (use notify to only tell people)".to_string(),
        );
    }
    let mut seen = HashSet::new();
    for action in &rule.actions {
        if !seen.insert(action.name()) {
            problems.push(format!("action `{}` is listed twice", action.name()));
        }
    }
    for pair in rule.actions.windows(2) {
        let (before, after) = (pair[0].name(), pair[1].name());
        if before.phase() > after.phase() {
            problems.push(format!(
                "`{after}` ({} phase) is listed after `{before}` ({} phase); actions run in the phases contain → preserve → stop → notify, list them in that order",
                after.phase().name(),
                before.phase().name()
            ));
        }
    }
    let has_evidence = seen.contains(&ActionName::Evidence);
    let mut checked = HashSet::new();
    for action in rule.actions.iter().filter(|a| checked.insert(a.name())) {
        match action {
            Action::Stop(StopParams { force: false }) if !has_evidence => problems.push(
                "`stop` runs only after evidence is preserved: add an `evidence` step, or set `stop: {force: true}`".to_string(),
            ),
            Action::Isolate(p) if p.fallback == IsolateFallback::Stop && !has_evidence => problems.push(
                "isolate's `fallback: stop` stops the task after evidence is preserved: add an `evidence` step".to_string(),
            ),
            Action::Isolate(p) => {
                if p.rungs.is_empty() {
                    problems.push("isolate has no `rungs` to try".to_string());
                }
                let r = p.nacl_rule_range;
                if r.first == 0 || r.last > 32766 || r.first > r.last {
                    problems.push(format!(
                        "nacl_rule_range {}..{} must satisfy 1 <= first <= last <= 32766",
                        r.first, r.last
                    ));
                }
            }
            _ => {}
        }
    }
    if rule.mode == Mode::NotifyOnly && !seen.contains(&ActionName::Notify) {
        problems.push("mode is notify-only but there is no `notify` step".to_string());
    }
    if rule.exclude.as_ref().is_some_and(Conditions::is_empty) {
        problems.push("`exclude` has no conditions, so it would exclude every finding".to_string());
    }
    if let (Some(min), Some(max)) = (rule.conditions.min_severity, rule.conditions.max_severity) {
        if min.lowest_score() > max.highest_score() {
            problems.push(format!(
                "min_severity {min} is above max_severity {max}: the rule can never match"
            ));
        }
    }
    problems
}

fn yaml_error(file: &str, error: &serde_yaml_ng::Error) -> PlaybookError {
    let mut message = error.to_string();
    let location = error.location().map(|l| (l.line(), l.column()));
    if location.is_some() {
        // The message repeats the position (" at line N column M"); it is in the prefix already.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
    }
    PlaybookError {
        file: file.to_string(),
        location,
        message,
    }
}

/// The 1-based line of the `nth` (0-based) line containing `needle`, to point at a rule for
/// checks made after parsing (serde no longer knows positions then).
fn nth_line_of(text: &str, needle: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(nth)
        .map(|(i, _)| i + 1)
}

/// The JSON Schema of the playbook format, as committed in `playbooks/schema.json`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<PlaybookFile>();
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<PlaybookSet, PlaybookErrors> {
        PlaybookSet::from_sources([("p.yaml".to_string(), yaml.to_string())])
    }

    fn only_error(yaml: &str) -> PlaybookError {
        let errors = load(yaml).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    #[test]
    fn unknown_key_is_located() {
        let yaml =
            "rules:\n  - name: r\n    mode: enforce\n    matches: {}\n    actions: [notify]\n";
        let error = only_error(yaml);
        assert_eq!(error.location, Some((4, 5)), "{error}");
        assert!(error.message.contains("unknown field `matches`"), "{error}");
        assert!(error.message.contains("expected one of"), "{error}");
        assert!(error.to_string().starts_with("p.yaml:4:5: "), "{error}");
    }

    #[test]
    fn unknown_action_lists_the_known_ones() {
        let yaml = "rules:\n  - name: r\n    mode: enforce\n    actions:\n      - quarantine\n";
        let error = only_error(yaml);
        assert_eq!(error.location.map(|l| l.0), Some(5), "{error}");
        assert!(
            error.message.contains("unknown variant `quarantine`"),
            "{error}"
        );
        assert!(error.message.contains("isolate"), "{error}");
        let as_map =
            "rules:\n  - name: r\n    mode: enforce\n    actions:\n      - quarantine: {}\n";
        assert!(only_error(as_map)
            .message
            .contains("unknown variant `quarantine`"));
    }

    #[test]
    fn mistyped_parameters_are_located() {
        let yaml = "rules:\n  - name: r\n    mode: enforce\n    actions:\n      - evidence\n      - stop: {force: sometimes}\n";
        let error = only_error(yaml);
        assert_eq!(error.location.map(|l| l.0), Some(6), "{error}");
        assert!(
            error.message.contains("invalid type") || error.message.contains("expected a boolean"),
            "{error}"
        );
        let unknown_param = "rules:\n  - name: r\n    mode: enforce\n    actions:\n      - isolate: {fallbak: stop}\n";
        assert!(only_error(unknown_param)
            .message
            .contains("unknown field `fallbak`"));
        let bad_mode = "rules:\n  - name: r\n    mode: yolo\n    actions: [notify]\n";
        let error = only_error(bad_mode);
        assert_eq!(error.location.map(|l| l.0), Some(3));
        assert!(error.message.contains("enforce"), "{error}");
        let bad_severity = "rules:\n  - name: r\n    mode: enforce\n    match: {min_severity: Severe}\n    actions: [notify]\n";
        assert!(only_error(bad_severity)
            .message
            .contains("one of Low, Medium, High, Critical"));
        let bad_glob = "rules:\n  - name: r\n    mode: enforce\n    match: {clusters: ['prod-[']}\n    actions: [notify]\n";
        assert!(only_error(bad_glob).message.contains("invalid glob"));
        let two_actions_in_one = "rules:\n  - name: r\n    mode: enforce\n    actions:\n      - {evidence: {}, notify: {}}\n";
        assert!(only_error(two_actions_in_one)
            .message
            .contains("exactly one action"));
    }

    #[test]
    fn action_forms_and_defaults() {
        let yaml = r#"
rules:
  - name: r
    mode: enforce
    actions:
      - isolate: {fallback: stop, rungs: [nacl-quarantine], nacl_rule_range: {first: 10, last: 20}}
      - evidence:
      - tag: {extra: {ticket: SEC-1}}
      - stop
      - notify
"#;
        let set = load(yaml).unwrap();
        let actions = &set.rules[0].rule.actions;
        let Action::Isolate(isolate) = &actions[0] else {
            panic!()
        };
        assert_eq!(isolate.fallback, IsolateFallback::Stop);
        assert_eq!(isolate.rungs, vec![IsolationRung::NaclQuarantine]);
        assert_eq!(
            isolate.nacl_rule_range,
            RuleRange {
                first: 10,
                last: 20
            }
        );
        assert!(isolate.keep_guardduty_agent);
        assert_eq!(
            actions[1],
            Action::Evidence(EvidenceParams { legal_hold: true })
        );
        assert_eq!(actions[3], Action::Stop(StopParams { force: false }));
    }

    #[test]
    fn consistency_problems_are_reported_together() {
        let yaml = r#"
rules:
  - name: bad
    mode: notify-only
    exclude: {}
    match: {min_severity: High, max_severity: Low}
    actions: [notify, isolate, stop, stop]
  - name: bad
    mode: enforce
    actions: []
  - name: quiet
    mode: notify-only
    actions: [evidence]
"#;
        let errors = load(yaml).unwrap_err().0;
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        for expected in [
            "listed after `notify`",
            "`stop` runs only after evidence",
            "listed twice",
            "notify-only but there is no `notify`",
            "would exclude every finding",
            "can never match",
            "no actions",
            "used more than once",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert!(
            text[0].starts_with("p.yaml:3:1: rule \"bad\""),
            "{}",
            text[0]
        );
        assert!(
            all.contains("p.yaml:8:1: rule \"bad\": no actions"),
            "{all}"
        );
        assert_eq!(
            all.matches("`stop` runs only after evidence").count(),
            1,
            "{all}"
        );
    }

    #[test]
    fn guardrails_in_two_files_conflict() {
        let a = (
            "a.yaml".to_string(),
            "guardrails: {}\nrules: [{name: a, mode: enforce, actions: [notify]}]".to_string(),
        );
        let b = (
            "b.yaml".to_string(),
            "guardrails: {}\nrules: [{name: b, mode: enforce, actions: [notify]}]".to_string(),
        );
        let errors = PlaybookSet::from_sources([a, b]).unwrap_err();
        assert!(
            errors.to_string().contains("already set in a.yaml"),
            "{errors}"
        );
    }

    #[test]
    fn empty_playbooks_are_refused() {
        assert!(only_error("rules: []").message.contains("no rules"));
        assert!(only_error(": : :").location.is_some());
    }

    #[test]
    fn defaults_and_shipped_files_are_valid() {
        let set = PlaybookSet::defaults().unwrap();
        assert_eq!(set.guardrails, Guardrails::default());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let from_disk = PlaybookSet::load_path(&dir).unwrap();
        assert_eq!(from_disk.rules.len(), set.rules.len());
    }

    #[test]
    fn committed_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/schema.json");
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(
            committed,
            json_schema(),
            "run `responder schema > playbooks/schema.json`"
        );
    }

    #[test]
    fn mode_order_and_names() {
        assert!(Mode::DryRun < Mode::NotifyOnly && Mode::NotifyOnly < Mode::Enforce);
        assert_eq!(Mode::parse("DRY-RUN"), Some(Mode::DryRun));
        assert_eq!(Mode::Enforce.capped_at(Mode::DryRun), Mode::DryRun);
        for name in ActionName::ALL {
            assert_eq!(ActionName::parse(name.name()), Some(name));
            assert!(ActionName::NAMES.contains(&name.name()));
        }
    }
}
