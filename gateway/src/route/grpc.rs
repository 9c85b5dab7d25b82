//! GRPCRoute matching: `/<service>/<method>` paths and header conditions, with the GRPCRoute
//! precedence ladder (service characters, method characters, header count, age, name, rule).

use std::cmp::Reverse;

use http::HeaderMap;

use super::matcher::{HeaderMatcher, ValueMatcher};

/// One compiled GRPCRouteMatch.
#[derive(Debug)]
pub(crate) struct GrpcMatcher {
    /// Service condition (None = any service).
    pub(crate) service: Option<ValueMatcher>,
    /// Method condition (None = any method).
    pub(crate) method: Option<ValueMatcher>,
    /// Header (metadata) conditions.
    pub(crate) headers: Vec<HeaderMatcher>,
}

/// Sort key for GRPCRoute matches; smaller wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GrpcPrecedence {
    /// More service characters win.
    pub(crate) service_len: Reverse<usize>,
    /// More method characters win.
    pub(crate) method_len: Reverse<usize>,
    /// More header matches win.
    pub(crate) n_headers: Reverse<usize>,
    /// Older routes win.
    pub(crate) created_unix_ms: i64,
    /// Then `namespace/name`.
    pub(crate) route_key: std::sync::Arc<str>,
    /// Then rule order.
    pub(crate) rule_index: usize,
    /// Then match order.
    pub(crate) match_index: usize,
}

impl GrpcMatcher {
    /// Whether a request with this path and headers matches.
    pub(crate) fn matches(&self, path: &str, headers: &HeaderMap) -> bool {
        let Some((service, method)) = split_grpc_path(path) else {
            return false;
        };
        if let Some(condition) = &self.service
            && !condition.matches(service)
        {
            return false;
        }
        if let Some(condition) = &self.method
            && !condition.matches(method)
        {
            return false;
        }
        self.headers.iter().all(|h| {
            headers
                .get(&h.name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| h.value.matches(v))
        })
    }
}

/// Splits `/pkg.Service/Method` into service and method.
pub(crate) fn split_grpc_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// Whether a request is gRPC (content-type `application/grpc` or `application/grpc+...`).
pub(crate) fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            split_grpc_path("/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"),
            Some((
                "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho",
                "Echo"
            ))
        );
        for bad in ["/", "/svc", "/svc/", "//m", "/a/b/c", "svc/m"] {
            assert_eq!(split_grpc_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn service_and_method_conditions() {
        let exact = |s: &str| Some(ValueMatcher::Exact(s.into()));
        let matcher = GrpcMatcher {
            service: exact("pkg.Echo"),
            method: exact("EchoTwo"),
            headers: vec![],
        };
        let headers = HeaderMap::new();
        assert!(matcher.matches("/pkg.Echo/EchoTwo", &headers));
        assert!(!matcher.matches("/pkg.Echo/Echo", &headers));
        let service_only = GrpcMatcher {
            service: exact("pkg.Echo"),
            method: None,
            headers: vec![],
        };
        assert!(service_only.matches("/pkg.Echo/Anything", &headers));
        assert!(!service_only.matches("/pkg.Other/Anything", &headers));
    }
}
