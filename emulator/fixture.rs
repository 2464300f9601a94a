//! Seeds the emulator with a realistic Fargate service and the responder's own resources, and
//! rewrites sample findings to point at what was created.

use aws_sdk_ec2::types::{Filter, RuleAction};
use serde_json::Value;

use crate::EmulatorError;
use responder::actions::Clients;

/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// A member account the fixture's function lists in `RESPONDER_ACCOUNTS`.
pub const MEMBER_ACCOUNT: &str = "444455556666";

/// The crypto-mining sample, compiled in so the demo works from any directory.
pub const MINER_EVENT: &str = include_str!("../events/fargate-crypto-miner-high.json");

/// A running task of the fixture service.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskRef {
    pub arn: String,
    pub eni_id: String,
    pub ip: String,
    pub subnet_id: String,
}

/// Everything the fixture created.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fixture {
    pub region: String,
    pub vpc_id: String,
    pub private_subnets: Vec<String>,
    pub public_subnet: String,
    /// The ACL guarding the private subnets: a custom one, or the VPC default when the layout
    /// keeps every subnet on it.
    pub private_acl_id: String,
    /// The NAT gateway in the public subnet, when the layout has one.
    pub nat_gateway_id: Option<String>,
    pub default_acl_id: String,
    pub app_security_group: String,
    pub cluster_arn: String,
    pub cluster_name: String,
    pub service_name: String,
    pub task_definition_arn: String,
    /// The task role its tasks run with, tagged so `revoke-sessions` may touch it.
    pub task_role_arn: String,
    pub tasks: Vec<TaskRef>,
    pub target_group_arn: String,
    pub bucket: String,
    pub table: String,
    pub topic_arn: String,
    pub queue_url: String,
}

impl Fixture {
    /// Responder configuration naming this fixture's bucket, table and topic.
    pub fn config(&self) -> responder::actions::Config {
        responder::actions::Config {
            evidence_bucket: Some(self.bucket.clone()),
            ledger_table: Some(self.table.clone()),
            topic_arn: Some(self.topic_arn.clone()),
            mode_ceiling: None,
            audit_ttl_days: 30,
            // moto's account, as a deployed function's own.
            account_id: Some(ACCOUNT.to_string()),
            // As the template configures a function: its account (and, here, one member
            // account whose findings it preserves and reports), its region, EventBridge only.
            provenance: responder::plan::provenance::Provenance {
                accounts: Some(vec![ACCOUNT.to_string(), MEMBER_ACCOUNT.to_string()]),
                regions: Some(vec!["us-east-1".to_string()]),
                require_envelope: true,
            },
            region: Some(self.region.clone()),
            member_role: None,
            chat_topic_arn: None,
            partition: "aws".to_string(),
            slack_webhook_secret: None,
        }
    }
}

fn seed<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> EmulatorError {
    move |e| EmulatorError::Seed(format!("{what}: {e}"))
}

fn need<T>(value: Option<T>, what: &str) -> Result<T, EmulatorError> {
    value.ok_or_else(|| EmulatorError::Seed(format!("{what} missing in the emulator's answer")))
}

/// How the fixture's VPC is laid out, as accounts lay theirs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The private subnets get an ACL of their own (allow-all at 100); otherwise every subnet
    /// stays on the VPC's default ACL (the most common layout).
    pub private_acl: bool,
    /// An internet gateway for the public subnet and a NAT gateway in it that the private
    /// subnets route to the internet through.
    pub nat_gateway: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            private_acl: true,
            nat_gateway: true,
        }
    }
}

/// Create the VPC, the Fargate service with `task_count` running tasks behind a target group,
/// and the evidence bucket, ledger table and topic (with an SQS queue subscribed, to read
/// notifications back). `name` keeps fixtures of parallel tests apart.
pub async fn seed_fargate(
    clients: &Clients,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    task_count: usize,
) -> Result<Fixture, EmulatorError> {
    seed_fargate_with(clients, sqs, name, task_count, &Layout::default()).await
}

