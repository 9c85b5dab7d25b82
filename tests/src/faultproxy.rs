//! A fault-injecting TCP proxy between real hub processes: cut, blackhole or delay each directed
//! link (connections node `a` opens to node `b`).
//!
//! One listener per node is that node's front door: every node advertises its proxy's address,
//! so every connection *to* node `b` passes through proxy `b`. Every node opens its outbound
//! connections from its own loopback IP (`raft.outbound_source_ip`), registered here with
//! [`FaultNet::add_node`], so a proxy knows which node a connection comes from. Connections from
//! anyone else (the test itself) have source node 0 and are faulted only by [`FaultNet::set_delay`]
//! and by the node being down.
//!
//! All proxies follow one set of rules published on a `watch` channel; a rule change applies to
//! connections already open (a cut closes them, a blackhole holds their bytes) as well as new ones.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What happens to the traffic of one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded untouched.
    #[default]
    Pass,
    /// New connections are accepted and closed at once, open ones are closed: a middlebox that
    /// resets the link's connections. (A node that is down refuses connections instead.)
    Cut,
    /// Connections are accepted but nothing is forwarded until the fault is lifted (then the held
    /// bytes flow, as TCP would retransmit them): a network that silently drops packets.
    Blackhole,
    /// Every chunk of bytes waits this long before it is forwarded (order is kept).
    Delay(Duration),
}

/// The rules every proxy follows.
#[derive(Clone, Debug, Default)]
struct Rules {
    /// Faults of directed links `(from, to)`; absent means [`Fault::Pass`].
    links: HashMap<(u64, u64), Fault>,
    /// Delay added to every link that has no fault of its own.
    delay: Duration,
    /// Where each node's real server listens; absent: the node is down (connections refused).
    upstream: HashMap<u64, SocketAddr>,
    /// Which node a source IP belongs to.
    sources: HashMap<IpAddr, u64>,
}

// === impl Rules ===

impl Rules {
    fn fault(&self, from: u64, to: u64) -> Fault {
        if !self.upstream.contains_key(&to) {
            return Fault::Cut;
        }
        match self.links.get(&(from, to)).copied().unwrap_or_default() {
            Fault::Pass if !self.delay.is_zero() => Fault::Delay(self.delay),
            fault => fault,
        }
    }
}

/// The proxies in front of one group of nodes.
pub struct FaultNet {
    rules: watch::Sender<Rules>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

// === impl FaultNet ===

impl FaultNet {
    /// No proxies yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            rules: watch::Sender::new(Rules::default()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Starts node `id`'s proxy on `listen_ip` (port 0) and registers `source_ip` as the address
    /// the node connects from. Returns the proxy's address: the node's advertised address.
    ///
    /// While the node is down (before [`FaultNet::set_upstream`], or after it is set to `None`)
    /// the proxy closes its listener, so connections are refused as they would be by a host
    /// whose process died; it binds the same address again when the node is back. `listen_ip`
    /// should be used by nothing else, so no other socket takes the port meanwhile.
    pub async fn add_node(&self, id: u64, source_ip: IpAddr, listen_ip: IpAddr) -> SocketAddr {
        self.rules.send_modify(|rules| {
            rules.sources.insert(source_ip, id);
        });
        let listener = TcpListener::bind(SocketAddr::new(listen_ip, 0))
            .await
            .expect("bind a proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(accept_loop(listener, addr, id, self.rules.subscribe()));
        self.tasks.lock().expect("tasks").push(task);
        addr
    }

    /// Where node `id` really listens now (`None`: it is down).
    pub fn set_upstream(&self, id: u64, addr: Option<SocketAddr>) {
        self.rules.send_modify(|rules| match addr {
            Some(addr) => {
                rules.upstream.insert(id, addr);
            }
            None => {
                rules.upstream.remove(&id);
            }
        });
    }

    /// Sets the fault of the directed link `from -> to` (connections `from` opens to `to`).
    pub fn set_fault(&self, from: u64, to: u64, fault: Fault) {
        self.rules.send_modify(|rules| {
            if fault == Fault::Pass {
                rules.links.remove(&(from, to));
            } else {
                rules.links.insert((from, to), fault);
            }
        });
    }

    /// Gives every link between `group` and the rest of `all`, both ways, `fault` (a partition
    /// when it is [`Fault::Cut`] or [`Fault::Blackhole`]).
    pub fn partition(&self, group: &[u64], all: &[u64], fault: Fault) {
        for a in group {
            for b in all.iter().filter(|b| !group.contains(b)) {
                self.set_fault(*a, *b, fault);
                self.set_fault(*b, *a, fault);
            }
        }
    }

    /// Delay added to every link without a fault of its own (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.rules.send_modify(|rules| rules.delay = delay);
    }

