//! The Kubernetes source's own store: per-kind watcher events in, source updates out.
//!
//! Every kind has its own watcher, and each restarts (relists) on its own: after a 410 Gone,
//! a cut watch that cannot resume, or a failed list. The index's store swaps its whole set on
//! `InitDone`, so passing a kind's relist through would drop every other kind's objects.
//! Instead this store keeps the units of each kind, buffers a kind's relist until its
//! `InitDone`, and turns the difference into plain `Apply`/`Delete`s. The index sees one
//! `Init..InitDone` only, sent once every kind has been listed (or found not served), so a
//! Gateway is never programmed from a half-listed cluster; the source contract of
//! [`super::super`] holds unchanged.
//!
//! Objects are parsed without their `resourceVersion`, so a write that changes only
//! `status` (the agent's own status write-back) is not a change of the unit.
//!
//! An object with a fatal problem (it fails parsing, or validation drops it) is listed with
//! the id as its source and keeps its last good content, in a relist too. Problems that are
//! not fatal (a listener with an unsupported protocol, an invalid route rule) do not hold the
//! object back: it is applied, programming turns them into status conditions, and they are
//! listed too while the object has them.
//!
//! **Caveat:** an object held back by a fatal problem gets no status of its own (its last
//! good content's status, if any, stays): the status writer only writes what programming
//! computed, and an object that did not parse has no usable parentRefs or targets to compute
//! it from. Such problems are logged at warn once and listed on `/status`. With CRD schema
//! validation in the API server, they are mostly values the schema allows and Meridian's
//! stricter checks refuse.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_gwapi::{Object, Origin, Problem};

use crate::metrics::Metrics;
use crate::source::{Event, SourceUnit, SourceUpdate};

/// What a kind's watcher task reports.
#[derive(Clone, Debug)]
pub(crate) enum Watched {
    /// A watcher event; objects are JSON with `apiVersion` and `kind` set.
    Event(Event<serde_json::Value>),
    /// The API server does not serve this kind (404 on list: its CRD is not installed).
    Absent,
    /// The watcher failed (it retries with backoff); shown on `/status` until the next event.
    Error(String),
}

/// Units by id (`Kind/namespace/name`, or `Kind/name` when cluster-scoped).
type Units = BTreeMap<String, Arc<Vec<Object>>>;

#[derive(Default)]
struct KindState {
    /// Listed at least once (or found not served).
    listed: bool,
    units: Units,
    problems: BTreeMap<String, Vec<Problem>>,
    /// A relist in progress: its units and problems, swapped in on `InitDone`.
    relist: Option<(Units, BTreeMap<String, Vec<Problem>>)>,
    watch_error: Option<Problem>,
}

/// The store over all watched kinds.
pub(crate) struct Store {
    kinds: BTreeMap<&'static str, KindState>,
    started: bool,
    sent_problems: Option<Vec<Problem>>,
    metrics: Option<Metrics>,
}

// === impl Store ===

impl Store {
    /// A store for `kinds` (their `kind` names); the index hears nothing until all of them
    /// have been listed once.
    pub(crate) fn new(
        kinds: impl IntoIterator<Item = &'static str>,
        metrics: Option<Metrics>,
    ) -> Self {
        Self {
            kinds: kinds
                .into_iter()
                .map(|kind| (kind, KindState::default()))
                .collect(),
            started: false,
            sent_problems: None,
            metrics,
        }
    }

