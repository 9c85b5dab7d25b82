//! `State::apply`: the deterministic transition function, and the validation it shares with
//! the admin API.

use std::collections::BTreeSet;

use meridian_proto::model::HostnamePolicy;

use super::certificate::check_certificate;
use super::command::{Action, Command, Outcome, Rejection};
use super::state::{
    AuditEntry, ClusterRecord, HostnameServing, RecordSet, RouteStatusEntry, SharedObjectsRecord,
    State, ZoneKey,
};

/// The largest TTL DNS allows (RFC 2181 §8).
const MAX_TTL: u32 = 2_147_483_647;

// === impl State ===

impl State {
    /// Applies `command`, committed at log `index`, and says what happened.
    ///
    /// Deterministic: no clock, no randomness, no IO; the same commands at the same indexes
    /// give the same state on every replica. A refused command leaves the state as it was
    /// (except for its audit entry). Commands that change state or are refused are audited;
    /// commands that change nothing are not, nor route status reports (observations of what
    /// agents programmed, not changes anyone made; every route change would add one per
    /// cluster and push operators' changes out of the log).
    pub fn apply(&mut self, index: u64, command: Command) -> Outcome {
        let action_text = command.action.describe();
        let audited = !matches!(command.action, Action::SetSharedStatus { .. });
        let outcome = self.transition(index, command.unix_ms, command.action);
        let result = match &outcome {
            Outcome::Applied if audited => Some("applied".to_string()),
            Outcome::Applied | Outcome::Unchanged => None,
            Outcome::Rejected(rejection) => Some(format!("rejected: {rejection}")),
        };
        if let Some(result) = result {
            self.push_audit(AuditEntry {
                index,
                unix_ms: command.unix_ms,
                actor: command.actor,
                action: action_text,
                result,
            });
        }
        outcome
    }

