//! Bounds on downstream connections: the process-wide connection cap ([`ConnectionCap`]),
//! requests in flight per connection for the idle timeout ([`InFlight`], [`TrackedBody`]),
//! the send timeout on writes a client does not read ([`StallTimer`]), and a log rate limit
//! for events that can repeat thousands of times a second ([`LogEvery`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::access::Outcome;
use super::body::{BodyError, ProxyBody};

/// Times an operation that is blocked: armed when it returns `Pending`, disarmed by any
/// progress, and once it has been blocked for `limit`, the operation fails. nginx's
/// `send_timeout` on writes to a client (a client that stops reading its response, a full
/// socket buffer, is dropped after the limit, while a slow reader that keeps making progress
/// is not; a response merely slow upstream, nothing to write, is not affected) and its
/// `client_body_timeout` on reads of a request body.
#[derive(Debug)]
pub(crate) struct StallTimer {
    limit: Option<Duration>,
    /// Allocated the first time a write blocks, then reused.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl StallTimer {
    /// A timer for `limit`; `None` never fires.
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// Passes `polled` through, except that a `Pending` lasting `limit` becomes `TimedOut`.
    pub(crate) fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let progressed = polled.is_ready();
        if self.expired(cx, progressed) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the send timeout",
            )));
        }
        polled
    }

    /// To call after each poll of the timed operation, `progressed` telling whether it was
    /// ready: whether it has now been pending for the limit (once; the timer then disarms).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>, progressed: bool) -> bool {
        if progressed {
            self.armed = false;
            return false;
        }
        let Some(limit) = self.limit else {
            return false;
        };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if !self.armed {
                    sleep.as_mut().reset(tokio::time::Instant::now() + limit);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(limit))),
        };
        self.armed = true;
        if sleep.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return true;
        }
        false
    }

    /// The limit it enforces.
    pub(crate) fn limit(&self) -> Option<Duration> {
        self.limit
    }
}

/// How many downstream connections the process holds, and how many it may.
#[derive(Debug)]
pub(crate) struct ConnectionCap {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted connection; frees its place in the cap when dropped.
#[derive(Debug)]
pub(crate) struct ConnSlot(Arc<AtomicUsize>);

/// Requests of one connection whose response has not ended yet, and since when it had none.
#[derive(Debug)]
pub(crate) struct InFlight {
    base: Instant,
    active: AtomicUsize,
    /// Milliseconds after `base` at which `active` last dropped to 0.
    idle_since_ms: AtomicU64,
    /// Whether a timeout already closed (and counted) the connection.
    timed_out: AtomicBool,
    /// Why the gateway is closing it, as a [`Cut`] (the requests it cuts say so in their
    /// access log lines); 0 while it is not.
    cut: AtomicU8,
}

/// Why the gateway closes a connection with requests still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cut {
    /// The client read too little for the send timeout.
    SendTimedOut = 1,
    /// Its port's drain timed out (shutdown, or the port removed or rotated).
    DrainTimedOut = 2,
}

impl Cut {
    /// The `outcome` of the responses it cuts.
    pub(crate) fn outcome(self) -> Outcome {
        match self {
            Self::SendTimedOut => Outcome::SendTimedOut,
            Self::DrainTimedOut => Outcome::DrainTimedOut,
        }
    }
}

/// One request in flight; dropped when its response body ended or was abandoned.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<InFlight>);

/// A response body that keeps its request counted as in flight until the body is dropped.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: ProxyBody,
    guard: RequestGuard,
}

/// Lets through at most one log line per interval and counts the ones held back.
#[derive(Debug)]
pub(crate) struct LogEvery {
    base: Instant,
    interval_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

// === impl ConnectionCap ===

impl ConnectionCap {
    /// A cap of `max` connections (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more connection, or `None` at the cap.
    pub(crate) fn try_acquire(&self) -> Option<ConnSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnSlot(Arc::clone(&self.open)))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl InFlight ===

impl InFlight {
    /// A connection with no request yet (idle since now).
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            cut: AtomicU8::new(0),
        })
    }

    /// Whether this is the first timeout to close the connection (an idle close and then a
    /// send timeout in its grace period count once).
    pub(crate) fn first_timeout(&self) -> bool {
        !self.timed_out.swap(true, Ordering::AcqRel)
    }

    /// Records why the gateway is closing the connection (the first reason stays).
    pub(crate) fn cut(&self, why: Cut) {
        let _ = self
            .cut
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Why the gateway is closing the connection, if it is.
    pub(crate) fn cut_reason(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            1 => Some(Cut::SendTimedOut),
            2 => Some(Cut::DrainTimedOut),
            _ => None,
        }
    }

    /// Counts a request as in flight until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// When the connection will have been idle for `timeout`, or `None` while a request is in
    /// flight.
    pub(crate) fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.base + since + timeout)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let in_flight = &self.0;
        let now = u64::try_from(in_flight.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count drops, so a reader that sees 0 sees this time.
        if in_flight.active.load(Ordering::Acquire) == 1 {
            in_flight.idle_since_ms.store(now, Ordering::Release);
        }
        in_flight.active.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl TrackedBody ===

impl TrackedBody {
    /// `inner`, counted as in flight until dropped.
    pub(crate) fn new(inner: ProxyBody, guard: RequestGuard) -> Self {
        Self { inner, guard }
    }

    /// Drops the body because the client took too little of it for the send timeout.
    pub(crate) fn end_send_timed_out(mut self) {
        self.inner.end_with(Outcome::SendTimedOut);
    }
}

/// A body dropped because the gateway closed its connection (the send timeout, a drain that
/// timed out) says so in its access log line, rather than that the client went away.
impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(why) = self.guard.0.cut_reason() {
            self.inner.end_with(why.outcome());
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl LogEvery ===

impl LogEvery {
    /// At most one line per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            base: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub(crate) fn ready(&self) -> Option<u64> {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Acquire);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_admits_up_to_max_and_frees_on_drop() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_acquire();
        let b = cap.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(cap.try_acquire().is_none());
        drop(a);
        assert!(cap.try_acquire().is_some());
    }

    #[test]
    fn a_connection_is_counted_as_timed_out_once() {
        let in_flight = InFlight::new();
        assert!(in_flight.first_timeout());
        assert!(!in_flight.first_timeout());
    }

    #[test]
    fn idle_deadline_only_without_requests() {
        let in_flight = InFlight::new();
        let timeout = Duration::from_secs(60);
        assert!(in_flight.idle_deadline(timeout).is_some());
        let first = in_flight.start();
        let second = in_flight.start();
        assert!(in_flight.idle_deadline(timeout).is_none());
        drop(first);
        assert!(in_flight.idle_deadline(timeout).is_none());
        drop(second);
        assert!(in_flight.idle_deadline(timeout).is_some());
    }

    #[test]
    fn log_every_counts_held_back_lines() {
        let log = LogEvery::new(Duration::from_secs(3600));
        assert_eq!(log.ready(), Some(0));
        assert_eq!(log.ready(), None);
        assert_eq!(log.ready(), None);
        assert_eq!(log.suppressed.load(Ordering::Acquire), 2);
    }
}
