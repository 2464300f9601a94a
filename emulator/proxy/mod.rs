//! A small fault-injecting proxy in front of the emulator. moto is kinder than AWS; this answers
//! as AWS does where it matters to a responder ([`fidelity`]: requester-managed ENIs, the ACL
//! entry quota and taken rule numbers, default ACL rules, MISSING tasks), injects configurable
//! faults per operation — throttling (`ThrottlingException` for JSON APIs,
//! `RequestLimitExceeded` for EC2, `Throttling` for SNS/ELB, `SlowDown` for S3), 5xx errors and
//! added latency — and counts every call so tests can assert what was (not) mutated.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

mod fidelity;
mod missing;

/// The moto marker on ENIs it creates for ECS tasks.
const MOTO_ECS_ENI: &str = "<description>moto ECS</description>";

/// What kind of fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The service's throttling error.
    Throttle,
    /// HTTP 500 with the service's internal-error code.
    ServerError,
    /// Forward normally after a delay.
    Latency(Duration),
    /// Forward (the write happens), then answer HTTP 500 as if the answer was lost: the
    /// client retries a call that already took effect.
    LostAnswer,
    /// Forward (the write happens), then hold the answer this long: the caller dies (Lambda's
    /// timeout) after the call took effect and before it learnt so.
    HangAfter(Duration),
    /// A client error with this code (HTTP 403), as AWS refuses a call it will never allow:
    /// e.g. `AccessDenied` for an AssumeRole the role's trust policy does not permit.
    Refuse(&'static str),
}

/// Inject `fault` into calls of `operation`: an exact name (`DescribeTasks`), `*` for every
/// call, or a prefix ending in `*` (`PUT /bucket/*` for S3 writes).
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub operation: String,
    pub fault: Fault,
    /// Apply to this many matching calls, then stop (None: always).
    pub times: Option<u32>,
    /// Apply to one matching call in `every` (1: each one), for a share of calls.
    pub every: u32,
    seen: u32,
}

impl FaultRule {
    fn matches(&self, operation: &str) -> bool {
        match self.operation.strip_suffix('*') {
            Some(prefix) => operation.starts_with(prefix),
            None => self.operation == operation,
        }
    }

    pub fn new(operation: &str, fault: Fault, times: Option<u32>) -> FaultRule {
        FaultRule {
            operation: operation.to_string(),
            fault,
            times,
            every: 1,
            seen: 0,
        }
    }

    /// Inject into one matching call in `every` (e.g. 3: a third of them), indefinitely.
    pub fn share(operation: &str, fault: Fault, every: u32) -> FaultRule {
        FaultRule {
            every: every.max(1),
            ..FaultRule::new(operation, fault, None)
        }
    }

    /// Count a matching call; true when this one gets the fault.
    fn fires(&mut self) -> bool {
        if self.times == Some(0) {
            return false;
        }
        self.seen += 1;
        if self.seen % self.every != 0 {
            return false;
        }
        if let Some(times) = self.times.as_mut() {
            *times -= 1;
        }
        true
    }
}

/// The proxy's behaviour; change it at any time through [`FaultProxy::configure`].
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Answer as AWS does where moto does not (see the module docs).
    pub aws_fidelity: bool,
    /// Entries a network ACL may hold per direction and address family, the default rule
    /// included (AWS's default quota: 20).
    pub nacl_entry_limit: usize,
    pub rules: Vec<FaultRule>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            aws_fidelity: true,
            nacl_entry_limit: 20,
            rules: Vec::new(),
        }
    }
}

/// One call seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub status: u16,
    /// What the proxy did instead of (or on top of) forwarding, if anything.
    pub injected: Option<String>,
    /// When the request arrived and when its answer left: the benchmark counts round trips
    /// on the critical path from these.
    pub received: Instant,
    pub answered: Instant,
}

impl Call {
    /// Calls that change something in the account (the workload, evidence, messages, ledger).
    pub fn is_mutating(&self) -> bool {
        if self.service == "s3" {
            return !self.operation.starts_with("GET") && !self.operation.starts_with("HEAD");
        }
        const PREFIXES: &[&str] = &[
            "Create",
            "Delete",
            "Modify",
            "Put",
            "Update",
            "Stop",
            "Start",
            "Run",
            "Tag",
            "Untag",
            "Publish",
            "Deregister",
            "Register",
            "Replace",
            "Authorize",
            "Revoke",
            "Associate",
            "Disassociate",
            "Attach",
            "Detach",
            "Terminate",
            "Send",
            "Set",
            "BatchWrite",
            "TransactWrite",
            "Subscribe",
        ];
        PREFIXES.iter().any(|p| self.operation.starts_with(p))
    }
}

