//! Unit tests of the DNS module: the answer policy (tables), geo placement and ECS scopes,
//! config validation, snapshot compilation and the request path on raw packets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use meridian_proto::model::{
    AllUnhealthy, Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, HealthVerdict,
    HostnamePolicy, HostnameTarget, RecordData, Region, Routing,
};

use super::answer::{self, PlanMode, PolicyContext};
use super::config::{DnsConfig, GeoConfig, NameserverConfig, RegionLocation, ZoneConfig};
use super::geo::{GeoMap, GeoSource};
use super::respond::{self, Limits};
use super::snapshot::{BuildConfig, SnapshotBuilder, ZoneSnapshot};
use super::{ClusterView, DnsError, DnsView};

const ZONE: &str = "demo.meridian.test";
const APP: &str = "app.demo.meridian.test";
const NOW_MS: u64 = 1_750_000_000_000;

// === fixtures ===

fn fqdn(name: &str) -> Fqdn {
    Fqdn::new(name).unwrap()
}

fn cluster(name: &str, region: &str, address: &str) -> ClusterView {
    ClusterView {
        cluster: Cluster {
            name: ClusterName::new(name).unwrap(),
            region: Region::new(region).unwrap(),
            addresses: vec![address.parse().unwrap()],
            drained: false,
        },
        health: ClusterHealth {
            verdict: HealthVerdict::Healthy,
            reason: "reports arrive".into(),
            // Long stable: no TTL lowering unless a test says so.
            since_unix_ms: NOW_MS - 3_600_000,
        },
        reported_addresses: Vec::new(),
        unserved_hostnames: Default::default(),
        serving_changed_unix_ms: 0,
    }
}

fn policy(targets: &[(&str, u32)]) -> HostnamePolicy {
    HostnamePolicy {
        fqdn: fqdn(APP),
        ttl: 30,
        targets: targets
            .iter()
            .map(|(name, weight)| HostnameTarget {
                cluster: ClusterName::new(*name).unwrap(),
                weight: *weight,
            })
            .collect(),
        routing: Routing::default(),
    }
}

/// us-east (us), eu-west (eu), ap-south (ap), all healthy.
fn clusters() -> BTreeMap<ClusterName, ClusterView> {
    [
        cluster("us-east", "us", "127.0.1.1"),
        cluster("eu-west", "eu", "127.0.1.2"),
        cluster("ap-south", "ap", "127.0.1.3"),
    ]
    .into_iter()
    .map(|c| (c.cluster.name.clone(), c))
    .collect()
}

