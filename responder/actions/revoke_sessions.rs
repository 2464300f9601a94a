//! `revoke-sessions`: deny the workload's role every request made with credentials issued before
//! now (AWS's documented revocation: an inline deny conditioned on `aws:TokenIssueTime`), so
//! credentials the attacker copied out stop working while freshly issued ones keep the role's
//! healthy users working. And, by default, deny requests from the workload's own private
//! addresses (`aws:VpcSourceIp`): the compromised task or instance keeps fetching fresh
//! credentials from its credentials endpoint, which no ACL or group filters, and this is what
//! stops those from working through VPC endpoints (the S3 and DynamoDB gateway endpoints too).
//!
//! For an instance, it also denies the credentials EC2 issues to that instance, wherever they
//! are used (`aws:EC2InstanceSourceVPC` and `aws:EC2InstanceSourcePrivateIPv4`, which EC2 puts
//! in the instance's role credentials): this reaches through a NAT gateway too.
//!
//! What it does not do, and the step says so: a task's request that leaves through a NAT
//! gateway or an internet gateway carries no VPC source address, so the task's fresh
//! credentials used that way are not denied; every user of the role whose credentials predate
//! the revocation (other tasks of the same task definition, other instances with the profile)
//! is denied too until its credentials are next rotated, which can take hours; and IAM applies
//! policy changes within minutes, not at once.
//!
//! Only roles tagged `incident-responder:revocable=true` may be touched (the template's grant
//! says so); service-linked roles cannot be revoked (AWS refuses). `release` deletes the policy;
//! a task's STOPPED event lifts only the address deny, which would otherwise hit the next
//! workload given the address.

use std::collections::BTreeSet;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::workload::describe_task;
use super::{aws, Action, Clients, Failure, Phase, StepContext, StepError};
use crate::incident::{Ec2InstanceTarget, EcsTaskTarget, Target, TargetKind};

/// The `revoke-sessions` action.
pub struct RevokeSessions;

/// The step's item in the ledger.
pub const STEP_KEY: &str = "step#revoke-sessions";

/// The tag a role must carry for the responder to revoke its sessions.
pub const REVOCABLE_TAG: (&str, &str) = ("incident-responder:revocable", "true");

/// Parameters of `revoke-sessions`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeSessionsParams {
    /// Also deny the role's requests from the workload's own private addresses
    /// (`aws:VpcSourceIp`, which AWS sets on requests through VPC endpoints): the compromised
    /// workload keeps getting fresh credentials, which the time condition does not deny.
    /// Default true.
    #[serde(default = "yes")]
    pub deny_workload_addresses: bool,
}

fn yes() -> bool {
    true
}

impl Default for RevokeSessionsParams {
    fn default() -> Self {
        RevokeSessionsParams {
            deny_workload_addresses: true,
        }
    }
}

/// What `revoke-sessions` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RevokeOutput {
    /// The deny policy is on the role.
    Revoked(Revocation),
    /// The workload has no role: there are no credentials to revoke.
    NoRole {
        /// Why not (e.g. the task definition names no task role).
        why: String,
    },
}

/// What EC2 writes into an instance's role credentials: its VPC and primary private IPv4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSource {
    /// `aws:EC2InstanceSourceVPC`.
    pub vpc_id: String,
    /// `aws:EC2InstanceSourcePrivateIPv4`.
    pub private_ipv4: String,
}

/// The inline policy put on a role: what `release` removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The role.
    pub role_arn: String,
    /// Its name (IAM's calls take the name).
    pub role_name: String,
    /// The inline policy's name (one per finding).
    pub policy_name: String,
    /// Requests with credentials issued before this instant are denied (RFC 3339, UTC).
    pub issued_before: String,
    /// Private addresses the role's requests are denied from (through VPC endpoints).
    #[serde(default)]
    pub denied_addresses: Vec<String>,
    /// For an instance: the credentials EC2 issued to it are denied wherever they are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_source: Option<InstanceSource>,
    /// The workload whose role it is (a task ARN or an instance id).
    pub workload: String,
}

