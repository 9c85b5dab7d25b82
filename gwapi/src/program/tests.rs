//! Programming tests, modelled on the upstream conformance cases: attachment and allowedRoutes,
//! hostname intersection, ReferenceGrant grant and revoke, backend resolution (including the
//! proportional share of invalid backends), endpoints by port name, certificates, listener
//! conflicts, shared routes, BackendTLSPolicy (validity, conflicts, fail-closed backends), and
//! the exact status reasons.

use std::net::SocketAddr;

use base64::Engine;
use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::{
    AppProtocol, CaSource, Endpoint, ListenerProtocol, SubjectAltName, TlsMode,
};
use meridian_proto::model::route::{HttpFilter, HttpRoute, Resolution, ServiceKey};

use super::*;
use crate::document::parse_documents;
use crate::http_route_from_json;
use crate::status::{ConditionStatus, ConditionType, RouteKind, RouteOrigin};

const BASE: &str = include_str!("../../tests/fixtures/base.yaml");

/// The base fixture plus `extra` documents, as an object set. Problems in `extra` are allowed
/// (some tests use invalid objects on purpose); the base must be clean.
fn set(extra: &str) -> ObjectSet {
    let (mut objects, problems) = parse_documents(BASE, "base.yaml");
    assert!(problems.is_empty(), "{problems:?}");
    let (more, _) = parse_documents(extra, "extra.yaml");
    objects.extend(more);
    let (set, problems) = ObjectSet::from_objects(objects);
    assert!(problems.is_empty(), "{problems:?}");
    set
}

fn key(text: &str) -> ObjectKey {
    text.parse().expect("valid key")
}

fn same_namespace() -> ObjectKey {
    key("infra/same-namespace")
}

/// (status, reason) of a condition, for compact assertions.
fn cond(conditions: &[Condition], type_: ConditionType) -> (ConditionStatus, Reason) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"));
    (c.status, c.reason)
}

use ConditionStatus::{False, True};

/// The conditions of route `route` (any kind) towards its first parentRef.
fn route_conditions(programmed: &Programmed, kind: RouteKind, route: &str) -> Vec<Condition> {
    let status = programmed
        .status
        .route(kind, &key(route))
        .unwrap_or_else(|| panic!("no status for {route} in {:?}", programmed.status.routes));
    status.parents[0].conditions.clone()
}

fn http_route(name: &str, namespace: &str, parent: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  parentRefs: [{parent}]\n  rules: {rules}\n"
    )
}

fn backend(port: u16) -> String {
    format!("[{{backendRefs: [{{name: infra-backend-v1, port: {port}}}]}}]")
}

#[test]
fn simple_same_namespace_route_is_programmed() {
    let objects = set(&http_route(
        "web",
        "infra",
        "{name: same-namespace}",
        &backend(8080),
    ));
    let programmed = program(&objects, &[], &same_namespace());
    let config = &programmed.config;
    assert_eq!(config.version, 0);
    assert_eq!(config.gateway, Some(same_namespace()));
    assert_eq!(config.listeners.len(), 1);
    let listener = &config.listeners[0];
    assert_eq!(
        (
            listener.name.as_str(),
            listener.port,
            listener.protocol,
            listener.hostname.as_deref()
        ),
        ("http", 80, ListenerProtocol::Http, None)
    );
    assert_eq!(
        listener.addresses,
        ["127.0.1.1".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(config.http_routes.len(), 1);
    let attached = &config.http_routes[0];
    assert_eq!(attached.attachments.len(), 1);
    assert_eq!(attached.attachments[0].listener, "http");
    assert!(attached.attachments[0].hostnames.is_empty());
    let service = ServiceKey {
        namespace: "infra".into(),
        name: "infra-backend-v1".into(),
        port: 8080,
    };
    assert_eq!(
        attached.route.rules[0].backend_refs[0]
            .backend_ref
            .resolution,
        Resolution::Service(service.clone())
    );
    assert_eq!(config.backends.len(), 1);
    let backend = &config.backends[0];
    assert_eq!(backend.key, service);
    assert_eq!(backend.app_protocol, AppProtocol::Http1);
    let endpoint = |addr: &str, ready| Endpoint {
        addr: addr.parse::<SocketAddr>().expect("addr"),
        ready,
    };
    // Both slices (IPv4 and IPv6) contribute; readiness absent means ready.
    assert_eq!(
        backend.endpoints,
        [
            endpoint("10.0.0.1:3000", true),
            endpoint("10.0.0.2:3000", false),
            endpoint("10.0.0.3:3000", true),
            endpoint("[fd00::1]:3000", true),
        ]
    );

    let status = &programmed.status;
    assert_eq!(
        cond(&status.conditions, ConditionType::Accepted),
        (True, Reason::Accepted)
    );
    assert_eq!(
        cond(&status.conditions, ConditionType::Programmed),
        (True, Reason::Programmed)
    );
    assert_eq!(status.conditions[0].observed_generation, 3);
    let listener = status.listener("http").expect("listener status");
    assert_eq!(listener.attached_routes, 1);
    assert_eq!(listener.supported_kinds, [RouteKind::Http, RouteKind::Grpc]);
    for (type_, expected) in [
        (ConditionType::Accepted, (True, Reason::Accepted)),
        (ConditionType::Programmed, (True, Reason::Programmed)),
        (ConditionType::ResolvedRefs, (True, Reason::ResolvedRefs)),
        (ConditionType::Conflicted, (False, Reason::NoConflicts)),
    ] {
        assert_eq!(cond(&listener.conditions, type_), expected, "{type_}");
    }
    let conditions = route_conditions(&programmed, RouteKind::Http, "infra/web");
    assert_eq!(
        cond(&conditions, ConditionType::Accepted),
        (True, Reason::Accepted)
    );
    assert_eq!(
        cond(&conditions, ConditionType::ResolvedRefs),
        (True, Reason::ResolvedRefs)
    );
    assert!(
        conditions
            .iter()
            .all(|c| c.type_ != ConditionType::PartiallyInvalid)
    );
}

#[test]
fn endpoints_map_service_ports_to_slice_ports_by_name() {
    let objects = set(&http_route(
        "protocols",
        "infra",
        "{name: same-namespace}",
        "[{backendRefs: [{name: infra-backend-v1, port: 8081}]}, {backendRefs: [{name: infra-backend-v1, port: 8082}]}, {backendRefs: [{name: infra-backend-v2, port: 8080}]}]",
    ));
    let config = program(&objects, &[], &same_namespace()).config;
    let summary: Vec<(u16, AppProtocol, Vec<String>)> = config
        .backends
        .iter()
        .map(|b| {
            (
                b.key.port,
                b.app_protocol,
                b.endpoints.iter().map(|e| e.addr.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                8081,
                AppProtocol::H2c,
                vec![
                    "10.0.0.1:3001".to_string(),
                    "10.0.0.2:3001".into(),
                    "10.0.0.3:3001".into()
                ]
            ),
            (
                8082,
                AppProtocol::WebSocket,
                vec![
                    "10.0.0.1:3002".to_string(),
                    "10.0.0.2:3002".into(),
                    "10.0.0.3:3002".into()
                ]
            ),
            // infra-backend-v2's port is unnamed; its slice's port is unnamed too.
            (8080, AppProtocol::Http1, vec!["10.9.9.9:9999".to_string()]),
        ]
    );
}

#[test]
fn backend_failures_carry_the_spec_reasons() {
    let cases: &[(&str, Reason, &str)] = &[
        (
            "{name: nope, port: 8080}",
            Reason::BackendNotFound,
            "Service infra/nope not found",
        ),
        (
            "{name: infra-backend-v1, port: 9999}",
            Reason::BackendNotFound,
            "Service infra/infra-backend-v1 has no port 9999",
        ),
        (
            "{group: example.com, kind: Bucket, name: b}",
            Reason::InvalidKind,
            "backend infra/b has unsupported kind example.com/Bucket (only core Services)",
        ),
        (
            "{kind: ConfigMap, name: c}",
            Reason::InvalidKind,
            "backend infra/c has unsupported kind ConfigMap (only core Services)",
        ),
        (
            "{name: infra-backend-v1, port: 8443}",
            Reason::UnsupportedProtocol,
            "Service infra/infra-backend-v1 port 8443 has unsupported appProtocol \"kubernetes.io/wss\"",
        ),
        (
            "{name: infra-backend-v1, port: 53}",
            Reason::UnsupportedProtocol,
            "Service infra/infra-backend-v1 port 53 has unsupported protocol \"UDP\"",
        ),
        (
            "{name: web-backend, namespace: web-backend, port: 8080}",
            Reason::RefNotPermitted,
            "Service web-backend/web-backend is in another namespace and no ReferenceGrant allows HTTPRoute from infra",
        ),
        (
            "{name: external, port: 8080}",
            Reason::InvalidKind,
            "Service infra/external is of type ExternalName, which Meridian does not support (Gateway API: implementations SHOULD NOT, CVE-2021-25740)",
        ),
    ];
    // An ExternalName Service (with an EndpointSlice, which it never has in a cluster, to
    // show that it is refused for its type, not for having no endpoints).
    let external = "---\napiVersion: v1\nkind: Service\nmetadata: {name: external, namespace: infra}\nspec:\n  type: ExternalName\n  externalName: localhost\n  ports: [{port: 8080}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: external-1, namespace: infra, labels: {kubernetes.io/service-name: external}}\naddressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\nports: [{port: 8080}]\n";
    for (reference, reason, message) in cases {
        let objects = set(&format!(
            "{external}{}",
            http_route(
                "bad",
                "infra",
                "{name: same-namespace}",
                &format!("[{{backendRefs: [{reference}]}}]"),
            )
        ));
        let programmed = program(&objects, &[], &same_namespace());
        let conditions = route_conditions(&programmed, RouteKind::Http, "infra/bad");
        // Invalid backends never stop a route from being accepted: the gateway answers 500.
        assert_eq!(
            cond(&conditions, ConditionType::Accepted),
            (True, Reason::Accepted),
            "{reference}"
        );
        assert_eq!(
            cond(&conditions, ConditionType::ResolvedRefs),
            (False, *reason),
            "{reference}"
        );
        let resolution = &programmed.config.http_routes[0].route.rules[0].backend_refs[0]
            .backend_ref
            .resolution;
        assert_eq!(
            resolution,
            &Resolution::Invalid {
                reason: reason.as_str().to_string(),
                message: message.to_string()
            },
            "{reference}"
        );
        assert!(programmed.config.backends.is_empty(), "{reference}");
    }
}

#[test]
fn invalid_backends_keep_their_weight_share() {
    let objects = set(&http_route(
        "split",
        "infra",
        "{name: same-namespace}",
        "[{backendRefs: [{name: infra-backend-v1, port: 8080, weight: 1}, {name: missing, port: 8080, weight: 1}, {name: infra-backend-v2, port: 8080, weight: 0}]}]",
    ));
    let programmed = program(&objects, &[], &same_namespace());
    let refs = &programmed.config.http_routes[0].route.rules[0].backend_refs;
    let summary: Vec<(u32, bool)> = refs
        .iter()
        .map(|b| {
            (
                b.weight,
                matches!(b.backend_ref.resolution, Resolution::Service(_)),
            )
        })
        .collect();
    // 1:1 between a valid and an invalid backend: the gateway serves 50% as 500s.
    assert_eq!(summary, [(1, true), (1, false), (0, true)]);
    let conditions = route_conditions(&programmed, RouteKind::Http, "infra/split");
    assert_eq!(
        cond(&conditions, ConditionType::ResolvedRefs),
        (False, Reason::BackendNotFound)
    );
    let keys: Vec<&str> = programmed
        .config
        .backends
        .iter()
        .map(|b| b.key.name.as_str())
        .collect();
    assert_eq!(keys, ["infra-backend-v1", "infra-backend-v2"]);
}

#[test]
fn reference_grants_allow_and_revoke_cross_namespace_backends() {
    let route = http_route(
        "cross",
        "infra",
        "{name: same-namespace}",
        "[{backendRefs: [{name: web-backend, namespace: web-backend, port: 8080}]}]",
    );
    let grant = |from_kind: &str, from_ns: &str, to: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata:\n  name: g\n  namespace: web-backend\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}]\n  to: [{to}]\n"
        )
    };
    let cases: &[(String, bool)] = &[
        (String::new(), false),
        (
            grant("HTTPRoute", "infra", "{group: '', kind: Service}"),
            true,
        ),
        (
            grant(
                "HTTPRoute",
                "infra",
                "{group: '', kind: Service, name: web-backend}",
            ),
            true,
        ),
        (
            grant(
                "HTTPRoute",
                "infra",
                "{group: '', kind: Service, name: other}",
            ),
            false,
        ),
        (
            grant("GRPCRoute", "infra", "{group: '', kind: Service}"),
            false,
        ),
        (
            grant("HTTPRoute", "app-backend", "{group: '', kind: Service}"),
            false,
        ),
        (
            grant("HTTPRoute", "infra", "{group: '', kind: Secret}"),
            false,
        ),
    ];
    for (grant, allowed) in cases {
        let objects = set(&format!("{route}{grant}"));
        let programmed = program(&objects, &[], &same_namespace());
        let resolution = &programmed.config.http_routes[0].route.rules[0].backend_refs[0]
            .backend_ref
            .resolution;
        assert_eq!(
            matches!(resolution, Resolution::Service(_)),
            *allowed,
            "grant {grant}"
        );
        let conditions = route_conditions(&programmed, RouteKind::Http, "infra/cross");
        let expected = if *allowed {
            (True, Reason::ResolvedRefs)
        } else {
            (False, Reason::RefNotPermitted)
        };
        assert_eq!(
            cond(&conditions, ConditionType::ResolvedRefs),
            expected,
            "grant {grant}"
        );
        assert_eq!(
            cond(&conditions, ConditionType::Accepted),
            (True, Reason::Accepted)
        );
    }
}

