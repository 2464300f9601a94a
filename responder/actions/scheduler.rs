//! What ECS's own scheduler will do with a quarantined service task, read from the service's
//! settings: its load balancer health checks (which a quarantine can fail), its container health
//! checks (which run inside the task), its deployment limits and the task definition a
//! replacement is started from. Documented behaviour (ECS developer guide, "Deploy Amazon ECS
//! services by replacing tasks"; DeploymentConfiguration): a task that fails its health checks
//! is replaced, the replacement started first when `maximumPercent` and capacity allow, then the
//! unhealthy task is stopped after its target is drained (the target group's deregistration
//! delay). The forecast is words for people, from those numbers; it is never a promise.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{aws, Clients, StepError};
use crate::incident::EcsTaskTarget;

/// What the outlook reads (beyond the DescribeServices the exemption guardrail makes).
pub const PERMISSIONS: &[&str] = &[
    "ecs:DescribeTaskDefinition",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
];

/// ELB's default deregistration delay, when the attribute cannot be read.
const DEFAULT_DEREGISTRATION_DELAY: i32 = 300;

/// What ECS will do with the task, and the settings that say so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EcsOutlook {
    /// The service.
    pub service: String,
    /// `REPLICA` or `DAEMON`.
    pub scheduling_strategy: Option<String>,
    /// Tasks the service keeps running.
    pub desired_count: i32,
    /// Tasks running now.
    pub running_count: i32,
    /// The task definition a replacement starts from (the service's).
    pub task_definition: Option<String>,
    /// The quarantined task's own task definition (differs after a redeploy).
    pub task_definition_of_task: Option<String>,
    /// Seconds after a task starts during which ECS ignores its health checks.
    pub health_check_grace_period_seconds: Option<i32>,
    /// The images of that task definition.
    pub images: Vec<String>,
    /// Deployment limit above the desired count, in percent.
    pub maximum_percent: Option<i32>,
    /// Deployment floor, in percent.
    pub minimum_healthy_percent: Option<i32>,
    /// The load balancer health checks the task is judged by.
    pub target_groups: Vec<TargetGroupCheck>,
    /// The container health checks of essential containers.
    pub container_checks: Vec<ContainerCheck>,
    /// Seconds after the quarantine before ECS can count the task unhealthy, when a load
    /// balancer's checks are what the quarantine cuts.
    pub unhealthy_after_seconds: Option<i32>,
    /// The forecast in words.
    pub forecast: String,
}

/// A target group's health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TargetGroupCheck {
    /// The target group.
    pub target_group_arn: String,
    /// Seconds between checks.
    pub interval_seconds: i32,
    /// Consecutive failures before the target is unhealthy.
    pub unhealthy_threshold: i32,
    /// Seconds a deregistered target is drained before ECS stops the task.
    pub deregistration_delay_seconds: i32,
}

/// An essential container's health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerCheck {
    /// The container.
    pub container: String,
    /// Seconds between checks (ECS's default 30).
    pub interval_seconds: i32,
    /// Failures before unhealthy (ECS's default 3).
    pub retries: i32,
}

/// Read the service's health checks and task definition (the service as DescribeServices
/// gave it).
pub async fn outlook(
    clients: &Clients,
    task: &EcsTaskTarget,
    service: &aws_sdk_ecs::types::Service,
) -> Result<EcsOutlook, StepError> {
    let groups: Vec<String> = service
        .load_balancers()
        .iter()
        .filter_map(|l| l.target_group_arn().map(str::to_string))
        .collect();
    let definition = service
        .task_definition()
        .or(task.task_definition_arn.as_deref())
        .map(str::to_string);
    let (checks, containers) = tokio::join!(
        target_group_checks(clients, &groups),
        task_definition(clients, definition.as_deref())
    );
    let (images, container_checks) = containers?;
    let deployment = service.deployment_configuration();
    let mut outlook = EcsOutlook {
        service: service
            .service_name()
            .or(task.service.as_deref())
            .unwrap_or_default()
            .to_string(),
        scheduling_strategy: service
            .scheduling_strategy()
            .map(|s| s.as_str().to_string()),
        desired_count: service.desired_count(),
        running_count: service.running_count(),
        task_definition: definition,
        task_definition_of_task: task.task_definition_arn.clone(),
        health_check_grace_period_seconds: service.health_check_grace_period_seconds(),
        images,
        maximum_percent: deployment.and_then(|d| d.maximum_percent()),
        minimum_healthy_percent: deployment.and_then(|d| d.minimum_healthy_percent()),
        target_groups: checks?,
        container_checks,
        unhealthy_after_seconds: None,
        forecast: String::new(),
    };
    outlook.unhealthy_after_seconds = outlook
        .target_groups
        .iter()
        .map(|g| g.interval_seconds * g.unhealthy_threshold)
        .min();
    outlook.forecast = forecast(&outlook);
    Ok(outlook)
}