/// [`seed_fargate`] with a chosen layout.
pub async fn seed_fargate_with(
    clients: &Clients,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    task_count: usize,
    layout: &Layout,
) -> Result<Fixture, EmulatorError> {
    let ec2 = &clients.ec2;
    let region = ec2
        .config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".to_string());
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.20.0.0/16")
        .send()
        .await
        .map_err(seed("CreateVpc"))?;
    let vpc_id = need(vpc.vpc().and_then(|v| v.vpc_id()), "VpcId")?.to_string();
    // moto's RunTask needs DNS hostnames for awsvpc ENIs.
    ec2.modify_vpc_attribute()
        .vpc_id(&vpc_id)
        .enable_dns_hostnames(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(true)
                .build(),
        )
        .send()
        .await
        .map_err(seed("ModifyVpcAttribute"))?;
    let mut subnets = Vec::new();
    for (cidr, zone) in [
        ("10.20.1.0/24", "a"),
        ("10.20.2.0/24", "b"),
        ("10.20.0.0/24", "a"),
    ] {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(cidr)
            .availability_zone(format!("{region}{zone}"))
            .send()
            .await
            .map_err(seed("CreateSubnet"))?;
        subnets.push(need(subnet.subnet().and_then(|s| s.subnet_id()), "SubnetId")?.to_string());
    }
    let public_subnet = subnets.pop().unwrap_or_default();
    let private_subnets = subnets;

    // A custom ACL for the private subnets with the usual "allow all" rules at 100.
    let acls = ec2
        .describe_network_acls()
        .filters(Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .map_err(seed("DescribeNetworkAcls"))?;
    let default_acl = need(acls.network_acls().first(), "default network ACL")?;
    let default_acl_id = need(default_acl.network_acl_id(), "NetworkAclId")?.to_string();
    let private_acl_id = if layout.private_acl {
        dedicated_acl(ec2, &vpc_id, &private_subnets).await?
    } else {
        default_acl_id.clone()
    };
    let nat_gateway_id = if layout.nat_gateway {
        Some(add_nat_gateway(ec2, &vpc_id, &public_subnet, &private_subnets).await?)
    } else {
        None
    };

    let sg = ec2
        .create_security_group()
        .vpc_id(&vpc_id)
        .group_name(format!("{name}-app"))
        .description("application tasks")
        .send()
        .await
        .map_err(seed("CreateSecurityGroup"))?;
    let app_security_group = need(sg.group_id(), "GroupId")?.to_string();

    let ecs = &clients.ecs;
    let cluster_name = format!("{name}-prod");
    let cluster = ecs
        .create_cluster()
        .cluster_name(&cluster_name)
        .send()
        .await
        .map_err(seed("CreateCluster"))?;
    let cluster_arn = need(
        cluster.cluster().and_then(|c| c.cluster_arn()),
        "clusterArn",
    )?
    .to_string();
    let family = format!("{name}-checkout-api");
    let task_role_arn = create_role(clients, &format!("{family}-task"), true).await?;
    let definition = ecs
        .register_task_definition()
        .family(&family)
        .task_role_arn(&task_role_arn)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("checkout-api")
                .image(format!(
                    "{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/checkout-api:2026.11.3"
                ))
                .memory(512)
                .essential(true)
                .port_mappings(
                    aws_sdk_ecs::types::PortMapping::builder()
                        .container_port(8080)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(seed("RegisterTaskDefinition"))?;
    let task_definition_arn = need(
        definition
            .task_definition()
            .and_then(|d| d.task_definition_arn()),
        "taskDefinitionArn",
    )?
    .to_string();

    let tg = clients
        .elbv2
        .create_target_group()
        .name(format!("{name}-tg").chars().take(32).collect::<String>())
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&vpc_id)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
        .send()
        .await
        .map_err(seed("CreateTargetGroup"))?;
    let target_group_arn = need(
        tg.target_groups()
            .first()
            .and_then(|t| t.target_group_arn()),
        "TargetGroupArn",
    )?
    .to_string();

    let service_name = "checkout-api".to_string();
    let network = aws_sdk_ecs::types::NetworkConfiguration::builder()
        .awsvpc_configuration(
            aws_sdk_ecs::types::AwsVpcConfiguration::builder()
                .set_subnets(Some(private_subnets.clone()))
                .security_groups(&app_security_group)
                .assign_public_ip(aws_sdk_ecs::types::AssignPublicIp::Disabled)
                .build()
                .map_err(seed("AwsVpcConfiguration"))?,
        )
        .build();
    ecs.create_service()
        .cluster(&cluster_arn)
        .service_name(&service_name)
        .task_definition(&task_definition_arn)
        .desired_count(task_count as i32)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .network_configuration(network.clone())
        .load_balancers(
            aws_sdk_ecs::types::LoadBalancer::builder()
                .target_group_arn(&target_group_arn)
                .container_name("checkout-api")
                .container_port(8080)
                .build(),
        )
        .send()
        .await
        .map_err(seed("CreateService"))?;
    // moto's CreateService starts no tasks: start them as the scheduler would.
    let run = ecs
        .run_task()
        .cluster(&cluster_arn)
        .task_definition(&task_definition_arn)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .count(task_count as i32)
        .group(format!("service:{service_name}"))
        .started_by("ecs-svc/7364918273645123908")
        .network_configuration(network)
        .send()
        .await
        .map_err(seed("RunTask"))?;
    let mut tasks = Vec::new();
    for task in run.tasks() {
        let detail = |key: &str| {
            task.attachments()
                .iter()
                .flat_map(|a| a.details())
                .find(|d| d.name() == Some(key))
                .and_then(|d| d.value().map(str::to_string))
        };
        tasks.push(TaskRef {
            arn: need(task.task_arn(), "taskArn")?.to_string(),
            eni_id: need(detail("networkInterfaceId"), "networkInterfaceId")?,
            ip: need(detail("privateIPv4Address"), "privateIPv4Address")?,
            subnet_id: need(detail("subnetId"), "subnetId")?,
        });
    }
    let targets: Vec<_> = tasks
        .iter()
        .map(|t| {
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                .id(&t.ip)
                .port(8080)
                .build()
        })
        .collect();
    clients
        .elbv2
        .register_targets()
        .target_group_arn(&target_group_arn)
        .set_targets(Some(targets))
        .send()
        .await
        .map_err(seed("RegisterTargets"))?;

    let bucket = format!("{name}-evidence");
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .map_err(seed("CreateBucket"))?;
    let table = format!("{name}-ledger");
    create_ledger_table(clients, &table).await?;
    let topic = clients
        .sns
        .create_topic()
        .name(format!("{name}-incidents"))
        .send()
        .await
        .map_err(seed("CreateTopic"))?;
    let topic_arn = need(topic.topic_arn(), "TopicArn")?.to_string();
    let queue = sqs
        .create_queue()
        .queue_name(format!("{name}-notifications"))
        .send()
        .await
        .map_err(seed("CreateQueue"))?;
    let queue_url = need(queue.queue_url(), "QueueUrl")?.to_string();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(seed("GetQueueAttributes"))?;
    let queue_arn = need(
        attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)),
        "QueueArn",
    )?;
    clients
        .sns
        .subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .map_err(seed("Subscribe"))?;

    Ok(Fixture {
        region,
        vpc_id,
        private_subnets,
        public_subnet,
        private_acl_id,
        nat_gateway_id,
        default_acl_id,
        app_security_group,
        cluster_arn,
        cluster_name,
        service_name,
        task_definition_arn,
        task_role_arn,
        tasks,
        target_group_arn,
        bucket,
        table,
        topic_arn,
        queue_url,
    })
}

