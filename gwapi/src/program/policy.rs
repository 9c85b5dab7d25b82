//! BackendTLSPolicy: which policy applies to a Service port, whether it is valid, and the
//! [`BackendTls`] a valid one programs.
//!
//! **Conflicts:** among the policies targeting one Service port, one with a `sectionName`
//! (the port's name) beats one naming the whole Service; then the oldest
//! (`creationTimestamp`) wins, then the first by `namespace/name`. Losers report
//! `Accepted=False/Conflicted`.
//!
//! **System roots:** `wellKnownCACertificates: System` programs [`CaSource::System`]; the
//! gateway loads its own host's trust store (and fails the connections closed when it has
//! none).
//!
//! **Fail closed:** when the winning policy is invalid (schema, a `wellKnownCACertificates`
//! value other than `System`, a CA reference that does not resolve or holds no usable
//! certificate), the Service port is an invalid backend: its share of requests gets 500 and
//! never goes out in cleartext.

use std::collections::BTreeMap;

use super::ca;
use super::index::Index;
use crate::document::CheckedPolicy;
use crate::k8s;
use crate::set::meta_key;
use crate::status::{Condition, ConditionType, PolicyStatus, Reason};
use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::{BackendTls, CaSource, SubjectAltName};

/// Why a policy cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

/// One policy, evaluated once per programming run.
#[derive(Clone, Debug)]
pub(crate) struct Evaluated {
    pub(crate) key: ObjectKey,
    generation: i64,
    created_unix_ms: i64,
    /// `None`: accepted (unless it loses a conflict).
    not_accepted: Option<Fault>,
    /// `None`: every reference resolved.
    unresolved: Option<Fault>,
    /// The TLS settings when the policy is usable, else why not.
    pub(crate) tls: Result<BackendTls, Fault>,
}

/// Every policy of a set, by the Services they target.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    evaluated: Vec<Evaluated>,
    /// (namespace, Service name) → the policies naming it.
    targets: BTreeMap<(String, String), Vec<Target>>,
}

/// One targetRef: (policy index, sectionName).
type Target = (usize, Option<String>);

/// The policies that apply to one Service port: the winner and the losers.
#[derive(Debug)]
pub(crate) struct Applied<'p> {
    pub(crate) winner: (usize, &'p Evaluated),
    pub(crate) losers: Vec<usize>,
}

// === impl Policies ===

impl Policies {
    /// Evaluates every policy against the ConfigMaps of `index`.
    pub(crate) fn new(policies: &[CheckedPolicy], index: &Index<'_>) -> Self {
        let mut out = Self::default();
        for checked in policies {
            let position = out.evaluated.len();
            let key = meta_key(&checked.policy.metadata);
            for target in &checked.policy.spec.target_refs {
                if target.group.is_empty() && target.kind == "Service" {
                    out.targets
                        .entry((key.namespace.clone(), target.name.clone()))
                        .or_default()
                        .push((position, target.section_name.clone()));
                }
            }
            out.evaluated.push(evaluate(checked, key, index));
        }
        out
    }

    /// The policies targeting port `port_name` (`None` or empty for an unnamed port) of
    /// Service `namespace/service`, `None` when no policy does.
    pub(crate) fn for_port(
        &self,
        namespace: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Option<Applied<'_>> {
        let targets = self
            .targets
            .get(&(namespace.to_string(), service.to_string()))?;
        let port_name = port_name.filter(|n| !n.is_empty());
        let mut matching: Vec<(bool, i64, &ObjectKey, usize)> = targets
            .iter()
            .filter(|(_, section)| section.is_none() || section.as_deref() == port_name)
            .map(|(i, section)| {
                let e = &self.evaluated[*i];
                (section.is_none(), e.created_unix_ms, &e.key, *i)
            })
            .collect();
        matching.sort();
        // A policy naming both the Service and the port counts once, with its best target.
        let mut seen = Vec::new();
        matching.retain(|m| {
            let fresh = !seen.contains(&m.3);
            seen.push(m.3);
            fresh
        });
        let (_, _, _, winner) = *matching.first()?;
        Some(Applied {
            winner: (winner, &self.evaluated[winner]),
            losers: matching[1..].iter().map(|m| m.3).collect(),
        })
    }

