//! The admin HTTP API (axum, JSON). See `docs/admin-api.md` for every route and shape.
//!
//! **Guarantees:**
//! - Writes go through Raft (any node; followers forward) and are idempotent upserts or
//!   deletes; a refused write changes nothing.
//! - Reads are linearizable (a ReadIndex barrier, then this node's applied state) unless the
//!   query says `?stale=true`, which answers from this node's applied state at once.
//! - Invalid input gets 400 with `{"error": "<field>: <why>", "field": "<field>"}`, unknown
//!   names 404, conflicts 409, no quorum 503.
//! - With tokens configured, every route but `/healthz`, `/ready` and `/metrics` needs
//!   `Authorization: Bearer <token>` (401 otherwise); see [`auth`].

mod auth;
mod body;
pub mod certificates;
mod error;
mod route_status;
pub mod tls;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_proto::model::{ClusterName, Fqdn, ObjectKey};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use self::body::{
    AuditJson, ClusterBody, ClusterJson, HealthJson, HostnameJson, HostnameServingJson, MemberBody,
    PinBody, RecordSetJson, RoutingJson, TargetJson,
};
pub use self::certificates::{CertificateBody, CertificateJson};
pub use self::error::{ApiError, ErrorBody};
use crate::dns::{self, DnsConfig, DnsView};
use crate::raft::{RaftHandle, Role};
use crate::store::{Action, Proposer, RECORD_TYPES, StoreView, check_hostname, check_record_set};

/// The request header naming who makes a change, for the audit log.
pub const ACTOR_HEADER: &str = "x-meridian-actor";
/// The actor when the header is absent.
pub const DEFAULT_ACTOR: &str = "admin-api";
/// How long a linearizable read waits for this node to apply up to the read index.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// What the admin API needs from the node.
pub struct AdminDeps {
    /// This node's id.
    pub node_id: u64,
    /// Status, read barrier and membership.
    pub raft: RaftHandle,
    /// Writes.
    pub proposer: Proposer,
    /// The committed state.
    pub view: watch::Receiver<Arc<StoreView>>,
    /// What DNS answers from (for `explain` and `ds`).
    pub dns_view: watch::Receiver<Arc<DnsView>>,
    /// The node's DNS configuration (zones, geo map).
    pub dns_config: DnsConfig,
    /// Explains answers from the snapshot DNS serves now.
    pub dns_explainer: dns::DnsExplainer,
    /// The node's metrics, complete (every component registered before the API starts).
    pub registry: Arc<Registry>,
    /// `meridian_hub_certificate_not_after_seconds`, set from the state at each scrape.
    pub certificate_expiry: CertificateExpiry,
    /// Bearer tokens; `None` accepts every request (the node then listens on loopback only,
    /// unless started with `--insecure-admin`).
    pub tokens: Option<Arc<crate::auth::AdminTokens>>,
}

type AppState = Arc<AdminDeps>;

/// Labels of a certificate's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CertificateLabels {
    namespace: String,
    name: String,
}

/// When each distributed certificate's leaf expires (Unix seconds), so an alert can fire
/// before a gateway serves an expired certificate: `meridian_hub_certificate_not_after_seconds
/// - time() < 14 * 86400`.
pub type CertificateExpiry = prometheus_client::metrics::family::Family<
    CertificateLabels,
    prometheus_client::metrics::gauge::Gauge,
>;

/// Registers [`CertificateExpiry`] in `registry`.
pub fn register_certificate_expiry(registry: &mut Registry) -> CertificateExpiry {
    let family = CertificateExpiry::default();
    registry.register(
        "meridian_hub_certificate_not_after_seconds",
        "When each distributed certificate's leaf expires, in Unix seconds",
        family.clone(),
    );
    family
}

