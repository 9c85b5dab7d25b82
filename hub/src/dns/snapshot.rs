//! The compiled zone data the query path reads: every name, every static RRset (signed), and
//! per hostname the answer plans for every client region, built from a [`DnsView`] whenever
//! it changes.
//!
//! **Invariant:** a [`ZoneSnapshot`] is immutable once built; the query path only looks names
//! up in it, picks among precomputed RRsets and, for the few answers that cannot be
//! precomputed (compact denials, multi-value subsets), signs once per answer and caches the
//! result in a slot table that never makes a query wait ([`LazyCache`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use meridian_proto::model::{DnsRecord, Fqdn, HostnamePolicy, RecordData, Region};

use super::DnsView;
use super::answer::{self, Member, Plan, PlanMode, PolicyContext};
use super::config::{CheckedZone, RegionLocation};
use super::dnssec::{self, Validity, ZoneSigner};
use super::geo::GeoMap;

/// Names → nodes, hashed with FNV-1a: the keys are our own zone data (queries only look up),
/// so a fast non-keyed hash is safe, and SipHash showed up in query-path profiles.
pub(crate) type NameMap = HashMap<LowerName, Node, BuildHasherDefault<FnvHasher>>;

/// FNV-1a, 64 bit.
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Static inputs of a build: what the config says.
#[derive(Clone, Debug)]
pub(crate) struct BuildConfig {
    pub(crate) zones: Vec<CheckedZone>,
    pub(crate) coordinates: BTreeMap<Region, RegionLocation>,
    pub(crate) unstable_ttl: u32,
    pub(crate) stable_after_ms: u64,
}

/// Builds snapshots; keeps signatures and signers between builds so an unchanged RRset is not
/// signed again (a health change re-plans every hostname but re-signs nothing).
pub(crate) struct SnapshotBuilder {
    config: BuildConfig,
    geo: Arc<GeoMap>,
    signatures: HashMap<String, Record>,
    signers: HashMap<Fqdn, (Vec<u8>, Arc<ZoneSigner>)>,
}

/// An RRset with its signature (when the zone is signed).
#[derive(Debug)]
pub(crate) struct RrSet {
    pub(crate) records: Vec<Record>,
    pub(crate) rrsig: Option<Record>,
    /// For A/AAAA sets: the records in wire format, owner compressed to the question name
    /// (`0xC00C`), for the UDP fast path (`dns::fast`). Empty for other types.
    pub(crate) wire: Vec<u8>,
}

/// One authoritative zone.
pub(crate) struct ZoneData {
    pub(crate) origin: Name,
    pub(crate) origin_lower: LowerName,
    /// The SOA as sent in negative answers: TTL = min(SOA TTL, negative TTL) (RFC 2308 §3).
    pub(crate) negative_soa: Arc<RrSet>,
    /// A/AAAA of in-zone name servers, for the additional section of NS answers.
    pub(crate) glue: Vec<Record>,
    pub(crate) signer: Option<Arc<ZoneSigner>>,
    pub(crate) validity: Validity,
}

/// A name inside a zone.
pub(crate) struct Node {
    pub(crate) zone: usize,
    pub(crate) name: Name,
    /// Static RRsets by type (apex SOA/NS/DNSKEY included).
    pub(crate) sets: Vec<(RecordType, Arc<RrSet>)>,
    /// A hostname policy's A/AAAA answers.
    pub(crate) dynamic: Option<Arc<Dynamic>>,
    /// Every type present at the name (for NSEC bitmaps).
    pub(crate) types: BTreeSet<RecordType>,
}

/// A hostname's answers for every client region.
pub(crate) struct Dynamic {
    pub(crate) fqdn: Fqdn,
    /// Index of its zone.
    pub(crate) zone: usize,
    /// Indexed by geo region id; the last entry is for clients in no known region.
    pub(crate) plans: Vec<Arc<CompiledPlan>>,
    /// Whether any two regions get different answers (else the ECS scope is 0).
    pub(crate) location_matters: bool,
}

impl Dynamic {
    /// The plan for clients in geo region `region` (`None`, or a region this snapshot has no
    /// plan for, means the unknown-region plan). `None` only if there are no plans at all.
    pub(crate) fn plan_for(&self, region: Option<usize>) -> Option<&CompiledPlan> {
        let unknown = self.plans.len().checked_sub(1)?;
        let index = region.filter(|&id| id < unknown).unwrap_or(unknown);
        self.plans.get(index).map(|plan| &**plan)
    }
}

