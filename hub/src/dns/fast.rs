//! The UDP fast path: the hot query — A or AAAA for a hostname with a traffic policy, no
//! DNSSEC, at most an ECS option — answered straight from pre-encoded wire data, without
//! building hickory messages.
//!
//! **Invariant:** the fast path either produces exactly the response the full path
//! (`respond`) would produce for the same query and random number, or declines (`None`) and
//! the full path answers. It declines on anything unusual: other types, DO set, EDNS options
//! other than ECS, malformed ECS, compressed or non-ASCII names, trailing bytes, answers that
//! would need truncation, multi-value subsets. The fuzz target checks the equivalence.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::answer::pick_weighted;
use super::geo::GeoMap;
use super::respond::Limits;
use super::snapshot::{FamilyAnswer, RrSet, ZoneSnapshot};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const OPTION_ECS: u16 = 8;

/// A query the fast path may answer.
struct FastQuery<'p> {
    /// The question section, as received (case preserved).
    question: &'p [u8],
    /// The lower-cased wire name.
    name: [u8; 255],
    name_len: usize,
    qtype: u16,
    /// Present when the query had an OPT record.
    edns: Option<FastEdns<'p>>,
}

struct FastEdns<'p> {
    payload: u16,
    ecs: Option<FastEcs<'p>>,
}

struct FastEcs<'p> {
    /// FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH (0) and ADDRESS, as received.
    option: &'p [u8],
    source: u8,
    address: IpAddr,
}

/// Answers `packet` into `out` if the fast path applies; `false` means "use the full path".
pub(crate) fn answer(
    snapshot: &ZoneSnapshot,
    geo: &GeoMap,
    packet: &[u8],
    client: IpAddr,
    limits: Limits,
    random: &mut dyn FnMut() -> u64,
    out: &mut Vec<u8>,
) -> bool {
    if !snapshot.has_state {
        return false;
    }
    let Some(query) = parse(packet) else {
        return false;
    };
    let Some(dynamic) = snapshot.fast.get(&query.name[..query.name_len]) else {
        return false;
    };
    let location = match query.edns.as_ref().and_then(|e| e.ecs.as_ref()) {
        Some(ecs) if ecs.source > 0 => ecs.address,
        _ => client,
    };
    let located = geo.locate(location);
    let Some(plan) = dynamic.plan_for(located.region.map(usize::from)) else {
        return false;
    };
    let family = if query.qtype == TYPE_A {
        &plan.a
    } else {
        &plan.aaaa
    };
    let set: &RrSet = match family {
        FamilyAnswer::Fixed(set) => set,
        FamilyAnswer::Pick { cumulative, sets } => {
            match sets.get(pick_weighted(cumulative, random())) {
                Some(set) => set,
                None => return false,
            }
        }
        // NODATA needs the SOA; multi-value subsets vary: the full path handles both.
        FamilyAnswer::Empty | FamilyAnswer::Fill { .. } => return false,
    };
    if set.wire.is_empty() {
        return false;
    }
    let scope = match query.edns.as_ref().and_then(|e| e.ecs.as_ref()) {
        Some(ecs) if ecs.source > 0 && dynamic.location_matters => located.scope,
        _ => 0,
    };
    let limit = match &query.edns {
        Some(edns) => edns.payload.clamp(512, limits.max_udp_payload.max(512)),
        None => 512,
    };

    out.clear();
    out.extend_from_slice(&packet[..2]);
    // QR, AA, RD copied; opcode QUERY; RA 0. CD copied, AD 0, RCODE NOERROR.
    out.push(0x80 | 0x04 | (packet[2] & 0x01));
    out.push(packet[3] & 0x10);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(set.records.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
    out.extend_from_slice(query.question);
    out.extend_from_slice(&set.wire);
    if query.edns.is_some() {
        out.push(0); // root
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&limits.max_udp_payload.max(512).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]); // extended RCODE, version 0, flags (DO clear)
        match query.edns.as_ref().and_then(|e| e.ecs.as_ref()) {
            Some(ecs) => {
                out.extend_from_slice(&((ecs.option.len() + 4) as u16).to_be_bytes());
                out.extend_from_slice(&OPTION_ECS.to_be_bytes());
                out.extend_from_slice(&(ecs.option.len() as u16).to_be_bytes());
                out.extend_from_slice(&ecs.option[..3]);
                out.push(scope);
                out.extend_from_slice(&ecs.option[4..]);
            }
            None => out.extend_from_slice(&0u16.to_be_bytes()),
        }
    }
    out.len() <= usize::from(limit)
}

