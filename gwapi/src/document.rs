//! Multi-document YAML/JSON text → typed, validated [`Object`]s plus [`Problem`]s.
//!
//! Each document is parsed on its own, so one bad document (a YAML syntax error, a wrong type,
//! an invalid field) never loses the others. Documents are split on `---` lines and ended by
//! `...` lines, as YAML streams are; JSON is valid YAML, so `.json` files go through the same
//! path, and a `kind: List` document (kubectl's output) contributes each of its `items`.

use meridian_proto::model::route::{GrpcRoute, HttpRoute, TlsRoute};
use serde::de::DeserializeOwned;

use crate::k8s;
use crate::problem::{Origin, Problem};
use crate::status::Reason;
use crate::validate;

/// One parsed object with the place it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// File and document number.
    pub origin: Origin,
    /// The object.
    pub resource: Resource,
}

/// The objects Meridian understands. Routes are already translated to the model; the other
/// kinds stay in their Kubernetes shape (validated) because programming needs their details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A GatewayClass.
    GatewayClass(k8s::GatewayClass),
    /// A Gateway (structurally valid; listener problems become listener conditions).
    Gateway(k8s::Gateway),
    /// An HTTPRoute.
    HttpRoute(Validated<HttpRoute>),
    /// A GRPCRoute.
    GrpcRoute(Validated<GrpcRoute>),
    /// A TLSRoute.
    TlsRoute(Validated<TlsRoute>),
    /// A ReferenceGrant.
    ReferenceGrant(k8s::ReferenceGrant),
    /// A Service.
    Service(k8s::Service),
    /// An EndpointSlice.
    EndpointSlice(k8s::EndpointSlice),
    /// A Secret.
    Secret(k8s::Secret),
    /// A ConfigMap (CA bundles of BackendTLSPolicies and frontend client validation).
    ConfigMap(k8s::ConfigMap),
    /// A Namespace.
    Namespace(k8s::Namespace),
    /// A BackendTLSPolicy.
    BackendTlsPolicy(CheckedPolicy),
    /// A well-formed object of a kind Meridian does not use (a Deployment, ...).
    /// Kept so callers can log what they skipped; it is not a problem.
    Ignored {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// `metadata.name`.
        name: String,
    },
}

/// A route in model form with what validation found.
///
/// Invalid rules are already removed from `route.rules` and described in `dropped_rules`
/// (status `PartiallyInvalid`, message "Dropped Rule ..."). A route that is invalid as a whole
/// (bad hostnames or parentRefs, no valid rule left) carries a `rejection`: it attaches nowhere
/// and reports `Accepted=False` with that reason on every parentRef.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated<R> {
    /// The route (object form: every backend `Resolution::Unresolved`).
    pub route: R,
    /// `metadata.generation` (0 when absent), echoed as `observedGeneration`.
    pub generation: i64,
    /// One message per dropped rule, naming the rule and the offending field.
    pub dropped_rules: Vec<String>,
    /// Set when the route as a whole is invalid.
    pub rejection: Option<Rejection>,
}

/// A BackendTLSPolicy with what validation found.
///
/// A policy that breaks a schema or CEL rule is kept with `invalid` set rather than dropped:
/// dropping it would send its Services' traffic in cleartext, so programming makes the
/// targeted backends invalid instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedPolicy {
    /// The policy (metadata.namespace always set).
    pub policy: k8s::BackendTlsPolicy,
    /// `metadata.creationTimestamp` in Unix milliseconds (0 when absent): the oldest policy
    /// wins a conflict.
    pub created_unix_ms: i64,
    /// `metadata.generation` (0 when absent).
    pub generation: i64,
    /// Every schema/CEL violation (field path and message), when there is one.
    pub invalid: Option<String>,
}

/// Why a route is not accepted at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// `UnsupportedValue` or `IncompatibleFilters`.
    pub reason: Reason,
    /// Which field and why.
    pub message: String,
}

/// Parses one multi-document YAML (or JSON) text. Bad documents are reported, good ones kept.
/// `source` names the text in problems (a file name). Documents are numbered from 1, counting
/// only non-empty ones.
pub fn parse_documents(text: &str, source: &str) -> (Vec<Object>, Vec<Problem>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    let mut doc = 0;
    for chunk in split_documents(text) {
        if is_blank(chunk.text) {
            continue;
        }
        doc += 1;
        let origin = Origin::new(source, Some(doc));
        let value: serde_json::Value = match parse_json(chunk.text) {
            Some(value) => value,
            None => match serde_saphyr::from_str(chunk.text) {
                Ok(value) => value,
                Err(error) => {
                    problems.push(origin.problem(yaml_error(&error, chunk.first_line)));
                    continue;
                }
            },
        };
        if value.is_null() {
            continue;
        }
        parse_into(value, &origin, &mut objects, &mut problems);
    }
    (objects, problems)
}

