//! Authoritative GeoDNS for the hub's zones (hickory-server with Meridian's own request handler).
//!
//! - [`config`]: [`DnsConfig`], the static part of the hub config, and its validation.
//! - `geo`: client address → region (CIDR overrides, MaxMind database, coordinates).
//! - `answer`: the pure answer policy (weights, failover tiers, pin, panic, fail-open).
//! - `snapshot`: a [`DnsView`] compiled into names, signed RRsets and per-region plans.
//! - `respond`: one query → response records; EDNS, ECS, truncation.
//! - `fast`: the UDP fast path for plain A/AAAA queries, from pre-encoded wire data.
//! - `dnssec`: online signing, compact denial, DS.
//! - `server`: the UDP socket threads (SO_REUSEPORT), the TCP server's answers, the view watcher.
//! - `tcp`: DNS over TCP (RFC 7766) with connection caps, total and per client.
//! - `explain`: what a client would get and why.
//!
//! **Boundary:** hickory types never leave this module.
//!
//! **Invariant:** answers are precomputed from a [`DnsView`] whenever it changes; the query path
//! only looks up and picks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use meridian_proto::model::{Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, HostnamePolicy};

pub mod config;

mod answer;
mod dnssec;
mod explain;
mod fast;
mod geo;
mod respond;
mod rrl;
mod server;
mod snapshot;
mod tcp;

#[cfg(test)]
mod tests;

pub use answer::{Candidate, Group, Member, Plan, PlanMode};
pub use config::{
    DnsConfig, GeoConfig, NameserverConfig, RateLimitConfig, RegionLocation, SoaConfig, ZoneConfig,
};
pub use dnssec::generate_zone_key;
pub use explain::{Explanation, HostnameExplanation, explain};
pub use server::{DnsExplainer, DnsHandle, PacketAnswerer, spawn};

/// Everything the DNS server needs from the hub's committed state, published by the hub after
/// every applied change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsView {
    /// The applied Raft index this view was built from; DNS derives SOA serials from it so
    /// every hub node serves the same serial for the same state.
    pub applied_index: u64,
    /// The registered clusters some hostname targets, with their committed health and the
    /// gateway addresses their agent last reported (used when `Cluster::addresses` is empty).
    /// Clusters no hostname targets are left out: no answer depends on them.
    pub clusters: BTreeMap<ClusterName, ClusterView>,
    /// Hostname policies.
    pub hostnames: BTreeMap<Fqdn, HostnamePolicy>,
    /// DNSSEC signing keys per zone (PKCS#8 DER, ECDSA P-256), generated once by the leader and
    /// committed, so every hub node signs with the same key.
    pub zone_keys: BTreeMap<Fqdn, Vec<u8>>,
    /// Static records (apex records, CNAME aliases, TXT such as ACME challenges, MX).
    pub records: Vec<DnsRecord>,
}

/// One cluster as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The registered cluster.
    pub cluster: Cluster,
    /// Its committed health verdict.
    pub health: ClusterHealth,
    /// Gateway addresses its agent reported at registration.
    pub reported_addresses: Vec<IpAddr>,
    /// Hostnames this cluster cannot serve (no ready backend behind their routes, as committed
    /// by the leader's health tracker), with why. DNS treats the cluster as down for these,
    /// unless no healthy target of the hostname can serve it.
    pub unserved_hostnames: BTreeMap<Fqdn, String>,
    /// When the latest change of a hostname's serving state in this cluster was decided,
    /// Unix milliseconds (the leader's clock; 0 if none), for the time-to-serve metric.
    pub serving_changed_unix_ms: u64,
}

/// Errors of the DNS module; each names the offending input.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configuration is invalid.
    #[error("dns config: {field}: {why}")]
    Config {
        /// The field path, e.g. `zones[0].origin`.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// Binding or serving a socket failed.
    #[error("dns socket {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A query given to `explain` is invalid.
    #[error("invalid query: {0}")]
    Query(String),
    /// The zone is not served, or has no key yet, or its key is unusable.
    #[error("zone {zone}: {why}")]
    Zone {
        /// The zone.
        zone: String,
        /// What is wrong.
        why: String,
    },
}

/// Whether clients could connect to `ip` given in a DNS answer: not unspecified, broadcast
/// or multicast, and IPv4 written as IPv4 (an IPv4-mapped IPv6 address would be served as an
/// AAAA record no IPv6 client can reach).
pub fn answerable(ip: IpAddr) -> Result<(), String> {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            Err("is the unspecified address, which no client can connect to".into())
        }
        IpAddr::V4(v4) if v4.is_broadcast() => {
            Err("is the broadcast address, which no client can connect to".into())
        }
        IpAddr::V4(v4) if v4.is_multicast() => Err("is a multicast address (224.0.0.0/4)".into()),
        IpAddr::V6(v6) if v6.is_unspecified() => {
            Err("is the unspecified address, which no client can connect to".into())
        }
        IpAddr::V6(v6) if v6.is_multicast() => Err("is a multicast address (ff00::/8)".into()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Err(format!(
                "is an IPv4-mapped IPv6 address; list the IPv4 address {v4} instead"
            )),
            None => Ok(()),
        },
        IpAddr::V4(_) => Ok(()),
    }
}

/// The DS record(s) to publish in the parent zone of `zone` (presentation format, SHA-256
/// digest), from the zone's committed key.
pub fn ds_records(view: &DnsView, zone: &Fqdn) -> Result<Vec<String>, DnsError> {
    let Some(pkcs8) = view.zone_keys.get(zone) else {
        return Err(DnsError::Zone {
            zone: zone.to_string(),
            why: "no DNSSEC key has been committed for this zone".into(),
        });
    };
    let signer = dnssec::ZoneSigner::new(&snapshot::to_name(zone), pkcs8, 3600)?;
    Ok(vec![signer.ds()?])
}
