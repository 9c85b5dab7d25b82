//! [`StoreMachine`]: the state machine Raft drives, publishing immutable views after every
//! applied batch.

use std::sync::Arc;

use meridian_proto::model::SharedConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::command::{Command, Outcome, RejectKind, Rejection};
use super::dns_feed::DnsFeed;
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

/// The receiving ends of everything [`StoreMachine`] (and its [`DnsFeed`]) publishes.
#[derive(Clone, Debug)]
pub struct StoreWatches {
    /// The whole state, after every batch that changed it.
    pub view: watch::Receiver<Arc<StoreView>>,
    /// What DNS answers from, after DNS-relevant changes (published by the [`DnsFeed`]).
    pub dns: watch::Receiver<Arc<DnsView>>,
    /// What agents receive, after every change to shared routes.
    pub shared: watch::Receiver<Arc<SharedConfig>>,
}

/// The hub's state machine: owns the [`State`], applies commands from the Raft log, and
/// publishes views.
///
/// **Invariant:** it is driven by the Raft task alone; readers only ever see published
/// `Arc` snapshots, never the live state.
///
/// **Cost per batch:** publishing a view must not copy the whole state (thousands of clusters,
/// a thousand audit entries). The machine keeps two copies, left-right style: the published
/// one, and the one published before it, which it gets back as soon as no reader holds it any
/// more. The next batch brings that spare copy up to date by replaying the previous batch's
/// commands (`State::apply` is deterministic) and applies its own commands to it, so a batch
/// costs what its commands cost. Only when a reader still holds the older view does the machine
/// fall back to cloning the published state.
pub struct StoreMachine {
    /// The state the current batch changes; `None` between batches (then `published` is the
    /// latest state).
    live: Option<State>,
    /// The latest published state.
    published: Arc<State>,
    /// The state before the latest published batch, once no reader holds it.
    spare: Option<State>,
    /// The commands of the latest published batch (to replay on `spare`).
    replay: Vec<(u64, Command)>,
    /// The commands of the current batch.
    batch: Vec<(u64, Command)>,
    applied_index: u64,
    /// Whether the state changed since the last publication.
    dirty: bool,
    view_tx: watch::Sender<Arc<StoreView>>,
    shared_tx: watch::Sender<Arc<SharedConfig>>,
    metrics: Metrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    how: &'static str,
}

struct Metrics {
    commands: Family<OutcomeLabels, Counter>,
    /// How each batch got its mutable copy of the state: `replayed` (cheap) or `cloned`.
    copies: Family<CopyLabels, Counter>,
}

// === impl StoreMachine ===

impl StoreMachine {
    /// An empty state machine, the watches it publishes to, and the [`DnsFeed`] that derives
    /// DNS views from it (run it with [`DnsFeed::run`]). Raft restores its snapshot and replays
    /// the log into the machine on startup.
    pub fn new(registry: &mut Registry) -> (Self, StoreWatches, DnsFeed) {
        let state = State::default();
        let (view_tx, view) = watch::channel(Arc::new(StoreView::default()));
        let (shared_tx, shared) = watch::channel(Arc::new(state.shared_config()));
        let commands = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "meridian_hub_store_commands",
            "Commands applied to the hub state machine, by outcome",
            commands.clone(),
        );
        let copies = Family::<CopyLabels, Counter>::default();
        registry.register(
            "meridian_hub_store_state_copies",
            "Batches that changed the state, by how they got a private copy of it (replayed: \
             the previous batch replayed on a spare copy; cloned: a reader held the spare)",
            copies.clone(),
        );
        let (feed, dns) = DnsFeed::new(view.clone(), registry);
        let machine = Self {
            live: None,
            published: Arc::new(state),
            spare: None,
            replay: Vec::new(),
            batch: Vec::new(),
            applied_index: 0,
            dirty: false,
            view_tx,
            shared_tx,
            metrics: Metrics { commands, copies },
        };
        (machine, StoreWatches { view, dns, shared }, feed)
    }

    /// The state the current batch changes, made on first use: the spare copy brought up to
    /// date, or else a clone of the published state.
    fn live(&mut self) -> &mut State {
        if self.live.is_none() {
            let (state, how) = match self.spare.take() {
                Some(mut spare) => {
                    for (index, command) in self.replay.drain(..) {
                        spare.apply(index, command);
                    }
                    (spare, "replayed")
                }
                None => ((*self.published).clone(), "cloned"),
            };
            // Debug builds (every test) check the invariant the replay relies on.
            debug_assert!(
                state == *self.published,
                "a {how} copy differs from the published state"
            );
            self.metrics.copies.get_or_create(&CopyLabels { how }).inc();
            self.replay.clear();
            self.live = Some(state);
        }
        self.live.get_or_insert_with(State::default)
    }

    /// Publishes the live state (if the batch changed it) as the new view, and takes the state
    /// it replaces back as the spare copy when no reader holds it.
    fn publish(&mut self) {
        let Some(state) = self.live.take() else {
            return;
        };
        let state = Arc::new(state);
        let shared_changed = self.shared_tx.borrow().version != state.shared_version;
        if shared_changed {
            let shared = Arc::new(state.shared_config());
            self.shared_tx.send_replace(shared);
        }
        let old_view = self.view_tx.send_replace(Arc::new(StoreView {
            applied_index: self.applied_index,
            state: state.clone(),
        }));
        let old_state = std::mem::replace(&mut self.published, state);
        drop(old_view);
        self.spare = Arc::try_unwrap(old_state).ok();
        self.replay = std::mem::take(&mut self.batch);
        if self.spare.is_none() {
            self.replay.clear();
        }
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
            Ok(command) => {
                let outcome = self.live().apply(index, command.clone());
                // Every decodable command is replayed, even one that changed nothing, so the
                // spare copy goes through exactly what the live one did.
                self.batch.push((index, command));
                outcome
            }
            Err(err) => {
                // Nothing is applied (and nothing audited): the state stays as it is.
                tracing::warn!(index, error = %err, "refusing a command this hub cannot decode");
                let outcome = Outcome::Rejected(Rejection::invalid("command", err.to_string()));
                self.count(&outcome);
                return encode_outcome(index, &outcome);
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
        if self.dirty && self.live.is_some() {
            self.publish();
        } else {
            // A batch that changed nothing (raft's empty entries, repeated PUTs) shares the
            // published state and only moves the index, so readers waiting for an index
            // (linearizable reads) see it applied. Its commands changed nothing, so the live
            // copy (if one was made) still equals the published state: keep it for the next
            // batch, with nothing to replay.
            if let Some(live) = self.live.take() {
                self.spare = Some(live);
                self.replay.clear();
            }
            self.batch.clear();
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
        match &self.live {
            Some(live) => encode_snapshot(live),
            None => encode_snapshot(&self.published),
        }
    }

    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        let state = decode_snapshot(snapshot).map_err(|e| e.to_string())?;
        self.spare = None;
        self.replay.clear();
        self.batch.clear();
        self.live = Some(state);
        self.applied_index = index;
        self.publish();
        // The state before the snapshot has nothing to do with the restored one.
        self.spare = None;
        self.replay.clear();
        Ok(())
    }
}
