//! Layouts accounts really have, with the verdicts AWS would give; the quarantine planner on
//! them; and properties checked against an independent packet-by-packet evaluator.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use proptest::prelude::*;

use super::quarantine::{plan, with_entries, Limits};
use super::reach::{open_classes, reachability, DestinationClass, Reachability, Verdict};
use super::*;

const TASK_SUBNET: &str = "subnet-app";
const NAT_SUBNET: &str = "subnet-public";
const DATA_SUBNET: &str = "subnet-data";

fn cidr(text: &str) -> IpNet {
    parse_cidr(text).unwrap()
}

fn entry(number: i32, egress: bool, allow: bool, net: &str) -> AclEntry {
    AclEntry {
        rule_number: number,
        egress,
        allow,
        protocol: -1,
        cidr: cidr(net),
        ports: None,
        icmp: None,
    }
}

/// The VPC default ACL: allow everything at 100, the default rule at 32767.
fn default_entries() -> Vec<AclEntry> {
    vec![
        entry(100, false, true, "0.0.0.0/0"),
        entry(100, true, true, "0.0.0.0/0"),
        entry(DEFAULT_RULE, false, false, "0.0.0.0/0"),
        entry(DEFAULT_RULE, true, false, "0.0.0.0/0"),
    ]
}

fn subnet(id: &str, net: &str) -> Subnet {
    Subnet {
        id: id.into(),
        cidr: Some(match cidr(net) {
            IpNet::V4(v4) => v4,
            IpNet::V6(_) => unreachable!(),
        }),
        ipv6_cidrs: Vec::new(),
    }
}

/// The most common layout: every subnet on the VPC's default ACL, a NAT gateway in the public
/// subnet, the app and data subnets private, the GuardDuty endpoint in the data subnet.
fn default_acl_layout() -> Vpc {
    Vpc {
        vpc_id: "vpc-1".into(),
        subnets: vec![
            subnet(TASK_SUBNET, "10.0.1.0/24"),
            subnet(NAT_SUBNET, "10.0.0.0/24"),
            subnet(DATA_SUBNET, "10.0.2.0/24"),
        ],
        route_tables: vec![
            RouteTable {
                id: "rtb-private".into(),
                main: true,
                subnet_ids: vec![TASK_SUBNET.into(), DATA_SUBNET.into()],
                routes: vec![
                    Route {
                        destination: Destination::Cidr(cidr("10.0.0.0/16")),
                        target: RouteTarget::Local,
                    },
                    Route {
                        destination: Destination::Cidr(cidr("0.0.0.0/0")),
                        target: RouteTarget::NatGateway("nat-1".into()),
                    },
                ],
            },
            RouteTable {
                id: "rtb-public".into(),
                main: false,
                subnet_ids: vec![NAT_SUBNET.into()],
                routes: vec![
                    Route {
                        destination: Destination::Cidr(cidr("10.0.0.0/16")),
                        target: RouteTarget::Local,
                    },
                    Route {
                        destination: Destination::Cidr(cidr("0.0.0.0/0")),
                        target: RouteTarget::InternetGateway("igw-1".into()),
                    },
                ],
            },
        ],
        acls: vec![Acl {
            id: "acl-default".into(),
            subnet_ids: vec![TASK_SUBNET.into(), NAT_SUBNET.into(), DATA_SUBNET.into()],
            entries: default_entries(),
        }],
        nat_gateways: vec![NatGateway {
            id: "nat-1".into(),
            subnet_id: NAT_SUBNET.into(),
        }],
        endpoints: vec![Endpoint {
            id: "vpce-gd".into(),
            service: "com.amazonaws.us-east-1.guardduty-data".into(),
            interface: true,
            subnet_ids: vec![DATA_SUBNET.into()],
            network_interface_ids: vec!["eni-gd".into()],
            guardduty_managed: false,
        }],
        transit_attachments: Vec::new(),
        load_balancer_enis: Vec::new(),
    }
}

fn task() -> Workload {
    Workload {
        ipv4: Ipv4Addr::new(10, 0, 1, 5),
        ipv6: None,
        subnet_id: TASK_SUBNET.into(),
        public_ip: None,
    }
}

