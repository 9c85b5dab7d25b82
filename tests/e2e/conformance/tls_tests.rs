//! HTTPS listener and TLSRoute conformance tests (GA: conformance/tests/
//! httproute-https-listener.go, the misdirected-request detection test,
//! tlsroute-simple-same-namespace.go, tlsroute-invalid-backendref-nonexistent.go,
//! tlsroute-hostname-intersection.go, the Terminate mode test, and Mixed mode:
//! tlsroute-mixed-termination-same-namespace.go and
//! gateway-https-and-tls-passthrough-same-port.go).

use std::net::SocketAddr;
use std::time::Duration;

use meridian_tests::pki::Ca;

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

/// A TCP echo on loopback that records every byte it received (to show the backend gets
/// plaintext, not TLS records).
async fn tcp_echo() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn tls_route_terminate_simple_same_namespace() {
    let (echo, seen) = tcp_echo().await;
    let mut suite = Suite::new();
    let server = suite.cert(
        "server",
        &[
            "abc.example.com",
            "other.example.com",
            "secure.example.com",
            "mismatch.example.com",
            "www.example.org",
        ],
    );
    let backend_ca = Ca::new("backends");
    // A TLS backend for re-encryption: an HTTPS echo with a certificate for the policy's name.
    suite.tls_echo(
        "gateway-conformance-infra",
        "tls-echo",
        &backend_ca.leaf("tls-echo", &["tcp-secure.example.com"]),
    );
    let backend_ca_pem: String = backend_ca
        .pem
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    let manifests =
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: tls-checks-certificate, namespace: gateway-conformance-infra}}
type: kubernetes.io/tls
data: {{tls.crt: "{{{{CERT:server}}}}", tls.key: "{{{{KEY:server}}}}"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gateway-tlsroute-terminate, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: meridian
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - name: tls
    port: {{{{TLS}}}}
    protocol: TLS
    hostname: "*.example.com"
    tls: {{mode: Terminate, certificateRefs: [{{name: tls-checks-certificate}}]}}
    allowedRoutes: {{namespaces: {{from: Same}}, kinds: [{{kind: TLSRoute}}]}}
  - name: https
    port: {{{{TLS}}}}
    protocol: HTTPS
    hostname: www.example.org
    tls: {{certificateRefs: [{{name: tls-checks-certificate}}]}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: gateway-conformance-tls-terminate, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: gateway-tlsroute-terminate}}]
  hostnames: [abc.example.com]
  rules: [{{backendRefs: [{{name: tcp-backend, port: 9000}}]}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: backend-ca, namespace: gateway-conformance-infra}}
