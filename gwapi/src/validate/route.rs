//! Pieces shared by HTTPRoute, GRPCRoute and TLSRoute validation: parentRefs, hostnames,
//! backend references, and turning findings into a [`Validated`] route.

use std::collections::BTreeSet;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::route::{
    BackendRef, HttpBackendRef, ParentRef, Resolution, SessionKind, SessionPersistence,
};

use super::filter::{self, Flavor, Level};
use super::{Finding, field};
use crate::document::{Rejection, Validated};
use crate::k8s;
use crate::problem::{Origin, Problem};
use crate::status::Reason;

/// The Gateway API group.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// `spec.parentRefs` (≤ 32) with defaults filled in, plus the CEL rules on repeated parents.
pub(crate) fn parent_refs(
    raw: &[k8s::ParentReference],
    namespace: &str,
    findings: &mut Vec<Finding>,
) -> Vec<ParentRef> {
    if raw.len() > 32 {
        findings.push(Finding::new(
            "spec.parentRefs",
            format!("has {} entries, at most 32 are allowed", raw.len()),
        ));
    }
    let mut refs = Vec::with_capacity(raw.len());
    for (index, parent) in raw.iter().enumerate() {
        let path = format!("spec.parentRefs[{index}]");
        let group = parent
            .group
            .clone()
            .unwrap_or_else(|| GATEWAY_GROUP.to_string());
        let kind = parent.kind.clone().unwrap_or_else(|| "Gateway".to_string());
        let parent_namespace = parent
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string());
        let checks = [
            ("group", field::group(&group)),
            ("kind", field::kind(&kind)),
            ("namespace", field::namespace(&parent_namespace)),
            ("name", field::length(&parent.name, 1, 253)),
        ];
        for (name, check) in checks {
            if let Err(why) = check {
                findings.push(Finding::new(format!("{path}.{name}"), why));
            }
        }
        if let Some(section) = &parent.section_name
            && let Err(why) = field::section_name(section)
        {
            findings.push(Finding::new(format!("{path}.sectionName"), why));
        }
        let port = match parent.port.map(field::port) {
            None => None,
            Some(Ok(port)) => Some(port),
            Some(Err(why)) => {
                findings.push(Finding::new(format!("{path}.port"), why));
                None
            }
        };
        refs.push(ParentRef {
            group,
            kind,
            namespace: parent_namespace,
            name: parent.name.clone(),
            section_name: parent.section_name.clone(),
            port,
        });
    }
    // CEL: when one parent is referenced twice, every such reference needs a sectionName or a
    // port, and the (sectionName, port) pairs must differ.
    for (index, parent) in refs.iter().enumerate() {
        let same_parent = |other: &&ParentRef| {
            other.group == parent.group
                && other.kind == parent.kind
                && other.namespace == parent.namespace
                && other.name == parent.name
        };
        let n_same = refs.iter().filter(same_parent).count();
        if n_same < 2 {
            continue;
        }
        if parent.section_name.is_none() && parent.port.is_none() {
            findings.push(Finding::new(
                format!("spec.parentRefs[{index}]"),
                "sectionName or port must be set when several parentRefs name the same parent",
            ));
        }
        let duplicate = refs[..index].iter().filter(same_parent).any(|earlier| {
            earlier.section_name == parent.section_name && earlier.port == parent.port
        });
        if duplicate {
            findings.push(Finding::new(
                format!("spec.parentRefs[{index}]"),
                "repeats an earlier parentRef (same parent, sectionName and port)",
            ));
        }
    }
    refs
}

