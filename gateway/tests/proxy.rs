//! Integration tests over real sockets: an in-process gateway in front of in-process echo
//! backends. Hot swap under load, TLS with SNI, h2c, WebSocket, passthrough, graceful drain,
//! rejected configs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_gateway::GatewayOptions;
use meridian_gateway::echo::websocket::{Message, read_message, write_message};
use meridian_gateway::echo::{EchoHandle, EchoOptions, spawn_echo};
use meridian_proto::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, Endpoint, GatewayConfig, Listener,
    ListenerProtocol, ListenerTls, TlsCertificate, TlsMode,
};
use meridian_proto::model::route::{
    BackendRef, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, PathMatch, Resolution,
    Timeouts, TlsRoute,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{free_port, gateway, service};

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn echo(name: &str) -> EchoHandle {
    spawn_echo(EchoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        name: name.into(),
        namespace: Some("default".into()),
        tls: None,
    })
    .await
    .unwrap()
}

fn backend(name: &str, addr: SocketAddr, app_protocol: AppProtocol) -> Backend {
    Backend {
        key: service(name),
        app_protocol,
        endpoints: vec![Endpoint { addr, ready: true }],
        tls: None,
    }
}

fn backend_ref(name: &str) -> HttpBackendRef {
    HttpBackendRef {
        backend_ref: BackendRef {
            group: String::new(),
            kind: "Service".into(),
            namespace: "default".into(),
            name: name.into(),
            port: Some(8080),
            resolution: Resolution::Service(service(name)),
        },
        weight: 1,
        filters: vec![],
    }
}

fn listener(
    name: &str,
    port: u16,
    protocol: ListenerProtocol,
    hostname: Option<&str>,
    tls: Option<ListenerTls>,
) -> Listener {
    Listener {
        name: name.into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
        port,
        protocol,
        hostname: hostname.map(str::to_string),
        tls,
    }
}

fn route_to(name: &str, listener: &str, hostnames: &[&str], backend: &str) -> Attached<HttpRoute> {
    Attached {
        route: HttpRoute {
            key: format!("default/{name}").parse().unwrap(),
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
                filters: vec![],
                backend_refs: vec![backend_ref(backend)],
                timeouts: Timeouts::default(),
                retry: None,
                session_persistence: None,
            }],
        },
        attachments: vec![Attachment {
            listener: listener.into(),
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        }],
    }
}

fn http_config(
    version: u64,
    port: u16,
    backend_name: &str,
    backends: Vec<Backend>,
) -> GatewayConfig {
    GatewayConfig {
        version,
        gateway: Some("default/gw".parse().unwrap()),
        listeners: vec![listener("http", port, ListenerProtocol::Http, None, None)],
        http_routes: vec![route_to("r", "http", &[], backend_name)],
        backends,
        ..GatewayConfig::default()
    }
}

fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_drops_no_request() {
    let (v1, v2) = (echo("v1").await, echo("v2").await);
    let gw = gateway().await;
    let port = free_port();
    let backends = vec![
        backend("v1", v1.addr(), AppProtocol::Http1),
        backend("v2", v2.addr(), AppProtocol::Http1),
    ];
    gw.apply(http_config(1, port, "v1", backends.clone()))
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/load");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        seen.insert(body["backend"].as_str().unwrap().to_string());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        }));
    }
    // Swap the route between the two backends 30 times while the workers run.
    for version in 2..32 {
        let target = if version % 2 == 0 { "v2" } else { "v1" };
        gw.apply(http_config(version, port, target, backends.clone()))
            .await
            .unwrap();
        let before = ok.load(Ordering::Relaxed);
        // Wait until some requests went through on this version (no sleeping for sync).
        let deadline = Instant::now() + Duration::from_secs(5);
        while ok.load(Ordering::Relaxed) < before + 20 && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during swaps"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 600,
        "too few requests: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["v1", "v2"]);
    assert_eq!(gw.config_version(), 31);
}

