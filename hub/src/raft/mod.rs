//! Raft replication of the hub's state machine (raft-rs, durable log on redb).
//!
//! **Boundary:** `raft`/`eraftpb`/`protobuf` types never leave this module. Callers see bytes in
//! ([`RaftHandle::propose`]) and bytes out ([`StateMachine::apply`]'s outcome).
//!
//! **Invariant:** one task owns the `RawNode`; everything else talks to it through
//! [`RaftHandle`]. A proposal is acknowledged only after its entry is committed by a majority,
//! persisted, and applied locally.
//!
//! - `node`: the task that owns the `RawNode` and drives the Ready loop.
//! - `storage`: the durable log on redb (`impl raft::Storage`).
//! - [`transport`]: the peer gRPC service and the outbound streams.
//! - `metrics`: prometheus metrics (prefix `raft`).
//! - `log`: raft-rs' slog records into `tracing`.
//!
//! **Bootstrap and join:** a node whose data directory is empty and whose
//! [`RaftConfig::initial_members`] is non-empty starts a new group with exactly those voters;
//! every initial node must be given the same map. A node with an empty data directory and no
//! initial members waits until an existing member calls [`RaftHandle::add_member`] for it; the
//! leader then sends it a snapshot. A node with a non-empty data directory ignores
//! `initial_members` and resumes from its log (member addresses are replicated in the log and in
//! snapshots; a warning names both when they differ).
//!
//! **Group id:** the first leader of a group without one proposes a random id in a log entry of
//! its own; every node adopts the first such entry it applies, and snapshots carry it, so all
//! members agree (a group created before ids existed gets one the same way). Before adding a
//! node, the node asked checks it over `Identify` and refuses ([`RaftError::Membership`]) unless
//! it is an empty node waiting to be added or already a member of this group; nodes refuse raft
//! messages from a node of another group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use self::metrics::Metrics;
use self::node::{Applied, MemberChange, Msg, ProposeFailure};
use self::transport::Forwarded;

mod log;
mod metrics;
mod node;
mod peer_addr;
mod storage;
pub mod transport;

pub use peer_addr::{PeerAddr, PeerAddrError, PeerHost};

#[cfg(test)]
mod tests;

/// The replicated, deterministic state machine Raft drives.
///
/// Implementations must be deterministic: the same commands in the same order give the same
/// state and outcomes on every node. No clocks, no randomness, no IO in `apply`.
pub trait StateMachine: Send + 'static {
    /// Applies one committed command at `index` and returns the encoded outcome for the
    /// proposer (ignored on other nodes).
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// Called after a batch of entries (or a snapshot) was applied, with the last applied
    /// index; the place to publish a new read view.
    fn applied(&mut self, index: u64);
    /// Encodes the whole state for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// The state as of the last applied index, to be encoded (as [`snapshot`](Self::snapshot)
    /// would) on another thread while the Raft thread goes on.
    ///
    /// Called on the Raft thread between batches, so it must be cheap: an `Arc` of an
    /// immutable copy of the state, not an encoding. The encoder must not see later batches.
    /// The default encodes at once, for state machines small enough not to care.
    fn snapshot_encoder(&self) -> SnapshotEncoder {
        let bytes = self.snapshot();
        Box::new(move || bytes)
    }
    /// Replaces the whole state from a snapshot taken at `index`.
    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String>;
}

/// Encodes a state captured by [`StateMachine::snapshot_encoder`]; runs on a thread of its own.
pub type SnapshotEncoder = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// Static configuration of one Raft node.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This node's id (non-zero, unique in the group).
    pub node_id: u64,
    /// Directory of the durable log (created if missing).
    pub data_dir: PathBuf,
    /// The initial members (id → peer gRPC address), used only when the log is empty. A node
    /// that joins an existing group starts with an empty map and waits to be added.
    pub initial_members: BTreeMap<u64, PeerAddr>,
    /// The address other nodes reach this node's peer gRPC service on.
    pub advertise_addr: PeerAddr,
    /// Raft tick interval (election and heartbeat timeouts are multiples of it).
    pub tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Take a snapshot and compact the log after this many applied entries.
    pub snapshot_threshold: u64,
    /// How long [`RaftHandle::propose`], [`RaftHandle::read_index`] and membership changes wait
    /// (for a leader, for the commit and for the local apply) before failing with
    /// [`RaftError::Timeout`].
    pub request_timeout: Duration,
    /// Source IP for connections to peers (multi-homed hosts, firewall rules keyed on the source
    /// address). `None`: chosen by the OS. Not used towards a peer it cannot reach (another
    /// address family, or a loopback source and a non-loopback peer), nor towards a peer
    /// known by a DNS name (which may resolve to either family).
    pub outbound_source_ip: Option<IpAddr>,
    /// TLS (with this node's client certificate) for connections to peers; `None`: plain text.
    pub client_tls: Option<tonic::transport::ClientTlsConfig>,
}

