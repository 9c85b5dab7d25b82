//! End-to-end tests of the hub's authoritative DNS over real UDP and TCP sockets on loopback:
//! hickory-resolver as a client, and hand-made packets for what resolvers never send.

// Fixture helpers are not `#[test]` functions, so clippy's allow-*-in-tests does not cover them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use meridian_hub::dns::{
    self, ClusterView, DnsConfig, DnsHandle, DnsView, GeoConfig, NameserverConfig, RateLimitConfig,
    ZoneConfig,
};
use meridian_proto::model::{
    Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, HealthVerdict, HostnamePolicy,
    HostnameTarget, RecordData, Region, Routing,
};
use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::sync::watch;

const ZONE: &str = "demo.meridian.test";
const APP: &str = "app.demo.meridian.test.";
const TIMEOUT: Duration = Duration::from_secs(10);

// === fixtures ===

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
            reason: "reports arrive".into(),
            since_unix_ms: 1,
        },
        reported_addresses: Vec::new(),
        unserved_hostnames: Default::default(),
        serving_changed_unix_ms: 0,
    };
    (name, view)
}

/// The `meridian dev` setup: us-east (127.0.1.1, us) and eu-west (127.0.1.2, eu) serve
/// app.demo.meridian.test; 203.0.113.0/24 is us, 198.51.100.0/24 is eu.
fn dev_view() -> DnsView {
    let fqdn = Fqdn::new(APP).unwrap();
    DnsView {
        applied_index: 7,
        clusters: [
            cluster("us-east", "us", "127.0.1.1"),
            cluster("eu-west", "eu", "127.0.1.2"),
        ]
        .into_iter()
        .collect(),
        hostnames: [(
            fqdn.clone(),
            HostnamePolicy {
                fqdn,
                ttl: 30,
                targets: ["us-east", "eu-west"]
                    .into_iter()
                    .map(|c| HostnameTarget {
                        cluster: ClusterName::new(c).unwrap(),
                        weight: 1,
                    })
                    .collect(),
                routing: Routing::default(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn dev_config() -> DnsConfig {
    DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        zones: vec![ZoneConfig {
            origin: ZONE.into(),
            nameservers: vec![NameserverConfig {
                name: format!("ns1.{ZONE}"),
                addresses: vec!["127.0.0.1".parse().unwrap()],
            }],
            soa: Default::default(),
            ttl: 3600,
            dnssec: false,
        }],
        geo: GeoConfig {
            networks: [("203.0.113.0/24", "us"), ("198.51.100.0/24", "eu")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        },
        udp_sockets: 2,
        ..Default::default()
    }
}

struct Server {
    handle: DnsHandle,
    views: watch::Sender<Arc<DnsView>>,
}

async fn start(config: DnsConfig, view: DnsView) -> Server {
    let (views, rx) = watch::channel(Arc::new(view));
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = dns::spawn(config, rx, &mut registry).await.unwrap();
    Server { handle, views }
}

fn resolver(addr: SocketAddr, udp: bool, tcp: bool) -> TokioResolver {
    let mut connections = Vec::new();
    if udp {
        let mut c = ConnectionConfig::udp();
        c.port = addr.port();
        connections.push(c);
    }
    if tcp {
        let mut c = ConnectionConfig::tcp();
        c.port = addr.port();
        connections.push(c);
    }
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        addr.ip(),
        true,
        connections,
    )]);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    let options = builder.options_mut();
    options.cache_size = 0;
    options.attempts = 1;
    options.timeout = Duration::from_secs(3);
    options.recursion_desired = false;
    // 0x20: mixed-case query names must come back matching.
    options.case_randomization = true;
    builder.build().unwrap()
}

fn query(name: &str, rtype: RecordType, id: u16, edns: Option<Edns>) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

fn ecs(subnet: &str) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    let net: ipnet::IpNet = subnet.parse().unwrap();
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::from(net)));
    edns
}

