//! The send timeout for single HTTP/2 streams.
//!
//! The connection's send timeout ([`StallTimer`](super::conn_limits::StallTimer) on its
//! socket) sees nothing when an HTTP/2 client keeps its connection going but grants one stream
//! no flow-control window: hyper then holds that stream's next chunk and stops polling its
//! body, and the upstream connection behind the body would stay held for as long as the client
//! likes (a slow-read attack multiplies that by the streams per connection). nginx applies its
//! `send_timeout` to such a stream, Envoy its `stream_idle_timeout`.
//!
//! Each HTTP/2 response body still streaming from upstream is [watched](StreamStalls::watch):
//! it records when it handed out a data frame and was not asked for the next one since (the
//! frame waits for window). Frames go out in pieces of at most [`MAX_PIECE`], so the wait
//! measures the client taking 16 KiB, not a whole upstream read of up to hundreds of
//! kilobytes: a client that keeps reading, however slowly, is not cut. The connection's task
//! [scans](StreamStalls::scan) its watched
//! streams on a timer; a body that has waited for the send timeout is dropped, which closes its
//! upstream connection, writes its access log line with `outcome="send_timeout"`, counts it in
//! `gateway_streams_timed_out` and stops counting the request as in flight. The stream itself is
//! reset when the client next grants it window, or goes with the connection once it is idle.
//! The connection's other streams carry on.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use super::body::BodyError;
use super::conn_limits::TrackedBody;

/// `waiting_since_ms` of a body that is not waiting for window.
const NOT_WAITING: u64 = u64::MAX;

/// The largest data frame a watched body hands out. hyper asks for the next frame as soon as
/// it has queued one, then waits until the queued one has been granted window, so the time a
/// frame waits is the time the client takes to accept the previous one.
const MAX_PIECE: usize = 16 * 1024;

/// The watched HTTP/2 streams of one connection.
#[derive(Debug)]
pub(crate) struct StreamStalls {
    base: Instant,
    limit: Duration,
    streams: Mutex<Vec<Weak<WatchedStream>>>,
    /// Whether the connection's scan timer runs. A stream watched while it does not wakes the
    /// connection's task ([`Self::take_start`]) to start it.
    scanning: AtomicBool,
    /// Set with `scanning` by the stream that asked for the timer to start.
    start: AtomicBool,
    wake_connection: Waker,
    timed_out: Counter,
}

/// One watched stream's body, shared between the stream's task (which polls it) and the
/// connection's scan (which may drop it).
#[derive(Debug)]
struct WatchedStream {
    /// Milliseconds after [`StreamStalls::base`] at which the body handed out a data frame
    /// and was not polled again since, or [`NOT_WAITING`]. Written only with `held` locked.
    waiting_since_ms: AtomicU64,
    /// `None` once the scan dropped the body or the stream ended.
    held: Mutex<Option<Held>>,
}

/// A watched body and what is left of its last frame.
#[derive(Debug)]
struct Held {
    body: TrackedBody,
    /// The rest of a frame larger than [`MAX_PIECE`], handed out before the body is polled.
    rest: Bytes,
}

/// A response body of an HTTP/2 stream whose waits for window are timed.
#[derive(Debug)]
pub(crate) struct WatchedBody {
    stream: Arc<WatchedStream>,
    stalls: Arc<StreamStalls>,
}

/// A response body as a connection serves it: counted as in flight until it ends, and for an
/// HTTP/2 stream still streaming from upstream, watched for waits for window.
#[derive(Debug)]
pub(crate) enum ConnBody {
    /// HTTP/1.x, or a body complete in memory.
    Tracked(TrackedBody),
    /// An HTTP/2 stream's body still to come from upstream.
    Watched(WatchedBody),
}

/// The error a stream's body fails with once the send timeout dropped it (hyper then resets
/// the stream).
#[derive(Debug, thiserror::Error)]
#[error("the client granted the stream no flow-control window for the send timeout")]
pub(crate) struct StreamSendTimedOut;

// === impl StreamStalls ===

