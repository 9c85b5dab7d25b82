//! Response rate limiting (RRL) per response tuple, as BIND, Knot's `rrl` module and dnsdist
//! account: the client's network (/24 for IPv4, /56 for IPv6) together with what the response
//! says, so that a flood of one name from a (spoofed) network limits only that name's answers
//! to that network, not every answer to it.
//!
//! Limits what a spoofed source can make us send (amplification): over the limit, responses
//! are dropped, except every `slip`-th, which is sent truncated (TC, no records) so a real
//! client retries over TCP, where it is never limited.
//!
//! **Buckets** (each keyed by the client network too):
//! - before a response is built, its question: the query name (lower-cased wire form), type
//!   and class, read from the raw packet without parsing the message ([`RateLimiter::check`]);
//!   a packet whose question cannot be read has a bucket of its own per network;
//! - after a negative or error response is built, also its class ([`RateLimiter::check_reply`]):
//!   NODATA per name (whatever the type), NXDOMAIN per zone (so a random-subdomain flood is one
//!   bucket, not one per invented name) and errors (REFUSED, SERVFAIL, ...) per network.
//!
//! **Memory** is a fixed table of 16384 atomic (second, count) slots, lock-free. A bucket is
//! counted in two slots picked by a keyed hash (a count-min sketch) and gets the smaller count:
//! buckets share a budget only when both of their slots collide with busy ones, which is rare
//! and only ever stricter. The hash key is random per limiter, so an attacker cannot pick names
//! that land on another bucket's slots.
//!
//! **Caveat:** a response limited by its class (NXDOMAIN, NODATA, error) has been built before
//! it is dropped; only a question's own bucket drops a datagram before it is parsed.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_server::zone_handler::MessageRequest;
use ipnet::IpNet;

use super::config::RateLimitConfig;
use super::respond::Reply;
use super::snapshot::ZoneSnapshot;

#[cfg(test)]
mod tests;

/// Slots in the table (a power of two).
const SLOTS: usize = 16_384;
/// Longest wire-format name (RFC 1035 §2.3.4).
const MAX_NAME: usize = 255;

/// What to do with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it.
    Send,
    /// Send a truncated response instead.
    Slip,
    /// Send nothing.
    Drop,
}

/// What a built response turned out to be, for [`RateLimiter::check_reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyClass {
    /// NOERROR with answers: counted by its question alone.
    Answer,
    /// NOERROR without answers: counted per query name, whatever the type.
    NoData,
    /// NXDOMAIN: counted per zone (its index in the snapshot's zones).
    NxDomain {
        /// The zone the name would be in.
        zone: usize,
    },
    /// Any error code: counted per client network.
    Error,
}

/// The limiter.
pub(crate) struct RateLimiter {
    per_second: u32,
    slip: u32,
    exempt: Vec<IpNet>,
    /// Keys the bucket hash (SipHash with random keys).
    hash_keys: std::hash::RandomState,
    slots: Box<[AtomicU64]>,
}

/// A bucket, before hashing.
#[derive(Clone, Copy, Debug)]
enum Bucket<'p> {
    /// The question's name and its type and class.
    Question {
        name: &'p [u8],
        type_class: &'p [u8],
    },
    /// A question that cannot be read.
    Unreadable,
    /// The question's name, for NODATA.
    NoData(&'p [u8]),
    /// A zone, for NXDOMAIN.
    NxDomain(usize),
    /// Errors.
    Error,
}

// === impl ReplyClass ===

impl ReplyClass {
    /// The class of `reply`, the response to `request` from `snapshot`.
    pub(crate) fn of(snapshot: &ZoneSnapshot, request: &MessageRequest, reply: &Reply<'_>) -> Self {
        match reply.rcode {
            ResponseCode::NoError if reply.answers.is_empty() => Self::NoData,
            ResponseCode::NoError => Self::Answer,
            ResponseCode::NXDomain => {
                let zone = request
                    .queries
                    .queries()
                    .first()
                    .and_then(|query| snapshot.zone_for(query.name()));
                match zone {
                    Some(zone) => Self::NxDomain { zone },
                    None => Self::Error,
                }
            }
            _ => Self::Error,
        }
    }
}

// === impl RateLimiter ===