/// One plan, compiled into RRsets per address family.
pub(crate) struct CompiledPlan {
    pub(crate) plan: Plan,
    pub(crate) a: FamilyAnswer,
    pub(crate) aaaa: FamilyAnswer,
    /// The SOA for negative answers at the hostname: its TTL is at most the plan's TTL, so a
    /// resolver keeps an empty answer (fail-closed, or a family no target has) no longer than
    /// it would keep an address, and asks again soon after a recovery.
    pub(crate) negative_soa: Arc<RrSet>,
}

impl CompiledPlan {
    /// The types with data at the hostname for clients of this plan (for NSEC bitmaps).
    pub(crate) fn types(&self) -> impl Iterator<Item = RecordType> {
        [(RecordType::A, &self.a), (RecordType::AAAA, &self.aaaa)]
            .into_iter()
            .filter(|(_, family)| !matches!(family, FamilyAnswer::Empty))
            .map(|(rtype, _)| rtype)
    }
}

/// How to answer one address family.
pub(crate) enum FamilyAnswer {
    /// NODATA.
    Empty,
    /// Always this RRset.
    Fixed(Arc<RrSet>),
    /// A weighted pick of one member's RRset.
    Pick {
        cumulative: Vec<u64>,
        sets: Vec<Arc<RrSet>>,
    },
    /// Up to `max` addresses, weighted-shuffled within each group, groups in order.
    Fill {
        groups: Vec<Vec<(u32, Arc<RrSet>)>>,
        max: usize,
    },
}

/// The compiled zones.
pub(crate) struct ZoneSnapshot {
    /// SOA serial.
    pub(crate) serial: u32,
    /// Whether the view holds the group's state (any applied entry). A node that has not
    /// applied anything yet (a `--join` node not yet added, a node whose group has not
    /// reached it) must not answer from its empty state: NXDOMAIN would be cached.
    pub(crate) has_state: bool,
    pub(crate) zones: Vec<ZoneData>,
    pub(crate) names: NameMap,
    /// When the snapshot must be rebuilt even without a view change (a lowered TTL ends, or
    /// signatures need renewing).
    pub(crate) rebuild_at: Option<SystemTime>,
    /// Data problems found while compiling (names outside zones, conflicting records).
    pub(crate) problems: Vec<String>,
    /// Signatures made on the query path, per answer.
    pub(crate) lazy: LazyCache,
    /// Hostnames with a traffic policy, by lower-case wire-format name, for the UDP fast path.
    pub(crate) fast: HashMap<Box<[u8]>, Arc<Dynamic>, BuildHasherDefault<FnvHasher>>,
}

/// A direct-mapped cache of answers signed on the query path.
///
/// **Guarantees:** the query path never waits on it: slots are only ever `try_lock`ed, and a
/// slot that another thread holds at that instant (or a poisoned one) counts as a miss, so the
/// answer is signed again without being cached.
/// **Caveats:** only snapshots with a signed zone get slots (nothing else uses them); the
/// table is fixed at [`LAZY_SLOTS`] entries, the newest answer replacing a colliding one.
///
/// Why not one `ArcSwapOption` per slot: dropping an `ArcSwapOption` pays its
/// readers' debts by walking every thread's debt list (`Debt::pay_all`), so dropping a
/// snapshot cost 4096 such walks, 0.7–1.2 ms with 2–3 threads and 3.4 ms with 8 (measured,
/// release build), on whichever thread let go of the old snapshot last: a UDP thread or a
/// Tokio worker, on every rebuild. Dropping these slots is a plain deallocation.
pub(crate) struct LazyCache {
    slots: Box<[Mutex<Option<Arc<LazyEntry>>>]>,
}

/// One cached signed answer.
#[derive(Debug)]
pub(crate) struct LazyEntry {
    key: Box<[u8]>,
    /// The records and their RRSIGs, in the order they are sent.
    pub(crate) records: Vec<Record>,
}

const LAZY_SLOTS: usize = 4096;

// === impl SnapshotBuilder ===

