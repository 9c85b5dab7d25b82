//! The hub-to-hub gRPC transport: the peer service other nodes call ([`PeerService`]), the
//! outbound per-peer message streams ([`Transport`], owned by the node task) and the client side
//! of forwarded proposals and membership changes.
//!
//! **Backpressure:** each peer has a bounded queue drained by one task that keeps a single
//! client-streaming call open. When the queue is full (the peer is slow or unreachable) messages
//! are dropped and raft is told the peer is unreachable; raft retransmits what matters. Snapshots
//! travel on their own call (chunked), so a large state never blocks heartbeats.
//!
//! **Reconnect:** a broken stream is reopened with exponential backoff (50 ms .. 1 s); HTTP/2
//! keepalives detect silently dead connections (a blackholed peer) within a few seconds.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use meridian_proto::pb;
use meridian_proto::pb::raft_transport_client::RaftTransportClient;
use meridian_proto::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::metrics::Metrics;
use super::node::{Applied, MemberChange, Msg, ProposeFailure};
use super::{PeerAddr, RaftConfig, RaftError, RaftHandle, RaftStatus};

/// The tonic service the hub mounts for its peers.
pub type RaftPeerServer = RaftTransportServer<PeerService>;

/// The largest gRPC message a peer may send (a batch of raft messages, or one proposal).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The largest command [`RaftHandle::propose`] accepts.
pub(crate) const MAX_COMMAND_BYTES: usize = 32 << 20;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 1024;
/// Bytes of raft messages per stream frame.
const MAX_FRAME_BYTES: usize = 4 << 20;
/// Snapshot chunk size.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// The largest snapshot message accepted.
const MAX_SNAPSHOT_BYTES: usize = 4 << 30;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The peer service implementation (handed out by [`RaftHandle::peer_service`]).
pub struct PeerService {
    handle: RaftHandle,
    /// Senders of another group's messages already logged as an error (each is logged once).
    foreign_senders: Mutex<HashSet<(u64, String)>>,
}

/// The outbound side, owned by the node task.
pub(crate) struct Transport {
    self_id: u64,
    self_addr: String,
    source_ip: Option<IpAddr>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    runtime: tokio::runtime::Handle,
    node: mpsc::WeakSender<Msg>,
    /// This node's status, for the group id every frame carries.
    status: watch::Receiver<RaftStatus>,
    metrics: Metrics,
    links: HashMap<u64, PeerLink>,
    snapshots: HashMap<u64, AbortHandle>,
}

struct PeerLink {
    addr: PeerAddr,
    queue: mpsc::Sender<Vec<u8>>,
    task: AbortHandle,
}

// === impl PeerService ===

