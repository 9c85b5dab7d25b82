//! Commands the state machine applies, and their outcomes.

use std::fmt;
use std::net::IpAddr;

use meridian_proto::model::{
    Cluster, ClusterHealth, ClusterName, Fqdn, HostnamePolicy, ObjectKey, RecordData,
    SharedObjectsStatus, gateway::TlsCertificate, route::HttpRoute,
};

/// One change to the hub state, as it travels through the Raft log.
///
/// **Invariant:** everything `apply` needs is inside the command: the time is stamped by the
/// proposer, never read by the replicas, so every replica reaches the same state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Who asked, for the audit log (`admin-api`, `health-tracker`, `agent/us-east`, ...).
    pub actor: String,
    /// When the proposer stamped the command, in Unix milliseconds.
    pub unix_ms: u64,
    /// What to change.
    pub action: Action,
}

/// What a [`Command`] changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Creates or replaces a cluster's definition (its health and reported addresses are kept).
    PutCluster(Cluster),
    /// Deletes a cluster no hostname uses.
    DeleteCluster(ClusterName),
    /// Records a health verdict (proposed by the leader's health tracker).
    SetHealth {
        /// The cluster.
        cluster: ClusterName,
        /// The new verdict.
        health: ClusterHealth,
    },
    /// Records the gateway addresses a cluster's agent reported when it registered.
    SetReportedAddresses {
        /// The cluster.
        cluster: ClusterName,
        /// Its gateways' addresses.
        addresses: Vec<IpAddr>,
    },
    /// Records whether a cluster can serve a hostname (proposed by the leader's health tracker
    /// on transitions only). Only a change of `serving` counts; the time of the change is the
    /// command's `unix_ms`.
    SetHostnameServing {
        /// The cluster, a target of the hostname's policy.
        cluster: ClusterName,
        /// The hostname (a hostname policy).
        fqdn: Fqdn,
        /// Whether the cluster can serve it.
        serving: bool,
        /// Why, for operators.
        reason: String,
    },
    /// Records how a cluster programmed the shared routes: each route's conditions towards
    /// the cluster's Gateways (proposed by the leader's health tracker when a cluster's report
    /// differs from its record). A delta, so one route's change is a small entry whatever the
    /// number of routes. Routes that no longer exist are ignored.
    SetSharedStatus {
        /// The cluster.
        cluster: ClusterName,
        /// The shared version the cluster programmed, and the routes whose conditions changed.
        changed: SharedObjectsStatus,
        /// The routes the cluster no longer reports.
        removed: Vec<ObjectKey>,
    },
    /// Drains (no new DNS answers) or undrains a cluster.
    SetDrained {
        /// The cluster.
        cluster: ClusterName,
        /// Drained or not.
        drained: bool,
    },
    /// Creates or replaces a hostname's DNS policy.
    PutHostname(HostnamePolicy),
    /// Deletes a hostname's DNS policy.
    DeleteHostname(Fqdn),
    /// Pins a hostname to one of its target clusters, or unpins it.
    SetPinned {
        /// The hostname.
        fqdn: Fqdn,
        /// The cluster to pin to; `None` unpins.
        cluster: Option<ClusterName>,
    },
    /// Creates or replaces a shared HTTPRoute (pushed to every cluster).
    PutRoute(Box<HttpRoute>),
    /// Deletes a shared HTTPRoute.
    DeleteRoute(ObjectKey),
    /// Creates or replaces a certificate pushed to every cluster (validated by
    /// [`check_certificate`](crate::store::check_certificate)).
    PutCertificate(Box<TlsCertificate>),
    /// Deletes a certificate.
    DeleteCertificate(ObjectKey),
    /// Stores a zone's DNSSEC signing key; refused when the zone already has one, so two
    /// leaders racing to generate one end up with the first.
    PutZoneKey {
        /// The zone apex.
        zone: Fqdn,
        /// PKCS#8 DER of an ECDSA P-256 key.
        pkcs8: Vec<u8>,
    },
    /// Creates or replaces a static DNS record set.
    PutRecordSet {
        /// The owner name.
        name: Fqdn,
        /// The record type (`A`, `AAAA`, `CNAME`, `TXT`, `MX`).
        rtype: String,
        /// TTL in seconds.
        ttl: u32,
        /// The records, all of type `rtype`.
        values: Vec<RecordData>,
    },
    /// Deletes a static DNS record set.
    DeleteRecordSet {
        /// The owner name.
        name: Fqdn,
        /// The record type.
        rtype: String,
    },
}

