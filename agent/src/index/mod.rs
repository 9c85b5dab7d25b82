//! The index: the one task that owns the agent's state and turns every input into the
//! programmed configs, probe targets, health view and status that the rest of the agent reads.
//!
//! Inputs (all visible in [`Index::run`]): source updates, the hub's SharedConfig, gateway
//! subscriptions with their ACKs/NACKs, raw probe results, and a housekeeping tick.
//! Outputs are `watch` channels of immutable snapshots (`Arc`), so readers never lock:
//! - served configs (one `GatewayConfig` per Gateway, versioned) for the config server;
//! - probe targets for the prober;
//! - the health view for the hub client;
//! - the `/status` document and the readiness flag for the admin server;
//! - the programmed status conditions ([`ProgrammedStatus`]) for the Kubernetes status
//!   writer.
//!
//! Recompute rules:
//! - source or SharedConfig changed → program every Gateway again;
//! - a backend probe flipped → re-apply the probe overlay to the programmed configs (no
//!   reprogramming);
//! - either way a Gateway gets a new version only when its config actually changed;
//! - a subscription opened or closed, an ACK arrived, or a gateway probe flipped → readiness
//!   and the health view. A readiness change bumps the readiness epoch, which makes the hub
//!   client report at once.

mod version;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_gwapi::status::{Condition, GatewayStatus};
use meridian_gwapi::{Object, ObjectSet, Origin, Problem};
use meridian_proto::model::gateway::GatewayConfig;
use meridian_proto::model::{
    ClusterName, GatewayRejection, ObjectKey, SharedConfig, SharedObjectsStatus,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::version::{Versioner, apply_probes};
use crate::config::ProbeConfig;
use crate::config_server::ServedConfigs;
use crate::health::probe::{Health, ProbeResult, ProbeState, ProbeTarget, ProbeTargets};
use crate::health::report::{HealthView, InstanceHealth, build_view};
use crate::health::shared_status::shared_objects_status;
use crate::metrics::Metrics;
use crate::source::{Event, SourceUnit, SourceUpdate};
use crate::status::{
    AgentStatus, BackendView, InstanceView, NackView, ProbeView, ProblemView, SharedStatus,
    SourceStatus, gateway_view,
};

/// How long a closed subscription stays in reports (as not ready) before it is forgotten,
/// unless the same instance subscribes again first.
const CLOSED_SESSION_RETENTION: Duration = Duration::from_secs(60);

/// How often `/status` is rebuilt at most while only probe results arrive (other changes
/// rebuild it at once).
const STATUS_REFRESH: Duration = Duration::from_millis(200);

/// What a gateway said when it subscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionInfo {
    /// The Gateway it serves.
    pub(crate) gateway: ObjectKey,
    /// Its instance name.
    pub(crate) instance: String,
    /// Where to probe `/ready` (`host:port`); empty means "not probeable".
    pub(crate) admin_address: String,
    /// The version it already had.
    pub(crate) have_version: u64,
    /// The gRPC peer address.
    pub(crate) peer: Option<SocketAddr>,
}

/// A cloneable way to send the index messages.
#[derive(Clone, Debug)]
pub(crate) struct IndexHandle {
    tx: mpsc::Sender<Msg>,
}

/// The index task has stopped (the agent is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the agent's index task has stopped")]
pub(crate) struct IndexClosed;

/// Everything the index publishes.
pub(crate) struct IndexOutputs {
    pub(crate) configs: watch::Receiver<Arc<ServedConfigs>>,
    pub(crate) targets: watch::Receiver<Arc<ProbeTargets>>,
    pub(crate) health: watch::Receiver<Arc<HealthView>>,
    pub(crate) status: watch::Receiver<Arc<AgentStatus>>,
    pub(crate) ready: watch::Receiver<bool>,
    /// The conditions to write back to Kubernetes; `None` until the source's first complete
    /// read (an empty set before that would read as "every status entry is stale").
    pub(crate) programmed: watch::Receiver<Option<Arc<ProgrammedStatus>>>,
}

