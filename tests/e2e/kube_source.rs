//! `meridian agent --kubernetes` against a stand-in Kubernetes API server
//! ([`meridian_tests::kubeapi`]): the agent lists and watches the objects, a real
//! `meridian gateway` subscribed to it serves them to a real echo backend, and changes,
//! deletions, invalid objects, cut watch streams and 410 Gone relists all reach the traffic.

use std::net::SocketAddr;
use std::time::Duration;

use meridian_tests::http::{client, get_host, send_json};
use meridian_tests::kubeapi::FakeKubeApi;
use meridian_tests::wait::eventually;
use meridian_tests::{Proc, ProcSpec};
use reqwest::Method;
use serde_json::{Value, json};

use crate::meridian_bin;

/// An agent watching the API at `kubeconfig` (with `extra` arguments) and a gateway it
/// configures for `app/gw`; returns both processes and the agent's admin URL.
pub(crate) fn start_kube_agent_and_gateway(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> (Proc, Proc, String) {
    let mut args = vec!["agent", "--kubernetes", "--kubeconfig"];
    args.push(kubeconfig.to_str().unwrap());
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let (agent, ready) = Proc::start_ready(
        ProcSpec::new("agent", meridian_bin(), dir, &args),
        Duration::from_secs(30),
    );
    let grpc = format!("http://{}", ready["grpc"].as_str().unwrap());
    let admin = format!("http://{}", ready["admin"].as_str().unwrap());
    let (gateway, _) = Proc::start_ready(
        ProcSpec::new(
            "gateway",
            meridian_bin(),
            dir,
            &[
                "gateway",
                "--agent",
                &grpc,
                "--gateway",
                "app/gw",
                "--instance",
                "gw-1",
            ],
        ),
        Duration::from_secs(30),
    );
    (agent, gateway, admin)
}

fn route(name: &str, host: &str, path: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "app"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": [host],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": "echo", "port": 8080}]
            }]
        }
    })
}

