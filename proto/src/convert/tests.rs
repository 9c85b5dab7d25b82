//! Round-trip and error-path tests for the wire conversions.
//!
//! The fixtures cover every enum variant and every optional field (set and unset); the
//! `fixtures_cover_every_variant` test enforces that with exhaustive matches, so a new model
//! variant fails to compile here until a fixture exercises it.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use prost::Message;

use super::{ConvertError, ConvertErrorKind};
use crate::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, BackendTls, CaCertificate, CaSource,
    ClientValidation, ClientValidationMode, Endpoint, GatewayConfig, Listener, ListenerProtocol,
    ListenerTls, SubjectAltName, TlsCertificate, TlsMode,
};
use crate::model::route::{
    BackendRef, Cors, GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRouteRule, HeaderMatch,
    HeaderModifier, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch, HttpRouteRule,
    ParentRef, PathMatch, PathModifier, QueryParamMatch, RequestMirror, RequestRedirect,
    Resolution, Retry, ServiceKey, SessionKind, SessionPersistence, StringMatch, Timeouts,
    TlsRoute, UrlRewrite,
};
use crate::model::{
    AllUnhealthy, CertificateUse, Cluster, ClusterHealth, ClusterName, ConditionState, Fqdn,
    GatewayProbe, GatewayRejection, HealthReport, HealthVerdict, HostnameHealth, HostnamePolicy,
    HostnameTarget, ObjectKey, Region, RouteParentConditions, Routing, SharedConfig,
    SharedConfigDelta, SharedObjectsStatus, SharedRouteStatus, SharedStatusBasis, StatusCondition,
};
use crate::pb;

// === round-trip machinery ===

/// Encodes `value`, decodes it back (both directly and through protobuf bytes) and checks
/// that nothing changed.
fn round_trip<M, P>(value: &M)
where
    M: TryFrom<P, Error = ConvertError> + PartialEq + Debug,
    P: for<'a> From<&'a M> + Message + Default + Clone,
{
    let wire = P::from(value);
    let back = M::try_from(wire.clone()).expect("decodes");
    assert_eq!(&back, value);

    let bytes = wire.encode_to_vec();
    let decoded = P::decode(bytes.as_slice()).expect("prost decodes its own bytes");
    assert_eq!(&M::try_from(decoded).expect("decodes from bytes"), value);
}

/// Converts `wire` and returns the error, failing the test if it converted.
fn decode_err<M, P>(wire: P) -> ConvertError
where
    M: TryFrom<P, Error = ConvertError> + Debug,
{
    match M::try_from(wire) {
        Ok(value) => panic!("expected an error, decoded {value:?}"),
        Err(err) => err,
    }
}

// === fixtures ===

fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(namespace, name).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn cluster() -> Cluster {
    Cluster {
        name: ClusterName::new("us-east").unwrap(),
        region: Region::new("us").unwrap(),
        addresses: vec![ip("127.0.1.1"), ip("::1")],
        drained: true,
    }
}

fn health_report() -> HealthReport {
    HealthReport {
        cluster: ClusterName::new("eu-west").unwrap(),
        seq: 981,
        gateways: vec![
            GatewayProbe {
                name: "gw-a".into(),
                address: Some(sock("127.0.1.2:8080")),
                ready: true,
                detail: "ok".into(),
            },
            GatewayProbe {
                name: "gw-b".into(),
                address: Some(sock("[::1]:8443")),
                ready: false,
                detail: "connection refused".into(),
            },
            GatewayProbe {
                name: "gw-c".into(),
                address: None,
                ready: false,
                detail: String::new(),
            },
        ],
        hostnames: vec![HostnameHealth {
            hostname: "*.demo.meridian.test".into(),
            ready_endpoints: 3,
            total_endpoints: 4,
            detail: "Service demo/old not found".into(),
        }],
        shared: Some(SharedObjectsStatus {
            shared_version: 42,
            certificates: vec![CertificateUse {
                certificate: key("infra", "wildcard"),
                gateway: key("infra", "edge"),
                listener: "https".into(),
            }],
            rejected: vec![GatewayRejection {
                gateway: key("infra", "edge"),
                error: "binding 0.0.0.0:80: address in use".into(),
            }],
            routes: vec![
                SharedRouteStatus {
                    route: key("shop", "web"),
                    parents: vec![RouteParentConditions {
                        gateway: key("infra", "edge"),
                        section_name: Some("https".into()),
                        port: Some(8443),
                        conditions: vec![
                            StatusCondition {
                                type_: "Accepted".into(),
                                status: ConditionState::True,
                                reason: "Accepted".into(),
                                message: String::new(),
                            },
                            StatusCondition {
                                type_: "ResolvedRefs".into(),
                                status: ConditionState::False,
                                reason: "BackendNotFound".into(),
                                message: "Service shop/web not found".into(),
                            },
                        ],
                    }],
                },
                SharedRouteStatus {
                    route: key("shop", "elsewhere"),
                    parents: Vec::new(),
                },
            ],
        }),
        shared_basis: SharedStatusBasis::Whole { id: 7 },
    }
}

fn hostname_policy() -> HostnamePolicy {
    HostnamePolicy {
        fqdn: Fqdn::new("app.demo.meridian.test").unwrap(),
        ttl: 30,
        targets: vec![
            HostnameTarget {
                cluster: ClusterName::new("us-east").unwrap(),
                weight: 3,
            },
            HostnameTarget {
                cluster: ClusterName::new("eu-west").unwrap(),
                weight: 0,
            },
        ],
        routing: Routing {
            geo: false,
            region_order: vec![Region::new("eu").unwrap(), Region::new("us").unwrap()],
            max_answers: 2,
            when_all_unhealthy: AllUnhealthy::FailClosed,
            panic_threshold_percent: 50,
            pinned: Some(ClusterName::new("eu-west").unwrap()),
        },
    }
}

fn cert(name: &str) -> TlsCertificate {
    TlsCertificate {
        key: key("infra", name),
        cert_chain_pem: format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".into(),
    }
}