/// `spec.hostnames` (≤ `max`), each a valid (possibly wildcard) host name. Duplicates are
/// removed.
pub(crate) fn hostnames(raw: &[String], max: usize, findings: &mut Vec<Finding>) -> Vec<String> {
    if raw.len() > max {
        findings.push(Finding::new(
            "spec.hostnames",
            format!("has {} entries, at most {max} are allowed", raw.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, hostname) in raw.iter().enumerate() {
        if let Err(why) = field::hostname(hostname) {
            findings.push(Finding::new(format!("spec.hostnames[{index}]"), why));
        } else if seen.insert(hostname.as_str()) {
            out.push(hostname.clone());
        }
    }
    out
}

/// A `BackendObjectReference` with defaults: core group, kind `Service`, the route's
/// namespace; a Service reference needs a port (CEL).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backend_object(
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    namespace: Option<&str>,
    port: Option<i64>,
    path: &str,
    route_namespace: &str,
    findings: &mut Vec<Finding>,
) -> BackendRef {
    let group = group.unwrap_or("").to_string();
    let kind = kind.unwrap_or("Service").to_string();
    let namespace = namespace.unwrap_or(route_namespace).to_string();
    let checks = [
        ("group", field::group(&group)),
        ("kind", field::kind(&kind)),
        ("namespace", field::namespace(&namespace)),
        ("name", field::length(name, 1, 253)),
    ];
    for (field_name, check) in checks {
        if let Err(why) = check {
            findings.push(Finding::new(format!("{path}.{field_name}"), why));
        }
    }
    let port = match port.map(field::port) {
        None => None,
        Some(Ok(port)) => Some(port),
        Some(Err(why)) => {
            findings.push(Finding::new(format!("{path}.port"), why));
            None
        }
    };
    if port.is_none() && group.is_empty() && kind == "Service" {
        findings.push(Finding::new(
            format!("{path}.port"),
            "required when referring to a Service",
        ));
    }
    BackendRef {
        group,
        kind,
        namespace,
        name: name.to_string(),
        port,
        resolution: Resolution::Unresolved,
    }
}

/// Weighted backend references (≤ 16) with their backend-level filters.
pub(crate) fn backend_refs(
    raw: &[k8s::HttpBackendRef],
    path: &str,
    route_namespace: &str,
    flavor: Flavor,
    findings: &mut Vec<Finding>,
) -> Vec<HttpBackendRef> {
    if raw.len() > 16 {
        findings.push(Finding::new(
            format!("{path}.backendRefs"),
            format!("has {} entries, at most 16 are allowed", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(index, backend)| {
            let path = format!("{path}.backendRefs[{index}]");
            let mut own = Vec::new();
            let backend_ref = backend_object(
                backend.group.as_deref(),
                backend.kind.as_deref(),
                &backend.name,
                backend.namespace.as_deref(),
                backend.port,
                &path,
                route_namespace,
                &mut own,
            );
            findings.append(&mut own);
            let weight = match backend.weight {
                None => 1,
                Some(weight) if (0..=1_000_000).contains(&weight) => weight as u32,
                Some(weight) => {
                    findings.push(Finding::new(
                        format!("{path}.weight"),
                        format!("{weight} is out of range (0-1000000)"),
                    ));
                    0
                }
            };
            let filters = if flavor == Flavor::Tls {
                Vec::new()
            } else {
                filter::filters(
                    &backend.filters,
                    &format!("{path}.filters"),
                    route_namespace,
                    flavor,
                    Level::Backend,
                    findings,
                )
            };
            HttpBackendRef {
                backend_ref,
                weight,
                filters,
            }
        })
        .collect()
}

/// Checks a rule name and its uniqueness within the route.
pub(crate) fn rule_name(
    name: Option<&String>,
    path: &str,
    seen: &mut BTreeSet<String>,
    findings: &mut Vec<Finding>,
) {
    let Some(name) = name else { return };
    if let Err(why) = field::section_name(name) {
        findings.push(Finding::new(format!("{path}.name"), why));
    } else if !seen.insert(name.clone()) {
        findings.push(Finding::new(
            format!("{path}.name"),
            format!("{name:?} is used by an earlier rule; rule names must be unique"),
        ));
    }
}

/// Collects a route's findings into problems and builds its [`Validated`] form: rules with
/// findings are dropped; route-level findings, or no rule left, reject the route.
pub(crate) struct Assembly<'a> {
    pub(crate) kind: &'static str,
    pub(crate) key: &'a ObjectKey,
    pub(crate) origin: &'a Origin,
    pub(crate) generation: i64,
    pub(crate) route_findings: Vec<Finding>,
    pub(crate) dropped_rules: Vec<String>,
    pub(crate) dropped_reasons: Vec<Reason>,
    pub(crate) n_rules_in: usize,
}

impl Assembly<'_> {
    /// Reports one rule's findings; returns true when the rule is valid.
    pub(crate) fn rule(&mut self, findings: Vec<Finding>, problems: &mut Vec<Problem>) -> bool {
        if findings.is_empty() {
            return true;
        }
        let reason = if findings
            .iter()
            .any(|f| f.reason == Reason::IncompatibleFilters)
        {
            Reason::IncompatibleFilters
        } else {
            Reason::UnsupportedValue
        };
        let text = findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        self.report(&findings, problems);
        self.dropped_rules.push(text);
        self.dropped_reasons.push(reason);
        false
    }

    fn report(&self, findings: &[Finding], problems: &mut Vec<Problem>) {
        let key = self.key.to_string();
        for finding in findings {
            problems.push(self.origin.object_problem(
                self.kind,
                Some(&key),
                finding.path.clone(),
                finding.message.clone(),
            ));
        }
    }

    /// Finishes: reports route-level findings and decides on a rejection.
    pub(crate) fn finish<R>(
        self,
        route: R,
        n_rules_kept: usize,
        problems: &mut Vec<Problem>,
    ) -> Validated<R> {
        self.report(&self.route_findings, problems);
        let rejection = if let Some(first) = self.route_findings.first() {
            Some(Rejection {
                reason: first.reason,
                message: self
                    .route_findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })
        } else if n_rules_kept == 0 {
            let reason = if !self.dropped_reasons.is_empty()
                && self
                    .dropped_reasons
                    .iter()
                    .all(|r| *r == Reason::IncompatibleFilters)
            {
                Reason::IncompatibleFilters
            } else {
                Reason::UnsupportedValue
            };
            let message = if self.n_rules_in == 0 {
                "the route has no rules".to_string()
            } else {
                format!("no valid rule: {}", self.dropped_rules.join("; "))
            };
            Some(Rejection { reason, message })
        } else {
            None
        };
        Validated {
            route,
            generation: self.generation,
            dropped_rules: if rejection.is_some() {
                Vec::new()
            } else {
                self.dropped_rules
            },
            rejection,
        }
    }
}

/// `sessionPersistence` with the CRD's rules: a token-character name of at most 128 bytes,
/// GEP-2257 durations, and an absolute timeout for a `Permanent` cookie (its `Max-Age`).
pub(crate) fn session_persistence(
    raw: &k8s::SessionPersistence,
    path: &str,
    findings: &mut Vec<Finding>,
) -> SessionPersistence {
    let kind = match raw.type_.as_deref() {
        None | Some("Cookie") => SessionKind::Cookie,
        Some("Header") => SessionKind::Header,
        Some(other) => {
            findings.push(Finding::new(
                format!("{path}.type"),
                format!("{other:?} is not a session persistence type (Cookie or Header)"),
            ));
            SessionKind::Cookie
        }
    };
    if let Some(name) = &raw.session_name
        && !SessionPersistence::valid_name(name)
    {
        findings.push(Finding::new(
            format!("{path}.sessionName"),
            format!(
                "{name:?} is not a valid session name: 1 to {} token characters (letters, digits and !#$%&'*+-.^_`|~)",
                SessionPersistence::MAX_NAME_LEN
            ),
        ));
    }
    let mut duration =
        |value: &Option<String>, field_name: &str| match value.as_deref().map(field::duration) {
            None => None,
            Some(Ok(duration)) if !duration.is_zero() => Some(duration),
            Some(Ok(_)) => {
                findings.push(Finding::new(
                    format!("{path}.{field_name}"),
                    "must be longer than zero",
                ));
                None
            }
            Some(Err(why)) => {
                findings.push(Finding::new(format!("{path}.{field_name}"), why));
                None
            }
        };
    let absolute_timeout = duration(&raw.absolute_timeout, "absoluteTimeout");
    let idle_timeout = duration(&raw.idle_timeout, "idleTimeout");
    let lifetime = raw
        .cookie_config
        .as_ref()
        .and_then(|c| c.lifetime_type.as_deref());
    let permanent_cookie = match lifetime {
        None | Some("Session") => false,
        Some("Permanent") => true,
        Some(other) => {
            findings.push(Finding::new(
                format!("{path}.cookieConfig.lifetimeType"),
                format!("{other:?} is not a cookie lifetime type (Session or Permanent)"),
            ));
            false
        }
    };
    if permanent_cookie && raw.absolute_timeout.is_none() {
        findings.push(Finding::new(
            format!("{path}.absoluteTimeout"),
            "a Permanent cookie needs an absoluteTimeout (it becomes the cookie's Max-Age)",
        ));
    }
    if kind == SessionKind::Header && raw.cookie_config.is_some() {
        findings.push(Finding::new(
            format!("{path}.cookieConfig"),
            "cookieConfig applies only to the Cookie type",
        ));
    }
    SessionPersistence {
        name: raw.session_name.clone(),
        kind,
        absolute_timeout,
        idle_timeout,
        permanent_cookie: permanent_cookie && absolute_timeout.is_some(),
    }
}
