//! Reading playbooks from files (or the copies compiled into the binary) and checking what
//! serde cannot: consistency within a rule and across files. Errors carry file, line, column.

use std::collections::HashSet;
use std::path::Path;

use super::{Conditions, Guardrails, LoadedRule, Mode, PlaybookFile, PlaybookSet, Rule};
use crate::actions::isolate::IsolateFallback;
use crate::actions::stop::StopParams;
use crate::actions::{ActionName, ActionSpec};

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
            ActionSpec::Stop(StopParams { force: false }) if !has_evidence => problems.push(
                "`stop` runs only after evidence is preserved: add an `evidence` step, or set `stop: {force: true}`".to_string(),
            ),
            ActionSpec::Isolate(p) if p.fallback == IsolateFallback::Stop && !has_evidence => problems.push(
                "isolate's `fallback: stop` stops the task after evidence is preserved: add an `evidence` step".to_string(),
            ),
            ActionSpec::Isolate(p) => {
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
    use crate::actions::evidence::EvidenceParams;
    use crate::actions::isolate::{IsolationRung, RuleRange};

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
    fn mode_order_and_names() {
        assert!(Mode::DryRun < Mode::NotifyOnly && Mode::NotifyOnly < Mode::Enforce);
        assert_eq!(Mode::parse("DRY-RUN"), Some(Mode::DryRun));
        assert_eq!(Mode::Enforce.capped_at(Mode::DryRun), Mode::DryRun);
    }
}
