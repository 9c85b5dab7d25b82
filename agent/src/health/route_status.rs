//! The hub's shared routes as this cluster programmed them: the conditions each of its
//! Gateways gave each shared HTTPRoute, reported to the hub so operators see, from one place,
//! in which clusters a global route works and why not where it does not.
//!
//! A shared route's status cannot live on one object: the same route is programmed by every
//! cluster against its own Gateways, Services and ReferenceGrants.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_gwapi::status::{ConditionStatus, GatewayStatus, RouteKind, RouteOrigin};
use meridian_proto::model::{
    ConditionState, ObjectKey, RouteParentConditions, SharedConfig, SharedRouteStatus,
    SharedRoutesStatus, StatusCondition,
};

/// The longest condition message reported. A report with thousands of routes must stay far
/// below the hub's gRPC message limit; the full text is in the cluster's own status.
const MAX_MESSAGE_LEN: usize = 256;

/// How often the route status is sent again although it did not change: a newly elected hub
/// leader knows nothing of what earlier leaders were told.
pub const ROUTES_REFRESH: Duration = Duration::from_secs(30);

/// Every shared route of `shared`, with the conditions the programmed Gateways (`statuses`)
/// gave it, in route key order; a route no Gateway of this cluster is named by has no parents.
pub fn shared_routes_status(
    shared: &SharedConfig,
    statuses: &BTreeMap<ObjectKey, GatewayStatus>,
) -> SharedRoutesStatus {
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
    SharedRoutesStatus {
        shared_version: shared.version,
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

/// Decides, per report, whether it carries the route status: only when it changed since the
/// last one sent on this session, or `ROUTES_REFRESH` ago, so reports stay small.
#[derive(Debug, Default)]
pub struct RoutesSent {
    last: Option<(SharedRoutesStatus, Instant)>,
}

impl RoutesSent {
    /// Whether to send `current` now; records it as sent if so.
    pub fn should_send(&mut self, current: &SharedRoutesStatus, now: Instant) -> bool {
        let due = match &self.last {
            None => true,
            Some((sent, at)) => {
                sent != current || now.saturating_duration_since(*at) >= ROUTES_REFRESH
            }
        };
        if due {
            self.last = Some((current.clone(), now));
        }
        due
    }
}

fn truncate(message: &str) -> String {
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
    fn the_status_is_sent_when_it_changes_and_again_every_refresh() {
        let start = Instant::now();
        let mut sent = RoutesSent::default();
        let v1 = SharedRoutesStatus {
            shared_version: 1,
            routes: vec![],
        };
        let v2 = SharedRoutesStatus {
            shared_version: 2,
            routes: vec![],
        };
        assert!(
            sent.should_send(&v1, start),
            "the first report of a session"
        );
        assert!(!sent.should_send(&v1, start + Duration::from_secs(1)));
        assert!(
            sent.should_send(&v2, start + Duration::from_secs(2)),
            "a change"
        );
        assert!(!sent.should_send(&v2, start + Duration::from_secs(31)));
        assert!(
            sent.should_send(&v2, start + Duration::from_secs(32)),
            "a refresh for a leader elected meanwhile"
        );
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
