//! Listener programming: validity, conflicts between listeners, certificate and frontend CA
//! resolution, and the listener conditions.

use std::collections::BTreeMap;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::{ListenerProtocol, TlsCertificate, TlsMode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::frontend::{self, Frontend};
use super::index::{Index, Reference};
use crate::k8s;
use crate::status::{Condition, ConditionStatus, ConditionType, Reason};
use crate::validate::{ListenerCheck, check_listener, secret_value};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// One listener, checked and resolved.
pub(crate) struct ListenerState<'a> {
    /// The spec.
    pub(crate) spec: &'a k8s::Listener,
    /// Field checks.
    pub(crate) check: ListenerCheck,
    /// `ProtocolConflict` / `HostnameConflict` with the message.
    pub(crate) conflict: Option<(Reason, String)>,
    /// Resolved certificates (Terminate mode).
    pub(crate) certificates: Vec<TlsCertificate>,
    /// First certificate reference problem: `InvalidCertificateRef` or `RefNotPermitted`.
    pub(crate) cert_problem: Option<(Reason, String)>,
    /// Frontend client certificate validation (HTTPS listeners).
    pub(crate) frontend: Frontend,
}

// === impl ListenerState ===

impl ListenerState<'_> {
    /// Accepted: valid spec, no conflict, and frontend validation that can be honoured.
    pub(crate) fn accepted(&self) -> bool {
        self.not_accepted().is_none()
    }

    /// Why the listener is not accepted, if it is not.
    fn not_accepted(&self) -> Option<&(Reason, String)> {
        self.check
            .invalid
            .as_ref()
            .or(self.conflict.as_ref())
            .or(self.frontend.rejection.as_ref())
    }

    /// Why the listener is not programmed, if it is not.
    pub(crate) fn not_programmed(&self) -> Option<String> {
        if let Some((_, message)) = &self.check.invalid {
            return Some(format!("the listener is invalid: {message}"));
        }
        if let Some((_, message)) = &self.conflict {
            return Some(format!("the listener conflicts: {message}"));
        }
        if let Some((_, message)) = &self.frontend.rejection {
            // Fail closed: serving without the client validation the Gateway asks for would
            // let every client in.
            return Some(format!(
                "client certificate validation cannot be honoured: {message}"
            ));
        }
        if self.check.supported_kinds.is_empty() {
            return Some("no valid route kind may attach".to_string());
        }
        if self.check.tls_mode == Some(TlsMode::Terminate) && self.certificates.is_empty() {
            return Some("no usable certificate".to_string());
        }
        None
    }

    /// Programmed: accepted, routable and (for TLS termination) with a certificate.
    pub(crate) fn programmed(&self) -> bool {
        self.not_programmed().is_none()
    }

    /// The listener conditions.
    pub(crate) fn conditions(&self, generation: i64) -> Vec<Condition> {
        let accepted = match self.not_accepted() {
            Some((reason, message)) => Condition::bad(
                ConditionType::Accepted,
                *reason,
                message.clone(),
                generation,
            ),
            None => Condition::ok(
                ConditionType::Accepted,
                Reason::Accepted,
                "the listener is valid",
                generation,
            ),
        };
        let ref_problem = self
            .cert_problem
            .as_ref()
            .or(self.frontend.ref_problem.as_ref());
        let resolved = if let Some((reason, message)) = ref_problem {
            Condition::bad(
                ConditionType::ResolvedRefs,
                *reason,
                message.clone(),
                generation,
            )
        } else if !self.check.invalid_kinds.is_empty() {
            Condition::bad(
                ConditionType::ResolvedRefs,
                Reason::InvalidRouteKinds,
                format!(
                    "route kinds not supported by this listener: {}",
                    self.check.invalid_kinds.join(", ")
                ),
                generation,
            )
        } else {
            Condition::ok(
                ConditionType::ResolvedRefs,
                Reason::ResolvedRefs,
                "all references are resolved",
                generation,
            )
        };
        let programmed = match self.not_programmed() {
            None => Condition::ok(
                ConditionType::Programmed,
                Reason::Programmed,
                "the listener is programmed",
                generation,
            ),
            Some(why) => {
                Condition::bad(ConditionType::Programmed, Reason::Invalid, why, generation)
            }
        };
        let conflicted = match &self.conflict {
            Some((reason, message)) => Condition::new(
                ConditionType::Conflicted,
                ConditionStatus::True,
                *reason,
                message.clone(),
                generation,
            ),
            None => Condition::bad(
                ConditionType::Conflicted,
                Reason::NoConflicts,
                "no conflicts",
                generation,
            ),
        };
        vec![accepted, programmed, resolved, conflicted]
    }
}

