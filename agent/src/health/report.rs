//! What the agent tells the hub about its cluster: gateway readiness and per-hostname backend
//! health, computed from the programmed configs and the probe states.
//!
//! [`HealthView`] is what the index task publishes after every change; the hub client turns
//! it into a numbered `HealthReport` when it writes one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use meridian_proto::model::gateway::GatewayConfig;
use meridian_proto::model::route::Resolution;
use meridian_proto::model::{
    ClusterName, GatewayProbe, GatewayRejection, HealthReport, HostnameHealth, ObjectKey,
    SharedObjectsStatus, SharedStatusBasis,
};

use super::shared_status::OutgoingShared;

/// The cluster's health as of the latest change, without report numbering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    /// Each gateway instance the agent knows (subscribed, or recently disconnected).
    pub gateways: Vec<GatewayProbe>,
    /// Backend readiness per hostname served in this cluster.
    pub hostnames: Vec<HostnameHealth>,
    /// The IP addresses the programmed Gateways listen on (their `spec.addresses`), for the
    /// hub's DNS when a cluster has no addresses configured.
    pub gateway_addresses: Vec<IpAddr>,
    /// Increases whenever any gateway's readiness changes, or a hostname's ready backend
    /// endpoints drop to zero or come back from zero; the hub client sends a report at once
    /// when it sees a new epoch.
    pub readiness_epoch: u64,
    /// When the latest readiness change was observed (for the detection-to-report metric).
    pub readiness_changed_at: Option<Instant>,
    /// How the cluster programmed the hub's shared routes and certificates; `None` until the
    /// source's first complete read.
    pub shared: Option<Arc<SharedObjectsStatus>>,
    /// The Gateways whose current config an instance rejected: the `rejected` part of the
    /// shared status, kept apart because it moves with ACKs, not with programming.
    pub rejected: Vec<GatewayRejection>,
}

/// What the report builder needs to know about one gateway instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceHealth {
    /// The Gateway object the instance serves.
    pub gateway: ObjectKey,
    /// The instance name it subscribed with.
    pub instance: String,
    /// Whether it counts as ready (probe up and subscription open).
    pub ready: bool,
    /// Why (probe detail, `"subscription closed"`, ...).
    pub detail: String,
}

// === impl HealthView ===

impl HealthView {
    /// Builds a numbered report for `cluster`, with `shared` (see
    /// [`SharedSent`](super::shared_status::SharedSent)).
    pub fn report(
        &self,
        cluster: &ClusterName,
        seq: u64,
        shared: Option<OutgoingShared>,
    ) -> HealthReport {
        let (shared, shared_basis) = match shared {
            Some(OutgoingShared { status, basis }) => (Some(status), basis),
            None => (None, SharedStatusBasis::default()),
        };
        HealthReport {
            cluster: cluster.clone(),
            seq,
            gateways: self.gateways.clone(),
            hostnames: self.hostnames.clone(),
            shared,
            shared_basis,
        }
    }
}

