//! The SDK clients and what an AWS error means for a step: which failures a retry can fix.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::error::SdkError;

use super::ConfigError;

/// The SDK clients, built once (per Lambda container) and shared.
#[derive(Clone, Debug)]
pub struct Clients {
    /// The EC2 client.
    pub ec2: aws_sdk_ec2::Client,
    /// The ECS client.
    pub ecs: aws_sdk_ecs::Client,
    /// The S3 client (path-style addressing when an endpoint is overridden).
    pub s3: aws_sdk_s3::Client,
    /// The SNS client.
    pub sns: aws_sdk_sns::Client,
    /// The DynamoDB client.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The Elastic Load Balancing v2 client.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// The IAM client (revoke-sessions).
    pub iam: aws_sdk_iam::Client,
    /// Secrets Manager (the Slack webhook's URL), this account's.
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    /// Auto Scaling (protect-instance's standby).
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// Security Hub (notify's `security_hub` option), always this account's: an administrator
    /// updates its members' findings.
    pub securityhub: aws_sdk_securityhub::Client,
    /// GuardDuty (read by `responder preflight` only).
    #[cfg(feature = "preflight")]
    pub guardduty: aws_sdk_guardduty::Client,
    /// Facts that stay true for the life of the container, learnt from earlier responses.
    pub stable: Arc<StableFacts>,
    /// Set once the subnets this account sees in the region were listed, or the listing failed
    /// (it is not tried again): once per account and container, alongside a task finding's
    /// DescribeTasks. What it learns goes to [`StableFacts`] (subnet ids are unique).
    pub(crate) subnets_listed: Arc<tokio::sync::OnceCell<()>>,
    /// The configuration the clients were built from: member accounts' clients start from it.
    base: aws_config::SdkConfig,
    /// Clients acting in member accounts, by account (see [`Clients::in_account`]).
    members: Arc<tokio::sync::Mutex<HashMap<String, Clients>>>,
}

/// A member role's provider that hands out the credentials already obtained (when the role was
/// checked) before asking STS again: one AssumeRole per renewal, not one more at first use.
#[derive(Debug)]
struct Primed {
    first: Mutex<Option<aws_sdk_ec2::config::Credentials>>,
    provider: aws_config::sts::AssumeRoleProvider,
}

impl ProvideCredentials for Primed {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        match self.first.lock().ok().and_then(|mut first| first.take()) {
            Some(credentials) => {
                aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
            }
            None => self.provider.provide_credentials(),
        }
    }
}

/// What a warm container remembers to save a round trip on the containment path: only facts
/// that cannot change, so nothing here needs re-checking. EC2 has no call that moves a subnet
/// to another VPC. ACL entries, groups, routes and endpoints can change between
/// two findings, by an operator or an attacker: they are always described afresh.
///
/// Likewise a finding whose isolation has finished (done, or released): the ledger does not let
/// that step run again once its outcome is recorded, so a republished finding need not read the
/// network for it. (Should the record have failed, a later run reads for itself.)
///
/// And a task definition revision named by its full ARN: ECS never changes a revision's
/// contents (registering makes a new revision), and the ARN names its account and region.
#[derive(Debug, Default)]
pub struct StableFacts {
    subnet_vpc: Mutex<HashMap<String, String>>,
    /// Each revision's read, shared by the steps that ask for it at once (one call).
    task_definitions: Mutex<HashMap<String, Arc<TaskDefinitionCell>>>,
    isolation_settled: Mutex<HashSet<String>>,
    /// The Slack webhook's URL, once read from its secret.
    pub(crate) webhook_url: tokio::sync::OnceCell<String>,
    /// The HTTPS client that posts to it.
    pub(crate) webhook_client: tokio::sync::OnceCell<super::webhook::Client>,
}

/// Subnets remembered at most, so a long-lived container's memory stays bounded.
const SUBNETS_REMEMBERED: usize = 4096;
/// Task definition revisions remembered at most (a few kilobytes each).
const TASK_DEFINITIONS_REMEMBERED: usize = 64;

/// One task definition revision, read once: `None` inside when ECS returned none.
pub(crate) type TaskDefinitionCell =
    tokio::sync::OnceCell<Option<Arc<aws_sdk_ecs::types::TaskDefinition>>>;
/// Findings remembered at most.
const FINDINGS_REMEMBERED: usize = 4096;