/// Checks every listener of a Gateway, finds conflicts and resolves certificates.
pub(crate) fn listeners<'a>(
    gateway: &'a k8s::Gateway,
    gateway_key: &ObjectKey,
    index: &Index<'_>,
) -> Vec<ListenerState<'a>> {
    let mut states: Vec<ListenerState<'a>> = gateway
        .spec
        .listeners
        .iter()
        .map(|spec| ListenerState {
            spec,
            check: check_listener(spec),
            conflict: None,
            certificates: Vec::new(),
            cert_problem: None,
            frontend: Frontend::default(),
        })
        .collect();
    find_conflicts(&mut states);
    for state in &mut states {
        // Frontend validation is configured per port, and every listener that terminates TLS
        // on a port shares that port's one handshake: so a TLS listener in Terminate mode gets
        // it too (the spec names HTTPS listeners; applying it to HTTPS only would leave a port
        // with two answers, which the gateway must reject).
        if state.check.tls_mode == Some(TlsMode::Terminate)
            && let Some(port) = state.check.port
        {
            state.frontend = frontend::resolve(gateway, gateway_key, port, index);
        }
        if state.check.tls_mode == Some(TlsMode::Terminate)
            && let Some(tls) = &state.spec.tls
        {
            resolve_certificates(state, tls, gateway_key, index);
        }
    }
    states
}

/// What can share a port: plain HTTP listeners, or listeners whose connections begin with TLS
/// (HTTPS, TLS/Terminate and TLS/Passthrough, in any mix: the gateway picks one per connection
/// by the ClientHello's SNI before any handshake, which is Mixed mode). Listeners of both kinds
/// on one port all get `ProtocolConflict`. Listeners with the same port and hostname all get
/// `HostnameConflict`, whatever their protocol: on a TLS port the SNI is all that tells them
/// apart. None wins, so a config change never silently picks one.
fn find_conflicts(states: &mut [ListenerState<'_>]) {
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Family {
        Http,
        Tls,
    }
    let family = |state: &ListenerState<'_>| match state.check.protocol {
        Some(ListenerProtocol::Http) => Some(Family::Http),
        Some(ListenerProtocol::Https | ListenerProtocol::Tls) => Some(Family::Tls),
        None => None,
    };
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (index, state) in states.iter().enumerate() {
        if state.check.invalid.is_none()
            && let Some(port) = state.check.port
        {
            by_port.entry(port).or_default().push(index);
        }
    }
    for (port, members) in by_port {
        let families: Vec<Family> = members.iter().filter_map(|&i| family(&states[i])).collect();
        if families.windows(2).any(|w| w[0] != w[1]) {
            let names: Vec<&str> = members
                .iter()
                .map(|&i| states[i].spec.name.as_str())
                .collect();
            for &i in &members {
                states[i].conflict = Some((
                    Reason::ProtocolConflict,
                    format!(
                        "listeners {} share port {port} but some are plain HTTP and some TLS",
                        names.join(", ")
                    ),
                ));
            }
            continue;
        }
        let mut seen: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for &i in &members {
            let hostname = states[i].spec.hostname.as_ref();
            seen.entry(hostname.map(|h| h.to_ascii_lowercase()))
                .or_default()
                .push(i);
        }
        for (hostname, group) in seen {
            if group.len() < 2 {
                continue;
            }
            let names: Vec<&str> = group
                .iter()
                .map(|&i| states[i].spec.name.as_str())
                .collect();
            let message = format!(
                "listeners {} have the same port {port} and hostname {}",
                names.join(", "),
                hostname.as_deref().unwrap_or("(any)")
            );
            for &i in &group {
                states[i].conflict = Some((Reason::HostnameConflict, message.clone()));
            }
        }
    }
}

