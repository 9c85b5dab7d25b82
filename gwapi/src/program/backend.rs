//! Backend resolution: every `BackendRef` of an attached route gets a `Resolution`, and every
//! resolved Service port becomes a `Backend` with endpoints from its EndpointSlices and, when a
//! BackendTLSPolicy targets it, its TLS settings.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use meridian_proto::model::gateway::{AppProtocol, Backend, BackendTls, Endpoint};
use meridian_proto::model::route::{
    BackendRef, GrpcRoute, HttpBackendRef, HttpFilter, HttpRoute, Resolution, ServiceKey, TlsRoute,
};

use super::index::{Index, Reference};
use super::policy::Policies;
use crate::k8s;
use crate::status::{PolicyStatus, Reason, RouteKind};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A backend reference that did not resolve, for the route's `ResolvedRefs` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefFailure {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

/// Resolves references against one [`Index`].
pub(crate) struct Resolver<'i, 'a> {
    pub(crate) index: &'i Index<'a>,
    pub(crate) policies: &'i Policies,
    /// Policies consulted for this Gateway's backends: position → the policy it lost a
    /// conflict to, if any (for their status).
    pub(crate) used: RefCell<BTreeMap<usize, Option<usize>>>,
}

// === impl Resolver ===

impl<'i, 'a> Resolver<'i, 'a> {
    /// A resolver with no policy consulted yet.
    pub(crate) fn new(index: &'i Index<'a>, policies: &'i Policies) -> Self {
        Self {
            index,
            policies,
            used: RefCell::new(BTreeMap::new()),
        }
    }

