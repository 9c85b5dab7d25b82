//! The precedence battery: Gateway API matching and tie-break rules, table-driven, through the
//! real compiler and lookup.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use meridian_proto::model::gateway::GatewayConfig;

use crate::backend::BackendTarget;
use crate::fixtures::*;
use crate::route::PortTable;
use crate::route::matcher::RequestView;

/// (host, method, target, headers, expected backend or None for 404)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

fn resolve(
    table: &PortTable,
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let uri: Uri = target.parse().unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let listener = table.listener_for_host(host)?;
    let mut view = RequestView::new(&uri, &method, &map);
    let entry = listener.find_http(host, &mut view)?;
    match &entry.rule.backends.pick()?.target {
        BackendTarget::Service(s) => Some(
            s.name
                .split('/')
                .nth(1)
                .unwrap()
                .trim_end_matches(":8080")
                .to_string(),
        ),
        BackendTarget::Invalid { .. } => Some("invalid".into()),
    }
}

fn check(config: GatewayConfig, cases: &[Case<'_>]) {
    let compiled = compile_config(&config).unwrap();
    let table = &compiled.ports.values().next().unwrap().table;
    for (host, method, target, headers, want) in cases {
        let got = resolve(table, host, method, target, headers);
        assert_eq!(got.as_deref(), *want, "{method} {host}{target} {headers:?}");
    }
}

fn config(
    listeners: Vec<meridian_proto::model::gateway::Listener>,
    routes: Vec<meridian_proto::model::gateway::Attached<meridian_proto::model::route::HttpRoute>>,
) -> GatewayConfig {
    let addr = "127.0.0.1:9".parse().unwrap();
    GatewayConfig {
        version: 1,
        listeners,
        http_routes: routes,
        backends: ["default/v1", "default/v2", "default/v3"]
            .iter()
            .map(|b| backend(b, addr))
            .collect(),
        ..GatewayConfig::default()
    }
}

fn one_listener(
    routes: Vec<meridian_proto::model::gateway::Attached<meridian_proto::model::route::HttpRoute>>,
) -> GatewayConfig {
    config(vec![http_listener("http", 8080, None)], routes)
}

const H: &[(&str, &str)] = &[];

#[test]
fn http_route_matching() {
    let r = route(
        "default/matching",
        0,
        &[],
        vec![
            rule(
                vec![prefix("/"), prefix("/").header("version", "one")],
                vec![to("default/v1", 1)],
            ),
            rule(
                vec![prefix("/v2"), prefix("/").header("version", "two")],
                vec![to("default/v2", 1)],
            ),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("example.com", "GET", "/", H, Some("v1")),
            ("example.com", "GET", "/example", H, Some("v1")),
            ("example.com", "GET", "/", &[("Version", "one")], Some("v1")),
            ("example.com", "GET", "/v2", H, Some("v2")),
            ("example.com", "GET", "/v2/", H, Some("v2")),
            ("example.com", "GET", "/v2/example", H, Some("v2")),
            ("example.com", "GET", "/", &[("Version", "two")], Some("v2")),
            ("example.com", "GET", "/v2example", H, Some("v1")),
            ("example.com", "GET", "/foo/v2/example", H, Some("v1")),
        ],
    );
}

#[test]
fn exact_path_matching() {
    let r = route(
        "default/exact",
        0,
        &[],
        vec![
            rule(vec![exact("/one")], vec![to("default/v1", 1)]),
            rule(vec![exact("/two")], vec![to("default/v2", 1)]),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("e.com", "GET", "/one", H, Some("v1")),
            ("e.com", "GET", "/two", H, Some("v2")),
            ("e.com", "GET", "/", H, None),
            ("e.com", "GET", "/one/example", H, None),
            ("e.com", "GET", "/two/", H, None),
            ("e.com", "GET", "/Two", H, None),
        ],
    );
}

#[test]
fn path_match_order_exact_then_longest_prefix() {
    let r = route(
        "default/order",
        0,
        &[],
        vec![
            rule(vec![prefix("/match")], vec![to("default/v3", 1)]),
            rule(vec![prefix("/match/prefix")], vec![to("default/v1", 1)]),
            rule(vec![prefix("/match/prefix/one")], vec![to("default/v2", 1)]),
            rule(vec![prefix("/match/exact")], vec![to("default/v1", 1)]),
            rule(vec![exact("/match/exact/one")], vec![to("default/v3", 1)]),
            rule(vec![exact("/match/exact")], vec![to("default/v2", 1)]),
            rule(vec![exact("/match")], vec![to("default/v1", 1)]),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("e.com", "GET", "/match/exact/one", H, Some("v3")),
            ("e.com", "GET", "/match/exact", H, Some("v2")),
            ("e.com", "GET", "/match", H, Some("v1")),
            ("e.com", "GET", "/match/prefix/one/any", H, Some("v2")),
            ("e.com", "GET", "/match/prefix/any", H, Some("v1")),
            ("e.com", "GET", "/match/any", H, Some("v3")),
            ("e.com", "GET", "/matchany", H, None),
        ],
    );
}

#[test]
fn header_matching_counts_headers_then_rule_order() {
    let h = |pairs: &[(&str, &str)]| {
        let mut m = prefix("/");
        for (k, v) in pairs {
            m = m.header(k, v);
        }
        m
    };
    let r = route(
        "default/headers",
        0,
        &[],
        vec![
            rule(vec![h(&[("version", "one")])], vec![to("default/v1", 1)]),
            rule(vec![h(&[("version", "two")])], vec![to("default/v2", 1)]),
            rule(
                vec![h(&[("version", "two"), ("color", "orange")])],
                vec![to("default/v1", 1)],
            ),
            rule(
                vec![h(&[("color", "blue")]), h(&[("color", "green")])],
                vec![to("default/v1", 1)],
            ),
            rule(
                vec![h(&[("color", "red")]), h(&[("color", "yellow")])],
                vec![to("default/v2", 1)],
            ),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("e.com", "GET", "/", &[("Version", "one")], Some("v1")),
            ("e.com", "GET", "/", &[("Version", "two")], Some("v2")),
            (
                "e.com",
                "GET",
                "/",
                &[("Version", "two"), ("Color", "orange")],
                Some("v1"),
            ),
            (
                "e.com",
                "GET",
                "/",
                &[("Version", "two"), ("Color", "blue")],
                Some("v2"),
            ),
            ("e.com", "GET", "/", &[("Color", "blue")], Some("v1")),
            ("e.com", "GET", "/", &[("Color", "green")], Some("v1")),
            ("e.com", "GET", "/", &[("Color", "red")], Some("v2")),
            ("e.com", "GET", "/", &[("Color", "yellow")], Some("v2")),
            ("e.com", "GET", "/", &[("Color", "orange")], None),
            ("e.com", "GET", "/", &[("Some-Other-Header", "one")], None),
            ("e.com", "GET", "/", &[("Color", "purple")], None),
            ("e.com", "GET", "/", &[("version", "ONE")], None),
        ],
    );
}

#[test]
fn query_param_matching_is_case_sensitive_and_exact() {
    let r = route(
        "default/query",
        0,
        &[],
        vec![
            rule(
                vec![prefix("/").query("animal", "whale")],
                vec![to("default/v1", 1)],
            ),
            rule(
                vec![prefix("/").query("animal", "dolphin")],
                vec![to("default/v2", 1)],
            ),
            rule(
                vec![
                    prefix("/")
                        .query("animal", "dolphin")
                        .query("color", "blue"),
                    prefix("/").query("ANIMAL", "Whale"),
                ],
                vec![to("default/v3", 1)],
            ),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("e.com", "GET", "/?animal=whale", H, Some("v1")),
            ("e.com", "GET", "/?animal=dolphin", H, Some("v2")),
            ("e.com", "GET", "/?animal=dolphin&color=blue", H, Some("v3")),
            ("e.com", "GET", "/?ANIMAL=Whale", H, Some("v3")),
            ("e.com", "GET", "/?animal=whale&extra=param", H, Some("v1")),
            ("e.com", "GET", "/?animal=whaledolphin", H, None),
            ("e.com", "GET", "/?animal=dog", H, None),
            ("e.com", "GET", "/", H, None),
        ],
    );
}

#[test]
fn precedence_path_then_method_then_headers_then_query() {
    let r = route(
        "default/ladder",
        0,
        &[],
        vec![
            rule(
                vec![prefix("/").query("animal", "hydra")],
                vec![to("default/v2", 1)],
            ),
            rule(
                vec![prefix("/").header("version", "four")],
                vec![to("default/v3", 1)],
            ),
            rule(vec![prefix("/path5")], vec![to("default/v1", 1)]),
            rule(vec![prefix("/").method("POST")], vec![to("default/v1", 1)]),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            // header beats query
            (
                "e.com",
                "GET",
                "/?animal=hydra",
                &[("version", "four")],
                Some("v3"),
            ),
            // longer prefix beats a query-only rule
            ("e.com", "GET", "/path5?animal=hydra", H, Some("v1")),
            // method beats headers
            ("e.com", "POST", "/", &[("version", "four")], Some("v1")),
            ("e.com", "GET", "/?animal=hydra", H, Some("v2")),
            ("e.com", "GET", "/", H, None),
        ],
    );
}

#[test]
fn method_matching() {
    let r = route(
        "default/method",
        0,
        &[],
        vec![
            rule(vec![prefix("/").method("POST")], vec![to("default/v1", 1)]),
            rule(vec![prefix("/").method("GET")], vec![to("default/v2", 1)]),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("e.com", "POST", "/", H, Some("v1")),
            ("e.com", "GET", "/", H, Some("v2")),
            ("e.com", "HEAD", "/", H, None),
        ],
    );
}

#[test]
fn regex_paths_rank_between_exact_and_prefix() {
    let r = route(
        "default/regex",
        0,
        &[],
        vec![
            rule(vec![prefix("/api")], vec![to("default/v1", 1)]),
            rule(vec![regex("/api/v[0-9]+/.*")], vec![to("default/v2", 1)]),
            rule(vec![exact("/api/v1/exact")], vec![to("default/v3", 1)]),
        ],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[
            ("e.com", "GET", "/api/v1/users", H, Some("v2")),
            ("e.com", "GET", "/api/v1/exact", H, Some("v3")),
            ("e.com", "GET", "/api/vx/users", H, Some("v1")),
            ("e.com", "GET", "/xapi/v1/users", H, None),
        ],
    );
}

#[test]
fn hostname_specificity_beats_path_length() {
    let exact_host = route(
        "default/a-exact",
        0,
        &["foo.example.com"],
        vec![rule(vec![prefix("/")], vec![to("default/v1", 1)])],
    );
    let wildcard = route(
        "default/b-wild",
        0,
        &["*.example.com"],
        vec![rule(
            vec![prefix("/longer/path")],
            vec![to("default/v2", 1)],
        )],
    );
    let any = route(
        "default/c-any",
        0,
        &[],
        vec![rule(vec![prefix("/")], vec![to("default/v3", 1)])],
    );
    check(
        one_listener(vec![
            attach(exact_host, "http", &["foo.example.com"]),
            attach(wildcard, "http", &["*.example.com"]),
            attach(any, "http", &[]),
        ]),
        &[
            ("foo.example.com", "GET", "/longer/path", H, Some("v1")),
            ("bar.example.com", "GET", "/longer/path", H, Some("v2")),
            ("a.b.example.com", "GET", "/longer/path", H, Some("v2")),
            ("bar.example.com", "GET", "/", H, Some("v3")),
            ("example.com", "GET", "/longer/path", H, Some("v3")),
        ],
    );
}

#[test]
fn older_route_then_name_breaks_ties() {
    let newer = route(
        "default/a-newer",
        2_000,
        &[],
        vec![rule(vec![prefix("/tie")], vec![to("default/v1", 1)])],
    );
    let older = route(
        "default/z-older",
        1_000,
        &[],
        vec![rule(vec![prefix("/tie")], vec![to("default/v2", 1)])],
    );
    let same_age_b = route(
        "other/b",
        0,
        &[],
        vec![rule(vec![prefix("/name")], vec![to("default/v3", 1)])],
    );
    let same_age_a = route(
        "other/a",
        0,
        &[],
        vec![rule(vec![prefix("/name")], vec![to("default/v1", 1)])],
    );
    check(
        one_listener(vec![
            attach(newer, "http", &[]),
            attach(older, "http", &[]),
            attach(same_age_b, "http", &[]),
            attach(same_age_a, "http", &[]),
        ]),
        &[
            ("e.com", "GET", "/tie", H, Some("v2")),
            ("e.com", "GET", "/name", H, Some("v1")),
        ],
    );
}

#[test]
fn listener_isolation_uses_only_the_most_specific_listener() {
    let listeners = vec![
        http_listener("empty", 8080, None),
        http_listener("wildcard", 8080, Some("*.example.com")),
        http_listener("foo-wildcard", 8080, Some("*.foo.example.com")),
        http_listener("abc", 8080, Some("abc.foo.example.com")),
    ];
    let r = |name: &str, backend: &str| {
        route(
            name,
            0,
            &[],
            vec![rule(
                vec![prefix(&format!("/{}", name.split('/').nth(1).unwrap()))],
                vec![to(backend, 1)],
            )],
        )
    };
    check(
        config(
            listeners,
            vec![
                attach(r("default/empty", "default/v1"), "empty", &[]),
                attach(r("default/wildcard", "default/v2"), "wildcard", &[]),
                attach(r("default/foo-wildcard", "default/v3"), "foo-wildcard", &[]),
                attach(r("default/abc", "default/v1"), "abc", &[]),
            ],
        ),
        &[
            ("bar.com", "GET", "/empty", H, Some("v1")),
            ("bar.com", "GET", "/wildcard", H, None),
            ("bar.example.com", "GET", "/wildcard", H, Some("v2")),
            ("bar.example.com", "GET", "/empty", H, None),
            ("bar.foo.example.com", "GET", "/foo-wildcard", H, Some("v3")),
            ("bar.foo.example.com", "GET", "/wildcard", H, None),
            ("abc.foo.example.com", "GET", "/abc", H, Some("v1")),
            ("abc.foo.example.com", "GET", "/foo-wildcard", H, None),
            ("foo.example.com", "GET", "/wildcard", H, Some("v2")),
        ],
    );
}

#[test]
fn invalid_backends_resolve_to_invalid_targets() {
    let r = route(
        "default/bad",
        0,
        &[],
        vec![rule(vec![prefix("/")], vec![invalid("default/missing", 1)])],
    );
    check(
        one_listener(vec![attach(r, "http", &[])]),
        &[("e.com", "GET", "/", H, Some("invalid"))],
    );
}
