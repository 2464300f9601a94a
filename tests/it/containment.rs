//! Containment, evidence, notification and the ledger against the emulator (moto), through the
//! fault proxy wherever AWS behaviour matters.

use responder::emulator::proxy::{Fault, FaultRule};
use responder::playbook::{Mode, PlaybookSet};
use responder::report::{DecisionKind, Outcome};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{detail, is_done, outcome, skipped_reason, World};

fn playbooks(yaml: &str) -> PlaybookSet {
    PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
}

#[tokio::test]
async fn fargate_task_is_quarantined_in_the_network_acls_and_nothing_else_changes() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 1)).await;
    assert_eq!(report.decision, DecisionKind::Act);
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());

    let isolation = &detail(&report, "isolate")["record"];
    assert_eq!(isolation["rung"], "nacl-quarantine");
    assert_eq!(isolation["attempts"][0]["rung"], "sg-swap");
    assert_eq!(
        isolation["attempts"][0]["result"], "not_applicable",
        "a Fargate ENI is requester-managed"
    );
    assert_eq!(
        world.count_calls("ModifyNetworkInterfaceAttribute"),
        0,
        "no SG change was even tried"
    );

    let task_ip = &world.fixture.tasks[0].ip;
    let cidr = format!("{task_ip}/32");
    let after = world.acl_state().await;
    let added: Vec<&Value> = after.iter().filter(|e| !before.contains(e)).collect();
    let removed: Vec<&Value> = before.iter().filter(|e| !after.contains(e)).collect();
    assert!(
        removed.is_empty(),
        "existing entries are never altered: {removed:?}"
    );
    // Both ACLs in use in the VPC get an ingress and an egress DENY for the task, at rule 1,
    // before their own rules at 100.
    for acl in [&world.fixture.private_acl_id, &world.fixture.default_acl_id] {
        for egress in [false, true] {
            assert!(
                added.iter().any(|e| e["acl"] == acl.as_str()
                    && e["egress"] == egress
                    && e["cidr"] == cidr.as_str()
                    && e["action"] == "deny"
                    && e["rule"] == 1),
                "missing {} DENY in {acl}: {added:?}",
                if egress { "egress" } else { "ingress" }
            );
        }
    }
    assert_eq!(
        added.len(),
        4,
        "nothing but the four DENY entries: {added:?}"
    );
    assert!(added.iter().all(|e| e["cidr"] == cidr.as_str()));
    // The other task is untouched.
    assert!(!after
        .iter()
        .any(|e| e["cidr"] == format!("{}/32", world.fixture.tasks[1].ip).as_str()));
    // The gap is said, not hidden.
    assert!(isolation["gaps"][0]
        .as_str()
        .unwrap()
        .contains("own subnet"));
}

