//! Isolation against the emulator: which rung applies, the entries and groups it leaves, what
//! it does when the ACL is full, the GuardDuty agent's path, deregistration, gone workloads.

use emulator::proxy::{Fault, FaultRule};
use responder::actions::isolate::{IsolateOutput, IsolationRung};
use responder::actions::StepOutput;
use responder::network::reach::{DestinationClass, Reachability, Verdict};
use responder::playbook::PlaybookSet;
use responder::report::{DecisionKind, Outcome};
use serde_json::Value;

use crate::support::{is_done, isolation, outcome, output, released, retryable_isolation, World};

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

    let record = isolation(&report);
    assert_eq!(record.rung, Some(IsolationRung::NaclQuarantine));
    assert_eq!(record.attempts[0].rung, IsolationRung::SgSwap);
    assert_eq!(
        record.attempts[0].result, "not_applicable",
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
    let row = |class: DestinationClass| {
        record
            .reachability
            .iter()
            .find(|r| r.class == class)
            .unwrap_or_else(|| panic!("no {class:?} row"))
    };
    assert_eq!(row(DestinationClass::OtherSubnets).verdict, Verdict::Cut);
    let same = row(DestinationClass::SameSubnet);
    assert_eq!(
        same.verdict,
        Verdict::Open,
        "a network ACL cannot cut its own subnet"
    );
    assert!(same.reason.contains("own subnet"), "{}", same.reason);
}

#[tokio::test]
async fn an_instance_eni_gets_the_two_step_security_group_swap_and_release_restores_it() {
    let world = World::new(2).await;
    let (instance_id, eni_id) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let event = world.instance_event(&instance_id, &eni_id, 7);
    // The new quarantine group's default egress rule is said to be gone already when revoked
    // (as when another invocation made the group right first): the group is read again and
    // the rule revoked then, not trusted gone.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "RevokeSecurityGroupEgress",
            Fault::Refuse("InvalidPermission.NotFound"),
            Some(1),
        ))
    });
    let report = world.respond(&event).await;
    world.proxy.configure(|c| c.rules.clear());
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let revokes = world
        .proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "RevokeSecurityGroupEgress")
        .count();
    assert_eq!(
        revokes, 2,
        "the refused revoke, then the one made after reading the group"
    );
    let record = isolation(&report);
    assert_eq!(record.rung, Some(IsolationRung::SgSwap));
    let swap = &record.sg_swaps[0];
    assert_eq!(swap.eni_id, eni_id);
    assert_eq!(
        swap.original_groups,
        vec![world.fixture.app_security_group.clone()]
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
    assert_eq!(groups, vec![swap.quarantine_group.clone()]);
    let quarantine = world
        .clients
        .ec2
        .describe_security_groups()
        .group_ids(&swap.quarantine_group)
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

    let summary = world
        .responder
        .release(&world.finding_id(7), "release-test")
        .await
        .unwrap();
    assert_eq!(released(&summary).restored_security_groups.len(), 1);
    let groups = world.eni_groups(&eni_id).await;
    assert_eq!(groups, [world.fixture.app_security_group.as_str()]);
}

/// The group swaps finding `n`'s isolate step has written down (and not taken back).
async fn written_swaps(world: &World, n: usize) -> Vec<responder::actions::isolate::SgSwap> {
    let ledger = responder::actions::ledger::Ledger::new(
        world.clients.dynamodb.clone(),
        world.fixture.table.clone(),
        "reader",
        60,
    );
    let step = ledger
        .get_step(&world.finding_id(n), "step#isolate")
        .await
        .unwrap()
        .unwrap();
    step.intended
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}

/// With the responder's groups in place in the VPC, an instance's swap is written down with
/// the isolate step's claim (the instance and the groups are read in the same round trip as
/// the response lock): no ledger write of its own before the first swap. The record is whole
/// all the same: a swap EC2 refuses is put back, and the retry's swap is released.
#[tokio::test]
async fn with_the_groups_in_place_an_instance_swap_is_written_down_with_the_claim() {
    let world = World::new(2).await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            emulator::fixture::launch_instance(&world.clients, &world.fixture)
                .await
                .unwrap(),
        );
    }
    let app = world.fixture.app_security_group.clone();
    let mut ledger_writes = Vec::new();
    for (n, (instance, eni)) in instances[..2].iter().enumerate() {
        world.proxy.clear_calls();
        let report = world.respond(&world.instance_event(instance, eni, n)).await;
        assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
        ledger_writes.push(world.count_calls("UpdateItem"));
    }
    assert_eq!(
        ledger_writes[1],
        ledger_writes[0] - 1,
        "the first response made the groups and wrote its swap down apart; the second wrote it with the claim"
    );

    // The third instance's first swap is refused: the step fails, the groups are put back,
    // and the swap its claim wrote down is taken back (never made).
    let (instance, eni) = &instances[2];
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "ModifyNetworkInterfaceAttribute",
            Fault::Refuse("UnauthorizedOperation"),
            Some(1),
        ))
    });
    let report = world.respond(&world.instance_event(instance, eni, 2)).await;
    assert!(!is_done(&report, "isolate"), "{}", report.to_json_line());
    world.proxy.configure(|c| c.rules.clear());
    assert_eq!(world.eni_groups(eni).await, [app.as_str()]);
    assert!(written_swaps(&world, 2).await.is_empty());

    // Another finding about the instance quarantines it; releasing the failed one leaves that
    // quarantine alone; releasing the other puts the groups back.
    let report = world.respond(&world.instance_event(instance, eni, 3)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let swap = &isolation(&report).sg_swaps[0];
    let quarantined = [swap.quarantine_group.as_str()];
    assert_eq!(world.eni_groups(eni).await, quarantined);
    let _ = world
        .responder
        .release(&world.finding_id(2), "release-test")
        .await;
    assert_eq!(world.eni_groups(eni).await, quarantined);
    let summary = world
        .responder
        .release(&world.finding_id(3), "release-test")
        .await
        .unwrap();
    assert_eq!(released(&summary).restored_security_groups.len(), 1);
    assert_eq!(world.eni_groups(eni).await, [app.as_str()]);

    // A swap whose every answer is lost (made, then reported failed) and whose put-back is
    // too: the written-down swap stays (it may stand), and release can undo it.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "ModifyNetworkInterfaceAttribute",
            Fault::LostAnswer,
            Some(1_000),
        ))
    });
    let report = world.respond(&world.instance_event(instance, eni, 4)).await;
    assert!(!is_done(&report, "isolate"), "{}", report.to_json_line());
    world.proxy.configure(|c| c.rules.clear());
    let written = written_swaps(&world, 4).await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(&written[0].eni_id, eni);
}

