//! Test support for the agent's integration tests: YAML fixtures, a gateway double that speaks
//! the real `ConfigDiscovery` protocol (and serves a real `/ready`), a hub double implementing
//! the real `Hub` gRPC service, and HTTP/polling helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use meridian_agent::{AgentConfig, AgentHandle};
use meridian_proto::model::ClusterName;
use meridian_proto::pb;
use meridian_proto::pb::config_discovery_client::ConfigDiscoveryClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

/// Generous limit for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

// === YAML fixtures ===

/// The Gateway every fixture uses: `infra/public`, one HTTP listener on 127.0.0.1:18080.
pub const GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: public
  namespace: infra
spec:
  gatewayClassName: meridian
  addresses:
    - type: IPAddress
      value: "127.0.0.1"
  listeners:
    - name: http
      port: 18080
      protocol: HTTP
      allowedRoutes:
        namespaces:
          from: All
"#;

/// A Service `app/web:80` with one EndpointSlice listing `endpoints` (all ready).
pub fn backend_yaml(endpoints: &[SocketAddr]) -> String {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: app\nspec:\n  ports:\n    - name: http\n      port: 80\n",
    );
    // EndpointSlice ports are per slice, so one slice per distinct port.
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for endpoint in endpoints {
        by_port
            .entry(endpoint.port())
            .or_default()
            .push(endpoint.ip().to_string());
    }
    for (n, (port, ips)) in by_port.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-{n}\n  namespace: app\n  labels:\n    kubernetes.io/service-name: web\naddressType: IPv4\nports:\n  - name: http\n    port: {port}\nendpoints:\n"
        ));
        for ip in ips {
            yaml.push_str(&format!(
                "  - addresses: [\"{ip}\"]\n    conditions:\n      ready: true\n"
            ));
        }
    }
    yaml
}

/// An HTTPRoute `app/<name>` for `hostname` to `app/web:80`.
pub fn route_yaml(name: &str, hostname: &str) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: app
spec:
  parentRefs:
    - name: public
      namespace: infra
  hostnames: ["{hostname}"]
  rules:
    - backendRefs:
        - name: web
          port: 80
"#
    )
}

/// A config directory with the Gateway, the backend and one route.
pub fn config_dir(endpoints: &[SocketAddr]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "gateway.yaml", GATEWAY);
    write(dir.path(), "backend.yaml", &backend_yaml(endpoints));
    write(
        dir.path(),
        "route.yaml",
        &route_yaml("site", "www.example.com"),
    );
    dir
}

/// Writes a file atomically (temporary file + rename), as editors and ConfigMaps do.
pub fn write(dir: &Path, name: &str, text: &str) {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, dir.join(name)).unwrap();
}

/// A standalone agent config over `dir` with fast polling.
pub fn agent_config(dir: &Path) -> AgentConfig {
    let mut config = AgentConfig::new(ClusterName::new("test-cluster").unwrap(), dir);
    config.poll_interval = Duration::from_millis(50);
    config
}

/// Starts an agent and waits until its admin `/ready` answers 200.
pub async fn start_agent(config: AgentConfig) -> AgentHandle {
    let agent = meridian_agent::spawn(config, meridian_agent::Registry::default())
        .await
        .unwrap();
    let admin = agent.admin_addr();
    wait_for("agent /ready", SOON, || async move {
        http_get(admin, "/ready").await.0 == 200
    })
    .await;
    agent
}

// === polling and HTTP ===

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET http://addr/path`: (status, body). Status 0 when the connection fails.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        _ => (0, String::new()),
    }
}

