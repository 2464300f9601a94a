//! The container instance of an ECS task on EC2, and `drain-instance`.
//!
//! A task in `bridge` or `host` network mode has no network interface of its own: its traffic
//! is the instance's, so the container instance is the unit of containment. The reads here
//! tell `isolate` which tasks share that network (it cuts the instance only within every
//! such service's blast radius, [`crate::plan::guard::instance_cut`]); `drain-instance` sets
//! the container instance to DRAINING: ECS places no new task on it and replaces its service
//! tasks elsewhere by each service's `minimumHealthyPercent` and `maximumPercent`
//! ([container instance draining](https://docs.aws.amazon.com/AmazonECS/latest/developerguide/container-instance-draining.html)),
//! so the instance empties of healthy work without an outage. `release` sets it ACTIVE again.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload::describe_task;
use super::{aws, Action, Clients, Failure, Phase, StepContext, StepError};
use crate::incident::{Target, TargetKind};
use crate::plan::guard::{ServiceCount, Tenant};
use crate::playbook::{BlastRadius, TagCondition};

/// The step's item in the ledger.
pub const STEP_KEY: &str = "step#drain-instance";

/// What weighs cutting a container instance off: the rule's blast radius and the exemption tag.
#[derive(Debug, Clone, Copy)]
pub struct Bounds<'a> {
    /// The deciding rule's blast radius (or the guardrails').
    pub blast_radius: &'a BlastRadius,
    /// The exemption tag.
    pub exempt_tag: &'a TagCondition,
}

/// A container instance as ECS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInstance {
    /// Its ARN.
    pub arn: String,
    /// The EC2 instance.
    pub ec2_instance_id: Option<String>,
    /// `ACTIVE`, `DRAINING`, `REGISTERING`…
    pub status: String,
}

/// DescribeContainerInstances for one; `Ok(None)` when ECS does not know it.
pub async fn describe_container_instance(
    clients: &Clients,
    cluster_arn: &str,
    arn: &str,
) -> Result<Option<ContainerInstance>, StepError> {
    let output = clients
        .ecs
        .describe_container_instances()
        .cluster(cluster_arn)
        .container_instances(arn)
        .send()
        .await
        .map_err(aws("ECS DescribeContainerInstances"))?;
    Ok(output
        .container_instances()
        .first()
        .map(|c| ContainerInstance {
            arn: c.container_instance_arn().unwrap_or(arn).to_string(),
            ec2_instance_id: c.ec2_instance_id().map(str::to_string),
            status: c.status().unwrap_or_default().to_string(),
        }))
}

fn exempt(tags: &[aws_sdk_ecs::types::Tag], tag: &TagCondition) -> bool {
    tags.iter().any(|t| tag.matches(t.key(), t.value()))
}

