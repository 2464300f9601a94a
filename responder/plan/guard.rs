//! What the blast-radius guard and the breaker allow, from the numbers. Pure: the counts come
//! from ECS, the holders from the ledger ([`crate::actions::guard`]).

use std::collections::BTreeMap;

use crate::playbook::{BlastRadius, Breaker};

/// How many of a service's tasks may be in containment at once, and why that many: never more
/// than `max_per_service`, and never so many that fewer than `min_healthy` stay uncontained.
/// `running` counts every task ECS runs for the service, contained ones included.
pub fn service_cap(radius: &BlastRadius, desired: u32, running: u32) -> (u32, String) {
    let keep = radius.min_healthy.tasks(desired);
    let by_health = running.saturating_sub(keep);
    let cap = radius.max_per_service.min(by_health);
    let why = format!(
        "{running} running, {desired} desired; min_healthy {} keeps {keep} uncontained, max_per_service {}: at most {cap} contained at once",
        radius.min_healthy, radius.max_per_service
    );
    (cap, why)
}

/// The breaker's window a moment falls in (windows aligned to the Unix epoch), and when it
/// ends, in epoch seconds.
pub fn breaker_window(breaker: &Breaker, now_epoch: i64) -> (i64, i64) {
    let length = i64::from(breaker.window_minutes.max(1)) * 60;
    let window = now_epoch.div_euclid(length);
    (window, (window + 1) * length)
}

/// A task on a container instance, as the guard weighs cutting the instance off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The task.
    pub task_arn: String,
    /// Its service, when its group is `service:NAME`.
    pub service: Option<String>,
    /// It has a network interface of its own (`awsvpc`): cutting the instance's leaves it be.
    pub own_interface: bool,
    /// It, or its service, carries the exemption tag.
    pub exempt: bool,
}

/// What ECS says of a service with tasks on the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCount {
    /// Its desired count.
    pub desired: u32,
    /// Its running count.
    pub running: u32,
}

/// A slot of a service's blast radius that cutting the instance takes for a task sharing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The task cut with the instance.
    pub task_arn: String,
    /// Its service.
    pub service: String,
    /// How many of the service's tasks may be contained at once.
    pub cap: u32,
}

/// What cutting a container instance off cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCut {
    /// In words, for the record.
    pub summary: String,
    /// The slots to take (in the ledger, each conditional) before the cut, beside the
    /// compromised task's own.
    pub slots: Vec<Slot>,
}

