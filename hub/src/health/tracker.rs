//! [`Tracker`]: the pure decision logic that turns a stream of health reports and the passage of
//! time into verdict changes and per-hostname serving changes. No IO and no clock: callers pass
//! `now`, so tests drive it with a fake clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meridian_proto::model::{
    ClusterName, Fqdn, HealthReport, HealthVerdict, HostnameHealth, ObjectKey, SharedObjectsStatus,
    SharedRouteStatus,
};

use super::reported_shared::{Merged, ReportedShared};
use crate::config::HealthConfig;
use crate::store::SharedObjectsRecord;

/// The longest reason a verdict carries (reports can list many gateways).
const MAX_REASON_LEN: usize = 240;

/// A verdict the tracker wants committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictChange {
    /// The cluster.
    pub cluster: ClusterName,
    /// The new verdict.
    pub verdict: HealthVerdict,
    /// Why, for operators.
    pub reason: String,
}

/// A per-hostname serving state the tracker wants committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostnameChange {
    /// The cluster.
    pub cluster: ClusterName,
    /// The hostname policy's name.
    pub fqdn: Fqdn,
    /// Whether the cluster can serve it.
    pub serving: bool,
    /// Why, for operators.
    pub reason: String,
}

/// A change of a cluster's shared route status the tracker wants committed: a delta against
/// the committed record (see `Action::SetSharedStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedChange {
    /// The cluster.
    pub cluster: ClusterName,
    /// The shared version it programmed, and the routes whose conditions changed.
    pub changed: SharedObjectsStatus,
    /// The routes it no longer reports.
    pub removed: Vec<ObjectKey>,
}

/// Health decisions of the leader.
///
/// **Guarantees:**
/// - A silent cluster (no report for `missed_reports` intervals) is declared unhealthy, but
///   only after the node has led for `leader_grace`, since agents may still be finding it.
/// - Hysteresis: `fall` consecutive bad reports make a cluster unhealthy, `rise` consecutive
///   good ones make it healthy; anything in between keeps the committed verdict.
/// - A report is good when at least one of the cluster's gateways is ready.
/// - Per hostname (for every hostname policy that targets the cluster, see
///   [`Tracker::watch_hostnames`]): a report says the cluster can serve it when the most
///   specific route hostname it reports that matches (exact, then the longest `*.` wildcard,
///   then `*`) has at least one ready backend endpoint; no matching route hostname means it
///   cannot. The same `rise`/`fall` hysteresis applies, per hostname, and only a state that
///   differs from the committed one is asked for.
///
/// **Assumptions:** the caller feeds every report it receives while it is leader, and calls
/// [`Tracker::set_leader`] on every role change.
#[derive(Debug)]
pub struct Tracker {
    config: HealthConfig,
    clusters: HashMap<ClusterName, Track>,
    leader_since: Option<Instant>,
    /// Per cluster, the hostname policies that target it.
    watched: BTreeMap<ClusterName, BTreeSet<Fqdn>>,
    /// Hub nodes the leader has not heard from lately (frozen, partitioned or down).
    silent_relays: BTreeSet<u64>,
    /// Per cluster, the (reported shared status generation, committed state) at which
    /// [`Tracker::evaluate_shared`] last found nothing to propose: with thousands of routes
    /// the comparison is milliseconds, and it ran on every tick and report.
    shared_settled: HashMap<ClusterName, (u64, u64)>,
    /// The last shared status generation handed out.
    shared_generations: u64,
}

/// What the tracker knows about one cluster.
#[derive(Debug, Default)]
struct Track {
    /// When this leader first saw the cluster (its term's start, or the cluster's creation).
    first_seen: Option<Instant>,
    last_report: Option<Instant>,
    /// The hub node the last report came through (`None`: the agent talks to this node).
    relay: Option<u64>,
    instance: String,
    last_seq: u64,
    good_streak: u32,
    bad_streak: u32,
    last_bad: String,
    /// Per watched hostname: its own streaks.
    hostnames: HashMap<Fqdn, Streak>,
    /// The shared objects' status as the reports that carried it said.
    shared: Option<ReportedShared>,
    /// A new number from the tracker's count whenever `shared` may have changed.
    shared_generation: u64,
}

