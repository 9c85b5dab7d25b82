//! Admin API request validation: every 400 names the bad field.

use meridian_proto::model::{AllUnhealthy, ClusterName, Fqdn, ObjectKey};

use super::body::{ClusterBody, HostnameJson, MemberBody, parse_json};
use super::{ApiError, parse_route};

fn cluster(body: &str) -> Result<meridian_proto::model::Cluster, ApiError> {
    parse_json::<ClusterBody>(body.as_bytes())?.into_model(&ClusterName::new("us-east").unwrap())
}

fn hostname(body: &str) -> Result<meridian_proto::model::HostnamePolicy, ApiError> {
    parse_json::<HostnameJson>(body.as_bytes())?
        .into_model(&Fqdn::new("app.demo.meridian.test").unwrap())
}

/// Asserts that `result` is a 400 naming `field` in its field and its message.
fn check_400<T: std::fmt::Debug>(result: Result<T, ApiError>, field: &str, text: &str) {
    let err = result.expect_err("accepted an invalid body");
    assert_eq!(err.status, 400, "{err:?}");
    assert!(
        err.text().contains(field) && err.text().contains(text),
        "{:?} does not name {field:?} / {text:?}",
        err.text()
    );
}

#[test]
fn valid_cluster_bodies() {
    let c = cluster(r#"{"region":"us","addresses":["127.0.1.1","::1"]}"#).unwrap();
    assert_eq!(c.name.as_str(), "us-east");
    assert_eq!(c.addresses.len(), 2);
    assert!(!c.drained);
    // A GET answer can be PUT back: read-only fields are ignored.
    let c = cluster(
        r#"{"name":"us-east","region":"us","addresses":[],"drained":true,
            "health":{"verdict":"healthy"},"reported_addresses":["10.0.0.1"]}"#,
    )
    .unwrap();
    assert!(c.drained);
}

