//! The agent's Prometheus metrics (`meridian_agent_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label.
pub(crate) type Label = [(&'static str, &'static str); 1];
/// Two labels.
pub(crate) type Labels2 = [(&'static str, &'static str); 2];

/// Handles to every agent metric; cheap to clone (each metric is an `Arc` inside).
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    /// Source files read, by `result` (`ok`, `invalid`, `removed`).
    pub(crate) source_reads: Family<Label, Counter>,
    /// Source problems currently reported (files whose last good content is being kept).
    pub(crate) source_problems: Gauge,
    /// Programmed gateway configs that changed and got a new version.
    pub(crate) config_versions: Counter,
    /// Gateway subscription streams currently open.
    pub(crate) gateway_subscriptions: Gauge,
    /// Gateway answers to snapshots, by `result` (`ack`, `nack`).
    pub(crate) gateway_acks: Family<Label, Counter>,
    /// Probe state changes, by `kind` (`gateway`, `backend`) and `to` (`up`, `down`).
    pub(crate) probe_transitions: Family<Labels2, Counter>,
    /// 1 while a hub session is established.
    pub(crate) hub_connected: Gauge,
    /// Failed attempts to reach a hub (connect, register or session).
    pub(crate) hub_connect_failures: Counter,
    /// Health reports written to the hub session.
    pub(crate) hub_reports: Counter,
    /// Reports carrying the shared status, by `form` (`whole`, `delta`).
    pub(crate) shared_status_reports: Family<Label, Counter>,
    /// Route statuses those reports carried, by `form` (`whole`, `delta`).
    pub(crate) shared_status_routes: Family<Label, Counter>,
    /// Version of the SharedConfig in use (0 when none).
    pub(crate) shared_config_version: Gauge,
    /// SharedConfig snapshots from the hub that were rejected (NACKed).
    pub(crate) shared_config_rejections: Counter,
    /// SharedConfigDeltas from the hub applied to the config in use.
    pub(crate) shared_config_deltas: Counter,
    /// SharedConfigDeltas whose base was not the config in use (the whole config was asked for).
    pub(crate) shared_config_resyncs: Counter,
    /// Seconds from a gateway readiness change being observed to the report carrying it
    /// being written to the hub session.
    pub(crate) readiness_report_seconds: Histogram,
    /// Status writes to Kubernetes, by `kind` and `result` (`ok`, `conflict`, `failed`).
    pub(crate) status_writes: Family<Labels2, Counter>,
    /// Kubernetes Events recorded for condition changes, by `result` (`ok`, `failed`,
    /// `dropped`, `skipped`).
    pub(crate) events: Family<[(&'static str, &'static str); 1], Counter>,
}

// === impl Metrics ===

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            source_reads: Family::default(),
            source_problems: Gauge::default(),
            config_versions: Counter::default(),
            gateway_subscriptions: Gauge::default(),
            gateway_acks: Family::default(),
            probe_transitions: Family::default(),
            hub_connected: Gauge::default(),
            hub_connect_failures: Counter::default(),
            hub_reports: Counter::default(),
            shared_status_reports: Family::default(),
            shared_status_routes: Family::default(),
            shared_config_version: Gauge::default(),
            shared_config_rejections: Counter::default(),
            shared_config_deltas: Counter::default(),
            shared_config_resyncs: Counter::default(),
            readiness_report_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            status_writes: Family::default(),
            events: Family::default(),
        };
        let agent = registry.sub_registry_with_prefix("meridian_agent");
        agent.register(
            "source_reads",
            "Source files read, by result (ok, invalid, removed)",
            metrics.source_reads.clone(),
        );
        agent.register(
            "source_problems",
            "Source problems currently reported; the last good content of those files is kept",
            metrics.source_problems.clone(),
        );
        agent.register(
            "config_versions",
            "Programmed gateway configs that changed and got a new version",
            metrics.config_versions.clone(),
        );
        agent.register(
            "gateway_subscriptions",
            "Gateway subscription streams currently open",
            metrics.gateway_subscriptions.clone(),
        );
        agent.register(
            "gateway_acks",
            "Gateway answers to config snapshots, by result (ack, nack)",
            metrics.gateway_acks.clone(),
        );
        agent.register(
            "probe_transitions",
            "Probe state changes, by kind (gateway, backend) and new state (up, down)",
            metrics.probe_transitions.clone(),
        );
        agent.register(
            "hub_connected",
            "1 while a hub session is established",
            metrics.hub_connected.clone(),
        );
        agent.register(
            "hub_connect_failures",
            "Failed attempts to reach a hub (connect, register or session)",
            metrics.hub_connect_failures.clone(),
        );
        agent.register(
            "hub_reports",
            "Health reports written to the hub session",
            metrics.hub_reports.clone(),
        );
        agent.register(
            "shared_status_reports",
            "Health reports carrying the shared status, by form: whole or delta (see shared_status_routes)",
            metrics.shared_status_reports.clone(),
        );
        agent.register(
            "shared_status_routes",
            "Shared route statuses sent to the hub, by form: whole (every route, on a new session and every 30 s) or delta (the routes changed since)",
            metrics.shared_status_routes.clone(),
        );
        agent.register(
            "shared_config_version",
            "Version of the hub's SharedConfig in use (0 when none)",
            metrics.shared_config_version.clone(),
        );
        agent.register(
            "shared_config_rejections",
            "SharedConfig snapshots from the hub that were rejected (NACKed)",
            metrics.shared_config_rejections.clone(),
        );
        agent.register(
            "shared_config_deltas",
            "SharedConfigDeltas from the hub applied to the config in use",
            metrics.shared_config_deltas.clone(),
        );
        agent.register(
            "shared_config_resyncs",
            "SharedConfigDeltas from the hub whose base was not the config in use, so the agent asked for the whole config",
            metrics.shared_config_resyncs.clone(),
        );
        agent.register(
            "readiness_report_seconds",
            "Seconds from observing a readiness change (a gateway, or a hostname's ready backends crossing zero) to writing the report that carries it to the hub",
            metrics.readiness_report_seconds.clone(),
        );
        agent.register(
            "status_writes",
            "Status writes to Kubernetes objects, by kind and result (ok, conflict, failed)",
            metrics.status_writes.clone(),
        );
        agent.register(
            "events",
            "Kubernetes Events recorded for condition changes, by result (ok, failed, dropped when the queue is full, skipped for names too long)",
            metrics.events.clone(),
        );
        metrics
    }
}
