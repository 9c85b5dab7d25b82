//! Per-endpoint upstream connections: stacks of idle HTTP/1.1 keep-alive connections (hyper's
//! client, and the lean client of [`h1`](super::h1) for bodyless `GET`/`HEAD`), or one shared
//! multiplexed HTTP/2 (h2c) connection, plus one-off connections for upgrades.
//!
//! An endpoint under a BackendTLSPolicy speaks TLS (its [`BackendConnector`] was built when the
//! snapshot compiled): HTTP/1.1 through hyper's client (the lean client is TCP-only), HTTP/2
//! when the Service port is h2c-typed (ALPN `h2`). A failed handshake or certificate check is
//! a connection error, like a refused connect.
//!
//! Pools are keyed by (endpoint address, protocol, TLS settings) and outlive config swaps: the runtime hands
//! the same `Arc<EndpointPool>` to every snapshot that still names the endpoint, so a swap keeps
//! warm connections. The only lock is the pool's own short critical section (push/pop).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_proto::model::gateway::AppProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::warn;

use super::h1::{self, H1Conn, H1Error, ReadyOrStreaming};
use crate::proxy::body::{ClientBodyError, ProxyBody, ReqBody};
use crate::proxy::shards;
use crate::tls::backend::BackendConnector;

/// Connections to one backend endpoint.
#[derive(Debug)]
pub(crate) struct EndpointPool {
    /// The endpoint.
    pub(crate) addr: SocketAddr,
    /// Its id in session persistence tokens, hashed once here rather than per request.
    pub(crate) session_id: u64,
    /// How to talk to it.
    pub(crate) protocol: AppProtocol,
    /// TLS to the endpoint (a BackendTLSPolicy); `None` is cleartext.
    tls: Option<Arc<BackendConnector>>,
    settings: PoolSettings,
    /// Idle HTTP/1.1 connections, one stack per shard: a connection's task runs on the shard
    /// that opened it, so it is only ever reused there.
    idle: Box<[Mutex<Vec<http1::SendRequest<ReqBody>>>]>,
    /// The shared HTTP/2 connection, one per shard.
    h2: Box<[Mutex<Option<http2::SendRequest<ReqBody>>>]>,
    /// Idle connections of the lean HTTP/1.1 client, one stack per shard.
    lean_idle: Box<[Mutex<Vec<H1Conn>>]>,
    /// Passive health: until when (ms on [`clock_ms`]; 0: up) round-robin skips this
    /// endpoint because connecting to it failed. See [`EndpointPool::is_up`].
    down_until_ms: AtomicU64,
    /// Connection failures in a row, for the back-off.
    connect_failures: AtomicU32,
}

/// A connect in progress; see [`EndpointPool::connect_tcp`].
struct ConnectAttempt<'a> {
    pool: &'a EndpointPool,
    started: Instant,
    finished: bool,
}

impl Drop for ConnectAttempt<'_> {
    fn drop(&mut self) {
        if !self.finished && self.started.elapsed() >= ABANDONED_CONNECT {
            self.pool.connect_failed();
        }
    }
}

/// How long a connect may have waited when its request gives up on it (a route timeout) for
/// the endpoint to count as failing.
const ABANDONED_CONNECT: Duration = Duration::from_secs(1);

/// The first back-off after a failed connect; it doubles with each failure in a row.
const DOWN_FIRST: Duration = Duration::from_secs(1);
/// The longest back-off.
const DOWN_MAX: Duration = Duration::from_secs(30);

/// Milliseconds since the first call (never 0), a cheap monotonic clock for back-offs.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// Marks a request whose route counts its attempts (it has a retry policy): a pooled
/// connection that drops it unanswered is then a failed attempt for the route to retry or
/// not, never resent behind its back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CountedAttempts;

/// Whether a request dropped unanswered by a reused connection may be sent once more.
fn resend_allowed<B>(request: &Request<B>) -> bool {
    request.extensions().get::<CountedAttempts>().is_none()
}

