//! Local AWS for tests and `responder demo`: a moto server on 127.0.0.1, our fault-injecting
//! proxy in front of it (so it answers as AWS does where moto is kinder), and fixtures that seed
//! a realistic Fargate service. Network traffic stays on loopback.

pub mod demo;
pub mod fixture;
pub mod proxy;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("moto_server was not found (looked for {0}); install it with `python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server]>=5.2,<6'` or set MOTO_SERVER")]
    NotInstalled(String),
    #[error("cannot start moto_server: {0}")]
    Spawn(std::io::Error),
    #[error("moto_server did not answer on {0} within {1:?} (its log: {2})")]
    NotReady(String, Duration, String),
    #[error("emulator control call {0} failed: {1}")]
    Control(String, String),
    #[error("seeding the emulator failed: {0}")]
    Seed(String),
}

/// A moto server this process started. Stopped when dropped; should this process die without
/// dropping it (killed, aborted), a watchdog stops it within a second; Ctrl-C reaches it too,
/// as it shares the terminal's process group.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    server: Child,
    watchdog: Option<Child>,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The server itself, not a shell around it: a shell killed with SIGKILL runs no trap.
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(watchdog) = self.watchdog.as_mut() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// Where moto_server is: `MOTO_SERVER`, the project's `.venv-moto`, or the PATH.
pub fn moto_binary() -> Result<PathBuf, EmulatorError> {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let candidates = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-moto/bin/moto_server"),
        PathBuf::from(".venv-moto/bin/moto_server"),
    ];
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        EmulatorError::NotInstalled(
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
        .local_addr()?
        .port())
}

impl Moto {
    /// Start moto_server on a free loopback port and wait until it answers.
    pub async fn start() -> Result<Moto, EmulatorError> {
        let binary = moto_binary()?;
        let port = free_port().map_err(EmulatorError::Spawn)?;
        let log = std::env::temp_dir().join(format!("moto-{port}.log"));
        let output = std::fs::File::create(&log).map_err(EmulatorError::Spawn)?;
        let errors = output.try_clone().map_err(EmulatorError::Spawn)?;
        let server = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(EmulatorError::Spawn)?;
        // Stops the server if this process goes away without dropping `Moto`.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$WATCH" 2>/dev/null && kill -0 "$SERVER" 2>/dev/null; do sleep 1; done; kill "$SERVER" 2>/dev/null"#)
            .env("WATCH", std::process::id().to_string())
            .env("SERVER", server.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            server,
            watchdog,
            log,
        };
        let deadline = Duration::from_secs(30);
        let started = Instant::now();
        while started.elapsed() < deadline {
            if control(&moto.endpoint, "GET", "/moto-api/data.json", None)
                .await
                .is_ok()
            {
                pin_task_states(&moto.endpoint).await?;
                return Ok(moto);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EmulatorError::NotReady(
            moto.endpoint.clone(),
            deadline,
            moto.log.display().to_string(),
        ))
    }
}

/// moto advances a task's status on every DescribeTasks; AWS does not. Pin it (once per server).
pub async fn pin_task_states(endpoint: &str) -> Result<(), EmulatorError> {
    control(
        endpoint,
        "POST",
        "/moto-api/state-manager/set-transition",
        Some(r#"{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}"#),
    )
    .await
    .map(|_| ())
}

/// Call moto's control API (`/moto-api/...`).
pub async fn control(
    endpoint: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<String, EmulatorError> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("{endpoint}{path}")
        .parse()
        .map_err(|e| EmulatorError::Control(path.to_string(), format!("{e}")))?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .map_err(|e| EmulatorError::Control(path.to_string(), e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| EmulatorError::Control(path.to_string(), "timed out".to_string()))?
        .map_err(|e| EmulatorError::Control(path.to_string(), e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| EmulatorError::Control(path.to_string(), e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        Ok(text)
    } else {
        Err(EmulatorError::Control(
            path.to_string(),
            format!("HTTP {status}: {}", responder::event::clip(&text)),
        ))
    }
}

/// Serve HTTP/1 on `listener` with `handle` until the returned task is aborted: the loop shared
/// by the fault proxy and the tests' Lambda Runtime API.
pub fn serve_loopback<S, H, F>(
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<S>,
    handle: H,
) -> tokio::task::JoinHandle<()>
where
    S: Send + Sync + 'static,
    H: Fn(std::sync::Arc<S>, hyper::Request<hyper::body::Incoming>) -> F
        + Clone
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let future = handle(state.clone(), request);
                    async move { Ok::<_, std::convert::Infallible>(future.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// SDK configuration for an emulator endpoint: test credentials, a fixed region, quick retries.
pub fn sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
            aws_sdk_ec2::config::Credentials::new("test", "test", None, None, "emulator"),
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(20)),
        )
        .timeout_config(responder::actions::timeouts())
        .build()
}
