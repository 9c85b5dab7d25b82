//! The hub's replicated state: clusters, health, hostname policies, shared routes, certificates,
//! zone keys and the audit log.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use meridian_proto::model::{
    CertificateUse, Cluster, ClusterHealth, ClusterName, DnsRecord, Fqdn, GatewayRejection,
    HostnamePolicy, ObjectKey, RecordData, RouteParentConditions, SharedConfig,
    SharedObjectsStatus, SharedRouteStatus, gateway::TlsCertificate, route::HttpRoute,
};

use crate::dns::{ClusterView, DnsView};

/// How many audit entries the state keeps (oldest are dropped first).
pub const AUDIT_CAPACITY: usize = 1000;

/// Everything the hub replicates. Changed only by [`State::apply`](crate::store::State::apply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Registered clusters with their health and reported addresses.
    pub clusters: BTreeMap<ClusterName, ClusterRecord>,
    /// Hostname DNS policies.
    pub hostnames: BTreeMap<Fqdn, HostnamePolicy>,
    /// Shared HTTPRoutes, pushed to every cluster.
    pub routes: BTreeMap<ObjectKey, HttpRoute>,
    /// The log index of each shared route's last change: a cluster that programmed a shared
    /// config at least this version has this version of the route.
    pub route_versions: BTreeMap<ObjectKey, u64>,
    /// Certificates (chain and private key), pushed to every cluster, where they become
    /// `kubernetes.io/tls` Secrets Gateway listeners can reference.
    pub certificates: BTreeMap<ObjectKey, TlsCertificate>,
    /// DNSSEC signing keys per zone.
    pub zone_keys: BTreeMap<Fqdn, ZoneKey>,
    /// Static DNS record sets, by name and type (`A`, `AAAA`, `CNAME`, `TXT`, `MX`).
    pub records: BTreeMap<(Fqdn, String), RecordSet>,
    /// The last [`AUDIT_CAPACITY`] audited commands, oldest first.
    pub audit: VecDeque<AuditEntry>,
    /// The log index of the last change to shared routes or certificates (the `SharedConfig`
    /// version).
    pub shared_version: u64,
    /// The log index of the last change to anything DNS answers depend on.
    pub dns_version: u64,
}

/// A cluster and what the hub learned about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRecord {
    /// The definition from the admin API.
    pub cluster: Cluster,
    /// The committed health verdict.
    pub health: ClusterHealth,
    /// Gateway addresses the cluster's agent reported when it registered.
    pub reported_addresses: Vec<IpAddr>,
    /// For each hostname policy that targets this cluster and that the leader has judged:
    /// whether the cluster can serve it (its backends behind the hostname's routes). Entries
    /// go when the policy stops targeting the cluster or is deleted.
    pub hostnames: BTreeMap<Fqdn, HostnameServing>,
    /// How the cluster programmed the shared routes and certificates, as its agent last
    /// reported and the leader committed; `None` until then.
    pub shared: Option<SharedObjectsRecord>,
}

/// A cluster's committed report of how it programmed the shared objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedObjectsRecord {
    /// The shared config version the cluster programmed them from.
    pub shared_version: u64,
    /// Per existing shared route the cluster reported.
    pub routes: BTreeMap<ObjectKey, RouteStatusEntry>,
    /// The listeners serving an existing shared certificate, sorted.
    pub certificates: Vec<CertificateUse>,
    /// The Gateways an instance of which rejected the current programmed config, sorted.
    pub rejected: Vec<GatewayRejection>,
}

/// One shared route's conditions in one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStatusEntry {
    /// One entry per parentRef naming a Gateway of the cluster; empty when none does.
    pub parents: Vec<RouteParentConditions>,
    /// When they last changed, Unix milliseconds (the proposer's clock).
    pub since_unix_ms: u64,
}

impl SharedObjectsRecord {
    /// Certificate uses as the record keeps them: of existing certificates, sorted, once each.
    /// The leader compares reports in this form, and `apply` stores them in it.
    pub fn normalize_uses(
        mut uses: Vec<CertificateUse>,
        exists: impl Fn(&ObjectKey) -> bool,
    ) -> Vec<CertificateUse> {
        uses.retain(|u| exists(&u.certificate));
        uses.sort();
        uses.dedup();
        uses
    }

    /// Rejections as the record keeps them: sorted, one per Gateway.
    pub fn normalize_rejections(mut rejected: Vec<GatewayRejection>) -> Vec<GatewayRejection> {
        rejected.sort();
        rejected.dedup_by(|a, b| a.gateway == b.gateway);
        rejected
    }

