//! Routes as users write them: Gateway API HTTPRoute, GRPCRoute and TLSRoute, in Meridian's own
//! types.
//!
//! These are the *object* form: what the hub stores and pushes to every cluster, and what the
//! agent reads from a cluster or a YAML directory. Parsing and validation against the Gateway
//! API rules live in `meridian-gwapi`; this module only holds the data. The agent turns routes
//! into the *programmed* form (`model::gateway`) by attaching them to listeners and resolving
//! their backend references; only then does [`BackendRef::resolution`] carry a value.

use std::time::Duration;

use super::names::ObjectKey;

/// A Gateway API HTTPRoute (gateway.networking.k8s.io/v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// `metadata.namespace` / `metadata.name`.
    pub key: ObjectKey,
    /// `metadata.creationTimestamp` in milliseconds since the Unix epoch (0 when unknown).
    /// Route age is step 8 of the Gateway API precedence ladder: older routes win ties.
    pub created_unix_ms: i64,
    /// `spec.parentRefs`: the Gateways (and listeners) this route asks to attach to.
    pub parent_refs: Vec<ParentRef>,
    /// `spec.hostnames`: lower-case, optionally starting with `*.`; empty means any hostname the
    /// listener allows.
    pub hostnames: Vec<String>,
    /// `spec.rules`, in order (rule order is the last precedence tie-break).
    pub rules: Vec<HttpRouteRule>,
}

/// `ParentReference`: a Gateway (optionally one listener of it) a route attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    /// API group; `gateway.networking.k8s.io` for a Gateway.
    pub group: String,
    /// Kind; `Gateway`.
    pub kind: String,
    /// The Gateway's namespace (defaulted to the route's namespace while parsing).
    pub namespace: String,
    /// The Gateway's name.
    pub name: String,
    /// The listener name to attach to; `None` means every listener that accepts the route.
    pub section_name: Option<String>,
    /// The listener port to attach to (Extended: HTTPRouteParentRefPort).
    pub port: Option<u16>,
}

/// One `HTTPRouteRule`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRouteRule {
    /// Optional rule name (unique within the route).
    pub name: Option<String>,
    /// Matches are ORed; each match ANDs its conditions. Parsing fills in the spec's default,
    /// a single `PathPrefix /` match, so this is never empty for a valid rule.
    pub matches: Vec<HttpRouteMatch>,
    /// Filters in the order written.
    pub filters: Vec<HttpFilter>,
    /// Weighted backends. Empty means every matching request gets a 500 unless a filter
    /// (a redirect) answers it.
    pub backend_refs: Vec<HttpBackendRef>,
    /// `timeouts.request` and `timeouts.backendRequest`.
    pub timeouts: Timeouts,
    /// `retry` (experimental channel in Gateway API).
    pub retry: Option<Retry>,
    /// `sessionPersistence` (experimental channel in Gateway API).
    pub session_persistence: Option<SessionPersistence>,
}

/// One `HTTPRouteMatch`: all set conditions must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRouteMatch {
    /// The path condition (default `PathPrefix /`).
    pub path: PathMatch,
    /// Header conditions; names compare case-insensitively.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions; names compare case-sensitively.
    pub query_params: Vec<QueryParamMatch>,
    /// An upper-case HTTP method (`GET`, `POST`, ...), if the match requires one.
    pub method: Option<String>,
}

/// How a request path is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// Byte-exact, case-sensitive.
    Exact(String),
    /// Element-wise prefix by `/` (a trailing `/` in the prefix is ignored): `/abc` matches
    /// `/abc`, `/abc/` and `/abc/def`, never `/abcd`.
    Prefix(String),
    /// A regular expression over the whole path (Rust `regex` syntax, anchored by the matcher).
    RegularExpression(String),
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, compared case-insensitively.
    pub name: String,
    /// Value condition.
    pub value: StringMatch,
}

/// A query parameter condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParamMatch {
    /// Parameter name, compared case-sensitively.
    pub name: String,
    /// Value condition.
    pub value: StringMatch,
}

