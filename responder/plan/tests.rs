//! The shipped playbooks and every condition, guardrail and skip reason, against the sample
//! events.

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

const ONE_RULE: &str =
    "rules: [{name: all, mode: enforce, match: {finding_types: ['*']}, actions: [notify]}]";

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
            Some(vec!["isolate", "evidence", "notify"]),
        ),
        ("fargate-suspicious-command-low.json", Some(vec!["notify"])),
        (
            "ec2-instance-process-injection.json",
            Some(vec![
                "isolate",
                "protect-instance",
                "snapshot-volumes",
                "evidence",
                "notify",
            ]),
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
    // Medium: the quarantine waits for a person.
    match plan(&incident_of(&event("fargate-new-binary-medium.json")), &set) {
        Decision::Act(medium) => assert_eq!(medium.mode, Mode::Approve),
        other => panic!("{other:?}"),
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
        "guardrails: {min_severity: 5}\nrules: [{name: all, mode: enforce, match: {finding_types: ['*']}, actions: [notify]}]",
    );
    let low = event("fargate-suspicious-command-low.json");
    assert_eq!(
        skip_code(&plan(&incident_of(&low), &below)),
        "below_minimum_severity"
    );
    let exempt_only_containment =
        "rules: [{name: contain, mode: enforce, match: {targets: [ecs_task]}, actions: [isolate]}]";
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
    let yaml = "guardrails: {ignore_sample_findings: false, ignore_archived: false}\nrules: [{name: all, mode: enforce, match: {finding_types: ['*']}, actions: [notify]}]";
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
        "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [isolate, evidence, notify]}]",
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
            "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [isolate, notify]}]"
        )),
        ["isolate", "notify"]
    );
}

#[test]
fn first_match_decides_unless_continue() {
    let yaml = r#"
rules:
  - {name: first, mode: enforce, match: {targets: [ecs_task]}, actions: [evidence]}
  - {name: second, mode: enforce, match: {finding_types: ['*']}, actions: [notify]}
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
  - {name: tell, mode: dry-run, match: {finding_types: ['*']}, actions: [evidence, notify], continue: true}
  - {name: contain, mode: enforce, match: {targets: [ecs_task]}, actions: [isolate, evidence]}
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
        let yaml =
            format!("rules: [{{name: r, mode: enforce, match: {conditions}, actions: [notify]}}]");
        matches!(decide(&base, &yaml), Decision::Act(_))
    };
    assert!(matches("{finding_types: ['*']}"));
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
    let yaml =
        "rules: [{name: r, mode: enforce, match: {finding_types: ['*']}, exclude: {services: ['checkout-*']}, actions: [notify]}]";
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
        let yaml =
            format!("rules: [{{name: r, mode: enforce, match: {conditions}, actions: [notify]}}]");
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
    let yaml = "rules: [{name: r, mode: notify-only, match: {finding_types: ['*']}, actions: [evidence, notify]}]";
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
            crate::incident::SeverityBand::Medium => &["isolate", "evidence", "notify"],
            _ => &["notify"],
        };
        assert_eq!(actions(&plan(&incident, &set)), expected, "{finding_type}");
    }
}

#[test]
fn step_reasons_are_true_for_the_rule_as_written() {
    let reason_of = |yaml: &str, action: ActionName| -> String {
        let Decision::Act(plan) = decide(&event("fargate-crypto-miner-high.json"), yaml) else {
            panic!("expected a plan")
        };
        plan.steps
            .iter()
            .find(|s| s.action == action)
            .map(|s| s.reason.clone())
            .unwrap()
    };
    let forced = "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [{stop: {force: true}}, notify]}]";
    let reason = reason_of(forced, ActionName::Stop);
    assert!(!reason.contains("after evidence is preserved"), "{reason}");
    assert!(
        reason.contains("even if evidence could not be preserved"),
        "{reason}"
    );
    let waits = "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [evidence, stop, notify]}]";
    assert_eq!(
        reason_of(waits, ActionName::Stop),
        "stop the task after evidence is preserved"
    );
    let fallback = "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [{isolate: {fallback: stop}}, evidence, notify]}]";
    let reason = reason_of(fallback, ActionName::Isolate);
    assert!(
        reason.contains("if it cannot, stop the task once evidence is preserved"),
        "{reason}"
    );
    let plain = "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [isolate, notify]}]";
    assert!(!reason_of(plain, ActionName::Isolate).contains("stop"));
}

