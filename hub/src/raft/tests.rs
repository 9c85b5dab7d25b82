//! Unit tests of the raft module: configuration checks, the forwarded-error mapping, and a
//! single-node group (no network) that restarts from its log and its snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::node::ProposeFailure;
use super::transport::{Forwarded, failure_from_pb, failure_to_pb};
use super::{
    PeerAddr, RaftConfig, RaftError, Role, SnapshotEncoder, StateMachine, spawn, validate,
};

/// Appends every command to a list; the outcome is the list's new length.
#[derive(Default)]
struct Log {
    entries: Vec<String>,
    published: Arc<Mutex<(u64, Vec<String>)>>,
}

/// What a [`Log`] published last: the applied index and every command so far.
type Published = Arc<Mutex<(u64, Vec<String>)>>;

impl Log {
    /// An empty log and what it publishes after each batch.
    fn publishing() -> (Self, Published) {
        let published = Arc::new(Mutex::new((0, Vec::new())));
        let log = Self {
            published: published.clone(),
            ..Self::default()
        };
        (log, published)
    }
}

impl StateMachine for Log {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        self.entries
            .push(String::from_utf8_lossy(command).into_owned());
        self.entries.len().to_string().into_bytes()
    }
    fn applied(&mut self, index: u64) {
        *self.published.lock().unwrap() = (index, self.entries.clone());
    }
    fn snapshot(&self) -> Vec<u8> {
        self.entries.join("\n").into_bytes()
    }
    fn restore(&mut self, _index: u64, snapshot: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(snapshot).map_err(|e| e.to_string())?;
        self.entries = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').map(str::to_owned).collect()
        };
        Ok(())
    }
}

/// A [`Log`] whose snapshot encoder waits for a gate to open: a snapshot whose payload takes
/// as long as the test wants.
struct Gated {
    log: Log,
    applied: u64,
    gate: Arc<Gate>,
}

/// Closed until opened; counts the encoders taken and records the index of each.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
    captured: Mutex<Vec<(u64, usize)>>,
}

impl StateMachine for Gated {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.log.apply(index, command)
    }
    fn applied(&mut self, index: u64) {
        self.applied = index;
        self.log.applied(index);
    }
    fn snapshot(&self) -> Vec<u8> {
        self.log.snapshot()
    }
    fn snapshot_encoder(&self) -> SnapshotEncoder {
        let entries = self.log.entries.clone();
        let gate = self.gate.clone();
        gate.captured
            .lock()
            .unwrap()
            .push((self.applied, entries.len()));
        Box::new(move || {
            let mut open = gate.open.lock().unwrap();
            while !*open {
                open = gate.opened.wait(open).unwrap();
            }
            entries.join("\n").into_bytes()
        })
    }
    fn restore(&mut self, index: u64, snapshot: &[u8]) -> Result<(), String> {
        self.applied = index;
        self.log.restore(index, snapshot)
    }
}

fn addr() -> PeerAddr {
    "127.0.0.1:7001".parse().unwrap()
}

fn single(dir: &std::path::Path) -> RaftConfig {
    let mut config = RaftConfig::new(1, dir, addr());
    config.initial_members = BTreeMap::from([(1, addr())]);
    config.tick_interval = Duration::from_millis(10);
    config.snapshot_threshold = 5;
    config.request_timeout = Duration::from_secs(5);
    config
}

/// Starts the single-node group of `dir` with `sm` and waits until it leads.
async fn lead_alone<S: StateMachine>(
    dir: &std::path::Path,
    sm: S,
    registry: &mut Registry,
) -> super::RaftHandle {
    let raft = spawn(single(dir), sm, registry).await.unwrap();
    let mut status = raft.status();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.role == Role::Leader),
    )
    .await
    .unwrap()
    .unwrap();
    raft
}

/// `n` proposals `c1..=cn`, each answered with the log's new length.
async fn propose_n(raft: &super::RaftHandle, n: usize) {
    for i in 1..=n {
        let outcome = raft.propose(format!("c{i}").into_bytes()).await.unwrap();
        assert_eq!(outcome, i.to_string().into_bytes());
    }
}

