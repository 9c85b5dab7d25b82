//! Route-table compile time: 10,000 HTTPRoutes (one rule each, exact/prefix/header matches,
//! distinct hostnames) through `check_config`, i.e. validation, matcher compilation, filter
//! compilation and precedence sorting. Target: under 50 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_proto::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, Endpoint, GatewayConfig, Listener, ListenerProtocol,
};
use meridian_proto::model::route::{
    BackendRef, HeaderMatch, HeaderModifier, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch,
    HttpRouteRule, PathMatch, Resolution, ServiceKey, StringMatch, Timeouts,
};

fn config(n_routes: usize) -> GatewayConfig {
    let n_services = 100;
    let service = |i: usize| ServiceKey {
        namespace: "default".into(),
        name: format!("svc-{i}"),
        port: 8080,
    };
    let backends = (0..n_services)
        .map(|i| Backend {
            key: service(i),
            app_protocol: AppProtocol::Http1,
            endpoints: (0..3)
                .map(|e| Endpoint {
                    addr: format!("10.0.{i}.{e}:8080").parse().unwrap(),
                    ready: true,
                })
                .collect(),
            tls: None,
        })
        .collect();
    let http_routes = (0..n_routes)
        .map(|i| {
            let host = format!("app-{}.example.com", i % 1000);
            let path = if i % 2 == 0 {
                PathMatch::Prefix(format!("/api/v{}/r{i}", i % 7))
            } else {
                PathMatch::Exact(format!("/exact/{i}"))
            };
            let s = service(i % n_services);
            Attached {
                route: HttpRoute {
                    key: format!("ns-{}/route-{i}", i % 50).parse().unwrap(),
                    created_unix_ms: i as i64,
                    parent_refs: vec![],
                    hostnames: vec![host.clone()],
                    rules: vec![HttpRouteRule {
                        name: None,
                        matches: vec![HttpRouteMatch {
                            path,
                            headers: vec![HeaderMatch {
                                name: "x-tenant".into(),
                                value: StringMatch::Exact(format!("t{}", i % 10)),
                            }],
                            query_params: vec![],
                            method: None,
                        }],
                        filters: vec![HttpFilter::RequestHeaderModifier(HeaderModifier {
                            set: vec![("x-route".into(), format!("r{i}"))],
                            add: vec![],
                            remove: vec![],
                        })],
                        backend_refs: vec![HttpBackendRef {
                            backend_ref: BackendRef {
                                group: String::new(),
                                kind: "Service".into(),
                                namespace: s.namespace.clone(),
                                name: s.name.clone(),
                                port: Some(8080),
                                resolution: Resolution::Service(s),
                            },
                            weight: 1,
                            filters: vec![],
                        }],
                        timeouts: Timeouts::default(),
                        retry: None,
                        session_persistence: None,
                    }],
                },
                attachments: vec![Attachment {
                    listener: "http".into(),
                    hostnames: vec![host],
                }],
            }
        })
        .collect();
    GatewayConfig {
        version: 1,
        gateway: None,
        listeners: vec![Listener {
            name: "http".into(),
            addresses: vec![],
            port: 8080,
            protocol: ListenerProtocol::Http,
            hostname: None,
            tls: None,
        }],
        http_routes,
        grpc_routes: vec![],
        tls_routes: vec![],
        backends,
        backend_client_certificate: None,
    }
}

fn compile_10k(c: &mut Criterion) {
    let config = config(10_000);
    assert_eq!(meridian_gateway::check_config(&config).unwrap(), 10_000);
    c.bench_function("compile 10k routes", |b| {
        b.iter(|| meridian_gateway::check_config(&config).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = compile_10k
}
criterion_main!(benches);
