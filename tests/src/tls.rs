//! A minimal HTTPS client for end-to-end tests: rustls with one trusted certificate, SNI, one
//! HTTP/1.1 request, and the certificate the server presented; and a raw TLS round trip for
//! TLSRoute tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS connection to `addr` with SNI `name`, trusting only `trusted`.
async fn connect(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    connect_offering(addr, name, trusted, &[]).await
}

/// The application protocol the server picks when the client offers `offer` by ALPN (`None`:
/// it picked none).
pub async fn negotiated_alpn(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
    offer: &[&[u8]],
) -> Result<Option<Vec<u8>>, String> {
    let tls = connect_offering(addr, name, trusted, offer).await?;
    Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

/// A TLS connection to `addr` with SNI `name`, trusting only `trusted`, offering `offer` by
/// ALPN (for tests that speak a protocol over it themselves, such as raw HTTP/2).
pub async fn connect_offering(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
    offer: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    crate::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// What one HTTPS request saw.
pub struct Served {
    /// The leaf certificate the gateway presented.
    pub leaf: CertificateDer<'static>,
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (`Null` if none).
    pub body: serde_json::Value,
}

/// `GET /` over TLS to `addr` with SNI and Host `name`, trusting only `trusted`.
pub async fn https_get(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
) -> Result<Served, String> {
    let run = async {
        let mut tls = connect(addr, name, trusted).await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first().cloned())
            .ok_or("no peer certificate")?;
        tls.write_all(
            format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        // A peer that closes without close_notify still gave us the whole response.
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| {
                // Chunked or not, the echo JSON is one object.
                let start = body.find('{')?;
                let end = body.rfind('}')?;
                serde_json::from_str(&body[start..=end]).ok()
            })
            .unwrap_or(serde_json::Value::Null);
        Ok(Served { leaf, status, body })
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| format!("no answer from {addr} within 5s"))?
}

/// Opens TLS to `addr` with SNI `name` (trusting only `trusted`), writes `payload` and reads
/// back as many bytes (a TCP echo behind a terminating TLSRoute); `Err` says where it failed.
pub async fn tls_round_trip(
    addr: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let run = async {
        let mut tls = connect(addr, name, trusted).await?;
        tls.write_all(payload).await.map_err(|e| e.to_string())?;
        let mut echoed = vec![0; payload.len()];
        tls.read_exact(&mut echoed)
            .await
            .map_err(|e| format!("reading the echo: {e}"))?;
        Ok(echoed)
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| format!("no echo from {addr} within 5s"))?
}
