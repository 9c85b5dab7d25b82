//! The `Hub` gRPC service agents use: `Register`, then one `Session` stream per agent carrying
//! health reports in and shared config out.
//!
//! Shared config out: the whole `SharedConfig` when the session opens, then each change as a
//! `SharedConfigDelta` against the version last sent, when the agent's hello says it takes
//! deltas. At 10,000 routes the whole config is megabytes and hundreds of thousands of
//! allocations to convert, once per agent per change; a delta is the changed routes only. The
//! session sends the whole config again when the agent asks (`want_whole`: it does not hold the
//! delta's base, after refusing a snapshot, say) and when more than half the objects changed.
//!
//! Pushes are paced by the agent's answers: the next goes out once the agent answered the last
//! (or after [`ANSWER_WAIT`]), and covers every change since. A bulk load of thousands of
//! routes then costs an agent one reprogramming per answer, not one per route: deltas are
//! small enough that thousands fit in the stream's flow-control window, so without pacing the
//! agent would reprogram all its routes once per queued delta.
//!
//! With gRPC TLS on, both calls require the client certificate to name the cluster
//! ([`crate::auth::check_cluster_identity`]), so one cluster's agent cannot register as
//! another or report its health.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use meridian_proto::model::{ClusterName, SharedConfig, SharedConfigDelta};
use meridian_proto::pb;
use meridian_proto::pb::hub_server::Hub;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::health::{HealthHandle, Origin};
use crate::raft::RaftHandle;
use crate::store::{Action, Outcome, Proposer, StoreView};

/// Messages buffered towards one agent; a slow agent gets the newest config once it catches up.
const OUTBOUND: usize = 4;
/// How long the session waits for the agent's answer to a push before it sends the next one
/// anyway (an agent that lost track must not stop getting config).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a new session waits for what agents receive to catch up with the state the
/// agent was admitted on (the shared feed builds it off the Raft thread, a moment later).
const FEED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long `Register` waits for a linearizable read before answering from local state (a node
/// cut off from the majority still lets its agents register).
const REGISTER_BARRIER: std::time::Duration = std::time::Duration::from_secs(2);

/// The agent-facing gRPC service of one hub node.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<Inner>,
}

/// What the agent service needs from the node.
pub struct AgentDeps {
    /// This node's id.
    pub node_id: u64,
    /// For leader hints.
    pub raft: RaftHandle,
    /// For recording reported gateway addresses.
    pub proposer: Proposer,
    /// The committed state.
    pub view: watch::Receiver<Arc<StoreView>>,
    /// What agents receive.
    pub shared: watch::Receiver<Arc<SharedConfig>>,
    /// Where reports go.
    pub health: HealthHandle,
    /// Ends every session on shutdown.
    pub shutdown: CancellationToken,
}

