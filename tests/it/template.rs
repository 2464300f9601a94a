//! The EventBridge patterns in `template.yaml`, evaluated against the sample events (not by eye).

use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;

fn template() -> Yaml {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// Template YAML to JSON, resolving `!Ref Parameter` to the parameter's default.
fn resolve(value: &Yaml, parameters: &Yaml) -> Value {
    match value {
        Yaml::Tagged(tagged) if tagged.tag == "Ref" => {
            let name = tagged.value.as_str().unwrap();
            resolve(&parameters[name]["Default"], parameters)
        }
        Yaml::Tagged(tagged) => panic!("unexpected intrinsic !{} in a pattern", tagged.tag),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), resolve(v, parameters)))
                .collect(),
        ),
        Yaml::Sequence(items) => {
            Value::Array(items.iter().map(|v| resolve(v, parameters)).collect())
        }
        Yaml::String(s) => json!(s),
        Yaml::Number(n) => serde_json::to_value(n.as_f64()).unwrap(),
        Yaml::Bool(b) => json!(b),
        Yaml::Null => Value::Null,
    }
}

fn patterns() -> Vec<(String, Value)> {
    let template = template();
    let parameters = &template["Parameters"];
    let functions = ["ResponderFunction", "ReleaseFunction"];
    functions
        .iter()
        .flat_map(|f| {
            template["Resources"][*f]["Properties"]["Events"]
                .as_mapping()
                .unwrap()
                .clone()
        })
        .collect::<Vec<_>>()
        .iter()
        // Schedules carry their own input; the patterns decide which AWS events come in.
        .filter(|(_, event)| event["Type"].as_str() != Some("Schedule"))
        .map(|(name, event)| {
            assert_eq!(event["Type"].as_str(), Some("EventBridgeRule"));
            (
                name.as_str().unwrap().to_string(),
                resolve(&event["Properties"]["Pattern"], parameters),
            )
        })
        .collect()
}

/// The scheduled sweep's input is what the function reads as a sweep, and it is off unless
/// asked for.
#[test]
fn the_scheduled_sweep_is_off_by_default_and_its_input_is_a_sweep() {
    let template = template();
    assert_eq!(
        template["Parameters"]["SweepQuarantineEntries"]["Default"].as_str(),
        Some("off")
    );
    let sweep = &template["Resources"]["ReleaseFunction"]["Properties"]["Events"]["Sweep"];
    assert_eq!(sweep["Type"].as_str(), Some("Schedule"));
    let input = sweep["Properties"]["Input"].as_str().unwrap();
    let inbound = responder::event::parse_event(input.as_bytes()).unwrap();
    assert!(
        matches!(
            inbound,
            responder::event::Inbound::Sweep {
                approvals_only: false
            }
        ),
        "{inbound:?}"
    );
    // The frequent schedule only expires approvals.
    let expire =
        &template["Resources"]["ReleaseFunction"]["Properties"]["Events"]["ExpireApprovals"];
    let input = expire["Properties"]["Input"].as_str().unwrap();
    let inbound = responder::event::parse_event(input.as_bytes()).unwrap();
    assert!(
        matches!(
            inbound,
            responder::event::Inbound::Sweep {
                approvals_only: true
            }
        ),
        "{inbound:?}"
    );
}

/// EventBridge content filtering, for the operators the template uses (and a few more):
/// exact values, `prefix`, `suffix`, `wildcard`, `anything-but`, `exists`.
fn matches(pattern: &Value, event: &Value) -> bool {
    pattern.as_object().unwrap().iter().all(|(key, wanted)| {
        let field = event.get(key);
        match wanted {
            Value::Object(_) => field.is_some_and(|f| matches(wanted, f)),
            Value::Array(options) => options.iter().any(|option| value_matches(option, field)),
            other => panic!("a pattern leaf must be an array, got {other}"),
        }
    })
}