#[test]
fn configurations_are_validated_with_the_field_named() {
    let dir = std::path::Path::new("/nonexistent");
    type Change = fn(&mut RaftConfig);
    let table: Vec<(&str, Change, &str)> = vec![
        ("zero id", |c| c.node_id = 0, "node_id"),
        (
            "zero tick",
            |c| c.tick_interval = Duration::ZERO,
            "tick_interval",
        ),
        (
            "election <= heartbeat",
            |c| c.election_ticks = 2,
            "election_ticks",
        ),
        (
            "zero heartbeat",
            |c| c.heartbeat_ticks = 0,
            "heartbeat_ticks",
        ),
        (
            "zero threshold",
            |c| c.snapshot_threshold = 0,
            "snapshot_threshold",
        ),
        (
            "member id 0",
            |c| {
                c.initial_members.insert(0, addr());
            },
            "initial_members",
        ),
        (
            "self at another address",
            |c| {
                c.initial_members.insert(1, "127.0.0.1:9".parse().unwrap());
            },
            "advertise_addr",
        ),
    ];
    assert_eq!(validate(&RaftConfig::new(1, dir, addr())), Ok(()));
    for (name, change, field) in table {
        let mut config = RaftConfig::new(1, dir, addr());
        change(&mut config);
        let error = validate(&config).unwrap_err();
        assert!(
            error.to_string().contains(field),
            "{name}: {error} should name {field}"
        );
    }
}