async fn target_group_checks(
    clients: &Clients,
    arns: &[String],
) -> Result<Vec<TargetGroupCheck>, StepError> {
    if arns.is_empty() {
        return Ok(Vec::new());
    }
    let described = clients
        .elbv2
        .describe_target_groups()
        .set_target_group_arns(Some(arns.to_vec()))
        .send()
        .await
        .map_err(aws("ELBv2 DescribeTargetGroups"))?;
    let groups: Vec<_> = described
        .target_groups()
        .iter()
        .filter(|g| g.health_check_enabled() != Some(false))
        .filter_map(|g| {
            Some((
                g.target_group_arn()?.to_string(),
                g.health_check_interval_seconds().unwrap_or(30),
                g.unhealthy_threshold_count().unwrap_or(2),
            ))
        })
        .collect();
    let delays = futures::future::join_all(groups.iter().map(|(arn, _, _)| async move {
        let attributes = clients
            .elbv2
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(aws("ELBv2 DescribeTargetGroupAttributes"))?;
        Ok::<_, StepError>(
            attributes
                .attributes()
                .iter()
                .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
                .and_then(|a| a.value()?.parse().ok())
                .unwrap_or(DEFAULT_DEREGISTRATION_DELAY),
        )
    }))
    .await;
    groups
        .into_iter()
        .zip(delays)
        .map(|((arn, interval, threshold), delay)| {
            Ok(TargetGroupCheck {
                target_group_arn: arn,
                interval_seconds: interval,
                unhealthy_threshold: threshold,
                deregistration_delay_seconds: delay?,
            })
        })
        .collect()
}

async fn task_definition(
    clients: &Clients,
    arn: Option<&str>,
) -> Result<(Vec<String>, Vec<ContainerCheck>), StepError> {
    let Some(arn) = arn else {
        return Ok((Vec::new(), Vec::new()));
    };
    let described = super::workload::describe_task_definition(clients, arn).await?;
    let containers = described
        .as_deref()
        .map(|d| d.container_definitions())
        .unwrap_or_default();
    let images = containers
        .iter()
        .filter_map(|c| c.image().map(str::to_string))
        .collect();
    let checks = containers
        .iter()
        .filter(|c| c.essential() != Some(false))
        .filter_map(|c| {
            let check = c.health_check()?;
            Some(ContainerCheck {
                container: c.name().unwrap_or_default().to_string(),
                interval_seconds: check.interval().unwrap_or(30),
                retries: check.retries().unwrap_or(3),
            })
        })
        .collect();
    Ok((images, checks))
}

/// The forecast in words. Pure.
pub fn forecast(outlook: &EcsOutlook) -> String {
    let service = &outlook.service;
    let definition = outlook
        .task_definition
        .as_deref()
        .unwrap_or("its task definition");
    let images = match outlook.images.as_slice() {
        [] => String::new(),
        images => format!(" (images {})", images.join(", ")),
    };
    let mut words = Vec::new();
    if outlook.scheduling_strategy.as_deref() == Some("DAEMON") {
        words.push(format!(
            "service {service} is a daemon service: ECS keeps one task on each container instance and replaces this one from {definition}{images} if it fails its health checks or stops."
        ));
    }
    // A replacement starts from the service's current task definition: the same image only
    // when the quarantined task ran that one.
    let same = outlook.task_definition.is_some()
        && outlook.task_definition == outlook.task_definition_of_task;
    let from = if same {
        format!("from {definition}{images} — the task's own, the same image, possibly compromised the same way —")
    } else {
        format!(
            "from the service's current {definition}{images} (this task ran {})",
            outlook
                .task_definition_of_task
                .as_deref()
                .unwrap_or("an unknown one")
        )
    };
    if outlook.desired_count == 0 {
        words.push(format!(
            "service {service} wants no tasks (desired 0): ECS starts no replacement."
        ));
    }
    match outlook.unhealthy_after_seconds {
        Some(after) if outlook.desired_count > 0 => {
            let drain = outlook
                .target_groups
                .iter()
                .map(|g| g.deregistration_delay_seconds)
                .max()
                .unwrap_or(DEFAULT_DEREGISTRATION_DELAY);
            let checks: Vec<String> = outlook
                .target_groups
                .iter()
                .map(|g| {
                    format!(
                        "{} checks every {} s, unhealthy after {} failures",
                        short_arn(&g.target_group_arn),
                        g.interval_seconds,
                        g.unhealthy_threshold
                    )
                })
                .collect();
            // Room for a replacement alongside: maximumPercent of the desired count, rounded
            // down (DeploymentConfiguration), above the desired count. With room, ECS stops
            // the unhealthy task once the replacement is healthy; without, it stops it first.
            let desired = outlook.desired_count;
            let room = desired * outlook.maximum_percent.unwrap_or(200) / 100 > desired;
            let order = if room {
                format!("starts a replacement first {from} (maximum percent allows it, if capacity does), and once that one is healthy stops this task after draining it for up to {drain} s")
            } else {
                format!("stops this task first (maximum percent leaves no room), after draining it for up to {drain} s, then starts a replacement {from}")
            };
            let grace = match outlook.health_check_grace_period_seconds {
                Some(g) if g > 0 => format!(" (checks are ignored for the first {g} s after a task starts)"),
                _ => String::new(),
            };
            words.push(format!(
                "service {service} (desired {desired}, running {}) judges the task by its load balancer ({}): if the quarantine cuts those checks — it does not when the load balancer's nodes share the task's subnet — ECS counts it unhealthy about {after} s later{grace}, {order}. A stop by StopTask deletes the task's tags; the evidence keeps them.",
                outlook.running_count,
                checks.join("; ")
            ));
        }
        _ => words.push(format!(
            "service {service} has no load balancer health check the quarantine can fail: ECS replaces the task only when it stops or fails a container health check, {from}."
        )),
    }
    if !outlook.container_checks.is_empty() {
        let checks: Vec<String> = outlook
            .container_checks
            .iter()
            .map(|c| {
                format!(
                    "{} every {} s, {} retries",
                    c.container, c.interval_seconds, c.retries
                )
            })
            .collect();
        words.push(format!(
            "Container health checks ({}) run inside the task: a quarantine fails them only if their command needs the network.",
            checks.join("; ")
        ));
    }
    words.join(" ")
}

