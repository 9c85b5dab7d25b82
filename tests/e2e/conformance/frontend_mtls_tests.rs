//! Frontend client certificate validation (mTLS on HTTPS listeners) conformance tests (GA:
//! conformance/tests/gateway-frontend-client-certificate-validation*.go and
//! gateway-with-invalid-clientcertificate-validation.go): Gateway `spec.tls.frontend` with CA
//! ConfigMaps, the default and a per-port override.

use std::net::SocketAddr;
use std::time::Duration;

use super::harness::*;

/// An HTTPS client trusting `root` that resolves `host` to `addr`, presenting `identity`.
fn mtls_client(
    root: &rustls::pki_types::CertificateDer<'static>,
    host: &str,
    addr: SocketAddr,
    identity: Option<reqwest::Identity>,
) -> reqwest::Client {
    meridian_tests::init_crypto();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .resolve(host, addr);
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

/// Asserts that the gateway accepts the TCP connection but the request over `client` fails
/// (the TLS handshake is refused with an alert or the connection closed), naming `why`.
async fn refused(client: &reqwest::Client, addr: SocketAddr, why: &str) {
    match send(client, addr).await {
        Ok(status) => panic!("{why}: the gateway answered {status}"),
        Err(error) => assert!(
            !error.is_connect(),
            "{why}: the port is not served at all: {error:?}"
        ),
    }
}

/// `GET https://example.org:<port>/`.
async fn send(client: &reqwest::Client, addr: SocketAddr) -> Result<u16, reqwest::Error> {
    client
        .get(format!("https://example.org:{}/", addr.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

/// Server certificate, the backend route and a Gateway whose `spec.tls` is `frontend`, with
/// HTTPS listeners on `{{HTTPS}}` and `{{HTTPS_2}}` and an HTTP listener on `{{HTTP}}`.
fn manifests(frontend: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}}
type: kubernetes.io/tls
data: {{tls.crt: "{{{{CERT:server}}}}", tls.key: "{{{{KEY:server}}}}"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: client-validation, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  tls:
{frontend}
  listeners:
  - name: https
    port: {{{{HTTPS}}}}
    protocol: HTTPS
    hostname: example.org
    tls: {{certificateRefs: [{{name: tls-validity-checks-certificate}}]}}
  - name: https-8443
    port: {{{{HTTPS_2}}}}
    protocol: HTTPS
    hostname: example.org
    tls: {{certificateRefs: [{{name: tls-validity-checks-certificate}}]}}
  - name: http
    port: {{{{HTTP}}}}
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: client-validation, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: client-validation}}]
  hostnames: [example.org]
  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]
"#
    )
}

/// A ConfigMap `name` holding CA `id` under `ca.crt`.
fn ca_config_map(name: &str, namespace: &str, id: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata: {{ca.crt: {{{{CA:{id}}}}}}}\n"
    )
}