// === impl RaftConfig ===

impl RaftConfig {
    /// A configuration with the defaults used by `meridian hub`: 50 ms ticks, an election timeout
    /// of 10 ticks (randomized by raft to 11–19 ticks: 0.55–0.95 s), a heartbeat every 2 ticks (100 ms), a snapshot
    /// every 10 000 entries and a 10 s request timeout. `initial_members` starts empty (join); set
    /// it to the same map on every node of a new group to bootstrap it.
    pub fn new(
        node_id: u64,
        data_dir: impl Into<PathBuf>,
        advertise_addr: impl Into<PeerAddr>,
    ) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            initial_members: BTreeMap::new(),
            advertise_addr: advertise_addr.into(),
            tick_interval: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_threshold: 10_000,
            request_timeout: Duration::from_secs(10),
            outbound_source_ip: None,
            client_tls: None,
        }
    }
}

/// A node's role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Following a leader (or waiting for one).
    #[default]
    Follower,
    /// Campaigning.
    Candidate,
    /// Pre-vote campaigning.
    PreCandidate,
    /// The leader.
    Leader,
}

/// A snapshot of a node's Raft status, published on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node.
    pub node_id: u64,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of (0: none).
    pub leader_id: u64,
    /// Highest committed index this node knows.
    pub commit_index: u64,
    /// Highest index applied to the state machine.
    pub applied_index: u64,
    /// Voting members (id → peer address) in the current configuration.
    pub members: BTreeMap<u64, PeerAddr>,
    /// Learners (id → peer address): nodes being added, which receive the log but do not vote
    /// or count towards a quorum until they have caught up and are promoted.
    pub learners: BTreeMap<u64, PeerAddr>,
    /// When this node last had evidence of a working leader: on a follower, the last message
    /// from the current leader; on the leader, the latest moment by which a quorum of voters
    /// (counting itself) had answered it. `None` until the first contact after start.
    ///
    /// The applied state of this node (what DNS and agent config are served from) is at most
    /// `last_leader_contact.elapsed()` (plus one heartbeat interval) behind the group's committed
    /// state, so `elapsed()` is the staleness bound; it is exported as the
    /// `raft_leader_contact_age_seconds` gauge. Updated at tick granularity.
    pub last_leader_contact: Option<Instant>,
    /// On the leader, the other members (voters and learners) it has not heard from for an
    /// election timeout: frozen, partitioned or down. Empty on other nodes. The health tracker
    /// uses it not to blame a cluster whose reports came through such a node.
    pub silent_peers: BTreeSet<u64>,
    /// The id of the raft group this node belongs to: chosen at random by the group's first
    /// leader and replicated in the log and in snapshots. `None` on an empty node waiting to be
    /// added, and on a group until the entry of its first leader (running a build that has
    /// group ids) is applied here.
    pub group_id: Option<String>,
    /// The index of the latest snapshot stored on this node (taken here or received from the
    /// leader; 0: none). The log before it (but for a short tail) is compacted.
    pub snapshot_index: u64,
}

