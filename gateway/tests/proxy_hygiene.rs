//! Protocol hygiene of the proxy over real sockets, against scripted raw HTTP/1.1 backends
//! (and one h2c backend): h2c upgrades and 101s for protocols nobody asked for,
//! `Connection`-listed fields, request bodies hyper's client would drop, client body errors
//! (400, with HTTP/1.1 and h2c backends) versus malformed upstream responses (502) versus
//! connection failures (503), bodies cut short (recorded as aborted), one access log line
//! per request, the send and client body timeouts, CONNECT and `OPTIONS *`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use meridian_gateway::{GatewayHandle, GatewayOptions};
use meridian_proto::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, Endpoint, GatewayConfig, Listener, ListenerProtocol,
};
use meridian_proto::model::route::{
    BackendRef, HeaderModifier, HttpBackendRef, HttpFilter, HttpRoute, HttpRouteMatch,
    HttpRouteRule, PathMatch, RequestMirror, Resolution, Timeouts,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use common::{free_port, service};

/// What a raw backend does with one request: the bytes to write back, then whether to hold
/// the connection open (for a tunnel) or close it.
struct Script {
    reply: Vec<u8>,
    hold: bool,
}

fn reply(bytes: impl Into<Vec<u8>>) -> Script {
    Script {
        reply: bytes.into(),
        hold: false,
    }
}

/// A backend that reads one request per connection (head plus a `Content-Length` or chunked
/// body), reports the raw bytes, and writes what the script says.
struct RawBackend {
    addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl RawBackend {
    async fn next_request(&mut self) -> String {
        let bytes = tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("the backend got no request")
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

async fn raw_backend(script: impl Fn(&str) -> Script + Send + Sync + 'static) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, script) = (tx.clone(), Arc::clone(&script));
            tokio::spawn(async move {
                let Some(request) = read_request(&mut stream).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&request).into_owned();
                let _ = tx.send(request);
                let script = script(&text);
                let _ = stream.write_all(&script.reply).await;
                if script.hold {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    RawBackend { addr, requests }
}

/// One request: the head, then a body by `Content-Length` or chunked framing. `None` when the
/// connection ends before a head.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => find(body, b"0\r\n\r\n").is_some(),
            None => true,
        };
        if done {
            return Some(buf);
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Some(buf),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes and reads the response until the gateway closes or `timeout` passes.
async fn exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// Access-log lines of every test in this binary.
fn access_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        access_log()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("access=info")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

/// A gateway whose log lines the tests can read.
async fn gateway() -> GatewayHandle {
    init();
    common::gateway().await
}

async fn gateway_with(adjust: impl FnOnce(&mut GatewayOptions)) -> GatewayHandle {
    init();
    common::gateway_with(adjust).await
}

/// A gateway on a fresh port routing every request to `backend` (HTTP/1.1), with `filters` on
/// the rule; `route` names the route (`default/<route>`) for metrics and logs.
async fn serve(route: &str, backend: SocketAddr, filters: Vec<HttpFilter>) -> (GatewayHandle, u16) {
    serve_with(route, backend, filters, AppProtocol::Http1).await
}

/// A reference to the `default/raw:8080` Service every test route sends to.
fn raw_service() -> BackendRef {
    BackendRef {
        group: String::new(),
        kind: "Service".into(),
        namespace: "default".into(),
        name: "raw".into(),
        port: Some(8080),
        resolution: Resolution::Service(service("raw")),
    }
}

/// [`serve`] on `gw`.
async fn serve_on(gw: GatewayHandle, route: &str, backend: SocketAddr) -> (GatewayHandle, u16) {
    configure(gw, route, backend, vec![], AppProtocol::Http1).await
}

/// [`serve`], with the backend spoken to in `app_protocol`.
async fn serve_with(
    route: &str,
    backend: SocketAddr,
    filters: Vec<HttpFilter>,
    app_protocol: AppProtocol,
) -> (GatewayHandle, u16) {
    configure(gateway().await, route, backend, filters, app_protocol).await
}

async fn configure(
    gw: GatewayHandle,
    route: &str,
    backend: SocketAddr,
    filters: Vec<HttpFilter>,
    app_protocol: AppProtocol,
) -> (GatewayHandle, u16) {
    let port = free_port();
    gw.apply(route_config(port, route, backend, filters, app_protocol))
        .await
        .unwrap();
    (gw, port)
}

/// Config version 1: one HTTP listener on `port` whose one route sends everything to
/// `backend`.
fn route_config(
    port: u16,
    route: &str,
    backend: SocketAddr,
    filters: Vec<HttpFilter>,
    app_protocol: AppProtocol,
) -> GatewayConfig {
    GatewayConfig {
        version: 1,
        gateway: Some("default/gw".parse().unwrap()),
        listeners: vec![Listener {
            name: "http".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
            port,
            protocol: ListenerProtocol::Http,
            hostname: None,
            tls: None,
        }],
        http_routes: vec![Attached {
            route: HttpRoute {
                key: format!("default/{route}").parse().unwrap(),
                created_unix_ms: 0,
                parent_refs: vec![],
                hostnames: vec![],
                rules: vec![HttpRouteRule {
                    name: None,
                    matches: vec![HttpRouteMatch {
                        path: PathMatch::Prefix("/".into()),
                        headers: vec![],
                        query_params: vec![],
                        method: None,
                    }],
                    filters,
                    backend_refs: vec![HttpBackendRef {
                        backend_ref: raw_service(),
                        weight: 1,
                        filters: vec![],
                    }],
                    timeouts: Timeouts::default(),
                    retry: None,
                    session_persistence: None,
                }],
            },
            attachments: vec![Attachment {
                listener: "http".into(),
                hostnames: vec![],
            }],
        }],
        backends: vec![Backend {
            key: service("raw"),
            app_protocol,
            endpoints: vec![Endpoint {
                addr: backend,
                ready: true,
            }],
            tls: None,
        }],
        ..GatewayConfig::default()
    }
}

async fn metrics(gw: &GatewayHandle) -> String {
    let mut stream = TcpStream::connect(gw.admin_addr()).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn h2c_upgrades_are_stripped_and_not_tunnelled() {
    // The backend would switch to h2c if asked.
    let mut raw = raw_backend(|request| {
        if request.to_ascii_lowercase().contains("upgrade: h2c") {
            Script {
                reply: b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec(),
                hold: true,
            }
        } else {
            reply(OK_EMPTY)
        }
    })
    .await;
    let (_gw, port) = serve("h2c", raw.addr, vec![]).await;

    let response = exchange(
        port,
        b"GET /h2c HTTP/1.1\r\nHost: up.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    let forwarded = raw.next_request().await.to_ascii_lowercase();
    assert!(!forwarded.contains("upgrade"), "{forwarded}");
    assert!(!forwarded.contains("http2-settings"), "{forwarded}");
    assert_eq!(status_of(&response), 200, "{response}");

    // With WebSocket asked for as well, only WebSocket goes upstream.
    let response = exchange(
        port,
        b"GET /both HTTP/1.1\r\nHost: up.example\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let forwarded = raw.next_request().await.to_ascii_lowercase();
    assert!(
        forwarded.contains("\r\nupgrade: websocket\r\n"),
        "{forwarded}"
    );
    assert!(!forwarded.contains("h2c"), "{forwarded}");
    assert_eq!(status_of(&response), 200, "{response}");
}

#[tokio::test]
async fn a_101_to_a_protocol_the_client_did_not_ask_for_is_a_bad_gateway() {
    let mut raw = raw_backend(|_| Script {
        reply: b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI * HTTP/2.0\r\n".to_vec(),
        hold: true,
    })
    .await;
    let (_gw, port) = serve("switch", raw.addr, vec![]).await;
    let response = exchange(
        port,
        b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    raw.next_request().await;
    assert_eq!(status_of(&response), 502, "{response}");
    assert!(!response.contains("PRI *"), "{response}");
}

#[tokio::test]
async fn connection_cannot_remove_host_or_the_gateways_own_fields() {
    let mut raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let filters = vec![HttpFilter::RequestHeaderModifier(HeaderModifier {
        set: vec![("X-Internal".into(), "yes".into())],
        add: vec![],
        remove: vec![],
    })];
    let (_gw, port) = serve("hop", raw.addr, filters).await;
    let response = exchange(
        port,
        b"GET /hop HTTP/1.1\r\nHost: hop.example\r\nX-Client-Hop: 1\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close, Host, X-Forwarded-For, X-Internal, X-Client-Hop\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let forwarded = raw.next_request().await.to_ascii_lowercase();
    assert!(
        forwarded.contains("\r\nhost: hop.example\r\n"),
        "{forwarded}"
    );
    assert!(forwarded.contains("\r\nx-internal: yes\r\n"), "{forwarded}");
    // The client's own X-Forwarded-For was hop-by-hop; the gateway's is not.
    assert!(
        forwarded.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{forwarded}"
    );
    assert!(!forwarded.contains("x-client-hop"), "{forwarded}");
}

#[tokio::test]
async fn get_with_a_chunked_body_forwards_the_body() {
    let mut raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let (_gw, port) = serve("getbody", raw.addr, vec![]).await;
    let response = exchange(
        port,
        b"GET /search HTTP/1.1\r\nHost: x.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let forwarded = raw.next_request().await;
    let body = &forwarded[forwarded.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        body.contains("hello") && body.contains(" world"),
        "{forwarded:?}"
    );
}

/// A request body of unknown length (its size hint says nothing).
struct Chunks(std::collections::VecDeque<bytes::Bytes>);

impl hyper::body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn http2_get_with_data_frames_forwards_the_body() {
    let mut raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let (_gw, port) = serve("h2body", raw.addr, vec![]).await;
    let mut sender = h2c_client(port).await;
    // DATA frames and no content-length: the gateway cannot know the length up front.
    let body = Chunks(vec!["hello".into(), " world".into()].into());
    let request = http::Request::get(format!("http://x.example:{port}/search"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let forwarded = raw.next_request().await;
    let body = &forwarded[forwarded.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        body.contains("hello") && body.contains(" world"),
        "{forwarded:?}"
    );
}

#[tokio::test]
async fn client_body_errors_are_bad_requests_not_upstream_failures() {
    let raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let (gw, port) = serve("badbody", raw.addr, vec![]).await;
    bad_bodies_get_400(&gw, port, "badbody").await;
}

/// Sends two malformed chunked bodies through `route` on `port`: each gets 400, counted as
/// the client's (4xx) and not against the backend.
async fn bad_bodies_get_400(gw: &GatewayHandle, port: u16, route: &str) {
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut request = b"POST /upload HTTP/1.1\r\nHost: x.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec();
        request.extend_from_slice(body);
        let response = exchange(port, &request).await;
        assert_eq!(status_of(&response), 400, "{route} {body:?}: {response}");
    }
    counted_as_client_faults(gw, route, 2).await;
}

/// `route` answered `n` requests, all 4xx, none counted against the backend.
async fn counted_as_client_faults(gw: &GatewayHandle, route: &str, n: u32) {
    let metrics = metrics(gw).await;
    for (class, count) in [("4xx", n), ("5xx", 0)] {
        assert!(
            metrics.contains(&format!(
                r#"gateway_route_requests_total{{route="default/{route}",rule="0",class="{class}"}} {count}"#
            )),
            "{route}: {metrics}"
        );
    }
    assert!(
        metrics.contains(r#"gateway_backend_errors_total{backend="default/raw:8080"} 0"#)
            || !metrics.contains("gateway_backend_errors_total{"),
        "{route}: {metrics}"
    );
}

/// An h2c backend that reads each request's whole body, then answers 200.
async fn h2c_backend() -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let status = match request.into_body().collect().await {
                            Ok(_) => 200,
                            Err(_) => 499,
                        };
                        let response = hyper::Response::builder()
                            .status(status)
                            .body(http_body_util::Empty::<bytes::Bytes>::new())
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn client_body_errors_are_bad_requests_with_an_h2c_backend_too() {
    let backend = h2c_backend().await;
    let (gw, port) = serve_with("badbody-h2", backend, vec![], AppProtocol::H2c).await;
    // A good body first: the backend and the h2c path work.
    let good = exchange(
        port,
        b"POST /upload HTTP/1.1\r\nHost: x.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&good), 200, "{good}");
    bad_bodies_get_400(&gw, port, "badbody-h2").await;
}

#[tokio::test]
async fn malformed_upstream_responses_are_bad_gateway_and_connection_failures_unavailable() {
    let raw = raw_backend(|request| {
        let path = request.split(' ').nth(1).unwrap_or("");
        let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
        let big = "a".repeat(1024 * 1024);
        match path {
            "/dupcl" => {
                reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
            }
            "/obsfold" => reply("HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n"),
            "/garbage" => reply("SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            "/many" => reply(format!(
                "HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n"
            )),
            "/big" => reply(format!(
                "HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n"
            )),
            "/999" => reply("HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"),
            "/close" => reply(""),
            _ => reply(OK_EMPTY),
        }
    })
    .await;
    let (_gw, port) = serve("bad", raw.addr, vec![]).await;
    let cases = [
        ("/dupcl", 502),
        ("/obsfold", 502),
        ("/garbage", 502),
        ("/many", 502),
        ("/big", 502),
        ("/999", 502),
        // Gone before answering: a connection error (Gateway API conformance expects 503 or
        // 500 for disconnects).
        ("/close", 503),
        ("/fine", 200),
    ];
    for (path, want) in cases {
        // GET takes the lean client, POST hyper's.
        for method in ["GET", "POST"] {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: x.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let request = if method == "GET" {
                request.replace("Content-Length: 0\r\n", "")
            } else {
                request
            };
            let response = exchange(port, request.as_bytes()).await;
            assert_eq!(status_of(&response), want, "{method} {path}: {response}");
        }
    }

    // Nothing listening at all.
    // Below the ephemeral range: no other bind to port 0 can start listening there.
    let gone = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_gw, port) = serve("gone", gone, vec![]).await;
    let response = exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 503, "{response}");
}

#[tokio::test]
async fn a_body_cut_short_upstream_is_recorded_as_aborted() {
    let raw = raw_backend(|_| {
        let mut reply_bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
        reply_bytes.extend_from_slice(&[b'x'; 100]);
        reply(reply_bytes)
    })
    .await;
    let (gw, port) = serve("cut", raw.addr, vec![]).await;
    for request in [
        &b"GET /cut HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n"[..],
        b"POST /cut HTTP/1.1\r\nHost: x.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        // The status line may not even get out before the error (hyper flushes head and
        // first bytes together); when it does, the client sees the body cut short.
        let response = exchange(port, request).await;
        if !response.is_empty() {
            assert_eq!(status_of(&response), 200, "{response}");
            let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
            assert!(body.len() < 1000, "the client sees the truncation");
        }
    }
    let metrics = metrics(&gw).await;
    assert!(
        metrics
            .contains(r#"gateway_route_aborted_responses_total{route="default/cut",rule="0"} 2"#),
        "{metrics}"
    );
    // One line per request, written when the body failed, and it says so.
    let lines = log_lines("route=default/cut", 2).await;
    assert!(
        lines.iter().all(|line| line.contains("outcome=\"aborted\"")
            && line.contains("status=200")
            && line.contains("error=")),
        "{lines:#?}"
    );
}

/// Waits for the one access log line of `path` and checks it has each of `fields`.
async fn logged_once(path: &str, fields: &[&str]) {
    let lines = log_lines(&format!("path={path:?}"), 1).await;
    for field in fields {
        assert!(lines[0].contains(field), "{field} in {lines:#?}");
    }
}

/// The access log lines containing `needle`, once there are `count` of them (lines of
/// streamed responses are written when the body ends, after the client has read it).
async fn log_lines(needle: &str, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = String::from_utf8_lossy(&access_log().lock().unwrap()).into_owned();
        let lines: Vec<String> = log
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect();
        if lines.len() >= count || tokio::time::Instant::now() > deadline {
            assert_eq!(lines.len(), count, "{log}");
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_streamed_response_is_logged_once_when_it_ends() {
    const LEN: usize = 4 << 20;
    let raw = raw_backend(|_| {
        let mut reply_bytes =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").into_bytes();
        reply_bytes.resize(reply_bytes.len() + LEN, b'x');
        reply(reply_bytes)
    })
    .await;
    let (_gw, port) = serve("streamed", raw.addr, vec![]).await;

    // Read to the end: one line, complete, with every body byte counted.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /whole HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    assert!(response.len() > LEN);
    logged_once(
        "/whole",
        &[
            "outcome=\"complete\"",
            &format!("body_bytes={LEN}"),
            "status=200",
        ],
    )
    .await;

    // Go away after the head: one line, client_closed, nothing counted as aborted.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /partial HTTP/1.1\r\nHost: x.example\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    stream.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    drop(stream);
    logged_once("/partial", &["outcome=\"client_closed\"", "status=200"]).await;
}

#[tokio::test]
async fn connect_is_refused_and_options_star_is_answered() {
    let mut raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let (_gw, port) = serve("methods", raw.addr, vec![]).await;
    let response = exchange(
        port,
        b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 405, "{response}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), raw.requests.recv())
            .await
            .is_err(),
        "CONNECT must not reach the backend"
    );

    let response = exchange(
        port,
        b"OPTIONS * HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    let status = status_of(&response);
    assert!((200..500).contains(&status), "{response}");
    // The gateway still serves.
    let response = exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_dropped_after_the_send_timeout() {
    // Big enough not to fit in the socket buffers between backend and client.
    const STUCK: usize = 64 << 20;
    const SLOW: usize = 4 << 20;
    let raw = raw_backend(|request| {
        let len = if request.starts_with("GET /stuck") {
            STUCK
        } else {
            SLOW
        };
        let mut reply_bytes =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        reply_bytes.resize(reply_bytes.len() + len, b'x');
        reply(reply_bytes)
    })
    .await;
    let gw = gateway_with(|options| options.send_timeout = Some(Duration::from_secs(2))).await;
    let (gw, port) = serve_on(gw, "stall", raw.addr).await;

    // A slow reader that keeps making progress gets its whole response: a megabyte every
    // 200 ms, its writes blocked in between for far less than the send timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match slow.read(&mut chunk).await.unwrap() {
            0 => break,
            n => got += n,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(got > SLOW, "the slow reader got {got} bytes");

    // One that stops reading is dropped; its line says why.
    let mut stuck = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stuck
        .write_all(b"GET /stuck HTTP/1.1\r\nHost: x.example\r\n\r\n")
        .await
        .unwrap();
    logged_once("/stuck", &["outcome=\"send_timeout\""]).await;
    let metrics = metrics(&gw).await;
    assert!(
        metrics.contains(&format!(
            "gateway_connections_timed_out_total{{port=\"{port}\"}} 1"
        )),
        "{metrics}"
    );
    drop(stuck);
}

#[tokio::test]
async fn an_http2_stream_left_without_window_is_dropped_after_the_send_timeout() {
    use http_body_util::BodyExt;
    const STUCK: usize = 64 << 20;
    const SLOW: usize = 128 << 10;
    // Answers `/h2-stuck` with more than any buffer holds and reports when its write fails
    // (the gateway closed the upstream connection); other paths get `SLOW` bytes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<usize>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut stream).await else {
                    return;
                };
                let len = if request.starts_with(b"GET /h2-stuck") {
                    STUCK
                } else {
                    SLOW
                };
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                stream.write_all(head.as_bytes()).await.unwrap();
                let chunk = vec![b'x'; 64 << 10];
                let mut sent = 0;
                while sent < len {
                    if stream.write_all(&chunk).await.is_err() {
                        let _ = closed_tx.send(sent);
                        return;
                    }
                    sent += chunk.len();
                }
            });
        }
    });
    let gw = gateway_with(|options| options.send_timeout = Some(Duration::from_secs(1))).await;
    let (gw, port) = serve_on(gw, "h2-window", backend).await;
    // A client with a small stream window and a large connection window, so one stream it
    // does not read leaves the connection room for the others.
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(16 << 10)
            .initial_connection_window_size(8 << 20)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                stream,
            ))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        hyper::Request::get(format!("http://x.example{path}"))
            .body(http_body_util::Empty::new())
            .unwrap()
    };

    // The client takes the head of `/h2-stuck` and never reads its body.
    let stuck = sender.send_request(get("/h2-stuck")).await.unwrap();
    assert_eq!(stuck.status(), 200);
    let sent = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the upstream connection of the stuck stream stays open")
        .unwrap();
    assert!(sent < STUCK, "the backend sent everything");
    logged_once("/h2-stuck", &["outcome=\"send_timeout\""]).await;
    let metrics = metrics(&gw).await;
    assert!(
        metrics.contains(&format!(
            "gateway_streams_timed_out_total{{port=\"{port}\"}} 1"
        )),
        "{metrics}"
    );
    // Reading it now ends in a reset, not in a body that looks complete.
    let read = tokio::time::timeout(Duration::from_secs(5), stuck.into_body().collect()).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "the stuck stream ended with {read:?}"
    );

    // The connection's other streams carry on, and a slow reader that keeps granting window
    // gets its whole body although it takes longer than the send timeout (frames larger
    // than 16 KiB are handed out in pieces, so no piece waits long: unit tests in
    // `stream_stall`).
    let slow = sender.send_request(get("/h2-slow")).await.unwrap();
    let started = std::time::Instant::now();
    let mut body = slow.into_body();
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            got += data.len();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(got, SLOW);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    logged_once("/h2-slow", &["outcome=\"complete\""]).await;
}

#[tokio::test]
async fn a_request_body_that_stalls_gets_408_after_the_client_body_timeout() {
    let raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let h2c = h2c_backend().await;
    let mirror = HttpFilter::RequestMirror(RequestMirror {
        backend_ref: raw_service(),
        fraction: None,
    });
    // The response timeout is shorter, but counts from the end of the request body: the
    // client, not the backend, is the one late here, so 408, not 504.
    let timeout = |options: &mut GatewayOptions| {
        options.client_body_timeout = Some(Duration::from_millis(500));
        options.upstream_response_timeout = Some(Duration::from_millis(300));
    };
    // Streamed to an HTTP/1.1 backend, streamed to an h2c one, and buffered (a mirror needs
    // the whole body first).
    let cases = [
        ("stall-h1", raw.addr, vec![], AppProtocol::Http1),
        ("stall-h2c", h2c, vec![], AppProtocol::H2c),
        ("stall-buffered", raw.addr, vec![mirror], AppProtocol::Http1),
    ];
    for (route, backend, filters, protocol) in cases {
        let gw = gateway_with(timeout).await;
        let (gw, port) = configure(gw, route, backend, filters, protocol).await;
        // Ten of the hundred bytes promised, then nothing.
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: x.example\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let response = read_head(&mut stream, route).await;
        assert_eq!(status_of(&response), 408, "{route}: {response}");
        counted_as_client_faults(&gw, route, 1).await;
    }
}

#[tokio::test]
async fn a_request_the_client_abandons_before_the_answer_is_logged_as_client_closed() {
    // A backend that takes the request and never answers.
    let raw = raw_backend(|_| Script {
        reply: Vec::new(),
        hold: true,
    })
    .await;
    let (_gw, port) = serve("abandoned", raw.addr, vec![]).await;
    let mut sender = h2c_client(port).await;
    let request = hyper::Request::get("http://x.example/abandoned")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    // Give up on the answer after a moment: the stream is reset.
    let answer =
        tokio::time::timeout(Duration::from_millis(500), sender.send_request(request)).await;
    assert!(answer.is_err(), "the backend never answers");
    logged_once("/abandoned", &["status=499", "outcome=\"client_closed\""]).await;
}

#[tokio::test]
async fn a_backend_that_stops_reading_an_upload_gets_504_not_a_hang() {
    // Takes the connection, reads a little, then neither reads nor answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut first = [0u8; 1024];
            let _ = stream.read(&mut first).await;
            held.push(stream);
        }
    });
    let gw = gateway_with(|options| {
        options.upstream_response_timeout = Some(Duration::from_millis(500));
    })
    .await;
    let (_gw, port) = serve_on(gw, "unread", backend).await;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // A 256 MiB upload, written until the gateway stops taking it.
    let upload = tokio::spawn(async move {
        let head = b"POST /upload HTTP/1.1\r\nHost: x.example\r\nContent-Length: 268435456\r\n\r\n";
        writer.write_all(head).await?;
        let chunk = vec![b'x'; 64 * 1024];
        loop {
            writer.write_all(&chunk).await?;
        }
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    });
    let response = read_head(&mut reader, "the held upload").await;
    assert_eq!(status_of(&response), 504, "{response}");
    upload.abort();
}

/// Reads until a response head is complete (the connection may stay open); panics naming
/// `what` when none comes within 10 s.
async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin), what: &str) -> String {
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            other => panic!("{what}: no answer ({other:?})"),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// An HTTP/2 (prior knowledge) client connection to the gateway on `port`.
async fn h2c_client<B>(port: u16) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// Config version 2 of [`route_config`]: the same, on a new port, so the old port drains.
async fn move_to_a_new_port(
    gw: &GatewayHandle,
    route: &str,
    backend: SocketAddr,
    app: AppProtocol,
) {
    let mut config = route_config(free_port(), route, backend, vec![], app);
    config.version = 2;
    gw.apply(config).await.unwrap();
}

/// Reads until the gateway closes the connection; `Err` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return Err(seen),
        }
    }
}