fn coordinates() -> BTreeMap<Region, RegionLocation> {
    [
        ("us", 40.7, -74.0),
        ("eu", 50.1, 8.7),
        ("ap", 1.35, 103.8),
        ("sa", -23.5, -46.6),
    ]
    .into_iter()
    .map(|(r, lat, lon)| (Region::new(r).unwrap(), RegionLocation { lat, lon }))
    .collect()
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
            networks: [
                ("203.0.113.0/24".to_string(), "us".to_string()),
                ("198.51.100.0/24".to_string(), "eu".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn dev_view() -> DnsView {
    let mut clusters = clusters();
    clusters.remove(&ClusterName::new("ap-south").unwrap());
    DnsView {
        applied_index: 42,
        clusters,
        hostnames: [(fqdn(APP), policy(&[("us-east", 1), ("eu-west", 1)]))]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(NOW_MS)
}

fn build(config: &DnsConfig, view: &DnsView) -> (ZoneSnapshot, Arc<GeoMap>) {
    let checked = config.checked().unwrap();
    let geo = Arc::new(GeoMap::new(&checked.geo).unwrap());
    let mut builder = SnapshotBuilder::new(
        BuildConfig {
            zones: checked.zones,
            coordinates: checked.geo.regions,
            unstable_ttl: config.unstable_ttl,
            stable_after_ms: config.stable_after_secs * 1000,
        },
        geo.clone(),
    );
    (builder.build(view, now()), geo)
}

// === answer policy ===

/// One row of the policy table.
struct Case {
    name: &'static str,
    targets: &'static [(&'static str, u32)],
    /// Changes to the cluster set / policy before planning.
    setup: fn(&mut BTreeMap<ClusterName, ClusterView>, &mut HostnamePolicy),
    client_region: Option<&'static str>,
    mode: PlanMode,
    /// Expected tiers: cluster names per group, in order.
    groups: &'static [&'static [&'static str]],
}

fn no_change(_: &mut BTreeMap<ClusterName, ClusterView>, _: &mut HostnamePolicy) {}

fn set_verdict(
    clusters: &mut BTreeMap<ClusterName, ClusterView>,
    name: &str,
    verdict: HealthVerdict,
) {
    clusters
        .get_mut(&ClusterName::new(name).unwrap())
        .unwrap()
        .health
        .verdict = verdict;
}

#[test]
fn answer_policy_table() {
    let cases = [
        Case {
            name: "geo: us client gets the us cluster",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: no_change,
            client_region: Some("us"),
            mode: PlanMode::Normal,
            groups: &[&["us-east"], &["eu-west"]],
        },
        Case {
            name: "geo: eu client gets the eu cluster",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: no_change,
            client_region: Some("eu"),
            mode: PlanMode::Normal,
            groups: &[&["eu-west"], &["us-east"]],
        },
        Case {
            name: "unhealthy home region falls back to the next region",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, _| set_verdict(c, "eu-west", HealthVerdict::Unhealthy),
            client_region: Some("eu"),
            mode: PlanMode::Normal,
            groups: &[&["us-east"]],
        },
        Case {
            name: "unknown verdict counts as unhealthy",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, _| set_verdict(c, "eu-west", HealthVerdict::Unknown),
            client_region: Some("eu"),
            mode: PlanMode::Normal,
            groups: &[&["us-east"]],
        },
        Case {
            name: "fallback regions ordered by distance from the client's region",
            targets: &[("us-east", 1), ("eu-west", 1), ("ap-south", 1)],
            setup: no_change,
            // sa has no cluster: us (7,700 km) before eu (9,800 km) before ap (16,000 km).
            client_region: Some("sa"),
            mode: PlanMode::Normal,
            groups: &[&["us-east"], &["eu-west"], &["ap-south"]],
        },
        Case {
            name: "region_order comes before distance",
            targets: &[("us-east", 1), ("eu-west", 1), ("ap-south", 1)],
            setup: |_, p| p.routing.region_order = vec![Region::new("ap").unwrap()],
            client_region: Some("sa"),
            mode: PlanMode::Normal,
            groups: &[&["ap-south"], &["us-east"], &["eu-west"]],
        },
        Case {
            name: "unknown client: one weighted tier over every region",
            targets: &[("us-east", 5), ("eu-west", 3), ("ap-south", 2)],
            setup: no_change,
            client_region: None,
            mode: PlanMode::Normal,
            groups: &[&["us-east", "eu-west", "ap-south"]],
        },
        Case {
            name: "geo off with failover order: tiers follow region_order",
            targets: &[("us-east", 1), ("eu-west", 1), ("ap-south", 1)],
            setup: |_, p| {
                p.routing.geo = false;
                p.routing.region_order =
                    vec![Region::new("eu").unwrap(), Region::new("us").unwrap()];
            },
            client_region: Some("us"),
            mode: PlanMode::Normal,
            groups: &[&["eu-west"], &["us-east"], &["ap-south"]],
        },
        Case {
            name: "drained cluster gets no answers",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, _| {
                c.get_mut(&ClusterName::new("eu-west").unwrap())
                    .unwrap()
                    .cluster
                    .drained = true;
            },
            client_region: Some("eu"),
            mode: PlanMode::Normal,
            groups: &[&["us-east"]],
        },
        Case {
            name: "all unhealthy, fail open: every eligible target, drained excluded",
            targets: &[("us-east", 1), ("eu-west", 1), ("ap-south", 1)],
            setup: |c, _| {
                for name in ["us-east", "eu-west", "ap-south"] {
                    set_verdict(c, name, HealthVerdict::Unhealthy);
                }
                c.get_mut(&ClusterName::new("ap-south").unwrap())
                    .unwrap()
                    .cluster
                    .drained = true;
            },
            client_region: Some("eu"),
            mode: PlanMode::FailOpen,
            groups: &[&["us-east", "eu-west"]],
        },
        Case {
            name: "all unhealthy, fail closed: nothing",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, p| {
                set_verdict(c, "us-east", HealthVerdict::Unhealthy);
                set_verdict(c, "eu-west", HealthVerdict::Unknown);
                p.routing.when_all_unhealthy = AllUnhealthy::FailClosed;
            },
            client_region: Some("eu"),
            mode: PlanMode::FailClosed,
            groups: &[],
        },
        Case {
            name: "healthy pin wins over geo",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |_, p| p.routing.pinned = Some(ClusterName::new("us-east").unwrap()),
            client_region: Some("eu"),
            mode: PlanMode::Pinned,
            groups: &[&["us-east"]],
        },
        Case {
            name: "unhealthy pin is ignored",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, p| {
                p.routing.pinned = Some(ClusterName::new("us-east").unwrap());
                set_verdict(c, "us-east", HealthVerdict::Unhealthy);
            },
            client_region: Some("us"),
            mode: PlanMode::Normal,
            groups: &[&["eu-west"]],
        },
        Case {
            name: "below the panic threshold every eligible target counts as healthy",
            targets: &[("us-east", 1), ("eu-west", 1), ("ap-south", 1)],
            setup: |c, p| {
                p.routing.panic_threshold_percent = 50;
                set_verdict(c, "us-east", HealthVerdict::Unhealthy);
                set_verdict(c, "ap-south", HealthVerdict::Unhealthy);
            },
            client_region: Some("us"),
            mode: PlanMode::Panic,
            groups: &[&["us-east"], &["eu-west"], &["ap-south"]],
        },
        Case {
            name: "at the panic threshold the healthy ones serve",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, p| {
                p.routing.panic_threshold_percent = 50;
                set_verdict(c, "us-east", HealthVerdict::Unhealthy);
            },
            client_region: Some("us"),
            mode: PlanMode::Normal,
            groups: &[&["eu-west"]],
        },
        Case {
            name: "weight 0 only when nothing else is healthy",
            targets: &[("us-east", 0), ("eu-west", 1)],
            setup: no_change,
            client_region: Some("us"),
            mode: PlanMode::Normal,
            groups: &[&["eu-west"], &["us-east"]],
        },
        Case {
            name: "missing cluster is skipped",
            targets: &[("nope", 1), ("eu-west", 1)],
            setup: no_change,
            client_region: Some("us"),
            mode: PlanMode::Normal,
            groups: &[&["eu-west"]],
        },
        Case {
            name: "no addresses: reported addresses are used, none at all is ineligible",
            targets: &[("us-east", 1), ("eu-west", 1)],
            setup: |c, _| {
                let us = c.get_mut(&ClusterName::new("us-east").unwrap()).unwrap();
                us.cluster.addresses.clear();
                us.reported_addresses = vec!["127.0.9.9".parse().unwrap()];
                let eu = c.get_mut(&ClusterName::new("eu-west").unwrap()).unwrap();
                eu.cluster.addresses.clear();
            },
            client_region: Some("eu"),
            mode: PlanMode::Normal,
            groups: &[&["us-east"]],
        },
        Case {
            name: "no eligible target at all",
            targets: &[("nope", 1)],
            setup: no_change,
            client_region: Some("eu"),
            mode: PlanMode::NoTargets,
            groups: &[],
        },
    ];
    for case in cases {
        let mut clusters = clusters();
        let mut policy = policy(case.targets);
        (case.setup)(&mut clusters, &mut policy);
        let coordinates = coordinates();
        let context = PolicyContext {
            clusters: &clusters,
            coordinates: &coordinates,
            now_unix_ms: NOW_MS,
            unstable_ttl: 5,
            stable_after_ms: 120_000,
        };
        let region = case.client_region.map(|r| Region::new(r).unwrap());
        let plan = answer::plan(&policy, &context, region.as_ref());
        let groups: Vec<Vec<String>> = plan
            .groups
            .iter()
            .map(|g| g.members.iter().map(|m| m.cluster.to_string()).collect())
            .collect();
        let expected: Vec<Vec<String>> = case
            .groups
            .iter()
            .map(|g| g.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(plan.mode, case.mode, "{}: mode", case.name);
        assert_eq!(groups, expected, "{}: groups", case.name);
    }
}

#[test]
fn ttl_is_lowered_while_health_changes_and_restored_after() {
    let mut clusters = clusters();
    let coordinates = coordinates();
    // eu-west recovered 10 s ago.
    clusters
        .get_mut(&ClusterName::new("eu-west").unwrap())
        .unwrap()
        .health
        .since_unix_ms = NOW_MS - 10_000;
    let policy = policy(&[("us-east", 1), ("eu-west", 1)]);
    let context = |now| PolicyContext {
        clusters: &clusters,
        coordinates: &coordinates,
        now_unix_ms: now,
        unstable_ttl: 5,
        stable_after_ms: 120_000,
    };
    let plan = answer::plan(&policy, &context(NOW_MS), None);
    assert_eq!((plan.ttl, plan.ttl_lowered), (5, true));
    assert_eq!(plan.stable_at_unix_ms, Some(NOW_MS + 110_000));
    let later = answer::plan(&policy, &context(NOW_MS + 110_000), None);
    assert_eq!((later.ttl, later.ttl_lowered), (30, false));
    assert_eq!(later.stable_at_unix_ms, None);
}

#[test]
fn weighted_pick_follows_cumulative_weights() {
    let cumulative = [5u64, 8, 10];
    let picks: Vec<usize> = (0..10)
        .map(|r| answer::pick_weighted(&cumulative, r))
        .collect();
    assert_eq!(picks, [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]);
    assert_eq!(
        answer::pick_weighted(&cumulative, 10),
        0,
        "wraps modulo the total"
    );
    assert_eq!(answer::pick_weighted(&[], 7), 0);
}

#[test]
fn weighted_order_is_a_permutation_favouring_weight() {
    let mut order = Vec::new();
    let mut first_heavy = 0;
    let mut seed = 1u64;
    for _ in 0..1000 {
        let mut random = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 11
        };
        answer::weighted_order(&[9, 1], &mut random, &mut order);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1]);
        if order[0] == 0 {
            first_heavy += 1;
        }
    }
    assert!(
        (850..=950).contains(&first_heavy),
        "heavy first {first_heavy}/1000"
    );
}

// === geo ===

fn geo_with_db(networks: &[(&str, &str)], db: Option<Vec<u8>>) -> GeoMap {
    let config = DnsConfig {
        geo: GeoConfig {
            networks: networks
                .iter()
                .map(|(n, r)| (n.to_string(), r.to_string()))
                .collect(),
            countries: [("DE".to_string(), "eu".to_string())].into_iter().collect(),
            continents: [
                ("NA".to_string(), "us".to_string()),
                ("EU".to_string(), "eu".to_string()),
            ]
            .into_iter()
            .collect(),
            regions: [
                (
                    "us".to_string(),
                    RegionLocation {
                        lat: 40.7,
                        lon: -74.0,
                    },
                ),
                (
                    "eu".to_string(),
                    RegionLocation {
                        lat: 50.1,
                        lon: 8.7,
                    },
                ),
                (
                    "ap".to_string(),
                    RegionLocation {
                        lat: 1.35,
                        lon: 103.8,
                    },
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    let checked = config.checked().unwrap();
    let reader = db.map(|bytes| maxminddb::Reader::from_source(bytes).unwrap());
    GeoMap::with_reader(&checked.geo, reader).unwrap()
}

/// A GeoIP2-Country-shaped database: 85.214.0.0/15 DE/EU, 8.8.8.0/24 US/NA, 1.1.1.0/24 only
/// coordinates (Singapore), 2001:db8::/32 FR/EU (no country mapping, continent decides).
pub(super) fn mmdb_fixture() -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Code {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Continent {
        code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Location {
        latitude: f64,
        longitude: f64,
    }
    #[derive(serde::Serialize)]
    struct Entry {
        #[serde(skip_serializing_if = "Option::is_none")]
        country: Option<Code>,
        #[serde(skip_serializing_if = "Option::is_none")]
        continent: Option<Continent>,
        #[serde(skip_serializing_if = "Option::is_none")]
        location: Option<Location>,
    }
    let mut writer = mmdb_writer::Writer::new("GeoIP2-Country");
    let entries = [
        ("85.214.0.0/15", Some("DE"), Some("EU"), None),
        ("8.8.8.0/24", Some("US"), Some("NA"), None),
        ("1.1.1.0/24", None, None, Some((1.3, 103.9))),
        ("2001:db8::/32", Some("FR"), Some("EU"), None),
    ];
    for (net, country, continent, location) in entries {
        let entry = Entry {
            country: country.map(|iso_code| Code { iso_code }),
            continent: continent.map(|code| Continent { code }),
            location: location.map(|(latitude, longitude)| Location {
                latitude,
                longitude,
            }),
        };
        writer
            .insert(net.parse::<ipnet::IpNet>().unwrap(), &entry)
            .unwrap();
    }
    writer.to_bytes().unwrap()
}

#[test]
fn geo_places_clients_and_reports_the_deciding_prefix() {
    let geo = geo_with_db(
        &[("203.0.113.0/24", "us"), ("85.214.7.0/24", "ap")],
        Some(mmdb_fixture()),
    );
    let region = |id: Option<u16>| id.map(|id| geo.regions()[usize::from(id)].to_string());
    // (address, region, source, scope)
    let table: &[(&str, Option<&str>, GeoSource, u8)] = &[
        ("203.0.113.9", Some("us"), GeoSource::Network, 24),
        // The override inside the DE network wins, and the DE answer around it is only valid
        // for addresses that share enough bits to exclude the override.
        ("85.214.7.1", Some("ap"), GeoSource::Network, 24),
        ("85.214.1.0", Some("eu"), GeoSource::Country, 22),
        // Outside the override's /16 the database's /15 would do, but 85.214.0.0/16 holds
        // the override, so the answer only holds for 85.215.0.0/16.
        ("85.215.200.1", Some("eu"), GeoSource::Country, 16),
        ("8.8.8.8", Some("us"), GeoSource::Continent, 24),
        ("1.1.1.1", Some("ap"), GeoSource::Coordinates, 24),
        ("2001:db8::1", Some("eu"), GeoSource::Continent, 32),
        ("::ffff:203.0.113.1", Some("us"), GeoSource::Network, 24),
    ];
    for (addr, expected_region, source, scope) in table {
        let located = geo.locate(addr.parse().unwrap());
        assert_eq!(
            region(located.region).as_deref(),
            *expected_region,
            "{addr}: region"
        );
        assert_eq!(located.source, *source, "{addr}: source");
        assert_eq!(located.scope, *scope, "{addr}: scope");
    }
    let unknown = geo.locate("192.0.2.1".parse().unwrap());
    assert_eq!((unknown.region, unknown.source), (None, GeoSource::Unknown));
}

#[test]
fn geo_without_database_uses_overrides_only() {
    let geo = geo_with_db(&[("10.0.0.0/8", "us"), ("10.1.0.0/16", "eu")], None);
    let name = |addr: &str| {
        let located = geo.locate(addr.parse().unwrap());
        (
            located
                .region
                .map(|id| geo.regions()[usize::from(id)].to_string()),
            located.scope,
        )
    };
    assert_eq!(name("10.1.2.3"), (Some("eu".into()), 16));
    // 10.0.0.0/8 minus 10.1.0.0/16: the answer holds for the /16 the address is in.
    assert_eq!(name("10.2.0.1"), (Some("us".into()), 15));
    assert_eq!(name("10.128.0.1"), (Some("us".into()), 9));
    assert_eq!(name("11.0.0.1"), (None, 8));
}

// === config ===

#[test]
fn config_errors_name_the_field() {
    type Mutation = fn(&mut DnsConfig);
    let table: &[(&str, Mutation, &str)] = &[
        (
            "bad origin",
            |c| c.zones[0].origin = "bad..name".into(),
            "zones[0].origin",
        ),
        (
            "no name servers",
            |c| c.zones[0].nameservers.clear(),
            "zones[0].nameservers",
        ),
        (
            "in-zone name server without glue",
            |c| c.zones[0].nameservers[0].addresses.clear(),
            "zones[0].nameservers[0].addresses",
        ),
        (
            "nested zones",
            |c| {
                let mut inner = c.zones[0].clone();
                inner.origin = format!("sub.{ZONE}");
                c.zones.push(inner);
            },
            "zones[1].origin",
        ),
        (
            "host bits in a CIDR",
            |c| {
                c.geo.networks.insert("10.0.0.1/8".into(), "us".into());
            },
            "geo.networks[\"10.0.0.1/8\"]",
        ),
        (
            "bad region name",
            |c| {
                c.geo.networks.insert("10.0.0.0/8".into(), "US East".into());
            },
            "geo.networks[\"10.0.0.0/8\"]",
        ),
        (
            "lower-case country",
            |c| {
                c.geo.countries.insert("de".into(), "eu".into());
            },
            "geo.countries[\"de\"]",
        ),
        (
            "unknown continent",
            |c| {
                c.geo.continents.insert("XX".into(), "eu".into());
            },
            "geo.continents[\"XX\"]",
        ),
        (
            "latitude out of range",
            |c| {
                c.geo.regions.insert(
                    "us".into(),
                    RegionLocation {
                        lat: 91.0,
                        lon: 0.0,
                    },
                );
            },
            "geo.regions[\"us\"].lat",
        ),
        (
            "tiny UDP payload",
            |c| c.max_udp_payload = 100,
            "max_udp_payload",
        ),
        (
            "bad exempt network",
            |c| c.rate_limit.exempt = vec!["loopback".into()],
            "rate_limit.exempt[0]",
        ),
    ];
    assert!(dev_config().validate().is_ok());
    for (name, mutate, field) in table {
        let mut config = dev_config();
        mutate(&mut config);
        match config.validate() {
            Err(DnsError::Config { field: got, .. }) => assert_eq!(&got, field, "{name}"),
            other => panic!("{name}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn config_parses_from_json_with_defaults_and_rejects_unknown_fields() {
    let json = r#"{
        "listen": "127.0.0.1:0",
        "zones": [{"origin": "demo.meridian.test",
                   "nameservers": [{"name": "ns1.demo.meridian.test", "addresses": ["127.0.0.1"]}]}],
        "geo": {"networks": {"203.0.113.0/24": "us"}}
    }"#;
    let config: DnsConfig = serde_json::from_str(json).unwrap();
    assert_eq!(config.max_udp_payload, 1232);
    assert_eq!(config.zones[0].soa.minimum, 60);
    assert_eq!(config.rate_limit.responses_per_second, 1000);
    config.validate().unwrap();
    let typo = r#"{"zones": [], "lissen": "127.0.0.1:53"}"#;
    let error = serde_json::from_str::<DnsConfig>(typo)
        .unwrap_err()
        .to_string();
    assert!(error.contains("lissen"), "{error}");
}

/// The example in the report and the hub's config documentation.
const EXAMPLE_YAML: &str = r#"
listen: 0.0.0.0:53
udp_sockets: 2
max_udp_payload: 1232
unstable_ttl: 5
stable_after_secs: 120
zones:
  - origin: demo.meridian.test
    ttl: 3600
    dnssec: true
    nameservers:
      - name: ns1.demo.meridian.test
        addresses: [192.0.2.53, "2001:db8::53"]
      - name: ns2.example.net
    soa:
      rname: hostmaster@example.net
      refresh: 3600
      retry: 600
      expire: 604800
      minimum: 60
geo:
  mmdb: /var/lib/meridian/GeoLite2-City.mmdb
  networks:
    203.0.113.0/24: us
    198.51.100.0/24: eu
  countries:
    GB: eu
    CA: us
  continents:
    EU: eu
    AF: eu
    NA: us
    SA: us
    AS: ap
    OC: ap
  regions:
    us: { lat: 39.0, lon: -77.5 }
    eu: { lat: 50.1, lon: 8.7 }
    ap: { lat: 1.35, lon: 103.8 }
rate_limit:
  responses_per_second: 1000
  slip: 2
  exempt: [127.0.0.0/8, "::1/128"]
"#;

#[test]
fn config_parses_from_yaml() {
    let config: DnsConfig = serde_saphyr::from_str(EXAMPLE_YAML).unwrap();
    config.validate().unwrap();
    assert_eq!(config.zones[0].nameservers.len(), 2);
    assert_eq!(config.geo.continents.len(), 6);
    let checked = config.checked().unwrap();
    assert_eq!(checked.zones[0].rname.as_str(), "hostmaster.example.net");
    assert_eq!(checked.zones[0].mname.as_str(), "ns1.demo.meridian.test");
}

// === request path on raw packets ===

fn query_packet(name: &str, rtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

fn ask(snapshot: &ZoneSnapshot, geo: &GeoMap, packet: Vec<u8>, client: &str) -> Message {
    let mut n = 0u64;
    ask_with(snapshot, geo, packet, client, &mut || {
        n += 1;
        n
    })
}

/// [`ask`] with `random` as the responder's source of randomness.
fn ask_with(
    snapshot: &ZoneSnapshot,
    geo: &GeoMap,
    packet: Vec<u8>,
    client: &str,
    random: &mut dyn FnMut() -> u64,
) -> Message {
    let src = SocketAddr::new(client.parse().unwrap(), 5300);
    let request = Request::from_bytes(packet, src, Protocol::Udp).unwrap();
    let limits = Limits {
        max_udp_payload: 1232,
    };
    let reply = respond::respond(snapshot, geo, &request, src.ip(), limits, random);
    let mut out = Vec::new();
    respond::encode_udp(&request, &reply, limits, &mut out).unwrap();
    Message::from_vec(&out).unwrap()
}

fn ecs(subnet: &str) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    let net: ipnet::IpNet = subnet.parse().unwrap();
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::from(net)));
    edns
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

fn scope(message: &Message) -> Option<u8> {
    message.edns.as_ref().and_then(|e| {
        match e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
            _ => None,
        }
    })
}

#[test]
fn dev_setup_answers_by_client_subnet() {
    let (snapshot, geo) = build(&dev_config(), &dev_view());
    let eu = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(ecs("198.51.100.0/24"))),
        "127.0.0.1",
    );
    assert_eq!(addresses(&eu), ["127.0.1.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(scope(&eu), Some(24));
    assert!(eu.metadata.authoritative);
    assert!(!eu.metadata.recursion_available);
    let us = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(ecs("203.0.113.0/24"))),
        "127.0.0.1",
    );
    assert_eq!(addresses(&us), ["127.0.1.1".parse::<IpAddr>().unwrap()]);
    // Without ECS the source address decides.
    let direct = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, None),
        "198.51.100.7",
    );
    assert_eq!(addresses(&direct), ["127.0.1.2".parse::<IpAddr>().unwrap()]);

    let mut view = dev_view();
    view.clusters
        .get_mut(&ClusterName::new("eu-west").unwrap())
        .unwrap()
        .health
        .verdict = HealthVerdict::Unhealthy;
    view.applied_index += 1;
    let (snapshot, geo) = build(&dev_config(), &view);
    let eu = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(ecs("198.51.100.0/24"))),
        "127.0.0.1",
    );
    assert_eq!(addresses(&eu), ["127.0.1.1".parse::<IpAddr>().unwrap()]);
    // Only one healthy cluster: location no longer matters.
    assert_eq!(scope(&eu), Some(0));
}

