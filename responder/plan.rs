//! Planning: from a received event and the playbooks to a decision — act (which steps, in which
//! mode), skip (and why), or release a stopped task's quarantine. Pure — no I/O, no clock.

use serde::Serialize;

use crate::actions::{ActionName, ActionSpec};
use crate::event::Inbound;
use crate::incident::{Incident, Target};
use crate::playbook::{Mode, PlaybookSet, SeverityThreshold, TagCondition};

/// One planned step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub action: ActionName,
    pub params: serde_json::Value,
    /// The rule that asked for this step.
    pub rule: String,
    pub mode: Mode,
    /// Why the step is in the plan.
    pub reason: String,
    /// The action with its typed parameters.
    #[serde(skip)]
    pub spec: ActionSpec,
}

/// What to do about one finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Act(ActPlan),
    Skip(SkipReason),
    /// A quarantined task stopped: remove the network ACL entries recorded for it.
    Release {
        task_arn: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActPlan {
    /// The first matching rule: it decided.
    pub rule: String,
    pub mode: Mode,
    /// Every rule that contributed steps (more than one only with `continue: true`).
    pub matched_rules: Vec<String>,
    pub steps: Vec<Step>,
    pub reason: String,
    /// Things a reader should know: exemptions applied, duplicate steps dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Why nothing will be done.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SkipReason {
    NotAGuardDutyFinding {
        source: Option<String>,
        detail_type: Option<String>,
    },
    SampleFinding,
    Archived,
    BelowMinimumSeverity {
        severity: f64,
        minimum: SeverityThreshold,
    },
    UnsupportedResource {
        resource_type: String,
    },
    Exempt {
        tag: TagCondition,
        on: String,
    },
    NoRuleMatched {
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// An ECS task state change other than STOPPED: nothing to release yet.
    TaskNotStopped {
        task_arn: String,
        last_status: Option<String>,
    },
}

impl SkipReason {
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::NotAGuardDutyFinding { .. } => "not_a_guardduty_finding",
            SkipReason::SampleFinding => "sample_finding",
            SkipReason::Archived => "archived",
            SkipReason::BelowMinimumSeverity { .. } => "below_minimum_severity",
            SkipReason::UnsupportedResource { .. } => "unsupported_resource",
            SkipReason::Exempt { .. } => "exempt",
            SkipReason::NoRuleMatched { .. } => "no_rule_matched",
            SkipReason::TaskNotStopped { .. } => "task_not_stopped",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SkipReason::NotAGuardDutyFinding {
                source,
                detail_type,
            } => format!(
                "not a GuardDuty finding (source {}, detail-type {})",
                source.as_deref().unwrap_or("missing"),
                detail_type.as_deref().unwrap_or("missing")
            ),
            SkipReason::SampleFinding => {
                "GuardDuty sample finding (guardrail ignore_sample_findings)".to_string()
            }
            SkipReason::Archived => "archived finding (guardrail ignore_archived)".to_string(),
            SkipReason::BelowMinimumSeverity { severity, minimum } => {
                format!("severity {severity} is below the guardrail minimum {minimum}")
            }
            SkipReason::UnsupportedResource { resource_type } => format!(
                "resource type {resource_type} is not one this responder can act on (ECS task, EC2 instance, EKS workload)"
            ),
            SkipReason::Exempt { tag, on } => format!(
                "exempt: tag {tag} on the {on}; no step other than containment was planned"
            ),
            SkipReason::TaskNotStopped {
                task_arn,
                last_status,
            } => format!(
                "ECS task {task_arn} changed state to {}, not STOPPED: nothing to release",
                last_status.as_deref().unwrap_or("unknown")
            ),
            SkipReason::NoRuleMatched { hint } => match hint {
                Some(hint) => format!("no rule matched ({hint})"),
                None => "no rule matched".to_string(),
            },
        }
    }
}

impl Decision {
    /// Apply a deployment-wide mode ceiling (e.g. `dry-run` on first deploy).
    pub fn capped_at(mut self, ceiling: Mode) -> Decision {
        if let Decision::Act(plan) = &mut self {
            plan.mode = plan.mode.capped_at(ceiling);
            for step in &mut plan.steps {
                step.mode = step.mode.capped_at(ceiling);
            }
        }
        self
    }

    pub fn reason(&self) -> String {
        match self {
            Decision::Act(plan) => plan.reason.clone(),
            Decision::Skip(reason) => reason.describe(),
            Decision::Release { reason, .. } => reason.clone(),
        }
    }
}

