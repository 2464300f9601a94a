//! What serde cannot see: whether a rule says what it matches, whether its actions can work on
//! the workloads it can match, whether its steps are in an order that runs, and whether an
//! earlier rule takes its findings away. Pure; each problem carries the path of the key it is
//! about, so it is reported at that key's line.

use std::collections::HashSet;

use super::positions::{Segment, YamlPath};
use super::{LoadedRule, Mode, PlaybookError, Rule};
use crate::actions::isolate::IsolateFallback;
use crate::actions::stop::StopParams;
use crate::actions::{ActionName, ActionSpec};
use crate::incident::TargetKind;

fn at(segments: &[Segment]) -> YamlPath {
    segments.to_vec()
}

fn kinds(list: &[TargetKind]) -> String {
    list.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// Problems within one rule, each with the path (relative to the rule) it is about.
pub(crate) fn rule_problems(rule: &Rule) -> Vec<(YamlPath, String)> {
    let mut problems = Vec::new();
    if rule.name.trim().is_empty() {
        problems.push((at(&["name".into()]), "the name is empty".to_string()));
    }
    match &rule.conditions {
        None => problems.push((
            Vec::new(),
            "`match` is missing: say which findings the rule is for (a deliberate catch-all is `match: {finding_types: [\"*\"]}`)".to_string(),
        )),
        Some(conditions) if conditions.is_empty() => problems.push((
            at(&["match".into()]),
            "`match` has no conditions, so it would match every finding: say which findings the rule is for (a deliberate catch-all is `match: {finding_types: [\"*\"]}`)".to_string(),
        )),
        Some(conditions) => {
            for field in conditions.empty_lists() {
                problems.push((
                    at(&["match".into(), field.into()]),
                    format!("`match.{field}` is empty, so the rule would match no finding: list at least one value, or remove `{field}` to not filter on it"),
                ));
            }
        }
    }
    if let Some(exclude) = &rule.exclude {
        if exclude.is_empty() {
            problems.push((
                at(&["exclude".into()]),
                "`exclude` has no conditions, so it would exclude every finding".to_string(),
            ));
        }
        for field in exclude.empty_lists() {
            problems.push((
                at(&["exclude".into(), field.into()]),
                format!("`exclude.{field}` is empty, so it would exclude nothing: list at least one value, or remove `{field}`"),
            ));
        }
    }
    if rule.actions.is_empty() {
        problems.push((
            at(&["actions".into()]),
            "no actions: a rule must do something (use notify to only tell people)".to_string(),
        ));
    }
    let action_at = |i: usize| at(&["actions".into(), i.into()]);
    let mut seen = HashSet::new();
    for (i, action) in rule.actions.iter().enumerate() {
        if !seen.insert(action.name()) {
            problems.push((
                action_at(i),
                format!("action `{}` is listed twice", action.name()),
            ));
        }
    }
    for (i, pair) in rule.actions.windows(2).enumerate() {
        let (before, after) = (pair[0].name(), pair[1].name());
        if before.phase() > after.phase() {
            problems.push((action_at(i + 1), format!(
                "`{after}` ({} phase) is listed after `{before}` ({} phase); actions run in the phases contain → preserve → stop → notify, list them in that order",
                after.phase().name(),
                before.phase().name()
            )));
        }
    }
    // A lockdown contains every task of the service: the guard must be told, on the rule.
    for (i, action) in rule.actions.iter().enumerate() {
        let locks_down = matches!(action, crate::actions::ActionSpec::Isolate(p)
            if p.rungs.contains(&crate::actions::isolate::IsolationRung::ServiceSgLockdown));
        let whole_service_allowed = rule
            .blast_radius
            .is_some_and(|b| b.min_healthy.tasks(u32::MAX) == 0);
        if locks_down && !whole_service_allowed {
            problems.push((
                action_at(i),
                "the `service-sg-lockdown` rung contains every task of the service, which the blast-radius guard forbids: allow it on this rule with `blast_radius: {min_healthy: 0}`".to_string(),
            ));
        }
    }
    let has_evidence = seen.contains(&ActionName::Evidence);
    let matchable = rule
        .conditions
        .as_ref()
        .map(|c| c.target_kinds())
        .unwrap_or_else(|| TargetKind::ALL.to_vec());
    let mut checked = HashSet::new();
    for (i, action) in rule.actions.iter().enumerate() {
        if !checked.insert(action.name()) {
            continue;
        }
        let supported = action.name().targets();
        let unsupported: Vec<TargetKind> = matchable
            .iter()
            .copied()
            .filter(|k| !supported.contains(k))
            .collect();
        if supported.is_empty() {
            problems.push((
                action_at(i),
                format!(
                    "`{}` is not implemented yet and would fail on every finding: remove it",
                    action.name()
                ),
            ));
        } else if !unsupported.is_empty() {
            let workable: Vec<TargetKind> = matchable
                .iter()
                .copied()
                .filter(|k| supported.contains(k))
                .collect();
            let fix = if workable.is_empty() {
                format!(
                    "move `{}` to a rule for {}",
                    action.name(),
                    kinds(supported)
                )
            } else {
                format!(
                    "add `targets: [{}]` to `match`, or move `{}` to a rule for those targets",
                    kinds(&workable),
                    action.name()
                )
            };
            problems.push((
                action_at(i),
                format!(
                    "`{}` acts on {} only, but this rule can match {}: {fix}",
                    action.name(),
                    kinds(supported),
                    kinds(&unsupported),
                ),
            ));
        }
        match action {
            ActionSpec::Stop(StopParams { force: false }) if !has_evidence => problems.push((action_at(i),
                "`stop` runs only after evidence is preserved: add an `evidence` step, or set `stop: {force: true}`".to_string(),
            )),
            ActionSpec::Isolate(p) => {
                let fallback_at = at(&["actions".into(), i.into(), "isolate".into(), "fallback".into()]);
                if p.fallback == IsolateFallback::Stop {
                    if !has_evidence {
                        problems.push((fallback_at.clone(),
                            "isolate's `fallback: stop` stops the task after evidence is preserved: add an `evidence` step".to_string(),
                        ));
                    }
                    let not_tasks: Vec<TargetKind> = matchable
                        .iter()
                        .copied()
                        .filter(|k| *k != TargetKind::EcsTask && supported.contains(k))
                        .collect();
                    if !not_tasks.is_empty() {
                        problems.push((fallback_at, format!(
                            "isolate's `fallback: stop` stops ECS tasks only, but this rule can match {}: add `targets: [ecs_task]` to `match`, or drop the fallback",
                            kinds(&not_tasks)
                        )));
                    }
                }
                if p.rungs.is_empty() {
                    problems.push((
                        at(&["actions".into(), i.into(), "isolate".into(), "rungs".into()]),
                        "isolate has no `rungs` to try".to_string(),
                    ));
                }
                let r = p.nacl_rule_range;
                if r.first == 0 || r.last > 32766 || r.first > r.last {
                    problems.push((
                        at(&["actions".into(), i.into(), "isolate".into(), "nacl_rule_range".into()]),
                        format!(
                            "nacl_rule_range {}..{} must satisfy 1 <= first <= last <= 32766",
                            r.first, r.last
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    if rule.mode == Mode::NotifyOnly && !seen.contains(&ActionName::Notify) {
        problems.push((
            at(&["mode".into()]),
            "mode is notify-only but there is no `notify` step".to_string(),
        ));
    }
    if let Some(conditions) = &rule.conditions {
        if let (Some(min), Some(max)) = (conditions.min_severity, conditions.max_severity) {
            if min.lowest_score() > max.highest_score() {
                problems.push((
                    at(&["match".into(), "max_severity".into()]),
                    format!(
                        "min_severity {min} is above max_severity {max}: the rule can never match"
                    ),
                ));
            }
        }
    }
    problems
}

/// Rules an earlier rule takes findings from. A rule whose every finding an earlier rule
/// decides can never act: an error. A rule in a later file that shares some findings with a
/// rule in an earlier file loses those to it because of file names alone: a warning. Built-in
/// rules a team's rule overrides (`extends: defaults`) are the point of layering: not reported.
pub(crate) fn shadowing(
    rules: &[LoadedRule],
    built_in: impl Fn(&LoadedRule) -> bool,
) -> (Vec<PlaybookError>, Vec<PlaybookError>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (i, later) in rules.iter().enumerate() {
        if built_in(later) {
            continue;
        }
        let Some(theirs) = &later.rule.conditions else {
            continue;
        };
        let mut overlapping: Vec<&LoadedRule> = Vec::new();
        for earlier in &rules[..i] {
            // A rule without conditions is refused already; it shadows nothing worth saying.
            let Some(mine) = earlier.rule.conditions.as_ref().filter(|c| !c.is_empty()) else {
                continue;
            };
            // `continue: true` hands the finding on; an `exclude` leaves some findings out.
            if earlier.rule.continue_matching {
                continue;
            }
            if earlier.rule.exclude.is_none() && mine.covers(theirs) {
                errors.push(PlaybookError {
                    file: later.source.clone(),
                    location: later.name_location.or(later.location),
                    message: format!(
                        "rule {:?} can never act: rule {:?} ({}) comes first and matches every finding it matches. Put it before {:?} (files are read in name order; a team file with `extends: defaults` comes before the built-in rules), or narrow {:?}",
                        later.rule.name, earlier.rule.name, earlier.place(), earlier.rule.name, earlier.rule.name
                    ),
                });
                break;
            }
            if earlier.source != later.source && !built_in(earlier) && mine.may_overlap(theirs) {
                overlapping.push(earlier);
            }
        }
        if !overlapping.is_empty()
            && !errors.iter().any(|e: &PlaybookError| {
                e.location == later.name_location.or(later.location) && e.file == later.source
            })
        {
            let names: Vec<String> = overlapping
                .iter()
                .map(|r| format!("{:?} ({})", r.rule.name, r.place()))
                .collect();
            warnings.push(PlaybookError {
                file: later.source.clone(),
                location: later.name_location.or(later.location),
                message: format!(
                    "rule {:?} may not see all of its findings: {} come{} first only because {} sort{} before this file, and decide the findings both match. If {:?} should decide, put it in a file that sorts first, or layer it over the defaults with `extends: defaults`",
                    later.rule.name,
                    names.join(", "),
                    if names.len() == 1 { "s" } else { "" },
                    if names.len() == 1 { "its file's name" } else { "their files' names" },
                    if names.len() == 1 { "s" } else { "" },
                    later.rule.name
                ),
            });
        }
    }
    (errors, warnings)
}
