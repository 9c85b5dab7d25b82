//! Configs larger than gRPC's customary 4 MiB message limit: shared routes pushed by the hub
//! to agents, and the programmed config agents push to gateways, are single messages.

use std::time::{Duration, Instant};

use meridian_tests::dev::DevEnv;
use meridian_tests::http::{self, send_json};
use meridian_tests::wait::eventually;
use reqwest::Method;

use crate::meridian_bin;

/// An HTTPRoute of about 1.8 MB (under the admin API's 2 MiB body limit): two rules of 64
/// matches (the most the CRD allows), each on four long header values.
fn big_route(n: usize) -> serde_json::Value {
    let matches = |rule: usize| -> Vec<serde_json::Value> {
        (rule * 64..(rule + 1) * 64)
            .map(|m| {
                let headers: Vec<serde_json::Value> = (0..4)
                    .map(|h| {
                        serde_json::json!({
                            "name": format!("x-big-{h}"),
                            "value": format!("{n}-{m}-{h}-{}", "v".repeat(3500)),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "path": {"type": "PathPrefix", "value": format!("/big{n}")},
                    "headers": headers,
                })
            })
            .collect()
    };
    serde_json::json!({
        "metadata": {"name": format!("big-{n}"), "namespace": "demo"},
        "spec": {
            "parentRefs": [{"name": "global", "namespace": "meridian-system"}],
            "hostnames": ["big.demo.meridian.test"],
            "rules": [
                {"matches": matches(0), "backendRefs": [{"name": "echo", "port": 8080}]},
                {"matches": matches(1), "backendRefs": [{"name": "echo", "port": 8080}]}
            ]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_four_mebibytes_reach_every_gateway() {
    let env = DevEnv::start(meridian_bin(), &[]);
    let client = http::client();
    let admin = env.admin();
    let started = Instant::now();
    for n in 0..3 {
        let route = big_route(n);
        let (status, body) = send_json(
            &client,
            Method::PUT,
            &format!("{admin}/v1/routes/demo/big-{n}"),
            Some(&route),
        )
        .await
        .expect("PUT route");
        assert_eq!(status, 200, "PUT big-{n}: {body}");
    }
    // The last route's last match, through each cluster's gateway.
    let value = |h: usize| format!("2-127-{h}-{}", "v".repeat(3500));
    for cluster in ["us-east", "eu-west"] {
        let gateway = env.cluster(cluster).gateway;
        eventually(
            &format!("{cluster} serves the routes"),
            Duration::from_secs(60),
            || {
                let client = &client;
                let value = &value;
                async move {
                    let mut request = client
                        .get(format!("http://{gateway}/big2/x"))
                        .header("host", "big.demo.meridian.test");
                    for h in 0..4 {
                        request = request.header(format!("x-big-{h}"), value(h));
                    }
                    let response = request.send().await.map_err(|e| e.to_string())?;
                    match response.status().as_u16() {
                        200 => Ok(()),
                        other => Err(format!("{other}")),
                    }
                }
            },
        )
        .await;
    }
    eprintln!(
        "measured: 3 routes of 1.8 MB each, PUT -> served by both gateways in {:?}",
        started.elapsed()
    );
    // And both clusters reported them accepted.
    eventually("accepted everywhere", Duration::from_secs(30), || {
        let client = &client;
        let admin = &admin;
        async move {
            let (_, body) = send_json(
                client,
                Method::GET,
                &format!("{admin}/v1/routes/demo/big-2"),
                None,
            )
            .await?;
            let states: Vec<&str> = body["status"]["clusters"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c["state"].as_str()).collect())
                .unwrap_or_default();
            if states == ["Accepted", "Accepted"] {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        }
    })
    .await;
}