/// The status conditions of one programming pass: what the Kubernetes status writer makes
/// the objects' `status` say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgrammedStatus {
    /// GatewayClasses whose `spec.controllerName` is Meridian's, with their conditions.
    pub(crate) classes: BTreeMap<String, Vec<Condition>>,
    /// Every programmed Gateway.
    pub(crate) gateways: BTreeMap<ObjectKey, ProgrammedGateway>,
}

/// One programmed Gateway's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProgrammedGateway {
    /// `spec.gatewayClassName`.
    pub(crate) class: String,
    /// Gateway, listener, route and policy conditions.
    pub(crate) status: Arc<GatewayStatus>,
    /// The addresses its listeners bind (its `spec.addresses` in use), in first-seen order.
    pub(crate) addresses: Vec<IpAddr>,
}

/// Static inputs of the index.
pub(crate) struct IndexParts {
    pub(crate) cluster: ClusterName,
    pub(crate) standalone: bool,
    pub(crate) location: String,
    pub(crate) probes: ProbeConfig,
    pub(crate) metrics: Metrics,
    /// A SharedConfig to start with (loaded from the state directory).
    pub(crate) initial_shared: Option<Arc<SharedConfig>>,
}

enum Msg {
    OpenSession(SessionInfo, oneshot::Sender<u64>),
    Sent {
        session: u64,
        version: u64,
    },
    Ack {
        session: u64,
        version: u64,
        error: String,
    },
    CloseSession {
        session: u64,
        reason: String,
    },
    Shared(Arc<SharedConfig>, oneshot::Sender<()>),
}

struct Session {
    info: SessionInfo,
    open: bool,
    closed: Option<(Instant, String)>,
    sent_version: Option<u64>,
    acked_version: Option<u64>,
    nack: Option<(u64, String)>,
    probe: ProbeState,
}

struct Index {
    parts: IndexParts,
    // The source store: units by id; `relist` buffers a (re)list until `InitDone`.
    units: BTreeMap<String, Arc<Vec<Object>>>,
    relist: Option<BTreeMap<String, Arc<Vec<Object>>>>,
    initialized: bool,
    source_problems: Vec<Problem>,
    merge_problems: Vec<Problem>,
    objects: Arc<ObjectSet>,
    shared: Arc<SharedConfig>,
    /// The hub's certificates as Secret objects.
    shared_objects: Arc<Vec<Object>>,
    // Programmed configs before the probe overlay, and their statuses.
    base: BTreeMap<ObjectKey, GatewayConfig>,
    statuses: BTreeMap<ObjectKey, Arc<GatewayStatus>>,
    versioner: Versioner,
    sessions: BTreeMap<u64, Session>,
    next_session: u64,
    backend_probes: HashMap<SocketAddr, ProbeState>,
    readiness: Vec<(u64, bool)>,
    readiness_epoch: u64,
    readiness_changed_at: Option<Instant>,
    /// Hostnames with at least one ready backend endpoint, as of the last health view.
    serving_hostnames: BTreeSet<String>,
    /// How the last programming pass used the shared routes and certificates, for the hub.
    shared_status: Option<Arc<SharedObjectsStatus>>,
    status_dirty: bool,
    configs_tx: watch::Sender<Arc<ServedConfigs>>,
    targets_tx: watch::Sender<Arc<ProbeTargets>>,
    health_tx: watch::Sender<Arc<HealthView>>,
    status_tx: watch::Sender<Arc<AgentStatus>>,
    programmed_tx: watch::Sender<Option<Arc<ProgrammedStatus>>>,
    ready_tx: watch::Sender<bool>,
}

// === impl IndexHandle ===

impl IndexHandle {
    /// Registers a subscription; returns its session id.
    pub(crate) async fn open_session(&self, info: SessionInfo) -> Result<u64, IndexClosed> {
        let (reply, response) = oneshot::channel();
        self.send(Msg::OpenSession(info, reply)).await?;
        response.await.map_err(|_| IndexClosed)
    }