fn ca(name: &str) -> CaCertificate {
    CaCertificate {
        config_map: key("infra", name),
        pem: format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"),
    }
}

fn service(name: &str, port: u16) -> ServiceKey {
    ServiceKey {
        namespace: "shop".into(),
        name: name.into(),
        port,
    }
}

fn backend_ref(name: &str, port: Option<u16>, resolution: Resolution) -> BackendRef {
    BackendRef {
        group: String::new(),
        kind: "Service".into(),
        namespace: "shop".into(),
        name: name.into(),
        port,
        resolution,
    }
}

fn resolved(name: &str, port: u16) -> BackendRef {
    backend_ref(name, Some(port), Resolution::Service(service(name, port)))
}

fn parent_refs() -> Vec<ParentRef> {
    vec![
        ParentRef {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
            name: "edge".into(),
            section_name: Some("https".into()),
            port: Some(8443),
        },
        ParentRef {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
            name: "edge".into(),
            section_name: None,
            port: None,
        },
    ]
}

fn http_route() -> HttpRoute {
    let api = HttpRouteRule {
        name: Some("api".into()),
        matches: vec![
            HttpRouteMatch {
                path: PathMatch::Prefix("/api".into()),
                headers: vec![
                    HeaderMatch {
                        name: "x-version".into(),
                        value: StringMatch::Exact("2".into()),
                    },
                    HeaderMatch {
                        name: "user-agent".into(),
                        value: StringMatch::RegularExpression(".*curl.*".into()),
                    },
                ],
                query_params: vec![
                    QueryParamMatch {
                        name: "animal".into(),
                        value: StringMatch::Exact("whale".into()),
                    },
                    QueryParamMatch {
                        name: "color".into(),
                        value: StringMatch::RegularExpression("bl(ue|ack)".into()),
                    },
                ],
                method: Some("GET".into()),
            },
            HttpRouteMatch {
                path: PathMatch::Exact("/healthz".into()),
                headers: vec![],
                query_params: vec![],
                method: None,
            },
            HttpRouteMatch {
                path: PathMatch::RegularExpression("/v[0-9]+/.*".into()),
                headers: vec![],
                query_params: vec![],
                method: Some("POST".into()),
            },
        ],
        filters: vec![
            HttpFilter::RequestHeaderModifier(HeaderModifier {
                set: pairs(&[("x-env", "prod")]),
                add: pairs(&[("x-trace", "1"), ("x-trace", "2")]),
                remove: strings(&["x-debug"]),
            }),
            HttpFilter::ResponseHeaderModifier(HeaderModifier::default()),
            HttpFilter::UrlRewrite(UrlRewrite {
                hostname: Some("internal.shop.svc".into()),
                path: Some(PathModifier::ReplacePrefixMatch("/".into())),
            }),
            HttpFilter::RequestMirror(RequestMirror {
                backend_ref: resolved("shadow", 8080),
                fraction: Some((25, 100)),
            }),
            HttpFilter::RequestMirror(RequestMirror {
                backend_ref: backend_ref("audit", Some(80), Resolution::Unresolved),
                fraction: None,
            }),
            HttpFilter::Cors(Cors {
                allow_origins: strings(&["https://*.example.com", "http://localhost:3000"]),
                allow_credentials: true,
                allow_methods: strings(&["GET", "POST"]),
                allow_headers: strings(&["*"]),
                expose_headers: strings(&["x-request-id"]),
                max_age_seconds: 600,
            }),
        ],
        backend_refs: vec![
            HttpBackendRef {
                backend_ref: resolved("web", 8080),
                weight: 80,
                filters: vec![HttpFilter::RequestHeaderModifier(HeaderModifier {
                    set: pairs(&[("x-backend", "web")]),
                    add: vec![],
                    remove: vec![],
                })],
            },
            HttpBackendRef {
                backend_ref: backend_ref(
                    "gone",
                    Some(8080),
                    Resolution::Invalid {
                        reason: "BackendNotFound".into(),
                        message: "service shop/gone not found".into(),
                    },
                ),
                weight: 20,
                filters: vec![],
            },
            HttpBackendRef {
                backend_ref: backend_ref("pending", None, Resolution::Unresolved),
                weight: 1_000_000,
                filters: vec![],
            },
        ],
        timeouts: Timeouts {
            request: Some(Duration::from_secs(10)),
            backend_request: Some(Duration::ZERO),
        },
        retry: Some(Retry {
            codes: vec![500, 502, 503, 504],
            attempts: 3,
            backoff: Some(Duration::from_millis(250)),
        }),
        session_persistence: Some(SessionPersistence {
            name: Some("shop-session".into()),
            kind: SessionKind::Cookie,
            absolute_timeout: Some(Duration::from_secs(3600)),
            idle_timeout: Some(Duration::from_secs(300)),
            permanent_cookie: true,
        }),
    };
    let redirects = HttpRouteRule {
        name: None,
        matches: vec![HttpRouteMatch {
            path: PathMatch::Prefix("/".into()),
            headers: vec![],
            query_params: vec![],
            method: None,
        }],
        filters: vec![
            HttpFilter::RequestRedirect(RequestRedirect {
                scheme: Some("https".into()),
                hostname: Some("www.demo.meridian.test".into()),
                path: Some(PathModifier::ReplaceFullPath("/new".into())),
                port: Some(443),
                status_code: 301,
            }),
            HttpFilter::RequestRedirect(RequestRedirect {
                scheme: None,
                hostname: None,
                path: None,
                port: None,
                status_code: 302,
            }),
            HttpFilter::UrlRewrite(UrlRewrite {
                hostname: None,
                path: None,
            }),
        ],
        backend_refs: vec![],
        timeouts: Timeouts::default(),
        retry: None,
        session_persistence: None,
    };
    let legacy = HttpRouteRule {
        name: Some("legacy".into()),
        matches: vec![HttpRouteMatch {
            path: PathMatch::Prefix("/legacy".into()),
            headers: vec![],
            query_params: vec![],
            method: None,
        }],
        filters: vec![],
        backend_refs: vec![HttpBackendRef {
            backend_ref: resolved("legacy", 80),
            weight: 1,
            filters: vec![],
        }],
        timeouts: Timeouts {
            request: Some(Duration::from_millis(1500)),
            backend_request: None,
        },
        retry: Some(Retry {
            codes: vec![503],
            attempts: 1,
            backoff: None,
        }),
        session_persistence: Some(SessionPersistence {
            name: None,
            kind: SessionKind::Header,
            absolute_timeout: None,
            idle_timeout: None,
            permanent_cookie: false,
        }),
    };
    HttpRoute {
        key: key("shop", "web"),
        created_unix_ms: 1_700_000_000_123,
        parent_refs: parent_refs(),
        hostnames: strings(&["app.demo.meridian.test", "*.shop.meridian.test"]),
        rules: vec![api, redirects, legacy],
    }
}

