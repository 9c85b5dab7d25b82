//! Cluster health: agents' reports in, committed verdicts out.
//!
//! Every node runs the task; only the Raft leader decides. A follower passes the reports its
//! agents send to the leader over the `HubPeer` gRPC service; the leader's [`Tracker`] turns
//! reports and silence into `SetHealth` commands, and per-hostname backend health into
//! `SetHostnameServing` commands (on transitions only), committed through Raft like any other
//! write.
//!
//! **Invariant:** a verdict changes only by a committed command, so a node cut off from the
//! majority can never fail a cluster over: its proposal simply fails.

mod reported_shared;
pub mod tracker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use meridian_proto::model::{ClusterHealth, ClusterName, Fqdn, HealthReport, HealthVerdict};
use meridian_proto::pb;
use meridian_proto::pb::hub_peer_client::HubPeerClient;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::tracker::{Accepted, HostnameChange, Tracker, VerdictChange, can_serve};
use crate::config::HealthConfig;
use crate::raft::{PeerAddr, RaftHandle, RaftStatus, Role};
use crate::store::{Action, Outcome, ProposeError, Proposer, StoreView, unix_now_ms, verdict_name};

/// Reports waiting for the health task; more are dropped (and counted).
const QUEUE: usize = 4096;
/// Reports forwarded to the leader in one call at most.
const FORWARD_BATCH: usize = 256;
/// How long one forwarding call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// The least time between two shared status proposals for one cluster.
const SHARED_STATUS_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// The actor health verdicts are audited as.
pub const ACTOR: &str = "health-tracker";

