//! ECS tasks on EC2 in `bridge` network mode: the container instance is the unit of
//! containment (isolated within every sharing service's blast radius), and `drain-instance`.

use responder::playbook::PlaybookSet;
use responder::report::Outcome;
use serde_json::Value;

use crate::support::{is_done, isolation, outcome, output, World};
use emulator::fixture::{self, Ec2Cluster};

fn playbooks(yaml: &str) -> PlaybookSet {
    PlaybookSet::from_sources([("test.yaml".to_string(), yaml.to_string())]).unwrap()
}

async fn container_instance_status(world: &World, cluster: &Ec2Cluster) -> String {
    let described = world
        .clients
        .ecs
        .describe_container_instances()
        .cluster(&cluster.cluster_arn)
        .container_instances(&cluster.container_instance_arn)
        .send()
        .await
        .unwrap();
    described.container_instances()[0]
        .status()
        .unwrap_or_default()
        .to_string()
}

/// The tasks holding slots of `service`'s blast radius in the ledger.
async fn slot_holders(world: &World, task_arn: &str, service: &str) -> Vec<String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let item = world
        .clients
        .dynamodb
        .get_item()
        .table_name(&world.fixture.table)
        .key(
            "pk",
            AttributeValue::S(responder::actions::guard::guard_pk(task_arn)),
        )
        .key("sk", AttributeValue::S("services".to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let mut holders = item
        .item()
        .and_then(|i| i.get(&format!("svc:{service}")))
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    holders.sort();
    holders
}

fn stopped(cluster: &Ec2Cluster, task_arn: &str, service: &str) -> Value {
    serde_json::json!({
        "version": "0", "id": "e-stop-bridge", "detail-type": "ECS Task State Change",
        "source": "aws.ecs", "account": fixture::ACCOUNT, "time": "2026-11-28T01:00:00Z",
        "region": "us-east-1", "resources": [task_arn],
        "detail": {
            "clusterArn": cluster.cluster_arn, "taskArn": task_arn,
            "group": format!("service:{service}"),
            "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
            "stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task exited",
        }
    })
}

#[tokio::test]
async fn a_bridge_task_is_contained_by_cutting_its_container_instance_when_the_blast_radius_allows()
{
    let world = World::new(1).await;
    let cluster = fixture::seed_ec2_cluster(&world.clients, &world.fixture)
        .await
        .unwrap();
    fixture::add_ec2_service(&world.clients, &cluster, "reports", 4)
        .await
        .unwrap();
    let task = fixture::run_bridge_task(&world.clients, &cluster, Some("reports"))
        .await
        .unwrap();
    // Another of the service's tasks on the same instance: cut with it, within 2 of 4.
    let neighbour = fixture::run_bridge_task(&world.clients, &cluster, Some("reports"))
        .await
        .unwrap();
    let id = world.finding_id(1);
    let event = fixture::bridge_finding_for(&world.fixture, &cluster, &task, "reports", &id);
    let report = world.respond(&event).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    let record = isolation(&report);
    assert_eq!(record.target, cluster.instance_id);
    assert_eq!(record.shared_by_task.as_deref(), Some(task.as_str()));
    assert!(
        record.notes[0].contains("unit of containment")
            && record.notes[0].contains("2 tasks sharing its network (2 of service reports)"),
        "{:?}",
        record.notes
    );
    // The neighbour holds a slot of the service's blast radius until release.
    assert_eq!(record.shared_with, std::slice::from_ref(&neighbour));
    let mut both = vec![task.clone(), neighbour.clone()];
    both.sort();
    assert_eq!(slot_holders(&world, &task, "reports").await, both);
    // The instance's interface carries the task's traffic: it now has the quarantine group.
    let quarantine = record.sg_swaps[0].quarantine_group.clone();
    assert_eq!(
        world.eni_groups(&cluster.eni_id).await,
        [quarantine.as_str()]
    );

    // A second finding about the neighbour finds the instance cut already: it changes
    // nothing and gives back nobody's slot.
    let second = world.finding_id(3);
    let event =
        fixture::bridge_finding_for(&world.fixture, &cluster, &neighbour, "reports", &second);
    world.respond(&event).await;
    assert_eq!(
        world.eni_groups(&cluster.eni_id).await,
        [quarantine.as_str()]
    );
    assert_eq!(slot_holders(&world, &task, "reports").await, both);

    // The task stopping does not release the instance (its host may be what is compromised).
    world.respond(&stopped(&cluster, &task, "reports")).await;
    assert_eq!(
        world.eni_groups(&cluster.eni_id).await,
        [quarantine.as_str()]
    );

    // A person's release does (by the task, as by the finding).
    let released = world
        .responder
        .release(&task, "release-test")
        .await
        .unwrap();
    assert_eq!(released.findings.len(), 1, "{released:?}");
    // The neighbour's slot went with the release; the task's with its STOPPED event.
    assert!(slot_holders(&world, &task, "reports").await.is_empty());
    assert_eq!(
        world.eni_groups(&cluster.eni_id).await,
        [world.fixture.app_security_group.as_str()]
    );
}

#[tokio::test]
async fn a_shared_instance_is_not_cut_while_another_services_only_task_is_on_it_and_drain_moves_them(
) {
    let yaml = "rules:\n  - name: ecs-on-ec2\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions:\n      - isolate\n      - drain-instance\n      - evidence\n      - notify\n";
    let world = World::with_playbooks(1, playbooks(yaml)).await;
    let cluster = fixture::seed_ec2_cluster(&world.clients, &world.fixture)
        .await
        .unwrap();
    fixture::add_ec2_service(&world.clients, &cluster, "reports", 4)
        .await
        .unwrap();
    fixture::add_ec2_service(&world.clients, &cluster, "ledger-api", 1)
        .await
        .unwrap();
    let task = fixture::run_bridge_task(&world.clients, &cluster, Some("reports"))
        .await
        .unwrap();
    let ledger_api = fixture::run_bridge_task(&world.clients, &cluster, Some("ledger-api"))
        .await
        .unwrap();
    let job = fixture::run_bridge_task(&world.clients, &cluster, None)
        .await
        .unwrap();
    let id = world.finding_id(2);
    let event = fixture::bridge_finding_for(&world.fixture, &cluster, &task, "reports", &id);
    let report = world.respond(&event).await;

    // Cutting the instance would take ledger-api's only task (and a task of no service) with
    // it: held back, said, and the instance's groups untouched.
    match outcome(&report, "isolate") {
        Outcome::Failed { error, .. } => assert!(
            error.contains("held back") && error.contains("ledger-api"),
            "{error}"
        ),
        other => panic!("isolate should be held back: {other:?}"),
    }
    assert_eq!(
        world.eni_groups(&cluster.eni_id).await,
        [world.fixture.app_security_group.as_str()]
    );
    assert_eq!(world.count_calls("ModifyNetworkInterfaceAttribute"), 0);

    // Drained instead: ECS moves the service tasks off by their deployment settings.
    assert!(
        is_done(&report, "drain-instance"),
        "{}",
        report.to_json_line()
    );
    let summary = output(&report, "drain-instance").summary();
    assert!(
        summary.contains("DRAINING")
            && summary.contains("2 service tasks")
            && summary.contains("this task included")
            && summary.contains("1 task of no service"),
        "{summary}"
    );
    assert_eq!(
        container_instance_status(&world, &cluster).await,
        "DRAINING"
    );

    // ECS moves ledger-api's task away and the job ends (as the emulator does not, by hand);
    // GuardDuty republishes the finding: counted again, the instance is cut now.
    for gone in [&ledger_api, &job] {
        world
            .clients
            .ecs
            .stop_task()
            .cluster(&cluster.cluster_arn)
            .task(gone.as_str())
            .send()
            .await
            .unwrap();
    }
    let mut republished = event.clone();
    republished["detail"]["service"]["count"] = 7.into();
    let report = world.respond(&republished).await;
    assert!(is_done(&report, "isolate"), "{}", report.to_json_line());
    assert_eq!(isolation(&report).target, cluster.instance_id);
    assert_ne!(
        world.eni_groups(&cluster.eni_id).await,
        [world.fixture.app_security_group.as_str()]
    );

    // Release sets it ACTIVE again, and puts the instance's groups back.
    let released = world.responder.release(&id, "release-test").await.unwrap();
    assert!(
        released.findings[0]
            .drain
            .as_deref()
            .is_some_and(|d| d.contains("ACTIVE again")),
        "{released:?}"
    );
    assert_eq!(container_instance_status(&world, &cluster).await, "ACTIVE");
    assert_eq!(
        world.eni_groups(&cluster.eni_id).await,
        [world.fixture.app_security_group.as_str()]
    );
}
