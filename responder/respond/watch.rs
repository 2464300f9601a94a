//! A task running while `hold-deployment` holds images (ECS sends RUNNING events when a task
//! starts and when one of its containers changes): when it runs a held image, people are told —
//! once per task and holding finding (a `watch#{task}` claim in the finding's partition),
//! however many events ECS sends for it.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::json;

use super::Responder;
use crate::actions::hold::{image_keys, HeldImage};
use crate::actions::ledger::{Claim, Ledger, StepStatus};
use crate::actions::StepError;
use crate::event::ContainerState;
use crate::playbook::Mode;
use crate::report::{Execution, Report};

/// What a started task's check against the held images found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchResult {
    /// The task.
    pub task_arn: String,
    /// Its group (`service:NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Each held image it runs.
    pub matches: Vec<HeldMatch>,
    /// People were told now (not: nothing held, told before, or dry-run).
    pub notified: bool,
}

/// A container of the started task running a held image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldMatch {
    /// The container of the running task.
    pub container: Option<String>,
    /// The key it matched on (`digest:…` or `image:…`).
    pub matched_on: String,
    /// What is held, and by which finding.
    pub held: HeldImage,
}

impl WatchResult {
    /// The subject's words.
    pub fn headline(&self) -> String {
        let task = self.task_arn.rsplit('/').next().unwrap_or(&self.task_arn);
        format!("held image running: ECS task {task}")
    }

    /// The notification's body.
    pub fn body(&self) -> String {
        let mut lines = vec![format!(
            "ECS task {} ({}) runs an image a finding holds:",
            self.task_arn,
            self.group.as_deref().unwrap_or("no group")
        )];
        for m in &self.matches {
            let how = if m.matched_on.starts_with("digest:") {
                "the same image digest"
            } else {
                "the same image reference (no digest compared: the tag may since point to other content)"
            };
            lines.push(format!(
                "  - container {} runs {} — {how} as held by finding {} (service {})",
                m.container.as_deref().unwrap_or("?"),
                m.held
                    .digest
                    .as_deref()
                    .or(m.held.image.as_deref())
                    .unwrap_or("?"),
                m.held.finding_id,
                m.held.service.as_deref().unwrap_or("none")
            ));
        }
        lines.push(
            "It may carry the same compromise: contain or stop it. The hold ends with `responder release FINDING_ID`, which also releases that finding's quarantine and service scale."
                .to_string(),
        );
        lines.join("\n")
    }
}

impl Responder {
    /// Check a started task's images against the held ones; tell people of new matches.
    pub(super) async fn watch(
        &self,
        task_arn: &str,
        group: Option<&str>,
        containers: &[ContainerState],
        ledger: &Ledger,
        mode: Mode,
        report: &Report,
    ) -> Result<WatchResult, StepError> {
        let lookups: Vec<(&ContainerState, String)> = containers
            .iter()
            .flat_map(|c| image_keys(c).into_iter().map(move |k| (c, k)))
            .collect();
        let found =
            futures::future::join_all(lookups.iter().map(|(_, key)| ledger.holds(key))).await;
        let mut matches = Vec::new();
        for ((container, key), holds) in lookups.iter().zip(found) {
            for value in holds? {
                let Ok(held) = serde_json::from_value::<HeldImage>(value) else {
                    continue;
                };
                // The held task's own state changes are not news; a hold found under both of
                // a container's keys is one match.
                let known = matches.iter().any(|m: &HeldMatch| m.held == held);
                if held.task_arn != task_arn && !known {
                    matches.push(HeldMatch {
                        container: container.name.clone(),
                        matched_on: key.clone(),
                        held,
                    });
                }
            }
        }
        let mut result = WatchResult {
            task_arn: task_arn.to_string(),
            group: group.map(str::to_string),
            matches,
            notified: false,
        };
        if result.matches.is_empty() || mode == Mode::DryRun {
            return Ok(result);
        }
        // Once per task and holding finding.
        let key = format!("watch#{task_arn}");
        let findings: BTreeSet<&str> = result
            .matches
            .iter()
            .map(|m| m.held.finding_id.as_str())
            .collect();
        let mut claimed = Vec::new();
        for finding in findings {
            if let Claim::Acquired { .. } = ledger.claim(finding, &key, "hold-deployment").await? {
                claimed.push(finding.to_string());
            }
        }
        if claimed.is_empty() {
            return Ok(result);
        }
        let mut alert = report.clone();
        alert.execution = Some(Execution {
            watch: Some(result.clone()),
            ..Execution::default()
        });
        let topic = self.config.topic()?;
        let sent = crate::actions::notify::notify(&self.clients, topic, &alert, None).await;
        let status = if sent.is_ok() {
            StepStatus::Done
        } else {
            StepStatus::Failed
        };
        for finding in &claimed {
            let detail = json!({"task_arn": task_arn, "notified": sent.is_ok()});
            if let Err(error) = ledger.finish(finding, &key, status, &detail).await {
                tracing::error!(finding_id = %finding, error = %error, "watch outcome not recorded");
            }
        }
        sent?;
        result.notified = true;
        Ok(result)
    }
}