/// Feeds reports to the node's health task. Cheap to clone.
#[derive(Clone)]
pub struct HealthHandle {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

/// What the health task needs from the rest of the node.
pub struct HealthDeps {
    /// This node's id.
    pub node_id: u64,
    /// Role and leader changes.
    pub raft: RaftHandle,
    /// Where verdicts are proposed.
    pub proposer: Proposer,
    /// The committed state (which clusters exist, their verdicts).
    pub view: watch::Receiver<Arc<StoreView>>,
    /// TLS for the connections that forward reports to the leader (`None`: plain text).
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Where a report came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From an agent connected to this node.
    Local,
    /// Forwarded by hub node N.
    Forwarded(u64),
}

enum Msg {
    Report {
        instance: String,
        report: HealthReport,
        origin: Origin,
    },
    Proposed {
        change: VerdictChange,
        result: Result<Outcome, ProposeError>,
    },
    HostnameProposed {
        change: HostnameChange,
        result: Result<Outcome, ProposeError>,
    },
    SharedProposed {
        cluster: ClusterName,
        result: Result<Outcome, ProposeError>,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    cluster: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    origin: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostnameLabels {
    cluster: String,
    hostname: String,
    serving: &'static str,
}

struct Metrics {
    verdict_changes: Family<VerdictLabels, Counter>,
    hostname_changes: Family<HostnameLabels, Counter>,
    report_age: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    reports: Family<ReportLabels, Counter>,
    proposal_failures: Counter,
    shared_deltas_unmatched: Counter,
}

// === impl HealthHandle ===

impl HealthHandle {
    /// Passes a report from an agent process `instance` (never blocks; drops when the task is
    /// overloaded).
    pub fn report(&self, instance: &str, report: HealthReport, origin: Origin) {
        let msg = Msg::Report {
            instance: instance.to_string(),
            report,
            origin,
        };
        if self.tx.try_send(msg).is_err() {
            self.metrics
                .reports
                .get_or_create(&ReportLabels {
                    origin: origin_label(origin),
                    result: "overloaded",
                })
                .inc();
        }
    }
}

/// Starts the health task of a node; it ends when `shutdown` is cancelled.
pub fn spawn(
    config: HealthConfig,
    deps: HealthDeps,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> HealthHandle {
    let metrics = Arc::new(Metrics::register(registry));
    let (tx, rx) = mpsc::channel(QUEUE);
    let (forward_tx, forward_rx) = mpsc::channel(QUEUE);
    tokio::spawn(forward_loop(
        deps.node_id,
        deps.raft.status(),
        deps.peer_tls.clone(),
        forward_rx,
        metrics.clone(),
        shutdown.clone(),
    ));
    let task = Task {
        tracker: Tracker::new(config.clone()),
        config,
        deps,
        tx: tx.clone(),
        forward_tx,
        in_flight: HashMap::new(),
        hostnames_in_flight: HashMap::new(),
        shared_in_flight: HashSet::new(),
        shared_proposed_at: HashMap::new(),
        metrics: metrics.clone(),
        conflicts_logged: HashMap::new(),
    };
    tokio::spawn(task.run(rx, shutdown));
    HealthHandle { tx, metrics }
}

// === the task ===

struct Task {
    config: HealthConfig,
    tracker: Tracker,
    deps: HealthDeps,
    tx: mpsc::Sender<Msg>,
    forward_tx: mpsc::Sender<(String, HealthReport)>,
    /// Verdict proposals not yet answered, so a slow commit is not proposed again each tick.
    in_flight: HashMap<ClusterName, HealthVerdict>,
    /// Serving proposals not yet answered, likewise.
    hostnames_in_flight: HashMap<(ClusterName, Fqdn), bool>,
    /// Clusters with a route status proposal not answered yet (one at a time each, since the
    /// next delta is computed against the record the previous one makes).
    shared_in_flight: HashSet<ClusterName>,
    /// When each cluster's last shared status proposal went out: at most one per
    /// `SHARED_STATUS_MIN_INTERVAL`, so an agent that floods reports with changing statuses
    /// cannot fill the Raft log faster than that.
    shared_proposed_at: HashMap<ClusterName, std::time::Instant>,
    metrics: Arc<Metrics>,
    /// When a conflict between two agents of a cluster was last logged, per cluster.
    conflicts_logged: HashMap<ClusterName, Instant>,
}

/// How often a conflict between two agents of one cluster is logged at most.
const CONFLICT_LOG_INTERVAL: Duration = Duration::from_secs(30);

impl Task {
    /// Warns (at most every 30 s per cluster) that a second agent reports for a cluster.
    fn conflict_warning(&mut self, cluster: &ClusterName, live: &str, ignored: &str) {
        let now = Instant::now();
        let due = self
            .conflicts_logged
            .get(cluster)
            .is_none_or(|at| now.duration_since(*at) >= CONFLICT_LOG_INTERVAL);
        if due {
            self.conflicts_logged.insert(cluster.clone(), now);
            tracing::warn!(
                %cluster,
                live_instance = live,
                ignored_instance = ignored,
                "two agents report for one cluster; the second one's reports are ignored while the first keeps reporting (check for a second deployment or a wrong --cluster; logged at most every 30 s)"
            );
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        let mut status = self.deps.raft.status();
        self.on_status(&status.borrow_and_update().clone());
        // Evaluate a few times per report interval so a missed report is noticed promptly
        // (and after every counted report).
        let period = (self.config.report_interval() / 4).max(Duration::from_millis(20));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = status.borrow_and_update().clone();
                    self.on_status(&current);
                }
                msg = rx.recv() => match msg {
                    Some(msg) => self.on_msg(msg),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(None),
            }
        }
    }

    fn on_status(&mut self, status: &RaftStatus) {
        let leader = status.role == Role::Leader;
        if leader != self.tracker.is_leader() {
            tracing::info!(
                node = status.node_id,
                term = status.term,
                leader,
                "health tracker {}",
                if leader {
                    "takes over verdicts"
                } else {
                    "stops deciding"
                }
            );
            if !leader {
                self.metrics.report_age.clear();
            }
        }
        self.tracker.set_leader(Instant::now().into_std(), leader);
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Report {
                instance,
                report,
                origin,
            } => {
                let result = if self.tracker.is_leader() {
                    let relay = match origin {
                        Origin::Local => None,
                        Origin::Forwarded(node) => Some(node),
                    };
                    match self.tracker.report_via(
                        Instant::now().into_std(),
                        &instance,
                        &report,
                        relay,
                    ) {
                        accepted @ (Accepted::Yes | Accepted::YesWithoutShared) => {
                            // Decide at once rather than on the next tick: a report that
                            // says a gateway went down is the failover signal. Shared
                            // status only for the reporting cluster: comparing every
                            // cluster's (routes × clusters) on every report would cost the
                            // leader more than the ticks do.
                            self.on_tick(Some(&report.cluster));
                            if accepted == Accepted::YesWithoutShared {
                                self.metrics.shared_deltas_unmatched.inc();
                            }
                            "counted"
                        }
                        Accepted::Stale => "stale",
                        Accepted::NotLeader => "not_leader",
                        Accepted::Conflict { live } => {
                            self.conflict_warning(&report.cluster, &live, &instance);
                            "conflict"
                        }
                    }
                } else if origin == Origin::Local {
                    match self.forward_tx.try_send((instance, report)) {
                        Ok(()) => "forwarded",
                        Err(_) => "overloaded",
                    }
                } else {
                    // Forwarded to a node that lost leadership meanwhile: the next report
                    // goes to the new leader.
                    "not_leader"
                };
                self.metrics
                    .reports
                    .get_or_create(&ReportLabels {
                        origin: origin_label(origin),
                        result,
                    })
                    .inc();
            }
            Msg::Proposed { change, result } => {
                self.in_flight.remove(&change.cluster);
                match result {
                    Ok(Outcome::Applied) => {
                        tracing::info!(
                            cluster = %change.cluster,
                            verdict = verdict_name(change.verdict),
                            reason = %change.reason,
                            "health verdict committed"
                        );
                        self.metrics
                            .verdict_changes
                            .get_or_create(&VerdictLabels {
                                cluster: change.cluster.to_string(),
                                verdict: verdict_name(change.verdict),
                            })
                            .inc();
                    }
                    Ok(Outcome::Unchanged) => {}
                    Ok(Outcome::Rejected(rejection)) => {
                        // The cluster was deleted between the evaluation and the commit.
                        tracing::debug!(cluster = %change.cluster, %rejection, "verdict refused");
                    }
                    Err(err) => {
                        self.metrics.proposal_failures.inc();
                        tracing::warn!(
                            cluster = %change.cluster,
                            verdict = verdict_name(change.verdict),
                            error = %err,
                            "could not commit a health verdict"
                        );
                    }
                }
            }
            Msg::SharedProposed { cluster, result } => {
                self.shared_in_flight.remove(&cluster);
                match result {
                    Ok(Outcome::Applied | Outcome::Unchanged) => {}
                    Ok(Outcome::Rejected(rejection)) => {
                        tracing::debug!(%cluster, %rejection, "route status refused");
                    }
                    Err(err) => {
                        self.metrics.proposal_failures.inc();
                        tracing::warn!(%cluster, error = %err, "could not commit a cluster's route status");
                    }
                }
            }
            Msg::HostnameProposed { change, result } => {
                self.hostnames_in_flight
                    .remove(&(change.cluster.clone(), change.fqdn.clone()));
                match result {
                    Ok(Outcome::Applied) => {
                        tracing::info!(
                            cluster = %change.cluster,
                            hostname = %change.fqdn,
                            serving = change.serving,
                            reason = %change.reason,
                            "hostname serving state committed"
                        );
                        self.metrics
                            .hostname_changes
                            .get_or_create(&HostnameLabels {
                                cluster: change.cluster.to_string(),
                                hostname: change.fqdn.to_string(),
                                serving: if change.serving { "true" } else { "false" },
                            })
                            .inc();
                    }
                    Ok(Outcome::Unchanged) => {}
                    Ok(Outcome::Rejected(rejection)) => {
                        // The policy or cluster changed between the evaluation and the commit.
                        tracing::debug!(cluster = %change.cluster, hostname = %change.fqdn, %rejection, "serving state refused");
                    }
                    Err(err) => {
                        self.metrics.proposal_failures.inc();
                        tracing::warn!(
                            cluster = %change.cluster,
                            hostname = %change.fqdn,
                            serving = change.serving,
                            error = %err,
                            "could not commit a hostname serving state"
                        );
                    }
                }
            }
        }
    }

    /// Evaluates verdicts and hostname serving for every cluster, and the shared status of
    /// `shared_of` (every cluster when `None`).
    fn on_tick(&mut self, shared_of: Option<&ClusterName>) {
        if !self.tracker.is_leader() {
            return;
        }
        let now = Instant::now().into_std();
        let view = self.deps.view.borrow().clone();
        let committed: BTreeMap<ClusterName, HealthVerdict> = view
            .state
            .clusters
            .iter()
            .map(|(name, record)| (name.clone(), record.health.verdict))
            .collect();
        let serving: BTreeMap<(ClusterName, Fqdn), bool> = view
            .state
            .clusters
            .iter()
            .flat_map(|(name, record)| {
                record
                    .hostnames
                    .iter()
                    .map(|(fqdn, h)| ((name.clone(), fqdn.clone()), h.serving))
            })
            .collect();
        self.tracker.retain(|c| committed.contains_key(c));
        self.shared_proposed_at
            .retain(|c, _| committed.contains_key(c));
        let silent = self.deps.raft.status().borrow().silent_peers.clone();
        self.tracker.set_silent_relays(silent);
        self.tracker
            .watch_hostnames(view.state.hostnames.values().map(|policy| {
                let targets = policy.targets.iter().map(|t| &t.cluster).collect();
                (&policy.fqdn, targets)
            }));
        self.metrics.report_age.clear();
        for (cluster, age) in self.tracker.report_ages(now) {
            self.metrics
                .report_age
                .get_or_create(&ClusterLabels {
                    cluster: cluster.to_string(),
                })
                .set(age.as_secs_f64());
        }
        for change in self.tracker.evaluate(now, &committed) {
            if self.in_flight.get(&change.cluster) == Some(&change.verdict) {
                continue;
            }
            self.in_flight
                .insert(change.cluster.clone(), change.verdict);
            let proposer = self.deps.proposer.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let action = Action::SetHealth {
                    cluster: change.cluster.clone(),
                    health: ClusterHealth {
                        verdict: change.verdict,
                        reason: change.reason.clone(),
                        since_unix_ms: unix_now_ms(),
                    },
                };
                let result = proposer.submit(ACTOR, action).await;
                // The task may have stopped; nothing to report to then.
                let _ = tx.send(Msg::Proposed { change, result }).await;
            });
        }
        for change in self.tracker.evaluate_hostnames(now, &serving) {
            let key = (change.cluster.clone(), change.fqdn.clone());
            if self.hostnames_in_flight.get(&key) == Some(&change.serving) {
                continue;
            }
            self.hostnames_in_flight.insert(key, change.serving);
            let proposer = self.deps.proposer.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let action = Action::SetHostnameServing {
                    cluster: change.cluster.clone(),
                    fqdn: change.fqdn.clone(),
                    serving: change.serving,
                    reason: change.reason.clone(),
                };
                let result = proposer.submit(ACTOR, action).await;
                let _ = tx.send(Msg::HostnameProposed { change, result }).await;
            });
        }
        let routes_changes = self.tracker.evaluate_shared(
            now,
            shared_of,
            view.applied_index,
            |cluster| {
                view.state
                    .clusters
                    .get(cluster)
                    .and_then(|record| record.shared.as_ref())
            },
            |route| view.state.routes.contains_key(route),
            |certificate| view.state.certificates.contains_key(certificate),
            view.state
                .route_versions
                .values()
                .copied()
                .max()
                .unwrap_or(0),
        );
        for change in routes_changes {
            if self
                .shared_proposed_at
                .get(&change.cluster)
                .is_some_and(|at| now.saturating_duration_since(*at) < SHARED_STATUS_MIN_INTERVAL)
            {
                // The next tick after the interval proposes what is current then.
                continue;
            }
            if !self.shared_in_flight.insert(change.cluster.clone()) {
                continue;
            }
            self.shared_proposed_at.insert(change.cluster.clone(), now);
            let proposer = self.deps.proposer.clone();
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let cluster = change.cluster.clone();
                let action = Action::SetSharedStatus {
                    cluster: change.cluster,
                    changed: change.changed,
                    removed: change.removed,
                };
                let result = proposer.submit(ACTOR, action).await;
                let _ = tx.send(Msg::SharedProposed { cluster, result }).await;
            });
        }
    }
}

