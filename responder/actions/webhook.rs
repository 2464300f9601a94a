//! `notify` to a Slack incoming webhook: the Slack rendering of the report, posted to the URL
//! kept in a Secrets Manager secret (a webhook URL is a credential: anyone holding it can post
//! to the channel). The URL is read once per container.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::{aws, Clients, StepError};
use crate::notice::{render, NoticeFormat};
use crate::report::Report;

/// What `notify` calls for it.
pub const PERMISSIONS: &[&str] = &["secretsmanager:GetSecretValue"];

/// How long a post may take: the notice is the last step, and the function has 60 s.
const POST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Post the report's Slack message to the webhook the secret names.
pub async fn post_slack(
    clients: &Clients,
    secret_id: &str,
    report: &Report,
    subject_prefix: Option<&str>,
) -> Result<(), StepError> {
    // Read once per container (the clients' lifetime).
    let url = clients
        .stable
        .webhook_url
        .get_or_try_init(|| webhook_url(clients, secret_id))
        .await?;
    let body = render(report, NoticeFormat::Slack, subject_prefix);
    post(url, body).await
}

/// The secret holds the URL itself, or JSON with a `url` (or `webhook_url`) field.
async fn webhook_url(clients: &Clients, secret_id: &str) -> Result<String, StepError> {
    let secret = clients
        .secretsmanager
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(aws("Secrets Manager GetSecretValue"))?;
    let text = secret
        .secret_string()
        .unwrap_or_default()
        .trim()
        .to_string();
    let url = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) => value["url"]
            .as_str()
            .or(value["webhook_url"].as_str())
            .unwrap_or_default()
            .to_string(),
        Err(_) => text,
    };
    // HTTPS only; plain HTTP to this machine alone, for a local receiver.
    let local = url.starts_with("http://127.0.0.1:") || url.starts_with("http://localhost:");
    if !url.starts_with("https://") && !local {
        return Err(StepError::Refused(format!(
            "secret {secret_id} does not hold an https:// webhook URL (nor JSON with a `url`)"
        )));
    }
    Ok(url)
}

async fn post(url: &str, body: String) -> Result<(), StepError> {
    let failed = |code: String, message: String, retryable: bool| StepError::Aws {
        operation: "Slack webhook POST",
        code,
        message,
        retryable,
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| failed("TLS".to_string(), e.to_string(), false))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed("BadRequest".to_string(), e.to_string(), false))?;
    let response = tokio::time::timeout(POST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| failed("Timeout".to_string(), "no answer".to_string(), true))?
        .map_err(|e| failed("NoResponse".to_string(), e.to_string(), true))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| {
            String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(200)
                .collect()
        })
        .unwrap_or_default();
    Err(failed(
        format!("HTTP {}", status.as_u16()),
        text,
        status.is_server_error() || status.as_u16() == 429,
    ))
}
