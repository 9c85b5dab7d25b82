//! Accept loops and connection serving for one port, and draining.
//!
//! Each bound port has a [`PortState`]: the current table (an `ArcSwap` the runtime replaces on
//! every config) and a drain signal ([`super::drain`]). Connections subscribe to the drain
//! signal; draining a port stops its accept loops, asks every connection to finish gracefully
//! (HTTP/1.1 closes after the in-flight response, HTTP/2 sends GOAWAY), waits for them up to
//! the drain timeout, and then closes the ones still open.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::task::AtomicWaker;
use http::{HeaderValue, Request, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::conn_limits::{
    ConnSlot, ConnectionCap, Cut, InFlight, LogEvery, StallTimer, TrackedBody,
};
use super::drain::{self, DrainReceiver, DrainSender, Stage};
use super::forward::forwarded_for_value;
use super::handler;
use super::shards::Shards;
use super::stream_stall::{ConnBody, StreamStalls};
use super::{passthrough, terminate};
use crate::metrics::{GatewayMetrics, PortLabels};
use crate::options::GatewayOptions;
use crate::route::{PortKind, PortTable};
use crate::tls::client_cert;
use crate::tls::client_hello::read_client_hello;
use crate::tls::prefixed::PrefixedIo;
use meridian_proto::model::gateway::ClientValidation;

/// Process-wide state every connection needs.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Metrics.
    pub(crate) metrics: GatewayMetrics,
    /// Options.
    pub(crate) options: GatewayOptions,
    http: auto::Builder<TokioExecutor>,
    /// Downstream connections over all ports and shards, against the cap.
    cap: ConnectionCap,
    /// Refusals at the cap can come thousands a second: one line per interval.
    refusal_log: LogEvery,
    /// Accept errors (`EMFILE`) repeat every backoff on every shard: one line per interval.
    accept_error_log: LogEvery,
}

/// How often a repeating connection-level warning is logged at most.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long an idle connection asked to close (HTTP/2 GOAWAY) may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// One bound port's live state.
#[derive(Debug)]
pub(crate) struct PortState {
    /// The port.
    pub(crate) port: u16,
    /// What it serves; replaced on every config.
    pub(crate) table: ArcSwap<PortTable>,
    /// The drain signal of the connections accepted since the port was bound, or since its
    /// connections were last [rotated](PortState::rotate_connections).
    drain: ArcSwap<DrainSender>,
    active: Gauge,
    refused: Counter,
    timed_out: Counter,
    streams_timed_out: Counter,
}

/// Per-connection context handed to every request.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    /// The port's state.
    pub(crate) port: Arc<PortState>,
    /// Shared state.
    pub(crate) shared: Arc<Shared>,
    /// Client address.
    pub(crate) remote: SocketAddr,
    /// The client address as an `X-Forwarded-For` element, formatted once per connection.
    pub(crate) forwarded_for: HeaderValue,
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// The listener the TLS SNI selected (requests for another listener's hosts get 421).
    pub(crate) sni_listener: Option<Arc<str>>,
    /// `X-Forwarded-Client-Cert` for the client certificate the gateway validated, computed
    /// once per connection.
    pub(crate) client_cert: Option<HeaderValue>,
    /// The connection's requests (what the ones cut short say in their access log line).
    pub(crate) in_flight: Arc<InFlight>,
    /// The connection's drain signal, which its upgraded (WebSocket) streams follow too.
    pub(crate) drain: DrainReceiver,
}

/// A port with running accept loops.
#[derive(Debug)]
pub(crate) struct BoundPort {
    /// Its live state.
    pub(crate) state: Arc<PortState>,
    /// Addresses bound.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Plain or TLS (a change of kind re-binds the port).
    pub(crate) kind: PortKind,
    /// The client certificate validation its connections were accepted under (a change
    /// rotates them).
    pub(crate) client_validation: Option<ClientValidation>,
    accept_tasks: Vec<JoinHandle<()>>,
}

// === impl Shared ===

impl Shared {
    /// Builds the hyper server settings from the options.
    pub(crate) fn new(metrics: GatewayMetrics, options: GatewayOptions) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(options.max_http1_buf.max(8192))
            .keep_alive(true);
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(options.max_h2_streams)
            .max_header_list_size(64 * 1024)
            .max_send_buf_size(256 * 1024)
            // Pings find dead peers; a peer that does not answer within the interval is gone.
            .keep_alive_interval(options.h2_keep_alive_interval)
            .keep_alive_timeout(
                options
                    .h2_keep_alive_interval
                    .unwrap_or(Duration::from_secs(20)),
            );
        let max_connections = options.effective_max_connections();
        info!(max_connections, "downstream connection cap");
        Self {
            metrics,
            options,
            http,
            cap: ConnectionCap::new(max_connections),
            refusal_log: LogEvery::new(REPEAT_LOG_INTERVAL),
            accept_error_log: LogEvery::new(REPEAT_LOG_INTERVAL),
        }
    }
}