/// A value condition shared by header and query parameter matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    /// Equal bytes.
    Exact(String),
    /// A regular expression over the whole value.
    RegularExpression(String),
}

/// An HTTPRoute filter (rule level or backend level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpFilter {
    /// Modify the request headers sent upstream.
    RequestHeaderModifier(HeaderModifier),
    /// Modify the response headers sent downstream.
    ResponseHeaderModifier(HeaderModifier),
    /// Answer with a redirect instead of forwarding.
    RequestRedirect(RequestRedirect),
    /// Rewrite host and/or path before forwarding.
    UrlRewrite(UrlRewrite),
    /// Send a copy of the request to another backend; its response is ignored.
    RequestMirror(RequestMirror),
    /// Answer CORS preflights and add CORS headers.
    Cors(Cors),
}

/// Set, add and remove headers. Names compare case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Overwrite (or create) these headers.
    pub set: Vec<(String, String)>,
    /// Append these values to the header (creating it if absent).
    pub add: Vec<(String, String)>,
    /// Delete these headers.
    pub remove: Vec<String>,
}

/// `RequestRedirect`. Unset fields keep the request's value; see the Gateway API spec for the
/// port rule (a set scheme implies its well-known port; default ports are omitted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRedirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Replacement host name.
    pub hostname: Option<String>,
    /// Path replacement.
    pub path: Option<PathModifier>,
    /// Replacement port.
    pub port: Option<u16>,
    /// 301, 302 (the default), 303, 307 or 308.
    pub status_code: u16,
}

/// `HTTPURLRewriteFilter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlRewrite {
    /// Replacement `Host` header.
    pub hostname: Option<String>,
    /// Path replacement.
    pub path: Option<PathModifier>,
}

/// `HTTPPathModifier`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// Replace the whole path.
    ReplaceFullPath(String),
    /// Replace the part of the path matched by the rule's single `PathPrefix` match,
    /// element-wise.
    ReplacePrefixMatch(String),
}

/// `HTTPRequestMirrorFilter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: BackendRef,
    /// The share of requests mirrored as numerator / denominator (`percent: 25` is 25/100);
    /// `None` mirrors every request.
    pub fraction: Option<(u32, u32)>,
}

/// `HTTPCORSFilter`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins: `scheme://host[:port]`, a host may start with `*`; or `*` alone.
    pub allow_origins: Vec<String>,
    /// Whether credentials are allowed (never answer `*` then).
    pub allow_credentials: bool,
    /// Allowed methods, or `*`.
    pub allow_methods: Vec<String>,
    /// Allowed request headers, or `*`.
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts.
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` in seconds (the spec's default is 5).
    pub max_age_seconds: u32,
}

/// A backend reference with its weight and backend-level filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpBackendRef {
    /// The referenced object.
    pub backend_ref: BackendRef,
    /// Relative weight, 0..=1,000,000 (default 1); 0 is never chosen.
    pub weight: u32,
    /// Filters applied only when this backend is chosen.
    pub filters: Vec<HttpFilter>,
}

/// A reference to a backend object, usually a Kubernetes Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendRef {
    /// API group; empty for the core group (Service).
    pub group: String,
    /// Kind; `Service` by default.
    pub kind: String,
    /// Namespace (defaulted to the route's namespace while parsing).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Service port; required for Services.
    pub port: Option<u16>,
    /// Set by the agent when it programs a gateway; always [`Resolution::Unresolved`] in the
    /// object form the hub stores.
    pub resolution: Resolution,
}

/// What a backend reference resolved to in one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// Not resolved yet (object form). The gateway treats it like an invalid reference.
    #[default]
    Unresolved,
    /// A Service port whose endpoints are listed in the gateway config's `backends`.
    Service(ServiceKey),
    /// The reference cannot be used; requests that pick it get a 500 (gRPC UNAVAILABLE).
    Invalid {
        /// Gateway API reason: `BackendNotFound`, `RefNotPermitted`, `InvalidKind` or
        /// `UnsupportedProtocol`.
        reason: String,
        /// Human-readable detail for status and logs.
        message: String,
    },
}

/// A Service port: the key of a backend in the programmed config.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: u16,
}

/// `HTTPRouteTimeouts`. `None` means the gateway's default; `Some(Duration::ZERO)` disables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole transaction, request to response; expiry answers 504.
    pub request: Option<Duration>,
    /// One upstream attempt; expiry answers 504 (or counts as a retriable failure).
    pub backend_request: Option<Duration>,
}

/// `HTTPRouteRetry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Status codes that trigger a retry (500, 502, 503, 504 at least).
    pub codes: Vec<u16>,
    /// Number of retries after the first attempt.
    pub attempts: u32,
    /// Minimum wait between attempts.
    pub backoff: Option<Duration>,
}

