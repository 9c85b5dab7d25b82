//! The durable, versioned encodings of commands, outcomes and snapshots (protobuf messages from
//! `store.proto`, built on the model messages through `meridian_proto::convert`).
//!
//! **Invariant:** fields and command kinds are only added. Decoding a command of a kind this
//! build does not know is an error the state machine turns into a refusal, never a panic; a
//! snapshot with a newer `format_version` is refused.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use meridian_proto::convert::ConvertError;
use meridian_proto::model::{ClusterName, Fqdn, ObjectKey, RecordData, SharedRouteStatus};
use meridian_proto::pb;
use prost::Message as _;

use super::command::{Action, Command, Outcome, RejectKind, Rejection};
use super::state::{
    AuditEntry, ClusterRecord, HostnameServing, RecordSet, RouteStatusEntry, SharedObjectsRecord,
    State, ZoneKey,
};

/// The snapshot format this build writes, and the newest it reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// A stored command, outcome or snapshot that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct DecodeError {
    /// What was being decoded (`command`, `snapshot`).
    pub what: &'static str,
    /// Why it failed, with the field path where known.
    pub why: String,
}

// === commands ===

/// Encodes a command for the Raft log.
pub fn encode_command(command: &Command) -> Vec<u8> {
    use pb::store_command::Kind;
    let kind = match &command.action {
        Action::PutCluster(cluster) => Kind::PutCluster(cluster.into()),
        Action::DeleteCluster(name) => Kind::DeleteCluster(name.to_string()),
        Action::SetHealth { cluster, health } => Kind::SetHealth(pb::SetHealth {
            cluster: cluster.to_string(),
            health: Some(health.into()),
        }),
        Action::SetReportedAddresses { cluster, addresses } => {
            Kind::SetReportedAddresses(pb::SetReportedAddresses {
                cluster: cluster.to_string(),
                addresses: addresses.iter().map(ToString::to_string).collect(),
            })
        }
        Action::SetHostnameServing {
            cluster,
            fqdn,
            serving,
            reason,
        } => Kind::SetHostnameServing(pb::SetHostnameServing {
            cluster: cluster.to_string(),
            fqdn: fqdn.to_string(),
            serving: *serving,
            reason: reason.clone(),
        }),
        Action::SetSharedStatus {
            cluster,
            changed,
            removed,
        } => Kind::SetSharedStatus(pb::SetSharedStatus {
            cluster: cluster.to_string(),
            changed: Some(changed.into()),
            removed: removed.iter().map(Into::into).collect(),
        }),
        Action::SetDrained { cluster, drained } => Kind::SetDrained(pb::SetDrained {
            cluster: cluster.to_string(),
            drained: *drained,
        }),
        Action::PutHostname(policy) => Kind::PutHostname(policy.into()),
        Action::DeleteHostname(fqdn) => Kind::DeleteHostname(fqdn.to_string()),
        Action::SetPinned { fqdn, cluster } => Kind::SetPinned(pb::SetPinned {
            fqdn: fqdn.to_string(),
            cluster: cluster
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }),
        Action::PutRoute(route) => Kind::PutRoute((&**route).into()),
        Action::DeleteRoute(key) => Kind::DeleteRoute(key.into()),
        Action::PutCertificate(cert) => Kind::PutCertificate((&**cert).into()),
        Action::DeleteCertificate(key) => Kind::DeleteCertificate(key.into()),
        Action::PutZoneKey { zone, pkcs8 } => Kind::PutZoneKey(pb::ZoneKey {
            zone: zone.to_string(),
            pkcs8: pkcs8.clone(),
            created_unix_ms: command.unix_ms,
        }),
        Action::PutRecordSet {
            name,
            rtype,
            ttl,
            values,
        } => Kind::PutRecordSet(encode_record_set(name, rtype, *ttl, values)),
        Action::DeleteRecordSet { name, rtype } => Kind::DeleteRecordSet(pb::RecordSetKey {
            name: name.to_string(),
            r#type: rtype.clone(),
        }),
    };
    pb::StoreCommand {
        actor: command.actor.clone(),
        unix_ms: command.unix_ms,
        kind: Some(kind),
    }
    .encode_to_vec()
}

