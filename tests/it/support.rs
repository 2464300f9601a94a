//! Test harness for the emulator tests: one moto server per test run (or the one the test
//! command started, `RESPONDER_TEST_MOTO`), and per test a fault proxy, a fresh fixture with
//! its own names, and a responder pointed at the proxy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use emulator::fixture::{self, Fixture};
use emulator::proxy::FaultProxy;
use emulator::{sdk_config, Moto};
use responder::actions::evidence::EvidenceOutput;
use responder::actions::isolate::{ContainmentRecord, IsolateOutput};
use responder::actions::release::ReleaseOutput;
use responder::actions::Clients;
use responder::actions::StepOutput;
use responder::network::reach::Reachability;
use responder::network::Workload;
use responder::playbook::{Mode, PlaybookSet};
use responder::report::{Outcome, Report};
use responder::respond::Responder;
use responder::respond::{ReleaseResult, ReleaseSummary};
use serde_json::Value;

static BINARIES: OnceLock<Result<HashMap<String, PathBuf>, String>> = OnceLock::new();
static MOTO: OnceLock<Result<(String, Option<Moto>), String>> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The repository root (this package lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The path of one of the workspace's binaries (`responder`, `bootstrap`), built once per test
/// run. They belong to other packages, so Cargo does not build them for this test binary; this
/// asks Cargo (already finished compiling the tests, so the build lock is free), which makes
/// them current and says where they are.
pub fn binary(name: &str) -> PathBuf {
    let built = BINARIES.get_or_init(|| {
        let output = Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args(["build", "--quiet", "--message-format=json"])
            .args(["--bin", "responder", "--bin", "bootstrap"])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo build of the binaries failed ({})",
                output.status
            ));
        }
        let mut paths = HashMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(message) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let (Some(name), Some(path)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                paths.insert(name.to_string(), PathBuf::from(path));
            }
        }
        Ok(paths)
    });
    match built {
        Ok(paths) => paths
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("cargo built no binary named {name}")),
        Err(e) => panic!("{e}"),
    }
}

/// The emulator endpoint, starting moto once for the whole test binary if needed.
pub fn moto_endpoint() -> String {
    let started = MOTO.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("RESPONDER_TEST_MOTO") {
            return Ok((endpoint, None));
        }
        // Started on its own runtime: the server outlives any one test's runtime.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(Moto::start())
                .map(|m| (m.endpoint.clone(), Some(m)))
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("moto start panicked".to_string()))
    });
    match started {
        Ok((endpoint, _)) => endpoint.clone(),
        Err(e) => panic!("the AWS emulator is needed for this test: {e}"),
    }
}

pub struct World {
    pub proxy: FaultProxy,
    pub clients: Clients,
    pub sqs: aws_sdk_sqs::Client,
    pub fixture: Fixture,
    pub responder: Responder,
    pub name: String,
}

impl World {
    pub async fn new(tasks: usize) -> World {
        World::with_playbooks(tasks, PlaybookSet::defaults().unwrap()).await
    }

    pub async fn with_playbooks(tasks: usize, playbooks: PlaybookSet) -> World {
        World::with_layout(tasks, playbooks, &fixture::Layout::default()).await
    }

