//! Prints the numbers recorded in BENCHMARKS.md:
//! - how fast a finding is parsed and planned (the pure core), per event;
//! - containment latency and full response time against the local emulator (moto behind the
//!   AWS-fidelity proxy, loopback only) — what the playbook's critical path costs in calls;
//! - how many tasks one VPC can hold in quarantine at once under the default quota (20 entries
//!   per ACL, per direction and family, default rules included), with the network model's plan
//!   and with the placement used before it (a DENY in every ACL, the agent's ALLOW pair in the
//!   endpoint subnet's ACL);
//! - round trips: with every call delayed at the proxy, the depth of the containment's critical
//!   path and of the whole incident, cold and warm, for a Fargate task and an EC2 instance,
//!   beside the same calls made one after another (`BENCH_TIMELINE=1` prints each call's start
//!   and end);
//! - the release `bootstrap`, when built: start to ready, peak memory over 1,000 events, size;
//! - the storm: 1,000 findings, 8 invocations at once, throttled (`BENCH_NO_STORM=1` skips it);
//! - the process's peak resident memory.
//!
//! `cargo run --release --example bench` (or without `--release` for a debug build; say which).
//! Uses `RESPONDER_TEST_MOTO` when set, otherwise starts moto from `.venv-moto`.

use std::time::Instant;

use emulator::{fixture, proxy::FaultProxy, sdk_config, Moto};
use responder::actions::Clients;
use responder::playbook::{BlastRadius, MinHealthy, Mode, PlaybookSet};
use responder::respond::Responder;

const DECIDE_ROUNDS: usize = 2_000;
/// Fewer than a default-quota ACL can hold (18), so every finding is contained.
const TASKS: usize = 16;

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

    // 2. Quarantine capacity of one VPC, from the model (pure).
    for (layout, vpc) in capacity::layouts() {
        println!(
            "quarantine capacity, {layout}: {} tasks with the network model's plan, {} with the placement used before (of which truly cut: {})",
            capacity::planned(&vpc),
            capacity::before(&vpc),
            capacity::before_truly_cut(&vpc)
        );
    }

    // 3. End to end against the emulator.
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
    // Every task of the one service is contained: the guard and the breaker are set wide, and
    // their ledger calls are still made (and measured).
    let mut playbooks = playbooks;
    playbooks.guardrails.blast_radius = BlastRadius {
        min_healthy: MinHealthy::Count(0),
        max_per_service: u32::MAX,
    };
    playbooks.guardrails.breaker.max_containments = u32::MAX;
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
            .respond(None, event.as_bytes(), &format!("b{i}"), None, None)
            .await;
        let execution = first.report.execution.clone().unwrap_or_default();
        containment.extend(execution.containment_ms);
        total.push(execution.duration_ms);
        let again = responder
            .respond(None, event.as_bytes(), &format!("r{i}"), None, None)
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
    // 4. Round trips: every call delayed at the proxy, as on AWS.
    round_trips::run(&proxy, &sqs, &name, &responder.playbooks).await?;

    // 5. The release `bootstrap` as Lambda runs it: cold start, memory over 1,000 events, size.
    lambda::run(&proxy.endpoint, &fixture, &events).await?;

    // 6. A storm of findings, several invocations at once, throttled.
    if std::env::var_os("BENCH_NO_STORM").is_none() {
        storm::run(&proxy, &sqs, &name, &responder.playbooks).await?;
    }

    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak resident memory of this process: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

/// Issue 8's measure of the containment's critical path: with every AWS call delayed by
/// [`LATENCY`] at the proxy, (time from receipt to the last quarantine entry answered) /
/// [`LATENCY`], for a finding handled by a fresh responder (cold: new clients, empty caches)
/// and by one that has handled a finding before (warm). The baseline, from the same run: the
/// calls answered before that moment, which is what the path would cost made one after
/// another.
mod round_trips {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use emulator::fixture;
    use emulator::proxy::{Fault, FaultProxy, FaultRule};
    use responder::actions::Clients;
    use responder::playbook::PlaybookSet;
    use responder::respond::Responder;

