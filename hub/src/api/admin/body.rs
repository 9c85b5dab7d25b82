//! The admin API's JSON shapes for clusters, hostname policies, status, members and audit, and
//! their validation into model values.
//!
//! **Boundary:** these serde types are the admin API's wire format; the model types stay
//! free of serde. Every validation error names the JSON field (`targets[1].weight`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use meridian_proto::model::{
    AllUnhealthy, Cluster, ClusterName, Fqdn, HostnamePolicy, HostnameTarget, RecordData, Region,
    Routing,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::raft::{PeerAddr, PeerAddrError};
use crate::store::{AuditEntry, ClusterRecord, RecordSet, verdict_name};

/// Default TTL of a hostname's answers, in seconds.
pub const DEFAULT_TTL: u32 = 30;

/// The most addresses one cluster may list. Every address of a cluster can end up in one DNS
/// answer (with `max_answers` 0, or failing open), signed as one RRset; 64 AAAA records stay
/// far below what fits one message with its signature, and real gateways have a handful.
pub const MAX_CLUSTER_ADDRESSES: usize = 64;

/// The most bytes one static record set may take in DNS wire format, owner names written out
/// in full (as they are signed, RFC 4034 §6.2). A set is served as one answer and signed as a
/// whole: 16 KiB leaves room for the rest of a 64 KiB TCP message and the RRSIG, where a
/// larger set would be cut short and could not be signed.
pub const MAX_RECORD_SET_WIRE_BYTES: usize = 16 * 1024;

/// `PUT /v1/clusters/{name}` body; also the `cluster` part of `GET` answers.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterBody {
    /// Must equal the path's name when present.
    #[serde(default)]
    pub name: Option<String>,
    /// The region DNS places the cluster in.
    pub region: String,
    /// Addresses DNS answers with; empty means the addresses the agent reports.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Drained clusters get no new DNS answers.
    #[serde(default)]
    pub drained: bool,
    /// Read-only (accepted and ignored so a GET can be edited and PUT back).
    #[serde(default)]
    pub health: Option<serde_json::Value>,
    /// Read-only, like `health`.
    #[serde(default)]
    pub reported_addresses: Option<serde_json::Value>,
}

/// A cluster as the admin API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterJson {
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Configured DNS addresses.
    pub addresses: Vec<String>,
    /// Operator drain.
    pub drained: bool,
    /// The committed verdict.
    pub health: HealthJson,
    /// Gateway addresses the agent reported.
    pub reported_addresses: Vec<String>,
    /// Per hostname policy targeting the cluster (once the leader judged it): whether the
    /// cluster can serve it.
    #[serde(default)]
    pub hostnames: BTreeMap<String, HostnameServingJson>,
    /// How the cluster stands with the shared routes: `{"accepted": N, "total": M, "others":
    /// [{"route", "state", "reason"}]}` (see `GET /v1/routes`); on reads only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<serde_json::Value>,
}

/// Whether a cluster can serve one hostname (its backends behind the hostname's routes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostnameServingJson {
    /// At least one backend endpoint behind the hostname's routes is ready.
    pub serving: bool,
    /// Why.
    pub reason: String,
    /// When `serving` last changed (Unix milliseconds).
    pub since_unix_ms: u64,
}

/// A committed health verdict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HealthJson {
    /// `unknown`, `healthy` or `unhealthy`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// When it last changed (Unix milliseconds; 0 for never).
    pub since_unix_ms: u64,
}

/// `PUT /v1/hostnames/{fqdn}` body, and the `GET` answer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostnameJson {
    /// Must equal the path's name when present.
    #[serde(default)]
    pub fqdn: Option<String>,
    /// Answer TTL in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Clusters serving the hostname.
    pub targets: Vec<TargetJson>,
    /// How answers are chosen.
    #[serde(default)]
    pub routing: RoutingJson,
}

/// One target of a hostname.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetJson {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight in its region (0: only when nothing else is healthy).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// A hostname's routing knobs; every field has the model's default.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingJson {
    /// Prefer the client's region.
    #[serde(default = "default_true")]
    pub geo: bool,
    /// Regions in failover order.
    #[serde(default)]
    pub region_order: Vec<String>,
    /// Addresses per answer.
    #[serde(default = "default_max_answers")]
    pub max_answers: u32,
    /// `fail-open` or `fail-closed`.
    #[serde(default = "default_all_unhealthy")]
    pub when_all_unhealthy: String,
    /// Panic threshold in percent (0 disables).
    #[serde(default)]
    pub panic_threshold_percent: u32,
    /// Pinned cluster, or null.
    #[serde(default)]
    pub pinned: Option<String>,
}

/// `POST /v1/hostnames/{fqdn}/pin` body.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    /// The cluster to pin to.
    pub cluster: String,
}

