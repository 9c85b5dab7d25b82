//! Forwarding a matched request: local answers (CORS preflight, redirects, 500/503 for
//! invalid or empty backends), filters, the weighted backend draw, mirrors, WebSocket
//! upgrades, and the upstream exchange under the rule's timeouts and retry stanza.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meridian_proto::model::gateway::AppProtocol;
use tracing::debug;

use super::answer;
use super::body::{
    AbortWatch, BodyState, Buffered, ClientBody, CollectError, ProxyBody, ReqBody, buffer_or_stream,
};
use super::server::ConnCtx;
use super::splice::splice;
use crate::backend::pool::{
    CountedAttempts, EndpointPool, FailureKind, SendFailure, UpstreamError,
};
use crate::backend::session;
use crate::backend::{BackendTarget, ServiceBackend};
use crate::filter::cors::CorsPolicy;
use crate::filter::redirect::{Redirect, RedirectInput};
use crate::filter::rewrite::{Rewrite, modify_path};
use crate::route::{RetryPolicy, Rule};

/// The winning match of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matched<'a> {
    /// The rule.
    pub(crate) rule: &'a Arc<Rule>,
    /// The PathPrefix value that matched (for ReplacePrefixMatch).
    pub(crate) matched_prefix: Option<&'a str>,
}

/// The result of forwarding.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// What goes back to the client.
    pub(crate) response: Response<ProxyBody>,
    /// The backend that was chosen, if any.
    pub(crate) backend: Option<Arc<str>>,
    /// Upstream attempts made.
    pub(crate) attempts: u32,
}

