//! HTTPRoute and GRPCRoute filters: type/field consistency, per-type field rules, the
//! at-most-once and redirect-xor-rewrite CEL rules, and translation to the model.

use std::collections::BTreeSet;

use meridian_proto::model::route::{
    Cors, HeaderModifier, HttpFilter, PathModifier, RequestMirror, RequestRedirect, UrlRewrite,
};

use super::route::backend_object;
use super::{Finding, field};
use crate::k8s;

/// Which route kind the filters belong to (GRPCRoute allows a subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// HTTPRoute.
    Http,
    /// GRPCRoute.
    Grpc,
    /// TLSRoute (no filters at all).
    Tls,
}

/// Rule-level or backendRef-level filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// `rules[].filters`.
    Rule,
    /// `rules[].backendRefs[].filters`.
    Backend,
}

/// Every filter type the Gateway API defines, with the field that carries its settings.
const FILTER_FIELDS: [(&str, &str); 8] = [
    ("RequestHeaderModifier", "requestHeaderModifier"),
    ("ResponseHeaderModifier", "responseHeaderModifier"),
    ("RequestMirror", "requestMirror"),
    ("RequestRedirect", "requestRedirect"),
    ("URLRewrite", "urlRewrite"),
    ("CORS", "cors"),
    ("ExtensionRef", "extensionRef"),
    ("ExternalAuth", "externalAuth"),
];

