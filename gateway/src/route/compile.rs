//! Compiles a [`GatewayConfig`] into per-port [`PortTable`]s: validates everything a gateway
//! can check (the agent has already attached routes and resolved references), compiles
//! matchers, filters and certificates, and sorts matches by Gateway API precedence.
//!
//! **Invariant:** compilation has no side effects. On error nothing is bound or swapped, and
//! the error names the listener, route, rule and field at fault.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use meridian_proto::model::gateway::{
    AppProtocol, Backend, BackendTls, ClientValidation, GatewayConfig, Listener, ListenerProtocol,
    TlsCertificate, TlsMode,
};
use meridian_proto::model::route::{
    self, BackendRef, GrpcRoute, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch, PathMatch,
    PathModifier, Resolution, ServiceKey, StringMatch, TlsRoute,
};

use super::grpc::{GrpcMatcher, GrpcPrecedence};
use super::host::HostIndex;
use super::matcher::{
    HeaderMatcher, HttpPrecedence, PathMatcher, QueryMatcher, RequestMatcher, ValueMatcher,
    anchored_regex,
};
use super::{
    GrpcEntry, HttpEntry, ListenerTable, PortKind, PortTable, RetryPolicy, Rule, TlsTarget,
};
use crate::backend::pool::{EndpointPool, PoolSettings};
use crate::backend::session::{self, SessionPolicy};
use crate::backend::{BackendChoice, BackendTarget, ServiceBackend, WeightedBackends};
use crate::error::ConfigError;
use crate::filter::FilterSet;
use crate::filter::cors::CorsPolicy;
use crate::filter::header::HeaderModifier;
use crate::filter::mirror::Mirror;
use crate::filter::redirect::Redirect;
use crate::filter::rewrite::Rewrite;
use crate::metrics::GatewayMetrics;
use crate::tls::backend::BackendConnector;
use crate::tls::certs::{self, ServingCert};
use crate::tls::client_auth;
use crate::tls::sni::SniResolver;

/// Endpoint pools by (address, protocol, TLS settings); carried from one compiled config to
/// the next. The TLS settings (policy and the Gateway's backend client certificate) are part
/// of the key so a change (added, removed, another CA, name or client certificate) never
/// reuses a connection opened under the old one.
pub(crate) type PoolMap = HashMap<PoolKey, Arc<EndpointPool>>;

/// What makes two endpoints share connections.
pub(crate) type PoolKey = (SocketAddr, AppProtocol, Option<PoolTls>);

/// The TLS part of a [`PoolKey`]: the policy's settings and the client certificate offered.
pub(crate) type PoolTls = (BackendTls, Option<TlsCertificate>);

/// What compilation needs besides the config.
pub(crate) struct CompileContext<'a> {
    /// Metric families to take per-rule and per-backend handles from.
    pub(crate) metrics: &'a GatewayMetrics,
    /// Pools of the config being served (reused for endpoints that stay).
    pub(crate) pools: &'a PoolMap,
    /// Settings for new pools.
    pub(crate) pool_settings: PoolSettings,
    /// Backoff for retry stanzas without one.
    pub(crate) default_backoff: Duration,
}

/// A compiled config, ready to swap in.
#[derive(Debug)]
pub(crate) struct CompiledConfig {
    /// The config version.
    pub(crate) version: u64,
    /// Per port: where to bind and what to serve.
    pub(crate) ports: BTreeMap<u16, CompiledPort>,
    /// Pools used by this config (replaces the previous map).
    pub(crate) pools: PoolMap,
    /// A summary for `/config`.
    pub(crate) summary: ConfigSummary,
}

/// One port of a compiled config.
#[derive(Debug)]
pub(crate) struct CompiledPort {
    /// Socket addresses to bind.
    pub(crate) bind: Vec<SocketAddr>,
    /// Plain or TLS.
    pub(crate) kind: PortKind,
    /// The table served.
    pub(crate) table: Arc<PortTable>,
    /// Listener names on the port (for bind errors).
    pub(crate) listener_names: Vec<String>,
    /// The client certificate validation of its TLS handshake.
    pub(crate) client_validation: Option<ClientValidation>,
}

/// What `/config` shows.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ConfigSummary {
    /// Config version.
    pub(crate) version: u64,
    /// `namespace/name` of the Gateway.
    pub(crate) gateway: Option<String>,
    /// Listeners.
    pub(crate) listeners: Vec<ListenerSummary>,
    /// Number of HTTPRoutes.
    pub(crate) http_routes: usize,
    /// Number of GRPCRoutes.
    pub(crate) grpc_routes: usize,
    /// Number of TLSRoutes.
    pub(crate) tls_routes: usize,
    /// Backends with their ready endpoint counts.
    pub(crate) backends: Vec<BackendSummary>,
}

/// One listener in the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ListenerSummary {
    /// Name.
    pub(crate) name: String,
    /// Port.
    pub(crate) port: u16,
    /// `HTTP`, `HTTPS` or `TLS`.
    pub(crate) protocol: &'static str,
    /// Hostname.
    pub(crate) hostname: Option<String>,
    /// Route matches attached (HTTP + gRPC + TLS hostnames).
    pub(crate) entries: usize,
}

