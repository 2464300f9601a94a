//! Which findings a rule matches: conditions, globs and severity thresholds. Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use globset::GlobMatcher;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::incident::{Incident, LaunchType, SeverityBand, Target, TargetKind};

/// Conditions on a finding. Every condition given must hold; within a list, any entry may match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1))]
pub struct Conditions {
    /// Globs over the finding type, e.g. `CryptoCurrency:Runtime/*` or `*:Runtime/*`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub finding_types: Option<Vec<Glob>>,
    /// Inclusive lower bound: a number (0-10) or a band (Low, Medium, High, Critical).
    #[serde(default)]
    pub min_severity: Option<SeverityThreshold>,
    /// Inclusive upper bound: a number (0-10) or a band (Low, Medium, High, Critical).
    #[serde(default)]
    pub max_severity: Option<SeverityThreshold>,
    /// Kinds of affected workload.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub targets: Option<Vec<TargetKind>>,
    /// ECS launch types (ECS tasks only).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub launch_types: Option<Vec<LaunchType>>,
    /// Globs over the ECS or EKS cluster name or ARN.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub clusters: Option<Vec<Glob>>,
    /// Globs over the ECS service name (tasks started by a service).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub services: Option<Vec<Glob>>,
    /// Globs over the account that owns the resource.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub accounts: Option<Vec<Glob>>,
    /// Globs over the region.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub regions: Option<Vec<Glob>>,
    /// Tag key → value glob; every key must be present on the workload (task tags win over
    /// cluster tags).
    #[serde(default)]
    #[schemars(extend("minProperties" = 1))]
    pub tags: Option<BTreeMap<String, Glob>>,
}

impl Conditions {
    /// No condition is given.
    pub fn is_empty(&self) -> bool {
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

    /// The conditions given as an empty list (or map): such a condition matches nothing, or
    /// (`tags: {}`) requires nothing, and is never what the author meant.
    pub fn empty_lists(&self) -> Vec<&'static str> {
        let globs = [
            ("finding_types", &self.finding_types),
            ("clusters", &self.clusters),
            ("services", &self.services),
            ("accounts", &self.accounts),
            ("regions", &self.regions),
        ];
        let mut empty: Vec<&'static str> = globs
            .into_iter()
            .filter(|(_, list)| list.as_ref().is_some_and(Vec::is_empty))
            .map(|(name, _)| name)
            .collect();
        if self.targets.as_ref().is_some_and(Vec::is_empty) {
            empty.push("targets");
        }
        if self.launch_types.as_ref().is_some_and(Vec::is_empty) {
            empty.push("launch_types");
        }
        if self.tags.as_ref().is_some_and(BTreeMap::is_empty) {
            empty.push("tags");
        }
        empty
    }

    /// The kinds of workload a finding matching these conditions can be about: `targets`
    /// when given; ECS tasks when a condition only ECS tasks have is given (launch types,
    /// services); ECS tasks and EKS workloads for clusters; otherwise every kind.
    pub fn target_kinds(&self) -> Vec<TargetKind> {
        if let Some(targets) = &self.targets {
            return TargetKind::ALL
                .iter()
                .copied()
                .filter(|k| targets.contains(k))
                .collect();
        }
        if self.launch_types.is_some() || self.services.is_some() {
            return vec![TargetKind::EcsTask];
        }
        if self.clusters.is_some() {
            return vec![TargetKind::EcsTask, TargetKind::EksWorkload];
        }
        TargetKind::ALL.to_vec()
    }

