//! What `responder preflight` reads, read-only: the ECS clusters, their services and running
//! tasks, each VPC as the network model needs it, who uses each security group, the GuardDuty
//! detector's Runtime Monitoring settings, and the responder's own resources. Describe, list and
//! get calls only ([`PERMISSIONS`]); nothing is changed.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;
use serde::Serialize;

use super::isolate::describe_vpc;
use super::{aws, Clients, Config, StepError};
use crate::network::Vpc;

/// Every IAM action preflight calls: a read-only policy for the people who run it. The Lambda
/// is granted none of those it does not need itself.
pub const PERMISSIONS: &[&str] = &[
    "ecs:ListClusters",
    "ecs:DescribeClusters",
    "ecs:ListServices",
    "ecs:DescribeServices",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "ec2:DescribeSubnets",
    "ec2:DescribeRouteTables",
    "ec2:DescribeNetworkAcls",
    "ec2:DescribeNatGateways",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeTransitGatewayVpcAttachments",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "guardduty:ListDetectors",
    "guardduty:GetDetector",
    "s3:GetBucketObjectLockConfiguration",
    "dynamodb:DescribeTable",
    "sns:ListSubscriptionsByTopic",
];

/// What was read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// The clusters looked at.
    pub clusters: Vec<ClusterInfo>,
    /// Each VPC with tasks, as the network model sees it.
    pub vpcs: BTreeMap<String, Vpc>,
    /// Network interfaces per subnet (for the GuardDuty agent's path) and per security group
    /// (for a group's exclusivity to a service).
    pub enis_by_subnet: BTreeMap<String, Vec<String>>,
    /// Network interfaces using each of the services' security groups.
    pub enis_by_group: BTreeMap<String, Vec<String>>,
    /// Security groups tagged for the service lockdown.
    pub lockdown_allowed: BTreeSet<String>,
    /// GuardDuty's detector, when it could be read.
    pub guardduty: GuardDutyStatus,
    /// The responder's own resources.
    pub responder: ResponderStatus,
}

/// One ECS cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    /// Its ARN.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// Its tags (`GuardDutyManaged=false` excludes it from GuardDuty's automated agent
    /// management, `GuardDutyManaged=true` includes it when the automation is off).
    pub tags: BTreeMap<String, String>,
    /// Its services.
    pub services: Vec<ServiceInfo>,
}

/// One ECS service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceInfo {
    /// Its name.
    pub name: String,
    /// `FARGATE`, `EC2`, or none (capacity providers).
    pub launch_type: Option<String>,
    /// The subnets its tasks are placed in (awsvpc).
    pub subnets: Vec<String>,
    /// Its tasks' security groups.
    pub security_groups: Vec<String>,
    /// Its tasks get public IPs.
    pub public_ip: bool,
    /// Target groups it registers tasks in.
    pub target_groups: Vec<String>,
    /// Its running tasks' network interfaces.
    pub tasks: Vec<TaskNetwork>,
}

/// A running task's network interface.
#[derive(Debug, Clone, Serialize)]
pub struct TaskNetwork {
    /// The task.
    pub task_arn: String,
    /// Its interface.
    pub eni_id: String,
    /// Its private IPv4 address.
    pub ipv4: String,
    /// Its IPv6 address.
    pub ipv6: Option<String>,
    /// Its subnet.
    pub subnet_id: String,
}

/// GuardDuty Runtime Monitoring as configured for the account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuardDutyStatus {
    /// The detector, if there is one.
    pub detector_id: Option<String>,
    /// The detector is enabled.
    pub enabled: bool,
    /// The `RUNTIME_MONITORING` feature is enabled.
    pub runtime_monitoring: bool,
    /// Its `ECS_FARGATE_AGENT_MANAGEMENT` configuration is enabled.
    pub fargate_agent_management: bool,
    /// Its `EC2_AGENT_MANAGEMENT` configuration is enabled (the agent on EC2 instances,
    /// container instances included).
    pub ec2_agent_management: bool,
    /// Why the detector could not be read, when it could not.
    pub error: Option<String>,
}