/// Header names removed before forwarding (RFC 9110 §7.6.1 hop-by-hop fields).
// `Trailer` is not among them: RFC 2616 listed it, RFC 9110 §6.6.2 makes it an end-to-end
// field, and an HTTP/1.1 client that sent `TE: trailers` gets the declared trailer fields only
// when the response still declares them.
const HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Set by the gateway alone (see [`crate::tls::client_cert`]); a client's is removed.
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// The h2c upgrade's settings field (RFC 7540 §3.2; h2c upgrades are obsolete, RFC 9113 §3.1).
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Runs the rule for one request.
pub(crate) async fn process(
    ctx: &ConnCtx,
    listener_port: u16,
    host: &str,
    matched: Matched<'_>,
    request: Request<Incoming>,
) -> Outcome {
    let started = Instant::now();
    let rule = &**matched.rule;
    let grpc = rule.grpc;
    let filters = &rule.filters;

    if let Some(cors) = &filters.cors
        && CorsPolicy::is_preflight(request.method(), request.headers())
    {
        let mut response = Response::new(ProxyBody::empty());
        *response.headers_mut() = cors.preflight_headers(request.headers());
        return local(response);
    }
    let origin = filters
        .cors
        .as_ref()
        .and_then(|_| request.headers().get(header::ORIGIN).cloned());

    if let Some(redirect) = &filters.redirect {
        return local(redirect_answer(
            redirect,
            ctx,
            listener_port,
            host,
            request.uri().path(),
            request.uri().query(),
            matched.matched_prefix,
        ));
    }

    let (mut parts, body) = request.into_parts();
    // The client body timeout is for HTTP/1.x clients, and for bodies the gateway buffers
    // (reading them eagerly): a streamed HTTP/2 body shares the connection's flow-control
    // window with the other streams, so it can wait on another stream's slow backend, which
    // is the gateway's backpressure, not the client stalling (the default response timeout,
    // counting from the body's last progress, still bounds it). Not for gRPC: a streaming
    // call's client may rightly go quiet.
    let body_timeout = ctx
        .shared
        .options
        .client_body_timeout
        .filter(|_| !grpc && (parts.version < Version::HTTP_2 || rule.needs_buffering));
    let body = ClientBody::new(body, body_timeout);
    // hyper's server never sends (nor polls) the body of these responses.
    let head_request = parts.method == http::Method::HEAD;
    // Hop-by-hop fields are the client's (RFC 9110 §7.6.1): they go before filters and the
    // gateway's own fields are added, so the client's `Connection` cannot name those.
    let mut scan = HeaderScan::of(&parts.headers);
    let upgrade_to = requested_upgrade(&parts, scan);
    strip_request_hop_by_hop(&mut parts.headers, &mut scan);
    let mut modified = false;
    if let Some(modifier) = &filters.request_headers {
        modifier.apply(&mut parts.headers);
        modified = true;
    }
    let mut target = UpstreamTarget {
        path: None,
        authority: None,
    };
    if let Some(rewrite) = &filters.rewrite {
        target.apply(rewrite, &parts.uri, matched.matched_prefix);
    }

    // A session pins the endpoint (and so the backendRef) while that endpoint stays ready.
    let session = rule.session.as_ref().map(|policy| {
        let now = session::unix_now();
        (policy, now, policy.read(&parts.headers, now))
    });
    let pinned = match &session {
        Some((_, _, Some(token))) => rule.backends.find_endpoint(token.endpoint),
        _ => None,
    };
    let Some(choice) = pinned
        .map(|pinned| pinned.choice)
        .or_else(|| rule.backends.pick())
    else {
        return local(answer::failure(
            grpc,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the route rule has no backends\n",
        ));
    };
    let service = match &choice.target {
        BackendTarget::Service(service) => service,
        BackendTarget::Invalid { name, reason } => {
            debug!(backend = %name, %reason, "request drew an invalid backendRef");
            let mut outcome = local(answer::failure(
                grpc,
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid backend reference\n",
            ));
            outcome.backend = Some(Arc::clone(name));
            return outcome;
        }
    };
    let backend_name = Some(Arc::clone(&service.name));
    if service.endpoints.is_empty() {
        return Outcome {
            response: answer::failure(
                grpc,
                StatusCode::SERVICE_UNAVAILABLE,
                "no ready endpoints for the backend\n",
            ),
            backend: backend_name,
            attempts: 0,
        };
    }
    if let Some(redirect) = &choice.filters.redirect {
        let path = target
            .path
            .clone()
            .unwrap_or_else(|| parts.uri.path().to_string());
        let mut outcome = local(redirect_answer(
            redirect,
            ctx,
            listener_port,
            host,
            &path,
            parts.uri.query(),
            matched.matched_prefix,
        ));
        outcome.backend = backend_name;
        return outcome;
    }
    if let Some(modifier) = &choice.filters.request_headers {
        modifier.apply(&mut parts.headers);
        modified = true;
    }
    if let Some(rewrite) = &choice.filters.rewrite {
        target.apply(rewrite, &parts.uri, matched.matched_prefix);
    }
    if modified {
        scan.forwarded_for = parts.headers.contains_key(&X_FORWARDED_FOR);
        scan.host = parts.headers.contains_key(header::HOST);
    }

    if let Some(upgrade_to) = upgrade_to {
        let pinned = pinned.map(|pinned| pinned.endpoint);
        // Boxed, as are the buffering below and the uncommon clients in `EndpointPool::send`:
        // every request's future is as large as its largest branch.
        let response = Box::pin(upgrade(
            ctx,
            service,
            pinned,
            (parts, body),
            scan,
            upgrade_to,
            &target,
        ))
        .await;
        return Outcome {
            response,
            backend: backend_name,
            attempts: 1,
        };
    }

    // Buffer only when retries or mirrors need to resend the body. One too large to keep goes
    // out once, streamed, without retries or mirrors (as Envoy does): whether its length is
    // known up front or only once it passes the limit.
    let limit = ctx.shared.options.max_buffered_body;
    let body = if rule.needs_buffering && within_limit(&body, limit) {
        match Box::pin(buffer_or_stream(body, limit)).await {
            Ok(Buffered::Whole(bytes)) => Payload::Buffered(bytes),
            Ok(Buffered::Streaming(body)) => {
                debug!(
                    limit,
                    "request body over the buffer limit: streamed without retries or mirrors"
                );
                Payload::Streaming(body)
            }
            Err(CollectError::Stalled(error)) => {
                debug!(%error, "the request body stalled");
                return local(answer::failure(
                    grpc,
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stalled\n",
                ));
            }
            Err(CollectError::Read(error)) => {
                debug!(%error, "reading the request body failed");
                return local(answer::failure(
                    grpc,
                    StatusCode::BAD_REQUEST,
                    "reading the request body failed\n",
                ));
            }
        }
    } else {
        Payload::Streaming(body)
    };

    let has_host = prepare_headers(
        &mut parts.headers,
        scan,
        &ctx.forwarded_for,
        ctx.scheme,
        ctx.client_cert.as_ref(),
    );
    // Only a rewritten host, or an HTTP/2 client's :authority (no Host header), needs copying;
    // otherwise the Host header carries it.
    let authority = target.authority.clone().or_else(|| {
        if has_host {
            None
        } else {
            parts.uri.authority().map(|a| a.as_str().to_string())
        }
    });
    if let Some(rewritten) = &target.authority
        && let Ok(value) = HeaderValue::try_from(rewritten.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    let path_and_query = match &target.path {
        Some(path) => {
            let rewritten = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            match PathAndQuery::try_from(rewritten) {
                Ok(pq) => pq,
                Err(_) => {
                    return local(answer::failure(
                        grpc,
                        StatusCode::BAD_REQUEST,
                        "the rewritten path is not a valid request target\n",
                    ));
                }
            }
        }
        // The common case: the client's own target, shared (no copy, no re-parse).
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let head = UpstreamHead {
        method: parts.method,
        headers: parts.headers,
        authority,
        path_and_query,
    };

    if let Payload::Buffered(bytes) = &body {
        for mirror in filters.mirrors.iter().chain(choice.filters.mirrors.iter()) {
            if mirror.sample(rand::random())
                && let BackendTarget::Service(mirror_service) = &mirror.target
                && let Some(endpoint) = mirror_service.next_endpoint()
                && let Ok(copy) = head.request(endpoint.protocol, ReqBody::full(bytes.clone()))
            {
                mirror.send_copy(Arc::clone(endpoint), copy, Arc::clone(&mirror_service.name));
            }
        }
    }

    let pinned = pinned.map(|pinned| pinned.endpoint);
    // Without a timeout of the route's own, a backend that never answers must not hold the
    // request (and its connection) forever.
    let (attempt_timeout, timeout_from_progress) = match rule.backend_timeout {
        Some(timeout) => (Some(timeout), false),
        None if !rule.route_sets_timeout && !grpc => {
            (ctx.shared.options.upstream_response_timeout, true)
        }
        None => (None, false),
    };
    // Built and pinned once for both arms: an async fn that awaits a future by value, or at
    // two points, keeps room for it twice in its own state.
    let exchange = std::pin::pin!(exchange(
        rule,
        attempt_timeout,
        timeout_from_progress,
        service,
        pinned,
        head,
        body,
    ));
    let (result, attempts, served_by) = match rule.request_timeout {
        Some(timeout) => {
            let deadline = (started + timeout).into();
            match tokio::time::timeout_at(deadline, exchange).await {
                Ok(done) => done,
                Err(_) => (Err(Failure::Timeout), 0, None),
            }
        }
        None => exchange.await,
    };
    let response = match result {
        Ok(mut response) => {
            // The request timeout covers the whole exchange: a body still streaming when it
            // runs out is cut short (the status line is already sent).
            if let Some(timeout) = rule.request_timeout {
                let deadline = started + timeout;
                response = response.map(|body| body.with_deadline(deadline.into()));
            }
            service.metrics.record_status(response.status().as_u16());
            // A body still streaming can fail after the head went out, and its access log line
            // waits for its end (two reference counts; nothing for a body already read whole,
            // or one that is never sent: HEAD, 204, 304).
            let status = response.status();
            if response.body().is_streaming()
                && !head_request
                && status != StatusCode::NO_CONTENT
                && status != StatusCode::NOT_MODIFIED
            {
                let watch = AbortWatch {
                    rule: Arc::clone(matched.rule),
                    backend: Arc::clone(service),
                    log: None,
                    body_bytes: 0,
                };
                response.body_mut().watch(watch);
            }
            strip_response_headers(response.headers_mut());
            if let Some(modifier) = &choice.filters.response_headers {
                modifier.apply(response.headers_mut());
            }
            if let Some(modifier) = &filters.response_headers {
                modifier.apply(response.headers_mut());
            }
            if let Some(cors) = &filters.cors {
                cors.apply_to_response(origin.as_ref(), response.headers_mut());
            }
            if let (Some((policy, now, previous)), Some(endpoint)) = (&session, served_by)
                && let Some((name, value)) =
                    policy.issue(*previous, endpoint.addr, *now, ctx.scheme == "https")
            {
                response.headers_mut().append(name, value);
            }
            response
        }
        Err(Failure::Timeout) => answer::failure(
            grpc,
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timed out\n",
        ),
        Err(Failure::ClientStalled) => answer::failure(
            grpc,
            StatusCode::REQUEST_TIMEOUT,
            "the request body stalled\n",
        ),
        Err(Failure::Upstream(error) | Failure::Unsent(error, _)) => {
            debug!(%error, "upstream failed");
            failure_answer(grpc, &error)
        }
    };
    Outcome {
        response,
        backend: backend_name,
        attempts,
    }
}

/// The answer for a failed exchange: the client's own body failing is its fault (400), a
/// backend that answered nonsense is a bad gateway (502), no usable connection 503.
fn failure_answer(grpc: bool, error: &UpstreamError) -> Response<ProxyBody> {
    match error.kind() {
        FailureKind::RequestBody => answer::failure(
            grpc,
            StatusCode::BAD_REQUEST,
            "reading the request body failed\n",
        ),
        FailureKind::RequestBodyTimeout => answer::failure(
            grpc,
            StatusCode::REQUEST_TIMEOUT,
            "the request body stalled\n",
        ),
        FailureKind::InvalidResponse => answer::failure(
            grpc,
            StatusCode::BAD_GATEWAY,
            "invalid response from the upstream\n",
        ),
        FailureKind::Connection => answer::failure(
            grpc,
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connection failed\n",
        ),
    }
}

fn local(response: Response<ProxyBody>) -> Outcome {
    Outcome {
        response,
        backend: None,
        attempts: 0,
    }
}

fn redirect_answer(
    redirect: &Redirect,
    ctx: &ConnCtx,
    listener_port: u16,
    host: &str,
    path: &str,
    query: Option<&str>,
    matched_prefix: Option<&str>,
) -> Response<ProxyBody> {
    let location = redirect.location(&RedirectInput {
        scheme: ctx.scheme,
        host,
        listener_port,
        path,
        query,
        matched_prefix,
    });
    answer::redirect(redirect.status, &location)
}

/// Where the request goes after URL rewrites.
#[derive(Debug)]
struct UpstreamTarget {
    path: Option<String>,
    authority: Option<String>,
}

impl UpstreamTarget {
    fn apply(&mut self, rewrite: &Rewrite, uri: &Uri, matched_prefix: Option<&str>) {
        if let Some(hostname) = &rewrite.hostname {
            self.authority = hostname.to_str().ok().map(str::to_string);
        }
        if let Some(modifier) = &rewrite.path {
            let current = self.path.clone().unwrap_or_else(|| uri.path().to_string());
            self.path = Some(modify_path(modifier, &current, matched_prefix));
        }
    }
}

enum Payload {
    Streaming(ClientBody),
    Buffered(Bytes),
}

/// A request head ready for any upstream protocol.
struct UpstreamHead {
    method: http::Method,
    headers: HeaderMap,
    /// A host to send when the headers carry none (rewrite, or an HTTP/2 client).
    authority: Option<String>,
    path_and_query: PathAndQuery,
}

impl UpstreamHead {
    /// Builds a request, cloning the head (for retries and mirrors).
    fn request(
        &self,
        protocol: AppProtocol,
        body: ReqBody,
    ) -> Result<Request<ReqBody>, http::Error> {
        build(
            protocol,
            self.method.clone(),
            self.headers.clone(),
            self.authority.as_deref(),
            self.path_and_query.clone(),
            body,
        )
    }

    /// Builds a request, consuming the head.
    fn into_request(
        self,
        protocol: AppProtocol,
        body: ReqBody,
    ) -> Result<Request<ReqBody>, http::Error> {
        build(
            protocol,
            self.method,
            self.headers,
            self.authority.as_deref(),
            self.path_and_query,
            body,
        )
    }
}

fn build(
    protocol: AppProtocol,
    method: http::Method,
    mut headers: HeaderMap,
    authority: Option<&str>,
    path_and_query: PathAndQuery,
    body: ReqBody,
) -> Result<Request<ReqBody>, http::Error> {
    let (uri, version) = match protocol {
        AppProtocol::H2c => {
            // HTTP/2 carries the host in :authority; a Host header would duplicate it.
            let host = headers.remove(header::HOST);
            let authority = authority
                .and_then(|a| Authority::try_from(a).ok())
                .or_else(|| host.and_then(|h| Authority::try_from(h.as_bytes()).ok()))
                .unwrap_or_else(|| Authority::from_static("localhost"));
            let uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path_and_query)
                .build()?;
            (uri, Version::HTTP_2)
        }
        AppProtocol::Http1 | AppProtocol::WebSocket => {
            if !headers.contains_key(header::HOST) {
                // HTTP/1.1 requires Host; an HTTP/1.0 client may have sent none, and then the
                // target has no authority: an empty Host, as RFC 9112 §3.2 says.
                let value = authority
                    .and_then(|a| HeaderValue::try_from(a).ok())
                    .unwrap_or_else(|| HeaderValue::from_static(""));
                headers.insert(header::HOST, value);
            }
            (Uri::from(path_and_query), Version::HTTP_11)
        }
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(request)
}

enum Failure {
    Timeout,
    /// The default response timeout ran out while the gateway waited on the client's request
    /// body: the client is the one late (408).
    ClientStalled,
    Upstream(UpstreamError),
    /// No connection could be made, so no byte of the request left: it can go to another
    /// endpoint, whatever its method.
    Unsent(UpstreamError, Box<Request<ReqBody>>),
}

impl Failure {
    fn from_send(failure: SendFailure) -> Self {
        match failure.unsent {
            Some(request) => Self::Unsent(failure.error, request),
            None => Self::Upstream(failure.error),
        }
    }
}

/// How many other endpoints a request no connection could be made for tries, beyond the
/// route's retries: nothing was sent, so this is safe for any request, and it keeps a dead
/// endpoint from failing requests until health checks or passive ejection take it out.
const CONNECT_FAILOVERS: u32 = 2;

/// The upstream exchange with per-attempt timeouts and retries; returns the result, the
/// number of attempts and the endpoint of the last one. The first attempt goes to `pinned`
/// (a session's endpoint) when set; retries draw again.
async fn exchange<'a>(
    rule: &Rule,
    attempt_timeout: Option<Duration>,
    timeout_from_progress: bool,
    service: &'a ServiceBackend,
    mut pinned: Option<&'a Arc<EndpointPool>>,
    head: UpstreamHead,
    body: Payload,
) -> (
    Result<Response<ProxyBody>, Failure>,
    u32,
    Option<&'a Arc<EndpointPool>>,
) {
    let retry: Option<&RetryPolicy> = match &body {
        Payload::Buffered(_) => rule.retry.as_ref(),
        // A body too large to buffer cannot be resent.
        Payload::Streaming(_) => None,
    };
    let max_attempts = 1 + retry.map_or(0, |r| r.attempts);
    // Only a streamed body can fail or stall mid-exchange (buffered ones were read in full
    // already), and a bodyless request, the common case, pays for no state.
    let body_state = matches!(&body, Payload::Streaming(b) if !hyper::body::Body::is_end_stream(b))
        .then(|| Arc::new(BodyState::new()));
    let mut body = Some(body);
    let mut head = Some(head);
    let mut attempt = 0;
    // A request no connection could be made for, to send to another endpoint, and the
    // protocol it was built for.
    let mut unsent: Option<(Request<ReqBody>, AppProtocol)> = None;
    let mut failovers = 0;
    let failover_budget = CONNECT_FAILOVERS
        .min(u32::try_from(service.endpoint_count().saturating_sub(1)).unwrap_or(u32::MAX));
    loop {
        attempt += 1;
        let Some(endpoint) = pinned.take().or_else(|| service.next_endpoint()) else {
            return (
                Err(Failure::Upstream(UpstreamError::ConnectTimeout {
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                })),
                attempt - 1,
                None,
            );
        };
        let last = attempt - failovers >= max_attempts;
        let request = match (unsent.take(), body.as_ref(), head.as_ref()) {
            (Some((request, protocol)), _, _) if protocol == endpoint.protocol => Ok(request),
            (Some(_), _, _) => {
                // Endpoints of one Service share its protocol; should they not, the request
                // built for another cannot go here.
                return (
                    Err(Failure::Upstream(UpstreamError::ConnectTimeout {
                        addr: endpoint.addr,
                    })),
                    attempt - 1,
                    Some(endpoint),
                );
            }
            (None, Some(Payload::Buffered(bytes)), Some(h)) if !last => {
                h.request(endpoint.protocol, ReqBody::full(bytes.clone()))
            }
            _ => match (body.take(), head.take()) {
                (Some(Payload::Buffered(bytes)), Some(h)) => {
                    h.into_request(endpoint.protocol, ReqBody::full(bytes))
                }
                (Some(Payload::Streaming(incoming)), Some(h)) => h.into_request(
                    endpoint.protocol,
                    ReqBody::Incoming(incoming, body_state.clone()),
                ),
                _ => return (Err(Failure::Timeout), attempt - 1, None),
            },
        };
        let request = match request {
            Ok(mut request) => {
                if retry.is_some() {
                    request.extensions_mut().insert(CountedAttempts);
                }
                request
            }
            Err(_) => {
                return (
                    Ok(answer::error(
                        StatusCode::BAD_REQUEST,
                        "cannot build the upstream request\n",
                    )),
                    attempt - 1,
                    None,
                );
            }
        };
        let attempt_started = tokio::time::Instant::now();
        // The default response timeout counts from the request body's last progress: while
        // the body still moves, the backend is not late.
        let progress = body_state.as_deref().filter(|_| timeout_from_progress);
        // Pinned in place (see `send_once`).
        let once = std::pin::pin!(send_once(endpoint, request, attempt_timeout, progress));
        let result = match once.await {
            Err(Failure::Unsent(error, request)) if failovers < failover_budget => {
                service.metrics.record_error();
                debug!(attempt, backend = %service.name, %error, "no connection; trying another endpoint");
                failovers += 1;
                unsent = Some((*request, endpoint.protocol));
                continue;
            }
            Err(Failure::Unsent(error, _)) => Err(Failure::Upstream(error)),
            Ok(response) => {
                if let Some(state) = &body_state {
                    state.answered();
                }
                Ok(response)
            }
            Err(Failure::Upstream(error)) => {
                match body_state.as_ref().and_then(|state| state.failure()) {
                    Some(stalled) => Err(Failure::Upstream(UpstreamError::ClientBody {
                        source: Box::new(error),
                        stalled,
                    })),
                    None => Err(Failure::Upstream(error)),
                }
            }
            result => result,
        };
        let retryable = match &result {
            Ok(response) => retry.is_some_and(|r| r.codes.contains(&response.status().as_u16())),
            // Not the backend's failure, and the body cannot be sent again.
            Err(Failure::Upstream(error)) if error.kind().is_client_fault() => false,
            Err(Failure::Upstream(_) | Failure::Unsent(..)) => {
                service.metrics.record_error();
                retry.is_some()
            }
            Err(Failure::Timeout) => retry.is_some(),
            Err(Failure::ClientStalled) => false,
        };
        if !retryable || last || head.is_none() {
            // backendRequest covers the attempt until the response is complete: a body still
            // streaming when it runs out is cut short (the status line is already sent).
            let result = match (result, rule.backend_timeout) {
                (Ok(response), Some(timeout)) => {
                    Ok(response.map(|body| body.with_deadline(attempt_started + timeout)))
                }
                (result, _) => result,
            };
            return (result, attempt, Some(endpoint));
        }
        if let Ok(response) = &result {
            service.metrics.record_status(response.status().as_u16());
        }
        drop(result);
        let backoff = retry.map_or(Duration::ZERO, |r| r.backoff);
        debug!(attempt, backend = %service.name, "retrying");
        tokio::time::sleep(backoff).await;
    }
}

/// One attempt. `timeout` bounds the wait for the response head: from now, or, when
/// `progress` is given, from the request body's last progress, so a long upload that keeps
/// moving is not cut, while a backend that stops reading it is (504), and a client that
/// stops sending it gets 408.
async fn send_once(
    endpoint: &Arc<EndpointPool>,
    request: Request<ReqBody>,
    timeout: Option<Duration>,
    progress: Option<&BodyState>,
) -> Result<Response<ProxyBody>, Failure> {
    let response = match timeout {
        Some(timeout) => {
            let started = tokio::time::Instant::now();
            // Pinned in place: `let` plus `tokio::pin!` stores the future twice in this one's
            // state, as does awaiting a future by value.
            let mut send = std::pin::pin!(endpoint.send(request));
            let mut deadline = started + timeout;
            loop {
                match tokio::time::timeout_at(deadline, send.as_mut()).await {
                    Ok(result) => break result.map_err(Failure::from_send)?,
                    Err(_) => {
                        let since = progress.map_or(started, |p| p.last_progress().max(started));
                        if since + timeout > tokio::time::Instant::now() {
                            deadline = since + timeout;
                            continue;
                        }
                        return Err(match progress {
                            Some(p) if p.waiting_on_client() => Failure::ClientStalled,
                            _ => Failure::Timeout,
                        });
                    }
                }
            }
        }
        None => std::pin::pin!(endpoint.send(request))
            .await
            .map_err(Failure::from_send)?,
    };
    valid_status(response, endpoint.addr).map_err(Failure::Upstream)
}

/// hyper takes any three-digit status; HTTP defines 100-599 (RFC 9110 §15). A response
/// outside is dropped (its connection with it).
fn valid_status<B>(response: Response<B>, addr: SocketAddr) -> Result<Response<B>, UpstreamError> {
    let status = response.status().as_u16();
    if status > 599 {
        return Err(UpstreamError::InvalidStatus { addr, status });
    }
    Ok(response)
}

fn within_limit(body: &ClientBody, limit: usize) -> bool {
    use hyper::body::Body;
    body.size_hint().exact().is_none_or(|n| n <= limit as u64)
}

/// Which of the fields the proxy treats specially a header map holds, found in one pass over
/// its names (comparing names is cheaper than hashing them for lookups, and most messages
/// carry none of the hop-by-hop fields).
#[derive(Debug, Clone, Copy, Default)]
struct HeaderScan {
    /// Bit `i` set: `HOP_BY_HOP[i]` is present; bits 4, 5 and 6: keep-alive,
    /// proxy-connection, http2-settings.
    hop_by_hop: u8,
    connection: bool,
    te: bool,
    forwarded_for: bool,
    host: bool,
    client_cert: bool,
}

impl HeaderScan {
    fn of(headers: &HeaderMap) -> Self {
        let mut scan = Self::default();
        for name in headers.keys() {
            if *name == header::HOST {
                scan.host = true;
            } else if *name == header::CONNECTION {
                scan.connection = true;
                scan.hop_by_hop |= 1;
            } else if *name == header::TE {
                scan.te = true;
            } else if *name == X_FORWARDED_FOR {
                scan.forwarded_for = true;
            } else if *name == X_FORWARDED_CLIENT_CERT {
                scan.client_cert = true;
            } else if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
                scan.hop_by_hop |= 1 << index;
            } else if *name == KEEP_ALIVE {
                scan.hop_by_hop |= 1 << HOP_BY_HOP.len();
            } else if *name == PROXY_CONNECTION {
                scan.hop_by_hop |= 1 << (HOP_BY_HOP.len() + 1);
            } else if *name == HTTP2_SETTINGS {
                scan.hop_by_hop |= 1 << (HOP_BY_HOP.len() + 2);
            }
        }
        scan
    }

    fn has_upgrade(&self) -> bool {
        self.hop_by_hop & (1 << UPGRADE_INDEX) != 0
    }
}

