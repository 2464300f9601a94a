//! What the blast-radius guard and the breaker allow, from the numbers. Pure: the counts come
//! from ECS, the holders from the ledger ([`crate::actions::guard`]).

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
