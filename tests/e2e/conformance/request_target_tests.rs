//! The request target before routing (not an upstream conformance test; the hostile review's
//! findings 1 and 2): paths are matched and forwarded in normal form (dot segments removed,
//! unreserved escapes decoded, slashes merged; invalid escapes 400), the backend's Host is the
//! authority the request was routed on, and malformed host fields are refused with 400. The
//! requests go out as raw bytes (HTTP/1) or through a bare HTTP/2 connection, since ordinary
//! clients normalize paths and hosts themselves.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::harness::*;

const GW: &str = "gateway-conformance-infra/request-target";

/// An HTTP listener routing by path (`paths.example.com`) and by host (`a.`/`b.example.com`),
/// and HTTPS listeners for `a.` and `b.example.com` on one port.
const MANIFESTS: &str = r#"apiVersion: v1
kind: Secret
metadata: {name: tls-ab, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
data: {tls.crt: "{{CERT:ab}}", tls.key: "{{KEY:ab}}"}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-infra, namespace: gateway-conformance-app-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-infra, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: request-target, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: meridian
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners:
  - {name: http, port: {{HTTP}}, protocol: HTTP}
  - name: https-a
    port: {{HTTPS}}
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: tls-ab}]}
  - name: https-b
    port: {{HTTPS}}
    protocol: HTTPS
    hostname: b.example.com
    tls: {certificateRefs: [{name: tls-ab}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: paths, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: request-target, sectionName: http}]
  hostnames: [paths.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /internal}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: Exact, value: /secret}}]
    backendRefs: [{name: app-backend-v1, namespace: gateway-conformance-app-backend, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /rw}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: app-backend-v2, namespace: gateway-conformance-app-backend, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: host-a, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: request-target, sectionName: http}
  - {name: request-target, sectionName: https-a}
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: host-b, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: request-target, sectionName: http}
  - {name: request-target, sectionName: https-b}
  hostnames: [b.example.com]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
"#;

/// What came back for one request.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The echo's JSON (`Null` when the gateway answered itself).
    echo: serde_json::Value,
    /// The raw body.
    text: String,
}

impl Answer {
    /// `(backend pod prefix, path and query the backend saw, Host it saw)`.
    fn seen(&self) -> (&str, &str, &str) {
        let pod = self.echo["pod"].as_str().unwrap_or("");
        let backend = pod.strip_suffix("-6c8d4b9f7-x2k4p").unwrap_or(pod);
        (
            backend,
            self.echo["uri"].as_str().unwrap_or(""),
            self.echo["host"].as_str().unwrap_or(""),
        )
    }
}

