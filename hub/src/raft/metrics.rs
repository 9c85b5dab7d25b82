//! Prometheus metrics of one Raft node (prefix `raft`).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The node's metrics; cheap to clone (every metric is an `Arc` inside).
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) term: Gauge,
    /// 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
    pub(crate) role: Gauge,
    pub(crate) leader_changes: Counter,
    pub(crate) commit_latency: Histogram,
    pub(crate) applied_index: Gauge,
    pub(crate) commit_index: Gauge,
    pub(crate) snapshots_created: Counter,
    pub(crate) snapshot_failures: Counter,
    pub(crate) snapshots_installed: Counter,
    pub(crate) snapshot_size: Gauge,
    pub(crate) proposal_failures: Family<Vec<(String, String)>, Counter>,
    pub(crate) leader_contact_age: Gauge<f64, AtomicU64>,
    pub(crate) messages_dropped: Counter,
    pub(crate) storage_write_latency: Histogram,
    /// Time the raft thread itself spent on one local snapshot (whatever runs elsewhere is not
    /// counted): what heartbeats and proposals waited for.
    pub(crate) snapshot_stall: Histogram,
}

// === impl Metrics ===

impl Metrics {
    /// Creates the metrics and registers them under `raft` in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            term: Gauge::default(),
            role: Gauge::default(),
            leader_changes: Counter::default(),
            // 0.25 ms .. ~8 s.
            commit_latency: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            applied_index: Gauge::default(),
            commit_index: Gauge::default(),
            snapshots_created: Counter::default(),
            snapshot_failures: Counter::default(),
            snapshots_installed: Counter::default(),
            snapshot_size: Gauge::default(),
            proposal_failures: Family::default(),
            leader_contact_age: Gauge::default(),
            messages_dropped: Counter::default(),
            storage_write_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 10 µs .. ~5 s.
            snapshot_stall: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
        };
        let registry = registry.sub_registry_with_prefix("raft");
        registry.register("term", "Current Raft term", metrics.term.clone());
        registry.register(
            "role",
            "Current role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader",
            metrics.role.clone(),
        );
        registry.register(
            "leader_changes",
            "Times the known leader changed",
            metrics.leader_changes.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "Time from a proposal to its entry being applied on the proposing node",
            metrics.commit_latency.clone(),
        );
        registry.register(
            "applied_index",
            "Highest log index applied to the state machine",
            metrics.applied_index.clone(),
        );
        registry.register(
            "commit_index",
            "Highest log index known to be committed",
            metrics.commit_index.clone(),
        );
        registry.register(
            "snapshots_created",
            "Snapshots of the state machine taken by this node (log compactions)",
            metrics.snapshots_created.clone(),
        );
        registry.register(
            "snapshot_failures",
            "Snapshots this node could not write (retried after 30 s; the log is kept whole meanwhile)",
            metrics.snapshot_failures.clone(),
        );
        registry.register(
            "snapshots_installed",
            "Snapshots received from the leader and installed",
            metrics.snapshots_installed.clone(),
        );
        registry.register(
            "snapshot_size_bytes",
            "Size of the latest snapshot taken or installed",
            metrics.snapshot_size.clone(),
        );
        registry.register(
            "proposal_failures",
            "Proposals and membership changes that failed, by reason",
            metrics.proposal_failures.clone(),
        );
        registry.register(
            "leader_contact_age_seconds",
            "Seconds since this node last had evidence of a working leader (a follower: last \
             message from the leader; the leader: last quorum acknowledgement); bounds how stale \
             this node's applied state can be. -1 before the first contact",
            metrics.leader_contact_age.clone(),
        );
        registry.register(
            "messages_dropped",
            "Outbound raft messages dropped because a peer's queue was full or it was unknown",
            metrics.messages_dropped.clone(),
        );
        registry.register(
            "storage_write_latency_seconds",
            "Time to write (and fsync) one Ready to the durable log",
            metrics.storage_write_latency.clone(),
        );
        registry.register(
            "snapshot_stall_seconds",
            "Time the raft thread spent on one local snapshot (capturing the state, and later \
             recording the written snapshot and compacting the log); heartbeats and proposals \
             wait for it",
            metrics.snapshot_stall.clone(),
        );
        metrics
    }

    /// Counts one failed proposal or membership change.
    pub(crate) fn proposal_failed(&self, reason: &str) {
        self.proposal_failures
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }
}