fn limits() -> Limits {
    Limits {
        first: 1,
        last: 99,
        quota: 20,
        agent_acls: BTreeSet::new(),
    }
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn verdict(table: &[Reachability], class: DestinationClass) -> Verdict {
    table.iter().find(|r| r.class == class).unwrap().verdict
}

fn accepted() -> Vec<DestinationClass> {
    vec![
        DestinationClass::SameSubnet,
        DestinationClass::Dns,
        DestinationClass::LinkLocalServices,
    ]
}

#[test]
fn before_quarantine_everything_is_open() {
    let table = reachability(&default_acl_layout(), &task(), &none());
    assert_eq!(
        verdict(&table, DestinationClass::InternetViaNat),
        Verdict::Open
    );
    assert_eq!(
        verdict(&table, DestinationClass::OtherSubnets),
        Verdict::Open
    );
    assert_eq!(
        verdict(&table, DestinationClass::InterfaceEndpoints),
        Verdict::Open
    );
    assert_eq!(
        verdict(&table, DestinationClass::InternetViaIgw),
        Verdict::NoPath
    );
    assert_eq!(
        verdict(&table, DestinationClass::InternetIpv6),
        Verdict::NoPath
    );
    assert_eq!(verdict(&table, DestinationClass::Dns), Verdict::Open);
}

#[test]
fn the_default_acl_layout_is_cut_by_denies_and_the_agent_allow_would_reopen_the_nat() {
    let vpc = default_acl_layout();
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    assert_eq!(
        planned.entries.len(),
        2,
        "one DENY per direction: {planned:?}"
    );
    assert!(planned
        .entries
        .iter()
        .all(|e| e.rule_number == 1 && !e.allow));
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert!(open_classes(&table, &accepted()).is_empty(), "{table:#?}");
    let nat = table
        .iter()
        .find(|r| r.class == DestinationClass::InternetViaNat)
        .unwrap();
    assert!(
        nat.reason.contains("rule 1 (DENY inbound) of acl-default"),
        "{}",
        nat.reason
    );

    // The old agent ALLOW (src = task, tcp 443) in the one ACL every subnet shares opens the
    // internet through the NAT gateway on 443: exactly the hole a real account had.
    let mut agent = limits();
    agent.agent_acls.insert("acl-default".into());
    let with_agent = plan(&vpc, &task(), &agent).unwrap();
    let table = reachability(&with_entries(&vpc, &with_agent.entries), &task(), &none());
    let nat = table
        .iter()
        .find(|r| r.class == DestinationClass::InternetViaNat)
        .unwrap();
    assert_eq!(nat.verdict, Verdict::Open);
    assert!(nat.reason.starts_with("tcp/443"), "{}", nat.reason);
}

#[test]
fn an_acl_guarding_only_the_tasks_subnet_gets_no_entries() {
    let mut vpc = default_acl_layout();
    vpc.acls[0].subnet_ids.retain(|s| s != TASK_SUBNET);
    vpc.acls.push(Acl {
        id: "acl-app".into(),
        subnet_ids: vec![TASK_SUBNET.into()],
        entries: default_entries(),
    });
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    assert!(planned.entries.iter().all(|e| e.acl_id == "acl-default"));
    assert!(planned
        .skipped
        .iter()
        .any(|(acl, why)| acl == "acl-app" && why.contains("own subnet")));
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert!(open_classes(&table, &accepted()).is_empty(), "{table:#?}");
}

#[test]
fn an_owner_allow_at_rule_1_moves_nothing_ahead_of_it_and_is_refused() {
    let mut vpc = default_acl_layout();
    vpc.acls[0]
        .entries
        .push(entry(1, false, true, "10.0.0.0/16"));
    let refused = plan(&vpc, &task(), &limits()).unwrap_err();
    assert!(
        refused[0]
            .why
            .contains("rule 1 lets the workload's address through"),
        "{refused:?}"
    );
    // Owner rules spread through the range leave room below the first one that matches.
    let mut spread = default_acl_layout();
    spread.acls[0]
        .entries
        .push(entry(10, false, true, "10.0.0.0/16"));
    spread.acls[0]
        .entries
        .push(entry(5, false, true, "192.168.0.0/16"));
    spread.acls[0]
        .entries
        .push(entry(1, false, false, "203.0.113.0/24"));
    let planned = plan(&spread, &task(), &limits()).unwrap();
    let inbound = planned.entries.iter().find(|e| !e.egress).unwrap();
    assert_eq!(
        inbound.rule_number, 2,
        "the lowest free number below the owner's rule 10"
    );
    let table = reachability(&with_entries(&spread, &planned.entries), &task(), &none());
    assert!(open_classes(&table, &accepted()).is_empty(), "{table:#?}");
}

#[test]
fn the_quota_counts_per_direction_and_family_with_the_default_rule() {
    let mut vpc = default_acl_layout();
    // 18 owner rules + rule 100 + the default rule = 20 inbound IPv4 entries.
    for n in 0..18 {
        vpc.acls[0]
            .entries
            .push(entry(200 + n, false, false, &format!("198.51.100.{n}/32")));
    }
    let refused = plan(&vpc, &task(), &limits()).unwrap_err();
    assert!(refused[0].why.contains("quota of 20"), "{refused:?}");
    // IPv6 entries do not use the IPv4 allowance.
    let mut v6 = default_acl_layout();
    for n in 0..17 {
        v6.acls[0]
            .entries
            .push(entry(200 + n, false, false, &format!("2600:1f18::{n}/128")));
    }
    assert!(plan(&v6, &task(), &limits()).is_ok());
}

#[test]
fn headroom_is_the_smaller_of_free_numbers_and_quota() {
    let planned = plan(&default_acl_layout(), &task(), &limits()).unwrap();
    // 20 - (rule 100 + default + this task's DENY) = 17 more per direction.
    assert_eq!(planned.vpc_headroom(), Some(17));
    let narrow = Limits {
        first: 1,
        last: 4,
        ..limits()
    };
    let planned = plan(&default_acl_layout(), &task(), &narrow).unwrap();
    assert_eq!(planned.vpc_headroom(), Some(3));
}

#[test]
fn a_public_ip_task_reaches_the_internet_past_any_acl_entry_for_it() {
    let mut vpc = default_acl_layout();
    vpc.route_tables[0].routes[1].target = RouteTarget::InternetGateway("igw-1".into());
    let mut public = task();
    public.public_ip = Some("198.51.100.7".into());
    let planned = plan(&vpc, &public, &limits()).unwrap();
    let table = reachability(&with_entries(&vpc, &planned.entries), &public, &none());
    assert_eq!(
        open_classes(&table, &accepted()),
        [DestinationClass::InternetViaIgw]
    );
    // Without the public IP the route to the IGW leads nowhere.
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert_eq!(
        verdict(&table, DestinationClass::InternetViaIgw),
        Verdict::NoPath
    );
}

#[test]
fn a_dual_stack_task_needs_its_ipv6_cut_too() {
    let mut vpc = default_acl_layout();
    for (subnet, net) in vpc.subnets.iter_mut().zip([
        "2600:1f18:0:1::/64",
        "2600:1f18:0:0::/64",
        "2600:1f18:0:2::/64",
    ]) {
        subnet.ipv6_cidrs.push(match cidr(net) {
            IpNet::V6(v6) => v6,
            IpNet::V4(_) => unreachable!(),
        });
    }
    vpc.acls[0].entries.push(entry(101, false, true, "::/0"));
    vpc.acls[0].entries.push(entry(101, true, true, "::/0"));
    vpc.route_tables[0].routes.push(Route {
        destination: Destination::Cidr(cidr("::/0")),
        target: RouteTarget::EgressOnlyInternetGateway("eigw-1".into()),
    });
    let mut dual = task();
    dual.ipv6 = Some("2600:1f18:0:1::5".parse().unwrap());
    let planned = plan(&vpc, &dual, &limits()).unwrap();
    assert_eq!(
        planned.entries.len(),
        4,
        "a /32 and a /128 DENY per direction"
    );
    let table = reachability(&with_entries(&vpc, &planned.entries), &dual, &none());
    assert_eq!(
        verdict(&table, DestinationClass::OtherSubnets),
        Verdict::Cut,
        "{table:#?}"
    );
    // The egress-only gateway is reached straight from the task's subnet: no entry for the
    // task's address can stop it.
    assert_eq!(
        open_classes(&table, &accepted()),
        [DestinationClass::InternetIpv6]
    );
}

#[test]
fn gateway_endpoints_and_peering_leave_from_the_tasks_own_subnet() {
    let mut vpc = default_acl_layout();
    vpc.route_tables[0].routes.push(Route {
        destination: Destination::PrefixList("pl-63a5400a".into()),
        target: RouteTarget::GatewayEndpoint("vpce-s3".into()),
    });
    vpc.route_tables[0].routes.push(Route {
        destination: Destination::Cidr(cidr("172.16.0.0/16")),
        target: RouteTarget::Peering("pcx-1".into()),
    });
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert_eq!(
        open_classes(&table, &accepted()),
        [
            DestinationClass::PeeredTransitOnPremises,
            DestinationClass::GatewayEndpoints
        ]
    );
}

#[test]
fn a_transit_gateway_attachment_subnet_is_a_boundary_the_quarantine_cuts() {
    let mut vpc = default_acl_layout();
    vpc.route_tables[0].routes.push(Route {
        destination: Destination::Cidr(cidr("10.50.0.0/16")),
        target: RouteTarget::TransitGateway("tgw-1".into()),
    });
    vpc.transit_attachments.push(TransitAttachment {
        transit_gateway_id: "tgw-1".into(),
        subnet_ids: vec![DATA_SUBNET.into()],
    });
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert_eq!(
        verdict(&table, DestinationClass::PeeredTransitOnPremises),
        Verdict::Cut
    );
}

#[test]
fn a_nat_gateway_in_the_tasks_own_subnet_cannot_be_cut() {
    let mut vpc = default_acl_layout();
    vpc.nat_gateways[0].subnet_id = TASK_SUBNET.into();
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert_eq!(
        verdict(&table, DestinationClass::InternetViaNat),
        Verdict::Open
    );
}

#[test]
fn an_agent_allow_only_in_an_endpoint_only_acl_keeps_everything_else_cut() {
    let mut vpc = default_acl_layout();
    vpc.subnets.push(subnet("subnet-endpoints", "10.0.9.0/24"));
    vpc.endpoints[0].subnet_ids = vec!["subnet-endpoints".into()];
    vpc.acls.push(Acl {
        id: "acl-endpoints".into(),
        subnet_ids: vec!["subnet-endpoints".into()],
        entries: default_entries(),
    });
    let mut agent = limits();
    agent.agent_acls.insert("acl-endpoints".into());
    let planned = plan(&vpc, &task(), &agent).unwrap();
    assert_eq!(planned.entries.iter().filter(|e| e.allow).count(), 2);
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    // The endpoint's subnet answers on 443; nothing else is open.
    assert_eq!(
        open_classes(&table, &accepted()),
        [
            DestinationClass::OtherSubnets,
            DestinationClass::InterfaceEndpoints
        ]
    );
    let endpoints = table
        .iter()
        .find(|r| r.class == DestinationClass::InterfaceEndpoints)
        .unwrap();
    assert!(
        endpoints.reason.starts_with("tcp/443"),
        "{}",
        endpoints.reason
    );
}

#[test]
fn ports_are_not_intersected_across_a_nat_gateway() {
    // Replies come back to the NAT gateway on its own ephemeral port and go on to the task on
    // the task's: different packets, so one boundary's port range does not cut the other's.
    let mut vpc = default_acl_layout();
    vpc.subnets.retain(|s| s.id != DATA_SUBNET);
    vpc.endpoints.clear();
    let tcp = |number: i32, egress: bool, net: &str, from: u16, to: u16| AclEntry {
        protocol: 6,
        ports: Some((from, to)),
        ..entry(number, egress, true, net)
    };
    vpc.acls = vec![
        Acl {
            id: "acl-app".into(),
            subnet_ids: vec![TASK_SUBNET.into()],
            entries: vec![
                // Nothing leaves; replies on the task's ephemeral ports come in.
                tcp(100, false, "0.0.0.0/0", 30000, 40000),
                entry(DEFAULT_RULE, false, false, "0.0.0.0/0"),
                entry(DEFAULT_RULE, true, false, "0.0.0.0/0"),
            ],
        },
        Acl {
            id: "acl-public".into(),
            subnet_ids: vec![NAT_SUBNET.into()],
            entries: vec![
                tcp(100, false, "10.0.0.0/16", 443, 443),
                tcp(110, false, "0.0.0.0/0", 1024, 2000),
                tcp(100, true, "0.0.0.0/0", 443, 443),
                tcp(110, true, "10.0.0.0/16", 30000, 40000),
                entry(DEFAULT_RULE, false, false, "0.0.0.0/0"),
                entry(DEFAULT_RULE, true, false, "0.0.0.0/0"),
            ],
        },
    ];
    let table = reachability(&vpc, &task(), &none());
    assert_eq!(
        verdict(&table, DestinationClass::InternetViaNat),
        Verdict::Open,
        "{table:#?}"
    );
}

#[test]
fn a_firewall_endpoint_route_is_not_a_gateway_endpoint() {
    let mut vpc = default_acl_layout();
    vpc.route_tables[0].routes[1].target = RouteTarget::ApplianceEndpoint("vpce-gwlb".into());
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert_eq!(
        verdict(&table, DestinationClass::GatewayEndpoints),
        Verdict::NoPath
    );
    assert_eq!(
        open_classes(&table, &accepted()),
        [DestinationClass::OtherRoutes]
    );
}

#[test]
fn a_load_balancer_in_the_tasks_subnet_is_reported_apart_from_same_subnet() {
    let mut vpc = default_acl_layout();
    vpc.load_balancer_enis.push(LoadBalancerEni {
        id: "eni-alb".into(),
        subnet_id: TASK_SUBNET.into(),
        description: "ELB app/checkout/50dc6c495c0c9188".into(),
    });
    let planned = plan(&vpc, &task(), &limits()).unwrap();
    let table = reachability(&with_entries(&vpc, &planned.entries), &task(), &none());
    assert_eq!(
        open_classes(&table, &accepted()),
        [DestinationClass::LoadBalancersInOwnSubnet]
    );
}

// --- Properties, against a packet-by-packet evaluator written independently of acl.rs ---

/// AWS's rule for one packet at one boundary: the lowest-numbered entry of that direction whose
/// CIDR holds the matched address and whose protocol and ports match decides; none: denied.
fn packet_passes(acl: &Acl, egress: bool, matched: IpAddr, protocol: u8, port: u16) -> bool {
    let mut entries: Vec<&AclEntry> = acl.entries.iter().filter(|e| e.egress == egress).collect();
    entries.sort_by_key(|e| e.rule_number);
    for e in entries {
        if !e.cidr.contains(&matched) {
            continue;
        }
        let protocol_matches = e.protocol == -1 || e.protocol == i32::from(protocol);
        let port_matches = match (protocol, e.ports) {
            (6 | 17, Some((from, to))) if e.protocol != -1 => (from..=to).contains(&port),
            _ => true,
        };
        if protocol_matches && port_matches {
            return e.allow;
        }
    }
    false
}

fn arb_entry() -> impl Strategy<Value = AclEntry> {
    let nets = prop::sample::select(vec![
        "0.0.0.0/0",
        "10.0.0.0/16",
        "10.0.1.0/24",
        "10.0.1.5/32",
        "10.0.2.0/24",
        "10.0.2.128/25",
        "10.0.0.0/24",
        "192.168.0.0/16",
    ]);
    (
        1i32..120,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![-1, 6, 17, 1]),
        nets,
        0u16..2000,
        0u16..2000,
    )
        .prop_map(|(number, egress, allow, protocol, net, a, b)| AclEntry {
            rule_number: number,
            egress,
            allow,
            protocol,
            cidr: cidr(net),
            ports: matches!(protocol, 6 | 17).then(|| (a.min(b), a.max(b))),
            icmp: None,
        })
}

