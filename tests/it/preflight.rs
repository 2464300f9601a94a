//! `responder preflight` against layouts in the emulator: its verdict for a service must be what
//! containment then actually does to a task of that service, task by task.

use emulator::fixture::Layout;
use responder::actions::inventory;
use responder::playbook::{Glob, PlaybookSet};
use responder::preflight::{assess, Outcome, Preflight};
use responder::report::Outcome as StepOutcome;
use serde_json::Value;

use crate::support::{is_done, outcome, World};

async fn preflight(world: &World) -> Preflight {
    let inventory = inventory::take(
        &world.clients,
        &world.responder.config,
        std::slice::from_ref(&world.fixture.cluster_arn),
        &[],
    )
    .await
    .unwrap();
    assess(
        &inventory,
        &world.responder.playbooks,
        Some(&Glob::new("*").unwrap()),
    )
}

fn service_outcome(report: &Preflight) -> &Outcome {
    &report.services[0].outcome
}

#[tokio::test]
async fn a_layout_preflight_calls_contained_is_contained() {
    let world = World::new(2).await;
    let report = preflight(&world).await;
    assert!(
        matches!(service_outcome(&report), Outcome::Contained { .. }),
        "{report:#?}"
    );
    assert!(report.all_contained_as_intended());
    assert_eq!(report.vpcs[0].tasks_at_once, 18);
    let contained = world.respond(&world.miner_event(0, 1)).await;
    assert!(
        is_done(&contained, "isolate"),
        "{}",
        contained.to_json_line()
    );
}

#[tokio::test]
async fn a_layout_preflight_calls_open_is_not_contained_and_says_why() {
    let world = World::new(2).await;
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
    world
        .clients
        .ec2
        .create_vpc_endpoint()
        .vpc_id(&world.fixture.vpc_id)
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Gateway)
        .service_name("com.amazonaws.us-east-1.s3")
        .route_table_ids(tables.route_tables()[0].route_table_id().unwrap())
        .send()
        .await
        .unwrap();
    let report = preflight(&world).await;
    let Outcome::NotContained { open } = service_outcome(&report) else {
        panic!("{report:#?}")
    };
    assert!(
        open.iter().any(|o| o.starts_with("gateway-endpoints")),
        "{open:?}"
    );
    let actual = world.respond(&world.miner_event(0, 2)).await;
    match outcome(&actual, "isolate") {
        StepOutcome::Failed { error, .. } => {
            assert!(error.contains("gateway-endpoints"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_layout_preflight_calls_refused_is_refused() {
    let world = World::with_layout(
        2,
        PlaybookSet::defaults().unwrap(),
        &Layout {
            private_acl: false,
            nat_gateway: true,
        },
    )
    .await;
    world
        .clients
        .ec2
        .create_network_acl_entry()
        .network_acl_id(&world.fixture.default_acl_id)
        .rule_number(1)
        .egress(true)
        .protocol("-1")
        .rule_action(aws_sdk_ec2::types::RuleAction::Allow)
        .cidr_block("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    let report = preflight(&world).await;
    assert!(
        matches!(service_outcome(&report), Outcome::Refused { .. }),
        "{report:#?}"
    );
    assert!(report
        .defeaters
        .iter()
        .any(|d| d.problem.contains("reserved range")));
    let actual = world.respond(&world.miner_event(0, 3)).await;
    assert!(matches!(
        outcome(&actual, "isolate"),
        StepOutcome::Failed { .. }
    ));
}

#[tokio::test]
async fn guardduty_coverage_is_read_from_the_detector() {
    let world = World::new(2).await;
    let report = preflight(&world).await;
    assert!(
        !report.guardduty.checks[0].ok,
        "no detector yet: {:?}",
        report.guardduty.checks
    );
    emulator::fixture::enable_runtime_monitoring(&world.clients)
        .await
        .unwrap();
    let report = preflight(&world).await;
    let checks: Vec<(&str, bool)> = report
        .guardduty
        .checks
        .iter()
        .map(|c| (c.what.as_str(), c.ok))
        .collect();
    assert!(checks[..3].iter().all(|(_, ok)| *ok), "{checks:?}");
}

#[test]
fn the_cli_prints_json_markdown_and_exits_by_the_verdict() {
    // Worker threads serve the proxy while this thread waits for the CLI.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = runtime.block_on(World::new(2));
    let run = |format: &str| {
        std::process::Command::new(crate::support::binary("responder"))
            .current_dir(crate::support::workspace_root())
            .envs(world.cli_env())
            .args([
                "preflight",
                "--cluster",
                &world.fixture.cluster_arn,
                "--output",
                format,
            ])
            .output()
            .unwrap()
    };
    let json = run("json");
    assert_eq!(
        json.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let value: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["services"][0]["outcome"]["verdict"], "contained");
    let markdown = run("markdown");
    let text = String::from_utf8_lossy(&markdown.stdout);
    assert!(text.contains("| Service | Would be |"), "{text}");
    assert!(text.contains("**CONTAINED**"), "{text}");
}
