//! Status conditions computed by programming a Gateway: Gateway and listener conditions, and
//! per-route, per-parent conditions, with the exact types and reasons of the Gateway API spec.
//!
//! Conditions are keyed by type: each list holds at most one condition of each type.

use std::fmt;

use meridian_proto::model::ObjectKey;
use meridian_proto::model::route::ParentRef;

/// The status of one Gateway and of every route that referenced it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayStatus {
    /// The Gateway.
    pub gateway: Option<ObjectKey>,
    /// Gateway conditions: `Accepted` and `Programmed`, plus `InsecureFrontendValidationMode`
    /// while some port lets clients without a certificate through.
    pub conditions: Vec<Condition>,
    /// One entry per listener in the Gateway's spec order.
    pub listeners: Vec<ListenerStatus>,
    /// One entry per route with at least one parentRef naming this Gateway, in
    /// (kind, key, origin) order.
    pub routes: Vec<RouteStatus>,
    /// One entry per BackendTLSPolicy targeting a Service port this Gateway's routes name
    /// (the Gateway is an ancestor of the policy), in key order.
    pub policies: Vec<PolicyStatus>,
}

/// The status of one BackendTLSPolicy towards the Gateway being programmed (its
/// `status.ancestors` entry for this Gateway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The policy.
    pub key: ObjectKey,
    /// `Accepted` (reasons Accepted, Conflicted, NoValidCACertificate, Invalid) and
    /// `ResolvedRefs` (reasons ResolvedRefs, InvalidCACertificateRef, InvalidKind).
    pub conditions: Vec<Condition>,
}

/// The status of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// The route kinds that may attach (only valid kinds are listed).
    pub supported_kinds: Vec<RouteKind>,
    /// Routes with `Accepted=True` attached to this listener (counted even when the listener
    /// itself is not accepted, as the spec says).
    pub attached_routes: u32,
    /// `Accepted`, `Programmed`, `ResolvedRefs` and `Conflicted`.
    pub conditions: Vec<Condition>,
}

/// The status of one route towards the Gateway being programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStatus {
    /// Route kind.
    pub kind: RouteKind,
    /// Route key.
    pub key: ObjectKey,
    /// Whether the route came from the local source or from the hub.
    pub origin: RouteOrigin,
    /// One entry per parentRef that names this Gateway.
    pub parents: Vec<RouteParentStatus>,
}

/// Where a route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteOrigin {
    /// The agent's own source (a YAML directory or the cluster).
    Local,
    /// Pushed by the hub to every cluster.
    Shared,
}

/// The conditions of a route for one of its parentRefs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteParentStatus {
    /// The parentRef as written (with defaults filled in).
    pub parent_ref: ParentRef,
    /// `Accepted`, `ResolvedRefs` and, when rules were dropped, `PartiallyInvalid`.
    pub conditions: Vec<Condition>,
}

/// Route kinds Meridian serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// HTTPRoute.
    Http,
    /// GRPCRoute.
    Grpc,
    /// TLSRoute.
    Tls,
}

/// One status condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Condition type.
    pub type_: ConditionType,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable reason (the spec's names).
    pub reason: Reason,
    /// Human-readable detail.
    pub message: String,
    /// The object's `metadata.generation` these conditions describe.
    pub observed_generation: i64,
}

/// Condition types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// `Accepted`.
    Accepted,
    /// `Programmed`.
    Programmed,
    /// `ResolvedRefs`.
    ResolvedRefs,
    /// `Conflicted` (True is bad).
    Conflicted,
    /// `PartiallyInvalid` (only present when True).
    PartiallyInvalid,
    /// `InsecureFrontendValidationMode` (Gateway; only present when True): some port uses
    /// frontend validation mode `AllowInsecureFallback`.
    InsecureFrontendValidationMode,
}

/// Condition status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