#[test]
fn allowed_routes_namespaces_same_all_and_selector() {
    let routes = [
        http_route("r", "infra", "{name: same-namespace, namespace: infra}, {name: all-namespaces, namespace: infra}, {name: backend-namespaces, namespace: infra}", "[{}]"),
        http_route("r", "web-backend", "{name: same-namespace, namespace: infra}, {name: all-namespaces, namespace: infra}, {name: backend-namespaces, namespace: infra}", "[{}]"),
        // `other` has no Namespace object, so it has no labels.
        http_route("r", "other", "{name: same-namespace, namespace: infra}, {name: all-namespaces, namespace: infra}, {name: backend-namespaces, namespace: infra}", "[{}]"),
    ]
    .join("");
    let objects = set(&routes);
    let expectations = [
        ("same-namespace", [true, false, false]),
        ("all-namespaces", [true, true, true]),
        ("backend-namespaces", [false, true, false]),
    ];
    for (gateway, accepted) in expectations {
        let programmed = program(&objects, &[], &key(&format!("infra/{gateway}")));
        for (route, expected) in ["infra/r", "web-backend/r", "other/r"].iter().zip(accepted) {
            let status = programmed
                .status
                .route(RouteKind::Http, &key(route))
                .expect("status");
            assert_eq!(
                status.parents.len(),
                1,
                "only the parentRef naming this Gateway"
            );
            let got = cond(&status.parents[0].conditions, ConditionType::Accepted);
            let want = if expected {
                (True, Reason::Accepted)
            } else {
                (False, Reason::NotAllowedByListeners)
            };
            assert_eq!(got, want, "{route} on {gateway}");
        }
        let n_accepted = accepted.iter().filter(|a| **a).count() as u32;
        assert_eq!(
            programmed.status.listeners[0].attached_routes, n_accepted,
            "{gateway}"
        );
        assert_eq!(
            programmed.config.http_routes.len(),
            n_accepted as usize,
            "{gateway}"
        );
    }
}

#[test]
fn namespace_name_label_selects_declared_and_undeclared_namespaces() {
    // `kubernetes.io/metadata.name` is on every Namespace in a cluster; in a directory it is
    // implied: for a Namespace declared without it (`web-backend`) and for a namespace with no
    // Namespace object at all (`other`).
    let gateway = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: by-name, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchExpressions:
          - {key: kubernetes.io/metadata.name, operator: In, values: [web-backend, other]}
";
    let parent = "{name: by-name, namespace: infra}";
    let routes = [
        http_route("r", "web-backend", parent, "[{}]"),
        http_route("r", "other", parent, "[{}]"),
        http_route("r", "app-backend", parent, "[{}]"),
    ]
    .join("");
    let objects = set(&format!("{gateway}{routes}"));
    let programmed = program(&objects, &[], &key("infra/by-name"));
    for (route, want) in [
        ("web-backend/r", (True, Reason::Accepted)),
        ("other/r", (True, Reason::Accepted)),
        ("app-backend/r", (False, Reason::NotAllowedByListeners)),
    ] {
        let conditions = route_conditions(&programmed, RouteKind::Http, route);
        assert_eq!(cond(&conditions, ConditionType::Accepted), want, "{route}");
    }
    let web = objects
        .namespaces
        .iter()
        .find(|n| n.metadata.name == "web-backend")
        .expect("web-backend");
    assert_eq!(
        web.metadata
            .labels
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("web-backend")
    );
}

const MULTI: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: multi, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: alt, port: 8080, protocol: HTTP}
  - {name: specific, port: 80, protocol: HTTP, hostname: very.specific.com}
  - {name: wildcard, port: 80, protocol: HTTP, hostname: '*.wildcard.io'}
  - {name: tls-only, port: 8443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TLSRoute}]}}
";

#[test]
fn parent_refs_select_listeners_by_section_name_and_port() {
    let cases: &[(&str, Result<&[&str], Reason>)] = &[
        (
            "{name: multi}",
            Ok(&["http", "alt", "specific", "wildcard"]),
        ),
        ("{name: multi, sectionName: alt}", Ok(&["alt"])),
        ("{name: multi, port: 8080}", Ok(&["alt"])),
        (
            "{name: multi, port: 80}",
            Ok(&["http", "specific", "wildcard"]),
        ),
        ("{name: multi, sectionName: alt, port: 8080}", Ok(&["alt"])),
        (
            "{name: multi, sectionName: nope}",
            Err(Reason::NoMatchingParent),
        ),
        ("{name: multi, port: 9090}", Err(Reason::NoMatchingParent)),
        (
            "{name: multi, sectionName: alt, port: 80}",
            Err(Reason::NoMatchingParent),
        ),
        (
            "{name: multi, sectionName: tls-only}",
            Err(Reason::NotAllowedByListeners),
        ),
    ];
    for (parent, expected) in cases {
        let objects = set(&format!(
            "{MULTI}{}",
            http_route("r", "infra", parent, "[{}]")
        ));
        let programmed = program(&objects, &[], &key("infra/multi"));
        let conditions = route_conditions(&programmed, RouteKind::Http, "infra/r");
        match expected {
            Ok(listeners) => {
                assert_eq!(
                    cond(&conditions, ConditionType::Accepted),
                    (True, Reason::Accepted),
                    "{parent}"
                );
                let got: Vec<&str> = programmed.config.http_routes[0]
                    .attachments
                    .iter()
                    .map(|a| a.listener.as_str())
                    .collect();
                assert_eq!(got, *listeners, "{parent}");
                for status in &programmed.status.listeners {
                    let want = u32::from(listeners.contains(&status.name.as_str()));
                    assert_eq!(status.attached_routes, want, "{parent} {}", status.name);
                }
            }
            Err(reason) => {
                assert_eq!(
                    cond(&conditions, ConditionType::Accepted),
                    (False, *reason),
                    "{parent}"
                );
                assert!(programmed.config.http_routes.is_empty());
            }
        }
    }
}