#[tokio::test]
async fn requests_still_in_flight_when_a_drain_times_out_are_closed_and_logged() {
    // `/hang` is never answered; `/stream` gets a head and 100 of its 1000 bytes.
    let mut raw = raw_backend(|request| {
        let reply = if request.starts_with("GET /stream") {
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
            bytes.extend_from_slice(&[b'x'; 100]);
            bytes
        } else {
            Vec::new()
        };
        Script { reply, hold: true }
    })
    .await;
    let gw = gateway_with(|o| o.drain_timeout = Duration::from_secs(2)).await;
    let (gw, port) = configure(gw, "drained", raw.addr, vec![], AppProtocol::Http1).await;
    // A connection that has sent nothing has nothing to finish.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut hang = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    hang.write_all(b"GET /drained/hang HTTP/1.1\r\nHost: x.example\r\n\r\n")
        .await
        .unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x.example\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream, "/stream").await;
    assert_eq!(status_of(&head), 200, "{head}");
    // An HTTP/2 stream waiting for its answer on a third connection.
    let mut sender = h2c_client(port).await;
    let request = hyper::Request::get("http://x.example/drained/h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let h2 = tokio::spawn(sender.send_request(request));
    for _ in 0..3 {
        raw.next_request().await;
    }

    // The port goes away: its connections are asked to finish, then closed at the timeout.
    move_to_a_new_port(&gw, "drained", raw.addr, AppProtocol::Http1).await;
    closed_within(&mut silent, Duration::from_millis(1500))
        .await
        .expect("a silent connection closes when the drain starts, not at its timeout");
    for (what, conn) in [("/drained/hang", &mut hang), ("/stream", &mut stream)] {
        let seen = closed_within(conn, Duration::from_secs(10)).await;
        let seen = seen
            .unwrap_or_else(|seen| panic!("{what}: still open after the drain timeout: {seen:?}"));
        assert!(
            seen.len() <= 100,
            "{what}: the client sees no whole response"
        );
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), h2)
        .await
        .expect("the HTTP/2 stream is closed at the drain timeout")
        .unwrap();
    assert!(answer.is_err(), "{answer:?}");

    // Each says why in its one line: the gateway cut it, not the client.
    logged_once(
        "/drained/hang",
        &["status=503", "outcome=\"drain_timeout\""],
    )
    .await;
    logged_once("/drained/h2", &["status=503", "outcome=\"drain_timeout\""]).await;
    logged_once(
        "/stream",
        &["status=200", "outcome=\"drain_timeout\"", "body_bytes=100"],
    )
    .await;
    let metrics = metrics(&gw).await;
    assert!(
        metrics.contains(
            r#"gateway_route_requests_total{route="default/drained",rule="0",class="5xx"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_upgraded_connection_closes_when_its_port_drains_or_goes_quiet() {
    let raw = raw_backend(|_| Script {
        reply:
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec(),
        hold: true,
    })
    .await;
    let gw = gateway_with(|o| o.stream_idle_timeout = Duration::from_millis(800)).await;
    let (gw, port) = configure(gw, "tunnel", raw.addr, vec![], AppProtocol::WebSocket).await;
    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: x.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let open = || async {
        let mut tunnel = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tunnel.write_all(upgrade).await.unwrap();
        let head = read_head(&mut tunnel, "/ws").await;
        assert_eq!(status_of(&head), 101, "{head}");
        tunnel
    };
    // Traffic keeps a tunnel open past the idle timeout; silence closes it.
    let mut quiet = open().await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        quiet.write_all(b"ping").await.unwrap();
    }
    closed_within(&mut quiet, Duration::from_secs(10))
        .await
        .expect("a silent tunnel closes after the idle timeout");
    // A drain closes a tunnel at once: a raw stream has no graceful way to finish.
    let mut busy = open().await;
    move_to_a_new_port(&gw, "tunnel", raw.addr, AppProtocol::WebSocket).await;
    closed_within(&mut busy, Duration::from_millis(600))
        .await
        .expect("the tunnel closes when its port drains");
}

