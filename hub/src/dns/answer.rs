//! The answer policy, pure: a hostname policy + cluster health + the client's region → which
//! clusters may be answered, in what preference order, with which weights and TTL.
//!
//! No IO, no clock, no randomness: the caller passes `now` and the random numbers, so every
//! rule is unit-tested with tables (`dns/tests.rs`).
//!
//! # Algorithm
//! 1. **Eligible targets**: targets whose cluster exists, is not drained and has addresses
//!    (`Cluster::addresses`, else the agent-reported ones). Drained clusters never get answers,
//!    not even when failing open.
//! 2. **Healthy**: eligible with a `Healthy` verdict (`Unknown` and `Unhealthy` count as down),
//!    and able to serve the hostname (`ClusterView::unserved_hostnames`), unless no healthy
//!    target can serve it: then that backend signal is ignored (fail open on it).
//! 3. **Pin**: a pinned cluster that is healthy is the only answer.
//! 4. **Panic threshold**: when fewer than `panic_threshold_percent` of the eligible targets
//!    are healthy, every eligible target is treated as healthy (so a lone survivor is not
//!    handed all traffic when most targets merely flap).
//! 5. **Nothing healthy**: fail open (answer every eligible address) or fail closed (NODATA).
//! 6. **Groups** (failover tiers): with geo on and the client placed in region R: R first, then
//!    `region_order`, then the other regions nearest to R first (by configured coordinates,
//!    then by name). Otherwise `region_order` first, then every other region as one group.
//!    Targets with weight 0 form a last group ("only when nothing else is healthy").
//! 7. **Choice**: one answer is a weighted pick inside the first group (its addresses of the
//!    queried family); with `max_answers` > 1 the answer fills up to that many addresses,
//!    weighted-shuffled within each group, groups in order.
//! 8. **TTL**: the policy's TTL, capped at `unstable_ttl` while any eligible target's verdict
//!    changed less than `stable_after` ago.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meridian_proto::model::{AllUnhealthy, ClusterName, HealthVerdict, HostnamePolicy, Region};

use super::ClusterView;
use super::config::RegionLocation;
use super::geo::distance_km;

/// The most addresses a fail-open answer carries. 32 AAAA records (28 bytes each, compressed)
/// fit a 1,232-byte EDNS response with its question and OPT; with more clusters than that,
/// answers are a weighted share of them, query by query (every address of every cluster
/// could outgrow any message, even over TCP).
pub(crate) const FAIL_OPEN_MAX_ANSWERS: u32 = 32;

/// Everything the policy depends on besides the hostname policy itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PolicyContext<'a> {
    /// The registered clusters with their health.
    pub(crate) clusters: &'a BTreeMap<ClusterName, ClusterView>,
    /// Region coordinates, for nearest-region fallback.
    pub(crate) coordinates: &'a BTreeMap<Region, RegionLocation>,
    /// Wall clock, Unix milliseconds.
    pub(crate) now_unix_ms: u64,
    /// TTL cap while health is changing.
    pub(crate) unstable_ttl: u32,
    /// How long verdicts must hold before the normal TTL returns, milliseconds.
    pub(crate) stable_after_ms: u64,
}

/// The outcome of the policy for one hostname and one client region.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    /// Which rule produced the answer set.
    pub mode: PlanMode,
    /// Answerable clusters in preference order (failover tiers).
    pub groups: Vec<Group>,
    /// How many addresses one answer carries; 0 means every address of every member.
    pub max_answers: u32,
    /// Answer TTL in seconds.
    pub ttl: u32,
    /// Whether the TTL was lowered because health is changing.
    pub ttl_lowered: bool,
    /// When the lowered TTL ends (Unix milliseconds), if it is lowered.
    pub stable_at_unix_ms: Option<u64>,
    /// Every target of the policy with its state, for `explain`.
    pub candidates: Vec<Candidate>,
}

/// Why the plan looks the way it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// Healthy targets, by geo, failover order and weights.
    Normal,
    /// The pinned cluster is healthy and is the only answer.
    Pinned,
    /// Below the panic threshold: every eligible target is treated as healthy.
    Panic,
    /// Nothing healthy; fail-open answers every eligible target (at most
    /// [`FAIL_OPEN_MAX_ANSWERS`] addresses, a weighted share when there are more).
    FailOpen,
    /// Nothing healthy; fail-closed answers nothing.
    FailClosed,
    /// No eligible target at all (none configured, all drained, or none has addresses).
    NoTargets,
}