/// A failed send. `unsent` gives the request back when none of it reached the backend (no
/// connection could be made), so it may go to another endpoint whatever its method.
#[derive(Debug)]
pub(crate) struct SendFailure {
    /// What failed.
    pub(crate) error: UpstreamError,
    /// The request, when it was never sent.
    pub(crate) unsent: Option<Box<Request<ReqBody>>>,
}

impl From<UpstreamError> for SendFailure {
    fn from(error: UpstreamError) -> Self {
        Self {
            error,
            unsent: None,
        }
    }
}

/// Pool limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Idle HTTP/1.1 connections kept.
    pub(crate) max_idle: usize,
    /// TCP connect timeout.
    pub(crate) connect_timeout: Duration,
    /// Number of serving shards (one idle stack each).
    pub(crate) shards: usize,
}

/// A keep-alive connection on its way back to the pool once its response body ends.
#[derive(Debug)]
pub(crate) struct PoolReturn {
    pool: Arc<EndpointPool>,
    sender: http1::SendRequest<ReqBody>,
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// TCP connect failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Endpoint.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// TCP connect timed out.
    #[error("connecting to {addr}: timed out")]
    ConnectTimeout {
        /// Endpoint.
        addr: SocketAddr,
    },
    /// The HTTP exchange failed (reset, closed, malformed response).
    #[error("upstream {addr}: {source}")]
    Http {
        /// Endpoint.
        addr: SocketAddr,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The TLS handshake failed (the certificate did not verify, no common protocol, ...).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// Endpoint.
        addr: SocketAddr,
        /// rustls' error, wrapped by tokio-rustls.
        source: std::io::Error,
    },
    /// The TLS handshake did not finish in the connect timeout.
    #[error("TLS handshake with {addr}: timed out")]
    TlsTimeout {
        /// Endpoint.
        addr: SocketAddr,
    },
    /// The lean client's exchange failed.
    #[error("upstream {addr}: {source}")]
    Lean {
        /// Endpoint.
        addr: SocketAddr,
        /// What went wrong.
        source: H1Error,
    },
    /// The client's request body failed while it was streamed upstream, which failed the
    /// exchange (`source`).
    #[error("reading the request body failed, then {source}")]
    ClientBody {
        /// The upstream error the body's failure caused (an HTTP/2 stream reset, say).
        source: Box<UpstreamError>,
        /// The body stalled for the client body timeout (rather than failing to read).
        stalled: bool,
    },
    /// The response's status code is outside 100-599 (RFC 9110 §15).
    #[error("upstream {addr}: invalid status code {status}")]
    InvalidStatus {
        /// Endpoint.
        addr: SocketAddr,
        /// The code received.
        status: u16,
    },
}

/// What an [`UpstreamError`] means for the answer to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No usable connection, or it went away before a response (connect, TLS, reset, close):
    /// 503, as Gateway API conformance expects for connection errors.
    Connection,
    /// The backend answered something that is not a valid HTTP response: 502 (RFC 9110
    /// §15.6.3).
    InvalidResponse,
    /// The client's own request body failed while it was being sent: 400, and not the
    /// backend's fault.
    RequestBody,
    /// The client's own request body stalled for the client body timeout: 408, and not the
    /// backend's fault.
    RequestBodyTimeout,
}

impl FailureKind {
    /// Whether the client caused it (its body), so it counts against neither the backend
    /// nor a retry.
    pub(crate) fn is_client_fault(self) -> bool {
        matches!(self, Self::RequestBody | Self::RequestBodyTimeout)
    }
}

impl UpstreamError {
    /// How the failure is answered and counted.
    pub(crate) fn kind(&self) -> FailureKind {
        match self {
            Self::Http { source, .. } => {
                if let Some(body_error) = crate::proxy::body::client_body_error(source) {
                    match body_error {
                        ClientBodyError::Read(_) => FailureKind::RequestBody,
                        ClientBodyError::Stalled(_) => FailureKind::RequestBodyTimeout,
                    }
                } else if source.is_parse() {
                    FailureKind::InvalidResponse
                } else {
                    FailureKind::Connection
                }
            }
            Self::ClientBody { stalled: false, .. } => FailureKind::RequestBody,
            Self::ClientBody { stalled: true, .. } => FailureKind::RequestBodyTimeout,
            Self::Lean {
                source: H1Error::Protocol(_),
                ..
            }
            | Self::InvalidStatus { .. } => FailureKind::InvalidResponse,
            _ => FailureKind::Connection,
        }
    }
}

