//! The admin server: `GET /ready` (200 once a config is applied and all its listeners are
//! bound, else 503), `GET /healthz`, `GET /metrics` (Prometheus text) and `GET /config` (the
//! version served and a summary, as JSON).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::runtime::Status;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    status: watch::Receiver<Status>,
    instance: Arc<str>,
}

/// Serves the admin API until the task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    status: watch::Receiver<Status>,
    instance: String,
) {
    let state = AdminState {
        registry,
        status,
        instance: Arc::from(instance),
    };
    let app = Router::new()
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app).await {
        warn!(%error, "admin server stopped");
    }
}

async fn ready(State(state): State<AdminState>) -> Response {
    let status = state.status.borrow().clone();
    if status.ready && status.version > 0 {
        (
            StatusCode::OK,
            format!("ready: config version {}\n", status.version),
        )
            .into_response()
    } else if status.version == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no config applied yet\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: listeners are not all bound\n",
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
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

#[derive(serde::Serialize)]
struct ConfigView<'a> {
    instance: &'a str,
    version: u64,
    ready: bool,
    bound: Vec<String>,
    last_error: Option<&'a str>,
    config: &'a crate::route::compile::ConfigSummary,
}

async fn config(State(state): State<AdminState>) -> Response {
    let status = state.status.borrow().clone();
    let view = ConfigView {
        instance: &state.instance,
        version: status.version,
        ready: status.ready,
        bound: status.bound.iter().map(ToString::to_string).collect(),
        last_error: status.last_error.as_deref(),
        config: &status.summary,
    };
    axum::Json(serde_json::to_value(&view).unwrap_or_default()).into_response()
}
