//! Active probes of gateways (HTTP `GET /ready` on their admin port) and backend endpoints
//! (TCP connect), and the hysteresis that turns raw results into up/down states.
//!
//! The split: [`ProbeState`] is pure (results in, transitions out) and is owned by the agent's
//! index task; [`Prober`] only runs probe loops for the current [`ProbeTargets`] and sends raw
//! [`ProbeResult`]s. So the one task that programs gateway configs also owns every health
//! state, and the hysteresis is tested without sockets or clocks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::ProbeConfig;

/// A health state after hysteresis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Health {
    /// No result yet. Backend endpoints are then trusted as their EndpointSlice says; gateways
    /// count as not ready.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failing.
    Down,
}

/// The hysteresis state of one probed target.
///
/// Rules (`rise`/`fall` from [`ProbeConfig`]):
/// - `Unknown` becomes `Up` on the first success: there is nothing to flap from yet, and a
///   fresh gateway should take traffic as soon as it says it is ready.
/// - `Unknown` or `Up` becomes `Down` after `fall` consecutive failures.
/// - `Down` becomes `Up` after `rise` consecutive successes.
/// - [`ProbeState::force_down`] (a gateway's subscription stream closed) is immediate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeState {
    health: Health,
    consecutive_ok: u32,
    consecutive_fail: u32,
    detail: String,
}

/// What a probe loop is probing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeTarget {
    /// A subscribed gateway instance, by its subscription session (a reconnect is a new
    /// session, so results of the old session's loop are ignored).
    Gateway {
        /// The subscription session id.
        session: u64,
    },
    /// A backend endpoint.
    Backend(SocketAddr),
}

/// One raw probe outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// What was probed.
    pub target: ProbeTarget,
    /// Whether it passed.
    pub ok: bool,
    /// A short description (`"ready"`, `"GET /ready answered 503"`, `"timed out after 300ms"`).
    pub detail: String,
}

/// The set of things to probe, published by the index task whenever subscriptions or
/// programmed backends change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeTargets {
    /// Gateway subscription session id → admin address (`host:port`) to fetch `/ready` from.
    pub gateways: BTreeMap<u64, String>,
    /// Backend endpoints to connect to.
    pub backends: BTreeSet<SocketAddr>,
}

/// Runs one probe loop per target and sends raw results. Dropping it stops every loop.
pub struct Prober {
    task: JoinHandle<()>,
}

// === impl ProbeState ===

impl ProbeState {
    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The detail of the latest result (or of the forced transition).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Consecutive successes so far (0 after a failure).
    pub fn consecutive_ok(&self) -> u32 {
        self.consecutive_ok
    }

    /// Consecutive failures so far (0 after a success).
    pub fn consecutive_fail(&self) -> u32 {
        self.consecutive_fail
    }

    /// Records one result; returns the new health when it changed.
    pub fn record(&mut self, ok: bool, detail: &str, config: &ProbeConfig) -> Option<Health> {
        detail.clone_into(&mut self.detail);
        let before = self.health;
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
            let rise = match self.health {
                Health::Unknown => 1,
                Health::Up | Health::Down => config.rise.max(1),
            };
            if self.health != Health::Up && self.consecutive_ok >= rise {
                self.health = Health::Up;
            }
        } else {
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
            if self.health != Health::Down && self.consecutive_fail >= config.fall.max(1) {
                self.health = Health::Down;
            }
        }
        (self.health != before).then_some(self.health)
    }

    /// Marks the target down at once (no hysteresis); returns the new health when it changed.
    pub fn force_down(&mut self, detail: &str) -> Option<Health> {
        let before = self.health;
        self.health = Health::Down;
        self.consecutive_ok = 0;
        self.consecutive_fail = self.consecutive_fail.saturating_add(1);
        detail.clone_into(&mut self.detail);
        (before != Health::Down).then_some(Health::Down)
    }
}

// === impl Health ===

impl Health {
    /// Lower-case name for logs, metrics and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

// === impl Prober ===

impl Prober {
    /// Starts probing whatever `targets` holds (now and after every change), sending each
    /// result to `results`. Each target gets its own loop, started at once (the first probe
    /// of a new target runs immediately) and stopped when the target disappears.
    pub fn spawn(
        config: ProbeConfig,
        targets: watch::Receiver<Arc<ProbeTargets>>,
        results: mpsc::Sender<ProbeResult>,
    ) -> Self {
        let task = tokio::spawn(run(config, targets, results));
        Self { task }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Aborts its loop when dropped, so removing a map entry stops the probe.
struct LoopGuard(JoinHandle<()>);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn run(
    config: ProbeConfig,
    mut targets: watch::Receiver<Arc<ProbeTargets>>,
    results: mpsc::Sender<ProbeResult>,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.gateway_timeout));
    connector.set_nodelay(true);
    // Keep-alive connections make a probe one request on an open socket; a gateway that dies
    // breaks its pooled connection, which fails the next probe at once.
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector);
    let mut loops: HashMap<ProbeTarget, LoopGuard> = HashMap::new();
    loop {
        let current = targets.borrow_and_update().clone();
        let wanted: HashMap<ProbeTarget, Option<String>> = current
            .gateways
            .iter()
            .map(|(session, admin)| {
                (
                    ProbeTarget::Gateway { session: *session },
                    Some(admin.clone()),
                )
            })
            .chain(
                current
                    .backends
                    .iter()
                    .map(|addr| (ProbeTarget::Backend(*addr), None)),
            )
            .collect();
        loops.retain(|target, _| wanted.contains_key(target));
        for (target, admin) in wanted {
            if loops.contains_key(&target) {
                continue;
            }
            let handle = match (&target, admin) {
                (ProbeTarget::Gateway { .. }, Some(admin)) => tokio::spawn(gateway_loop(
                    target.clone(),
                    admin,
                    client.clone(),
                    config.clone(),
                    results.clone(),
                )),
                (ProbeTarget::Backend(addr), _) => {
                    tokio::spawn(backend_loop(*addr, config.clone(), results.clone()))
                }
                (ProbeTarget::Gateway { .. }, None) => continue,
            };
            loops.insert(target, LoopGuard(handle));
        }
        if targets.changed().await.is_err() {
            return;
        }
    }
}

