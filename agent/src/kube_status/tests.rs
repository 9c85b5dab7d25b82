//! Unit tests of the status plan (what is written, what is kept, when nothing is written)
//! and of the observed objects (relists, the writer's own echoes).

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_gwapi::status::{
    Condition, ConditionType, GatewayStatus, ListenerStatus, PolicyStatus, Reason, RouteKind,
    RouteOrigin, RouteParentStatus, RouteStatus,
};
use meridian_proto::model::ObjectKey;
use meridian_proto::model::route::ParentRef;
use serde_json::{Value, json};

use super::observed::{ObjectRef, Observed, ObservedObject};
use super::plan::{StatusPatch, Write, plan};
use crate::index::{ProgrammedGateway, ProgrammedStatus};
use crate::source::Event;

const CONTROLLER: &str = "meridian.dev/gateway-controller";
const NOW: &str = "2030-01-01T00:00:00Z";
const EARLIER: &str = "2029-01-01T00:00:00Z";

fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

fn ok(type_: ConditionType, reason: Reason, generation: i64) -> Condition {
    Condition::ok(type_, reason, "", generation)
}

fn parent_ref(gateway: &str) -> ParentRef {
    ParentRef {
        group: "gateway.networking.k8s.io".to_string(),
        kind: "Gateway".to_string(),
        namespace: "app".to_string(),
        name: gateway.to_string(),
        section_name: None,
        port: None,
    }
}

/// Gateway `app/gw` of class `meridian` (owned), one listener, route `app/web` attached with
/// `resolved` as its ResolvedRefs condition.
fn programmed(resolved: Condition) -> ProgrammedStatus {
    let status = GatewayStatus {
        gateway: Some(key("app", "gw")),
        conditions: vec![
            ok(ConditionType::Accepted, Reason::Accepted, 3),
            ok(ConditionType::Programmed, Reason::Programmed, 3),
        ],
        listeners: vec![ListenerStatus {
            name: "http".to_string(),
            supported_kinds: vec![RouteKind::Http],
            attached_routes: 1,
            conditions: vec![ok(ConditionType::Accepted, Reason::Accepted, 3)],
        }],
        routes: vec![RouteStatus {
            kind: RouteKind::Http,
            key: key("app", "web"),
            origin: RouteOrigin::Local,
            parents: vec![RouteParentStatus {
                parent_ref: parent_ref("gw"),
                conditions: vec![ok(ConditionType::Accepted, Reason::Accepted, 7), resolved],
            }],
        }],
        policies: vec![PolicyStatus {
            key: key("app", "tls"),
            conditions: vec![ok(ConditionType::Accepted, Reason::Accepted, 2)],
        }],
    };
    ProgrammedStatus {
        classes: BTreeMap::from([(
            "meridian".to_string(),
            vec![ok(ConditionType::Accepted, Reason::Accepted, 1)],
        )]),
        gateways: BTreeMap::from([(
            key("app", "gw"),
            ProgrammedGateway {
                class: "meridian".to_string(),
                status: status.into(),
                addresses: vec!["127.0.0.1".parse().unwrap()],
            },
        )]),
    }
}

fn resolved() -> Condition {
    ok(ConditionType::ResolvedRefs, Reason::ResolvedRefs, 7)
}

fn object(kind: &str, namespace: &str, name: &str, rv: &str, status: Value) -> ObservedObject {
    ObservedObject::from_json(&json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "status": status,
    }))
}

fn observed(objects: Vec<ObservedObject>) -> Observed {
    let mut observed = Observed::default();
    for object in objects {
        let kind = object.key.kind.clone();
        observed.on_event(&kind, Event::Apply(object));
    }
    observed
}

/// The statuses the plan writes, by `Kind/name`: applies as their `status`, merge patches as
/// they are.
fn written(writes: &[Write]) -> BTreeMap<String, (&'static str, Value)> {
    writes
        .iter()
        .map(|w| {
            let id = format!("{}/{}", w.key.kind, w.key.name);
            match &w.patch {
                StatusPatch::Apply(body) => {
                    assert_eq!(body["kind"], w.key.kind.as_str());
                    assert_eq!(body["metadata"]["name"], w.key.name.as_str());
                    (id, ("apply", body["status"].clone()))
                }
                StatusPatch::Merge(body) => (id, ("merge", body.clone())),
            }
        })
        .collect()
}

/// Every object with no status yet.
fn fresh_objects() -> Vec<ObservedObject> {
    vec![
        object("GatewayClass", "", "meridian", "1", Value::Null),
        object("Gateway", "app", "gw", "2", Value::Null),
        object("HTTPRoute", "app", "web", "3", Value::Null),
        object("BackendTLSPolicy", "app", "tls", "4", Value::Null),
    ]
}