#[tokio::test]
async fn a_body_too_large_to_retry_is_streamed_once_whatever_its_framing() {
    // A route with retries buffers request bodies to resend them; one past the buffer limit
    // goes out once, streamed (as with a Content-Length over the limit), not refused with 413.
    const LIMIT: usize = 64 * 1024;
    let mut raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let gw = gateway_with(|o| o.max_buffered_body = LIMIT).await;
    let port = free_port();
    let mut config = route_config(port, "retried", raw.addr, vec![], AppProtocol::Http1);
    config.http_routes[0].route.rules[0].retry = Some(meridian_proto::model::route::Retry {
        codes: vec![503],
        attempts: 2,
        backoff: None,
    });
    gw.apply(config).await.unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let chunks = 12; // 192 KiB, three times the limit
    let mut body = Vec::new();
    for i in 0..chunks {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len() + 1).as_bytes());
        body.extend_from_slice(&chunk);
        // A mark outside the hex digits the gateway's own chunk sizes use.
        body.push(b'g' + i as u8);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: x.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    request.extend_from_slice(&body);
    let response = exchange(port, &request).await;
    assert_eq!(status_of(&response), 200, "{response}");
    let forwarded = raw.next_request().await;
    let sent = &forwarded[forwarded.find("\r\n\r\n").unwrap() + 4..];
    let marks: String = sent.chars().filter(|c| ('g'..='r').contains(c)).collect();
    assert_eq!(marks, "ghijklmnopqr", "every chunk, in order, once");

    // The same over HTTP/2 without a content-length.
    let mut sender = h2c_client(port).await;
    let body = Chunks(
        (0..chunks)
            .map(|_| bytes::Bytes::from(chunk.clone()))
            .collect(),
    );
    let request = http::Request::post(format!("http://x.example:{port}/upload"))
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let forwarded = raw.next_request().await;
    let sent = forwarded.len() - forwarded.find("\r\n\r\n").unwrap() - 4;
    assert!(
        sent >= chunks * chunk.len(),
        "{sent} bytes reached the backend"
    );
}