/// Consecutive reports for or against one hostname, with the latest explanation.
#[derive(Debug, Default)]
struct Streak {
    good: u32,
    bad: u32,
    why: String,
}

/// What happened to a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Counted.
    Yes,
    /// Counted, but its shared status was a delta against a whole status this node does not
    /// hold (see [`ReportedShared`]), and was ignored.
    YesWithoutShared,
    /// Dropped: this node is not the leader.
    NotLeader,
    /// Dropped: the same agent instance already sent a report with this or a later sequence
    /// number (a duplicate or a reordered report).
    Stale,
    /// Dropped: another agent instance reports for the same cluster and is still live (it
    /// reported within one and a half report intervals). Two agents claiming one cluster (a second
    /// deployment, a stale config, a forged agent) must not override the one already
    /// reporting; a restarted agent takes over once its predecessor has gone quiet.
    Conflict {
        /// The live instance whose reports count.
        live: String,
    },
}

// === impl Tracker ===

impl Tracker {
    /// A tracker that is not leading.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            clusters: HashMap::new(),
            leader_since: None,
            watched: BTreeMap::new(),
            silent_relays: BTreeSet::new(),
            shared_settled: HashMap::new(),
            shared_generations: 0,
        }
    }

    /// Whether this node leads (and so decides).
    pub fn is_leader(&self) -> bool {
        self.leader_since.is_some()
    }

    /// Records a role change. Becoming leader starts the grace period and forgets what was
    /// learned in an earlier term (reports went to another leader meanwhile).
    pub fn set_leader(&mut self, now: Instant, leader: bool) {
        match (leader, self.leader_since) {
            (true, None) => {
                self.leader_since = Some(now);
                self.clusters.clear();
                self.shared_settled.clear();
            }
            (false, Some(_)) => {
                self.leader_since = None;
                self.clusters.clear();
                self.shared_settled.clear();
            }
            _ => {}
        }
    }

    /// Counts one report from agent process `instance`, sent to this node.
    pub fn report(&mut self, now: Instant, instance: &str, report: &HealthReport) -> Accepted {
        self.report_via(now, instance, report, None)
    }

    /// Counts one report from agent process `instance`, which reached this node through hub
    /// node `relay` (`None`: directly).
    pub fn report_via(
        &mut self,
        now: Instant,
        instance: &str,
        report: &HealthReport,
        relay: Option<u64>,
    ) -> Accepted {
        if !self.is_leader() {
            return Accepted::NotLeader;
        }
        let miss_timeout = self.config.miss_timeout();
        // An agent that reports is live until it misses one report (with half an interval of
        // slack), so a restarted agent takes over well before the miss timeout; with a miss
        // timeout of one or two intervals the window shrinks so that it still does.
        let interval = self.config.report_interval();
        let live_window = (interval * 3 / 2).min(miss_timeout.saturating_sub(interval));
        let track = self.clusters.entry(report.cluster.clone()).or_default();
        if !track.instance.is_empty()
            && track.instance != instance
            && track
                .last_report
                .is_some_and(|last| now.saturating_duration_since(last) <= live_window)
        {
            return Accepted::Conflict {
                live: track.instance.clone(),
            };
        }
        let recent = track
            .last_report
            .is_some_and(|last| now.saturating_duration_since(last) <= miss_timeout);
        if track.instance == instance && report.seq <= track.last_seq && recent {
            return Accepted::Stale;
        }
        if !recent {
            // After a silence the streaks start over: old evidence says nothing about now.
            track.good_streak = 0;
            track.bad_streak = 0;
            track.hostnames.clear();
        }
        if let Some(watched) = self.watched.get(&report.cluster) {
            track.hostnames.retain(|fqdn, _| watched.contains(fqdn));
            let routes = RouteHosts::new(&report.hostnames);
            for fqdn in watched {
                let streak = track.hostnames.entry(fqdn.clone()).or_default();
                match routes.can_serve(fqdn) {
                    Ok(why) => {
                        streak.good = streak.good.saturating_add(1);
                        streak.bad = 0;
                        streak.why = why;
                    }
                    Err(why) => {
                        streak.bad = streak.bad.saturating_add(1);
                        streak.good = 0;
                        streak.why = why;
                    }
                }
            }
        }
        if track.instance != instance {
            // Another agent process took over: what the previous one said is not its word.
            track.shared = None;
        }
        if track.instance != instance || report.shared.is_some() {
            // Tracker-wide, so a track made again (a new term, a recreated cluster) never
            // reuses a generation a settled entry names.
            self.shared_generations += 1;
            track.shared_generation = self.shared_generations;
        }
        let mut accepted = Accepted::Yes;
        if let Some(shared) = &report.shared
            && ReportedShared::merge(&mut track.shared, shared, &report.shared_basis)
                == Merged::UnknownBase
        {
            accepted = Accepted::YesWithoutShared;
        }
        track.instance = instance.to_string();
        track.last_seq = report.seq;
        track.last_report = Some(now);
        track.relay = relay;
        match assess(report) {
            Ok(()) => {
                track.good_streak = track.good_streak.saturating_add(1);
                track.bad_streak = 0;
            }
            Err(why) => {
                track.bad_streak = track.bad_streak.saturating_add(1);
                track.good_streak = 0;
                track.last_bad = why;
            }
        }
        accepted
    }

    /// Sets the hub nodes the leader has not heard from lately. A cluster whose reports came
    /// through one of them and stopped is not judged for one more miss timeout: its agent is
    /// most likely fine and reconnecting to another node (no failover without evidence).
    pub fn set_silent_relays(&mut self, silent: BTreeSet<u64>) {
        self.silent_relays = silent;
    }

    /// The verdict changes due at `now`, given the committed verdicts of every existing
    /// cluster. Empty unless leading.
    pub fn evaluate(
        &mut self,
        now: Instant,
        committed: &BTreeMap<ClusterName, HealthVerdict>,
    ) -> Vec<VerdictChange> {
        let Some(leader_since) = self.leader_since else {
            return Vec::new();
        };
        let in_grace = now.saturating_duration_since(leader_since) < self.config.leader_grace();
        let miss_timeout = self.config.miss_timeout();
        let mut changes = Vec::new();
        for (cluster, &current) in committed {
            let track = self.clusters.entry(cluster.clone()).or_default();
            let first_seen = *track.first_seen.get_or_insert(now);
            let track = &*track;
            let last_report = track.last_report;
            let silent_for = match last_report {
                Some(last) => now.saturating_duration_since(last),
                None => now.saturating_duration_since(first_seen.max(leader_since)),
            };
            let relay_went_silent = track
                .relay
                .is_some_and(|relay| self.silent_relays.contains(&relay));
            let desired = if silent_for > miss_timeout {
                if in_grace || (relay_went_silent && silent_for <= miss_timeout * 2) {
                    None
                } else {
                    let reason = match last_report {
                        Some(_) => format!("no health report for {}", seconds(silent_for)),
                        None => format!("no health report in {}", seconds(silent_for)),
                    };
                    Some((HealthVerdict::Unhealthy, reason))
                }
            } else if last_report.is_some() {
                if track.bad_streak >= self.config.fall {
                    Some((HealthVerdict::Unhealthy, track.last_bad.clone()))
                } else if track.good_streak >= self.config.rise {
                    Some((
                        HealthVerdict::Healthy,
                        format!("{} consecutive good reports", track.good_streak),
                    ))
                } else {
                    None
                }
            } else {
                None
            };
            if let Some((verdict, reason)) = desired
                && verdict != current
            {
                changes.push(VerdictChange {
                    cluster: cluster.clone(),
                    verdict,
                    reason: truncate(reason),
                });
            }
        }
        changes
    }

    /// Sets the hostname policies to judge: `(fqdn, target clusters)` for every policy. Reports
    /// count towards a hostname from the first report after it is watched.
    pub fn watch_hostnames<'a>(
        &mut self,
        policies: impl IntoIterator<Item = (&'a Fqdn, Vec<&'a ClusterName>)>,
    ) {
        let mut watched: BTreeMap<ClusterName, BTreeSet<Fqdn>> = BTreeMap::new();
        for (fqdn, targets) in policies {
            for cluster in targets {
                watched
                    .entry(cluster.clone())
                    .or_default()
                    .insert(fqdn.clone());
            }
        }
        self.watched = watched;
    }

    /// The per-hostname serving changes due at `now`, given the committed serving state of
    /// every watched (cluster, hostname) (absent: never judged). Only clusters whose reports
    /// are current are judged: a silent cluster is failed by its verdict instead. Empty unless
    /// leading.
    pub fn evaluate_hostnames(
        &self,
        now: Instant,
        committed: &BTreeMap<(ClusterName, Fqdn), bool>,
    ) -> Vec<HostnameChange> {
        if self.leader_since.is_none() {
            return Vec::new();
        }
        let miss_timeout = self.config.miss_timeout();
        let mut changes = Vec::new();
        for (cluster, fqdns) in &self.watched {
            let Some(track) = self.clusters.get(cluster) else {
                continue;
            };
            let current = track
                .last_report
                .is_some_and(|last| now.saturating_duration_since(last) <= miss_timeout);
            if !current {
                continue;
            }
            for fqdn in fqdns {
                let Some(streak) = track.hostnames.get(fqdn) else {
                    continue;
                };
                let desired = if streak.bad >= self.config.fall {
                    false
                } else if streak.good >= self.config.rise {
                    true
                } else {
                    continue;
                };
                if committed.get(&(cluster.clone(), fqdn.clone())) != Some(&desired) {
                    changes.push(HostnameChange {
                        cluster: cluster.clone(),
                        fqdn: fqdn.clone(),
                        serving: desired,
                        reason: truncate(streak.why.clone()),
                    });
                }
            }
        }
        changes
    }

    /// For each cluster whose reported shared objects status differs from its committed
    /// record, the delta to commit. Only clusters whose reports are current count; no
    /// hysteresis, since the status is shown and guards deletes, never moves traffic. Routes
    /// and certificates that no longer exist (`route_exists`, `certificate_exists`) are left
    /// out, as the state machine would drop them, so a report naming a deleted one asks for
    /// nothing. Only cluster `only`, when given. Empty unless leading.
    ///
    /// A newer shared version alone is committed only when a route changed since the recorded
    /// one (`latest_route_version` is the log index of the latest route change): the version
    /// says which routes the cluster has programmed, and a certificate change alone would
    /// otherwise cost one Raft entry per cluster.
    ///
    /// `state` identifies the committed state the closures read (its applied index): a
    /// cluster found settled at the same state and reported status is not compared again.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate_shared<'a>(
        &mut self,
        now: Instant,
        only: Option<&ClusterName>,
        state: u64,
        committed: impl Fn(&ClusterName) -> Option<&'a SharedObjectsRecord>,
        route_exists: impl Fn(&ObjectKey) -> bool,
        certificate_exists: impl Fn(&ObjectKey) -> bool,
        latest_route_version: u64,
    ) -> Vec<SharedChange> {
        if self.leader_since.is_none() {
            return Vec::new();
        }
        let miss_timeout = self.config.miss_timeout();
        let mut changes = Vec::new();
        for (cluster, track) in &self.clusters {
            if only.is_some_and(|only| only != cluster) {
                continue;
            }
            let current = track
                .last_report
                .is_some_and(|last| now.saturating_duration_since(last) <= miss_timeout);
            let Some(reported) = track.shared.as_ref().filter(|_| current) else {
                continue;
            };
            let settled_at = (track.shared_generation, state);
            if self.shared_settled.get(cluster) == Some(&settled_at) {
                continue;
            }
            let record = committed(cluster);
            let changed: Vec<SharedRouteStatus> = reported
                .routes()
                .filter(|r| route_exists(&r.route))
                .filter(|r| {
                    record
                        .and_then(|record| record.routes.get(&r.route))
                        .is_none_or(|entry| entry.parents != r.parents)
                })
                .cloned()
                .collect();
            let reported_keys: BTreeSet<&ObjectKey> = reported.routes().map(|r| &r.route).collect();
            let removed: Vec<ObjectKey> = record
                .map(|record| {
                    record
                        .routes
                        .keys()
                        .filter(|key| !reported_keys.contains(key))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let certificates = SharedObjectsRecord::normalize_uses(
                reported.certificates().to_vec(),
                &certificate_exists,
            );
            let same_version = record.is_some_and(|record| {
                record.shared_version == reported.shared_version()
                    || (record.shared_version < reported.shared_version()
                        && latest_route_version <= record.shared_version)
            });
            let same_certificates =
                record.is_some_and(|record| record.certificates == certificates);
            let rejected = SharedObjectsRecord::normalize_rejections(reported.rejected().to_vec());
            let same_rejected = record.is_some_and(|record| record.rejected == rejected);
            if same_version
                && same_certificates
                && same_rejected
                && changed.is_empty()
                && removed.is_empty()
            {
                self.shared_settled.insert(cluster.clone(), settled_at);
                continue;
            }
            changes.push(SharedChange {
                cluster: cluster.clone(),
                changed: SharedObjectsStatus {
                    shared_version: reported.shared_version(),
                    routes: changed,
                    certificates,
                    rejected,
                },
                removed,
            });
        }
        changes.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        changes
    }

    /// How long ago each cluster last reported (clusters never heard from are absent).
    pub fn report_ages(&self, now: Instant) -> impl Iterator<Item = (&ClusterName, Duration)> {
        self.clusters.iter().filter_map(move |(cluster, track)| {
            track
                .last_report
                .map(|last| (cluster, now.saturating_duration_since(last)))
        })
    }

    /// Forgets clusters that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&ClusterName) -> bool) {
        self.clusters.retain(|cluster, _| exists(cluster));
        self.shared_settled.retain(|cluster, _| exists(cluster));
    }
}