impl SnapshotBuilder {
    /// A builder for `config`, placing clients with `geo`.
    pub(crate) fn new(config: BuildConfig, geo: Arc<GeoMap>) -> Self {
        Self {
            config,
            geo,
            signatures: HashMap::new(),
            signers: HashMap::new(),
        }
    }

    /// The geo map.
    pub(crate) fn geo(&self) -> &Arc<GeoMap> {
        &self.geo
    }

    /// Compiles `view` at wall-clock time `now`.
    pub(crate) fn build(&mut self, view: &DnsView, now: SystemTime) -> ZoneSnapshot {
        let now_unix_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let serial = serial_of(view.applied_index);
        let validity = Validity::starting(now);
        let mut problems = Vec::new();
        let mut used_signatures = HashMap::new();
        let mut zones = Vec::with_capacity(self.config.zones.len());
        let mut names = NameMap::default();
        let mut fast = HashMap::default();
        let mut rebuild_at: Option<SystemTime> = None;

        // Zones: apex SOA, NS, DNSKEY, and the name servers' addresses.
        let zone_configs = self.config.zones.clone();
        for (zone_index, zone) in zone_configs.iter().enumerate() {
            let origin = to_name(&zone.origin);
            let signer = if zone.dnssec {
                match view.zone_keys.get(&zone.origin) {
                    Some(pkcs8) => {
                        self.signer(&zone.origin, &origin, pkcs8, zone.ttl, &mut problems)
                    }
                    None => {
                        problems.push(format!(
                            "zone {}: DNSSEC is on but the hub has no key for it yet; serving unsigned",
                            zone.origin
                        ));
                        None
                    }
                }
            } else {
                None
            };
            if signer.is_some() {
                let renew = validity.renew_at();
                rebuild_at = Some(rebuild_at.map_or(renew, |r| r.min(renew)));
            }
            let mut sign = SignContext {
                signer: signer.as_deref(),
                validity,
                cache: &self.signatures,
                used: &mut used_signatures,
                problems: &mut problems,
            };
            let soa_rdata = SOA::new(
                to_name(&zone.mname),
                to_name(&zone.rname),
                serial,
                zone.soa.refresh as i32,
                zone.soa.retry as i32,
                zone.soa.expire as i32,
                zone.soa.minimum,
            );
            let soa = sign.rrset(vec![Record::from_rdata(
                origin.clone(),
                zone.ttl,
                RData::SOA(soa_rdata.clone()),
            )]);
            let negative_ttl = zone.ttl.min(zone.soa.minimum);
            let negative_soa = sign.rrset(vec![Record::from_rdata(
                origin.clone(),
                negative_ttl,
                RData::SOA(soa_rdata),
            )]);
            let ns = sign.rrset(
                zone.nameservers
                    .iter()
                    .map(|(name, _)| {
                        Record::from_rdata(origin.clone(), zone.ttl, RData::NS(NS(to_name(name))))
                    })
                    .collect(),
            );
            let dnskey = signer
                .as_ref()
                .map(|s| sign.rrset(vec![s.dnskey().clone()]));
            let mut glue = Vec::new();
            let mut apex = Node::new(zone_index, origin.clone());
            apex.add(RecordType::SOA, soa.clone());
            apex.add(RecordType::NS, ns.clone());
            if let Some(dnskey) = &dnskey {
                apex.add(RecordType::DNSKEY, dnskey.clone());
            }
            names.insert(LowerName::new(&origin), apex);
            for (ns_name, addresses) in &zone.nameservers {
                if !ns_name.is_within(&zone.origin) {
                    continue;
                }
                let owner = to_name(ns_name);
                let (v4, v6): (Vec<_>, Vec<_>) =
                    addresses.iter().partition(|a| a.to_canonical().is_ipv4());
                let mut node = Node::new(zone_index, owner.clone());
                for (rtype, family) in [(RecordType::A, v4), (RecordType::AAAA, v6)] {
                    if family.is_empty() {
                        continue;
                    }
                    let records: Vec<Record> = family
                        .iter()
                        .map(|a| address_record(&owner, zone.ttl, *a))
                        .collect();
                    glue.extend(records.iter().cloned());
                    node.add(rtype, sign.rrset(records));
                }
                names.insert(LowerName::new(&owner), node);
            }
            zones.push(ZoneData {
                origin_lower: LowerName::new(&origin),
                origin,
                negative_soa,
                glue,
                signer,
                validity,
            });
        }

        // Static records, grouped into RRsets.
        let mut static_sets: BTreeMap<(Fqdn, RecordType), Vec<&DnsRecord>> = BTreeMap::new();
        for record in &view.records {
            static_sets
                .entry((record.name.clone(), record_type(&record.data)))
                .or_default()
                .push(record);
        }
        let policy_names: BTreeSet<&Fqdn> = view.hostnames.keys().collect();
        for ((fqdn, rtype), records) in &static_sets {
            let Some(zone_index) = zone_of(&self.config.zones, fqdn) else {
                problems.push(format!("record {fqdn} {rtype}: outside every served zone"));
                continue;
            };
            let zone = &self.config.zones[zone_index];
            if *rtype == RecordType::CNAME {
                let other_data = static_sets
                    .keys()
                    .any(|(name, t)| name == fqdn && *t != RecordType::CNAME)
                    || policy_names.contains(fqdn);
                if fqdn == &zone.origin || other_data {
                    problems.push(format!(
                        "record {fqdn} CNAME: a CNAME cannot share its name with other data or sit at the zone apex; ignored"
                    ));
                    continue;
                }
            }
            if policy_names.contains(fqdn) && matches!(*rtype, RecordType::A | RecordType::AAAA) {
                problems.push(format!(
                    "record {fqdn} {rtype}: the hostname has a traffic policy, which answers {rtype}; ignored"
                ));
                continue;
            }
            let owner = to_name(fqdn);
            let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
            let mut rrset_records: Vec<Record> = Vec::with_capacity(records.len());
            for record in records {
                let data = rdata(&record.data);
                if !rrset_records.iter().any(|r| r.data == data) {
                    rrset_records.push(Record::from_rdata(owner.clone(), ttl, data));
                }
                if *rtype == RecordType::CNAME {
                    if records.len() > 1 {
                        problems.push(format!(
                            "record {fqdn} CNAME: more than one CNAME; only the first is served"
                        ));
                    }
                    break;
                }
            }
            let signer = zones[zone_index].signer.clone();
            let mut sign = SignContext {
                signer: signer.as_deref(),
                validity,
                cache: &self.signatures,
                used: &mut used_signatures,
                problems: &mut problems,
            };
            let set = sign.rrset(rrset_records);
            insert_node(&mut names, zone_index, &owner).add(*rtype, set);
        }

        // Hostname policies.
        let context = PolicyContext {
            clusters: &view.clusters,
            coordinates: &self.config.coordinates,
            now_unix_ms,
            unstable_ttl: self.config.unstable_ttl,
            stable_after_ms: self.config.stable_after_ms,
        };
        // The negative SOA per zone and hostname TTL, shared by every plan with that TTL.
        let mut lowered_soas: HashMap<(usize, u32), Arc<RrSet>> = HashMap::new();
        for (fqdn, policy) in &view.hostnames {
            let Some(zone_index) = zone_of(&self.config.zones, fqdn) else {
                problems.push(format!(
                    "hostname {fqdn}: outside every served zone; not served"
                ));
                continue;
            };
            let signer = zones[zone_index].signer.clone();
            let mut sign = SignContext {
                signer: signer.as_deref(),
                validity,
                cache: &self.signatures,
                used: &mut used_signatures,
                problems: &mut problems,
            };
            let zone_negative = &zones[zone_index].negative_soa;
            let mut negative_soa = |ttl: u32| -> Arc<RrSet> {
                lowered_soas
                    .entry((zone_index, ttl))
                    .or_insert_with(|| lowered(zone_negative, ttl))
                    .clone()
            };
            let dynamic = compile_policy(
                fqdn,
                zone_index,
                policy,
                &context,
                &self.geo,
                &mut sign,
                &mut negative_soa,
            );
            for plan in &dynamic.plans {
                if let Some(at) = plan.plan.stable_at_unix_ms {
                    let at = UNIX_EPOCH + Duration::from_millis(at);
                    rebuild_at = Some(rebuild_at.map_or(at, |r| r.min(at)));
                }
            }
            let owner = to_name(fqdn);
            // A and AAAA are not in `types`: whether they exist depends on the plan, and the
            // query path adds them to a denial's bitmap from the plan it answers from.
            let node = insert_node(&mut names, zone_index, &owner);
            let dynamic = Arc::new(dynamic);
            fast.insert(wire_name(&owner), dynamic.clone());
            node.dynamic = Some(dynamic);
        }

        // Empty non-terminals: every ancestor of a name, up to its zone apex, exists.
        let existing: Vec<(usize, Name)> = names
            .values()
            .map(|node| (node.zone, node.name.clone()))
            .collect();
        for (zone_index, name) in existing {
            let apex_labels = zones[zone_index].origin.num_labels();
            let mut ancestor = name.base_name();
            while ancestor.num_labels() > apex_labels {
                let key = LowerName::new(&ancestor);
                if names.contains_key(&key) {
                    break;
                }
                names.insert(key, Node::new(zone_index, ancestor.clone()));
                ancestor = ancestor.base_name();
            }
        }

        // Keep only the signatures this snapshot uses.
        self.signatures = used_signatures;
        let signed = zones.iter().any(|zone| zone.signer.is_some());
        ZoneSnapshot {
            serial,
            has_state: view.applied_index > 0,
            zones,
            names,
            rebuild_at,
            problems,
            lazy: LazyCache::new(signed),
            fast,
        }
    }