#[tokio::test]
async fn a_shutdown_waits_for_the_drains_of_removed_ports() {
    // A request on a port just removed from the config is still running when the gateway
    // shuts down: the port's drain, not the stopping threads, cuts it, and says so.
    let mut raw = raw_backend(|_| Script {
        reply: Vec::new(),
        hold: true,
    })
    .await;
    let gw = gateway_with(|o| o.drain_timeout = Duration::from_millis(500)).await;
    let (gw, port) = configure(gw, "shutdown", raw.addr, vec![], AppProtocol::Http1).await;
    let mut hang = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    hang.write_all(b"GET /gone-at-shutdown HTTP/1.1\r\nHost: x.example\r\n\r\n")
        .await
        .unwrap();
    raw.next_request().await;
    move_to_a_new_port(&gw, "shutdown", raw.addr, AppProtocol::Http1).await;
    gw.shutdown().await;
    logged_once(
        "/gone-at-shutdown",
        &["status=503", "outcome=\"drain_timeout\""],
    )
    .await;
}

/// A backend that answers the first request of each connection with keep-alive, then reads
/// the next one and closes without a byte of answer: its idle timeout racing the gateway's
/// reuse of the connection, deterministically. Reports every request it reads.
async fn closes_reused_connections() -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some(first) = read_request(&mut stream).await else {
                    return;
                };
                let _ = tx.send(first);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                if let Some(second) = read_request(&mut stream).await {
                    let _ = tx.send(second);
                }
            });
        }
    });
    RawBackend { addr, requests }
}

