//! What is preserved and said: evidence objects and their manifest, stop only after evidence,
//! the notification.

use responder::playbook::PlaybookSet;
use responder::report::Outcome;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{evidence, is_done, isolation, outcome, skipped_reason, World};

fn playbooks(yaml: &str) -> PlaybookSet {
    PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
}

#[tokio::test]
async fn stop_is_withheld_when_evidence_fails() {
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [evidence, stop, notify]\n";
    let world = World::with_playbooks(2, playbooks(yaml)).await;
    let mut responder = world.responder.clone();
    responder.config.evidence_bucket = Some("no-such-bucket-for-this-test".to_string());
    let report = responder
        .respond(
            None,
            world.miner_event(0, 3).to_string().as_bytes(),
            "inv-evidence-fails",
            None,
            None,
        )
        .await
        .report;
    assert!(
        matches!(outcome(&report, "evidence"), Outcome::Failed { .. }),
        "{}",
        report.to_json_line()
    );
    assert!(skipped_reason(&report, "stop").contains("evidence was not preserved"));
    assert_eq!(world.count_calls("StopTask"), 0);
    assert!(
        is_done(&report, "notify"),
        "notify is sent even when steps failed"
    );
}

#[tokio::test]
async fn evidence_objects_match_their_manifest_hashes_and_are_on_legal_hold() {
    let world = World::new(2).await;
    let report = world.respond(&world.miner_event(0, 6)).await;
    let stored = evidence(&report);
    let bucket = &world.fixture.bucket;
    let manifest_key = stored.manifest.key.as_str();
    assert!(manifest_key.starts_with(&format!("incidents/123456789012/{}/", world.finding_id(6))));
    let manifest: Value =
        serde_json::from_slice(&world.object(bucket, manifest_key).await).unwrap();
    let objects = manifest["objects"].as_array().unwrap();
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o["key"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    for expected in [
        "finding.json",
        "describe-tasks.json",
        "task-definition.json",
        "network-interfaces.json",
        "network-acls-before.json",
        "network-acls-after.json",
        "tags.json",
        "service.json",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for object in objects {
        let key = object["key"].as_str().unwrap();
        let body = world.object(bucket, key).await;
        assert_eq!(
            hex::encode(Sha256::digest(&body)),
            object["sha256"].as_str().unwrap(),
            "{key}"
        );
        // S3 was given (and verified) the same SHA-256 the manifest records.
        let head = world
            .clients
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let stored = head.checksum_sha256().map(|c| {
            use base64::Engine as _;
            hex::encode(base64::engine::general_purpose::STANDARD.decode(c).unwrap())
        });
        assert_eq!(stored.as_deref(), object["sha256"].as_str(), "{key}");
        let hold = world
            .clients
            .s3
            .get_object_legal_hold()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            hold.legal_hold()
                .and_then(|h| h.status())
                .map(|s| s.as_str()),
            Some("ON"),
            "{key}"
        );
    }
    // The finding stored is the one received.
    let finding_key = objects
        .iter()
        .find(|o| o["key"].as_str().unwrap().ends_with("finding.json"))
        .unwrap()["key"]
        .as_str()
        .unwrap();
    let stored = world.object(bucket, finding_key).await;
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["id"], world.finding_id(6).as_str());
    // The ACL "before" has no quarantine entry; "after" has them.
    let before = objects
        .iter()
        .find(|o| {
            o["key"]
                .as_str()
                .unwrap()
                .ends_with("network-acls-before.json")
        })
        .unwrap();
    let before = world.object(bucket, before["key"].as_str().unwrap()).await;
    assert!(
        !String::from_utf8_lossy(&before).contains(&format!("{}/32", world.fixture.tasks[0].ip))
    );
}

#[tokio::test]
async fn the_notification_is_readable_and_carries_the_report() {
    let world = World::new(2).await;
    let report = world.respond(&world.miner_event(0, 7)).await;
    assert!(is_done(&report, "notify"));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    let note = &notes[0];
    assert!(
        note.subject
            .starts_with("[High] contained: CryptoMinerExecuted on ECS task"),
        "{}",
        note.subject
    );
    assert!(note.subject.chars().count() < 100);
    assert!(note.body.contains("Impact:Runtime/CryptoMinerExecuted"));
    assert!(
        note.body.contains(&world.fixture.tasks[0].ip),
        "what was done: {}",
        note.body
    );
    assert!(
        note.body
            .contains(&format!("responder release {}", world.finding_id(7))),
        "how to release: {}",
        note.body
    );
    let attached = note.report.as_ref().expect("report attribute");
    assert_eq!(attached["finding_id"], world.finding_id(7).as_str());
    assert_eq!(attached["steps"][0]["action"], "isolate");
    for attribute in ["decision", "severity_band", "finding_type", "report"] {
        assert!(
            note.attributes.iter().any(|a| a == attribute),
            "{attribute}"
        );
    }
}

/// One response reads each thing once: the service, read for the exemption guardrail, is not
/// described again for the evidence; the task definition, which the evidence and ECS's
/// outlook both need at once, is described once; and a second finding on a task of the same
/// revision does not describe it at all (a revision never changes). Every step's outcome is in
/// the ledger when the response returns, though written alongside the next phase's calls.
#[tokio::test]
async fn a_response_reads_each_thing_once_and_records_every_step() {
    use responder::actions::ledger::StepStatus;
    let world = World::new(4).await.without_guard();
    let report = world.respond(&world.miner_event(0, 11)).await;
    for step in ["isolate", "evidence", "tag", "notify"] {
        assert!(is_done(&report, step), "{step}: {}", report.to_json_line());
    }
    assert!(
        report.ecs_outlook.is_some(),
        "the outlook read the task definition too"
    );
    assert_eq!(world.count_calls("DescribeServices"), 1);
    assert_eq!(world.count_calls("DescribeTaskDefinition"), 1);
    assert_eq!(
        world.count_calls("DescribeNetworkAcls"),
        2,
        "the plan's read and the verification's, which the evidence keeps as its \"after\""
    );
    // That "after" holds the quarantine's entries, as AWS answered after making them.
    let stored = evidence(&report);
    let after_key = stored
        .objects
        .iter()
        .find(|o| o.key.ends_with("/network-acls-after.json"))
        .map(|o| o.key.clone())
        .unwrap();
    let after: Value =
        serde_json::from_slice(&world.object(&world.fixture.bucket, &after_key).await).unwrap();
    let cidr = format!("{}/32", world.fixture.tasks[0].ip);
    let quarantine_entries = after
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|acl| acl["entries"].as_array().unwrap())
        .filter(|entry| entry.to_string().contains(&cidr))
        .count();
    assert_eq!(
        quarantine_entries,
        isolation(&report).nacl_entries.len(),
        "{after}"
    );
    let ledger = world.ledger_as("a-reader");
    let steps = ledger.steps(&world.finding_id(11)).await.unwrap();
    assert_eq!(steps.len(), 4, "{steps:?}");
    for step in &steps {
        assert_eq!(step.status, StepStatus::Done, "{step:?}");
    }

    let report = world.respond(&world.miner_event(1, 12)).await;
    assert!(is_done(&report, "evidence"), "{}", report.to_json_line());
    assert_eq!(
        world.count_calls("DescribeTaskDefinition"),
        1,
        "the same revision is not described again"
    );
}
