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

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
        let view = self.view.borrow_and_update().clone();
        let version = view.state.dns_version;
        let current = self.dns_tx.borrow().applied_index;
        if version == current && version != 0 {
            return false;
        }
        let dns = Arc::new(view.state.dns_view());
        drop(view);
        let sent = self.dns_tx.send_if_modified(|current| {
            if **current == *dns {
                return false;
            }
            *current = dns;
            true
        });
        if sent {
            self.published.inc();
        }
        sent
    }

    /// Publishes until `shutdown` or until the store stops publishing.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.publish_now();
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = self.view.changed() => if changed.is_err() { return },
            }
            let pending =
                self.view.borrow().state.dns_version != self.dns_tx.borrow().applied_index;
            if !pending {
                continue;
            }
            let due = last + MIN_INTERVAL;
            if Instant::now() < due {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            self.publish_now();
            last = Instant::now();
        }
    }
}
