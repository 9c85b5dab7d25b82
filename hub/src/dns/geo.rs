//! Client address → region: CIDR overrides, a MaxMind-format database (country, continent,
//! coordinates) and region coordinates, plus the ECS scope each decision is valid for.
//!
//! **Invariant:** [`GeoMap::locate`] never allocates and never fails; an address it cannot place
//! gets `region: None` (the "unknown client" plans).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use meridian_proto::model::Region;

use super::DnsError;
use super::config::{CheckedGeo, RegionLocation};

/// Index of a region known to the geo map (`GeoMap::regions()[id]`).
pub(crate) type RegionId = u16;

/// How a client was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GeoSource {
    /// A `geo.networks` override matched.
    Network,
    /// The database's country is mapped.
    Country,
    /// The database's continent is mapped.
    Continent,
    /// The database gave coordinates; the nearest configured region was chosen.
    Coordinates,
    /// Nothing placed the client.
    Unknown,
}

/// Where a client is, and for which prefix of its address that holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    /// The client's region, if any rule placed it.
    pub(crate) region: Option<RegionId>,
    /// The number of leading address bits the decision depends on: every address sharing
    /// them gets the same region (the ECS scope when the answer depends on location).
    pub(crate) scope: u8,
    /// Which rule decided.
    pub(crate) source: GeoSource,
}

/// The compiled geo configuration. Immutable; shared by every query thread.
pub(crate) struct GeoMap {
    regions: Vec<Region>,
    region_ids: HashMap<Region, RegionId>,
    coordinates: Vec<Option<RegionLocation>>,
    v4: Trie,
    v6: Trie,
    mmdb: Option<maxminddb::Reader<Vec<u8>>>,
    countries: HashMap<[u8; 2], RegionId>,
    continents: HashMap<[u8; 2], RegionId>,
    placements: Box<[AtomicU64]>,
}