/// The agent's `/status` as JSON.
pub async fn status(agent: &AgentHandle) -> serde_json::Value {
    let (code, body) = http_get(agent.admin_addr(), "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

// === gateway double ===

/// A gateway as the agent sees it: a `ConfigDiscovery` subscription plus an admin server
/// whose `/ready` answers 200 while `ready` is true.
pub struct FakeGateway {
    pub instance: String,
    pub admin: SocketAddr,
    outbound: Option<mpsc::Sender<pb::GatewayMessage>>,
    inbound: Option<tonic::Streaming<pb::GatewayConfig>>,
    ready: watch::Sender<bool>,
    admin_task: JoinHandle<()>,
}

impl FakeGateway {
    /// Subscribes to `gateway` (`namespace/name`) at the agent.
    pub async fn connect(agent: SocketAddr, key: &str, instance: &str) -> Self {
        let (ready, ready_rx) = watch::channel(true);
        let app = axum::Router::new().route(
            "/ready",
            axum::routing::get(move || {
                let ready = *ready_rx.borrow();
                async move {
                    if ready {
                        http::StatusCode::OK
                    } else {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let admin_task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut gateway = Self {
            instance: instance.to_string(),
            admin,
            outbound: None,
            inbound: None,
            ready,
            admin_task,
        };
        gateway
            .subscribe(agent, gateway_key(key), admin.to_string())
            .await;
        gateway
    }

    async fn subscribe(&mut self, agent: SocketAddr, key: pb::ObjectKey, admin: String) {
        let mut client = ConfigDiscoveryClient::connect(format!("http://{agent}"))
            .await
            .unwrap();
        let (outbound, outbound_rx) = mpsc::channel(16);
        outbound
            .send(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Subscribe(pb::GatewaySubscribe {
                    gateway: Some(key),
                    instance: self.instance.clone(),
                    admin_address: admin,
                    have_version: 0,
                })),
            })
            .await
            .unwrap();
        let inbound = client
            .subscribe(ReceiverStream::new(outbound_rx))
            .await
            .unwrap()
            .into_inner();
        self.outbound = Some(outbound);
        self.inbound = Some(inbound);
    }

    /// The next config snapshot, within `limit`.
    pub async fn next_config(&mut self, limit: Duration) -> pb::GatewayConfig {
        let inbound = self.inbound.as_mut().expect("subscribed");
        tokio::time::timeout(limit, inbound.message())
            .await
            .expect("a config snapshot in time")
            .expect("a healthy stream")
            .expect("the stream is open")
    }

    /// Whether a snapshot arrives within `window` (for "nothing is sent" checks).
    pub async fn config_within(&mut self, window: Duration) -> Option<pb::GatewayConfig> {
        let inbound = self.inbound.as_mut().expect("subscribed");
        match tokio::time::timeout(window, inbound.message()).await {
            Ok(Ok(Some(config))) => Some(config),
            _ => None,
        }
    }

    /// Answers a snapshot: ACK when `error` is empty, NACK otherwise.
    pub async fn answer(&self, version: u64, error: &str) {
        self.outbound
            .as_ref()
            .expect("subscribed")
            .send(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Ack(pb::GatewayAck {
                    version,
                    error: error.to_string(),
                })),
            })
            .await
            .unwrap();
    }

    /// Makes `/ready` answer 503 (or 200 again).
    pub fn set_ready(&self, ready: bool) {
        self.ready.send_replace(ready);
    }

    /// What killing the process does: the subscription connection and the admin port vanish.
    pub fn kill(&mut self) {
        self.outbound = None;
        self.inbound = None;
        self.admin_task.abort();
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.admin_task.abort();
    }
}

/// Parses `namespace/name`.
pub fn gateway_key(key: &str) -> pb::ObjectKey {
    let (namespace, name) = key.split_once('/').unwrap();
    pb::ObjectKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

// === hub double ===

/// What the hub double saw.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // a test double's few events, never on a hot path
pub enum HubEvent {
    Registered(pb::RegisterRequest),
    Hello(pb::AgentHello),
    Report(pb::HealthReport, Instant),
    Ack(pb::ConfigAck),
}

/// A hub implementing the real `Hub` gRPC service: it knows one cluster, records everything
/// agents send, and pushes whatever SharedConfig or SharedConfigDelta the test sets (at session
/// start and on every change).
pub struct FakeHub {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<HubEvent>,
    shared: watch::Sender<Option<pb::hub_message::Kind>>,
    resend: watch::Sender<u64>,
    server: JoinHandle<()>,
    sessions: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

struct HubService {
    cluster: String,
    node_id: u64,
    events: mpsc::UnboundedSender<HubEvent>,
    shared: watch::Receiver<Option<pb::hub_message::Kind>>,
    resend: watch::Receiver<u64>,
    sessions: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[tonic::async_trait]
impl pb::hub_server::Hub for HubService {
    async fn register(
        &self,
        request: tonic::Request<pb::RegisterRequest>,
    ) -> Result<tonic::Response<pb::RegisterResponse>, tonic::Status> {
        let request = request.into_inner();
        let _ = self.events.send(HubEvent::Registered(request.clone()));
        if request.cluster != self.cluster {
            return Err(tonic::Status::not_found(format!(
                "cluster {:?} is not registered",
                request.cluster
            )));
        }
        Ok(tonic::Response::new(pb::RegisterResponse {
            cluster: Some(pb::Cluster {
                name: self.cluster.clone(),
                region: "test".to_string(),
                addresses: vec![],
                drained: false,
            }),
            node_id: self.node_id,
            leader_hint: String::new(),
        }))
    }

    type SessionStream = ReceiverStream<Result<pb::HubMessage, tonic::Status>>;

    async fn session(
        &self,
        request: tonic::Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let events = self.events.clone();
        let (outbound, outbound_rx) = mpsc::channel(16);
        let mut shared = self.shared.clone();
        let mut resend = self.resend.clone();
        resend.borrow_and_update();
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let event = match message.kind {
                    Some(pb::agent_message::Kind::Hello(hello)) => HubEvent::Hello(hello),
                    Some(pb::agent_message::Kind::Health(report)) => {
                        HubEvent::Report(report, Instant::now())
                    }
                    Some(pb::agent_message::Kind::Ack(ack)) => HubEvent::Ack(ack),
                    None => continue,
                };
                let _ = events.send(event);
            }
        });
        let writer = tokio::spawn(async move {
            loop {
                let current = shared.borrow_and_update().clone();
                if let Some(kind) = current {
                    let message = pb::HubMessage { kind: Some(kind) };
                    if outbound.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                loop {
                    tokio::select! {
                        changed = shared.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                        changed = resend.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            let message = pb::HubMessage {
                                kind: Some(pb::hub_message::Kind::ResendSharedStatus(
                                    pb::ResendSharedStatus {},
                                )),
                            };
                            if outbound.send(Ok(message)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        self.sessions.lock().unwrap().extend([reader, writer]);
        Ok(tonic::Response::new(ReceiverStream::new(outbound_rx)))
    }
}

impl FakeHub {
    /// Starts a hub double on `addr` (port 0 for any) that knows `cluster`.
    pub async fn start(addr: SocketAddr, cluster: &str, node_id: u64) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (shared, shared_rx) = watch::channel(None);
        let (resend, resend_rx) = watch::channel(0);
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let service = HubService {
            cluster: cluster.to_string(),
            node_id,
            events: events_tx,
            shared: shared_rx,
            resend: resend_rx,
            sessions: sessions.clone(),
        };
        let server = tokio::spawn(async move {
            let serve = tonic::transport::Server::builder()
                .add_service(pb::hub_server::HubServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener));
            let _ = serve.await;
        });
        Self {
            addr,
            events,
            shared,
            resend,
            server,
            sessions,
        }
    }

    /// The URL agents use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Pushes a SharedConfig to every session (now and to sessions that start later).
    pub fn push(&self, config: pb::SharedConfig) {
        self.shared
            .send_replace(Some(pb::hub_message::Kind::Config(config)));
    }

    /// Pushes a SharedConfigDelta to every session, as the hub does to agents that take them.
    pub fn push_delta(&self, delta: pb::SharedConfigDelta) {
        self.shared
            .send_replace(Some(pb::hub_message::Kind::ConfigDelta(delta)));
    }

    /// Asks every open session for the agent's whole shared status, as a hub node does when it
    /// sees a new Raft leader.
    pub fn resend_shared_status(&self) {
        self.resend.send_modify(|n| *n += 1);
    }

    /// Waits for the first event `pick` accepts, skipping others.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&HubEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
                .expect("hub double alive");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    }

    /// Stops the hub abruptly: the listener is closed (new connections are refused) and every
    /// session ends.
    pub fn kill(&self) {
        self.server.abort();
        for session in self.sessions.lock().unwrap().drain(..) {
            session.abort();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory path that is guaranteed not to exist yet.
pub fn fresh_path(parent: &Path, name: &str) -> PathBuf {
    let path = parent.join(name);
    assert!(!path.exists());
    path
}
