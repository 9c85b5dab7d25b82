//! Frontend client certificate validation: the rustls client-certificate verifier of a port
//! built from its listeners' CA bundles (Gateway `spec.tls.frontend`).

use std::sync::Arc;

use meridian_proto::model::gateway::{ClientValidation, ClientValidationMode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tracing::debug;

use super::client_cert::ClientCertTrust;

/// Builds the verifier for `validation`, and how far the certificates it admits can be
/// trusted. `AllowValidOnly` fails every handshake without a
/// certificate that chains to one of the CAs; `AllowInsecureFallback` completes every
/// handshake, with a valid certificate, an invalid one or none (as the Gateway API defines
/// the mode: the CA is requested and checked, and the result only logged). Errors name the
/// ConfigMap whose bundle is bad.
pub(crate) fn verifier(
    validation: &ClientValidation,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<dyn ClientCertVerifier>, ClientCertTrust), String> {
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
    let built = |builder: rustls::server::ClientCertVerifierBuilder| {
        builder
            .build()
            .map_err(|e| format!("client certificate validation: {e}"))
    };
    match validation.mode {
        ClientValidationMode::AllowValidOnly => Ok((built(builder)?, ClientCertTrust::Validated)),
        ClientValidationMode::AllowInsecureFallback => {
            let inner = built(builder.allow_unauthenticated())?;
            let fallback: Arc<dyn ClientCertVerifier> = Arc::new(InsecureFallback {
                inner: Arc::clone(&inner),
            });
            Ok((fallback, ClientCertTrust::Recheck(inner)))
        }
    }
}

/// `AllowInsecureFallback`: asks for a certificate and checks it, but admits the client
/// whatever the outcome. The handshake signature is still verified against the presented
/// certificate's key (it proves possession and costs nothing extra).
#[derive(Debug)]
struct InsecureFallback {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => Ok(verified),
            Err(error) => {
                debug!(%error, "client certificate failed validation; admitted (AllowInsecureFallback)");
                Ok(ClientCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
