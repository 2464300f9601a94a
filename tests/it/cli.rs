//! The `responder` binary, run as a user would run it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    crate::support::workspace_root()
}

fn responder() -> Command {
    let mut command = Command::new(crate::support::binary("responder"));
    command.current_dir(root());
    // Replays must never reach a real AWS account from a test.
    command.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    command.env_remove("RESPONDER_PLAYBOOKS_PATH");
    command
}

fn run(args: &[&str]) -> Output {
    responder().args(args).output().expect("run responder")
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn sample_events() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn by_input<'a>(lines: &'a [Value], file: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["input"].as_str().is_some_and(|i| i.ends_with(file)))
        .unwrap_or_else(|| panic!("no report for {file}"))
}

#[test]
fn replay_of_every_sample_event_in_json() {
    let files = sample_events();
    assert!(files.len() >= 10, "events/ holds at least ten samples");
    let mut args = vec!["replay", "--dry-run", "--output", "json"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let output = run(&args);
    let lines = json_lines(&output);
    assert_eq!(lines.len(), files.len());
    for line in &lines {
        crate::support::assert_json_keys_follow_the_readme(line);
    }
    for line in &lines {
        for key in [
            "finding_id",
            "finding_type",
            "severity",
            "target",
            "decision",
            "rule",
            "mode",
            "steps",
            "reason",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
    }

    let miner = by_input(&lines, "fargate-crypto-miner-high.json");
    assert_eq!(miner["decision"], "act");
    assert_eq!(miner["rule"], "ecs-task-high");
    assert_eq!(miner["mode"], "dry-run");
    assert_eq!(miner["severity"], 8.0);
    assert_eq!(miner["target"]["kind"], "ecs_task");
    assert_eq!(miner["target"]["launch_type"], "FARGATE");
    assert_eq!(miner["target"]["service"], "checkout-api");
    assert_eq!(
        miner["target"]["task_arn"],
        "arn:aws:ecs:us-east-1:111122223333:task/payments-prod/5b0f6c2e8d3a4b1f9e7c6a5d4b3c2a10"
    );
    let steps: Vec<&str> = miner["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["isolate", "evidence", "tag", "notify"]);

    let republished = by_input(&lines, "fargate-crypto-miner-republished.json");
    assert_eq!(republished["finding_id"], miner["finding_id"]);
    assert_eq!(republished["count"], 7);

    let skip = by_input(&lines, "sample-finding.json");
    assert_eq!(skip["decision"], "skip");
    assert_eq!(skip["rule"], Value::Null);
    assert_eq!(skip["skip_code"], "sample_finding");

    let via_admin = by_input(&lines, "ecs-ec2-launch-type-via-admin.json");
    assert_eq!(
        via_admin["account_id"], "111122223333",
        "the resource's account, not the delivering one"
    );
    assert_eq!(via_admin["target"]["launch_type"], "EC2");

    let ec2 = by_input(&lines, "ec2-instance-process-injection.json");
    assert_eq!(ec2["target"]["kind"], "ec2_instance");
    assert_eq!(ec2["target"]["instance_id"], "i-0b2c3d4e5f6a70819");
    let eks = by_input(&lines, "eks-runc-container-escape.json");
    assert_eq!(eks["target"]["kind"], "eks_workload");
    assert_eq!(eks["target"]["namespace"], "ingest");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn text_output_is_plain_when_not_a_terminal() {
    let output = run(&[
        "replay",
        "--dry-run",
        "events/fargate-crypto-miner-high.json",
    ]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains('\u{1b}'), "no colour codes through a pipe");
    assert!(
        text.contains("ACT  rule ecs-task-high  mode dry-run"),
        "{text}"
    );
    assert!(text.contains("1. isolate"), "{text}");
}

fn broken_inputs(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let valid: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("events/fargate-crypto-miner-high.json")).unwrap(),
    )
    .unwrap();
    let text = valid.to_string();
    let mut missing_resource = valid.clone();
    missing_resource["detail"]
        .as_object_mut()
        .unwrap()
        .remove("resource");
    let mut huge = valid.clone();
    huge["detail"]["severity"] = "9".repeat(200_000).into();
    let mut wrong_types = valid.clone();
    wrong_types["detail"]["service"]["count"] = "many".into();
    let mut missing_task = valid.clone();
    missing_task["detail"]["resource"]["ecsClusterDetails"]
        .as_object_mut()
        .unwrap()
        .remove("taskDetails");
    let cases: Vec<(&str, String, &'static str)> = vec![
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "not valid JSON",
        ),
        ("empty.json", "\n".to_string(), "the input is empty"),
        (
            "unknown-shape.json",
            r#"{"hello": "world"}"#.to_string(),
            "`aws guardduty get-findings` output",
        ),
        (
            "missing-resource.json",
            missing_resource.to_string(),
            "the finding has no resource",
        ),
        ("huge.json", huge.to_string(), "severity"),
        ("wrong-types.json", wrong_types.to_string(), "service.count"),
        (
            "missing-task.json",
            missing_task.to_string(),
            "resource.ecsClusterDetails.taskDetails",
        ),
        ("array.json", "[1]".to_string(), "not an object"),
    ];
    cases
        .into_iter()
        .map(|(name, body, expect)| {
            let path = dir.join(name);
            std::fs::write(&path, body).unwrap();
            (path, expect)
        })
        .collect()
}

#[test]
fn broken_inputs_get_clear_errors_and_do_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cases = broken_inputs(dir.path());
    let good = root().join("events/fargate-reverse-shell.json");
    for (path, expected) in &cases {
        let output = run(&[
            "replay",
            "--dry-run",
            "--output",
            "json",
            path.to_str().unwrap(),
            good.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(2), "{}", path.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(path.to_str().unwrap()) && stderr.contains(expected),
            "{}: expected {expected:?} in {stderr}",
            path.display()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.len() < 2_000,
            "errors stay short: {} bytes",
            stderr.len()
        );
        let lines = json_lines(&output);
        assert_eq!(lines.len(), 2);
        assert!(lines[0]["error"].as_str().unwrap().contains(expected));
        assert!(lines[0]["decision"] == "error" || lines[0]["decision"] == "skip");
        assert_eq!(
            lines[1]["decision"], "act",
            "the good event is still handled"
        );
    }
    // For people: the error once, in the report, the path once.
    let missing = run(&["replay", "--dry-run", "no/such/file.json"]);
    assert_eq!(missing.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&missing.stdout);
    assert!(
        missing.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert_eq!(
        stdout.matches("cannot read the event").count(),
        1,
        "{stdout}"
    );
    assert_eq!(stdout.matches("no/such/file.json").count(), 1, "{stdout}");
}

#[test]
fn an_event_that_is_not_a_finding_is_a_skip_not_an_error() {
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("events/fargate-crypto-miner-high.json")).unwrap(),
    )
    .unwrap();
    event["detail-type"] = "AWS API Call via CloudTrail".into();
    event["source"] = "aws.ec2".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloudtrail.json");
    std::fs::write(&path, event.to_string()).unwrap();
    let output = run(&[
        "replay",
        "--dry-run",
        "--output",
        "json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "a skip is not an error");
    assert!(output.stderr.is_empty());
    let line = &json_lines(&output)[0];
    assert_eq!(line["decision"], "skip");
    assert_eq!(line["skip_code"], "not_a_guardduty_finding");
    assert!(line.get("error").is_none(), "{line}");
}

#[test]
fn get_findings_output_and_json_lines_replay_each_finding() {
    let dir = tempfile::tempdir().unwrap();
    let finding = |name: &str| -> Value {
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("events").join(name)).unwrap(),
        )
        .unwrap();
        event["detail"].clone()
    };
    // `aws guardduty get-findings` prints {"Findings": [...]} with the SDK's PascalCase names.
    fn pascal(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let mut chars = k.chars();
                        let k: String = chars
                            .next()
                            .map(|c| c.to_uppercase().chain(chars).collect())
                            .unwrap_or_default();
                        (k, pascal(v))
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(pascal).collect()),
            other => other,
        }
    }
    let finding = |name: &str| pascal(finding(name));
    let get_findings = serde_json::json!({
        "Findings": [finding("fargate-crypto-miner-high.json"), finding("fargate-new-binary-medium.json")]
    });
    let findings_path = dir.path().join("get-findings.json");
    std::fs::write(
        &findings_path,
        serde_json::to_string_pretty(&get_findings).unwrap(),
    )
    .unwrap();
    // An archive or a log export: one EventBridge event per line.
    let lines_path = dir.path().join("archive.jsonl");
    let mut lines = String::new();
    for name in ["fargate-reverse-shell.json", "ecs-task-stopped.json"] {
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("events").join(name)).unwrap(),
        )
        .unwrap();
        lines.push_str(&format!("{event}\n"));
    }
    std::fs::write(&lines_path, lines).unwrap();
    let output = run(&[
        "replay",
        "--dry-run",
        "--output",
        "json",
        findings_path.to_str().unwrap(),
        lines_path.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports = json_lines(&output);
    let labels: Vec<&str> = reports
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(
        labels[0].ends_with("get-findings.json#1") && labels[3].ends_with("archive.jsonl#2"),
        "{labels:?}"
    );
    assert_eq!(reports[0]["rule"], "ecs-task-high");
    assert_eq!(reports[1]["rule"], "ecs-task-medium");
    assert_eq!(reports[2]["decision"], "act");
    assert_eq!(reports[3]["decision"], "release");
}

#[test]
fn text_replay_says_why_what_almost_matched_and_what_capped_the_mode() {
    let output = run(&[
        "replay",
        "--dry-run",
        "events/fargate-crypto-miner-high.json",
        "events/ec2-port-probe-not-runtime.json",
    ]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "mode dry-run (the rule says enforce; capped by --dry-run or RESPONDER_MODE)"
        ),
        "{text}"
    );
    assert!(text.contains("why       rule \"ecs-task-high\" matched a High (8) Impact:Runtime/CryptoMinerExecuted finding"), "{text}");
    assert!(text.contains("nearest: rule \"ec2-instance-lower\", which requires finding_types [*:Runtime/*]: the finding is Recon:EC2/PortProbeUnprotectedPort"), "{text}");
    let json = run(&[
        "replay",
        "--dry-run",
        "--output",
        "json",
        "events/fargate-crypto-miner-high.json",
    ]);
    let line = &json_lines(&json)[0];
    assert_eq!(line["mode"], "dry-run");
    assert_eq!(line["rule_mode"], "enforce");
}