/// An ACL of its own for `subnets`, with the usual "allow all" rules at 100.
async fn dedicated_acl(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    subnets: &[String],
) -> Result<String, EmulatorError> {
    let acl = ec2
        .create_network_acl()
        .vpc_id(vpc_id)
        .send()
        .await
        .map_err(seed("CreateNetworkAcl"))?;
    let acl_id = need(
        acl.network_acl().and_then(|a| a.network_acl_id()),
        "NetworkAclId",
    )?
    .to_string();
    for egress in [false, true] {
        ec2.create_network_acl_entry()
            .network_acl_id(&acl_id)
            .rule_number(100)
            .egress(egress)
            .protocol("-1")
            .rule_action(RuleAction::Allow)
            .cidr_block("0.0.0.0/0")
            .send()
            .await
            .map_err(seed("CreateNetworkAclEntry"))?;
    }
    let current = ec2
        .describe_network_acls()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(seed("DescribeNetworkAcls"))?;
    for subnet in subnets {
        let association = current
            .network_acls()
            .iter()
            .flat_map(|a| a.associations())
            .find(|a| a.subnet_id() == Some(subnet.as_str()))
            .and_then(|a| a.network_acl_association_id());
        ec2.replace_network_acl_association()
            .association_id(need(association, "subnet's ACL association")?)
            .network_acl_id(&acl_id)
            .send()
            .await
            .map_err(seed("ReplaceNetworkAclAssociation"))?;
    }
    Ok(acl_id)
}

