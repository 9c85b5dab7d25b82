//! Tracker tests, driven by a fake clock: feed reports and time, assert the verdicts it asks for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_proto::model::{ClusterName, GatewayProbe, HealthReport, HealthVerdict};

use super::tracker::{Accepted, Tracker, VerdictChange};
use crate::config::HealthConfig;

/// A tracker plus a fake clock and the committed verdicts, updated as if every change the
/// tracker asks for committed at once.
struct Harness {
    tracker: Tracker,
    start: Instant,
    now: Duration,
    committed: BTreeMap<ClusterName, HealthVerdict>,
    seq: u64,
}

fn us() -> ClusterName {
    ClusterName::new("us-east").unwrap()
}

fn report(cluster: &ClusterName, seq: u64, ready: &[bool]) -> HealthReport {
    HealthReport {
        cluster: cluster.clone(),
        seq,
        gateways: ready
            .iter()
            .enumerate()
            .map(|(i, &ready)| GatewayProbe {
                name: format!("gw-{i}"),
                address: Some(format!("127.0.1.{}:8080", i + 1).parse().unwrap()),
                ready,
                detail: if ready {
                    String::new()
                } else {
                    "connection refused".into()
                },
            })
            .collect(),
        hostnames: Vec::new(),
        shared: None,
        shared_basis: Default::default(),
    }
}

impl Harness {
    fn new(config: HealthConfig) -> Self {
        let mut tracker = Tracker::new(config);
        let start = Instant::now();
        tracker.set_leader(start, true);
        let committed = BTreeMap::from([(us(), HealthVerdict::Unknown)]);
        // The node evaluates as soon as it leads: that is when it first sees the clusters.
        assert!(tracker.evaluate(start, &committed).is_empty());
        Self {
            tracker,
            start,
            now: Duration::ZERO,
            committed,
            seq: 0,
        }
    }

    fn at(&self) -> Instant {
        self.start + self.now
    }

    /// Advances the clock by `ms`, then evaluates and commits.
    fn advance(&mut self, ms: u64) -> Vec<VerdictChange> {
        self.now += Duration::from_millis(ms);
        let changes = self.tracker.evaluate(self.at(), &self.committed);
        for change in &changes {
            self.committed
                .insert(change.cluster.clone(), change.verdict);
        }
        changes
    }

    /// One report (gateways ready or not), one second after the previous step.
    fn report(&mut self, ready: &[bool]) -> Vec<VerdictChange> {
        self.now += Duration::from_millis(1000);
        self.seq += 1;
        let accepted = self
            .tracker
            .report(self.at(), "agent-1", &report(&us(), self.seq, ready));
        assert_eq!(accepted, Accepted::Yes);
        self.advance(0)
    }

    fn verdict(&self) -> HealthVerdict {
        self.committed[&us()]
    }
}

fn verdicts(changes: &[VerdictChange]) -> Vec<HealthVerdict> {
    changes.iter().map(|c| c.verdict).collect()
}

#[test]
fn rise_needs_consecutive_good_reports() {
    let mut h = Harness::new(HealthConfig::default());
    assert!(
        h.report(&[true]).is_empty(),
        "one good report is not enough"
    );
    let changes = h.report(&[true]);
    assert_eq!(verdicts(&changes), [HealthVerdict::Healthy]);
    assert_eq!(changes[0].reason, "2 consecutive good reports");
    // Steady state asks for nothing.
    assert!(h.report(&[true]).is_empty());
}

#[test]
fn all_gateways_down_fails_at_once_and_recovers_with_hysteresis() {
    let mut h = Harness::new(HealthConfig::default());
    h.report(&[true, true]);
    h.report(&[true, true]);
    assert_eq!(h.verdict(), HealthVerdict::Healthy);
    // One gateway down is still healthy.
    assert!(h.report(&[true, false]).is_empty());
    // All down: fall = 1.
    let changes = h.report(&[false, false]);
    assert_eq!(verdicts(&changes), [HealthVerdict::Unhealthy]);
    assert!(
        changes[0].reason.contains("no gateway ready (2 probed)")
            && changes[0]
                .reason
                .contains("gw-0 (127.0.1.1:8080): connection refused"),
        "{}",
        changes[0].reason
    );
    // Flapping: good, bad, good does not bring it back.
    assert!(h.report(&[true, false]).is_empty());
    assert!(h.report(&[false, false]).is_empty());
    assert!(h.report(&[true, false]).is_empty());
    assert_eq!(h.verdict(), HealthVerdict::Unhealthy);
    assert_eq!(verdicts(&h.report(&[true, true])), [HealthVerdict::Healthy]);
}

