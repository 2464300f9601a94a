//! A small fault-injecting proxy in front of the emulator. moto is kinder than AWS; this answers
//! as AWS does where it matters to a responder, and counts every call so tests can assert what
//! was (not) mutated:
//!
//! - `ModifyNetworkInterfaceAttribute` on a requester-managed ENI (every ENI moto creates for an
//!   ECS task) is refused, and `DescribeNetworkInterfaces` reports those ENIs as
//!   `requesterManaged: true`, as AWS does for Fargate task ENIs.
//! - `CreateNetworkAclEntry` beyond the per-direction rule quota (20 by default, as in AWS) is
//!   refused with `NetworkAclEntryLimitExceeded`.
//! - `DescribeTasks` lists unknown task ARNs under `failures` with reason `MISSING`, and
//!   `StopTask` on an unknown task is a client error, not a 500.
//! - Configurable faults per operation: throttling (`ThrottlingException` for JSON APIs,
//!   `RequestLimitExceeded` for EC2, `Throttling` for SNS/ELB, `SlowDown` for S3), 5xx errors and
//!   added latency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;

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
    /// Entries per direction a network ACL may hold (AWS default quota: 20).
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
        Some(Fault::Latency(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let text = String::from_utf8_lossy(&body).into_owned();

    if config.aws_fidelity {
        match operation {
            "ModifyNetworkInterfaceAttribute"
                if text.contains("SecurityGroupId") || text.contains("Groups") =>
            {
                if let Some(eni) = form_value(&text, "NetworkInterfaceId") {
                    if is_task_eni(state, parts, &eni).await {
                        return (
                            error_response(protocol, service, 400, "OperationNotPermitted",
                                &format!("You do not have permission to modify the security groups of network interface {eni}: it is a requester-managed interface.")),
                            Some("requester-managed ENI refused".to_string()),
                        );
                    }
                }
            }
            "CreateNetworkAclEntry" => {
                if let (Some(acl), Some(egress)) = (
                    form_value(&text, "NetworkAclId"),
                    form_value(&text, "Egress"),
                ) {
                    let count = acl_entry_count(state, parts, &acl, egress == "true").await;
                    if count >= config.nacl_entry_limit {
                        return (
                            error_response(protocol, service, 400, "NetworkAclEntryLimitExceeded",
                                &format!("The maximum number of network ACL entries ({}) has been reached.", config.nacl_entry_limit)),
                            Some("ACL quota".to_string()),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    let mut response = forward(state, parts, body.clone()).await;
    if !config.aws_fidelity {
        return (response, None);
    }
    let mut injected = None;
    match operation {
        "DescribeNetworkInterfaces" if response.status() == StatusCode::OK => {
            let bytes = body_of(response).await;
            let rewritten = mark_task_enis_requester_managed(&String::from_utf8_lossy(&bytes));
            response = Response::new(Full::new(Bytes::from(rewritten)));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/xml"),
            );
        }
        "DescribeTasks" if response.status() == StatusCode::OK => {
            let bytes = body_of(response).await;
            let (rewritten, added) = add_missing_failures(&body, &bytes);
            if added {
                injected = Some("MISSING failures added".to_string());
            }
            response = Response::new(Full::new(rewritten));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
        }
        "StopTask" if response.status().is_server_error() => {
            return (
                error_response(
                    protocol,
                    service,
                    400,
                    "InvalidParameterException",
                    "The referenced task was not found.",
                ),
                Some("unknown task".to_string()),
            );
        }
        _ => {}
    }
    (response, injected)
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

/// Ask the emulator directly (not through the proxy) with the caller's credentials scope.
async fn ec2_query(state: &State, parts: &hyper::http::request::Parts, form: String) -> String {
    let Ok(uri) = format!("{}/", state.upstream).parse::<hyper::Uri>() else {
        return String::new();
    };
    let mut builder = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = parts.headers.get("authorization") {
        builder = builder.header("authorization", auth);
    }
    let Ok(request) = builder.body(Full::new(Bytes::from(form))) else {
        return String::new();
    };
    match state.client.request(request).await {
        Ok(response) => response
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn is_task_eni(state: &State, parts: &hyper::http::request::Parts, eni: &str) -> bool {
    let form =
        format!("Action=DescribeNetworkInterfaces&Version=2016-11-15&NetworkInterfaceId.1={eni}");
    ec2_query(state, parts, form).await.contains(MOTO_ECS_ENI)
}

async fn acl_entry_count(
    state: &State,
    parts: &hyper::http::request::Parts,
    acl: &str,
    egress: bool,
) -> usize {
    let form = format!("Action=DescribeNetworkAcls&Version=2016-11-15&NetworkAclId.1={acl}");
    let xml = ec2_query(state, parts, form).await;
    // Count <item>s in entrySet with the wanted direction, excluding the default rule 32767.
    let Some(entries) = xml
        .split("<entrySet>")
        .nth(1)
        .and_then(|s| s.split("</entrySet>").next())
    else {
        return 0;
    };
    entries
        .split("<item>")
        .skip(1)
        .filter(|item| {
            item.contains(&format!("<egress>{egress}</egress>"))
                && !item.contains("<ruleNumber>32767</ruleNumber>")
        })
        .count()
}

/// AWS reports every ECS task ENI as requester-managed; moto does not.
fn mark_task_enis_requester_managed(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find(MOTO_ECS_ENI) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let next_eni = after[MOTO_ECS_ENI.len()..]
            .find(MOTO_ECS_ENI)
            .map(|i| i + MOTO_ECS_ENI.len())
            .unwrap_or(after.len());
        let (this_eni, remaining) = after.split_at(next_eni);
        out.push_str(&this_eni.replacen(
            "<requesterManaged>false</requesterManaged>",
            "<requesterManaged>true</requesterManaged>",
            1,
        ));
        rest = remaining;
    }
    out.push_str(rest);
    out
}

/// AWS answers DescribeTasks for an unknown or long-gone task with `failures[].reason = MISSING`.
fn add_missing_failures(request: &[u8], response: &[u8]) -> (Bytes, bool) {
    let (Ok(request), Ok(mut response)) = (
        serde_json::from_slice::<Value>(request),
        serde_json::from_slice::<Value>(response),
    ) else {
        return (Bytes::copy_from_slice(response), false);
    };
    let asked: Vec<String> = request["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let known: Vec<String> = response["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<Value> = asked
        .iter()
        .filter(|arn| {
            !known
                .iter()
                .any(|k| k == *arn || k.ends_with(&format!("/{arn}")))
        })
        .map(|arn| serde_json::json!({"arn": arn, "reason": "MISSING"}))
        .collect();
    if missing.is_empty() {
        return (Bytes::from(response.to_string()), false);
    }
    let failures = response["failures"].as_array().cloned().unwrap_or_default();
    response["failures"] = Value::Array(failures.into_iter().chain(missing).collect());
    (Bytes::from(response.to_string()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requester_managed_is_set_only_on_task_enis() {
        let xml = "<item><description>moto ECS</description><groupSet><item><groupId>sg-1</groupId></item></groupSet><requesterManaged>false</requesterManaged></item>\
                   <item><description>web</description><requesterManaged>false</requesterManaged></item>";
        let out = mark_task_enis_requester_managed(xml);
        assert_eq!(
            out.matches("<requesterManaged>true</requesterManaged>")
                .count(),
            1
        );
        assert!(out.ends_with(
            "<description>web</description><requesterManaged>false</requesterManaged></item>"
        ));
    }

    #[test]
    fn missing_tasks_become_failures() {
        let request = br#"{"cluster":"c","tasks":["arn:task/c/1","arn:task/c/2"]}"#;
        let response = br#"{"tasks":[{"taskArn":"arn:task/c/1"}],"failures":[]}"#;
        let (out, added) = add_missing_failures(request, response);
        assert!(added);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["failures"][0]["arn"], "arn:task/c/2");
        assert_eq!(value["failures"][0]["reason"], "MISSING");
    }

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
        };
        assert!(call("ec2", "CreateNetworkAclEntry").is_mutating());
        assert!(call("sns", "Publish").is_mutating());
        assert!(call("s3", "PUT /bucket/key").is_mutating());
        assert!(!call("ec2", "DescribeNetworkAcls").is_mutating());
        assert!(!call("s3", "GET /bucket").is_mutating());
    }
}
