//! Backends of a compiled snapshot: weighted choice between a rule's backendRefs
//! ([`WeightedBackends`]) and round robin over a Service's ready endpoints
//! ([`ServiceBackend`]).

pub(crate) mod h1;
pub(crate) mod pool;
pub(crate) mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
#[derive(Debug, Default)]
pub(crate) struct WeightedBackends {
    choices: Vec<BackendChoice>,
    /// `cumulative[i]` is the sum of the weights of choices `0..=i`.
    cumulative: Vec<u64>,
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

    /// The next ready endpoint in round-robin order; `None` when none is ready (503).
    pub(crate) fn next_endpoint(&self) -> Option<&Arc<EndpointPool>> {
        match self.endpoints.len() {
            0 => None,
            1 => self.endpoints.first(),
            n => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                self.endpoints.get(i % n)
            }
        }
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
        Self {
            choices,
            cumulative,
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

    /// Picks a choice with probability weight / total, using `random` (any u64).
    pub(crate) fn pick_with(&self, random: u64) -> Option<&BackendChoice> {
        match self.choices.len() {
            0 => None,
            1 => self.choices.first(),
            _ => {
                let point = random % self.total_weight();
                let index = self.cumulative.partition_point(|&c| c <= point);
                self.choices.get(index)
            }
        }
    }

    /// Picks a choice at random, proportionally to the weights.
    pub(crate) fn pick(&self) -> Option<&BackendChoice> {
        if self.choices.len() <= 1 {
            return self.choices.first();
        }
        self.pick_with(rand::random::<u64>())
    }
}

#[cfg(test)]
mod tests;