/// One failover tier.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Group {
    /// The tier's region, or `None` for a tier mixing regions.
    #[serde(serialize_with = "serialize_optional_display")]
    pub region: Option<Region>,
    /// Its members.
    pub members: Vec<Member>,
}

/// A cluster that may be answered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The cluster.
    #[serde(serialize_with = "serialize_display")]
    pub cluster: ClusterName,
    /// Its weight inside the tier (at least 1; weight-0 targets get 1 in their own tier).
    pub weight: u32,
    /// Its IPv4 addresses.
    pub v4: Vec<Ipv4Addr>,
    /// Its IPv6 addresses.
    pub v6: Vec<Ipv6Addr>,
}

/// A policy target with its state, for `explain`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// The cluster.
    #[serde(serialize_with = "serialize_display")]
    pub cluster: ClusterName,
    /// Its region, if the cluster exists.
    #[serde(serialize_with = "serialize_optional_display")]
    pub region: Option<Region>,
    /// Configured weight.
    pub weight: u32,
    /// Committed verdict (`unknown`, `healthy`, `unhealthy`), or `missing`.
    pub verdict: String,
    /// Why the verdict is what it is.
    pub reason: String,
    /// Drained by an operator.
    pub drained: bool,
    /// Addresses DNS would answer with.
    pub addresses: Vec<IpAddr>,
    /// Whether it can be answered at all (exists, not drained, has addresses).
    pub eligible: bool,
    /// Whether it counted as healthy in this plan.
    pub healthy: bool,
}

