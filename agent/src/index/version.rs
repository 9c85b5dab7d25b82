//! Versioning of programmed configs and the probe overlay on endpoint readiness.
//!
//! Both are pure: the index task calls them after every change.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::GatewayConfig;

use crate::health::probe::{Health, ProbeState};

/// Hands out versions and remembers the config each gateway is being served.
///
/// **Invariant:** a Gateway's version changes exactly when its config (ignoring the version
/// field) changes, so gateways get a new snapshot only for a real change.
///
/// Versions come from one counter for all Gateways, starting at the agent's start time in
/// Unix milliseconds: a restarted agent (whose counter starts at a later time) never sends a
/// gateway a version it has seen from the previous process, provided the previous process
/// made fewer changes than it lived milliseconds.
#[derive(Debug)]
pub(crate) struct Versioner {
    next: u64,
    served: BTreeMap<ObjectKey, Arc<GatewayConfig>>,
}

// === impl Versioner ===

impl Versioner {
    /// A versioner whose first version is `first` (at least 1).
    pub(crate) fn new(first: u64) -> Self {
        Self {
            next: first.max(1),
            served: BTreeMap::new(),
        }
    }

    /// Replaces the served set with `fresh` (versions in `fresh` are ignored). Unchanged
    /// configs keep their version and `Arc`; changed and new ones get the next version.
    /// Returns the keys whose config changed (including new and removed Gateways).
    pub(crate) fn update(&mut self, fresh: BTreeMap<ObjectKey, GatewayConfig>) -> Vec<ObjectKey> {
        let mut changed: Vec<ObjectKey> = self
            .served
            .keys()
            .filter(|key| !fresh.contains_key(*key))
            .cloned()
            .collect();
        let mut served = BTreeMap::new();
        for (key, mut config) in fresh {
            match self.served.get(&key) {
                Some(current) if same_content(current, &config) => {
                    served.insert(key, current.clone());
                }
                _ => {
                    config.version = self.next;
                    self.next += 1;
                    changed.push(key.clone());
                    served.insert(key, Arc::new(config));
                }
            }
        }
        self.served = served;
        changed.sort();
        changed
    }

    /// The configs being served.
    pub(crate) fn served(&self) -> &BTreeMap<ObjectKey, Arc<GatewayConfig>> {
        &self.served
    }
}

/// Equal apart from the version.
fn same_content(current: &GatewayConfig, fresh: &GatewayConfig) -> bool {
    let GatewayConfig {
        version: _,
        gateway,
        listeners,
        http_routes,
        grpc_routes,
        tls_routes,
        backends,
        backend_client_certificate,
    } = fresh;
    &current.gateway == gateway
        && &current.listeners == listeners
        && &current.http_routes == http_routes
        && &current.grpc_routes == grpc_routes
        && &current.tls_routes == tls_routes
        && &current.backends == backends
        && &current.backend_client_certificate == backend_client_certificate
}

/// Turns endpoints whose probe is down not ready: ready = EndpointSlice ready AND probe not
/// failing. An endpoint not probed yet keeps its EndpointSlice readiness.
pub(crate) fn apply_probes(config: &mut GatewayConfig, probes: &HashMap<SocketAddr, ProbeState>) {
    for backend in &mut config.backends {
        for endpoint in &mut backend.endpoints {
            if probes
                .get(&endpoint.addr)
                .is_some_and(|state| state.health() == Health::Down)
            {
                endpoint.ready = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_proto::model::gateway::{AppProtocol, Backend, Endpoint};
    use meridian_proto::model::route::ServiceKey;

    use super::*;
    use crate::config::ProbeConfig;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name).unwrap()
    }

    fn config(name: &str, endpoints: &[(&str, bool)]) -> GatewayConfig {
        GatewayConfig {
            gateway: Some(key(name)),
            backends: vec![Backend {
                key: ServiceKey {
                    namespace: "default".into(),
                    name: "app".into(),
                    port: 80,
                },
                app_protocol: AppProtocol::Http1,
                endpoints: endpoints
                    .iter()
                    .map(|(addr, ready)| Endpoint {
                        addr: addr.parse().unwrap(),
                        ready: *ready,
                    })
                    .collect(),
                tls: None,
            }],
            ..GatewayConfig::default()
        }
    }

    #[test]
    fn versions_bump_only_for_changed_gateways() {
        let mut versioner = Versioner::new(1000);
        let changed = versioner.update(BTreeMap::from([
            (key("a"), config("a", &[("10.0.0.1:80", true)])),
            (key("b"), config("b", &[])),
        ]));
        assert_eq!(changed, vec![key("a"), key("b")]);
        let a1 = versioner.served()[&key("a")].clone();
        let b1 = versioner.served()[&key("b")].clone();
        assert_eq!((a1.version, b1.version), (1000, 1001));

        // Nothing changed: no new version, same Arc.
        let changed = versioner.update(BTreeMap::from([
            (key("a"), config("a", &[("10.0.0.1:80", true)])),
            (key("b"), config("b", &[])),
        ]));
        assert!(changed.is_empty());
        assert!(Arc::ptr_eq(&a1, &versioner.served()[&key("a")]));

        // Only a changed: only a gets a new version.
        let changed = versioner.update(BTreeMap::from([
            (key("a"), config("a", &[("10.0.0.1:80", false)])),
            (key("b"), config("b", &[])),
        ]));
        assert_eq!(changed, vec![key("a")]);
        assert_eq!(versioner.served()[&key("a")].version, 1002);
        assert_eq!(versioner.served()[&key("b")].version, 1001);

        // A removed Gateway counts as changed and is no longer served.
        let changed = versioner.update(BTreeMap::from([(
            key("a"),
            config("a", &[("10.0.0.1:80", false)]),
        )]));
        assert_eq!(changed, vec![key("b")]);
        assert!(!versioner.served().contains_key(&key("b")));
    }

    #[test]
    fn probes_only_take_readiness_away() {
        let probe_config = ProbeConfig::default();
        let mut down = ProbeState::default();
        down.record(false, "refused", &probe_config);
        down.record(false, "refused", &probe_config);
        let mut up = ProbeState::default();
        up.record(true, "connected", &probe_config);
        let probes = HashMap::from([
            ("10.0.0.1:80".parse().unwrap(), down),
            ("10.0.0.2:80".parse().unwrap(), up),
        ]);
        let mut programmed = config(
            "a",
            &[
                ("10.0.0.1:80", true),  // slice ready, probe down -> not ready
                ("10.0.0.2:80", false), // slice not ready, probe up -> not ready
                ("10.0.0.3:80", true),  // slice ready, not probed yet -> ready
            ],
        );
        apply_probes(&mut programmed, &probes);
        let ready: Vec<bool> = programmed.backends[0]
            .endpoints
            .iter()
            .map(|e| e.ready)
            .collect();
        assert_eq!(ready, vec![false, false, true]);
    }
}
