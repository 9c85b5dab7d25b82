//! Issue 3 end to end: a 3-node hub of real `meridian hub` processes (real disks, real sockets,
//! a fault-injecting proxy in front of every node's gRPC port) survives kill -9, partitions,
//! full restarts, a wiped data directory and a seeded random fault schedule without losing an
//! acknowledged write or breaking linearizability.
//!
//! Fixture: `meridian_tests::hub::HubCluster`. Run with
//! `cargo nextest run -j2 -p meridian --test e2e raft`.

mod crash;
mod membership;
mod partition;
mod register;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meridian_tests::hub::{Directory, HubCluster};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Upper bound for anything that should settle on a healthy cluster (elections, catch-up).
const SETTLE: Duration = Duration::from_secs(20);

/// `PUT /v1/clusters/{name}` with `spec` on node `via`: the status code, or the transport error.
async fn put_cluster(
    cluster: &HubCluster,
    via: u64,
    name: &str,
    spec: &Value,
) -> Result<u16, String> {
    let (code, body) = cluster
        .send(
            via,
            Method::PUT,
            &format!("/v1/clusters/{name}"),
            Some(spec),
        )
        .await?;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(format!("{code} {body}"))
    }
}

/// Writes `spec` under `name` through `via` and panics unless it is acknowledged.
async fn must_put(cluster: &HubCluster, via: u64, name: &str, spec: &Value) {
    if let Err(e) = put_cluster(cluster, via, name, spec).await {
        panic!("PUT cluster {name} via node {via}: {e}");
    }
}

/// A cluster spec.
fn spec(region: &str) -> Value {
    json!({ "region": region })
}

/// The user-written fields of every cluster of a `GET /v1/clusters` list, by name (health
/// verdicts are the hub's own and may change between two reads).
fn specs(items: &Value) -> BTreeMap<String, Value> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a cluster list: {items}"))
        .iter()
        .map(|c| {
            let name = c["name"].as_str().expect("cluster name").to_string();
            let spec = json!({
                "region": c["region"],
                "addresses": c["addresses"],
                "drained": c["drained"],
            });
            (name, spec)
        })
        .collect()
}

/// The names of a `GET /v1/clusters` list.
fn names(items: &Value) -> BTreeSet<String> {
    specs(items).into_keys().collect()
}

/// `GET /v1/clusters?stale=true` on node `id`: this node's applied state.
async fn stale_clusters(cluster: &HubCluster, id: u64) -> Value {
    match cluster.get(id, "/v1/clusters?stale=true").await {
        Ok((200, body)) => body["items"].clone(),
        other => panic!("stale read on node {id}: {other:?}"),
    }
}

/// A field of node `id`'s `/v1/status` as a number.
async fn status_u64(cluster: &HubCluster, id: u64, field: &str) -> u64 {
    let status = cluster
        .status(id)
        .await
        .unwrap_or_else(|e| panic!("status of node {id}: {e}"));
    status[field]
        .as_u64()
        .unwrap_or_else(|| panic!("node {id} status has no {field}: {status}"))
}

/// The ids in `all` other than `except`.
fn others(all: &[u64], except: &[u64]) -> Vec<u64> {
    all.iter()
        .copied()
        .filter(|id| !except.contains(id))
        .collect()
}

/// What a [`Writer`] saw.
#[derive(Debug, Default)]
struct Written {
    /// The writer's name prefix.
    prefix: String,
    /// Names whose PUT was acknowledged (2xx).
    acked: BTreeSet<String>,
    /// Every name a PUT was sent for (acknowledged or not).
    attempted: BTreeSet<String>,
    /// Failed attempts (each retried).
    failures: usize,
    /// Why attempts failed: HTTP status or transport error, with counts.
    failure_kinds: BTreeMap<String, usize>,
    /// The longest time between two acknowledgements.
    longest_gap: Duration,
}

