//! Test support: real hub nodes in this process on loopback ports, an admin API client and an
//! agent gRPC client.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meridian_hub::raft::Role;
use meridian_hub::{Hub, HubConfig, HubHandle, HubListeners};
use meridian_proto::pb;
use meridian_proto::pb::hub_client::HubClient;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The zone every test hub serves.
pub const ZONE: &str = "demo.meridian.test";

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A hub configuration for tests: loopback ports chosen by the OS, fast health tracking
/// (reports every 100 ms, unhealthy after 3 missed).
pub fn config(node_id: u64, data_dir: &Path) -> HubConfig {
    let mut config = HubConfig::new(node_id, data_dir);
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.dns.listen = "127.0.0.1:0".parse().unwrap();
    config.dns.zones = vec![
        serde_json::from_value(serde_json::json!({
            "origin": ZONE,
            "nameservers": [{"name": format!("ns1.{ZONE}"), "addresses": ["127.0.0.1"]}],
        }))
        .unwrap(),
    ];
    config.health.report_interval_ms = 100;
    config.health.missed_reports = 3;
    config
}

/// Starts a single-node hub in `dir` and waits until it leads.
pub async fn single(dir: &Path) -> HubHandle {
    single_with(dir, |_| {}).await
}

/// [`single`], changing its config with `tweak` first.
pub async fn single_with(dir: &Path, tweak: impl FnOnce(&mut HubConfig)) -> HubHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = config(1, dir);
    tweak(&mut config);
    let hub = Hub::spawn(config).await.unwrap();
    wait_leader(&[&hub]).await;
    hub
}

/// Changes a node's config before it starts (`Group::start_with`).
type Tweak = Box<dyn Fn(u64, &mut HubConfig) + Send + Sync>;

/// A group of hubs on pre-bound gRPC ports.
pub struct Group {
    tweak: Tweak,
    /// Node id → running node (absent while stopped).
    pub nodes: BTreeMap<u64, HubHandle>,
    /// Node id → data directory.
    pub dirs: BTreeMap<u64, PathBuf>,
    /// Node id → gRPC address.
    pub members: BTreeMap<u64, SocketAddr>,
    _root: tempfile::TempDir,
}

impl Group {
    /// Starts `n` nodes that bootstrap one Raft group.
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, |_, _| {}).await
    }

    /// Starts `n` nodes, changing each node's config with `tweak(id, config)` first.
    pub async fn start_with(
        n: u64,
        tweak: impl Fn(u64, &mut HubConfig) + Send + Sync + 'static,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        // Ports below the ephemeral range: a node restarted on its port (`restart`) finds it
        // free, since no other test's bind to port 0 can have been given it meanwhile.
        let ports =
            meridian_tests::net::free_ports(std::net::Ipv4Addr::LOCALHOST.into(), n as usize);
        for (id, port) in (1..=n).zip(ports) {
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            members.insert(id, listener.local_addr().unwrap());
            listeners.insert(id, listener);
        }
        let mut group = Self {
            tweak: Box::new(tweak),
            nodes: BTreeMap::new(),
            dirs: (1..=n)
                .map(|id| (id, root.path().join(format!("hub-{id}"))))
                .collect(),
            members,
            _root: root,
        };
        for (id, listener) in listeners {
            group.spawn(id, Some(listener)).await;
        }
        group
    }

    async fn spawn(&mut self, id: u64, listener: Option<std::net::TcpListener>) {
        self.spawn_as(id, listener, false).await;
    }

    async fn spawn_as(&mut self, id: u64, listener: Option<std::net::TcpListener>, join: bool) {
        let mut config = config(id, &self.dirs[&id]);
        if join {
            config.join = true;
        } else {
            config.members = self
                .members
                .iter()
                .map(|(id, addr)| (*id, (*addr).into()))
                .collect();
        }
        config.grpc_listen = self.members[&id];
        // Snapshot often, so lagging and wiped nodes catch up through snapshots.
        config.raft.snapshot_threshold = Some(8);
        (self.tweak)(id, &mut config);
        let listeners = HubListeners {
            grpc: listener,
            admin: None,
        };
        let hub = Hub::spawn_with(config, listeners).await.unwrap();
        self.nodes.insert(id, hub);
    }

    /// Starts node `id` again on its gRPC address with its data directory as it is.
    pub async fn restart(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
        self.spawn(id, None).await;
    }

    /// Stops node `id` and wipes its data directory.
    pub async fn stop_and_wipe(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
        std::fs::remove_dir_all(&self.dirs[&id]).unwrap();
    }

    /// Starts node `id` empty, waiting to be added (`meridian hub --join`).
    pub async fn start_joining(&mut self, id: u64) {
        self.spawn_as(id, None, true).await;
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> &HubHandle {
        &self.nodes[&id]
    }

    /// Waits until the running nodes agree on a leader and returns its id.
    pub async fn leader(&self) -> u64 {
        let nodes: Vec<&HubHandle> = self.nodes.values().collect();
        wait_leader(&nodes).await
    }
}

