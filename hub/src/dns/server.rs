//! The running server: UDP socket threads (SO_REUSEPORT, one blocking thread per socket), the
//! TCP server ([`super::tcp`]), and the task that recompiles the snapshot when the view changes.
//!
//! **Why our own UDP loop:** hickory's `Server` spawns a task and crosses a channel per UDP
//! datagram, which halves the throughput on two cores (measured: ~92k vs ~160k queries/s, see
//! `bench/dns`). Each of our UDP threads receives, answers through the same request path
//! (`respond`) and sends, with no task, channel or lock per query. TCP (truncation fallback,
//! large answers) goes through the same path too, with connection caps (`tcp`).
//!
//! **Invariant:** the query path loads the current snapshot from an `ArcSwap` and never blocks;
//! only the watcher task replaces it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::MessageRequest;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rustix::net::{MMsgHdr, RecvFlags, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use socket2::{Domain, Socket, Type};
use std::io::IoSlice;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::config::{CheckedConfig, DnsConfig};
use super::explain::{self, Explanation};
use super::fast;
use super::geo::GeoMap;
use super::respond::{self, Limits};
use super::rrl::{RateLimiter, ReplyClass, Verdict};
use super::snapshot::{BuildConfig, SnapshotBuilder, ZoneSnapshot};
use super::tcp::{self, TcpLimits, TcpMetrics};
use super::{DnsError, DnsView};

/// How often a blocked UDP thread wakes up to check for shutdown.
const UDP_POLL: Duration = Duration::from_millis(200);
/// Largest datagram we read: anything longer is certainly not a query we answer, but reading
/// it whole lets us see (and reject) it instead of parsing a silently cut prefix.
const MAX_DATAGRAM: usize = 65_535;
/// How many datagrams one UDP thread answers per wake-up (and sends with one `sendmmsg`).
const UDP_BATCH: usize = 32;
/// How many times `spawn` retries finding a port free for both UDP and TCP when given port 0.
const PORT_ATTEMPTS: usize = 20;

/// A running DNS server. Dropping it stops the UDP threads and the view watcher; call
/// [`DnsHandle::shutdown`] to also wait for them and close TCP connections gracefully.
pub struct DnsHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    tcp: Option<tokio::task::JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// A cheap handle that explains answers from the server's current snapshot (for the admin
/// API's `GET /v1/dns/explain`).
#[derive(Clone)]
pub struct DnsExplainer {
    shared: Arc<Shared>,
}

/// State shared by the UDP threads, the TCP handler and the watcher.
struct Shared {
    snapshot: ArcSwap<ZoneSnapshot>,
    geo: Arc<GeoMap>,
    limits: Limits,
    rate_limiter: Option<RateLimiter>,
    stopping: AtomicBool,
    metrics: Metrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    transport: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    cap: &'static str,
}

/// Counters, pre-resolved per label set so the query path only does an atomic add.
struct Metrics {
    udp: RcodeCounters,
    tcp: RcodeCounters,
    malformed: Counter,
    fast: Counter,
    rate_dropped: Counter,
    rate_slipped: Counter,
    builds: Counter,
    serial: Gauge,
    problems: Gauge,
    tcp_connections: TcpMetrics,
    health_change_to_serving: Family<ChangeLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    change: &'static str,
}

/// A health change a new view carries: what changed, and when the leader decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HealthChange {
    /// `verdict` (a cluster's health) or `hostname` (a cluster's serving state for a hostname).
    pub(crate) change: &'static str,
    /// When the leader decided it, Unix milliseconds (its clock).
    pub(crate) decided_unix_ms: u64,
}

