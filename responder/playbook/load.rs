//! Reading playbooks from files (or the copies compiled into the binary) and checking what
//! serde cannot: consistency within a rule and across files. Each value is read on its own, so
//! every problem is reported in one pass, each at the line of the key it is about.

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment as PathSegment;
use serde_yaml_ng::Value;

use super::checks;
use super::positions::{display, Positions, Segment};
use super::{Extends, Guardrails, LoadedRule, PlannedAction, PlaybookFile, PlaybookSet, Rule};
use crate::actions::ActionSpec;

/// Every `playbooks/*.yaml` compiled into the binary (see `build.rs`), so the Lambda is
/// self-contained.
pub const DEFAULT_PLAYBOOKS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/playbooks.rs"));

/// A problem in a playbook, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct PlaybookError {
    /// The playbook file.
    pub file: String,
    /// 1-based line and column.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// All the problems found, so a user fixes them in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PlaybookErrors(pub Vec<PlaybookError>);

/// Where the playbooks built into the binary are said to come from, in messages.
const BUILT_IN: &str = "(built-in)";

/// The keys of a playbook file, of a rule: the schema lists the same (a test checks).
pub(crate) const FILE_KEYS: &[&str] = &["extends", "guardrails", "rules"];
pub(crate) const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "match",
    "exclude",
    "mode",
    "actions",
    "continue",
    "blast_radius",
];

impl PlaybookSet {
    /// The playbooks compiled into the binary.
    pub fn defaults() -> Result<PlaybookSet, PlaybookErrors> {
        PlaybookSet::from_sources(built_in_sources())
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

    /// Parse and validate playbook texts given as (file name, contents). Every problem in
    /// every file is reported, each at the line of the key it is about.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<PlaybookSet, PlaybookErrors> {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        for (file, text) in sources {
            files.push(parse_file(&file, &text, &mut errors));
        }
        let extends = files.iter().find(|f| f.extends).map(|f| f.name.clone());
        if let Some(by) = &extends {
            if files.iter().any(|f| f.name.starts_with(BUILT_IN)) {
                errors.push(PlaybookError {
                    file: by.clone(),
                    location: None,
                    message: "`extends: defaults` cannot be used by the built-in playbooks"
                        .to_string(),
                });
            } else {
                // The team's rules come first; the defaults decide what they do not match.
                for (file, text) in built_in_sources() {
                    files.push(parse_file(&file, &text, &mut errors));
                }
            }
        }
        let mut guardrails: Option<(Guardrails, String)> = None;
        for file in &files {
            let Some((g, location)) = &file.guardrails else {
                continue;
            };
            match &guardrails {
                // A team extending the defaults may set its own guardrails: they win.
                Some(_) if extends.is_some() && file.name.starts_with(BUILT_IN) => {}
                Some((_, first)) => errors.push(PlaybookError {
                    file: file.name.clone(),
                    location: *location,
                    message: format!(
                        "guardrails are already set in {first}; set them in one file only"
                    ),
                }),
                None => guardrails = Some((g.clone(), file.name.clone())),
            }
        }
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let rules: Vec<LoadedRule> = files.into_iter().flat_map(|f| f.rules).collect();
        let mut first_use: HashMap<&str, &LoadedRule> = HashMap::new();
        for loaded in &rules {
            match first_use.get(loaded.rule.name.as_str()) {
                Some(first) => errors.push(PlaybookError {
                    file: loaded.source.clone(),
                    location: loaded.name_location,
                    message: format!(
                        "rule name {:?} is already used at {}; names identify rules in the ledger and must be unique",
                        loaded.rule.name,
                        first.place()
                    ),
                }),
                None => {
                    first_use.insert(&loaded.rule.name, loaded);
                }
            }
        }
        let (shadowed, warnings) = checks::shadowing(&rules, |r| r.source.starts_with(BUILT_IN));
        errors.extend(shadowed);
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
            warnings,
        })
    }
}

fn built_in_sources() -> impl Iterator<Item = (String, String)> {
    DEFAULT_PLAYBOOKS
        .iter()
        .map(|(name, text)| (format!("{BUILT_IN} {name}"), text.to_string()))
}

/// One file, read as far as it could be.
struct ParsedFile {
    name: String,
    guardrails: Option<(Guardrails, Option<(usize, usize)>)>,
    rules: Vec<LoadedRule>,
    extends: bool,
}