/// Sends `request` on a new connection and returns the status.
async fn status(port: u16, request: &str) -> u16 {
    status_of(&exchange(port, request.as_bytes()).await)
}

#[tokio::test]
async fn an_idempotent_request_a_reused_connection_drops_unanswered_is_sent_again() {
    let mut raw = closes_reused_connections().await;
    let (_gw, port) = serve("reuse", raw.addr, vec![]).await;
    let mut seen = Vec::new();
    // One client connection, so every request is served on the same shard (and its pool).
    // GET takes the lean client, OPTIONS and POST hyper's; each first request opens the
    // connection the next one reuses.
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for (method, path) in [
        ("GET", "/get-1"),
        ("GET", "/get-2"),
        ("OPTIONS", "/opt-1"),
        ("OPTIONS", "/opt-2"),
    ] {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x.example\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut client, path).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        // The head's read may have taken the two-byte body too.
        if !head.ends_with("\r\n\r\nok") {
            let mut body = [0u8; 2];
            client.read_exact(&mut body).await.unwrap();
        }
    }
    while let Ok(Some(request)) =
        tokio::time::timeout(Duration::from_millis(300), raw.requests.recv()).await
    {
        seen.push(String::from_utf8_lossy(&request).into_owned());
    }
    let count = |path: &str| seen.iter().filter(|r| r.contains(path)).count();
    // The second of each pair went out twice: on the dropped connection, then on a new one.
    assert_eq!(
        (
            count("/get-1"),
            count("/get-2"),
            count("/opt-1"),
            count("/opt-2")
        ),
        (1, 2, 1, 2),
        "{seen:?}"
    );

    // A POST is not idempotent: the backend may have acted on it, so it is not sent again.
    // Open a pooled hyper connection first (the OPTIONS above left one with the backend's
    // answer to its resend).
    client
        .write_all(b"POST /post HTTP/1.1\r\nHost: x.example\r\nContent-Length: 1\r\n\r\nx")
        .await
        .unwrap();
    let head = read_head(&mut client, "/post").await;
    let got = status_of(&head);
    let mut posts = 0;
    while let Ok(Some(request)) =
        tokio::time::timeout(Duration::from_millis(300), raw.requests.recv()).await
    {
        posts += usize::from(String::from_utf8_lossy(&request).contains("/post"));
    }
    assert_eq!(posts, 1, "the POST was sent {posts} times");
    assert_eq!(got, 503, "a POST the backend dropped unanswered");
}

