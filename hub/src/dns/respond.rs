//! The request path: one parsed query + client address + the current snapshot → the response
//! records, and their encoding with EDNS, ECS echo and UDP truncation.
//!
//! Shared by both transports (the UDP socket threads and the hickory TCP server), so both
//! answer alike. No locks: the snapshot is an `Arc` loaded by the caller; randomness comes
//! from the caller.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncoder};
use hickory_server::zone_handler::{
    MessageRequest, MessageResponse, MessageResponseBuilder, Queries,
};

use super::answer::{pick_weighted, weighted_order};
use super::dnssec::NXNAME;
use super::geo::{GeoMap, Located};
use super::snapshot::{
    self, CompiledPlan, Dynamic, FamilyAnswer, LazyEntry, Node, RrSet, ZoneData, ZoneSnapshot,
};

/// The RFC 9824 "Compact Answers OK" EDNS flag: the client accepts NXDOMAIN with a compact
/// denial proof.
const EDNS_FLAG_CO: u16 = 0x4000;
/// The EDNS payload size advertised in a FORMERR to a query that could not be parsed (which
/// is answered without the configured limits): the default `max_udp_payload`, the DNS Flag
/// Day 2020 size.
const UNPARSED_PAYLOAD: u16 = 1232;
/// How many CNAMEs we follow inside our own zones.
const MAX_CNAME_CHAIN: usize = 8;

/// A record in a reply: borrowed from the snapshot, or from a signed answer cached on the
/// query path.
#[derive(Debug)]
pub(crate) enum Rr<'s> {
    /// From the snapshot.
    Ref(&'s Record),
    /// From a cached lazily signed answer.
    Cached(Arc<LazyEntry>, usize),
}

/// What to send back.
#[derive(Debug)]
pub(crate) struct Reply<'s> {
    /// The response code (extended codes go into the OPT record).
    pub(crate) rcode: ResponseCode,
    /// AA: set for answers from our zones.
    pub(crate) authoritative: bool,
    /// Answer section.
    pub(crate) answers: Vec<Rr<'s>>,
    /// Authority section.
    pub(crate) authorities: Vec<Rr<'s>>,
    /// Additional section (the OPT record is added from `edns`).
    pub(crate) additionals: Vec<Rr<'s>>,
    /// The response's EDNS (present when the query had one).
    pub(crate) edns: Option<Edns>,
    /// Set (to an empty question section) when the query's question must not be echoed.
    pub(crate) no_question: Option<Queries>,
}

/// Per-query settings that do not come from the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Our EDNS UDP payload size.
    pub(crate) max_udp_payload: u16,
}

// === impl Rr ===

impl Rr<'_> {
    /// The record.
    pub(crate) fn get(&self) -> &Record {
        match self {
            Self::Ref(record) => record,
            Self::Cached(entry, index) => &entry.records[*index],
        }
    }
}

// === impl Reply ===

impl<'s> Reply<'s> {
    fn new(rcode: ResponseCode, edns: Option<Edns>) -> Self {
        Self {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            edns,
            no_question: None,
        }
    }

    /// FORMERR without the question: for questions that cannot be echoed safely.
    fn formerr_without_question(edns: Option<Edns>) -> Self {
        let mut reply = Self::new(ResponseCode::FormErr, edns);
        reply.no_question = Queries::read(&mut BinDecoder::new(&[]), 0).ok();
        reply
    }
}