// Model names do not implement `Serialize` (the house style keeps wire formats out of the
// model); explanations show them as strings.
fn serialize_display<S: serde::Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn serialize_optional_display<S: serde::Serializer>(
    value: &Option<impl std::fmt::Display>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

// === impl Plan ===

impl Plan {
    /// True when both plans give clients the same answers (ignoring explanations), i.e. the
    /// client's location did not matter between them.
    pub(crate) fn same_answers(&self, other: &Plan) -> bool {
        self.mode == other.mode
            && self.max_answers == other.max_answers
            && self.ttl == other.ttl
            && self.groups.len() == other.groups.len()
            && self
                .groups
                .iter()
                .zip(&other.groups)
                .all(|(a, b)| a.members == b.members)
    }
}

/// Computes the plan of `policy` for a client in `client_region` (`None`: unknown, or geo off).
pub(crate) fn plan(
    policy: &HostnamePolicy,
    context: &PolicyContext<'_>,
    client_region: Option<&Region>,
) -> Plan {
    let routing = &policy.routing;
    let mut candidates = Vec::with_capacity(policy.targets.len());
    let mut seen = BTreeSet::new();
    let mut stable_at: Option<u64> = None;
    for target in &policy.targets {
        if !seen.insert(target.cluster.clone()) {
            // A target listed twice counts once (the first entry wins).
            continue;
        }
        let Some(view) = context.clusters.get(&target.cluster) else {
            candidates.push(Candidate {
                cluster: target.cluster.clone(),
                region: None,
                weight: target.weight,
                verdict: "missing".into(),
                reason: "no such cluster".into(),
                drained: false,
                addresses: Vec::new(),
                eligible: false,
                healthy: false,
            });
            continue;
        };
        let addresses = if view.cluster.addresses.is_empty() {
            view.reported_addresses.clone()
        } else {
            view.cluster.addresses.clone()
        };
        let eligible = !view.cluster.drained && !addresses.is_empty();
        let healthy = eligible && view.health.verdict == HealthVerdict::Healthy;
        if eligible && view.health.since_unix_ms > 0 {
            let until = view
                .health
                .since_unix_ms
                .saturating_add(context.stable_after_ms);
            if until > context.now_unix_ms {
                stable_at = Some(stable_at.map_or(until, |s| s.max(until)));
            }
        }
        candidates.push(Candidate {
            cluster: target.cluster.clone(),
            region: Some(view.cluster.region.clone()),
            weight: target.weight,
            verdict: verdict_name(view.health.verdict).into(),
            reason: view.health.reason.clone(),
            drained: view.cluster.drained,
            addresses,
            eligible,
            healthy,
        });
    }

    // Backend health per hostname: a healthy cluster that cannot serve this hostname (its agent
    // reports no ready backend behind the hostname's routes) counts as down for it, unless no
    // healthy target can serve it (the route is not pushed yet, or the app is down everywhere):
    // then the hostname signal is ignored and gateway health alone decides.
    let unserved = |cluster: &ClusterName| {
        context
            .clusters
            .get(cluster)
            .and_then(|view| view.unserved_hostnames.get(&policy.fqdn))
    };
    if candidates
        .iter()
        .any(|c| c.healthy && unserved(&c.cluster).is_none())
    {
        for candidate in candidates.iter_mut().filter(|c| c.healthy) {
            if let Some(why) = unserved(&candidate.cluster) {
                candidate.healthy = false;
                candidate.reason = format!("cannot serve {}: {why}", policy.fqdn);
            }
        }
    }

    let (ttl, ttl_lowered) = match stable_at {
        Some(_) if context.unstable_ttl < policy.ttl => (context.unstable_ttl, true),
        _ => (policy.ttl, false),
    };
    let mut plan = Plan {
        mode: PlanMode::Normal,
        groups: Vec::new(),
        max_answers: routing.max_answers.max(1),
        ttl,
        ttl_lowered,
        stable_at_unix_ms: if ttl_lowered { stable_at } else { None },
        candidates,
    };

    let n_eligible = plan.candidates.iter().filter(|c| c.eligible).count();
    let n_healthy = plan.candidates.iter().filter(|c| c.healthy).count();
    if n_eligible == 0 {
        plan.mode = PlanMode::NoTargets;
        return plan;
    }

    if let Some(pinned) = &routing.pinned
        && let Some(candidate) = plan
            .candidates
            .iter()
            .find(|c| &c.cluster == pinned && c.healthy)
    {
        plan.mode = PlanMode::Pinned;
        plan.groups = vec![Group {
            region: candidate.region.clone(),
            members: vec![member(candidate, 1)],
        }];
        return plan;
    }

    let threshold = u64::from(routing.panic_threshold_percent.min(100));
    if threshold > 0 && (n_healthy as u64) * 100 < threshold * n_eligible as u64 {
        plan.mode = PlanMode::Panic;
        for candidate in &mut plan.candidates {
            candidate.healthy = candidate.eligible;
        }
    } else if n_healthy == 0 {
        match routing.when_all_unhealthy {
            AllUnhealthy::FailOpen => {
                plan.mode = PlanMode::FailOpen;
                plan.max_answers = FAIL_OPEN_MAX_ANSWERS;
                plan.groups = vec![Group {
                    region: None,
                    members: plan
                        .candidates
                        .iter()
                        .filter(|c| c.eligible)
                        .map(|c| member(c, c.weight.max(1)))
                        .collect(),
                }];
            }
            AllUnhealthy::FailClosed => plan.mode = PlanMode::FailClosed,
        }
        return plan;
    }

    plan.groups = groups(&plan.candidates, routing, context, client_region);
    plan
}

/// Orders healthy candidates into failover tiers.
fn groups(
    candidates: &[Candidate],
    routing: &meridian_proto::model::Routing,
    context: &PolicyContext<'_>,
    client_region: Option<&Region>,
) -> Vec<Group> {
    let healthy: Vec<&Candidate> = candidates.iter().filter(|c| c.healthy).collect();
    let regions: BTreeSet<&Region> = healthy.iter().filter_map(|c| c.region.as_ref()).collect();

    // The region order: a list of single-region tiers, then (without a known client region)
    // one mixed tier for everything else.
    let mut order: Vec<&Region> = Vec::new();
    let mut rest_mixed = true;
    let client_region = if routing.geo { client_region } else { None };
    if let Some(home) = client_region {
        order.push(home);
        rest_mixed = false;
    }
    for region in &routing.region_order {
        if !order.contains(&region) {
            order.push(region);
        }
    }
    let mut rest: Vec<&Region> = regions
        .iter()
        .copied()
        .filter(|r| !order.contains(r))
        .collect();
    if let Some(home) = client_region {
        let home_location = context.coordinates.get(home).copied();
        rest.sort_by(|a, b| {
            let da = distance(home_location, context.coordinates.get(*a).copied());
            let db = distance(home_location, context.coordinates.get(*b).copied());
            da.total_cmp(&db).then_with(|| a.cmp(b))
        });
    }

    let weighted = |c: &&&Candidate| c.weight > 0;
    let mut tiers = Vec::new();
    for region in &order {
        let members: Vec<Member> = healthy
            .iter()
            .filter(weighted)
            .filter(|c| c.region.as_ref() == Some(*region))
            .map(|c| member(c, c.weight))
            .collect();
        if !members.is_empty() {
            tiers.push(Group {
                region: Some((*region).clone()),
                members,
            });
        }
    }
    if rest_mixed {
        let members: Vec<Member> = healthy
            .iter()
            .filter(weighted)
            .filter(|c| c.region.as_ref().is_some_and(|r| rest.contains(&r)))
            .map(|c| member(c, c.weight))
            .collect();
        if !members.is_empty() {
            tiers.push(Group {
                region: None,
                members,
            });
        }
    } else {
        for region in &rest {
            let members: Vec<Member> = healthy
                .iter()
                .filter(weighted)
                .filter(|c| c.region.as_ref() == Some(*region))
                .map(|c| member(c, c.weight))
                .collect();
            if !members.is_empty() {
                tiers.push(Group {
                    region: Some((*region).clone()),
                    members,
                });
            }
        }
    }
    // Weight 0: only when nothing else is healthy; equal shares among themselves, in the same
    // region preference.
    let mut last_resort: Vec<&Candidate> =
        healthy.iter().copied().filter(|c| c.weight == 0).collect();
    let rank = |c: &Candidate| {
        c.region
            .as_ref()
            .and_then(|r| order.iter().chain(rest.iter()).position(|o| *o == r))
            .unwrap_or(usize::MAX)
    };
    last_resort.sort_by_key(|c| rank(c));
    if !last_resort.is_empty() {
        tiers.push(Group {
            region: None,
            members: last_resort.into_iter().map(|c| member(c, 1)).collect(),
        });
    }
    tiers
}

fn distance(from: Option<RegionLocation>, to: Option<RegionLocation>) -> f64 {
    match (from, to) {
        (Some(a), Some(b)) => distance_km(a, b),
        _ => f64::INFINITY,
    }
}

fn member(candidate: &Candidate, weight: u32) -> Member {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for address in &candidate.addresses {
        match address.to_canonical() {
            IpAddr::V4(a) => v4.push(a),
            IpAddr::V6(a) => v6.push(a),
        }
    }
    Member {
        cluster: candidate.cluster.clone(),
        weight,
        v4,
        v6,
    }
}

fn verdict_name(verdict: HealthVerdict) -> &'static str {
    match verdict {
        HealthVerdict::Unknown => "unknown",
        HealthVerdict::Healthy => "healthy",
        HealthVerdict::Unhealthy => "unhealthy",
    }
}