/// Reads one file's values field by field, so one mistake does not hide the next.
struct FileReader<'a> {
    file: &'a str,
    positions: Positions,
    errors: &'a mut Vec<PlaybookError>,
}

impl FileReader<'_> {
    fn error(&mut self, path: &[Segment], message: impl Into<String>) {
        self.errors.push(PlaybookError {
            file: self.file.to_string(),
            location: self.positions.find(path),
            message: message.into(),
        });
    }

    /// Deserialise one value, reporting a failure at the key it is about.
    fn field<T: DeserializeOwned>(&mut self, value: &Value, path: &[Segment]) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let mut at = path.to_vec();
                for segment in error.path() {
                    match segment {
                        PathSegment::Seq { index } => at.push(Segment::Index(*index)),
                        PathSegment::Map { key } => at.push(Segment::Key(key.clone())),
                        PathSegment::Enum { .. } | PathSegment::Unknown => {}
                    }
                }
                let message = error.inner().to_string();
                // "unknown field `x`": point at x itself, not at the map holding it.
                if let Some(unknown) = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                {
                    at.push(Segment::Key(unknown.to_string()));
                }
                let shown = display(&at);
                self.error(&at, format!("{shown}: {message}"));
                None
            }
        }
    }

    fn rule(&mut self, value: &Value, path: &[Segment]) -> Option<Rule> {
        let Value::Mapping(map) = value else {
            self.error(
                path,
                format!(
                    "{}: a rule is a map with `name`, `match`, `mode` and `actions`",
                    display(path)
                ),
            );
            return None;
        };
        let mut complete = true;
        let (mut name, mut description, mut conditions, mut exclude) = (None, None, None, None);
        let (mut mode, mut actions, mut continue_matching) = (None, None, false);
        let mut blast_radius = None;
        for (key, value) in map {
            let Some(key) = key.as_str() else {
                self.error(path, format!("{}: rule keys are words", display(path)));
                complete = false;
                continue;
            };
            let at = [path, &[Segment::from(key)]].concat();
            let parsed = match key {
                "name" => self.field(value, &at).map(|v| name = Some(v)),
                "description" => self.field(value, &at).map(|v| description = v),
                "match" => self.field(value, &at).map(|v| conditions = v),
                "exclude" => self.field(value, &at).map(|v| exclude = v),
                "mode" => self.field(value, &at).map(|v| mode = Some(v)),
                "continue" => self.field(value, &at).map(|v| continue_matching = v),
                "blast_radius" => self.field(value, &at).map(|v| blast_radius = v),
                "actions" => match value {
                    Value::Sequence(items) => {
                        let steps: Vec<Option<ActionSpec>> = items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| {
                                self.field(item, &[at.as_slice(), &[i.into()]].concat())
                            })
                            .collect();
                        steps
                            .into_iter()
                            .collect::<Option<Vec<_>>>()
                            .map(|v| actions = Some(v))
                    }
                    other => self.field(other, &at).map(|v| actions = Some(v)),
                },
                unknown => {
                    self.error(
                        &at,
                        format!(
                            "{}: unknown field `{unknown}`, expected one of {}",
                            display(&at),
                            quoted(RULE_KEYS)
                        ),
                    );
                    None
                }
            };
            complete &= parsed.is_some();
        }
        for (key, present) in [
            ("name", name.is_some()),
            ("mode", mode.is_some()),
            ("actions", actions.is_some()),
        ] {
            let failed_already = map.contains_key(key);
            if !present && !failed_already {
                self.error(path, format!("{}: missing field `{key}`", display(path)));
                complete = false;
            }
        }
        let (Some(name), Some(mode), Some(actions), true) = (name, mode, actions, complete) else {
            return None;
        };
        Some(Rule {
            name,
            description,
            conditions,
            exclude,
            mode,
            actions,
            continue_matching,
            blast_radius,
        })
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_file(file: &str, text: &str, errors: &mut Vec<PlaybookError>) -> ParsedFile {
    let mut parsed = ParsedFile {
        name: file.to_string(),
        guardrails: None,
        rules: Vec::new(),
        extends: false,
    };
    let document: Value = match serde_yaml_ng::from_str(text) {
        Ok(document) => document,
        Err(e) => {
            errors.push(yaml_error(file, &e));
            return parsed;
        }
    };
    let mut reader = FileReader {
        file,
        positions: Positions::of(text),
        errors,
    };
    let map = match &document {
        Value::Mapping(map) => map,
        Value::Null => {
            reader.error(&[], "the file is empty: a playbook has `rules:` (and may have `guardrails:` and `extends: defaults`)");
            return parsed;
        }
        _ => {
            reader.error(&[], "a playbook is a map with `rules:` (and may have `guardrails:` and `extends: defaults`)");
            return parsed;
        }
    };
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let at = [Segment::from(key)];
        match key {
            "extends" => {
                parsed.extends = reader.field::<Extends>(value, &at).is_some();
            }
            "guardrails" => {
                let location = reader.positions.find(&at);
                parsed.guardrails = reader
                    .field::<Option<Guardrails>>(value, &at)
                    .map(|g| (g.unwrap_or_default(), location));
            }
            "rules" => {
                let Value::Sequence(items) = value else {
                    if !value.is_null() {
                        reader.error(&at, "rules: a list of rules (`- name: ...`)");
                    }
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let path = vec![Segment::from("rules"), Segment::Index(i)];
                    let Some(rule) = reader.rule(item, &path) else {
                        continue;
                    };
                    for (relative, message) in checks::rule_problems(&rule) {
                        let at = [path.as_slice(), &relative].concat();
                        reader.error(&at, format!("rule {:?}: {message}", rule.name));
                    }
                    let name_at = [path.as_slice(), &["name".into()]].concat();
                    parsed.rules.push(LoadedRule {
                        planned: rule.actions.iter().map(PlannedAction::of).collect(),
                        rule,
                        source: file.to_string(),
                        location: reader.positions.find(&path),
                        name_location: reader.positions.find(&name_at),
                    });
                }
            }
            other => reader.error(
                &at,
                format!(
                    "unknown field `{other}`, expected one of {}",
                    quoted(FILE_KEYS)
                ),
            ),
        }
    }
    parsed
}

