//! Prometheus metrics of the gateway, registered once at [`spawn`](crate::spawn).
//!
//! Hot-path cost: every compiled rule and backend holds clones of its own counters and
//! histogram (atomics behind an `Arc`), resolved when a config is compiled, so serving a
//! request never touches a metric family's label map. The histogram is lock-free
//! ([`AtomicHistogram`]); prometheus-client's own takes a mutex per observation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All metric families of one gateway.
#[derive(Debug, Clone)]
pub(crate) struct GatewayMetrics {
    route_requests: Family<RouteClassLabels, Counter>,
    route_latency: Family<RouteLabels, AtomicHistogram>,
    route_aborted: Family<RouteLabels, Counter>,
    backend_requests: Family<BackendClassLabels, Counter>,
    backend_errors: Family<BackendLabels, Counter>,
    /// Requests that matched no listener or route, by status.
    pub(crate) unmatched: Family<StatusLabels, Counter>,
    /// Failed TLS handshakes per port.
    pub(crate) tls_handshake_failures: Family<PortLabels, Counter>,
    /// Open downstream connections per port.
    pub(crate) active_connections: Family<PortLabels, Gauge>,
    /// Connections closed at once because the process was at its connection cap, per port.
    pub(crate) connections_refused: Family<PortLabels, Counter>,
    /// Connections closed for sending nothing, or for staying idle, per port.
    pub(crate) connections_timed_out: Family<PortLabels, Counter>,
    /// HTTP/2 streams whose response was dropped because the client granted the stream no
    /// flow-control window for the send timeout, per port.
    pub(crate) streams_timed_out: Family<PortLabels, Counter>,
    /// The version of the config being served.
    pub(crate) config_version: Gauge,
    /// Config applications by result (`ok`, `rejected`).
    pub(crate) config_applies: Family<ResultLabels, Counter>,
}

/// Handles for one rule: requests by status class and latency to response headers.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    by_class: [Counter; 5],
    latency: AtomicHistogram,
    /// Responses whose body was cut short after the head went out.
    aborted: Counter,
}

/// Handles for one backend: upstream responses by status class and transport errors.
#[derive(Debug, Clone)]
pub(crate) struct BackendMetrics {
    by_class: [Counter; 5],
    errors: Counter,
}

/// `route` = `namespace/name`, `rule` = rule index.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    route: String,
    rule: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteClassLabels {
    route: String,
    rule: String,
    class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendClassLabels {
    backend: String,
    class: String,
}

/// `status` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    /// HTTP status code.
    pub(crate) status: u16,
}

/// `port` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PortLabels {
    /// Listener port.
    pub(crate) port: u16,
}

/// `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// `ok` or `rejected`.
    pub(crate) result: &'static str,
}