/// Two findings about one instance, handled at once: each response swaps the groups, and one's
/// first swap lands after the other's quarantine swap (here: delayed by the proxy), so the
/// other reads back the untracking group. It sets the quarantine group again rather than
/// taking the allow-all group for someone else's change: the instance ends quarantined, never
/// with its own groups put back or the allow-all group left on.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_first_swap_landing_after_another_response_quarantine_is_quarantined_again() {
    let world = std::sync::Arc::new(World::new(2).await.without_guard());
    let (instance, eni) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let app = world.fixture.app_security_group.clone();
    let ms = std::time::Duration::from_millis;
    // The first swap sent waits 600 ms; the other response's two swaps go through; the
    // first's quarantine swap waits 1,200 ms more. Every describe of interfaces waits 1 s, so
    // the other response reads its groups back between the late first swap and its
    // quarantine swap.
    world.proxy.configure(|c| {
        c.rules.extend([
            FaultRule::new(
                "ModifyNetworkInterfaceAttribute",
                Fault::Latency(ms(600)),
                Some(1),
            ),
            FaultRule::new(
                "ModifyNetworkInterfaceAttribute",
                Fault::Latency(ms(0)),
                Some(2),
            ),
            FaultRule::new(
                "ModifyNetworkInterfaceAttribute",
                Fault::Latency(ms(1_200)),
                Some(1),
            ),
            FaultRule::new("DescribeNetworkInterfaces", Fault::Latency(ms(1_000)), None),
        ])
    });
    let runs: Vec<_> = [20, 21]
        .into_iter()
        .map(|finding| {
            let world = std::sync::Arc::clone(&world);
            let event = world.instance_event(&instance, &eni, finding);
            tokio::spawn(async move { world.respond(&event).await })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await.unwrap());
    }
    world.proxy.configure(|c| c.rules.clear());
    for report in &reports {
        assert!(is_done(report, "isolate"), "{}", report.to_json_line());
        assert_eq!(
            isolation(report).sg_swaps[0].original_groups,
            std::slice::from_ref(&app)
        );
    }
    let quarantine = isolation(&reports[0]).sg_swaps[0].quarantine_group.clone();
    assert_eq!(world.eni_groups(&eni).await, [quarantine.as_str()]);
    let set_again = reports
        .iter()
        .flat_map(|r| isolation(r).notes.iter())
        .filter(|n| n.contains("quarantine group was set again"))
        .count();
    assert_eq!(
        set_again,
        1,
        "{:#?}",
        reports
            .iter()
            .map(|r| &isolation(r).notes)
            .collect::<Vec<_>>()
    );
    for finding in [20, 21] {
        world
            .responder
            .release(&world.finding_id(finding), "release-test")
            .await
            .unwrap();
    }
    assert_eq!(world.eni_groups(&eni).await, [app.as_str()]);
}

/// Someone else changes the interface's groups after both swaps (here: the test, while the
/// read-back is held at the proxy): the read-back finds a group that is not the responder's,
/// reads once more, and then puts the workload's groups back and fails, taking back the swap
/// it wrote down; it never reports a quarantine that does not stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_group_changed_by_someone_else_after_the_swaps_is_put_back_and_said() {
    someone_else_after_the_swaps(false).await
}

/// The same group taken off again before the read-back is made once more: the first read
/// lagged or the change was brief; the quarantine stands and the step is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_group_gone_again_by_the_second_read_back_leaves_the_quarantine_standing() {
    someone_else_after_the_swaps(true).await
}

async fn someone_else_after_the_swaps(undone_before_the_second_read: bool) {
    let world = World::new(2).await;
    let (instance, eni) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let app = world.fixture.app_security_group.clone();
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "DescribeNetworkInterfaces",
            Fault::Latency(std::time::Duration::from_millis(1_500)),
            None,
        ))
    });
    let event = world.instance_event(&instance, &eni, 30);
    let meddle = async {
        // Once both swaps are answered, an operator puts the workload's group beside ours.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while world.count_calls("ModifyNetworkInterfaceAttribute") < 2 {
            assert!(std::time::Instant::now() < deadline, "the swaps never came");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The read-back goes out now and is held 1.5 s at the proxy.
        let described = world.count_calls("DescribeNetworkInterfaces");
        // (Interfaces are described slowly here: the quarantine group is found by its tag.)
        let quarantine = world
            .clients
            .ec2
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:incident-responder:role")
                    .values("quarantine")
                    .build(),
            )
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("vpc-id")
                    .values(&world.fixture.vpc_id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let quarantine = quarantine.security_groups()[0]
            .group_id()
            .unwrap()
            .to_string();
        world
            .clients
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(&eni)
            .groups(&quarantine)
            .groups(&app)
            .send()
            .await
            .unwrap();
        if undone_before_the_second_read {
            // Taken off once the first read-back is answered, before the second one is sent.
            while world.count_calls("DescribeNetworkInterfaces") == described {
                assert!(std::time::Instant::now() < deadline, "no read-back");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            world
                .clients
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(&eni)
                .groups(&quarantine)
                .send()
                .await
                .unwrap();
        }
        quarantine
    };
    let (report, quarantine) = tokio::join!(world.respond(&event), meddle);
    world.proxy.configure(|c| c.rules.clear());
    if undone_before_the_second_read {
        assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
        assert_eq!(world.eni_groups(&eni).await, [quarantine.as_str()]);
        let calls = world.proxy.calls();
        let second_swap = calls
            .iter()
            .filter(|c| c.operation == "ModifyNetworkInterfaceAttribute")
            .map(|c| c.answered)
            .nth(1)
            .unwrap();
        let read_back = calls
            .iter()
            .filter(|c| c.operation == "DescribeNetworkInterfaces" && c.received > second_swap)
            .count();
        assert!(read_back >= 2, "the groups read back twice: {read_back}");
        return;
    }
    match outcome(&report, "isolate") {
        Outcome::Failed { error, .. } => {
            assert!(error.contains("someone else is changing it"), "{error}")
        }
        other => panic!("isolate should fail: {other:?}"),
    }
    assert_eq!(world.eni_groups(&eni).await, [app.as_str()]);
    assert!(written_swaps(&world, 30).await.is_empty());
}

