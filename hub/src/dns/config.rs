//! The DNS server's static configuration (part of the hub config file) and its validation.
//!
//! Plain data: no sockets, no loaded databases. [`DnsConfig::validate`] checks every field and
//! names the offending one; `spawn` and `explain` call it before using a config.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use meridian_proto::model::{Fqdn, Region};

use super::DnsError;

/// Static DNS configuration: part of the hub's config file.
///
/// Deserializes from YAML/JSON; everything but `zones` has a default. [`DnsConfig::validate`]
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
    /// Number of UDP sockets bound to `listen` with SO_REUSEPORT, each served by its own
    /// thread; 0 means one per CPU.
    #[serde(default)]
    pub udp_sockets: usize,
    /// Idle timeout of a TCP connection, in milliseconds: a whole query must arrive within it
    /// (from the accept or the previous answer), and an answer must be read within it.
    #[serde(default = "default_tcp_timeout_ms")]
    pub tcp_timeout_ms: u64,
    /// Open TCP connections at most; more are closed at once. Lowered to a quarter of the
    /// open-file limit when that is smaller, so DNS clients cannot take the descriptors the
    /// admin API, agents and peers need.
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: usize,
    /// Open TCP connections from one client address at most (RFC 7766 §6.2.2).
    #[serde(default = "default_tcp_max_connections_per_client")]
    pub tcp_max_connections_per_client: usize,
    /// The largest UDP response we send, in bytes (the EDNS buffer size we advertise; a
    /// client's smaller size wins). 1232 avoids IP fragmentation (DNS flag day 2020).
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    /// TTL, in seconds, of dynamic answers whose clusters' health changed within
    /// `stable_after_secs`; caps each hostname's own TTL so clients move quickly while health
    /// is changing.
    #[serde(default = "default_unstable_ttl")]
    pub unstable_ttl: u32,
    /// How long, in seconds, a hostname's clusters must keep their health verdicts before its
    /// normal TTL is restored.
    #[serde(default = "default_stable_after_secs")]
    pub stable_after_secs: u64,
    /// Response rate limiting per client network (UDP only).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// One authoritative zone.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `demo.meridian.test`.
    pub origin: String,
    /// The zone's name servers (NS records, with glue A/AAAA when inside the zone). At least
    /// one; names inside the zone need addresses.
    #[serde(default)]
    pub nameservers: Vec<NameserverConfig>,
    /// SOA fields.
    #[serde(default)]
    pub soa: SoaConfig,
    /// TTL of the SOA, NS, DNSKEY and glue records, in seconds.
    #[serde(default = "default_zone_ttl")]
    pub ttl: u32,
    /// Sign answers online with the zone key from the hub state (DNSKEY, RRSIG and compact
    /// NSEC denial). Until the key is committed the zone is served unsigned.
    #[serde(default)]
    pub dnssec: bool,
}

/// A name server of a zone.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NameserverConfig {
    /// Its host name, e.g. `ns1.demo.meridian.test`.
    pub name: String,
    /// Its addresses; served as A/AAAA (and as glue) when `name` lies inside the zone.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// SOA fields (RFC 1035 §3.3.13); the serial is derived from the hub's applied index.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    /// Primary name server; defaults to the first name server.
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
///
/// Order: the longest matching `networks` prefix; else the database's country (through
/// `countries`), else its continent (through `continents`), else the region nearest to the
/// database's coordinates for the address (through `regions`); else the client's region is
/// unknown.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// CIDR → region overrides, e.g. `203.0.113.0/24: us`.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// A MaxMind-format database (GeoIP2/GeoLite2 Country or City schema, or any database
    /// with `country.iso_code`, `continent.code` or `location.latitude/longitude`).
    #[serde(default)]
    pub mmdb: Option<PathBuf>,
    /// ISO 3166-1 alpha-2 country code (`DE`) → region.
    #[serde(default)]
    pub countries: BTreeMap<String, String>,
    /// Continent code (`AF AN AS EU NA OC SA`) → region; used when the country has no mapping.
    #[serde(default)]
    pub continents: BTreeMap<String, String>,
    /// Region coordinates: used to order fallback regions by distance, and to place clients
    /// that the database locates only by coordinates.
    #[serde(default)]
    pub regions: BTreeMap<String, RegionLocation>,
}

/// Where a region is, for distance ordering.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLocation {
    /// Degrees north, -90..=90.
    pub lat: f64,
    /// Degrees east, -180..=180.
    pub lon: f64,
}

/// Response rate limiting over UDP only (TCP cannot be spoofed, so it is never limited), per
/// response tuple as BIND RRL: the client network (/24 for IPv4, /56 for IPv6) with the query
/// name and type, NODATA per name, NXDOMAIN per zone, errors per network (see `rrl.rs`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Responses per second per client network and response tuple; 0 disables the limit.
    #[serde(default = "default_rrl_rate")]
    pub responses_per_second: u32,
    /// Every Nth limited response is sent truncated (TC, no records) instead of being dropped,
    /// so a real client behind a spoofed network can still retry over TCP; 0 drops them all.
    #[serde(default = "default_rrl_slip")]
    pub slip: u32,
    /// Client networks never limited (CIDRs). Loopback cannot be spoofed from outside the
    /// host, so it is exempt by default (local benchmarks and health checks).
    #[serde(default = "default_rrl_exempt")]
    pub exempt: Vec<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}
