//! [`run_agent_subscription`]: the gateway's side of the agent's ConfigDiscovery service.
//! Subscribes, applies every snapshot, answers each with an ACK (empty error) or a NACK (the
//! error, while the last good config keeps serving), and reconnects with capped exponential
//! backoff when the stream breaks.

use std::time::Duration;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::GatewayConfig;
use meridian_proto::pb;
use meridian_proto::pb::config_discovery_client::ConfigDiscoveryClient;
use meridian_proto::pb::gateway_message::Kind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use crate::runtime::GatewayHandle;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Subscribes to the agent at `agent_endpoint` (`http://host:port`) for the Gateway
/// `gateway`, applies every snapshot to `handle` and answers ACK/NACK; reconnects with
/// backoff. Runs until the future is dropped (cancelled).
pub async fn run_agent_subscription(
    handle: GatewayHandle,
    agent_endpoint: String,
    gateway: ObjectKey,
    instance: String,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match subscribe_once(&handle, &agent_endpoint, &gateway, &instance).await {
            Ok(n_configs) => {
                info!(agent = %agent_endpoint, n_configs, "agent stream ended; reconnecting");
                if n_configs > 0 {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(error) => {
                warn!(agent = %agent_endpoint, %error, "agent subscription failed; retrying")
            }
        }
        // Jitter spreads reconnects of many gateways after an agent restart.
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One subscription; returns how many configs it received before the stream ended.
async fn subscribe_once(
    handle: &GatewayHandle,
    endpoint: &str,
    gateway: &ObjectKey,
    instance: &str,
) -> Result<u64, String> {
    let mut client = ConfigDiscoveryClient::connect(endpoint.to_string())
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (tx, rx) = mpsc::channel(4);
    let subscribe = pb::GatewayMessage {
        kind: Some(Kind::Subscribe(pb::GatewaySubscribe {
            gateway: Some(gateway.into()),
            instance: instance.to_string(),
            admin_address: handle.admin_addr().to_string(),
            have_version: handle.config_version(),
        })),
    };
    tx.send(subscribe)
        .await
        .map_err(|_| "stream closed".to_string())?;
    let mut stream = client
        .subscribe(ReceiverStream::new(rx))
        .await
        .map_err(|status| format!("subscribing: {status}"))?
        .into_inner();
    info!(agent = %endpoint, %gateway, "subscribed to agent");
    let mut n_configs = 0;
    while let Some(wire) = stream
        .message()
        .await
        .map_err(|status| format!("receiving: {status}"))?
    {
        n_configs += 1;
        let version = wire.version;
        let error = match GatewayConfig::try_from(wire) {
            Ok(config) => match handle.apply(config).await {
                Ok(()) => String::new(),
                Err(error) => error.to_string(),
            },
            Err(error) => format!("decoding config version {version}: {error}"),
        };
        if !error.is_empty() {
            warn!(version, %error, "NACK");
        }
        let ack = pb::GatewayMessage {
            kind: Some(Kind::Ack(pb::GatewayAck { version, error })),
        };
        tx.send(ack)
            .await
            .map_err(|_| "stream closed".to_string())?;
    }
    Ok(n_configs)
}