// === impl PortState ===

impl PortState {
    /// Drains the connections open now (in-flight requests complete, then they close; those
    /// still open after `timeout` are closed), while the port keeps accepting. Used when what
    /// a connection agreed to at its handshake no longer holds, such as the client
    /// certificate validation: a client must not keep a connection the new settings would
    /// refuse.
    pub(crate) fn rotate_connections(&self, timeout: Duration) -> JoinHandle<()> {
        let old = self.drain.swap(Arc::new(drain::signal()));
        let port = self.port;
        tokio::spawn(async move { drain::run(&old, timeout, port).await })
    }

    /// New state for a port about to be bound.
    pub(crate) fn new(table: Arc<PortTable>, metrics: &GatewayMetrics) -> Self {
        let port = table.port;
        Self {
            port,
            table: ArcSwap::new(table),
            drain: ArcSwap::from_pointee(drain::signal()),
            active: metrics
                .active_connections
                .get_or_create(&PortLabels { port })
                .clone(),
            refused: metrics
                .connections_refused
                .get_or_create(&PortLabels { port })
                .clone(),
            timed_out: metrics
                .connections_timed_out
                .get_or_create(&PortLabels { port })
                .clone(),
            streams_timed_out: metrics
                .streams_timed_out
                .get_or_create(&PortLabels { port })
                .clone(),
        }
    }
}

/// Binds every address of a port once per shard (with `SO_REUSEPORT` when there are several
/// shards); on failure, nothing stays bound.
pub(crate) async fn bind(
    addrs: &[SocketAddr],
    n_shards: usize,
) -> Result<Vec<std::net::TcpListener>, (SocketAddr, std::io::Error)> {
    let mut listeners = Vec::with_capacity(addrs.len() * n_shards);
    for addr in addrs {
        for _ in 0..n_shards.max(1) {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(|e| (*addr, e))?;
            // Allows re-binding right after a previous listener on the port closed.
            socket.set_reuseaddr(true).map_err(|e| (*addr, e))?;
            if n_shards > 1 {
                // One socket per shard; still fails when another process holds the port.
                socket.set_reuseport(true).map_err(|e| (*addr, e))?;
            }
            socket.bind(*addr).map_err(|e| (*addr, e))?;
            let listener = socket.listen(4096).map_err(|e| (*addr, e))?;
            // Re-registered on its shard's event loop in `BoundPort::start`.
            listeners.push(listener.into_std().map_err(|e| (*addr, e))?);
        }
    }
    Ok(listeners)
}

// === impl BoundPort ===