/// Whether a report shows a working cluster; if not, why.
fn assess(report: &HealthReport) -> Result<(), String> {
    if report.gateways.is_empty() {
        return Err("the agent reports no gateways".to_string());
    }
    if report.gateways.iter().any(|g| g.ready) {
        return Ok(());
    }
    let details: Vec<String> = report
        .gateways
        .iter()
        .map(|g| {
            let name = match g.address {
                Some(addr) => format!("{} ({addr})", g.name),
                None => g.name.clone(),
            };
            if g.detail.is_empty() {
                name
            } else {
                format!("{name}: {}", g.detail)
            }
        })
        .collect();
    Err(format!(
        "no gateway ready ({} probed): {}",
        report.gateways.len(),
        details.join("; ")
    ))
}

/// Whether the route hostnames of a report can serve `fqdn`: the most specific matching entry
/// (exact, then the longest `*.` wildcard, then `*`) must have a ready endpoint. `Ok` and `Err`
/// both carry the explanation.
pub fn can_serve(reported: &[HostnameHealth], fqdn: &Fqdn) -> Result<String, String> {
    RouteHosts::new(reported).can_serve(fqdn)
}

/// A report's route hostnames indexed by lower-case name, so judging each watched hostname
/// costs one lookup per label rather than a scan of the report.
struct RouteHosts<'a> {
    by_name: HashMap<String, &'a HostnameHealth>,
}

