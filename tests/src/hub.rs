//! [`HubCluster`]: a group of real `meridian hub` processes on loopback, each with its own data
//! directory, its own loopback IP and a [`FaultNet`] proxy in front of its gRPC port.
//!
//! Node `k` listens (gRPC, admin API, DNS) on `127.0.0.{10+k}` with port 0 and connects to its
//! peers from that IP (the hub's default when `--grpc` names a specific IP); it advertises its
//! proxy's address (`127.0.0.{100+k}`), so the proxies see and can break every hub-to-hub
//! connection. The test reaches each node's admin API directly. Addresses come from ready files;
//! restarts pick new ports and the proxy follows. Nodes are configured with flags only.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faultproxy::FaultNet;
use crate::process::{Proc, ProcSpec};

/// Settings shared by every node of a [`HubCluster`].
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Nodes, with ids `1..=nodes`.
    pub nodes: u64,
    /// `--snapshot-threshold` of each node (`None`: the default, 10 000).
    pub snapshot_threshold: Option<u64>,
    /// `--raft-request-timeout-ms` (`None`: the default, 10 s).
    pub request_timeout_ms: Option<u64>,
    /// Timeout of the test's own HTTP requests to admin APIs.
    pub http_timeout: Duration,
    /// How long a node may take to write its ready file.
    pub ready_timeout: Duration,
    /// Nodes advertise `localhost:PORT` (a DNS name, as StatefulSet pods do) instead of their
    /// proxy's IP. Each node then listens on 127.0.0.1 on a port fixed for the whole test, and
    /// the fault proxies are not used: peers connect to each other directly.
    pub by_name: bool,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            snapshot_threshold: None,
            request_timeout_ms: None,
            http_timeout: Duration::from_secs(15),
            ready_timeout: Duration::from_secs(30),
            by_name: false,
        }
    }
}

/// How a node starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// With `--peers` listing every original node (ignored by a node whose log exists).
    Peers,
    /// With `--join`: empty, waiting to be added.
    Join,
}

/// One node slot; its id, IP, proxy and data directory survive restarts.
pub struct HubNode {
    /// Raft id.
    pub id: u64,
    /// Its loopback IP (listeners and outbound source).
    pub ip: IpAddr,
    /// Its advertised gRPC address: its proxy, or `localhost:PORT` with
    /// [`HubOptions::by_name`].
    pub advertise: String,
    /// Its gRPC listen address (`IP:0` unless [`HubOptions::by_name`]).
    grpc_listen: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    proc: Option<Proc>,
    /// The admin API address of the running process.
    pub admin: Option<SocketAddr>,
    /// The real gRPC address of the running process.
    pub grpc: Option<SocketAddr>,
}

/// Admin addresses of the nodes that are up, shared with client tasks (updated on every start
/// and stop).
pub type Directory = Arc<Mutex<BTreeMap<u64, SocketAddr>>>;

/// A group of hub processes.
pub struct HubCluster {
    nodes: BTreeMap<u64, HubNode>,
    /// The proxies between the nodes.
    pub net: Arc<FaultNet>,
    directory: Directory,
    client: reqwest::Client,
    bin: PathBuf,
    options: HubOptions,
    dir: tempfile::TempDir,
}

// === impl HubCluster ===