/// Errors callers of [`RaftHandle`] see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// No leader accepted the request in time (an election is in progress, or this node is cut
    /// off from the majority). Nothing was applied; safe to retry.
    #[error("no raft leader is known; the hub may be electing one or cut off from the majority")]
    NoLeader,
    /// The proposal was dropped (leader changed before commit); it may or may not have been
    /// applied. Safe to retry only for idempotent commands.
    #[error("proposal dropped before it committed: {0}")]
    Dropped(String),
    /// The request timed out after it may have reached a leader's log: the command may or may
    /// not be applied (later).
    #[error(
        "timed out after {0:?} with the outcome unknown: a write may have reached a leader's log without a quorum confirming it in time, and may still be applied once the group has one; check before retrying"
    )]
    Timeout(Duration),
    /// The raft task stopped (a request in flight may or may not have been applied).
    #[error("raft node has stopped")]
    Stopped,
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// Storage failed; the node stops rather than risk diverging.
    #[error("raft storage: {0}")]
    Storage(String),
    /// This node is not the leader (returned by the peer service to forwarded calls; the public
    /// [`RaftHandle`] methods follow the hint themselves).
    #[error("not the raft leader; the leader is node {leader_id} at {leader_addr:?}")]
    NotLeader {
        /// The leader this node knows (0: none).
        leader_id: u64,
        /// That leader's peer address, if known.
        leader_addr: Option<PeerAddr>,
    },
    /// The request is invalid (for example a zero node id or an empty member address).
    #[error("invalid raft request: {0}")]
    Invalid(String),
    /// Forwarding to the leader failed after the request was sent; the command may or may not
    /// have been applied.
    #[error("forwarding to the raft leader failed: {0}")]
    Transport(String),
}

/// Why a raft node stopped on its own (not through [`RaftHandle::shutdown`]).
///
/// A node with a fault serves nothing consistent any more: its applied state is frozen where the
/// node stopped (or empty), so the process embedding it must stop serving (`meridian hub` exits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftFault {
    /// The leader says this node acknowledged log entries its log does not have: the data
    /// directory lost data (wiped, restored from an old backup, or a disk that lied about
    /// fsync) while the node was still a member.
    #[error(
        "the data directory {data_dir} lost raft log entries this node had acknowledged: its log          ends at index {last_index}, but leader node {leader_id} knows node {node_id} stored          entries up to at least index {acknowledged}"
    )]
    LostLog {
        /// This node.
        node_id: u64,
        /// Its data directory.
        data_dir: PathBuf,
        /// The last index in its log.
        last_index: u64,
        /// An index the leader knows this node acknowledged.
        acknowledged: u64,
        /// The leader that said so.
        leader_id: u64,
    },
    /// Reading or writing the durable log failed; the node stopped rather than diverge.
    #[error("raft storage failed: {0}")]
    Storage(String),
    /// raft-rs or the state machine panicked (raft-rs panics on states it considers corrupt).
    #[error("the raft node panicked: {0}")]
    Panicked(String),
}

// === impl RaftFault ===

impl RaftFault {
    /// What the operator should do about it.
    pub fn remedy(&self) -> String {
        match self {
            Self::LostLog {
                node_id, data_dir, ..
            } => format!(
                "this node must rejoin as a new member: on a healthy node run `meridian ctl \
                 members remove {node_id}`, delete {}, start this node with --join instead of \
                 --peers, then `meridian ctl members add {node_id} <its gRPC address>`; it \
                 catches up through a snapshot",
                data_dir.display()
            ),
            Self::Storage(_) => "check the disk and the data directory (space, permissions, \
                                 errors in the system log), then restart the node; if the log \
                                 is corrupt, remove the member, delete its data directory, \
                                 start it with --join and add it back"
                .to_string(),
            Self::Panicked(_) => "restart the node; if it panics again, its data directory may \
                                  have lost data while it was a member: remove the member \
                                  (meridian ctl members remove ID), delete its data directory, \
                                  start it with --join and add it back"
                .to_string(),
        }
    }
}

/// A running Raft node. Cheap to clone; all clones talk to the same node task.
#[derive(Clone)]
pub struct RaftHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    config: RaftConfig,
    tx: mpsc::Sender<Msg>,
    status: watch::Receiver<RaftStatus>,
    /// Set once when the node stops on its own; the sender is dropped on any stop.
    fault: watch::Receiver<Option<RaftFault>>,
    metrics: Metrics,
    /// Channels to leaders for forwarded calls, by address (tonic channels reconnect by
    /// themselves; the std mutex is held only to clone or insert).
    channels: Mutex<HashMap<PeerAddr, Channel>>,
}

