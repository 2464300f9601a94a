//! Replays, republished findings, concurrent deliveries, retries and crashed invocations: each
//! step happens once.

use emulator::proxy::{Fault, FaultRule};
use std::time::{Duration, SystemTime};

use responder::actions::ledger::{Claim, Ledger};
use responder::network::reach::{DestinationClass, Verdict};
use responder::report::Outcome;
use serde_json::json;

use crate::support::{is_done, outcome, skipped_reason, until_lease_over, World};

#[tokio::test]
async fn a_retry_after_throttling_exhaustion_finishes_without_repeating() {
    let world = World::new(2).await;
    // S3 keeps throttling beyond the SDK's attempts: the run fails retryably.
    let writes = format!("PUT /{}/*", world.fixture.bucket);
    world
        .proxy
        .configure(|c| c.rules.push(FaultRule::new(&writes, Fault::Throttle, None)));
    let event = world.miner_event(0, 5);
    let first = world
        .responder
        .respond(None, event.to_string().as_bytes(), "try-1", None, None)
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
        .respond(None, event.to_string().as_bytes(), "try-2", None, None)
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
async fn twenty_replays_make_one_set_of_mutations() {
    let world = World::new(2).await;
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
    // Each replay's audit record goes in one write with its lock let go.
    assert_eq!(world.count_calls("PutItem"), 0);
    assert_eq!(world.count_calls("TransactWriteItems"), 20);
    let ledger = world.ledger_as("a-reader");
    assert_eq!(
        ledger.audits(&world.finding_id(8)).await.unwrap().len(),
        21,
        "one audit record per delivery"
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
    let world = World::new(2).await;
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
    // The one that stood back asks to be retried: had the other died, nobody would finish.
    let stood_back = if is_done(&a, "isolate") { &b } else { &a };
    assert!(
        stood_back.execution.as_ref().unwrap().retryable,
        "{}",
        stood_back.to_json_line()
    );
    // Its retry finds everything done and told: nothing more, and no further retry.
    let retry = world.respond_as(&event, "retry", None).await;
    assert!(
        !retry.execution.as_ref().unwrap().retryable,
        "{}",
        retry.to_json_line()
    );
    assert_eq!(world.notifications().await.len(), 0, "nothing new to tell");
}

/// An invocation dies while preserving evidence (Lambda's timeout, an OOM): its claims last
/// only until its deadline, so Lambda's retry finishes the work and tells people, once.
#[tokio::test]
async fn a_retry_after_a_crash_finishes_the_work_and_notifies_once() {
    let world = World::new(2).await;
    let event = world.miner_event(0, 40);
    // Hold the first evidence upload, as a hung call would; the invocation dies meanwhile.
    let uploads = format!("PUT /{}/*", world.fixture.bucket);
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            &uploads,
            Fault::Latency(Duration::from_secs(30)),
            Some(1),
        ))
    });
    let deadline = SystemTime::now() + Duration::from_secs(1);
    let dying = {
        let world = &world;
        let event = event.clone();
        async move {
            world
                .respond_until(&event, "dies", None, Some(deadline))
                .await
        }
    };
    let crashed = tokio::time::timeout(Duration::from_millis(1500), dying).await;
    assert!(
        crashed.is_err(),
        "the invocation was still at work when it died"
    );

    // A delivery while its claims are live stands back and asks to be retried.
    let early = world.respond_until(&event, "early", None, None).await;
    assert!(early.retryable, "{}", early.report.to_json_line());
    assert!(world.notifications().await.is_empty());

    // Lambda's retry comes after the claims expired (deadline + margin).
    until_lease_over(deadline).await;
    let retry = world
        .respond_until(
            &event,
            "retry",
            None,
            Some(SystemTime::now() + Duration::from_secs(60)),
        )
        .await;
    let report = &retry.report;
    assert!(!retry.retryable, "{}", report.to_json_line());
    assert!(skipped_reason(report, "isolate").starts_with("already done by invocation dies"));
    assert!(is_done(report, "evidence"), "{}", report.to_json_line());
    assert!(is_done(report, "notify"), "{}", report.to_json_line());
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1, "exactly one notification");
    assert!(
        notes[0].subject.contains("contained"),
        "{}",
        notes[0].subject
    );
    assert_eq!(
        world.count_calls("CreateNetworkAclEntry"),
        4,
        "isolated once"
    );
}

