//! BackendTLSPolicy conformance tests (GA: conformance/tests/backendtlspolicy.go and
//! backendtlspolicy-san.go): the gateway reaches a backend over TLS with the SNI and the CA the
//! policy names, verifies the certificate's name (or the policy's subjectAltNames), and never
//! falls back to cleartext when a policy cannot be used.

use meridian_tests::pki::{Ca, Leaf};

use super::harness::*;

const NS: &str = "gateway-conformance-infra";

/// The HTTPS echo: a certificate for `abc.example.com` (and a SPIFFE URI) signed by `ca`.
fn backend_leaf(ca: &Ca) -> Leaf {
    ca.leaf_with_uris(
        "abc.example.com",
        &["abc.example.com"],
        &["spiffe://example.com/ns/gateway-conformance-infra/sa/tls-backend"],
    )
}

/// A Service named `name` (port 443, name `https`, optional appProtocol) whose endpoint is
/// the echo process `echo`.
fn service(name: &str, echo: &str, app_protocol: Option<&str>) -> String {
    service_manifest(
        name,
        "https",
        443,
        &format!("{{{{PORT:{echo}}}}}"),
        app_protocol,
    )
}

/// A ConfigMap holding `pem` under `ca.crt`.
fn ca_config_map(name: &str, pem: &str) -> String {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {NS}}}\ndata:\n  ca.crt: |\n{indented}---\n"
    )
}

/// A BackendTLSPolicy for port `https` of `service`, trusting ConfigMap `ca`.
fn policy(name: &str, service: &str, ca: &str, hostname: &str, sans: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: {NS}}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {service}, sectionName: https}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {ca}}}]
    hostname: {hostname}
{sans}---
"#
    )
}