/// Parses one object already decoded to JSON (a Kubernetes watch event, a JSON body).
/// Returns the object, if it survived, and every problem found.
pub fn parse_value(value: serde_json::Value, origin: &Origin) -> (Option<Object>, Vec<Problem>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    parse_into(value, origin, &mut objects, &mut problems);
    (objects.pop(), problems)
}

fn parse_into(
    value: serde_json::Value,
    origin: &Origin,
    objects: &mut Vec<Object>,
    problems: &mut Vec<Problem>,
) {
    let Some(map) = value.as_object() else {
        problems.push(origin.problem(format!(
            "expected a Kubernetes object (a mapping with apiVersion and kind), found {}",
            json_type(&value)
        )));
        return;
    };
    let api_version = map.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = map.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        let missing = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        problems.push(origin.problem(format!(
            "{missing}: required field is missing or not a string"
        )));
        return;
    }
    if kind == "List" && api_version == "v1" {
        if let Some(items) = map.get("items").and_then(|v| v.as_array()) {
            for item in items.clone() {
                parse_into(item, origin, objects, problems);
            }
        }
        return;
    }
    let (api_version, kind) = (api_version.to_string(), kind.to_string());
    let Some(expected) = supported_versions(&kind) else {
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        objects.push(Object {
            origin: origin.clone(),
            resource: Resource::Ignored {
                api_version,
                kind,
                name,
            },
        });
        return;
    };
    if !expected.contains(&api_version.as_str()) {
        problems.push(origin.object_problem(
            &kind,
            None,
            "apiVersion",
            format!(
                "unsupported value {api_version:?} for kind {kind} (supported: {})",
                expected.join(", ")
            ),
        ));
        return;
    }
    let first_problem = problems.len();
    let resource = match kind.as_str() {
        "Gateway" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::gateway(raw, origin, problems))
            .map(Resource::Gateway),
        "GatewayClass" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::gateway_class(raw, origin, problems))
            .map(Resource::GatewayClass),
        "HTTPRoute" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::http_route(raw, origin, problems))
            .map(Resource::HttpRoute),
        "GRPCRoute" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::grpc_route(raw, origin, problems))
            .map(Resource::GrpcRoute),
        "TLSRoute" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::tls_route(raw, origin, problems))
            .map(Resource::TlsRoute),
        "ReferenceGrant" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::reference_grant(raw, origin, problems))
            .map(Resource::ReferenceGrant),
        "Service" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::service(raw, origin, problems))
            .map(Resource::Service),
        "EndpointSlice" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::endpoint_slice(raw, origin, problems))
            .map(Resource::EndpointSlice),
        "Secret" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::secret(raw, origin, problems))
            .map(Resource::Secret),
        "ConfigMap" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::config_map(raw, origin, problems))
            .map(Resource::ConfigMap),
        "Namespace" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::namespace(raw, origin, problems))
            .map(Resource::Namespace),
        "BackendTLSPolicy" => decode(value, origin, &kind, problems)
            .and_then(|raw| validate::backend_tls_policy(raw, origin, problems))
            .map(Resource::BackendTlsPolicy),
        _ => None,
    };
    if let Some(resource) = resource {
        // The object survived validation: what was found about it is status (a listener
        // condition, a dropped rule, a rejected route) or a skipped entry, not a reason to
        // hold the object back.
        for problem in &mut problems[first_problem..] {
            problem.fatal = false;
        }
        objects.push(Object {
            origin: origin.clone(),
            resource,
        });
    }
}

/// The apiVersions accepted for each kind Meridian reads; `None` for kinds it ignores.
fn supported_versions(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Gateway" | "GatewayClass" | "HTTPRoute" => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
        "GRPCRoute" => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha2",
        ],
        "TLSRoute" => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha3",
            "gateway.networking.k8s.io/v1alpha2",
        ],
        "ReferenceGrant" => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
            "gateway.networking.k8s.io/v1alpha2",
        ],
        "BackendTLSPolicy" => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha3",
        ],
        "Service" | "Secret" | "Namespace" | "ConfigMap" => &["v1"],
        "EndpointSlice" => &["discovery.k8s.io/v1"],
        _ => return None,
    })
}

