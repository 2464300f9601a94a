//! Any bytes through parse → match → plan with the default playbooks, then every rendering of
//! the decision (text, notification, JSON, metrics): never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use responder::event::Inbound;
use responder::playbook::{Mode, PlaybookSet};

static PLAYBOOKS: LazyLock<PlaybookSet> =
    LazyLock::new(|| PlaybookSet::defaults().expect("the built-in playbooks are valid"));

fuzz_target!(|data: &[u8]| {
    for ceiling in [Mode::Enforce, Mode::DryRun] {
        let (report, decided) = responder::decide(None, data, &PLAYBOOKS, ceiling);
        let _ = report.to_text();
        let _ = report.notification(None);
        let _ = report.to_json_line();
        let _ = report.emf_line(0);
        if let Some((Inbound::Finding { incident, .. }, decision)) = decided {
            let _ = responder::plan::for_account(decision, &incident.account_id, Some("111122223333"));
        }
    }
});
