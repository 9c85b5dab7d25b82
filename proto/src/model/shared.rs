//! What the hub pushes to every cluster: the shared routes and certificates, as a whole
//! snapshot or as the change from a version the agent holds.

use std::collections::BTreeMap;

use super::gateway::TlsCertificate;
use super::names::ObjectKey;
use super::route::HttpRoute;

/// A full, versioned snapshot of the state the hub shares with every agent.
///
/// The version is the hub's Raft index of the last change to shared state, so every hub node
/// sends the same version for the same content and an agent that reconnects to another node
/// can tell whether it is behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// Monotonic version (the hub's applied index of the last change to this content).
    pub version: u64,
    /// Global HTTPRoutes, in key order.
    pub http_routes: Vec<HttpRoute>,
    /// Certificates the hub distributes, in key order.
    pub certificates: Vec<TlsCertificate>,
}

/// The change from one [`SharedConfig`] version to another: what the hub sends an agent that
/// already holds `base_version`, so that one changed route costs one route on the wire rather
/// than all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedConfigDelta {
    /// The version the delta applies to.
    pub base_version: u64,
    /// The version the delta makes.
    pub version: u64,
    /// Routes added or changed, whole, in key order.
    pub http_routes: Vec<HttpRoute>,
    /// Keys of the routes removed, in order.
    pub removed_http_routes: Vec<ObjectKey>,
    /// Certificates added or changed, whole, in key order.
    pub certificates: Vec<TlsCertificate>,
    /// Keys of the certificates removed, in order.
    pub removed_certificates: Vec<ObjectKey>,
}

/// A delta applied to a config of another version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the delta to version {version} applies to version {base}, not to version {have}")]
pub struct BaseMismatch {
    /// The version the delta needs.
    pub base: u64,
    /// The version the delta makes.
    pub version: u64,
    /// The version it was applied to.
    pub have: u64,
}

impl SharedConfig {
    /// The number of shared objects (routes and certificates).
    pub fn len(&self) -> usize {
        self.http_routes.len() + self.certificates.len()
    }

    /// Whether the config shares nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedConfigDelta {
    /// What changed from `old` to `new`. Both hold their objects in key order (as the hub
    /// builds them); compares objects, never copies the unchanged ones.
    pub fn between(old: &SharedConfig, new: &SharedConfig) -> Self {
        let (http_routes, removed_http_routes) =
            diff_sorted(&old.http_routes, &new.http_routes, |r| &r.key);
        let (certificates, removed_certificates) =
            diff_sorted(&old.certificates, &new.certificates, |c| &c.key);
        Self {
            base_version: old.version,
            version: new.version,
            http_routes,
            removed_http_routes,
            certificates,
            removed_certificates,
        }
    }

    /// The number of objects added, changed or removed.
    pub fn len(&self) -> usize {
        self.http_routes.len()
            + self.removed_http_routes.len()
            + self.certificates.len()
            + self.removed_certificates.len()
    }

    /// Whether nothing changed but the version.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The config this delta makes of `base`, which must be at `base_version`. The result
    /// holds its objects in key order whatever order `base` held them in.
    pub fn apply(&self, base: &SharedConfig) -> Result<SharedConfig, BaseMismatch> {
        if base.version != self.base_version {
            return Err(BaseMismatch {
                base: self.base_version,
                version: self.version,
                have: base.version,
            });
        }
        Ok(SharedConfig {
            version: self.version,
            http_routes: patch(
                &base.http_routes,
                &self.http_routes,
                &self.removed_http_routes,
                |r| &r.key,
            ),
            certificates: patch(
                &base.certificates,
                &self.certificates,
                &self.removed_certificates,
                |c| &c.key,
            ),
        })
    }
}