/// Index of `Upgrade` in [`HOP_BY_HOP`].
const UPGRADE_INDEX: usize = 2;

/// Removes the client's hop-by-hop fields (the fixed set, what its `Connection` lists, a `TE`
/// other than `trailers`) and its `X-Forwarded-Client-Cert` (only the gateway vouches for a
/// certificate), and updates `scan` to what is left.
fn strip_request_hop_by_hop(headers: &mut HeaderMap, scan: &mut HeaderScan) {
    strip_hop_by_hop(headers, *scan);
    if scan.client_cert {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
        scan.client_cert = false;
    }
    // `Connection` may have listed any field, even these.
    if scan.connection {
        scan.te = headers.contains_key(header::TE);
        scan.forwarded_for = headers.contains_key(&X_FORWARDED_FOR);
    }
    // gRPC needs `te: trailers`; any other TE value is hop-by-hop.
    if scan.te && headers.get(header::TE).is_some_and(|te| te != "trailers") {
        headers.remove(header::TE);
        scan.te = false;
    }
}

/// Adds the `X-Forwarded-*` headers to headers already stripped of the client's hop-by-hop
/// fields (and `X-Forwarded-Client-Cert` for a certificate the gateway validated); `forwarded_for`
/// is the client's address, formatted once per connection. Returns
/// whether a `Host` header is present.
fn prepare_headers(
    headers: &mut HeaderMap,
    scan: HeaderScan,
    forwarded_for: &HeaderValue,
    scheme: &'static str,
    client_cert: Option<&HeaderValue>,
) -> bool {
    // A previous value that is not visible ASCII is replaced, not extended.
    let previous = if scan.forwarded_for {
        headers
            .get(&X_FORWARDED_FOR)
            .filter(|previous| previous.to_str().is_ok())
    } else {
        None
    };
    match previous {
        Some(previous) => {
            let mut appended =
                Vec::with_capacity(previous.len() + 2 + forwarded_for.as_bytes().len());
            appended.extend_from_slice(previous.as_bytes());
            appended.extend_from_slice(b", ");
            appended.extend_from_slice(forwarded_for.as_bytes());
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(appended)) {
                headers.insert(X_FORWARDED_FOR.clone(), value);
            }
        }
        None => {
            headers.insert(X_FORWARDED_FOR.clone(), forwarded_for.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    if let Some(client_cert) = client_cert {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), client_cert.clone());
    }
    scan.host
}