/// One backend in the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct BackendSummary {
    /// `namespace/name:port`.
    pub(crate) name: String,
    /// Ready endpoints.
    pub(crate) ready: usize,
    /// All endpoints.
    pub(crate) endpoints: usize,
}

/// Compiles `config`. Errors name the bad part.
pub(crate) fn compile(
    config: &GatewayConfig,
    ctx: &CompileContext<'_>,
) -> Result<CompiledConfig, ConfigError> {
    let invalid = ConfigError::Invalid;
    let mut builders: BTreeMap<String, ListenerBuilder> = BTreeMap::new();
    for listener in &config.listeners {
        let builder = ListenerBuilder::new(listener).map_err(invalid)?;
        if builders.insert(listener.name.clone(), builder).is_some() {
            return Err(invalid(format!(
                "listener {:?} is defined twice",
                listener.name
            )));
        }
    }

    let mut new_pools = PoolMap::new();
    let backends = compile_backends(
        &config.backends,
        config.backend_client_certificate.as_ref(),
        ctx,
        &mut new_pools,
    )
    .map_err(invalid)?;
    let mut rules = RuleCompiler {
        backends: &backends,
        ctx,
    };

    for attached in &config.http_routes {
        let route = &attached.route;
        let compiled = rules.http_route(route).map_err(invalid)?;
        for attachment in &attached.attachments {
            let listener = builders.get_mut(&attachment.listener).ok_or_else(|| {
                invalid(format!(
                    "HTTPRoute {}: attached to unknown listener {:?}",
                    route.key, attachment.listener
                ))
            })?;
            if listener.protocol == ListenerProtocol::Tls {
                return Err(invalid(format!(
                    "HTTPRoute {}: listener {:?} has protocol TLS, which serves only TLSRoutes",
                    route.key, attachment.listener
                )));
            }
            for host in hostnames(&attachment.hostnames)
                .map_err(|e| invalid(format!("HTTPRoute {}: {e}", route.key)))?
            {
                listener.add_http(host.as_deref(), route, &compiled);
            }
        }
    }
    for attached in &config.grpc_routes {
        let route = &attached.route;
        let compiled = rules.grpc_route(route).map_err(invalid)?;
        for attachment in &attached.attachments {
            let listener = builders.get_mut(&attachment.listener).ok_or_else(|| {
                invalid(format!(
                    "GRPCRoute {}: attached to unknown listener {:?}",
                    route.key, attachment.listener
                ))
            })?;
            if listener.protocol == ListenerProtocol::Tls {
                return Err(invalid(format!(
                    "GRPCRoute {}: listener {:?} has protocol TLS, which serves only TLSRoutes",
                    route.key, attachment.listener
                )));
            }
            for host in hostnames(&attachment.hostnames)
                .map_err(|e| invalid(format!("GRPCRoute {}: {e}", route.key)))?
            {
                listener.add_grpc(host.as_deref(), route, &compiled);
            }
        }
    }
    for attached in &config.tls_routes {
        let route = &attached.route;
        let target = rules.tls_route(route).map_err(invalid)?;
        for attachment in &attached.attachments {
            let listener = builders.get_mut(&attachment.listener).ok_or_else(|| {
                invalid(format!(
                    "TLSRoute {}: attached to unknown listener {:?}",
                    route.key, attachment.listener
                ))
            })?;
            if listener.protocol != ListenerProtocol::Tls {
                return Err(invalid(format!(
                    "TLSRoute {}: listener {:?} is not a TLS listener",
                    route.key, attachment.listener
                )));
            }
            for host in hostnames(&attachment.hostnames)
                .map_err(|e| invalid(format!("TLSRoute {}: {e}", route.key)))?
            {
                listener.add_tls(host.as_deref(), route, &target);
            }
        }
    }

    let mut summary = ConfigSummary {
        version: config.version,
        gateway: config.gateway.as_ref().map(ToString::to_string),
        http_routes: config.http_routes.len(),
        grpc_routes: config.grpc_routes.len(),
        tls_routes: config.tls_routes.len(),
        backends: config
            .backends
            .iter()
            .map(|b| BackendSummary {
                name: service_name(&b.key),
                ready: b.endpoints.iter().filter(|e| e.ready).count(),
                endpoints: b.endpoints.len(),
            })
            .collect(),
        ..ConfigSummary::default()
    };
    let ports = build_ports(builders, &mut summary).map_err(invalid)?;
    Ok(CompiledConfig {
        version: config.version,
        ports,
        pools: new_pools,
        summary,
    })
}

// === listeners and ports ===

struct ListenerBuilder {
    name: Arc<str>,
    protocol: ListenerProtocol,
    tls_mode: Option<TlsMode>,
    hostname: Option<String>,
    port: u16,
    addresses: Vec<IpAddr>,
    certs: Vec<ServingCert>,
    client_validation: Option<ClientValidation>,
    http: HostIndex<Vec<(HttpPrecedence, HttpEntry)>>,
    grpc: HostIndex<Vec<(GrpcPrecedence, GrpcEntry)>>,
    tls: HostIndex<((i64, String), Arc<TlsTarget>)>,
    n_entries: usize,
}