/// The health changes `current` holds that `previous` did not: a cluster whose verdict moved,
/// or whose set of unserved hostnames did (new clusters are not changes).
pub(crate) fn health_changes(previous: &DnsView, current: &DnsView) -> Vec<HealthChange> {
    let mut changes = Vec::new();
    for (name, now) in &current.clusters {
        let Some(before) = previous.clusters.get(name) else {
            continue;
        };
        if before.health.verdict != now.health.verdict {
            changes.push(HealthChange {
                change: "verdict",
                decided_unix_ms: now.health.since_unix_ms,
            });
        }
        if before
            .unserved_hostnames
            .keys()
            .ne(now.unserved_hostnames.keys())
        {
            changes.push(HealthChange {
                change: "hostname",
                decided_unix_ms: now.serving_changed_unix_ms,
            });
        }
    }
    changes
}

struct RcodeCounters {
    noerror: Counter,
    nxdomain: Counter,
    refused: Counter,
    formerr: Counter,
    notimp: Counter,
    badvers: Counter,
    other: Counter,
}

// === impl DnsHandle ===

impl DnsHandle {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The SOA serial currently served.
    pub fn serial(&self) -> u32 {
        self.shared.snapshot.load().serial
    }

    /// A handle for explaining answers from the live snapshot.
    pub fn explainer(&self) -> DnsExplainer {
        DnsExplainer {
            shared: self.shared.clone(),
        }
    }

    /// Stops serving: closes the sockets, waits for the UDP threads and the watcher, and lets
    /// open TCP connections finish their current query.
    pub async fn shutdown(mut self) {
        self.begin_stop();
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.await;
        }
        if let Some(tcp) = self.tcp.take() {
            let _ = tcp.await;
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        info!(addr = %self.local_addr, "dns server stopped");
    }

    fn begin_stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

// === impl DnsExplainer ===

impl DnsExplainer {
    /// What `client` would get for `name`/`qtype` from the snapshot being served now.
    pub fn explain(
        &self,
        name: &str,
        qtype: &str,
        client: IpAddr,
    ) -> Result<Explanation, DnsError> {
        let snapshot = self.shared.snapshot.load_full();
        explain::explain_snapshot(
            &snapshot,
            &self.shared.geo,
            self.shared.limits,
            name,
            qtype,
            client,
        )
    }
}

/// Validates `config`, binds UDP and TCP on `config.listen` and serves answers computed from
/// the latest [`DnsView`] on `view`, recompiling whenever it changes.
///
/// Must be called inside a Tokio runtime. The UDP sockets are served by dedicated OS threads.
pub async fn spawn(
    config: DnsConfig,
    mut view: watch::Receiver<Arc<DnsView>>,
    registry: &mut Registry,
) -> Result<DnsHandle, DnsError> {
    let checked = config.checked()?;
    let geo_config = checked.geo.clone();
    let geo = Arc::new(
        tokio::task::spawn_blocking(move || GeoMap::new(&geo_config))
            .await
            .map_err(|e| DnsError::Config {
                field: "geo.mmdb".into(),
                why: format!("loading the database failed: {e}"),
            })??,
    );
    let build_config = build_config(&config, &checked);
    let mut builder = SnapshotBuilder::new(build_config, geo.clone());
    let initial_view = view.borrow_and_update().clone();
    let (builder, initial) = tokio::task::spawn_blocking(move || {
        let snapshot = builder.build(&initial_view, SystemTime::now());
        (builder, snapshot)
    })
    .await
    .map_err(|e| DnsError::Config {
        field: "zones".into(),
        why: format!("compiling the zones failed: {e}"),
    })?;
    for problem in &initial.problems {
        warn!(problem = %problem, "dns data problem");
    }

    let metrics = Metrics::new(registry);
    metrics.builds.inc();
    metrics.serial.set(i64::from(initial.serial));
    metrics.problems.set(initial.problems.len() as i64);
    let shared = Arc::new(Shared::new(&config, &checked, geo, initial, metrics));

    let n_sockets = match config.udp_sockets {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (udp_sockets, tcp_listener, local_addr) = bind(config.listen, n_sockets)?;

    let mut threads = Vec::with_capacity(udp_sockets.len());
    for (index, socket) in udp_sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dns-udp-{index}"))
            .spawn(move || udp_loop(socket, &shared))
            .map_err(|source| DnsError::Io {
                addr: local_addr,
                source,
            })?;
        threads.push(thread);
    }

    let (stop, stop_rx) = watch::channel(false);
    let tcp_limits = TcpLimits {
        idle: Duration::from_millis(config.tcp_timeout_ms),
        max_connections: effective_tcp_cap(config.tcp_max_connections),
        max_per_client: config.tcp_max_connections_per_client,
    };
    let tcp = tokio::spawn(tcp::serve(
        tcp_listener,
        shared.clone(),
        tcp_limits,
        shared.metrics.tcp_connections.clone(),
        stop_rx.clone(),
    ));
    let watcher = tokio::spawn(watch_views(shared.clone(), builder, view, stop_rx));
    info!(
        addr = %local_addr,
        udp_sockets = threads.len(),
        tcp_max_connections = tcp_limits.max_connections,
        tcp_max_connections_per_client = tcp_limits.max_per_client,
        zones = config.zones.len(),
        "dns server listening"
    );
    Ok(DnsHandle {
        local_addr,
        shared,
        tcp: Some(tcp),
        threads,
        watcher: Some(watcher),
        stop,
    })
}

/// The request path without sockets: compiles a view under a config and answers raw
/// datagrams exactly as the UDP threads do (rate limiting included). Used by the fuzz target
/// and by tests that need byte-level control.
pub struct PacketAnswerer {
    shared: Shared,
    out: Vec<u8>,
    rng: SmallRng,
}

impl PacketAnswerer {
    /// Compiles `view` under `config` (opening its geo database, if any).
    pub fn new(config: &DnsConfig, view: &DnsView) -> Result<Self, DnsError> {
        let checked = config.checked()?;
        let geo = Arc::new(GeoMap::new(&checked.geo)?);
        let mut builder = SnapshotBuilder::new(build_config(config, &checked), geo.clone());
        let snapshot = builder.build(view, SystemTime::now());
        let metrics = Metrics::new(&mut Registry::default());
        Ok(Self {
            shared: Shared::new(config, &checked, geo, snapshot, metrics),
            out: Vec::with_capacity(4096),
            rng: SmallRng::seed_from_u64(0x5eed),
        })
    }

