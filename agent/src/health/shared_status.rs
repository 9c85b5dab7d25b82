//! The hub's shared objects as this cluster programmed them: the conditions each of its
//! Gateways gave each shared HTTPRoute, reported to the hub so operators see, from one place,
//! in which clusters a global route works and why not where it does not; and the listeners
//! serving each shared certificate, so the hub refuses to delete a certificate in use.
//!
//! A shared route's status cannot live on one object: the same route is programmed by every
//! cluster against its own Gateways, Services and ReferenceGrants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_gwapi::status::{ConditionStatus, GatewayStatus, RouteKind, RouteOrigin};
use meridian_proto::model::gateway::GatewayConfig;
use meridian_proto::model::{
    CertificateUse, ConditionState, GatewayRejection, ObjectKey, RouteParentConditions,
    SharedConfig, SharedObjectsStatus, SharedRouteStatus, StatusCondition,
};

/// The longest condition message reported. A report with thousands of routes must stay far
/// below the hub's gRPC message limit; the full text is in the cluster's own status.
const MAX_MESSAGE_LEN: usize = 256;

/// How often the route status is sent again although it did not change: a newly elected hub
/// leader knows nothing of what earlier leaders were told.
pub const SHARED_REFRESH: Duration = Duration::from_secs(30);

/// Every shared route of `shared`, with the conditions the programmed Gateways (`statuses`)
/// gave it, in route key order (a route no Gateway of this cluster is named by has no
/// parents), and every listener of the programmed `configs` serving a shared certificate;
/// `rejected` is left empty.
pub fn shared_objects_status(
    shared: &SharedConfig,
    statuses: &BTreeMap<ObjectKey, GatewayStatus>,
    configs: &BTreeMap<ObjectKey, GatewayConfig>,
) -> SharedObjectsStatus {
    let mut parents: BTreeMap<&ObjectKey, Vec<RouteParentConditions>> = BTreeMap::new();
    for (gateway, status) in statuses {
        for route in &status.routes {
            if route.origin != RouteOrigin::Shared || route.kind != RouteKind::Http {
                continue;
            }
            let found = parents.entry(&route.key).or_default();
            found.extend(route.parents.iter().map(|parent| {
                RouteParentConditions {
                    gateway: gateway.clone(),
                    section_name: parent.parent_ref.section_name.clone(),
                    port: parent.parent_ref.port,
                    conditions: parent
                        .conditions
                        .iter()
                        .map(|c| StatusCondition {
                            type_: c.type_.as_str().to_string(),
                            status: match c.status {
                                ConditionStatus::True => ConditionState::True,
                                ConditionStatus::False => ConditionState::False,
                                ConditionStatus::Unknown => ConditionState::Unknown,
                            },
                            reason: c.reason.as_str().to_string(),
                            message: truncate(&c.message),
                        })
                        .collect(),
                }
            }));
        }
    }
    // A hub certificate replaces a local Secret of the same name, so a listener serving a
    // certificate with a shared one's key serves the shared one.
    let shared_keys: BTreeSet<&ObjectKey> = shared.certificates.iter().map(|c| &c.key).collect();
    let mut certificates: Vec<CertificateUse> = configs
        .iter()
        .flat_map(|(gateway, config)| {
            config.listeners.iter().flat_map(move |listener| {
                let served = listener.tls.iter().flat_map(|tls| tls.certificates.iter());
                served.map(move |cert| (gateway, &listener.name, &cert.key))
            })
        })
        .filter(|(_, _, key)| shared_keys.contains(key))
        .map(|(gateway, listener, key)| CertificateUse {
            certificate: key.clone(),
            gateway: gateway.clone(),
            listener: listener.clone(),
        })
        .collect();
    certificates.sort();
    certificates.dedup();
    SharedObjectsStatus {
        shared_version: shared.version,
        certificates,
        // Filled in from the gateways' ACKs and NACKs, which change without reprogramming.
        rejected: Vec::new(),
        routes: shared
            .http_routes
            .iter()
            .map(|route| SharedRouteStatus {
                route: route.key.clone(),
                parents: parents.remove(&route.key).unwrap_or_default(),
            })
            .collect(),
    }
}

/// Decides, per report, whether it carries the shared status: when it changed since the last
/// one sent on this session, in the two reports after that too (a report can be dropped on
/// the way: a follower between leaders, a leader that just lost its term), and every
/// `SHARED_REFRESH`; so reports stay small.
#[derive(Debug, Default)]
pub struct SharedSent {
    last: Option<(Arc<SharedObjectsStatus>, Vec<GatewayRejection>, Instant)>,
    repeats_left: u8,
}

/// How many reports after a change carry the status again.
const REPEATS: u8 = 2;

impl SharedSent {
    /// Whether to send `shared` (with `rejected`) now; records it as sent if so. Comparing an
    /// unchanged status costs a pointer comparison: the index publishes a new `Arc` only when
    /// it reprograms.
    pub fn should_send(
        &mut self,
        shared: &Arc<SharedObjectsStatus>,
        rejected: &[GatewayRejection],
        now: Instant,
    ) -> bool {
        let changed = self
            .last
            .as_ref()
            .is_none_or(|(sent, sent_rejected, _)| sent != shared || sent_rejected != rejected);
        if changed {
            self.last = Some((shared.clone(), rejected.to_vec(), now));
            self.repeats_left = REPEATS;
            return true;
        }
        if self.repeats_left > 0 {
            self.repeats_left -= 1;
            return true;
        }
        match &mut self.last {
            Some((_, _, at)) if now.saturating_duration_since(*at) >= SHARED_REFRESH => {
                *at = now;
                true
            }
            _ => false,
        }
    }
}

/// `message`, cut to 256 bytes on a character boundary.
pub fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_LEN {
        return message.to_string();
    }
    let mut end = MAX_MESSAGE_LEN - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_sent_when_it_changes_twice_more_and_again_every_refresh() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut sent = SharedSent::default();
        let v1 = Arc::new(SharedObjectsStatus {
            shared_version: 1,
            ..Default::default()
        });
        let v2 = Arc::new(SharedObjectsStatus {
            shared_version: 2,
            ..Default::default()
        });
        assert!(
            sent.should_send(&v1, &[], at(0)),
            "the first report of a session"
        );
        assert!(sent.should_send(&v1, &[], at(1)), "repeated once");
        assert!(sent.should_send(&v1, &[], at(2)), "repeated twice");
        assert!(!sent.should_send(&v1, &[], at(3)));
        assert!(sent.should_send(&v2, &[], at(4)), "a change");
        assert!(sent.should_send(&v2, &[], at(5)));
        assert!(sent.should_send(&v2, &[], at(6)));
        assert!(!sent.should_send(&v2, &[], at(33)));
        assert!(
            sent.should_send(&v2, &[], at(34)),
            "a refresh for a leader elected meanwhile"
        );
        assert!(!sent.should_send(&v2, &[], at(35)));
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_MESSAGE_LEN, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short"), "short");
    }
}
