//! HTTPRoute → `model::route::HttpRoute`, with the CRD/CEL rules on rules and matches.

use std::collections::BTreeSet;

use meridian_proto::model::route::{
    HeaderMatch, HttpFilter, HttpRoute, HttpRouteMatch, HttpRouteRule, PathMatch, PathModifier,
    QueryParamMatch, Retry, StringMatch, Timeouts,
};

use super::filter::{self, Flavor, Level};
use super::route::{self, Assembly};
use super::{Finding, field, namespaced_meta};
use crate::document::Validated;
use crate::k8s;
use crate::problem::{Origin, Problem};

/// Validates an HTTPRoute. `None` when the document cannot be keyed (bad metadata).
pub(crate) fn http_route(
    raw: k8s::HttpRoute,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<Validated<HttpRoute>> {
    let meta = namespaced_meta(&raw.metadata, "HTTPRoute", origin, problems)?;
    let namespace = meta.key.namespace.clone();
    let mut route_findings = Vec::new();
    let parent_refs = route::parent_refs(&raw.spec.parent_refs, &namespace, &mut route_findings);
    let hostnames = route::hostnames(&raw.spec.hostnames, 16, &mut route_findings);
    // The CRD default for an absent `rules` is one rule matching every path.
    let raw_rules = raw
        .spec
        .rules
        .clone()
        .unwrap_or_else(|| vec![k8s::HttpRouteRule::default()]);
    if raw_rules.len() > 16 {
        route_findings.push(Finding::new(
            "spec.rules",
            format!("has {} rules, at most 16 are allowed", raw_rules.len()),
        ));
    }
    let n_matches: usize = raw_rules
        .iter()
        .map(|r| r.matches.as_ref().map_or(1, Vec::len))
        .sum();
    if n_matches > 128 {
        route_findings.push(Finding::new(
            "spec.rules",
            format!("have {n_matches} matches in all, at most 128 are allowed"),
        ));
    }
    let mut assembly = Assembly {
        kind: "HTTPRoute",
        key: &meta.key,
        origin,
        generation: meta.generation,
        route_findings,
        dropped_rules: Vec::new(),
        dropped_reasons: Vec::new(),
        n_rules_in: raw_rules.len(),
    };
    let mut names = BTreeSet::new();
    let mut rules = Vec::with_capacity(raw_rules.len());
    for (index, raw_rule) in raw_rules.iter().enumerate() {
        let path = format!("spec.rules[{index}]");
        let mut findings = Vec::new();
        route::rule_name(raw_rule.name.as_ref(), &path, &mut names, &mut findings);
        let rule = http_rule(raw_rule, &path, &namespace, &mut findings);
        if assembly.rule(findings, problems) {
            rules.push(rule);
        }
    }
    let n_rules_kept = rules.len();
    let route = HttpRoute {
        key: meta.key.clone(),
        created_unix_ms: meta.created_unix_ms,
        parent_refs,
        hostnames,
        rules,
    };
    Some(assembly.finish(route, n_rules_kept, problems))
}

/// One rule; the caller drops it when `findings` grew.
pub(crate) fn http_rule(
    raw: &k8s::HttpRouteRule,
    path: &str,
    namespace: &str,
    findings: &mut Vec<Finding>,
) -> HttpRouteRule {
    let matches = match &raw.matches {
        None => vec![default_match()],
        Some(list) => {
            if list.len() > 64 {
                findings.push(Finding::new(
                    format!("{path}.matches"),
                    format!("has {} entries, at most 64 are allowed", list.len()),
                ));
            }
            list.iter()
                .enumerate()
                .map(|(index, m)| http_match(m, &format!("{path}.matches[{index}]"), findings))
                .collect()
        }
    };
    let filters = filter::filters(
        &raw.filters,
        &format!("{path}.filters"),
        namespace,
        Flavor::Http,
        Level::Rule,
        findings,
    );
    let backend_refs =
        route::backend_refs(&raw.backend_refs, path, namespace, Flavor::Http, findings);
    if !backend_refs.is_empty()
        && filters
            .iter()
            .any(|f| matches!(f, HttpFilter::RequestRedirect(_)))
    {
        findings.push(Finding::new(
            path,
            "a RequestRedirect filter must not be combined with backendRefs",
        ));
    }
    // CEL: ReplacePrefixMatch needs exactly one PathPrefix match to know what to replace.
    let uses_prefix_replacement = filters
        .iter()
        .chain(backend_refs.iter().flat_map(|b| b.filters.iter()))
        .any(|f| match f {
            HttpFilter::RequestRedirect(r) => {
                matches!(r.path, Some(PathModifier::ReplacePrefixMatch(_)))
            }
            HttpFilter::UrlRewrite(r) => {
                matches!(r.path, Some(PathModifier::ReplacePrefixMatch(_)))
            }
            _ => false,
        });
    let single_prefix = matches.len() == 1 && matches!(matches[0].path, PathMatch::Prefix(_));
    if uses_prefix_replacement && !single_prefix {
        findings.push(Finding::new(
            format!("{path}.matches"),
            "a ReplacePrefixMatch path modifier needs exactly one match, with a PathPrefix path",
        ));
    }
    let timeouts = raw
        .timeouts
        .as_ref()
        .map(|t| timeouts(t, &format!("{path}.timeouts"), findings))
        .unwrap_or_default();
    let retry = raw
        .retry
        .as_ref()
        .map(|r| retry(r, &format!("{path}.retry"), findings));
    let session_persistence = raw.session_persistence.as_ref().map(|raw| {
        route::session_persistence(raw, &format!("{path}.sessionPersistence"), findings)
    });
    HttpRouteRule {
        name: raw.name.clone(),
        matches,
        filters,
        backend_refs,
        timeouts,
        retry,
        session_persistence,
    }
}

/// The spec's default match: `PathPrefix /`.
fn default_match() -> HttpRouteMatch {
    HttpRouteMatch {
        path: PathMatch::Prefix("/".to_string()),
        headers: Vec::new(),
        query_params: Vec::new(),
        method: None,
    }
}

fn http_match(
    raw: &k8s::HttpRouteMatch,
    path: &str,
    findings: &mut Vec<Finding>,
) -> HttpRouteMatch {
    let path_match = match &raw.path {
        None => PathMatch::Prefix("/".to_string()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".to_string());
            let value_path = format!("{path}.path.value");
            match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => {
                    if let Err(why) = field::match_path(&value) {
                        findings.push(Finding::new(value_path, why));
                    }
                    PathMatch::Exact(value)
                }
                "PathPrefix" => {
                    if let Err(why) = field::match_path(&value) {
                        findings.push(Finding::new(value_path, why));
                    }
                    PathMatch::Prefix(value)
                }
                "RegularExpression" => {
                    if let Err(why) =
                        field::length(&value, 1, 1024).and_then(|()| field::regex(&value))
                    {
                        findings.push(Finding::new(value_path, why));
                    }
                    PathMatch::RegularExpression(value)
                }
                other => {
                    findings.push(Finding::new(
                        format!("{path}.path.type"),
                        format!(
                            "unsupported value {other:?} (supported: Exact, PathPrefix, RegularExpression)"
                        ),
                    ));
                    PathMatch::Prefix(value)
                }
            }
        }
    };
    let headers = string_matches(
        &raw.headers,
        &format!("{path}.headers"),
        4096,
        false,
        findings,
    )
    .into_iter()
    .map(|(name, value)| HeaderMatch { name, value })
    .collect();
    let query_params = string_matches(
        &raw.query_params,
        &format!("{path}.queryParams"),
        1024,
        true,
        findings,
    )
    .into_iter()
    .map(|(name, value)| QueryParamMatch { name, value })
    .collect();
    if let Some(method) = &raw.method
        && !field::HTTP_METHODS.contains(&method.as_str())
    {
        findings.push(Finding::new(
            format!("{path}.method"),
            format!(
                "unsupported value {method:?} (supported: {})",
                field::HTTP_METHODS.join(", ")
            ),
        ));
    }
    HttpRouteMatch {
        path: path_match,
        headers,
        query_params,
        method: raw.method.clone(),
    }
}