    /// Checks the fast-path invariant for one datagram: when the fast path answers it, the full
    /// path (given the same random numbers) must give the same response. Returns a description
    /// of the difference, if any. For the fuzz target.
    #[doc(hidden)]
    pub fn check_fast_path(&mut self, packet: &[u8], src: SocketAddr) -> Result<(), String> {
        let snapshot = self.shared.snapshot.load();
        let mut fast_out = Vec::new();
        let mut fixed = || 0x9E37_79B9_7F4A_7C15u64;
        if !fast::answer(
            &snapshot,
            &self.shared.geo,
            packet,
            src.ip(),
            self.shared.limits,
            &mut fixed,
            &mut fast_out,
        ) {
            return Ok(());
        }
        let request = Request::from_bytes(packet.to_vec(), src, Protocol::Udp)
            .map_err(|e| format!("fast path answered a packet the full parser rejects: {e}"))?;
        let reply = respond::respond(
            &snapshot,
            &self.shared.geo,
            &request,
            src.ip(),
            self.shared.limits,
            &mut fixed,
        );
        let mut full_out = Vec::new();
        respond::encode_udp(&request, &reply, self.shared.limits, &mut full_out)
            .map_err(|e| format!("full path cannot encode: {e}"))?;
        if fast_out == full_out {
            return Ok(());
        }
        // Byte differences are fine where only name compression differs; compare the messages.
        let fast = hickory_proto::op::Message::from_vec(&fast_out)
            .map_err(|e| format!("fast response does not parse: {e}"))?;
        let full = hickory_proto::op::Message::from_vec(&full_out)
            .map_err(|e| format!("full response does not parse: {e}"))?;
        if fast == full {
            Ok(())
        } else {
            Err(format!(
                "fast path differs:\nfast: {fast:?}\nfull: {full:?}"
            ))
        }
    }

