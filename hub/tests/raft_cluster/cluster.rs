//! An in-process cluster of real raft nodes: each with its own data directory, its own tonic
//! server on a loopback port, and a fault-injecting proxy in front.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_hub::raft::{self, RaftConfig, RaftHandle, RaftStatus, Role};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use super::kv::{Kv, View};
use super::net::{self, Net};

/// Timing and sizes shared by every node of a cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_threshold: u64,
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(20),
            // 300-600 ms: a leader stalled by a slow disk sync on a loaded test machine is not
            // replaced mid-test, and elections stay well under a second.
            election_ticks: 15,
            heartbeat_ticks: 2,
            snapshot_threshold: 10_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// One node slot: its identity survives restarts.
pub struct Slot {
    pub id: u64,
    /// The advertised (proxy) address.
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub running: Option<Running>,
}

/// A running node.
pub struct Running {
    pub raft: RaftHandle,
    pub view: Arc<Mutex<View>>,
    pub registry: Registry,
    server: JoinHandle<()>,
}

pub struct Cluster {
    pub net: Arc<Net>,
    pub options: Options,
    pub slots: BTreeMap<u64, Slot>,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) that bootstrap one group.
    pub async fn start(n: u64, options: Options) -> Self {
        let mut cluster = Self::empty(options);
        for id in 1..=n {
            cluster.add_slot(id).await;
        }
        let members = cluster.addresses();
        for id in 1..=n {
            cluster.start_node(id, members.clone()).await;
        }
        cluster
    }

    /// A cluster without nodes (add slots, then start them).
    pub fn empty(options: Options) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        Self {
            net: Net::new(),
            options,
            slots: BTreeMap::new(),
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// Reserves a slot (proxy address and data directory) for node `id`.
    pub async fn add_slot(&mut self, id: u64) -> SocketAddr {
        let addr = self.net.add_proxy(id).await;
        self.slots.insert(
            id,
            Slot {
                id,
                addr,
                data_dir: self.dir.join(format!("node-{id}")),
                running: None,
            },
        );
        addr
    }

    /// Every slot's advertised address.
    pub fn addresses(&self) -> BTreeMap<u64, SocketAddr> {
        self.slots
            .iter()
            .map(|(id, slot)| (*id, slot.addr))
            .collect()
    }

    pub fn config(&self, id: u64, initial_members: BTreeMap<u64, SocketAddr>) -> RaftConfig {
        let slot = &self.slots[&id];
        let mut config = RaftConfig::new(id, slot.data_dir.clone(), slot.addr);
        config.initial_members = initial_members
            .into_iter()
            .map(|(id, addr)| (id, addr.into()))
            .collect();
        config.tick_interval = self.options.tick;
        config.election_ticks = self.options.election_ticks;
        config.heartbeat_ticks = self.options.heartbeat_ticks;
        config.snapshot_threshold = self.options.snapshot_threshold;
        config.request_timeout = self.options.request_timeout;
        config.outbound_source_ip = Some(net::source_ip(id));
        config
    }

    /// Starts (or restarts) node `id` on its data directory.
    pub async fn start_node(&mut self, id: u64, initial_members: BTreeMap<u64, SocketAddr>) {
        let config = self.config(id, initial_members);
        self.start_with(config).await.unwrap();
    }

    pub async fn start_with(&mut self, config: RaftConfig) -> Result<(), raft::RaftError> {
        let id = config.node_id;
        assert!(self.slots[&id].running.is_none(), "node {id} is running");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = listener.local_addr().unwrap();
        let (kv, view) = Kv::new();
        let mut registry = Registry::default();
        let handle = raft::spawn(config, kv, &mut registry).await?;
        let service = handle.peer_service();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(1)))
                .http2_keepalive_timeout(Some(Duration::from_secs(2)))
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        self.net.set_upstream(id, Some(server_addr));
        self.slots.get_mut(&id).unwrap().running = Some(Running {
            raft: handle,
            view,
            registry,
            server,
        });
        Ok(())
    }

    /// Stops node `id` (its proxy refuses connections until it is started again).
    pub async fn stop_node(&mut self, id: u64) {
        self.net.set_upstream(id, None);
        let running = self.slots.get_mut(&id).unwrap().running.take();
        if let Some(running) = running {
            running.raft.shutdown().await;
            running.server.abort();
        }
    }

    /// Deletes node `id`'s data directory (it must be stopped).
    pub fn wipe(&self, id: u64) {
        let dir = &self.slots[&id].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    pub fn raft(&self, id: u64) -> &RaftHandle {
        &self.running(id).raft
    }

    pub fn running(&self, id: u64) -> &Running {
        self.slots[&id]
            .running
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.slots
            .values()
            .filter(|slot| slot.running.is_some())
            .map(|slot| slot.id)
            .collect()
    }

    pub fn status(&self, id: u64) -> RaftStatus {
        self.raft(id).status().borrow().clone()
    }

    pub fn value(&self, id: u64, key: &str) -> Option<String> {
        self.running(id).view.lock().unwrap().map.get(key).cloned()
    }

    pub fn map(&self, id: u64) -> BTreeMap<String, String> {
        self.running(id).view.lock().unwrap().map.clone()
    }

    /// Waits until all of `ids` agree on one leader among them; returns it.
    pub async fn leader(&self, ids: &[u64], within: Duration) -> u64 {
        let mut found = 0;
        eventually(&format!("a leader agreed on by {ids:?}"), within, || {
            let statuses: Vec<RaftStatus> = ids.iter().map(|id| self.status(*id)).collect();
            let leader = statuses[0].leader_id;
            let agreed = leader != 0
                && ids.contains(&leader)
                && statuses
                    .iter()
                    .all(|s| s.leader_id == leader && s.term == statuses[0].term)
                && self.status(leader).role == Role::Leader;
            if agreed {
                found = leader;
            }
            agreed
        })
        .await;
        found
    }

    /// Waits until every one of `ids` has the same map as node `reference` and applied as far.
    pub async fn converged(&self, ids: &[u64], within: Duration) {
        eventually(&format!("nodes {ids:?} converge"), within, || {
            let applied: Vec<u64> = ids
                .iter()
                .map(|id| self.status(*id).applied_index)
                .collect();
            let commit = ids
                .iter()
                .map(|id| self.status(*id).commit_index)
                .max()
                .unwrap_or(0);
            let maps: Vec<_> = ids.iter().map(|id| self.map(*id)).collect();
            applied.iter().all(|a| *a >= commit) && maps.windows(2).all(|w| w[0] == w[1])
        })
        .await;
    }

    /// The text exposition of node `id`'s metrics.
    pub fn metrics(&self, id: u64) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.running(id).registry).unwrap();
        text
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) {
        for id in self.running_ids() {
            self.stop_node(id).await;
        }
    }
}

/// Reads one metric's value from a text exposition.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

/// Polls `condition` every 10 ms until it holds; panics after `within`.
pub async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `tracing` output to the test's captured output (`RUST_LOG` filters, default `info`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}
