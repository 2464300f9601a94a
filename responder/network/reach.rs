//! Reachability per destination class: for each route out of the workload's subnet, the subnet
//! boundaries each direction of the flow crosses, and whether the ACLs at those boundaries let
//! anything through. A class is cut only when every flow of it is cut in both directions.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::acl::{evaluate, Matched};
use super::traffic::Traffic;
use super::{Acl, Destination, RouteTarget, Vpc, Workload};

/// The destinations a workload may reach, grouped as people reason about them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationClass {
    /// The internet through a NAT gateway.
    InternetViaNat,
    /// The internet through an internet gateway (needs a public IPv4 address).
    InternetViaIgw,
    /// The IPv6 internet (egress-only or internet gateway).
    InternetIpv6,
    /// Other subnets of the VPC (NAT gateways, load balancers, data stores...).
    OtherSubnets,
    /// Networks beyond the VPC: peered VPCs, transit gateways, on-premises (VPN, Direct Connect).
    PeeredTransitOnPremises,
    /// S3 and DynamoDB through gateway endpoints.
    GatewayEndpoints,
    /// Interface VPC endpoints (AWS services, PrivateLink).
    InterfaceEndpoints,
    /// Hosts in the workload's own subnet: no network ACL sees this traffic.
    SameSubnet,
    /// DNS to the Route 53 Resolver: filtered by no network ACL and no security group.
    Dns,
    /// The GuardDuty endpoint's own subnets, left open on purpose so the agent keeps reporting.
    GuarddutyAgent,
    /// Destinations behind other route targets: firewall or Gateway Load Balancer endpoints,
    /// network interfaces, local or carrier gateways.
    OtherRoutes,
    /// Load balancer nodes in the workload's own subnet: what they relay (from the internet,
    /// for an internet-facing one) reaches the workload without crossing a network ACL.
    LoadBalancersInOwnSubnet,
    /// Instance and task metadata (credentials), Time Sync, DHCP: link-local services no
    /// network ACL or security group filters.
    LinkLocalServices,
}

impl DestinationClass {
    /// The name in playbooks and reports.
    pub fn name(self) -> &'static str {
        match self {
            DestinationClass::InternetViaNat => "internet-via-nat",
            DestinationClass::InternetViaIgw => "internet-via-igw",
            DestinationClass::InternetIpv6 => "internet-ipv6",
            DestinationClass::OtherSubnets => "other-subnets",
            DestinationClass::PeeredTransitOnPremises => "peered-transit-on-premises",
            DestinationClass::GatewayEndpoints => "gateway-endpoints",
            DestinationClass::InterfaceEndpoints => "interface-endpoints",
            DestinationClass::SameSubnet => "same-subnet",
            DestinationClass::Dns => "dns",
            DestinationClass::GuarddutyAgent => "guardduty-agent",
            DestinationClass::OtherRoutes => "other-routes",
            DestinationClass::LoadBalancersInOwnSubnet => "load-balancers-in-own-subnet",
            DestinationClass::LinkLocalServices => "link-local-services",
        }
    }
}

/// Whether traffic passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing passes in either direction.
    Cut,
    /// Something passes in at least one direction.
    Open,
    /// There is no route (or nothing there) to begin with.
    NoPath,
}

/// A rule that decided, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// The ACL.
    pub acl_id: String,
    /// The rule number (32767: the default rule).
    pub rule_number: i32,
    /// Outbound (true) or inbound.
    pub egress: bool,
    /// Whether it allows (true) or denies.
    pub allow: bool,
}

/// One row of the reachability table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reachability {
    /// The class of destination.
    pub class: DestinationClass,
    /// Cut, open or no path.
    pub verdict: Verdict,
    /// Why, in words, naming the deciding rule and ACL.
    pub reason: String,
    /// The rules that decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleRef>,
}

/// One boundary crossing: an ACL, a direction, and the address its rules are compared with.
#[derive(Debug, Clone)]
struct Hop<'a> {
    acl: &'a Acl,
    egress: bool,
    matched: Matched,
    /// Hops of one segment see the same packet; a NAT gateway starts a new one (it rewrites
    /// addresses and ports), so ports are not intersected across it.
    segment: u8,
}