/// Answers `request` from `client` (the packet's source address).
pub(crate) fn respond<'s>(
    snapshot: &'s ZoneSnapshot,
    geo: &GeoMap,
    request: &MessageRequest,
    client: IpAddr,
    limits: Limits,
    random: &mut dyn FnMut() -> u64,
) -> Reply<'s> {
    // EDNS (RFC 6891): echo an OPT when the query had one; unknown versions get BADVERS.
    let mut edns = None;
    let mut dnssec_ok = false;
    let mut compact_ok = false;
    let mut subnet: Option<ClientSubnet> = None;
    if let Some(query_edns) = &request.edns {
        let mut response_edns = Edns::new();
        response_edns.set_max_payload(limits.max_udp_payload);
        response_edns.set_version(0);
        dnssec_ok = query_edns.flags().dnssec_ok;
        compact_ok = dnssec_ok && query_edns.flags().z & EDNS_FLAG_CO != 0;
        response_edns.set_dnssec_ok(dnssec_ok);
        if compact_ok {
            response_edns.flags_mut().z = EDNS_FLAG_CO;
        }
        if query_edns.version() > 0 {
            return Reply::new(ResponseCode::BADVERS, Some(response_edns));
        }
        if let Some(EdnsOption::Subnet(ecs)) = query_edns.option(EdnsCode::Subnet) {
            if !valid_subnet(ecs) {
                // RFC 7871 §7.1.1: a malformed option is answered with FORMERR.
                return Reply::new(ResponseCode::FormErr, Some(response_edns));
            }
            subnet = Some(*ecs);
        }
        edns = Some(response_edns);
    }

    if !plain_question(request.queries.as_bytes()) {
        return Reply::formerr_without_question(edns);
    }
    if request.metadata.op_code != OpCode::Query {
        return Reply::new(ResponseCode::NotImp, edns);
    }
    let [query] = request.queries.queries() else {
        return Reply::new(ResponseCode::FormErr, edns);
    };
    let qtype = query.query_type();
    if query.query_class() != DNSClass::IN {
        return with_subnet(Reply::new(ResponseCode::Refused, edns), subnet, 0);
    }
    match qtype {
        RecordType::OPT => return Reply::new(ResponseCode::FormErr, edns),
        // Zone transfers are not offered: the zones are computed, every hub node serves them.
        RecordType::AXFR | RecordType::IXFR => {
            return with_subnet(Reply::new(ResponseCode::Refused, edns), subnet, 0);
        }
        _ => {}
    }
    let qname = query.name();
    let Some(zone_index) = snapshot.zone_for(qname) else {
        // Not our zone: no recursion (RA stays 0), no referral to the root.
        return with_subnet(Reply::new(ResponseCode::Refused, edns), subnet, 0);
    };
    if !snapshot.has_state {
        // This node has not received its group's state yet: SERVFAIL (not authoritative) so
        // resolvers ask another of the zone's servers, rather than cache an empty answer.
        return with_subnet(Reply::new(ResponseCode::ServFail, edns), subnet, 0);
    }

    let location = match subnet {
        Some(ecs) if ecs.source_prefix() > 0 => ecs.addr(),
        _ => client,
    };
    let zone = &snapshot.zones[zone_index];
    let mut answerer = Answerer {
        snapshot,
        geo,
        location,
        located: None,
        scope: 0,
        dnssec: dnssec_ok && zone.signer.is_some(),
        compact_ok,
        random,
        reply: Reply::new(ResponseCode::NoError, edns),
    };
    answerer.reply.authoritative = true;
    answerer.answer(zone_index, qname, qtype);
    let scope = match subnet {
        Some(ecs) if ecs.source_prefix() == 0 => 0,
        _ => answerer.scope,
    };
    with_subnet(answerer.reply, subnet, scope)
}

/// Whether the raw question section uses only plain labels. The question is echoed byte for
/// byte (to keep the client's 0x20 case), so a compression pointer in it would point into our
/// response's header instead of the query's (found by fuzzing); no real client compresses a
/// lone question, so such queries get FORMERR without a question.
fn plain_question(bytes: &[u8]) -> bool {
    let mut position = 0;
    while position < bytes.len() {
        // One name: labels until the root label, then QTYPE and QCLASS.
        loop {
            let Some(&length) = bytes.get(position) else {
                return false;
            };
            if length & 0xC0 != 0 {
                return false;
            }
            position += 1 + usize::from(length);
            if length == 0 {
                break;
            }
        }
        position += 4;
    }
    position == bytes.len()
}

/// RFC 7871 §6: family 1 or 2, source prefix within the address length, scope 0 in queries,
/// and no address bits set beyond the source prefix.
fn valid_subnet(ecs: &ClientSubnet) -> bool {
    let source = u32::from(ecs.source_prefix());
    if ecs.scope_prefix() != 0 {
        return false;
    }
    match ecs.addr() {
        IpAddr::V4(v4) => {
            source <= 32 && (source == 32 || u32::from(v4) & (u32::MAX >> source) == 0)
        }
        IpAddr::V6(v6) => {
            source <= 128 && (source == 128 || u128::from(v6) & (u128::MAX >> source) == 0)
        }
    }
}

