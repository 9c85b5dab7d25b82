//! Status write-back to Kubernetes (with `--kubernetes`): the conditions the agent computes
//! for what it programs become the `status` of the objects, where `kubectl get gateway` and
//! `kubectl describe httproute` show them.
//!
//! One task, apart from the data path: it reads the index's [`ProgrammedStatus`] (a `watch`
//! channel, latest value only) and the watched objects' metadata and `status` (an unbounded
//! feed from the kube source, filed in [`observed`]), and writes what [`plan`] says is
//! missing. Neither the index nor the source ever waits for it or for the API server.
//!
//! - **Coalescing:** a change schedules a pass [`DEBOUNCE`] later; changes until then join
//!   that pass.
//! - **No write loops:** a pass writes only objects whose `status` differs from what
//!   Meridian would write; its own writes come back as watch events that match.
//! - **Failures** (a 409 Conflict on a route's resourceVersion precondition, an API error, a
//!   timeout) are logged at warn and counted in `meridian_agent_status_writes{result}`; the
//!   next pass comes after a backoff ([`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`]) and plans
//!   again from the newest objects.
//! - **Field manager:** `meridian-agent/<cluster>`, shared by the agent's replicas in the
//!   cluster, so they write the same fields rather than fight over them.
//! - **Events:** a write that changes a condition's status or reason queues an Event on the
//!   object ([`events`]), published by a task of its own so the events API never holds up
//!   status writes; an Event that fails, or finds the queue full, is logged or counted,
//!   never retried, and does not fail the pass.

mod events;
mod observed;
mod plan;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::observed::Observed;
pub(crate) use self::observed::ObservedObject;
use self::plan::{StatusPatch, Write};
use crate::index::ProgrammedStatus;
use crate::metrics::Metrics;
use crate::source::Event;

/// How long a pass waits after the first change, so that a burst is one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The first retry delay after a failed write.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds whose `status` the agent writes.
pub(crate) const STATUS_KINDS: &[&str] = &[
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "TLSRoute",
    "BackendTLSPolicy",
];

/// The kube source's feed of watcher events of [`STATUS_KINDS`], tagged with the kind.
pub(crate) type StatusFeed = mpsc::UnboundedSender<(&'static str, Event<ObservedObject>)>;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("no answer within {WRITE_TIMEOUT:?}")]
    Timeout,
    #[error("{0} is not a kind the agent watches")]
    UnknownKind(String),
}

/// Starts the status writer; it stops on `shutdown`.
pub(crate) fn spawn(
    client: kube::Client,
    cluster: &str,
    programmed: watch::Receiver<Option<Arc<ProgrammedStatus>>>,
    feed: mpsc::UnboundedReceiver<(&'static str, Event<ObservedObject>)>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let manager = format!("meridian-agent/{cluster}");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: meridian_gwapi::CONTROLLER_NAME.to_string(),
            instance: Some(manager.clone()),
        },
    );
    // Events go out from a task of their own, so a slow or throttled events API never holds
    // up status writes; a full queue drops (and counts) them.
    let (events, queue) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(publish_events(recorder, queue, metrics.clone()));
    let writer = Writer {
        client,
        manager,
        metrics,
        events,
    };
    tokio::spawn(writer.run(programmed, feed, shutdown))
}

struct Writer {
    client: kube::Client,
    manager: String,
    metrics: Metrics,
    events: mpsc::Sender<(KubeEvent, ObjectReference)>,
}

/// Events waiting to be published, at most.
const EVENT_QUEUE: usize = 1024;

/// The longest object name an Event is recorded for: the Event's name is the object's, a dot
/// and up to 16 hex digits, within the 253 characters of a name.
const EVENT_NAME_ROOM: usize = 253 - 17;

/// Publishes queued Events one by one until the writer goes.
async fn publish_events(
    recorder: Recorder,
    mut queue: mpsc::Receiver<(KubeEvent, ObjectReference)>,
    metrics: Metrics,
) {
    while let Some((event, regarding)) = queue.recv().await {
        let published =
            tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&event, &regarding)).await;
        let result = match published {
            Ok(Ok(())) => "ok",
            Ok(Err(error)) => {
                tracing::warn!(object = ?regarding.name, reason = %event.reason, %error, "recording an event failed");
                "failed"
            }
            Err(_) => {
                tracing::warn!(object = ?regarding.name, reason = %event.reason, "recording an event timed out");
                "failed"
            }
        };
        metrics.events.get_or_create(&[("result", result)]).inc();
    }
}

// === impl Writer ===

