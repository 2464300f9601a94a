//! What the network model needs, described: the VPC's subnets, route tables, network ACLs, NAT
//! gateways, endpoints and transit gateway attachments, fetched concurrently (one round trip),
//! and converted into the model's types.

use aws_sdk_ec2::types::{Filter, RouteState, VpcEndpointType};

use crate::actions::{aws, Clients, StepError};
use crate::network::{
    parse_cidr, Acl, AclEntry, Destination, Endpoint, LoadBalancerEni, NatGateway, Route,
    RouteTable, RouteTarget, Subnet, TransitAttachment, Vpc,
};

/// Every item of a paginated describe, as a future (the SDK's paginators differ in type).
macro_rules! all_items {
    ($request:expr, $operation:literal) => {
        async {
            $request
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>()
                .await
                .map_err(aws($operation))
        }
    };
}

fn vpc_filter(vpc_id: &str) -> Filter {
    Filter::builder().name("vpc-id").values(vpc_id).build()
}

/// Learn the VPC of each subnet the account sees in the region (its own and those shared with
/// it; one page of up to 1,000), once per account and container, in the background: started
/// alongside a container's first DescribeTasks, so that the task's interface and its VPC are
/// described together in the next round trip instead of one after the other. EC2 has no call
/// that moves a subnet to another VPC, so what is learnt stays true. `None` once the listing
/// was made (or failed: it is not tried again); while it is under way, the task spawned waits
/// for it.
pub(super) fn start_learning_subnets(clients: &Clients) -> Option<tokio::task::JoinHandle<()>> {
    if clients.subnets_listed.initialized() {
        return None;
    }
    let clients = clients.clone();
    Some(tokio::spawn(async move {
        let stable = &clients.stable;
        clients
            .subnets_listed
            .get_or_init(|| async {
                match clients.ec2.describe_subnets().max_results(1000).send().await {
                    Ok(listed) => {
                        for subnet in listed.subnets() {
                            if let (Some(subnet_id), Some(vpc_id)) =
                                (subnet.subnet_id(), subnet.vpc_id())
                            {
                                stable.remember_subnet(subnet_id, vpc_id);
                            }
                        }
                    }
                    Err(error) => {
                        let error = aws("EC2 DescribeSubnets (the account's subnets)")(error);
                        tracing::warn!(error = %error, "subnets not listed; each task's VPC is learnt from its network interface");
                    }
                }
            })
            .await;
    }))
}

/// Describe a VPC for the model.
pub async fn describe_vpc(clients: &Clients, vpc_id: &str) -> Result<Vpc, StepError> {
    let ec2 = &clients.ec2;
    let subnets = all_items!(
        ec2.describe_subnets().filters(vpc_filter(vpc_id)),
        "EC2 DescribeSubnets"
    );
    let tables = all_items!(
        ec2.describe_route_tables().filters(vpc_filter(vpc_id)),
        "EC2 DescribeRouteTables"
    );
    let nats = all_items!(
        ec2.describe_nat_gateways().filter(vpc_filter(vpc_id)),
        "EC2 DescribeNatGateways"
    );
    let endpoints = all_items!(
        ec2.describe_vpc_endpoints().filters(vpc_filter(vpc_id)),
        "EC2 DescribeVpcEndpoints"
    );
    let load_balancers = all_items!(
        ec2.describe_network_interfaces()
            .filters(vpc_filter(vpc_id))
            .filters(
                Filter::builder()
                    .name("description")
                    .values("ELB *")
                    .build()
            ),
        "EC2 DescribeNetworkInterfaces (load balancers)"
    );
    let attachments = all_items!(
        ec2.describe_transit_gateway_vpc_attachments()
            .filters(vpc_filter(vpc_id)),
        "EC2 DescribeTransitGatewayVpcAttachments"
    );
    let (subnets, tables, acls, nats, endpoints, attachments, load_balancers) = tokio::try_join!(
        subnets,
        tables,
        describe_acls(clients, vpc_id),
        nats,
        endpoints,
        attachments,
        load_balancers
    )?;
    // A `vpce-` route target is a gateway endpoint (S3, DynamoDB) only if DescribeVpcEndpoints
    // says so; Gateway Load Balancer and firewall endpoints are inspection appliances.
    let gateway_endpoints: Vec<&str> = endpoints
        .iter()
        .filter(|e| e.vpc_endpoint_type() == Some(&VpcEndpointType::Gateway))
        .filter_map(|e| e.vpc_endpoint_id())
        .collect();
    let mut route_tables: Vec<RouteTable> = tables.iter().filter_map(route_table).collect();
    for route in route_tables.iter_mut().flat_map(|t| t.routes.iter_mut()) {
        if let RouteTarget::GatewayEndpoint(id) = &route.target {
            if !gateway_endpoints.contains(&id.as_str()) {
                route.target = RouteTarget::ApplianceEndpoint(id.clone());
            }
        }
    }
    Ok(Vpc {
        vpc_id: vpc_id.to_string(),
        subnets: subnets
            .iter()
            .filter_map(|s| {
                Some(Subnet {
                    id: s.subnet_id()?.to_string(),
                    cidr: s.cidr_block().and_then(|c| c.parse().ok()),
                    ipv6_cidrs: s
                        .ipv6_cidr_block_association_set()
                        .iter()
                        .filter_map(|a| a.ipv6_cidr_block()?.parse().ok())
                        .collect(),
                })
            })
            .collect(),
        route_tables,
        acls,
        nat_gateways: nats
            .iter()
            .filter(|n| {
                !matches!(
                    n.state().map(|s| s.as_str()),
                    Some("deleted" | "deleting" | "failed")
                )
            })
            .filter_map(|n| {
                Some(NatGateway {
                    id: n.nat_gateway_id()?.to_string(),
                    subnet_id: n.subnet_id()?.to_string(),
                })
            })
            .collect(),
        endpoints: endpoints
            .iter()
            .filter_map(|e| {
                Some(Endpoint {
                    id: e.vpc_endpoint_id()?.to_string(),
                    service: e.service_name().unwrap_or_default().to_string(),
                    interface: e.vpc_endpoint_type() == Some(&VpcEndpointType::Interface),
                    subnet_ids: e.subnet_ids().to_vec(),
                    network_interface_ids: e.network_interface_ids().to_vec(),
                    guardduty_managed: e
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some("GuardDutyManaged") && t.value() == Some("true")),
                })
            })
            .collect(),
        transit_attachments: attachments
            .iter()
            .filter_map(|a| {
                Some(TransitAttachment {
                    transit_gateway_id: a.transit_gateway_id()?.to_string(),
                    subnet_ids: a.subnet_ids().to_vec(),
                })
            })
            .collect(),
        load_balancer_enis: load_balancers
            .iter()
            .filter_map(|eni| {
                Some(LoadBalancerEni {
                    id: eni.network_interface_id()?.to_string(),
                    subnet_id: eni.subnet_id()?.to_string(),
                    description: eni.description().unwrap_or_default().to_string(),
                })
            })
            .collect(),
    })
}

