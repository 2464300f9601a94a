//! Notices: each format against its golden file (a dry-run decision on the sample events, so
//! the files show what `responder render` prints), the limits Slack and Chatbot set, and the
//! chat card a real response publishes.

use responder::notice::{render, NoticeFormat};
use responder::playbook::{Mode, PlaybookSet};
use serde_json::Value;

use crate::support::{is_done, workspace_root, World};

const EVENTS: &[&str] = &[
    "fargate-crypto-miner-high",
    "ec2-instance-process-injection",
    "eks-runc-container-escape",
];

fn rendered(event: &str, format: NoticeFormat) -> String {
    let bytes = std::fs::read(workspace_root().join(format!("events/{event}.json"))).unwrap();
    let set = PlaybookSet::defaults().unwrap();
    let report = responder::decide(Some(event.to_string()), &bytes, &set, Mode::DryRun).0;
    let notice = render(&report, format, None);
    match format {
        NoticeFormat::Text => notice,
        _ => {
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&notice).unwrap()).unwrap()
        }
    }
}

#[test]
fn every_format_matches_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for event in EVENTS {
        for (name, format) in NoticeFormat::ALL {
            let extension = if *format == NoticeFormat::Text {
                "txt"
            } else {
                "json"
            };
            let path = workspace_root().join(format!("tests/golden/{event}.{name}.{extension}"));
            let got = rendered(event, *format) + "\n";
            if update {
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            assert_eq!(
                got,
                want,
                "{} differs (UPDATE_GOLDEN=1 accepts the new rendering)",
                path.display()
            );
        }
    }
}

#[test]
fn slack_and_chatbot_notices_keep_within_the_platforms_limits() {
    for event in EVENTS {
        let slack: Value = serde_json::from_str(&rendered(event, NoticeFormat::Slack)).unwrap();
        assert!(!slack["text"].as_str().unwrap().is_empty(), "fallback text");
        for block in slack["blocks"].as_array().unwrap() {
            match block["type"].as_str().unwrap() {
                "header" => assert!(block["text"]["text"].as_str().unwrap().chars().count() <= 150),
                "section" => {
                    if let Some(fields) = block["fields"].as_array() {
                        assert!(fields.len() <= 10);
                        for field in fields {
                            assert!(field["text"].as_str().unwrap().chars().count() <= 2000);
                        }
                    }
                    if let Some(text) = block["text"]["text"].as_str() {
                        assert!(text.chars().count() <= 3000);
                    }
                }
                "context" => {}
                other => panic!("unexpected block {other}"),
            }
        }
        let card: Value = serde_json::from_str(&rendered(event, NoticeFormat::Chatbot)).unwrap();
        assert_eq!(card["version"], "1.0");
        assert_eq!(card["source"], "custom");
        assert_eq!(card["content"]["textType"], "client-markdown");
        assert_eq!(card["metadata"]["threadId"], card["id"]);
    }
}

#[tokio::test]
async fn a_contained_task_gets_a_chat_card_that_says_what_is_still_reachable_and_how_to_release() {
    let mut world = World::new(2).await;
    // The fixture's one topic stands in for the chat topic: its queue sees both messages.
    world.responder.config.chat_topic_arn = Some(world.fixture.topic_arn.clone());
    let report = world.respond(&world.miner_event(0, 1)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert!(is_done(&report, "notify"), "{}", report.to_json_line());
    let messages = world.notifications().await;
    let cards: Vec<Value> = messages
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(&m.body).ok())
        .filter(|v| v["source"] == "custom")
        .collect();
    assert_eq!(cards.len(), 1, "{messages:?}");
    let card = &cards[0];
    let description = card["content"]["description"].as_str().unwrap();
    assert!(description.contains("*Done*"), "{description}");
    assert!(description.contains("isolate:"), "{description}");
    assert!(description.contains("*Still reachable*"), "{description}");
    assert!(description.contains("same-subnet"), "{description}");
    let next = card["content"]["nextSteps"].to_string();
    assert!(
        next.contains(&format!("responder release {}", world.finding_id(1))),
        "{next}"
    );
    assert!(next.contains("s3://"), "{next}");
    // And the text notice still went to the topic, as before.
    assert!(messages
        .iter()
        .any(|m| m.body.contains("To release the containment")));
}

