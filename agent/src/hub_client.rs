//! The agent's side of the hub's `Hub` gRPC service: register, then one session that carries
//! health reports up and `SharedConfig` snapshots down.
//!
//! Guarantees:
//! - Reports go out every `report_interval` on a healthy session, and at once when a gateway's
//!   readiness changes or a hostname's ready backend count crosses zero (the readiness epoch of
//!   the [`HealthView`] moves). That second path is what makes DNS fail over quickly when a
//!   gateway, or every backend of a hostname, dies.
//! - Every snapshot gets an answer: ACK once the index has programmed it, NACK with the
//!   conversion error (field path included) when it is not a valid `SharedConfig`. A NACKed
//!   snapshot changes nothing.
//! - A `SharedConfigDelta` (the hub sends them because the hello says the agent takes them) is
//!   applied to the config in use when that is the delta's base version, and then handled like
//!   a snapshot of the result. Otherwise (the agent refused the base, or got it from its state
//!   directory) the answer is an ACK with `want_whole`, and the hub sends the whole config.
//! - Accepted snapshots are written to the state directory (atomically) so that a restarted
//!   agent serves the hub's routes even while no hub is reachable.
//!
//! Reconnection: on any failure (connect, register, session end) the client moves to the next
//! hub URL and waits an exponentially growing delay (`backoff_initial` doubling up to
//! `backoff_max`) with jitter (a random point in the upper half of the delay), so agents that
//! lost the same hub do not come back in lockstep. A session that got as far as its first
//! message from the hub resets the delay.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_proto::model::{ClusterName, SharedConfig, SharedConfigDelta, SharedStatusBasis};
use meridian_proto::pb;
use meridian_proto::pb::hub_client::HubClient as GrpcHubClient;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::config::HubClientConfig;
use crate::health::report::HealthView;
use crate::health::shared_status::SharedSent;
use crate::index::IndexHandle;
use crate::metrics::Metrics;

/// The hub connection as `/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HubStatus {
    /// `standalone`, `connecting`, `connected` or `backoff`.
    pub state: String,
    /// The hub URL in use or being tried.
    pub hub: Option<String>,
    /// The hub node id that answered `Register`.
    pub node_id: Option<u64>,
    /// The latest failure, if the client is not connected.
    pub last_error: Option<String>,
    /// Version of the SharedConfig in use (0 when none).
    pub shared_version: u64,
    /// Where the SharedConfig in use came from: `hub`, `state-dir` or `none`.
    pub shared_source: String,
    /// The latest NACK sent, as `version: error`.
    pub last_nack: Option<String>,
    /// Reports written on the current session.
    pub reports_sent: u64,
    /// Unix milliseconds of the latest state change.
    pub since_unix_ms: u64,
}

/// Everything the hub client task needs.
pub(crate) struct HubClientParts {
    /// Hub endpoints, validated at spawn.
    pub(crate) hubs: Vec<Endpoint>,
    /// The cluster to register as.
    pub(crate) cluster: ClusterName,
    /// Timings.
    pub(crate) config: HubClientConfig,
    /// Where to persist accepted SharedConfigs.
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// The cluster's health, republished by the index on every change.
    pub(crate) health: watch::Receiver<Arc<HealthView>>,
    /// Where accepted SharedConfigs go.
    pub(crate) index: IndexHandle,
    /// True once the source was read and gateways programmed; the client registers only
    /// then, so that `Register` and the first report describe the cluster.
    pub(crate) ready: watch::Receiver<bool>,
    /// Published connection state.
    pub(crate) status: watch::Sender<Arc<HubStatus>>,
    /// The SharedConfig already in use (from the state directory); its version goes in `hello`.
    pub(crate) initial: Option<Arc<SharedConfig>>,
    /// Metrics.
    pub(crate) metrics: Metrics,
}

