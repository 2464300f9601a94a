//! Every AWS call the responder makes lives under this module. An action is one unit — its
//! parameters (whose doc comments become the playbook JSON Schema), phase, purpose, the IAM
//! actions it calls and its `run` with a typed output — in one file or folder, registered once
//! in [`registry`]. The playbook format, the plan and the executor all read the registry.
//!
//! Nothing above this boundary (parsing, playbooks, planning) does I/O.

pub mod approval;
mod aws;
mod config;
pub mod deregister;
pub mod drain;
pub mod evidence;
pub mod guard;
pub mod hold;
pub mod inventory;
pub mod isolate;
pub mod ledger;
pub mod notify;
pub mod protect;
mod registry;
pub mod release;
pub mod revoke_sessions;
pub mod scale;
pub mod scheduler;
pub mod security_hub;
pub mod snapshot;
pub mod stop;
pub mod sweep;
pub mod tag;
pub mod webhook;
pub mod workload;

use std::fmt;
use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use aws::aws;
pub use aws::{timeouts, Clients, StepError, ATTEMPT_TIMEOUT, OPERATION_TIMEOUT};
pub use config::{
    Config, ConfigError, MemberRole, ENV_ACCOUNT, ENV_ACCOUNTS, ENV_AUDIT_TTL, ENV_BUCKET,
    ENV_CHAT_TOPIC, ENV_MEMBER_EXTERNAL_ID, ENV_MEMBER_ROLE, ENV_MODE, ENV_REGIONS, ENV_TABLE,
    ENV_TOPIC,
};
pub(crate) use registry::{output_from_ledger, run_action};
pub use registry::{ActionName, ActionSpec, StepOutput};

use crate::incident::{Incident, TargetKind};
use crate::report::Report;
use isolate::ContainmentRecord;
use ledger::Ledger;

/// Execution phases, in order. A rule lists its actions in phase order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Cut the workload off; nothing it does not need comes before it.
    Contain,
    /// Keep what an investigation needs, concurrently.
    Preserve,
    /// Stop the workload, only after evidence (unless forced).
    Stop,
    /// Tell people, last, even when earlier steps failed.
    Notify,
}

impl Phase {
    /// The phase's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Contain => "contain",
            Phase::Preserve => "preserve",
            Phase::Stop => "stop",
            Phase::Notify => "notify",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One action: everything the playbook format, the plan, the executor, the IAM policy and
/// the documentation need to know about it. Implemented by a unit struct per action and listed
/// once in [`registry`].
pub trait Action {
    /// The name playbooks use (`snapshot-volumes`).
    const NAME: &'static str;
    /// When it runs.
    const PHASE: Phase;
    /// Why a step of this kind is in a plan, for people reading the report.
    const PURPOSE: &'static str;
    /// Containment changes the workload: the exemption guardrail removes such steps.
    const CONTAINMENT: bool;
    /// The kinds of workload `run` can act on; a playbook rule that can match another kind
    /// and lists the action is refused (empty: not implemented yet).
    const TARGETS: &'static [TargetKind];
    /// Every IAM action `run` may call (checked against `template.yaml` by a test).
    const PERMISSIONS: &'static [&'static str];

    /// The parameters a playbook gives it (`- isolate: {fallback: stop}`).
    type Params: DeserializeOwned
        + Serialize
        + JsonSchema
        + Default
        + Clone
        + PartialEq
        + fmt::Debug
        + Send
        + Sync;
    /// What it did, recorded in the ledger and the report.
    type Output: DeserializeOwned + Serialize + Clone + PartialEq + fmt::Debug + Send + Sync;

    /// Carry the step out. A failure may carry the partial output that must be kept (so
    /// `release` can undo changes made before the failure).
    fn run(
        ctx: &StepContext<'_>,
        params: &Self::Params,
    ) -> impl Future<Output = Result<Self::Output, Failure<Self::Output>>> + Send;

    /// One line for the notification and the text report.
    fn summary(output: &Self::Output) -> String;

    /// Why a step with these parameters is in a plan: true for the parameters as written.
    fn reason(_params: &Self::Params) -> String {
        Self::PURPOSE.to_string()
    }