// === forwarding to the leader ===

async fn forward_loop(
    node_id: u64,
    status: watch::Receiver<RaftStatus>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    mut rx: mpsc::Receiver<(String, HealthReport)>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut client: Option<(PeerAddr, HubPeerClient<tonic::transport::Channel>)> = None;
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            first = rx.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < FORWARD_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let n_reports = batch.len() as u64;
        let leader = {
            let status = status.borrow();
            (status.leader_id != 0 && status.leader_id != node_id)
                .then(|| status.members.get(&status.leader_id).cloned())
                .flatten()
        };
        let Some(leader_addr) = leader else {
            count_dropped(&metrics, "no_leader", n_reports);
            continue;
        };
        let peer = match &mut client {
            Some((addr, peer)) if *addr == leader_addr => peer,
            _ => match peer_client(&leader_addr, tls.clone()) {
                Ok(peer) => &mut client.insert((leader_addr.clone(), peer)).1,
                Err(err) => {
                    tracing::warn!(leader = %leader_addr, error = %err, "bad leader address");
                    count_dropped(&metrics, "unreachable", n_reports);
                    continue;
                }
            },
        };
        let request = pb::ForwardReportsRequest {
            from_node: node_id,
            reports: batch
                .iter()
                .map(|(instance, report)| pb::ForwardedReport {
                    instance_id: instance.clone(),
                    report: Some(report.into()),
                })
                .collect(),
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, peer.forward_reports(request)).await {
            Ok(Ok(response)) if response.get_ref().accepted => {}
            Ok(Ok(_)) => count_dropped(&metrics, "leader_refused", n_reports),
            Ok(Err(status)) => {
                tracing::debug!(leader = %leader_addr, error = %status, "forwarding reports failed");
                count_dropped(&metrics, "unreachable", n_reports);
                client = None;
            }
            Err(_) => {
                tracing::debug!(leader = %leader_addr, "forwarding reports timed out");
                count_dropped(&metrics, "unreachable", n_reports);
                client = None;
            }
        }
    }
}

