//! revoke-sessions against the emulator: the policy on the task's or instance's role, what a
//! stopped task lifts, what release removes, and the refusal on a role not tagged for it.

use responder::actions::revoke_sessions::{policy_name, RevokeOutput};
use responder::actions::StepOutput;
use responder::playbook::PlaybookSet;
use responder::report::Outcome;
use responder::respond::SessionsResult;
use serde_json::Value;

use crate::support::{is_done, outcome, output, World};

fn playbooks() -> PlaybookSet {
    let yaml = r#"
rules:
  - name: revoke
    match: {finding_types: ["*:Runtime/*"], targets: [ecs_task, ec2_instance]}
    mode: enforce
    actions: [revoke-sessions, evidence, notify]
"#;
    PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
}

fn role_name(arn: &str) -> String {
    arn.rsplit('/').next().unwrap().to_string()
}

/// The inline policy's document, or None when the role has no such policy.
async fn policy(world: &World, role: &str, name: &str) -> Option<Value> {
    let got = world
        .clients
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .ok()?;
    // IAM returns the document URL-encoded.
    let text = percent_decode(got.policy_document());
    Some(serde_json::from_str(&text).unwrap())
}

fn percent_decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn statement<'a>(document: &'a Value, sid: &str) -> Option<&'a Value> {
    document["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
}

#[tokio::test]
async fn a_tasks_role_denies_older_credentials_and_its_address_until_stopped_and_released() {
    let world = World::with_playbooks(2, playbooks()).await;
    let role = role_name(&world.fixture.task_role_arn);
    let finding = world.finding_id(1);
    let name = policy_name(&finding);
    let report = world.respond(&world.miner_event(0, 1)).await;
    assert!(
        is_done(&report, "revoke-sessions"),
        "{}",
        report.to_json_line()
    );
    let StepOutput::RevokeSessions(RevokeOutput::Revoked(revocation)) =
        output(&report, "revoke-sessions")
    else {
        panic!("{}", report.to_json_line())
    };
    assert_eq!(revocation.role_arn, world.fixture.task_role_arn);
    let task_ip = &world.fixture.tasks[0].ip;
    assert_eq!(revocation.denied_addresses, vec![task_ip.clone()]);
    // The report says what the deny does not reach.
    let summary = report
        .steps
        .iter()
        .find(|s| s.action.name() == "revoke-sessions")
        .map(|s| match &s.outcome {
            Some(Outcome::Done { detail, .. }) => detail.summary(),
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert!(summary.contains("NAT"), "{summary}");
    assert!(summary.contains("every user of the role"), "{summary}");

    let document = policy(&world, &role, &name)
        .await
        .expect("the policy is on the role");
    let older = statement(&document, "RevokeOlderSessions").unwrap();
    assert_eq!(older["Effect"], "Deny");
    assert_eq!(older["Action"], "*");
    assert_eq!(
        older["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        revocation.issued_before.as_str()
    );
    let from_task = statement(&document, "DenyFromWorkloadAddresses").unwrap();
    assert_eq!(
        from_task["Condition"]["IpAddress"]["aws:VpcSourceIp"],
        serde_json::json!([format!("{task_ip}/32")])
    );

    // A republished finding does not move the instant (nor put the policy again).
    let puts = world.count_calls("PutRolePolicy");
    world.respond(&world.miner_event(0, 1)).await;
    assert_eq!(world.count_calls("PutRolePolicy"), puts);

    // The task stops: its address may go to the next task, so that deny goes; the time deny
    // stays (credentials it handed out outlive it).
    world.respond(&world.stopped_event(0)).await;
    let document = policy(&world, &role, &name).await.expect("still there");
    assert!(statement(&document, "RevokeOlderSessions").is_some());
    assert!(
        statement(&document, "DenyFromWorkloadAddresses").is_none(),
        "{document}"
    );

    // A person releases: the policy goes.
    let summary = world.responder.release(&finding, "person").await.unwrap();
    let sessions = summary.findings[0].sessions.as_ref().unwrap();
    assert_eq!(sessions.result, SessionsResult::Removed);
    assert!(policy(&world, &role, &name).await.is_none());
    // Twice is harmless: already released.
    let again = world.responder.release(&finding, "person").await.unwrap();
    assert!(again.findings[0].sessions.is_none());
}

#[tokio::test]
async fn a_role_not_tagged_for_it_is_refused_and_left_untouched() {
    let world = World::with_playbooks(2, playbooks()).await;
    let role = role_name(&world.fixture.task_role_arn);
    world
        .clients
        .iam
        .untag_role()
        .role_name(&role)
        .tag_keys(emulator::fixture::REVOCABLE_TAG.0)
        .send()
        .await
        .unwrap();
    let report = world.respond(&world.miner_event(0, 2)).await;
    match outcome(&report, "revoke-sessions") {
        Outcome::Failed {
            error, retryable, ..
        } => {
            assert!(!retryable, "a retry cannot fix a missing tag");
            assert!(
                error.contains("incident-responder:revocable=true"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    let name = policy_name(&world.finding_id(2));
    assert!(policy(&world, &role, &name).await.is_none());
    // The rest of the response goes on.
    assert!(is_done(&report, "evidence"));
    assert!(is_done(&report, "notify"));
}

#[tokio::test]
async fn an_instances_profile_role_is_revoked_with_every_address_of_the_instance() {
    let world = World::with_playbooks(2, playbooks()).await;
    let role_arn =
        emulator::fixture::create_role(&world.clients, &format!("{}-instance", world.name), true)
            .await
            .unwrap();
    let role = role_name(&role_arn);
    let profile = emulator::fixture::create_instance_profile(
        &world.clients,
        &format!("{}-profile", world.name),
        &role,
    )
    .await
    .unwrap();
    let (instance_id, eni_id) = emulator::fixture::launch_instance_with_profile(
        &world.clients,
        &world.fixture,
        Some(&profile),
    )
    .await
    .unwrap();
    let report = world
        .respond(&world.instance_event(&instance_id, &eni_id, 3))
        .await;
    let StepOutput::RevokeSessions(RevokeOutput::Revoked(revocation)) =
        output(&report, "revoke-sessions")
    else {
        panic!("{}", report.to_json_line())
    };
    assert_eq!(revocation.role_arn, role_arn);
    assert_eq!(revocation.workload, instance_id);
    assert!(!revocation.denied_addresses.is_empty());
    let document = policy(&world, &role, &revocation.policy_name)
        .await
        .unwrap();
    let denied = &statement(&document, "DenyFromWorkloadAddresses").unwrap()["Condition"]
        ["IpAddress"]["aws:VpcSourceIp"];
    for address in &revocation.denied_addresses {
        assert!(
            denied
                .as_array()
                .unwrap()
                .contains(&format!("{address}/32").into()),
            "{denied}"
        );
    }

    // An instance without a profile has no role: nothing to revoke, said plainly.
    let (bare, bare_eni) = emulator::fixture::launch_instance(&world.clients, &world.fixture)
        .await
        .unwrap();
    let report = world
        .respond(&world.instance_event(&bare, &bare_eni, 4))
        .await;
    match output(&report, "revoke-sessions") {
        StepOutput::RevokeSessions(RevokeOutput::NoRole { why }) => {
            assert!(why.contains("no instance profile"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