/// The responder's own resources.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResponderStatus {
    /// The deployment's mode ceiling (`RESPONDER_MODE`), if set.
    pub mode: Option<String>,
    /// The evidence bucket has Object Lock (None: unknown or not configured).
    pub bucket_object_lock: Option<bool>,
    /// The ledger table exists.
    pub ledger_table: Option<bool>,
    /// Subscriptions to the notification topic.
    pub topic_subscriptions: Option<usize>,
    /// What could not be read.
    pub errors: Vec<String>,
}

/// Read everything preflight assesses. `clusters` and `vpcs` narrow the look (empty: all).
pub async fn take(
    clients: &Clients,
    config: &Config,
    clusters: &[String],
    vpcs: &[String],
) -> Result<Inventory, StepError> {
    let ecs = &clients.ecs;
    let cluster_arns = if clusters.is_empty() {
        ecs.list_clusters()
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws("ECS ListClusters"))?
    } else {
        clusters.to_vec()
    };
    let mut inventory = Inventory::default();
    for chunk in cluster_arns.chunks(100) {
        let described = ecs
            .describe_clusters()
            .set_clusters(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::ClusterField::Tags)
            .send()
            .await
            .map_err(aws("ECS DescribeClusters"))?;
        for cluster in described.clusters() {
            let (Some(arn), Some(name)) = (cluster.cluster_arn(), cluster.cluster_name()) else {
                continue;
            };
            inventory.clusters.push(ClusterInfo {
                arn: arn.to_string(),
                name: name.to_string(),
                tags: cluster
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect(),
                services: services(clients, arn).await?,
            });
        }
    }

    // The VPCs the services' subnets are in (or those asked for).
    let subnets: BTreeSet<String> = inventory
        .clusters
        .iter()
        .flat_map(|c| &c.services)
        .flat_map(|s| s.subnets.iter().cloned())
        .collect();
    let mut vpc_ids: BTreeSet<String> = vpcs.iter().cloned().collect();
    if !subnets.is_empty() {
        let described = clients
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(subnets.into_iter().collect()))
            .send()
            .await
            .map_err(aws("EC2 DescribeSubnets"))?;
        vpc_ids.extend(
            described
                .subnets()
                .iter()
                .filter_map(|s| s.vpc_id().map(str::to_string))
                .filter(|v| vpcs.is_empty() || vpcs.contains(v)),
        );
    }
    for vpc_id in vpc_ids {
        let vpc = describe_vpc(clients, &vpc_id).await?;
        // Who else is in the GuardDuty endpoint's subnets (can an ALLOW for the agent open
        // anything else?).
        let endpoint_subnets: Vec<String> = vpc
            .endpoints
            .iter()
            .filter(|e| e.is_guardduty_agent())
            .flat_map(|e| e.subnet_ids.iter().cloned())
            .collect();
        if !endpoint_subnets.is_empty() {
            for eni in interfaces_where(clients, "subnet-id", &endpoint_subnets).await? {
                if let (Some(subnet), Some(id)) = (eni.subnet_id(), eni.network_interface_id()) {
                    inventory
                        .enis_by_subnet
                        .entry(subnet.to_string())
                        .or_default()
                        .push(id.to_string());
                }
            }
        }
        inventory.vpcs.insert(vpc_id, vpc);
    }

    // Who uses the services' security groups, and which groups allow a lockdown.
    let groups: BTreeSet<String> = inventory
        .clusters
        .iter()
        .flat_map(|c| &c.services)
        .flat_map(|s| s.security_groups.iter().cloned())
        .collect();
    if !groups.is_empty() {
        let groups: Vec<String> = groups.into_iter().collect();
        // Every user of each group, every page: a group called exclusive to a service when it
        // is not would offer a lockdown that cuts other workloads.
        let (users, described) =
            tokio::try_join!(interfaces_where(clients, "group-id", &groups), async {
                clients
                    .ec2
                    .describe_security_groups()
                    .set_group_ids(Some(groups.clone()))
                    .send()
                    .await
                    .map_err(aws("EC2 DescribeSecurityGroups"))
            })?;
        for eni in &users {
            let Some(id) = eni.network_interface_id() else {
                continue;
            };
            for group in eni.groups().iter().filter_map(|g| g.group_id()) {
                inventory
                    .enis_by_group
                    .entry(group.to_string())
                    .or_default()
                    .push(id.to_string());
            }
        }
        let (key, value) = super::isolate::lockdown::LOCKDOWN_TAG;
        inventory.lockdown_allowed = described
            .security_groups()
            .iter()
            .filter(|g| {
                g.tags()
                    .iter()
                    .any(|t| t.key() == Some(key) && t.value() == Some(value))
            })
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect();
    }

    inventory.guardduty = guardduty(clients).await;
    inventory.responder = responder(clients, config).await;
    Ok(inventory)
}