    fn signer(
        &mut self,
        zone: &Fqdn,
        origin: &Name,
        pkcs8: &[u8],
        ttl: u32,
        problems: &mut Vec<String>,
    ) -> Option<Arc<ZoneSigner>> {
        if let Some((key, signer)) = self.signers.get(zone)
            && key.as_slice() == pkcs8
            && signer.dnskey().ttl == ttl
        {
            return Some(signer.clone());
        }
        match ZoneSigner::new(origin, pkcs8, ttl) {
            Ok(signer) => {
                let signer = Arc::new(signer);
                self.signers
                    .insert(zone.clone(), (pkcs8.to_vec(), signer.clone()));
                Some(signer)
            }
            Err(error) => {
                problems.push(format!("zone {zone}: {error}; serving unsigned"));
                None
            }
        }
    }
}

/// Signs RRsets during a build, reusing signatures from the previous build.
struct SignContext<'a> {
    signer: Option<&'a ZoneSigner>,
    validity: Validity,
    cache: &'a HashMap<String, Record>,
    used: &'a mut HashMap<String, Record>,
    problems: &'a mut Vec<String>,
}

impl SignContext<'_> {
    fn rrset(&mut self, records: Vec<Record>) -> Arc<RrSet> {
        let rrsig = match (self.signer, records.first()) {
            (Some(signer), Some(_)) => self.sign(signer, &records),
            _ => None,
        };
        let wire = address_wire(&records);
        Arc::new(RrSet {
            records,
            rrsig,
            wire,
        })
    }

    fn sign(&mut self, signer: &ZoneSigner, records: &[Record]) -> Option<Record> {
        let mut key = format!("{}", signer.key_tag());
        let mut rdata: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
        rdata.sort();
        if let Some(first) = records.first() {
            key.push_str(&format!(
                " {} {} {}",
                first.name,
                first.ttl,
                first.record_type()
            ));
        }
        for data in &rdata {
            key.push(' ');
            key.push_str(data);
        }
        if let Some(cached) = self.used.get(&key) {
            return Some(cached.clone());
        }
        if let Some(cached) = self.cache.get(&key)
            && rrsig_validity(cached).is_some_and(|v| v.fresh_at(SystemTime::now()))
        {
            self.used.insert(key, cached.clone());
            return Some(cached.clone());
        }
        match signer.sign(records, self.validity) {
            Ok(rrsig) => {
                self.used.insert(key, rrsig.clone());
                Some(rrsig)
            }
            Err(error) => {
                self.problems.push(error.to_string());
                None
            }
        }
    }
}