#[test]
fn hostnames_narrow_per_listener_and_may_not_match_at_all() {
    let routes = [
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: exact, namespace: infra}\nspec:\n  parentRefs: [{name: multi, port: 80}]\n  hostnames: [very.specific.com]\n",
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: wild, namespace: infra}\nspec:\n  parentRefs: [{name: multi, port: 80}]\n  hostnames: ['*.specific.com', 'foo.wildcard.io']\n",
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: none, namespace: infra}\nspec:\n  parentRefs: [{name: multi, sectionName: specific}]\n  hostnames: [nope.example.com]\n",
    ]
    .concat();
    let objects = set(&format!("{MULTI}{routes}"));
    let programmed = program(&objects, &[], &key("infra/multi"));
    let attachments = |name: &str| -> Vec<(String, Vec<String>)> {
        programmed
            .config
            .http_routes
            .iter()
            .find(|r| r.route.key.name == name)
            .map(|r| {
                r.attachments
                    .iter()
                    .map(|a| (a.listener.clone(), a.hostnames.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        attachments("exact"),
        [
            ("http".to_string(), s(&["very.specific.com"])),
            ("specific".to_string(), s(&["very.specific.com"]))
        ]
    );
    assert_eq!(
        attachments("wild"),
        [
            (
                "http".to_string(),
                s(&["*.specific.com", "foo.wildcard.io"])
            ),
            ("specific".to_string(), s(&["very.specific.com"])),
            ("wildcard".to_string(), s(&["foo.wildcard.io"])),
        ]
    );
    let conditions = route_conditions(&programmed, RouteKind::Http, "infra/none");
    assert_eq!(
        cond(&conditions, ConditionType::Accepted),
        (False, Reason::NoMatchingListenerHostname)
    );
    let counts: Vec<u32> = programmed
        .status
        .listeners
        .iter()
        .map(|l| l.attached_routes)
        .collect();
    assert_eq!(counts, [2, 0, 2, 1, 0]);
}

#[test]
fn listener_kinds_and_protocol_validity() {
    let gateway = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kinds, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TLSRoute}, {group: example.com, kind: HTTPRoute}]}}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: tls-only, port: 8443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TLSRoute}]}}
";
    let objects = set(&format!(
        "{gateway}{}",
        http_route("r", "infra", "{name: kinds}", "[{}]")
    ));
    let programmed = program(&objects, &[], &key("infra/kinds"));
    let status = &programmed.status;
    assert_eq!(
        cond(&status.conditions, ConditionType::Accepted),
        (True, Reason::ListenersNotValid)
    );
    let http = status.listener("http").expect("http");
    assert_eq!(http.supported_kinds, [RouteKind::Http]);
    assert_eq!(
        cond(&http.conditions, ConditionType::ResolvedRefs),
        (False, Reason::InvalidRouteKinds)
    );
    assert_eq!(
        http.conditions
            .iter()
            .find(|c| c.type_ == ConditionType::ResolvedRefs)
            .expect("c")
            .message,
        "route kinds not supported by this listener: gateway.networking.k8s.io/TLSRoute, example.com/HTTPRoute"
    );
    assert_eq!(
        cond(&http.conditions, ConditionType::Programmed),
        (True, Reason::Programmed)
    );
    let tcp = status.listener("tcp").expect("tcp");
    assert!(tcp.supported_kinds.is_empty());
    assert_eq!(
        cond(&tcp.conditions, ConditionType::Accepted),
        (False, Reason::UnsupportedProtocol)
    );
    assert_eq!(
        cond(&tcp.conditions, ConditionType::Programmed),
        (False, Reason::Invalid)
    );
    let tls = status.listener("tls-only").expect("tls");
    assert_eq!(tls.supported_kinds, [RouteKind::Tls]);
    let names: Vec<&str> = programmed
        .config
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["http", "tls-only"]);
    assert_eq!(
        programmed.config.listeners[1].tls.as_ref().map(|t| t.mode),
        Some(TlsMode::Passthrough)
    );
    // The HTTPRoute attaches to `http` only.
    assert_eq!(programmed.config.http_routes[0].attachments.len(), 1);

    let only_tcp = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
  - {name: tcp, port: 9000, protocol: TCP}
";
    let programmed = program(&set(only_tcp), &[], &key("infra/tcp"));
    assert_eq!(
        cond(&programmed.status.conditions, ConditionType::Accepted),
        (False, Reason::ListenersNotValid)
    );
    assert_eq!(
        cond(&programmed.status.conditions, ConditionType::Programmed),
        (False, Reason::Invalid)
    );
    assert!(programmed.config.listeners.is_empty());
}

#[test]
fn listener_conflicts() {
    let gateway = |listeners: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: c, namespace: infra}}\nspec:\n  gatewayClassName: meridian\n  listeners: {listeners}\n"
        )
    };
    type Expected<'a> = &'a [(&'a str, Option<Reason>)];
    let cases: &[(&str, Expected<'_>)] = &[
        (
            "[{name: a, port: 80, protocol: HTTP, hostname: x.com}, {name: b, port: 80, protocol: HTTP, hostname: x.com}, {name: c, port: 80, protocol: HTTP}]",
            &[
                ("a", Some(Reason::HostnameConflict)),
                ("b", Some(Reason::HostnameConflict)),
                ("c", None),
            ],
        ),
        (
            "[{name: a, port: 80, protocol: HTTP}, {name: b, port: 80, protocol: HTTP}]",
            &[
                ("a", Some(Reason::HostnameConflict)),
                ("b", Some(Reason::HostnameConflict)),
            ],
        ),
        (
            "[{name: a, port: 443, protocol: HTTP}, {name: b, port: 443, protocol: TLS, hostname: y.com, tls: {mode: Passthrough}}, {name: c, port: 80, protocol: HTTP}]",
            &[
                ("a", Some(Reason::ProtocolConflict)),
                ("b", Some(Reason::ProtocolConflict)),
                ("c", None),
            ],
        ),
        // Mixed mode: passthrough, TLS termination and HTTPS share a port, told apart by SNI.
        (
            "[{name: a, port: 443, protocol: TLS, hostname: a.com, tls: {mode: Passthrough}}, {name: b, port: 443, protocol: TLS, hostname: b.com, tls: {mode: Terminate, certificateRefs: [{name: s}]}}, {name: c, port: 443, protocol: HTTPS, hostname: '*.com', tls: {certificateRefs: [{name: s}]}}]",
            &[("a", None), ("b", None), ("c", None)],
        ),
        // On a TLS port the SNI is all that picks a listener, so one hostname cannot name two
        // listeners, even of different protocols.
        (
            "[{name: a, port: 443, protocol: TLS, hostname: a.com, tls: {mode: Passthrough}}, {name: b, port: 443, protocol: HTTPS, hostname: a.com, tls: {certificateRefs: [{name: s}]}}, {name: c, port: 443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: s}]}}]",
            &[
                ("a", Some(Reason::HostnameConflict)),
                ("b", Some(Reason::HostnameConflict)),
                ("c", None),
            ],
        ),
        (
            "[{name: a, port: 443, protocol: TLS, hostname: a.com, tls: {mode: Passthrough}}, {name: b, port: 443, protocol: TLS, hostname: b.com, tls: {mode: Passthrough}}]",
            &[("a", None), ("b", None)],
        ),
    ];
    for (listeners, expected) in cases {
        let programmed = program(&set(&gateway(listeners)), &[], &key("infra/c"));
        for (name, conflict) in *expected {
            let status = programmed.status.listener(name).expect("listener");
            let conflicted = cond(&status.conditions, ConditionType::Conflicted);
            match conflict {
                Some(reason) => {
                    assert_eq!(conflicted, (True, *reason), "{listeners} {name}");
                    assert_eq!(
                        cond(&status.conditions, ConditionType::Accepted),
                        (False, *reason)
                    );
                    assert!(programmed.config.listeners.iter().all(|l| l.name != *name));
                }
                None => assert_eq!(
                    conflicted,
                    (False, Reason::NoConflicts),
                    "{listeners} {name}"
                ),
            }
        }
    }
}

/// A `kubernetes.io/tls` Secret with a fresh self-signed certificate for `host`.
fn tls_secret(name: &str, namespace: &str, host: &str) -> String {
    let generated = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("cert");
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(generated.cert.pem()),
        b64(generated.signing_key.serialize_pem())
    )
}

fn https_gateway(certificate_ref: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: https, namespace: infra}}\nspec:\n  gatewayClassName: meridian\n  listeners:\n  - {{name: https, port: 443, protocol: HTTPS, hostname: example.org, tls: {{certificateRefs: [{certificate_ref}]}}}}\n  - {{name: http, port: 80, protocol: HTTP}}\n"
    )
}

