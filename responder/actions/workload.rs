//! Reads shared by several actions (isolate, evidence, stop, deregister, the exemption
//! guardrail) and their JSON renderings for evidence: what ECS says about a task and its
//! service, what EC2 says about an ENI and the VPC's network ACLs.

use std::sync::Arc;

use aws_sdk_ec2::types::{Filter, NetworkAcl};
use aws_sdk_ecs::types::TaskDefinition;
use serde_json::{json, Value};

use super::{aws, Clients, StepError};
use crate::incident::EcsTaskTarget;

/// What the exemption guardrail calls (service tags are not in findings).
pub const SERVICE_PERMISSIONS: &[&str] = &["ecs:DescribeServices"];

/// What DescribeTasks says about a task's network.
#[derive(Debug, Clone, Default)]
pub struct TaskFacts {
    /// The task's last status (e.g. `RUNNING`, `STOPPED`).
    pub last_status: Option<String>,
    /// The id of the task's elastic network interface.
    pub eni_id: Option<String>,
    /// The subnet of that network interface.
    pub subnet_id: Option<String>,
    /// The task's private IPv4 address.
    pub ipv4: Option<String>,
    /// The task's private IPv6 address.
    pub ipv6: Option<String>,
    /// The container instance it runs on (EC2 launch type).
    pub container_instance_arn: Option<String>,
    /// The task as JSON, for evidence.
    pub raw: Value,
}

/// DescribeTasks for one task. `Ok(None)` when ECS no longer knows it (`MISSING`).
pub async fn describe_task(
    clients: &Clients,
    task: &EcsTaskTarget,
) -> Result<Option<TaskFacts>, StepError> {
    let output = clients
        .ecs
        .describe_tasks()
        .cluster(&task.cluster_arn)
        .tasks(&task.task_arn)
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await
        .map_err(aws("ECS DescribeTasks"))?;
    let Some(found) = output.tasks().first() else {
        return Ok(None);
    };
    let mut facts = TaskFacts {
        last_status: found.last_status().map(str::to_string),
        container_instance_arn: found.container_instance_arn().map(str::to_string),
        raw: ecs_task_json(found),
        ..TaskFacts::default()
    };
    for attachment in found.attachments() {
        if attachment.r#type() != Some("ElasticNetworkInterface") {
            continue;
        }
        for detail in attachment.details() {
            let value = detail.value().map(str::to_string);
            match detail.name() {
                Some("networkInterfaceId") => facts.eni_id = value,
                Some("subnetId") => facts.subnet_id = value,
                Some("privateIPv4Address") => facts.ipv4 = value,
                Some("privateIPv6Address") => facts.ipv6 = value,
                _ => {}
            }
        }
    }
    // The documented place of a task's IPv6 address; the attachment detail is not documented.
    if facts.ipv6.is_none() {
        facts.ipv6 = task_ipv6(found);
    }
    Ok(Some(facts))
}

/// A task's IPv6 address as its containers' network interfaces report it
/// (`containers[].networkInterfaces[].ipv6Address`).
pub fn task_ipv6(task: &aws_sdk_ecs::types::Task) -> Option<String> {
    task.containers()
        .iter()
        .flat_map(|c| c.network_interfaces())
        .find_map(|n| n.ipv6_address().map(str::to_string))
}

