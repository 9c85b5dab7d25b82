//! Response rate limiting per client network, lock-free: a fixed table of atomic
//! (second, count) slots indexed by a hash of the client's /24 (IPv4) or /56 (IPv6).
//!
//! Limits what a spoofed source can make us send (amplification): over the limit, responses
//! are dropped, except every `slip`-th, which is sent truncated (TC, no records) so a real
//! client retries over TCP, where it is never limited. Networks that hash to the same slot
//! share a budget; with 16384 slots that is rare and only ever stricter.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use super::config::RateLimitConfig;

const SLOTS: usize = 16_384;

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

/// The limiter.
pub(crate) struct RateLimiter {
    per_second: u32,
    slip: u32,
    exempt: Vec<IpNet>,
    slots: Box<[AtomicU64]>,
}

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
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Counts one response to `client` at `now` (Unix seconds) and says what to do with it.
    pub(crate) fn check_at(&self, client: IpAddr, now: u32) -> Verdict {
        let client = client.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&client)) {
            return Verdict::Send;
        }
        let network: u64 = match client {
            IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
            IpAddr::V6(v6) => (u128::from(v6) >> 72) as u64 | (1 << 63),
        };
        // Fibonacci hashing spreads neighbouring networks over the table.
        let index = (network.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as usize % SLOTS;
        let slot = &self.slots[index];
        let current = slot.load(Ordering::Relaxed);
        let count = if (current >> 32) as u32 != now {
            // A new second: restart the count (a lost race only miscounts by a few).
            slot.store(u64::from(now) << 32 | 1, Ordering::Relaxed);
            1
        } else {
            (slot.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF) as u32 + 1
        };
        if count <= self.per_second {
            Verdict::Send
        } else if self.slip > 0 && (count - self.per_second).is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// [`check_at`](Self::check_at) with the wall clock.
    pub(crate) fn check(&self, client: IpAddr) -> Verdict {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        self.check_at(client, now)
    }
}
