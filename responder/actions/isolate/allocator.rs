//! Pure: which quarantine entries a task needs in an ACL, and which rule numbers they get.

use std::collections::BTreeSet;

use super::RuleRange;

/// The task's addresses as ACL CIDRs.
pub(super) struct TaskCidrs {
    pub(super) ipv4: String,
    pub(super) ipv6: Option<String>,
}

/// The entries one ACL needs for one task, before rule numbers are chosen.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct WantedEntry {
    pub(super) egress: bool,
    pub(super) cidr: String,
    pub(super) ipv6: bool,
    pub(super) allow: bool,
    pub(super) ports: Option<(i32, i32)>,
}

/// Pure: choose rule numbers for the wanted entries in one direction of one ACL.
/// Numbers come from the reserved range, below the first rule that is not ours, and the
/// ALLOW entries get the lower numbers so they are evaluated before the DENY.
pub(super) fn choose_numbers(
    used: &BTreeSet<i32>,
    first_foreign: i32,
    range: RuleRange,
    count: usize,
) -> Result<Vec<i32>, String> {
    let last = i32::from(range.last).min(first_foreign - 1);
    let free: Vec<i32> = (i32::from(range.first)..=last)
        .filter(|n| !used.contains(n))
        .take(count)
        .collect();
    if free.len() < count {
        let why = if first_foreign <= i32::from(range.last) {
            format!(" before the ACL's first own rule {first_foreign}")
        } else {
            String::new()
        };
        return Err(format!(
            "no room: {count} rule number(s) needed in the reserved range {}-{}{why}, {} free",
            range.first,
            range.last,
            free.len()
        ));
    }
    Ok(free)
}

pub(super) fn wanted_entries(cidrs: &TaskCidrs, allow_agent: bool) -> Vec<WantedEntry> {
    let mut wanted = Vec::new();
    for egress in [false, true] {
        if allow_agent {
            // Ingress: task → endpoint:443. Egress: endpoint → task on ephemeral ports.
            wanted.push(WantedEntry {
                egress,
                cidr: cidrs.ipv4.clone(),
                ipv6: false,
                allow: true,
                ports: Some(if egress { (1024, 65535) } else { (443, 443) }),
            });
        }
        wanted.push(WantedEntry {
            egress,
            cidr: cidrs.ipv4.clone(),
            ipv6: false,
            allow: false,
            ports: None,
        });
        if let Some(v6) = &cidrs.ipv6 {
            wanted.push(WantedEntry {
                egress,
                cidr: v6.clone(),
                ipv6: true,
                allow: false,
                ports: None,
            });
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_from_the_range_below_foreign_rules() {
        let used: BTreeSet<i32> = [1, 2, 100].into_iter().collect();
        let range = RuleRange { first: 1, last: 99 };
        assert_eq!(choose_numbers(&used, 100, range, 2).unwrap(), vec![3, 4]);
        // A foreign rule at 4 leaves only 3 free before it.
        let err = choose_numbers(&used, 4, range, 2).unwrap_err();
        assert!(err.contains("before the ACL's first own rule 4"), "{err}");
        let full: BTreeSet<i32> = (1..=99).collect();
        assert!(choose_numbers(&full, 100, range, 1)
            .unwrap_err()
            .contains("0 free"));
    }

    #[test]
    fn allow_entries_for_the_agent_and_ipv6_denies() {
        let cidrs = TaskCidrs {
            ipv4: "10.0.1.5/32".to_string(),
            ipv6: Some("2600:1f18::5/128".to_string()),
        };
        let wanted = wanted_entries(&cidrs, true);
        assert_eq!(wanted.len(), 6);
        let ingress_allow = wanted.iter().find(|w| !w.egress && w.allow).unwrap();
        assert_eq!(ingress_allow.ports, Some((443, 443)));
        let egress_allow = wanted.iter().find(|w| w.egress && w.allow).unwrap();
        assert_eq!(egress_allow.ports, Some((1024, 65535)));
        assert_eq!(wanted.iter().filter(|w| w.ipv6 && !w.allow).count(), 2);
        assert_eq!(wanted_entries(&cidrs, false).len(), 4);
    }
}
