//! [`spawn`] and [`GatewayHandle`]: the single task that owns the bound ports and swaps in
//! compiled configs, fed by a closed [`Msg`] enum with `oneshot` replies.
//!
//! Applying a config: compile (no side effects) → bind new ports (on failure, close them and
//! change nothing) → re-bind ports whose kind or addresses changed → store the new table in
//! every kept port's `ArcSwap` → drain removed ports in the background. Requests already in
//! flight keep the table they loaded; the next request on any connection sees the new one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_proto::model::gateway::GatewayConfig;
use prometheus_client::registry::Registry;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::admin;
use crate::backend::pool::PoolSettings;
use crate::error::{ConfigError, GatewayError};
use crate::metrics::{GatewayMetrics, ResultLabels};
use crate::options::GatewayOptions;
use crate::proxy::server::{BoundPort, PortState, Shared, bind};
use crate::proxy::shards::Shards;
use crate::route::compile::{CompileContext, ConfigSummary, PoolMap, compile};

/// A running gateway. Cheap to clone; every clone controls the same gateway. When the last
/// clone is dropped the gateway stops at once (call [`GatewayHandle::shutdown`] to drain).
#[derive(Debug, Clone)]
pub struct GatewayHandle {
    tx: mpsc::Sender<Msg>,
    admin_addr: SocketAddr,
    status: watch::Receiver<Status>,
}

/// What the runtime publishes after every change (read by the admin server and the handle).
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    /// Version served (0 before the first config).
    pub(crate) version: u64,
    /// True once a config is applied and all its listeners are bound; false after shutdown.
    pub(crate) ready: bool,
    /// Summary of the config served.
    pub(crate) summary: Arc<ConfigSummary>,
    /// Addresses bound per port.
    pub(crate) bound: Vec<SocketAddr>,
    /// The last rejected config's error, if the last apply failed.
    pub(crate) last_error: Option<String>,
}

/// Messages to the runtime task.
#[derive(Debug)]
enum Msg {
    /// Apply a config.
    Apply(Box<GatewayConfig>, oneshot::Sender<Result<(), ConfigError>>),
    /// Drain and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Starts a gateway with no config: the admin server answers at once (`/ready` is 503 until
/// the first [`GatewayHandle::apply`]), and no traffic port is bound yet.
pub async fn spawn(
    options: GatewayOptions,
    mut registry: Registry,
) -> Result<GatewayHandle, GatewayError> {
    let metrics = GatewayMetrics::new(&mut registry);
    let admin_listener = tokio::net::TcpListener::bind(options.admin_addr)
        .await
        .map_err(|source| GatewayError::BindAdmin {
            addr: options.admin_addr,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| GatewayError::BindAdmin {
            addr: options.admin_addr,
            source,
        })?;
    let n_shards = match options.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    };
    let shards = Shards::start(n_shards).map_err(GatewayError::Shards)?;
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (tx, rx) = mpsc::channel(16);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(registry),
        status_rx.clone(),
        options.instance.clone(),
    ));
    let runtime = Runtime {
        shared: Arc::new(Shared::new(metrics.clone(), options.clone())),
        metrics,
        ports: BTreeMap::new(),
        pools: PoolMap::new(),
        status: status_tx,
        pool_settings: PoolSettings {
            max_idle: options.max_idle_per_endpoint,
            connect_timeout: options.connect_timeout,
            shards: shards.len(),
        },
        shards: Some(shards),
        background_drains: Vec::new(),
    };
    tokio::spawn(runtime.run(rx, admin_task));
    info!(admin = %admin_addr, instance = %options.instance, "gateway started");
    Ok(GatewayHandle {
        tx,
        admin_addr,
        status: status_rx,
    })
}

/// Validates and compiles `config` exactly as [`GatewayHandle::apply`] would, without binding
/// or serving anything (a dry run; also what the route-compile benchmark measures). Returns
/// the number of route matches compiled.
pub fn check_config(config: &GatewayConfig) -> Result<usize, ConfigError> {
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::new(&mut registry);
    let pools = PoolMap::new();
    let ctx = CompileContext {
        metrics: &metrics,
        pools: &pools,
        pool_settings: PoolSettings {
            max_idle: 0,
            connect_timeout: std::time::Duration::from_secs(1),
            shards: 1,
        },
        default_backoff: std::time::Duration::ZERO,
    };
    let compiled = compile(config, &ctx)?;
    Ok(compiled.summary.listeners.iter().map(|l| l.entries).sum())
}

// === impl GatewayHandle ===

impl GatewayHandle {
    /// Validates and compiles `config`, binds new listeners, swaps the route table atomically
    /// and drains removed listeners. On error nothing changes: the last good config keeps
    /// serving, and the error names the bad field.
    pub async fn apply(&self, config: GatewayConfig) -> Result<(), ConfigError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Apply(Box::new(config), reply))
            .await
            .map_err(|_| ConfigError::Closed)?;
        rx.await.map_err(|_| ConfigError::Closed)?
    }

    /// The admin server's address (`/ready`, `/healthz`, `/metrics`, `/config`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The version of the config being served; 0 before the first config.
    pub fn config_version(&self) -> u64 {
        self.status.borrow().version
    }

    /// Whether a config is applied and all its listeners are bound (what `/ready` reports).
    pub fn is_ready(&self) -> bool {
        self.status.borrow().ready
    }

    /// The traffic addresses currently bound (all ports).
    pub fn bound_addrs(&self) -> Vec<SocketAddr> {
        self.status.borrow().bound.clone()
    }

    /// Drains every listener (in-flight requests finish, up to the drain timeout) and stops
    /// the gateway. Idempotent.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

