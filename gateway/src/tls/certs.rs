//! Parsing `kubernetes.io/tls` Secret material (PEM chain + key) into rustls signing keys.

use std::sync::Arc;

use meridian_proto::model::gateway::TlsCertificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate ready to serve, with its leaf for name checks.
#[derive(Debug, Clone)]
pub(crate) struct ServingCert {
    /// Chain and signing key.
    pub(crate) key: Arc<CertifiedKey>,
    /// The leaf certificate.
    pub(crate) leaf: CertificateDer<'static>,
}

/// Parses a certificate; the error says what is wrong with which Secret.
pub(crate) fn parse(cert: &TlsCertificate) -> Result<ServingCert, String> {
    let source = cert.key.to_string();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate {source}: invalid PEM certificate chain: {e}"))?;
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| format!("certificate {source}: no certificate found in the PEM chain"))?;
    let private_key = PrivateKeyDer::from_pem_slice(cert.private_key_pem.as_bytes())
        .map_err(|e| format!("certificate {source}: invalid PEM private key: {e}"))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .map_err(|e| format!("certificate {source}: unsupported private key: {e}"))?;
    let key = CertifiedKey::new(chain, signing_key);
    key.keys_match().map_err(|e| {
        format!("certificate {source}: the private key does not match the certificate: {e}")
    })?;
    Ok(ServingCert {
        key: Arc::new(key),
        leaf,
    })
}

/// Whether `cert` is valid for the DNS name `name` (SAN check, wildcards included).
pub(crate) fn covers(cert: &ServingCert, name: &str) -> bool {
    let Ok(server_name) = rustls::pki_types::ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(&cert.leaf)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}