#[test]
fn another_accounts_resource_is_preserved_and_reported_only() {
    let value = event("fargate-crypto-miner-high.json");
    let set = PlaybookSet::defaults().unwrap();
    let incident = incident_of(&value);
    let planned = plan(&incident, &set);
    let same = for_account(
        planned.clone(),
        &incident.account_id,
        Some(&incident.account_id),
    );
    assert_eq!(same, planned);
    let unknown = for_account(planned.clone(), &incident.account_id, None);
    assert_eq!(unknown, planned, "no account configured: no check");
    let other = for_account(planned.clone(), &incident.account_id, Some("999988887777"));
    assert_eq!(actions(&other), ["evidence", "notify"]);
    let Decision::Act(other) = other else {
        panic!()
    };
    assert_eq!(
        other.notes.len(),
        1,
        "notes about isolation go with it: {:?}",
        other.notes
    );
    assert!(
        other.notes[0].contains("not done here (isolate, tag)"),
        "{:?}",
        other.notes
    );
    // Nothing left but changes: a skip that says why.
    let yaml =
        "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [isolate]}]";
    let only_isolate = plan(&incident, &playbooks(yaml));
    let skipped = for_account(only_isolate, &incident.account_id, Some("999988887777"));
    assert_eq!(skip_code(&skipped), "other_account");
}

#[test]
fn a_started_task_is_watched_only_when_a_rule_holds_images() {
    let running = event("ecs-task-running-replacement.json");
    let inbound = parse_event(running.to_string().as_bytes()).unwrap();
    let without = super::decide(&inbound, &PlaybookSet::defaults().unwrap(), Mode::Enforce);
    assert_eq!(skip_code(&without), "task_not_stopped");
    let holding = playbooks(
        "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [evidence, hold-deployment, notify]}]",
    );
    match super::decide(&inbound, &holding, Mode::Enforce) {
        Decision::Watch {
            task_arn,
            containers,
            ..
        } => {
            assert!(task_arn.ends_with("8e2d4c6b1a3f4e5d9c7b6a5f4e3d2c1b"));
            assert!(containers[0].image_digest.is_some());
        }
        other => panic!("expected watch, got {other:?}"),
    }
    // A task ECS is stopping still reports RUNNING: not looked at.
    let stopping = with(running.clone(), "/detail/desiredStatus", json!("STOPPED"));
    let inbound = parse_event(stopping.to_string().as_bytes()).unwrap();
    assert_eq!(
        skip_code(&super::decide(&inbound, &holding, Mode::Enforce)),
        "task_not_stopped"
    );
    // Other states are not looked at, held images or not.
    let pending = with(running, "/detail/lastStatus", json!("PENDING"));
    let inbound = parse_event(pending.to_string().as_bytes()).unwrap();
    assert_eq!(
        skip_code(&super::decide(&inbound, &holding, Mode::Enforce)),
        "task_not_stopped"
    );
}

mod provenance {
    use super::*;
    use crate::plan::provenance::{check, Provenance, ProvenanceCheck};

    fn refused(value: &Value, provenance: &Provenance) -> Option<ProvenanceCheck> {
        check(&incident_of(value), provenance).map(|r| r.check)
    }

    fn only(accounts: &[&str], regions: &[&str]) -> Provenance {
        Provenance {
            accounts: Some(accounts.iter().map(|a| a.to_string()).collect()),
            regions: Some(regions.iter().map(|r| r.to_string()).collect()),
            require_envelope: true,
        }
    }

    #[test]
    fn a_finding_from_the_listed_account_and_region_passes() {
        let provenance = only(&["111122223333"], &["us-east-1"]);
        assert_eq!(refused(&fargate_high(), &provenance), None);
        assert_eq!(refused(&fargate_high(), &Provenance::default()), None);
        let any = only(&["*"], &["*"]);
        assert_eq!(refused(&fargate_high(), &any), None);
    }

    #[test]
    fn unlisted_accounts_and_regions_are_refused() {
        let provenance = only(&["111122223333"], &["us-east-1"]);
        let member = with(fargate_high(), "/detail/accountId", json!("444455556666"));
        // The ARNs still say 111122223333: refused either way, but for the account first.
        assert_eq!(
            refused(&member, &provenance),
            Some(ProvenanceCheck::Account)
        );
        let via_admin = with(fargate_high(), "/account", json!("999988887777"));
        assert_eq!(
            refused(&via_admin, &provenance),
            Some(ProvenanceCheck::Account),
            "the delivering account must be listed too"
        );
        let elsewhere = only(&["111122223333"], &["eu-west-1"]);
        assert_eq!(
            refused(&fargate_high(), &elsewhere),
            Some(ProvenanceCheck::Region)
        );
    }

    #[test]
    fn an_envelope_from_another_region_than_the_finding_is_refused() {
        let forged = with(fargate_high(), "/region", json!("eu-west-1"));
        assert_eq!(
            refused(&forged, &Provenance::default()),
            Some(ProvenanceCheck::Region)
        );
    }

