//! DNSSEC end to end: the hub's signed answers validated by a real validator, `delv` from
//! BIND's dnsutils, given the zone's DS as the only trust anchor.
//!
//! Needs `delv` on the PATH (Debian: `apt-get install bind9-dnsutils`); the test fails with
//! that message when it is missing rather than skipping silently.

// Fixture helpers are not `#[test]` functions, so clippy's allow-*-in-tests does not cover them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use meridian_hub::dns::{
    self, ClusterView, DnsConfig, DnsView, GeoConfig, NameserverConfig, ZoneConfig,
};
use meridian_proto::model::{
    AllUnhealthy, Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, HealthVerdict,
    HostnamePolicy, HostnameTarget, RecordData, Region, Routing,
};
use tokio::sync::watch;

const ZONE: &str = "signed.meridian.test";

fn cluster(
    name: &str,
    region: &str,
    addresses: &[&str],
    verdict: HealthVerdict,
) -> (ClusterName, ClusterView) {
    let name = ClusterName::new(name).unwrap();
    let view = ClusterView {
        cluster: Cluster {
            name: name.clone(),
            region: Region::new(region).unwrap(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            drained: false,
        },
        health: ClusterHealth {
            verdict,
            reason: String::new(),
            since_unix_ms: 1,
        },
        reported_addresses: Vec::new(),
        unserved_hostnames: Default::default(),
        serving_changed_unix_ms: 0,
    };
    (name, view)
}

fn policy(name: &str, targets: &[&str], routing: Routing) -> (Fqdn, HostnamePolicy) {
    let fqdn = Fqdn::new(name).unwrap();
    let policy = HostnamePolicy {
        fqdn: fqdn.clone(),
        ttl: 30,
        targets: targets
            .iter()
            .map(|c| HostnameTarget {
                cluster: ClusterName::new(*c).unwrap(),
                weight: 1,
            })
            .collect(),
        routing,
    };
    (fqdn, policy)
}

fn signed_view() -> DnsView {
    let zone = Fqdn::new(ZONE).unwrap();
    let multi = Routing {
        max_answers: 2,
        ..Routing::default()
    };
    let closed = Routing {
        when_all_unhealthy: AllUnhealthy::FailClosed,
        ..Routing::default()
    };
    DnsView {
        applied_index: 3,
        clusters: [
            cluster(
                "us-east",
                "us",
                &["127.0.1.1", "fd00::1"],
                HealthVerdict::Healthy,
            ),
            cluster("eu-west", "eu", &["127.0.1.2"], HealthVerdict::Healthy),
            cluster("ap-south", "ap", &["127.0.1.3"], HealthVerdict::Healthy),
            cluster("down", "ap", &["127.0.1.4"], HealthVerdict::Unhealthy),
        ]
        .into_iter()
        .collect(),
        hostnames: [
            policy(
                &format!("app.{ZONE}"),
                &["us-east", "eu-west"],
                Routing::default(),
            ),
            policy(
                &format!("multi.{ZONE}"),
                &["us-east", "eu-west", "ap-south"],
                multi,
            ),
            policy(&format!("closed.{ZONE}"), &["down"], closed),
            policy(ZONE, &["us-east"], Routing::default()),
        ]
        .into_iter()
        .collect(),
        zone_keys: [(zone, dns::generate_zone_key().unwrap())]
            .into_iter()
            .collect(),
        records: vec![
            DnsRecord {
                name: Fqdn::new(format!("www.{ZONE}")).unwrap(),
                ttl: 60,
                data: RecordData::Cname(Fqdn::new(format!("app.{ZONE}")).unwrap()),
            },
            DnsRecord {
                name: Fqdn::new(format!("_acme-challenge.{ZONE}")).unwrap(),
                ttl: 60,
                data: RecordData::Txt(vec!["token".into()]),
            },
        ],
    }
}

fn config() -> DnsConfig {
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
            dnssec: true,
        }],
        geo: GeoConfig::default(),
        udp_sockets: 1,
        ..Default::default()
    }
}

