//! Body types of the proxy: [`ReqBody`] (what goes upstream: the client's streaming body, or a
//! buffered copy for retries and mirrors) and [`ProxyBody`] (what goes downstream: a local
//! answer, or the upstream body, which hands its keep-alive connection back to the pool when it
//! ends).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::access::{AccessLine, Outcome};
use super::conn_limits::StallTimer;
use crate::backend::ServiceBackend;
use crate::backend::h1::{BodyEvent, BodyReader};
use crate::backend::pool::{EndpointPool, PoolReturn};
use crate::route::Rule;

/// Errors of a response body (hyper's, or the lean client's I/O errors).
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The route's request or backendRequest timeout ran out while the response body was still
/// streaming: the status line is gone already, so the only way to say so is to cut the
/// response short.
#[derive(Debug, thiserror::Error)]
#[error("the request or backendRequest timeout ran out while the response body was streaming")]
pub(crate) struct RequestTimedOut;

/// Reading the client's request body failed (a malformed chunk, the client gone midway) or
/// stalled. [`ClientBody`] yields its errors as this type so that the upstream client's
/// error, which carries it as its cause, tells a client fault (400, or 408 for a stall) from
/// an upstream one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    /// The body could not be read.
    #[error("reading the request body: {0}")]
    Read(#[source] hyper::Error),
    /// The client sent nothing more for the client body timeout.
    #[error("the client sent no request body bytes for {0:?}")]
    Stalled(Duration),
}

/// The [`ClientBodyError`] among `error` and its causes, if any.
pub(crate) fn client_body_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e ClientBodyError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<ClientBodyError>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// What the exchange knows of a streamed request body while it goes upstream, shared with
/// [`ReqBody::Incoming`]:
/// - how it failed, if it did: hyper's HTTP/2 client resets the stream without keeping the
///   body's error as a cause, so this is how the exchange tells the client's fault (400,
///   408) from the upstream's;
/// - when it last made progress, and whether the last read waited on the client: the
///   default response timeout counts from the last progress, and when it runs out while
///   the gateway waits on the client, the client is the one late (408, not 504);
/// - whether the response head has arrived, which stops the client body timeout.
#[derive(Debug)]
pub(crate) struct BodyState {
    base: tokio::time::Instant,
    /// Milliseconds after `base` of the last frame read.
    progress_ms: AtomicU64,
    waiting_on_client: AtomicBool,
    outcome: AtomicU8,
}

/// No failure, no answer yet.
const OUTCOME_NONE: u8 = 0;
/// The body could not be read.
const OUTCOME_FAILED: u8 = 1;
/// The body stalled for the client body timeout.
const OUTCOME_STALLED: u8 = 2;
/// The response head arrived.
const OUTCOME_ANSWERED: u8 = 3;