/// Both directions of the traffic between the workload and one destination.
#[derive(Debug, Clone)]
struct Flow<'a> {
    label: String,
    /// From the workload.
    outbound: Vec<Hop<'a>>,
    /// To the workload.
    inbound: Vec<Hop<'a>>,
}

enum PathResult {
    Cut(RuleRef),
    Open {
        example: String,
        rules: Vec<RuleRef>,
    },
}

fn rule_ref(hop: &Hop<'_>, rule_number: i32, allow: bool) -> RuleRef {
    RuleRef {
        acl_id: hop.acl.id.clone(),
        rule_number,
        egress: hop.egress,
        allow,
    }
}

fn path_result(hops: &[Hop<'_>]) -> PathResult {
    let mut example = None;
    let mut rules = Vec::new();
    let mut passing = Traffic::all();
    let mut segment = hops.first().map(|h| h.segment);
    for hop in hops {
        if Some(hop.segment) != segment {
            example.get_or_insert_with(|| passing.example());
            passing = Traffic::all();
            segment = Some(hop.segment);
        }
        let result = evaluate(hop.acl, hop.egress, &hop.matched);
        if result.allowed.is_empty() {
            let number = result.denied_by.unwrap_or(super::DEFAULT_RULE);
            return PathResult::Cut(rule_ref(hop, number, false));
        }
        if let Some(number) = result.allowed_by {
            rules.push(rule_ref(hop, number, true));
        }
        passing = passing.intersect(&result.allowed);
        if passing.is_empty() {
            // No single boundary denies everything, but together they do (same packet).
            let number = result.denied_by.unwrap_or(super::DEFAULT_RULE);
            return PathResult::Cut(rule_ref(hop, number, false));
        }
    }
    PathResult::Open {
        example: example
            .flatten()
            .or_else(|| passing.example())
            .unwrap_or_else(|| "traffic".to_string()),
        rules,
    }
}

fn describe_rule(rule: &RuleRef) -> String {
    let number = if super::is_default_rule(rule.rule_number) {
        "the default rule".to_string()
    } else {
        format!("rule {}", rule.rule_number)
    };
    format!(
        "{number} ({} {}) of {}",
        if rule.allow { "ALLOW" } else { "DENY" },
        if rule.egress { "outbound" } else { "inbound" },
        rule.acl_id
    )
}

/// Flows of one class, reduced to a row.
fn row(class: DestinationClass, flows: Vec<Flow<'_>>, no_path: Option<String>) -> Reachability {
    if flows.is_empty() {
        return Reachability {
            class,
            verdict: Verdict::NoPath,
            reason: no_path.unwrap_or_else(|| "no route".to_string()),
            rules: Vec::new(),
        };
    }
    let mut deciding = Vec::new();
    for flow in &flows {
        for (direction, hops) in [("from", &flow.outbound), ("to", &flow.inbound)] {
            if hops.is_empty() {
                return Reachability {
                    class,
                    verdict: Verdict::Open,
                    reason: format!(
                        "traffic {direction} the workload and {} crosses no network ACL",
                        flow.label
                    ),
                    rules: Vec::new(),
                };
            }
            match path_result(hops) {
                PathResult::Cut(rule) => {
                    if !deciding.contains(&rule) {
                        deciding.push(rule);
                    }
                }
                PathResult::Open { example, rules } => {
                    let through: Vec<String> = rules.iter().map(describe_rule).collect();
                    return Reachability {
                        class,
                        verdict: Verdict::Open,
                        reason: format!(
                            "{example} {direction} the workload and {} passes {}",
                            flow.label,
                            if through.is_empty() {
                                "every boundary".to_string()
                            } else {
                                through.join(", ")
                            }
                        ),
                        rules,
                    };
                }
            }
        }
    }
    let by: Vec<String> = deciding.iter().take(4).map(describe_rule).collect();
    Reachability {
        class,
        verdict: Verdict::Cut,
        reason: format!(
            "cut in both directions ({}) by {}{}",
            crate::report::count(flows.len(), "flow", "flows"),
            by.join(", "),
            if deciding.len() > 4 { ", ..." } else { "" }
        ),
        rules: deciding,
    }
}

/// The workload's address in the family of `net`, if it has one.
fn own_address(workload: &Workload, net: &IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(_) => Some(IpAddr::V4(workload.ipv4)),
        IpNet::V6(_) => workload.ipv6.map(IpAddr::V6),
    }
}

