//! A real agent over a temporary directory, with gateway doubles speaking the real
//! `ConfigDiscovery` protocol: snapshots, versions, ACK/NACK, file edits, invalid edits,
//! unknown Gateways and backend probes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use meridian_proto::pb;
use meridian_proto::pb::config_discovery_client::ConfigDiscoveryClient;
use support::*;
use tokio_stream::wrappers::ReceiverStream;

fn route_hosts(config: &pb::GatewayConfig) -> Vec<(String, Vec<String>)> {
    config
        .http_routes
        .iter()
        .map(|attached| {
            let route = attached.route.as_ref().unwrap();
            let key = route.key.as_ref().unwrap();
            (
                format!("{}/{}", key.namespace, key.name),
                route.hostnames.clone(),
            )
        })
        .collect()
}

/// A listening socket that accepts (and drops) connections, standing in for a backend pod.
async fn live_backend() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A loopback address nothing listens on, below the ephemeral range so that no other bind to
/// port 0 can start listening there.
async fn dead_backend() -> SocketAddr {
    let ip = std::net::Ipv4Addr::LOCALHOST;
    SocketAddr::from((ip, meridian_tests::net::free_port(ip.into())))
}

#[tokio::test]
async fn serves_versioned_snapshots_tracks_acks_and_survives_invalid_edits() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let agent = start_agent(agent_config(dir.path())).await;
    let mut gateway = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-1").await;

    // The current config arrives at once.
    let first = gateway.next_config(SOON).await;
    assert!(first.version > 0);
    assert_eq!(first.gateway, Some(gateway_key("infra/public")));
    assert_eq!(first.listeners.len(), 1);
    assert_eq!(first.listeners[0].port, 18080);
    assert_eq!(
        route_hosts(&first),
        [("app/site".to_string(), vec!["www.example.com".to_string()])]
    );
    let endpoints: Vec<&str> = first.backends[0]
        .endpoints
        .iter()
        .map(|e| e.addr.as_str())
        .collect();
    assert_eq!(endpoints, [backend.to_string()]);

    // The ACK is visible on /status, and the probed instance becomes ready.
    gateway.answer(first.version, "").await;
    wait_for("ACK and readiness on /status", SOON, || async {
        let status = status(&agent).await;
        let instance = &status["gateways"][0]["instances"][0];
        instance["acked_version"] == first.version && instance["ready"] == true
    })
    .await;

    // A new file: a new version with both routes.
    write(
        dir.path(),
        "route2.yaml",
        &route_yaml("shop", "shop.example.com"),
    );
    let second = gateway.next_config(SOON).await;
    assert!(second.version > first.version);
    assert_eq!(
        route_hosts(&second),
        [
            ("app/shop".to_string(), vec!["shop.example.com".to_string()]),
            ("app/site".to_string(), vec!["www.example.com".to_string()]),
        ]
    );

    // A NACK is recorded with the gateway's error and counted.
    gateway
        .answer(second.version, "listener 0.0.0.0:18080: address in use")
        .await;
    wait_for("the NACK on /status", SOON, || async {
        let status = status(&agent).await;
        let nack = &status["gateways"][0]["instances"][0]["nack"];
        nack["version"] == second.version
            && nack["error"] == "listener 0.0.0.0:18080: address in use"
    })
    .await;
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains("meridian_agent_gateway_acks_total{result=\"nack\"} 1"),
        "{metrics}"
    );

    // An invalid edit (a type error, which drops the route: a fatal problem): the problem is
    // on /status with file, document and field...
    write(
        dir.path(),
        "route.yaml",
        &route_yaml("site", "www.example.com").replace("port: 80", "port: [80]"),
    );
    wait_for("the problem on /status", SOON, || async {
        let status = status(&agent).await;
        status["source"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| {
                p["source"] == "route.yaml"
                    && p["doc"] == 1
                    && p["path"].as_str().unwrap().contains("port")
            })
    })
    .await;
    // ...and in the metrics...
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains("meridian_agent_source_problems "),
        "{metrics}"
    );
    assert!(
        !metrics.contains("meridian_agent_source_problems 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_agent_source_reads_total{result=\"invalid\"}"),
        "{metrics}"
    );
    // ...and no new version goes out: the last good content keeps being served.
    assert_eq!(
        gateway.config_within(Duration::from_millis(300)).await,
        None
    );
    let served = &status(&agent).await["gateways"][0]["version"];
    assert_eq!(*served, second.version);

    // A valid edit after that is served, and the problem is gone.
    write(
        dir.path(),
        "route.yaml",
        &route_yaml("site", "www2.example.com"),
    );
    let third = gateway.next_config(SOON).await;
    assert!(third.version > second.version);
    assert!(
        route_hosts(&third)
            .contains(&("app/site".to_string(), vec!["www2.example.com".to_string()]))
    );
    wait_for("problems cleared", SOON, || async {
        status(&agent).await["source"]["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;

    // Touching a file without changing it sends nothing.
    write(
        dir.path(),
        "route.yaml",
        &route_yaml("site", "www2.example.com"),
    );
    assert_eq!(
        gateway.config_within(Duration::from_millis(300)).await,
        None
    );

    agent.shutdown().await;
}

#[tokio::test]
async fn a_subscription_to_an_unknown_gateway_waits_for_it() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    std::fs::remove_file(dir.path().join("gateway.yaml")).unwrap();
    let agent = start_agent(agent_config(dir.path())).await;

    let mut gateway = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-early").await;
    wait_for("the waiting subscription on /status", SOON, || async {
        let status = status(&agent).await;
        let waiting = &status["waiting"][0];
        waiting["instance"] == "gw-early"
            && waiting["state"] == "waiting"
            && waiting["ready"] == false
    })
    .await;
    assert_eq!(
        gateway.config_within(Duration::from_millis(200)).await,
        None
    );

    write(dir.path(), "gateway.yaml", GATEWAY);
    let config = gateway.next_config(SOON).await;
    assert_eq!(config.gateway, Some(gateway_key("infra/public")));
    assert_eq!(route_hosts(&config).len(), 1);
    agent.shutdown().await;
}

#[tokio::test]
async fn a_bad_subscribe_is_rejected_naming_the_field() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let agent = start_agent(agent_config(dir.path())).await;
    let mut client = ConfigDiscoveryClient::connect(format!("http://{}", agent.grpc_addr()))
        .await
        .unwrap();

    let cases = [
        (None, "gw", "subscribe.gateway: missing required field"),
        (
            Some(gateway_key("Infra/public")),
            "gw",
            "subscribe.gateway: invalid namespace",
        ),
        (
            Some(gateway_key("infra/public")),
            " ",
            "subscribe.instance: must not be empty",
        ),
    ];
    for (key, instance, expected) in cases {
        let (outbound, outbound_rx) = tokio::sync::mpsc::channel(1);
        outbound
            .send(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Subscribe(pb::GatewaySubscribe {
                    gateway: key,
                    instance: instance.to_string(),
                    admin_address: String::new(),
                    have_version: 0,
                })),
            })
            .await
            .unwrap();
        let status = match client.subscribe(ReceiverStream::new(outbound_rx)).await {
            Err(status) => status,
            Ok(response) => response.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with(expected), "{status:?}");
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn backend_probes_take_dead_endpoints_out_and_put_them_back() {
    let (_live, live) = live_backend().await;
    let dead = dead_backend().await;
    let dir = config_dir(&[live, dead]);
    let mut config = agent_config(dir.path());
    config.probes.backend_interval = Duration::from_millis(100);
    let agent = start_agent(config).await;
    let mut gateway = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-1").await;

    let readiness = |config: &pb::GatewayConfig| -> Vec<(String, bool)> {
        let mut endpoints: Vec<(String, bool)> = config
            .backends
            .iter()
            .flat_map(|b| b.endpoints.iter().map(|e| (e.addr.clone(), e.ready)))
            .collect();
        endpoints.sort();
        endpoints
    };
    let mut expected = vec![(live.to_string(), true), (dead.to_string(), false)];
    expected.sort();
    // The EndpointSlice says both are ready; after two failed connects the dead one is not.
    loop {
        let config = gateway.next_config(SOON).await;
        if readiness(&config) == expected {
            break;
        }
    }
    wait_for("the backend probe on /status", SOON, || async {
        let status = status(&agent).await;
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["addr"] == dead.to_string() && b["probe"]["health"] == "down")
    })
    .await;

    // The endpoint comes back: after two successful connects it is ready again.
    let _revived = tokio::net::TcpListener::bind(dead).await.unwrap();
    loop {
        let config = gateway.next_config(SOON).await;
        if readiness(&config).iter().all(|(_, ready)| *ready) {
            break;
        }
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn standalone_admin_endpoints() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let agent = start_agent(agent_config(dir.path())).await;
    let admin = agent.admin_addr();

    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let status = status(&agent).await;
    assert_eq!(status["mode"], "standalone");
    assert_eq!(status["cluster"], "test-cluster");
    assert_eq!(status["hub"]["state"], "standalone");
    assert_eq!(status["source"]["initialized"], true);
    assert_eq!(status["gateways"][0]["gateway"], "infra/public");
    let listener_conditions = &status["gateways"][0]["listeners"][0]["conditions"];
    assert!(
        listener_conditions
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True"),
        "{listener_conditions}"
    );
    let route = &status["gateways"][0]["routes"][0];
    assert_eq!(route["key"], "app/site");
    assert_eq!(route["origin"], "local");

    let (code, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "meridian_agent_config_versions_total",
        "meridian_agent_source_reads_total{result=\"ok\"}",
        "meridian_agent_hub_connected",
    ] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn startup_errors_name_the_problem() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("missing");
    let error = meridian_agent::spawn(agent_config(&missing), meridian_agent::Registry::default())
        .await
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .starts_with(&format!("config directory {}", missing.display())),
        "{error}"
    );

    let mut config = agent_config(parent.path());
    config.hubs = vec!["https://hub.example:7001".to_string()];
    let error = meridian_agent::spawn(config, meridian_agent::Registry::default())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("only http://"), "{error}");
}