/// Parses the narrow query shape the fast path handles, or `None`.
fn parse(packet: &[u8]) -> Option<FastQuery<'_>> {
    let header = packet.get(..12)?;
    // QR 0, opcode QUERY (flags byte 2 bits 3-6), Z 0, RCODE 0.
    if header[2] & 0xF8 != 0 || header[3] & 0x4F != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return None;
    }
    let mut name = [0u8; 255];
    let mut name_len = 0;
    let mut position = 12;
    loop {
        let length = usize::from(*packet.get(position)?);
        if length & 0xC0 != 0 || name_len + length + 1 > 255 {
            return None;
        }
        name[name_len] = length as u8;
        name_len += 1;
        position += 1;
        if length == 0 {
            break;
        }
        let label = packet.get(position..position + length)?;
        for (slot, byte) in name[name_len..name_len + length].iter_mut().zip(label) {
            if !byte.is_ascii() {
                return None;
            }
            *slot = byte.to_ascii_lowercase();
        }
        name_len += length;
        position += length;
    }
    let fixed = packet.get(position..position + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if !(qtype == TYPE_A || qtype == TYPE_AAAA) || qclass != CLASS_IN {
        return None;
    }
    position += 4;
    let question = &packet[12..position];
    let edns = if arcount == 1 {
        let (edns, end) = parse_opt(packet, position)?;
        position = end;
        Some(edns)
    } else {
        None
    };
    if position != packet.len() {
        return None;
    }
    Some(FastQuery {
        question,
        name,
        name_len,
        qtype,
        edns,
    })
}

/// Whether `packet` (a query) carries an ECS option whose address has more or fewer octets
/// than its source prefix needs. RFC 7871 §6 asks for FORMERR then, but the full path's parser
/// keeps only the prefix's octets, so it cannot see them; the fast path declines such queries.
pub(crate) fn ecs_address_length_wrong(packet: &[u8]) -> bool {
    let Some(header) = packet.get(..12) else {
        return false;
    };
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let (qdcount, other, arcount) = (count(4), count(6) + count(8), count(10));
    if arcount == 0 {
        return false;
    }
    let mut position = 12;
    for _ in 0..qdcount {
        let Some(end) = skip_name(packet, position) else {
            return false;
        };
        position = end + 4;
    }
    for index in 0..other + arcount {
        let Some(end) = skip_name(packet, position) else {
            return false;
        };
        let Some(fixed) = packet.get(end..end + 10) else {
            return false;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Some(rdata) = packet.get(end + 10..end + 10 + rdlength) else {
            return false;
        };
        if index >= other && rtype == TYPE_OPT {
            let mut options = rdata;
            while let [c0, c1, l0, l1, rest @ ..] = options {
                let length = usize::from(u16::from_be_bytes([*l0, *l1]));
                let Some(option) = rest.get(..length) else {
                    return false;
                };
                if u16::from_be_bytes([*c0, *c1]) == OPTION_ECS
                    && let Some(&source) = option.get(2)
                    && option.len() >= 4
                    && option.len() - 4 != usize::from(source).div_ceil(8)
                {
                    return true;
                }
                options = &rest[length..];
            }
        }
        position = end + 10 + rdlength;
    }
    false
}

/// The end of the (possibly compressed) name at `position`.
fn skip_name(packet: &[u8], mut position: usize) -> Option<usize> {
    loop {
        let length = *packet.get(position)?;
        match length {
            0 => return Some(position + 1),
            l if l & 0xC0 == 0xC0 => return Some(position + 2),
            l if l & 0xC0 == 0 => position += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// Parses an OPT record at `position`: version 0, DO clear, no options but one valid ECS.
fn parse_opt(packet: &[u8], position: usize) -> Option<(FastEdns<'_>, usize)> {
    let fixed = packet.get(position..position + 11)?;
    if fixed[0] != 0 || u16::from_be_bytes([fixed[1], fixed[2]]) != TYPE_OPT {
        return None;
    }
    let payload = u16::from_be_bytes([fixed[3], fixed[4]]);
    // Extended RCODE 0, version 0, flags 0 (no DO: signed answers take the full path).
    if fixed[5..9] != [0, 0, 0, 0] {
        return None;
    }
    let rdlength = usize::from(u16::from_be_bytes([fixed[9], fixed[10]]));
    let start = position + 11;
    let rdata = packet.get(start..start + rdlength)?;
    let ecs = match rdata.len() {
        0 => None,
        _ => {
            let code = u16::from_be_bytes([*rdata.first()?, *rdata.get(1)?]);
            let length = usize::from(u16::from_be_bytes([*rdata.get(2)?, *rdata.get(3)?]));
            if code != OPTION_ECS || rdata.len() != 4 + length {
                return None;
            }
            Some(parse_ecs(&rdata[4..])?)
        }
    };
    Some((FastEdns { payload, ecs }, start + rdlength))
}

/// A valid ECS option (RFC 7871 §6), or `None` (the full path answers FORMERR).
fn parse_ecs(option: &[u8]) -> Option<FastEcs<'_>> {
    let family = u16::from_be_bytes([*option.first()?, *option.get(1)?]);
    let source = *option.get(2)?;
    let scope = *option.get(3)?;
    let address = option.get(4..)?;
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if scope != 0 || source > max || address.len() != usize::from(source).div_ceil(8) {
        return None;
    }
    // No bits set beyond the source prefix.
    if source % 8 != 0 {
        let last = *address.last()?;
        if last & (0xFF >> (source % 8)) != 0 {
            return None;
        }
    }
    let address = if family == 1 {
        let mut octets = [0u8; 4];
        octets[..address.len()].copy_from_slice(address);
        IpAddr::V4(Ipv4Addr::from(octets))
    } else {
        let mut octets = [0u8; 16];
        octets[..address.len()].copy_from_slice(address);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Some(FastEcs {
        option,
        source,
        address,
    })
}