impl ListenerBuilder {
    fn new(listener: &Listener) -> Result<Self, String> {
        let name = &listener.name;
        if listener.port == 0 {
            return Err(format!("listener {name:?}: port must be 1..65535"));
        }
        let hostname = match &listener.hostname {
            Some(h) => {
                Some(check_hostname(h).map_err(|e| format!("listener {name:?}: hostname {e}"))?)
            }
            None => None,
        };
        let client_validation = listener
            .tls
            .as_ref()
            .and_then(|tls| tls.client_validation.clone());
        if client_validation.is_some()
            && listener.tls.as_ref().map(|tls| tls.mode) != Some(TlsMode::Terminate)
        {
            return Err(format!(
                "listener {name:?}: client certificate validation needs tls.mode Terminate"
            ));
        }
        let (tls_mode, certs) = match (listener.protocol, &listener.tls) {
            (ListenerProtocol::Http, None) => (None, Vec::new()),
            (ListenerProtocol::Http, Some(_)) => {
                return Err(format!(
                    "listener {name:?}: protocol HTTP must not have tls settings"
                ));
            }
            (ListenerProtocol::Https | ListenerProtocol::Tls, None) => {
                return Err(format!(
                    "listener {name:?}: protocol {} requires tls settings",
                    protocol_name(listener.protocol)
                ));
            }
            (ListenerProtocol::Https, Some(tls)) if tls.mode == TlsMode::Passthrough => {
                return Err(format!(
                    "listener {name:?}: protocol HTTPS cannot use tls.mode Passthrough"
                ));
            }
            (_, Some(tls)) => {
                let certs = if tls.mode == TlsMode::Terminate {
                    if tls.certificates.is_empty() {
                        return Err(format!(
                            "listener {name:?}: tls.mode Terminate needs at least one certificate"
                        ));
                    }
                    tls.certificates
                        .iter()
                        .map(certs::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("listener {name:?}: {e}"))?
                } else {
                    Vec::new()
                };
                (Some(tls.mode), certs)
            }
        };
        Ok(Self {
            name: Arc::from(name.as_str()),
            protocol: listener.protocol,
            tls_mode,
            hostname,
            port: listener.port,
            addresses: listener.addresses.clone(),
            certs,
            client_validation,
            http: HostIndex::default(),
            grpc: HostIndex::default(),
            tls: HostIndex::default(),
            n_entries: 0,
        })
    }

    fn add_http(
        &mut self,
        host: Option<&str>,
        route: &HttpRoute,
        rules: &CompiledRules<RequestMatcherSpec>,
    ) {
        let bucket = self.http.entry_or_insert_with(host, Vec::new);
        for (rule_index, (rule, matchers)) in rules.iter().enumerate() {
            for (match_index, spec) in matchers.iter().enumerate() {
                let precedence = HttpPrecedence {
                    path: Reverse(spec.matcher.path.rank()),
                    method: Reverse(spec.matcher.method.is_some()),
                    n_headers: Reverse(spec.matcher.headers.len()),
                    n_query: Reverse(spec.matcher.query.len()),
                    created_unix_ms: route.created_unix_ms,
                    route_key: Arc::clone(&rule.route),
                    rule_index,
                    match_index,
                };
                bucket.push((
                    precedence,
                    HttpEntry {
                        matcher: spec.rebuild(),
                        rule: Arc::clone(rule),
                    },
                ));
                self.n_entries += 1;
            }
        }
    }

    fn add_grpc(
        &mut self,
        host: Option<&str>,
        route: &GrpcRoute,
        rules: &CompiledRules<GrpcMatcherSpec>,
    ) {
        let bucket = self.grpc.entry_or_insert_with(host, Vec::new);
        for (rule_index, (rule, matchers)) in rules.iter().enumerate() {
            for (match_index, spec) in matchers.iter().enumerate() {
                let precedence = GrpcPrecedence {
                    service_len: Reverse(spec.service_len),
                    method_len: Reverse(spec.method_len),
                    n_headers: Reverse(spec.headers.len()),
                    created_unix_ms: route.created_unix_ms,
                    route_key: Arc::clone(&rule.route),
                    rule_index,
                    match_index,
                };
                bucket.push((
                    precedence,
                    GrpcEntry {
                        matcher: spec.rebuild(),
                        rule: Arc::clone(rule),
                    },
                ));
                self.n_entries += 1;
            }
        }
    }

    fn add_tls(&mut self, host: Option<&str>, route: &TlsRoute, target: &Arc<TlsTarget>) {
        let age = (route.created_unix_ms, route.key.to_string());
        let slot = self
            .tls
            .entry_or_insert_with(host, || (age.clone(), Arc::clone(target)));
        // Two TLSRoutes claiming one SNI name: the older (then alphabetically first) wins.
        if age < slot.0 {
            *slot = (age, Arc::clone(target));
        }
        self.n_entries += 1;
    }

    fn finish(mut self) -> ListenerTable {
        for bucket in self.http.values_mut() {
            bucket.sort_by(|a, b| a.0.cmp(&b.0));
        }
        for bucket in self.grpc.values_mut() {
            bucket.sort_by(|a, b| a.0.cmp(&b.0));
        }
        ListenerTable {
            name: self.name,
            protocol: self.protocol,
            tls_mode: self.tls_mode,
            http: map_index(self.http, |bucket| {
                bucket.into_iter().map(|(_, e)| e).collect()
            }),
            grpc: map_index(self.grpc, |bucket| {
                bucket.into_iter().map(|(_, e)| e).collect()
            }),
            tls_routes: map_index(self.tls, |(_, target)| target),
        }
    }
}