/// (query name, type) → (rcode, answer count, has SOA in authority).
#[test]
fn dns_correctness_table() {
    let mut view = dev_view();
    view.records = vec![
        DnsRecord {
            name: fqdn(&format!("www.{ZONE}")),
            ttl: 60,
            data: RecordData::Cname(fqdn(APP)),
        },
        DnsRecord {
            name: fqdn(&format!("_acme-challenge.app.{ZONE}")),
            ttl: 60,
            data: RecordData::Txt(vec!["token-1".into()]),
        },
        DnsRecord {
            name: fqdn(ZONE),
            ttl: 60,
            data: RecordData::A(Ipv4Addr::new(127, 0, 2, 1)),
        },
        DnsRecord {
            name: fqdn(&format!("deep.sub.{ZONE}")),
            ttl: 60,
            data: RecordData::Txt(vec!["x".into()]),
        },
        DnsRecord {
            name: fqdn(&format!("loop1.{ZONE}")),
            ttl: 60,
            data: RecordData::Cname(fqdn(&format!("loop2.{ZONE}"))),
        },
        DnsRecord {
            name: fqdn(&format!("loop2.{ZONE}")),
            ttl: 60,
            data: RecordData::Cname(fqdn(&format!("loop1.{ZONE}"))),
        },
        DnsRecord {
            name: fqdn(&format!("dangling.{ZONE}")),
            ttl: 60,
            data: RecordData::Cname(fqdn(&format!("gone.{ZONE}"))),
        },
    ];
    let (snapshot, geo) = build(&dev_config(), &view);
    let table: &[(&str, RecordType, ResponseCode, usize, bool)] = &[
        (ZONE, RecordType::SOA, ResponseCode::NoError, 1, false),
        (ZONE, RecordType::NS, ResponseCode::NoError, 1, false),
        (ZONE, RecordType::A, ResponseCode::NoError, 1, false),
        (ZONE, RecordType::AAAA, ResponseCode::NoError, 0, true),
        (APP, RecordType::A, ResponseCode::NoError, 1, false),
        // NODATA: the name exists, the type does not.
        (APP, RecordType::AAAA, ResponseCode::NoError, 0, true),
        (APP, RecordType::MX, ResponseCode::NoError, 0, true),
        (
            "nope.demo.meridian.test",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
            true,
        ),
        // Empty non-terminal: exists (it has a child), no data.
        (
            "sub.demo.meridian.test",
            RecordType::A,
            ResponseCode::NoError,
            0,
            true,
        ),
        // CNAME followed inside the zone: CNAME + the target's A.
        (
            "www.demo.meridian.test",
            RecordType::A,
            ResponseCode::NoError,
            2,
            false,
        ),
        (
            "www.demo.meridian.test",
            RecordType::CNAME,
            ResponseCode::NoError,
            1,
            false,
        ),
        (
            "_acme-challenge.app.demo.meridian.test",
            RecordType::TXT,
            ResponseCode::NoError,
            1,
            false,
        ),
        // Case-insensitive names.
        (
            "APP.Demo.Meridian.TEST",
            RecordType::A,
            ResponseCode::NoError,
            1,
            false,
        ),
        (
            "ns1.demo.meridian.test",
            RecordType::A,
            ResponseCode::NoError,
            1,
            false,
        ),
        // Outside our zones: refused, never recursed.
        (
            "example.com",
            RecordType::A,
            ResponseCode::Refused,
            0,
            false,
        ),
        (
            "meridian.test",
            RecordType::A,
            ResponseCode::Refused,
            0,
            false,
        ),
        // Minimal ANY (RFC 8482): one RRset.
        (APP, RecordType::ANY, ResponseCode::NoError, 1, false),
        (ZONE, RecordType::ANY, ResponseCode::NoError, 1, false),
        (ZONE, RecordType::AXFR, ResponseCode::Refused, 0, false),
    ];
    for (name, rtype, rcode, n_answers, soa) in table {
        let response = ask(
            &snapshot,
            &geo,
            query_packet(name, *rtype, None),
            "203.0.113.5",
        );
        let label = format!("{name} {rtype}");
        assert_eq!(response.metadata.response_code, *rcode, "{label}: rcode");
        assert_eq!(
            response.answers.len(),
            *n_answers,
            "{label}: answers {:?}",
            response.answers
        );
        let has_soa = response
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA);
        assert_eq!(has_soa, *soa, "{label}: SOA in authority");
        assert!(!response.metadata.recursion_available, "{label}: RA");
        assert_eq!(response.metadata.id, 0x1234, "{label}: id");
        assert!(response.metadata.recursion_desired, "{label}: RD copied");
    }
    // Glue for the in-zone name server.
    let ns = ask(
        &snapshot,
        &geo,
        query_packet(ZONE, RecordType::NS, None),
        "127.0.0.1",
    );
    assert_eq!(ns.additionals.len(), 1);
    // Negative answers carry the SOA with TTL min(SOA TTL, minimum).
    let nx = ask(
        &snapshot,
        &geo,
        query_packet("nope.demo.meridian.test", RecordType::A, None),
        "127.0.0.1",
    );
    assert_eq!(nx.authorities[0].ttl, 60);
}