/// Starts the node: opens/creates storage in `config.data_dir`, restores the state machine from
/// the latest snapshot and the log, and spawns the task that owns the `RawNode`.
///
/// Returns once the committed log has been replayed into `state_machine`. The peer service
/// ([`RaftHandle::peer_service`]) must be served at `config.advertise_addr` for the node to
/// reach its peers; messages that arrive before it is mounted are simply retransmitted.
/// Metrics are registered under the `raft` prefix in `registry`.
pub async fn spawn<S: StateMachine>(
    config: RaftConfig,
    state_machine: S,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<RaftHandle, RaftError> {
    validate(&config)?;
    let metrics = Metrics::new(registry);
    let (tx, inbox) = mpsc::channel(node::MAILBOX);
    let (status_tx, status) = watch::channel(RaftStatus {
        node_id: config.node_id,
        ..RaftStatus::default()
    });
    let (fault_tx, fault) = watch::channel(None);
    node::start(
        config.clone(),
        state_machine,
        metrics.clone(),
        inbox,
        tx.downgrade(),
        status_tx,
        fault_tx,
    )
    .await?;
    Ok(RaftHandle {
        inner: Arc::new(HandleInner {
            config,
            tx,
            status,
            fault,
            metrics,
            channels: Mutex::new(HashMap::new()),
        }),
    })
}

fn validate(config: &RaftConfig) -> Result<(), RaftError> {
    if config.node_id == 0 {
        return Err(RaftError::Invalid("node_id must not be 0".into()));
    }
    if config.tick_interval.is_zero() {
        return Err(RaftError::Invalid("tick_interval must be positive".into()));
    }
    if config.heartbeat_ticks == 0 || config.election_ticks <= config.heartbeat_ticks {
        return Err(RaftError::Invalid(format!(
            "election_ticks ({}) must be greater than heartbeat_ticks ({}), which must be positive",
            config.election_ticks, config.heartbeat_ticks
        )));
    }
    if config.snapshot_threshold == 0 {
        return Err(RaftError::Invalid(
            "snapshot_threshold must be positive".into(),
        ));
    }
    if config.initial_members.contains_key(&0) {
        return Err(RaftError::Invalid(
            "initial_members: node id 0 is not allowed".into(),
        ));
    }
    if let Some(addr) = config.initial_members.get(&config.node_id)
        && *addr != config.advertise_addr
    {
        return Err(RaftError::Invalid(format!(
            "initial_members names this node ({}) at {addr}, but advertise_addr is {}",
            config.node_id, config.advertise_addr
        )));
    }
    Ok(())
}

// === impl RaftHandle ===

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle")
            .field("node_id", &self.inner.config.node_id)
            .field("advertise_addr", &self.inner.config.advertise_addr)
            .finish_non_exhaustive()
    }
}

