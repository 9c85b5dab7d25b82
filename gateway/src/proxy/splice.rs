//! The byte pipe of TLSRoute connections (passthrough and terminated) and of upgraded
//! (WebSocket) connections: both directions copied
//! until either side closes, and closed when no byte has moved either way for the idle
//! timeout (so connections a client abandons without closing do not pile up) or when the port
//! drains (a raw byte stream has no graceful way to finish, so it is closed).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::drain::{DrainReceiver, Stage, reached};

/// Why a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A side closed or failed.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The port drained (removed, shutting down, or its connections rotated).
    Drained,
}

/// Copies between `client` and `upstream` until one side closes (each half-close is passed
/// on), an error, `idle` without traffic, or `drain`.
pub(crate) async fn splice<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    drain: DrainReceiver,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Tracked {
        inner: client,
        start,
        activity: Arc::clone(&activity),
    };
    let mut upstream = Tracked {
        inner: upstream,
        start,
        activity: Arc::clone(&activity),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    // A raw stream has no graceful way to finish: it closes as soon as the drain starts.
    let drained = reached(drain, Stage::Draining);
    tokio::pin!(drained);
    // Checked a few times per idle period: precise to a quarter of it, and no timer is reset
    // per read.
    let tick = (idle / 4).max(Duration::from_millis(10));
    loop {
        let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = last + idle;
        if Instant::now() >= deadline {
            return Ended::Idle;
        }
        tokio::select! {
            _ = &mut copy => return Ended::Closed,
            _ = &mut drained => return Ended::Drained,
            () = tokio::time::sleep_until(deadline.min(Instant::now() + tick)) => {}
        }
    }
}

/// A stream that records, in milliseconds since `start`, when it last read something.
struct Tracked<S> {
    inner: S,
    start: Instant,
    activity: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.activity.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;
    use crate::proxy::drain::signal;

    // Paused time: the clock advances only when every task waits, so a stalled machine
    // cannot stretch a 200 ms gap past the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_splice_open_and_silence_closes_it() {
        let idle = Duration::from_secs(2);
        let (client, mut client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let drain = signal();
        let drain_rx = drain.subscribe();
        let splice = tokio::spawn(splice(client, upstream, idle, drain_rx));
        // A byte every 200 ms for 3 s: longer than the idle timeout, never idle that long.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            client_peer.write_all(b"x").await.unwrap();
            let mut byte = [0; 1];
            upstream_peer.read_exact(&mut byte).await.unwrap();
        }
        assert!(!splice.is_finished(), "closed while traffic flowed");
        // Then silence: closed as idle, and the client sees EOF.
        assert_eq!(splice.await.unwrap(), Ended::Idle);
        let mut rest = Vec::new();
        assert_eq!(client_peer.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_side_that_closes_ends_the_splice() {
        let (client, client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let drain = signal();
        let drain_rx = drain.subscribe();
        let splice = tokio::spawn(splice(client, upstream, Duration::from_secs(60), drain_rx));
        drop(client_peer);
        let mut rest = Vec::new();
        upstream_peer.read_to_end(&mut rest).await.unwrap();
        drop(upstream_peer);
        assert_eq!(splice.await.unwrap(), Ended::Closed);
    }

    #[tokio::test]
    async fn a_drain_closes_both_sides() {
        let (client, mut client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let drain = signal();
        let drain_rx = drain.subscribe();
        let splice = tokio::spawn(splice(client, upstream, Duration::from_secs(60), drain_rx));
        drain.send_replace(Stage::Draining);
        assert_eq!(splice.await.unwrap(), Ended::Drained);
        let mut rest = Vec::new();
        assert_eq!(client_peer.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(upstream_peer.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