fn map_index<A, B>(index: HostIndex<A>, f: impl Fn(A) -> B) -> HostIndex<B> {
    index.map(f)
}

fn build_ports(
    builders: BTreeMap<String, ListenerBuilder>,
    summary: &mut ConfigSummary,
) -> Result<BTreeMap<u16, CompiledPort>, String> {
    let mut by_port: BTreeMap<u16, Vec<ListenerBuilder>> = BTreeMap::new();
    for builder in builders.into_values() {
        by_port.entry(builder.port).or_default().push(builder);
    }
    let mut ports = BTreeMap::new();
    for (port, listeners) in by_port {
        let kind = port_kind(listeners[0].protocol);
        let mut seen_hosts: HashMap<Option<String>, Arc<str>> = HashMap::new();
        let mut addresses: Vec<IpAddr> = Vec::new();
        let mut any_address = false;
        let mut terminating: Vec<(Option<String>, Vec<ServingCert>)> = Vec::new();
        let mut has_https = false;
        let mut has_passthrough = false;
        // Client validation happens in the port's one handshake, before the listener is known
        // from SNI, so every terminating listener of a port must ask for the same.
        let mut validation: Option<(&Arc<str>, &Option<ClientValidation>)> = None;
        for l in &listeners {
            if port_kind(l.protocol) != kind {
                return Err(format!(
                    "listeners {:?} ({}) and {:?} ({}) share port {port} but one is plain HTTP and the other TLS",
                    listeners[0].name,
                    protocol_name(listeners[0].protocol),
                    l.name,
                    protocol_name(l.protocol)
                ));
            }
            if let Some(other) = seen_hosts.insert(l.hostname.clone(), Arc::clone(&l.name)) {
                return Err(format!(
                    "listeners {other:?} and {:?} conflict: same port {port} and hostname {}",
                    l.name,
                    l.hostname.as_deref().unwrap_or("(none)")
                ));
            }
            if l.addresses.is_empty() {
                any_address = true;
            }
            for a in &l.addresses {
                if !addresses.contains(a) {
                    addresses.push(*a);
                }
            }
            has_https |= l.protocol == ListenerProtocol::Https;
            has_passthrough |= l.tls_mode == Some(TlsMode::Passthrough);
            if l.tls_mode == Some(TlsMode::Terminate) {
                terminating.push((l.hostname.clone(), l.certs.clone()));
                match validation {
                    None => validation = Some((&l.name, &l.client_validation)),
                    Some((first, v)) if *v != l.client_validation => {
                        return Err(format!(
                            "listeners {first:?} and {:?} share port {port} but ask for different client certificate validation",
                            l.name
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let bind = if any_address || addresses.is_empty() {
            vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)]
        } else {
            addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        };
        let client_validation = validation.and_then(|(_, v)| v.clone());
        let mut client_cert_trust = None;
        let tls = if terminating.is_empty() {
            None
        } else {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("port {port}: TLS setup: {e}"))?;
            let builder = match validation {
                Some((name, Some(v))) => {
                    let (verifier, trust) = client_auth::verifier(v, &provider)
                        .map_err(|e| format!("listener {name:?}: {e}"))?;
                    client_cert_trust = Some(trust);
                    builder.with_client_cert_verifier(verifier)
                }
                _ => builder.with_no_client_auth(),
            };
            let server = builder.with_cert_resolver(Arc::new(SniResolver::new(terminating)));
            Some(server)
        };
        // HTTPS connections negotiate h2 or http/1.1; a TLS listener's stream negotiates none.
        let (tls, tls_stream) = match tls {
            Some(server) if has_https => {
                let stream = Arc::new(server.clone());
                let mut http = server;
                http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                (Some(Arc::new(http)), Some(stream))
            }
            Some(server) => {
                let server = Arc::new(server);
                (Some(Arc::clone(&server)), Some(server))
            }
            None => (None, None),
        };
        let mut index: HostIndex<Arc<ListenerTable>> = HostIndex::default();
        let mut names = Vec::new();
        for l in listeners {
            summary.listeners.push(ListenerSummary {
                name: l.name.to_string(),
                port,
                protocol: protocol_name(l.protocol),
                hostname: l.hostname.clone(),
                entries: l.n_entries,
            });
            names.push(l.name.to_string());
            let hostname = l.hostname.clone();
            let table = Arc::new(l.finish());
            let slot = index.entry_or_insert_with(hostname.as_deref(), || Arc::clone(&table));
            *slot = table;
        }
        ports.insert(
            port,
            CompiledPort {
                bind,
                kind,
                table: Arc::new(PortTable {
                    port,
                    kind,
                    listeners: index,
                    tls,
                    tls_stream,
                    has_passthrough,
                    has_https,
                    client_cert_trust,
                }),
                listener_names: names,
                client_validation,
            },
        );
    }
    Ok(ports)
}

fn port_kind(protocol: ListenerProtocol) -> PortKind {
    match protocol {
        ListenerProtocol::Http => PortKind::Http,
        ListenerProtocol::Https | ListenerProtocol::Tls => PortKind::Tls,
    }
}

fn protocol_name(protocol: ListenerProtocol) -> &'static str {
    match protocol {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
        ListenerProtocol::Tls => "TLS",
    }
}

/// Effective hostnames of an attachment: `[None]` (any host) when empty.
fn hostnames(list: &[String]) -> Result<Vec<Option<String>>, String> {
    if list.is_empty() {
        return Ok(vec![None]);
    }
    list.iter()
        .map(|h| {
            check_hostname(h)
                .map(Some)
                .map_err(|e| format!("hostname {e}"))
        })
        .collect()
}

/// Lower-cases and checks a hostname or `*.` wildcard.
fn check_hostname(hostname: &str) -> Result<String, String> {
    let lower = hostname.to_ascii_lowercase();
    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(lower)
    } else {
        Err(format!("{hostname:?} is not a valid host name"))
    }
}

// === backends ===

fn service_name(key: &ServiceKey) -> String {
    format!("{}/{}:{}", key.namespace, key.name, key.port)
}

fn compile_backends(
    backends: &[Backend],
    client_certificate: Option<&TlsCertificate>,
    ctx: &CompileContext<'_>,
    new_pools: &mut PoolMap,
) -> Result<HashMap<ServiceKey, Arc<ServiceBackend>>, String> {
    let mut out = HashMap::new();
    // One client config per (policy settings, ALPN) per snapshot, shared by its endpoints.
    let mut connectors: HashMap<(&BackendTls, bool), Arc<BackendConnector>> = HashMap::new();
    for backend in backends {
        let name = service_name(&backend.key);
        let connector = match &backend.tls {
            None => None,
            Some(tls) => {
                let h2 = backend.app_protocol == AppProtocol::H2c;
                let connector = match connectors.get(&(tls, h2)) {
                    Some(connector) => Arc::clone(connector),
                    None => {
                        let connector = Arc::new(
                            BackendConnector::new(tls, h2, client_certificate)
                                .map_err(|e| format!("backend {name}: TLS: {e}"))?,
                        );
                        connectors.insert((tls, h2), Arc::clone(&connector));
                        connector
                    }
                };
                Some(connector)
            }
        };
        let mut endpoints = Vec::new();
        let mut seen = HashSet::new();
        for endpoint in backend.endpoints.iter().filter(|e| e.ready) {
            if endpoint.addr.port() == 0 {
                return Err(format!(
                    "backend {name}: endpoint {} has port 0",
                    endpoint.addr
                ));
            }
            if !seen.insert(endpoint.addr) {
                continue;
            }
            let key = (
                endpoint.addr,
                backend.app_protocol,
                backend
                    .tls
                    .clone()
                    .map(|tls| (tls, client_certificate.cloned())),
            );
            let pool = match new_pools.get(&key) {
                Some(pool) => Arc::clone(pool),
                None => {
                    let pool = ctx.pools.get(&key).cloned().unwrap_or_else(|| {
                        Arc::new(EndpointPool::new(
                            endpoint.addr,
                            backend.app_protocol,
                            connector.clone(),
                            ctx.pool_settings,
                        ))
                    });
                    new_pools.insert(key, Arc::clone(&pool));
                    pool
                }
            };
            endpoints.push(pool);
        }
        let metrics = ctx.metrics.backend(&name);
        let service = Arc::new(ServiceBackend::new(
            Arc::from(name.as_str()),
            endpoints,
            metrics,
        ));
        if out.insert(backend.key.clone(), service).is_some() {
            return Err(format!("backend {name} is listed twice"));
        }
    }
    Ok(out)
}

// === rules ===

/// A compiled match kept in a form that can be rebuilt per attachment (regexes are cheap to
/// clone; matchers are not `Clone` because `HeaderName`/`Regex` clones are explicit).
struct RequestMatcherSpec {
    matcher: RequestMatcher,
}

impl RequestMatcherSpec {
    fn rebuild(&self) -> RequestMatcher {
        let m = &self.matcher;
        RequestMatcher {
            path: match &m.path {
                PathMatcher::Exact(p) => PathMatcher::Exact(p.clone()),
                PathMatcher::Prefix(p) => PathMatcher::Prefix(p.clone()),
                PathMatcher::Regex(r) => PathMatcher::Regex(r.clone()),
            },
            method: m.method.clone(),
            headers: m
                .headers
                .iter()
                .map(|h| HeaderMatcher {
                    name: h.name.clone(),
                    value: clone_value(&h.value),
                })
                .collect(),
            query: m
                .query
                .iter()
                .map(|q| QueryMatcher {
                    name: q.name.clone(),
                    value: clone_value(&q.value),
                })
                .collect(),
        }
    }
}

struct GrpcMatcherSpec {
    service: Option<ValueMatcher>,
    method: Option<ValueMatcher>,
    headers: Vec<HeaderMatcher>,
    service_len: usize,
    method_len: usize,
}

impl GrpcMatcherSpec {
    fn rebuild(&self) -> GrpcMatcher {
        GrpcMatcher {
            service: self.service.as_ref().map(clone_value),
            method: self.method.as_ref().map(clone_value),
            headers: self
                .headers
                .iter()
                .map(|h| HeaderMatcher {
                    name: h.name.clone(),
                    value: clone_value(&h.value),
                })
                .collect(),
        }
    }
}

fn clone_value(value: &ValueMatcher) -> ValueMatcher {
    match value {
        ValueMatcher::Exact(v) => ValueMatcher::Exact(v.clone()),
        ValueMatcher::Regex(r) => ValueMatcher::Regex(r.clone()),
    }
}

/// Compiled rules of one route with their (per-attachment rebuildable) matches.
type CompiledRules<M> = Vec<(Arc<Rule>, Vec<M>)>;

struct RuleCompiler<'a> {
    backends: &'a HashMap<ServiceKey, Arc<ServiceBackend>>,
    ctx: &'a CompileContext<'a>,
}

