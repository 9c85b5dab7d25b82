//! The echo backend behind `meridian echo`, the demo clusters and the conformance suite: it
//! answers every request with JSON describing it, and can be steered per request, mirroring
//! the Gateway API conformance echo server's contract.
//!
//! Body: `{"backend", "pod", "namespace", "method", "path", "query", "uri", "host", "proto",
//! "headers": {name: [values]}, "remote"}` (`uri` is path and query as sent, `pod` equals
//! `backend` so conformance-style "pod starts with the service name" checks work).
//!
//! Controls (query parameter or header):
//! - `X-Echo-Set-Header: N1:v1,N2:v2`: set these response headers.
//! - `delay=1s` / `X-Echo-Delay: 500ms`: wait before answering.
//! - `bodyDelay=1s` / `X-Echo-Body-Delay: 1s`: send the response head at once and the body
//!   (chunked) after that long.
//! - `/status/NNN`, `status=NNN` / `X-Echo-Status: NNN`: answer with that status.
//! - `succeedAfter=N` with `uuid=U` (default key: the path): the first N requests per key fail,
//!   with `responseCode=C` (after `delayRetry=D`) or, without it, a TCP reset; then echo.
//! - `GET /health`: 200 `ok`.
//! - WebSocket upgrade on any path: echoes text and binary messages.
//!
//! Serves HTTP/1.1 and h2c (prior knowledge) on one port, or, with a certificate
//! ([`EchoOptions::tls`]), HTTPS (HTTP/1.1 and h2 by ALPN) and then reports the connection in
//! a `tls` object like the upstream echo: `{"version", "serverName", "negotiatedProtocol",
//! "cipherSuite", "peerCertificates"}` (`serverName` is the SNI the client sent;
//! `peerCertificates` is the client's chain as PEM blocks, leaf first, when
//! [`EchoTls::client_ca_pem`] makes the echo require one). Each request is logged as
//! `Echoing back request made to <uri>` (target `echo`), which mirror tests look for.

pub mod websocket;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use self::websocket::{Message, accept_key, read_message, write_message};

/// What an echo backend calls itself and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoOptions {
    /// Address to bind (port 0 for an ephemeral port).
    pub listen: SocketAddr,
    /// The name it reports (`backend` and `pod` in the body).
    pub name: String,
    /// The namespace it reports, if any.
    pub namespace: Option<String>,
    /// Serve HTTPS with this certificate instead of cleartext.
    pub tls: Option<EchoTls>,
}

/// The certificate an HTTPS echo serves.
#[derive(Clone, PartialEq, Eq)]
pub struct EchoTls {
    /// PEM certificate chain, leaf first.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
    /// Require a client certificate that chains to one of these PEM CA certificates; `None`
    /// asks for none.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for EchoTls {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoTls").finish_non_exhaustive()
    }
}

/// A running echo backend; dropping the handle does not stop it, [`EchoHandle::stop`] does.
#[derive(Debug)]
pub struct EchoHandle {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

struct EchoState {
    options: EchoOptions,
    /// Failures served per `succeedAfter` key.
    attempts: Mutex<HashMap<String, u32>>,
}

/// Binds and starts an echo backend. A bad certificate or key is an `InvalidInput` error.
pub async fn spawn_echo(options: EchoOptions) -> std::io::Result<EchoHandle> {
    let acceptor = options.tls.as_ref().map(tls_acceptor).transpose()?;
    let listener = TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(EchoState {
        options,
        attempts: Mutex::new(HashMap::new()),
    });
    let task = tokio::spawn(accept_loop(listener, state, acceptor));
    Ok(EchoHandle { addr, task })
}

fn tls_acceptor(tls: &EchoTls) -> std::io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let chain = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
        .map_err(|e| invalid("private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| invalid("client CA", &e))?;
                roots.add(cert).map_err(|e| invalid("client CA", &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| invalid("client CA", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid("certificate", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The `tls` object of the answers on one TLS connection.
fn tls_info(conn: &rustls::ServerConnection) -> serde_json::Value {
    serde_json::json!({
        "version": conn.protocol_version().map(|v| format!("{v:?}")),
        "serverName": conn.server_name(),
        "negotiatedProtocol": conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        "cipherSuite": conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())),
        "peerCertificates": conn.peer_certificates().map(|chain| {
            chain.iter().map(|cert| pem_certificate(cert)).collect::<Vec<_>>()
        }),
    })
}

/// One DER certificate as a PEM block (64-column base64 lines).
fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

impl EchoHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting (open connections end when their clients close them).
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<EchoState>, acceptor: Option<TlsAcceptor>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A duplicate of the socket lets a request ask for a TCP reset of its connection.
            let Ok((stream, resetter)) = split_resetter(stream) else {
                return;
            };
            let resetter = Arc::new(Mutex::new(Some(resetter)));
            let Some(acceptor) = acceptor else {
                let service = service_fn(move |request| {
                    let state = Arc::clone(&state);
                    let resetter = Arc::clone(&resetter);
                    async move { handle(state, resetter, remote, None, request).await }
                });
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
                return;
            };
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    info!(target: "echo", %remote, %error, "TLS handshake failed");
                    return;
                }
            };
            let tls = Arc::new(tls_info(stream.get_ref().1));
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                let resetter = Arc::clone(&resetter);
                let tls = Arc::clone(&tls);
                async move { handle(state, resetter, remote, Some(tls), request).await }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn split_resetter(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let dup = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, dup))
}

/// The error a request returns to make hyper drop (and, with zero linger, reset) the
/// connection.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset on request")
    }
}