impl<'a> RouteHosts<'a> {
    fn new(reported: &'a [HostnameHealth]) -> Self {
        let mut by_name = HashMap::with_capacity(reported.len());
        for entry in reported {
            let name = entry.hostname.trim_end_matches('.').to_ascii_lowercase();
            by_name.entry(name).or_insert(entry);
        }
        Self { by_name }
    }

    fn can_serve(&self, fqdn: &Fqdn) -> Result<String, String> {
        let name = fqdn.to_string().trim_end_matches('.').to_ascii_lowercase();
        // Exact, then `*.<suffix>` for ever shorter suffixes (each needs at least one label in
        // front of it, as Gateway API wildcards do), then `*`.
        let mut best = self.by_name.get(&name);
        let mut rest = name.as_str();
        while best.is_none() {
            let Some((_, suffix)) = rest.split_once('.') else {
                break;
            };
            best = self.by_name.get(&format!("*.{suffix}"));
            rest = suffix;
        }
        let Some(entry) = best.or_else(|| self.by_name.get("*")) else {
            return Err(format!("no route in the cluster serves {name}"));
        };
        let mut text = format!(
            "{} of {} backend endpoints ready (route hostname {})",
            entry.ready_endpoints, entry.total_endpoints, entry.hostname
        );
        if entry.ready_endpoints == 0 && !entry.detail.is_empty() {
            // Why there is nothing to count: the cluster's own words (`Service demo/x not
            // found`), kept short by the reason's length cap.
            text.push_str(": ");
            text.push_str(&entry.detail);
        }
        if entry.ready_endpoints > 0 {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

fn truncate(mut reason: String) -> String {
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}
