//! A Raft peer's address: an IP address or a DNS name, and a port.
//!
//! Names matter on Kubernetes: a StatefulSet pod keeps its DNS name
//! (`meridian-hub-0.meridian-hub-peers.<ns>.svc`) across restarts but not its IP, and the group
//! keeps every member's address in its replicated log. A name is resolved each time a
//! connection to the peer is made, so a restarted pod with a new IP is found again.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A peer's host: an IP address or a DNS name (lower-cased, a trailing dot kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerHost {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name, resolved on every connect.
    Name(String),
}

/// A peer's gRPC address: `IP:port`, `[IPv6]:port` or `dns-name:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr {
    host: PeerHost,
    port: u16,
}

/// Why a string is not a peer address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a peer address (IP:port, [IPv6]:port or dns-name:port): {why}")]
pub struct PeerAddrError {
    input: String,
    why: &'static str,
}

// === impl PeerAddr ===

impl PeerAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host.
    pub fn host(&self) -> &PeerHost {
        &self.host
    }

    /// The IP address, when the host is one (not a name).
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            PeerHost::Ip(ip) => Some(ip),
            PeerHost::Name(_) => None,
        }
    }

    /// Whether no other node could connect to it: port 0, or an unspecified IP (0.0.0.0, ::).
    pub fn is_unreachable(&self) -> bool {
        self.port == 0 || self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: PeerHost::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            PeerHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            PeerHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            PeerHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = input.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let fail = |why| PeerAddrError {
            input: input.to_string(),
            why,
        };
        let (host, port) = input.rsplit_once(':').ok_or_else(|| fail("no port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| fail("the port is not a number from 0 to 65535"))?;
        if host.starts_with('[') || host.contains(':') {
            return Err(fail(
                "a host with a colon must be an IPv6 address in brackets",
            ));
        }
        if host.parse::<IpAddr>().is_ok() {
            // Unreachable: SocketAddr parsed it above. Kept for clarity of the name check.
            return Err(fail("malformed IP address"));
        }
        // A trailing dot is kept: it makes the name absolute, so the resolver does not try
        // the search domains first (Kubernetes pods have `ndots:5`).
        let name = host.to_ascii_lowercase();
        check_dns_name(name.strip_suffix('.').unwrap_or(&name)).map_err(fail)?;
        Ok(Self {
            host: PeerHost::Name(name),
            port,
        })
    }
}

/// A host name as RFC 1123 allows it: dot-separated labels of letters, digits and hyphens,
/// 1–63 characters each, not starting or ending with a hyphen, 253 characters in all; and not
/// all-numeric in its last label, so a mistyped IPv4 address (`10.0.0`) is not taken for a name.
fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("no host");
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("a host name label is empty or longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("a host name may hold only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a host name label starts or ends with a hyphen");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("neither an IP address nor a host name (its last label is all digits)");
    }
    Ok(())
}

impl serde::Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_and_name_addresses_parse_and_print_back() {
        for (input, printed) in [
            ("10.0.0.1:7001", "10.0.0.1:7001"),
            ("[fd00::1]:7001", "[fd00::1]:7001"),
            (
                "meridian-hub-0.meridian-hub-peers.meridian-system.svc:7001",
                "meridian-hub-0.meridian-hub-peers.meridian-system.svc:7001",
            ),
            ("Hub-1.Example.COM:7001", "hub-1.example.com:7001"),
            (
                "hub-1.peers.ns.svc.cluster.local.:7001",
                "hub-1.peers.ns.svc.cluster.local.:7001",
            ),
            ("localhost:1", "localhost:1"),
        ] {
            let addr: PeerAddr = input.parse().unwrap();
            assert_eq!(addr.to_string(), printed, "{input}");
            assert_eq!(printed.parse::<PeerAddr>().unwrap(), addr);
        }
        let addr: PeerAddr = "10.0.0.1:7001".parse().unwrap();
        assert_eq!(addr.ip(), Some("10.0.0.1".parse().unwrap()));
        let name: PeerAddr = "hub-0.peers:7001".parse().unwrap();
        assert_eq!(name.ip(), None);
        assert_eq!(name.port(), 7001);
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_reason() {
        for (input, why) in [
            ("hub-0", "no port"),
            ("hub-0:70000", "port"),
            ("hub-0:", "port"),
            (":7001", "no host"),
            ("10.0.0:7001", "all digits"),
            ("::1:7001", "brackets"),
            ("[hub]:7001", "brackets"),
            ("hub_0.peers:7001", "only letters"),
            ("-hub.peers:7001", "hyphen"),
            ("hub..peers:7001", "empty"),
            ("http://hub:7001", "brackets"),
        ] {
            let err = input.parse::<PeerAddr>().unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn unreachable_addresses_are_recognised() {
        for input in ["0.0.0.0:7001", "[::]:7001", "hub:0", "10.0.0.1:0"] {
            assert!(
                input.parse::<PeerAddr>().unwrap().is_unreachable(),
                "{input}"
            );
        }
        assert!(!"hub:7001".parse::<PeerAddr>().unwrap().is_unreachable());
    }
}