/// A UDP client bound to an ephemeral loopback port.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self { socket, server }
    }

    async fn send(&self, packet: &[u8]) {
        self.socket.send_to(packet, self.server).await.unwrap();
    }

    /// The next datagram, or `None` after `wait`.
    async fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_535];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    async fn ask(&self, packet: &[u8]) -> Message {
        self.send(packet).await;
        let bytes = self.recv(TIMEOUT).await.expect("no response");
        Message::from_vec(&bytes).unwrap()
    }
}

fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ecs_scope(message: &Message) -> Option<u8> {
    match message.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(subnet) => Some(subnet.scope_prefix()),
        _ => None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// === tests ===

#[tokio::test]
async fn udp_answers_follow_client_subnet_and_health() {
    let server = start(dev_config(), dev_view()).await;
    let client = Client::new(server.handle.local_addr()).await;

    let eu = client
        .ask(&query(APP, RecordType::A, 1, Some(ecs("198.51.100.0/24"))))
        .await;
    assert_eq!(addresses(&eu), [ip("127.0.1.2")]);
    assert_eq!(
        ecs_scope(&eu),
        Some(24),
        "scope = prefix of the deciding network"
    );
    let us = client
        .ask(&query(APP, RecordType::A, 2, Some(ecs("203.0.113.0/24"))))
        .await;
    assert_eq!(addresses(&us), [ip("127.0.1.1")]);
    assert!(eu.metadata.authoritative && !eu.metadata.recursion_available);

    // eu-west becomes unhealthy: the eu subnet is sent to us-east.
    let mut view = dev_view();
    view.applied_index = 8;
    view.clusters
        .get_mut(&ClusterName::new("eu-west").unwrap())
        .unwrap()
        .health
        .verdict = HealthVerdict::Unhealthy;
    server.views.send(Arc::new(view)).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut id = 3;
    loop {
        let response = client
            .ask(&query(APP, RecordType::A, id, Some(ecs("198.51.100.0/24"))))
            .await;
        if addresses(&response) == [ip("127.0.1.1")] {
            break;
        }
        assert!(Instant::now() < deadline, "answer never moved to us-east");
        id += 1;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        server.handle.serial(),
        8,
        "SOA serial follows the applied index"
    );
    server.handle.shutdown().await;
}

#[tokio::test]
async fn resolver_over_udp_and_tcp_gets_the_same_records() {
    let mut view = dev_view();
    view.records = vec![
        DnsRecord {
            name: Fqdn::new(format!("www.{ZONE}")).unwrap(),
            ttl: 60,
            data: RecordData::Cname(Fqdn::new(APP).unwrap()),
        },
        DnsRecord {
            name: Fqdn::new(format!("_acme-challenge.app.{ZONE}")).unwrap(),
            ttl: 60,
            data: RecordData::Txt(vec!["challenge-token".into()]),
        },
        DnsRecord {
            name: Fqdn::new(APP).unwrap(),
            ttl: 60,
            data: RecordData::Txt(vec!["v=spf1 -all".into()]),
        },
    ];
    // Dual stack: us-east also has an IPv6 address.
    view.clusters
        .get_mut(&ClusterName::new("us-east").unwrap())
        .unwrap()
        .cluster
        .addresses
        .push(ip("fd00::1"));
    let server = start(dev_config(), view).await;
    let addr = server.handle.local_addr();
    for (label, resolver) in [
        ("udp", resolver(addr, true, false)),
        ("tcp", resolver(addr, false, true)),
    ] {
        let soa = resolver.lookup(ZONE, RecordType::SOA).await.unwrap();
        assert!(
            matches!(soa.answers()[0].data, RData::SOA(_)),
            "{label}: SOA"
        );
        let ns = resolver.lookup(ZONE, RecordType::NS).await.unwrap();
        assert_eq!(ns.answers().len(), 1, "{label}: NS");
        let a = resolver.lookup(APP, RecordType::A).await.unwrap();
        let got: Vec<IpAddr> = a
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 1, "{label}: one weighted pick");
        assert!(
            got[0] == ip("127.0.1.1") || got[0] == ip("127.0.1.2"),
            "{label}: {got:?}"
        );
        let aaaa = resolver.lookup(APP, RecordType::AAAA).await.unwrap();
        assert!(
            aaaa.answers().iter().any(|r| matches!(&r.data, RData::AAAA(v6) if v6.0 == "fd00::1".parse::<std::net::Ipv6Addr>().unwrap())),
            "{label}: AAAA"
        );
        let txt = resolver
            .lookup(format!("_acme-challenge.app.{ZONE}."), RecordType::TXT)
            .await
            .unwrap();
        assert_eq!(txt.answers().len(), 1, "{label}: TXT");
        let alias = resolver
            .lookup(format!("www.{ZONE}."), RecordType::A)
            .await
            .unwrap();
        assert!(
            alias
                .answers()
                .iter()
                .any(|r| matches!(r.data, RData::CNAME(_))),
            "{label}: CNAME in the chain"
        );
        let missing = resolver
            .lookup(format!("nope.{ZONE}."), RecordType::A)
            .await
            .unwrap_err();
        assert!(missing.is_nx_domain(), "{label}: NXDOMAIN, got {missing}");
        let nodata = resolver
            .lookup(format!("ns1.{ZONE}."), RecordType::MX)
            .await
            .unwrap_err();
        assert!(
            nodata.is_no_records_found() && !nodata.is_nx_domain(),
            "{label}: NODATA, got {nodata}"
        );
    }
    server.handle.shutdown().await;
}

