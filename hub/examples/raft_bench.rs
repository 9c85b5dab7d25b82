//! In-process benchmark of the hub's raft library: a 3-node group on loopback, each node with
//! its own redb log (fsync on every Ready) and its own tonic server.
//!
//! Measures sequential write commit latency (p50/p99, through the leader and through a
//! follower), sequential and concurrent write throughput, and the time to elect a new leader
//! after the leader stops. Prints a human summary and one JSON line (`RESULT {...}`) for
//! `bench/raft/run.sh`.
//!
//! ```text
//! cargo run --release -p meridian-hub --example raft_bench -- \
//!     [--writes 2000] [--concurrency 64] [--value-size 256] [--elections 5] [--dir PATH]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_hub::raft::{self, RaftConfig, RaftHandle, Role, StateMachine};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A map of keys to values; the outcome is empty.
struct Kv {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StateMachine for Kv {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let split = command
            .iter()
            .position(|b| *b == b'=')
            .unwrap_or(command.len());
        let value = command.get(split + 1..).unwrap_or_default().to_vec();
        self.map.insert(command[..split].to_vec(), value);
        Vec::new()
    }
    fn applied(&mut self, _index: u64) {}
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.map {
            for part in [key, value] {
                out.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out
    }
    fn restore(&mut self, _index: u64, mut bytes: &[u8]) -> Result<(), String> {
        self.map.clear();
        let take = |bytes: &mut &[u8]| -> Result<Vec<u8>, String> {
            let len = u32::from_be_bytes(bytes.get(..4).ok_or("short")?.try_into().unwrap());
            let len = len as usize;
            let part = bytes.get(4..4 + len).ok_or("short")?.to_vec();
            *bytes = &bytes[4 + len..];
            Ok(part)
        };
        while !bytes.is_empty() {
            let key = take(&mut bytes)?;
            let value = take(&mut bytes)?;
            self.map.insert(key, value);
        }
        Ok(())
    }
}

struct Node {
    raft: RaftHandle,
    server: JoinHandle<()>,
    registry: Registry,
}

struct Bench {
    dir: PathBuf,
    members: BTreeMap<u64, SocketAddr>,
    listeners: BTreeMap<u64, TcpListener>,
    nodes: BTreeMap<u64, Node>,
}

impl Bench {
    async fn new(dir: PathBuf) -> Self {
        let mut members = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            members.insert(id, listener.local_addr().unwrap());
            listeners.insert(id, listener);
        }
        let mut bench = Self {
            dir,
            members,
            listeners,
            nodes: BTreeMap::new(),
        };
        for id in 1..=3 {
            bench.start(id).await;
        }
        bench
    }

