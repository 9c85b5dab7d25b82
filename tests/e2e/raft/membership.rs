//! A node whose data directory was wiped comes back the documented way (`meridian ctl members
//! remove`, restart with `--join`, `meridian ctl members add`) and catches up through a snapshot;
//! a new node must answer as an empty `--join` node before it is added, and joins as a learner,
//! so one that is not running is refused and costs the group nothing.

use std::time::Instant;

use meridian_tests::hub::{Boot, HubCluster, HubOptions, metric};

use super::{SETTLE, must_put, others, spec, specs, stale_clusters};
use crate::meridian_bin;

/// Member ids in node `id`'s `/v1/status`.
async fn members(cluster: &HubCluster, id: u64) -> Vec<u64> {
    ids_in(cluster, id, "members").await
}

/// Kills node `wiped`, deletes its data directory and removes it from the group through node
/// `via` (`meridian ctl members remove`), the documented first step of bringing it back.
async fn wipe_and_remove(cluster: &mut HubCluster, wiped: u64, via: u64) {
    cluster.kill(wiped);
    cluster.wipe(wiped);
    let (ok, out) = cluster
        .ctl(via, &["members", "remove", &wiped.to_string()])
        .await;
    assert!(ok, "meridian ctl members remove {wiped}: {out}");
}