    /// Every finding `other` matches, these conditions match too. Conservative: `false`
    /// when it cannot tell.
    pub fn covers(&self, other: &Conditions) -> bool {
        let globs_cover =
            |mine: &Option<Vec<Glob>>, theirs: &Option<Vec<Glob>>| match (mine, theirs) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => {
                    theirs.iter().all(|t| mine.iter().any(|m| m.covers(t)))
                }
            };
        let min_ok = match (self.min_severity, other.min_severity) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.lowest_score() >= mine.lowest_score(),
        };
        let max_ok = match (self.max_severity, other.max_severity) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.highest_score() <= mine.highest_score(),
        };
        let targets_ok = self
            .targets
            .as_ref()
            .is_none_or(|mine| other.target_kinds().iter().all(|k| mine.contains(k)));
        let launch_ok = match (&self.launch_types, &other.launch_types) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.contains(t)),
        };
        let tags_ok = match (&self.tags, &other.tags) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine
                .iter()
                .all(|(key, glob)| theirs.get(key).is_some_and(|t| glob.covers(t))),
        };
        globs_cover(&self.finding_types, &other.finding_types)
            && min_ok
            && max_ok
            && targets_ok
            && launch_ok
            && globs_cover(&self.clusters, &other.clusters)
            && globs_cover(&self.services, &other.services)
            && globs_cover(&self.accounts, &other.accounts)
            && globs_cover(&self.regions, &other.regions)
            && tags_ok
    }

    /// Some finding may match both. Conservative: `true` unless provably disjoint.
    pub fn may_overlap(&self, other: &Conditions) -> bool {
        let globs_meet = |a: &Option<Vec<Glob>>, b: &Option<Vec<Glob>>| match (a, b) {
            (Some(a), Some(b)) => a.iter().any(|x| b.iter().any(|y| x.may_meet(y))),
            _ => true,
        };
        let lowest = |c: &Conditions| c.min_severity.map_or(0.0, SeverityThreshold::lowest_score);
        let highest = |c: &Conditions| {
            c.max_severity
                .map_or(10.0, SeverityThreshold::highest_score)
        };
        let severities_meet = lowest(self) <= highest(other) && lowest(other) <= highest(self);
        let kinds = other.target_kinds();
        let kinds_meet = self.target_kinds().iter().any(|k| kinds.contains(k));
        let launch_meet = match (&self.launch_types, &other.launch_types) {
            (Some(a), Some(b)) => a.iter().any(|t| b.contains(t)),
            _ => true,
        };
        let tags_meet = match (&self.tags, &other.tags) {
            (Some(a), Some(b)) => a
                .iter()
                .all(|(key, glob)| b.get(key).is_none_or(|g| glob.may_meet(g))),
            _ => true,
        };
        severities_meet
            && kinds_meet
            && launch_meet
            && tags_meet
            && globs_meet(&self.finding_types, &other.finding_types)
            && globs_meet(&self.clusters, &other.clusters)
            && globs_meet(&self.services, &other.services)
            && globs_meet(&self.accounts, &other.accounts)
            && globs_meet(&self.regions, &other.regions)
    }

    /// Each condition the incident fails, in words (`min_severity High: the finding is
    /// Medium 5`), to explain why a rule did not match. Empty exactly when [`matches`] holds.
    ///
    /// [`matches`]: Conditions::matches
    pub fn failures(&self, incident: &Incident) -> Vec<String> {
        let list = |globs: &[Glob]| {
            globs
                .iter()
                .map(|g| g.pattern.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let any_of = |globs: &Option<Vec<Glob>>, values: &[&str]| {
            globs.as_ref().is_none_or(|globs| {
                globs
                    .iter()
                    .any(|g| values.iter().any(|value| g.is_match(value)))
            })
        };
        let target = &incident.target;
        let (cluster, service) = match target {
            Target::EcsTask(t) => (Some(t.cluster_name.as_str()), t.service.as_deref()),
            Target::EksWorkload(t) => (t.cluster_name.as_deref(), None),
            _ => (None, None),
        };
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
        let finding = format!("{} {}", incident.band, incident.severity);
        let mut failed = Vec::new();
        if let Some(globs) = &self.finding_types {
            if !any_of(&self.finding_types, &[incident.finding_type.as_str()]) {
                failed.push(format!(
                    "finding_types [{}]: the finding is {}",
                    list(globs),
                    incident.finding_type
                ));
            }
        }
        if let Some(min) = self.min_severity.filter(|m| !m.at_most(incident.severity)) {
            failed.push(format!("min_severity {min}: the finding is {finding}"));
        }
        if let Some(max) = self.max_severity.filter(|m| !m.at_least(incident.severity)) {
            failed.push(format!("max_severity {max}: the finding is {finding}"));
        }
        if let Some(kinds) = self
            .targets
            .as_ref()
            .filter(|k| !k.contains(&target.kind()))
        {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            failed.push(format!(
                "targets [{}]: the workload is an {}",
                names.join(", "),
                target.kind().name()
            ));
        }
        if let Some(types) = &self.launch_types {
            let launch = match target {
                Target::EcsTask(t) => t.launch_type,
                _ => None,
            };
            if !launch.is_some_and(|lt| types.contains(&lt)) {
                let names: Vec<String> = types
                    .iter()
                    .map(|t| format!("{t:?}").to_uppercase())
                    .collect();
                failed.push(format!(
                    "launch_types [{}]: the finding's launch type is {}",
                    names.join(", "),
                    launch
                        .map(|l| format!("{l:?}").to_uppercase())
                        .unwrap_or_else(|| "unknown".to_string())
                ));
            }
        }
        if let Some(globs) = self
            .clusters
            .as_ref()
            .filter(|_| !any_of(&self.clusters, &cluster_values))
        {
            failed.push(format!(
                "clusters [{}]: the cluster is {}",
                list(globs),
                cluster.unwrap_or("unknown")
            ));
        }
        if let Some(globs) = self
            .services
            .as_ref()
            .filter(|_| !any_of(&self.services, &service_values))
        {
            failed.push(format!(
                "services [{}]: the service is {}",
                list(globs),
                service.unwrap_or("none (not started by a service)")
            ));
        }
        if let Some(globs) = self
            .accounts
            .as_ref()
            .filter(|_| !any_of(&self.accounts, &[incident.account_id.as_str()]))
        {
            failed.push(format!(
                "accounts [{}]: the account is {}",
                list(globs),
                incident.account_id
            ));
        }
        if let Some(globs) = self
            .regions
            .as_ref()
            .filter(|_| !any_of(&self.regions, &[incident.region.as_str()]))
        {
            failed.push(format!(
                "regions [{}]: the region is {}",
                list(globs),
                incident.region
            ));
        }
        if let Some(wanted) = &self.tags {
            for (key, glob) in wanted {
                match target.tag(key) {
                    Some(value) if glob.is_match(value) => {}
                    Some(value) => {
                        failed.push(format!("tags.{key} {}: the tag is {value}", glob.pattern))
                    }
                    None => failed.push(format!(
                        "tags.{key} {}: the workload has no such tag",
                        glob.pattern
                    )),
                }
            }
        }
        failed
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
    /// Compile a glob pattern (`*` matches any characters, `/` included).
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

    /// Whether `value` matches the whole pattern.
    pub fn is_match(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Every value `other` matches, this glob matches. Conservative: `false` when it cannot
    /// tell (only literals and `prefix*` forms are compared).
    pub fn covers(&self, other: &Glob) -> bool {
        if self.pattern == other.pattern || self.pattern == "*" {
            return true;
        }
        if !has_wildcard(&other.pattern) {
            return self.is_match(&other.pattern);
        }
        match self.pattern.strip_suffix('*') {
            Some(prefix) if !has_wildcard(prefix) => other.pattern.starts_with(prefix),
            _ => false,
        }
    }

    /// Some value may match both. Conservative: `true` unless the literal text before the
    /// first wildcard or after the last one tells them apart.
    pub fn may_meet(&self, other: &Glob) -> bool {
        if self.is_match(&other.pattern) || other.is_match(&self.pattern) {
            return true;
        }
        let (a, b) = (&self.pattern, &other.pattern);
        let prefix = |p: &str| p[..p.find(WILDCARDS).unwrap_or(p.len())].to_string();
        let suffix = |p: &str| p[p.rfind(WILDCARDS).map_or(0, |i| i + 1)..].to_string();
        let (pa, pb, sa, sb) = (prefix(a), prefix(b), suffix(a), suffix(b));
        let compatible = |x: &str, y: &str, f: fn(&str, &str) -> bool| f(x, y) || f(y, x);
        (has_wildcard(a) || has_wildcard(b))
            && compatible(&pa, &pb, |x, y| x.starts_with(y))
            && compatible(&sa, &sb, |x, y| x.ends_with(y))
    }
}

const WILDCARDS: &[char] = &['*', '?', '[', '{'];

fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(WILDCARDS)
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
    /// A severity score from 0 to 10.
    Score(f64),
    /// A severity band.
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
    pub(crate) fn lowest_score(self) -> f64 {
        match self {
            SeverityThreshold::Score(s) => s,
            SeverityThreshold::Band(SeverityBand::Low) => 0.0,
            SeverityThreshold::Band(SeverityBand::Medium) => 4.0,
            SeverityThreshold::Band(SeverityBand::High) => 7.0,
            SeverityThreshold::Band(SeverityBand::Critical) => 9.0,
        }
    }

    /// The highest score the threshold admits as an upper bound.
    pub(crate) fn highest_score(self) -> f64 {
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

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}
