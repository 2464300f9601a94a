//! Serde model of the EventBridge envelope and the GuardDuty finding (schema 2.0).
//!
//! Field names follow the GuardDuty API model (`Finding`, `Resource`, `EcsClusterDetails`,
//! `EcsTaskDetails`, `InstanceDetails`, `EksClusterDetails`, `KubernetesDetails`, `Service`,
//! `RuntimeDetails`): <https://docs.aws.amazon.com/guardduty/latest/APIReference/API_Finding.html>.
//! The model is deliberately tolerant: unknown fields are ignored and everything AWS may omit
//! is optional, because GuardDuty adds fields over time and a missing optional field must never
//! stop a response.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `source` of GuardDuty findings on EventBridge.
pub const GUARDDUTY_SOURCE: &str = "aws.guardduty";
/// `detail-type` of GuardDuty findings on EventBridge.
pub const GUARDDUTY_DETAIL_TYPE: &str = "GuardDuty Finding";

/// A GuardDuty finding as carried in `detail`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The version of the finding schema (`2.0`).
    #[serde(default)]
    pub schema_version: Option<String>,
    /// The finding's unique id.
    pub id: String,
    /// The finding's ARN.
    #[serde(default)]
    pub arn: Option<String>,
    /// The finding type, e.g. `CryptoCurrency:Runtime/BitcoinTool.B!DNS`.
    #[serde(rename = "type")]
    pub finding_type: String,
    /// GuardDuty's severity score, from 0 to 10.
    #[serde(deserialize_with = "severity_number")]
    pub severity: f64,
    /// The account in which the finding was generated (the resource's account).
    #[serde(default)]
    pub account_id: Option<String>,
    /// The region where the finding was generated.
    #[serde(default)]
    pub region: Option<String>,
    /// The AWS partition (e.g. `aws`).
    #[serde(default)]
    pub partition: Option<String>,
    /// When GuardDuty created the finding (ISO 8601).
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// When GuardDuty last updated the finding (ISO 8601).
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// The finding's title.
    #[serde(default)]
    pub title: Option<String>,
    /// The finding's description.
    #[serde(default)]
    pub description: Option<String>,
    /// The AWS resource the activity concerned.
    #[serde(default, deserialize_with = "object_or_null")]
    pub resource: Option<Resource>,
    /// Additional information about the finding: what was seen, how often, by which feature.
    #[serde(default, deserialize_with = "object_or_null")]
    pub service: Option<Service>,
}

/// A section of the finding: an object, or null (absent). serde reads a struct from a JSON
/// array too (its fields in order, so `[]` is every field absent): a section given as anything
/// but an object is an error, not an empty section that hides, say, the sample flag.
pub(crate) fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Section<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Section<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<S: Deserializer<'de>>(self, inner: S) -> Result<Self::Value, S::Error> {
            inner.deserialize_map(self)
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    deserializer.deserialize_option(Section(std::marker::PhantomData))
}

/// GuardDuty timestamps are ISO-8601 strings in findings, but some nested ECS fields have been
/// seen as epoch numbers; keep whichever arrives rather than failing (an epoch number must be
/// a second between 1970 and 3000).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Timestamp {
    /// An ISO 8601 string, as GuardDuty normally sends.
    Text(String),
    /// A numeric epoch timestamp, kept as received.
    Epoch(f64),
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const YEAR_3000: f64 = 32_503_680_000.0;
        match deserializer.deserialize_any(TextOrNumber("an ISO 8601 time or epoch seconds"))? {
            TextOrNumberValue::Text(text) => Ok(Timestamp::Text(text)),
            TextOrNumberValue::Number(secs) if (0.0..YEAR_3000).contains(&secs) => {
                Ok(Timestamp::Epoch(secs))
            }
            TextOrNumberValue::Number(secs) => Err(serde::de::Error::custom(format!(
                "timestamp {secs} is not a time between 1970 and 3000"
            ))),
        }
    }
}