#[test]
fn fall_threshold_above_one_tolerates_single_bad_reports() {
    let mut h = Harness::new(HealthConfig {
        fall: 2,
        ..HealthConfig::default()
    });
    h.report(&[true]);
    h.report(&[true]);
    assert!(h.report(&[false]).is_empty());
    assert!(h.report(&[true]).is_empty());
    assert!(h.report(&[false]).is_empty());
    assert_eq!(verdicts(&h.report(&[false])), [HealthVerdict::Unhealthy]);
}

#[test]
fn no_gateways_is_a_bad_report() {
    let mut h = Harness::new(HealthConfig::default());
    h.report(&[true]);
    h.report(&[true]);
    let changes = h.report(&[]);
    assert_eq!(verdicts(&changes), [HealthVerdict::Unhealthy]);
    assert_eq!(changes[0].reason, "the agent reports no gateways");
}

#[test]
fn silence_fails_after_the_miss_timeout_and_reports_bring_it_back() {
    let mut h = Harness::new(HealthConfig::default());
    h.report(&[true]);
    h.report(&[true]);
    assert_eq!(h.verdict(), HealthVerdict::Healthy);
    // 3 s of silence is tolerated, a bit more is not.
    assert!(h.advance(3000).is_empty());
    let changes = h.advance(100);
    assert_eq!(verdicts(&changes), [HealthVerdict::Unhealthy]);
    assert_eq!(changes[0].reason, "no health report for 3.1s");
    // The first report after the silence starts a new streak.
    assert!(h.report(&[true]).is_empty());
    assert_eq!(verdicts(&h.report(&[true])), [HealthVerdict::Healthy]);
}

#[test]
fn silence_behind_a_silent_hub_node_gets_one_more_miss_timeout() {
    let mut h = Harness::new(HealthConfig::default());
    // Reports reach the leader through hub node 2.
    for _ in 0..2 {
        h.now += Duration::from_millis(1000);
        h.seq += 1;
        let report = report(&us(), h.seq, &[true]);
        let accepted = h.tracker.report_via(h.at(), "agent-1", &report, Some(2));
        assert_eq!(accepted, Accepted::Yes);
        h.advance(0);
    }
    assert_eq!(h.verdict(), HealthVerdict::Healthy);
    // Node 2 freezes: the leader stops hearing from it, and the reports stop with it. The
    // agent is not to blame until it has had time to reach another node.
    h.tracker.set_silent_relays([2].into());
    assert!(h.advance(3100).is_empty());
    assert!(h.advance(2800).is_empty());
    let changes = h.advance(200);
    assert_eq!(verdicts(&changes), [HealthVerdict::Unhealthy]);
    assert_eq!(changes[0].reason, "no health report for 6.1s");
}

#[test]
fn silence_behind_a_live_hub_node_fails_as_usual() {
    let mut h = Harness::new(HealthConfig::default());
    for _ in 0..2 {
        h.now += Duration::from_millis(1000);
        h.seq += 1;
        let report = report(&us(), h.seq, &[true]);
        h.tracker.report_via(h.at(), "agent-1", &report, Some(2));
        h.advance(0);
    }
    // Another node is silent, not the one the reports came through.
    h.tracker.set_silent_relays([3].into());
    assert!(h.advance(3000).is_empty());
    assert_eq!(verdicts(&h.advance(100)), [HealthVerdict::Unhealthy]);
}

