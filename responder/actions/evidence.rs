//! `evidence`: an S3 object set per incident under `incidents/{account}/{finding-id}/` — the
//! finding, the workload's state as AWS describes it, the network ACLs before and after
//! isolation, tags — and a manifest with the SHA-256 of each object. Objects get an Object Lock
//! legal hold when the bucket has Object Lock. Written before any `stop`.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectLockLegalHoldStatus;
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::workload::{
    acl_json, describe_acls, describe_service, describe_task, describe_task_definition, eni_json,
};
use super::{aws, Action, Clients, Earlier, Failure, Phase, StepContext, StepError};
use crate::incident::{EcsTaskTarget, Incident, Target, TargetKind};

/// The `evidence` action.
pub struct Evidence;

impl Action for Evidence {
    const NAME: &'static str = "evidence";
    const PHASE: Phase = Phase::Preserve;
    const PURPOSE: &'static str =
        "preserve the finding and the workload's state before anything is torn down";
    const CONTAINMENT: bool = false;
    const TARGETS: &'static [TargetKind] = TargetKind::ALL;
    const PERMISSIONS: &'static [&'static str] = &[
        "ecs:DescribeTasks",
        "ecs:DescribeTaskDefinition",
        "ecs:DescribeServices",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeNetworkAcls",
        "s3:GetBucketObjectLockConfiguration",
        "s3:PutObject",
        "s3:PutObjectLegalHold",
    ];

    type Params = EvidenceParams;
    type Output = EvidenceOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &EvidenceParams,
    ) -> Result<EvidenceOutput, Failure<EvidenceOutput>> {
        let bucket = ctx.config.bucket()?;
        // A resource in another account cannot be described from here: keep the finding.
        let describable = ctx
            .config
            .account_id
            .as_deref()
            .is_none_or(|own| own == ctx.incident.account_id);
        Ok(preserve(
            ctx.clients,
            bucket,
            ctx.incident,
            ctx.raw_finding,
            ctx.earlier,
            params.legal_hold,
            describable,
        )
        .await?)
    }

    fn summary(output: &EvidenceOutput) -> String {
        format!(
            "{} and a manifest in s3://{}/{}{}",
            crate::report::count(output.objects.len(), "object", "objects"),
            output.bucket,
            output.prefix,
            if output.legal_hold {
                " (legal hold)"
            } else {
                ""
            }
        )
    }
}

/// Parameters of `evidence`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceParams {
    /// Put an S3 Object Lock legal hold on every evidence object when the bucket has Object Lock.
    #[serde(default = "yes")]
    pub legal_hold: bool,
}

fn yes() -> bool {
    true
}

impl Default for EvidenceParams {
    fn default() -> Self {
        EvidenceParams { legal_hold: true }
    }
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceOutput {
    /// The evidence bucket.
    pub bucket: String,
    /// `incidents/{account}/{finding-id}/`.
    pub prefix: String,
    /// The manifest object.
    pub manifest: StoredObject,
    /// Every object the manifest lists.
    pub objects: Vec<StoredObject>,
    /// Whether the objects are under an Object Lock legal hold.
    pub legal_hold: bool,
}

/// One stored object, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Its key in the bucket.
    pub key: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size.
    pub bytes: usize,
}

/// Where an incident's evidence goes.
pub fn prefix(incident: &Incident) -> String {
    format!("incidents/{}/{}/", incident.account_id, incident.finding_id)
}