/// Every network interface matching one filter, all pages, the values in batches.
async fn interfaces_where(
    clients: &Clients,
    filter: &str,
    values: &[String],
) -> Result<Vec<aws_sdk_ec2::types::NetworkInterface>, StepError> {
    let mut all = Vec::new();
    for batch in values.chunks(100) {
        let page = clients
            .ec2
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name(filter)
                    .set_values(Some(batch.to_vec()))
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
        all.extend(page);
    }
    Ok(all)
}

async fn services(clients: &Clients, cluster_arn: &str) -> Result<Vec<ServiceInfo>, StepError> {
    let ecs = &clients.ecs;
    let arns = ecs
        .list_services()
        .cluster(cluster_arn)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws("ECS ListServices"))?;
    let mut services = Vec::new();
    for chunk in arns.chunks(10) {
        let described = ecs
            .describe_services()
            .cluster(cluster_arn)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws("ECS DescribeServices"))?;
        for service in described.services() {
            let Some(name) = service.service_name() else {
                continue;
            };
            let network = service
                .network_configuration()
                .and_then(|n| n.awsvpc_configuration());
            services.push(ServiceInfo {
                name: name.to_string(),
                launch_type: service.launch_type().map(|l| l.as_str().to_string()),
                subnets: network.map(|n| n.subnets().to_vec()).unwrap_or_default(),
                security_groups: network
                    .map(|n| n.security_groups().to_vec())
                    .unwrap_or_default(),
                public_ip: network
                    .and_then(|n| n.assign_public_ip())
                    .is_some_and(|p| p.as_str() == "ENABLED"),
                target_groups: service
                    .load_balancers()
                    .iter()
                    .filter_map(|l| l.target_group_arn().map(str::to_string))
                    .collect(),
                tasks: tasks(clients, cluster_arn, name).await?,
            });
        }
    }
    Ok(services)
}

async fn tasks(
    clients: &Clients,
    cluster_arn: &str,
    service: &str,
) -> Result<Vec<TaskNetwork>, StepError> {
    let ecs = &clients.ecs;
    let arns = ecs
        .list_tasks()
        .cluster(cluster_arn)
        .service_name(service)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws("ECS ListTasks"))?;
    let mut tasks = Vec::new();
    for chunk in arns.chunks(100) {
        let described = ecs
            .describe_tasks()
            .cluster(cluster_arn)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws("ECS DescribeTasks"))?;
        for task in described.tasks() {
            // ListTasks filters by service on AWS; the group says so for certain.
            if task.group() != Some(&format!("service:{service}")) {
                continue;
            }
            let detail = |key: &str| {
                task.attachments()
                    .iter()
                    .flat_map(|a| a.details())
                    .find(|d| d.name() == Some(key))
                    .and_then(|d| d.value().map(str::to_string))
            };
            if let (Some(arn), Some(eni_id), Some(ipv4), Some(subnet_id)) = (
                task.task_arn(),
                detail("networkInterfaceId"),
                detail("privateIPv4Address"),
                detail("subnetId"),
            ) {
                tasks.push(TaskNetwork {
                    task_arn: arn.to_string(),
                    eni_id,
                    ipv4,
                    ipv6: detail("privateIPv6Address").or_else(|| super::workload::task_ipv6(task)),
                    subnet_id,
                });
            }
        }
    }
    Ok(tasks)
}

