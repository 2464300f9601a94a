//! One network ACL, one direction: which traffic it lets through for an address, and which
//! rule decided. Rules are taken lowest number first and the first match decides; whatever no
//! rule matched meets the default rule and is denied.

use std::net::IpAddr;

use ipnet::IpNet;

use super::traffic::{Traffic, TCP, UDP};
use super::{Acl, AclEntry};

/// What a rule's CIDR is compared with at a boundary: the source for inbound rules, the
/// destination for outbound rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// One address (the workload's own).
    Address(IpAddr),
    /// Any address of a range (a subnet, the internet): traffic counts as allowed when any
    /// address of the range gets it through, so a "cut" is never claimed for part of a range.
    Range(IpNet),
}

/// The result of evaluating one ACL direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Traffic that gets through (for some address of a range).
    pub allowed: Traffic,
    /// The first rule that let something through.
    pub allowed_by: Option<i32>,
    /// The first rule that denied something for the whole of the matched addresses.
    pub denied_by: Option<i32>,
}

enum Cover {
    All,
    Part,
    Nothing,
}

fn cover(rule: &IpNet, matched: &Matched) -> Cover {
    match matched {
        Matched::Address(ip) if rule.contains(ip) => Cover::All,
        Matched::Address(_) => Cover::Nothing,
        Matched::Range(net) if rule.contains(net) => Cover::All,
        // Two CIDR blocks either nest or are disjoint.
        Matched::Range(net) if net.contains(rule) => Cover::Part,
        Matched::Range(_) => Cover::Nothing,
    }
}

/// The traffic an entry matches. Where an entry is narrower than the model (an ICMP type, an
/// unknown protocol), an ALLOW counts as allowing the whole protocol and a DENY as denying
/// nothing: the model may say "open" for something that is cut, never the reverse.
pub(crate) fn entry_traffic(entry: &AclEntry, as_allow: bool) -> Traffic {
    let widest = |t: Traffic| if as_allow { t } else { Traffic::none() };
    match entry.protocol {
        -1 => Traffic::all(),
        p @ (6 | 17) => {
            let p = if p == 6 { TCP } else { UDP };
            match entry.ports {
                Some((from, to)) => Traffic::ports(p, from, to),
                None => Traffic::protocol(p),
            }
        }
        p @ (1 | 58) => match entry.icmp {
            Some((kind, _)) if kind != -1 => widest(Traffic::protocol(p as u8)),
            _ => Traffic::protocol(p as u8),
        },
        p => match u8::try_from(p) {
            Ok(p) => Traffic::protocol(p),
            Err(_) => widest(Traffic::all()),
        },
    }
}

