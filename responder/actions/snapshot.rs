//! `snapshot-volumes`: an EBS snapshot of every volume attached to the instance, tagged with
//! the incident, for offline forensics.

use serde_json::{json, Value};

use super::{aws, Clients, StepError};
use crate::incident::{Incident, Target};

pub async fn snapshot_volumes(clients: &Clients, incident: &Incident) -> Result<Value, StepError> {
    let Target::Ec2Instance(instance) = &incident.target else {
        return Err(StepError::Refused(format!(
            "snapshot-volumes acts on EC2 instances; this is a {}",
            incident.target.kind().name()
        )));
    };
    let volumes = clients
        .ec2
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&instance.instance_id)
                .build(),
        )
        .send()
        .await
        .map_err(aws("EC2 DescribeVolumes"))?;
    let mut snapshots = Vec::new();
    for volume in volumes.volumes() {
        let Some(volume_id) = volume.volume_id() else {
            continue;
        };
        let output = clients
            .ec2
            .create_snapshot()
            .volume_id(volume_id)
            .description(format!(
                "incident-responder: GuardDuty finding {} on {}",
                incident.finding_id, instance.instance_id
            ))
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Snapshot)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key(super::tag::INCIDENT_TAG)
                            .value(&incident.finding_id)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(aws("EC2 CreateSnapshot"))?;
        snapshots.push(json!({"volume_id": volume_id, "snapshot_id": output.snapshot_id()}));
    }
    Ok(
        json!({"summary": format!("{} EBS snapshot(s) started", snapshots.len()), "snapshots": snapshots}),
    )
}