data:
  ca.crt: |
{backend_ca_pem}---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: tcp-secure, namespace: gateway-conformance-infra}}
spec:
  targetRefs: [{{group: "", kind: Service, name: tcp-secure}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
    hostname: tcp-secure.example.com
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: secure, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: gateway-tlsroute-terminate}}]
  hostnames: [secure.example.com]
  rules: [{{backendRefs: [{{name: tcp-secure, port: 9000}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: tcp-mismatch, namespace: gateway-conformance-infra}}
spec:
  targetRefs: [{{group: "", kind: Service, name: tcp-mismatch}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: backend-ca}}]
    hostname: not-the-certificate.example.com
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {{name: mismatch, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: gateway-tlsroute-terminate}}]
  hostnames: [mismatch.example.com]
  rules: [{{backendRefs: [{{name: tcp-mismatch, port: 9000}}]}}]
---
"#
        ) + &service_manifest("tcp-backend", "tcp", 9000, &echo.port().to_string(), None)
            + &service_manifest("tcp-secure", "tcp", 9000, "{{PORT:tls-echo}}", None)
            + &service_manifest("tcp-mismatch", "tcp", 9000, "{{PORT:tls-echo}}", None);
    let suite = suite.start(
        "gateway-conformance-infra/gateway-tlsroute-terminate",
        &manifests,
    );
    let addr = suite.addr("TLS");

    // The gateway terminates TLS with its certificate and the backend gets the plaintext.
    let payload = b"ping over terminated TLS\n";
    meridian_tests::eventually(
        "TLSRoute terminate echo",
        Duration::from_secs(30),
        || async {
            match meridian_tests::tls::tls_round_trip(addr, "abc.example.com", &server, payload)
                .await
            {
                Ok(echoed) if echoed == payload => Ok(()),
                Ok(echoed) => Err(format!("echoed {:?}", String::from_utf8_lossy(&echoed))),
                Err(error) => Err(error),
            }
        },
    )
    .await;
    assert!(
        seen.lock()
            .unwrap()
            .windows(payload.len())
            .any(|w| w == payload),
        "the backend did not see the plaintext"
    );

    // The port also has an HTTPS listener, whose connections negotiate h2 or http/1.1 by ALPN;
    // the TLS listener's stream negotiates nothing (its backend speaks raw TCP).
    let alpn = |sni: &'static str| {
        let server = server.clone();
        async move {
            meridian_tests::tls::negotiated_alpn(addr, sni, &server, &[b"h2", b"http/1.1"]).await
        }
    };
    assert_eq!(alpn("www.example.org").await, Ok(Some(b"h2".to_vec())));
    assert_eq!(alpn("abc.example.com").await, Ok(None));

    // An SNI no TLSRoute claims (inside or outside the listener's hostname) is rejected.
    for sni in ["other.example.com", "abc.example.net"] {
        let result = meridian_tests::tls::tls_round_trip(addr, sni, &server, payload).await;
        assert!(result.is_err(), "{sni}: {result:?}");
    }

    // A backend under a BackendTLSPolicy gets the stream over TLS again (re-encryption): the
    // HTTPS echo answers an HTTP request sent through the terminated session, having seen the
    // policy's hostname as SNI over a session the gateway verified against the policy's CA.
    let served = meridian_tests::eventually(
        "re-encrypted to the TLS backend",
        Duration::from_secs(10),
        || meridian_tests::tls::https_get(addr, "secure.example.com", &server),
    )
    .await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body["tls"]["serverName"], "tcp-secure.example.com",
        "{}",
        served.body
    );
    assert!(
        served.body["pod"]
            .as_str()
            .is_some_and(|pod| pod.starts_with("tls-echo-")),
        "{}",
        served.body
    );
    // A backend whose certificate does not match the policy is refused, not connected to
    // unverified.
    let refused = meridian_tests::tls::https_get(addr, "mismatch.example.com", &server).await;
    assert!(refused.is_err(), "{:?}", refused.map(|s| s.body));
    assert!(
        suite
            .gateway_log()
            .contains("TLS handshake with backend failed")
    );
}

/// Service `name` on port 443 pointing at the echo `name` (GA: `tls-backend`, 443 → 8443).
fn tls_service(name: &str) -> String {
    service_manifest(name, "https", 443, &format!("{{{{PORT:{name}}}}}"), None)
}

/// Two HTTPS echo backends with certificates from one CA: `tls-backend` for abc.example.com
/// and `tls-backend-2` for `other_names`; returns the CA and their Services' manifests.
fn two_tls_backends(suite: &mut Suite, other_names: &[&str]) -> (Ca, String) {
    let ca = Ca::new("backends");
    suite.tls_echo(
        "gateway-conformance-infra",
        "tls-backend",
        &ca.leaf("abc", &["abc.example.com"]),
    );
    suite.tls_echo(
        "gateway-conformance-infra",
        "tls-backend-2",
        &ca.leaf("other", other_names),
    );
    let manifests = tls_service("tls-backend") + &tls_service("tls-backend-2");
    (ca, manifests)
}

/// `GET https://<host>/` through the gateway port `addr`, trusting only `ca` (so only a
/// backend's own certificate can answer); the echo's JSON.
async fn passthrough_get(
    ca: &Ca,
    addr: SocketAddr,
    host: &str,
) -> Result<serde_json::Value, String> {
    meridian_tests::init_crypto();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .resolve(host, addr)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client
        .get(format!("https://{host}:{}/", addr.port()))
        .send()
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    response.json().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn tls_route_simple_same_namespace() {
    // TLSRouteSimpleSameNamespace, plus the rejections of TLSRouteInvalidBackendRefNonexistent
    // and of an SNI no route claims: a passthrough listener routes the client's own TLS
    // session, by SNI, to a backend that terminates it with its own certificate.
    let mut suite = Suite::new();
    let (ca, mut manifests) =
        two_tls_backends(&mut suite, &["other.example.com", "missing.example.com"]);
    manifests.push_str(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-tlsroute, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - name: tls
    port: {{TLS}}
    protocol: TLS
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: Same}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: gateway-conformance-infra-test, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: other, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute}]
  hostnames: [other.example.com]
  rules: [{backendRefs: [{name: tls-backend-2, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: nonexistent-backend, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute}]
  hostnames: [missing.example.com]
  rules: [{backendRefs: [{name: nonexistent, port: 443}]}]
"#,
    );
    let suite = suite.start("gateway-conformance-infra/gateway-tlsroute", &manifests);
    let addr = suite.addr("TLS");
    let get = |host: &'static str| passthrough_get(&ca, addr, host);

    // The backend's own certificate answered (the client trusts only the backends' CA, and
    // the gateway holds no certificate at all), and the backend saw the client's SNI.
    for (host, backend) in [
        ("abc.example.com", "tls-backend"),
        ("other.example.com", "tls-backend-2"),
    ] {
        let body = meridian_tests::eventually(host, Duration::from_secs(20), || get(host)).await;
        let pod = body["pod"].as_str().unwrap_or_default();
        assert_eq!(pod, format!("{backend}-6c8d4b9f7-x2k4p"), "{host}");
        assert_eq!(body["tls"]["serverName"], host, "{body}");
    }

    // No route claims the SNI, or the route's backend does not exist: the connection is
    // rejected (the spec asks for RST or EOF, never another route's backend).
    for host in ["unknown.example.com", "missing.example.com"] {
        let result = get(host).await;
        assert!(result.is_err(), "{host} got {result:?}");
    }
}

