//! The HTTP endpoint of a long-running process, on `service.listen_addr`:
//!
//! * `GET /metrics` — every registered metric, Prometheus text format;
//! * `GET /healthz` — 200 while the process serves requests (liveness);
//! * `GET /readyz` — 200 when every readiness check passes and the process is
//!   not draining, else 503; the JSON body names each check and its result.
//!
//! [`router`] gives the same routes to a process with its own HTTP API (the
//! schema registry). [`probe`] is the client side, for container health checks in an image
//! without curl (`tributary probe`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;

/// One readiness check: `Ok` when ready, else why not.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A check that takes longer than this fails (probes have short timeouts).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct Endpoint {
    registry: Registry,
    checks: Vec<(&'static str, Check)>,
    draining: watch::Receiver<bool>,
}

/// Binds `addr` and serves the endpoint in the background. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    checks: Vec<(&'static str, Check)>,
    draining: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on service.listen_addr {addr}"))?;
    let bound = listener.local_addr()?;
    let app = router(registry, checks, draining);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the metrics and health endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

/// The endpoint's routes (`/metrics`, `/healthz`, `/readyz`), for a process
/// that serves them beside its own API on one listener (the schema registry).
pub fn router(
    registry: Registry,
    checks: Vec<(&'static str, Check)>,
    draining: watch::Receiver<bool>,
) -> Router {
    let endpoint = Arc::new(Endpoint {
        registry,
        checks,
        draining,
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(endpoint)
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&endpoint.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            format!("cannot encode metrics: {error}\n").into_bytes(),
        ),
    }
}

async fn readyz(State(endpoint): State<Arc<Endpoint>>) -> impl IntoResponse {
    let mut ready = true;
    let mut results = serde_json::Map::new();
    let draining = *endpoint.draining.borrow();
    ready &= !draining;
    results.insert(
        "draining".into(),
        (if draining { "yes" } else { "no" }).into(),
    );
    for (name, check) in &endpoint.checks {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        ready &= result.is_ok();
        results.insert(
            (*name).into(),
            result.map_or_else(|e| e, |()| "ok".into()).into(),
        );
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "checks": results });
    (status, axum::Json(body))
}

/// Asks the endpoint at `addr` for `path`; succeeds when it answers 200 within
/// [`CHECK_TIMEOUT`].
pub async fn probe(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(CHECK_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{addr}{path} did not answer within {CHECK_TIMEOUT:?}"))?
        .with_context(|| format!("cannot reach {addr}{path}"))?;
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "{addr}{path} answered {status:?}: {}",
        response.split("\r\n\r\n").nth(1).unwrap_or_default().trim()
    );
    Ok(())
}