#[test]
fn invalid_cluster_bodies_name_the_field() {
    let cases = [
        (r#"{"addresses":[]}"#, "region", "missing field"),
        (r#"{"region":"US"}"#, "region", "invalid region"),
        (
            r#"{"region":"us","addresses":["nope"]}"#,
            "addresses[0]",
            "not an IP address",
        ),
        (
            r#"{"region":"us","addresses":["10.0.0.1","10.0.0.1"]}"#,
            "addresses[1]",
            "more than once",
        ),
        (
            r#"{"region":"us","drained":"yes"}"#,
            "drained",
            "invalid type",
        ),
        (
            r#"{"region":"us","colour":"blue"}"#,
            "colour",
            "unknown field",
        ),
        (
            r#"{"region":"us","name":"eu-west"}"#,
            "name",
            "does not match",
        ),
        (r#"{"region": "us""#, "EOF", "EOF"),
    ];
    for (body, field, text) in cases {
        check_400(cluster(body), field, text);
    }
}

#[test]
fn hostname_defaults_and_full_shape() {
    let policy = hostname(r#"{"targets":[{"cluster":"us-east"}]}"#).unwrap();
    assert_eq!(policy.ttl, 30);
    assert_eq!(policy.targets[0].weight, 1);
    assert!(policy.routing.geo);
    assert_eq!(policy.routing.max_answers, 1);

    let body = r#"{
        "fqdn": "APP.demo.meridian.test.",
        "ttl": 10,
        "targets": [{"cluster": "us-east", "weight": 3}, {"cluster": "eu-west", "weight": 0}],
        "routing": {"geo": false, "region_order": ["us", "eu"], "max_answers": 2,
                    "when_all_unhealthy": "fail-closed", "panic_threshold_percent": 30,
                    "pinned": "eu-west"}
    }"#;
    let policy = hostname(body).unwrap();
    assert_eq!(policy.routing.when_all_unhealthy, AllUnhealthy::FailClosed);
    assert_eq!(policy.routing.pinned.as_ref().unwrap().as_str(), "eu-west");
    // The JSON form round-trips.
    let json = serde_json::to_string(&HostnameJson::from(&policy)).unwrap();
    assert_eq!(hostname(&json).unwrap(), policy);
}

#[test]
fn invalid_hostname_bodies_name_the_field() {
    let cases = [
        (r#"{}"#, "targets", "missing field"),
        (
            r#"{"targets":[{"cluster":"Bad"}]}"#,
            "targets[0].cluster",
            "invalid cluster name",
        ),
        (
            r#"{"targets":[{"cluster":"a","weight":-1}]}"#,
            "targets[0].weight",
            "invalid value",
        ),
        (r#"{"targets":[],"ttl":"long"}"#, "ttl", "invalid type"),
        (
            r#"{"targets":[],"routing":{"max_answers":"x"}}"#,
            "routing.max_answers",
            "invalid type",
        ),
        (
            r#"{"targets":[],"routing":{"when_all_unhealthy":"panic"}}"#,
            "routing.when_all_unhealthy",
            "neither",
        ),
        (
            r#"{"targets":[],"routing":{"panic_threshold_percent":101}}"#,
            "routing.panic_threshold_percent",
            "0..=100",
        ),
        (
            r#"{"targets":[],"routing":{"region_order":["us","EU"]}}"#,
            "routing.region_order[1]",
            "invalid region",
        ),
        (
            r#"{"targets":[],"routing":{"pinned":"No"}}"#,
            "routing.pinned",
            "invalid cluster name",
        ),
        (
            r#"{"targets":[],"routing":{"sticky":true}}"#,
            "routing.sticky",
            "unknown field",
        ),
        (
            r#"{"targets":[],"fqdn":"other.demo.meridian.test"}"#,
            "fqdn",
            "does not match",
        ),
    ];
    for (body, field, text) in cases {
        check_400(hostname(body), field, text);
    }
}

#[test]
fn member_bodies() {
    let parse = |body: &str| parse_json::<MemberBody>(body.as_bytes())?.into_parts();
    assert_eq!(
        parse(r#"{"id":4,"addr":"127.0.0.1:7004"}"#).unwrap(),
        (4, "127.0.0.1:7004".parse().unwrap())
    );
    check_400(parse(r#"{"id":0,"addr":"127.0.0.1:7004"}"#), "id", "0");
    assert_eq!(
        parse(r#"{"id":4,"addr":"meridian-hub-3.meridian-hub-peers.ns.svc:7001"}"#)
            .unwrap()
            .1
            .to_string(),
        "meridian-hub-3.meridian-hub-peers.ns.svc:7001"
    );
    check_400(parse(r#"{"id":4,"addr":"localhost"}"#), "addr", "no port");
    check_400(
        parse(r#"{"id":4,"addr":"hub_3:7001"}"#),
        "addr",
        "not a peer address",
    );
    check_400(
        parse(r#"{"id":4,"addr":"0.0.0.0:7004"}"#),
        "addr",
        "cannot be reached",
    );
    check_400(parse(r#"{"addr":"127.0.0.1:7004"}"#), "id", "missing field");
}

#[test]
fn route_bodies_take_their_key_from_the_path() {
    let key = ObjectKey::new("shop", "web").unwrap();
    let body = r#"{"spec":{"hostnames":["app.demo.meridian.test"],
        "rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],
                  "backendRefs":[{"name":"echo","port":8080}]}]}}"#;
    let route = parse_route(&key, body.as_bytes()).unwrap();
    assert_eq!(route.key, key);
    assert_eq!(route.hostnames, ["app.demo.meridian.test"]);

    let mismatched = r#"{"metadata":{"namespace":"other"},"spec":{}}"#;
    check_400(
        parse_route(&key, mismatched.as_bytes()),
        "metadata.namespace",
        "does not match",
    );
    check_400(parse_route(&key, b"[1,2]"), "", "JSON object");
    let bad_path =
        r#"{"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"no-slash"}}]}]}}"#;
    check_400(
        parse_route(&key, bad_path.as_bytes()),
        "spec.rules[0].matches[0].path",
        "",
    );
    // A misspelt field would otherwise leave the rule matching everything.
    let typo = r#"{"spec":{"rules":[{"matchez":[{"path":{"type":"PathPrefix","value":"/secret"}}],
        "backendRefs":[{"name":"echo","port":8080}]}]}}"#;
    check_400(
        parse_route(&key, typo.as_bytes()),
        "spec.rules[0].matchez",
        "unknown field",
    );
    check_400(
        parse_route(&key, br#"{"spec":{"rulez":[]}}"#),
        "spec.rulez",
        "unknown field",
    );
}

#[test]
fn record_set_bodies() {
    use super::body::RecordSetJson;
    use meridian_proto::model::RecordData;
    let name = Fqdn::new("www.demo.meridian.test").unwrap();
    let parse = |rtype: &str, body: &str| {
        parse_json::<RecordSetJson>(body.as_bytes())?.into_model(&name, rtype)
    };
    let set = parse("A", r#"{"values":["192.0.2.1","192.0.2.2"]}"#).unwrap();
    assert_eq!(set.ttl, 300);
    assert_eq!(set.values.len(), 2);
    let set = parse(
        "MX",
        r#"{"ttl":60,"values":["10 mail.demo.meridian.test"]}"#,
    )
    .unwrap();
    assert!(matches!(
        &set.values[0],
        RecordData::Mx { preference: 10, .. }
    ));
    let long = "x".repeat(300);
    let set = parse("TXT", &format!(r#"{{"values":["{long}", ["a","b"]]}}"#)).unwrap();
    assert_eq!(
        set.values[0],
        RecordData::Txt(vec!["x".repeat(255), "x".repeat(45)])
    );
    assert_eq!(set.values[1], RecordData::Txt(vec!["a".into(), "b".into()]));
    // The JSON form round-trips.
    let json = serde_json::to_string(&RecordSetJson::from_model(&name, "TXT", &set)).unwrap();
    assert_eq!(parse("TXT", &json).unwrap(), set);

    check_400(
        parse("A", r#"{"values":["::1"]}"#),
        "values[0]",
        "not an IPv4 address",
    );
    check_400(
        parse("AAAA", r#"{"values":[7]}"#),
        "values[0]",
        "must be a string",
    );
    check_400(
        parse("MX", r#"{"values":["mail.example.com"]}"#),
        "values[0]",
        "<preference>",
    );
    check_400(
        parse("CNAME", r#"{"values":["bad..name"]}"#),
        "values[0]",
        "empty label",
    );
    check_400(
        parse("A", r#"{"type":"AAAA","values":[]}"#),
        "type",
        "does not match",
    );
    check_400(parse("A", r#"{"ttl":30}"#), "values", "missing field");
}

#[test]
fn name_servers_of_a_zone_refuse_policies_and_addresses() {
    use super::{NameUse, check_not_nameserver};
    use crate::dns::{DnsConfig, NameserverConfig, ZoneConfig};

    // example.com is served by ns1.example.com (in the zone, with glue) and by
    // ns.other.net (another zone's name: the hub serves no address for it).
    let config = DnsConfig {
        zones: vec![ZoneConfig {
            origin: "example.com".into(),
            nameservers: ["ns1.example.com", "ns.other.net"]
                .into_iter()
                .map(|name| NameserverConfig {
                    name: name.into(),
                    addresses: vec!["192.0.2.53".parse().unwrap()],
                })
                .collect(),
            soa: Default::default(),
            ttl: 3600,
            dnssec: false,
        }],
        ..Default::default()
    };
    let check = |name: &str, what| check_not_nameserver(&config, &Fqdn::new(name).unwrap(), what);
    let cases = [
        (
            "ns1.example.com",
            NameUse::Policy,
            Some("it cannot carry a hostname policy"),
        ),
        (
            "ns1.example.com",
            NameUse::Records("A"),
            Some("it cannot carry A records"),
        ),
        (
            "ns1.example.com",
            NameUse::Records("AAAA"),
            Some("it cannot carry AAAA records"),
        ),
        (
            "ns1.example.com",
            NameUse::Records("CNAME"),
            Some("it cannot carry a CNAME"),
        ),
        ("ns1.example.com", NameUse::Records("TXT"), None),
        (
            "ns.other.net",
            NameUse::Policy,
            Some("it cannot carry a hostname policy"),
        ),
        (
            "ns.other.net",
            NameUse::Records("CNAME"),
            Some("it cannot carry a CNAME"),
        ),
        // Out of the zone, records are how its address gets served (when the hub serves it).
        ("ns.other.net", NameUse::Records("A"), None),
        ("ns2.example.com", NameUse::Policy, None),
        ("app.ns1.example.com", NameUse::Policy, None),
    ];
    for (name, what, refused) in cases {
        match (check(name, what), refused) {
            (Ok(()), None) => {}
            (Err(err), Some(why)) => {
                assert_eq!(err.status, 409, "{name} {what:?}: {err:?}");
                assert!(
                    err.text().contains(&format!(
                        "{name} is a name server of zone example.com (hub config)"
                    )) && err.text().contains(why),
                    "{name} {what:?}: {}",
                    err.text()
                );
            }
            (result, _) => panic!("{name} {what:?}: {result:?}, expected refused: {refused:?}"),
        }
    }
}

#[test]
fn cluster_addresses_no_client_can_reach_are_refused() {
    let cases = [
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("::", "unspecified"),
        ("ff02::1", "multicast"),
        ("::ffff:1.2.3.4", "list the IPv4 address 1.2.3.4"),
    ];
    for (address, why) in cases {
        let body = format!(r#"{{"region":"us","addresses":["10.0.0.1","{address}"]}}"#);
        check_400(cluster(&body), "addresses[1]", why);
    }
    // Loopback, private and documentation addresses are fine (tests and labs use them).
    cluster(r#"{"region":"us","addresses":["127.0.1.1","10.0.0.1","2001:db8::1","fd00::1"]}"#)
        .unwrap();

    let many: Vec<String> = (0..65)
        .map(|i| format!("\"10.0.{}.{}\"", i / 200, i % 200 + 1))
        .collect();
    let body = format!(r#"{{"region":"us","addresses":[{}]}}"#, many.join(","));
    check_400(cluster(&body), "addresses", "at most 64");
    let body = format!(
        r#"{{"region":"us","addresses":[{}]}}"#,
        many[..64].join(",")
    );
    assert_eq!(cluster(&body).unwrap().addresses.len(), 64);
}

#[test]
fn record_sets_that_cannot_be_served_whole_are_refused() {
    use super::body::RecordSetJson;

    let name = Fqdn::new("huge.demo.meridian.test").unwrap();
    let set = |rtype: &str, values: Vec<String>| {
        let body = serde_json::json!({ "values": values }).to_string();
        parse_json::<RecordSetJson>(body.as_bytes())?.into_model(&name, rtype)
    };
    let addresses = |n: u32| -> Vec<String> {
        (0..n)
            .map(|i| std::net::Ipv4Addr::from(0x0A00_0000 + i).to_string())
            .collect()
    };
    // The reviewer's 4500 addresses: 400 naming the values.
    check_400(set("A", addresses(4500)), "values", "at most 16384");
    // 16384 / (25 bytes of owner + 10 + 4) = 420 A records fit; 421 do not.
    assert_eq!(set("A", addresses(420)).unwrap().values.len(), 420);
    check_400(set("A", addresses(421)), "values", "DNS wire format");
    // Many long TXT records count their text.
    let texts: Vec<String> = (0..70).map(|i| format!("{i:0>250}")).collect();
    check_400(set("TXT", texts), "values", "at most 16384");

    check_400(
        set("MX", vec!["10 192.0.2.1".into()]),
        "values[0]",
        "is an address",
    );
    set("MX", vec!["10 mail.example.com".into()]).unwrap();
}
