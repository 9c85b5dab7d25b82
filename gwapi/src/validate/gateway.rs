//! Gateway and GatewayClass validation, and the per-listener check shared with programming
//! (listener problems become listener conditions rather than dropping the Gateway).

use std::collections::BTreeSet;

use meridian_proto::model::gateway::{ListenerProtocol, TlsMode};

use super::route::GATEWAY_GROUP;
use super::{cluster_meta, field, namespaced_meta};
use crate::k8s::{self, LabelSelector};
use crate::problem::{Origin, Problem};
use crate::status::{Reason, RouteKind};

/// What one listener's spec says, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenerCheck {
    /// Supported protocol, if it is one.
    pub(crate) protocol: Option<ListenerProtocol>,
    /// Valid port.
    pub(crate) port: Option<u16>,
    /// TLS mode for HTTPS/TLS listeners.
    pub(crate) tls_mode: Option<TlsMode>,
    /// Why the listener cannot be accepted (the first problem), if it cannot.
    pub(crate) invalid: Option<(Reason, String)>,
    /// Every problem, as (field path relative to the listener, message).
    pub(crate) findings: Vec<(String, String)>,
    /// Route kinds that may attach.
    pub(crate) supported_kinds: Vec<RouteKind>,
    /// Kinds listed in allowedRoutes that are not valid for this listener.
    pub(crate) invalid_kinds: Vec<String>,
    /// Which namespaces routes may come from.
    pub(crate) from: AllowedNamespaces,
}

/// `allowedRoutes.namespaces.from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AllowedNamespaces {
    /// Only the Gateway's namespace (default).
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match.
    Selector(LabelSelector),
    /// No namespace.
    None,
}