#[tokio::test]
async fn tls_route_hostname_intersection() {
    // TLSRouteHostnameIntersection, on one Gateway with three passthrough listeners: an exact
    // hostname, a wildcard and one no route matches. A route serves an SNI on a listener only
    // where their hostnames intersect; anything else is rejected.
    let mut suite = Suite::new();
    let (ca, mut manifests) =
        two_tls_backends(&mut suite, &["other.example.com", "abc.example.net"]);
    manifests.push_str(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-tlsroute, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: exact, port: {{TLS}}, protocol: TLS, hostname: abc.example.com, tls: {mode: Passthrough}}
  - {name: wildcard, port: {{HTTPS_2}}, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: unmatched, port: {{HTTP_3}}, protocol: TLS, hostname: "*.example.org", tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: abc, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute}]
  hostnames: [abc.example.com, abc.example.net]
  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: other, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute}]
  hostnames: ["*.example.com", abc.example.net]
  rules: [{backendRefs: [{name: tls-backend-2, port: 443}]}]
"#,
    );
    let suite = suite.start("gateway-conformance-infra/gateway-tlsroute", &manifests);
    let pod = |addr: SocketAddr, host: &'static str| {
        let answered = passthrough_get(&ca, addr, host);
        async move {
            Ok::<_, String>(
                answered.await?["pod"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
    };
    let (exact, wildcard, unmatched) = (
        suite.addr("TLS"),
        suite.addr("HTTPS_2"),
        suite.addr("HTTP_3"),
    );
    let served = [
        // The exact listener: only abc.example.com. Both routes intersect it as exactly that
        // name; the older wins, here by name as neither has a creationTimestamp.
        (exact, "abc.example.com", "tls-backend"),
        // The wildcard listener: abc by the route naming it exactly (more specific than
        // *.example.com), other by the wildcard route.
        (wildcard, "abc.example.com", "tls-backend"),
        (wildcard, "other.example.com", "tls-backend-2"),
    ];
    for (addr, host, backend) in served {
        let answered =
            meridian_tests::eventually(host, Duration::from_secs(20), || pod(addr, host)).await;
        assert_eq!(
            answered,
            format!("{backend}-6c8d4b9f7-x2k4p"),
            "{host} on {addr}"
        );
    }
    // Outside a listener's hostname, or on the listener no route matches: rejected.
    for (addr, host) in [
        (exact, "other.example.com"),
        (exact, "abc.example.net"),
        (wildcard, "abc.example.net"),
        (unmatched, "abc.example.com"),
    ] {
        let result = pod(addr, host).await;
        assert!(result.is_err(), "{host} on {addr}: {result:?}");
    }
}

/// Whether the gateway log reports a listener condition that is not healthy (the status a
/// standalone user sees: the gateway logs every False `Accepted`/`Programmed`/`ResolvedRefs`
/// and every True `Conflicted`).
fn listener_condition_logged(suite: &Suite) -> bool {
    suite.gateway_log().contains("listener condition")
}

#[tokio::test]
async fn tls_route_mixed_termination_same_namespace() {
    // TLSRouteMixedTerminationSameNamespace (TLSRouteModeMixed): one port carries a Terminate
    // listener for tls.example.com and a Passthrough listener for abc.example.com. The SNI of
    // the ClientHello picks the listener before any handshake.
    let (echo, seen) = tcp_echo().await;
    let mut suite = Suite::new();
    // The gateway's certificate also covers the passthrough name and an unrouted one, so
    // only the routing (not a name mismatch) decides what a client gets for them.
    let server = suite.cert(
        "server",
        &["tls.example.com", "abc.example.com", "other.example.com"],
    );
    let ca = Ca::new("backends");
    suite.tls_echo(
        "gateway-conformance-infra",
        "tls-backend",
        &ca.leaf("abc", &["abc.example.com"]),
    );
    let mut manifests = tls_service("tls-backend")
        + &service_manifest("tcp-backend", "tcp", 3000, &echo.port().to_string(), None);
    manifests.push_str(
        r#"apiVersion: v1
kind: Secret
metadata: {name: tls-terminate-checks-certificate, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
data: {tls.crt: "{{CERT:server}}", tls.key: "{{KEY:server}}"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-tlsroute-mixed-termination, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - name: tls-terminate
    port: {{TLS}}
    protocol: TLS
    hostname: tls.example.com
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
    tls: {mode: Terminate, certificateRefs: [{name: tls-terminate-checks-certificate}]}
  - name: tls-passthrough
    port: {{TLS}}
    protocol: TLS
    hostname: abc.example.com
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
    tls: {mode: Passthrough}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: gateway-conformance-mixed-passthroughroute, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute-mixed-termination}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: gateway-conformance-mixed-terminateroute, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-tlsroute-mixed-termination}]
  hostnames: [tls.example.com]
  rules: [{backendRefs: [{name: tcp-backend, port: 3000}]}]
"#,
    );
    let suite = suite.start(
        "gateway-conformance-infra/gateway-tlsroute-mixed-termination",
        &manifests,
    );
    let addr = suite.addr("TLS");

    // The passthrough name reaches its backend with the backend's own certificate (the client
    // trusts only the backends' CA) and the client's SNI.
    let body = meridian_tests::eventually("passthrough", Duration::from_secs(20), || {
        passthrough_get(&ca, addr, "abc.example.com")
    })
    .await;
    assert_eq!(body["pod"], "tls-backend-6c8d4b9f7-x2k4p", "{body}");
    assert_eq!(body["tls"]["serverName"], "abc.example.com", "{body}");

    // The terminate name is served with the gateway's certificate, and its backend gets the
    // decrypted stream.
    let payload = b"ping over the terminated listener\n";
    let echoed = meridian_tests::eventually("terminate", Duration::from_secs(20), || {
        meridian_tests::tls::tls_round_trip(addr, "tls.example.com", &server, payload)
    })
    .await;
    assert_eq!(echoed, payload);
    assert!(
        seen.lock()
            .unwrap()
            .windows(payload.len())
            .any(|w| w == payload),
        "the backend did not see the plaintext"
    );

    // Neither listener answers for the other's name: the gateway does not terminate the
    // passthrough name, nor pass the terminate name through to a backend.
    let terminated =
        meridian_tests::tls::tls_round_trip(addr, "abc.example.com", &server, payload).await;
    assert!(terminated.is_err(), "abc.example.com: {terminated:?}");
    let passed = passthrough_get(&ca, addr, "tls.example.com").await;
    assert!(passed.is_err(), "tls.example.com: {passed:?}");
    // An SNI neither listener claims is rejected before any handshake.
    let unknown =
        meridian_tests::tls::tls_round_trip(addr, "other.example.com", &server, payload).await;
    assert!(unknown.is_err(), "other.example.com: {unknown:?}");
    let unknown = passthrough_get(&ca, addr, "other.example.com").await;
    assert!(unknown.is_err(), "other.example.com: {unknown:?}");

    // Both listeners are accepted and programmed: no unhealthy listener condition.
    assert!(
        !listener_condition_logged(&suite),
        "{}",
        suite.gateway_log()
    );
}