    /// Applies one report of `kind`'s watcher; returns the updates for the index.
    pub(crate) fn on_watched(&mut self, kind: &'static str, watched: Watched) -> Vec<SourceUpdate> {
        let mut updates = Vec::new();
        let started = self.started;
        let metrics = self.metrics.clone();
        let state = self.kinds.entry(kind).or_default();
        if !matches!(watched, Watched::Error(_)) {
            state.watch_error = None;
        }
        match watched {
            Watched::Error(message) => {
                state.watch_error = Some(
                    Origin::new(format!("kubernetes {kind}"), None)
                        .problem(format!("watch failed (retrying): {message}")),
                );
            }
            Watched::Absent => {
                if state.listed && !state.units.is_empty() {
                    tracing::warn!(
                        kind,
                        "kind no longer served by the API server; its objects are gone"
                    );
                }
                state.relist = None;
                let old = std::mem::take(&mut state.units);
                state.problems.clear();
                state.listed = true;
                if started {
                    for id in old.into_keys() {
                        updates.push(delete(id));
                    }
                }
            }
            Watched::Event(Event::Init) => {
                state.relist = Some((Units::new(), BTreeMap::new()));
            }
            Watched::Event(Event::InitApply(value)) => {
                let (id, parsed) = parse(kind, value, metrics.as_ref());
                let (units, problems) = state
                    .relist
                    .get_or_insert_with(|| (Units::new(), BTreeMap::new()));
                match parsed {
                    Ok((objects, found)) => {
                        if !found.is_empty() {
                            problems.insert(id.clone(), found);
                        }
                        units.insert(id, objects);
                    }
                    Err(found) => {
                        // The last good content stays through the relist.
                        if let Some(old) = state.units.get(&id) {
                            units.insert(id.clone(), old.clone());
                        }
                        problems.insert(id, found);
                    }
                }
            }
            Watched::Event(Event::InitDone) => {
                let (units, problems) = state.relist.take().unwrap_or_default();
                if started {
                    for id in state.units.keys() {
                        if !units.contains_key(id) {
                            tracing::info!(object = %id, "gone after a relist");
                            updates.push(delete(id.clone()));
                        }
                    }
                    for (id, objects) in &units {
                        if state.units.get(id) != Some(objects) {
                            updates.push(apply(id.clone(), objects.clone()));
                        }
                    }
                }
                state.units = units;
                state.problems = problems;
                if !state.listed {
                    tracing::info!(kind, objects = state.units.len(), "listed");
                }
                state.listed = true;
            }
            Watched::Event(Event::Apply(value)) => {
                let (id, parsed) = parse(kind, value, metrics.as_ref());
                match parsed {
                    Ok((objects, found)) => {
                        if found.is_empty() {
                            state.problems.remove(&id);
                        } else {
                            state.problems.insert(id.clone(), found);
                        }
                        if state.units.get(&id) != Some(&objects) {
                            tracing::info!(object = %id, "applied");
                            state.units.insert(id.clone(), objects.clone());
                            if started {
                                updates.push(apply(id, objects));
                            }
                        }
                    }
                    Err(found) => {
                        state.problems.insert(id, found);
                    }
                }
            }
            Watched::Event(Event::Delete(value)) => {
                let id = unit_id(kind, &value);
                state.problems.remove(&id);
                if state.units.remove(&id).is_some() {
                    tracing::info!(object = %id, "deleted");
                    count(metrics.as_ref(), "removed");
                    if started {
                        updates.push(delete(id));
                    }
                }
            }
        }

        if !self.started && self.kinds.values().all(|state| state.listed) {
            self.started = true;
            updates.push(SourceUpdate::Event(Event::Init));
            // Ids start with the kind, so they are unique across kinds.
            let all: Units = self
                .kinds
                .values()
                .flat_map(|state| state.units.iter())
                .map(|(id, objects)| (id.clone(), objects.clone()))
                .collect();
            for (id, objects) in all {
                updates.push(SourceUpdate::Event(Event::InitApply(SourceUnit {
                    id,
                    objects,
                })));
            }
            updates.push(SourceUpdate::Event(Event::InitDone));
        }

        let problems: Vec<Problem> = self
            .kinds
            .values()
            .flat_map(|state| {
                state
                    .watch_error
                    .iter()
                    .chain(state.problems.values().flatten())
            })
            .cloned()
            .collect();
        if self.sent_problems.as_ref() != Some(&problems) {
            // Watch failures are logged where they happen; object problems here, once.
            let object_problems = self
                .kinds
                .values()
                .flat_map(|state| state.problems.values().flatten());
            for problem in object_problems {
                if !self
                    .sent_problems
                    .as_ref()
                    .is_some_and(|sent| sent.contains(problem))
                {
                    if problem.fatal {
                        tracing::warn!(%problem, "invalid object; not applied, its last good content (if any) stays in use");
                    } else {
                        tracing::warn!(%problem, "object applied; this part of it is not (see its status conditions)");
                    }
                }
            }
            if let Some(metrics) = &self.metrics {
                metrics
                    .source_problems
                    .set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
            }
            self.sent_problems = Some(problems.clone());
            updates.push(SourceUpdate::Problems(problems));
        }
        updates
    }
}

fn apply(id: String, objects: Arc<Vec<Object>>) -> SourceUpdate {
    SourceUpdate::Event(Event::Apply(SourceUnit { id, objects }))
}

fn delete(id: String) -> SourceUpdate {
    SourceUpdate::Event(Event::Delete(SourceUnit {
        id,
        objects: Arc::new(Vec::new()),
    }))
}

/// `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object.
pub(crate) fn unit_id(kind: &str, value: &serde_json::Value) -> String {
    let metadata = &value["metadata"];
    let name = metadata["name"].as_str().unwrap_or("");
    match metadata["namespace"].as_str() {
        Some(namespace) if !namespace.is_empty() => format!("{kind}/{namespace}/{name}"),
        _ => format!("{kind}/{name}"),
    }
}

/// The unit content of one object with its problems that are not fatal, or its problems when
/// one is fatal (the object is held back).
type Parsed = Result<(Arc<Vec<Object>>, Vec<Problem>), Vec<Problem>>;

/// Parses one object into its unit content, or its problems.
fn parse(kind: &str, value: serde_json::Value, metrics: Option<&Metrics>) -> (String, Parsed) {
    let id = unit_id(kind, &value);
    let mut value = value;
    // Every write moves the resourceVersion, the agent's own status writes included; without
    // it, an object whose spec and metadata did not change parses equal and the index does
    // not program everything again for it.
    if let Some(metadata) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        metadata.remove("resourceVersion");
    }
    // The API server validated the object against the installed CRDs: a field Meridian does
    // not know is a newer Gateway API feature, warned about, not a reason to drop the object.
    let origin = Origin::new(id.clone(), None).lenient();
    let (object, problems) = meridian_gwapi::parse_value(value, &origin);
    if !problems.iter().any(|p| p.fatal) {
        count(metrics, "ok");
        (id, Ok((Arc::new(object.into_iter().collect()), problems)))
    } else {
        count(metrics, "invalid");
        (id, Err(problems))
    }
}

fn count(metrics: Option<&Metrics>, result: &'static str) {
    if let Some(metrics) = metrics {
        metrics
            .source_reads
            .get_or_create(&[("result", result)])
            .inc();
    }
}
