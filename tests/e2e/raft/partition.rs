//! Partitions through the proxies: a cut-off follower, then a cut-off leader. The minority
//! commits nothing, the majority goes on, and after healing every node has the same state.

use std::time::{Duration, Instant};

use meridian_tests::faultproxy::Fault;
use meridian_tests::hub::{HubCluster, HubOptions};

use super::{SETTLE, must_put, names, others, put_cluster, spec, stale_clusters, status_u64};
use crate::meridian_bin;

/// `raft.request_timeout_ms` of these nodes: how long a write or linearizable read waits for a
/// quorum before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A write through the minority node `via` must not be acknowledged: it fails (503/504) or the
/// request times out. Returns how long it took.
async fn minority_write_fails(cluster: &HubCluster, via: u64, name: &str) -> Duration {
    let started = Instant::now();
    let result = put_cluster(cluster, via, name, &spec("us")).await;
    let took = started.elapsed();
    assert!(
        result.is_err(),
        "a write through node {via}, cut off from the majority, was acknowledged ({result:?})"
    );
    eprintln!("minority write via node {via} failed after {took:?}: {result:?}");
    took
}

/// A linearizable read on minority node `via` fails; a stale one answers.
async fn minority_reads(cluster: &HubCluster, via: u64) {
    let read = cluster.get(via, "/v1/clusters").await;
    assert!(
        !matches!(read, Ok((200, _))),
        "a linearizable read on node {via}, cut off from the majority, succeeded: {read:?}"
    );
    let (code, body) = cluster
        .get(via, "/v1/clusters?stale=true")
        .await
        .expect("stale read");
    assert_eq!(code, 200, "a stale read works without a quorum: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_commits_nothing_majority_goes_on_and_all_converge() {
    let options = HubOptions {
        request_timeout_ms: Some(u64::try_from(REQUEST_TIMEOUT.as_millis()).unwrap()),
        ..HubOptions::default()
    };
    let cluster = HubCluster::start(meridian_bin(), options).await;
    let all = cluster.ids();
    let leader = cluster.leader(&all, SETTLE).await;
    must_put(&cluster, leader, "before", &spec("us")).await;

    // 1. Cut a follower off (every link, both ways; connections refused).
    let follower = others(&all, &[leader])[0];
    let majority = others(&all, &[follower]);
    cluster.converged(&all, SETTLE).await;
    let follower_commit = status_u64(&cluster, follower, "commit_index").await;
    cluster.net.partition(&[follower], &all, Fault::Cut);

    let took = minority_write_fails(&cluster, follower, "minority-1").await;
    assert!(
        took < REQUEST_TIMEOUT + Duration::from_secs(3),
        "the minority write hung for {took:?}"
    );
    minority_reads(&cluster, follower).await;
    for i in 0..10 {
        let via = majority[i % 2];
        must_put(&cluster, via, &format!("majority-1-{i}"), &spec("eu")).await;
    }
    // The follower learned of no commit while cut off, and its applied state lacks them.
    assert_eq!(
        status_u64(&cluster, follower, "commit_index").await,
        follower_commit,
        "node {follower} advanced its commit index while cut off"
    );
    let seen = names(&stale_clusters(&cluster, follower).await);
    assert!(!seen.contains("majority-1-0"), "{seen:?}");

    cluster.net.heal();
    let items = cluster.converged(&all, SETTLE).await;
    let present = names(&items);
    assert!(
        !present.contains("minority-1"),
        "an unacknowledged minority write: {present:?}"
    );
    assert!(
        (0..10).all(|i| present.contains(&format!("majority-1-{i}"))),
        "{present:?}"
    );

    // 2. Cut the leader off; this time the network swallows its packets (blackhole).
    let old_leader = cluster.leader(&all, SETTLE).await;
    let rest = others(&all, &[old_leader]);
    let cut_at = Instant::now();
    cluster.net.partition(&[old_leader], &all, Fault::Blackhole);
    let new_leader = cluster.leader(&rest, SETTLE).await;
    assert_ne!(new_leader, old_leader);
    eprintln!(
        "measured: leader {old_leader} cut off -> node {new_leader} leader after {:?}",
        cut_at.elapsed()
    );
    for i in 0..10 {
        let via = rest[i % 2];
        must_put(&cluster, via, &format!("majority-2-{i}"), &spec("us")).await;
    }
    // The old leader cannot commit: its write fails, its reads need a quorum, and it steps
    // down once it has not heard from a quorum for an election timeout.
    let old_commit = status_u64(&cluster, old_leader, "commit_index").await;
    minority_write_fails(&cluster, old_leader, "minority-2").await;
    minority_reads(&cluster, old_leader).await;
    let status = cluster.status(old_leader).await.expect("status");
    assert_ne!(
        status["role"], "leader",
        "node {old_leader} still leads alone: {status}"
    );
    assert_eq!(
        status_u64(&cluster, old_leader, "commit_index").await,
        old_commit,
        "the cut-off leader committed something"
    );
    let seen = names(&stale_clusters(&cluster, old_leader).await);
    assert!(!seen.contains("majority-2-0"), "{seen:?}");

    // 3. Heal: everyone converges on the majority's history.
    cluster.net.heal();
    let items = cluster.converged(&all, SETTLE).await;
    let present = names(&items);
    for name in ["minority-1", "minority-2"] {
        assert!(
            !present.contains(name),
            "unacknowledged {name} appeared: {present:?}"
        );
    }
    for round in 1..=2 {
        for i in 0..10 {
            let name = format!("majority-{round}-{i}");
            assert!(present.contains(&name), "{name} is missing: {present:?}");
        }
    }
    assert!(present.contains("before"));
    let leader = cluster.leader(&all, SETTLE).await;
    must_put(&cluster, leader, "after-heal", &spec("us")).await;
    cluster.converged(&all, SETTLE).await;
}