#[tokio::test]
async fn truncated_udp_answers_are_completed_over_tcp() {
    let mut view = dev_view();
    view.records = (0..40)
        .map(|i| DnsRecord {
            name: Fqdn::new(format!("big.{ZONE}")).unwrap(),
            ttl: 60,
            data: RecordData::Txt(vec![format!("{i:02}-{}", "x".repeat(60))]),
        })
        .collect();
    let server = start(dev_config(), view).await;
    let addr = server.handle.local_addr();
    let client = Client::new(addr).await;
    let over_udp = client
        .ask(&query(
            &format!("big.{ZONE}."),
            RecordType::TXT,
            9,
            Some(Edns::new()),
        ))
        .await;
    assert!(over_udp.metadata.truncation, "TC set over UDP");
    assert!(over_udp.answers.is_empty());
    let both = resolver(addr, true, true);
    let txt = both
        .lookup(format!("big.{ZONE}."), RecordType::TXT)
        .await
        .unwrap();
    assert_eq!(txt.answers().len(), 40, "the resolver retried over TCP");
    server.handle.shutdown().await;
}

#[tokio::test]
async fn raw_packets_get_the_rfc_answers() {
    let server = start(dev_config(), dev_view()).await;
    let client = Client::new(server.handle.local_addr()).await;

    // 0x20: the question comes back with its case.
    let mixed = client
        .ask(&query("aPp.DeMo.meridian.TEST.", RecordType::A, 10, None))
        .await;
    assert_eq!(
        mixed.queries[0].name().to_ascii(),
        "aPp.DeMo.meridian.TEST."
    );
    assert_eq!(addresses(&mixed).len(), 1);

    // Unknown EDNS version: BADVERS with an OPT of version 0.
    let mut v1 = Edns::new();
    v1.set_version(1);
    let badvers = client.ask(&query(APP, RecordType::A, 11, Some(v1))).await;
    assert_eq!(u16::from(badvers.metadata.response_code), 16);
    assert_eq!(badvers.edns.as_ref().unwrap().version(), 0);

    // Outside our zones: REFUSED, no recursion.
    let refused = client
        .ask(&query("example.com.", RecordType::A, 12, None))
        .await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(!refused.metadata.recursion_available);

    // Minimal ANY (RFC 8482): one RRset.
    let any = client.ask(&query(APP, RecordType::ANY, 13, None)).await;
    assert_eq!(any.answers.len(), 1);

    // A non-QUERY opcode: NOTIMP.
    let mut notify = Message::new(14, MessageType::Query, OpCode::Notify);
    notify.add_query(Query::query(
        Name::from_ascii(ZONE).unwrap(),
        RecordType::SOA,
    ));
    let notimp = client.ask(&notify.to_vec().unwrap()).await;
    assert_eq!(notimp.metadata.response_code, ResponseCode::NotImp);

    // ECS with bits beyond the source prefix: FORMERR.
    let mut bad_ecs = Edns::new();
    bad_ecs
        .options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            ip("198.51.100.0"),
            20,
            0,
        )));
    let formerr = client
        .ask(&query(APP, RecordType::A, 15, Some(bad_ecs)))
        .await;
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    server.handle.shutdown().await;
}

