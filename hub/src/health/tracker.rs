//! [`Tracker`]: the pure decision logic that turns a stream of health reports and the passage of
//! time into verdict changes. No IO and no clock: callers pass `now`, so tests drive it with a
//! fake clock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use meridian_proto::model::{ClusterName, HealthReport, HealthVerdict};

use crate::config::HealthConfig;

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

/// Health decisions of the leader.
///
/// **Guarantees:**
/// - A silent cluster (no report for `missed_reports` intervals) is declared unhealthy, but
///   only after the node has led for `leader_grace`, since agents may still be finding it.
/// - Hysteresis: `fall` consecutive bad reports make a cluster unhealthy, `rise` consecutive
///   good ones make it healthy; anything in between keeps the committed verdict.
/// - A report is good when at least one of the cluster's gateways is ready.
///
/// **Assumptions:** the caller feeds every report it receives while it is leader, and calls
/// [`Tracker::set_leader`] on every role change.
#[derive(Debug)]
pub struct Tracker {
    config: HealthConfig,
    clusters: HashMap<ClusterName, Track>,
    leader_since: Option<Instant>,
}

/// What the tracker knows about one cluster.
#[derive(Debug, Default)]
struct Track {
    /// When this leader first saw the cluster (its term's start, or the cluster's creation).
    first_seen: Option<Instant>,
    last_report: Option<Instant>,
    instance: String,
    last_seq: u64,
    good_streak: u32,
    bad_streak: u32,
    last_bad: String,
}

/// What happened to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Counted.
    Yes,
    /// Dropped: this node is not the leader.
    NotLeader,
    /// Dropped: the same agent instance already sent a report with this or a later sequence
    /// number (a duplicate or a reordered report).
    Stale,
}

// === impl Tracker ===

impl Tracker {
    /// A tracker that is not leading.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            clusters: HashMap::new(),
            leader_since: None,
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
            }
            (false, Some(_)) => {
                self.leader_since = None;
                self.clusters.clear();
            }
            _ => {}
        }
    }

    /// Counts one report from agent process `instance`.
    pub fn report(&mut self, now: Instant, instance: &str, report: &HealthReport) -> Accepted {
        if !self.is_leader() {
            return Accepted::NotLeader;
        }
        let miss_timeout = self.config.miss_timeout();
        let track = self.clusters.entry(report.cluster.clone()).or_default();
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
        }
        track.instance = instance.to_string();
        track.last_seq = report.seq;
        track.last_report = Some(now);
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
        Accepted::Yes
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
            let desired = if silent_for > miss_timeout {
                if in_grace {
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