    pub const LATENCY: Duration = Duration::from_millis(100);
    const ROUNDS: usize = 3;

    struct Trip {
        containment: f64,
        /// Round trips deep: the longest chain of calls, each made after the one before it was
        /// answered, that ends with the containing call (what the added latency multiplies on
        /// AWS, where concurrent calls are answered concurrently; the emulator answers one at
        /// a time, which stretches `containment`).
        depth: usize,
        /// The deepest chain of the whole incident.
        incident_depth: usize,
        sequential: usize,
        incident: f64,
        calls: BTreeMap<String, usize>,
    }

    /// One finding handled; `contained_by`: the call whose last answer completes containment
    /// (the last ACL entry; the second group swap of an instance).
    async fn trip(
        proxy: &FaultProxy,
        responder: &Responder,
        event: &str,
        id: &str,
        contained_by: &str,
    ) -> Result<Trip, Box<dyn std::error::Error>> {
        proxy.clear_calls();
        let started = Instant::now();
        let response = responder
            .respond(None, event.as_bytes(), id, None, None)
            .await;
        let ended = Instant::now();
        if response.report.finding_id.is_none() || response.retryable {
            return Err(format!("finding {id} not handled: {:?}", response.report.error).into());
        }
        let calls = proxy.calls();
        let containing = calls
            .iter()
            .filter(|c| c.operation == contained_by && c.status < 300)
            .max_by_key(|c| c.answered)
            .ok_or("the workload was not contained")?;
        let contained = containing.answered;
        // Each call's depth: one more than the deepest call answered before it was made.
        let mut by_arrival: Vec<&emulator::proxy::Call> = calls.iter().collect();
        by_arrival.sort_by_key(|c| c.received);
        let mut depths: Vec<(Instant, usize)> = Vec::with_capacity(by_arrival.len());
        let mut depth = 0;
        for call in by_arrival {
            let before = depths
                .iter()
                .filter(|(answered, _)| *answered <= call.received)
                .map(|(_, d)| *d)
                .max()
                .unwrap_or(0);
            depths.push((call.answered, before + 1));
            if std::ptr::eq(call, containing) {
                depth = before + 1;
            }
        }
        let mut per_api = BTreeMap::new();
        for call in &calls {
            // S3 calls are named by method and path: by method only, here.
            let api = match call.operation.split_once(' ') {
                Some((method, _)) if call.service == "s3" => format!("S3 {method}"),
                _ => call.operation.clone(),
            };
            *per_api.entry(api).or_insert(0) += 1;
        }
        let rtt = |at: Instant| at.duration_since(started).as_secs_f64() / LATENCY.as_secs_f64();
        if std::env::var_os("BENCH_TIMELINE").is_some() {
            for call in &calls {
                println!(
                    "  {:>5.2} {:>5.2} {}",
                    rtt(call.received),
                    rtt(call.answered),
                    call.operation
                );
            }
        }
        Ok(Trip {
            containment: rtt(contained),
            depth,
            incident_depth: depths.iter().map(|(_, d)| *d).max().unwrap_or(0),
            sequential: calls.iter().filter(|c| c.answered <= contained).count(),
            incident: rtt(ended),
            calls: per_api,
        })
    }

    /// The EC2 process-injection sample pointed at an instance of the fixture.
    fn instance_event(
        fixture: &fixture::Fixture,
        instance: &str,
        eni: &str,
        finding: &str,
    ) -> String {
        let mut event: serde_json::Value = serde_json::from_str(
            &include_str!("../events/ec2-instance-process-injection.json")
                .replace("111122223333", fixture::ACCOUNT),
        )
        .unwrap_or_default();
        event["account"] = fixture::ACCOUNT.into();
        event["detail"]["accountId"] = fixture::ACCOUNT.into();
        event["detail"]["id"] = finding.into();
        let details = &mut event["detail"]["resource"]["instanceDetails"];
        details["instanceId"] = instance.into();
        details["networkInterfaces"][0]["networkInterfaceId"] = eni.into();
        details["networkInterfaces"][0]["vpcId"] = fixture.vpc_id.as_str().into();
        event.to_string()
    }

