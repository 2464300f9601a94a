//! `snapshot-volumes`: an EBS snapshot of every volume attached to the instance, tagged with
//! the incident, for offline forensics.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Action, Failure, Phase, StepContext, StepError};
use crate::incident::{Target, TargetKind};

/// The `snapshot-volumes` action.
pub struct SnapshotVolumes;

/// Parameters of `snapshot-volumes` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {}

/// The snapshots started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotOutput {
    /// One per attached volume.
    pub snapshots: Vec<Snapshot>,
}

/// One snapshot started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The volume.
    pub volume_id: String,
    /// Its snapshot.
    pub snapshot_id: Option<String>,
}

impl Action for SnapshotVolumes {
    const NAME: &'static str = "snapshot-volumes";
    const PHASE: Phase = Phase::Preserve;
    const PURPOSE: &'static str = "snapshot the instance's EBS volumes for forensics";
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = &[TargetKind::Ec2Instance];
    const PERMISSIONS: &'static [&'static str] = &[
        "ec2:DescribeVolumes",
        "ec2:CreateSnapshot",
        "ec2:CreateTags",
    ];

    type Params = SnapshotParams;
    type Output = SnapshotOutput;

    async fn run(
        ctx: &StepContext<'_>,
        _params: &SnapshotParams,
    ) -> Result<SnapshotOutput, Failure<SnapshotOutput>> {
        let incident = ctx.incident;
        let Target::Ec2Instance(instance) = &incident.target else {
            return Err(StepError::Refused(format!(
                "snapshot-volumes acts on EC2 instances; this is a {}",
                incident.target.kind().name()
            ))
            .into());
        };
        let ec2 = &ctx.clients.ec2;
        let volumes = ec2
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
            let output = ec2
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
                .map_err(aws("EC2 CreateSnapshot"));
            match output {
                Ok(output) => snapshots.push(Snapshot {
                    volume_id: volume_id.to_string(),
                    snapshot_id: output.snapshot_id().map(str::to_string),
                }),
                // The snapshots already started are kept and reported.
                Err(error) => {
                    return Err(Failure {
                        error,
                        partial: Some(SnapshotOutput { snapshots }),
                    })
                }
            }
        }
        Ok(SnapshotOutput { snapshots })
    }

    fn summary(output: &SnapshotOutput) -> String {
        format!(
            "{} started",
            crate::report::count(output.snapshots.len(), "EBS snapshot", "EBS snapshots")
        )
    }
}
