//! The Lambda entry point: a thin shell over `Responder::respond`, the same path as the CLI.
//!
//! Init (once per container): JSON logs, playbooks loaded and validated (an invalid playbook
//! fails the init loudly, never a silent no-op), configuration read, SDK clients built. Each
//! invocation: respond, print one CloudWatch Embedded Metric Format line, return the report.
//! An error is returned only when a retry can help; the ledger makes retries safe.

use std::process::ExitCode;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::value::RawValue;
use serde_json::Value;

use responder::playbook::PlaybookSet;
use responder::respond::Responder;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESPONDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let responder = match init().await {
            Ok(responder) => responder,
            Err(message) => {
                tracing::error!(error = %message, "init failed");
                report_init_error(&message).await;
                return ExitCode::FAILURE;
            }
        };
        let responder = &responder;
        let result = lambda_runtime::run(service_fn(
            move |event: LambdaEvent<Box<RawValue>>| async move { handle(responder, event).await },
        ))
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the Lambda runtime stopped");
                ExitCode::FAILURE
            }
        }
    })
}

async fn init() -> Result<Responder, String> {
    let playbooks = match std::env::var("RESPONDER_PLAYBOOKS_PATH")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(path) => PlaybookSet::load_path(std::path::Path::new(&path)),
        None => PlaybookSet::defaults(),
    }
    .map_err(|errors| format!("the playbooks are invalid, refusing to start:\n{errors}"))?;
    let mut responder = Responder::from_env(playbooks)
        .await
        .map_err(|e| format!("invalid configuration: {e}"))?;
    // The function is only ever sent EventBridge events; a bare finding came some other way.
    responder.config.provenance.require_envelope = true;
    for warning in &responder.playbooks.warnings {
        tracing::warn!(%warning, "playbook warning");
    }
    tracing::info!(
        rules = responder.playbooks.rules.len(),
        sources = %responder.playbooks.sources.join(","),
        mode_ceiling = responder.config.mode_ceiling.map(|m| m.name()).unwrap_or("none"),
        "initialised"
    );
    Ok(responder)
}

/// The handler takes the payload as received, not parsed: a malformed event — of the wrong
/// shape, nested deeper than a JSON parser allows, larger than an event may be — must still
/// reach `respond`, so it gets a clear error and an audit record instead of a runtime-level
/// failure. (The runtime only checks that the payload is JSON, which Lambda guarantees.)
async fn handle(responder: &Responder, event: LambdaEvent<Box<RawValue>>) -> Result<Value, Error> {
    let request_id = event.context.request_id.clone();
    // Claims last until the invocation's deadline, so Lambda's retry finds them expired.
    let deadline =
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(event.context.deadline));
    let bytes = event.payload.get().as_bytes();
    let response = responder
        .respond(Some(request_id.clone()), bytes, &request_id, None, deadline)
        .await;
    println!(
        "{}",
        response
            .report
            .emf_line(chrono::Utc::now().timestamp_millis())
    );
    if response.retryable {
        // Retrying is safe (finished steps are recorded) and can succeed (throttling, 5xx).
        return Err(format!(
            "a step failed in a way a retry can fix; finding {}",
            response.report.finding_id.as_deref().unwrap_or("-")
        )
        .into());
    }
    Ok(serde_json::to_value(&response.report)?)
}

/// Tell the Lambda service why init failed, so the console shows the reason.
async fn report_init_error(message: &str) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body =
        serde_json::json!({"errorType": "Runtime.InitError", "errorMessage": message}).to_string();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)));
    if let Ok(request) = request {
        let _ = client.request(request).await;
    }
}