fn with_subnet(mut reply: Reply<'_>, subnet: Option<ClientSubnet>, scope: u8) -> Reply<'_> {
    if let (Some(mut ecs), Some(edns)) = (subnet, reply.edns.as_mut()) {
        ecs.set_scope_prefix(scope);
        edns.options_mut().insert(EdnsOption::Subnet(ecs));
    }
    reply
}

/// Builds the answer for one query inside a zone.
struct Answerer<'s, 'r> {
    snapshot: &'s ZoneSnapshot,
    geo: &'r GeoMap,
    location: IpAddr,
    located: Option<Located>,
    /// The ECS scope of the answer: the geo prefix when a location-dependent answer was given.
    scope: u8,
    dnssec: bool,
    compact_ok: bool,
    random: &'r mut dyn FnMut() -> u64,
    reply: Reply<'s>,
}

/// How looking up one name ended.
enum Outcome {
    Answered,
    NoData,
    NxDomain,
}

impl<'s> Answerer<'s, '_> {
    fn answer(&mut self, zone_index: usize, qname: &LowerName, qtype: RecordType) {
        if self.dnssec
            && matches!(qtype, RecordType::NSEC | RecordType::RRSIG)
            && (self.snapshot.names.contains_key(qname) || !self.compact_ok)
        {
            self.dnssec_meta_answer(zone_index, qname, qtype);
            return;
        }
        let mut name = qname.clone();
        let mut zone_index = zone_index;
        let mut followed: Vec<LowerName> = Vec::new();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.snapshot.names.get(&name) else {
                self.deny(zone_index, &name, Outcome::NxDomain, qtype);
                return;
            };
            // An alias answers every type but CNAME itself with the CNAME, then the target;
            // ANY matches the CNAME itself (RFC 1034 §4.3.2 step 3a).
            if qtype != RecordType::CNAME
                && let Some(cname) = node.set(RecordType::CNAME)
            {
                self.push_set(cname);
                if qtype == RecordType::ANY {
                    return;
                }
                let Some(RData::CNAME(target)) = cname.records.first().map(|r| &r.data) else {
                    return;
                };
                let target = LowerName::new(&target.0);
                if target == *qname || followed.contains(&target) {
                    // A loop: stop after sending each alias once; the resolver sees the cycle.
                    return;
                }
                followed.push(target.clone());
                match self.snapshot.zone_for(&target) {
                    Some(next_zone) => {
                        zone_index = next_zone;
                        name = target;
                        continue;
                    }
                    // Outside our zones: the resolver follows it.
                    None => return,
                }
            }
            match self.node_answer(node, qtype) {
                Outcome::Answered => {}
                outcome => self.deny(zone_index, &name, outcome, qtype),
            }
            return;
        }
    }

    /// Answers `qtype` at an existing node.
    fn node_answer(&mut self, node: &'s Node, qtype: RecordType) -> Outcome {
        if qtype == RecordType::ANY {
            // RFC 8482: answer one RRset, not all of them.
            if let Some(dynamic) = &node.dynamic {
                for family in [RecordType::A, RecordType::AAAA] {
                    if let Outcome::Answered = self.dynamic_answer(dynamic, family) {
                        return Outcome::Answered;
                    }
                }
            }
            return match node.sets.first() {
                Some((_, set)) => {
                    self.push_set(set);
                    Outcome::Answered
                }
                None => Outcome::NoData,
            };
        }
        if let Some(dynamic) = &node.dynamic
            && matches!(qtype, RecordType::A | RecordType::AAAA)
        {
            return self.dynamic_answer(dynamic, qtype);
        }
        let Some(set) = node.set(qtype) else {
            return Outcome::NoData;
        };
        self.push_set(set);
        if qtype == RecordType::NS {
            let zone = &self.snapshot.zones[node.zone];
            self.reply.additionals.extend(zone.glue.iter().map(Rr::Ref));
        }
        Outcome::Answered
    }

    /// The plan of `dynamic` for this client; widens the ECS scope when the answer depends on
    /// the client's location.
    fn plan(&mut self, dynamic: &'s Dynamic) -> Option<&'s CompiledPlan> {
        let located = match self.located {
            Some(located) => located,
            None => {
                let located = self.geo.locate(self.location);
                self.located = Some(located);
                located
            }
        };
        // Every compiled hostname has at least the unknown-region plan.
        let plan = dynamic.plan_for(located.region.map(usize::from))?;
        if dynamic.location_matters {
            self.scope = self.scope.max(located.scope);
        }
        Some(plan)
    }

    fn dynamic_answer(&mut self, dynamic: &'s Dynamic, rtype: RecordType) -> Outcome {
        let Some(plan) = self.plan(dynamic) else {
            return Outcome::NoData;
        };
        let family = if rtype == RecordType::A {
            &plan.a
        } else {
            &plan.aaaa
        };
        match family {
            FamilyAnswer::Empty => Outcome::NoData,
            FamilyAnswer::Fixed(set) => {
                self.push_set(set);
                Outcome::Answered
            }
            FamilyAnswer::Pick { cumulative, sets } => {
                let chosen = pick_weighted(cumulative, (self.random)());
                if let Some(set) = sets.get(chosen) {
                    self.push_set(set);
                }
                Outcome::Answered
            }
            FamilyAnswer::Fill { groups, max } => {
                self.fill(dynamic, groups, *max);
                Outcome::Answered
            }
        }
    }

    /// Multi-value: up to `max` addresses, weighted-shuffled within each group.
    fn fill(&mut self, dynamic: &Dynamic, groups: &'s [Vec<(u32, Arc<RrSet>)>], max: usize) {
        let mut chosen: Vec<&'s Record> = Vec::with_capacity(max);
        let mut order = Vec::new();
        let mut weights = Vec::new();
        'groups: for group in groups {
            weights.clear();
            weights.extend(group.iter().map(|(w, _)| *w));
            weighted_order(&weights, &mut *self.random, &mut order);
            for &member in &order {
                for record in &group[member].1.records {
                    if chosen.len() == max {
                        break 'groups;
                    }
                    chosen.push(record);
                }
            }
        }
        if !self.dnssec {
            self.reply.answers.extend(chosen.into_iter().map(Rr::Ref));
            return;
        }
        // The subset varies per query: sign it once per distinct set and cache the result.
        let zone = &self.snapshot.zones[dynamic.zone];
        let mut key: Vec<u8> = Vec::with_capacity(64);
        key.push(b'F');
        key.extend_from_slice(dynamic.fqdn.as_str().as_bytes());
        let mut rdata: Vec<String> = chosen.iter().map(|r| r.data.to_string()).collect();
        rdata.sort();
        for data in &rdata {
            key.push(0);
            key.extend_from_slice(data.as_bytes());
        }
        let records: Vec<Record> = chosen.iter().map(|r| (*r).clone()).collect();
        match self
            .snapshot
            .lazy
            .get_or_insert(&key, || snapshot::signed_set(zone, records))
        {
            Some(entry) => {
                let n = entry.records.len();
                self.reply
                    .answers
                    .extend((0..n).map(|i| Rr::Cached(entry.clone(), i)));
            }
            None => self.reply.answers.extend(chosen.into_iter().map(Rr::Ref)),
        }
    }

    /// NODATA or NXDOMAIN for `name`: the SOA in the authority section (RFC 2308), plus with
    /// DNSSEC a compact denial (RFC 9824).
    fn deny(&mut self, zone_index: usize, name: &LowerName, outcome: Outcome, qtype: RecordType) {
        if let Outcome::NxDomain = outcome {
            // With DNSSEC the proof says "NODATA" (compact denial), so the rcode is NOERROR
            // unless the client signalled it understands NXDOMAIN with it (CO flag).
            if !self.dnssec || self.compact_ok {
                self.reply.rcode = ResponseCode::NXDomain;
            }
        }
        let (types, negative_soa) = self.name_facts(zone_index, name);
        push_set(&mut self.reply.authorities, negative_soa, self.dnssec);
        if !self.dnssec {
            return;
        }
        let types = types.into_iter().filter(|t| *t != qtype).collect();
        let ttl = negative_soa.records.first().map_or(0, |soa| soa.ttl);
        if let Some(entry) = self.denial(zone_index, name, types, ttl) {
            let n = entry.records.len();
            self.reply
                .authorities
                .extend((0..n).map(|i| Rr::Cached(entry.clone(), i)));
        }
    }

    /// What exists at `name` for this client: the types with data (`NXNAME` when the name
    /// does not exist), and the SOA for negative answers there (its TTL capped at a hostname's
    /// answer TTL, so an empty answer is not cached longer than an address would be).
    fn name_facts(&mut self, zone_index: usize, name: &LowerName) -> (Vec<RecordType>, &'s RrSet) {
        let zone: &'s ZoneData = &self.snapshot.zones[zone_index];
        let Some(node) = self.snapshot.names.get(name) else {
            return (vec![NXNAME], &zone.negative_soa);
        };
        let mut types: Vec<RecordType> = node.types.iter().copied().collect();
        let mut negative_soa: &'s RrSet = &zone.negative_soa;
        if let Some(dynamic) = &node.dynamic
            && let Some(plan) = self.plan(dynamic)
        {
            types.extend(plan.types());
            types.sort();
            negative_soa = &plan.negative_soa;
        }
        (types, negative_soa)
    }

    /// The signed compact-denial NSEC at `name` with bitmap `types` (plus RRSIG and NSEC), as
    /// `[nsec, rrsig]`.
    fn denial(
        &mut self,
        zone_index: usize,
        name: &LowerName,
        types: Vec<RecordType>,
        ttl: u32,
    ) -> Option<Arc<LazyEntry>> {
        let zone: &'s ZoneData = &self.snapshot.zones[zone_index];
        let owner: Name = name.clone().into();
        let mut key: Vec<u8> = Vec::with_capacity(80);
        key.push(b'N');
        key.extend_from_slice(name.to_string().as_bytes());
        key.extend_from_slice(&ttl.to_be_bytes());
        for t in &types {
            key.extend_from_slice(&u16::from(*t).to_be_bytes());
        }
        self.snapshot
            .lazy
            .get_or_insert(&key, || snapshot::signed_denial(zone, &owner, types, ttl))
    }

    /// An explicit NSEC or RRSIG query in a signed zone, answered as the compact-denial model
    /// says the name looks: every name the zone answers for has one NSEC (the one its denials
    /// carry, listing what exists there for this client), and RRSIGs over that NSEC and over
    /// each RRset at the name. So the answer never denies a type a proof claims (RFC 4034
    /// §4.1.2). A name that does not exist has its NXNAME NSEC, unless the client asked for
    /// NXDOMAIN (CO): then it gets the NXDOMAIN proof instead (`answer`).
    fn dnssec_meta_answer(&mut self, zone_index: usize, name: &LowerName, qtype: RecordType) {
        let (types, negative_soa) = self.name_facts(zone_index, name);
        let ttl = negative_soa.records.first().map_or(0, |soa| soa.ttl);
        let Some(entry) = self.denial(zone_index, name, types, ttl) else {
            // Cannot sign (the name is too long for a compact NSEC): plain NODATA.
            push_set(&mut self.reply.authorities, negative_soa, true);
            return;
        };
        if qtype == RecordType::NSEC {
            let n = entry.records.len();
            self.reply
                .answers
                .extend((0..n).map(|i| Rr::Cached(entry.clone(), i)));
            return;
        }
        if let Some(node) = self.snapshot.names.get(name) {
            for (_, set) in &node.sets {
                if let Some(rrsig) = &set.rrsig {
                    self.reply.answers.push(Rr::Ref(rrsig));
                }
            }
            if let Some(dynamic) = &node.dynamic {
                // The signatures over the addresses this client would get.
                let start = self.reply.answers.len();
                for family in [RecordType::A, RecordType::AAAA] {
                    self.dynamic_answer(dynamic, family);
                }
                let mut index = start;
                self.reply.answers.retain(|rr| {
                    index += 1;
                    index <= start || rr.get().record_type() == RecordType::RRSIG
                });
            }
        }
        self.reply.answers.push(Rr::Cached(entry.clone(), 1));
    }

    fn push_set(&mut self, set: &'s RrSet) {
        push_set(&mut self.reply.answers, set, self.dnssec);
    }
}

