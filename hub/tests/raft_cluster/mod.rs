//! The raft cluster tests (see the crate root).

mod cluster;
mod faults;
mod kv;
mod linearizability;
mod net;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_hub::raft::{RaftError, Role};

use cluster::{Cluster, Options, eventually, metric};
use kv::set;

const SETTLE: Duration = Duration::from_secs(10);

fn followers(leader: u64, ids: &[u64]) -> Vec<u64> {
    ids.iter().copied().filter(|id| *id != leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replicate_writes_from_any_node() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    let follower = followers(leader, &all)[0];

    // Through the leader and through a follower (forwarded over the peer service).
    let mut acknowledged = BTreeMap::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { leader } else { follower };
        let key = format!("k{i}");
        let previous = cluster
            .raft(via)
            .propose(set(&key, &format!("v{i}")))
            .await
            .unwrap();
        assert!(previous.is_empty(), "a new key has no previous value");
        acknowledged.insert(key, format!("v{i}"));
        // The outcome is returned once applied on the proposing node itself.
        assert_eq!(cluster.value(via, &format!("k{i}")), Some(format!("v{i}")));
    }
    // The outcome is the state machine's answer: the previous value.
    let previous = cluster
        .raft(follower)
        .propose(set("k0", "again"))
        .await
        .unwrap();
    assert_eq!(previous, b"v0");
    acknowledged.insert("k0".into(), "again".into());

    cluster.converged(&all, SETTLE).await;
    for id in all {
        assert_eq!(cluster.map(id), acknowledged, "node {id}");
        let status = cluster.status(id);
        assert_eq!(status.leader_id, leader);
        assert_eq!(status.members.len(), 3);
        assert_eq!(status.members[&id], cluster.slots[&id].addr.into());
        assert!(
            status.last_leader_contact.is_some(),
            "node {id} knows its leader contact"
        );
    }
    let text = cluster.metrics(leader);
    assert_eq!(metric(&text, "raft_role"), 3.0);
    assert!(metric(&text, "raft_commit_latency_seconds_count") >= 10.0);
    assert!(metric(&text, "raft_applied_index") >= 21.0);
    assert!(metric(&text, "raft_leader_contact_age_seconds") >= 0.0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_state_and_catches_up() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    for i in 0..10 {
        cluster
            .raft(leader)
            .propose(set(&format!("a{i}"), "1"))
            .await
            .unwrap();
    }
    let restarted = followers(leader, &all)[0];
    cluster.converged(&all, SETTLE).await;
    cluster.stop_node(restarted).await;
    let rest = followers(restarted, &all);
    let leader = cluster.leader(&rest, SETTLE).await;
    for i in 0..10 {
        cluster
            .raft(leader)
            .propose(set(&format!("b{i}"), "2"))
            .await
            .unwrap();
    }
    // initial_members is ignored once the log exists.
    let members = cluster.addresses();
    cluster.start_node(restarted, members).await;
    // Before catching up it already has what it had (replayed from its own log).
    assert_eq!(cluster.value(restarted, "a9"), Some("1".into()));
    cluster.converged(&all, SETTLE).await;
    assert_eq!(cluster.value(restarted, "b9"), Some("2".into()));
    assert_eq!(cluster.map(restarted).len(), 20);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_every_node_keeps_the_state() {
    let options = Options {
        snapshot_threshold: 16,
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    for i in 0..40 {
        cluster
            .raft(leader)
            .propose(set(&format!("k{i}"), &i.to_string()))
            .await
            .unwrap();
    }
    cluster.converged(&all, SETTLE).await;
    let before = cluster.map(leader);
    let applied_before = cluster.status(leader).applied_index;
    cluster.shutdown().await;

    for id in all {
        cluster.start_node(id, BTreeMap::new()).await;
        // Restored from the snapshot and replayed from the log before `spawn` returned.
        assert_eq!(cluster.map(id), before, "node {id} after restart");
        assert!(cluster.status(id).applied_index >= applied_before);
    }
    let leader = cluster.leader(&all, SETTLE).await;
    cluster
        .raft(leader)
        .propose(set("after", "restart"))
        .await
        .unwrap();
    cluster.converged(&all, SETTLE).await;
    assert_eq!(cluster.map(1).len(), 41);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_removed_readded_and_catches_up_through_a_snapshot() {
    let options = Options {
        snapshot_threshold: 20,
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    for i in 0..100 {
        cluster
            .raft(leader)
            .propose(set(&format!("k{i}"), &i.to_string()))
            .await
            .unwrap();
    }
    cluster.converged(&all, SETTLE).await;
    assert!(metric(&cluster.metrics(leader), "raft_snapshots_created_total") >= 1.0);

    let wiped = followers(leader, &all)[0];
    let rest = followers(wiped, &all);
    cluster.stop_node(wiped).await;
    cluster.wipe(wiped);
    // Remove it first: a member that lost its log must not count towards a quorum.
    cluster.raft(rest[0]).remove_member(wiped).await.unwrap();
    eventually("the removal applies everywhere", SETTLE, || {
        rest.iter()
            .all(|id| !cluster.status(*id).members.contains_key(&wiped))
    })
    .await;
    for i in 100..130 {
        cluster
            .raft(rest[1])
            .propose(set(&format!("k{i}"), &i.to_string()))
            .await
            .unwrap();
    }

    // Restart empty, without initial members: it waits to be added.
    cluster.start_node(wiped, BTreeMap::new()).await;
    assert!(cluster.map(wiped).is_empty());
    assert!(cluster.status(wiped).members.is_empty());
    let addr = cluster.slots[&wiped].addr;
    cluster.raft(rest[1]).add_member(wiped, addr).await.unwrap();

    cluster.converged(&all, SETTLE).await;
    assert_eq!(cluster.map(wiped).len(), 130);
    // The add returns once the promotion to voter applied where it was asked; the node itself
    // applies it a moment later.
    eventually("the wiped node sees itself a voter again", SETTLE, || {
        cluster.status(wiped).members.len() == 3
    })
    .await;
    let text = cluster.metrics(wiped);
    assert!(
        metric(&text, "raft_snapshots_installed_total") >= 1.0,
        "{text}"
    );
    assert!(cluster.running(wiped).view.lock().unwrap().restores >= 1);

    // It is a full voter again: the group survives losing another node.
    let other = rest[0];
    cluster.stop_node(other).await;
    let pair = [wiped, rest[1]];
    let leader = cluster.leader(&pair, SETTLE).await;
    cluster
        .raft(leader)
        .propose(set("after", "rejoin"))
        .await
        .unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_and_the_leader_can_remove_itself() {
    let options = Options {
        snapshot_threshold: 20,
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let leader = cluster.leader(&[1, 2, 3], SETTLE).await;
    for i in 0..50 {
        cluster
            .raft(leader)
            .propose(set(&format!("k{i}"), "x"))
            .await
            .unwrap();
    }
    let addr = cluster.add_slot(4).await;
    cluster.start_node(4, BTreeMap::new()).await;
    // A membership change through a follower is forwarded to the leader.
    let follower = followers(leader, &[1, 2, 3])[0];
    cluster.raft(follower).add_member(4, addr).await.unwrap();
    // Adding it again at the same address is a no-op.
    cluster.raft(leader).add_member(4, addr).await.unwrap();
    cluster.converged(&[1, 2, 3, 4], SETTLE).await;
    assert_eq!(cluster.map(4).len(), 50);
    eventually("the new node sees itself a voter", SETTLE, || {
        cluster.status(4).members.len() == 4
    })
    .await;

    // The leader removes itself: it hands leadership over and leaves.
    let removal = tokio::time::timeout(SETTLE, cluster.raft(leader).remove_member(leader)).await;
    assert_eq!(removal.unwrap(), Ok(()));
    let rest: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let new_leader = cluster.leader(&rest, SETTLE).await;
    assert_ne!(new_leader, leader);
    eventually("the old leader stepped down", SETTLE, || {
        cluster.status(leader).role != Role::Leader
    })
    .await;
    cluster
        .raft(new_leader)
        .propose(set("after", "removal"))
        .await
        .unwrap();
    cluster.converged(&rest, SETTLE).await;
    for id in &rest {
        assert!(!cluster.status(*id).members.contains_key(&leader));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_membership_changes_wait_for_each_other() {
    // raft-rs takes one configuration change at a time; a second one arriving while the first
    // is being applied (or right after an election, while the new leader's first entry is)
    // waits its turn instead of failing.
    let mut cluster = Cluster::start(5, Options::default()).await;
    let all = [1, 2, 3, 4, 5];
    let leader = cluster.leader(&all, SETTLE).await;
    let rest = followers(leader, &all);
    let (a, b) = (rest[0], rest[1]);
    let raft = cluster.raft(leader);
    let (first, second) = tokio::join!(raft.remove_member(a), raft.remove_member(b));
    assert_eq!((first, second), (Ok(()), Ok(())));
    eventually("both removals show in the leader's status", SETTLE, || {
        let members = cluster.status(leader).members;
        members.len() == 3 && !members.contains_key(&a) && !members.contains_key(&b)
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_commits_nothing_and_everyone_converges_after_healing() {
    let options = Options {
        request_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let all = [1, 2, 3];
    let old_leader = cluster.leader(&all, SETTLE).await;
    cluster
        .raft(old_leader)
        .propose(set("before", "1"))
        .await
        .unwrap();

    // Cut the leader off.
    cluster.net.isolate(&[old_leader], &all);
    let majority = followers(old_leader, &all);
    let new_leader = cluster.leader(&majority, SETTLE).await;
    assert_ne!(new_leader, old_leader);

    // The minority cannot commit: its proposal fails without being acknowledged...
    let minority_write = cluster
        .raft(old_leader)
        .propose(set("minority", "lost"))
        .await;
    assert!(
        matches!(
            minority_write,
            Err(RaftError::Timeout(_) | RaftError::NoLeader)
        ),
        "{minority_write:?}"
    );
    // ...and neither can a linearizable read.
    let minority_read = cluster.raft(old_leader).read_index().await;
    assert!(minority_read.is_err(), "{minority_read:?}");
    // It stepped down (check_quorum) and reports how long it has been without a leader.
    eventually("the isolated leader steps down", SETTLE, || {
        cluster.status(old_leader).role != Role::Leader
    })
    .await;
    let contact = cluster.status(old_leader).last_leader_contact.unwrap();
    assert!(contact.elapsed() >= Duration::from_millis(200));
    assert!(
        metric(
            &cluster.metrics(old_leader),
            "raft_leader_contact_age_seconds"
        ) >= 0.2
    );

    // The majority goes on.
    for i in 0..10 {
        cluster
            .raft(majority[i % 2])
            .propose(set(&format!("m{i}"), "ok"))
            .await
            .unwrap();
    }
    assert_eq!(cluster.value(old_leader, "m0"), None);

    cluster.net.heal();
    cluster.converged(&all, SETTLE).await;
    for id in all {
        assert_eq!(cluster.value(id, "m9"), Some("ok".into()), "node {id}");
        assert_eq!(
            cluster.value(id, "minority"),
            None,
            "node {id}: an unacknowledged minority write"
        );
    }

    // An isolated follower: its writes fail, the others go on.
    let leader = cluster.leader(&all, SETTLE).await;
    let follower = followers(leader, &all)[0];
    cluster.net.isolate(&[follower], &all);
    let started = Instant::now();
    let write = cluster.raft(follower).propose(set("isolated", "x")).await;
    assert!(write.is_err(), "{write:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    cluster
        .raft(leader)
        .propose(set("still", "going"))
        .await
        .unwrap();
    cluster.net.heal();
    cluster.converged(&all, SETTLE).await;
    assert_eq!(cluster.value(follower, "still"), Some("going".into()));
    cluster.shutdown().await;
}

/// A follower forwards writes to the leader inside the raft stream. When the leader is cut off
/// before it appends one, the follower learns from the next term's first entry that the write
/// can no longer come, and proposes it again to the new leader: the caller sees it succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_leader_that_is_cut_off_goes_to_the_next_leader() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let all = [1, 2, 3];
    let old_leader = cluster.leader(&all, SETTLE).await;
    let follower = followers(old_leader, &all)[0];
    cluster
        .raft(follower)
        .propose(set("before", "1"))
        .await
        .unwrap();

    // Cut the leader off; the follower still takes it for the leader until its election
    // timeout, so this write goes to it and is swallowed.
    cluster.net.isolate(&[old_leader], &all);
    assert_eq!(cluster.status(follower).leader_id, old_leader);
    let started = Instant::now();
    cluster
        .raft(follower)
        .propose(set("across", "terms"))
        .await
        .expect("the write is retried on the new leader");
    let new_leader = cluster.status(follower).leader_id;
    assert_ne!(new_leader, old_leader);
    assert!(started.elapsed() < Duration::from_secs(5));
    let majority = followers(old_leader, &all);
    cluster.converged(&majority, SETTLE).await;
    for id in &majority {
        assert_eq!(
            cluster.value(*id, "across"),
            Some("terms".into()),
            "node {id}"
        );
    }

    cluster.net.heal();
    cluster.converged(&all, SETTLE).await;
    assert_eq!(cluster.value(old_leader, "across"), Some("terms".into()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_index_on_a_follower_sees_the_latest_acknowledged_write() {
    let options = Options {
        // Slow replication to followers makes a stale local read likely without ReadIndex.
        ..Options::default()
    };
    let mut cluster = Cluster::start(3, options).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    let follower = followers(leader, &all)[0];
    cluster.net.set_delay(Duration::from_millis(5));
    for i in 0..30 {
        cluster
            .raft(leader)
            .propose(set("r", &i.to_string()))
            .await
            .unwrap();
        let index = cluster.raft(follower).read_index().await.unwrap();
        assert!(cluster.status(follower).applied_index >= index);
        assert_eq!(
            cluster.value(follower, "r"),
            Some(i.to_string()),
            "read {i} on node {follower}"
        );
    }
    cluster.net.set_delay(Duration::ZERO);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configurations_are_refused_with_the_field_named() {
    let mut cluster = Cluster::empty(Options::default());
    cluster.add_slot(1).await;
    cluster.add_slot(2).await;
    // initial_members must include the node itself.
    let mut config = cluster.config(1, BTreeMap::new());
    config
        .initial_members
        .insert(2, cluster.slots[&2].addr.into());
    let error = cluster.start_with(config).await.unwrap_err();
    assert!(error.to_string().contains("initial_members"), "{error}");
    // Election ticks must exceed heartbeat ticks.
    let mut config = cluster.config(1, cluster.addresses());
    config.election_ticks = 2;
    config.heartbeat_ticks = 2;
    let error = cluster.start_with(config).await.unwrap_err();
    assert!(error.to_string().contains("election_ticks"), "{error}");
    // Node id 0.
    let mut config = cluster.config(1, BTreeMap::new());
    config.node_id = 0;
    let error = meridian_hub::raft::spawn(
        config,
        kv::Kv::new().0,
        &mut prometheus_client::registry::Registry::default(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("node_id"), "{error}");
    // The data directory is locked while a node uses it.
    cluster
        .start_node(1, BTreeMap::from([(1, cluster.slots[&1].addr)]))
        .await;
    let leader = cluster.leader(&[1], SETTLE).await;
    assert_eq!(leader, 1);
    cluster
        .raft(1)
        .propose(set("single", "node"))
        .await
        .unwrap();
    let mut second = cluster.config(1, BTreeMap::new());
    second.advertise_addr = cluster.slots[&2].addr.into();
    let error = meridian_hub::raft::spawn(
        second,
        kv::Kv::new().0,
        &mut prometheus_client::registry::Registry::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, RaftError::Storage(_)), "{error}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_history_is_linearizable_under_faults() {
    let seed = std::env::var("MERIDIAN_RAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001_u64);
    faults::run(seed, Duration::from_secs(12)).await;
    // The long schedule runs in addition, on demand; the short one above is unchanged by it.
    if std::env::var("MERIDIAN_RAFT_SOAK").as_deref() == Ok("1") {
        let secs = std::env::var("MERIDIAN_RAFT_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        let rounds = std::env::var("MERIDIAN_RAFT_SOAK_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3_u64);
        for round in 1..=rounds {
            faults::run(seed.wrapping_add(round), Duration::from_secs(secs)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_every_leader_says_so_before_the_request_timeout() {
    let options = Options {
        request_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let cluster = Cluster::start(3, options).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    let cut_off = followers(leader, &all)[0];
    cluster.net.isolate(&[cut_off], &all);
    // (A write forwarded before the node noticed may have reached the leader: its outcome
    // is unknown until the request timeout. Once the node knows it has no leader, it is not.)
    eventually("the cut-off node to lose its leader", SETTLE, || {
        cluster.status(cut_off).leader_id == 0
    })
    .await;
    // No leader can take the command: the proposal never entered a log, so this is a
    // definite "no leader" (503 at the API), after a few election rounds rather than the
    // 30 s request timeout.
    let started = std::time::Instant::now();
    let write = cluster.raft(cut_off).propose(set("cut", "off")).await;
    assert!(matches!(write, Err(RaftError::NoLeader)), "{write:?}");
    let read = cluster.raft(cut_off).read_index().await;
    assert!(matches!(read, Err(RaftError::NoLeader)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // The write was not applied anywhere.
    cluster.net.heal();
    let leader = cluster.leader(&all, SETTLE).await;
    cluster.raft(leader).read_index().await.unwrap();
    assert_eq!(cluster.value(leader, "cut"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_has_one_id_and_refuses_to_add_a_node_of_another_group() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    let all = [1, 2, 3];
    let leader = cluster.leader(&all, SETTLE).await;
    cluster.raft(leader).propose(set("k", "v")).await.unwrap();
    eventually("every node knows the same group id", SETTLE, || {
        let ids: Vec<Option<String>> = all.iter().map(|id| cluster.status(*id).group_id).collect();
        ids[0].is_some() && ids.iter().all(|id| *id == ids[0])
    })
    .await;
    let group_id = cluster.status(leader).group_id.unwrap();

    // A single-node group of its own, as node 5.
    let mut other = Cluster::empty(Options::default());
    let other_addr = other.add_slot(5).await;
    other.start_node(5, BTreeMap::from([(5, other_addr)])).await;
    other.leader(&[5], SETTLE).await;
    other.raft(5).propose(set("own", "data")).await.unwrap();
    let refused = cluster.raft(leader).add_member(5, other_addr).await;
    let Err(RaftError::Membership(why)) = refused else {
        panic!("adding a node of another group: {refused:?}");
    };
    assert!(why.contains("not an empty node waiting to join"), "{why}");
    let status = cluster.status(leader);
    assert_eq!(status.members.len(), 3);
    assert!(status.learners.is_empty(), "{status:?}");
    assert_eq!(
        other.status(5).members.keys().copied().collect::<Vec<_>>(),
        [5]
    );
    assert_ne!(other.status(5).group_id, Some(group_id.clone()));
    other.shutdown().await;

    // A joining node takes the group's id; a restarted node keeps it.
    let addr = cluster.add_slot(4).await;
    cluster.start_node(4, BTreeMap::new()).await;
    assert_eq!(cluster.status(4).group_id, None);
    cluster.raft(leader).add_member(4, addr).await.unwrap();
    eventually("the new node adopts the group id", SETTLE, || {
        cluster.status(4).group_id.as_deref() == Some(group_id.as_str())
    })
    .await;
    let restarted = followers(leader, &all)[0];
    cluster.stop_node(restarted).await;
    cluster.start_node(restarted, cluster.addresses()).await;
    eventually("the restarted node keeps the group id", SETTLE, || {
        cluster.status(restarted).group_id.as_deref() == Some(group_id.as_str())
    })
    .await;
    cluster.shutdown().await;
}
