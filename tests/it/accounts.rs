//! Member accounts: a finding about a member account's workload, delivered to the
//! administrator's bus, acted on through the member's role; evidence, ledger and notice here.
//! moto keeps each account's resources apart and attributes assumed-role credentials to the
//! role's account, so the member's VPC and tasks are truly elsewhere.

use emulator::fixture::{self, Layout, MEMBER_ACCOUNT};
use emulator::proxy::{Fault, FaultRule};
use responder::actions::{Clients, MemberRole};
use responder::report::{DecisionKind, Outcome};
use serde_json::Value;

use crate::support::{evidence, is_done, isolation, World};

const ROLE: &str = "incident-responder-member";

/// Clients acting in the member account, built apart from the responder's own path.
async fn member_clients(world: &World) -> (Clients, aws_sdk_sqs::Client) {
    let base = emulator::sdk_config(&world.proxy.endpoint, "us-east-1")
        .to_builder()
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .build();
    let provider = aws_config::sts::AssumeRoleProvider::builder(format!(
        "arn:aws:iam::{MEMBER_ACCOUNT}:role/seed"
    ))
    .session_name("seed")
    .configure(&base)
    .build()
    .await;
    let config = base
        .to_builder()
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
            provider,
        ))
        .build();
    (
        Clients::from_sdk_config(&config),
        aws_sdk_sqs::Client::new(&config),
    )
}

/// A member account's crypto-miner finding, as the administrator's bus delivers it.
fn member_event(world: &World, member: &fixture::Fixture, task: usize, finding: usize) -> Value {
    let mut event =
        fixture::miner_finding_for(member, &member.tasks[task], &world.finding_id(finding));
    let detail = &mut event["detail"];
    detail["accountId"] = MEMBER_ACCOUNT.into();
    let arn = detail["arn"]
        .as_str()
        .unwrap()
        .replace(fixture::ACCOUNT, MEMBER_ACCOUNT);
    detail["arn"] = arn.into();
    event
}

async fn entries(clients: &Clients, acl_id: &str) -> Vec<String> {
    let acls = clients
        .ec2
        .describe_network_acls()
        .network_acl_ids(acl_id)
        .send()
        .await
        .unwrap();
    acls.network_acls()[0]
        .entries()
        .iter()
        .filter(|e| e.rule_action().map(|a| a.as_str()) == Some("deny"))
        .filter_map(|e| e.cidr_block().map(str::to_string))
        // The default rule denies 0.0.0.0/0; quarantine entries are per address.
        .filter(|cidr| cidr.ends_with("/32"))
        .collect()
}

#[tokio::test]
async fn a_member_accounts_task_is_contained_there_and_recorded_here() {
    let mut world = World::new(1).await.without_guard();
    let (member_clients, member_sqs) = member_clients(&world).await;
    let member = fixture::seed_fargate_with(
        &member_clients,
        &member_sqs,
        &format!("{}m", world.name),
        2,
        &Layout::default(),
    )
    .await
    .unwrap();
    assert!(
        member.tasks[0].arn.contains(MEMBER_ACCOUNT),
        "the member's task is in the member account: {}",
        member.tasks[0].arn
    );
    world.responder.config.member_role = Some(MemberRole {
        name: ROLE.to_string(),
        external_id: Some("ext-7".to_string()),
    });
    world.proxy.clear_calls();

    let report = world.respond(&member_event(&world, &member, 0, 1)).await;
    assert_eq!(
        report.decision,
        DecisionKind::Act,
        "{}",
        report.to_json_line()
    );
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(&format!("arn:aws:iam::{MEMBER_ACCOUNT}:role/{ROLE}"))),
        "{:?}",
        report.notes
    );
    // The quarantine is in the member's ACL, not in any of this account's.
    let cidr = format!("{}/32", member.tasks[0].ip);
    assert!(entries(&member_clients, &member.private_acl_id)
        .await
        .contains(&cidr));
    assert_eq!(
        isolation(&report).vpc_id.as_deref(),
        Some(member.vpc_id.as_str())
    );
    // Evidence in this account's bucket; the audit record in this account's ledger.
    assert!(is_done(&report, "evidence"), "{}", report.to_json_line());
    let stored = evidence(&report);
    assert_eq!(stored.bucket, world.fixture.bucket);
    assert!(!world
        .object(&world.fixture.bucket, &stored.manifest.key)
        .await
        .is_empty());
    let ledger = responder::actions::ledger::Ledger::new(
        world.clients.dynamodb.clone(),
        &world.fixture.table,
        "t",
        1,
    );
    assert_eq!(ledger.audits(&world.finding_id(1)).await.unwrap().len(), 1);

    // The role is assumed once per container and account: a second finding reuses it.
    let assumed = world.count_calls("AssumeRole");
    assert_eq!(assumed, 1);
    world.respond(&member_event(&world, &member, 1, 2)).await;
    assert_eq!(world.count_calls("AssumeRole"), 1);

    // A release acts only in accounts the deployment lists, as a response does.
    let listed = world.responder.config.provenance.accounts.clone();
    world.responder.config.provenance.accounts = Some(vec![fixture::ACCOUNT.to_string()]);
    let refused = world
        .responder
        .release(&world.finding_id(2), "person")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("does not list"), "{refused}");
    world.responder.config.provenance.accounts = listed;

    // Release acts in the member account too.
    let summary = world
        .responder
        .release(&world.finding_id(1), "person")
        .await
        .unwrap();
    assert!(!summary.nothing_recorded(), "{summary:?}");
    assert!(!entries(&member_clients, &member.private_acl_id)
        .await
        .contains(&cidr));
}

#[tokio::test]
async fn a_refused_member_role_fails_that_finding_only_and_says_why() {
    let mut world = World::new(2).await;
    let (member_clients, member_sqs) = member_clients(&world).await;
    let member = fixture::seed_fargate_with(
        &member_clients,
        &member_sqs,
        &format!("{}m", world.name),
        2,
        &Layout::default(),
    )
    .await
    .unwrap();
    world.responder.config.member_role = Some(MemberRole {
        name: ROLE.to_string(),
        external_id: None,
    });
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            "AssumeRole",
            Fault::Refuse("AccessDenied"),
            None,
        ))
    });

    let report = world.respond(&member_event(&world, &member, 0, 3)).await;
    // Nothing is changed anywhere; what works from here is done, and the reason is said.
    assert!(report.steps.iter().all(|s| s.action.name() != "isolate"));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("was not assumed") && n.contains(MEMBER_ACCOUNT)),
        "{:?}",
        report.notes
    );
    assert!(matches!(
        report
            .steps
            .iter()
            .find(|s| s.action.name() == "notify")
            .and_then(|s| s.outcome.as_ref()),
        Some(Outcome::Done { .. })
    ));
    assert!(entries(&member_clients, &member.private_acl_id)
        .await
        .is_empty());

    // A finding of this account is untouched by the member's trouble.
    let own = world.respond(&world.miner_event(0, 4)).await;
    assert!(is_done(&own, "isolate"), "{}", own.to_json_line());
}