/// Decodes a command from the Raft log.
pub fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    use pb::store_command::Kind;
    let err = |why: String| DecodeError {
        what: "command",
        why,
    };
    let message = pb::StoreCommand::decode(bytes).map_err(|e| err(e.to_string()))?;
    let Some(kind) = message.kind else {
        return Err(err(
            "unknown or missing command kind (written by a newer hub?)".to_string(),
        ));
    };
    let action = match kind {
        Kind::PutCluster(cluster) => Action::PutCluster(
            cluster
                .try_into()
                .map_err(|e: ConvertError| err(e.in_field("put_cluster").to_string()))?,
        ),
        Kind::DeleteCluster(name) => Action::DeleteCluster(
            ClusterName::new(name).map_err(|e| err(format!("delete_cluster: {e}")))?,
        ),
        Kind::SetHealth(set) => Action::SetHealth {
            cluster: ClusterName::new(set.cluster)
                .map_err(|e| err(format!("set_health.cluster: {e}")))?,
            health: set
                .health
                .ok_or_else(|| err("set_health.health: missing required field".to_string()))?
                .try_into()
                .map_err(|e: ConvertError| {
                    err(e.in_field("health").in_field("set_health").to_string())
                })?,
        },
        Kind::SetReportedAddresses(set) => Action::SetReportedAddresses {
            cluster: ClusterName::new(set.cluster)
                .map_err(|e| err(format!("set_reported_addresses.cluster: {e}")))?,
            addresses: decode_ips(set.addresses)
                .map_err(|e| err(format!("set_reported_addresses.{e}")))?,
        },
        Kind::SetHostnameServing(set) => Action::SetHostnameServing {
            cluster: ClusterName::new(set.cluster)
                .map_err(|e| err(format!("set_hostname_serving.cluster: {e}")))?,
            fqdn: Fqdn::new(&set.fqdn)
                .map_err(|e| err(format!("set_hostname_serving.fqdn: {e}")))?,
            serving: set.serving,
            reason: set.reason,
        },
        Kind::SetSharedStatus(set) => Action::SetSharedStatus {
            cluster: ClusterName::new(set.cluster)
                .map_err(|e| err(format!("set_shared_status.cluster: {e}")))?,
            changed: set
                .changed
                .ok_or_else(
                    || err("set_shared_status.changed: missing required field".to_string()),
                )?
                .try_into()
                .map_err(|e: ConvertError| {
                    err(e
                        .in_field("changed")
                        .in_field("set_shared_status")
                        .to_string())
                })?,
            removed: set
                .removed
                .into_iter()
                .enumerate()
                .map(|(i, key)| {
                    ObjectKey::try_from(key).map_err(|e: ConvertError| {
                        err(e
                            .at_index(i)
                            .in_field("removed")
                            .in_field("set_shared_status")
                            .to_string())
                    })
                })
                .collect::<Result<_, _>>()?,
        },
        Kind::SetDrained(set) => Action::SetDrained {
            cluster: ClusterName::new(set.cluster)
                .map_err(|e| err(format!("set_drained.cluster: {e}")))?,
            drained: set.drained,
        },
        Kind::PutHostname(policy) => Action::PutHostname(
            policy
                .try_into()
                .map_err(|e: ConvertError| err(e.in_field("put_hostname").to_string()))?,
        ),
        Kind::DeleteHostname(fqdn) => Action::DeleteHostname(
            Fqdn::new(&fqdn).map_err(|e| err(format!("delete_hostname: {e}")))?,
        ),
        Kind::SetPinned(set) => Action::SetPinned {
            fqdn: Fqdn::new(&set.fqdn).map_err(|e| err(format!("set_pinned.fqdn: {e}")))?,
            cluster: if set.cluster.is_empty() {
                None
            } else {
                Some(
                    ClusterName::new(set.cluster)
                        .map_err(|e| err(format!("set_pinned.cluster: {e}")))?,
                )
            },
        },
        Kind::PutRoute(route) => Action::PutRoute(Box::new(
            route
                .try_into()
                .map_err(|e: ConvertError| err(e.in_field("put_route").to_string()))?,
        )),
        Kind::DeleteRoute(key) => Action::DeleteRoute(
            ObjectKey::try_from(key)
                .map_err(|e: ConvertError| err(e.in_field("delete_route").to_string()))?,
        ),
        Kind::PutCertificate(cert) => Action::PutCertificate(Box::new(
            cert.try_into()
                .map_err(|e: ConvertError| err(e.in_field("put_certificate").to_string()))?,
        )),
        Kind::DeleteCertificate(key) => Action::DeleteCertificate(
            ObjectKey::try_from(key)
                .map_err(|e: ConvertError| err(e.in_field("delete_certificate").to_string()))?,
        ),
        Kind::PutZoneKey(key) => Action::PutZoneKey {
            zone: Fqdn::new(&key.zone).map_err(|e| err(format!("put_zone_key.zone: {e}")))?,
            pkcs8: key.pkcs8,
        },
        Kind::PutRecordSet(set) => {
            let (name, rtype, set) =
                decode_record_set(set).map_err(|e| err(format!("put_record_set.{e}")))?;
            Action::PutRecordSet {
                name,
                rtype,
                ttl: set.ttl,
                values: set.values,
            }
        }
        Kind::DeleteRecordSet(key) => Action::DeleteRecordSet {
            name: Fqdn::new(&key.name).map_err(|e| err(format!("delete_record_set.name: {e}")))?,
            rtype: key.r#type,
        },
    };
    Ok(Command {
        actor: message.actor,
        unix_ms: message.unix_ms,
        action,
    })
}

