//! Prints the numbers recorded in BENCHMARKS.md:
//! - how fast a finding is parsed and planned (the pure core), per event;
//! - containment latency and full response time against the local emulator (moto behind the
//!   AWS-fidelity proxy, loopback only) — what the playbook's critical path costs in calls;
//! - how many tasks one VPC can hold in quarantine at once under the default quota (20 entries
//!   per ACL, per direction and family, default rules included), with the network model's plan
//!   and with the placement used before it (a DENY in every ACL, the agent's ALLOW pair in the
//!   endpoint subnet's ACL);
//! - round trips: with every call delayed at the proxy, the depth of the containment's critical
//!   path and of the whole incident, cold and warm, beside the same calls made one after
//!   another (`BENCH_TIMELINE=1` prints each call's start and end);
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
        sequential: usize,
        incident: f64,
        calls: BTreeMap<String, usize>,
    }

    async fn trip(
        proxy: &FaultProxy,
        responder: &Responder,
        event: &str,
        id: &str,
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
        let contained = calls
            .iter()
            .filter(|c| c.operation == "CreateNetworkAclEntry" && c.status < 300)
            .map(|c| c.answered)
            .max()
            .ok_or("no quarantine entry was made")?;
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
            sequential: calls.iter().filter(|c| c.answered <= contained).count(),
            incident: rtt(ended),
            calls: per_api,
        })
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
                list.push(trip(proxy, &responder, &event, &format!("rt{round}-{i}")).await?);
            }
        }
        proxy.configure(|c| c.rules.clear());
        for (label, trips) in [("cold", &cold), ("warm", &warm)] {
            println!(
                "round trips, {label} (every call +{} ms, median of {ROUNDS}): receipt to last quarantine entry {:.1} RTT (baseline, the same calls one after another: {}); whole incident {:.1} RTT, {} calls",
                LATENCY.as_millis(),
                median(trips.iter().map(|t| t.containment).collect()),
                median(trips.iter().map(|t| t.sequential as f64).collect()),
                median(trips.iter().map(|t| t.incident).collect()),
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
