//! The blast-radius guard and the breaker against the emulator: enforced in the ledger before
//! any change, so truly concurrent invocations agree; shown loudly in the report, the
//! notification and the metrics; given back on release.

use std::sync::Arc;

use emulator::proxy::{Fault, FaultRule};
use responder::playbook::PlaybookSet;
use responder::report::{DecisionKind, Outcome, Report, WithheldBy};

use crate::support::{is_done, outcome, World};

fn playbooks(guardrails: &str) -> PlaybookSet {
    let yaml = format!(
        "guardrails: {guardrails}
rules:
  - name: contain
    mode: enforce
    match: {{finding_types: ['*:Runtime/*'], targets: [ecs_task]}}
    actions: [isolate, evidence, notify]
"
    );
    PlaybookSet::from_sources([("guard.yaml".to_string(), yaml)]).unwrap()
}

/// Every task's finding delivered at once, each in its own invocation on its own thread.
async fn all_at_once(world: &Arc<World>, tasks: usize) -> Vec<Report> {
    let runs: Vec<_> = (0..tasks)
        .map(|task| {
            let world = Arc::clone(world);
            tokio::spawn(async move { world.respond(&world.miner_event(task, 10 + task)).await })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await.unwrap());
    }
    reports
}

fn contained(report: &Report) -> bool {
    matches!(outcome(report, "isolate"), Outcome::Done { .. }) && report.containment().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_findings_on_one_service_contain_no_more_than_the_guard_allows() {
    // Three tasks running; two must stay serving: one may be contained.
    let world = Arc::new(
        World::with_playbooks(
            3,
            playbooks("{blast_radius: {min_healthy: 2, max_per_service: 5}}"),
        )
        .await,
    );
    let reports = all_at_once(&world, 3).await;
    let winners: Vec<&Report> = reports.iter().filter(|r| contained(r)).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:#?}",
        reports.iter().map(Report::to_json_line).collect::<Vec<_>>()
    );
    for report in reports.iter().filter(|r| !contained(r)) {
        let withheld = report.withheld.as_ref().expect("withheld");
        assert_eq!(withheld.by, WithheldBy::BlastRadius);
        assert!(
            withheld.reason.contains("3 running, 3 desired"),
            "{}",
            withheld.reason
        );
        assert!(
            withheld.reason.contains("1 contained already"),
            "{}",
            withheld.reason
        );
        assert!(report.notes[0].starts_with("CONTAINMENT WITHHELD (blast-radius guard)"));
        // Evidence and the notice still happen.
        assert!(is_done(report, "evidence"), "{}", report.to_json_line());
        assert!(report.emf_line(0).contains(r#""ContainmentWithheld":1"#));
    }
    let subjects: Vec<String> = world
        .notifications()
        .await
        .into_iter()
        .map(|n| n.subject)
        .collect();
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("NOT CONTAINED (blast-radius guard)"))
            .count(),
        2,
        "{subjects:?}"
    );
    assert_eq!(
        world.count_calls("CreateNetworkAclEntry"),
        winners[0].containment().unwrap().nacl_entries.len()
    );

    // Once the contained task stops, its slot is free: the next finding is contained.
    let winner = world
        .fixture
        .tasks
        .iter()
        .position(|t| Some(t.arn.as_str()) == winners[0].target.as_ref().and_then(task_arn))
        .unwrap();
    assert_eq!(
        world.respond(&world.stopped_event(winner)).await.decision,
        DecisionKind::Release
    );
    let other = (winner + 1) % 3;
    let again = world.respond(&world.miner_event(other, 10 + other)).await;
    assert!(contained(&again), "{}", again.to_json_line());
}