#[tokio::test]
async fn an_instance_eni_gets_the_two_step_security_group_swap_and_release_restores_it() {
    let world = World::new(1).await;
    let (instance_id, eni_id) =
        responder::emulator::fixture::launch_instance(&world.clients, &world.fixture)
            .await
            .unwrap();
    let event = world.instance_event(&instance_id, &eni_id, 7);
    let report = world.respond(&event).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let record = &detail(&report, "isolate")["record"];
    assert_eq!(record["rung"], "sg-swap");
    let swap = &record["sg_swaps"][0];
    assert_eq!(swap["eni_id"], eni_id.as_str());
    assert_eq!(
        swap["original_groups"],
        json!([world.fixture.app_security_group])
    );

    // Two swaps in order: the allow-all "untracking" group, then the quarantine group.
    let modifies: Vec<_> = world
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "ModifyNetworkInterfaceAttribute")
        .collect();
    assert_eq!(modifies.len(), 2, "{modifies:?}");
    let groups = world.eni_groups(&eni_id).await;
    assert_eq!(groups, [swap["quarantine_group"].as_str().unwrap()]);
    let quarantine = world
        .clients
        .ec2
        .describe_security_groups()
        .group_ids(swap["quarantine_group"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let group = &quarantine.security_groups()[0];
    assert!(group.ip_permissions().is_empty(), "no ingress");
    assert!(
        group.ip_permissions_egress().is_empty(),
        "no egress without a GuardDuty endpoint"
    );
    assert!(is_done(&report, "snapshot-volumes"));
    assert!(is_done(&report, "evidence"));

    let released = world
        .responder
        .release(&world.finding_id(7), "release-test")
        .await
        .unwrap();
    assert_eq!(released["result"], "released", "{released}");
    let groups = world.eni_groups(&eni_id).await;
    assert_eq!(groups, [world.fixture.app_security_group.as_str()]);
}

#[tokio::test]
async fn a_full_acl_fails_the_rung_cleanly_and_the_fallback_stops_the_task_after_evidence() {
    let yaml = "rules:\n  - name: contain-or-stop\n    mode: enforce\n    actions:\n      - isolate: {fallback: stop}\n      - evidence\n      - notify\n";
    let world = World::with_playbooks(1, playbooks(yaml)).await;
    // Each ACL already holds its rule 100 in each direction: a quota of 1 leaves no room.
    world.proxy.configure(|c| c.nacl_entry_limit = 1);
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 2)).await;
    match outcome(&report, "isolate") {
        Outcome::Failed { error, .. } => {
            assert!(error.contains("NetworkAclEntryLimitExceeded"), "{error}")
        }
        other => panic!("isolate should fail: {other:?}"),
    }
    assert_eq!(
        world.acl_state().await,
        before,
        "no half-applied quarantine"
    );
    assert!(is_done(&report, "evidence"));
    assert!(is_done(&report, "stop"), "{}", report.to_json_line());
    // Stop came after the evidence was written.
    let calls = world.proxy.calls();
    let last_put = calls
        .iter()
        .rposition(|c| c.service == "s3" && c.operation.starts_with("PUT"))
        .unwrap();
    let stop = calls
        .iter()
        .position(|c| c.operation == "StopTask")
        .unwrap();
    assert!(stop > last_put);
    let task = world
        .clients
        .ecs
        .describe_tasks()
        .cluster(&world.fixture.cluster_arn)
        .tasks(&world.fixture.tasks[0].arn)
        .send()
        .await
        .unwrap();
    assert_eq!(task.tasks()[0].desired_status(), Some("STOPPED"));
    assert!(task.tasks()[0]
        .stopped_reason()
        .unwrap_or("")
        .contains(&world.finding_id(2)));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].body.contains("Failed:") && notes[0].body.contains("isolate"),
        "{}",
        notes[0].body
    );
}

