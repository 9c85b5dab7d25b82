//! Raft replication of the hub's state machine (raft-rs, durable log on redb).
//!
//! **Boundary:** `raft`/`eraftpb`/`protobuf` types never leave this module. Callers see bytes in
//! ([`RaftHandle::propose`]) and bytes out ([`StateMachine::apply`]'s outcome).
//!
//! **Invariant:** one task owns the `RawNode`; everything else talks to it through
//! [`RaftHandle`]. A proposal is acknowledged only after its entry is committed by a majority,
//! persisted, and applied locally.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

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
}