/// An HTTPRoute on `same-namespace` sending `/<path>` to port 443 of each Service.
fn route(paths: &[(&str, &str)]) -> String {
    let rules: String = paths
        .iter()
        .map(|(path, service)| {
            format!(
                "  - matches: [{{path: {{type: PathPrefix, value: /{path}}}}}]\n    backendRefs: [{{name: {service}, port: 443}}]\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: backendtlspolicy, namespace: {NS}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [abc.example.com]
  rules:
{rules}"#
    )
}

/// `GET path` through the gateway, returning the status and the echo's JSON (if any).
async fn fetch(suite: &Suite, path: &str) -> (u16, serde_json::Value) {
    let response = client()
        .get(format!("http://{}{path}", suite.addr("HTTP")))
        .header("host", "abc.example.com")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[tokio::test]
async fn backend_tls_policy() {
    let ca = Ca::new("backend-tls-ca");
    let mut suite = Suite::new();
    suite.tls_echo(NS, "tls-backend", &backend_leaf(&ca));
    let manifests = [
        SAME_NAMESPACE_GATEWAY.to_string(),
        ca_config_map("backend-tls-checks-certificate", &ca.pem),
        service("tls-backend", "tls-backend", None),
        service("tls-backend-h2", "tls-backend", Some("kubernetes.io/h2c")),
        service("tls-wrong-hostname", "tls-backend", None),
        // The missing-CA Service points at a cleartext echo: a gateway that ignored the
        // unusable policy and sent cleartext would get a 200 from it.
        service("tls-missing-ca", "infra-backend-v1", None),
        policy(
            "backend-tls",
            "tls-backend",
            "backend-tls-checks-certificate",
            "abc.example.com",
            "",
        ),
        policy(
            "backend-tls-h2",
            "tls-backend-h2",
            "backend-tls-checks-certificate",
            "abc.example.com",
            "",
        ),
        policy(
            "backend-tls-wrong-hostname",
            "tls-wrong-hostname",
            "backend-tls-checks-certificate",
            "other.example.com",
            "",
        ),
        policy(
            "backend-tls-missing-ca",
            "tls-missing-ca",
            "no-such-config-map",
            "abc.example.com",
            "",
        ),
        route(&[
            ("backendTLS", "tls-backend"),
            ("h2", "tls-backend-h2"),
            ("wrong-hostname", "tls-wrong-hostname"),
            ("missing-ca", "tls-missing-ca"),
        ]),
    ]
    .concat();
    let suite = suite.start("gateway-conformance-infra/same-namespace", &manifests);

    check_all(
        &suite,
        &[
            (get("abc.example.com", "/backendTLS"), ok("tls-backend")),
            (get("abc.example.com", "/h2"), ok("tls-backend")),
            // The certificate does not cover other.example.com: the handshake fails.
            (
                get("abc.example.com", "/wrong-hostname"),
                status(&[502, 503]),
            ),
            // The policy's CA ConfigMap does not exist: an invalid backend, never cleartext.
            (get("abc.example.com", "/missing-ca"), status(&[500])),
        ],
    )
    .await;

    let (status, body) = fetch(&suite, "/backendTLS").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tls"]["serverName"], "abc.example.com", "{body}");
    assert_eq!(body["tls"]["negotiatedProtocol"], "http/1.1", "{body}");
    assert_eq!(body["proto"], "HTTP/1.1", "{body}");

    let (status, body) = fetch(&suite, "/h2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tls"]["serverName"], "abc.example.com", "{body}");
    assert_eq!(body["tls"]["negotiatedProtocol"], "h2", "{body}");
    assert_eq!(body["proto"], "HTTP/2.0", "{body}");

    let log = suite.gateway_log();
    assert!(
        log.contains("TLS handshake with backend failed") && log.contains("NotValidForName"),
        "the gateway log names the failed verification:\n{log}"
    );
    assert!(
        log.contains("no-such-config-map not found"),
        "the gateway log names the unresolved CA reference:\n{log}"
    );
    // Nothing reached the cleartext echo behind the unusable policy.
    assert!(
        !suite.echo_log("infra-backend-v1").contains("/missing-ca"),
        "a request went out in cleartext"
    );
}

#[tokio::test]
async fn backend_tls_policy_san_validation() {
    let ca = Ca::new("backend-tls-ca");
    let mut suite = Suite::new();
    suite.tls_echo(NS, "tls-backend", &backend_leaf(&ca));
    let sans = |entries: &[&str]| -> String {
        let list: String = entries.iter().map(|e| format!("    - {e}\n")).collect();
        format!("    subjectAltNames:\n{list}")
    };
    let manifests = [
        SAME_NAMESPACE_GATEWAY.to_string(),
        ca_config_map("backend-tls-checks-certificate", &ca.pem),
        service("san-hostname", "tls-backend", None),
        service("san-uri", "tls-backend", None),
        service("san-mismatch", "tls-backend", None),
        // The SNI (hostname) is not in the certificate, the listed SAN is: it passes.
        policy(
            "san-hostname",
            "san-hostname",
            "backend-tls-checks-certificate",
            "other.example.com",
            &sans(&["{type: Hostname, hostname: other.example.org}", "{type: Hostname, hostname: abc.example.com}"]),
        ),
        policy(
            "san-uri",
            "san-uri",
            "backend-tls-checks-certificate",
            "abc.example.com",
            &sans(&[
                "{type: URI, uri: \"spiffe://example.com/ns/gateway-conformance-infra/sa/tls-backend\"}",
            ]),
        ),
        // The hostname is in the certificate but the SANs replace it, and none matches.
        policy(
            "san-mismatch",
            "san-mismatch",
            "backend-tls-checks-certificate",
            "abc.example.com",
            &sans(&[
                "{type: Hostname, hostname: nope.example.com}",
                "{type: URI, uri: \"spiffe://example.com/ns/other/sa/other\"}",
            ]),
        ),
        route(&[
            ("san-hostname", "san-hostname"),
            ("san-uri", "san-uri"),
            ("san-mismatch", "san-mismatch"),
        ]),
    ]
    .concat();
    let suite = suite.start("gateway-conformance-infra/same-namespace", &manifests);

    check_all(
        &suite,
        &[
            (get("abc.example.com", "/san-hostname"), ok("tls-backend")),
            (get("abc.example.com", "/san-uri"), ok("tls-backend")),
            (get("abc.example.com", "/san-mismatch"), status(&[502, 503])),
        ],
    )
    .await;
    // The SNI is the policy hostname even when the SANs decide the check.
    let (status, body) = fetch(&suite, "/san-hostname").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tls"]["serverName"], "other.example.com", "{body}");
}

/// A BackendTLSPolicy for port `https` of `service` trusting the system trust store.
fn system_policy(name: &str, service: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: {NS}}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {service}, sectionName: https}}]
  validation:
    wellKnownCACertificates: System
    hostname: abc.example.com
