//! Prints the numbers recorded in BENCHMARKS.md:
//! - how fast a finding is parsed and planned (the pure core), per event;
//! - containment latency and full response time against the local emulator (moto behind the
//!   AWS-fidelity proxy, loopback only) — what the playbook's critical path costs in calls;
//! - the process's peak resident memory.
//!
//! `cargo run --release --example bench` (or without `--release` for a debug build; say which).
//! Uses `RESPONDER_TEST_MOTO` when set, otherwise starts moto from `.venv-moto`.

use std::time::Instant;

use emulator::{fixture, proxy::FaultProxy, sdk_config, Moto};
use responder::actions::Clients;
use responder::playbook::{Mode, PlaybookSet};
use responder::respond::Responder;

const DECIDE_ROUNDS: usize = 2_000;
const TASKS: usize = 20;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("guardduty-responder benchmark ({profile} build)");

    // 1. The pure core: parse + plan every sample event.
    let playbooks = PlaybookSet::defaults()?;
    let mut events = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../events"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            events.push(std::fs::read(path)?);
        }
    }
    let started = Instant::now();
    let mut acted = 0usize;
    for _ in 0..DECIDE_ROUNDS {
        for event in &events {
            let (report, _) = responder::decide(None, event, &playbooks, Mode::DryRun);
            acted += usize::from(report.decision == responder::report::DecisionKind::Act);
        }
    }
    let decided = DECIDE_ROUNDS * events.len();
    let elapsed = started.elapsed();
    println!(
        "decide: {decided} events in {:.0} ms = {:.1} µs/event ({} acted on)",
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1e6 / decided as f64,
        acted
    );

    // 2. End to end against the emulator.
    let (endpoint, _moto) = match std::env::var("RESPONDER_TEST_MOTO") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let moto = Moto::start().await?;
            (moto.endpoint.clone(), Some(moto))
        }
    };
    emulator::pin_task_states(&endpoint).await?;
    let proxy = FaultProxy::start(&endpoint).await?;
    let config = sdk_config(&proxy.endpoint, "us-east-1");
    let clients = Clients::from_sdk_config(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = format!("bench{}", std::process::id());
    let fixture = fixture::seed_fargate(&clients, &sqs, &name, TASKS).await?;
    fixture::add_guardduty_endpoint(&clients, &fixture).await?;
    let responder = Responder {
        clients,
        config: fixture.config(),
        playbooks,
    };
    let mut containment = Vec::new();
    let mut total = Vec::new();
    let mut replay = Vec::new();
    proxy.clear_calls();
    for (i, task) in fixture.tasks.iter().enumerate() {
        let event =
            fixture::miner_finding_for(&fixture, task, &format!("{name}f{i:0>20}")).to_string();
        let first = responder
            .respond(None, event.as_bytes(), &format!("b{i}"), None)
            .await;
        let execution = first.report.execution.clone().unwrap_or_default();
        containment.extend(execution.containment_ms);
        total.push(execution.duration_ms);
        let again = responder
            .respond(None, event.as_bytes(), &format!("r{i}"), None)
            .await;
        replay.push(again.report.execution.map(|e| e.duration_ms).unwrap_or(0));
    }
    let calls = proxy.calls().len() as f64 / TASKS as f64;
    for list in [&mut containment, &mut total, &mut replay] {
        list.sort_unstable();
    }
    println!(
        "containment latency (receipt to quarantine) over {TASKS} Fargate findings: p50 {} ms, p95 {} ms, max {} ms",
        percentile(&containment, 50.0),
        percentile(&containment, 95.0),
        containment.last().copied().unwrap_or(0)
    );
    println!(
        "full response (isolate, evidence, tag, notify, audit): p50 {} ms, p95 {} ms, max {} ms",
        percentile(&total, 50.0),
        percentile(&total, 95.0),
        total.last().copied().unwrap_or(0)
    );
    println!(
        "replay of the same finding (ledger says done): p50 {} ms, p95 {} ms",
        percentile(&replay, 50.0),
        percentile(&replay, 95.0)
    );
    println!("AWS calls per finding (first response and one replay): {calls:.1}");
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak resident memory of this process: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}
