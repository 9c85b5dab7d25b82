//! A real agent against hub doubles implementing the real `Hub` gRPC service: register,
//! session, health reports (including how fast a dead gateway is reported), SharedConfig
//! ACK/NACK, failover between hub addresses, and the saved SharedConfig after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use meridian_proto::model::ObjectKey;
use meridian_proto::model::route::{
    BackendRef, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, ParentRef, PathMatch,
    Resolution, Timeouts,
};
use meridian_proto::pb;
use support::*;

/// The hub's global route: `global.example.com` → Service `app/web:80` on Gateway
/// `infra/public`, as every cluster resolves it locally.
fn shared_config(version: u64) -> pb::SharedConfig {
    let route = HttpRoute {
        key: ObjectKey::new("app", "global").unwrap(),
        created_unix_ms: 1,
        parent_refs: vec![ParentRef {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
            name: "public".into(),
            section_name: None,
            port: None,
        }],
        hostnames: vec!["global.example.com".into()],
        rules: vec![HttpRouteRule {
            name: None,
            matches: vec![HttpRouteMatch {
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
                query_params: vec![],
                method: None,
            }],
            filters: vec![],
            backend_refs: vec![HttpBackendRef {
                backend_ref: BackendRef {
                    group: String::new(),
                    kind: "Service".into(),
                    namespace: "app".into(),
                    name: "web".into(),
                    port: Some(80),
                    resolution: Resolution::Unresolved,
                },
                weight: 1,
                filters: vec![],
            }],
            timeouts: Timeouts::default(),
            retry: None,
            session_persistence: None,
        }],
    };
    pb::SharedConfig {
        version,
        http_routes: vec![pb::HttpRoute::from(&route)],
        certificates: vec![],
    }
}

fn has_route(config: &pb::GatewayConfig, name: &str) -> bool {
    config.http_routes.iter().any(|attached| {
        attached
            .route
            .as_ref()
            .and_then(|r| r.key.as_ref())
            .is_some_and(|k| k.name == name)
    })
}

async fn live_backend() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn hub_config(dir: &Path, state: &Path, hubs: Vec<String>) -> meridian_agent::AgentConfig {
    let mut config = agent_config(dir);
    config.hubs = hubs;
    config.state_dir = Some(state.to_path_buf());
    config
}

/// The readiness of gateway instance `name` in a report, if it is listed.
fn instance_ready(report: &pb::HealthReport, name: &str) -> Option<bool> {
    report
        .gateways
        .iter()
        .find(|g| g.name == name)
        .map(|g| g.ready)
}