/// Waits until one of `nodes` leads and every other node follows it.
pub async fn wait_leader(nodes: &[&HubHandle]) -> u64 {
    eventually(
        Duration::from_secs(15),
        "a leader every node agrees on",
        || async {
            let statuses: Vec<_> = nodes
                .iter()
                .map(|n| n.raft().status().borrow().clone())
                .collect();
            let leader = statuses.iter().find(|s| s.role == Role::Leader)?;
            statuses
                .iter()
                .all(|s| s.leader_id == leader.node_id)
                .then_some(leader.node_id)
        },
    )
    .await
}

// === admin API ===

/// A small admin API client.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Admin {
    /// A client for the node's admin API.
    pub fn new(hub: &HubHandle) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}", hub.admin_addr()),
            token: None,
        }
    }

    /// The same client, sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// GET, expecting 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// PUT a JSON body as `actor`.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .header("x-meridian-actor", "test-suite")
                .json(body),
        )
        .await
    }

    /// PUT, expecting 200.
    pub async fn put_ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.put(path, body).await;
        assert_eq!(status, 200, "PUT {path}: {answer}");
        answer
    }

    /// PUT raw bytes.
    pub async fn put_raw(&self, path: &str, body: &str) -> (u16, Value) {
        self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .body(body.to_string()),
        )
        .await
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// DELETE, expecting 200.
    pub async fn delete_ok(&self, path: &str) -> Value {
        let (status, answer) = self.delete(path).await;
        assert_eq!(status, 200, "DELETE {path}: {answer}");
        answer
    }

    /// The raw text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until `cluster`'s verdict on this node is `verdict`; returns the cluster JSON.
    pub async fn wait_verdict(&self, cluster: &str, verdict: &str, timeout: Duration) -> Value {
        eventually(
            timeout,
            &format!("{cluster} to become {verdict}"),
            || async {
                let body = self
                    .get_ok(&format!("/v1/clusters/{cluster}?stale=true"))
                    .await;
                (body["health"]["verdict"] == verdict).then_some(body)
            },
        )
        .await
    }
}

/// The body of a cluster.
pub fn cluster_body(region: &str, address: &str) -> Value {
    serde_json::json!({ "region": region, "addresses": [address] })
}

// === agent API ===

/// An agent connected to a hub node over gRPC.
pub struct Agent {
    /// The cluster it reports for.
    pub cluster: String,
    client: HubClient<Channel>,
    outbound: Option<mpsc::Sender<pb::AgentMessage>>,
    inbound: Option<tonic::Streaming<pb::HubMessage>>,
    seq: u64,
}

impl Agent {
    /// Connects to the node's gRPC address.
    pub async fn connect(hub: &HubHandle, cluster: &str) -> Self {
        let client = HubClient::connect(format!("http://{}", hub.grpc_addr()))
            .await
            .unwrap();
        Self {
            cluster: cluster.to_string(),
            client,
            outbound: None,
            inbound: None,
            seq: 0,
        }
    }

