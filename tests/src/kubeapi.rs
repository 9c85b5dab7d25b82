//! A stand-in for the Kubernetes API server's list/watch protocol on loopback, for driving
//! `meridian agent --kubernetes` without a cluster.
//!
//! What it does like the real one:
//! - one global, increasing `resourceVersion`; every write stamps the object with it;
//! - LIST (`GET /api/v1/services`, `/apis/GROUP/VERSION/namespaces/NS/PLURAL`, ...) returns a
//!   `<Kind>List` whose items carry `metadata.resourceVersion` but, as the real server's do,
//!   no `apiVersion`/`kind`, and the list's own `metadata.resourceVersion`;
//! - WATCH (`?watch=true&resourceVersion=N`) streams newline-delimited JSON events
//!   (`ADDED`/`MODIFIED`/`DELETED`, and `BOOKMARK` on [`FakeKubeApi::bookmark`] when the client
//!   sent `allowWatchBookmarks=true`) of everything after `N`, then live changes;
//! - a `resourceVersion` older than the retained history gets a `410 Gone` `ERROR` event
//!   (reason `Expired`), so a client must relist; [`FakeKubeApi::expire_history`] drops the
//!   history as etcd compaction does;
//! - [`FakeKubeApi::cut_watches`] closes open watch streams (as an API server restart or
//!   its watch timeout does), so the client must watch again from its last version;
//! - `fieldSelector` equality terms (`type=kubernetes.io/tls`) filter lists and watches;
//! - a resource it does not serve answers `404` with a `Status` body (a missing CRD);
//! - `metadata.generation` is 1 on create and goes up when anything but `metadata` and
//!   `status` changes; [`FakeKubeApi::apply`] writes the main resource, so an update keeps
//!   the stored `status` (as the real server ignores `status` there for kinds with a status
//!   subresource; a created object keeps the `status` it is given, to seed other
//!   controllers' entries);
//! - `PATCH .../NAME/status` writes the status subresource: a server-side apply
//!   (`application/apply-patch+yaml`, `fieldManager` required) or a JSON merge patch
//!   (`application/merge-patch+json`, RFC 7386) whose `metadata.resourceVersion`, when
//!   given, must be the stored one (else `409 Conflict`). Only `status` changes; a write that
//!   changes nothing keeps the resourceVersion and sends no event, one that does bumps it
//!   and sends `MODIFIED`. Every PATCH is recorded ([`FakeKubeApi::patches`]).
//! - Events (`events.k8s.io/v1`): `POST .../namespaces/NS/events` creates one (a name from
//!   `generateName` when it has none), `PATCH .../events/NAME` merges into it (a series
//!   update); they are kept apart from the watched objects ([`FakeKubeApi::events`]).
//!
//! Not modelled: authentication, pagination (`limit` is ignored: everything is one page),
//! label selectors, an object that stops matching a field selector on update (the real
//! server sends `DELETED` then), and server-side apply's per-field ownership: an apply
//! replaces the whole `status` with the applied one, which is what apply does when one
//! manager owns all of `status` (the case for a Gateway of Meridian's class).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

/// `kind` → (`apiVersion`, plural, namespaced) of every resource the fake serves.
const SERVED: &[(&str, &str, &str, bool)] = &[
    ("Namespace", "v1", "namespaces", false),
    ("Service", "v1", "services", true),
    ("Secret", "v1", "secrets", true),
    ("ConfigMap", "v1", "configmaps", true),
    (
        "EndpointSlice",
        "discovery.k8s.io/v1",
        "endpointslices",
        true,
    ),
    (
        "GatewayClass",
        "gateway.networking.k8s.io/v1",
        "gatewayclasses",
        false,
    ),
    ("Gateway", "gateway.networking.k8s.io/v1", "gateways", true),
    (
        "HTTPRoute",
        "gateway.networking.k8s.io/v1",
        "httproutes",
        true,
    ),
    (
        "GRPCRoute",
        "gateway.networking.k8s.io/v1",
        "grpcroutes",
        true,
    ),
    (
        "ReferenceGrant",
        "gateway.networking.k8s.io/v1beta1",
        "referencegrants",
        true,
    ),
    (
        "BackendTLSPolicy",
        "gateway.networking.k8s.io/v1",
        "backendtlspolicies",
        true,
    ),
    // TLSRoute is not served: like a cluster with only the standard-channel CRDs of an
    // older release, so a client sees 404 for it.
];