/// Condition reasons, spelled as the Gateway API spec spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `Accepted`.
    Accepted,
    /// `Programmed`.
    Programmed,
    /// `ResolvedRefs`.
    ResolvedRefs,
    /// `ListenersNotValid`: some (True) or all (False) listeners are invalid.
    ListenersNotValid,
    /// `Invalid`.
    Invalid,
    /// `InvalidParameters`.
    InvalidParameters,
    /// `UnsupportedAddress`.
    UnsupportedAddress,
    /// `Pending`.
    Pending,
    /// `UnsupportedProtocol`.
    UnsupportedProtocol,
    /// `UnsupportedValue`.
    UnsupportedValue,
    /// `ProtocolConflict`.
    ProtocolConflict,
    /// `HostnameConflict`.
    HostnameConflict,
    /// `NoConflicts`.
    NoConflicts,
    /// `InvalidCertificateRef`.
    InvalidCertificateRef,
    /// `InvalidRouteKinds`.
    InvalidRouteKinds,
    /// `RefNotPermitted`.
    RefNotPermitted,
    /// `NotAllowedByListeners`.
    NotAllowedByListeners,
    /// `NoMatchingListenerHostname`.
    NoMatchingListenerHostname,
    /// `NoMatchingParent`.
    NoMatchingParent,
    /// `IncompatibleFilters`.
    IncompatibleFilters,
    /// `InvalidKind`.
    InvalidKind,
    /// `BackendNotFound`.
    BackendNotFound,
    /// `Conflicted` (a policy that another policy overrides).
    Conflicted,
    /// `NoValidCACertificate`: none of a policy's or a listener's CA references resolved.
    NoValidCACertificate,
    /// `InvalidCACertificateRef`: a CA reference is missing or unusable.
    InvalidCACertificateRef,
    /// `InvalidCACertificateKind`: a frontend CA reference is not a core ConfigMap.
    InvalidCACertificateKind,
    /// `InvalidClientCertificateRef`: the Gateway's backend client certificate reference is
    /// missing or unusable.
    InvalidClientCertificateRef,
    /// `ConfigurationChanged` (of `InsecureFrontendValidationMode`).
    ConfigurationChanged,
    /// `Shadowed` (Meridian-specific): a local route is replaced by the hub's shared route with
    /// the same namespace and name.
    Shadowed,
}

// === impl GatewayStatus ===

impl GatewayStatus {
    /// The Gateway condition of `type_`, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(&self.conditions, type_)
    }

    /// The status of BackendTLSPolicy `key`.
    pub fn policy(&self, key: &ObjectKey) -> Option<&PolicyStatus> {
        self.policies.iter().find(|p| &p.key == key)
    }

    /// The status of listener `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerStatus> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// One line per condition that reports something wrong (a False `Accepted`,
    /// `Programmed` or `ResolvedRefs`; a True `Conflicted`, `PartiallyInvalid` or
    /// `InsecureFrontendValidationMode`), naming what it is about: for the log, where an
    /// operator without the status (a directory source, a hub-distributed route) sees why a
    /// listener or route does not serve.
    pub fn problems(&self) -> Vec<String> {
        let bad = |c: &Condition| match c.type_ {
            ConditionType::Conflicted
            | ConditionType::PartiallyInvalid
            | ConditionType::InsecureFrontendValidationMode => c.status == ConditionStatus::True,
            _ => c.status == ConditionStatus::False,
        };
        let line = |what: String, c: &Condition| {
            format!(
                "{what}: {}={} ({}): {}",
                c.type_,
                c.status,
                c.reason.as_str(),
                c.message
            )
        };
        let gateway = self
            .gateway
            .as_ref()
            .map_or_else(|| "Gateway".to_string(), |g| format!("Gateway {g}"));
        let mut lines = Vec::new();
        for c in self.conditions.iter().filter(|c| bad(c)) {
            lines.push(line(gateway.clone(), c));
        }
        for listener in &self.listeners {
            for c in listener.conditions.iter().filter(|c| bad(c)) {
                lines.push(line(format!("{gateway} listener {}", listener.name), c));
            }
        }
        for route in &self.routes {
            for parent in &route.parents {
                for c in parent.conditions.iter().filter(|c| bad(c)) {
                    lines.push(line(format!("{} {}", route.kind.as_str(), route.key), c));
                }
            }
        }
        for policy in &self.policies {
            for c in policy.conditions.iter().filter(|c| bad(c)) {
                lines.push(line(format!("BackendTLSPolicy {}", policy.key), c));
            }
        }
        lines
    }

    /// The status of a route (any origin; the shared one first).
    pub fn route(&self, kind: RouteKind, key: &ObjectKey) -> Option<&RouteStatus> {
        let mut found = self
            .routes
            .iter()
            .filter(|r| r.kind == kind && &r.key == key);
        let first = found.next();
        match found.next() {
            Some(second) if second.origin == RouteOrigin::Shared => Some(second),
            _ => first,
        }
    }
}

// === impl PolicyStatus ===

impl PolicyStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(&self.conditions, type_)
    }
}

// === impl ListenerStatus ===

impl ListenerStatus {
    /// The listener condition of `type_`, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(&self.conditions, type_)
    }
}

