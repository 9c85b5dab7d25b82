//! What the status writer knows of the objects it writes to: their metadata and `status` as
//! the kube source watches them, kept per kind through relists.
//!
//! The writer's own writes come back as watch events. Until the event of a write arrives, an
//! event of that object with another resourceVersion is one from before the write (a watch
//! delivers an object's events in order) and is not filed: it would make the writer believe
//! its write was undone and write again.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::source::Event;

/// An object's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectRef {
    /// Its kind (`Gateway`, `HTTPRoute`, ...).
    pub(crate) kind: String,
    /// Its namespace; empty for a cluster-scoped object.
    pub(crate) namespace: String,
    /// Its name.
    pub(crate) name: String,
}

/// The parts of a watched object the status writer reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ObservedObject {
    /// Which object.
    pub(crate) key: ObjectRef,
    /// The `apiVersion` it is watched at (and written at).
    pub(crate) api_version: String,
    /// `metadata.resourceVersion`.
    pub(crate) resource_version: Option<String>,
    /// `metadata.uid` (what an Event's `regarding` names it by).
    pub(crate) uid: Option<String>,
    /// Its `status` (`Null` when it has none).
    pub(crate) status: Value,
}

// === impl ObjectRef ===

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

// === impl ObservedObject ===

impl ObservedObject {
    /// Reads a watched object (with `apiVersion` and `kind` set).
    pub(crate) fn from_json(value: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let metadata = &value["metadata"];
        Self {
            key: ObjectRef {
                kind: text(&value["kind"]),
                namespace: text(&metadata["namespace"]),
                name: text(&metadata["name"]),
            },
            api_version: text(&value["apiVersion"]),
            resource_version: metadata["resourceVersion"].as_str().map(str::to_string),
            uid: metadata["uid"].as_str().map(str::to_string),
            status: value.get("status").cloned().unwrap_or(Value::Null),
        }
    }
}

/// The watched objects of every status kind.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    objects: BTreeMap<ObjectRef, ObservedObject>,
    /// A kind's relist in progress, swapped in on its `InitDone`.
    relists: BTreeMap<String, BTreeMap<ObjectRef, ObservedObject>>,
    /// Objects written whose write's watch event has not arrived yet: its resourceVersion.
    echoes: BTreeMap<ObjectRef, String>,
}

// === impl Observed ===

impl Observed {
    /// Files one watcher event of `kind`; returns whether what the writer sees changed.
    pub(crate) fn on_event(&mut self, kind: &str, event: Event<ObservedObject>) -> bool {
        match event {
            Event::Init => {
                self.relists.insert(kind.to_string(), BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                self.relists
                    .entry(kind.to_string())
                    .or_default()
                    .insert(object.key.clone(), object);
                false
            }
            Event::InitDone => {
                let fresh = self.relists.remove(kind).unwrap_or_default();
                self.objects.retain(|key, _| key.kind != kind);
                // A relist shows the objects as they are now, the writes' effects included.
                self.echoes.retain(|key, _| key.kind != kind);
                self.objects.extend(fresh);
                true
            }
            Event::Apply(object) => {
                if let Some(echo) = self.echoes.get(&object.key) {
                    if object.resource_version.as_ref() != Some(echo) {
                        return false;
                    }
                    self.echoes.remove(&object.key);
                }
                let changed = self.objects.get(&object.key) != Some(&object);
                self.objects.insert(object.key.clone(), object);
                changed
            }
            Event::Delete(object) => {
                self.echoes.remove(&object.key);
                self.objects.remove(&object.key).is_some()
            }
        }
    }

    /// Files the object a write returned: the writer sees its own write at once, and the
    /// events from before it that are still on their way are skipped.
    pub(crate) fn wrote(&mut self, object: ObservedObject) {
        let before = self
            .objects
            .get(&object.key)
            .and_then(|o| o.resource_version.clone());
        if let Some(version) = &object.resource_version
            && before.as_ref() != Some(version)
        {
            self.echoes.insert(object.key.clone(), version.clone());
        }
        self.objects.insert(object.key.clone(), object);
    }

    /// The object `key`, when watched.
    pub(crate) fn get(&self, key: &ObjectRef) -> Option<&ObservedObject> {
        self.objects.get(key)
    }

    /// Every watched object of `kind`.
    pub(crate) fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a ObservedObject> {
        self.objects.values().filter(move |o| o.key.kind == kind)
    }
}
