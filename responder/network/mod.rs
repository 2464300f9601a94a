//! A model of a VPC's network as AWS evaluates it, for one workload's address: which classes of
//! destination it can reach and be reached from, and which rule decides at each subnet
//! boundary. Pure — built from described state, no I/O — and used three times: to plan the
//! quarantine entries ([`quarantine`]), to verify them from a fresh describe after they are
//! made, and to report what stays open ([`reach`]); the tests use it as their oracle.
//!
//! The semantics follow the Amazon VPC documentation
//! ([network ACLs](https://docs.aws.amazon.com/vpc/latest/userguide/vpc-network-acls.html),
//! [rules](https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html)): rules are
//! evaluated lowest number first and the first match decides; an inbound rule matches the
//! source address, an outbound rule the destination; ACLs are stateless, so each direction of a
//! flow is evaluated at every subnet boundary it crosses; traffic inside one subnet crosses no
//! ACL; a NAT gateway's path crosses the NAT subnet's ACL with the workload's own address; DNS
//! to the Route 53 Resolver is not filtered at all. Traffic to a transit gateway attachment is
//! evaluated by the attachment subnet's inbound rules (source: the workload) and the reply by
//! its outbound rules ([transit gateway NACLs](https://docs.aws.amazon.com/vpc/latest/tgw/tgw-nacls.html)).
//! Security groups are stateful and are not credited with cutting anything here (tracked
//! connections survive a rule change).

pub mod acl;
pub mod quarantine;
pub mod reach;
pub mod traffic;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// A VPC as described: the state the model reasons about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vpc {
    /// The VPC id.
    pub vpc_id: String,
    /// Its subnets.
    pub subnets: Vec<Subnet>,
    /// Its route tables (the main one applies to subnets without an explicit association).
    pub route_tables: Vec<RouteTable>,
    /// Its network ACLs with their associations.
    pub acls: Vec<Acl>,
    /// Its NAT gateways.
    pub nat_gateways: Vec<NatGateway>,
    /// Its VPC endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Its transit gateway attachments.
    pub transit_attachments: Vec<TransitAttachment>,
    /// Network interfaces of its load balancers (ALB, NLB, GWLB nodes).
    #[serde(default)]
    pub load_balancer_enis: Vec<LoadBalancerEni>,
}

/// A load balancer's network interface in a subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancerEni {
    /// The network interface.
    pub id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// Its description (`ELB app/NAME/ID` for an ALB, `ELB net/...` for an NLB).
    pub description: String,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    /// The subnet id.
    pub id: String,
    /// Its IPv4 CIDR.
    pub cidr: Option<Ipv4Net>,
    /// Its IPv6 CIDRs.
    #[serde(default)]
    pub ipv6_cidrs: Vec<Ipv6Net>,
}

/// A route table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTable {
    /// The route table id.
    pub id: String,
    /// The VPC's main route table (used by subnets without an explicit association).
    pub main: bool,
    /// Subnets explicitly associated with it.
    pub subnet_ids: Vec<String>,
    /// Its routes.
    pub routes: Vec<Route>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Where it leads.
    pub destination: Destination,
    /// Through what.
    pub target: RouteTarget,
}

/// A route's destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// An IPv4 or IPv6 CIDR.
    Cidr(IpNet),
    /// A managed prefix list (gateway endpoints, for instance).
    PrefixList(String),
}

/// A route's target, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum RouteTarget {
    /// The VPC itself.
    Local,
    /// An internet gateway.
    InternetGateway(String),
    /// An egress-only internet gateway (IPv6).
    EgressOnlyInternetGateway(String),
    /// A NAT gateway.
    NatGateway(String),
    /// A transit gateway.
    TransitGateway(String),
    /// A VPC peering connection.
    Peering(String),
    /// A virtual private gateway (VPN or Direct Connect to on-premises networks).
    VirtualPrivateGateway(String),
    /// A gateway VPC endpoint (S3, DynamoDB).
    GatewayEndpoint(String),
    /// Another kind of endpoint as a route target: a Gateway Load Balancer or Network
    /// Firewall endpoint (inspection appliances, onward to wherever they send it).
    ApplianceEndpoint(String),
    /// Anything else (a network interface, a carrier or local gateway...).
    Other(String),
}