/// How long writing one message to the hub session may wait for the hub to read; a hub that
/// stops reading is treated like a broken session.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes one message to the session, failing the attempt when the hub stops reading.
async fn send(
    outbound: &mpsc::Sender<pb::AgentMessage>,
    message: pb::AgentMessage,
) -> Result<(), AttemptError> {
    match tokio::time::timeout(SEND_TIMEOUT, outbound.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(AttemptError::Closed),
        Err(_) => Err(AttemptError::Session(format!(
            "the hub read nothing for {}s",
            SEND_TIMEOUT.as_secs()
        ))),
    }
}

/// A random id for this agent process, sent in `hello`.
fn instance_id() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The delay before attempt `failures` (1-based): `initial * 2^(failures-1)` capped at `max`,
/// then a uniformly random point in its upper half.
pub(crate) fn backoff_delay(config: &HubClientConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let full = config
        .backoff_initial
        .saturating_mul(1u32 << exponent)
        .min(config.backoff_max);
    let half = full / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
}

/// Why one attempt ended.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("register: {0}")]
    Register(String),
    #[error("session: {0}")]
    Session(String),
    #[error("session closed by the hub")]
    Closed,
    #[error("agent shutting down")]
    Shutdown,
}

/// Runs until `shutdown` fires.
pub(crate) async fn run(mut parts: HubClientParts, mut shutdown: watch::Receiver<bool>) {
    let instance = instance_id();
    let mut current = parts.initial.clone();
    let current_version = current.as_ref().map_or(0, |c| c.version);
    let mut failures: u32 = 0;
    let mut next_hub = 0usize;
    let mut seq: u64 = 0;
    parts.status.send_modify(|status| {
        let status = Arc::make_mut(status);
        status.shared_version = current_version;
        status.shared_source = if current_version > 0 {
            "state-dir"
        } else {
            "none"
        }
        .into();
    });
    let mut ready = parts.ready.clone();
    tokio::select! {
        _ = ready.wait_for(|ready| *ready) => {}
        _ = shutdown.wait_for(|stop| *stop) => return,
    }
    loop {
        let endpoint = parts.hubs[next_hub % parts.hubs.len()].clone();
        let url = endpoint.uri().to_string();
        set_state(&parts.status, "connecting", Some(&url), None);
        let mut got_message = false;
        let outcome = tokio::select! {
            outcome = attempt(&mut parts, &endpoint, &instance, &mut current, &mut seq, &mut got_message) => outcome,
            _ = shutdown.wait_for(|stop| *stop) => Err(AttemptError::Shutdown),
        };
        parts.metrics.hub_connected.set(0);
        let error = match outcome {
            Err(AttemptError::Shutdown) => return,
            Ok(()) => AttemptError::Closed,
            Err(error) => error,
        };
        parts.metrics.hub_connect_failures.inc();
        failures = if got_message {
            1
        } else {
            failures.saturating_add(1)
        };
        next_hub = next_hub.wrapping_add(1);
        let delay = backoff_delay(&parts.config, failures);
        tracing::warn!(hub = %url, %error, retry_in_ms = delay.as_millis() as u64, "hub connection failed");
        set_state(
            &parts.status,
            "backoff",
            Some(&url),
            Some(error.to_string()),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn set_state(
    status: &watch::Sender<Arc<HubStatus>>,
    state: &str,
    hub: Option<&str>,
    error: Option<String>,
) {
    status.send_modify(|status| {
        let status = Arc::make_mut(status);
        status.state = state.to_string();
        status.hub = hub.map(str::to_string);
        if error.is_some() || state == "connected" {
            status.last_error = error;
        }
        if state != "connected" {
            status.reports_sent = 0;
        }
        status.since_unix_ms = unix_ms();
    });
}

/// One connection: connect, register, run the session until it ends.
async fn attempt(
    parts: &mut HubClientParts,
    endpoint: &Endpoint,
    instance: &str,
    current: &mut Option<Arc<SharedConfig>>,
    seq: &mut u64,
    got_message: &mut bool,
) -> Result<(), AttemptError> {
    let url = endpoint.uri().to_string();
    let channel: Channel = endpoint
        .connect()
        .await
        .map_err(|error| AttemptError::Connect(describe(&error)))?;
    let mut client = GrpcHubClient::new(channel)
        .max_decoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES);

    let health = parts.health.borrow().clone();
    let register = pb::RegisterRequest {
        cluster: parts.cluster.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        gateway_addresses: health
            .gateway_addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let registered = tokio::time::timeout(parts.config.register_timeout, client.register(register))
        .await
        .map_err(|_| {
            AttemptError::Register(format!(
                "no answer within {}ms",
                parts.config.register_timeout.as_millis()
            ))
        })?
        .map_err(|status| {
            if status.code() == tonic::Code::NotFound {
                tracing::error!(
                    cluster = %parts.cluster, hub = %url, message = status.message(),
                    "the hub does not know this cluster; create it on the hub (meridian ctl) and the agent will retry"
                );
            }
            AttemptError::Register(format!("{:?}: {}", status.code(), status.message()))
        })?
        .into_inner();
    parts
        .status
        .send_modify(|status| Arc::make_mut(status).node_id = Some(registered.node_id));

    let (outbound, outbound_rx) = mpsc::channel::<pb::AgentMessage>(16);
    let hello = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::AgentHello {
            cluster: parts.cluster.to_string(),
            have_version: current.as_ref().map_or(0, |c| c.version),
            instance_id: instance.to_string(),
            accepts_config_delta: true,
        })),
    };
    // The channel is empty, so this cannot wait.
    let _ = outbound.send(hello).await;
    let mut inbound = client
        .session(ReceiverStream::new(outbound_rx))
        .await
        .map_err(|status| {
            AttemptError::Session(format!("{:?}: {}", status.code(), status.message()))
        })?
        .into_inner();
    tracing::info!(hub = %url, node_id = registered.node_id, cluster = %parts.cluster, "hub session established");
    parts.metrics.hub_connected.set(1);
    set_state(&parts.status, "connected", Some(&url), None);

    let mut ticker = tokio::time::interval(parts.config.report_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_epoch = None;
    // A new session may reach another hub node, or a new leader: send the shared status again.
    let mut shared_sent = SharedSent::default();
    // The version of the config this session's hub sent and the agent took: the only base a
    // delta may apply to. A config from the state directory, or from another session, may
    // carry the same version with other content (a rebuilt hub), so it is never one.
    let mut session_base: Option<u64> = None;
    loop {
        tokio::select! {
            // Readiness changes first: they are the failover signal.
            biased;
            changed = parts.health.changed() => {
                if changed.is_err() {
                    return Err(AttemptError::Shutdown);
                }
                let epoch = parts.health.borrow().readiness_epoch;
                if reported_epoch != Some(epoch) {
                    send_report(parts, &outbound, seq, &mut reported_epoch, &mut shared_sent).await?;
                    ticker.reset();
                }
            }
            _ = ticker.tick() => {
                send_report(parts, &outbound, seq, &mut reported_epoch, &mut shared_sent).await?;
            }
            message = inbound.message() => {
                let message = message
                    .map_err(|status| AttemptError::Session(format!("{:?}: {}", status.code(), status.message())))?;
                let Some(message) = message else { return Ok(()) };
                *got_message = true;
                match message.kind {
                    Some(pb::hub_message::Kind::Config(config)) => {
                        let ack = apply_snapshot(parts, config, current).await?;
                        if ack.error.is_empty() {
                            session_base = Some(ack.version);
                        }
                        let ack = pb::AgentMessage { kind: Some(pb::agent_message::Kind::Ack(ack)) };
                        send(&outbound, ack).await?;
                    }
                    Some(pb::hub_message::Kind::ConfigDelta(delta)) => {
                        let ack = apply_delta(parts, delta, current, session_base).await?;
                        if ack.error.is_empty() && !ack.want_whole {
                            session_base = Some(ack.version);
                        }
                        let ack = pb::AgentMessage { kind: Some(pb::agent_message::Kind::Ack(ack)) };
                        send(&outbound, ack).await?;
                    }
                    Some(pb::hub_message::Kind::ResendSharedStatus(_)) => {
                        // A new hub leader: the next reports carry the whole status.
                        shared_sent = SharedSent::default();
                    }
                    // A kind of a later hub build.
                    None => {}
                }
            }
        }
    }
}

async fn send_report(
    parts: &mut HubClientParts,
    outbound: &mpsc::Sender<pb::AgentMessage>,
    seq: &mut u64,
    reported_epoch: &mut Option<u64>,
    shared_sent: &mut SharedSent,
) -> Result<(), AttemptError> {
    let view = parts.health.borrow_and_update().clone();
    *seq += 1;
    let shared = view
        .shared
        .as_ref()
        .and_then(|shared| shared_sent.next(shared, &view.rejected, std::time::Instant::now()));
    if let Some(shared) = &shared {
        let form = match shared.basis {
            SharedStatusBasis::Whole { .. } => "whole",
            SharedStatusBasis::Delta { .. } => "delta",
        };
        parts
            .metrics
            .shared_status_reports
            .get_or_create(&[("form", form)])
            .inc();
        parts
            .metrics
            .shared_status_routes
            .get_or_create(&[("form", form)])
            .inc_by(shared.status.routes.len() as u64);
    }
    let report = view.report(&parts.cluster, *seq, shared);
    let message = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Health(pb::HealthReport::from(
            &report,
        ))),
    };
    send(outbound, message).await?;
    parts.metrics.hub_reports.inc();
    if *reported_epoch != Some(view.readiness_epoch) {
        if let (Some(changed_at), Some(_)) = (view.readiness_changed_at, *reported_epoch) {
            parts
                .metrics
                .readiness_report_seconds
                .observe(changed_at.elapsed().as_secs_f64());
            tracing::info!(
                epoch = view.readiness_epoch,
                after_us = changed_at.elapsed().as_micros() as u64,
                ready = view.gateways.iter().filter(|g| g.ready).count(),
                gateways = view.gateways.len(),
                serving_hostnames = view
                    .hostnames
                    .iter()
                    .filter(|h| h.ready_endpoints > 0)
                    .count(),
                hostnames = view.hostnames.len(),
                "reported a readiness change (gateway, or hostname backends crossing zero) to the hub"
            );
        }
        *reported_epoch = Some(view.readiness_epoch);
    }
    parts
        .status
        .send_modify(|status| Arc::make_mut(status).reports_sent += 1);
    Ok(())
}