/// `POST /v1/members` body.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    /// The new node's id.
    pub id: u64,
    /// Its gRPC address (`host:port`).
    pub addr: String,
}

/// One audit entry as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditJson {
    /// Log index.
    pub index: u64,
    /// Unix milliseconds (proposer's clock).
    pub unix_ms: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// `applied` or `rejected: ...`.
    pub result: String,
}

/// `PUT /v1/records/{name}/{type}` body, and the `GET` answer.
///
/// Values in presentation form: `A` and `AAAA` an address, `CNAME` a name, `MX`
/// `"<preference> <exchange>"`, `TXT` a string (split into 255-byte strings) or an array of
/// strings (one record of several strings).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordSetJson {
    /// Must equal the path's name when present.
    #[serde(default)]
    pub name: Option<String>,
    /// Must equal the path's type when present.
    #[serde(default, rename = "type")]
    pub rtype: Option<String>,
    /// TTL in seconds.
    #[serde(default = "default_record_ttl")]
    pub ttl: u32,
    /// The records.
    pub values: Vec<serde_json::Value>,
}

/// Default TTL of static records, in seconds.
pub const DEFAULT_RECORD_TTL: u32 = 300;

fn default_record_ttl() -> u32 {
    DEFAULT_RECORD_TTL
}

fn default_ttl() -> u32 {
    DEFAULT_TTL
}
fn default_weight() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_max_answers() -> u32 {
    1
}
fn default_all_unhealthy() -> String {
    "fail-open".to_string()
}

impl Default for RoutingJson {
    fn default() -> Self {
        (&Routing::default()).into()
    }
}

/// Parses a JSON body, naming the field of any error (`routing.max_answers: invalid type`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_position(&inner.to_string());
        if path.is_empty() || path == "." {
            ApiError::bad_request(None, message)
        } else {
            ApiError::bad_request(Some(path), message)
        }
    })
}

/// serde_json appends ` at line 1 column 42`; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

// === clusters ===

impl ClusterBody {
    /// Validates the body for the cluster at path `name`.
    pub fn into_model(self, name: &ClusterName) -> Result<Cluster, ApiError> {
        if let Some(body_name) = &self.name
            && body_name != name.as_str()
        {
            return Err(ApiError::bad_request(
                Some("name".into()),
                format!("{body_name:?} does not match the path's cluster {name}"),
            ));
        }
        let region = Region::new(&self.region)
            .map_err(|e| ApiError::bad_request(Some("region".into()), e.to_string()))?;
        if self.addresses.len() > MAX_CLUSTER_ADDRESSES {
            return Err(ApiError::bad_request(
                Some("addresses".into()),
                format!(
                    "{} addresses listed, at most {MAX_CLUSTER_ADDRESSES} are allowed (they are \
                     served as one DNS answer)",
                    self.addresses.len()
                ),
            ));
        }
        let mut addresses: Vec<IpAddr> = Vec::new();
        for (i, value) in self.addresses.iter().enumerate() {
            let ip: IpAddr = value.parse().map_err(|_| {
                ApiError::bad_request(
                    Some(format!("addresses[{i}]")),
                    format!("{value:?} is not an IP address"),
                )
            })?;
            if let Err(why) = crate::dns::answerable(ip) {
                return Err(ApiError::bad_request(
                    Some(format!("addresses[{i}]")),
                    format!("{ip} {why}"),
                ));
            }
            if addresses.contains(&ip) {
                return Err(ApiError::bad_request(
                    Some(format!("addresses[{i}]")),
                    format!("{ip} is listed more than once"),
                ));
            }
            addresses.push(ip);
        }
        Ok(Cluster {
            name: name.clone(),
            region,
            addresses,
            drained: self.drained,
        })
    }
}

impl From<&ClusterRecord> for ClusterJson {
    fn from(record: &ClusterRecord) -> Self {
        let cluster = &record.cluster;
        Self {
            name: cluster.name.to_string(),
            region: cluster.region.to_string(),
            addresses: cluster.addresses.iter().map(ToString::to_string).collect(),
            drained: cluster.drained,
            health: HealthJson {
                verdict: verdict_name(record.health.verdict).to_string(),
                reason: record.health.reason.clone(),
                since_unix_ms: record.health.since_unix_ms,
            },
            reported_addresses: record
                .reported_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            hostnames: record
                .hostnames
                .iter()
                .map(|(fqdn, h)| {
                    let json = HostnameServingJson {
                        serving: h.serving,
                        reason: h.reason.clone(),
                        since_unix_ms: h.since_unix_ms,
                    };
                    (fqdn.to_string(), json)
                })
                .collect(),
            routes: None,
        }
    }
}

// === hostnames ===