/// Namespace, Gateway (HTTP on `port`), the echo Service and its EndpointSlice.
fn base(api: &FakeKubeApi, port: u16, echo: SocketAddr) {
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

/// Waits until `GET path` with `host` through the gateway answers `want` (and, for 200, came
/// from the echo backend).
async fn serves(client: &reqwest::Client, gateway: SocketAddr, host: &str, path: &str, want: u16) {
    eventually(
        &format!("{host}{path} answers {want}"),
        Duration::from_secs(20),
        || async {
            let (status, body) = get_host(client, gateway, host, path).await?;
            if status == want && (want != 200 || body["pod"] == "echo-1") {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
}

async fn status(client: &reqwest::Client, admin: &str) -> Result<Value, String> {
    let (code, body) = send_json(client, Method::GET, &format!("{admin}/status"), None).await?;
    if code == 200 {
        Ok(body)
    } else {
        Err(format!("/status answered {code}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_watching_kubernetes_programs_a_gateway_through_changes_and_relists() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start().await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    let client = client();

    let (_echo, echo) = meridian_tests::process::start_echo(meridian_bin(), dir.path(), "echo-1");
    let port = meridian_tests::net::free_port("127.0.0.1".parse().unwrap());
    let gateway = SocketAddr::from(([127, 0, 0, 1], port));
    base(&api, port, echo);
    api.apply(route("web", "web.test", "/v1"));
    api.apply(route("other", "other.test", "/"));

    let (agent, _gateway, admin) = start_kube_agent_and_gateway(dir.path(), &kubeconfig, &[]);

    // Created in the API → served.
    serves(&client, gateway, "web.test", "/v1/a", 200).await;
    serves(&client, gateway, "other.test", "/", 200).await;
    let first = status(&client, &admin).await.unwrap();
    assert_eq!(first["source"]["location"], "kubernetes", "{first}");
    assert_eq!(first["source"]["initialized"], true, "{first}");
    assert_eq!(first["source"]["objects"], 6, "{first}");
    // TLSRoute is not served by this API server (404): no objects, no problem.
    assert_eq!(first["source"]["problems"], json!([]), "{first}");

    // MODIFIED → the new path is served, the old one is not.
    api.apply(route("web", "web.test", "/v2"));
    serves(&client, gateway, "web.test", "/v2/a", 200).await;
    serves(&client, gateway, "web.test", "/v1/a", 404).await;

    // ADDED then DELETED over the watch.
    api.apply(route("tmp", "tmp.test", "/"));
    serves(&client, gateway, "tmp.test", "/", 200).await;
    assert!(api.delete("HTTPRoute", "app", "tmp"));
    serves(&client, gateway, "tmp.test", "/", 404).await;

    // An update validation drops (a type error) is reported on /status; the last good route
    // keeps serving.
    let mut broken = route("web", "web.test", "/v3");
    broken["spec"]["rules"][0]["matches"] = json!(7);
    api.apply(broken);
    let problems = eventually(
        "the invalid route is on /status",
        Duration::from_secs(20),
        || async {
            let body = status(&client, &admin).await?;
            let problems = body["source"]["problems"].clone();
            if problems.as_array().is_some_and(|p| !p.is_empty()) {
                Ok(problems)
            } else {
                Err(format!("no problems yet: {body}"))
            }
        },
    )
    .await;
    assert_eq!(problems[0]["source"], "HTTPRoute/app/web", "{problems}");
    assert!(
        problems[0]["text"].as_str().unwrap().contains("matches"),
        "{problems}"
    );
    assert_eq!(problems[0]["fatal"], true, "{problems}");
    serves(&client, gateway, "web.test", "/v2/a", 200).await;

    // An update whose only rule is invalid is applied as Kubernetes stored it: the rule is
    // dropped, the route rejected (no valid rule left), the problem listed but not fatal.
    api.apply(route("web", "web.test", "v3-without-slash"));
    serves(&client, gateway, "web.test", "/v2/a", 404).await;
    eventually(
        "the rule's problem is on /status, not fatal",
        Duration::from_secs(20),
        || async {
            let problems = status(&client, &admin).await?["source"]["problems"].clone();
            if problems[0]["source"] == "HTTPRoute/app/web" && problems[0]["fatal"] == false {
                Ok(())
            } else {
                Err(format!("{problems}"))
            }
        },
    )
    .await;

    // A watch stream the server cuts is resumed from the last version, without a relist.
    let (lists, watches) = (api.lists("HTTPRoute"), api.watches("HTTPRoute"));
    api.cut_watches(None);
    api.apply(route("web", "web.test", "/v4"));
    serves(&client, gateway, "web.test", "/v4/a", 200).await;
    assert!(api.watches("HTTPRoute") > watches, "watched again");
    assert_eq!(api.lists("HTTPRoute"), lists, "resumed without a relist");
    let after_cut = status(&client, &admin).await.unwrap();
    assert_eq!(after_cut["source"]["problems"], json!([]), "{after_cut}");

    // 410 Gone for one kind: only HTTPRoutes are relisted, and every other kind's objects
    // (the Gateway, Service, EndpointSlice) stay: both routes keep serving.
    let services = api.lists("Service");
    api.expire_history();
    api.cut_watches(Some("HTTPRoute"));
    eventually("HTTPRoutes relisted", Duration::from_secs(20), || async {
        if api.lists("HTTPRoute") > lists {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    serves(&client, gateway, "web.test", "/v4/a", 200).await;
    serves(&client, gateway, "other.test", "/", 200).await;
    assert_eq!(
        api.lists("Service"),
        services,
        "other kinds are not relisted"
    );

    // After a 410 on every kind (all watches cut after compaction), everything relists and
    // nothing is dropped; changes keep flowing.
    let lists = api.lists("Service");
    api.expire_history();
    api.cut_watches(None);
    eventually("all kinds relisted", Duration::from_secs(20), || async {
        if api.lists("Service") > lists && api.lists("EndpointSlice") > 1 {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    serves(&client, gateway, "other.test", "/", 200).await;
    assert!(api.delete("HTTPRoute", "app", "web"));
    serves(&client, gateway, "web.test", "/v4/a", 404).await;
    serves(&client, gateway, "other.test", "/", 200).await;
    let last = status(&client, &admin).await.unwrap();
    assert_eq!(last["source"]["objects"], 5, "{last}");
    assert_eq!(last["source"]["problems"], json!([]), "{last}");

    // A bookmark moves the watches' version on; a cut after it resumes from there (no
    // relist) and the next change still arrives.
    api.bookmark();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lists = api.lists("HTTPRoute");
    api.cut_watches(None);
    api.apply(route("web", "web.test", "/v5"));
    serves(&client, gateway, "web.test", "/v5/a", 200).await;
    assert_eq!(api.lists("HTTPRoute"), lists, "resumed without a relist");

    let log = std::fs::read_to_string(agent.spec().log_file()).unwrap_or_default();
    assert!(
        log.contains("not served by the API server"),
        "TLSRoute 404 is logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_needs_exactly_one_source() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (&["agent"][..], "--config-dir DIR"),
        (
            &["agent", "--kubernetes", "--config-dir", "."][..],
            "not both",
        ),
    ] {
        let output = tokio::process::Command::new(meridian_bin())
            .args(args)
            .current_dir(dir.path())
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_secret_type_restrict_what_the_agent_reads() {
    let dir = tempfile::tempdir().unwrap();
    let api = FakeKubeApi::start().await;
    let kubeconfig = api.write_kubeconfig(dir.path());
    let client = client();
    for namespace in ["app", "other"] {
        api.apply(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        );
        api.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "echo", "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 8080}]}
        }));
        for (name, type_) in [("cert", "kubernetes.io/tls"), ("token", "Opaque")] {
            api.apply(json!({
                "apiVersion": "v1", "kind": "Secret", "type": type_,
                "metadata": {"name": name, "namespace": namespace},
                "data": {"tls.crt": "eA==", "tls.key": "eA=="}
            }));
        }
    }
    let (_agent, ready) = Proc::start_ready(
        ProcSpec::new(
            "agent",
            meridian_bin(),
            dir.path(),
            &[
                "agent",
                "--kubernetes",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--namespace",
                "app",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ],
        ),
        Duration::from_secs(30),
    );
    let admin = format!("http://{}", ready["admin"].as_str().unwrap());
    let body = status(&client, &admin).await.unwrap();
    assert_eq!(
        body["source"]["location"], "kubernetes (namespace app)",
        "{body}"
    );
    assert_eq!(body["source"]["problems"], json!([]), "{body}");
    // Both Namespaces (cluster-scoped), app's Service and app's TLS Secret; nothing of
    // namespace `other`, and no Opaque Secret.
    assert_eq!(body["source"]["objects"], 4, "{body}");
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "late", "namespace": "other"},
        "spec": {"ports": [{"name": "http", "port": 8080}]}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "late", "namespace": "app"},
        "spec": {"ports": [{"name": "http", "port": 8080}]}
    }));
    eventually(
        "app's new Service is read",
        Duration::from_secs(20),
        || async {
            let body = status(&client, &admin).await?;
            match body["source"]["objects"].as_u64() {
                Some(5) => Ok(()),
                other => Err(format!("{other:?} objects: {body}")),
            }
        },
    )
    .await;
}