fn arb_acl(id: &'static str, subnets: Vec<String>) -> impl Strategy<Value = Acl> {
    prop::collection::vec(arb_entry(), 0..8).prop_map(move |mut entries| {
        // Rule numbers are unique per direction.
        let mut seen = BTreeSet::new();
        entries.retain(|e| seen.insert((e.egress, e.rule_number)));
        entries.push(entry(DEFAULT_RULE, false, false, "0.0.0.0/0"));
        entries.push(entry(DEFAULT_RULE, true, false, "0.0.0.0/0"));
        Acl {
            id: id.into(),
            subnet_ids: subnets.clone(),
            entries,
        }
    })
}

fn arb_layout() -> impl Strategy<Value = Vpc> {
    (
        arb_acl("acl-a", vec![TASK_SUBNET.into()]),
        arb_acl("acl-b", vec![NAT_SUBNET.into(), DATA_SUBNET.into()]),
        any::<bool>(),
    )
        .prop_map(|(own, others, shared)| {
            let mut vpc = default_acl_layout();
            vpc.acls = if shared {
                let mut one = others;
                one.subnet_ids.push(TASK_SUBNET.into());
                vec![one]
            } else {
                vec![own, others]
            };
            vpc
        })
}

/// Sample packets: protocols, and ports on both sides of every rule's port boundaries.
fn sample_packets(vpc: &Vpc) -> Vec<(u8, u16)> {
    let mut ports: BTreeSet<u16> = [0, 22, 443, 1023, 1024, 65535].into_iter().collect();
    for acl in &vpc.acls {
        for e in &acl.entries {
            if let Some((from, to)) = e.ports {
                for p in [from.saturating_sub(1), from, to, to.saturating_add(1)] {
                    ports.insert(p);
                }
            }
        }
    }
    let mut packets: Vec<(u8, u16)> = Vec::new();
    for &port in &ports {
        packets.push((6, port));
        packets.push((17, port));
    }
    packets.push((1, 0));
    packets.push((47, 0));
    packets
}

