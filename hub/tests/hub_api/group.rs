//! A 3-node hub: writes and reads through any node, reports to a follower reaching the leader,
//! and verdicts surviving a leader change.

use std::time::Duration;

use serde_json::json;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use meridian_hub::Hub;
use meridian_proto::pb;

use crate::support::{
    Admin, Agent, Group, cluster_body, config, dns_query, eventually, single_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_work_through_any_node() {
    let group = Group::start(3).await;
    let leader = group.leader().await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let via_follower = Admin::new(group.node(followers[0]));
    let other_follower = Admin::new(group.node(followers[1]));

    // A write through a follower is forwarded; a linearizable read on the other follower
    // sees it at once.
    via_follower
        .put_ok("/v1/clusters/us-east", &cluster_body("us", "127.0.1.1"))
        .await;
    let cluster = other_follower.get_ok("/v1/clusters/us-east").await;
    assert_eq!(cluster["region"], "us");
    // Refusals come back from the leader's state machine through the follower.
    let (status, answer) = via_follower
        .put(
            "/v1/hostnames/app.demo.meridian.test",
            &json!({"targets": [{"cluster": "nope"}]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");

    let status = other_follower.get_ok("/v1/status").await;
    assert_eq!(status["role"], "follower");
    assert_eq!(status["leader_id"], leader);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    let members = via_follower.get_ok("/v1/members").await;
    assert_eq!(members["leader_id"], leader);

    for node in group.nodes.into_values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_to_a_follower_reaches_the_leader() {
    let mut group = Group::start_with(3, |_, config| {
        // Reports go agent → follower → leader, and the leader is shut down midway: allow 1 s
        // without a counted report (not 300 ms), so a loaded machine's pause is not a verdict.
        config.health.missed_reports = 10;
    })
    .await;
    let leader = group.leader().await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let leader_admin = Admin::new(group.node(leader));
    let follower_admin = Admin::new(group.node(follower));
    follower_admin
        .put_ok("/v1/clusters/eu-west", &cluster_body("eu", "127.0.1.2"))
        .await;

    // The agent talks only to the follower; only the leader decides verdicts.
    let mut agent = Agent::connect(group.node(follower), "eu-west").await;
    let registered = agent.register(&["127.0.1.2"]).await.unwrap();
    assert_eq!(
        registered.leader_hint,
        group.members[&leader].to_string(),
        "the follower names the leader"
    );
    agent.open().await.unwrap();
    agent.next_config().await;
    let reporter = agent.keep_reporting(vec![true]);
    follower_admin
        .wait_verdict("eu-west", "healthy", Duration::from_secs(10))
        .await;
    let metrics = leader_admin.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("meridian_hub_health_reports_total")
                && l.contains("origin=\"forwarded\"")
                && l.contains("result=\"counted\"")),
        "{metrics}"
    );

    // The leader stops: a new leader takes over verdicts after its grace period, and the
    // follower forwards to it; the cluster stays healthy throughout.
    let old_leader = group.nodes.remove(&leader).unwrap();
    old_leader.shutdown().await;
    let new_leader = eventually(Duration::from_secs(15), "a new leader", || async {
        let status = group.node(follower).raft().status().borrow().clone();
        (status.leader_id != 0 && status.leader_id != leader).then_some(status.leader_id)
    })
    .await;
    let new_leader_admin = Admin::new(group.node(new_leader));
    // Give the new leader well past its grace period (3 reports) with reports flowing.
    eventually(
        Duration::from_secs(10),
        "forwarded reports at the new leader",
        || async {
            let metrics = new_leader_admin.metrics().await;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("meridian_hub_health_reports_total")
                        && l.contains("result=\"counted\"")
                })
                .then_some(())
        },
    )
    .await;

    // The follower asked the agent for its whole shared status: the new leader holds none.
    let mut agent = reporter.stop().await;
    loop {
        match agent.next().await.expect("hub message").kind {
            Some(pb::hub_message::Kind::ResendSharedStatus(_)) => break,
            Some(pb::hub_message::Kind::Config(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }

    // Reports stop: the new leader fails the cluster over.
    follower_admin
        .wait_verdict("eu-west", "unhealthy", Duration::from_secs(10))
        .await;
    drop(agent);
    // After the cluster first became healthy, exactly one more verdict was committed:
    // unhealthy once reports stopped. The leader change did not flap the cluster.
    let audit = follower_admin.get_ok("/v1/audit").await;
    let verdicts: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "health-tracker" && e["result"] == "applied")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .skip_while(|action| !action.contains("to healthy"))
        .collect();
    assert_eq!(verdicts.len(), 2, "{verdicts:#?}");
    assert!(verdicts[0].contains("to healthy"), "{verdicts:#?}");
    assert!(
        verdicts[1].contains("to unhealthy (no health report"),
        "{verdicts:#?}"
    );
    for node in group.nodes.into_values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_through_a_snapshot() {
    let mut group = Group::start(3).await;
    let leader = group.leader().await;
    let lagging = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let admin = Admin::new(group.node(leader));
    // More writes than the snapshot threshold, so the log is compacted past them.
    for i in 0..20 {
        admin
            .put_ok(
                &format!("/v1/clusters/c{i}"),
                &cluster_body("us", &format!("10.0.0.{i}")),
            )
            .await;
    }
    admin
        .put_ok(
            "/v1/hostnames/app.demo.meridian.test",
            &json!({"targets": [{"cluster": "c1"}, {"cluster": "c2"}]}),
        )
        .await;

    // The operator's procedure for a node that lost its disk: remove it, start it empty with
    // --join, add it back. (It must not rejoin with its old id as if nothing happened: it
    // would have forgotten entries a quorum counted on it for.)
    group.stop_and_wipe(lagging).await;
    let (status, answer) = admin.delete(&format!("/v1/members/{lagging}")).await;
    assert_eq!(status, 200, "{answer}");
    group.start_joining(lagging).await;
    // Until it is added and has the group's state, the empty node is not ready and its DNS
    // says SERVFAIL (resolvers try another server) rather than an authoritative NXDOMAIN.
    let joining = Admin::new(group.node(lagging));
    let (status, body) = joining.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("not a member"),
        "{body}"
    );
    let empty = dns_query(
        group.node(lagging).dns_addr(),
        "app.demo.meridian.test.",
        RecordType::A,
    )
    .await
    .expect("the joining node answers");
    assert_eq!(empty.metadata.response_code, ResponseCode::ServFail);
    let (status, body) = admin.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, answer) = admin
        .post(
            "/v1/members",
            &json!({"id": lagging, "addr": group.members[&lagging].to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let rejoined = Admin::new(group.node(lagging));
    eventually(
        Duration::from_secs(15),
        "the wiped node to catch up",
        || async {
            let (status, body) = rejoined.get("/v1/clusters?stale=true").await;
            (status == 200 && body["items"].as_array().map(Vec::len) == Some(20)).then_some(())
        },
    )
    .await;
    let policy = rejoined
        .get_ok("/v1/hostnames/app.demo.meridian.test?stale=true")
        .await;
    assert_eq!(policy["targets"][1]["cluster"], "c2");
    let (status, body) = rejoined.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    let dns = group.node(lagging).dns_addr();
    eventually(
        Duration::from_secs(15),
        "the rejoined node's DNS to answer from the group's state",
        || async {
            let answer = dns_query(dns, "app.demo.meridian.test.", RecordType::A).await?;
            (answer.metadata.response_code == ResponseCode::NoError).then_some(())
        },
    )
    .await;
    let metrics = rejoined.metrics().await;
    let installed = metrics
        .lines()
        .find(|l| l.starts_with("raft_snapshots_installed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        installed >= 1.0,
        "no snapshot installed:
{metrics}"
    );
    // The audit log came with the snapshot.
    let audit = rejoined.get_ok("/v1/audit?stale=true&limit=1000").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "put cluster c0"),
        "{audit}"
    );

    // Stop every node and start them again: the state is intact.
    for id in [1, 2, 3] {
        let node = group.nodes.remove(&id).unwrap();
        node.shutdown().await;
    }
    for id in [1, 2, 3] {
        group.restart(id).await;
    }
    let leader = group.leader().await;
    let admin = Admin::new(group.node(leader));
    assert_eq!(
        admin.get_ok("/v1/clusters").await["items"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
    for node in group.nodes.into_values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_without_its_log_stops_with_the_remedy() {
    let mut group = Group::start(3).await;
    let leader = group.leader().await;
    let lost = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let admin = Admin::new(group.node(leader));
    for i in 0..5 {
        admin
            .put_ok(
                &format!("/v1/clusters/c{i}"),
                &cluster_body("us", "10.0.0.1"),
            )
            .await;
    }
    let target = group.node(leader).raft().status().borrow().commit_index;
    eventually(Duration::from_secs(10), "the follower to apply", || async {
        let status = group.node(lost).raft().status().borrow().clone();
        (status.applied_index >= target).then_some(())
    })
    .await;

    // The wrong way back: an empty data directory, started as an initial member again.
    group.stop_and_wipe(lost).await;
    group.restart(lost).await;
    let fault = tokio::time::timeout(Duration::from_secs(10), group.node(lost).failed())
        .await
        .expect("the node noticed its lost log");
    assert!(
        matches!(fault, meridian_hub::raft::RaftFault::LostLog { .. }),
        "{fault:?}"
    );
    assert!(fault.remedy().contains("--join"), "{}", fault.remedy());
    let (status, body) = Admin::new(group.node(lost)).get("/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("data directory"),
        "{body}"
    );

    // The other two go on.
    admin
        .put_ok("/v1/clusters/after", &cluster_body("eu", "10.0.0.2"))
        .await;
    for node in group.nodes.into_values() {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_of_another_group_is_refused_and_a_joining_node_is_added() {
    let group = Group::start(3).await;
    let leader = group.leader().await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let admin = Admin::new(group.node(follower));
    admin
        .put_ok("/v1/clusters/group-only", &cluster_body("us", "10.0.0.1"))
        .await;

    // A hub bootstrapped on its own as node 4, with data of its own: the address of an
    // unrelated hub, mistyped into `members add`.
    let other_dir = tempfile::tempdir().unwrap();
    let other = single_with(other_dir.path(), |config| config.node_id = 4).await;
    let other_admin = Admin::new(&other);
    for i in 0..3 {
        other_admin
            .put_ok(
                &format!("/v1/clusters/own{i}"),
                &cluster_body("eu", "10.9.0.1"),
            )
            .await;
    }
    let members_before = admin.get_ok("/v1/members").await;
    let (status, answer) = admin
        .post(
            "/v1/members",
            &json!({"id": 4, "addr": other.grpc_addr().to_string()}),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("node 4")
            && error.contains("not an empty node waiting to join")
            && error.contains("--join"),
        "{answer}"
    );
    // Nothing changed on either side: no learner, no voter, no data crossed.
    assert_eq!(admin.get_ok("/v1/members").await, members_before);
    let leader_members = Admin::new(group.node(leader)).get_ok("/v1/members").await;
    assert_eq!(leader_members["members"].as_array().unwrap().len(), 3);
    assert!(leader_members["learners"].as_array().unwrap().is_empty());
    let other_members = other_admin.get_ok("/v1/members").await;
    let other_ids: Vec<u64> = other_members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(other_ids, [4]);
    assert_eq!(
        other_admin.get_ok("/v1/clusters").await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (status, _) = other_admin.get("/v1/clusters/group-only?stale=true").await;
    assert_eq!(status, 404);
    other.shutdown().await;

    // An empty node started with --join is added, but only under its own id.
    let joining_dir = tempfile::tempdir().unwrap();
    let mut joining_config = config(5, joining_dir.path());
    joining_config.join = true;
    let joining = Hub::spawn(joining_config).await.unwrap();
    let joining_addr = joining.grpc_addr().to_string();
    let (status, answer) = admin
        .post("/v1/members", &json!({"id": 6, "addr": joining_addr}))
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("is node 5, not node 6"),
        "{answer}"
    );
    let (status, answer) = admin
        .post("/v1/members", &json!({"id": 5, "addr": joining_addr}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let joined = Admin::new(&joining);
    eventually(
        Duration::from_secs(15),
        "the joined node to have the group's data",
        || async {
            let (status, _) = joined.get("/v1/clusters/group-only?stale=true").await;
            (status == 200).then_some(())
        },
    )
    .await;
    let members = admin.get_ok("/v1/members").await;
    assert_eq!(members["members"].as_array().unwrap().len(), 4, "{members}");
    // Adding it again is a no-op.
    let (status, answer) = admin
        .post("/v1/members", &json!({"id": 5, "addr": joining_addr}))
        .await;
    assert_eq!(status, 200, "{answer}");
    joining.shutdown().await;
    for node in group.nodes.into_values() {
        node.shutdown().await;
    }
}
