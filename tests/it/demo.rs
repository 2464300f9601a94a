//! `responder demo`, and the CLI acting on what it leaves behind: the README's main job.

use std::process::Command;

use serde_json::Value;

use crate::support::moto_endpoint;

fn responder() -> Command {
    let mut command = Command::new(crate::support::binary("responder"));
    command.current_dir(crate::support::workspace_root());
    command
}

#[test]
fn demo_contains_stores_sends_and_releases() {
    // Starts (and stops) its own emulator, as on a fresh machine.
    let output = responder()
        .args(["demo", "--output", "json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["report"]["decision"], "act");
    crate::support::assert_json_keys_follow_the_readme(&result);
    let ip = result["task_ip"].as_str().unwrap();
    let entries = result["nacl_entries"].as_array().unwrap();
    // DENY in and out in both ACLs. The GuardDuty endpoint shares its subnet with workloads,
    // so no ALLOW for the agent: it would open them too.
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e["cidr"] == format!("{ip}/32").as_str()));
    assert!(entries.iter().all(|e| e["action"] == "deny"));
    let keys = result["evidence_keys"].as_array().unwrap();
    assert!(keys
        .iter()
        .any(|k| k.as_str().unwrap().ends_with("/manifest.json")));
    assert!(result["notification"]["subject"]
        .as_str()
        .unwrap()
        .contains("contained"));
    assert!(result["replay"]["mutating_calls"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(result["entries_after_release"], 0);
    assert!(std::path::Path::new(result["event_file"].as_str().unwrap()).is_file());
    // The emulator the demo started is gone with it.
    let port = result["emulator"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        moto_servers_on(&port),
        0,
        "moto on port {port} outlived the demo"
    );
}

/// moto servers running with `-p PORT`, from /proc.
fn moto_servers_on(port: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.iter().any(|a| a.ends_with(b"moto_server"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-p" && w[1] == port.as_bytes())
        })
        .count()
}

#[test]
fn demo_against_a_running_emulator_leaves_everything_for_the_cli() {
    let endpoint = moto_endpoint();
    let output = responder()
        .args(["demo", "--endpoint-url", &endpoint, "--output", "json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["release"], Value::Null, "left in place");
    let env: Vec<(String, String)> = result["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert!(env
        .iter()
        .any(|(k, v)| k == "AWS_ENDPOINT_URL" && *v == endpoint));
    for key in [
        "RESPONDER_EVIDENCE_BUCKET",
        "RESPONDER_LEDGER_TABLE",
        "RESPONDER_TOPIC_ARN",
        "AWS_REGION",
    ] {
        assert!(env.iter().any(|(k, _)| k == key), "{key}");
    }

    // Replaying the kept event with that environment changes nothing: all done already.
    let replay = responder()
        .envs(env.clone())
        .args([
            "replay",
            "--output",
            "json",
            result["event_file"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let report: Value = serde_json::from_slice(&replay.stdout).unwrap();
    for step in report["steps"].as_array().unwrap() {
        assert_eq!(step["outcome"]["status"], "skipped", "{step}");
    }
    assert!(report["execution"]["audit"]
        .as_str()
        .unwrap()
        .starts_with("finding#"));

    // And the CLI releases the quarantine.
    let release = responder()
        .envs(env.clone())
        .args([
            "release",
            result["finding_id"].as_str().unwrap(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        release.status.success(),
        "{}",
        String::from_utf8_lossy(&release.stderr)
    );
    let released: Value = serde_json::from_slice(&release.stdout).unwrap();
    crate::support::assert_json_keys_follow_the_readme(&released);
    let finding = &released["findings"][0];
    assert_eq!(finding["result"], "released", "{released}");
    assert_eq!(
        finding["detail"]["removed_nacl_entries"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Again, for people: text, and nothing left to do.
    let again = responder()
        .envs(env.clone())
        .args(["release", result["finding_id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        text.starts_with("finding ") && text.contains("already released at"),
        "{text}"
    );

    // A mistyped id is an error, not a quiet success.
    let typo = responder()
        .envs(env)
        .args(["release", "NONEXISTENT"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(1));
    assert!(typo.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("nothing to release"),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );
}

#[test]
fn replay_without_configuration_names_what_is_missing() {
    let endpoint = moto_endpoint();
    let output = responder()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("RESPONDER_LEDGER_TABLE")
        .args([
            "replay",
            "--output",
            "json",
            "events/fargate-crypto-miner-high.json",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "a failed step exits 1");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let error = report["steps"][0]["outcome"]["error"].as_str().unwrap();
    assert!(error.contains("RESPONDER_LEDGER_TABLE"), "{error}");
    assert!(report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("no audit record")));
}