/// The `X-Forwarded-For` element for a client address.
pub(crate) fn forwarded_for_value(remote: SocketAddr) -> HeaderValue {
    // An IP address is always a valid header value.
    HeaderValue::try_from(remote.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Removes the hop-by-hop fields (RFC 9110 §7.6.1): the fixed set and whatever `Connection`
/// lists. Only fields the scan found are looked up.
fn strip_hop_by_hop(headers: &mut HeaderMap, scan: HeaderScan) {
    if scan.connection {
        strip_connection_listed(headers);
    }
    if scan.hop_by_hop == 0 {
        return;
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if scan.hop_by_hop & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    if scan.hop_by_hop & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if scan.hop_by_hop & (1 << (HOP_BY_HOP.len() + 1)) != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if scan.hop_by_hop & (1 << (HOP_BY_HOP.len() + 2)) != 0 {
        headers.remove(&HTTP2_SETTINGS);
    }
}

fn strip_connection_listed(headers: &mut HeaderMap) {
    // Tokens naming fields that are removed anyway (`Connection: keep-alive` is the usual
    // value) need no parsing and no list.
    let mut listed: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if token.is_empty()
            || ALWAYS_REMOVED.iter().any(|n| token.eq_ignore_ascii_case(n))
            || NEVER_REMOVED.iter().any(|n| token.eq_ignore_ascii_case(n))
        {
            continue;
        }
        if let Ok(name) = HeaderName::try_from(token) {
            listed.push(name);
        }
    }
    for name in listed {
        headers.remove(name);
    }
}

/// Tokens of `Connection` that name fields [`strip_hop_by_hop`] removes anyway when they are
/// present (it looks for these by name).
const ALWAYS_REMOVED: [&str; 7] = [
    "connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

/// Fields `Connection` cannot remove: they describe the message, not the connection, and
/// the request cannot be routed or framed without them (RFC 9112 §3.2, §6).
const NEVER_REMOVED: [&str; 2] = ["host", "content-length"];

fn strip_response_headers(headers: &mut HeaderMap) {
    let scan = HeaderScan::of(headers);
    strip_hop_by_hop(headers, scan);
}

/// The protocols an HTTP/1.1 request asks to upgrade to (`Upgrade`, with `upgrade` among the
/// `Connection` tokens), without `h2c`: the gateway does not let a client switch a backend
/// connection to cleartext HTTP/2 (obsolete, RFC 9113 §3.1; a known way past the proxy).
/// `None` when nothing is left: the request is then forwarded as an ordinary one.
fn requested_upgrade(parts: &Parts, scan: HeaderScan) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11
        || !scan.has_upgrade()
        || !scan.connection
        || !parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    let mut values = parts.headers.get_all(header::UPGRADE).iter();
    let first = values.next()?;
    let single = values.next().is_none();
    let protocols = || {
        parts
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    };
    if single && first.to_str().is_ok() && !protocols().any(is_h2c) {
        return Some(first.clone());
    }
    let kept: Vec<&str> = protocols().filter(|p| !is_h2c(p)).collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::try_from(kept.join(", ")).ok()
}

/// `h2c`, with or without a version suffix.
fn is_h2c(protocol: &str) -> bool {
    let name = protocol.split('/').next().unwrap_or(protocol);
    name.trim().eq_ignore_ascii_case("h2c")
}

/// Whether a 101's `Upgrade` names a protocol the client asked for (RFC 9110 §7.8: the server
/// switches to one of those; anything else would be a tunnel nobody asked for).
fn upgrade_accepted(response: &HeaderMap, requested: &HeaderValue) -> bool {
    let Ok(requested) = requested.to_str() else {
        return false;
    };
    response
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|chosen| {
            requested
                .split(',')
                .map(str::trim)
                .any(|asked| asked.eq_ignore_ascii_case(chosen))
        })
}

/// Proxies an HTTP/1.1 upgrade (WebSocket): forwards the handshake on a fresh connection and,
/// on a 101 that switches to a protocol the client asked for (`upgrade_to`), splices the two
/// upgraded streams. The headers are already stripped of the client's hop-by-hop fields.
async fn upgrade(
    ctx: &ConnCtx,
    service: &ServiceBackend,
    pinned: Option<&Arc<EndpointPool>>,
    (mut parts, body): (Parts, ClientBody),
    scan: HeaderScan,
    upgrade_to: HeaderValue,
    target: &UpstreamTarget,
) -> Response<ProxyBody> {
    let Some(endpoint) = pinned.or_else(|| service.next_endpoint()) else {
        return answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoints for the backend\n",
        );
    };
    let Some(client_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return answer::error(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        );
    };
    prepare_headers(
        &mut parts.headers,
        scan,
        &ctx.forwarded_for,
        ctx.scheme,
        ctx.client_cert.as_ref(),
    );
    parts.headers.insert(header::UPGRADE, upgrade_to.clone());
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(authority) = &target.authority
        && let Ok(value) = HeaderValue::try_from(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    let path_and_query = match &target.path {
        Some(path) => match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.clone(),
        },
        None => parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
    };
    let Ok(uri) = Uri::try_from(path_and_query) else {
        return answer::error(StatusCode::BAD_REQUEST, "invalid request target\n");
    };
    let mut request = Request::new(ReqBody::Incoming(body, None));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    let sent = endpoint
        .send_upgrade(request)
        .await
        .and_then(|response| valid_status(response, endpoint.addr));
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            debug!(%error, "upgrade request failed");
            if !error.kind().is_client_fault() {
                service.metrics.record_error();
            }
            return failure_answer(false, &error);
        }
    };
    service.metrics.record_status(response.status().as_u16());
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_response_headers(response.headers_mut());
        return response.map(|body| ProxyBody::upstream(body, None));
    }
    if !upgrade_accepted(response.headers(), &upgrade_to) {
        debug!(backend = %service.name, upgrade = ?response.headers().get(header::UPGRADE),
            "upstream switched to a protocol the client did not ask for");
        service.metrics.record_error();
        // Dropping the response closes the backend connection.
        return answer::error(
            StatusCode::BAD_GATEWAY,
            "the upstream switched to a protocol the client did not ask for\n",
        );
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    // The tunnel is a raw byte stream like a TLSRoute's: it closes after the stream idle
    // timeout without traffic, and when its connection's port drains.
    let idle = ctx.shared.options.stream_idle_timeout;
    let drain = ctx.drain.clone();
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client_upgrade, upstream_upgrade);
        if let (Ok(client), Ok(upstream)) = (client, upstream) {
            let ended = splice(TokioIo::new(client), TokioIo::new(upstream), idle, drain).await;
            debug!(?ended, "upgraded connection closed");
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, ProxyBody::empty())
}
