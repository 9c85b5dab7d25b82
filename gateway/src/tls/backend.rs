//! TLS to backends (BackendTLSPolicy): a rustls client config per policy, built once per
//! compiled snapshot, and the certificate check the policy asks for.
//!
//! The backend's chain must lead to one of the policy's CA certificates. Its name is checked
//! against the policy's `hostname` (also the SNI), or, when the policy lists
//! `subjectAltNames`, against those instead: any one DNS name (wildcards in the certificate
//! allowed) or URI (exact) present in the certificate passes.

use std::sync::Arc;

use meridian_proto::model::gateway::{BackendTls, SubjectAltName};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How to open TLS connections to one policy's backends with one ALPN choice.
#[derive(Clone)]
pub(crate) struct BackendConnector {
    connector: TlsConnector,
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
    roots: RootCertStore,
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
    /// HTTP/2), else `http/1.1`. The error names what is wrong with the CA bundle or names.
    pub(crate) fn new(tls: &BackendTls, h2: bool) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("CA bundle: invalid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA bundle: unusable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("CA bundle: no certificate".to_string());
        }
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = BackendVerifier {
            roots,
            names,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The TLS handshake over a connected socket.
    pub(crate) async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
    }

    /// The SNI sent.
    pub(crate) fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
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