    /// A world whose VPC is laid out as given.
    pub async fn with_layout(
        tasks: usize,
        playbooks: PlaybookSet,
        layout: &fixture::Layout,
    ) -> World {
        let endpoint = moto_endpoint();
        emulator::pin_task_states(&endpoint).await.unwrap();
        let proxy = FaultProxy::start(&endpoint).await.unwrap();
        let config = sdk_config(&proxy.endpoint, "us-east-1");
        let clients = Clients::from_sdk_config(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let name = format!(
            "t{}x{}",
            std::process::id() % 10_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let fixture = fixture::seed_fargate_with(&clients, &sqs, &name, tasks, layout)
            .await
            .unwrap();
        proxy.clear_calls();
        let responder = Responder {
            clients: clients.clone(),
            config: fixture.config(),
            playbooks,
        };
        World {
            proxy,
            clients,
            sqs,
            fixture,
            responder,
            name,
        }
    }

    /// The blast-radius guard and the breaker out of the way, for tests about something else
    /// that contain several tasks of one service.
    pub fn without_guard(mut self) -> World {
        use responder::playbook::{BlastRadius, Breaker, MinHealthy};
        let guardrails = &mut self.responder.playbooks.guardrails;
        guardrails.blast_radius = BlastRadius {
            min_healthy: MinHealthy::Count(0),
            max_per_service: u32::MAX,
        };
        guardrails.breaker = Breaker {
            max_containments: u32::MAX,
            window_minutes: 1,
        };
        self
    }

    /// ECS's Task State Change event for task `task` having stopped.
    pub fn stopped_event(&self, task: usize) -> Value {
        let arn = &self.fixture.tasks[task].arn;
        serde_json::json!({
            "version": "0", "id": format!("e-stop-{task}"), "detail-type": "ECS Task State Change",
            "source": "aws.ecs", "account": fixture::ACCOUNT, "time": "2026-11-26T12:00:00Z",
            "region": "us-east-1", "resources": [arn],
            "detail": {
                "clusterArn": self.fixture.cluster_arn, "taskArn": arn,
                "group": format!("service:{}", self.fixture.service_name),
                "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
                "stopCode": "TaskFailedToStart", "stoppedReason": "Task failed ELB health checks",
            }
        })
    }

    pub fn finding_id(&self, n: usize) -> String {
        format!("{}f{n:0>28}", self.name)
    }

    /// The crypto-mining sample pointed at task `index`.
    pub fn miner_event(&self, task: usize, finding: usize) -> Value {
        fixture::miner_finding_for(
            &self.fixture,
            &self.fixture.tasks[task],
            &self.finding_id(finding),
        )
    }

    /// The EC2 process-injection sample pointed at an instance of the fixture.
    pub fn instance_event(&self, instance_id: &str, eni_id: &str, finding: usize) -> Value {
        // The sample's account everywhere (its ARNs too), as a finding of this account has it.
        let mut event: Value = serde_json::from_str(
            &include_str!("../../events/ec2-instance-process-injection.json")
                .replace("111122223333", fixture::ACCOUNT),
        )
        .unwrap();
        event["account"] = fixture::ACCOUNT.into();
        event["detail"]["accountId"] = fixture::ACCOUNT.into();
        event["detail"]["id"] = self.finding_id(finding).into();
        let details = &mut event["detail"]["resource"]["instanceDetails"];
        details["instanceId"] = instance_id.into();
        details["networkInterfaces"][0]["networkInterfaceId"] = eni_id.into();
        details["networkInterfaces"][0]["vpcId"] = self.fixture.vpc_id.as_str().into();
        event
    }

    /// The environment that points the CLI at this world (through the proxy).
    pub fn cli_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.proxy.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("RESPONDER_EVIDENCE_BUCKET", self.fixture.bucket.as_str()),
            ("RESPONDER_LEDGER_TABLE", self.fixture.table.as_str()),
            ("RESPONDER_TOPIC_ARN", self.fixture.topic_arn.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The bytes of an S3 object.
    pub async fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.clients
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    /// The security groups an ENI has now.
    pub async fn eni_groups(&self, eni_id: &str) -> Vec<String> {
        let output = self
            .clients
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni_id)
            .send()
            .await
            .unwrap();
        output.network_interfaces()[0]
            .groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect()
    }

    pub async fn respond(&self, event: &Value) -> Report {
        self.respond_as(
            event,
            &format!("inv-{}", COUNTER.fetch_add(1, Ordering::SeqCst)),
            None,
        )
        .await
    }

    pub async fn respond_as(
        &self,
        event: &Value,
        invocation: &str,
        ceiling: Option<Mode>,
    ) -> Report {
        self.respond_until(event, invocation, ceiling, None)
            .await
            .report
    }

    /// As Lambda invokes: with a deadline, which bounds the invocation's claims.
    pub async fn respond_until(
        &self,
        event: &Value,
        invocation: &str,
        ceiling: Option<Mode>,
        deadline: Option<std::time::SystemTime>,
    ) -> responder::respond::Response {
        self.responder
            .respond(
                Some("test".into()),
                event.to_string().as_bytes(),
                invocation,
                ceiling,
                deadline,
            )
            .await
    }

    /// The oracle: what the network model says task `index` can reach, from a fresh describe of
    /// the emulator's state (entries counted for nothing; AWS's rules decide).
    pub async fn reachability(&self, index: usize) -> Vec<Reachability> {
        let vpc = responder::actions::isolate::describe_vpc(&self.clients, &self.fixture.vpc_id)
            .await
            .unwrap();
        let task = &self.fixture.tasks[index];
        let workload = Workload {
            ipv4: task.ip.parse().unwrap(),
            ipv6: None,
            subnet_id: task.subnet_id.clone(),
            public_ip: None,
        };
        responder::network::reach::reachability(&vpc, &workload, &Default::default())
    }

    /// How many entries the fixture VPC's ACLs hold in the responder's rule range (1–99).
    pub async fn quarantine_entries(&self) -> usize {
        self.acl_state()
            .await
            .iter()
            .filter(|e| e["rule"].as_i64().is_some_and(|r| (1..=99).contains(&r)))
            .count()
    }

    /// Every entry of every ACL in the fixture VPC, as comparable JSON.
    pub async fn acl_state(&self) -> Vec<Value> {
        let acls = responder::actions::workload::describe_acls(&self.clients, &self.fixture.vpc_id)
            .await
            .unwrap();
        let mut entries: Vec<Value> = acls
            .iter()
            .flat_map(|acl| {
                let id = acl.network_acl_id().unwrap_or_default().to_string();
                acl.entries().iter().map(move |e| {
                    serde_json::json!({
                        "acl": id, "rule": e.rule_number(), "egress": e.egress(),
                        "action": e.rule_action().map(|a| a.as_str().to_string()),
                        "cidr": e.cidr_block(), "protocol": e.protocol(),
                    })
                })
            })
            .collect();
        entries.sort_by_key(|e| e.to_string());
        entries
    }

    /// An attempt that claimed `finding`'s isolate step for `rule`, wrote `intents` down and
    /// is about to die (what it then does is up to the test). Its claims end with its
    /// deadline, one second from now, which is returned.
    pub async fn dying_isolation(
        &self,
        finding: &str,
        rule: &str,
        intents: &[Value],
    ) -> std::time::SystemTime {
        use responder::actions::ledger::{Claim, Ledger, StepLog};
        let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        let dead = Ledger::new(
            self.clients.dynamodb.clone(),
            self.fixture.table.clone(),
            "died",
            1,
        )
        .with_deadline(Some(deadline));
        let claim = dead.claim(finding, "step#isolate", rule).await.unwrap();
        assert!(
            matches!(&claim, Claim::Acquired { written_down, .. } if written_down.is_empty()),
            "{claim:?}"
        );
        StepLog {
            ledger: &dead,
            finding_id: finding,
            step_key: "step#isolate",
            written_down: &[],
        }
        .intend(intents)
        .await
        .unwrap();
        deadline
    }

    /// A DENY-all entry for `cidr`, made directly (as a dying attempt made it).
    pub async fn deny_entry(&self, rule_number: i32, egress: bool, cidr: &str) {
        self.clients
            .ec2
            .create_network_acl_entry()
            .network_acl_id(&self.fixture.private_acl_id)
            .rule_number(rule_number)
            .egress(egress)
            .protocol("-1")
            .rule_action(aws_sdk_ec2::types::RuleAction::Deny)
            .cidr_block(cidr)
            .send()
            .await
            .unwrap();
    }

    /// The world's ledger as an invocation named `owner` would use it (to read what
    /// responses recorded, or to claim as another invocation).
    pub fn ledger_as(&self, owner: &str) -> responder::actions::ledger::Ledger {
        responder::actions::ledger::Ledger::new(
            self.clients.dynamodb.clone(),
            self.fixture.table.clone(),
            owner,
            400,
        )
    }

    pub fn count_calls(&self, operation: &str) -> usize {
        self.proxy
            .calls()
            .iter()
            .filter(|c| c.operation == operation && c.status < 300)
            .count()
    }

    pub async fn notifications(&self) -> Vec<emulator::demo::Notification> {
        let mut all = Vec::new();
        loop {
            let batch = emulator::demo::read_all_notifications(&self.sqs, &self.fixture.queue_url)
                .await
                .unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }
}

pub fn outcome<'a>(report: &'a Report, action: &str) -> &'a Outcome {
    report
        .steps
        .iter()
        .find(|s| s.action.name() == action)
        .and_then(|s| s.outcome.as_ref())
        .unwrap_or_else(|| panic!("no outcome for {action} in {}", report.to_json_line()))
}

pub fn is_done(report: &Report, action: &str) -> bool {
    matches!(outcome(report, action), Outcome::Done { .. })
}

/// The typed output of a step done in this invocation.
pub fn output<'a>(report: &'a Report, action: &str) -> &'a StepOutput {
    match outcome(report, action) {
        Outcome::Done { detail, .. } => detail,
        other => panic!("{action} not done: {other:?}"),
    }
}