/// Validates and translates a filter list (≤ 16).
pub(crate) fn filters(
    raw: &[k8s::HttpRouteFilter],
    path: &str,
    namespace: &str,
    flavor: Flavor,
    level: Level,
    findings: &mut Vec<Finding>,
) -> Vec<HttpFilter> {
    if raw.len() > 16 {
        findings.push(Finding::new(
            path,
            format!("has {} entries, at most 16 are allowed", raw.len()),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut seen_once = BTreeSet::new();
    for (index, filter) in raw.iter().enumerate() {
        let path = format!("{path}[{index}]");
        if !type_fields_consistent(filter, &path, findings) {
            continue;
        }
        let type_ = filter.type_.as_str();
        if let Some(why) = unsupported(type_, flavor, level) {
            findings.push(Finding::new(format!("{path}.type"), why));
            continue;
        }
        let repeatable = matches!(type_, "RequestMirror" | "ExtensionRef");
        if !repeatable && !seen_once.insert(type_.to_string()) {
            findings.push(Finding::new(
                format!("{path}.type"),
                format!("a {type_} filter may appear at most once in a filter list"),
            ));
            continue;
        }
        let translated = match type_ {
            "RequestHeaderModifier" => filter.request_header_modifier.as_ref().map(|m| {
                HttpFilter::RequestHeaderModifier(header_modifier(
                    m,
                    &format!("{path}.requestHeaderModifier"),
                    findings,
                ))
            }),
            "ResponseHeaderModifier" => filter.response_header_modifier.as_ref().map(|m| {
                HttpFilter::ResponseHeaderModifier(header_modifier(
                    m,
                    &format!("{path}.responseHeaderModifier"),
                    findings,
                ))
            }),
            "RequestRedirect" => filter.request_redirect.as_ref().map(|r| {
                HttpFilter::RequestRedirect(redirect(
                    r,
                    &format!("{path}.requestRedirect"),
                    findings,
                ))
            }),
            "URLRewrite" => filter.url_rewrite.as_ref().map(|r| {
                HttpFilter::UrlRewrite(rewrite(r, &format!("{path}.urlRewrite"), findings))
            }),
            "RequestMirror" => filter.request_mirror.as_ref().map(|m| {
                HttpFilter::RequestMirror(mirror(
                    m,
                    &format!("{path}.requestMirror"),
                    namespace,
                    findings,
                ))
            }),
            "CORS" => filter
                .cors
                .as_ref()
                .map(|c| HttpFilter::Cors(cors(c, &format!("{path}.cors"), findings))),
            _ => None,
        };
        out.extend(translated);
    }
    let has_redirect = out
        .iter()
        .any(|f| matches!(f, HttpFilter::RequestRedirect(_)));
    let has_rewrite = out.iter().any(|f| matches!(f, HttpFilter::UrlRewrite(_)));
    if has_redirect && has_rewrite {
        findings.push(Finding::incompatible(
            path,
            "RequestRedirect and URLRewrite filters cannot be combined",
        ));
    }
    out
}

/// The `type` field must name exactly the one settings field that is present (CEL).
fn type_fields_consistent(
    filter: &k8s::HttpRouteFilter,
    path: &str,
    findings: &mut Vec<Finding>,
) -> bool {
    let present = [
        filter.request_header_modifier.is_some(),
        filter.response_header_modifier.is_some(),
        filter.request_mirror.is_some(),
        filter.request_redirect.is_some(),
        filter.url_rewrite.is_some(),
        filter.cors.is_some(),
        filter.extension_ref.is_some(),
        filter.external_auth.is_some(),
    ];
    let type_ = filter.type_.as_str();
    if type_.is_empty() {
        findings.push(Finding::new(
            format!("{path}.type"),
            "required field is missing",
        ));
        return false;
    }
    let Some(own) = FILTER_FIELDS.iter().position(|(name, _)| *name == type_) else {
        let names: Vec<&str> = FILTER_FIELDS.iter().map(|(name, _)| *name).collect();
        findings.push(Finding::new(
            format!("{path}.type"),
            format!(
                "unsupported value {type_:?} (supported: {})",
                names.join(", ")
            ),
        ));
        return false;
    };
    let mut ok = true;
    for (index, (name, field_name)) in FILTER_FIELDS.iter().enumerate() {
        if index != own && present[index] {
            findings.push(Finding::new(
                format!("{path}.{field_name}"),
                format!("must not be set when type is {type_} (it belongs to type {name})"),
            ));
            ok = false;
        }
    }
    if !present[own] {
        findings.push(Finding::new(
            format!("{path}.{}", FILTER_FIELDS[own].1),
            format!("must be set when type is {type_}"),
        ));
        ok = false;
    }
    ok
}

/// Why a known filter type cannot be used here, if it cannot.
fn unsupported(type_: &str, flavor: Flavor, level: Level) -> Option<String> {
    match (type_, flavor, level) {
        ("ExtensionRef" | "ExternalAuth", _, _) => {
            Some(format!("filter type {type_} is not supported by Meridian"))
        }
        ("RequestRedirect" | "URLRewrite" | "CORS", Flavor::Grpc, _) => {
            Some(format!("filter type {type_} is not valid in a GRPCRoute"))
        }
        ("CORS", Flavor::Http, Level::Backend) => {
            Some("filter type CORS is only supported on rules, not on backendRefs".to_string())
        }
        _ => None,
    }
}

fn header_modifier(
    raw: &k8s::HttpHeaderFilter,
    path: &str,
    findings: &mut Vec<Finding>,
) -> HeaderModifier {
    let mut pairs = |list: &[k8s::HeaderValue], name: &str| {
        let path = format!("{path}.{name}");
        if list.len() > 16 {
            findings.push(Finding::new(
                &path,
                format!("has {} entries, at most 16 are allowed", list.len()),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (index, header) in list.iter().enumerate() {
            let item = format!("{path}[{index}]");
            if let Err(why) = field::header_name(&header.name) {
                findings.push(Finding::new(format!("{item}.name"), why));
            } else if !seen.insert(header.name.to_ascii_lowercase()) {
                findings.push(Finding::new(
                    format!("{item}.name"),
                    format!(
                        "{:?} is listed twice (names compare case-insensitively)",
                        header.name
                    ),
                ));
            }
            if let Err(why) = field::length(&header.value, 1, 4096)
                .and_then(|()| field::header_value(&header.value))
            {
                findings.push(Finding::new(format!("{item}.value"), why));
            }
            out.push((header.name.clone(), header.value.clone()));
        }
        out
    };
    let set = pairs(&raw.set, "set");
    let add = pairs(&raw.add, "add");
    if raw.remove.len() > 16 {
        findings.push(Finding::new(
            format!("{path}.remove"),
            format!("has {} entries, at most 16 are allowed", raw.remove.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, name) in raw.remove.iter().enumerate() {
        if let Err(why) = field::header_name(name) {
            findings.push(Finding::new(format!("{path}.remove[{index}]"), why));
        } else if !seen.insert(name.to_ascii_lowercase()) {
            findings.push(Finding::new(
                format!("{path}.remove[{index}]"),
                format!("{name:?} is listed twice"),
            ));
        }
    }
    HeaderModifier {
        set,
        add,
        remove: raw.remove.clone(),
    }
}

fn redirect(
    raw: &k8s::HttpRequestRedirectFilter,
    path: &str,
    findings: &mut Vec<Finding>,
) -> RequestRedirect {
    if let Some(scheme) = &raw.scheme
        && scheme != "http"
        && scheme != "https"
    {
        findings.push(Finding::new(
            format!("{path}.scheme"),
            format!("unsupported value {scheme:?} (supported: http, https)"),
        ));
    }
    if let Some(hostname) = &raw.hostname
        && let Err(why) = field::precise_hostname(hostname)
    {
        findings.push(Finding::new(format!("{path}.hostname"), why));
    }
    let port = match raw.port.map(field::port) {
        None => None,
        Some(Ok(port)) => Some(port),
        Some(Err(why)) => {
            findings.push(Finding::new(format!("{path}.port"), why));
            None
        }
    };
    let status_code = match raw.status_code {
        None => 302,
        Some(code @ (301 | 302 | 303 | 307 | 308)) => code as u16,
        Some(code) => {
            findings.push(Finding::new(
                format!("{path}.statusCode"),
                format!("unsupported value {code} (supported: 301, 302, 303, 307, 308)"),
            ));
            302
        }
    };
    RequestRedirect {
        scheme: raw.scheme.clone(),
        hostname: raw.hostname.clone(),
        path: raw
            .path
            .as_ref()
            .and_then(|p| path_modifier(p, &format!("{path}.path"), findings)),
        port,
        status_code,
    }
}

fn rewrite(raw: &k8s::HttpUrlRewriteFilter, path: &str, findings: &mut Vec<Finding>) -> UrlRewrite {
    if let Some(hostname) = &raw.hostname
        && let Err(why) = field::precise_hostname(hostname)
    {
        findings.push(Finding::new(format!("{path}.hostname"), why));
    }
    UrlRewrite {
        hostname: raw.hostname.clone(),
        path: raw
            .path
            .as_ref()
            .and_then(|p| path_modifier(p, &format!("{path}.path"), findings)),
    }
}

/// `HTTPPathModifier`: the field named by `type` must be set and the other must not (CEL).
/// Meridian also requires a full path to start with `/` and a prefix replacement to be empty
/// or start with `/`, since anything else cannot form a request path.
fn path_modifier(
    raw: &k8s::HttpPathModifier,
    path: &str,
    findings: &mut Vec<Finding>,
) -> Option<PathModifier> {
    let full = raw.replace_full_path.as_ref();
    let prefix = raw.replace_prefix_match.as_ref();
    let check_value = |value: &str, field_name: &str, findings: &mut Vec<Finding>| {
        let empty_ok = field_name == "replacePrefixMatch";
        if value.len() > 1024 {
            findings.push(Finding::new(
                format!("{path}.{field_name}"),
                format!(
                    "is {} characters long, at most 1024 are allowed",
                    value.len()
                ),
            ));
        } else if !(value.starts_with('/') || (empty_ok && value.is_empty())) {
            findings.push(Finding::new(
                format!("{path}.{field_name}"),
                "must start with '/'",
            ));
        }
    };
    match raw.type_.as_str() {
        "ReplaceFullPath" => {
            if prefix.is_some() {
                findings.push(Finding::new(
                    format!("{path}.replacePrefixMatch"),
                    "must not be set when type is ReplaceFullPath",
                ));
            }
            let Some(full) = full else {
                findings.push(Finding::new(
                    format!("{path}.replaceFullPath"),
                    "must be set when type is ReplaceFullPath",
                ));
                return None;
            };
            check_value(full, "replaceFullPath", findings);
            Some(PathModifier::ReplaceFullPath(full.clone()))
        }
        "ReplacePrefixMatch" => {
            if full.is_some() {
                findings.push(Finding::new(
                    format!("{path}.replaceFullPath"),
                    "must not be set when type is ReplacePrefixMatch",
                ));
            }
            let Some(prefix) = prefix else {
                findings.push(Finding::new(
                    format!("{path}.replacePrefixMatch"),
                    "must be set when type is ReplacePrefixMatch",
                ));
                return None;
            };
            check_value(prefix, "replacePrefixMatch", findings);
            Some(PathModifier::ReplacePrefixMatch(prefix.clone()))
        }
        other => {
            findings.push(Finding::new(
                format!("{path}.type"),
                format!(
                    "unsupported value {other:?} (supported: ReplaceFullPath, ReplacePrefixMatch)"
                ),
            ));
            None
        }
    }
}

fn mirror(
    raw: &k8s::HttpRequestMirrorFilter,
    path: &str,
    namespace: &str,
    findings: &mut Vec<Finding>,
) -> RequestMirror {
    let reference = &raw.backend_ref;
    let backend_ref = backend_object(
        reference.group.as_deref(),
        reference.kind.as_deref(),
        &reference.name,
        reference.namespace.as_deref(),
        reference.port,
        &format!("{path}.backendRef"),
        namespace,
        findings,
    );
    let fraction = match (raw.percent, &raw.fraction) {
        (Some(_), Some(_)) => {
            findings.push(Finding::new(
                path,
                "only one of percent or fraction may be specified",
            ));
            None
        }
        (Some(percent), None) => {
            if (0..=100).contains(&percent) {
                Some((percent as u32, 100))
            } else {
                findings.push(Finding::new(
                    format!("{path}.percent"),
                    format!("{percent} is out of range (0-100)"),
                ));
                None
            }
        }
        (None, Some(fraction)) => {
            let denominator = fraction.denominator.unwrap_or(100);
            if fraction.numerator < 0 {
                findings.push(Finding::new(
                    format!("{path}.fraction.numerator"),
                    "must not be negative",
                ));
                None
            } else if denominator < 1 || denominator > i64::from(u32::MAX) {
                findings.push(Finding::new(
                    format!("{path}.fraction.denominator"),
                    "must be at least 1",
                ));
                None
            } else if fraction.numerator > denominator {
                findings.push(Finding::new(
                    format!("{path}.fraction"),
                    "numerator must be less than or equal to denominator",
                ));
                None
            } else {
                Some((fraction.numerator as u32, denominator as u32))
            }
        }
        (None, None) => None,
    };
    RequestMirror {
        backend_ref,
        fraction,
    }
}

fn cors(raw: &k8s::HttpCorsFilter, path: &str, findings: &mut Vec<Finding>) -> Cors {
    if raw.allow_origins.len() > 64 {
        findings.push(Finding::new(
            format!("{path}.allowOrigins"),
            format!(
                "has {} entries, at most 64 are allowed",
                raw.allow_origins.len()
            ),
        ));
    }
    for (index, origin) in raw.allow_origins.iter().enumerate() {
        if let Err(why) = field::cors_origin(origin) {
            findings.push(Finding::new(format!("{path}.allowOrigins[{index}]"), why));
        }
    }
    if raw.allow_methods.len() > 9 {
        findings.push(Finding::new(
            format!("{path}.allowMethods"),
            format!(
                "has {} entries, at most 9 are allowed",
                raw.allow_methods.len()
            ),
        ));
    }
    for (index, method) in raw.allow_methods.iter().enumerate() {
        if method != "*" && !field::HTTP_METHODS.contains(&method.as_str()) {
            findings.push(Finding::new(
                format!("{path}.allowMethods[{index}]"),
                format!("unsupported value {method:?} (supported: an upper-case HTTP method or *)"),
            ));
        }
    }
    wildcard_alone(
        &raw.allow_methods,
        &format!("{path}.allowMethods"),
        findings,
    );
    for (list, name) in [
        (&raw.allow_headers, "allowHeaders"),
        (&raw.expose_headers, "exposeHeaders"),
    ] {
        if list.len() > 64 {
            findings.push(Finding::new(
                format!("{path}.{name}"),
                format!("has {} entries, at most 64 are allowed", list.len()),
            ));
        }
        for (index, header) in list.iter().enumerate() {
            if header != "*"
                && let Err(why) = field::header_name(header)
            {
                findings.push(Finding::new(format!("{path}.{name}[{index}]"), why));
            }
        }
        wildcard_alone(list, &format!("{path}.{name}"), findings);
    }
    let max_age_seconds = match raw.max_age {
        None => 5,
        Some(age) if age >= 1 && age <= i64::from(u32::MAX) => age as u32,
        Some(age) => {
            findings.push(Finding::new(
                format!("{path}.maxAge"),
                format!("{age} is out of range (at least 1 second)"),
            ));
            5
        }
    };
    Cors {
        allow_origins: raw.allow_origins.clone(),
        allow_credentials: raw.allow_credentials.unwrap_or(false),
        allow_methods: raw.allow_methods.clone(),
        allow_headers: raw.allow_headers.clone(),
        expose_headers: raw.expose_headers.clone(),
        max_age_seconds,
    }
}

/// CEL: `*` must be the only entry when present.
fn wildcard_alone(list: &[String], path: &str, findings: &mut Vec<Finding>) {
    if list.len() > 1 && list.iter().any(|v| v == "*") {
        findings.push(Finding::new(
            path,
            "'*' cannot be combined with other values",
        ));
    }
}
