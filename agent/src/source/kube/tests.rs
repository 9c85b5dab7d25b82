//! The Kubernetes source's store: per-kind relists, last good content, problems.

use serde_json::{Value, json};

use super::store::{Store, Watched};
use crate::source::{Event, SourceUnit, SourceUpdate};

fn service(name: &str, port: u64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "app", "resourceVersion": "1"},
        "spec": {"ports": [{"name": "http", "port": port}]}
    })
}

fn route(name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "app"},
        "spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}]}]}
    })
}

/// A route validation drops (a type error): a fatal problem.
fn broken_route(name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "app"},
        "spec": {"rules": 7}
    })
}

fn event(event: Event<Value>) -> Watched {
    Watched::Event(event)
}

/// The ids of the events among `updates`, like `Apply Service/app/a`.
fn events(updates: &[SourceUpdate]) -> Vec<String> {
    updates
        .iter()
        .filter_map(|update| match update {
            SourceUpdate::Event(event) => Some(match event {
                Event::Init => "Init".to_string(),
                Event::InitApply(SourceUnit { id, .. }) => format!("InitApply {id}"),
                Event::InitDone => "InitDone".to_string(),
                Event::Apply(SourceUnit { id, .. }) => format!("Apply {id}"),
                Event::Delete(SourceUnit { id, .. }) => format!("Delete {id}"),
            }),
            SourceUpdate::Problems(_) => None,
        })
        .collect()
}

fn problems(updates: &[SourceUpdate]) -> Option<Vec<String>> {
    updates.iter().rev().find_map(|update| match update {
        SourceUpdate::Problems(problems) => {
            Some(problems.iter().map(|p| p.source.clone()).collect())
        }
        SourceUpdate::Event(_) => None,
    })
}

/// Lists both kinds: services `a` and `b`, route `r`.
fn listed() -> Store {
    let mut store = Store::new(["Service", "HTTPRoute"], None);
    for watched in [
        event(Event::Init),
        event(Event::InitApply(service("a", 80))),
        event(Event::InitApply(service("b", 80))),
        event(Event::InitDone),
    ] {
        let updates = store.on_watched("Service", watched);
        assert_eq!(
            events(&updates),
            Vec::<String>::new(),
            "nothing before every kind is listed"
        );
    }
    store.on_watched("HTTPRoute", event(Event::Init));
    store.on_watched("HTTPRoute", event(Event::InitApply(route("r", "/"))));
    let updates = store.on_watched("HTTPRoute", event(Event::InitDone));
    assert_eq!(
        events(&updates),
        [
            "Init",
            "InitApply HTTPRoute/app/r",
            "InitApply Service/app/a",
            "InitApply Service/app/b",
            "InitDone"
        ]
    );
    store
}

#[test]
fn a_relist_of_one_kind_sends_only_its_differences() {
    let mut store = listed();
    // Service `b` was deleted and `a` changed while the watch was down; `c` is new.
    let mut updates = store.on_watched("Service", event(Event::Init));
    for object in [service("a", 81), service("c", 80)] {
        updates.extend(store.on_watched("Service", event(Event::InitApply(object))));
    }
    assert_eq!(
        events(&updates),
        Vec::<String>::new(),
        "buffered until InitDone"
    );
    let updates = store.on_watched("Service", event(Event::InitDone));
    assert_eq!(
        events(&updates),
        [
            "Delete Service/app/b",
            "Apply Service/app/a",
            "Apply Service/app/c"
        ]
    );
    // The route was not touched; an unchanged relist sends nothing.
    store.on_watched("HTTPRoute", event(Event::Init));
    store.on_watched("HTTPRoute", event(Event::InitApply(route("r", "/"))));
    let updates = store.on_watched("HTTPRoute", event(Event::InitDone));
    assert_eq!(events(&updates), Vec::<String>::new());
}

#[test]
fn an_invalid_object_is_a_problem_and_keeps_its_last_good_content() {
    let mut store = listed();
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(route("r", "/v2"))));
    assert_eq!(events(&updates), ["Apply HTTPRoute/app/r"]);
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(broken_route("r"))));
    assert_eq!(
        events(&updates),
        Vec::<String>::new(),
        "last good content stays"
    );
    assert_eq!(
        problems(&updates),
        Some(vec!["HTTPRoute/app/r".to_string()])
    );
    // Through a relist too: still invalid, still kept, still a problem.
    store.on_watched("HTTPRoute", event(Event::Init));
    store.on_watched("HTTPRoute", event(Event::InitApply(broken_route("r"))));
    let updates = store.on_watched("HTTPRoute", event(Event::InitDone));
    assert_eq!(events(&updates), Vec::<String>::new());
    assert_eq!(
        problems(&updates),
        None,
        "unchanged problems are not sent again"
    );
    // Fixed: applied, problem gone.
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(route("r", "/v3"))));
    assert_eq!(events(&updates), ["Apply HTTPRoute/app/r"]);
    assert_eq!(problems(&updates), Some(vec![]));
    // Deleting an invalid object clears its problem.
    store.on_watched("HTTPRoute", event(Event::Apply(broken_route("bad"))));
    let updates = store.on_watched("HTTPRoute", event(Event::Delete(broken_route("bad"))));
    assert_eq!(
        events(&updates),
        Vec::<String>::new(),
        "it never had content"
    );
    assert_eq!(problems(&updates), Some(vec![]));
}