    /// The status of every policy consulted so far, in key order.
    pub(crate) fn policy_statuses(&self) -> Vec<PolicyStatus> {
        let mut out: Vec<PolicyStatus> = self
            .used
            .borrow()
            .iter()
            .map(|(&position, lost_to)| {
                self.policies
                    .status(position, lost_to.map(|w| self.policies.key(w)))
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The TLS settings of a Service port: `Ok(None)` without a policy, `Err` when the
    /// winning policy is invalid. Records the policies consulted.
    fn backend_tls(
        &self,
        namespace: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Result<Option<BackendTls>, (Reason, String)> {
        let Some(applied) = self.policies.for_port(namespace, service, port_name) else {
            return Ok(None);
        };
        let (winner, evaluated) = applied.winner;
        {
            let mut used = self.used.borrow_mut();
            used.entry(winner).or_insert(None);
            for loser in applied.losers {
                used.insert(loser, Some(winner));
            }
        }
        match &evaluated.tls {
            Ok(tls) => Ok(Some(tls.clone())),
            Err(fault) => Err((
                fault.reason,
                format!(
                    "BackendTLSPolicy {} for Service {namespace}/{service} is not usable, so no request goes to it: {}",
                    evaluated.key, fault.message
                ),
            )),
        }
    }

    /// A copy of `route` with every backend resolved; mirrors whose backend does not resolve
    /// are removed (the spec: "mirror not configured").
    pub(crate) fn http_route(
        &self,
        route: &HttpRoute,
        failures: &mut Vec<RefFailure>,
    ) -> HttpRoute {
        let mut out = route.clone();
        let namespace = route.key.namespace.as_str();
        for rule in &mut out.rules {
            rule.filters = self.filters(&rule.filters, RouteKind::Http, namespace, failures);
            self.backends(&mut rule.backend_refs, RouteKind::Http, namespace, failures);
        }
        out
    }

    /// As [`Self::http_route`] for a GRPCRoute.
    pub(crate) fn grpc_route(
        &self,
        route: &GrpcRoute,
        failures: &mut Vec<RefFailure>,
    ) -> GrpcRoute {
        let mut out = route.clone();
        let namespace = route.key.namespace.as_str();
        for rule in &mut out.rules {
            rule.filters = self.filters(&rule.filters, RouteKind::Grpc, namespace, failures);
            self.backends(&mut rule.backend_refs, RouteKind::Grpc, namespace, failures);
        }
        out
    }

    /// As [`Self::http_route`] for a TLSRoute.
    pub(crate) fn tls_route(&self, route: &TlsRoute, failures: &mut Vec<RefFailure>) -> TlsRoute {
        let mut out = route.clone();
        let namespace = route.key.namespace.as_str();
        self.backends(&mut out.backend_refs, RouteKind::Tls, namespace, failures);
        out
    }

    fn backends(
        &self,
        backends: &mut [HttpBackendRef],
        kind: RouteKind,
        namespace: &str,
        failures: &mut Vec<RefFailure>,
    ) {
        for backend in backends {
            backend.backend_ref.resolution = self.resolve(&backend.backend_ref, kind, namespace);
            if let Resolution::Invalid { reason, message } = &backend.backend_ref.resolution {
                failures.push(RefFailure {
                    reason: reason_from(reason),
                    message: message.clone(),
                });
            }
            backend.filters = self.filters(&backend.filters, kind, namespace, failures);
        }
    }

    fn filters(
        &self,
        filters: &[HttpFilter],
        kind: RouteKind,
        namespace: &str,
        failures: &mut Vec<RefFailure>,
    ) -> Vec<HttpFilter> {
        let mut out = Vec::with_capacity(filters.len());
        for filter in filters {
            match filter {
                HttpFilter::RequestMirror(mirror) => {
                    let mut mirror = mirror.clone();
                    mirror.backend_ref.resolution =
                        self.resolve(&mirror.backend_ref, kind, namespace);
                    match &mirror.backend_ref.resolution {
                        Resolution::Invalid { reason, message } => failures.push(RefFailure {
                            reason: reason_from(reason),
                            message: format!("mirror not configured: {message}"),
                        }),
                        _ => out.push(HttpFilter::RequestMirror(mirror)),
                    }
                }
                other => out.push(other.clone()),
            }
        }
        out
    }

    /// Resolves one reference: kind, ReferenceGrant, Service, port, appProtocol, in that order.
    pub(crate) fn resolve(
        &self,
        reference: &BackendRef,
        kind: RouteKind,
        namespace: &str,
    ) -> Resolution {
        let invalid = |reason: Reason, message: String| Resolution::Invalid {
            reason: reason.as_str().to_string(),
            message,
        };
        // Built only on the error paths: this runs for every reference of every route.
        let target = || format!("{}/{}", reference.namespace, reference.name);
        if !reference.group.is_empty() || reference.kind != "Service" {
            let group = if reference.group.is_empty() {
                String::new()
            } else {
                format!("{}/", reference.group)
            };
            return invalid(
                Reason::InvalidKind,
                format!(
                    "backend {} has unsupported kind {group}{} (only core Services)",
                    target(),
                    reference.kind
                ),
            );
        }
        let allowed = self.index.reference_allowed(&Reference {
            from_group: GATEWAY_GROUP,
            from_kind: kind.as_str(),
            from_namespace: namespace,
            to_group: "",
            to_kind: "Service",
            to_namespace: &reference.namespace,
            to_name: &reference.name,
        });
        if !allowed {
            return invalid(
                Reason::RefNotPermitted,
                format!(
                    "Service {} is in another namespace and no ReferenceGrant allows {} from {namespace}",
                    target(),
                    kind.as_str()
                ),
            );
        }
        let Some(service) = self.index.service(&reference.namespace, &reference.name) else {
            return invalid(
                Reason::BackendNotFound,
                format!("Service {} not found", target()),
            );
        };
        // GA BackendObjectReference.kind: "Implementations SHOULD NOT support ExternalName
        // Services" (a CNAME that may lead anywhere, CVE-2021-25740). Their support is
        // implementation-specific under the `kind` field, so an unsupported one is reported
        // as an unsupported kind rather than resolved to a backend that has no endpoints.
        if service.spec.type_.as_deref() == Some("ExternalName") {
            return invalid(
                Reason::InvalidKind,
                format!(
                    "Service {} is of type ExternalName, which Meridian does not support (Gateway API: implementations SHOULD NOT, CVE-2021-25740)",
                    target()
                ),
            );
        }
        let Some(port) = reference.port else {
            return invalid(
                Reason::BackendNotFound,
                format!("Service {}: no port given", target()),
            );
        };
        let Some(service_port) = service_port(service, port) else {
            return invalid(
                Reason::BackendNotFound,
                format!("Service {} has no port {port}", target()),
            );
        };
        if let Err(app_protocol) = app_protocol(service_port) {
            return invalid(
                Reason::UnsupportedProtocol,
                format!(
                    "Service {} port {port} has unsupported {app_protocol}",
                    target()
                ),
            );
        }
        if let Err((reason, message)) = self.backend_tls(
            &reference.namespace,
            &reference.name,
            service_port.name.as_deref(),
        ) {
            return invalid(reason, message);
        }
        Resolution::Service(ServiceKey {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            port,
        })
    }

    /// The programmed backend of a resolved Service port: its protocol and its endpoints.
    ///
    /// The Service port is mapped to EndpointSlice ports by name (an unnamed Service port maps
    /// to the unnamed slice port), as kube-proxy does. Readiness is `conditions.ready`, absent
    /// meaning ready; when no endpoint is ready, endpoints that are terminating but still
    /// `serving` take the traffic (kube-proxy's ProxyTerminatingEndpoints, GA in 1.28), so the
    /// last pods of a rollout or scale-down keep answering until they stop. Endpoints are
    /// sorted and deduplicated so equal inputs give equal configs.
    pub(crate) fn backend(&self, key: &ServiceKey) -> Backend {
        let service = self.index.service(&key.namespace, &key.name);
        let service_port = service.and_then(|s| service_port(s, key.port));
        let app_protocol = service_port
            .and_then(|p| app_protocol(p).ok())
            .unwrap_or_default();
        let port_name = service_port.and_then(|p| p.name.as_deref()).unwrap_or("");
        // Only reached for ports that resolved, so an invalid policy has already made the
        // reference invalid; `ok().flatten()` cannot turn a failing policy into cleartext.
        let tls = self
            .backend_tls(&key.namespace, &key.name, Some(port_name))
            .ok()
            .flatten();
        let mut endpoints = BTreeSet::new();
        let mut terminating_serving = BTreeSet::new();
        for slice in self.index.slices(&key.namespace, &key.name) {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let target_port = slice
                .ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == port_name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(target_port) = target_port else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let fallback = !ready
                    && conditions
                        .is_some_and(|c| c.terminating == Some(true) && c.serving == Some(true));
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        let addr = SocketAddr::new(ip, target_port);
                        endpoints.insert((addr, ready));
                        if fallback {
                            terminating_serving.insert(addr);
                        }
                    }
                }
            }
        }
        if !terminating_serving.is_empty() && !endpoints.iter().any(|(_, ready)| *ready) {
            endpoints = endpoints
                .into_iter()
                .map(|(addr, ready)| (addr, ready || terminating_serving.contains(&addr)))
                .collect();
        }
        Backend {
            key: key.clone(),
            app_protocol,
            endpoints: endpoints
                .into_iter()
                .map(|(addr, ready)| Endpoint { addr, ready })
                .collect(),
            tls,
        }
    }
}

/// The Service port with number `port`.
fn service_port(service: &k8s::Service, port: u16) -> Option<&k8s::ServicePort> {
    service
        .spec
        .ports
        .iter()
        .find(|p| p.port == i64::from(port))
}

/// Maps a Service port's `appProtocol`: absent, `http` or `kubernetes.io/http` → HTTP/1.1;
/// `kubernetes.io/h2c` (or `h2c`) → h2c; `kubernetes.io/ws` (or `ws`) → WebSocket. Anything
/// else (`https`, `kubernetes.io/wss`, `grpc`, ...) is unsupported, and so is a port whose
/// `protocol` is not TCP.
fn app_protocol(port: &k8s::ServicePort) -> Result<AppProtocol, String> {
    if let Some(protocol) = port.protocol.as_deref()
        && protocol != "TCP"
    {
        // HTTP and TLS need a stream: a UDP or SCTP port cannot serve them.
        return Err(format!("protocol {protocol:?}"));
    }
    match port.app_protocol.as_deref() {
        None | Some("http" | "HTTP" | "kubernetes.io/http") => Ok(AppProtocol::Http1),
        Some("kubernetes.io/h2c" | "h2c") => Ok(AppProtocol::H2c),
        Some("kubernetes.io/ws" | "ws") => Ok(AppProtocol::WebSocket),
        Some(other) => Err(format!("appProtocol {other:?}")),
    }
}

fn reason_from(reason: &str) -> Reason {
    match reason {
        "InvalidKind" => Reason::InvalidKind,
        "RefNotPermitted" => Reason::RefNotPermitted,
        "UnsupportedProtocol" => Reason::UnsupportedProtocol,
        "InvalidCACertificateRef" => Reason::InvalidCACertificateRef,
        "NoValidCACertificate" => Reason::NoValidCACertificate,
        "Invalid" => Reason::Invalid,
        _ => Reason::BackendNotFound,
    }
}
