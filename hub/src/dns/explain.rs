//! What a client would get for a query, and why: the client's region and how it was found,
//! the hostname's plan (tiers, candidates with health and weights, TTL), and the actual
//! response computed by the same request path the server uses.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::SystemTime;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use serde::Serialize;

use super::answer::Plan;
use super::config::DnsConfig;
use super::geo::{GeoMap, GeoSource};
use super::respond::{self, Limits};
use super::snapshot::{BuildConfig, SnapshotBuilder, ZoneSnapshot};
use super::{DnsError, DnsView};

/// What a client would get and why (for `GET /v1/dns/explain` and `meridian ctl dns explain`).
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The query name, lower case, absolute.
    pub name: String,
    /// The query type.
    pub qtype: String,
    /// The client address the decision used (an ECS address would be used the same way).
    pub client: IpAddr,
    /// The served zone containing the name, if any.
    pub zone: Option<String>,
    /// The response code (`NOERROR`, `NXDOMAIN`, `REFUSED`, ...).
    pub rcode: String,
    /// Answer records in presentation format. For weighted picks this is one sample; the plan
    /// shows every possibility.
    pub answers: Vec<String>,
    /// Authority records (the SOA for negative answers).
    pub authority: Vec<String>,
    /// The client's region, if geo placed it.
    pub client_region: Option<String>,
    /// How the region was found: `network`, `country`, `continent`, `coordinates`, `unknown`.
    pub geo_source: String,
    /// The ECS scope prefix a resolver would get with this answer (0 when the answer does not
    /// depend on the client's location).
    pub ecs_scope: u8,
    /// The hostname's traffic policy outcome, when the name has one.
    pub hostname: Option<HostnameExplanation>,
    /// The SOA serial of the snapshot explained.
    pub serial: u32,
    /// Data problems the snapshot has (records or hostnames it could not serve).
    pub problems: Vec<String>,
}

/// A hostname's plan for this client.
#[derive(Clone, Debug, Serialize)]
pub struct HostnameExplanation {
    /// The hostname.
    pub fqdn: String,
    /// Whether different regions get different answers.
    pub location_matters: bool,
    /// The plan: mode, tiers with members and weights, TTL, every candidate with its health.
    pub plan: Plan,
}

/// Explains the answer `client` would get for `name`/`qtype` under `config` and `view`.
///
/// Compiles a fresh snapshot (and opens the geo database), so it costs far more than a query;
/// a running server's [`DnsExplainer`](super::DnsExplainer) reuses its live snapshot instead.
pub fn explain(
    config: &DnsConfig,
    view: &DnsView,
    name: &str,
    qtype: &str,
    client: IpAddr,
) -> Result<Explanation, DnsError> {
    let checked = config.checked()?;
    let geo = std::sync::Arc::new(GeoMap::new(&checked.geo)?);
    let mut builder = SnapshotBuilder::new(
        BuildConfig {
            zones: checked.zones.clone(),
            coordinates: checked.geo.regions.clone(),
            unstable_ttl: config.unstable_ttl,
            stable_after_ms: config.stable_after_secs.saturating_mul(1000),
        },
        geo.clone(),
    );
    let snapshot = builder.build(view, SystemTime::now());
    let limits = Limits {
        max_udp_payload: config.max_udp_payload,
    };
    explain_snapshot(&snapshot, builder.geo(), limits, name, qtype, client)
}

/// Explains a query against a compiled snapshot.
pub(crate) fn explain_snapshot(
    snapshot: &ZoneSnapshot,
    geo: &GeoMap,
    limits: Limits,
    name: &str,
    qtype: &str,
    client: IpAddr,
) -> Result<Explanation, DnsError> {
    let rtype = RecordType::from_str(&qtype.to_ascii_uppercase())
        .map_err(|_| DnsError::Query(format!("unknown record type {qtype:?}")))?;
    let mut qname = Name::from_ascii(name)
        .map_err(|e| DnsError::Query(format!("invalid name {name:?}: {e}")))?;
    qname.set_fqdn(true);
    let mut message = Message::new(0, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(qname.clone(), rtype));
    let bytes = message
        .to_vec()
        .map_err(|e| DnsError::Query(format!("cannot encode the query: {e}")))?;
    let request = Request::from_bytes(bytes, SocketAddr::new(client, 53), Protocol::Udp)
        .map_err(|e| DnsError::Query(format!("cannot decode the query: {e}")))?;
    let mut counter = 0u64;
    // A fixed sequence: explanations are reproducible.
    let mut random = || {
        counter = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        counter
    };
    let reply = respond::respond(snapshot, geo, &request, client, limits, &mut random);

    let lower = LowerName::new(&qname);
    let located = geo.locate(client);
    let zone = snapshot
        .zone_for(&lower)
        .map(|i| snapshot.zones[i].origin.to_ascii());
    let hostname = snapshot
        .names
        .get(&lower)
        .and_then(|node| node.dynamic.as_ref())
        .map(|dynamic| {
            let unknown = dynamic.plans.len() - 1;
            let index = located
                .region
                .map(usize::from)
                .filter(|&id| id < unknown)
                .unwrap_or(unknown);
            HostnameExplanation {
                fqdn: dynamic.fqdn.to_string(),
                location_matters: dynamic.location_matters,
                plan: dynamic.plans[index].plan.clone(),
            }
        });
    let ecs_scope = match &hostname {
        Some(h) if h.location_matters => located.scope,
        _ => 0,
    };
    Ok(Explanation {
        name: qname.to_ascii().to_ascii_lowercase(),
        qtype: rtype.to_string(),
        client,
        zone,
        rcode: rcode_name(reply.rcode),
        answers: reply.answers.iter().map(|r| r.get().to_string()).collect(),
        authority: reply
            .authorities
            .iter()
            .map(|r| r.get().to_string())
            .collect(),
        client_region: located
            .region
            .and_then(|id| geo.regions().get(usize::from(id)))
            .map(|r| r.to_string()),
        geo_source: source_name(located.source).into(),
        ecs_scope,
        hostname,
        serial: snapshot.serial,
        problems: snapshot.problems.clone(),
    })
}

/// The mnemonic of a response code, as dig prints it.
fn rcode_name(rcode: ResponseCode) -> String {
    match u16::from(rcode) {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        other => format!("RCODE{other}"),
    }
}

fn source_name(source: GeoSource) -> &'static str {
    match source {
        GeoSource::Network => "network",
        GeoSource::Country => "country",
        GeoSource::Continent => "continent",
        GeoSource::Coordinates => "coordinates",
        GeoSource::Unknown => "unknown",
    }
}
