//! Containment in the layouts accounts really have, judged by the network model from a fresh
//! describe (never by counting entries): every claimed containment must be true in AWS.

use emulator::fixture::Layout;
use responder::actions::isolate::IsolateOutput;
use responder::actions::StepOutput;
use responder::network::reach::{DestinationClass, Reachability, Verdict};
use responder::playbook::PlaybookSet;
use responder::report::{Outcome, Report};

use crate::support::{is_done, isolation, outcome, World};

fn playbooks(yaml: &str) -> PlaybookSet {
    PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
}

fn verdict(table: &[Reachability], class: DestinationClass) -> Verdict {
    table
        .iter()
        .find(|r| r.class == class)
        .map(|r| r.verdict)
        .unwrap_or_else(|| panic!("no {class:?} row in {table:?}"))
}

/// The oracle's word on a report that says "contained": nothing open but same-subnet and DNS.
async fn assert_truly_contained(world: &World, task: usize, report: &Report) {
    assert!(is_done(report, "isolate"), "{}", report.to_json_line());
    let table = world.reachability(task).await;
    for row in &table {
        let accepted = matches!(
            row.class,
            DestinationClass::SameSubnet
                | DestinationClass::Dns
                | DestinationClass::LinkLocalServices
        );
        assert!(
            row.verdict != Verdict::Open || accepted,
            "claimed contained, but {:?} is open: {}",
            row.class,
            row.reason
        );
    }
}

fn default_acl_everywhere() -> Layout {
    Layout {
        private_acl: false,
        nat_gateway: true,
    }
}

#[tokio::test]
async fn every_subnet_on_the_default_acl_with_a_nat_gateway_is_truly_cut() {
    let world = World::with_layout(
        2,
        PlaybookSet::defaults().unwrap(),
        &default_acl_everywhere(),
    )
    .await;
    emulator::fixture::add_guardduty_endpoint(&world.clients, &world.fixture)
        .await
        .unwrap();
    assert_eq!(
        verdict(
            &world.reachability(0).await,
            DestinationClass::InternetViaNat
        ),
        Verdict::Open,
        "before: the task reaches the internet through the NAT gateway"
    );
    let report = world.respond(&world.miner_event(0, 1)).await;
    assert_truly_contained(&world, 0, &report).await;
    let record = isolation(&report);
    // One ACL guards every subnet: one DENY per direction, no agent ALLOW (it would open the
    // NAT gateway's subnet on 443 too).
    assert_eq!(record.nacl_entries.len(), 2, "{:?}", record.nacl_entries);
    assert!(record.nacl_entries.iter().all(|e| e.action == "deny"));
    assert_eq!(
        verdict(&record.reachability, DestinationClass::InternetViaNat),
        Verdict::Cut
    );
    // The other task of the service still reaches the internet.
    assert_eq!(
        verdict(
            &world.reachability(1).await,
            DestinationClass::InternetViaNat
        ),
        Verdict::Open
    );
}