fn task_arn(target: &responder::incident::Target) -> Option<&str> {
    match target {
        responder::incident::Target::EcsTask(task) => Some(task.task_arn.as_str()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_breaker_switches_to_notify_only_and_says_so() {
    let world = Arc::new(
        World::with_playbooks(
            3,
            playbooks("{blast_radius: {min_healthy: 0, max_per_service: 10}, breaker: {max_containments: 2, window_minutes: 60}}"),
        )
        .await,
    );
    let reports = all_at_once(&world, 3).await;
    let held: Vec<&Report> = reports.iter().filter(|r| !contained(r)).collect();
    assert_eq!(
        held.len(),
        1,
        "{:#?}",
        reports.iter().map(Report::to_json_line).collect::<Vec<_>>()
    );
    let report = held[0];
    assert_eq!(
        report.withheld.as_ref().map(|w| w.by),
        Some(WithheldBy::Breaker)
    );
    assert!(
        report.notes[0].contains("BREAKER OPEN: 2 findings were admitted for containment"),
        "{:?}",
        report.notes
    );
    let metrics = report.emf_line(0);
    assert!(metrics.contains(r#""BreakerOpen":1"#), "{metrics}");
    // A republished finding already counted is not a new containment: it is not held back.
    let winner = reports.iter().position(contained).unwrap();
    let republished = world.respond(&world.miner_event(winner, 10 + winner)).await;
    assert!(
        republished.withheld.is_none(),
        "{}",
        republished.to_json_line()
    );
    let subjects: Vec<String> = world
        .notifications()
        .await
        .into_iter()
        .map(|n| n.subject)
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("NOT CONTAINED (breaker open)")),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn a_service_whose_count_cannot_be_read_is_not_contained_and_the_event_is_retried() {
    let world = World::with_playbooks(2, playbooks("{}")).await;
    world.proxy.configure(|c| {
        c.rules
            .push(FaultRule::new("DescribeServices", Fault::ServerError, None))
    });
    let response = world
        .responder
        .respond(
            None,
            world.miner_event(0, 3).to_string().as_bytes(),
            "unknown-count",
            None,
            None,
        )
        .await;
    let report = &response.report;
    assert!(response.retryable, "{}", report.to_json_line());
    assert!(matches!(
        outcome(report, "isolate"),
        Outcome::Failed {
            retryable: true,
            ..
        }
    ));
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);
    // People are told, now; the retry contains once the count can be read.
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .subject
            .contains("NOT CONTAINED (blast-radius guard)"),
        "{}",
        notes[0].subject
    );
    world.proxy.configure(|c| c.rules.clear());
    let retried = world.respond(&world.miner_event(0, 3)).await;
    assert!(contained(&retried), "{}", retried.to_json_line());
}

/// A republished finding whose task was contained before, arriving when the breaker is open
/// (a later window, full of other findings): the report says what is in force, not "not
/// contained".
#[tokio::test]
async fn an_open_breaker_does_not_hide_a_containment_already_in_force() {
    let world = World::with_playbooks(
        2,
        playbooks(
            "{blast_radius: {min_healthy: 0}, breaker: {max_containments: 1, window_minutes: 60}}",
        ),
    )
    .await;
    let first = world.respond(&world.miner_event(0, 20)).await;
    assert!(contained(&first), "{}", first.to_json_line());
    // A later window, already full with another finding.
    let ledger = responder::actions::ledger::Ledger::new(
        world.clients.dynamodb.clone(),
        &world.fixture.table,
        "test",
        1,
    );
    let breaker = responder::playbook::Breaker {
        max_containments: 1,
        window_minutes: 60,
    };
    let (window, ends) =
        responder::plan::guard::breaker_window(&breaker, chrono::Utc::now().timestamp());
    world
        .clients
        .dynamodb
        .delete_item()
        .table_name(&world.fixture.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("breaker".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("window#{window}")),
        )
        .send()
        .await
        .unwrap();
    ledger
        .admit_to_breaker(window, ends, "another-finding", 1)
        .await
        .unwrap();
    let republished = world.respond(&world.miner_event(0, 20)).await;
    assert_eq!(
        republished.withheld.as_ref().map(|w| w.by),
        Some(WithheldBy::Breaker)
    );
    let (subject, _) = republished.notification(None);
    assert!(subject.contains("contained:"), "{subject}");
    assert!(matches!(
        outcome(&republished, "isolate"),
        Outcome::Skipped {
            earlier: Some(_),
            ..
        }
    ));
    // A new finding is held back.
    let second = world.respond(&world.miner_event(1, 21)).await;
    assert!(!contained(&second));
    assert_eq!(
        second.withheld.as_ref().map(|w| w.by),
        Some(WithheldBy::Breaker)
    );
}