#[tokio::test]
async fn rejected_config_keeps_the_last_good_one() {
    let v1 = echo("v1").await;
    let gw = gateway().await;
    let admin = format!("http://{}", gw.admin_addr());
    let c = client();
    assert_eq!(
        c.get(format!("{admin}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let port = free_port();
    gw.apply(http_config(
        1,
        port,
        "v1",
        vec![backend("v1", v1.addr(), AppProtocol::Http1)],
    ))
    .await
    .unwrap();
    assert_eq!(
        c.get(format!("{admin}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let mut bad = http_config(2, port, "v1", vec![]);
    bad.http_routes[0].route.rules[0].matches[0].path = PathMatch::RegularExpression("(".into());
    let error = gw.apply(bad).await.unwrap_err().to_string();
    assert!(
        error.contains("HTTPRoute default/r rule 0: matches[0]: path: invalid regular expression"),
        "{error}"
    );
    assert_eq!(gw.config_version(), 1);
    let (status, body) = get_json(&c, &format!("http://127.0.0.1:{port}/still")).await;
    assert_eq!((status, body["backend"].as_str()), (200, Some("v1")));
    let config: serde_json::Value = c
        .get(format!("{admin}/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["version"], 1);
    assert!(
        config["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid regular expression")
    );
    let metrics = c
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("gateway_config_version 1"), "{metrics}");
    assert!(
        metrics
            .contains(r#"gateway_route_requests_total{route="default/r",rule="0",class="2xx"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gateway_config_applies_total{result="rejected"} 1"#),
        "{metrics}"
    );

    // A listener whose port is taken is a NACK, and the old listener keeps serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conflict = http_config(
        3,
        port,
        "v1",
        vec![backend("v1", v1.addr(), AppProtocol::Http1)],
    );
    conflict.listeners.push(listener(
        "other",
        taken.local_addr().unwrap().port(),
        ListenerProtocol::Http,
        None,
        None,
    ));
    let error = gw.apply(conflict).await.unwrap_err().to_string();
    assert!(
        error.contains(r#"listener "other": binding 127.0.0.1:"#),
        "{error}"
    );
    assert_eq!(
        get_json(&c, &format!("http://127.0.0.1:{port}/x")).await.0,
        200
    );
}

#[tokio::test]
async fn removed_listener_closes_and_new_one_opens() {
    let v1 = echo("v1").await;
    let gw = gateway().await;
    // Two ports, distinct (a port closed at once may come back from the next bind to port 0).
    let (p1, p2) = loop {
        let (a, b) = (free_port(), free_port());
        if a != b {
            break (a, b);
        }
    };
    let backends = vec![backend("v1", v1.addr(), AppProtocol::Http1)];
    gw.apply(http_config(1, p1, "v1", backends.clone()))
        .await
        .unwrap();
    let c = client();
    assert_eq!(
        get_json(&c, &format!("http://127.0.0.1:{p1}/")).await.0,
        200
    );
    gw.apply(http_config(2, p2, "v1", backends)).await.unwrap();
    assert_eq!(
        get_json(&c, &format!("http://127.0.0.1:{p2}/")).await.0,
        200
    );
    assert!(
        TcpStream::connect(("127.0.0.1", p1)).await.is_err(),
        "old port still open"
    );
    assert_eq!(
        gw.bound_addrs(),
        vec![SocketAddr::from(([127, 0, 0, 1], p2))]
    );
}

#[tokio::test]
async fn h2c_clients_and_h2c_backends() {
    let v1 = echo("v1").await;
    let gw = gateway().await;
    let port = free_port();
    gw.apply(http_config(
        1,
        port,
        "v1",
        vec![backend("v1", v1.addr(), AppProtocol::H2c)],
    ))
    .await
    .unwrap();
    init();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // No `host` field: over HTTP/2 one naming another host than `:authority` is malformed.
    let response = h2
        .get(format!("http://127.0.0.1:{port}/h2?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["proto"], "HTTP/2.0",
        "backend must be reached over h2c: {body}"
    );
    assert_eq!(body["uri"], "/h2?x=1");
}

#[tokio::test]
async fn websocket_upgrades_reach_the_backend() {
    let v1 = echo("v1").await;
    let gw = gateway().await;
    let port = free_port();
    gw.apply(http_config(
        1,
        port,
        "v1",
        vec![backend("v1", v1.addr(), AppProtocol::WebSocket)],
    ))
    .await
    .unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for message in [
        Message::Text("hello".into()),
        Message::Binary(vec![1, 2, 3]),
    ] {
        write_message(&mut stream, &message, Some([9, 8, 7, 6]))
            .await
            .unwrap();
        assert_eq!(read_message(&mut stream).await.unwrap(), Some(message));
    }
}

/// Sends `GET /` on a new connection; `Some(status line)`, or `None` if the gateway closed
/// the connection without an answer.
async fn plain_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: ws.example\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    answer.lines().next().map(ToString::to_string)
}

#[tokio::test]
async fn an_open_websocket_keeps_its_place_in_the_connection_cap() {
    let v1 = echo("v1").await;
    let mut options = GatewayOptions::new("127.0.0.1:0".parse().unwrap(), "test");
    options.max_connections = 1;
    let gw = meridian_gateway::spawn(options, meridian_gateway::Registry::default())
        .await
        .unwrap();
    let port = free_port();
    gw.apply(http_config(
        1,
        port,
        "v1",
        vec![backend("v1", v1.addr(), AppProtocol::WebSocket)],
    ))
    .await
    .unwrap();
    let mut ws = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        ws.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let message = Message::Text("hello".into());
    write_message(&mut ws, &message, Some([9, 8, 7, 6]))
        .await
        .unwrap();
    assert_eq!(read_message(&mut ws).await.unwrap(), Some(message));
    // The tunnel still holds the only place: another connection is closed unanswered.
    assert_eq!(plain_get(port).await, None);
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match plain_get(port).await {
            Some(status) => {
                assert!(status.starts_with("HTTP/1.1 "), "{status}");
                break;
            }
            None => assert!(Instant::now() < deadline, "the place was never freed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cert(names: &[&str]) -> (TlsCertificate, rustls::pki_types::CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    (
        TlsCertificate {
            key: format!("default/{}", names[0].replace('*', "wild"))
                .parse()
                .unwrap(),
            cert_chain_pem: certified.cert.pem(),
            private_key_pem: certified.signing_key.serialize_pem(),
        },
        certified.cert.der().clone(),
    )
}

/// Sends one request over TLS with SNI `sni` and `Host`/`:authority` `host`; returns the
/// status and the ALPN protocol. The client trusts only `root`.
async fn tls_request(
    port: u16,
    sni: &str,
    host: &str,
    root: &rustls::pki_types::CertificateDer<'static>,
    h2: bool,
) -> Result<(u16, Option<Vec<u8>>), String> {
    init();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let status = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = http::Request::get(format!("https://{host}/tls"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        response.status().as_u16()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = http::Request::get("/tls")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    };
    Ok((status, alpn))
}

#[tokio::test]
async fn https_listeners_choose_certificates_by_sni_and_detect_misdirected_requests() {
    let (v1, v2, v3) = (echo("v1").await, echo("v2").await, echo("v3").await);
    let gw = gateway().await;
    let port = free_port();
    let (default_cert, default_der) = cert(&["example.org", "unknown-example.org"]);
    let (second_cert, second_der) = cert(&["second-example.org"]);
    let (wild_cert, wild_der) = cert(&["*.wildcard.org"]);
    let tls = |certs: Vec<TlsCertificate>| {
        Some(ListenerTls {
            mode: TlsMode::Terminate,
            certificates: certs,
            client_validation: None,
        })
    };
    let config = GatewayConfig {
        version: 1,
        listeners: vec![
            listener(
                "https",
                port,
                ListenerProtocol::Https,
                None,
                tls(vec![default_cert]),
            ),
            listener(
                "https-second",
                port,
                ListenerProtocol::Https,
                Some("second-example.org"),
                tls(vec![second_cert]),
            ),
            listener(
                "https-wild",
                port,
                ListenerProtocol::Https,
                Some("*.wildcard.org"),
                tls(vec![wild_cert]),
            ),
        ],
        http_routes: vec![
            route_to("r1", "https", &["example.org"], "v1"),
            route_to("r2", "https-second", &["second-example.org"], "v2"),
            route_to("r3", "https-wild", &["*.wildcard.org"], "v3"),
        ],
        backends: vec![
            backend("v1", v1.addr(), AppProtocol::Http1),
            backend("v2", v2.addr(), AppProtocol::Http1),
            backend("v3", v3.addr(), AppProtocol::Http1),
        ],
        ..GatewayConfig::default()
    };
    gw.apply(config).await.unwrap();

    // Each SNI gets its listener's certificate (the client trusts only that one).
    assert_eq!(
        tls_request(port, "example.org", "example.org", &default_der, false)
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        tls_request(
            port,
            "second-example.org",
            "second-example.org",
            &second_der,
            false
        )
        .await
        .unwrap()
        .0,
        200
    );
    assert_eq!(
        tls_request(port, "a.wildcard.org", "a.wildcard.org", &wild_der, false)
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        tls_request(
            port,
            "second-example.org",
            "second-example.org",
            &default_der,
            false
        )
        .await
        .is_err()
    );
    // HTTP/2 through ALPN.
    let (status, alpn) = tls_request(
        port,
        "second-example.org",
        "second-example.org",
        &second_der,
        true,
    )
    .await
    .unwrap();
    assert_eq!((status, alpn.as_deref()), (200, Some(&b"h2"[..])));
    // Misdirected: SNI selects one listener, Host another.
    assert_eq!(
        tls_request(
            port,
            "example.org",
            "second-example.org",
            &default_der,
            true
        )
        .await
        .unwrap()
        .0,
        421
    );
    assert_eq!(
        tls_request(
            port,
            "second-example.org",
            "unknown-example.org",
            &second_der,
            true
        )
        .await
        .unwrap()
        .0,
        421
    );
    assert_eq!(
        tls_request(
            port,
            "example.org",
            "unknown-example.org",
            &default_der,
            true
        )
        .await
        .unwrap()
        .0,
        404
    );
    assert_eq!(
        tls_request(
            port,
            "unknown-example.org",
            "example.org",
            &default_der,
            true
        )
        .await
        .unwrap()
        .0,
        200
    );
    // A client that fails the handshake is counted.
    let metrics = client()
        .get(format!("http://{}/metrics", gw.admin_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gateway_tls_handshake_failures_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni() {
    init();
    // A TLS backend (rustls) that answers "hello from <name>" after the handshake.
    let (backend_cert, backend_der) = cert(&["abc.example.com"]);
    let tls_backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = tls_backend.local_addr().unwrap();
    let server_config = {
        use rustls::pki_types::pem::PemObject;
        let chain = vec![backend_der.clone()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
            backend_cert.private_key_pem.as_bytes(),
        )
        .unwrap();
        Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        )
    };
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tls_backend.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    let _ = tls.write_all(format!("hello {sni}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    let gw = gateway().await;
    let port = free_port();
    let config = GatewayConfig {
        version: 1,
        listeners: vec![listener(
            "tls",
            port,
            ListenerProtocol::Tls,
            Some("*.example.com"),
            Some(ListenerTls {
                mode: TlsMode::Passthrough,
                certificates: vec![],
                client_validation: None,
            }),
        )],
        tls_routes: vec![Attached {
            route: TlsRoute {
                key: "default/t".parse().unwrap(),
                created_unix_ms: 0,
                parent_refs: vec![],
                hostnames: vec!["abc.example.com".into()],
                backend_refs: vec![backend_ref("tls-backend")],
            },
            attachments: vec![Attachment {
                listener: "tls".into(),
                hostnames: vec!["abc.example.com".into()],
            }],
        }],
        backends: vec![backend("tls-backend", backend_addr, AppProtocol::Http1)],
        ..GatewayConfig::default()
    };
    gw.apply(config).await.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(backend_der.clone()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    // The backend's own certificate reaches the client: the gateway did not terminate.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut tls = connector
        .connect("abc.example.com".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut text = String::new();
    tls.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "hello abc.example.com\n");
    // Unknown SNI: the connection is rejected.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(
        connector
            .connect("other.example.com".try_into().unwrap(), tcp)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let v1 = echo("v1").await;
    let gw = gateway().await;
    let port = free_port();
    gw.apply(http_config(
        1,
        port,
        "v1",
        vec![backend("v1", v1.addr(), AppProtocol::Http1)],
    ))
    .await
    .unwrap();
    let c = client();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get_json(&c, &format!("http://127.0.0.1:{port}/slow?delay=700ms")).await }
    });
    // Wait until the slow request is in flight (the echo sees it) before shutting down.
    let admin = format!("http://{}/metrics", gw.admin_addr());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = c.get(&admin).send().await.unwrap().text().await.unwrap();
        if metrics.contains(&format!("gateway_active_connections{{port=\"{port}\"}} 1"))
            || Instant::now() > deadline
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    gw.shutdown().await;
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body["backend"].as_str()), (200, Some("v1")));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "port still open after shutdown"
    );
    assert!(!gw.is_ready());
}