/// The VPC's network ACLs, for the model.
pub(crate) async fn describe_acls(clients: &Clients, vpc_id: &str) -> Result<Vec<Acl>, StepError> {
    Ok(described_acls(clients, vpc_id)
        .await?
        .iter()
        .filter_map(acl)
        .collect())
}

/// The VPC's network ACLs as EC2 describes them.
pub(crate) async fn described_acls(
    clients: &Clients,
    vpc_id: &str,
) -> Result<Vec<aws_sdk_ec2::types::NetworkAcl>, StepError> {
    all_items!(
        clients
            .ec2
            .describe_network_acls()
            .filters(vpc_filter(vpc_id)),
        "EC2 DescribeNetworkAcls"
    )
    .await
}

/// One described ACL in the model's terms.
pub(crate) fn acl(described: &aws_sdk_ec2::types::NetworkAcl) -> Option<Acl> {
    Some(Acl {
        id: described.network_acl_id()?.to_string(),
        subnet_ids: described
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id().map(str::to_string))
            .collect(),
        entries: described.entries().iter().filter_map(acl_entry).collect(),
    })
}

fn acl_entry(entry: &aws_sdk_ec2::types::NetworkAclEntry) -> Option<AclEntry> {
    let cidr = parse_cidr(entry.cidr_block().or(entry.ipv6_cidr_block())?)?;
    Some(AclEntry {
        rule_number: entry.rule_number()?,
        egress: entry.egress()?,
        allow: entry.rule_action()?.as_str() == "allow",
        protocol: entry.protocol()?.parse().ok()?,
        cidr,
        ports: entry
            .port_range()
            .and_then(|p| Some((u16::try_from(p.from()?).ok()?, u16::try_from(p.to()?).ok()?))),
        icmp: entry
            .icmp_type_code()
            .map(|t| (t.r#type().unwrap_or(-1), t.code().unwrap_or(-1))),
    })
}

fn route_table(described: &aws_sdk_ec2::types::RouteTable) -> Option<RouteTable> {
    let associations = described.associations();
    Some(RouteTable {
        id: described.route_table_id()?.to_string(),
        main: associations.iter().any(|a| a.main() == Some(true)),
        subnet_ids: associations
            .iter()
            .filter_map(|a| a.subnet_id().map(str::to_string))
            .collect(),
        routes: described
            .routes()
            .iter()
            .filter(|r| r.state() != Some(&RouteState::Blackhole))
            .filter_map(route)
            .collect(),
    })
}

fn route(described: &aws_sdk_ec2::types::Route) -> Option<Route> {
    let destination = match (
        described.destination_cidr_block(),
        described.destination_ipv6_cidr_block(),
        described.destination_prefix_list_id(),
    ) {
        (Some(v4), _, _) => Destination::Cidr(parse_cidr(v4)?),
        (_, Some(v6), _) => Destination::Cidr(parse_cidr(v6)?),
        (_, _, Some(list)) => Destination::PrefixList(list.to_string()),
        _ => return None,
    };
    let target = if let Some(id) = described.nat_gateway_id() {
        RouteTarget::NatGateway(id.to_string())
    } else if let Some(id) = described.transit_gateway_id() {
        RouteTarget::TransitGateway(id.to_string())
    } else if let Some(id) = described.vpc_peering_connection_id() {
        RouteTarget::Peering(id.to_string())
    } else if let Some(id) = described.egress_only_internet_gateway_id() {
        RouteTarget::EgressOnlyInternetGateway(id.to_string())
    } else if let Some(id) = described.gateway_id() {
        match id {
            "local" => RouteTarget::Local,
            id if id.starts_with("igw-") => RouteTarget::InternetGateway(id.to_string()),
            id if id.starts_with("vgw-") => RouteTarget::VirtualPrivateGateway(id.to_string()),
            id if id.starts_with("vpce-") => RouteTarget::GatewayEndpoint(id.to_string()),
            other => RouteTarget::Other(other.to_string()),
        }
    } else {
        let other = described
            .network_interface_id()
            .or(described.instance_id())
            .or(described.local_gateway_id())
            .or(described.carrier_gateway_id())
            .or(described.core_network_arn())
            .unwrap_or("an unknown target");
        RouteTarget::Other(other.to_string())
    };
    Some(Route {
        destination,
        target,
    })
}