    /// The response to one UDP datagram from `src`, or `None` when the server sends nothing.
    pub fn answer_udp(&mut self, packet: &[u8], src: SocketAddr) -> Option<&[u8]> {
        let mut counters = LocalCounters::default();
        self.shared
            .handle_udp(packet, src, &mut self.out, &mut self.rng, &mut counters)
            .then_some(self.out.as_slice())
    }
}

fn build_config(config: &DnsConfig, checked: &CheckedConfig) -> BuildConfig {
    BuildConfig {
        zones: checked.zones.clone(),
        coordinates: checked.geo.regions.clone(),
        unstable_ttl: config.unstable_ttl,
        stable_after_ms: config.stable_after_secs.saturating_mul(1000),
    }
}

/// Binds `n` UDP sockets (SO_REUSEPORT) and one TCP listener on the same address and port.
fn bind(
    listen: SocketAddr,
    n: usize,
) -> Result<
    (
        Vec<std::net::UdpSocket>,
        tokio::net::TcpListener,
        SocketAddr,
    ),
    DnsError,
> {
    let io_error = |addr: SocketAddr| move |source: io::Error| DnsError::Io { addr, source };
    let attempts = if listen.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        // With port 0, reserve a port that is free for UDP (a probe socket without
        // SO_REUSEPORT, so we never join another process's group), then take TCP on it.
        let addr = if listen.port() == 0 {
            let probe = std::net::UdpSocket::bind(listen).map_err(io_error(listen))?;
            probe.local_addr().map_err(io_error(listen))?
        } else {
            listen
        };
        let tcp = match bind_tcp(addr) {
            Ok(tcp) => tcp,
            Err(source) if listen.port() == 0 && source.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(source);
                continue;
            }
            Err(source) => return Err(DnsError::Io { addr, source }),
        };
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            sockets.push(bind_udp(addr).map_err(io_error(addr))?);
        }
        let local = sockets[0].local_addr().map_err(io_error(addr))?;
        return Ok((sockets, tcp, local));
    }
    Err(DnsError::Io {
        addr: listen,
        source: last_error.unwrap_or_else(|| io::Error::other("no free port")),
    })
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    // Absorb bursts while a thread is descheduled (the kernel caps it at rmem_max).
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(UDP_POLL))?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// One UDP socket's loop, until shutdown: block for a datagram, then drain whatever else is
/// queued without blocking (up to [`UDP_BATCH`]), answer each, and send the answers with one
/// `sendmmsg`. Under load this saves most of the sleeps, wake-ups and send syscalls that
/// dominate a DNS server's CPU time.
fn udp_loop(socket: std::net::UdpSocket, shared: &Shared) {
    let mut packet = vec![0u8; MAX_DATAGRAM];
    let mut outs: Vec<Vec<u8>> = (0..UDP_BATCH).map(|_| Vec::with_capacity(1232)).collect();
    let mut destinations: Vec<SocketAddrAny> = Vec::with_capacity(UDP_BATCH);
    let mut rng = SmallRng::from_os_rng();
    let mut counters = LocalCounters::default();
    while !shared.stopping.load(Ordering::Relaxed) {
        let first = match socket.recv_from(&mut packet) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                counters.flush(&shared.metrics);
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                debug!(%error, "dns udp receive error");
                continue;
            }
        };
        destinations.clear();
        let mut received = Some(first);
        while let Some((len, src)) = received {
            let slot = destinations.len();
            if shared.handle_udp(
                &packet[..len],
                src,
                &mut outs[slot],
                &mut rng,
                &mut counters,
            ) {
                destinations.push(SocketAddrAny::from(src));
            }
            if destinations.len() == UDP_BATCH {
                break;
            }
            received = receive_queued(&socket, &mut packet);
        }
        send_all(&socket, &outs, &destinations);
        if counters.pending >= 1024 {
            counters.flush(&shared.metrics);
        }
    }
    counters.flush(&shared.metrics);
}

