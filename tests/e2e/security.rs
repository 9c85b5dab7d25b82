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

/// Starts a gateway subscribing to `agent` for `infra/gw`, with `tls_args`; returns it and its
/// admin URL.
fn gateway(dir: &Path, name: &str, agent: &str, tls_args: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "gateway",
        "--agent",
        agent,
        "--gateway",
        "infra/gw",
        "--instance",
        name,
    ];
    args.extend_from_slice(tls_args);
    let (proc, ready) = Proc::start_ready(
        ProcSpec::new(name, meridian_bin(), dir, &args),
        Duration::from_secs(30),
    );
    let admin = format!("http://{}", ready["admin"].as_str().expect("admin"));
    (proc, admin)
}

async fn ready_status(client: &reqwest::Client, admin: &str) -> u16 {
    match client.get(format!("{admin}/ready")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_agent_configures_only_gateways_with_a_certificate_from_its_ca() {
    // Gateways receive their listeners' private keys from the agent, so the ConfigDiscovery
    // channel must be private and only for the cluster's own gateways.
    meridian_tests::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new("gateways");
    let ca_file = pki.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (agent_cert, agent_key) = ca.leaf("agent", &["agent.meridian"]).write(&pki, "agent");
    let (gw_cert, gw_key) = ca.leaf("gw", &["gateway.meridian"]).write(&pki, "gw");
    let (rogue_cert, rogue_key) = Ca::new("rogue")
        .leaf("gw", &["gateway.meridian"])
        .write(&pki, "rogue");

    let config_dir = dir.path().join("agent-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let port = meridian_tests::net::free_port("127.0.0.1".parse().unwrap());
    std::fs::write(
        config_dir.join("gateway.yaml"),
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
"
        ),
    )
    .unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (ca_file, agent_cert, agent_key) = (path(&ca_file), path(&agent_cert), path(&agent_key));
    let (_agent, ready) = Proc::start_ready(
        ProcSpec::new(
            "agent",
            meridian_bin(),
            dir.path(),
            &[
                "agent",
                "--config-dir",
                &path(&config_dir),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--gateway-tls-cert",
                &agent_cert,
                "--gateway-tls-key",
                &agent_key,
                "--gateway-client-ca",
                &ca_file,
            ],
        ),
        Duration::from_secs(30),
    );
    let grpc = ready["grpc"].as_str().expect("grpc").to_string();
    let plain_url = format!("http://{grpc}");
    let client = reqwest::Client::new();

    // The cluster's gateway, with a certificate from the CA, gets its config.
    let (gw_cert, gw_key) = (path(&gw_cert), path(&gw_key));
    let (_good, good_admin) = gateway(
        dir.path(),
        "gw-good",
        &plain_url,
        &[
            "--agent-ca",
            &ca_file,
            "--agent-tls-cert",
            &gw_cert,
            "--agent-tls-key",
            &gw_key,
            "--agent-server-name",
            "agent.meridian",
        ],
    );
    eventually(
        "the gateway with a CA certificate is configured",
        Duration::from_secs(20),
        || async {
            match ready_status(&client, &good_admin).await {
                200 => Ok(()),
                other => Err(format!("/ready answered {other}")),
            }
        },
    )
    .await;

    // One with a certificate from another CA, one without a certificate and one speaking
    // plain text get nothing.
    let (rogue_cert, rogue_key) = (path(&rogue_cert), path(&rogue_key));
    let tls_only = [
        "--agent-ca",
        ca_file.as_str(),
        "--agent-server-name",
        "agent.meridian",
    ];
    let rogue_args = [
        &tls_only[..],
        &[
            "--agent-tls-cert",
            &rogue_cert,
            "--agent-tls-key",
            &rogue_key,
        ],
    ]
    .concat();
    let refused = [
        gateway(dir.path(), "gw-rogue", &plain_url, &rogue_args),
        gateway(dir.path(), "gw-anonymous", &plain_url, &tls_only),
        gateway(dir.path(), "gw-plain", &plain_url, &[]),
    ];
    // Each has been refused at least twice (reconnects start at 100 ms), and is still not
    // configured.
    for (proc, admin) in &refused {
        let name = &proc.spec().name;
        eventually(
            &format!("{name} to log two refused subscriptions"),
            Duration::from_secs(30),
            || async {
                let log = std::fs::read_to_string(proc.spec().log_file()).unwrap_or_default();
                if log.matches("agent subscription failed").count() >= 2 {
                    Ok(())
                } else {
                    Err(format!("log so far:\n{log}"))
                }
            },
        )
        .await;
        assert_eq!(
            ready_status(&client, admin).await,
            503,
            "{name} must not be configured"
        );
    }
}