fn grpc_route() -> GrpcRoute {
    GrpcRoute {
        key: key("shop", "echo-grpc"),
        created_unix_ms: 0,
        parent_refs: parent_refs(),
        hostnames: vec![],
        rules: vec![
            GrpcRouteRule {
                name: Some("echo".into()),
                matches: vec![
                    GrpcRouteMatch {
                        method: Some(GrpcMethodMatch {
                            regex: false,
                            service: Some("echo.Echo".into()),
                            method: Some("Say".into()),
                        }),
                        headers: vec![HeaderMatch {
                            name: "x-tenant".into(),
                            value: StringMatch::Exact("a".into()),
                        }],
                    },
                    GrpcRouteMatch {
                        method: Some(GrpcMethodMatch {
                            regex: true,
                            service: Some(r"echo\..*".into()),
                            method: None,
                        }),
                        headers: vec![],
                    },
                    GrpcRouteMatch {
                        method: Some(GrpcMethodMatch {
                            regex: false,
                            service: None,
                            method: Some("Ping".into()),
                        }),
                        headers: vec![],
                    },
                    GrpcRouteMatch {
                        method: None,
                        headers: vec![HeaderMatch {
                            name: "x-canary".into(),
                            value: StringMatch::RegularExpression("yes|true".into()),
                        }],
                    },
                ],
                filters: vec![HttpFilter::ResponseHeaderModifier(HeaderModifier {
                    set: vec![],
                    add: pairs(&[("x-served-by", "grpc")]),
                    remove: vec![],
                })],
                backend_refs: vec![HttpBackendRef {
                    backend_ref: resolved("echo", 9090),
                    weight: 1,
                    filters: vec![],
                }],
                session_persistence: Some(SessionPersistence {
                    name: Some("x-grpc-session".into()),
                    kind: SessionKind::Header,
                    absolute_timeout: None,
                    idle_timeout: Some(Duration::from_secs(60)),
                    permanent_cookie: false,
                }),
            },
            GrpcRouteRule {
                name: None,
                matches: vec![],
                filters: vec![],
                backend_refs: vec![],
                session_persistence: None,
            },
        ],
    }
}

fn tls_route() -> TlsRoute {
    TlsRoute {
        key: key("data", "postgres"),
        created_unix_ms: -5,
        parent_refs: parent_refs(),
        hostnames: strings(&["db.demo.meridian.test"]),
        backend_refs: vec![HttpBackendRef {
            backend_ref: resolved("postgres", 5432),
            weight: 0,
            filters: vec![],
        }],
    }
}

fn gateway_config() -> GatewayConfig {
    let attachments = |listeners: &[&str]| {
        listeners
            .iter()
            .map(|l| Attachment {
                listener: l.to_string(),
                hostnames: if *l == "http" {
                    vec![]
                } else {
                    strings(&["app.demo.meridian.test"])
                },
            })
            .collect()
    };
    GatewayConfig {
        version: 42,
        gateway: Some(key("infra", "edge")),
        listeners: vec![
            Listener {
                name: "http".into(),
                addresses: vec![ip("127.0.1.1"), ip("::1")],
                port: 8080,
                protocol: ListenerProtocol::Http,
                hostname: None,
                tls: None,
            },
            Listener {
                name: "https".into(),
                addresses: vec![],
                port: 8443,
                protocol: ListenerProtocol::Https,
                hostname: Some("*.demo.meridian.test".into()),
                tls: Some(ListenerTls {
                    mode: TlsMode::Terminate,
                    certificates: vec![cert("demo-tls"), cert("wildcard-tls")],
                    client_validation: Some(ClientValidation {
                        ca_certificates: vec![ca("client-ca"), ca("partner-ca")],
                        mode: ClientValidationMode::AllowInsecureFallback,
                    }),
                }),
            },
            Listener {
                name: "tls".into(),
                addresses: vec![ip("127.0.1.2")],
                port: 65535,
                protocol: ListenerProtocol::Tls,
                hostname: Some("db.demo.meridian.test".into()),
                tls: Some(ListenerTls {
                    mode: TlsMode::Passthrough,
                    certificates: vec![],
                    client_validation: None,
                }),
            },
            Listener {
                name: "mtls".into(),
                addresses: vec![],
                port: 9443,
                protocol: ListenerProtocol::Https,
                hostname: None,
                tls: Some(ListenerTls {
                    mode: TlsMode::Terminate,
                    certificates: vec![cert("demo-tls")],
                    client_validation: Some(ClientValidation {
                        ca_certificates: vec![ca("client-ca")],
                        mode: ClientValidationMode::AllowValidOnly,
                    }),
                }),
            },
        ],
        http_routes: vec![Attached {
            route: http_route(),
            attachments: attachments(&["http", "https"]),
        }],
        grpc_routes: vec![Attached {
            route: grpc_route(),
            attachments: attachments(&["http"]),
        }],
        tls_routes: vec![Attached {
            route: tls_route(),
            attachments: vec![],
        }],
        backends: vec![
            Backend {
                key: service("web", 8080),
                app_protocol: AppProtocol::Http1,
                endpoints: vec![
                    Endpoint {
                        addr: sock("127.0.0.10:9001"),
                        ready: true,
                    },
                    Endpoint {
                        addr: sock("[::1]:9002"),
                        ready: false,
                    },
                ],
                tls: None,
            },
            Backend {
                key: service("echo", 9090),
                app_protocol: AppProtocol::H2c,
                endpoints: vec![],
                tls: Some(BackendTls {
                    ca: CaSource::Pem(CA_PEM.into()),
                    hostname: "echo.internal.example".into(),
                    subject_alt_names: vec![],
                }),
            },
            Backend {
                key: service("ws", 8081),
                app_protocol: AppProtocol::WebSocket,
                endpoints: vec![Endpoint {
                    addr: sock("127.0.0.11:9003"),
                    ready: true,
                }],
                tls: Some(BackendTls {
                    ca: CaSource::System,
                    hostname: "ws.example.com".into(),
                    subject_alt_names: vec![
                        SubjectAltName::Hostname("ws-1.example.com".into()),
                        SubjectAltName::Uri("spiffe://cluster.local/ns/demo/sa/ws".into()),
                    ],
                }),
            },
        ],
        backend_client_certificate: Some(cert("gateway-client")),
    }
}

