//! TLSRoute → `model::route::TlsRoute`.

use meridian_proto::model::route::TlsRoute;

use super::filter::Flavor;
use super::route::{self, Assembly};
use super::{Finding, namespaced_meta};
use crate::document::Validated;
use crate::k8s;
use crate::problem::{Origin, Problem};

/// Validates a TLSRoute: hostnames (1..=16; `v1alpha2` allows none, meaning the listener's),
/// exactly one rule (later rules are dropped), 1..=16 backendRefs.
pub(crate) fn tls_route(
    raw: k8s::TlsRoute,
    origin: &Origin,
    problems: &mut Vec<Problem>,
) -> Option<Validated<TlsRoute>> {
    let meta = namespaced_meta(&raw.metadata, "TLSRoute", origin, problems)?;
    let namespace = meta.key.namespace.clone();
    let mut route_findings = Vec::new();
    let parent_refs = route::parent_refs(&raw.spec.parent_refs, &namespace, &mut route_findings);
    let hostnames = route::hostnames(&raw.spec.hostnames, 16, &mut route_findings);
    if hostnames.is_empty()
        && raw.spec.hostnames.is_empty()
        && !raw.api_version.ends_with("/v1alpha2")
    {
        route_findings.push(Finding::new(
            "spec.hostnames",
            "at least one hostname is required",
        ));
    }
    let mut assembly = Assembly {
        kind: "TLSRoute",
        key: &meta.key,
        origin,
        generation: meta.generation,
        route_findings,
        dropped_rules: Vec::new(),
        dropped_reasons: Vec::new(),
        n_rules_in: raw.spec.rules.len(),
    };
    let mut backend_refs = Vec::new();
    let mut n_rules_kept = 0;
    for (index, rule) in raw.spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{index}]");
        let mut findings = Vec::new();
        if index > 0 {
            findings.push(Finding::new(&path, "a TLSRoute has exactly one rule"));
        }
        if rule.backend_refs.is_empty() {
            findings.push(Finding::new(
                format!("{path}.backendRefs"),
                "at least one backendRef is required",
            ));
        }
        let refs = route::backend_refs(
            &rule.backend_refs,
            &path,
            &namespace,
            Flavor::Tls,
            &mut findings,
        );
        if assembly.rule(findings, problems) {
            backend_refs = refs;
            n_rules_kept += 1;
        }
    }
    let route = TlsRoute {
        key: meta.key.clone(),
        created_unix_ms: meta.created_unix_ms,
        parent_refs,
        hostnames,
        backend_refs,
    };
    Some(assembly.finish(route, n_rules_kept, problems))
}
