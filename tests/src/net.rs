//! Free ports on loopback addresses.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};

/// Returns a port that is free for both TCP and UDP on `ip` right now.
///
/// There is a window between this call and the process binding the port; it is only used where
/// peers must know an address before the process starts (Raft peers, a Gateway listener
/// written into YAML). Everything else binds port 0 and reports its address in a ready file.
pub fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind tcp :0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(SocketAddr::new(ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free tcp+udp port on {ip}");
}

/// `n` distinct ports free for TCP and UDP on `ip`: every socket is held until all are chosen,
/// so the kernel cannot return one port twice (a port closed at once may come back from the
/// next bind to port 0).
pub fn free_ports(ip: IpAddr, n: usize) -> Vec<u16> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n * 50 {
        if held.len() == n {
            break;
        }
        let tcp = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind tcp :0");
        let port = tcp.local_addr().expect("local addr").port();
        if let Ok(udp) = UdpSocket::bind(SocketAddr::new(ip, port)) {
            held.push((port, tcp, udp));
        }
    }
    assert_eq!(held.len(), n, "no {n} free tcp+udp ports on {ip}");
    held.into_iter().map(|(port, _, _)| port).collect()
}

/// `free_port` as a socket address.
pub fn free_addr(ip: &str) -> SocketAddr {
    let ip: IpAddr = ip.parse().expect("ip");
    SocketAddr::new(ip, free_port(ip))
}