impl HostnameJson {
    /// Validates the body for the hostname at path `fqdn` (the cross-checks against existing
    /// clusters happen in `store::check_hostname`).
    pub fn into_model(self, fqdn: &Fqdn) -> Result<HostnamePolicy, ApiError> {
        let bad = |field: String, message: String| ApiError::bad_request(Some(field), message);
        if let Some(body_fqdn) = &self.fqdn {
            let parsed = Fqdn::new(body_fqdn).map_err(|e| bad("fqdn".into(), e.to_string()))?;
            if &parsed != fqdn {
                return Err(bad(
                    "fqdn".into(),
                    format!("{body_fqdn:?} does not match the path's hostname {fqdn}"),
                ));
            }
        }
        let mut targets = Vec::new();
        for (i, target) in self.targets.into_iter().enumerate() {
            let cluster = ClusterName::new(target.cluster)
                .map_err(|e| bad(format!("targets[{i}].cluster"), e.to_string()))?;
            targets.push(HostnameTarget {
                cluster,
                weight: target.weight,
            });
        }
        let routing = self.routing;
        let mut region_order = Vec::new();
        for (i, region) in routing.region_order.into_iter().enumerate() {
            region_order.push(
                Region::new(region)
                    .map_err(|e| bad(format!("routing.region_order[{i}]"), e.to_string()))?,
            );
        }
        let when_all_unhealthy = match routing.when_all_unhealthy.as_str() {
            "fail-open" => AllUnhealthy::FailOpen,
            "fail-closed" => AllUnhealthy::FailClosed,
            other => {
                return Err(bad(
                    "routing.when_all_unhealthy".into(),
                    format!("{other:?} is neither \"fail-open\" nor \"fail-closed\""),
                ));
            }
        };
        let panic_threshold_percent = u8::try_from(routing.panic_threshold_percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| {
                bad(
                    "routing.panic_threshold_percent".into(),
                    format!("{} is not in 0..=100", routing.panic_threshold_percent),
                )
            })?;
        let pinned = routing
            .pinned
            .map(ClusterName::new)
            .transpose()
            .map_err(|e| bad("routing.pinned".into(), e.to_string()))?;
        Ok(HostnamePolicy {
            fqdn: fqdn.clone(),
            ttl: self.ttl,
            targets,
            routing: Routing {
                geo: routing.geo,
                region_order,
                max_answers: routing.max_answers,
                when_all_unhealthy,
                panic_threshold_percent,
                pinned,
            },
        })
    }
}

impl From<&HostnamePolicy> for HostnameJson {
    fn from(policy: &HostnamePolicy) -> Self {
        Self {
            fqdn: Some(policy.fqdn.to_string()),
            ttl: policy.ttl,
            targets: policy
                .targets
                .iter()
                .map(|t| TargetJson {
                    cluster: t.cluster.to_string(),
                    weight: t.weight,
                })
                .collect(),
            routing: (&policy.routing).into(),
        }
    }
}

impl From<&Routing> for RoutingJson {
    fn from(routing: &Routing) -> Self {
        Self {
            geo: routing.geo,
            region_order: routing
                .region_order
                .iter()
                .map(ToString::to_string)
                .collect(),
            max_answers: routing.max_answers,
            when_all_unhealthy: match routing.when_all_unhealthy {
                AllUnhealthy::FailOpen => "fail-open",
                AllUnhealthy::FailClosed => "fail-closed",
            }
            .to_string(),
            panic_threshold_percent: routing.panic_threshold_percent.into(),
            pinned: routing.pinned.as_ref().map(ToString::to_string),
        }
    }
}

// === records ===

impl RecordSetJson {
    /// Validates the body for the record set at path `name`/`rtype` (the type already upper
    /// case and known).
    pub fn into_model(self, name: &Fqdn, rtype: &str) -> Result<RecordSet, ApiError> {
        let bad = |field: String, message: String| ApiError::bad_request(Some(field), message);
        if let Some(body_name) = &self.name {
            let parsed = Fqdn::new(body_name).map_err(|e| bad("name".into(), e.to_string()))?;
            if &parsed != name {
                return Err(bad(
                    "name".into(),
                    format!("{body_name:?} does not match the path's name {name}"),
                ));
            }
        }
        if let Some(body_type) = &self.rtype
            && !body_type.eq_ignore_ascii_case(rtype)
        {
            return Err(bad(
                "type".into(),
                format!("{body_type:?} does not match the path's type {rtype}"),
            ));
        }
        let mut values = Vec::with_capacity(self.values.len());
        for (i, value) in self.values.iter().enumerate() {
            let field = format!("values[{i}]");
            values.push(record_value(rtype, value).map_err(|why| bad(field, why))?);
        }
        let size: usize = values.iter().map(|v| wire_size(name, v)).sum();
        if size > MAX_RECORD_SET_WIRE_BYTES {
            return Err(bad(
                "values".into(),
                format!(
                    "the {} records take {size} bytes in DNS wire format, at most \
                     {MAX_RECORD_SET_WIRE_BYTES} fit one signed answer",
                    values.len()
                ),
            ));
        }
        Ok(RecordSet {
            ttl: self.ttl,
            values,
        })
    }