#[test]
fn certificates_resolve_from_secrets() {
    let good = tls_secret("cert", "infra", "example.org");
    let elsewhere = tls_secret("cert", "web-backend", "example.org");
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: certs, namespace: web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  to: [{group: '', kind: Secret}]\n";
    let malformed = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: infra}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: bm90IGEgY2VydA==\n  tls.key: bm90IGEga2V5\n";
    let opaque = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: infra}\ntype: Opaque\nstringData: {tls.crt: x, tls.key: y}\n";
    // A valid certificate with another certificate's key: the gateway could not serve it.
    let mismatched = {
        let cert =
            rcgen::generate_simple_self_signed(vec!["example.org".to_string()]).expect("cert");
        let other =
            rcgen::generate_simple_self_signed(vec!["example.org".to_string()]).expect("cert");
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: infra}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
            b64(cert.cert.pem()),
            b64(other.signing_key.serialize_pem())
        )
    };
    let cases: Vec<(String, Result<(), Reason>)> = vec![
        (format!("{}{good}", https_gateway("{name: cert}")), Ok(())),
        (
            format!("{}{mismatched}", https_gateway("{name: cert}")),
            Err(Reason::InvalidCertificateRef),
        ),
        (
            https_gateway("{name: cert}"),
            Err(Reason::InvalidCertificateRef),
        ),
        (
            format!("{}{malformed}", https_gateway("{name: cert}")),
            Err(Reason::InvalidCertificateRef),
        ),
        (
            format!("{}{opaque}", https_gateway("{name: cert}")),
            Err(Reason::InvalidCertificateRef),
        ),
        (
            format!(
                "{}{good}",
                https_gateway("{group: '', kind: ConfigMap, name: cert}")
            ),
            Err(Reason::InvalidCertificateRef),
        ),
        (
            format!(
                "{}{elsewhere}",
                https_gateway("{name: cert, namespace: web-backend}")
            ),
            Err(Reason::RefNotPermitted),
        ),
        (
            format!(
                "{}{elsewhere}{grant}",
                https_gateway("{name: cert, namespace: web-backend}")
            ),
            Ok(()),
        ),
    ];
    for (objects_yaml, expected) in &cases {
        let route = http_route("r", "infra", "{name: https}", "[{}]");
        let programmed = program(
            &set(&format!("{objects_yaml}{route}")),
            &[],
            &key("infra/https"),
        );
        let listener = programmed.status.listener("https").expect("listener");
        // The route attaches to both listeners and is counted on https either way.
        assert_eq!(listener.attached_routes, 1);
        match expected {
            Ok(()) => {
                assert_eq!(
                    cond(&listener.conditions, ConditionType::ResolvedRefs),
                    (True, Reason::ResolvedRefs)
                );
                assert_eq!(
                    cond(&listener.conditions, ConditionType::Programmed),
                    (True, Reason::Programmed)
                );
                let config_listener = &programmed.config.listeners[0];
                assert_eq!(config_listener.protocol, ListenerProtocol::Https);
                let tls = config_listener.tls.as_ref().expect("tls");
                assert_eq!(tls.mode, TlsMode::Terminate);
                assert_eq!(tls.certificates.len(), 1);
                assert!(
                    tls.certificates[0]
                        .cert_chain_pem
                        .starts_with("-----BEGIN CERTIFICATE-----")
                );
                assert!(
                    tls.certificates[0]
                        .private_key_pem
                        .contains("PRIVATE KEY-----")
                );
            }
            Err(reason) => {
                assert_eq!(
                    cond(&listener.conditions, ConditionType::ResolvedRefs),
                    (False, *reason),
                    "{objects_yaml}"
                );
                assert_eq!(
                    cond(&listener.conditions, ConditionType::Accepted),
                    (True, Reason::Accepted)
                );
                assert_eq!(
                    cond(&listener.conditions, ConditionType::Programmed),
                    (False, Reason::Invalid)
                );
                let names: Vec<&str> = programmed
                    .config
                    .listeners
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect();
                assert_eq!(names, ["http"]);
                assert_eq!(programmed.config.http_routes[0].attachments.len(), 1);
            }
        }
    }
}

/// A ConfigMap holding a fresh self-signed CA certificate under `ca.crt`.
fn ca_config_map(name: &str, namespace: &str) -> String {
    let generated = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).expect("ca");
    let pem = serde_json::Value::String(generated.cert.pem()).to_string();
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata:\n  ca.crt: {pem}\n"
    )
}

/// The `https` Gateway of [`https_gateway`] with a second HTTPS listener on 8443 and
/// `spec.tls.frontend` set to `frontend` (flow style).
fn mtls_gateway(frontend: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: https, namespace: infra}}\nspec:\n  gatewayClassName: meridian\n  tls: {{frontend: {frontend}}}\n  listeners:\n  - {{name: https, port: 443, protocol: HTTPS, hostname: example.org, tls: {{certificateRefs: [{{name: cert}}]}}}}\n  - {{name: https-8443, port: 8443, protocol: HTTPS, hostname: example.org, tls: {{certificateRefs: [{{name: cert}}]}}}}\n  - {{name: http, port: 80, protocol: HTTP}}\n"
    )
}