fn short_arn(arn: &str) -> &str {
    arn.split_once(":targetgroup/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlook() -> EcsOutlook {
        EcsOutlook {
            service: "web".into(),
            scheduling_strategy: Some("REPLICA".into()),
            desired_count: 2,
            running_count: 2,
            task_definition: Some("arn:aws:ecs:us-east-1:1:task-definition/web:7".into()),
            task_definition_of_task: Some("arn:aws:ecs:us-east-1:1:task-definition/web:7".into()),
            health_check_grace_period_seconds: None,
            images: vec!["web:latest".into()],
            maximum_percent: Some(200),
            minimum_healthy_percent: Some(100),
            target_groups: Vec::new(),
            container_checks: Vec::new(),
            unhealthy_after_seconds: None,
            forecast: String::new(),
        }
    }

    #[test]
    fn a_load_balanced_service_replaces_the_task_after_interval_times_threshold() {
        let mut o = outlook();
        o.target_groups.push(TargetGroupCheck {
            target_group_arn: "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web-tg/abc"
                .into(),
            interval_seconds: 10,
            unhealthy_threshold: 3,
            deregistration_delay_seconds: 120,
        });
        o.unhealthy_after_seconds = Some(30);
        let text = forecast(&o);
        assert!(
            text.contains("web-tg checks every 10 s, unhealthy after 3 failures"),
            "{text}"
        );
        assert!(text.contains("about 30 s later"), "{text}");
        assert!(text.contains("starts a replacement first"), "{text}");
        assert!(text.contains("the same image"), "{text}");
        assert!(
            text.contains("once that one is healthy stops this task"),
            "{text}"
        );
        assert!(text.contains("up to 120 s"), "{text}");
        o.maximum_percent = Some(100);
        assert!(forecast(&o).contains("stops this task first"));
        // 150% of one task rounds down to one: no room for a replacement alongside.
        o.desired_count = 1;
        o.maximum_percent = Some(150);
        assert!(forecast(&o).contains("stops this task first"));
        // After a redeploy the replacement runs another task definition: not "the same image".
        o.task_definition = Some("arn:aws:ecs:us-east-1:1:task-definition/web:8".into());
        let text = forecast(&o);
        assert!(!text.contains("the same image"), "{text}");
        assert!(text.contains("this task ran"), "{text}");
        // A service scaled to zero replaces nothing.
        o.desired_count = 0;
        assert!(forecast(&o).contains("ECS starts no replacement"));
    }

    #[test]
    fn without_health_checks_nothing_replaces_a_running_task() {
        let mut o = outlook();
        let text = forecast(&o);
        assert!(
            text.contains("replaces the task only when it stops or fails a container health check"),
            "{text}"
        );
        o.container_checks.push(ContainerCheck {
            container: "app".into(),
            interval_seconds: 30,
            retries: 3,
        });
        assert!(forecast(&o).contains("run inside the task"));
    }
}
