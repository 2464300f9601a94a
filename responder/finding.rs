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
    #[serde(default)]
    pub schema_version: Option<String>,
    pub id: String,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(rename = "type")]
    pub finding_type: String,
    #[serde(deserialize_with = "severity_number")]
    pub severity: f64,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub resource: Option<Resource>,
    #[serde(default)]
    pub service: Option<Service>,
}

/// GuardDuty timestamps are ISO-8601 strings in findings, but some nested ECS fields have been
/// seen as epoch numbers; keep whichever arrives rather than failing.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Timestamp {
    Text(String),
    Epoch(f64),
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
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(f64),
        Text(String),
    }
    let value = match NumberOrText::deserialize(deserializer)? {
        NumberOrText::Number(n) => n,
        NumberOrText::Text(text) => text
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

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub instance_details: Option<InstanceDetails>,
    #[serde(default)]
    pub ecs_cluster_details: Option<EcsClusterDetails>,
    #[serde(default)]
    pub eks_cluster_details: Option<EksClusterDetails>,
    #[serde(default)]
    pub kubernetes_details: Option<KubernetesDetails>,
    #[serde(default)]
    pub container_details: Option<Container>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
pub struct Tag {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetails {
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub instance_type: Option<String>,
    #[serde(default)]
    pub instance_state: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(default)]
    pub iam_instance_profile: Option<IamInstanceProfile>,
    #[serde(default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IamInstanceProfile {
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    #[serde(default)]
    pub network_interface_id: Option<String>,
    #[serde(default)]
    pub private_ip_address: Option<String>,
    #[serde(default)]
    pub ipv6_addresses: Vec<String>,
    #[serde(default)]
    pub public_ip: Option<String>,
    #[serde(default)]
    pub subnet_id: Option<String>,
    #[serde(default)]
    pub vpc_id: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    #[serde(default)]
    pub group_id: Option<String>,
    #[serde(default)]
    pub group_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EcsClusterDetails {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub task_details: Option<EcsTaskDetails>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskDetails {
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub definition_arn: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// `FARGATE`/`EC2` in the API enum, `Fargate` in some documented examples: compared
    /// case-insensitively.
    #[serde(default)]
    pub launch_type: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub container_runtime: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub image_prefix: Option<String>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default)]
    pub privileged: Option<bool>,
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EksClusterDetails {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arn: Option<String>,
    #[serde(default)]
    pub vpc_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesDetails {
    #[serde(default)]
    pub kubernetes_workload_details: Option<KubernetesWorkloadDetails>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesWorkloadDetails {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub workload_type: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub service_account_name: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default)]
    pub detector_id: Option<String>,
    #[serde(default)]
    pub feature_name: Option<String>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub archived: Option<bool>,
    #[serde(default)]
    pub event_first_seen: Option<Timestamp>,
    #[serde(default)]
    pub event_last_seen: Option<Timestamp>,
    #[serde(default)]
    pub resource_role: Option<String>,
    #[serde(default)]
    pub runtime_details: Option<RuntimeDetails>,
    #[serde(default)]
    pub additional_info: Option<AdditionalInfo>,
    #[serde(default)]
    pub action: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDetails {
    #[serde(default)]
    pub process: Option<ProcessDetails>,
    #[serde(default)]
    pub context: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDetails {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub executable_path: Option<String>,
    #[serde(default)]
    pub executable_sha256: Option<String>,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub namespace_pid: Option<i64>,
    #[serde(default)]
    pub pwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    #[serde(default)]
    pub lineage: Vec<Value>,
}

/// `service.additionalInfo`: the documented shape is `{"value": "<json text>", "type": "default"}`,
/// while sample findings also carry `"sample": true` directly. Both are read.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct AdditionalInfo {
    #[serde(default)]
    pub sample: Option<Value>,
    #[serde(default)]
    pub value: Option<String>,
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
    pub raw: String,
    pub threat_purpose: String,
    pub resource_type_affected: String,
    pub threat_family: String,
    pub detection_mechanism: Option<String>,
    pub artifact: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("finding type {raw:?} is not of the form ThreatPurpose:ResourceTypeAffected/ThreatFamilyName[.DetectionMechanism][!Artifact]")]
pub struct FindingTypeError {
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
