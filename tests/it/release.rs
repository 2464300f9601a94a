//! Release: what `isolate` changed is undone exactly, by finding, by task, and on a task's
//! STOPPED event; what someone else changed since is left alone.

use responder::report::DecisionKind;
use responder::respond::ReleaseResult;
use serde_json::{json, Value};

use crate::support::{is_done, isolation, released, until_lease_over, World};

#[tokio::test]
async fn release_restores_the_exact_prior_state_and_a_second_release_is_harmless() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 10)).await;
    assert!(is_done(&report, "isolate"));
    assert_ne!(world.acl_state().await, before);
    let summary = world
        .responder
        .release(&world.finding_id(10), "release-1")
        .await
        .unwrap();
    assert_eq!(
        released(&summary).removed_nacl_entries.len(),
        4,
        "{summary:?}"
    );
    assert_eq!(world.acl_state().await, before);
    let again = world
        .responder
        .release(&world.finding_id(10), "release-2")
        .await
        .unwrap();
    assert!(matches!(
        again.findings[0].result,
        ReleaseResult::AlreadyReleased { .. }
    ));
    // Release by task ARN finds the same record.
    let by_task = world
        .responder
        .release(&world.fixture.tasks[0].arn, "release-3")
        .await
        .unwrap();
    assert!(matches!(
        by_task.findings[0].result,
        ReleaseResult::AlreadyReleased { .. }
    ));
}

#[tokio::test]
async fn release_leaves_an_entry_someone_else_replaced() {
    let world = World::new(2).await;
    let report = world.respond(&world.miner_event(0, 11)).await;
    let first = isolation(&report).nacl_entries[0].clone();
    // An operator replaces one of our entries with their own rule at the same number.
    world
        .clients
        .ec2
        .replace_network_acl_entry()
        .network_acl_id(&first.acl_id)
        .rule_number(first.rule_number)
        .egress(first.egress)
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
    let summary = world
        .responder
        .release(&world.finding_id(11), "release")
        .await
        .unwrap();
    let undone = released(&summary);
    assert_eq!(undone.removed_nacl_entries.len(), 3);
    assert_eq!(undone.left_alone.len(), 1);
    assert_eq!(undone.left_alone[0].entry.as_ref(), Some(&first));
    let state = world.acl_state().await;
    assert!(
        state.iter().any(|e| e["cidr"] == "198.51.100.0/24"),
        "the operator's rule survives"
    );
}

#[tokio::test]
async fn a_task_stopped_event_releases_its_quarantine_entries() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 12)).await;
    assert!(is_done(&report, "isolate"));
    let stopped = world.stopped_event(0);
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
async fn an_acl_deleted_since_is_reported_and_the_rest_still_released() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 13)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    // The team moves the private subnets back to the default ACL and deletes theirs.
    let ec2 = &world.clients.ec2;
    let acls = ec2
        .describe_network_acls()
        .network_acl_ids(&world.fixture.private_acl_id)
        .send()
        .await
        .unwrap();
    for association in acls.network_acls()[0].associations() {
        ec2.replace_network_acl_association()
            .association_id(association.network_acl_association_id().unwrap())
            .network_acl_id(&world.fixture.default_acl_id)
            .send()
            .await
            .unwrap();
    }
    ec2.delete_network_acl()
        .network_acl_id(&world.fixture.private_acl_id)
        .send()
        .await
        .unwrap();
    let summary = world
        .responder
        .release(&world.finding_id(13), "release-after-delete")
        .await
        .unwrap();
    let undone = released(&summary);
    assert_eq!(undone.removed_nacl_entries.len(), 2, "{undone:?}");
    assert!(undone
        .removed_nacl_entries
        .iter()
        .all(|e| e.acl_id == world.fixture.default_acl_id));
    assert_eq!(undone.left_alone.len(), 2);
    assert!(
        undone
            .left_alone
            .iter()
            .all(|l| l.why.contains("no longer exists")),
        "{undone:?}"
    );
    let after: Vec<_> = world
        .acl_state()
        .await
        .into_iter()
        .filter(|e| e["acl"] == world.fixture.default_acl_id.as_str())
        .collect();
    let default_before: Vec<_> = before
        .into_iter()
        .filter(|e| e["acl"] == world.fixture.default_acl_id.as_str())
        .collect();
    assert_eq!(after, default_before);
}