/// May the container instance be cut off the network, given the tasks that share its
/// network? The blast-radius rules apply to every service with tasks there, as if each of
/// those tasks were contained (they are: one network), and a task of no service counts as a
/// one-task service. `Ok` says what is cut and which slots that takes (tasks contained by
/// other findings are counted when those slots are taken); `Err` says why not.
pub fn instance_cut(
    radius: &BlastRadius,
    instance: &str,
    compromised_task: &str,
    tenants: &[Tenant],
    services: &BTreeMap<String, ServiceCount>,
) -> Result<InstanceCut, String> {
    let sharing: Vec<&Tenant> = tenants.iter().filter(|t| !t.own_interface).collect();
    let others: Vec<&Tenant> = sharing
        .iter()
        .copied()
        .filter(|t| t.task_arn != compromised_task)
        .collect();
    // Every reason, not the first: the person reading it decides what to move.
    let mut held = Vec::new();
    for exempt in others.iter().filter(|t| t.exempt) {
        held.push(format!(
            "task {} on instance {instance} is exempt (or its service is), and shares the instance's network",
            exempt.task_arn
        ));
    }
    let mut per_service: BTreeMap<&str, u32> = BTreeMap::new();
    for tenant in &sharing {
        match (&tenant.service, tenant.task_arn == compromised_task) {
            (Some(service), _) => *per_service.entry(service.as_str()).or_default() += 1,
            (None, true) => {}
            (None, false) => {
                let (cap, why) = service_cap(radius, 1, 1);
                if cap == 0 {
                    held.push(format!(
                        "task {} on instance {instance} belongs to no service and shares the instance's network: cutting the instance stops its work and nothing replaces it (as a one-task service: {why})",
                        tenant.task_arn
                    ));
                }
            }
        }
    }
    let mut caps: BTreeMap<&str, u32> = BTreeMap::new();
    for (service, on_instance) in &per_service {
        let Some(count) = services.get(*service) else {
            held.push(format!(
                "service {service} has {on_instance} task(s) sharing instance {instance}'s network, and ECS did not describe the service: its other tasks cannot be counted"
            ));
            continue;
        };
        let (cap, why) = service_cap(radius, count.desired, count.running);
        caps.insert(service, cap);
        if *on_instance > cap {
            held.push(format!(
                "service {service} has {on_instance} task(s) sharing instance {instance}'s network; {why}"
            ));
        }
    }
    if !held.is_empty() {
        return Err(held.join("; "));
    }
    let mut cut = format!(
        "instance {instance} cut off: {} sharing its network",
        crate::report::count(sharing.len(), "task", "tasks")
    );
    if !per_service.is_empty() {
        let services: Vec<String> = per_service
            .iter()
            .map(|(s, n)| format!("{n} of service {s}"))
            .collect();
        cut.push_str(&format!(" ({})", services.join(", ")));
    }
    let own = tenants.len() - sharing.len();
    if own > 0 {
        cut.push_str(&format!(
            "; {} with network interfaces of their own keep them, but not the ECS agent",
            crate::report::count(own, "task", "tasks")
        ));
    }
    let slots = others
        .iter()
        .filter_map(|t| {
            let service = t.service.as_ref()?;
            Some(Slot {
                task_arn: t.task_arn.clone(),
                service: service.clone(),
                cap: caps.get(service.as_str()).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(InstanceCut {
        summary: cut,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::MinHealthy;

    fn radius(min_healthy: MinHealthy, max_per_service: u32) -> BlastRadius {
        BlastRadius {
            min_healthy,
            max_per_service,
        }
    }

    #[test]
    fn the_cap_keeps_the_minimum_and_the_maximum() {
        let default = BlastRadius::default();
        // 50% of 4 is 2 kept; two may go, and max_per_service allows two.
        assert_eq!(service_cap(&default, 4, 4).0, 2);
        // 50% of 3 rounds up to 2, as ECS rounds minimumHealthyPercent: one may go.
        assert_eq!(service_cap(&default, 3, 3).0, 1);
        // A one-task service keeps its task unless a rule says min_healthy: 0.
        assert_eq!(service_cap(&default, 1, 1).0, 0);
        assert_eq!(service_cap(&radius(MinHealthy::Count(0), 2), 1, 1).0, 1);
        // Two wanted, one running (a deployment, a crash): 1 must stay, none may go.
        assert_eq!(service_cap(&default, 2, 1).0, 0);
        assert_eq!(service_cap(&radius(MinHealthy::Count(1), 5), 1, 1).0, 0);
        assert_eq!(service_cap(&radius(MinHealthy::Count(0), 1), 10, 10).0, 1);
        assert_eq!(service_cap(&radius(MinHealthy::Percent(100), 9), 3, 5).0, 2);
        let (_, why) = service_cap(&default, 4, 3);
        assert!(why.contains("3 running, 4 desired"), "{why}");
    }

    fn tenant(task: &str, service: Option<&str>) -> Tenant {
        Tenant {
            task_arn: task.to_string(),
            service: service.map(str::to_string),
            own_interface: false,
            exempt: false,
        }
    }

    fn counts(entries: &[(&str, u32, u32)]) -> BTreeMap<String, ServiceCount> {
        entries
            .iter()
            .map(|(s, desired, running)| {
                (
                    s.to_string(),
                    ServiceCount {
                        desired: *desired,
                        running: *running,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn an_instance_is_cut_only_within_every_services_blast_radius() {
        let default = BlastRadius::default();
        let web = counts(&[("web", 4, 4)]);
        // Alone on the instance: its own service decides (4 running, 2 may go).
        let alone = [tenant("t1", Some("web"))];
        let cut = instance_cut(&default, "i-1", "t1", &alone, &web);
        assert!(
            cut.as_ref()
                .is_ok_and(|c| c.summary.contains("1 task") && c.slots.is_empty()),
            "{cut:?}"
        );
        // Two of web's tasks there: still within 2 of 4.
        let two = [tenant("t1", Some("web")), tenant("t2", Some("web"))];
        // The other one takes a slot of web's, counted with any taken by other findings.
        let cut = instance_cut(&default, "i-1", "t1", &two, &web).unwrap();
        assert_eq!(
            cut.slots,
            [Slot {
                task_arn: "t2".to_string(),
                service: "web".to_string(),
                cap: 2
            }]
        );
        // Three of web's four: more than the radius allows.
        let three = [
            tenant("t1", Some("web")),
            tenant("t2", Some("web")),
            tenant("t3", Some("web")),
        ];
        let held = instance_cut(&default, "i-1", "t1", &three, &web);
        assert!(
            held.as_ref()
                .is_err_and(|e| e.contains("service web has 3")),
            "{held:?}"
        );
        // A co-tenant service with one task keeps it (min_healthy 50% of 1 is 1).
        let api = counts(&[("web", 4, 4), ("api", 1, 1)]);
        let shared = [tenant("t1", Some("web")), tenant("a1", Some("api"))];
        assert!(instance_cut(&default, "i-1", "t1", &shared, &api).is_err());
        // ...unless that task has an interface of its own (awsvpc): the instance's cut leaves it.
        let mut own = shared.clone();
        own[1].own_interface = true;
        let cut = instance_cut(&default, "i-1", "t1", &own, &api);
        assert!(
            cut.as_ref().is_ok_and(|c| c.summary.contains("keep them")),
            "{cut:?}"
        );
        // A task of no service there is a one-task service: kept unless min_healthy is 0.
        let job = [tenant("t1", Some("web")), tenant("j1", None)];
        assert!(instance_cut(&default, "i-1", "t1", &job, &web).is_err());
        let none_kept = radius(MinHealthy::Count(0), 2);
        assert!(instance_cut(&none_kept, "i-1", "t1", &job, &web).is_ok());
        // An exempt co-tenant is never cut, whatever the numbers.
        let mut exempt = two.clone();
        exempt[1].exempt = true;
        assert!(instance_cut(&none_kept, "i-1", "t1", &exempt, &web).is_err());
        // A service ECS did not describe cannot be counted.
        let unknown = [tenant("t1", Some("web")), tenant("x1", Some("gone"))];
        assert!(instance_cut(&none_kept, "i-1", "t1", &unknown, &web).is_err());
    }

    #[test]
    fn windows_are_aligned_to_the_clock() {
        let breaker = Breaker {
            max_containments: 3,
            window_minutes: 60,
        };
        assert_eq!(breaker_window(&breaker, 3_599), (0, 3_600));
        assert_eq!(breaker_window(&breaker, 3_600), (1, 7_200));
    }
}