impl RuleCompiler<'_> {
    fn http_route(
        &mut self,
        route: &HttpRoute,
    ) -> Result<CompiledRules<RequestMatcherSpec>, String> {
        let key = route.key.to_string();
        let route_name: Arc<str> = Arc::from(key.as_str());
        let mut out = Vec::with_capacity(route.rules.len());
        for (rule_index, rule) in route.rules.iter().enumerate() {
            let at = |e: String| format!("HTTPRoute {key} rule {rule_index}: {e}");
            let mut matchers = Vec::new();
            let default_match = [HttpRouteMatch {
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
                query_params: vec![],
                method: None,
            }];
            let matches: &[HttpRouteMatch] = if rule.matches.is_empty() {
                &default_match
            } else {
                &rule.matches
            };
            for (i, m) in matches.iter().enumerate() {
                matchers.push(RequestMatcherSpec {
                    matcher: compile_match(m).map_err(|e| at(format!("matches[{i}]: {e}")))?,
                });
            }
            let filters = self.filters(&rule.filters, Some(matches)).map_err(at)?;
            let choices = self
                .backend_refs(&rule.backend_refs, Some(matches))
                .map_err(at)?;
            if filters.redirect.is_some() && filters.rewrite.is_some() {
                return Err(at(
                    "RequestRedirect and URLRewrite cannot be combined".into()
                ));
            }
            let retry = rule.retry.as_ref().map(|r| RetryPolicy {
                codes: r.codes.clone(),
                attempts: r.attempts,
                backoff: r.backoff.unwrap_or(self.ctx.default_backoff),
            });
            let session = rule
                .session_persistence
                .as_ref()
                .map(|spec| session_policy(spec, &key, rule_index, matches))
                .transpose()
                .map_err(at)?;
            let needs_buffering = retry.is_some()
                || !filters.mirrors.is_empty()
                || choices.iter().any(|c| !c.filters.mirrors.is_empty());
            let nonzero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
            out.push((
                Arc::new(Rule {
                    route: Arc::clone(&route_name),
                    rule_index,
                    grpc: false,
                    filters,
                    backends: WeightedBackends::new(choices),
                    request_timeout: nonzero(rule.timeouts.request),
                    backend_timeout: nonzero(rule.timeouts.backend_request),
                    route_sets_timeout: rule.timeouts.request.is_some()
                        || rule.timeouts.backend_request.is_some(),
                    retry,
                    session,
                    needs_buffering,
                    metrics: OnceLock::new(),
                }),
                matchers,
            ));
        }
        Ok(out)
    }

    fn grpc_route(&mut self, route: &GrpcRoute) -> Result<CompiledRules<GrpcMatcherSpec>, String> {
        let key = route.key.to_string();
        let route_name: Arc<str> = Arc::from(key.as_str());
        let mut out = Vec::with_capacity(route.rules.len());
        for (rule_index, rule) in route.rules.iter().enumerate() {
            let at = |e: String| format!("GRPCRoute {key} rule {rule_index}: {e}");
            let mut matchers = Vec::new();
            if rule.matches.is_empty() {
                matchers.push(GrpcMatcherSpec {
                    service: None,
                    method: None,
                    headers: vec![],
                    service_len: 0,
                    method_len: 0,
                });
            }
            for (i, m) in rule.matches.iter().enumerate() {
                let at_match = |e: String| at(format!("matches[{i}]: {e}"));
                let value = |v: &Option<String>,
                             regex: bool,
                             what: &str|
                 -> Result<Option<ValueMatcher>, String> {
                    match v {
                        None => Ok(None),
                        Some(v) if regex => anchored_regex(v)
                            .map(|r| Some(ValueMatcher::Regex(r)))
                            .map_err(|e| {
                                format!("method.{what}: invalid regular expression {v:?}: {e}")
                            }),
                        Some(v) if v.contains('/') => {
                            Err(format!("method.{what}: {v:?} must not contain '/'"))
                        }
                        Some(v) => Ok(Some(ValueMatcher::Exact(v.as_str().into()))),
                    }
                };
                let (service, method, service_len, method_len) = match &m.method {
                    Some(mm) => (
                        value(&mm.service, mm.regex, "service").map_err(at_match)?,
                        value(&mm.method, mm.regex, "method").map_err(at_match)?,
                        mm.service.as_ref().map_or(0, String::len),
                        mm.method.as_ref().map_or(0, String::len),
                    ),
                    None => (None, None, 0, 0),
                };
                let headers = m
                    .headers
                    .iter()
                    .enumerate()
                    .map(|(j, h)| {
                        compile_header(h).map_err(|e| at_match(format!("headers[{j}]: {e}")))
                    })
                    .collect::<Result<_, _>>()?;
                matchers.push(GrpcMatcherSpec {
                    service,
                    method,
                    headers,
                    service_len,
                    method_len,
                });
            }
            let filters = self.filters(&rule.filters, None).map_err(at)?;
            if filters.redirect.is_some() || filters.rewrite.is_some() || filters.cors.is_some() {
                return Err(at(
                    "GRPCRoute rules support only header modifiers and mirrors".into(),
                ));
            }
            let choices = self.backend_refs(&rule.backend_refs, None).map_err(at)?;
            let session = rule
                .session_persistence
                .as_ref()
                .map(|spec| session_policy(spec, &key, rule_index, &[]))
                .transpose()
                .map_err(at)?;
            let needs_buffering = !filters.mirrors.is_empty()
                || choices.iter().any(|c| !c.filters.mirrors.is_empty());
            out.push((
                Arc::new(Rule {
                    route: Arc::clone(&route_name),
                    rule_index,
                    grpc: true,
                    filters,
                    backends: WeightedBackends::new(choices),
                    request_timeout: None,
                    backend_timeout: None,
                    route_sets_timeout: false,
                    retry: None,
                    session,
                    needs_buffering,
                    metrics: OnceLock::new(),
                }),
                matchers,
            ));
        }
        Ok(out)
    }

    fn tls_route(&mut self, route: &TlsRoute) -> Result<Arc<TlsTarget>, String> {
        let key = route.key.to_string();
        let choices = self
            .backend_refs(&route.backend_refs, None)
            .map_err(|e| format!("TLSRoute {key}: {e}"))?;
        Ok(Arc::new(TlsTarget {
            route: Arc::from(key.as_str()),
            backends: WeightedBackends::new(choices),
        }))
    }

    fn target(&self, backend_ref: &BackendRef) -> Result<BackendTarget, String> {
        let written = format!("{}/{}", backend_ref.namespace, backend_ref.name);
        match &backend_ref.resolution {
            Resolution::Service(key) => match self.backends.get(key) {
                Some(service) => Ok(BackendTarget::Service(Arc::clone(service))),
                None => Err(format!(
                    "backendRef {written} resolves to Service port {} which is missing from backends",
                    service_name(key)
                )),
            },
            Resolution::Invalid { reason, .. } => Ok(BackendTarget::Invalid {
                name: Arc::from(written.as_str()),
                reason: Arc::from(reason.as_str()),
            }),
            Resolution::Unresolved => Ok(BackendTarget::Invalid {
                name: Arc::from(written.as_str()),
                reason: Arc::from("Unresolved"),
            }),
        }
    }

    fn backend_refs(
        &self,
        refs: &[HttpBackendRef],
        matches: Option<&[HttpRouteMatch]>,
    ) -> Result<Vec<BackendChoice>, String> {
        refs.iter()
            .enumerate()
            .map(|(i, r)| {
                let at = |e: String| format!("backendRefs[{i}]: {e}");
                if r.weight > 1_000_000 {
                    return Err(at(format!("weight {} is above 1000000", r.weight)));
                }
                Ok(BackendChoice {
                    weight: r.weight,
                    target: self.target(&r.backend_ref).map_err(at)?,
                    filters: self.filters(&r.filters, matches).map_err(at)?,
                })
            })
            .collect()
    }

    fn filters(
        &self,
        filters: &[HttpFilter],
        matches: Option<&[HttpRouteMatch]>,
    ) -> Result<FilterSet, String> {
        let mut set = FilterSet::default();
        for (i, filter) in filters.iter().enumerate() {
            let at = |e: String| format!("filters[{i}]: {e}");
            let once = |present: bool, what: &str| {
                if present {
                    Err(at(format!("{what} may appear only once per rule")))
                } else {
                    Ok(())
                }
            };
            match filter {
                HttpFilter::RequestHeaderModifier(m) => {
                    once(set.request_headers.is_some(), "RequestHeaderModifier")?;
                    set.request_headers = Some(HeaderModifier::compile(m).map_err(at)?);
                }
                HttpFilter::ResponseHeaderModifier(m) => {
                    once(set.response_headers.is_some(), "ResponseHeaderModifier")?;
                    set.response_headers = Some(HeaderModifier::compile(m).map_err(at)?);
                }
                HttpFilter::RequestRedirect(r) => {
                    once(set.redirect.is_some(), "RequestRedirect")?;
                    set.redirect = Some(compile_redirect(r, matches).map_err(at)?);
                }
                HttpFilter::UrlRewrite(r) => {
                    once(set.rewrite.is_some(), "URLRewrite")?;
                    set.rewrite = Some(compile_rewrite(r, matches).map_err(at)?);
                }
                HttpFilter::RequestMirror(m) => {
                    if let Some((_, 0)) = m.fraction {
                        return Err(at(
                            "RequestMirror fraction denominator must be positive".into()
                        ));
                    }
                    if let Some((n, d)) = m.fraction
                        && n > d
                    {
                        return Err(at(format!("RequestMirror fraction {n}/{d} is above 1")));
                    }
                    set.mirrors.push(Mirror {
                        target: self.target(&m.backend_ref).map_err(at)?,
                        fraction: m.fraction,
                    });
                }
                HttpFilter::Cors(c) => {
                    once(set.cors.is_some(), "CORS")?;
                    set.cors = Some(CorsPolicy::compile(c).map_err(at)?);
                }
            }
        }
        Ok(set)
    }
}

