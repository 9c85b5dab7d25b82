//! Status write-back of `meridian agent --kubernetes`, against the stand-in API server
//! ([`meridian_tests::kubeapi`]) with real agent, gateway and echo processes: the Gateway,
//! its GatewayClass and its routes get the conditions the agent computes, written with
//! server-side apply (Gateway, GatewayClass) or a resourceVersion-guarded merge patch that
//! keeps other controllers' entries (routes' atomic `status.parents`); observedGeneration
//! follows the spec, lastTransitionTime only moves on a status change, nothing is rewritten
//! while nothing changes, Meridian's route entries go with their Gateway, and each condition
//! change is a Kubernetes Event on its object.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_tests::http::{client, get_host, send_json};
use meridian_tests::kubeapi::FakeKubeApi;
use meridian_tests::wait::eventually;
use reqwest::Method;
use serde_json::{Value, json};

use crate::meridian_bin;

const CONTROLLER: &str = "meridian.dev/gateway-controller";
const OTHER_CONTROLLER: &str = "example.net/other-controller";

fn route(name: &str, path: &str, backend: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "app"},
        "spec": {
            "parentRefs": [{"name": "gw"}, {"name": "elsewhere"}],
            "hostnames": [format!("{name}.test")],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": backend, "port": 8080}]
            }]
        }
    })
}

/// The GatewayClass, Namespace, Gateway (HTTP on `port`), the echo Service and its
/// EndpointSlice.
fn base(api: &FakeKubeApi, port: u16, echo: SocketAddr) {
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "meridian"},
        "spec": {"controllerName": CONTROLLER}
    }));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "other"},
        "spec": {"controllerName": OTHER_CONTROLLER}
    }));
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "app"},
        "spec": {
            "gatewayClassName": "meridian",
            "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]
        }
    }));
    // Another controller's Gateway: the agent neither programs nor writes it.
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "elsewhere", "namespace": "app"},
        "spec": {
            "gatewayClassName": "other",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]
        }
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "echo", "namespace": "app"},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": echo.port()}]}
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-abcde", "namespace": "app",
                     "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": echo.port()}]
    }));
}

/// The condition of `type_` in a `conditions` list.
fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// The `status.parents` entry of `controller` for the Gateway `gateway`.
fn parent<'a>(route: &'a Value, controller: &str, gateway: &str) -> &'a Value {
    route["status"]["parents"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|p| p["controllerName"] == controller && p["parentRef"]["name"] == gateway)
        })
        .unwrap_or(&Value::Null)
}

