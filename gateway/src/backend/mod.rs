//! Backends of a compiled snapshot: weighted choice between a rule's backendRefs
//! ([`WeightedBackends`]) and round robin over a Service's ready endpoints
//! ([`ServiceBackend`]).
//!
//! Weighted choice is deterministic, not random: a 70/30 split sends exactly 70
//! and 30 of every 100 requests, spread out rather than in runs. Random choice
//! would let a canary at 5% see 7% over a few hundred requests.

pub(crate) mod h1;
pub(crate) mod pool;
pub(crate) mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use self::pool::EndpointPool;
use crate::filter::FilterSet;
use crate::metrics::BackendMetrics;

/// A Service port with its ready endpoints, shared by every rule of a snapshot that names it.
#[derive(Debug)]
pub(crate) struct ServiceBackend {
    /// `namespace/name:port`, for logs and metrics.
    pub(crate) name: Arc<str>,
    /// Ready endpoints only.
    pub(crate) endpoints: Vec<Arc<EndpointPool>>,
    next: AtomicUsize,
    /// Per-backend metrics.
    pub(crate) metrics: BackendMetrics,
}

/// What a backendRef resolved to.
#[derive(Debug, Clone)]
pub(crate) enum BackendTarget {
    /// A Service port.
    Service(Arc<ServiceBackend>),
    /// An invalid reference: requests that pick it get a 500 (gRPC UNAVAILABLE).
    Invalid {
        /// `namespace/name` as written.
        name: Arc<str>,
        /// Gateway API reason (`BackendNotFound`, `RefNotPermitted`, ...).
        reason: Arc<str>,
    },
}

/// One weighted backendRef of a rule.
#[derive(Debug)]
pub(crate) struct BackendChoice {
    /// Relative weight (> 0; zero-weight refs are dropped at compile time).
    pub(crate) weight: u32,
    /// Where requests go.
    pub(crate) target: BackendTarget,
    /// Backend-level filters, run only when this choice is picked.
    pub(crate) filters: FilterSet,
}

/// A rule's backendRefs with their cumulative weights.
///
/// The n-th request of the snapshot goes to the choice that owns point
/// `(n * stride) mod total` of the cumulative table. `stride` is coprime to
/// `total`, so every `total` consecutive requests visit every point once (exact
/// shares), and it is close to `total / φ`, so consecutive requests land far
/// apart (a Weyl sequence: shares are close to exact over short windows too).
#[derive(Debug, Default)]
pub(crate) struct WeightedBackends {
    choices: Vec<BackendChoice>,
    /// `cumulative[i]` is the sum of the weights of choices `0..=i`.
    cumulative: Vec<u64>,
    stride: u64,
    next: AtomicU64,
}

// === impl ServiceBackend ===

impl ServiceBackend {
    /// A backend over `endpoints` (ready ones only).
    pub(crate) fn new(
        name: Arc<str>,
        endpoints: Vec<Arc<EndpointPool>>,
        metrics: BackendMetrics,
    ) -> Self {
        Self {
            name,
            endpoints,
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The next ready endpoint in round-robin order, skipping endpoints a connect recently
    /// failed to ([`EndpointPool::is_up`]) while another is up; `None` when none is ready
    /// (503). When every endpoint is down the round-robin pick is used anyway: failing open
    /// finds a recovered backend at once.
    pub(crate) fn next_endpoint(&self) -> Option<&Arc<EndpointPool>> {
        match self.endpoints.len() {
            0 => None,
            1 => self.endpoints.first(),
            n => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                let pick = &self.endpoints[i % n];
                if pick.is_up() {
                    return Some(pick);
                }
                // Draw on from the shared counter (not the next in order, which would take the
                // whole share of the endpoint that is out).
                (1..n)
                    .map(|_| &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n])
                    .find(|endpoint| endpoint.is_up())
                    .or(Some(pick))
            }
        }
    }

    /// How many ready endpoints it has.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }
}

// === impl WeightedBackends ===

impl WeightedBackends {
    /// Builds the table; choices with weight 0 are never selected and are dropped.
    pub(crate) fn new(choices: Vec<BackendChoice>) -> Self {
        let choices: Vec<_> = choices.into_iter().filter(|c| c.weight > 0).collect();
        let mut total = 0u64;
        let cumulative = choices
            .iter()
            .map(|c| {
                total += u64::from(c.weight);
                total
            })
            .collect();
        let stride = golden_stride(total);
        Self {
            choices,
            cumulative,
            stride,
            // A random start: a config apply rebuilds the table, and starting every snapshot
            // at 0 would hand the first requests after each apply to the first backendRef
            // (a 5% canary would get nothing on a route that sees few requests between
            // applies). Every window of `total` requests is exact from any start.
            // Modulo the total, so the counter never wraps mid-cycle.
            next: AtomicU64::new(rand::random::<u64>() % total.max(1)),
        }
    }

    /// The choices with a weight above zero.
    pub(crate) fn choices(&self) -> &[BackendChoice] {
        &self.choices
    }

    /// Sum of the weights.
    pub(crate) fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The choice for the `n`-th request (see the type's documentation).
    pub(crate) fn pick_nth(&self, n: u64) -> Option<&BackendChoice> {
        match self.choices.len() {
            0 => None,
            1 => self.choices.first(),
            _ => {
                let total = self.total_weight();
                let point =
                    ((u128::from(n % total) * u128::from(self.stride)) % u128::from(total)) as u64;
                let index = self.cumulative.partition_point(|&c| c <= point);
                self.choices.get(index)
            }
        }
    }

    /// The choice for the next request, in exact proportion to the weights.
    pub(crate) fn pick(&self) -> Option<&BackendChoice> {
        if self.choices.len() <= 1 {
            return self.choices.first();
        }
        self.pick_nth(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// The integer coprime to `total` nearest to `total / φ` (1 for totals below 3).
fn golden_stride(total: u64) -> u64 {
    if total < 3 {
        return 1;
    }
    // 0.618… in 32.32 fixed point; total ≤ 2^32 · 10^6 never overflows u128.
    let start = ((u128::from(total) * 2_654_435_769) >> 32) as u64;
    (0..total)
        .flat_map(|d| [start.saturating_sub(d), start.saturating_add(d)])
        .find(|&k| k > 0 && k < total && gcd(k, total) == 1)
        .unwrap_or(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests;