impl Action for RevokeSessions {
    const NAME: &'static str = "revoke-sessions";
    const PHASE: Phase = Phase::Contain;
    const PURPOSE: &'static str =
        "deny the workload's role every request made with credentials issued before now";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask, TargetKind::Ec2Instance];
    const PERMISSIONS: &'static [&'static str] = &[
        "ecs:DescribeTasks",
        "ecs:DescribeTaskDefinition",
        "ec2:DescribeInstances",
        "iam:GetInstanceProfile",
        "iam:PutRolePolicy",
    ];

    type Params = RevokeSessionsParams;
    type Output = RevokeOutput;

    async fn run(
        ctx: &StepContext<'_>,
        params: &RevokeSessionsParams,
    ) -> Result<RevokeOutput, Failure<RevokeOutput>> {
        let found = match &ctx.incident.target {
            Target::EcsTask(task) => task_role(ctx.clients, task).await?,
            Target::Ec2Instance(instance) => instance_role(ctx.clients, instance).await?,
            other => {
                return Err(StepError::Refused(format!(
                    "revoke-sessions acts on ECS tasks and EC2 instances; this is a {}",
                    other.kind().name()
                ))
                .into())
            }
        };
        let (role_arn, addresses, workload, instance_source) = match found {
            Found::NoRole(why) => return Ok(RevokeOutput::NoRole { why }),
            Found::Role {
                role_arn,
                addresses,
                workload,
                instance_source,
            } => (role_arn, addresses, workload, instance_source),
        };
        let role_name = role_name(&role_arn)
            .ok_or_else(|| StepError::Refused(format!("{role_arn} is not an IAM role ARN")))?;
        if role_arn.contains(":role/aws-service-role/") {
            return Err(StepError::Refused(format!(
                "{role_arn} is a service-linked role: AWS does not let its sessions be revoked"
            ))
            .into());
        }
        // A retry keeps the first attempt's instant: a later one would also deny credentials
        // the role's healthy users fetched in between.
        let earlier = ctx.written_down.iter().find_map(|v| {
            serde_json::from_value::<Revocation>(v.clone())
                .ok()
                .filter(|r| r.role_arn == role_arn)
        });
        let revocation = Revocation {
            policy_name: policy_name(&ctx.incident.finding_id),
            issued_before: earlier
                .map(|r| r.issued_before)
                .unwrap_or_else(|| instant(Utc::now())),
            denied_addresses: if params.deny_workload_addresses {
                addresses
            } else {
                Vec::new()
            },
            instance_source: instance_source.filter(|_| params.deny_workload_addresses),
            role_arn,
            role_name,
            workload,
        };
        // Written down first: release finds the policy even if this attempt dies after the put.
        ctx.ledger
            .record_intent(
                &ctx.incident.finding_id,
                STEP_KEY,
                &[serde_json::to_value(&revocation).unwrap_or_default()],
            )
            .await?;
        let index = async {
            match &ctx.incident.target {
                // A task's STOPPED event finds its findings by the task: the address deny must
                // then be lifted.
                Target::EcsTask(task) if !revocation.denied_addresses.is_empty() => {
                    ctx.ledger
                        .index_task(&task.task_arn, &ctx.incident.finding_id)
                        .await
                }
                _ => Ok(()),
            }
        };
        let put = put_policy(ctx.clients, &revocation, &revocation.denied_addresses);
        let (indexed, put) = tokio::join!(index, put);
        put?;
        indexed?;
        Ok(RevokeOutput::Revoked(revocation))
    }

    fn summary(output: &RevokeOutput) -> String {
        match output {
            RevokeOutput::NoRole { why } => format!("no sessions to revoke: {why}"),
            RevokeOutput::Revoked(r) => {
                let addresses = match (&r.instance_source, r.denied_addresses.is_empty()) {
                    (Some(source), _) => format!(
                        "the credentials EC2 issues to the instance ({} in {}) are denied wherever used",
                        source.private_ipv4, source.vpc_id
                    ),
                    (None, true) => "the workload's own fresh credentials are not denied".to_string(),
                    (None, false) => format!(
                        "requests from {} through VPC endpoints denied too (not those leaving through a NAT or internet gateway: the workload's fresh credentials still work there)",
                        r.denied_addresses.join(", ")
                    ),
                };
                format!(
                    "role {} denies credentials issued before {} (every user of the role, until its credentials are next rotated, which can take hours; IAM applies it within minutes); {addresses}",
                    r.role_name, r.issued_before
                )
            }
        }
    }

    fn reason(params: &RevokeSessionsParams) -> String {
        if params.deny_workload_addresses {
            "deny the workload's role every request made with credentials issued before now, and its requests from the workload's addresses through VPC endpoints".to_string()
        } else {
            Self::PURPOSE.to_string()
        }
    }
}

/// The workload's role, or why it has none.
enum Found {
    Role {
        role_arn: String,
        addresses: Vec<String>,
        workload: String,
        instance_source: Option<InstanceSource>,
    },
    NoRole(String),
}

