//! Ports `meridian dev` must choose before its processes start (Raft peers know each other's
//! addresses up front; the gateway's listeners are written into its YAML).
//!
//! They are taken from *below* the kernel's ephemeral range. A port found by binding port 0
//! and closing the socket is in that range, so the kernel may hand it to another socket before
//! the process that should own it starts: an outgoing connection from a hub that started
//! first, or another process's bind to port 0. Below the range, only an explicit bind can take
//! it, and every chosen port is checked free for TCP and UDP.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

use anyhow::bail;

/// The kernel's ephemeral range, or Linux's default when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut ports = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((ports.next()??, ports.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// `n` distinct ports free on `ip` for both TCP and UDP, outside the ephemeral range when
/// there is room for it. Every socket is held until all are chosen.
pub(super) fn free_ports(ip: IpAddr, n: usize) -> anyhow::Result<Vec<u16>> {
    let (low, high) = ephemeral_range();
    let (first, last) = if low >= 12000 {
        (10000, low - 1)
    } else if high <= 63000 {
        (high + 1, u16::MAX)
    } else {
        (1024, u16::MAX)
    };
    let span = u64::from(last - first) + 1;
    let seed = RandomState::new();
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for attempt in 0..n as u64 * 200 {
        if ports.len() == n {
            break;
        }
        let mut hasher = seed.build_hasher();
        hasher.write_u64(attempt);
        // `span` is at most 65536, so the remainder fits a u16 offset.
        let port = first + (hasher.finish() % span) as u16;
        if ports.contains(&port) {
            continue;
        }
        let Ok(tcp) = TcpListener::bind(SocketAddr::new(ip, port)) else {
            continue;
        };
        if let Ok(udp) = UdpSocket::bind(SocketAddr::new(ip, port)) {
            ports.push(port);
            held.push((tcp, udp));
        }
    }
    if ports.len() < n {
        bail!("no {n} free ports on {ip} between {first} and {last}");
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let ports = free_ports(ip, 9).unwrap();
        let (low, high) = ephemeral_range();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 9);
        for port in ports {
            assert!(port < low || port > high, "{port} is in {low}-{high}");
            TcpListener::bind(SocketAddr::new(ip, port)).unwrap();
        }
    }
}