impl StreamStalls {
    /// Watches for streams that wait `limit` for window; `wake_connection` wakes the
    /// connection's task when its scan timer should start; dropped streams count in
    /// `timed_out`.
    pub(crate) fn new(limit: Duration, wake_connection: Waker, timed_out: Counter) -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            limit,
            streams: Mutex::new(Vec::new()),
            scanning: AtomicBool::new(false),
            start: AtomicBool::new(false),
            wake_connection,
            timed_out,
        })
    }

    /// The send timeout it enforces.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Watches `body`, the response body of one HTTP/2 stream.
    pub(crate) fn watch(self: &Arc<Self>, body: TrackedBody) -> WatchedBody {
        let stream = Arc::new(WatchedStream {
            waiting_since_ms: AtomicU64::new(NOT_WAITING),
            held: Mutex::new(Some(Held {
                body,
                rest: Bytes::new(),
            })),
        });
        {
            let mut streams = lock(&self.streams);
            // Ended streams leave dead entries: drop them before the list grows.
            if streams.len() == streams.capacity() {
                streams.retain(|stream| stream.strong_count() > 0);
            }
            streams.push(Arc::downgrade(&stream));
        }
        if !self.scanning.swap(true, Ordering::AcqRel) {
            self.start.store(true, Ordering::Release);
            self.wake_connection.wake_by_ref();
        }
        WatchedBody {
            stream,
            stalls: Arc::clone(self),
        }
    }

    /// Whether a stream asked for the scan timer to start since the last call.
    pub(crate) fn take_start(&self) -> bool {
        self.start.swap(false, Ordering::AcqRel)
    }

    /// Drops the bodies that have waited for window for the limit. Returns when to scan
    /// next, or `None` when no watched stream is left (the timer stops until one is).
    pub(crate) fn scan(&self) -> Option<Instant> {
        let now_ms = self.now_ms();
        // At least 1 ms: a deadline of now would have the connection's timer fire at once,
        // forever.
        let limit_ms = u64::try_from(self.limit.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut next_ms = now_ms.saturating_add(limit_ms);
        let mut expired = Vec::new();
        {
            let mut streams = lock(&self.streams);
            streams.retain(|weak| {
                let Some(stream) = weak.upgrade() else {
                    return false;
                };
                let since = stream.waiting_since_ms.load(Ordering::Acquire);
                if since == NOT_WAITING {
                    return true;
                }
                let deadline = since.saturating_add(limit_ms);
                if deadline <= now_ms {
                    expired.push((stream, since));
                    return false;
                }
                next_ms = next_ms.min(deadline);
                true
            });
            if streams.is_empty() && expired.is_empty() {
                self.scanning.store(false, Ordering::Release);
                return None;
            }
        }
        for (stream, since) in expired {
            let mut held = lock(&stream.held);
            // The client may have granted window since the load above: keep watching it.
            if stream.waiting_since_ms.load(Ordering::Acquire) != since {
                drop(held);
                lock(&self.streams).push(Arc::downgrade(&stream));
                continue;
            }
            if let Some(taken) = held.take() {
                drop(held);
                self.timed_out.inc();
                taken.body.end_send_timed_out();
            }
        }
        Some(self.base + Duration::from_millis(next_ms))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves the data consistent (a flag or an Option).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl WatchedBody ===

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut held = lock(&this.stream.held);
        let Some(held) = held.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(StreamSendTimedOut))));
        };
        let waiting = &this.stream.waiting_since_ms;
        waiting.store(NOT_WAITING, Ordering::Release);
        let mut data = if held.rest.is_empty() {
            match Pin::new(&mut held.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        } else {
            std::mem::take(&mut held.rest)
        };
        if data.len() > MAX_PIECE {
            held.rest = data.split_off(MAX_PIECE);
        }
        // hyper asks for the next frame once this one is queued, and then waits until it has
        // been granted window.
        waiting.store(this.stalls.now_ms(), Ordering::Release);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.stream.held)
            .as_ref()
            .is_some_and(|held| held.rest.is_empty() && held.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = lock(&self.stream.held);
        let Some(held) = held.as_ref() else {
            return SizeHint::default();
        };
        let body = held.body.size_hint();
        let rest = held.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(body.lower().saturating_add(rest));
        if let Some(upper) = body.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

/// A stream that ends (its body complete, or the client gone) drops its body here, in its own
/// task: a scan that still holds the stream then finds nothing to time out, and the access
/// log line says how the body really ended.
impl Drop for WatchedBody {
    fn drop(&mut self) {
        let held = lock(&self.stream.held).take();
        drop(held);
    }
}

// === impl ConnBody ===

impl Body for ConnBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Tracked(body) => Pin::new(body).poll_frame(cx),
            Self::Watched(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Tracked(body) => body.is_end_stream(),
            Self::Watched(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Tracked(body) => body.size_hint(),
            Self::Watched(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::ProxyBody;
    use crate::proxy::conn_limits::InFlight;
    use http_body_util::BodyExt;
    use std::task::Wake;

    struct CountWakes(AtomicU64);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A watched body of `bytes`, counted in `in_flight`.
    fn watch_bytes(
        stalls: &Arc<StreamStalls>,
        in_flight: &Arc<InFlight>,
        bytes: &'static [u8],
    ) -> WatchedBody {
        let body = ProxyBody::full(Bytes::from_static(bytes));
        stalls.watch(TrackedBody::new(body, in_flight.start()))
    }

    fn stalls(limit: Duration) -> (Arc<StreamStalls>, Arc<CountWakes>, Counter) {
        let wakes = Arc::new(CountWakes(AtomicU64::new(0)));
        let counter = Counter::default();
        let stalls = StreamStalls::new(limit, Waker::from(Arc::clone(&wakes)), counter.clone());
        (stalls, wakes, counter)
    }

    #[tokio::test]
    async fn the_first_watched_stream_starts_the_scan_and_the_last_ended_stops_it() {
        let (stalls, wakes, _) = stalls(Duration::from_secs(60));
        let in_flight = InFlight::new();
        let a = watch_bytes(&stalls, &in_flight, b"a");
        let b = stalls.watch(TrackedBody::new(ProxyBody::empty(), in_flight.start()));
        assert_eq!(
            wakes.0.load(Ordering::Acquire),
            1,
            "one wake starts the scan"
        );
        assert!(stalls.take_start());
        assert!(!stalls.take_start());
        assert!(stalls.scan().is_some(), "streams are still watched");
        drop((a, b));
        assert!(stalls.scan().is_none(), "nothing left to watch");
        let _c = stalls.watch(TrackedBody::new(ProxyBody::empty(), in_flight.start()));
        assert_eq!(
            wakes.0.load(Ordering::Acquire),
            2,
            "a new stream restarts it"
        );
    }

    #[tokio::test]
    async fn a_body_waiting_for_window_past_the_limit_is_dropped_and_fails() {
        let (stalls, _, counter) = stalls(Duration::ZERO);
        let in_flight = InFlight::new();
        let mut body = watch_bytes(&stalls, &in_flight, b"chunk");
        // Not waiting before its first frame: the scan leaves it alone.
        stalls.scan();
        assert!(in_flight.idle_deadline(Duration::ZERO).is_none());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "chunk");
        // Handed out, never asked for more: dropped once the limit (at least 1 ms) has
        // passed, and no longer in flight.
        std::thread::sleep(Duration::from_millis(3));
        stalls.scan();
        assert_eq!(counter.get(), 1);
        assert!(in_flight.idle_deadline(Duration::ZERO).is_some());
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<StreamSendTimedOut>(), "{error}");
    }

    #[tokio::test]
    async fn large_frames_go_out_in_pieces() {
        let (stalls, _, _) = stalls(Duration::from_secs(60));
        let in_flight = InFlight::new();
        let whole = Bytes::from(vec![7u8; 2 * MAX_PIECE + 5]);
        let mut body = stalls.watch(TrackedBody::new(
            ProxyBody::full(whole.clone()),
            in_flight.start(),
        ));
        assert_eq!(body.size_hint().exact(), Some(whole.len() as u64));
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            pieces.push(data.len());
            assert_eq!(
                body.is_end_stream(),
                pieces.iter().sum::<usize>() == whole.len(),
                "ends with its last piece"
            );
        }
        assert_eq!(pieces, [MAX_PIECE, MAX_PIECE, 5]);
    }

    #[tokio::test]
    async fn a_stream_that_ended_is_not_timed_out() {
        let (stalls, _, counter) = stalls(Duration::ZERO);
        let in_flight = InFlight::new();
        let mut body = watch_bytes(&stalls, &in_flight, b"last");
        // hyper sends the last frame and drops the body without polling it again.
        let _ = body.frame().await;
        let stream = Arc::clone(&body.stream);
        drop(body);
        assert!(
            lock(&stream.held).is_none(),
            "dropped in the stream's own task"
        );
        stalls.scan();
        assert_eq!(counter.get(), 0);
    }

    #[tokio::test]
    async fn a_body_polled_again_is_not_waiting() {
        let (stalls, _, counter) = stalls(Duration::ZERO);
        let in_flight = InFlight::new();
        let mut body = watch_bytes(&stalls, &in_flight, b"chunk");
        let _ = body.frame().await;
        assert!(body.frame().await.is_none(), "the body ended");
        stalls.scan();
        assert_eq!(counter.get(), 0);
    }
}