#[test]
fn fresh_objects_get_every_status() {
    let writes = written(&plan(
        &programmed(resolved()),
        &observed(fresh_objects()),
        CONTROLLER,
        NOW,
    ));
    let condition = |type_: &str, generation: i64| {
        json!({"type": type_, "status": "True", "reason": type_, "message": "",
               "observedGeneration": generation, "lastTransitionTime": NOW})
    };
    assert_eq!(
        writes["GatewayClass/meridian"],
        ("apply", json!({"conditions": [condition("Accepted", 1)]}))
    );
    assert_eq!(
        writes["Gateway/gw"],
        (
            "apply",
            json!({
                "conditions": [condition("Accepted", 3), condition("Programmed", 3)],
                "listeners": [{
                    "name": "http",
                    "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                    "attachedRoutes": 1,
                    "conditions": [condition("Accepted", 3)],
                }],
                "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            })
        )
    );
    let gw = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                    "namespace": "app", "name": "gw"});
    assert_eq!(
        writes["HTTPRoute/web"],
        (
            "merge",
            json!({
                "metadata": {"resourceVersion": "3"},
                "status": {"parents": [{
                    "parentRef": gw,
                    "controllerName": CONTROLLER,
                    "conditions": [condition("Accepted", 7), condition("ResolvedRefs", 7)],
                }]},
            })
        )
    );
    assert_eq!(
        writes["BackendTLSPolicy/tls"],
        (
            "merge",
            json!({
                "metadata": {"resourceVersion": "4"},
                "status": {"ancestors": [{
                    "ancestorRef": gw,
                    "controllerName": CONTROLLER,
                    "conditions": [condition("Accepted", 2)],
                }]},
            })
        )
    );
}

/// The objects as they are after the plan's writes went through.
fn after_writes(programmed: &ProgrammedStatus, objects: Vec<ObservedObject>) -> Observed {
    let mut seen = observed(objects);
    for write in plan(programmed, &seen, CONTROLLER, EARLIER) {
        let old = seen.get(&write.key).unwrap().clone();
        let status = match &write.patch {
            StatusPatch::Apply(body) => body["status"].clone(),
            StatusPatch::Merge(body) => {
                let mut status = old.status.clone();
                for (field, value) in body["status"].as_object().unwrap() {
                    status[field] = value.clone();
                }
                status
            }
        };
        let rv = format!("{}0", old.resource_version.unwrap());
        seen.wrote(ObservedObject {
            status,
            resource_version: Some(rv),
            ..old
        });
    }
    seen
}

#[test]
fn what_is_already_written_is_not_written_again() {
    let programmed = programmed(resolved());
    let seen = after_writes(&programmed, fresh_objects());
    assert_eq!(plan(&programmed, &seen, CONTROLLER, NOW), vec![]);
}

#[test]
fn a_status_change_moves_only_its_own_transition_time() {
    let seen = after_writes(&programmed(resolved()), fresh_objects());
    let missing = Condition::bad(
        ConditionType::ResolvedRefs,
        Reason::BackendNotFound,
        "Service app/missing not found",
        8,
    );
    let writes = written(&plan(&programmed(missing), &seen, CONTROLLER, NOW));
    assert_eq!(writes.len(), 1, "{writes:?}");
    let (how, patch) = &writes["HTTPRoute/web"];
    assert_eq!(*how, "merge");
    let conditions = &patch["status"]["parents"][0]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["lastTransitionTime"], EARLIER, "{patch}");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(conditions[1]["reason"], "BackendNotFound");
    assert_eq!(conditions[1]["observedGeneration"], 8);
    assert_eq!(conditions[1]["lastTransitionTime"], NOW, "{patch}");
    assert_eq!(patch["metadata"]["resourceVersion"], "30");
}

#[test]
fn a_new_generation_is_written_with_the_old_transition_time() {
    let seen = after_writes(&programmed(resolved()), fresh_objects());
    let mut next = programmed(ok(ConditionType::ResolvedRefs, Reason::ResolvedRefs, 8));
    next.gateways.values_mut().for_each(|g| {
        Arc::make_mut(&mut g.status).routes[0].parents[0].conditions[0].observed_generation = 8;
    });
    let writes = written(&plan(&next, &seen, CONTROLLER, NOW));
    let conditions = &writes["HTTPRoute/web"].1["status"]["parents"][0]["conditions"];
    for condition in conditions.as_array().unwrap() {
        assert_eq!(condition["observedGeneration"], 8);
        assert_eq!(condition["lastTransitionTime"], EARLIER);
    }
}