#[tokio::test]
async fn session_reports_health_and_applies_shared_routes() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let state = tempfile::tempdir().unwrap();
    let mut hub = FakeHub::start("127.0.0.1:0".parse().unwrap(), "test-cluster", 1).await;
    hub.push(shared_config(7));
    let agent = start_agent(hub_config(dir.path(), state.path(), vec![hub.url()])).await;

    let registered = hub
        .expect("register", SOON, |e| match e {
            HubEvent::Registered(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(registered.cluster, "test-cluster");
    let hello = hub
        .expect("hello", SOON, |e| match e {
            HubEvent::Hello(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (hello.cluster.as_str(), hello.have_version),
        ("test-cluster", 0)
    );
    assert!(hello.accepts_config_delta);
    let ack = hub
        .expect("ACK of version 7", SOON, |e| match e {
            HubEvent::Ack(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!((ack.version, ack.error.as_str()), (7, ""));
    assert!(
        state
            .path()
            .join(meridian_agent::state_dir::SHARED_CONFIG_FILE)
            .exists()
    );

    // The gateway gets the hub's route merged with the local one.
    let mut gateway = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-1").await;
    let mut config = gateway.next_config(SOON).await;
    while !has_route(&config, "global") {
        config = gateway.next_config(SOON).await;
    }
    assert!(has_route(&config, "site"));
    gateway.answer(config.version, "").await;

    // Reports carry the ready gateway and the hostnames' backend health, numbered in order.
    let report = hub
        .expect("a report with gw-1 ready", SOON, |e| match e {
            HubEvent::Report(r, _) if instance_ready(r, "gw-1") == Some(true) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(report.cluster, "test-cluster");
    let gw = report.gateways.iter().find(|g| g.name == "gw-1").unwrap();
    assert_eq!(gw.address, "127.0.0.1:18080");
    let hosts: Vec<(&str, u32, u32)> = report
        .hostnames
        .iter()
        .map(|h| (h.hostname.as_str(), h.ready_endpoints, h.total_endpoints))
        .collect();
    assert!(hosts.contains(&("global.example.com", 1, 1)), "{hosts:?}");
    assert!(hosts.contains(&("www.example.com", 1, 1)), "{hosts:?}");
    let next = hub
        .expect("the next report", SOON, |e| match e {
            HubEvent::Report(r, _) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(next.seq, report.seq + 1);

    // An invalid snapshot is NACKed naming the field; the gateway's config stays as it was.
    let mut bad = shared_config(8);
    bad.http_routes[0].key = Some(gateway_key("Bad_Namespace/global"));
    hub.push(bad);
    let nack = hub
        .expect("NACK of version 8", SOON, |e| match e {
            HubEvent::Ack(a) if a.version == 8 => Some(a.clone()),
            _ => None,
        })
        .await;
    assert!(nack.error.contains("http_routes[0].key"), "{}", nack.error);
    assert_eq!(
        gateway.config_within(Duration::from_millis(300)).await,
        None
    );
    let status = status(&agent).await;
    assert_eq!(status["shared"]["version"], 7);
    assert!(
        status["hub"]["last_nack"]
            .as_str()
            .unwrap()
            .starts_with("8: "),
        "{status}"
    );
    assert_eq!(status["hub"]["state"], "connected");

    // Once the status stopped changing, reports no longer carry it; a hub that sees a new
    // leader asks for it, and the next report carries the whole status again, long before the
    // 30 s refresh.
    hub.expect("a report without the shared status", SOON, |e| match e {
        HubEvent::Report(r, _) if r.shared.is_none() && r.shared_delta.is_none() => Some(()),
        _ => None,
    })
    .await;
    let asked = Instant::now();
    hub.resend_shared_status();
    let whole = hub
        .expect("the whole status, asked for", SOON, |e| match e {
            HubEvent::Report(r, at) if *at >= asked && r.shared.is_some() => Some(r.clone()),
            _ => None,
        })
        .await;
    let shared = whole.shared.unwrap();
    assert_eq!(shared.shared_version, 7, "the config it programmed");
    assert_eq!(shared.routes.len(), 1, "{shared:?}");
    assert_ne!(whole.shared_id, 0, "numbered, for the deltas after it");

    // A delta against a version the agent does not hold (it refused 8) changes nothing and
    // asks for the whole config.
    let mut added = shared_config(9);
    added.http_routes[0].key = Some(gateway_key("app/second"));
    added.http_routes[0].hostnames = vec!["second.example.com".into()];
    hub.push_delta(pb::SharedConfigDelta {
        base_version: 8,
        version: 9,
        http_routes: added.http_routes.clone(),
        ..Default::default()
    });
    let resync = hub
        .expect("the answer to a delta on 8", SOON, |e| match e {
            HubEvent::Ack(a) if a.version == 9 => Some(a.clone()),
            _ => None,
        })
        .await;
    assert!(resync.want_whole && resync.error.is_empty(), "{resync:?}");
    assert_eq!(
        gateway.config_within(Duration::from_millis(300)).await,
        None
    );

    // A delta against the config in use is applied: the route it adds reaches the gateway
    // beside the one it had, and the state directory holds the result.
    hub.push_delta(pb::SharedConfigDelta {
        base_version: 7,
        version: 10,
        http_routes: added.http_routes,
        ..Default::default()
    });
    let ack = hub
        .expect("ACK of version 10", SOON, |e| match e {
            HubEvent::Ack(a) if a.version == 10 => Some(a.clone()),
            _ => None,
        })
        .await;
    assert!(!ack.want_whole && ack.error.is_empty(), "{ack:?}");
    let mut config = gateway.next_config(SOON).await;
    while !has_route(&config, "second") {
        config = gateway.next_config(SOON).await;
    }
    assert!(has_route(&config, "global") && has_route(&config, "site"));
    let saved = meridian_agent::state_dir::load_shared_config(state.path())
        .unwrap()
        .unwrap();
    assert_eq!(saved.version, 10);
    assert_eq!(saved.http_routes.len(), 2);

    // A delta that removes a route takes it off the gateway.
    hub.push_delta(pb::SharedConfigDelta {
        base_version: 10,
        version: 11,
        removed_http_routes: vec![gateway_key("app/global")],
        ..Default::default()
    });
    let mut config = gateway.next_config(SOON).await;
    while has_route(&config, "global") {
        config = gateway.next_config(SOON).await;
    }
    assert!(has_route(&config, "second"));
    assert_eq!(support::status(&agent).await["shared"]["version"], 11);

    agent.shutdown().await;
}

#[tokio::test]
async fn a_dead_gateway_is_reported_not_ready_at_once() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let state = tempfile::tempdir().unwrap();
    let mut hub = FakeHub::start("127.0.0.1:0".parse().unwrap(), "test-cluster", 1).await;
    let agent = start_agent(hub_config(dir.path(), state.path(), vec![hub.url()])).await;

    let mut killed = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-killed").await;
    let hung = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-hung").await;
    hub.expect("both gateways ready", SOON, |e| match e {
        HubEvent::Report(r, _)
            if instance_ready(r, "gw-killed") == Some(true)
                && instance_ready(r, "gw-hung") == Some(true) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    // Killing the process closes its subscription: reported at once, not at the next tick.
    let killed_at = Instant::now();
    killed.kill();
    let reported_at = hub
        .expect(
            "gw-killed not ready",
            Duration::from_millis(1500),
            |e| match e {
                HubEvent::Report(r, at) if instance_ready(r, "gw-killed") == Some(false) => {
                    Some(*at)
                }
                _ => None,
            },
        )
        .await;
    let latency = reported_at.duration_since(killed_at);
    eprintln!("gateway killed -> not-ready report: {latency:?}");
    assert!(latency < Duration::from_millis(1500), "{latency:?}");

    // A gateway that stays connected but fails /ready: two failed probes (500 ms apart).
    let failing_at = Instant::now();
    hung.set_ready(false);
    let reported_at = hub
        .expect(
            "gw-hung not ready",
            Duration::from_millis(2500),
            |e| match e {
                HubEvent::Report(r, at) if instance_ready(r, "gw-hung") == Some(false) => Some(*at),
                _ => None,
            },
        )
        .await;
    let latency = reported_at.duration_since(failing_at);
    eprintln!("gateway /ready failing -> not-ready report: {latency:?}");
    assert!(latency < Duration::from_millis(2000), "{latency:?}");

    // And back: two successful probes.
    hung.set_ready(true);
    hub.expect(
        "gw-hung ready again",
        Duration::from_millis(2500),
        |e| match e {
            HubEvent::Report(r, _) if instance_ready(r, "gw-hung") == Some(true) => Some(()),
            _ => None,
        },
    )
    .await;
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains("meridian_agent_readiness_report_seconds_count"),
        "{metrics}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn fails_over_between_hub_addresses() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let state = tempfile::tempdir().unwrap();
    // Below the ephemeral range: no other bind to port 0 can start listening there.
    let dead = SocketAddr::from((
        std::net::Ipv4Addr::LOCALHOST,
        meridian_tests::net::free_port(std::net::Ipv4Addr::LOCALHOST.into()),
    ));
    let mut first = FakeHub::start("127.0.0.1:0".parse().unwrap(), "test-cluster", 1).await;
    let mut second = FakeHub::start("127.0.0.1:0".parse().unwrap(), "test-cluster", 2).await;
    let hubs = vec![format!("http://{dead}"), first.url(), second.url()];
    let agent = start_agent(hub_config(dir.path(), state.path(), hubs)).await;

    // The dead address is skipped.
    first
        .expect("a report at the first live hub", SOON, |e| {
            matches!(e, HubEvent::Report(..)).then_some(())
        })
        .await;
    wait_for(
        "connected to the first live hub on /status",
        SOON,
        || async {
            let status = status(&agent).await;
            status["hub"]["state"] == "connected" && status["hub"]["node_id"] == 1
        },
    )
    .await;

    // The hub dies: the agent moves on to the next address quickly.
    let killed_at = Instant::now();
    first.kill();
    second
        .expect("register at the second hub", SOON, |e| {
            matches!(e, HubEvent::Registered(_)).then_some(())
        })
        .await;
    second
        .expect("a report at the second hub", SOON, |e| {
            matches!(e, HubEvent::Report(..)).then_some(())
        })
        .await;
    let failover = killed_at.elapsed();
    eprintln!("hub killed -> reporting to the next hub: {failover:?}");
    assert!(failover < Duration::from_secs(3), "{failover:?}");
    wait_for("connected to the second hub on /status", SOON, || async {
        status(&agent).await["hub"]["node_id"] == 2
    })
    .await;
    let (_, metrics) = http_get(agent.admin_addr(), "/metrics").await;
    assert!(
        !metrics.contains("meridian_agent_hub_connect_failures_total 0"),
        "{metrics}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn an_unknown_cluster_is_reported_and_retried() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let state = tempfile::tempdir().unwrap();
    let mut hub = FakeHub::start("127.0.0.1:0".parse().unwrap(), "another-cluster", 1).await;
    let mut config = hub_config(dir.path(), state.path(), vec![hub.url()]);
    config.hub.backoff_initial = Duration::from_millis(20);
    let agent = start_agent(config).await;

    for attempt in 0..2 {
        hub.expect(&format!("register attempt {attempt}"), SOON, |e| {
            matches!(e, HubEvent::Registered(_)).then_some(())
        })
        .await;
    }
    wait_for("the NOT_FOUND on /status", SOON, || async {
        let status = status(&agent).await;
        status["hub"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("NotFound") && e.contains("test-cluster"))
    })
    .await;
    agent.shutdown().await;
}

#[tokio::test]
async fn serves_the_saved_shared_config_after_a_restart_without_hub() {
    let (_backend, backend) = live_backend().await;
    let dir = config_dir(&[backend]);
    let state = tempfile::tempdir().unwrap();
    let mut hub = FakeHub::start("127.0.0.1:0".parse().unwrap(), "test-cluster", 1).await;
    hub.push(shared_config(5));
    let hubs = vec![hub.url()];
    let agent = start_agent(hub_config(dir.path(), state.path(), hubs.clone())).await;
    hub.expect("ACK of version 5", SOON, |e| match e {
        HubEvent::Ack(a) if a.version == 5 && a.error.is_empty() => Some(()),
        _ => None,
    })
    .await;
    agent.shutdown().await;
    hub.kill();

    // Restarted, with the hub gone: the gateway still gets the hub's route at once.
    let agent = start_agent(hub_config(dir.path(), state.path(), hubs)).await;
    let mut gateway = FakeGateway::connect(agent.grpc_addr(), "infra/public", "gw-1").await;
    let config = gateway.next_config(SOON).await;
    assert!(has_route(&config, "global"), "{config:?}");
    assert!(has_route(&config, "site"));
    let status = status(&agent).await;
    assert_eq!(status["shared"]["version"], 5);
    assert_eq!(status["hub"]["shared_source"], "state-dir");
    assert_ne!(status["hub"]["state"], "connected");

    // A hub comes back and its first message is a delta on version 5. The saved config has
    // that version, but it did not come from this session (a rebuilt hub can reuse a version
    // for other content), so the agent asks for the whole config rather than patch it.
    let mut hub = FakeHub::start(hub.addr, "test-cluster", 1).await;
    let mut second = shared_config(6);
    second.http_routes[0].key = Some(gateway_key("app/second"));
    hub.push_delta(pb::SharedConfigDelta {
        base_version: 5,
        version: 6,
        http_routes: second.http_routes,
        ..Default::default()
    });
    let answer = hub
        .expect(
            "the answer to the delta",
            Duration::from_secs(10),
            |e| match e {
                HubEvent::Ack(a) if a.version == 6 => Some(a.clone()),
                _ => None,
            },
        )
        .await;
    assert!(answer.want_whole, "{answer:?}");
    assert_eq!(support::status(&agent).await["shared"]["version"], 5);
    agent.shutdown().await;
}