// === impl Runtime ===

struct Runtime {
    shared: Arc<Shared>,
    metrics: GatewayMetrics,
    ports: BTreeMap<u16, BoundPort>,
    pools: PoolMap,
    status: watch::Sender<Status>,
    pool_settings: PoolSettings,
    /// The serving threads; dropped (stopped) after the final drain.
    shards: Option<Shards>,
    /// Drains still running of removed or rotated ports: shutdown waits for them too, so the
    /// connections they close are closed (and logged) by the drain, not by stopping the threads.
    background_drains: Vec<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, admin_task: tokio::task::JoinHandle<()>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Apply(config, reply) => {
                    let version = config.version;
                    let result = self.apply(&config).await;
                    match &result {
                        Ok(()) => {
                            self.metrics
                                .config_applies
                                .get_or_create(&ResultLabels { result: "ok" })
                                .inc();
                            info!(version, "config applied");
                        }
                        Err(error) => {
                            self.metrics
                                .config_applies
                                .get_or_create(&ResultLabels { result: "rejected" })
                                .inc();
                            self.status
                                .send_modify(|s| s.last_error = Some(error.to_string()));
                            warn!(version, %error, "config rejected; keeping the last good config");
                        }
                    }
                    let _ = reply.send(result);
                }
                Msg::Shutdown(reply) => {
                    self.status.send_modify(|s| s.ready = false);
                    let timeout = self.shared.options.drain_timeout;
                    let mut drains = Vec::new();
                    for (_, mut port) in std::mem::take(&mut self.ports) {
                        port.close().await;
                        drains.push(port.drain(timeout));
                    }
                    futures::future::join_all(drains).await;
                    // Each is bounded by the drain timeout (and a second's grace) too.
                    futures::future::join_all(std::mem::take(&mut self.background_drains)).await;
                    self.shards = None;
                    admin_task.abort();
                    info!("gateway stopped");
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    async fn apply(&mut self, config: &GatewayConfig) -> Result<(), ConfigError> {
        self.background_drains.retain(|drain| !drain.is_finished());
        let ctx = CompileContext {
            metrics: &self.metrics,
            pools: &self.pools,
            pool_settings: self.pool_settings,
            default_backoff: self.shared.options.default_retry_backoff,
        };
        let compiled = compile(config, &ctx)?;

        // Bind brand-new ports first: a failure here leaves everything as it was.
        let mut fresh = BTreeMap::new();
        for (port, plan) in &compiled.ports {
            if self.ports.contains_key(port) {
                continue;
            }
            match bind(&plan.bind, self.pool_settings.shards).await {
                Ok(listeners) => {
                    fresh.insert(*port, listeners);
                }
                Err((addr, error)) => {
                    return Err(ConfigError::Bind {
                        listener: plan.listener_names.join(","),
                        addr,
                        error: error.to_string(),
                    });
                }
            }
        }

        let timeout = self.shared.options.drain_timeout;
        // Ports that disappear, or whose kind or addresses change, are closed and drained.
        let stale: Vec<u16> = self
            .ports
            .iter()
            .filter(|(port, bound)| match compiled.ports.get(port) {
                None => true,
                Some(plan) => plan.kind != bound.kind || !same_addrs(&plan.bind, &bound.addrs),
            })
            .map(|(port, _)| *port)
            .collect();
        let mut rebind_error = None;
        for port in stale {
            let Some(mut bound) = self.ports.remove(&port) else {
                continue;
            };
            bound.close().await;
            self.background_drains
                .push(tokio::spawn(bound.drain(timeout)));
            if let Some(plan) = compiled.ports.get(&port) {
                match bind(&plan.bind, self.pool_settings.shards).await {
                    Ok(listeners) => {
                        fresh.insert(port, listeners);
                    }
                    Err((addr, error)) => {
                        rebind_error.get_or_insert(ConfigError::Bind {
                            listener: plan.listener_names.join(","),
                            addr,
                            error: error.to_string(),
                        });
                    }
                }
            }
        }

        for (port, plan) in compiled.ports {
            if let Some(bound) = self.ports.get_mut(&port) {
                bound.state.table.store(plan.table);
                if bound.client_validation != plan.client_validation {
                    // Connections keep the validation of their handshake: ask them to finish,
                    // so that clients reconnect under the new one (the port keeps listening).
                    info!(
                        port,
                        "client certificate validation changed; rotating connections"
                    );
                    let rotation = bound
                        .state
                        .rotate_connections(self.shared.options.drain_timeout);
                    self.background_drains.push(rotation);
                    bound.client_validation = plan.client_validation;
                }
            } else if let Some(listeners) = fresh.remove(&port) {
                let state = Arc::new(PortState::new(plan.table, &self.metrics));
                let Some(shards) = &self.shards else { continue };
                let mut bound = BoundPort::start(shards, listeners, state, plan.kind, &self.shared);
                bound.client_validation = plan.client_validation;
                info!(port, addrs = ?bound.addrs, listeners = ?plan.listener_names, "listening");
                self.ports.insert(port, bound);
            }
        }
        self.pools = compiled.pools;
        self.metrics
            .config_version
            .set(i64::try_from(compiled.version).unwrap_or(i64::MAX));
        let bound: Vec<SocketAddr> = self
            .ports
            .values()
            .flat_map(|p| p.addrs.iter().copied())
            .collect();
        let ready = rebind_error.is_none();
        self.status.send_modify(|s| {
            s.version = compiled.version;
            s.ready = ready;
            s.summary = Arc::new(compiled.summary);
            s.bound = bound;
            s.last_error = None;
        });
        match rebind_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn same_addrs(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}
