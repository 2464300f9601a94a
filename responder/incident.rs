//! A finding normalised into what the responder reasons about: who is affected (the target),
//! how bad it is (severity band), and the guardrail facts (sample, archived, account, region).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::finding::{tag_map, Container, Finding, FindingType, FindingTypeError, Timestamp};

/// GuardDuty's severity bands: Low < 4, Medium 4–6.9, High 7–8.9, Critical ≥ 9
/// (<https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_findings-severity.html>).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum SeverityBand {
    /// Severity below 4.
    Low,
    /// Severity from 4 to below 7.
    Medium,
    /// Severity from 7 to below 9.
    High,
    /// Severity 9 or above.
    Critical,
}

impl SeverityBand {
    /// The band a GuardDuty severity score falls in.
    pub fn of(severity: f64) -> SeverityBand {
        if severity >= 9.0 {
            SeverityBand::Critical
        } else if severity >= 7.0 {
            SeverityBand::High
        } else if severity >= 4.0 {
            SeverityBand::Medium
        } else {
            SeverityBand::Low
        }
    }

    /// Every band, lowest first.
    pub const ALL: [SeverityBand; 4] = [
        SeverityBand::Low,
        SeverityBand::Medium,
        SeverityBand::High,
        SeverityBand::Critical,
    ];

    /// The band's name as GuardDuty writes it (`Low`, `Medium`, `High`, `Critical`).
    pub fn name(self) -> &'static str {
        match self {
            SeverityBand::Low => "Low",
            SeverityBand::Medium => "Medium",
            SeverityBand::High => "High",
            SeverityBand::Critical => "Critical",
        }
    }

    /// Case-insensitive, so playbooks may say `high` or `High`.
    pub fn parse(text: &str) -> Option<SeverityBand> {
        SeverityBand::ALL
            .into_iter()
            .find(|band| band.name().eq_ignore_ascii_case(text.trim()))
    }
}

impl fmt::Display for SeverityBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an ECS task was launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LaunchType {
    /// On AWS Fargate (`FARGATE`).
    #[serde(rename = "FARGATE")]
    Fargate,
    /// On EC2 container instances (`EC2`).
    #[serde(rename = "EC2")]
    Ec2,
}

impl LaunchType {
    /// The API enum says `FARGATE | EC2`; documented examples also show `Fargate`.
    pub fn parse(text: &str) -> Option<LaunchType> {
        match text.trim().to_ascii_uppercase().as_str() {
            "FARGATE" => Some(LaunchType::Fargate),
            "EC2" => Some(LaunchType::Ec2),
            _ => None,
        }
    }
}

/// The kind of workload a finding is about, as named in playbooks and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An ECS task (`ecs_task`).
    EcsTask,
    /// An EC2 instance (`ec2_instance`).
    Ec2Instance,
    /// A Kubernetes workload in an EKS cluster (`eks_workload`).
    EksWorkload,
    /// Any other resource type (`unsupported`).
    Unsupported,
}

impl TargetKind {
    /// Every kind, in the order reports list them.
    pub const ALL: &'static [TargetKind] = &[
        TargetKind::EcsTask,
        TargetKind::Ec2Instance,
        TargetKind::EksWorkload,
        TargetKind::Unsupported,
    ];

    /// The kind as written in playbooks and reports (`ecs_task`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::EcsTask => "ecs_task",
            TargetKind::Ec2Instance => "ec2_instance",
            TargetKind::EksWorkload => "eks_workload",
            TargetKind::Unsupported => "unsupported",
        }
    }
}

/// A container named in the finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerRef {
    /// The container name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The container image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The container id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl From<&Container> for ContainerRef {
    fn from(c: &Container) -> Self {
        ContainerRef {
            name: c.name.clone(),
            image: c.image.clone(),
            id: c.id.clone(),
        }
    }
}