impl BodyState {
    /// A body that starts now.
    pub(crate) fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            progress_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            outcome: AtomicU8::new(OUTCOME_NONE),
        }
    }

    /// When the body last made progress (a frame read), or started.
    pub(crate) fn last_progress(&self) -> tokio::time::Instant {
        self.base + Duration::from_millis(self.progress_ms.load(Ordering::Relaxed))
    }

    /// Whether the last read of the body waited on the client (rather than the body not
    /// being read, which is the backend not taking it).
    pub(crate) fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// `Some(stalled)` when reading the body failed: stalled for the client body timeout, or
    /// not readable.
    pub(crate) fn failure(&self) -> Option<bool> {
        match self.outcome.load(Ordering::Relaxed) {
            OUTCOME_FAILED => Some(false),
            OUTCOME_STALLED => Some(true),
            _ => None,
        }
    }

    /// The response head arrived: the client body timeout no longer applies.
    pub(crate) fn answered(&self) {
        let _ = self.outcome.compare_exchange(
            OUTCOME_NONE,
            OUTCOME_ANSWERED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn is_answered(&self) -> bool {
        self.outcome.load(Ordering::Relaxed) == OUTCOME_ANSWERED
    }

    /// Records what a read of the body returned.
    fn polled(&self, polled: &Poll<Option<Result<Frame<Bytes>, ClientBodyError>>>) {
        match polled {
            Poll::Pending => self.waiting_on_client.store(true, Ordering::Relaxed),
            Poll::Ready(Some(Err(error))) => {
                let outcome = match error {
                    ClientBodyError::Read(_) => OUTCOME_FAILED,
                    ClientBodyError::Stalled(_) => OUTCOME_STALLED,
                };
                self.outcome.store(outcome, Ordering::Relaxed);
            }
            Poll::Ready(_) => {
                let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.progress_ms.store(ms, Ordering::Relaxed);
                self.waiting_on_client.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// The client's request body, with the client body timeout: a client that sends nothing
/// more of a body for the limit fails it ([`ClientBodyError::Stalled`], 408), so a slow or
/// abandoned upload does not hold a backend connection (nginx's `client_body_timeout`).
#[derive(Debug)]
pub(crate) struct ClientBody {
    body: Incoming,
    stall: StallTimer,
    /// Chunks already read (while trying to buffer the body), sent before the rest.
    read_ahead: VecDeque<Bytes>,
}

impl ClientBody {
    /// `body`, failed once it has sent nothing for `timeout` (`None`: never).
    pub(crate) fn new(body: Incoming, timeout: Option<Duration>) -> Self {
        Self {
            body,
            stall: StallTimer::new(timeout),
            read_ahead: VecDeque::new(),
        }
    }

    /// Turns the timeout off for the rest of the body.
    fn stop_timer(&mut self) {
        self.stall = StallTimer::new(None);
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.read_ahead.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if this.stall.expired(cx, polled.is_ready()) {
            let limit = this.stall.limit().unwrap_or_default();
            return Poll::Ready(Some(Err(ClientBodyError::Stalled(limit))));
        }
        polled.map(|frame| frame.map(|result| result.map_err(ClientBodyError::Read)))
    }

    fn is_end_stream(&self) -> bool {
        self.read_ahead.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self.read_ahead.iter().map(|c| c.len() as u64).sum();
        let rest = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

/// What an upstream response body that is still streaming when the head goes out reports
/// to when it ends: the backend and rule metrics if it fails midway (the upstream closed or
/// reset, a timeout ran out), and the request's single access log line in any case.
#[derive(Debug)]
pub(crate) struct AbortWatch {
    /// The rule that served the request.
    pub(crate) rule: Arc<Rule>,
    /// The backend the body came from.
    pub(crate) backend: Arc<ServiceBackend>,
    /// The access log line, written when the body ends (none when the access log is off).
    pub(crate) log: Option<AccessLine<'static>>,
    /// Body bytes streamed so far.
    pub(crate) body_bytes: u64,
}

impl AbortWatch {
    fn aborted(self, error: &BodyError) {
        self.backend.metrics.record_body_error();
        // The rule's handles exist by now: the handler records the head before the body flows.
        if let Some(metrics) = self.rule.metrics.get() {
            metrics.record_aborted();
        }
        if let Some(line) = self.log {
            let error: &(dyn std::error::Error + 'static) = &**error;
            line.write(Outcome::Aborted, self.body_bytes, Some(error));
        }
    }

    fn ended(self, outcome: Outcome) {
        if let Some(line) = self.log {
            line.write(outcome, self.body_bytes, None);
        }
    }
}

/// A request body sent upstream.
#[derive(Debug)]
pub(crate) enum ReqBody {
    /// The client's body, streamed, with what the exchange tracks of it ([`BodyState`]).
    Incoming(ClientBody, Option<Arc<BodyState>>),
    /// A buffered body (retries and mirrors resend it).
    Full(Option<Bytes>),
}

/// A response body sent downstream.
#[derive(Debug)]
pub(crate) struct ProxyBody {
    kind: Kind,
    /// When the route's request timeout ends the whole exchange, body included (boxed: only
    /// routes with a timeout pay for the timer).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Records the response as aborted if the body fails (set for upstream bodies that are
    /// still streaming when the head goes out).
    watch: Option<Box<AbortWatch>>,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        /// Returned to the pool once the body ended; dropped (closing the connection) if the
        /// body is abandoned midway.
        pool_return: Option<PoolReturn>,
    },
    /// A body the lean HTTP/1.1 client reads; its connection goes back to `pool` at the end.
    Lean {
        reader: Box<BodyReader>,
        pool: Arc<EndpointPool>,
    },
}

// === impl ReqBody ===

impl ReqBody {
    /// A buffered body.
    pub(crate) fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self::Full(None)
        } else {
            Self::Full(Some(bytes))
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            Self::Incoming(body, None) => Pin::new(body).poll_frame(cx),
            Self::Incoming(body, Some(state)) => {
                if state.is_answered() {
                    body.stop_timer();
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                state.polled(&polled);
                polled
            }
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(body, _) => body.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(body, _) => body.size_hint(),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

// === impl ProxyBody ===

impl ProxyBody {
    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            deadline: None,
            watch: None,
        }
    }

    /// A local answer.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full(if bytes.is_empty() { None } else { Some(bytes) }),
            deadline: None,
            watch: None,
        }
    }

    /// An upstream body; `pool_return` goes back to its pool when the body ends.
    pub(crate) fn upstream(body: Incoming, pool_return: Option<PoolReturn>) -> Self {
        let mut this = Self {
            kind: Kind::Upstream { body, pool_return },
            deadline: None,
            watch: None,
        };
        this.release_if_done();
        this
    }

    /// A body read by the lean HTTP/1.1 client.
    pub(crate) fn lean(reader: BodyReader, pool: Arc<EndpointPool>) -> Self {
        Self {
            kind: Kind::Lean {
                reader: Box::new(reader),
                pool,
            },
            deadline: None,
            watch: None,
        }
    }

    /// Cuts the body short at `deadline`, or at an earlier deadline it already has (the
    /// route's request and backendRequest timeouts cover the whole exchange, as the Gateway
    /// API asks, not only the wait for the response head). An abandoned upstream connection is
    /// closed, not pooled.
    pub(crate) fn with_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        if !self.is_end_stream() {
            match &mut self.deadline {
                Some(existing) if existing.deadline() <= deadline => {}
                Some(existing) => existing.as_mut().reset(deadline),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self
    }

    /// Whether the body still has to come from upstream (and so can fail midway); a body
    /// already complete in memory (a local answer, a small response the lean client read
    /// whole) cannot.
    pub(crate) fn is_streaming(&self) -> bool {
        match &self.kind {
            Kind::Full(_) => false,
            Kind::Upstream { body, .. } => !body.is_end_stream(),
            Kind::Lean { reader, .. } => !reader.is_done(),
        }
    }

    /// Records the response as aborted (access log, metrics) if the body fails from here on.
    pub(crate) fn watch(&mut self, watch: AbortWatch) {
        self.watch = Some(Box::new(watch));
    }

    /// Whether the access log line waits for the end of this body (a watched body still
    /// streaming); if not, the caller writes it at once.
    pub(crate) fn defers_log(&self) -> bool {
        self.watch.is_some() && !self.is_end_stream_inner()
    }

    /// Defers `line` to the end of the body (see [`Self::defers_log`]).
    pub(crate) fn defer_log(&mut self, line: AccessLine<'static>) {
        if let Some(watch) = &mut self.watch {
            watch.log = Some(line);
        }
    }

    /// Hands the connection back as soon as the upstream body is complete: hyper's server stops
    /// polling a body once `is_end_stream` is true, so waiting for `None` could leak it.
    fn release_if_done(&mut self) {
        if let Kind::Upstream { body, pool_return } = &mut self.kind
            && body.is_end_stream()
            && let Some(pool_return) = pool_return.take()
        {
            pool_return.release();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = this.poll_body(cx);
        match polled {
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                // Dropping the upstream side closes its connection.
                this.kind = Kind::Full(None);
                this.deadline = None;
                let error: BodyError = Box::new(RequestTimedOut);
                if let Some(watch) = this.watch.take() {
                    watch.aborted(&error);
                }
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.deadline = None;
                if let Some(watch) = this.watch.take() {
                    watch.ended(Outcome::Complete);
                }
                polled
            }
            Poll::Ready(Some(Err(error))) => {
                this.deadline = None;
                if let Some(watch) = this.watch.take() {
                    watch.aborted(&error);
                }
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(watch) = &mut this.watch
                    && let Some(data) = frame.data_ref()
                {
                    watch.body_bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_end_stream_inner()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Lean { reader, .. } => match reader.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

/// hyper stops polling a body once `is_end_stream` is true, and drops one whose client went
/// away: the watch learns how the body ended here when polling did not tell it.
impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.ended(if self.is_end_stream_inner() {
                Outcome::Complete
            } else {
                Outcome::ClientClosed
            });
        }
    }
}

impl ProxyBody {
    /// Ends the body's access log line with `outcome`: the gateway is about to drop it (the
    /// send timeout, the connection's or its HTTP/2 stream's ([`super::stream_stall`]), or a
    /// drain that timed out), which closes its upstream connection.
    pub(crate) fn end_with(&mut self, outcome: Outcome) {
        if let Some(watch) = self.watch.take() {
            watch.ended(outcome);
        }
    }

    fn is_end_stream_inner(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Lean { reader, .. } => reader.is_done(),
        }
    }

    /// The next frame of the body itself (the deadline aside).
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self;
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, pool_return } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(pool_return) = pool_return.take() {
                            pool_return.release();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) => this.release_if_done(),
                    // An error poisons the connection: drop it instead of pooling it.
                    Poll::Ready(Some(Err(_))) => *pool_return = None,
                    Poll::Pending => {}
                }
                polled.map(|frame| frame.map(|result| result.map_err(BodyError::from)))
            }
            Kind::Lean { reader, pool } => {
                let event = match ready!(reader.poll_frame(cx)) {
                    Ok(event) => event,
                    Err(error) => return Poll::Ready(Some(Err(error.into()))),
                };
                Poll::Ready(match event {
                    BodyEvent::Data(bytes) => {
                        // Hand the connection back at once when this was the last piece:
                        // hyper stops polling a body whose `is_end_stream` is true.
                        if reader.remaining() == Some(0)
                            && let Poll::Ready(Ok(BodyEvent::End(Some(conn)))) =
                                reader.poll_frame(cx)
                        {
                            pool.push_lean(conn);
                        }
                        Some(Ok(Frame::data(bytes)))
                    }
                    BodyEvent::Trailers(trailers) => Some(Ok(Frame::trailers(trailers))),
                    BodyEvent::End(conn) => {
                        if let Some(conn) = conn {
                            pool.push_lean(conn);
                        }
                        None
                    }
                })
            }
        }
    }
}

/// Reads a body into memory, failing once it exceeds `limit` bytes.
pub(crate) async fn buffer_or_stream(
    mut body: ClientBody,
    limit: usize,
) -> Result<Buffered, CollectError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| match error {
            ClientBodyError::Stalled(_) => CollectError::Stalled(error.to_string()),
            ClientBodyError::Read(_) => CollectError::Read(error.to_string()),
        })?;
        // Trailers of a request body are dropped when it is buffered, as before.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        total += chunk.len();
        chunks.push(chunk);
        if total > limit {
            // Too large to keep for a resend: the request goes out once, streamed, with what
            // was read first.
            body.read_ahead.extend(chunks);
            return Ok(Buffered::Streaming(body));
        }
    }
    Ok(Buffered::Whole(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut whole = bytes::BytesMut::with_capacity(total);
            for chunk in chunks {
                whole.extend_from_slice(&chunk);
            }
            whole.freeze()
        }
    }))
}

/// A request body [`buffer_or_stream`] read.
#[derive(Debug)]
pub(crate) enum Buffered {
    /// All of it (retries and mirrors can resend it).
    Whole(Bytes),
    /// Longer than the limit: the rest of it, after the chunks already read.
    Streaming(ClientBody),
}

/// Why a body could not be buffered.
#[derive(Debug)]
pub(crate) enum CollectError {
    /// The client's body failed.
    Read(String),
    /// The client's body stalled for the client body timeout.
    Stalled(String),
}