impl RaftHandle {
    /// Replicates `command`; returns the state machine's outcome once the entry is committed and
    /// applied on THIS node. Works on any node: followers forward to the leader over the peer
    /// gRPC service.
    ///
    /// **Guarantees:** `Ok` means the command was applied exactly once. Proposals that were
    /// definitely not applied (no leader yet, a leader change overwrote the entry, the leader
    /// could not be reached) are retried until `request_timeout`.
    ///
    /// **Errors:** [`RaftError::NoLeader`] if no leader showed up in time (nothing was applied);
    /// [`RaftError::Timeout`], [`RaftError::Dropped`] and [`RaftError::Transport`] when the
    /// outcome is unknown (the command may or may not have been applied);
    /// [`RaftError::Invalid`] for a command over 32 MiB; [`RaftError::Stopped`].
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        let started = Instant::now();
        let result = if command.len() > transport::MAX_COMMAND_BYTES {
            Err(RaftError::Invalid(format!(
                "command of {} bytes exceeds the {} byte limit",
                command.len(),
                transport::MAX_COMMAND_BYTES
            )))
        } else {
            self.replicate_command(command, started).await
        };
        self.record(started, &result);
        result.map(|applied| applied.outcome)
    }

    /// Linearizable read barrier (ReadIndex): returns once this node has applied at least the
    /// commit index the leader confirmed with a quorum at call time; local reads after it are
    /// linearizable. Returns that index.
    ///
    /// **Errors:** [`RaftError::NoLeader`] if no leader could confirm in `request_timeout`
    /// (this node is cut off from the majority, or an election did not finish);
    /// [`RaftError::Timeout`] if the local apply did not catch up in time; [`RaftError::Stopped`].
    pub async fn read_index(&self) -> Result<u64, RaftError> {
        let started = Instant::now();
        let deadline = started + self.inner.config.request_timeout;
        let give_up = started + self.leaderless_bound();
        let round = node::read_round_timeout(&self.inner.config);
        let mut leader_seen = false;
        loop {
            let (reply, answer) = oneshot::channel();
            self.to_node(Msg::ReadIndex { reply }).await?;
            let wait = round.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(Ok(index))) => {
                    self.wait_applied(index, deadline).await?;
                    return Ok(index);
                }
                Ok(Ok(Err(ProposeFailure::Failed(e)))) => return Err(e),
                Ok(Ok(Err(_))) if !leader_seen => self.wait_for_leader(give_up).await?,
                Ok(Ok(Err(_))) => self.wait_for_leader(deadline).await?,
                Ok(Err(_)) => return Err(RaftError::Stopped),
                // The round was lost (the leader changed or is unreachable): ask again.
                Err(_) => leader_seen = true,
            }
            if Instant::now() >= deadline {
                return Err(if leader_seen {
                    RaftError::Timeout(self.inner.config.request_timeout)
                } else {
                    RaftError::NoLeader
                });
            }
        }
    }

    /// Status updates (role, term, leader, commit/applied index, members, leader contact).
    pub fn status(&self) -> watch::Receiver<RaftStatus> {
        self.inner.status.clone()
    }

    /// Why the node stopped on its own, if it did (`None` while it runs, and after a clean
    /// [`RaftHandle::shutdown`]).
    pub fn fault(&self) -> Option<RaftFault> {
        self.inner.fault.borrow().clone()
    }

    /// Resolves when the node stops on its own (a storage failure, a lost log, a panic); never
    /// resolves after a clean [`RaftHandle::shutdown`].
    pub async fn failed(&self) -> RaftFault {
        let mut fault = self.inner.fault.clone();
        if let Ok(fault) = fault.wait_for(Option::is_some).await
            && let Some(fault) = fault.clone()
        {
            return fault;
        }
        // The node stopped cleanly (the sender is gone without a fault).
        std::future::pending().await
    }

    /// Adds voter `id` reachable at `peer_addr` (or updates its address). One membership change
    /// at a time; may be called on any node (forwarded to the leader). Returns once the change
    /// is applied on this node.
    ///
    /// The new node must be running with an empty data directory and no `initial_members`; it
    /// receives the leader's snapshot and then the log.
    ///
    /// A new node first joins as a learner: it receives the log without voting, so a node that
    /// is down, unreachable or slow to catch up cannot cost the group its quorum. The leader
    /// promotes it to voter once it has caught up; if it has not within half of
    /// `request_timeout`, this fails with [`RaftError::Membership`] and the node stays a
    /// learner (retrying the add promotes it once it has caught up; removing it cancels).
    pub async fn add_member(
        &self,
        id: u64,
        peer_addr: impl Into<PeerAddr>,
    ) -> Result<(), RaftError> {
        let peer_addr = peer_addr.into();
        let started = Instant::now();
        let deadline = started + self.inner.config.request_timeout;
        let result = match self.check_candidate(id, peer_addr.clone(), deadline).await {
            Ok(()) => {
                self.replicate_change(
                    MemberChange::Add {
                        id,
                        addr: peer_addr,
                    },
                    started,
                )
                .await
            }
            Err(e) => Err(e),
        };
        self.record(started, &result);
        result.map(|_| ())
    }

    /// Removes voter `id` (the leader may remove itself: it hands leadership to another voter).
    /// One membership change at a time; may be called on any node (forwarded to the leader).
    pub async fn remove_member(&self, id: u64) -> Result<(), RaftError> {
        let started = Instant::now();
        let result = self
            .replicate_change(MemberChange::Remove { id }, started)
            .await;
        self.record(started, &result);
        result.map(|_| ())
    }

    /// The tonic service other hub nodes talk to; the hub mounts it on its gRPC server (the same
    /// server that serves agents) at `config.advertise_addr`.
    pub fn peer_service(&self) -> transport::RaftPeerServer {
        transport::PeerService::server(self.clone())
    }

    /// Stops the node (used by tests and graceful shutdown). Pending calls fail with
    /// [`RaftError::Stopped`]; the durable state stays on disk and its file is closed when this
    /// returns, so a new node may open the same directory.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    fn record<T>(&self, started: Instant, result: &Result<T, RaftError>) {
        match result {
            Ok(_) => self
                .inner
                .metrics
                .commit_latency
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => self.inner.metrics.proposal_failed(match e {
                RaftError::NoLeader => "no_leader",
                RaftError::Dropped(_) => "dropped",
                RaftError::Timeout(_) => "timeout",
                RaftError::Stopped => "stopped",
                RaftError::Membership(_) => "membership",
                RaftError::Storage(_) => "storage",
                RaftError::NotLeader { .. } => "not_leader",
                RaftError::Invalid(_) => "invalid",
                RaftError::Transport(_) => "transport",
            }),
        }
    }

    /// Proposes a command on this node, or forwards it to the leader, until applied here or out
    /// of time.
    ///
    /// Commands go to this node's raft thread, which proposes them if it leads or else forwards
    /// them to the leader inside the raft stream (like etcd's MsgProp) and answers once the
    /// entry is applied here: no extra RPC, and no wait for the leader's answer before our own
    /// apply.
    async fn replicate_command(
        &self,
        command: Vec<u8>,
        started: Instant,
    ) -> Result<Applied, RaftError> {
        let timeout = self.inner.config.request_timeout;
        let deadline = started + timeout;
        // Every attempt that loops again definitely did not apply the command (an unknown
        // outcome returns at once), so running out of time here means nothing was applied.
        // Without a leader that takes the command for a few election rounds, the group has no
        // quorum this node can reach: say so then rather than at the request timeout.
        let give_up = started + self.leaderless_bound();
        loop {
            if Instant::now() >= give_up {
                return Err(RaftError::NoLeader);
            }
            match self.propose_or_forward(&command, deadline).await {
                Ok(applied) => return Ok(applied),
                Err(ProposeFailure::Retry(why)) => {
                    tracing::debug!(node = self.inner.config.node_id, %why, "retrying a proposal");
                    self.pause(give_up).await;
                }
                Err(ProposeFailure::NotLeader { .. }) => self.wait_for_leader(give_up).await?,
                Err(ProposeFailure::Failed(RaftError::Timeout(_))) => {
                    return Err(RaftError::Timeout(timeout));
                }
                Err(ProposeFailure::Failed(e)) => return Err(e),
            }
        }
    }

    /// Applies a membership change on this node if it leads, or forwards it to the leader over
    /// gRPC, until applied here or out of time.
    async fn replicate_change(
        &self,
        change: MemberChange,
        started: Instant,
    ) -> Result<Applied, RaftError> {
        let timeout = self.inner.config.request_timeout;
        let deadline = started + timeout;
        // Every attempt that loops again definitely did not apply the request (an unknown
        // outcome returns at once), so running out of time here means nothing was applied.
        let mut target: Option<PeerAddr> = None;
        // Why this node, leading, last asked the caller to wait: the answer if time runs out.
        let mut busy: Option<String> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(match busy {
                    Some(why) => RaftError::Membership(format!("{why}, still after {timeout:?}")),
                    None => RaftError::NoLeader,
                });
            }
            // A follower that knows the leader forwards at once, without first asking its own
            // raft thread (a round trip that can only answer "not the leader").
            let forward_to = match target.take().or_else(|| self.leader_elsewhere()) {
                Some(addr) => Some(addr),
                None => match self.here(change.clone(), deadline).await {
                    Ok(applied) => return Ok(applied),
                    Err(ProposeFailure::Retry(why)) => {
                        tracing::debug!(node = self.inner.config.node_id, %why, "retrying a membership change");
                        self.wait_for_leader(deadline).await?;
                        busy = Some(why);
                        continue;
                    }
                    Err(ProposeFailure::Failed(RaftError::Timeout(_))) => {
                        return Err(RaftError::Timeout(timeout));
                    }
                    Err(ProposeFailure::Failed(e)) => return Err(e),
                    Err(ProposeFailure::NotLeader {
                        leader_id,
                        leader_addr,
                    }) => {
                        if leader_id == 0 || leader_id == self.inner.config.node_id {
                            None
                        } else {
                            leader_addr
                        }
                    }
                },
            };
            let Some(addr) = forward_to else {
                self.wait_for_leader(deadline).await?;
                continue;
            };
            let Some(channel) = self.channel(&addr).await else {
                // The leader we know is unreachable; wait for the group to elect another.
                self.pause(deadline).await;
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let forwarded =
                transport::forward_change(channel, change.clone(), remaining, timeout).await;
            match forwarded {
                Forwarded::Applied(applied) => {
                    self.wait_applied(applied.index, deadline).await?;
                    return Ok(applied);
                }
                Forwarded::Retry(hint) => {
                    self.forget_channel(&addr);
                    if hint.is_some() && hint != Some(addr) {
                        target = hint;
                    } else {
                        self.pause(deadline).await;
                    }
                }
                Forwarded::Failed(e) => return Err(e),
            }
        }
    }

    /// The address of the leader this node follows, as of its last published status; `None`
    /// when this node leads (or thinks it might), or knows no leader.
    fn leader_elsewhere(&self) -> Option<PeerAddr> {
        let status = self.inner.status.borrow();
        let leader = status.leader_id;
        if status.role != Role::Follower || leader == 0 || leader == self.inner.config.node_id {
            return None;
        }
        status.members.get(&leader).cloned()
    }

    /// Proposes on this node only (the peer service's entry point on the leader); retries
    /// definite drops until the deadline.
    /// Hands a command to this node's raft thread to propose or forward, and waits for it to be
    /// applied here.
    async fn propose_or_forward(
        &self,
        command: &[u8],
        deadline: Instant,
    ) -> Result<Applied, ProposeFailure> {
        let command = command.to_vec();
        self.ask_node(|reply| Msg::Propose { command, reply }, deadline)
            .await
    }

    /// Hands a membership change to this node's raft thread and waits for it to be applied.
    async fn here(
        &self,
        change: MemberChange,
        deadline: Instant,
    ) -> Result<Applied, ProposeFailure> {
        self.ask_node(|reply| Msg::ChangeMembership { change, reply }, deadline)
            .await
    }

    /// Sends the raft thread the message `msg` builds around a reply channel and waits for the
    /// answer until `deadline`.
    async fn ask_node(
        &self,
        msg: impl FnOnce(oneshot::Sender<Result<Applied, ProposeFailure>>) -> Msg,
        deadline: Instant,
    ) -> Result<Applied, ProposeFailure> {
        let (reply, answer) = oneshot::channel();
        self.to_node(msg(reply))
            .await
            .map_err(ProposeFailure::Failed)?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeFailure::Failed(RaftError::Stopped)),
            Err(_) => Err(ProposeFailure::Failed(RaftError::Timeout(
                self.inner.config.request_timeout,
            ))),
        }
    }

    /// A forwarded membership change, served on the leader.
    pub(crate) async fn change_here(
        &self,
        change: MemberChange,
    ) -> Result<Applied, ProposeFailure> {
        if let MemberChange::Add { id, addr } = change.clone() {
            let deadline = Instant::now() + self.inner.config.request_timeout;
            self.check_candidate(id, addr, deadline)
                .await
                .map_err(ProposeFailure::Failed)?;
        }
        self.here_with_retries(change).await
    }

    /// Before node `id` at `addr` is added: asks it who it is (`Identify`) and refuses
    /// ([`RaftError::Membership`]) unless it is node `id` and either an empty node waiting to be
    /// added (`--join`) or already a member of this group. Adding a node that has a group and data
    /// of its own would make a voter of a node that never takes this group's log, and leave it
    /// serving its own data (etcd checks a cluster id for the same reason).
    ///
    /// Nothing to ask when `id` is already a member at `addr` (a repeated add).
    async fn check_candidate(
        &self,
        id: u64,
        addr: PeerAddr,
        deadline: Instant,
    ) -> Result<(), RaftError> {
        let (ours, known) = {
            let status = self.inner.status.borrow();
            let known =
                status.members.get(&id) == Some(&addr) || status.learners.get(&id) == Some(&addr);
            (status.group_id.clone(), known)
        };
        if id == 0 || known {
            return Ok(());
        }
        let remedy =
            format!("start node {id} with an empty data directory and --join, then add it again");
        let Some(channel) = self.channel(&addr).await else {
            return Err(RaftError::Membership(format!(
                "cannot reach node {id} at {addr} to check that it may join this group; {remedy}"
            )));
        };
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(self.inner.config.request_timeout / 4);
        let identity = match transport::identify(channel, wait).await {
            Ok(identity) => identity,
            Err(why) => {
                self.forget_channel(&addr);
                return Err(RaftError::Membership(format!(
                    "could not ask the node at {addr} who it is: {why}; {remedy}"
                )));
            }
        };
        if identity.node_id != id {
            return Err(RaftError::Membership(format!(
                "the node at {addr} is node {}, not node {id}; check the address",
                identity.node_id
            )));
        }
        if identity.joining {
            return Ok(());
        }
        if !identity.group_id.is_empty() && Some(&identity.group_id) == ours.as_ref() {
            // Already one of ours (at another address): an address change.
            return Ok(());
        }
        let theirs = if identity.group_id.is_empty() {
            "a raft group without an id yet".to_string()
        } else {
            format!("raft group {}", identity.group_id)
        };
        let ours = ours.map_or_else(
            || "this group has no id yet".to_string(),
            |ours| format!("this is group {ours}"),
        );
        tracing::warn!(
            node = self.inner.config.node_id,
            candidate = id,
            %addr,
            their_group = %identity.group_id,
            their_voters = ?identity.voters,
            their_applied_index = identity.applied_index,
            "refused to add a node that already belongs to another raft group"
        );
        Err(RaftError::Membership(format!(
            "node {id} at {addr} is not an empty node waiting to join: it belongs to {theirs} \
             (voters {:?}, {} entries applied; {ours}); adding it would mix two groups' data. \
             Check the address, or, to make it a member of this group, stop it, delete its data \
             directory, start it with --join and add it again",
            identity.voters, identity.applied_index
        )))
    }

    async fn here_with_retries(&self, change: MemberChange) -> Result<Applied, ProposeFailure> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            match self.here(change.clone(), deadline).await {
                Err(ProposeFailure::Retry(why)) if Instant::now() < deadline => {
                    tracing::debug!(node = self.inner.config.node_id, %why, "retrying a forwarded proposal");
                    self.pause(deadline).await;
                }
                other => return other,
            }
        }
    }

    async fn to_node(&self, msg: Msg) -> Result<(), RaftError> {
        self.inner
            .tx
            .send(msg)
            .await
            .map_err(|_| RaftError::Stopped)
    }

    /// Waits until this node has applied `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), RaftError> {
        let mut status = self.inner.status.clone();
        loop {
            if status.borrow_and_update().applied_index >= index {
                return Ok(());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RaftError::Stopped),
                Err(_) => return Err(RaftError::Timeout(self.inner.config.request_timeout)),
            }
        }
    }

    /// Waits for a status change that may bring a (new) leader, at most one election timeout;
    /// `Err(NoLeader)` once the deadline passed.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), RaftError> {
        let mut status = self.inner.status.clone();
        let before = status.borrow_and_update().leader_id;
        let round = node::read_round_timeout(&self.inner.config) / 2;
        let until = deadline.min(Instant::now() + round);
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            match tokio::time::timeout(wait, status.changed()).await {
                Ok(Ok(())) => {
                    let leader = status.borrow_and_update().leader_id;
                    if leader != 0 && leader != before {
                        break;
                    }
                }
                Ok(Err(_)) => return Err(RaftError::Stopped),
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            return Err(RaftError::NoLeader);
        }
        Ok(())
    }

    /// How long a request waits for a leader that takes it before failing with
    /// [`RaftError::NoLeader`]: three election rounds (an election that can finish does so
    /// in one or two), at most the request timeout.
    fn leaderless_bound(&self) -> Duration {
        (node::read_round_timeout(&self.inner.config) * 3).min(self.inner.config.request_timeout)
    }

    /// A short pause before retrying (a few ticks, bounded by the deadline).
    async fn pause(&self, deadline: Instant) {
        let pause = self.inner.config.tick_interval * 2;
        let until = deadline.min(Instant::now() + pause);
        tokio::time::sleep_until(until.into()).await;
    }

    async fn channel(&self, addr: &PeerAddr) -> Option<Channel> {
        if let Some(channel) = self.channels().get(addr) {
            return Some(channel.clone());
        }
        let endpoint = transport::peer_endpoint(
            addr,
            self.inner.config.outbound_source_ip,
            self.inner.config.client_tls.as_ref(),
        )
        .ok()?;
        match transport::connect(&endpoint).await {
            Ok(channel) => {
                self.channels().insert(addr.clone(), channel.clone());
                Some(channel)
            }
            Err(e) => {
                tracing::debug!(node = self.inner.config.node_id, %addr, error = %e, "cannot reach the leader");
                None
            }
        }
    }

    fn forget_channel(&self, addr: &PeerAddr) {
        self.channels().remove(addr);
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<PeerAddr, Channel>> {
        // A poisoned map of channels is still a valid cache.
        self.inner
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