/// Sets the expiry gauges from the committed certificates (removing deleted ones).
fn update_certificate_expiry(state: &AdminDeps) {
    let view = state.view.borrow().clone();
    state.certificate_expiry.clear();
    for cert in view.state.certificates.values() {
        if let Ok(info) = crate::store::certificate_info(cert) {
            state
                .certificate_expiry
                .get_or_create(&CertificateLabels {
                    namespace: cert.key.namespace.clone(),
                    name: cert.key.name.clone(),
                })
                .set(info.not_after_unix);
        }
    }
}

/// The admin API's routes.
pub fn router(deps: AdminDeps) -> Router {
    let tokens = deps.tokens.clone();
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/clusters", get(list_clusters))
        .route(
            "/v1/clusters/{name}",
            get(get_cluster).put(put_cluster).delete(delete_cluster),
        )
        .route("/v1/clusters/{name}/drain", post(drain_cluster))
        .route("/v1/clusters/{name}/undrain", post(undrain_cluster))
        .route("/v1/hostnames", get(list_hostnames))
        .route(
            "/v1/hostnames/{fqdn}",
            get(get_hostname).put(put_hostname).delete(delete_hostname),
        )
        .route("/v1/hostnames/{fqdn}/pin", post(pin_hostname))
        .route("/v1/hostnames/{fqdn}/unpin", post(unpin_hostname))
        .route("/v1/routes", get(list_routes))
        .route(
            "/v1/routes/{namespace}/{name}",
            get(get_route).put(put_route).delete(delete_route),
        )
        .route("/v1/certificates", get(certificates::list))
        .route(
            "/v1/certificates/{namespace}/{name}",
            get(certificates::get)
                .put(certificates::put)
                .delete(certificates::delete),
        )
        .route("/v1/records", get(list_records))
        .route(
            "/v1/records/{name}/{rtype}",
            get(get_record_set)
                .put(put_record_set)
                .delete(delete_record_set),
        )
        .route("/v1/dns/explain", get(dns_explain))
        .route("/v1/dns/ds/{zone}", get(dns_ds))
        .route("/v1/audit", get(audit))
        .route("/v1/members", get(list_members).post(add_member))
        .route("/v1/members/{id}", axum::routing::delete(remove_member))
        .fallback(not_found);
    let state = Arc::new(deps);
    let router = router
        .with_state(Arc::clone(&state))
        .layer(axum::middleware::from_fn_with_state(
            state,
            mark_stale_reads,
        ))
        .layer(axum::middleware::map_response(json_rejections));
    match tokens {
        Some(tokens) => router.layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        )),
        None => router,
    }
}

/// axum answers a body over its limit (2 MiB) with a plain-text 413; every other error of this
/// API is JSON (`{"error", "field"}`), so that one is too, with the limit stated.
async fn json_rejections(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            field: None,
            message: "the request body is larger than the admin API's limit of 2 MiB".into(),
        }
        .into_response();
    }
    response
}

/// Says so on a `?stale=true` read's answer, which came from this node's applied state without
/// asking the leader: `X-Meridian-Read: stale`, the applied index it reflects, and how long ago
/// this node last heard from a working leader (`none` if never), its staleness bound.
async fn mark_stale_reads(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let stale = request
        .uri()
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "stale=true"));
    let mut response = next.run(request).await;
    if stale && response.status().is_success() {
        let (applied, contact) = {
            let raft = state.raft.status();
            let raft = raft.borrow();
            (raft.applied_index, raft.last_leader_contact)
        };
        let age = contact.map_or_else(
            || "none".to_string(),
            |at| format!("{:.3}", at.elapsed().as_secs_f64()),
        );
        let headers = response.headers_mut();
        headers.insert("x-meridian-read", header::HeaderValue::from_static("stale"));
        headers.insert(
            "x-meridian-applied-index",
            header::HeaderValue::from(applied),
        );
        if let Ok(age) = header::HeaderValue::from_str(&age) {
            headers.insert("x-meridian-leader-contact-age-seconds", age);
        }
    }
    response
}

/// A query string, refused with a JSON 400 naming the bad parameter (axum's own `Query`
/// answers in plain text).
struct Params<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(
                None,
                format!("query string: {}", rejection.body_text()),
            )),
        }
    }
}