#[test]
fn replay_reads_stdin() {
    let mut child = responder()
        .args(["replay", "--dry-run", "--output", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let event = std::fs::read(root().join("events/fargate-new-binary-medium.json")).unwrap();
    child.stdin.take().unwrap().write_all(&event).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let lines = json_lines(&output);
    assert_eq!(lines[0]["input"], "-");
    assert_eq!(lines[0]["rule"], "ecs-task-medium");
}

#[test]
fn replay_honours_a_playbook_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("only.yaml"),
        "rules:\n  - name: page-everyone\n    mode: notify-only\n    match: {finding_types: ['*']}\n    actions: [notify]\n",
    )
    .unwrap();
    let output = run(&[
        "replay",
        "--dry-run",
        "--output",
        "json",
        "--playbooks",
        dir.path().to_str().unwrap(),
        "events/fargate-crypto-miner-high.json",
    ]);
    assert!(output.status.success());
    let lines = json_lines(&output);
    assert_eq!(lines[0]["rule"], "page-everyone");
    assert_eq!(
        lines[0]["mode"], "dry-run",
        "--dry-run caps the rule's mode"
    );
}

#[test]
fn validate_reports_located_errors() {
    let ok = run(&["validate"]);
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout)
        .contains("ok: 6 rules in (built-in) playbooks/default.yaml"));
    assert!(run(&["validate", "playbooks"]).status.success());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate: {fallback: maybe}\n",
    )
    .unwrap();
    let bad = run(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("broken.yaml:6:"), "{stderr}");
    assert!(stderr.contains("unknown variant `maybe`"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let none = run(&["validate", empty.path().to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no *.yaml"));
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let output = run(&["schema"]);
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("playbooks/schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, committed);
    assert_eq!(
        printed["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
}

#[test]
fn no_region_or_credentials_is_one_line_naming_what_to_set() {
    let home = tempfile::tempdir().unwrap();
    let attempt = |extra: &[(&str, &str)]| {
        let mut command = Command::new(crate::support::binary("responder"));
        command
            .current_dir(root())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .args(["replay", "events/fargate-crypto-miner-high.json"]);
        for (k, v) in extra {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    for (extra, expected) in [
        (vec![], "AWS_REGION"),
        (vec![("AWS_REGION", "us-east-1")], "AWS_ACCESS_KEY_ID"),
    ] {
        let output = attempt(&extra);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{stderr}"
        );
        assert!(
            !stderr.contains('\u{1b}'),
            "no colour codes into a file: {stderr:?}"
        );
        assert!(output.stdout.is_empty());
    }
}

/// The fargate crypto-miner sample, its task started by service `service`.
fn fargate_finding_in_service(dir: &Path, service: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("events/fargate-crypto-miner-high.json"))
        .unwrap()
        .replace("service:checkout-api", &format!("service:{service}"));
    let path = dir.join(format!("{service}.json"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_readme_team_playbook_layers_over_the_defaults() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("# team-playbooks/staging.yaml\n")
        .expect("the README shows a team playbook over the defaults");
    let end = start + readme[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let playbooks = dir.path().join("team");
    std::fs::create_dir(&playbooks).unwrap();
    std::fs::write(playbooks.join("staging.yaml"), &readme[start..end]).unwrap();
    let playbooks = playbooks.to_str().unwrap();

    let validate = run(&["validate", playbooks]);
    let stdout = String::from_utf8_lossy(&validate.stdout);
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    assert!(stdout.contains("ok: 7 rules in"), "{stdout}");
    assert!(
        stdout.contains("(built-in) playbooks/default.yaml"),
        "{stdout}"
    );
    assert!(
        validate.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );

    let staging = fargate_finding_in_service(dir.path(), "staging-api");
    let prod = fargate_finding_in_service(dir.path(), "checkout-api");
    let output = run(&[
        "replay",
        "--dry-run",
        "--output",
        "json",
        "--playbooks",
        playbooks,
        staging.to_str().unwrap(),
        prod.to_str().unwrap(),
    ]);
    assert!(output.status.success());
    let lines = json_lines(&output);
    assert_eq!(
        lines[0]["rule"], "staging-notify-only",
        "the team's rule decides first"
    );
    let steps: Vec<&str> = lines[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["evidence", "notify"]);
    assert_eq!(
        lines[1]["rule"], "ecs-task-high",
        "the defaults decide the rest"
    );
}

#[test]
fn validate_warns_when_a_file_name_decides_which_rule_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("playbooks/default.yaml"),
        dir.path().join("default.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("staging.yaml"),
        "rules:\n  - name: staging-notify-only\n    match: {services: ['staging-*']}\n    mode: notify-only\n    actions: [notify]\n",
    )
    .unwrap();
    let playbooks = dir.path().to_str().unwrap();
    let validate = run(&["validate", playbooks]);
    assert!(validate.status.success(), "a warning is not an error");
    let stderr = String::from_utf8_lossy(&validate.stderr);
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(
        stderr.contains(
            "staging.yaml:2:5: rule \"staging-notify-only\" may not see all of its findings"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("\"ecs-task-high\""), "{stderr}");
    assert!(String::from_utf8_lossy(&validate.stdout).contains("(1 warning)"));
    // What the warning is about: the default rule decides a staging task's High finding.
    let staging = fargate_finding_in_service(dir.path(), "staging-api");
    let output = run(&[
        "replay",
        "--dry-run",
        "--output",
        "json",
        "--playbooks",
        playbooks,
        staging.to_str().unwrap(),
    ]);
    assert_eq!(json_lines(&output)[0]["rule"], "ecs-task-high");
}

#[test]
fn validate_refuses_rules_that_do_something_other_than_they_say() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("team.yaml"),
        "rules:
  - name: everything
    match: {}
    mode: enforce
    actions: [isolate, evidence, tag, notify]
  - name: never
    match: {finding_types: []}
    mode: enforce
    actions: [notify]
  - name: stop-anything
    match: {targets: [eks_workload, ec2_instance]}
    mode: enforce
    actions: [deregister, stop, notify]
  - name: typos
    match: {min_severity: Mdium}
    mode: enforce
    actions: [isolte, notify]
",
    )
    .unwrap();
    let output = run(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "team.yaml:3:5: rule \"everything\": `match` has no conditions, so it would match every finding",
        "team.yaml:7:13: rule \"never\": `match.finding_types` is empty",
        "team.yaml:13:27: rule \"stop-anything\": `stop` acts on ecs_task only, but this rule can match ec2_instance, eks_workload: move `stop` to a rule for ecs_task",
        "team.yaml:13:15: rule \"stop-anything\": `deregister` acts on ecs_task, ec2_instance only, but this rule can match eks_workload",
        "team.yaml:15:13: rules[3].match.min_severity: invalid value",
        "team.yaml:17:15: rules[3].actions[0]: unknown variant `isolte`",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("(9 problems)"), "{stderr}");
}

#[test]
fn every_option_has_help() {
    for command in ["replay", "release", "demo", "preflight", "validate"] {
        let help = run(&[command, "-h"]);
        let text = String::from_utf8_lossy(&help.stdout);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with('-') {
                continue;
            }
            // Drop `[default: ...]` and `[possible values: ...]`: what is left after the flag
            // and its value name must be words.
            let mut words = String::new();
            let mut depth = 0;
            for c in line.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    c if depth == 0 => words.push(c),
                    _ => {}
                }
            }
            let on_its_line = words
                .split_whitespace()
                .any(|w| !w.starts_with('-') && !w.starts_with('<') && !w.ends_with(','));
            // Long help goes on the next line.
            let below = lines.get(i + 1).map(|l| l.trim()).is_some_and(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.starts_with('[')
                    && !l.starts_with("Possible")
            });
            let described = on_its_line || below;
            assert!(described, "{command}: no help for {line:?}\n{text}");
        }
    }
}
