//! The GuardDuty data-plane VPC endpoint, so the agent can keep reporting from a quarantined
//! workload: its addresses (for the quarantine security group) and the network ACLs where an
//! ALLOW for the agent opens nothing else.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::Filter;

use crate::actions::{aws, Clients, StepError};
use crate::network::Vpc;

/// ACLs where the agent's ALLOW pair (the workload to port 443, and the replies) may go: every
/// subnet the ACL guards holds the GuardDuty endpoint and nothing else, so the ALLOW cannot
/// open a path to anything but the endpoint. In the usual layouts no ACL qualifies, and the
/// agent is cut off while the workload is quarantined (the report says so).
pub(super) async fn agent_acls(
    clients: &Clients,
    vpc: &Vpc,
    region: &str,
    workload_subnet: &str,
) -> Result<BTreeSet<String>, StepError> {
    let Some(endpoint) = vpc
        .endpoints
        .iter()
        .find(|e| e.is_guardduty_agent() && e.service.contains(&format!(".{region}.")))
    else {
        return Ok(BTreeSet::new());
    };
    let candidates: Vec<&crate::network::Acl> = vpc
        .acls
        .iter()
        .filter(|acl| {
            !acl.subnet_ids.is_empty()
                && acl
                    .subnet_ids
                    .iter()
                    .all(|s| s != workload_subnet && endpoint.subnet_ids.contains(s))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(BTreeSet::new());
    }
    let subnets: Vec<String> = candidates
        .iter()
        .flat_map(|a| a.subnet_ids.iter().cloned())
        .collect();
    let enis = clients
        .ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("subnet-id")
                .set_values(Some(subnets))
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces (endpoint subnets)"))?;
    let foreign: BTreeSet<&str> = enis
        .network_interfaces()
        .iter()
        .filter(|eni| {
            !eni.network_interface_id()
                .is_some_and(|id| endpoint.network_interface_ids.iter().any(|e| e == id))
        })
        .filter_map(|eni| eni.subnet_id())
        .collect();
    Ok(candidates
        .into_iter()
        .filter(|acl| acl.subnet_ids.iter().all(|s| !foreign.contains(s.as_str())))
        .map(|acl| acl.id.clone())
        .collect())
}

/// An address of a GuardDuty VPC endpoint interface.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) ip: String,
}

/// The GuardDuty data-plane VPC endpoint's interfaces, so the agent can keep reporting.
pub(super) async fn guardduty_endpoints(
    clients: &Clients,
    vpc_id: &str,
    region: &str,
) -> Result<Vec<Endpoint>, StepError> {
    let output = clients
        .ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(
            Filter::builder()
                .name("service-name")
                .values(format!("com.amazonaws.{region}.guardduty-data"))
                .values(format!("com.amazonaws.{region}.guardduty-data-fips"))
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 DescribeVpcEndpoints"))?;
    let eni_ids: Vec<String> = output
        .vpc_endpoints()
        .iter()
        .flat_map(|e| e.network_interface_ids().iter().cloned())
        .collect();
    if eni_ids.is_empty() {
        return Ok(Vec::new());
    }
    let enis = clients
        .ec2
        .describe_network_interfaces()
        .set_network_interface_ids(Some(eni_ids))
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces (GuardDuty endpoint)"))?;
    Ok(enis
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            Some(Endpoint {
                ip: eni.private_ip_address()?.to_string(),
            })
        })
        .collect())
}