    async fn start(&mut self, id: u64) {
        let listener = match self.listeners.remove(&id) {
            Some(listener) => listener,
            None => TcpListener::bind(self.members[&id]).await.unwrap(),
        };
        let mut config =
            RaftConfig::new(id, self.dir.join(format!("node-{id}")), self.members[&id]);
        config.initial_members = self
            .members
            .iter()
            .map(|(id, addr)| (*id, (*addr).into()))
            .collect();
        let mut registry = Registry::default();
        let raft = raft::spawn(
            config,
            Kv {
                map: BTreeMap::new(),
            },
            &mut registry,
        )
        .await
        .unwrap();
        let service = raft.peer_service();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                )
                .await;
        });
        self.nodes.insert(
            id,
            Node {
                raft,
                server,
                registry,
            },
        );
    }

    async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.raft.shutdown().await;
            node.server.abort();
            let _ = node.server.await;
        }
    }

    /// Waits until every running node agrees on one leader.
    async fn leader(&self) -> u64 {
        loop {
            let statuses: Vec<_> = self
                .nodes
                .values()
                .map(|n| n.raft.status().borrow().clone())
                .collect();
            let leader = statuses[0].leader_id;
            if leader != 0
                && self.nodes.contains_key(&leader)
                && statuses
                    .iter()
                    .all(|s| s.leader_id == leader && s.term == statuses[0].term)
                && self.nodes[&leader].raft.status().borrow().role == Role::Leader
            {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

async fn sequential(
    raft: &RaftHandle,
    writes: u64,
    value: &[u8],
    prefix: &str,
) -> (Vec<Duration>, f64) {
    let mut latencies = Vec::with_capacity(writes as usize);
    let started = Instant::now();
    for i in 0..writes {
        let mut command = format!("{prefix}{i}=").into_bytes();
        command.extend_from_slice(value);
        let t = Instant::now();
        raft.propose(command).await.unwrap();
        latencies.push(t.elapsed());
    }
    let rate = writes as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (latencies, rate)
}

#[tokio::main]
async fn main() {
    let writes = arg("--writes", 2000);
    let concurrency = arg("--concurrency", 64);
    let value_size = arg("--value-size", 256) as usize;
    let elections = arg("--elections", 5);
    let args: Vec<String> = std::env::args().collect();
    let tmp = tempfile::tempdir_in(
        args.iter()
            .position(|a| a == "--dir")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
    )
    .unwrap();
    let value = vec![b'x'; value_size];

    let mut bench = Bench::new(tmp.path().to_path_buf()).await;
    let leader = bench.leader().await;
    let follower = *bench.nodes.keys().find(|id| **id != leader).unwrap();
    // Warm up connections.
    sequential(&bench.nodes[&leader].raft, 50, &value, "warm").await;

    let (via_leader, seq_rate) = sequential(&bench.nodes[&leader].raft, writes, &value, "l").await;
    if std::env::var("RAFT_BENCH_METRICS").is_ok() {
        for (id, node) in &bench.nodes {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &node.registry).unwrap();
            for line in text.lines().filter(|l| l.contains("storage_write_latency")) {
                println!("node {id}: {line}");
            }
        }
    }
    let (via_follower, follower_rate) =
        sequential(&bench.nodes[&follower].raft, writes / 2, &value, "f").await;

    let raft = Arc::new(bench.nodes[&leader].raft.clone());
    let started = Instant::now();
    let per_client = (writes * 2).div_ceil(concurrency);
    let mut tasks = Vec::new();
    for client in 0..concurrency {
        let raft = raft.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_client {
                let mut command = format!("c{client}-{i}=").into_bytes();
                command.extend_from_slice(&value);
                raft.propose(command).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent_rate = (per_client * concurrency) as f64 / started.elapsed().as_secs_f64();

    let mut election_ms = Vec::new();
    for _ in 0..elections {
        let old = bench.leader().await;
        let t = Instant::now();
        bench.stop(old).await;
        let new = bench.leader().await;
        election_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_ne!(new, old);
        bench.start(old).await;
        bench.leader().await;
    }
    for id in [1, 2, 3] {
        bench.stop(id).await;
    }

    println!("meridian raft (in-process, 3 nodes on loopback, fsync on, {value_size} B values)");
    println!(
        "  sequential via leader:   p50 {:.2} ms  p99 {:.2} ms  {:.0} writes/s",
        percentile(&via_leader, 0.5),
        percentile(&via_leader, 0.99),
        seq_rate
    );
    println!(
        "  sequential via follower: p50 {:.2} ms  p99 {:.2} ms  {:.0} writes/s",
        percentile(&via_follower, 0.5),
        percentile(&via_follower, 0.99),
        follower_rate
    );
    println!("  {concurrency} concurrent clients:   {concurrent_rate:.0} writes/s");
    println!("  election after leader stop: {election_ms:.0?} ms");
    println!(
        "RESULT {{\"impl\":\"meridian-raft-inprocess\",\"value_size\":{value_size},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"seq_writes_per_s\":{seq_rate:.1},\"follower_p50_ms\":{:.3},\"follower_p99_ms\":{:.3},\"concurrent_clients\":{concurrency},\"concurrent_writes_per_s\":{concurrent_rate:.1},\"election_ms\":{election_ms:?}}}",
        percentile(&via_leader, 0.5),
        percentile(&via_leader, 0.99),
        percentile(&via_follower, 0.5),
        percentile(&via_follower, 0.99),
    );
}