    /// Records that `version` was written to the session's stream.
    pub(crate) async fn sent(&self, session: u64, version: u64) -> Result<(), IndexClosed> {
        self.send(Msg::Sent { session, version }).await
    }

    /// Records an ACK (empty `error`) or NACK.
    pub(crate) async fn ack(
        &self,
        session: u64,
        version: u64,
        error: String,
    ) -> Result<(), IndexClosed> {
        self.send(Msg::Ack {
            session,
            version,
            error,
        })
        .await
    }

    /// Records that a subscription ended; the instance is down at once.
    pub(crate) async fn close_session(
        &self,
        session: u64,
        reason: String,
    ) -> Result<(), IndexClosed> {
        self.send(Msg::CloseSession { session, reason }).await
    }

    /// Applies a SharedConfig from the hub; returns once gateways are reprogrammed.
    pub(crate) async fn apply_shared(&self, shared: Arc<SharedConfig>) -> Result<(), IndexClosed> {
        let (reply, response) = oneshot::channel();
        self.send(Msg::Shared(shared, reply)).await?;
        response.await.map_err(|_| IndexClosed)
    }

    async fn send(&self, msg: Msg) -> Result<(), IndexClosed> {
        self.tx.send(msg).await.map_err(|_| IndexClosed)
    }
}

/// Starts the index task.
pub(crate) fn spawn(
    parts: IndexParts,
    source: mpsc::Receiver<SourceUpdate>,
    probe_results: mpsc::Receiver<ProbeResult>,
    shutdown: watch::Receiver<bool>,
) -> (IndexHandle, IndexOutputs, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let (configs_tx, configs) = watch::channel(Arc::new(ServedConfigs::new()));
    let (targets_tx, targets) = watch::channel(Arc::new(ProbeTargets::default()));
    let (health_tx, health) = watch::channel(Arc::new(HealthView::default()));
    let (status_tx, status) = watch::channel(Arc::new(AgentStatus::default()));
    let (ready_tx, ready) = watch::channel(false);
    let (programmed_tx, programmed) = watch::channel(None);
    let shared = parts.initial_shared.clone().unwrap_or_default();
    let first_version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(1))
        .unwrap_or(1);
    let mut index = Index {
        parts,
        units: BTreeMap::new(),
        relist: None,
        initialized: false,
        source_problems: Vec::new(),
        merge_problems: Vec::new(),
        objects: Arc::new(ObjectSet::default()),
        shared_objects: Arc::new(certificate_objects(&shared)),
        shared,
        base: BTreeMap::new(),
        statuses: BTreeMap::new(),
        versioner: Versioner::new(first_version),
        sessions: BTreeMap::new(),
        next_session: 1,
        backend_probes: HashMap::new(),
        readiness: Vec::new(),
        readiness_epoch: 0,
        readiness_changed_at: None,
        serving_hostnames: BTreeSet::new(),
        shared_status: None,
        status_dirty: true,
        configs_tx,
        targets_tx,
        health_tx,
        status_tx,
        programmed_tx,
        ready_tx,
    };
    index.publish_status();
    let task = tokio::spawn(async move { index.run(rx, source, probe_results, shutdown).await });
    let outputs = IndexOutputs {
        configs,
        targets,
        health,
        status,
        ready,
        programmed,
    };
    (IndexHandle { tx }, outputs, task)
}

// === impl Index ===

impl Index {
    async fn run(
        &mut self,
        mut messages: mpsc::Receiver<Msg>,
        mut source: mpsc::Receiver<SourceUpdate>,
        mut probe_results: mpsc::Receiver<ProbeResult>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut housekeeping = tokio::time::interval(STATUS_REFRESH);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut source_open = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                Some(msg) = messages.recv() => {
                    self.on_message(msg);
                    self.publish_status();
                }
                update = source.recv(), if source_open => match update {
                    Some(update) => {
                        self.on_source(update);
                        self.publish_status();
                    }
                    None => {
                        tracing::warn!("the source stopped; serving what it delivered last");
                        source_open = false;
                    }
                },
                Some(result) = probe_results.recv() => self.on_probe(result),
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
    }

