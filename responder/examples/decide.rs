//! The pure core's throughput on one core: every sample event in `events/` parsed, matched
//! against the default playbooks and planned, with its report built (what the handler does
//! before its first AWS call), many rounds. Prints per-event time and events per second, and
//! the parse alone. No I/O in the loop.
//!
//! `cargo run --release --locked --example decide -p guardduty-responder` (built beside the
//! release `bootstrap`, so it reuses its compiled dependencies). Say which build a number is.

use std::time::Instant;

use responder::playbook::{Mode, PlaybookSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Fewer rounds under an instruction counter (`valgrind --tool=callgrind`, this machine has
    // no hardware counters): DECIDE_ROUNDS.
    let rounds: usize = match std::env::var("DECIDE_ROUNDS") {
        Ok(rounds) => rounds.parse()?,
        Err(_) => 20_000,
    };
    let playbooks = PlaybookSet::defaults()?;
    let mut events = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../events"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            events.push(std::fs::read(path)?);
        }
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let count = rounds * events.len();
    let mut acted = 0usize;
    for _ in 0..rounds / 10 {
        for event in &events {
            std::hint::black_box(responder::decide(None, event, &playbooks, Mode::DryRun));
        }
    }
    let started = Instant::now();
    for _ in 0..rounds {
        for event in &events {
            let (report, _) = responder::decide(None, event, &playbooks, Mode::DryRun);
            acted += usize::from(report.decision == responder::report::DecisionKind::Act);
        }
    }
    let decided = started.elapsed();
    // For a profiler or an instruction count (`valgrind --tool=callgrind`): the decide loop
    // alone.
    if std::env::var_os("DECIDE_ONLY").is_some() {
        println!(
            "decide ({profile}) alone: {:.2} µs/event",
            decided.as_secs_f64() * 1e6 / count as f64
        );
        return Ok(());
    }
    let started = Instant::now();
    for _ in 0..rounds {
        for event in &events {
            let _ = std::hint::black_box(responder::event::parse_event(event));
        }
    }
    let parsed = started.elapsed();
    // The same-run baseline: every event through a JSON value first (the general path).
    let started = Instant::now();
    for _ in 0..rounds {
        for event in &events {
            let _ = std::hint::black_box(
                serde_json::from_slice::<serde_json::Value>(event)
                    .map(responder::event::parse_value),
            );
        }
    }
    let through_value = started.elapsed();
    let started = Instant::now();
    for _ in 0..rounds {
        for event in &events {
            let _ = std::hint::black_box(serde_json::from_slice::<serde_json::Value>(event));
        }
    }
    let json = started.elapsed();
    let rate = |elapsed: std::time::Duration| count as f64 / elapsed.as_secs_f64();
    println!(
        "decide ({profile}, {} sample events x {rounds}, {} acted on): {:.2} µs/event, {:.0} events/s; parse alone {:.2} µs/event, {:.0} events/s (through a JSON value, the general path: {:.2} µs); the JSON text into a value alone {:.2} µs",
        events.len(),
        acted / rounds,
        decided.as_secs_f64() * 1e6 / count as f64,
        rate(decided),
        parsed.as_secs_f64() * 1e6 / count as f64,
        rate(parsed),
        through_value.as_secs_f64() * 1e6 / count as f64,
        json.as_secs_f64() * 1e6 / count as f64,
    );
    Ok(())
}
