//! A fault-injecting TCP proxy in front of every test node.
//!
//! Each node advertises its proxy's address, so every connection *to* node `k` passes through
//! proxy `k`. Each node's outbound connections originate from its own loopback source IP
//! (`127.0.50.k`, via `RaftConfig::outbound_source_ip`), so a proxy knows which node a
//! connection comes from and can cut, refuse, blackhole or delay it per directed pair.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The fault rules all proxies follow.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Directed (from, to) pairs whose connections are cut (or held, see `blackhole`).
    pub blocked: HashSet<(u64, u64)>,
    /// Blocked connections are held open silently instead of closed.
    pub blackhole: bool,
    /// Delay added to every chunk forwarded.
    pub delay: Duration,
    /// Where each node's real server listens (absent: node down, connections refused).
    pub upstream: HashMap<u64, SocketAddr>,
}

impl Rules {
    fn cut(&self, from: u64, to: u64) -> bool {
        !self.upstream.contains_key(&to) || self.blocked.contains(&(from, to))
    }
}

/// The proxies of one test cluster.
pub struct Net {
    rules: watch::Sender<Rules>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// The source IP node `id` connects from.
pub fn source_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 50, u8::try_from(id).unwrap()))
}

fn node_of(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 50] => u64::from(v4.octets()[3]),
        _ => 0,
    }
}

impl Net {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            rules: watch::Sender::new(Rules::default()),
            tasks: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Starts the proxy for node `to`; returns its address (the node's advertised address).
    pub async fn add_proxy(&self, to: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rules = self.rules.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    return;
                };
                let from = node_of(peer.ip());
                tokio::spawn(relay(inbound, from, to, rules.clone()));
            }
        });
        self.tasks.lock().unwrap().push(task);
        addr
    }

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

    /// Cuts `group` off from everyone else (both directions).
    pub fn isolate(&self, group: &[u64], all: &[u64]) {
        self.rules.send_modify(|rules| {
            for a in group {
                for b in all.iter().filter(|b| !group.contains(b)) {
                    rules.blocked.insert((*a, *b));
                    rules.blocked.insert((*b, *a));
                }
            }
        });
    }

    pub fn set_blackhole(&self, blackhole: bool) {
        self.rules.send_modify(|rules| rules.blackhole = blackhole);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.rules.send_modify(|rules| rules.delay = delay);
    }

    /// Removes every partition and delay.
    pub fn heal(&self) {
        self.rules.send_modify(|rules| {
            rules.blocked.clear();
            rules.delay = Duration::ZERO;
        });
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn relay(inbound: TcpStream, from: u64, to: u64, mut rules: watch::Receiver<Rules>) {
    // Wait while blackholed; refuse when cut.
    let upstream = loop {
        let current = rules.borrow_and_update().clone();
        if !current.cut(from, to) {
            break current.upstream.get(&to).copied();
        }
        if !current.blackhole || !current.upstream.contains_key(&to) {
            return;
        }
        if rules.changed().await.is_err() {
            return;
        }
    };
    let Some(upstream) = upstream else { return };
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = pump(in_read, out_write, from, to, rules.clone()) => {}
        _ = pump(out_read, in_write, from, to, rules.clone()) => {}
    }
}

async fn pump(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
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
                if changed.is_err() {
                    return;
                }
                let current = rules.borrow_and_update().clone();
                if current.cut(from, to) && !(current.blackhole && current.upstream.contains_key(&to)) {
                    return;
                }
                continue;
            }
        };
        // Hold the bytes while blackholed; drop the connection when cut.
        let delay = loop {
            let current = rules.borrow_and_update().clone();
            if !current.cut(from, to) {
                break current.delay;
            }
            if !current.blackhole || !current.upstream.contains_key(&to) {
                return;
            }
            if rules.changed().await.is_err() {
                return;
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if writer.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
