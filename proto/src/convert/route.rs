//! Routes on the wire: HTTPRoute, GRPCRoute and TLSRoute with their matches, filters and
//! backend references.

use std::time::Duration;

use super::net::{optional_port, port};
use super::{
    Context, ConvertError, ConvertErrorKind, each, each_with, encode_all, message, optional,
    required,
};
use crate::model::ModelError;
use crate::model::route::{
    BackendRef, Cors, GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRouteRule, HeaderMatch,
    HeaderModifier, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch, HttpRouteRule,
    ParentRef, PathMatch, PathModifier, QueryParamMatch, RequestMirror, RequestRedirect,
    Resolution, Retry, ServiceKey, SessionKind, SessionPersistence, StringMatch, Timeouts,
    TlsRoute, UrlRewrite,
};
use crate::pb;
use crate::pb::backend_ref::Resolution as PbResolution;
use crate::pb::http_filter::Kind as PbFilter;
use crate::pb::path_match::Kind as PbPathKind;
use crate::pb::path_modifier::Kind as PbPathModifier;

/// The largest backend weight Gateway API allows.
const MAX_WEIGHT: u32 = 1_000_000;

// === impl HttpRoute ===

impl From<&HttpRoute> for pb::HttpRoute {
    fn from(route: &HttpRoute) -> Self {
        Self {
            key: Some((&route.key).into()),
            created_unix_ms: route.created_unix_ms,
            parent_refs: encode_all(&route.parent_refs),
            hostnames: route.hostnames.clone(),
            rules: encode_all(&route.rules),
        }
    }
}

impl TryFrom<pb::HttpRoute> for HttpRoute {
    type Error = ConvertError;

    fn try_from(route: pb::HttpRoute) -> Result<Self, ConvertError> {
        Ok(Self {
            key: message(route.key, "key")?,
            created_unix_ms: route.created_unix_ms,
            parent_refs: each(route.parent_refs, "parent_refs")?,
            hostnames: route.hostnames,
            rules: each(route.rules, "rules")?,
        })
    }
}

// === impl ParentRef ===

impl From<&ParentRef> for pb::ParentRef {
    fn from(parent: &ParentRef) -> Self {
        Self {
            group: parent.group.clone(),
            kind: parent.kind.clone(),
            namespace: parent.namespace.clone(),
            name: parent.name.clone(),
            section_name: parent.section_name.clone(),
            port: parent.port.map(u32::from),
        }
    }
}

impl TryFrom<pb::ParentRef> for ParentRef {
    type Error = ConvertError;

    fn try_from(parent: pb::ParentRef) -> Result<Self, ConvertError> {
        Ok(Self {
            group: parent.group,
            kind: parent.kind,
            namespace: parent.namespace,
            name: parent.name,
            section_name: parent.section_name,
            port: optional_port(parent.port).field("port")?,
        })
    }
}

// === impl HttpRouteRule ===