/// Decoding only checks that a CA bundle holds a PEM certificate block; the gateway parses it.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn shared_config() -> SharedConfig {
    SharedConfig {
        version: 7,
        http_routes: vec![http_route()],
        certificates: vec![cert("demo-tls")],
    }
}

// === round trips ===

#[test]
fn clusters_and_health_round_trip() {
    round_trip::<_, pb::Cluster>(&cluster());
    round_trip::<_, pb::Cluster>(&Cluster {
        addresses: vec![],
        drained: false,
        ..cluster()
    });
    for verdict in [
        HealthVerdict::Unknown,
        HealthVerdict::Healthy,
        HealthVerdict::Unhealthy,
    ] {
        round_trip::<_, pb::ClusterHealth>(&ClusterHealth {
            verdict,
            reason: "3 reports missed".into(),
            since_unix_ms: 1_700_000_000_000,
        });
    }
    round_trip::<_, pb::HealthReport>(&health_report());
    let delta = HealthReport {
        shared_basis: SharedStatusBasis::Delta {
            base: 7,
            removed: vec![key("shop", "gone")],
        },
        ..health_report()
    };
    round_trip::<_, pb::HealthReport>(&delta);
    // A delta has a field of its own: a hub of an earlier build, which reads only `shared`,
    // sees no status in it rather than take it for the whole one.
    let wire = pb::HealthReport::from(&delta);
    assert!(wire.shared.is_none() && wire.shared_delta.is_some());
}

#[test]
fn hostname_policies_round_trip() {
    round_trip::<_, pb::HostnamePolicy>(&hostname_policy());
    round_trip::<_, pb::HostnamePolicy>(&HostnamePolicy {
        routing: Routing::default(),
        ..hostname_policy()
    });
}

#[test]
fn routes_round_trip() {
    round_trip::<_, pb::HttpRoute>(&http_route());
    round_trip::<_, pb::GrpcRoute>(&grpc_route());
    round_trip::<_, pb::TlsRoute>(&tls_route());
}

#[test]
fn gateway_configs_round_trip() {
    round_trip::<_, pb::GatewayConfig>(&gateway_config());
    round_trip::<_, pb::GatewayConfig>(&GatewayConfig::default());
}

#[test]
fn backend_client_certificate_key_is_never_printed() {
    let config = gateway_config();
    let printed = format!("{config:?}");
    assert!(printed.contains("gateway-client"), "{printed}");
    assert!(!printed.contains("secret"), "{printed}");
}

#[test]
fn shared_configs_round_trip() {
    round_trip::<_, pb::SharedConfig>(&shared_config());
    round_trip::<_, pb::SharedConfig>(&SharedConfig::default());
    round_trip::<_, pb::SharedConfigDelta>(&SharedConfigDelta {
        base_version: 3,
        version: 7,
        http_routes: vec![http_route()],
        removed_http_routes: vec![key("shop", "gone")],
        certificates: vec![cert("demo-tls")],
        removed_certificates: vec![key("shop", "old-tls")],
    });
    round_trip::<_, pb::SharedConfigDelta>(&SharedConfigDelta::default());
}

#[test]
fn names_are_normalized_on_decode() {
    let wire = pb::HostnamePolicy {
        fqdn: "App.Demo.Meridian.Test.".into(),
        ..pb::HostnamePolicy::from(&hostname_policy())
    };
    let policy = HostnamePolicy::try_from(wire).unwrap();
    assert_eq!(policy.fqdn.as_str(), "app.demo.meridian.test");
}

#[test]
fn absent_timeouts_message_means_gateway_defaults() {
    let mut wire = pb::HttpRouteRule::from(&http_route().rules[0]);
    wire.timeouts = None;
    let rule = HttpRouteRule::try_from(wire).unwrap();
    assert_eq!(rule.timeouts, Timeouts::default());
}

#[test]
fn durations_travel_as_whole_milliseconds() {
    let rule = HttpRouteRule {
        timeouts: Timeouts {
            request: Some(Duration::from_micros(2_500_900)),
            backend_request: None,
        },
        ..http_route().rules[0].clone()
    };
    let wire = pb::HttpRouteRule::from(&rule);
    assert_eq!(wire.timeouts.unwrap().request_ms, Some(2500));
}