fn rrsig_validity(record: &Record) -> Option<Validity> {
    match &record.data {
        RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) => Some(Validity {
            inception: rrsig.input().sig_inception.get(),
            expiration: rrsig.input().sig_expiration.get(),
        }),
        _ => None,
    }
}

/// Compiles one hostname policy for every client region; `negative_soa` gives the zone's
/// negative SOA with its TTL capped at a plan's TTL.
fn compile_policy(
    fqdn: &Fqdn,
    zone: usize,
    policy: &HostnamePolicy,
    context: &PolicyContext<'_>,
    geo: &GeoMap,
    sign: &mut SignContext<'_>,
    negative_soa: &mut dyn FnMut(u32) -> Arc<RrSet>,
) -> Dynamic {
    let owner = to_name(fqdn);
    let mut plans: Vec<Plan> = geo
        .regions()
        .iter()
        .map(|region| answer::plan(policy, context, Some(region)))
        .collect();
    plans.push(answer::plan(policy, context, None));
    let location_matters = plans.windows(2).any(|w| !w[0].same_answers(&w[1]));

    // Member RRsets are shared between plans: one RRset (and signature) per cluster and family.
    let mut member_sets: HashMap<(String, RecordType), Arc<RrSet>> = HashMap::new();
    let mut compiled: Vec<Arc<CompiledPlan>> = Vec::with_capacity(plans.len());
    for plan in plans {
        if let Some(same) = compiled.iter().find(|c| c.plan.same_answers(&plan)) {
            // Share the compiled answers; keep this region's explanation.
            let shared = CompiledPlan {
                a: same.a.share(),
                aaaa: same.aaaa.share(),
                negative_soa: same.negative_soa.clone(),
                plan,
            };
            compiled.push(Arc::new(shared));
            continue;
        }
        let a = compile_family(&owner, &plan, RecordType::A, &mut member_sets, sign);
        let aaaa = compile_family(&owner, &plan, RecordType::AAAA, &mut member_sets, sign);
        let negative_soa = negative_soa(plan.ttl);
        compiled.push(Arc::new(CompiledPlan {
            plan,
            a,
            aaaa,
            negative_soa,
        }));
    }
    Dynamic {
        fqdn: fqdn.clone(),
        zone,
        plans: compiled,
        location_matters,
    }
}