/// Decodes a JSON value into a typed object, reporting a type error with its field path.
fn decode<T: DeserializeOwned>(
    value: serde_json::Value,
    origin: &Origin,
    kind: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let cluster_scoped = matches!(kind, "Namespace" | "GatewayClass");
    let key = object_key_hint(&value, cluster_scoped);
    // Fields the types do not know are dropped by serde; in a Gateway API object's spec that
    // is a typo or an unsupported feature, reported rather than silently ignored. Other kinds
    // (Service, Secret...) and metadata/status carry many fields Meridian has no use for.
    let mut unknown: Vec<String> = Vec::new();
    let checked = is_gateway_api_kind(kind);
    let mut note = |path: serde_ignored::Path<'_>| {
        if checked {
            let path = bracket_indices(&path.to_string());
            if path == "spec" || path.starts_with("spec.") {
                unknown.push(path);
            }
        }
    };
    let decoded = serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
        value, &mut note,
    ));
    if !unknown.is_empty() {
        for path in &unknown {
            problems.push(origin.object_problem(
                kind,
                key.as_deref(),
                path.clone(),
                if origin.lenient_fields {
                    "unknown field, ignored: Meridian does not implement it".to_string()
                } else {
                    "unknown field (a typo? it is not in the Gateway API schema Meridian \
                     implements); the object is not applied, as `kubectl apply` would refuse it"
                        .to_string()
                },
            ));
        }
        if !origin.lenient_fields {
            return None;
        }
    }
    match decoded {
        Ok(object) => Some(object),
        Err(error) => {
            let path = error.path().to_string();
            let path = if path == "." { String::new() } else { path };
            problems.push(origin.object_problem(
                kind,
                key.as_deref(),
                path,
                readable_type_error(&error.into_inner().to_string()),
            ));
            None
        }
    }
}

/// serde_ignored's `spec.rules.?.0.matchez` (`?` marks an `Option`) as
/// `spec.rules[0].matchez`, the form every other problem uses.
fn bracket_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for segment in path.split('.').filter(|s| *s != "?") {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// The Gateway API kinds, whose `spec` is checked for unknown fields.
fn is_gateway_api_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Gateway"
            | "GatewayClass"
            | "HTTPRoute"
            | "GRPCRoute"
            | "TLSRoute"
            | "ReferenceGrant"
            | "BackendTLSPolicy"
    )
}

/// `namespace/name` (or `name` for cluster-scoped kinds) from raw metadata, for problems
/// raised before validation.
fn object_key_hint(value: &serde_json::Value, cluster_scoped: bool) -> Option<String> {
    let metadata = value.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    if cluster_scoped {
        return Some(name.to_string());
    }
    let namespace = metadata
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default");
    Some(format!("{namespace}/{name}"))
}

/// serde names Rust types (`expected i64`); users write YAML.
fn readable_type_error(message: &str) -> String {
    let message = message
        .replace("expected i64", "expected an integer")
        .replace("expected u16", "expected an integer")
        .replace("expected a boolean", "expected true or false");
    if message.starts_with("invalid type: boolean") {
        // Kubernetes' YAML reads y/n/yes/no/on/off as booleans too; say how to get a string.
        return format!(
            "{message} (YAML reads y, n, yes, no, on and off as booleans: quote the value)"
        );
    }
    message
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// One document of a stream: its text and the 1-based line it starts on in the whole text.
struct Chunk<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits a YAML stream at document markers: a line starting with `---` (followed by nothing,
/// a space or a comment) starts a document, a line `...` ends one. Text on the `---` line after
/// the marker (`--- {a: 1}`) belongs to the new document.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    let mut in_doc_end = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let line_number = index + 1;
        let is_start = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare.starts_with("---#");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start {
            if !in_doc_end {
                chunks.push(Chunk {
                    text: &text[start..offset],
                    first_line,
                });
            }
            in_doc_end = false;
            // Keep the rest of the marker line (`--- {a: 1}`) by replacing the marker with
            // nothing: the document starts right after `---`.
            start = offset + 3;
            first_line = line_number;
        } else if is_end {
            if !in_doc_end {
                chunks.push(Chunk {
                    text: &text[start..offset],
                    first_line,
                });
            }
            in_doc_end = true;
            start = offset + line.len();
            first_line = line_number + 1;
        }
        offset += line.len();
    }
    if !in_doc_end || !is_blank(&text[start..]) {
        chunks.push(Chunk {
            text: &text[start..],
            first_line,
        });
    }
    chunks
}

/// JSON documents (`kubectl get -o json`, `.json` files) parse about twenty times faster with
/// `serde_json` than through the YAML parser. Anything that is not strict JSON (YAML flow
/// style, a syntax error) returns `None` and goes through the YAML parser, which reports
/// errors with positions.
fn parse_json(text: &str) -> Option<serde_json::Value> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// True when a document holds only whitespace, comments and directives.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line.starts_with('%')
    })
}

/// A one-line YAML error with its line number in the whole file.
fn yaml_error(error: &serde_saphyr::Error, first_line: usize) -> String {
    let plain = error.without_snippet();
    let message = plain.to_string();
    let message = message.lines().next().unwrap_or("").trim().to_string();
    match plain.location() {
        Some(location) if location.line() > 0 => {
            let line = first_line as u64 + location.line() - 1;
            format!(
                "invalid YAML at line {line} column {}: {}",
                location.column(),
                strip_location(&message)
            )
        }
        _ => format!("invalid YAML: {message}"),
    }
}

/// Drops a trailing "at line X column Y" the parser adds, since we print our own (file-relative)
/// position.
fn strip_location(message: &str) -> &str {
    match message.find(" at line ") {
        Some(index) => &message[..index],
        None => message,
    }
}

#[cfg(test)]
mod tests;
