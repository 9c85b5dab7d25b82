//! A single-node hub: the admin API's semantics, restarts, the agent API and health verdicts.

use std::time::Duration;

use meridian_hub::Hub;
use meridian_proto::pb;
use serde_json::json;

use crate::support::{Admin, Agent, ZONE, cluster_body, config, eventually, single, wait_leader};

fn route_body() -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {
            "hostnames": ["app.demo.meridian.test"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": "echo", "port": 8080}]
            }]
        }
    })
}

fn hostname_body() -> serde_json::Value {
    json!({
        "ttl": 20,
        "targets": [{"cluster": "us-east", "weight": 1}, {"cluster": "eu-west", "weight": 1}],
        "routing": {"geo": true, "region_order": ["us", "eu"]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);

    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    admin
        .put_ok("/v1/clusters/eu-west", &cluster_body("eu", "127.0.1.2"))
        .await;
    let hostname = format!("/v1/hostnames/app.{ZONE}");
    let answer = admin.put_ok(&hostname, &hostname_body()).await;
    assert_eq!(answer["fqdn"], format!("app.{ZONE}"));
    let route = admin.put_ok("/v1/routes/shop/web", &route_body()).await;
    assert_eq!(route["metadata"]["name"], "web");
    // PUT is an idempotent upsert.
    admin.put_ok("/v1/routes/shop/web", &route_body()).await;

    // Reads, linearizable by default.
    let clusters = admin.get_ok("/v1/clusters").await;
    assert_eq!(clusters["items"].as_array().unwrap().len(), 2);
    let cluster = admin.get_ok("/v1/clusters/eu-west").await;
    assert_eq!(cluster["region"], "eu");
    assert_eq!(cluster["health"]["verdict"], "unknown");
    let policy = admin.get_ok(&hostname).await;
    assert_eq!(policy["ttl"], 20);
    assert_eq!(policy["routing"]["region_order"], json!(["us", "eu"]));
    let routes = admin.get_ok("/v1/routes").await;
    assert_eq!(
        routes["items"][0]["spec"]["hostnames"][0],
        "app.demo.meridian.test"
    );

    // Status.
    let status = admin.get_ok("/v1/status").await;
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["role"], "leader");
    assert!(status["applied_index"].as_u64().unwrap() >= 4);
    assert_eq!(status["clusters"].as_array().unwrap().len(), 2);

    // Audit names the actor from the header.
    let audit = admin.get_ok("/v1/audit").await;
    let entries = audit["entries"].as_array().unwrap();
    let put = entries
        .iter()
        .find(|e| e["action"] == "put cluster us-east")
        .unwrap();
    assert_eq!(put["actor"], "test-suite");
    assert_eq!(put["result"], "applied");
    assert!(put["unix_ms"].as_u64().unwrap() > 1_600_000_000_000);

    hub.shutdown().await;

    // The same data directory, new ports.
    let hub = Hub::spawn(config(1, dir.path())).await.unwrap();
    wait_leader(&[&hub]).await;
    let admin = Admin::new(&hub);
    let clusters = admin.get_ok("/v1/clusters").await;
    assert_eq!(clusters["items"].as_array().unwrap().len(), 2);
    assert_eq!(admin.get_ok(&hostname).await, policy);
    // A GET adds the per-cluster status, which a PUT's answer does not have.
    let mut stored = admin.get_ok("/v1/routes/shop/web").await;
    assert_eq!(stored["status"]["clusters"][0]["state"], "ClusterDown");
    stored.as_object_mut().unwrap().remove("status");
    assert_eq!(stored, route);
    // The audit log survives too (the health tracker may have added entries since).
    let by_suite = |audit: &serde_json::Value| -> Vec<serde_json::Value> {
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["actor"] == "test-suite")
            .cloned()
            .collect()
    };
    let audit_after = admin.get_ok("/v1/audit").await;
    assert_eq!(by_suite(&audit_after), by_suite(&audit));
    assert_eq!(by_suite(&audit).len(), 4, "{audit}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    let before = admin.get_ok("/v1/clusters/us-east").await;

    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "/v1/clusters/us-east",
            json!({"region": "US"}),
            400,
            "region: invalid region",
        ),
        (
            "/v1/clusters/us-east",
            json!({"region": "us", "addresses": ["x"]}),
            400,
            "addresses[0]",
        ),
        (
            "/v1/clusters/Bad_Name",
            json!({"region": "us"}),
            400,
            "name: invalid cluster name",
        ),
        (
            "/v1/clusters/us-east",
            json!({"zone": "us"}),
            400,
            "unknown field `zone`",
        ),
        (
            "/v1/hostnames/app.demo.meridian.test",
            json!({"targets": [{"cluster": "ap-south"}]}),
            400,
            "targets[0].cluster: cluster ap-south does not exist",
        ),
        (
            "/v1/hostnames/app.example.org",
            json!({"targets": [{"cluster": "us-east"}]}),
            400,
            "fqdn: app.example.org is not inside a zone",
        ),
        (
            "/v1/hostnames/app.demo.meridian.test",
            json!({"targets": [{"cluster": "us-east"}], "routing": {"max_answers": 0}}),
            400,
            "routing.max_answers: must be at least 1",
        ),
        (
            "/v1/routes/shop/web",
            json!({"metadata": {"name": "other"}, "spec": {}}),
            400,
            "metadata.name",
        ),
    ];
    for (path, body, status, text) in cases {
        let (got, answer) = admin.put(path, &body).await;
        assert_eq!(got, status, "PUT {path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(text), "PUT {path}: {error:?} lacks {text:?}");
    }
    let (status, answer) = admin.put_raw("/v1/clusters/us-east", "{not json").await;
    assert_eq!(status, 400, "{answer}");
    // Over the body limit: the same JSON error shape as every other refusal, with the limit.
    let (status, answer) = admin
        .put_raw("/v1/routes/shop/big", &"x".repeat(3 << 20))
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("2 MiB"),
        "{answer}"
    );

    // Unknown names.
    assert_eq!(admin.get("/v1/clusters/nope").await.0, 404);
    assert_eq!(
        admin.get("/v1/hostnames/nope.demo.meridian.test").await.0,
        404
    );
    assert_eq!(admin.get("/v1/routes/shop/nope").await.0, 404);
    assert_eq!(admin.delete("/v1/clusters/nope").await.0, 404);
    assert_eq!(admin.get("/v1/nothing-here").await.0, 404);
    let (status, answer) = admin.get("/v1/audit?limit=many").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("limit"),
        "{answer}"
    );
    let (status, _) = admin.get("/v1/clusters?stale=perhaps").await;
    assert_eq!(status, 400);

    // Nothing above changed the state (the refused DELETE was audited as refused).
    let after = admin.get_ok("/v1/clusters/us-east").await;
    for field in ["region", "addresses", "drained"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(admin.get_ok("/v1/hostnames").await["items"], json!([]));
    assert_eq!(admin.get_ok("/v1/routes").await["items"], json!([]));
    let audit = admin.get_ok("/v1/audit").await;
    let by_suite: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] != "health-tracker" && e["result"] == "applied")
        .collect();
    assert_eq!(by_suite.len(), 1, "{audit}");

    // A cluster a hostname uses cannot be deleted.
    admin
        .put_ok(
            "/v1/hostnames/app.demo.meridian.test",
            &json!({"targets": [{"cluster": "us-east"}]}),
        )
        .await;
    let (status, answer) = admin.delete("/v1/clusters/us-east").await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("app.demo.meridian.test")
    );
    assert_eq!(admin.get("/v1/clusters/us-east").await.0, 200);

    // Operator controls.
    let (status, answer) = admin.post("/v1/clusters/us-east/drain", &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(admin.get_ok("/v1/clusters/us-east").await["drained"], true);
    // Its only cluster drained, the hostname has nothing left to answer with: said.
    let warnings = answer["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{answer}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("every cluster of hostname app.demo.meridian.test is drained"),
        "{answer}"
    );
    let (status, answer) = admin
        .post(
            "/v1/hostnames/app.demo.meridian.test/pin",
            &json!({"cluster": "nope"}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("routing.pinned"));
    let (status, _) = admin
        .post(
            "/v1/hostnames/app.demo.meridian.test/pin",
            &json!({"cluster": "us-east"}),
        )
        .await;
    assert_eq!(status, 200);
    let policy = admin.get_ok("/v1/hostnames/app.demo.meridian.test").await;
    assert_eq!(policy["routing"]["pinned"], "us-east");

    // Deletes in dependency order work.
    assert_eq!(
        admin.delete("/v1/hostnames/app.demo.meridian.test").await.0,
        200
    );
    assert_eq!(admin.delete("/v1/clusters/us-east").await.0, 200);
    assert_eq!(admin.get("/v1/clusters/us-east").await.0, 404);

    let metrics = admin.metrics().await;
    assert!(
        metrics.contains("meridian_hub_store_commands_total"),
        "{metrics}"
    );
    assert_eq!(admin.get("/healthz").await.0, 200);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_clusters_are_rejected_by_the_agent_api() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let mut agent = Agent::connect(&hub, "ghost").await;
    let err = agent.register(&["127.0.1.9"]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("cluster ghost"), "{}", err.message());
    let err = agent.open().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let mut bad = Agent::connect(&hub, "Not_A_Name").await;
    let err = bad.register(&[]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("cluster: "), "{}", err.message());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_follow_reports_and_config_is_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/eu-west", &json!({"region": "eu"}))
        .await;

    let mut agent = Agent::connect(&hub, "eu-west").await;
    let registered = agent
        .register(&["127.0.1.2:8080", "127.0.1.2", "0.0.0.0:8080", "224.0.0.1"])
        .await
        .unwrap();
    assert_eq!(registered.cluster.unwrap().region, "eu");
    assert_eq!(registered.node_id, 1);
    assert_eq!(registered.leader_hint, hub.grpc_addr().to_string());
    // The reported address is committed (deduplicated, port dropped); addresses no client
    // could reach (unspecified, multicast) never get into DNS answers.
    eventually(Duration::from_secs(5), "reported addresses", || async {
        let cluster = admin.get_ok("/v1/clusters/eu-west").await;
        (cluster["reported_addresses"] == json!(["127.0.1.2"])).then_some(())
    })
    .await;

    // The first message of a session is the current shared config.
    agent.open().await.unwrap();
    let first = agent.next_config().await;
    assert!(first.http_routes.is_empty());

    // Healthy after consecutive good reports.
    let reporter = agent.keep_reporting(vec![true, false]);
    let cluster = admin
        .wait_verdict("eu-west", "healthy", Duration::from_secs(5))
        .await;
    assert_eq!(cluster["health"]["reason"], "2 consecutive good reports");

    // Every gateway down: unhealthy at once.
    reporter.set(vec![false, false]);
    let cluster = admin
        .wait_verdict("eu-west", "unhealthy", Duration::from_secs(5))
        .await;
    let reason = cluster["health"]["reason"].as_str().unwrap();
    assert!(reason.contains("no gateway ready"), "{reason}");
    reporter.set(vec![true]);
    admin
        .wait_verdict("eu-west", "healthy", Duration::from_secs(5))
        .await;

    // Silence: unhealthy after 3 missed reports; reports again: healthy.
    let mut agent = reporter.stop().await;
    let cluster = admin
        .wait_verdict("eu-west", "unhealthy", Duration::from_secs(5))
        .await;
    let reason = cluster["health"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("no health report for"), "{reason}");

    // A route change reaches the open session as a new, higher version.
    admin.put_ok("/v1/routes/shop/web", &route_body()).await;
    let pushed = agent.next_config().await;
    assert_eq!(pushed.http_routes.len(), 1);
    assert!(pushed.version > first.version);
    agent
        .send(pb::agent_message::Kind::Ack(pb::ConfigAck {
            version: pushed.version,
            error: String::new(),
            want_whole: false,
        }))
        .await;

    let reporter = agent.keep_reporting(vec![true]);
    admin
        .wait_verdict("eu-west", "healthy", Duration::from_secs(5))
        .await;
    let agent = reporter.stop().await;
    drop(agent);

    let audit = admin.get_ok("/v1/audit").await;
    let health_changes = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "health-tracker")
        .count();
    assert!(health_changes >= 5, "{audit}");
    let metrics = admin.metrics().await;
    for name in [
        "meridian_hub_health_verdict_changes_total",
        "meridian_hub_health_reports_total",
        "meridian_hub_agent_config_acks_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    hub.shutdown().await;
}

/// A route named `name` on its own hostname.
fn named_route(name: &str) -> serde_json::Value {
    let mut body = route_body();
    body["metadata"]["name"] = json!(name);
    body["spec"]["hostnames"] = json!([format!("{name}.demo.meridian.test")]);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_takes_deltas_gets_each_change_alone() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/eu-west", &json!({"region": "eu"}))
        .await;
    for name in ["a", "b", "c"] {
        admin
            .put_ok(&format!("/v1/routes/shop/{name}"), &named_route(name))
            .await;
    }

    let mut agent = Agent::connect(&hub, "eu-west").await;
    agent.register(&["127.0.1.2"]).await.unwrap();
    agent.open_taking_deltas().await.unwrap();
    // The session starts with the whole config. What agents receive is built off the Raft
    // thread, so it may trail the writes by a moment: then the rest follows.
    let mut first = agent.next_config().await;
    let mut routes = first.http_routes.len();
    while routes < 3 {
        match agent.next().await.unwrap().kind {
            Some(pb::hub_message::Kind::Config(config)) => {
                agent.ack(config.version).await;
                routes = config.http_routes.len();
                first = config;
            }
            Some(pb::hub_message::Kind::ConfigDelta(delta)) => {
                agent.ack(delta.version).await;
                routes += delta.http_routes.len();
                first.version = delta.version;
            }
            other => panic!("expected shared config, got {other:?}"),
        }
    }

    // One changed route: the delta holds that route alone, against the version sent.
    let mut changed = named_route("b");
    changed["spec"]["hostnames"] = json!(["b2.demo.meridian.test"]);
    admin.put_ok("/v1/routes/shop/b", &changed).await;
    let delta = agent.next_delta().await;
    assert_eq!(delta.base_version, first.version);
    assert!(delta.version > first.version);
    let names: Vec<&str> = delta
        .http_routes
        .iter()
        .map(|r| r.key.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["b"]);
    assert_eq!(delta.http_routes[0].hostnames, ["b2.demo.meridian.test"]);
    assert!(delta.removed_http_routes.is_empty());

    // A removal names the key only, against the previous delta's version.
    admin.delete_ok("/v1/routes/shop/c").await;
    let removal = agent.next_delta().await;
    assert_eq!(removal.base_version, delta.version);
    assert!(removal.http_routes.is_empty());
    let removed: Vec<&str> = removal
        .removed_http_routes
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(removed, ["c"]);

    // An agent that does not hold the base asks for the whole config and gets it, once.
    agent
        .send(pb::agent_message::Kind::Ack(pb::ConfigAck {
            version: removal.version,
            error: String::new(),
            want_whole: true,
        }))
        .await;
    let whole = agent.next_config().await;
    assert_eq!(whole.version, removal.version);
    assert_eq!(whole.http_routes.len(), 2);
    // A late request for a delta the whole config already covers changes nothing: the next
    // message is the next change, as a delta against the whole config.
    agent
        .send(pb::agent_message::Kind::Ack(pb::ConfigAck {
            version: delta.version,
            error: String::new(),
            want_whole: true,
        }))
        .await;
    admin.put_ok("/v1/routes/shop/d", &named_route("d")).await;
    let next = agent.next_delta().await;
    assert_eq!(next.base_version, whole.version);
    assert_eq!(next.http_routes.len(), 1);

    // Pushes wait for the agent's answer; changes made meanwhile go out as one delta once it
    // answers.
    admin.put_ok("/v1/routes/shop/e", &named_route("e")).await;
    let unanswered = match agent.next().await.unwrap().kind {
        Some(pb::hub_message::Kind::ConfigDelta(delta)) => delta,
        other => panic!("expected a config delta, got {other:?}"),
    };
    admin.put_ok("/v1/routes/shop/f", &named_route("f")).await;
    admin.put_ok("/v1/routes/shop/g", &named_route("g")).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), agent.next())
            .await
            .is_err(),
        "nothing is pushed before the agent answers"
    );
    agent.ack(unanswered.version).await;
    let together = agent.next_delta().await;
    assert_eq!(together.base_version, unanswered.version);
    let names: Vec<&str> = together
        .http_routes
        .iter()
        .map(|r| r.key.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["f", "g"]);

    // More than half the routes changed: the whole config. Removing the last route changes
    // all of them, so the session ends on the whole, empty config whatever the deletes
    // before it were sent as.
    for name in ["a", "b", "d", "e", "f", "g"] {
        admin.delete_ok(&format!("/v1/routes/shop/{name}")).await;
    }
    loop {
        match agent.next().await.unwrap().kind {
            Some(pb::hub_message::Kind::ConfigDelta(delta)) => {
                // Deletes close together may come as one delta.
                assert!(delta.http_routes.is_empty(), "{delta:?}");
                assert!(!delta.removed_http_routes.is_empty(), "{delta:?}");
                agent.ack(delta.version).await;
            }
            Some(pb::hub_message::Kind::Config(config)) if config.http_routes.is_empty() => break,
            Some(pb::hub_message::Kind::Config(config)) => agent.ack(config.version).await,
            other => panic!("expected shared config, got {other:?}"),
        }
    }

    let metrics = admin.metrics().await;
    assert!(
        metrics.contains(r#"meridian_hub_agent_config_pushes_total{form="delta"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"result="want_whole""#), "{metrics}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_an_earlier_build_gets_whole_configs() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/eu-west", &json!({"region": "eu"}))
        .await;
    admin.put_ok("/v1/routes/shop/a", &named_route("a")).await;
    let mut agent = Agent::connect(&hub, "eu-west").await;
    agent.register(&["127.0.1.2"]).await.unwrap();
    agent.open().await.unwrap();
    agent.config_where(|c| c.http_routes.len() == 1).await;
    admin.put_ok("/v1/routes/shop/b", &named_route("b")).await;
    assert_eq!(agent.next_config().await.http_routes.len(), 2);
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_must_start_with_hello() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let mut client = pb::hub_client::HubClient::connect(format!("http://{}", hub.grpc_addr()))
        .await
        .unwrap();
    let report = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Health(pb::HealthReport::default())),
    };
    let err = client
        .session(tokio_stream::iter(vec![report]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("hello"), "{}", err.message());
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_serves_the_committed_state() {
    use hickory_proto::rr::RecordType;

    use crate::support::{answers, dns_query};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(1, dir.path());
    config.dns.zones[0].dnssec = true;
    let hub = Hub::spawn(config).await.unwrap();
    wait_leader(&[&hub]).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    admin
        .put_ok(
            &format!("/v1/hostnames/app.{ZONE}"),
            &json!({"targets": [{"cluster": "us-east"}]}),
        )
        .await;
    admin
        .put_ok(
            &format!("/v1/records/_acme-challenge.{ZONE}/txt"),
            &json!({"ttl": 60, "values": ["token-123"]}),
        )
        .await;
    let records = admin.get_ok("/v1/records").await;
    assert_eq!(records["items"][0]["type"], "TXT");

    let dns = hub.dns_addr();
    eventually(Duration::from_secs(5), "the A answer", || async {
        let answer = dns_query(dns, &format!("app.{ZONE}."), RecordType::A).await?;
        (answers(&answer) == ["127.0.1.1"]).then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "the TXT answer", || async {
        let answer = dns_query(dns, &format!("_acme-challenge.{ZONE}."), RecordType::TXT).await?;
        answers(&answer)
            .iter()
            .any(|a| a.contains("token-123"))
            .then_some(())
    })
    .await;

    // The leader committed a DNSSEC key for the zone; its DS is shown for the parent.
    let ds = eventually(Duration::from_secs(5), "a DS record", || async {
        let (status, body) = admin.get(&format!("/v1/dns/ds/{ZONE}")).await;
        (status == 200).then_some(body)
    })
    .await;
    let ds = ds["ds"][0].as_str().unwrap();
    assert!(ds.contains(" DS ") && ds.contains(" 13 2 "), "{ds}");
    let audit = admin.get_ok("/v1/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == format!("put DNSSEC key of zone {ZONE}")
                && e["actor"] == "hub/1"),
        "{audit}"
    );

    // Explain names the answer and the client's view of it.
    let explained = admin
        .get_ok(&format!(
            "/v1/dns/explain?name=app.{ZONE}&type=A&client=203.0.113.9"
        ))
        .await;
    assert_eq!(explained["rcode"], "NOERROR", "{explained}");
    let (status, answer) = admin.get("/v1/dns/explain?type=A").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().starts_with("name: "),
        "{answer}"
    );

    // Records outside the zones, or clashing with a policy, are refused.
    let (status, answer) = admin
        .put(
            "/v1/records/www.example.org/A",
            &json!({"values": ["192.0.2.1"]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = admin
        .put(
            &format!("/v1/records/app.{ZONE}/A"),
            &json!({"values": ["192.0.2.1"]}),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zones_name_server_cannot_carry_a_policy_or_addresses() {
    use hickory_proto::rr::RecordType;

    use crate::support::{answers, dns_query};

    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    let conflict = format!("ns1.{ZONE} is a name server of zone {ZONE} (hub config)");

    // A policy would answer a cluster's address for the name server (the glue says 127.0.0.1).
    // The name is matched the way DNS matches it: case and a trailing dot do not matter.
    for path in [format!("ns1.{ZONE}"), format!("NS1.{ZONE}.")] {
        let (status, answer) = admin
            .put(
                &format!("/v1/hostnames/{path}"),
                &json!({"targets": [{"cluster": "us-east"}]}),
            )
            .await;
        assert_eq!(status, 409, "{path}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(&conflict) && error.contains("hostname policy"),
            "{error}"
        );
    }
    // Addresses beside the configured ones would never be served; a CNAME is not allowed.
    for (rtype, value) in [
        ("A", "192.0.2.1"),
        ("aaaa", "2001:db8::1"),
        ("CNAME", "app.example.org"),
    ] {
        let (status, answer) = admin
            .put(
                &format!("/v1/records/ns1.{ZONE}/{rtype}"),
                &json!({"values": [value]}),
            )
            .await;
        assert_eq!(status, 409, "{rtype}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(&conflict) && error.contains(&rtype.to_ascii_uppercase()),
            "{error}"
        );
    }
    // Nothing was stored, and DNS still answers the configured address.
    let (status, _) = admin.get(&format!("/v1/hostnames/ns1.{ZONE}")).await;
    assert_eq!(status, 404);
    assert_eq!(admin.get_ok("/v1/records").await["items"], json!([]));
    let answer = dns_query(hub.dns_addr(), &format!("ns1.{ZONE}."), RecordType::A)
        .await
        .unwrap();
    assert_eq!(answers(&answer), ["127.0.0.1"]);

    // Other data may sit on a name server's name, and other names are not affected.
    admin
        .put_ok(
            &format!("/v1/records/ns1.{ZONE}/TXT"),
            &json!({"values": ["v=site-verification"]}),
        )
        .await;
    admin
        .put_ok(
            &format!("/v1/hostnames/ns1-app.{ZONE}"),
            &json!({"targets": [{"cluster": "us-east"}]}),
        )
        .await;
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_say_they_are_stale_and_how_stale() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    admin
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", hub.admin_addr());
    let stale = http
        .get(format!("{base}/v1/clusters?stale=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    let headers = stale.headers();
    assert_eq!(headers["x-meridian-read"], "stale");
    let applied: u64 = headers["x-meridian-applied-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(applied >= 2, "{applied}");
    let age: f64 = headers["x-meridian-leader-contact-age-seconds"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(age < 60.0, "{age}");
    // A linearizable read carries none of it.
    let fresh = http
        .get(format!("{base}/v1/clusters"))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(fresh.headers().get("x-meridian-read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_raft_log_is_refused_with_the_way_back() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    hub.shutdown().await;
    let log = dir.path().join("raft").join("raft.redb");
    let mut bytes = std::fs::read(&log).unwrap();
    // Garbage over the file's header: not a database any more.
    for byte in bytes.iter_mut().take(4096) {
        *byte = 0x5a;
    }
    std::fs::write(&log, &bytes).unwrap();
    let error = match Hub::spawn(config(1, dir.path())).await {
        Ok(_) => panic!("a damaged log was opened"),
        Err(error) => error,
    };
    let text = error.to_string();
    assert!(text.contains("raft.redb"), "{text}");
    assert!(text.contains("meridian ctl members remove 1"), "{text}");
    assert!(text.contains("--join"), "{text}");
    // Printed once: the cause is not repeated as a source of its own message.
    assert!(std::error::Error::source(&error).is_none(), "{error:?}");
}