/// The next queued datagram, without blocking.
fn receive_queued(socket: &std::net::UdpSocket, packet: &mut [u8]) -> Option<(usize, SocketAddr)> {
    loop {
        match rustix::net::recvfrom(socket, &mut *packet, RecvFlags::DONTWAIT) {
            Ok((len, _, Some(addr))) => match SocketAddr::try_from(addr) {
                Ok(src) => return Some((len, src)),
                Err(_) => continue,
            },
            Ok((_, _, None)) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Sends `outs[i]` to `destinations[i]`: one `sendmmsg` for the batch.
fn send_all(socket: &std::net::UdpSocket, outs: &[Vec<u8>], destinations: &[SocketAddrAny]) {
    match destinations {
        [] => {}
        [only] => {
            if let Err(error) = rustix::net::sendto(socket, &outs[0], SendFlags::empty(), only) {
                debug!(%error, "dns udp send error");
            }
        }
        _ => {
            let iovs: Vec<[IoSlice<'_>; 1]> = outs[..destinations.len()]
                .iter()
                .map(|out| [IoSlice::new(out)])
                .collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..destinations.len())
                .map(|_| SendAncillaryBuffer::default())
                .collect();
            let mut messages: Vec<MMsgHdr<'_>> = destinations
                .iter()
                .zip(&iovs)
                .zip(&mut controls)
                .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
                .collect();
            let mut sent = 0;
            while sent < messages.len() {
                match rustix::net::sendmmsg(socket, &mut messages[sent..], SendFlags::empty()) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(error) => {
                        // One bad destination fails the call: skip it and send the rest.
                        debug!(%error, "dns udp sendmmsg error");
                        sent += 1;
                    }
                }
            }
        }
    }
}

/// Per-thread counts, added to the shared Prometheus counters every 1024 responses or when
/// the socket is idle, so the query path touches no shared cache line.
#[derive(Default)]
struct LocalCounters {
    rcodes: [u64; 7],
    malformed: u64,
    fast: u64,
    rate_dropped: u64,
    rate_slipped: u64,
    pending: u64,
}

impl LocalCounters {
    fn count(&mut self, rcode: ResponseCode) {
        let index = match rcode {
            ResponseCode::NoError => 0,
            ResponseCode::NXDomain => 1,
            ResponseCode::Refused => 2,
            ResponseCode::FormErr => 3,
            ResponseCode::NotImp => 4,
            ResponseCode::BADVERS => 5,
            _ => 6,
        };
        self.rcodes[index] += 1;
        self.pending += 1;
    }

    fn flush(&mut self, metrics: &Metrics) {
        if self.pending == 0 && self.malformed == 0 && self.rate_dropped == 0 {
            return;
        }
        let udp = &metrics.udp;
        let counters = [
            &udp.noerror,
            &udp.nxdomain,
            &udp.refused,
            &udp.formerr,
            &udp.notimp,
            &udp.badvers,
            &udp.other,
        ];
        for (counter, count) in counters.into_iter().zip(&mut self.rcodes) {
            if *count > 0 {
                counter.inc_by(std::mem::take(count));
            }
        }
        metrics
            .malformed
            .inc_by(std::mem::take(&mut self.malformed));
        metrics.fast.inc_by(std::mem::take(&mut self.fast));
        metrics
            .rate_dropped
            .inc_by(std::mem::take(&mut self.rate_dropped));
        metrics
            .rate_slipped
            .inc_by(std::mem::take(&mut self.rate_slipped));
        self.pending = 0;
    }
}

// === impl Shared ===

impl Shared {
    fn new(
        config: &DnsConfig,
        checked: &CheckedConfig,
        geo: Arc<GeoMap>,
        snapshot: ZoneSnapshot,
        metrics: Metrics,
    ) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            geo,
            limits: Limits {
                max_udp_payload: config.max_udp_payload,
            },
            rate_limiter: RateLimiter::new(&config.rate_limit, checked.rate_limit_exempt.clone()),
            stopping: AtomicBool::new(false),
            metrics,
        }
    }

    /// Answers one datagram into `out`; false when nothing must be sent.
    fn handle_udp(
        &self,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
        rng: &mut SmallRng,
        counters: &mut LocalCounters,
    ) -> bool {
        if src.port() == 0 || src.ip().is_unspecified() {
            return false;
        }
        // Shorter than a header, or a response (QR set): never answer, so two servers cannot be
        // made to bounce packets between each other.
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            counters.malformed += 1;
            return false;
        }
        let verdict = match &self.rate_limiter {
            Some(limiter) => limiter.check(src.ip(), packet),
            None => Verdict::Send,
        };
        if verdict == Verdict::Drop {
            counters.rate_dropped += 1;
            return false;
        }
        if verdict == Verdict::Send {
            let snapshot = self.snapshot.load();
            let mut random = || rng.next_u64();
            if fast::answer(
                &snapshot,
                &self.geo,
                packet,
                src.ip(),
                self.limits,
                &mut random,
                out,
            ) {
                counters.fast += 1;
                counters.count(ResponseCode::NoError);
                return true;
            }
        }
        let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(error) => {
                debug!(%src, %error, "malformed dns query");
                counters.malformed += 1;
                counters.count(ResponseCode::FormErr);
                return respond::encode_formerr(packet, out);
            }
        };
        let request: &MessageRequest = &request;
        if fast::ecs_address_length_wrong(packet) {
            counters.count(ResponseCode::FormErr);
            return respond::encode_formerr(packet, out);
        }
        if verdict == Verdict::Slip {
            counters.rate_slipped += 1;
            return respond::encode_slip(request, self.limits, out).is_ok();
        }
        let snapshot = self.snapshot.load();
        let reply = respond::respond(
            &snapshot,
            &self.geo,
            request,
            src.ip(),
            self.limits,
            &mut || rng.next_u64(),
        );
        if let Some(limiter) = &self.rate_limiter {
            let class = ReplyClass::of(&snapshot, request, &reply);
            match limiter.check_reply(src.ip(), packet, class) {
                Verdict::Send => {}
                Verdict::Slip => {
                    counters.rate_slipped += 1;
                    return respond::encode_slip(request, self.limits, out).is_ok();
                }
                Verdict::Drop => {
                    counters.rate_dropped += 1;
                    return false;
                }
            }
        }
        counters.count(reply.rcode);
        match respond::encode_udp(request, &reply, self.limits, out) {
            Ok(()) => true,
            Err(error) => {
                warn!(%error, %src, "cannot encode dns response");
                false
            }
        }
    }
}

