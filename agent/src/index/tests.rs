//! Tests for the index task, driven through its channels: source events, SharedConfig, probe
//! results and subscriptions in; served configs, health view and status out.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::model::route::{
    BackendRef, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, ParentRef, PathMatch,
    Resolution, Timeouts,
};
use tokio::sync::{mpsc, watch};

use super::*;

const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: infra}
spec:
  gatewayClassName: meridian
  listeners:
    - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"#;

const BACKEND: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints:
  - {addresses: ["10.0.0.1"], conditions: {ready: true}}
  - {addresses: ["10.0.0.2"], conditions: {ready: true}}
"#;

fn route_yaml(name: &str, host: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{{name: public, namespace: infra}}]\n  hostnames: [{host}]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n"
    )
}

fn unit(id: &str, yaml: &str) -> SourceUnit {
    let (objects, problems) = meridian_gwapi::parse_documents(yaml, id);
    assert!(problems.is_empty(), "{problems:?}");
    SourceUnit {
        id: id.to_string(),
        objects: Arc::new(objects),
    }
}

struct Harness {
    handle: IndexHandle,
    outputs: IndexOutputs,
    source: mpsc::Sender<SourceUpdate>,
    probes: mpsc::Sender<ProbeResult>,
    _shutdown: watch::Sender<bool>,
    marker: u32,
}

fn gateway_key() -> ObjectKey {
    ObjectKey::new("infra", "public").unwrap()
}

impl Harness {
    fn new() -> Self {
        let (source, source_rx) = mpsc::channel(16);
        let (probes, probes_rx) = mpsc::channel(16);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let parts = IndexParts {
            cluster: ClusterName::new("test").unwrap(),
            standalone: true,
            location: "test".into(),
            probes: ProbeConfig::default(),
            metrics: Metrics::new(&mut prometheus_client::registry::Registry::default()),
            initial_shared: None,
        };
        let (handle, outputs, _task) = spawn(parts, source_rx, probes_rx, shutdown_rx);
        Self {
            handle,
            outputs,
            source,
            probes,
            _shutdown: shutdown,
            marker: 0,
        }
    }

    async fn send(&self, event: Event<SourceUnit>) {
        self.source.send(SourceUpdate::Event(event)).await.unwrap();
    }

    async fn initial(&mut self, units: Vec<SourceUnit>) -> Arc<GatewayConfig> {
        self.send(Event::Init).await;
        for unit in units {
            self.send(Event::InitApply(unit)).await;
        }
        self.send(Event::InitDone).await;
        self.next_config().await
    }

    /// Waits until everything sent to the source channel so far is processed: a marker
    /// problem list goes through the same channel and shows up on the status output.
    async fn source_barrier(&mut self) {
        self.marker += 1;
        let marker = format!("marker {}", self.marker);
        let problem = meridian_gwapi::Origin::new(marker.clone(), None).problem("barrier");
        self.source
            .send(SourceUpdate::Problems(vec![problem]))
            .await
            .unwrap();
        let mut status = self.outputs.status.clone();
        tokio::time::timeout(
            Duration::from_secs(5),
            status.wait_for(|s| s.source.problems.iter().any(|p| p.source == marker)),
        )
        .await
        .unwrap()
        .unwrap();
    }

    /// The served config of the Gateway after the next change.
    async fn next_config(&mut self) -> Arc<GatewayConfig> {
        tokio::time::timeout(Duration::from_secs(5), self.outputs.configs.changed())
            .await
            .unwrap()
            .unwrap();
        self.outputs.configs.borrow_and_update()[&gateway_key()].clone()
    }

    fn configs_changed(&self) -> bool {
        self.outputs.configs.has_changed().unwrap()
    }

    async fn probe(&self, target: ProbeTarget, ok: bool) {
        let result = ProbeResult {
            target,
            ok,
            detail: if ok { "ok" } else { "refused" }.to_string(),
        };
        self.probes.send(result).await.unwrap();
    }
}

fn routes(config: &GatewayConfig) -> Vec<String> {
    config
        .http_routes
        .iter()
        .map(|attached| attached.route.key.to_string())
        .collect()
}

fn readiness(config: &GatewayConfig) -> Vec<(String, bool)> {
    config
        .backends
        .iter()
        .flat_map(|b| b.endpoints.iter().map(|e| (e.addr.to_string(), e.ready)))
        .collect()
}

