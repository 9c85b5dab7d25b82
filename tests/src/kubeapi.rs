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
//! - a resource it does not serve answers `404` with a `Status` body (a missing CRD).
//!
//! Not modelled: authentication, pagination (`limit` is ignored: everything is one page),
//! label selectors, and an object that stops matching a field selector on update (the real
//! server sends `DELETED` then).

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
        let kind = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            object["metadata"]["uid"] = json!(format!("uid-{rv}"));
            "ADDED"
        };
        if kind == "MODIFIED" {
            object["metadata"]["uid"] = store.objects[&key]["metadata"]["uid"].clone();
        }
        store.objects.insert(key, object.clone());
        self.record(&mut store, resource, kind, object);
        rv
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

/// What a request path names: the resource (`apiVersion/plural`), its kind and the namespace
/// it is restricted to.
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

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let Some((resource, kind, namespace)) = parse_path(&path) else {
        return json_response(
            404,
            &status(
                404,
                "NotFound",
                &format!("the server could not find the requested resource ({path})"),
            ),
        );
    };
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