/// `?stale=true` on reads.
#[derive(Debug, Default, Deserialize)]
struct ReadQuery {
    #[serde(default)]
    stale: bool,
}

// === reads ===

/// The state to answer a read from: after a ReadIndex barrier unless `stale`.
async fn read_view(state: &AppState, stale: bool) -> Result<Arc<StoreView>, ApiError> {
    if stale {
        return Ok(state.view.borrow().clone());
    }
    let index = state.raft.read_index().await.map_err(|err| {
        let mut api = ApiError::from(err);
        api.message = format!(
            "linearizable read failed: {}; add ?stale=true to read this node's applied state",
            api.message
        );
        api
    })?;
    let mut view = state.view.clone();
    let ready = tokio::time::timeout(APPLY_WAIT, view.wait_for(|v| v.applied_index >= index))
        .await
        .map_err(|_| ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            field: None,
            message: format!("this node did not apply up to index {index} in time"),
        })?
        .map_err(|_| ApiError::internal("the state machine stopped".into()))?;
    Ok(ready.clone())
}

fn actor(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(ACTOR_HEADER) else {
        return Ok(DEFAULT_ACTOR.to_string());
    };
    let actor = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.len() <= 128 && a.chars().all(|c| !c.is_control()))
        .ok_or_else(|| {
            ApiError::bad_request(
                Some("X-Meridian-Actor".into()),
                "must be 1 to 128 printable characters".into(),
            )
        })?;
    Ok(actor.to_string())
}

async fn submit(state: &AppState, headers: &HeaderMap, action: Action) -> Result<bool, ApiError> {
    let actor = actor(headers)?;
    let outcome = state.proposer.submit(&actor, action).await?;
    Ok(outcome.into_result()?)
}

fn path_cluster(name: &str) -> Result<ClusterName, ApiError> {
    ClusterName::new(name).map_err(|e| ApiError::bad_request(Some("name".into()), e.to_string()))
}

fn path_fqdn(fqdn: &str) -> Result<Fqdn, ApiError> {
    Fqdn::new(fqdn).map_err(|e| ApiError::bad_request(Some("fqdn".into()), e.to_string()))
}

fn path_route_key(namespace: &str, name: &str) -> Result<ObjectKey, ApiError> {
    ObjectKey::new(namespace, name).map_err(|e| {
        let field = if e.what == "namespace" {
            "namespace"
        } else {
            "name"
        };
        ApiError::bad_request(Some(field.into()), e.to_string())
    })
}

// === handlers: node ===

/// 200 while the node works; 503 once its raft node stopped on its own (its state is frozen or
/// empty, so a load balancer must stop sending it traffic), with the reason and the remedy.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.raft.fault() {
        None => "ok\n".into_response(),
        Some(fault) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "failed",
                "error": fault.to_string(),
                "remedy": fault.remedy(),
            })),
        )
            .into_response(),
    }
}