#[test]
fn a_new_leader_waits_out_the_grace_period() {
    let mut h = Harness::new(HealthConfig {
        leader_grace_ms: Some(5000),
        ..HealthConfig::default()
    });
    h.committed.insert(us(), HealthVerdict::Healthy);
    // No reports at all: nothing during grace, even though 3 s passed.
    assert!(h.advance(4000).is_empty());
    let changes = h.advance(1001);
    assert_eq!(verdicts(&changes), [HealthVerdict::Unhealthy]);
    assert_eq!(changes[0].reason, "no health report in 5.0s");
}

#[test]
fn reports_during_grace_keep_a_healthy_cluster_healthy() {
    let mut h = Harness::new(HealthConfig::default());
    h.committed.insert(us(), HealthVerdict::Healthy);
    for _ in 0..10 {
        assert!(h.report(&[true]).is_empty());
    }
}

#[test]
fn followers_decide_nothing() {
    let mut h = Harness::new(HealthConfig::default());
    h.report(&[true]);
    h.tracker.set_leader(h.at(), false);
    let accepted = h
        .tracker
        .report(h.at(), "agent-1", &report(&us(), 99, &[true]));
    assert_eq!(accepted, Accepted::NotLeader);
    assert!(h.advance(10_000).is_empty());
    // Leading again starts from scratch with a grace period.
    h.tracker.set_leader(h.at(), true);
    assert!(h.advance(0).is_empty());
    assert!(h.advance(2000).is_empty());
    assert_eq!(verdicts(&h.advance(1100)), [HealthVerdict::Unhealthy]);
}

#[test]
fn reordered_reports_are_dropped_but_a_restarted_agent_is_not() {
    let mut h = Harness::new(HealthConfig::default());
    h.report(&[true]);
    h.report(&[true]);
    let at = h.at();
    let stale = h.tracker.report(at, "agent-1", &report(&us(), 1, &[false]));
    assert_eq!(stale, Accepted::Stale);
    assert!(h.advance(0).is_empty());
    // A new agent process starts counting at 1 again, once its predecessor missed a report.
    h.advance(1600);
    let restarted = h
        .tracker
        .report(h.at(), "agent-2", &report(&us(), 1, &[false]));
    assert_eq!(restarted, Accepted::Yes);
    assert_eq!(verdicts(&h.advance(0)), [HealthVerdict::Unhealthy]);
}

#[test]
fn a_second_agent_for_a_live_cluster_is_ignored_until_the_first_goes_quiet() {
    let mut h = Harness::new(HealthConfig::default());
    h.report(&[true]);
    h.report(&[true]);
    assert_eq!(h.verdict(), HealthVerdict::Healthy);
    // Another agent claims the cluster and says its gateway is down: it does not count
    // while agent-1 keeps reporting.
    for seq in 1..=5 {
        h.now += Duration::from_millis(500);
        let second = h
            .tracker
            .report(h.at(), "agent-2", &report(&us(), seq, &[false]));
        assert_eq!(
            second,
            Accepted::Conflict {
                live: "agent-1".into()
            }
        );
        assert!(h.advance(0).is_empty());
        if seq % 2 == 0 {
            h.report(&[true]);
        }
    }
    assert_eq!(h.verdict(), HealthVerdict::Healthy);
}

#[test]
fn clusters_never_heard_from_become_unhealthy_once() {
    let mut h = Harness::new(HealthConfig::default());
    assert!(h.advance(3000).is_empty());
    let changes = h.advance(100);
    assert_eq!(verdicts(&changes), [HealthVerdict::Unhealthy]);
    assert!(
        h.advance(5000).is_empty(),
        "asks only while the verdict differs"
    );
    // A cluster created later gets its own full timeout.
    let eu = ClusterName::new("eu-west").unwrap();
    h.committed.insert(eu.clone(), HealthVerdict::Unknown);
    assert!(h.advance(0).is_empty());
    assert!(h.advance(3000).is_empty());
    let changes = h.advance(100);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].cluster, eu);
}

// === per-hostname serving ===

use meridian_proto::model::{Fqdn, HostnameHealth};

use super::tracker::{HostnameChange, can_serve};