/// An instance's stateless ACL entries (what the swap cannot end) are made alongside the
/// group swaps, not after them: with every swap slow, the entries are all answered before the
/// second swap is. A swap EC2 refuses then leaves the entries standing and said: the step
/// fails with them on record, the groups are put back, and release takes the entries out.
#[tokio::test]
async fn an_instances_acl_entries_go_in_alongside_its_swaps_and_stand_if_the_swap_is_refused() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(
            emulator::fixture::launch_instance(&world.clients, &world.fixture)
                .await
                .unwrap(),
        );
    }
    let app = world.fixture.app_security_group.clone();
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "ModifyNetworkInterfaceAttribute",
            Fault::Latency(std::time::Duration::from_millis(500)),
            None,
        ))
    });
    let (instance, eni) = &instances[0];
    let report = world
        .respond(&world.instance_event(instance, eni, 40))
        .await;
    world.proxy.configure(|c| c.rules.clear());
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert!(!isolation(&report).nacl_entries.is_empty());
    let calls = world.proxy.calls();
    let second_swap = calls
        .iter()
        .filter(|c| c.operation == "ModifyNetworkInterfaceAttribute")
        .map(|c| c.answered)
        .nth(1)
        .unwrap();
    let entries: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "CreateNetworkAclEntry")
        .collect();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|c| c.answered < second_swap),
        "the entries waited for the swaps"
    );
    world
        .responder
        .release(&world.finding_id(40), "release-test")
        .await
        .unwrap();

    // The second instance's swap is refused: the entries stand, on record.
    let (instance, eni) = &instances[1];
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "ModifyNetworkInterfaceAttribute",
            Fault::Refuse("UnauthorizedOperation"),
            Some(1),
        ))
    });
    let report = world
        .respond(&world.instance_event(instance, eni, 41))
        .await;
    world.proxy.configure(|c| c.rules.clear());
    let record = match outcome(&report, "isolate") {
        Outcome::Failed {
            error,
            partial: Some(StepOutput::Isolate(IsolateOutput::Incomplete { record, .. })),
            ..
        } => {
            assert!(error.contains("security-group swap failed"), "{error}");
            record.clone()
        }
        other => panic!("the swap was refused, the entries kept: {other:?}"),
    };
    assert!(record.sg_swaps.is_empty());
    assert!(!record.nacl_entries.is_empty());
    assert_eq!(record.rung, Some(IsolationRung::NaclQuarantine));
    assert_eq!(world.eni_groups(eni).await, [app.as_str()]);
    assert_ne!(world.acl_state().await, before);
    world
        .responder
        .release(&world.finding_id(41), "release-test")
        .await
        .unwrap();
    assert_eq!(
        world.acl_state().await,
        before,
        "release takes the entries out"
    );
}

/// A retryable error in either of an instance's rungs, once the other has changed something,
/// fails the step retryably with those changes on record: Lambda's retry finishes the job,
/// adopting them (no entry or swap made twice), and release undoes them meanwhile.
#[tokio::test]
async fn a_throttled_rung_beside_a_made_one_is_retried_with_the_changes_on_record() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let app = world.fixture.app_security_group.clone();
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(
            emulator::fixture::launch_instance(&world.clients, &world.fixture)
                .await
                .unwrap(),
        );
    }
    let respond = async |n: usize, invocation: &str| {
        let (instance, eni) = &instances[n];
        let event = world.instance_event(instance, eni, 50 + n);
        world
            .responder
            .respond(None, event.to_string().as_bytes(), invocation, None, None)
            .await
    };

    // The first instance's swaps are throttled past the SDK's attempts; its entries go in.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "ModifyNetworkInterfaceAttribute",
            Fault::Throttle,
            None,
        ))
    });
    let first = respond(0, "swap-1").await;
    world.proxy.configure(|c| c.rules.clear());
    assert!(first.retryable, "{}", first.report.to_json_line());
    let record = retryable_isolation(&first.report).0.clone();
    // Its put-back was throttled too: the swap is on record as one that may stand.
    assert_eq!(record.sg_swaps.len(), 1);
    assert!(
        record
            .notes
            .iter()
            .any(|n| n.contains("could not be put back")),
        "{:?}",
        record.notes
    );
    let entries = record.nacl_entries.len();
    assert!(entries > 0);
    assert_eq!(world.eni_groups(&instances[0].1).await, [app.as_str()]);
    let again = respond(0, "swap-2").await;
    assert!(
        is_done(&again.report, "isolate"),
        "{}",
        again.report.to_json_line()
    );
    let record = isolation(&again.report);
    assert_eq!(record.rung, Some(IsolationRung::SgSwap));
    assert_eq!(record.nacl_entries.len(), entries, "the entries adopted");
    assert_eq!(
        world.count_calls("CreateNetworkAclEntry"),
        entries,
        "no entry made twice"
    );
    assert_eq!(
        world.eni_groups(&instances[0].1).await,
        [record.sg_swaps[0].quarantine_group.as_str()]
    );
    world
        .responder
        .release(&world.finding_id(50), "release-test")
        .await
        .unwrap();
    assert_eq!(world.acl_state().await, before);
    assert_eq!(world.eni_groups(&instances[0].1).await, [app.as_str()]);

    // The second instance's entries are throttled; its swaps go in and are on record.
    world.proxy.clear_calls();
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "CreateNetworkAclEntry",
            Fault::Throttle,
            None,
        ))
    });
    let first = respond(1, "acl-1").await;
    world.proxy.configure(|c| c.rules.clear());
    assert!(first.retryable, "{}", first.report.to_json_line());
    let record = retryable_isolation(&first.report).0.clone();
    assert_eq!(record.sg_swaps.len(), 1, "{record:?}");
    assert!(record.nacl_entries.is_empty());
    let quarantine = record.sg_swaps[0].quarantine_group.clone();
    assert_eq!(
        world.eni_groups(&instances[1].1).await,
        [quarantine.as_str()]
    );
    let swaps = world.count_calls("ModifyNetworkInterfaceAttribute");
    let again = respond(1, "acl-2").await;
    assert!(
        is_done(&again.report, "isolate"),
        "{}",
        again.report.to_json_line()
    );
    let record = isolation(&again.report);
    assert_eq!(record.sg_swaps.len(), 1);
    assert!(!record.nacl_entries.is_empty());
    assert_eq!(
        world.count_calls("ModifyNetworkInterfaceAttribute"),
        swaps + 1,
        "the quarantine group set again (it needs no read to be right), no untracking swap"
    );
    world
        .responder
        .release(&world.finding_id(51), "release-test")
        .await
        .unwrap();
    assert_eq!(world.acl_state().await, before);
    assert_eq!(world.eni_groups(&instances[1].1).await, [app.as_str()]);
}