struct Inner {
    deps: AgentDeps,
    metrics: Metrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AckLabels {
    cluster: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormLabels {
    form: &'static str,
}

struct Metrics {
    sessions: Gauge,
    pushes: Family<FormLabels, Counter>,
    acks: Family<AckLabels, Counter>,
    invalid_reports: Counter,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::HubMessage, Status>> + Send>>;

// === impl AgentService ===

impl AgentService {
    /// Builds the service and registers its metrics.
    pub fn new(deps: AgentDeps, registry: &mut Registry) -> Self {
        let metrics = Metrics {
            sessions: Gauge::default(),
            pushes: Family::default(),
            acks: Family::default(),
            invalid_reports: Counter::default(),
        };
        registry.register(
            "meridian_hub_agent_sessions",
            "Agent sessions open on this node",
            metrics.sessions.clone(),
        );
        registry.register(
            "meridian_hub_agent_config_pushes",
            "Shared config sent to agents, by form: whole (a SharedConfig) or delta (a SharedConfigDelta)",
            metrics.pushes.clone(),
        );
        registry.register(
            "meridian_hub_agent_config_acks",
            "Agents' answers to shared config, by cluster and result: ack, nack, or want_whole (the \
             agent did not hold a delta's base and asked for the whole config)",
            metrics.acks.clone(),
        );
        registry.register(
            "meridian_hub_agent_invalid_reports",
            "Health reports dropped because they did not decode",
            metrics.invalid_reports.clone(),
        );
        Self {
            inner: Arc::new(Inner { deps, metrics }),
        }
    }

    /// The tonic service to mount.
    pub fn into_server(self) -> pb::hub_server::HubServer<Self> {
        pb::hub_server::HubServer::new(self)
            .max_decoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
    }

    fn leader_hint(&self) -> String {
        let status = self.inner.deps.raft.status();
        let status = status.borrow();
        status
            .members
            .get(&status.leader_id)
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

fn cluster_name(name: String, field: &str) -> Result<ClusterName, Status> {
    ClusterName::new(name).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn unknown_cluster(cluster: &ClusterName) -> Status {
    Status::not_found(format!(
        "cluster {cluster} is not registered with the hub; create it first \
         (PUT /v1/clusters/{cluster} or `meridian ctl apply`)"
    ))
}

/// Parses an agent's gateway address: an IP, or an IP with a port (the port is dropped:
/// DNS answers carry addresses only).
fn gateway_ip(value: &str) -> Option<IpAddr> {
    value
        .parse::<IpAddr>()
        .ok()
        .or_else(|| value.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[tonic::async_trait]
impl Hub for AgentService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        crate::auth::check_cluster_identity(&request.peer_certs(), &request.get_ref().cluster)?;
        let request = request.into_inner();
        let cluster = cluster_name(request.cluster, "cluster")?;
        let mut addresses = Vec::new();
        for (i, value) in request.gateway_addresses.iter().enumerate() {
            let ip = gateway_ip(value).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "gateway_addresses[{i}]: {value:?} is not an IP address"
                ))
            })?;
            // An address no client can reach (an agent configured with 0.0.0.0, say) must not
            // reach DNS answers; the rest of the registration stands.
            if let Err(why) = crate::dns::answerable(ip) {
                tracing::warn!(%cluster, address = %ip, "ignoring a reported gateway address that {why}");
                continue;
            }
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        // A cluster created a moment ago on another node must be visible: read through the
        // barrier when a leader is reachable, else from this node's applied state.
        match tokio::time::timeout(REGISTER_BARRIER, self.inner.deps.raft.read_index()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "register: reading local state without a barrier");
            }
            Err(_) => tracing::debug!("register: no read barrier in time; reading local state"),
        }
        let view = self.inner.deps.view.borrow().clone();
        let Some(record) = view.state.clusters.get(&cluster) else {
            return Err(unknown_cluster(&cluster));
        };
        if record.reported_addresses != addresses {
            // In the background: registration must not wait for (or fail on) a quorum.
            let proposer = self.inner.deps.proposer.clone();
            let actor = format!("agent/{cluster}");
            let action = Action::SetReportedAddresses {
                cluster: cluster.clone(),
                addresses,
            };
            tokio::spawn(async move {
                match proposer.submit(&actor, action).await {
                    Ok(Outcome::Rejected(rejection)) => {
                        tracing::warn!(%actor, %rejection, "reported addresses refused");
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(%actor, error = %err, "could not record reported addresses");
                    }
                }
            });
        }
        tracing::info!(
            %cluster,
            agent_version = %request.agent_version,
            "agent registered"
        );
        Ok(Response::new(pb::RegisterResponse {
            cluster: Some((&record.cluster).into()),
            node_id: self.inner.deps.node_id,
            leader_hint: self.leader_hint(),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // The certificate is read before the stream is taken apart; the cluster comes with hello.
        let peer_certs = request.peer_certs();
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before its hello"))?;
        let Some(pb::agent_message::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message of a session must be `hello`",
            ));
        };
        crate::auth::check_cluster_identity(&peer_certs, &hello.cluster)?;
        let cluster = cluster_name(hello.cluster, "hello.cluster")?;
        if !self
            .inner
            .deps
            .view
            .borrow()
            .state
            .clusters
            .contains_key(&cluster)
        {
            return Err(unknown_cluster(&cluster));
        }
        let instance = if hello.instance_id.is_empty() {
            format!("anonymous/{cluster}")
        } else {
            hello.instance_id
        };
        tracing::info!(%cluster, %instance, have_version = hello.have_version, "agent session opened");
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let session = Session {
            inner: self.inner.clone(),
            cluster,
            instance,
            accepts_delta: hello.accepts_config_delta,
            tx,
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

// === the session task ===

/// The term and leader a Raft status names (leader 0: none known).
fn leader_of(status: &crate::raft::RaftStatus) -> (u64, u64) {
    (status.term, status.leader_id)
}

struct Session {
    inner: Arc<Inner>,
    cluster: ClusterName,
    instance: String,
    /// The agent applies `SharedConfigDelta`s (its hello said so).
    accepts_delta: bool,
    tx: mpsc::Sender<Result<pb::HubMessage, Status>>,
}

/// What the session sends an agent next, and what it sent last.
#[derive(Default)]
struct Pushes {
    /// The config last sent, whole or as a delta: the base of the next delta.
    sent: Option<Arc<SharedConfig>>,
    /// The version of the last whole config sent.
    whole_version: Option<u64>,
    /// The agent asked for the whole config.
    whole_wanted: bool,
    /// The version of the last push, until the agent answers it, and when it went out.
    awaiting: Option<(u64, tokio::time::Instant)>,
}

impl Pushes {
    /// The message that brings the agent to `config`, or `None` when it has it already.
    fn next(&mut self, config: &Arc<SharedConfig>, accepts_delta: bool) -> Option<pb::HubMessage> {
        use pb::hub_message::Kind;
        let base = match &self.sent {
            Some(sent) if sent.version == config.version && !self.whole_wanted => return None,
            Some(sent) if accepts_delta && !self.whole_wanted => Some(sent.clone()),
            _ => None,
        };
        let delta = base
            .map(|base| SharedConfigDelta::between(&base, config))
            // Past half of the objects the delta saves little, and a whole config lets the
            // agent drop anything it holds in error.
            .filter(|delta| delta.len() * 2 <= config.len().max(1));
        self.sent = Some(config.clone());
        self.whole_wanted = false;
        self.awaiting = Some((config.version, tokio::time::Instant::now()));
        let kind = match delta {
            Some(delta) => Kind::ConfigDelta((&delta).into()),
            None => {
                self.whole_version = Some(config.version);
                Kind::Config((&**config).into())
            }
        };
        Some(pb::HubMessage { kind: Some(kind) })
    }

    /// When the next push may go out: `None` for now (the last one was answered).
    fn answer_deadline(&self) -> Option<tokio::time::Instant> {
        self.awaiting.map(|(_, at)| at + ANSWER_WAIT)
    }

    /// The agent answered the push of `version` (an ACK, a NACK or a request for the whole
    /// config); answers to earlier pushes do not count.
    fn answered(&mut self, version: u64) {
        if self.awaiting.is_some_and(|(awaited, _)| version >= awaited) {
            self.awaiting = None;
        }
    }

    /// The agent asked for the whole config instead of the delta to `version`. Deltas sent
    /// before the last whole config may still be in flight and ask too: those are answered
    /// already.
    fn want_whole(&mut self, version: u64) -> bool {
        if self.whole_version.is_some_and(|whole| whole >= version) {
            return false;
        }
        self.whole_wanted = true;
        true
    }
}

impl Session {
    async fn run(self, mut inbound: Streaming<pb::AgentMessage>) {
        let metrics = &self.inner.metrics;
        metrics.sessions.inc();
        let mut shared = self.inner.deps.shared.clone();
        let shutdown = self.inner.deps.shutdown.clone();
        let mut raft = self.inner.deps.raft.status();
        let mut leader = leader_of(&raft.borrow_and_update());
        // A node that just caught up (a snapshot installed, a log replayed) shows its state
        // before the feed has built what agents receive from it: the first push must not be
        // the older, or empty, config an agent would install and save.
        let admitted = self.inner.deps.view.borrow().state.shared_version;
        let caught_up = tokio::time::timeout(
            FEED_WAIT,
            shared.wait_for(|config| config.version >= admitted),
        )
        .await
        .map(|result| result.is_ok());
        if caught_up != Ok(true) {
            tracing::warn!(cluster = %self.cluster, admitted, "what agents receive has not caught up with this node's state; sending what it has");
        }
        // The whole config at once, then every change.
        let mut pushes = Pushes::default();
        let mut push_due = true;
        let end = loop {
            let deadline = pushes.answer_deadline();
            if push_due && deadline.is_none_or(|at| at <= tokio::time::Instant::now()) {
                push_due = false;
                let config = shared.borrow_and_update().clone();
                // A diff or a whole conversion is in proportion to the routes (milliseconds at
                // 10,000): off the async workers, which carry Raft messages and admin requests.
                let accepts_delta = self.accepts_delta;
                let next = tokio::task::spawn_blocking(move || {
                    let message = pushes.next(&config, accepts_delta);
                    (pushes, message)
                })
                .await;
                let message = match next {
                    Ok((returned, message)) => {
                        pushes = returned;
                        message
                    }
                    Err(error) => {
                        tracing::error!(cluster = %self.cluster, %error, "building the shared config push failed");
                        break "push failed";
                    }
                };
                if let Some(message) = message {
                    let form = match message.kind {
                        Some(pb::hub_message::Kind::ConfigDelta(_)) => "delta",
                        _ => "whole",
                    };
                    if self.tx.send(Ok(message)).await.is_err() {
                        break "agent went away";
                    }
                    metrics.pushes.get_or_create(&FormLabels { form }).inc();
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = self.tx.send(Err(Status::unavailable("hub node is shutting down"))).await;
                    break "hub shutting down";
                }
                () = self.tx.closed() => break "agent went away",
                () = sleep_until(deadline), if push_due => {
                    tracing::warn!(cluster = %self.cluster, instance = %self.instance, "no answer to the last shared config within {ANSWER_WAIT:?}; sending the next one");
                }
                changed = shared.changed() => {
                    if changed.is_err() {
                        break "hub state machine stopped";
                    }
                    push_due = true;
                }
                changed = raft.changed() => {
                    if changed.is_err() {
                        break "hub raft node stopped";
                    }
                    // A new leader holds none of the agent's whole shared status: ask for it
                    // now rather than wait for the agent's 30 s refresh.
                    let now = leader_of(&raft.borrow_and_update());
                    if now.1 != 0 && now != leader {
                        leader = now;
                        let message = pb::HubMessage {
                            kind: Some(pb::hub_message::Kind::ResendSharedStatus(
                                pb::ResendSharedStatus {},
                            )),
                        };
                        if self.tx.send(Ok(message)).await.is_err() {
                            break "agent went away";
                        }
                    }
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => match self.on_message(message) {
                        Ok(Some(answer)) => {
                            pushes.answered(answer.version);
                            if answer.want_whole && pushes.want_whole(answer.version) {
                                push_due = true;
                            }
                            // Changes that came while the agent worked go out now, as one.
                            push_due |= pushes.sent.as_ref().is_some_and(|sent| sent.version != shared.borrow().version);
                        }
                        Ok(None) => {}
                        Err(status) => {
                            let _ = self.tx.send(Err(status)).await;
                            break "protocol error";
                        }
                    },
                    Ok(None) => break "agent closed the stream",
                    Err(status) => {
                        // Say why (a message over the size limit, a reset): "stream error"
                        // alone hid an agent whose reports could never be read.
                        tracing::warn!(cluster = %self.cluster, instance = %self.instance, code = ?status.code(), error = %status.message(), "agent stream failed");
                        break "stream error";
                    }
                },
            }
        };
        metrics.sessions.dec();
        tracing::info!(cluster = %self.cluster, instance = %self.instance, reason = end, "agent session closed");
    }

    fn on_message(&self, message: pb::AgentMessage) -> Result<Option<Answer>, Status> {
        use pb::agent_message::Kind;
        match message.kind {
            Some(Kind::Health(report)) => match super::decode_report(report) {
                Ok((report, _)) if report.cluster != self.cluster => {
                    return Err(Status::invalid_argument(format!(
                        "health.cluster: this session is for cluster {}, not {}",
                        self.cluster, report.cluster
                    )));
                }
                Ok((report, dropped)) => {
                    if let Some(err) = dropped {
                        self.inner.metrics.invalid_reports.inc();
                        tracing::warn!(cluster = %self.cluster, error = %err.in_field("health"), "dropping the invalid shared status of a health report; its readiness counts");
                    }
                    self.inner
                        .deps
                        .health
                        .report(&self.instance, report, Origin::Local);
                }
                Err(err) => {
                    self.inner.metrics.invalid_reports.inc();
                    tracing::warn!(cluster = %self.cluster, error = %err.in_field("health"), "dropping an invalid health report");
                }
            },
            Some(Kind::Ack(ack)) => {
                let result = if ack.want_whole {
                    tracing::info!(cluster = %self.cluster, version = ack.version, "agent asked for the whole shared config");
                    "want_whole"
                } else if ack.error.is_empty() {
                    tracing::debug!(cluster = %self.cluster, version = ack.version, "agent applied shared config");
                    "ack"
                } else {
                    tracing::warn!(cluster = %self.cluster, version = ack.version, error = %ack.error, "agent rejected shared config");
                    "nack"
                };
                self.inner
                    .metrics
                    .acks
                    .get_or_create(&AckLabels {
                        cluster: self.cluster.to_string(),
                        result,
                    })
                    .inc();
                return Ok(Some(Answer {
                    version: ack.version,
                    want_whole: ack.want_whole,
                }));
            }
            Some(Kind::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "`hello` may only be the first message of a session",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "empty or unknown agent message kind",
                ));
            }
        }
        Ok(None)
    }
}

/// An agent's answer to a push.
struct Answer {
    version: u64,
    /// It asked for the whole config instead of the delta to `version`.
    want_whole: bool,
}

/// Waits until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