impl HubCluster {
    /// Starts `options.nodes` nodes that bootstrap one group and waits for their ready files
    /// (not for a leader: see [`HubCluster::leader`]).
    pub async fn start(bin: &str, options: HubOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::init_crypto();
        let client = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("http client");
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            net: FaultNet::new(),
            directory: Arc::new(Mutex::new(BTreeMap::new())),
            client,
            bin: PathBuf::from(bin),
            options,
            dir,
        };
        for id in 1..=cluster.options.nodes {
            cluster.add_slot(id).await;
        }
        let ids = cluster.ids();
        for id in &ids {
            cluster.spawn(*id, Boot::Peers);
        }
        for id in &ids {
            cluster.wait_ready(*id).await;
        }
        cluster
    }

    async fn add_slot(&mut self, id: u64) {
        let octet = u8::try_from(id).expect("id");
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + octet));
        let proxy_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 100 + octet));
        let (ip, advertise, grpc_listen) = if self.options.by_name {
            let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let port = crate::net::free_port(ip);
            (ip, format!("localhost:{port}"), SocketAddr::new(ip, port))
        } else {
            let advertise = self.net.add_node(id, ip, proxy_ip).await;
            (ip, advertise.to_string(), SocketAddr::new(ip, 0))
        };
        let data_dir = self.dir.path().join(format!("hub-{id}")).join("data");
        self.nodes.insert(
            id,
            HubNode {
                id,
                ip,
                advertise,
                grpc_listen,
                data_dir,
                proc: None,
                admin: None,
                grpc: None,
            },
        );
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of nodes whose process is running.
    pub fn running_ids(&mut self) -> Vec<u64> {
        self.nodes
            .values_mut()
            .filter_map(|node| {
                let running = node.proc.as_mut().is_some_and(Proc::is_running);
                running.then_some(node.id)
            })
            .collect()
    }

    /// A node slot.
    pub fn node(&self, id: u64) -> &HubNode {
        &self.nodes[&id]
    }

    /// The admin addresses of the nodes that are up, kept current.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// The HTTP client the cluster uses (with `options.http_timeout`).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The directory holding logs and data directories.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--peers` of every original node.
    fn peers(&self) -> String {
        self.nodes
            .values()
            .filter(|node| node.id <= self.options.nodes)
            .map(|node| format!("{}={}", node.id, node.advertise))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `id`'s process without waiting for it.
    pub fn spawn(&mut self, id: u64, boot: Boot) {
        let peers = self.peers();
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(
            node.proc.as_mut().is_none_or(|p| !p.is_running()),
            "node {id} is already running"
        );
        let ip = node.ip;
        let id_arg = id.to_string();
        let data_dir = node.data_dir.display().to_string();
        let advertise = node.advertise.clone();
        let any = format!("{ip}:0");
        let grpc = node.grpc_listen.to_string();
        let threshold = self.options.snapshot_threshold.map(|t| t.to_string());
        let timeout = self.options.request_timeout_ms.map(|t| t.to_string());
        let mut args = vec![
            "hub",
            "--id",
            &id_arg,
            "--data-dir",
            &data_dir,
            "--grpc",
            &grpc,
            "--advertise",
            &advertise,
            "--admin",
            &any,
            "--dns",
            &any,
        ];
        if let Some(threshold) = &threshold {
            args.extend(["--snapshot-threshold", threshold.as_str()]);
        }
        if let Some(timeout) = &timeout {
            args.extend(["--raft-request-timeout-ms", timeout.as_str()]);
        }
        match boot {
            Boot::Peers => args.extend(["--peers", peers.as_str()]),
            Boot::Join => args.push("--join"),
        }
        let mut spec = ProcSpec::new(&format!("hub-{id}"), &self.bin, self.dir.path(), &args);
        let ready = spec.ready_file();
        let _ = std::fs::remove_file(&ready);
        spec.args.push("--ready-file".into());
        spec.args.push(ready.display().to_string());
        node.proc = Some(Proc::start(spec));
        node.admin = None;
        node.grpc = None;
    }

    /// Waits for node `id`'s ready file, then lets the proxy forward to it and publishes its
    /// admin address. Panics (with the log tail) if it exits first.
    pub async fn wait_ready(&mut self, id: u64) {
        if let Err(why) = self.try_wait_ready(id).await {
            panic!("{why}");
        }
    }

    /// [`HubCluster::wait_ready`], but `Err` (with the log tail) when the process exits or
    /// does not get ready in time.
    pub async fn try_wait_ready(&mut self, id: u64) -> Result<(), String> {
        let timeout = self.options.ready_timeout;
        let node = self.nodes.get_mut(&id).expect("node");
        let proc = node.proc.as_mut().expect("node started");
        let ready_file = proc.spec().ready_file();
        let started = Instant::now();
        let ready: Value = loop {
            if let Ok(text) = tokio::fs::read_to_string(&ready_file).await
                && let Ok(value) = serde_json::from_str(&text)
            {
                break value;
            }
            if !proc.is_running() {
                return Err(format!(
                    "hub-{id} exited before it was ready; log:\n{}",
                    proc.log_tail(40)
                ));
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "hub-{id} not ready after {timeout:?}; log:\n{}",
                    proc.log_tail(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let addr = |key: &str| -> Result<SocketAddr, String> {
            ready[key]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("hub-{id} ready file lacks {key}: {ready}"))
        };
        let (admin, grpc) = (addr("admin")?, addr("grpc")?);
        node.admin = Some(admin);
        node.grpc = Some(grpc);
        if !self.options.by_name {
            self.net.set_upstream(id, Some(grpc));
        }
        self.directory.lock().expect("directory").insert(id, admin);
        Ok(())
    }

    /// Starts node `id` and waits until it is ready.
    pub async fn start_node(&mut self, id: u64, boot: Boot) {
        self.spawn(id, boot);
        self.wait_ready(id).await;
    }

    /// Forgets node `id`'s process (it is gone): the proxy refuses connections to it and
    /// clients stop picking it.
    fn gone(&mut self, id: u64) {
        self.net.set_upstream(id, None);
        self.directory.lock().expect("directory").remove(&id);
        let node = self.nodes.get_mut(&id).expect("node");
        node.admin = None;
        node.grpc = None;
    }

    /// Kills node `id` with SIGKILL (a crash: nothing is flushed or closed).
    pub fn kill(&mut self, id: u64) {
        self.gone(id);
        if let Some(proc) = self.nodes.get_mut(&id).expect("node").proc.as_mut() {
            proc.kill();
        }
    }

    /// Stops node `id` with SIGTERM; returns whether it exited successfully within `timeout`.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> bool {
        self.gone(id);
        self.nodes
            .get_mut(&id)
            .expect("node")
            .proc
            .as_mut()
            .is_some_and(|proc| proc.terminate(timeout))
    }

    /// Whether node `id`'s process is running.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.nodes
            .get_mut(&id)
            .expect("node")
            .proc
            .as_mut()
            .is_some_and(Proc::is_running)
    }

    /// Deletes node `id`'s data directory (the node must be down).
    pub fn wipe(&mut self, id: u64) {
        assert!(!self.is_running(id), "wipe node {id} while it runs");
        let dir = &self.nodes[&id].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).expect("wipe the data directory");
        }
    }

    /// Everything node `id` logged in this test (all its runs).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("hub-{id}.log"))).unwrap_or_default()
    }

    /// The admin API address of running node `id`.
    pub fn admin(&self, id: u64) -> SocketAddr {
        self.nodes[&id]
            .admin
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// `GET path` on node `id`'s admin API: status and JSON body.
    pub async fn get(&self, id: u64, path: &str) -> Result<(u16, Value), String> {
        self.send(id, reqwest::Method::GET, path, None).await
    }

    /// Any request to node `id`'s admin API: status and JSON body (`Null` when not JSON).
    pub async fn send(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let admin = self.nodes[&id]
            .admin
            .ok_or_else(|| format!("node {id} is down"))?;
        crate::http::send_json(&self.client, method, &format!("http://{admin}{path}"), body).await
    }

    /// `GET /v1/status` on node `id`.
    pub async fn status(&self, id: u64) -> Result<Value, String> {
        match self.get(id, "/v1/status").await? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("node {id} status: {code} {body}")),
        }
    }

    /// Waits until one of `ids` is leader and every other node of `ids` follows it; returns it.
    pub async fn leader(&self, ids: &[u64], within: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let last = match self.agreed_leader(ids).await {
                Ok(leader) => return leader,
                Err(why) => why,
            };
            assert!(
                started.elapsed() < within,
                "no leader among {ids:?} after {within:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn agreed_leader(&self, ids: &[u64]) -> Result<u64, String> {
        let mut leader = None;
        for id in ids {
            let status = self.status(*id).await?;
            let says = status["leader_id"].as_u64().unwrap_or(0);
            if says == 0 || !ids.contains(&says) || leader.is_some_and(|l| l != says) {
                return Err(format!("node {id} follows {says}"));
            }
            if says == *id && status["role"] != "leader" {
                return Err(format!("node {id} is {}", status["role"]));
            }
            leader = Some(says);
        }
        leader.ok_or_else(|| "no nodes".to_string())
    }

    /// Waits until `ids` agree: the same leader, every node applied everything it knows is
    /// committed and the same index, and `GET /v1/clusters?stale=true` is the same everywhere.
    /// Returns that list.
    pub async fn converged(&self, ids: &[u64], within: Duration) -> Value {
        let started = Instant::now();
        loop {
            let why = match self.agreement(ids).await {
                Ok(items) => return items,
                Err(why) => why,
            };
            assert!(
                started.elapsed() < within,
                "nodes {ids:?} did not converge in {within:?}: {why}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreement(&self, ids: &[u64]) -> Result<Value, String> {
        let leader = self.agreed_leader(ids).await?;
        // A linearizable read first: the leader answers it only once it has committed an
        // entry of its own term, so entries a previous leader acknowledged but whose commit
        // no node had stored before a restart are applied by then. Without it, nodes that
        // just replayed their logs to the stored commit index agree on a state that lacks
        // them, for a moment.
        match self.get(leader, "/v1/clusters").await? {
            (200, _) => {}
            (code, body) => return Err(format!("leader {leader} read: {code} {body}")),
        }
        let mut applied = BTreeMap::new();
        for id in ids {
            let status = self.status(*id).await?;
            let (commit, index) = (&status["commit_index"], &status["applied_index"]);
            if commit != index {
                return Err(format!("node {id}: commit {commit}, applied {index}"));
            }
            applied.insert(*id, index.as_u64().unwrap_or(0));
        }
        let leader_index = applied[&leader];
        if applied.values().any(|i| *i != leader_index) {
            return Err(format!("applied indexes differ: {applied:?}"));
        }
        let mut first: Option<Value> = None;
        for id in ids {
            let items = match self.get(*id, "/v1/clusters?stale=true").await? {
                (200, body) => body["items"].clone(),
                (code, body) => return Err(format!("node {id} clusters: {code} {body}")),
            };
            match &first {
                None => first = Some(items),
                Some(expected) if *expected != items => {
                    return Err(format!(
                        "node {id} differs from node {}: {items} vs {expected}",
                        ids[0]
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(first.unwrap_or(Value::Null))
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, within: Duration) {
        let started = Instant::now();
        loop {
            let applied = self
                .status(id)
                .await
                .map(|s| s["applied_index"].as_u64().unwrap_or(0));
            if applied.as_ref().is_ok_and(|a| *a >= index) {
                return;
            }
            assert!(
                started.elapsed() < within,
                "node {id} did not apply {index} in {within:?}: {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Node `id`'s `/metrics` text.
    pub async fn metrics(&self, id: u64) -> Result<String, String> {
        let admin = self.nodes[&id]
            .admin
            .ok_or_else(|| format!("node {id} is down"))?;
        let response = self
            .client
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    }

    /// Runs `meridian ctl --hub <node id's admin API> args...`; returns whether it succeeded and
    /// its output (stdout and stderr).
    pub async fn ctl(&self, via: u64, args: &[&str]) -> (bool, String) {
        let hub = format!("http://{}", self.admin(via));
        let mut argv = vec!["--hub", hub.as_str()];
        argv.extend_from_slice(args);
        run_ctl(&self.bin, &argv).await
    }
}

/// Runs `BIN ctl ARGS...`; returns whether it succeeded and its output (stdout and stderr).
pub async fn run_ctl(bin: &Path, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(bin)
        .arg("ctl")
        .args(args)
        .output()
        .await
        .expect("run meridian ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

impl Drop for HubCluster {
    fn drop(&mut self) {
        // Kill every node first (their `Drop` prints log tails when the test failed).
        for node in self.nodes.values_mut() {
            node.proc.take();
        }
        if std::thread::panicking() {
            // Keep the logs, configs and data directories of a failed test for a post-mortem.
            self.dir.disable_cleanup(true);
            eprintln!("hub cluster files kept in {}", self.dir.path().display());
        }
    }
}

/// The value of metric `name` in Prometheus text (the sum over its label sets); `None` when
/// absent.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(value) = value.and_then(|v| v.split_whitespace().next())
            && let Ok(value) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}
