//! ECS's own scheduler acts too: what the notification says it will do next, `scale-service`,
//! which stops it replacing a compromised task from the same image, and `hold-deployment`,
//! which reports every task started from that image.

use responder::actions::scale::ScaleOutput;
use responder::actions::StepOutput;
use responder::playbook::PlaybookSet;
use responder::report::DecisionKind;
use serde_json::Value;

use crate::support::{is_done, output, skipped_reason, World};

fn playbooks(yaml: &str) -> PlaybookSet {
    PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
}

async fn desired_count(world: &World) -> i32 {
    world
        .clients
        .ecs
        .describe_services()
        .cluster(&world.fixture.cluster_arn)
        .services(&world.fixture.service_name)
        .send()
        .await
        .unwrap()
        .services()[0]
        .desired_count()
}

#[tokio::test]
async fn the_notification_says_what_ecs_will_do_with_the_contained_task() {
    let world = World::new(2).await;
    let report = world.respond(&world.miner_event(0, 60)).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let outlook = report
        .ecs_outlook
        .as_ref()
        .expect("an outlook for a service task");
    assert_eq!(outlook.service, world.fixture.service_name);
    assert_eq!(outlook.desired_count, 2);
    assert_eq!(outlook.target_groups.len(), 1, "{outlook:?}");
    let group = &outlook.target_groups[0];
    assert_eq!(group.target_group_arn, world.fixture.target_group_arn);
    assert_eq!(
        outlook.unhealthy_after_seconds,
        Some(group.interval_seconds * group.unhealthy_threshold)
    );
    assert!(
        outlook
            .forecast
            .contains("judges the task by its load balancer"),
        "{}",
        outlook.forecast
    );
    // The service's own numbers replace the plan's general note, in the message people read.
    assert!(!report.notes.iter().any(|n| n.starts_with("ECS acts too:")));
    let notes = world.notifications().await;
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].body.contains("ECS next: service"),
        "{}",
        notes[0].body
    );
}

#[tokio::test]
async fn scale_service_lowers_the_count_after_evidence_and_release_puts_it_back() {
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [isolate, evidence, scale-service, notify]\n";
    let world = World::with_playbooks(2, playbooks(yaml)).await;
    let finding = world.finding_id(61);
    let report = world.respond(&world.miner_event(0, 61)).await;
    let StepOutput::ScaleService(ScaleOutput::Scaled(scale)) = output(&report, "scale-service")
    else {
        panic!("{}", report.to_json_line());
    };
    assert_eq!((scale.previous_desired_count, scale.desired_count), (2, 0));
    assert_eq!(desired_count(&world).await, 0);

    // A replay changes nothing more.
    let again = world.respond(&world.miner_event(0, 61)).await;
    assert!(skipped_reason(&again, "scale-service").starts_with("already done"));

    let summary = world.responder.release(&finding, "release").await.unwrap();
    let scale = summary.findings[0].service_scale.as_ref().unwrap();
    assert!(scale.restored, "{summary:?}");
    assert_eq!(desired_count(&world).await, 2);
    let twice = world.responder.release(&finding, "release").await.unwrap();
    assert!(twice.findings[0].service_scale.is_none(), "{twice:?}");
    assert_eq!(desired_count(&world).await, 2);
}

#[tokio::test]
async fn a_count_someone_changed_since_is_left_alone_and_scaling_waits_for_evidence() {
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [evidence, scale-service, notify]\n";
    // The operator's count of 1 below would make the guard hold scaling back: not the point.
    let world = World::with_playbooks(2, playbooks(yaml))
        .await
        .without_guard();
    let finding = world.finding_id(62);
    let report = world.respond(&world.miner_event(0, 62)).await;
    assert!(
        is_done(&report, "scale-service"),
        "{}",
        report.to_json_line()
    );
    // An operator brings one task back while the investigation runs.
    world
        .clients
        .ecs
        .update_service()
        .cluster(&world.fixture.cluster_arn)
        .service(&world.fixture.service_name)
        .desired_count(1)
        .send()
        .await
        .unwrap();
    let summary = world.responder.release(&finding, "release").await.unwrap();
    let scale = summary.findings[0].service_scale.as_ref().unwrap();
    assert!(!scale.restored, "{summary:?}");
    assert!(scale.why.as_deref().unwrap().contains("someone changed it"));
    assert_eq!(
        desired_count(&world).await,
        1,
        "the operator's count stands"
    );

    // Without evidence, scaling in (which may stop the task itself) is withheld.
    let mut responder = world.responder.clone();
    responder.config.evidence_bucket = Some("no-such-bucket-for-this-test".to_string());
    let report = responder
        .respond(
            None,
            world.miner_event(1, 63).to_string().as_bytes(),
            "inv-no-evidence",
            None,
            None,
        )
        .await
        .report;
    assert!(
        skipped_reason(&report, "scale-service").contains("evidence was not preserved"),
        "{}",
        report.to_json_line()
    );
    assert_eq!(desired_count(&world).await, 1);
}