struct State {
    upstream: String,
    config: Mutex<FaultConfig>,
    calls: Mutex<Vec<Call>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// Serialises network ACL writes, so a number or quota check and the write are one step.
    acl_writes: tokio::sync::Mutex<()>,
    /// Serialises DynamoDB writes: DynamoDB evaluates a condition and writes atomically, moto's
    /// threaded server does not (two concurrent conditional claims can both succeed there).
    dynamodb_writes: tokio::sync::Mutex<()>,
    /// Security Hub `BatchUpdateFindings` updates answered here (moto lacks the API).
    security_hub_updates: Mutex<Vec<serde_json::Value>>,
    /// Instances' shutdown behaviour, which moto does not keep.
    shutdown_behaviors: Mutex<std::collections::HashMap<String, String>>,
}

/// A running proxy on 127.0.0.1. Dropping it stops accepting connections.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Start in front of `upstream` (e.g. `http://127.0.0.1:5000`) on a free loopback port.
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            config: Mutex::new(FaultConfig::default()),
            calls: Mutex::new(Vec::new()),
            client: Client::builder(TokioExecutor::new()).build_http(),
            acl_writes: tokio::sync::Mutex::new(()),
            dynamodb_writes: tokio::sync::Mutex::new(()),
            security_hub_updates: Mutex::new(Vec::new()),
            shutdown_behaviors: Mutex::default(),
        });
        let task = crate::serve_loopback(listener, state.clone(), |state, request| async move {
            handle(&state, request).await
        });
        Ok(FaultProxy {
            endpoint,
            state,
            task,
        })
    }

    pub fn configure(&self, change: impl FnOnce(&mut FaultConfig)) {
        if let Ok(mut config) = self.state.config.lock() {
            change(&mut config);
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn clear_calls(&self) {
        if let Ok(mut calls) = self.state.calls.lock() {
            calls.clear();
        }
    }

    /// The Security Hub finding updates the proxy answered for moto, in order.
    pub fn security_hub_updates(&self) -> Vec<serde_json::Value> {
        self.state
            .security_hub_updates
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// Mutating calls that succeeded (a refused conditional write changed nothing).
    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.is_mutating() && c.status < 300)
            .collect()
    }
}