/// Every variant of every model enum appears in the fixtures. The matches are exhaustive, so
/// a new variant does not compile until it gets a tag (and a fixture that uses it).
#[test]
fn fixtures_cover_every_variant() {
    let config = gateway_config();
    let mut seen = BTreeSet::new();

    fn filter(f: &HttpFilter) -> Vec<&'static str> {
        match f {
            HttpFilter::RequestHeaderModifier(_) => vec!["filter:request_header_modifier"],
            HttpFilter::ResponseHeaderModifier(_) => vec!["filter:response_header_modifier"],
            HttpFilter::RequestRedirect(r) => {
                let mut tags = vec!["filter:request_redirect"];
                tags.extend(r.path.as_ref().map(path_modifier));
                tags
            }
            HttpFilter::UrlRewrite(r) => {
                let mut tags = vec!["filter:url_rewrite"];
                tags.extend(r.path.as_ref().map(path_modifier));
                tags
            }
            HttpFilter::RequestMirror(m) => vec![
                "filter:request_mirror",
                resolution(&m.backend_ref.resolution),
            ],
            HttpFilter::Cors(_) => vec!["filter:cors"],
        }
    }
    fn path_modifier(p: &PathModifier) -> &'static str {
        match p {
            PathModifier::ReplaceFullPath(_) => "path_modifier:full",
            PathModifier::ReplacePrefixMatch(_) => "path_modifier:prefix",
        }
    }
    fn resolution(r: &Resolution) -> &'static str {
        match r {
            Resolution::Unresolved => "resolution:unresolved",
            Resolution::Service(_) => "resolution:service",
            Resolution::Invalid { .. } => "resolution:invalid",
        }
    }
    fn string_match(m: &StringMatch) -> &'static str {
        match m {
            StringMatch::Exact(_) => "string_match:exact",
            StringMatch::RegularExpression(_) => "string_match:regex",
        }
    }

    for rule in &config.http_routes[0].route.rules {
        for m in &rule.matches {
            seen.insert(match m.path {
                PathMatch::Exact(_) => "path:exact",
                PathMatch::Prefix(_) => "path:prefix",
                PathMatch::RegularExpression(_) => "path:regex",
            });
            for h in &m.headers {
                seen.insert(string_match(&h.value));
            }
            for q in &m.query_params {
                seen.insert(string_match(&q.value));
            }
        }
        for f in &rule.filters {
            seen.extend(filter(f));
        }
        for b in &rule.backend_refs {
            seen.insert(resolution(&b.backend_ref.resolution));
        }
    }
    for l in &config.listeners {
        seen.insert(match l.protocol {
            ListenerProtocol::Http => "protocol:http",
            ListenerProtocol::Https => "protocol:https",
            ListenerProtocol::Tls => "protocol:tls",
        });
        if let Some(tls) = &l.tls {
            seen.insert(match tls.mode {
                TlsMode::Terminate => "tls:terminate",
                TlsMode::Passthrough => "tls:passthrough",
            });
            if let Some(validation) = &tls.client_validation {
                seen.insert(match validation.mode {
                    ClientValidationMode::AllowValidOnly => "client_validation:valid_only",
                    ClientValidationMode::AllowInsecureFallback => {
                        "client_validation:insecure_fallback"
                    }
                });
            }
        }
    }
    for b in &config.backends {
        seen.insert(match b.app_protocol {
            AppProtocol::Http1 => "app:http1",
            AppProtocol::H2c => "app:h2c",
            AppProtocol::WebSocket => "app:websocket",
        });
        seen.insert(if b.tls.is_some() {
            "backend:tls"
        } else {
            "backend:cleartext"
        });
        if let Some(tls) = &b.tls {
            seen.insert(match tls.ca {
                CaSource::Pem(_) => "ca:pem",
                CaSource::System => "ca:system",
            });
        }
        for san in b.tls.iter().flat_map(|t| &t.subject_alt_names) {
            seen.insert(match san {
                SubjectAltName::Hostname(_) => "san:hostname",
                SubjectAltName::Uri(_) => "san:uri",
            });
        }
    }
    seen.insert(match hostname_policy().routing.when_all_unhealthy {
        AllUnhealthy::FailOpen => "all_unhealthy:open",
        AllUnhealthy::FailClosed => "all_unhealthy:closed",
    });
    seen.insert(match Routing::default().when_all_unhealthy {
        AllUnhealthy::FailOpen => "all_unhealthy:open",
        AllUnhealthy::FailClosed => "all_unhealthy:closed",
    });

    let expected = [
        "filter:request_header_modifier",
        "filter:response_header_modifier",
        "filter:request_redirect",
        "filter:url_rewrite",
        "filter:request_mirror",
        "filter:cors",
        "path_modifier:full",
        "path_modifier:prefix",
        "resolution:unresolved",
        "resolution:service",
        "resolution:invalid",
        "string_match:exact",
        "string_match:regex",
        "path:exact",
        "path:prefix",
        "path:regex",
        "protocol:http",
        "protocol:https",
        "protocol:tls",
        "tls:terminate",
        "tls:passthrough",
        "client_validation:valid_only",
        "client_validation:insecure_fallback",
        "app:http1",
        "app:h2c",
        "app:websocket",
        "backend:tls",
        "backend:cleartext",
        "ca:pem",
        "ca:system",
        "san:hostname",
        "san:uri",
        "all_unhealthy:open",
        "all_unhealthy:closed",
    ];
    let missing: Vec<_> = expected.iter().filter(|t| !seen.contains(*t)).collect();
    assert!(missing.is_empty(), "fixtures miss {missing:?}");
}

// === errors name the field path ===

/// One bad-value case: a mutation of a valid wire message, the path the error must name and
/// a fragment of its message.
type Case<P> = (fn(&mut P), &'static str, &'static str);

fn check_cases<M, P>(valid: P, cases: &[Case<P>])
where
    M: TryFrom<P, Error = ConvertError> + Debug,
    P: Clone,
{
    for (i, (mutate, path, fragment)) in cases.iter().enumerate() {
        let mut wire = valid.clone();
        mutate(&mut wire);
        let err = decode_err::<M, P>(wire);
        let shown = err.to_string();
        assert_eq!(err.path(), *path, "case {i}: {shown}");
        assert!(
            shown.starts_with(&format!("{path}: ")),
            "case {i}: {shown:?} does not start with the path"
        );
        assert!(
            shown.contains(fragment),
            "case {i}: {shown:?} does not mention {fragment:?}"
        );
    }
}

fn tls_validation(c: &mut pb::GatewayConfig, listener: usize) -> &mut pb::ClientValidation {
    c.listeners[listener]
        .tls
        .as_mut()
        .unwrap()
        .client_validation
        .as_mut()
        .unwrap()
}

