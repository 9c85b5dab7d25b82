//! Programming one Gateway: check its listeners, attach local and shared routes, resolve
//! backends, certificates and ReferenceGrants, and produce the [`GatewayConfig`] a gateway
//! serves plus the status conditions the spec names.
//!
//! **Shared versus local routes:** a route pushed by the hub replaces a local HTTPRoute with
//! the same namespace and name (the hub is the source of truth for global routes); the local
//! one attaches nowhere and reports `Accepted=False`, reason `Shadowed`, on each of its
//! parentRefs to this Gateway.
//!
//! **Route age:** `created_unix_ms` orders routes for the HTTPRoute/GRPCRoute listener rule;
//! equal times (files without `creationTimestamp` are 0) fall back to `namespace/name`.

mod attach;
mod backend;
mod backend_client;
mod ca;
mod frontend;
mod index;
mod listener;
mod policy;

use std::collections::BTreeSet;
use std::net::IpAddr;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::{
    Attached, Attachment, GatewayConfig, Listener, ListenerProtocol, ListenerTls, TlsMode,
};
use meridian_proto::model::route::{HttpRoute, Resolution, ServiceKey};

use self::attach::{Candidate, attach, resolve_kind_conflicts};
use self::backend::{RefFailure, Resolver};
use self::index::{Index, gateway_key};
use self::listener::ListenerState;
use self::policy::Policies;
use crate::k8s;
use crate::set::ObjectSet;
use crate::status::{
    Condition, ConditionStatus, ConditionType, GatewayStatus, ListenerStatus, Reason, RouteKind,
    RouteOrigin, RouteParentStatus, RouteStatus,
};
use crate::validate::check_address;

pub(crate) use self::frontend::mode as frontend_mode;

/// The `spec.controllerName` of GatewayClasses Meridian implements.
pub const CONTROLLER_NAME: &str = "meridian.dev/gateway-controller";

/// The result of programming one Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    /// What the gateway serves (`version` 0: the agent numbers snapshots).
    pub config: GatewayConfig,
    /// Gateway, listener and route conditions.
    pub status: GatewayStatus,
}

/// The Gateways of a set that Meridian programs, in key order.
///
/// When the set holds no GatewayClass at all (a plain YAML directory), every Gateway is
/// Meridian's. Otherwise only Gateways whose class is in the set with `spec.controllerName`
/// equal to [`CONTROLLER_NAME`] are.
pub fn gateways(objects: &ObjectSet) -> Vec<ObjectKey> {
    let ours: BTreeSet<&str> = objects
        .gateway_classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .map(|c| c.metadata.name.as_str())
        .collect();
    objects
        .gateways
        .iter()
        .filter(|g| {
            objects.gateway_classes.is_empty() || ours.contains(g.spec.gateway_class_name.as_str())
        })
        .map(gateway_key)
        .collect()
}

/// The `Accepted` condition of a GatewayClass, or `None` when the class names another
/// controller (its status belongs to that controller). Meridian takes no parameters, so a
/// class with `parametersRef` is not accepted.
pub fn gateway_class_conditions(class: &k8s::GatewayClass) -> Option<Vec<Condition>> {
    if class.spec.controller_name != CONTROLLER_NAME {
        return None;
    }
    let generation = class.metadata.generation.unwrap_or(0);
    let accepted = match &class.spec.parameters_ref {
        Some(parameters) => Condition::bad(
            ConditionType::Accepted,
            Reason::InvalidParameters,
            format!(
                "spec.parametersRef: {}/{} {} is not supported (Meridian takes no parameters)",
                parameters.group, parameters.kind, parameters.name
            ),
            generation,
        ),
        None => Condition::ok(
            ConditionType::Accepted,
            Reason::Accepted,
            "the GatewayClass is accepted",
            generation,
        ),
    };
    Some(vec![accepted])
}

