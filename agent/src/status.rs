//! The JSON shape of the admin `/status` endpoint.
//!
//! These are the agent's own view types, built from the model and gwapi types, because those
//! do not derive `Serialize` (a serialized type is a compatibility promise). Field names are
//! snake_case; fields are only ever added.

use std::sync::Arc;

use serde::Serialize;

use crate::hub_client::HubStatus;

/// Everything `/status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    /// The cluster name.
    pub cluster: String,
    /// `standalone` (no hub) or `hub`.
    pub mode: String,
    /// The source of local objects.
    pub source: SourceStatus,
    /// The SharedConfig from the hub in use.
    pub shared: SharedStatus,
    /// One entry per Gateway programmed from the source, in key order.
    pub gateways: Vec<GatewayView>,
    /// Subscriptions to Gateways that do not exist (waiting for them to appear).
    pub waiting: Vec<InstanceView>,
    /// Probe state of every backend endpoint, in address order.
    pub backends: Vec<BackendView>,
    /// The hub connection (filled in by the admin server from the hub client's own state).
    pub hub: Option<HubStatus>,
}

/// The local source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// What is being read (the directory).
    pub location: String,
    /// Whether the first complete read finished.
    pub initialized: bool,
    /// Objects currently in use.
    pub objects: usize,
    /// Problems currently reported. For a file (or, from Kubernetes, an object) with a fatal
    /// problem the last good content is in use; the others are applied and show in status
    /// conditions.
    pub problems: Vec<ProblemView>,
}

/// One source problem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProblemView {
    /// The file (relative to the directory) or other origin.
    pub source: String,
    /// 1-based document number within the file.
    pub doc: Option<usize>,
    /// Object kind, when known.
    pub kind: Option<String>,
    /// Object key, when known.
    pub key: Option<String>,
    /// Field path inside the object (empty for document-level problems).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Whether it held its object (file) back: the last good content is in use instead.
    pub fatal: bool,
    /// The whole problem as one line, as logged.
    pub text: String,
}

/// The hub's SharedConfig in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharedStatus {
    /// Its version (0 when none).
    pub version: u64,
    /// How many shared HTTPRoutes it holds.
    pub http_routes: usize,
}

/// One programmed Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GatewayView {
    /// `namespace/name`.
    pub gateway: String,
    /// The version being served.
    pub version: u64,
    /// Gateway conditions.
    pub conditions: Vec<ConditionView>,
    /// Listener statuses.
    pub listeners: Vec<ListenerView>,
    /// Route statuses towards this Gateway, rendered when `/status` is asked for: with
    /// thousands of routes, building and dropping them on every change was most of what the
    /// agent spent on one.
    pub routes: RouteViews,
    /// BackendTLSPolicies that apply to its routes' backends, with their conditions (an
    /// invalid policy makes its backends fail closed; its violations are here).
    pub policies: Vec<PolicyView>,
    /// Gateway instances subscribed to this Gateway.
    pub instances: Vec<InstanceView>,
}

/// One status condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConditionView {
    /// Condition type (`Accepted`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The spec's reason.
    pub reason: String,
    /// Detail.
    pub message: String,
}

/// One listener's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenerView {
    /// Listener name.
    pub name: String,
    /// Accepted routes attached.
    pub attached_routes: u32,
    /// Conditions.
    pub conditions: Vec<ConditionView>,
}

/// One BackendTLSPolicy's status towards a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    /// `namespace/name`.
    pub key: String,
    /// `Accepted` and `ResolvedRefs`.
    pub conditions: Vec<ConditionView>,
}

/// One route's status towards a Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteView {
    /// `HTTPRoute`, `GRPCRoute` or `TLSRoute`.
    pub kind: String,
    /// `namespace/name`.
    pub key: String,
    /// `local` or `shared` (from the hub).
    pub origin: String,
    /// Per parentRef conditions.
    pub parents: Vec<RouteParentView>,
}

/// A route's conditions for one parentRef.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteParentView {
    /// `namespace/name`, with `/section` when the parentRef names a listener.
    pub parent: String,
    /// Conditions.
    pub conditions: Vec<ConditionView>,
}

