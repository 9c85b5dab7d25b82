//! DNS over TCP (RFC 7766): length-prefixed queries answered in order on each connection, with
//! the bounds a server exposed to the Internet needs.
//!
//! **Why our own loop, not hickory's:** hickory's TCP server takes every connection it is
//! offered, so a single client holding idle connections used up the process's file
//! descriptors, and with them TCP DNS, the admin API and new agent or peer connections; on
//! `EMFILE` its accept loop retries at once; and it logs two INFO lines per query.
//!
//! Bounds (RFC 7766 §6.2.2, as BIND's `tcp-clients`, Knot's `tcp-max-clients` and PowerDNS's
//! `max-tcp-connections-per-client` do):
//! - at most `tcp_max_connections` open connections, and `tcp_max_connections_per_client` from
//!   one client address; a connection past either is closed at once and counted;
//! - a whole query (length and message) must arrive within the idle timeout, counted from the
//!   previous answer or the accept, so trickling bytes does not keep a connection;
//! - an answer the client does not read within the idle timeout closes the connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How long the accept loop waits after an accept error (out of file descriptors) before
/// trying again, instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The largest query read over TCP.
const MAX_QUERY: usize = 4096;

/// Buffers larger than this after a large answer are given back.
const KEEP_BUFFER: usize = 4096;

/// How often a refusal is logged at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds on TCP connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Time allowed for a whole query, and for the client to read an answer.
    pub(crate) idle: Duration,
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Open connections from one client address at most.
    pub(crate) max_per_client: usize,
}

/// What the connections report to `/metrics`.
#[derive(Clone, Debug, Default)]
pub(crate) struct TcpMetrics {
    /// Open connections.
    pub(crate) open: Gauge,
    /// Connections closed at once at the total cap.
    pub(crate) refused_total: Counter,
    /// Connections closed at once at the per-client cap.
    pub(crate) refused_client: Counter,
    /// Connections closed because a query did not arrive whole, or an answer was not read,
    /// within the idle timeout.
    pub(crate) timed_out: Counter,
}

/// Answers one query message; `false` when nothing is to be sent back.
pub(crate) trait Answer: Send + Sync + 'static {
    /// Writes the answer to `query` from `src` into `out` (without the length prefix).
    fn answer(&self, query: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool;
}

/// Open connections, in total and per client address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// A connection's place in [`Counts`], given back when it closes.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    client: IpAddr,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
        self.open.dec();
    }
}

/// Why a connection was not admitted.
enum Refusal {
    Total,
    Client,
}

/// Serves `listener` until `stop` turns true: connections then finish the query they are
/// answering and close.
pub(crate) async fn serve<A: Answer>(
    listener: TcpListener,
    answer: Arc<A>,
    limits: TcpLimits,
    metrics: TcpMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let (stream, src) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "dns tcp accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match admit(&counts, client_key(src.ip()), limits, &metrics.open) {
            Ok(slot) => slot,
            Err(refusal) => {
                let (counter, cap, what) = match refusal {
                    Refusal::Total => (&metrics.refused_total, limits.max_connections, "total"),
                    Refusal::Client => {
                        (&metrics.refused_client, limits.max_per_client, "per-client")
                    }
                };
                counter.inc();
                let now = Instant::now();
                if last_refusal_log.is_none_or(|at| now - at >= REFUSAL_LOG_INTERVAL) {
                    last_refusal_log = Some(now);
                    warn!(%src, cap, "dns tcp connection refused at the {what} cap (logged at most every 10 s; see meridian_dns_tcp_refused)");
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            src,
            Arc::clone(&answer),
            limits.idle,
            metrics.timed_out.clone(),
            stop.clone(),
            slot,
        ));
    }
}

/// The unit the per-client cap counts: an IPv4 address, or an IPv6 /64 (one host controls at
/// least a /64, so counting its addresses one by one would not bound it).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

fn admit(
    counts: &Arc<Mutex<Counts>>,
    client: IpAddr,
    limits: TcpLimits,
    open: &Gauge,
) -> Result<Slot, Refusal> {
    let mut guard = counts.lock().unwrap_or_else(|e| e.into_inner());
    if guard.total >= limits.max_connections {
        return Err(Refusal::Total);
    }
    let mine = guard.per_client.entry(client).or_insert(0);
    if *mine >= limits.max_per_client {
        return Err(Refusal::Client);
    }
    *mine += 1;
    guard.total += 1;
    open.inc();
    Ok(Slot {
        counts: Arc::clone(counts),
        client,
        open: open.clone(),
    })
}

