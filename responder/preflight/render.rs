//! The preflight report as text for a terminal, Markdown for a ticket, JSON for tools.

use std::fmt::Write as _;

use super::{Check, Lockdown, Outcome, Preflight, ServiceVerdict};
use crate::network::reach::Verdict;

fn outcome_words(outcome: &Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Contained { entries } => ("CONTAINED", format!("{entries} quarantine entries")),
        Outcome::NotContained { open } => ("NOT CONTAINED", open.join("; ")),
        Outcome::Refused { why } => ("REFUSED", why.clone()),
        Outcome::NotPlanned { why } => ("no containment", why.clone()),
    }
}

fn lockdown_words(lockdown: Lockdown) -> &'static str {
    match lockdown {
        Lockdown::Available => "available",
        Lockdown::NotTagged => "exclusive, not tagged incident-responder:lockdown=allowed",
        Lockdown::Shared => "groups shared beyond the service",
    }
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Cut => "cut",
        Verdict::Open => "OPEN",
        Verdict::NoPath => "no path",
    }
}

fn check_word(check: &Check) -> &'static str {
    if check.ok {
        "ok"
    } else {
        "NO"
    }
}

/// Text for a terminal.
pub fn text(report: &Preflight) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== Services: what containment would achieve for a task of each"
    );
    for s in &report.services {
        let (word, detail) = outcome_words(&s.outcome);
        let _ = writeln!(out, "{}  {word}  {detail}", s.service);
        let _ = writeln!(
            out,
            "  rule {}  steps {}  rung {}  lockdown {}",
            s.rule.as_deref().unwrap_or("-"),
            if s.steps.is_empty() {
                "-".to_string()
            } else {
                s.steps.join(", ")
            },
            s.rung.as_deref().unwrap_or("-"),
            lockdown_words(s.lockdown)
        );
        if !s.assessed.is_empty() {
            let _ = writeln!(out, "  assessed {}", s.assessed);
        }
        for row in &s.reachability {
            let _ = writeln!(
                out,
                "    {:<7} {:<27} {}",
                verdict_word(row.verdict),
                row.class.name(),
                row.reason
            );
        }
    }
    let _ = writeln!(out, "\n== Capacity");
    for v in &report.vpcs {
        let _ = writeln!(
            out,
            "{}  {} at once  GuardDuty endpoint {}  agent kept while quarantined {}",
            v.vpc_id,
            crate::report::count(v.tasks_at_once, "task", "tasks"),
            if v.guardduty_endpoint { "yes" } else { "NO" },
            if v.agent_path_kept { "yes" } else { "no" }
        );
        for acl in &v.acls {
            let _ = writeln!(
                out,
                "  {}  {}  IPv4 in {}/{} out {}/{}  IPv6 in {} out {}",
                acl.acl_id,
                crate::report::count(acl.subnets, "subnet", "subnets"),
                acl.ipv4_used.0,
                acl.quota,
                acl.ipv4_used.1,
                acl.quota,
                acl.ipv6_used.0,
                acl.ipv6_used.1
            );
        }
    }
    let _ = writeln!(out, "\n== GuardDuty coverage");
    for c in &report.guardduty.checks {
        let _ = writeln!(out, "  {:<3} {}: {}", check_word(c), c.what, c.detail);
    }
    let _ = writeln!(out, "\n== What defeats containment");
    if report.defeaters.is_empty() {
        let _ = writeln!(out, "  nothing found");
    }
    for d in &report.defeaters {
        let _ = writeln!(out, "  {}: {}\n    fix: {}", d.subject, d.problem, d.fix);
    }
    let _ = writeln!(out, "\n== The responder");
    for c in &report.responder {
        let _ = writeln!(out, "  {:<3} {}: {}", check_word(c), c.what, c.detail);
    }
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn service_rows(out: &mut String, services: &[ServiceVerdict]) {
    let _ = writeln!(
        out,
        "| Service | Would be | Rule | Steps | Lockdown | Detail |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for s in services {
        let (word, detail) = outcome_words(&s.outcome);
        let _ = writeln!(
            out,
            "| {} | **{word}** | {} | {} | {} | {} |",
            cell(&s.service),
            cell(s.rule.as_deref().unwrap_or("-")),
            cell(&s.steps.join(", ")),
            lockdown_words(s.lockdown),
            cell(&detail)
        );
    }
}

/// Markdown for a ticket.
pub fn markdown(report: &Preflight) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Containment preflight\n");
    let _ = writeln!(
        out,
        "{}\n",
        if report.all_contained_as_intended() {
            "Every service whose rule contains would be contained."
        } else {
            "**Some services would not be contained as their rules intend.**"
        }
    );
    service_rows(&mut out, &report.services);
    for s in report
        .services
        .iter()
        .filter(|s| !s.reachability.is_empty())
    {
        let _ = writeln!(out, "\n### {}\n", cell(&s.service));
        let _ = writeln!(out, "| Destination | After quarantine | Why |");
        let _ = writeln!(out, "| --- | --- | --- |");
        for row in &s.reachability {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                row.class.name(),
                verdict_word(row.verdict),
                cell(&row.reason)
            );
        }
    }
    let _ = writeln!(out, "\n### Capacity\n");
    let _ = writeln!(
        out,
        "| VPC | Tasks at once | GuardDuty endpoint | Agent kept |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for v in &report.vpcs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            v.vpc_id, v.tasks_at_once, v.guardduty_endpoint, v.agent_path_kept
        );
    }
    let _ = writeln!(out, "\n### GuardDuty coverage and the responder\n");
    let _ = writeln!(out, "| Check | | Detail |");
    let _ = writeln!(out, "| --- | --- | --- |");
    for c in report.guardduty.checks.iter().chain(&report.responder) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            cell(&c.what),
            check_word(c),
            cell(&c.detail)
        );
    }
    if !report.defeaters.is_empty() {
        let _ = writeln!(out, "\n### What defeats containment\n");
        for d in &report.defeaters {
            let _ = writeln!(
                out,
                "- **{}**: {} *Fix:* {}",
                cell(&d.subject),
                d.problem,
                d.fix
            );
        }
    }
    out
}

/// JSON for tools.
pub fn json(report: &Preflight) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
        + "\n"
}