fn decode_ips(addresses: Vec<String>) -> Result<Vec<IpAddr>, String> {
    addresses
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse()
                .map_err(|e| format!("addresses[{i}]: invalid IP address {a:?}: {e}"))
        })
        .collect()
}

fn encode_record_set(name: &Fqdn, rtype: &str, ttl: u32, values: &[RecordData]) -> pb::RecordSet {
    use pb::record_value::Kind;
    pb::RecordSet {
        name: name.to_string(),
        r#type: rtype.to_string(),
        ttl,
        values: values
            .iter()
            .map(|value| pb::RecordValue {
                kind: Some(match value {
                    RecordData::A(ip) => Kind::A(ip.to_string()),
                    RecordData::Aaaa(ip) => Kind::Aaaa(ip.to_string()),
                    RecordData::Cname(target) => Kind::Cname(target.to_string()),
                    RecordData::Txt(strings) => Kind::Txt(pb::TxtStrings {
                        strings: strings.clone(),
                    }),
                    RecordData::Mx {
                        preference,
                        exchange,
                    } => Kind::Mx(pb::MxValue {
                        preference: (*preference).into(),
                        exchange: exchange.to_string(),
                    }),
                }),
            })
            .collect(),
    }
}

/// Decodes a record set; errors start with the field path.
fn decode_record_set(set: pb::RecordSet) -> Result<(Fqdn, String, RecordSet), String> {
    use pb::record_value::Kind;
    let name = Fqdn::new(&set.name).map_err(|e| format!("name: {e}"))?;
    let mut values = Vec::with_capacity(set.values.len());
    for (i, value) in set.values.into_iter().enumerate() {
        let bad = |why: String| format!("values[{i}]: {why}");
        let data = match value.kind {
            Some(Kind::A(ip)) => {
                RecordData::A(ip.parse().map_err(|e| bad(format!("{ip:?}: {e}")))?)
            }
            Some(Kind::Aaaa(ip)) => {
                RecordData::Aaaa(ip.parse().map_err(|e| bad(format!("{ip:?}: {e}")))?)
            }
            Some(Kind::Cname(target)) => {
                RecordData::Cname(Fqdn::new(&target).map_err(|e| bad(e.to_string()))?)
            }
            Some(Kind::Txt(txt)) => RecordData::Txt(txt.strings),
            Some(Kind::Mx(mx)) => RecordData::Mx {
                preference: u16::try_from(mx.preference)
                    .map_err(|_| bad(format!("preference {} is not a u16", mx.preference)))?,
                exchange: Fqdn::new(&mx.exchange).map_err(|e| bad(e.to_string()))?,
            },
            None => return Err(bad("unknown or missing record kind".to_string())),
        };
        values.push(data);
    }
    Ok((
        name,
        set.r#type,
        RecordSet {
            ttl: set.ttl,
            values,
        },
    ))
}