impl Writer {
    async fn run(
        self,
        mut programmed: watch::Receiver<Option<Arc<ProgrammedStatus>>>,
        mut feed: mpsc::UnboundedReceiver<(&'static str, Event<ObservedObject>)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut observed = Observed::default();
        let mut due: Option<Instant> = None;
        let mut backoff = MIN_BACKOFF;
        let mut feed_open = true;
        let mut programmed_open = true;
        loop {
            let schedule = |due: &mut Option<Instant>| {
                // A pending pass (or retry) is not pushed back by further changes.
                due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
            };
            let pass_due = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                changed = programmed.changed(), if programmed_open => {
                    match changed {
                        Ok(()) => schedule(&mut due),
                        Err(_) => programmed_open = false,
                    }
                    false
                }
                event = feed.recv(), if feed_open => {
                    match event {
                        Some((kind, event)) => {
                            if observed.on_event(kind, event) {
                                schedule(&mut due);
                            }
                        }
                        None => feed_open = false,
                    }
                    false
                }
                () = sleep_until(due), if due.is_some() => true,
            };
            // Outside the `select!`, whose output borrows the shutdown channel.
            if !pass_due {
                continue;
            }
            due = None;
            let current = programmed.borrow_and_update().clone();
            let Some(current) = current else { continue };
            if self.pass(&current, &mut observed).await {
                backoff = MIN_BACKOFF;
            } else {
                due = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Writes what is missing; false when some write failed.
    async fn pass(&self, programmed: &ProgrammedStatus, observed: &mut Observed) -> bool {
        let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
        let writes = plan::plan(programmed, observed, meridian_gwapi::CONTROLLER_NAME, &now);
        let mut ok = true;
        for write in writes {
            let kind = static_kind(&write.key.kind);
            let before = observed.get(&write.key).cloned();
            match self.write(&write).await {
                Ok(object) => {
                    tracing::info!(object = %write.key, "status written");
                    self.count(kind, "ok");
                    if let Some(before) = before {
                        self.record_events(&before, &write);
                    }
                    observed.wrote(object);
                }
                Err(error) => {
                    ok = false;
                    let conflict = matches!(&error, WriteError::Api(kube::Error::Api(status)) if status.code == 409);
                    self.count(kind, if conflict { "conflict" } else { "failed" });
                    tracing::warn!(object = %write.key, %error, "status write failed; retrying with backoff");
                }
            }
        }
        ok
    }

    async fn write(&self, write: &Write) -> Result<ObservedObject, WriteError> {
        let plural = crate::source::kube::KINDS
            .iter()
            .find(|k| k.kind == write.key.kind)
            .map(|k| k.plural)
            .ok_or_else(|| WriteError::UnknownKind(write.key.kind.clone()))?;
        let (group, version) = write
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", write.api_version.as_str()));
        let resource = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: write.api_version.clone(),
            kind: write.key.kind.clone(),
            plural: plural.to_string(),
        };
        let api: Api<DynamicObject> = if write.key.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &write.key.namespace, &resource)
        };
        let call = async {
            match &write.patch {
                StatusPatch::Apply(body) => {
                    let params = PatchParams::apply(&self.manager).force();
                    api.patch_status(&write.key.name, &params, &Patch::Apply(body))
                        .await
                }
                StatusPatch::Merge(body) => {
                    let params = PatchParams {
                        field_manager: Some(self.manager.clone()),
                        ..PatchParams::default()
                    };
                    api.patch_status(&write.key.name, &params, &Patch::Merge(body))
                        .await
                }
            }
        };
        let object = tokio::time::timeout(WRITE_TIMEOUT, call)
            .await
            .map_err(|_| WriteError::Timeout)??;
        let mut value = serde_json::to_value(&object).unwrap_or_default();
        value["apiVersion"] = serde_json::json!(write.api_version);
        value["kind"] = serde_json::json!(write.key.kind);
        Ok(ObservedObject::from_json(&value))
    }

    /// Queues an Event for each condition `write` changed on `before`.
    fn record_events(&self, before: &ObservedObject, write: &Write) {
        let (StatusPatch::Apply(body) | StatusPatch::Merge(body)) = &write.patch;
        let changes = events::transitions(
            &before.status,
            &body["status"],
            meridian_gwapi::CONTROLLER_NAME,
        );
        if changes.is_empty() {
            return;
        }
        if before.key.name.len() > EVENT_NAME_ROOM {
            self.metrics
                .events
                .get_or_create(&[("result", "skipped")])
                .inc();
            return;
        }
        for change in changes {
            let regarding = ObjectReference {
                api_version: Some(before.api_version.clone()),
                kind: Some(before.key.kind.clone()),
                name: Some(before.key.name.clone()),
                namespace: (!before.key.namespace.is_empty()).then(|| before.key.namespace.clone()),
                uid: before.uid.clone(),
                field_path: (!change.scope.is_empty()).then(|| change.scope.clone()),
                ..ObjectReference::default()
            };
            let event = KubeEvent {
                type_: if change.is_normal() {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: change.reason,
                note: Some(change.note),
                action: change.condition,
                secondary: None,
            };
            if self.events.try_send((event, regarding)).is_err() {
                self.metrics
                    .events
                    .get_or_create(&[("result", "dropped")])
                    .inc();
            }
        }
    }

    fn count(&self, kind: &'static str, result: &'static str) {
        self.metrics
            .status_writes
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }
}

/// The kind as a metric label (one of [`STATUS_KINDS`]).
fn static_kind(kind: &str) -> &'static str {
    STATUS_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}
