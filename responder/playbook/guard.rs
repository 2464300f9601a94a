//! The blast-radius guard and the breaker, as playbooks write them. What they allow is
//! decided in [`crate::plan::guard`] (pure) and held in the ledger (so concurrent invocations
//! agree).

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How much of one ECS service containment may take out at once. Containment of a service
/// task (isolate, deregister, stop, scale-service, revoke-sessions) is withheld — evidence and
/// the notice still happen — when it would leave fewer than `min_healthy` of the service's
/// tasks uncontained, or make more than `max_per_service` of them contained at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlastRadius {
    /// Tasks of the service that must stay uncontained: a count (`2`) or a share of the
    /// service's desired count (`"50%"`, rounded up as ECS rounds `minimumHealthyPercent`, so
    /// a one-task service is not contained; say `0` on a rule to allow it — ECS then starts a
    /// replacement from the same task definition).
    #[serde(default = "BlastRadius::default_min_healthy")]
    pub min_healthy: MinHealthy,
    /// Tasks of one service in containment at the same time, at most.
    #[serde(default = "BlastRadius::default_max_per_service")]
    pub max_per_service: u32,
}

impl BlastRadius {
    fn default_min_healthy() -> MinHealthy {
        MinHealthy::Percent(50)
    }

    fn default_max_per_service() -> u32 {
        2
    }
}

impl Default for BlastRadius {
    fn default() -> Self {
        BlastRadius {
            min_healthy: BlastRadius::default_min_healthy(),
            max_per_service: BlastRadius::default_max_per_service(),
        }
    }
}

impl fmt::Display for BlastRadius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {} of a service's tasks contained at once, never leaving fewer than {} uncontained",
            self.max_per_service, self.min_healthy
        )
    }
}

/// A count of tasks, or a share of the service's desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinHealthy {
    /// This many tasks.
    Count(u32),
    /// This percentage of the desired count, rounded up (as ECS rounds
    /// `minimumHealthyPercent`).
    Percent(u8),
}

impl MinHealthy {
    /// The number of tasks, for a service that wants `desired`.
    pub fn tasks(self, desired: u32) -> u32 {
        match self {
            MinHealthy::Count(n) => n,
            MinHealthy::Percent(p) => desired.saturating_mul(u32::from(p)).div_ceil(100),
        }
    }
}

impl fmt::Display for MinHealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinHealthy::Count(n) => write!(f, "{n}"),
            MinHealthy::Percent(p) => write!(f, "{p}% of the desired count"),
        }
    }
}

impl<'de> Deserialize<'de> for MinHealthy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Count(u32),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Count(n) => Ok(MinHealthy::Count(n)),
            Written::Text(text) => text
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u8>().ok())
                .filter(|p| *p <= 100)
                .map(MinHealthy::Percent)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "min_healthy {text:?}: a number of tasks (2) or a percentage from 0% to 100% (\"50%\")"
                    ))
                }),
        }
    }
}

impl Serialize for MinHealthy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MinHealthy::Count(n) => serializer.serialize_u32(*n),
            MinHealthy::Percent(p) => serializer.serialize_str(&format!("{p}%")),
        }
    }
}

impl JsonSchema for MinHealthy {
    fn schema_name() -> Cow<'static, str> {
        "MinHealthy".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of tasks, or a percentage of the service's desired count (rounded up).",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*(100|[1-9]?[0-9])\\s*%\\s*$"}
            ]
        })
    }
}

/// Across the account: once more than `max_containments` findings were contained within one
/// window of `window_minutes`, containment stops — the responder only preserves evidence and
/// notifies, and says so loudly — until the window ends. A storm of findings is more often a
/// misconfiguration or a provocation than that many real compromises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Findings contained per window, at most.
    #[serde(default = "Breaker::default_max_containments")]
    pub max_containments: u32,
    /// The window, in minutes (windows are aligned to the clock: counting starts afresh at
    /// each multiple of the window since the Unix epoch).
    #[serde(default = "Breaker::default_window_minutes")]
    pub window_minutes: u32,
}

impl Breaker {
    fn default_max_containments() -> u32 {
        20
    }

    fn default_window_minutes() -> u32 {
        60
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            max_containments: Breaker::default_max_containments(),
            window_minutes: Breaker::default_window_minutes(),
        }
    }
}

impl fmt::Display for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "notify only once {} findings were contained within {} minutes",
            self.max_containments, self.window_minutes
        )
    }
}