/// An internet gateway with a public route table for the public subnet, a NAT gateway in it,
/// and a private route table sending the private subnets' internet traffic to the NAT gateway.
async fn add_nat_gateway(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    public_subnet: &str,
    private_subnets: &[String],
) -> Result<String, EmulatorError> {
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await
        .map_err(seed("CreateInternetGateway"))?;
    let igw_id = need(
        igw.internet_gateway().and_then(|g| g.internet_gateway_id()),
        "InternetGatewayId",
    )?
    .to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw_id)
        .vpc_id(vpc_id)
        .send()
        .await
        .map_err(seed("AttachInternetGateway"))?;
    let public_table = route_table(ec2, vpc_id).await?;
    ec2.create_route()
        .route_table_id(&public_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw_id)
        .send()
        .await
        .map_err(seed("CreateRoute"))?;
    ec2.associate_route_table()
        .route_table_id(&public_table)
        .subnet_id(public_subnet)
        .send()
        .await
        .map_err(seed("AssociateRouteTable"))?;
    let address = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .map_err(seed("AllocateAddress"))?;
    let nat = ec2
        .create_nat_gateway()
        .subnet_id(public_subnet)
        .allocation_id(need(address.allocation_id(), "AllocationId")?)
        .send()
        .await
        .map_err(seed("CreateNatGateway"))?;
    let nat_id = need(
        nat.nat_gateway().and_then(|n| n.nat_gateway_id()),
        "NatGatewayId",
    )?
    .to_string();
    let private_table = route_table(ec2, vpc_id).await?;
    ec2.create_route()
        .route_table_id(&private_table)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat_id)
        .send()
        .await
        .map_err(seed("CreateRoute"))?;
    for subnet in private_subnets {
        ec2.associate_route_table()
            .route_table_id(&private_table)
            .subnet_id(subnet)
            .send()
            .await
            .map_err(seed("AssociateRouteTable"))?;
    }
    Ok(nat_id)
}

