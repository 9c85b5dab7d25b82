//! The access log line of a routed request, written once per request: when the response is
//! complete in memory at the time its head goes out, at once; when its body still streams
//! from upstream, when that body ends (`outcome="complete"`), fails (`"aborted"`, with the
//! error) or is dropped unfinished because the client went away (`"client_closed"`), took
//! too little of it for the send timeout (`"send_timeout"`), or its port's drain timed out
//! (`"drain_timeout"`: shutdown, or the port removed or rotated). So a
//! truncated response is one line that says so, not a 200 line followed by a second event.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use tracing::info;

use crate::route::Rule;

/// How a response ended, as the `outcome` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The whole response went out.
    Complete,
    /// The upstream body failed or a timeout cut it short.
    Aborted,
    /// The client went away before the body ended.
    ClientClosed,
    /// The client took too little of the response for the send timeout (its connection's
    /// socket, or its HTTP/2 stream's window).
    SendTimedOut,
    /// Still in flight when its port's drain timed out: the gateway closed the connection.
    DrainTimedOut,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Aborted => "aborted",
            Self::ClientClosed => "client_closed",
            Self::SendTimedOut => "send_timeout",
            Self::DrainTimedOut => "drain_timeout",
        }
    }
}

/// Everything the line says about the request, gathered before the response is known.
#[derive(Debug)]
pub(crate) struct AccessLine<'h> {
    /// The client.
    pub(crate) remote: SocketAddr,
    /// Request method.
    pub(crate) method: Method,
    /// The routing host (client-supplied: logged with `Debug`, quoted and escaped).
    pub(crate) host: Cow<'h, str>,
    /// The normalized path (client-supplied, as the host).
    pub(crate) path: String,
    /// The rule that served it.
    pub(crate) rule: Arc<Rule>,
    /// The backend chosen, if any.
    pub(crate) backend: Option<Arc<str>>,
    /// Upstream attempts made.
    pub(crate) attempts: u32,
    /// The response status.
    pub(crate) status: u16,
    /// When the request arrived.
    pub(crate) start: Instant,
    /// Microseconds from arrival to the response head.
    pub(crate) head_micros: u64,
}

impl AccessLine<'_> {
    /// The line with a host of its own, to write later.
    pub(crate) fn into_owned(self) -> AccessLine<'static> {
        AccessLine {
            remote: self.remote,
            method: self.method,
            host: Cow::Owned(self.host.into_owned()),
            path: self.path,
            rule: self.rule,
            backend: self.backend,
            attempts: self.attempts,
            status: self.status,
            start: self.start,
            head_micros: self.head_micros,
        }
    }

    /// Writes the line; `body_bytes` is what was streamed after the head (0 for a body sent
    /// with it) and `micros` covers the whole exchange, body included.
    pub(crate) fn write(
        self,
        outcome: Outcome,
        body_bytes: u64,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) {
        let micros = micros_since(self.start);
        info!(
            target: "access",
            remote = %self.remote,
            method = %self.method,
            host = ?self.host,
            path = ?self.path,
            status = self.status,
            route = %self.rule.route,
            rule = self.rule.rule_index,
            backend = self.backend.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            micros,
            head_micros = self.head_micros,
            body_bytes,
            outcome = outcome.as_str(),
            error = error.map(tracing::field::display),
        );
    }
}

/// Microseconds since `start`, saturating.
pub(crate) fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
