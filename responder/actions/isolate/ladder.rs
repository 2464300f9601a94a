//! The ladder: for a task, each rung in the rule's order until one applies; for an instance,
//! the security-group swap on each of its ENIs.

use std::collections::BTreeSet;

use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::endpoints::guardduty_endpoints;
use super::nacl::{nacl_quarantine, TaskCidrs};
use super::sg_swap::sg_swap;
use super::{ContainmentRecord, IsolateOutput, IsolateParams, IsolationRung, RungAttempt};
use crate::actions::workload::describe_task;
use crate::actions::{aws, Clients, StepError};
use crate::incident::{Ec2InstanceTarget, EcsTaskTarget};

struct EniFacts {
    vpc_id: Option<String>,
    groups: Vec<String>,
    requester_managed: bool,
    public_ip: Option<String>,
}

async fn describe_eni(clients: &Clients, eni_id: &str) -> Result<EniFacts, StepError> {
    let output = clients
        .ec2
        .describe_network_interfaces()
        .network_interface_ids(eni_id)
        .send()
        .await
        .map_err(aws("EC2 DescribeNetworkInterfaces"))?;
    let eni = output.network_interfaces().first().ok_or_else(|| {
        StepError::Refused(format!("EC2 does not know network interface {eni_id}"))
    })?;
    Ok(EniFacts {
        vpc_id: eni.vpc_id().map(str::to_string),
        groups: eni
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        requester_managed: eni.requester_managed().unwrap_or(false),
        public_ip: eni
            .association()
            .and_then(|a| a.public_ip())
            .map(str::to_string),
    })
}

/// Isolate an ECS task: its ENI, then each rung in order until one applies.
pub(super) async fn isolate_task(
    clients: &Clients,
    task: &EcsTaskTarget,
    params: &IsolateParams,
    region: &str,
) -> Result<IsolateOutput, StepError> {
    let Some(facts) = describe_task(clients, task).await? else {
        return Ok(IsolateOutput::Gone {
            why: "ECS no longer knows the task (MISSING): it stopped over an hour ago".to_string(),
        });
    };
    if facts.last_status.as_deref() == Some("STOPPED") {
        return Ok(IsolateOutput::Gone {
            why: "the task is already STOPPED".to_string(),
        });
    }
    let (Some(eni_id), Some(ip)) = (facts.eni_id.clone(), facts.ipv4.clone()) else {
        return Err(StepError::Refused(
            "the task has no network interface of its own (bridge or host network mode): \
             isolating its container instance would cut every task on it"
                .to_string(),
        ));
    };
    let eni = describe_eni(clients, &eni_id).await?;
    let vpc_id = eni
        .vpc_id
        .clone()
        .ok_or_else(|| StepError::Refused(format!("network interface {eni_id} reports no VPC")))?;
    let mut record = ContainmentRecord {
        target: task.task_arn.clone(),
        ip: Some(ip.clone()),
        ipv6: facts.ipv6.clone(),
        eni_ids: vec![eni_id.clone()],
        vpc_id: Some(vpc_id.clone()),
        subnet_id: facts.subnet_id.clone(),
        ..ContainmentRecord::default()
    };
    let endpoints = if params.keep_guardduty_agent {
        guardduty_endpoints(clients, &vpc_id, region).await?
    } else {
        Vec::new()
    };

    let mut failures = Vec::new();
    for rung in &params.rungs {
        let attempt = match rung {
            IsolationRung::SgSwap if eni.requester_managed => Err(RungError::NotApplicable(
                "the ENI is requester-managed (every Fargate and awsvpc task ENI): EC2 refuses security-group changes on it".to_string(),
            )),
            IsolationRung::SgSwap => {
                sg_swap(clients, &vpc_id, &[(eni_id.clone(), eni.groups.clone())], params, &endpoints)
                    .await
                    .map(|swaps| {
                        record.sg_swaps = swaps;
                        "security groups swapped: untracking group, then quarantine group".to_string()
                    })
            }
            IsolationRung::NaclQuarantine => {
                let cidrs = TaskCidrs {
                    ipv4: format!("{ip}/32"),
                    ipv6: facts.ipv6.as_ref().map(|v6| format!("{v6}/128")),
                };
                nacl_quarantine(clients, &vpc_id, facts.subnet_id.as_deref(), &cidrs, params.nacl_rule_range, &endpoints)
                    .await
                    .map(|(entries, before)| {
                        let acls: BTreeSet<&str> = entries.iter().map(|e| e.acl_id.as_str()).collect();
                        let detail = format!(
                            "{} DENY/ALLOW entries for {ip} in network ACL(s) {}",
                            entries.len(),
                            acls.into_iter().collect::<Vec<_>>().join(", ")
                        );
                        record.nacl_entries = entries;
                        record.acls_before = before;
                        detail
                    })
            }
        };
        match attempt {
            Ok(detail) => {
                record.attempts.push(RungAttempt {
                    rung: *rung,
                    result: "applied".to_string(),
                    detail,
                });
                record.rung = Some(*rung);
                break;
            }
            Err(error) => {
                let (result, detail, fatal) = match error {
                    RungError::NotApplicable(d) => ("not_applicable", d, None),
                    RungError::Failed(e) => ("failed", e.to_string(), Some(e)),
                };
                failures.push(format!("{}: {detail}", rung.name()));
                record.attempts.push(RungAttempt {
                    rung: *rung,
                    result: result.to_string(),
                    detail,
                });
                if let Some(error) = fatal.filter(StepError::is_retryable) {
                    // Throttled or AWS-side failure: stop climbing, let the retry redo it.
                    return Err(error);
                }
            }
        }
    }
    match record.rung {
        Some(IsolationRung::NaclQuarantine) => {
            record.gaps.push(format!(
                "network ACLs only see traffic that crosses a subnet boundary: traffic between {ip} and hosts in its own subnet ({}) is not cut",
                facts.subnet_id.as_deref().unwrap_or("unknown")
            ));
            if let Some(public_ip) = &eni.public_ip {
                let why = format!(
                    "the task has public IP {public_ip}: its direct internet traffic does not cross another subnet, so the network ACL quarantine cannot cut it"
                );
                record.gaps.push(why.clone());
                return Ok(IsolateOutput::Incomplete {
                    record: Box::new(record),
                    why,
                });
            }
            Ok(IsolateOutput::Contained {
                record: Box::new(record),
            })
        }
        Some(IsolationRung::SgSwap) => Ok(IsolateOutput::Contained {
            record: Box::new(record),
        }),
        None => Err(StepError::Refused(format!(
            "no isolation rung succeeded ({})",
            failures.join("; ")
        ))),
    }
}