    /// The JSON form of a stored set.
    pub fn from_model(name: &Fqdn, rtype: &str, set: &RecordSet) -> Self {
        Self {
            name: Some(name.to_string()),
            rtype: Some(rtype.to_string()),
            ttl: set.ttl,
            values: set.values.iter().map(record_json).collect(),
        }
    }
}

/// The size of one record at `owner` in DNS wire format, without name compression.
fn wire_size(owner: &Fqdn, data: &RecordData) -> usize {
    // A name of labels "a.b" is written as 1 a 1 b 0: its text length plus two.
    let name = |fqdn: &Fqdn| fqdn.as_str().len() + 2;
    let rdata = match data {
        RecordData::A(_) => 4,
        RecordData::Aaaa(_) => 16,
        RecordData::Cname(target) => name(target),
        RecordData::Txt(strings) => strings.iter().map(|s| 1 + s.len()).sum(),
        RecordData::Mx { exchange, .. } => 2 + name(exchange),
    };
    // Owner, then TYPE, CLASS, TTL and RDLENGTH.
    name(owner) + 10 + rdata
}

fn record_value(rtype: &str, value: &serde_json::Value) -> Result<RecordData, String> {
    let text = || {
        value
            .as_str()
            .ok_or_else(|| format!("must be a string, not {value}"))
    };
    match rtype {
        "A" => text()?
            .parse()
            .map(RecordData::A)
            .map_err(|_| format!("{value} is not an IPv4 address")),
        "AAAA" => text()?
            .parse()
            .map(RecordData::Aaaa)
            .map_err(|_| format!("{value} is not an IPv6 address")),
        "CNAME" => Fqdn::new(text()?)
            .map(RecordData::Cname)
            .map_err(|e| e.to_string()),
        "MX" => {
            let text = text()?;
            let (preference, exchange) = text
                .split_once(' ')
                .ok_or_else(|| format!("{text:?} is not \"<preference> <exchange>\""))?;
            if exchange.trim().parse::<IpAddr>().is_ok() {
                // RFC 5321 §5.1: the exchange is a host name, looked up for its addresses.
                return Err(format!(
                    "exchange {:?} is an address; an MX names a host with A/AAAA records",
                    exchange.trim()
                ));
            }
            Ok(RecordData::Mx {
                preference: preference
                    .parse()
                    .map_err(|_| format!("preference {preference:?} is not 0..=65535"))?,
                exchange: Fqdn::new(exchange.trim()).map_err(|e| e.to_string())?,
            })
        }
        "TXT" => match value {
            serde_json::Value::String(text) => Ok(RecordData::Txt(split_txt(text))),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("TXT strings must be strings, not {item}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(RecordData::Txt),
            other => Err(format!(
                "must be a string or an array of strings, not {other}"
            )),
        },
        other => Err(format!("records of type {other} are not served")),
    }
}

/// Splits text into strings of at most 255 bytes at character boundaries (RFC 7208 §3.3
/// style: a long SPF or DKIM value spans several strings of one record).
fn split_txt(text: &str) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    let mut strings = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > 255 {
            strings.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        strings.push(current);
    }
    strings
}

fn record_json(data: &RecordData) -> serde_json::Value {
    match data {
        RecordData::A(ip) => ip.to_string().into(),
        RecordData::Aaaa(ip) => ip.to_string().into(),
        RecordData::Cname(target) => target.to_string().into(),
        RecordData::Txt(strings) if strings.len() == 1 => strings[0].clone().into(),
        RecordData::Txt(strings) => strings.clone().into(),
        RecordData::Mx {
            preference,
            exchange,
        } => format!("{preference} {exchange}").into(),
    }
}

// === members, audit ===

impl MemberBody {
    /// Validates the body.
    pub fn into_parts(self) -> Result<(u64, PeerAddr), ApiError> {
        if self.id == 0 {
            return Err(ApiError::bad_request(
                Some("id".into()),
                "node id 0 is not allowed".into(),
            ));
        }
        let addr: PeerAddr = self.addr.parse().map_err(|e: PeerAddrError| {
            ApiError::bad_request(Some("addr".into()), e.to_string())
        })?;
        if addr.is_unreachable() {
            return Err(ApiError::bad_request(
                Some("addr".into()),
                format!("{addr} cannot be reached by other nodes"),
            ));
        }
        Ok((self.id, addr))
    }
}

impl From<&AuditEntry> for AuditJson {
    fn from(entry: &AuditEntry) -> Self {
        Self {
            index: entry.index,
            unix_ms: entry.unix_ms,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            result: entry.result.clone(),
        }
    }
}
