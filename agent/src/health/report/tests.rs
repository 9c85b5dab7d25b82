//! Tests for report building: gateway entries and per-hostname endpoint counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_proto::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, Endpoint, GatewayConfig, Listener, ListenerProtocol,
};
use meridian_proto::model::route::{
    BackendRef, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, PathMatch, Resolution,
    ServiceKey, Timeouts,
};
use meridian_proto::model::{ClusterName, GatewayRejection, ObjectKey, SharedObjectsStatus};

use super::*;
use crate::health::shared_status::SharedSent;

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name).unwrap()
}

fn service(name: &str) -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        name: name.into(),
        port: 80,
    }
}

fn route(name: &str, backends: &[Resolution]) -> HttpRoute {
    HttpRoute {
        key: key(name),
        created_unix_ms: 0,
        parent_refs: vec![],
        hostnames: vec![],
        rules: vec![HttpRouteRule {
            name: None,
            matches: vec![HttpRouteMatch {
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
                query_params: vec![],
                method: None,
            }],
            filters: vec![],
            backend_refs: backends
                .iter()
                .map(|resolution| HttpBackendRef {
                    backend_ref: BackendRef {
                        group: String::new(),
                        kind: "Service".into(),
                        namespace: "default".into(),
                        name: "x".into(),
                        port: Some(80),
                        resolution: resolution.clone(),
                    },
                    weight: 1,
                    filters: vec![],
                })
                .collect(),
            timeouts: Timeouts::default(),
            retry: None,
            session_persistence: None,
        }],
    }
}

fn endpoint(addr: &str, ready: bool) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        ready,
    }
}

fn config() -> GatewayConfig {
    GatewayConfig {
        version: 3,
        gateway: Some(key("gw")),
        listeners: vec![Listener {
            name: "http".into(),
            addresses: vec!["127.0.1.1".parse().unwrap()],
            port: 8080,
            protocol: ListenerProtocol::Http,
            hostname: None,
            tls: None,
        }],
        http_routes: vec![
            Attached {
                route: route("app", &[Resolution::Service(service("app"))]),
                attachments: vec![Attachment {
                    listener: "http".into(),
                    hostnames: vec!["app.example.com".into(), "www.example.com".into()],
                }],
            },
            Attached {
                // Two rules' backends overlap on one endpoint; it is counted once. An invalid
                // reference contributes nothing.
                route: route(
                    "any",
                    &[
                        Resolution::Service(service("app")),
                        Resolution::Service(service("other")),
                        Resolution::Invalid {
                            reason: "BackendNotFound".into(),
                            message: "no such service".into(),
                        },
                    ],
                ),
                attachments: vec![Attachment {
                    listener: "http".into(),
                    hostnames: vec![],
                }],
            },
        ],
        grpc_routes: vec![],
        tls_routes: vec![],
        backends: vec![
            Backend {
                key: service("app"),
                app_protocol: AppProtocol::Http1,
                endpoints: vec![
                    endpoint("10.0.0.1:80", true),
                    endpoint("10.0.0.2:80", false),
                ],
                tls: None,
            },
            Backend {
                key: service("other"),
                app_protocol: AppProtocol::Http1,
                endpoints: vec![endpoint("10.0.0.1:80", true), endpoint("10.0.0.3:80", true)],
                tls: None,
            },
        ],
        backend_client_certificate: None,
    }
}

#[test]
fn hostnames_count_distinct_endpoints_behind_their_routes() {
    let configs = BTreeMap::from([(key("gw"), Arc::new(config()))]);
    let (_, hostnames, addresses) = build_view(&configs, &[]);
    let summary: Vec<(&str, u32, u32)> = hostnames
        .iter()
        .map(|h| (h.hostname.as_str(), h.ready_endpoints, h.total_endpoints))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("*", 2, 3),
            ("app.example.com", 1, 2),
            ("www.example.com", 1, 2),
        ]
    );
    // An invalid backend reference's message goes with the hostnames it stands behind, so the
    // hub can say why endpoints are missing.
    let catch_all = hostnames.iter().find(|h| h.hostname == "*").unwrap();
    assert_eq!(catch_all.detail, "no such service");
    let app = hostnames
        .iter()
        .find(|h| h.hostname == "app.example.com")
        .unwrap();
    assert_eq!(app.detail, "");
    assert_eq!(
        addresses,
        vec!["127.0.1.1".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn gateways_take_their_listener_address_or_instance_name() {
    let configs = BTreeMap::from([(key("gw"), Arc::new(config()))]);
    let instances = [
        InstanceHealth {
            gateway: key("gw"),
            instance: "gw-a".into(),
            ready: true,
            detail: "ready".into(),
        },
        InstanceHealth {
            gateway: key("unknown"),
            instance: "127.0.0.9:9000".into(),
            ready: false,
            detail: "subscription closed".into(),
        },
        InstanceHealth {
            gateway: key("unknown"),
            instance: "pod-7".into(),
            ready: false,
            detail: "waiting".into(),
        },
    ];
    let (gateways, _, _) = build_view(&configs, &instances);
    let summary: Vec<(&str, Option<SocketAddr>, bool)> = gateways
        .iter()
        .map(|g| (g.name.as_str(), g.address, g.ready))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("gw-a", Some("127.0.1.1:8080".parse().unwrap()), true),
            (
                "127.0.0.9:9000",
                Some("127.0.0.9:9000".parse().unwrap()),
                false
            ),
            ("pod-7", None, false),
        ]
    );
}

#[test]
fn report_numbers_the_view() {
    let view = HealthView {
        gateways: vec![],
        hostnames: vec![],
        gateway_addresses: vec![],
        readiness_epoch: 1,
        readiness_changed_at: None,
        shared: Some(Arc::new(SharedObjectsStatus {
            shared_version: 4,
            ..Default::default()
        })),
        rejected: vec![GatewayRejection {
            gateway: key("public"),
            error: "port in use".into(),
        }],
    };
    let cluster = ClusterName::new("us-east").unwrap();
    let report = view.report(&cluster, 9, None);
    assert_eq!(report.cluster, cluster);
    assert_eq!(report.seq, 9);
    assert_eq!(report.shared, None);
    let outgoing = SharedSent::default().next(
        view.shared.as_ref().unwrap(),
        &view.rejected,
        std::time::Instant::now(),
    );
    let report = view.report(&cluster, 10, outgoing);
    assert!(matches!(
        report.shared_basis,
        meridian_proto::model::SharedStatusBasis::Whole { .. }
    ));
    let shared = report.shared.unwrap();
    assert_eq!(shared.shared_version, 4);
    assert_eq!(
        shared.rejected[0].error, "port in use",
        "rejections ride along"
    );
}