    fn median(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    }

    pub async fn run(
        proxy: &FaultProxy,
        sqs: &aws_sdk_sqs::Client,
        name: &str,
        playbooks: &PlaybookSet,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let config = emulator::sdk_config(&proxy.endpoint, "us-east-1");
        let clients = Clients::from_sdk_config(&config);
        let name = format!("{name}rt");
        let fixture = fixture::seed_fargate(&clients, sqs, &name, 2 * ROUNDS).await?;
        fixture::add_guardduty_endpoint(&clients, &fixture).await?;
        proxy.configure(|c| {
            c.rules
                .push(FaultRule::new("*", Fault::Latency(LATENCY), None))
        });
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut tasks = fixture.tasks.iter().enumerate();
        for round in 0..ROUNDS {
            // A new responder: new clients (connections), nothing cached.
            let responder = Responder {
                clients: Clients::from_sdk_config(&config),
                config: fixture.config(),
                playbooks: playbooks.clone(),
            };
            for list in [&mut cold, &mut warm] {
                let (i, task) = tasks.next().ok_or("too few tasks")?;
                let id = format!("{name}f{i:0>20}");
                let event = fixture::miner_finding_for(&fixture, task, &id).to_string();
                let contained_by = "CreateNetworkAclEntry";
                list.push(
                    trip(
                        proxy,
                        &responder,
                        &event,
                        &format!("rt{round}-{i}"),
                        contained_by,
                    )
                    .await?,
                );
            }
        }
        // EC2 instances: the two-step security-group swap.
        proxy.configure(|c| c.rules.clear());
        let mut instances = Vec::new();
        for _ in 0..2 * ROUNDS {
            instances.push(fixture::launch_instance(&clients, &fixture).await?);
        }
        proxy.configure(|c| {
            c.rules
                .push(FaultRule::new("*", Fault::Latency(LATENCY), None))
        });
        let mut ec2_cold = Vec::new();
        let mut ec2_warm = Vec::new();
        let mut launched = instances.iter().enumerate();
        for round in 0..ROUNDS {
            let responder = Responder {
                clients: Clients::from_sdk_config(&config),
                config: fixture.config(),
                playbooks: playbooks.clone(),
            };
            for list in [&mut ec2_cold, &mut ec2_warm] {
                let (i, (instance, eni)) = launched.next().ok_or("too few instances")?;
                let event = instance_event(&fixture, instance, eni, &format!("{name}i{i:0>20}"));
                list.push(
                    trip(
                        proxy,
                        &responder,
                        &event,
                        &format!("rti{round}-{i}"),
                        "ModifyNetworkInterfaceAttribute",
                    )
                    .await?,
                );
            }
        }
        proxy.configure(|c| c.rules.clear());
        for (label, trips, what) in [
            ("Fargate, cold", &cold, "last quarantine entry"),
            ("Fargate, warm", &warm, "last quarantine entry"),
            ("EC2, cold", &ec2_cold, "second group swap"),
            ("EC2, warm", &ec2_warm, "second group swap"),
        ] {
            println!(
                "round trips, {label} (every call +{} ms, median of {ROUNDS}): receipt to {what} {:.1} RTT, {} deep (baseline, the same calls one after another: {}); whole incident {:.1} RTT, {} deep, {} calls",
                LATENCY.as_millis(),
                median(trips.iter().map(|t| t.containment).collect()),
                median(trips.iter().map(|t| t.depth as f64).collect()),
                median(trips.iter().map(|t| t.sequential as f64).collect()),
                median(trips.iter().map(|t| t.incident).collect()),
                median(trips.iter().map(|t| t.incident_depth as f64).collect()),
                median(trips.iter().map(|t| t.calls.values().sum::<usize>() as f64).collect()),
            );
        }
        if let Some(last) = warm.last() {
            let per_api: Vec<String> = last
                .calls
                .iter()
                .map(|(op, n)| format!("{op} {n}"))
                .collect();
            println!("calls per API, one warm incident: {}", per_api.join(", "));
        }
        Ok(())
    }
}