fn default_tcp_timeout_ms() -> u64 {
    10_000
}
fn default_tcp_max_connections() -> usize {
    1024
}
fn default_tcp_max_connections_per_client() -> usize {
    32
}
fn default_max_udp_payload() -> u16 {
    1232
}
fn default_unstable_ttl() -> u32 {
    5
}
fn default_stable_after_secs() -> u64 {
    120
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
    1000
}
fn default_rrl_exempt() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}
fn default_rrl_slip() -> u32 {
    2
}

// === impl DnsConfig ===

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            responses_per_second: default_rrl_rate(),
            slip: default_rrl_slip(),
            exempt: default_rrl_exempt(),
        }
    }
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

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            zones: Vec::new(),
            geo: GeoConfig::default(),
            udp_sockets: 0,
            tcp_timeout_ms: default_tcp_timeout_ms(),
            tcp_max_connections: default_tcp_max_connections(),
            tcp_max_connections_per_client: default_tcp_max_connections_per_client(),
            max_udp_payload: default_max_udp_payload(),
            unstable_ttl: default_unstable_ttl(),
            stable_after_secs: default_stable_after_secs(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl DnsConfig {
    /// Checks every field; the error names the first offending one (`zones[1].origin`).
    pub fn validate(&self) -> Result<(), DnsError> {
        self.checked().map(|_| ())
    }

    /// Validates and returns the parsed form the server works with.
    pub(crate) fn checked(&self) -> Result<CheckedConfig, DnsError> {
        if self.max_udp_payload < 512 {
            return Err(config_error(
                "max_udp_payload",
                format!("{} is below the DNS minimum of 512", self.max_udp_payload),
            ));
        }
        if self.tcp_timeout_ms == 0 {
            return Err(config_error("tcp_timeout_ms", "must be above 0"));
        }
        if self.tcp_max_connections == 0 {
            return Err(config_error("tcp_max_connections", "must be above 0"));
        }
        if self.tcp_max_connections_per_client == 0 {
            return Err(config_error(
                "tcp_max_connections_per_client",
                "must be above 0",
            ));
        }
        if self.udp_sockets > 256 {
            return Err(config_error(
                "udp_sockets",
                format!("{} is more than 256", self.udp_sockets),
            ));
        }
        let mut zones: Vec<CheckedZone> = Vec::with_capacity(self.zones.len());
        for (index, zone) in self.zones.iter().enumerate() {
            let checked = check_zone(zone, &format!("zones[{index}]"))?;
            for other in &zones {
                if checked.origin.is_within(&other.origin)
                    || other.origin.is_within(&checked.origin)
                {
                    return Err(config_error(
                        format!("zones[{index}].origin"),
                        format!(
                            "{} overlaps zone {}; nested zones are not supported",
                            checked.origin, other.origin
                        ),
                    ));
                }
            }
            zones.push(checked);
        }
        let geo = check_geo(&self.geo)?;
        let mut rate_limit_exempt = Vec::with_capacity(self.rate_limit.exempt.len());
        for (index, cidr) in self.rate_limit.exempt.iter().enumerate() {
            let net: IpNet = cidr.parse().map_err(|_| {
                config_error(
                    format!("rate_limit.exempt[{index}]"),
                    format!("{cidr:?} is not a CIDR like 127.0.0.0/8"),
                )
            })?;
            rate_limit_exempt.push(net.trunc());
        }
        Ok(CheckedConfig {
            zones,
            geo,
            rate_limit_exempt,
        })
    }
}

/// A validated config's parsed parts.
#[derive(Clone, Debug)]
pub(crate) struct CheckedConfig {
    pub(crate) zones: Vec<CheckedZone>,
    pub(crate) geo: CheckedGeo,
    pub(crate) rate_limit_exempt: Vec<IpNet>,
}

/// A validated zone.
#[derive(Clone, Debug)]
pub(crate) struct CheckedZone {
    pub(crate) origin: Fqdn,
    pub(crate) nameservers: Vec<(Fqdn, Vec<IpAddr>)>,
    pub(crate) mname: Fqdn,
    pub(crate) rname: Fqdn,
    pub(crate) soa: SoaConfig,
    pub(crate) ttl: u32,
    pub(crate) dnssec: bool,
}

/// Validated geo settings (the database is opened separately).
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckedGeo {
    pub(crate) networks: Vec<(IpNet, Region)>,
    pub(crate) mmdb: Option<PathBuf>,
    pub(crate) countries: BTreeMap<String, Region>,
    pub(crate) continents: BTreeMap<String, Region>,
    pub(crate) regions: BTreeMap<Region, RegionLocation>,
}

fn config_error(field: impl Into<String>, why: impl Into<String>) -> DnsError {
    DnsError::Config {
        field: field.into(),
        why: why.into(),
    }
}

fn check_zone(zone: &ZoneConfig, path: &str) -> Result<CheckedZone, DnsError> {
    let origin = Fqdn::new(&zone.origin)
        .map_err(|e| config_error(format!("{path}.origin"), e.to_string()))?;
    if zone.nameservers.is_empty() {
        return Err(config_error(
            format!("{path}.nameservers"),
            "at least one name server is required",
        ));
    }
    let mut nameservers = Vec::with_capacity(zone.nameservers.len());
    let mut seen = BTreeSet::new();
    for (index, ns) in zone.nameservers.iter().enumerate() {
        let field = format!("{path}.nameservers[{index}].name");
        let name = Fqdn::new(&ns.name).map_err(|e| config_error(&field, e.to_string()))?;
        if !seen.insert(name.clone()) {
            return Err(config_error(field, format!("{name} is listed twice")));
        }
        if name.is_within(&origin) && ns.addresses.is_empty() {
            return Err(config_error(
                format!("{path}.nameservers[{index}].addresses"),
                format!("{name} lies inside the zone, so it needs addresses (glue)"),
            ));
        }
        if name == origin {
            return Err(config_error(
                field,
                "a name server at the zone apex is not supported; use a name below it",
            ));
        }
        nameservers.push((name, ns.addresses.clone()));
    }
    let mname = match &zone.soa.mname {
        Some(mname) => Fqdn::new(mname)
            .map_err(|e| config_error(format!("{path}.soa.mname"), e.to_string()))?,
        None => nameservers[0].0.clone(),
    };
    let rname = match &zone.soa.rname {
        Some(rname) => {
            let rname = rname.replacen('@', ".", 1);
            Fqdn::new(&rname)
                .map_err(|e| config_error(format!("{path}.soa.rname"), e.to_string()))?
        }
        None => Fqdn::new(format!("hostmaster.{origin}"))
            .map_err(|e| config_error(format!("{path}.origin"), e.to_string()))?,
    };
    for (field, value) in [
        ("refresh", zone.soa.refresh),
        ("retry", zone.soa.retry),
        ("expire", zone.soa.expire),
    ] {
        if value == 0 {
            return Err(config_error(
                format!("{path}.soa.{field}"),
                "must be above 0",
            ));
        }
    }
    if zone.ttl == 0 {
        return Err(config_error(format!("{path}.ttl"), "must be above 0"));
    }
    Ok(CheckedZone {
        origin,
        nameservers,
        mname,
        rname,
        soa: zone.soa.clone(),
        ttl: zone.ttl,
        dnssec: zone.dnssec,
    })
}

const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

fn check_region(field: String, region: &str) -> Result<Region, DnsError> {
    Region::new(region).map_err(|e| config_error(field, e.to_string()))
}

fn check_geo(geo: &GeoConfig) -> Result<CheckedGeo, DnsError> {
    let mut networks = Vec::with_capacity(geo.networks.len());
    for (cidr, region) in &geo.networks {
        let field = format!("geo.networks[{cidr:?}]");
        let net: IpNet = cidr.parse().map_err(|_| {
            config_error(&field, format!("{cidr:?} is not a CIDR like 192.0.2.0/24"))
        })?;
        if net.trunc() != net {
            return Err(config_error(
                field,
                format!("{cidr} has host bits set; did you mean {}?", net.trunc()),
            ));
        }
        networks.push((net, check_region(field, region)?));
    }
    let mut countries = BTreeMap::new();
    for (code, region) in &geo.countries {
        let field = format!("geo.countries[{code:?}]");
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(config_error(
                field,
                format!("{code:?} is not an upper-case ISO 3166-1 alpha-2 code like DE"),
            ));
        }
        countries.insert(code.clone(), check_region(field, region)?);
    }
    let mut continents = BTreeMap::new();
    for (code, region) in &geo.continents {
        let field = format!("geo.continents[{code:?}]");
        if !CONTINENTS.contains(&code.as_str()) {
            return Err(config_error(
                field,
                format!("{code:?} is not one of {}", CONTINENTS.join(" ")),
            ));
        }
        continents.insert(code.clone(), check_region(field, region)?);
    }
    let mut regions = BTreeMap::new();
    for (name, location) in &geo.regions {
        let field = format!("geo.regions[{name:?}]");
        let region = check_region(field.clone(), name)?;
        if !(-90.0..=90.0).contains(&location.lat) {
            return Err(config_error(
                format!("{field}.lat"),
                format!("{} is outside -90..=90", location.lat),
            ));
        }
        if !(-180.0..=180.0).contains(&location.lon) {
            return Err(config_error(
                format!("{field}.lon"),
                format!("{} is outside -180..=180", location.lon),
            ));
        }
        regions.insert(region, *location);
    }
    Ok(CheckedGeo {
        networks,
        mmdb: geo.mmdb.clone(),
        countries,
        continents,
        regions,
    })
}
