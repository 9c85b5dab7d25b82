//! Route attachment: which listeners of the Gateway accept a route through each of its
//! parentRefs (sectionName, port, allowed kinds, allowed namespaces, hostname intersection),
//! and the HTTPRoute-versus-GRPCRoute rule for one listener.

use meridian_proto::model::ObjectKey;
use meridian_proto::model::route::ParentRef;

use super::index::Index;
use super::listener::ListenerState;
use crate::hostname::intersect_hostnames;
use crate::status::{Reason, RouteKind, RouteOrigin};
use crate::validate::AllowedNamespaces;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A route being considered for one Gateway, whatever its kind.
pub(crate) struct Candidate<'r> {
    pub(crate) kind: RouteKind,
    pub(crate) key: &'r ObjectKey,
    pub(crate) origin: RouteOrigin,
    pub(crate) created_unix_ms: i64,
    pub(crate) generation: i64,
    pub(crate) hostnames: &'r [String],
    pub(crate) parent_refs: &'r [ParentRef],
    /// Set when the route cannot attach at all (invalid, or shadowed by a shared route).
    pub(crate) rejection: Option<(Reason, String)>,
    pub(crate) dropped_rules: &'r [String],
    /// Position in the set's (or the shared) list of this kind.
    pub(crate) position: usize,
    /// One outcome per parentRef naming this Gateway.
    pub(crate) outcomes: Vec<ParentOutcome>,
}

/// What happened to one parentRef.
pub(crate) struct ParentOutcome {
    pub(crate) parent: ParentRef,
    /// (listener index, effective hostnames).
    pub(crate) attachments: Vec<(usize, Vec<String>)>,
    /// Why nothing attached.
    pub(crate) failure: Option<(Reason, String)>,
}

// === impl Candidate ===

impl Candidate<'_> {
    /// Every (listener, hostnames) the route attached to, each listener once, in listener
    /// order.
    pub(crate) fn attachments(&self) -> Vec<(usize, Vec<String>)> {
        let mut all: Vec<(usize, Vec<String>)> = Vec::new();
        for outcome in &self.outcomes {
            for (listener, hostnames) in &outcome.attachments {
                match all.iter_mut().find(|(l, _)| l == listener) {
                    Some((_, existing)) => {
                        for h in hostnames {
                            if !existing.contains(h) {
                                existing.push(h.clone());
                            }
                        }
                    }
                    None => all.push((*listener, hostnames.clone())),
                }
            }
        }
        all.sort_by_key(|(listener, _)| *listener);
        all
    }
}

/// Whether a parentRef names the Gateway `gateway`.
pub(crate) fn names_gateway(parent: &ParentRef, gateway: &ObjectKey) -> bool {
    parent.group == GATEWAY_GROUP
        && parent.kind == "Gateway"
        && parent.namespace == gateway.namespace
        && parent.name == gateway.name
}