/// Collect and store the evidence.
async fn preserve(
    clients: &Clients,
    bucket: &str,
    incident: &Incident,
    raw_finding: &crate::event::RawFinding,
    earlier: &Earlier,
    legal_hold: bool,
    describable: bool,
) -> Result<EvidenceOutput, StepError> {
    let containment = earlier.containment.as_ref();
    // Whether the bucket locks objects is read alongside the documents.
    let collect = async {
        let mut documents: Vec<(&str, Value)> = vec![("finding.json", raw_finding.to_value())];
        match &incident.target {
            _ if !describable => {}
            Target::EcsTask(task) => documents.extend(ecs_documents(clients, task, earlier).await?),
            Target::Ec2Instance(instance) => {
                let output = clients
                    .ec2
                    .describe_instances()
                    .instance_ids(&instance.instance_id)
                    .send()
                    .await
                    .map_err(aws("EC2 DescribeInstances"))?;
                let instances: Vec<Value> = output
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(|i| {
                    json!({
                        "instanceId": i.instance_id(), "imageId": i.image_id(),
                        "instanceType": i.instance_type().map(|t| t.as_str()),
                        "state": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                        "privateIpAddress": i.private_ip_address(), "subnetId": i.subnet_id(), "vpcId": i.vpc_id(),
                        "iamInstanceProfile": i.iam_instance_profile().and_then(|p| p.arn()),
                        "launchTime": i.launch_time().map(|t| t.to_string()),
                        "networkInterfaces": i.network_interfaces().iter().map(|n| json!({
                            "networkInterfaceId": n.network_interface_id(),
                            "groups": n.groups().iter().map(|g| g.group_id()).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "blockDeviceMappings": i.block_device_mappings().iter().map(|b| json!({
                            "deviceName": b.device_name(), "volumeId": b.ebs().and_then(|e| e.volume_id()),
                        })).collect::<Vec<_>>(),
                        "tags": i.tags().iter().map(|t| json!({"key": t.key(), "value": t.value()})).collect::<Vec<_>>(),
                    })
                })
                .collect();
                documents.push(("describe-instances.json", Value::Array(instances)));
                if let Some(record) = containment {
                    documents.push((
                        "containment.json",
                        serde_json::to_value(record).unwrap_or_default(),
                    ));
                }
            }
            // EKS and other targets: the finding is the evidence this tool can collect.
            _ => {}
        }
        Ok::<_, StepError>(documents)
    };
    let (documents, lock) = tokio::join!(collect, object_lock_enabled(clients, bucket));
    let (documents, lock) = (documents?, lock?);

    let hold = legal_hold && lock;
    let base = prefix(incident);
    // The objects together (one round trip), the manifest with their digests after.
    let stored = futures::future::try_join_all(documents.into_iter().map(|(name, document)| {
        let body = serde_json::to_vec_pretty(&document).unwrap_or_default();
        let key = format!("{base}{name}");
        async move { put(clients, bucket, &key, body, hold).await }
    }))
    .await?;
    let manifest = json!({
        "finding_id": incident.finding_id,
        "finding_type": incident.finding_type,
        "account_id": incident.account_id,
        "region": incident.region,
        "collected_at": chrono::Utc::now().to_rfc3339(),
        "collector": concat!("guardduty-responder ", env!("CARGO_PKG_VERSION")),
        "legal_hold": hold,
        "objects": &stored,
    });
    let manifest_key = format!("{base}manifest.json");
    let manifest_object = put(
        clients,
        bucket,
        &manifest_key,
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        hold,
    )
    .await?;
    Ok(EvidenceOutput {
        bucket: bucket.to_string(),
        prefix: base,
        manifest: manifest_object,
        objects: stored,
        legal_hold: hold,
    })
}

async fn ecs_documents(
    clients: &Clients,
    task: &EcsTaskTarget,
    earlier: &Earlier,
) -> Result<Vec<(&'static str, Value)>, StepError> {
    let containment = earlier.containment.as_ref();
    let mut documents = Vec::new();
    let read_definition = |arn: Option<String>| async move {
        let Some(arn) = arn else {
            return Ok(None);
        };
        let described = describe_task_definition(clients, &arn).await?;
        Ok::<_, StepError>(described.map(|def| json!({
            "taskDefinitionArn": def.task_definition_arn(),
            "family": def.family(), "revision": def.revision(),
            "networkMode": def.network_mode().map(|m| m.as_str()),
            "taskRoleArn": def.task_role_arn(), "executionRoleArn": def.execution_role_arn(),
            "requiresCompatibilities": def.requires_compatibilities().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "cpu": def.cpu(), "memory": def.memory(),
            // Environment values may hold secrets: names only.
            "containerDefinitions": def.container_definitions().iter().map(|c| json!({
                "name": c.name(), "image": c.image(), "command": c.command(), "entryPoint": c.entry_point(),
                "privileged": c.privileged(), "user": c.user(),
                "environmentNames": c.environment().iter().filter_map(|e| e.name()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })))
    };
    let read_interfaces = |eni_id: Option<String>| async move {
        let Some(eni_id) = eni_id else {
            return Ok(None);
        };
        clients
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni_id)
            .send()
            .await
            .map(Some)
            .map_err(aws("EC2 DescribeNetworkInterfaces"))
    };
    let known_vpc = containment.and_then(|c| c.vpc_id.clone());
    // The ACLs as the isolation's verification read them, after its entries (this response's
    // own isolation): not read again.
    let verified_acls = containment
        .map(|c| c.acls_after.clone())
        .filter(|acls| !acls.is_empty());
    let known_acls = async {
        match (verified_acls, &known_vpc) {
            (Some(acls), _) => Ok::<_, StepError>(Some(acls)),
            (None, Some(vpc_id)) => describe_acls(clients, vpc_id).await.map(Some),
            (None, None) => Ok(None),
        }
    };
    // Everything read together: the task described again (evidence records the state after
    // isolation), and what it names as the finding and the containment name it. Where the
    // task's description names something else, that is what is read (one more round trip).
    let named_definition = task.task_definition_arn.clone();
    let named_eni = containment.and_then(|c| c.eni_ids.first().cloned());
    // A guessed read's failure counts only if its answer is used.
    let (facts, definition, service, interfaces, mut acls) = tokio::try_join!(
        describe_task(clients, task),
        async { Ok::<_, StepError>(read_definition(named_definition.clone()).await) },
        // Read by this response already (the exemption guardrail), seconds ago: not again.
        async {
            match &earlier.service {
                Some(service) => Ok(Some(service.clone())),
                None => describe_service(clients, task).await,
            }
        },
        async { Ok::<_, StepError>(read_interfaces(named_eni.clone()).await) },
        known_acls
    )?;
    let definition_arn = facts
        .as_ref()
        .and_then(|f| f.raw["taskDefinitionArn"].as_str().map(str::to_string))
        .or(named_definition.clone());
    let definition = if definition_arn == named_definition {
        definition?
    } else {
        read_definition(definition_arn).await?
    };
    let eni_id = facts
        .as_ref()
        .and_then(|f| f.eni_id.clone())
        .or(named_eni.clone());
    let interfaces = if eni_id == named_eni {
        interfaces?
    } else {
        read_interfaces(eni_id).await?
    };
    documents.push((
        "describe-tasks.json",
        match &facts {
            Some(facts) => json!({"tasks": [facts.raw], "failures": []}),
            None => json!({"tasks": [], "failures": [{"arn": task.task_arn, "reason": "MISSING"}]}),
        },
    ));
    documents.push((
        "tags.json",
        json!({
            "task": facts.as_ref().map(|f| f.raw["tags"].clone()),
            "cluster": task.cluster_tags,
        }),
    ));
    if let Some(definition) = definition {
        documents.push(("task-definition.json", definition));
    }
    if let Some(service) = service {
        documents.push(("service.json", Value::Array(vec![service.raw])));
    }
    if let Some(output) = interfaces {
        let enis: Vec<Value> = output.network_interfaces().iter().map(eni_json).collect();
        // No containment to say where the task is: its interface does (one more round trip).
        if acls.is_none() {
            if let Some(vpc_id) = output.network_interfaces().first().and_then(|e| e.vpc_id()) {
                acls = Some(describe_acls(clients, vpc_id).await?);
            }
        }
        documents.push(("network-interfaces.json", Value::Array(enis)));
    }
    if let Some(record) = containment {
        if !record.acls_before.is_empty() {
            documents.push((
                "network-acls-before.json",
                serde_json::to_value(&record.acls_before).unwrap_or_default(),
            ));
        }
        if !record.reachability.is_empty() {
            documents.push((
                "reachability.json",
                serde_json::to_value(&record.reachability).unwrap_or_default(),
            ));
        }
        documents.push((
            "containment.json",
            serde_json::to_value(record).unwrap_or_default(),
        ));
    }
    if let Some(acls) = acls {
        let name = if containment.is_some() {
            "network-acls-after.json"
        } else {
            "network-acls.json"
        };
        documents.push((name, Value::Array(acls.iter().map(acl_json).collect())));
    }
    Ok(documents)
}

async fn object_lock_enabled(clients: &Clients, bucket: &str) -> Result<bool, StepError> {
    match clients
        .s3
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(output) => Ok(output
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            .is_some_and(|e| e.as_str() == "Enabled")),
        Err(error) if error.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
        Err(error) => Err(aws("S3 GetObjectLockConfiguration")(error)),
    }
}

async fn put(
    clients: &Clients,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    legal_hold: bool,
) -> Result<StoredObject, StepError> {
    let digest = Sha256::digest(&body);
    let sha256 = hex::encode(digest);
    let bytes = body.len();
    // The SHA-256 the manifest records, sent for S3 to verify: Object Lock needs a checksum,
    // and this one does not depend on the SDK's default (which
    // AWS_REQUEST_CHECKSUM_CALCULATION=when_required turns off).
    let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
    let mut request = clients
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .checksum_sha256(checksum)
        .body(ByteStream::from(body));
    if legal_hold {
        request = request.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
    }
    request.send().await.map_err(aws("S3 PutObject"))?;
    Ok(StoredObject {
        key: key.to_string(),
        sha256,
        bytes,
    })
}