/// A task's STOPPED event that arrives while its isolation is still being applied waits for
/// it (asks to be retried) instead of finding nothing and leaving the entries behind for the
/// next task given the address.
#[tokio::test]
async fn a_stopped_event_during_isolation_is_retried_and_then_releases_everything() {
    use emulator::proxy::{Fault, FaultRule};
    use std::time::Duration;
    let world = World::new(2).await;
    let before = world.acl_state().await;
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "CreateNetworkAclEntry",
            Fault::Latency(Duration::from_millis(1500)),
            None,
        ))
    });
    let stopped = world.stopped_event(0);
    let event = world.miner_event(0, 44);
    let (isolating, early) = tokio::join!(world.respond(&event), async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        world.respond_until(&stopped, "stopped-1", None, None).await
    });
    assert!(
        is_done(&isolating, "isolate"),
        "{}",
        isolating.to_json_line()
    );
    assert!(early.retryable, "{}", early.report.to_json_line());
    assert!(
        early
            .report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("is being isolated right now")),
        "{}",
        early.report.to_json_line()
    );
    world.proxy.configure(|c| c.rules.clear());
    // Lambda's retry of the STOPPED event finds the isolation finished and releases it all.
    let retry = world.respond(&stopped).await;
    assert_eq!(retry.decision, DecisionKind::Release);
    assert!(retry.error.is_none(), "{}", retry.to_json_line());
    assert_eq!(world.acl_state().await, before, "{}", retry.to_json_line());
}

/// An invocation dies between creating quarantine entries and recording them. It wrote them
/// down first: the retry's isolation finds them and a later release leaves nothing behind.
#[tokio::test]
async fn entries_made_by_an_invocation_that_died_before_recording_them_are_released() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let finding = world.finding_id(45);
    let cidr = format!("{}/32", world.fixture.tasks[0].ip);

    // What the dying invocation got done: the claim, the intent, the entries; no record.
    let intended: Vec<Value> = [false, true]
        .into_iter()
        .map(|egress| {
            json!({"acl_id": world.fixture.private_acl_id, "rule_number": 90, "egress": egress,
                   "cidr": cidr, "ipv6": false, "action": "deny", "protocol": "-1"})
        })
        .collect();
    let deadline = world
        .dying_isolation(&finding, "ecs-task-high", &intended)
        .await;
    for egress in [false, true] {
        world.deny_entry(90, egress, &cidr).await;
    }

    // Lambda's retry, once the claim has expired, isolates again and records its own entries.
    until_lease_over(deadline).await;
    let report = world.respond(&world.miner_event(0, 45)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());

    // The retry planned its quarantine afresh (rule 1) and took down the dead invocation's
    // entries it found as written down, after its own were in place: none is left behind.
    let at_90: Vec<_> = world
        .acl_state()
        .await
        .into_iter()
        .filter(|e| e["rule"] == 90)
        .collect();
    assert!(at_90.is_empty(), "{at_90:?}\n{}", report.to_json_line());

    // Release undoes the rest: the ACLs are as before.
    let summary = world.responder.release(&finding, "release").await.unwrap();
    assert!(!released(&summary).removed_nacl_entries.is_empty());
    assert_eq!(world.acl_state().await, before, "{summary:?}");
}