async fn route_table(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<String, EmulatorError> {
    let table = ec2
        .create_route_table()
        .vpc_id(vpc_id)
        .send()
        .await
        .map_err(seed("CreateRouteTable"))?;
    Ok(need(
        table.route_table().and_then(|t| t.route_table_id()),
        "RouteTableId",
    )?
    .to_string())
}

/// A subnet of its own, with an ACL of its own (allow-all at 100), holding only the GuardDuty
/// data-plane endpoint: the layout where the quarantine can keep the agent's path open without
/// opening anything else. Returns the endpoint's address, the subnet and the ACL.
pub async fn add_guardduty_endpoint_subnet(
    clients: &Clients,
    fixture: &Fixture,
) -> Result<(String, String, String), EmulatorError> {
    let ec2 = &clients.ec2;
    let subnet = ec2
        .create_subnet()
        .vpc_id(&fixture.vpc_id)
        .cidr_block("10.20.9.0/24")
        .availability_zone(format!("{}a", fixture.region))
        .send()
        .await
        .map_err(seed("CreateSubnet"))?;
    let subnet_id = need(subnet.subnet().and_then(|s| s.subnet_id()), "SubnetId")?.to_string();
    let acl_id = dedicated_acl(ec2, &fixture.vpc_id, std::slice::from_ref(&subnet_id)).await?;
    let ip = create_guardduty_endpoint(clients, fixture, &subnet_id).await?;
    Ok((ip, subnet_id, acl_id))
}

/// The GuardDuty data-plane VPC endpoint that Runtime Monitoring's agent reports through,
/// in the second private subnet (shared with tasks, as in most accounts). Returns its
/// interface address.
pub async fn add_guardduty_endpoint(
    clients: &Clients,
    fixture: &Fixture,
) -> Result<String, EmulatorError> {
    create_guardduty_endpoint(clients, fixture, &fixture.private_subnets[1]).await
}

async fn create_guardduty_endpoint(
    clients: &Clients,
    fixture: &Fixture,
    subnet_id: &str,
) -> Result<String, EmulatorError> {
    let output = clients
        .ec2
        .create_vpc_endpoint()
        .vpc_id(&fixture.vpc_id)
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
        .service_name(format!("com.amazonaws.{}.guardduty-data", fixture.region))
        .subnet_ids(subnet_id)
        .security_group_ids(&fixture.app_security_group)
        .send()
        .await
        .map_err(seed("CreateVpcEndpoint"))?;
    let eni = need(
        output
            .vpc_endpoint()
            .and_then(|e| e.network_interface_ids().first().cloned()),
        "endpoint network interface",
    )?;
    let described = clients
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(&eni)
        .send()
        .await
        .map_err(seed("DescribeNetworkInterfaces"))?;
    Ok(need(
        described
            .network_interfaces()
            .first()
            .and_then(|n| n.private_ip_address()),
        "endpoint address",
    )?
    .to_string())
}

/// The ledger table as `template.yaml` defines it: `pk`/`sk` strings, on demand.
pub async fn create_ledger_table(clients: &Clients, table: &str) -> Result<(), EmulatorError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    clients
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(seed("AttributeDefinition"))?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(seed("AttributeDefinition"))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .map_err(seed("KeySchemaElement"))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .map_err(seed("KeySchemaElement"))?,
        )
        .send()
        .await
        .map_err(seed("CreateTable"))?;
    Ok(())
}

/// The tag `revoke-sessions` needs on a role (the template grants nothing on other roles).
pub const REVOCABLE_TAG: (&str, &str) = ("incident-responder:revocable", "true");

/// An IAM role ECS tasks and EC2 instances may assume; `revocable`: tagged for revoke-sessions.
pub async fn create_role(
    clients: &Clients,
    name: &str,
    revocable: bool,
) -> Result<String, EmulatorError> {
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": ["ecs-tasks.amazonaws.com", "ec2.amazonaws.com"]},
            "Action": "sts:AssumeRole",
        }],
    });
    let mut create = clients
        .iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string());
    if revocable {
        create = create.tags(
            aws_sdk_iam::types::Tag::builder()
                .key(REVOCABLE_TAG.0)
                .value(REVOCABLE_TAG.1)
                .build()
                .map_err(seed("Tag"))?,
        );
    }
    let role = create.send().await.map_err(seed("CreateRole"))?;
    need(role.role().map(|r| r.arn().to_string()), "Role.Arn")
}

/// An instance profile holding `role_name`, for [`launch_instance_with_profile`].
pub async fn create_instance_profile(
    clients: &Clients,
    name: &str,
    role_name: &str,
) -> Result<String, EmulatorError> {
    let profile = clients
        .iam
        .create_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .map_err(seed("CreateInstanceProfile"))?;
    clients
        .iam
        .add_role_to_instance_profile()
        .instance_profile_name(name)
        .role_name(role_name)
        .send()
        .await
        .map_err(seed("AddRoleToInstanceProfile"))?;
    need(
        profile.instance_profile().map(|p| p.arn().to_string()),
        "InstanceProfile.Arn",
    )
}

/// An EC2 instance in the fixture's private subnet, its groups on the primary interface
/// (moto reports launch-time groups on the ENI otherwise).
pub async fn launch_instance(
    clients: &Clients,
    fixture: &Fixture,
) -> Result<(String, String), EmulatorError> {
    launch_instance_with_profile(clients, fixture, None).await
}

