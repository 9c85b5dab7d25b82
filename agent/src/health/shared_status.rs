//! The hub's shared objects as this cluster programmed them: the conditions each of its
//! Gateways gave each shared HTTPRoute, reported to the hub so operators see, from one place,
//! in which clusters a global route works and why not where it does not; and the listeners
//! serving each shared certificate, so the hub refuses to delete a certificate in use.
//!
//! A shared route's status cannot live on one object: the same route is programmed by every
//! cluster against its own Gateways, Services and ReferenceGrants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_gwapi::status::{ConditionStatus, GatewayStatus, RouteKind, RouteOrigin};
use meridian_proto::model::gateway::GatewayConfig;
use meridian_proto::model::{
    CertificateUse, ConditionState, GatewayRejection, ObjectKey, RouteParentConditions,
    SharedConfig, SharedObjectsStatus, SharedRouteStatus, SharedStatusBasis, StatusCondition,
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
    statuses: &BTreeMap<ObjectKey, Arc<GatewayStatus>>,
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

/// A shared status to send with one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingShared {
    /// Whole, or only the routes added or changed since the base (`basis`).
    pub status: SharedObjectsStatus,
    /// Which of the two.
    pub basis: SharedStatusBasis,
}

/// Decides, per report, whether it carries the shared status, and in which form.
///
/// - When: when the status changed since the last one sent on this session, in the two
///   reports after that too (a report can be dropped on the way: a follower between leaders, a
///   leader that just lost its term), and every `SHARED_REFRESH`; so reports stay small.
/// - What: a whole status on the session's first send and on every refresh (a new hub leader
///   holds no base), in three reports; after that, the routes that changed since that whole
///   one (cumulative, so a dropped delta costs nothing), unless they are so many that the
///   whole is as cheap. One
///   route changed among 10,000 costs a report of one route, not of 10,000.
#[derive(Debug, Default)]
pub struct SharedSent {
    /// The whole status deltas are computed against.
    base: Option<Base>,
    /// The status (with its rejections) last sent, and what was sent for it.
    last: Option<(
        Arc<SharedObjectsStatus>,
        Vec<GatewayRejection>,
        OutgoingShared,
    )>,
    repeats_left: u8,
}

/// A whole status sent on this session.
#[derive(Debug)]
struct Base {
    id: u64,
    status: Arc<SharedObjectsStatus>,
    /// When it was first sent.
    at: Instant,
    /// How many reports carried it. Deltas refer to it only once it was sent `REPEATS + 1`
    /// times, so one dropped report does not leave the hub without a base until the refresh.
    sends: u8,
}

/// How many reports after a change carry the status again.
const REPEATS: u8 = 2;

/// Numbers whole statuses, unique in this agent process (the hub keys bases by process).
static NEXT_WHOLE_ID: AtomicU64 = AtomicU64::new(1);

impl SharedSent {
    /// What to send with the next report, given the current `shared` status and `rejected`;
    /// records it as sent. Comparing an unchanged status costs a pointer comparison: the index
    /// publishes a new `Arc` only when it reprograms.
    pub fn next(
        &mut self,
        shared: &Arc<SharedObjectsStatus>,
        rejected: &[GatewayRejection],
        now: Instant,
    ) -> Option<OutgoingShared> {
        let changed = self
            .last
            .as_ref()
            .is_none_or(|(sent, sent_rejected, _)| sent != shared || sent_rejected != rejected);
        let refresh_due = self
            .base
            .as_ref()
            .is_none_or(|base| now.saturating_duration_since(base.at) >= SHARED_REFRESH);
        if changed || refresh_due {
            let outgoing = self.encode(shared, rejected, now, refresh_due);
            self.last = Some((shared.clone(), rejected.to_vec(), outgoing.clone()));
            self.repeats_left = REPEATS;
            return Some(outgoing);
        }
        if self.repeats_left > 0 {
            self.repeats_left -= 1;
            let sent = self.last.as_ref().map(|(_, _, sent)| sent.clone());
            if let (Some(base), Some(OutgoingShared { basis, .. })) = (&mut self.base, &sent)
                && *basis == (SharedStatusBasis::Whole { id: base.id })
            {
                base.sends = base.sends.saturating_add(1);
            }
            return sent;
        }
        None
    }

