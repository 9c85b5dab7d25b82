//! Fuzzes the DNS request path: any datagram from any client through the same code the UDP
//! threads run (parse, rate limit, answer, sign, encode, truncate).
//!
//! Invariants checked: no panic; every response parses as DNS, echoes the query id, fits the
//! UDP limit, and never has RA set.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run dns_request -- -max_total_time=600`

#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use meridian_hub::dns::{
    self, ClusterView, DnsConfig, DnsView, GeoConfig, NameserverConfig, PacketAnswerer, ZoneConfig,
};
use meridian_proto::model::{
    Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, HealthVerdict, HostnamePolicy,
    HostnameTarget, RecordData, Region, Routing,
};

fn cluster(name: &str, region: &str, addresses: &[&str]) -> (ClusterName, ClusterView) {
    let name = ClusterName::new(name).unwrap();
    let view = ClusterView {
        cluster: Cluster {
            name: name.clone(),
            region: Region::new(region).unwrap(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            drained: false,
        },
        health: ClusterHealth {
            verdict: HealthVerdict::Healthy,
            reason: String::new(),
            since_unix_ms: 1,
        },
        reported_addresses: Vec::new(),
        unserved_hostnames: Default::default(),
    };
    (name, view)
}

fn policy(name: &str, max_answers: u32) -> (Fqdn, HostnamePolicy) {
    let fqdn = Fqdn::new(name).unwrap();
    let policy = HostnamePolicy {
        fqdn: fqdn.clone(),
        ttl: 30,
        targets: ["us-east", "eu-west", "ap-south"]
            .into_iter()
            .map(|c| HostnameTarget {
                cluster: ClusterName::new(c).unwrap(),
                weight: 1,
            })
            .collect(),
        routing: Routing {
            max_answers,
            ..Routing::default()
        },
    };
    (fqdn, policy)
}

fn zone(origin: &str, dnssec: bool) -> ZoneConfig {
    ZoneConfig {
        origin: origin.into(),
        nameservers: vec![NameserverConfig {
            name: format!("ns1.{origin}"),
            addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        }],
        soa: Default::default(),
        ttl: 3600,
        dnssec,
    }
}

fn answerer() -> PacketAnswerer {
    let config = DnsConfig {
        zones: vec![zone("plain.test", false), zone("signed.test", true)],
        geo: GeoConfig {
            networks: [
                ("192.0.2.0/25", "us"),
                ("192.0.2.128/25", "eu"),
                ("2001:db8::/32", "ap"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        },
        // IPv4 clients are exempt, IPv6 clients are limited: both paths get exercised.
        rate_limit: dns::RateLimitConfig {
            responses_per_second: 50,
            slip: 2,
            exempt: vec!["192.0.2.0/24".into()],
        },
        ..Default::default()
    };
    let mut view = DnsView {
        applied_index: 1,
        clusters: [
            cluster("us-east", "us", &["127.0.1.1", "fd00::1"]),
            cluster("eu-west", "eu", &["127.0.1.2"]),
            cluster("ap-south", "ap", &["127.0.1.3", "127.0.1.4"]),
        ]
        .into_iter()
        .collect(),
        hostnames: [
            policy("app.plain.test", 1),
            policy("app.signed.test", 1),
            policy("multi.signed.test", 2),
        ]
        .into_iter()
        .collect(),
        records: vec![
            DnsRecord {
                name: Fqdn::new("www.signed.test").unwrap(),
                ttl: 60,
                data: RecordData::Cname(Fqdn::new("app.signed.test").unwrap()),
            },
            DnsRecord {
                name: Fqdn::new("loop.plain.test").unwrap(),
                ttl: 60,
                data: RecordData::Cname(Fqdn::new("loop.plain.test").unwrap()),
            },
            DnsRecord {
                name: Fqdn::new("txt.plain.test").unwrap(),
                ttl: 60,
                data: RecordData::Txt(vec!["x".repeat(200); 8]),
            },
        ],
        ..Default::default()
    };
    view.zone_keys.insert(
        Fqdn::new("signed.test").unwrap(),
        dns::generate_zone_key().unwrap(),
    );
    PacketAnswerer::new(&config, &view).unwrap()
}

thread_local! {
    static ANSWERER: RefCell<PacketAnswerer> = RefCell::new(answerer());
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the client, so geo and rate limiting paths vary too.
    let (client, packet) = match data.split_first() {
        Some((first, rest)) => {
            let ip = if first & 1 == 0 {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, *first))
            } else {
                IpAddr::V6(format!("2001:db8::{first:x}").parse().unwrap())
            };
            (SocketAddr::new(ip, 5300), rest)
        }
        None => (SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5300), data),
    };
    ANSWERER.with(|answerer| {
        let mut answerer = answerer.borrow_mut();
        if let Err(difference) = answerer.check_fast_path(packet, client) {
            panic!("{difference}");
        }
        if let Some(response) = answerer.answer_udp(packet, client) {
            assert!(
                response.len() <= 1232,
                "response of {} bytes",
                response.len()
            );
            let message = Message::from_vec(response).expect("our response does not parse");
            assert_eq!(&response[..2], &packet[..2], "id not echoed");
            assert!(!message.metadata.recursion_available, "RA set");
        }
    });
});