/// 200 once this node serves its group's state: it is a member (voter or learner) and has
/// applied some of the group's log. Before that (a `--join` node not yet added, a node the
/// group has not reached) its DNS answers SERVFAIL and its reads are empty, so a load balancer
/// must not send it traffic. Leader contact is not required: a node cut off from its group
/// keeps serving its last state (DNS fails static), which `/v1/status` shows.
async fn ready(State(state): State<AppState>) -> Response {
    if state.raft.fault().is_some() {
        return healthz(State(state)).await;
    }
    let raft = state.raft.status().borrow().clone();
    let member =
        raft.members.contains_key(&state.node_id) || raft.learners.contains_key(&state.node_id);
    let why = if !member {
        Some(
            "this node is not a member of its group yet (a --join node waits for `meridian ctl members add`)",
        )
    } else if raft.applied_index == 0 {
        Some("this node has not received its group's state yet")
    } else {
        None
    };
    match why {
        None => "ready\n".into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "reason": why,
                "applied_index": raft.applied_index,
            })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    update_certificate_expiry(&state);
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return ApiError::internal(format!("encoding metrics: {err}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see docs/admin-api.md".into())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
        Role::Leader => "leader",
    }
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let raft = state.raft.status().borrow().clone();
    let view = state.view.borrow().clone();
    let clusters: Vec<ClusterJson> = view.state.clusters.values().map(Into::into).collect();
    Json(json!({
        "node_id": state.node_id,
        "role": role_name(raft.role),
        "term": raft.term,
        "leader_id": raft.leader_id,
        "leader_addr": raft.members.get(&raft.leader_id).map(ToString::to_string),
        "commit_index": raft.commit_index,
        "applied_index": raft.applied_index,
        "leader_contact_age_seconds": raft.last_leader_contact.map(|t| t.elapsed().as_secs_f64()),
        "members": raft.members.iter().map(|(id, addr)| json!({"id": id, "addr": addr.to_string()})).collect::<Vec<_>>(),
        "learners": raft.learners.iter().map(|(id, addr)| json!({"id": id, "addr": addr.to_string()})).collect::<Vec<_>>(),
        "shared_version": view.state.shared_version,
        "dns_version": view.state.dns_version,
        "clusters": clusters,
    }))
}

// === handlers: clusters ===

async fn list_clusters(
    State(state): State<AppState>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = read_view(&state, query.stale).await?;
    let items: Vec<ClusterJson> = view
        .state
        .clusters
        .values()
        .map(|record| cluster_json(&view.state, record))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<ClusterJson>, ApiError> {
    let name = path_cluster(&name)?;
    let view = read_view(&state, query.stale).await?;
    let record = view
        .state
        .clusters
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("cluster {name} does not exist")))?;
    Ok(Json(cluster_json(&view.state, record)))
}

/// A cluster as reads show it, with how it stands with the shared routes.
fn cluster_json(state: &crate::store::State, record: &crate::store::ClusterRecord) -> ClusterJson {
    let mut json = ClusterJson::from(record);
    json.routes = Some(route_status::cluster_routes(state, record));
    json
}

async fn put_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ClusterJson>, ApiError> {
    let name = path_cluster(&name)?;
    let cluster = body::parse_json::<ClusterBody>(&body)?.into_model(&name)?;
    submit(&state, &headers, Action::PutCluster(cluster.clone())).await?;
    let view = state.view.borrow().clone();
    let json = match view.state.clusters.get(&name) {
        Some(record) => record.into(),
        None => (&crate::store::ClusterRecord {
            cluster,
            health: Default::default(),
            reported_addresses: Vec::new(),
            hostnames: Default::default(),
            shared: None,
        })
            .into(),
    };
    Ok(Json(json))
}

async fn delete_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let name = path_cluster(&name)?;
    submit(&state, &headers, Action::DeleteCluster(name.clone())).await?;
    Ok(Json(json!({ "deleted": name.to_string() })))
}

async fn set_drained(
    state: AppState,
    name: String,
    headers: HeaderMap,
    drained: bool,
) -> Result<Json<Value>, ApiError> {
    let cluster = path_cluster(&name)?;
    let changed = submit(
        &state,
        &headers,
        Action::SetDrained {
            cluster: cluster.clone(),
            drained,
        },
    )
    .await?;
    // Draining the last undrained target of a hostname leaves DNS nothing to answer with
    // (drained clusters are never answered, not even failing open): allowed, as an operator
    // may mean it, but said.
    let mut warnings = Vec::new();
    if drained {
        let view = state.view.borrow().clone();
        for policy in view.state.hostnames.values() {
            let targets_it = policy.targets.iter().any(|t| t.cluster == cluster);
            let all_drained = policy.targets.iter().all(|t| {
                view.state
                    .clusters
                    .get(&t.cluster)
                    .is_none_or(|c| c.cluster.drained)
            });
            if targets_it && all_drained {
                warnings.push(format!(
                    "every cluster of hostname {} is drained: DNS answers it with no address \
                     until one is undrained",
                    policy.fqdn
                ));
            }
        }
    }
    Ok(Json(json!({
        "cluster": cluster.to_string(),
        "drained": drained,
        "changed": changed,
        "warnings": warnings,
    })))
}

