//! The admin API: an HTTP listener for operators, apart from the public
//! one (default `127.0.0.1:9090`, set by `[admin] listen` or
//! `medianode run --admin ADDR`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus/OpenMetrics text ([`metrics`]) |
//! | `GET /health` | 200 while the process serves: `{"status": "ok"}`, or `"degraded"` with the system monitor's alerts ([`monitor`]) |
//! | `GET /ready` | 200 when every stage serves; 503 with the reasons otherwise |
//! | `GET /stages`, `GET /stages/{id}` | each stage's state, plugin digest, restarts, last crash, next retry, counters |
//! | `GET /rooms` | the SFU's rooms: participants, ICE state, tracks and packets forwarded |
//! | `POST /stages/{id}/restart` | a fresh instance of the stage, swapped in between two calls (202) |
//! | `POST /reload` | re-reads the pipeline file and replaces the stages that changed ([`crate::reload`]): 200 with what was replaced, 422 with why nothing was |
//! | `POST /drain` | the node drains and stops, as on SIGTERM (202) |
//!
//! Beyond loopback the listener needs a bearer token (`[admin] token-env`
//! or `token-file`; the config check refuses an open one), and every
//! request must carry `Authorization: Bearer <token>` (401 otherwise).

pub mod metrics;
pub mod monitor;
pub mod process;
pub mod systemd;
mod view;

pub use view::{NodeView, ReloadAsked, stage_json};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

/// The running admin listener.
pub struct Admin {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    view: NodeView,
    /// SHA-256 of the bearer token, when one is required.
    token: Option<[u8; 32]>,
}

/// Binds `listen` and serves the admin API over `view`.
pub async fn start(listen: SocketAddr, token: Option<&str>, view: NodeView) -> std::io::Result<Admin> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared { view, token: token.map(|t| Sha256::digest(t.as_bytes()).into()) });
    let app = router(shared.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("admin listener failed: {e}");
        }
    });
    let auth = if shared.token.is_some() { "bearer token required" } else { "no token: loopback only" };
    tracing::info!("admin API on http://{addr} ({auth})");
    Ok(Admin { addr, task })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stages", get(stages))
        .route("/stages/{id}", get(stage))
        .route("/rooms", get(rooms))
        .route("/stages/{id}/restart", post(restart))
        .route("/drain", post(drain))
        .route("/reload", post(reload))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), authorize))
        .with_state(shared)
}

/// Refuses a request without the bearer token, when one is required. The
/// token is compared as a digest, so the comparison's time says nothing
/// about how much of it matched.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(expected) = shared.token {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let matches = given.is_some_and(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())) == expected);
        if !matches {
            let mut response =
                (StatusCode::UNAUTHORIZED, Json(json!({"error": "this admin API needs `Authorization: Bearer <token>`"}))).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&shared.view).await).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let alerts: Vec<String> = shared.view.alerts().iter().map(ToString::to_string).collect();
    let status = if alerts.is_empty() { "ok" } else { "degraded" };
    Json(json!({"status": status, "alerts": alerts}))
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let reasons = shared.view.not_ready();
    if reasons.is_empty() {
        Json(json!({"ready": true})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reasons": reasons}))).into_response()
    }
}

async fn stages(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(shared.view.stages().iter().map(|s| stage_json(s)).collect())
}

async fn stage(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.view.stage(&id) {
        Some(stage) => Json(stage_json(&stage)).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no stage '{id}'")}))).into_response(),
    }
}

async fn restart(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.view.stage(&id) {
        Some(stage) => {
            stage.restart_requested.store(true, std::sync::atomic::Ordering::Relaxed);
            (StatusCode::ACCEPTED, Json(json!({"restarting": id}))).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no stage '{id}'")}))).into_response(),
    }
}

async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match shared.view.reload().await {
        Some(Ok(done)) => Json(done).into_response(),
        Some(Err(why)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": why}))).into_response(),
        None => (StatusCode::CONFLICT, Json(json!({"error": "this node runs the built-in pipeline: there is no file to reload"})))
            .into_response(),
    }
}

async fn drain(State(shared): State<Arc<Shared>>) -> Response {
    tracing::info!("drain asked for through the admin API");
    shared.view.request_drain();
    (StatusCode::ACCEPTED, Json(json!({"draining": true}))).into_response()
}

async fn rooms(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!(shared.view.rooms().await))
}