/// What `isolate` did, when it contained the workload.
pub fn isolation(report: &Report) -> &ContainmentRecord {
    match output(report, "isolate") {
        StepOutput::Isolate(IsolateOutput::Contained { record }) => record,
        other => panic!("not contained: {other:?}"),
    }
}

/// What a retryable `isolate` failure kept on record (its partial output), with the error and
/// why the record says it is incomplete; panics unless the step failed so.
pub fn retryable_isolation(report: &Report) -> (&ContainmentRecord, &str, &str) {
    match outcome(report, "isolate") {
        Outcome::Failed {
            retryable: true,
            partial: Some(StepOutput::Isolate(IsolateOutput::Incomplete { record, why })),
            error,
        } => (record, error, why),
        other => panic!("isolate should fail retryably with its changes on record: {other:?}"),
    }
}

/// What `evidence` stored.
pub fn evidence(report: &Report) -> &EvidenceOutput {
    match output(report, "evidence") {
        StepOutput::Evidence(stored) => stored,
        other => panic!("{other:?}"),
    }
}

/// What a release of one finding undid.
pub fn released(summary: &ReleaseSummary) -> &ReleaseOutput {
    match summary.findings.first().map(|f| &f.result) {
        Some(ReleaseResult::Released { detail, .. }) => detail,
        other => panic!("not released: {other:?}"),
    }
}

