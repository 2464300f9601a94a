//! The GuardDuty data-plane VPC endpoint's interfaces, so the agent can keep reporting from a
//! quarantined workload.

use aws_sdk_ec2::types::Filter;

use crate::actions::{aws, Clients, StepError};

/// An address of a GuardDuty VPC endpoint interface.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub(super) ip: String,
    pub(super) subnet_id: Option<String>,
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
                subnet_id: eni.subnet_id().map(str::to_string),
            })
        })
        .collect())
}