impl StableFacts {
    /// The VPC of `subnet_id`, if a response in this container learnt it.
    pub fn vpc_of(&self, subnet_id: &str) -> Option<String> {
        self.subnet_vpc.lock().ok()?.get(subnet_id).cloned()
    }

    /// Whether a response in this container saw `finding_id`'s isolation finished.
    pub fn isolation_settled(&self, finding_id: &str) -> bool {
        self.isolation_settled
            .lock()
            .is_ok_and(|settled| settled.contains(finding_id))
    }

    /// Remember that `finding_id`'s isolation has finished (done or released).
    pub fn settle_isolation(&self, finding_id: &str) {
        if let Ok(mut settled) = self.isolation_settled.lock() {
            if settled.len() >= FINDINGS_REMEMBERED {
                settled.clear();
            }
            settled.insert(finding_id.to_string());
        }
    }

    /// The place of `arn`'s read: the same cell for every caller until it is forgotten.
    pub(crate) fn task_definition_cell(&self, arn: &str) -> Arc<TaskDefinitionCell> {
        let Ok(mut known) = self.task_definitions.lock() else {
            return Arc::default();
        };
        if known.len() >= TASK_DEFINITIONS_REMEMBERED && !known.contains_key(arn) {
            known.clear();
        }
        known.entry(arn.to_string()).or_default().clone()
    }

    /// Remember that `subnet_id` is in `vpc_id`.
    pub fn remember_subnet(&self, subnet_id: &str, vpc_id: &str) {
        if let Ok(mut known) = self.subnet_vpc.lock() {
            if known.len() >= SUBNETS_REMEMBERED {
                known.clear();
            }
            known.insert(subnet_id.to_string(), vpc_id.to_string());
        }
    }
}

/// How long one attempt of an AWS call may take, and the call with its retries: no call may
/// outlive the function (60 s), and a hung connection must not hold a claim until the end.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// See [`ATTEMPT_TIMEOUT`].
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// The timeouts every client uses.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

impl Clients {
    /// Clients from an SDK configuration. With an endpoint override (an emulator), S3 uses
    /// path-style addressing, which emulators on 127.0.0.1 need.
    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> Clients {
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(config.endpoint_url().is_some())
            .build();
        Clients {
            ec2: aws_sdk_ec2::Client::new(config),
            ecs: aws_sdk_ecs::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sns: aws_sdk_sns::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            securityhub: aws_sdk_securityhub::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(config),
            #[cfg(feature = "preflight")]
            guardduty: aws_sdk_guardduty::Client::new(config),
            stable: Arc::default(),
            subnets_listed: Arc::default(),
            // The role provider of a member account needs a clock; a hand-built configuration
            // (an emulator's) may have none.
            base: match config.time_source() {
                Some(_) => config.clone(),
                None => config
                    .to_builder()
                    .time_source(aws_smithy_async::time::SystemTimeSource::new())
                    .build(),
            },
            members: Arc::default(),
        }
    }