/// The tasks running on a container instance, and the services they belong to as ECS counts
/// them (a service ECS does not describe is missing from the map).
pub async fn tenants(
    clients: &Clients,
    cluster_arn: &str,
    container_instance_arn: &str,
    exempt_tag: &TagCondition,
) -> Result<(Vec<Tenant>, BTreeMap<String, ServiceCount>), StepError> {
    // Tasks ECS was told to stop may still run (draining, stopTimeout): both lists.
    let list = |desired: aws_sdk_ecs::types::DesiredStatus| {
        clients
            .ecs
            .list_tasks()
            .cluster(cluster_arn)
            .container_instance(container_instance_arn)
            .desired_status(desired)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
    };
    let (running, stopping) = tokio::join!(
        list(aws_sdk_ecs::types::DesiredStatus::Running),
        list(aws_sdk_ecs::types::DesiredStatus::Stopped)
    );
    let mut arns = running.map_err(aws("ECS ListTasks"))?;
    arns.extend(stopping.map_err(aws("ECS ListTasks"))?);
    let mut tenants = Vec::new();
    for chunk in arns.chunks(100) {
        let described = clients
            .ecs
            .describe_tasks()
            .cluster(cluster_arn)
            .set_tasks(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .map_err(aws("ECS DescribeTasks"))?;
        for task in described.tasks() {
            // ListTasks filters by container instance; a stale answer is not trusted for it.
            // A task whose containers have stopped shares nothing any more.
            if task.container_instance_arn() != Some(container_instance_arn)
                || matches!(task.last_status(), Some("STOPPED" | "DELETED"))
            {
                continue;
            }
            tenants.push(Tenant {
                task_arn: task.task_arn().unwrap_or_default().to_string(),
                service: task
                    .group()
                    .and_then(|g| g.strip_prefix("service:"))
                    .map(str::to_string),
                // A task of network mode `none` counts as sharing: it costs a needless
                // hold-back at worst, never a cut that was not allowed.
                own_interface: task
                    .attachments()
                    .iter()
                    .any(|a| a.r#type() == Some("ElasticNetworkInterface")),
                exempt: exempt(task.tags(), exempt_tag),
            });
        }
    }
    let names: Vec<String> = tenants
        .iter()
        .filter_map(|t| t.service.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut services = BTreeMap::new();
    let mut exempt_services = BTreeSet::new();
    for chunk in names.chunks(10) {
        let described = clients
            .ecs
            .describe_services()
            .cluster(cluster_arn)
            .set_services(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .map_err(aws("ECS DescribeServices"))?;
        for service in described.services() {
            let Some(name) = service.service_name() else {
                continue;
            };
            if exempt(service.tags(), exempt_tag) {
                exempt_services.insert(name.to_string());
            }
            services.insert(
                name.to_string(),
                ServiceCount {
                    desired: u32::try_from(service.desired_count().max(0)).unwrap_or(0),
                    running: u32::try_from(service.running_count().max(0)).unwrap_or(0),
                },
            );
        }
    }
    for tenant in &mut tenants {
        if tenant
            .service
            .as_ref()
            .is_some_and(|s| exempt_services.contains(s))
        {
            tenant.exempt = true;
        }
    }
    Ok((tenants, services))
}

/// Set a container instance's status (`ACTIVE` or `DRAINING`); ECS's per-instance failures
/// are errors.
pub async fn set_status(
    clients: &Clients,
    cluster_arn: &str,
    arn: &str,
    status: aws_sdk_ecs::types::ContainerInstanceStatus,
) -> Result<(), StepError> {
    let output = clients
        .ecs
        .update_container_instances_state()
        .cluster(cluster_arn)
        .container_instances(arn)
        .status(status)
        .send()
        .await
        .map_err(aws("ECS UpdateContainerInstancesState"))?;
    if let Some(failure) = output.failures().first() {
        return Err(StepError::Refused(format!(
            "ECS did not change container instance {arn}: {}{}",
            failure.reason().unwrap_or("no reason given"),
            failure
                .detail()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// Whether the finding's isolate step has cut (or is cutting) a shared container instance, as
/// the ledger says: an earlier attempt's cut that failed after the swap, or another invocation
/// cutting it now (then this one waits: `InProgress`).
async fn shared_cut_recorded(ctx: &StepContext<'_>) -> Result<bool, StepError> {
    let Some(step) = ctx
        .ledger
        .get_step(&ctx.incident.finding_id, super::isolate::STEP_KEY)
        .await?
    else {
        return Ok(false);
    };
    if step.held() {
        return Err(StepError::InProgress(
            "the finding is being isolated by another invocation; drain-instance waits for it"
                .to_string(),
        ));
    }
    let released = step.status == super::ledger::StepStatus::Released;
    let shared = step
        .intended
        .iter()
        .any(|v| serde_json::from_value::<super::isolate::SharedIntent>(v.clone()).is_ok());
    Ok(shared && !released)
}

/// The `drain-instance` action.
pub struct DrainInstance;

/// Parameters of `drain-instance`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainParams {
    /// Drain also when the task has a network interface of its own (`awsvpc` on EC2), for a
    /// host you no longer trust. By default only a task that shares the instance's network
    /// (`bridge` or `host`) has its container instance drained: `isolate` cuts an `awsvpc`
    /// task alone.
    #[serde(default)]
    pub also_awsvpc: bool,
}

/// What `drain-instance` did (and what `release` undoes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// The cluster.
    pub cluster_arn: String,
    /// The container instance, when the task runs on one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_instance_arn: String,
    /// Its EC2 instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    /// Its status before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_before: String,
    /// This step set it to DRAINING (release sets it ACTIVE again).
    #[serde(default)]
    pub drained: bool,
    /// Service tasks on it that ECS now replaces elsewhere.
    #[serde(default)]
    pub service_tasks: usize,
    /// Tasks of no service on it: draining leaves them running.
    #[serde(default)]
    pub standalone_tasks: usize,
    /// The compromised task belongs to a service: ECS replaces it, which ends it.
    #[serde(default)]
    pub task_replaced: bool,
    /// Why nothing was drained, when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_needed: Option<String>,
}

impl Action for DrainInstance {
    const NAME: &'static str = "drain-instance";
    const PHASE: Phase = Phase::Contain;
    const PURPOSE: &'static str = "set the task's container instance to DRAINING: nothing new is placed on it, and ECS moves its service tasks elsewhere";
    const CONTAINMENT: bool = true;
    const TARGETS: &'static [TargetKind] = &[TargetKind::EcsTask];
    const PERMISSIONS: &'static [&'static str] = &[
        "ecs:DescribeTasks",
        "ecs:DescribeContainerInstances",
        "ecs:ListTasks",
        "ecs:DescribeServices",
        "ecs:UpdateContainerInstancesState",
    ];

    type Params = DrainParams;
    type Output = Drain;

    async fn run(ctx: &StepContext<'_>, params: &DrainParams) -> Result<Drain, Failure<Drain>> {
        let Target::EcsTask(task) = &ctx.incident.target else {
            return Err(StepError::Refused(format!(
                "drain-instance acts on ECS tasks; this is a {}",
                ctx.incident.target.kind().name()
            ))
            .into());
        };
        let mut drain = Drain {
            cluster_arn: task.cluster_arn.clone(),
            ..Drain::default()
        };
        // isolate cut the instance off: its agent cannot act on a drain now, and would stop
        // the tasks there (this one too) the moment release reconnects it.
        if ctx.earlier.instance_cut || shared_cut_recorded(ctx).await? {
            drain.not_needed = Some(
                "isolate cut the container instance off: its ECS agent cannot drain it now, and would stop its tasks when release reconnects it".to_string(),
            );
            return Ok(drain);
        }
        let Some(facts) = describe_task(ctx.clients, task).await? else {
            drain.not_needed = Some("ECS no longer lists the task".to_string());
            return Ok(drain);
        };
        let Some(arn) = facts.container_instance_arn else {
            drain.not_needed =
                Some("the task runs on Fargate: it has no container instance".to_string());
            return Ok(drain);
        };
        if facts.eni_id.is_some() && !params.also_awsvpc {
            drain.not_needed = Some(
                "the task has a network interface of its own (awsvpc): isolate cuts it alone, and its container instance stays in service"
                    .to_string(),
            );
            return Ok(drain);
        }
        let Some(instance) =
            describe_container_instance(ctx.clients, &task.cluster_arn, &arn).await?
        else {
            return Err(StepError::Refused(format!(
                "ECS does not describe container instance {arn}"
            ))
            .into());
        };
        drain.container_instance_arn = instance.arn.clone();
        drain.ec2_instance_id = instance.ec2_instance_id.clone();
        drain.status_before = instance.status.clone();
        // An earlier attempt that set DRAINING and died: the instance was ACTIVE before it.
        let earlier = ctx
            .written_down
            .iter()
            .filter_map(|v| serde_json::from_value::<Drain>(v.clone()).ok())
            .find(|d| d.drained && d.container_instance_arn == instance.arn);
        if let Some(earlier) = &earlier {
            drain.status_before = earlier.status_before.clone();
        }
        let (tenants, _) = tenants(
            ctx.clients,
            &task.cluster_arn,
            &instance.arn,
            ctx.bounds.exempt_tag,
        )
        .await?;
        drain.service_tasks = tenants.iter().filter(|t| t.service.is_some()).count();
        drain.standalone_tasks = tenants.len() - drain.service_tasks;
        drain.task_replaced = task.service.is_some();
        match instance.status.as_str() {
            "DRAINING" => {
                drain.drained = earlier.is_some();
                return Ok(drain);
            }
            "ACTIVE" => {}
            other => {
                return Err(StepError::Refused(format!(
                    "container instance {} is {other}: ECS drains only an ACTIVE one",
                    instance.arn
                ))
                .into())
            }
        }
        // An exempt task there: draining would move it, which the exemption forbids.
        if let Some(exempt) = tenants.iter().find(|t| t.exempt) {
            return Err(StepError::Refused(format!(
                "task {} on container instance {} is exempt (or its service is): the instance is not drained",
                exempt.task_arn, instance.arn
            ))
            .into());
        }
        // Written down first: release finds the instance to set ACTIVE even if this dies.
        drain.drained = true;
        ctx.ledger
            .record_intent(
                &ctx.incident.finding_id,
                STEP_KEY,
                &[serde_json::to_value(&drain).unwrap_or_default()],
            )
            .await?;
        if let Err(error) = set_status(
            ctx.clients,
            &task.cluster_arn,
            &instance.arn,
            aws_sdk_ecs::types::ContainerInstanceStatus::Draining,
        )
        .await
        {
            // ECS's refusal is certain; a lost answer may have drained it (release checks
            // for DRAINING before it sets ACTIVE).
            drain.drained = !matches!(error, StepError::Refused(_));
            return Err(Failure {
                error,
                partial: Some(drain),
            });
        }
        Ok(drain)
    }

    fn summary(output: &Drain) -> String {
        if let Some(why) = &output.not_needed {
            return format!("not drained: {why}");
        }
        let instance = match &output.ec2_instance_id {
            Some(id) => format!("container instance on {id}"),
            None => format!("container instance {}", output.container_instance_arn),
        };
        let state = if output.drained {
            format!("{instance} set to DRAINING")
        } else {
            format!("{instance} was already {}", output.status_before)
        };
        let mut parts = vec![format!("{state}: ECS places no new task on it")];
        if output.service_tasks > 0 {
            parts.push(format!(
                "it replaces the {} there elsewhere, by each service's minimumHealthyPercent and maximumPercent{}",
                crate::report::count(output.service_tasks, "service task", "service tasks"),
                if output.task_replaced {
                    " (this task included: replacing it ends its processes; the instance and its volumes stay)"
                } else {
                    ""
                }
            ));
        }
        if output.standalone_tasks > 0 {
            parts.push(format!(
                "{} of no service keep running there",
                crate::report::count(output.standalone_tasks, "task", "tasks")
            ));
        }
        parts.join("; ")
    }
}