/// Isolate an EC2 instance: the SG swap on each of its ENIs.
pub(super) async fn isolate_instance(
    clients: &Clients,
    instance: &Ec2InstanceTarget,
    params: &IsolateParams,
    region: &str,
) -> Result<IsolateOutput, StepError> {
    let output = clients
        .ec2
        .describe_instances()
        .instance_ids(&instance.instance_id)
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) if error.code() == Some("InvalidInstanceID.NotFound") => {
            return Ok(IsolateOutput::Gone {
                why: "EC2 no longer knows the instance".to_string(),
            })
        }
        Err(error) => return Err(aws("EC2 DescribeInstances")(error)),
    };
    let Some(found) = output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
    else {
        return Ok(IsolateOutput::Gone {
            why: "EC2 no longer knows the instance".to_string(),
        });
    };
    let state = found
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    if matches!(state.as_deref(), Some("terminated" | "shutting-down")) {
        return Ok(IsolateOutput::Gone {
            why: format!("the instance is {}", state.unwrap_or_default()),
        });
    }
    let vpc_id = found
        .vpc_id()
        .ok_or_else(|| StepError::Refused("the instance reports no VPC".to_string()))?
        .to_string();
    let enis: Vec<(String, Vec<String>)> = found
        .network_interfaces()
        .iter()
        .filter_map(|eni| {
            Some((
                eni.network_interface_id()?.to_string(),
                eni.groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
            ))
        })
        .collect();
    if enis.is_empty() {
        return Err(StepError::Refused(
            "the instance has no network interface".to_string(),
        ));
    }
    if !params.rungs.contains(&IsolationRung::SgSwap) {
        return Err(StepError::Refused(
            "this rule's isolate rungs do not include sg-swap, the only rung for an EC2 instance"
                .to_string(),
        ));
    }
    let endpoints = if params.keep_guardduty_agent {
        guardduty_endpoints(clients, &vpc_id, region).await?
    } else {
        Vec::new()
    };
    let swaps = sg_swap(clients, &vpc_id, &enis, params, &endpoints)
        .await
        .map_err(|e| match e {
            RungError::NotApplicable(d) => StepError::Refused(d),
            RungError::Failed(e) => e,
        })?;
    Ok(IsolateOutput::Contained {
        record: Box::new(ContainmentRecord {
            target: instance.instance_id.clone(),
            rung: Some(IsolationRung::SgSwap),
            attempts: vec![RungAttempt {
                rung: IsolationRung::SgSwap,
                result: "applied".to_string(),
                detail: format!("security groups swapped on {} ENI(s)", swaps.len()),
            }],
            eni_ids: enis.iter().map(|(id, _)| id.clone()).collect(),
            sg_swaps: swaps,
            ip: found.private_ip_address().map(str::to_string),
            vpc_id: Some(vpc_id),
            subnet_id: found.subnet_id().map(str::to_string),
            ..ContainmentRecord::default()
        }),
    })
}

/// Why a rung did not apply.
pub(super) enum RungError {
    /// It cannot work here (e.g. sg-swap on a requester-managed ENI); try the next.
    NotApplicable(String),
    /// It was tried and failed.
    Failed(StepError),
}

impl From<StepError> for RungError {
    fn from(error: StepError) -> Self {
        RungError::Failed(error)
    }
}