#[tokio::test]
async fn a_republished_finding_whose_severity_rose_runs_only_the_new_steps() {
    let world = World::new(2).await;
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
async fn a_crashed_invocations_claim_expires_and_the_retry_finishes_the_job() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let world = World::new(2).await;
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

/// The claims rest on DynamoDB's atomic conditional writes; the proxy gives moto's threaded
/// server the same guarantee. Many invocations claiming the same steps at once: one wins each.
#[tokio::test]
async fn concurrent_claims_of_one_step_have_exactly_one_winner() {
    // 96 claims at once: the proxy makes DynamoDB writes one at a time (moto's server is
    // threaded), and 300 of them queued past the SDK's attempt timeout on a loaded machine.
    const INVOCATIONS: usize = 8;
    const STEPS: usize = 12;
    let world = World::new(2).await;
    let ledgers: Vec<Ledger> = (0..INVOCATIONS)
        .map(|i| {
            Ledger::new(
                world.clients.dynamodb.clone(),
                world.fixture.table.clone(),
                format!("invocation-{i}"),
                400,
            )
        })
        .collect();
    let keys: Vec<String> = (0..STEPS).map(|s| format!("step#{s}")).collect();
    let claims = futures::future::join_all(keys.iter().flat_map(|key| {
        ledgers
            .iter()
            .map(move |l| async move { (key.clone(), l.claim("race-finding", key, "r").await) })
    }))
    .await;
    let failed: Vec<String> = claims
        .iter()
        .filter_map(|(k, c)| c.as_ref().err().map(|e| format!("{k}: {e}")))
        .collect();
    assert!(failed.is_empty(), "claims that got no answer: {failed:?}");
    for key in &keys {
        let won = claims
            .iter()
            .filter(|(k, c)| k == key && matches!(c, Ok(Claim::Acquired { .. })))
            .count();
        assert_eq!(won, 1, "{key}: {won} invocations claimed it");
    }
}

/// The SDK retries a claim whose answer was lost after DynamoDB wrote it: the claim is this
/// invocation's own, not "another invocation's". A step it finished stays finished.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_ours() {
    let world = World::new(2).await;
    world.proxy.configure(|c| {
        c.rules
            .push(FaultRule::new("UpdateItem", Fault::LostAnswer, Some(1)))
    });
    let ledger = Ledger::new(
        world.clients.dynamodb.clone(),
        world.fixture.table.clone(),
        "one-invocation",
        400,
    );
    let claim = ledger.claim("lost-answer", "step#evidence", "r").await;
    assert!(matches!(claim, Ok(Claim::Acquired { .. })), "{claim:?}");
    let attempts: Vec<u16> = world
        .proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "UpdateItem")
        .map(|c| c.status)
        .collect();
    assert_eq!(
        attempts,
        [500, 200],
        "the SDK retried a write that had taken effect"
    );
    ledger
        .finish(
            "lost-answer",
            "step#evidence",
            responder::actions::ledger::StepStatus::Done,
            &json!({}),
        )
        .await
        .unwrap();
    let again = ledger.claim("lost-answer", "step#evidence", "r").await;
    assert!(matches!(again, Ok(Claim::Taken(_))), "{again:?}");
}

/// A claim can carry the changes its step is about to make (known from reads made before
/// it): they are written down in the claim's own call, returned as written down, read once
/// when written again, and gone with the claim when it is given back.
#[tokio::test]
async fn a_claim_carries_what_its_step_will_change_and_it_is_not_written_twice() {
    use responder::actions::ledger::StepLog;
    let world = World::new(2).await;
    let ledger = Ledger::new(
        world.clients.dynamodb.clone(),
        world.fixture.table.clone(),
        "one-invocation",
        400,
    );
    let swap = json!({"eni_id": "eni-1", "original_groups": ["sg-app"], "quarantine_group": "sg-q", "untracking_group": "sg-u"});
    let other = json!({"eni_id": "eni-2", "original_groups": ["sg-app"], "quarantine_group": "sg-q", "untracking_group": "sg-u"});
    let claim = ledger
        .claim_with("carried", "step#isolate", "r", std::slice::from_ref(&swap))
        .await
        .unwrap();
    let (written_down, previous) = match claim {
        Claim::Acquired {
            written_down,
            previous,
        } => (written_down, previous),
        taken => panic!("{taken:?}"),
    };
    assert_eq!(written_down, std::slice::from_ref(&swap));
    let stored = ledger.get_step("carried", "step#isolate").await.unwrap();
    assert_eq!(stored.unwrap().intended, std::slice::from_ref(&swap));

    let log = StepLog {
        ledger: &ledger,
        written_down: &written_down,
        finding_id: "carried",
        step_key: "step#isolate",
    };
    // Written again (a retried claim carries them again): read once, in its latest place.
    log.intend(&[other.clone(), swap.clone()]).await.unwrap();
    let stored = ledger.get_step("carried", "step#isolate").await.unwrap();
    assert_eq!(stored.unwrap().intended, [other, swap]);

    // Given back as it was (no item): nothing is left written down.
    ledger
        .give_back("carried", "step#isolate", previous)
        .await
        .unwrap();
    assert!(ledger
        .get_step("carried", "step#isolate")
        .await
        .unwrap()
        .is_none());
}