/// A string or a number, read as it comes (an untagged enum would buffer the value first).
struct TextOrNumber(&'static str);

enum TextOrNumberValue {
    Text(String),
    Number(f64),
}

impl serde::de::Visitor<'_> for TextOrNumber {
    type Value = TextOrNumberValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(TextOrNumberValue::Text(text.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(TextOrNumberValue::Text(text))
    }
    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Self::Value, E> {
        Ok(TextOrNumberValue::Number(number))
    }
    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Self::Value, E> {
        Ok(TextOrNumberValue::Number(number as f64))
    }
    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Self::Value, E> {
        Ok(TextOrNumberValue::Number(number as f64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timestamp::Text(text) => f.write_str(text),
            Timestamp::Epoch(secs) => write!(f, "{secs}"),
        }
    }
}

/// Severity is a double in the API model; accept a numeric string too rather than dropping
/// the finding.
fn severity_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let value = match deserializer.deserialize_any(TextOrNumber("a number from 0 to 10"))? {
        TextOrNumberValue::Number(n) => n,
        TextOrNumberValue::Text(text) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| serde::de::Error::custom(format!("severity {text:?} is not a number")))?,
    };
    if !value.is_finite() || !(0.0..=10.0).contains(&value) {
        return Err(serde::de::Error::custom(format!(
            "severity {value} is outside GuardDuty's 0-10 range"
        )));
    }
    Ok(value)
}

/// The resource a finding is about; which `*Details` member is set depends on `resource_type`.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// The type of resource, e.g. `ECSCluster`, `Instance`, `EKSCluster`.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// The EC2 instance, when the resource is an instance.
    #[serde(default, deserialize_with = "object_or_null")]
    pub instance_details: Option<InstanceDetails>,
    /// The ECS cluster (and task), when the resource is an ECS cluster.
    #[serde(default, deserialize_with = "object_or_null")]
    pub ecs_cluster_details: Option<EcsClusterDetails>,
    /// The EKS cluster, when the resource is an EKS cluster.
    #[serde(default, deserialize_with = "object_or_null")]
    pub eks_cluster_details: Option<EksClusterDetails>,
    /// The Kubernetes workload, for EKS findings.
    #[serde(default, deserialize_with = "object_or_null")]
    pub kubernetes_details: Option<KubernetesDetails>,
    /// The container, when the finding names one directly.
    #[serde(default)]
    pub container_details: Option<Container>,
}

/// A resource tag.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
pub struct Tag {
    /// The tag key.
    #[serde(default)]
    pub key: String,
    /// The tag value.
    #[serde(default)]
    pub value: String,
}

/// The EC2 instance a finding is about.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetails {
    /// The instance id.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The instance type.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// The instance state (e.g. `running`).
    #[serde(default)]
    pub instance_state: Option<String>,
    /// The Availability Zone of the instance.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// The id of the instance's AMI.
    #[serde(default)]
    pub image_id: Option<String>,
    /// The IAM instance profile attached to the instance.
    #[serde(default)]
    pub iam_instance_profile: Option<IamInstanceProfile>,
    /// The instance's elastic network interfaces.
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The instance's tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// The IAM instance profile of an EC2 instance.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IamInstanceProfile {
    /// The profile's ARN.
    #[serde(default)]
    pub arn: Option<String>,
    /// The profile's id.
    #[serde(default)]
    pub id: Option<String>,
}

/// An elastic network interface of an EC2 instance.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// The network interface id.
    #[serde(default)]
    pub network_interface_id: Option<String>,
    /// The primary private IPv4 address.
    #[serde(default)]
    pub private_ip_address: Option<String>,
    /// The IPv6 addresses.
    #[serde(default)]
    pub ipv6_addresses: Vec<String>,
    /// The public IP address.
    #[serde(default)]
    pub public_ip: Option<String>,
    /// The subnet id.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// The VPC id.
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// The security groups attached to the interface.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
}

/// A security group attached to a network interface.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    /// The security group id.
    #[serde(default)]
    pub group_id: Option<String>,
    /// The security group name.
    #[serde(default)]
    pub group_name: Option<String>,
}

/// The ECS cluster a finding is about.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EcsClusterDetails {
    /// The cluster name.
    #[serde(default)]
    pub name: Option<String>,
    /// The cluster ARN.
    #[serde(default)]
    pub arn: Option<String>,
    /// The cluster status (e.g. `ACTIVE`).
    #[serde(default)]
    pub status: Option<String>,
    /// The cluster's tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The ECS task involved in the activity.
    #[serde(default, deserialize_with = "object_or_null")]
    pub task_details: Option<EcsTaskDetails>,
}

