//! Resource names and switches, read once from the environment.

use super::StepError;
use crate::playbook::Mode;

/// Resource names and switches, read once from the environment.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub evidence_bucket: Option<String>,
    pub ledger_table: Option<String>,
    pub topic_arn: Option<String>,
    /// A deployment-wide cap on every rule's mode (`RESPONDER_MODE`).
    pub mode_ceiling: Option<Mode>,
    /// Days an audit record is kept (`RESPONDER_AUDIT_TTL_DAYS`, default 400).
    pub audit_ttl_days: u32,
}

pub const ENV_BUCKET: &str = "RESPONDER_EVIDENCE_BUCKET";
pub const ENV_TABLE: &str = "RESPONDER_LEDGER_TABLE";
pub const ENV_TOPIC: &str = "RESPONDER_TOPIC_ARN";
pub const ENV_MODE: &str = "RESPONDER_MODE";
pub const ENV_AUDIT_TTL: &str = "RESPONDER_AUDIT_TTL_DAYS";

#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not valid: {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mode_ceiling = match read(ENV_MODE) {
            None => None,
            Some(value) => Some(Mode::parse(&value).ok_or(ConfigError {
                variable: ENV_MODE,
                value,
                expected: "one of enforce, notify-only, dry-run",
            })?),
        };
        let audit_ttl_days = match read(ENV_AUDIT_TTL) {
            None => 400,
            Some(value) => value.parse().map_err(|_| ConfigError {
                variable: ENV_AUDIT_TTL,
                value,
                expected: "a whole number of days",
            })?,
        };
        Ok(Config {
            evidence_bucket: read(ENV_BUCKET),
            ledger_table: read(ENV_TABLE),
            topic_arn: read(ENV_TOPIC),
            mode_ceiling,
            audit_ttl_days,
        })
    }

    pub fn bucket(&self) -> Result<&str, StepError> {
        self.evidence_bucket
            .as_deref()
            .ok_or(StepError::MissingConfig(ENV_BUCKET, "the evidence bucket"))
    }

    pub fn table(&self) -> Result<&str, StepError> {
        self.ledger_table
            .as_deref()
            .ok_or(StepError::MissingConfig(ENV_TABLE, "the ledger table"))
    }

    pub fn topic(&self) -> Result<&str, StepError> {
        self.topic_arn.as_deref().ok_or(StepError::MissingConfig(
            ENV_TOPIC,
            "the notification topic",
        ))
    }
}
