//! The real `bootstrap` binary, driven through a small Lambda Runtime API of our own on
//! 127.0.0.1, acting on the emulator.

use std::collections::{HashMap, VecDeque};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use emulator::proxy::{Fault, FaultRule};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::World;

#[derive(Default)]
struct Api {
    /// Invocations waiting: the request id and the payload as Lambda would send it.
    queue: VecDeque<(String, String)>,
    results: HashMap<String, (String, Value)>,
    init_error: Option<Value>,
}

/// The Runtime API endpoints a runtime uses: next, response, error, init error.
struct RuntimeApi {
    address: String,
    state: Arc<Mutex<Api>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RuntimeApi {
    async fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(Api::default()));
        let task = emulator::serve_loopback(listener, state.clone(), serve);
        RuntimeApi {
            address,
            state,
            task,
        }
    }

    fn invoke(&self, id: &str, event: Value) {
        self.invoke_raw(id, event.to_string());
    }

    /// A payload given as text (JSON no `Value` would hold, such as 10,000 nested arrays).
    fn invoke_raw(&self, id: &str, payload: String) {
        self.state
            .lock()
            .unwrap()
            .queue
            .push_back((id.to_string(), payload));
    }

    /// Wait for the runtime's answer: ("response" | "error", body).
    async fn result(&self, id: &str) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(result) = self.state.lock().unwrap().results.get(id).cloned() {
                return result;
            }
            assert!(Instant::now() < deadline, "no answer for invocation {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(
    state: Arc<Mutex<Api>>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if path == "/2018-06-01/runtime/invocation/next" {
        // Long-poll like the real API: hold the request until there is an event.
        loop {
            let next = state.lock().unwrap().queue.pop_front();
            if let Some((id, event)) = next {
                let deadline = (chrono::Utc::now().timestamp_millis() + 60_000).to_string();
                return Response::builder()
                    .header("Lambda-Runtime-Aws-Request-Id", id)
                    .header("Lambda-Runtime-Deadline-Ms", deadline)
                    .header(
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:responder",
                    )
                    .header(
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000",
                    )
                    .body(Full::new(Bytes::from(event)))
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut state = state.lock().unwrap();
    if path == "/2018-06-01/runtime/init/error" {
        state.init_error = Some(body);
    } else if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
        let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
        state
            .results
            .insert(id.to_string(), (kind.to_string(), body));
    }
    Response::builder()
        .status(202)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn bootstrap(api: &RuntimeApi, world: &World, extra: &[(&str, &str)]) -> Child {
    let mut command = Command::new(crate::support::binary("bootstrap"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "responder")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/responder")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL", &world.proxy.endpoint)
        .env("RESPONDER_EVIDENCE_BUCKET", &world.fixture.bucket)
        .env("RESPONDER_LEDGER_TABLE", &world.fixture.table)
        .env("RESPONDER_TOPIC_ARN", &world.fixture.topic_arn)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

fn stop(mut child: Child) -> Vec<Value> {
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("stdout is JSON lines only: {line}"))
        })
        .collect()
}

#[tokio::test]
async fn the_lambda_contains_releases_and_reports_through_the_runtime_api() {
    let world = World::new(2).await;
    let api = RuntimeApi::start().await;
    let child = bootstrap(&api, &world, &[]);

    api.invoke("req-1", world.miner_event(0, 1));
    let (kind, report) = api.result("req-1").await;
    assert_eq!(kind, "response", "{report}");
    assert_eq!(report["decision"], "act");
    assert_eq!(report["steps"][0]["action"], "isolate");
    assert_eq!(report["steps"][0]["outcome"]["status"], "done", "{report}");
    assert_eq!(report["execution"]["invocation_id"], "req-1");
    let cidr = format!("{}/32", world.fixture.tasks[0].ip);
    assert!(world
        .acl_state()
        .await
        .iter()
        .any(|e| e["cidr"] == cidr.as_str()));

    let stopped = world.stopped_event(0);
    api.invoke("req-2", stopped);
    let (kind, report) = api.result("req-2").await;
    assert_eq!(
        (kind.as_str(), report["decision"].as_str()),
        ("response", Some("release")),
        "{report}"
    );
    assert!(!world
        .acl_state()
        .await
        .iter()
        .any(|e| e["cidr"] == cidr.as_str()));

    // A malformed event is answered (and audited), not retried.
    api.invoke("req-3", json!("not an event"));
    let (kind, report) = api.result("req-3").await;
    assert_eq!(kind, "response");
    assert_eq!(report["decision"], "error");
    assert!(report["execution"]["audit"].as_str().is_some());
    // So is JSON nested deeper than a parser allows: the runtime hands it over unparsed.
    let deep = format!(
        r#"{{"source":"aws.guardduty","detail-type":"GuardDuty Finding","detail":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    api.invoke_raw("req-3b", deep);
    let (kind, report) = api.result("req-3b").await;
    assert_eq!(kind, "response", "{report}");
    assert_eq!(report["decision"], "error");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{report}"
    );
    assert!(report["execution"]["audit"].as_str().is_some());

    // A step that fails in a way a retry can fix makes the invocation fail, so Lambda retries.
    world.proxy.configure(|c| {
        c.rules.push(FaultRule::new(
            &format!("PUT /{}/*", world.fixture.bucket),
            Fault::Throttle,
            None,
        ))
    });
    api.invoke("req-4", world.miner_event(0, 2));
    let (kind, error) = api.result("req-4").await;
    assert_eq!(kind, "error", "{error}");
    assert!(
        error["errorMessage"].as_str().unwrap().contains("retry"),
        "{error}"
    );

    let lines = stop(child);
    let emf: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(emf.len(), 5, "one metrics line per invocation");
    assert_eq!(emf[0]["Decision"], "act");
    assert!(emf[0]["ContainmentLatency"].as_u64().is_some());
    assert_eq!(emf[1]["Decision"], "release");
    let step_logs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "step finished")
        .collect();
    assert!(
        step_logs.iter().any(|l| l["step"] == "isolate"
            && l["outcome"] == "done"
            && l["finding_id"].is_string()
            && l["duration_ms"].is_number()),
        "structured step logs: {step_logs:?}"
    );
}

#[tokio::test]
async fn an_invalid_playbook_fails_the_init_loudly() {
    let world = World::new(0).await;
    let api = RuntimeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "rules:\n  - name: r\n    mode: enforce\n    actions: [quarantine]\n",
    )
    .unwrap();
    let mut child = bootstrap(
        &api,
        &world,
        &[("RESPONDER_PLAYBOOKS_PATH", dir.path().to_str().unwrap())],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "bootstrap kept running with an invalid playbook"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let init_error = api
        .state
        .lock()
        .unwrap()
        .init_error
        .clone()
        .expect("init error reported to the Runtime API");
    assert_eq!(init_error["errorType"], "Runtime.InitError");
    assert!(
        init_error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("bad.yaml:4"),
        "{init_error}"
    );
}