/// [`launch_instance`], with an instance profile (by ARN).
pub async fn launch_instance_with_profile(
    clients: &Clients,
    fixture: &Fixture,
    profile_arn: Option<&str>,
) -> Result<(String, String), EmulatorError> {
    let output = clients
        .ec2
        .run_instances()
        .set_iam_instance_profile(profile_arn.map(|arn| {
            aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                .arn(arn)
                .build()
        }))
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            aws_sdk_ec2::types::InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&fixture.private_subnets[0])
                .groups(&fixture.app_security_group)
                .build(),
        )
        .send()
        .await
        .map_err(seed("RunInstances"))?;
    let instance = need(output.instances().first(), "instance")?;
    let instance_id = need(instance.instance_id(), "InstanceId")?.to_string();
    let eni = need(
        instance
            .network_interfaces()
            .first()
            .and_then(|n| n.network_interface_id()),
        "NetworkInterfaceId",
    )?
    .to_string();
    Ok((instance_id, eni))
}

/// An ECS cluster backed by one EC2 container instance (in the fixture's private subnet, with
/// the fixture's app group), for tasks in `bridge` network mode: they share the instance's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ec2Cluster {
    pub cluster_arn: String,
    pub cluster_name: String,
    pub instance_id: String,
    pub eni_id: String,
    pub container_instance_arn: String,
    pub task_definition_arn: String,
}

/// Create an [`Ec2Cluster`] next to the fixture's Fargate service.
pub async fn seed_ec2_cluster(
    clients: &Clients,
    fixture: &Fixture,
) -> Result<Ec2Cluster, EmulatorError> {
    let (instance_id, eni_id) = launch_instance(clients, fixture).await?;
    let ecs = &clients.ecs;
    let cluster_name = format!("{}-ec2", fixture.cluster_name);
    let cluster = ecs
        .create_cluster()
        .cluster_name(&cluster_name)
        .send()
        .await
        .map_err(seed("CreateCluster"))?;
    let cluster_arn = need(
        cluster.cluster().and_then(|c| c.cluster_arn()),
        "clusterArn",
    )?
    .to_string();
    // What the ECS agent sends when the instance joins the cluster.
    let document = serde_json::json!({
        "instanceId": instance_id,
        "region": fixture.region,
        "accountId": ACCOUNT,
        "availabilityZone": format!("{}a", fixture.region),
    });
    let registered = ecs
        .register_container_instance()
        .cluster(&cluster_arn)
        .instance_identity_document(document.to_string())
        .send()
        .await
        .map_err(seed("RegisterContainerInstance"))?;
    let container_instance_arn = need(
        registered
            .container_instance()
            .and_then(|c| c.container_instance_arn()),
        "containerInstanceArn",
    )?
    .to_string();
    let definition = ecs
        .register_task_definition()
        .family(format!("{}-report-builder", fixture.cluster_name))
        .network_mode(aws_sdk_ecs::types::NetworkMode::Bridge)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Ec2)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("builder")
                .image(format!(
                    "{ACCOUNT}.dkr.ecr.{}.amazonaws.com/report-builder:5.0.2",
                    fixture.region
                ))
                .memory(128)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .map_err(seed("RegisterTaskDefinition"))?;
    let task_definition_arn = need(
        definition
            .task_definition()
            .and_then(|d| d.task_definition_arn()),
        "taskDefinitionArn",
    )?
    .to_string();
    Ok(Ec2Cluster {
        cluster_arn,
        cluster_name,
        instance_id,
        eni_id,
        container_instance_arn,
        task_definition_arn,
    })
}

/// A service of the EC2 cluster with `desired` tasks wanted (moto starts none: see
/// [`run_bridge_task`]).
pub async fn add_ec2_service(
    clients: &Clients,
    cluster: &Ec2Cluster,
    service: &str,
    desired: i32,
) -> Result<(), EmulatorError> {
    clients
        .ecs
        .create_service()
        .cluster(&cluster.cluster_arn)
        .service_name(service)
        .task_definition(&cluster.task_definition_arn)
        .desired_count(desired)
        .launch_type(aws_sdk_ecs::types::LaunchType::Ec2)
        .send()
        .await
        .map_err(seed("CreateService"))?;
    Ok(())
}

