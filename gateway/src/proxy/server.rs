//! Accept loops and connection serving for one port, and draining.
//!
//! Each bound port has a [`PortState`]: the current table (an `ArcSwap` the runtime replaces on
//! every config) and a drain signal. Connections subscribe to the drain signal; draining a
//! port stops its accept loops, asks every connection to finish gracefully (HTTP/1.1 closes
//! after the in-flight response, HTTP/2 sends GOAWAY) and waits for them up to a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::task::AtomicWaker;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::forward::forwarded_for_value;
use super::handler;
use super::shards::Shards;
use super::{passthrough, terminate};
use crate::metrics::{GatewayMetrics, PortLabels};
use crate::options::GatewayOptions;
use crate::route::{PortKind, PortTable};
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
}

/// One bound port's live state.
#[derive(Debug)]
pub(crate) struct PortState {
    /// The port.
    pub(crate) port: u16,
    /// What it serves; replaced on every config.
    pub(crate) table: ArcSwap<PortTable>,
    /// The drain signal of the connections accepted since the port was bound, or since its
    /// connections were last [rotated](PortState::rotate_connections).
    drain: ArcSwap<watch::Sender<bool>>,
    active: Gauge,
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
            .max_send_buf_size(256 * 1024);
        Self {
            metrics,
            options,
            http,
        }
    }
}

// === impl PortState ===

impl PortState {
    /// Asks the connections open now to finish gracefully (in-flight requests complete, then
    /// they close), while the port keeps accepting. Used when what a connection agreed to at
    /// its handshake no longer holds, such as the client certificate validation: a client
    /// must not keep a connection the new settings would refuse.
    pub(crate) fn rotate_connections(&self) {
        let (fresh, _) = watch::channel(false);
        let old = self.drain.swap(Arc::new(fresh));
        let _ = old.send(true);
    }

    /// New state for a port about to be bound.
    pub(crate) fn new(table: Arc<PortTable>, metrics: &GatewayMetrics) -> Self {
        let port = table.port;
        let (drain, _) = watch::channel(false);
        Self {
            port,
            table: ArcSwap::new(table),
            drain: ArcSwap::from_pointee(drain),
            active: metrics
                .active_connections
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
    /// `timeout` (connections still open then are left to end on their own).
    pub(crate) fn drain(self, timeout: Duration) -> impl Future<Output = ()> + Send + 'static {
        for task in &self.accept_tasks {
            task.abort();
        }
        let state = self.state;
        async move {
            let drain = state.drain.load_full();
            let _ = drain.send(true);
            if tokio::time::timeout(timeout, drain.closed()).await.is_err() {
                warn!(
                    port = state.port,
                    remaining = drain.receiver_count(),
                    "drain timed out"
                );
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<PortState>, shared: Arc<Shared>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(port = state.port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let drain = state.drain.load().subscribe();
        tokio::spawn(serve_connection(
            stream,
            remote,
            Arc::clone(&state),
            Arc::clone(&shared),
            drain,
        ));
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    state: Arc<PortState>,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
) {
    state.active.inc();
    let _active = ActiveGuard(state.active.clone());
    let table = state.table.load_full();
    match table.kind {
        PortKind::Http => {
            let ctx = ConnCtx {
                port: Arc::clone(&state),
                shared: Arc::clone(&shared),
                remote,
                forwarded_for: forwarded_for_value(remote),
                scheme: "http",
                sni_listener: None,
            };
            serve_http(stream, ctx, drain).await;
        }
        PortKind::Tls => {
            let timeout = shared.options.tls_handshake_timeout;
            let failures = shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&PortLabels { port: state.port })
                .clone();
            let hello = match tokio::time::timeout(timeout, read_client_hello(&mut stream)).await {
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
                passthrough::run(stream, hello, listener, remote, &shared.options, drain).await;
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
                tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(tls).accept(io))
                    .await;
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
            if let Some(target) = terminate_target {
                terminate::run(tls_stream, target, sni, remote, &shared.options, drain).await;
                return;
            }
            let ctx = ConnCtx {
                port: Arc::clone(&state),
                shared: Arc::clone(&shared),
                remote,
                forwarded_for: forwarded_for_value(remote),
                scheme: "https",
                sni_listener,
            };
            serve_http(tls_stream, ctx, drain).await;
        }
    }
}

async fn serve_http<I>(io: I, ctx: ConnCtx, mut drain: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(&ctx.shared);
    let ctx = Arc::new(ctx);
    let service = service_fn(move |request| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handler::handle(ctx, request).await) }
    });
    let conn = shared
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // The drain signal is polled only after its own waker fired, not on every wake of the
    // connection as `select!` would (each poll of a `watch` wait takes a lock).
    let flag = Arc::new(DrainFlag {
        fired: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let drain_waker = Waker::from(Arc::clone(&flag));
    let drained = wait_for_drain(&mut drain);
    tokio::pin!(drained);
    let mut draining = false;
    let result = std::future::poll_fn(|cx| {
        if !draining {
            flag.task.register(cx.waker());
            if flag.fired.swap(false, Ordering::AcqRel) {
                let mut drain_cx = Context::from_waker(&drain_waker);
                if drained.as_mut().poll(&mut drain_cx).is_ready() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(error) = result
        && !draining
    {
        debug!(%error, "connection ended with an error");
    }
}

/// Wakes a connection's task when its port starts draining, and records that it did.
struct DrainFlag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for DrainFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

async fn wait_for_drain(drain: &mut watch::Receiver<bool>) {
    // An error means the port is gone; drain then too.
    let _ = drain.wait_for(|draining| *draining).await;
}

struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