#[test]
fn forwarded_failures_keep_their_meaning() {
    let timeout = Duration::from_secs(3);
    let hint: PeerAddr = "hub-2.peers:7002".parse().unwrap();
    // Not proposed on the leader: the follower may try again (at the hinted leader).
    let not_leader = failure_to_pb(ProposeFailure::NotLeader {
        leader_id: 2,
        leader_addr: Some(hint.clone()),
    });
    assert!(matches!(failure_from_pb(not_leader, timeout), Forwarded::Retry(Some(a)) if a == hint));
    let dropped_for_sure = failure_to_pb(ProposeFailure::Retry("overwritten".into()));
    assert!(matches!(
        failure_from_pb(dropped_for_sure, timeout),
        Forwarded::Retry(None)
    ));
    // Unknown outcomes stay unknown, final errors stay final, and their reasons arrive as
    // they were (not prefixed a second time: "membership change refused: membership ...").
    let cases = [
        (RaftError::Timeout(timeout), RaftError::Timeout(timeout)),
        (
            RaftError::Membership("busy".into()),
            RaftError::Membership("busy".into()),
        ),
        (
            RaftError::Invalid("bad".into()),
            RaftError::Invalid("bad".into()),
        ),
    ];
    for (sent, expected) in cases {
        let pb = failure_to_pb(ProposeFailure::Failed(sent));
        match failure_from_pb(pb, timeout) {
            Forwarded::Failed(got) => assert_eq!(got, expected),
            _ => panic!("expected a final error for {expected:?}"),
        }
    }
    for unknown in [
        RaftError::Dropped("x".into()),
        RaftError::Stopped,
        RaftError::Storage("disk".into()),
    ] {
        let pb = failure_to_pb(ProposeFailure::Failed(unknown.clone()));
        assert!(
            matches!(
                failure_from_pb(pb, timeout),
                Forwarded::Failed(RaftError::Dropped(_))
            ),
            "{unknown:?} must read as an unknown outcome"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_group_commits_snapshots_and_restarts_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (sm, published) = Log::publishing();
    let mut registry = Registry::default();
    let raft = lead_alone(dir.path(), sm, &mut registry).await;
    let mut status = raft.status();
    for i in 1..=12 {
        let outcome = raft.propose(format!("c{i}").into_bytes()).await.unwrap();
        assert_eq!(outcome, i.to_string().into_bytes());
        // The outcome comes after the state machine published the batch.
        assert_eq!(published.lock().unwrap().1.len(), i);
    }
    let index = raft.read_index().await.unwrap();
    assert!(raft.status().borrow().applied_index >= index);
    // Snapshots are written off the Raft thread: wait until the last one due is recorded.
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.snapshot_index + 5 > s.applied_index),
    )
    .await
    .unwrap()
    .unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let snapshots: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("raft_snapshots_created_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(snapshots >= 2.0, "{text}");
    // Membership: removing the only voter is refused; an invalid id too.
    assert!(matches!(
        raft.remove_member(1).await,
        Err(RaftError::Membership(_))
    ));
    assert!(matches!(
        raft.add_member(0, addr()).await,
        Err(RaftError::Invalid(_))
    ));
    // Too large a command.
    assert!(matches!(
        raft.propose(vec![0; 33 << 20]).await,
        Err(RaftError::Invalid(_))
    ));
    raft.shutdown().await;
    assert_eq!(
        raft.propose(b"late".to_vec()).await,
        Err(RaftError::Stopped)
    );

    // Restart: snapshot + log replayed before spawn returns.
    let (sm, published) = Log::publishing();
    let raft = spawn(single(dir.path()), sm, &mut Registry::default())
        .await
        .unwrap();
    let expected: Vec<String> = (1..=12).map(|i| format!("c{i}")).collect();
    assert_eq!(published.lock().unwrap().1, expected);
    let outcome = raft.propose(b"c13".to_vec()).await.unwrap();
    assert_eq!(outcome, b"13");
    raft.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_commit_while_a_snapshot_is_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let sm = Gated {
        log: Log::default(),
        applied: 0,
        gate: gate.clone(),
    };
    let raft = lead_alone(dir.path(), sm, &mut Registry::default()).await;
    let mut status = raft.status();
    let wait = Duration::from_secs(5);
    // Past the threshold (5) a snapshot starts, and its encoding blocks on the gate; the node
    // goes on committing (each proposal waits for its apply), far past the threshold again.
    propose_n(&raft, 30).await;
    let captured = gate.captured.lock().unwrap().clone();
    assert_eq!(captured.len(), 1, "one snapshot at a time: {captured:?}");
    let (index, n_entries) = captured[0];
    assert!((1..30).contains(&n_entries), "{captured:?}");
    assert_eq!(
        raft.status().borrow().snapshot_index,
        1,
        "only the bootstrap snapshot"
    );

    // Once written, it is recorded at the index it was captured at; the next one follows.
    {
        *gate.open.lock().unwrap() = true;
        gate.opened.notify_all();
    }
    tokio::time::timeout(wait, status.wait_for(|s| s.snapshot_index > index))
        .await
        .unwrap()
        .unwrap();
    raft.shutdown().await;
    let captured = gate.captured.lock().unwrap().clone();
    assert!(captured.len() >= 2, "{captured:?}");

    // The snapshots hold exactly the state of their index: with the log after them replayed,
    // every command is there once.
    let (sm, published) = Log::publishing();
    let raft = spawn(single(dir.path()), sm, &mut Registry::default())
        .await
        .unwrap();
    assert!(raft.status().borrow().snapshot_index > index);
    let expected: Vec<String> = (1..=30).map(|i| format!("c{i}")).collect();
    assert_eq!(published.lock().unwrap().1, expected);
    raft.shutdown().await;
}

#[test]
fn the_store_machine_encoder_keeps_the_state_it_was_taken_at() {
    use crate::store::encoding::{decode_snapshot, encode_command};
    use crate::store::{Action, Command, StoreMachine};
    use meridian_proto::model::{Cluster, ClusterName, Region};

    let put = |name: &str| {
        encode_command(&Command {
            actor: "test".to_string(),
            unix_ms: 1_700_000_000_000,
            action: Action::PutCluster(Cluster {
                name: ClusterName::new(name).unwrap(),
                region: Region::new("eu").unwrap(),
                addresses: vec!["127.0.1.1".parse().unwrap()],
                drained: false,
            }),
        })
    };
    let (mut machine, watches, _feed) = StoreMachine::new(&mut Registry::default());
    machine.apply(1, &put("one"));
    machine.applied(1);
    let encoder = machine.snapshot_encoder();
    let at_capture = watches.view.borrow().state.clone();
    // Later batches (which reuse spare copies of the state) do not reach the captured one.
    for (index, name) in [(2, "two"), (3, "three"), (4, "four"), (5, "five")] {
        machine.apply(index, &put(name));
        machine.applied(index);
    }
    let state = decode_snapshot(&encoder()).unwrap();
    assert_eq!(state, *at_capture);
    assert_eq!(
        decode_snapshot(&machine.snapshot()).unwrap(),
        *watches.view.borrow().state
    );
    assert_ne!(state, *watches.view.borrow().state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_written_leaves_the_node_serving_with_its_log_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (sm, _) = Log::publishing();
    // The snapshot directory cannot be created: a file holds its name (as a full disk or a
    // permission would make the write fail).
    std::fs::write(dir.path().join("snapshots"), b"in the way").unwrap();
    let mut registry = Registry::default();
    let raft = lead_alone(dir.path(), sm, &mut registry).await;
    propose_n(&raft, 30).await;
    let failures = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("raft_snapshot_failures_total "))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for _ in 0..100 {
        if failures() >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failures() >= 1.0, "the failed write is counted");
    assert!(
        raft.status().borrow().snapshot_index <= 1,
        "no snapshot past the one the group was founded with"
    );
    // Still serving, and a restart replays the whole log.
    assert_eq!(raft.propose(b"c31".to_vec()).await.unwrap(), b"31");
    raft.shutdown().await;
    std::fs::remove_file(dir.path().join("snapshots")).unwrap();
    let (sm, published) = Log::publishing();
    let raft = spawn(single(dir.path()), sm, &mut Registry::default())
        .await
        .unwrap();
    assert_eq!(published.lock().unwrap().1.len(), 31);
    raft.shutdown().await;
}