#[test]
fn soa_serial_follows_the_applied_index() {
    let mut view = dev_view();
    let serial = |view: &DnsView| {
        let (snapshot, geo) = build(&dev_config(), view);
        let response = ask(
            &snapshot,
            &geo,
            query_packet(ZONE, RecordType::SOA, None),
            "127.0.0.1",
        );
        match &response.answers[0].data {
            RData::SOA(soa) => soa.serial,
            other => panic!("not a SOA: {other:?}"),
        }
    };
    assert_eq!(serial(&view), 42);
    view.applied_index = 43;
    assert_eq!(serial(&view), 43);
}

#[test]
fn a_node_without_its_groups_state_answers_servfail_not_nxdomain() {
    // A node that has applied nothing (a `--join` node not yet added) knows no names: an
    // authoritative NXDOMAIN from it would be cached by resolvers.
    let view = DnsView {
        applied_index: 0,
        ..DnsView::default()
    };
    let (snapshot, geo) = build(&dev_config(), &view);
    for (name, qtype) in [(APP, RecordType::A), (ZONE, RecordType::SOA)] {
        let response = ask(
            &snapshot,
            &geo,
            query_packet(name, qtype, None),
            "127.0.0.1",
        );
        assert_eq!(
            response.metadata.response_code,
            ResponseCode::ServFail,
            "{name}"
        );
        assert!(!response.metadata.authoritative);
        assert!(response.answers.is_empty() && response.authorities.is_empty());
    }
    // Outside the zones it still refuses, as any node does.
    let response = ask(
        &snapshot,
        &geo,
        query_packet("example.org.", RecordType::A, None),
        "127.0.0.1",
    );
    assert_eq!(response.metadata.response_code, ResponseCode::Refused);
    // Once anything is applied, it answers.
    let (snapshot, geo) = build(&dev_config(), &dev_view());
    let response = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, None),
        "127.0.0.1",
    );
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn edns_versions_payloads_and_malformed_ecs() {
    let (snapshot, geo) = build(&dev_config(), &dev_view());
    let mut v1 = Edns::new();
    v1.set_version(1);
    let response = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(v1)),
        "127.0.0.1",
    );
    // BADVERS and BADSIG share the value 16; hickory decodes it as BADSIG.
    assert_eq!(u16::from(response.metadata.response_code), 16);
    assert_eq!(response.edns.as_ref().map(|e| e.version()), Some(0));
    assert!(response.answers.is_empty());

    // ECS with bits set beyond the source prefix is malformed (RFC 7871 §6).
    let mut bad = Edns::new();
    bad.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            "198.51.100.0".parse().unwrap(),
            20,
            0,
        )));
    let response = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(bad)),
        "127.0.0.1",
    );
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);

    // Source prefix 0: the client asked not to use its subnet; scope 0.
    let mut zero = Edns::new();
    zero.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            "0.0.0.0".parse().unwrap(),
            0,
            0,
        )));
    let response = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(zero)),
        "203.0.113.9",
    );
    assert_eq!(
        addresses(&response),
        ["127.0.1.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(scope(&response), Some(0));

    // Our advertised payload size.
    let response = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, Some(Edns::new())),
        "127.0.0.1",
    );
    assert_eq!(response.edns.as_ref().map(|e| e.max_payload()), Some(1232));
}

