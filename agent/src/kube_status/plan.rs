//! From the programmed conditions and the watched objects to the status writes that are
//! needed: pure functions, so the diff and merge rules are tested without an API server.
//!
//! - **Gateway, GatewayClass:** the whole `status` is Meridian's (the object's class names
//!   Meridian's controller), written with server-side apply. Its `conditions` and
//!   `listeners` are `listType=map` lists (keyed by `type` and `name`), so an apply owns
//!   exactly the entries it sends and drops the ones it sent before and no longer does.
//! - **Routes (`status.parents`), BackendTLSPolicy (`status.ancestors`):** these lists are
//!   `listType=atomic` in the Gateway API CRDs (one list, shared by every controller whose
//!   Gateways a route names). An apply would own the whole list and remove the other
//!   controllers' entries, so the writer reads (the watched object), replaces only the entries
//!   whose `controllerName` is Meridian's, and writes the list back with a JSON merge patch
//!   whose `metadata.resourceVersion` makes it fail with 409 Conflict if the object changed
//!   in between (then it is planned again from the newer object).
//!
//! `lastTransitionTime` carries over from the written condition of the same type (of the
//! same listener, parentRef or ancestorRef) while the condition's status is the same; it is
//! `now` when the status changed or the condition is new.
//!
//! A write is planned only when the status differs from what the object carries (compared
//! field by field on what Meridian writes), so the writer's own write, which comes back as a
//! watch event, plans nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use meridian_gwapi::status::{Condition, RouteOrigin};
use meridian_proto::model::ObjectKey;
use serde_json::{Map, Value, json};

use super::observed::{ObjectRef, Observed, ObservedObject};
use crate::index::{ProgrammedGateway, ProgrammedStatus};

/// The group of every Gateway API kind.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Condition types Meridian sets; a condition of another type in a status Meridian writes is
/// someone else's and is neither compared nor touched.
const OWN_CONDITION_TYPES: &[&str] = &[
    "Accepted",
    "Programmed",
    "ResolvedRefs",
    "Conflicted",
    "PartiallyInvalid",
    "InsecureFrontendValidationMode",
];

/// One status write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Write {
    /// The object.
    pub(crate) key: ObjectRef,
    /// Its `apiVersion` (as watched).
    pub(crate) api_version: String,
    /// What to send to its `status` subresource.
    pub(crate) patch: StatusPatch,
}

/// A patch of a `status` subresource.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StatusPatch {
    /// Server-side apply (`application/apply-patch+yaml`, forced) of this object.
    Apply(Value),
    /// JSON merge patch, with `metadata.resourceVersion` as a precondition when known.
    Merge(Value),
}

/// The writes that make the watched objects carry `programmed`; `controller` is the
/// `controllerName` of route and policy entries, `now` the RFC 3339 time of new transitions.
pub(crate) fn plan(
    programmed: &ProgrammedStatus,
    observed: &Observed,
    controller: &str,
    now: &str,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for (name, conditions) in &programmed.classes {
        let key = object_ref("GatewayClass", "", name);
        if let Some(object) = observed.get(&key) {
            let old = &object.status;
            let status =
                json!({"conditions": conditions_json(conditions, &old["conditions"], now)});
            if normalize_class(old) != normalize_class(&status) {
                writes.push(apply(object, status));
            }
        }
    }

    // Only Gateways of a class Meridian owns get status, and only routes and policies
    // towards them get entries.
    let owned: BTreeMap<&ObjectKey, &ProgrammedGateway> = programmed
        .gateways
        .iter()
        .filter(|(_, gateway)| programmed.classes.contains_key(&gateway.class))
        .collect();
    for (key, gateway) in &owned {
        let Some(object) = observed.get(&object_ref("Gateway", &key.namespace, &key.name)) else {
            continue;
        };
        let status = gateway_json(gateway, &object.status, now);
        if normalize_gateway(&object.status) != normalize_gateway(&status) {
            writes.push(apply(object, status));
        }
    }

    // Entries by object: (the parentRef or ancestorRef, its conditions).
    let mut routes: BTreeMap<ObjectRef, Vec<(Value, &[Condition])>> = BTreeMap::new();
    let mut policies: BTreeMap<ObjectRef, Vec<(Value, &[Condition])>> = BTreeMap::new();
    for (key, gateway) in &owned {
        for route in &gateway.status.routes {
            // Shared routes come from the hub, not from this cluster's objects.
            if route.origin != RouteOrigin::Local {
                continue;
            }
            let entries = routes
                .entry(object_ref(
                    route.kind.as_str(),
                    &route.key.namespace,
                    &route.key.name,
                ))
                .or_default();
            for parent in &route.parents {
                let reference = &parent.parent_ref;
                let mut json = json!({
                    "group": reference.group,
                    "kind": reference.kind,
                    "namespace": reference.namespace,
                    "name": reference.name,
                });
                if let Some(section) = &reference.section_name {
                    json["sectionName"] = json!(section);
                }
                if let Some(port) = reference.port {
                    json["port"] = json!(port);
                }
                entries.push((json, parent.conditions.as_slice()));
            }
        }
        for policy in &gateway.status.policies {
            let ancestor = json!({
                "group": GATEWAY_GROUP,
                "kind": "Gateway",
                "namespace": key.namespace,
                "name": key.name,
            });
            policies
                .entry(object_ref(
                    "BackendTLSPolicy",
                    &policy.key.namespace,
                    &policy.key.name,
                ))
                .or_default()
                .push((ancestor, policy.conditions.as_slice()));
        }
    }
    for (kind, list, reference) in [
        ("HTTPRoute", "parents", "parentRef"),
        ("GRPCRoute", "parents", "parentRef"),
        ("TLSRoute", "parents", "parentRef"),
        ("BackendTLSPolicy", "ancestors", "ancestorRef"),
    ] {
        let desired = if kind == "BackendTLSPolicy" {
            &mut policies
        } else {
            &mut routes
        };
        // Every object of the kind: one that no longer gets entries may still carry
        // Meridian's old ones, which must go.
        for object in observed.of_kind(kind) {
            let entries = desired.remove(&object.key).unwrap_or_default();
            let field = ListField {
                list,
                reference,
                controller,
            };
            if let Some(write) = list_write(object, &field, &entries, now) {
                writes.push(write);
            }
        }
    }
    writes
}

