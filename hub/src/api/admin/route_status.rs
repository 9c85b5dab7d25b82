//! A shared route's status as the admin API shows it: one entry per cluster, with the
//! conditions that cluster's Gateways gave the route (what `kubectl get httproute -o yaml`
//! shows under `status.parents`, but for every cluster the route reaches).
//!
//! Each cluster entry has a one-word `state`, so a table (and a script) can tell at a glance
//! whether the route works there:
//! - `NotReported`: the cluster's agent has not reported route status (not connected yet, or
//!   older than route status);
//! - `Pending`: the cluster last programmed an older shared config than the hub holds, so it
//!   may not have this version of the route yet;
//! - `NoParent`: the route names no Gateway that exists in the cluster;
//! - `Accepted`: every parent accepted it and every reference resolved;
//! - otherwise the reason of the first condition that is not as it should be
//!   (`NotAllowedByListeners`, `BackendNotFound`, `RefNotPermitted`, ...).

use meridian_proto::model::{ConditionState, ObjectKey, RouteParentConditions};
use serde_json::{Value, json};

use crate::store::{ClusterRecord, State};

/// The `status` object of a shared route: `{"clusters": [...]}` in cluster name order.
pub(super) fn route_status(state: &State, route: &ObjectKey) -> Value {
    let clusters: Vec<Value> = state
        .clusters
        .values()
        .map(|record| cluster_entry(state.shared_version, record, route))
        .collect();
    json!({ "clusters": clusters })
}

fn cluster_entry(hub_version: u64, record: &ClusterRecord, route: &ObjectKey) -> Value {
    let cluster = record.cluster.name.to_string();
    let Some(routes) = &record.shared else {
        return json!({ "cluster": cluster, "state": "NotReported" });
    };
    let entry = routes.routes.get(route);
    let state = if routes.shared_version < hub_version {
        "Pending".to_string()
    } else {
        match entry {
            None => "NotReported".to_string(),
            Some(entry) => summary(&entry.parents),
        }
    };
    let mut value = json!({
        "cluster": cluster,
        "state": state,
        "programmedVersion": routes.shared_version,
        "hubVersion": hub_version,
    });
    if let Some(entry) = entry {
        value["sinceUnixMs"] = json!(entry.since_unix_ms);
        value["parents"] = entry.parents.iter().map(parent).collect();
    }
    value
}

/// `Accepted` when every parent has every condition as it should be, `NoParent` when there is
/// no parent, else the first wrong condition's reason.
fn summary(parents: &[RouteParentConditions]) -> String {
    if parents.is_empty() {
        return "NoParent".to_string();
    }
    parents
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
        .map_or_else(|| "Accepted".to_string(), |c| c.reason.clone())
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