/// The responder's group in `vpc_id` with this role, found by its tag.
async fn responder_group(world: &World, role: &str) -> String {
    let found = world
        .clients
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:incident-responder:role")
                .values(role)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&world.fixture.vpc_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    found.security_groups()[0].group_id().unwrap().to_string()
}

/// Waits until `n` calls of `operation` have been answered.
async fn answered(world: &World, operation: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while world.count_calls(operation) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{operation} never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Both swaps answered and the groups' read-back refused: the swaps stand (EC2 answered
/// them), the step is done, and the record says the groups were not read back.
#[tokio::test]
async fn a_read_back_that_cannot_be_made_leaves_the_answered_swaps_standing_and_said() {
    let world = World::new(2).await;
    let (instance, eni) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    // The second swap answers a second late: the read-back comes after it.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::share(
            "ModifyNetworkInterfaceAttribute",
            Fault::Latency(std::time::Duration::from_secs(1)),
            2,
        ))
    });
    let refuse_the_read_back = async {
        answered(&world, "ModifyNetworkInterfaceAttribute", 1).await;
        world.proxy.configure(|c| {
            c.rules.push(FaultRule::new(
                "DescribeNetworkInterfaces",
                Fault::Refuse("UnauthorizedOperation"),
                Some(1),
            ))
        });
    };
    let event = world.instance_event(&instance, &eni, 70);
    let (report, ()) = tokio::join!(world.respond(&event), refuse_the_read_back);
    world.proxy.configure(|c| c.rules.clear());
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let record = isolation(&report);
    assert!(
        record
            .notes
            .iter()
            .any(|n| n.contains("not read back after the swap")),
        "{:?}",
        record.notes
    );
    assert_eq!(
        world.eni_groups(&eni).await,
        [record.sg_swaps[0].quarantine_group.as_str()]
    );
}

/// The read-back finds the untracking group again (as when another response's first swap
/// lands after our quarantine) and setting the quarantine group again is throttled: the step
/// fails retryably with the swap on record and says the interface may carry either group;
/// nothing is put back. The retry sets the quarantine group alone (the untracking swap is not
/// made again) and is done.
#[tokio::test]
async fn a_throttled_second_setting_of_the_quarantine_group_is_on_record_and_retried() {
    let world = World::new(2).await;
    let (instance, eni) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let app = world.fixture.app_security_group.clone();
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::share(
            "ModifyNetworkInterfaceAttribute",
            Fault::Latency(std::time::Duration::from_secs(1)),
            2,
        ))
    });
    let event = world.instance_event(&instance, &eni, 71).to_string();
    let untrack_again = async {
        answered(&world, "ModifyNetworkInterfaceAttribute", 1).await;
        // The read-back after the second swap waits a second at the proxy.
        world.proxy.configure(|c| {
            c.rules.push(FaultRule::new(
                "DescribeNetworkInterfaces",
                Fault::Latency(std::time::Duration::from_secs(1)),
                Some(1),
            ))
        });
        let untracking = responder_group(&world, "untracking").await;
        answered(&world, "ModifyNetworkInterfaceAttribute", 2).await;
        world
            .clients
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(&eni)
            .groups(&untracking)
            .send()
            .await
            .unwrap();
        world.proxy.configure(|c| {
            c.rules
                .retain(|r| r.operation != "ModifyNetworkInterfaceAttribute");
            c.rules.push(FaultRule::new(
                "ModifyNetworkInterfaceAttribute",
                Fault::Throttle,
                None,
            ))
        });
        untracking
    };
    let (first, untracking) = tokio::join!(
        world
            .responder
            .respond(None, event.as_bytes(), "again-1", None, None),
        untrack_again
    );
    world.proxy.configure(|c| c.rules.clear());
    assert!(first.retryable, "{}", first.report.to_json_line());
    let record = retryable_isolation(&first.report).0.clone();
    assert_eq!(record.sg_swaps.len(), 1, "{record:?}");
    assert_eq!(record.sg_swaps[0].original_groups, [app.as_str()]);
    assert!(
        record
            .notes
            .iter()
            .any(|n| n.contains("could not be put back")),
        "{:?}",
        record.notes
    );
    assert_eq!(world.eni_groups(&eni).await, [untracking.as_str()]);

    let swaps = world.count_calls("ModifyNetworkInterfaceAttribute");
    let again = world
        .responder
        .respond(None, event.as_bytes(), "again-2", None, None)
        .await;
    assert!(
        is_done(&again.report, "isolate"),
        "{}",
        again.report.to_json_line()
    );
    let quarantine = isolation(&again.report).sg_swaps[0]
        .quarantine_group
        .clone();
    assert_eq!(world.eni_groups(&eni).await, [quarantine.as_str()]);
    assert_eq!(
        world.count_calls("ModifyNetworkInterfaceAttribute"),
        swaps + 1,
        "the quarantine group alone, no untracking swap again"
    );
    world
        .responder
        .release(&world.finding_id(71), "release-test")
        .await
        .unwrap();
    assert_eq!(world.eni_groups(&eni).await, [app.as_str()]);
}

/// An instance's interfaces EC2 will not describe by instance (a refused or failing call;
/// an attachment the describe does not show yet) are described by id, never taken as
/// modifiable unread: the instance is isolated all the same.
#[tokio::test]
async fn interfaces_not_described_by_instance_are_described_by_id() {
    let world = World::new(2).await;
    let (instance, eni) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "DescribeNetworkInterfaces",
            Fault::Refuse("UnauthorizedOperation"),
            Some(1),
        ))
    });
    let report = world
        .respond(&world.instance_event(&instance, &eni, 1))
        .await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let refused = world
        .proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "DescribeNetworkInterfaces" && c.status >= 400)
        .count();
    assert_eq!(refused, 1);
    let swap = &isolation(&report).sg_swaps[0];
    assert_eq!(swap.eni_id, eni);
    assert_eq!(
        world.eni_groups(&eni).await,
        [swap.quarantine_group.as_str()]
    );
}

