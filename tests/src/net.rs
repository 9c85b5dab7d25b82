//! Free ports on loopback addresses.
//!
//! Ports that a test must know before a process starts (Raft peers, a Gateway listener written
//! into YAML) are chosen *outside* the kernel's ephemeral range. A port picked from the
//! ephemeral range by binding port 0 and closing the socket can be handed out again by the
//! kernel to any later bind to port 0 (an admin server, an outgoing connection) before the
//! process under test binds it; a port below that range is never handed out that way, so the
//! only remaining race is with another test that picked the same port, which the bind check and
//! the per-process spread make rare.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports handed out by this process, so two calls never return the same port.
static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static CALLS: AtomicU32 = AtomicU32::new(0);

/// The range tests choose fixed ports from: below the ephemeral range when there is room,
/// otherwise above it.
fn candidate_range() -> (u16, u16) {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if low >= 12000 {
        (10000, low - 1)
    } else if high <= 63000 {
        (high + 1, 65535)
    } else {
        // No room outside the ephemeral range: fall back to all unprivileged ports.
        (1024, 65535)
    }
}

fn random_u32() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(CALLS.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

fn try_port(ip: IpAddr, port: u16) -> Option<(TcpListener, UdpSocket)> {
    let tcp = TcpListener::bind(SocketAddr::new(ip, port)).ok()?;
    let udp = UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
    Some((tcp, udp))
}

/// Returns a port that is free for both TCP and UDP on `ip` right now, outside the ephemeral
/// range, and not returned before by this process.
pub fn free_port(ip: IpAddr) -> u16 {
    free_ports(ip, 1)[0]
}

/// `n` distinct ports free for TCP and UDP on `ip`, outside the ephemeral range.
pub fn free_ports(ip: IpAddr, n: usize) -> Vec<u16> {
    let (lo, hi) = candidate_range();
    let span = u32::from(hi - lo) + 1;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut chosen = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n * 200 {
        if chosen.len() == n {
            break;
        }
        let port = lo + (random_u32() % span) as u16;
        if given.contains(&port) || chosen.contains(&port) {
            continue;
        }
        if let Some(sockets) = try_port(ip, port) {
            chosen.push(port);
            held.push(sockets);
        }
    }
    assert_eq!(
        chosen.len(),
        n,
        "no {n} free tcp+udp ports on {ip} in {lo}-{hi}"
    );
    given.extend_from_slice(&chosen);
    chosen
}

/// `free_port` as a socket address.
pub fn free_addr(ip: &str) -> SocketAddr {
    let ip: IpAddr = ip.parse().expect("ip");
    SocketAddr::new(ip, free_port(ip))
}