/// The GuardDuty finding as Security Hub would hold it (ASFF), imported into the emulator.
async fn import_into_security_hub(world: &World, event: &Value) {
    use aws_sdk_securityhub::types::{AwsSecurityFinding, Resource, Severity, SeverityLabel};
    let detail = &event["detail"];
    let id = detail["arn"].as_str().unwrap();
    let task = detail["resource"]["ecsClusterDetails"]["taskDetails"]["arn"]
        .as_str()
        .unwrap();
    let finding = AwsSecurityFinding::builder()
        .schema_version("2018-10-08")
        .id(id)
        .product_arn("arn:aws:securityhub:us-east-1::product/aws/guardduty")
        .generator_id(detail["type"].as_str().unwrap())
        .aws_account_id(emulator::fixture::ACCOUNT)
        .types("TTPs/Impact/Impact:Runtime-CryptoMinerExecuted")
        .created_at("2026-11-27T10:00:00Z")
        .updated_at("2026-11-27T10:00:00Z")
        .severity(Severity::builder().label(SeverityLabel::High).build())
        .title("A container is mining cryptocurrency")
        .description("imported for the test")
        .resources(Resource::builder().r#type("AwsEcsTask").id(task).build())
        .build();
    let imported = world
        .clients
        .securityhub
        .batch_import_findings()
        .findings(finding)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.failed_count(), Some(0), "{imported:?}");
}

#[tokio::test]
async fn security_hub_gets_the_workflow_status_and_a_note_and_a_missing_finding_is_said() {
    let yaml = r#"
rules:
  - name: hub
    match: {finding_types: ["*:Runtime/*"], targets: [ecs_task]}
    mode: enforce
    actions: [evidence, {notify: {security_hub: {}}}]
"#;
    let world = World::with_playbooks(
        2,
        PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap(),
    )
    .await;
    let event = world.miner_event(0, 5);
    import_into_security_hub(&world, &event).await;
    let report = world.respond(&event).await;
    let summary = notify_summary(&report);
    assert!(
        summary.contains("Security Hub workflow set to NOTIFIED"),
        "{summary}"
    );
    let updates = world.proxy.security_hub_updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let update = &updates[0];
    assert_eq!(update["FindingIdentifier"]["Id"], event["detail"]["arn"]);
    assert_eq!(
        update["FindingIdentifier"]["ProductArn"],
        "arn:aws:securityhub:us-east-1::product/aws/guardduty"
    );
    assert_eq!(update["Workflow"]["Status"], "NOTIFIED");
    let note = update["Note"]["Text"].as_str().unwrap();
    assert!(note.contains("evidence done"), "{note}");
    assert!(note.chars().count() <= 512);
    assert_eq!(update["Note"]["UpdatedBy"], "guardduty-responder");

    // A finding Security Hub does not hold (integration off): the notice still goes, and says so.
    let report = world.respond(&world.miner_event(1, 6)).await;
    let summary = notify_summary(&report);
    assert!(summary.contains("Security Hub NOT updated"), "{summary}");
    assert!(summary.contains("FindingNotFound"), "{summary}");
    assert_eq!(world.proxy.security_hub_updates().len(), 1);
}

fn notify_summary(report: &responder::report::Report) -> String {
    match crate::support::outcome(report, "notify") {
        responder::report::Outcome::Done { summary, .. } => summary.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_slack_message_goes_to_the_webhook_the_secret_names() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let _server =
        emulator::serve_loopback(listener, received.clone(), |received, request| async move {
            use http_body_util::BodyExt;
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                received.lock().unwrap().push(value);
            }
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
        });
    let mut world = World::new(2).await;
    let secret = format!("incident-responder/slack-{}", world.name);
    world
        .clients
        .secretsmanager
        .create_secret()
        .name(&secret)
        .secret_string(serde_json::json!({ "url": url }).to_string())
        .send()
        .await
        .unwrap();
    world.responder.config.slack_webhook_secret = Some(secret);
    let report = world.respond(&world.miner_event(0, 9)).await;
    assert!(is_done(&report, "notify"), "{}", report.to_json_line());
    let summary = notify_summary(&report);
    assert!(summary.contains("(and to Slack)"), "{summary}");
    let posted = received.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let header = posted[0]["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(header.contains("contained"), "{header}");
    assert!(
        posted[0].to_string().contains("responder release"),
        "{}",
        posted[0]
    );
}
