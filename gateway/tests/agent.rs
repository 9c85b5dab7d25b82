//! `run_agent_subscription` against a fake ConfigDiscovery agent over real gRPC: the gateway
//! subscribes, ACKs a valid snapshot, NACKs an invalid one with a precise message while the
//! last good config keeps serving, and re-subscribes after the agent drops the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_gateway::GatewayOptions;
use meridian_proto::model::gateway::{GatewayConfig, Listener, ListenerProtocol};
use meridian_proto::pb;
use meridian_proto::pb::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

/// Sends scripted configs on every subscription and records what the gateway says.
#[derive(Clone, Default)]
struct FakeAgent {
    configs: Vec<GatewayConfig>,
    seen: Arc<Mutex<Vec<pb::gateway_message::Kind>>>,
}

#[tonic::async_trait]
impl ConfigDiscovery for FakeAgent {
    type SubscribeStream = ReceiverStream<Result<pb::GatewayConfig, tonic::Status>>;

    async fn subscribe(
        &self,
        request: tonic::Request<tonic::Streaming<pb::GatewayMessage>>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let configs = self.configs.clone();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            // Wait for the subscribe message, then send each config after the previous answer.
            let mut pending = configs.into_iter();
            while let Ok(Some(message)) = inbound.message().await {
                let kind = message.kind.unwrap();
                seen.lock().unwrap().push(kind);
                match pending.next() {
                    Some(config) => {
                        let _ = tx.send(Ok(pb::GatewayConfig::from(&config))).await;
                    }
                    // Script done: end the stream so the gateway reconnects.
                    None => return,
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

fn config(version: u64, port: u16, bad: bool) -> GatewayConfig {
    let mut listeners = vec![Listener {
        name: "http".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
        port,
        protocol: ListenerProtocol::Http,
        hostname: None,
        tls: None,
    }];
    if bad {
        listeners.push(listeners[0].clone());
    }
    GatewayConfig {
        version,
        gateway: Some("default/gw".parse().unwrap()),
        listeners,
        ..GatewayConfig::default()
    }
}

#[tokio::test]
async fn acks_valid_and_nacks_invalid_snapshots() {
    let port = meridian_tests::net::free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let agent = FakeAgent {
        configs: vec![config(1, port, false), config(2, port, true)],
        ..FakeAgent::default()
    };
    let seen = agent.seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ConfigDiscoveryServer::new(agent))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let gateway = meridian_gateway::spawn(
        GatewayOptions::new("127.0.0.1:0".parse().unwrap(), "gw-1"),
        meridian_gateway::Registry::default(),
    )
    .await
    .unwrap();
    let subscription = tokio::spawn(meridian_gateway::run_agent_subscription(
        gateway.clone(),
        endpoint,
        "default/gw".parse().unwrap(),
        "gw-1".into(),
        None,
    ));

    // subscribe, ack v1, nack v2, then (after the agent ends the stream) a new subscribe that
    // reports the version served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n_subscribes = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|k| matches!(k, pb::gateway_message::Kind::Subscribe(_)))
            .count();
        if n_subscribes >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway did not re-subscribe: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    subscription.abort();
    let seen = seen.lock().unwrap().clone();
    let pb::gateway_message::Kind::Subscribe(first) = &seen[0] else {
        panic!("{seen:?}")
    };
    assert_eq!((first.instance.as_str(), first.have_version), ("gw-1", 0));
    assert_eq!(first.gateway.as_ref().unwrap().name, "gw");
    let pb::gateway_message::Kind::Ack(ack1) = &seen[1] else {
        panic!("{seen:?}")
    };
    assert_eq!((ack1.version, ack1.error.as_str()), (1, ""));
    let pb::gateway_message::Kind::Ack(nack) = &seen[2] else {
        panic!("{seen:?}")
    };
    assert_eq!(nack.version, 2);
    assert_eq!(nack.error, r#"listener "http" is defined twice"#);
    let resubscribe = seen.iter().skip(3).find_map(|k| match k {
        pb::gateway_message::Kind::Subscribe(s) => Some(s.clone()),
        pb::gateway_message::Kind::Ack(_) => None,
    });
    assert_eq!(resubscribe.unwrap().have_version, 1);
    assert_eq!(gateway.config_version(), 1);
    assert!(gateway.is_ready());
}
