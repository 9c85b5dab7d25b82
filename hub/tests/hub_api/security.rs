//! Admin API bearer tokens and gRPC mutual TLS: who gets in, who is refused and with what.

use std::path::Path;
use std::time::Duration;

use meridian_hub::config::{DEFAULT_PEER_IDENTITY, GrpcTlsConfig};
use meridian_hub::{Hub, HubConfig, HubHandle};
use meridian_proto::pb;
use serde_json::json;

use crate::pki::{Ca, ClientTls as _};
use crate::support::{Admin, Agent, Group, cluster_body, config, wait_leader};

const ALICE: &str = "alice-0123456789abcdef";
const ROBOT: &str = "robot-0123456789abcdef";

/// Writes the CA, a hub node certificate (with the peer identity) and the token file into
/// `dir`, and points `config` at them.
fn secure(config: &mut HubConfig, dir: &Path, ca: &Ca, node: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let leaf = ca.leaf(
        &format!("hub-{node}"),
        &[DEFAULT_PEER_IDENTITY, &format!("hub-{node}.example.com")],
    );
    let (cert, key) = leaf.write(dir, &format!("hub-{node}"));
    config.grpc_tls = Some(GrpcTlsConfig {
        cert,
        key,
        ca: ca_file,
        peer_identity: DEFAULT_PEER_IDENTITY.to_string(),
    });
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("# test tokens\nalice {ALICE}\n{ROBOT}\n")).unwrap();
    config.admin_auth.token_file = Some(tokens);
}