    #[test]
    fn a_bare_finding_is_refused_where_an_envelope_is_required() {
        let bare = fargate_high()["detail"].clone();
        let mut lambda = Provenance::default();
        assert_eq!(refused(&bare, &lambda), None, "the CLI replays exports");
        lambda.require_envelope = true;
        assert_eq!(refused(&bare, &lambda), Some(ProvenanceCheck::Envelope));
    }

    #[test]
    fn arns_outside_the_findings_account_region_or_partition_are_refused() {
        let pointer = "/detail/resource/ecsClusterDetails/taskDetails/arn";
        let cases = [
            "arn:aws:ecs:us-east-1:999988887777:task/payments-prod/5b0f6c2e8d3a4b1f9e7c6a5d4b3c2a10",
            "arn:aws:ecs:eu-west-1:111122223333:task/payments-prod/5b0f6c2e8d3a4b1f9e7c6a5d4b3c2a10",
            "arn:aws-cn:ecs:us-east-1:111122223333:task/payments-prod/5b0f6c2e8d3a4b1f9e7c6a5d4b3c2a10",
            "arn:aws:ecs:us-east-1:111122223333:task/other-cluster/5b0f6c2e8d3a4b1f9e7c6a5d4b3c2a10",
        ];
        for arn in cases {
            let value = with(fargate_high(), pointer, json!(arn));
            assert_eq!(
                refused(&value, &Provenance::default()),
                Some(ProvenanceCheck::ResourceArn),
                "{arn}"
            );
        }
    }

    #[test]
    fn identifiers_with_path_tricks_or_control_characters_are_errors() {
        let pointer = "/detail/resource/ecsClusterDetails/taskDetails/arn";
        let cases = [
            "arn:aws:ecs:us-east-1:111122223333:task/payments-prod/../../x",
            "arn:aws:ecs:us-east-1:111122223333:task/payments-prod/abc\u{1b}[2J",
            "arn:aws:ecs:us-east-1:111122223333:task/payments prod/abc",
            "arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0",
            "arn:aws:ecs:us-east-1:1111:task/payments-prod/abc",
            "*",
        ];
        for arn in cases {
            let value = with(fargate_high(), pointer, json!(arn));
            let error = parse_event(value.to_string().as_bytes()).unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains("is not a valid ECS task ARN"),
                "{arn}: {text}"
            );
            assert!(!text.contains('\u{1b}'), "{text}");
        }
        for id in ["../../etc/passwd", "a/b", "", "x\ny"] {
            let value = with(fargate_high(), "/detail/id", json!(id));
            assert!(parse_event(value.to_string().as_bytes()).is_err(), "{id:?}");
        }
    }
}

#[test]
fn the_plan_shows_the_guard_and_a_rule_may_set_its_own() {
    let set = PlaybookSet::defaults().unwrap();
    let Decision::Act(plan) = super::plan(&incident_of(&fargate_high()), &set) else {
        panic!("act")
    };
    let note = plan
        .notes
        .iter()
        .find(|n| n.starts_with(GUARD_NOTE))
        .expect("the guard is in the plan");
    assert!(
        note.contains("for service checkout-api, at most 2 of a service's tasks contained at once, never leaving fewer than 50% of the desired count uncontained"),
        "{note}"
    );
    assert!(
        note.contains("breaker: notify only once 20 findings"),
        "{note}"
    );
    let own = playbooks(
        "rules: [{name: r, mode: enforce, blast_radius: {min_healthy: 3, max_per_service: 1}, match: {targets: [ecs_task]}, actions: [isolate, notify]}]",
    );
    let Decision::Act(plan) = super::plan(&incident_of(&fargate_high()), &own) else {
        panic!("act")
    };
    assert_eq!(plan.guard.blast_radius.max_per_service, 1);
    assert_eq!(
        plan.guard.blast_radius.min_healthy,
        crate::playbook::MinHealthy::Count(3)
    );
    // Nothing to contain, nothing to guard.
    let notify = playbooks(
        "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [notify]}]",
    );
    let Decision::Act(plan) = super::plan(&incident_of(&fargate_high()), &notify) else {
        panic!("act")
    };
    assert!(!plan.notes.iter().any(|n| n.starts_with(GUARD_NOTE)));
}