    fn transition(&mut self, index: u64, unix_ms: u64, action: Action) -> Outcome {
        match action {
            Action::PutCluster(cluster) => {
                match self.clusters.get_mut(&cluster.name) {
                    Some(record) if record.cluster == cluster => return Outcome::Unchanged,
                    Some(record) => record.cluster = cluster,
                    None => {
                        let record = ClusterRecord {
                            cluster,
                            health: Default::default(),
                            reported_addresses: Vec::new(),
                            hostnames: Default::default(),
                            shared: None,
                        };
                        self.clusters.insert(record.cluster.name.clone(), record);
                    }
                }
                self.dns_version = index;
                Outcome::Applied
            }
            Action::DeleteCluster(name) => {
                if !self.clusters.contains_key(&name) {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "cluster {name} does not exist"
                    )));
                }
                let users = self.hostnames_using(&name);
                if !users.is_empty() {
                    let users: Vec<String> = users.iter().map(ToString::to_string).collect();
                    return Outcome::Rejected(Rejection::conflict(format!(
                        "cluster {name} is still used by hostname {}; change or delete {} first",
                        users.join(", "),
                        if users.len() == 1 { "it" } else { "them" }
                    )));
                }
                self.clusters.remove(&name);
                self.dns_version = index;
                Outcome::Applied
            }
            Action::SetHealth { cluster, health } => {
                let Some(record) = self.clusters.get_mut(&cluster) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "cluster {cluster} does not exist"
                    )));
                };
                // Only a verdict change counts: the tracker may re-propose a verdict (a new
                // leader, a retried proposal) and `since` must keep the time of the change.
                if record.health.verdict == health.verdict {
                    return Outcome::Unchanged;
                }
                record.health = health;
                self.dns_version = index;
                Outcome::Applied
            }
            Action::SetReportedAddresses { cluster, addresses } => {
                let Some(record) = self.clusters.get_mut(&cluster) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "cluster {cluster} does not exist"
                    )));
                };
                if record.reported_addresses == addresses {
                    return Outcome::Unchanged;
                }
                record.reported_addresses = addresses;
                self.dns_version = index;
                Outcome::Applied
            }
            Action::SetHostnameServing {
                cluster,
                fqdn,
                serving,
                reason,
            } => {
                let Some(policy) = self.hostnames.get(&fqdn) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "hostname {fqdn} does not exist"
                    )));
                };
                if !policy.targets.iter().any(|t| t.cluster == cluster) {
                    return Outcome::Rejected(Rejection::conflict(format!(
                        "cluster {cluster} is not a target of hostname {fqdn}"
                    )));
                }
                let Some(record) = self.clusters.get_mut(&cluster) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "cluster {cluster} does not exist"
                    )));
                };
                // Only a change counts, like verdicts: `since` keeps the time of the change.
                if record
                    .hostnames
                    .get(&fqdn)
                    .is_some_and(|h| h.serving == serving)
                {
                    return Outcome::Unchanged;
                }
                record.hostnames.insert(
                    fqdn,
                    HostnameServing {
                        serving,
                        reason,
                        since_unix_ms: unix_ms,
                    },
                );
                self.dns_version = index;
                Outcome::Applied
            }
            Action::SetSharedStatus {
                cluster,
                changed,
                removed,
            } => {
                let Some(record) = self.clusters.get_mut(&cluster) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "cluster {cluster} does not exist"
                    )));
                };
                let mut applied = record.shared.is_none();
                let shared = record.shared.get_or_insert_with(Default::default);
                applied |= shared.shared_version != changed.shared_version;
                shared.shared_version = changed.shared_version;
                // Whole every time; a certificate deleted since is in use nowhere.
                let certificates =
                    SharedObjectsRecord::normalize_uses(changed.certificates, |key| {
                        self.certificates.contains_key(key)
                    });
                applied |= shared.certificates != certificates;
                shared.certificates = certificates;
                let rejected = SharedObjectsRecord::normalize_rejections(changed.rejected);
                applied |= shared.rejected != rejected;
                shared.rejected = rejected;
                let routes = shared;
                for key in &removed {
                    applied |= routes.routes.remove(key).is_some();
                }
                for status in changed.routes {
                    // A report may describe a route deleted since; it has no status to show.
                    if !self.routes.contains_key(&status.route) {
                        continue;
                    }
                    match routes.routes.get_mut(&status.route) {
                        Some(entry) if entry.parents == status.parents => {}
                        Some(entry) => {
                            entry.parents = status.parents;
                            entry.since_unix_ms = unix_ms;
                            applied = true;
                        }
                        None => {
                            applied = true;
                            routes.routes.insert(
                                status.route,
                                RouteStatusEntry {
                                    parents: status.parents,
                                    since_unix_ms: unix_ms,
                                },
                            );
                        }
                    }
                }
                if applied {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
            Action::SetDrained { cluster, drained } => {
                let Some(record) = self.clusters.get_mut(&cluster) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "cluster {cluster} does not exist"
                    )));
                };
                if record.cluster.drained == drained {
                    return Outcome::Unchanged;
                }
                record.cluster.drained = drained;
                self.dns_version = index;
                Outcome::Applied
            }
            Action::PutHostname(policy) => {
                if let Err(rejection) = check_hostname(self, &policy) {
                    return Outcome::Rejected(rejection);
                }
                for rtype in ["A", "AAAA", "CNAME"] {
                    if self
                        .records
                        .contains_key(&(policy.fqdn.clone(), rtype.to_string()))
                    {
                        return Outcome::Rejected(Rejection::conflict(format!(
                            "{} has static {rtype} records; a hostname policy answers its \
                             addresses, so delete them first",
                            policy.fqdn
                        )));
                    }
                }
                if self.hostnames.get(&policy.fqdn) == Some(&policy) {
                    return Outcome::Unchanged;
                }
                // Clusters the policy no longer targets forget whether they serve it.
                for (name, record) in &mut self.clusters {
                    if !policy.targets.iter().any(|t| &t.cluster == name) {
                        record.hostnames.remove(&policy.fqdn);
                    }
                }
                self.hostnames.insert(policy.fqdn.clone(), policy);
                self.dns_version = index;
                Outcome::Applied
            }
            Action::DeleteHostname(fqdn) => {
                if self.hostnames.remove(&fqdn).is_none() {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "hostname {fqdn} does not exist"
                    )));
                }
                for record in self.clusters.values_mut() {
                    record.hostnames.remove(&fqdn);
                }
                self.dns_version = index;
                Outcome::Applied
            }
            Action::SetPinned { fqdn, cluster } => {
                let Some(policy) = self.hostnames.get(&fqdn) else {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "hostname {fqdn} does not exist"
                    )));
                };
                if policy.routing.pinned == cluster {
                    return Outcome::Unchanged;
                }
                let mut policy = policy.clone();
                policy.routing.pinned = cluster;
                if let Err(rejection) = check_hostname(self, &policy) {
                    return Outcome::Rejected(rejection);
                }
                self.hostnames.insert(fqdn, policy);
                self.dns_version = index;
                Outcome::Applied
            }
            Action::PutRoute(route) => {
                if self.routes.get(&route.key) == Some(&*route) {
                    return Outcome::Unchanged;
                }
                self.route_versions.insert(route.key.clone(), index);
                self.routes.insert(route.key.clone(), *route);
                self.shared_version = index;
                Outcome::Applied
            }
            Action::DeleteRoute(key) => {
                if self.routes.remove(&key).is_none() {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "route {key} does not exist"
                    )));
                }
                self.route_versions.remove(&key);
                // A route put again later starts with no status until clusters report it.
                for record in self.clusters.values_mut() {
                    if let Some(shared) = &mut record.shared {
                        shared.routes.remove(&key);
                    }
                }
                self.shared_version = index;
                Outcome::Applied
            }
            Action::PutCertificate(cert) => {
                if let Err(rejection) = check_certificate(&cert) {
                    return Outcome::Rejected(rejection);
                }
                if self.certificates.get(&cert.key) == Some(&*cert) {
                    return Outcome::Unchanged;
                }
                self.certificates.insert(cert.key.clone(), *cert);
                self.shared_version = index;
                Outcome::Applied
            }
            Action::DeleteCertificate(key) => {
                if self.certificates.remove(&key).is_none() {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "certificate {key} does not exist"
                    )));
                }
                for record in self.clusters.values_mut() {
                    if let Some(shared) = &mut record.shared {
                        shared.certificates.retain(|u| u.certificate != key);
                    }
                }
                self.shared_version = index;
                Outcome::Applied
            }
            Action::PutZoneKey { zone, pkcs8 } => {
                if self.zone_keys.contains_key(&zone) {
                    return Outcome::Rejected(Rejection::conflict(format!(
                        "zone {zone} already has a DNSSEC key"
                    )));
                }
                if pkcs8.is_empty() {
                    return Outcome::Rejected(Rejection::invalid("pkcs8", "key is empty"));
                }
                // The leader generated the key just before stamping the command.
                let key = ZoneKey {
                    pkcs8,
                    created_unix_ms: unix_ms,
                };
                self.zone_keys.insert(zone, key);
                self.dns_version = index;
                Outcome::Applied
            }
            Action::PutRecordSet {
                name,
                rtype,
                ttl,
                values,
            } => {
                let set = RecordSet { ttl, values };
                if let Err(rejection) = check_record_set(self, &name, &rtype, &set) {
                    return Outcome::Rejected(rejection);
                }
                let key = (name, rtype);
                if self.records.get(&key) == Some(&set) {
                    return Outcome::Unchanged;
                }
                self.records.insert(key, set);
                self.dns_version = index;
                Outcome::Applied
            }
            Action::DeleteRecordSet { name, rtype } => {
                if self
                    .records
                    .remove(&(name.clone(), rtype.clone()))
                    .is_none()
                {
                    return Outcome::Rejected(Rejection::not_found(format!(
                        "{name} has no {rtype} records"
                    )));
                }
                self.dns_version = index;
                Outcome::Applied
            }
        }
    }
}