impl PeerService {
    pub(crate) fn server(handle: RaftHandle) -> RaftPeerServer {
        RaftTransportServer::new(Self {
            handle,
            foreign_senders: Mutex::new(HashSet::new()),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn to_node(&self, msg: Msg) -> Result<(), Status> {
        self.handle
            .inner
            .tx
            .send(msg)
            .await
            .map_err(|_| Status::unavailable("raft node stopped"))
    }

    /// Refuses messages from a node of another raft group (a node added to two groups, or an
    /// address that now belongs to another group's node): taking its log or snapshot would mix
    /// two groups' data. A sender without a group id (a new group before its first leader chose
    /// one, or an older build) is let through; so is everything while this node has none.
    fn check_group(&self, from_id: u64, from_addr: &str, theirs: &str) -> Result<(), Status> {
        let ours = self.handle.inner.status.borrow().group_id.clone();
        let Some(ours) = ours else {
            return Ok(());
        };
        if theirs.is_empty() || theirs == ours {
            return Ok(());
        }
        let first = self
            .foreign_senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((from_id, theirs.to_string()));
        let message = format!(
            "node {} belongs to raft group {ours}; refusing raft messages from node {from_id} \
             at {from_addr} of raft group {theirs}",
            self.handle.inner.config.node_id
        );
        if first {
            tracing::error!(
                node = self.handle.inner.config.node_id,
                from = from_id,
                %from_addr,
                group_id = %ours,
                their_group_id = %theirs,
                "refusing raft messages from a node of another raft group; check the group's \
                 membership (meridian ctl members list) for a wrong address"
            );
        } else {
            tracing::debug!(
                node = self.handle.inner.config.node_id,
                from = from_id,
                "{message}"
            );
        }
        Err(Status::failed_precondition(message))
    }

    async fn announce(&self, from_id: u64, from_addr: &str) -> Result<(), Status> {
        if from_id == 0 {
            return Ok(());
        }
        match from_addr.parse::<PeerAddr>() {
            Ok(addr) => self.to_node(Msg::PeerSeen { id: from_id, addr }).await,
            Err(_) => Err(Status::invalid_argument(format!(
                "from_addr {from_addr:?} is not a peer address (IP:port or name:port)"
            ))),
        }
    }
}

#[tonic::async_trait]
impl RaftTransport for PeerService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::RaftFrame>>,
    ) -> Result<Response<pb::RaftStreamClosed>, Status> {
        let mut frames = request.into_inner();
        let mut announced: Option<(u64, String)> = None;
        while let Some(frame) = frames.message().await? {
            self.check_group(frame.from_id, &frame.from_addr, &frame.group_id)?;
            if announced.as_ref() != Some(&(frame.from_id, frame.from_addr.clone())) {
                self.announce(frame.from_id, &frame.from_addr).await?;
                announced = Some((frame.from_id, frame.from_addr.clone()));
            }
            for bytes in frame.messages {
                let message = Message::parse_from_bytes(&bytes).map_err(|e| {
                    Status::invalid_argument(format!("undecodable raft message: {e}"))
                })?;
                self.to_node(Msg::Raft(Box::new(message))).await?;
            }
        }
        Ok(Response::new(pb::RaftStreamClosed {}))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::RaftSnapshotChunk>>,
    ) -> Result<Response<pb::RaftSnapshotAck>, Status> {
        let mut chunks = request.into_inner();
        let mut bytes = Vec::new();
        let mut first = true;
        while let Some(chunk) = chunks.message().await? {
            if first {
                self.check_group(chunk.from_id, &chunk.from_addr, &chunk.group_id)?;
                self.announce(chunk.from_id, &chunk.from_addr).await?;
                first = false;
            }
            if bytes.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "snapshot larger than {MAX_SNAPSHOT_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        let message = Message::parse_from_bytes(&bytes)
            .map_err(|e| Status::invalid_argument(format!("undecodable snapshot message: {e}")))?;
        if message.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(format!(
                "expected a MsgSnapshot, got {:?}",
                message.get_msg_type()
            )));
        }
        self.to_node(Msg::Raft(Box::new(message))).await?;
        Ok(Response::new(pb::RaftSnapshotAck {}))
    }

    async fn change_membership(
        &self,
        request: Request<pb::RaftMembershipRequest>,
    ) -> Result<Response<pb::RaftMembershipResponse>, Status> {
        let request = request.into_inner();
        let change = if request.add {
            let addr = request.peer_addr.parse::<PeerAddr>().map_err(|e| {
                Status::invalid_argument(format!("peer_addr {:?}: {e}", request.peer_addr))
            })?;
            MemberChange::Add {
                id: request.node_id,
                addr,
            }
        } else {
            MemberChange::Remove {
                id: request.node_id,
            }
        };
        let response = match self.handle.change_here(change).await {
            Ok(applied) => pb::RaftMembershipResponse {
                error: None,
                index: applied.index,
            },
            Err(failure) => pb::RaftMembershipResponse {
                error: Some(failure_to_pb(failure)),
                index: 0,
            },
        };
        Ok(Response::new(response))
    }

    async fn identify(
        &self,
        _request: Request<pb::RaftIdentifyRequest>,
    ) -> Result<Response<pb::RaftIdentity>, Status> {
        let status = self.handle.inner.status.borrow().clone();
        Ok(Response::new(identity_of(&status)))
    }
}