/// A Task State Change to RUNNING for `task_arn`, from the sample, running `image`/`digest`.
fn task_running(world: &World, task_arn: &str, image: Option<&str>, digest: Option<&str>) -> Value {
    let path = crate::support::workspace_root().join("events/ecs-task-running-replacement.json");
    let mut event: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let detail = &mut event["detail"];
    detail["taskArn"] = task_arn.into();
    detail["clusterArn"] = world.fixture.cluster_arn.as_str().into();
    detail["containers"][0]["image"] = image.into();
    detail["containers"][0]["imageDigest"] = digest.into();
    event
}

#[tokio::test]
async fn tasks_started_from_a_held_image_are_reported_once_until_release() {
    use responder::actions::hold::HoldOutput;
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [evidence, hold-deployment, notify]\n";
    let world = World::with_playbooks(3, playbooks(yaml)).await;
    let finding = world.finding_id(70);
    let report = world.respond(&world.miner_event(0, 70)).await;
    let StepOutput::HoldDeployment(HoldOutput { held }) = output(&report, "hold-deployment") else {
        panic!("{}", report.to_json_line());
    };
    assert_eq!(held.len(), 1, "{held:?}");
    let (image, digest) = (held[0].image.clone(), held[0].digest.clone());
    assert!(image.is_some() || digest.is_some());
    assert_eq!(world.notifications().await.len(), 1, "the finding's own");

    // ECS starts another task from the held image: people are told, once.
    let started = task_running(
        &world,
        &world.fixture.tasks[1].arn,
        image.as_deref(),
        digest.as_deref(),
    );
    let watched = world.respond(&started).await;
    assert_eq!(
        watched.decision,
        DecisionKind::Watch,
        "{}",
        watched.to_json_line()
    );
    let result = watched.execution.as_ref().unwrap().watch.as_ref().unwrap();
    assert_eq!(result.matches.len(), 1, "{}", watched.to_json_line());
    assert_eq!(result.matches[0].held.finding_id, finding);
    assert!(result.notified);
    let alerts = world.notifications().await;
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].subject.contains("held image running"),
        "{}",
        alerts[0].subject
    );
    assert!(alerts[0].body.contains(&finding), "{}", alerts[0].body);
    let again = world.respond(&started).await;
    let result = again.execution.as_ref().unwrap().watch.as_ref().unwrap();
    assert_eq!(result.matches.len(), 1);
    assert!(!result.notified, "told once per task");
    assert!(world.notifications().await.is_empty());

    // The held task's own state changes and another image are not news.
    let own = task_running(
        &world,
        &world.fixture.tasks[0].arn,
        image.as_deref(),
        digest.as_deref(),
    );
    let own = world.respond(&own).await;
    assert!(own
        .execution
        .as_ref()
        .unwrap()
        .watch
        .as_ref()
        .unwrap()
        .matches
        .is_empty());
    let other = task_running(
        &world,
        &world.fixture.tasks[2].arn,
        Some("public.ecr.aws/other/image:1"),
        Some("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    );
    let other = world.respond(&other).await;
    assert!(other
        .execution
        .as_ref()
        .unwrap()
        .watch
        .as_ref()
        .unwrap()
        .matches
        .is_empty());

    // Released: the hold is lifted and a new task from the image is no longer reported.
    let summary = world.responder.release(&finding, "release").await.unwrap();
    assert!(!summary.findings[0].lifted_holds.is_empty(), "{summary:?}");
    let later = task_running(
        &world,
        &world.fixture.tasks[2].arn,
        image.as_deref(),
        digest.as_deref(),
    );
    let later = world.respond(&later).await;
    assert!(later
        .execution
        .as_ref()
        .unwrap()
        .watch
        .as_ref()
        .unwrap()
        .matches
        .is_empty());
    assert!(world.notifications().await.is_empty());
}