async fn gateway_loop(
    target: ProbeTarget,
    admin: String,
    client: HttpClient,
    config: ProbeConfig,
    results: mpsc::Sender<ProbeResult>,
) {
    let uri: Option<http::Uri> = format!("http://{admin}/ready").parse().ok();
    let mut pace = Pace::new(
        &config,
        config.gateway_interval,
        config.gateway_recheck_interval,
    );
    loop {
        let (ok, detail) = match &uri {
            Some(uri) => probe_http(&client, uri.clone(), config.gateway_timeout).await,
            None => (false, format!("admin address {admin:?} is not host:port")),
        };
        let wait = pace.record(ok);
        let result = ProbeResult {
            target: target.clone(),
            ok,
            detail,
        };
        if results.send(result).await.is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

async fn backend_loop(addr: SocketAddr, config: ProbeConfig, results: mpsc::Sender<ProbeResult>) {
    let mut pace = Pace::new(
        &config,
        config.backend_interval,
        config.backend_recheck_interval,
    );
    loop {
        let (ok, detail) = probe_tcp(addr, config.backend_timeout).await;
        let wait = pace.record(ok);
        let result = ProbeResult {
            target: ProbeTarget::Backend(addr),
            ok,
            detail,
        };
        if results.send(result).await.is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Chooses the wait before the next probe: the recheck interval while the loop's own view of
/// the target is mid-transition (fewer than `fall` failures after a success, or fewer than
/// `rise` successes after a failure), the normal interval otherwise.
///
/// The loop mirrors the hysteresis counts locally instead of asking the index, so the probe
/// pace never waits on another task.
#[derive(Debug)]
pub(crate) struct Pace {
    interval: Duration,
    recheck: Duration,
    rise: u32,
    fall: u32,
    last_ok: Option<bool>,
    streak: u32,
    settled: bool,
}

impl Pace {
    pub(crate) fn new(config: &ProbeConfig, interval: Duration, recheck: Duration) -> Self {
        Self {
            interval,
            recheck: recheck.min(interval),
            rise: config.rise.max(1),
            fall: config.fall.max(1),
            last_ok: None,
            streak: 0,
            settled: true,
        }
    }

    /// Records a result and returns how long to wait before the next probe.
    pub(crate) fn record(&mut self, ok: bool) -> Duration {
        if self.last_ok == Some(ok) {
            self.streak = self.streak.saturating_add(1);
        } else {
            // A change of result starts a pending transition; so does a first failure (a
            // target not judged yet goes down only after `fall` failures).
            self.settled = self.last_ok.is_none() && ok;
            self.streak = 1;
            self.last_ok = Some(ok);
        }
        let needed = if ok { self.rise } else { self.fall };
        if self.streak >= needed {
            self.settled = true;
        }
        if self.settled {
            self.interval
        } else {
            self.recheck
        }
    }
}

/// `GET uri`; passes on a 2xx answer within `timeout`.
async fn probe_http(client: &HttpClient, uri: http::Uri, timeout: Duration) -> (bool, String) {
    let attempt = async {
        let response = client
            .get(uri)
            .await
            .map_err(|error| describe_client_error(&error))?;
        let status = response.status();
        // Reading the (small) body lets the connection go back to the pool.
        let _ = response.into_body().collect().await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) if status.is_success() => (true, "ready".to_string()),
        Ok(Ok(status)) => (false, format!("GET /ready answered {}", status.as_u16())),
        Ok(Err(error)) => (false, error),
        Err(_) => (
            false,
            format!("GET /ready timed out after {}ms", timeout.as_millis()),
        ),
    }
}

/// Connects to `addr`; passes when the connection is established within `timeout`.
async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> (bool, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => (true, "connected".to_string()),
        Ok(Err(error)) => (false, format!("connect {addr}: {error}")),
        Err(_) => (
            false,
            format!("connect {addr}: timed out after {}ms", timeout.as_millis()),
        ),
    }
}

/// hyper's client error prints only "client error (Connect)"; the cause chain says why.
fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests;