/// What a node says about itself to `Identify`.
fn identity_of(status: &RaftStatus) -> pb::RaftIdentity {
    pb::RaftIdentity {
        node_id: status.node_id,
        group_id: status.group_id.clone().unwrap_or_default(),
        // Nothing applied (a bootstrapped group starts with a snapshot at index 1) and no
        // configuration: the empty node `--join` starts.
        joining: status.applied_index == 0
            && status.members.is_empty()
            && status.learners.is_empty()
            && status.group_id.is_none(),
        applied_index: status.applied_index,
        voters: status.members.keys().copied().collect(),
    }
}

/// Asks the node behind `channel` who it is.
pub(crate) async fn identify(
    channel: Channel,
    timeout: Duration,
) -> Result<pb::RaftIdentity, String> {
    let mut client = client(channel);
    match tokio::time::timeout(timeout, client.identify(pb::RaftIdentifyRequest {})).await {
        Err(_) => Err("no answer in time".to_string()),
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            Err("it does not answer Identify (a build older than this one's group ids)".to_string())
        }
        Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// Encodes a failure for a forwarded call.
pub(crate) fn failure_to_pb(failure: ProposeFailure) -> pb::RaftRpcError {
    use pb::raft_rpc_error::Kind;
    let (kind, message, leader_id, leader_addr) = match failure {
        ProposeFailure::NotLeader {
            leader_id,
            leader_addr,
        } => (
            Kind::NotLeader,
            "not the leader".to_owned(),
            leader_id,
            leader_addr.map(|a| a.to_string()).unwrap_or_default(),
        ),
        // The leader retries these itself; one that reaches here ran out of time without
        // applying anything.
        ProposeFailure::Retry(why) => (Kind::NoLeader, why, 0, String::new()),
        ProposeFailure::Failed(error) => {
            let kind = match &error {
                RaftError::NoLeader => Kind::NoLeader,
                RaftError::Dropped(_) | RaftError::Transport(_) => Kind::Dropped,
                RaftError::Timeout(_) => Kind::Timeout,
                RaftError::Stopped => Kind::Stopped,
                RaftError::Membership(_) => Kind::Membership,
                RaftError::Storage(_) => Kind::Storage,
                RaftError::NotLeader { .. } => Kind::NotLeader,
                RaftError::Invalid(_) => Kind::Invalid,
            };
            // The caller wraps these two in the same variant again: send the bare reason, or
            // the message would say "membership change refused: " twice.
            let message = match error {
                RaftError::Membership(why) | RaftError::Invalid(why) => why,
                other => other.to_string(),
            };
            (kind, message, 0, String::new())
        }
    };
    pb::RaftRpcError {
        kind: kind as i32,
        message,
        leader_id,
        leader_addr,
    }
}

/// What a forwarded call's answer means to the caller.
pub(crate) enum Forwarded {
    /// Applied on the leader at this index.
    Applied(Applied),
    /// Not proposed (the target is not the leader, or could not be reached); try again, at the
    /// hinted leader if there is one.
    Retry(Option<PeerAddr>),
    /// A final error.
    Failed(RaftError),
}

/// Decodes a forwarded call's error.
pub(crate) fn failure_from_pb(error: pb::RaftRpcError, timeout: Duration) -> Forwarded {
    use pb::raft_rpc_error::Kind;
    let message = error.message;
    match Kind::try_from(error.kind).unwrap_or(Kind::Unspecified) {
        Kind::NotLeader | Kind::NoLeader => {
            Forwarded::Retry(error.leader_addr.parse::<PeerAddr>().ok())
        }
        Kind::Timeout => Forwarded::Failed(RaftError::Timeout(timeout)),
        Kind::Membership => Forwarded::Failed(RaftError::Membership(message)),
        Kind::Invalid => Forwarded::Failed(RaftError::Invalid(message)),
        Kind::Storage => Forwarded::Failed(RaftError::Dropped(format!(
            "the leader's storage failed: {message}"
        ))),
        Kind::Stopped => {
            Forwarded::Failed(RaftError::Dropped(format!("the leader stopped: {message}")))
        }
        Kind::Dropped | Kind::Unspecified => Forwarded::Failed(RaftError::Dropped(message)),
    }
}

/// Builds the endpoint for a peer's gRPC service (over TLS when `tls` is given).
pub(crate) fn peer_endpoint(
    addr: &PeerAddr,
    source_ip: Option<IpAddr>,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Endpoint, RaftError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| RaftError::Invalid(format!("peer address {addr}: {e}")))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| RaftError::Invalid(format!("peer TLS for {addr}: {e}")))?;
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .local_address(source_ip.filter(|ip| can_reach_from(*ip, addr))))
}