/// The entries are verified by describing the ACLs again; a verification read throttled past
/// the SDK's attempts fails the step retryably with the entries on record (release could take
/// them out), and the retry adopts them (none made twice) and verifies.
#[tokio::test]
async fn a_throttled_verification_is_retried_with_the_entries_on_record() {
    let world = World::new(2).await;
    // Every other entry answers a second late: the verification's read comes after it.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::share(
            "CreateNetworkAclEntry",
            Fault::Latency(std::time::Duration::from_secs(1)),
            2,
        ))
    });
    let event = world.miner_event(0, 60).to_string();
    let throttle_the_verification = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while world.count_calls("CreateNetworkAclEntry") == 0 {
            assert!(std::time::Instant::now() < deadline, "no entry made");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        world.proxy.configure(|c| {
            c.rules
                .push(FaultRule::new("DescribeNetworkAcls", Fault::Throttle, None))
        });
    };
    let (first, ()) = tokio::join!(
        world
            .responder
            .respond(None, event.as_bytes(), "verify-1", None, None),
        throttle_the_verification
    );
    world.proxy.configure(|c| c.rules.clear());
    assert!(first.retryable, "{}", first.report.to_json_line());
    let (record, _, why) = retryable_isolation(&first.report);
    assert!(why.contains("not confirmed cut"), "{why}");
    let entries = record.nacl_entries.clone();
    assert_eq!(entries.len(), 4);
    let again = world
        .responder
        .respond(None, event.as_bytes(), "verify-2", None, None)
        .await;
    assert!(
        is_done(&again.report, "isolate"),
        "{}",
        again.report.to_json_line()
    );
    assert_eq!(
        isolation(&again.report).nacl_entries,
        entries,
        "the entries adopted"
    );
    assert_eq!(
        world.count_calls("CreateNetworkAclEntry"),
        4,
        "none made twice"
    );
}

/// A create whose answer is lost after EC2 made the entry (here a 5xx after the write; a
/// timeout is the same) is tried again and refused as `NetworkAclEntryAlreadyExists`. The
/// entry, as planned at its number, is this response's, not another's: four entries, all on
/// record, and release leaves the ACLs as they were (no entry made and left unrecorded).
#[tokio::test]
async fn an_entry_whose_answer_was_lost_is_this_responses_own() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "CreateNetworkAclEntry",
            Fault::LostAnswer,
            Some(1),
        ))
    });
    let report = world.respond(&world.miner_event(0, 80)).await;
    world.proxy.configure(|c| c.rules.clear());
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert_eq!(isolation(&report).nacl_entries.len(), 4);
    assert_eq!(world.quarantine_entries().await, 4, "no entry made twice");
    world
        .responder
        .release(&world.finding_id(80), "release-test")
        .await
        .unwrap();
    assert_eq!(world.acl_state().await, before, "none left behind");
}

/// As above, but the read that would settle it is refused: whether the entry was made is not
/// known. It stays written down and on record, the others are rolled back, and the step fails
/// retryably; the retry adopts it (none made twice), and release leaves the ACLs as they were.
#[tokio::test]
async fn an_entry_whose_making_cannot_be_settled_stays_on_record_and_is_retried() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "CreateNetworkAclEntry",
            Fault::LostAnswer,
            Some(1),
        ))
    });
    let event = world.miner_event(0, 81).to_string();
    let refuse_the_settling_read = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !world
            .proxy
            .calls()
            .iter()
            .any(|c| c.operation == "CreateNetworkAclEntry" && c.status >= 500)
        {
            assert!(std::time::Instant::now() < deadline, "no lost answer");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        world.proxy.configure(|c| {
            c.rules.push(FaultRule::new(
                "DescribeNetworkAcls",
                Fault::Refuse("UnauthorizedOperation"),
                Some(1),
            ))
        });
    };
    let (first, ()) = tokio::join!(
        world
            .responder
            .respond(None, event.as_bytes(), "unsettled-1", None, None),
        refuse_the_settling_read
    );
    world.proxy.configure(|c| c.rules.clear());
    assert!(first.retryable, "{}", first.report.to_json_line());
    let (record, error, _) = retryable_isolation(&first.report);
    assert!(error.contains("not known yet"), "{error}");
    let kept = record.nacl_entries.clone();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let again = world
        .responder
        .respond(None, event.as_bytes(), "unsettled-2", None, None)
        .await;
    assert!(
        is_done(&again.report, "isolate"),
        "{}",
        again.report.to_json_line()
    );
    let entries = &isolation(&again.report).nacl_entries;
    assert_eq!(entries.len(), 4);
    assert!(entries.contains(&kept[0]), "the unsettled entry adopted");
    assert_eq!(world.quarantine_entries().await, 4, "no entry made twice");
    world
        .responder
        .release(&world.finding_id(81), "release-test")
        .await
        .unwrap();
    assert_eq!(world.acl_state().await, before, "none left behind");
}

#[tokio::test]
async fn a_full_acl_fails_the_rung_cleanly_and_the_fallback_stops_the_task_after_evidence() {
    let yaml = "rules:\n  - name: contain-or-stop\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate: {fallback: stop}\n      - evidence\n      - notify\n";
    let world = World::with_playbooks(2, playbooks(yaml)).await;
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
async fn throttled_and_failing_calls_are_retried_to_success() {
    let world = World::new(2).await;
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
    assert_eq!(isolation(&report).nacl_entries.len(), 4);
}

#[tokio::test]
async fn a_task_that_is_gone_is_an_outcome_not_an_error() {
    let world = World::new(2).await;
    let mut event = world.miner_event(0, 17);
    let gone = format!(
        "{}/0123456789abcdef0123456789abcdef",
        world.fixture.cluster_arn.replace(":cluster/", ":task/")
    );
    event["detail"]["resource"]["ecsClusterDetails"]["taskDetails"]["arn"] = gone.into();
    let report = world.respond(&event).await;
    let StepOutput::Isolate(IsolateOutput::Gone { why }) = output(&report, "isolate") else {
        panic!("{}", report.to_json_line())
    };
    assert!(why.contains("MISSING"), "{why}");
    assert_eq!(world.count_calls("CreateNetworkAclEntry"), 0);
    let notes = world.notifications().await;
    assert!(
        notes[0].subject.starts_with("[High] workload gone:"),
        "gone is never 'contained': {}",
        notes[0].subject
    );
}

/// A member account's finding on the administrator's bus: this function cannot see the task,
/// and must not read that as "gone" nor say "contained". The finding is kept and reported.
#[tokio::test]
async fn a_finding_about_another_accounts_resource_is_preserved_and_reported_not_acted_on() {
    let world = World::new(2).await;
    // The member's own finding: its account in the finding and its ARNs; delivered by this one.
    let member = emulator::fixture::MEMBER_ACCOUNT;
    let text = world
        .miner_event(0, 43)
        .to_string()
        .replace(emulator::fixture::ACCOUNT, member);
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["account"] = emulator::fixture::ACCOUNT.into();
    let report = world.respond(&event).await;
    let actions: Vec<&str> = report.steps.iter().map(|s| s.action.name()).collect();
    assert_eq!(actions, ["evidence", "notify"], "{}", report.to_json_line());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("the resource is in account 444455556666")
                && n.contains("not done here (isolate, tag)")),
        "{:?}",
        report.notes
    );
    let StepOutput::Evidence(evidence) = output(&report, "evidence") else {
        panic!("{}", report.to_json_line())
    };
    let names: Vec<&str> = evidence
        .objects
        .iter()
        .map(|o| o.key.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["finding.json"],
        "nothing of another account is described"
    );
    let changes: Vec<_> = world
        .proxy
        .mutating_calls()
        .into_iter()
        .filter(|c| c.service == "ec2" || c.service == "ecs")
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    let notes = world.notifications().await;
    assert!(
        notes[0].subject.starts_with("[High] reported:"),
        "{}",
        notes[0].subject
    );
    assert!(notes[0].body.contains("444455556666"), "{}", notes[0].body);
}