/// `SessionPersistence` (GEP-1619): requests carrying a session token the gateway issued go
/// to the same backend endpoint while it stays ready and the session has not expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPersistence {
    /// `sessionName`: the cookie or header name; `None` lets the gateway derive one per rule.
    pub name: Option<String>,
    /// Where the token travels.
    pub kind: SessionKind,
    /// `absoluteTimeout`: the session ends this long after it began.
    pub absolute_timeout: Option<Duration>,
    /// `idleTimeout`: the session ends after this long without a request.
    pub idle_timeout: Option<Duration>,
    /// `cookieConfig.lifetimeType: Permanent`: the cookie carries `Max-Age` (the absolute
    /// timeout, which validation then requires) instead of ending with the browser session.
    pub permanent_cookie: bool,
}

impl SessionPersistence {
    /// The longest `sessionName` Gateway API allows.
    pub const MAX_NAME_LEN: usize = 128;

    /// Whether `name` can be both a cookie name and a header name: 1 to 128 RFC 9110 token
    /// characters.
    pub fn valid_name(name: &str) -> bool {
        (1..=Self::MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }
}

/// Session persistence `type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// A cookie the gateway sets (the default).
    #[default]
    Cookie,
    /// A header the gateway sets on responses and the client sends back.
    Header,
}

/// A Gateway API GRPCRoute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcRoute {
    /// `metadata.namespace` / `metadata.name`.
    pub key: ObjectKey,
    /// Creation time in Unix milliseconds (precedence tie-break).
    pub created_unix_ms: i64,
    /// Gateways to attach to.
    pub parent_refs: Vec<ParentRef>,
    /// Hostnames, as for HTTPRoute.
    pub hostnames: Vec<String>,
    /// Rules in order.
    pub rules: Vec<GrpcRouteRule>,
}

/// One `GRPCRouteRule`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcRouteRule {
    /// Optional rule name.
    pub name: Option<String>,
    /// ORed matches; empty matches every gRPC request.
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters (header modifiers and mirrors are valid here).
    pub filters: Vec<HttpFilter>,
    /// Weighted backends.
    pub backend_refs: Vec<HttpBackendRef>,
    /// `sessionPersistence` (experimental channel in Gateway API).
    pub session_persistence: Option<SessionPersistence>,
}

/// One `GRPCRouteMatch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcRouteMatch {
    /// Service/method condition.
    pub method: Option<GrpcMethodMatch>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
}

/// `GRPCMethodMatch`: at least one of service and method is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcMethodMatch {
    /// True for `RegularExpression`, false for `Exact`.
    pub regex: bool,
    /// Fully qualified service name (`pkg.Service`).
    pub service: Option<String>,
    /// Method name.
    pub method: Option<String>,
}

/// A Gateway API TLSRoute (passthrough by SNI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRoute {
    /// `metadata.namespace` / `metadata.name`.
    pub key: ObjectKey,
    /// Creation time in Unix milliseconds.
    pub created_unix_ms: i64,
    /// Gateways to attach to.
    pub parent_refs: Vec<ParentRef>,
    /// SNI host names (at least one).
    pub hostnames: Vec<String>,
    /// Weighted backends of the route's single rule.
    pub backend_refs: Vec<HttpBackendRef>,
}
