//! The Kubernetes source: list+watch of every kind the agent programs from, through the API
//! server (kube-rs `watcher` over `DynamicObject`, one watcher per kind, with kube's default
//! backoff).
//!
//! Each object is one [`SourceUnit`] with id `Kind/namespace/name` (`Kind/name` when
//! cluster-scoped), parsed with `meridian_gwapi::parse_value` exactly as a document of the
//! directory source is. The per-kind relists are merged by [`store`] so that one kind's
//! relist never touches another kind's objects.
//!
//! Versions: each kind is watched at the first version of its list that the API server
//! serves (a 404 on list moves to the next one; a kind none of whose versions is served, a
//! CRD that is not installed, counts as listed and empty and is tried again every
//! [`ABSENT_RETRY`]). Secrets are watched with the field selector `type=kubernetes.io/tls`:
//! certificate references are the only Secrets Meridian reads, and the agent then never
//! holds service-account tokens or other credentials (a certificate reference to a Secret of
//! another type reads as "not found").
//!
//! With a status feed (`KubeSource::with_status_feed`), the metadata and `status` of the
//! kinds the agent writes status to go to the status writer (`kube_status`) as they
//! are watched: it compares what it would write with what the objects carry, and carries
//! over `lastTransitionTime`s, without reading the API server itself.

mod store;

#[cfg(test)]
mod tests;

use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::{Event, Source, SourceUpdate};
use crate::kube_status::{ObservedObject, StatusFeed};
use crate::metrics::Metrics;
use store::{Store, Watched};

/// How long to wait before listing a kind again whose every version answered 404.
const ABSENT_RETRY: Duration = Duration::from_secs(30);

/// One kind the agent watches.
#[derive(Clone, Copy, Debug)]
pub struct WatchedKind {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Versions to try, preferred first (all accepted by `meridian_gwapi`).
    pub versions: &'static [&'static str],
    /// The kind.
    pub kind: &'static str,
    /// The resource name in URLs.
    pub plural: &'static str,
    /// Whether objects live in namespaces (and `--namespace` restricts the watch).
    pub namespaced: bool,
    /// A field selector for the list and watch.
    pub fields: Option<&'static str>,
}

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Everything the agent programs gateways from.
pub const KINDS: &[WatchedKind] = &[
    WatchedKind {
        group: GATEWAY_GROUP,
        versions: &["v1"],
        kind: "GatewayClass",
        plural: "gatewayclasses",
        namespaced: false,
        fields: None,
    },
    WatchedKind {
        group: GATEWAY_GROUP,
        versions: &["v1"],
        kind: "Gateway",
        plural: "gateways",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: GATEWAY_GROUP,
        versions: &["v1"],
        kind: "HTTPRoute",
        plural: "httproutes",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: GATEWAY_GROUP,
        versions: &["v1"],
        kind: "GRPCRoute",
        plural: "grpcroutes",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: GATEWAY_GROUP,
        // Standard channel v1 since Gateway API 1.5; experimental channel before that.
        versions: &["v1", "v1alpha3", "v1alpha2"],
        kind: "TLSRoute",
        plural: "tlsroutes",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: GATEWAY_GROUP,
        versions: &["v1beta1", "v1"],
        kind: "ReferenceGrant",
        plural: "referencegrants",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: GATEWAY_GROUP,
        versions: &["v1", "v1alpha3"],
        kind: "BackendTLSPolicy",
        plural: "backendtlspolicies",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: "",
        versions: &["v1"],
        kind: "Service",
        plural: "services",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: "discovery.k8s.io",
        versions: &["v1"],
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: "",
        versions: &["v1"],
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        fields: Some("type=kubernetes.io/tls"),
    },
    WatchedKind {
        group: "",
        versions: &["v1"],
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        fields: None,
    },
    WatchedKind {
        group: "",
        versions: &["v1"],
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        fields: None,
    },
];

/// Gateway API and core objects from the Kubernetes API server.
pub struct KubeSource {
    client: kube::Client,
    namespace: Option<String>,
    metrics: Option<Metrics>,
    status_feed: Option<StatusFeed>,
}

// === impl KubeSource ===

impl KubeSource {
    /// A source over `client`; `namespace` restricts the namespaced kinds to one namespace
    /// (GatewayClasses and Namespaces are cluster-scoped and always watched cluster-wide).
    pub fn new(client: kube::Client, namespace: Option<String>) -> Self {
        Self {
            client,
            namespace,
            metrics: None,
            status_feed: None,
        }
    }

    /// Sends the watched metadata and `status` of the kinds the agent writes status to
    /// ([`crate::kube_status::STATUS_KINDS`]) to `feed`.
    pub(crate) fn with_status_feed(mut self, feed: StatusFeed) -> Self {
        self.status_feed = Some(feed);
        self
    }