#[test]
fn frontend_client_validation_resolves_ca_config_maps() {
    use meridian_proto::model::gateway::ClientValidationMode;
    let cert = tls_secret("cert", "infra", "example.org");
    let ca = ca_config_map("ca", "infra");
    let ca_elsewhere = ca_config_map("ca", "web-backend");
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: cas, namespace: web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  to: [{group: '', kind: ConfigMap}]\n";
    let no_key = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: infra}\ndata: {other: x}\n";
    let not_pem = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: infra}\ndata: {ca.crt: not a certificate}\n";
    let default = |refs: &str, mode: &str| {
        mtls_gateway(&format!(
            "{{default: {{validation: {{caCertificateRefs: [{refs}]{mode}}}}}}}"
        ))
    };
    let local = "{group: '', kind: ConfigMap, name: ca}";
    let remote = "{group: '', kind: ConfigMap, name: ca, namespace: web-backend}";
    let programmed = |yaml: &str| {
        let route = http_route("r", "infra", "{name: https}", "[{}]");
        program(
            &set(&format!("{cert}{yaml}{route}")),
            &[],
            &key("infra/https"),
        )
    };
    let listener_names = |p: &Programmed| -> Vec<String> {
        p.config.listeners.iter().map(|l| l.name.clone()).collect()
    };

    // Resolved: both HTTPS listeners validate (the default applies to every HTTPS port), the
    // HTTP listener is untouched, and the Gateway is not flagged insecure.
    let p = programmed(&format!("{}{ca}", default(local, "")));
    assert_eq!(listener_names(&p), ["https", "https-8443", "http"]);
    for listener in &p.config.listeners[..2] {
        let validation = listener
            .tls
            .as_ref()
            .and_then(|t| t.client_validation.as_ref())
            .expect("validation");
        assert_eq!(validation.mode, ClientValidationMode::AllowValidOnly);
        assert_eq!(validation.ca_certificates.len(), 1);
        assert_eq!(validation.ca_certificates[0].config_map, key("infra/ca"));
        assert!(
            validation.ca_certificates[0]
                .pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
    assert!(p.config.listeners[2].tls.is_none());
    assert!(
        p.status
            .condition(ConditionType::InsecureFrontendValidationMode)
            .is_none()
    );
    let https = p.status.listener("https").expect("https");
    assert_eq!(
        cond(&https.conditions, ConditionType::ResolvedRefs),
        (True, Reason::ResolvedRefs)
    );

    // perPort replaces the default for its port only; AllowInsecureFallback flags the Gateway.
    let p = programmed(&format!(
        "{}{ca}",
        mtls_gateway(&format!(
            "{{default: {{validation: {{caCertificateRefs: [{local}]}}}}, perPort: [{{port: 8443, tls: {{validation: {{mode: AllowInsecureFallback, caCertificateRefs: [{local}]}}}}}}]}}"
        ))
    ));
    let modes: Vec<Option<ClientValidationMode>> = p
        .config
        .listeners
        .iter()
        .map(|l| {
            l.tls
                .as_ref()
                .and_then(|t| t.client_validation.as_ref())
                .map(|v| v.mode)
        })
        .collect();
    assert_eq!(
        modes,
        [
            Some(ClientValidationMode::AllowValidOnly),
            Some(ClientValidationMode::AllowInsecureFallback),
            None
        ]
    );
    assert_eq!(
        cond(
            &p.status.conditions,
            ConditionType::InsecureFrontendValidationMode
        ),
        (True, Reason::ConfigurationChanged)
    );
    // A perPort entry without validation turns it off for that port.
    let p = programmed(&format!(
        "{}{ca}",
        mtls_gateway(&format!(
            "{{default: {{validation: {{caCertificateRefs: [{local}]}}}}, perPort: [{{port: 8443, tls: {{}}}}]}}"
        ))
    ));
    assert!(
        p.config.listeners[1]
            .tls
            .as_ref()
            .expect("tls")
            .client_validation
            .is_none()
    );

    // Unresolvable references: ResolvedRefs=False with the spec's reason, and (all of them
    // failing) the HTTPS listeners are neither accepted nor programmed. HTTP still serves.
    let failing: Vec<(String, Reason)> = vec![
        (default(local, ""), Reason::InvalidCACertificateRef),
        (
            format!("{}{no_key}", default(local, "")),
            Reason::InvalidCACertificateRef,
        ),
        (
            format!("{}{not_pem}", default(local, "")),
            Reason::InvalidCACertificateRef,
        ),
        (
            format!("{}{ca}", default("{group: '', kind: Secret, name: ca}", "")),
            Reason::InvalidCACertificateKind,
        ),
        (
            format!(
                "{}{ca}",
                default("{group: example.com, kind: ConfigMap, name: ca}", "")
            ),
            Reason::InvalidCACertificateKind,
        ),
        (
            format!("{}{ca_elsewhere}", default(remote, "")),
            Reason::RefNotPermitted,
        ),
    ];
    for (yaml, reason) in &failing {
        let p = programmed(yaml);
        for name in ["https", "https-8443"] {
            let listener = p.status.listener(name).expect("listener");
            assert_eq!(
                cond(&listener.conditions, ConditionType::ResolvedRefs),
                (False, *reason),
                "{name}: {yaml}"
            );
            assert_eq!(
                cond(&listener.conditions, ConditionType::Accepted),
                (False, Reason::NoValidCACertificate),
                "{name}: {yaml}"
            );
            assert_eq!(
                cond(&listener.conditions, ConditionType::Programmed),
                (False, Reason::Invalid)
            );
        }
        assert_eq!(listener_names(&p), ["http"], "{yaml}");
        assert_eq!(
            cond(&p.status.conditions, ConditionType::Accepted),
            (True, Reason::ListenersNotValid)
        );
    }

    // With a grant the cross-namespace ConfigMap resolves.
    let p = programmed(&format!("{}{ca_elsewhere}{grant}", default(remote, "")));
    assert_eq!(listener_names(&p), ["https", "https-8443", "http"]);

    // One good and one bad reference: served with the good CA only, ResolvedRefs=False.
    let p = programmed(&format!(
        "{}{ca}",
        default(
            &format!("{local}, {{group: '', kind: ConfigMap, name: gone}}"),
            ""
        )
    ));
    assert_eq!(listener_names(&p), ["https", "https-8443", "http"]);
    let https = p.status.listener("https").expect("https");
    assert_eq!(
        cond(&https.conditions, ConditionType::ResolvedRefs),
        (False, Reason::InvalidCACertificateRef)
    );
    assert_eq!(
        cond(&https.conditions, ConditionType::Accepted),
        (True, Reason::Accepted)
    );

    // An unknown mode fails closed too.
    let p = programmed(&format!("{}{ca}", default(local, ", mode: Sometimes")));
    assert_eq!(listener_names(&p), ["http"]);
    let https = p.status.listener("https").expect("https");
    assert_eq!(
        cond(&https.conditions, ConditionType::Accepted),
        (False, Reason::UnsupportedValue)
    );
}

#[test]
fn http_and_grpc_routes_do_not_share_a_listener() {
    let grpc = |name: &str, created: &str, hostnames: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: '{created}'}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  hostnames: {hostnames}\n  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8081}}]}}]\n"
        )
    };
    let http = |name: &str, created: &str, hostnames: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: '{created}'}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  hostnames: {hostnames}\n"
        )
    };
    // Intersecting hostnames: the older GRPCRoute wins the listener.
    let objects = set(&format!(
        "{}{}",
        grpc("g", "2024-01-01T00:00:00Z", "[grpc.example.com]"),
        http("h", "2024-06-01T00:00:00Z", "['*.example.com']")
    ));
    let programmed = program(&objects, &[], &same_namespace());
    assert_eq!(
        cond(
            &route_conditions(&programmed, RouteKind::Grpc, "infra/g"),
            ConditionType::Accepted
        ),
        (True, Reason::Accepted)
    );
    assert_eq!(
        cond(
            &route_conditions(&programmed, RouteKind::Http, "infra/h"),
            ConditionType::Accepted
        ),
        (False, Reason::NotAllowedByListeners)
    );
    assert_eq!(programmed.config.grpc_routes.len(), 1);
    assert!(programmed.config.http_routes.is_empty());
    assert_eq!(programmed.status.listeners[0].attached_routes, 1);
    assert_eq!(programmed.config.backends[0].app_protocol, AppProtocol::H2c);

    // Disjoint hostnames: both attach.
    let objects = set(&format!(
        "{}{}",
        grpc("g", "2024-01-01T00:00:00Z", "[grpc.example.com]"),
        http("h", "2024-06-01T00:00:00Z", "[www.example.com]")
    ));
    let programmed = program(&objects, &[], &same_namespace());
    assert_eq!(programmed.config.grpc_routes.len(), 1);
    assert_eq!(programmed.config.http_routes.len(), 1);
    assert_eq!(programmed.status.listeners[0].attached_routes, 2);

    // A catch-all route (no hostnames listed) intersects nothing: a GRPCRoute for one host
    // does not take a catch-all HTTPRoute off the air, whichever is older or named first.
    for (grpc_created, http_created) in [
        ("2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"),
        ("2024-06-01T00:00:00Z", "2024-01-01T00:00:00Z"),
    ] {
        let objects = set(&format!(
            "{}{}",
            grpc("g", grpc_created, "[grpc.example.com]"),
            http("web", http_created, "[]")
        ));
        let programmed = program(&objects, &[], &same_namespace());
        for (kind, key) in [(RouteKind::Grpc, "infra/g"), (RouteKind::Http, "infra/web")] {
            assert_eq!(
                cond(
                    &route_conditions(&programmed, kind, key),
                    ConditionType::Accepted
                ),
                (True, Reason::Accepted),
                "{key}"
            );
        }
        assert_eq!(programmed.status.listeners[0].attached_routes, 2);
    }
}

#[test]
fn shared_routes_replace_local_ones_with_the_same_key() {
    let local = http_route("web", "infra", "{name: same-namespace}", &backend(8080));
    let objects = set(&local);
    let shared = http_route_from_json(&serde_json::json!({
        "metadata": {"name": "web", "namespace": "infra"},
        "spec": {
            "parentRefs": [{"name": "same-namespace"}],
            "hostnames": ["global.example.com"],
            "rules": [{"backendRefs": [{"name": "infra-backend-v2", "port": 8080}]}]
        }
    }))
    .expect("valid shared route");
    let extra = http_route_from_json(&serde_json::json!({
        "metadata": {"name": "only-shared", "namespace": "infra"},
        "spec": {"parentRefs": [{"name": "same-namespace"}]}
    }))
    .expect("valid shared route");
    let programmed = program(&objects, &[shared, extra], &same_namespace());
    let keys: Vec<(String, Vec<String>)> = programmed
        .config
        .http_routes
        .iter()
        .map(|r| (r.route.key.to_string(), r.route.hostnames.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            ("infra/only-shared".to_string(), vec![]),
            (
                "infra/web".to_string(),
                vec!["global.example.com".to_string()]
            ),
        ]
    );
    let statuses: Vec<(RouteOrigin, (ConditionStatus, Reason))> = programmed
        .status
        .routes
        .iter()
        .filter(|r| r.key == key("infra/web"))
        .map(|r| {
            (
                r.origin,
                cond(&r.parents[0].conditions, ConditionType::Accepted),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (RouteOrigin::Local, (False, Reason::Shadowed)),
            (RouteOrigin::Shared, (True, Reason::Accepted)),
        ]
    );
    // The shadowed route's backends are not programmed; the shared route's are.
    let backends: Vec<&str> = programmed
        .config
        .backends
        .iter()
        .map(|b| b.key.name.as_str())
        .collect();
    assert_eq!(backends, ["infra-backend-v2"]);
    assert_eq!(programmed.status.listeners[0].attached_routes, 2);
}

#[test]
fn partially_invalid_and_rejected_routes_report_it() {
    let routes = [
        http_route(
            "partial",
            "infra",
            "{name: same-namespace}",
            "[{matches: [{path: {value: /ok}}]}, {matches: [{path: {value: bad}}]}]",
        ),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: rejected, namespace: infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [Upper.example.com]\n".to_string(),
    ]
    .concat();
    let programmed = program(&set(&routes), &[], &same_namespace());
    let partial = route_conditions(&programmed, RouteKind::Http, "infra/partial");
    assert_eq!(
        cond(&partial, ConditionType::Accepted),
        (True, Reason::Accepted)
    );
    assert_eq!(
        cond(&partial, ConditionType::PartiallyInvalid),
        (True, Reason::UnsupportedValue)
    );
    let message = &partial
        .iter()
        .find(|c| c.type_ == ConditionType::PartiallyInvalid)
        .expect("c")
        .message;
    assert_eq!(
        message,
        "Dropped Rule(s): spec.rules[1].matches[0].path.value: must start with '/'"
    );
    let rejected = route_conditions(&programmed, RouteKind::Http, "infra/rejected");
    assert_eq!(
        cond(&rejected, ConditionType::Accepted),
        (False, Reason::UnsupportedValue)
    );
    let names: Vec<&str> = programmed
        .config
        .http_routes
        .iter()
        .map(|r| r.route.key.name.as_str())
        .collect();
    assert_eq!(names, ["partial"]);
    assert_eq!(programmed.config.http_routes[0].route.rules.len(), 1);
}

#[test]
fn mirrors_with_unresolved_backends_are_not_configured() {
    let objects = set(&http_route(
        "mirror",
        "infra",
        "{name: same-namespace}",
        "[{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}}, {type: RequestMirror, requestMirror: {backendRef: {name: gone, port: 8080}}}], backendRefs: [{name: infra-backend-v1, port: 8080}]}]",
    ));
    let programmed = program(&objects, &[], &same_namespace());
    let filters = &programmed.config.http_routes[0].route.rules[0].filters;
    assert_eq!(filters.len(), 1);
    let HttpFilter::RequestMirror(mirror) = &filters[0] else {
        panic!("expected the valid mirror");
    };
    assert!(
        matches!(&mirror.backend_ref.resolution, Resolution::Service(k) if k.name == "infra-backend-v2")
    );
    let conditions = route_conditions(&programmed, RouteKind::Http, "infra/mirror");
    assert_eq!(
        cond(&conditions, ConditionType::ResolvedRefs),
        (False, Reason::BackendNotFound)
    );
    let backends: Vec<&str> = programmed
        .config
        .backends
        .iter()
        .map(|b| b.key.name.as_str())
        .collect();
    assert_eq!(backends, ["infra-backend-v1", "infra-backend-v2"]);
}

#[test]
fn tls_routes_attach_to_passthrough_listeners_only() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: tls, namespace: infra}
spec:
  parentRefs: [{name: multi}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: on-http, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
";
    let objects = set(&format!("{MULTI}{routes}"));
    let programmed = program(&objects, &[], &key("infra/multi"));
    assert_eq!(programmed.config.tls_routes.len(), 1);
    let attached = &programmed.config.tls_routes[0];
    assert_eq!(attached.attachments[0].listener, "tls-only");
    assert_eq!(attached.attachments[0].hostnames, ["abc.example.com"]);
    assert!(matches!(
        attached.route.backend_refs[0].backend_ref.resolution,
        Resolution::Service(_)
    ));
    let programmed = program(&objects, &[], &same_namespace());
    assert_eq!(
        cond(
            &route_conditions(&programmed, RouteKind::Tls, "infra/on-http"),
            ConditionType::Accepted
        ),
        (False, Reason::NotAllowedByListeners)
    );
}

