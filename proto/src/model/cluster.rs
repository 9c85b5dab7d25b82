//! Clusters, their health reports (agent → hub) and health verdicts (committed by the hub).

use std::net::{IpAddr, SocketAddr};

use super::names::{ClusterName, ObjectKey, Region};

/// A cluster registered with the hub. Created through the admin API; an agent can only stream
/// for a cluster that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Unique name.
    pub name: ClusterName,
    /// The region DNS places this cluster in.
    pub region: Region,
    /// Addresses DNS answers with for this cluster (its gateways' public addresses). When empty,
    /// DNS uses the gateway addresses the cluster's agent last reported.
    pub addresses: Vec<IpAddr>,
    /// Operator drain: a drained cluster gets no new DNS answers but keeps its routes.
    pub drained: bool,
}

/// The hub's committed opinion of a cluster's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HealthVerdict {
    /// No report yet since the cluster was created. DNS treats it as unhealthy, so a cluster
    /// that never came up gets no traffic.
    #[default]
    Unknown,
    /// Reports arrive and at least one gateway is ready.
    Healthy,
    /// Reports stopped, or every gateway is down.
    Unhealthy,
}

/// A verdict with when and why it was reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterHealth {
    /// The verdict.
    pub verdict: HealthVerdict,
    /// Why, for operators (`"3 reports missed"`, `"gateway 127.0.1.2:8080 refused"`).
    pub reason: String,
    /// When the verdict last changed, in Unix milliseconds, stamped by the leader that
    /// proposed it (never by the replicas applying it, so every replica stores the same value).
    pub since_unix_ms: u64,
}

/// What an agent observed in its cluster, sent to the hub about once a second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The reporting cluster.
    pub cluster: ClusterName,
    /// Increases by one per report from one agent process; lets the hub drop reordered reports.
    pub seq: u64,
    /// Each gateway instance the agent probes.
    pub gateways: Vec<GatewayProbe>,
    /// Per hostname served in this cluster: how many backend endpoints are ready.
    pub hostnames: Vec<HostnameHealth>,
    /// How the cluster programmed what the hub shares (routes, certificates); `None` in
    /// reports that do not carry it (agents send it when it changed), which leaves the hub's
    /// last committed record as it is.
    pub shared: Option<SharedObjectsStatus>,
    /// Whether `shared` is whole or a change to a whole one sent earlier.
    pub shared_basis: SharedStatusBasis,
}

/// What a report's [`SharedObjectsStatus`] is relative to. A cluster with thousands of shared
/// routes would otherwise resend all of them whenever one changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedStatusBasis {
    /// `routes` lists every shared route. Deltas the same agent process sends later name this
    /// status by `id` (0: none will).
    Whole {
        /// The status's number, unique per agent process.
        id: u64,
    },
    /// `routes` lists the routes added or changed since the whole status numbered `base`;
    /// `removed` those gone since. The version, certificates and rejections are whole.
    Delta {
        /// The whole status this one changes.
        base: u64,
        /// The routes in `base` that are no longer shared, or no longer programmed.
        removed: Vec<ObjectKey>,
    },
}

impl Default for SharedStatusBasis {
    fn default() -> Self {
        Self::Whole { id: 0 }
    }
}

/// How one cluster programmed the hub's shared objects, as of one shared config version: the
/// conditions its Gateways gave each shared HTTPRoute, and which shared certificates its
/// listeners serve. The hub shows the first per cluster (a shared route's status lives in
/// every cluster it reaches) and uses the second to refuse deleting a certificate in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedObjectsStatus {
    /// The shared config version the agent programmed (0: none received from the hub yet).
    pub shared_version: u64,
    /// One entry per shared route of that version, in key order.
    pub routes: Vec<SharedRouteStatus>,
    /// Each listener serving a shared certificate, in (certificate, Gateway, listener) order.
    pub certificates: Vec<CertificateUse>,
    /// The Gateways some instance of which rejected the current programmed config (and keeps
    /// serving its last good one), in Gateway order: their routes are not served as reported.
    pub rejected: Vec<GatewayRejection>,
}

/// A Gateway whose programmed config one of its gateway instances rejected.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayRejection {
    /// The Gateway.
    pub gateway: ObjectKey,
    /// The instance's error (cut to 256 bytes).
    pub error: String,
}

/// A listener of this cluster that serves one of the hub's certificates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertificateUse {
    /// The shared certificate (the Secret key listeners reference).
    pub certificate: ObjectKey,
    /// The Gateway.
    pub gateway: ObjectKey,
    /// The listener's name.
    pub listener: String,
}

/// One shared route in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRouteStatus {
    /// The route.
    pub route: ObjectKey,
    /// One entry per parentRef that names a Gateway of this cluster, in (Gateway, parentRef)
    /// order; empty when none does (the route reaches no Gateway there).
    pub parents: Vec<RouteParentConditions>,
}

/// The conditions a route has towards one of its parents in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteParentConditions {
    /// The parent Gateway.
    pub gateway: ObjectKey,
    /// The listener the parentRef names, if it names one.
    pub section_name: Option<String>,
    /// The listener port the parentRef names, if it names one.
    pub port: Option<u16>,
    /// `Accepted`, `ResolvedRefs` and, when rules were dropped, `PartiallyInvalid`.
    pub conditions: Vec<StatusCondition>,
}

/// One Gateway API status condition, as strings: the hub shows it and never interprets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCondition {
    /// Condition type (`Accepted`).
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionState,
    /// The spec's reason (`BackendNotFound`).
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionState {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionState {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// The result of probing one gateway instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayProbe {
    /// Instance name (the gateway's id as it subscribed to the agent).
    pub name: String,
    /// The address clients reach it on (a listener address), if known.
    pub address: Option<SocketAddr>,
    /// Whether its readiness probe passed (after the agent's own hysteresis).
    pub ready: bool,
    /// Why not, or a short status.
    pub detail: String,
}

/// Backend readiness for one hostname in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostnameHealth {
    /// The route hostname (may start with `*.`).
    pub hostname: String,
    /// Endpoints behind this hostname's routes that passed their probe.
    pub ready_endpoints: u32,
    /// All endpoints behind this hostname's routes.
    pub total_endpoints: u32,
    /// Why some of the routes' backends have no endpoints to count: the invalid backend
    /// references' messages (`Service demo/x not found`), `; `-separated; empty if none.
    pub detail: String,
}
