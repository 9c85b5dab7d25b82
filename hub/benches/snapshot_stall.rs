//! How long a local snapshot stalls the Raft thread, on a single-node hub whose state holds
//! 10,000 shared HTTPRoutes.
//!
//! Loads the routes, then proposes small commands (a cluster definition, which leaves the shared
//! routes alone, so a batch costs little besides its fsync) one at a time while the node takes a
//! snapshot every `SNAPSHOT_EVERY` entries, and prints:
//! - `raft_snapshot_stall_seconds` (time the Raft thread itself spent per snapshot) for the
//!   snapshots taken during the measured phase;
//! - the proposal latencies of that phase (p50, p99, max): a proposal that meets a snapshot
//!   waits for whatever the Raft thread does for it.
//!
//! ```text
//! cargo bench -j2 -p meridian-hub --bench snapshot_stall [-- --routes 10000 --writes 4000]
//! ```
//!
//! Not a criterion bench: the cost measured is a pause inside a running node, not a function
//! that can be called in a loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_hub::raft::{self, PeerAddr, RaftConfig, RaftHandle};
use meridian_hub::store::encoding::encode_command;
use meridian_hub::store::{Action, Command, StoreMachine};
use meridian_proto::model::route::{
    BackendRef, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, PathMatch, Resolution,
};
use meridian_proto::model::{Cluster, ClusterName, ObjectKey, Region};
use prometheus_client::registry::Registry;

/// A snapshot every this many applied entries.
const SNAPSHOT_EVERY: u64 = 1_000;
/// Proposals in flight while loading the routes.
const LOAD_CONCURRENCY: usize = 64;

fn main() {
    let mut routes = 10_000_usize;
    let mut writes = 4_000_usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--routes" => routes = args.next().and_then(|v| v.parse().ok()).unwrap(),
            "--writes" => writes = args.next().and_then(|v| v.parse().ok()).unwrap(),
            // `cargo bench` passes `--bench`; anything else is ignored likewise.
            _ => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(routes, writes));
}

async fn run(n_routes: usize, n_writes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let addr: PeerAddr = "127.0.0.1:7001".parse().unwrap();
    let mut config = RaftConfig::new(1, dir.path().join("raft"), addr.clone());
    config.initial_members = BTreeMap::from([(1, addr)]);
    config.snapshot_threshold = SNAPSHOT_EVERY;
    let mut registry = Registry::default();
    let (machine, _watches, _feed) = StoreMachine::new(&mut registry);
    let raft = Arc::new(raft::spawn(config, machine, &mut registry).await.unwrap());
    wait_leader(&raft).await;

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for _ in 0..LOAD_CONCURRENCY {
        let raft = raft.clone();
        let next = next.clone();
        loaders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n_routes {
                    break;
                }
                raft.propose(put_route(i, 0)).await.unwrap();
            }
        }));
    }
    for loader in loaders {
        loader.await.unwrap();
    }
    println!(
        "loaded {n_routes} routes in {:.1} s; latest snapshot {} bytes",
        started.elapsed().as_secs_f64(),
        metric(&registry, "raft_snapshot_size_bytes")
    );

    let stall_before = (
        metric(&registry, "raft_snapshot_stall_seconds_sum"),
        metric(&registry, "raft_snapshot_stall_seconds_count"),
    );
    let mut latencies = Vec::with_capacity(n_writes);
    for i in 0..n_writes {
        let command = put_cluster(i);
        let sent = Instant::now();
        raft.propose(command).await.unwrap();
        latencies.push(sent.elapsed());
    }
    let stall_sum = metric(&registry, "raft_snapshot_stall_seconds_sum") - stall_before.0;
    let n_snapshots = metric(&registry, "raft_snapshot_stall_seconds_count") - stall_before.1;
    let ready_write = metric(&registry, "raft_storage_write_latency_seconds_sum")
        / metric(&registry, "raft_storage_write_latency_seconds_count");
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "snapshot size {} bytes; {n_snapshots} snapshots during {n_writes} writes; raft thread \
         stall per snapshot: mean {:.2} ms",
        metric(&registry, "raft_snapshot_size_bytes"),
        if n_snapshots > 0.0 {
            stall_sum / n_snapshots * 1e3
        } else {
            0.0
        }
    );
    println!(
        "proposal latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest five: {:?} ms; \
         mean Ready write (fsync'd) {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
        latencies
            .iter()
            .rev()
            .take(5)
            .map(|d| (ms(*d) * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        ready_write * 1e3
    );
    raft.shutdown().await;
}

/// A route with a few hostnames and rules, about the size of a real one; `generation` changes
/// it so a later PUT is a real change.
fn put_route(i: usize, generation: u64) -> Vec<u8> {
    let namespace = format!("team-{}", i % 97);
    let rules = (0..3)
        .map(|r| HttpRouteRule {
            name: None,
            matches: vec![HttpRouteMatch {
                path: PathMatch::Prefix(format!("/service-{i}/v{r}")),
                headers: Vec::new(),
                query_params: Vec::new(),
                method: None,
            }],
            filters: Vec::new(),
            backend_refs: vec![HttpBackendRef {
                backend_ref: BackendRef {
                    group: String::new(),
                    kind: "Service".to_string(),
                    namespace: namespace.clone(),
                    name: format!("backend-{i}-{r}"),
                    port: Some(8080),
                    resolution: Resolution::Unresolved,
                },
                weight: 1,
                filters: Vec::new(),
            }],
            timeouts: Default::default(),
            retry: None,
            session_persistence: None,
        })
        .collect();
    let route = HttpRoute {
        key: ObjectKey::new(&namespace, format!("route-{i}")).unwrap(),
        created_unix_ms: i64::try_from(generation).unwrap(),
        parent_refs: Vec::new(),
        hostnames: (0..3)
            .map(|h| format!("app-{i}-{h}.demo.meridian.test"))
            .collect(),
        rules,
    };
    encode_command(&Command {
        actor: "bench".to_string(),
        unix_ms: 1_700_000_000_000 + generation,
        action: Action::PutRoute(Box::new(route)),
    })
}

/// One of ten clusters, with an address that changes on every call.
fn put_cluster(i: usize) -> Vec<u8> {
    let cluster = Cluster {
        name: ClusterName::new(format!("cluster-{}", i % 10)).unwrap(),
        region: Region::new("eu").unwrap(),
        addresses: vec![std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8])],
        drained: false,
    };
    encode_command(&Command {
        actor: "bench".to_string(),
        unix_ms: 1_700_000_000_000,
        action: Action::PutCluster(cluster),
    })
}

async fn wait_leader(raft: &RaftHandle) {
    let mut status = raft.status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status.borrow().role != raft::Role::Leader {
        tokio::time::timeout_at(deadline, status.changed())
            .await
            .unwrap()
            .unwrap();
    }
}

/// One sample's value from the registry's text form.
fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