/// One connection: queries answered in order until the client closes, a query does not
/// arrive whole in time, an answer is not read in time, or the server stops.
async fn connection<A: Answer>(
    mut stream: TcpStream,
    src: SocketAddr,
    answer: Arc<A>,
    idle: Duration,
    timed_out: Counter,
    mut stop: watch::Receiver<bool>,
    _slot: Slot,
) {
    let mut query = Vec::with_capacity(512);
    // Room for the length prefix, then the answer.
    let mut out = Vec::with_capacity(1024);
    let mut answer_buf = Vec::with_capacity(1024);
    loop {
        let deadline = Instant::now() + idle;
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, read_query(&mut stream, &mut query)) => read,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match read {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return,
            Ok(Err(error)) => {
                debug!(%src, %error, "dns tcp read failed");
                return;
            }
            Err(_) => {
                timed_out.inc();
                debug!(%src, "dns tcp query not received in time; closing");
                return;
            }
        }
        answer_buf.clear();
        if !answer.answer(&query, src, &mut answer_buf) {
            continue;
        }
        let Ok(len) = u16::try_from(answer_buf.len()) else {
            warn!(%src, len = answer_buf.len(), "dns tcp answer longer than 65535 bytes; closing");
            return;
        };
        out.clear();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&answer_buf);
        let written = tokio::time::timeout(idle, stream.write_all(&out)).await;
        if out.capacity() > KEEP_BUFFER {
            out = Vec::with_capacity(1024);
            answer_buf = Vec::with_capacity(1024);
        }
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                debug!(%src, %error, "dns tcp write failed");
                return;
            }
            Err(_) => {
                timed_out.inc();
                debug!(%src, "dns tcp answer not read in time; closing");
                return;
            }
        }
    }
}

/// Reads one length-prefixed message into `query`; `false` at a clean end of stream between
/// messages.
async fn read_query(stream: &mut TcpStream, query: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(error) => return Err(error),
    }
    let len = usize::from(u16::from_be_bytes(len));
    // No query we answer comes near this (a question and an OPT record); refusing larger ones
    // keeps a connection's buffer small.
    if len > MAX_QUERY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte query (at most {MAX_QUERY})"),
        ));
    }
    query.clear();
    query.resize(len, 0);
    stream.read_exact(query).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every query with its own bytes reversed, and nothing for an empty one.
    struct Reverse;

    impl Answer for Reverse {
        fn answer(&self, query: &[u8], _: SocketAddr, out: &mut Vec<u8>) -> bool {
            out.extend(query.iter().rev());
            !query.is_empty()
        }
    }

    async fn start(limits: TcpLimits) -> (SocketAddr, TcpMetrics, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = TcpMetrics::default();
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(serve(
            listener,
            Arc::new(Reverse),
            limits,
            metrics.clone(),
            stop_rx,
        ));
        (addr, metrics, stop)
    }

    fn limits(max_connections: usize, max_per_client: usize) -> TcpLimits {
        TcpLimits {
            idle: Duration::from_secs(10),
            max_connections,
            max_per_client,
        }
    }

    async fn ask(stream: &mut TcpStream, query: &[u8]) -> Vec<u8> {
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.unwrap();
        answer
    }

    /// Whether the server closed `stream` (reads end) within a second.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn pipelined_queries_are_answered_in_order() {
        let (addr, _, _stop) = start(limits(10, 10)).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Three queries in one write, the second split from its length.
        stream
            .write_all(b"\x00\x03abc\x00\x02de\x00\x01f")
            .await
            .unwrap();
        let mut answers = vec![0u8; 5 + 4 + 3];
        stream.read_exact(&mut answers).await.unwrap();
        assert_eq!(answers, b"\x00\x03cba\x00\x02ed\x00\x01f");
        // An empty query gets no answer; the connection stays usable.
        stream.write_all(b"\x00\x00").await.unwrap();
        assert_eq!(ask(&mut stream, b"xyz").await, b"zyx");
    }

    #[tokio::test]
    async fn connections_past_the_per_client_cap_are_closed_and_counted() {
        let (addr, metrics, _stop) = start(limits(100, 2)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut first, b"1").await, b"1");
        assert_eq!(ask(&mut second, b"2").await, b"2");
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut third).await, "a third connection is refused");
        assert_eq!(metrics.refused_client.get(), 1);
        assert_eq!(metrics.open.get(), 2);
        // Closing one makes room again.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.open.get() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut fourth, b"4").await, b"4");
    }

    #[tokio::test]
    async fn connections_past_the_total_cap_are_closed_and_counted() {
        let (addr, metrics, _stop) = start(limits(1, 10)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut first, b"1").await, b"1");
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut second).await);
        assert_eq!(metrics.refused_total.get(), 1);
    }

    #[tokio::test]
    async fn a_query_trickled_slower_than_the_idle_timeout_is_cut() {
        let (addr, metrics, _stop) = start(TcpLimits {
            idle: Duration::from_millis(300),
            ..limits(10, 10)
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A 100-byte query, one byte every 100 ms: each byte comes well within the idle
        // timeout, the whole query (10 s) never does.
        stream.write_all(b"\x00\x64").await.unwrap();
        let mut cut = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte));
            if matches!(read.await, Ok(Ok(0) | Err(_))) || stream.write_all(b"x").await.is_err() {
                cut = true;
                break;
            }
        }
        assert!(cut, "the trickled query kept its connection");
        assert_eq!(metrics.timed_out.get(), 1);
    }

    #[test]
    fn the_per_client_cap_counts_an_ipv6_slash_64_as_one_client() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[tokio::test]
    async fn an_oversized_query_closes_the_connection() {
        let (addr, _, _stop) = start(limits(10, 10)).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&[0xff, 0xff]).await.unwrap();
        assert!(closed(&mut stream).await);
    }

    #[tokio::test]
    async fn stopping_closes_idle_connections() {
        let (addr, _, stop) = start(limits(10, 10)).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut stream, b"q").await, b"q");
        stop.send_replace(true);
        assert!(closed(&mut stream).await);
    }
}