/// Evaluate one direction of an ACL for the given addresses.
pub fn evaluate(acl: &Acl, egress: bool, matched: &Matched) -> Evaluation {
    let mut entries: Vec<&AclEntry> = acl.entries.iter().filter(|e| e.egress == egress).collect();
    entries.sort_by_key(|e| e.rule_number);
    let mut undecided = Traffic::all();
    let mut allowed = Traffic::none();
    let mut allowed_by = None;
    let mut denied_by = None;
    for entry in entries {
        match cover(&entry.cidr, matched) {
            Cover::Nothing => continue,
            Cover::All => {
                let traffic = entry_traffic(entry, entry.allow).intersect(&undecided);
                if traffic.is_empty() {
                    continue;
                }
                if entry.allow {
                    allowed = allowed.union(&traffic);
                    allowed_by.get_or_insert(entry.rule_number);
                } else {
                    denied_by.get_or_insert(entry.rule_number);
                }
                undecided = undecided.subtract(&traffic);
            }
            // Some addresses of the range match: an ALLOW lets their traffic through; a DENY
            // decides nothing for the others, which go on to later rules.
            Cover::Part if entry.allow => {
                let traffic = entry_traffic(entry, true).intersect(&undecided);
                if !traffic.is_empty() {
                    allowed = allowed.union(&traffic);
                    allowed_by.get_or_insert(entry.rule_number);
                }
            }
            Cover::Part => {}
        }
        if undecided.is_empty() {
            break;
        }
    }
    // What is left meets the default rule (denied), listed or not.
    if !undecided.is_empty() {
        denied_by.get_or_insert(super::DEFAULT_RULE);
    }
    Evaluation {
        allowed,
        allowed_by,
        denied_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::parse_cidr;

    pub(crate) fn entry(number: i32, egress: bool, allow: bool, cidr: &str) -> AclEntry {
        AclEntry {
            rule_number: number,
            egress,
            allow,
            protocol: -1,
            cidr: parse_cidr(cidr).unwrap(),
            ports: None,
            icmp: None,
        }
    }

    fn acl(entries: Vec<AclEntry>) -> Acl {
        Acl {
            id: "acl-1".into(),
            subnet_ids: vec!["subnet-1".into()],
            entries,
        }
    }

    fn task() -> Matched {
        Matched::Address("10.0.1.5".parse().unwrap())
    }

    #[test]
    fn lowest_number_first_and_the_first_match_decides() {
        let rules = acl(vec![
            entry(100, false, true, "0.0.0.0/0"),
            entry(1, false, false, "10.0.1.5/32"),
            entry(32767, false, false, "0.0.0.0/0"),
        ]);
        let result = evaluate(&rules, false, &task());
        assert!(result.allowed.is_empty());
        assert_eq!(result.denied_by, Some(1));
        // The owner's ALLOW ahead of the DENY wins.
        let owner_first = acl(vec![
            entry(1, false, true, "0.0.0.0/0"),
            entry(2, false, false, "10.0.1.5/32"),
        ]);
        let result = evaluate(&owner_first, false, &task());
        assert_eq!(result.allowed, Traffic::all());
        assert_eq!(result.allowed_by, Some(1));
    }

    #[test]
    fn a_port_rule_ahead_of_a_deny_leaves_that_port_open() {
        let mut https = entry(1, false, true, "0.0.0.0/0");
        https.protocol = 6;
        https.ports = Some((443, 443));
        let rules = acl(vec![https, entry(2, false, false, "10.0.1.5/32")]);
        let result = evaluate(&rules, false, &task());
        assert_eq!(result.allowed, Traffic::ports(TCP, 443, 443));
    }

    #[test]
    fn direction_family_and_missing_default() {
        let rules = acl(vec![entry(100, true, true, "0.0.0.0/0")]);
        assert!(
            evaluate(&rules, false, &task()).allowed.is_empty(),
            "inbound has no rule"
        );
        assert_eq!(
            evaluate(&rules, false, &task()).denied_by,
            Some(32767),
            "the default rule denies what nothing matched"
        );
        let v6 = Matched::Address("2600:1f18::5".parse().unwrap());
        assert!(
            evaluate(&rules, true, &v6).allowed.is_empty(),
            "an IPv4 rule never matches IPv6"
        );
    }

    #[test]
    fn a_range_is_open_when_any_part_of_it_is() {
        let rules = acl(vec![
            entry(1, true, false, "10.0.2.128/25"),
            entry(2, true, true, "10.0.2.0/24"),
        ]);
        let subnet = Matched::Range(parse_cidr("10.0.2.0/24").unwrap());
        let result = evaluate(&rules, true, &subnet);
        assert_eq!(
            result.allowed,
            Traffic::all(),
            "the lower half gets through"
        );
        let all_denied = acl(vec![
            entry(1, true, false, "10.0.0.0/16"),
            entry(2, true, true, "0.0.0.0/0"),
        ]);
        assert!(evaluate(&all_denied, true, &subnet).allowed.is_empty());
    }

    #[test]
    fn narrow_icmp_rules_never_make_a_cut_look_complete() {
        let mut ping_deny = entry(1, false, false, "0.0.0.0/0");
        ping_deny.protocol = 1;
        ping_deny.icmp = Some((8, -1));
        let rules = acl(vec![ping_deny, entry(2, false, true, "0.0.0.0/0")]);
        assert!(evaluate(&rules, false, &task()).allowed.contains(1, 0));
    }
}