    /// A reason not to run at all given what earlier phases did (e.g. `stop` without
    /// evidence). Pure.
    fn withheld(_params: &Self::Params, _earlier: &Earlier) -> Option<String> {
        None
    }
}

/// A step that did not succeed, with whatever it changed before failing.
#[derive(Debug, Clone)]
pub struct Failure<O> {
    /// Why.
    pub error: StepError,
    /// Changes that were made and are kept (recorded so `release` can undo them).
    pub partial: Option<O>,
}

impl<O> Failure<O> {
    /// The partial output converted (e.g. into the registry's [`StepOutput`]).
    pub fn map<P>(self, convert: impl FnOnce(O) -> P) -> Failure<P> {
        Failure {
            error: self.error,
            partial: self.partial.map(convert),
        }
    }
}

impl<O> From<StepError> for Failure<O> {
    fn from(error: StepError) -> Self {
        Failure {
            error,
            partial: None,
        }
    }
}

/// What earlier phases of this response produced, as later steps need it.
#[derive(Debug, Clone, Default)]
pub struct Earlier {
    /// The containment in force (done now, or by an earlier invocation).
    pub containment: Option<ContainmentRecord>,
    /// Isolation was attempted and did not succeed.
    pub isolate_failed: bool,
    /// Isolation cut off the container instance the task shares (done, or partly).
    pub instance_cut: bool,
    /// Evidence is preserved (now or before).
    pub evidence_done: bool,
    /// The task's service as this response read it (for the exemption guardrail and the
    /// guard), so that no step describes it again.
    pub service: Option<workload::ServiceFacts>,
}

/// Everything a step's `run` may use.
pub struct StepContext<'a> {
    /// The SDK clients.
    pub clients: &'a Clients,
    /// Resource names (bucket, table, topic).
    pub config: &'a Config,
    /// The finding, normalised.
    pub incident: &'a Incident,
    /// The finding as received (kept as evidence).
    pub raw_finding: &'a crate::event::RawFinding,
    /// The rule that asked for the step.
    pub rule: &'a str,
    /// The ledger of this response.
    pub ledger: &'a Ledger,
    /// What an earlier attempt of this step wrote down before it died or failed.
    pub written_down: &'a [serde_json::Value],
    /// What earlier phases produced.
    pub earlier: &'a Earlier,
    /// What `isolate` reads before changing anything, when it was read alongside the ledger's
    /// checks ([`isolate::prefetch`]); otherwise the action reads it itself.
    pub prefetched: Option<&'a isolate::Prefetched>,
    /// The report as it stands (outcomes so far): what `notify` sends.
    pub report: &'a Report,
    /// What weighs containment that reaches beyond the workload (a shared container instance).
    pub bounds: drain::Bounds<'a>,
}

/// IAM actions used outside any playbook action, by component.
pub const COMPONENT_PERMISSIONS: &[(&str, &[&str])] = &[
    ("ledger", ledger::PERMISSIONS),
    ("release", release::PERMISSIONS),
    ("exemption guardrail", workload::SERVICE_PERMISSIONS),
    ("sweep", sweep::PERMISSIONS),
    ("ECS outlook", scheduler::PERMISSIONS),
    ("member accounts", &["sts:AssumeRole"]),
];

/// Grants the function needs that no code of ours calls: the platform uses them on its behalf.
pub const PLATFORM_PERMISSIONS: &[(&str, &str)] = &[
    (
        "kms:GenerateDataKey",
        "SNS, S3 and DynamoDB encrypt with the stack's key as this role",
    ),
    (
        "kms:Decrypt",
        "reading objects and items encrypted with the stack's key",
    ),
    (
        "sqs:SendMessage",
        "Lambda's on-failure destination sends as the function's role",
    ),
];

/// Every IAM action the code may call: the actions' and the components'.
pub fn declared_permissions() -> Vec<(&'static str, &'static str)> {
    let actions = ActionName::ALL
        .iter()
        .flat_map(|a| a.permissions().iter().map(move |p| (a.name(), *p)));
    let components = COMPONENT_PERMISSIONS
        .iter()
        .flat_map(|(c, ps)| ps.iter().map(move |p| (*c, *p)));
    actions.chain(components).collect()
}
