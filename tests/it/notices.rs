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