/// A latency histogram with fixed buckets, updated with relaxed atomics only.
#[derive(Debug, Clone, Default)]
pub(crate) struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug, Default)]
struct HistogramInner {
    /// Non-cumulative counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

// === impl GatewayMetrics ===

impl GatewayMetrics {
    /// Creates and registers every family under the `gateway` prefix.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let this = Self {
            route_requests: Family::default(),
            route_latency: Family::default(),
            route_aborted: Family::default(),
            backend_requests: Family::default(),
            backend_errors: Family::default(),
            unmatched: Family::default(),
            tls_handshake_failures: Family::default(),
            active_connections: Family::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
            streams_timed_out: Family::default(),
            config_version: Gauge::default(),
            config_applies: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("gateway");
        registry.register(
            "route_requests",
            "Requests answered per route rule, by status class",
            this.route_requests.clone(),
        );
        registry.register(
            "route_request_duration_seconds",
            "Time from request head to response head per route rule",
            this.route_latency.clone(),
        );
        registry.register(
            "route_aborted_responses",
            "Responses per route rule whose body was cut short after the status was sent \
             (upstream closed or reset midway, timeout); also counted by status class",
            this.route_aborted.clone(),
        );
        registry.register(
            "backend_requests",
            "Upstream responses per backend, by status class",
            this.backend_requests.clone(),
        );
        registry.register(
            "backend_errors",
            "Upstream transport failures (connect, reset, timeout) per backend",
            this.backend_errors.clone(),
        );
        registry.register(
            "unmatched_requests",
            "Requests that matched no listener or route, by status",
            this.unmatched.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "Failed TLS handshakes per listener port",
            this.tls_handshake_failures.clone(),
        );
        registry.register(
            "active_connections",
            "Open downstream connections per listener port",
            this.active_connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because the process was at its connection cap, per listener port",
            this.connections_refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed for sending no first byte, staying idle, or reading nothing for the send timeout, per listener port",
            this.connections_timed_out.clone(),
        );
        registry.register(
            "streams_timed_out",
            "HTTP/2 streams whose response was dropped because the client granted the stream no flow-control window for the send timeout, per listener port",
            this.streams_timed_out.clone(),
        );
        registry.register(
            "config_version",
            "Version of the config being served (0 before the first)",
            this.config_version.clone(),
        );
        registry.register(
            "config_applies",
            "Config applications by result",
            this.config_applies.clone(),
        );
        this
    }

    /// Handles for one rule.
    pub(crate) fn route(&self, route: &str, rule: usize) -> RouteMetrics {
        let rule = rule.to_string();
        let by_class = CLASSES.map(|class| {
            self.route_requests
                .get_or_create(&RouteClassLabels {
                    route: route.to_string(),
                    rule: rule.clone(),
                    class: class.to_string(),
                })
                .clone()
        });
        let labels = RouteLabels {
            route: route.to_string(),
            rule,
        };
        let latency = self.route_latency.get_or_create(&labels).clone();
        let aborted = self.route_aborted.get_or_create(&labels).clone();
        RouteMetrics {
            by_class,
            latency,
            aborted,
        }
    }

    /// Handles for one backend.
    pub(crate) fn backend(&self, backend: &str) -> BackendMetrics {
        let by_class = CLASSES.map(|class| {
            self.backend_requests
                .get_or_create(&BackendClassLabels {
                    backend: backend.to_string(),
                    class: class.to_string(),
                })
                .clone()
        });
        let errors = self
            .backend_errors
            .get_or_create(&BackendLabels {
                backend: backend.to_string(),
            })
            .clone();
        BackendMetrics { by_class, errors }
    }
}

fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

// === impl RouteMetrics ===

impl RouteMetrics {
    /// Records one answered request.
    pub(crate) fn record(&self, status: u16, elapsed: Duration) {
        if let Some(counter) = self.by_class.get(class_index(status)) {
            counter.inc();
        }
        self.latency.observe(elapsed);
    }

    /// Records a response whose body was cut short after its status went out.
    pub(crate) fn record_aborted(&self) {
        self.aborted.inc();
    }
}

// === impl BackendMetrics ===

impl BackendMetrics {
    /// Records one upstream response.
    pub(crate) fn record_status(&self, status: u16) {
        if let Some(counter) = self.by_class.get(class_index(status)) {
            counter.inc();
        }
    }

    /// Records one transport failure.
    pub(crate) fn record_error(&self) {
        self.errors.inc();
    }

    /// Records a response body that failed midway (the upstream closed or reset the
    /// connection, or a timeout cut it): a transport failure too.
    pub(crate) fn record_body_error(&self) {
        self.errors.inc();
    }
}

// === impl AtomicHistogram ===

impl AtomicHistogram {
    /// Adds one observation.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len());
        if let Some(bucket) = self.inner.buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.inner.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(self.inner.buckets.iter())
            .map(|(&le, count)| (le, count.load(Ordering::Relaxed)))
            .collect();
        let inf = self
            .inner
            .buckets
            .last()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        buckets.push((f64::INFINITY, inf));
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