/// The task role from the task definition (read alongside the task, whose addresses the
/// address deny names). A task ECS no longer knows still gets the time deny: credentials it
/// handed out outlive it.
async fn task_role(clients: &Clients, task: &EcsTaskTarget) -> Result<Found, StepError> {
    let named = task.task_definition_arn.clone();
    let (facts, guessed) = tokio::join!(describe_task(clients, task), async {
        match &named {
            Some(arn) => Some(task_definition_role(clients, arn).await),
            None => None,
        }
    });
    let facts = facts?;
    let definition = facts
        .as_ref()
        .and_then(|f| f.raw["taskDefinitionArn"].as_str().map(str::to_string))
        .or(named.clone());
    let role =
        match (definition, guessed) {
            (None, _) => return Err(StepError::Refused(
                "neither the finding nor ECS names the task's definition: its role is not known"
                    .to_string(),
            )),
            (Some(arn), Some(guessed)) if Some(&arn) == named.as_ref() => (arn, guessed?),
            (Some(arn), _) => {
                let role = task_definition_role(clients, &arn).await?;
                (arn, role)
            }
        };
    let (definition_arn, role_arn) = role;
    let Some(role_arn) = role_arn else {
        return Ok(Found::NoRole(format!(
            "task definition {definition_arn} gives its tasks no role"
        )));
    };
    let addresses = facts
        .map(|f| [f.ipv4, f.ipv6].into_iter().flatten().collect())
        .unwrap_or_default();
    Ok(Found::Role {
        role_arn,
        addresses,
        workload: task.task_arn.clone(),
        instance_source: None,
    })
}

/// The `taskRoleArn` of a task definition.
async fn task_definition_role(
    clients: &Clients,
    definition_arn: &str,
) -> Result<Option<String>, StepError> {
    let described = super::workload::describe_task_definition(clients, definition_arn).await?;
    Ok(described
        .as_deref()
        .and_then(|d| d.task_role_arn())
        .map(str::to_string))
}

/// The role of the instance's profile, as EC2 says now (a profile can be swapped), and the
/// instance's private addresses.
async fn instance_role(
    clients: &Clients,
    instance: &Ec2InstanceTarget,
) -> Result<Found, StepError> {
    let described = clients
        .ec2
        .describe_instances()
        .instance_ids(&instance.instance_id)
        .send()
        .await
        .map_err(aws("EC2 DescribeInstances"))?;
    let Some(found) = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
    else {
        return Err(StepError::Refused(format!(
            "EC2 does not know instance {}",
            instance.instance_id
        )));
    };
    let Some(profile_arn) = found.iam_instance_profile().and_then(|p| p.arn()) else {
        return Ok(Found::NoRole(format!(
            "instance {} has no instance profile",
            instance.instance_id
        )));
    };
    let mut addresses = BTreeSet::new();
    for eni in found.network_interfaces() {
        for ip in eni.private_ip_addresses() {
            addresses.extend(ip.private_ip_address().map(str::to_string));
        }
        for ip in eni.ipv6_addresses() {
            addresses.extend(ip.ipv6_address().map(str::to_string));
        }
    }
    addresses.extend(found.private_ip_address().map(str::to_string));
    let profile_name = profile_arn.rsplit('/').next().unwrap_or(profile_arn);
    let profile = clients
        .iam
        .get_instance_profile()
        .instance_profile_name(profile_name)
        .send()
        .await
        .map_err(aws("IAM GetInstanceProfile"))?;
    let role_arn = profile
        .instance_profile()
        .and_then(|p| p.roles().first())
        .map(|r| r.arn().to_string());
    Ok(match role_arn {
        None => Found::NoRole(format!("instance profile {profile_name} has no role")),
        Some(role_arn) => Found::Role {
            role_arn,
            addresses: addresses.into_iter().collect(),
            workload: instance.instance_id.clone(),
            instance_source: found
                .vpc_id()
                .zip(found.private_ip_address())
                .map(|(vpc, ip)| InstanceSource {
                    vpc_id: vpc.to_string(),
                    private_ipv4: ip.to_string(),
                }),
        },
    })
}

/// Put (or replace) the revocation policy, denying `addresses` as well.
pub async fn put_policy(
    clients: &Clients,
    revocation: &Revocation,
    addresses: &[String],
) -> Result<(), StepError> {
    let document = revocation_policy(
        &revocation.issued_before,
        addresses,
        revocation.instance_source.as_ref(),
    )
    .to_string();
    clients
        .iam
        .put_role_policy()
        .role_name(&revocation.role_name)
        .policy_name(&revocation.policy_name)
        .policy_document(document)
        .send()
        .await
        .map_err(|e| iam_error("IAM PutRolePolicy", &revocation.role_name, e))?;
    Ok(())
}

/// Delete the revocation policy. `Ok(false)`: it was not there (already removed).
pub async fn delete_policy(clients: &Clients, revocation: &Revocation) -> Result<bool, StepError> {
    match clients
        .iam
        .delete_role_policy()
        .role_name(&revocation.role_name)
        .policy_name(&revocation.policy_name)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("NoSuchEntity") => Ok(false),
        Err(e) => Err(iam_error("IAM DeleteRolePolicy", &revocation.role_name, e)),
    }
}