/// What the route leads to inside the VPC.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A host in a subnet: the flow ends there.
    Host,
    /// A NAT gateway: its own new packet leaves its subnet for the remote address.
    Nat,
    /// A transit gateway attachment: the packet leaves the VPC through it; the attachment
    /// subnet's inbound rules see the workload's packets, its outbound rules the replies.
    Transit,
}

struct Builder<'a> {
    vpc: &'a Vpc,
    workload: &'a Workload,
    own_acl: Option<&'a Acl>,
}

impl<'a> Builder<'a> {
    /// The flow to `remote` addresses through a subnet of the VPC.
    fn through(&self, label: String, subnet: &str, remote: IpNet, via: Via) -> Option<Flow<'a>> {
        let own = Matched::Address(own_address(self.workload, &remote)?);
        let far = Matched::Range(remote);
        let mut outbound = Vec::new();
        let mut inbound = Vec::new();
        let own_acl = self.own_acl;
        let hop = |acl: &'a Acl, egress: bool, matched: Matched| Hop {
            acl,
            egress,
            matched,
            segment: 0,
        };
        // The NAT gateway's own packets, to and from the remote address.
        let natted = |acl: &'a Acl, egress: bool, matched: Matched| Hop {
            segment: 1,
            ..hop(acl, egress, matched)
        };
        if subnet == self.workload.subnet_id {
            match (via, own_acl) {
                // The NAT gateway's own packet leaves the subnet (and its reply comes back in).
                (Via::Nat, Some(acl)) => {
                    outbound.push(natted(acl, true, far));
                    inbound.push(natted(acl, false, far));
                }
                // To an attachment in the same subnet both rule sets see the workload's
                // packets; the replies are evaluated by neither.
                (Via::Transit, Some(acl)) => {
                    outbound.push(hop(acl, true, far));
                    outbound.push(hop(acl, false, own));
                }
                _ => {}
            }
        } else {
            if let Some(acl) = own_acl {
                outbound.push(hop(acl, true, far));
            }
            if let Some(acl) = self.vpc.acl_of(subnet) {
                outbound.push(hop(acl, false, own));
                if via == Via::Nat {
                    outbound.push(natted(acl, true, far));
                    inbound.push(natted(acl, false, far));
                }
                inbound.push(hop(acl, true, own));
            }
            if let Some(acl) = own_acl {
                inbound.push(hop(acl, false, far));
            }
        }
        Some(Flow {
            label,
            outbound,
            inbound,
        })
    }

    /// The flow to `remote` addresses that leaves the VPC straight from the workload's subnet
    /// (an internet or virtual private gateway, a peering connection, a gateway endpoint).
    fn leaving(&self, label: String, remote: IpNet) -> Option<Flow<'a>> {
        own_address(self.workload, &remote)?;
        let far = Matched::Range(remote);
        let (outbound, inbound) = match self.own_acl {
            Some(acl) => (
                vec![Hop {
                    acl,
                    egress: true,
                    matched: far,
                    segment: 0,
                }],
                vec![Hop {
                    acl,
                    egress: false,
                    matched: far,
                    segment: 0,
                }],
            ),
            None => (Vec::new(), Vec::new()),
        };
        Some(Flow {
            label,
            outbound,
            inbound,
        })
    }
}

fn any_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::default())
}

