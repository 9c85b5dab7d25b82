//! CA bundles from ConfigMaps (key `ca.crt`), shared by BackendTLSPolicy and frontend client
//! certificate validation: a bundle is usable when every PEM block in it is a certificate
//! webpki accepts as a trust anchor, and there is at least one. Checked here, so that the
//! gateway never receives a bundle it cannot load (it would reject the whole config).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::index::Index;

/// The `ca.crt` key of a CA ConfigMap.
pub(crate) const CA_KEY: &str = "ca.crt";

/// The usable CA bundle of ConfigMap `namespace/name`; `Err` is the message of an
/// `InvalidCACertificateRef` condition (missing ConfigMap, no `ca.crt`, unusable bundle).
pub(crate) fn config_map_bundle<'a>(
    index: &'a Index,
    namespace: &str,
    name: &str,
) -> Result<&'a String, String> {
    let target = format!("ConfigMap {namespace}/{name}");
    let config_map = index
        .config_map(namespace, name)
        .ok_or_else(|| format!("{target} not found"))?;
    let pem = config_map
        .data
        .get(CA_KEY)
        .ok_or_else(|| format!("{target} has no key {CA_KEY}"))?;
    check_bundle(pem).map_err(|why| format!("{target} {CA_KEY}: {why}"))?;
    Ok(pem)
}

/// Checks a PEM bundle; `Err` says what is wrong, for a message naming the ConfigMap.
pub(crate) fn check_bundle(pem: &str) -> Result<usize, String> {
    let mut count = 0;
    for (n, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert = cert.map_err(|error| format!("bad PEM: {error}"))?;
        webpki::anchor_from_trusted_cert(&cert)
            .map_err(|error| format!("certificate {n} is not usable as a CA: {error}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_checked_certificate_by_certificate() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()])
            .unwrap()
            .cert
            .pem();
        assert_eq!(check_bundle(&ca), Ok(1));
        assert_eq!(check_bundle(&format!("{ca}{ca}")), Ok(2));
        assert_eq!(
            check_bundle("no pem here"),
            Err("holds no PEM certificate".into())
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = check_bundle(&format!("{ca}{garbage}")).unwrap_err();
        assert!(
            error.starts_with("certificate 1 is not usable as a CA"),
            "{error}"
        );
    }
}