/// The parts of an ECS task worth keeping as evidence (the SDK types are not serde).
pub fn ecs_task_json(task: &aws_sdk_ecs::types::Task) -> Value {
    json!({
        "taskArn": task.task_arn(),
        "clusterArn": task.cluster_arn(),
        "taskDefinitionArn": task.task_definition_arn(),
        "lastStatus": task.last_status(),
        "desiredStatus": task.desired_status(),
        "launchType": task.launch_type().map(|l| l.as_str()),
        "containerInstanceArn": task.container_instance_arn(),
        "group": task.group(),
        "startedBy": task.started_by(),
        "availabilityZone": task.availability_zone(),
        "stoppedReason": task.stopped_reason(),
        "attachments": task.attachments().iter().map(|a| json!({
            "id": a.id(), "type": a.r#type(), "status": a.status(),
            "details": a.details().iter().map(|d| json!({"name": d.name(), "value": d.value()})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "containers": task.containers().iter().map(|c| json!({
            "name": c.name(), "image": c.image(), "imageDigest": c.image_digest(),
            "runtimeId": c.runtime_id(), "lastStatus": c.last_status(),
        })).collect::<Vec<_>>(),
        "tags": task.tags().iter().map(|t| json!({"key": t.key(), "value": t.value()})).collect::<Vec<_>>(),
    })
}

/// DescribeTaskDefinition, with each container's environment values dropped (nothing reads
/// them and they may hold secrets). A revision named by its full ARN is read once per
/// container and shared by every step that asks ([`super::aws::StableFacts`]); a family alone
/// (its latest revision) is read each time. `Ok(None)` when ECS returns no definition.
pub async fn describe_task_definition(
    clients: &Clients,
    arn: &str,
) -> Result<Option<Arc<TaskDefinition>>, StepError> {
    let read = || async {
        let output = clients
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(aws("ECS DescribeTaskDefinition"))?;
        Ok::<_, StepError>(output.task_definition.map(|mut definition| {
            for container in definition.container_definitions.iter_mut().flatten() {
                for variable in container.environment.iter_mut().flatten() {
                    variable.value = None;
                }
            }
            Arc::new(definition)
        }))
    };
    if !names_revision(arn) {
        return read().await;
    }
    let cell = clients.stable.task_definition_cell(arn);
    cell.get_or_try_init(read).await.cloned()
}

/// `arn:…:task-definition/family:revision`: one revision, whose contents never change. Its
/// status does (deregistered, deleted), and so can its tags: neither is read or kept here.
fn names_revision(arn: &str) -> bool {
    arn.starts_with("arn:")
        && arn.contains(":task-definition/")
        && arn.rsplit_once(':').is_some_and(|(_, revision)| {
            !revision.is_empty() && revision.bytes().all(|b| b.is_ascii_digit())
        })
}

/// What DescribeServices says about a task's service.
#[derive(Debug, Clone)]
pub struct ServiceFacts {
    /// The service's tags, as key and value.
    pub tags: Vec<(String, String)>,
    /// The service as JSON, for evidence.
    pub raw: Value,
    /// The service as ECS described it.
    pub service: aws_sdk_ecs::types::Service,
}

/// DescribeServices (with tags) for the task's service; `Ok(None)` when the task has no
/// service or ECS does not know it.
pub async fn describe_service(
    clients: &Clients,
    task: &EcsTaskTarget,
) -> Result<Option<ServiceFacts>, StepError> {
    let Some(service) = &task.service else {
        return Ok(None);
    };
    let output = clients
        .ecs
        .describe_services()
        .cluster(&task.cluster_arn)
        .services(service)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .map_err(aws("ECS DescribeServices"))?;
    Ok(output.services().first().map(|s| ServiceFacts {
        tags: s
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
        raw: json!({
            "serviceArn": s.service_arn(), "serviceName": s.service_name(), "status": s.status(),
            "desiredCount": s.desired_count(), "runningCount": s.running_count(),
            "taskDefinition": s.task_definition(),
            "launchType": s.launch_type().map(|l| l.as_str()),
            "loadBalancers": s.load_balancers().iter().map(|l| json!({
                "targetGroupArn": l.target_group_arn(), "containerName": l.container_name(), "containerPort": l.container_port(),
            })).collect::<Vec<_>>(),
            "tags": s.tags().iter().map(|t| json!({"key": t.key(), "value": t.value()})).collect::<Vec<_>>(),
        }),
        service: s.clone(),
    }))
}

/// A network ACL as evidence (the SDK types are not serde).
pub fn acl_json(acl: &NetworkAcl) -> Value {
    json!({
        "networkAclId": acl.network_acl_id(),
        "isDefault": acl.is_default(),
        "vpcId": acl.vpc_id(),
        "associations": acl.associations().iter().map(|a| a.subnet_id()).collect::<Vec<_>>(),
        "entries": acl.entries().iter().map(|e| json!({
            "ruleNumber": e.rule_number(), "egress": e.egress(), "ruleAction": e.rule_action().map(|r| r.as_str()),
            "protocol": e.protocol(), "cidrBlock": e.cidr_block(), "ipv6CidrBlock": e.ipv6_cidr_block(),
            "portRange": e.port_range().map(|p| json!({"from": p.from(), "to": p.to()})),
        })).collect::<Vec<_>>(),
    })
}

/// Every network ACL of a VPC.
pub async fn describe_acls(clients: &Clients, vpc_id: &str) -> Result<Vec<NetworkAcl>, StepError> {
    let output = clients
        .ec2
        .describe_network_acls()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkAcls"))?;
    Ok(output.network_acls().to_vec())
}

/// A network interface as evidence.
pub fn eni_json(eni: &aws_sdk_ec2::types::NetworkInterface) -> Value {
    json!({
        "networkInterfaceId": eni.network_interface_id(),
        "description": eni.description(),
        "interfaceType": eni.interface_type().map(|t| t.as_str()),
        "requesterManaged": eni.requester_managed(),
        "requesterId": eni.requester_id(),
        "status": eni.status().map(|s| s.as_str()),
        "vpcId": eni.vpc_id(),
        "subnetId": eni.subnet_id(),
        "privateIpAddress": eni.private_ip_address(),
        "publicIp": eni.association().and_then(|a| a.public_ip()),
        "groups": eni.groups().iter().map(|g| json!({"groupId": g.group_id(), "groupName": g.group_name()})).collect::<Vec<_>>(),
        "macAddress": eni.mac_address(),
    })
}

#[cfg(test)]
mod tests {
    use super::names_revision;

    #[test]
    fn only_a_full_arn_with_a_revision_is_remembered() {
        assert!(names_revision(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/web:42"
        ));
        // The family's latest revision changes with each registration.
        assert!(!names_revision(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/web"
        ));
        // Without an ARN the account is implied: another account's `web:42` is another revision.
        assert!(!names_revision("web:42"));
        assert!(!names_revision(
            "arn:aws:ecs:us-east-1:123456789012:task-definition/web:"
        ));
        assert!(!names_revision(
            "arn:aws:ecs:us-east-1:123456789012:service/cluster/web:42"
        ));
    }
}