/// A client that creates clusters `<prefix>-0`, `<prefix>-1`, ... one after another through the
/// nodes that are up, in turn, retrying each (idempotent) PUT until it is acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: JoinHandle<Written>,
}

// === impl Writer ===

impl Writer {
    fn spawn(client: reqwest::Client, directory: Directory, prefix: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let prefix = prefix.to_string();
        let task = tokio::spawn(write_loop(
            client,
            directory,
            prefix,
            stop.clone(),
            acked.clone(),
        ));
        Self { stop, acked, task }
    }

    /// Acknowledged writes so far.
    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `more` writes beyond `from` are acknowledged; panics after `within`.
    async fn progress(&self, from: usize, more: usize, within: Duration, what: &str) {
        let started = Instant::now();
        while self.acked() < from + more {
            assert!(
                started.elapsed() < within,
                "{what}: only {} of {more} writes acknowledged in {within:?}",
                self.acked() - from
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer task")
    }
}

async fn write_loop(
    client: reqwest::Client,
    directory: Directory,
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Written {
    let mut written = Written {
        prefix: format!("{prefix}-"),
        ..Written::default()
    };
    let mut turn = 0usize;
    let mut last_ack = Instant::now();
    let body = spec("us");
    for n in 0.. {
        let name = format!("{prefix}-{n}");
        loop {
            if stop.load(Ordering::SeqCst) {
                return written;
            }
            turn += 1;
            let target = {
                let map = directory.lock().expect("directory");
                map.values().nth(turn % map.len().max(1)).copied()
            };
            let Some(admin) = target else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            written.attempted.insert(name.clone());
            let url = format!("http://{admin}/v1/clusters/{name}");
            match meridian_tests::http::send_json(&client, Method::PUT, &url, Some(&body)).await {
                Ok((code, _)) if (200..300).contains(&code) => {
                    written.acked.insert(name.clone());
                    acked.fetch_add(1, Ordering::SeqCst);
                    written.longest_gap = written.longest_gap.max(last_ack.elapsed());
                    last_ack = Instant::now();
                    break;
                }
                Ok((code, body)) if (400..500).contains(&code) => {
                    panic!("PUT {name} refused: {code} {body}");
                }
                other => {
                    written.failures += 1;
                    let kind = match other {
                        Ok((code, body)) => format!("{code} {}", body["error"]),
                        Err(e) => e,
                    };
                    *written.failure_kinds.entry(kind).or_default() += 1;
                    // Back off a little so a dead node does not spin the loop.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    written
}

/// Checks that every acknowledged write is on every node in `ids` (read with `?stale=true` once
/// each node has applied the leader's commit index) and that nothing appeared that was never
/// sent. Returns the converged cluster list.
async fn all_acknowledged_everywhere(
    cluster: &HubCluster,
    ids: &[u64],
    written: &[&Written],
) -> Value {
    let leader = cluster.leader(ids, SETTLE).await;
    let commit = status_u64(cluster, leader, "commit_index").await;
    let acked: BTreeSet<&String> = written.iter().flat_map(|w| &w.acked).collect();
    let attempted: BTreeSet<&String> = written.iter().flat_map(|w| &w.attempted).collect();
    for id in ids {
        cluster.wait_applied(*id, commit, SETTLE).await;
        let present = names(&stale_clusters(cluster, *id).await);
        let lost: Vec<&&String> = acked.iter().filter(|n| !present.contains(**n)).collect();
        assert!(
            lost.is_empty(),
            "node {id} lost {} acknowledged writes: {lost:?}",
            lost.len()
        );
        let invented: Vec<&String> = present
            .iter()
            .filter(|n| written.iter().any(|w| n.starts_with(&w.prefix)))
            .filter(|n| !attempted.contains(n))
            .collect();
        assert!(
            invented.is_empty(),
            "node {id} has writes nobody sent: {invented:?}"
        );
    }
    cluster.converged(ids, SETTLE).await
}