fn http_rule(c: &mut pb::GatewayConfig, rule: usize) -> &mut pb::HttpRouteRule {
    &mut c.http_routes[0].route.as_mut().unwrap().rules[rule]
}

fn http_filter(
    c: &mut pb::GatewayConfig,
    rule: usize,
    filter: usize,
) -> &mut pb::http_filter::Kind {
    http_rule(c, rule).filters[filter].kind.as_mut().unwrap()
}

#[test]
fn gateway_config_errors_name_the_field_path() {
    use pb::http_filter::Kind as F;
    let cases: &[Case<pb::GatewayConfig>] = &[
        (
            |c| http_rule(c, 0).matches[1].path.as_mut().unwrap().value = "healthz".into(),
            "http_routes[0].route.rules[0].matches[1].path.value",
            r#"invalid path "healthz": must start with '/'"#,
        ),
        (
            |c| http_rule(c, 0).matches[2].path.as_mut().unwrap().value = "/v[0-9".into(),
            "http_routes[0].route.rules[0].matches[2].path.value",
            r#"invalid regular expression "/v[0-9": unclosed character class"#,
        ),
        (
            |c| {
                let session = http_rule(c, 0).session_persistence.as_mut().unwrap();
                session.name = Some("shop session".into());
            },
            "http_routes[0].route.rules[0].session_persistence.name",
            "a session name is 1 to 128 token characters",
        ),
        (
            |c| {
                let session = http_rule(c, 0).session_persistence.as_mut().unwrap();
                session.absolute_timeout_ms = None;
            },
            "http_routes[0].route.rules[0].session_persistence",
            "a permanent session cookie needs an absolute timeout",
        ),
        (
            |c| http_rule(c, 0).matches[0].path.as_mut().unwrap().kind = 9,
            "http_routes[0].route.rules[0].matches[0].path.kind",
            "unknown enum value 9",
        ),
        (
            |c| http_rule(c, 0).matches[0].path = None,
            "http_routes[0].route.rules[0].matches[0].path",
            "missing required field",
        ),
        (
            |c| {
                let header = &mut http_rule(c, 0).matches[0].headers[1];
                header.value.as_mut().unwrap().value = "(unclosed".into();
            },
            "http_routes[0].route.rules[0].matches[0].headers[1].value.value",
            "invalid regular expression",
        ),
        (
            |c| {
                let query = &mut http_rule(c, 0).matches[0].query_params[1];
                query.value = None;
            },
            "http_routes[0].route.rules[0].matches[0].query_params[1].value",
            "missing required field",
        ),
        (
            |c| c.http_routes[0].route.as_mut().unwrap().key = None,
            "http_routes[0].route.key",
            "missing required field",
        ),
        (
            |c| {
                let key = c.http_routes[0]
                    .route
                    .as_mut()
                    .unwrap()
                    .key
                    .as_mut()
                    .unwrap();
                key.namespace = "Shop".into();
            },
            "http_routes[0].route.key.namespace",
            r#"invalid namespace "Shop""#,
        ),
        (
            |c| c.http_routes[0].route.as_mut().unwrap().parent_refs[0].port = Some(0),
            "http_routes[0].route.parent_refs[0].port",
            "value 0 is out of range 1..=65535",
        ),
        (
            |c| http_rule(c, 0).filters[2].kind = None,
            "http_routes[0].route.rules[0].filters[2].kind",
            "missing required field",
        ),
        (
            |c| {
                if let F::RequestMirror(m) = http_filter(c, 0, 3) {
                    m.fraction_denominator = 0;
                }
            },
            "http_routes[0].route.rules[0].filters[3].request_mirror.fraction_denominator",
            r#"invalid fraction "25/0": the denominator must not be 0"#,
        ),
        (
            |c| {
                if let F::RequestMirror(m) = http_filter(c, 0, 3) {
                    m.fraction_numerator = 101;
                }
            },
            "http_routes[0].route.rules[0].filters[3].request_mirror.fraction_numerator",
            "must not exceed the denominator",
        ),
        (
            |c| {
                if let F::RequestMirror(m) = http_filter(c, 0, 3) {
                    m.backend_ref = None;
                }
            },
            "http_routes[0].route.rules[0].filters[3].request_mirror.backend_ref",
            "missing required field",
        ),
        (
            |c| {
                if let F::RequestRedirect(r) = http_filter(c, 1, 0) {
                    r.port = Some(70_000);
                }
            },
            "http_routes[0].route.rules[1].filters[0].request_redirect.port",
            "value 70000 is out of range 1..=65535",
        ),
        (
            |c| {
                if let F::RequestRedirect(r) = http_filter(c, 1, 1) {
                    r.status_code = 200;
                }
            },
            "http_routes[0].route.rules[1].filters[1].request_redirect.status_code",
            "value 200 is out of range 301, 302, 303, 307 or 308",
        ),
        (
            |c| {
                if let F::RequestRedirect(r) = http_filter(c, 1, 0) {
                    r.path = Some(pb::PathModifier { kind: None });
                }
            },
            "http_routes[0].route.rules[1].filters[0].request_redirect.path.kind",
            "missing required field",
        ),
        (
            |c| {
                let backend = http_rule(c, 0).backend_refs[0]
                    .backend_ref
                    .as_mut()
                    .unwrap();
                if let Some(pb::backend_ref::Resolution::Service(key)) = &mut backend.resolution {
                    key.port = 0;
                }
            },
            "http_routes[0].route.rules[0].backend_refs[0].backend_ref.service.port",
            "value 0 is out of range 1..=65535",
        ),
        (
            |c| http_rule(c, 0).backend_refs[1].weight = 1_000_001,
            "http_routes[0].route.rules[0].backend_refs[1].weight",
            "value 1000001 is out of range 0..=1000000",
        ),
        (
            |c| {
                let filters = &mut http_rule(c, 0).backend_refs[0].filters;
                filters[0].kind = None;
            },
            "http_routes[0].route.rules[0].backend_refs[0].filters[0].kind",
            "missing required field",
        ),
        (
            |c| http_rule(c, 0).retry.as_mut().unwrap().codes[1] = 200,
            "http_routes[0].route.rules[0].retry.codes[1]",
            "value 200 is out of range 400..=599",
        ),
        (
            |c| {
                let route = c.grpc_routes[0].route.as_mut().unwrap();
                let method = route.rules[0].matches[1].method.as_mut().unwrap();
                method.service = None;
            },
            "grpc_routes[0].route.rules[0].matches[1].method",
            "at least one of service and method must be set",
        ),
        (
            |c| {
                let route = c.grpc_routes[0].route.as_mut().unwrap();
                let method = route.rules[0].matches[1].method.as_mut().unwrap();
                method.service = Some("echo.(".into());
            },
            "grpc_routes[0].route.rules[0].matches[1].method.service",
            "invalid regular expression",
        ),
        (
            |c| c.tls_routes[0].route.as_mut().unwrap().backend_refs[0].backend_ref = None,
            "tls_routes[0].route.backend_refs[0].backend_ref",
            "missing required field",
        ),
        (
            |c| c.listeners[1].port = 0,
            "listeners[1].port",
            "value 0 is out of range 1..=65535",
        ),
        (
            |c| c.listeners[2].port = 65_536,
            "listeners[2].port",
            "value 65536 is out of range 1..=65535",
        ),
        (
            |c| c.listeners[0].addresses[1] = "10.0.0.300".into(),
            "listeners[0].addresses[1]",
            r#"invalid IP address "10.0.0.300""#,
        ),
        (
            |c| c.listeners[0].protocol = 3,
            "listeners[0].protocol",
            "unknown enum value 3",
        ),
        (
            |c| tls_validation(c, 1).ca_certificates.clear(),
            "listeners[1].tls.client_validation.ca_certificates",
            "at least one CA certificate is required",
        ),
        (
            |c| tls_validation(c, 1).mode = 2,
            "listeners[1].tls.client_validation.mode",
            "unknown enum value 2",
        ),
        (
            |c| tls_validation(c, 3).ca_certificates[0].config_map = None,
            "listeners[3].tls.client_validation.ca_certificates[0].config_map",
            "missing required field",
        ),
        (
            |c| c.listeners[1].tls = None,
            "listeners[1].tls",
            "required for HTTPS and TLS listeners",
        ),
        (
            |c| c.listeners[2].tls.as_mut().unwrap().mode = -1,
            "listeners[2].tls.mode",
            "unknown enum value -1",
        ),
        (
            |c| c.listeners[1].tls.as_mut().unwrap().certificates[1].key = None,
            "listeners[1].tls.certificates[1].key",
            "missing required field",
        ),
        (
            |c| c.backends[0].endpoints[1].addr = "[::1]".into(),
            "backends[0].endpoints[1].addr",
            r#"invalid socket address "[::1]""#,
        ),
        (
            |c| c.backends[2].endpoints[0].addr = "127.0.0.11:0".into(),
            "backends[2].endpoints[0].addr",
            "port 0 is not allowed",
        ),
        (
            |c| c.backends[1].app_protocol = 7,
            "backends[1].app_protocol",
            "unknown enum value 7",
        ),
        (
            |c| c.backends[1].key = None,
            "backends[1].key",
            "missing required field",
        ),
        (
            |c| c.gateway.as_mut().unwrap().name = "Edge".into(),
            "gateway.name",
            r#"invalid name "Edge""#,
        ),
        (
            |c| {
                c.backends[1].tls.as_mut().unwrap().ca =
                    Some(pb::backend_tls::Ca::CaPem("not pem".into()));
            },
            "backends[1].tls.ca_pem",
            "must hold at least one PEM CERTIFICATE block",
        ),
        (
            |c| c.backends[2].tls.as_mut().unwrap().ca = None,
            "backends[2].tls.ca",
            "missing required field",
        ),
        (
            |c| c.backend_client_certificate.as_mut().unwrap().key = None,
            "backend_client_certificate.key",
            "missing required field",
        ),
        (
            |c| c.backends[1].tls.as_mut().unwrap().hostname = "Echo_Internal".into(),
            "backends[1].tls.hostname",
            r#"invalid host name "Echo_Internal""#,
        ),
        (
            |c| c.backends[1].tls.as_mut().unwrap().hostname = "10.0.0.1".into(),
            "backends[1].tls.hostname",
            "an IP address is not a host name",
        ),
        (
            |c| c.backends[1].tls.as_mut().unwrap().hostname = String::new(),
            "backends[1].tls.hostname",
            "must not be empty",
        ),
        (
            |c| {
                c.backends[2].tls.as_mut().unwrap().subject_alt_names[1].name =
                    Some(pb::subject_alt_name::Name::Uri("no scheme".into()));
            },
            "backends[2].tls.subject_alt_names[1].uri",
            "expected an absolute URI",
        ),
        (
            |c| {
                c.backends[2].tls.as_mut().unwrap().subject_alt_names[0].name =
                    Some(pb::subject_alt_name::Name::Hostname("*.example.com".into()));
            },
            "backends[2].tls.subject_alt_names[0].hostname",
            "invalid host name",
        ),
        (
            |c| c.backends[2].tls.as_mut().unwrap().subject_alt_names[0].name = None,
            "backends[2].tls.subject_alt_names[0].name",
            "missing required field",
        ),
    ];
    check_cases::<GatewayConfig, _>(pb::GatewayConfig::from(&gateway_config()), cases);
}