/// Issue 8's storm: 1,000 findings in a burst for 100 tasks of 10 services (one VPC each):
/// every finding republished (its `count` growing) and its first delivery duplicated, in a
/// shuffled order, handled by [`CONTAINERS`] responders at once (as Lambda's concurrent
/// execution environments would, each with its own clients and memory), the proxy throttling
/// one call in ten and delaying the rest. A response that asks for a retry is delivered again
/// (Lambda retries a failed asynchronous invocation twice). Then, with the faults off: every
/// task contained once (its finding's isolate step done, exactly one set of entries for its
/// address), no entry twice, an audit record for every delivery.
mod storm {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use emulator::fixture;
    use emulator::proxy::{Fault, FaultProxy, FaultRule};
    use responder::actions::ledger::{Ledger, StepStatus};
    use responder::actions::Clients;
    use responder::playbook::PlaybookSet;
    use responder::respond::Responder;

    const SERVICES: usize = 10;
    const TASKS_PER_SERVICE: usize = 10;
    /// Deliveries per finding: the first twice (a duplicate), then republished 8 times.
    const DELIVERIES: usize = 10;
    /// Invocations running at once.
    pub const CONTAINERS: usize = 8;
    const LATENCY: Duration = Duration::from_millis(20);
    /// Lambda's retries of a failed asynchronous invocation.
    const RETRIES: u32 = 2;

    struct Delivery {
        finding: String,
        event: String,
        attempt: u32,
    }

    #[derive(Default)]
    struct Tally {
        handled: usize,
        retried: usize,
        given_up: Vec<String>,
    }