/// The result of applying a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command changed the state.
    Applied,
    /// The command was valid but the state already held that value.
    Unchanged,
    /// The command was refused; the state is unchanged.
    Rejected(Rejection),
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct Rejection {
    /// The kind of refusal.
    pub kind: RejectKind,
    /// The field path of the bad value (`targets[0].cluster`), when one field is to blame.
    pub field: Option<String>,
    /// Why, for humans.
    pub message: String,
}

/// Kinds of refusal; the admin API maps them to HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// Something named does not exist (404).
    NotFound,
    /// The command is invalid (400).
    Invalid,
    /// The command conflicts with the state (409).
    Conflict,
}

// === impl Action ===

impl Action {
    /// A short description for the audit log and logs: `put cluster us-east`.
    pub fn describe(&self) -> String {
        match self {
            Self::PutCluster(cluster) => format!("put cluster {}", cluster.name),
            Self::DeleteCluster(name) => format!("delete cluster {name}"),
            Self::SetHealth { cluster, health } => format!(
                "set health of cluster {cluster} to {} ({})",
                verdict_name(health.verdict),
                health.reason
            ),
            Self::SetReportedAddresses { cluster, addresses } => {
                let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                format!(
                    "set reported addresses of cluster {cluster} to [{}]",
                    addresses.join(", ")
                )
            }
            Self::SetHostnameServing {
                cluster,
                fqdn,
                serving,
                reason,
            } => format!(
                "set hostname {fqdn} in cluster {cluster} to {} ({reason})",
                if *serving { "serving" } else { "not serving" }
            ),
            Self::SetSharedStatus {
                cluster,
                changed,
                removed,
            } => format!(
                "set the status of shared routes in cluster {cluster}: version {}, {} changed, {} removed",
                changed.shared_version,
                changed.routes.len(),
                removed.len()
            ),
            Self::SetDrained { cluster, drained } => {
                if *drained {
                    format!("drain cluster {cluster}")
                } else {
                    format!("undrain cluster {cluster}")
                }
            }
            Self::PutHostname(policy) => format!("put hostname {}", policy.fqdn),
            Self::DeleteHostname(fqdn) => format!("delete hostname {fqdn}"),
            Self::SetPinned { fqdn, cluster } => match cluster {
                Some(cluster) => format!("pin hostname {fqdn} to cluster {cluster}"),
                None => format!("unpin hostname {fqdn}"),
            },
            Self::PutRoute(route) => format!("put route {}", route.key),
            Self::DeleteRoute(key) => format!("delete route {key}"),
            // Never the key material: only the certificate's name.
            Self::PutCertificate(cert) => format!("put certificate {}", cert.key),
            Self::DeleteCertificate(key) => format!("delete certificate {key}"),
            Self::PutZoneKey { zone, .. } => format!("put DNSSEC key of zone {zone}"),
            Self::PutRecordSet { name, rtype, .. } => format!("put {rtype} records of {name}"),
            Self::DeleteRecordSet { name, rtype } => format!("delete {rtype} records of {name}"),
        }
    }
}

/// The lower-case name of a verdict, as the admin API and logs spell it.
pub fn verdict_name(verdict: meridian_proto::model::HealthVerdict) -> &'static str {
    use meridian_proto::model::HealthVerdict;
    match verdict {
        HealthVerdict::Unknown => "unknown",
        HealthVerdict::Healthy => "healthy",
        HealthVerdict::Unhealthy => "unhealthy",
    }
}

// === impl Outcome ===

impl Outcome {
    /// Turns the outcome into a `Result`: `Ok(true)` when the state changed.
    pub fn into_result(self) -> Result<bool, Rejection> {
        match self {
            Self::Applied => Ok(true),
            Self::Unchanged => Ok(false),
            Self::Rejected(rejection) => Err(rejection),
        }
    }
}

// === impl Rejection ===

impl Rejection {
    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::NotFound,
            field: None,
            message: message.into(),
        }
    }

    /// A field holds a bad value.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::Invalid,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The command conflicts with the state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            kind: RejectKind::Conflict,
            field: None,
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        match &self.field {
            Some(field) if !field.is_empty() => format!("{field}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found",
            Self::Invalid => "invalid",
            Self::Conflict => "conflict",
        })
    }
}