fn compile_family(
    owner: &Name,
    plan: &Plan,
    rtype: RecordType,
    member_sets: &mut HashMap<(String, RecordType), Arc<RrSet>>,
    sign: &mut SignContext<'_>,
) -> FamilyAnswer {
    let addresses = |member: &Member| -> Vec<IpAddr> {
        if rtype == RecordType::A {
            member.v4.iter().copied().map(IpAddr::V4).collect()
        } else {
            member.v6.iter().copied().map(IpAddr::V6).collect()
        }
    };
    let mut set_of = |member: &Member, sign: &mut SignContext<'_>| -> Option<Arc<RrSet>> {
        let addrs = addresses(member);
        if addrs.is_empty() {
            return None;
        }
        let key = (format!("{}/{}", member.cluster, plan.ttl), rtype);
        Some(
            member_sets
                .entry(key)
                .or_insert_with(|| {
                    sign.rrset(
                        addrs
                            .iter()
                            .map(|a| address_record(owner, plan.ttl, *a))
                            .collect(),
                    )
                })
                .clone(),
        )
    };
    match plan.mode {
        PlanMode::FailClosed | PlanMode::NoTargets => return FamilyAnswer::Empty,
        // A fail-open plan is one group with a bounded `max_answers`: the multi-value path
        // below answers it.
        PlanMode::Normal | PlanMode::Pinned | PlanMode::Panic | PlanMode::FailOpen => {}
    }
    let max = plan.max_answers.max(1) as usize;
    if max == 1 {
        // One weighted pick among the first group's members that have this family.
        let Some(first) = plan.groups.first() else {
            return FamilyAnswer::Empty;
        };
        let mut cumulative = Vec::new();
        let mut sets = Vec::new();
        let mut total = 0u64;
        for member in &first.members {
            if let Some(set) = set_of(member, sign) {
                total += u64::from(member.weight.max(1));
                cumulative.push(total);
                sets.push(set);
            }
        }
        return match sets.len() {
            0 => FamilyAnswer::Empty,
            1 => FamilyAnswer::Fixed(sets.remove(0)),
            _ => FamilyAnswer::Pick { cumulative, sets },
        };
    }
    let mut groups = Vec::new();
    let mut n_addresses = 0usize;
    for group in &plan.groups {
        let members: Vec<(u32, Arc<RrSet>)> = group
            .members
            .iter()
            .filter_map(|m| set_of(m, sign).map(|set| (m.weight.max(1), set)))
            .collect();
        n_addresses += members.iter().map(|(_, s)| s.records.len()).sum::<usize>();
        if !members.is_empty() {
            groups.push(members);
        }
    }
    if groups.is_empty() {
        return FamilyAnswer::Empty;
    }
    if n_addresses <= max {
        // Everything fits: the answer is fixed (and signed once).
        let records: Vec<Record> = groups
            .iter()
            .flatten()
            .flat_map(|(_, set)| set.records.iter().cloned())
            .collect();
        return FamilyAnswer::Fixed(sign.rrset(records));
    }
    FamilyAnswer::Fill { groups, max }
}