/// The record types the hub serves from static record sets.
pub const RECORD_TYPES: [&str; 5] = ["A", "AAAA", "CNAME", "TXT", "MX"];

/// Checks a record set against the state: values of its type within the wire limits, one
/// CNAME alone at its name (RFC 1034 §3.6.2), no addresses where a hostname policy answers.
pub fn check_record_set(
    state: &State,
    name: &meridian_proto::model::Fqdn,
    rtype: &str,
    set: &RecordSet,
) -> Result<(), Rejection> {
    if !RECORD_TYPES.contains(&rtype) {
        return Err(Rejection::invalid(
            "type",
            format!("{rtype:?} is not one of {}", RECORD_TYPES.join(", ")),
        ));
    }
    if set.ttl > MAX_TTL {
        return Err(Rejection::invalid(
            "ttl",
            format!("{} is larger than the largest DNS TTL {MAX_TTL}", set.ttl),
        ));
    }
    if set.values.is_empty() {
        return Err(Rejection::invalid(
            "values",
            "must hold at least one record",
        ));
    }
    for (i, value) in set.values.iter().enumerate() {
        if value.type_name() != rtype {
            return Err(Rejection::invalid(
                format!("values[{i}]"),
                format!("is a {} record in a {rtype} record set", value.type_name()),
            ));
        }
        if let Err(err) = value.check() {
            return Err(Rejection::invalid(format!("values[{i}]"), err.to_string()));
        }
        if set.values[..i].contains(value) {
            return Err(Rejection::invalid(
                format!("values[{i}]"),
                "is listed more than once",
            ));
        }
    }
    let others: Vec<&str> = state
        .records
        .range((name.clone(), String::new())..)
        .take_while(|((n, _), _)| n == name)
        .map(|((_, t), _)| t.as_str())
        .filter(|t| *t != rtype)
        .collect();
    if rtype == "CNAME" {
        if set.values.len() > 1 {
            return Err(Rejection::invalid("values", "a name has at most one CNAME"));
        }
        if let Some(other) = others.first() {
            return Err(Rejection::conflict(format!(
                "{name} has {other} records; a CNAME must be the only record at its name"
            )));
        }
        if state.hostnames.contains_key(name) {
            return Err(Rejection::conflict(format!(
                "{name} has a hostname policy; a CNAME must be the only record at its name"
            )));
        }
    } else if others.contains(&"CNAME") {
        return Err(Rejection::conflict(format!(
            "{name} has a CNAME; no other records may share its name"
        )));
    }
    if (rtype == "A" || rtype == "AAAA") && state.hostnames.contains_key(name) {
        return Err(Rejection::conflict(format!(
            "{name} has a hostname policy, which answers its {rtype} queries"
        )));
    }
    Ok(())
}

