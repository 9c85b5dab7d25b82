//! [`DnsFeed`]: derives the [`DnsView`] DNS answers from the published store views, off the
//! Raft thread, and coalesces bursts of changes.
//!
//! Building a `DnsView` copies every cluster, and every new view makes the DNS server compile a
//! new zone snapshot, so doing both for each committed write would put a cost proportional to
//! the state (and the DNS compile) on the write path of every node. The feed instead publishes
//! a new view when a DNS-relevant change (`State::dns_version`) shows up, at once if the last
//! publication is at least [`MIN_INTERVAL`] old, else [`MIN_INTERVAL`] after it with whatever is
//! latest by then. An isolated change (a health verdict, a drain) therefore reaches DNS without
//! delay, and a burst of writes costs one DNS rebuild per interval instead of one per write.
//!
//! **Staleness:** DNS lags this node's applied state by at most [`MIN_INTERVAL`] plus one
//! `DnsView` build, on top of the DNS server's own compile.
//!
//! **Off the async workers:** [`DnsFeed::run`] builds each view (and compares it with the last)
//! on tokio's blocking pool. Both cost in proportion to the state (a millisecond or more for a
//! few thousand clusters), and the async workers also carry every Raft message and admin
//! request of the node: a build on one of them delayed whichever write's messages were queued
//! behind it.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::feed::wait_due;
use super::machine::StoreView;
use crate::dns::DnsView;

/// The shortest time between two published DNS views.
pub const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// Publishes [`DnsView`]s derived from store views; see the module docs.
pub struct DnsFeed {
    view: watch::Receiver<Arc<StoreView>>,
    dns_tx: watch::Sender<Arc<DnsView>>,
    published: Counter,
}

// === impl DnsFeed ===

impl DnsFeed {
    /// A feed from `view`, and the receiver of what it publishes (an empty view until the
    /// first [`DnsFeed::publish_now`]).
    pub(crate) fn new(
        view: watch::Receiver<Arc<StoreView>>,
        registry: &mut Registry,
    ) -> (Self, watch::Receiver<Arc<DnsView>>) {
        let (dns_tx, dns) = watch::channel(Arc::new(DnsView::default()));
        let published = Counter::default();
        registry.register(
            "meridian_hub_dns_views_published",
            "DNS views derived from the committed state (each makes the DNS server recompile)",
            published.clone(),
        );
        (
            Self {
                view,
                dns_tx,
                published,
            },
            dns,
        )
    }

    /// Publishes a view of the latest store view if its DNS-relevant content changed since the
    /// last one; returns whether it did.
    pub fn publish_now(&mut self) -> bool {
        let Some((view, current)) = self.due() else {
            return false;
        };
        let built = build(&view, &current);
        self.publish(built).is_some()
    }

    /// The latest store view and the published DNS view, if the store view's DNS-relevant
    /// content is newer.
    fn due(&mut self) -> Option<(Arc<StoreView>, Arc<DnsView>)> {
        let view = self.view.borrow_and_update().clone();
        let current = self.dns_tx.borrow().clone();
        let version = view.state.dns_version;
        (version != current.applied_index || version == 0).then_some((view, current))
    }

    /// Publishes `built` (from [`build`]); returns the view it replaced, if it published.
    fn publish(&mut self, built: Option<DnsView>) -> Option<Arc<DnsView>> {
        let dns = built?;
        let old = self.dns_tx.send_replace(Arc::new(dns));
        self.published.inc();
        Some(old)
    }

    /// Publishes until `shutdown` or until the store stops publishing.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.publish_now();
        let mut last = Instant::now();
        loop {
            let published = self.dns_tx.borrow().applied_index;
            let due = wait_due(
                &mut self.view,
                &shutdown,
                last,
                MIN_INTERVAL,
                published,
                |s| s.dns_version,
            );
            if !due.await {
                return;
            }
            if let Some((view, current)) = self.due() {
                let built = tokio::task::spawn_blocking(move || build(&view, &current)).await;
                match built {
                    Ok(built) => {
                        // The replaced view may be the last reference: free it off the
                        // async workers too.
                        if let Some(old) = self.publish(built) {
                            drop(tokio::task::spawn_blocking(move || drop(old)));
                        }
                    }
                    // The runtime is shutting down.
                    Err(_) => return,
                }
            }
            last = Instant::now();
        }
    }
}

/// The DNS view of `view`, unless it equals `current` (a change that did not touch what DNS
/// answers from).
fn build(view: &StoreView, current: &DnsView) -> Option<DnsView> {
    let dns = view.state.dns_view();
    (dns != *current).then_some(dns)
}
