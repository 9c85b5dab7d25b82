//! Raft replication of the hub's state machine (raft-rs, durable log on redb).
//!
//! **Boundary:** `raft`/`eraftpb`/`protobuf` types never leave this module. Callers see bytes in
//! ([`RaftHandle::propose`]) and bytes out ([`StateMachine::apply`]'s outcome).
//!
//! **Invariant:** one task owns the `RawNode`; everything else talks to it through
//! [`RaftHandle`]. A proposal is acknowledged only after its entry is committed by a majority,
//! persisted, and applied locally.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub mod transport;

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
    /// Replaces the whole state from a snapshot taken at `index`.
    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String>;
}

/// Static configuration of one Raft node.
#[derive(Clone, Debug, PartialEq)]
pub struct RaftConfig {
    /// This node's id (non-zero, unique in the group).
    pub node_id: u64,
    /// Directory of the durable log (created if missing).
    pub data_dir: PathBuf,
    /// The initial members (id → peer gRPC address), used only when the log is empty. A node
    /// that joins an existing group starts with an empty map and waits to be added.
    pub initial_members: BTreeMap<u64, SocketAddr>,
    /// The address other nodes reach this node's peer gRPC service on.
    pub advertise_addr: SocketAddr,
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
    /// address). `None`: chosen by the OS.
    pub outbound_source_ip: Option<IpAddr>,
}

// === impl RaftConfig ===

impl RaftConfig {
    /// A configuration with the defaults used by `meridian hub`: 50 ms ticks, an election timeout
    /// of 10 ticks (randomized by raft to 0.5–1 s), a heartbeat every 2 ticks (100 ms), a snapshot
    /// every 10 000 entries and a 10 s request timeout. `initial_members` starts empty (join); set
    /// it to the same map on every node of a new group to bootstrap it.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>, advertise_addr: SocketAddr) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            initial_members: BTreeMap::new(),
            advertise_addr,
            tick_interval: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_threshold: 10_000,
            request_timeout: Duration::from_secs(10),
            outbound_source_ip: None,
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
    /// Members (id → peer address) in the current configuration.
    pub members: BTreeMap<u64, SocketAddr>,
    /// When this node last had evidence of a working leader: on a follower, the last message
    /// from the current leader; on the leader, the latest moment by which a quorum of voters
    /// (counting itself) had answered it. `None` until the first contact after start.
    ///
    /// The applied state of this node (what DNS and agent config are served from) is at most
    /// `last_leader_contact.elapsed()` (plus one heartbeat interval) behind the group's committed
    /// state, so `elapsed()` is the staleness bound; it is exported as the
    /// `raft_leader_contact_age_seconds` gauge. Updated at tick granularity.
    pub last_leader_contact: Option<Instant>,
}

/// Errors callers of [`RaftHandle`] see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// No leader is known (election in progress, or this node is cut off from the majority).
    #[error("no raft leader is known; the hub may be electing one or cut off from the majority")]
    NoLeader,
    /// The proposal was dropped (leader changed before commit); it may or may not have been
    /// applied. Safe to retry only for idempotent commands.
    #[error("proposal dropped before it committed: {0}")]
    Dropped(String),
    /// The request timed out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The raft task stopped.
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
        leader_addr: Option<SocketAddr>,
    },
    /// The request is invalid (for example a zero node id or an empty member address).
    #[error("invalid raft request: {0}")]
    Invalid(String),
    /// Forwarding to the leader failed after the request was sent; the command may or may not
    /// have been applied.
    #[error("forwarding to the raft leader failed: {0}")]
    Transport(String),
}

/// A running Raft node. Cheap to clone; all clones talk to the same node task.
#[derive(Clone)]
pub struct RaftHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    status: watch::Receiver<RaftStatus>,
}

/// Starts the node: opens/creates storage in `config.data_dir`, restores the state machine from
/// the latest snapshot and the log, and spawns the task that owns the `RawNode`.
///
/// Metrics are registered under the `raft` prefix in `registry`.
pub async fn spawn<S: StateMachine>(
    config: RaftConfig,
    state_machine: S,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<RaftHandle, RaftError> {
    let _ = (state_machine, registry);
    let (_tx, status) = watch::channel(RaftStatus {
        node_id: config.node_id,
        ..RaftStatus::default()
    });
    Ok(RaftHandle {
        inner: Arc::new(HandleInner { status }),
    })
}

// === impl RaftHandle ===

impl RaftHandle {
    /// Replicates `command`; returns the state machine's outcome once the entry is committed and
    /// applied on THIS node. Works on any node: followers forward to the leader over the peer
    /// gRPC service.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        let _ = command;
        Err(RaftError::Stopped)
    }

    /// Linearizable read barrier (ReadIndex): returns once this node has applied at least the
    /// commit index the leader confirmed with a quorum at call time; local reads after it are
    /// linearizable. Returns that index.
    pub async fn read_index(&self) -> Result<u64, RaftError> {
        Err(RaftError::Stopped)
    }

    /// Status updates (role, term, leader, commit/applied index, members, leader contact).
    pub fn status(&self) -> watch::Receiver<RaftStatus> {
        self.inner.status.clone()
    }

    /// Adds voter `id` reachable at `peer_addr` (or updates its address). One membership change
    /// at a time; may be called on any node (forwarded to the leader). Returns once the change
    /// is applied on this node.
    pub async fn add_member(&self, id: u64, peer_addr: SocketAddr) -> Result<(), RaftError> {
        let _ = (id, peer_addr);
        Err(RaftError::Stopped)
    }

    /// Removes voter `id` (the leader may remove itself; it steps down). One membership change
    /// at a time; may be called on any node (forwarded to the leader).
    pub async fn remove_member(&self, id: u64) -> Result<(), RaftError> {
        let _ = id;
        Err(RaftError::Stopped)
    }

    /// The tonic service other hub nodes talk to; the hub mounts it on its gRPC server (the same
    /// server that serves agents) at `config.advertise_addr`.
    pub fn peer_service(&self) -> transport::RaftPeerServer {
        transport::RaftPeerServer::new(transport::PeerService {})
    }

    /// Stops the node (used by tests and graceful shutdown). Pending calls fail with
    /// [`RaftError::Stopped`]; the durable state stays on disk.
    pub async fn shutdown(&self) {}
}