#[test]
fn large_answers_are_truncated_over_udp() {
    let mut view = dev_view();
    view.records = (0..60)
        .map(|i| DnsRecord {
            name: fqdn(&format!("big.{ZONE}")),
            ttl: 60,
            data: RecordData::Txt(vec![format!("{i:03}-{}", "x".repeat(40))]),
        })
        .collect();
    let (snapshot, geo) = build(&dev_config(), &view);
    let plain = ask(
        &snapshot,
        &geo,
        query_packet("big.demo.meridian.test", RecordType::TXT, None),
        "127.0.0.1",
    );
    assert!(plain.metadata.truncation);
    assert!(plain.answers.is_empty());
    assert_eq!(plain.queries.len(), 1);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    let large = ask(
        &snapshot,
        &geo,
        query_packet("big.demo.meridian.test", RecordType::TXT, Some(edns)),
        "127.0.0.1",
    );
    // We never send more than our own limit (1232), so still truncated...
    assert!(large.metadata.truncation);
    // ...but a smaller set fits.
    view.records.truncate(10);
    let (snapshot, geo) = build(&dev_config(), &view);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    let fits = ask(
        &snapshot,
        &geo,
        query_packet("big.demo.meridian.test", RecordType::TXT, Some(edns)),
        "127.0.0.1",
    );
    assert!(!fits.metadata.truncation);
    assert_eq!(fits.answers.len(), 10);
}

#[test]
fn multivalue_answers_fill_up_to_n_addresses() {
    let mut view = dev_view();
    view.clusters = clusters();
    let mut policy = policy(&[("us-east", 1), ("eu-west", 1), ("ap-south", 1)]);
    policy.routing.max_answers = 2;
    view.hostnames.insert(fqdn(APP), policy);
    let (snapshot, geo) = build(&dev_config(), &view);
    for _ in 0..20 {
        let response = ask(
            &snapshot,
            &geo,
            query_packet(APP, RecordType::A, Some(ecs("198.51.100.0/24"))),
            "127.0.0.1",
        );
        let got = addresses(&response);
        assert_eq!(got.len(), 2);
        // The client's own region always comes first.
        assert_eq!(got[0], "127.0.1.2".parse::<IpAddr>().unwrap());
    }
}

#[test]
fn data_problems_are_reported_not_served() {
    let mut view = dev_view();
    view.records = vec![
        DnsRecord {
            name: fqdn("elsewhere.example"),
            ttl: 60,
            data: RecordData::A(Ipv4Addr::LOCALHOST),
        },
        DnsRecord {
            name: fqdn(APP),
            ttl: 60,
            data: RecordData::Cname(fqdn("other.example")),
        },
        DnsRecord {
            name: fqdn(ZONE),
            ttl: 60,
            data: RecordData::Cname(fqdn("other.example")),
        },
    ];
    let (snapshot, geo) = build(&dev_config(), &view);
    assert_eq!(snapshot.problems.len(), 3, "{:?}", snapshot.problems);
    let response = ask(
        &snapshot,
        &geo,
        query_packet(APP, RecordType::A, None),
        "203.0.113.1",
    );
    assert_eq!(
        addresses(&response),
        ["127.0.1.1".parse::<IpAddr>().unwrap()]
    );
}