#[test]
fn an_absent_kind_counts_as_listed_and_a_watch_error_is_shown_until_the_next_event() {
    let mut store = Store::new(["Service", "TLSRoute"], None);
    let updates = store.on_watched("TLSRoute", Watched::Error("403 forbidden".to_string()));
    assert_eq!(
        problems(&updates),
        Some(vec!["kubernetes TLSRoute".to_string()])
    );
    store.on_watched("Service", event(Event::Init));
    store.on_watched("Service", event(Event::InitApply(service("a", 80))));
    let updates = store.on_watched("Service", event(Event::InitDone));
    assert_eq!(
        events(&updates),
        Vec::<String>::new(),
        "TLSRoute not listed yet"
    );
    let updates = store.on_watched("TLSRoute", Watched::Absent);
    assert_eq!(
        events(&updates),
        ["Init", "InitApply Service/app/a", "InitDone"]
    );
    assert_eq!(problems(&updates), Some(vec![]));
}

#[test]
fn cluster_scoped_ids_have_no_namespace() {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}});
    assert_eq!(
        super::store::unit_id("Namespace", &namespace),
        "Namespace/app"
    );
    assert_eq!(
        super::store::unit_id("Service", &service("a", 80)),
        "Service/app/a"
    );
}

#[test]
fn a_status_only_write_is_not_a_change() {
    let mut store = listed();
    // The agent's own status write: new resourceVersion and status, same spec.
    let mut written = route("r", "/");
    written["metadata"]["resourceVersion"] = json!("7");
    written["status"] = json!({"parents": []});
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(written)));
    assert_eq!(events(&updates), Vec::<String>::new());
    // A spec change still is.
    let mut changed = route("r", "/v2");
    changed["metadata"]["resourceVersion"] = json!("8");
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(changed)));
    assert_eq!(events(&updates), ["Apply HTTPRoute/app/r"]);
}

#[test]
fn problems_that_keep_their_object_do_not_hold_it_back() {
    let mut store = Store::new(["Service", "HTTPRoute", "Gateway"], None);
    for kind in ["Service", "HTTPRoute", "Gateway"] {
        store.on_watched(kind, event(Event::Init));
        store.on_watched(kind, event(Event::InitDone));
    }
    // One valid rule and one invalid one: applied (the invalid rule is dropped and reported
    // PartiallyInvalid by programming), the problem listed.
    let mut partly = route("r", "/ok");
    partly["spec"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"matches": [{"path": {"value": "no-leading-slash"}}]}));
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(partly)));
    assert_eq!(events(&updates), ["Apply HTTPRoute/app/r"]);
    assert_eq!(
        problems(&updates),
        Some(vec!["HTTPRoute/app/r".to_string()])
    );
    // A Gateway with an HTTP and a TCP listener exists (the TCP listener gets
    // UnsupportedProtocol), in a relist too.
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "app"},
        "spec": {"gatewayClassName": "meridian", "listeners": [
            {"name": "web", "port": 80, "protocol": "HTTP"},
            {"name": "db", "port": 5432, "protocol": "TCP"}
        ]}
    });
    let updates = store.on_watched("Gateway", event(Event::Apply(gateway.clone())));
    assert_eq!(events(&updates), ["Apply Gateway/app/gw"]);
    store.on_watched("Gateway", event(Event::Init));
    store.on_watched("Gateway", event(Event::InitApply(gateway)));
    let updates = store.on_watched("Gateway", event(Event::InitDone));
    assert_eq!(events(&updates), Vec::<String>::new(), "unchanged");
    assert_eq!(problems(&updates), None, "still the same problems");
    // A later fatal problem keeps the last good content.
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(broken_route("r"))));
    assert_eq!(events(&updates), Vec::<String>::new());
    // Fixed completely: its problems go.
    let updates = store.on_watched("HTTPRoute", event(Event::Apply(route("r", "/v2"))));
    assert_eq!(events(&updates), ["Apply HTTPRoute/app/r"]);
    assert_eq!(problems(&updates), Some(vec!["Gateway/app/gw".to_string()]));
}
