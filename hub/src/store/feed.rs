//! What the store's feeds ([`super::DnsFeed`], [`super::SharedFeed`]) share: waiting for the
//! next change worth publishing, no sooner than a minimum interval after the last one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::machine::StoreView;
use super::state::State;

/// Waits until `view` shows a state whose `version` differs from `published`, then until
/// `min_interval` after `last`. Returns false on `shutdown` or once the store stops
/// publishing.
pub(super) async fn wait_due(
    view: &mut watch::Receiver<Arc<StoreView>>,
    shutdown: &CancellationToken,
    last: Instant,
    min_interval: Duration,
    published: u64,
    version: impl Fn(&State) -> u64,
) -> bool {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return false,
            changed = view.changed() => if changed.is_err() { return false },
        }
        if version(&view.borrow().state) != published {
            break;
        }
    }
    let due = last + min_interval;
    if Instant::now() < due {
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep_until(due) => {}
        }
    }
    true
}
