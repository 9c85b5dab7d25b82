//! ReferenceGrant, Service, EndpointSlice, Secret and Namespace validation.
//!
//! These objects never become status, so a bad entry inside them (one port, one address) is
//! reported and skipped while the rest of the object is kept.

use base64::Engine;

use super::{cluster_meta, field, namespaced_meta};
use crate::k8s;
use crate::problem::{Origin, Problem};

/// Validates a ReferenceGrant: `from` and `to` need 1..=16 entries each.
pub(crate) fn reference_grant(
    mut raw: k8s::ReferenceGrant,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::ReferenceGrant> {
    let meta = namespaced_meta(&raw.metadata, "ReferenceGrant", origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    let key = meta.key.to_string();
    let mut ok = true;
    let mut problem = |path: String, message: String| {
        problems.push(origin.object_problem("ReferenceGrant", Some(&key), path, message));
        ok = false;
    };
    for (name, n) in [("from", raw.spec.from.len()), ("to", raw.spec.to.len())] {
        if !(1..=16).contains(&n) {
            problem(
                format!("spec.{name}"),
                format!("has {n} entries; 1 to 16 are required"),
            );
        }
    }
    for (index, from) in raw.spec.from.iter().enumerate() {
        if let Err(why) = field::kind(&from.kind) {
            problem(format!("spec.from[{index}].kind"), why);
        }
        if let Err(why) = field::namespace(&from.namespace) {
            problem(format!("spec.from[{index}].namespace"), why);
        }
        if let Err(why) = field::group(&from.group) {
            problem(format!("spec.from[{index}].group"), why);
        }
    }
    for (index, to) in raw.spec.to.iter().enumerate() {
        if let Err(why) = field::kind(&to.kind) {
            problem(format!("spec.to[{index}].kind"), why);
        }
        if let Err(why) = field::group(&to.group) {
            problem(format!("spec.to[{index}].group"), why);
        }
    }
    ok.then_some(raw)
}

/// Validates a Service; ports with an invalid number are reported and removed.
pub(crate) fn service(
    mut raw: k8s::Service,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::Service> {
    let meta = namespaced_meta(&raw.metadata, "Service", origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    let key = meta.key.to_string();
    let mut index = 0;
    raw.spec.ports.retain(|port| {
        let path = format!("spec.ports[{index}]");
        index += 1;
        let mut keep = true;
        if let Err(why) = field::port(port.port) {
            problems.push(origin.object_problem(
                "Service",
                Some(&key),
                format!("{path}.port"),
                why,
            ));
            keep = false;
        }
        if let Some(k8s::IntOrString::Int(target)) = port.target_port
            && let Err(why) = field::port(target)
        {
            problems.push(origin.object_problem(
                "Service",
                Some(&key),
                format!("{path}.targetPort"),
                why,
            ));
            keep = false;
        }
        keep
    });
    Some(raw)
}

/// Validates an EndpointSlice; unparsable addresses and bad ports are reported and removed.
/// FQDN slices are kept but contribute no endpoints.
pub(crate) fn endpoint_slice(
    mut raw: k8s::EndpointSlice,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::EndpointSlice> {
    let meta = namespaced_meta(&raw.metadata, "EndpointSlice", origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    let key = meta.key.to_string();
    let problem = |path: String, message: String| {
        origin.object_problem("EndpointSlice", Some(&key), path, message)
    };
    let want_v4 = match raw.address_type.as_str() {
        "IPv4" => Some(true),
        "IPv6" => Some(false),
        "FQDN" => None,
        other => {
            problems.push(problem(
                "addressType".to_string(),
                format!("unsupported value {other:?} (supported: IPv4, IPv6, FQDN)"),
            ));
            return None;
        }
    };
    if let Some(want_v4) = want_v4 {
        for (e, endpoint) in raw.endpoints.iter_mut().enumerate() {
            let mut a = 0;
            endpoint.addresses.retain(|address| {
                let path = format!("endpoints[{e}].addresses[{a}]");
                a += 1;
                match address.parse::<std::net::IpAddr>() {
                    Ok(ip) if ip.is_ipv4() == want_v4 => true,
                    Ok(_) => {
                        problems.push(problem(
                            path,
                            format!(
                                "{address:?} does not match addressType {}",
                                if want_v4 { "IPv4" } else { "IPv6" }
                            ),
                        ));
                        false
                    }
                    Err(_) => {
                        problems.push(problem(path, format!("{address:?} is not an IP address")));
                        false
                    }
                }
            });
        }
    }
    let mut p = 0;
    raw.ports.retain(|port| {
        let path = format!("ports[{p}].port");
        p += 1;
        match port.port.map(field::port) {
            None | Some(Ok(_)) => true,
            Some(Err(why)) => {
                problems.push(problem(path, why));
                false
            }
        }
    });
    Some(raw)
}

/// Validates a Secret: `data` values must be base64. A Secret with bad data is still kept
/// (a listener that uses it reports `InvalidCertificateRef`).
pub(crate) fn secret(
    mut raw: k8s::Secret,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::Secret> {
    let meta = namespaced_meta(&raw.metadata, "Secret", origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    let key = meta.key.to_string();
    for (name, value) in &raw.data {
        if let Err(why) = decode_base64(value) {
            problems.push(origin.object_problem("Secret", Some(&key), format!("data.{name}"), why));
        }
    }
    Some(raw)
}

/// A Secret value by key: `stringData` wins over `data` (as the API server merges them).
pub(crate) fn secret_value(secret: &k8s::Secret, name: &str) -> Result<Option<Vec<u8>>, String> {
    if let Some(text) = secret.string_data.get(name) {
        return Ok(Some(text.as_bytes().to_vec()));
    }
    match secret.data.get(name) {
        None => Ok(None),
        Some(encoded) => decode_base64(encoded).map(Some),
    }
}

/// Decodes standard base64, tolerating line breaks (as `kubectl` and editors wrap them).
fn decode_base64(value: &str) -> Result<Vec<u8>, String> {
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|error| format!("invalid base64: {error}"))
}

/// Validates a ConfigMap (only its metadata: a bad `ca.crt` is reported by the listener that
/// uses it).
pub(crate) fn config_map(
    mut raw: k8s::ConfigMap,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::ConfigMap> {
    let meta = namespaced_meta(&raw.metadata, "ConfigMap", origin, problems)?;
    raw.metadata.namespace = Some(meta.key.namespace.clone());
    Some(raw)
}

/// The label the API server sets on every Namespace (Kubernetes 1.22+), its value the
/// namespace's name: the usual way to select one namespace in `allowedRoutes`.
pub(crate) const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Validates a Namespace (a DNS-1123 label name) and sets its
/// `kubernetes.io/metadata.name` label to its name, as the API server does on every create
/// and update, so a Namespace written by hand in a directory selects like one read from a
/// cluster.
pub(crate) fn namespace(
    mut raw: k8s::Namespace,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<k8s::Namespace> {
    if !cluster_meta(
        &raw.metadata,
        "Namespace",
        origin,
        problems,
        field::namespace,
    ) {
        return None;
    }
    raw.metadata
        .labels
        .insert(NAMESPACE_NAME_LABEL.to_string(), raw.metadata.name.clone());
    Some(raw)
}