#[tokio::test]
async fn versions_change_only_when_a_config_changes() {
    let mut h = Harness::new();
    assert!(!*h.outputs.ready.borrow());
    let first = h
        .initial(vec![
            unit("gateway.yaml", GATEWAY),
            unit("backend.yaml", BACKEND),
            unit("route.yaml", &route_yaml("site", "www.example.com")),
        ])
        .await;
    assert!(*h.outputs.ready.borrow());
    assert_eq!(routes(&first), ["app/site"]);

    // The same content again (a touched file, a watcher resync): no new version.
    h.send(Event::Apply(unit(
        "route.yaml",
        &route_yaml("site", "www.example.com"),
    )))
    .await;
    h.source_barrier().await;
    assert!(!h.configs_changed());

    // A real change: one new version.
    h.send(Event::Apply(unit(
        "route2.yaml",
        &route_yaml("shop", "shop.example.com"),
    )))
    .await;
    let second = h.next_config().await;
    assert!(second.version > first.version);
    assert_eq!(routes(&second), ["app/shop", "app/site"]);

    // Deleting a unit removes its objects.
    h.send(Event::Delete(unit("route2.yaml", ""))).await;
    let third = h.next_config().await;
    assert!(third.version > second.version);
    assert_eq!(routes(&third), ["app/site"]);
}

#[tokio::test]
async fn a_relist_replaces_the_whole_store_on_init_done() {
    let mut h = Harness::new();
    h.initial(vec![
        unit("gateway.yaml", GATEWAY),
        unit("backend.yaml", BACKEND),
        unit("route.yaml", &route_yaml("site", "www.example.com")),
    ])
    .await;

    // Nothing changes while the relist is in progress...
    h.send(Event::Init).await;
    h.send(Event::InitApply(unit("gateway.yaml", GATEWAY)))
        .await;
    h.source_barrier().await;
    assert!(!h.configs_changed());
    // ...and the units not listed again are gone once it is done.
    h.send(Event::InitDone).await;
    let config = h.next_config().await;
    assert!(routes(&config).is_empty());
    assert!(config.backends.is_empty());
}

#[tokio::test]
async fn duplicate_objects_keep_the_first_unit_and_are_reported() {
    let mut h = Harness::new();
    let config = h
        .initial(vec![
            unit("a.yaml", GATEWAY),
            unit(
                "b.yaml",
                &format!("{BACKEND}---\n{}", route_yaml("site", "a.example.com")),
            ),
            unit("c.yaml", &route_yaml("site", "c.example.com")),
        ])
        .await;
    assert_eq!(config.http_routes[0].route.hostnames, ["a.example.com"]);
    let status = h.outputs.status.borrow().clone();
    let problem = &status.source.problems[0];
    assert_eq!(problem.source, "c.yaml");
    assert!(problem.message.contains("duplicate"), "{problem:?}");
}

#[tokio::test]
async fn backend_probes_overlay_endpoint_readiness() {
    let mut h = Harness::new();
    let first = h
        .initial(vec![
            unit("gateway.yaml", GATEWAY),
            unit("backend.yaml", BACKEND),
            unit("route.yaml", &route_yaml("site", "www.example.com")),
        ])
        .await;
    assert_eq!(
        readiness(&first),
        [
            ("10.0.0.1:9000".to_string(), true),
            ("10.0.0.2:9000".to_string(), true)
        ]
    );
    let targets = h.outputs.targets.borrow().clone();
    assert_eq!(targets.backends.len(), 2);

    let dead = ProbeTarget::Backend("10.0.0.2:9000".parse().unwrap());
    h.probe(dead.clone(), false).await;
    h.probe(dead.clone(), false).await;
    let second = h.next_config().await;
    assert_eq!(
        readiness(&second),
        [
            ("10.0.0.1:9000".to_string(), true),
            ("10.0.0.2:9000".to_string(), false)
        ]
    );
    // Still failing: nothing new to send. (Wait until the index has seen the third
    // failure: the status counts it.)
    h.probe(dead.clone(), false).await;
    let mut status = h.outputs.status.clone();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| {
            s.backends
                .iter()
                .any(|b| b.addr == "10.0.0.2:9000" && b.probe.consecutive_fail == 3)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!h.configs_changed());

    // Hostname health counts what the gateway will use.
    let health = h.outputs.health.borrow().clone();
    let www = health
        .hostnames
        .iter()
        .find(|x| x.hostname == "www.example.com")
        .unwrap();
    assert_eq!((www.ready_endpoints, www.total_endpoints), (1, 2));
}