/// Which API a request is for: (service, operation, protocol).
fn identify(request: &hyper::http::request::Parts, body: &[u8]) -> (String, String, Protocol) {
    let scope_service = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|cred| cred.split('/').nth(3))
        .unwrap_or("unknown")
        .to_string();
    if let Some(target) = request
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        let operation = target.rsplit('.').next().unwrap_or(target).to_string();
        return (scope_service, operation, Protocol::Json);
    }
    let text = std::str::from_utf8(body).unwrap_or("");
    if let Some(action) = form_value(text, "Action") {
        let protocol = if scope_service == "ec2" {
            Protocol::Ec2Query
        } else {
            Protocol::Query
        };
        return (scope_service, action, protocol);
    }
    let operation = format!("{} {}", request.method, request.uri.path());
    (scope_service, operation, Protocol::Rest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Json,
    Ec2Query,
    Query,
    Rest,
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error_response(
    protocol: Protocol,
    service: &str,
    status: u16,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let (content_type, body) = match protocol {
        Protocol::Json => {
            let type_name = if service == "dynamodb" {
                format!("com.amazonaws.dynamodb.v20120810#{code}")
            } else {
                code.to_string()
            };
            (
                "application/x-amz-json-1.1",
                serde_json::json!({"__type": type_name, "message": message}).to_string(),
            )
        }
        Protocol::Ec2Query => (
            "text/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy-injected</RequestID></Response>"),
        ),
        Protocol::Query => (
            "text/xml",
            format!("<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>proxy-injected</RequestId></ErrorResponse>", if status >= 500 { "Receiver" } else { "Sender" }),
        ),
        Protocol::Rest => (
            "application/xml",
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy-injected</RequestId></Error>"),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    if protocol == Protocol::Json {
        if let Ok(value) = code.parse() {
            response.headers_mut().insert("x-amzn-errortype", value);
        }
    }
    response
}

fn throttle(protocol: Protocol, service: &str) -> Response<Full<Bytes>> {
    match protocol {
        Protocol::Ec2Query => error_response(
            protocol,
            service,
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        Protocol::Rest => error_response(
            protocol,
            service,
            503,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        Protocol::Query => error_response(protocol, service, 400, "Throttling", "Rate exceeded"),
        Protocol::Json => error_response(
            protocol,
            service,
            400,
            "ThrottlingException",
            "Rate exceeded",
        ),
    }
}

fn server_error(protocol: Protocol, service: &str) -> Response<Full<Bytes>> {
    let code = match protocol {
        Protocol::Json => "InternalFailure",
        _ => "InternalError",
    };
    error_response(
        protocol,
        service,
        500,
        code,
        "We encountered an internal error. Please try again.",
    )
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let received = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (service, operation, protocol) = identify(&parts, &body);
    let (response, injected) = respond(state, &parts, body, &service, &operation, protocol).await;
    if let Ok(mut calls) = state.calls.lock() {
        calls.push(Call {
            service,
            operation,
            status: response.status().as_u16(),
            injected,
            received,
            answered: Instant::now(),
        });
    }
    response
}

async fn respond(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    service: &str,
    operation: &str,
    protocol: Protocol,
) -> (Response<Full<Bytes>>, Option<String>) {
    // Configured faults first: they model AWS having a bad moment.
    let (fault, config) = {
        let Ok(mut config) = state.config.lock() else {
            return (
                server_error(protocol, service),
                Some("proxy state poisoned".to_string()),
            );
        };
        let fault = config
            .rules
            .iter_mut()
            .filter(|r| r.matches(operation))
            .find_map(|rule| rule.fires().then_some(rule.fault));
        (fault, config.clone())
    };
    match fault {
        Some(Fault::Throttle) => {
            return (throttle(protocol, service), Some("throttled".to_string()))
        }
        Some(Fault::ServerError) => {
            return (
                server_error(protocol, service),
                Some("server error".to_string()),
            )
        }
        Some(Fault::Refuse(code)) => {
            return (
                error_response(
                    protocol,
                    service,
                    403,
                    code,
                    &format!("{operation} refused (proxy-injected)"),
                ),
                Some(format!("refused: {code}")),
            )
        }
        Some(Fault::Latency(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::LostAnswer) => {
            let _took_effect = forward(state, parts, body).await;
            return (
                server_error(protocol, service),
                Some("answer lost after the call took effect".to_string()),
            );
        }
        Some(Fault::HangAfter(delay)) => {
            let answer = forward(state, parts, body).await;
            tokio::time::sleep(delay).await;
            return (
                answer,
                Some("answer held after the call took effect".to_string()),
            );
        }
        None => {}
    }
    // What moto lacks, answered as AWS would (always: without it the call cannot work at all).
    if let Some(answer) = missing::answer(state, parts, &body, operation).await {
        return answer;
    }
    // Conditional writes are atomic in DynamoDB; always, not only in fidelity mode, since the
    // responder's claims and locks depend on it.
    let _atomic = match (service, operation) {
        ("dynamodb", "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems") => {
            Some(state.dynamodb_writes.lock().await)
        }
        _ => None,
    };
    if !config.aws_fidelity {
        return (forward(state, parts, body).await, None);
    }
    // AWS checks an ACL entry's number and the quota atomically: one create at a time here.
    let _one_at_a_time = match operation {
        "CreateNetworkAclEntry" => Some(state.acl_writes.lock().await),
        _ => None,
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    let request = fidelity::Request {
        state,
        parts,
        text: &text,
        service,
        operation,
        protocol,
        config: &config,
    };
    if let Some(refused) = fidelity::refuse(&request).await {
        return refused;
    }
    let response = forward(state, parts, body.clone()).await;
    fidelity::rewrite(&request, &body, response).await
}

async fn forward(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let Ok(uri) = format!("{}{path}", state.upstream).parse::<hyper::Uri>() else {
        return server_error(Protocol::Rest, "proxy");
    };
    let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(Full::new(body)) else {
        return server_error(Protocol::Rest, "proxy");
    };
    match state.client.request(request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Response::from_parts(parts, Full::new(bytes))
        }
        Err(error) => {
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "proxy: upstream unreachable: {error}"
            ))));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}

async fn body_of(response: Response<Full<Bytes>>) -> Bytes {
    response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_value("Action=DescribeTasks&X=a%2Fb+c", "X").as_deref(),
            Some("a/b c")
        );
        assert_eq!(form_value("A=%41%4", "A").as_deref(), Some("A%4"));
    }

    #[test]
    fn a_share_of_calls_gets_the_fault() {
        let mut rule = FaultRule::share("DescribeTasks", Fault::Throttle, 3);
        let fired: Vec<bool> = (0..6).map(|_| rule.fires()).collect();
        assert_eq!(fired, [false, false, true, false, false, true]);
        let mut limited = FaultRule::new("X", Fault::ServerError, Some(2));
        let fired: Vec<bool> = (0..4).map(|_| limited.fires()).collect();
        assert_eq!(fired, [true, true, false, false]);
        assert!(FaultRule::new("PUT /bucket/*", Fault::Throttle, None).matches("PUT /bucket/key"));
    }

    #[test]
    fn mutating_calls_are_recognised() {
        let call = |service: &str, operation: &str| Call {
            service: service.into(),
            operation: operation.into(),
            status: 200,
            injected: None,
            received: Instant::now(),
            answered: Instant::now(),
        };
        assert!(call("ec2", "CreateNetworkAclEntry").is_mutating());
        assert!(call("sns", "Publish").is_mutating());
        assert!(call("s3", "PUT /bucket/key").is_mutating());
        assert!(!call("ec2", "DescribeNetworkAcls").is_mutating());
        assert!(!call("s3", "GET /bucket").is_mutating());
    }
}
