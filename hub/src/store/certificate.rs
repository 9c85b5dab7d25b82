//! [`check_certificate`]: validation of the certificates the hub distributes, shared by the
//! admin API (for a quick 400) and `apply` (the state never holds an unusable certificate), and
//! [`CertificateInfo`], what the API shows about one instead of its key.
//!
//! **Invariant:** no message produced here contains key material. Parse errors of the private
//! key are reported with fixed texts (PEM parser errors can quote a line of their input).

use meridian_proto::model::gateway::TlsCertificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::command::Rejection;

/// The largest PEM text accepted for a chain or a key (a chain of a few certificates is a few
/// KiB; this bounds what every replica stores and every agent receives).
pub const MAX_PEM_BYTES: usize = 64 * 1024;

/// What the admin API shows about a stored certificate (never its key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The leaf's subject distinguished name (`CN=app.example.com, O=Example`).
    pub subject: String,
    /// The leaf's subject common names.
    pub common_names: Vec<String>,
    /// The leaf's DNS subject alternative names (wildcards included), what TLS clients check.
    pub dns_names: Vec<String>,
    /// The leaf's issuer distinguished name.
    pub issuer: String,
    /// Start of the leaf's validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of the leaf's validity, Unix seconds.
    pub not_after_unix: i64,
    /// Certificates in the chain, leaf included.
    pub chain_length: usize,
    /// SHA-256 of the leaf's DER, lower-case hex with colons (as `openssl x509 -fingerprint`).
    pub sha256_fingerprint: String,
}

/// Checks that `cert` can serve TLS: its chain is PEM certificates that parse as X.509, its
/// key is a PEM private key of a supported type, and the key belongs to the leaf. Returns what
/// the API shows about it.
///
/// Deterministic (no clock): expiry is the caller's business.
pub fn check_certificate(cert: &TlsCertificate) -> Result<CertificateInfo, Rejection> {
    if cert.cert_chain_pem.len() > MAX_PEM_BYTES {
        return Err(Rejection::invalid(
            "cert_chain_pem",
            format!(
                "is {} bytes; at most {MAX_PEM_BYTES} are accepted",
                cert.cert_chain_pem.len()
            ),
        ));
    }
    if cert.private_key_pem.len() > MAX_PEM_BYTES {
        return Err(Rejection::invalid(
            "private_key_pem",
            format!("is longer than {MAX_PEM_BYTES} bytes"),
        ));
    }
    if cert.cert_chain_pem.contains("PRIVATE KEY-----") {
        // Refused before anything quotes it: a key pasted into the public field would be shown
        // by every GET.
        return Err(Rejection::invalid(
            "cert_chain_pem",
            "contains a private key; put the key in private_key_pem and only CERTIFICATE \
             blocks here",
        ));
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Rejection::invalid("cert_chain_pem", format!("is not valid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(Rejection::invalid(
            "cert_chain_pem",
            "holds no `-----BEGIN CERTIFICATE-----` block",
        ));
    };
    for (i, der) in chain.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(der) {
            return Err(Rejection::invalid(
                "cert_chain_pem",
                format!("certificate {} of the chain is not valid X.509: {e}", i + 1),
            ));
        }
    }
    let key = PrivateKeyDer::from_pem_slice(cert.private_key_pem.as_bytes()).map_err(|_| {
        Rejection::invalid(
            "private_key_pem",
            "is not a PEM private key (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 \
             `EC PRIVATE KEY`)",
        )
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        Rejection::invalid(
            "private_key_pem",
            "is not a supported key (RSA 2048+ bits, ECDSA P-256/P-384 or Ed25519)",
        )
    })?;
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    if certified.keys_match().is_err() {
        return Err(Rejection::invalid(
            "private_key_pem",
            "does not belong to the first certificate of cert_chain_pem (the leaf)",
        ));
    }
    info(leaf, chain.len())
        .map_err(|why| Rejection::invalid("cert_chain_pem", format!("the leaf: {why}")))
}

/// What the API shows about a stored certificate, from its chain alone (the key was checked
/// when the certificate was applied).
pub fn certificate_info(cert: &TlsCertificate) -> Result<CertificateInfo, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no certificate in the chain")?;
    info(leaf, chain.len())
}

/// Reads what the API shows from a leaf certificate.
fn info(leaf: &CertificateDer<'_>, chain_length: usize) -> Result<CertificateInfo, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let common_names = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                dns_names.push((*dns).to_string());
            }
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(CertificateInfo {
        subject: parsed.subject().to_string(),
        common_names,
        dns_names,
        issuer: parsed.issuer().to_string(),
        not_before_unix: parsed.validity().not_before.timestamp(),
        not_after_unix: parsed.validity().not_after.timestamp(),
        chain_length,
        sha256_fingerprint: fingerprint.join(":"),
    })
}