fn push_set<'s>(section: &mut Vec<Rr<'s>>, set: &'s RrSet, dnssec: bool) {
    section.extend(set.records.iter().map(Rr::Ref));
    if dnssec && let Some(rrsig) = &set.rrsig {
        section.push(Rr::Ref(rrsig));
    }
}

/// The hickory response for `reply` to `request`.
pub(crate) fn message<'q>(
    request: &'q MessageRequest,
    reply: &'q Reply<'_>,
) -> MessageResponse<
    'q,
    'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.rcode;
    let queries = reply.no_question.as_ref().unwrap_or(&request.queries);
    let mut builder = MessageResponseBuilder::new(queries, None);
    if let Some(edns) = &reply.edns {
        builder.edns(edns);
    }
    builder.build(
        metadata,
        reply.answers.iter().map(Rr::get),
        reply.authorities.iter().map(Rr::get),
        std::iter::empty(),
        reply.additionals.iter().map(Rr::get),
    )
}

/// Encodes `reply` for UDP into `out`: at most the client's EDNS size (512 without EDNS),
/// else a truncated response (TC, question and OPT only) so the client retries over TCP.
pub(crate) fn encode_udp(
    request: &MessageRequest,
    reply: &Reply<'_>,
    limits: Limits,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    encode_within(request, reply, udp_payload(request, limits), out)
}