/// One gateway instance (one subscription).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    /// The agent's id for the subscription.
    pub session: u64,
    /// The instance name the gateway subscribed with.
    pub instance: String,
    /// The Gateway it serves.
    pub gateway: String,
    /// Where its readiness is probed.
    pub admin_address: String,
    /// The peer address of its gRPC connection.
    pub peer: Option<String>,
    /// `waiting` (no such Gateway yet), `subscribed` or `closed`.
    pub state: String,
    /// The version the gateway said it had when it subscribed.
    pub have_version: u64,
    /// The latest version sent to it.
    pub sent_version: Option<u64>,
    /// The latest version it ACKed.
    pub acked_version: Option<u64>,
    /// The latest NACK, if it came after the latest ACK.
    pub nack: Option<NackView>,
    /// Whether it counts as ready in health reports.
    pub ready: bool,
    /// Its readiness probe.
    pub probe: ProbeView,
}

/// A NACK.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NackView {
    /// The rejected version.
    pub version: u64,
    /// The gateway's error.
    pub error: String,
}

/// A probe's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeView {
    /// `unknown`, `up` or `down`.
    pub health: String,
    /// The latest result's detail.
    pub detail: String,
    /// Consecutive successes.
    pub consecutive_ok: u32,
    /// Consecutive failures.
    pub consecutive_fail: u32,
}

/// One backend endpoint's probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendView {
    /// `ip:port`.
    pub addr: String,
    /// The probe state.
    pub probe: ProbeView,
}

// === conversions from gwapi types ===

impl From<&meridian_gwapi::Problem> for ProblemView {
    fn from(problem: &meridian_gwapi::Problem) -> Self {
        Self {
            source: problem.source.clone(),
            doc: problem.doc,
            kind: problem.kind.clone(),
            key: problem.key.clone(),
            path: problem.path.clone(),
            message: problem.message.clone(),
            fatal: problem.fatal,
            text: problem.to_string(),
        }
    }
}

impl From<&meridian_gwapi::status::Condition> for ConditionView {
    fn from(condition: &meridian_gwapi::status::Condition) -> Self {
        Self {
            type_: condition.type_.as_str().to_string(),
            status: condition.status.as_str().to_string(),
            reason: condition.reason.as_str().to_string(),
            message: condition.message.clone(),
        }
    }
}

/// Fills the condition parts of a [`GatewayView`] from gwapi's status.
pub(crate) fn gateway_view(
    gateway: &meridian_proto::model::ObjectKey,
    version: u64,
    status: Option<&Arc<meridian_gwapi::status::GatewayStatus>>,
) -> GatewayView {
    let conditions = |list: &[meridian_gwapi::status::Condition]| -> Vec<ConditionView> {
        list.iter().map(ConditionView::from).collect()
    };
    let mut view = GatewayView {
        gateway: gateway.to_string(),
        version,
        ..GatewayView::default()
    };
    let Some(status) = status else { return view };
    view.conditions = conditions(&status.conditions);
    view.listeners = status
        .listeners
        .iter()
        .map(|listener| ListenerView {
            name: listener.name.clone(),
            attached_routes: listener.attached_routes,
            conditions: conditions(&listener.conditions),
        })
        .collect();
    view.policies = status
        .policies
        .iter()
        .map(|policy| PolicyView {
            key: policy.key.to_string(),
            conditions: conditions(&policy.conditions),
        })
        .collect();
    view.routes = RouteViews(Some(status.clone()));
    view
}

/// The route statuses of one Gateway, turned into [`RouteView`]s as they are serialized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteViews(Option<Arc<meridian_gwapi::status::GatewayStatus>>);

impl Serialize for RouteViews {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let routes = self.0.as_ref().map_or(&[][..], |status| &status.routes[..]);
        serializer.collect_seq(routes.iter().map(route_view))
    }
}

fn route_view(route: &meridian_gwapi::status::RouteStatus) -> RouteView {
    let conditions = |list: &[meridian_gwapi::status::Condition]| -> Vec<ConditionView> {
        list.iter().map(ConditionView::from).collect()
    };
    RouteView {
        kind: route.kind.as_str().to_string(),
        key: route.key.to_string(),
        origin: match route.origin {
            meridian_gwapi::status::RouteOrigin::Local => "local".to_string(),
            meridian_gwapi::status::RouteOrigin::Shared => "shared".to_string(),
        },
        parents: route
            .parents
            .iter()
            .map(|parent| RouteParentView {
                parent: match &parent.parent_ref.section_name {
                    Some(section) => format!(
                        "{}/{}/{section}",
                        parent.parent_ref.namespace, parent.parent_ref.name
                    ),
                    None => {
                        format!("{}/{}", parent.parent_ref.namespace, parent.parent_ref.name)
                    }
                },
                conditions: conditions(&parent.conditions),
            })
            .collect(),
    }
}