---
"#
    )
}

/// A suite whose gateway reads its system trust store from `SSL_CERT_FILE` = `bundle` (a
/// file in the suite directory, `None`: a path that does not exist), with a
/// `wellKnownCACertificates: System` policy in front of a TLS echo whose certificate `ca`
/// signed.
fn system_trust_suite(ca: &Ca, bundle: Option<&str>) -> (Suite, String) {
    let mut suite = Suite::new();
    suite.tls_echo(NS, "tls-backend", &backend_leaf(ca));
    let path = suite.dir.path().join("system-bundle.pem");
    if let Some(pem) = bundle {
        std::fs::write(&path, pem).unwrap();
    }
    let path = path.display().to_string();
    suite
        .gateway_env
        .push(("SSL_CERT_FILE".into(), path.clone()));
    // An empty SSL_CERT_DIR counts as unset: the test's environment adds no directory.
    suite
        .gateway_env
        .push(("SSL_CERT_DIR".into(), String::new()));
    let manifests = [
        SAME_NAMESPACE_GATEWAY.to_string(),
        service("tls-system", "tls-backend", None),
        system_policy("backend-tls-system", "tls-system"),
        route(&[("system", "tls-system")]),
    ]
    .concat();
    let suite = suite.start("gateway-conformance-infra/same-namespace", &manifests);
    (suite, path)
}

#[tokio::test]
async fn backend_tls_policy_well_known_system_ca_certificates() {
    let ca = Ca::new("backend-tls-ca");
    let other = Ca::new("some-public-ca");

    // The host's trust store holds the backend's CA (next to another one): verified, 200.
    let (suite, _) = system_trust_suite(&ca, Some(&format!("{}{}", other.pem, ca.pem)));
    check_all(
        &suite,
        &[(get("abc.example.com", "/system"), ok("tls-backend"))],
    )
    .await;
    let (code, body) = fetch(&suite, "/system").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tls"]["serverName"], "abc.example.com", "{body}");
    drop(suite);

    // The trust store lacks the backend's CA: the handshake is refused by the gateway.
    let (suite, _) = system_trust_suite(&ca, Some(&other.pem));
    check_all(
        &suite,
        &[(get("abc.example.com", "/system"), status(&[502, 503]))],
    )
    .await;
    let log = suite.gateway_log();
    assert!(
        log.contains("TLS handshake with backend failed") && log.contains("UnknownIssuer"),
        "the gateway log names the failed verification:\n{log}"
    );
    drop(suite);

    // No trust store at all: the backend fails closed and the log names the path tried.
    let (suite, path) = system_trust_suite(&ca, None);
    check_all(
        &suite,
        &[(get("abc.example.com", "/system"), status(&[502, 503]))],
    )
    .await;
    let log = suite.gateway_log();
    assert!(
        log.contains("TLS to backend unavailable")
            && log.contains(&format!("SSL_CERT_FILE {path}")),
        "the gateway log names the missing trust store:\n{log}"
    );
    assert!(
        !suite
            .echo_log("tls-backend")
            .contains("TLS handshake failed"),
        "the gateway dialled the backend without trust anchors"
    );
}

/// The `same-namespace` Gateway (HTTP on `{{HTTP}}`) with `spec.tls.backend` set to
/// `backend` (flow-style YAML; empty: no `spec.tls`).
fn gateway_with_backend_tls(backend: &str) -> String {
    let tls = if backend.is_empty() {
        String::new()
    } else {
        format!("  tls:\n    backend: {backend}\n")
    };
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace, namespace: {NS}}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - name: http
    port: {{{{HTTP}}}}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
{tls}---
"#
    )
}