// === TCP answers ===

/// TCP queries take the full path (no fast path, no rate limiting: a TCP client has shown its
/// address is real).
impl tcp::Answer for Shared {
    fn answer(&self, query: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> bool {
        // A response (QR set) is never answered, as over UDP.
        if query.len() < 12 || query[2] & 0x80 != 0 {
            self.metrics.malformed.inc();
            return false;
        }
        let request = match Request::from_bytes(query.to_vec(), src, Protocol::Tcp) {
            Ok(request) => request,
            Err(error) => {
                debug!(%src, %error, "malformed dns query over tcp");
                self.metrics.malformed.inc();
                self.metrics.tcp.count(ResponseCode::FormErr);
                return respond::encode_formerr(query, out);
            }
        };
        let request: &MessageRequest = &request;
        if fast::ecs_address_length_wrong(query) {
            self.metrics.tcp.count(ResponseCode::FormErr);
            return respond::encode_formerr(query, out);
        }
        let snapshot = self.snapshot.load();
        let mut rng = rand::rng();
        let reply = respond::respond(
            &snapshot,
            &self.geo,
            request,
            src.ip(),
            self.limits,
            &mut || rng.next_u64(),
        );
        self.metrics.tcp.count(reply.rcode);
        match respond::encode_tcp(request, &reply, out) {
            Ok(()) => true,
            Err(error) => {
                warn!(%error, %src, "cannot encode dns response");
                false
            }
        }
    }
}

/// The TCP connection cap: as configured, but at most a quarter of the open-file limit, so
/// that DNS clients can never take the descriptors the admin API, agents and peers need.
fn effective_tcp_cap(configured: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit {
        Some(soft) => {
            let share = usize::try_from(soft / 4).unwrap_or(usize::MAX).max(16);
            if share < configured {
                warn!(
                    configured,
                    effective = share,
                    open_file_limit = soft,
                    "dns tcp_max_connections lowered to a quarter of the open-file limit"
                );
            }
            configured.min(share)
        }
        None => configured,
    }
}

/// Recompiles the snapshot whenever the view changes, a lowered TTL must be restored, or
/// signatures need renewing; until shutdown.
async fn watch_views(
    shared: Arc<Shared>,
    builder: SnapshotBuilder,
    mut view: watch::Receiver<Arc<DnsView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = Some(builder);
    let mut view_open = true;
    // The view the served snapshot was built from, to see which health changes a new one
    // brings; none at first, so the changes of a restart's log replay are not counted.
    let mut served_view: Option<Arc<DnsView>> = None;
    loop {
        let rebuild_at = shared.snapshot.load().rebuild_at;
        let timer = async {
            match rebuild_at {
                Some(at) => {
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(wait + Duration::from_millis(10)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            changed = view.changed(), if view_open => {
                if changed.is_err() {
                    // The hub dropped its sender: keep serving the last view.
                    view_open = false;
                    continue;
                }
            }
            () = timer => {}
        }
        if *stop.borrow() {
            return;
        }
        let current = view.borrow_and_update().clone();
        let Some(mut taken) = builder.take() else {
            return;
        };
        let building = current.clone();
        let built = tokio::task::spawn_blocking(move || {
            let current = building;
            let snapshot = taken.build(&current, SystemTime::now());
            (taken, snapshot)
        })
        .await;
        let (returned, snapshot) = match built {
            Ok(built) => built,
            Err(error) => {
                warn!(%error, "dns snapshot build failed; keeping the last one");
                return;
            }
        };
        builder = Some(returned);
        let previous = shared.snapshot.load();
        for problem in &snapshot.problems {
            if !previous.problems.contains(problem) {
                warn!(problem = %problem, "dns data problem");
            }
        }
        shared.metrics.builds.inc();
        shared.metrics.serial.set(i64::from(snapshot.serial));
        shared.metrics.problems.set(snapshot.problems.len() as i64);
        debug!(
            serial = snapshot.serial,
            names = snapshot.names.len(),
            "dns snapshot rebuilt"
        );
        shared.snapshot.store(Arc::new(snapshot));
        // Served from now on: how long after the leader decided each change.
        if let Some(previous) = &served_view {
            let now_ms = unix_ms(SystemTime::now());
            for change in health_changes(previous, &current) {
                let seconds = now_ms.saturating_sub(change.decided_unix_ms) as f64 / 1000.0;
                shared
                    .metrics
                    .health_change_to_serving
                    .get_or_create(&ChangeLabels {
                        change: change.change,
                    })
                    .observe(seconds);
            }
        }
        served_view = Some(current);
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// === impl Metrics ===

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let responses = Family::<ResponseLabels, Counter>::default();
        let rate_limited = Family::<ActionLabels, Counter>::default();
        let malformed = Counter::default();
        let fast = Counter::default();
        let builds = Counter::default();
        let serial = Gauge::default();
        let problems = Gauge::default();
        registry.register(
            "meridian_dns_responses",
            "DNS responses sent, by transport and response code",
            responses.clone(),
        );
        registry.register(
            "meridian_dns_rate_limited",
            "UDP responses withheld (dropped) or truncated (slipped) by response rate limiting",
            rate_limited.clone(),
        );
        registry.register(
            "meridian_dns_malformed",
            "Datagrams that were not parseable DNS queries",
            malformed.clone(),
        );
        registry.register(
            "meridian_dns_udp_fast_answers",
            "UDP responses sent by the fast path (pre-encoded A/AAAA answers), also counted in meridian_dns_responses",
            fast.clone(),
        );
        registry.register(
            "meridian_dns_snapshot_builds",
            "Times the zone snapshot was compiled",
            builds.clone(),
        );
        registry.register(
            "meridian_dns_serial",
            "SOA serial being served",
            serial.clone(),
        );
        let health_change_to_serving =
            Family::<ChangeLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
            });
        registry.register(
            "meridian_dns_health_change_to_serving_seconds",
            "Time from the leader deciding a health change (change=verdict: a cluster's health; change=hostname: a cluster's serving state for a hostname) to this node serving DNS answers built with it; the leader's clock, so on other nodes clock skew adds in",
            health_change_to_serving.clone(),
        );
        registry.register(
            "meridian_dns_data_problems",
            "Records or hostnames the last snapshot could not serve (see the logs)",
            problems.clone(),
        );
        let tcp_connections = TcpMetrics::default();
        registry.register(
            "meridian_dns_tcp_connections",
            "Open DNS-over-TCP connections",
            tcp_connections.open.clone(),
        );
        let tcp_refused = Family::<CapLabels, Counter>::default();
        registry.register(
            "meridian_dns_tcp_refused",
            "DNS-over-TCP connections closed at once at the total or per-client cap",
            tcp_refused.clone(),
        );
        registry.register(
            "meridian_dns_tcp_timed_out",
            "DNS-over-TCP connections closed because a query did not arrive whole, or an answer was not read, within tcp_timeout_ms",
            tcp_connections.timed_out.clone(),
        );
        let tcp_connections = TcpMetrics {
            refused_total: counter(&tcp_refused, CapLabels { cap: "total" }),
            refused_client: counter(&tcp_refused, CapLabels { cap: "per_client" }),
            ..tcp_connections
        };
        let counters = |transport: &'static str| {
            let rcode =
                |rcode: &'static str| counter(&responses, ResponseLabels { transport, rcode });
            RcodeCounters {
                noerror: rcode("NOERROR"),
                nxdomain: rcode("NXDOMAIN"),
                refused: rcode("REFUSED"),
                formerr: rcode("FORMERR"),
                notimp: rcode("NOTIMP"),
                badvers: rcode("BADVERS"),
                other: rcode("OTHER"),
            }
        };
        Self {
            udp: counters("udp"),
            tcp: counters("tcp"),
            malformed,
            fast,
            rate_dropped: counter(&rate_limited, ActionLabels { action: "dropped" }),
            rate_slipped: counter(&rate_limited, ActionLabels { action: "slipped" }),
            builds,
            serial,
            problems,
            tcp_connections,
            health_change_to_serving,
        }
    }
}

/// One counter of a family. A separate function so the family's read guard is dropped before
/// the next label set is created (holding it across `get_or_create` deadlocks).
fn counter<L>(family: &Family<L, Counter>, labels: L) -> Counter
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    family.get_or_create(&labels).clone()
}

impl RcodeCounters {
    fn count(&self, rcode: ResponseCode) {
        match rcode {
            ResponseCode::NoError => self.noerror.inc(),
            ResponseCode::NXDomain => self.nxdomain.inc(),
            ResponseCode::Refused => self.refused.inc(),
            ResponseCode::FormErr => self.formerr.inc(),
            ResponseCode::NotImp => self.notimp.inc(),
            ResponseCode::BADVERS => self.badvers.inc(),
            _ => self.other.inc(),
        };
    }
}