/// One bridge-mode task on the cluster's container instance, of `service` or of none.
pub async fn run_bridge_task(
    clients: &Clients,
    cluster: &Ec2Cluster,
    service: Option<&str>,
) -> Result<String, EmulatorError> {
    let run = clients
        .ecs
        .run_task()
        .cluster(&cluster.cluster_arn)
        .task_definition(&cluster.task_definition_arn)
        .launch_type(aws_sdk_ecs::types::LaunchType::Ec2)
        .set_group(service.map(|s| format!("service:{s}")))
        .set_started_by(service.map(|_| "ecs-svc/5150".to_string()))
        .send()
        .await
        .map_err(seed("RunTask"))?;
    Ok(need(run.tasks().first().and_then(|t| t.task_arn()), "taskArn")?.to_string())
}

/// The crypto-mining sample pointed at a bridge-mode task of the EC2 cluster.
pub fn bridge_finding_for(
    fixture: &Fixture,
    cluster: &Ec2Cluster,
    task_arn: &str,
    service: &str,
    finding_id: &str,
) -> Value {
    let mut on_ec2 = fixture.clone();
    on_ec2.cluster_arn = cluster.cluster_arn.clone();
    on_ec2.cluster_name = cluster.cluster_name.clone();
    on_ec2.task_definition_arn = cluster.task_definition_arn.clone();
    on_ec2.service_name = service.to_string();
    let task = TaskRef {
        arn: task_arn.to_string(),
        eni_id: String::new(),
        ip: String::new(),
        subnet_id: String::new(),
    };
    let mut event = miner_finding_for(&on_ec2, &task, finding_id);
    let details = &mut event["detail"]["resource"]["ecsClusterDetails"]["taskDetails"];
    details["launchType"] = "EC2".into();
    event
}

/// The sample crypto-mining finding rewritten to point at one of the fixture's tasks.
pub fn miner_finding_for(fixture: &Fixture, task: &TaskRef, finding_id: &str) -> Value {
    let mut event: Value = serde_json::from_str(MINER_EVENT).unwrap_or(Value::Null);
    let region = fixture.region.as_str();
    event["account"] = ACCOUNT.into();
    event["region"] = region.into();
    let detail = &mut event["detail"];
    detail["id"] = finding_id.into();
    detail["accountId"] = ACCOUNT.into();
    detail["region"] = region.into();
    detail["arn"] = format!("arn:aws:guardduty:{region}:{ACCOUNT}:detector/4ec1d2a8f7b64c0e9b3a5d6f7e8c9a01/finding/{finding_id}").into();
    let cluster = &mut detail["resource"]["ecsClusterDetails"];
    cluster["name"] = fixture.cluster_name.as_str().into();
    cluster["arn"] = fixture.cluster_arn.as_str().into();
    cluster["tags"] = Value::Array(Vec::new());
    let task_details = &mut cluster["taskDetails"];
    task_details["arn"] = task.arn.as_str().into();
    task_details["definitionArn"] = fixture.task_definition_arn.as_str().into();
    task_details["group"] = format!("service:{}", fixture.service_name).into();
    event
}

/// Turn on GuardDuty with Runtime Monitoring and its ECS Fargate agent management, as a team
/// does before relying on findings.
pub async fn enable_runtime_monitoring(clients: &Clients) -> Result<String, EmulatorError> {
    use aws_sdk_guardduty::types::{
        DetectorAdditionalConfiguration, DetectorFeature, DetectorFeatureConfiguration,
        FeatureAdditionalConfiguration, FeatureStatus,
    };
    let detector = clients
        .guardduty
        .create_detector()
        .enable(true)
        .features(
            DetectorFeatureConfiguration::builder()
                .name(DetectorFeature::RuntimeMonitoring)
                .status(FeatureStatus::Enabled)
                .additional_configuration(
                    DetectorAdditionalConfiguration::builder()
                        .name(FeatureAdditionalConfiguration::EcsFargateAgentManagement)
                        .status(FeatureStatus::Enabled)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(seed("CreateDetector"))?;
    need(detector.detector_id(), "DetectorId").map(str::to_string)
}