#[test]
fn guard_settings_are_checked_where_they_are_written() {
    for (yaml, wanted) in [
        ("guardrails: {blast_radius: {min_healthy: '150%'}}\nrules: []", "a percentage from 0% to 100%"),
        ("guardrails: {blast_radius: {min_healthy: -1}}\nrules: []", "min_healthy"),
        ("guardrails: {breaker: {max: 3}}\nrules: []", "unknown field `max`"),
        (
            "rules: [{name: r, mode: enforce, match: {targets: [ecs_task]}, actions: [{isolate: {rungs: [nacl-quarantine, service-sg-lockdown]}}, notify]}]",
            "blast_radius: {min_healthy: 0}",
        ),
    ] {
        let errors = PlaybookSet::from_sources([("g.yaml".to_string(), yaml.to_string())])
            .unwrap_err()
            .to_string();
        assert!(errors.contains(wanted), "{yaml}: {errors}");
    }
}

/// The bounded smoke of the fuzz targets (`./scripts/fuzz` runs them for millions of inputs):
/// arbitrary bytes, and the sample events with any one value replaced by anything, go through
/// parse → match → plan and every rendering without a panic, and a finding that parses has
/// identifiers of AWS's form.
mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Value> {
        let dir = format!("{}/../events", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let next = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                    out.push(next.clone());
                    pointers(child, next, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let next = format!("{at}/{i}");
                    out.push(next.clone());
                    pointers(child, next, out);
                }
            }
            _ => {}
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,40}".prop_map(Value::from),
            Just(Value::from(
                "arn:aws:ecs:us-east-1:111122223333:task/c/../x\u{1b}[2J"
            )),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn exercise(bytes: &[u8]) {
        let set = PlaybookSet::defaults().unwrap();
        for ceiling in [Mode::Enforce, Mode::DryRun] {
            let (report, decided) = crate::decide(None, bytes, &set, ceiling);
            let _ = report.to_text();
            let _ = report.notification(None);
            let _ = report.to_json_line();
            let _ = report.emf_line(0);
            if let Some((Inbound::Finding { incident, .. }, decision)) = decided {
                let _ = for_account(decision, &incident.account_id, Some("111122223333"));
                let _ = crate::plan::provenance::check(
                    &incident,
                    &crate::plan::provenance::Provenance::default(),
                );
                assert!(
                    !incident.finding_id.contains('/'),
                    "{}",
                    incident.finding_id
                );
                if let crate::incident::Target::EcsTask(task) = &incident.target {
                    assert!(!task.task_arn.contains(".."), "{}", task.task_arn);
                    assert!(!task.task_arn.chars().any(char::is_control));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            exercise(&bytes);
        }

        #[test]
        fn any_value_of_a_sample_replaced_by_anything_never_panics(
            sample in 0usize..64, at in 0usize..4096, value in any_json()
        ) {
            let samples = samples();
            let mut event = samples[sample % samples.len()].clone();
            let mut all = Vec::new();
            pointers(&event, String::new(), &mut all);
            if let Some(slot) = all.get(at % all.len().max(1)).and_then(|p| event.pointer_mut(p)) {
                *slot = value;
            }
            exercise(event.to_string().as_bytes());
        }
    }
}

/// A step shows its action's parameters and reason as the action makes them: made once when
/// the playbook is loaded and shared by every plan, and made afresh for an action changed
/// after loading.
#[test]
fn steps_show_parameters_made_once_per_playbook() {
    let mut set = PlaybookSet::defaults().unwrap();
    let incident = incident_of(&fargate_high());
    let Decision::Act(first) = plan(&incident, &set) else {
        panic!("no plan")
    };
    let Decision::Act(second) = plan(&incident, &set) else {
        panic!("no plan")
    };
    for (one, other) in first.steps.iter().zip(&second.steps) {
        assert_eq!(*one.params, one.spec.params_json());
        assert_eq!(one.reason, one.spec.reason());
        assert!(std::sync::Arc::ptr_eq(&one.params, &other.params));
    }
    let isolate = set
        .rules
        .iter_mut()
        .flat_map(|r| r.rule.actions.iter_mut())
        .find_map(|a| match a {
            crate::actions::ActionSpec::Isolate(p) => Some(p),
            _ => None,
        })
        .unwrap();
    isolate.nacl_entry_quota += 1;
    isolate.fallback = crate::actions::isolate::IsolateFallback::Stop;
    let Decision::Act(changed) = plan(&incident, &set) else {
        panic!("no plan")
    };
    let step = changed
        .steps
        .iter()
        .find(|s| s.action == ActionName::Isolate)
        .unwrap();
    assert_eq!(*step.params, step.spec.params_json());
    assert_eq!(step.reason, step.spec.reason());
    let before = first
        .steps
        .iter()
        .find(|s| s.action == ActionName::Isolate)
        .unwrap();
    assert_ne!(step.reason, before.reason);
    assert_ne!(
        *step.params,
        *first
            .steps
            .iter()
            .find(|s| s.action == ActionName::Isolate)
            .unwrap()
            .params
    );
}