/// The NACK of a config the agent could not take, counted and shown in `/status`.
fn refuse(parts: &mut HubClientParts, version: u64, error: String) -> pb::ConfigAck {
    tracing::warn!(version, %error, "rejected a SharedConfig from the hub; keeping the last good one");
    parts.metrics.shared_config_rejections.inc();
    parts.status.send_modify(|status| {
        Arc::make_mut(status).last_nack = Some(format!("{version}: {error}"))
    });
    pb::ConfigAck {
        version,
        error,
        want_whole: false,
    }
}

fn ack(version: u64) -> pb::ConfigAck {
    pb::ConfigAck {
        version,
        error: String::new(),
        want_whole: false,
    }
}

/// Converts, applies and persists one snapshot; returns the ACK or NACK to send.
async fn apply_snapshot(
    parts: &mut HubClientParts,
    message: pb::SharedConfig,
    current: &mut Option<Arc<SharedConfig>>,
) -> Result<pb::ConfigAck, AttemptError> {
    let version = message.version;
    let config = match SharedConfig::try_from(message) {
        Ok(config) => config,
        Err(error) => {
            let error = format!("invalid SharedConfig version {version}: {error}");
            return Ok(refuse(parts, version, error));
        }
    };
    if current.as_deref() == Some(&config) {
        // The snapshot every new session starts with, unchanged: nothing to apply or save.
        return Ok(ack(version));
    }
    install(parts, config, current).await
}