#[tokio::test]
async fn an_owner_allow_at_rule_1_is_refused_not_papered_over() {
    let yaml = "rules:\n  - name: contain-or-stop\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate: {fallback: stop}\n      - evidence\n      - notify\n";
    let world = World::with_layout(2, playbooks(yaml), &default_acl_everywhere()).await;
    world
        .clients
        .ec2
        .create_network_acl_entry()
        .network_acl_id(&world.fixture.default_acl_id)
        .rule_number(1)
        .egress(false)
        .protocol("-1")
        .rule_action(aws_sdk_ec2::types::RuleAction::Allow)
        .cidr_block("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 2)).await;
    match outcome(&report, "isolate") {
        Outcome::Failed { error, .. } => assert!(error.contains("rule 1 lets"), "{error}"),
        other => panic!("isolate must not succeed: {other:?}"),
    }
    assert_eq!(world.acl_state().await, before, "no useless entries");
    assert!(
        is_done(&report, "stop"),
        "the fallback stops the task: {}",
        report.to_json_line()
    );
    let notes = world.notifications().await;
    assert!(
        !notes[0].subject.contains("contained"),
        "{}",
        notes[0].subject
    );
}

#[tokio::test]
async fn owner_rules_spread_inside_the_range_leave_room_below_the_first_that_matches() {
    let world = World::with_layout(
        2,
        PlaybookSet::defaults().unwrap(),
        &default_acl_everywhere(),
    )
    .await;
    for (number, cidr, allow) in [
        (3, "203.0.113.0/24", false),
        (5, "192.168.0.0/16", true),
        (10, "0.0.0.0/0", true),
    ] {
        for egress in [false, true] {
            world
                .clients
                .ec2
                .create_network_acl_entry()
                .network_acl_id(&world.fixture.default_acl_id)
                .rule_number(number)
                .egress(egress)
                .protocol("-1")
                .rule_action(if allow {
                    aws_sdk_ec2::types::RuleAction::Allow
                } else {
                    aws_sdk_ec2::types::RuleAction::Deny
                })
                .cidr_block(cidr)
                .send()
                .await
                .unwrap();
        }
    }
    let report = world.respond(&world.miner_event(0, 3)).await;
    assert_truly_contained(&world, 0, &report).await;
    assert!(isolation(&report)
        .nacl_entries
        .iter()
        .all(|e| e.rule_number < 10));
}

#[tokio::test]
async fn an_s3_gateway_endpoint_stays_open_and_nothing_claims_contained() {
    let world = World::with_layout(2, PlaybookSet::defaults().unwrap(), &Layout::default()).await;
    let tables = world
        .clients
        .ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("association.subnet-id")
                .values(&world.fixture.tasks[0].subnet_id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let table_id = tables.route_tables()[0]
        .route_table_id()
        .unwrap()
        .to_string();
    world
        .clients
        .ec2
        .create_vpc_endpoint()
        .vpc_id(&world.fixture.vpc_id)
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Gateway)
        .service_name("com.amazonaws.us-east-1.s3")
        .route_table_ids(&table_id)
        .send()
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(0, 4)).await;
    let Outcome::Failed {
        error,
        partial: Some(StepOutput::Isolate(IsolateOutput::Incomplete { record, .. })),
        ..
    } = outcome(&report, "isolate")
    else {
        panic!("{}", report.to_json_line())
    };
    assert!(error.contains("gateway-endpoints"), "{error}");
    assert_eq!(
        verdict(&record.reachability, DestinationClass::GatewayEndpoints),
        Verdict::Open
    );
    assert_eq!(
        verdict(&record.reachability, DestinationClass::InternetViaNat),
        Verdict::Cut
    );
    let notes = world.notifications().await;
    assert!(
        notes[0].subject.contains("ACTION FAILED"),
        "{}",
        notes[0].subject
    );
    assert!(
        notes[0].body.contains("OPEN    gateway-endpoints"),
        "{}",
        notes[0].body
    );
}

#[tokio::test]
async fn tasks_of_one_vpc_contained_concurrently_are_all_truly_cut() {
    const TASKS: usize = 4;
    let world = World::with_layout(
        TASKS,
        PlaybookSet::defaults().unwrap(),
        &default_acl_everywhere(),
    )
    .await
    .without_guard();
    let events: Vec<_> = (0..TASKS).map(|i| world.miner_event(i, 10 + i)).collect();
    let invocations: Vec<String> = (0..TASKS).map(|i| format!("concurrent-{i}")).collect();
    let reports = futures::future::join_all(
        events
            .iter()
            .zip(&invocations)
            .map(|(event, invocation)| world.respond_as(event, invocation, None)),
    )
    .await;
    for (i, report) in reports.iter().enumerate() {
        assert_truly_contained(&world, i, report).await;
    }
    let mut numbers: Vec<(String, bool, i32)> = reports
        .iter()
        .flat_map(|r| isolation(r).nacl_entries.clone())
        .map(|e| (e.acl_id, e.egress, e.rule_number))
        .collect();
    let count = numbers.len();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), count, "no two findings share a rule number");
}

