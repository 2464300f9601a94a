//! Resource names and switches, read once from the environment.

use super::StepError;
use crate::playbook::Mode;

/// Resource names and switches, read once from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// The S3 bucket for evidence (`RESPONDER_EVIDENCE_BUCKET`).
    pub evidence_bucket: Option<String>,
    /// The DynamoDB ledger table (`RESPONDER_LEDGER_TABLE`).
    pub ledger_table: Option<String>,
    /// The SNS topic for notifications (`RESPONDER_TOPIC_ARN`).
    pub topic_arn: Option<String>,
    /// A deployment-wide cap on every rule's mode (`RESPONDER_MODE`).
    pub mode_ceiling: Option<Mode>,
    /// Days an audit record is kept (`RESPONDER_AUDIT_TTL_DAYS`, default 400).
    pub audit_ttl_days: u32,
    /// The account this function acts in (`RESPONDER_ACCOUNT_ID`; the template sets it). A
    /// finding about a resource in another account (a member account's, delivered to the
    /// administrator's bus) is preserved and reported, never acted on here.
    pub account_id: Option<String>,
    /// Where findings may come from (`RESPONDER_ACCOUNTS`, `RESPONDER_REGIONS`); anything else
    /// is refused before planning, with the reason audited.
    pub provenance: crate::plan::provenance::Provenance,
    /// The region this function acts in (`AWS_REGION`, which Lambda sets): a finding about a
    /// resource in another region is preserved and reported, not acted on.
    pub region: Option<String>,
    /// A Secrets Manager secret holding a Slack incoming webhook's URL
    /// (`RESPONDER_SLACK_WEBHOOK_SECRET`): `notify` posts the Slack rendering there too.
    pub slack_webhook_secret: Option<String>,
    /// The partition this function runs in (`RESPONDER_PARTITION`, which the template sets;
    /// default `aws`): member roles' ARNs are built in it.
    pub partition: String,
    /// A second topic for chat channels (`RESPONDER_CHAT_TOPIC_ARN`): `notify` publishes an
    /// Amazon Q Developer in chat applications (AWS Chatbot) custom notification there.
    pub chat_topic_arn: Option<String>,
    /// The role to act through in a member account (`RESPONDER_MEMBER_ROLE_NAME`, with
    /// `RESPONDER_MEMBER_EXTERNAL_ID`). Unset: another account's finding is preserved and
    /// reported, never acted on.
    pub member_role: Option<MemberRole>,
}

/// The role a member account gives this function (deployed there by `member-role.yaml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRole {
    /// The role's name, the same in every member account.
    pub name: String,
    /// The external id its trust policy requires, if any.
    pub external_id: Option<String>,
}

impl MemberRole {
    /// The role's ARN in `account`.
    pub fn arn(&self, partition: &str, account: &str) -> String {
        format!("arn:{partition}:iam::{account}:role/{}", self.name)
    }
}

/// Environment variable naming the topic chat channels subscribe to (through Chatbot).
pub const ENV_CHAT_TOPIC: &str = "RESPONDER_CHAT_TOPIC_ARN";
/// Environment variable naming the role to assume in member accounts.
pub const ENV_MEMBER_ROLE: &str = "RESPONDER_MEMBER_ROLE_NAME";
/// Environment variable holding the external id the member role requires.
pub const ENV_MEMBER_EXTERNAL_ID: &str = "RESPONDER_MEMBER_EXTERNAL_ID";

/// Environment variable listing the accounts whose findings are handled (`*`: any).
pub const ENV_ACCOUNTS: &str = "RESPONDER_ACCOUNTS";
/// Environment variable listing the regions whose findings are handled (`*`: any).
pub const ENV_REGIONS: &str = "RESPONDER_REGIONS";

/// Environment variable naming the evidence bucket.
pub const ENV_BUCKET: &str = "RESPONDER_EVIDENCE_BUCKET";
/// Environment variable naming the ledger table.
pub const ENV_TABLE: &str = "RESPONDER_LEDGER_TABLE";
/// Environment variable naming the notification topic.
pub const ENV_TOPIC: &str = "RESPONDER_TOPIC_ARN";
/// Environment variable setting the deployment-wide mode ceiling.
pub const ENV_MODE: &str = "RESPONDER_MODE";
/// Environment variable setting how many days audit records are kept.
pub const ENV_AUDIT_TTL: &str = "RESPONDER_AUDIT_TTL_DAYS";
/// Environment variable naming the account the function acts in.
pub const ENV_ACCOUNT: &str = "RESPONDER_ACCOUNT_ID";