/// The ECS task a finding is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EcsTaskTarget {
    /// The cluster's ARN.
    pub cluster_arn: String,
    /// The cluster's name (the last part of its ARN when the finding does not give it).
    pub cluster_name: String,
    /// The task's ARN.
    pub task_arn: String,
    /// The task id (the last part of its ARN).
    pub task_id: String,
    /// How the task was launched, when the finding says so in a recognised form.
    pub launch_type: Option<LaunchType>,
    /// The ARN of the task's task definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_definition_arn: Option<String>,
    /// The service name when the task's group is `service:NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The task group as reported (`service:NAME` for a service's tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The task's containers, as listed in the finding.
    pub containers: Vec<ContainerRef>,
    /// The task's tags from the finding (for conditions and the exemption; not in reports).
    #[serde(skip)]
    pub task_tags: BTreeMap<String, String>,
    /// The cluster's tags from the finding (for conditions and the exemption; not in reports).
    #[serde(skip)]
    pub cluster_tags: BTreeMap<String, String>,
}

/// A network interface of an EC2 instance, as listed in the finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EniRef {
    /// The network interface id.
    pub eni_id: String,
    /// Its primary private IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// Its IPv6 addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<String>,
    /// Its subnet id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Its VPC id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// The ids of its security groups.
    pub security_groups: Vec<String>,
}

/// The EC2 instance a finding is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ec2InstanceTarget {
    /// The instance id.
    pub instance_id: String,
    /// The instance's network interfaces (those the finding gives an id for).
    pub network_interfaces: Vec<EniRef>,
    /// The VPC of the first network interface that names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// The subnet of the first network interface that names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// The ARN of the instance's IAM instance profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_profile_arn: Option<String>,
    /// The instance's tags from the finding (for conditions and the exemption; not in reports).
    #[serde(skip)]
    pub tags: BTreeMap<String, String>,
}

/// The EKS workload a finding is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EksWorkloadTarget {
    /// The cluster's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The cluster's ARN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_arn: Option<String>,
    /// The workload's Kubernetes namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The workload's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_name: Option<String>,
    /// The workload's type (e.g. `Deployment`, `Pod`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_type: Option<String>,
    /// The workload's containers, as listed in the finding.
    pub containers: Vec<ContainerRef>,
    /// The cluster's tags from the finding (for conditions; not in reports).
    #[serde(skip)]
    pub cluster_tags: BTreeMap<String, String>,
}

/// What the finding is about. Serialised with `kind` first so reports stay greppable.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// An ECS task.
    EcsTask(EcsTaskTarget),
    /// An EC2 instance.
    Ec2Instance(Ec2InstanceTarget),
    /// A Kubernetes workload in an EKS cluster.
    EksWorkload(EksWorkloadTarget),
    /// Any other resource type; only its name is kept.
    Unsupported {
        /// The finding's `resource.resourceType`.
        resource_type: String,
    },
}

impl Target {
    /// The kind of target, as named in playbooks.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::EcsTask(_) => TargetKind::EcsTask,
            Target::Ec2Instance(_) => TargetKind::Ec2Instance,
            Target::EksWorkload(_) => TargetKind::EksWorkload,
            Target::Unsupported { .. } => TargetKind::Unsupported,
        }
    }

    /// Tags that playbook conditions and the exemption guardrail look at, each with where it
    /// came from (a task tag overrides a cluster tag of the same key).
    pub fn tag_sources(&self) -> Vec<(&'static str, &BTreeMap<String, String>)> {
        match self {
            Target::EcsTask(t) => vec![("task", &t.task_tags), ("cluster", &t.cluster_tags)],
            Target::Ec2Instance(t) => vec![("instance", &t.tags)],
            Target::EksWorkload(t) => vec![("cluster", &t.cluster_tags)],
            Target::Unsupported { .. } => Vec::new(),
        }
    }

    /// The tag value a condition sees: the most specific source wins.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tag_sources()
            .into_iter()
            .find_map(|(_, tags)| tags.get(key).map(String::as_str))
    }

    /// The shortest useful name, for notification subjects.
    pub fn short_label(&self) -> String {
        match self {
            Target::EcsTask(t) => format!("ECS task {} in {}", t.task_id, t.cluster_name),
            Target::Ec2Instance(t) => format!("EC2 instance {}", t.instance_id),
            Target::EksWorkload(t) => format!(
                "EKS {}/{}",
                t.namespace.as_deref().unwrap_or("?"),
                t.workload_name.as_deref().unwrap_or("?")
            ),
            Target::Unsupported { resource_type } => resource_type.clone(),
        }
    }

    /// A human label: `Fargate task 3f2a… (cluster prod, service web)`.
    pub fn label(&self) -> String {
        match self {
            Target::EcsTask(t) => {
                let service = t
                    .service
                    .as_ref()
                    .map(|s| format!(", service {s}"))
                    .unwrap_or_default();
                let launch = match t.launch_type {
                    Some(LaunchType::Fargate) => "Fargate ",
                    Some(LaunchType::Ec2) => "EC2-launched ",
                    None => "",
                };
                format!(
                    "{launch}task {} (cluster {}{service})",
                    t.task_id, t.cluster_name
                )
            }
            Target::Ec2Instance(t) => format!("EC2 instance {}", t.instance_id),
            Target::EksWorkload(t) => format!(
                "EKS {} {}/{} (cluster {})",
                t.workload_type.as_deref().unwrap_or("workload"),
                t.namespace.as_deref().unwrap_or("?"),
                t.workload_name.as_deref().unwrap_or("?"),
                t.cluster_name.as_deref().unwrap_or("?")
            ),
            Target::Unsupported { resource_type } => {
                format!("unsupported resource type {resource_type}")
            }
        }
    }
}