/// Fuzzing found this: a question whose name is a compression pointer into the header. Echoed
/// byte for byte, the pointer would land in the response's (different) header and make the
/// response unparseable; it must get FORMERR without a question instead.
#[test]
fn fuzz_regressions_do_not_panic() {
    let config = dev_config();
    let mut answerer = super::PacketAnswerer::new(&config, &dev_view()).unwrap();
    let src: SocketAddr = "192.0.2.254:5300".parse().unwrap();
    let crashes: &[&[u8]] = &[
        // crash-c2a2330b: QNAME = pointer to offset 2 (the flags).
        &[
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x02,
            0x02, 0x00, 0x03, 0x64, 0x01,
        ],
    ];
    for packet in crashes {
        let response = answerer
            .answer_udp(packet, src)
            .expect("a FORMERR response");
        let message = Message::from_vec(response).expect("response parses");
        assert_eq!(message.metadata.response_code, ResponseCode::FormErr);
        assert!(message.queries.is_empty());
        assert_eq!(&response[..2], &packet[..2]);
    }
}

/// RFC 7871 §6: an ECS address must have exactly the octets its source prefix needs. hickory's
/// parser keeps only those, so the check reads the raw packet.
#[test]
fn ecs_with_extra_address_octets_gets_formerr_with_an_opt() {
    let config = dev_config();
    let mut answerer = super::PacketAnswerer::new(&config, &dev_view()).unwrap();
    let src: SocketAddr = "192.0.2.254:5300".parse().unwrap();
    let ecs_query = |address: &[u8], source: u8| {
        let mut packet = query_packet(APP, RecordType::A, None);
        // ARCOUNT 1, then an OPT with one ECS option (family 1).
        packet[11] = 1;
        let option_len = 4 + address.len();
        packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        packet.extend_from_slice(&((option_len + 4) as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 8]);
        packet.extend_from_slice(&(option_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 1, source, 0]);
        packet.extend_from_slice(address);
        packet
    };
    // A /24 with its three octets is answered...
    let good = answerer
        .answer_udp(&ecs_query(&[203, 0, 113], 24), src)
        .expect("an answer")
        .to_vec();
    let good = Message::from_vec(&good).unwrap();
    assert_eq!(good.metadata.response_code, ResponseCode::NoError);
    // ...a /24 with four octets is malformed.
    let extra = answerer
        .answer_udp(&ecs_query(&[203, 0, 113, 0], 24), src)
        .expect("a FORMERR")
        .to_vec();
    let extra = Message::from_vec(&extra).unwrap();
    assert_eq!(extra.metadata.response_code, ResponseCode::FormErr);
    assert!(extra.edns.is_some(), "the FORMERR keeps the OPT record");
}

/// The UDP fast path answers the hot queries itself, and byte for byte (or message for message)
/// as the full path would; everything else it leaves to the full path.
#[test]
fn fast_path_matches_the_full_path() {
    let mut view = dev_view();
    view.clusters
        .get_mut(&ClusterName::new("us-east").unwrap())
        .unwrap()
        .cluster
        .addresses
        .push("fd00::1".parse().unwrap());
    let (snapshot, geo) = build(&dev_config(), &view);
    let limits = Limits {
        max_udp_payload: 1232,
    };
    let mut do_edns = Edns::new();
    do_edns.set_dnssec_ok(true);
    // (packet, whether the fast path should take it)
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (query_packet(APP, RecordType::A, None), true),
        (
            query_packet("aPp.DEMO.meridian.test", RecordType::A, None),
            true,
        ),
        (query_packet(APP, RecordType::AAAA, Some(Edns::new())), true),
        (
            query_packet(APP, RecordType::A, Some(ecs("198.51.100.0/24"))),
            true,
        ),
        (
            query_packet(APP, RecordType::A, Some(ecs("203.0.113.0/25"))),
            true,
        ),
        (
            query_packet(APP, RecordType::A, Some(ecs("2001:db8::/48"))),
            true,
        ),
        (query_packet(APP, RecordType::A, Some(do_edns)), false),
        (query_packet(APP, RecordType::TXT, None), false),
        (query_packet(ZONE, RecordType::A, None), false),
        (
            query_packet("nope.demo.meridian.test", RecordType::A, None),
            false,
        ),
    ];
    let client: IpAddr = "203.0.113.7".parse().unwrap();
    for (packet, expect_fast) in cases {
        let mut fast_out = Vec::new();
        let mut fixed = || 12345u64;
        let took = super::fast::answer(
            &snapshot,
            &geo,
            &packet,
            client,
            limits,
            &mut fixed,
            &mut fast_out,
        );
        assert_eq!(
            took,
            expect_fast,
            "fast path for {:?}",
            Message::from_vec(&packet).unwrap().queries
        );
        if !took {
            continue;
        }
        let src = SocketAddr::new(client, 5300);
        let request = Request::from_bytes(packet.clone(), src, Protocol::Udp).unwrap();
        let reply = respond::respond(&snapshot, &geo, &request, client, limits, &mut fixed);
        let mut full_out = Vec::new();
        respond::encode_udp(&request, &reply, limits, &mut full_out).unwrap();
        assert_eq!(
            Message::from_vec(&fast_out).unwrap(),
            Message::from_vec(&full_out).unwrap(),
            "fast and full responses differ"
        );
    }
}

/// Hand-made broken packets: the request path must answer or drop, never panic.
#[test]
fn malformed_packets_never_panic() {
    let (snapshot, geo) = build(&dev_config(), &dev_view());
    let valid = query_packet(APP, RecordType::A, Some(ecs("198.51.100.0/24")));
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0; 11],
        vec![0; 12],
        vec![0xff; 12],
        vec![0xff; 512],
    ];
    for cut in 0..valid.len() {
        cases.push(valid[..cut].to_vec());
    }
    for index in 0..valid.len() {
        let mut flipped = valid.clone();
        flipped[index] ^= 0xff;
        cases.push(flipped);
    }
    let limits = Limits {
        max_udp_payload: 1232,
    };
    for packet in cases {
        let mut out = Vec::new();
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        match Request::from_bytes(packet.clone(), src, Protocol::Udp) {
            Ok(request) => {
                let reply =
                    respond::respond(&snapshot, &geo, &request, src.ip(), limits, &mut || 7);
                let _ = respond::encode_udp(&request, &reply, limits, &mut out);
                assert!(out.len() <= 1232);
            }
            Err(_) => {
                let _ = respond::encode_formerr(&packet, &mut out);
            }
        }
    }
}

// === per-hostname backend health ===

#[test]
fn clusters_that_cannot_serve_a_hostname_count_as_down_for_it_unless_none_can() {
    let coordinates = coordinates();
    let policy = policy(&[("us-east", 1), ("eu-west", 1)]);
    let eu_region = Region::new("eu").unwrap();
    let unserve = |clusters: &mut BTreeMap<ClusterName, ClusterView>, name: &str| {
        clusters
            .get_mut(&ClusterName::new(name).unwrap())
            .unwrap()
            .unserved_hostnames
            .insert(fqdn(APP), "0 of 2 backend endpoints ready".into());
    };
    let plan_for = |clusters: &BTreeMap<ClusterName, ClusterView>| {
        let context = PolicyContext {
            clusters,
            coordinates: &coordinates,
            now_unix_ms: NOW_MS,
            unstable_ttl: 5,
            stable_after_ms: 120_000,
        };
        answer::plan(&policy, &context, Some(&eu_region))
    };
    let members = |plan: &answer::Plan| -> Vec<Vec<String>> {
        plan.groups
            .iter()
            .map(|g| g.members.iter().map(|m| m.cluster.to_string()).collect())
            .collect()
    };

    // eu-west's gateway is up but its backends for the hostname are down: eu clients go to
    // us-east, and explain says why.
    let mut clusters = clusters();
    unserve(&mut clusters, "eu-west");
    let plan = plan_for(&clusters);
    assert_eq!(plan.mode, PlanMode::Normal);
    assert_eq!(members(&plan), [["us-east"]]);
    let eu = plan
        .candidates
        .iter()
        .find(|c| c.cluster.as_str() == "eu-west")
        .unwrap();
    assert!(!eu.healthy && eu.verdict == "healthy");
    assert!(
        eu.reason
            .contains("cannot serve app.demo.meridian.test: 0 of 2"),
        "{}",
        eu.reason
    );

    // Another hostname is not affected.
    let mut other = policy.clone();
    other.fqdn = fqdn("shop.demo.meridian.test");
    let context = PolicyContext {
        clusters: &clusters,
        coordinates: &coordinates,
        now_unix_ms: NOW_MS,
        unstable_ttl: 5,
        stable_after_ms: 120_000,
    };
    let plan = answer::plan(&other, &context, Some(&eu_region));
    assert_eq!(members(&plan), [vec!["eu-west"], vec!["us-east"]]);

    // No cluster can serve it (the route is not pushed yet, or the app is down everywhere):
    // the backend signal is ignored and gateway health decides, as before.
    unserve(&mut clusters, "us-east");
    let plan = plan_for(&clusters);
    assert_eq!(plan.mode, PlanMode::Normal);
    assert_eq!(members(&plan), [vec!["eu-west"], vec!["us-east"]]);

    // The only cluster that can serve it has a dead gateway: the others are still the
    // healthy-by-gateway fallback, not nothing.
    clusters
        .get_mut(&ClusterName::new("us-east").unwrap())
        .unwrap()
        .unserved_hostnames
        .clear();
    clusters
        .get_mut(&ClusterName::new("us-east").unwrap())
        .unwrap()
        .health
        .verdict = HealthVerdict::Unhealthy;
    let plan = plan_for(&clusters);
    assert_eq!(members(&plan), [["eu-west"]]);
}