/// Encodes `reply` for TCP: up to 65,535 bytes, else a truncated answer (TC, with the OPT
/// record when the query had one) as over UDP.
pub(crate) fn encode_tcp(
    request: &MessageRequest,
    reply: &Reply<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    encode_within(request, reply, u16::MAX, out)
}

fn encode_within(
    request: &MessageRequest,
    reply: &Reply<'_>,
    max: u16,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max);
    let fits = match message(request, reply).destructive_emit(&mut encoder) {
        Ok(header) => !header.truncation,
        Err(_) => false,
    };
    if fits {
        return Ok(());
    }
    encode_truncated(
        request,
        reply.rcode,
        reply.authoritative,
        reply.edns.clone(),
        max,
        out,
    )
}

/// Encodes the rate limiter's "slip" answer: TC set, no records, so a real client retries
/// over TCP.
pub(crate) fn encode_slip(
    request: &MessageRequest,
    limits: Limits,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let edns = request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(limits.max_udp_payload);
        edns
    });
    encode_truncated(
        request,
        ResponseCode::NoError,
        false,
        edns,
        udp_payload(request, limits),
        out,
    )
}

fn encode_truncated(
    request: &MessageRequest,
    rcode: ResponseCode,
    authoritative: bool,
    edns: Option<Edns>,
    max: u16,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let truncated = Reply {
        rcode,
        authoritative,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
        edns,
        no_question: if plain_question(request.queries.as_bytes()) {
            None
        } else {
            Queries::read(&mut BinDecoder::new(&[]), 0).ok()
        },
    };
    out.clear();
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max);
    let mut response = message(request, &truncated);
    response.metadata_mut().truncation = true;
    response.destructive_emit(&mut encoder).map(|_| ())
}

