//! Tests of `State::apply`, the encodings and the publishing state machine.

use std::net::IpAddr;

use meridian_proto::model::route::{HttpRoute, HttpRouteRule};
use meridian_proto::model::{
    Cluster, ClusterHealth, ClusterName, Fqdn, HealthVerdict, HostnamePolicy, HostnameTarget,
    ObjectKey, RecordData, Region, Routing,
};
use prometheus_client::registry::Registry;

use super::encoding::{
    decode_command, decode_outcome, decode_snapshot, encode_command, encode_outcome,
    encode_snapshot,
};
use super::*;
use crate::raft::StateMachine as _;

fn name(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

fn cluster(n: &str, region: &str, addr: &str) -> Cluster {
    Cluster {
        name: name(n),
        region: Region::new(region).unwrap(),
        addresses: vec![addr.parse().unwrap()],
        drained: false,
    }
}

fn hostname(fqdn: &str, targets: &[&str]) -> HostnamePolicy {
    HostnamePolicy {
        fqdn: Fqdn::new(fqdn).unwrap(),
        ttl: 30,
        targets: targets
            .iter()
            .map(|t| HostnameTarget {
                cluster: name(t),
                weight: 1,
            })
            .collect(),
        routing: Routing::default(),
    }
}

fn route(ns: &str, n: &str) -> HttpRoute {
    HttpRoute {
        key: ObjectKey::new(ns, n).unwrap(),
        created_unix_ms: 0,
        parent_refs: Vec::new(),
        hostnames: vec!["app.demo.meridian.test".to_string()],
        rules: vec![HttpRouteRule {
            name: None,
            matches: Vec::new(),
            filters: Vec::new(),
            backend_refs: Vec::new(),
            timeouts: Default::default(),
            retry: None,
            session_persistence: None,
        }],
    }
}

/// A `SetSharedStatus` for routes `shop/<name>` each with one parent (`infra/edge`) whose
/// `ResolvedRefs` has the given reason (`ResolvedRefs` is True), and `removed` routes.
fn route_status(cluster: &str, version: u64, changed: &[(&str, &str)], removed: &[&str]) -> Action {
    use meridian_proto::model::{
        ConditionState, RouteParentConditions, SharedObjectsStatus, SharedRouteStatus,
        StatusCondition,
    };
    Action::SetSharedStatus {
        cluster: name(cluster),
        changed: SharedObjectsStatus {
            shared_version: version,
            routes: changed
                .iter()
                .map(|(route, reason)| SharedRouteStatus {
                    route: ObjectKey::new("shop", *route).unwrap(),
                    parents: vec![RouteParentConditions {
                        gateway: ObjectKey::new("infra", "edge").unwrap(),
                        section_name: None,
                        port: None,
                        conditions: vec![StatusCondition {
                            type_: "ResolvedRefs".into(),
                            status: if *reason == "ResolvedRefs" {
                                ConditionState::True
                            } else {
                                ConditionState::False
                            },
                            reason: reason.to_string(),
                            message: String::new(),
                        }],
                    }],
                })
                .collect(),
            certificates: Vec::new(),
            rejected: Vec::new(),
        },
        removed: removed
            .iter()
            .map(|r| ObjectKey::new("shop", *r).unwrap())
            .collect(),
    }
}

fn cmd(action: Action) -> Command {
    Command {
        actor: "test".to_string(),
        unix_ms: 1_700_000_000_000,
        action,
    }
}

fn health(verdict: HealthVerdict, reason: &str) -> ClusterHealth {
    ClusterHealth {
        verdict,
        reason: reason.to_string(),
        since_unix_ms: 1,
    }
}

/// A realistic sequence touching every command kind.
fn script() -> Vec<Action> {
    vec![
        Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
        Action::PutCluster(cluster("eu-west", "eu", "127.0.1.2")),
        Action::PutHostname(hostname("app.demo.meridian.test", &["us-east", "eu-west"])),
        Action::SetHealth {
            cluster: name("us-east"),
            health: health(HealthVerdict::Healthy, "2 good reports"),
        },
        Action::SetReportedAddresses {
            cluster: name("eu-west"),
            addresses: vec!["127.0.1.2".parse::<IpAddr>().unwrap()],
        },
        Action::SetDrained {
            cluster: name("eu-west"),
            drained: true,
        },
        Action::SetPinned {
            fqdn: Fqdn::new("app.demo.meridian.test").unwrap(),
            cluster: Some(name("us-east")),
        },
        Action::PutRoute(Box::new(route("shop", "web"))),
        Action::PutZoneKey {
            zone: Fqdn::new("demo.meridian.test").unwrap(),
            pkcs8: vec![1, 2, 3],
        },
        // Refused ones are part of the history too.
        Action::DeleteCluster(name("us-east")),
        Action::DeleteRoute(ObjectKey::new("shop", "missing").unwrap()),
        Action::PutRecordSet {
            name: Fqdn::new("_acme-challenge.demo.meridian.test").unwrap(),
            rtype: "TXT".into(),
            ttl: 60,
            values: vec![RecordData::Txt(vec!["token".into()])],
        },
    ]
}

fn run(actions: Vec<Action>) -> (State, Vec<Outcome>) {
    let mut state = State::default();
    let outcomes = actions
        .into_iter()
        .enumerate()
        .map(|(i, a)| state.apply(i as u64 + 1, cmd(a)))
        .collect();
    (state, outcomes)
}

fn base() -> State {
    run(vec![
        Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
        Action::PutCluster(cluster("eu-west", "eu", "127.0.1.2")),
        Action::PutHostname(hostname("app.demo.meridian.test", &["us-east", "eu-west"])),
        Action::PutRoute(Box::new(route("shop", "web"))),
    ])
    .0
}

/// `Ok(changed)`, or the refusal's kind and a text its message contains.
type Expected = Result<bool, (RejectKind, &'static str)>;

/// Applies `action` at index 100 to the base state; checks the outcome and that a refused
/// command changed nothing but the audit log.
fn check(action: Action, expected: Expected) {
    let mut state = base();
    let before = state.clone();
    let description = action.describe();
    let outcome = state.apply(100, cmd(action));
    match (outcome.into_result(), expected) {
        (Ok(changed), Ok(want)) => {
            assert_eq!(changed, want, "{description}: changed");
            if !changed {
                assert_eq!(state, before, "{description}: unchanged state");
            }
        }
        (Err(rejection), Err((kind, text))) => {
            assert_eq!(rejection.kind, kind, "{description}: {rejection}");
            assert!(
                rejection.to_string().contains(text),
                "{description}: {rejection:?} does not mention {text:?}"
            );
            let mut without_audit = state.clone();
            let entry = without_audit.audit.pop_back().unwrap();
            assert!(entry.result.starts_with("rejected: "), "{entry:?}");
            assert_eq!(
                without_audit, before,
                "{description}: refused but changed state"
            );
        }
        (got, want) => panic!("{description}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn apply_table() {
    let app = || Fqdn::new("app.demo.meridian.test").unwrap();
    let mut unknown_target = hostname("b.demo.meridian.test", &["us-east", "ap-south"]);
    unknown_target.ttl = 60;
    let mut bad_pin = hostname("c.demo.meridian.test", &["us-east"]);
    bad_pin.routing.pinned = Some(name("eu-west"));
    let mut zero_answers = hostname("d.demo.meridian.test", &["us-east"]);
    zero_answers.routing.max_answers = 0;
    let mut panic_pct = hostname("d.demo.meridian.test", &["us-east"]);
    panic_pct.routing.panic_threshold_percent = 101;
    let mut changed_cluster = cluster("us-east", "us", "127.0.1.1");
    changed_cluster.region = Region::new("us-2").unwrap();

    use RejectKind::*;
    let cases: Vec<(Action, Expected)> = vec![
        // Upserts: a new value changes state, the same value does not.
        (
            Action::PutCluster(cluster("ap-south", "ap", "127.0.1.3")),
            Ok(true),
        ),
        (
            Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
            Ok(false),
        ),
        (Action::PutCluster(changed_cluster), Ok(true)),
        (
            Action::PutHostname(hostname("app.demo.meridian.test", &["us-east", "eu-west"])),
            Ok(false),
        ),
        (
            Action::PutHostname(hostname("app.demo.meridian.test", &["us-east"])),
            Ok(true),
        ),
        (Action::PutRoute(Box::new(route("shop", "web"))), Ok(false)),
        (Action::PutRoute(Box::new(route("shop", "api"))), Ok(true)),
        // Deletes.
        (
            Action::DeleteCluster(name("nope")),
            Err((NotFound, "cluster nope does not exist")),
        ),
        (
            Action::DeleteCluster(name("us-east")),
            Err((Conflict, "still used by hostname app.demo.meridian.test")),
        ),
        (Action::DeleteHostname(app()), Ok(true)),
        (
            Action::DeleteHostname(Fqdn::new("x.demo.meridian.test").unwrap()),
            Err((NotFound, "hostname x.demo.meridian.test")),
        ),
        (
            Action::DeleteRoute(ObjectKey::new("shop", "web").unwrap()),
            Ok(true),
        ),
        (
            Action::DeleteRoute(ObjectKey::new("shop", "nope").unwrap()),
            Err((NotFound, "route shop/nope")),
        ),
        // Hostname validation.
        (
            Action::PutHostname(unknown_target),
            Err((
                Invalid,
                "targets[1].cluster: cluster ap-south does not exist",
            )),
        ),
        (
            Action::PutHostname(hostname("e.demo.meridian.test", &[])),
            Err((Invalid, "targets: must name at least one")),
        ),
        (
            Action::PutHostname(hostname("e.demo.meridian.test", &["us-east", "us-east"])),
            Err((
                Invalid,
                "targets[1].cluster: cluster us-east is listed more than once",
            )),
        ),
        (
            Action::PutHostname(bad_pin),
            Err((Invalid, "routing.pinned")),
        ),
        (
            Action::PutHostname(zero_answers),
            Err((Invalid, "routing.max_answers")),
        ),
        (
            Action::PutHostname(panic_pct),
            Err((Invalid, "routing.panic_threshold_percent")),
        ),
        // Health and reported addresses.
        (
            Action::SetHealth {
                cluster: name("us-east"),
                health: health(HealthVerdict::Unhealthy, "missed"),
            },
            Ok(true),
        ),
        (
            Action::SetHealth {
                cluster: name("us-east"),
                health: health(HealthVerdict::Unknown, "same verdict"),
            },
            Ok(false),
        ),
        (
            Action::SetHealth {
                cluster: name("nope"),
                health: health(HealthVerdict::Healthy, ""),
            },
            Err((NotFound, "cluster nope")),
        ),
        (
            Action::SetReportedAddresses {
                cluster: name("us-east"),
                addresses: vec!["10.0.0.1".parse().unwrap()],
            },
            Ok(true),
        ),
        (
            Action::SetReportedAddresses {
                cluster: name("us-east"),
                addresses: vec![],
            },
            Ok(false),
        ),
        (
            Action::SetReportedAddresses {
                cluster: name("nope"),
                addresses: vec![],
            },
            Err((NotFound, "cluster nope")),
        ),
        // Operator controls.
        (
            Action::SetDrained {
                cluster: name("eu-west"),
                drained: true,
            },
            Ok(true),
        ),
        (
            Action::SetDrained {
                cluster: name("eu-west"),
                drained: false,
            },
            Ok(false),
        ),
        (
            Action::SetDrained {
                cluster: name("nope"),
                drained: true,
            },
            Err((NotFound, "cluster nope")),
        ),
        (
            Action::SetPinned {
                fqdn: app(),
                cluster: Some(name("eu-west")),
            },
            Ok(true),
        ),
        (
            Action::SetPinned {
                fqdn: app(),
                cluster: None,
            },
            Ok(false),
        ),
        (
            Action::SetPinned {
                fqdn: app(),
                cluster: Some(name("ap-south")),
            },
            Err((Invalid, "routing.pinned: cluster ap-south")),
        ),
        (
            Action::SetPinned {
                fqdn: Fqdn::new("x.demo.meridian.test").unwrap(),
                cluster: None,
            },
            Err((NotFound, "hostname x.demo.meridian.test")),
        ),
        // Static records.
        (
            txt("_acme-challenge.demo.meridian.test", &["token"]),
            Ok(true),
        ),
        (
            record(
                "www.demo.meridian.test",
                "CNAME",
                vec![RecordData::Cname(app())],
            ),
            Ok(true),
        ),
        (
            record(
                "www.demo.meridian.test",
                "CNAME",
                vec![
                    RecordData::Cname(app()),
                    RecordData::Cname(Fqdn::new("x.demo.meridian.test").unwrap()),
                ],
            ),
            Err((Invalid, "values: a name has at most one CNAME")),
        ),
        (
            record(
                "app.demo.meridian.test",
                "A",
                vec![RecordData::A("10.0.0.1".parse().unwrap())],
            ),
            Err((Conflict, "has a hostname policy")),
        ),
        (
            record(
                "app.demo.meridian.test",
                "CNAME",
                vec![RecordData::Cname(
                    Fqdn::new("x.demo.meridian.test").unwrap(),
                )],
            ),
            Err((Conflict, "has a hostname policy")),
        ),
        (
            record(
                "a.demo.meridian.test",
                "A",
                vec![RecordData::Aaaa("::1".parse().unwrap())],
            ),
            Err((Invalid, "values[0]: is a AAAA record in a A record set")),
        ),
        (
            record("a.demo.meridian.test", "A", vec![]),
            Err((Invalid, "values: must hold at least one")),
        ),
        (
            record("a.demo.meridian.test", "SRV", vec![]),
            Err((Invalid, "type")),
        ),
        (
            record(
                "a.demo.meridian.test",
                "TXT",
                vec![RecordData::Txt(vec!["x".repeat(256)])],
            ),
            Err((Invalid, "values[0]")),
        ),
        (
            Action::DeleteRecordSet {
                name: app(),
                rtype: "TXT".into(),
            },
            Err((NotFound, "has no TXT records")),
        ),
        // Zone keys: the first wins.
        (
            Action::PutZoneKey {
                zone: Fqdn::new("demo.meridian.test").unwrap(),
                pkcs8: vec![7],
            },
            Ok(true),
        ),
        (
            Action::PutZoneKey {
                zone: Fqdn::new("demo.meridian.test").unwrap(),
                pkcs8: vec![],
            },
            Err((Invalid, "pkcs8")),
        ),
    ];
    for (action, expected) in cases {
        check(action, expected);
    }
}

fn record(name: &str, rtype: &str, values: Vec<RecordData>) -> Action {
    Action::PutRecordSet {
        name: Fqdn::new(name).unwrap(),
        rtype: rtype.into(),
        ttl: 300,
        values,
    }
}

fn txt(name: &str, strings: &[&str]) -> Action {
    record(
        name,
        "TXT",
        vec![RecordData::Txt(
            strings.iter().map(|s| s.to_string()).collect(),
        )],
    )
}

#[test]
fn cname_stands_alone() {
    let www = || Fqdn::new("www.demo.meridian.test").unwrap();
    let (state, outcomes) = run(vec![
        record(
            "www.demo.meridian.test",
            "CNAME",
            vec![RecordData::Cname(
                Fqdn::new("app.demo.meridian.test").unwrap(),
            )],
        ),
        txt("www.demo.meridian.test", &["v=spf1 -all"]),
        Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
        Action::PutHostname(hostname("www.demo.meridian.test", &["us-east"])),
        Action::DeleteRecordSet {
            name: www(),
            rtype: "CNAME".into(),
        },
        txt("www.demo.meridian.test", &["v=spf1 -all"]),
    ]);
    assert_eq!(outcomes[0], Outcome::Applied);
    assert!(
        matches!(&outcomes[1], Outcome::Rejected(r) if r.kind == RejectKind::Conflict && r.message.contains("has a CNAME")),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(&outcomes[3], Outcome::Rejected(r) if r.kind == RejectKind::Conflict),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(outcomes[4], Outcome::Applied);
    assert_eq!(outcomes[5], Outcome::Applied);
    assert_eq!(state.records.len(), 1);
}

#[test]
fn second_zone_key_is_refused() {
    let zone = Fqdn::new("demo.meridian.test").unwrap();
    let (state, outcomes) = run(vec![
        Action::PutZoneKey {
            zone: zone.clone(),
            pkcs8: vec![1],
        },
        Action::PutZoneKey {
            zone: zone.clone(),
            pkcs8: vec![2],
        },
    ]);
    assert_eq!(outcomes[0], Outcome::Applied);
    assert!(matches!(&outcomes[1], Outcome::Rejected(r) if r.kind == RejectKind::Conflict));
    assert_eq!(state.zone_keys[&zone].pkcs8, vec![1]);
    assert_eq!(state.zone_keys[&zone].created_unix_ms, 1_700_000_000_000);
}

#[test]
fn put_cluster_keeps_health_and_reported_addresses() {
    let (state, _) = run(vec![
        Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
        Action::SetHealth {
            cluster: name("us-east"),
            health: health(HealthVerdict::Healthy, "ok"),
        },
        Action::SetReportedAddresses {
            cluster: name("us-east"),
            addresses: vec!["10.1.1.1".parse().unwrap()],
        },
        Action::PutCluster(cluster("us-east", "us", "127.0.1.9")),
    ]);
    let record = &state.clusters[&name("us-east")];
    assert_eq!(record.health.verdict, HealthVerdict::Healthy);
    assert_eq!(
        record.reported_addresses,
        vec!["10.1.1.1".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        record.cluster.addresses,
        vec!["127.0.1.9".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn versions_follow_the_changes_they_describe() {
    let (state, _) = run(script());
    // The route was put at index 8; the TXT record (index 12) is the last DNS-relevant change.
    assert_eq!(state.shared_version, 8);
    assert_eq!(state.dns_version, 12);
    assert_eq!(state.shared_config().version, 8);
    assert_eq!(state.shared_config().http_routes.len(), 1);
    let view = state.dns_view();
    assert_eq!(view.applied_index, 12);
    assert_eq!(view.clusters.len(), 2);
    assert!(view.clusters[&name("eu-west")].cluster.drained);
    assert_eq!(view.zone_keys.len(), 1);
    assert_eq!(view.records.len(), 1);
    assert_eq!(view.records[0].ttl, 60);
}

#[test]
fn apply_is_deterministic() {
    let (a, outcomes_a) = run(script());
    let (b, outcomes_b) = run(script());
    assert_eq!(a, b);
    assert_eq!(outcomes_a, outcomes_b);
    // Two refusals at the end.
    assert!(matches!(outcomes_a[9], Outcome::Rejected(_)));
    assert!(matches!(outcomes_a[10], Outcome::Rejected(_)));
}

#[test]
fn audit_records_who_when_what() {
    let (state, _) = run(script());
    let first = &state.audit[0];
    assert_eq!(first.index, 1);
    assert_eq!(first.actor, "test");
    assert_eq!(first.unix_ms, 1_700_000_000_000);
    assert_eq!(first.action, "put cluster us-east");
    assert_eq!(first.result, "applied");
    let last = &state.audit[state.audit.len() - 2];
    assert_eq!(last.action, "delete route shop/missing");
    assert!(
        last.result
            .starts_with("rejected: route shop/missing does not exist")
    );
}

#[test]
fn audit_log_is_bounded() {
    let mut state = State::default();
    for i in 0..(AUDIT_CAPACITY as u64 + 10) {
        let mut c = cluster("us-east", "us", "127.0.1.1");
        c.drained = i % 2 == 0;
        state.apply(i + 1, cmd(Action::PutCluster(c)));
    }
    assert_eq!(state.audit.len(), AUDIT_CAPACITY);
    assert_eq!(state.audit[0].index, 11);
}

#[test]
fn commands_round_trip_through_their_encoding() {
    for action in script() {
        let command = cmd(action);
        let decoded = decode_command(&encode_command(&command)).unwrap();
        assert_eq!(decoded, command);
    }
}

#[test]
fn undecodable_commands_are_errors_not_panics() {
    let err = decode_command(&[0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(err.what, "command");
    // A command of a kind this build does not know decodes to no kind.
    let err = decode_command(&[]).unwrap_err();
    assert!(err.why.contains("unknown or missing command kind"), "{err}");
    // A bad name inside a known kind names the field.
    use prost::Message as _;
    let bad = meridian_proto::pb::StoreCommand {
        actor: String::new(),
        unix_ms: 0,
        kind: Some(meridian_proto::pb::store_command::Kind::PutCluster(
            meridian_proto::pb::Cluster {
                name: "Bad_Name".to_string(),
                region: "us".to_string(),
                addresses: vec![],
                drained: false,
            },
        )),
    };
    let err = decode_command(&bad.encode_to_vec()).unwrap_err();
    assert!(err.why.starts_with("put_cluster.name: "), "{err}");
}

#[test]
fn outcomes_round_trip() {
    for outcome in [
        Outcome::Applied,
        Outcome::Unchanged,
        Outcome::Rejected(Rejection::invalid("targets[0].cluster", "nope")),
        Outcome::Rejected(Rejection::not_found("cluster x does not exist")),
        Outcome::Rejected(Rejection::conflict("in use")),
    ] {
        assert_eq!(
            decode_outcome(&encode_outcome(7, &outcome)).unwrap(),
            (outcome, 7)
        );
    }
}

#[test]
fn snapshot_restores_an_equal_state() {
    let (state, _) = run(script());
    let restored = decode_snapshot(&encode_snapshot(&state)).unwrap();
    assert_eq!(restored, state);
}

#[test]
fn newer_snapshot_formats_are_refused() {
    use prost::Message as _;
    let snapshot = meridian_proto::pb::StoreSnapshot {
        format_version: 99,
        ..Default::default()
    };
    let err = decode_snapshot(&snapshot.encode_to_vec()).unwrap_err();
    assert!(err.why.contains("format_version 99"), "{err}");
}

#[test]
fn machine_publishes_views_after_each_batch() {
    let mut registry = Registry::default();
    let (mut machine, watches, mut feeds) = StoreMachine::new(&mut registry);
    for (i, action) in script().into_iter().enumerate() {
        let outcome = machine.apply(i as u64 + 1, &encode_command(&cmd(action)));
        assert_eq!(decode_outcome(&outcome).unwrap().1, i as u64 + 1);
    }
    // Nothing is published until the batch ends.
    assert_eq!(watches.view.borrow().applied_index, 0);
    machine.applied(12);
    assert_eq!(watches.view.borrow().applied_index, 12);
    assert_eq!(watches.view.borrow().state.clusters.len(), 2);
    // DNS views come from the feed.
    assert!(feeds.dns.publish_now());
    assert!(
        !feeds.dns.publish_now(),
        "nothing DNS-relevant changed since"
    );
    assert_eq!(watches.dns.borrow().applied_index, 12);
    // And what agents receive from the shared feed.
    assert_eq!(watches.shared.borrow().version, 0);
    assert!(feeds.shared.publish_now());
    assert!(!feeds.shared.publish_now(), "no shared change since");
    assert_eq!(watches.shared.borrow().version, 8);

    // Garbage is refused with an outcome, and the empty raft entry is a no-op.
    let (outcome, _) = decode_outcome(&machine.apply(13, &[0xff, 0x01])).unwrap();
    assert!(matches!(outcome, Outcome::Rejected(r) if r.kind == RejectKind::Invalid));
    let (outcome, _) = decode_outcome(&machine.apply(14, &[])).unwrap();
    assert_eq!(outcome, Outcome::Unchanged);

    // Snapshot and restore into a fresh machine.
    let snapshot = machine.snapshot();
    let (mut other, other_watches, mut other_feeds) = StoreMachine::new(&mut Registry::default());
    other.restore(14, &snapshot).unwrap();
    other_feeds.dns.publish_now();
    other_feeds.shared.publish_now();
    assert_eq!(
        other_watches.view.borrow().state,
        watches.view.borrow().state
    );
    assert_eq!(*other_watches.dns.borrow(), *watches.dns.borrow());
    assert_eq!(*other_watches.shared.borrow(), *watches.shared.borrow());
    assert!(other.restore(15, b"\xff\xff").is_err());
}

// === per-hostname serving ===

fn serving(cluster: &str, serving: bool, reason: &str) -> Action {
    Action::SetHostnameServing {
        cluster: name(cluster),
        fqdn: Fqdn::new("app.demo.meridian.test").unwrap(),
        serving,
        reason: reason.to_string(),
    }
}

#[test]
fn hostname_serving_changes_only_on_transitions() {
    let app = Fqdn::new("app.demo.meridian.test").unwrap();
    let mut state = base();
    let dns_before = state.dns_version;
    assert_eq!(
        state.apply(10, cmd(serving("eu-west", false, "0 of 2 ready"))),
        Outcome::Applied
    );
    assert_eq!(state.dns_version, 10, "DNS depends on it");
    let record = &state.clusters[&name("eu-west")].hostnames[&app];
    assert!(!record.serving);
    assert_eq!(record.reason, "0 of 2 ready");
    assert_eq!(record.since_unix_ms, 1_700_000_000_000);
    let view = state.dns_view();
    assert_eq!(
        view.clusters[&name("eu-west")].unserved_hostnames[&app],
        "0 of 2 ready"
    );
    assert!(
        view.clusters[&name("us-east")]
            .unserved_hostnames
            .is_empty()
    );
    assert!(dns_before < state.dns_version);

    // The same state with another reason is no change: `since` keeps the transition's time.
    assert_eq!(
        state.apply(11, cmd(serving("eu-west", false, "0 of 3 ready"))),
        Outcome::Unchanged
    );
    assert_eq!(state.dns_version, 10);
    assert_eq!(
        state.clusters[&name("eu-west")].hostnames[&app].reason,
        "0 of 2 ready"
    );
    assert_eq!(
        state.apply(12, cmd(serving("eu-west", true, "2 of 2 ready"))),
        Outcome::Applied
    );
    assert!(
        state.dns_view().clusters[&name("eu-west")]
            .unserved_hostnames
            .is_empty()
    );
    // A serving state counts as a change the first time too (never judged before).
    assert_eq!(
        state.apply(13, cmd(serving("us-east", true, "1 of 1 ready"))),
        Outcome::Applied
    );
}

#[test]
fn hostname_serving_is_refused_for_unknown_or_untargeted_names() {
    use RejectKind::*;
    check(
        Action::SetHostnameServing {
            cluster: name("us-east"),
            fqdn: Fqdn::new("x.demo.meridian.test").unwrap(),
            serving: false,
            reason: String::new(),
        },
        Err((NotFound, "hostname x.demo.meridian.test does not exist")),
    );
    check(
        serving("ap-south", false, ""),
        Err((Conflict, "cluster ap-south is not a target")),
    );
}

#[test]
fn policy_changes_forget_serving_states_of_dropped_targets() {
    let app = Fqdn::new("app.demo.meridian.test").unwrap();
    let (state, outcomes) = run(vec![
        Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
        Action::PutCluster(cluster("eu-west", "eu", "127.0.1.2")),
        Action::PutHostname(hostname("app.demo.meridian.test", &["us-east", "eu-west"])),
        serving("us-east", true, "ok"),
        serving("eu-west", false, "down"),
        // eu-west is no longer a target: its state goes, us-east's stays.
        Action::PutHostname(hostname("app.demo.meridian.test", &["us-east"])),
    ]);
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Applied),
        "{outcomes:?}"
    );
    assert!(state.clusters[&name("eu-west")].hostnames.is_empty());
    assert!(state.clusters[&name("us-east")].hostnames[&app].serving);
    let (state, _) = run(vec![
        Action::PutCluster(cluster("us-east", "us", "127.0.1.1")),
        Action::PutHostname(hostname("app.demo.meridian.test", &["us-east"])),
        serving("us-east", false, "down"),
        Action::DeleteHostname(app.clone()),
    ]);
    assert!(state.clusters[&name("us-east")].hostnames.is_empty());
}

// === certificates ===

/// A self-signed certificate for `names` and its key, as PEM.
fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn certificate(ns: &str, n: &str, chain: &str, key: &str) -> TlsCertificate {
    TlsCertificate {
        key: ObjectKey::new(ns, n).unwrap(),
        cert_chain_pem: chain.to_string(),
        private_key_pem: key.to_string(),
    }
}

use meridian_proto::model::gateway::TlsCertificate;

#[test]
fn certificates_are_validated_shared_and_audited_without_keys() {
    let (chain, key) = self_signed(&["*.demo.meridian.test", "demo.meridian.test"]);
    let (_, other_key) = self_signed(&["other.test"]);
    let good = certificate("meridian-system", "demo-tls", &chain, &key);
    let info = check_certificate(&good).unwrap();
    assert_eq!(
        info.dns_names,
        ["*.demo.meridian.test", "demo.meridian.test"]
    );
    assert_eq!(info.chain_length, 1);
    assert_eq!(info.sha256_fingerprint.len(), 32 * 3 - 1);
    assert!(info.not_after_unix > info.not_before_unix);

    use RejectKind::*;
    let cases: Vec<(TlsCertificate, &str, &str)> = vec![
        (
            certificate("a", "b", &chain, &other_key),
            "private_key_pem",
            "does not belong",
        ),
        (
            certificate("a", "b", "not pem", &key),
            "cert_chain_pem",
            "no `-----BEGIN CERTIFICATE-----` block",
        ),
        (
            certificate(
                "a",
                "b",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &key,
            ),
            "cert_chain_pem",
            "not valid X.509",
        ),
        (
            certificate(
                "a",
                "b",
                &chain,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            "private_key_pem",
            "not a supported key",
        ),
        (
            certificate("a", "b", &chain, "garbage"),
            "private_key_pem",
            "not a PEM private key",
        ),
        (
            certificate("a", "b", &format!("{chain}{key}"), &key),
            "cert_chain_pem",
            "contains a private key",
        ),
    ];
    for (cert, field, text) in cases {
        let rejection = check_certificate(&cert).unwrap_err();
        assert_eq!(rejection.kind, Invalid);
        assert_eq!(rejection.field.as_deref(), Some(field), "{rejection}");
        assert!(rejection.message.contains(text), "{rejection}");
        assert!(!rejection.to_string().contains("AAAA"), "{rejection}");
        // `apply` refuses it the same way and never audits key material.
        let mut state = base();
        let outcome = state.apply(50, cmd(Action::PutCertificate(Box::new(cert))));
        assert!(matches!(outcome, Outcome::Rejected(r) if r.field.as_deref() == Some(field)));
        let entry = state.audit.back().unwrap();
        let secret = key.lines().nth(1).unwrap();
        assert!(
            !format!("{entry:?}").contains(secret) && !format!("{entry:?}").contains("AAAA"),
            "{entry:?}"
        );
    }

    let mut state = base();
    let shared_before = state.shared_version;
    assert_eq!(
        state.apply(60, cmd(Action::PutCertificate(Box::new(good.clone())))),
        Outcome::Applied
    );
    assert_eq!(state.shared_version, 60);
    assert!(shared_before < 60);
    assert_eq!(state.shared_config().certificates, vec![good.clone()]);
    let entry = state.audit.back().unwrap();
    assert_eq!(entry.action, "put certificate meridian-system/demo-tls");
    assert!(!format!("{entry:?}").contains(key.lines().nth(1).unwrap()));
    assert_eq!(
        state.apply(61, cmd(Action::PutCertificate(Box::new(good.clone())))),
        Outcome::Unchanged
    );
    check_snapshot_and_encoding(&state, &good);
    assert_eq!(
        state.apply(62, cmd(Action::DeleteCertificate(good.key.clone()))),
        Outcome::Applied
    );
    assert_eq!(state.shared_version, 62);
    assert!(state.shared_config().certificates.is_empty());
    assert!(matches!(
        state.apply(63, cmd(Action::DeleteCertificate(good.key.clone()))),
        Outcome::Rejected(r) if r.kind == NotFound
    ));
}

fn check_snapshot_and_encoding(state: &State, cert: &TlsCertificate) {
    let mut state = state.clone();
    state.apply(70, cmd(serving("eu-west", false, "down")));
    assert_eq!(decode_snapshot(&encode_snapshot(&state)).unwrap(), state);
    for action in [
        Action::PutCertificate(Box::new(cert.clone())),
        Action::DeleteCertificate(cert.key.clone()),
        serving("eu-west", true, "2 of 2 ready"),
    ] {
        let command = cmd(action);
        assert_eq!(decode_command(&encode_command(&command)).unwrap(), command);
    }
}

#[test]
fn views_stay_exact_whether_batches_replay_a_spare_copy_or_clone() {
    // A reference state applying every command once, against the machine's published views:
    // batches where no reader holds the previous view (the spare copy is replayed), where one
    // does (the machine clones), a batch that changes nothing, and a restore in the middle.
    let mut registry = Registry::default();
    let (mut machine, watches, _feed) = StoreMachine::new(&mut registry);
    let mut reference = State::default();
    let mut index = 0u64;
    let mut held = Vec::new();
    for round in 0..12u64 {
        for i in 0..3u64 {
            index += 1;
            let action = Action::PutCluster(cluster(
                &format!("c{}", (round * 3 + i) % 7),
                if round % 2 == 0 { "us" } else { "eu" },
                "10.0.0.1",
            ));
            reference.apply(index, cmd(action.clone()));
            machine.apply(index, &encode_command(&cmd(action)));
        }
        machine.applied(index);
        assert_eq!(watches.view.borrow().applied_index, index);
        assert_eq!(*watches.view.borrow().state, reference, "round {round}");
        if round % 3 == 1 {
            // A reader keeps this view: the next batch cannot reuse it.
            held.push(watches.view.borrow().clone());
        }
        if round == 6 {
            let snapshot = machine.snapshot();
            machine.restore(index, &snapshot).unwrap();
            assert_eq!(*watches.view.borrow().state, reference);
        }
    }
    // A repeated PUT changes nothing: the view only moves its index.
    index += 1;
    let same = Action::PutCluster(cluster("c0", "eu", "10.0.0.1"));
    reference.apply(index, cmd(same.clone()));
    machine.apply(index, &encode_command(&cmd(same)));
    machine.applied(index);
    assert_eq!(*watches.view.borrow().state, reference);
    index += 1;
    let next = Action::PutCluster(cluster("c9", "us", "10.0.0.1"));
    reference.apply(index, cmd(next.clone()));
    machine.apply(index, &encode_command(&cmd(next)));
    machine.applied(index);
    assert_eq!(*watches.view.borrow().state, reference);
    let text = {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    assert!(text.contains("how=\"replayed\""), "{text}");
    assert!(text.contains("how=\"cloned\""), "{text}");
    drop(held);
}

#[test]
fn a_reader_that_holds_each_view_for_a_batch_costs_one_clone() {
    // Like the DNS feed under a stream of writes: it holds the latest view while the next
    // batch is applied. The machine clones once, then works with one more spare copy.
    let mut registry = Registry::default();
    let (mut machine, watches, _feed) = StoreMachine::new(&mut registry);
    let mut reference = State::default();
    let mut held = None;
    for index in 1..=40u64 {
        let action = Action::PutCluster(cluster(&format!("c{}", index % 5), "us", "10.0.0.1"));
        reference.apply(index, cmd(action.clone()));
        machine.apply(index, &encode_command(&cmd(action)));
        machine.applied(index);
        assert_eq!(*watches.view.borrow().state, reference, "index {index}");
        held = Some(watches.view.borrow().clone());
    }
    drop(held);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let cloned = text
        .lines()
        .find(|line| line.contains("how=\"cloned\""))
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or("0");
    assert_eq!(cloned, "1", "{text}");
}

#[test]
fn the_dns_view_holds_only_clusters_a_hostname_targets() {
    let mut state = base();
    assert_eq!(
        state.apply(
            20,
            cmd(Action::PutCluster(cluster("ap-south", "ap", "127.0.1.3")))
        ),
        Outcome::Applied
    );
    let view = state.dns_view();
    let names: Vec<&str> = view.clusters.keys().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        ["eu-west", "us-east"],
        "no hostname targets ap-south yet"
    );

    assert_eq!(
        state.apply(
            21,
            cmd(Action::PutHostname(hostname(
                "api.demo.meridian.test",
                &["ap-south"]
            )))
        ),
        Outcome::Applied
    );
    let view = state.dns_view();
    assert_eq!(
        view.clusters[&name("ap-south")].cluster.region.as_str(),
        "ap"
    );
    assert_eq!(view.clusters.len(), 3);
}

/// The reasons a cluster's record holds, per route name, and its version.
fn route_reasons(state: &State, cluster: &str) -> Option<(u64, Vec<(String, String)>)> {
    let record = state.clusters[&name(cluster)].shared.as_ref()?;
    Some((
        record.shared_version,
        record
            .routes
            .iter()
            .map(|(key, entry)| {
                (
                    key.name.clone(),
                    entry.parents[0].conditions[0].reason.clone(),
                )
            })
            .collect(),
    ))
}

#[test]
fn route_status_applies_as_a_delta_and_never_outlives_its_route() {
    let mut state = base();
    state.apply(5, cmd(Action::PutRoute(Box::new(route("shop", "cart")))));
    let audit_before = state.audit.len();
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };

    // The first report of a cluster; a route that does not exist is not recorded.
    let outcome = state.apply(
        6,
        cmd(route_status(
            "eu-west",
            5,
            &[
                ("web", "ResolvedRefs"),
                ("cart", "BackendNotFound"),
                ("gone", "ResolvedRefs"),
            ],
            &[],
        )),
    );
    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(
        route_reasons(&state, "eu-west"),
        Some((
            5,
            pairs(&[("cart", "BackendNotFound"), ("web", "ResolvedRefs")])
        ))
    );
    assert_eq!(route_reasons(&state, "us-east"), None);
    let since = state.clusters[&name("eu-west")]
        .shared
        .as_ref()
        .unwrap()
        .routes[&ObjectKey::new("shop", "web").unwrap()]
        .since_unix_ms;

    // A delta changes only what it names; the same content again is no change.
    let mut later = cmd(route_status("eu-west", 5, &[("cart", "ResolvedRefs")], &[]));
    later.unix_ms += 1000;
    assert_eq!(state.apply(7, later.clone()), Outcome::Applied);
    assert_eq!(
        route_reasons(&state, "eu-west"),
        Some((
            5,
            pairs(&[("cart", "ResolvedRefs"), ("web", "ResolvedRefs")])
        ))
    );
    let routes = &state.clusters[&name("eu-west")]
        .shared
        .as_ref()
        .unwrap()
        .routes;
    assert_eq!(
        routes[&ObjectKey::new("shop", "web").unwrap()].since_unix_ms,
        since
    );
    assert_eq!(
        routes[&ObjectKey::new("shop", "cart").unwrap()].since_unix_ms,
        later.unix_ms
    );
    assert_eq!(state.apply(8, later), Outcome::Unchanged);

    // A new version alone is a change; removals drop entries.
    assert_eq!(
        state.apply(9, cmd(route_status("eu-west", 8, &[], &["cart"]))),
        Outcome::Applied
    );
    assert_eq!(
        route_reasons(&state, "eu-west"),
        Some((8, pairs(&[("web", "ResolvedRefs")])))
    );

    // Deleting a route drops its status everywhere, so a route put again starts clean.
    state.apply(
        10,
        cmd(Action::DeleteRoute(ObjectKey::new("shop", "web").unwrap())),
    );
    assert_eq!(route_reasons(&state, "eu-west"), Some((8, vec![])));

    // Reports are observations, not changes anyone made: none of them is audited.
    assert_eq!(state.audit.len(), audit_before + 1, "only the delete");

    // An unknown cluster is refused (and that is audited).
    let outcome = state.apply(11, cmd(route_status("mars", 8, &[], &[])));
    assert!(
        matches!(&outcome, Outcome::Rejected(r) if r.kind == RejectKind::NotFound),
        "{outcome:?}"
    );

    // The record survives a snapshot, and the command its encoding.
    let restored = decode_snapshot(&encode_snapshot(&state)).unwrap();
    assert_eq!(restored, state);
    let command = cmd(route_status(
        "eu-west",
        9,
        &[("web", "BackendNotFound")],
        &["cart"],
    ));
    assert_eq!(decode_command(&encode_command(&command)).unwrap(), command);
}

#[test]
fn certificate_uses_are_recorded_whole_and_go_with_their_certificate() {
    use meridian_proto::model::{CertificateUse, SharedObjectsStatus};
    let mut state = base();
    let (chain, key) = self_signed(&["*.demo.meridian.test"]);
    let cert = certificate("meridian-system", "demo-tls", &chain, &key);
    assert_eq!(
        state.apply(5, cmd(Action::PutCertificate(Box::new(cert.clone())))),
        Outcome::Applied
    );
    let usage = |certificate: &str, listener: &str| CertificateUse {
        certificate: ObjectKey::new("meridian-system", certificate).unwrap(),
        gateway: ObjectKey::new("meridian-system", "global").unwrap(),
        listener: listener.into(),
    };
    let report = |certificates: Vec<CertificateUse>| Action::SetSharedStatus {
        cluster: name("eu-west"),
        changed: SharedObjectsStatus {
            shared_version: 5,
            routes: Vec::new(),
            certificates,
            rejected: Vec::new(),
        },
        removed: Vec::new(),
    };
    let uses = |state: &State| -> Vec<String> {
        state.clusters[&name("eu-west")]
            .shared
            .as_ref()
            .map(|s| {
                s.certificates
                    .iter()
                    .map(|u| format!("{}:{}", u.certificate, u.listener))
                    .collect()
            })
            .unwrap_or_default()
    };

    // Sorted and deduplicated; a certificate the hub does not have is in use nowhere.
    let outcome = state.apply(
        6,
        cmd(report(vec![
            usage("demo-tls", "https-b"),
            usage("local-only", "https"),
            usage("demo-tls", "https-a"),
            usage("demo-tls", "https-a"),
        ])),
    );
    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(
        uses(&state),
        [
            "meridian-system/demo-tls:https-a",
            "meridian-system/demo-tls:https-b"
        ]
    );
    // The list is whole each time: a listener that stopped serving it goes.
    state.apply(7, cmd(report(vec![usage("demo-tls", "https-b")])));
    assert_eq!(uses(&state), ["meridian-system/demo-tls:https-b"]);
    assert_eq!(
        state.apply(8, cmd(report(vec![usage("demo-tls", "https-b")]))),
        Outcome::Unchanged
    );

    // Deleting the certificate (forced past the API's check) forgets its uses.
    state.apply(9, cmd(Action::DeleteCertificate(cert.key.clone())));
    assert!(uses(&state).is_empty());
    let restored = decode_snapshot(&encode_snapshot(&state)).unwrap();
    assert_eq!(restored, state);
}