/// Answers signed on the query path are cached per key, in signed snapshots only; a compact
/// denial is signed once and then served from the cache (ECDSA signatures are randomised, so
/// an equal RRSIG means the cached one).
#[test]
fn lazily_signed_answers_are_cached_in_signed_snapshots() {
    use std::cell::Cell;

    use super::snapshot::LazyCache;

    let n_made = Cell::new(0);
    let make = || {
        n_made.set(n_made.get() + 1);
        Some(Vec::new())
    };
    let signed = LazyCache::new(true);
    let first = signed.get_or_insert(b"key", make).unwrap();
    let second = signed.get_or_insert(b"key", make).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(n_made.get(), 1);
    signed.get_or_insert(b"other", make).unwrap();
    assert_eq!(n_made.get(), 2);
    assert!(signed.get_or_insert(b"failed", || None).is_none());

    n_made.set(0);
    let unsigned = LazyCache::new(false);
    unsigned.get_or_insert(b"key", make).unwrap();
    unsigned.get_or_insert(b"key", make).unwrap();
    assert_eq!(n_made.get(), 2, "an unsigned snapshot has no slots");

    let mut config = dev_config();
    config.zones[0].dnssec = true;
    let mut view = dev_view();
    view.zone_keys
        .insert(fqdn(ZONE), super::generate_zone_key().unwrap());
    let (snapshot, geo) = build(&config, &view);
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    let denial = |snapshot: &ZoneSnapshot| {
        let packet = query_packet("nope.demo.meridian.test", RecordType::A, Some(edns.clone()));
        let message = ask(snapshot, &geo, packet, "192.0.2.7");
        let rrsigs: Vec<_> = message
            .authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::RRSIG)
            .cloned()
            .collect();
        assert!(rrsigs.len() >= 2, "SOA and NSEC signed: {rrsigs:?}");
        rrsigs
    };
    assert_eq!(denial(&snapshot), denial(&snapshot));
    let (rebuilt, _) = build(&config, &view);
    assert_ne!(
        denial(&snapshot),
        denial(&rebuilt),
        "a new snapshot signs its own denial"
    );
}

// === DNSSEC denial proofs ===

/// The dev zone signed, with a fail-closed hostname whose only cluster is down (`closed.`),
/// a hostname with IPv4 addresses only (`app.`), a TXT name and a CNAME.
fn signed_fixture() -> (ZoneSnapshot, Arc<GeoMap>) {
    let mut config = dev_config();
    config.zones[0].dnssec = true;
    let mut view = dev_view();
    view.zone_keys
        .insert(fqdn(ZONE), super::generate_zone_key().unwrap());
    let closed_name = format!("closed.{ZONE}");
    let mut closed = policy(&[("down", 1)]);
    closed.fqdn = fqdn(&closed_name);
    closed.routing.when_all_unhealthy = AllUnhealthy::FailClosed;
    view.hostnames.insert(fqdn(&closed_name), closed);
    let mut down = cluster("down", "ap", "127.0.1.4");
    down.health.verdict = HealthVerdict::Unhealthy;
    view.clusters.insert(down.cluster.name.clone(), down);
    view.records = vec![
        DnsRecord {
            name: fqdn(&format!("txt.{ZONE}")),
            ttl: 60,
            data: RecordData::Txt(vec!["x".into()]),
        },
        DnsRecord {
            name: fqdn(&format!("www.{ZONE}")),
            ttl: 60,
            data: RecordData::Cname(fqdn(APP)),
        },
    ];
    build(&config, &view)
}

fn dnssec_ok() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    edns
}

/// The NSEC of a response's section, with its bitmap.
fn nsec_types(records: &[hickory_proto::rr::Record]) -> Option<Vec<RecordType>> {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    records.iter().find_map(|r| match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC(nsec)) => Some(nsec.type_bit_maps().collect()),
        _ => None,
    })
}

fn soa_ttl(message: &Message) -> Option<u32> {
    message
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.ttl)
}

#[test]
fn denial_proofs_list_only_the_types_that_exist_for_the_client() {
    let (snapshot, geo) = signed_fixture();
    let closed = format!("closed.{ZONE}");
    let ask_signed = |name: &str, rtype: RecordType| {
        ask(
            &snapshot,
            &geo,
            query_packet(name, rtype, Some(dnssec_ok())),
            "192.0.2.7",
        )
    };
    // Fail-closed with every cluster down: neither A nor AAAA exists, and both proofs say so.
    for rtype in [RecordType::A, RecordType::AAAA] {
        let response = ask_signed(&closed, rtype);
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        assert!(response.answers.is_empty(), "{rtype}: NODATA");
        let types = nsec_types(&response.authorities).expect("a denial NSEC");
        assert!(
            !types.contains(&RecordType::A) && !types.contains(&RecordType::AAAA),
            "{rtype} NODATA at a fail-closed name claims addresses: {types:?}"
        );
    }
    // IPv4-only hostname: the AAAA proof says A exists (and it does).
    let response = ask_signed(APP, RecordType::AAAA);
    let types = nsec_types(&response.authorities).unwrap();
    assert!(types.contains(&RecordType::A), "{types:?}");
    assert!(!types.contains(&RecordType::AAAA), "{types:?}");
    assert!(!addresses(&ask_signed(APP, RecordType::A)).is_empty());
}

#[test]
fn nodata_at_a_hostname_is_cached_no_longer_than_its_answers() {
    let (snapshot, geo) = signed_fixture();
    for dnssec in [false, true] {
        let edns = dnssec.then(dnssec_ok);
        let ask_ttl = |name: &str, rtype: RecordType| {
            let response = ask(
                &snapshot,
                &geo,
                query_packet(name, rtype, edns.clone()),
                "192.0.2.7",
            );
            assert!(response.answers.is_empty(), "{name} {rtype}: NODATA");
            let soa = soa_ttl(&response).unwrap();
            if dnssec {
                let nsec_ttl = response
                    .authorities
                    .iter()
                    .filter(|r| r.record_type() != RecordType::SOA)
                    .map(|r| r.ttl)
                    .max()
                    .unwrap();
                assert!(nsec_ttl <= soa, "{name} {rtype}: NSEC/RRSIG TTL {nsec_ttl}");
            }
            soa
        };
        // The hostname's TTL is 30; the zone's negative TTL is 60.
        assert_eq!(ask_ttl(&format!("closed.{ZONE}"), RecordType::A), 30);
        assert_eq!(ask_ttl(APP, RecordType::AAAA), 30);
        assert_eq!(ask_ttl(APP, RecordType::TXT), 30);
        assert_eq!(ask_ttl(&format!("txt.{ZONE}"), RecordType::A), 60);
    }

    // While health changes, the lowered TTL caps the negative answer too.
    let mut view = dev_view();
    let closed = format!("closed.{ZONE}");
    let mut policy = policy(&[("down", 1)]);
    policy.fqdn = fqdn(&closed);
    policy.routing.when_all_unhealthy = AllUnhealthy::FailClosed;
    view.hostnames.insert(fqdn(&closed), policy);
    let mut down = cluster("down", "ap", "127.0.1.4");
    down.health.verdict = HealthVerdict::Unhealthy;
    down.health.since_unix_ms = NOW_MS - 1000;
    view.clusters.insert(down.cluster.name.clone(), down);
    let config = dev_config();
    let (snapshot, geo) = build(&config, &view);
    let response = ask(
        &snapshot,
        &geo,
        query_packet(&closed, RecordType::A, None),
        "192.0.2.7",
    );
    assert_eq!(soa_ttl(&response), Some(config.unstable_ttl));
}