/// Picks an index from `cumulative` (running sums of weights, last = total) for a random
/// number `random`.
pub(crate) fn pick_weighted(cumulative: &[u64], random: u64) -> usize {
    let Some(&total) = cumulative.last() else {
        return 0;
    };
    if total == 0 {
        return 0;
    }
    let point = random % total;
    cumulative.partition_point(|&sum| sum <= point)
}

/// Weighted random order without replacement (Efraimidis–Spirakis with integer keys):
/// writes the member indexes of `weights` into `order`, heavier ones likelier first.
pub(crate) fn weighted_order(
    weights: &[u32],
    mut next_random: impl FnMut() -> u64,
    order: &mut Vec<usize>,
) {
    order.clear();
    order.extend(0..weights.len());
    // Repeated weighted picks from the remaining members; groups are small.
    for position in 0..order.len() {
        let remaining = &order[position..];
        let total: u64 = remaining
            .iter()
            .map(|&i| u64::from(weights[i].max(1)))
            .sum();
        let mut point = next_random() % total.max(1);
        let mut chosen = position;
        for (offset, &index) in remaining.iter().enumerate() {
            let weight = u64::from(weights[index].max(1));
            if point < weight {
                chosen = position + offset;
                break;
            }
            point -= weight;
        }
        order.swap(position, chosen);
    }
}