#[tokio::test]
async fn a_refused_endpoint_is_skipped_and_its_requests_go_to_another() {
    let mut live = raw_backend(|_| reply(OK_EMPTY)).await;
    // Below the ephemeral range: nothing else starts listening there meanwhile.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = gateway().await;
    let port = free_port();
    let mut config = route_config(port, "halfdead", live.addr, vec![], AppProtocol::Http1);
    config.backends[0].endpoints.insert(
        0,
        Endpoint {
            addr: dead,
            ready: true,
        },
    );
    gw.apply(config).await.unwrap();
    // Nothing was sent to the dead endpoint, so any request may go elsewhere, a POST too; and
    // once refused, round-robin skips it.
    for i in 0..10 {
        let request = if i % 2 == 0 {
            format!("GET /{i} HTTP/1.1\r\nHost: x.example\r\nConnection: close\r\n\r\n")
        } else {
            format!(
                "POST /{i} HTTP/1.1\r\nHost: x.example\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            )
        };
        assert_eq!(status(port, &request).await, 200, "request {i}");
        live.next_request().await;
    }
}

#[tokio::test]
async fn an_http_1_0_request_without_host_reaches_the_backend_with_one() {
    let mut raw = raw_backend(|_| reply(OK_EMPTY)).await;
    let (_gw, port) = serve("nohost", raw.addr, vec![]).await;
    assert_eq!(status(port, "GET /nohost HTTP/1.0\r\n\r\n").await, 200);
    let request = raw.next_request().await.to_ascii_lowercase();
    assert!(request.starts_with("get /nohost http/1.1\r\n"), "{request}");
    // RFC 9112 §3.2: an HTTP/1.1 request without an authority carries an empty Host.
    assert!(request.contains("\r\nhost: \r\n"), "{request}");
}

#[tokio::test]
async fn an_http_1_1_client_that_accepts_trailers_gets_the_backends_trailers() {
    let raw = raw_backend(|_| {
        reply(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
             5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n",
        )
    })
    .await;
    let (_gw, port) = serve("trailers", raw.addr, vec![]).await;
    // GET takes the lean client, POST hyper's.
    for request in [
        "GET /t HTTP/1.1\r\nHost: x.example\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: x.example\r\nTE: trailers\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        let response = exchange(port, request.as_bytes()).await;
        let lower = response.to_ascii_lowercase();
        assert!(lower.contains("\r\ntrailer: x-checksum\r\n"), "{response}");
        assert!(
            lower.contains("\r\n0\r\nx-checksum: abc123\r\n\r\n"),
            "{request}: {response}"
        );
    }
}
