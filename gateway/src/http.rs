//! The HTTP shell: health endpoints now, and the router the login, lesson
//! and signaling routes join. `run` takes a bound listener and a shutdown
//! future, so tests start it on port 0 and stop it cleanly (mini-redis
//! `server::run`).
//!
//! `/livez` says only that the process serves requests; `/readyz` says
//! whether this node can admit people: every registered probe (state store,
//! identity provider, recorder) must answer. Losing a dependency turns
//! readiness red and never liveness, so an orchestrator stops routing new
//! lessons here without restarting a node that is still holding lessons.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// What a readiness probe returns: `Err` with a short reason when not ready.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How long one probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A named readiness check.
#[derive(Clone)]
pub struct Probe {
    name: &'static str,
    check: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe named `name` (e.g. "store") running `check`.
    pub fn new(
        name: &'static str,
        check: impl Fn() -> ProbeFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            check: Arc::new(check),
        }
    }

    /// The probe's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, (self.check)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }
}

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug, Default)]
pub struct AppState {
    /// Readiness probes, all of which must pass.
    pub probes: Vec<Probe>,
    /// Development mode (shown on the front page).
    pub dev: bool,
    /// The public keys of the gateway's token signing keys, served at
    /// `/.well-known/jwks.json` so the recorder and other nodes can verify
    /// service tokens.
    pub jwks: serde_json::Value,
}

/// The router: health endpoints and the key set, with security headers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

/// Serves `router` on `listener` under `limits` (timeouts, connection
/// caps: `chaperone_serve`) until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: chaperone_serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    chaperone_serve::serve(listener, router, limits, shutdown).await
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let results = futures_util::future::join_all(
        state
            .probes
            .iter()
            .map(|p| async move { (p.name(), p.run().await) }),
    )
    .await;
    let ready = results.iter().all(|(_, r)| r.is_ok());
    let checks: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_owned(),
                json!(r.err().unwrap_or_else(|| "ok".to_owned())),
            )
        })
        .collect();
    if !ready {
        tracing::warn!(?checks, "not ready");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}

async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.jwks)
}

/// Adds the security headers every response carries (one function for
/// every Chaperone listener: `chaperone_serve::security_headers`).
pub use chaperone_serve::security_headers;