impl BoundPort {
    /// Starts accept loops over already-bound listeners, socket `i` on shard `i`.
    pub(crate) fn start(
        shards: &Shards,
        listeners: Vec<std::net::TcpListener>,
        state: Arc<PortState>,
        kind: PortKind,
        shared: &Arc<Shared>,
    ) -> Self {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in listeners.iter().filter_map(|l| l.local_addr().ok()) {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        let accept_tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(index, listener)| {
                let state = Arc::clone(&state);
                let shared = Arc::clone(shared);
                shards.handle(index).spawn(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept_loop(listener, state, shared).await,
                        Err(error) => {
                            warn!(port = state.port, %error, "registering a listener failed")
                        }
                    }
                })
            })
            .collect();
        Self {
            state,
            addrs,
            kind,
            client_validation: None,
            accept_tasks,
        }
    }

    /// Stops accepting: the accept loops end and their sockets are closed when this returns,
    /// so the port can be bound again at once.
    pub(crate) async fn close(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        for task in self.accept_tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Asks every connection of the port to finish gracefully and waits for them, at most
    /// `timeout`; connections still open then are closed ([`drain::run`]).
    pub(crate) fn drain(self, timeout: Duration) -> impl Future<Output = ()> + Send + 'static {
        for task in &self.accept_tasks {
            task.abort();
        }
        let state = self.state;
        async move { drain::run(&state.drain.load_full(), timeout, state.port).await }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<PortState>, shared: Arc<Shared>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                if let Some(suppressed) = shared.accept_error_log.ready() {
                    warn!(port = state.port, %error, suppressed, "accept failed (logged at most every 10 s; `suppressed` counts the others)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At the cap the connection is closed at once rather than left in the backlog, so
        // the backlog keeps moving and the descriptors kept in reserve stay free.
        let Some(slot) = shared.cap.try_acquire() else {
            state.refused.inc();
            if let Some(suppressed) = shared.refusal_log.ready() {
                warn!(
                    port = state.port,
                    max_connections = shared.cap.max(),
                    suppressed,
                    "at the connection cap; closing new connections (logged at most every 10 s; `suppressed` counts the others)"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let drain = state.drain.load().subscribe();
        tokio::spawn(serve_connection(
            stream,
            remote,
            Arc::clone(&state),
            Arc::clone(&shared),
            drain,
            slot,
        ));
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    state: Arc<PortState>,
    shared: Arc<Shared>,
    drain: DrainReceiver,
    slot: ConnSlot,
) {
    state.active.inc();
    let held = Held {
        _slot: slot,
        _active: ActiveGuard(state.active.clone()),
    };
    let table = state.table.load_full();
    match table.kind {
        PortKind::Http => {
            // hyper waits for the first bytes (to tell HTTP/1 from HTTP/2) without a timeout,
            // and its header read timeout starts only after them.
            let mut first = [0u8; 1];
            let timeout = shared.options.first_byte_timeout;
            let peeked = drain::unless_draining(
                &drain,
                tokio::time::timeout(timeout, stream.peek(&mut first)),
            );
            let Some(peeked) = peeked.await else {
                debug!(%remote, "port draining before the first byte; closing");
                return;
            };
            match peeked {
                Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    debug!(%remote, %error, "connection failed before its first byte");
                    return;
                }
                Err(_) => {
                    state.timed_out.inc();
                    debug!(%remote, "no first byte in time; closing");
                    return;
                }
            }
            let ctx = ConnCtx {
                port: Arc::clone(&state),
                shared: Arc::clone(&shared),
                remote,
                forwarded_for: forwarded_for_value(remote),
                scheme: "http",
                sni_listener: None,
                client_cert: None,
                in_flight: InFlight::new(),
                drain,
            };
            // Boxed here, and the other long-lived states below, so that a connection waiting
            // for its first bytes holds a small task, not room for the largest state it may
            // reach (a silent connection cost about 10 KB before).
            Box::pin(serve_http(stream, held, ctx)).await;
        }
        PortKind::Tls => {
            let timeout = shared.options.tls_handshake_timeout;
            let failures = shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&PortLabels { port: state.port })
                .clone();
            // Boxed: its 4 KB read buffer would otherwise sit in every connection's task.
            let hello = Box::pin(read_client_hello(&mut stream));
            let hello = drain::unless_draining(&drain, tokio::time::timeout(timeout, hello));
            let Some(hello) = hello.await else {
                debug!(%remote, "port draining before the ClientHello; closing");
                return;
            };
            let hello = match hello {
                Ok(Ok(hello)) => hello,
                Ok(Err(error)) => {
                    failures.inc();
                    debug!(%remote, %error, "TLS ClientHello failed");
                    return;
                }
                Err(_) => {
                    failures.inc();
                    debug!(%remote, "TLS ClientHello timed out");
                    return;
                }
            };
            if table.has_passthrough
                && let Some(listener) = table.passthrough_listener(hello.sni.as_deref())
            {
                let listener = Arc::clone(listener);
                Box::pin(passthrough::run(
                    stream,
                    hello,
                    listener,
                    remote,
                    &shared.options,
                    drain,
                ))
                .await;
                return;
            }
            // A TLS listener that terminates picks its TLSRoute by SNI before the handshake,
            // so an unknown name is rejected without one (as passthrough rejects it).
            let sni = hello.sni.clone();
            let terminate_target = match table.terminate_listener(sni.as_deref()) {
                Some(listener) => match listener.find_tls(sni.as_deref()) {
                    Some(target) => Some(Arc::clone(target)),
                    None => {
                        debug!(%remote, ?sni, listener = %listener.name, "no TLSRoute for SNI; rejecting");
                        return;
                    }
                },
                None if !table.has_https => {
                    debug!(%remote, ?sni, "no TLS listener for this SNI; rejecting");
                    return;
                }
                None => None,
            };
            let config = if terminate_target.is_some() {
                &table.tls_stream
            } else {
                &table.tls
            };
            let Some(tls) = config.clone() else {
                failures.inc();
                debug!(%remote, sni = ?hello.sni, "no TLS listener for this SNI");
                return;
            };
            let sni_listener = hello
                .sni
                .as_deref()
                .and_then(|sni| table.listeners.best(sni))
                .map(|l| Arc::clone(&l.name));
            let io = PrefixedIo::new(hello.bytes, stream);
            let accepted =
                tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(tls).accept(io));
            let Some(accepted) = drain::unless_draining(&drain, Box::pin(accepted)).await else {
                debug!(%remote, "port draining during the TLS handshake; closing");
                return;
            };
            let tls_stream = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(error)) => {
                    failures.inc();
                    debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    failures.inc();
                    debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let client_cert = match (
                &table.client_cert_trust,
                tls_stream.get_ref().1.peer_certificates(),
            ) {
                (Some(trust), Some(chain)) => client_cert::forwarded_value(chain, trust),
                _ => None,
            };
            if let Some(target) = terminate_target {
                Box::pin(terminate::run(
                    tls_stream,
                    target,
                    sni,
                    remote,
                    &shared.options,
                    drain,
                ))
                .await;
                return;
            }
            let ctx = ConnCtx {
                port: Arc::clone(&state),
                shared: Arc::clone(&shared),
                remote,
                forwarded_for: forwarded_for_value(remote),
                scheme: "https",
                sni_listener,
                client_cert,
                in_flight: InFlight::new(),
                drain,
            };
            Box::pin(serve_http(tls_stream, held, ctx)).await;
        }
    }
}

async fn serve_http<I>(io: I, held: Held, ctx: ConnCtx)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connection's place in the cap goes with its socket: an upgraded connection
    // (WebSocket) outlives this function in a tunnel task and keeps its place until it closes.
    let shared = Arc::clone(&ctx.shared);
    let timed_out = ctx.port.timed_out.clone();
    let in_flight = Arc::clone(&ctx.in_flight);
    let drain = ctx.drain.clone();
    let io = HeldIo {
        io,
        _held: held,
        send_stall: StallTimer::new(shared.options.send_timeout),
        timed_out: timed_out.clone(),
        in_flight: Arc::clone(&in_flight),
    };
    // The drain signal and the timers are polled only after their own wakers fired, not
    // on every wake of the connection as `select!` would (each poll of a `watch` wait takes a
    // lock).
    let task = Arc::new(AtomicWaker::new());
    // HTTP/2 streams that wait for window are timed here, the socket's send timeout cannot
    // see them (`stream_stall`).
    let scan_flag = WakeFlag::new(&task);
    let scan_waker = Waker::from(Arc::clone(&scan_flag));
    let stalls = shared.options.send_timeout.map(|limit| {
        StreamStalls::new(
            limit,
            scan_waker.clone(),
            ctx.port.streams_timed_out.clone(),
        )
    });
    let ctx = Arc::new(ctx);
    let requests = Arc::clone(&in_flight);
    let watched = stalls.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        // Counted from the request head until its response body ends or is dropped.
        let guard = requests.start();
        let stalls = match request.version() {
            Version::HTTP_2 => watched.clone(),
            _ => None,
        };
        async move {
            // Pinned in place: awaiting it by value would keep room for it twice.
            let response = std::pin::pin!(handler::handle(ctx, request)).await;
            Ok::<_, Infallible>(response.map(|body| {
                let streaming = body.is_streaming();
                let body = TrackedBody::new(body, guard);
                match stalls {
                    Some(stalls) if streaming => ConnBody::Watched(stalls.watch(body)),
                    _ => ConnBody::Tracked(body),
                }
            }))
        }
    });
    let conn = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let drain_flag = WakeFlag::new(&task);
    let drain_waker = Waker::from(Arc::clone(&drain_flag));
    // Waits for the drain's next stage: first `Draining`, then `Closing`.
    let drained = drain::reached(drain.clone(), Stage::Draining);
    tokio::pin!(drained);
    let mut draining = false;
    // An idle connection (no request in flight: HTTP/2 with no open stream, HTTP/1 between
    // requests, or anything that has not sent a request yet) is asked to close after the idle
    // timeout, and dropped if it has not closed a grace period later (a peer that ignores
    // GOAWAY or never answers the PING that completes it).
    let idle_timeout = shared.options.idle_timeout;
    let timer_flag = WakeFlag::new(&task);
    let timer_waker = Waker::from(Arc::clone(&timer_flag));
    let timer = tokio::time::sleep(idle_timeout);
    tokio::pin!(timer);
    let mut idle_closing = false;
    // Runs while watched streams exist (a stream's watch wakes the task to start it).
    let scan = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(scan);
    let mut scanning = false;
    let result = std::future::poll_fn(|cx| {
        task.register(cx.waker());
        if drain_flag.take() {
            let mut drain_cx = Context::from_waker(&drain_waker);
            if !draining && drained.as_mut().poll(&mut drain_cx).is_ready() {
                draining = true;
                conn.as_mut().graceful_shutdown();
                drained.set(drain::reached(drain.clone(), Stage::Closing));
            }
            if draining && drained.as_mut().poll(&mut drain_cx).is_ready() {
                // Dropping the connection drops what it still carries; their lines say why.
                in_flight.cut(Cut::DrainTimedOut);
                return Poll::Ready(Ended::DrainTimedOut);
            }
        }
        if timer_flag.take() {
            let mut timer_cx = Context::from_waker(&timer_waker);
            while timer.as_mut().poll(&mut timer_cx).is_ready() {
                let now = Instant::now();
                match in_flight.idle_deadline(idle_timeout) {
                    Some(deadline) if deadline <= now && idle_closing => {
                        return Poll::Ready(Ended::IdleDropped);
                    }
                    Some(deadline) if deadline <= now => {
                        idle_closing = true;
                        if in_flight.first_timeout() {
                            timed_out.inc();
                        }
                        if !draining {
                            conn.as_mut().graceful_shutdown();
                        }
                        timer
                            .as_mut()
                            .reset((now + IDLE_CLOSE_GRACE.min(idle_timeout)).into());
                    }
                    Some(deadline) => timer.as_mut().reset(deadline.into()),
                    None => timer.as_mut().reset((now + idle_timeout).into()),
                }
            }
        }
        if let Some(stalls) = &stalls
            && scan_flag.take()
        {
            if stalls.take_start() && !scanning {
                scanning = true;
                scan.as_mut()
                    .reset((Instant::now() + stalls.limit()).into());
            }
            let mut scan_cx = Context::from_waker(&scan_waker);
            while scanning && scan.as_mut().poll(&mut scan_cx).is_ready() {
                match stalls.scan() {
                    Some(next) => scan.as_mut().reset(next.into()),
                    None => scanning = false,
                }
            }
        }
        conn.as_mut().poll(cx).map(Ended::Served)
    })
    .await;
    match result {
        Ended::Served(Err(error)) if !draining && !idle_closing => {
            debug!(%error, "connection ended with an error");
        }
        Ended::Served(_) => {}
        Ended::IdleDropped => debug!("idle connection did not close in time; dropped"),
        Ended::DrainTimedOut => debug!("connection still open at the drain timeout; closed"),
    }
}