    /// The status of policy `position`; `lost_to` names the policy that won a conflict it
    /// took part in on this Gateway.
    pub(crate) fn status(&self, position: usize, lost_to: Option<&ObjectKey>) -> PolicyStatus {
        let e = &self.evaluated[position];
        let accepted = match (&e.not_accepted, lost_to) {
            (Some(fault), _) => Condition::bad(
                ConditionType::Accepted,
                fault.reason,
                fault.message.clone(),
                e.generation,
            ),
            (None, Some(winner)) => Condition::bad(
                ConditionType::Accepted,
                Reason::Conflicted,
                format!("BackendTLSPolicy {winner} targets the same Service port and wins"),
                e.generation,
            ),
            (None, None) => Condition::ok(
                ConditionType::Accepted,
                Reason::Accepted,
                "the policy is accepted",
                e.generation,
            ),
        };
        let resolved = match &e.unresolved {
            Some(fault) => Condition::bad(
                ConditionType::ResolvedRefs,
                fault.reason,
                fault.message.clone(),
                e.generation,
            ),
            None => Condition::ok(
                ConditionType::ResolvedRefs,
                Reason::ResolvedRefs,
                "all CA certificate references are resolved",
                e.generation,
            ),
        };
        PolicyStatus {
            key: e.key.clone(),
            conditions: vec![accepted, resolved],
        }
    }

    /// The key of policy `position`.
    pub(crate) fn key(&self, position: usize) -> &ObjectKey {
        &self.evaluated[position].key
    }
}

fn evaluate(checked: &CheckedPolicy, key: ObjectKey, index: &Index<'_>) -> Evaluated {
    let validation = &checked.policy.spec.validation;
    let mut not_accepted = checked.invalid.as_ref().map(|why| Fault {
        reason: Reason::Invalid,
        message: format!("invalid policy: {why}"),
    });
    let mut unresolved = None;
    let mut bundle = String::new();
    // Without caCertificateRefs a valid policy says `wellKnownCACertificates: System`
    // (validation rejects a missing or unknown value): there is nothing to resolve here, the
    // gateway loads its host's trust store.
    if !validation.ca_certificate_refs.is_empty() {
        let mut faults: Vec<Fault> = Vec::new();
        for (i, reference) in validation.ca_certificate_refs.iter().enumerate() {
            match ca_bundle(reference, &key.namespace, index) {
                Ok(pem) => {
                    bundle.push_str(pem.trim_end());
                    bundle.push('\n');
                }
                Err(fault) => faults.push(Fault {
                    reason: fault.reason,
                    message: format!("caCertificateRefs[{i}]: {}", fault.message),
                }),
            }
        }
        if let Some(first) = faults.first() {
            let message = faults
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if faults.len() == validation.ca_certificate_refs.len() && not_accepted.is_none() {
                not_accepted = Some(Fault {
                    reason: Reason::NoValidCACertificate,
                    message: format!("no CA certificate reference is usable: {message}"),
                });
            }
            unresolved = Some(Fault {
                reason: first.reason,
                message,
            });
        }
    }
    // Any unusable reference fails the policy's connections: the spec says connections using
    // an invalid reference must fail, and a partial bundle would trust less than was asked.
    // The reference's own reason is the more precise one for the route's ResolvedRefs.
    let tls = match (&unresolved, &not_accepted) {
        (Some(fault), _) | (None, Some(fault)) => Err(fault.clone()),
        (None, None) => Ok(BackendTls {
            ca: if validation.ca_certificate_refs.is_empty() {
                CaSource::System
            } else {
                CaSource::Pem(bundle)
            },
            hostname: validation.hostname.clone(),
            subject_alt_names: validation
                .subject_alt_names
                .iter()
                .filter_map(|san| match (san.type_.as_str(), &san.hostname, &san.uri) {
                    ("Hostname", Some(name), _) => Some(SubjectAltName::Hostname(name.clone())),
                    ("URI", _, Some(uri)) => Some(SubjectAltName::Uri(uri.clone())),
                    _ => None,
                })
                .collect(),
        }),
    };
    Evaluated {
        key,
        generation: checked.generation,
        created_unix_ms: checked.created_unix_ms,
        not_accepted,
        unresolved,
        tls,
    }
}

/// The PEM text of one CA reference, checked to hold only certificates webpki accepts as
/// trust anchors (so the gateway cannot fail on it later).
fn ca_bundle(
    reference: &k8s::CaCertificateReference,
    namespace: &str,
    index: &Index<'_>,
) -> Result<String, Fault> {
    let fault = |reason, message: String| Err(Fault { reason, message });
    if !reference.group.is_empty() || reference.kind != "ConfigMap" {
        let group = if reference.group.is_empty() {
            String::new()
        } else {
            format!("{}/", reference.group)
        };
        return fault(
            Reason::InvalidKind,
            format!(
                "{group}{} {} is not supported (only core ConfigMaps)",
                reference.kind, reference.name
            ),
        );
    }
    match ca::config_map_bundle(index, namespace, &reference.name) {
        Ok(pem) => Ok(pem.clone()),
        Err(message) => fault(Reason::InvalidCACertificateRef, message),
    }
}