/// Converts a delta and applies it to the config in use; asks for the whole config when the
/// config in use is not the delta's base, or not one this session took (`session_base`).
async fn apply_delta(
    parts: &mut HubClientParts,
    message: pb::SharedConfigDelta,
    current: &mut Option<Arc<SharedConfig>>,
    session_base: Option<u64>,
) -> Result<pb::ConfigAck, AttemptError> {
    let version = message.version;
    if session_base != Some(message.base_version) {
        tracing::info!(
            version,
            base = message.base_version,
            session_base,
            "the delta's base is not a config this session took; asking the hub for the whole SharedConfig"
        );
        parts.metrics.shared_config_resyncs.inc();
        return Ok(pb::ConfigAck {
            version,
            error: String::new(),
            want_whole: true,
        });
    }
    let delta = match SharedConfigDelta::try_from(message) {
        Ok(delta) => delta,
        Err(error) => {
            let error = format!("invalid SharedConfigDelta to version {version}: {error}");
            return Ok(refuse(parts, version, error));
        }
    };
    let empty = SharedConfig::default();
    let base = current.as_deref().unwrap_or(&empty);
    let config = match delta.apply(base) {
        Ok(config) => config,
        Err(mismatch) => {
            tracing::info!(%mismatch, "asking the hub for the whole SharedConfig");
            parts.metrics.shared_config_resyncs.inc();
            return Ok(pb::ConfigAck {
                version,
                error: String::new(),
                want_whole: true,
            });
        }
    };
    parts.metrics.shared_config_deltas.inc();
    install(parts, config, current).await
}

