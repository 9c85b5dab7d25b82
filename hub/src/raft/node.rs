//! The task that owns the `RawNode`: one OS thread per node, fed by a closed [`Msg`] enum,
//! driving raft-rs' Ready loop against the durable storage, the state machine and the transport.
//!
//! **Ready loop** (raft-rs docs, "Processing the `Ready` State"), once per loop iteration:
//! 1. note the soft state (role, leader);
//! 2. send `messages` (only the leader has them; it may send before persisting);
//! 3. hand out read states (ReadIndex answers);
//! 4. persist the received snapshot, the new entries and the hard state in ONE redb
//!    transaction, fsync'd when raft says `must_sync`;
//! 5. send `persisted_messages` (votes and append responses only leave after the fsync, but
//!    before applying: a follower's acknowledgement, on every write's critical path, does not
//!    wait for its state machine);
//! 6. restore the state machine from that snapshot, if any;
//! 7. apply `committed_entries` in order (the commit index is durable: it is either in this
//!    Ready's hard state or was written before; applied state itself becomes durable only via
//!    snapshots, which record the commit index with them);
//! 8. `advance`, then from the `LightReady`: note the commit index (written with the next
//!    transaction), send its messages, apply its committed entries;
//! 9. `advance_apply`, and past the threshold start a local snapshot (see below).
//!
//! **Local snapshots** are taken in two steps so that a large state never stalls heartbeats
//! and proposals: at the applied index, the Raft thread captures the state machine's immutable
//! copy ([`StateMachine::snapshot_encoder`]), the members, the group id, the term and the
//! configuration, and hands them to a thread of its own that encodes the payload and writes it
//! to a file (`storage::write_snapshot_file`); a later loop iteration (at most a tick later)
//! sees it done and records the snapshot and compacts the log in one redb transaction. At most
//! one is in flight; a snapshot raft asks for meanwhile is taken after it. A snapshot received
//! from the leader meanwhile wins: the stale local one is then dropped, never recorded.
//!
//! **Proposal matching:** every proposal carries a 16-byte id (a per-start random nonce and a
//! counter) in the entry context. The leader records the index its entry got; when that index is
//! applied, the entry's context decides: our id → the outcome goes to the caller; another entry →
//! our entry was overwritten (a leader change) and definitely not applied → the caller retries.
//!
//! It runs on its own thread with a current-thread runtime because fsync blocks: the loop is
//! strictly sequential anyway, and this keeps the blocking IO off the hub's async workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meridian_proto::pb;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, Message,
    MessageType, Snapshot, SnapshotMetadata,
};
use raft::{RawNode, ReadOnlyOption, SnapshotStatus, StateRole, Storage as _};
use tokio::sync::{mpsc, oneshot, watch};

use super::metrics::Metrics;
use super::storage::{DiskStorage, ReadyWrite, StorageFailure, write_snapshot_file};
use super::transport::Transport;
use super::{
    PeerAddr, RaftConfig, RaftError, RaftFault, RaftStatus, Role, SnapshotEncoder, StateMachine,
};

/// Everything the node task reacts to.
pub(crate) enum Msg {
    /// A raft message from a peer.
    Raft(Box<Message>),
    /// Propose a command here if this node leads, else forward it to the leader inside the raft
    /// stream; answered once the entry is applied on this node.
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Applied, ProposeFailure>>,
    },
    /// Propose a membership change (only succeeds on the leader).
    ChangeMembership {
        change: MemberChange,
        reply: oneshot::Sender<Result<Applied, ProposeFailure>>,
    },
    /// Start a ReadIndex round; the reply is the index to wait for.
    ReadIndex {
        reply: oneshot::Sender<Result<u64, ProposeFailure>>,
    },
    /// A peer's advertised address, seen on an inbound stream.
    PeerSeen { id: u64, addr: PeerAddr },
    /// The transport could not deliver to this peer.
    Unreachable(u64),
    /// The outcome of sending a snapshot to a peer.
    SnapshotSent { to: u64, ok: bool },
    /// Stop the node; the reply is sent once storage is closed.
    Shutdown { reply: oneshot::Sender<()> },
}

/// A proposal (or membership change) applied on this node.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) index: u64,
    pub(crate) outcome: Vec<u8>,
}

