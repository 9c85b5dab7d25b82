//! The `ConfigDiscovery` gRPC service: gateways subscribe by Gateway key and receive full,
//! versioned `GatewayConfig` snapshots, answering each with an ACK or a NACK.
//!
//! Per stream:
//! - The first message must be `subscribe` with a valid Gateway key and a non-empty instance
//!   name, else the stream fails with `INVALID_ARGUMENT` naming the bad field.
//! - The current config is sent at once, then every new version. A gateway whose Gateway does
//!   not exist (yet) is not refused: its stream stays open and gets the config as soon as the
//!   Gateway appears in the source (a Kubernetes watch may not have listed it yet, and a file
//!   being rewritten may briefly lack it). `/status` shows such a subscription as `waiting`.
//! - ACKs and NACKs go to the index, which logs NACKs at warn and shows them on `/status`; the
//!   gateway keeps its last good config.
//! - When the stream ends (the gateway closed it, or its process died and the connection
//!   broke) the index marks that instance down at once.
//! - On agent shutdown every stream ends cleanly, so the gRPC server can drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::GatewayConfig;
use meridian_proto::pb;
use meridian_proto::pb::config_discovery_server::ConfigDiscovery;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::index::{IndexHandle, SessionInfo};

/// How long a new stream may take to send its `subscribe` message.
const SUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The programmed configs being served, by Gateway key.
pub type ServedConfigs = BTreeMap<ObjectKey, Arc<GatewayConfig>>;

/// The tonic service implementation.
pub(crate) struct ConfigServer {
    index: IndexHandle,
    configs: watch::Receiver<Arc<ServedConfigs>>,
    shutdown: watch::Receiver<bool>,
}

// === impl ConfigServer ===

impl ConfigServer {
    pub(crate) fn new(
        index: IndexHandle,
        configs: watch::Receiver<Arc<ServedConfigs>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            index,
            configs,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for ConfigServer {
    type SubscribeStream = ReceiverStream<Result<pb::GatewayConfig, tonic::Status>>;

    async fn subscribe(
        &self,
        request: tonic::Request<tonic::Streaming<pb::GatewayMessage>>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded(format!(
                    "no subscribe message within {}s",
                    SUBSCRIBE_TIMEOUT.as_secs()
                ))
            })??
            .ok_or_else(|| {
                tonic::Status::invalid_argument("the stream ended before the subscribe message")
            })?;
        let info = parse_subscribe(first, peer)?;
        let gateway = info.gateway.clone();
        let instance = info.instance.clone();
        let session = self
            .index
            .open_session(info)
            .await
            .map_err(|_| tonic::Status::unavailable("the agent is shutting down"))?;
        tracing::info!(session, gateway = %gateway, instance = %instance, "gateway subscribed");

        let (outbound, outbound_rx) = mpsc::channel(2);
        let sender = tokio::spawn(send_configs(
            session,
            gateway,
            self.configs.clone(),
            outbound,
            self.index.clone(),
            self.shutdown.clone(),
        ));
        let index = self.index.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let reason = tokio::select! {
                reason = read_acks(session, &mut inbound, &index) => reason,
                _ = shutdown.wait_for(|stop| *stop) => "agent shutting down".to_string(),
            };
            // The response side has nobody to talk to any more.
            sender.abort();
            let _ = index.close_session(session, reason).await;
        });
        Ok(tonic::Response::new(ReceiverStream::new(outbound_rx)))
    }
}

/// Checks the first message: it must be a `subscribe` naming a valid Gateway and an instance.
fn parse_subscribe(
    message: pb::GatewayMessage,
    peer: Option<SocketAddr>,
) -> Result<SessionInfo, tonic::Status> {
    let Some(pb::gateway_message::Kind::Subscribe(subscribe)) = message.kind else {
        return Err(tonic::Status::invalid_argument(
            "the first message must be subscribe",
        ));
    };
    let Some(key) = subscribe.gateway else {
        return Err(tonic::Status::invalid_argument(
            "subscribe.gateway: missing required field",
        ));
    };
    let gateway = ObjectKey::new(key.namespace, key.name)
        .map_err(|error| tonic::Status::invalid_argument(format!("subscribe.gateway: {error}")))?;
    if subscribe.instance.trim().is_empty() {
        return Err(tonic::Status::invalid_argument(
            "subscribe.instance: must not be empty",
        ));
    }
    Ok(SessionInfo {
        gateway,
        instance: subscribe.instance,
        admin_address: subscribe.admin_address,
        have_version: subscribe.have_version,
        peer,
    })
}

/// Reads ACKs/NACKs until the stream ends; returns why it ended.
async fn read_acks(
    session: u64,
    inbound: &mut tonic::Streaming<pb::GatewayMessage>,
    index: &IndexHandle,
) -> String {
    loop {
        match inbound.message().await {
            Ok(Some(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Ack(ack)),
            })) => {
                if index.ack(session, ack.version, ack.error).await.is_err() {
                    return "agent shutting down".to_string();
                }
            }
            Ok(Some(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Subscribe(_)),
            })) => {
                tracing::warn!(
                    session,
                    "gateway sent a second subscribe on one stream; ignored"
                );
            }
            Ok(Some(pb::GatewayMessage { kind: None })) => {
                tracing::warn!(session, "gateway sent an empty message; ignored");
            }
            Ok(None) => return "subscription closed by the gateway".to_string(),
            Err(status) => return format!("subscription broke: {}", status.message()),
        }
    }
}

/// Sends the gateway's config now (if it exists) and after every version change.
async fn send_configs(
    session: u64,
    gateway: ObjectKey,
    mut configs: watch::Receiver<Arc<ServedConfigs>>,
    outbound: mpsc::Sender<Result<pb::GatewayConfig, tonic::Status>>,
    index: IndexHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sent_version = None;
    loop {
        let current = configs.borrow_and_update().get(&gateway).cloned();
        if let Some(config) = current
            && sent_version != Some(config.version)
        {
            let message = pb::GatewayConfig::from(config.as_ref());
            if outbound.send(Ok(message)).await.is_err() {
                return;
            }
            sent_version = Some(config.version);
            if index.sent(session, config.version).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = configs.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