/// One PATCH request, as received.
#[derive(Clone, Debug)]
pub struct PatchRecord {
    /// The object's kind.
    pub kind: String,
    /// Its namespace (empty when cluster-scoped).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The subresource (`status`), empty for the main resource.
    pub subresource: String,
    /// The `Content-Type`.
    pub content_type: String,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// The `force` query parameter.
    pub force: bool,
    /// The body, parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The answer's status code.
    pub code: u16,
}

/// One change, as a watch event.
#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    /// `apiVersion/plural`; empty for a bookmark (it goes to every watch).
    resource: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// By (resource, namespace, name).
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    /// Watches from a version below this get 410 Gone.
    oldest: u64,
    lists: HashMap<String, usize>,
    watches: HashMap<String, usize>,
    patches: Vec<PatchRecord>,
    /// Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
}

struct Shared {
    store: Mutex<Store>,
    changes: broadcast::Sender<Change>,
    /// Bumped to close the open watches of a resource (or of all: key "").
    cuts: watch::Sender<(u64, String)>,
}

/// The fake API server; stops when dropped.
pub struct FakeKubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeKubeApi {
    /// Starts serving on a free loopback port.
    pub async fn start() -> Self {
        let (changes, _) = broadcast::channel(4096);
        let (cuts, _) = watch::channel((0, String::new()));
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changes,
            cuts,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig (no authentication) pointing at this server; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{}\"}}
users:
- name: fake
  user: {{}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: default}}
current-context: fake
",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); returns its resourceVersion.
    pub fn apply(&self, object: Value) -> u64 {
        let (resource, namespace, name) = key_of(&object);
        let mut store = self.store();
        store.rv += 1;
        let rv = store.rv;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (resource.clone(), namespace, name);
        let kind = match store.objects.get(&key) {
            Some(old) => {
                object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] =
                    json!(if without_meta(old) == without_meta(&object) {
                        generation
                    } else {
                        generation + 1
                    });
                // The main resource does not write `status`.
                match old.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                "MODIFIED"
            }
            None => {
                object["metadata"]["uid"] = json!(format!("uid-{rv}"));
                object["metadata"]["generation"] = json!(1);
                "ADDED"
            }
        };
        store.objects.insert(key, object.clone());
        self.record(&mut store, resource, kind, object);
        rv
    }

    /// The stored object, if any (`namespace` empty for a cluster-scoped kind).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let (api_version, plural, _) = served(kind).unwrap();
        let key = (
            format!("{api_version}/{plural}"),
            namespace.to_string(),
            name.to_string(),
        );
        self.store().objects.get(&key).cloned()
    }

    /// Every PATCH received so far, in order.
    pub fn patches(&self) -> Vec<PatchRecord> {
        self.store().patches.clone()
    }

    /// The Events recorded so far (events.k8s.io/v1 objects, as last written).
    pub fn events(&self) -> Vec<Value> {
        self.store().events.values().cloned().collect()
    }

    /// Deletes an object (`DELETED`); false when there was none.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let (api_version, plural, _) = served(kind).unwrap();
        let resource = format!("{api_version}/{plural}");
        let mut store = self.store();
        let Some(mut object) =
            store
                .objects
                .remove(&(resource.clone(), namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        store.rv += 1;
        object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        self.record(&mut store, resource, "DELETED", object);
        true
    }

    /// Sends a `BOOKMARK` with the current version to every watch that allows them.
    pub fn bookmark(&self) {
        let store = self.store();
        let _ = self.shared.changes.send(Change {
            rv: store.rv,
            resource: String::new(),
            kind: "BOOKMARK",
            object: Value::Null,
        });
    }

    /// Forgets all history (etcd compaction): a watch from any version seen so far gets
    /// 410 Gone; a fresh list's version can be watched.
    pub fn expire_history(&self) {
        let mut store = self.store();
        // As on a live cluster, other writes (leases, events) moved the version on, and only
        // versions from the current one can still be watched.
        store.rv += 1;
        store.oldest = store.rv;
        store.history.clear();
    }

    /// Closes the open watch streams of `kind`, or of every kind with `None`.
    pub fn cut_watches(&self, kind: Option<&str>) {
        let resource = kind
            .map(|kind| {
                let (api_version, plural, _) = served(kind).unwrap();
                format!("{api_version}/{plural}")
            })
            .unwrap_or_default();
        self.shared.cuts.send_modify(|(generation, which)| {
            *generation += 1;
            *which = resource;
        });
    }

    /// How many LISTs of `kind` were served.
    pub fn lists(&self, kind: &str) -> usize {
        let (api_version, plural, _) = served(kind).unwrap();
        self.store()
            .lists
            .get(&format!("{api_version}/{plural}"))
            .copied()
            .unwrap_or(0)
    }

    /// How many WATCHes of `kind` were started.
    pub fn watches(&self, kind: &str) -> usize {
        let (api_version, plural, _) = served(kind).unwrap();
        self.store()
            .watches
            .get(&format!("{api_version}/{plural}"))
            .copied()
            .unwrap_or(0)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    fn record(&self, store: &mut Store, resource: String, kind: &'static str, object: Value) {
        let change = Change {
            rv: store.rv,
            resource,
            kind,
            object,
        };
        store.history.push(change.clone());
        // Sent under the lock so that a watch starting now sees each change exactly once:
        // in its backlog or live.
        let _ = self.shared.changes.send(change);
    }
}

/// An object without `metadata` and `status`: what `generation` follows.
fn without_meta(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    object
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn served(kind: &str) -> Option<(&'static str, &'static str, bool)> {
    SERVED
        .iter()
        .find(|(k, ..)| *k == kind)
        .map(|(_, api_version, plural, namespaced)| (*api_version, *plural, *namespaced))
}

fn key_of(object: &Value) -> (String, String, String) {
    let kind = object["kind"].as_str().expect("kind");
    let (api_version, plural, namespaced) =
        served(kind).unwrap_or_else(|| panic!("the fake API does not serve {kind}"));
    assert_eq!(object["apiVersion"].as_str(), Some(api_version), "{object}");
    let namespace = if namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .expect("metadata.namespace")
            .to_string()
    } else {
        String::new()
    };
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    (
        format!("{api_version}/{plural}"),
        namespace,
        name.to_string(),
    )
}

/// What a request path names: the resource (`apiVersion/plural`), its kind, the namespace it
/// is restricted to, and an object's name and subresource (`NAME`, `NAME/status`).
struct Target {
    resource: String,
    kind: &'static str,
    namespace: Option<String>,
    object: Option<(String, String)>,
}

fn parse_target(path: &str) -> Option<Target> {
    let trimmed = path.trim_start_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    // The collection is the longest prefix parse_path accepts; the rest names an object.
    for take in (2..=segments.len()).rev() {
        let prefix = segments[..take].join("/");
        if let Some((resource, kind, namespace)) = parse_path(&prefix) {
            let object = match &segments[take..] {
                [] => None,
                [name] => Some(((*name).to_string(), String::new())),
                [name, sub] => Some(((*name).to_string(), (*sub).to_string())),
                _ => return None,
            };
            return Some(Target {
                resource,
                kind,
                namespace,
                object,
            });
        }
    }
    None
}

fn parse_path(path: &str) -> Option<(String, &'static str, Option<String>)> {
    let rest = path.trim_start_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    let (api_version, tail) = match segments.as_slice() {
        ["api", version, tail @ ..] => ((*version).to_string(), tail),
        ["apis", group, version, tail @ ..] => (format!("{group}/{version}"), tail),
        _ => return None,
    };
    let (namespace, plural) = match tail {
        [plural] => (None, *plural),
        ["namespaces", namespace, plural] => (Some((*namespace).to_string()), *plural),
        _ => return None,
    };
    let (kind, ..) = SERVED
        .iter()
        .find(|(_, v, p, _)| *v == api_version && *p == plural)?;
    Some((format!("{api_version}/{plural}"), kind, namespace))
}

fn matches(object: &Value, namespace: Option<&str>, fields: &[(String, String)]) -> bool {
    if let Some(namespace) = namespace
        && object["metadata"]["namespace"].as_str() != Some(namespace)
    {
        return false;
    }
    fields.iter().all(|(path, value)| {
        let found = path
            .split('.')
            .try_fold(object, |v, segment| v.get(segment))
            .and_then(Value::as_str);
        found == Some(value.as_str())
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// `POST` or `PATCH` of an events.k8s.io/v1 Event; `None` when `path` is not an Event's.
async fn handle_event(shared: &Shared, request: Request) -> Result<Response, Request> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, name) = match segments.as_slice() {
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => ((*ns).to_string(), None),
        [
            "apis",
            "events.k8s.io",
            "v1",
            "namespaces",
            ns,
            "events",
            name,
        ] => ((*ns).to_string(), Some((*name).to_string())),
        _ => return Err(request),
    };
    let method = request.method().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let Ok(mut body) = serde_json::from_slice::<Value>(&body) else {
        return Ok(json_response(400, &status(400, "BadRequest", "not JSON")));
    };
    let mut store = shared.store.lock().unwrap_or_else(|e| e.into_inner());
    store.rv += 1;
    let rv = store.rv.to_string();
    match (method, name) {
        (http::Method::POST, None) => {
            let name = match body["metadata"]["name"].as_str() {
                Some(name) => name.to_string(),
                None => format!(
                    "{}{rv}",
                    body["metadata"]["generateName"]
                        .as_str()
                        .unwrap_or("event-")
                ),
            };
            body["metadata"]["name"] = json!(name);
            body["metadata"]["namespace"] = json!(namespace);
            body["metadata"]["resourceVersion"] = json!(rv);
            store.events.insert((namespace, name), body.clone());
            Ok(json_response(201, &body))
        }
        (http::Method::PATCH, Some(name)) => {
            let Some(event) = store.events.get_mut(&(namespace, name.clone())) else {
                return Ok(json_response(
                    404,
                    &status(404, "NotFound", &format!("events \"{name}\" not found")),
                ));
            };
            merge_patch(event, &body);
            event["metadata"]["resourceVersion"] = json!(rv);
            Ok(json_response(200, event))
        }
        _ => Ok(json_response(
            405,
            &status(
                405,
                "MethodNotAllowed",
                "the fake creates and patches events only",
            ),
        )),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let request = match handle_event(&shared, request).await {
        Ok(response) => return response,
        Err(request) => request,
    };
    let path = request.uri().path().to_string();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let Some(Target {
        resource,
        kind,
        namespace,
        object,
    }) = parse_target(&path)
    else {
        return json_response(
            404,
            &status(
                404,
                "NotFound",
                &format!("the server could not find the requested resource ({path})"),
            ),
        );
    };
    if let Some((name, subresource)) = object {
        if request.method() == http::Method::PATCH {
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let mut record = PatchRecord {
                kind: kind.to_string(),
                namespace: namespace.clone().unwrap_or_default(),
                name,
                subresource,
                content_type,
                field_manager: query.get("fieldManager").cloned(),
                force: query.get("force").map(String::as_str) == Some("true"),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                code: 0,
            };
            let (code, answer) = patch(&shared, &resource, &record);
            record.code = code;
            shared.store.lock().unwrap().patches.push(record);
            return json_response(code, &answer);
        }
        return json_response(
            405,
            &status(
                405,
                "MethodNotAllowed",
                "the fake serves PATCH of status only",
            ),
        );
    }
    if request.method() != http::Method::GET {
        return json_response(405, &status(405, "MethodNotAllowed", "read-only fake"));
    }
    let fields: Vec<(String, String)> = query
        .get("fieldSelector")
        .map(|selector| {
            selector
                .split(',')
                .filter_map(|term| term.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watching {
        let mut store = shared.store.lock().unwrap();
        *store.lists.entry(resource.clone()).or_default() += 1;
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((r, ..), object)| {
                *r == resource && matches(object, namespace.as_deref(), &fields)
            })
            .map(|(_, object)| {
                let mut item = object.clone();
                if let Some(map) = item.as_object_mut() {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect();
        let api_version = resource.rsplit_once('/').map_or("v1", |(v, _)| v);
        return json_response(
            200,
            &json!({
                "apiVersion": api_version,
                "kind": format!("{kind}List"),
                "metadata": {"resourceVersion": store.rv.to_string()},
                "items": items,
            }),
        );
    }

    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let line = |value: Value| Ok(Bytes::from(format!("{value}\n")));
    let api_version = resource
        .rsplit_once('/')
        .map_or("v1", |(v, _)| v)
        .to_string();
    {
        let mut store = shared.store.lock().unwrap();
        *store.watches.entry(resource.clone()).or_default() += 1;
        if from < store.oldest {
            let message = format!("too old resource version: {from} ({})", store.oldest);
            let _ = tx.try_send(line(
                json!({"type": "ERROR", "object": status(410, "Expired", &message)}),
            ));
            drop(tx);
            return stream_response(rx);
        }
        let backlog: Vec<Change> = store
            .history
            .iter()
            .filter(|c| {
                c.rv > from
                    && c.resource == resource
                    && matches(&c.object, namespace.as_deref(), &fields)
            })
            .cloned()
            .collect();
        // Subscribed under the lock: nothing between the backlog and the live changes is
        // lost or repeated.
        let mut live = shared.changes.subscribe();
        let mut cuts = shared.cuts.subscribe();
        cuts.mark_unchanged();
        let resource = resource.clone();
        tokio::spawn(async move {
            for change in backlog {
                if tx
                    .send(line(json!({"type": change.kind, "object": change.object})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                tokio::select! {
                    changed = cuts.changed() => {
                        let Ok(()) = changed else { return };
                        let which = cuts.borrow_and_update().1.clone();
                        if which.is_empty() || which == resource {
                            return;
                        }
                    }
                    change = live.recv() => {
                        let Ok(change) = change else { return };
                        let event = if change.kind == "BOOKMARK" {
                            if !bookmarks { continue; }
                            json!({"type": "BOOKMARK", "object": {
                                "apiVersion": api_version, "kind": kind,
                                "metadata": {"resourceVersion": change.rv.to_string()}
                            }})
                        } else if change.resource == resource
                            && matches(&change.object, namespace.as_deref(), &fields)
                        {
                            json!({"type": change.kind, "object": change.object})
                        } else {
                            continue;
                        };
                        if tx.send(line(event)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    stream_response(rx)
}

/// A PATCH of an object's `status`: the answer's code and body.
fn patch(shared: &Shared, resource: &str, request: &PatchRecord) -> (u16, Value) {
    if request.subresource != "status" {
        return (
            405,
            status(
                405,
                "MethodNotAllowed",
                "the fake serves PATCH of status only",
            ),
        );
    }
    let mut store = shared.store.lock().unwrap();
    let key = (
        resource.to_string(),
        request.namespace.clone(),
        request.name.clone(),
    );
    let Some(old) = store.objects.get(&key).cloned() else {
        let message = format!("{} \"{}\" not found", request.kind, request.name);
        return (404, status(404, "NotFound", &message));
    };
    let new_status = match request.content_type.as_str() {
        "application/apply-patch+yaml" => {
            if request.field_manager.is_none() {
                let message = "PATCH with apply requires a fieldManager";
                return (400, status(400, "BadRequest", message));
            }
            if request.body["kind"].as_str() != Some(request.kind.as_str())
                || request.body["metadata"]["name"].as_str() != Some(request.name.as_str())
            {
                let message = "the applied object's kind and name must be the target's";
                return (400, status(400, "BadRequest", message));
            }
            request.body.get("status").cloned()
        }
        "application/merge-patch+json" => {
            let precondition = &request.body["metadata"]["resourceVersion"];
            if !precondition.is_null() && *precondition != old["metadata"]["resourceVersion"] {
                let message = format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    request.kind, request.name
                );
                return (409, status(409, "Conflict", &message));
            }
            let mut merged = old.get("status").cloned().unwrap_or(Value::Null);
            if let Some(patch) = request.body.get("status") {
                merge_patch(&mut merged, patch);
            }
            (!merged.is_null()).then_some(merged)
        }
        other => {
            let message = format!("content type {other:?} is not supported by the fake");
            return (415, status(415, "UnsupportedMediaType", &message));
        }
    };
    if old.get("status") == new_status.as_ref() {
        return (200, old);
    }
    let mut object = old;
    match new_status {
        Some(new_status) => object["status"] = new_status,
        None => {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
    }
    store.rv += 1;
    object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
    store.objects.insert(key, object.clone());
    let change = Change {
        rv: store.rv,
        resource: resource.to_string(),
        kind: "MODIFIED",
        object: object.clone(),
    };
    store.history.push(change.clone());
    let _ = shared.changes.send(change);
    (200, object)
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