/// Why a request to the node task did not produce an [`Applied`].
#[derive(Debug)]
pub(crate) enum ProposeFailure {
    /// This node is not the leader; nothing was proposed.
    NotLeader {
        leader_id: u64,
        leader_addr: Option<PeerAddr>,
    },
    /// Definitely not applied (dropped by raft, or overwritten by another leader's entry); safe
    /// to retry.
    Retry(String),
    /// A final error.
    Failed(RaftError),
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemberChange {
    /// Add voter `id` at `addr` (or update its address).
    Add { id: u64, addr: PeerAddr },
    /// Remove voter `id`.
    Remove { id: u64 },
}

/// The node's mailbox capacity: a full mailbox slows peers' streams down (gRPC flow control)
/// and callers' proposals wait.
pub(crate) const MAILBOX: usize = 4096;

/// Raft's limit on the bytes of entries in one append message.
const MAX_SIZE_PER_MSG: u64 = 1 << 20;
/// Raft's limit on proposed-but-uncommitted bytes on the leader (then proposals are dropped).
const MAX_UNCOMMITTED_SIZE: u64 = 256 << 20;
/// At most this many bytes of committed entries per Ready.
const MAX_COMMITTED_SIZE_PER_READY: u64 = 64 << 20;
/// At most this many mailbox messages are taken per loop iteration (group commit).
const MAX_BATCH: usize = 1024;
/// How long after a failed snapshot write the next one is tried.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(30);

type Reply = oneshot::Sender<Result<Applied, ProposeFailure>>;

struct Waiter {
    id: [u8; 16],
    reply: Reply,
}

/// A proposal this follower forwarded to the leader inside the raft stream, waiting for its
/// entry to be applied here.
struct ForwardedProposal {
    /// The term the leader must still be in to append it: its entry can only ever carry this
    /// term, so once an entry of a later term is applied here without it, it is lost for good.
    term: u64,
    reply: Reply,
}

/// A forwarded proposal's entry context: the 16-byte proposal id, then the big-endian term the
/// leader must be in (a local proposal's context is the bare 16-byte id).
const FORWARDED_CONTEXT_LEN: usize = 24;

/// The proposal id of a forwarded proposal's entry context.
fn forwarded_id(context: &[u8]) -> Option<[u8; 16]> {
    (context.len() == FORWARDED_CONTEXT_LEN)
        .then(|| context[..16].try_into().ok())
        .flatten()
}

/// The term a forwarded proposal's entry context asks the leader to be in.
fn forwarded_term(context: &[u8]) -> Option<u64> {
    (context.len() == FORWARDED_CONTEXT_LEN)
        .then(|| context[16..].try_into().ok().map(u64::from_be_bytes))
        .flatten()
}

/// A learner being caught up before its promotion to voter (one at a time).
struct Promotion {
    id: u64,
    /// The learner must have acknowledged the log up to here (the entry that made it a learner,
    /// or the leader's last entry when the add was asked again): proof that it is running.
    since: u64,
    reply: Reply,
    /// When to give up (the node stays a learner).
    deadline: Instant,
}

/// A learner within this many entries of the leader's commit index has caught up: under a
/// steady write load it is never exactly at the commit index.
const CAUGHT_UP_SLACK: u64 = 64;

/// A local snapshot being encoded and written on its own thread.
struct SnapshotJob {
    /// Index, term and configuration, as of the applied index the state was captured at.
    meta: SnapshotMetadata,
    /// Compact the log through here once it is recorded.
    compact_to: u64,
    /// When the Raft thread started it.
    started: Instant,
    /// The time the Raft thread spent starting it.
    stall: Duration,
    /// The payload's file name and size, once written.
    done: oneshot::Receiver<Result<WrittenSnapshot, StorageFailure>>,
    /// The thread (`None` once joined).
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A local snapshot's payload, written and fsync'd.
struct WrittenSnapshot {
    file: String,
    bytes: usize,
}

/// The node task's state.
struct Node<S> {
    id: u64,
    config: RaftConfig,
    raw: RawNode<DiskStorage>,
    sm: S,
    transport: Transport,
    metrics: Metrics,
    status_tx: watch::Sender<RaftStatus>,
    inbox: mpsc::Receiver<Msg>,
    /// Member addresses as of the applied index.
    peers: BTreeMap<u64, PeerAddr>,
    /// Addresses peers announced on inbound streams; used only for ids not in `peers` (a node
    /// that joined and has not yet applied the configuration that names the leader).
    learned: HashMap<u64, PeerAddr>,
    /// Proposals in flight on this leader, by the log index their entry got.
    waiters: BTreeMap<u64, Waiter>,
    /// ReadIndex rounds in flight, by request id.
    reads: HashMap<u64, oneshot::Sender<Result<u64, ProposeFailure>>>,
    nonce: u64,
    next_seq: u64,
    applied: u64,
    leader_id: u64,
    /// Follower: last message from the current leader.
    leader_heard: Option<Instant>,
    /// Leader: last message from each peer in the current term.
    peer_heard: HashMap<u64, Instant>,
    /// The published contact time (refreshed on ticks).
    contact: Option<Instant>,
    /// Answers to proposals applied in the current batch, sent once the state machine has
    /// published the batch (`applied`), so a caller reads its own write.
    answers: Vec<(Reply, Result<Applied, ProposeFailure>)>,
    shutdown: Option<oneshot::Sender<()>>,
    /// Set when the node must stop (it found its log cannot be trusted).
    fault: Option<RaftFault>,
    /// Leader: the learner being caught up for promotion, if any.
    promotion: Option<Promotion>,
    /// Follower: proposals forwarded to the leader in the raft stream, by proposal id.
    forwarded: HashMap<[u8; 16], ForwardedProposal>,
    /// Whether a current leader's heartbeat has passed [`Self::lost_log`] since start.
    heard_heartbeat: bool,
    /// The group's id, as of the applied index (from the snapshot, then the first group id
    /// entry applied). `None` until known.
    group_id: Option<String>,
    /// Leader: the term in which this node last proposed a group id (0: never).
    group_id_proposed: u64,
    /// The local snapshot in flight, if any (at most one).
    snapshot_job: Option<SnapshotJob>,
    /// After a snapshot could not be written: when to try again.
    snapshot_retry_at: Option<Instant>,
}

/// The data prefix of a group id entry (the id follows). The entry has an empty context, like
/// a new leader's empty entry, so a node of an earlier build (during a rolling upgrade) skips
/// it as one instead of handing it to its state machine as a command it cannot decode.
const GROUP_ID_PREFIX: &[u8] = b"meridian-group-id:";

/// Opens storage, restores the state machine and starts the node thread. Returns once the node
/// is running (after replaying the committed log) or failed to start.
///
/// When the node later stops on its own (a storage failure, a lost log, a panic), the reason is
/// published on `fault_tx`; a clean shutdown publishes nothing.
pub(crate) async fn start<S: StateMachine>(
    config: RaftConfig,
    state_machine: S,
    metrics: Metrics,
    inbox: mpsc::Receiver<Msg>,
    node_tx: mpsc::WeakSender<Msg>,
    status_tx: watch::Sender<RaftStatus>,
    fault_tx: watch::Sender<Option<RaftFault>>,
) -> Result<(), RaftError> {
    let runtime = tokio::runtime::Handle::current();
    let (started_tx, started_rx) = oneshot::channel();
    let name = format!("raft-{}", config.node_id);
    let node_id = config.node_id;
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let mut started = Some(started_tx);
        // raft-rs panics on states it considers corrupt; contain it to this thread and report
        // it as the node's fault, so the process embedding the node can stop serving.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let local = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(local) => local,
                Err(e) => {
                    if let Some(started) = started.take() {
                        let _ = started.send(Err(RaftError::Storage(format!(
                            "starting the raft thread's runtime: {e}"
                        ))));
                    }
                    return None;
                }
            };
            let transport = Transport::new(
                &config,
                runtime,
                node_tx,
                status_tx.subscribe(),
                metrics.clone(),
            );
            let node = match Node::open(config, state_machine, transport, metrics, inbox, status_tx)
            {
                Ok(node) => node,
                Err(e) => {
                    if let Some(started) = started.take() {
                        let _ = started.send(Err(e));
                    }
                    return None;
                }
            };
            local.block_on(node.run(&mut started))
        }));
        let fault = match outcome {
            Ok(fault) => fault,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                if let Some(started) = started.take() {
                    let _ = started.send(Err(RaftError::Storage(format!(
                        "the raft node panicked while starting: {message}"
                    ))));
                    return;
                }
                Some(RaftFault::Panicked(message))
            }
        };
        if let Some(fault) = fault {
            tracing::error!(
                node = node_id,
                error = %fault,
                remedy = %fault.remedy(),
                "the raft node stopped"
            );
            fault_tx.send_replace(Some(fault));
        }
    });
    if let Err(e) = thread {
        return Err(RaftError::Storage(format!("spawning the raft thread: {e}")));
    }
    started_rx.await.unwrap_or(Err(RaftError::Stopped))
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

// === impl Node ===

