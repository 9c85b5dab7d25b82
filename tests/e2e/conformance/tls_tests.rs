//! HTTPS listener conformance tests (GA: conformance/tests/httproute-https-listener.go and
//! the misdirected-request detection test).

use std::net::SocketAddr;
use std::time::Duration;

use super::harness::*;

fn https_client(
    root: &rustls::pki_types::CertificateDer<'static>,
    hosts: &[&str],
    addr: SocketAddr,
) -> reqwest::Client {
    meridian_tests::init_crypto();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(root).unwrap()])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    for host in hosts {
        builder = builder.resolve(host, addr);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn http_route_https_listener() {
    let mut suite = Suite::new();
    let first = suite.cert("first", &["example.org", "unknown-example.org"]);
    let second = suite.cert("second", &["second-example.org"]);
    let manifests = r#"apiVersion: v1
kind: Secret
metadata: {name: tls-first, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
data: {tls.crt: "{{CERT:first}}", tls.key: "{{KEY:first}}"}
---
apiVersion: v1
kind: Secret
metadata: {name: tls-second, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
data: {tls.crt: "{{CERT:second}}", tls.key: "{{KEY:second}}"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace-with-https-listener, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - name: https
    port: {{HTTPS}}
    protocol: HTTPS
    tls: {certificateRefs: [{name: tls-first}]}
  - name: https-second
    port: {{HTTPS}}
    protocol: HTTPS
    hostname: second-example.org
    tls: {certificateRefs: [{name: tls-second}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: https-route-1, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener, sectionName: https}]
  hostnames: [example.org]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: https-route-2, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace-with-https-listener, sectionName: https-second}]
  hostnames: [second-example.org]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
"#;
    let suite = suite.start(
        "gateway-conformance-infra/same-namespace-with-https-listener",
        manifests,
    );
    let addr = suite.addr("HTTPS");
    let c1 = https_client(&first, &["example.org", "unknown-example.org"], addr);
    let c2 = https_client(&second, &["second-example.org"], addr);
    check_with(
        &c1,
        "https",
        addr,
        &get("example.org", "/"),
        &ok("infra-backend-v1"),
    )
    .await;
    check_with(
        &c2,
        "https",
        addr,
        &get("second-example.org", "/"),
        &ok("infra-backend-v2"),
    )
    .await;
    // Unknown SNI gets the default listener's certificate, and no route matches the host.
    check_with(
        &c1,
        "https",
        addr,
        &get("unknown-example.org", "/"),
        &status(&[404]),
    )
    .await;
    // The second certificate is not offered for the first name (the client trusts only it).
    let wrong = https_client(&second, &["example.org"], addr);
    assert!(
        wrong
            .get(format!("https://example.org:{}/", addr.port()))
            .send()
            .await
            .is_err()
    );
}