// === impl EndpointPool ===

impl EndpointPool {
    /// An empty pool for one endpoint, reached over TLS when `tls` is set.
    pub(crate) fn new(
        addr: SocketAddr,
        protocol: AppProtocol,
        tls: Option<Arc<BackendConnector>>,
        settings: PoolSettings,
    ) -> Self {
        Self {
            addr,
            session_id: super::session::endpoint_id(addr),
            protocol,
            tls,
            settings,
            idle: (0..settings.shards.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            h2: (0..settings.shards.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            lean_idle: (0..settings.shards.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            down_until_ms: AtomicU64::new(0),
            connect_failures: AtomicU32::new(0),
        }
    }

    /// Whether round-robin should pick this endpoint: no connect to it failed lately. After a
    /// refused or timed-out connect it is skipped for 1 s, doubling with every failure in a
    /// row up to 30 s; then it gets requests again (a restarted backend is found again), and
    /// one successful connect clears it. One atomic load while it is up.
    pub(crate) fn is_up(&self) -> bool {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        until == 0 || clock_ms() >= until
    }

    fn connect_succeeded(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
            self.down_until_ms.store(0, Ordering::Relaxed);
        }
    }

    fn connect_failed(&self) {
        // Connects that fail together (every request of a moment finding the backend gone)
        // are one failure: only one after the back-off ran out counts as the next in a row.
        let until = self.down_until_ms.load(Ordering::Relaxed);
        if until != 0 && clock_ms() < until {
            return;
        }
        let failures = self.connect_failures.fetch_add(1, Ordering::Relaxed);
        let backoff = DOWN_FIRST
            .saturating_mul(1u32 << failures.min(5))
            .min(DOWN_MAX);
        if failures == 0 {
            // Once per outage: later failures in a row only lengthen the back-off.
            warn!(addr = %self.addr, "cannot connect to the endpoint; routing around it until a connect succeeds");
        }
        let ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        self.down_until_ms
            .store(clock_ms().saturating_add(ms), Ordering::Relaxed);
    }

    /// The TLS a BackendTLSPolicy asks for on connections to this endpoint.
    pub(crate) fn tls(&self) -> Option<&Arc<BackendConnector>> {
        self.tls.as_ref()
    }

    /// Sends one request, reusing a pooled connection when possible. A request no connection
    /// could be made for comes back in the failure.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendFailure> {
        // hyper's and rustls's handshakes make the h2 and h1 futures 10 and 6 times the lean
        // one: boxed, so that every request's future (held per connection and moved as it is
        // built up) is not as large as the largest branch.
        match self.protocol {
            AppProtocol::H2c => Box::pin(self.send_h2(request)).await,
            AppProtocol::Http1 | AppProtocol::WebSocket
                if self.tls.is_none() && h1::is_lean_request(&request) =>
            {
                self.send_lean(request).await
            }
            AppProtocol::Http1 | AppProtocol::WebSocket => Box::pin(self.send_h1(request)).await,
        }
    }

    /// The lean client's exchange (bodyless `GET`/`HEAD`, see [`h1`]).
    async fn send_lean(
        self: &Arc<Self>,
        request: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendFailure> {
        let mut reuse = true;
        loop {
            let pooled = if reuse { self.pop_lean() } else { None };
            let (mut conn, pooled) = match pooled {
                Some(conn) => (conn, true),
                None => match self.connect_tcp().await {
                    Ok(stream) => (H1Conn::new(stream), false),
                    Err(error) => {
                        return Err(SendFailure {
                            error,
                            unsent: Some(Box::new(request)),
                        });
                    }
                },
            };
            let start = match conn.send(&request).await {
                Ok(start) => start,
                // A pooled connection the server had closed before the request went out:
                // send it on the next one (a new connection at the latest).
                Err(H1Error::Closed(_)) if pooled => continue,
                // A pooled connection the server closed as the request arrived (its idle
                // timeout raced the reuse), without a byte of answer: a bodyless GET or HEAD
                // is idempotent, so it goes again (RFC 9110 §9.2.2), once, on a new connection;
                // unless the route counts attempts itself (a retry policy).
                Err(H1Error::NoResponse(_)) if pooled && resend_allowed(&request) => {
                    reuse = false;
                    continue;
                }
                Err(source) => {
                    return Err(UpstreamError::Lean {
                        addr: self.addr,
                        source,
                    }
                    .into());
                }
            };
            let body = match conn.into_body(start.framing, start.keep_alive) {
                ReadyOrStreaming::Ready(bytes, reusable) => {
                    if let Some(conn) = reusable {
                        self.push_lean(conn);
                    }
                    ProxyBody::full(bytes)
                }
                ReadyOrStreaming::Streaming(reader) => ProxyBody::lean(reader, Arc::clone(self)),
            };
            return Ok(Response::from_parts(start.head, body));
        }
    }

    fn lean_stack(&self) -> &Mutex<Vec<H1Conn>> {
        &self.lean_idle[shards::current() % self.lean_idle.len()]
    }

    fn pop_lean(&self) -> Option<H1Conn> {
        let mut idle = match self.lean_stack().lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some(conn) = idle.pop() {
            if conn.looks_idle() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a lean connection whose last response ended cleanly.
    pub(crate) fn push_lean(&self, conn: H1Conn) {
        let mut idle = match self.lean_stack().lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < self.settings.max_idle {
            idle.push(conn);
        }
    }

    /// Sends a request that asks for a protocol upgrade on a fresh, unpooled HTTP/1.1
    /// connection; the caller takes over the upgraded stream from the response.
    pub(crate) async fn send_upgrade(
        self: &Arc<Self>,
        request: Request<ReqBody>,
    ) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
        let mut sender = match self.connect_tls().await? {
            Some(stream) => self.handshake_h1(stream, true).await?,
            None => self.handshake_h1(self.connect_tcp().await?, true).await?,
        };
        sender
            .send_request(request)
            .await
            .map_err(|source| self.http_error(source))
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut request: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendFailure> {
        frame_unknown_length(&mut request);
        while let Some(mut sender) = self.checkout_idle().await {
            // A copy to send again if the pooled connection takes the request and closes
            // without an answer (the backend's idle timeout raced the reuse): only for
            // idempotent requests without a body (RFC 9110 §9.2.2).
            let again = if resend_allowed(&request) {
                replayable_copy(&request)
            } else {
                None
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.wrap_h1(response, sender)),
                Err(mut error) => match error.take_message() {
                    // The pooled connection closed before the request went out (a keep-alive
                    // race with the backend): safe to resend on another connection.
                    Some(unsent) => request = unsent,
                    None => {
                        let error = error.into_error();
                        match again {
                            Some(again) if dropped_unanswered(&error) => {
                                request = again;
                                break;
                            }
                            _ => return Err(self.http_error(error).into()),
                        }
                    }
                },
            }
        }
        let connected = match self.connect_tls().await {
            Ok(Some(stream)) => self.handshake_h1(stream, false).await,
            Ok(None) => match self.connect_tcp().await {
                Ok(stream) => self.handshake_h1(stream, false).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let mut sender = match connected {
            Ok(sender) => sender,
            Err(error) => {
                return Err(SendFailure {
                    error,
                    unsent: Some(Box::new(request)),
                });
            }
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| self.http_error(source))?;
        Ok(self.wrap_h1(response, sender))
    }

    fn wrap_h1(
        self: &Arc<Self>,
        response: Response<hyper::body::Incoming>,
        sender: http1::SendRequest<ReqBody>,
    ) -> Response<ProxyBody> {
        let pool_return = PoolReturn {
            pool: Arc::clone(self),
            sender,
        };
        response.map(|body| ProxyBody::upstream(body, Some(pool_return)))
    }

    async fn checkout_idle(&self) -> Option<http1::SendRequest<ReqBody>> {
        loop {
            let mut sender = self.pop_idle()?;
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn idle_stack(&self) -> &Mutex<Vec<http1::SendRequest<ReqBody>>> {
        &self.idle[shards::current() % self.idle.len()]
    }

    fn pop_idle(&self) -> Option<http1::SendRequest<ReqBody>> {
        match self.idle_stack().lock() {
            Ok(mut idle) => idle.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        }
    }

    fn push_idle(&self, sender: http1::SendRequest<ReqBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = match self.idle_stack().lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < self.settings.max_idle {
            idle.push(sender);
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        mut request: Request<ReqBody>,
    ) -> Result<Response<ProxyBody>, SendFailure> {
        if self.tls.is_some() {
            // `:scheme` says how the request travels; the forwarder wrote `http` for h2c.
            let mut parts = request.uri().clone().into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTPS);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        let mut shared = {
            let guard = match self.h2[shards::current() % self.h2.len()].lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.as_ref().filter(|sender| !sender.is_closed()).cloned()
        };
        loop {
            let reused = shared.is_some();
            let mut sender = match shared.take() {
                Some(sender) => sender,
                None => {
                    let connected = match self.connect_tls().await {
                        Ok(Some(stream)) => self.handshake_h2(stream).await,
                        Ok(None) => match self.connect_tcp().await {
                            Ok(stream) => self.handshake_h2(stream).await,
                            Err(error) => Err(error),
                        },
                        Err(error) => Err(error),
                    };
                    let sender = match connected {
                        Ok(sender) => sender,
                        Err(error) => {
                            return Err(SendFailure {
                                error,
                                unsent: Some(Box::new(request)),
                            });
                        }
                    };
                    let mut guard = match self.h2[shards::current() % self.h2.len()].lock() {
                        Ok(guard) => guard,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    *guard = Some(sender.clone());
                    sender
                }
            };
            match sender.ready().await {
                Ok(()) => {}
                // The shared connection closed (a GOAWAY, the backend's idle timeout) after it was
                // taken: nothing was sent on it, so the request goes on a new connection.
                Err(_) if reused => continue,
                Err(source) => return Err(self.http_error(source).into()),
            }
            let response = sender
                .send_request(request)
                .await
                .map_err(|source| self.http_error(source))?;
            return Ok(response.map(|body| ProxyBody::upstream(body, None)));
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addr = self.addr;
        // A route timeout shorter than the connect timeout drops this future mid-connect: a
        // blackholed endpoint would then never count as failing. A connect abandoned after a
        // second does.
        let mut attempt = ConnectAttempt {
            pool: self,
            started: Instant::now(),
            finished: false,
        };
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    attempt.finished = true;
                    self.connect_failed();
                    return Err(UpstreamError::Connect { addr, source });
                }
                Err(_) => {
                    attempt.finished = true;
                    self.connect_failed();
                    return Err(UpstreamError::ConnectTimeout { addr });
                }
            };
        attempt.finished = true;
        self.connect_succeeded();
        // Proxied requests are small writes; Nagle would add latency to every one.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A TLS connection when the endpoint has a policy, `None` for cleartext endpoints. The
    /// handshake shares the connect timeout; a failure is logged with its reason (a
    /// certificate that does not verify is a configuration problem an operator must see).
    async fn connect_tls(
        &self,
    ) -> Result<Option<tokio_rustls::client::TlsStream<TcpStream>>, UpstreamError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let addr = self.addr;
        // Fail closed before dialling: without trust anchors no backend could be verified.
        if let Some(why) = tls.unavailable() {
            warn!(%addr, sni = ?tls.server_name(), error = %why, "TLS to backend unavailable");
            return Err(UpstreamError::Tls {
                addr,
                source: std::io::Error::other(why.to_string()),
            });
        }
        let stream = self.connect_tcp().await?;
        match tokio::time::timeout(self.settings.connect_timeout, tls.connect(stream)).await {
            Ok(Ok(stream)) => Ok(Some(stream)),
            Ok(Err(source)) => {
                warn!(%addr, sni = ?tls.server_name(), error = %source, "TLS handshake with backend failed");
                Err(UpstreamError::Tls { addr, source })
            }
            Err(_) => {
                warn!(%addr, sni = ?tls.server_name(), "TLS handshake with backend timed out");
                Err(UpstreamError::TlsTimeout { addr })
            }
        }
    }

    /// An HTTP/1.1 client connection over `io`, its connection task spawned.
    async fn handshake_h1<I>(
        &self,
        io: I,
        upgrades: bool,
    ) -> Result<http1::SendRequest<ReqBody>, UpstreamError>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|source| self.http_error(source))?;
        if upgrades {
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
        } else {
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok(sender)
    }

    /// An HTTP/2 client connection over `io`, its connection task spawned.
    async fn handshake_h2<I>(&self, io: I) -> Result<http2::SendRequest<ReqBody>, UpstreamError>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|source| self.http_error(source))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn http_error(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Http {
            addr: self.addr,
            source,
        }
    }
}

/// Whether an exchange failed because the connection closed or was reset before any response
/// (the only case a resend is for: a malformed answer means the backend acted on it).
fn dropped_unanswered(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

/// A copy of an idempotent request without a body (`GET`, `HEAD`, `OPTIONS`, `TRACE`, or
/// `PUT`/`DELETE` with an empty body), to send again; `None` for any other.
fn replayable_copy(request: &Request<ReqBody>) -> Option<Request<ReqBody>> {
    use hyper::body::Body;
    let method = request.method();
    let idempotent = method == http::Method::GET
        || method == http::Method::HEAD
        || method == http::Method::OPTIONS
        || method == http::Method::TRACE
        || method == http::Method::PUT
        || method == http::Method::DELETE;
    if !idempotent || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(ReqBody::full(bytes::Bytes::new()));
    *copy.method_mut() = method.clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// hyper's HTTP/1.1 client sends a `GET` or `HEAD` whose body length it does not know (the
/// client's body was chunked, or HTTP/2 DATA without `content-length`) as no body at all:
/// asking for chunked framing explicitly makes it forward the body.
fn frame_unknown_length(request: &mut Request<ReqBody>) {
    use hyper::body::Body;
    let method = request.method();
    if (method == http::Method::GET || method == http::Method::HEAD)
        && !request.body().is_end_stream()
        && request.body().size_hint().exact().is_none()
        && !request.headers().contains_key(http::header::CONTENT_LENGTH)
    {
        request.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
}

// === impl PoolReturn ===

impl PoolReturn {
    /// Puts the connection back into its pool.
    pub(crate) fn release(self) {
        self.pool.push_idle(self.sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_takes_the_endpoint_out_for_a_while_and_a_success_brings_it_back() {
        let port = closed_port();
        let settings = PoolSettings {
            max_idle: 1,
            connect_timeout: Duration::from_secs(1),
            shards: 1,
        };
        let dead = EndpointPool::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            AppProtocol::Http1,
            None,
            settings,
        );
        assert!(dead.is_up());
        assert!(dead.connect_tcp().await.is_err());
        assert!(!dead.is_up(), "still picked after a refused connect");
        // Failures while it is out (connects that were under way together) change nothing.
        let until = dead.down_until_ms.load(Ordering::Relaxed);
        dead.connect_failed();
        assert_eq!(dead.down_until_ms.load(Ordering::Relaxed), until);
        // Once the back-off ran out, the next failure doubles it; it stays bounded.
        let expire = |pool: &EndpointPool| pool.down_until_ms.store(1, Ordering::Relaxed);
        expire(&dead);
        dead.connect_failed();
        let until = dead.down_until_ms.load(Ordering::Relaxed);
        assert!(until >= clock_ms() + 1_500 && until <= clock_ms() + 2_100);
        for _ in 0..10 {
            expire(&dead);
            dead.connect_failed();
        }
        let until = dead.down_until_ms.load(Ordering::Relaxed);
        assert!(until <= clock_ms() + 30_100, "{until}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = EndpointPool::new(
            listener.local_addr().unwrap(),
            AppProtocol::Http1,
            None,
            settings,
        );
        live.connect_failed();
        assert!(!live.is_up());
        assert!(live.connect_tcp().await.is_ok());
        assert!(live.is_up(), "a successful connect clears the back-off");
    }

    /// A port nothing listens on: bound, then closed (a race only with another test).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }
}