impl<S: StateMachine> Node<S> {
    fn open(
        config: RaftConfig,
        mut sm: S,
        transport: Transport,
        metrics: Metrics,
        inbox: mpsc::Receiver<Msg>,
        status_tx: watch::Sender<RaftStatus>,
    ) -> Result<Self, RaftError> {
        let id = config.node_id;
        if id == 0 {
            return Err(RaftError::Invalid("node_id must not be 0".into()));
        }
        let storage_error = |e: StorageFailure| RaftError::Storage(e.to_string());
        // A log that cannot be read (damaged by a disk fault, truncated, not a redb file) is
        // this node's lost data: say how to bring the node back.
        let mut storage = DiskStorage::open(&config.data_dir).map_err(|e| {
            RaftError::Storage(format!(
                "{e}. If the file is damaged, this node's copy of the group's data is lost: \
                 stop it, remove it from its group on another node (`meridian ctl members \
                 remove {id}`), move its data directory aside, start it with --join and add it \
                 back (`meridian ctl members add {id} ADDR`); a single-node hub must be \
                 restored from a backup of its data directory"
            ))
        })?;
        storage.claim(id).map_err(storage_error)?;

        let had_log = !storage.is_empty();
        if !had_log {
            if config.initial_members.is_empty() {
                tracing::info!(
                    node = id,
                    "empty raft log and no initial members: waiting to be added to a group"
                );
            } else {
                if !config.initial_members.contains_key(&id) {
                    return Err(RaftError::Invalid(format!(
                        "initial_members {:?} must include this node ({id})",
                        config.initial_members.keys().collect::<Vec<_>>()
                    )));
                }
                let conf_state = raft::eraftpb::ConfState {
                    voters: config.initial_members.keys().copied().collect(),
                    ..Default::default()
                };
                // No group id yet: the first leader chooses one (`Node::propose_group_id`).
                let data = encode_snapshot_data(&config.initial_members, None, sm.snapshot());
                storage.bootstrap(conf_state, data).map_err(storage_error)?;
                tracing::info!(node = id, members = ?config.initial_members, "bootstrapped a new raft group");
            }
        }

        // Restore the state machine from the latest snapshot; the log after it is replayed by
        // the first Readys (raft hands out committed entries after `applied`).
        let snapshot_index = storage.snapshot_meta().index;
        let mut peers = BTreeMap::new();
        let mut group_id = None;
        if snapshot_index > 0 {
            let data = storage.snapshot_data().map_err(storage_error)?;
            let SnapshotData {
                peers: snapshot_peers,
                group_id: snapshot_group_id,
                state,
            } = decode_snapshot_data(&data)
                .map_err(|e| RaftError::Storage(format!("stored snapshot: {e}")))?;
            group_id = snapshot_group_id;
            sm.restore(snapshot_index, &state).map_err(|e| {
                RaftError::Storage(format!(
                    "restoring the state machine from the snapshot at {snapshot_index}: {e}"
                ))
            })?;
            sm.applied(snapshot_index);
            peers = snapshot_peers;
        }

        let raft_config = raft::Config {
            id,
            election_tick: config.election_ticks,
            // Randomized timeouts start one tick past the leader lease (`check_quorum` makes a
            // follower refuse votes for `election_tick` ticks after the leader's last message).
            // Starting at the lease itself, a survivor whose ticker runs a little ahead of its
            // peer's had its pre-vote refused after a leader crash and waited a whole second
            // timeout: elections of up to 2 s instead of under 1.
            min_election_tick: config.election_ticks + 1,
            max_election_tick: (config.election_ticks * 2).max(config.election_ticks + 3),
            heartbeat_tick: config.heartbeat_ticks,
            applied: snapshot_index,
            max_size_per_msg: MAX_SIZE_PER_MSG,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_uncommitted_size: MAX_UNCOMMITTED_SIZE,
            max_committed_size_per_ready: MAX_COMMITTED_SIZE_PER_READY,
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| RaftError::Invalid(format!("raft configuration: {e}")))?;
        let raw = RawNode::new(&raft_config, storage, &super::log::logger(id))
            .map_err(|e| RaftError::Storage(format!("starting raft: {e}")))?;

        let mut node = Self {
            id,
            config,
            raw,
            sm,
            transport,
            metrics,
            status_tx,
            inbox,
            peers,
            learned: HashMap::new(),
            waiters: BTreeMap::new(),
            reads: HashMap::new(),
            nonce: rand::random(),
            next_seq: 0,
            applied: snapshot_index,
            leader_id: 0,
            leader_heard: None,
            peer_heard: HashMap::new(),
            contact: None,
            answers: Vec::new(),
            shutdown: None,
            fault: None,
            promotion: None,
            forwarded: HashMap::new(),
            heard_heartbeat: false,
            group_id,
            group_id_proposed: 0,
            snapshot_job: None,
            snapshot_retry_at: None,
        };
        node.metrics.applied_index.set(gauge(snapshot_index));
        // Replay the committed log before reporting the node started.
        node.drive_ready()
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        if had_log {
            node.warn_ignored_initial_members();
        }
        node.publish_status();
        Ok(node)
    }