#[tokio::test]
async fn every_answer_to_a_query_with_edns_carries_an_opt_record() {
    let server = start(dev_config(), dev_view()).await;
    let client = Client::new(server.handle.local_addr()).await;
    // A query with an OPT record (payload 4096, DO set) and `option` as its only option.
    let with_option = |id: u16, option: &[u8]| {
        let mut packet = query(APP, RecordType::A, id, None);
        packet[11] = 1;
        packet.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0]);
        packet.extend_from_slice(&(option.len() as u16).to_be_bytes());
        packet.extend_from_slice(option);
        packet
    };
    let cases: [(&str, Vec<u8>); 3] = [
        // ECS of address family 3.
        (
            "ECS family 3",
            with_option(21, &[0, 8, 0, 7, 0, 3, 24, 0, 1, 2, 3]),
        ),
        // An option claiming 30 bytes with 3 present.
        (
            "overlong option",
            with_option(22, &[0xFD, 0xE9, 0, 30, b'a', b'b', b'c']),
        ),
        // ECS with a non-zero scope in a query (hickory parses it; we refuse it).
        (
            "ECS scope in a query",
            with_option(23, &[0, 8, 0, 7, 0, 1, 24, 24, 203, 0, 113]),
        ),
    ];
    for (label, packet) in cases {
        let response = client.ask(&packet).await;
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::FormErr,
            "{label}"
        );
        let edns = response
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("{label}: FORMERR without an OPT record"));
        assert_eq!(edns.version(), 0, "{label}");
    }
    server.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_nothing_and_the_server_keeps_answering() {
    let server = start(dev_config(), dev_view()).await;
    let client = Client::new(server.handle.local_addr()).await;
    let valid = query(APP, RecordType::A, 0x4242, None);

    // Each bad packet is followed by a valid query; the server answers packets from one
    // client in order on one socket, so the next datagram tells what the bad one produced.
    let mut truncated_question = valid[..valid.len() - 3].to_vec();
    truncated_question[0] = 0x77;
    truncated_question[1] = 0x01;
    let mut response_bit = valid.clone();
    response_bit[2] |= 0x80;
    let oversized = {
        let mut p = valid.clone();
        p[0] = 0x77;
        p[1] = 0x03;
        // Claims 1 additional record, then 60 KB of garbage.
        p[11] = 1;
        p.extend(std::iter::repeat_n(0xAB, 60_000));
        p
    };
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("empty", Vec::new(), None),
        ("short header", vec![1, 2, 3], None),
        ("a response", response_bit, None),
        ("truncated question", truncated_question, Some(0x7701)),
        ("oversized garbage", oversized, Some(0x7703)),
        (
            "random bytes",
            (0..200u32).map(|i| (i * 37 % 251) as u8).collect(),
            Some(37),
        ),
    ];
    for (label, packet, formerr_id) in cases {
        client.send(&packet).await;
        client.send(&valid).await;
        let first = Message::from_vec(&client.recv(TIMEOUT).await.expect("no response")).unwrap();
        match formerr_id {
            Some(id) if first.metadata.id != 0x4242 => {
                assert_eq!(first.metadata.id, id, "{label}: id echoed");
                assert_eq!(
                    first.metadata.response_code,
                    ResponseCode::FormErr,
                    "{label}"
                );
                let next = Message::from_vec(&client.recv(TIMEOUT).await.unwrap()).unwrap();
                assert_eq!(next.metadata.id, 0x4242, "{label}: still answering");
            }
            Some(_) => {} // Parsed after all (random bytes may form a valid header).
            None => assert_eq!(first.metadata.id, 0x4242, "{label}: no response to it"),
        }
    }
    server.handle.shutdown().await;
}