/// Checks a hostname policy against the state: its targets exist, are listed once, and its
/// routing knobs are in range. The admin API runs it for a quick 400; `apply` runs it again
/// because the state may change between the two.
pub fn check_hostname(state: &State, policy: &HostnamePolicy) -> Result<(), Rejection> {
    if policy.ttl > MAX_TTL {
        return Err(Rejection::invalid(
            "ttl",
            format!(
                "{} is larger than the largest DNS TTL {MAX_TTL}",
                policy.ttl
            ),
        ));
    }
    if policy.targets.is_empty() {
        return Err(Rejection::invalid(
            "targets",
            "must name at least one cluster",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, target) in policy.targets.iter().enumerate() {
        if !state.clusters.contains_key(&target.cluster) {
            return Err(Rejection::invalid(
                format!("targets[{i}].cluster"),
                format!("cluster {} does not exist", target.cluster),
            ));
        }
        if !seen.insert(&target.cluster) {
            return Err(Rejection::invalid(
                format!("targets[{i}].cluster"),
                format!("cluster {} is listed more than once", target.cluster),
            ));
        }
    }
    let routing = &policy.routing;
    if routing.max_answers == 0 {
        return Err(Rejection::invalid(
            "routing.max_answers",
            "must be at least 1",
        ));
    }
    if routing.panic_threshold_percent > 100 {
        return Err(Rejection::invalid(
            "routing.panic_threshold_percent",
            format!("{} is more than 100", routing.panic_threshold_percent),
        ));
    }
    let mut regions = BTreeSet::new();
    for (i, region) in routing.region_order.iter().enumerate() {
        if !regions.insert(region) {
            return Err(Rejection::invalid(
                format!("routing.region_order[{i}]"),
                format!("region {region} is listed more than once"),
            ));
        }
    }
    if let Some(pinned) = &routing.pinned
        && !policy.targets.iter().any(|t| &t.cluster == pinned)
    {
        return Err(Rejection::invalid(
            "routing.pinned",
            format!("cluster {pinned} is not one of the hostname's targets"),
        ));
    }
    Ok(())
}
