//! APIs moto does not have, answered as AWS does so the responder's calls can be tested:
//!
//! - Security Hub `BatchUpdateFindings` (`PATCH /findings/batchupdate`): a finding moto's Security
//!   Hub holds (imported with `BatchImportFindings`) is processed and the update recorded for
//!   tests to read; any other comes back in `UnprocessedFindings` with `FindingNotFound`, in a
//!   200 answer, as AWS answers.
//! - EC2 `InstanceInitiatedShutdownBehavior`: moto neither keeps a change of it nor reports it
//!   (always `stop`); it is kept here per instance and reported by `DescribeInstanceAttribute`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use super::State;

type Answer = (Response<Full<Bytes>>, Option<String>);

/// The answer to a call moto lacks, when this is one.
pub(super) async fn answer(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
    operation: &str,
) -> Option<Answer> {
    let text = std::str::from_utf8(body).unwrap_or_default();
    match operation {
        "PATCH /findings/batchupdate" => Some(batch_update_findings(state, parts, body).await),
        "ModifyInstanceAttribute" => {
            let behavior = super::form_value(text, "InstanceInitiatedShutdownBehavior.Value")?;
            let instance = super::form_value(text, "InstanceId")?;
            if let Ok(mut kept) = state.shutdown_behaviors.lock() {
                kept.insert(instance, behavior);
            }
            Some((
                ec2_xml("ModifyInstanceAttributeResponse", "<return>true</return>"),
                Some("shutdown behaviour kept for moto".to_string()),
            ))
        }
        "DescribeInstanceAttribute"
            if super::form_value(text, "Attribute").as_deref()
                == Some("instanceInitiatedShutdownBehavior") =>
        {
            let instance = super::form_value(text, "InstanceId")?;
            let behavior = state
                .shutdown_behaviors
                .lock()
                .ok()
                .and_then(|kept| kept.get(&instance).cloned())
                .unwrap_or_else(|| "stop".to_string());
            Some((
                ec2_xml(
                    "DescribeInstanceAttributeResponse",
                    &format!("<instanceId>{instance}</instanceId><instanceInitiatedShutdownBehavior><value>{behavior}</value></instanceInitiatedShutdownBehavior>"),
                ),
                Some("shutdown behaviour answered for moto".to_string()),
            ))
        }
        _ => None,
    }
}

/// An EC2 query answer with `inner` after the request id.
fn ec2_xml(element: &str, inner: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{element} xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>proxy</requestId>{inner}</{element}>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    response
}

async fn batch_update_findings(
    state: &State,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
) -> Answer {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Every finding moto's Security Hub holds, through moto's own GetFindings.
    let mut get = parts.clone();
    get.method = hyper::Method::POST;
    let known: Value = {
        let response = super::forward(
            state,
            &{
                let mut p = get;
                p.uri = "/findings".parse().unwrap_or_default();
                p.headers.remove("content-length");
                p
            },
            Bytes::from(json!({"MaxResults": 100}).to_string()),
        )
        .await;
        serde_json::from_slice(&super::body_of(response).await).unwrap_or(Value::Null)
    };
    let held = |id: &str| {
        known["Findings"]
            .as_array()
            .is_some_and(|findings| findings.iter().any(|f| f["Id"] == id))
    };
    let mut processed = Vec::new();
    let mut unprocessed = Vec::new();
    for identifier in request["FindingIdentifiers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if held(identifier["Id"].as_str().unwrap_or_default()) {
            processed.push(identifier.clone());
            if let Ok(mut updates) = state.security_hub_updates.lock() {
                updates.push(json!({
                    "FindingIdentifier": identifier,
                    "Workflow": request["Workflow"],
                    "Note": request["Note"],
                }));
            }
        } else {
            unprocessed.push(json!({
                "FindingIdentifier": identifier,
                "ErrorCode": "FindingNotFound",
                "ErrorMessage": "Finding Not Found",
            }));
        }
    }
    let body = json!({"ProcessedFindings": processed, "UnprocessedFindings": unprocessed});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    (response, Some("answered for moto".to_string()))
}