fn host(hostname: &str, ready: u32, total: u32) -> HostnameHealth {
    HostnameHealth {
        hostname: hostname.to_string(),
        ready_endpoints: ready,
        total_endpoints: total,
        detail: String::new(),
    }
}

#[test]
fn the_most_specific_route_hostname_decides() {
    let app = Fqdn::new("app.demo.meridian.test").unwrap();
    // (reported route hostnames, can serve, text the explanation contains)
    let cases: Vec<(Vec<HostnameHealth>, bool, &str)> = vec![
        (vec![host("app.demo.meridian.test", 2, 2)], true, "2 of 2"),
        (vec![host("APP.demo.meridian.test.", 1, 2)], true, "1 of 2"),
        (vec![host("app.demo.meridian.test", 0, 2)], false, "0 of 2"),
        // Exact beats a wildcard, whichever has ready endpoints.
        (
            vec![
                host("*.demo.meridian.test", 3, 3),
                host("app.demo.meridian.test", 0, 1),
            ],
            false,
            "route hostname app.demo.meridian.test",
        ),
        // The longest wildcard beats a shorter one and `*`.
        (
            vec![
                host("*", 0, 1),
                host("*.meridian.test", 0, 1),
                host("*.demo.meridian.test", 1, 1),
            ],
            true,
            "route hostname *.demo.meridian.test",
        ),
        (vec![host("*", 1, 1)], true, "route hostname *"),
        // A wildcard needs at least one label in front of its suffix.
        (
            vec![host("*.app.demo.meridian.test", 1, 1)],
            false,
            "no route in the cluster serves app.demo.meridian.test",
        ),
        (
            vec![
                host("*.other.test", 1, 1),
                host("shop.demo.meridian.test", 1, 1),
            ],
            false,
            "no route",
        ),
        (vec![], false, "no route"),
        // No endpoints at all (a Service without endpoints) cannot serve either.
        (vec![host("app.demo.meridian.test", 0, 0)], false, "0 of 0"),
        // The cluster's reason for having none is passed on.
        (
            vec![HostnameHealth {
                detail: "Service demo/nosuch not found".into(),
                ..host("app.demo.meridian.test", 0, 0)
            }],
            false,
            "0 of 0 backend endpoints ready (route hostname app.demo.meridian.test): Service demo/nosuch not found",
        ),
    ];
    for (reported, serves, text) in cases {
        let result = can_serve(&reported, &app);
        assert_eq!(result.is_ok(), serves, "{reported:?}: {result:?}");
        let why = result.unwrap_or_else(|e| e);
        assert!(why.contains(text), "{reported:?}: {why}");
    }
}

/// A leading tracker watching app.demo.meridian.test in us-east, with committed serving
/// states updated as if every change committed at once.
struct Hosts {
    tracker: Tracker,
    start: Instant,
    now: Duration,
    seq: u64,
    committed: BTreeMap<(ClusterName, Fqdn), bool>,
}

impl Hosts {
    fn new(config: HealthConfig) -> Self {
        let mut tracker = Tracker::new(config);
        let start = Instant::now();
        tracker.set_leader(start, true);
        let app = Fqdn::new("app.demo.meridian.test").unwrap();
        tracker.watch_hostnames([(&app, vec![&us()])]);
        Self {
            tracker,
            start,
            now: Duration::ZERO,
            seq: 0,
            committed: BTreeMap::new(),
        }
    }

    /// One report one second later with the gateway ready and these route hostnames.
    fn report(&mut self, hostnames: Vec<HostnameHealth>) -> Vec<HostnameChange> {
        self.now += Duration::from_millis(1000);
        self.seq += 1;
        let mut r = report(&us(), self.seq, &[true]);
        r.hostnames = hostnames;
        let at = self.start + self.now;
        assert_eq!(self.tracker.report(at, "agent-1", &r), Accepted::Yes);
        self.evaluate()
    }

    fn evaluate(&mut self) -> Vec<HostnameChange> {
        let changes = self
            .tracker
            .evaluate_hostnames(self.start + self.now, &self.committed);
        for change in &changes {
            self.committed.insert(
                (change.cluster.clone(), change.fqdn.clone()),
                change.serving,
            );
        }
        changes
    }
}

