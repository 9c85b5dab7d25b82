//! The tests' throwaway PKI (`meridian_tests::pki`), plus a tonic client config from a leaf.

pub use meridian_tests::pki::{Ca, Leaf};

/// A tonic client TLS config presenting a leaf and trusting a CA.
pub trait ClientTls {
    fn client_tls(&self, ca: &Ca) -> tonic::transport::ClientTlsConfig;
}

impl ClientTls for Leaf {
    fn client_tls(&self, ca: &Ca) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert, &self.key))
    }
}
