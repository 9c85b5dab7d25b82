//! Frontend client certificate validation: the rustls client-certificate verifier of a port
//! built from its listeners' CA bundles (Gateway `spec.tls.frontend`).

use std::sync::Arc;

use meridian_proto::model::gateway::{ClientValidation, ClientValidationMode};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

/// Builds the verifier for `validation`. `AllowValidOnly` fails every handshake without a
/// certificate that chains to one of the CAs; `AllowInsecureFallback` also completes
/// handshakes without any client certificate, but a certificate that is presented must still
/// be valid. Errors name the ConfigMap whose bundle is bad.
pub(crate) fn verifier(
    validation: &ClientValidation,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in &validation.ca_certificates {
        let source = &ca.config_map;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                format!("CA certificate ConfigMap {source} ca.crt: invalid PEM certificate: {e}")
            })?;
            roots.add(cert).map_err(|e| {
                format!("CA certificate ConfigMap {source} ca.crt: unusable CA certificate: {e}")
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "CA certificate ConfigMap {source} ca.crt: no PEM certificate found"
            ));
        }
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = match validation.mode {
        ClientValidationMode::AllowValidOnly => builder,
        ClientValidationMode::AllowInsecureFallback => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("client certificate validation: {e}"))
}
