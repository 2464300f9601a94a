//! `revoke-sessions`: accepted in playbooks, not carried out yet (the step fails saying so).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Action, Failure, Phase, StepContext, StepError};
use crate::incident::TargetKind;

/// The `revoke-sessions` action.
pub struct RevokeSessions;

/// Parameters of `revoke-sessions` (none yet).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeSessionsParams {}

/// Nothing is revoked yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokeSessionsOutput {}

impl Action for RevokeSessions {
    const NAME: &'static str = "revoke-sessions";
    const PHASE: Phase = Phase::Contain;
    const PURPOSE: &'static str = "revoke the instance role's active sessions";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[];
    const PERMISSIONS: &'static [&'static str] = &[];

    type Params = RevokeSessionsParams;
    type Output = RevokeSessionsOutput;

    async fn run(
        _ctx: &StepContext<'_>,
        _params: &RevokeSessionsParams,
    ) -> Result<RevokeSessionsOutput, Failure<RevokeSessionsOutput>> {
        Err(StepError::Refused(
            "revoke-sessions is not implemented yet: revoke the instance role's sessions in IAM (AWSRevokeOlderSessions)".to_string(),
        )
        .into())
    }

    fn summary(_output: &RevokeSessionsOutput) -> String {
        "sessions revoked".to_string()
    }
}