/// Programs the Gateway `gateway`: attaches routes (local ones from `objects` and
/// `shared_http_routes` from the hub) to its listeners and resolves everything.
///
/// A Gateway missing from `objects` yields an empty config and `Accepted=False/Invalid`.
pub fn program(
    objects: &ObjectSet,
    shared_http_routes: &[HttpRoute],
    gateway: &ObjectKey,
) -> Programmed {
    let Some(spec) = objects.gateway(gateway) else {
        return Programmed {
            config: GatewayConfig {
                gateway: Some(gateway.clone()),
                ..GatewayConfig::default()
            },
            status: GatewayStatus {
                gateway: Some(gateway.clone()),
                conditions: vec![Condition::bad(
                    ConditionType::Accepted,
                    Reason::Invalid,
                    format!("Gateway {gateway} not found"),
                    0,
                )],
                ..GatewayStatus::default()
            },
        };
    };
    let generation = spec.metadata.generation.unwrap_or(0);
    let index = Index::new(objects);
    let listeners = listener::listeners(spec, gateway, &index);
    let (addresses, address_problems) = addresses(spec);
    let backend_client = backend_client::resolve(spec, gateway, &index);
    let mut gateway_conditions =
        gateway_conditions(spec, &listeners, &address_problems, generation);
    if let Some(resolved) = &backend_client {
        gateway_conditions.push(backend_client::condition(resolved, generation));
    }
    let gateway_accepted = gateway_conditions
        .first()
        .is_some_and(|c| c.type_ == ConditionType::Accepted && c.is_true());

    let mut candidates = candidates(objects, shared_http_routes);
    for candidate in &mut candidates {
        attach(candidate, gateway, &listeners, &index);
    }
    candidates.retain(|c| !c.outcomes.is_empty());
    resolve_kind_conflicts(&mut candidates, &listeners);

    let policies = Policies::new(&objects.backend_tls_policies, &index);
    let resolver = Resolver::new(&index, &policies);
    let mut config = GatewayConfig {
        version: 0,
        gateway: Some(gateway.clone()),
        backend_client_certificate: backend_client.and_then(Result::ok),
        ..GatewayConfig::default()
    };
    let programmed: Vec<bool> = listeners
        .iter()
        .map(|l| gateway_accepted && l.programmed())
        .collect();
    let mut attached_routes = vec![0_u32; listeners.len()];
    let mut backends: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut route_statuses = Vec::with_capacity(candidates.len());
    for candidate in &candidates {
        let mut failures = Vec::new();
        let attachments: Vec<Attachment> = candidate
            .attachments()
            .into_iter()
            .inspect(|(l, _)| attached_routes[*l] += 1)
            .filter(|(l, _)| programmed[*l])
            .map(|(l, hostnames)| Attachment {
                listener: listeners[l].spec.name.clone(),
                hostnames,
            })
            .collect();
        let shadowed = candidate
            .rejection
            .as_ref()
            .is_some_and(|(reason, _)| *reason == Reason::Shadowed);
        match candidate.kind {
            RouteKind::Http => {
                let route = match candidate.origin {
                    RouteOrigin::Shared => &shared_http_routes[candidate.position],
                    RouteOrigin::Local => &objects.http_routes[candidate.position].route,
                };
                let resolved = resolver.http_route(route, &mut failures);
                if !attachments.is_empty() {
                    collect_backends(
                        resolved.rules.iter().flat_map(|r| {
                            r.backend_refs
                                .iter()
                                .map(|b| &b.backend_ref)
                                .chain(r.filters.iter().flat_map(mirror_ref))
                                .chain(
                                    r.backend_refs
                                        .iter()
                                        .flat_map(|b| b.filters.iter().flat_map(mirror_ref)),
                                )
                        }),
                        &mut backends,
                    );
                    config.http_routes.push(Attached {
                        route: resolved,
                        attachments,
                    });
                }
            }
            RouteKind::Grpc => {
                let route = &objects.grpc_routes[candidate.position].route;
                let resolved = resolver.grpc_route(route, &mut failures);
                if !attachments.is_empty() {
                    collect_backends(
                        resolved.rules.iter().flat_map(|r| {
                            r.backend_refs
                                .iter()
                                .map(|b| &b.backend_ref)
                                .chain(r.filters.iter().flat_map(mirror_ref))
                                .chain(
                                    r.backend_refs
                                        .iter()
                                        .flat_map(|b| b.filters.iter().flat_map(mirror_ref)),
                                )
                        }),
                        &mut backends,
                    );
                    config.grpc_routes.push(Attached {
                        route: resolved,
                        attachments,
                    });
                }
            }
            RouteKind::Tls => {
                let route = &objects.tls_routes[candidate.position].route;
                let resolved = resolver.tls_route(route, &mut failures);
                if !attachments.is_empty() {
                    collect_backends(
                        resolved.backend_refs.iter().map(|b| &b.backend_ref),
                        &mut backends,
                    );
                    config.tls_routes.push(Attached {
                        route: resolved,
                        attachments,
                    });
                }
            }
        }
        route_statuses.push(route_status(
            candidate,
            if shadowed { None } else { Some(&failures) },
        ));
    }

    for (i, state) in listeners.iter().enumerate() {
        if programmed[i] {
            config.listeners.push(model_listener(state, &addresses));
        }
    }
    config.backends = backends.iter().map(|key| resolver.backend(key)).collect();
    // Key order, so equal inputs give byte-equal configs whatever the source order was.
    config
        .http_routes
        .sort_by(|a, b| a.route.key.cmp(&b.route.key));
    config
        .grpc_routes
        .sort_by(|a, b| a.route.key.cmp(&b.route.key));
    config
        .tls_routes
        .sort_by(|a, b| a.route.key.cmp(&b.route.key));

    let listener_statuses = listeners
        .iter()
        .zip(attached_routes)
        .map(|(state, attached)| ListenerStatus {
            name: state.spec.name.clone(),
            supported_kinds: state.check.supported_kinds.clone(),
            attached_routes: attached,
            conditions: state.conditions(generation),
        })
        .collect();
    route_statuses.sort_by(|a: &RouteStatus, b: &RouteStatus| {
        (a.kind, &a.key, a.origin).cmp(&(b.kind, &b.key, b.origin))
    });
    Programmed {
        config,
        status: GatewayStatus {
            gateway: Some(gateway.clone()),
            conditions: gateway_conditions,
            listeners: listener_statuses,
            routes: route_statuses,
            policies: resolver.policy_statuses(),
        },
    }
}