#[tokio::test]
async fn the_agent_allow_goes_in_only_where_it_opens_nothing_but_the_endpoint() {
    // The endpoint shares a subnet (and an ACL) with workloads, as in most accounts: an ALLOW
    // for the agent would open those too, so there is none and the report says so.
    let world = World::new(2).await;
    emulator::fixture::add_guardduty_endpoint(&world.clients, &world.fixture)
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(0, 20)).await;
    let record = isolation(&report);
    assert!(
        record.nacl_entries.iter().all(|e| e.action == "deny"),
        "{record:?}"
    );
    assert!(
        record
            .notes
            .iter()
            .any(|n| n.contains("GuardDuty agent is cut off")),
        "{:?}",
        record.notes
    );

    // A subnet of its own holding only the endpoint: the ALLOW pair goes there, ahead of the
    // DENY, and everything else stays cut.
    let world = World::new(2).await;
    let (_, endpoint_subnet, endpoint_acl) =
        emulator::fixture::add_guardduty_endpoint_subnet(&world.clients, &world.fixture)
            .await
            .unwrap();
    let report = world.respond(&world.miner_event(0, 21)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let record = isolation(&report);
    let cidr = format!("{}/32", world.fixture.tasks[0].ip);
    let state = world.acl_state().await;
    for egress in [false, true] {
        let mut entries: Vec<&Value> = state
            .iter()
            .filter(|e| {
                e["acl"] == endpoint_acl.as_str()
                    && e["egress"] == egress
                    && e["cidr"] == cidr.as_str()
            })
            .collect();
        entries.sort_by_key(|e| e["rule"].as_i64());
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(
            (
                entries[0]["action"].as_str(),
                entries[0]["protocol"].as_str()
            ),
            (Some("allow"), Some("6"))
        );
        assert_eq!(entries[1]["action"], "deny");
    }
    let allows_elsewhere = record
        .nacl_entries
        .iter()
        .filter(|e| e.action == "allow" && e.acl_id != endpoint_acl)
        .count();
    assert_eq!(allows_elsewhere, 0);
    let agent = record
        .reachability
        .iter()
        .find(|r| r.class == DestinationClass::GuarddutyAgent)
        .unwrap();
    assert_eq!(agent.verdict, Verdict::Open);
    assert!(agent.reason.contains(&endpoint_subnet), "{}", agent.reason);
    let others = record
        .reachability
        .iter()
        .find(|r| r.class == DestinationClass::OtherSubnets)
        .unwrap();
    assert_eq!(others.verdict, Verdict::Cut, "{}", others.reason);
}