    fn on_message(&mut self, msg: Msg) {
        match msg {
            Msg::OpenSession(info, reply) => {
                let session = self.next_session;
                self.next_session += 1;
                // A reconnecting instance replaces its predecessor: a closed one, or an open
                // one whose broken connection has not been noticed yet (its stream's later
                // messages name a session that no longer exists and are ignored).
                let metrics = &self.parts.metrics;
                self.sessions.retain(|old, s| {
                    let same = s.info.instance == info.instance && s.info.gateway == info.gateway;
                    if same && s.open {
                        metrics.gateway_subscriptions.dec();
                        tracing::info!(session = *old, replaced_by = session, instance = %info.instance, "gateway resubscribed; the older subscription is dropped");
                    }
                    !same
                });
                if !self.versioner.served().contains_key(&info.gateway) {
                    tracing::warn!(
                        session, gateway = %info.gateway, instance = %info.instance,
                        "a gateway subscribed to a Gateway that does not exist; it gets its config once the Gateway appears"
                    );
                }
                self.sessions.insert(
                    session,
                    Session {
                        info,
                        open: true,
                        closed: None,
                        sent_version: None,
                        acked_version: None,
                        nack: None,
                        probe: ProbeState::default(),
                    },
                );
                self.parts.metrics.gateway_subscriptions.inc();
                let _ = reply.send(session);
                self.publish_targets();
                self.update_readiness();
            }
            Msg::Sent { session, version } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.sent_version = Some(version);
                    self.status_dirty = true;
                }
            }
            Msg::Ack {
                session,
                version,
                error,
            } => self.on_ack(session, version, error),
            Msg::CloseSession { session, reason } => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if !s.open {
                    return;
                }
                s.open = false;
                s.probe.force_down(&reason);
                s.closed = Some((Instant::now(), reason.clone()));
                self.parts.metrics.gateway_subscriptions.dec();
                tracing::warn!(session, gateway = %s.info.gateway, instance = %s.info.instance, %reason, "gateway subscription ended; instance is down");
                self.publish_targets();
                self.update_readiness();
            }
            Msg::Shared(shared, reply) => {
                if self.shared != shared {
                    self.shared_objects = Arc::new(certificate_objects(&shared));
                    self.shared = shared;
                    if self.initialized {
                        self.merge_units();
                    }
                }
                let _ = reply.send(());
            }
        }
    }

    fn on_ack(&mut self, session: u64, version: u64, error: String) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if error.is_empty() {
            s.acked_version = Some(version);
            if s.nack
                .as_ref()
                .is_some_and(|(nacked, _)| *nacked <= version)
            {
                s.nack = None;
            }
            self.parts
                .metrics
                .gateway_acks
                .get_or_create(&[("result", "ack")])
                .inc();
            tracing::debug!(session, gateway = %s.info.gateway, instance = %s.info.instance, version, "gateway applied config");
        } else {
            self.parts
                .metrics
                .gateway_acks
                .get_or_create(&[("result", "nack")])
                .inc();
            tracing::warn!(
                session, gateway = %s.info.gateway, instance = %s.info.instance, version, %error,
                "gateway rejected config; it keeps serving its last good one"
            );
            s.nack = Some((version, error));
        }
        self.update_readiness();
    }

    fn on_source(&mut self, update: SourceUpdate) {
        match update {
            SourceUpdate::Problems(problems) => {
                self.source_problems = problems;
                self.status_dirty = true;
            }
            SourceUpdate::Event(event) => match event {
                Event::Init => self.relist = Some(BTreeMap::new()),
                Event::InitApply(SourceUnit { id, objects }) => {
                    self.relist
                        .get_or_insert_with(BTreeMap::new)
                        .insert(id, objects);
                }
                Event::InitDone => {
                    self.units = self.relist.take().unwrap_or_default();
                    self.initialized = true;
                    self.merge_units();
                }
                Event::Apply(SourceUnit { id, objects }) => {
                    if let Some(relist) = &mut self.relist {
                        relist.insert(id, objects);
                    } else {
                        self.units.insert(id, objects);
                        self.merge_units();
                    }
                }
                Event::Delete(SourceUnit { id, .. }) => {
                    if let Some(relist) = &mut self.relist {
                        relist.remove(&id);
                    } else if self.units.remove(&id).is_some() {
                        self.merge_units();
                    }
                }
            },
        }
    }

    /// Rebuilds the object set from the units (in id order) and reprograms.
    ///
    /// The hub's certificates come first, as `kubernetes.io/tls` Secrets named like the
    /// certificate, so a Gateway's `certificateRefs` can use them and a hub certificate wins
    /// over a local Secret with the same key (reported as a duplicate), as shared routes win
    /// over local routes.
    fn merge_units(&mut self) {
        let objects = self
            .shared_objects
            .iter()
            .cloned()
            .chain(self.units.values().flat_map(|unit| unit.iter().cloned()));
        let (set, problems) = ObjectSet::from_objects(objects);
        for problem in &problems {
            if !self.merge_problems.contains(problem) {
                tracing::warn!(%problem, "conflicting objects in the source");
            }
        }
        self.merge_problems = problems;
        self.objects = Arc::new(set);
        self.reprogram();
        if !*self.ready_tx.borrow() {
            tracing::info!(
                gateways = self.base.len(),
                source = %self.parts.location,
                "source read; serving gateway configs"
            );
            self.ready_tx.send_replace(true);
        }
    }

    fn on_probe(&mut self, result: ProbeResult) {
        let config = &self.parts.probes;
        match result.target {
            ProbeTarget::Gateway { session } => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if !s.open {
                    return;
                }
                if let Some(health) = s.probe.record(result.ok, &result.detail, config) {
                    self.parts
                        .metrics
                        .probe_transitions
                        .get_or_create(&[("kind", "gateway"), ("to", health.as_str())])
                        .inc();
                    tracing::info!(
                        session, gateway = %s.info.gateway, instance = %s.info.instance,
                        health = health.as_str(), detail = %result.detail,
                        "gateway probe changed"
                    );
                    self.update_readiness();
                }
                self.status_dirty = true;
            }
            ProbeTarget::Backend(addr) => {
                let Some(state) = self.backend_probes.get_mut(&addr) else {
                    return;
                };
                let before = state.health();
                if let Some(health) = state.record(result.ok, &result.detail, config) {
                    self.parts
                        .metrics
                        .probe_transitions
                        .get_or_create(&[("kind", "backend"), ("to", health.as_str())])
                        .inc();
                    // A fresh endpoint passing its first probe is routine; say it quietly.
                    if before == Health::Unknown && health == Health::Up {
                        tracing::debug!(%addr, detail = %result.detail, "backend probe passed");
                    } else {
                        tracing::info!(%addr, health = health.as_str(), detail = %result.detail, "backend probe changed");
                    }
                    self.overlay();
                }
                self.status_dirty = true;
            }
        }
    }

    fn housekeeping(&mut self) {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| {
            s.closed
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() < CLOSED_SESSION_RETENTION)
        });
        if self.sessions.len() != before {
            self.update_readiness();
        }
        if self.status_dirty {
            self.publish_status();
        }
    }

    /// Programs every Gateway from the objects and the shared routes.
    fn reprogram(&mut self) {
        if !self.initialized {
            return;
        }
        let mut base = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for gateway in meridian_gwapi::gateways(&self.objects) {
            let programmed =
                meridian_gwapi::program(&self.objects, &self.shared.http_routes, &gateway);
            base.insert(gateway.clone(), programmed.config);
            statuses.insert(gateway, Arc::new(programmed.status));
        }
        self.shared_status = Some(Arc::new(shared_objects_status(
            &self.shared,
            &statuses,
            &base,
        )));
        self.base = base;
        self.statuses = statuses;
        self.publish_programmed();
        // Probe states for endpoints that are gone are dropped; new endpoints start unknown.
        let endpoints: BTreeSet<SocketAddr> = self
            .base
            .values()
            .flat_map(|config| config.backends.iter())
            .flat_map(|backend| backend.endpoints.iter().map(|e| e.addr))
            .collect();
        self.backend_probes
            .retain(|addr, _| endpoints.contains(addr));
        for addr in endpoints {
            self.backend_probes.entry(addr).or_default();
        }
        self.publish_targets();
        self.overlay();
    }

    /// Applies the probe overlay and versions the result; publishes configs that changed.
    fn overlay(&mut self) {
        let fresh: BTreeMap<ObjectKey, GatewayConfig> = self
            .base
            .iter()
            .map(|(key, config)| {
                let mut config = config.clone();
                apply_probes(&mut config, &self.backend_probes);
                (key.clone(), config)
            })
            .collect();
        let changed = self.versioner.update(fresh);
        if !changed.is_empty() {
            self.parts
                .metrics
                .config_versions
                .inc_by(u64::try_from(changed.len()).unwrap_or(u64::MAX));
            for key in &changed {
                match self.versioner.served().get(key) {
                    Some(config) => {
                        tracing::info!(gateway = %key, version = config.version, "gateway config changed")
                    }
                    None => {
                        tracing::info!(gateway = %key, "gateway removed from the source; its instances keep their last config")
                    }
                }
            }
            self.configs_tx
                .send_replace(Arc::new(self.versioner.served().clone()));
        }
        self.update_readiness();
        self.status_dirty = true;
    }

    /// Publishes the conditions for the status writer, when they changed.
    fn publish_programmed(&self) {
        let classes = self
            .objects
            .gateway_classes
            .iter()
            .filter_map(|class| {
                meridian_gwapi::gateway_class_conditions(class)
                    .map(|conditions| (class.metadata.name.clone(), conditions))
            })
            .collect();
        let gateways = self
            .statuses
            .iter()
            .map(|(key, status)| {
                let mut addresses = Vec::new();
                let bound = self
                    .base
                    .get(key)
                    .into_iter()
                    .flat_map(|config| config.listeners.iter())
                    .flat_map(|listener| listener.addresses.iter());
                for addr in bound {
                    if !addresses.contains(addr) {
                        addresses.push(*addr);
                    }
                }
                let gateway = ProgrammedGateway {
                    class: self
                        .objects
                        .gateway(key)
                        .map(|g| g.spec.gateway_class_name.clone())
                        .unwrap_or_default(),
                    status: status.clone(),
                    addresses,
                };
                (key.clone(), gateway)
            })
            .collect();
        let fresh = ProgrammedStatus { classes, gateways };
        self.programmed_tx.send_if_modified(|current| {
            if current.as_deref() == Some(&fresh) {
                return false;
            }
            // What newly went wrong, once: a listener left without a usable certificate, a
            // route whose backend is missing. The status says it too, but a directory source
            // has no status to read, and a hub route's status lives on each cluster.
            let before: BTreeSet<String> = current
                .iter()
                .flat_map(|status| status.gateways.values())
                .flat_map(|gateway| gateway.status.problems())
                .collect();
            for gateway in fresh.gateways.values() {
                for problem in gateway.status.problems() {
                    if !before.contains(&problem) {
                        tracing::warn!(%problem, "Gateway API status condition");
                    }
                }
            }
            *current = Some(Arc::new(fresh));
            true
        });
    }

    fn publish_targets(&mut self) {
        let targets = ProbeTargets {
            gateways: self
                .sessions
                .iter()
                .filter(|(_, s)| s.open && !s.info.admin_address.is_empty())
                .map(|(id, s)| (*id, s.info.admin_address.clone()))
                .collect(),
            backends: self.backend_probes.keys().copied().collect(),
        };
        self.targets_tx.send_if_modified(|current| {
            if **current == targets {
                return false;
            }
            *current = Arc::new(targets);
            true
        });
    }

    /// Recomputes each instance's readiness and the health view; bumps the readiness epoch
    /// when any instance's readiness changed, or a hostname's ready backend count crossed zero.
    fn update_readiness(&mut self) {
        let served = self.versioner.served();
        let instances: Vec<(u64, InstanceHealth)> = self
            .sessions
            .iter()
            .map(|(id, s)| {
                let (ready, detail) = instance_readiness(s, served);
                (
                    *id,
                    InstanceHealth {
                        gateway: s.info.gateway.clone(),
                        instance: s.info.instance.clone(),
                        ready,
                        detail,
                    },
                )
            })
            .collect();
        let readiness: Vec<(u64, bool)> = instances.iter().map(|(id, i)| (*id, i.ready)).collect();
        if readiness != self.readiness {
            let ready_before: BTreeSet<u64> = self
                .readiness
                .iter()
                .filter(|(_, r)| *r)
                .map(|(id, _)| *id)
                .collect();
            let ready_now: BTreeSet<u64> = readiness
                .iter()
                .filter(|(_, r)| *r)
                .map(|(id, _)| *id)
                .collect();
            if ready_before != ready_now {
                self.readiness_epoch += 1;
                self.readiness_changed_at = Some(Instant::now());
            }
            self.readiness = readiness;
        }
        let instances: Vec<InstanceHealth> = instances.into_iter().map(|(_, i)| i).collect();
        let (gateways, hostnames, gateway_addresses) = build_view(served, &instances);
        // A hostname whose ready backends drop to zero (or come back from zero) moves DNS for
        // it, like a gateway's readiness: report it at once. Count changes that keep a
        // hostname served (or unserved) wait for the next periodic report.
        let serving: BTreeSet<String> = hostnames
            .iter()
            .filter(|h| h.ready_endpoints > 0)
            .map(|h| h.hostname.clone())
            .collect();
        if serving != self.serving_hostnames {
            self.readiness_epoch += 1;
            self.readiness_changed_at = Some(Instant::now());
            self.serving_hostnames = serving;
        }
        let view = HealthView {
            gateways,
            hostnames,
            gateway_addresses,
            readiness_epoch: self.readiness_epoch,
            readiness_changed_at: self.readiness_changed_at,
            shared: self.shared_status.clone(),
            rejected: rejected_gateways(&self.sessions, served),
        };
        self.health_tx.send_if_modified(|current| {
            if **current == view {
                return false;
            }
            *current = Arc::new(view);
            true
        });
        self.status_dirty = true;
    }

    fn publish_status(&mut self) {
        self.status_dirty = false;
        let served = self.versioner.served();
        let mut gateways = Vec::new();
        let mut waiting = Vec::new();
        let mut instances_by_gateway: BTreeMap<&ObjectKey, Vec<InstanceView>> = BTreeMap::new();
        for (id, session) in &self.sessions {
            let view = instance_view(*id, session, served);
            if served.contains_key(&session.info.gateway) {
                instances_by_gateway
                    .entry(&session.info.gateway)
                    .or_default()
                    .push(view);
            } else {
                waiting.push(view);
            }
        }
        for (key, config) in served {
            let mut view = gateway_view(key, config.version, self.statuses.get(key));
            view.instances = instances_by_gateway.remove(key).unwrap_or_default();
            gateways.push(view);
        }
        let mut backends: Vec<BackendView> = self
            .backend_probes
            .iter()
            .map(|(addr, state)| BackendView {
                addr: addr.to_string(),
                probe: probe_view(state),
            })
            .collect();
        backends.sort_by(|a, b| a.addr.cmp(&b.addr));
        let problems = self
            .source_problems
            .iter()
            .chain(self.merge_problems.iter())
            .map(ProblemView::from)
            .collect();
        let status = AgentStatus {
            cluster: self.parts.cluster.to_string(),
            mode: if self.parts.standalone {
                "standalone"
            } else {
                "hub"
            }
            .to_string(),
            source: SourceStatus {
                location: self.parts.location.clone(),
                initialized: self.initialized,
                objects: self.units.values().map(|unit| unit.len()).sum(),
                problems,
            },
            shared: SharedStatus {
                version: self.shared.version,
                http_routes: self.shared.http_routes.len(),
            },
            gateways,
            waiting,
            backends,
            hub: None,
        };
        self.status_tx.send_replace(Arc::new(status));
    }
}

