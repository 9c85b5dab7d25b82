//! The agent's admin HTTP server (axum): `/healthz`, `/ready`, `/metrics` and `/status`.
//!
//! - `/healthz`: 200 while the process serves HTTP at all (liveness).
//! - `/ready`: 200 once the source has been read completely once and the first configs are
//!   programmed; 503 before (readiness).
//! - `/metrics`: Prometheus text format.
//! - `/status`: JSON (see [`crate::status::AgentStatus`]): source problems, per-object status
//!   conditions, per-gateway versions with each instance's ACK/NACK state, probe states and
//!   the hub connection.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::hub_client::HubStatus;
use crate::status::AgentStatus;

/// What the admin handlers read; every part is a snapshot owned elsewhere.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) registry: Arc<Registry>,
    pub(crate) status: watch::Receiver<Arc<AgentStatus>>,
    pub(crate) hub: watch::Receiver<Arc<HubStatus>>,
    pub(crate) ready: watch::Receiver<bool>,
}

/// The admin routes.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

async fn ready(State(state): State<AdminState>) -> Response {
    if *state.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the source has not been read completely yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}\n"),
        )
            .into_response(),
    }
}

async fn status(State(state): State<AdminState>) -> Response {
    let mut status = AgentStatus::clone(&state.status.borrow());
    status.hub = Some(HubStatus::clone(&state.hub.borrow()));
    axum::Json(status).into_response()
}