/// Whether a connection to `peer` can originate from `source`: the same address family, and
/// not from a loopback address to a non-loopback peer (the kernel refuses both). A peer known
/// by name may resolve to either family, so connections to it leave from an address the OS
/// picks.
fn can_reach_from(source: IpAddr, peer: &PeerAddr) -> bool {
    peer.ip().is_some_and(|peer| {
        source.is_ipv4() == peer.is_ipv4() && (!source.is_loopback() || peer.is_loopback())
    })
}

/// Connects to a peer, giving up after the connect timeout even if the peer accepted the TCP
/// connection but never answers the HTTP/2 handshake (a blackholed link).
pub(crate) async fn connect(endpoint: &Endpoint) -> Result<Channel, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT + KEEPALIVE_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!("connecting to {}: {e}", endpoint.uri())),
        Err(_) => Err(format!("connecting to {}: no answer", endpoint.uri())),
    }
}

fn client(channel: Channel) -> RaftTransportClient<Channel> {
    RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Whether a call failed before the request could reach the peer (connection refused), so
/// retrying cannot apply a command twice.
fn not_sent(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        source = error.source();
    }
    false
}

/// Forwards a membership change to the leader at `addr`.
pub(crate) async fn forward_change(
    channel: Channel,
    change: MemberChange,
    timeout: Duration,
    request_timeout: Duration,
) -> Forwarded {
    let request = match change {
        MemberChange::Add { id, addr } => pb::RaftMembershipRequest {
            add: true,
            node_id: id,
            peer_addr: addr.to_string(),
        },
        MemberChange::Remove { id } => pb::RaftMembershipRequest {
            add: false,
            node_id: id,
            peer_addr: String::new(),
        },
    };
    let mut client = client(channel);
    let call = client.change_membership(request);
    let response = match tokio::time::timeout(timeout, call).await {
        Err(_) => return Forwarded::Failed(RaftError::Timeout(request_timeout)),
        Ok(Err(status)) if not_sent(&status) => return Forwarded::Retry(None),
        Ok(Err(status)) => {
            return Forwarded::Failed(RaftError::Transport(format!(
                "{}: {}",
                status.code(),
                status.message()
            )));
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    match response.error {
        None => Forwarded::Applied(Applied {
            index: response.index,
            outcome: Vec::new(),
        }),
        Some(error) => failure_from_pb(error, request_timeout),
    }
}

// === impl Transport ===

impl Transport {
    pub(crate) fn new(
        config: &RaftConfig,
        runtime: tokio::runtime::Handle,
        node: mpsc::WeakSender<Msg>,
        status: watch::Receiver<RaftStatus>,
        metrics: Metrics,
    ) -> Self {
        Self {
            self_id: config.node_id,
            self_addr: config.advertise_addr.to_string(),
            source_ip: config.outbound_source_ip,
            tls: config.client_tls.clone(),
            runtime,
            node,
            status,
            metrics,
            links: HashMap::new(),
            snapshots: HashMap::new(),
        }
    }

    /// Queues `messages` for their peers; returns the peers that could not take them (unknown
    /// address or full queue), which raft should treat as unreachable.
    pub(crate) fn send(
        &mut self,
        messages: Vec<Message>,
        address_of: impl Fn(u64) -> Option<PeerAddr>,
    ) -> Vec<u64> {
        let mut unreachable = Vec::new();
        for message in messages {
            let to = message.to;
            let Some(addr) = address_of(to) else {
                tracing::debug!(
                    node = self.self_id,
                    to,
                    "no address for raft peer; message dropped"
                );
                self.metrics.messages_dropped.inc();
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    self.report_snapshot(to, false);
                }
                unreachable.push(to);
                continue;
            };
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(to, addr, message);
                continue;
            }
            let bytes = match message.write_to_bytes() {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(node = self.self_id, to, error = %e, "could not encode a raft message");
                    continue;
                }
            };
            let link = self.link(to, addr);
            if link.queue.try_send(bytes).is_err() {
                self.metrics.messages_dropped.inc();
                if !unreachable.contains(&to) {
                    unreachable.push(to);
                }
            }
        }
        unreachable
    }

    /// Closes links to peers for which `keep` is false (removed members).
    pub(crate) fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.links.retain(|id, link| {
            let keep = keep(*id);
            if !keep {
                link.task.abort();
            }
            keep
        });
    }

    fn link(&mut self, to: u64, addr: PeerAddr) -> &PeerLink {
        let stale = self
            .links
            .get(&to)
            .is_some_and(|link| link.addr != addr || link.task.is_finished());
        if stale && let Some(link) = self.links.remove(&to) {
            link.task.abort();
        }
        self.links.entry(to).or_insert_with(|| {
            let (queue, rx) = mpsc::channel(PEER_QUEUE);
            let task = self
                .runtime
                .spawn(run_link(
                    LinkConfig {
                        to,
                        addr: addr.clone(),
                        self_id: self.self_id,
                        self_addr: self.self_addr.clone(),
                        source_ip: self.source_ip,
                        tls: self.tls.clone(),
                        status: self.status.clone(),
                    },
                    rx,
                    self.node.clone(),
                ))
                .abort_handle();
            PeerLink { addr, queue, task }
        })
    }

    fn send_snapshot(&mut self, to: u64, addr: PeerAddr, message: Message) {
        if let Some(previous) = self.snapshots.remove(&to) {
            previous.abort();
        }
        let bytes = match message.write_to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(node = self.self_id, to, error = %e, "could not encode a snapshot message");
                self.report_snapshot(to, false);
                return;
            }
        };
        let config = LinkConfig {
            to,
            addr,
            self_id: self.self_id,
            self_addr: self.self_addr.clone(),
            source_ip: self.source_ip,
            tls: self.tls.clone(),
            status: self.status.clone(),
        };
        let node = self.node.clone();
        let task = self.runtime.spawn(async move {
            let size = bytes.len();
            let ok = match send_snapshot(&config, bytes).await {
                Ok(()) => {
                    tracing::info!(node = config.self_id, to, bytes = size, "sent a snapshot");
                    true
                }
                Err(e) => {
                    tracing::warn!(node = config.self_id, to, error = %e, "sending a snapshot failed");
                    false
                }
            };
            if let Some(node) = node.upgrade() {
                let _ = node.send(Msg::SnapshotSent { to, ok }).await;
            }
        });
        self.snapshots.insert(to, task.abort_handle());
    }

    fn report_snapshot(&self, to: u64, ok: bool) {
        if let Some(node) = self.node.upgrade() {
            let _ = node.try_send(Msg::SnapshotSent { to, ok });
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
        for task in self.snapshots.values() {
            task.abort();
        }
    }
}

