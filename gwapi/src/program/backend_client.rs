//! The Gateway's backend client certificate (`spec.tls.backend.clientCertificateRef`): a
//! `kubernetes.io/tls` Secret presented on every TLS connection to a backend.
//!
//! An unusable reference does not make the Gateway unaccepted: the Gateway reports
//! `ResolvedRefs=False` (`InvalidClientCertificateRef`, or `RefNotPermitted` for a
//! cross-namespace Secret without a ReferenceGrant) and backends are dialled without a
//! client certificate; a backend that requires one refuses the handshake.

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::TlsCertificate;

use super::index::Index;
use super::listener::certificate;
use crate::k8s;
use crate::status::{Condition, ConditionType, Reason};

/// What `clientCertificateRef` resolved to; `None` when the Gateway names none.
pub(crate) fn resolve(
    gateway: &k8s::Gateway,
    gateway_key: &ObjectKey,
    index: &Index<'_>,
) -> Option<Result<TlsCertificate, (Reason, String)>> {
    let reference = gateway
        .spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()?;
    Some(
        certificate(reference, gateway_key, index).map_err(|(reason, message)| {
            // The listener check's reason is the listener's; the Gateway's is this one.
            let reason = match reason {
                Reason::RefNotPermitted => Reason::RefNotPermitted,
                _ => Reason::InvalidClientCertificateRef,
            };
            (
                reason,
                format!("spec.tls.backend.clientCertificateRef: {message}; backends get no client certificate"),
            )
        }),
    )
}

/// The Gateway's `ResolvedRefs` condition for a resolution (only when a reference is set).
pub(crate) fn condition(
    resolved: &Result<TlsCertificate, (Reason, String)>,
    generation: i64,
) -> Condition {
    match resolved {
        Ok(cert) => Condition::ok(
            ConditionType::ResolvedRefs,
            Reason::ResolvedRefs,
            format!("backend client certificate Secret {} resolved", cert.key),
            generation,
        ),
        Err((reason, message)) => Condition::bad(
            ConditionType::ResolvedRefs,
            *reason,
            message.clone(),
            generation,
        ),
    }
}