fn states(changes: &[HostnameChange]) -> Vec<bool> {
    changes.iter().map(|c| c.serving).collect()
}

#[test]
fn hostname_serving_has_hysteresis_and_asks_only_on_transitions() {
    let mut h = Hosts::new(HealthConfig::default());
    let up = || vec![host("app.demo.meridian.test", 2, 2)];
    let down = || vec![host("app.demo.meridian.test", 0, 2)];
    // Before the route exists the cluster cannot serve it (fall = 1): committed once.
    let changes = h.report(vec![]);
    assert_eq!(states(&changes), [false]);
    assert!(
        changes[0].reason.contains("no route"),
        "{}",
        changes[0].reason
    );
    assert!(h.report(vec![]).is_empty(), "no write per report");
    // rise = 2 good reports.
    assert!(h.report(up()).is_empty());
    let changes = h.report(up());
    assert_eq!(states(&changes), [true]);
    assert_eq!(
        changes[0].reason,
        "2 of 2 backend endpoints ready (route hostname app.demo.meridian.test)"
    );
    for _ in 0..5 {
        assert!(h.report(up()).is_empty(), "steady state writes nothing");
    }
    assert_eq!(states(&h.report(down())), [false]);
    // Flapping good/bad does not bring it back.
    assert!(h.report(up()).is_empty());
    assert!(h.report(down()).is_empty());
    assert!(h.report(up()).is_empty());
    assert_eq!(states(&h.report(up())), [true]);
}

#[test]
fn silent_clusters_and_followers_judge_no_hostnames() {
    let mut h = Hosts::new(HealthConfig::default());
    h.report(vec![host("app.demo.meridian.test", 1, 1)]);
    h.report(vec![host("app.demo.meridian.test", 1, 1)]);
    assert_eq!(h.committed.values().copied().collect::<Vec<_>>(), [true]);
    // Silence: the cluster verdict fails it; its hostname state is left alone.
    h.now += Duration::from_secs(10);
    assert!(h.evaluate().is_empty());
    // A hostname no longer watched is not judged.
    h.tracker.watch_hostnames([]);
    h.committed.clear();
    assert!(h.report(vec![]).is_empty());
    // Followers decide nothing.
    let app = Fqdn::new("app.demo.meridian.test").unwrap();
    h.tracker.watch_hostnames([(&app, vec![&us()])]);
    h.tracker.set_leader(h.start + h.now, false);
    assert!(h.evaluate().is_empty());
}

/// A route status where each `(route, reason)` has one parent with one `Accepted` condition.
fn routes_status(
    version: u64,
    routes: &[(&str, &str)],
) -> meridian_proto::model::SharedObjectsStatus {
    use meridian_proto::model::{
        ConditionState, ObjectKey, RouteParentConditions, SharedRouteStatus, StatusCondition,
    };
    meridian_proto::model::SharedObjectsStatus {
        shared_version: version,
        routes: routes
            .iter()
            .map(|(name, reason)| SharedRouteStatus {
                route: ObjectKey::new("shop", *name).unwrap(),
                parents: vec![RouteParentConditions {
                    gateway: ObjectKey::new("infra", "edge").unwrap(),
                    section_name: None,
                    port: None,
                    conditions: vec![StatusCondition {
                        type_: "Accepted".into(),
                        status: ConditionState::True,
                        reason: reason.to_string(),
                        message: String::new(),
                    }],
                }],
            })
            .collect(),
        certificates: Vec::new(),
        rejected: Vec::new(),
    }
}