/// The ids of `/v1/status`'s `key` list ("members" or "learners") on node `id`.
async fn ids_in(cluster: &HubCluster, id: u64, key: &str) -> Vec<u64> {
    let status = cluster.status(id).await.expect("status");
    status[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_that_is_not_running_is_refused_and_costs_no_quorum() {
    let mut cluster = HubCluster::start(meridian_bin(), HubOptions::default()).await;
    let all = cluster.ids();
    let leader = cluster.leader(&all, SETTLE).await;
    // One voter down: two of three is still a quorum, but not two of four.
    let down = others(&all, &[leader])[0];
    cluster.kill(down);
    let rest = others(&all, &[down]);

    // An address where no hub runs, below the ephemeral range so nothing binds it meanwhile.
    let nowhere = format!(
        "127.0.0.1:{}",
        meridian_tests::net::free_port(std::net::Ipv4Addr::LOCALHOST.into())
    );
    // The leader asks a node before adding it (it must be an empty --join node with that id):
    // one that does not answer is refused, with the way to add it.
    let (ok, out) = cluster
        .ctl(rest[0], &["members", "add", "9", &nowhere])
        .await;
    assert!(!ok, "adding a node that is not running succeeded: {out}");
    assert!(
        out.contains("cannot reach node 9") && out.contains("--join"),
        "the failure does not say why: {out}"
    );
    for id in &rest {
        assert!(ids_in(&cluster, *id, "learners").await.is_empty());
        assert!(!members(&cluster, *id).await.contains(&9));
    }

    // The group still has its quorum: two live voters of three commit.
    let leader = cluster.leader(&rest, SETTLE).await;
    must_put(&cluster, leader, "after-failed-add", &spec("us")).await;
    must_put(&cluster, rest[1], "after-refusal", &spec("eu")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_rejoins_and_catches_up_through_a_snapshot() {
    let options = HubOptions {
        snapshot_threshold: Some(20),
        ..HubOptions::default()
    };
    let mut cluster = HubCluster::start(meridian_bin(), options).await;
    let all = cluster.ids();
    let leader = cluster.leader(&all, SETTLE).await;
    for i in 0..50 {
        must_put(&cluster, leader, &format!("old-{i}"), &spec("us")).await;
    }
    cluster.converged(&all, SETTLE).await;

    let wiped = others(&all, &[leader])[0];
    let rest = others(&all, &[wiped]);
    // Remove it first: a member that lost its log must not count towards a quorum.
    wipe_and_remove(&mut cluster, wiped, rest[0]).await;
    for id in &rest {
        let started = Instant::now();
        while members(&cluster, *id).await.contains(&wiped) {
            assert!(started.elapsed() < SETTLE, "node {id} still lists {wiped}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // Writes go on with two members (a quorum of two), past another snapshot.
    for i in 0..30 {
        must_put(&cluster, rest[i % 2], &format!("new-{i}"), &spec("eu")).await;
    }

    // Back empty with --join: it knows no members and no state until it is added.
    cluster.start_node(wiped, Boot::Join).await;
    assert!(members(&cluster, wiped).await.is_empty());
    assert!(specs(&stale_clusters(&cluster, wiped).await).is_empty());
    let addr = cluster.node(wiped).advertise.to_string();
    let (ok, out) = cluster
        .ctl(rest[1], &["members", "add", &wiped.to_string(), &addr])
        .await;
    assert!(ok, "meridian ctl members add {wiped} {addr}: {out}");

    let items = specs(&cluster.converged(&all, SETTLE).await);
    assert_eq!(items.len(), 80, "{items:?}");
    let mut listed = members(&cluster, wiped).await;
    listed.sort();
    assert_eq!(listed, all);
    let text = cluster.metrics(wiped).await.expect("metrics");
    let installed = metric(&text, "raft_snapshots_installed_total").unwrap_or(0.0);
    assert!(
        installed >= 1.0,
        "node {wiped} caught up without installing a snapshot:\n{text}"
    );

    // It is a full voter again: the group survives losing another node.
    cluster.kill(rest[0]);
    let pair = [wiped, rest[1]];
    let leader = cluster.leader(&pair, SETTLE).await;
    must_put(&cluster, leader, "after-rejoin", &spec("us")).await;
    let items = specs(&cluster.converged(&pair, SETTLE).await);
    assert_eq!(items.len(), 81);
}

/// Kubernetes StatefulSet pods keep their DNS names, not their IPs, so the group must work with
/// members known by name: elect, replicate, fail over, take a restarted node back, and add a
/// wiped node by name (which carries the names through a membership change and a snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_members_are_known_by_dns_name_fails_over_and_adds_a_node_by_name() {
    let options = HubOptions {
        by_name: true,
        snapshot_threshold: Some(20),
        ..HubOptions::default()
    };
    let mut cluster = HubCluster::start(meridian_bin(), options).await;
    let all = cluster.ids();
    let leader = cluster.leader(&all, SETTLE).await;
    let status = cluster.status(leader).await.expect("status");
    for member in status["members"].as_array().expect("members") {
        let id = member["id"].as_u64().expect("id");
        assert_eq!(
            member["addr"].as_str(),
            Some(cluster.node(id).advertise.as_str()),
            "{status}"
        );
        assert!(cluster.node(id).advertise.starts_with("localhost:"));
    }
    for i in 0..30 {
        must_put(&cluster, leader, &format!("before-{i}"), &spec("us")).await;
    }

    // The leader dies: the other two elect one of themselves and go on.
    cluster.kill(leader);
    let rest = others(&all, &[leader]);
    let second = cluster.leader(&rest, SETTLE).await;
    must_put(&cluster, second, "after-failover", &spec("eu")).await;
    cluster.start_node(leader, Boot::Peers).await;
    assert_eq!(specs(&cluster.converged(&all, SETTLE).await).len(), 31);

    // A wiped follower comes back empty and is added by name; it catches up by snapshot.
    let leader = cluster.leader(&all, SETTLE).await;
    let wiped = others(&all, &[leader])[0];
    let rest = others(&all, &[wiped]);
    wipe_and_remove(&mut cluster, wiped, rest[0]).await;
    for i in 0..25 {
        must_put(
            &cluster,
            rest[i % 2],
            &format!("while-away-{i}"),
            &spec("eu"),
        )
        .await;
    }
    cluster.start_node(wiped, Boot::Join).await;
    let addr = cluster.node(wiped).advertise.clone();
    let (ok, out) = cluster
        .ctl(rest[1], &["members", "add", &wiped.to_string(), &addr])
        .await;
    assert!(ok, "meridian ctl members add {wiped} {addr}: {out}");
    assert_eq!(specs(&cluster.converged(&all, SETTLE).await).len(), 56);
    let text = cluster.metrics(wiped).await.expect("metrics");
    assert!(
        metric(&text, "raft_snapshots_installed_total").unwrap_or(0.0) >= 1.0,
        "node {wiped} caught up without installing a snapshot"
    );
    // It knows every member by name, and votes: the group survives losing another node.
    let status = cluster.status(wiped).await.expect("status");
    let names: Vec<&str> = status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["addr"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{status}");
    assert!(
        names.iter().all(|n| n.starts_with("localhost:")),
        "{status}"
    );
    cluster.kill(rest[0]);
    let pair = [wiped, rest[1]];
    let leader = cluster.leader(&pair, SETTLE).await;
    must_put(&cluster, leader, "after-rejoin", &spec("us")).await;
}
