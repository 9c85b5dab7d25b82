//! Test fixtures: terse builders for programmed configs and a compile helper.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, Endpoint, GatewayConfig, Listener, ListenerProtocol,
};
use meridian_proto::model::route::{
    BackendRef, HeaderMatch, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch, HttpRouteRule,
    PathMatch, QueryParamMatch, Resolution, ServiceKey, StringMatch, Timeouts,
};

use crate::backend::pool::PoolSettings;
use crate::error::ConfigError;
use crate::metrics::GatewayMetrics;
use crate::route::compile::{CompileContext, CompiledConfig, PoolMap, compile};

/// An HTTP listener.
pub(crate) fn http_listener(name: &str, port: u16, hostname: Option<&str>) -> Listener {
    Listener {
        name: name.into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
        port,
        protocol: ListenerProtocol::Http,
        hostname: hostname.map(str::to_string),
        tls: None,
    }
}

/// A key `ns/name`.
pub(crate) fn key(s: &str) -> ObjectKey {
    s.parse().unwrap()
}

/// A Service port in namespace `ns` with one ready endpoint at `addr`.
pub(crate) fn backend(name: &str, addr: SocketAddr) -> Backend {
    Backend {
        key: service(name),
        app_protocol: AppProtocol::Http1,
        endpoints: vec![Endpoint { addr, ready: true }],
        tls: None,
    }
}

/// `ns/name` port 8080 as a ServiceKey.
pub(crate) fn service(name: &str) -> ServiceKey {
    let k = key(name);
    ServiceKey {
        namespace: k.namespace,
        name: k.name,
        port: 8080,
    }
}

/// A backendRef resolved to the Service `ns/name:8080`.
pub(crate) fn to(name: &str, weight: u32) -> HttpBackendRef {
    let k = key(name);
    HttpBackendRef {
        backend_ref: BackendRef {
            group: String::new(),
            kind: "Service".into(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            port: Some(8080),
            resolution: Resolution::Service(service(name)),
        },
        weight,
        filters: vec![],
    }
}

/// An invalid backendRef.
pub(crate) fn invalid(name: &str, weight: u32) -> HttpBackendRef {
    let mut r = to(name, weight);
    r.backend_ref.resolution = Resolution::Invalid {
        reason: "BackendNotFound".into(),
        message: "not found".into(),
    };
    r
}

/// A match builder.
#[derive(Clone)]
pub(crate) struct M(pub(crate) HttpRouteMatch);

/// PathPrefix match.
pub(crate) fn prefix(p: &str) -> M {
    M(HttpRouteMatch {
        path: PathMatch::Prefix(p.into()),
        headers: vec![],
        query_params: vec![],
        method: None,
    })
}

/// Exact path match.
pub(crate) fn exact(p: &str) -> M {
    M(HttpRouteMatch {
        path: PathMatch::Exact(p.into()),
        ..prefix("/").0
    })
}

/// Regex path match.
pub(crate) fn regex(p: &str) -> M {
    M(HttpRouteMatch {
        path: PathMatch::RegularExpression(p.into()),
        ..prefix("/").0
    })
}

impl M {
    /// Adds an exact header condition.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push(HeaderMatch {
            name: name.into(),
            value: StringMatch::Exact(value.into()),
        });
        self
    }
    /// Adds an exact query condition.
    pub(crate) fn query(mut self, name: &str, value: &str) -> Self {
        self.0.query_params.push(QueryParamMatch {
            name: name.into(),
            value: StringMatch::Exact(value.into()),
        });
        self
    }
    /// Adds a method condition.
    pub(crate) fn method(mut self, method: &str) -> Self {
        self.0.method = Some(method.into());
        self
    }
}

/// A rule with matches and backends.
pub(crate) fn rule(matches: Vec<M>, backends: Vec<HttpBackendRef>) -> HttpRouteRule {
    HttpRouteRule {
        name: None,
        matches: matches.into_iter().map(|m| m.0).collect(),
        filters: vec![],
        backend_refs: backends,
        timeouts: Timeouts::default(),
        retry: None,
        session_persistence: None,
    }
}

/// A rule with filters.
pub(crate) fn rule_with(
    matches: Vec<M>,
    filters: Vec<HttpFilter>,
    backends: Vec<HttpBackendRef>,
) -> HttpRouteRule {
    HttpRouteRule {
        filters,
        ..rule(matches, backends)
    }
}

/// An HTTPRoute.
pub(crate) fn route(
    name: &str,
    created_unix_ms: i64,
    hostnames: &[&str],
    rules: Vec<HttpRouteRule>,
) -> HttpRoute {
    HttpRoute {
        key: key(name),
        created_unix_ms,
        parent_refs: vec![],
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        rules,
    }
}

/// Attaches a route to one listener with the given effective hostnames.
pub(crate) fn attach(route: HttpRoute, listener: &str, hostnames: &[&str]) -> Attached<HttpRoute> {
    Attached {
        route,
        attachments: vec![Attachment {
            listener: listener.into(),
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        }],
    }
}

/// Compiles with fresh metrics and pools.
pub(crate) fn compile_config(config: &GatewayConfig) -> Result<CompiledConfig, ConfigError> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GatewayMetrics::new(&mut registry);
    let pools = PoolMap::new();
    let ctx = CompileContext {
        metrics: &metrics,
        pools: &pools,
        pool_settings: PoolSettings {
            max_idle: 8,
            connect_timeout: Duration::from_secs(1),
            shards: 1,
        },
        default_backoff: Duration::from_millis(1),
    };
    compile(config, &ctx)
}