/// The reachability table for a workload. `agent_subnets` hold only the GuardDuty endpoint and
/// are reported apart (the agent's path), not as other subnets or interface endpoints.
pub fn reachability(
    vpc: &Vpc,
    workload: &Workload,
    agent_subnets: &BTreeSet<String>,
) -> Vec<Reachability> {
    let builder = Builder {
        vpc,
        workload,
        own_acl: vpc.acl_of(&workload.subnet_id),
    };
    let routes = vpc
        .route_table_of(&workload.subnet_id)
        .map(|t| t.routes.as_slice())
        .unwrap_or_default();

    let mut nat = Vec::new();
    let mut igw = Vec::new();
    let mut ipv6 = Vec::new();
    let mut beyond = Vec::new();
    let mut gateway_endpoints = Vec::new();
    let mut other_routes = Vec::new();
    let mut igw_without_public_ip = false;
    for route in routes {
        let remote = match &route.destination {
            Destination::Cidr(net) => *net,
            // Prefix lists (AWS service ranges) are not expanded: any address may be in them.
            Destination::PrefixList(_) => any_v4(),
        };
        let v6 = matches!(remote, IpNet::V6(_));
        match &route.target {
            RouteTarget::Local => {}
            RouteTarget::NatGateway(id) => {
                let label = format!("{remote} via NAT gateway {id}");
                if let Some(gateway) = vpc.nat_gateways.iter().find(|n| &n.id == id) {
                    nat.extend(builder.through(label, &gateway.subnet_id, remote, Via::Nat));
                } else {
                    // Where the NAT gateway is is unknown: only the own subnet's ACL is sure.
                    nat.extend(builder.leaving(label, remote));
                }
            }
            RouteTarget::InternetGateway(id) if v6 => {
                ipv6.extend(builder.leaving(format!("{remote} via internet gateway {id}"), remote));
            }
            RouteTarget::InternetGateway(id) => {
                if workload.public_ip.is_some() {
                    igw.extend(
                        builder.leaving(format!("{remote} via internet gateway {id}"), remote),
                    );
                } else {
                    igw_without_public_ip = true;
                }
            }
            RouteTarget::EgressOnlyInternetGateway(id) => {
                ipv6.extend(builder.leaving(
                    format!("{remote} via egress-only internet gateway {id}"),
                    remote,
                ));
            }
            RouteTarget::TransitGateway(id) => {
                let subnets: Vec<&String> = vpc
                    .transit_attachments
                    .iter()
                    .filter(|a| &a.transit_gateway_id == id)
                    .flat_map(|a| &a.subnet_ids)
                    .collect();
                if subnets.is_empty() {
                    beyond.extend(
                        builder.leaving(format!("{remote} via transit gateway {id}"), remote),
                    );
                }
                for subnet in subnets {
                    beyond.extend(builder.through(
                        format!("{remote} via transit gateway {id} ({subnet})"),
                        subnet,
                        remote,
                        Via::Transit,
                    ));
                }
            }
            RouteTarget::Peering(id) => {
                beyond.extend(builder.leaving(format!("{remote} via peering {id}"), remote));
            }
            RouteTarget::VirtualPrivateGateway(id) => {
                beyond.extend(
                    builder.leaving(format!("{remote} via virtual private gateway {id}"), remote),
                );
            }
            RouteTarget::GatewayEndpoint(id) => {
                gateway_endpoints.extend(builder.leaving(format!("gateway endpoint {id}"), remote));
            }
            RouteTarget::ApplianceEndpoint(id) | RouteTarget::Other(id) => {
                other_routes.extend(builder.leaving(format!("{remote} via {id}"), remote));
            }
        }
    }

    let mut other_subnets = Vec::new();
    let mut agent = Vec::new();
    for subnet in vpc.subnets.iter().filter(|s| s.id != workload.subnet_id) {
        let flows = if agent_subnets.contains(&subnet.id) {
            &mut agent
        } else {
            &mut other_subnets
        };
        let cidrs = subnet
            .cidr
            .map(IpNet::V4)
            .into_iter()
            .chain(subnet.ipv6_cidrs.iter().copied().map(IpNet::V6));
        for cidr in cidrs {
            flows.extend(builder.through(
                format!("subnet {} ({cidr})", subnet.id),
                &subnet.id,
                cidr,
                Via::Host,
            ));
        }
    }
    let mut interface_endpoints = Vec::new();
    for endpoint in vpc.endpoints.iter().filter(|e| e.interface) {
        for subnet_id in endpoint
            .subnet_ids
            .iter()
            .filter(|s| !agent_subnets.contains(*s))
        {
            let label = format!(
                "endpoint {} ({}) in {subnet_id}",
                endpoint.id, endpoint.service
            );
            if subnet_id == &workload.subnet_id {
                interface_endpoints.push(Flow {
                    label,
                    outbound: Vec::new(),
                    inbound: Vec::new(),
                });
                continue;
            }
            let cidr = vpc.subnet(subnet_id).and_then(|s| s.cidr).map(IpNet::V4);
            interface_endpoints.extend(builder.through(
                label,
                subnet_id,
                cidr.unwrap_or_else(any_v4),
                Via::Host,
            ));
        }
    }

    vec![
        row(DestinationClass::InternetViaNat, nat, None),
        row(
            DestinationClass::InternetViaIgw,
            igw,
            igw_without_public_ip.then(|| {
                "the route to the internet gateway is unusable: the workload has no public IPv4 address"
                    .to_string()
            }),
        ),
        row(
            DestinationClass::InternetIpv6,
            ipv6,
            workload
                .ipv6
                .is_none()
                .then(|| "the workload has no IPv6 address".to_string()),
        ),
        row(
            DestinationClass::OtherSubnets,
            other_subnets,
            Some("the VPC has no other subnet".to_string()),
        ),
        row(DestinationClass::PeeredTransitOnPremises, beyond, None),
        row(DestinationClass::GatewayEndpoints, gateway_endpoints, None),
        row(DestinationClass::OtherRoutes, other_routes, None),
        row(
            DestinationClass::InterfaceEndpoints,
            interface_endpoints,
            Some("the VPC has no interface endpoint".to_string()),
        ),
        row(
            DestinationClass::GuarddutyAgent,
            agent,
            Some("no subnet is set aside for the GuardDuty endpoint".to_string()),
        ),
        load_balancers_in_own_subnet(vpc, workload),
        Reachability {
            class: DestinationClass::SameSubnet,
            verdict: Verdict::Open,
            reason: format!(
                "traffic between the workload and hosts in its own subnet ({}) crosses no network ACL",
                workload.subnet_id
            ),
            rules: Vec::new(),
        },
        Reachability {
            class: DestinationClass::Dns,
            verdict: Verdict::Open,
            reason: "DNS queries to the Route 53 Resolver are not filtered by network ACLs or security groups (Route 53 Resolver DNS Firewall can filter them)".to_string(),
            rules: Vec::new(),
        },
        Reachability {
            class: DestinationClass::LinkLocalServices,
            verdict: Verdict::Open,
            reason: "instance and task metadata (credentials at 169.254.169.254 and 169.254.170.2), Time Sync and DHCP are not filtered by network ACLs or security groups".to_string(),
            rules: Vec::new(),
        },
    ]
}

fn load_balancers_in_own_subnet(vpc: &Vpc, workload: &Workload) -> Reachability {
    let here: Vec<&str> = vpc
        .load_balancer_enis
        .iter()
        .filter(|e| e.subnet_id == workload.subnet_id)
        .map(|e| e.description.as_str())
        .collect();
    if here.is_empty() {
        return Reachability {
            class: DestinationClass::LoadBalancersInOwnSubnet,
            verdict: Verdict::NoPath,
            reason: "no load balancer node in the workload's subnet".to_string(),
            rules: Vec::new(),
        };
    }
    Reachability {
        class: DestinationClass::LoadBalancersInOwnSubnet,
        verdict: Verdict::Open,
        reason: format!(
            "{} in the workload's own subnet ({}) relay traffic that crosses no network ACL",
            here.join(", "),
            workload.subnet_id
        ),
        rules: Vec::new(),
    }
}

/// The classes left open that are not accepted: empty means contained.
pub fn open_classes(
    table: &[Reachability],
    accepted: &[DestinationClass],
) -> Vec<DestinationClass> {
    table
        .iter()
        .filter(|r| r.verdict == Verdict::Open && !accepted.contains(&r.class))
        .map(|r| r.class)
        .collect()
}