// === impl FamilyAnswer ===

impl FamilyAnswer {
    fn share(&self) -> Self {
        match self {
            Self::Empty => Self::Empty,
            Self::Fixed(set) => Self::Fixed(set.clone()),
            Self::Pick { cumulative, sets } => Self::Pick {
                cumulative: cumulative.clone(),
                sets: sets.clone(),
            },
            Self::Fill { groups, max } => Self::Fill {
                groups: groups.clone(),
                max: *max,
            },
        }
    }
}

// === impl Node ===

impl Node {
    fn new(zone: usize, name: Name) -> Self {
        Self {
            zone,
            name,
            sets: Vec::new(),
            dynamic: None,
            types: BTreeSet::new(),
        }
    }

    fn add(&mut self, rtype: RecordType, set: Arc<RrSet>) {
        self.types.insert(rtype);
        self.sets.push((rtype, set));
    }

    /// The static RRset of `rtype`, if any.
    pub(crate) fn set(&self, rtype: RecordType) -> Option<&Arc<RrSet>> {
        self.sets.iter().find(|(t, _)| *t == rtype).map(|(_, s)| s)
    }
}

fn insert_node<'n>(names: &'n mut NameMap, zone: usize, owner: &Name) -> &'n mut Node {
    names
        .entry(LowerName::new(owner))
        .or_insert_with(|| Node::new(zone, owner.clone()))
}

// === impl ZoneSnapshot ===

impl ZoneSnapshot {
    /// The zone containing `name`, if any.
    pub(crate) fn zone_for(&self, name: &LowerName) -> Option<usize> {
        self.zones.iter().position(|z| z.origin_lower.zone_of(name))
    }
}

// === impl LazyCache ===