// === outcomes ===

/// Encodes the outcome of the command applied at `index` for the proposer.
pub fn encode_outcome(index: u64, outcome: &Outcome) -> Vec<u8> {
    use pb::store_outcome::Code;
    let (code, field, message) = match outcome {
        Outcome::Applied => (Code::Applied, String::new(), String::new()),
        Outcome::Unchanged => (Code::Unchanged, String::new(), String::new()),
        Outcome::Rejected(rejection) => (
            match rejection.kind {
                RejectKind::NotFound => Code::NotFound,
                RejectKind::Invalid => Code::Invalid,
                RejectKind::Conflict => Code::Conflict,
            },
            rejection.field.clone().unwrap_or_default(),
            rejection.message.clone(),
        ),
    };
    pb::StoreOutcome {
        code: code.into(),
        field,
        message,
        index,
    }
    .encode_to_vec()
}

/// Decodes an outcome returned by a proposal, with the index it was applied at.
pub fn decode_outcome(bytes: &[u8]) -> Result<(Outcome, u64), DecodeError> {
    use pb::store_outcome::Code;
    let err = |why: String| DecodeError {
        what: "outcome",
        why,
    };
    let message = pb::StoreOutcome::decode(bytes).map_err(|e| err(e.to_string()))?;
    let code = Code::try_from(message.code)
        .map_err(|_| err(format!("code: unknown value {}", message.code)))?;
    let field = (!message.field.is_empty()).then_some(message.field);
    let rejected = |kind| {
        Outcome::Rejected(Rejection {
            kind,
            field: field.clone(),
            message: message.message.clone(),
        })
    };
    let outcome = match code {
        Code::Applied => Outcome::Applied,
        Code::Unchanged => Outcome::Unchanged,
        Code::NotFound => rejected(RejectKind::NotFound),
        Code::Invalid => rejected(RejectKind::Invalid),
        Code::Conflict => rejected(RejectKind::Conflict),
    };
    Ok((outcome, message.index))
}

// === snapshots ===

