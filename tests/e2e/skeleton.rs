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
    let (status, body) = send_json(
        &client,
        Method::PUT,
        &format!("{admin}/v1/routes/demo/shop"),
        Some(&route),
    )
    .await
    .expect("PUT route");
    assert!((200..300).contains(&status), "PUT route: {status} {body}");
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