/// Who a link connects to, and as whom.
struct LinkConfig {
    to: u64,
    addr: PeerAddr,
    self_id: u64,
    self_addr: String,
    source_ip: Option<IpAddr>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// This node's status (its group id goes on every frame).
    status: watch::Receiver<RaftStatus>,
}

// === impl LinkConfig ===

impl LinkConfig {
    /// This node's group id as sent to peers (empty: not known yet).
    fn group_id(&self) -> String {
        self.status.borrow().group_id.clone().unwrap_or_default()
    }
}

/// Keeps one streaming call to a peer open, feeding it from the queue.
async fn run_link(
    config: LinkConfig,
    mut queue: mpsc::Receiver<Vec<u8>>,
    node: mpsc::WeakSender<Msg>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match stream_to_peer(&config, &mut queue).await {
            StreamEnd::QueueClosed => return,
            StreamEnd::Failed(why) => {
                tracing::debug!(node = config.self_id, to = config.to, addr = %config.addr, error = %why, "raft stream to peer broke; reconnecting");
                let Some(node) = node.upgrade() else { return };
                let _ = node.try_send(Msg::Unreachable(config.to));
            }
            StreamEnd::Sent => backoff = BACKOFF_MIN,
        }
        // Drop what queued up meanwhile: it is stale, and raft resends what is still needed.
        let deadline = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                message = queue.recv() => if message.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum StreamEnd {
    /// The transport was dropped.
    QueueClosed,
    /// The call failed (after sending nothing or something).
    Failed(String),
    /// The peer closed a call that carried messages.
    Sent,
}

async fn stream_to_peer(config: &LinkConfig, queue: &mut mpsc::Receiver<Vec<u8>>) -> StreamEnd {
    let endpoint = match peer_endpoint(&config.addr, config.source_ip, config.tls.as_ref()) {
        Ok(endpoint) => endpoint,
        Err(e) => return StreamEnd::Failed(e.to_string()),
    };
    let channel = match connect(&endpoint).await {
        Ok(channel) => channel,
        Err(e) => return StreamEnd::Failed(e),
    };
    let (frames, frames_rx) = mpsc::channel::<pb::RaftFrame>(4);
    let mut client = client(channel);
    let call = client.stream(ReceiverStream::new(frames_rx));
    tokio::pin!(call);
    let mut sent_any = false;
    loop {
        let first = tokio::select! {
            result = &mut call => {
                return match result {
                    Ok(_) if sent_any => StreamEnd::Sent,
                    Ok(_) => StreamEnd::Failed("the peer closed the stream".into()),
                    Err(status) => StreamEnd::Failed(format!("{}: {}", status.code(), status.message())),
                };
            }
            message = queue.recv() => match message {
                Some(message) => message,
                None => return StreamEnd::QueueClosed,
            },
        };
        let mut size = first.len();
        let mut messages = vec![first];
        while size < MAX_FRAME_BYTES {
            match queue.try_recv() {
                Ok(message) => {
                    size += message.len();
                    messages.push(message);
                }
                Err(_) => break,
            }
        }
        let frame = pb::RaftFrame {
            from_id: config.self_id,
            from_addr: config.self_addr.clone(),
            messages,
            group_id: config.group_id(),
        };
        tokio::select! {
            sent = frames.send(frame) => if sent.is_err() {
                return StreamEnd::Failed("the stream closed".into());
            },
            result = &mut call => {
                return match result {
                    Ok(_) => StreamEnd::Failed("the peer closed the stream".into()),
                    Err(status) => StreamEnd::Failed(format!("{}: {}", status.code(), status.message())),
                };
            }
        }
        sent_any = true;
    }
}

async fn send_snapshot(config: &LinkConfig, bytes: Vec<u8>) -> Result<(), String> {
    let endpoint = peer_endpoint(&config.addr, config.source_ip, config.tls.as_ref())
        .map_err(|e| e.to_string())?;
    let channel = connect(&endpoint).await?;
    let mut chunks = Vec::with_capacity(bytes.len() / SNAPSHOT_CHUNK + 1);
    let group_id = config.group_id();
    for (i, data) in bytes.chunks(SNAPSHOT_CHUNK).enumerate() {
        chunks.push(pb::RaftSnapshotChunk {
            from_id: if i == 0 { config.self_id } else { 0 },
            from_addr: if i == 0 {
                config.self_addr.clone()
            } else {
                String::new()
            },
            data: data.to_vec(),
            group_id: if i == 0 {
                group_id.clone()
            } else {
                String::new()
            },
        });
    }
    client(channel)
        .install_snapshot(tokio_stream::iter(chunks))
        .await
        .map(|_| ())
        .map_err(|status| format!("{}: {}", status.code(), status.message()))
}
