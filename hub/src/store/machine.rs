//! [`StoreMachine`]: the state machine Raft drives, publishing immutable views after every
//! applied batch.

use std::collections::VecDeque;
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
use super::shared_feed::SharedFeed;
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
    /// What agents receive, after changes to shared routes and certificates (published by the
    /// [`SharedFeed`]).
    pub shared: watch::Receiver<Arc<SharedConfig>>,
}

/// The tasks that derive views from the store's: run each one's `run`, after a first
/// `publish_now` once Raft replayed the log.
pub struct Feeds {
    /// DNS views.
    pub dns: DnsFeed,
    /// What agents receive.
    pub shared: SharedFeed,
}

/// The hub's state machine: owns the [`State`], applies commands from the Raft log, and
/// publishes views.
///
/// **Invariant:** it is driven by the Raft task alone; readers only ever see published
/// `Arc` snapshots, never the live state.
///
/// **Cost per batch:** publishing a view must not copy the whole state (thousands of clusters,
/// a thousand audit entries). The machine keeps the states it published before the current one
/// as spare copies (left-right style, with more than one spare), with the commands of every
/// batch since the oldest. A batch takes the oldest spare no reader holds any more, brings it
/// up to date by replaying the batches it missed (`State::apply` is deterministic) and applies
/// its own commands to it, so a batch costs what its commands cost. A reader that holds a view
/// for a while (the DNS feed builds from one, the leader's health tracker reads one) only
/// keeps one spare out of use: the machine then works with three copies instead of two. It
/// clones the published state only when readers hold every spare (at most [`MAX_SPARES`]).
pub struct StoreMachine {
    /// The state the current batch changes; `None` between batches (then `published` is the
    /// latest state).
    live: Option<State>,
    /// The latest published state.
    published: Arc<State>,
    /// States published before `published`, oldest first; readers may still hold some.
    spares: VecDeque<Arc<State>>,
    /// `history[i]`: the commands that turned `spares[i]` into the next state (`spares[i + 1]`,
    /// or `published` for the last spare).
    history: VecDeque<Vec<(u64, Command)>>,
    /// The commands of the current batch.
    batch: Vec<(u64, Command)>,
    applied_index: u64,
    /// Whether the state changed since the last publication.
    dirty: bool,
    view_tx: watch::Sender<Arc<StoreView>>,
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

/// At most this many spare states are kept (each is a full copy of the state).
const MAX_SPARES: usize = 3;

// === impl StoreMachine ===

impl StoreMachine {
    /// An empty state machine, the watches it publishes to, and the [`DnsFeed`] that derives
    /// DNS views from it (run it with [`DnsFeed::run`]). Raft restores its snapshot and replays
    /// the log into the machine on startup.
    pub fn new(registry: &mut Registry) -> (Self, StoreWatches, Feeds) {
        let state = State::default();
        let (view_tx, view) = watch::channel(Arc::new(StoreView::default()));
        let (shared_feed, shared) = SharedFeed::new(view.clone());
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
            spares: VecDeque::new(),
            history: VecDeque::new(),
            batch: Vec::new(),
            applied_index: 0,
            dirty: false,
            view_tx,
            metrics: Metrics { commands, copies },
        };
        let feeds = Feeds {
            dns: feed,
            shared: shared_feed,
        };
        (machine, StoreWatches { view, dns, shared }, feeds)
    }

    /// The state the current batch changes, made on first use: the oldest spare no reader
    /// holds, brought up to date, or else a clone of the published state.
    fn live(&mut self) -> &mut State {
        if self.live.is_none() {
            let (state, how) = match self.take_spare() {
                Some(state) => (state, "replayed"),
                None => ((*self.published).clone(), "cloned"),
            };
            // Debug builds (every test) check the invariant the replay relies on.
            debug_assert!(
                state == *self.published,
                "a {how} copy differs from the published state"
            );
            self.metrics.copies.get_or_create(&CopyLabels { how }).inc();
            self.live = Some(state);
        }
        self.live.get_or_insert_with(State::default)
    }

    /// Removes the oldest spare no reader holds and replays on it every batch it missed.
    fn take_spare(&mut self) -> Option<State> {
        // The machine never hands out spares, and readers only get them through views (which
        // are gone once they were replaced): a count of one means no reader can clone it now.
        let position = self
            .spares
            .iter()
            .position(|spare| Arc::strong_count(spare) == 1)?;
        let spare = self.spares.remove(position)?;
        // The batch that turned it into the next state: the spare before it (if any) now
        // reaches that state through its own batch and this one.
        let missed = self.history.remove(position).unwrap_or_default();
        let state = Arc::try_unwrap(spare).ok().map(|mut state| {
            let later = self.history.range(position..).flatten();
            for (index, command) in missed.iter().chain(later) {
                state.apply(*index, command.clone());
            }
            state
        });
        if let Some(before) = position
            .checked_sub(1)
            .and_then(|i| self.history.get_mut(i))
        {
            before.extend(missed);
        }
        state
    }

    /// Keeps `state` (no longer the latest) as a spare; `batch` turns it into the next one.
    fn keep_spare(&mut self, state: Arc<State>, batch: Vec<(u64, Command)>) {
        self.spares.push_back(state);
        self.history.push_back(batch);
        if self.spares.len() > MAX_SPARES {
            // Held by a reader for MAX_SPARES batches (it frees it when done), or unused.
            self.spares.pop_front();
            self.history.pop_front();
        }
    }

    /// Publishes the live state (if the batch changed it) as the new view, and takes the state
    /// it replaces back as the spare copy when no reader holds it.
    fn publish(&mut self) {
        let Some(state) = self.live.take() else {
            return;
        };
        let state = Arc::new(state);
        let old_view = self.view_tx.send_replace(Arc::new(StoreView {
            applied_index: self.applied_index,
            state: state.clone(),
        }));
        let old_state = std::mem::replace(&mut self.published, state);
        drop(old_view);
        let batch = std::mem::take(&mut self.batch);
        self.keep_spare(old_state, batch);
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
            self.batch.clear();
            if let Some(live) = self.live.take() {
                self.keep_spare(Arc::new(live), Vec::new());
            }
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

    /// Between batches (where Raft asks) the published state is the applied one: the encoder
    /// shares it, like a reader holding a view, and encodes it on the snapshot thread. While it
    /// holds it, that copy is not reused as a spare (`take_spare` takes only unshared ones).
    fn snapshot_encoder(&self) -> crate::raft::SnapshotEncoder {
        match &self.live {
            // Mid-batch the applied state is private to the machine: encode it here.
            Some(live) => {
                let bytes = encode_snapshot(live);
                Box::new(move || bytes)
            }
            None => {
                let state = self.published.clone();
                Box::new(move || encode_snapshot(&state))
            }
        }
    }

    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        let state = decode_snapshot(snapshot).map_err(|e| e.to_string())?;
        self.batch.clear();
        self.live = Some(state);
        self.applied_index = index;
        self.publish();
        // The states before the snapshot have nothing to do with the restored one.
        self.spares.clear();
        self.history.clear();
        Ok(())
    }
}