/// The ECS task a finding is about.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskDetails {
    /// The task ARN.
    #[serde(default)]
    pub arn: Option<String>,
    /// The ARN of the task definition that created the task.
    #[serde(default)]
    pub definition_arn: Option<String>,
    /// The version counter of the task.
    #[serde(default)]
    pub version: Option<String>,
    /// When the task was created.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// When the task started.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// The task's `startedBy` value (a service's deployment id for service tasks).
    #[serde(default)]
    pub started_by: Option<String>,
    /// The task group (`service:NAME` for a service's tasks).
    #[serde(default)]
    pub group: Option<String>,
    /// `FARGATE`/`EC2` in the API enum, `Fargate` in some documented examples: compared
    /// case-insensitively.
    #[serde(default)]
    pub launch_type: Option<String>,
    /// The task's tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The task's containers.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// A container named in a finding.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// The container runtime (e.g. `containerd`, `docker`).
    #[serde(default)]
    pub container_runtime: Option<String>,
    /// The container id.
    #[serde(default)]
    pub id: Option<String>,
    /// The container name.
    #[serde(default)]
    pub name: Option<String>,
    /// The container image.
    #[serde(default)]
    pub image: Option<String>,
    /// The image name before its last slash (e.g. `public.ecr.aws/amazonlinux`).
    #[serde(default)]
    pub image_prefix: Option<String>,
    /// The container's security context.
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
}

/// The security context of a container.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// Whether the container is privileged.
    #[serde(default)]
    pub privileged: Option<bool>,
    /// Whether the container may gain more privileges than its parent process.
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
}

/// The EKS cluster a finding is about.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EksClusterDetails {
    /// The cluster name.
    #[serde(default)]
    pub name: Option<String>,
    /// The cluster ARN.
    #[serde(default)]
    pub arn: Option<String>,
    /// The id of the cluster's VPC.
    #[serde(default)]
    pub vpc_id: Option<String>,
    /// The cluster status.
    #[serde(default)]
    pub status: Option<String>,
    /// The cluster's tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Kubernetes details of an EKS finding.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesDetails {
    /// The Kubernetes workload involved.
    #[serde(default, deserialize_with = "object_or_null")]
    pub kubernetes_workload_details: Option<KubernetesWorkloadDetails>,
}

/// A Kubernetes workload (e.g. a Deployment or Pod) named in a finding.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesWorkloadDetails {
    /// The workload name.
    #[serde(default)]
    pub name: Option<String>,
    /// The workload type (e.g. `Deployment`, `Pod`).
    #[serde(default, rename = "type")]
    pub workload_type: Option<String>,
    /// The workload's Kubernetes uid.
    #[serde(default)]
    pub uid: Option<String>,
    /// The workload's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The service account the workload runs as.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Whether the workload's pods use the host network.
    #[serde(default)]
    pub host_network: Option<bool>,
    /// The workload's containers.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// The `service` part of a finding: what GuardDuty observed and how.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// The service that generated the finding (`guardduty`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// The id of the GuardDuty detector that generated the finding.
    #[serde(default)]
    pub detector_id: Option<String>,
    /// The GuardDuty feature that generated the finding (e.g. Runtime Monitoring).
    #[serde(default)]
    pub feature_name: Option<String>,
    /// How many times GuardDuty has seen this activity.
    #[serde(default)]
    pub count: Option<u64>,
    /// Whether the finding is archived.
    #[serde(default)]
    pub archived: Option<bool>,
    /// When GuardDuty first saw the activity.
    #[serde(default)]
    pub event_first_seen: Option<Timestamp>,
    /// When GuardDuty last saw the activity.
    #[serde(default)]
    pub event_last_seen: Option<Timestamp>,
    /// The resource's role in the activity (`TARGET` or `ACTOR`).
    #[serde(default)]
    pub resource_role: Option<String>,
    /// What Runtime Monitoring observed: the process and its context.
    #[serde(default, deserialize_with = "object_or_null")]
    pub runtime_details: Option<RuntimeDetails>,
    /// Extra information, including the sample flag.
    #[serde(default, deserialize_with = "object_or_null")]
    pub additional_info: Option<AdditionalInfo>,
    // `action` (what prompted the finding) is not read: the evidence keeps the finding whole.
}

