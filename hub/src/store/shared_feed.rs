//! [`SharedFeed`]: derives the [`SharedConfig`] agents receive from the published store views,
//! off the Raft thread, and coalesces bursts of changes.
//!
//! A `SharedConfig` holds a copy of every shared route and certificate. The state machine used
//! to build one on the Raft thread after every batch that changed a route: at 10,000 routes
//! that copy was most of what the leader's Raft thread did during a bulk load, so each write
//! made the next one slower. The feed builds it on tokio's blocking pool instead, when a change
//! to shared state (`State::shared_version`) shows up, at once if the last one is at least
//! [`MIN_INTERVAL`] old, else [`MIN_INTERVAL`] after it with whatever is latest by then.
//!
//! **Staleness:** agents lag this node's applied state by at most [`MIN_INTERVAL`] plus one
//! build, on top of their own programming.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::model::SharedConfig;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::feed::wait_due;
use super::machine::StoreView;

/// The shortest time between two published shared configs.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// Publishes [`SharedConfig`]s derived from store views; see the module docs.
pub struct SharedFeed {
    view: watch::Receiver<Arc<StoreView>>,
    shared_tx: watch::Sender<Arc<SharedConfig>>,
}

// === impl SharedFeed ===

impl SharedFeed {
    /// A feed from `view`, and the receiver of what it publishes (an empty config of version 0
    /// until the first [`SharedFeed::publish_now`]).
    pub(crate) fn new(
        view: watch::Receiver<Arc<StoreView>>,
    ) -> (Self, watch::Receiver<Arc<SharedConfig>>) {
        let (shared_tx, shared) = watch::channel(Arc::new(SharedConfig::default()));
        (Self { view, shared_tx }, shared)
    }

    /// Publishes the shared config of the latest store view if it changed since the last one;
    /// returns whether it did.
    pub fn publish_now(&mut self) -> bool {
        match self.due() {
            Some(view) => {
                self.shared_tx
                    .send_replace(Arc::new(view.state.shared_config()));
                true
            }
            None => false,
        }
    }

    /// The latest store view, if its shared version differs from the published config's.
    fn due(&mut self) -> Option<Arc<StoreView>> {
        let view = self.view.borrow_and_update().clone();
        (view.state.shared_version != self.shared_tx.borrow().version).then_some(view)
    }

    /// Publishes until `shutdown` or until the store stops publishing.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last = Instant::now();
        loop {
            let published = self.shared_tx.borrow().version;
            let due = wait_due(
                &mut self.view,
                &shutdown,
                last,
                MIN_INTERVAL,
                published,
                |s| s.shared_version,
            );
            if !due.await {
                return;
            }
            if let Some(view) = self.due() {
                // The copy is in proportion to the routes: off the async workers, which carry
                // every Raft message and admin request of the node.
                let built =
                    tokio::task::spawn_blocking(move || Arc::new(view.state.shared_config())).await;
                match built {
                    Ok(shared) => {
                        let old = self.shared_tx.send_replace(shared);
                        // The replaced config may be the last reference: free it off the async
                        // workers too.
                        drop(tokio::task::spawn_blocking(move || drop(old)));
                    }
                    Err(error) if error.is_panic() => {
                        // A bug: agents keep the last config, and the next change tries again.
                        tracing::error!(%error, "building the shared config for agents panicked");
                    }
                    // The runtime is shutting down.
                    Err(_) => return,
                }
            }
            last = Instant::now();
        }
    }
}
