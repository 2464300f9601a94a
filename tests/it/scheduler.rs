//! ECS's own scheduler acts too: what the notification says it will do next, and
//! `scale-service`, which stops it replacing a compromised task from the same image.

use responder::actions::scale::ScaleOutput;
use responder::actions::StepOutput;
use responder::playbook::PlaybookSet;

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
    let world = World::with_playbooks(2, playbooks(yaml)).await;
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
