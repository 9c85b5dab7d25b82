//! The `HubPeer` gRPC service: the leader's side of report forwarding.

use meridian_proto::pb;
use meridian_proto::pb::hub_peer_server::HubPeer;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::health::{HealthHandle, Origin};
use crate::raft::{RaftStatus, Role};

/// Receives health reports other hub nodes forward.
pub struct PeerService {
    status: watch::Receiver<RaftStatus>,
    health: HealthHandle,
}

// === impl PeerService ===

impl PeerService {
    /// A service feeding this node's health task.
    pub fn new(status: watch::Receiver<RaftStatus>, health: HealthHandle) -> Self {
        Self { status, health }
    }
}

#[tonic::async_trait]
impl HubPeer for PeerService {
    async fn forward_reports(
        &self,
        request: Request<pb::ForwardReportsRequest>,
    ) -> Result<Response<pb::ForwardReportsResponse>, Status> {
        if self.status.borrow().role != Role::Leader {
            // The forwarder learns of the new leader from its own raft status and retries there.
            return Ok(Response::new(pb::ForwardReportsResponse {
                accepted: false,
            }));
        }
        let request = request.into_inner();
        for (i, forwarded) in request.reports.into_iter().enumerate() {
            let Some(report) = forwarded.report else {
                continue;
            };
            match super::decode_report(report) {
                Ok((report, dropped)) => {
                    if let Some(err) = dropped {
                        tracing::warn!(
                            from_node = request.from_node,
                            error = %err.at_index(i).in_field("reports"),
                            "dropping the invalid shared status of a forwarded health report"
                        );
                    }
                    self.health.report(
                        &forwarded.instance_id,
                        report,
                        Origin::Forwarded(request.from_node),
                    )
                }
                Err(err) => tracing::warn!(
                    from_node = request.from_node,
                    error = %err.at_index(i).in_field("reports"),
                    "dropping an invalid forwarded health report"
                ),
            }
        }
        Ok(Response::new(pb::ForwardReportsResponse { accepted: true }))
    }
}
