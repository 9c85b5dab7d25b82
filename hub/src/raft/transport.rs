//! The hub-to-hub gRPC transport: the peer service other nodes call, and the outbound streams.

use meridian_proto::pb;
use meridian_proto::pb::raft_transport_server::{RaftTransport, RaftTransportServer};
use tonic::{Request, Response, Status, Streaming};

/// The tonic service the hub mounts for its peers.
pub type RaftPeerServer = RaftTransportServer<PeerService>;

/// The peer service implementation (handed out by [`super::RaftHandle::peer_service`]).
pub struct PeerService {}

// === impl PeerService ===

#[tonic::async_trait]
impl RaftTransport for PeerService {
    async fn stream(
        &self,
        _request: Request<Streaming<pb::RaftFrame>>,
    ) -> Result<Response<pb::RaftStreamClosed>, Status> {
        Err(Status::unavailable("raft node not running"))
    }

    async fn install_snapshot(
        &self,
        _request: Request<Streaming<pb::RaftSnapshotChunk>>,
    ) -> Result<Response<pb::RaftSnapshotAck>, Status> {
        Err(Status::unavailable("raft node not running"))
    }

    async fn propose(
        &self,
        _request: Request<pb::RaftProposeRequest>,
    ) -> Result<Response<pb::RaftProposeResponse>, Status> {
        Err(Status::unavailable("raft node not running"))
    }

    async fn change_membership(
        &self,
        _request: Request<pb::RaftMembershipRequest>,
    ) -> Result<Response<pb::RaftMembershipResponse>, Status> {
        Err(Status::unavailable("raft node not running"))
    }
}
