//! A shared route's status as the admin API shows it: one entry per cluster, with the
//! conditions that cluster's Gateways gave the route (what `kubectl get httproute -o yaml`
//! shows under `status.parents`, but for every cluster the route reaches).
//!
//! Each cluster entry has a one-word `state` of Meridian's own, so a table (and a script) can
//! tell at a glance whether the route works there, and, when a condition is not as it should
//! be, the Gateway API `reason` of the first such condition. In order of precedence:
//! - `ClusterDown`: the cluster's health verdict is not healthy (its agent may be silent, so
//!   what it last reported may be stale; DNS sends it no traffic either way); `reason` is the
//!   verdict's reason;
//! - `NotProgrammed`: a gateway instance of a Gateway the route is attached to rejected its
//!   programmed config (a port it cannot bind, ...) and serves its last good one, so the
//!   conditions say what the cluster should serve, not what it serves; `reason` has the error;
//! - `NotReported`: the cluster's agent has not reported this route yet;
//! - `Propagating`: the cluster last programmed a shared config older than this version of
//!   the route;
//! - `NoParent`: the route names no Gateway that exists in the cluster;
//! - `Accepted`: every parent accepted the route and every reference resolved;
//! - `Degraded`: some parent accepted it, but a condition is not as it should be (another
//!   parent refused it, a backend is missing, rules were dropped);
//! - `NotAccepted`: no parent accepted it.

use meridian_proto::model::{ConditionState, HealthVerdict, ObjectKey, RouteParentConditions};
use serde_json::{Value, json};

use crate::store::{ClusterRecord, State};

/// The `status` object of a shared route: `{"clusters": [...]}` in cluster name order.
pub(super) fn route_status(state: &State, route: &ObjectKey) -> Value {
    let version = state.route_versions.get(route).copied().unwrap_or(0);
    let clusters: Vec<Value> = state
        .clusters
        .values()
        .map(|record| cluster_entry(version, record, route))
        .collect();
    json!({ "clusters": clusters })
}

/// One cluster's state and reason for one route (see the module's documentation).
fn cluster_state(
    route_version: u64,
    record: &ClusterRecord,
    route: &ObjectKey,
) -> (&'static str, Option<String>) {
    let shared = record.shared.as_ref();
    let entry = shared.and_then(|shared| shared.routes.get(route));
    let programmed = shared.map(|shared| shared.shared_version);
    if record.health.verdict != HealthVerdict::Healthy {
        let reason = &record.health.reason;
        return ("ClusterDown", (!reason.is_empty()).then(|| reason.clone()));
    }
    let rejection = entry.and_then(|entry| {
        let rejected = &shared?.rejected;
        entry
            .parents
            .iter()
            .find_map(|p| rejected.iter().find(|r| r.gateway == p.gateway))
    });
    if let Some(rejection) = rejection {
        return (
            "NotProgrammed",
            Some(format!(
                "a gateway of {} rejected its config and serves its last good one: {}",
                rejection.gateway, rejection.error
            )),
        );
    }
    if programmed.is_some_and(|v| v < route_version) {
        return ("Propagating", None);
    }
    match entry {
        None => ("NotReported", None),
        Some(entry) => summary(&entry.parents),
    }
}

fn cluster_entry(route_version: u64, record: &ClusterRecord, route: &ObjectKey) -> Value {
    let shared = record.shared.as_ref();
    let entry = shared.and_then(|shared| shared.routes.get(route));
    let (state, reason) = cluster_state(route_version, record, route);
    let mut value = json!({
        "cluster": record.cluster.name.to_string(),
        "state": state,
        "routeVersion": route_version,
    });
    if let Some(reason) = reason {
        value["reason"] = json!(reason);
    }
    if let Some(shared) = shared {
        value["programmedVersion"] = json!(shared.shared_version);
    }
    if let Some(entry) = entry {
        value["sinceUnixMs"] = json!(entry.since_unix_ms);
        value["parents"] = entry.parents.iter().map(parent).collect();
    }
    value
}

/// How one cluster stands with every shared route: how many are `Accepted` there, and the
/// others with their state and reason, in route order.
pub(super) fn cluster_routes(state: &State, record: &ClusterRecord) -> Value {
    let mut accepted = 0;
    let mut others = Vec::new();
    for key in state.routes.keys() {
        let version = state.route_versions.get(key).copied().unwrap_or(0);
        match cluster_state(version, record, key) {
            ("Accepted", _) => accepted += 1,
            (word, reason) => {
                let mut other = json!({ "route": key.to_string(), "state": word });
                if let Some(reason) = reason {
                    other["reason"] = json!(reason);
                }
                others.push(other);
            }
        }
    }
    json!({ "accepted": accepted, "total": state.routes.len(), "others": others })
}