#[tokio::test]
async fn the_quarantine_group_lets_only_the_agent_out() {
    let world = World::new(2).await;
    let endpoint_ip = emulator::fixture::add_guardduty_endpoint(&world.clients, &world.fixture)
        .await
        .unwrap();
    let (instance_id, eni_id) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let event = world.instance_event(&instance_id, &eni_id, 21);
    let report = world.respond(&event).await;
    let group_id = isolation(&report).sg_swaps[0].quarantine_group.clone();
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
async fn a_tampered_quarantine_group_is_put_back_not_trusted() {
    let world = World::new(2).await;
    let ec2 = &world.clients.ec2;
    // Someone finds the tagged quarantine group and "fixes" it to let everything through.
    let group = ec2
        .create_security_group()
        .vpc_id(&world.fixture.vpc_id)
        .group_name("incident-responder-quarantine")
        .description("tampered")
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("incident-responder:role")
                        .value("quarantine")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let group_id = group.group_id().unwrap().to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&group_id)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let (instance_id, eni_id) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let report = world
        .respond(&world.instance_event(&instance_id, &eni_id, 24))
        .await;
    let record = match output(&report, "isolate") {
        StepOutput::Isolate(output) => output.record().cloned().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(record.sg_swaps[0].quarantine_group, group_id);
    let described = ec2
        .describe_security_groups()
        .group_ids(&group_id)
        .send()
        .await
        .unwrap();
    let group = &described.security_groups()[0];
    assert!(
        group.ip_permissions().is_empty(),
        "the added ingress is revoked: {group:?}"
    );
    assert!(
        group.ip_permissions_egress().is_empty(),
        "no egress without an endpoint: {group:?}"
    );
    // The untracking step's group allows everything for IPv4 and IPv6 both ways, or flows
    // would stay tracked.
    let untracking = ec2
        .describe_security_groups()
        .group_ids(&record.sg_swaps[0].untracking_group)
        .send()
        .await
        .unwrap();
    let untracking = &untracking.security_groups()[0];
    for rules in [
        untracking.ip_permissions(),
        untracking.ip_permissions_egress(),
    ] {
        let v4 = rules.iter().any(|p| {
            p.ip_protocol() == Some("-1")
                && p.ip_ranges()
                    .iter()
                    .any(|r| r.cidr_ip() == Some("0.0.0.0/0"))
        });
        let v6 = rules.iter().any(|p| {
            p.ip_protocol() == Some("-1")
                && p.ipv6_ranges()
                    .iter()
                    .any(|r| r.cidr_ipv6() == Some("::/0"))
        });
        assert!(v4 && v6, "{rules:?}");
    }
    // Quarantined again (a second finding): the responder's own group is never taken for the
    // instance's original one.
    let again = world
        .respond(&world.instance_event(&instance_id, &eni_id, 25))
        .await;
    match outcome(&again, "isolate") {
        Outcome::Failed { error, .. } => {
            assert!(error.contains("original groups are not known"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn deregister_takes_the_task_out_of_its_target_group() {
    let yaml =
        "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [isolate, deregister, notify]\n";
    let world = World::with_playbooks(2, playbooks(yaml)).await;
    let report = world.respond(&world.miner_event(0, 22)).await;
    let StepOutput::Deregister(removed) = output(&report, "deregister") else {
        panic!("{}", report.to_json_line())
    };
    assert_eq!(
        removed.deregistered[0].target_group_arn,
        world.fixture.target_group_arn
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

/// The same private address can be a target in another VPC: deregister stays in the
/// workload's VPC (found from the task's interface when nothing was isolated). An instance is
/// taken out of `instance` target groups by its id.
#[tokio::test]
async fn deregister_stays_in_the_workloads_vpc_and_finds_instances_by_id() {
    use aws_sdk_elasticloadbalancingv2::types::{ProtocolEnum, TargetDescription, TargetTypeEnum};
    let yaml = "rules:
  - name: tasks
    mode: enforce
    match: {targets: [ecs_task]}
    actions: [deregister, notify]
  - name: instances
    mode: enforce
    match: {targets: [ec2_instance]}
    actions: [deregister, notify]
";
    let world = World::with_playbooks(2, playbooks(yaml)).await;
    let elbv2 = &world.clients.elbv2;
    let target_group = |name: &str, vpc: &str, kind: TargetTypeEnum| {
        let name = format!("{}-{name}", world.name)
            .chars()
            .take(32)
            .collect::<String>();
        let vpc = vpc.to_string();
        async move {
            elbv2
                .create_target_group()
                .name(name)
                .protocol(ProtocolEnum::Http)
                .port(8080)
                .vpc_id(vpc)
                .target_type(kind)
                .send()
                .await
                .unwrap()
                .target_groups()[0]
                .target_group_arn()
                .unwrap()
                .to_string()
        }
    };
    let other_vpc = world
        .clients
        .ec2
        .create_vpc()
        .cidr_block("10.99.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap()
        .to_string();
    let elsewhere = target_group("elsewhere", &other_vpc, TargetTypeEnum::Ip).await;
    let task_ip = world.fixture.tasks[0].ip.clone();
    elbv2
        .register_targets()
        .target_group_arn(&elsewhere)
        .targets(TargetDescription::builder().id(&task_ip).port(8080).build())
        .send()
        .await
        .unwrap();

    let report = world.respond(&world.miner_event(0, 41)).await;
    let StepOutput::Deregister(removed) = output(&report, "deregister") else {
        panic!("{}", report.to_json_line())
    };
    let groups: Vec<&str> = removed
        .deregistered
        .iter()
        .map(|d| d.target_group_arn.as_str())
        .collect();
    assert_eq!(groups, [world.fixture.target_group_arn.as_str()]);
    assert_eq!(
        removed.vpc_id.as_deref(),
        Some(world.fixture.vpc_id.as_str())
    );
    let still = elbv2
        .describe_target_health()
        .target_group_arn(&elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.target_health_descriptions().len(),
        1,
        "the other VPC's target is left alone"
    );

    let (instance_id, eni_id) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let by_id = target_group("instances", &world.fixture.vpc_id, TargetTypeEnum::Instance).await;
    elbv2
        .register_targets()
        .target_group_arn(&by_id)
        .targets(
            TargetDescription::builder()
                .id(&instance_id)
                .port(8080)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let report = world
        .respond(&world.instance_event(&instance_id, &eni_id, 42))
        .await;
    let StepOutput::Deregister(removed) = output(&report, "deregister") else {
        panic!("{}", report.to_json_line())
    };
    assert!(
        removed
            .deregistered
            .iter()
            .any(|d| d.target_group_arn == by_id),
        "{removed:?}"
    );
}

/// A container's first task finding: the subnets the account sees are listed alongside
/// DescribeTasks, so the task's network interface and its VPC are described together (one round
/// trip), not the interface first to learn the VPC. The listing is made once per container (and
/// account: the emulator has one).
#[tokio::test]
async fn a_fresh_container_describes_the_task_interface_and_its_vpc_together() {
    let world = World::new(2).await.without_guard();
    // DescribeTasks a little slow, as the listing may be slower than it under load; the
    // interface slower still: whatever waits for it starts after this.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "DescribeTasks",
            Fault::Latency(std::time::Duration::from_millis(200)),
            Some(1),
        ));
        c.rules.push(FaultRule::new(
            "DescribeNetworkInterfaces",
            Fault::Latency(std::time::Duration::from_millis(300)),
            None,
        ));
    });
    let report = world.respond(&world.miner_event(0, 70)).await;
    assert!(report.containment().is_some(), "{}", report.to_json_line());
    let calls = world.proxy.calls();
    let first = |operation: &str| {
        calls
            .iter()
            .filter(|c| c.operation == operation)
            .min_by_key(|c| c.received)
            .unwrap_or_else(|| panic!("no {operation}"))
            .clone()
    };
    let interface = first("DescribeNetworkInterfaces");
    let tasks = first("DescribeTasks");
    let listing = first("DescribeSubnets");
    assert!(
        listing.received < tasks.answered,
        "the subnets are listed alongside DescribeTasks"
    );
    for vpc_read in [
        "DescribeRouteTables",
        "DescribeNetworkAcls",
        "DescribeNatGateways",
    ] {
        assert!(
            first(vpc_read).received < interface.answered,
            "{vpc_read} waited for the task's interface"
        );
    }
    assert_eq!(
        world.count_calls("DescribeSubnets"),
        2,
        "the listing and the VPC's description"
    );

    let again = world.respond(&world.miner_event(1, 71)).await;
    assert!(again.containment().is_some(), "{}", again.to_json_line());
    assert_eq!(
        world.count_calls("DescribeSubnets"),
        3,
        "a second finding in the container describes the VPC, and lists nothing again"
    );
}

/// A listing of the subnets that hangs holds containment back briefly, not until it answers:
/// the task's VPC is learnt from its interface meanwhile.
#[tokio::test]
async fn a_slow_listing_of_subnets_does_not_hold_containment_back() {
    let slow = std::time::Duration::from_secs(2);
    let world = World::new(2).await.without_guard();
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "DescribeSubnets",
            Fault::Latency(slow),
            Some(1),
        ))
    });
    let report = world.respond(&world.miner_event(0, 72)).await;
    assert!(report.containment().is_some(), "{}", report.to_json_line());
    // The proxy records a call once answered: the listing, when it has been.
    let mut waited = 0;
    let listing = loop {
        waited += 1;
        assert!(waited < 100, "the listing was never answered");
        let listed = world
            .proxy
            .calls()
            .into_iter()
            .find(|c| c.operation == "DescribeSubnets" && c.answered - c.received >= slow);
        if let Some(listing) = listed {
            break listing;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let calls = world.proxy.calls();
    let entry = calls
        .iter()
        .find(|c| c.operation == "CreateNetworkAclEntry")
        .unwrap();
    assert!(
        entry.received < listing.answered,
        "the entries waited for the listing"
    );
}

/// Findings for several tasks of one VPC, and two for the same task, delivered at once: each
/// plans from the VPC as it read it without waiting for the others, so several pick the same
/// free rule numbers. EC2 refuses all but one per number; the losers roll back, withdraw what
/// they wrote down, and plan again under the VPC's lock. Every finding ends contained, no
/// number is claimed by two records, and releasing one finding undoes only its own entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn findings_at_once_in_one_vpc_never_share_a_rule_number_and_release_only_their_own() {
    let world = std::sync::Arc::new(World::new(4).await.without_guard());
    let before = world.acl_state().await;
    // Every call a little slow, as on AWS: the five responses move in step and plan from the
    // same view.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "*",
            Fault::Latency(std::time::Duration::from_millis(40)),
            None,
        ))
    });
    let deliveries = [(0, 40), (1, 41), (2, 42), (3, 43), (0, 44)];
    let runs: Vec<_> = deliveries
        .iter()
        .map(|&(task, finding)| {
            let world = std::sync::Arc::clone(&world);
            tokio::spawn(async move { world.respond(&world.miner_event(task, finding)).await })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await.unwrap());
    }
    let refused = world
        .proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "CreateNetworkAclEntry" && c.status >= 400)
        .count();
    assert!(
        refused > 0,
        "the findings were meant to race for rule numbers"
    );
    let mut numbers = std::collections::BTreeSet::new();
    for report in &reports {
        assert!(
            is_done(report, "isolate") && report.containment().is_some(),
            "{:#?}",
            report.steps
        );
        for entry in &isolation(report).nacl_entries {
            assert!(
                numbers.insert((entry.acl_id.clone(), entry.egress, entry.rule_number)),
                "rule {} of {} ({}) claimed by two records",
                entry.rule_number,
                entry.acl_id,
                if entry.egress { "egress" } else { "ingress" }
            );
        }
    }
    world.proxy.configure(|c| c.rules.clear());
    let cut = |table: &[Reachability]| {
        table
            .iter()
            .find(|r| r.class == DestinationClass::OtherSubnets)
            .map(|r| r.verdict)
    };
    // Task 0's first finding released: its second finding's quarantine still holds.
    world
        .responder
        .release(&world.finding_id(40), "release-40")
        .await
        .unwrap();
    assert_eq!(cut(&world.reachability(0).await), Some(Verdict::Cut));
    assert_eq!(cut(&world.reachability(1).await), Some(Verdict::Cut));
    for finding in [41, 42, 43, 44] {
        world
            .responder
            .release(&world.finding_id(finding), &format!("release-{finding}"))
            .await
            .unwrap();
    }
    assert_eq!(cut(&world.reachability(0).await), Some(Verdict::Open));
    assert_eq!(
        world.acl_state().await,
        before,
        "every entry made was removed"
    );
}

