//! [`GatewayOptions`]: process-level settings of a gateway, separate from the programmed
//! config the agent sends.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of one gateway process. Plain data; the programmed routes come separately through
/// [`GatewayHandle::apply`](crate::GatewayHandle::apply).
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayOptions {
    /// Where the admin server (`/ready`, `/healthz`, `/metrics`, `/config`) listens.
    pub admin_addr: SocketAddr,
    /// Unique name of this gateway process (shown in logs and reported to the agent).
    pub instance: String,
    /// How long removed listeners and a shutdown wait for in-flight requests before closing.
    pub drain_timeout: Duration,
    /// Upper bound on how long a TLS handshake (or reading a passthrough ClientHello) may take.
    pub tls_handshake_timeout: Duration,
    /// Largest request body buffered for retries or mirroring, in bytes. Larger bodies with a
    /// known length are streamed without retries or mirrors, and so are chunked (or HTTP/2)
    /// bodies once they pass it (the chunks read so far go first).
    pub max_buffered_body: usize,
    /// Per-connection read buffer limit for HTTP/1.1 (bounds memory per connection), in bytes.
    pub max_http1_buf: usize,
    /// Maximum concurrent HTTP/2 streams per downstream connection.
    pub max_h2_streams: u32,
    /// Idle keep-alive connections kept per backend endpoint.
    pub max_idle_per_endpoint: usize,
    /// Timeout for connecting to a backend endpoint.
    pub connect_timeout: Duration,
    /// How long a TLSRoute connection (passthrough or terminated) may stay without a byte in
    /// either direction before the gateway closes it.
    pub stream_idle_timeout: Duration,
    /// Minimum wait between retries when a route's retry stanza sets no backoff.
    pub default_retry_backoff: Duration,
    /// Serving threads (shards), each with its own event loop and a `SO_REUSEPORT` socket per
    /// port; 0 means one per available CPU.
    pub worker_threads: usize,
    /// How long a new plain-HTTP connection may stay without sending its first byte before the
    /// gateway closes it (TLS ports are bounded by `tls_handshake_timeout` instead).
    pub first_byte_timeout: Duration,
    /// How long an HTTP connection (HTTP/2 above all) may stay open with no request in flight
    /// before the gateway closes it (HTTP/2 with a GOAWAY). HTTP/1.1 keep-alive connections
    /// are usually closed sooner, by the 30 s wait for the next request head.
    pub idle_timeout: Duration,
    /// How often an HTTP/2 connection is pinged to detect a dead peer; one that does not
    /// answer within the same period is closed. `None` turns the pings off.
    pub h2_keep_alive_interval: Option<Duration>,
    /// Most downstream connections the process holds at once, over all ports (each may also
    /// hold an upstream connection); further ones are accepted and closed at once. 0 derives
    /// it from the file-descriptor limit ([`default_max_connections`]).
    pub max_connections: usize,
    /// How long the gateway waits for a backend's response head when the route sets no
    /// timeout of its own (`timeouts.request` or `backendRequest`), counted from the request
    /// body's last progress (a long upload that keeps moving is not cut), before answering
    /// 504, or 408 when it was waiting on the client's body.
    /// nginx's `proxy_read_timeout` default. GRPCRoutes are exempt: a streaming call may
    /// legitimately send its headers late. `None` waits forever.
    pub upstream_response_timeout: Option<Duration>,
    /// How long a write to an HTTP client may stay blocked (the client reads nothing while
    /// the gateway has bytes for it) before the connection is dropped and counted in
    /// `gateway_connections_timed_out`: nginx's `send_timeout`, 60 s. A client that keeps
    /// reading, however slowly, is not affected. The same limit drops the response of an
    /// HTTP/2 stream the client grants less than 16 KiB of flow-control window in that time
    /// (`gateway_streams_timed_out`).
    /// `None` waits forever.
    pub send_timeout: Option<Duration>,
    /// How long a client may send nothing more of a request body it started before the
    /// request fails with 408, whether the body is buffered or streamed to the backend
    /// (whose connection is then closed): nginx's `client_body_timeout`, 60 s. `None` waits
    /// forever.
    pub client_body_timeout: Option<Duration>,
}

// === impl GatewayOptions ===

impl GatewayOptions {
    /// Options with defaults for everything but the admin address and instance name.
    pub fn new(admin_addr: SocketAddr, instance: impl Into<String>) -> Self {
        Self {
            admin_addr,
            instance: instance.into(),
            drain_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_buffered_body: 1024 * 1024,
            max_http1_buf: 64 * 1024,
            max_h2_streams: 256,
            max_idle_per_endpoint: 1024,
            connect_timeout: Duration::from_secs(5),
            // Envoy's TCP proxy default: long enough for idle database sessions, short enough
            // that abandoned connections do not pile up.
            stream_idle_timeout: Duration::from_secs(3600),
            default_retry_backoff: Duration::from_millis(25),
            worker_threads: 0,
            // hyper's wait for a request head; a client that sends nothing gets no longer.
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            h2_keep_alive_interval: Some(Duration::from_secs(30)),
            max_connections: 0,
            upstream_response_timeout: Some(Duration::from_secs(60)),
            send_timeout: Some(Duration::from_secs(60)),
            client_body_timeout: Some(Duration::from_secs(60)),
        }
    }

    /// The connection cap in force: `max_connections`, or [`default_max_connections`] when 0.
    pub fn effective_max_connections(&self) -> usize {
        match self.max_connections {
            0 => default_max_connections(),
            n => n,
        }
    }
}

/// A connection cap that keeps file descriptors for everything else: from the soft
/// `RLIMIT_NOFILE`, a reserve (an eighth, at least 256) for the admin server, config reloads,
/// logs and idle upstream pools, then half of the rest, since a proxied connection may hold an
/// upstream connection too. Without a limit, 100,000.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit {
        Some(limit) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let reserve = (limit / 8).max(256);
            (limit.saturating_sub(reserve) / 2).max(16)
        }
        None => 100_000,
    }
}
