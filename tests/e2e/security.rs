//! Transport security with real processes: a `meridian hub` with gRPC mutual TLS and admin
//! tokens, and `meridian agent`s with certificates from the test's own CA. The agent of a
//! cluster gets in; an agent whose certificate names another cluster is refused with
//! PERMISSION_DENIED; a certificate from another CA does not get past the handshake.

use std::path::Path;
use std::time::Duration;

use meridian_tests::http::send_json;
use meridian_tests::pki::Ca;
use meridian_tests::wait::eventually;
use meridian_tests::{Proc, ProcSpec};
use reqwest::Method;
use serde_json::{Value, json};

use crate::meridian_bin;

const TOKEN: &str = "ops-token-0123456789abcdef";

/// Starts an agent for `cluster` presenting `cert`/`key`, trusting `ca`.
fn agent(dir: &Path, name: &str, cluster: &str, grpc: &str, files: [&Path; 3]) -> (Proc, String) {
    let [ca, cert, key] = files.map(|p| p.to_str().expect("utf-8 path").to_string());
    let config_dir = dir.join(format!("{name}-config"));
    std::fs::create_dir_all(&config_dir).unwrap();
    let hub = format!("https://{grpc}");
    let spec = ProcSpec::new(
        name,
        meridian_bin(),
        dir,
        &[
            "agent",
            "--cluster",
            cluster,
            "--config-dir",
            config_dir.to_str().unwrap(),
            "--hub",
            &hub,
            "--hub-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--hub-server-name",
            "hub.meridian",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let (proc, ready) = Proc::start_ready(spec, Duration::from_secs(30));
    let admin = format!("http://{}", ready["admin"].as_str().expect("admin"));
    (proc, admin)
}

/// Waits until the agent's hub connection state satisfies `check`; returns it.
async fn agent_hub(
    client: &reqwest::Client,
    admin: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, Duration::from_secs(20), || async {
        let (status, body) =
            send_json(client, Method::GET, &format!("{admin}/status"), None).await?;
        let hub = body["hub"].clone();
        if status == 200 && check(&hub) {
            Ok(hub)
        } else {
            Err(format!("{status} {hub}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_hub_admits_only_the_agent_its_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new("meridian test CA");
    let ca_file = pki.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (hub_cert, hub_key) = ca.leaf("hub-1", &["hub.meridian"]).write(&pki, "hub");
    let (us_cert, us_key) = ca.leaf("us-east", &["us-east"]).write(&pki, "us-east");
    let (foreign_cert, foreign_key) = Ca::new("someone else's CA")
        .leaf("us-east", &["us-east"])
        .write(&pki, "foreign");
    let tokens = pki.join("tokens");
    std::fs::write(&tokens, format!("ops {TOKEN}\n")).unwrap();

    let data = dir.path().join("hub-data");
    let spec = ProcSpec::new(
        "hub",
        meridian_bin(),
        dir.path(),
        &[
            "hub",
            "--id",
            "1",
            "--data-dir",
            data.to_str().unwrap(),
            "--grpc",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--dns",
            "127.0.0.1:0",
            "--tls-cert",
            hub_cert.to_str().unwrap(),
            "--tls-key",
            hub_key.to_str().unwrap(),
            "--tls-ca",
            ca_file.to_str().unwrap(),
            "--admin-token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let (_hub, ready) = Proc::start_ready(spec, Duration::from_secs(30));
    let admin = format!("http://{}", ready["admin"].as_str().unwrap());
    let grpc = ready["grpc"].as_str().unwrap().to_string();
    let client = meridian_tests::http::client();

    // The admin API wants the token.
    let (status, body) = send_json(&client, Method::GET, &format!("{admin}/v1/clusters"), None)
        .await
        .unwrap();
    assert_eq!(status, 401, "{body}");
    let authed = |method: Method, path: &str, body: Option<Value>| {
        let client = client.clone();
        let url = format!("{admin}{path}");
        async move {
            let mut request = client.request(method, url).bearer_auth(TOKEN);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            Ok::<_, String>((status, value))
        }
    };
    for (name, region) in [("us-east", "us"), ("eu-west", "eu")] {
        let (status, body) = eventually("cluster PUT", Duration::from_secs(10), || {
            authed(
                Method::PUT,
                &format!("/v1/clusters/{name}"),
                Some(json!({"region": region})),
            )
        })
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // The us-east agent with its own certificate: connected, and its reports arrive (its
    // cluster has no gateway yet, which is what the committed verdict says).
    let (_us, us_admin) = agent(
        dir.path(),
        "us-east-agent",
        "us-east",
        &grpc,
        [&ca_file, &us_cert, &us_key],
    );
    agent_hub(&client, &us_admin, "us-east connected", |hub| {
        hub["state"] == "connected"
    })
    .await;
    eventually(
        "us-east reports committed",
        Duration::from_secs(20),
        || async {
            let (_, cluster) = authed(Method::GET, "/v1/clusters/us-east", None).await?;
            let reason = cluster["health"]["reason"].as_str().unwrap_or_default();
            if reason.contains("the agent reports no gateways") {
                Ok(())
            } else {
                Err(cluster.to_string())
            }
        },
    )
    .await;

    // The same certificate used to register as eu-west: PERMISSION_DENIED naming both.
    let (_impostor, impostor_admin) = agent(
        dir.path(),
        "impostor",
        "eu-west",
        &grpc,
        [&ca_file, &us_cert, &us_key],
    );
    let hub = agent_hub(&client, &impostor_admin, "the impostor refused", |hub| {
        hub["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("PermissionDenied"))
    })
    .await;
    let error = hub["last_error"].as_str().unwrap();
    assert!(
        error.contains("us-east") && error.contains("eu-west"),
        "{error}"
    );
    assert_ne!(hub["state"], "connected");

    // A certificate from another CA does not get past the TLS handshake.
    let (_foreign, foreign_admin) = agent(
        dir.path(),
        "foreign",
        "us-east",
        &grpc,
        [&ca_file, &foreign_cert, &foreign_key],
    );
    let hub = agent_hub(
        &client,
        &foreign_admin,
        "the foreign agent refused",
        |hub| hub["last_error"].as_str().is_some_and(|e| !e.is_empty()),
    )
    .await;
    assert_ne!(hub["state"], "connected", "{hub}");
    let error = hub["last_error"].as_str().unwrap();
    assert!(
        !error.contains("PermissionDenied"),
        "refused before any call: {error}"
    );
}