fn resolve_certificates(
    state: &mut ListenerState<'_>,
    tls: &k8s::GatewayTlsConfig,
    gateway_key: &ObjectKey,
    index: &Index<'_>,
) {
    for (position, reference) in tls.certificate_refs.iter().enumerate() {
        match certificate(reference, gateway_key, index) {
            Ok(certificate) => state.certificates.push(certificate),
            Err((reason, message)) => {
                if state.cert_problem.is_none() {
                    state.cert_problem = Some((
                        reason,
                        format!("tls.certificateRefs[{position}]: {message}"),
                    ));
                }
            }
        }
    }
}

/// Resolves one certificateRef to a certificate and key, checking kind, ReferenceGrant,
/// existence, Secret type and that both PEM blocks parse.
pub(crate) fn certificate(
    reference: &k8s::SecretObjectReference,
    gateway_key: &ObjectKey,
    index: &Index<'_>,
) -> Result<TlsCertificate, (Reason, String)> {
    let invalid = |message: String| (Reason::InvalidCertificateRef, message);
    let group = reference.group.as_deref().unwrap_or("");
    let kind = reference.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err(invalid(format!(
            "unsupported certificate reference kind {}{kind} (only core Secrets)",
            if group.is_empty() {
                String::new()
            } else {
                format!("{group}/")
            }
        )));
    }
    let namespace = reference
        .namespace
        .as_deref()
        .unwrap_or(&gateway_key.namespace);
    let allowed = index.reference_allowed(&Reference {
        from_group: GATEWAY_GROUP,
        from_kind: "Gateway",
        from_namespace: &gateway_key.namespace,
        to_group: "",
        to_kind: "Secret",
        to_namespace: namespace,
        to_name: &reference.name,
    });
    if !allowed {
        return Err((
            Reason::RefNotPermitted,
            format!(
                "Secret {namespace}/{} is in another namespace and no ReferenceGrant allows it",
                reference.name
            ),
        ));
    }
    let Some(secret) = index.secret(namespace, &reference.name) else {
        return Err(invalid(format!(
            "Secret {namespace}/{} not found",
            reference.name
        )));
    };
    if let Some(type_) = &secret.type_
        && type_ != "kubernetes.io/tls"
    {
        return Err(invalid(format!(
            "Secret {namespace}/{} has type {type_:?}, expected kubernetes.io/tls",
            reference.name
        )));
    }
    let field = |name: &str| -> Result<String, (Reason, String)> {
        let bytes = secret_value(secret, name)
            .map_err(|why| {
                invalid(format!(
                    "Secret {namespace}/{} {name}: {why}",
                    reference.name
                ))
            })?
            .ok_or_else(|| {
                invalid(format!(
                    "Secret {namespace}/{} has no {name}",
                    reference.name
                ))
            })?;
        String::from_utf8(bytes).map_err(|_| {
            invalid(format!(
                "Secret {namespace}/{} {name} is not PEM text",
                reference.name
            ))
        })
    };
    let cert_chain_pem = field("tls.crt")?;
    let private_key_pem = field("tls.key")?;
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "Secret {namespace}/{} tls.crt holds no valid PEM certificate",
                reference.name
            ))
        })?;
    let Ok(private_key) = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes()) else {
        return Err(invalid(format!(
            "Secret {namespace}/{} tls.key holds no valid PEM private key",
            reference.name
        )));
    };
    // What the gateway does with the pair when it builds the listener, checked here so a bad
    // pair fails this listener alone (ResolvedRefs=False) instead of the whole config.
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&private_key).map_err(|e| {
        invalid(format!(
            "Secret {namespace}/{} tls.key is not a supported private key (RSA, ECDSA P-256/P-384 or Ed25519): {e}",
            reference.name
        ))
    })?;
    rustls::sign::CertifiedKey::new(chain, signing_key)
        .keys_match()
        .map_err(|e| {
            invalid(format!(
                "Secret {namespace}/{} tls.key does not match the certificate in tls.crt: {e}",
                reference.name
            ))
        })?;
    Ok(TlsCertificate {
        key: ObjectKey {
            namespace: namespace.to_string(),
            name: reference.name.clone(),
        },
        cert_chain_pem,
        private_key_pem,
    })
}