#[tokio::test]
async fn gateway_https_and_tls_passthrough_same_port() {
    // GatewayHTTPSAndTLSPassthroughSamePort, with a TLS Terminate listener on the port too: an
    // HTTPS listener for *.example.com, a Passthrough listener for abc.example.com (the exact
    // name beats the wildcard) and a Terminate listener for tls.example.com share one port.
    let (echo, seen) = tcp_echo().await;
    let mut suite = Suite::new();
    let server = suite.cert(
        "server",
        &["other.example.com", "abc.example.com", "tls.example.com"],
    );
    let ca = Ca::new("backends");
    suite.tls_echo(
        "gateway-conformance-infra",
        "tcp-backend",
        &ca.leaf("abc", &["abc.example.com"]),
    );
    let mut manifests = tls_service("tcp-backend")
        + &service_manifest("tcp-plain", "tcp", 3000, &echo.port().to_string(), None);
    manifests.push_str(
        r#"apiVersion: v1
kind: Secret
metadata: {name: tls-checks-certificate, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
data: {tls.crt: "{{CERT:server}}", tls.key: "{{KEY:server}}"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-https-tls-passthrough-same-port, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - name: https-terminate
    port: {{TLS}}
    protocol: HTTPS
    hostname: "*.example.com"
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: HTTPRoute}]}
    tls: {mode: Terminate, certificateRefs: [{name: tls-checks-certificate}]}
  - name: tls-passthrough
    port: {{TLS}}
    protocol: TLS
    hostname: abc.example.com
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
    tls: {mode: Passthrough}
  - name: tls-terminate
    port: {{TLS}}
    protocol: TLS
    hostname: tls.example.com
    allowedRoutes: {namespaces: {from: Same}, kinds: [{kind: TLSRoute}]}
    tls: {mode: Terminate, certificateRefs: [{name: tls-checks-certificate}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: gateway-conformance-https-terminate, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-https-tls-passthrough-same-port, sectionName: https-terminate}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: gateway-conformance-tls-passthrough, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-https-tls-passthrough-same-port, sectionName: tls-passthrough}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: tcp-backend, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: gateway-conformance-tls-terminate, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: gateway-https-tls-passthrough-same-port, sectionName: tls-terminate}]
  hostnames: [tls.example.com]
  rules: [{backendRefs: [{name: tcp-plain, port: 3000}]}]