async fn drain_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    set_drained(state, name, headers, true).await
}

async fn undrain_cluster(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    set_drained(state, name, headers, false).await
}

// === handlers: hostnames ===

async fn list_hostnames(
    State(state): State<AppState>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = read_view(&state, query.stale).await?;
    let items: Vec<HostnameJson> = view.state.hostnames.values().map(Into::into).collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_hostname(
    State(state): State<AppState>,
    Path(fqdn): Path<String>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<HostnameJson>, ApiError> {
    let fqdn = path_fqdn(&fqdn)?;
    let view = read_view(&state, query.stale).await?;
    let policy = view
        .state
        .hostnames
        .get(&fqdn)
        .ok_or_else(|| ApiError::not_found(format!("hostname {fqdn} does not exist")))?;
    Ok(Json(policy.into()))
}

/// Checks that `fqdn` lies in a zone this node serves (when it serves any).
fn check_in_zone(config: &DnsConfig, fqdn: &Fqdn) -> Result<(), ApiError> {
    if config.zones.is_empty() {
        return Ok(());
    }
    let zones: Vec<Fqdn> = config
        .zones
        .iter()
        .filter_map(|z| Fqdn::new(&z.origin).ok())
        .collect();
    if zones.iter().any(|zone| fqdn.is_within(zone)) {
        return Ok(());
    }
    let zones: Vec<String> = zones.iter().map(ToString::to_string).collect();
    Err(ApiError::bad_request(
        Some("fqdn".into()),
        format!(
            "{fqdn} is not inside a zone this hub serves ({})",
            zones.join(", ")
        ),
    ))
}

/// What a write would put on a name.
#[derive(Clone, Copy, Debug)]
enum NameUse<'a> {
    /// A hostname policy (it answers A and AAAA).
    Policy,
    /// A static record set of this type.
    Records(&'a str),
}

/// Refuses (409) a hostname policy, or address or CNAME records, on a name the DNS config
/// lists as a name server of a zone: DNS would answer a cluster's address (or an alias) for
/// the name server while the delegation's glue names the real one, a lame delegation once
/// resolvers re-query the server's address; and records beside the configured addresses are
/// never served.
/// Other record types (TXT, MX) may sit on a name server's name.
fn check_not_nameserver(
    config: &DnsConfig,
    fqdn: &Fqdn,
    what: NameUse<'_>,
) -> Result<(), ApiError> {
    for zone in &config.zones {
        let Ok(origin) = Fqdn::new(&zone.origin) else {
            continue;
        };
        let listed = zone
            .nameservers
            .iter()
            .any(|ns| Fqdn::new(&ns.name).is_ok_and(|name| &name == fqdn));
        if !listed {
            continue;
        }
        let why = match what {
            NameUse::Policy => "it cannot carry a hostname policy".to_string(),
            // RFC 2181 §10.3: a name server's name must not be an alias.
            NameUse::Records("CNAME") => "it cannot carry a CNAME record".to_string(),
            // In the zone, the config's addresses are what DNS serves (and sends as glue).
            NameUse::Records(rtype @ ("A" | "AAAA")) if fqdn.is_within(&origin) => {
                format!("its addresses come from the hub config; it cannot carry {rtype} records")
            }
            NameUse::Records(_) => continue,
        };
        return Err(ApiError::conflict(format!(
            "{fqdn} is a name server of zone {origin} (hub config); {why}"
        )));
    }
    Ok(())
}

async fn put_hostname(
    State(state): State<AppState>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HostnameJson>, ApiError> {
    let fqdn = path_fqdn(&fqdn)?;
    let policy = body::parse_json::<HostnameJson>(&body)?.into_model(&fqdn)?;
    check_in_zone(&state.dns_config, &fqdn)?;
    check_not_nameserver(&state.dns_config, &fqdn, NameUse::Policy)?;
    // A quick answer against this node's state; apply checks again against the committed one.
    check_hostname(&state.view.borrow().state, &policy)?;
    submit(&state, &headers, Action::PutHostname(policy.clone())).await?;
    Ok(Json((&policy).into()))
}

async fn delete_hostname(
    State(state): State<AppState>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let fqdn = path_fqdn(&fqdn)?;
    submit(&state, &headers, Action::DeleteHostname(fqdn.clone())).await?;
    Ok(Json(json!({ "deleted": fqdn.to_string() })))
}

async fn pin_hostname(
    State(state): State<AppState>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let fqdn = path_fqdn(&fqdn)?;
    let pin = body::parse_json::<PinBody>(&body)?;
    let cluster = ClusterName::new(pin.cluster)
        .map_err(|e| ApiError::bad_request(Some("cluster".into()), e.to_string()))?;
    let changed = submit(
        &state,
        &headers,
        Action::SetPinned {
            fqdn: fqdn.clone(),
            cluster: Some(cluster.clone()),
        },
    )
    .await?;
    Ok(Json(json!({
        "fqdn": fqdn.to_string(),
        "pinned": cluster.to_string(),
        "changed": changed,
    })))
}

async fn unpin_hostname(
    State(state): State<AppState>,
    Path(fqdn): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let fqdn = path_fqdn(&fqdn)?;
    let changed = submit(
        &state,
        &headers,
        Action::SetPinned {
            fqdn: fqdn.clone(),
            cluster: None,
        },
    )
    .await?;
    Ok(Json(json!({
        "fqdn": fqdn.to_string(),
        "pinned": null,
        "changed": changed,
    })))
}

// === handlers: routes ===

/// `GET /v1/routes` query: `?stale=true`, and `?status=summary` for each cluster's state and
/// reason without the conditions (what a table shows; the conditions of every route in every
/// cluster can be megabytes).
#[derive(Debug, Default, Deserialize)]
struct RoutesQuery {
    #[serde(default)]
    stale: bool,
    #[serde(default)]
    status: StatusDetail,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StatusDetail {
    #[default]
    Full,
    Summary,
}

async fn list_routes(
    State(state): State<AppState>,
    Params(query): Params<RoutesQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = read_view(&state, query.stale).await?;
    let items: Vec<Value> = view
        .state
        .routes
        .values()
        .map(|route| {
            let mut json = route_json(&view.state, route);
            if query.status == StatusDetail::Summary {
                route_status::summarize(&mut json["status"]);
            }
            json
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_route(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = path_route_key(&namespace, &name)?;
    let view = read_view(&state, query.stale).await?;
    let route = view
        .state
        .routes
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("route {key} does not exist")))?;
    Ok(Json(route_json(&view.state, route)))
}

/// A shared route in Kubernetes' shape, with its status in every cluster.
fn route_json(
    state: &crate::store::State,
    route: &meridian_proto::model::route::HttpRoute,
) -> Value {
    let mut json = meridian_gwapi::http_route_to_json(route);
    json["status"] = route_status::route_status(state, &route.key);
    json
}

/// Parses an HTTPRoute body for the route at `key`: `metadata.namespace`/`name` must match
/// the path or be absent (then they are taken from it), `apiVersion` and `kind` default to
/// Gateway API v1 `HTTPRoute`.
fn parse_route(
    key: &ObjectKey,
    bytes: &[u8],
) -> Result<meridian_proto::model::route::HttpRoute, ApiError> {
    let mut value: Value = body::parse_json(bytes)?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::bad_request(
            None,
            "the body must be a JSON object (a Gateway API HTTPRoute)".into(),
        ));
    };
    object
        .entry("apiVersion")
        .or_insert_with(|| json!("gateway.networking.k8s.io/v1"));
    object.entry("kind").or_insert_with(|| json!("HTTPRoute"));
    let metadata = object.entry("metadata").or_insert_with(|| json!({}));
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(ApiError::bad_request(
            Some("metadata".into()),
            "must be an object".into(),
        ));
    };
    for (field, expected) in [("namespace", &key.namespace), ("name", &key.name)] {
        match metadata.get(field) {
            None | Some(Value::Null) => {
                metadata.insert(field.to_string(), json!(expected));
            }
            Some(Value::String(given)) if given == expected => {}
            Some(given) => {
                return Err(ApiError::bad_request(
                    Some(format!("metadata.{field}")),
                    format!("{given} does not match the path's {field} {expected:?}"),
                ));
            }
        }
    }
    meridian_gwapi::http_route_from_json(&value).map_err(|problems| {
        // The field paths are inside the message: a route can have several problems.
        let messages: Vec<String> = problems
            .iter()
            .map(|p| {
                if p.path.is_empty() {
                    p.message.clone()
                } else {
                    format!("{}: {}", p.path, p.message)
                }
            })
            .collect();
        ApiError::bad_request(
            None,
            format!("invalid HTTPRoute {key}: {}", messages.join("; ")),
        )
    })
}

async fn put_route(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let key = path_route_key(&namespace, &name)?;
    let route = parse_route(&key, &body)?;
    let json = meridian_gwapi::http_route_to_json(&route);
    submit(&state, &headers, Action::PutRoute(Box::new(route))).await?;
    Ok(Json(json))
}

async fn delete_route(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = path_route_key(&namespace, &name)?;
    submit(&state, &headers, Action::DeleteRoute(key.clone())).await?;
    Ok(Json(json!({ "deleted": key.to_string() })))
}

// === handlers: static records ===

fn path_record(name: &str, rtype: &str) -> Result<(Fqdn, String), ApiError> {
    let name =
        Fqdn::new(name).map_err(|e| ApiError::bad_request(Some("name".into()), e.to_string()))?;
    let rtype = rtype.to_ascii_uppercase();
    if !RECORD_TYPES.contains(&rtype.as_str()) {
        return Err(ApiError::bad_request(
            Some("type".into()),
            format!("{rtype:?} is not one of {}", RECORD_TYPES.join(", ")),
        ));
    }
    Ok((name, rtype))
}

async fn list_records(
    State(state): State<AppState>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = read_view(&state, query.stale).await?;
    let items: Vec<RecordSetJson> = view
        .state
        .records
        .iter()
        .map(|((name, rtype), set)| RecordSetJson::from_model(name, rtype, set))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_record_set(
    State(state): State<AppState>,
    Path((name, rtype)): Path<(String, String)>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<RecordSetJson>, ApiError> {
    let (name, rtype) = path_record(&name, &rtype)?;
    let view = read_view(&state, query.stale).await?;
    let set = view
        .state
        .records
        .get(&(name.clone(), rtype.clone()))
        .ok_or_else(|| ApiError::not_found(format!("{name} has no {rtype} records")))?;
    Ok(Json(RecordSetJson::from_model(&name, &rtype, set)))
}

async fn put_record_set(
    State(state): State<AppState>,
    Path((name, rtype)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RecordSetJson>, ApiError> {
    let (name, rtype) = path_record(&name, &rtype)?;
    let set = body::parse_json::<RecordSetJson>(&body)?.into_model(&name, &rtype)?;
    check_in_zone(&state.dns_config, &name).map_err(|mut e| {
        e.field = Some("name".into());
        e
    })?;
    check_not_nameserver(&state.dns_config, &name, NameUse::Records(&rtype))?;
    check_record_set(&state.view.borrow().state, &name, &rtype, &set)?;
    let json = RecordSetJson::from_model(&name, &rtype, &set);
    submit(
        &state,
        &headers,
        Action::PutRecordSet {
            name,
            rtype,
            ttl: set.ttl,
            values: set.values,
        },
    )
    .await?;
    Ok(Json(json))
}

async fn delete_record_set(
    State(state): State<AppState>,
    Path((name, rtype)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (name, rtype) = path_record(&name, &rtype)?;
    submit(
        &state,
        &headers,
        Action::DeleteRecordSet {
            name: name.clone(),
            rtype: rtype.clone(),
        },
    )
    .await?;
    Ok(Json(json!({ "deleted": format!("{name} {rtype}") })))
}

// === handlers: DNS ===

#[derive(Debug, Deserialize)]
struct ExplainQuery {
    name: Option<String>,
    #[serde(rename = "type")]
    qtype: Option<String>,
    client: Option<String>,
}

async fn dns_explain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Params(query): Params<ExplainQuery>,
) -> Result<Response, ApiError> {
    let name = query
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(Some("name".into()), "is required".into()))?;
    let qtype = query.qtype.unwrap_or_else(|| "A".to_string());
    let client: IpAddr = match query.client {
        Some(client) => client.parse().map_err(|_| {
            ApiError::bad_request(
                Some("client".into()),
                format!("{client:?} is not an IP address"),
            )
        })?,
        None => peer.ip(),
    };
    match state.dns_explainer.explain(&name, &qtype, client) {
        Ok(explanation) => Ok(Json(explanation).into_response()),
        Err(dns::DnsError::Query(why)) => Err(ApiError::bad_request(None, why)),
        Err(dns::DnsError::Zone { zone, why }) => {
            Err(ApiError::not_found(format!("zone {zone}: {why}")))
        }
        Err(err) => Err(ApiError::internal(err.to_string())),
    }
}

async fn dns_ds(
    State(state): State<AppState>,
    Path(zone): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let zone =
        Fqdn::new(&zone).map_err(|e| ApiError::bad_request(Some("zone".into()), e.to_string()))?;
    let view = state.dns_view.borrow().clone();
    match dns::ds_records(&view, &zone) {
        Ok(records) => Ok(Json(json!({ "zone": zone.to_string(), "ds": records }))),
        Err(dns::DnsError::Zone { zone, why }) => {
            Err(ApiError::not_found(format!("zone {zone}: {why}")))
        }
        Err(err) => Err(ApiError::internal(err.to_string())),
    }
}

// === handlers: audit ===

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    stale: bool,
    limit: Option<usize>,
}

async fn audit(
    State(state): State<AppState>,
    Params(query): Params<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = read_view(&state, query.stale).await?;
    let limit = query.limit.unwrap_or(100);
    let skip = view.state.audit.len().saturating_sub(limit);
    let entries: Vec<AuditJson> = view.state.audit.iter().skip(skip).map(Into::into).collect();
    Ok(Json(json!({ "entries": entries })))
}

// === handlers: members ===

async fn list_members(State(state): State<AppState>) -> Json<Value> {
    let raft = state.raft.status().borrow().clone();
    let members: Vec<Value> = raft
        .members
        .iter()
        .map(|(id, addr)| {
            json!({
                "id": id,
                "addr": addr.to_string(),
                "leader": *id == raft.leader_id,
            })
        })
        .collect();
    let learners: Vec<Value> = raft
        .learners
        .iter()
        .map(|(id, addr)| json!({ "id": id, "addr": addr.to_string() }))
        .collect();
    Json(json!({ "leader_id": raft.leader_id, "members": members, "learners": learners }))
}

async fn add_member(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let (id, addr) = body::parse_json::<MemberBody>(&body)?.into_parts()?;
    state.raft.add_member(id, addr.clone()).await?;
    Ok(Json(json!({ "added": id, "addr": addr.to_string() })))
}

async fn remove_member(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 = id.parse().ok().filter(|id| *id != 0).ok_or_else(|| {
        ApiError::bad_request(Some("id".into()), format!("{id:?} is not a node id"))
    })?;
    state.raft.remove_member(id).await?;
    Ok(Json(json!({ "removed": id })))
}

// === serving ===

/// Serves the admin API on `listener` until `shutdown` is cancelled, over HTTPS when `tls`
/// is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            use axum::serve::ListenerExt as _;
            // Small responses go out at once rather than waiting on Nagle.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(config) => {
            use axum::serve::ListenerExt as _;
            // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>` support.
            let listener = tls::TlsListener::new(listener, config)?.tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
}
