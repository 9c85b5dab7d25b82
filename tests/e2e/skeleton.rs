//! The walking skeleton, end to end through `meridian dev`: GeoDNS sends each region to its
//! cluster, each gateway serves the shared route from its own backends, a dead gateway is
//! failed over within 3 seconds and comes back, a route PUT reaches both gateways, and the
//! hub keeps its state across restarts.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use meridian_tests::dev::DevEnv;
use meridian_tests::http::{get_host, send_json};
use meridian_tests::process::signal;
use meridian_tests::wait::{eventually, time_until};
use meridian_tests::{dns, http};
use reqwest::Method;

use crate::meridian_bin;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

/// Resolves `name` A from `subnet` and returns the single address, or an error naming what came.
async fn answer_for(env: &DevEnv, name: &str, subnet: &str) -> Result<IpAddr, String> {
    let answer = dns::a_from_subnet(env.dns(), name, subnet).await?;
    match answer.addresses.as_slice() {
        [one] => Ok(*one),
        other => Err(format!(
            "expected one address, got {other:?} ({:?})",
            answer.rcode
        )),
    }
}

/// Waits (up to `within`) until clients in `subnet` get `want` for `name`; returns how long.
async fn until_answered(
    env: &DevEnv,
    name: &str,
    subnet: &str,
    want: &str,
    within: Duration,
    what: &str,
) -> Duration {
    let want = ip(want);
    let ((), took) = time_until(what, within, || async move {
        match answer_for(env, name, subnet).await? {
            a if a == want => Ok(()),
            other => Err(format!("still {other}")),
        }
    })
    .await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_routes_each_region_to_its_cluster_and_fails_over() {
    let mut env = DevEnv::start(meridian_bin(), &["--restart-after", "4"]);
    let hostname = env.hostname();
    let us = env.cluster("us-east");
    let eu = env.cluster("eu-west");
    assert_eq!(us.gateway.ip(), ip("127.0.1.1"));
    assert_eq!(eu.gateway.ip(), ip("127.0.1.2"));

    // GeoDNS: each region's subnet gets its own cluster, over UDP and TCP, with ECS echoed.
    assert_eq!(
        answer_for(&env, &hostname, &us.client_subnet).await,
        Ok(ip("127.0.1.1"))
    );
    assert_eq!(
        answer_for(&env, &hostname, &eu.client_subnet).await,
        Ok(ip("127.0.1.2"))
    );
    let query = dns::query_message(&hostname, dns::RecordType::A, Some(&eu.client_subnet));
    let over_tcp = dns::tcp(env.dns(), &query).await.expect("tcp answer");
    assert_eq!(over_tcp.addresses, vec![ip("127.0.1.2")]);
    let over_udp = dns::udp(env.dns(), &query).await.expect("udp answer");
    assert!(over_udp.authoritative, "answers are authoritative");
    assert_eq!(
        over_udp.ecs_scope,
        Some(24),
        "ECS echoed with the geo network's prefix"
    );

    // Each gateway serves the shared route from its own cluster's echo backends.
    let client = http::client();
    for cluster in [&us, &eu] {
        let (status, body) = get_host(&client, cluster.gateway, &hostname, "/hello?x=1")
            .await
            .expect("gateway answers");
        assert_eq!(status, 200, "{body}");
        let backend = body["backend"].as_str().unwrap_or_default();
        assert!(
            backend.starts_with(&format!("{}-echo-", cluster.name)),
            "{} served by {backend}",
            cluster.name
        );
        assert_eq!(body["path"], "/hello");
        assert_eq!(body["query"], "x=1");
        assert_eq!(body["host"], hostname.as_str());
    }

    // Kill eu-west's gateway: the eu subnet is answered with us-east within 3 seconds.
    let killed_at = Instant::now();
    signal(eu.gateway_pid, "KILL");
    let failover = until_answered(
        &env,
        &hostname,
        &eu.client_subnet,
        "127.0.1.1",
        Duration::from_secs(10),
        "eu clients sent to us-east",
    )
    .await;
    eprintln!("measured: gateway killed -> DNS answer changed in {failover:?}");
    assert!(
        failover < Duration::from_secs(3),
        "failover took {failover:?}"
    );
    // The hub node answering DNS measured the same change: decided -> served.
    let (status, metrics) = http::get_text(&client, &format!("{}/metrics", env.admin()))
        .await
        .expect("hub metrics");
    assert_eq!(status, 200);
    let served = metrics
        .lines()
        .find(|l| {
            l.starts_with("meridian_dns_health_change_to_serving_seconds_count")
                && l.contains("change=\"verdict\"")
        })
        .unwrap_or_default();
    assert!(
        served.split(' ').nth(1).and_then(|n| n.parse::<u64>().ok()) >= Some(1),
        "the verdict change is in the time-to-serve histogram: {served:?}"
    );

    // dev restarts the gateway (after 4 s, like a kubelet); DNS brings eu clients back.
    let recovery = until_answered(
        &env,
        &hostname,
        &eu.client_subnet,
        "127.0.1.2",
        Duration::from_secs(30),
        "eu clients back on eu-west",
    )
    .await;
    eprintln!(
        "measured: gateway restarted -> DNS back after {:?} from the kill",
        killed_at.elapsed().min(recovery + failover)
    );
    env.reload();
    assert_ne!(
        env.cluster("eu-west").gateway_pid,
        eu.gateway_pid,
        "dev.json shows the new pid"
    );
    let (status, _) = get_host(&client, eu.gateway, &hostname, "/")
        .await
        .expect("restarted gateway");
    assert_eq!(status, 200);

    // Kill eu-west's agent and both its backends: dev restarts them where they were, so the
    // gateway, the agent's EndpointSlices and dev.json still name them, and eu-west serves
    // its region again.
    let eu = env.cluster("eu-west");
    signal(eu.agent_pid, "KILL");
    for pid in &eu.backend_pids {
        signal(*pid, "KILL");
    }
    time_until(
        "eu-west's own backends serve again",
        Duration::from_secs(40),
        || {
            let client = &client;
            let hostname = &hostname;
            async move {
                match get_host(client, eu.gateway, hostname, "/").await {
                    Ok((200, body))
                        if body["backend"]
                            .as_str()
                            .is_some_and(|b| b.starts_with("eu-west-echo-")) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    until_answered(
        &env,
        &hostname,
        &eu.client_subnet,
        "127.0.1.2",
        Duration::from_secs(30),
        "eu clients on eu-west after the agent's restart",
    )
    .await;
    env.reload();
    assert_ne!(env.cluster("eu-west").agent_pid, eu.agent_pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_route_put_reaches_both_gateways_and_hub_restart_keeps_state() {
    let env = DevEnv::start(meridian_bin(), &["--restart-after", "1"]);
    let client = http::client();
    let admin = env.admin();
    let us = env.cluster("us-east");
    let eu = env.cluster("eu-west");

    // A new global route, PUT on the hub, is served by both clusters' gateways.
    let route = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "demo"},
        "spec": {
            "parentRefs": [{"name": "global", "namespace": "meridian-system"}],
            "hostnames": ["shop.demo.meridian.test"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/cart"}}],
                "backendRefs": [{"name": "echo", "port": 8080}]
            }]
        }
    });
    let put_at = Instant::now();
    put_route(&client, &admin, "demo/shop", &route).await;
    let mut slowest = Duration::ZERO;
    for cluster in [&us, &eu] {
        eventually("the new route is served", Duration::from_secs(10), || {
            let client = &client;
            async move {
                let (status, body) = get_host(
                    client,
                    cluster.gateway,
                    "shop.demo.meridian.test",
                    "/cart/1",
                )
                .await?;
                if status == 200 && body["path"] == "/cart/1" {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            }
        })
        .await;
        slowest = slowest.max(put_at.elapsed());
        // Paths outside the route's match are not served.
        let (status, _) = get_host(
            &client,
            cluster.gateway,
            "shop.demo.meridian.test",
            "/other",
        )
        .await
        .expect("gateway answers");
        assert_eq!(status, 404);
    }
    eprintln!("measured: route PUT -> served by both gateways in {slowest:?}");

    // An invalid route is rejected with a message naming the field, and nothing changes.
    let mut bad = route.clone();
    bad["spec"]["rules"][0]["matches"][0]["path"]["value"] = serde_json::json!("cart");
    let (status, body) = send_json(
        &client,
        Method::PUT,
        &format!("{admin}/v1/routes/demo/shop"),
        Some(&bad),
    )
    .await
    .expect("PUT bad route");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("path"),
        "error names the field: {body}"
    );
    let (status, _) = get_host(&client, us.gateway, "shop.demo.meridian.test", "/cart/2")
        .await
        .expect("still served");
    assert_eq!(status, 200, "the last good route keeps serving");

    // Stop every hub node at once (kill -9), let dev restart them: clusters, hostnames and
    // routes are all still there, read linearizably.
    for (_, pid, _) in env.hubs() {
        signal(pid, "KILL");
    }
    let hostname = env.hostname();
    eventually(
        "hub state after a full restart",
        Duration::from_secs(30),
        || {
            let client = &client;
            let admin = &admin;
            let hostname = &hostname;
            async move {
                let (s1, clusters) =
                    send_json(client, Method::GET, &format!("{admin}/v1/clusters"), None).await?;
                let (s2, policy) = send_json(
                    client,
                    Method::GET,
                    &format!("{admin}/v1/hostnames/{hostname}"),
                    None,
                )
                .await?;
                let (s3, shop) = send_json(
                    client,
                    Method::GET,
                    &format!("{admin}/v1/routes/demo/shop"),
                    None,
                )
                .await?;
                if s1 != 200 || s2 != 200 || s3 != 200 {
                    return Err(format!("{s1} {s2} {s3}"));
                }
                let names: Vec<&str> = clusters["items"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
                    .unwrap_or_default();
                if names != ["eu-west", "us-east"] {
                    return Err(format!("clusters {names:?}"));
                }
                if policy["targets"].as_array().map(Vec::len) != Some(2) {
                    return Err(format!("hostname policy {policy}"));
                }
                if shop["spec"]["hostnames"][0] != "shop.demo.meridian.test" {
                    return Err(format!("route {shop}"));
                }
                Ok::<_, String>(())
            }
        },
    )
    .await;
}

/// PUTs a shared route on the hub; panics unless it is stored.
async fn put_route(client: &reqwest::Client, admin: &str, key: &str, route: &serde_json::Value) {
    let (status, body) = send_json(
        client,
        Method::PUT,
        &format!("{admin}/v1/routes/{key}"),
        Some(route),
    )
    .await
    .expect("PUT route");
    assert!((200..300).contains(&status), "PUT {key}: {status} {body}");
}

/// The state each cluster reports for a shared route, from `GET /v1/routes/NS/NAME`.
async fn route_states(
    client: &reqwest::Client,
    admin: &str,
    route: &str,
) -> Result<(Vec<(String, String)>, serde_json::Value), String> {
    let (status, body) = send_json(
        client,
        Method::GET,
        &format!("{admin}/v1/routes/{route}"),
        None,
    )
    .await?;
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    let states = body["status"]["clusters"]
        .as_array()
        .ok_or_else(|| format!("no status.clusters: {body}"))?
        .iter()
        .map(|c| {
            (
                c["cluster"].as_str().unwrap_or("").to_string(),
                c["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    Ok((states, body))
}

/// Waits until each cluster's state for `route` is as `want` says; returns the route.
async fn until_states(
    client: &reqwest::Client,
    admin: &str,
    route: &str,
    want: &[(&str, &str)],
) -> serde_json::Value {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(c, s)| (c.to_string(), s.to_string()))
        .collect();
    eventually(
        &format!("{route}: {want:?}"),
        Duration::from_secs(20),
        || {
            let want = &want;
            async move {
                let (got, body) = route_states(client, admin, route).await?;
                if got == *want {
                    Ok(body)
                } else {
                    Err(format!("{got:?}"))
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_shows_how_each_cluster_programmed_a_global_route_and_guards_certificates_in_use() {
    let env = DevEnv::start(meridian_bin(), &[]);
    let client = http::client();
    let admin = env.admin();

    // The demo's own global route works in both clusters.
    until_states(
        &client,
        &admin,
        "demo/app",
        &[("eu-west", "Accepted"), ("us-east", "Accepted")],
    )
    .await;

    // A Service only eu-west has: a route to it works there and not in us-east, and the hub
    // says why, per cluster, with the condition us-east's Gateway gave it.
    let config = env
        .dir
        .path()
        .join("state/clusters/eu-west/config/euonly.yaml");
    std::fs::write(
        &config,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: euonly\n  namespace: demo\nspec:\n  ports:\n    - name: http\n      port: 8080\n",
    )
    .expect("write eu-west's extra Service");
    let route = serde_json::json!({
        "metadata": {"name": "euonly", "namespace": "demo"},
        "spec": {
            "parentRefs": [{"name": "global", "namespace": "meridian-system"}],
            "hostnames": ["eu.demo.meridian.test"],
            "rules": [{"backendRefs": [{"name": "euonly", "port": 8080}]}]
        }
    });
    let put_at = Instant::now();
    put_route(&client, &admin, "demo/euonly", &route).await;
    let body = until_states(
        &client,
        &admin,
        "demo/euonly",
        &[("eu-west", "Accepted"), ("us-east", "Degraded")],
    )
    .await;
    eprintln!(
        "measured: route PUT -> both clusters' conditions on the hub in {:?}",
        put_at.elapsed()
    );
    let us = &body["status"]["clusters"][1];
    assert_eq!(us["reason"], "BackendNotFound", "{us}");
    // The cluster's own view lists the routes not accepted there.
    let (_, cluster) = send_json(
        &client,
        Method::GET,
        &format!("{admin}/v1/clusters/us-east"),
        None,
    )
    .await
    .expect("GET cluster");
    let others = &cluster["routes"]["others"];
    assert_eq!(others[0]["route"], "demo/euonly", "{cluster}");
    assert_eq!(others[0]["state"], "Degraded", "{cluster}");
    assert_eq!(us["parents"][0]["parentRef"]["name"], "global", "{us}");
    let resolved = us["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ResolvedRefs"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(resolved["status"], "False", "{us}");
    assert!(
        resolved["message"]
            .as_str()
            .is_some_and(|m| m.contains("euonly")),
        "the message names the missing Service: {us}"
    );

    // A route naming a Gateway no cluster has reaches no parent anywhere.
    let mut nowhere = route.clone();
    nowhere["metadata"]["name"] = serde_json::json!("nowhere");
    nowhere["spec"]["parentRefs"][0]["name"] = serde_json::json!("no-such-gateway");
    put_route(&client, &admin, "demo/nowhere", &nowhere).await;
    // Another route's change leaves this one's state alone (it is judged by its own version).
    let (got, _) = route_states(&client, &admin, "demo/app")
        .await
        .expect("GET route");
    assert_eq!(
        got,
        [
            ("eu-west".to_string(), "Accepted".to_string()),
            ("us-east".to_string(), "Accepted".to_string())
        ]
    );
    until_states(
        &client,
        &admin,
        "demo/nowhere",
        &[("eu-west", "NoParent"), ("us-east", "NoParent")],
    )
    .await;

    // Once us-east has the Service too, the route is accepted there as well; `ctl routes`
    // shows each cluster's state.
    std::fs::write(
        env.dir
            .path()
            .join("state/clusters/us-east/config/euonly.yaml"),
        std::fs::read(&config).expect("read"),
    )
    .expect("write us-east's Service");
    until_states(
        &client,
        &admin,
        "demo/euonly",
        &[("eu-west", "Accepted"), ("us-east", "Accepted")],
    )
    .await;
    let out = std::process::Command::new(meridian_bin())
        .args(["ctl", "--hub", &admin, "routes"])
        .output()
        .expect("run ctl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = table
        .lines()
        .find(|l| l.contains("euonly"))
        .unwrap_or_default();
    assert!(
        line.contains("eu-west=Accepted us-east=Accepted"),
        "ctl routes: {table}"
    );
    // The summary a table reads carries the states, not every condition.
    let (_, summary) = send_json(
        &client,
        Method::GET,
        &format!("{admin}/v1/routes?status=summary"),
        None,
    )
    .await
    .expect("GET routes");
    let first = &summary["items"][0]["status"]["clusters"][0];
    assert!(
        first["state"].is_string() && first.get("parents").is_none(),
        "{first}"
    );

    // A cluster whose agent stops reporting is down, and its last word is not shown as fact.
    let eu = env.cluster("eu-west");
    signal(eu.agent_pid, "STOP");
    until_states(
        &client,
        &admin,
        "demo/app",
        &[("eu-west", "ClusterDown"), ("us-east", "Accepted")],
    )
    .await;
    signal(eu.agent_pid, "CONT");
    until_states(
        &client,
        &admin,
        "demo/app",
        &[("eu-west", "Accepted"), ("us-east", "Accepted")],
    )
    .await;

    // us-east's gateway cannot bind a new HTTPS port (the test holds it): it rejects the
    // config and keeps its last good one, and the hub says the route is not programmed there.
    let blocker = std::net::TcpListener::bind("127.0.1.1:0").expect("bind a port to block");
    let blocked = blocker.local_addr().expect("local addr").port();
    let gateway_yaml = env
        .dir
        .path()
        .join("state/clusters/us-east/config/gateway.yaml");
    let original = std::fs::read_to_string(&gateway_yaml).expect("read gateway.yaml");
    let https_port = original
        .lines()
        .skip_while(|l| !l.contains("name: https"))
        .find_map(|l| l.trim().strip_prefix("port: "))
        .expect("https listener port")
        .to_string();
    std::fs::write(
        &gateway_yaml,
        original.replace(&format!("port: {https_port}"), &format!("port: {blocked}")),
    )
    .expect("write gateway.yaml");
    let body = until_states(
        &client,
        &admin,
        "demo/app",
        &[("eu-west", "Accepted"), ("us-east", "NotProgrammed")],
    )
    .await;
    let reason = body["status"]["clusters"][1]["reason"].to_string();
    assert!(
        reason.contains("rejected its config") && reason.contains(&blocked.to_string()),
        "the reason carries the gateway's error: {reason}"
    );
    std::fs::write(&gateway_yaml, &original).expect("restore gateway.yaml");
    drop(blocker);
    until_states(
        &client,
        &admin,
        "demo/app",
        &[("eu-west", "Accepted"), ("us-east", "Accepted")],
    )
    .await;
    // Changes after the session's first reports reach the hub as deltas: the routes that
    // changed, not every route.
    let metrics_url = format!("{}/metrics", env.cluster("us-east").agent_admin);
    let (_, metrics) = http::get_text(&client, &metrics_url)
        .await
        .expect("agent metrics");
    let sent = |form: &str| -> f64 {
        let prefix = format!("meridian_agent_shared_status_reports_total{{form=\"{form}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        sent("delta") > 0.0 && sent("whole") > 0.0,
        "statuses sent whole and as deltas: {metrics}"
    );
    // The other way too: the hub sent the shared routes added after the session started as
    // deltas, which the agent applied.
    let applied = metrics
        .lines()
        .find_map(|l| l.strip_prefix("meridian_agent_shared_config_deltas_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(applied > 0.0, "config deltas applied: {metrics}");

    // The demo certificate is served by both clusters' HTTPS listeners: the hub says so, and
    // refuses to delete it (every one of them would stop serving HTTPS) unless forced.
    let cert_url = format!("{admin}/v1/certificates/meridian-system/demo-tls");
    eventually("certificate users", Duration::from_secs(20), || {
        let (client, cert_url) = (&client, &cert_url);
        async move {
            let (status, body) = send_json(client, Method::GET, cert_url, None).await?;
            let users: Vec<String> = body["used_by"]
                .as_array()
                .map(|users| {
                    users
                        .iter()
                        .map(|u| format!("{} {} {}", u["cluster"], u["gateway"], u["listener"]))
                        .collect()
                })
                .unwrap_or_default();
            let want = [
                r#""eu-west" "meridian-system/global" "https""#,
                r#""us-east" "meridian-system/global" "https""#,
            ];
            if status == 200 && users == want {
                Ok(())
            } else {
                Err(format!("{status} {users:?}"))
            }
        }
    })
    .await;
    let (status, body) = send_json(&client, Method::DELETE, &cert_url, None)
        .await
        .expect("DELETE certificate");
    assert_eq!(status, 409, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("eu-west (Gateway meridian-system/global listener https)")
            && message.contains("force"),
        "the refusal names the listeners and the way out: {message}"
    );
    let (status, _) = send_json(&client, Method::GET, &cert_url, None)
        .await
        .expect("GET certificate");
    assert_eq!(status, 200, "the refused delete kept the certificate");
    let out = std::process::Command::new(meridian_bin())
        .args([
            "ctl",
            "--hub",
            &admin,
            "delete",
            "certificate",
            "meridian-system/demo-tls",
            "--force",
        ])
        .output()
        .expect("run ctl");
    assert!(
        out.status.success(),
        "ctl delete --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = send_json(&client, Method::GET, &cert_url, None)
        .await
        .expect("GET certificate");
    assert_eq!(status, 404, "forced delete");
}
