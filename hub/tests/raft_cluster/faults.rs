//! A seeded randomized fault schedule (node crashes and restarts, partitions, blackholes,
//! message delay) against a register workload, checked for linearizability.
//!
//! The schedule (which fault, when, on which node) and every client's choices come from the
//! seed; thread timing does not, so a failing seed reproduces the same schedule, not the same
//! interleaving. The seed is printed on failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_hub::raft::{RaftError, RaftHandle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cluster::{Cluster, Options};
use super::kv::{View, set};
use super::linearizability::{self, Kind, Op};

const KEY: &str = "register";
const N: u64 = 3;

/// The nodes clients can currently talk to.
type Directory = Arc<Mutex<BTreeMap<u64, (RaftHandle, Arc<Mutex<View>>)>>>;

fn publish(cluster: &Cluster, directory: &Directory) {
    let mut map = directory.lock().unwrap();
    map.clear();
    for id in cluster.running_ids() {
        let running = cluster.running(id);
        map.insert(id, (running.raft.clone(), running.view.clone()));
    }
}

/// Runs the schedule for `duration`, then heals, and checks the history.
pub async fn run(seed: u64, duration: Duration) {
    let options = Options {
        request_timeout: Duration::from_secs(2),
        // Snapshots and compaction happen under faults too.
        snapshot_threshold: 64,
        ..Options::default()
    };
    let mut cluster = Cluster::start(N, options).await;
    let all: Vec<u64> = (1..=N).collect();
    cluster.leader(&all, Duration::from_secs(10)).await;
    let directory: Directory = Arc::new(Mutex::new(BTreeMap::new()));
    publish(&cluster, &directory);

    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let mut clients = Vec::new();
    for client in 1..=3u64 {
        clients.push(tokio::spawn(client_loop(
            client,
            seed ^ (client << 32),
            origin,
            directory.clone(),
            stop.clone(),
            history.clone(),
        )));
    }

    // The nemesis.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    let mut down: Option<u64> = None;
    let end = origin + duration;
    while Instant::now() < end {
        // Fault pacing (the schedule), not synchronisation.
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..600))).await;
        match rng.random_range(0..6) {
            0 | 1 => match down.take() {
                None => {
                    let victim = rng.random_range(1..=N);
                    cluster.stop_node(victim).await;
                    publish(&cluster, &directory);
                    log.push(format!("{:?} crash {victim}", origin.elapsed()));
                    down = Some(victim);
                }
                Some(victim) => {
                    cluster.start_node(victim, BTreeMap::new()).await;
                    publish(&cluster, &directory);
                    log.push(format!("{:?} restart {victim}", origin.elapsed()));
                }
            },
            2 => {
                let victim = rng.random_range(1..=N);
                cluster.net.heal();
                cluster.net.isolate(&[victim], &all);
                log.push(format!("{:?} isolate {victim}", origin.elapsed()));
            }
            3 => {
                cluster.net.heal();
                log.push(format!("{:?} heal", origin.elapsed()));
            }
            4 => {
                let delay = Duration::from_millis(rng.random_range(0..25));
                cluster.net.set_delay(delay);
                log.push(format!("{:?} delay {delay:?}", origin.elapsed()));
            }
            _ => {
                let blackhole = rng.random_bool(0.5);
                cluster.net.set_blackhole(blackhole);
                log.push(format!("{:?} blackhole {blackhole}", origin.elapsed()));
            }
        }
    }

    // Heal everything and let the clients run on a healthy cluster for a moment.
    cluster.net.heal();
    cluster.net.set_blackhole(false);
    if let Some(victim) = down.take() {
        cluster.start_node(victim, BTreeMap::new()).await;
        publish(&cluster, &directory);
    }
    log.push(format!("{:?} heal all", origin.elapsed()));
    let context = format!("seed {seed}; schedule:\n{}", log.join("\n"));
    let leader = cluster.leader(&all, Duration::from_secs(15)).await;
    let before_final = history.lock().unwrap().len();
    let healthy_until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < healthy_until && history.lock().unwrap().len() < before_final + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    // Final linearizable reads on every node are part of the history.
    for id in &all {
        let call = nanos(origin);
        let raft = cluster.raft(*id).clone();
        let index = raft
            .read_index()
            .await
            .unwrap_or_else(|e| panic!("final read on node {id}: {e}; {context}"));
        assert!(raft.status().borrow().applied_index >= index);
        let value = read_value(&cluster.running(*id).view);
        history.lock().unwrap().push(Op {
            client: 100 + id,
            kind: Kind::Read(value),
            call,
            ret: Some(nanos(origin)),
        });
    }
    cluster.converged(&all, Duration::from_secs(15)).await;

    let history = history.lock().unwrap().clone();
    let acknowledged_writes = history
        .iter()
        .filter(|op| matches!(op.kind, Kind::Write(_)) && op.ret.is_some())
        .count();
    let reads = history
        .iter()
        .filter(|op| matches!(op.kind, Kind::Read(_)))
        .count();
    let unknown = history.iter().filter(|op| op.ret.is_none()).count();
    eprintln!(
        "seed {seed}: {} ops ({acknowledged_writes} acknowledged writes, {reads} reads, {unknown} unknown outcomes), leader {leader}",
        history.len()
    );
    assert!(
        acknowledged_writes >= 20,
        "too little progress to check ({acknowledged_writes} writes); {context}"
    );
    if let Err(e) = linearizability::check(&history) {
        panic!("{e}; {context}");
    }
    cluster.shutdown().await;
}

fn nanos(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap()
}

fn read_value(view: &Arc<Mutex<View>>) -> u64 {
    view.lock()
        .unwrap()
        .map
        .get(KEY)
        .map_or(0, |v| v.parse().unwrap())
}

async fn client_loop(
    client: u64,
    seed: u64,
    origin: Instant,
    directory: Directory,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let target = {
            let map = directory.lock().unwrap();
            if map.is_empty() {
                None
            } else {
                let pick = rng.random_range(0..map.len());
                map.values().nth(pick).cloned()
            }
        };
        let Some((raft, view)) = target else {
            tokio::task::yield_now().await;
            continue;
        };
        if rng.random_bool(0.5) {
            seq += 1;
            // Unique values: client in the high bits.
            let value = client * 1_000_000 + seq;
            let call = nanos(origin);
            let result = raft.propose(set(KEY, &value.to_string())).await;
            let ret = nanos(origin);
            let ret = match result {
                Ok(_) => Some(ret),
                // Definitely not applied: not part of the history.
                Err(RaftError::NoLeader | RaftError::Invalid(_)) => continue,
                // May or may not have been applied.
                Err(_) => None,
            };
            history.lock().unwrap().push(Op {
                client,
                kind: Kind::Write(value),
                call,
                ret,
            });
        } else {
            let call = nanos(origin);
            if raft.read_index().await.is_err() {
                continue;
            }
            let value = read_value(&view);
            history.lock().unwrap().push(Op {
                client,
                kind: Kind::Read(value),
                call,
                ret: Some(nanos(origin)),
            });
        }
    }
}
