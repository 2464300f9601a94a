//! Modes and guardrails: dry-run, notify-only, exemption, missing configuration, unreadable
//! events: what is (not) done, and that every event leaves an audit record.

use responder::playbook::Mode;
use responder::report::{DecisionKind, Outcome};

use crate::support::{is_done, outcome, skipped_reason, World};

#[tokio::test]
async fn dry_run_makes_no_mutating_call_but_leaves_an_audit_record() {
    let world = World::new(2).await;
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
    let world = World::new(2).await;
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
async fn missing_configuration_fails_the_step_by_name_and_the_rest_still_run() {
    let world = World::new(2).await;
    let mut responder = world.responder.clone();
    responder.config.evidence_bucket = None;
    let report = responder
        .respond(
            None,
            world.miner_event(0, 16).to_string().as_bytes(),
            "no-bucket",
            None,
            None,
        )
        .await
        .report;
    match outcome(&report, "evidence") {
        Outcome::Failed {
            error, retryable, ..
        } => {
            assert!(error.contains("RESPONDER_EVIDENCE_BUCKET"), "{error}");
            assert!(!retryable);
        }
        other => panic!("{other:?}"),
    }
    assert!(is_done(&report, "isolate") && is_done(&report, "notify"));
}

#[tokio::test]
async fn every_event_leaves_an_audit_record_even_when_unreadable() {
    let world = World::new(0).await;
    let response = world
        .responder
        .respond(None, b"{not json", "broken", None, None)
        .await;
    assert_eq!(response.report.decision, DecisionKind::Error);
    let audit = response
        .report
        .execution
        .as_ref()
        .and_then(|e| e.audit.clone())
        .expect("audit key");
    assert!(audit.starts_with("audit#"), "{audit}");
    // `audit#{date}#{shard}`: bursts of such events spread over partitions.
    let shard = audit
        .split(" / ")
        .next()
        .unwrap()
        .rsplit('#')
        .next()
        .unwrap();
    assert!(
        shard.len() == 2 && shard.parse::<u8>().is_ok_and(|s| s < 16),
        "{audit}"
    );
    assert_eq!(world.proxy.mutating_calls().len(), 1);
}

#[tokio::test]
async fn an_exempt_service_is_not_contained_but_still_reported() {
    let world = World::new(2).await;
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

fn approve_playbooks(expiry_minutes: u32) -> responder::playbook::PlaybookSet {
    let yaml = format!(
        r#"
guardrails: {{approval_expiry_minutes: {expiry_minutes}}}
rules:
  - name: ask-first
    match: {{finding_types: ["*:Runtime/*"], targets: [ecs_task]}}
    mode: approve
    actions: [isolate, evidence, notify]
"#
    );
    responder::playbook::PlaybookSet::from_sources([("test.yaml".to_string(), yaml)]).unwrap()
}

#[tokio::test]
async fn approve_mode_preserves_and_tells_now_and_contains_only_once_a_person_approves() {
    let world = World::with_playbooks(2, approve_playbooks(60)).await;
    let id = world.finding_id(21);
    let report = world.respond(&world.miner_event(0, 21)).await;
    assert!(
        skipped_reason(&report, "isolate").starts_with("awaiting approval"),
        "{}",
        report.to_json_line()
    );
    assert!(is_done(&report, "evidence"));
    assert!(is_done(&report, "notify"));
    assert_eq!(
        world.count_calls("CreateNetworkAclEntry"),
        0,
        "nothing contained yet"
    );
    let notice = world.notifications().await;
    let last = notice.last().unwrap();
    assert!(
        last.subject.contains("AWAITING APPROVAL"),
        "{}",
        last.subject
    );
    assert!(
        last.body
            .contains(&format!("`responder approve {id}` will isolate:")),
        "{}",
        last.body
    );
    assert!(last.body.contains(&format!("`responder reject {id}`")));

    // Republished while waiting: still waiting, the expiry not renewed, nothing contained.
    world.respond(&world.miner_event(0, 21)).await;
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);

    let approved = world
        .responder
        .approve(&id, "alice", "approval")
        .await
        .unwrap();
    let report = approved.report;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert!(report
        .notes
        .iter()
        .any(|n| n == "containment approved by alice"));
    assert!(world.count_calls("CreateNetworkAclEntry") > 0);
    // Evidence was taken before; the approval run does not take it again.
    assert!(matches!(
        outcome(&report, "evidence"),
        Outcome::Skipped { .. }
    ));

    // Decided once: approving again (or a republished finding) finishes what is not done,
    // and repeats nothing; the approver stays alice.
    let entries = world.count_calls("CreateNetworkAclEntry");
    let again = world
        .responder
        .approve(&id, "bob", "approval-2")
        .await
        .unwrap()
        .report;
    assert!(
        again
            .notes
            .iter()
            .any(|n| n == "containment approved by alice"),
        "{:?}",
        again.notes
    );
    let republished = world.respond(&world.miner_event(0, 21)).await;
    assert!(
        !skipped_reason(&republished, "isolate").starts_with("awaiting approval"),
        "{}",
        republished.to_json_line()
    );
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), entries);
}

#[tokio::test]
async fn a_rejected_or_expired_approval_contains_nothing() {
    let world = World::with_playbooks(2, approve_playbooks(60)).await;
    world.respond(&world.miner_event(0, 22)).await;
    let rejected = world
        .responder
        .reject(&world.finding_id(22), "carol", "reject")
        .await
        .unwrap();
    assert!(rejected.steps[0].starts_with("isolate:"), "{rejected:?}");
    let refused = world
        .responder
        .approve(&world.finding_id(22), "dave", "approve")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("already rejected by carol"),
        "{refused}"
    );

    let world = World::with_playbooks(2, approve_playbooks(0)).await;
    world.respond(&world.miner_event(1, 23)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The schedule expires it and says so, once.
    let expire = serde_json::json!({
        "version": "0", "id": "x", "source": "incident-responder", "detail-type": "Expire approvals",
        "account": emulator::fixture::ACCOUNT, "region": "us-east-1", "time": "2026-11-27T12:00:00Z",
        "resources": [], "detail": {}
    });
    let report = world.respond(&expire).await;
    let execution = report.execution.as_ref().unwrap();
    assert_eq!(
        execution.expired_approvals,
        vec![world.finding_id(23)],
        "{}",
        report.to_json_line()
    );
    let told = world.notifications().await;
    assert!(
        told.iter().any(|n| n.subject.contains("[Approval expired]")
            && n.subject.contains(&world.finding_id(23))),
        "{told:?}"
    );
    let again = world.respond(&expire).await;
    assert!(again
        .execution
        .as_ref()
        .unwrap()
        .expired_approvals
        .is_empty());
    let expired = world
        .responder
        .approve(&world.finding_id(23), "erin", "late")
        .await
        .unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);

    // Nothing awaits approval for a finding never deferred.
    let none = world
        .responder
        .approve("no-such-finding", "frank", "x")
        .await
        .unwrap_err();
    assert!(
        none.to_string().contains("nothing awaits approval"),
        "{none}"
    );
}
