//! Lookups over an [`ObjectSet`] used while programming one Gateway: Services, EndpointSlices
//! by owning Service, Secrets, ConfigMaps, ReferenceGrants by namespace, Namespace labels.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::k8s;
use crate::set::{ObjectSet, meta_key};
use crate::validate::NAMESPACE_NAME_LABEL;

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Borrowed indexes over one [`ObjectSet`].
pub(crate) struct Index<'a> {
    services: Nested<'a, &'a k8s::Service>,
    slices: Nested<'a, Vec<&'a k8s::EndpointSlice>>,
    secrets: Nested<'a, &'a k8s::Secret>,
    config_maps: Nested<'a, &'a k8s::ConfigMap>,
    grants: BTreeMap<&'a str, Vec<&'a k8s::ReferenceGrant>>,
    namespaces: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

/// One side of a cross-namespace reference, for ReferenceGrant checks.
pub(crate) struct Reference<'r> {
    /// Referrer group (`gateway.networking.k8s.io`).
    pub(crate) from_group: &'r str,
    /// Referrer kind (`HTTPRoute`, `Gateway`, ...).
    pub(crate) from_kind: &'r str,
    /// Referrer namespace.
    pub(crate) from_namespace: &'r str,
    /// Target group (empty for core).
    pub(crate) to_group: &'r str,
    /// Target kind (`Service`, `Secret`).
    pub(crate) to_kind: &'r str,
    /// Target namespace.
    pub(crate) to_namespace: &'r str,
    /// Target name.
    pub(crate) to_name: &'r str,
}

/// namespace → name → value. Nested rather than keyed by a pair so lookups can borrow
/// `&str`s of any lifetime.
type Nested<'a, V> = BTreeMap<&'a str, BTreeMap<&'a str, V>>;

// === impl Index ===

impl<'a> Index<'a> {
    /// Builds the indexes.
    pub(crate) fn new(objects: &'a ObjectSet) -> Self {
        let ns = |meta: &'a k8s::ObjectMeta| meta.namespace.as_deref().unwrap_or("default");
        let mut slices: Nested<'a, Vec<&k8s::EndpointSlice>> = BTreeMap::new();
        for slice in &objects.endpoint_slices {
            if let Some(service) = slice.metadata.labels.get(SERVICE_NAME_LABEL) {
                slices
                    .entry(ns(&slice.metadata))
                    .or_default()
                    .entry(service.as_str())
                    .or_default()
                    .push(slice);
            }
        }
        let mut services: Nested<'a, &k8s::Service> = BTreeMap::new();
        for service in &objects.services {
            services
                .entry(ns(&service.metadata))
                .or_default()
                .insert(service.metadata.name.as_str(), service);
        }
        let mut secrets: Nested<'a, &k8s::Secret> = BTreeMap::new();
        for secret in &objects.secrets {
            secrets
                .entry(ns(&secret.metadata))
                .or_default()
                .insert(secret.metadata.name.as_str(), secret);
        }
        let mut config_maps: Nested<'a, &k8s::ConfigMap> = BTreeMap::new();
        for config_map in &objects.config_maps {
            config_maps
                .entry(ns(&config_map.metadata))
                .or_default()
                .insert(config_map.metadata.name.as_str(), config_map);
        }
        let mut grants: BTreeMap<&str, Vec<&k8s::ReferenceGrant>> = BTreeMap::new();
        for grant in &objects.reference_grants {
            grants.entry(ns(&grant.metadata)).or_default().push(grant);
        }
        Self {
            services,
            slices,
            secrets,
            config_maps,
            grants,
            namespaces: objects
                .namespaces
                .iter()
                .map(|n| (n.metadata.name.as_str(), &n.metadata.labels))
                .collect(),
        }
    }

    /// The Service `namespace/name`.
    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<&'a k8s::Service> {
        self.services.get(namespace)?.get(name).copied()
    }

    /// The EndpointSlices of Service `namespace/name`.
    pub(crate) fn slices(&self, namespace: &str, name: &str) -> &[&'a k8s::EndpointSlice] {
        self.slices
            .get(namespace)
            .and_then(|m| m.get(name))
            .map_or(&[], Vec::as_slice)
    }

    /// The Secret `namespace/name`.
    pub(crate) fn secret(&self, namespace: &str, name: &str) -> Option<&'a k8s::Secret> {
        self.secrets.get(namespace)?.get(name).copied()
    }

    /// The ConfigMap `namespace/name`.
    pub(crate) fn config_map(&self, namespace: &str, name: &str) -> Option<&'a k8s::ConfigMap> {
        self.config_maps.get(namespace)?.get(name).copied()
    }

    /// The labels of Namespace `name`. A namespace with no Namespace object (a directory that
    /// does not declare it) has only the label the API server gives every Namespace,
    /// `kubernetes.io/metadata.name: <name>`, so a selector on that label matches it.
    pub(crate) fn namespace_labels(&self, name: &str) -> Cow<'a, BTreeMap<String, String>> {
        match self.namespaces.get(name) {
            Some(labels) => Cow::Borrowed(*labels),
            None => Cow::Owned(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
        }
    }

    /// Whether a reference is allowed: same-namespace references always are; cross-namespace
    /// ones need a ReferenceGrant in the target namespace whose `from` and `to` both match.
    pub(crate) fn reference_allowed(&self, reference: &Reference<'_>) -> bool {
        if reference.from_namespace == reference.to_namespace {
            return true;
        }
        let Some(grants) = self.grants.get(reference.to_namespace) else {
            return false;
        };
        grants.iter().any(|grant| {
            let from_ok = grant.spec.from.iter().any(|from| {
                from.group == reference.from_group
                    && from.kind == reference.from_kind
                    && from.namespace == reference.from_namespace
            });
            let to_ok = grant.spec.to.iter().any(|to| {
                to.group == reference.to_group
                    && to.kind == reference.to_kind
                    && to.name.as_deref().is_none_or(|n| n == reference.to_name)
            });
            from_ok && to_ok
        })
    }
}

/// The key of a Gateway from its metadata.
pub(crate) fn gateway_key(gateway: &k8s::Gateway) -> meridian_proto::model::ObjectKey {
    meta_key(&gateway.metadata)
}