#[test]
fn other_controllers_entries_and_conditions_are_kept_and_not_compared() {
    let theirs = json!({
        "parentRef": {"name": "elsewhere", "namespace": "app"},
        "controllerName": "example.net/other",
        "conditions": [{"type": "Accepted", "status": "False", "reason": "NotYours"}],
    });
    let mut objects = fresh_objects();
    objects[2] = object(
        "HTTPRoute",
        "app",
        "web",
        "3",
        json!({"parents": [theirs.clone()]}),
    );
    let programmed = programmed(resolved());
    let writes = written(&plan(
        &programmed,
        &observed(objects.clone()),
        CONTROLLER,
        NOW,
    ));
    let parents = &writes["HTTPRoute/web"].1["status"]["parents"];
    assert_eq!(parents.as_array().unwrap().len(), 2, "{parents}");
    assert_eq!(parents[0], theirs);
    assert_eq!(parents[1]["controllerName"], CONTROLLER);

    // Written, then another controller adds a condition of its own type to the Gateway:
    // nothing to write.
    let mut seen = after_writes(&programmed, objects);
    let mut gw = seen
        .get(&ObjectRef {
            kind: "Gateway".to_string(),
            namespace: "app".to_string(),
            name: "gw".to_string(),
        })
        .unwrap()
        .clone();
    gw.status["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "example.net/Healthy", "status": "True"}));
    gw.resource_version = Some("99".to_string());
    seen.on_event("Gateway", Event::InitDone);
    seen.on_event("Gateway", Event::Apply(gw));
    assert_eq!(plan(&programmed, &seen, CONTROLLER, NOW), vec![]);
}

#[test]
fn stale_entries_are_removed_and_unowned_gateways_are_not_written() {
    let programmed_before = programmed(resolved());
    let seen = after_writes(&programmed_before, fresh_objects());
    // The class is no longer Meridian's: the Gateway is left as is, and the route and
    // policy lose Meridian's entries.
    let mut next = programmed_before.clone();
    next.classes.clear();
    let writes = written(&plan(&next, &seen, CONTROLLER, NOW));
    assert_eq!(
        writes.keys().collect::<Vec<_>>(),
        ["BackendTLSPolicy/tls", "HTTPRoute/web"]
    );
    assert_eq!(writes["HTTPRoute/web"].1["status"], json!({"parents": []}));
    assert_eq!(
        writes["BackendTLSPolicy/tls"].1["status"],
        json!({"ancestors": []})
    );
}

#[test]
fn objects_not_watched_yet_are_not_written() {
    let writes = plan(
        &programmed(resolved()),
        &Observed::default(),
        CONTROLLER,
        NOW,
    );
    assert_eq!(writes, vec![]);
}

#[test]
fn events_from_before_a_write_do_not_undo_it() {
    let mut seen = observed(vec![object("Gateway", "app", "gw", "5", Value::Null)]);
    let written = object("Gateway", "app", "gw", "7", json!({"conditions": []}));
    seen.wrote(written.clone());
    // Another change that happened before the write, then the write's own event.
    let older = object("Gateway", "app", "gw", "6", Value::Null);
    assert!(!seen.on_event("Gateway", Event::Apply(older)));
    assert_eq!(seen.get(&written.key), Some(&written));
    assert!(!seen.on_event("Gateway", Event::Apply(written.clone())));
    // Later events are filed as usual.
    let later = object(
        "Gateway",
        "app",
        "gw",
        "8",
        json!({"conditions": [{"type": "X"}]}),
    );
    assert!(seen.on_event("Gateway", Event::Apply(later.clone())));
    assert_eq!(seen.get(&written.key), Some(&later));
    // A write that changed nothing (same resourceVersion) expects no event.
    seen.wrote(later.clone());
    let next = object("Gateway", "app", "gw", "9", Value::Null);
    assert!(seen.on_event("Gateway", Event::Apply(next.clone())));
    assert_eq!(seen.get(&written.key), Some(&next));
}

#[test]
fn a_relist_replaces_the_kind_and_ends_waiting_for_echoes() {
    let mut seen = observed(vec![
        object("HTTPRoute", "app", "a", "1", Value::Null),
        object("HTTPRoute", "app", "b", "2", Value::Null),
        object("Gateway", "app", "gw", "3", Value::Null),
    ]);
    seen.wrote(object("HTTPRoute", "app", "a", "10", Value::Null));
    seen.on_event("HTTPRoute", Event::Init);
    let relisted = object("HTTPRoute", "app", "a", "12", json!({"parents": []}));
    seen.on_event("HTTPRoute", Event::InitApply(relisted.clone()));
    assert!(seen.on_event("HTTPRoute", Event::InitDone));
    let names: Vec<&str> = seen
        .of_kind("HTTPRoute")
        .map(|o| o.key.name.as_str())
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(seen.get(&relisted.key), Some(&relisted));
    assert_eq!(seen.of_kind("Gateway").count(), 1);
    let next = object("HTTPRoute", "app", "a", "13", Value::Null);
    assert!(seen.on_event("HTTPRoute", Event::Apply(next)));
}