/// Sends `head` (a complete request head, ending in an empty line) over a new connection and
/// reads the answer to the end (the head asks for `Connection: close`).
async fn raw(addr: SocketAddr, head: &str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        echo: serde_json::from_str(&body).unwrap_or_default(),
        text: body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

async fn started() -> (Suite, rustls::pki_types::CertificateDer<'static>) {
    let mut suite = Suite::new();
    let cert = suite.cert("ab", &["a.example.com", "b.example.com"]);
    let suite = suite.start(GW, MANIFESTS);
    // Routes are programmed once the plain requests reach their backends.
    check_all(
        &suite,
        &[
            (
                super::harness::get("paths.example.com", "/admin"),
                ok("infra-backend-v3"),
            ),
            (
                super::harness::get("a.example.com", "/"),
                ok("infra-backend-v1"),
            ),
        ],
    )
    .await;
    (suite, cert)
}

#[tokio::test]
async fn paths_are_routed_and_forwarded_in_normal_form() {
    let (suite, _) = started().await;
    let addr = suite.addr("HTTP");
    let host = "paths.example.com";
    // (request target, backend, the path and query the backend sees)
    for (target, backend, path) in [
        (
            "/api/../internal/secret.txt",
            "infra-backend-v2",
            "/internal/secret.txt",
        ),
        (
            "/api/%2e%2e/internal/secret.txt",
            "infra-backend-v2",
            "/internal/secret.txt",
        ),
        (
            "/api/%2E%2E/internal/secret.txt",
            "infra-backend-v2",
            "/internal/secret.txt",
        ),
        ("/x/../admin", "infra-backend-v3", "/admin"),
        ("/%61dmin", "infra-backend-v3", "/admin"),
        ("//admin", "infra-backend-v3", "/admin"),
        ("/./admin", "infra-backend-v3", "/admin"),
        ("/./secret", "app-backend-v1", "/secret"),
        ("//secret", "app-backend-v1", "/secret"),
        ("/../../../secret", "app-backend-v1", "/secret"),
        (
            "/api//v1/./items?q=/../x",
            "infra-backend-v1",
            "/api/v1/items?q=/../x",
        ),
        // The rewrite works on the normalized path: `/rw/../admin` is `/admin`.
        ("/rw/../admin", "infra-backend-v3", "/admin"),
        ("/rw/a/../b", "web-backend", "/new/b"),
        // Encoded slashes stay one segment: no PathPrefix /api match, hex upper-cased.
        ("/api%2f..%2fadmin", "app-backend-v2", "/api%2F..%2Fadmin"),
        ("/api/%7Euser", "infra-backend-v1", "/api/~user"),
    ] {
        let answer = raw(addr, &get(target, host)).await;
        assert_eq!(answer.status, 200, "{target}: {}", answer.text);
        assert_eq!(answer.seen(), (backend, path, host), "{target}");
    }
    for target in ["/api/%zz", "/api/%2", "*", "admin"] {
        let answer = raw(addr, &get(target, host)).await;
        assert_eq!(answer.status, 400, "{target}: {}", answer.text);
    }
}

#[tokio::test]
async fn the_backend_sees_the_host_the_request_was_routed_on() {
    let (suite, _) = started().await;
    let addr = suite.addr("HTTP");
    // Absolute-form: the target's authority routes and becomes the Host (RFC 9112 §3.2.2).
    let answer = raw(
        addr,
        "GET http://a.example.com/x HTTP/1.1\r\nHost: b.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.seen(), ("infra-backend-v1", "/x", "a.example.com"));
    // Absolute-form paths are normalized too.
    let answer = raw(
        addr,
        "GET http://paths.example.com/api/../admin HTTP/1.1\r\nHost: paths.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        answer.seen(),
        ("infra-backend-v3", "/admin", "paths.example.com")
    );

    for (what, head) in [
        (
            "duplicate Host",
            "GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\nConnection: close\r\n\r\n",
        ),
        (
            "identical duplicate Host",
            "GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: a.example.com\r\nConnection: close\r\n\r\n",
        ),
        (
            "no Host on HTTP/1.1",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "Host with userinfo",
            "GET / HTTP/1.1\r\nHost: user@a.example.com\r\nConnection: close\r\n\r\n",
        ),
        (
            "Host with spaces",
            "GET / HTTP/1.1\r\nHost: x status=200 route=infra/admin backend=\"forged\"\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let answer = raw(addr, head).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.text);
    }
    // The refused Host reaches the access log quoted and escaped, as one field.
    meridian_tests::eventually(
        "the forged Host logged as one quoted field",
        Duration::from_secs(10),
        || async {
            let log = suite.gateway_log();
            if log.contains(r#"host="x status=200 route=infra/admin backend=\"forged\"""#) {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn http2_host_must_agree_with_authority() {
    let (suite, cert) = started().await;
    let addr = suite.addr("HTTPS");
    let tls = meridian_tests::tls::connect_offering(addr, "a.example.com", &cert, &[b"h2"])
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut send = async |path: &str, host: Option<&str>| {
        let mut request = http::Request::builder()
            .uri(format!("https://a.example.com{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        if let Some(host) = host {
            request
                .headers_mut()
                .insert(http::header::HOST, host.parse().unwrap());
        }
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        Answer {
            status,
            echo: serde_json::from_str(&text).unwrap_or_default(),
            text,
        }
    };
    // :authority alone, and with an agreeing host field: routed on a, which the backend sees.
    for host in [None, Some("a.example.com"), Some("A.example.com:443")] {
        let answer = send("/x/../y", host).await;
        assert_eq!(answer.status, 200, "{host:?}: {}", answer.text);
        assert_eq!(
            answer.seen(),
            ("infra-backend-v1", "/y", "a.example.com"),
            "{host:?}"
        );
    }
    // A host field naming another host is malformed (RFC 9113 §8.3.1), not a way around 421.
    let answer = send("/", Some("b.example.com")).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(answer.text.contains(":authority"), "{}", answer.text);
    let answer = send("/%zz", None).await;
    assert_eq!(answer.status, 400, "{}", answer.text);
}