    /// The loop: wait for a message or a tick, take what else is queued, process the Ready.
    /// Returns the fault that stopped it, or `None` after a shutdown.
    async fn run(
        mut self,
        started: &mut Option<oneshot::Sender<Result<(), RaftError>>>,
    ) -> Option<RaftFault> {
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        tracing::info!(node = self.id, addr = %self.config.advertise_addr, "raft node started");
        let mut ticker = tokio::time::interval(self.config.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let fault = loop {
            tokio::select! {
                msg = self.inbox.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    // Every handle and peer service was dropped.
                    None => break None,
                },
                _ = ticker.tick() => self.on_tick(),
            }
            for _ in 0..MAX_BATCH {
                if self.fault.is_some() {
                    break;
                }
                match self.inbox.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            if let Some(fault) = self.fault.take() {
                break Some(fault);
            }
            if self.shutdown.is_some() {
                break None;
            }
            if let Err(e) = self.drive_ready() {
                break Some(RaftFault::Storage(e.to_string()));
            }
            self.publish_status();
        };
        let error = match &fault {
            Some(fault) => RaftError::Storage(fault.to_string()),
            None => RaftError::Stopped,
        };
        self.stop(error);
        fault
    }

    fn stop(mut self, error: RaftError) {
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter
                .reply
                .send(Err(ProposeFailure::Failed(error.clone())));
        }
        for (_, reply) in std::mem::take(&mut self.reads) {
            let _ = reply.send(Err(ProposeFailure::Failed(error.clone())));
        }
        for (_, forwarded) in std::mem::take(&mut self.forwarded) {
            let _ = forwarded
                .reply
                .send(Err(ProposeFailure::Failed(error.clone())));
        }
        self.status_tx.send_modify(|status| {
            status.role = Role::Follower;
            status.leader_id = 0;
        });
        // No snapshot writer outlives the node (the next run of it could be writing the same
        // index); one that finished is recorded, so the work is not lost.
        if let Some(job) = self.snapshot_job.as_mut() {
            if let Some(thread) = job.thread.take()
                && let Err(payload) = thread.join()
            {
                let message = panic_message(payload.as_ref());
                tracing::warn!(node = self.id, %message, "the snapshot thread panicked");
            }
            if let Err(e) = self.finish_snapshot() {
                tracing::warn!(node = self.id, error = %e, "could not record the last snapshot");
            }
        }
        // Write a commit index learned since the last Ready, so a clean restart replays
        // everything this node knew to be committed.
        if let Err(e) = self.raw.mut_store().persist(ReadyWrite {
            snapshot: None,
            entries: &[],
            hard_state: None,
            sync: true,
        }) {
            tracing::warn!(node = self.id, error = %e, "could not write the last commit index");
        }
        let shutdown = self.shutdown.take();
        let id = self.id;
        // Close the database (and its file lock) and the peer links before confirming.
        drop(self);
        tracing::info!(node = id, "raft node stopped");
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Raft(message) => self.step(*message),
            Msg::Propose { command, reply } => self.propose_or_forward(command, reply),
            Msg::ChangeMembership { change, reply } => self.change_membership(change, reply),
            Msg::ReadIndex { reply } => self.read_index(reply),
            Msg::PeerSeen { id, addr } => {
                if !self.peers.contains_key(&id) && self.learned.get(&id) != Some(&addr) {
                    tracing::debug!(node = self.id, peer = id, %addr, "learned a peer address");
                    self.learned.insert(id, addr);
                }
            }
            Msg::Unreachable(id) => self.raw.report_unreachable(id),
            Msg::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Msg::Shutdown { reply } => self.shutdown = Some(reply),
        }
    }

    fn step(&mut self, message: Message) {
        if message.to != self.id {
            tracing::debug!(
                node = self.id,
                to = message.to,
                "dropping a raft message for another node"
            );
            return;
        }
        if let Some(fault) = self.lost_log(&message) {
            self.fault = Some(fault);
            return;
        }
        // The lost-log check needs a heartbeat; until the first one since start, take no log
        // from a leader. A wiped node restarted as an initial member bootstraps the same first
        // entry as the group, so an append could otherwise refill its log unnoticed (a vote it
        // forgot could then be cast twice). Costs at most one heartbeat interval after start.
        if !self.heard_heartbeat {
            match message.get_msg_type() {
                MessageType::MsgHeartbeat if message.term >= self.raw.raft.term => {
                    self.heard_heartbeat = true;
                }
                MessageType::MsgAppend | MessageType::MsgSnapshot => {
                    tracing::debug!(
                        node = self.id,
                        from = message.from,
                        "no log before the first heartbeat"
                    );
                    return;
                }
                _ => {}
            }
        }
        if message.get_msg_type() == MessageType::MsgPropose {
            return self.step_forwarded_proposal(message);
        }
        let from = message.from;
        let term = message.term;
        if let Err(e) = self.raw.step(message) {
            tracing::debug!(node = self.id, from, error = %e, "raft refused a message");
            return;
        }
        let raft = &self.raw.raft;
        if term == raft.term && term != 0 {
            let now = Instant::now();
            if raft.state == StateRole::Leader {
                self.peer_heard.insert(from, now);
            } else if from == raft.leader_id {
                self.leader_heard = Some(now);
            }
        }
    }

    /// A follower's proposal, forwarded in the raft stream: appended only if this node still
    /// leads in the term the follower saw (so the entry's term tells the follower whether it can
    /// still come), and only plain commands (membership changes go through
    /// [`Self::change_membership`]'s checks).
    fn step_forwarded_proposal(&mut self, message: Message) {
        let raft = &self.raw.raft;
        let from = message.from;
        let acceptable = message.entries.len() == 1
            && message.entries[0].get_entry_type() == EntryType::EntryNormal
            && forwarded_term(&message.entries[0].context) == Some(raft.term)
            && self.not_leader().is_none();
        if !acceptable {
            // The follower learns of it from the next term's entries (or its deadline).
            tracing::debug!(node = self.id, from, "dropping a forwarded proposal");
            return;
        }
        if let Err(e) = self.raw.step(message) {
            tracing::debug!(node = self.id, from, error = %e, "raft dropped a forwarded proposal");
        }
    }

    /// Proposes on the leader; on a follower that knows the leader, sends the proposal to it in
    /// the raft stream (no separate RPC, and the answer is this node's own apply).
    fn propose_or_forward(&mut self, command: Vec<u8>, reply: Reply) {
        let raft = &self.raw.raft;
        let leader_id = raft.leader_id;
        if raft.state == StateRole::Leader || leader_id == 0 || leader_id == self.id {
            return self.propose(command, reply);
        }
        if self.address_of(leader_id).is_none() {
            let _ = reply.send(Err(ProposeFailure::NotLeader {
                leader_id,
                leader_addr: None,
            }));
            return;
        }
        let term = raft.term;
        let id = self.next_proposal_id();
        let mut context = Vec::with_capacity(FORWARDED_CONTEXT_LEN);
        context.extend_from_slice(&id);
        context.extend_from_slice(&term.to_be_bytes());
        let entry = Entry {
            data: command.into(),
            context: context.into(),
            ..Default::default()
        };
        let mut message = Message {
            to: leader_id,
            from: self.id,
            ..Default::default()
        };
        message.set_msg_type(MessageType::MsgPropose);
        message.mut_entries().push(entry);
        if self.send(vec![message]).contains(&leader_id) {
            // Never queued: definitely not applied, the caller may try again at once.
            let _ = reply.send(Err(ProposeFailure::Retry(format!(
                "the link to leader {leader_id} is full or down"
            ))));
            return;
        }
        self.forwarded.insert(id, ForwardedProposal { term, reply });
    }

    fn propose(
        &mut self,
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Applied, ProposeFailure>>,
    ) {
        if let Some(failure) = self.not_leader() {
            let _ = reply.send(Err(failure));
            return;
        }
        let id = self.next_proposal_id();
        match self.raw.propose(id.to_vec(), command) {
            Ok(()) => self.add_waiter(id, reply),
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(ProposeFailure::Retry(
                    "raft dropped the proposal (leadership transfer or too many uncommitted bytes)"
                        .into(),
                )));
            }
            Err(e) => {
                let _ = reply.send(Err(ProposeFailure::Failed(RaftError::Dropped(
                    e.to_string(),
                ))));
            }
        }
    }

    fn change_membership(
        &mut self,
        change: MemberChange,
        reply: oneshot::Sender<Result<Applied, ProposeFailure>>,
    ) {
        if let Some(failure) = self.not_leader() {
            let _ = reply.send(Err(failure));
            return;
        }
        let refuse = |reply: oneshot::Sender<_>, why: String| {
            let _ = reply.send(Err(ProposeFailure::Failed(RaftError::Membership(why))));
        };
        // Both pass within a commit round trip (raft-rs also counts a new leader's first entry
        // as a pending change until it applies), so the caller waits and tries again rather
        // than failing: nothing was proposed.
        let busy = |reply: oneshot::Sender<_>, why: &str| {
            let _ = reply.send(Err(ProposeFailure::Retry(why.into())));
        };
        if self.raw.raft.has_pending_conf() {
            return busy(reply, "another membership change is being applied");
        }
        let conf = self.raw.raft.prs().conf().to_conf_state();
        if !conf.voters_outgoing.is_empty() {
            return busy(reply, "the group is in a joint configuration");
        }
        if let Some(promotion) = &self.promotion {
            let busy = promotion.id;
            match change {
                // The same add again (a caller retrying): take over the wait.
                MemberChange::Add { id, addr }
                    if id == busy && self.peers.get(&id) == Some(&addr) =>
                {
                    if let Some(old) = self.promotion.take() {
                        let _ = old
                            .reply
                            .send(Err(ProposeFailure::Failed(RaftError::Membership(format!(
                                "superseded by another request to add node {busy}"
                            )))));
                    }
                    self.promotion = Some(Promotion {
                        id,
                        since: self.raw.raft.raft_log.last_index(),
                        reply,
                        deadline: Instant::now() + promotion_wait(&self.config),
                    });
                    return;
                }
                // Removing the learner cancels its promotion.
                MemberChange::Remove { id } if id == busy => {
                    if let Some(old) = self.promotion.take() {
                        let _ = old
                            .reply
                            .send(Err(ProposeFailure::Failed(RaftError::Membership(format!(
                                "node {busy} was removed while it was catching up"
                            )))));
                    }
                }
                _ => {
                    return refuse(
                        reply,
                        format!(
                            "node {busy} is catching up as a learner before its promotion; \
                             retry once it is a voter"
                        ),
                    );
                }
            }
        }
        let (change_type, node_id, peer_addr) = match change {
            MemberChange::Add { id, addr } => {
                if id == 0 {
                    let _ = reply.send(Err(ProposeFailure::Failed(RaftError::Invalid(
                        "node id must not be 0".into(),
                    ))));
                    return;
                }
                if conf.voters.contains(&id) && self.peers.get(&id) == Some(&addr) {
                    // Already a member at this address: nothing to change.
                    let _ = reply.send(Ok(Applied {
                        index: self.applied,
                        outcome: Vec::new(),
                    }));
                    return;
                }
                if !conf.voters.contains(&id) {
                    // A new node (or a learner): catch it up as a learner first.
                    return self.add_learner(id, addr, &conf, reply);
                }
                // A voter's new address.
                (ConfChangeType::AddNode, id, addr.to_string())
            }
            MemberChange::Remove { id } => {
                if !conf.voters.contains(&id) && !conf.learners.contains(&id) {
                    let _ = reply.send(Ok(Applied {
                        index: self.applied,
                        outcome: Vec::new(),
                    }));
                    return;
                }
                if conf.voters == [id] {
                    return refuse(reply, format!("node {id} is the last voter"));
                }
                (ConfChangeType::RemoveNode, id, String::new())
            }
        };
        self.propose_change(change_type, node_id, peer_addr, Some(reply));
    }

    /// Proposes one configuration change; `reply` (if any) is answered when it applies.
    fn propose_change(
        &mut self,
        change_type: ConfChangeType,
        node_id: u64,
        peer_addr: String,
        reply: Option<Reply>,
    ) -> bool {
        let proposal_id = self.next_proposal_id();
        let context = pb::RaftConfChangeContext {
            version: 1,
            peer_addr,
            proposal_id: proposal_id.to_vec(),
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = node_id;
        let mut cc = ConfChangeV2::default();
        cc.mut_changes().push(single);
        let failure = match self.raw.propose_conf_change(context, cc) {
            Ok(()) => {
                if let Some(reply) = reply {
                    self.add_waiter(proposal_id, reply);
                }
                return true;
            }
            Err(raft::Error::ProposalDropped) => {
                ProposeFailure::Retry("raft dropped the membership change".into())
            }
            Err(e) => ProposeFailure::Failed(RaftError::Membership(e.to_string())),
        };
        if let Some(reply) = reply {
            let _ = reply.send(Err(failure));
        }
        false
    }

    /// First half of adding node `id`: make it a learner (unless it is one at `addr` already)
    /// and wait, on ticks, for it to catch up ([`Self::promote_caught_up_learner`]).
    fn add_learner(
        &mut self,
        id: u64,
        addr: PeerAddr,
        conf: &raft::eraftpb::ConfState,
        reply: Reply,
    ) {
        let known = conf.learners.contains(&id) && self.peers.get(&id) == Some(&addr);
        if !known
            && !self.propose_change(ConfChangeType::AddLearnerNode, id, addr.to_string(), None)
        {
            let _ = reply.send(Err(ProposeFailure::Retry(format!(
                "raft refused to add node {id} as a learner"
            ))));
            return;
        }
        tracing::info!(node = self.id, learner = id, %addr, "adding a node as a learner; it is promoted once caught up");
        self.promotion = Some(Promotion {
            id,
            since: self.raw.raft.raft_log.last_index(),
            reply,
            deadline: Instant::now() + promotion_wait(&self.config),
        });
    }

    /// Second half of adding a node: once the learner has caught up, propose its promotion to
    /// voter (the caller is answered when that applies). Gives up at the deadline, leaving it a
    /// learner.
    fn promote_caught_up_learner(&mut self) {
        let Some(promotion) = self.promotion.take() else {
            return;
        };
        if let Some(failure) = self.not_leader() {
            // The new leader knows nothing of this wait; the caller's retry reaches it.
            let _ = promotion.reply.send(Err(failure));
            return;
        }
        if promotion.reply.is_closed() {
            return;
        }
        let raft = &self.raw.raft;
        let id = promotion.id;
        let is_learner = raft.prs().conf().to_conf_state().learners.contains(&id);
        // Not while a snapshot is on its way (`matched` is stale then); a learner left in
        // probe state after its snapshot on an idle group has caught up all the same.
        let caught_up = raft.prs().get(id).is_some_and(|pr| {
            pr.state != raft::ProgressState::Snapshot
                && pr.matched >= promotion.since
                && pr.matched + CAUGHT_UP_SLACK >= raft.raft_log.committed
        });
        let pending = raft.has_pending_conf();
        if is_learner && caught_up && !pending {
            tracing::info!(
                node = self.id,
                learner = id,
                "learner caught up; promoting it to voter"
            );
            let addr = self
                .peers
                .get(&id)
                .map(ToString::to_string)
                .unwrap_or_default();
            self.propose_change(ConfChangeType::AddNode, id, addr, Some(promotion.reply));
            return;
        }
        if Instant::now() >= promotion.deadline {
            let (matched, committed) = (
                raft.prs().get(id).map_or(0, |pr| pr.matched),
                raft.raft_log.committed,
            );
            let where_ = self
                .peers
                .get(&id)
                .map_or_else(|| "its address".to_string(), ToString::to_string);
            let why = if is_learner {
                format!(
                    "node {id} was added as a learner but has not caught up (it has the log up to \
                     {matched} of {committed}); is it running at {where_} with --join? It stays \
                     a learner: add it again to promote it once it has caught up, or remove it"
                )
            } else {
                format!("node {id} did not become a learner in time; retry")
            };
            let _ = promotion
                .reply
                .send(Err(ProposeFailure::Failed(RaftError::Membership(why))));
            return;
        }
        self.promotion = Some(promotion);
    }

    fn read_index(&mut self, reply: oneshot::Sender<Result<u64, ProposeFailure>>) {
        if self.raw.raft.leader_id == 0 {
            // raft-rs silently drops reads without a leader; answer now so the caller can wait
            // for one.
            let _ = reply.send(Err(ProposeFailure::NotLeader {
                leader_id: 0,
                leader_addr: None,
            }));
            return;
        }
        self.next_seq += 1;
        let read_id = self.next_seq;
        self.raw.read_index(read_id.to_be_bytes().to_vec());
        self.reads.insert(read_id, reply);
    }

    /// Detects a data directory that lost entries while the node was a member, before raft-rs
    /// panics on it (`to_commit N is out of range [last_index M]`).
    ///
    /// A leader's heartbeat carries `min(commit, match)` for the receiver, where `match` only
    /// ever comes from the receiver's own acknowledgements of durably stored entries, and a
    /// follower never drops entries it acknowledged to the current leader. So a heartbeat this
    /// node will process whose commit index is beyond its last log index proves that the log
    /// lost acknowledged entries: continuing would let the node vote and acknowledge as if it
    /// still had them, which can lose committed writes.
    fn lost_log(&self, message: &Message) -> Option<RaftFault> {
        let raft = &self.raw.raft;
        let last_index = raft.raft_log.last_index();
        if message.get_msg_type() != MessageType::MsgHeartbeat
            || message.term < raft.term
            || message.commit <= last_index
        {
            return None;
        }
        Some(RaftFault::LostLog {
            node_id: self.id,
            data_dir: self.config.data_dir.clone(),
            last_index,
            acknowledged: message.commit,
            leader_id: message.from,
        })
    }

    /// `Some` unless this node is the leader and can take proposals.
    fn not_leader(&self) -> Option<ProposeFailure> {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            let leader_id = raft.leader_id;
            return Some(ProposeFailure::NotLeader {
                leader_id,
                leader_addr: self.address_of(leader_id),
            });
        }
        if raft.lead_transferee.is_some() {
            return Some(ProposeFailure::Retry(
                "leadership is being transferred".into(),
            ));
        }
        None
    }

    fn next_proposal_id(&mut self) -> [u8; 16] {
        self.next_seq += 1;
        let mut id = [0; 16];
        id[..8].copy_from_slice(&self.nonce.to_be_bytes());
        id[8..].copy_from_slice(&self.next_seq.to_be_bytes());
        id
    }

    fn add_waiter(
        &mut self,
        id: [u8; 16],
        reply: oneshot::Sender<Result<Applied, ProposeFailure>>,
    ) {
        let index = self.raw.raft.raft_log.last_index();
        if let Some(old) = self.waiters.insert(index, Waiter { id, reply }) {
            // Our log was truncated below an older proposal of ours and reused its index: that
            // proposal's entry is gone.
            let _ = old.reply.send(Err(ProposeFailure::Retry(format!(
                "entry {index} was overwritten by a newer leader"
            ))));
        }
    }

    fn address_of(&self, id: u64) -> Option<PeerAddr> {
        if id == self.id {
            return Some(self.config.advertise_addr.clone());
        }
        self.peers
            .get(&id)
            .or_else(|| self.learned.get(&id))
            .cloned()
    }

    fn on_tick(&mut self) {
        self.raw.tick();
        self.reads.retain(|_, reply| !reply.is_closed());
        self.waiters.retain(|_, waiter| !waiter.reply.is_closed());
        self.forwarded.retain(|_, f| !f.reply.is_closed());
        self.step_down_if_removed();
        self.refresh_contact();
        self.promote_caught_up_learner();
        self.propose_group_id();
    }

    /// raft-rs keeps a removed leader leading; hand leadership to the most up-to-date voter.
    fn step_down_if_removed(&mut self) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader
            || raft.prs().conf().voters().contains(self.id)
            || raft.lead_transferee.is_some()
        {
            return;
        }
        let best = raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .filter_map(|id| raft.prs().get(id).map(|pr| (pr.matched, id)))
            .max();
        if let Some((_, transferee)) = best {
            tracing::info!(
                node = self.id,
                transferee,
                "removed from the group while leader; transferring leadership"
            );
            self.raw.transfer_leader(transferee);
        }
    }

    fn refresh_contact(&mut self) {
        let now = Instant::now();
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader {
            let voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
            let mut heard: Vec<Instant> = voters
                .iter()
                .filter_map(|id| {
                    if *id == self.id {
                        Some(now)
                    } else {
                        self.peer_heard.get(id).copied()
                    }
                })
                .collect();
            heard.sort_unstable_by(|a, b| b.cmp(a));
            let quorum = voters.len() / 2 + 1;
            if let Some(at) = heard.get(quorum.saturating_sub(1)) {
                self.contact = Some(*at);
            }
        } else if raft.leader_id != 0
            && let Some(heard) = self.leader_heard
        {
            self.contact = Some(heard);
        }
        let age = self
            .contact
            .map_or(-1.0, |at| now.duration_since(at).as_secs_f64());
        self.metrics.leader_contact_age.set(age);
    }

    /// Processes Readys until raft has nothing more to do.
    fn drive_ready(&mut self) -> Result<(), StorageFailure> {
        // Each round may make more entries committed (a single node commits on persist).
        for _ in 0..16 {
            if !self.raw.has_ready() {
                break;
            }
            self.on_ready()?;
        }
        // Raft may have asked for a fresh snapshot without producing a Ready.
        self.maybe_snapshot()
    }

    fn on_ready(&mut self) -> Result<(), StorageFailure> {
        let mut ready = self.raw.ready();

        // 1. Soft state.
        if let Some(ss) = ready.ss() {
            if ss.leader_id != self.leader_id {
                if ss.leader_id != 0 {
                    self.metrics.leader_changes.inc();
                    tracing::info!(
                        node = self.id,
                        leader = ss.leader_id,
                        term = self.raw.raft.term,
                        "new raft leader"
                    );
                }
                self.leader_id = ss.leader_id;
                self.leader_heard = None;
                self.peer_heard.clear();
            }
            self.metrics.role.set(role_gauge(ss.raft_state));
        }

        // 2. The leader's messages may go out before its own fsync.
        if !ready.messages().is_empty() {
            let messages = ready.take_messages();
            self.send(messages);
        }

        // 3. ReadIndex answers.
        for state in ready.take_read_states() {
            let read_id = <[u8; 8]>::try_from(state.request_ctx.as_slice())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if let Some(reply) = self.reads.remove(&read_id) {
                let _ = reply.send(Ok(state.index));
            }
        }

        // 4. One transaction: snapshot, entries, hard state. A Ready whose only change is the
        //    commit index needs no sync (raft's `must_sync`): the commit index is written with
        //    the next transaction, like a LightReady's.
        let snapshot =
            (ready.snapshot().get_metadata().index != 0).then(|| ready.snapshot().clone());
        if !ready.must_sync() && snapshot.is_none() && ready.entries().is_empty() {
            if let Some(hs) = ready.hs() {
                self.raw.mut_store().note_commit(hs.commit);
            }
        } else {
            let started = Instant::now();
            self.raw.mut_store().persist(ReadyWrite {
                snapshot: snapshot.as_ref(),
                entries: ready.entries(),
                hard_state: ready.hs(),
                sync: ready.must_sync(),
            })?;
            self.metrics
                .storage_write_latency
                .observe(started.elapsed().as_secs_f64());
        }

        // 5. Messages that must follow the fsync (votes, append responses). The snapshot and
        //    entries they acknowledge are durable; applying them is this node's own business.
        if !ready.persisted_messages().is_empty() {
            let messages = ready.take_persisted_messages();
            self.send(messages);
        }

        // 6. Install the received snapshot into the state machine.
        if let Some(snapshot) = snapshot {
            self.install_snapshot(&snapshot)?;
        }

        // 7. Apply.
        let committed = ready.take_committed_entries();
        self.apply(committed);

        // 8. Advance and handle the LightReady.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().note_commit(commit);
        }
        let messages = light.take_messages();
        self.send(messages);
        let committed = light.take_committed_entries();
        self.apply(committed);

        // 9. Tell raft what was applied; snapshot past the threshold.
        self.raw.advance_apply();
        self.metrics
            .commit_index
            .set(gauge(self.raw.raft.raft_log.committed));
        self.metrics.term.set(gauge(self.raw.raft.term));
        self.maybe_snapshot()
    }

    /// Queues `messages` for their peers; returns (and reports to raft) the peers that could
    /// not take them.
    fn send(&mut self, messages: Vec<Message>) -> Vec<u64> {
        if messages.is_empty() {
            return Vec::new();
        }
        let unreachable = {
            let peers = &self.peers;
            let learned = &self.learned;
            self.transport.send(messages, |id| {
                peers.get(&id).or_else(|| learned.get(&id)).cloned()
            })
        };
        for id in &unreachable {
            self.raw.report_unreachable(*id);
        }
        unreachable
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        let index = snapshot.get_metadata().index;
        let fail = |what: String| StorageFailure::new(&self.config.data_dir, what);
        let SnapshotData {
            peers,
            group_id,
            state,
        } = decode_snapshot_data(snapshot.get_data())
            .map_err(|e| fail(format!("snapshot at {index} from the leader: {e}")))?;
        self.sm.restore(index, &state).map_err(|e| {
            fail(format!(
                "restoring the state machine from the leader's snapshot at {index}: {e}"
            ))
        })?;
        self.peers = peers;
        self.applied = index;
        // A snapshot taken before the group had an id leaves it to the entry that follows.
        if group_id.is_some() {
            self.group_id = group_id;
        }
        // Forwarded proposals may be inside the snapshot: their outcome is unknown.
        for (_, forwarded) in self.forwarded.drain() {
            let _ = forwarded
                .reply
                .send(Err(ProposeFailure::Failed(RaftError::Dropped(format!(
                    "a snapshot at index {index} replaced the log; a forwarded proposal may or may not have been applied"
                )))));
        }
        // Proposals at or below the snapshot can no longer be matched to their entries.
        let unresolved: Vec<u64> = self.waiters.range(..=index).map(|(i, _)| *i).collect();
        for waiter_index in unresolved {
            if let Some(waiter) = self.waiters.remove(&waiter_index) {
                let _ = waiter
                    .reply
                    .send(Err(ProposeFailure::Failed(RaftError::Dropped(format!(
                        "a snapshot at index {index} replaced the log; entry {waiter_index} may or may not have been applied"
                    )))));
            }
        }
        self.sm.applied(index);
        self.metrics.snapshots_installed.inc();
        self.metrics
            .snapshot_size
            .set(gauge(snapshot.get_data().len() as u64));
        self.metrics.applied_index.set(gauge(index));
        tracing::info!(
            node = self.id,
            index,
            bytes = snapshot.get_data().len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some((last, last_term)) = entries.last().map(|e| (e.index, e.term)) else {
            return;
        };
        for entry in entries {
            let index = entry.index;
            if index <= self.applied {
                continue;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.context.is_empty() {
                        // A new leader's empty entry, or a group id entry.
                        if let Some(id) = entry.data.strip_prefix(GROUP_ID_PREFIX) {
                            self.apply_group_id(index, id);
                        }
                        self.resolve(index, None, Vec::new());
                    } else {
                        let outcome = self.sm.apply(index, &entry.data);
                        if let Some(forwarded) =
                            forwarded_id(&entry.context).and_then(|id| self.forwarded.remove(&id))
                        {
                            let applied = Applied {
                                index,
                                outcome: outcome.clone(),
                            };
                            self.answers.push((forwarded.reply, Ok(applied)));
                        }
                        self.resolve(index, Some(&entry.context), outcome);
                    }
                }
                EntryType::EntryConfChangeV2 | EntryType::EntryConfChange => {
                    self.apply_conf_change(&entry);
                }
            }
            self.applied = index;
        }
        debug_assert!(self.applied >= last);
        // A forwarded proposal's entry can only carry the term it was sent in, and terms never
        // decrease along the log: past an entry of a later term, it will not come.
        let lost: Vec<ForwardedProposal> = self
            .forwarded
            .extract_if(|_, forwarded| forwarded.term < last_term)
            .map(|(_, forwarded)| forwarded)
            .collect();
        for forwarded in lost {
            let why = format!(
                "the leader of term {} did not append a forwarded proposal",
                forwarded.term
            );
            self.answers
                .push((forwarded.reply, Err(ProposeFailure::Retry(why))));
        }
        self.sm.applied(self.applied);
        self.metrics.applied_index.set(gauge(self.applied));
        for (reply, result) in self.answers.drain(..) {
            let _ = reply.send(result);
        }
    }

    /// Applies a group id entry: the first one applied names the group, later ones (proposed by
    /// leaders that had not applied the first yet) change nothing.
    fn apply_group_id(&mut self, index: u64, data: &[u8]) {
        let proposed = String::from_utf8_lossy(data).into_owned();
        match &self.group_id {
            None => {
                tracing::info!(node = self.id, index, group_id = %proposed, "the raft group has an id");
                self.group_id = Some(proposed);
            }
            Some(current) if *current != proposed => {
                tracing::debug!(node = self.id, index, group_id = %current, ignored = %proposed, "ignoring a later group id entry");
            }
            Some(_) => {}
        }
    }

    /// Leader: gives a group without an id one (a new group, or one created by a build without
    /// group ids), once per term. Every node adopts the first such entry it applies, so all agree.
    fn propose_group_id(&mut self) {
        let raft = &self.raw.raft;
        if self.group_id.is_some()
            || raft.state != StateRole::Leader
            || raft.lead_transferee.is_some()
            || self.group_id_proposed == raft.term
        {
            return;
        }
        let term = raft.term;
        let group_id = format!("{:032x}", rand::random::<u128>());
        match self
            .raw
            .propose(Vec::new(), [GROUP_ID_PREFIX, group_id.as_bytes()].concat())
        {
            Ok(()) => {
                self.group_id_proposed = term;
                tracing::debug!(node = self.id, term, %group_id, "proposed a group id");
            }
            Err(e) => {
                tracing::debug!(node = self.id, error = %e, "could not propose a group id yet");
            }
        }
    }

    /// A node restarted with `--peers` resumes from its log, whose membership wins: say so when
    /// the two differ, since the operator may expect the list to take effect.
    fn warn_ignored_initial_members(&self) {
        let initial = &self.config.initial_members;
        if initial.is_empty() || *initial == self.peers {
            return;
        }
        tracing::warn!(
            node = self.id,
            stored = ?self.peers,
            given = ?initial,
            "the members given at start (--peers) differ from the membership stored in the raft \
             log; the stored membership wins (change it with `meridian ctl members add/remove`)"
        );
    }

    /// Answers the waiter at `index`, if any: ours if the entry carries its id.
    fn resolve(&mut self, index: u64, context: Option<&[u8]>, outcome: Vec<u8>) {
        let Some(waiter) = self.waiters.remove(&index) else {
            return;
        };
        let result = if context == Some(waiter.id.as_slice()) {
            Ok(Applied { index, outcome })
        } else {
            Err(ProposeFailure::Retry(format!(
                "entry {index} was overwritten by another leader's entry"
            )))
        };
        self.answers.push((waiter.reply, result));
    }

    fn apply_conf_change(&mut self, entry: &Entry) {
        let index = entry.index;
        let cc = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            ConfChangeV2::parse_from_bytes(&entry.data)
        } else {
            ConfChange::parse_from_bytes(&entry.data).map(raft_proto::ConfChangeI::into_v2)
        };
        let cc = match cc {
            Ok(cc) => cc,
            Err(e) => {
                tracing::error!(node = self.id, index, error = %e, "undecodable configuration change; skipped");
                return;
            }
        };
        let context = if entry.context.is_empty() {
            None
        } else {
            match pb::RaftConfChangeContext::decode(entry.context.as_ref()) {
                Ok(context) => Some(context),
                Err(e) => {
                    tracing::warn!(node = self.id, index, error = %e, "undecodable configuration change context");
                    None
                }
            }
        };
        let waiter_id = context.as_ref().map(|c| c.proposal_id.clone());
        match self.raw.apply_conf_change(&cc) {
            Ok(conf_state) => {
                for change in cc.get_changes() {
                    match change.get_change_type() {
                        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                            let addr = context
                                .as_ref()
                                .and_then(|c| c.peer_addr.parse::<PeerAddr>().ok());
                            if let Some(addr) = addr {
                                self.peers.insert(change.node_id, addr);
                                self.learned.remove(&change.node_id);
                            }
                        }
                        ConfChangeType::RemoveNode => {
                            self.peers.remove(&change.node_id);
                        }
                    }
                }
                let members: Vec<u64> = conf_state
                    .voters
                    .iter()
                    .chain(conf_state.learners.iter())
                    .copied()
                    .collect();
                self.peers.retain(|id, _| members.contains(id));
                self.transport.retain(|id| members.contains(&id));
                tracing::info!(node = self.id, index, voters = ?conf_state.voters, peers = ?self.peers, "applied a membership change");
                self.resolve(index, waiter_id.as_deref(), Vec::new());
            }
            Err(e) => {
                tracing::warn!(node = self.id, index, error = %e, "raft refused a membership change");
                if let Some(waiter) = self.waiters.remove(&index) {
                    let result = if Some(waiter.id.as_slice()) == waiter_id.as_deref() {
                        Err(ProposeFailure::Failed(RaftError::Membership(e.to_string())))
                    } else {
                        Err(ProposeFailure::Retry(format!(
                            "entry {index} was overwritten by another leader's entry"
                        )))
                    };
                    self.answers.push((waiter.reply, result));
                }
            }
        }
    }

    /// Records a local snapshot whose payload is written, then starts one past the threshold
    /// (or when raft asked for one) if none is in flight.
    fn maybe_snapshot(&mut self) -> Result<(), StorageFailure> {
        self.finish_snapshot()?;
        if self.snapshot_job.is_some() {
            // Raft's request (if any) stays noted in storage and is taken up after this one.
            return Ok(());
        }
        if self.snapshot_retry_at.is_some_and(|at| Instant::now() < at) {
            // After a failed write; a request stays noted for then.
            return Ok(());
        }
        let threshold = self.config.snapshot_threshold.max(1);
        let last_snapshot = self.raw.store().snapshot_meta().index;
        let requested = self.raw.store().take_snapshot_request();
        if self.applied <= last_snapshot || (!requested && self.applied < last_snapshot + threshold)
        {
            return Ok(());
        }
        self.start_snapshot(threshold)
    }

    /// Captures everything the snapshot at the applied index holds and starts the thread that
    /// encodes and writes it: the Raft thread pays only for the capture.
    fn start_snapshot(&mut self, threshold: u64) -> Result<(), StorageFailure> {
        let started = Instant::now();
        let index = self.applied;
        let term = self.raw.store().term(index).map_err(|e| {
            StorageFailure::new(&self.config.data_dir, format!("term of {index}: {e}"))
        })?;
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        // The configuration is applied with its entry, so this is the one at `index`.
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        // Keep a tail of the log so a follower slightly behind gets entries, not a snapshot.
        let compact_to = index.saturating_sub(threshold / 4);
        let encoder = self.sm.snapshot_encoder();
        let peers = self.peers.clone();
        let group_id = self.group_id.clone();
        let dir = self.raw.store().dir().to_path_buf();
        let (done_tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}-snapshot", self.id))
            .spawn(move || {
                let written = encode_and_write(&dir, index, term, encoder, &peers, group_id);
                // A send error means the node stopped: the unrecorded file is removed on open.
                let _ = done_tx.send(written);
            })
            .map_err(|e| {
                StorageFailure::new(
                    &self.config.data_dir,
                    format!("spawning the snapshot thread: {e}"),
                )
            })?;
        self.snapshot_job = Some(SnapshotJob {
            meta,
            compact_to,
            started,
            stall: started.elapsed(),
            done,
            thread: Some(thread),
        });
        tracing::debug!(node = self.id, index, "taking a snapshot");
        Ok(())
    }

    /// Records the local snapshot in flight if its payload is written (and compacts the log);
    /// drops it if a newer snapshot was stored meanwhile.
    fn finish_snapshot(&mut self) -> Result<(), StorageFailure> {
        let Some(job) = self.snapshot_job.as_mut() else {
            return Ok(());
        };
        let written = match job.done.try_recv() {
            Ok(written) => written,
            Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
            Err(oneshot::error::TryRecvError::Closed) => {
                let why = job
                    .thread
                    .take()
                    .and_then(|thread| thread.join().err())
                    .map_or_else(|| "no panic message".into(), |p| panic_message(p.as_ref()));
                Err(StorageFailure::new(
                    &self.config.data_dir,
                    format!("the snapshot thread stopped without writing the snapshot: {why}"),
                ))
            }
        };
        let Some(job) = self.snapshot_job.take() else {
            return Ok(());
        };
        // It has sent its answer: only its exit is left to wait for.
        if let Some(thread) = job.thread
            && let Err(payload) = thread.join()
        {
            let message = panic_message(payload.as_ref());
            tracing::warn!(node = self.id, %message, "the snapshot thread panicked after writing");
        }
        let written = match written {
            Ok(written) => written,
            Err(failure) => {
                // The log still holds everything: a failed snapshot (a full disk, a permission)
                // only delays compaction, so the node keeps serving and tries again later.
                self.metrics.snapshot_failures.inc();
                self.snapshot_retry_at = Some(Instant::now() + SNAPSHOT_RETRY);
                tracing::error!(
                    node = self.id,
                    index = job.meta.index,
                    error = %failure,
                    retry_in_s = SNAPSHOT_RETRY.as_secs(),
                    "could not write a snapshot; the log is kept whole until one succeeds"
                );
                return Ok(());
            }
        };
        let started = Instant::now();
        let index = job.meta.index;
        let recorded =
            self.raw
                .mut_store()
                .record_local_snapshot(job.meta, &written.file, job.compact_to)?;
        self.metrics
            .snapshot_stall
            .observe((job.stall + started.elapsed()).as_secs_f64());
        if !recorded {
            tracing::info!(
                node = self.id,
                index,
                stored = self.raw.store().snapshot_meta().index,
                "dropped a local snapshot: a newer one was stored while it was written"
            );
            return Ok(());
        }
        // A request raft made while this one was written is likely answered by it: forget it.
        // If it is not (a follower further ahead), raft asks again on its next attempt to send.
        self.raw.mut_store().take_snapshot_request();
        self.metrics.snapshots_created.inc();
        self.metrics.snapshot_size.set(gauge(written.bytes as u64));
        tracing::info!(
            node = self.id,
            index,
            bytes = written.bytes,
            compacted_through = self
                .raw
                .store()
                .first_index()
                .unwrap_or(1)
                .saturating_sub(1),
            took_ms = u64::try_from(job.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "took a snapshot and compacted the log"
        );
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf().to_conf_state();
        let mut members = BTreeMap::new();
        for id in conf.voters.iter().chain(conf.voters_outgoing.iter()) {
            if let Some(addr) = self.address_of(*id) {
                members.insert(*id, addr);
            }
        }
        let mut learners = BTreeMap::new();
        for id in conf.learners.iter().chain(conf.learners_next.iter()) {
            if let Some(addr) = self.address_of(*id) {
                learners.insert(*id, addr);
            }
        }
        let silent_peers = if raft.state == StateRole::Leader {
            let now = Instant::now();
            let bound = self.config.tick_interval
                * u32::try_from(self.config.election_ticks).unwrap_or(u32::MAX);
            members
                .keys()
                .chain(learners.keys())
                .filter(|id| **id != self.id)
                .filter(|id| {
                    self.peer_heard
                        .get(id)
                        .is_none_or(|at| now.saturating_duration_since(*at) > bound)
                })
                .copied()
                .collect()
        } else {
            BTreeSet::new()
        };
        let status = RaftStatus {
            node_id: self.id,
            role: match raft.state {
                StateRole::Follower => Role::Follower,
                StateRole::Candidate => Role::Candidate,
                StateRole::PreCandidate => Role::PreCandidate,
                StateRole::Leader => Role::Leader,
            },
            term: raft.term,
            leader_id: raft.leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            members,
            learners,
            last_leader_contact: self.contact,
            silent_peers,
            group_id: self.group_id.clone(),
            snapshot_index: self.raw.store().snapshot_meta().index,
        };
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

fn role_gauge(role: StateRole) -> i64 {
    match role {
        StateRole::Follower => 0,
        StateRole::PreCandidate => 1,
        StateRole::Candidate => 2,
        StateRole::Leader => 3,
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A decoded snapshot payload.
struct SnapshotData {
    peers: BTreeMap<u64, PeerAddr>,
    group_id: Option<String>,
    state: Vec<u8>,
}

/// The snapshot thread's work: encodes the state and the payload, and writes it durably.
fn encode_and_write(
    dir: &std::path::Path,
    index: u64,
    term: u64,
    encoder: SnapshotEncoder,
    peers: &BTreeMap<u64, PeerAddr>,
    group_id: Option<String>,
) -> Result<WrittenSnapshot, StorageFailure> {
    let data = encode_snapshot_data(peers, group_id.as_deref(), encoder());
    let file = write_snapshot_file(dir, index, term, &data)?;
    Ok(WrittenSnapshot {
        file,
        bytes: data.len(),
    })
}

/// Encodes a snapshot payload: member addresses, the group id and the state machine's snapshot.
fn encode_snapshot_data(
    peers: &BTreeMap<u64, PeerAddr>,
    group_id: Option<&str>,
    state: Vec<u8>,
) -> Vec<u8> {
    pb::RaftSnapshotData {
        version: 1,
        peers: peers
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect(),
        state,
        group_id: group_id.unwrap_or_default().to_string(),
    }
    .encode_to_vec()
}

/// Decodes a snapshot payload written by [`encode_snapshot_data`].
fn decode_snapshot_data(bytes: &[u8]) -> Result<SnapshotData, String> {
    let data = pb::RaftSnapshotData::decode(bytes).map_err(|e| format!("undecodable: {e}"))?;
    if data.version != 1 {
        return Err(format!(
            "unsupported snapshot format version {}",
            data.version
        ));
    }
    let mut peers = BTreeMap::new();
    for (id, addr) in data.peers {
        let addr = addr
            .parse::<PeerAddr>()
            .map_err(|e| format!("peer {id} address {addr:?}: {e}"))?;
        peers.insert(id, addr);
    }
    Ok(SnapshotData {
        peers,
        group_id: (!data.group_id.is_empty()).then_some(data.group_id),
        state: data.state,
    })
}

/// How long a caller should wait for one ReadIndex round before asking again.
/// How long the leader waits for a new learner to catch up before the add fails: half the
/// request timeout, so the answer reaches a caller that forwarded the request in time.
fn promotion_wait(config: &RaftConfig) -> Duration {
    config.request_timeout / 2
}

pub(crate) fn read_round_timeout(config: &RaftConfig) -> Duration {
    config.tick_interval * u32::try_from(config.election_ticks.max(1) * 2).unwrap_or(u32::MAX)
}