    pub async fn run(
        proxy: &FaultProxy,
        sqs: &aws_sdk_sqs::Client,
        name: &str,
        playbooks: &PlaybookSet,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let config = emulator::sdk_config(&proxy.endpoint, "us-east-1");
        let clients = Clients::from_sdk_config(&config);
        let mut fixtures = Vec::new();
        for service in 0..SERVICES {
            let fixture = fixture::seed_fargate(
                &clients,
                sqs,
                &format!("{name}st{service}"),
                TASKS_PER_SERVICE,
            )
            .await?;
            fixtures.push(fixture);
        }
        let deployment = fixtures[0].config();
        // Every task of every service is to be contained: guard and breaker wide (their
        // conditional writes are still made, under contention).
        let playbooks = playbooks.clone();
        let mut queue = VecDeque::new();
        let mut findings = Vec::new();
        for (s, fixture) in fixtures.iter().enumerate() {
            for (t, task) in fixture.tasks.iter().enumerate() {
                let finding = format!("{name}st{s}t{t:0>20}");
                let mut event = fixture::miner_finding_for(fixture, task, &finding);
                for n in 0..DELIVERIES {
                    event["detail"]["service"]["count"] = (n.max(1)).into();
                    queue.push_back(Delivery {
                        finding: finding.clone(),
                        event: event.to_string(),
                        attempt: 0,
                    });
                }
                findings.push((finding, fixture.vpc_id.clone(), task.ip.clone()));
            }
        }
        // A fixed shuffle: republished and duplicated deliveries of one finding interleave
        // with everyone else's.
        let mut order: Vec<Delivery> = queue.into_iter().collect();
        let mut state = 0x9e37_79b9_u64;
        for i in (1..order.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            order.swap(i, (state >> 33) as usize % (i + 1));
        }
        let queue = Arc::new(Mutex::new(order.into_iter().collect::<VecDeque<_>>()));
        let tally = Arc::new(Mutex::new(Tally::default()));
        proxy.clear_calls();
        proxy.configure(|c| {
            c.rules.push(FaultRule::share("*", Fault::Throttle, 10));
            c.rules
                .push(FaultRule::new("*", Fault::Latency(LATENCY), None));
        });
        let started = Instant::now();
        let workers: Vec<_> = (0..CONTAINERS)
            .map(|container| {
                let responder = Responder {
                    clients: Clients::from_sdk_config(&config),
                    config: deployment.clone(),
                    playbooks: playbooks.clone(),
                };
                let queue = Arc::clone(&queue);
                let tally = Arc::clone(&tally);
                tokio::spawn(async move {
                    let mut n = 0;
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                        let Some(delivery) = next else { break };
                        n += 1;
                        let id = format!("storm-{container}-{n}");
                        let response = responder
                            .respond(None, delivery.event.as_bytes(), &id, None, None)
                            .await;
                        if let Ok(mut tally) = tally.lock() {
                            tally.handled += 1;
                            if response.retryable {
                                if delivery.attempt < RETRIES {
                                    tally.retried += 1;
                                    if let Ok(mut q) = queue.lock() {
                                        q.push_back(Delivery {
                                            attempt: delivery.attempt + 1,
                                            ..delivery
                                        });
                                    }
                                } else {
                                    tally.given_up.push(delivery.finding);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
        let wall = started.elapsed();
        let calls = proxy.calls();
        proxy.configure(|c| c.rules.clear());
        let throttled = calls
            .iter()
            .filter(|c| c.injected.as_deref() == Some("throttled"))
            .count();
        let (handled, retried, given_up) = match tally.lock() {
            Ok(t) => (t.handled, t.retried, t.given_up.clone()),
            Err(_) => return Err("tally poisoned".into()),
        };

        // What AWS and the ledger hold now.
        let table = deployment.ledger_table.clone().ok_or("no table")?;
        let ledger = Ledger::new(clients.dynamodb.clone(), table, "storm-check", 1);
        let mut contained = 0;
        let mut audits = 0;
        let mut not_contained = Vec::new();
        for (finding, _, _) in &findings {
            audits += ledger.audits(finding).await?.len();
            match ledger.get_step(finding, "step#isolate").await? {
                Some(record) if record.status == StepStatus::Done => contained += 1,
                other => not_contained.push(format!(
                    "{finding}: {}",
                    other.map(|r| r.status.name()).unwrap_or("no record")
                )),
            }
        }
        let mut entries_per_address: BTreeMap<String, usize> = BTreeMap::new();
        let mut doubled = Vec::new();
        for fixture in &fixtures {
            let acls =
                responder::actions::workload::describe_acls(&clients, &fixture.vpc_id).await?;
            for acl in &acls {
                let mut seen = BTreeMap::new();
                for entry in acl.entries() {
                    let number = entry.rule_number().unwrap_or(0);
                    if !(1..=99).contains(&number) {
                        continue;
                    }
                    let cidr = entry
                        .cidr_block()
                        .or(entry.ipv6_cidr_block())
                        .unwrap_or("?")
                        .to_string();
                    let key = (
                        entry.egress().unwrap_or(false),
                        cidr.clone(),
                        entry.rule_action().map(|a| a.as_str().to_string()),
                    );
                    *seen.entry(key).or_insert(0) += 1;
                    *entries_per_address.entry(cidr).or_insert(0) += 1;
                }
                for ((egress, cidr, action), count) in seen {
                    if count > 1 {
                        doubled.push(format!(
                            "{} {} {cidr} {action:?} x{count}",
                            acl.network_acl_id().unwrap_or("?"),
                            if egress { "egress" } else { "ingress" }
                        ));
                    }
                }
            }
        }
        let per_task: Vec<usize> = findings
            .iter()
            .map(|(_, _, ip)| {
                entries_per_address
                    .get(&format!("{ip}/32"))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        println!(
            "storm: {} deliveries of {} findings ({} services, one VPC each), {CONTAINERS} invocations at once, 1 call in 10 throttled, +{} ms per call: {:.1} s wall, {} calls ({:.1} per delivery, {throttled} throttled), {retried} redelivered after asking for a retry, {} given up",
            findings.len() * DELIVERIES,
            findings.len(),
            SERVICES,
            LATENCY.as_millis(),
            wall.as_secs_f64(),
            calls.len(),
            calls.len() as f64 / handled.max(1) as f64,
            given_up.len()
        );
        println!(
            "storm, after: {contained} of {} tasks contained; entries per task address: min {}, max {}; entries made twice: {}; audit records {audits} for {handled} invocations",
            findings.len(),
            per_task.iter().min().copied().unwrap_or(0),
            per_task.iter().max().copied().unwrap_or(0),
            doubled.len(),
        );
        for line in not_contained.iter().chain(doubled.iter()).take(10) {
            println!("  {line}");
        }
        Ok(())
    }
}

/// The release `bootstrap` (built by `cargo build --release -p guardduty-responder`), driven
/// through a minimal Lambda Runtime API on loopback: process start to its first request for an
/// event (the Runtime API's `next`: playbooks compiled, clients built), over several starts;
/// its peak resident memory after 1,000 events (the sample events in turn, against the
/// emulator); and its size.
mod lambda {
    use std::collections::VecDeque;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};

    const STARTS: usize = 11;
    const EVENTS: usize = 1_000;

    #[derive(Default)]
    struct Api {
        first_next: Option<Instant>,
        queue: VecDeque<(String, String)>,
        answered: usize,
    }

    async fn serve(
        state: Arc<Mutex<Api>>,
        request: Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let _ = request.into_body().collect().await;
        if path == "/2018-06-01/runtime/invocation/next" {
            if let Ok(mut api) = state.lock() {
                api.first_next.get_or_insert_with(Instant::now);
            }
            loop {
                let next = state.lock().ok().and_then(|mut api| api.queue.pop_front());
                if let Some((id, event)) = next {
                    let deadline = (chrono::Utc::now().timestamp_millis() + 60_000).to_string();
                    return Response::builder()
                        .header("Lambda-Runtime-Aws-Request-Id", id)
                        .header("Lambda-Runtime-Deadline-Ms", deadline)
                        .header(
                            "Lambda-Runtime-Invoked-Function-Arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:responder",
                        )
                        .body(Full::new(Bytes::from(event)))
                        .unwrap_or_default();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if path.starts_with("/2018-06-01/runtime/invocation/") {
            if let Ok(mut api) = state.lock() {
                api.answered += 1;
            }
        }
        Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    }

    fn peak_rss_kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub async fn run(
        endpoint: &str,
        fixture: &emulator::fixture::Fixture,
        events: &[Vec<u8>],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let binary =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/bootstrap");
        let Ok(meta) = std::fs::metadata(&binary) else {
            println!("release bootstrap: not built (cargo build --release --locked -p guardduty-responder)");
            return Ok(());
        };
        let start = |api: &str| {
            Command::new(&binary)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("AWS_LAMBDA_RUNTIME_API", api)
                .env("AWS_LAMBDA_FUNCTION_NAME", "responder")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("RESPONDER_EVIDENCE_BUCKET", &fixture.bucket)
                .env("RESPONDER_LEDGER_TABLE", &fixture.table)
                .env("RESPONDER_TOPIC_ARN", &fixture.topic_arn)
                .env("RUST_LOG", "off")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let mut starts = Vec::new();
        for _ in 0..STARTS {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let api = listener.local_addr()?.to_string();
            let state = Arc::new(Mutex::new(Api::default()));
            let server = emulator::serve_loopback(listener, state.clone(), serve);
            let began = Instant::now();
            let mut child = start(&api)?;
            let ready = loop {
                if let Some(at) = state.lock().ok().and_then(|a| a.first_next) {
                    break Some(at);
                }
                if began.elapsed() > Duration::from_secs(10) {
                    break None;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            let _ = child.kill();
            let _ = child.wait();
            server.abort();
            starts.push(
                ready
                    .ok_or("the bootstrap never asked for an event")?
                    .duration_since(began),
            );
        }
        starts.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;

        // 1,000 events through one process.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?.to_string();
        let state = Arc::new(Mutex::new(Api::default()));
        if let Ok(mut queue) = state.lock() {
            for n in 0..EVENTS {
                let event = String::from_utf8_lossy(&events[n % events.len()]).to_string();
                queue.queue.push_back((format!("rss-{n}"), event));
            }
        }
        let server = emulator::serve_loopback(listener, state.clone(), serve);
        let began = Instant::now();
        let mut child = start(&api)?;
        while state.lock().map(|a| a.answered).unwrap_or(EVENTS) < EVENTS
            && began.elapsed() < Duration::from_secs(600)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = began.elapsed();
        let rss = peak_rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        server.abort();
        println!(
            "release bootstrap ({:.1} MB): start to first request for an event, {STARTS} starts: median {:.1} ms (min {:.1}, max {:.1}); {EVENTS} events (the samples in turn) in {:.1} s, peak resident memory {}",
            meta.len() as f64 / 1e6,
            ms(starts[STARTS / 2]),
            ms(starts[0]),
            ms(starts[STARTS - 1]),
            wall.as_secs_f64(),
            rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "unknown".to_string()),
        );
        Ok(())
    }
}

/// Quarantine capacity of a VPC, computed with the network model.
mod capacity {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use responder::network::quarantine::{plan, with_entries, Limits, PlannedEntry};
    use responder::network::reach::{open_classes, reachability, DestinationClass};
    use responder::network::*;

    fn net(text: &str) -> ipnet::IpNet {
        parse_cidr(text).unwrap_or_else(|| ipnet::IpNet::V4(Default::default()))
    }

    fn allow_all(number: i32) -> Vec<AclEntry> {
        let mut entries = Vec::new();
        for egress in [false, true] {
            entries.push(AclEntry {
                rule_number: number,
                egress,
                allow: true,
                protocol: -1,
                cidr: net("0.0.0.0/0"),
                ports: None,
                icmp: None,
            });
            entries.push(AclEntry {
                rule_number: DEFAULT_RULE,
                egress,
                allow: false,
                protocol: -1,
                cidr: net("0.0.0.0/0"),
                ports: None,
                icmp: None,
            });
        }
        entries
    }

    fn subnet(id: &str, cidr: &str) -> Subnet {
        Subnet {
            id: id.into(),
            cidr: cidr.parse().ok(),
            ipv6_cidrs: Vec::new(),
        }
    }

    /// (name, VPC): the default-ACL layout and the fixture's (a custom private ACL, the public
    /// subnet on the default ACL), each with a NAT gateway and the GuardDuty endpoint in the
    /// second private subnet.
    pub fn layouts() -> Vec<(&'static str, Vpc)> {
        let base = Vpc {
            vpc_id: "vpc".into(),
            subnets: vec![
                subnet("app-a", "10.0.1.0/24"),
                subnet("app-b", "10.0.2.0/24"),
                subnet("public", "10.0.0.0/24"),
            ],
            route_tables: vec![RouteTable {
                id: "rtb".into(),
                main: true,
                subnet_ids: Vec::new(),
                routes: vec![Route {
                    destination: Destination::Cidr(net("0.0.0.0/0")),
                    target: RouteTarget::NatGateway("nat".into()),
                }],
            }],
            acls: Vec::new(),
            nat_gateways: vec![NatGateway {
                id: "nat".into(),
                subnet_id: "public".into(),
            }],
            endpoints: vec![Endpoint {
                id: "vpce-gd".into(),
                service: "guardduty-data".into(),
                interface: true,
                subnet_ids: vec!["app-b".into()],
                network_interface_ids: Vec::new(),
                guardduty_managed: false,
            }],
            transit_attachments: Vec::new(),
            load_balancer_enis: Vec::new(),
        };
        let mut shared = base.clone();
        shared.acls = vec![Acl {
            id: "default".into(),
            subnet_ids: vec!["app-a".into(), "app-b".into(), "public".into()],
            entries: allow_all(100),
        }];
        let mut fixture = base;
        fixture.acls = vec![
            Acl {
                id: "private".into(),
                subnet_ids: vec!["app-a".into(), "app-b".into()],
                entries: allow_all(100),
            },
            Acl {
                id: "default".into(),
                subnet_ids: vec!["public".into()],
                entries: allow_all(100),
            },
        ];
        vec![
            ("every subnet on the default ACL", shared),
            ("private ACL + default ACL", fixture),
        ]
    }

    fn task(n: u32) -> Workload {
        Workload {
            ipv4: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 1, 10)) + n),
            ipv6: None,
            subnet_id: "app-a".into(),
            public_ip: None,
        }
    }

    /// Tasks quarantined one after another until the planner refuses (quota or numbers).
    pub fn planned(vpc: &Vpc) -> usize {
        let limits = Limits {
            first: 1,
            last: 99,
            quota: 20,
            agent_acls: BTreeSet::new(),
        };
        let mut vpc = vpc.clone();
        let mut n = 0;
        while let Ok(plan) = plan(&vpc, &task(n), &limits) {
            vpc = with_entries(&vpc, &plan.entries);
            n += 1;
        }
        n as usize
    }

    /// The earlier placement: a DENY per direction in every ACL that guards a subnet, and the
    /// agent's ALLOW pair in the ACL guarding the endpoint's subnet, until AWS's quota (default
    /// rules included) refuses.
    fn before_entries(vpc: &Vpc, n: u32, number: i32) -> Vec<PlannedEntry> {
        let host = ipnet::IpNet::from(std::net::IpAddr::V4(task(n).ipv4));
        let mut entries = Vec::new();
        for acl in &vpc.acls {
            let agent = acl.subnet_ids.iter().any(|s| s == "app-b");
            for egress in [false, true] {
                if agent {
                    entries.push(PlannedEntry {
                        acl_id: acl.id.clone(),
                        rule_number: number,
                        egress,
                        allow: true,
                        cidr: host,
                        protocol: 6,
                        ports: Some(if egress { (1024, 65535) } else { (443, 443) }),
                    });
                }
                entries.push(PlannedEntry {
                    acl_id: acl.id.clone(),
                    rule_number: number + 1,
                    egress,
                    allow: false,
                    cidr: host,
                    protocol: -1,
                    ports: None,
                });
            }
        }
        entries
    }

    fn fits(vpc: &Vpc) -> bool {
        vpc.acls.iter().all(|acl| {
            [false, true]
                .iter()
                .all(|&egress| acl.entries.iter().filter(|e| e.egress == egress).count() <= 20)
        })
    }

    pub fn before(vpc: &Vpc) -> usize {
        let mut vpc = vpc.clone();
        let mut n = 0;
        loop {
            let next = with_entries(&vpc, &before_entries(&vpc, n, 1 + 2 * n as i32));
            if !fits(&next) {
                return n as usize;
            }
            vpc = next;
            n += 1;
        }
    }

    /// Of those, how many the model finds cut (everything but same-subnet and DNS).
    pub fn before_truly_cut(vpc: &Vpc) -> usize {
        let count = before(vpc) as u32;
        let mut state = vpc.clone();
        for n in 0..count {
            state = with_entries(&state, &before_entries(&state, n, 1 + 2 * n as i32));
        }
        let accepted = [
            DestinationClass::SameSubnet,
            DestinationClass::Dns,
            DestinationClass::LinkLocalServices,
        ];
        (0..count)
            .filter(|&n| {
                open_classes(&reachability(&state, &task(n), &BTreeSet::new()), &accepted)
                    .is_empty()
            })
            .count()
    }
}