#[test]
fn gateway_level_conditions() {
    let gateway = |extra: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: infra}}\nspec:\n  gatewayClassName: meridian\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n{extra}"
        )
    };
    let cases: &[(&str, (ConditionStatus, Reason), bool)] = &[
        ("", (True, Reason::Accepted), true),
        (
            "  addresses: [{type: IPAddress, value: '::1'}, {value: 127.0.0.9}]\n",
            (True, Reason::Accepted),
            true,
        ),
        (
            "  addresses: [{type: Hostname, value: gw.example.com}]\n",
            (False, Reason::UnsupportedAddress),
            false,
        ),
        (
            "  infrastructure: {parametersRef: {group: example.com, kind: Params, name: p}}\n",
            (False, Reason::InvalidParameters),
            false,
        ),
    ];
    for (extra, accepted, programmed_ok) in cases {
        let programmed = program(&set(&gateway(extra)), &[], &key("infra/g"));
        assert_eq!(
            cond(&programmed.status.conditions, ConditionType::Accepted),
            *accepted,
            "{extra}"
        );
        let expected_programmed = if *programmed_ok {
            (True, Reason::Programmed)
        } else {
            (False, Reason::Invalid)
        };
        assert_eq!(
            cond(&programmed.status.conditions, ConditionType::Programmed),
            expected_programmed,
            "{extra}"
        );
        assert_eq!(
            programmed.config.listeners.is_empty(),
            !programmed_ok,
            "{extra}"
        );
    }
    let programmed = program(
        &set(&gateway(
            "  addresses: [{type: IPAddress, value: '::1'}, {value: 127.0.0.9}]\n",
        )),
        &[],
        &key("infra/g"),
    );
    let addresses: Vec<String> = programmed.config.listeners[0]
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addresses, ["::1", "127.0.0.9"]);

    let missing = program(&set(""), &[], &key("infra/missing"));
    assert_eq!(
        cond(&missing.status.conditions, ConditionType::Accepted),
        (False, Reason::Invalid)
    );
    assert!(missing.config.listeners.is_empty());
}

#[test]
fn gateways_are_selected_by_class() {
    let all = set("");
    let names: Vec<String> = gateways(&all).iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "infra/all-namespaces",
            "infra/backend-namespaces",
            "infra/same-namespace"
        ]
    );
    let other_class = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: theirs, namespace: infra}\nspec:\n  gatewayClassName: envoy\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";
    assert!(!gateways(&set(other_class)).contains(&key("infra/theirs")));
    // Without any GatewayClass every Gateway is ours (a plain directory).
    let (objects, _) = parse_documents(other_class, "x.yaml");
    let (bare, _) = ObjectSet::from_objects(objects);
    assert_eq!(gateways(&bare), [key("infra/theirs")]);
}

#[test]
fn one_route_with_two_parent_refs_to_one_gateway_counts_once_per_listener() {
    let objects = set(&format!(
        "{MULTI}{}",
        http_route(
            "r",
            "infra",
            "{name: multi, sectionName: http}, {name: multi, port: 80}",
            "[{}]"
        )
    ));
    let programmed = program(&objects, &[], &key("infra/multi"));
    let status = programmed
        .status
        .route(RouteKind::Http, &key("infra/r"))
        .expect("status");
    assert_eq!(status.parents.len(), 2);
    let counts: Vec<u32> = programmed
        .status
        .listeners
        .iter()
        .map(|l| l.attached_routes)
        .collect();
    assert_eq!(counts, [1, 0, 1, 1, 0]);
    let listeners: Vec<&str> = programmed.config.http_routes[0]
        .attachments
        .iter()
        .map(|a| a.listener.as_str())
        .collect();
    assert_eq!(listeners, ["http", "specific", "wildcard"]);
}

#[test]
fn shared_route_json_round_trips() {
    let value = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "https"}],
            "hostnames": ["app.example.com", "*.app.example.com"],
            "rules": [{
                "name": "main",
                "matches": [
                    {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-v", "value": "2"}], "method": "GET"},
                    {"path": {"type": "RegularExpression", "value": "/v[0-9]+"}, "queryParams": [{"type": "RegularExpression", "name": "q", "value": "a.*"}]}
                ],
                "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}], "add": [{"name": "c", "value": "d"}], "remove": ["e"]}},
                    {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}},
                    {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 80}, "fraction": {"numerator": 1, "denominator": 3}}},
                    {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 80}, "percent": 20}},
                    {"type": "CORS", "cors": {"allowOrigins": ["https://a.example"], "allowCredentials": true, "allowMethods": ["GET"], "maxAge": 60}}
                ],
                "backendRefs": [
                    {"name": "web", "port": 8080, "weight": 3, "filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "internal", "path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"}}}]},
                    {"group": "", "kind": "Service", "name": "web2", "namespace": "other", "port": 8080}
                ],
                "timeouts": {"request": "10s", "backendRequest": "2s500ms"},
                "retry": {"codes": [500, 503], "attempts": 2, "backoff": "100ms"},
                "sessionPersistence": {"sessionName": "shop", "absoluteTimeout": "1h", "idleTimeout": "5m", "cookieConfig": {"lifetimeType": "Permanent"}}
            }, {
                "backendRefs": [{"name": "web", "port": 8080}],
                "sessionPersistence": {"type": "Header", "sessionName": "x-session"}
            }, {
                "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
                "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "port": 443, "statusCode": 308, "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}]
            }]
        }
    });
    let route: HttpRoute = http_route_from_json(&value).expect("valid");
    assert_eq!(route.created_unix_ms, 1_714_557_600_000);
    let rendered = crate::http_route_to_json(&route);
    let again = http_route_from_json(&rendered).expect("rendered form is valid");
    assert_eq!(again, route);
    assert_eq!(
        rendered["metadata"]["creationTimestamp"],
        "2024-05-01T10:00:00Z"
    );
    assert_eq!(
        rendered["spec"]["rules"][0]["timeouts"]["backendRequest"],
        "2s500ms"
    );
    assert_eq!(rendered["kind"], "HTTPRoute");
    assert!(route.rules[0].session_persistence.is_some());
    assert!(route.rules[1].session_persistence.is_some());
}

#[test]
fn admin_api_rejects_anything_invalid_with_field_paths() {
    let cases: &[(serde_json::Value, &[&str])] = &[
        (
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"rules": [{"matches": [{"path": {"value": "x"}}]}, {}]}}),
            &[
                "request HTTPRoute default/web: spec.rules[0].matches[0].path.value: must start with '/'",
            ],
        ),
        (
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [{"name": "s", "port": "80"}]}]}}),
            &[
                "request HTTPRoute default/web: spec.rules[0].backendRefs[0].port: invalid type: string \"80\", expected an integer",
            ],
        ),
        (
            serde_json::json!({"kind": "Gateway", "metadata": {"name": "web"}}),
            &["request: kind: expected HTTPRoute, found \"Gateway\""],
        ),
        (
            serde_json::json!({"spec": {}}),
            &["request HTTPRoute: metadata.name: required field is missing"],
        ),
        (
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"rules": []}}),
            &["request HTTPRoute default/web: the route has no rules"],
        ),
    ];
    for (value, expected) in cases {
        let problems: Vec<String> = http_route_from_json(value)
            .expect_err("invalid")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems, *expected, "{value}");
    }
}