    /// Connects over TLS (`https://127.0.0.1:PORT`) with `tls`.
    pub async fn connect_tls(
        hub: &HubHandle,
        cluster: &str,
        tls: tonic::transport::ClientTlsConfig,
    ) -> Result<Self, tonic::transport::Error> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("https://{}", hub.grpc_addr()))?
                .tls_config(tls)?
                .connect()
                .await?;
        Ok(Self {
            cluster: cluster.to_string(),
            client: HubClient::new(channel),
            outbound: None,
            inbound: None,
            seq: 0,
        })
    }

    /// Calls `Register` with these gateway addresses.
    pub async fn register(
        &mut self,
        gateways: &[&str],
    ) -> Result<pb::RegisterResponse, tonic::Status> {
        self.client
            .register(pb::RegisterRequest {
                cluster: self.cluster.clone(),
                agent_version: "test".into(),
                gateway_addresses: gateways.iter().map(|g| g.to_string()).collect(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Opens a session (sends `hello`) as an agent of an earlier build, which takes whole
    /// SharedConfigs only.
    pub async fn open(&mut self) -> Result<(), tonic::Status> {
        self.open_with(false).await
    }

    /// Opens a session as an agent that takes SharedConfigDeltas.
    pub async fn open_taking_deltas(&mut self) -> Result<(), tonic::Status> {
        self.open_with(true).await
    }

    async fn open_with(&mut self, accepts_config_delta: bool) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(pb::AgentHello {
                cluster: self.cluster.clone(),
                have_version: 0,
                instance_id: format!("test-agent-{}", self.cluster),
                accepts_config_delta,
            })),
        })
        .await
        .unwrap();
        let response = self.client.session(ReceiverStream::new(rx)).await?;
        self.outbound = Some(tx);
        self.inbound = Some(response.into_inner());
        Ok(())
    }

    /// Sends one health report: one gateway per entry of `ready`.
    pub async fn report(&mut self, ready: &[bool]) {
        self.report_with(ready, &[]).await;
    }

    /// Sends one health report with route hostnames: `(hostname, ready, total)` endpoints.
    pub async fn report_with(&mut self, ready: &[bool], hostnames: &[(&str, u32, u32)]) {
        self.seq += 1;
        let report = pb::HealthReport {
            cluster: self.cluster.clone(),
            seq: self.seq,
            gateways: ready
                .iter()
                .enumerate()
                .map(|(i, ready)| pb::GatewayProbe {
                    name: format!("gw-{i}"),
                    address: format!("127.0.1.{}:8080", i + 1),
                    ready: *ready,
                    detail: if *ready {
                        String::new()
                    } else {
                        "connection refused".into()
                    },
                })
                .collect(),
            hostnames: hostnames
                .iter()
                .map(|(hostname, ready, total)| pb::HostnameHealth {
                    hostname: hostname.to_string(),
                    ready_endpoints: *ready,
                    total_endpoints: *total,
                    detail: String::new(),
                })
                .collect(),
            ..Default::default()
        };
        self.send(pb::agent_message::Kind::Health(report)).await;
    }

    /// Sends any message on the session.
    pub async fn send(&mut self, kind: pb::agent_message::Kind) {
        self.outbound
            .as_ref()
            .expect("session open")
            .send(pb::AgentMessage { kind: Some(kind) })
            .await
            .unwrap();
    }

    /// The next message from the hub (within 10 s).
    pub async fn next(&mut self) -> Result<pb::HubMessage, tonic::Status> {
        let inbound = self.inbound.as_mut().expect("session open");
        tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("the hub sent nothing within 10 s")?
            .ok_or_else(|| tonic::Status::aborted("stream ended"))
    }

    /// The next SharedConfig from the hub, ACKed as an agent does (the hub sends the next
    /// change once the last one is answered).
    pub async fn next_config(&mut self) -> pb::SharedConfig {
        match self.next().await.unwrap().kind {
            Some(pb::hub_message::Kind::Config(config)) => {
                self.ack(config.version).await;
                config
            }
            other => panic!("expected a config, got {other:?}"),
        }
    }

    /// The first whole SharedConfig from the hub that `wanted` accepts, ACKing each. What
    /// agents receive is built off the Raft thread, so a session opened right after a write
    /// may start with the config from before it.
    pub async fn config_where(
        &mut self,
        wanted: impl Fn(&pb::SharedConfig) -> bool,
    ) -> pb::SharedConfig {
        loop {
            let config = self.next_config().await;
            if wanted(&config) {
                return config;
            }
        }
    }

    /// The next SharedConfigDelta from the hub, ACKed.
    pub async fn next_delta(&mut self) -> pb::SharedConfigDelta {
        match self.next().await.unwrap().kind {
            Some(pb::hub_message::Kind::ConfigDelta(delta)) => {
                self.ack(delta.version).await;
                delta
            }
            other => panic!("expected a config delta, got {other:?}"),
        }
    }

    /// ACKs shared config `version`.
    pub async fn ack(&mut self, version: u64) {
        self.send(pb::agent_message::Kind::Ack(pb::ConfigAck {
            version,
            error: String::new(),
            want_whole: false,
        }))
        .await;
    }

    /// Reports every 100 ms in the background until the returned sender is dropped or told
    /// to stop; `ready` can be changed while it runs.
    pub fn keep_reporting(mut self, ready: Vec<bool>) -> Reporter {
        let (tx, mut rx) = tokio::sync::watch::channel(Some(ready));
        let task = tokio::spawn(async move {
            loop {
                let ready = rx.borrow_and_update().clone();
                match ready {
                    Some(ready) => self.report(&ready).await,
                    None => return self,
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        Reporter { tx, task }
    }
}

/// A background reporter.
pub struct Reporter {
    tx: tokio::sync::watch::Sender<Option<Vec<bool>>>,
    task: tokio::task::JoinHandle<Agent>,
}

impl Reporter {
    /// Changes what the gateways report.
    pub fn set(&self, ready: Vec<bool>) {
        self.tx.send_replace(Some(ready));
    }

    /// Stops reporting (the session stays open) and returns the agent.
    pub async fn stop(self) -> Agent {
        self.tx.send_replace(None);
        self.task.await.unwrap()
    }
}

// === DNS ===

/// One DNS query over UDP; `None` when no answer came within a second.
pub async fn dns_query(
    addr: SocketAddr,
    name: &str,
    rtype: hickory_proto::rr::RecordType,
) -> Option<hickory_proto::op::Message> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    socket
        .send_to(&query.to_vec().unwrap(), addr)
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

/// The answer section's data in presentation form.
pub fn answers(message: &hickory_proto::op::Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}