#[tokio::test]
async fn a_hostname_losing_or_regaining_its_last_ready_backend_moves_the_readiness_epoch() {
    let mut h = Harness::new();
    h.initial(vec![
        unit("gateway.yaml", GATEWAY),
        unit("backend.yaml", BACKEND),
        unit("route.yaml", &route_yaml("site", "www.example.com")),
    ])
    .await;
    let mut health = h.outputs.health.clone();
    let ready = |view: &HealthView| {
        view.hostnames
            .iter()
            .find(|x| x.hostname == "www.example.com")
            .map(|x| x.ready_endpoints)
    };
    let wait = |health: &mut watch::Receiver<Arc<HealthView>>, n: u32| {
        let mut health = health.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                health.wait_for(|v| ready(v) == Some(n)),
            )
            .await
            .unwrap()
            .unwrap()
            .clone()
        }
    };
    let start = wait(&mut health, 2).await.readiness_epoch;
    let backend = |addr: &str| ProbeTarget::Backend(addr.parse().unwrap());

    // 2 -> 1 ready: still served, no immediate report.
    for _ in 0..2 {
        h.probe(backend("10.0.0.2:9000"), false).await;
    }
    assert_eq!(wait(&mut health, 1).await.readiness_epoch, start);
    // 1 -> 0: the hostname cannot be served any more, report at once.
    for _ in 0..2 {
        h.probe(backend("10.0.0.1:9000"), false).await;
    }
    assert_eq!(wait(&mut health, 0).await.readiness_epoch, start + 1);
    // 0 -> 1: served again, report at once.
    for _ in 0..2 {
        h.probe(backend("10.0.0.1:9000"), true).await;
    }
    let view = wait(&mut health, 1).await;
    assert_eq!(view.readiness_epoch, start + 2);
    assert!(view.readiness_changed_at.is_some());
    // 1 -> 2: no new epoch.
    for _ in 0..2 {
        h.probe(backend("10.0.0.2:9000"), true).await;
    }
    assert_eq!(wait(&mut health, 2).await.readiness_epoch, start + 2);
}

#[tokio::test]
async fn shared_routes_are_programmed_and_an_identical_snapshot_changes_nothing() {
    let mut h = Harness::new();
    let first = h
        .initial(vec![
            unit("gateway.yaml", GATEWAY),
            unit("backend.yaml", BACKEND),
        ])
        .await;
    assert!(routes(&first).is_empty());

    let shared = Arc::new(SharedConfig {
        version: 3,
        http_routes: vec![shared_route()],
        certificates: vec![],
    });
    h.handle.apply_shared(shared.clone()).await.unwrap();
    let second = h.next_config().await;
    assert_eq!(routes(&second), ["app/global"]);
    assert_eq!(h.outputs.status.borrow().shared.version, 3);

    h.handle
        .apply_shared(Arc::new(SharedConfig::clone(&shared)))
        .await
        .unwrap();
    assert!(!h.configs_changed());
}

#[tokio::test]
async fn the_health_view_carries_each_shared_routes_conditions_for_the_hub() {
    use meridian_proto::model::ConditionState;
    let mut h = Harness::new();
    // Only the Gateway: the shared route's Service does not exist in this cluster.
    h.initial(vec![unit("gateway.yaml", GATEWAY)]).await;
    let mut elsewhere = shared_route();
    elsewhere.key = ObjectKey::new("app", "elsewhere").unwrap();
    elsewhere.parent_refs[0].name = "not-here".into();
    h.handle
        .apply_shared(Arc::new(SharedConfig {
            version: 7,
            http_routes: vec![elsewhere, shared_route()],
            certificates: vec![],
        }))
        .await
        .unwrap();
    let mut health = h.outputs.health.clone();
    let view = tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|v| v.shared.as_ref().is_some_and(|r| r.shared_version == 7)),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let routes = view.shared.as_ref().unwrap();
    let keys: Vec<String> = routes.routes.iter().map(|r| r.route.to_string()).collect();
    assert_eq!(
        keys,
        ["app/elsewhere", "app/global"],
        "every shared route, in key order"
    );
    assert!(
        routes.routes[0].parents.is_empty(),
        "a route naming no Gateway of this cluster has no parents"
    );
    let parent = &routes.routes[1].parents[0];
    assert_eq!(parent.gateway, gateway_key());
    let condition = |type_: &str| {
        parent
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {parent:?}"))
            .clone()
    };
    assert_eq!(condition("Accepted").status, ConditionState::True);
    let resolved = condition("ResolvedRefs");
    assert_eq!(resolved.status, ConditionState::False);
    assert_eq!(resolved.reason, "BackendNotFound");
    assert!(resolved.message.contains("web"), "{resolved:?}");

    // Once the Service exists, the same route resolves.
    h.send(Event::Apply(unit("backend.yaml", BACKEND))).await;
    let view = tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|v| {
            v.shared.as_ref().is_some_and(|r| {
                r.routes[1].parents[0]
                    .conditions
                    .iter()
                    .all(|c| c.status == ConditionState::True)
            })
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(view.shared.as_ref().unwrap().routes.len(), 2);
}