/// What GuardDuty Runtime Monitoring observed.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDetails {
    /// The process involved.
    #[serde(default, deserialize_with = "object_or_null")]
    pub process: Option<ProcessDetails>,
    /// The context of the activity.
    #[serde(default, deserialize_with = "object_or_null")]
    pub context: Option<RuntimeContext>,
}

/// `service.runtimeDetails.context`: what the responder reads of it (the evidence keeps it
/// whole).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeContext {
    /// An example of the command line observed, as GuardDuty gives it (a string, normally).
    #[serde(default)]
    pub command_line_example: Option<Value>,
}

/// A process observed by GuardDuty Runtime Monitoring.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDetails {
    /// The process name.
    #[serde(default)]
    pub name: Option<String>,
    /// The absolute path of the executable.
    #[serde(default)]
    pub executable_path: Option<String>,
    /// The SHA-256 hash of the executable.
    #[serde(default)]
    pub executable_sha256: Option<String>,
    /// The process id.
    #[serde(default)]
    pub pid: Option<i64>,
    /// The process id within its PID namespace (e.g. inside the container).
    #[serde(default)]
    pub namespace_pid: Option<i64>,
    /// The process's working directory.
    #[serde(default)]
    pub pwd: Option<String>,
    /// The user that ran the process.
    #[serde(default)]
    pub user: Option<String>,
    /// When the process started.
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    // `lineage` (the process's ancestors) is not read: the evidence keeps the finding whole.
}

/// `service.additionalInfo`: the documented shape is `{"value": "<json text>", "type": "default"}`,
/// while sample findings also carry `"sample": true` directly. Both are read.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct AdditionalInfo {
    /// The sample flag, when carried directly (`true` or `"true"`).
    #[serde(default)]
    pub sample: Option<Value>,
    /// JSON text that may carry the sample flag (the documented shape).
    #[serde(default)]
    pub value: Option<String>,
    /// The documented `type` (`default`).
    #[serde(default, rename = "type")]
    pub info_type: Option<String>,
}

impl AdditionalInfo {
    /// True when GuardDuty marked this as a generated sample finding.
    pub fn is_sample(&self) -> bool {
        if let Some(flag) = &self.sample {
            if truthy(flag) {
                return true;
            }
        }
        self.value
            .as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|inner| inner.get("sample").map(truthy))
            .unwrap_or(false)
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Tags as a map; later entries win, so task tags can be layered over cluster tags.
pub fn tag_map<'a>(layers: impl IntoIterator<Item = &'a [Tag]>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for layer in layers {
        for tag in layer {
            map.insert(tag.key.clone(), tag.value.clone());
        }
    }
    map
}

/// A finding type split into its documented parts:
/// `ThreatPurpose:ResourceTypeAffected/ThreatFamilyName.DetectionMechanism!Artifact`
/// (<https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_finding-format.html>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingType {
    /// The finding type exactly as received.
    pub raw: String,
    /// Why the activity happened (e.g. `CryptoCurrency`, `Backdoor`).
    pub threat_purpose: String,
    /// The kind of resource affected (e.g. `Runtime`, `EC2`).
    pub resource_type_affected: String,
    /// The threat family (e.g. `BitcoinTool`).
    pub threat_family: String,
    /// The detection mechanism (the part after `.`), if any.
    pub detection_mechanism: Option<String>,
    /// The artifact (the part after `!`, e.g. `DNS`), if any.
    pub artifact: Option<String>,
}

/// A finding type that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("finding type {raw:?} is not of the form ThreatPurpose:ResourceTypeAffected/ThreatFamilyName[.DetectionMechanism][!Artifact]")]
pub struct FindingTypeError {
    /// The finding type as received.
    pub raw: String,
}

