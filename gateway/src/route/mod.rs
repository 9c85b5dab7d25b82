//! The compiled route table: per port, the listeners (indexed by hostname for listener
//! isolation), and per listener the HTTP, gRPC and TLS routes indexed by effective hostname
//! and sorted by Gateway API precedence.
//!
//! Lookup walks hostname buckets from the most to the least specific (exact name, longer
//! wildcards, any host), which is steps 1–2 of the precedence ladder; inside a bucket entries
//! are pre-sorted by the rest of the ladder, so the first entry that matches wins.

pub(crate) mod compile;
pub(crate) mod grpc;
pub(crate) mod host;
pub(crate) mod matcher;
pub(crate) mod path;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use meridian_proto::model::gateway::{ListenerProtocol, TlsMode};

use self::grpc::GrpcMatcher;
use self::host::HostIndex;
use self::matcher::{RequestMatcher, RequestView};
use crate::backend::WeightedBackends;
use crate::backend::session::SessionPolicy;
use crate::filter::FilterSet;
use crate::metrics::{GatewayMetrics, RouteMetrics};
use crate::tls::client_cert::ClientCertTrust;

/// Everything served on one port, swapped atomically on every config change.
#[derive(Debug)]
pub(crate) struct PortTable {
    /// The port.
    pub(crate) port: u16,
    /// Whether connections start with TLS.
    pub(crate) kind: PortKind,
    /// The port's listeners by hostname.
    pub(crate) listeners: HostIndex<Arc<ListenerTable>>,
    /// TLS termination settings (SNI certificate choice, ALPN), for TLS ports with at least
    /// one terminating listener.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The same without ALPN, for connections a TLS listener in Terminate mode takes (its
    /// stream goes to a TCP backend: negotiating `h2` or `http/1.1` for it would be a lie).
    pub(crate) tls_stream: Option<Arc<rustls::ServerConfig>>,
    /// Whether any listener on the port passes TLS through (ClientHello must be inspected).
    pub(crate) has_passthrough: bool,
    /// Whether any listener on the port is HTTPS (an SNI no listener claims is still served
    /// HTTP, answering 404; without one it is rejected before the handshake).
    pub(crate) has_https: bool,
    /// How far the client certificates of its terminated connections can be trusted (set
    /// when the port validates them): decides whether a backend is told about one.
    pub(crate) client_cert_trust: Option<ClientCertTrust>,
}

/// How a port's connections begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortKind {
    /// Plain HTTP/1.1 or h2c.
    Http,
    /// TLS (terminated HTTPS, TLS passthrough, or both by SNI).
    Tls,
}

/// One Gateway listener's routes.
#[derive(Debug)]
pub(crate) struct ListenerTable {
    /// Listener name.
    pub(crate) name: Arc<str>,
    /// Protocol.
    pub(crate) protocol: ListenerProtocol,
    /// TLS mode for TLS listeners.
    pub(crate) tls_mode: Option<TlsMode>,
    /// HTTPRoute matches by effective hostname, each bucket in precedence order.
    pub(crate) http: HostIndex<Vec<HttpEntry>>,
    /// GRPCRoute matches by effective hostname, each bucket in precedence order.
    pub(crate) grpc: HostIndex<Vec<GrpcEntry>>,
    /// TLSRoutes by SNI hostname (the oldest route wins a shared hostname).
    pub(crate) tls_routes: HostIndex<Arc<TlsTarget>>,
}

/// One HTTPRouteMatch with its rule.
#[derive(Debug)]
pub(crate) struct HttpEntry {
    /// The conditions.
    pub(crate) matcher: RequestMatcher,
    /// What to do.
    pub(crate) rule: Arc<Rule>,
}

/// One GRPCRouteMatch with its rule.
#[derive(Debug)]
pub(crate) struct GrpcEntry {
    /// The conditions.
    pub(crate) matcher: GrpcMatcher,
    /// What to do.
    pub(crate) rule: Arc<Rule>,
}