/// Programs, records and persists a config the agent accepted.
async fn install(
    parts: &mut HubClientParts,
    config: SharedConfig,
    current: &mut Option<Arc<SharedConfig>>,
) -> Result<pb::ConfigAck, AttemptError> {
    let version = config.version;
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if version < current_version {
        // The hub is the source of truth even when its version goes back (a lagging node,
        // or a rebuilt hub); say so, because it is unusual.
        tracing::info!(
            version,
            previous = current_version,
            "hub sent an older SharedConfig version; applying it"
        );
    }
    let n_routes = config.http_routes.len();
    let config = Arc::new(config);
    if parts.index.apply_shared(config.clone()).await.is_err() {
        return Err(AttemptError::Shutdown);
    }
    *current = Some(config.clone());
    parts
        .metrics
        .shared_config_version
        .set(i64::try_from(version).unwrap_or(i64::MAX));
    parts.status.send_modify(|status| {
        let status = Arc::make_mut(status);
        status.shared_version = version;
        status.shared_source = "hub".into();
    });
    tracing::info!(
        version,
        routes = n_routes,
        "applied SharedConfig from the hub"
    );
    if let Some(dir) = parts.state_dir.clone() {
        let stored = tokio::task::spawn_blocking(move || {
            crate::state_dir::store_shared_config(&dir, &config)
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not persist the SharedConfig; a restart without a hub will not have it")
            }
            Err(error) => tracing::warn!(%error, "persisting the SharedConfig failed"),
        }
    }
    Ok(ack(version))
}

/// tonic's transport error prints only "transport error"; the cause chain says why.
fn describe(error: &tonic::transport::Error) -> String {
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
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_in_the_upper_half() {
        let config = HubClientConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ..HubClientConfig::default()
        };
        let table = [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (7, 5000),
            (40, 5000),
        ];
        for (failures, full_ms) in table {
            for _ in 0..50 {
                let delay = backoff_delay(&config, failures).as_millis() as u64;
                assert!(
                    delay >= full_ms / 2 && delay <= full_ms,
                    "failures {failures}: {delay}ms outside [{}, {full_ms}]",
                    full_ms / 2
                );
            }
        }
    }
}