#[test]
fn gateway_classes_are_accepted_when_ours() {
    let class = |controller: &str, parameters: &str| {
        let text = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: c, generation: 2}}\nspec:\n  controllerName: {controller}\n{parameters}"
        );
        let (objects, problems) = parse_documents(&text, "c.yaml");
        assert!(problems.is_empty(), "{problems:?}");
        let (set, _) = ObjectSet::from_objects(objects);
        set.gateway_classes[0].clone()
    };
    let ours = gateway_class_conditions(&class(CONTROLLER_NAME, "")).expect("ours");
    assert_eq!(
        cond(&ours, ConditionType::Accepted),
        (True, Reason::Accepted)
    );
    assert_eq!(ours[0].observed_generation, 2);
    let with_parameters = gateway_class_conditions(&class(
        CONTROLLER_NAME,
        "  parametersRef: {group: example.com, kind: Config, name: x}\n",
    ))
    .expect("ours");
    assert_eq!(
        cond(&with_parameters, ConditionType::Accepted),
        (False, Reason::InvalidParameters)
    );
    assert!(gateway_class_conditions(&class("example.com/other", "")).is_none());
}

// === BackendTLSPolicy ===

/// A PEM certificate usable as a trust anchor.
fn ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["backend-ca.example".to_string()])
        .expect("rcgen")
        .cert
        .pem()
}

fn config_map(name: &str, ca_crt: &str) -> String {
    let indented: String = ca_crt.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: infra}}\ndata:\n  ca.crt: |\n{indented}"
    )
}

/// A policy in `infra` named `name`; `target` and `validation` are flow-style YAML.
fn tls_policy(name: &str, created: &str, target: &str, validation: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: \"{created}\"}}\nspec:\n  targetRefs: [{target}]\n  validation: {validation}\n"
    )
}

const TARGET_HTTP: &str = "{group: '', kind: Service, name: infra-backend-v1, sectionName: http}";
const TARGET_SERVICE: &str = "{group: '', kind: Service, name: infra-backend-v1}";
const VALID: &str =
    "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: abc.example.com}";

/// Programs `extra` plus a route to infra-backend-v1:8080.
fn program_with(extra: &str) -> Programmed {
    let text = format!(
        "{extra}{}",
        http_route("web", "infra", "{name: same-namespace}", &backend(8080))
    );
    program(&set(&text), &[], &same_namespace())
}

fn policy_conditions(programmed: &Programmed, name: &str) -> Vec<Condition> {
    programmed
        .status
        .policy(&key(&format!("infra/{name}")))
        .unwrap_or_else(|| panic!("no status for {name}: {:?}", programmed.status.policies))
        .conditions
        .clone()
}

fn resolution(programmed: &Programmed) -> &Resolution {
    &programmed.config.http_routes[0].route.rules[0].backend_refs[0]
        .backend_ref
        .resolution
}

#[test]
fn a_valid_backend_tls_policy_programs_tls_on_its_service_port() {
    let ca = ca_pem();
    let programmed = program_with(&format!(
        "{}{}",
        config_map("ca", &ca),
        tls_policy(
            "tls",
            "2024-01-01T00:00:00Z",
            TARGET_HTTP,
            "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: abc.example.com, subjectAltNames: [{type: Hostname, hostname: web.example.com}, {type: URI, uri: 'spiffe://example.com/web'}]}",
        )
    ));
    let backend = &programmed.config.backends[0];
    let tls = backend.tls.as_ref().expect("tls programmed");
    assert_eq!(tls.hostname, "abc.example.com");
    match &tls.ca {
        CaSource::Pem(pem) => assert_eq!(pem.trim(), ca.trim()),
        other => panic!("CA source {other:?}"),
    }
    assert_eq!(
        tls.subject_alt_names,
        [
            SubjectAltName::Hostname("web.example.com".into()),
            SubjectAltName::Uri("spiffe://example.com/web".into()),
        ]
    );
    let conditions = policy_conditions(&programmed, "tls");
    assert_eq!(
        cond(&conditions, ConditionType::Accepted),
        (True, Reason::Accepted)
    );
    assert_eq!(
        cond(&conditions, ConditionType::ResolvedRefs),
        (True, Reason::ResolvedRefs)
    );
    let route = route_conditions(&programmed, RouteKind::Http, "infra/web");
    assert_eq!(
        cond(&route, ConditionType::ResolvedRefs),
        (True, Reason::ResolvedRefs)
    );
}

#[test]
fn a_well_known_system_policy_programs_the_system_trust_store() {
    let programmed = program_with(&tls_policy(
        "tls",
        "2024-01-01T00:00:00Z",
        TARGET_HTTP,
        "{wellKnownCACertificates: System, hostname: abc.example.com}",
    ));
    let tls = programmed.config.backends[0]
        .tls
        .as_ref()
        .expect("tls programmed");
    assert_eq!(tls.ca, CaSource::System);
    assert_eq!(tls.hostname, "abc.example.com");
    let conditions = policy_conditions(&programmed, "tls");
    assert_eq!(
        cond(&conditions, ConditionType::Accepted),
        (True, Reason::Accepted)
    );
    assert_eq!(
        cond(&conditions, ConditionType::ResolvedRefs),
        (True, Reason::ResolvedRefs)
    );
}

#[test]
fn a_policy_for_another_port_leaves_this_port_in_cleartext() {
    let programmed = program_with(&format!(
        "{}{}",
        config_map("ca", &ca_pem()),
        tls_policy(
            "tls",
            "2024-01-01T00:00:00Z",
            "{group: '', kind: Service, name: infra-backend-v1, sectionName: h2c}",
            VALID,
        )
    ));
    assert!(programmed.config.backends[0].tls.is_none());
    // The policy applies to no backend of this Gateway, so the Gateway is not its ancestor.
    assert!(programmed.status.policies.is_empty());
}

#[test]
fn an_unusable_policy_makes_its_backend_invalid_never_cleartext() {
    let cases = [
        (
            String::new(),
            VALID,
            Reason::InvalidCACertificateRef,
            (False, Reason::NoValidCACertificate),
            "ConfigMap infra/ca not found",
        ),
        (
            config_map("ca", "not a certificate"),
            VALID,
            Reason::InvalidCACertificateRef,
            (False, Reason::NoValidCACertificate),
            "holds no PEM certificate",
        ),
        (
            String::new(),
            "{caCertificateRefs: [{group: '', kind: Secret, name: ca}], hostname: abc.example.com}",
            Reason::InvalidKind,
            (False, Reason::NoValidCACertificate),
            "Secret ca is not supported",
        ),
        (
            String::new(),
            "{wellKnownCACertificates: Public, hostname: abc.example.com}",
            Reason::Invalid,
            (False, Reason::Invalid),
            "unsupported value \"Public\" (expected System)",
        ),
        (
            config_map("ca", &ca_pem()),
            "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], wellKnownCACertificates: System, hostname: abc.example.com}",
            Reason::Invalid,
            (False, Reason::Invalid),
            "mutually exclusive",
        ),
        (
            config_map("ca", &ca_pem()),
            "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: '*.example.com'}",
            Reason::Invalid,
            (False, Reason::Invalid),
            "spec.validation.hostname",
        ),
    ];
    for (extra, validation, route_reason, accepted, fragment) in cases {
        let programmed = program_with(&format!(
            "{extra}{}",
            tls_policy("tls", "2024-01-01T00:00:00Z", TARGET_HTTP, validation)
        ));
        match resolution(&programmed) {
            Resolution::Invalid { reason, message } => {
                assert_eq!(reason, route_reason.as_str(), "{validation}");
                assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            }
            other => panic!("{validation}: backend resolved to {other:?}"),
        }
        assert!(programmed.config.backends.is_empty(), "{validation}");
        let route = route_conditions(&programmed, RouteKind::Http, "infra/web");
        assert_eq!(
            cond(&route, ConditionType::ResolvedRefs),
            (False, route_reason),
            "{validation}"
        );
        let conditions = policy_conditions(&programmed, "tls");
        assert_eq!(
            cond(&conditions, ConditionType::Accepted),
            accepted,
            "{validation}"
        );
    }
}

#[test]
fn schema_violations_are_reported_with_their_field_path() {
    let text = tls_policy(
        "tls",
        "2024-01-01T00:00:00Z",
        TARGET_HTTP,
        "{hostname: abc.example.com, subjectAltNames: [{type: Hostname, uri: 'spiffe://x/y'}]}",
    );
    // Not a problem of the file (a source would then keep the file's last good content: for a
    // new file, no policy, and cleartext), but kept, marked invalid, so its Service fails
    // closed, and the violations are the policy's condition.
    let (objects, problems) = parse_documents(&text, "p.yaml");
    assert_eq!(problems, []);
    assert_eq!(objects.len(), 1);
    let programmed = program_with(&text);
    let accepted = policy_conditions(&programmed, "tls")
        .into_iter()
        .find(|c| c.type_ == ConditionType::Accepted)
        .expect("Accepted");
    assert_eq!((accepted.status, accepted.reason), (False, Reason::Invalid));
    for violation in [
        "spec.validation: one of caCertificateRefs and wellKnownCACertificates is required",
        "spec.validation.subjectAltNames[0]: type Hostname needs hostname and no uri",
    ] {
        assert!(accepted.message.contains(violation), "{}", accepted.message);
    }
}