/// Why the responder cannot start with this environment: one line, naming what to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable's value cannot be used.
    #[error("{variable}={value:?} is not valid: {expected}")]
    Invalid {
        /// The variable's name.
        variable: &'static str,
        /// The value it has.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// No region from the environment, the profile or the instance metadata.
    #[error("no AWS region: set AWS_REGION (or AWS_PROFILE, naming a profile that has a region)")]
    NoRegion,
    /// No credentials from any source the SDK knows.
    #[error(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE ({0})"
    )]
    NoCredentials(String),
}

impl Config {
    /// Read the configuration from the environment; empty variables count as unset.
    pub fn from_env() -> Result<Config, ConfigError> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mode_ceiling = match read(ENV_MODE) {
            None => None,
            Some(value) => Some(Mode::parse(&value).ok_or(ConfigError::Invalid {
                variable: ENV_MODE,
                value,
                expected: "one of enforce, approve, notify-only, dry-run",
            })?),
        };
        let audit_ttl_days = match read(ENV_AUDIT_TTL) {
            None => 400,
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                variable: ENV_AUDIT_TTL,
                value,
                expected: "a whole number of days",
            })?,
        };
        let list = |variable: &'static str,
                    expected: &'static str,
                    valid: fn(&str) -> bool|
         -> Result<Option<Vec<String>>, ConfigError> {
            let Some(value) = read(variable) else {
                return Ok(None);
            };
            let items: Vec<String> = value
                .split(',')
                .map(|item| item.trim().to_string())
                .filter(|item| !item.is_empty())
                .collect();
            if items.is_empty() || !items.iter().all(|item| item == "*" || valid(item)) {
                return Err(ConfigError::Invalid {
                    variable,
                    value,
                    expected,
                });
            }
            Ok(Some(items))
        };
        let provenance = crate::plan::provenance::Provenance {
            accounts: list(
                ENV_ACCOUNTS,
                "comma-separated 12-digit account ids, or *",
                |a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()),
            )?,
            regions: list(ENV_REGIONS, "comma-separated region names, or *", |r| {
                r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })?,
            require_envelope: false,
        };
        let member_role = match read(ENV_MEMBER_ROLE) {
            None => None,
            Some(name) => {
                // IAM role names: [\w+=,.@-], 1 to 64 characters (a path is not part of it).
                let valid = name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
                if !valid {
                    return Err(ConfigError::Invalid {
                        variable: ENV_MEMBER_ROLE,
                        value: name,
                        expected: "an IAM role name (letters, digits and +=,.@_-, at most 64)",
                    });
                }
                Some(MemberRole {
                    name,
                    external_id: read(ENV_MEMBER_EXTERNAL_ID),
                })
            }
        };
        Ok(Config {
            partition: read("RESPONDER_PARTITION").unwrap_or_else(|| "aws".to_string()),
            chat_topic_arn: read(ENV_CHAT_TOPIC),
            slack_webhook_secret: read("RESPONDER_SLACK_WEBHOOK_SECRET"),
            member_role,
            provenance,
            region: read("AWS_REGION").or_else(|| read("AWS_DEFAULT_REGION")),
            evidence_bucket: read(ENV_BUCKET),
            ledger_table: read(ENV_TABLE),
            topic_arn: read(ENV_TOPIC),
            mode_ceiling,
            audit_ttl_days,
            account_id: read(ENV_ACCOUNT),
        })
    }

    /// The evidence bucket, or an error naming the variable to set.
    pub fn bucket(&self) -> Result<&str, StepError> {
        self.evidence_bucket
            .as_deref()
            .ok_or(StepError::MissingConfig(ENV_BUCKET, "the evidence bucket"))
    }

    /// The ledger table, or an error naming the variable to set.
    pub fn table(&self) -> Result<&str, StepError> {
        self.ledger_table
            .as_deref()
            .ok_or(StepError::MissingConfig(ENV_TABLE, "the ledger table"))
    }

    /// The notification topic, or an error naming the variable to set.
    pub fn topic(&self) -> Result<&str, StepError> {
        self.topic_arn.as_deref().ok_or(StepError::MissingConfig(
            ENV_TOPIC,
            "the notification topic",
        ))
    }
}