/// The hub's certificates as `kubernetes.io/tls` Secrets, parsed by gwapi like any object a
/// source delivers. A certificate gwapi rejects is logged and left out.
fn certificate_objects(shared: &SharedConfig) -> Vec<Object> {
    let mut objects = Vec::new();
    for certificate in &shared.certificates {
        let origin = Origin::new(format!("hub certificate {}", certificate.key), None);
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "namespace": certificate.key.namespace,
                "name": certificate.key.name,
            },
            "type": "kubernetes.io/tls",
            "stringData": {
                "tls.crt": certificate.cert_chain_pem,
                "tls.key": certificate.private_key_pem,
            },
        });
        let (object, problems) = meridian_gwapi::parse_value(secret, &origin);
        for problem in &problems {
            tracing::warn!(%problem, "a certificate from the hub is unusable");
        }
        objects.extend(object);
    }
    objects
}

/// The Gateways an open instance of which rejected the config it is served now, each with the
/// first such error (cut to 256 bytes), in Gateway order.
fn rejected_gateways(
    sessions: &BTreeMap<u64, Session>,
    served: &ServedConfigs,
) -> Vec<GatewayRejection> {
    let mut rejected: BTreeMap<&ObjectKey, &str> = BTreeMap::new();
    for session in sessions.values().filter(|s| s.closed.is_none()) {
        let current = served.get(&session.info.gateway).map(|c| c.version);
        if let Some((version, error)) = &session.nack
            && Some(*version) == current
        {
            rejected.entry(&session.info.gateway).or_insert(error);
        }
    }
    rejected
        .into_iter()
        .map(|(gateway, error)| GatewayRejection {
            gateway: gateway.clone(),
            error: crate::health::shared_status::truncate(error),
        })
        .collect()
}

