//! Validation like the CRD schemas and CEL rules would do it, translating routes to the model.
//!
//! Three levels, so one mistake costs as little as possible:
//! - **document**: a type error or an invalid name drops the object (a [`Problem`]);
//! - **route**: invalid hostnames or parentRefs, too many rules: the route is kept but
//!   *rejected* (attaches nowhere, `Accepted=False`), so its status can say why;
//! - **rule**: an invalid rule is dropped and the others are served (`PartiallyInvalid`).
//!
//! Every finding is also reported as a [`Problem`] naming the field path.

mod core;
mod field;
mod filter;
mod gateway;
mod grpc;
mod http;
mod policy;
mod route;
mod tls;

use meridian_proto::model::ObjectKey;

use crate::k8s::ObjectMeta;
use crate::problem::{Origin, Problem};
use crate::status::Reason;

pub(crate) use self::core::{
    NAMESPACE_NAME_LABEL, config_map, endpoint_slice, namespace, reference_grant, secret,
    secret_value, service,
};
pub(crate) use self::field::{format_duration, format_timestamp_ms};
pub(crate) use self::gateway::{
    AllowedNamespaces, ListenerCheck, check_address, check_listener, gateway, gateway_class,
};
pub(crate) use self::grpc::grpc_route;
pub(crate) use self::http::http_route;
pub(crate) use self::policy::backend_tls_policy;
pub(crate) use self::tls::tls_route;

/// One thing wrong inside a route, with the status reason it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Field path from the object root.
    pub(crate) path: String,
    /// What is wrong.
    pub(crate) message: String,
    /// `UnsupportedValue` or `IncompatibleFilters`.
    pub(crate) reason: Reason,
}

impl Finding {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            reason: Reason::UnsupportedValue,
        }
    }

    fn incompatible(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            reason: Reason::IncompatibleFilters,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The metadata every namespaced object needs.
pub(crate) struct Meta {
    pub(crate) key: ObjectKey,
    pub(crate) generation: i64,
    pub(crate) created_unix_ms: i64,
}

/// Validates `metadata` of a namespaced object: name, namespace (default `default`),
/// generation and creation time. Returns `None` (after reporting) when the object cannot be
/// keyed.
pub(crate) fn namespaced_meta(
    meta: &ObjectMeta,
    kind: &str,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<Meta> {
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    // A nameless object cannot be named in problems: show the kind alone.
    let hint = (!meta.name.is_empty()).then(|| format!("{namespace}/{}", meta.name));
    let problem =
        |path: &str, message: String| origin.object_problem(kind, hint.as_deref(), path, message);
    if meta.name.is_empty() {
        problems.push(problem(
            "metadata.name",
            "required field is missing".to_string(),
        ));
        return None;
    }
    if let Err(why) = field::namespace(&namespace) {
        problems.push(problem("metadata.namespace", why));
        return None;
    }
    if let Err(why) = field::object_name(&meta.name) {
        problems.push(problem("metadata.name", why));
        return None;
    }
    let key = ObjectKey {
        namespace,
        name: meta.name.clone(),
    };
    let created_unix_ms = match &meta.creation_timestamp {
        None => 0,
        Some(text) => match field::timestamp_ms(text) {
            Ok(ms) => ms,
            Err(why) => {
                problems.push(problem("metadata.creationTimestamp", why));
                return None;
            }
        },
    };
    Some(Meta {
        key,
        generation: meta.generation.unwrap_or(0),
        created_unix_ms,
    })
}

/// Validates `metadata` of a cluster-scoped object (Namespace, GatewayClass).
pub(crate) fn cluster_meta(
    meta: &ObjectMeta,
    kind: &str,
    origin: &Origin,
    problems: &mut Vec<Problem>,
    check: fn(&str) -> Result<(), String>,
) -> bool {
    let problem =
        |path: &str, message: String| origin.object_problem(kind, Some(&meta.name), path, message);
    if meta.name.is_empty() {
        problems.push(problem(
            "metadata.name",
            "required field is missing".to_string(),
        ));
        return false;
    }
    if let Err(why) = check(&meta.name) {
        problems.push(problem("metadata.name", why));
        return false;
    }
    true
}

#[cfg(test)]
mod tests;