#[tokio::test]
async fn response_rate_limiting_bounds_what_one_network_gets() {
    let mut config = dev_config();
    config.udp_sockets = 1;
    config.rate_limit = RateLimitConfig {
        responses_per_second: 10,
        slip: 2,
        exempt: Vec::new(),
    };
    let server = start(config, dev_view()).await;
    let client = Client::new(server.handle.local_addr()).await;
    let n_sent = 60u16;
    for id in 0..n_sent {
        client.send(&query(APP, RecordType::A, id, None)).await;
    }
    let (full, truncated) = drain(&client).await;
    // app's A answers to this network: 10 per second (the burst may straddle a second boundary, two on a machine that stalls:
    // at most 30 of the 60).
    assert!((10..=30).contains(&full), "full answers: {full}");
    assert!(truncated > 0, "every 2nd limited response slips with TC");
    assert!(
        full + truncated < usize::from(n_sent),
        "the rest is dropped"
    );
    // TCP is never limited.
    let tcp = resolver(server.handle.local_addr(), false, true);
    assert!(tcp.lookup(APP, RecordType::A).await.is_ok());
    server.handle.shutdown().await;
}

/// A UDP client bound to `address` (any of 127.0.0.0/8 works on loopback).
async fn client_at(server: SocketAddr, address: &str) -> Client {
    let socket = UdpSocket::bind((address.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    Client { socket, server }
}

/// Counts what arrives until the server has been quiet for a while (dropped queries get
/// nothing): (full answers, truncated answers).
async fn drain(client: &Client) -> (usize, usize) {
    let (mut full, mut truncated) = (0, 0);
    while let Some(bytes) = client.recv(Duration::from_millis(1500)).await {
        let message = Message::from_vec(&bytes).unwrap();
        if message.metadata.truncation {
            assert!(message.answers.is_empty(), "a slip carries no records");
            truncated += 1;
        } else {
            full += 1;
        }
    }
    (full, truncated)
}

/// The dev view plus a static A record for `www` and the server limiting each response
/// tuple to 10 per second, none slipped.
async fn limited_server() -> Server {
    let mut config = dev_config();
    config.udp_sockets = 1;
    config.rate_limit = RateLimitConfig {
        responses_per_second: 10,
        slip: 0,
        exempt: Vec::new(),
    };
    let mut view = dev_view();
    view.records = vec![DnsRecord {
        name: Fqdn::new(format!("www.{ZONE}")).unwrap(),
        ttl: 60,
        data: RecordData::A("127.0.2.2".parse().unwrap()),
    }];
    start(config, view).await
}

#[tokio::test]
async fn a_flood_of_one_name_does_not_take_other_names_from_its_network() {
    let server = limited_server().await;
    let addr = server.handle.local_addr();
    // A spoofed flood of app from one address of 127.0.9.0/24; a resolver at another address
    // of that network asks www, and a third asks app.
    let attacker = client_at(addr, "127.0.9.1").await;
    let victim = client_at(addr, "127.0.9.77").await;
    let neighbour = client_at(addr, "127.0.9.78").await;
    // The victim asks fewer than 10 times in all (its own name's budget for a second).
    let n_rounds = 8u16;
    let mut n_neighbour = 0;
    for round in 0..n_rounds {
        for _ in 0..25 {
            attacker.send(&query(APP, RecordType::A, round, None)).await;
        }
        for _ in 0..5 {
            neighbour
                .send(&query(APP, RecordType::A, round, None))
                .await;
            n_neighbour += 1;
        }
        let answer = victim
            .ask(&query(&format!("www.{ZONE}."), RecordType::A, round, None))
            .await;
        assert_eq!(answer.metadata.id, round);
        assert_eq!(
            addresses(&answer),
            ["127.0.2.2".parse::<IpAddr>().unwrap()],
            "round {round}"
        );
    }
    // app is still limited to 10 a second for the whole network (two or three seconds on a
    // machine that stalls), wherever in it the queries come from.
    let (attacker_full, _) = drain(&attacker).await;
    let (neighbour_full, _) = drain(&neighbour).await;
    assert!(
        (10..=30).contains(&(attacker_full + neighbour_full)),
        "app answers to the network: {attacker_full} + {neighbour_full}"
    );
    assert!(
        neighbour_full < n_neighbour,
        "{neighbour_full} of {n_neighbour}"
    );
    server.handle.shutdown().await;
}

#[tokio::test]
async fn a_random_subdomain_flood_is_limited_as_one_bucket() {
    let server = limited_server().await;
    let addr = server.handle.local_addr();
    let attacker = client_at(addr, "127.0.9.1").await;
    let victim = client_at(addr, "127.0.9.77").await;
    // Every name is new, but every NXDOMAIN counts against the zone.
    let n_sent = 60u16;
    for id in 0..n_sent {
        attacker
            .send(&query(&format!("r{id}x.{ZONE}."), RecordType::A, id, None))
            .await;
    }
    let answer = victim
        .ask(&query(&format!("www.{ZONE}."), RecordType::A, 1, None))
        .await;
    assert_eq!(addresses(&answer), ["127.0.2.2".parse::<IpAddr>().unwrap()]);
    let (full, _) = drain(&attacker).await;
    assert!((10..=30).contains(&full), "NXDOMAIN answers: {full}");
    server.handle.shutdown().await;
}

/// A GeoIP2-Country-shaped database written with mmdb-writer: 85.214.0.0/15 DE (EU),
/// 8.8.8.0/24 US (NA), 1.1.1.0/24 only coordinates (near Singapore).
fn mmdb_fixture() -> tempfile::NamedTempFile {
    #[derive(serde::Serialize)]
    struct Entry {
        #[serde(skip_serializing_if = "Option::is_none")]
        country: Option<BTreeMap<&'static str, &'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        continent: Option<BTreeMap<&'static str, &'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        location: Option<BTreeMap<&'static str, f64>>,
    }
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Country");
    /// (network, country, continent, coordinates)
    type Row = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<(f64, f64)>,
    );
    let rows: [Row; 3] = [
        ("85.214.0.0/15", Some("DE"), Some("EU"), None),
        ("8.8.8.0/24", Some("US"), Some("NA"), None),
        ("1.1.1.0/24", None, None, Some((1.3, 103.9))),
    ];
    for (net, country, continent, location) in rows {
        let entry = Entry {
            country: country.map(|c| [("iso_code", c)].into_iter().collect()),
            continent: continent.map(|c| [("code", c)].into_iter().collect()),
            location: location.map(|(lat, lon)| {
                [("latitude", lat), ("longitude", lon)]
                    .into_iter()
                    .collect()
            }),
        };
        writer
            .insert(net.parse::<ipnet::IpNet>().unwrap(), &entry)
            .unwrap();
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), writer.to_bytes().unwrap()).unwrap();
    file
}

