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
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{info, warn};

use crate::runtime::GatewayHandle;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Subscribes to the agent at `agent_endpoint` (`http://host:port`, or `https://host:port`
/// with `tls`) for the Gateway `gateway`, applies every snapshot to `handle` and answers
/// ACK/NACK; reconnects with backoff. Runs until the future is dropped (cancelled).
pub async fn run_agent_subscription(
    handle: GatewayHandle,
    agent_endpoint: String,
    gateway: ObjectKey,
    instance: String,
    tls: Option<ClientTlsConfig>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let subscribed =
            subscribe_once(&handle, &agent_endpoint, tls.as_ref(), &gateway, &instance);
        match subscribed.await {
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
    tls: Option<&ClientTlsConfig>,
    gateway: &ObjectKey,
    instance: &str,
) -> Result<u64, String> {
    let mut agent = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| format!("agent URL {endpoint:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        agent = agent
            .tls_config(tls.clone())
            .map_err(|e| format!("agent TLS: {e}"))?;
    }
    let channel = agent
        .connect()
        .await
        .map_err(|e| format!("connecting: {}", with_causes(&e)))?;
    let mut client = ConfigDiscoveryClient::new(channel)
        .max_decoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES);
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
        .map_err(|status| {
            // With TLS 1.3 the server checks a client certificate after the client's side of
            // the handshake is done, so a refused certificate shows up only as a closed
            // connection here.
            let hint = match status.code() {
                tonic::Code::Cancelled | tonic::Code::Unavailable if tls.is_some() => {
                    " (the agent closed the connection: does it accept this gateway's client \
                     certificate, --agent-tls-cert?)"
                }
                _ => "",
            };
            format!("subscribing: {}{hint}", with_causes(&status))
        })?
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

/// An error with its chain of causes: tonic's top-level "transport error" alone does not say
/// that, for example, the agent refused this gateway's certificate.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