/// Header or query parameter conditions (≤ 16). For repeated names the first one wins, as
/// the spec says; header names compare case-insensitively, query names case-sensitively.
pub(crate) fn string_matches(
    raw: &[k8s::HttpHeaderMatch],
    path: &str,
    max_value: usize,
    case_sensitive: bool,
    findings: &mut Vec<Finding>,
) -> Vec<(String, StringMatch)> {
    if raw.len() > 16 {
        findings.push(Finding::new(
            path,
            format!("has {} entries, at most 16 are allowed", raw.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, item) in raw.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        if let Err(why) = field::header_name(&item.name) {
            findings.push(Finding::new(format!("{item_path}.name"), why));
        }
        if let Err(why) = field::length(&item.value, 1, max_value) {
            findings.push(Finding::new(format!("{item_path}.value"), why));
        }
        let value = match item.type_.as_deref().unwrap_or("Exact") {
            "Exact" => StringMatch::Exact(item.value.clone()),
            "RegularExpression" => {
                if let Err(why) = field::regex(&item.value) {
                    findings.push(Finding::new(format!("{item_path}.value"), why));
                }
                StringMatch::RegularExpression(item.value.clone())
            }
            other => {
                findings.push(Finding::new(
                    format!("{item_path}.type"),
                    format!("unsupported value {other:?} (supported: Exact, RegularExpression)"),
                ));
                StringMatch::Exact(item.value.clone())
            }
        };
        let dedup_key = if case_sensitive {
            item.name.clone()
        } else {
            item.name.to_ascii_lowercase()
        };
        if seen.insert(dedup_key) {
            out.push((item.name.clone(), value));
        }
    }
    out
}

fn timeouts(raw: &k8s::HttpRouteTimeouts, path: &str, findings: &mut Vec<Finding>) -> Timeouts {
    let mut parse = |value: &Option<String>, name: &str| match value.as_deref().map(field::duration)
    {
        None => None,
        Some(Ok(duration)) => Some(duration),
        Some(Err(why)) => {
            findings.push(Finding::new(format!("{path}.{name}"), why));
            None
        }
    };
    let request = parse(&raw.request, "request");
    let backend_request = parse(&raw.backend_request, "backendRequest");
    if let (Some(request), Some(backend)) = (request, backend_request)
        && !request.is_zero()
        && backend > request
    {
        findings.push(Finding::new(
            format!("{path}.backendRequest"),
            "must not be longer than the request timeout",
        ));
    }
    Timeouts {
        request,
        backend_request,
    }
}

/// `retry`. Unset `attempts` means one retry (the spec leaves the default to implementations).
fn retry(raw: &k8s::HttpRouteRetry, path: &str, findings: &mut Vec<Finding>) -> Retry {
    let mut codes = Vec::with_capacity(raw.codes.len());
    for (index, code) in raw.codes.iter().enumerate() {
        if (400..=599).contains(code) {
            codes.push(*code as u16);
        } else {
            findings.push(Finding::new(
                format!("{path}.codes[{index}]"),
                format!("{code} is out of range (400-599)"),
            ));
        }
    }
    let attempts = match raw.attempts {
        None => 1,
        Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => n as u32,
        Some(n) => {
            findings.push(Finding::new(
                format!("{path}.attempts"),
                format!("{n} is out of range (at least 0)"),
            ));
            1
        }
    };
    let backoff = match raw.backoff.as_deref().map(field::duration) {
        None => None,
        Some(Ok(duration)) => Some(duration),
        Some(Err(why)) => {
            findings.push(Finding::new(format!("{path}.backoff"), why));
            None
        }
    };
    Retry {
        codes,
        attempts,
        backoff,
    }
}