#[test]
fn explicit_nsec_and_rrsig_queries_are_answered_not_denied() {
    let (snapshot, geo) = signed_fixture();
    let ask_signed = |name: &str, rtype: RecordType| {
        ask(
            &snapshot,
            &geo,
            query_packet(name, rtype, Some(dnssec_ok())),
            "192.0.2.7",
        )
    };
    for name in [
        APP.to_string(),
        format!("txt.{ZONE}"),
        format!("www.{ZONE}"),
        format!("closed.{ZONE}"),
        format!("nope.{ZONE}"),
    ] {
        let nsec = ask_signed(&name, RecordType::NSEC);
        assert_eq!(nsec.metadata.response_code, ResponseCode::NoError);
        let types = nsec_types(&nsec.answers)
            .unwrap_or_else(|| panic!("{name} NSEC: the NSEC in the answer: {nsec:?}"));
        assert!(types.contains(&RecordType::NSEC), "{name}: {types:?}");
        assert!(
            nsec.answers
                .iter()
                .any(|r| r.record_type() == RecordType::RRSIG),
            "{name} NSEC: signed"
        );
        assert!(nsec_types(&nsec.authorities).is_none(), "{name}: no denial");

        let rrsig = ask_signed(&name, RecordType::RRSIG);
        assert_eq!(rrsig.metadata.response_code, ResponseCode::NoError);
        assert!(!rrsig.answers.is_empty(), "{name} RRSIG: answered");
        assert!(
            rrsig
                .answers
                .iter()
                .all(|r| r.record_type() == RecordType::RRSIG),
            "{name} RRSIG: only signatures, {:?}",
            rrsig.answers
        );
        assert!(
            nsec_types(&rrsig.authorities).is_none(),
            "{name}: no denial"
        );
    }
    // The apex: the RRSIGs over SOA, NS, DNSKEY and the NSEC.
    let apex = ask_signed(ZONE, RecordType::RRSIG);
    assert!(apex.answers.len() >= 4, "{:?}", apex.answers);
    // A hostname: the signature over the A set this client gets, and the NSEC's.
    let app = ask_signed(APP, RecordType::RRSIG);
    assert_eq!(app.answers.len(), 2, "{:?}", app.answers);
}

#[test]
fn any_at_an_alias_answers_the_cname_only() {
    let (snapshot, geo) = signed_fixture();
    let response = ask(
        &snapshot,
        &geo,
        query_packet(&format!("www.{ZONE}"), RecordType::ANY, None),
        "192.0.2.7",
    );
    let types: Vec<RecordType> = response.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::CNAME]);
}

#[test]
fn formerr_for_an_unparsable_query_keeps_the_opt_record() {
    let bare = query_packet(APP, RecordType::A, None);
    let mut out = Vec::new();
    assert!(respond::encode_formerr(&bare, &mut out));
    let response = Message::from_vec(&out).unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    assert!(response.edns.is_none(), "no OPT without one in the query");

    // An ECS option of family 3, which hickory cannot parse; DO set.
    let mut packet = query_packet(APP, RecordType::A, None);
    packet[11] = 1;
    packet.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0]);
    packet.extend_from_slice(&[0, 11, 0, 8, 0, 7, 0, 3, 24, 0, 1, 2, 3]);
    assert!(
        Request::from_bytes(
            packet.clone(),
            "127.0.0.1:53".parse().unwrap(),
            Protocol::Udp
        )
        .is_err()
    );
    assert!(respond::encode_formerr(&packet, &mut out));
    let response = Message::from_vec(&out).unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
    let edns = response.edns.expect("an OPT record");
    assert_eq!(edns.version(), 0);
    assert!(edns.flags().dnssec_ok);
}

#[test]
fn a_fail_open_answer_over_many_clusters_is_a_bounded_weighted_share_that_fits_udp() {
    let mut view = dev_view();
    let mut targets = Vec::new();
    for i in 0..60u32 {
        let name = format!("c{i}");
        let mut c = cluster(&name, "us", &format!("2001:db8::{:x}", i + 1));
        c.cluster
            .addresses
            .push(format!("2001:db8:1::{:x}", i + 1).parse().unwrap());
        c.health.verdict = HealthVerdict::Unhealthy;
        view.clusters.insert(c.cluster.name.clone(), c);
        targets.push(name);
    }
    let targets: Vec<(&str, u32)> = targets.iter().map(|n| (n.as_str(), 1)).collect();
    view.hostnames.insert(fqdn(APP), policy(&targets));
    let (snapshot, geo) = build(&dev_config(), &view);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    let mut seen = BTreeSet::new();
    for seed in 1..=10u64 {
        // Each query draws its own share (a weighted shuffle).
        let mut state = seed;
        let mut random = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 16
        };
        let packet = query_packet(APP, RecordType::AAAA, Some(edns.clone()));
        let response = ask_with(&snapshot, &geo, packet, "127.0.0.1", &mut random);
        // 120 addresses would not fit; 32 of them do, without truncation.
        assert!(!response.metadata.truncation);
        let got: BTreeSet<IpAddr> = addresses(&response).into_iter().collect();
        assert_eq!(got.len(), 32);
        seen.extend(got);
    }
    assert!(
        seen.len() > 64,
        "10 answers used only {} addresses",
        seen.len()
    );
}

#[test]
fn a_new_view_names_the_health_changes_it_brings_with_when_they_were_decided() {
    use super::server::{HealthChange, health_changes};
    let view = |clusters: Vec<ClusterView>| DnsView {
        clusters: clusters
            .into_iter()
            .map(|c| (c.cluster.name.clone(), c))
            .collect(),
        ..DnsView::default()
    };
    let us = cluster("us-east", "us", "127.0.1.1");
    let before = view(vec![us.clone()]);

    // Nothing changed (a new cluster is not a change).
    let eu = cluster("eu-west", "eu", "127.0.1.2");
    assert!(health_changes(&before, &view(vec![us.clone(), eu])).is_empty());

    // A verdict moved, and a hostname stopped being served.
    let mut down = us.clone();
    down.health.verdict = HealthVerdict::Unhealthy;
    down.health.since_unix_ms = NOW_MS - 120;
    down.unserved_hostnames
        .insert(fqdn("app.demo.meridian.test"), "0 of 2 ready".into());
    down.serving_changed_unix_ms = NOW_MS - 80;
    assert_eq!(
        health_changes(&before, &view(vec![down.clone()])),
        [
            HealthChange {
                change: "verdict",
                decided_unix_ms: NOW_MS - 120
            },
            HealthChange {
                change: "hostname",
                decided_unix_ms: NOW_MS - 80
            },
        ]
    );
    // A reason that changes alone is not a change of what DNS answers.
    let mut reworded = down.clone();
    reworded
        .unserved_hostnames
        .insert(fqdn("app.demo.meridian.test"), "0 of 3 ready".into());
    assert!(health_changes(&view(vec![down]), &view(vec![reworded])).is_empty());
}