impl std::error::Error for Reset {}

type Resetter = Arc<Mutex<Option<std::net::TcpStream>>>;

async fn handle(
    state: Arc<EchoState>,
    resetter: Resetter,
    remote: SocketAddr,
    tls: Option<Arc<serde_json::Value>>,
    mut request: Request<Incoming>,
) -> Result<Response<EchoBody>, Reset> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    info!(target: "echo", backend = %state.options.name, "Echoing back request made to {uri} to client ({remote})");
    let params = crate::route::matcher::parse_query(request.uri().query().unwrap_or(""));
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };

    if request.uri().path() == "/health" {
        return Ok(boxed(text(StatusCode::OK, "ok\n")));
    }
    if is_websocket(&request) {
        return Ok(boxed(websocket_upgrade(&mut request)));
    }
    let body_delay = param("bodyDelay")
        .or_else(|| header("x-echo-body-delay"))
        .and_then(|d| parse_duration(&d));
    if let Some(delay) = param("delay")
        .or_else(|| header("x-echo-delay"))
        .and_then(|d| parse_duration(&d))
    {
        tokio::time::sleep(delay).await;
    }
    if let Some(succeed_after) = param("succeedAfter").and_then(|n| n.parse::<u32>().ok()) {
        let key = param("uuid").unwrap_or_else(|| request.uri().path().to_string());
        let failures = {
            let mut attempts = state.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let count = attempts.entry(key).or_insert(0);
            *count += 1;
            *count
        };
        if failures <= succeed_after {
            if let Some(delay) = param("delayRetry").and_then(|d| parse_duration(&d)) {
                tokio::time::sleep(delay).await;
            }
            match param("responseCode")
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
            {
                Some(status) => return Ok(boxed(text(status, "failing as asked\n"))),
                None => {
                    reset(&resetter);
                    return Err(Reset);
                }
            }
        }
    }
    let status = request
        .uri()
        .path()
        .strip_prefix("/status/")
        .map(str::to_string)
        .or_else(|| param("status"))
        .or_else(|| header("x-echo-status"))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let set_headers = header("x-echo-set-header");
    let mut body = serde_json::json!({
        "backend": state.options.name,
        "pod": state.options.name,
        "namespace": state.options.namespace,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query().unwrap_or(""),
        "uri": uri,
        "host": host,
        "proto": format!("{:?}", request.version()),
        "headers": headers,
        "remote": remote.to_string(),
    });
    if let Some(tls) = tls {
        body["tls"] = (*tls).clone();
    }
    // Drain the request body so keep-alive connections stay usable.
    let _ = request.into_body().collect().await;
    let body = Bytes::from(body.to_string());
    let body = match body_delay {
        None => Full::new(body).boxed_unsync(),
        // A stream without a known length: the head goes out at once (chunked), the body later.
        Some(delay) => StreamBody::new(futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Frame::data(body))
        }))
        .boxed_unsync(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(set) = set_headers {
        for pair in set.split(',') {
            if let Some((name, value)) = pair.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    http::HeaderName::try_from(name.trim()),
                    HeaderValue::try_from(value.trim()),
                )
            {
                response.headers_mut().append(name, value);
            }
        }
    }
    Ok(response)
}

fn reset(resetter: &Resetter) {
    let dup = resetter.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(dup) = dup
        && let Ok(stream) = TcpStream::from_std(dup)
    {
        // Zero linger turns the close into a RST once hyper drops its side too.
        let _ = stream.set_zero_linger();
    }
}

/// The echo's response body: whole, or sent after a delay.
type EchoBody = UnsyncBoxBody<Bytes, Infallible>;

fn boxed(response: Response<Full<Bytes>>) -> Response<EchoBody> {
    response.map(BodyExt::boxed_unsync)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// `x-echo-set-header` → `X-Echo-Set-Header`, as Go's echo server reports header names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Parses `1s`, `500ms`, `2m`, `1m30s` (GEP-2257 durations).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(value), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(value), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(value * 60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(value * 3600), 1)
        } else {
            return None;
        };
        total += unit;
        rest = &rest[len..];
    }
    Some(total)
}

fn is_websocket(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

fn websocket_upgrade(request: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = request
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_string)
    else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        loop {
            match read_message(&mut io).await {
                Ok(Some(Message::Close)) | Ok(None) => {
                    let _ = write_message(&mut io, &Message::Close, None).await;
                    return;
                }
                Ok(Some(Message::Ping(payload))) => {
                    if write_message(&mut io, &Message::Pong(payload), None)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(message)) => {
                    if write_message(&mut io, &message, None).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    debug!(%error, "websocket read failed");
                    return;
                }
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::try_from(accept_key(&key)) {
        headers.insert("sec-websocket-accept", accept);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn header_names_are_canonicalised() {
        assert_eq!(canonical("x-echo-set-header"), "X-Echo-Set-Header");
        assert_eq!(canonical("host"), "Host");
    }
}