impl From<&HttpRouteRule> for pb::HttpRouteRule {
    fn from(rule: &HttpRouteRule) -> Self {
        Self {
            name: rule.name.clone(),
            matches: encode_all(&rule.matches),
            filters: encode_all(&rule.filters),
            backend_refs: encode_all(&rule.backend_refs),
            timeouts: Some((&rule.timeouts).into()),
            retry: rule.retry.as_ref().map(Into::into),
            session_persistence: rule.session_persistence.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::HttpRouteRule> for HttpRouteRule {
    type Error = ConvertError;

    fn try_from(rule: pb::HttpRouteRule) -> Result<Self, ConvertError> {
        Ok(Self {
            name: rule.name,
            matches: each(rule.matches, "matches")?,
            filters: each(rule.filters, "filters")?,
            backend_refs: each(rule.backend_refs, "backend_refs")?,
            // An absent message has both timeouts unset, which is the model's default.
            timeouts: optional(rule.timeouts, "timeouts")?.unwrap_or_default(),
            retry: optional(rule.retry, "retry")?,
            session_persistence: optional(rule.session_persistence, "session_persistence")?,
        })
    }
}

// === impl HttpRouteMatch ===

impl From<&HttpRouteMatch> for pb::HttpRouteMatch {
    fn from(m: &HttpRouteMatch) -> Self {
        Self {
            path: Some((&m.path).into()),
            headers: encode_all(&m.headers),
            query_params: encode_all(&m.query_params),
            method: m.method.clone(),
        }
    }
}

impl TryFrom<pb::HttpRouteMatch> for HttpRouteMatch {
    type Error = ConvertError;

    fn try_from(m: pb::HttpRouteMatch) -> Result<Self, ConvertError> {
        Ok(Self {
            path: message(m.path, "path")?,
            headers: each(m.headers, "headers")?,
            query_params: each(m.query_params, "query_params")?,
            method: m.method,
        })
    }
}

// === impl PathMatch ===

impl From<&PathMatch> for pb::PathMatch {
    fn from(path: &PathMatch) -> Self {
        let (kind, value) = match path {
            PathMatch::Exact(v) => (PbPathKind::Exact, v),
            PathMatch::Prefix(v) => (PbPathKind::Prefix, v),
            PathMatch::RegularExpression(v) => (PbPathKind::RegularExpression, v),
        };
        Self {
            kind: kind.into(),
            value: value.clone(),
        }
    }
}

impl TryFrom<pb::PathMatch> for PathMatch {
    type Error = ConvertError;

    fn try_from(path: pb::PathMatch) -> Result<Self, ConvertError> {
        let kind: PbPathKind = super::enumeration(path.kind, "kind")?;
        let value = path.value;
        Ok(match kind {
            PbPathKind::Exact => PathMatch::Exact(absolute_path(value).field("value")?),
            PbPathKind::Prefix => PathMatch::Prefix(absolute_path(value).field("value")?),
            PbPathKind::RegularExpression => {
                PathMatch::RegularExpression(regex(value).field("value")?)
            }
        })
    }
}

// === impl HeaderMatch, QueryParamMatch, StringMatch ===

impl From<&HeaderMatch> for pb::HeaderMatch {
    fn from(m: &HeaderMatch) -> Self {
        Self {
            name: m.name.clone(),
            value: Some((&m.value).into()),
        }
    }
}

impl TryFrom<pb::HeaderMatch> for HeaderMatch {
    type Error = ConvertError;

    fn try_from(m: pb::HeaderMatch) -> Result<Self, ConvertError> {
        Ok(Self {
            name: m.name,
            value: message(m.value, "value")?,
        })
    }
}

/// Query parameter matches share the `HeaderMatch` message (same shape: a name and a value
/// condition).
impl From<&QueryParamMatch> for pb::HeaderMatch {
    fn from(m: &QueryParamMatch) -> Self {
        Self {
            name: m.name.clone(),
            value: Some((&m.value).into()),
        }
    }
}

impl TryFrom<pb::HeaderMatch> for QueryParamMatch {
    type Error = ConvertError;

    fn try_from(m: pb::HeaderMatch) -> Result<Self, ConvertError> {
        Ok(Self {
            name: m.name,
            value: message(m.value, "value")?,
        })
    }
}

impl From<&StringMatch> for pb::StringMatch {
    fn from(m: &StringMatch) -> Self {
        match m {
            StringMatch::Exact(value) => Self {
                regex: false,
                value: value.clone(),
            },
            StringMatch::RegularExpression(value) => Self {
                regex: true,
                value: value.clone(),
            },
        }
    }
}

impl TryFrom<pb::StringMatch> for StringMatch {
    type Error = ConvertError;

    fn try_from(m: pb::StringMatch) -> Result<Self, ConvertError> {
        Ok(if m.regex {
            StringMatch::RegularExpression(regex(m.value).field("value")?)
        } else {
            StringMatch::Exact(m.value)
        })
    }
}

// === impl HttpFilter ===

impl From<&HttpFilter> for pb::HttpFilter {
    fn from(filter: &HttpFilter) -> Self {
        let kind = match filter {
            HttpFilter::RequestHeaderModifier(m) => PbFilter::RequestHeaderModifier(m.into()),
            HttpFilter::ResponseHeaderModifier(m) => PbFilter::ResponseHeaderModifier(m.into()),
            HttpFilter::RequestRedirect(r) => PbFilter::RequestRedirect(r.into()),
            HttpFilter::UrlRewrite(r) => PbFilter::UrlRewrite(r.into()),
            HttpFilter::RequestMirror(m) => PbFilter::RequestMirror(m.into()),
            HttpFilter::Cors(c) => PbFilter::Cors(c.into()),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<pb::HttpFilter> for HttpFilter {
    type Error = ConvertError;

    /// Errors name the `oneof` member, so a bad redirect port reads
    /// `filters[1].request_redirect.port: ...`.
    fn try_from(filter: pb::HttpFilter) -> Result<Self, ConvertError> {
        Ok(match required(filter.kind, "kind")? {
            PbFilter::RequestHeaderModifier(m) => {
                HttpFilter::RequestHeaderModifier(m.try_into().field("request_header_modifier")?)
            }
            PbFilter::ResponseHeaderModifier(m) => {
                HttpFilter::ResponseHeaderModifier(m.try_into().field("response_header_modifier")?)
            }
            PbFilter::RequestRedirect(r) => {
                HttpFilter::RequestRedirect(r.try_into().field("request_redirect")?)
            }
            PbFilter::UrlRewrite(r) => HttpFilter::UrlRewrite(r.try_into().field("url_rewrite")?),
            PbFilter::RequestMirror(m) => {
                HttpFilter::RequestMirror(m.try_into().field("request_mirror")?)
            }
            PbFilter::Cors(c) => HttpFilter::Cors(c.try_into().field("cors")?),
        })
    }
}

// === impl HeaderModifier ===

impl From<&HeaderModifier> for pb::HeaderModifier {
    fn from(m: &HeaderModifier) -> Self {
        let pairs = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(name, value)| pb::HeaderValue {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect()
        };
        Self {
            set: pairs(&m.set),
            add: pairs(&m.add),
            remove: m.remove.clone(),
        }
    }
}

impl TryFrom<pb::HeaderModifier> for HeaderModifier {
    type Error = ConvertError;

    fn try_from(m: pb::HeaderModifier) -> Result<Self, ConvertError> {
        let pairs = |pairs: Vec<pb::HeaderValue>| pairs.into_iter().map(|h| (h.name, h.value));
        Ok(Self {
            set: pairs(m.set).collect(),
            add: pairs(m.add).collect(),
            remove: m.remove,
        })
    }
}

// === impl PathModifier ===

impl From<&PathModifier> for pb::PathModifier {
    fn from(m: &PathModifier) -> Self {
        let kind = match m {
            PathModifier::ReplaceFullPath(p) => PbPathModifier::ReplaceFullPath(p.clone()),
            PathModifier::ReplacePrefixMatch(p) => PbPathModifier::ReplacePrefixMatch(p.clone()),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<pb::PathModifier> for PathModifier {
    type Error = ConvertError;

    fn try_from(m: pb::PathModifier) -> Result<Self, ConvertError> {
        Ok(match required(m.kind, "kind")? {
            // Not checked for a leading '/': Gateway API puts no pattern on these, and an
            // empty prefix replacement (strip the prefix) is meaningful.
            PbPathModifier::ReplaceFullPath(p) => PathModifier::ReplaceFullPath(p),
            PbPathModifier::ReplacePrefixMatch(p) => PathModifier::ReplacePrefixMatch(p),
        })
    }
}

// === impl RequestRedirect ===

impl From<&RequestRedirect> for pb::RequestRedirect {
    fn from(r: &RequestRedirect) -> Self {
        Self {
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            path: r.path.as_ref().map(Into::into),
            port: r.port.map(u32::from),
            status_code: r.status_code.into(),
        }
    }
}

impl TryFrom<pb::RequestRedirect> for RequestRedirect {
    type Error = ConvertError;

    fn try_from(r: pb::RequestRedirect) -> Result<Self, ConvertError> {
        let status_code = match r.status_code {
            301 | 302 | 303 | 307 | 308 => r.status_code as u16,
            other => {
                return Err(ConvertError::new(ConvertErrorKind::OutOfRange {
                    value: other.into(),
                    allowed: "301, 302, 303, 307 or 308",
                })
                .in_field("status_code"));
            }
        };
        Ok(Self {
            scheme: r.scheme,
            hostname: r.hostname,
            path: optional(r.path, "path")?,
            port: optional_port(r.port).field("port")?,
            status_code,
        })
    }
}

// === impl UrlRewrite ===

impl From<&UrlRewrite> for pb::UrlRewrite {
    fn from(r: &UrlRewrite) -> Self {
        Self {
            hostname: r.hostname.clone(),
            path: r.path.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::UrlRewrite> for UrlRewrite {
    type Error = ConvertError;

    fn try_from(r: pb::UrlRewrite) -> Result<Self, ConvertError> {
        Ok(Self {
            hostname: r.hostname,
            path: optional(r.path, "path")?,
        })
    }
}

// === impl RequestMirror ===

impl From<&RequestMirror> for pb::RequestMirror {
    fn from(m: &RequestMirror) -> Self {
        // No fraction travels as 0/0, which no valid fraction can be.
        let (numerator, denominator) = m.fraction.unwrap_or((0, 0));
        Self {
            backend_ref: Some((&m.backend_ref).into()),
            fraction_numerator: numerator,
            fraction_denominator: denominator,
        }
    }
}

impl TryFrom<pb::RequestMirror> for RequestMirror {
    type Error = ConvertError;

    fn try_from(m: pb::RequestMirror) -> Result<Self, ConvertError> {
        let fraction = match (m.fraction_numerator, m.fraction_denominator) {
            (0, 0) => None,
            (n, 0) => {
                return Err(invalid_fraction(n, 0, "the denominator must not be 0")
                    .in_field("fraction_denominator"));
            }
            (n, d) if n > d => {
                return Err(invalid_fraction(
                    n,
                    d,
                    "the numerator must not exceed the denominator",
                )
                .in_field("fraction_numerator"));
            }
            (n, d) => Some((n, d)),
        };
        Ok(Self {
            backend_ref: message(m.backend_ref, "backend_ref")?,
            fraction,
        })
    }
}

fn invalid_fraction(numerator: u32, denominator: u32, why: &str) -> ConvertError {
    ModelError::invalid("fraction", &format!("{numerator}/{denominator}"), why).into()
}

// === impl Cors ===

impl From<&Cors> for pb::Cors {
    fn from(c: &Cors) -> Self {
        Self {
            allow_origins: c.allow_origins.clone(),
            allow_credentials: c.allow_credentials,
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_seconds: c.max_age_seconds,
        }
    }
}

impl TryFrom<pb::Cors> for Cors {
    type Error = ConvertError;

    fn try_from(c: pb::Cors) -> Result<Self, ConvertError> {
        Ok(Self {
            allow_origins: c.allow_origins,
            allow_credentials: c.allow_credentials,
            allow_methods: c.allow_methods,
            allow_headers: c.allow_headers,
            expose_headers: c.expose_headers,
            max_age_seconds: c.max_age_seconds,
        })
    }
}

// === impl HttpBackendRef ===

impl From<&HttpBackendRef> for pb::HttpBackendRef {
    fn from(b: &HttpBackendRef) -> Self {
        Self {
            backend_ref: Some((&b.backend_ref).into()),
            weight: b.weight,
            filters: encode_all(&b.filters),
        }
    }
}

impl TryFrom<pb::HttpBackendRef> for HttpBackendRef {
    type Error = ConvertError;

    fn try_from(b: pb::HttpBackendRef) -> Result<Self, ConvertError> {
        if b.weight > MAX_WEIGHT {
            return Err(ConvertError::new(ConvertErrorKind::OutOfRange {
                value: b.weight.into(),
                allowed: "0..=1000000",
            })
            .in_field("weight"));
        }
        Ok(Self {
            backend_ref: message(b.backend_ref, "backend_ref")?,
            weight: b.weight,
            filters: each(b.filters, "filters")?,
        })
    }
}

// === impl BackendRef ===

impl From<&BackendRef> for pb::BackendRef {
    fn from(b: &BackendRef) -> Self {
        Self {
            group: b.group.clone(),
            kind: b.kind.clone(),
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            port: b.port.map(u32::from),
            resolution: match &b.resolution {
                Resolution::Unresolved => None,
                Resolution::Service(key) => Some(PbResolution::Service(key.into())),
                Resolution::Invalid { reason, message } => {
                    Some(PbResolution::Invalid(pb::InvalidBackend {
                        reason: reason.clone(),
                        message: message.clone(),
                    }))
                }
            },
        }
    }
}

impl TryFrom<pb::BackendRef> for BackendRef {
    type Error = ConvertError;

    fn try_from(b: pb::BackendRef) -> Result<Self, ConvertError> {
        Ok(Self {
            group: b.group,
            kind: b.kind,
            namespace: b.namespace,
            name: b.name,
            port: optional_port(b.port).field("port")?,
            resolution: match b.resolution {
                None => Resolution::Unresolved,
                Some(PbResolution::Service(key)) => {
                    Resolution::Service(key.try_into().field("service")?)
                }
                Some(PbResolution::Invalid(invalid)) => Resolution::Invalid {
                    reason: invalid.reason,
                    message: invalid.message,
                },
            },
        })
    }
}

// === impl ServiceKey ===

impl From<&ServiceKey> for pb::ServiceKey {
    fn from(key: &ServiceKey) -> Self {
        Self {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            port: key.port.into(),
        }
    }
}

impl TryFrom<pb::ServiceKey> for ServiceKey {
    type Error = ConvertError;

    fn try_from(key: pb::ServiceKey) -> Result<Self, ConvertError> {
        Ok(Self {
            namespace: key.namespace,
            name: key.name,
            port: port(key.port).field("port")?,
        })
    }
}

// === impl Timeouts ===

impl From<&Timeouts> for pb::Timeouts {
    fn from(t: &Timeouts) -> Self {
        Self {
            request_ms: t.request.map(millis),
            backend_request_ms: t.backend_request.map(millis),
        }
    }
}

impl TryFrom<pb::Timeouts> for Timeouts {
    type Error = ConvertError;

    fn try_from(t: pb::Timeouts) -> Result<Self, ConvertError> {
        Ok(Self {
            request: t.request_ms.map(Duration::from_millis),
            backend_request: t.backend_request_ms.map(Duration::from_millis),
        })
    }
}

// === impl Retry ===

impl From<&Retry> for pb::Retry {
    fn from(r: &Retry) -> Self {
        Self {
            codes: r.codes.iter().copied().map(u32::from).collect(),
            attempts: r.attempts,
            backoff_ms: r.backoff.map(millis),
        }
    }
}

impl TryFrom<pb::Retry> for Retry {
    type Error = ConvertError;

    fn try_from(r: pb::Retry) -> Result<Self, ConvertError> {
        Ok(Self {
            // Gateway API's HTTPRouteRetryStatusCode allows 400..=599.
            codes: each_with(r.codes, "codes", |code| match code {
                400..=599 => Ok(code as u16),
                _ => Err(ConvertError::new(ConvertErrorKind::OutOfRange {
                    value: code.into(),
                    allowed: "400..=599",
                })),
            })?,
            attempts: r.attempts,
            backoff: r.backoff_ms.map(Duration::from_millis),
        })
    }
}

// === impl SessionPersistence ===

impl From<&SessionPersistence> for pb::SessionPersistence {
    fn from(s: &SessionPersistence) -> Self {
        let kind = match s.kind {
            SessionKind::Cookie => pb::SessionKind::Cookie,
            SessionKind::Header => pb::SessionKind::Header,
        };
        Self {
            name: s.name.clone(),
            kind: kind.into(),
            absolute_timeout_ms: s.absolute_timeout.map(millis),
            idle_timeout_ms: s.idle_timeout.map(millis),
            permanent_cookie: s.permanent_cookie,
        }
    }
}

impl TryFrom<pb::SessionPersistence> for SessionPersistence {
    type Error = ConvertError;

    fn try_from(s: pb::SessionPersistence) -> Result<Self, ConvertError> {
        let kind = match super::enumeration::<pb::SessionKind>(s.kind, "kind")? {
            pb::SessionKind::Cookie => SessionKind::Cookie,
            pb::SessionKind::Header => SessionKind::Header,
        };
        if let Some(name) = &s.name
            && !SessionPersistence::valid_name(name)
        {
            return Err(ConvertError::new(ConvertErrorKind::Constraint(
                "a session name is 1 to 128 token characters",
            ))
            .in_field("name"));
        }
        if s.permanent_cookie && s.absolute_timeout_ms.is_none() {
            return Err(ConvertError::new(ConvertErrorKind::Constraint(
                "a permanent session cookie needs an absolute timeout",
            )));
        }
        Ok(Self {
            name: s.name,
            kind,
            absolute_timeout: s.absolute_timeout_ms.map(Duration::from_millis),
            idle_timeout: s.idle_timeout_ms.map(Duration::from_millis),
            permanent_cookie: s.permanent_cookie,
        })
    }
}

// === impl GrpcRoute ===

impl From<&GrpcRoute> for pb::GrpcRoute {
    fn from(route: &GrpcRoute) -> Self {
        Self {
            key: Some((&route.key).into()),
            created_unix_ms: route.created_unix_ms,
            parent_refs: encode_all(&route.parent_refs),
            hostnames: route.hostnames.clone(),
            rules: encode_all(&route.rules),
        }
    }
}

impl TryFrom<pb::GrpcRoute> for GrpcRoute {
    type Error = ConvertError;

    fn try_from(route: pb::GrpcRoute) -> Result<Self, ConvertError> {
        Ok(Self {
            key: message(route.key, "key")?,
            created_unix_ms: route.created_unix_ms,
            parent_refs: each(route.parent_refs, "parent_refs")?,
            hostnames: route.hostnames,
            rules: each(route.rules, "rules")?,
        })
    }
}

impl From<&GrpcRouteRule> for pb::GrpcRouteRule {
    fn from(rule: &GrpcRouteRule) -> Self {
        Self {
            name: rule.name.clone(),
            matches: encode_all(&rule.matches),
            filters: encode_all(&rule.filters),
            backend_refs: encode_all(&rule.backend_refs),
            session_persistence: rule.session_persistence.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::GrpcRouteRule> for GrpcRouteRule {
    type Error = ConvertError;

    fn try_from(rule: pb::GrpcRouteRule) -> Result<Self, ConvertError> {
        Ok(Self {
            name: rule.name,
            matches: each(rule.matches, "matches")?,
            filters: each(rule.filters, "filters")?,
            backend_refs: each(rule.backend_refs, "backend_refs")?,
            session_persistence: optional(rule.session_persistence, "session_persistence")?,
        })
    }
}

impl From<&GrpcRouteMatch> for pb::GrpcRouteMatch {
    fn from(m: &GrpcRouteMatch) -> Self {
        Self {
            method: m.method.as_ref().map(Into::into),
            headers: encode_all(&m.headers),
        }
    }
}

impl TryFrom<pb::GrpcRouteMatch> for GrpcRouteMatch {
    type Error = ConvertError;

    fn try_from(m: pb::GrpcRouteMatch) -> Result<Self, ConvertError> {
        Ok(Self {
            method: optional(m.method, "method")?,
            headers: each(m.headers, "headers")?,
        })
    }
}

impl From<&GrpcMethodMatch> for pb::GrpcMethodMatch {
    fn from(m: &GrpcMethodMatch) -> Self {
        Self {
            regex: m.regex,
            service: m.service.clone(),
            method: m.method.clone(),
        }
    }
}

impl TryFrom<pb::GrpcMethodMatch> for GrpcMethodMatch {
    type Error = ConvertError;

    fn try_from(m: pb::GrpcMethodMatch) -> Result<Self, ConvertError> {
        if m.service.is_none() && m.method.is_none() {
            return Err(ConvertError::new(ConvertErrorKind::Constraint(
                "at least one of service and method must be set",
            )));
        }
        let check = |value: Option<String>, field| match value {
            Some(v) if m.regex => regex(v).field(field).map(Some),
            other => Ok(other),
        };
        Ok(Self {
            regex: m.regex,
            service: check(m.service, "service")?,
            method: check(m.method, "method")?,
        })
    }
}

// === impl TlsRoute ===

impl From<&TlsRoute> for pb::TlsRoute {
    fn from(route: &TlsRoute) -> Self {
        Self {
            key: Some((&route.key).into()),
            created_unix_ms: route.created_unix_ms,
            parent_refs: encode_all(&route.parent_refs),
            hostnames: route.hostnames.clone(),
            backend_refs: encode_all(&route.backend_refs),
        }
    }
}

impl TryFrom<pb::TlsRoute> for TlsRoute {
    type Error = ConvertError;

    fn try_from(route: pb::TlsRoute) -> Result<Self, ConvertError> {
        Ok(Self {
            key: message(route.key, "key")?,
            created_unix_ms: route.created_unix_ms,
            parent_refs: each(route.parent_refs, "parent_refs")?,
            hostnames: route.hostnames,
            backend_refs: each(route.backend_refs, "backend_refs")?,
        })
    }
}

// === scalar fields ===

/// Whole milliseconds of a duration; durations beyond `u64::MAX` ms (half a billion years)
/// saturate.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks an `Exact` or `PathPrefix` match value: Gateway API requires an absolute path.
fn absolute_path(path: String) -> Result<String, ConvertError> {
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(ModelError::invalid("path", &path, "must start with '/'").into())
    }
}

/// Checks that a regular expression compiles with the `regex` crate, which is what the
/// gateway matches with; a pattern that cannot compile is rejected here with its field path
/// rather than later in the data plane.
fn regex(pattern: String) -> Result<String, ConvertError> {
    match regex::Regex::new(&pattern) {
        Ok(_) => Ok(pattern),
        Err(e) => {
            // Syntax errors span several lines (the pattern, a caret, then the reason); keep
            // the reason so the error fits on one line of a NACK or a log.
            let why = match &e {
                regex::Error::Syntax(text) => text
                    .rsplit_once("error: ")
                    .map_or(text.as_str(), |(_, reason)| reason)
                    .trim()
                    .to_string(),
                other => other.to_string(),
            };
            Err(ModelError::invalid("regular expression", &pattern, why).into())
        }
    }
}