/// A YAML syntax error in words a user can act on, with the parser's own text after them.
fn yaml_error(file: &str, error: &serde_yaml_ng::Error) -> PlaybookError {
    let mut raw = error.to_string();
    let location = error.location().map(|l| (l.line(), l.column()));
    if location.is_some() {
        // The message repeats the position (" at line N column M"); it is in the prefix already.
        if let Some(at) = raw.rfind(" at line ") {
            raw.truncate(at);
        }
    }
    let advice = [
        ("mapping values are not allowed", "a `key: value` where YAML expected a plain value: check this line's indentation, and quote a value that contains `: `"),
        ("did not find expected key", "this line does not line up with the keys around it: keys of one map start in the same column"),
        ("did not find expected '-' indicator", "this line does not line up with the lines before it: items of one list start with `- ` in the same column, keys of one map in the same column"),
        ("found character that cannot start any token", "a character YAML cannot start a value with (a tab? YAML indents with spaces only; quote values starting with `@` or `` ` ``)"),
        ("could not find expected ':'", "a key without its `:`, or a quoted text that is not closed"),
        ("found unexpected end of stream", "the file ends inside a quoted text or a `[`/`{` that is not closed"),
        ("did not find expected node content", "a value is missing after `- ` or `key:`, or a `[`/`{` is not closed"),
    ]
    .into_iter()
    .find(|(needle, _)| raw.contains(needle))
    .map(|(_, advice)| advice);
    let message = match advice {
        Some(advice) => format!("{advice} (YAML: {raw})"),
        None => raw,
    };
    PlaybookError {
        file: file.to_string(),
        location,
        message,
    }
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
    use crate::actions::evidence::EvidenceParams;
    use crate::actions::isolate::{IsolateFallback, IsolationRung, RuleRange};
    use crate::actions::stop::StopParams;
    use crate::playbook::Mode;

    fn load(yaml: &str) -> Result<PlaybookSet, PlaybookErrors> {
        PlaybookSet::from_sources([("p.yaml".to_string(), yaml.to_string())])
    }

    fn only_error(yaml: &str) -> PlaybookError {
        let errors = load(yaml).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.into_iter().next().unwrap()
    }

    fn all_errors(yaml: &str) -> String {
        load(yaml).unwrap_err().to_string()
    }

    /// A rule with the usual keys around the one under test.
    fn rule(lines: &str) -> String {
        format!("rules:\n  - name: r\n    mode: enforce\n{lines}")
    }

    const ANY: &str = "    match: {finding_types: ['*']}\n";

    #[test]
    fn unknown_key_is_located() {
        let yaml = rule(&format!("{ANY}    matches: {{}}\n    actions: [notify]\n"));
        let error = only_error(&yaml);
        assert_eq!(error.location, Some((5, 5)), "{error}");
        assert!(error.message.contains("unknown field `matches`"), "{error}");
        assert!(error.message.contains("expected one of"), "{error}");
        assert!(error.to_string().starts_with("p.yaml:5:5: "), "{error}");
    }

    #[test]
    fn unknown_action_lists_the_known_ones() {
        let error = only_error(&rule(&format!("{ANY}    actions:\n      - quarantine\n")));
        assert_eq!(error.location, Some((6, 9)), "{error}");
        assert!(
            error.message.contains("unknown variant `quarantine`"),
            "{error}"
        );
        assert!(error.message.contains("isolate"), "{error}");
        let as_map = rule(&format!("{ANY}    actions:\n      - quarantine: {{}}\n"));
        assert!(only_error(&as_map)
            .message
            .contains("unknown variant `quarantine`"));
    }

    #[test]
    fn mistyped_parameters_are_located_at_their_key() {
        let yaml = rule(&format!(
            "{ANY}    actions:\n      - evidence\n      - stop: {{force: sometimes}}\n"
        ));
        let error = only_error(&yaml);
        assert_eq!(error.location, Some((7, 16)), "{error}");
        assert!(error.message.contains("expected a boolean"), "{error}");
        assert!(
            error
                .message
                .starts_with("rules[0].actions[1].stop.force: "),
            "{error}"
        );
        let unknown_param = rule(&format!(
            "{ANY}    actions:\n      - isolate: {{fallbak: stop}}\n"
        ));
        let error = only_error(&unknown_param);
        assert!(error.message.contains("unknown field `fallbak`"), "{error}");
        assert_eq!(error.location, Some((6, 19)), "{error}");
        let bad_mode = "rules:\n  - name: r\n    mode: yolo\n    match: {finding_types: ['*']}\n    actions: [notify]\n";
        let error = only_error(bad_mode);
        assert_eq!(error.location, Some((3, 5)));
        assert!(error.message.contains("enforce"), "{error}");
        let bad_severity = rule("    match: {min_severity: Severe}\n    actions: [notify]\n");
        assert!(only_error(&bad_severity)
            .message
            .contains("one of Low, Medium, High, Critical"));
        let bad_glob = rule("    match: {clusters: ['prod-[']}\n    actions: [notify]\n");
        assert!(only_error(&bad_glob).message.contains("invalid glob"));
        let two_actions_in_one = rule(&format!(
            "{ANY}    actions:\n      - {{evidence: {{}}, notify: {{}}}}\n"
        ));
        assert!(only_error(&two_actions_in_one)
            .message
            .contains("exactly one action"));
    }

    #[test]
    fn every_mistake_in_a_file_is_reported_at_its_own_line() {
        // A mistyped action in one rule does not hide a mistyped severity in another, nor a
        // second mistake in the same rule.
        let yaml = "rules:
  - name: a
    mode: enforce
    match: {finding_types: ['*'], min_severity: Mdium}
    actions:
      - isolte
      - notify
  - name: b
    mode: enforse
    match:
      finding_types: ['*']
      max_severity: Hihg
    actions: [notify]
";
        let errors = load(yaml).unwrap_err().0;
        let located: Vec<(Option<(usize, usize)>, &str)> = errors
            .iter()
            .map(|e| (e.location, e.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 4, "{located:#?}");
        let line_of = |needle: &str| {
            errors
                .iter()
                .find(|e| e.message.contains(needle))
                .and_then(|e| e.location)
                .map(|l| l.0)
        };
        assert_eq!(line_of("Mdium"), Some(4));
        assert_eq!(line_of("isolte"), Some(6));
        assert_eq!(line_of("enforse"), Some(9));
        assert_eq!(line_of("Hihg"), Some(12));
    }

    #[test]
    fn a_rule_must_say_what_it_matches() {
        for yaml in [
            rule("    actions: [notify]\n"),
            rule("    match:\n    actions: [notify]\n"),
            rule("    match: {}\n    actions: [notify]\n"),
        ] {
            let error = only_error(&yaml);
            assert!(error.message.contains("finding_types: [\"*\"]"), "{error}");
        }
        let missing = only_error(&rule("    actions: [notify]\n"));
        assert_eq!(missing.location, Some((2, 5)), "{missing}");
        let empty = only_error(&rule("    match: {}\n    actions: [notify]\n"));
        assert_eq!(empty.location, Some((4, 5)), "{empty}");
        // A deliberate catch-all is fine.
        assert!(load(&rule(&format!("{ANY}    actions: [notify]\n"))).is_ok());
    }

    #[test]
    fn empty_lists_are_refused() {
        let yaml = rule("    match:\n      finding_types: []\n      targets: []\n      tags: {}\n    exclude: {clusters: []}\n    actions: [notify]\n");
        let all = all_errors(&yaml);
        for expected in [
            "p.yaml:5:7: rule \"r\": `match.finding_types` is empty",
            "p.yaml:6:7: rule \"r\": `match.targets` is empty",
            "p.yaml:7:7: rule \"r\": `match.tags` is empty",
            "`exclude.clusters` is empty, so it would exclude nothing",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn actions_must_work_on_every_target_the_rule_can_match() {
        let yaml = rule("    match: {targets: [eks_workload, ec2_instance]}\n    actions: [evidence, deregister, stop, notify]\n");
        let all = all_errors(&yaml);
        assert!(all.contains("`deregister` acts on ecs_task, ec2_instance only, but this rule can match eks_workload: add `targets: [ec2_instance]`"), "{all}");
        assert!(
            all.contains(
                "`stop` acts on ecs_task only, but this rule can match ec2_instance, eks_workload"
            ),
            "{all}"
        );
        // No `targets`: every kind can match, so a catch-all cannot stop.
        let catch_all = rule(&format!("{ANY}    actions: [evidence, stop, notify]\n"));
        assert!(all_errors(&catch_all)
            .contains("this rule can match ec2_instance, eks_workload, unsupported"));
        // Conditions only ECS tasks have narrow the kinds without `targets`.
        let by_service =
            rule("    match: {services: ['api-*']}\n    actions: [evidence, stop, notify]\n");
        assert!(load(&by_service).is_ok());
        let fallback = rule("    match: {targets: [ecs_task, ec2_instance]}\n    actions: [{isolate: {fallback: stop}}, evidence, notify]\n");
        assert!(all_errors(&fallback).contains(
            "`fallback: stop` stops ECS tasks only, but this rule can match ec2_instance"
        ));
        let revoke =
            rule("    match: {targets: [eks_workload]}\n    actions: [revoke-sessions, notify]\n");
        let error = only_error(&revoke);
        assert!(
            error
                .message
                .contains("`revoke-sessions` acts on ecs_task, ec2_instance only, but this rule can match eks_workload"),
            "{error}"
        );
        assert_eq!(error.location, Some((5, 15)), "{error}");
    }

    #[test]
    fn action_forms_and_defaults() {
        let yaml = r#"
rules:
  - name: r
    mode: enforce
    match: {targets: [ecs_task]}
    actions:
      - isolate: {fallback: stop, rungs: [nacl-quarantine], nacl_rule_range: {first: 10, last: 20}}
      - evidence:
      - tag: {extra: {ticket: SEC-1}}
      - stop
      - notify
"#;
        let set = load(yaml).unwrap();
        let actions = &set.rules[0].rule.actions;
        let ActionSpec::Isolate(isolate) = &actions[0] else {
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
            ActionSpec::Evidence(EvidenceParams { legal_hold: true })
        );
        assert_eq!(actions[3], ActionSpec::Stop(StopParams { force: false }));
    }

    #[test]
    fn consistency_problems_are_reported_together() {
        let yaml = r#"
rules:
  - name: bad
    mode: notify-only
    exclude: {}
    match: {targets: [ecs_task], min_severity: High, max_severity: Low}
    actions: [notify, isolate, stop, stop]
  - name: bad
    mode: enforce
    match: {targets: [ec2_instance]}
    actions: []
  - name: quiet
    mode: notify-only
    match: {targets: [eks_workload]}
    actions: [evidence]
"#;
        let errors = load(yaml).unwrap_err().0;
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        for expected in [
            "p.yaml:7:23: rule \"bad\": `isolate` (contain phase) is listed after `notify`",
            "`stop` runs only after evidence",
            "p.yaml:7:38: rule \"bad\": action `stop` is listed twice",
            "p.yaml:13:5: rule \"quiet\": mode is notify-only but there is no `notify`",
            "p.yaml:5:5: rule \"bad\": `exclude` has no conditions",
            "p.yaml:6:54: rule \"bad\": min_severity High is above max_severity Low",
            "p.yaml:11:5: rule \"bad\": no actions",
            "p.yaml:8:5: rule name \"bad\" is already used at p.yaml:3;",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(
            all.matches("`stop` runs only after evidence").count(),
            1,
            "{all}"
        );
    }

    #[test]
    fn duplicate_names_across_files_name_the_first() {
        let a = ("a.yaml".to_string(), "rules:\n  - {name: x, mode: enforce, match: {targets: [ecs_task]}, actions: [notify]}\n".to_string());
        let b = ("b.yaml".to_string(), "\nrules:\n  - {name: x, mode: enforce, match: {targets: [ec2_instance]}, actions: [notify]}\n".to_string());
        let errors = PlaybookSet::from_sources([a, b]).unwrap_err().to_string();
        assert!(
            errors.contains("b.yaml:3:6: rule name \"x\" is already used at a.yaml:2;"),
            "{errors}"
        );
    }

    #[test]
    fn syntax_errors_say_what_to_do() {
        let bad_indent = "rules:\n  - name: r\n    mode: enforce\n   match: {targets: [ecs_task]}\n    actions: [notify]\n";
        let error = only_error(bad_indent);
        assert!(error.location.is_some(), "{error}");
        assert!(
            error.message.contains("line up") || error.message.contains("indentation"),
            "{error}"
        );
        assert!(error.message.contains("(YAML: "), "{error}");
        let empty = only_error("");
        assert!(empty.message.contains("the file is empty"), "{empty}");
    }

    #[test]
    fn guardrails_in_two_files_conflict() {
        let a = (
            "a.yaml".to_string(),
            "guardrails: {}\nrules: [{name: a, mode: enforce, match: {targets: [ecs_task]}, actions: [notify]}]".to_string(),
        );
        let b = (
            "b.yaml".to_string(),
            "guardrails: {}\nrules: [{name: b, mode: enforce, match: {targets: [ec2_instance]}, actions: [notify]}]".to_string(),
        );
        let errors = PlaybookSet::from_sources([a, b]).unwrap_err();
        assert!(
            errors
                .to_string()
                .contains("b.yaml:1:1: guardrails are already set in a.yaml"),
            "{errors}"
        );
    }

    #[test]
    fn a_rule_an_earlier_rule_always_decides_is_refused() {
        let yaml = r#"
rules:
  - name: broad
    mode: enforce
    match: {finding_types: ["*:Runtime/*"], targets: [ecs_task], min_severity: High}
    actions: [notify]
  - name: narrow
    mode: enforce
    match: {finding_types: ["CryptoCurrency:Runtime/BitcoinTool.B"], targets: [ecs_task], min_severity: Critical, clusters: [prod]}
    actions: [notify]
  - name: lower
    mode: enforce
    match: {finding_types: ["*:Runtime/*"], targets: [ecs_task], min_severity: Medium}
    actions: [notify]
"#;
        let error = only_error(yaml);
        assert_eq!(error.location, Some((7, 5)), "{error}");
        assert!(
            error.message.starts_with(
                "rule \"narrow\" can never act: rule \"broad\" (p.yaml:3) comes first"
            ),
            "{error}"
        );
        // `continue: true` hands findings on: nothing is shadowed.
        let continued = yaml.replacen(
            "actions: [notify]",
            "actions: [notify]\n    continue: true",
            1,
        );
        assert!(load(&continued).is_ok());
    }

    #[test]
    fn rules_in_a_later_file_that_share_findings_are_warned_about() {
        let default = (
            "dir/default.yaml".to_string(),
            "rules:\n  - {name: ecs-high, mode: enforce, match: {finding_types: ['*:Runtime/*'], targets: [ecs_task], min_severity: High}, actions: [notify]}\n  - {name: ec2, mode: enforce, match: {targets: [ec2_instance]}, actions: [notify]}\n".to_string(),
        );
        let staging = (
            "dir/staging.yaml".to_string(),
            "rules:\n  - {name: staging, mode: notify-only, match: {services: ['staging-*']}, actions: [notify]}\n".to_string(),
        );
        let set = PlaybookSet::from_sources([default, staging]).unwrap();
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
        let warning = set.warnings[0].to_string();
        assert!(warning.starts_with("dir/staging.yaml:2:6: rule \"staging\" may not see all of its findings: \"ecs-high\" (dir/default.yaml:2) comes first"), "{warning}");
        assert!(
            !warning.contains("\"ec2\""),
            "targets tell ec2 apart: {warning}"
        );
    }

    #[test]
    fn extends_defaults_puts_a_teams_rules_first() {
        let team = (
            "team/staging.yaml".to_string(),
            "extends: defaults\nrules:\n  - {name: staging, mode: notify-only, match: {services: ['staging-*']}, actions: [notify]}\n".to_string(),
        );
        let set = PlaybookSet::from_sources([team]).unwrap();
        let defaults = PlaybookSet::defaults().unwrap();
        assert_eq!(set.rules.len(), defaults.rules.len() + 1);
        assert_eq!(set.rules[0].rule.name, "staging");
        assert!(
            set.rules[1].source.starts_with("(built-in) "),
            "{}",
            set.rules[1].source
        );
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        assert_eq!(set.guardrails, defaults.guardrails);
        // A team may override a built-in rule entirely, and set its own guardrails.
        let overriding = (
            "team/all.yaml".to_string(),
            "extends: defaults\nguardrails: {ignore_archived: false}\nrules:\n  - {name: all-ecs, mode: notify-only, match: {targets: [ecs_task]}, actions: [notify]}\n".to_string(),
        );
        let set = PlaybookSet::from_sources([overriding]).unwrap();
        assert!(!set.guardrails.ignore_archived);
        let bad = (
            "t.yaml".to_string(),
            "extends: everything\nrules: []\n".to_string(),
        );
        let error = PlaybookSet::from_sources([bad]).unwrap_err().to_string();
        assert!(
            error
                .contains("t.yaml:1:1: extends: unknown variant `everything`, expected `defaults`"),
            "{error}"
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
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        let from_disk = PlaybookSet::load_path(&dir).unwrap();
        assert_eq!(from_disk.rules.len(), set.rules.len());
    }

    #[test]
    fn committed_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/schema.json");
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        // Not assert_eq!: printing both schemas would bury the message.
        assert!(
            committed == json_schema(),
            "playbooks/schema.json is stale: run `responder schema > playbooks/schema.json`"
        );
    }

    #[test]
    fn the_reader_knows_the_keys_the_schema_lists() {
        let schema = json_schema();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            k
        };
        let sorted = |list: &[&str]| -> Vec<String> {
            let mut k: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&schema), sorted(FILE_KEYS));
        assert_eq!(keys(&schema["definitions"]["Rule"]), sorted(RULE_KEYS));
        let required = &schema["definitions"]["Rule"]["required"];
        assert!(
            required
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("match")),
            "{required}"
        );
    }

    #[test]
    fn every_field_of_the_format_is_described() {
        fn walk(value: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                        for (key, property) in properties {
                            if property.get("description").is_none() {
                                missing.push(format!("{path}.{key}"));
                            }
                        }
                    }
                    for (key, child) in map {
                        walk(child, &format!("{path}.{key}"), missing);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, &format!("{path}[{i}]"), missing);
                    }
                }
                _ => {}
            }
        }
        let schema = json_schema();
        let mut missing = Vec::new();
        walk(&schema, "", &mut missing);
        for (name, definition) in schema["definitions"].as_object().unwrap() {
            if definition.get("description").is_none() {
                missing.push(format!("definition {name}"));
            }
        }
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    #[test]
    fn mode_order_and_names() {
        assert!(Mode::DryRun < Mode::NotifyOnly && Mode::NotifyOnly < Mode::Enforce);
        assert_eq!(Mode::parse("DRY-RUN"), Some(Mode::DryRun));
        assert_eq!(Mode::Enforce.capped_at(Mode::DryRun), Mode::DryRun);
    }
}