/// A STOPPED event was missed: the sweep finds the quarantine of a task that is gone and
/// releases it, keeps the one of a task that still runs, and leaves alone an entry in the
/// range that no record explains.
#[tokio::test]
async fn the_sweep_releases_what_outlived_its_task_and_touches_nothing_else() {
    use aws_sdk_ec2::types::RuleAction;
    let world = World::new(2).await.without_guard();
    let before = world.acl_state().await;
    let stopped = world.respond(&world.miner_event(0, 46)).await;
    let running = world.respond(&world.miner_event(1, 47)).await;
    assert!(is_done(&stopped, "isolate") && is_done(&running, "isolate"));
    // Someone else's rule in the reserved range.
    world
        .clients
        .ec2
        .create_network_acl_entry()
        .network_acl_id(&world.fixture.private_acl_id)
        .rule_number(77)
        .egress(false)
        .protocol("-1")
        .rule_action(RuleAction::Deny)
        .cidr_block("192.0.2.0/24")
        .send()
        .await
        .unwrap();
    // Task 0 stops, and its STOPPED event never reaches the responder.
    world
        .clients
        .ecs
        .stop_task()
        .cluster(&world.fixture.cluster_arn)
        .task(&world.fixture.tasks[0].arn)
        .send()
        .await
        .unwrap();

    let report = world.responder.sweep(1, 99, "sweep").await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let released: Vec<&str> = report
        .released
        .iter()
        .map(|r| r.finding_id.as_str())
        .collect();
    assert_eq!(released, [world.finding_id(46).as_str()], "{report:?}");
    let kept: Vec<&str> = report.kept.iter().map(|k| k.finding_id.as_str()).collect();
    assert_eq!(kept, [world.finding_id(47).as_str()], "{report:?}");
    // The emulator is shared by the tests: only this world's ACLs are this test's business.
    let ours = [
        world.fixture.private_acl_id.as_str(),
        world.fixture.default_acl_id.as_str(),
    ];
    let strangers: Vec<_> = report
        .unrecognised
        .iter()
        .filter(|e| ours.contains(&e.acl_id.as_str()))
        .collect();
    assert_eq!(strangers.len(), 1, "{report:?}");
    assert_eq!(strangers[0].rule_number, 77);

    // What remains: the running task's quarantine and the stranger's rule, nothing else.
    world
        .responder
        .release(&world.finding_id(47), "release")
        .await
        .unwrap();
    world
        .clients
        .ec2
        .delete_network_acl_entry()
        .network_acl_id(&world.fixture.private_acl_id)
        .rule_number(77)
        .egress(false)
        .send()
        .await
        .unwrap();
    assert_eq!(world.acl_state().await, before);
    // Released isolations leave the sweep's index: it reads neither finding again.
    let ledger = responder::actions::ledger::Ledger::new(
        world.clients.dynamodb.clone(),
        world.fixture.table.clone(),
        "check",
        1,
    );
    let indexed: Vec<String> = ledger
        .isolate_records()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.finding_id)
        .collect();
    for n in [46, 47] {
        assert!(!indexed.contains(&world.finding_id(n)), "{indexed:?}");
    }
    // The stack's scheduled sweep, as the function receives it: nothing left to do.
    let scheduled = json!({"source": "incident-responder", "detail-type": "Sweep quarantine entries", "detail": {}});
    let again = world.respond(&scheduled).await;
    assert_eq!(
        again.decision,
        DecisionKind::Sweep,
        "{}",
        again.to_json_line()
    );
    let swept = again
        .execution
        .as_ref()
        .and_then(|e| e.sweep.as_ref())
        .unwrap();
    assert!(
        swept.released.is_empty() && swept.kept.is_empty(),
        "{swept:?}"
    );
}