/// Drops the conditions from a rendered `status`, keeping each cluster's state and reason.
pub(super) fn summarize(status: &mut Value) {
    if let Some(clusters) = status.get_mut("clusters").and_then(Value::as_array_mut) {
        for cluster in clusters {
            if let Some(cluster) = cluster.as_object_mut() {
                cluster.remove("parents");
            }
        }
    }
}

/// The state and first bad reason of a route's parents in one cluster.
fn summary(parents: &[RouteParentConditions]) -> (&'static str, Option<String>) {
    if parents.is_empty() {
        return ("NoParent", None);
    }
    let accepted = |p: &RouteParentConditions| {
        p.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == ConditionState::True)
    };
    let first_bad = parents
        .iter()
        .flat_map(|p| p.conditions.iter())
        .find(|c| {
            // `PartiallyInvalid` is only ever present when True, and True is bad.
            let good = if c.type_ == "PartiallyInvalid" {
                ConditionState::False
            } else {
                ConditionState::True
            };
            c.status != good
        })
        .map(|c| {
            // Its reason (`UnsupportedValue`) says less than its type.
            if c.type_ == "PartiallyInvalid" {
                "PartiallyInvalid".to_string()
            } else {
                c.reason.clone()
            }
        });
    match first_bad {
        None => ("Accepted", None),
        Some(reason) if parents.iter().any(accepted) => ("Degraded", Some(reason)),
        Some(reason) => ("NotAccepted", Some(reason)),
    }
}

fn parent(parent: &RouteParentConditions) -> Value {
    let mut parent_ref = json!({
        "namespace": parent.gateway.namespace,
        "name": parent.gateway.name,
    });
    if let Some(section) = &parent.section_name {
        parent_ref["sectionName"] = json!(section);
    }
    if let Some(port) = parent.port {
        parent_ref["port"] = json!(port);
    }
    let conditions: Vec<Value> = parent
        .conditions
        .iter()
        .map(|c| {
            json!({
                "type": c.type_,
                "status": c.status.as_str(),
                "reason": c.reason,
                "message": c.message,
            })
        })
        .collect();
    json!({ "parentRef": parent_ref, "conditions": conditions })
}

#[cfg(test)]
mod tests {
    use meridian_proto::model::StatusCondition;

    use super::*;

    fn parent(conditions: &[(&str, ConditionState, &str)]) -> RouteParentConditions {
        RouteParentConditions {
            gateway: ObjectKey::new("infra", "edge").unwrap(),
            section_name: None,
            port: None,
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| StatusCondition {
                    type_: type_.to_string(),
                    status: *status,
                    reason: reason.to_string(),
                    message: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_summary_tells_accepted_degraded_and_not_accepted_apart() {
        use ConditionState::{False, True};
        let good = parent(&[
            ("Accepted", True, "Accepted"),
            ("ResolvedRefs", True, "ResolvedRefs"),
        ]);
        let refused = parent(&[
            ("Accepted", False, "NoMatchingParent"),
            ("ResolvedRefs", True, "ResolvedRefs"),
        ]);
        let unresolved = parent(&[
            ("Accepted", True, "Accepted"),
            ("ResolvedRefs", False, "BackendNotFound"),
        ]);
        let partly = parent(&[
            ("Accepted", True, "Accepted"),
            ("ResolvedRefs", True, "ResolvedRefs"),
            ("PartiallyInvalid", True, "UnsupportedValue"),
        ]);
        let reason = |r: &str| Some(r.to_string());
        assert_eq!(summary(&[]), ("NoParent", None));
        assert_eq!(summary(std::slice::from_ref(&good)), ("Accepted", None));
        assert_eq!(
            summary(&[good.clone(), refused.clone()]),
            ("Degraded", reason("NoMatchingParent")),
            "served through one parent of two"
        );
        assert_eq!(
            summary(&[unresolved]),
            ("Degraded", reason("BackendNotFound"))
        );
        assert_eq!(summary(&[partly]), ("Degraded", reason("PartiallyInvalid")));
        assert_eq!(
            summary(&[refused.clone(), refused]),
            ("NotAccepted", reason("NoMatchingParent"))
        );
    }
}