    /// Lifts every link fault and the delay (nodes that are down stay down).
    pub fn heal(&self) {
        self.rules.send_modify(|rules| {
            rules.links.clear();
            rules.delay = Duration::ZERO;
        });
    }

    /// The current faults, for failure messages: `(from, to, fault)`.
    pub fn faults(&self) -> Vec<(u64, u64, Fault)> {
        let mut faults: Vec<_> = self
            .rules
            .borrow()
            .links
            .iter()
            .map(|((a, b), f)| (*a, *b, *f))
            .collect();
        faults.sort_by_key(|(a, b, _)| (*a, *b));
        faults
    }
}

impl Drop for FaultNet {
    fn drop(&mut self) {
        // Closing the rules channel ends every relay; aborting the accept loops frees the ports.
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

/// Accepts connections to node `to` while it is up; holds no listener while it is down.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    to: u64,
    mut rules: watch::Receiver<Rules>,
) {
    let mut listener = Some(listener);
    loop {
        let up = rules.borrow_and_update().upstream.contains_key(&to);
        match (up, &listener) {
            (false, Some(_)) => listener = None,
            (true, None) => match rebind(addr).await {
                Some(bound) => listener = Some(bound),
                None => return,
            },
            (false, None) => {
                if rules.changed().await.is_err() {
                    return;
                }
            }
            (true, Some(bound)) => {
                tokio::select! {
                    accepted = bound.accept() => {
                        let Ok((inbound, peer)) = accepted else {
                            return;
                        };
                        let from = rules.borrow().sources.get(&peer.ip()).copied().unwrap_or(0);
                        tokio::spawn(relay(inbound, from, to, rules.clone()));
                    }
                    changed = rules.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Binds the proxy's address again (it was free a moment ago; retry briefly in case the
/// kernel still holds it).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Some(listener),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    eprintln!("fault proxy: cannot bind {addr} again; node stays unreachable");
    None
}

/// Waits until the link may carry bytes; `None` when the connection must be closed.
async fn open(from: u64, to: u64, rules: &mut watch::Receiver<Rules>) -> Option<Duration> {
    loop {
        match rules.borrow_and_update().fault(from, to) {
            Fault::Pass => return Some(Duration::ZERO),
            Fault::Delay(delay) => return Some(delay),
            Fault::Cut => return None,
            Fault::Blackhole => {}
        }
        rules.changed().await.ok()?;
    }
}

/// One proxied connection `from -> to`.
async fn relay(inbound: TcpStream, from: u64, to: u64, mut rules: watch::Receiver<Rules>) {
    if open(from, to, &mut rules).await.is_none() {
        return;
    }
    let Some(upstream) = rules.borrow().upstream.get(&to).copied() else {
        return;
    };
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Either direction ending (EOF, error, cut) ends both: the sockets are dropped and closed.
    tokio::select! {
        _ = pump(in_read, out_write, from, to, rules.clone()) => {}
        _ = pump(out_read, in_write, from, to, rules) => {}
    }
}

/// Copies one direction of a connection, applying the link's fault to every chunk.
async fn pump(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    from: u64,
    to: u64,
    mut rules: watch::Receiver<Rules>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = rules.changed() => {
                if changed.is_err() || rules.borrow_and_update().fault(from, to) == Fault::Cut {
                    return;
                }
                continue;
            }
        };
        let Some(delay) = open(from, to, &mut rules).await else {
            return;
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
