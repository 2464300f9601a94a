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
    let client = clients
        .stable
        .webhook_client
        .get_or_try_init(|| async { client() })
        .await?;
    // The whole exchange, answer included, within the limit.
    tokio::time::timeout(POST_TIMEOUT, post(client, url, body))
        .await
        .map_err(|_| StepError::Aws {
            operation: "Slack webhook POST",
            code: "Timeout".to_string(),
            message: "no answer in time".to_string(),
            retryable: true,
        })?
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
    if !allowed(&url) {
        return Err(StepError::Refused(format!(
            "secret {secret_id} does not hold an https:// webhook URL (nor JSON with a `url`)"
        )));
    }
    Ok(url)
}

/// HTTPS anywhere; plain HTTP only to this machine (a local receiver). Parsed, not prefixed:
/// `http://127.0.0.1:1@elsewhere/` is elsewhere.
fn allowed(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => {
            !authority.as_str().contains('@')
                && matches!(authority.host(), "127.0.0.1" | "localhost")
        }
        _ => false,
    }
}

/// The HTTPS client, built once per container (loading the system's roots is slow).
pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client() -> Result<Client, StepError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| StepError::Aws {
            operation: "Slack webhook POST",
            code: "TLS".to_string(),
            message: e.to_string(),
            retryable: false,
        })?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

async fn post(client: &Client, url: &str, body: String) -> Result<(), StepError> {
    let failed = |code: String, message: String, retryable: bool| StepError::Aws {
        operation: "Slack webhook POST",
        code,
        message,
        retryable,
    };
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed("BadRequest".to_string(), e.to_string(), false))?;
    let response = client
        .request(request)
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_this_machine_is_allowed() {
        assert!(allowed("https://hooks.slack.com/services/T/B/x"));
        assert!(allowed("http://127.0.0.1:9000/hook"));
        assert!(allowed("http://localhost:9000/hook"));
        assert!(!allowed("http://hooks.slack.com/services/T/B/x"));
        assert!(!allowed("http://127.0.0.1:1@evil.example/"));
        assert!(!allowed("ftp://127.0.0.1/"));
        assert!(!allowed("not a url"));
    }
}
