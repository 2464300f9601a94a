//! The `sg-swap` rung: the workload's ENIs get an allow-all "untracking" group, then the
//! quarantine group (no ingress; egress only to the GuardDuty endpoint). The groups are found
//! by tag or created once per VPC.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{Filter, Tag as Ec2Tag};

use super::endpoints::Endpoint;
use super::ladder::RungError;
use super::{IsolateParams, SgSwap};
use crate::actions::{aws, Clients, StepError};

/// Tags that mark the groups this tool creates, so they are found again instead of duplicated.
pub const ROLE_TAG: &str = "incident-responder:role";

/// Find a group this tool made in the VPC (by role tag), or make it once.
async fn ensure_group(
    clients: &Clients,
    vpc_id: &str,
    role: &str,
    name: &str,
    description: &str,
    configure: impl AsyncFnOnce(&str) -> Result<(), StepError>,
) -> Result<String, StepError> {
    let find = || async {
        let output = clients
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .filters(
                Filter::builder()
                    .name(format!("tag:{ROLE_TAG}"))
                    .values(role)
                    .build(),
            )
            .send()
            .await
            .map_err(aws("EC2 DescribeSecurityGroups"))?;
        Ok::<_, StepError>(
            output
                .security_groups()
                .first()
                .and_then(|g| g.group_id())
                .map(str::to_string),
        )
    };
    if let Some(id) = find().await? {
        return Ok(id);
    }
    let created = clients
        .ec2
        .create_security_group()
        .vpc_id(vpc_id)
        .group_name(name)
        .description(description)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
                .tags(Ec2Tag::builder().key(ROLE_TAG).value(role).build())
                .tags(Ec2Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await;
    match created {
        Ok(output) => {
            let id = output
                .group_id()
                .ok_or_else(|| {
                    StepError::Refused("CreateSecurityGroup returned no id".to_string())
                })?
                .to_string();
            configure(&id).await?;
            Ok(id)
        }
        // Another invocation created it first: use theirs.
        Err(error) if error.code() == Some("InvalidGroup.Duplicate") => {
            find().await?.ok_or_else(|| {
                StepError::Refused(format!(
                    "security group {name} exists but has no {ROLE_TAG} tag"
                ))
            })
        }
        Err(error) => Err(aws("EC2 CreateSecurityGroup")(error)),
    }
}

pub(super) async fn sg_swap(
    clients: &Clients,
    vpc_id: &str,
    enis: &[(String, Vec<String>)],
    params: &IsolateParams,
    endpoints: &[Endpoint],
) -> Result<Vec<SgSwap>, RungError> {
    let quarantine = ensure_group(
        clients,
        vpc_id,
        "quarantine",
        &params.quarantine_group_name,
        "incident-responder quarantine: no ingress; egress only to the GuardDuty endpoint",
        async |id: &str| {
            // A new group allows all egress; take that away, then allow only the agent's path.
            let ec2 = &clients.ec2;
            ec2.revoke_security_group_egress()
                .group_id(id)
                .ip_permissions(all_traffic("0.0.0.0/0"))
                .send()
                .await
                .map_err(aws("EC2 RevokeSecurityGroupEgress"))?;
            for endpoint in endpoints {
                ec2.authorize_security_group_egress()
                    .group_id(id)
                    .ip_permissions(
                        aws_sdk_ec2::types::IpPermission::builder()
                            .ip_protocol("tcp")
                            .from_port(443)
                            .to_port(443)
                            .ip_ranges(
                                aws_sdk_ec2::types::IpRange::builder()
                                    .cidr_ip(format!("{}/32", endpoint.ip))
                                    .description("GuardDuty agent")
                                    .build(),
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(aws("EC2 AuthorizeSecurityGroupEgress"))?;
            }
            Ok(())
        },
    )
    .await?;
    let untracking_name = format!("{}-untracking", params.quarantine_group_name);
    let untracking = ensure_group(
        clients,
        vpc_id,
        "untracking",
        &untracking_name,
        "incident-responder step 1 of 2: allow-all so existing flows become untracked",
        async |id: &str| {
            clients
                .ec2
                .authorize_security_group_ingress()
                .group_id(id)
                .ip_permissions(all_traffic("0.0.0.0/0"))
                .send()
                .await
                .map_err(aws("EC2 AuthorizeSecurityGroupIngress"))?;
            Ok(())
        },
    )
    .await?;

    let mut swaps = Vec::new();
    for (eni_id, original) in enis {
        for (step, group) in [("untracking", &untracking), ("quarantine", &quarantine)] {
            let result = clients
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(eni_id)
                .groups(group)
                .send()
                .await;
            if let Err(error) = result {
                let error = aws("EC2 ModifyNetworkInterfaceAttribute")(error);
                // Put back what was already changed so nothing is left half-applied.
                for (done_eni, groups) in enis
                    .iter()
                    .take(swaps.len() + usize::from(step == "quarantine"))
                {
                    let _ = clients
                        .ec2
                        .modify_network_interface_attribute()
                        .network_interface_id(done_eni)
                        .set_groups(Some(groups.clone()))
                        .send()
                        .await;
                }
                return Err(RungError::Failed(error));
            }
        }
        swaps.push(SgSwap {
            eni_id: eni_id.clone(),
            original_groups: original.clone(),
            quarantine_group: quarantine.clone(),
            untracking_group: untracking.clone(),
        });
    }
    Ok(swaps)
}

fn all_traffic(cidr: &str) -> aws_sdk_ec2::types::IpPermission {
    aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("-1")
        .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip(cidr).build())
        .build()
}
