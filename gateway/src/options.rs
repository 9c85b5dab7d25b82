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
    /// known length are streamed without retries or mirrors; larger chunked bodies get 413.
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
        }
    }
}