impl LazyCache {
    /// [`LAZY_SLOTS`] empty slots for a snapshot with a signed zone, none otherwise.
    pub(crate) fn new(signed: bool) -> Self {
        let n_slots = if signed { LAZY_SLOTS } else { 0 };
        Self {
            slots: (0..n_slots).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The cached entry for `key`, or the result of `make` (cached when it succeeds and the
    /// slot is free).
    pub(crate) fn get_or_insert(
        &self,
        key: &[u8],
        make: impl FnOnce() -> Option<Vec<Record>>,
    ) -> Option<Arc<LazyEntry>> {
        let slot = match self.slots.len() {
            0 => None,
            n_slots => Some(&self.slots[fnv1a(key) as usize % n_slots]),
        };
        if let Some(slot) = slot
            && let Ok(cached) = slot.try_lock()
            && let Some(entry) = cached.as_ref()
            && &*entry.key == key
        {
            return Some(entry.clone());
        }
        let entry = Arc::new(LazyEntry {
            key: key.into(),
            records: make()?,
        });
        // The replaced entry (if any) is dropped after the slot is released.
        let _replaced = slot
            .and_then(|slot| slot.try_lock().ok())
            .and_then(|mut cached| cached.replace(entry.clone()));
        Some(entry)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hasher = FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

// === conversions ===

/// The SOA serial for an applied index: the low 32 bits (RFC 1982 serial arithmetic handles
/// the wrap, as the index grows by far less than 2^31 between two reads of a secondary).
pub(crate) fn serial_of(applied_index: u64) -> u32 {
    applied_index as u32
}

/// An `Fqdn` as an absolute, lower-case hickory name.
pub(crate) fn to_name(fqdn: &Fqdn) -> Name {
    // `Fqdn` is validated (labels of letters, digits, '-' and '_'), so this cannot fail; fall
    // back to the root name rather than panic if the rules ever diverge.
    let mut name = Name::from_ascii(fqdn.as_str()).unwrap_or_else(|_| Name::root());
    name.set_fqdn(true);
    name.to_lowercase()
}

fn zone_of(zones: &[CheckedZone], fqdn: &Fqdn) -> Option<usize> {
    zones.iter().position(|z| fqdn.is_within(&z.origin))
}

/// A name in wire format, lower case.
pub(crate) fn wire_name(name: &Name) -> Box<[u8]> {
    let mut wire = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    wire.push(0);
    wire.into_boxed_slice()
}

/// A/AAAA records in wire format with the owner as a pointer to offset 12 (the question name).
fn address_wire(records: &[Record]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(records.len() * 28);
    for record in records {
        let (rtype, rdata): (u16, &[u8]) = match &record.data {
            RData::A(a) => (1, &a.0.octets()[..]),
            RData::AAAA(a) => (28, &a.0.octets()[..]),
            _ => return Vec::new(),
        };
        wire.extend_from_slice(&[0xC0, 0x0C]);
        wire.extend_from_slice(&rtype.to_be_bytes());
        wire.extend_from_slice(&1u16.to_be_bytes());
        wire.extend_from_slice(&record.ttl.to_be_bytes());
        wire.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        wire.extend_from_slice(rdata);
    }
    wire
}

fn address_record(owner: &Name, ttl: u32, address: IpAddr) -> Record {
    match address.to_canonical() {
        IpAddr::V4(v4) => Record::from_rdata(owner.clone(), ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(v6))),
    }
}

fn record_type(data: &RecordData) -> RecordType {
    match data {
        RecordData::A(_) => RecordType::A,
        RecordData::Aaaa(_) => RecordType::AAAA,
        RecordData::Cname(_) => RecordType::CNAME,
        RecordData::Txt(_) => RecordType::TXT,
        RecordData::Mx { .. } => RecordType::MX,
    }
}

fn rdata(data: &RecordData) -> RData {
    match data {
        RecordData::A(v4) => RData::A(A(*v4)),
        RecordData::Aaaa(v6) => RData::AAAA(AAAA(*v6)),
        RecordData::Cname(target) => RData::CNAME(CNAME(to_name(target))),
        RecordData::Txt(strings) => RData::TXT(TXT::new(strings.clone())),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, to_name(exchange))),
    }
}

/// `negative` (the zone's negative SOA) with its TTL capped at `ttl`. The signature stays
/// valid: a validator checks it against the RRSIG's original TTL (RFC 4035 §5.3.3), and
/// serving an RRset and its RRSIG with a lower TTL is what every cache does.
fn lowered(negative: &Arc<RrSet>, ttl: u32) -> Arc<RrSet> {
    let lower = |record: &Record| {
        let mut record = record.clone();
        record.ttl = record.ttl.min(ttl);
        record
    };
    if negative.records.iter().all(|r| r.ttl <= ttl) {
        return negative.clone();
    }
    Arc::new(RrSet {
        records: negative.records.iter().map(lower).collect(),
        rrsig: negative.rrsig.as_ref().map(lower),
        wire: Vec::new(),
    })
}

/// Builds the compact-denial NSEC (and its signature) for `owner` in `zone`, with TTL `ttl`
/// (the TTL of the negative SOA it is sent with, RFC 9077).
pub(crate) fn signed_denial(
    zone: &ZoneData,
    owner: &Name,
    types: impl IntoIterator<Item = RecordType>,
    ttl: u32,
) -> Option<Vec<Record>> {
    let signer = zone.signer.as_ref()?;
    let nsec = dnssec::compact_nsec(owner, types, ttl)?;
    let rrsig = signer
        .sign(std::slice::from_ref(&nsec), zone.validity)
        .ok()?;
    Some(vec![nsec, rrsig])
}

/// Signs an ad-hoc RRset (a multi-value subset) in `zone`.
pub(crate) fn signed_set(zone: &ZoneData, records: Vec<Record>) -> Option<Vec<Record>> {
    let signer = zone.signer.as_ref()?;
    let rrsig = signer.sign(&records, zone.validity).ok()?;
    let mut all = records;
    all.push(rrsig);
    Some(all)
}
