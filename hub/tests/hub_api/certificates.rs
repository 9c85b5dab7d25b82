//! `/v1/certificates`: validation, redaction, audit, and delivery to agents in `SharedConfig`.

use serde_json::json;

use crate::pki::Ca;
use crate::support::{Admin, Agent, single};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_validated_redacted_and_pushed_to_agents() {
    let dir = tempfile::tempdir().unwrap();
    let hub = single(dir.path()).await;
    let admin = Admin::new(&hub);
    let ca = Ca::new("demo CA");
    let leaf = ca.leaf("*.demo.meridian.test", &["*.demo.meridian.test"]);
    let chain = format!("{}{}", leaf.cert, ca.pem);
    let secret_line = leaf.key.lines().nth(1).unwrap().to_string();
    let other = ca.leaf("other", &["other.test"]);
    let future = ca.leaf_not_yet_valid("*.demo.meridian.test", &["*.demo.meridian.test"]);
    let nameless = ca.leaf("app.demo.meridian.test", &[]);

    // Invalid bodies: 400 naming the field, never echoing the key.
    let cases = [
        (
            json!({"cert_chain_pem": chain, "private_key_pem": other.key}),
            "private_key_pem",
            "does not belong",
        ),
        (
            json!({"cert_chain_pem": "hello", "private_key_pem": leaf.key}),
            "cert_chain_pem",
            "no `-----BEGIN CERTIFICATE-----` block",
        ),
        (
            json!({"cert_chain_pem": chain, "private_key_pem": format!("x{}", leaf.key.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!!"))}),
            "private_key_pem",
            "",
        ),
        (
            json!({"cert_chain_pem": chain}),
            "private_key_pem",
            "missing field",
        ),
        (
            json!({"cert_chain_pem": chain, "private_key_pem": leaf.key, "namespace": "elsewhere"}),
            "namespace",
            "does not match",
        ),
        (
            json!({"cert_chain_pem": chain, "private_key_pem": leaf.key, "tls.key": "x"}),
            "",
            "unknown field",
        ),
        (
            json!({"cert_chain_pem": format!("{}{}", future.cert, ca.pem), "private_key_pem": future.key}),
            "cert_chain_pem",
            "not valid before 2100-01-01",
        ),
        (
            json!({"cert_chain_pem": format!("{}{}", nameless.cert, ca.pem), "private_key_pem": nameless.key}),
            "cert_chain_pem",
            "no DNS name",
        ),
    ];
    for (body, field, text) in cases {
        let (status, answer) = admin
            .put("/v1/certificates/meridian-system/demo-tls", &body)
            .await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(field) && error.contains(text), "{error}");
        assert!(!answer.to_string().contains(&secret_line), "{answer}");
    }
    let (status, _) = admin
        .put(
            "/v1/certificates/Bad_NS/demo-tls",
            &json!({"cert_chain_pem": chain, "private_key_pem": leaf.key}),
        )
        .await;
    assert_eq!(status, 400);

    // A valid certificate: stored, described (names, expiry, fingerprint), never its key.
    let put = admin
        .put_ok(
            "/v1/certificates/meridian-system/demo-tls",
            &json!({"cert_chain_pem": chain, "private_key_pem": leaf.key}),
        )
        .await;
    assert_eq!(put["dns_names"], json!(["*.demo.meridian.test"]));
    assert_eq!(put["chain_length"], 2);
    assert_eq!(put["expired"], false);
    assert!(
        put["subject"]
            .as_str()
            .unwrap()
            .contains("*.demo.meridian.test")
    );
    assert!(put["issuer"].as_str().unwrap().contains("demo CA"));
    assert!(put["not_after"].as_str().unwrap().len() >= 20, "{put}");
    assert!(put.get("private_key_pem").is_none());
    let got = admin
        .get_ok("/v1/certificates/meridian-system/demo-tls")
        .await;
    assert_eq!(got["sha256_fingerprint"], put["sha256_fingerprint"]);
    assert_eq!(got["cert_chain_pem"], chain);
    let list = admin.get_ok("/v1/certificates").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("cert_chain_pem").is_none());
    for answer in [&put, &got, &list] {
        assert!(!answer.to_string().contains(&secret_line));
    }
    let audit = admin.get_ok("/v1/audit").await;
    assert!(!audit.to_string().contains(&secret_line));
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |e| e["action"] == "put certificate meridian-system/demo-tls"
                    && e["result"] == "applied"
            ),
        "{audit}"
    );

    // Agents receive it, key included (they turn it into a kubernetes.io/tls Secret).
    admin
        .put_ok("/v1/clusters/us-east", &json!({"region": "us"}))
        .await;
    let mut agent = Agent::connect(&hub, "us-east").await;
    agent.register(&[]).await.unwrap();
    agent.open().await.unwrap();
    let config = agent.config_where(|c| !c.certificates.is_empty()).await;
    assert_eq!(config.certificates.len(), 1);
    let pushed = &config.certificates[0];
    assert_eq!(pushed.key.as_ref().unwrap().name, "demo-tls");
    assert_eq!(pushed.private_key_pem, leaf.key);

    // Its expiry is a metric, for alerts before a gateway serves it expired.
    let metrics = admin.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("meridian_hub_certificate_not_after_seconds{"))
        .unwrap_or_else(|| panic!("no expiry metric in:\n{metrics}"));
    assert!(
        line.contains(r#"namespace="meridian-system""#) && line.contains(r#"name="demo-tls""#),
        "{line}"
    );
    let not_after: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(not_after > now, "{line}");

    // Deleting it is pushed too.
    let (status, _) = admin
        .delete("/v1/certificates/meridian-system/demo-tls")
        .await;
    assert_eq!(status, 200);
    let config = agent.next_config().await;
    assert!(config.certificates.is_empty());
    let (status, _) = admin.get("/v1/certificates/meridian-system/demo-tls").await;
    assert_eq!(status, 404);
    assert!(
        !admin
            .metrics()
            .await
            .contains("meridian_hub_certificate_not_after_seconds{")
    );
    let (status, _) = admin
        .delete("/v1/certificates/meridian-system/demo-tls")
        .await;
    assert_eq!(status, 404);
    hub.shutdown().await;
}