/// A rule's `sessionPersistence`. The cookie is scoped to the rule's path when it has a single
/// Exact or PathPrefix match (without `;`), so that two rules' sessions on one host do not overwrite each
/// other's cookie for paths the other serves; otherwise to `/`.
fn session_policy(
    spec: &route::SessionPersistence,
    route_key: &str,
    rule_index: usize,
    matches: &[HttpRouteMatch],
) -> Result<SessionPolicy, String> {
    let cookie_path = match matches {
        // A path may hold ';', which would start another cookie attribute (`; Domain=...`).
        [only] => match &only.path {
            PathMatch::Exact(path) | PathMatch::Prefix(path) if !path.contains(';') => {
                path.as_str()
            }
            _ => "/",
        },
        _ => "/",
    };
    let default_name = session::default_name(spec.kind, route_key, rule_index);
    SessionPolicy::new(spec, &default_name, cookie_path)
        .map_err(|e| format!("sessionPersistence: {e}"))
}

fn compile_match(m: &HttpRouteMatch) -> Result<RequestMatcher, String> {
    let path = match &m.path {
        PathMatch::Exact(p) => {
            check_path(p)?;
            PathMatcher::Exact(normal_config_path(p).into())
        }
        PathMatch::Prefix(p) => {
            check_path(p)?;
            PathMatcher::prefix(&normal_config_path(p))
        }
        PathMatch::RegularExpression(r) => PathMatcher::Regex(
            anchored_regex(r)
                .map_err(|e| format!("path: invalid regular expression {r:?}: {e}"))?,
        ),
    };
    let method = match &m.method {
        Some(method) => Some(
            Method::from_bytes(method.as_bytes())
                .map_err(|_| format!("method: invalid method {method:?}"))?,
        ),
        None => None,
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| compile_header(h).map_err(|e| format!("headers[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    let query = m
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Ok(QueryMatcher {
                name: q.name.as_str().into(),
                value: compile_value(&q.value).map_err(|e| format!("queryParams[{i}]: {e}"))?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(RequestMatcher {
        path,
        method,
        headers,
        query,
    })
}

fn compile_header(h: &route::HeaderMatch) -> Result<HeaderMatcher, String> {
    Ok(HeaderMatcher {
        name: HeaderName::try_from(h.name.as_str())
            .map_err(|_| format!("invalid header name {:?}", h.name))?,
        value: compile_value(&h.value)?,
    })
}

fn compile_value(v: &StringMatch) -> Result<ValueMatcher, String> {
    match v {
        StringMatch::Exact(s) => Ok(ValueMatcher::Exact(s.as_str().into())),
        StringMatch::RegularExpression(r) => anchored_regex(r)
            .map(ValueMatcher::Regex)
            .map_err(|e| format!("invalid regular expression {r:?}: {e}")),
    }
}

/// A configured Exact or PathPrefix value in the form request paths are matched in (see
/// [`super::path`]), so `/%7Euser` in a route matches a request for `/~user`. A value that
/// cannot be normalized is kept as written: it never matches, since a request path with the
/// same flaw is refused before routing.
fn normal_config_path(path: &str) -> std::borrow::Cow<'_, str> {
    super::path::normalize_path(path).unwrap_or(std::borrow::Cow::Borrowed(path))
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    Ok(())
}

fn check_prefix_modifier(
    modifier: &Option<PathModifier>,
    matches: Option<&[HttpRouteMatch]>,
) -> Result<(), String> {
    if let Some(PathModifier::ReplacePrefixMatch(_)) = modifier {
        let ok =
            matches.is_some_and(|ms| ms.len() == 1 && matches!(ms[0].path, PathMatch::Prefix(_)));
        if !ok {
            return Err("ReplacePrefixMatch needs a rule with exactly one PathPrefix match".into());
        }
    }
    Ok(())
}

fn compile_redirect(
    r: &route::RequestRedirect,
    matches: Option<&[HttpRouteMatch]>,
) -> Result<Redirect, String> {
    if let Some(scheme) = &r.scheme
        && scheme != "http"
        && scheme != "https"
    {
        return Err(format!(
            "RequestRedirect scheme {scheme:?} must be http or https"
        ));
    }
    if !matches!(r.status_code, 301 | 302 | 303 | 307 | 308) {
        return Err(format!(
            "RequestRedirect statusCode {} must be 301, 302, 303, 307 or 308",
            r.status_code
        ));
    }
    check_prefix_modifier(&r.path, matches)?;
    Ok(Redirect {
        scheme: r.scheme.clone(),
        hostname: r.hostname.clone(),
        path: r.path.clone(),
        port: r.port,
        status: StatusCode::from_u16(r.status_code).map_err(|e| e.to_string())?,
    })
}

fn compile_rewrite(
    r: &route::UrlRewrite,
    matches: Option<&[HttpRouteMatch]>,
) -> Result<Rewrite, String> {
    check_prefix_modifier(&r.path, matches)?;
    let hostname = match &r.hostname {
        Some(h) => Some(
            http::HeaderValue::try_from(h.as_str())
                .map_err(|_| format!("URLRewrite hostname {h:?} is invalid"))?,
        ),
        None => None,
    };
    Ok(Rewrite {
        hostname,
        path: r.path.clone(),
    })
}

#[cfg(test)]
mod tests;
