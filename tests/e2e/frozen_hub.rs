//! A frozen hub follower (SIGSTOP: its sockets stay open, nothing answers) must not fail over
//! the healthy cluster whose agent streamed its reports through it: Raft tolerates a minority
//! failure, so traffic must too. The agent notices the silent session (HTTP/2 keepalive) and
//! moves to another node, and the leader, which sees the node went silent, waits for that
//! before it judges the cluster.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use meridian_tests::dev::DevEnv;
use meridian_tests::process::signal;
use meridian_tests::wait::eventually;
use meridian_tests::{dns, http};
use serde_json::Value;

use crate::meridian_bin;

async fn get(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    response.json().await.map_err(|e| e.to_string())
}

/// The hub node `agent_admin`'s agent has its session with.
async fn session_node(client: &reqwest::Client, agent_admin: &str) -> Result<u64, String> {
    let status = get(client, &format!("{agent_admin}/status")).await?;
    match (
        status["hub"]["state"].as_str(),
        status["hub"]["node_id"].as_u64(),
    ) {
        (Some("connected"), Some(node)) => Ok(node),
        other => Err(format!("agent not connected: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_hub_follower_does_not_fail_over_the_clusters_it_relayed() {
    let env = DevEnv::start(meridian_bin(), &[]);
    let client = http::client();
    let hostname = env.hostname();
    let hubs = env.hubs();

    // dev starts each agent on a different hub node: at least one streams to a follower.
    let (leader, relayed) = eventually(
        "a leader and both agents connected",
        Duration::from_secs(20),
        || {
            let client = &client;
            let env = &env;
            let hubs = &hubs;
            async move {
                let status = get(client, &format!("{}/v1/status", hubs[0].2)).await?;
                let leader = status["leader_id"]
                    .as_u64()
                    .filter(|id| *id != 0)
                    .ok_or("no leader")?;
                let mut relayed = Vec::new();
                for cluster in env.json["clusters"].as_array().ok_or("clusters")? {
                    let admin = cluster["agent_admin"].as_str().ok_or("agent_admin")?;
                    let node = session_node(client, admin).await?;
                    let name = cluster["name"].as_str().ok_or("name")?.to_string();
                    relayed.push((name, admin.to_string(), node));
                }
                Ok::<_, String>((leader, relayed))
            }
        },
    )
    .await;
    let (cluster, agent_admin, frozen) = relayed
        .iter()
        .find(|(_, _, node)| *node != leader)
        .cloned()
        .expect("an agent on a follower");
    let subnet = env.cluster(&cluster).client_subnet;
    let own: IpAddr = env.cluster(&cluster).gateway.ip();
    let (_, pid, _) = *hubs.iter().find(|(id, _, _)| *id == frozen).expect("hub");
    // Ask a node that stays up.
    let dns_of = |id: u64| -> std::net::SocketAddr {
        env.json["hubs"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["id"] == id))
            .and_then(|h| h["dns"].as_str())
            .and_then(|a| a.parse().ok())
            .expect("hub dns")
    };
    let dns_addr = dns_of(leader);
    let answer = dns::a_from_subnet(dns_addr, &hostname, &subnet)
        .await
        .expect("answer");
    assert_eq!(
        answer.addresses,
        vec![own],
        "{cluster} starts on its own gateway"
    );

    signal(pid, "STOP");
    // For three miss timeouts, the region's clients stay on their own, healthy cluster.
    let started = Instant::now();
    let mut moved = None;
    while started.elapsed() < Duration::from_secs(9) {
        let answer = dns::a_from_subnet(dns_addr, &hostname, &subnet).await;
        if let Ok(answer) = &answer
            && answer.addresses != vec![own]
        {
            moved = Some((started.elapsed(), answer.addresses.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The agent has moved on to a live node.
    let now_on = session_node(&client, &agent_admin).await;
    signal(pid, "CONT");
    assert_eq!(moved, None, "{cluster}'s clients were sent elsewhere");
    let now_on = now_on.expect("the agent is connected again");
    assert_ne!(now_on, frozen, "the agent left the frozen node");
    let verdict = get(
        &client,
        &format!(
            "{}/v1/clusters/{cluster}",
            hubs.iter().find(|h| h.0 == leader).expect("leader").2
        ),
    )
    .await
    .expect("cluster");
    assert_eq!(verdict["health"]["verdict"], "healthy", "{verdict}");
}