/// Every route that could attach: shared HTTPRoutes, then local routes; a local HTTPRoute
/// with the key of a shared one is shadowed.
fn candidates<'r>(objects: &'r ObjectSet, shared: &'r [HttpRoute]) -> Vec<Candidate<'r>> {
    let shared_keys: BTreeSet<&ObjectKey> = shared.iter().map(|r| &r.key).collect();
    let mut out = Vec::new();
    for (position, route) in shared.iter().enumerate() {
        out.push(Candidate {
            kind: RouteKind::Http,
            key: &route.key,
            origin: RouteOrigin::Shared,
            created_unix_ms: route.created_unix_ms,
            generation: 0,
            hostnames: &route.hostnames,
            parent_refs: &route.parent_refs,
            rejection: None,
            dropped_rules: &[],
            position,
            outcomes: Vec::new(),
        });
    }
    let rejection =
        |r: &Option<crate::Rejection>| r.as_ref().map(|r| (r.reason, r.message.clone()));
    for (position, v) in objects.http_routes.iter().enumerate() {
        let rejection = if shared_keys.contains(&v.route.key) {
            Some((
                Reason::Shadowed,
                format!(
                    "the hub's shared HTTPRoute {} replaces this local route",
                    v.route.key
                ),
            ))
        } else {
            rejection(&v.rejection)
        };
        out.push(Candidate {
            kind: RouteKind::Http,
            key: &v.route.key,
            origin: RouteOrigin::Local,
            created_unix_ms: v.route.created_unix_ms,
            generation: v.generation,
            hostnames: &v.route.hostnames,
            parent_refs: &v.route.parent_refs,
            rejection,
            dropped_rules: &v.dropped_rules,
            position,
            outcomes: Vec::new(),
        });
    }
    for (position, v) in objects.grpc_routes.iter().enumerate() {
        out.push(Candidate {
            kind: RouteKind::Grpc,
            key: &v.route.key,
            origin: RouteOrigin::Local,
            created_unix_ms: v.route.created_unix_ms,
            generation: v.generation,
            hostnames: &v.route.hostnames,
            parent_refs: &v.route.parent_refs,
            rejection: rejection(&v.rejection),
            dropped_rules: &v.dropped_rules,
            position,
            outcomes: Vec::new(),
        });
    }
    for (position, v) in objects.tls_routes.iter().enumerate() {
        out.push(Candidate {
            kind: RouteKind::Tls,
            key: &v.route.key,
            origin: RouteOrigin::Local,
            created_unix_ms: v.route.created_unix_ms,
            generation: v.generation,
            hostnames: &v.route.hostnames,
            parent_refs: &v.route.parent_refs,
            rejection: rejection(&v.rejection),
            dropped_rules: &v.dropped_rules,
            position,
            outcomes: Vec::new(),
        });
    }
    out
}