/// A `kubernetes.io/tls` Secret holding `leaf`.
fn tls_secret(name: &str, leaf: &Leaf) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NS}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
        base64(leaf.cert.as_bytes()),
        base64(leaf.key.as_bytes())
    )
}

/// A suite whose TLS echo requires a client certificate from `client_ca`, behind a valid
/// BackendTLSPolicy, with the Gateway's `spec.tls.backend` set to `backend`; `secret` is
/// added to the manifests.
fn client_certificate_suite(ca: &Ca, client_ca: &Ca, backend: &str, secret: &str) -> Suite {
    let mut suite = Suite::new();
    suite.tls_echo_with_client_ca(NS, "tls-backend", &backend_leaf(ca), Some(&client_ca.pem));
    let manifests = [
        gateway_with_backend_tls(backend),
        secret.to_string(),
        ca_config_map("backend-tls-checks-certificate", &ca.pem),
        service("tls-backend", "tls-backend", None),
        policy(
            "backend-tls",
            "tls-backend",
            "backend-tls-checks-certificate",
            "abc.example.com",
            "",
        ),
        route(&[("backendTLS", "tls-backend")]),
    ]
    .concat();
    suite.start("gateway-conformance-infra/same-namespace", &manifests)
}

/// PEM text without line breaks, to compare certificates whatever the line endings.
fn compact(pem: &str) -> String {
    pem.chars().filter(|c| !c.is_whitespace()).collect()
}

/// GatewayTLSBackendClientCertificate: the Gateway presents the certificate of its
/// `spec.tls.backend.clientCertificateRef` to a backend that requires one.
#[tokio::test]
async fn gateway_tls_backend_client_certificate() {
    let ca = Ca::new("backend-tls-ca");
    let client_ca = Ca::new("gateway-client-ca");
    let client = client_ca.leaf("gateway-client", &["gateway.example.com"]);
    let suite = client_certificate_suite(
        &ca,
        &client_ca,
        "{clientCertificateRef: {name: tls-client-certificate}}",
        &tls_secret("tls-client-certificate", &client),
    );
    check_all(
        &suite,
        &[(get("abc.example.com", "/backendTLS"), ok("tls-backend"))],
    )
    .await;
    let (code, body) = fetch(&suite, "/backendTLS").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tls"]["serverName"], "abc.example.com", "{body}");
    let presented = body["tls"]["peerCertificates"][0]
        .as_str()
        .unwrap_or_else(|| panic!("the echo saw no client certificate: {body}"));
    assert_eq!(compact(presented), compact(&client.cert), "{body}");
}

/// Without a client certificate (no reference, or one that does not resolve) the gateway
/// still serves, dials the backend without one, and the backend refuses the handshake.
#[tokio::test]
async fn gateway_tls_backend_without_client_certificate_is_refused() {
    let ca = Ca::new("backend-tls-ca");
    let client_ca = Ca::new("gateway-client-ca");

    let suite = client_certificate_suite(&ca, &client_ca, "", "");
    check_all(
        &suite,
        &[(get("abc.example.com", "/backendTLS"), status(&[502, 503]))],
    )
    .await;
    assert!(
        suite
            .echo_log("tls-backend")
            .contains("TLS handshake failed"),
        "the backend did not refuse the handshake:\n{}",
        suite.echo_log("tls-backend")
    );
    drop(suite);

    // GatewayInvalidTLSBackendConfiguration: the referenced Secret does not exist. The
    // Gateway reports ResolvedRefs=False/InvalidClientCertificateRef but keeps serving.
    let suite = client_certificate_suite(
        &ca,
        &client_ca,
        "{clientCertificateRef: {name: no-such-secret}}",
        "",
    );
    check_all(
        &suite,
        &[(get("abc.example.com", "/backendTLS"), status(&[502, 503]))],
    )
    .await;
    let log = suite.gateway_log();
    assert!(
        log.contains("InvalidClientCertificateRef") && log.contains("no-such-secret not found"),
        "the gateway log names the unresolved client certificate:\n{log}"
    );
    assert!(
        suite
            .echo_log("tls-backend")
            .contains("TLS handshake failed"),
        "the backend did not refuse the handshake"
    );
}