#[test]
fn cluster_and_health_errors_name_the_field_path() {
    let cluster_cases: &[Case<pb::Cluster>] = &[
        (
            |c| c.name = "US".into(),
            "name",
            r#"invalid cluster name "US": contains 'U'"#,
        ),
        (|c| c.region = String::new(), "region", "must not be empty"),
        (
            |c| c.addresses[0] = "localhost".into(),
            "addresses[0]",
            r#"invalid IP address "localhost""#,
        ),
    ];
    check_cases::<Cluster, _>(pb::Cluster::from(&cluster()), cluster_cases);

    let report_cases: &[Case<pb::HealthReport>] = &[
        (
            |c| c.cluster = "EU".into(),
            "cluster",
            "invalid cluster name",
        ),
        (
            |c| c.gateways[1].address = "::1:8443".into(),
            "gateways[1].address",
            "invalid socket address",
        ),
        (
            |c| {
                let routes = c.shared.as_mut().unwrap();
                routes.routes[0].parents[0].conditions[1].status = 7;
            },
            "shared.routes[0].parents[0].conditions[1].status",
            "unknown enum value 7",
        ),
        (
            |c| c.shared.as_mut().unwrap().routes[0].parents[0].port = Some(0),
            "shared.routes[0].parents[0].port",
            "out of range",
        ),
        (
            |c| c.shared.as_mut().unwrap().routes[1].route = None,
            "shared.routes[1].route",
            "missing required field",
        ),
        (
            |c| {
                let route = &mut c.shared.as_mut().unwrap().routes[0];
                let parent = route.parents[0].clone();
                route.parents = vec![parent; 33];
            },
            "shared.routes[0].parents",
            "more than 32 parents",
        ),
        (
            |c| {
                let parent = &mut c.shared.as_mut().unwrap().routes[0].parents[0];
                parent.conditions[0].message = "m".repeat(1025);
            },
            "shared.routes[0].parents[0].conditions[0].message",
            "longer than 1024 bytes",
        ),
        (
            |c| c.shared.as_mut().unwrap().certificates[0].gateway = None,
            "shared.certificates[0].gateway",
            "missing required field",
        ),
        (
            |c| c.shared_removed = vec![pb::ObjectKey::default()],
            "shared_base",
            "a base or removed routes with a whole status",
        ),
        (
            |c| c.shared_delta = c.shared.clone(),
            "shared_delta",
            "both a whole status and a delta",
        ),
        (
            |c| c.shared_delta = c.shared.take(),
            "shared_base",
            "a delta needs a base",
        ),
        (
            |c| {
                c.shared_delta = c.shared.take();
                c.shared_base = 7;
                c.shared_removed = vec![pb::ObjectKey::default()];
            },
            "shared_removed[0].namespace",
            "must not be empty",
        ),
        (
            |c| {
                c.shared_delta = c.shared.take();
                c.shared_base = 7;
                c.shared_delta.as_mut().unwrap().routes[1].route = None;
            },
            "shared_delta.routes[1].route",
            "missing required field",
        ),
    ];
    check_cases::<HealthReport, _>(pb::HealthReport::from(&health_report()), report_cases);

    let health = pb::ClusterHealth {
        verdict: 3,
        ..pb::ClusterHealth::default()
    };
    let err = decode_err::<ClusterHealth, _>(health);
    assert_eq!(err.to_string(), "verdict: unknown enum value 3");
}