#[test]
fn conflicting_policies_the_port_specific_then_the_oldest_wins() {
    let ca = ca_pem();
    let valid_for = |host: &str| {
        format!(
            "{{caCertificateRefs: [{{group: '', kind: ConfigMap, name: ca}}], hostname: {host}}}"
        )
    };
    // Whole-Service policies: the oldest wins, whatever the names.
    let programmed = program_with(&format!(
        "{}{}{}",
        config_map("ca", &ca),
        tls_policy(
            "a-new",
            "2024-06-01T00:00:00Z",
            TARGET_SERVICE,
            &valid_for("new.example.com")
        ),
        tls_policy(
            "b-old",
            "2024-01-01T00:00:00Z",
            TARGET_SERVICE,
            &valid_for("old.example.com")
        ),
    ));
    let tls = programmed.config.backends[0].tls.as_ref().expect("tls");
    assert_eq!(tls.hostname, "old.example.com");
    let loser = policy_conditions(&programmed, "a-new");
    assert_eq!(
        cond(&loser, ConditionType::Accepted),
        (False, Reason::Conflicted)
    );
    let winner = policy_conditions(&programmed, "b-old");
    assert_eq!(
        cond(&winner, ConditionType::Accepted),
        (True, Reason::Accepted)
    );

    // A policy naming the port beats an older one naming the whole Service.
    let programmed = program_with(&format!(
        "{}{}{}",
        config_map("ca", &ca),
        tls_policy(
            "port",
            "2024-06-01T00:00:00Z",
            TARGET_HTTP,
            &valid_for("port.example.com")
        ),
        tls_policy(
            "service",
            "2024-01-01T00:00:00Z",
            TARGET_SERVICE,
            &valid_for("svc.example.com")
        ),
    ));
    let tls = programmed.config.backends[0].tls.as_ref().expect("tls");
    assert_eq!(tls.hostname, "port.example.com");
    let loser = policy_conditions(&programmed, "service");
    assert_eq!(
        cond(&loser, ConditionType::Accepted),
        (False, Reason::Conflicted)
    );

    // The winner decides even when it is the invalid one: no fallback to the loser.
    let programmed = program_with(&format!(
        "{}{}{}",
        config_map("ca", &ca),
        tls_policy(
            "broken",
            "2024-01-01T00:00:00Z",
            TARGET_HTTP,
            "{caCertificateRefs: [{group: '', kind: ConfigMap, name: missing}], hostname: abc.example.com}"
        ),
        tls_policy(
            "fine",
            "2024-06-01T00:00:00Z",
            TARGET_HTTP,
            &valid_for("abc.example.com")
        ),
    ));
    assert!(matches!(
        resolution(&programmed),
        Resolution::Invalid { .. }
    ));
    assert!(programmed.config.backends.is_empty());
}

#[test]
fn frontend_validation_covers_every_listener_that_terminates_tls_on_the_port() {
    // An HTTPS listener and a TLS listener in Terminate mode share port 443's one handshake:
    // both get its validation, so the gateway is never sent a port with two answers.
    let cert = tls_secret("cert", "infra", "example.org");
    let ca = ca_config_map("ca", "infra");
    let gateway = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: https, namespace: infra}\nspec:\n  gatewayClassName: meridian\n  tls: {frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}}}\n  listeners:\n  - {name: https, port: 443, protocol: HTTPS, hostname: example.org, tls: {certificateRefs: [{name: cert}]}}\n  - {name: tls, port: 443, protocol: TLS, hostname: db.example.org, tls: {mode: Terminate, certificateRefs: [{name: cert}]}}\n";
    let p = program(
        &set(&format!("{cert}{ca}{gateway}")),
        &[],
        &key("infra/https"),
    );
    let validations: Vec<_> = p
        .config
        .listeners
        .iter()
        .map(|l| {
            l.tls
                .as_ref()
                .and_then(|t| t.client_validation.clone())
                .map(|v| v.ca_certificates.len())
        })
        .collect();
    assert_eq!(validations, [Some(1), Some(1)]);

    // A ca.crt that is PEM but not a usable CA certificate is an unresolved reference here,
    // not a config the gateway would have to reject.
    let garbage = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: infra}\ndata: {ca.crt: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n\"}\n";
    let p = program(
        &set(&format!("{cert}{garbage}{gateway}")),
        &[],
        &key("infra/https"),
    );
    assert!(p.config.listeners.is_empty(), "{:?}", p.config.listeners);
    let https = p.status.listener("https").expect("https");
    assert_eq!(
        cond(&https.conditions, ConditionType::ResolvedRefs),
        (False, Reason::InvalidCACertificateRef)
    );
}

// === backend client certificate ===

/// A Gateway with an HTTP listener whose `spec.tls.backend.clientCertificateRef` is
/// `reference` (flow-style YAML).
fn backend_client_gateway(reference: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: client, namespace: infra}}\nspec:\n  gatewayClassName: meridian\n  listeners:\n  - {{name: http, port: 80, protocol: HTTP}}\n  tls:\n    backend:\n      clientCertificateRef: {reference}\n"
    )
}

#[test]
fn the_backend_client_certificate_resolves_from_a_secret() {
    let good = tls_secret("client", "infra", "gateway.example.org");
    let elsewhere = tls_secret("client", "web-backend", "gateway.example.org");
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: certs, namespace: web-backend}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]\n  to: [{group: '', kind: Secret}]\n";
    let opaque = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: client, namespace: infra}\ntype: Opaque\ndata: {tls.crt: eA==, tls.key: eQ==}\n";
    // (objects, the Secret programmed or the Gateway's ResolvedRefs reason and message).
    type Case = (String, Result<&'static str, (Reason, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            format!("{}{good}", backend_client_gateway("{name: client}")),
            Ok("infra/client"),
        ),
        (
            format!(
                "{}{elsewhere}{grant}",
                backend_client_gateway("{name: client, namespace: web-backend}")
            ),
            Ok("web-backend/client"),
        ),
        (
            backend_client_gateway("{name: client}"),
            Err((
                Reason::InvalidClientCertificateRef,
                "Secret infra/client not found",
            )),
        ),
        (
            format!("{}{opaque}", backend_client_gateway("{name: client}")),
            Err((
                Reason::InvalidClientCertificateRef,
                "expected kubernetes.io/tls",
            )),
        ),
        (
            format!(
                "{}{good}",
                backend_client_gateway("{group: '', kind: ConfigMap, name: client}")
            ),
            Err((Reason::InvalidClientCertificateRef, "only core Secrets")),
        ),
        (
            format!(
                "{}{elsewhere}",
                backend_client_gateway("{name: client, namespace: web-backend}")
            ),
            Err((Reason::RefNotPermitted, "no ReferenceGrant allows it")),
        ),
    ];
    for (objects_yaml, expected) in &cases {
        let programmed = program(&set(objects_yaml), &[], &key("infra/client"));
        let conditions = &programmed.status.conditions;
        // A bad reference never costs the Gateway its acceptance.
        assert_eq!(
            cond(conditions, ConditionType::Accepted),
            (True, Reason::Accepted),
            "{objects_yaml}"
        );
        let resolved = conditions
            .iter()
            .find(|c| c.type_ == ConditionType::ResolvedRefs)
            .expect("ResolvedRefs");
        match expected {
            Ok(secret) => {
                assert_eq!(
                    (resolved.status, resolved.reason),
                    (True, Reason::ResolvedRefs)
                );
                let cert = programmed
                    .config
                    .backend_client_certificate
                    .as_ref()
                    .expect("client certificate programmed");
                assert_eq!(cert.key, key(secret));
                assert!(cert.cert_chain_pem.contains("BEGIN CERTIFICATE"));
                assert!(cert.private_key_pem.contains("PRIVATE KEY"));
            }
            Err((reason, fragment)) => {
                assert_eq!((resolved.status, resolved.reason), (False, *reason));
                assert!(
                    resolved.message.contains(fragment),
                    "{:?} lacks {fragment:?}",
                    resolved.message
                );
                // Backends are dialled without a client certificate.
                assert!(programmed.config.backend_client_certificate.is_none());
            }
        }
    }
}

#[test]
fn a_gateway_without_backend_tls_settings_has_no_resolved_refs_condition() {
    let programmed = program(&set(""), &[], &same_namespace());
    assert!(programmed.config.backend_client_certificate.is_none());
    assert!(
        programmed
            .status
            .conditions
            .iter()
            .all(|c| c.type_ != ConditionType::ResolvedRefs)
    );
}

#[test]
fn terminating_endpoints_that_still_serve_take_traffic_only_when_none_is_ready() {
    let slice = |name: &str, endpoints: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  ports: [{{port: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: infra, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: {endpoints}\nports: [{{port: 8080}}]\n"
        )
    };
    let terminating =
        "{addresses: [10.1.0.2], conditions: {ready: false, serving: true, terminating: true}}";
    let stopped =
        "{addresses: [10.1.0.3], conditions: {ready: false, serving: false, terminating: true}}";
    let cases = [
        // The last pod of a scale-down, still serving: it takes the traffic.
        (
            "last",
            format!("[{terminating}, {stopped}]"),
            vec![("10.1.0.2:8080", true), ("10.1.0.3:8080", false)],
        ),
        // A ready pod is there: the terminating one gets nothing.
        (
            "rollout",
            format!("[{{addresses: [10.1.0.1]}}, {terminating}]"),
            vec![("10.1.0.1:8080", true), ("10.1.0.2:8080", false)],
        ),
    ];
    for (name, endpoints, want) in cases {
        let objects = set(&format!(
            "{}{}",
            slice(name, &endpoints),
            http_route(
                "r",
                "infra",
                "{name: same-namespace}",
                &format!("[{{backendRefs: [{{name: {name}, port: 8080}}]}}]"),
            )
        ));
        let config = program(&objects, &[], &same_namespace()).config;
        let got: Vec<(String, bool)> = config.backends[0]
            .endpoints
            .iter()
            .map(|e| (e.addr.to_string(), e.ready))
            .collect();
        let want: Vec<(String, bool)> = want.into_iter().map(|(a, r)| (a.to_string(), r)).collect();
        assert_eq!(got, want, "{name}");
    }
}