#[tokio::test]
async fn the_quota_is_planned_for_and_an_account_below_the_plan_refuses_cleanly() {
    // The playbook knows the account's quota: the planner stops before AWS would.
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate: {nacl_entry_quota: 4}\n      - notify\n";
    let world = World::with_layout(3, playbooks(yaml), &default_acl_everywhere())
        .await
        .without_guard();
    // The default ACL holds rule 100 and the default rule per direction: room for two tasks.
    for i in 0..2 {
        let report = world.respond(&world.miner_event(i, 20 + i)).await;
        assert_truly_contained(&world, i, &report).await;
    }
    let report = world.respond(&world.miner_event(2, 22)).await;
    match outcome(&report, "isolate") {
        Outcome::Failed { error, .. } => assert!(error.contains("quota of 4"), "{error}"),
        other => panic!("{other:?}"),
    }
    // The account's quota is lower than the playbook says: AWS refuses, nothing half-applied.
    let world = World::with_layout(
        2,
        PlaybookSet::defaults().unwrap(),
        &default_acl_everywhere(),
    )
    .await;
    world.proxy.configure(|c| c.nacl_entry_limit = 2);
    let before = world.acl_state().await;
    let report = world.respond(&world.miner_event(0, 23)).await;
    match outcome(&report, "isolate") {
        Outcome::Failed { error, .. } => {
            assert!(error.contains("NetworkAclEntryLimitExceeded"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(world.acl_state().await, before);
}

/// A security group's rules, comparable.
async fn rules_of(world: &World, group: &str) -> (String, String) {
    let described = world
        .clients
        .ec2
        .describe_security_groups()
        .group_ids(group)
        .send()
        .await
        .unwrap();
    let g = &described.security_groups()[0];
    (
        format!("{:?}", g.ip_permissions()),
        format!("{:?}", g.ip_permissions_egress()),
    )
}

/// A lockdown made before a later rung's retryable failure is written down first: the retry
/// finds the group locked down and keeps the rules written down as its originals (not the
/// lockdown it finds), and release puts those back exactly.
#[tokio::test]
async fn a_lockdown_retried_after_a_later_rung_failed_keeps_the_groups_own_rules() {
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    blast_radius: {min_healthy: 0}\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate: {rungs: [service-sg-lockdown, nacl-quarantine], accept_open: [dns, link-local-services]}\n      - notify\n";
    let world = World::with_layout(2, playbooks(yaml), &Layout::default()).await;
    let group = world.fixture.app_security_group.clone();
    world
        .clients
        .ec2
        .create_tags()
        .resources(&group)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("incident-responder:lockdown")
                .value("allowed")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let before = rules_of(&world, &group).await;
    assert_ne!(before, ("[]".to_string(), "[]".to_string()));
    world.proxy.configure(|c| {
        c.rules.push(emulator::proxy::FaultRule::new(
            "CreateNetworkAclEntry",
            emulator::proxy::Fault::Throttle,
            None,
        ))
    });
    let event = world.miner_event(0, 33).to_string();
    let first = world
        .responder
        .respond(None, event.as_bytes(), "lockdown-1", None, None)
        .await;
    world.proxy.configure(|c| c.rules.clear());
    assert!(first.retryable, "{}", first.report.to_json_line());
    let locked = crate::support::retryable_isolation(&first.report)
        .0
        .group_lockdowns
        .clone();
    assert_eq!(locked.len(), 1);
    assert_ne!(rules_of(&world, &group).await, before, "locked down");

    world.proxy.clear_calls();
    let again = world
        .responder
        .respond(None, event.as_bytes(), "lockdown-2", None, None)
        .await;
    let allowed_all = world.count_calls("AuthorizeSecurityGroupIngress");
    assert_eq!(
        allowed_all, 0,
        "no allow-all rules on the locked-down group again"
    );
    let record = match outcome(&again.report, "isolate") {
        Outcome::Done { .. } => isolation(&again.report).clone(),
        Outcome::Failed {
            partial: Some(StepOutput::Isolate(output)),
            ..
        } => output.record().unwrap().clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(record.group_lockdowns, locked, "the group's own rules kept");
    assert!(!record.nacl_entries.is_empty());
    world
        .responder
        .release(&world.finding_id(33), "release-lockdown")
        .await
        .unwrap();
    assert_eq!(
        rules_of(&world, &group).await,
        before,
        "the group's rules are back exactly"
    );
}

#[tokio::test]
async fn a_service_lockdown_takes_only_an_opted_in_exclusive_group_and_release_restores_it() {
    // The rule will not accept the own subnet open: the ladder goes on to the lockdown.
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    blast_radius: {min_healthy: 0}\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate: {rungs: [nacl-quarantine, service-sg-lockdown], accept_open: [dns, link-local-services]}\n      - notify\n";
    let world = World::with_layout(2, playbooks(yaml), &Layout::default()).await;
    let group = world.fixture.app_security_group.clone();
    let before = rules_of(&world, &group).await;

    // Not opted in by the group's owner: left alone, and nothing claims containment.
    let report = world.respond(&world.miner_event(0, 30)).await;
    let Outcome::Failed {
        partial: Some(StepOutput::Isolate(output)),
        ..
    } = outcome(&report, "isolate")
    else {
        panic!("{}", report.to_json_line())
    };
    let record = output.record().unwrap();
    assert!(record.group_lockdowns.is_empty());
    assert!(
        record
            .attempts
            .iter()
            .any(|a| a.detail.contains("not tagged incident-responder:lockdown")),
        "{:?}",
        record.attempts
    );
    assert_eq!(rules_of(&world, &group).await, before);

    // Opted in: every task of the service is contained with it, and the plan said so.
    world
        .clients
        .ec2
        .create_tags()
        .resources(&group)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("incident-responder:lockdown")
                .value("allowed")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(1, 31)).await;
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("every task of the service")),
        "{:?}",
        report.notes
    );
    let Outcome::Failed {
        partial: Some(StepOutput::Isolate(output)),
        error,
        ..
    } = outcome(&report, "isolate")
    else {
        panic!("{}", report.to_json_line())
    };
    // ICMP and other protocols stay tracked: the own subnet is still not claimed cut.
    assert!(error.contains("same-subnet"), "{error}");
    let record = output.record().unwrap();
    assert_eq!(record.group_lockdowns.len(), 1, "{:?}", record.attempts);
    let (ingress, egress) = rules_of(&world, &group).await;
    assert_eq!(
        (ingress.as_str(), egress.as_str()),
        ("[]", "[]"),
        "no GuardDuty endpoint: no rule at all"
    );
    let released = world
        .responder
        .release(&world.finding_id(31), "release-lockdown")
        .await
        .unwrap();
    assert_eq!(
        crate::support::released(&released).restored_group_rules,
        vec![group.clone()]
    );
    assert_eq!(
        rules_of(&world, &group).await,
        before,
        "the group's rules are back exactly"
    );

    // Shared with something outside the service: refused.
    emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(0, 32)).await;
    let Outcome::Failed {
        partial: Some(StepOutput::Isolate(output)),
        ..
    } = outcome(&report, "isolate")
    else {
        panic!("{}", report.to_json_line())
    };
    assert!(
        output
            .record()
            .unwrap()
            .attempts
            .iter()
            .any(|a| a.detail.contains("outside service")),
        "{:?}",
        output.record().unwrap().attempts
    );
    assert_eq!(rules_of(&world, &group).await, before);
}