#[tokio::test]
async fn stop_is_withheld_when_evidence_fails() {
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    actions: [evidence, stop, notify]\n";
    let world = World::with_playbooks(1, playbooks(yaml)).await;
    let mut responder = world.responder.clone();
    responder.config.evidence_bucket = Some("no-such-bucket-for-this-test".to_string());
    let report = responder
        .respond(
            None,
            world.miner_event(0, 3).to_string().as_bytes(),
            "inv-evidence-fails",
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
async fn throttled_and_failing_calls_are_retried_to_success() {
    let world = World::new(1).await;
    world.proxy.configure(|c| {
        // Every other EC2 describe call is throttled, on top of the one-off faults below.
        c.rules.push(FaultRule::share(
            "DescribeNetworkInterfaces",
            Fault::Throttle,
            2,
        ));
        c.rules
            .push(FaultRule::new("DescribeTasks", Fault::Throttle, Some(2)));
        c.rules.push(FaultRule::new(
            "CreateNetworkAclEntry",
            Fault::Throttle,
            Some(1),
        ));
        c.rules.push(FaultRule::new(
            "DescribeNetworkAcls",
            Fault::ServerError,
            Some(1),
        ));
        c.rules
            .push(FaultRule::new("UpdateItem", Fault::Throttle, Some(1)));
        c.rules
            .push(FaultRule::new("Publish", Fault::Throttle, Some(1)));
    });
    let report = world.respond(&world.miner_event(0, 4)).await;
    for step in ["isolate", "evidence", "tag", "notify"] {
        assert!(is_done(&report, step), "{step}: {}", report.to_json_line());
    }
    let injected = world
        .proxy
        .calls()
        .iter()
        .filter(|c| c.injected.is_some())
        .count();
    assert!(
        injected >= 6,
        "the faults were really injected ({injected})"
    );
    assert_eq!(
        detail(&report, "isolate")["record"]["nacl_entries"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn a_retry_after_throttling_exhaustion_finishes_without_repeating() {
    let world = World::new(1).await;
    // S3 keeps throttling beyond the SDK's attempts: the run fails retryably.
    let writes = format!("PUT /{}/*", world.fixture.bucket);
    world
        .proxy
        .configure(|c| c.rules.push(FaultRule::new(&writes, Fault::Throttle, None)));
    let event = world.miner_event(0, 5);
    let first = world
        .responder
        .respond(None, event.to_string().as_bytes(), "try-1", None)
        .await;
    assert!(first.retryable, "{}", first.report.to_json_line());
    assert!(matches!(
        outcome(&first.report, "evidence"),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    assert!(is_done(&first.report, "isolate") && is_done(&first.report, "notify"));

    // The retry (as Lambda would make it) finishes the job and repeats nothing that was done.
    world.proxy.configure(|c| c.rules.clear());
    let again = world
        .responder
        .respond(None, event.to_string().as_bytes(), "try-2", None)
        .await;
    assert!(!again.retryable, "{}", again.report.to_json_line());
    assert!(is_done(&again.report, "evidence"));
    assert!(skipped_reason(&again.report, "isolate").starts_with("already done"));
    assert!(skipped_reason(&again.report, "tag").starts_with("already done"));
    assert!(
        is_done(&again.report, "notify"),
        "the evidence being preserved now is news"
    );
    assert_eq!(
        world.count_calls("CreateNetworkAclEntry"),
        4,
        "isolation happened once"
    );
    assert_eq!(world.notifications().await.len(), 2);
}

#[tokio::test]
async fn evidence_objects_match_their_manifest_hashes_and_are_on_legal_hold() {
    let world = World::new(1).await;
    let report = world.respond(&world.miner_event(0, 6)).await;
    let evidence = detail(&report, "evidence");
    let bucket = &world.fixture.bucket;
    let manifest_key = evidence["manifest"]["key"].as_str().unwrap();
    assert!(manifest_key.starts_with(&format!("incidents/123456789012/{}/", world.finding_id(6))));
    let manifest = world
        .clients
        .s3
        .get_object()
        .bucket(bucket)
        .key(manifest_key)
        .send()
        .await
        .unwrap();
    let manifest: Value =
        serde_json::from_slice(&manifest.body.collect().await.unwrap().into_bytes()).unwrap();
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
        let body = world
            .clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(
            hex::encode(Sha256::digest(&body)),
            object["sha256"].as_str().unwrap(),
            "{key}"
        );
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
    let stored = world
        .clients
        .s3
        .get_object()
        .bucket(bucket)
        .key(finding_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
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
    let before = world
        .clients
        .s3
        .get_object()
        .bucket(bucket)
        .key(before["key"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(
        !String::from_utf8_lossy(&before).contains(&format!("{}/32", world.fixture.tasks[0].ip))
    );
}

#[tokio::test]
async fn the_notification_is_readable_and_carries_the_report() {
    let world = World::new(1).await;
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
    assert!(note.subject.chars().count() <= 100);
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

#[tokio::test]
async fn twenty_replays_make_one_set_of_mutations() {
    let world = World::new(1).await;
    let event = world.miner_event(0, 8);
    let first = world.respond(&event).await;
    assert!(is_done(&first, "isolate"));
    let after_first: Vec<_> = world.proxy.mutating_calls();
    world.proxy.clear_calls();
    let mut republished = event.clone();
    for n in 0..20 {
        republished["detail"]["service"]["count"] = json!(2 + n);
        let report = world.respond(&republished).await;
        for step in ["isolate", "evidence", "tag", "notify"] {
            assert!(
                matches!(outcome(&report, step), Outcome::Skipped { .. }),
                "replay {n}: {step} ran again"
            );
        }
    }
    let extra: Vec<_> = world
        .proxy
        .mutating_calls()
        .into_iter()
        .filter(|c| c.service != "dynamodb")
        .collect();
    // Only the ledger's own bookkeeping (response lock, audit records) was written.
    assert!(extra.is_empty(), "replays changed something: {extra:?}");
    assert_eq!(
        world.count_calls("PutItem"),
        20,
        "one audit record per replay"
    );

    assert_eq!(
        after_first
            .iter()
            .filter(|c| c.operation == "CreateNetworkAclEntry")
            .count(),
        4
    );
    assert_eq!(world.notifications().await.len(), 1, "one notification");
}

#[tokio::test]
async fn two_concurrent_deliveries_act_once() {
    let world = World::new(1).await;
    let event = world.miner_event(0, 9);
    let (a, b) = tokio::join!(
        world.respond_as(&event, "member-delivery", None),
        world.respond_as(&event, "admin-delivery", None)
    );
    let isolations = [&a, &b].iter().filter(|r| is_done(r, "isolate")).count();
    assert_eq!(
        isolations,
        1,
        "exactly one isolates:\n{}\n{}",
        a.to_json_line(),
        b.to_json_line()
    );
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 4);
    let evidence_runs = [&a, &b].iter().filter(|r| is_done(r, "evidence")).count();
    assert_eq!(evidence_runs, 1);
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "one notification");
}

#[tokio::test]
async fn release_restores_the_exact_prior_state_and_a_second_release_is_harmless() {
    let world = World::new(1).await;
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 10)).await;
    assert!(is_done(&report, "isolate"));
    assert_ne!(world.acl_state().await, before);
    let released = world
        .responder
        .release(&world.finding_id(10), "release-1")
        .await
        .unwrap();
    assert_eq!(
        released["detail"]["removed_nacl_entries"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "{released}"
    );
    assert_eq!(world.acl_state().await, before);
    let again = world
        .responder
        .release(&world.finding_id(10), "release-2")
        .await
        .unwrap();
    assert_eq!(again["result"], "already released");
    // Release by task ARN finds the same record.
    let by_task = world
        .responder
        .release(&world.fixture.tasks[0].arn, "release-3")
        .await
        .unwrap();
    assert_eq!(by_task["findings"][0]["result"], "already released");
}

#[tokio::test]
async fn release_leaves_an_entry_someone_else_replaced() {
    let world = World::new(1).await;
    let report = world.respond(&world.miner_event(0, 11)).await;
    let entries = detail(&report, "isolate")["record"]["nacl_entries"]
        .as_array()
        .unwrap()
        .clone();
    let first = &entries[0];
    // An operator replaces one of our entries with their own rule at the same number.
    world
        .clients
        .ec2
        .replace_network_acl_entry()
        .network_acl_id(first["acl_id"].as_str().unwrap())
        .rule_number(first["rule_number"].as_i64().unwrap() as i32)
        .egress(first["egress"].as_bool().unwrap())
        .protocol("6")
        .rule_action(aws_sdk_ec2::types::RuleAction::Deny)
        .cidr_block("198.51.100.0/24")
        .port_range(
            aws_sdk_ec2::types::PortRange::builder()
                .from(22)
                .to(22)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let released = world
        .responder
        .release(&world.finding_id(11), "release")
        .await
        .unwrap();
    assert_eq!(
        released["detail"]["removed_nacl_entries"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        released["detail"]["left_alone"].as_array().unwrap().len(),
        1
    );
    let state = world.acl_state().await;
    assert!(
        state.iter().any(|e| e["cidr"] == "198.51.100.0/24"),
        "the operator's rule survives"
    );
}

#[tokio::test]
async fn a_task_stopped_event_releases_its_quarantine_entries() {
    let world = World::new(1).await;
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 12)).await;
    assert!(is_done(&report, "isolate"));
    let stopped = json!({
        "version": "0", "id": "e-stop", "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": "123456789012", "time": "2026-11-26T12:00:00Z", "region": "us-east-1",
        "resources": [world.fixture.tasks[0].arn],
        "detail": {
            "clusterArn": world.fixture.cluster_arn, "taskArn": world.fixture.tasks[0].arn,
            "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "stopCode": "TaskFailedToStart",
            "stoppedReason": "Task failed ELB health checks",
        }
    });
    let release = world.respond(&stopped).await;
    assert_eq!(
        release.decision,
        DecisionKind::Release,
        "{}",
        release.to_json_line()
    );
    assert_eq!(
        world.acl_state().await,
        before,
        "{}",
        release.to_json_line()
    );
    let ledger = responder::actions::ledger::Ledger::new(
        world.clients.dynamodb.clone(),
        &world.fixture.table,
        "t",
        1,
    );
    let isolate = ledger
        .get_step(&world.finding_id(12), "step#isolate")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        isolate.status,
        responder::actions::ledger::StepStatus::Released
    );
    // A RUNNING state change releases nothing.
    let mut running = stopped.clone();
    running["detail"]["lastStatus"] = "RUNNING".into();
    let skip = world.respond(&running).await;
    assert_eq!(skip.skip_code, Some("task_not_stopped"));
}

#[tokio::test]
async fn dry_run_makes_no_mutating_call_but_leaves_an_audit_record() {
    let world = World::new(1).await;
    let report = world
        .respond_as(&world.miner_event(0, 13), "dry", Some(Mode::DryRun))
        .await;
    assert_eq!(report.mode, Some(Mode::DryRun));
    for step in ["isolate", "evidence", "tag", "notify"] {
        assert!(
            skipped_reason(&report, step).starts_with("dry-run"),
            "{step}"
        );
    }
    let mutating = world.proxy.mutating_calls();
    assert_eq!(mutating.len(), 1, "only the audit record: {mutating:?}");
    assert_eq!(
        world.proxy.calls().len(),
        1,
        "no call at all besides it: {:?}",
        world.proxy.calls()
    );
    assert_eq!(
        (mutating[0].service.as_str(), mutating[0].operation.as_str()),
        ("dynamodb", "PutItem")
    );
    let ledger = responder::actions::ledger::Ledger::new(
        world.clients.dynamodb.clone(),
        &world.fixture.table,
        "t",
        1,
    );
    let audits = ledger.audits(&world.finding_id(13)).await.unwrap();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0]["mode"], "dry-run");
}

#[tokio::test]
async fn notify_only_sends_the_notice_and_nothing_else() {
    let world = World::new(1).await;
    let report = world
        .respond_as(
            &world.miner_event(0, 14),
            "notify-only",
            Some(Mode::NotifyOnly),
        )
        .await;
    assert!(is_done(&report, "notify"));
    assert!(skipped_reason(&report, "isolate").starts_with("notify-only"));
    let outside_ledger: Vec<_> = world
        .proxy
        .mutating_calls()
        .into_iter()
        .filter(|c| c.service != "dynamodb")
        .map(|c| c.operation)
        .collect();
    assert_eq!(outside_ledger, ["Publish"]);
}

#[tokio::test]
async fn a_republished_finding_whose_severity_rose_runs_only_the_new_steps() {
    let world = World::new(1).await;
    let mut medium = world.miner_event(0, 15);
    medium["detail"]["type"] = "Execution:Runtime/NewBinaryExecuted".into();
    medium["detail"]["severity"] = json!(5);
    let first = world.respond(&medium).await;
    assert_eq!(first.rule.as_deref(), Some("ecs-task-medium"));
    assert!(is_done(&first, "evidence") && is_done(&first, "notify"));
    let mut high = medium.clone();
    high["detail"]["severity"] = json!(8);
    high["detail"]["service"]["count"] = json!(3);
    let second = world.respond(&high).await;
    assert_eq!(second.rule.as_deref(), Some("ecs-task-high"));
    assert!(is_done(&second, "isolate"), "{}", second.to_json_line());
    assert!(is_done(&second, "tag"));
    assert!(skipped_reason(&second, "evidence").starts_with("already done"));
    assert!(is_done(&second, "notify"), "the escalation is news");
    assert_eq!(world.notifications().await.len(), 2);
}

#[tokio::test]
async fn missing_configuration_fails_the_step_by_name_and_the_rest_still_run() {
    let world = World::new(1).await;
    let mut responder = world.responder.clone();
    responder.config.evidence_bucket = None;
    let report = responder
        .respond(
            None,
            world.miner_event(0, 16).to_string().as_bytes(),
            "no-bucket",
            None,
        )
        .await
        .report;
    match outcome(&report, "evidence") {
        Outcome::Failed { error, retryable } => {
            assert!(error.contains("RESPONDER_EVIDENCE_BUCKET"), "{error}");
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
    assert!(is_done(&report, "isolate") && is_done(&report, "notify"));
}

#[tokio::test]
async fn a_task_that_is_gone_is_an_outcome_not_an_error() {
    let world = World::new(1).await;
    let mut event = world.miner_event(0, 17);
    let gone = format!(
        "{}/0123456789abcdef0123456789abcdef",
        world.fixture.cluster_arn.replace(":cluster/", ":task/")
    );
    event["detail"]["resource"]["ecsClusterDetails"]["taskDetails"]["arn"] = gone.into();
    let report = world.respond(&event).await;
    let isolate = detail(&report, "isolate");
    assert!(
        isolate["summary"].as_str().unwrap().contains("MISSING"),
        "{isolate}"
    );
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);
}

#[tokio::test]
async fn every_event_leaves_an_audit_record_even_when_unreadable() {
    let world = World::new(0).await;
    let response = world
        .responder
        .respond(None, b"{not json", "broken", None)
        .await;
    assert_eq!(response.report.decision, DecisionKind::Error);
    let audit = response
        .report
        .execution
        .as_ref()
        .and_then(|e| e.audit.clone())
        .expect("audit key");
    assert!(audit.starts_with("audit#"), "{audit}");
    assert_eq!(world.proxy.mutating_calls().len(), 1);
}

#[tokio::test]
async fn the_guardduty_agent_keeps_its_path_through_the_quarantine() {
    let world = World::new(1).await;
    responder::emulator::fixture::add_guardduty_endpoint(&world.clients, &world.fixture)
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(0, 20)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let cidr = format!("{}/32", world.fixture.tasks[0].ip);
    let state = world.acl_state().await;
    let ours = |acl: &str, egress: bool| -> Vec<Value> {
        let mut entries: Vec<Value> = state
            .iter()
            .filter(|e| e["acl"] == acl && e["egress"] == egress && e["cidr"] == cidr.as_str())
            .cloned()
            .collect();
        entries.sort_by_key(|e| e["rule"].as_i64());
        entries
    };
    // The endpoint sits in a private subnet: that ACL allows the agent's traffic first.
    for egress in [false, true] {
        let entries = ours(&world.fixture.private_acl_id, egress);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(
            (
                entries[0]["action"].as_str(),
                entries[0]["protocol"].as_str()
            ),
            (Some("allow"), Some("6"))
        );
        assert_eq!(entries[1]["action"], "deny");
        assert!(entries[0]["rule"].as_i64() < entries[1]["rule"].as_i64());
        // The public subnet's ACL only denies.
        let public = ours(&world.fixture.default_acl_id, egress);
        assert_eq!(public.len(), 1);
        assert_eq!(public[0]["action"], "deny");
    }
}

#[tokio::test]
async fn the_quarantine_group_lets_only_the_agent_out() {
    let world = World::new(1).await;
    let endpoint_ip =
        responder::emulator::fixture::add_guardduty_endpoint(&world.clients, &world.fixture)
            .await
            .unwrap();
    let (instance_id, eni_id) =
        responder::emulator::fixture::launch_instance(&world.clients, &world.fixture)
            .await
            .unwrap();
    let event = world.instance_event(&instance_id, &eni_id, 21);
    let report = world.respond(&event).await;
    let group_id = detail(&report, "isolate")["record"]["sg_swaps"][0]["quarantine_group"]
        .as_str()
        .unwrap()
        .to_string();
    let group = world
        .clients
        .ec2
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .unwrap();
    let egress = group.security_groups()[0].ip_permissions_egress();
    assert_eq!(egress.len(), 1, "{egress:?}");
    assert_eq!(
        (egress[0].from_port(), egress[0].to_port()),
        (Some(443), Some(443))
    );
    assert_eq!(
        egress[0].ip_ranges()[0].cidr_ip(),
        Some(format!("{endpoint_ip}/32").as_str())
    );
}

#[tokio::test]
async fn deregister_takes_the_task_out_of_its_target_group() {
    let yaml =
        "rules:\n  - name: r\n    mode: enforce\n    actions: [isolate, deregister, notify]\n";
    let world = World::with_playbooks(2, playbooks(yaml)).await;
    let report = world.respond(&world.miner_event(0, 22)).await;
    let removed = &detail(&report, "deregister")["deregistered"];
    assert_eq!(
        removed[0]["target_group_arn"],
        world.fixture.target_group_arn.as_str(),
        "{removed}"
    );
    let health = world
        .clients
        .elbv2
        .describe_target_health()
        .target_group_arn(&world.fixture.target_group_arn)
        .send()
        .await
        .unwrap();
    let ips: Vec<&str> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target().and_then(|t| t.id()))
        .collect();
    assert!(
        !ips.contains(&world.fixture.tasks[0].ip.as_str()),
        "{ips:?}"
    );
    assert!(
        ips.contains(&world.fixture.tasks[1].ip.as_str()),
        "the other task keeps serving"
    );
}

#[tokio::test]
async fn an_exempt_service_is_not_contained_but_still_reported() {
    let world = World::new(1).await;
    let service_arn = format!(
        "{}/{}",
        world.fixture.cluster_arn.replace(":cluster/", ":service/"),
        world.fixture.service_name
    );
    world
        .clients
        .ecs
        .tag_resource()
        .resource_arn(&service_arn)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key("incident-responder:exempt")
                .value("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(0, 23)).await;
    assert!(
        skipped_reason(&report, "isolate").contains("on service"),
        "{}",
        report.to_json_line()
    );
    assert!(is_done(&report, "evidence") && is_done(&report, "notify"));
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);
}

#[tokio::test]
async fn a_crashed_invocations_claim_expires_and_the_retry_finishes_the_job() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let world = World::new(1).await;
    let put_lock = |lease_until: i64| {
        world
            .clients
            .dynamodb
            .put_item()
            .table_name(&world.fixture.table)
            .item(
                "pk",
                AttributeValue::S(format!("finding#{}", world.finding_id(30))),
            )
            .item("sk", AttributeValue::S("lock".into()))
            .item("status", AttributeValue::S("claimed".into()))
            .item("owner", AttributeValue::S("crashed-invocation".into()))
            .item("lease_until", AttributeValue::N(lease_until.to_string()))
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    // A live holder: this delivery stands back and changes nothing.
    put_lock(now + 60).await.unwrap();
    let report = world.respond(&world.miner_event(0, 30)).await;
    assert!(skipped_reason(&report, "isolate").contains("crashed-invocation"));
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);
    // The holder died and its lease ran out: the retry takes over.
    put_lock(now - 1).await.unwrap();
    let report = world.respond(&world.miner_event(0, 30)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 4);
}