async fn secure_single(dir: &Path, ca: &Ca) -> HubHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = config(1, &dir.join("data"));
    secure(&mut config, &dir.join("pki"), ca, 1);
    let hub = Hub::spawn(config).await.unwrap();
    wait_leader(&[&hub]).await;
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_gate_every_route_but_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let hub = secure_single(dir.path(), &ca).await;
    let anonymous = Admin::new(&hub);

    // No token, a wrong one, a malformed header: 401 with a clear message.
    let (status, body) = anonymous.get("/v1/status").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    let (status, _) = anonymous
        .put("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    assert_eq!(status, 401);
    let (status, body) = anonymous
        .with_token("not-a-token-not-a-token")
        .get("/v1/clusters")
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid bearer token");
    let raw = reqwest::Client::new()
        .get(format!("http://{}/v1/status", hub.admin_addr()))
        .header("authorization", format!("Basic {ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 401);
    assert!(
        raw.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    // Health and metrics stay open.
    assert_eq!(anonymous.get("/healthz").await.0, 200);
    assert!(anonymous.metrics().await.contains("meridian_hub"));

    // Valid tokens: the named one writes as its name (with the client's actor after it), the
    // anonymous one as the client says.
    let alice = anonymous.with_token(ALICE);
    alice
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    let robot = anonymous.with_token(ROBOT);
    let (status, _) = robot.post("/v1/clusters/us-east/drain", &json!({})).await;
    assert_eq!(status, 200);
    let audit = alice.get_ok("/v1/audit").await;
    let entries = audit["entries"].as_array().unwrap();
    let actor_of = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .map(|e| e["actor"].clone())
    };
    assert_eq!(
        actor_of("put cluster us-east"),
        Some(json!("alice:test-suite"))
    );
    assert_eq!(actor_of("drain cluster us-east"), Some(json!("admin-api")));
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_a_certificate_of_the_ca_that_names_their_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let hub = secure_single(dir.path(), &ca).await;
    let admin = Admin::new(&hub).with_token(ALICE);
    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    admin
        .put_ok("/v1/clusters/eu-west", &cluster_body("eu", "127.0.1.2"))
        .await;

    // A certificate of the CA naming us-east (as a DNS SAN): registers and streams.
    let us_cert = ca.leaf("us-east-agent", &["us-east"]);
    let mut agent = Agent::connect_tls(&hub, "us-east", us_cert.client_tls(&ca))
        .await
        .unwrap();
    agent.register(&["127.0.1.1:8080"]).await.unwrap();
    agent.open().await.unwrap();
    agent.next_config().await;
    let reporter = agent.keep_reporting(vec![true]);
    admin
        .wait_verdict("us-east", "healthy", Duration::from_secs(5))
        .await;
    drop(reporter.stop().await);

    // The common name counts too.
    let by_cn = ca.leaf("eu-west", &[]);
    let mut eu = Agent::connect_tls(&hub, "eu-west", by_cn.client_tls(&ca))
        .await
        .unwrap();
    eu.register(&[]).await.unwrap();

    // The same us-east certificate claiming eu-west: PERMISSION_DENIED naming both, for
    // Register and for a session's hello.
    let mut impostor = Agent::connect_tls(&hub, "eu-west", us_cert.client_tls(&ca))
        .await
        .unwrap();
    let err = impostor.register(&[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.message().contains("\"us-east\"") && err.message().contains("\"eu-west\""),
        "{}",
        err.message()
    );
    let err = impostor.open().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // A certificate from another CA, or none at all: the TLS handshake fails.
    let other_ca = Ca::new("other CA");
    let foreign = other_ca.leaf("us-east", &["us-east"]);
    let refused = match Agent::connect_tls(&hub, "us-east", foreign.client_tls(&ca)).await {
        Err(_) => true,
        Ok(mut agent) => agent.register(&[]).await.is_err(),
    };
    assert!(refused, "a certificate of another CA was accepted");
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem));
    let refused = match Agent::connect_tls(&hub, "us-east", anonymous).await {
        Err(_) => true,
        Ok(mut agent) => agent.register(&[]).await.is_err(),
    };
    assert!(refused, "a client without a certificate was accepted");
    // Plain text to a TLS server gets nowhere either.
    let plain = pb::hub_client::HubClient::connect(format!("http://{}", hub.grpc_addr())).await;
    if let Ok(mut plain) = plain {
        assert!(
            plain
                .register(pb::RegisterRequest {
                    cluster: "us-east".into(),
                    ..Default::default()
                })
                .await
                .is_err()
        );
    }

    // An agent certificate cannot call the hub-to-hub services.
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", hub.grpc_addr()))
        .unwrap()
        .tls_config(us_cert.client_tls(&ca))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = pb::raft_transport_client::RaftTransportClient::new(channel.clone())
        .change_membership(pb::RaftMembershipRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("hub.meridian"), "{}", err.message());
    let err = pb::hub_peer_client::HubPeerClient::new(channel)
        .forward_reports(pb::ForwardReportsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_group_replicates_and_forwards_over_mutual_tls() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let pki_dir = pki.path().to_path_buf();
    let ca_pem = ca.pem.clone();
    // Node certificates come from the CA; the closure only writes files.
    let leaves: Vec<(u64, String, String)> = (1..=3)
        .map(|id| {
            let leaf = ca.leaf(&format!("hub-{id}"), &[DEFAULT_PEER_IDENTITY]);
            (id, leaf.cert, leaf.key)
        })
        .collect();
    let group = Group::start_with(3, move |id, config| {
        let dir = pki_dir.join(format!("hub-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, cert, key) = leaves.iter().find(|(n, _, _)| *n == id).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        config.grpc_tls = Some(GrpcTlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
            peer_identity: DEFAULT_PEER_IDENTITY.to_string(),
        });
    })
    .await;
    let leader = group.leader().await;
    let follower = *group.nodes.keys().find(|id| **id != leader).unwrap();
    let other = *group
        .nodes
        .keys()
        .find(|id| **id != leader && **id != follower)
        .unwrap();

    // A write through a follower is forwarded to the leader over TLS and read back,
    // linearizably, on the third node.
    let on_follower = Admin::new(group.node(follower));
    on_follower
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    let read = Admin::new(group.node(other))
        .get_ok("/v1/clusters/us-east")
        .await;
    assert_eq!(read["region"], "us");

    // An agent on the follower: its reports reach the leader's tracker over TLS.
    let cert = ca.leaf("us-east", &["us-east"]);
    let mut agent = Agent::connect_tls(group.node(follower), "us-east", cert.client_tls(&ca))
        .await
        .unwrap();
    agent.register(&[]).await.unwrap();
    agent.open().await.unwrap();
    let reporter = agent.keep_reporting(vec![true]);
    Admin::new(group.node(leader))
        .wait_verdict("us-east", "healthy", Duration::from_secs(10))
        .await;
    drop(reporter.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_can_speak_https_so_tokens_stay_private() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("admin CA");
    let mut config = config(1, &dir.path().join("data"));
    secure(&mut config, &dir.path().join("pki"), &ca, 1);
    let (cert, key) = ca.leaf("admin", &["localhost"]).write(dir.path(), "admin");
    config.admin_tls = Some(meridian_hub::config::AdminTlsConfig { cert, key });
    let hub = Hub::spawn(config).await.unwrap();
    wait_leader(&[&hub]).await;
    let trusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let url = format!("https://{}", hub.admin_addr());
    let response = trusting
        .get(format!("{url}/v1/status"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = trusting
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        trusting
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Plain HTTP to the HTTPS port gets no answer, and neither does a client that does not
    // trust the certificate.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", hub.admin_addr()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let other = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(Ca::new("other").pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert!(other.get(format!("{url}/healthz")).send().await.is_err());
    hub.shutdown().await;
}