impl RateLimiter {
    /// A limiter for `config`; `None` when limiting is off.
    pub(crate) fn new(config: &RateLimitConfig, exempt: Vec<IpNet>) -> Option<Self> {
        if config.responses_per_second == 0 {
            return None;
        }
        Some(Self {
            per_second: config.responses_per_second,
            slip: config.slip,
            exempt,
            hash_keys: std::hash::RandomState::new(),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Counts a response to the query `packet` (raw, at least a header) from `client` in its
    /// question's bucket, before the response is built, and says what to do with it.
    pub(crate) fn check(&self, client: IpAddr, packet: &[u8]) -> Verdict {
        self.check_at(client, packet, unix_seconds())
    }

    /// After a response of `class` to `packet` is built: counts it in its class's bucket too
    /// (nothing for an answer, which its question's bucket covers).
    pub(crate) fn check_reply(&self, client: IpAddr, packet: &[u8], class: ReplyClass) -> Verdict {
        self.check_reply_at(client, packet, class, unix_seconds())
    }

    /// [`check`](Self::check) at `now` (Unix seconds).
    pub(crate) fn check_at(&self, client: IpAddr, packet: &[u8], now: u32) -> Verdict {
        // Exempt networks (loopback by default) skip the question's parse and hash too.
        if self.is_exempt(client) {
            return Verdict::Send;
        }
        let bucket = match question(packet) {
            Some((name, type_class)) => Bucket::Question { name, type_class },
            None => Bucket::Unreadable,
        };
        self.count(client, bucket, now)
    }

    /// [`check_reply`](Self::check_reply) at `now` (Unix seconds).
    pub(crate) fn check_reply_at(
        &self,
        client: IpAddr,
        packet: &[u8],
        class: ReplyClass,
        now: u32,
    ) -> Verdict {
        if self.is_exempt(client) {
            return Verdict::Send;
        }
        let bucket = match class {
            ReplyClass::Answer => return Verdict::Send,
            ReplyClass::NoData => match question(packet) {
                Some((name, _)) => Bucket::NoData(name),
                None => Bucket::Unreadable,
            },
            ReplyClass::NxDomain { zone } => Bucket::NxDomain(zone),
            ReplyClass::Error => Bucket::Error,
        };
        self.count(client, bucket, now)
    }

    fn is_exempt(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.exempt.iter().any(|net| net.contains(&client))
    }

    /// Counts one response in `bucket` of `client`'s network (not exempt).
    fn count(&self, client: IpAddr, bucket: Bucket<'_>, now: u32) -> Verdict {
        let client = client.to_canonical();
        let network: u64 = match client {
            IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
            IpAddr::V6(v6) => (u128::from(v6) >> 72) as u64 | (1 << 63),
        };
        let hash = self.hash(network, bucket);
        let first = hash as usize & (SLOTS - 1);
        let mut second = (hash >> 32) as usize & (SLOTS - 1);
        if second == first {
            second ^= 1;
        }
        // Count-min: the bucket's count is at least what each of its slots saw.
        let count = self.bump(first, now).min(self.bump(second, now));
        if count <= self.per_second {
            Verdict::Send
        } else if self.slip > 0 && (count - self.per_second).is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    fn hash(&self, network: u64, bucket: Bucket<'_>) -> u64 {
        let mut hasher = self.hash_keys.build_hasher();
        hasher.write_u64(network);
        match bucket {
            Bucket::Question { name, type_class } => {
                hasher.write_u8(1);
                hash_lowercase(&mut hasher, name);
                // Type and class are numbers, not text: not lower-cased.
                hasher.write(type_class);
            }
            Bucket::Unreadable => hasher.write_u8(2),
            Bucket::NoData(name) => {
                hasher.write_u8(3);
                hash_lowercase(&mut hasher, name);
            }
            Bucket::NxDomain(zone) => {
                hasher.write_u8(4);
                hasher.write_usize(zone);
            }
            Bucket::Error => hasher.write_u8(5),
        }
        hasher.finish()
    }

    /// Adds one to slot `index` in second `now`; the slot's count this second.
    fn bump(&self, index: usize, now: u32) -> u32 {
        let slot = &self.slots[index];
        let current = slot.load(Ordering::Relaxed);
        if (current >> 32) as u32 != now {
            // A new second: restart the count (a lost race only miscounts by a few).
            slot.store(u64::from(now) << 32 | 1, Ordering::Relaxed);
            1
        } else {
            (slot.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF) as u32 + 1
        }
    }
}

/// The wall clock in Unix seconds.
fn unix_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The question of a query with one question and an uncompressed name: the name in wire
/// form (as received) and the type and class. `None` when it cannot be read.
fn question(packet: &[u8]) -> Option<(&[u8], &[u8])> {
    if packet.get(4..6)? != [0, 1] {
        return None;
    }
    let body = packet.get(12..)?;
    let mut name_len = 0;
    loop {
        let length = usize::from(*body.get(name_len)?);
        // A compression pointer (or an obsolete label type) has no place in a question.
        if length & 0xC0 != 0 {
            return None;
        }
        name_len += 1 + length;
        if name_len > MAX_NAME {
            return None;
        }
        if length == 0 {
            break;
        }
    }
    Some((body.get(..name_len)?, body.get(name_len..name_len + 4)?))
}

/// Hashes the wire-form `name` lower-cased (ASCII, as DNS compares names; label lengths are
/// below 64, so lower-casing leaves them alone).
fn hash_lowercase(hasher: &mut impl Hasher, name: &[u8]) {
    let mut lower = [0u8; MAX_NAME];
    for (slot, byte) in lower.iter_mut().zip(name) {
        *slot = byte.to_ascii_lowercase();
    }
    hasher.write(&lower[..name.len().min(MAX_NAME)]);
}
