//! BackendTLSPolicy and ConfigMap validation.
//!
//! A policy that breaks a CRD or CEL rule is *kept*, marked invalid: an API server would have
//! refused it, but a directory source cannot refuse a file, and dropping the policy would send
//! the Service's traffic in cleartext. Programming turns an invalid policy into an invalid
//! backend instead (fail closed). Its violations are therefore not problems of the file
//! (sources keep a file's last good content when it has problems, which, for a new file, would
//! again mean no policy and cleartext): they are the policy's `Accepted=False/Invalid`
//! condition, with each field path in the message.

use super::{field, namespaced_meta};
use crate::document::CheckedPolicy;
use crate::k8s;
use crate::problem::{Origin, Problem};

const KIND: &str = "BackendTLSPolicy";

/// Validates a BackendTLSPolicy. Returns `None` only when the object cannot be keyed.
pub(crate) fn backend_tls_policy(
    mut raw: k8s::BackendTlsPolicy,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<CheckedPolicy> {
    let meta = namespaced_meta(&raw.metadata, KIND, origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    let findings = findings(&raw.spec);
    let invalid = (!findings.is_empty()).then(|| {
        findings
            .iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect::<Vec<_>>()
            .join("; ")
    });
    Some(CheckedPolicy {
        policy: raw,
        created_unix_ms: meta.created_unix_ms,
        generation: meta.generation,
        invalid,
    })
}

/// Every schema/CEL violation as (field path, message).
fn findings(spec: &k8s::BackendTlsPolicySpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut finding = |path: String, message: String| out.push((path, message));
    let n = spec.target_refs.len();
    if !(1..=16).contains(&n) {
        finding(
            "spec.targetRefs".into(),
            format!("has {n} entries; 1 to 16 are required"),
        );
    }
    for (i, target) in spec.target_refs.iter().enumerate() {
        if let Err(why) = field::group(&target.group) {
            finding(format!("spec.targetRefs[{i}].group"), why);
        }
        if let Err(why) = field::kind(&target.kind) {
            finding(format!("spec.targetRefs[{i}].kind"), why);
        }
        if let Err(why) = field::object_name(&target.name) {
            finding(format!("spec.targetRefs[{i}].name"), why);
        }
        if let Some(section) = &target.section_name
            && let Err(why) = field::section_name(section)
        {
            finding(format!("spec.targetRefs[{i}].sectionName"), why);
        }
    }
    let validation = &spec.validation;
    match (
        validation.ca_certificate_refs.is_empty(),
        &validation.well_known_ca_certificates,
    ) {
        (true, None) => finding(
            "spec.validation".into(),
            "one of caCertificateRefs and wellKnownCACertificates is required".into(),
        ),
        (false, Some(_)) => finding(
            "spec.validation".into(),
            "caCertificateRefs and wellKnownCACertificates are mutually exclusive".into(),
        ),
        (true, Some(value)) if value != "System" => finding(
            "spec.validation.wellKnownCACertificates".into(),
            format!("unsupported value {value:?} (expected System)"),
        ),
        _ => {}
    }
    if validation.ca_certificate_refs.len() > 8 {
        finding(
            "spec.validation.caCertificateRefs".into(),
            format!(
                "has {} entries; at most 8 are allowed",
                validation.ca_certificate_refs.len()
            ),
        );
    }
    for (i, reference) in validation.ca_certificate_refs.iter().enumerate() {
        if let Err(why) = field::group(&reference.group) {
            finding(format!("spec.validation.caCertificateRefs[{i}].group"), why);
        }
        if let Err(why) = field::kind(&reference.kind) {
            finding(format!("spec.validation.caCertificateRefs[{i}].kind"), why);
        }
        if let Err(why) = field::object_name(&reference.name) {
            finding(format!("spec.validation.caCertificateRefs[{i}].name"), why);
        }
    }
    if validation.hostname.is_empty() {
        finding(
            "spec.validation.hostname".into(),
            "required field is missing".into(),
        );
    } else if let Err(why) = sni_hostname(&validation.hostname) {
        finding("spec.validation.hostname".into(), why);
    }
    if validation.subject_alt_names.len() > 5 {
        finding(
            "spec.validation.subjectAltNames".into(),
            format!(
                "has {} entries; at most 5 are allowed",
                validation.subject_alt_names.len()
            ),
        );
    }
    for (i, san) in validation.subject_alt_names.iter().enumerate() {
        let path = format!("spec.validation.subjectAltNames[{i}]");
        match (san.type_.as_str(), &san.hostname, &san.uri) {
            ("Hostname", Some(hostname), None) => {
                // Precise: the certificate's names may be wildcards, the policy's may not.
                if let Err(why) = sni_hostname(hostname) {
                    finding(format!("{path}.hostname"), why);
                }
            }
            ("URI", None, Some(uri)) => {
                if let Err(why) = absolute_uri(uri) {
                    finding(format!("{path}.uri"), why);
                }
            }
            ("Hostname", _, _) => finding(path, "type Hostname needs hostname and no uri".into()),
            ("URI", _, _) => finding(path, "type URI needs uri and no hostname".into()),
            (other, _, _) => finding(
                format!("{path}.type"),
                format!("unsupported value {other:?} (expected Hostname or URI)"),
            ),
        }
    }
    out
}

/// A `PreciseHostname` that can be sent as SNI: no wildcard, not an IP address.
fn sni_hostname(value: &str) -> Result<(), String> {
    field::precise_hostname(value)?;
    field::hostname(value)
}

/// `AbsoluteURI`: `scheme:rest` without white space (SPIFFE IDs, `https://...`).
fn absolute_uri(value: &str) -> Result<(), String> {
    let valid = value.split_once(':').is_some_and(|(scheme, rest)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
    }) && !value.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(format!("{value:?} is not an absolute URI (scheme:rest)"))
    }
}