/// A network ACL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    /// The ACL id.
    pub id: String,
    /// Subnets it guards.
    pub subnet_ids: Vec<String>,
    /// Its entries, in any order.
    pub entries: Vec<AclEntry>,
}

/// One network ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// Its number (32767 is the default `*` rule).
    pub rule_number: i32,
    /// Outbound (true) or inbound.
    pub egress: bool,
    /// Allow (true) or deny.
    pub allow: bool,
    /// IP protocol number, `-1` for all.
    pub protocol: i32,
    /// The one CIDR it matches: the source for inbound rules, the destination for outbound.
    pub cidr: IpNet,
    /// TCP/UDP port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code (`-1` for all), when the protocol is ICMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<(i32, i32)>,
}

/// The default rule's number (IPv4): it matches everything and denies. The IPv6 default rule is
/// 32768; both count toward the entry quota.
pub const DEFAULT_RULE: i32 = 32767;

/// Is this one of the ACL's default `*` rules (32767 for IPv4, 32768 for IPv6)?
pub fn is_default_rule(rule_number: i32) -> bool {
    rule_number >= DEFAULT_RULE
}

/// A NAT gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NatGateway {
    /// The NAT gateway id.
    pub id: String,
    /// The subnet it lives in.
    pub subnet_id: String,
}

/// A VPC endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The endpoint id.
    pub id: String,
    /// `com.amazonaws.REGION.SERVICE`.
    pub service: String,
    /// Interface endpoints live in subnets; gateway endpoints are route targets.
    pub interface: bool,
    /// Subnets holding its interfaces.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Its network interfaces.
    #[serde(default)]
    pub network_interface_ids: Vec<String>,
    /// Tagged `GuardDutyManaged=true`: GuardDuty created it and chooses its subnets.
    #[serde(default)]
    pub guardduty_managed: bool,
}

impl Endpoint {
    /// The GuardDuty agent's data-plane endpoint (`com.amazonaws.REGION.guardduty-data`, or
    /// its FIPS twin `guardduty-data-fips`).
    pub fn is_guardduty_agent(&self) -> bool {
        self.interface
            && (self.service.ends_with(".guardduty-data")
                || self.service.ends_with(".guardduty-data-fips"))
    }
}

/// A transit gateway's attachment to the VPC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitAttachment {
    /// The transit gateway.
    pub transit_gateway_id: String,
    /// The subnets holding its interfaces (one per Availability Zone).
    pub subnet_ids: Vec<String>,
}

/// The workload whose reachability is asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Its private IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// Its subnet.
    pub subnet_id: String,
    /// Its public IPv4 address, if any.
    pub public_ip: Option<String>,
}

impl Workload {
    /// Its addresses as host CIDRs: /32, and /128 when it has IPv6.
    pub fn host_cidrs(&self) -> Vec<IpNet> {
        std::iter::once(IpNet::from(IpAddr::V4(self.ipv4)))
            .chain(self.ipv6.map(|v6| IpNet::from(IpAddr::V6(v6))))
            .collect()
    }
}

impl Vpc {
    /// A subnet by id.
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.id == id)
    }

    /// The ACL guarding a subnet.
    pub fn acl_of(&self, subnet_id: &str) -> Option<&Acl> {
        self.acls
            .iter()
            .find(|a| a.subnet_ids.iter().any(|s| s == subnet_id))
    }

    /// The route table a subnet uses: its explicit association, else the main table.
    pub fn route_table_of(&self, subnet_id: &str) -> Option<&RouteTable> {
        self.route_tables
            .iter()
            .find(|t| t.subnet_ids.iter().any(|s| s == subnet_id))
            .or_else(|| self.route_tables.iter().find(|t| t.main))
    }
}

/// Parse a CIDR as AWS writes it, in canonical form (host bits cleared).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    text.trim().parse::<IpNet>().ok().map(|net| net.trunc())
}