/// Where Lambda kills an invocation: at a call, before it reaches AWS or after it took effect.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Before,
    After,
}

/// Lambda kills the invocation at each mutating step in turn (its timeout; an OOM), before the
/// call takes effect and after; retries come as Lambda's do, after the dead invocation's claims
/// ended. Every step ends done, no quarantine entry is made twice (a step the kill interrupted
/// runs again: evidence objects it had written get a second version), and people are told: exactly once,
/// except when the kill fell between SNS accepting the message and the ledger recording it,
/// where the retry cannot know and tells again (at least once, never lost).
#[tokio::test]
async fn an_invocation_killed_at_any_step_is_finished_by_its_retries() {
    let cases = [
        ("CreateNetworkAclEntry", Kill::Before),
        ("CreateNetworkAclEntry", Kill::After),
        ("PUT /", Kill::Before),
        ("PUT /", Kill::After),
        ("TagResource", Kill::Before),
        ("TagResource", Kill::After),
        ("Publish", Kill::Before),
        ("Publish", Kill::After),
    ];
    let runs = cases
        .iter()
        .map(|&(operation, kill)| killed_at(operation, kill));
    let failures: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One kill and its retries; `Some(why)` when the outcome is wrong.
async fn killed_at(operation: &str, kill: Kill) -> Option<String> {
    let world = World::new(2).await;
    let case = format!("killed {kill:?} {operation}");
    let event = world.miner_event(0, 41);
    let operation = match operation {
        "PUT /" => format!("PUT /{}/*", world.fixture.bucket),
        other => other.to_string(),
    };
    let hang = Duration::from_secs(30);
    let fault = match kill {
        Kill::Before => Fault::Latency(hang),
        Kill::After => Fault::HangAfter(hang),
    };
    world
        .proxy
        .configure(|c| c.rules.push(FaultRule::new(&operation, fault, Some(1))));
    // Within 10 s of its deadline the invocation writes its changes down before making them,
    // the one death it sees coming; Lambda kills it once the call is reached (not at a fixed
    // time: on a loaded machine the call may come later), after a held call took effect.
    let deadline = SystemTime::now() + Duration::from_secs(5);
    let dying = world.respond_until(&event, "killed", None, Some(deadline));
    let reached = async {
        loop {
            let mut held = false;
            world
                .proxy
                .configure(|c| held = c.rules.iter().all(|r| r.times == Some(0)));
            if held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let killed = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            _ = dying => false,
            () = reached => true,
        }
    });
    match killed.await {
        Ok(true) => {}
        Ok(false) => return Some(format!("{case}: the invocation never reached the call")),
        Err(_) => return Some(format!("{case}: neither the call nor the end came in 30 s")),
    }
    until_lease_over(deadline).await;
    let mut last = None;
    let mut history = Vec::new();
    for attempt in 1..=3 {
        let retry = world
            .respond_until(
                &event,
                &format!("retry-{attempt}"),
                None,
                Some(SystemTime::now() + Duration::from_secs(60)),
            )
            .await;
        let retryable = retry.retryable;
        history.push(retry.report.to_json_line());
        last = Some(retry.report);
        if !retryable {
            break;
        }
    }
    let report = last?;
    let json = report.to_json_line();
    for step in ["isolate", "evidence", "tag", "notify"] {
        let finished =
            is_done(&report, step) || skipped_reason(&report, step).starts_with("already done");
        if !finished {
            return Some(format!("{case}: {step} did not end done: {json}"));
        }
    }
    if report.execution.as_ref().is_some_and(|e| e.retryable) {
        return Some(format!(
            "{case}: still retryable after three retries: {json}"
        ));
    }
    // Made once: the quarantine's four entries, no more (the model judges them below).
    let ours: Vec<_> = world
        .acl_state()
        .await
        .into_iter()
        .filter(|e| e["rule"].as_i64().is_some_and(|r| (1..=99).contains(&r)))
        .collect();
    if ours.len() != 4 {
        return Some(format!(
            "{case}: {} quarantine entries: {ours:?}",
            ours.len()
        ));
    }
    let open: Vec<_> = world
        .reachability(0)
        .await
        .into_iter()
        .filter(|r| {
            r.verdict == Verdict::Open
                && !matches!(
                    r.class,
                    DestinationClass::SameSubnet
                        | DestinationClass::Dns
                        | DestinationClass::LinkLocalServices
                )
        })
        .collect();
    if !open.is_empty() {
        return Some(format!("{case}: still reachable: {open:?}"));
    }
    let notes = world.notifications().await;
    let told = notes
        .iter()
        .filter(|n| n.subject.contains("contained"))
        .count();
    let allowed = match (operation.as_str(), kill) {
        ("Publish", Kill::After) => 1..=2,
        _ => 1..=1,
    };
    if !allowed.contains(&notes.len()) || told != notes.len() {
        let subjects: Vec<_> = notes.iter().map(|n| n.subject.clone()).collect();
        return Some(format!(
            "{case}: notifications {subjects:?} after {}",
            history.join("\n")
        ));
    }
    None
}

