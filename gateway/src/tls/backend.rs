//! TLS to backends (BackendTLSPolicy): a rustls client config per policy, built once per
//! compiled snapshot, and the certificate check the policy asks for.
//!
//! The backend's chain must lead to one of the policy's CA certificates, or, for
//! `wellKnownCACertificates: System`, to the host's trust store ([`system_roots`]); without a
//! usable trust store the connector refuses every connection. When the Gateway names a
//! backend client certificate (`spec.tls.backend.clientCertificateRef`), every handshake
//! offers it to a backend that asks for one. Its name is checked
//! against the policy's `hostname` (also the SNI), or, when the policy lists
//! `subjectAltNames`, against those instead: any one DNS name (wildcards in the certificate
//! allowed) or URI (exact) present in the certificate passes.

use std::sync::Arc;

use meridian_proto::model::gateway::{BackendTls, CaSource, SubjectAltName, TlsCertificate};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::warn;

use super::system_roots;

/// How to open TLS connections to one policy's backends with one ALPN choice.
#[derive(Clone)]
pub(crate) struct BackendConnector {
    /// The client config, or why no connection may be made (no system trust store).
    connector: Result<TlsConnector, Arc<str>>,
    /// The same without ALPN, for the byte stream of a terminated TLSRoute.
    stream_connector: Result<TlsConnector, Arc<str>>,
    /// The SNI (the policy's hostname).
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for BackendConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The name check of a backend certificate.
#[derive(Debug)]
struct BackendVerifier {
    roots: Arc<RootCertStore>,
    /// Without subjectAltNames: the policy hostname alone.
    names: Vec<Expected>,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
enum Expected {
    Dns(ServerName<'static>),
    Uri(String),
}

// === impl BackendConnector ===

impl BackendConnector {
    /// Builds the client config for `tls`: ALPN `h2` when `h2` (the Service port speaks
    /// HTTP/2), else `http/1.1`; presenting `client_certificate` when a backend asks for one.
    /// The error names what is wrong with the CA bundle, names or client certificate. A
    /// missing system trust store is not an error here: the connector is built and refuses
    /// every connection, so only the backends that need it fail.
    pub(crate) fn new(
        tls: &BackendTls,
        h2: bool,
        client_certificate: Option<&TlsCertificate>,
    ) -> Result<Self, String> {
        let roots = match &tls.ca {
            CaSource::Pem(pem) => Ok(Arc::new(pem_roots(pem)?)),
            CaSource::System => system_roots::system().clone(),
        };
        let dns = |name: &str| {
            ServerName::try_from(name.to_string())
                .map_err(|e| format!("{name:?} is not a valid server name: {e}"))
        };
        let server_name = dns(&tls.hostname)?;
        let names = if tls.subject_alt_names.is_empty() {
            vec![Expected::Dns(server_name.clone())]
        } else {
            tls.subject_alt_names
                .iter()
                .map(|san| match san {
                    SubjectAltName::Hostname(name) => dns(name).map(Expected::Dns),
                    SubjectAltName::Uri(uri) => Ok(Expected::Uri(uri.clone())),
                })
                .collect::<Result<_, _>>()?
        };
        let roots = match roots {
            Ok(roots) => roots,
            Err(why) => {
                warn!(
                    sni = %tls.hostname,
                    error = %why,
                    "BackendTLSPolicy trusts the system trust store, which has no usable CA certificate: its backends get no connection"
                );
                let why: Arc<str> = Arc::from(format!("no system trust store: {why}"));
                return Ok(Self {
                    connector: Err(Arc::clone(&why)),
                    stream_connector: Err(why),
                    server_name,
                });
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = BackendVerifier {
            roots,
            names,
            algorithms: provider.signature_verification_algorithms,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match client_certificate {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let (chain, key) = client_identity(cert)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("backend client certificate {}: {e}", cert.key))?
            }
        };
        let stream_config = config.clone();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Self {
            connector: Ok(TlsConnector::from(Arc::new(config))),
            stream_connector: Ok(TlsConnector::from(Arc::new(stream_config))),
            server_name,
        })
    }

    /// Why this connector makes no connection, if it makes none.
    pub(crate) fn unavailable(&self) -> Option<&str> {
        self.connector.as_ref().err().map(|why| &**why)
    }

    /// The TLS handshake over a connected socket.
    pub(crate) async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        match &self.connector {
            Ok(connector) => connector.connect(self.server_name.clone(), stream).await,
            Err(why) => Err(std::io::Error::other(why.to_string())),
        }
    }

    /// The TLS handshake for a raw byte stream (no ALPN protocol offered).
    pub(crate) async fn connect_stream(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        match &self.stream_connector {
            Ok(connector) => connector.connect(self.server_name.clone(), stream).await,
            Err(why) => Err(std::io::Error::other(why.to_string())),
        }
    }

    /// The SNI sent.
    pub(crate) fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
}

/// The trust anchors of a PEM bundle (at least one).
fn pem_roots(pem: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA bundle: invalid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA bundle: unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA bundle: no certificate".to_string());
    }
    Ok(roots)
}

/// The chain and key of the backend client certificate.
fn client_identity(
    cert: &TlsCertificate,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("backend client certificate {}: invalid PEM: {e}", cert.key))?;
    if chain.is_empty() {
        return Err(format!(
            "backend client certificate {}: no certificate",
            cert.key
        ));
    }
    // The key's parse error is not printed: it could quote key material.
    let key = PrivateKeyDer::from_pem_slice(cert.private_key_pem.as_bytes()).map_err(|_| {
        format!(
            "backend client certificate {}: invalid PEM private key",
            cert.key
        )
    })?;
    Ok((chain, key))
}

// === impl BackendVerifier ===

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let matches = self.names.iter().any(|expected| match expected {
            Expected::Dns(name) => verify_server_name(&cert, name).is_ok(),
            Expected::Uri(uri) => webpki::EndEntityCert::try_from(end_entity)
                .is_ok_and(|ee| ee.valid_uri_names().any(|u| u == uri)),
        });
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