    /// Clients that act on workloads in member account `account` through `role` (EC2, ECS,
    /// ELB and IAM there), and keep the evidence bucket, the ledger and the topic here. Built
    /// once per account and container; the SDK renews the role's credentials before they
    /// expire. The role is assumed now, so a missing or refused role is this finding's clear
    /// failure rather than every step's.
    pub async fn in_account(
        &self,
        account: &str,
        role: &super::MemberRole,
        partition: &str,
    ) -> Result<Clients, StepError> {
        let mut members = self.members.lock().await;
        if let Some(clients) = members.get(account) {
            return Ok(clients.clone());
        }
        let role_arn = role.arn(partition, account);
        let mut builder = aws_config::sts::AssumeRoleProvider::builder(&role_arn)
            .session_name("guardduty-responder")
            .configure(&self.base);
        if let Some(external_id) = &role.external_id {
            builder = builder.external_id(external_id);
        }
        let provider = builder.build().await;
        let first = match provider.provide_credentials().await {
            Ok(credentials) => credentials,
            Err(error) => {
                let text = aws_sdk_ec2::error::DisplayErrorContext(&error).to_string();
                // Throttling or a timeout passes; a refusal (no such role, a trust policy that
                // does not name this account, a wrong external id) does not.
                let refused = [
                    "AccessDenied",
                    "InvalidClientTokenId",
                    "ValidationError",
                    "RegionDisabled",
                    "MalformedPolicyDocument",
                ]
                .iter()
                .any(|code| text.contains(code));
                return Err(StepError::Aws {
                    operation: "STS AssumeRole",
                    code: if refused {
                        "AccessDenied"
                    } else {
                        "CredentialsError"
                    }
                    .to_string(),
                    message: format!(
                        "cannot act in account {account}: role {role_arn} was not assumed ({text})"
                    ),
                    retryable: !refused,
                });
            }
        };
        let member = self
            .base
            .to_builder()
            .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
                Primed {
                    first: Mutex::new(Some(first)),
                    provider,
                },
            ))
            // One cache for the four clients: the role is assumed once per renewal, not per client.
            .identity_cache(aws_config::identity::IdentityCache::lazy().build())
            .build();
        let clients = Clients {
            ec2: aws_sdk_ec2::Client::new(&member),
            ecs: aws_sdk_ecs::Client::new(&member),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&member),
            iam: aws_sdk_iam::Client::new(&member),
            autoscaling: aws_sdk_autoscaling::Client::new(&member),
            // The member account's own subnets: listed by its own clients.
            subnets_listed: Arc::default(),
            ..self.clone()
        };
        members.insert(account.to_string(), clients.clone());
        Ok(clients)
    }

    /// Load the standard AWS configuration (environment, profile, `AWS_ENDPOINT_URL`), with
    /// retries that ride out throttling. A missing region or missing credentials is an error
    /// now, in one line, rather than a failure of every step later.
    pub async fn from_env() -> Result<Clients, ConfigError> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(4)
                    .with_initial_backoff(Duration::from_millis(100)),
            )
            .timeout_config(timeouts())
            .load()
            .await;
        if config.region().is_none() {
            return Err(ConfigError::NoRegion);
        }
        let provider = config
            .credentials_provider()
            .ok_or_else(|| ConfigError::NoCredentials("no provider configured".to_string()))?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| ConfigError::NoCredentials(e.to_string()))?;
        Ok(Clients::from_sdk_config(&config))
    }
}

/// Why a step did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// A required environment variable is not set (the variable, and what it names).
    #[error("{0} is not set: it names {1}")]
    MissingConfig(&'static str, &'static str),
    /// An AWS API call failed.
    #[error("{operation} failed: {code}: {message}")]
    Aws {
        /// The operation that failed, e.g. `ECS DescribeTasks`.
        operation: &'static str,
        /// The AWS error code, or `HTTP <status>` or `no response` when there is none.
        code: String,
        /// The error message.
        message: String,
        /// Whether a retry may succeed (throttling, 5xx, timeouts, transport errors).
        retryable: bool,
    },
    /// A precondition does not hold; retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// Another invocation is in the middle of the work this one needs done first: a retry
    /// (Lambda's) will find it finished.
    #[error("{0}")]
    InProgress(String),
}

impl StepError {
    /// True when trying again later may succeed (throttling, 5xx, timeouts). The ledger makes
    /// retries safe.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StepError::Aws {
                retryable: true,
                ..
            } | StepError::InProgress(_)
        )
    }
}

const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServerException",
    // DynamoDB: the item is in a transaction being written; it is over in milliseconds.
    "TransactionConflictException",
];

/// Classify an SDK error with the operation it came from.
fn aws_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + HttpStatus,
{
    let status = error.raw_response().map(HttpStatus::status);
    let code = error.code().map(str::to_string);
    let message = error
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| aws_sdk_ec2::error::DisplayErrorContext(&error).to_string());
    let transport = matches!(
        error,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let retryable = transport
        || status.is_some_and(|s| s >= 500)
        || code
            .as_deref()
            .is_some_and(|c| RETRYABLE_CODES.contains(&c));
    StepError::Aws {
        operation,
        code: code.unwrap_or_else(|| match status {
            Some(status) => format!("HTTP {status}"),
            None => "no response".to_string(),
        }),
        message,
        retryable,
    }
}

/// The HTTP status of a raw response, whichever response type the SDK hands back.
pub(crate) trait HttpStatus {
    fn status(&self) -> u16;
}

impl HttpStatus for aws_sdk_ec2::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Shorthand: `.map_err(aws("DescribeTasks"))`.
pub(crate) fn aws<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + HttpStatus,
{
    move |error| aws_error(operation, error)
}