/// Does any sampled packet get from the task to `remote` in the data subnet (or back)?
fn any_packet_to_data_subnet(vpc: &Vpc) -> bool {
    let own = vpc.acl_of(TASK_SUBNET).unwrap();
    let far = vpc.acl_of(DATA_SUBNET).unwrap();
    let task: IpAddr = "10.0.1.5".parse().unwrap();
    let remotes: Vec<IpAddr> = ["10.0.2.1", "10.0.2.200", "10.0.2.254"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    sample_packets(vpc).into_iter().any(|(protocol, port)| {
        remotes.iter().any(|&remote| {
            let out = packet_passes(own, true, remote, protocol, port)
                && packet_passes(far, false, task, protocol, port);
            let back = packet_passes(far, true, task, protocol, port)
                && packet_passes(own, false, remote, protocol, port);
            out || back
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whenever the model says "cut", no packet gets through.
    #[test]
    fn a_cut_is_never_claimed_for_traffic_that_passes(vpc in arb_layout()) {
        let table = reachability(&vpc, &task(), &none());
        let other = table.iter().find(|r| r.class == DestinationClass::OtherSubnets).unwrap();
        if other.verdict == Verdict::Cut {
            prop_assert!(!any_packet_to_data_subnet(&vpc), "{other:?}\n{vpc:#?}");
        }
    }

    /// Whenever the planner succeeds, the model finds nothing open but what is accepted, and no
    /// packet gets through to another subnet.
    #[test]
    fn a_planned_quarantine_is_contained(vpc in arb_layout()) {
        if let Ok(planned) = plan(&vpc, &task(), &limits()) {
            let after = with_entries(&vpc, &planned.entries);
            let table = reachability(&after, &task(), &none());
            prop_assert!(open_classes(&table, &accepted()).is_empty(), "{table:#?}\n{after:#?}");
            prop_assert!(!any_packet_to_data_subnet(&after));
        }
    }
}