/// The state a leader holds in the shared status tests: cluster `us` and the shared routes
/// `shop/a` and `shop/b`; and the function that commits to it, numbering the entries.
fn shared_state() -> (
    crate::store::State,
    impl FnMut(&mut crate::store::State, crate::store::Action) -> crate::store::Outcome,
) {
    use crate::store::{Action, Command, State};
    use meridian_proto::model::ObjectKey;

    let mut index = 0;
    let mut commit = move |state: &mut State, action: Action| {
        index += 1;
        state.apply(
            index,
            Command {
                actor: "test".into(),
                unix_ms: index,
                action,
            },
        )
    };
    let mut state = State::default();
    commit(
        &mut state,
        Action::PutCluster(meridian_proto::model::Cluster {
            name: us(),
            region: meridian_proto::model::Region::new("us").unwrap(),
            addresses: vec![],
            drained: false,
        }),
    );
    for name in ["a", "b"] {
        let route = meridian_proto::model::route::HttpRoute {
            key: ObjectKey::new("shop", name).unwrap(),
            parent_refs: vec![],
            hostnames: vec![],
            rules: vec![],
            created_unix_ms: 0,
        };
        commit(&mut state, Action::PutRoute(Box::new(route)));
    }
    (state, commit)
}

#[test]
fn route_status_is_asked_for_as_a_delta_against_the_committed_record() {
    use crate::store::{Action, SharedObjectsRecord, State};
    use meridian_proto::model::{ObjectKey, SharedStatusBasis};

    let mut h = Harness::new(HealthConfig::default());
    let (mut state, mut commit) = shared_state();
    let mut evaluate = |h: &mut Harness, state: &mut State, reported| {
        h.now += Duration::from_millis(1000);
        h.seq += 1;
        let mut report = report(&us(), h.seq, &[true]);
        report.shared = reported;
        assert_eq!(h.tracker.report(h.at(), "agent-1", &report), Accepted::Yes);
        // Each evaluation follows a commit or a report, so it names a new state.
        let changes = h.tracker.evaluate_shared(
            h.at(),
            None,
            h.seq,
            |cluster| state.clusters.get(cluster).and_then(|r| r.shared.as_ref()),
            |route| state.routes.contains_key(route),
            |certificate| state.certificates.contains_key(certificate),
            state.route_versions.values().copied().max().unwrap_or(0),
        );
        for change in &changes {
            commit(
                state,
                Action::SetSharedStatus {
                    cluster: change.cluster.clone(),
                    changed: change.changed.clone(),
                    removed: change.removed.clone(),
                },
            );
        }
        changes
    };
    let record =
        |state: &State| -> Option<SharedObjectsRecord> { state.clusters[&us()].shared.clone() };

    // The first status: everything it names that exists.
    let changes = evaluate(
        &mut h,
        &mut state,
        Some(routes_status(
            3,
            &[
                ("a", "Accepted"),
                ("b", "NotAllowedByListeners"),
                ("x", "Accepted"),
            ],
        )),
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].changed.routes.len(), 2, "route x does not exist");
    assert_eq!(
        record(&state).map(|r| r.as_reported()),
        Some(routes_status(
            3,
            &[("a", "Accepted"), ("b", "NotAllowedByListeners")]
        ))
    );

    // A report without route status (agents send it only when it changed) asks for nothing,
    // and neither does the same status again.
    assert!(evaluate(&mut h, &mut state, None).is_empty());
    assert!(
        evaluate(
            &mut h,
            &mut state,
            Some(routes_status(
                3,
                &[("a", "Accepted"), ("b", "NotAllowedByListeners")]
            ))
        )
        .is_empty()
    );

    // One route changes: the delta names only it; a route no longer reported is removed.
    let changes = evaluate(
        &mut h,
        &mut state,
        Some(routes_status(4, &[("b", "Accepted")])),
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].changed, routes_status(4, &[("b", "Accepted")]));
    assert_eq!(
        changes[0].removed,
        vec![ObjectKey::new("shop", "a").unwrap()]
    );
    assert_eq!(
        record(&state).map(|r| r.as_reported()),
        Some(routes_status(4, &[("b", "Accepted")]))
    );

    // Agents number their whole statuses and send deltas against them in between.
    let send = |h: &mut Harness, status, basis| {
        h.now += Duration::from_millis(1000);
        h.seq += 1;
        let mut report = report(&us(), h.seq, &[true]);
        report.shared = Some(status);
        report.shared_basis = basis;
        h.tracker.report(h.at(), "agent-1", &report)
    };
    let whole = routes_status(5, &[("a", "Accepted"), ("b", "Accepted")]);
    let accepted = send(&mut h, whole, SharedStatusBasis::Whole { id: 9 });
    assert_eq!(accepted, Accepted::Yes);
    let changes = evaluate(&mut h, &mut state, None);
    assert_eq!(changes[0].changed, routes_status(5, &[("a", "Accepted")]));

    // A delta naming one route changes that one; the others stay as the whole status said.
    let delta = routes_status(6, &[("b", "NotAllowedByListeners")]);
    let basis = SharedStatusBasis::Delta {
        base: 9,
        removed: Vec::new(),
    };
    assert_eq!(send(&mut h, delta.clone(), basis), Accepted::Yes);
    let changes = evaluate(&mut h, &mut state, None);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].changed, delta);
    assert!(changes[0].removed.is_empty());
    assert_eq!(
        record(&state).map(|r| r.as_reported()),
        Some(routes_status(
            6,
            &[("a", "Accepted"), ("b", "NotAllowedByListeners")]
        ))
    );

    // A delta against a whole status this leader never received is ignored, and counted.
    let basis = SharedStatusBasis::Delta {
        base: 8,
        removed: vec![ObjectKey::new("shop", "a").unwrap()],
    };
    let accepted = send(&mut h, routes_status(7, &[]), basis);
    assert_eq!(accepted, Accepted::YesWithoutShared);
    assert!(evaluate(&mut h, &mut state, None).is_empty());

    // A follower decides nothing.
    h.tracker.set_leader(h.at(), false);
    assert!(
        h.tracker
            .evaluate_shared(h.at(), None, 0, |_| None, |_| true, |_| true, 0)
            .is_empty()
    );
}

