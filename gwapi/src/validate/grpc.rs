//! GRPCRoute → `model::route::GrpcRoute`.

use std::collections::BTreeSet;

use meridian_proto::model::route::{
    GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRouteRule, HeaderMatch,
};

use super::filter::{self, Flavor, Level};
use super::http::string_matches;
use super::route::{self, Assembly};
use super::{Finding, field, namespaced_meta};
use crate::document::Validated;
use crate::k8s;
use crate::problem::{Origin, Problem};

/// Validates a GRPCRoute. `None` when the document cannot be keyed.
pub(crate) fn grpc_route(
    raw: k8s::GrpcRoute,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<Validated<GrpcRoute>> {
    let meta = namespaced_meta(&raw.metadata, "GRPCRoute", origin, problems)?;
    let namespace = meta.key.namespace.clone();
    let mut route_findings = Vec::new();
    let parent_refs = route::parent_refs(&raw.spec.parent_refs, &namespace, &mut route_findings);
    let hostnames = route::hostnames(&raw.spec.hostnames, 16, &mut route_findings);
    // An absent rule list behaves like one empty rule (match everything, no backends).
    let raw_rules = if raw.spec.rules.is_empty() {
        vec![k8s::GrpcRouteRule::default()]
    } else {
        raw.spec.rules.clone()
    };
    if raw_rules.len() > 16 {
        route_findings.push(Finding::new(
            "spec.rules",
            format!("has {} rules, at most 16 are allowed", raw_rules.len()),
        ));
    }
    let n_matches: usize = raw_rules.iter().map(|r| r.matches.len()).sum();
    if n_matches > 128 {
        route_findings.push(Finding::new(
            "spec.rules",
            format!("have {n_matches} matches in all, at most 128 are allowed"),
        ));
    }
    let mut assembly = Assembly {
        kind: "GRPCRoute",
        key: &meta.key,
        origin,
        generation: meta.generation,
        route_findings,
        dropped_rules: Vec::new(),
        dropped_reasons: Vec::new(),
        n_rules_in: raw_rules.len(),
    };
    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    for (index, raw_rule) in raw_rules.iter().enumerate() {
        let path = format!("spec.rules[{index}]");
        let mut findings = Vec::new();
        route::rule_name(raw_rule.name.as_ref(), &path, &mut names, &mut findings);
        if raw_rule.matches.len() > 64 {
            findings.push(Finding::new(
                format!("{path}.matches"),
                format!(
                    "has {} entries, at most 64 are allowed",
                    raw_rule.matches.len()
                ),
            ));
        }
        let matches = raw_rule
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| grpc_match(m, &format!("{path}.matches[{i}]"), &mut findings))
            .collect();
        let filters = filter::filters(
            &raw_rule.filters,
            &format!("{path}.filters"),
            &namespace,
            Flavor::Grpc,
            Level::Rule,
            &mut findings,
        );
        let backend_refs = route::backend_refs(
            &raw_rule.backend_refs,
            &path,
            &namespace,
            Flavor::Grpc,
            &mut findings,
        );
        let session_persistence = raw_rule.session_persistence.as_ref().map(|raw| {
            route::session_persistence(raw, &format!("{path}.sessionPersistence"), &mut findings)
        });
        if assembly.rule(findings, problems) {
            rules.push(GrpcRouteRule {
                name: raw_rule.name.clone(),
                matches,
                filters,
                backend_refs,
                session_persistence,
            });
        }
    }
    let n_rules_kept = rules.len();
    let route = GrpcRoute {
        key: meta.key.clone(),
        created_unix_ms: meta.created_unix_ms,
        parent_refs,
        hostnames,
        rules,
    };
    Some(assembly.finish(route, n_rules_kept, problems))
}

fn grpc_match(
    raw: &k8s::GrpcRouteMatch,
    path: &str,
    findings: &mut Vec<Finding>,
) -> GrpcRouteMatch {
    let method = raw.method.as_ref().map(|m| {
        let method_path = format!("{path}.method");
        let regex = match m.type_.as_deref().unwrap_or("Exact") {
            "Exact" => false,
            "RegularExpression" => true,
            other => {
                findings.push(Finding::new(
                    format!("{method_path}.type"),
                    format!("unsupported value {other:?} (supported: Exact, RegularExpression)"),
                ));
                false
            }
        };
        if m.service.is_none() && m.method.is_none() {
            findings.push(Finding::new(
                &method_path,
                "one or both of service and method must be set",
            ));
        }
        for (name, value, check) in [
            (
                "service",
                &m.service,
                exact_service as fn(&str) -> Result<(), String>,
            ),
            ("method", &m.method, exact_method),
        ] {
            let Some(value) = value else { continue };
            let result = field::length(value, 1, 1024).and_then(|()| {
                if regex {
                    field::regex(value)
                } else {
                    check(value)
                }
            });
            if let Err(why) = result {
                findings.push(Finding::new(format!("{method_path}.{name}"), why));
            }
        }
        GrpcMethodMatch {
            regex,
            service: m.service.clone(),
            method: m.method.clone(),
        }
    });
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
    GrpcRouteMatch { method, headers }
}

/// Exact service: `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`.
fn exact_service(value: &str) -> Result<(), String> {
    let body = value.strip_prefix('.').unwrap_or(value);
    let ok = body.split('.').all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid gRPC service name (pkg.Service)"
        ))
    }
}

/// Exact method: `^[A-Za-z_][A-Za-z_0-9]*$`.
fn exact_method(value: &str) -> Result<(), String> {
    let ok = value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid gRPC method name"))
    }
}