#[tokio::test]
async fn a_new_invalid_backend_tls_policy_makes_its_backend_fail_closed() {
    // A BackendTLSPolicy file that breaks the schema is not "an invalid file" whose last good
    // content (none) is kept, which would leave the Service in cleartext: the policy is kept,
    // marked invalid, its backend becomes invalid (the gateway answers 500), and /status says
    // why.
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let agent = start_agent(agent_config(dir.path())).await;
    let mut gateway = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-1").await;
    let first = gateway.next_config(SOON).await;
    assert!(first.backends.iter().all(|b| b.tls.is_none()));

    write(
        dir.path(),
        "policy.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: web-tls, namespace: app}
spec:
  targetRefs: [{group: '', kind: Service, name: web}]
  validation: {hostname: web.app.example}
",
    );
    let invalid = loop {
        let config = gateway.next_config(SOON).await;
        let resolutions: Vec<_> = config
            .http_routes
            .iter()
            .flat_map(|r| r.route.iter())
            .flat_map(|r| r.rules.iter())
            .flat_map(|rule| rule.backend_refs.iter())
            .filter_map(|b| b.backend_ref.as_ref())
            .filter_map(|b| b.resolution.clone())
            .collect();
        if resolutions
            .iter()
            .all(|r| matches!(r, pb::backend_ref::Resolution::Invalid(_)))
        {
            break resolutions;
        }
    };
    assert!(!invalid.is_empty());
    wait_for("the policy's violation on /status", SOON, || async {
        let status = status(&agent).await;
        let text = status["gateways"][0]["policies"].to_string();
        text.contains("app/web-tls") && text.contains("caCertificateRefs")
    })
    .await;
}