"#,
    );
    let suite = suite.start(
        "gateway-conformance-infra/gateway-https-tls-passthrough-same-port",
        &manifests,
    );
    let addr = suite.addr("TLS");

    // A name under the wildcard is terminated by the gateway and served by the HTTPRoute.
    let client = https_client(&server, &["other.example.com"], addr);
    check_with(
        &client,
        "https",
        addr,
        &get("other.example.com", "/"),
        &ok("infra-backend-v1"),
    )
    .await;

    // The exact name is passed through to the backend, which answers with its own certificate.
    let body = meridian_tests::eventually("passthrough", Duration::from_secs(20), || {
        passthrough_get(&ca, addr, "abc.example.com")
    })
    .await;
    assert_eq!(body["pod"], "tcp-backend-6c8d4b9f7-x2k4p", "{body}");
    assert_eq!(body["tls"]["serverName"], "abc.example.com", "{body}");

    // The TLS Terminate listener's name: the gateway's certificate, the plaintext to the TCP
    // backend, and no ALPN protocol negotiated (HTTPS names negotiate h2).
    let payload = b"ping through the port's TLS listener\n";
    let echoed = meridian_tests::eventually("terminate", Duration::from_secs(20), || {
        meridian_tests::tls::tls_round_trip(addr, "tls.example.com", &server, payload)
    })
    .await;
    assert_eq!(echoed, payload);
    assert!(
        seen.lock()
            .unwrap()
            .windows(payload.len())
            .any(|w| w == payload),
        "the backend did not see the plaintext"
    );
    let alpn = |sni: &'static str| {
        let server = server.clone();
        async move {
            meridian_tests::tls::negotiated_alpn(addr, sni, &server, &[b"h2", b"http/1.1"]).await
        }
    };
    assert_eq!(alpn("other.example.com").await, Ok(Some(b"h2".to_vec())));
    assert_eq!(alpn("tls.example.com").await, Ok(None));

    // The passthrough name is never terminated by the gateway (so no HTTPRoute can see it).
    let terminated = meridian_tests::tls::https_get(addr, "abc.example.com", &server).await;
    assert!(
        terminated.is_err(),
        "abc.example.com: {:?}",
        terminated.map(|s| s.body)
    );
    // A request whose SNI selects the HTTPS listener but whose Host belongs to the passthrough
    // listener is misdirected.
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_der(&server).unwrap()])
        .resolve("other.example.com", addr)
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    check_with(
        &http1,
        "https",
        addr,
        &get("other.example.com", "/").header("host", "abc.example.com"),
        &status(&[421]),
    )
    .await;

    // All three listeners are accepted and programmed: no unhealthy listener condition.
    assert!(
        !listener_condition_logged(&suite),
        "{}",
        suite.gateway_log()
    );
}