    /// Counts reads in the agent's metrics.
    pub(crate) fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl Source for KubeSource {
    fn location(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("kubernetes (namespace {namespace})"),
            None => "kubernetes".to_string(),
        }
    }

    async fn run(self, updates: mpsc::Sender<SourceUpdate>, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel(256);
        // Dropping the set when `run` returns aborts the watchers.
        let mut watchers = JoinSet::new();
        for kind in KINDS {
            watchers.spawn(watch_kind(
                self.client.clone(),
                *kind,
                self.namespace.clone(),
                tx.clone(),
            ));
        }
        drop(tx);
        let mut store = Store::new(KINDS.iter().map(|k| k.kind), self.metrics.clone());
        loop {
            let (kind, watched) = tokio::select! {
                received = rx.recv() => match received {
                    Some(received) => received,
                    None => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            if let (Some(feed), Watched::Event(event)) = (&self.status_feed, &watched)
                && crate::kube_status::STATUS_KINDS.contains(&kind)
            {
                // Unbounded: the writer only files these away, and the watch never waits
                // for it (nor, through it, for the API server).
                let _ = feed.send((kind, observed_event(event)));
            }
            for update in store.on_watched(kind, watched) {
                if updates.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs the watcher of one kind, forever; reports go to `tx` tagged with the kind.
async fn watch_kind(
    client: kube::Client,
    kind: WatchedKind,
    namespace: Option<String>,
    tx: mpsc::Sender<(&'static str, Watched)>,
) {
    let send = |watched| {
        let tx = tx.clone();
        async move { tx.send((kind.kind, watched)).await.is_ok() }
    };
    loop {
        for version in kind.versions {
            let resource = ApiResource {
                group: kind.group.to_string(),
                version: (*version).to_string(),
                api_version: if kind.group.is_empty() {
                    (*version).to_string()
                } else {
                    format!("{}/{version}", kind.group)
                },
                kind: kind.kind.to_string(),
                plural: kind.plural.to_string(),
            };
            let api: Api<DynamicObject> = match (&namespace, kind.namespaced) {
                (Some(namespace), true) => {
                    Api::namespaced_with(client.clone(), namespace, &resource)
                }
                _ => Api::all_with(client.clone(), &resource),
            };
            let mut config = watcher::Config::default();
            if let Some(fields) = kind.fields {
                config = config.fields(fields);
            }
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(item) = stream.next().await {
                let watched = match item {
                    Ok(event) => Watched::Event(json_event(event, &resource)),
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                        if status.code == 404 =>
                    {
                        tracing::info!(kind = kind.kind, api_version = %resource.api_version, "not served by the API server");
                        break;
                    }
                    Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                        // Normal operation: the watcher relists at once (after its backoff).
                        tracing::info!(
                            kind = kind.kind,
                            "watch version expired (410 Gone); relisting"
                        );
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(kind = kind.kind, api_version = %resource.api_version, %error, "watch failed; retrying with backoff");
                        Watched::Error(error.to_string())
                    }
                };
                if !send(watched).await {
                    return;
                }
            }
        }
        // No version is served: the kind has no objects until its CRD appears.
        if !send(Watched::Absent).await {
            return;
        }
        tokio::time::sleep(ABSENT_RETRY).await;
    }
}

/// The status writer's view of a watcher event.
fn observed_event(event: &Event<serde_json::Value>) -> Event<ObservedObject> {
    match event {
        Event::Init => Event::Init,
        Event::InitApply(value) => Event::InitApply(ObservedObject::from_json(value)),
        Event::InitDone => Event::InitDone,
        Event::Apply(value) => Event::Apply(ObservedObject::from_json(value)),
        Event::Delete(value) => Event::Delete(ObservedObject::from_json(value)),
    }
}

/// A watcher event with its objects as JSON, `apiVersion` and `kind` filled in (list items
/// come without them).
fn json_event(
    event: watcher::Event<DynamicObject>,
    resource: &ApiResource,
) -> Event<serde_json::Value> {
    let json = |object: DynamicObject| {
        let mut value = serde_json::to_value(&object).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert(
                "apiVersion".to_string(),
                serde_json::Value::String(resource.api_version.clone()),
            );
            map.insert(
                "kind".to_string(),
                serde_json::Value::String(resource.kind.clone()),
            );
        }
        value
    };
    match event {
        watcher::Event::Init => Event::Init,
        watcher::Event::InitApply(object) => Event::InitApply(json(object)),
        watcher::Event::InitDone => Event::InitDone,
        watcher::Event::Apply(object) => Event::Apply(json(object)),
        watcher::Event::Delete(object) => Event::Delete(json(object)),
    }
}