/// Whether an instance counts as ready, and why.
///
/// Ready means: its subscription is open, its Gateway exists, and its `/ready` probe is up.
/// An instance that gave no admin address cannot be probed; it counts as ready once it has
/// ACKed the current version of its config.
fn instance_readiness(session: &Session, served: &ServedConfigs) -> (bool, String) {
    if let Some((_, reason)) = &session.closed {
        return (false, reason.clone());
    }
    let Some(config) = served.get(&session.info.gateway) else {
        return (
            false,
            format!(
                "waiting for Gateway {} to appear in the source",
                session.info.gateway
            ),
        );
    };
    if session.info.admin_address.is_empty() {
        let acked = session.acked_version == Some(config.version);
        let detail = if acked {
            "config acknowledged (no admin address to probe)"
        } else {
            "current config not acknowledged yet (no admin address to probe)"
        };
        return (acked, detail.to_string());
    }
    match session.probe.health() {
        Health::Up => (true, session.probe.detail().to_string()),
        Health::Unknown => (false, "not probed yet".to_string()),
        Health::Down => (false, session.probe.detail().to_string()),
    }
}

fn instance_view(id: u64, session: &Session, served: &ServedConfigs) -> InstanceView {
    let (ready, _) = instance_readiness(session, served);
    let state = if !session.open {
        "closed"
    } else if served.contains_key(&session.info.gateway) {
        "subscribed"
    } else {
        "waiting"
    };
    InstanceView {
        session: id,
        instance: session.info.instance.clone(),
        gateway: session.info.gateway.to_string(),
        admin_address: session.info.admin_address.clone(),
        peer: session.info.peer.map(|p| p.to_string()),
        state: state.to_string(),
        have_version: session.info.have_version,
        sent_version: session.sent_version,
        acked_version: session.acked_version,
        nack: session.nack.as_ref().map(|(version, error)| NackView {
            version: *version,
            error: error.clone(),
        }),
        ready,
        probe: probe_view(&session.probe),
    }
}

fn probe_view(state: &ProbeState) -> ProbeView {
    ProbeView {
        health: state.health().as_str().to_string(),
        detail: state.detail().to_string(),
        consecutive_ok: state.consecutive_ok(),
        consecutive_fail: state.consecutive_fail(),
    }
}