/// `responder sweep` as people run it: text by default, JSON whose keys the README names.
#[test]
fn the_sweep_command_reports_in_text_and_json() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(World::new(2));
    runtime.block_on(world.respond(&world.miner_event(0, 48)));
    let run = |args: &[&str]| {
        std::process::Command::new(crate::support::binary("responder"))
            .current_dir(crate::support::workspace_root())
            .envs(world.cli_env())
            .args(args)
            .output()
            .unwrap()
    };
    let json = run(&["sweep", "--output", "json"]);
    assert_eq!(
        json.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    crate::support::assert_json_keys_follow_the_readme(&report);
    assert!(report["kept"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["finding_id"] == world.finding_id(48).as_str()));
    let text = run(&["sweep", "--range", "1-99"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("in the reserved range;") && text.contains("kept      finding"),
        "{text}"
    );
    let bad = run(&["sweep", "--range", "99-1"]);
    assert_eq!(bad.status.code(), Some(2), "clap refuses a backwards range");
}

/// An invocation dies in the middle of a security-group swap, leaving the instance on the
/// allow-all untracking group. It wrote the original groups down first: the retry completes
/// the quarantine with them, and release puts them back.
#[tokio::test]
async fn a_swap_interrupted_by_a_crash_is_completed_and_released_to_the_original_groups() {
    use responder::actions::StepOutput;
    let world = World::new(0).await;
    let (instance_id, eni_id) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let groups_of = || async {
        let out = world
            .clients
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(&eni_id)
            .send()
            .await
            .unwrap();
        let mut groups: Vec<String> = out.network_interfaces()[0]
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
        groups.sort();
        groups
    };
    let original = groups_of().await;
    // A first quarantine and release make the responder's groups exist, as in an account
    // where it has run before.
    let first = world
        .respond(&world.instance_event(&instance_id, &eni_id, 50))
        .await;
    let StepOutput::Isolate(output) = crate::support::output(&first, "isolate") else {
        panic!("{}", first.to_json_line())
    };
    let swap = output.record().unwrap().sg_swaps[0].clone();
    world
        .responder
        .release(&world.finding_id(50), "r")
        .await
        .unwrap();
    assert_eq!(groups_of().await, original);

    // The dying attempt: claimed, wrote its intent, did step 1 (untracking), then died.
    let finding = world.finding_id(51);
    let intent = json!({"eni_id": eni_id, "original_groups": original,
        "quarantine_group": swap.quarantine_group, "untracking_group": swap.untracking_group});
    let deadline = world
        .dying_isolation(&finding, "ec2-instance-high", &[intent])
        .await;
    world
        .clients
        .ec2
        .modify_network_interface_attribute()
        .network_interface_id(&eni_id)
        .groups(&swap.untracking_group)
        .send()
        .await
        .unwrap();

    // Lambda's retry after the lease: the swap is completed with the written-down originals.
    until_lease_over(deadline).await;
    let retry = world
        .respond(&world.instance_event(&instance_id, &eni_id, 51))
        .await;
    let StepOutput::Isolate(output) = crate::support::output(&retry, "isolate") else {
        panic!("{}", retry.to_json_line())
    };
    let record = output.record().expect("a containment record");
    let mut restored_to = record.sg_swaps[0].original_groups.clone();
    restored_to.sort();
    assert_eq!(restored_to, original, "{}", retry.to_json_line());
    assert_eq!(
        groups_of().await,
        std::slice::from_ref(&swap.quarantine_group)
    );

    world.responder.release(&finding, "r2").await.unwrap();
    assert_eq!(groups_of().await, original);
}

/// An invocation died while isolating and every retry failed too: its claim ran out long ago.
/// `release` does not wait for it for ever; it removes what the dead attempt wrote down.
#[tokio::test]
async fn a_dead_attempts_expired_claim_is_released_not_kept_in_progress() {
    let world = World::new(2).await;
    let before = world.acl_state().await;
    let finding = world.finding_id(46);
    let cidr = format!("{}/32", world.fixture.tasks[0].ip);
    let entry = json!({"acl_id": world.fixture.private_acl_id, "rule_number": 91, "egress": false,
        "cidr": cidr, "ipv6": false, "action": "deny", "protocol": "-1"});
    let deadline = world
        .dying_isolation(&finding, "ecs-task-high", &[entry])
        .await;
    world.deny_entry(91, false, &cidr).await;

    // While the claim holds, release waits for the isolation.
    let early = world.responder.release(&finding, "release").await;
    assert!(early.is_err(), "{early:?}");

    until_lease_over(deadline).await;
    let summary = world.responder.release(&finding, "release").await.unwrap();
    assert_eq!(
        released(&summary).removed_nacl_entries.len(),
        1,
        "{summary:?}"
    );
    assert_eq!(world.acl_state().await, before);
}

/// The sweep asks ECS whether a quarantined task still runs: a task ECS no longer lists
/// (MISSING) and a task of a deleted cluster (ECS deletes no cluster that has tasks) are gone.
#[tokio::test]
async fn the_sweep_counts_missing_tasks_and_deleted_clusters_as_gone() {
    use responder::actions::sweep::{liveness, Liveness};
    let world = World::new(2).await;
    let running = liveness(&world.clients, &world.fixture.tasks[0].arn)
        .await
        .unwrap();
    assert_eq!(running, Liveness::Running);
    let cluster = &world.fixture.cluster_name;
    let missing = format!(
        "arn:aws:ecs:{}:123456789012:task/{cluster}/0123456789abcdef0123456789abcdef",
        world.fixture.region
    );
    assert_eq!(
        liveness(&world.clients, &missing).await.unwrap(),
        Liveness::Gone
    );
    let deleted = format!(
        "arn:aws:ecs:{}:123456789012:task/no-such-cluster/0123456789abcdef0123456789abcdef",
        world.fixture.region
    );
    assert_eq!(
        liveness(&world.clients, &deleted).await.unwrap(),
        Liveness::Gone
    );
}