/// Checks one listener.
pub(crate) fn check_listener(listener: &k8s::Listener) -> ListenerCheck {
    let mut findings: Vec<(String, String, Reason)> = Vec::new();
    let mut push = |path: &str, message: String, reason: Reason| {
        findings.push((path.to_string(), message, reason));
    };
    if let Err(why) = field::section_name(&listener.name) {
        push("name", why, Reason::UnsupportedValue);
    }
    let port = match field::port(listener.port) {
        Ok(port) => Some(port),
        Err(why) => {
            push("port", why, Reason::UnsupportedValue);
            None
        }
    };
    if let Some(hostname) = &listener.hostname
        && let Err(why) = field::hostname(hostname)
    {
        push("hostname", why, Reason::UnsupportedValue);
    }
    let protocol = match listener.protocol.as_str() {
        "HTTP" => Some(ListenerProtocol::Http),
        "HTTPS" => Some(ListenerProtocol::Https),
        "TLS" => Some(ListenerProtocol::Tls),
        other => {
            push(
                "protocol",
                format!("protocol {other:?} is not supported (supported: HTTP, HTTPS, TLS)"),
                Reason::UnsupportedProtocol,
            );
            None
        }
    };
    let mut tls_mode = None;
    match (protocol, &listener.tls) {
        (Some(ListenerProtocol::Http), Some(_)) => {
            push(
                "tls",
                "must not be set for protocol HTTP".to_string(),
                Reason::UnsupportedValue,
            );
        }
        (Some(ListenerProtocol::Https | ListenerProtocol::Tls), None) => push(
            "tls",
            format!("is required for protocol {}", listener.protocol),
            Reason::UnsupportedValue,
        ),
        (Some(proto @ (ListenerProtocol::Https | ListenerProtocol::Tls)), Some(tls)) => {
            let mode = match tls.mode.as_deref().unwrap_or("Terminate") {
                "Terminate" => Some(TlsMode::Terminate),
                "Passthrough" => Some(TlsMode::Passthrough),
                other => {
                    push(
                        "tls.mode",
                        format!("unsupported value {other:?} (supported: Terminate, Passthrough)"),
                        Reason::UnsupportedValue,
                    );
                    None
                }
            };
            if proto == ListenerProtocol::Https && mode == Some(TlsMode::Passthrough) {
                push(
                    "tls.mode",
                    "HTTPS listeners terminate TLS; use protocol TLS for passthrough".to_string(),
                    Reason::UnsupportedValue,
                );
            }
            if mode == Some(TlsMode::Terminate) && tls.certificate_refs.is_empty() {
                push(
                    "tls.certificateRefs",
                    "at least one certificateRef is required when mode is Terminate".to_string(),
                    Reason::UnsupportedValue,
                );
            }
            if tls.certificate_refs.len() > 64 {
                push(
                    "tls.certificateRefs",
                    format!(
                        "has {} entries, at most 64 are allowed",
                        tls.certificate_refs.len()
                    ),
                    Reason::UnsupportedValue,
                );
            }
            tls_mode = mode;
        }
        (Some(ListenerProtocol::Http), None) | (None, _) => {}
    }
    let allowed = listener.allowed_routes.clone().unwrap_or_default();
    let namespaces = allowed.namespaces.unwrap_or_default();
    let from = match namespaces.from.as_deref().unwrap_or("Same") {
        "Same" => AllowedNamespaces::Same,
        "All" => AllowedNamespaces::All,
        "None" => AllowedNamespaces::None,
        "Selector" => match namespaces.selector {
            Some(selector) => match selector.check() {
                Ok(()) => AllowedNamespaces::Selector(selector),
                Err(why) => {
                    push(
                        "allowedRoutes.namespaces.selector",
                        why,
                        Reason::UnsupportedValue,
                    );
                    AllowedNamespaces::None
                }
            },
            None => {
                push(
                    "allowedRoutes.namespaces.selector",
                    "is required when from is Selector".to_string(),
                    Reason::UnsupportedValue,
                );
                AllowedNamespaces::None
            }
        },
        other => {
            push(
                "allowedRoutes.namespaces.from",
                format!("unsupported value {other:?} (supported: Same, All, Selector, None)"),
                Reason::UnsupportedValue,
            );
            AllowedNamespaces::None
        }
    };
    let compatible: &[RouteKind] = match protocol {
        Some(ListenerProtocol::Http | ListenerProtocol::Https) => {
            &[RouteKind::Http, RouteKind::Grpc]
        }
        Some(ListenerProtocol::Tls) => &[RouteKind::Tls],
        None => &[],
    };
    let mut supported_kinds = Vec::new();
    let mut invalid_kinds = Vec::new();
    if allowed.kinds.len() > 8 {
        push(
            "allowedRoutes.kinds",
            format!("has {} entries, at most 8 are allowed", allowed.kinds.len()),
            Reason::UnsupportedValue,
        );
    }
    if allowed.kinds.is_empty() {
        supported_kinds.extend_from_slice(compatible);
    } else {
        for kind in &allowed.kinds {
            let group = kind.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let route_kind = RouteKind::from_kind(&kind.kind)
                .filter(|k| group == GATEWAY_GROUP && compatible.contains(k));
            match route_kind {
                Some(k) if !supported_kinds.contains(&k) => supported_kinds.push(k),
                Some(_) => {}
                None => invalid_kinds.push(if group.is_empty() {
                    kind.kind.clone()
                } else {
                    format!("{group}/{}", kind.kind)
                }),
            }
        }
    }
    let invalid = findings
        .first()
        .map(|(path, message, reason)| (*reason, format!("{path}: {message}")));
    ListenerCheck {
        protocol,
        port,
        tls_mode,
        invalid,
        findings: findings.into_iter().map(|(p, m, _)| (p, m)).collect(),
        supported_kinds,
        invalid_kinds,
        from,
    }
}

