//! The request entry point: the request target's checks and normal form (400, see
//! [`super::target`]), listener selection (isolation, 421), route lookup (404 / gRPC
//! Unimplemented), then forwarding; records metrics and the access log (client-supplied host
//! and path with `Debug` formatting, quoted and escaped, so they cannot forge other fields).

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::info;

use super::access::{AccessLine, Outcome, micros_since};
use super::answer;
use super::body::ProxyBody;
use super::conn_limits::Cut;
use super::forward::{self, Matched};
use super::server::ConnCtx;
use super::target;
use crate::metrics::StatusLabels;
use crate::route::Rule;
use crate::route::grpc::is_grpc_request;
use crate::route::host::normalize_host;
use crate::route::matcher::{PathMatcher, RequestView};

/// Handles one request.
pub(crate) async fn handle(
    ctx: Arc<ConnCtx>,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let table = ctx.port.table.load_full();
    // The request moves into `forward` while the host is still needed: `prepare` keeps a
    // shared handle on the bytes (a reference count) instead of copying them into a `String`.
    // From here on the request's Host is the routing authority and its path is normalized.
    let raw_host = |request: &Request<Incoming>| {
        request
            .headers()
            .get(http::header::HOST)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    // The gateway opens no CONNECT tunnels, and forwarding the request would ask the backend
    // to (RFC 9110 §9.3.6); its authority-form target is no path to route on either.
    if request.method() == http::Method::CONNECT {
        let host = raw_host(&request);
        return unmatched(&ctx, &request, &host, start, answer::connect_refused());
    }
    let authority = match target::prepare(&mut request) {
        Ok(authority) => authority,
        Err(error) => {
            let host = raw_host(&request);
            let grpc = is_grpc_request(request.headers());
            return unmatched(
                &ctx,
                &request,
                &host,
                start,
                answer::failure(grpc, StatusCode::BAD_REQUEST, error.answer_text()),
            );
        }
    };
    let host = normalize_host(authority.as_str());
    let grpc = is_grpc_request(request.headers());

    let Some(listener) = table.listener_for_host(&host) else {
        return unmatched(
            &ctx,
            &request,
            &host,
            start,
            answer::failure(grpc, StatusCode::NOT_FOUND, "no listener for this host\n"),
        );
    };
    if let Some(sni_listener) = &ctx.sni_listener
        && **sni_listener != *listener.name
    {
        return unmatched(
            &ctx,
            &request,
            &host,
            start,
            answer::error(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected request: the TLS server name selects another listener\n",
            ),
        );
    }

    let mut matched = None;
    if grpc && listener.has_grpc() {
        matched = listener
            .find_grpc(&host, request.uri().path(), request.headers())
            .map(|entry| Matched {
                rule: &entry.rule,
                matched_prefix: None,
            });
    }
    if matched.is_none() {
        let mut view = RequestView::new(request.uri(), request.method(), request.headers());
        matched = listener.find_http(&host, &mut view).map(|entry| Matched {
            rule: &entry.rule,
            matched_prefix: match &entry.matcher.path {
                PathMatcher::Prefix(prefix) => Some(&**prefix),
                _ => None,
            },
        });
    }
    let Some(matched) = matched else {
        let grpc_miss = grpc && listener.has_grpc();
        return unmatched(
            &ctx,
            &request,
            &host,
            start,
            answer::failure(grpc_miss, StatusCode::NOT_FOUND, "no route matches\n"),
        );
    };

    // The access log is usually on; copying the request line only when it is keeps the hot
    // path free of allocations when an operator turns it off (`MERIDIAN_LOG=info,access=off`).
    let logged = tracing::enabled!(target: "access", tracing::Level::INFO)
        .then(|| (request.method().clone(), request.uri().path().to_string()));
    let rule = matched.rule;
    // A request dropped before its response head is ready (the client reset the stream or
    // went away) is still counted and logged: status 499, `client_closed`.
    let mut unanswered = Unanswered {
        rule,
        ctx: &ctx,
        start,
        line: None,
        armed: true,
    };
    unanswered.line = logged.map(|(method, path)| AccessLine {
        remote: ctx.remote,
        method,
        host: std::borrow::Cow::Borrowed(&*host),
        path,
        rule: Arc::clone(rule),
        backend: None,
        attempts: 0,
        status: 499,
        start,
        head_micros: 0,
    });
    // Pinned in place: awaiting it by value would keep room for it twice in this future.
    let outcome = std::pin::pin!(forward::process(&ctx, table.port, &host, matched, request)).await;
    let status = outcome.response.status();
    let elapsed = start.elapsed();
    rule.metrics(&ctx.shared.metrics)
        .record(status.as_u16(), elapsed);
    let mut response = outcome.response;
    unanswered.armed = false;
    if let Some(mut line) = unanswered.line.take() {
        line.backend = outcome.backend;
        line.attempts = outcome.attempts;
        line.status = status.as_u16();
        line.head_micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // A body still streaming from upstream writes the line when it ends.
        if response.body().defers_log() {
            response.body_mut().defer_log(line.into_owned());
        } else {
            line.write(Outcome::Complete, 0, None);
        }
    }
    response
}

/// A request still waiting for its response head: if it is dropped before the head is
/// ready, its rule counts a 499 and its access line (when logged) says `client_closed`; or,
/// when the gateway closed its connection at a drain's timeout, a 503 and `drain_timeout`.
struct Unanswered<'a> {
    rule: &'a Arc<Rule>,
    ctx: &'a ConnCtx,
    start: Instant,
    line: Option<AccessLine<'a>>,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (status, outcome) = match self.ctx.in_flight.cut_reason() {
            Some(Cut::DrainTimedOut) => (503, Outcome::DrainTimedOut),
            Some(why) => (499, why.outcome()),
            None => (499, Outcome::ClientClosed),
        };
        self.rule
            .metrics(&self.ctx.shared.metrics)
            .record(status, self.start.elapsed());
        if let Some(mut line) = self.line.take() {
            line.status = status;
            line.write(outcome, 0, None);
        }
    }
}

fn unmatched(
    ctx: &ConnCtx,
    request: &Request<Incoming>,
    host: &str,
    start: Instant,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let status = response.status().as_u16();
    ctx.shared
        .metrics
        .unmatched
        .get_or_create(&StatusLabels { status })
        .inc();
    info!(
        target: "access",
        remote = %ctx.remote,
        method = %request.method(),
        host = ?host,
        path = ?request.uri().path(),
        status,
        route = "-",
        micros = micros_since(start),
        outcome = "complete",
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn of two arguments returns.
    fn future_size<A, B, F: Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_request_future_stays_small() {
        // hyper keeps one of these per HTTP/1.1 connection and spawns one per HTTP/2 stream;
        // it was 186 KiB while rare branches (handshakes, upgrades, buffering) were held
        // inline and futures awaited by value were stored twice.
        let size = future_size(handle);
        assert!(size < 16 * 1024, "a request's future takes {size} bytes");
    }
}
