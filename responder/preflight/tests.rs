//! Preflight on inventories built by hand: the verdicts, the capacity and the defeaters.

use std::collections::BTreeMap;

use super::*;
use crate::actions::inventory::{ClusterInfo, Inventory, ServiceInfo, TaskNetwork};
use crate::network::{
    parse_cidr, Acl, AclEntry, NatGateway, Route, RouteTable, RouteTarget, Subnet,
};

fn entry(number: i32, egress: bool, allow: bool, net: &str) -> AclEntry {
    AclEntry {
        rule_number: number,
        egress,
        allow,
        protocol: -1,
        cidr: parse_cidr(net).unwrap(),
        ports: None,
        icmp: None,
    }
}

fn vpc() -> Vpc {
    Vpc {
        vpc_id: "vpc-1".into(),
        subnets: vec![
            Subnet {
                id: "app".into(),
                cidr: "10.0.1.0/24".parse().ok(),
                ipv6_cidrs: Vec::new(),
            },
            Subnet {
                id: "public".into(),
                cidr: "10.0.0.0/24".parse().ok(),
                ipv6_cidrs: Vec::new(),
            },
        ],
        route_tables: vec![RouteTable {
            id: "rtb".into(),
            main: true,
            subnet_ids: Vec::new(),
            routes: vec![Route {
                destination: Destination::Cidr(parse_cidr("0.0.0.0/0").unwrap()),
                target: RouteTarget::NatGateway("nat".into()),
            }],
        }],
        acls: vec![Acl {
            id: "acl-default".into(),
            subnet_ids: vec!["app".into(), "public".into()],
            entries: vec![
                entry(100, false, true, "0.0.0.0/0"),
                entry(100, true, true, "0.0.0.0/0"),
                entry(DEFAULT_RULE, false, false, "0.0.0.0/0"),
                entry(DEFAULT_RULE, true, false, "0.0.0.0/0"),
            ],
        }],
        nat_gateways: vec![NatGateway {
            id: "nat".into(),
            subnet_id: "public".into(),
        }],
        ..Vpc::default()
    }
}

fn inventory(vpc: Vpc, public_ip: bool) -> Inventory {
    Inventory {
        clusters: vec![ClusterInfo {
            arn: "arn:aws:ecs:us-east-1:111122223333:cluster/prod".into(),
            name: "prod".into(),
            tags: BTreeMap::new(),
            services: vec![ServiceInfo {
                name: "api".into(),
                launch_type: Some("FARGATE".into()),
                subnets: vec!["app".into()],
                security_groups: vec!["sg-api".into()],
                public_ip,
                target_groups: vec!["arn:tg".into()],
                tasks: vec![TaskNetwork {
                    task_arn: "arn:aws:ecs:us-east-1:111122223333:task/prod/1".into(),
                    eni_id: "eni-1".into(),
                    ipv4: "10.0.1.5".into(),
                    ipv6: None,
                    subnet_id: "app".into(),
                }],
            }],
        }],
        vpcs: [("vpc-1".to_string(), vpc)].into(),
        enis_by_group: [("sg-api".to_string(), vec!["eni-1".to_string()])].into(),
        ..Inventory::default()
    }
}

fn all_clusters() -> Glob {
    Glob::new("*").unwrap()
}

#[test]
fn the_default_layout_would_be_contained_and_holds_eighteen_tasks() {
    let report = assess(
        &inventory(vpc(), false),
        &PlaybookSet::defaults().unwrap(),
        Some(&all_clusters()),
    );
    let service = &report.services[0];
    assert_eq!(service.rule.as_deref(), Some("ecs-task-high"));
    assert_eq!(service.outcome, Outcome::Contained { entries: 2 });
    assert_eq!(service.rung.as_deref(), Some("nacl-quarantine"));
    assert_eq!(service.lockdown, Lockdown::NotTagged);
    assert!(report.all_contained_as_intended());
    assert_eq!(report.vpcs[0].tasks_at_once, 18);
    assert_eq!(report.vpcs[0].acls[0].ipv4_used, (2, 2));
    // Behind a load balancer, and the default rule neither watches for nor stops the
    // replacements ECS will start: said, with the fix.
    assert!(report
        .defeaters
        .iter()
        .any(|d| d.fix.contains("hold-deployment")));
    let text = render::text(&report);
    assert!(text.contains("prod/api  CONTAINED"), "{text}");
    let markdown = render::markdown(&report);
    assert!(
        markdown.contains("| prod/api | **CONTAINED** |"),
        "{markdown}"
    );
}

#[test]
fn an_owner_allow_at_1_and_a_public_ip_are_reported_with_their_fix() {
    let mut owner = vpc();
    owner.acls[0]
        .entries
        .push(entry(1, false, true, "0.0.0.0/0"));
    let report = assess(
        &inventory(owner, false),
        &PlaybookSet::defaults().unwrap(),
        Some(&all_clusters()),
    );
    assert!(
        matches!(report.services[0].outcome, Outcome::Refused { .. }),
        "{:?}",
        report.services[0].outcome
    );
    assert!(!report.all_contained_as_intended());
    assert!(report
        .defeaters
        .iter()
        .any(|d| d.problem.contains("inside the reserved range")));

    let mut igw = vpc();
    igw.route_tables[0].routes[0].target = RouteTarget::InternetGateway("igw".into());
    let report = assess(
        &inventory(igw, true),
        &PlaybookSet::defaults().unwrap(),
        Some(&all_clusters()),
    );
    let Outcome::NotContained { open } = &report.services[0].outcome else {
        panic!("{:?}", report.services[0].outcome)
    };
    assert!(open[0].starts_with("internet-via-igw"), "{open:?}");
    assert!(report
        .defeaters
        .iter()
        .any(|d| d.fix.contains("private subnets")));
}