impl FindingType {
    /// Runtime Monitoring findings are the ones this tool contains.
    pub fn is_runtime(&self) -> bool {
        self.resource_type_affected == "Runtime"
    }
}

impl FromStr for FindingType {
    type Err = FindingTypeError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let error = || FindingTypeError {
            raw: raw.to_string(),
        };
        let (purpose, rest) = raw.split_once(':').ok_or_else(error)?;
        let (resource, rest) = rest.split_once('/').ok_or_else(error)?;
        let (name, artifact) = match rest.split_once('!') {
            Some((name, artifact)) => (name, Some(artifact)),
            None => (rest, None),
        };
        let (family, mechanism) = match name.split_once('.') {
            Some((family, mechanism)) => (family, Some(mechanism)),
            None => (name, None),
        };
        let valid = |part: &str| !part.is_empty() && !part.chars().any(char::is_whitespace);
        if !valid(purpose)
            || !valid(resource)
            || !valid(family)
            || mechanism.is_some_and(|m| !valid(m))
            || artifact.is_some_and(|a| !valid(a))
        {
            return Err(error());
        }
        Ok(FindingType {
            raw: raw.to_string(),
            threat_purpose: purpose.to_string(),
            resource_type_affected: resource.to_string(),
            threat_family: family.to_string(),
            detection_mechanism: mechanism.map(str::to_string),
            artifact: artifact.map(str::to_string),
        })
    }
}

impl fmt::Display for FindingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_type_parts() {
        let t: FindingType = "CryptoCurrency:Runtime/BitcoinTool.B!DNS".parse().unwrap();
        assert_eq!(t.threat_purpose, "CryptoCurrency");
        assert_eq!(t.resource_type_affected, "Runtime");
        assert_eq!(t.threat_family, "BitcoinTool");
        assert_eq!(t.detection_mechanism.as_deref(), Some("B"));
        assert_eq!(t.artifact.as_deref(), Some("DNS"));
        assert!(t.is_runtime());

        let t: FindingType = "UnauthorizedAccess:Runtime/TorRelay".parse().unwrap();
        assert_eq!(t.threat_family, "TorRelay");
        assert_eq!(t.detection_mechanism, None);
        assert_eq!(t.artifact, None);

        let t: FindingType = "Backdoor:Runtime/C&CActivity.B".parse().unwrap();
        assert_eq!(t.threat_family, "C&CActivity");

        let t: FindingType = "Recon:EC2/PortProbeUnprotectedPort".parse().unwrap();
        assert!(!t.is_runtime());
    }

    #[test]
    fn malformed_finding_types_are_rejected() {
        for raw in [
            "",
            "NoColon",
            "Purpose:NoSlash",
            ":Runtime/X",
            "P:/X",
            "P:R/",
            "P:R/.B",
            "P:R/X!",
            "P:R/X Y",
        ] {
            assert!(raw.parse::<FindingType>().is_err(), "{raw:?} should fail");
        }
    }

    #[test]
    fn sample_flag_in_either_shape() {
        let direct: AdditionalInfo = serde_json::from_str(r#"{"sample": true}"#).unwrap();
        assert!(direct.is_sample());
        let nested: AdditionalInfo =
            serde_json::from_str(r#"{"value": "{\"sample\":true}", "type": "default"}"#).unwrap();
        assert!(nested.is_sample());
        let text: AdditionalInfo = serde_json::from_str(r#"{"sample": "true"}"#).unwrap();
        assert!(text.is_sample());
        let real: AdditionalInfo =
            serde_json::from_str(r#"{"value": "{}", "type": "default"}"#).unwrap();
        assert!(!real.is_sample());
    }

    #[test]
    fn severity_accepts_numeric_text_and_rejects_out_of_range() {
        let ok: Finding =
            serde_json::from_str(r#"{"id":"a","type":"A:B/C","severity":"8.5"}"#).unwrap();
        assert_eq!(ok.severity, 8.5);
        assert!(
            serde_json::from_str::<Finding>(r#"{"id":"a","type":"A:B/C","severity":11}"#).is_err()
        );
        assert!(
            serde_json::from_str::<Finding>(r#"{"id":"a","type":"A:B/C","severity":"high"}"#)
                .is_err()
        );
    }
}