/// The process GuardDuty Runtime Monitoring observed, in brief.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSummary {
    /// The process name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The absolute path of the executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable_path: Option<String>,
    /// The SHA-256 hash of the executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable_sha256: Option<String>,
    /// The process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    /// The command line GuardDuty gives as an example, secret-looking values redacted
    /// ([`crate::redact`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
}

/// A finding ready for planning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// The finding's id.
    pub finding_id: String,
    /// The finding's ARN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding_arn: Option<String>,
    /// The finding type, e.g. `CryptoCurrency:Runtime/BitcoinTool.B!DNS`.
    pub finding_type: String,
    /// The finding type split into its parts.
    #[serde(skip)]
    pub finding_type_parts: FindingType,
    /// GuardDuty's severity score, from 0 to 10.
    pub severity: f64,
    /// The severity band of `severity`.
    pub band: SeverityBand,
    /// The account that owns the resource (the finding's `accountId`).
    pub account_id: String,
    /// The finding's region (the event's region when the finding does not give one).
    pub region: String,
    /// The account whose event bus delivered the event, when it is not the resource's own
    /// (a GuardDuty administrator account receives its members' findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_via_account: Option<String>,
    /// What the EventBridge envelope said about where the event came from; `None` for a bare
    /// finding (an export replayed by hand), which a deployment may refuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::event::Origin>,
    /// The finding's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// When GuardDuty created the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When GuardDuty last updated the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// How many times GuardDuty has seen this activity; grows as the finding is republished.
    pub count: u64,
    /// Whether this is a sample finding generated by GuardDuty.
    pub sample: bool,
    /// Whether the finding is archived.
    pub archived: bool,
    /// The GuardDuty feature that produced the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_name: Option<String>,
    /// The process involved, when Runtime Monitoring reported one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSummary>,
    /// What the finding is about.
    pub target: Target,
}

/// Why a finding cannot be turned into an incident.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IncidentError {
    /// The finding type does not have the documented shape.
    #[error(transparent)]
    FindingType(#[from] FindingTypeError),
    /// A field the responder needs is missing (its path in the finding).
    #[error("the finding has no {0}")]
    Missing(&'static str),
    /// An identifier the responder would pass to AWS or use as a key does not have the form
    /// AWS gives it (a path trick, a control character, another service's ARN).
    #[error("the finding's {field} is not a valid {expected}: {value:?}")]
    Malformed {
        /// Its path in the finding.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
        /// The value, clipped.
        value: String,
    },
}

/// `value` if it is an identifier of the given form, else a [`IncidentError::Malformed`].
fn checked<'a>(
    field: &'static str,
    expected: &'static str,
    value: &'a str,
    valid: impl Fn(&str) -> bool,
) -> Result<&'a str, IncidentError> {
    if valid(value) {
        Ok(value)
    } else {
        Err(IncidentError::Malformed {
            field,
            expected,
            value: crate::event::clip(value),
        })
    }
}