#[tokio::test]
async fn mmdb_database_places_clients_by_country_continent_and_coordinates() {
    let db = mmdb_fixture();
    let mut config = dev_config();
    config.geo.mmdb = Some(db.path().to_path_buf());
    config.geo.countries = [("DE".to_string(), "eu".to_string())].into_iter().collect();
    config.geo.continents = [("NA".to_string(), "us".to_string())].into_iter().collect();
    config.geo.regions = [
        (
            "us".to_string(),
            dns::RegionLocation {
                lat: 39.0,
                lon: -77.5,
            },
        ),
        (
            "eu".to_string(),
            dns::RegionLocation {
                lat: 50.1,
                lon: 8.7,
            },
        ),
        (
            "ap".to_string(),
            dns::RegionLocation {
                lat: 1.35,
                lon: 103.8,
            },
        ),
    ]
    .into_iter()
    .collect();
    let mut view = dev_view();
    let (name, ap) = cluster("ap-south", "ap", "127.0.1.3");
    view.clusters.insert(name.clone(), ap);
    view.hostnames.values_mut().for_each(|policy| {
        policy.targets.push(HostnameTarget {
            cluster: name.clone(),
            weight: 1,
        })
    });
    let server = start(config, view).await;
    let client = Client::new(server.handle.local_addr()).await;
    // (subnet, expected address, expected ECS scope = the database network's prefix)
    let table = [
        ("85.214.1.0/24", "127.0.1.2", 15), // country DE → eu
        ("8.8.8.0/24", "127.0.1.1", 24),    // continent NA → us
        ("1.1.1.0/24", "127.0.1.3", 24),    // coordinates → nearest region ap
    ];
    for (id, (subnet, expected, scope)) in table.into_iter().enumerate() {
        let response = client
            .ask(&query(APP, RecordType::A, id as u16, Some(ecs(subnet))))
            .await;
        assert_eq!(addresses(&response), [ip(expected)], "{subnet}");
        assert_eq!(ecs_scope(&response), Some(scope), "{subnet}: scope");
    }
    server.handle.shutdown().await;
}

