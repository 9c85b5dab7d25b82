//! Authoritative GeoDNS for the hub's zones (hickory-server with Meridian's own request handler).
//!
//! **Boundary:** hickory types never leave this module.
//!
//! **Invariant:** answers are precomputed from a [`DnsView`] whenever it changes; the query path
//! only looks up and picks.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

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

/// Static DNS configuration: part of the hub's config file.
///
/// Deserializes from YAML/JSON with defaults for everything but `zones`; [`DnsConfig::validate`]
/// checks it and names the offending field.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Address for both UDP and TCP. Port 0 picks a free port (tests).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The zones this hub is authoritative for.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Client location → region.
    #[serde(default)]
    pub geo: GeoConfig,
    /// Number of UDP sockets bound to `listen` with SO_REUSEPORT (0 = one per CPU).
    #[serde(default)]
    pub udp_sockets: usize,
    /// Idle timeout of a TCP connection, in milliseconds.
    #[serde(default = "default_tcp_timeout_ms")]
    pub tcp_timeout_ms: u64,
    /// Response rate limiting per client network.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// One authoritative zone.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `demo.meridian.test`.
    pub origin: String,
    /// The zone's name servers (NS records, with glue A/AAAA when inside the zone).
    #[serde(default)]
    pub nameservers: Vec<NameserverConfig>,
    /// SOA fields.
    #[serde(default)]
    pub soa: SoaConfig,
    /// TTL of the SOA, NS, DNSKEY and glue records, in seconds.
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    /// Sign answers online with the zone key from the hub state (DNSKEY/RRSIG/NSEC).
    #[serde(default)]
    pub dnssec: bool,
}

/// A name server of a zone.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NameserverConfig {
    /// Its host name, e.g. `ns1.demo.meridian.test`.
    pub name: String,
    /// Its addresses; served as glue when `name` lies inside the zone.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// SOA fields (RFC 1035 §3.3.13); the serial is derived from the hub's applied index.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    /// Primary name server; defaults to the first name server, else `ns.<origin>`.
    #[serde(default)]
    pub mname: Option<String>,
    /// Responsible mailbox in domain form (`hostmaster.example.com`); defaults to
    /// `hostmaster.<origin>`.
    #[serde(default)]
    pub rname: Option<String>,
    /// Seconds.
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    /// Seconds.
    #[serde(default = "default_retry")]
    pub retry: u32,
    /// Seconds.
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308), seconds.
    #[serde(default = "default_negative_ttl")]
    pub minimum: u32,
}

/// How a client address becomes a region.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// CIDR → region overrides; the longest matching prefix wins, before the database.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// A MaxMind-format database (GeoIP2/GeoLite2 Country or City schema).
    #[serde(default)]
    pub mmdb: Option<PathBuf>,
    /// ISO 3166 country code (`DE`) → region.
    #[serde(default)]
    pub countries: BTreeMap<String, String>,
    /// Continent code (`EU`, `NA`, ...) → region; used when the country has no mapping.
    #[serde(default)]
    pub continents: BTreeMap<String, String>,
    /// Region coordinates for nearest-region fallback.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionLocation>,
}

/// Where a region is, for distance ordering.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLocation {
    /// Degrees north.
    pub lat: f64,
    /// Degrees east.
    pub lon: f64,
}

/// Response rate limiting (per client /24 or /56).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Responses per second per client network over UDP; 0 disables the limit.
    #[serde(default = "default_rrl_rate")]
    pub responses_per_second: u32,
    /// Every Nth limited response is sent truncated (TC) instead of dropped so genuine
    /// clients can retry over TCP; 0 drops all.
    #[serde(default = "default_rrl_slip")]
    pub slip: u32,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}
fn default_tcp_timeout_ms() -> u64 {
    10_000
}
fn default_zone_ttl() -> u32 {
    3600
}
fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    604_800
}
fn default_negative_ttl() -> u32 {
    60
}
fn default_rrl_rate() -> u32 {
    0
}
fn default_rrl_slip() -> u32 {
    2
}

impl Default for SoaConfig {
    fn default() -> Self {
        Self {
            mname: None,
            rname: None,
            refresh: default_refresh(),
            retry: default_retry(),
            expire: default_expire(),
            minimum: default_negative_ttl(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            responses_per_second: default_rrl_rate(),
            slip: default_rrl_slip(),
        }
    }
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
    /// The zone is not served, or has no key yet.
    #[error("zone {zone}: {why}")]
    Zone {
        /// The zone.
        zone: String,
        /// What is wrong.
        why: String,
    },
}

/// A running DNS server.
pub struct DnsHandle {
    local_addr: SocketAddr,
}

impl DnsHandle {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the server tasks to end.
    pub async fn shutdown(self) {
        todo!()
    }
}

/// Validates `config`, binds UDP and TCP on `config.listen` and serves answers computed from
/// the latest [`DnsView`] seen on `view`.
pub async fn spawn(
    config: DnsConfig,
    view: tokio::sync::watch::Receiver<std::sync::Arc<DnsView>>,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<DnsHandle, DnsError> {
    let _ = (config, view, registry);
    todo!()
}

/// What a client would get for a query, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Explanation {
    /// The query name, normalized.
    pub name: String,
    /// The query type.
    pub qtype: String,
    /// The client address the decision used.
    pub client: IpAddr,
}

/// Explains the answer `client` would get for `name`/`qtype` under `config` and `view`.
pub fn explain(
    config: &DnsConfig,
    view: &DnsView,
    name: &str,
    qtype: &str,
    client: IpAddr,
) -> Result<Explanation, DnsError> {
    let _ = (config, view, name, qtype, client);
    todo!()
}

/// The DS record(s) to publish in the parent zone of `zone`, in presentation format.
pub fn ds_records(view: &DnsView, zone: &Fqdn) -> Result<Vec<String>, DnsError> {
    let _ = (view, zone);
    todo!()
}
