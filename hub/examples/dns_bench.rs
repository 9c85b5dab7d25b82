//! A standalone Meridian DNS server with a fixed view, for `bench/dns/run.sh` and manual `dig`.
//!
//! `cargo run --release --example dns_bench -- [--setup bench|dev] [--listen ADDR]
//!  [--mmdb PATH] [--udp-sockets N] [--dnssec]`
//!
//! - `bench`: the baselines' workload: zone `example.test` (SOA, NS `ns1`, `www A 192.0.2.10`)
//!   and `app.example.test A` by client continent (EU/AF → 192.0.2.1, NA/SA → 192.0.2.2,
//!   AS/OC → 192.0.2.3), unknown clients a 50/30/20 weighted pick of the three.
//! - `dev`: `meridian dev`'s zone: `app.demo.meridian.test` on us-east (127.0.1.1, region us)
//!   and eu-west (127.0.1.2, region eu), 203.0.113.0/24 → us, 198.51.100.0/24 → eu.
//!
//! Prints `ready <addr>` on stdout once serving, then runs until killed; while it runs, a line
//! `stats udp_responses=N fast_path=M` each time the UDP counters change (checked twice a
//! second; the server flushes its per-thread counts every 1024 responses and when idle), so
//! the bench can tell how many answers took the fast path.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_hub::dns::{
    self, ClusterView, DnsConfig, DnsView, GeoConfig, NameserverConfig, ZoneConfig,
};
use meridian_proto::model::{
    Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, HealthVerdict, HostnamePolicy,
    HostnameTarget, RecordData, Region, Routing,
};

fn cluster(name: &str, region: &str, address: &str) -> (ClusterName, ClusterView) {
    let name = ClusterName::new(name).unwrap();
    let view = ClusterView {
        cluster: Cluster {
            name: name.clone(),
            region: Region::new(region).unwrap(),
            addresses: vec![address.parse().unwrap()],
            drained: false,
        },
        health: ClusterHealth {
            verdict: HealthVerdict::Healthy,
            reason: "fixed view".into(),
            since_unix_ms: 1,
        },
        reported_addresses: Vec::new(),
        unserved_hostnames: Default::default(),
        serving_changed_unix_ms: 0,
    };
    (name, view)
}

fn policy(fqdn: &str, ttl: u32, targets: &[(&str, u32)]) -> (Fqdn, HostnamePolicy) {
    let fqdn = Fqdn::new(fqdn).unwrap();
    let policy = HostnamePolicy {
        fqdn: fqdn.clone(),
        ttl,
        targets: targets
            .iter()
            .map(|(cluster, weight)| HostnameTarget {
                cluster: ClusterName::new(*cluster).unwrap(),
                weight: *weight,
            })
            .collect(),
        routing: Routing::default(),
    };
    (fqdn, policy)
}

fn zone(origin: &str, dnssec: bool) -> ZoneConfig {
    ZoneConfig {
        origin: origin.into(),
        nameservers: vec![NameserverConfig {
            name: format!("ns1.{origin}"),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        }],
        soa: Default::default(),
        ttl: 3600,
        dnssec,
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut setup = "bench".to_string();
    let mut listen: SocketAddr = "127.0.0.1:5360".parse().unwrap();
    let mut mmdb: Option<PathBuf> = None;
    let mut udp_sockets = 0usize;
    let mut dnssec = false;
    let mut rrl = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--setup" => setup = args.next().expect("--setup needs a value"),
            "--listen" => {
                listen = args
                    .next()
                    .expect("--listen needs a value")
                    .parse()
                    .unwrap()
            }
            "--mmdb" => mmdb = Some(args.next().expect("--mmdb needs a path").into()),
            "--udp-sockets" => udp_sockets = args.next().expect("a number").parse().unwrap(),
            "--dnssec" => dnssec = true,
            // Response rate limiting on for every client, loopback too, at a rate no run
            // reaches: what counting costs a client that is not exempt.
            "--rrl" => rrl = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let (config, mut view) = match setup.as_str() {
        "bench" => {
            let to = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            };
            let config = DnsConfig {
                listen,
                zones: vec![zone("example.test", dnssec)],
                geo: GeoConfig {
                    mmdb,
                    continents: to(&[
                        ("EU", "eu"),
                        ("AF", "eu"),
                        ("NA", "na"),
                        ("SA", "na"),
                        ("AS", "ap"),
                        ("OC", "ap"),
                    ]),
                    ..Default::default()
                },
                udp_sockets,
                rate_limit: if rrl {
                    dns::RateLimitConfig {
                        responses_per_second: 1_000_000_000,
                        exempt: Vec::new(),
                        ..Default::default()
                    }
                } else {
                    dns::RateLimitConfig {
                        responses_per_second: 0,
                        ..Default::default()
                    }
                },
                ..Default::default()
            };
            let view = DnsView {
                applied_index: 1,
                clusters: [
                    cluster("c-eu", "eu", "192.0.2.1"),
                    cluster("c-na", "na", "192.0.2.2"),
                    cluster("c-ap", "ap", "192.0.2.3"),
                ]
                .into_iter()
                .collect(),
                hostnames: [policy(
                    "app.example.test",
                    30,
                    &[("c-eu", 50), ("c-na", 30), ("c-ap", 20)],
                )]
                .into_iter()
                .collect(),
                records: vec![DnsRecord {
                    name: Fqdn::new("www.example.test").unwrap(),
                    ttl: 3600,
                    data: RecordData::A("192.0.2.10".parse().unwrap()),
                }],
                ..Default::default()
            };
            (config, view)
        }
        "dev" => {
            let config = DnsConfig {
                listen,
                zones: vec![zone("demo.meridian.test", dnssec)],
                geo: GeoConfig {
                    mmdb,
                    networks: [("203.0.113.0/24", "us"), ("198.51.100.0/24", "eu")]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                },
                udp_sockets,
                ..Default::default()
            };
            let view = DnsView {
                applied_index: 1,
                clusters: [
                    cluster("us-east", "us", "127.0.1.1"),
                    cluster("eu-west", "eu", "127.0.1.2"),
                ]
                .into_iter()
                .collect(),
                hostnames: [policy(
                    "app.demo.meridian.test",
                    30,
                    &[("us-east", 1), ("eu-west", 1)],
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            };
            (config, view)
        }
        other => panic!("unknown setup {other}"),
    };
    if dnssec {
        for zone in &config.zones {
            let key = dns::generate_zone_key().unwrap();
            view.zone_keys.insert(Fqdn::new(&zone.origin).unwrap(), key);
        }
        for zone in &config.zones {
            for ds in dns::ds_records(&view, &Fqdn::new(&zone.origin).unwrap()).unwrap() {
                println!("ds {ds}");
            }
        }
    }
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(view));
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = dns::spawn(config, rx, &mut registry).await.unwrap();
    println!("ready {}", handle.local_addr());
    let _: IpAddr = handle.local_addr().ip();
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let line = udp_stats(&registry);
        if line != last {
            println!("{line}");
            last = line;
        }
    }
}

/// `stats udp_responses=N fast_path=M` from the server's metrics.
fn udp_stats(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let (mut udp, mut fast) = (0u64, 0u64);
    for line in text.lines() {
        let value = || {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if line.starts_with("meridian_dns_responses_total{") && line.contains("transport=\"udp\"") {
            udp += value();
        } else if line.starts_with("meridian_dns_udp_fast_answers_total ") {
            fast += value();
        }
    }
    format!("stats udp_responses={udp} fast_path={fast}")
}