/// Encodes the whole state for a Raft snapshot.
pub fn encode_snapshot(state: &State) -> Vec<u8> {
    pb::StoreSnapshot {
        format_version: SNAPSHOT_FORMAT_VERSION,
        clusters: state
            .clusters
            .values()
            .map(|record| pb::ClusterRecord {
                cluster: Some((&record.cluster).into()),
                health: Some((&record.health).into()),
                reported_addresses: record
                    .reported_addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                hostnames: record
                    .hostnames
                    .iter()
                    .map(|(fqdn, h)| pb::HostnameServing {
                        fqdn: fqdn.to_string(),
                        serving: h.serving,
                        reason: h.reason.clone(),
                        since_unix_ms: h.since_unix_ms,
                    })
                    .collect(),
                shared: record.shared.as_ref().map(|r| pb::SharedObjectsRecord {
                    shared_version: r.shared_version,
                    routes: r
                        .routes
                        .iter()
                        .map(|(route, entry)| pb::RouteStatusEntry {
                            status: Some(pb::SharedRouteStatus {
                                route: Some(route.into()),
                                parents: entry.parents.iter().map(Into::into).collect(),
                            }),
                            since_unix_ms: entry.since_unix_ms,
                        })
                        .collect(),
                    certificates: r.certificates.iter().map(Into::into).collect(),
                    rejected: r.rejected.iter().map(Into::into).collect(),
                }),
            })
            .collect(),
        hostnames: state.hostnames.values().map(Into::into).collect(),
        routes: state.routes.values().map(Into::into).collect(),
        zone_keys: state
            .zone_keys
            .iter()
            .map(|(zone, key)| pb::ZoneKey {
                zone: zone.to_string(),
                pkcs8: key.pkcs8.clone(),
                created_unix_ms: key.created_unix_ms,
            })
            .collect(),
        audit: state
            .audit
            .iter()
            .map(|entry| pb::AuditEntry {
                index: entry.index,
                unix_ms: entry.unix_ms,
                actor: entry.actor.clone(),
                action: entry.action.clone(),
                result: entry.result.clone(),
            })
            .collect(),
        shared_version: state.shared_version,
        dns_version: state.dns_version,
        records: state
            .records
            .iter()
            .map(|((name, rtype), set)| encode_record_set(name, rtype, set.ttl, &set.values))
            .collect(),
        certificates: state.certificates.values().map(Into::into).collect(),
        route_versions: state
            .routes
            .keys()
            .map(|key| state.route_versions.get(key).copied().unwrap_or(0))
            .collect(),
    }
    .encode_to_vec()
}