// === impl RouteParentStatus ===

impl RouteParentStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        find(&self.conditions, type_)
    }
}

fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

// === impl RouteKind ===

impl RouteKind {
    /// The Kubernetes kind (`HTTPRoute`, `GRPCRoute`, `TLSRoute`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
            Self::Tls => "TLSRoute",
        }
    }

    /// Parses a Kubernetes kind name.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "HTTPRoute" => Some(Self::Http),
            "GRPCRoute" => Some(Self::Grpc),
            "TLSRoute" => Some(Self::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Condition ===

impl Condition {
    /// A condition with `status` True.
    pub fn ok(
        type_: ConditionType,
        reason: Reason,
        message: impl Into<String>,
        generation: i64,
    ) -> Self {
        Self::new(type_, ConditionStatus::True, reason, message, generation)
    }

    /// A condition with `status` False.
    pub fn bad(
        type_: ConditionType,
        reason: Reason,
        message: impl Into<String>,
        generation: i64,
    ) -> Self {
        Self::new(type_, ConditionStatus::False, reason, message, generation)
    }

    /// A condition.
    pub fn new(
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
        generation: i64,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
            observed_generation: generation,
        }
    }

    /// Whether the status is True.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}/{}", self.type_, self.status, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

// === impl ConditionType ===

impl ConditionType {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Programmed => "Programmed",
            Self::ResolvedRefs => "ResolvedRefs",
            Self::Conflicted => "Conflicted",
            Self::PartiallyInvalid => "PartiallyInvalid",
            Self::InsecureFrontendValidationMode => "InsecureFrontendValidationMode",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ConditionStatus ===

impl ConditionStatus {
    /// `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Reason ===

impl Reason {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Programmed => "Programmed",
            Self::ResolvedRefs => "ResolvedRefs",
            Self::ListenersNotValid => "ListenersNotValid",
            Self::Invalid => "Invalid",
            Self::InvalidParameters => "InvalidParameters",
            Self::UnsupportedAddress => "UnsupportedAddress",
            Self::Pending => "Pending",
            Self::UnsupportedProtocol => "UnsupportedProtocol",
            Self::UnsupportedValue => "UnsupportedValue",
            Self::ProtocolConflict => "ProtocolConflict",
            Self::HostnameConflict => "HostnameConflict",
            Self::NoConflicts => "NoConflicts",
            Self::InvalidCertificateRef => "InvalidCertificateRef",
            Self::InvalidRouteKinds => "InvalidRouteKinds",
            Self::RefNotPermitted => "RefNotPermitted",
            Self::NotAllowedByListeners => "NotAllowedByListeners",
            Self::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            Self::NoMatchingParent => "NoMatchingParent",
            Self::IncompatibleFilters => "IncompatibleFilters",
            Self::InvalidKind => "InvalidKind",
            Self::BackendNotFound => "BackendNotFound",
            Self::Conflicted => "Conflicted",
            Self::NoValidCACertificate => "NoValidCACertificate",
            Self::InvalidCACertificateRef => "InvalidCACertificateRef",
            Self::InvalidCACertificateKind => "InvalidCACertificateKind",
            Self::InvalidClientCertificateRef => "InvalidClientCertificateRef",
            Self::ConfigurationChanged => "ConfigurationChanged",
            Self::Shadowed => "Shadowed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: ConditionType, status: ConditionStatus, reason: Reason) -> Condition {
        Condition {
            type_,
            status,
            reason,
            message: "why".into(),
            observed_generation: 1,
        }
    }

    #[test]
    fn problems_name_what_is_wrong_and_leave_out_what_is_fine() {
        let status = GatewayStatus {
            gateway: Some("infra/gw".parse().unwrap()),
            conditions: vec![condition(
                ConditionType::Accepted,
                ConditionStatus::True,
                Reason::Accepted,
            )],
            listeners: vec![ListenerStatus {
                name: "https".into(),
                supported_kinds: vec![],
                attached_routes: 0,
                conditions: vec![
                    condition(
                        ConditionType::ResolvedRefs,
                        ConditionStatus::False,
                        Reason::InvalidCertificateRef,
                    ),
                    condition(
                        ConditionType::Conflicted,
                        ConditionStatus::False,
                        Reason::NoConflicts,
                    ),
                ],
            }],
            routes: vec![],
            policies: vec![],
        };
        assert_eq!(
            status.problems(),
            ["Gateway infra/gw listener https: ResolvedRefs=False (InvalidCertificateRef): why"]
        );
    }
}