#[tokio::test]
async fn bad_config_is_rejected_with_the_field_name() {
    let mut config = dev_config();
    config.zones[0].nameservers.clear();
    let (_tx, rx) = watch::channel(Arc::new(dev_view()));
    let mut registry = prometheus_client::registry::Registry::default();
    let error = dns::spawn(config, rx, &mut registry).await.err().unwrap();
    assert!(
        error.to_string().contains("zones[0].nameservers"),
        "{error}"
    );
}

#[tokio::test]
async fn explain_says_why() {
    let server = start(dev_config(), dev_view()).await;
    let explanation = server
        .handle
        .explainer()
        .explain(APP, "A", ip("198.51.100.9"))
        .unwrap();
    assert_eq!(explanation.client_region.as_deref(), Some("eu"));
    assert_eq!(explanation.geo_source, "network");
    assert_eq!(explanation.ecs_scope, 24);
    assert_eq!(explanation.rcode, "NOERROR");
    assert!(
        explanation.answers[0].contains("127.0.1.2"),
        "{:?}",
        explanation.answers
    );
    let hostname = explanation.hostname.unwrap();
    assert_eq!(
        hostname.plan.groups[0].members[0].cluster.as_str(),
        "eu-west"
    );
    assert_eq!(hostname.plan.candidates.len(), 2);
    let json = serde_json::to_value(&hostname.plan).unwrap();
    assert_eq!(json["candidates"][0]["verdict"], "healthy");
    // The offline variant gives the same decision.
    let offline = dns::explain(&dev_config(), &dev_view(), APP, "a", ip("203.0.113.1")).unwrap();
    assert!(offline.answers[0].contains("127.0.1.1"));
    server.handle.shutdown().await;
}

#[tokio::test]
async fn one_client_holding_tcp_connections_cannot_shut_out_another() {
    let mut config = dev_config();
    config.tcp_max_connections_per_client = 4;
    let server = start(config, dev_view()).await;
    let addr = server.handle.local_addr();
    // 127.0.0.2 opens more connections than its share and holds them idle.
    let mut held = Vec::new();
    for _ in 0..10 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(addr).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut held {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 6,
        "connections past the per-client cap are closed at once"
    );
    // Another client is still answered over TCP.
    let tcp = resolver(addr, false, true);
    assert!(tcp.lookup(APP, RecordType::A).await.is_ok());
    server.handle.shutdown().await;
}