fn peer_client(
    addr: &PeerAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<HubPeerClient<tonic::transport::Channel>, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(FORWARD_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(HubPeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES))
}

fn count_dropped(metrics: &Metrics, why: &'static str, n_reports: u64) {
    metrics
        .reports
        .get_or_create(&ReportLabels {
            origin: "local",
            result: why,
        })
        .inc_by(n_reports);
}

fn origin_label(origin: Origin) -> &'static str {
    match origin {
        Origin::Local => "local",
        Origin::Forwarded(_) => "forwarded",
    }
}

// === impl Metrics ===

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            verdict_changes: Family::default(),
            hostname_changes: Family::default(),
            report_age: Family::default(),
            reports: Family::default(),
            proposal_failures: Counter::default(),
            shared_deltas_unmatched: Counter::default(),
        };
        registry.register(
            "meridian_hub_health_verdict_changes",
            "Health verdict changes this node's tracker committed, by cluster and new verdict",
            metrics.verdict_changes.clone(),
        );
        registry.register(
            "meridian_hub_health_hostname_changes",
            "Per-hostname serving changes this node's tracker committed, by cluster, hostname and new state",
            metrics.hostname_changes.clone(),
        );
        registry.register(
            "meridian_hub_health_report_age_seconds",
            "Seconds since the leader last received a health report from each cluster",
            metrics.report_age.clone(),
        );
        registry.register(
            "meridian_hub_health_reports",
            "Health reports received, by origin and what happened to them",
            metrics.reports.clone(),
        );
        registry.register(
            "meridian_hub_health_proposal_failures",
            "Verdict proposals that did not commit (no quorum, leader change, timeout)",
            metrics.proposal_failures.clone(),
        );
        registry.register(
            "meridian_hub_health_shared_deltas_unmatched",
            "Shared status deltas ignored because this leader does not hold the whole status they change (it keeps the committed status until the agent's next whole one: on connecting, on a leader change and every 30 s)",
            metrics.shared_deltas_unmatched.clone(),
        );
        metrics
    }
}