pub fn skipped_reason(report: &Report, action: &str) -> String {
    match outcome(report, action) {
        Outcome::Skipped { reason, .. } => reason.clone(),
        other => panic!("{action} not skipped: {other:?}"),
    }
}

/// The keys the README's "JSON output" section names (every `backticked` word in it).
fn documented_json_keys() -> std::collections::BTreeSet<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("### JSON output")
        .expect("the README documents the JSON output");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n#").map_or(section.len(), |e| e + 3)];
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every key of `value` is snake_case (map keys that are data excepted), and every key a
/// reader meets at the report's and the commands' own levels is documented in the README.
/// Typed action outputs and parameters (`detail`, `partial`, `params`) are checked for the
/// convention only: their fields are the actions' own, documented where the action is.
pub fn assert_json_keys_follow_the_readme(value: &Value) {
    const DATA_MAPS: &[&str] = &["env", "tags", "extra"];
    const TYPED: &[&str] = &[
        "detail",
        "partial",
        "earlier",
        "params",
        "containers",
        "network_interfaces",
        "ecs_outlook",
    ];
    fn walk(
        value: &Value,
        path: &str,
        documented_scope: bool,
        documented: &std::collections::BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let at = format!("{path}.{key}");
                    let snake = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !snake {
                        problems.push(format!("{at}: not snake_case"));
                    }
                    if documented_scope && !documented.contains(key) {
                        problems.push(format!("{at}: not in the README's JSON output section"));
                    }
                    if DATA_MAPS.contains(&key.as_str()) {
                        continue;
                    }
                    let scope = documented_scope && !TYPED.contains(&key.as_str());
                    walk(child, &at, scope, documented, problems);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(
                        item,
                        &format!("{path}[]"),
                        documented_scope,
                        documented,
                        problems,
                    );
                }
            }
            _ => {}
        }
    }
    let documented = documented_json_keys();
    let mut problems = Vec::new();
    walk(value, "", true, &documented, &mut problems);
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Wait until claims that end at `deadline` have run out, as Lambda's retry finds them.
pub async fn until_lease_over(deadline: std::time::SystemTime) {
    let over = deadline
        + responder::actions::ledger::LEASE_MARGIN
        + std::time::Duration::from_millis(1100);
    if let Ok(wait) = over.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}