/// Which list of a status holds per-controller entries, and how its entries name their
/// parent.
struct ListField<'a> {
    /// `parents` or `ancestors`.
    list: &'a str,
    /// `parentRef` or `ancestorRef`.
    reference: &'a str,
    /// Meridian's `controllerName`.
    controller: &'a str,
}

/// The merge patch replacing Meridian's entries of `field.list` with `entries`, keeping the
/// other controllers' entries; `None` when the object already carries them.
fn list_write(
    object: &ObservedObject,
    field: &ListField<'_>,
    entries: &[(Value, &[Condition])],
    now: &str,
) -> Option<Write> {
    let old: &[Value] = object.status[field.list]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_ours = |entry: &&Value| entry["controllerName"].as_str() == Some(field.controller);
    let old_ours: Vec<&Value> = old.iter().filter(is_ours).collect();
    let mut new_ours: Vec<Value> = Vec::with_capacity(entries.len());
    for (reference, conditions) in entries {
        // The same parent listed twice (two Gateways cannot give the same parentRef, but
        // keep the list a set anyway).
        if new_ours.iter().any(|e| &e[field.reference] == reference) {
            continue;
        }
        let previous = old_ours
            .iter()
            .find(|e| normalize_ref(&e[field.reference]) == normalize_ref(reference))
            .map_or(&Value::Null, |e| &e["conditions"]);
        let mut entry = Map::new();
        entry.insert(field.reference.to_string(), reference.clone());
        entry.insert("controllerName".to_string(), json!(field.controller));
        entry.insert(
            "conditions".to_string(),
            conditions_json(conditions, previous, now),
        );
        new_ours.push(Value::Object(entry));
    }
    let normalize = |entries: &mut dyn Iterator<Item = &Value>| {
        let mut list: Vec<Value> = entries
            .map(|e| {
                json!({
                    "ref": normalize_ref(&e[field.reference]),
                    "conditions": normalize_conditions(&e["conditions"]),
                })
            })
            .collect();
        list.sort_by_key(|e| e["ref"].to_string());
        list
    };
    if normalize(&mut old_ours.iter().copied()) == normalize(&mut new_ours.iter()) {
        return None;
    }
    let mut list: Vec<Value> = old.iter().filter(|e| !is_ours(e)).cloned().collect();
    list.extend(new_ours);
    let mut patch = json!({"status": {field.list: list}});
    if let Some(version) = &object.resource_version {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    Some(Write {
        key: object.key.clone(),
        api_version: object.api_version.clone(),
        patch: StatusPatch::Merge(patch),
    })
}

/// A server-side apply of `status` to `object`.
fn apply(object: &ObservedObject, status: Value) -> Write {
    let mut metadata = json!({"name": object.key.name});
    if !object.key.namespace.is_empty() {
        metadata["namespace"] = json!(object.key.namespace);
    }
    Write {
        key: object.key.clone(),
        api_version: object.api_version.clone(),
        patch: StatusPatch::Apply(json!({
            "apiVersion": object.api_version,
            "kind": object.key.kind,
            "metadata": metadata,
            "status": status,
        })),
    }
}

fn object_ref(kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// A Gateway's `status`: conditions, listeners and the addresses in use.
fn gateway_json(gateway: &ProgrammedGateway, old: &Value, now: &str) -> Value {
    let old_listeners: &[Value] = old["listeners"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let listeners: Vec<Value> = gateway
        .status
        .listeners
        .iter()
        .map(|listener| {
            let previous = old_listeners
                .iter()
                .find(|l| l["name"].as_str() == Some(listener.name.as_str()))
                .map_or(&Value::Null, |l| &l["conditions"]);
            json!({
                "name": listener.name,
                "supportedKinds": listener
                    .supported_kinds
                    .iter()
                    .map(|kind| json!({"group": GATEWAY_GROUP, "kind": kind.as_str()}))
                    .collect::<Vec<_>>(),
                "attachedRoutes": listener.attached_routes,
                "conditions": conditions_json(&listener.conditions, previous, now),
            })
        })
        .collect();
    let mut status = json!({
        "conditions": conditions_json(&gateway.status.conditions, &old["conditions"], now),
        "listeners": listeners,
    });
    if !gateway.addresses.is_empty() {
        status["addresses"] = addresses_json(&gateway.addresses);
    }
    status
}

fn addresses_json(addresses: &[IpAddr]) -> Value {
    addresses
        .iter()
        .map(|addr| json!({"type": "IPAddress", "value": addr.to_string()}))
        .collect()
}

/// Conditions as `metav1.Condition`s; `old` is the list written before (to carry over
/// `lastTransitionTime`).
fn conditions_json(conditions: &[Condition], old: &Value, now: &str) -> Value {
    let old: &[Value] = old.as_array().map(Vec::as_slice).unwrap_or_default();
    conditions
        .iter()
        .map(|condition| {
            let type_ = condition.type_.as_str();
            let status = condition.status.as_str();
            let since = old
                .iter()
                .find(|c| c["type"].as_str() == Some(type_))
                .filter(|c| c["status"].as_str() == Some(status))
                .and_then(|c| c["lastTransitionTime"].as_str())
                .unwrap_or(now);
            json!({
                "type": type_,
                "status": status,
                "reason": condition.reason.as_str(),
                "message": condition.message,
                "observedGeneration": condition.observed_generation,
                "lastTransitionTime": since,
            })
        })
        .collect()
}

/// Meridian's conditions of a list, with the fields it writes, in type order.
fn normalize_conditions(conditions: &Value) -> Value {
    let mut list: Vec<Value> = conditions
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["type"]
                .as_str()
                .is_some_and(|t| OWN_CONDITION_TYPES.contains(&t))
        })
        .map(|c| {
            json!({
                "type": c["type"],
                "status": c["status"],
                "reason": c["reason"],
                "message": c["message"],
                "observedGeneration": c["observedGeneration"],
                "lastTransitionTime": c["lastTransitionTime"],
            })
        })
        .collect();
    list.sort_by_key(|c| c["type"].to_string());
    Value::Array(list)
}

/// A parentRef or ancestorRef with the API's defaults filled in, for comparing a written
/// reference with a computed one.
fn normalize_ref(reference: &Value) -> Value {
    let text = |field: &str, default: &str| {
        reference[field]
            .as_str()
            .map_or_else(|| default.to_string(), str::to_string)
    };
    json!({
        "group": text("group", GATEWAY_GROUP),
        "kind": text("kind", "Gateway"),
        "namespace": text("namespace", ""),
        "name": text("name", ""),
        "sectionName": reference["sectionName"],
        "port": reference["port"],
    })
}

fn normalize_class(status: &Value) -> Value {
    normalize_conditions(&status["conditions"])
}

/// The fields of a Gateway's `status` Meridian writes, lists in key order.
fn normalize_gateway(status: &Value) -> Value {
    let mut listeners: Vec<Value> = status["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            json!({
                "name": l["name"],
                "supportedKinds": l["supportedKinds"],
                "attachedRoutes": l["attachedRoutes"],
                "conditions": normalize_conditions(&l["conditions"]),
            })
        })
        .collect();
    listeners.sort_by_key(|l| l["name"].to_string());
    let addresses = match &status["addresses"] {
        Value::Null => json!([]),
        addresses => addresses.clone(),
    };
    json!({
        "addresses": addresses,
        "conditions": normalize_conditions(&status["conditions"]),
        "listeners": listeners,
    })
}