    /// The record as a report, to compare with what an agent reports.
    pub fn as_reported(&self) -> SharedObjectsStatus {
        SharedObjectsStatus {
            shared_version: self.shared_version,
            routes: self
                .routes
                .iter()
                .map(|(route, entry)| SharedRouteStatus {
                    route: route.clone(),
                    parents: entry.parents.clone(),
                })
                .collect(),
            certificates: self.certificates.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

/// Whether one cluster can serve one hostname, as committed by the leader's health tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostnameServing {
    /// The cluster reports ready backend endpoints behind a route for the hostname.
    pub serving: bool,
    /// Why, for operators (`"0 of 2 backend endpoints ready (route hostname *.demo.test)"`).
    pub reason: String,
    /// When `serving` last changed, Unix milliseconds (the proposer's clock).
    pub since_unix_ms: u64,
}

/// A zone's DNSSEC signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneKey {
    /// PKCS#8 DER of an ECDSA P-256 key.
    pub pkcs8: Vec<u8>,
    /// When the leader generated it, Unix milliseconds.
    pub created_unix_ms: u64,
}

/// Every record of one type at one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSet {
    /// TTL in seconds.
    pub ttl: u32,
    /// The records' data, all of the set's type.
    pub values: Vec<RecordData>,
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// The log index of the command.
    pub index: u64,
    /// The proposer's timestamp, Unix milliseconds.
    pub unix_ms: u64,
    /// Who asked.
    pub actor: String,
    /// What was asked (`put cluster us-east`).
    pub action: String,
    /// `applied`, or `rejected: <why>`.
    pub result: String,
}

// === impl State ===

impl State {
    /// The view DNS answers are computed from. Its `applied_index` is the index of the last
    /// DNS-relevant change, so every node publishes the same view (and SOA serial) for the same
    /// content, however its applies were batched.
    pub fn dns_view(&self) -> DnsView {
        DnsView {
            applied_index: self.dns_version,
            // Only clusters a hostname targets: no answer depends on the others, and building
            // (and comparing, and freeing) a view of every registered cluster on each change
            // made a write's cost grow with the number of clusters.
            clusters: self
                .hostnames
                .values()
                .flat_map(|policy| policy.targets.iter().map(|target| &target.cluster))
                .filter_map(|name| self.clusters.get_key_value(name))
                .map(|(name, record)| {
                    let view = ClusterView {
                        cluster: record.cluster.clone(),
                        health: record.health.clone(),
                        reported_addresses: record.reported_addresses.clone(),
                        unserved_hostnames: record
                            .hostnames
                            .iter()
                            .filter(|(_, h)| !h.serving)
                            .map(|(fqdn, h)| (fqdn.clone(), h.reason.clone()))
                            .collect(),
                        serving_changed_unix_ms: record
                            .hostnames
                            .values()
                            .map(|h| h.since_unix_ms)
                            .max()
                            .unwrap_or(0),
                    };
                    (name.clone(), view)
                })
                .collect(),
            hostnames: self.hostnames.clone(),
            zone_keys: self
                .zone_keys
                .iter()
                .map(|(zone, key)| (zone.clone(), key.pkcs8.clone()))
                .collect(),
            records: self
                .records
                .iter()
                .flat_map(|((name, _), set)| {
                    set.values.iter().map(|data| DnsRecord {
                        name: name.clone(),
                        ttl: set.ttl,
                        data: data.clone(),
                    })
                })
                .collect(),
        }
    }

    /// What every agent receives: the shared routes and certificates, versioned by the index
    /// of their last change.
    pub fn shared_config(&self) -> SharedConfig {
        SharedConfig {
            version: self.shared_version,
            http_routes: self.routes.values().cloned().collect(),
            certificates: self.certificates.values().cloned().collect(),
        }
    }

    /// The hostnames whose policy names `cluster` as a target or pin.
    pub fn hostnames_using(&self, cluster: &ClusterName) -> Vec<&Fqdn> {
        self.hostnames
            .values()
            .filter(|policy| {
                policy.targets.iter().any(|t| &t.cluster == cluster)
                    || policy.routing.pinned.as_ref() == Some(cluster)
            })
            .map(|policy| &policy.fqdn)
            .collect()
    }

    pub(super) fn push_audit(&mut self, entry: AuditEntry) {
        while self.audit.len() >= AUDIT_CAPACITY {
            self.audit.pop_front();
        }
        self.audit.push_back(entry);
    }
}
