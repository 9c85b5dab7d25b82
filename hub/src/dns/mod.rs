//! Authoritative GeoDNS for the hub's zones (hickory-server with Meridian's own request handler).
//!
//! **Boundary:** hickory types never leave this module.
//!
//! **Invariant:** answers are precomputed from a [`DnsView`] whenever it changes; the query path
//! only looks up and picks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use meridian_proto::model::{Cluster, ClusterHealth, ClusterName, Fqdn, HostnamePolicy};

/// Everything the DNS server needs from the hub's committed state, published by the hub after
/// every applied change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsView {
    /// The applied Raft index this view was built from; DNS derives SOA serials from it so
    /// every hub node serves the same serial for the same state.
    pub applied_index: u64,
    /// Registered clusters with their committed health and the gateway addresses their agent
    /// last reported (used when `Cluster::addresses` is empty).
    pub clusters: BTreeMap<ClusterName, ClusterView>,
    /// Hostname policies.
    pub hostnames: BTreeMap<Fqdn, HostnamePolicy>,
    /// DNSSEC signing keys per zone (PKCS#8 DER, ECDSA P-256), generated once by the leader and
    /// committed, so every hub node signs with the same key.
    pub zone_keys: BTreeMap<Fqdn, Vec<u8>>,
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
}