/// Decodes a snapshot written by [`encode_snapshot`] (this or an older format version).
pub fn decode_snapshot(bytes: &[u8]) -> Result<State, DecodeError> {
    let err = |why: String| DecodeError {
        what: "snapshot",
        why,
    };
    let message = pb::StoreSnapshot::decode(bytes).map_err(|e| err(e.to_string()))?;
    if message.format_version > SNAPSHOT_FORMAT_VERSION {
        return Err(err(format!(
            "format_version {} is newer than this build reads ({SNAPSHOT_FORMAT_VERSION}); upgrade this hub",
            message.format_version
        )));
    }
    let mut clusters = BTreeMap::new();
    for (i, record) in message.clusters.into_iter().enumerate() {
        let cluster: meridian_proto::model::Cluster = record
            .cluster
            .ok_or_else(|| err(format!("clusters[{i}].cluster: missing required field")))?
            .try_into()
            .map_err(|e: ConvertError| {
                err(e
                    .in_field("cluster")
                    .at_index(i)
                    .in_field("clusters")
                    .to_string())
            })?;
        let health = match record.health {
            Some(health) => health.try_into().map_err(|e: ConvertError| {
                err(e
                    .in_field("health")
                    .at_index(i)
                    .in_field("clusters")
                    .to_string())
            })?,
            None => Default::default(),
        };
        let reported_addresses =
            decode_ips(record.reported_addresses).map_err(|e| err(format!("clusters[{i}].{e}")))?;
        let mut hostnames = BTreeMap::new();
        for (j, serving) in record.hostnames.into_iter().enumerate() {
            let fqdn = Fqdn::new(&serving.fqdn)
                .map_err(|e| err(format!("clusters[{i}].hostnames[{j}].fqdn: {e}")))?;
            hostnames.insert(
                fqdn,
                HostnameServing {
                    serving: serving.serving,
                    reason: serving.reason,
                    since_unix_ms: serving.since_unix_ms,
                },
            );
        }
        let shared = match record.shared {
            Some(shared) => {
                let mut decoded = SharedObjectsRecord {
                    shared_version: shared.shared_version,
                    routes: BTreeMap::new(),
                    certificates: Vec::new(),
                    rejected: Vec::new(),
                };
                for (j, entry) in shared.routes.into_iter().enumerate() {
                    let status: SharedRouteStatus = entry
                        .status
                        .ok_or_else(|| {
                            err(format!(
                                "clusters[{i}].shared.routes[{j}].status: missing required field"
                            ))
                        })?
                        .try_into()
                        .map_err(|e: ConvertError| {
                            err(format!("clusters[{i}].shared.routes[{j}].status.{e}"))
                        })?;
                    decoded.routes.insert(
                        status.route,
                        RouteStatusEntry {
                            parents: status.parents,
                            since_unix_ms: entry.since_unix_ms,
                        },
                    );
                }
                for (j, usage) in shared.certificates.into_iter().enumerate() {
                    decoded
                        .certificates
                        .push(usage.try_into().map_err(|e: ConvertError| {
                            err(format!("clusters[{i}].shared.certificates[{j}].{e}"))
                        })?);
                }
                for (j, rejection) in shared.rejected.into_iter().enumerate() {
                    decoded
                        .rejected
                        .push(rejection.try_into().map_err(|e: ConvertError| {
                            err(format!("clusters[{i}].shared.rejected[{j}].{e}"))
                        })?);
                }
                Some(decoded)
            }
            None => None,
        };
        clusters.insert(
            cluster.name.clone(),
            ClusterRecord {
                cluster,
                health,
                reported_addresses,
                hostnames,
                shared,
            },
        );
    }
    let mut hostnames = BTreeMap::new();
    for (i, policy) in message.hostnames.into_iter().enumerate() {
        let policy: meridian_proto::model::HostnamePolicy = policy
            .try_into()
            .map_err(|e: ConvertError| err(e.at_index(i).in_field("hostnames").to_string()))?;
        hostnames.insert(policy.fqdn.clone(), policy);
    }
    let mut routes = BTreeMap::new();
    let mut route_versions = BTreeMap::new();
    let versions_known = message.route_versions.len() == message.routes.len();
    for (i, route) in message.routes.into_iter().enumerate() {
        let route: meridian_proto::model::route::HttpRoute = route
            .try_into()
            .map_err(|e: ConvertError| err(e.at_index(i).in_field("routes").to_string()))?;
        let version = if versions_known {
            message.route_versions[i]
        } else {
            0
        };
        route_versions.insert(route.key.clone(), version);
        routes.insert(route.key.clone(), route);
    }
    let mut zone_keys = BTreeMap::new();
    for (i, key) in message.zone_keys.into_iter().enumerate() {
        let zone = Fqdn::new(&key.zone).map_err(|e| err(format!("zone_keys[{i}].zone: {e}")))?;
        zone_keys.insert(
            zone,
            ZoneKey {
                pkcs8: key.pkcs8,
                created_unix_ms: key.created_unix_ms,
            },
        );
    }
    let mut records = BTreeMap::new();
    for (i, set) in message.records.into_iter().enumerate() {
        let (name, rtype, set) =
            decode_record_set(set).map_err(|e| err(format!("records[{i}].{e}")))?;
        records.insert((name, rtype), set);
    }
    let mut certificates = BTreeMap::new();
    for (i, cert) in message.certificates.into_iter().enumerate() {
        let cert: meridian_proto::model::gateway::TlsCertificate = cert
            .try_into()
            .map_err(|e: ConvertError| err(e.at_index(i).in_field("certificates").to_string()))?;
        certificates.insert(cert.key.clone(), cert);
    }
    let audit: VecDeque<AuditEntry> = message
        .audit
        .into_iter()
        .map(|entry| AuditEntry {
            index: entry.index,
            unix_ms: entry.unix_ms,
            actor: entry.actor,
            action: entry.action,
            result: entry.result,
        })
        .collect();
    Ok(State {
        clusters,
        hostnames,
        routes,
        route_versions,
        certificates,
        zone_keys,
        records,
        audit,
        shared_version: message.shared_version,
        dns_version: message.dns_version,
    })
}