fn shared_route() -> HttpRoute {
    HttpRoute {
        key: ObjectKey::new("app", "global").unwrap(),
        created_unix_ms: 0,
        parent_refs: vec![ParentRef {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
            name: "public".into(),
            section_name: None,
            port: None,
        }],
        hostnames: vec!["global.example.com".into()],
        rules: vec![HttpRouteRule {
            name: None,
            matches: vec![HttpRouteMatch {
                path: PathMatch::Prefix("/".into()),
                headers: vec![],
                query_params: vec![],
                method: None,
            }],
            filters: vec![],
            backend_refs: vec![HttpBackendRef {
                backend_ref: BackendRef {
                    group: String::new(),
                    kind: "Service".into(),
                    namespace: "app".into(),
                    name: "web".into(),
                    port: Some(80),
                    resolution: Resolution::Unresolved,
                },
                weight: 1,
                filters: vec![],
            }],
            timeouts: Timeouts::default(),
            retry: None,
            session_persistence: None,
        }],
    }
}

#[tokio::test]
async fn gateway_readiness_follows_probes_and_the_subscription() {
    let mut h = Harness::new();
    h.initial(vec![unit("gateway.yaml", GATEWAY)]).await;
    let info = SessionInfo {
        gateway: gateway_key(),
        instance: "gw-1".into(),
        admin_address: "127.0.0.1:1".into(),
        have_version: 0,
        peer: None,
    };
    let session = h.handle.open_session(info.clone()).await.unwrap();
    let view = h.outputs.health.borrow().clone();
    assert_eq!(view.gateways[0].name, "gw-1");
    assert!(!view.gateways[0].ready, "not ready before a probe passes");
    assert_eq!(view.gateways[0].detail, "not probed yet");
    assert_eq!(
        h.outputs
            .targets
            .borrow()
            .gateways
            .get(&session)
            .map(String::as_str),
        Some("127.0.0.1:1")
    );

    let epoch_before = view.readiness_epoch;
    h.probe(ProbeTarget::Gateway { session }, true).await;
    let mut health = h.outputs.health.clone();
    let view = tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|v| v.gateways[0].ready),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(view.readiness_epoch, epoch_before + 1);

    // The stream closes: down at once, with the reason, and no longer probed.
    h.handle
        .close_session(session, "subscription broke".into())
        .await
        .unwrap();
    let view = tokio::time::timeout(
        Duration::from_secs(5),
        health.wait_for(|v| !v.gateways[0].ready),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(view.readiness_epoch, epoch_before + 2);
    assert_eq!(view.gateways[0].detail, "subscription broke");
    assert!(h.outputs.targets.borrow().gateways.is_empty());

    // The same instance subscribing again replaces the closed entry.
    let again = h.handle.open_session(info).await.unwrap();
    assert_ne!(again, session);
    let view = h.outputs.health.borrow().clone();
    assert_eq!(view.gateways.len(), 1);
}

#[tokio::test]
async fn hub_certificates_serve_https_listeners_and_win_over_local_secrets() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: public, namespace: infra}\nspec:\n  gatewayClassName: meridian\n  listeners:\n    - {name: https, port: 8443, protocol: HTTPS, hostname: www.example.com, tls: {certificateRefs: [{name: www}]}}\n";
    let mut h = Harness::new();
    let first = h.initial(vec![unit("gateway.yaml", gateway)]).await;
    // Without the certificate the listener is not programmed.
    assert!(first.listeners.is_empty(), "{first:?}");

    let generated =
        rcgen::generate_simple_self_signed(vec!["www.example.com".to_string()]).unwrap();
    let certificate = meridian_proto::model::gateway::TlsCertificate {
        key: ObjectKey::new("infra", "www").unwrap(),
        cert_chain_pem: generated.cert.pem(),
        private_key_pem: generated.signing_key.serialize_pem(),
    };
    let shared = SharedConfig {
        version: 4,
        http_routes: vec![],
        certificates: vec![certificate.clone()],
    };
    h.handle.apply_shared(Arc::new(shared)).await.unwrap();
    let second = h.next_config().await;
    let tls = second.listeners[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates[0].cert_chain_pem,
        certificate.cert_chain_pem
    );
    // The hub learns which listener serves its certificate (so it refuses to delete it).
    let health = h.outputs.health.borrow().clone();
    let uses = &health.shared.as_ref().unwrap().certificates;
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(
        (
            &uses[0].certificate,
            &uses[0].gateway,
            uses[0].listener.as_str()
        ),
        (&certificate.key, &gateway_key(), "https")
    );

    // A local Secret with the same key is reported as a duplicate; the hub's stays in use.
    let local = "apiVersion: v1\nkind: Secret\nmetadata: {name: www, namespace: infra}\ntype: kubernetes.io/tls\nstringData: {tls.crt: local-cert, tls.key: local-key}\n";
    h.send(Event::Apply(unit("secret.yaml", local))).await;
    h.source_barrier().await;
    assert!(!h.configs_changed());
    let status = h.outputs.status.borrow().clone();
    assert!(
        status
            .source
            .problems
            .iter()
            .any(|p| p.source == "secret.yaml" && p.message.contains("hub certificate infra/www")),
        "{:?}",
        status.source.problems
    );
}