/// How a connection's serving ended.
enum Ended<E> {
    /// hyper finished it (the result of the connection future).
    Served(Result<(), E>),
    /// Idle, asked to close, and still open a grace period later.
    IdleDropped,
    /// Still open when its port's drain timed out.
    DrainTimedOut,
}

/// Wakes a connection's task when its port starts draining or its idle timer fires, and
/// records that it did.
struct WakeFlag {
    fired: AtomicBool,
    task: Arc<AtomicWaker>,
}

impl WakeFlag {
    /// A flag that starts fired (so its future is polled once, registering its waker).
    fn new(task: &Arc<AtomicWaker>) -> Arc<Self> {
        Arc::new(Self {
            fired: AtomicBool::new(true),
            task: Arc::clone(task),
        })
    }

    /// Whether it fired since the last call.
    fn take(&self) -> bool {
        self.fired.swap(false, Ordering::AcqRel)
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

struct ActiveGuard(Gauge);

/// What a downstream connection holds while its socket is open: its place in the connection
/// cap and in the port's active-connection gauge.
struct Held {
    _slot: ConnSlot,
    _active: ActiveGuard,
}

/// A connection's socket with what it [holds](Held), released when the socket is dropped,
/// and the send timeout on its writes.
struct HeldIo<I> {
    io: I,
    _held: Held,
    send_stall: StallTimer,
    /// Counts a connection dropped by the send timeout.
    timed_out: Counter,
    /// The connection's requests, and whether a timeout already counted it.
    in_flight: Arc<InFlight>,
}

impl<I> HeldIo<I> {
    /// `polled`, failed with `TimedOut` once writes have been blocked for the send timeout.
    fn check_send<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let checked = self.send_stall.check(cx, polled);
        if let Poll::Ready(Err(error)) = &checked
            && error.kind() == std::io::ErrorKind::TimedOut
        {
            self.in_flight.cut(Cut::SendTimedOut);
            if self.in_flight.first_timeout() {
                self.timed_out.inc();
            }
            debug!("client read nothing for the send timeout; closing");
        }
        checked
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeldIo<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeldIo<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.check_send(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check_send(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.check_send(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