#[test]
fn a_settled_cluster_is_compared_again_when_its_status_changes_or_after_a_new_term() {
    use crate::store::{Action, State};

    let mut h = Harness::new(HealthConfig::default());
    let (mut state, mut commit) = shared_state();
    let send = |h: &mut Harness, shared| {
        h.now += Duration::from_millis(1000);
        h.seq += 1;
        let mut report = report(&us(), h.seq, &[true]);
        report.shared = shared;
        h.tracker.report(h.at(), "agent-1", &report)
    };
    // `key` stands for the committed state's applied index.
    let evaluate = |h: &mut Harness, state: &State, key: u64| {
        h.tracker.evaluate_shared(
            h.at(),
            None,
            key,
            |cluster| state.clusters.get(cluster).and_then(|r| r.shared.as_ref()),
            |route| state.routes.contains_key(route),
            |certificate| state.certificates.contains_key(certificate),
            state.route_versions.values().copied().max().unwrap_or(0),
        )
    };
    let mut settle = |h: &mut Harness, state: &mut State, key: u64| {
        for change in evaluate(h, state, key) {
            commit(
                state,
                Action::SetSharedStatus {
                    cluster: change.cluster,
                    changed: change.changed,
                    removed: change.removed,
                },
            );
        }
        assert!(evaluate(h, state, key + 1).is_empty(), "settled");
    };

    send(&mut h, Some(routes_status(3, &[("a", "Accepted")])));
    settle(&mut h, &mut state, 10);
    // A report without a status changes nothing.
    send(&mut h, None);
    assert!(evaluate(&mut h, &state, 11).is_empty());

    // A new status at the same committed state is compared again.
    send(&mut h, Some(routes_status(3, &[("b", "Accepted")])));
    let changes = evaluate(&mut h, &state, 11);
    assert_eq!(changes.len(), 1, "{changes:?}");
    settle(&mut h, &mut state, 20);

    // A new term starts the tracks again; a status that differs from the record is asked
    // for even though the committed state is the one a settled entry of the old term named.
    // (Two reports, so a count kept per track would be back at the settled entry's.)
    h.tracker.set_leader(h.at(), false);
    h.tracker.set_leader(h.at(), true);
    send(&mut h, Some(routes_status(3, &[("b", "Accepted")])));
    send(&mut h, Some(routes_status(3, &[("a", "Accepted")])));
    let changes = evaluate(&mut h, &state, 21);
    assert_eq!(changes.len(), 1, "{changes:?}");
}