    fn encode(
        &mut self,
        shared: &Arc<SharedObjectsStatus>,
        rejected: &[GatewayRejection],
        now: Instant,
        refresh_due: bool,
    ) -> OutgoingShared {
        if let Some(base) = self
            .base
            .as_ref()
            .filter(|base| !refresh_due && base.sends > REPEATS)
            && let Some((routes, removed)) = route_delta(&base.status, shared)
        {
            return OutgoingShared {
                status: SharedObjectsStatus {
                    shared_version: shared.shared_version,
                    routes,
                    certificates: shared.certificates.clone(),
                    rejected: rejected.to_vec(),
                },
                basis: SharedStatusBasis::Delta {
                    base: base.id,
                    removed,
                },
            };
        }
        let id = NEXT_WHOLE_ID.fetch_add(1, Ordering::Relaxed);
        self.base = Some(Base {
            id,
            status: shared.clone(),
            at: now,
            sends: 1,
        });
        OutgoingShared {
            status: SharedObjectsStatus {
                rejected: rejected.to_vec(),
                ..SharedObjectsStatus::clone(shared)
            },
            basis: SharedStatusBasis::Whole { id },
        }
    }
}

/// The routes of `now` that `base` does not have as they are, and the routes of `base` that
/// `now` lacks; `None` when they are more than half of `now`'s routes, where the whole status
/// costs about as much and starts a fresh base.
fn route_delta(
    base: &SharedObjectsStatus,
    now: &SharedObjectsStatus,
) -> Option<(Vec<SharedRouteStatus>, Vec<ObjectKey>)> {
    let before: BTreeMap<&ObjectKey, &Vec<RouteParentConditions>> =
        base.routes.iter().map(|r| (&r.route, &r.parents)).collect();
    let limit = now.routes.len() / 2;
    let mut changed = Vec::new();
    for route in &now.routes {
        if before.get(&route.route) != Some(&&route.parents) {
            changed.push(route.clone());
            if changed.len() > limit {
                return None;
            }
        }
    }
    let current: BTreeSet<&ObjectKey> = now.routes.iter().map(|r| &r.route).collect();
    let removed: Vec<ObjectKey> = before
        .keys()
        .filter(|key| !current.contains(*key))
        .map(|key| (*key).clone())
        .collect();
    (changed.len() + removed.len() <= limit).then_some((changed, removed))
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

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("demo", name).unwrap()
    }

    /// A status of version `version` with routes `names`, each with `parents` parents.
    fn status(version: u64, names: &[&str], parents: usize) -> Arc<SharedObjectsStatus> {
        let parent = RouteParentConditions {
            gateway: key("edge"),
            section_name: None,
            port: None,
            conditions: Vec::new(),
        };
        Arc::new(SharedObjectsStatus {
            shared_version: version,
            routes: names
                .iter()
                .map(|name| SharedRouteStatus {
                    route: key(name),
                    parents: vec![parent.clone(); parents],
                })
                .collect(),
            ..Default::default()
        })
    }

    fn route_names(status: &SharedObjectsStatus) -> Vec<&str> {
        status
            .routes
            .iter()
            .map(|r| r.route.name.as_str())
            .collect()
    }

    fn whole_id(sent: &Option<OutgoingShared>) -> u64 {
        match sent {
            Some(OutgoingShared {
                basis: SharedStatusBasis::Whole { id },
                ..
            }) => *id,
            other => panic!("expected a whole status, got {other:?}"),
        }
    }

    #[test]
    fn the_status_is_sent_when_it_changes_twice_more_and_again_every_refresh() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut sent = SharedSent::default();
        let v1 = status(1, &["a", "b", "c"], 1);
        let v2 = status(2, &["a", "b", "c"], 1);
        let first = sent.next(&v1, &[], at(0));
        whole_id(&first);
        assert_eq!(sent.next(&v1, &[], at(1)), first, "repeated once");
        assert_eq!(sent.next(&v1, &[], at(2)), first, "repeated twice");
        assert_eq!(sent.next(&v1, &[], at(3)), None);
        assert!(sent.next(&v2, &[], at(4)).is_some(), "a change");
        assert!(sent.next(&v2, &[], at(5)).is_some());
        assert!(sent.next(&v2, &[], at(6)).is_some());
        assert_eq!(sent.next(&v2, &[], at(29)), None);
        let refresh = sent.next(&v2, &[], at(30));
        assert_ne!(
            whole_id(&refresh),
            whole_id(&first),
            "a refresh for a leader elected meanwhile is a new whole status"
        );
        assert_eq!(refresh.clone().unwrap().status.routes.len(), 3);
        assert_eq!(
            sent.next(&v2, &[], at(31)),
            refresh,
            "repeated like any whole"
        );
        assert_eq!(sent.next(&v2, &[], at(32)), refresh);
        assert_eq!(sent.next(&v2, &[], at(33)), None);
    }

    #[test]
    fn a_change_before_the_whole_status_was_sent_three_times_is_sent_whole() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut sent = SharedSent::default();
        let first = whole_id(&sent.next(&status(1, &["a", "b", "c"], 1), &[], at(0)));
        // The report carrying the first may have been dropped: a delta against it could be
        // ignored by the hub until the next refresh, so the change goes whole.
        let v2 = status(2, &["a", "b", "c"], 2);
        let second = sent.next(&v2, &[], at(1));
        assert_ne!(whole_id(&second), first);
        assert_eq!(sent.next(&v2, &[], at(2)), second);
        assert_eq!(sent.next(&v2, &[], at(3)), second);
        assert_eq!(sent.next(&v2, &[], at(4)), None);
        // Sent three times: the next change is a delta against it.
        let v3 = status(3, &["a", "b", "c"], 2);
        let delta = sent.next(&v3, &[], at(5)).unwrap();
        assert_eq!(
            delta.basis,
            SharedStatusBasis::Delta {
                base: whole_id(&second),
                removed: Vec::new()
            }
        );
    }

    #[test]
    fn a_change_sends_only_the_routes_changed_since_the_whole_status() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut sent = SharedSent::default();
        let names: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let whole = status(1, &names, 1);
        let base = whole_id(&sent.next(&whole, &[], at(0)));
        for _ in 0..REPEATS {
            assert!(sent.next(&whole, &[], at(0)).is_some(), "repeated");
        }

        // r3 gains a parent, r9 goes, r10 comes.
        let mut changed = SharedObjectsStatus::clone(&whole);
        changed.shared_version = 2;
        let parent = changed.routes[3].parents[0].clone();
        changed.routes[3].parents.push(parent);
        changed.routes.pop();
        changed.routes.push(SharedRouteStatus {
            route: key("r10"),
            parents: Vec::new(),
        });
        let rejected = vec![GatewayRejection {
            gateway: key("edge"),
            error: "port in use".into(),
        }];
        let delta = sent.next(&Arc::new(changed), &rejected, at(1)).unwrap();
        assert_eq!(
            delta.basis,
            SharedStatusBasis::Delta {
                base,
                removed: vec![key("r9")]
            }
        );
        let routes = route_names(&delta.status);
        assert_eq!(routes, ["r3", "r10"]);
        assert_eq!(delta.status.shared_version, 2);
        assert_eq!(delta.status.rejected, rejected, "rejections are whole");

        // Changes accumulate against the same base: r3 back as it was leaves r10 and r9.
        let mut back = SharedObjectsStatus::clone(&whole);
        back.shared_version = 3;
        back.routes.pop();
        back.routes.push(SharedRouteStatus {
            route: key("r10"),
            parents: Vec::new(),
        });
        let delta = sent.next(&Arc::new(back), &[], at(2)).unwrap();
        let routes = route_names(&delta.status);
        assert_eq!(routes, ["r10"]);
        assert_eq!(
            delta.basis,
            SharedStatusBasis::Delta {
                base,
                removed: vec![key("r9")]
            }
        );

        // Most routes changed: a whole status, which becomes the new base.
        let most = status(4, &names, 2);
        let next_base = whole_id(&sent.next(&most, &[], at(3)));
        assert_ne!(next_base, base);
        for _ in 0..REPEATS {
            assert!(sent.next(&most, &[], at(3)).is_some(), "repeated");
        }
        let one_more = status(5, &names, 2);
        let delta = sent.next(&one_more, &[], at(4)).unwrap();
        assert_eq!(
            delta.basis,
            SharedStatusBasis::Delta {
                base: next_base,
                removed: Vec::new()
            }
        );
        assert!(delta.status.routes.is_empty(), "only the version moved");
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