/// Validates a Gateway. Structural problems (no class, no or too many listeners, duplicate
/// listener names) drop it; listener and address problems are reported and become status.
pub(crate) fn gateway(
    mut raw: k8s::Gateway,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::Gateway> {
    let meta = namespaced_meta(&raw.metadata, "Gateway", origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    let key = meta.key.to_string();
    let problem =
        |path: String, message: String| origin.object_problem("Gateway", Some(&key), path, message);
    let mut fatal = false;
    if raw.spec.gateway_class_name.is_empty() {
        problems.push(problem(
            "spec.gatewayClassName".into(),
            "required field is missing".into(),
        ));
        fatal = true;
    }
    let n_listeners = raw.spec.listeners.len();
    if !(1..=64).contains(&n_listeners) {
        problems.push(problem(
            "spec.listeners".into(),
            format!("has {n_listeners} listeners; 1 to 64 are required"),
        ));
        fatal = true;
    }
    let mut names = BTreeSet::new();
    for (index, listener) in raw.spec.listeners.iter().enumerate() {
        let path = format!("spec.listeners[{index}]");
        if !listener.name.is_empty() && !names.insert(listener.name.as_str()) {
            problems.push(problem(
                format!("{path}.name"),
                format!(
                    "{:?} is used by an earlier listener; listener names must be unique",
                    listener.name
                ),
            ));
            fatal = true;
        }
        for (field_path, message) in check_listener(listener).findings {
            problems.push(problem(format!("{path}.{field_path}"), message));
        }
    }
    if raw.spec.addresses.len() > 16 {
        problems.push(problem(
            "spec.addresses".into(),
            format!(
                "has {} entries, at most 16 are allowed",
                raw.spec.addresses.len()
            ),
        ));
    }
    for (index, address) in raw.spec.addresses.iter().enumerate() {
        if let Err(why) = check_address(address) {
            problems.push(problem(format!("spec.addresses[{index}]"), why));
        }
    }
    if let Some(frontend) = raw.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) {
        for (path, message) in check_frontend(frontend) {
            problems.push(problem(path, message));
        }
    }
    if fatal { None } else { Some(raw) }
}

/// Checks `spec.tls.frontend` as the CRD schema would. Problems are reported but do not drop
/// the Gateway: the HTTPS listeners they apply to are not accepted instead (fail closed).
fn check_frontend(frontend: &k8s::FrontendTlsConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut check_validation = |path: String, validation: &k8s::FrontendTlsValidation| {
        if let Err(why) = crate::program::frontend_mode(validation.mode.as_deref()) {
            out.push((format!("{path}.mode"), why));
        }
        let n = validation.ca_certificate_refs.len();
        if !(1..=8).contains(&n) {
            out.push((
                format!("{path}.caCertificateRefs"),
                format!("has {n} entries; 1 to 8 are required"),
            ));
        }
    };
    if let Some(validation) = frontend
        .default
        .as_ref()
        .and_then(|d| d.validation.as_ref())
    {
        check_validation(
            "spec.tls.frontend.default.validation".to_string(),
            validation,
        );
    }
    let mut ports = BTreeSet::new();
    let mut port_problems = Vec::new();
    for (index, entry) in frontend.per_port.iter().enumerate() {
        let path = format!("spec.tls.frontend.perPort[{index}]");
        match field::port(entry.port) {
            Err(why) => port_problems.push((format!("{path}.port"), why)),
            Ok(port) if !ports.insert(port) => port_problems.push((
                format!("{path}.port"),
                format!("port {port} has an earlier entry; this one is ignored"),
            )),
            Ok(_) => {}
        }
        if let Some(validation) = &entry.tls.validation {
            check_validation(format!("{path}.tls.validation"), validation);
        }
    }
    if frontend.per_port.len() > 64 {
        port_problems.push((
            "spec.tls.frontend.perPort".to_string(),
            format!(
                "has {} entries, at most 64 are allowed",
                frontend.per_port.len()
            ),
        ));
    }
    out.extend(port_problems);
    out
}

/// Meridian binds only `IPAddress` addresses.
pub(crate) fn check_address(address: &k8s::GatewayAddress) -> Result<std::net::IpAddr, String> {
    let type_ = address.type_.as_deref().unwrap_or("IPAddress");
    if type_ != "IPAddress" {
        return Err(format!(
            "address type {type_:?} is not supported (supported: IPAddress)"
        ));
    }
    let Some(value) = address.value.as_deref() else {
        return Err(
            "value: an IPAddress needs a value (Meridian does not assign addresses)".to_string(),
        );
    };
    value
        .parse()
        .map_err(|_| format!("value: {value:?} is not an IP address"))
}

/// Validates a GatewayClass.
pub(crate) fn gateway_class(
    raw: k8s::GatewayClass,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::GatewayClass> {
    if !cluster_meta(
        &raw.metadata,
        "GatewayClass",
        origin,
        problems,
        field::object_name,
    ) {
        return None;
    }
    if raw.spec.controller_name.is_empty() {
        problems.push(origin.object_problem(
            "GatewayClass",
            Some(&raw.metadata.name),
            "spec.controllerName",
            "required field is missing",
        ));
        return None;
    }
    Some(raw)
}