#[cfg(feature = "preflight")]
async fn guardduty(clients: &Clients) -> GuardDutyStatus {
    let gd = &clients.guardduty;
    let detectors = match gd.list_detectors().send().await {
        Ok(output) => output.detector_ids().to_vec(),
        Err(error) => {
            return GuardDutyStatus {
                error: Some(aws("GuardDuty ListDetectors")(error).to_string()),
                ..GuardDutyStatus::default()
            }
        }
    };
    let Some(id) = detectors.into_iter().next() else {
        return GuardDutyStatus::default();
    };
    match gd.get_detector().detector_id(&id).send().await {
        Ok(detector) => {
            let runtime = detector
                .features()
                .iter()
                .find(|f| f.name().map(|n| n.as_str()) == Some("RUNTIME_MONITORING"));
            let enabled = |status: Option<&aws_sdk_guardduty::types::FeatureStatus>| {
                status.map(|s| s.as_str()) == Some("ENABLED")
            };
            GuardDutyStatus {
                detector_id: Some(id),
                enabled: detector.status().map(|s| s.as_str()) == Some("ENABLED"),
                runtime_monitoring: runtime.is_some_and(|f| enabled(f.status())),
                fargate_agent_management: runtime.is_some_and(|f| {
                    f.additional_configuration().iter().any(|c| {
                        c.name().map(|n| n.as_str()) == Some("ECS_FARGATE_AGENT_MANAGEMENT")
                            && enabled(c.status())
                    })
                }),
                ec2_agent_management: runtime.is_some_and(|f| {
                    f.additional_configuration().iter().any(|c| {
                        c.name().map(|n| n.as_str()) == Some("EC2_AGENT_MANAGEMENT")
                            && enabled(c.status())
                    })
                }),
                error: None,
            }
        }
        Err(error) => GuardDutyStatus {
            detector_id: Some(id),
            error: Some(aws("GuardDuty GetDetector")(error).to_string()),
            ..GuardDutyStatus::default()
        },
    }
}

#[cfg(not(feature = "preflight"))]
async fn guardduty(_clients: &Clients) -> GuardDutyStatus {
    GuardDutyStatus {
        error: Some("built without the `preflight` feature".to_string()),
        ..GuardDutyStatus::default()
    }
}

async fn responder(clients: &Clients, config: &Config) -> ResponderStatus {
    let mut status = ResponderStatus {
        mode: config.mode_ceiling.map(|m| m.name().to_string()),
        ..ResponderStatus::default()
    };
    if let Some(bucket) = &config.evidence_bucket {
        match clients
            .s3
            .get_object_lock_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(output) => {
                status.bucket_object_lock = Some(
                    output
                        .object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        .is_some_and(|e| e.as_str() == "Enabled"),
                )
            }
            Err(error) => {
                use aws_sdk_ec2::error::ProvideErrorMetadata;
                if error.code() == Some("ObjectLockConfigurationNotFoundError") {
                    status.bucket_object_lock = Some(false);
                } else {
                    status
                        .errors
                        .push(aws("S3 GetObjectLockConfiguration")(error).to_string());
                }
            }
        }
    }
    if let Some(table) = &config.ledger_table {
        match clients
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
        {
            Ok(_) => status.ledger_table = Some(true),
            Err(error) => {
                status.ledger_table = Some(false);
                status
                    .errors
                    .push(aws("DynamoDB DescribeTable")(error).to_string());
            }
        }
    }
    if let Some(topic) = &config.topic_arn {
        match clients
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(topic)
            .send()
            .await
        {
            Ok(output) => status.topic_subscriptions = Some(output.subscriptions().len()),
            Err(error) => status
                .errors
                .push(aws("SNS ListSubscriptionsByTopic")(error).to_string()),
        }
    }
    status
}