/// An Auto Scaling group of one instance in the fixture's private subnet: (group, instance, ENI).
async fn auto_scaling_instance(world: &World) -> (String, String, String) {
    let group = format!("{}-asg", world.name);
    world
        .clients
        .autoscaling
        .create_launch_configuration()
        .launch_configuration_name(&group)
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .security_groups(&world.fixture.app_security_group)
        .send()
        .await
        .unwrap();
    world
        .clients
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .launch_configuration_name(&group)
        .min_size(1)
        .max_size(3)
        .desired_capacity(1)
        .vpc_zone_identifier(&world.fixture.private_subnets[0])
        .send()
        .await
        .unwrap();
    let described = world
        .clients
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&group)
        .send()
        .await
        .unwrap();
    let instance_id = described.auto_scaling_groups()[0].instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    let instances = world
        .clients
        .ec2
        .describe_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    let eni = instances.reservations()[0].instances()[0].network_interfaces()[0]
        .network_interface_id()
        .unwrap()
        .to_string();
    (group, instance_id, eni)
}

#[tokio::test]
async fn an_instance_is_kept_from_termination_and_replacement_and_release_puts_its_settings_back() {
    use aws_sdk_ec2::types::InstanceAttributeName;
    let world = World::new(1).await;
    let (group, instance_id, eni_id) = auto_scaling_instance(&world).await;
    // Its owner made a shutdown from inside terminate it (kept by the proxy: moto does not).
    world
        .clients
        .ec2
        .modify_instance_attribute()
        .instance_id(&instance_id)
        .instance_initiated_shutdown_behavior(
            aws_sdk_ec2::types::AttributeValue::builder()
                .value("terminate")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let settings = || async {
        let termination = world
            .clients
            .ec2
            .describe_instance_attribute()
            .instance_id(&instance_id)
            .attribute(InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .unwrap();
        let shutdown = world
            .clients
            .ec2
            .describe_instance_attribute()
            .instance_id(&instance_id)
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .unwrap();
        (
            termination
                .disable_api_termination()
                .and_then(|v| v.value()),
            shutdown
                .instance_initiated_shutdown_behavior()
                .and_then(|v| v.value())
                .map(str::to_string),
        )
    };
    let state = || async {
        let described = world
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&group)
            .send()
            .await
            .unwrap();
        let group = &described.auto_scaling_groups()[0];
        let lifecycle = group
            .instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id.as_str()))
            .and_then(|i| i.lifecycle_state().map(|l| l.as_str().to_string()));
        (lifecycle, group.desired_capacity())
    };

    let report = world
        .respond(&world.instance_event(&instance_id, &eni_id, 31))
        .await;
    assert!(
        is_done(&report, "protect-instance"),
        "{}",
        report.to_json_line()
    );
    assert_eq!(settings().await, (Some(true), Some("stop".to_string())));
    let (lifecycle, desired) = state().await;
    assert_eq!(lifecycle.as_deref(), Some("Standby"));
    assert_eq!(
        desired,
        Some(1),
        "the group keeps its capacity (it launches a replacement)"
    );

    let summary = world
        .responder
        .release(&world.finding_id(31), "person")
        .await
        .unwrap();
    let protection = summary.findings[0].protection.as_ref().unwrap();
    assert_eq!(
        settings().await,
        (Some(false), Some("terminate".to_string()))
    );
    assert_eq!(
        protection.restored,
        vec![
            "termination protection off".to_string(),
            "shutdown behaviour terminate".to_string()
        ]
    );
    assert!(
        protection.left_alone.iter().any(|l| l.contains("Standby")),
        "{protection:?}"
    );
    assert_eq!(
        state().await.0.as_deref(),
        Some("Standby"),
        "left to a person"
    );
}