/// The objects of `new` that `old` lacks or holds differently, and the keys `new` dropped.
/// Both slices must be in key order; a merge walk keeps this O(n) with no copies of
/// unchanged objects.
fn diff_sorted<T: Clone + PartialEq>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &ObjectKey,
) -> (Vec<T>, Vec<ObjectKey>) {
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => match key(a).cmp(key(b)) {
                std::cmp::Ordering::Less => {
                    removed.push(key(a).clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    changed.push(b.clone());
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if a != b {
                        changed.push(b.clone());
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(a), None) => {
                removed.push(key(a).clone());
                i += 1;
            }
            (None, Some(b)) => {
                changed.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (changed, removed)
}

/// `base` with `removed` dropped and `changed` put in, in key order.
fn patch<T: Clone>(
    base: &[T],
    changed: &[T],
    removed: &[ObjectKey],
    key: impl Fn(&T) -> &ObjectKey,
) -> Vec<T> {
    let mut objects: BTreeMap<&ObjectKey, &T> = base.iter().map(|o| (key(o), o)).collect();
    for gone in removed {
        objects.remove(gone);
    }
    for object in changed {
        objects.insert(key(object), object);
    }
    objects.into_values().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: &str) -> HttpRoute {
        HttpRoute {
            key: ObjectKey::new("shop", name).unwrap(),
            created_unix_ms: 0,
            parent_refs: Vec::new(),
            hostnames: vec![host.to_string()],
            rules: Vec::new(),
        }
    }

    fn cert(name: &str, pem: &str) -> TlsCertificate {
        TlsCertificate {
            key: ObjectKey::new("shop", name).unwrap(),
            cert_chain_pem: pem.into(),
            private_key_pem: "key".into(),
        }
    }

    fn config(version: u64, routes: &[(&str, &str)], certs: &[(&str, &str)]) -> SharedConfig {
        SharedConfig {
            version,
            http_routes: routes.iter().map(|(n, h)| route(n, h)).collect(),
            certificates: certs.iter().map(|(n, p)| cert(n, p)).collect(),
        }
    }

    #[test]
    fn a_delta_holds_only_what_changed_and_makes_the_new_config() {
        let old = config(
            4,
            &[("a", "a.test"), ("b", "b.test"), ("c", "c.test")],
            &[("t1", "one"), ("t2", "two")],
        );
        let new = config(
            9,
            &[("b", "b2.test"), ("c", "c.test"), ("d", "d.test")],
            &[("t1", "one"), ("t3", "three")],
        );
        let delta = SharedConfigDelta::between(&old, &new);
        assert_eq!((delta.base_version, delta.version), (4, 9));
        assert_eq!(
            delta.http_routes,
            vec![route("b", "b2.test"), route("d", "d.test")]
        );
        assert_eq!(
            delta.removed_http_routes,
            vec![ObjectKey::new("shop", "a").unwrap()]
        );
        assert_eq!(delta.certificates, vec![cert("t3", "three")]);
        assert_eq!(
            delta.removed_certificates,
            vec![ObjectKey::new("shop", "t2").unwrap()]
        );
        assert_eq!(delta.len(), 5);
        assert_eq!(delta.apply(&old).unwrap(), new);
    }

    #[test]
    fn a_delta_between_equal_contents_is_empty() {
        let old = config(4, &[("a", "a.test")], &[]);
        let new = SharedConfig {
            version: 5,
            ..old.clone()
        };
        let delta = SharedConfigDelta::between(&old, &new);
        assert!(delta.is_empty());
        assert_eq!(delta.apply(&old).unwrap(), new);
    }

    #[test]
    fn a_delta_refuses_a_config_of_another_version() {
        let old = config(4, &[("a", "a.test")], &[]);
        let new = config(6, &[("a", "a2.test")], &[]);
        let delta = SharedConfigDelta::between(&old, &new);
        let other = config(5, &[("a", "a.test")], &[]);
        let error = delta.apply(&other).unwrap_err();
        assert_eq!(
            error,
            BaseMismatch {
                base: 4,
                version: 6,
                have: 5
            }
        );
        assert_eq!(
            error.to_string(),
            "the delta to version 6 applies to version 4, not to version 5"
        );
    }

    #[test]
    fn applying_a_delta_puts_objects_in_key_order() {
        // A base out of order (a hand-edited state file, say) still comes out sorted, so the
        // next diff's merge walk holds.
        let base = config(2, &[("c", "c.test"), ("a", "a.test")], &[]);
        let delta = SharedConfigDelta {
            base_version: 2,
            version: 3,
            http_routes: vec![route("b", "b.test")],
            ..SharedConfigDelta::default()
        };
        let keys: Vec<String> = delta
            .apply(&base)
            .unwrap()
            .http_routes
            .iter()
            .map(|r| r.key.name.clone())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }
}
