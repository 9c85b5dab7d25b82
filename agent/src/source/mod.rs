//! Where the agent's local objects come from, behind one interface that the Kubernetes
//! watcher ([`kube`]) and the YAML directory ([`file`]) both implement.
//!
//! A source emits kube-runtime-style [`Event`]s over [`SourceUnit`]s: a unit is a group of
//! objects with a stable id that changes as a whole. For the directory source a unit is one
//! file (its last good content); for the Kubernetes watcher it is one object (id
//! `Kind/namespace/name`, parsed with `meridian_gwapi::parse_value`; its per-kind relists
//! are merged inside the source, so the index sees one `Init..InitDone`). The index keeps a
//! reflector-like store of units and merges them, in id order, into the one `ObjectSet` it
//! programs gateways from (`ObjectSet::from_objects`: on a duplicate kind and key the first
//! unit wins and the duplicate is reported), so both sources feed the same pipeline.
//!
//! Guarantees every source gives:
//! - `Init`, then `InitApply` for every unit, then `InitDone`, before any `Apply`/`Delete`;
//!   a relist (a watcher restart) may send the `Init..InitDone` sequence again, and the store
//!   swaps the buffered set in atomically on `InitDone`, dropping units not re-listed.
//! - `Apply` carries a unit's full new content; `Delete` removes the unit.
//! - [`SourceUpdate::Problems`] carries the complete list of current problems each time it
//!   changes (not a delta); a unit with a fatal problem ([`Problem::fatal`]) keeps its last
//!   good content, one whose problems all kept their objects (they become status conditions)
//!   is applied.

pub mod file;
pub mod kube;

use std::future::Future;
use std::sync::Arc;

use meridian_gwapi::{Object, Problem};
use tokio::sync::{mpsc, watch};

/// A watcher event, shaped like `kube_runtime::watcher::Event`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// A (re)list starts; the following `InitApply`s build a fresh set.
    Init,
    /// One unit of the (re)list.
    InitApply(K),
    /// The (re)list is complete; the fresh set replaces the old one.
    InitDone,
    /// A unit was added or changed.
    Apply(K),
    /// A unit was removed.
    Delete(K),
}

/// A group of objects that changes as a whole.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceUnit {
    /// Stable id: a file path relative to the source directory, or `Kind/namespace/name`.
    pub id: String,
    /// The unit's objects in their order within the unit (empty for a `Delete`).
    pub objects: Arc<Vec<Object>>,
}

/// What a source sends to the index.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceUpdate {
    /// A change to the set of units.
    Event(Event<SourceUnit>),
    /// The complete list of current problems (replaces the previous list).
    Problems(Vec<Problem>),
}

/// A source of local objects.
pub trait Source: Send + 'static {
    /// A label for logs and `/status` (the directory, or `kubernetes`).
    fn location(&self) -> String;

    /// Runs until `shutdown` becomes true or `updates` is closed.
    fn run(
        self,
        updates: mpsc::Sender<SourceUpdate>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;
}