/// IAM's refusals, said with what to do about them.
fn iam_error<E, R>(
    operation: &'static str,
    role: &str,
    error: aws_sdk_ec2::error::SdkError<E, R>,
) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + super::aws::HttpStatus,
{
    let (key, value) = REVOCABLE_TAG;
    match error.code() {
        Some("AccessDenied" | "AccessDeniedException") => StepError::Refused(format!(
            "{operation} on role {role} was refused: the responder may change only roles tagged {key}={value} ({})",
            error.message().unwrap_or("access denied")
        )),
        Some("NoSuchEntity") => StepError::Refused(format!("role {role} no longer exists")),
        Some("UnmodifiableEntity") => {
            StepError::Refused(format!("role {role} cannot be changed (service-linked)"))
        }
        Some("LimitExceeded") => StepError::Refused(format!(
            "role {role} has no room for another inline policy (IAM limits their total size): revoke its sessions by hand"
        )),
        _ => aws(operation)(error),
    }
}

/// The policy: deny everything to credentials issued before `issued_before` (AWS's
/// AWSRevokeOlderSessions shape), to requests from `addresses` through VPC endpoints, and to
/// the credentials EC2 issued to `instance`.
pub fn revocation_policy(
    issued_before: &str,
    addresses: &[String],
    instance: Option<&InstanceSource>,
) -> Value {
    let mut statements = vec![json!({
        "Sid": "RevokeOlderSessions",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}},
    })];
    if !addresses.is_empty() {
        let cidrs: Vec<String> = addresses.iter().map(|a| host_cidr(a)).collect();
        statements.push(json!({
            "Sid": "DenyFromWorkloadAddresses",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"IpAddress": {"aws:VpcSourceIp": cidrs}},
        }));
    }
    if let Some(instance) = instance {
        // Both keys: a private address is unique only within its VPC.
        statements.push(json!({
            "Sid": "DenyCredentialsOfWorkloadInstance",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:EC2InstanceSourceVPC": instance.vpc_id},
                "IpAddress": {"aws:EC2InstanceSourcePrivateIPv4": host_cidr(&instance.private_ipv4)},
            },
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn host_cidr(address: &str) -> String {
    if address.contains('/') {
        address.to_string()
    } else if address.contains(':') {
        format!("{address}/128")
    } else {
        format!("{address}/32")
    }
}

/// One inline policy per finding, so findings on tasks sharing a role release separately.
pub fn policy_name(finding_id: &str) -> String {
    // IAM policy names: [\w+=,.@-], at most 128 characters.
    let safe: String = finding_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("incident-responder-revoke-{safe}")
}

/// The role's name: the last part of `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
pub fn role_name(role_arn: &str) -> Option<String> {
    let (_, resource) = role_arn.split_once(":role/")?;
    resource
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// Seconds precision, `Z`: the form IAM's date conditions take.
fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_denies_older_credentials_and_the_workloads_addresses() {
        let policy = revocation_policy(
            "2026-11-27T21:00:00Z",
            &["10.0.1.5".to_string(), "2600:1f18::5".to_string()],
            None,
        );
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(
            statements[0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2026-11-27T21:00:00Z"
        );
        assert!(statements
            .iter()
            .all(|s| s["Effect"] == "Deny" && s["Action"] == "*" && s["Resource"] == "*"));
        assert_eq!(
            statements[1]["Condition"]["IpAddress"]["aws:VpcSourceIp"],
            json!(["10.0.1.5/32", "2600:1f18::5/128"])
        );
        // No addresses: the time deny alone (what a stopped task's policy is narrowed to).
        let narrowed = revocation_policy("2026-11-27T21:00:00Z", &[], None);
        assert_eq!(narrowed["Statement"].as_array().unwrap().len(), 1);
        // An instance: its own credentials, by the VPC and the address EC2 writes into them.
        let instance = InstanceSource {
            vpc_id: "vpc-1".to_string(),
            private_ipv4: "10.0.1.5".to_string(),
        };
        let policy = revocation_policy("2026-11-27T21:00:00Z", &[], Some(&instance));
        let own = &policy["Statement"][1]["Condition"];
        assert_eq!(own["StringEquals"]["aws:EC2InstanceSourceVPC"], "vpc-1");
        assert_eq!(
            own["IpAddress"]["aws:EC2InstanceSourcePrivateIPv4"],
            "10.0.1.5/32"
        );
    }

    #[test]
    fn names_come_from_arns_and_stay_within_iam_rules() {
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/app/team/web-task").as_deref(),
            Some("web-task")
        );
        assert_eq!(role_name("arn:aws:iam::123456789012:user/alice"), None);
        let name = policy_name(&format!("{}/x y", "a".repeat(200)));
        assert!(name.len() <= 128);
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)));
        assert_eq!(instant(DateTime::<Utc>::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