#[tokio::test]
async fn gateway_frontend_client_certificate_validation() {
    let mut suite = Suite::new();
    let server = suite.cert("server", &["example.org"]);
    let default_ca = suite.ca("default");
    let port_ca = suite.ca("port");
    let frontend = r#"    frontend:
      default:
        validation:
          caCertificateRefs: [{group: "", kind: ConfigMap, name: default-ca}]
      perPort:
      - port: {{HTTPS_2}}
        tls:
          validation:
            mode: AllowValidOnly
            caCertificateRefs:
            - {group: "", kind: ConfigMap, name: port-ca, namespace: gateway-conformance-web-backend}"#;
    let mut text = manifests(frontend);
    text.push_str(&ca_config_map(
        "default-ca",
        "gateway-conformance-infra",
        "default",
    ));
    text.push_str(&ca_config_map(
        "port-ca",
        "gateway-conformance-web-backend",
        "port",
    ));
    // The cross-namespace CA reference needs a grant from Gateways to ConfigMaps.
    text.push_str(
        r#"---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-read-ca, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]
  to: [{group: "", kind: ConfigMap}]
"#,
    );
    let suite = suite.start("gateway-conformance-infra/client-validation", &text);
    let https = suite.addr("HTTPS");
    let https_2 = suite.addr("HTTPS_2");
    let client = |addr, identity| mtls_client(&server, "example.org", addr, identity);

    // A client certificate signed by the port's CA is served, and the backend is told which
    // one in `X-Forwarded-Client-Cert`, whatever the client claimed in that header.
    let (alice, alice_xfcc) = default_ca.client_identity_and_xfcc("alice");
    check_with(
        &client(https, Some(alice)),
        "https",
        https,
        &get("example.org", "/").header("x-forwarded-client-cert", "Hash=forged"),
        &ok("infra-backend-v1").sees("x-forwarded-client-cert", &alice_xfcc),
    )
    .await;
    check_with(
        &client(https_2, Some(port_ca.client_identity("bob"))),
        "https",
        https_2,
        &get("example.org", "/"),
        &ok("infra-backend-v1"),
    )
    .await;

    // No certificate, or one from the other port's CA, fails the handshake.
    refused(&client(https, None), https, "no client certificate").await;
    refused(
        &client(https, Some(port_ca.client_identity("bob"))),
        https,
        "a certificate from the perPort CA on the default port",
    )
    .await;
    refused(&client(https_2, None), https_2, "no client certificate").await;
    refused(
        &client(https_2, Some(default_ca.client_identity("alice"))),
        https_2,
        "a certificate from the default CA on the overridden port",
    )
    .await;
    let stranger = TestCa::new("stranger");
    refused(
        &client(https, Some(stranger.client_identity("mallory"))),
        https,
        "a certificate from an unknown CA",
    )
    .await;

    // Plain HTTP listeners are unaffected, and no client vouches for a certificate itself.
    check_all(
        &suite,
        &[(
            get("example.org", "/").header("x-forwarded-client-cert", "Hash=forged"),
            ok("infra-backend-v1").not_sees("x-forwarded-client-cert"),
        )],
    )
    .await;
}

#[tokio::test]
async fn gateway_frontend_client_certificate_validation_insecure_fallback() {
    let mut suite = Suite::new();
    let server = suite.cert("server", &["example.org"]);
    let ca = suite.ca("default");
    let frontend = r#"    frontend:
      default:
        validation:
          mode: AllowInsecureFallback
          caCertificateRefs: [{group: "", kind: ConfigMap, name: default-ca}]"#;
    let mut text = manifests(frontend);
    text.push_str(&ca_config_map(
        "default-ca",
        "gateway-conformance-infra",
        "default",
    ));
    let suite = suite.start("gateway-conformance-infra/client-validation", &text);
    let https = suite.addr("HTTPS");
    let client = |identity| mtls_client(&server, "example.org", https, identity);

    // As the Gateway API defines the mode: any client gets through, whether it presents a
    // valid certificate, one from an unknown CA, or none. Only the valid one is forwarded.
    let stranger = TestCa::new("stranger");
    let (alice, alice_xfcc) = ca.client_identity_and_xfcc("alice");
    for (what, identity, forwarded) in [
        ("no client certificate", None, None),
        ("a valid client certificate", Some(alice), Some(alice_xfcc)),
        (
            "a certificate from an unknown CA",
            Some(stranger.client_identity("mallory")),
            None,
        ),
    ] {
        eprintln!("insecure fallback: {what}");
        let expect = match &forwarded {
            Some(xfcc) => ok("infra-backend-v1").sees("x-forwarded-client-cert", xfcc),
            None => ok("infra-backend-v1").not_sees("x-forwarded-client-cert"),
        };
        check_with(
            &client(identity),
            "https",
            https,
            &get("example.org", "/").header("x-forwarded-client-cert", "Hash=forged"),
            &expect,
        )
        .await;
    }
}

#[tokio::test]
async fn gateway_frontend_invalid_default_client_certificate_validation() {
    let mut suite = Suite::new();
    let server = suite.cert("server", &["example.org"]);
    // The default names a ConfigMap that does not exist; the perPort one is fine.
    let ca = suite.ca("port");
    let frontend = r#"    frontend:
      default:
        validation:
          caCertificateRefs: [{group: "", kind: ConfigMap, name: missing-ca}]
      perPort:
      - port: {{HTTPS_2}}
        tls:
          validation:
            caCertificateRefs: [{group: "", kind: ConfigMap, name: port-ca}]"#;
    let mut text = manifests(frontend);
    text.push_str(&ca_config_map(
        "port-ca",
        "gateway-conformance-infra",
        "port",
    ));
    let suite = suite.start("gateway-conformance-infra/client-validation", &text);
    let https = suite.addr("HTTPS");
    let https_2 = suite.addr("HTTPS_2");

    // The HTTP listener and the overridden port serve.
    check_all(&suite, &[(get("example.org", "/"), ok("infra-backend-v1"))]).await;
    check_with(
        &mtls_client(
            &server,
            "example.org",
            https_2,
            Some(ca.client_identity("bob")),
        ),
        "https",
        https_2,
        &get("example.org", "/"),
        &ok("infra-backend-v1"),
    )
    .await;
    // Fail closed: the listener whose CA cannot be resolved is not programmed, so its port is
    // not served at all, with or without a client certificate.
    for identity in [None, Some(ca.client_identity("bob"))] {
        let result = send(&mtls_client(&server, "example.org", https, identity), https).await;
        assert!(
            result.as_ref().is_err_and(reqwest::Error::is_connect),
            "the listener with an unresolvable CA: {result:?}"
        );
    }
}