/// Runs `delv @server -p port -a anchors +root=ZONE name type` and returns its output.
fn delv(server: SocketAddr, anchors: &std::path::Path, name: &str, rtype: &str) -> String {
    let output = Command::new("delv")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .arg("-a")
        .arg(anchors)
        .arg(format!("+root={ZONE}"))
        .args([name, rtype])
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `delv` ({error}): this test needs BIND's validator on the PATH; \
                 install it with `apt-get install bind9-dnsutils`"
            )
        });
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether BIND's `delv` can run here. Without it the validation test is skipped with a notice,
/// so `cargo test` works on a machine with only the Rust toolchain; CI installs `delv` and sets
/// `MERIDIAN_REQUIRE_DELV=1`, which turns a missing validator into a failure.
fn delv_available() -> bool {
    let found = Command::new("delv").arg("-v").output().is_ok();
    if !found && std::env::var_os("MERIDIAN_REQUIRE_DELV").is_some_and(|v| v == "1") {
        panic!(
            "MERIDIAN_REQUIRE_DELV=1 but `delv` is not on the PATH (apt-get install bind9-dnsutils)"
        );
    }
    found
}

#[tokio::test]
async fn signed_answers_validate_with_delv() {
    if !delv_available() {
        eprintln!(
            "SKIPPED signed_answers_validate_with_delv: `delv` is not installed \
             (apt-get install bind9-dnsutils); CI runs it"
        );
        return;
    }
    let view = signed_view();
    let ds = dns::ds_records(&view, &Fqdn::new(ZONE).unwrap()).unwrap();
    // "signed.meridian.test. IN DS <tag> 13 2 <hex>" → a delv trust anchor.
    let fields: Vec<&str> = ds[0].split_whitespace().collect();
    assert_eq!(&fields[1..3], ["IN", "DS"]);
    assert_eq!(fields[4], "13", "ECDSA P-256");
    let anchors = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        anchors.path(),
        format!(
            "trust-anchors {{ \"{}\" static-ds {} {} {} \"{}\"; }};\n",
            fields[0], fields[3], fields[4], fields[5], fields[6]
        ),
    )
    .unwrap();

    let (_views, rx) = watch::channel(Arc::new(view));
    let mut registry = prometheus_client::registry::Registry::default();
    let handle = dns::spawn(config(), rx, &mut registry).await.unwrap();
    let server = handle.local_addr();
    let path = anchors.path().to_path_buf();

    // (name, type, what delv must say)
    let cases: Vec<(String, &str, &str)> = vec![
        (ZONE.into(), "SOA", "; fully validated"),
        (ZONE.into(), "NS", "; fully validated"),
        (ZONE.into(), "DNSKEY", "; fully validated"),
        // Apex A from a hostname policy.
        (ZONE.into(), "A", "; fully validated"),
        (format!("app.{ZONE}"), "A", "; fully validated"),
        // Dual stack: us-east's AAAA or NODATA for eu-west, both provable.
        (format!("multi.{ZONE}"), "A", "; fully validated"),
        (format!("www.{ZONE}"), "A", "; fully validated"),
        (
            format!("_acme-challenge.{ZONE}"),
            "TXT",
            "; fully validated",
        ),
        (format!("ns1.{ZONE}"), "A", "; fully validated"),
        // Compact denial: a name that does not exist, a type that does not exist, and a
        // fail-closed hostname.
        (
            format!("nope.{ZONE}"),
            "A",
            "; negative response, fully validated",
        ),
        (
            format!("deep.nope.{ZONE}"),
            "TXT",
            "; negative response, fully validated",
        ),
        (
            format!("app.{ZONE}"),
            "MX",
            "; negative response, fully validated",
        ),
        (
            format!("closed.{ZONE}"),
            "A",
            "; negative response, fully validated",
        ),
        (
            format!("closed.{ZONE}"),
            "AAAA",
            "; negative response, fully validated",
        ),
        // Explicit NSEC queries get the name's NSEC, at a name with data, a fail-closed
        // hostname and the apex.
        (format!("app.{ZONE}"), "NSEC", "; fully validated"),
        (format!("closed.{ZONE}"), "NSEC", "; fully validated"),
        (ZONE.into(), "NSEC", "; fully validated"),
    ];
    let outputs = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(name, rtype, expected)| {
                let output = delv(server, &path, &name, rtype);
                (name, rtype, expected, output)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (name, rtype, expected, output) in outputs {
        assert!(
            output.contains(expected),
            "{name} {rtype}: expected {expected:?}, delv said:\n{output}"
        );
    }
    handle.shutdown().await;
}
