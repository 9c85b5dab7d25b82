//! [`StoreMachine`]: the state machine Raft drives, publishing immutable views after every
//! applied batch.

use std::sync::Arc;

use meridian_proto::model::SharedConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::command::{Outcome, RejectKind, Rejection};
use super::encoding::{decode_command, decode_snapshot, encode_outcome, encode_snapshot};
use super::state::State;
use crate::dns::DnsView;

/// The committed state as of one applied index, for readers (admin API, health tracker).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreView {
    /// The last applied log index.
    pub applied_index: u64,
    /// The state; shared between views of batches that did not change it.
    pub state: Arc<State>,
}

/// The receiving ends of everything [`StoreMachine`] publishes.
#[derive(Clone, Debug)]
pub struct StoreWatches {
    /// The whole state, after every batch that changed it.
    pub view: watch::Receiver<Arc<StoreView>>,
    /// What DNS answers from, after every DNS-relevant change.
    pub dns: watch::Receiver<Arc<DnsView>>,
    /// What agents receive, after every change to shared routes.
    pub shared: watch::Receiver<Arc<SharedConfig>>,
}

/// The hub's state machine: owns the [`State`], applies commands from the Raft log, and
/// publishes views.
///
/// **Invariant:** it is driven by the Raft task alone; readers only ever see published
/// `Arc` snapshots, never the live state.
pub struct StoreMachine {
    state: State,
    applied_index: u64,
    /// Whether the state changed since the last publication.
    dirty: bool,
    view_tx: watch::Sender<Arc<StoreView>>,
    dns_tx: watch::Sender<Arc<DnsView>>,
    shared_tx: watch::Sender<Arc<SharedConfig>>,
    metrics: Metrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

struct Metrics {
    commands: Family<OutcomeLabels, Counter>,
}

// === impl StoreMachine ===

impl StoreMachine {
    /// An empty state machine and the watches it publishes to. Raft restores its snapshot and
    /// replays the log into it on startup.
    pub fn new(registry: &mut Registry) -> (Self, StoreWatches) {
        let state = State::default();
        let (view_tx, view) = watch::channel(Arc::new(StoreView::default()));
        let (dns_tx, dns) = watch::channel(Arc::new(state.dns_view()));
        let (shared_tx, shared) = watch::channel(Arc::new(state.shared_config()));
        let commands = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "meridian_hub_store_commands",
            "Commands applied to the hub state machine, by outcome",
            commands.clone(),
        );
        let machine = Self {
            state,
            applied_index: 0,
            dirty: false,
            view_tx,
            dns_tx,
            shared_tx,
            metrics: Metrics { commands },
        };
        (machine, StoreWatches { view, dns, shared })
    }

    fn publish(&mut self) {
        let state = &self.state;
        self.dns_tx.send_if_modified(|current| {
            if current.applied_index == state.dns_version {
                return false;
            }
            *current = Arc::new(state.dns_view());
            true
        });
        self.shared_tx.send_if_modified(|current| {
            if current.version == state.shared_version {
                return false;
            }
            *current = Arc::new(state.shared_config());
            true
        });
        self.view_tx.send_replace(Arc::new(StoreView {
            applied_index: self.applied_index,
            state: Arc::new(state.clone()),
        }));
        self.dirty = false;
    }

    fn count(&self, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected(r) => match r.kind {
                RejectKind::NotFound => "not_found",
                RejectKind::Invalid => "invalid",
                RejectKind::Conflict => "conflict",
            },
        };
        self.metrics
            .commands
            .get_or_create(&OutcomeLabels { outcome: label })
            .inc();
    }
}

impl crate::raft::StateMachine for StoreMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.applied_index = index;
        if command.is_empty() {
            // Raft's own empty entries (a new leader's first entry) carry no command.
            return encode_outcome(index, &Outcome::Unchanged);
        }
        let outcome = match decode_command(command) {
            Ok(command) => self.state.apply(index, command),
            Err(err) => {
                tracing::warn!(index, error = %err, "refusing a command this hub cannot decode");
                Outcome::Rejected(Rejection::invalid("command", err.to_string()))
            }
        };
        if !matches!(outcome, Outcome::Unchanged) {
            self.dirty = true;
        }
        self.count(&outcome);
        encode_outcome(index, &outcome)
    }

    fn applied(&mut self, index: u64) {
        self.applied_index = index;
        if self.dirty {
            self.publish();
        } else {
            // A batch that changed nothing (raft's empty entries, repeated PUTs) shares the
            // published state and only moves the index, so readers waiting for an index
            // (linearizable reads) see it applied.
            self.view_tx.send_modify(|view| {
                if view.applied_index != index {
                    *view = Arc::new(StoreView {
                        applied_index: index,
                        state: view.state.clone(),
                    });
                }
            });
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_snapshot(&self.state)
    }

    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        let state = decode_snapshot(snapshot).map_err(|e| e.to_string())?;
        self.state = state;
        self.applied_index = index;
        self.publish();
        Ok(())
    }
}