/// Steps' outcomes written together are one transaction, and so is the end of a response
/// (notify's outcome, the lock let go, the audit record); refused, or an answer lost, the
/// same writes are made one at a time: every outcome is recorded, the lock let go, one audit
/// record written, and a second delivery finds everything done.
#[tokio::test]
async fn the_end_of_a_response_is_written_whatever_its_transaction_does() {
    // The first transaction writes the evidence's and the tag's outcomes, the second the
    // response's end; an SDK retry of a lost answer is a matching call too.
    let cases = [Fault::Refuse("AccessDeniedException"), Fault::LostAnswer]
        .into_iter()
        .flat_map(|fault| [1, 2, 3].map(|times| (fault, times)));
    for (n, (fault, times)) in cases.enumerate() {
        let world = World::new(2).await;
        world.proxy.configure(|c| {
            c.rules
                .push(FaultRule::new("TransactWriteItems", fault, Some(times)))
        });
        let finding = 30 + n;
        let report = world.respond(&world.miner_event(0, finding)).await;
        assert!(is_done(&report, "notify"), "{}", report.to_json_line());
        let execution = report.execution.as_ref().unwrap();
        assert!(
            execution.audit.is_some(),
            "{fault:?}: {}",
            report.to_json_line()
        );
        let ledger = world.ledger_as("a-reader");
        let id = world.finding_id(finding);
        let steps = ledger.steps(&id).await.unwrap();
        assert_eq!(steps.len(), 4, "{fault:?}: {steps:?}");
        assert!(
            steps
                .iter()
                .all(|s| s.status == responder::actions::ledger::StepStatus::Done),
            "{fault:?}: {steps:?}"
        );
        assert_eq!(ledger.audits(&id).await.unwrap().len(), 1, "{fault:?}");

        // The lock was let go: the next delivery is not held back, and has nothing to do.
        let again = world.respond(&world.miner_event(0, finding)).await;
        assert!(
            skipped_reason(&again, "notify").starts_with("already notified"),
            "{fault:?}: {}",
            again.to_json_line()
        );
        assert_eq!(ledger.audits(&id).await.unwrap().len(), 2, "{fault:?}");
    }
}

/// DynamoDB refuses a write to an item a transaction is writing (TransactionConflict), for
/// the milliseconds the transaction takes, and the SDK does not retry that: a claim meeting
/// one is tried again, and a delivery whose lock stays caught asks to be retried, as one that
/// finds the lock held does.
#[tokio::test]
async fn a_claim_caught_in_a_transaction_is_tried_again() {
    for (conflicts, finding) in [(1, 40), (5, 41)] {
        let world = World::new(2).await;
        world.proxy.configure(|c| {
            c.rules.push(FaultRule::new(
                "UpdateItem",
                Fault::Refuse("TransactionConflictException"),
                Some(conflicts),
            ))
        });
        let event = world.miner_event(0, finding);
        let response = world
            .responder
            .respond(None, event.to_string().as_bytes(), "conflicted", None, None)
            .await;
        let report = &response.report;
        if conflicts == 1 {
            assert!(!response.retryable, "{}", report.to_json_line());
            assert!(is_done(report, "isolate"), "{}", report.to_json_line());
        } else {
            assert!(response.retryable, "{}", report.to_json_line());
            assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);
            let retried = world.respond(&event).await;
            assert!(is_done(&retried, "isolate"), "{}", retried.to_json_line());
        }
    }
}
