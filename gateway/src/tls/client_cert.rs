//! The client certificate a backend is told about: `X-Forwarded-Client-Cert` (Envoy's XFCC
//! format, `Hash=<hex SHA-256 of the DER>;Cert="<URL-encoded PEM>"`), set only for a
//! certificate the gateway validated against the listener's CA bundle. The header a client
//! sends itself is always removed, so a backend can trust the one it gets.

use std::sync::Arc;

use base64::Engine;
use http::HeaderValue;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

/// How far a port's presented client certificates can be trusted.
#[derive(Debug, Clone)]
pub(crate) enum ClientCertTrust {
    /// `AllowValidOnly`: the handshake fails without a valid one, so any presented
    /// certificate is valid.
    Validated,
    /// `AllowInsecureFallback`: the handshake admits invalid ones; a certificate is checked
    /// again with this (strict) verifier before it is forwarded.
    Recheck(Arc<dyn ClientCertVerifier>),
}

/// The `X-Forwarded-Client-Cert` value for a connection's certificate chain, or `None` when
/// there is no certificate or it did not validate.
pub(crate) fn forwarded_value(
    chain: &[CertificateDer<'_>],
    trust: &ClientCertTrust,
) -> Option<HeaderValue> {
    let (leaf, intermediates) = chain.split_first()?;
    if let ClientCertTrust::Recheck(verifier) = trust {
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .ok()?;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut value = String::with_capacity(80 + leaf.len() * 2);
    value.push_str("Hash=");
    for byte in digest.as_ref() {
        value.push_str(&format!("{byte:02x}"));
    }
    value.push_str(";Cert=\"");
    url_encode_into(&pem(leaf), &mut value);
    value.push('"');
    HeaderValue::try_from(value).ok()
}

/// The certificate as PEM, 64 base64 characters a line.
fn pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 output is ASCII.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3), as Envoy does.
fn url_encode_into(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_url_encoded_pem() {
        let der = CertificateDer::from(vec![0u8; 70]);
        let value = forwarded_value(&[der], &ClientCertTrust::Validated).unwrap();
        let value = value.to_str().unwrap();
        // SHA-256 of 70 zero bytes.
        let digest = ring::digest::digest(&ring::digest::SHA256, &[0u8; 70]);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(value.starts_with(&format!("Hash={hex};Cert=\"")), "{value}");
        // 70 bytes are 96 base64 characters: two lines, the first of 64.
        assert!(
            value.contains(&format!(
                "-----BEGIN%20CERTIFICATE-----%0A{}%0A{}%3D%3D%0A-----END%20CERTIFICATE-----%0A\"",
                "A".repeat(64),
                "A".repeat(30)
            )),
            "{value}"
        );
    }

    #[test]
    fn no_certificate_no_value() {
        assert!(forwarded_value(&[], &ClientCertTrust::Validated).is_none());
    }
}