/// Letters, digits, `-` and `_`, 1 to `max` of them: ECS cluster and service names, task ids.
fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A GuardDuty finding id (the API allows 1 to 300 characters and documents no alphabet; real
/// ids are hexadecimal): letters, digits, `-`, `_`, `.` and `:` are accepted, nothing that
/// could be a path or a key separator.
fn is_finding_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 300
        && !text.contains("..")
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// `id-hex`: EC2's resource ids (`i-…`, `eni-…`, `subnet-…`, `vpc-…`, `sg-…`), 8 or 17
/// lower-case hexadecimal characters after the prefix.
fn is_ec2_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| {
            matches!(hex.len(), 8 | 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The parts of an ARN: partition, service, region, account, resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArnParts<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: &'a str,
    /// The service (`ecs`, `ec2`, ...).
    pub service: &'a str,
    /// The region.
    pub region: &'a str,
    /// The account.
    pub account: &'a str,
    /// Everything after the account.
    pub resource: &'a str,
}

impl<'a> ArnParts<'a> {
    /// Split an ARN; `None` unless it has six parts and a plausible partition and account.
    pub fn parse(arn: &'a str) -> Option<ArnParts<'a>> {
        let mut parts = arn.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some(service),
            Some(region),
            Some(account),
            Some(resource),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return None;
        };
        let partition_ok = partition.starts_with("aws")
            && partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        // Empty for global services (IAM).
        let region_ok = region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        (partition_ok && account_ok && region_ok).then_some(ArnParts {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

/// `arn:P:ecs:R:A:task/CLUSTER/ID` (or the old `task/ID`).
fn is_task_arn(arn: &str) -> bool {
    ArnParts::parse(arn).is_some_and(|p| {
        p.service == "ecs"
            && p.resource
                .strip_prefix("task/")
                .is_some_and(|rest| match rest.split_once('/') {
                    Some((cluster, id)) => is_name(cluster, 255) && is_name(id, 64),
                    None => is_name(rest, 64),
                })
    })
}

/// `arn:P:ecs:R:A:cluster/NAME`.
fn is_cluster_arn(arn: &str) -> bool {
    ArnParts::parse(arn).is_some_and(|p| {
        p.service == "ecs"
            && p.resource
                .strip_prefix("cluster/")
                .is_some_and(|name| is_name(name, 255))
    })
}

impl Incident {
    /// Normalise a parsed finding. `envelope_account`/`envelope_region` fill gaps and tell an
    /// administrator-account delivery apart from the resource's own account.
    pub fn from_finding(
        finding: &Finding,
        origin: Option<crate::event::Origin>,
    ) -> Result<Incident, IncidentError> {
        let envelope_account = origin.as_ref().and_then(|o| o.account.as_deref());
        let envelope_region = origin.as_ref().and_then(|o| o.region.as_deref());
        checked("id", "GuardDuty finding id", &finding.id, is_finding_id)?;
        let finding_type_parts: FindingType = finding.finding_type.parse()?;
        let account_id = finding
            .account_id
            .clone()
            .or_else(|| envelope_account.map(str::to_string))
            .ok_or(IncidentError::Missing("accountId"))?;
        checked("accountId", "12-digit account id", &account_id, |a| {
            a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
        })?;
        let region = finding
            .region
            .clone()
            .or_else(|| envelope_region.map(str::to_string))
            .ok_or(IncidentError::Missing("region"))?;
        checked("region", "region name", &region, |r| {
            !r.is_empty()
                && r.len() <= 32
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })?;
        let delivered_via_account = envelope_account
            .filter(|via| *via != account_id)
            .map(str::to_string);
        let no_service = crate::finding::Service::default();
        let service = finding.service.as_ref().unwrap_or(&no_service);
        let resource = finding
            .resource
            .as_ref()
            .ok_or(IncidentError::Missing("resource"))?;
        let target = target_of(resource)?;
        let runtime = service.runtime_details.as_ref();
        // The command line GuardDuty observed, with secret-looking values redacted: it goes to
        // reports, the ledger and notifications; the evidence keeps the finding as received.
        let command_line = runtime
            .and_then(|r| r.context.as_ref())
            .and_then(|c| c.command_line_example.as_ref())
            .and_then(serde_json::Value::as_str)
            .map(crate::redact::redact);
        let process = match (runtime.and_then(|r| r.process.as_ref()), command_line) {
            (None, None) => None,
            (p, command_line) => Some(ProcessSummary {
                name: p.and_then(|p| p.name.clone()),
                executable_path: p.and_then(|p| p.executable_path.clone()),
                executable_sha256: p.and_then(|p| p.executable_sha256.clone()),
                pid: p.and_then(|p| p.pid),
                command_line,
            }),
        };
        Ok(Incident {
            finding_id: finding.id.clone(),
            finding_arn: finding.arn.clone(),
            finding_type: finding.finding_type.clone(),
            finding_type_parts,
            severity: finding.severity,
            band: SeverityBand::of(finding.severity),
            account_id,
            region,
            delivered_via_account,
            origin,
            title: finding.title.clone(),
            created_at: finding.created_at.as_ref().map(Timestamp::to_string),
            updated_at: finding.updated_at.as_ref().map(Timestamp::to_string),
            count: service.count.unwrap_or(1),
            sample: service
                .additional_info
                .as_ref()
                .is_some_and(|info| info.is_sample()),
            archived: service.archived.unwrap_or(false),
            feature_name: service.feature_name.clone(),
            process,
            target,
        })
    }
}

fn target_of(resource: &crate::finding::Resource) -> Result<Target, IncidentError> {
    let resource_type = resource
        .resource_type
        .as_deref()
        .ok_or(IncidentError::Missing("resource.resourceType"))?;
    match resource_type {
        "ECSCluster" => {
            let cluster = resource
                .ecs_cluster_details
                .as_ref()
                .ok_or(IncidentError::Missing("resource.ecsClusterDetails"))?;
            let task = cluster.task_details.as_ref().ok_or(IncidentError::Missing(
                "resource.ecsClusterDetails.taskDetails",
            ))?;
            let task_arn =
                task.arn
                    .clone()
                    .filter(|arn| !arn.is_empty())
                    .ok_or(IncidentError::Missing(
                        "resource.ecsClusterDetails.taskDetails.arn",
                    ))?;
            checked(
                "resource.ecsClusterDetails.taskDetails.arn",
                "ECS task ARN",
                &task_arn,
                is_task_arn,
            )?;
            let cluster_arn = cluster
                .arn
                .clone()
                .filter(|arn| !arn.is_empty())
                .ok_or(IncidentError::Missing("resource.ecsClusterDetails.arn"))?;
            checked(
                "resource.ecsClusterDetails.arn",
                "ECS cluster ARN",
                &cluster_arn,
                is_cluster_arn,
            )?;
            let cluster_name = cluster
                .name
                .clone()
                .unwrap_or_else(|| last_segment(&cluster_arn).to_string());
            Ok(Target::EcsTask(EcsTaskTarget {
                task_id: last_segment(&task_arn).to_string(),
                cluster_arn,
                cluster_name,
                task_arn,
                launch_type: task.launch_type.as_deref().and_then(LaunchType::parse),
                task_definition_arn: task.definition_arn.clone(),
                service: task
                    .group
                    .as_deref()
                    .and_then(|g| g.strip_prefix("service:"))
                    .map(|name| {
                        checked(
                            "resource.ecsClusterDetails.taskDetails.group",
                            "service:NAME",
                            name,
                            |n| is_name(n, 255),
                        )
                        .map(str::to_string)
                    })
                    .transpose()?,
                group: task.group.clone(),
                containers: task.containers.iter().map(ContainerRef::from).collect(),
                task_tags: tag_map([task.tags.as_slice()]),
                cluster_tags: tag_map([cluster.tags.as_slice()]),
            }))
        }
        "Instance" => {
            let details = resource
                .instance_details
                .as_ref()
                .ok_or(IncidentError::Missing("resource.instanceDetails"))?;
            let instance_id = details
                .instance_id
                .clone()
                .filter(|id| !id.is_empty())
                .ok_or(IncidentError::Missing(
                    "resource.instanceDetails.instanceId",
                ))?;
            checked(
                "resource.instanceDetails.instanceId",
                "EC2 instance id",
                &instance_id,
                |id| is_ec2_id(id, "i"),
            )?;
            const ENI: &str = "resource.instanceDetails.networkInterfaces";
            let mut network_interfaces: Vec<EniRef> = Vec::new();
            for eni in &details.network_interfaces {
                let Some(eni_id) = &eni.network_interface_id else {
                    continue;
                };
                checked(ENI, "network interface id", eni_id, |id| {
                    is_ec2_id(id, "eni")
                })?;
                let optional =
                    |value: &Option<String>, prefix: &str, expected: &'static str| match value
                        .as_deref()
                    {
                        Some(id) => {
                            checked(ENI, expected, id, |id| is_ec2_id(id, prefix)).map(drop)
                        }
                        None => Ok(()),
                    };
                optional(&eni.subnet_id, "subnet", "subnet id")?;
                optional(&eni.vpc_id, "vpc", "VPC id")?;
                let mut security_groups = Vec::new();
                for group in eni
                    .security_groups
                    .iter()
                    .filter_map(|sg| sg.group_id.clone())
                {
                    checked(ENI, "security group id", &group, |id| is_ec2_id(id, "sg"))?;
                    security_groups.push(group);
                }
                network_interfaces.push(EniRef {
                    eni_id: eni_id.clone(),
                    private_ip: eni.private_ip_address.clone(),
                    ipv6: eni.ipv6_addresses.clone(),
                    subnet_id: eni.subnet_id.clone(),
                    vpc_id: eni.vpc_id.clone(),
                    security_groups,
                });
            }
            Ok(Target::Ec2Instance(Ec2InstanceTarget {
                instance_id,
                vpc_id: network_interfaces.iter().find_map(|e| e.vpc_id.clone()),
                subnet_id: network_interfaces.iter().find_map(|e| e.subnet_id.clone()),
                network_interfaces,
                instance_profile_arn: details
                    .iam_instance_profile
                    .as_ref()
                    .and_then(|p| p.arn.clone()),
                tags: tag_map([details.tags.as_slice()]),
            }))
        }
        "EKSCluster" => {
            let cluster = resource.eks_cluster_details.clone().unwrap_or_default();
            let workload = resource
                .kubernetes_details
                .as_ref()
                .and_then(|k| k.kubernetes_workload_details.clone())
                .unwrap_or_default();
            Ok(Target::EksWorkload(EksWorkloadTarget {
                cluster_name: cluster.name.clone(),
                cluster_arn: cluster.arn.clone(),
                namespace: workload.namespace.clone(),
                workload_name: workload.name.clone(),
                workload_type: workload.workload_type.clone(),
                containers: workload.containers.iter().map(ContainerRef::from).collect(),
                cluster_tags: tag_map([cluster.tags.as_slice()]),
            }))
        }
        other => Ok(Target::Unsupported {
            resource_type: other.to_string(),
        }),
    }
}

/// `arn:aws:ecs:region:acct:task/cluster/id` → `id`; also works for cluster ARNs.
fn last_segment(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_edges() {
        assert_eq!(SeverityBand::of(0.0), SeverityBand::Low);
        assert_eq!(SeverityBand::of(3.9), SeverityBand::Low);
        assert_eq!(SeverityBand::of(3.99), SeverityBand::Low);
        assert_eq!(SeverityBand::of(4.0), SeverityBand::Medium);
        assert_eq!(SeverityBand::of(6.9), SeverityBand::Medium);
        assert_eq!(SeverityBand::of(6.99), SeverityBand::Medium);
        assert_eq!(SeverityBand::of(7.0), SeverityBand::High);
        assert_eq!(SeverityBand::of(8.9), SeverityBand::High);
        assert_eq!(SeverityBand::of(9.0), SeverityBand::Critical);
        assert_eq!(SeverityBand::of(10.0), SeverityBand::Critical);
    }

    #[test]
    fn band_names_parse_case_insensitively() {
        assert_eq!(SeverityBand::parse("high"), Some(SeverityBand::High));
        assert_eq!(
            SeverityBand::parse(" CRITICAL "),
            Some(SeverityBand::Critical)
        );
        assert_eq!(SeverityBand::parse("severe"), None);
        assert!(SeverityBand::Low < SeverityBand::Critical);
    }

    #[test]
    fn launch_type_variants() {
        assert_eq!(LaunchType::parse("Fargate"), Some(LaunchType::Fargate));
        assert_eq!(LaunchType::parse("FARGATE"), Some(LaunchType::Fargate));
        assert_eq!(LaunchType::parse("ec2"), Some(LaunchType::Ec2));
        assert_eq!(LaunchType::parse("EXTERNAL"), None);
    }

    #[test]
    fn last_segment_of_arns() {
        assert_eq!(
            last_segment("arn:aws:ecs:us-east-1:111122223333:task/prod/0a1b2c"),
            "0a1b2c"
        );
        assert_eq!(
            last_segment("arn:aws:ecs:us-east-1:111122223333:cluster/prod"),
            "prod"
        );
    }
}
