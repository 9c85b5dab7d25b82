//! Per-hostname backend health through `meridian dev`: when every backend of a hostname dies in
//! a cluster whose gateway stays up, DNS sends that region's clients elsewhere within seconds,
//! and brings them back when the backends return.

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

async fn answer_for(env: &DevEnv, subnet: &str) -> Result<IpAddr, String> {
    let answer = dns::a_from_subnet(env.dns(), &env.hostname(), subnet).await?;
    match answer.addresses.as_slice() {
        [one] => Ok(*one),
        other => Err(format!(
            "expected one address, got {other:?} ({:?})",
            answer.rcode
        )),
    }
}

/// The pids of a cluster's echo backends, from dev.json.
fn backend_pids(env: &DevEnv, cluster: &str) -> Vec<u32> {
    env.json["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == cluster)
        .expect("cluster in dev.json")["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["pid"].as_u64().expect("pid") as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backends_fail_a_hostname_over_while_the_gateway_stays_up() {
    let env = DevEnv::start(meridian_bin(), &["--restart-after", "0"]);
    let us = env.cluster("us-east");
    let eu = env.cluster("eu-west");
    let hostname = env.hostname();
    let admin = env.admin();
    let client = http::client();
    assert_eq!(
        answer_for(&env, &eu.client_subnet).await,
        Ok(ip("127.0.1.2"))
    );

    // Kill both eu-west echo backends (SIGKILL: no goodbye); its gateway keeps running.
    let pids = backend_pids(&env, "eu-west");
    assert_eq!(pids.len(), 2);
    let killed_at = Instant::now();
    for pid in pids {
        signal(pid, "KILL");
    }
    let (_, failover) = time_until(
        "eu clients answered with us-east",
        Duration::from_secs(15),
        || {
            let env = &env;
            let subnet = &eu.client_subnet;
            async move {
                match answer_for(env, subnet).await? {
                    a if a == ip("127.0.1.1") => Ok(()),
                    other => Err(format!("still {other}")),
                }
            }
        },
    )
    .await;
    eprintln!("measured: both eu-west backends killed -> DNS answer changed in {failover:?}");
    assert!(
        failover < Duration::from_secs(6),
        "failover took {failover:?}"
    );

    // The gateway is up (it answers, with 503: nothing behind the route) and its cluster is
    // healthy; only the hostname is not served there, and the API says why.
    let (status, _) = get_host(&client, eu.gateway, &hostname, "/")
        .await
        .expect("eu-west gateway still answers");
    assert_eq!(status, 503);
    let (status, cluster) = send_json(
        &client,
        Method::GET,
        &format!("{admin}/v1/clusters/eu-west"),
        None,
    )
    .await
    .expect("GET cluster");
    assert_eq!(status, 200);
    assert_eq!(cluster["health"]["verdict"], "healthy", "{cluster}");
    let serving = &cluster["hostnames"][hostname.as_str()];
    assert_eq!(serving["serving"], false, "{cluster}");
    assert!(
        serving["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("0 of 2 backend endpoints ready"),
        "{serving}"
    );
    // us clients are not affected.
    assert_eq!(
        answer_for(&env, &us.client_subnet).await,
        Ok(ip("127.0.1.1"))
    );
    eprintln!(
        "measured: eu-west gateway healthy, hostname not served, {:?} after the kill",
        killed_at.elapsed()
    );

    // The backends come back (here: a new echo process on one of the same ports, as a
    // restarted pod would): eu clients return to eu-west.
    let addr = env.json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "eu-west")
        .unwrap()["backends"][0]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let spec = meridian_tests::ProcSpec::new(
        "eu-west-echo-1-again",
        meridian_bin(),
        env.dir.path(),
        &["echo", "--listen", &addr, "--name", "eu-west-echo-1"],
    );
    let (_echo, _) = meridian_tests::Proc::start_ready(spec, Duration::from_secs(20));
    let (_, recovery) = time_until(
        "eu clients back on eu-west",
        Duration::from_secs(20),
        || {
            let env = &env;
            let subnet = &eu.client_subnet;
            async move {
                match answer_for(env, subnet).await? {
                    a if a == ip("127.0.1.2") => Ok(()),
                    other => Err(format!("still {other}")),
                }
            }
        },
    )
    .await;
    eprintln!("measured: a backend restarted -> DNS back on eu-west in {recovery:?}");
    eventually("eu-west serves again", Duration::from_secs(10), || {
        let client = &client;
        let hostname = &hostname;
        async move {
            let (status, body) = get_host(client, eu.gateway, hostname, "/").await?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        }
    })
    .await;
}