/// The UDP payload limit for a response to `request`.
pub(crate) fn udp_payload(request: &MessageRequest, limits: Limits) -> u16 {
    match &request.edns {
        Some(edns) => edns
            .max_payload()
            .clamp(512, limits.max_udp_payload.max(512)),
        None => 512,
    }
}

/// Encodes a minimal error response (no question) for a packet whose header parsed but whose
/// body did not: FORMERR with the query's id and opcode, and an OPT record (version 0,
/// [`UNPARSED_PAYLOAD`], DO copied) when the packet carries one, as every other answer to a
/// query with EDNS does (RFC 6891 §7).
pub(crate) fn encode_formerr(packet: &[u8], out: &mut Vec<u8>) -> bool {
    if packet.len() < 12 {
        return false;
    }
    let opt = raw_opt_flags(packet);
    out.clear();
    out.extend_from_slice(&packet[..2]);
    // QR=1, opcode copied, RD copied; RCODE=FORMERR; counts 0 but ARCOUNT for the OPT.
    let opcode_and_rd = packet[2] & 0b0111_1001;
    out.push(0b1000_0000 | opcode_and_rd);
    out.push(ResponseCode::FormErr.low());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    if let Some(flags) = opt {
        out.push(0); // root owner
        out.extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
        out.extend_from_slice(&UNPARSED_PAYLOAD.to_be_bytes());
        // Extended RCODE 0, version 0, the DO bit copied.
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(flags & 0x8000).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    true
}

/// The EDNS flags of the OPT record in `packet`'s additional section, found by walking the raw
/// sections (for packets hickory could not parse, e.g. for a malformed option); `None` when
/// there is no OPT or the sections cannot be walked that far.
fn raw_opt_flags(packet: &[u8]) -> Option<u16> {
    let count = |i: usize| usize::from(u16::from_be_bytes([packet[i], packet[i + 1]]));
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    let mut position = 12;
    // A name: labels up to the root label or a compression pointer.
    let skip_name = |mut position: usize| -> Option<usize> {
        loop {
            let length = *packet.get(position)?;
            match length & 0xC0 {
                0x00 if length == 0 => return Some(position + 1),
                0x00 => position += 1 + usize::from(length),
                0xC0 => return Some(position + 2),
                _ => return None,
            }
        }
    };
    for _ in 0..questions {
        position = skip_name(position)? + 4;
    }
    for index in 0..answers + authorities + additionals {
        position = skip_name(position)?;
        let fixed = packet.get(position..position + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if rtype == u16::from(RecordType::OPT) && index >= answers + authorities {
            return Some(u16::from_be_bytes([fixed[6], fixed[7]]));
        }
        position += 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    }
    None
}