/// Attaches every parentRef of `candidate` that names `gateway`.
pub(crate) fn attach(
    candidate: &mut Candidate<'_>,
    gateway: &ObjectKey,
    listeners: &[ListenerState<'_>],
    index: &Index<'_>,
) {
    for parent in candidate.parent_refs {
        if !names_gateway(parent, gateway) {
            continue;
        }
        let outcome = match &candidate.rejection {
            Some((reason, message)) => ParentOutcome {
                parent: parent.clone(),
                attachments: Vec::new(),
                failure: Some((*reason, message.clone())),
            },
            None => attach_one(candidate, parent, gateway, listeners, index),
        };
        candidate.outcomes.push(outcome);
    }
}

fn attach_one(
    candidate: &Candidate<'_>,
    parent: &ParentRef,
    gateway: &ObjectKey,
    listeners: &[ListenerState<'_>],
    index: &Index<'_>,
) -> ParentOutcome {
    let fail = |reason: Reason, message: String| ParentOutcome {
        parent: parent.clone(),
        attachments: Vec::new(),
        failure: Some((reason, message)),
    };
    let selected: Vec<usize> = (0..listeners.len())
        .filter(|&i| {
            let spec = listeners[i].spec;
            parent.section_name.as_ref().is_none_or(|s| *s == spec.name)
                && parent.port.is_none_or(|p| i64::from(p) == spec.port)
        })
        .collect();
    if selected.is_empty() {
        let what = match (&parent.section_name, parent.port) {
            (Some(section), Some(port)) => format!("no listener named {section:?} on port {port}"),
            (Some(section), None) => format!("no listener named {section:?}"),
            (None, Some(port)) => format!("no listener on port {port}"),
            (None, None) => "the Gateway has no listeners".to_string(),
        };
        return fail(
            Reason::NoMatchingParent,
            format!("Gateway {gateway}: {what}"),
        );
    }
    let kind_ok: Vec<usize> = selected
        .into_iter()
        .filter(|&i| listeners[i].check.supported_kinds.contains(&candidate.kind))
        .collect();
    if kind_ok.is_empty() {
        return fail(
            Reason::NotAllowedByListeners,
            format!(
                "no selected listener of Gateway {gateway} allows kind {}",
                candidate.kind
            ),
        );
    }
    let namespace = candidate.key.namespace.as_str();
    let ns_ok: Vec<usize> = kind_ok
        .into_iter()
        .filter(|&i| match &listeners[i].check.from {
            AllowedNamespaces::Same => namespace == gateway.namespace,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(selector) => {
                selector.matches(&index.namespace_labels(namespace))
            }
            AllowedNamespaces::None => false,
        })
        .collect();
    if ns_ok.is_empty() {
        return fail(
            Reason::NotAllowedByListeners,
            format!(
                "no selected listener of Gateway {gateway} allows routes from namespace {namespace}"
            ),
        );
    }
    let attachments: Vec<(usize, Vec<String>)> = ns_ok
        .into_iter()
        .filter_map(|i| {
            intersect_hostnames(listeners[i].spec.hostname.as_deref(), candidate.hostnames)
                .map(|hostnames| (i, hostnames))
        })
        .collect();
    if attachments.is_empty() {
        return fail(
            Reason::NoMatchingListenerHostname,
            format!(
                "no hostname of the route ({}) matches a selected listener of Gateway {gateway}",
                candidate.hostnames.join(", ")
            ),
        );
    }
    ParentOutcome {
        parent: parent.clone(),
        attachments,
        failure: None,
    }
}

/// GRPCRoute spec: an HTTPRoute and a GRPCRoute on one listener whose hostnames intersect
/// must not both be accepted; the older one (creation time, then `namespace/name`) keeps it.
/// Attachments are taken in age order, and each is dropped if it overlaps a kept one of the
/// other kind. A parentRef that loses every attachment this way reports
/// `NotAllowedByListeners`.
///
/// Only hostnames a route lists count: a route that lists none (a catch-all) intersects
/// nothing, as Envoy Gateway and Istio serve both kinds then. Otherwise adding a GRPCRoute for
/// one hostname would take a catch-all HTTPRoute off the air for every host, or the reverse.
/// Both then serve: a gRPC request tries the listener's GRPCRoutes first
/// (`proxy::handler`), anything else only its HTTPRoutes.
pub(crate) fn resolve_kind_conflicts(
    candidates: &mut [Candidate<'_>],
    listeners: &[ListenerState<'_>],
) {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| matches!(candidates[i].kind, RouteKind::Http | RouteKind::Grpc))
        .collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        (ca.created_unix_ms, ca.key, ca.kind).cmp(&(cb.created_unix_ms, cb.key, cb.kind))
    });
    // Kept attachments per listener, split by kind so a route only scans the other kind
    // (usually empty: most listeners carry only HTTPRoutes).
    let mut kept: Vec<[Vec<KeptAttachment>; 2]> = (0..listeners.len())
        .map(|_| [Vec::new(), Vec::new()])
        .collect();
    let slot = |kind: RouteKind| usize::from(kind == RouteKind::Grpc);
    for &c in &order {
        let kind = candidates[c].kind;
        let other_kind = if kind == RouteKind::Http {
            RouteKind::Grpc
        } else {
            RouteKind::Http
        };
        let mut lost_to: Option<String> = None;
        for o in 0..candidates[c].outcomes.len() {
            let attachments = std::mem::take(&mut candidates[c].outcomes[o].attachments);
            let mut remaining = Vec::new();
            for (listener, hostnames) in attachments {
                let lists_hostnames = !candidates[c].hostnames.is_empty();
                let rival = kept[listener][slot(other_kind)]
                    .iter()
                    .find(|(rival, other_hosts)| {
                        lists_hostnames
                            && !candidates[*rival].hostnames.is_empty()
                            && hostnames_overlap(&hostnames, other_hosts)
                    });
                match rival {
                    Some((rival, _)) => {
                        lost_to = Some(format!(
                            "{other_kind} {} already uses listener {} for these hostnames (the older route wins)",
                            candidates[*rival].key, listeners[listener].spec.name
                        ));
                    }
                    None => remaining.push((listener, hostnames)),
                }
            }
            candidates[c].outcomes[o].attachments = remaining;
        }
        for outcome in &mut candidates[c].outcomes {
            if outcome.attachments.is_empty()
                && outcome.failure.is_none()
                && let Some(message) = &lost_to
            {
                outcome.failure = Some((Reason::NotAllowedByListeners, message.clone()));
            }
        }
        for (listener, hostnames) in candidates[c].attachments() {
            kept[listener][slot(kind)].push((c, hostnames));
        }
    }
}

/// (candidate index, effective hostnames) of an attachment that won its listener.
type KeptAttachment = (usize, Vec<String>);

/// Whether two effective hostname sets overlap (empty means any host).
fn hostnames_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| {
        b.iter()
            .any(|y| intersect_hostnames(Some(x), std::slice::from_ref(y)).is_some())
    })
}
