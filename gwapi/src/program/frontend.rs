//! Frontend client certificate validation (Gateway `spec.tls.frontend`): which settings apply
//! to an HTTPS listener's port, and resolving their CA ConfigMaps.
//!
//! **Fail closed:** a listener whose validation cannot be honoured is never served without
//! it. When none of its CA references resolves (or the settings themselves are invalid) the
//! listener is not accepted and not programmed; when only some resolve, it serves validating
//! against the ones that did and reports `ResolvedRefs=False`.

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::{CaCertificate, ClientValidation, ClientValidationMode};

use super::ca;
use super::index::{Index, Reference};
use crate::k8s;
use crate::status::Reason;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// What frontend validation means for one HTTPS listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Frontend {
    /// The validation to program (`None`: no client certificate is asked for).
    pub(crate) validation: Option<ClientValidation>,
    /// The first CA reference problem (for `ResolvedRefs=False`).
    pub(crate) ref_problem: Option<(Reason, String)>,
    /// Why the listener cannot be accepted: no usable CA, or invalid settings.
    pub(crate) rejection: Option<(Reason, String)>,
}

/// The validation settings that apply to `port` (a `perPort` entry, else the default) and
/// the field path they came from.
pub(crate) fn settings_for_port(
    gateway: &k8s::Gateway,
    port: u16,
) -> Option<(String, &k8s::FrontendTlsValidation)> {
    let frontend = gateway.spec.tls.as_ref()?.frontend.as_ref()?;
    // The first entry for a port wins; validation reports the duplicates.
    if let Some((index, entry)) = frontend
        .per_port
        .iter()
        .enumerate()
        .find(|(_, entry)| entry.port == i64::from(port))
    {
        let validation = entry.tls.validation.as_ref()?;
        return Some((
            format!("spec.tls.frontend.perPort[{index}].tls.validation"),
            validation,
        ));
    }
    let validation = frontend.default.as_ref()?.validation.as_ref()?;
    Some((
        "spec.tls.frontend.default.validation".to_string(),
        validation,
    ))
}

/// Parses a `mode` value.
pub(crate) fn mode(value: Option<&str>) -> Result<ClientValidationMode, String> {
    match value.unwrap_or("AllowValidOnly") {
        "AllowValidOnly" => Ok(ClientValidationMode::AllowValidOnly),
        "AllowInsecureFallback" => Ok(ClientValidationMode::AllowInsecureFallback),
        other => Err(format!(
            "unsupported value {other:?} (supported: AllowValidOnly, AllowInsecureFallback)"
        )),
    }
}

/// Resolves the frontend validation of an HTTPS listener on `port`.
pub(crate) fn resolve(
    gateway: &k8s::Gateway,
    gateway_key: &ObjectKey,
    port: u16,
    index: &Index<'_>,
) -> Frontend {
    let Some((path, settings)) = settings_for_port(gateway, port) else {
        return Frontend::default();
    };
    let mode = match mode(settings.mode.as_deref()) {
        Ok(mode) => mode,
        Err(why) => {
            return Frontend {
                rejection: Some((Reason::UnsupportedValue, format!("{path}.mode: {why}"))),
                ..Frontend::default()
            };
        }
    };
    let n_refs = settings.ca_certificate_refs.len();
    if !(1..=8).contains(&n_refs) {
        return Frontend {
            rejection: Some((
                Reason::UnsupportedValue,
                format!("{path}.caCertificateRefs: has {n_refs} entries; 1 to 8 are required"),
            )),
            ..Frontend::default()
        };
    }
    let mut out = Frontend::default();
    let mut ca_certificates = Vec::new();
    for (position, reference) in settings.ca_certificate_refs.iter().enumerate() {
        match ca_certificate(reference, gateway_key, index) {
            Ok(ca) => ca_certificates.push(ca),
            Err((reason, message)) => {
                if out.ref_problem.is_none() {
                    out.ref_problem = Some((
                        reason,
                        format!("{path}.caCertificateRefs[{position}]: {message}"),
                    ));
                }
            }
        }
    }
    if ca_certificates.is_empty() {
        out.rejection = Some((
            Reason::NoValidCACertificate,
            format!("{path}: no CA certificate reference is usable, so no client can be validated"),
        ));
    } else {
        out.validation = Some(ClientValidation {
            ca_certificates,
            mode,
        });
    }
    out
}

/// Whether any port of the Gateway uses `AllowInsecureFallback` (the Gateway's
/// `InsecureFrontendValidationMode` condition).
pub(crate) fn uses_insecure_fallback(gateway: &k8s::Gateway) -> bool {
    let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
        return false;
    };
    let insecure = |settings: &k8s::TlsConfigSettings| {
        settings.validation.as_ref().is_some_and(|v| {
            mode(v.mode.as_deref()) == Ok(ClientValidationMode::AllowInsecureFallback)
        })
    };
    frontend.default.as_ref().is_some_and(insecure)
        || frontend.per_port.iter().any(|p| insecure(&p.tls))
}

/// Resolves one caCertificateRef: kind, ReferenceGrant, existence, then a PEM bundle with at
/// least one certificate under `ca.crt`.
fn ca_certificate(
    reference: &k8s::ObjectReference,
    gateway_key: &ObjectKey,
    index: &Index<'_>,
) -> Result<CaCertificate, (Reason, String)> {
    if !reference.group.is_empty() || reference.kind != "ConfigMap" {
        let group = if reference.group.is_empty() {
            String::new()
        } else {
            format!("{}/", reference.group)
        };
        return Err((
            Reason::InvalidCACertificateKind,
            format!(
                "unsupported CA certificate reference kind {group}{} (only core ConfigMaps)",
                reference.kind
            ),
        ));
    }
    let namespace = reference
        .namespace
        .as_deref()
        .unwrap_or(&gateway_key.namespace);
    let name = reference.name.as_str();
    let allowed = index.reference_allowed(&Reference {
        from_group: GATEWAY_GROUP,
        from_kind: "Gateway",
        from_namespace: &gateway_key.namespace,
        to_group: "",
        to_kind: "ConfigMap",
        to_namespace: namespace,
        to_name: name,
    });
    if !allowed {
        return Err((
            Reason::RefNotPermitted,
            format!(
                "ConfigMap {namespace}/{name} is in another namespace and no ReferenceGrant allows it"
            ),
        ));
    }
    // The gateway builds the port's verifier from every bundle: one it cannot load would make
    // it reject the whole config.
    let pem = ca::config_map_bundle(index, namespace, name)
        .map_err(|message| (Reason::InvalidCACertificateRef, message))?;
    Ok(CaCertificate {
        config_map: ObjectKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        pem: pem.clone(),
    })
}