#[test]
fn a_rule_without_isolate_is_not_a_failure_and_stop_outside_contained_clusters_is() {
    let yaml = "rules:\n  - name: watch\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [evidence, stop, notify]\n";
    let playbooks = PlaybookSet::from_sources([("p.yaml".to_string(), yaml.to_string())]).unwrap();
    let report = assess(
        &inventory(vpc(), false),
        &playbooks,
        Some(&Glob::new("staging-*").unwrap()),
    );
    assert!(matches!(
        report.services[0].outcome,
        Outcome::NotPlanned { .. }
    ));
    assert!(report.all_contained_as_intended());
    assert!(report
        .defeaters
        .iter()
        .any(|d| d.problem.contains("ContainedClusterNames")));
}

#[test]
fn stop_permission_is_judged_on_the_cluster_name_as_iam_does() {
    let yaml = "rules:\n  - name: watch\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [evidence, stop, notify]\n";
    let playbooks = PlaybookSet::from_sources([("p.yaml".to_string(), yaml.to_string())]).unwrap();
    // `*east*` meets the ARN's region, not the name `prod`: IAM would deny.
    let report = assess(
        &inventory(vpc(), false),
        &playbooks,
        Some(&Glob::new("*east*").unwrap()),
    );
    assert!(report
        .defeaters
        .iter()
        .any(|d| d.problem.contains("ContainedClusterNames")));
    // Unknown: assumed every cluster, and the report says it did not check.
    let report = assess(&inventory(vpc(), false), &playbooks, None);
    assert!(!report
        .defeaters
        .iter()
        .any(|d| d.problem.contains("ContainedClusterNames")));
    let unknown = report
        .responder
        .iter()
        .find(|c| c.what == "clusters where the stack may stop tasks")
        .unwrap();
    assert!(
        !unknown.ok && unknown.detail.contains("unknown"),
        "{unknown:?}"
    );
}

#[test]
fn a_public_ip_behind_a_nat_route_is_no_defeater() {
    let report = assess(
        &inventory(vpc(), true),
        &PlaybookSet::defaults().unwrap(),
        Some(&all_clusters()),
    );
    assert!(
        !report
            .defeaters
            .iter()
            .any(|d| d.problem.contains("public IPs")),
        "{:?}",
        report.defeaters
    );
}

#[test]
fn guardduty_agent_setup_follows_the_inclusion_and_exclusion_tags_exactly() {
    let check = |management: bool, tag: Option<&str>| -> Check {
        let mut inv = inventory(vpc(), false);
        inv.guardduty.fargate_agent_management = management;
        if let Some(value) = tag {
            inv.clusters[0]
                .tags
                .insert("GuardDutyManaged".into(), value.into());
        }
        let report = assess(
            &inv,
            &PlaybookSet::defaults().unwrap(),
            Some(&all_clusters()),
        );
        report
            .guardduty
            .checks
            .into_iter()
            .find(|c| c.what.contains("Fargate tasks of cluster prod"))
            .unwrap()
    };
    assert!(check(true, None).ok);
    assert!(!check(true, Some("false")).ok);
    // Case matters to GuardDuty: `False` excludes nothing.
    assert!(check(true, Some("False")).ok);
    // Inclusion mode: automation off, the cluster tagged `true`.
    assert!(check(false, Some("true")).ok);
    assert!(!check(false, None).ok);
    assert!(check(true, None).detail.contains("coverage is per task"));
}

#[test]
fn capacity_follows_the_rules_quota_and_a_fips_endpoint_counts() {
    let yaml = "rules:\n  - name: r\n    mode: enforce\n    match: {targets: [ecs_task]}\n    actions: [{isolate: {nacl_entry_quota: 40}}, notify]\n";
    let playbooks = PlaybookSet::from_sources([("p.yaml".to_string(), yaml.to_string())]).unwrap();
    let report = assess(&inventory(vpc(), false), &playbooks, Some(&all_clusters()));
    assert_eq!(report.vpcs[0].acls[0].quota, 40);
    assert_eq!(report.vpcs[0].tasks_at_once, 38);

    let mut with_fips = vpc();
    with_fips.endpoints.push(crate::network::Endpoint {
        id: "vpce-gd".into(),
        service: "com.amazonaws.us-east-1.guardduty-data-fips".into(),
        interface: true,
        subnet_ids: vec!["public".into()],
        network_interface_ids: vec!["eni-gd".into()],
        guardduty_managed: true,
    });
    let report = assess(
        &inventory(with_fips, false),
        &PlaybookSet::defaults().unwrap(),
        Some(&all_clusters()),
    );
    assert!(report.vpcs[0].guardduty_endpoint);
    let shared = report
        .defeaters
        .iter()
        .find(|d| {
            d.problem
                .contains("shares a network ACL with a NAT gateway")
        })
        .expect("the endpoint shares the NAT gateway's ACL");
    assert!(
        shared.fix.contains("GuardDuty created this endpoint"),
        "{}",
        shared.fix
    );
}