/// Computes the gateway and hostname parts of a [`HealthView`].
///
/// - Gateways: one entry per instance, in the given order, with the address clients reach it
///   on: the first specific listener address of its Gateway's config, else the instance name
///   when it is an `ip:port`, else none.
/// - Hostnames: for every hostname a route attached with (the effective attachment hostnames;
///   `*` when a route accepts any host), the distinct backend endpoints behind its rules, and
///   how many of them are ready. Endpoint readiness in `configs` already includes the probes
///   (ready = EndpointSlice ready AND probe passing).
pub fn build_view(
    configs: &BTreeMap<ObjectKey, Arc<GatewayConfig>>,
    instances: &[InstanceHealth],
) -> (Vec<GatewayProbe>, Vec<HostnameHealth>, Vec<IpAddr>) {
    let gateways = instances
        .iter()
        .map(|instance| GatewayProbe {
            name: instance.instance.clone(),
            address: configs
                .get(&instance.gateway)
                .and_then(|config| listener_address(config))
                .or_else(|| instance.instance.parse().ok()),
            ready: instance.ready,
            detail: instance.detail.clone(),
        })
        .collect();

    let mut per_host: BTreeMap<String, HostBackends> = BTreeMap::new();
    let mut addresses = BTreeSet::new();
    for config in configs.values() {
        for listener in &config.listeners {
            addresses.extend(listener.addresses.iter().filter(|ip| !ip.is_unspecified()));
        }
        let endpoints_of = |refs: &mut dyn Iterator<Item = &Resolution>| {
            let mut found = HostBackends::default();
            for resolution in refs {
                let key = match resolution {
                    Resolution::Service(key) => key,
                    Resolution::Invalid { message, .. } => {
                        found.invalid.insert(message.clone());
                        continue;
                    }
                    Resolution::Unresolved => continue,
                };
                let Some(backend) = config.backends.iter().find(|b| &b.key == key) else {
                    continue;
                };
                for endpoint in &backend.endpoints {
                    *found.endpoints.entry(endpoint.addr).or_default() |= endpoint.ready;
                }
            }
            found
        };
        for attached in &config.http_routes {
            let mut refs = attached
                .route
                .rules
                .iter()
                .flat_map(|rule| rule.backend_refs.iter().map(|b| &b.backend_ref.resolution));
            let endpoints = endpoints_of(&mut refs);
            add_hosts(
                &mut per_host,
                attached.attachments.iter().map(|a| &a.hostnames),
                &endpoints,
            );
        }
        for attached in &config.grpc_routes {
            let mut refs = attached
                .route
                .rules
                .iter()
                .flat_map(|rule| rule.backend_refs.iter().map(|b| &b.backend_ref.resolution));
            let endpoints = endpoints_of(&mut refs);
            add_hosts(
                &mut per_host,
                attached.attachments.iter().map(|a| &a.hostnames),
                &endpoints,
            );
        }
        for attached in &config.tls_routes {
            let mut refs = attached
                .route
                .backend_refs
                .iter()
                .map(|b| &b.backend_ref.resolution);
            let endpoints = endpoints_of(&mut refs);
            add_hosts(
                &mut per_host,
                attached.attachments.iter().map(|a| &a.hostnames),
                &endpoints,
            );
        }
    }
    let hostnames = per_host
        .into_iter()
        .map(|(hostname, backends)| HostnameHealth {
            hostname,
            ready_endpoints: count(backends.endpoints.values().filter(|ready| **ready)),
            total_endpoints: count(backends.endpoints.values()),
            detail: backends.invalid.into_iter().collect::<Vec<_>>().join("; "),
        })
        .collect();
    (gateways, hostnames, addresses.into_iter().collect())
}

/// The backends behind one hostname's routes: their endpoints (ready or not) and the messages
/// of the backend references that resolved to nothing (so the hub can say why a hostname has
/// no endpoint: `Service demo/x not found`, not only `0 of 0`).
#[derive(Default)]
struct HostBackends {
    endpoints: BTreeMap<SocketAddr, bool>,
    invalid: BTreeSet<String>,
}

fn add_hosts<'a>(
    per_host: &mut BTreeMap<String, HostBackends>,
    attachments: impl Iterator<Item = &'a Vec<String>>,
    endpoints: &HostBackends,
) {
    let mut hosts = BTreeSet::new();
    for hostnames in attachments {
        if hostnames.is_empty() {
            hosts.insert("*".to_string());
        }
        hosts.extend(hostnames.iter().cloned());
    }
    for host in hosts {
        let entry = per_host.entry(host).or_default();
        for (addr, ready) in &endpoints.endpoints {
            *entry.endpoints.entry(*addr).or_default() |= *ready;
        }
        entry.invalid.extend(endpoints.invalid.iter().cloned());
    }
}

fn count<T>(items: impl Iterator<Item = T>) -> u32 {
    u32::try_from(items.count()).unwrap_or(u32::MAX)
}

/// The first listener bound to a specific address, as `ip:port`.
fn listener_address(config: &GatewayConfig) -> Option<SocketAddr> {
    config.listeners.iter().find_map(|listener| {
        listener
            .addresses
            .iter()
            .find(|ip| !ip.is_unspecified())
            .map(|ip| SocketAddr::new(*ip, listener.port))
    })
}

#[cfg(test)]
mod tests;
