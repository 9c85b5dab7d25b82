//! Helpers for the gateway conformance tests: self-signed certificates.

/// A self-signed certificate: PEM chain, PEM private key and the DER certificate.
pub struct SelfSigned {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
    /// DER certificate (to trust it in a client).
    pub der: rustls_pki_types::CertificateDer<'static>,
}

/// Makes a self-signed certificate for `names` (DNS names, `*.` wildcards allowed).
pub fn self_signed(names: &[&str]) -> SelfSigned {
    let certified =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        der: certified.cert.der().clone(),
    }
}