/// Waits until the stored object `kind app/name` satisfies `check`; returns it.
async fn stored(
    api: &FakeKubeApi,
    what: &str,
    kind: &str,
    name: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let namespace = if kind == "GatewayClass" { "" } else { "app" };
    eventually(what, Duration::from_secs(20), || async {
        match api.get(kind, namespace, name) {
            Some(object) if check(&object) => Ok(object),
            Some(object) => Err(format!("{object}")),
            None => Err("no such object".to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_status_back_to_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start().await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    let client = client();

    let (_echo, echo) = meridian_tests::process::start_echo(meridian_bin(), dir.path(), "echo-1");
    let port = meridian_tests::net::free_port("127.0.0.1".parse().unwrap());
    let gateway = SocketAddr::from(([127, 0, 0, 1], port));
    base(&api, port, echo);
    // `web` also names another controller's Gateway, whose controller wrote its entry.
    let mut web = route("web", "/", "echo");
    web["status"] = json!({"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "namespace": "app", "name": "elsewhere"},
        "controllerName": OTHER_CONTROLLER,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "observedGeneration": 1,
                        "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    }]});
    api.apply(web);
    api.apply(route("broken", "/", "missing"));

    let (agent, _gateway, admin) = crate::kube_source::start_kube_agent_and_gateway(
        dir.path(),
        &kubeconfig,
        &["--cluster", "east"],
    );
    eventually("web.test is served", Duration::from_secs(20), || async {
        match get_host(&client, gateway, "web.test", "/").await? {
            (200, body) if body["pod"] == "echo-1" => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;

    // The Gateway: Accepted and Programmed for its generation, its listener with both
    // routes attached (a route with a missing backend is still accepted), its address.
    let gw = stored(&api, "the Gateway's status", "Gateway", "gw", |gw| {
        condition(&gw["status"]["conditions"], "Programmed")["status"] == "True"
            && gw["status"]["listeners"][0]["attachedRoutes"] == 2
    })
    .await;
    let conditions = &gw["status"]["conditions"];
    assert_eq!(gw["metadata"]["generation"], 1, "{gw}");
    for type_ in ["Accepted", "Programmed"] {
        let c = condition(conditions, type_);
        assert_eq!(c["status"], "True", "{type_}: {gw}");
        assert_eq!(c["reason"], type_, "{type_}: {gw}");
        assert_eq!(c["observedGeneration"], 1, "{type_}: {gw}");
        assert!(
            c["lastTransitionTime"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{gw}"
        );
    }
    let listener = &gw["status"]["listeners"][0];
    assert_eq!(listener["name"], "http", "{gw}");
    assert_eq!(
        listener["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
               {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}]),
        "{gw}"
    );
    assert_eq!(
        condition(&listener["conditions"], "Accepted")["status"],
        "True",
        "{gw}"
    );
    assert_eq!(
        gw["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "127.0.0.1"}]),
        "{gw}"
    );
    // The other controller's Gateway is left alone.
    let elsewhere = api.get("Gateway", "app", "elsewhere").unwrap();
    assert!(elsewhere.get("status").is_none(), "{elsewhere}");

    // The GatewayClass it owns is accepted; the other one is not touched.
    let class = stored(
        &api,
        "the GatewayClass's status",
        "GatewayClass",
        "meridian",
        |c| condition(&c["status"]["conditions"], "Accepted")["status"] == "True",
    )
    .await;
    assert_eq!(
        condition(&class["status"]["conditions"], "Accepted")["observedGeneration"],
        1
    );
    assert!(
        api.get("GatewayClass", "", "other")
            .unwrap()
            .get("status")
            .is_none()
    );

    // The routes: our entry per parentRef to our Gateway, the other controller's entry kept.
    let web = stored(&api, "web's status", "HTTPRoute", "web", |r| {
        !parent(r, CONTROLLER, "gw").is_null()
    })
    .await;
    let ours = parent(&web, CONTROLLER, "gw");
    assert_eq!(
        ours["parentRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
               "namespace": "app", "name": "gw"}),
        "{web}"
    );
    for type_ in ["Accepted", "ResolvedRefs"] {
        let c = condition(&ours["conditions"], type_);
        assert_eq!(c["status"], "True", "{type_}: {web}");
        assert_eq!(c["observedGeneration"], 1, "{type_}: {web}");
    }
    assert!(parent(&web, CONTROLLER, "elsewhere").is_null(), "{web}");
    let theirs = parent(&web, OTHER_CONTROLLER, "elsewhere");
    assert_eq!(
        condition(&theirs["conditions"], "Accepted")["lastTransitionTime"],
        "2020-01-01T00:00:00Z",
        "the other controller's entry is kept: {web}"
    );
    let broken = stored(&api, "broken's status", "HTTPRoute", "broken", |r| {
        !parent(r, CONTROLLER, "gw").is_null()
    })
    .await;
    let resolved = condition(
        &parent(&broken, CONTROLLER, "gw")["conditions"],
        "ResolvedRefs",
    );
    assert_eq!(resolved["status"], "False", "{broken}");
    assert_eq!(resolved["reason"], "BackendNotFound", "{broken}");

    // How it was written: apply for the Gateway and GatewayClass, merge patches guarded by
    // the resourceVersion for the routes, all as this cluster's agent.
    let patches = api.patches();
    assert!(
        patches.iter().all(|p| p.code == 200 || p.code == 409),
        "{patches:#?}"
    );
    for p in &patches {
        assert_eq!(p.subresource, "status", "{p:?}");
        assert_eq!(
            p.field_manager.as_deref(),
            Some("meridian-agent/east"),
            "{p:?}"
        );
        match p.kind.as_str() {
            "Gateway" | "GatewayClass" => {
                assert_eq!(p.content_type, "application/apply-patch+yaml", "{p:?}");
                assert!(p.force, "{p:?}");
            }
            _ => {
                assert_eq!(p.content_type, "application/merge-patch+json", "{p:?}");
                assert!(p.body["metadata"]["resourceVersion"].is_string(), "{p:?}");
            }
        }
    }

    // Quiet: the agent's own writes come back as MODIFIED events and cause no more writes.
    // A pass already pending (debounce, a retry's backoff) may still land: wait until there
    // has been no write for a second (a write loop never gets there), then watch for two.
    let settle = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let count = api.patches().len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if api.patches().len() == count {
            break;
        }
        assert!(
            std::time::Instant::now() < settle,
            "status writes never stop: {:#?}",
            &api.patches()[count..]
        );
    }
    let before = api.patches().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet = api.patches();
    assert_eq!(
        quiet.len(),
        before,
        "rewrites while nothing changed: {:#?}",
        &quiet[before..]
    );

    // A spec change (generation 2) moves observedGeneration; the unchanged condition keeps
    // its lastTransitionTime.
    let accepted_since = condition(&ours["conditions"], "Accepted")["lastTransitionTime"].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.apply(route("web", "/v2", "echo"));
    let web = stored(
        &api,
        "web's observedGeneration 2",
        "HTTPRoute",
        "web",
        |r| {
            condition(&parent(r, CONTROLLER, "gw")["conditions"], "Accepted")["observedGeneration"]
                == 2
        },
    )
    .await;
    assert_eq!(web["metadata"]["generation"], 2, "{web}");
    let accepted = condition(&parent(&web, CONTROLLER, "gw")["conditions"], "Accepted");
    assert_eq!(accepted["lastTransitionTime"], accepted_since, "{web}");
    assert!(
        !parent(&web, OTHER_CONTROLLER, "elsewhere").is_null(),
        "{web}"
    );

    // A status change moves lastTransitionTime: the broken route's backend appears.
    let broken_since = resolved["lastTransitionTime"].clone();
    api.apply(route("broken", "/", "echo"));
    let broken = stored(&api, "broken resolves", "HTTPRoute", "broken", |r| {
        condition(&parent(r, CONTROLLER, "gw")["conditions"], "ResolvedRefs")["status"] == "True"
    })
    .await;
    let resolved = condition(
        &parent(&broken, CONTROLLER, "gw")["conditions"],
        "ResolvedRefs",
    );
    assert_eq!(resolved["reason"], "ResolvedRefs", "{broken}");
    assert_ne!(resolved["lastTransitionTime"], broken_since, "{broken}");

    // Each condition change was an Event on its object (what `kubectl describe` lists): a
    // Warning while the route's backend was missing, a Normal one once it resolved, and the
    // Gateway's programming.
    let event =
        |kind: &'static str, name: &'static str, type_: &'static str, reason: &'static str| {
            let api = &api;
            move || async move {
                api.events()
                    .into_iter()
                    .find(|e| {
                        e["regarding"]["kind"] == kind
                            && e["regarding"]["name"] == name
                            && e["type"] == type_
                            && e["reason"] == reason
                    })
                    .ok_or_else(|| format!("events so far: {:#?}", api.events()))
            }
        };
    let missing = eventually(
        "a Warning event for the missing backend",
        Duration::from_secs(10),
        event("HTTPRoute", "broken", "Warning", "BackendNotFound"),
    )
    .await;
    assert_eq!(missing["action"], "ResolvedRefs", "{missing}");
    assert_eq!(missing["reportingController"], CONTROLLER, "{missing}");
    assert_eq!(missing["metadata"]["namespace"], "app", "{missing}");
    assert!(
        missing["regarding"]["uid"]
            .as_str()
            .is_some_and(|uid| !uid.is_empty()),
        "kubectl describe finds events by uid: {missing}"
    );
    let note = missing["note"].as_str().unwrap_or("");
    assert!(
        note.starts_with("parent ") && note.contains("gw") && note.contains("ResolvedRefs=False"),
        "{missing}"
    );
    eventually(
        "a Normal event once the backend resolves",
        Duration::from_secs(10),
        event("HTTPRoute", "broken", "Normal", "ResolvedRefs"),
    )
    .await;
    eventually(
        "a Normal event for the programmed Gateway",
        Duration::from_secs(10),
        event("Gateway", "gw", "Normal", "Programmed"),
    )
    .await;

    // The Gateway goes: Meridian's route entries for it go too, the other controller's stay.
    assert!(api.delete("Gateway", "app", "gw"));
    let web = stored(
        &api,
        "web loses Meridian's entry",
        "HTTPRoute",
        "web",
        |r| parent(r, CONTROLLER, "gw").is_null(),
    )
    .await;
    assert!(
        !parent(&web, OTHER_CONTROLLER, "elsewhere").is_null(),
        "{web}"
    );

    // The writes are counted.
    let (code, _) = send_json(&client, Method::GET, &format!("{admin}/status"), None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("meridian_agent_status_writes_total{kind=\"Gateway\",result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_agent_events_total{result=\"ok\"}")
            && !metrics.contains("meridian_agent_events_total{result=\"failed\"}"),
        "{metrics}"
    );
    // Nothing else wrote to these objects, so no write conflicted or failed.
    let log = std::fs::read_to_string(agent.spec().log_file()).unwrap_or_default();
    assert!(!log.contains("status write failed"), "{log}");
    assert!(log.contains("status written"), "{log}");
}

/// Problems that keep their object are status, not a reason to hold the object back: a
/// Gateway with an HTTP and a TCP listener exists and serves its HTTP listener, the TCP one
/// gets `Accepted=False/UnsupportedProtocol`; a route with one invalid rule serves its valid
/// one and says `PartiallyInvalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_listener_and_an_invalid_rule_are_status_not_a_held_back_object() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start().await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    let client = client();
    let (_echo, echo) = meridian_tests::process::start_echo(meridian_bin(), dir.path(), "echo-1");
    let ports = meridian_tests::net::free_ports("127.0.0.1".parse().unwrap(), 2);
    let gateway = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    base(&api, ports[0], echo);
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "app"},
        "spec": {
            "gatewayClassName": "meridian",
            "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            "listeners": [
                {"name": "http", "port": ports[0], "protocol": "HTTP"},
                {"name": "db", "port": ports[1], "protocol": "TCP"}
            ]
        }
    }));
    let mut partly = route("partly", "/ok", "echo");
    partly["spec"]["rules"].as_array_mut().unwrap().push(
        json!({"matches": [{"path": {"type": "PathPrefix", "value": "no-slash"}}],
                     "backendRefs": [{"name": "echo", "port": 8080}]}),
    );
    api.apply(partly);

    let (_agent, _gateway, _admin) =
        crate::kube_source::start_kube_agent_and_gateway(dir.path(), &kubeconfig, &[]);
    eventually(
        "the valid rule is served on the HTTP listener",
        Duration::from_secs(20),
        || async {
            match get_host(&client, gateway, "partly.test", "/ok").await? {
                (200, body) if body["pod"] == "echo-1" => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;

    let gw = stored(&api, "the Gateway's status", "Gateway", "gw", |gw| {
        gw["status"]["listeners"]
            .as_array()
            .is_some_and(|l| l.len() == 2)
    })
    .await;
    let accepted = condition(&gw["status"]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True", "{gw}");
    assert_eq!(accepted["reason"], "ListenersNotValid", "{gw}");
    let listener = |name: &str| {
        gw["status"]["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let db = listener("db");
    let db_accepted = condition(&db["conditions"], "Accepted");
    assert_eq!(db_accepted["status"], "False", "{gw}");
    assert_eq!(db_accepted["reason"], "UnsupportedProtocol", "{gw}");
    assert_eq!(
        condition(&db["conditions"], "Programmed")["status"],
        "False",
        "{gw}"
    );
    let http = listener("http");
    assert_eq!(
        condition(&http["conditions"], "Programmed")["status"],
        "True",
        "{gw}"
    );

    let partly = stored(&api, "partly's status", "HTTPRoute", "partly", |r| {
        !parent(r, CONTROLLER, "gw").is_null()
    })
    .await;
    let ours = &parent(&partly, CONTROLLER, "gw")["conditions"];
    assert_eq!(condition(ours, "Accepted")["status"], "True", "{partly}");
    let partial = condition(ours, "PartiallyInvalid");
    assert_eq!(partial["status"], "True", "{partly}");
    assert!(
        partial["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Dropped Rule")),
        "{partly}"
    );
}