fn mirror_ref(
    filter: &meridian_proto::model::route::HttpFilter,
) -> Option<&meridian_proto::model::route::BackendRef> {
    match filter {
        meridian_proto::model::route::HttpFilter::RequestMirror(m) => Some(&m.backend_ref),
        _ => None,
    }
}

fn collect_backends<'b>(
    refs: impl Iterator<Item = &'b meridian_proto::model::route::BackendRef>,
    backends: &mut BTreeSet<ServiceKey>,
) {
    for reference in refs {
        if let Resolution::Service(key) = &reference.resolution
            && !backends.contains(key)
        {
            backends.insert(key.clone());
        }
    }
}

/// Route conditions for each parentRef naming this Gateway. `failures` is `None` for a
/// shadowed route (its references were not resolved).
fn route_status(candidate: &Candidate<'_>, failures: Option<&Vec<RefFailure>>) -> RouteStatus {
    let generation = candidate.generation;
    let resolved = failures.map(|failures| match failures.first() {
        None => Condition::ok(
            ConditionType::ResolvedRefs,
            Reason::ResolvedRefs,
            "all references are resolved",
            generation,
        ),
        Some(first) => Condition::bad(
            ConditionType::ResolvedRefs,
            first.reason,
            failures
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            generation,
        ),
    });
    let partially_invalid = (!candidate.dropped_rules.is_empty()).then(|| {
        Condition::new(
            ConditionType::PartiallyInvalid,
            ConditionStatus::True,
            Reason::UnsupportedValue,
            format!("Dropped Rule(s): {}", candidate.dropped_rules.join("; ")),
            generation,
        )
    });
    let parents = candidate
        .outcomes
        .iter()
        .map(|outcome| {
            let accepted = match &outcome.failure {
                _ if !outcome.attachments.is_empty() => Condition::ok(
                    ConditionType::Accepted,
                    Reason::Accepted,
                    "the route is accepted",
                    generation,
                ),
                Some((reason, message)) => Condition::bad(
                    ConditionType::Accepted,
                    *reason,
                    message.clone(),
                    generation,
                ),
                None => Condition::bad(
                    ConditionType::Accepted,
                    Reason::NotAllowedByListeners,
                    "no listener accepts the route",
                    generation,
                ),
            };
            let mut conditions = vec![accepted];
            conditions.extend(resolved.clone());
            conditions.extend(partially_invalid.clone());
            RouteParentStatus {
                parent_ref: outcome.parent.clone(),
                conditions,
            }
        })
        .collect();
    RouteStatus {
        kind: candidate.kind,
        key: candidate.key.clone(),
        origin: candidate.origin,
        parents,
    }
}