fn value_matches(option: &Value, field: Option<&Value>) -> bool {
    let values: Vec<&Value> = match field {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(value) => vec![value],
        None => vec![],
    };
    match option {
        Value::Object(op) => {
            let (name, arg) = op.iter().next().unwrap();
            match name.as_str() {
                "exists" => arg.as_bool().unwrap() == field.is_some(),
                "prefix" => values.iter().any(|v| {
                    v.as_str()
                        .is_some_and(|s| s.starts_with(arg.as_str().unwrap()))
                }),
                "suffix" => values.iter().any(|v| {
                    v.as_str()
                        .is_some_and(|s| s.ends_with(arg.as_str().unwrap()))
                }),
                "wildcard" => values.iter().any(|v| {
                    v.as_str()
                        .is_some_and(|s| wildcard(arg.as_str().unwrap(), s))
                }),
                "anything-but" => {
                    !values.is_empty()
                        && values.iter().all(|v| match arg {
                            Value::Array(not) => !not.contains(v),
                            not => *v != not,
                        })
                }
                other => panic!("operator {other} is not modelled here"),
            }
        }
        exact => values.contains(&exact),
    }
}

fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == text;
    }
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn sample(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap(),
    )
    .unwrap()
}

fn rules_matching(event: &Value) -> Vec<String> {
    patterns()
        .into_iter()
        .filter(|(_, p)| matches(p, event))
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn every_runtime_sample_reaches_the_function_through_the_finding_rule() {
    for name in [
        "fargate-crypto-miner-high.json",
        "fargate-crypto-miner-republished.json",
        "fargate-reverse-shell.json",
        "fargate-reverse-shell-archived.json",
        "fargate-new-binary-medium.json",
        "fargate-new-binary-escalated.json",
        "fargate-suspicious-command-low.json",
        "fargate-exempt-task.json",
        "ecs-ec2-launch-type-via-admin.json",
        "ec2-instance-process-injection.json",
        "eks-runc-container-escape.json",
        "sample-finding.json",
    ] {
        assert_eq!(
            rules_matching(&sample(name)),
            ["GuardDutyFinding"],
            "{name}"
        );
    }
}

/// Findings and task state changes reach different functions: a deployment's burst of STOPPED
/// events never takes the concurrency containment needs.
#[test]
fn findings_and_task_events_go_to_separate_functions() {
    let template = template();
    let events_of = |function: &str| -> Vec<String> {
        template["Resources"][function]["Properties"]["Events"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(events_of("ResponderFunction"), ["GuardDutyFinding"]);
    assert_eq!(
        events_of("ReleaseFunction"),
        ["TaskStateChange", "ExpireApprovals", "Sweep"]
    );
    for function in ["ResponderFunction", "ReleaseFunction"] {
        assert!(
            template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
                .as_u64()
                .is_some(),
            "{function} has its own concurrency"
        );
    }
}

#[test]
fn the_task_rule_takes_stopped_and_running_tasks_only() {
    let stopped = sample("ecs-task-stopped.json");
    assert_eq!(rules_matching(&stopped), ["TaskStateChange"]);
    let mut running = stopped.clone();
    running["detail"]["lastStatus"] = "RUNNING".into();
    assert_eq!(rules_matching(&running), ["TaskStateChange"]);
    for other in ["PROVISIONING", "PENDING", "DEACTIVATING", "STOPPING"] {
        let mut event = stopped.clone();
        event["detail"]["lastStatus"] = other.into();
        assert!(rules_matching(&event).is_empty(), "{other}");
    }
}

#[test]
fn unrelated_events_do_not_invoke_the_function() {
    assert!(
        rules_matching(&sample("ec2-port-probe-not-runtime.json")).is_empty(),
        "non-Runtime findings are filtered out"
    );
    let ec2_state = json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {"state": "stopped"}});
    assert!(rules_matching(&ec2_state).is_empty());
    let mut wrong_type = sample("fargate-crypto-miner-high.json");
    wrong_type["detail-type"] = "GuardDuty Malware Protection Object Scan Result".into();
    assert!(rules_matching(&wrong_type).is_empty());
    let mut other_source = sample("ecs-task-stopped.json");
    other_source["source"] = "custom.app".into();
    assert!(rules_matching(&other_source).is_empty());
}

#[test]
fn the_wildcard_model_is_right() {
    assert!(wildcard(
        "*:Runtime/*",
        "Impact:Runtime/CryptoMinerExecuted"
    ));
    assert!(!wildcard(
        "*:Runtime/*",
        "Recon:EC2/PortProbeUnprotectedPort"
    ));
    assert!(wildcard("*", "anything"));
    assert!(wildcard("a*b*c", "a-b-c"));
    assert!(!wildcard("a*b*c", "a-c"));
}
