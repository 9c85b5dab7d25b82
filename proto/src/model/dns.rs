//! DNS policy for a hostname: which clusters serve it and how answers are chosen.

use super::names::{ClusterName, Fqdn, Region};

/// The traffic policy of one hostname served by the hub's authoritative DNS.
///
/// Answer choice composes three steps: geo picks the client's region (falling back to other
/// regions in `region_order`, then by distance), then the healthy targets of that region are
/// split by weight. See `hub::dns::answer` for the exact algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostnamePolicy {
    /// The hostname; must lie inside one of the hub's zones.
    pub fqdn: Fqdn,
    /// Answer TTL in seconds when health is stable.
    pub ttl: u32,
    /// The clusters that serve this hostname.
    pub targets: Vec<HostnameTarget>,
    /// How answers are chosen among healthy targets.
    pub routing: Routing,
}

/// One cluster serving a hostname.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostnameTarget {
    /// The cluster (must exist).
    pub cluster: ClusterName,
    /// Relative weight within its region; 0 means "only when nothing else is healthy".
    pub weight: u32,
}

/// How answers are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// Prefer clusters in the client's region (by ECS or source address).
    pub geo: bool,
    /// Regions in failover order, used when the preferred region has no healthy target.
    /// Regions not listed come after, nearest first.
    pub region_order: Vec<Region>,
    /// How many addresses one answer carries: 1 gives a single weighted pick, more gives up
    /// to that many healthy targets (multivalue).
    pub max_answers: u32,
    /// What to answer when no target is healthy.
    pub when_all_unhealthy: AllUnhealthy,
    /// When fewer than this percentage of targets are healthy, treat all as healthy
    /// (a lone survivor is not handed all traffic when most targets merely flap). 0 disables.
    pub panic_threshold_percent: u8,
    /// Operator pin: answer only this cluster while it is healthy.
    pub pinned: Option<ClusterName>,
}

/// The answer when every target is unhealthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllUnhealthy {
    /// Answer with every target (clients may still get through; DNS cannot know better).
    #[default]
    FailOpen,
    /// Answer with no address (NODATA).
    FailClosed,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            geo: true,
            region_order: Vec::new(),
            max_answers: 1,
            when_all_unhealthy: AllUnhealthy::FailOpen,
            panic_threshold_percent: 0,
            pinned: None,
        }
    }
}

/// A static record served by the hub's zones: apex records, CNAME aliases, TXT (ACME DNS-01
/// challenges, SPF, verification tokens), MX. Hostnames with a [`HostnamePolicy`] get their
/// A/AAAA answers from the policy instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// The owner name; must lie inside one of the hub's zones.
    pub name: Fqdn,
    /// TTL in seconds.
    pub ttl: u32,
    /// The record's data.
    pub data: RecordData,
}

/// The data of a [`DnsRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    /// An IPv4 address.
    A(std::net::Ipv4Addr),
    /// An IPv6 address.
    Aaaa(std::net::Ipv6Addr),
    /// An alias; a name with a CNAME has no other data and cannot be a zone apex.
    Cname(Fqdn),
    /// Text strings, each at most 255 bytes.
    Txt(Vec<String>),
    /// A mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// The exchanger's host name.
        exchange: Fqdn,
    },
}

impl RecordData {
    /// The record type's name (`A`, `AAAA`, `CNAME`, `TXT`, `MX`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::A(_) => "A",
            Self::Aaaa(_) => "AAAA",
            Self::Cname(_) => "CNAME",
            Self::Txt(_) => "TXT",
            Self::Mx { .. } => "MX",
        }
    }

    /// Checks limits the wire format imposes (TXT strings of at most 255 bytes, at most 4000
    /// bytes of text in one record).
    pub fn check(&self) -> Result<(), super::ModelError> {
        if let Self::Txt(strings) = self {
            if strings.is_empty() {
                return Err(super::ModelError::invalid(
                    "TXT record",
                    "",
                    "needs at least one string",
                ));
            }
            if let Some(long) = strings.iter().find(|s| s.len() > 255) {
                return Err(super::ModelError::invalid(
                    "TXT string",
                    long,
                    format!("is {} bytes long, at most 255 are allowed", long.len()),
                ));
            }
            let total: usize = strings.iter().map(|s| s.len() + 1).sum();
            if total > 4000 {
                return Err(super::ModelError::invalid(
                    "TXT record",
                    &strings.join(" "),
                    format!("holds {total} bytes, at most 4000 are allowed"),
                ));
            }
        }
        Ok(())
    }
}
