//! `meridian-gateway`: the per-cluster data plane. It executes a programmed
//! [`GatewayConfig`](meridian_proto::model::gateway::GatewayConfig) with Gateway API semantics
//! over hyper 1 (HTTP/1.1, h2c, HTTP/2 over TLS) and rustls.
//!
//! Code map:
//! - [`options`]: [`GatewayOptions`], plain data (admin address, limits, drain timeout).
//! - `runtime`: [`spawn`] and [`GatewayHandle`]; the single task that owns the bound ports and
//!   swaps compiled tables.
//! - `route`: the table compiled from a config (`compile`), hostname and listener selection
//!   (`host`), matchers and the precedence ladder (`matcher`), gRPC matching (`grpc`).
//! - `filter`: header modifiers, redirects, rewrites, mirrors, CORS.
//! - `backend`: weighted selection, per-endpoint keep-alive pools (`pool`) and the lean
//!   HTTP/1.1 client that carries bodyless `GET`/`HEAD` requests (`h1`).
//! - `tls`: certificates, SNI certificate choice, ClientHello parsing for passthrough.
//! - `proxy`: accept loops and draining (`server`), the request pipeline (`handler`,
//!   `forward`), TLS passthrough, body types. Its module doc has the life of a request.
//! - `admin`: `/ready`, `/healthz`, `/metrics`, `/config`.
//! - [`agent`]: [`run_agent_subscription`], the ConfigDiscovery client (ACK/NACK).
//! - `metrics`: Prometheus families and lock-free per-rule handles.
//! - [`echo`]: the echo backend of `meridian echo` and the tests (not part of the data path).
//!
//! **Invariant:** the request path reads one immutable compiled table per request through an
//! `ArcSwap`; the only lock it can take is an endpoint pool's short push/pop.
//! **Invariant:** a config that fails to compile or bind changes nothing; the last good one
//! keeps serving.

mod admin;
pub mod agent;
mod backend;
pub mod echo;
pub mod error;
mod filter;
#[cfg(test)]
mod fixtures;
mod metrics;
pub mod options;
mod proxy;
mod route;
mod runtime;
mod tls;

pub use agent::run_agent_subscription;
pub use error::{ConfigError, GatewayError};
pub use options::GatewayOptions;
/// The metrics registry type [`spawn`] takes (re-exported so callers need no direct
/// prometheus-client dependency).
pub use prometheus_client::registry::Registry;
pub use runtime::{GatewayHandle, check_config, spawn};