/// The IPAddress addresses to bind, and the messages for unusable entries.
fn addresses(gateway: &k8s::Gateway) -> (Vec<IpAddr>, Vec<String>) {
    let mut ips = Vec::new();
    let mut problems = Vec::new();
    for (index, address) in gateway.spec.addresses.iter().enumerate() {
        match check_address(address) {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(why) => problems.push(format!("spec.addresses[{index}]: {why}")),
        }
    }
    (ips, problems)
}

/// `Accepted` then `Programmed` for the Gateway.
fn gateway_conditions(
    gateway: &k8s::Gateway,
    listeners: &[ListenerState<'_>],
    address_problems: &[String],
    generation: i64,
) -> Vec<Condition> {
    let n_accepted = listeners.iter().filter(|l| l.accepted()).count();
    let invalid: Vec<&str> = listeners
        .iter()
        .filter(|l| !l.accepted())
        .map(|l| l.spec.name.as_str())
        .collect();
    let parameters = gateway
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref());
    let accepted = if let Some(parameters) = parameters {
        Condition::bad(
            ConditionType::Accepted,
            Reason::InvalidParameters,
            format!(
                "spec.infrastructure.parametersRef: {}/{} {} is not supported (Meridian takes no parameters)",
                parameters.group, parameters.kind, parameters.name
            ),
            generation,
        )
    } else if !address_problems.is_empty() {
        Condition::bad(
            ConditionType::Accepted,
            Reason::UnsupportedAddress,
            address_problems.join("; "),
            generation,
        )
    } else if n_accepted == 0 {
        Condition::bad(
            ConditionType::Accepted,
            Reason::ListenersNotValid,
            format!("no listener is valid: {}", invalid.join(", ")),
            generation,
        )
    } else if !invalid.is_empty() {
        Condition::ok(
            ConditionType::Accepted,
            Reason::ListenersNotValid,
            format!("some listeners are invalid: {}", invalid.join(", ")),
            generation,
        )
    } else {
        Condition::ok(
            ConditionType::Accepted,
            Reason::Accepted,
            "the Gateway is accepted",
            generation,
        )
    };
    let n_programmed = listeners.iter().filter(|l| l.programmed()).count();
    let programmed = if accepted.is_true() && n_programmed > 0 {
        Condition::ok(
            ConditionType::Programmed,
            Reason::Programmed,
            format!("{n_programmed} of {} listeners programmed", listeners.len()),
            generation,
        )
    } else {
        let why = if accepted.is_true() {
            "no listener can be programmed".to_string()
        } else {
            "the Gateway is not accepted".to_string()
        };
        Condition::bad(ConditionType::Programmed, Reason::Invalid, why, generation)
    };
    let mut conditions = vec![accepted, programmed];
    if frontend::uses_insecure_fallback(gateway) {
        conditions.push(Condition::ok(
            ConditionType::InsecureFrontendValidationMode,
            Reason::ConfigurationChanged,
            "frontend client certificate validation lets clients without a certificate through (AllowInsecureFallback)",
            generation,
        ));
    }
    conditions
}

fn model_listener(state: &ListenerState<'_>, addresses: &[IpAddr]) -> Listener {
    let protocol = state.check.protocol.unwrap_or(ListenerProtocol::Http);
    let tls = match protocol {
        ListenerProtocol::Http => None,
        ListenerProtocol::Https | ListenerProtocol::Tls => Some(ListenerTls {
            mode: state.check.tls_mode.unwrap_or(TlsMode::Terminate),
            certificates: state.certificates.clone(),
            client_validation: state.frontend.validation.clone(),
        }),
    };
    Listener {
        name: state.spec.name.clone(),
        addresses: addresses.to_vec(),
        port: state.check.port.unwrap_or_default(),
        protocol,
        hostname: state.spec.hostname.clone(),
        tls,
    }
}

#[cfg(test)]
mod tests;