/// Decide what to do about one received event. `ceiling` caps every rule's mode (a deployment
/// in `dry-run` never mutates).
pub fn decide(inbound: &Inbound, playbooks: &PlaybookSet, ceiling: Mode) -> Decision {
    match inbound {
        Inbound::Finding { incident, .. } => plan(incident, playbooks).capped_at(ceiling),
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

/// Decide what to do about an incident. Guardrails first, then rules in order.
pub fn plan(incident: &Incident, playbooks: &PlaybookSet) -> Decision {
    let guardrails = &playbooks.guardrails;
    if guardrails.ignore_sample_findings && incident.sample {
        return Decision::Skip(SkipReason::SampleFinding);
    }
    if guardrails.ignore_archived && incident.archived {
        return Decision::Skip(SkipReason::Archived);
    }
    if let Some(minimum) = guardrails.min_severity {
        if !minimum.at_most(incident.severity) {
            return Decision::Skip(SkipReason::BelowMinimumSeverity {
                severity: incident.severity,
                minimum,
            });
        }
    }

    let mut matched_rules: Vec<String> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut notes = Vec::new();
    let mut first_mode = None;
    for loaded in &playbooks.rules {
        let rule = &loaded.rule;
        let excluded = rule
            .exclude
            .as_ref()
            .is_some_and(|exclude| exclude.matches(incident));
        if !rule.conditions.matches(incident) || excluded {
            continue;
        }
        matched_rules.push(rule.name.clone());
        first_mode.get_or_insert(rule.mode);
        for action in &rule.actions {
            if let Some(earlier) = steps.iter().find(|s| s.action == action.name()) {
                notes.push(format!(
                    "rule {:?} also asks for `{}`; the step from rule {:?} is kept",
                    rule.name,
                    action.name(),
                    earlier.rule
                ));
                continue;
            }
            steps.push(Step {
                action: action.name(),
                params: action.params_json(),
                rule: rule.name.clone(),
                mode: rule.mode,
                reason: action.name().purpose().to_string(),
                spec: action.clone(),
            });
        }
        if !rule.continue_matching {
            break;
        }
    }

    let (Some(rule), Some(mode)) = (matched_rules.first().cloned(), first_mode) else {
        if let Target::Unsupported { resource_type } = &incident.target {
            return Decision::Skip(SkipReason::UnsupportedResource {
                resource_type: resource_type.clone(),
            });
        }
        let hint = (!incident.finding_type_parts.is_runtime()).then(|| {
            format!(
                "{} is not a Runtime Monitoring finding",
                incident.finding_type
            )
        });
        return Decision::Skip(SkipReason::NoRuleMatched { hint });
    };

    // Rules are each in phase order; steps merged from several rules are put back in it.
    steps.sort_by_key(|step| step.action.phase());

    if let Some((on, _)) = exemption(incident, &guardrails.exempt_tag) {
        let (kept, dropped): (Vec<Step>, Vec<Step>) = steps
            .into_iter()
            .partition(|step| !step.action.is_containment());
        if kept.is_empty() {
            return Decision::Skip(SkipReason::Exempt {
                tag: guardrails.exempt_tag.clone(),
                on: on.to_string(),
            });
        }
        steps = kept;
        if !dropped.is_empty() {
            let names: Vec<&str> = dropped.iter().map(|s| s.action.name()).collect();
            notes.push(format!(
                "exempt: tag {} on the {on}; containment skipped ({})",
                guardrails.exempt_tag,
                names.join(", ")
            ));
        }
    }

    let reason = format!(
        "rule {rule:?} matched a {} ({}) {} finding on {}",
        incident.band,
        incident.severity,
        incident.finding_type,
        incident.target.label()
    );
    Decision::Act(ActPlan {
        rule,
        mode,
        matched_rules,
        steps,
        reason,
        notes,
    })
}

/// Where the exemption tag is set, if anywhere the finding shows (service tags are not in
/// findings; the executor checks them before containing).
fn exemption<'a>(incident: &'a Incident, tag: &TagCondition) -> Option<(&'static str, &'a str)> {
    incident
        .target
        .tag_sources()
        .into_iter()
        .find_map(|(source, tags)| {
            tags.get(&tag.key)
                .filter(|value| value.eq_ignore_ascii_case(&tag.value))
                .map(|value| (source, value.as_str()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, Inbound};
    use crate::incident::Incident;
    use crate::playbook::PlaybookSet;
    use serde_json::{json, Value};

    fn event(name: &str) -> Value {
        let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn incident_of(value: &Value) -> Incident {
        match parse_event(value.to_string().as_bytes()).unwrap() {
            Inbound::Finding { incident, .. } => *incident,
            other => panic!("not a finding: {other:?}"),
        }
    }

    fn fargate_high() -> Value {
        event("fargate-crypto-miner-high.json")
    }

    fn with(mut value: Value, pointer: &str, new: Value) -> Value {
        *value.pointer_mut(pointer).unwrap() = new;
        value
    }

    fn playbooks(yaml: &str) -> PlaybookSet {
        PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
    }

    fn decide(value: &Value, yaml: &str) -> Decision {
        plan(&incident_of(value), &playbooks(yaml))
    }

    fn actions(decision: &Decision) -> Vec<&'static str> {
        match decision {
            Decision::Act(p) => p.steps.iter().map(|s| s.action.name()).collect(),
            other => panic!("expected act, got {other:?}"),
        }
    }

    fn skip_code(decision: &Decision) -> &'static str {
        match decision {
            Decision::Skip(r) => r.code(),
            other => panic!("expected skip, got {other:?}"),
        }
    }

    const ONE_RULE: &str = "rules: [{name: all, mode: enforce, actions: [notify]}]";

    #[test]
    fn default_playbooks_follow_the_documented_policy() {
        let set = PlaybookSet::defaults().unwrap();
        let cases = [
            (
                "fargate-crypto-miner-high.json",
                Some(vec!["isolate", "evidence", "tag", "notify"]),
            ),
            (
                "fargate-reverse-shell.json",
                Some(vec!["isolate", "evidence", "tag", "notify"]),
            ),
            (
                "ecs-ec2-launch-type-via-admin.json",
                Some(vec!["isolate", "evidence", "tag", "notify"]),
            ),
            (
                "fargate-new-binary-medium.json",
                Some(vec!["evidence", "notify"]),
            ),
            ("fargate-suspicious-command-low.json", Some(vec!["notify"])),
            (
                "ec2-instance-process-injection.json",
                Some(vec!["isolate", "snapshot-volumes", "evidence", "notify"]),
            ),
            (
                "eks-runc-container-escape.json",
                Some(vec!["evidence", "notify"]),
            ),
            ("ec2-port-probe-not-runtime.json", None),
            ("sample-finding.json", None),
            ("fargate-reverse-shell-archived.json", None),
        ];
        for (name, expected) in cases {
            let decision = plan(&incident_of(&event(name)), &set);
            match expected {
                Some(expected) => assert_eq!(actions(&decision), expected, "{name}"),
                None => assert!(matches!(decision, Decision::Skip(_)), "{name}"),
            }
        }
        let critical = with(fargate_high(), "/detail/severity", json!(9.5));
        assert_eq!(
            actions(&plan(&incident_of(&critical), &set)),
            ["isolate", "evidence", "tag", "notify"]
        );
        assert!(
            set.rules
                .iter()
                .all(|r| r.rule.actions.iter().all(|a| a.name() != ActionName::Stop)),
            "stop stays opt-in"
        );
    }

    #[test]
    fn every_skip_reason() {
        let set = PlaybookSet::defaults().unwrap();
        let skip = |value: &Value| skip_code(&plan(&incident_of(value), &set));
        assert_eq!(skip(&event("sample-finding.json")), "sample_finding");
        assert_eq!(
            skip(&event("fargate-reverse-shell-archived.json")),
            "archived"
        );
        let port_probe = plan(
            &incident_of(&event("ec2-port-probe-not-runtime.json")),
            &set,
        );
        assert_eq!(skip_code(&port_probe), "no_rule_matched");
        assert!(port_probe
            .reason()
            .contains("not a Runtime Monitoring finding"));
        let lambda = with(
            fargate_high(),
            "/detail/resource",
            json!({"resourceType": "Lambda"}),
        );
        assert_eq!(skip(&lambda), "unsupported_resource");
        let below = playbooks(
            "guardrails: {min_severity: 5}\nrules: [{name: all, mode: enforce, actions: [notify]}]",
        );
        let low = event("fargate-suspicious-command-low.json");
        assert_eq!(
            skip_code(&plan(&incident_of(&low), &below)),
            "below_minimum_severity"
        );
        let exempt_only_containment = "rules: [{name: contain, mode: enforce, actions: [isolate]}]";
        let exempt = event("fargate-exempt-task.json");
        assert_eq!(
            skip_code(&decide(&exempt, exempt_only_containment)),
            "exempt"
        );
        let (report, _) = crate::decide(
            None,
            br#"{"source":"aws.ec2","detail-type":"x","detail":{}}"#,
            &set,
            Mode::Enforce,
        );
        assert_eq!(report.skip_code, Some("not_a_guardduty_finding"));
    }

    #[test]
    fn guardrails_can_be_turned_off() {
        let yaml = "guardrails: {ignore_sample_findings: false, ignore_archived: false}\nrules: [{name: all, mode: enforce, actions: [notify]}]";
        assert_eq!(
            actions(&decide(&event("sample-finding.json"), yaml)),
            ["notify"]
        );
        assert_eq!(
            actions(&decide(&event("fargate-reverse-shell-archived.json"), yaml)),
            ["notify"]
        );
    }

    #[test]
    fn exemption_drops_containment_and_says_so() {
        let decision = plan(
            &incident_of(&event("fargate-exempt-task.json")),
            &PlaybookSet::defaults().unwrap(),
        );
        assert_eq!(actions(&decision), ["evidence", "tag", "notify"]);
        let Decision::Act(plan) = decision else {
            unreachable!()
        };
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("exempt") && n.contains("isolate") && n.contains("task")),
            "{:?}",
            plan.notes
        );
        // The cluster's tag exempts too; the value is compared without case.
        let on_cluster = with(
            fargate_high(),
            "/detail/resource/ecsClusterDetails/tags",
            json!([{"key": "incident-responder:exempt", "value": "TRUE"}]),
        );
        let decision = decide(
            &on_cluster,
            "rules: [{name: r, mode: enforce, actions: [isolate, evidence, notify]}]",
        );
        assert_eq!(actions(&decision), ["evidence", "notify"]);
        // A different value does not exempt.
        let not_exempt = with(
            fargate_high(),
            "/detail/resource/ecsClusterDetails/tags",
            json!([{"key": "incident-responder:exempt", "value": "false"}]),
        );
        assert_eq!(
            actions(&decide(
                &not_exempt,
                "rules: [{name: r, mode: enforce, actions: [isolate, notify]}]"
            )),
            ["isolate", "notify"]
        );
    }

    #[test]
    fn first_match_decides_unless_continue() {
        let yaml = r#"
rules:
  - {name: first, mode: enforce, match: {targets: [ecs_task]}, actions: [evidence]}
  - {name: second, mode: enforce, actions: [notify]}
"#;
        let decision = decide(&fargate_high(), yaml);
        assert_eq!(actions(&decision), ["evidence"]);
        let continued = yaml.replace(
            "actions: [evidence]}",
            "actions: [evidence], continue: true}",
        );
        let decision = decide(&fargate_high(), &continued);
        assert_eq!(actions(&decision), ["evidence", "notify"]);
        let Decision::Act(plan) = decision else {
            unreachable!()
        };
        assert_eq!(plan.rule, "first");
        assert_eq!(plan.matched_rules, ["first", "second"]);
        assert_eq!(plan.steps[1].rule, "second");
    }

    #[test]
    fn merged_steps_keep_phase_order_and_first_rule_wins_duplicates() {
        let yaml = r#"
rules:
  - {name: tell, mode: dry-run, actions: [evidence, notify], continue: true}
  - {name: contain, mode: enforce, actions: [isolate, evidence]}
"#;
        let decision = decide(&fargate_high(), yaml);
        assert_eq!(actions(&decision), ["isolate", "evidence", "notify"]);
        let Decision::Act(plan) = decision else {
            unreachable!()
        };
        let evidence = plan
            .steps
            .iter()
            .find(|s| s.action == ActionName::Evidence)
            .unwrap();
        assert_eq!(evidence.rule, "tell");
        assert_eq!(evidence.mode, Mode::DryRun);
        assert!(plan
            .notes
            .iter()
            .any(|n| n.contains("also asks for `evidence`")));
    }

    #[test]
    fn conditions_each_narrow_the_match() {
        let base = fargate_high();
        let matches = |conditions: &str| {
            let yaml = format!(
                "rules: [{{name: r, mode: enforce, match: {conditions}, actions: [notify]}}]"
            );
            matches!(decide(&base, &yaml), Decision::Act(_))
        };
        assert!(matches("{}"));
        assert!(matches("{finding_types: ['Impact:Runtime/*']}"));
        assert!(matches("{finding_types: ['*:EC2/*', '*CryptoMiner*']}"));
        assert!(!matches("{finding_types: ['CryptoCurrency:*']}"));
        assert!(matches("{min_severity: High}"));
        assert!(matches("{min_severity: 8}"));
        assert!(!matches("{min_severity: 8.1}"));
        assert!(!matches("{min_severity: critical}"));
        assert!(matches("{max_severity: High}"));
        assert!(!matches("{max_severity: Medium}"));
        assert!(!matches("{max_severity: 7.9}"));
        assert!(matches("{targets: [ec2_instance, ecs_task]}"));
        assert!(!matches("{targets: [eks_workload]}"));
        assert!(matches("{launch_types: [FARGATE]}"));
        assert!(!matches("{launch_types: [EC2]}"));
        assert!(matches("{clusters: ['payments-*']}"));
        assert!(matches(
            "{clusters: ['arn:aws:ecs:*:cluster/payments-prod']}"
        ));
        assert!(!matches("{clusters: ['storefront-*']}"));
        assert!(matches("{services: ['checkout-*']}"));
        assert!(!matches("{services: ['web']}"));
        assert!(matches("{accounts: ['111122223333']}"));
        assert!(!matches("{accounts: ['444455556666']}"));
        assert!(matches("{regions: ['us-*']}"));
        assert!(!matches("{regions: ['eu-*']}"));
        assert!(matches("{tags: {team: payments, environment: 'prod*'}}"));
        assert!(!matches("{tags: {team: storefront}}"));
        assert!(
            !matches("{tags: {owner: '*'}}"),
            "a tag condition needs the key present"
        );
    }

    #[test]
    fn task_tags_override_cluster_tags() {
        let value = with(
            fargate_high(),
            "/detail/resource/ecsClusterDetails/taskDetails/tags",
            json!([{"key": "environment", "value": "canary"}]),
        );
        let yaml = "rules: [{name: r, mode: enforce, match: {tags: {environment: canary}}, actions: [notify]}]";
        assert!(matches!(decide(&value, yaml), Decision::Act(_)));
        assert_eq!(skip_code(&decide(&fargate_high(), yaml)), "no_rule_matched");
    }

    #[test]
    fn exclude_takes_findings_out() {
        let yaml = "rules: [{name: r, mode: enforce, exclude: {services: ['checkout-*']}, actions: [notify]}]";
        assert_eq!(skip_code(&decide(&fargate_high(), yaml)), "no_rule_matched");
        assert!(matches!(
            decide(&event("fargate-reverse-shell.json"), yaml),
            Decision::Act(_)
        ));
    }

    #[test]
    fn service_and_launch_conditions_do_not_match_other_targets() {
        let ec2 = event("ec2-instance-process-injection.json");
        for conditions in [
            "{services: ['*']}",
            "{launch_types: [FARGATE, EC2]}",
            "{clusters: ['*']}",
        ] {
            let yaml = format!(
                "rules: [{{name: r, mode: enforce, match: {conditions}, actions: [notify]}}]"
            );
            assert_eq!(
                skip_code(&decide(&ec2, &yaml)),
                "no_rule_matched",
                "{conditions}"
            );
        }
    }

    #[test]
    fn mode_ceiling_caps_every_step() {
        let decision = decide(&fargate_high(), ONE_RULE).capped_at(Mode::DryRun);
        let Decision::Act(plan) = decision else {
            unreachable!()
        };
        assert_eq!(plan.mode, Mode::DryRun);
        assert!(plan.steps.iter().all(|s| s.mode == Mode::DryRun));
        let yaml = "rules: [{name: r, mode: notify-only, actions: [evidence, notify]}]";
        let Decision::Act(plan) = decide(&fargate_high(), yaml).capped_at(Mode::Enforce) else {
            unreachable!()
        };
        assert_eq!(
            plan.mode,
            Mode::NotifyOnly,
            "a ceiling never raises a rule's mode"
        );
    }

    #[test]
    fn every_runtime_finding_type_parses_and_plans() {
        let path = format!(
            "{}/../tests/data/finding-types.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let types = list["types"].as_array().unwrap();
        assert_eq!(types.len(), 45);
        let set = PlaybookSet::defaults().unwrap();
        for entry in types {
            let finding_type = entry["type"].as_str().unwrap();
            let parts: crate::finding::FindingType = finding_type.parse().unwrap();
            assert!(parts.is_runtime(), "{finding_type}");
            let severity = match entry["default_severity"].as_str().unwrap() {
                "Low" => 2.0,
                "Medium" => 5.0,
                "High" => 8.0,
                _ => 5.0, // variable or unpublished: any valid score
            };
            let value = with(
                with(fargate_high(), "/detail/type", json!(finding_type)),
                "/detail/severity",
                json!(severity),
            );
            let incident = incident_of(&value);
            assert_eq!(incident.finding_type_parts, parts);
            let expected: &[&str] = match incident.band {
                crate::incident::SeverityBand::High => &["isolate", "evidence", "tag", "notify"],
                crate::incident::SeverityBand::Medium => &["evidence", "notify"],
                _ => &["notify"],
            };
            assert_eq!(actions(&plan(&incident, &set)), expected, "{finding_type}");
        }
    }
}