/// What we read from a database record: GeoIP2 paths, plus the flat `country_code` some free
/// databases use.
#[derive(serde::Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentCode<'a>>,
    #[serde(default)]
    location: Option<Coordinates>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct ContinentCode<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct Coordinates {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

/// A binary trie of CIDR overrides for one address family.
#[derive(Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Clone, Copy, Default)]
struct TrieNode {
    children: [Option<u32>; 2],
    value: Option<RegionId>,
}

// === impl GeoMap ===

impl GeoMap {
    /// Compiles the validated config, opening the database if one is configured.
    pub(crate) fn new(geo: &CheckedGeo) -> Result<Self, DnsError> {
        let mmdb =
            match &geo.mmdb {
                Some(path) => Some(maxminddb::Reader::open_readfile(path).map_err(|error| {
                    DnsError::Config {
                        field: "geo.mmdb".into(),
                        why: format!("cannot open {}: {error}", path.display()),
                    }
                })?),
                None => None,
            };
        Self::with_reader(geo, mmdb)
    }

    /// Compiles the config with an already opened database (tests, fuzzing).
    pub(crate) fn with_reader(
        geo: &CheckedGeo,
        mmdb: Option<maxminddb::Reader<Vec<u8>>>,
    ) -> Result<Self, DnsError> {
        let mut map = Self {
            regions: Vec::new(),
            region_ids: HashMap::new(),
            coordinates: Vec::new(),
            v4: Trie::default(),
            v6: Trie::default(),
            mmdb,
            countries: HashMap::new(),
            continents: HashMap::new(),
            placements: (0..PLACEMENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        };
        // Coordinates first so that ids are stable and nearest-region search covers them all.
        for (region, location) in &geo.regions {
            let id = map.intern(region)?;
            map.coordinates[usize::from(id)] = Some(*location);
        }
        for (net, region) in &geo.networks {
            let id = map.intern(region)?;
            match net {
                ipnet::IpNet::V4(net) => map.v4.insert(&net.addr().octets(), net.prefix_len(), id),
                ipnet::IpNet::V6(net) => map.v6.insert(&net.addr().octets(), net.prefix_len(), id),
            }
        }
        for (code, region) in &geo.countries {
            let id = map.intern(region)?;
            map.countries.insert(two_letters(code), id);
        }
        for (code, region) in &geo.continents {
            let id = map.intern(region)?;
            map.continents.insert(two_letters(code), id);
        }
        Ok(map)
    }

    /// Every region the map can place a client in, indexed by [`RegionId`].
    pub(crate) fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Places `addr` (an ECS address already masked to its source prefix, or the source
    /// address).
    pub(crate) fn locate(&self, addr: IpAddr) -> Located {
        let addr = addr.to_canonical();
        let (trie, octets_v4, octets_v6);
        let bits: &[u8] = match addr {
            IpAddr::V4(v4) => {
                octets_v4 = v4.octets();
                trie = &self.v4;
                &octets_v4
            }
            IpAddr::V6(v6) => {
                octets_v6 = v6.octets();
                trie = &self.v6;
                &octets_v6
            }
        };
        let (matched, trie_scope) = trie.lookup(bits);
        if let Some(region) = matched {
            return Located {
                region: Some(region),
                scope: trie_scope,
                source: GeoSource::Network,
            };
        }
        let Some(reader) = &self.mmdb else {
            return Located {
                region: None,
                scope: trie_scope,
                source: GeoSource::Unknown,
            };
        };
        let Ok(result) = reader.lookup(addr) else {
            return Located {
                region: None,
                scope: trie_scope,
                source: GeoSource::Unknown,
            };
        };
        let db_scope = result
            .network()
            .map(|network| network.prefix())
            .unwrap_or(bits.len() as u8 * 8);
        let scope = trie_scope.max(db_scope);
        let (region, source) = match result.offset() {
            Some(offset) => self.place_cached(offset, || match result.decode::<GeoRecord<'_>>() {
                Ok(Some(record)) => self.place(&record),
                _ => (None, GeoSource::Unknown),
            }),
            None => (None, GeoSource::Unknown),
        };
        Located {
            region,
            scope,
            source,
        }
    }

    /// The placement of the database record at `offset`, decoded once and then served from a
    /// lock-free direct-mapped cache: databases share one record between all networks of a
    /// country, so a few hundred entries cover every client.
    fn place_cached(
        &self,
        offset: usize,
        decode: impl FnOnce() -> (Option<RegionId>, GeoSource),
    ) -> (Option<RegionId>, GeoSource) {
        let offset = offset as u64 & OFFSET_MASK;
        let slot = &self.placements[(offset as usize) % PLACEMENT_SLOTS];
        let cached = slot.load(Ordering::Relaxed);
        if cached & VALID != 0 && cached & OFFSET_MASK == offset {
            return unpack_placement(cached);
        }
        let placed = decode();
        slot.store(pack_placement(offset, placed), Ordering::Relaxed);
        placed
    }

    fn place(&self, record: &GeoRecord<'_>) -> (Option<RegionId>, GeoSource) {
        let country = record
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(record.country_code);
        if let Some(id) = country.and_then(|code| self.countries.get(&two_letters(code))) {
            return (Some(*id), GeoSource::Country);
        }
        let continent = record.continent.as_ref().and_then(|c| c.code);
        if let Some(id) = continent.and_then(|code| self.continents.get(&two_letters(code))) {
            return (Some(*id), GeoSource::Continent);
        }
        if let Some(Coordinates {
            latitude: Some(lat),
            longitude: Some(lon),
        }) = record.location
        {
            let here = RegionLocation { lat, lon };
            let nearest = self
                .coordinates
                .iter()
                .enumerate()
                .filter_map(|(id, location)| location.map(|l| (id, distance_km(here, l))))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((id, _)) = nearest {
                return (Some(id as RegionId), GeoSource::Coordinates);
            }
        }
        (None, GeoSource::Unknown)
    }

    fn intern(&mut self, region: &Region) -> Result<RegionId, DnsError> {
        if let Some(id) = self.region_ids.get(region) {
            return Ok(*id);
        }
        let id = RegionId::try_from(self.regions.len()).map_err(|_| DnsError::Config {
            field: "geo".into(),
            why: "more than 65535 regions".into(),
        })?;
        self.regions.push(region.clone());
        self.coordinates.push(None);
        self.region_ids.insert(region.clone(), id);
        Ok(id)
    }
}

const PLACEMENT_SLOTS: usize = 1024;
const OFFSET_MASK: u64 = (1 << 40) - 1;
const VALID: u64 = 1 << 63;
const NO_REGION: u64 = 0xFFFF;

/// Packs `[valid:1][source:3][region:16][offset:40]`.
fn pack_placement(offset: u64, (region, source): (Option<RegionId>, GeoSource)) -> u64 {
    let region = region.map_or(NO_REGION, u64::from);
    let source = match source {
        GeoSource::Network => 0,
        GeoSource::Country => 1,
        GeoSource::Continent => 2,
        GeoSource::Coordinates => 3,
        GeoSource::Unknown => 4,
    };
    VALID | source << 56 | region << 40 | offset
}

fn unpack_placement(packed: u64) -> (Option<RegionId>, GeoSource) {
    let region = (packed >> 40) & 0xFFFF;
    let source = match (packed >> 56) & 0x7 {
        0 => GeoSource::Network,
        1 => GeoSource::Country,
        2 => GeoSource::Continent,
        3 => GeoSource::Coordinates,
        _ => GeoSource::Unknown,
    };
    let region = (region != NO_REGION).then_some(region as RegionId);
    (region, source)
}

/// Great-circle distance in kilometres (haversine).
pub(crate) fn distance_km(a: RegionLocation, b: RegionLocation) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Upper-cases the first two bytes of a code (country and continent codes are two letters).
fn two_letters(code: &str) -> [u8; 2] {
    let bytes = code.as_bytes();
    let first = bytes.first().copied().unwrap_or(0).to_ascii_uppercase();
    let second = if bytes.len() == 2 {
        bytes[1].to_ascii_uppercase()
    } else {
        // Longer or shorter strings never match a configured two-letter code.
        0
    };
    [first, second]
}

// === impl Trie ===

impl Trie {
    fn insert(&mut self, octets: &[u8], prefix_len: u8, value: RegionId) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut node = 0usize;
        for depth in 0..usize::from(prefix_len) {
            let bit = usize::from((octets[depth / 8] >> (7 - depth % 8)) & 1);
            node = match self.nodes[node].children[bit] {
                Some(child) => child as usize,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children[bit] = Some(child as u32);
                    child
                }
            };
        }
        self.nodes[node].value = Some(value);
    }

    /// The longest matching prefix's value, and the number of leading bits after which the
    /// result can no longer change (the ECS scope of this decision).
    fn lookup(&self, octets: &[u8]) -> (Option<RegionId>, u8) {
        let Some(mut node) = self.nodes.first() else {
            return (None, 0);
        };
        let max_bits = octets.len() * 8;
        let mut best = None;
        let mut depth = 0usize;
        loop {
            if node.value.is_some() {
                best = node.value;
            }
            if node.children == [None, None] {
                // A leaf: everything below shares this result.
                return (best, depth as u8);
            }
            if depth == max_bits {
                return (best, max_bits as u8);
            }
            let bit = usize::from((octets[depth / 8] >> (7 - depth % 8)) & 1);
            match node.children[bit] {
                Some(child) => {
                    node = &self.nodes[child as usize];
                    depth += 1;
                }
                // The other branch holds a more specific prefix: the result holds for addresses
                // sharing one more bit with this one.
                None => return (best, (depth + 1) as u8),
            }
        }
    }
}