/// A compiled HTTPRoute or GRPCRoute rule.
#[derive(Debug)]
pub(crate) struct Rule {
    /// `namespace/name` of the route.
    pub(crate) route: Arc<str>,
    /// Index of the rule in the route.
    pub(crate) rule_index: usize,
    /// True for GRPCRoute rules (errors are gRPC statuses).
    pub(crate) grpc: bool,
    /// Rule-level filters.
    pub(crate) filters: FilterSet,
    /// Weighted backends.
    pub(crate) backends: WeightedBackends,
    /// `timeouts.request` (None = no deadline).
    pub(crate) request_timeout: Option<Duration>,
    /// `timeouts.backendRequest` (None = no deadline).
    pub(crate) backend_timeout: Option<Duration>,
    /// The route sets a timeout of its own (a zero one, "no deadline", included), so the
    /// gateway's default wait for a response head does not apply.
    pub(crate) route_sets_timeout: bool,
    /// Retry stanza.
    pub(crate) retry: Option<RetryPolicy>,
    /// `sessionPersistence`.
    pub(crate) session: Option<SessionPolicy>,
    /// Whether the request body must be buffered (retries or mirrors).
    pub(crate) needs_buffering: bool,
    /// Per-rule metrics, created on the rule's first request: resolving label sets for every
    /// rule of a large config would dominate compile time (and most rules of a 10,000-route
    /// config may never see a request).
    pub(crate) metrics: OnceLock<RouteMetrics>,
}

/// A compiled retry stanza.
#[derive(Debug)]
pub(crate) struct RetryPolicy {
    /// Status codes that trigger a retry.
    pub(crate) codes: Vec<u16>,
    /// Retries after the first attempt.
    pub(crate) attempts: u32,
    /// Wait between attempts.
    pub(crate) backoff: Duration,
}

/// A TLSRoute's backends.
#[derive(Debug)]
pub(crate) struct TlsTarget {
    /// `namespace/name` of the route.
    pub(crate) route: Arc<str>,
    /// Weighted backends.
    pub(crate) backends: WeightedBackends,
}

// === impl Rule ===

impl Rule {
    /// This rule's metric handles (created on first use).
    pub(crate) fn metrics(&self, metrics: &GatewayMetrics) -> &RouteMetrics {
        self.metrics
            .get_or_init(|| metrics.route(&self.route, self.rule_index))
    }
}

// === impl PortTable ===

impl PortTable {
    /// The listener a request for `host` belongs to (listener isolation: only the most
    /// specific matching listener).
    pub(crate) fn listener_for_host(&self, host: &str) -> Option<&Arc<ListenerTable>> {
        self.listeners.best(host)
    }

    /// The most specific TLS-passthrough listener for an SNI name (or for no SNI).
    pub(crate) fn passthrough_listener(&self, sni: Option<&str>) -> Option<&Arc<ListenerTable>> {
        let listener = match sni {
            Some(sni) => self.listeners.best(sni),
            None => self.listeners.get_pattern(None),
        }?;
        (listener.tls_mode == Some(TlsMode::Passthrough)).then_some(listener)
    }

    /// The listener an SNI name (or no SNI) selects, if it is a TLS listener that terminates
    /// and forwards the decrypted stream to a TLSRoute backend.
    pub(crate) fn terminate_listener(&self, sni: Option<&str>) -> Option<&Arc<ListenerTable>> {
        let listener = match sni {
            Some(sni) => self.listeners.best(sni),
            None => self.listeners.get_pattern(None),
        }?;
        (listener.protocol == ListenerProtocol::Tls
            && listener.tls_mode == Some(TlsMode::Terminate))
        .then_some(listener)
    }
}

// === impl ListenerTable ===

impl ListenerTable {
    /// The winning HTTPRoute match for a request, if any.
    pub(crate) fn find_http<'a>(
        &'a self,
        host: &str,
        request: &mut RequestView<'_>,
    ) -> Option<&'a HttpEntry> {
        for bucket in self.http.candidates(host) {
            for entry in bucket {
                if entry.matcher.matches(request) {
                    return Some(entry);
                }
            }
        }
        None
    }

    /// The winning GRPCRoute match for a request, if any.
    pub(crate) fn find_grpc<'a>(
        &'a self,
        host: &str,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<&'a GrpcEntry> {
        for bucket in self.grpc.candidates(host) {
            for entry in bucket {
                if entry.matcher.matches(path, headers) {
                    return Some(entry);
                }
            }
        }
        None
    }

    /// Whether any GRPCRoute is attached.
    pub(crate) fn has_grpc(&self) -> bool {
        !self.grpc.is_empty()
    }

    /// The TLSRoute serving an SNI name.
    pub(crate) fn find_tls(&self, sni: Option<&str>) -> Option<&Arc<TlsTarget>> {
        match sni {
            Some(sni) => self.tls_routes.best(sni),
            None => self.tls_routes.get_pattern(None),
        }
    }
}

#[cfg(test)]
mod tests;