#[test]
fn dns_policy_errors_name_the_field_path() {
    let cases: &[Case<pb::HostnamePolicy>] = &[
        (|c| c.fqdn = "a..b".into(), "fqdn", "has an empty label"),
        (
            |c| c.targets[1].cluster = "eu_west".into(),
            "targets[1].cluster",
            "invalid cluster name",
        ),
        (|c| c.routing = None, "routing", "missing required field"),
        (
            |c| c.routing.as_mut().unwrap().region_order[1] = "US".into(),
            "routing.region_order[1]",
            r#"invalid region "US""#,
        ),
        (
            |c| c.routing.as_mut().unwrap().when_all_unhealthy = 2,
            "routing.when_all_unhealthy",
            "unknown enum value 2",
        ),
        (
            |c| c.routing.as_mut().unwrap().panic_threshold_percent = 101,
            "routing.panic_threshold_percent",
            "value 101 is out of range 0..=100",
        ),
        (
            |c| c.routing.as_mut().unwrap().pinned = "-x".into(),
            "routing.pinned",
            "must start and end with a letter or digit",
        ),
    ];
    check_cases::<HostnamePolicy, _>(pb::HostnamePolicy::from(&hostname_policy()), cases);
}

#[test]
fn shared_config_errors_name_the_field_path() {
    let cases: &[Case<pb::SharedConfig>] = &[
        (
            |c| c.certificates[0].key = None,
            "certificates[0].key",
            "missing required field",
        ),
        (
            |c| {
                c.http_routes[0].rules[2].matches[0]
                    .path
                    .as_mut()
                    .unwrap()
                    .value = "legacy".into()
            },
            "http_routes[0].rules[2].matches[0].path.value",
            r#"invalid path "legacy""#,
        ),
    ];
    check_cases::<SharedConfig, _>(pb::SharedConfig::from(&shared_config()), cases);
}

#[test]
fn callers_can_prefix_an_envelope_field() {
    let wire = pb::Cluster {
        name: "US".into(),
        ..pb::Cluster::from(&cluster())
    };
    let err = decode_err::<Cluster, _>(wire).in_field("cluster");
    assert_eq!(err.path(), "cluster.name");
    assert!(
        err.to_string()
            .starts_with(r#"cluster.name: invalid cluster name "US": "#),
        "{err}"
    );
    assert!(matches!(err.kind(), ConvertErrorKind::Invalid(e) if e.what == "cluster name"));
}

#[test]
fn error_paths_render_indices_without_dots() {
    let err = ConvertError::new(ConvertErrorKind::Missing)
        .in_field("port")
        .at_index(3)
        .in_field("listeners")
        .at_index(0);
    assert_eq!(err.path(), "[0].listeners[3].port");
    assert_eq!(
        ConvertError::new(ConvertErrorKind::Missing).to_string(),
        "missing required field"
    );
}

#[test]
fn bytes_round_trip_keeps_a_full_gateway_config() {
    let config = gateway_config();
    let bytes = pb::GatewayConfig::from(&config).encode_to_vec();
    let wire = pb::GatewayConfig::decode(bytes.as_slice()).unwrap();
    assert_eq!(GatewayConfig::try_from(wire).unwrap(), config);
}