#[tokio::test]
async fn turning_on_client_validation_closes_connections_made_without_it() {
    // A connection keeps what its handshake agreed to, so when validation is turned on the
    // gateway asks the connections it accepted without it to finish: a client cannot keep
    // using a connection the new settings would refuse.
    let mut suite = Suite::new();
    let server = suite.cert("server", &["example.org"]);
    suite.ca("default");
    let ca_map = ca_config_map("default-ca", "gateway-conformance-infra", "default");
    let mut open = manifests("    frontend: {}");
    open.push_str(&ca_map);
    let suite = suite.start("gateway-conformance-infra/client-validation", &open);
    let https = suite.addr("HTTPS");
    // A keep-alive client without a certificate: its requests reuse one connection.
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&server).unwrap()])
        .timeout(Duration::from_secs(5))
        .resolve("example.org", https)
        .build()
        .unwrap();
    meridian_tests::eventually("served without validation", Duration::from_secs(10), || {
        send(&client, https)
    })
    .await;

    let mut required = manifests(
        r#"    frontend:
      default:
        validation:
          caCertificateRefs: [{group: "", kind: ConfigMap, name: default-ca}]"#,
    );
    required.push_str(&ca_map);
    suite.write("10-test.yaml", &required);
    meridian_tests::eventually(
        "the connection made without a certificate is closed, a new one refused",
        Duration::from_secs(10),
        || async {
            match send(&client, https).await {
                Ok(status) => Err(format!("still served: {status}")),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
}

/// Whether the gateway log (or `log`, a part of it) reports `condition` of `listener` with
/// `reason`: the standalone gateway logs every unhealthy listener condition with the reason
/// the Gateway API names.
fn listener_condition(log: &str, listener: &str, condition: &str, reason: &str) -> bool {
    log.lines().any(|line| {
        line.contains("listener condition")
            && line.contains(&format!("listener={listener} "))
            && line.contains(&format!("condition={condition} "))
            && line.contains(&format!("reason={reason} "))
    })
}

#[tokio::test]
async fn gateway_invalid_frontend_client_certificate_validation() {
    // GatewayInvalidFrontendClientCertificateValidation, the invalid kind and missing grant
    // cases, plus what a user sees on the wire: each listener with an unusable CA reference
    // is reported (ResolvedRefs False with the reference's problem, Accepted False
    // NoValidCACertificate, not Programmed) and fails closed, serving no TLS connection,
    // while the Gateway's other listeners keep serving. Granting the cross-namespace
    // reference then turns validation on for its listener without a restart.
    let mut suite = Suite::new();
    let server = suite.cert("server", &["example.org"]);
    let default_ca = suite.ca("default");
    let port_ca = suite.ca("port");
    let frontend = r#"apiVersion: v1
kind: Secret
metadata: {name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
data: {tls.crt: "{{CERT:server}}", tls.key: "{{KEY:server}}"}
---
apiVersion: v1
kind: Secret
metadata: {name: ca-in-a-secret, namespace: gateway-conformance-infra}
data: {ca.crt: "{{CERT:server}}"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-invalid-client-cert-validation, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{group: "", kind: ConfigMap, name: default-ca}]
      perPort:
      - port: {{HTTPS_2}}
        tls:
          validation:
            caCertificateRefs: [{group: "", kind: Secret, name: ca-in-a-secret}]
      - port: {{TLS}}
        tls:
          validation:
            caCertificateRefs:
            - {group: "", kind: ConfigMap, name: port-ca, namespace: gateway-conformance-web-backend}
  listeners:
  - name: https
    port: {{HTTPS}}
    protocol: HTTPS
    hostname: example.org
    tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}
  - name: https-invalid-kind
    port: {{HTTPS_2}}
    protocol: HTTPS
    hostname: example.org
    tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}
  - name: https-grant-missing
    port: {{TLS}}
    protocol: HTTPS
    hostname: example.org
    tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}
  - name: http
    port: {{HTTP}}
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: client-validation, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-with-invalid-client-cert-validation}]
  hostnames: [example.org]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"#;
    let mut text = frontend.to_string();
    text.push_str(&ca_config_map(
        "default-ca",
        "gateway-conformance-infra",
        "default",
    ));
    text.push_str(&ca_config_map(
        "port-ca",
        "gateway-conformance-web-backend",
        "port",
    ));
    let suite = suite.start(
        "gateway-conformance-infra/gateway-with-invalid-client-cert-validation",
        &text,
    );
    let https = suite.addr("HTTPS");
    let invalid_kind = suite.addr("HTTPS_2");
    let grant_missing = suite.addr("TLS");
    let client = |addr, identity| mtls_client(&server, "example.org", addr, identity);

    // The valid listeners serve: HTTP, and HTTPS with a certificate from the default CA.
    check_all(&suite, &[(get("example.org", "/"), ok("infra-backend-v1"))]).await;
    check_with(
        &client(https, Some(default_ca.client_identity("alice"))),
        "https",
        https,
        &get("example.org", "/"),
        &ok("infra-backend-v1"),
    )
    .await;

    // What the gateway reports for each listener.
    let log = suite.gateway_log();
    for (listener, reason) in [
        ("https-invalid-kind", "InvalidCACertificateKind"),
        ("https-grant-missing", "RefNotPermitted"),
    ] {
        assert!(
            listener_condition(&log, listener, "ResolvedRefs", reason)
                && listener_condition(&log, listener, "Accepted", "NoValidCACertificate")
                && listener_condition(&log, listener, "Programmed", "Invalid"),
            "{listener}: ResolvedRefs {reason}, Accepted NoValidCACertificate, not Programmed:\n{log}"
        );
    }
    assert!(
        !log.contains("listener=https ") && !log.contains("listener=http "),
        "a valid listener reported unhealthy:\n{log}"
    );

    // Fail closed: neither listener's port is served, with or without a client certificate
    // (with one from any of the CAs involved).
    for addr in [invalid_kind, grant_missing] {
        for identity in [
            None,
            Some(default_ca.client_identity("alice")),
            Some(port_ca.client_identity("bob")),
        ] {
            let result = send(&client(addr, identity), addr).await;
            assert!(
                result.as_ref().is_err_and(reqwest::Error::is_connect),
                "{addr}: {result:?}"
            );
        }
    }

    // Granting Gateways in the infra namespace the ConfigMaps of the web-backend namespace:
    // the gateway reloads its directory, the listener is programmed and validates against
    // the granted CA.
    suite.write(
        "20-grant.yaml",
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-read-ca, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}]
  to: [{group: "", kind: ConfigMap}]
"#,
    );
    check_with(
        &client(grant_missing, Some(port_ca.client_identity("bob"))),
        "https",
        grant_missing,
        &get("example.org", "/"),
        &ok("infra-backend-v1"),
    )
    .await;
    refused(
        &client(grant_missing, None),
        grant_missing,
        "no client certificate once the grant is in place",
    )
    .await;
    refused(
        &client(grant_missing, Some(default_ca.client_identity("alice"))),
        grant_missing,
        "a certificate from the default CA on the granted perPort port",
    )
    .await;
    // The same process reloaded (version 2 of its config): its status no longer reports the
    // listener, and still reports the wrong kind.
    let log = suite.gateway_log();
    let (_, reloaded) = log
        .split_once("applied the directory's config version=1")
        .expect("the first config was applied");
    assert!(
        reloaded.contains("applied the directory's config version=2"),
        "{log}"
    );
    assert!(
        !reloaded.contains("listener=https-grant-missing "),
        "{reloaded}"
    );
    assert!(
        listener_condition(
            reloaded,
            "https-invalid-kind",
            "ResolvedRefs",
            "InvalidCACertificateKind"
        ),
        "{reloaded}"
    );
}
