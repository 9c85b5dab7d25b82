//! [`HubConfig`]: the static configuration of one hub node (plain data, read from YAML).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dns::DnsConfig;
use crate::raft::{PeerAddr, RaftConfig};

/// One hub node's configuration.
///
/// Deserializes from YAML (see [`HubConfig::from_yaml`]); unknown fields are errors.
/// [`HubConfig::validate`] checks what types cannot and names the offending field.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// This node's Raft id: non-zero and unique among the hub nodes.
    pub node_id: u64,
    /// Directory for the durable Raft log and snapshots (created if missing).
    pub data_dir: PathBuf,
    /// Where the node's gRPC server listens: the agents' `Hub` service, the Raft peer service
    /// and the `HubPeer` service. Port 0 picks a free port (single-node tests).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// The gRPC address other hub nodes and agents reach this node on; defaults to the bound
    /// listen address (which is wrong when listening on 0.0.0.0: set it then).
    #[serde(default)]
    pub grpc_advertise: Option<PeerAddr>,
    /// Where the admin HTTP API listens. Port 0 picks a free port.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// The initial Raft members (node id → gRPC address), the same on every node of a new
    /// group. Empty means a single-node group of this node, unless `join` is set.
    #[serde(default)]
    pub members: BTreeMap<u64, PeerAddr>,
    /// Start without members and wait to be added to an existing group
    /// (`meridian ctl members add`).
    #[serde(default)]
    pub join: bool,
    /// Authoritative DNS.
    #[serde(default = "default_dns")]
    pub dns: DnsConfig,
    /// Health tracking of clusters.
    #[serde(default)]
    pub health: HealthConfig,
    /// Raft timing overrides.
    #[serde(default)]
    pub raft: RaftTuning,
    /// Mutual TLS for the gRPC server (agents, Raft peers, `HubPeer`) and for this node's
    /// connections to other hub nodes. `None`: plain text (development only).
    #[serde(default)]
    pub grpc_tls: Option<GrpcTlsConfig>,
    /// Allow gRPC without TLS on a non-loopback address (anyone who reaches it can send Raft
    /// messages and report as any cluster).
    #[serde(default)]
    pub grpc_insecure: bool,
    /// Who may use the admin API.
    #[serde(default)]
    pub admin_auth: AdminAuthConfig,
    /// HTTPS for the admin API (so bearer tokens never cross the network in the clear);
    /// `None`: plain HTTP.
    #[serde(default)]
    pub admin_tls: Option<AdminTlsConfig>,
}

/// The admin API's server certificate (PEM files, read at start).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Mutual TLS of a hub node's gRPC traffic (PEM files, read at start).
///
/// Every client must present a certificate issued by `ca`: agents one whose identity (a DNS
/// subject alternative name or the subject common name) is the name of the cluster they
/// register as, hub nodes one that carries `peer_identity`. Hub nodes verify each other's
/// server certificates against `peer_identity` too, so node certificates need no IP SANs.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    /// This node's certificate chain (leaf first), served to clients and presented to peers.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) every client and peer certificate must chain to.
    pub ca: PathBuf,
    /// The identity hub nodes' certificates carry. It must contain a dot, so that it can
    /// never be a cluster name (cluster names are single DNS labels) and an agent's
    /// certificate can never pass for a hub node's.
    #[serde(default = "default_peer_identity")]
    pub peer_identity: String,
}

/// Authentication of the admin API.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAuthConfig {
    /// A file of bearer tokens, one per line: `TOKEN`, or `NAME TOKEN` where NAME becomes the
    /// audit actor of that token's writes. `#` starts a comment. Without a file the admin API
    /// accepts every request, and may only listen on a loopback address (unless `insecure`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Allow an admin API without tokens on a non-loopback address.
    #[serde(default)]
    pub insecure: bool,
}

/// How agents' health reports become verdicts.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often agents report, in milliseconds.
    #[serde(default = "default_report_interval_ms")]
    pub report_interval_ms: u64,
    /// A cluster whose last report is older than this many intervals is unhealthy.
    #[serde(default = "default_missed_reports")]
    pub missed_reports: u32,
    /// Consecutive good reports before an unhealthy (or unknown) cluster becomes healthy.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive bad reports (no gateway ready) before a healthy cluster becomes unhealthy.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// How long a newly elected leader waits before declaring reports missed, in milliseconds
    /// (agents may still be reconnecting to it). Defaults to the missed-report timeout.
    #[serde(default)]
    pub leader_grace_ms: Option<u64>,
}

/// Raft timing; every field defaults to [`RaftConfig::new`]'s value.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTuning {
    /// Tick interval in milliseconds.
    #[serde(default)]
    pub tick_ms: Option<u64>,
    /// Ticks without a heartbeat before a follower campaigns.
    #[serde(default)]
    pub election_ticks: Option<usize>,
    /// Ticks between leader heartbeats.
    #[serde(default)]
    pub heartbeat_ticks: Option<usize>,
    /// Applied entries between snapshots.
    #[serde(default)]
    pub snapshot_threshold: Option<u64>,
    /// How long a write or linearizable read waits, in milliseconds.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// Source IP for connections to other hub nodes. Default: the `grpc_listen` IP when it is
    /// a specific address, else chosen by the OS.
    #[serde(default)]
    pub outbound_source_ip: Option<IpAddr>,
}

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not describe a `HubConfig`.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the YAML came from.
        origin: String,
        /// The parser's message (with the field and location).
        message: String,
    },
    /// A field has an unusable value.
    #[error("{field}: {why}")]
    Invalid {
        /// The field path (`health.rise`, `members.2`).
        field: String,
        /// What is wrong.
        why: String,
    },
}

/// The identity hub nodes' certificates carry by default.
pub const DEFAULT_PEER_IDENTITY: &str = "hub.meridian";

fn default_peer_identity() -> String {
    DEFAULT_PEER_IDENTITY.to_string()
}
fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7001))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4001))
}
fn default_report_interval_ms() -> u64 {
    1000
}
fn default_missed_reports() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    1
}

/// A DNS config with every default and no zones.
pub fn default_dns() -> DnsConfig {
    DnsConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 5353)),
        zones: Vec::new(),
        geo: Default::default(),
        udp_sockets: 0,
        tcp_timeout_ms: 10_000,
        rate_limit: Default::default(),
        ..DnsConfig::default()
    }
}

// === impl HubConfig ===

impl HubConfig {
    /// A single-node configuration with every default: the starting point of `meridian hub`'s
    /// flags and of tests.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            grpc_listen: default_grpc_listen(),
            grpc_advertise: None,
            admin_listen: default_admin_listen(),
            members: BTreeMap::new(),
            join: false,
            dns: default_dns(),
            health: HealthConfig::default(),
            raft: RaftTuning::default(),
            grpc_tls: None,
            grpc_insecure: false,
            admin_auth: AdminAuthConfig::default(),
            admin_tls: None,
        }
    }

    /// Parses YAML; `origin` names the source in errors (a file path).
    pub fn from_yaml(yaml: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_saphyr::from_str(yaml).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let yaml = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&yaml, &path.display().to_string())
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: String| ConfigError::Invalid {
            field: field.to_string(),
            why,
        };
        if self.node_id == 0 {
            return Err(invalid("node_id", "must not be 0".into()));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        if self.join && !self.members.is_empty() {
            return Err(invalid(
                "members",
                "must be empty when join is set: a joining node learns the members from the group"
                    .into(),
            ));
        }
        if !self.members.is_empty() && !self.members.contains_key(&self.node_id) {
            return Err(invalid(
                "members",
                format!("does not list this node (node_id {})", self.node_id),
            ));
        }
        if self.members.contains_key(&0) {
            return Err(invalid("members", "node id 0 is not allowed".into()));
        }
        if self.members.len() > 1 {
            for (id, addr) in &self.members {
                if addr.port() == 0 {
                    return Err(invalid(
                        &format!("members.{id}"),
                        format!("{addr}: port 0 cannot be reached by other nodes"),
                    ));
                }
            }
        }
        if let Some(advertise) = &self.grpc_advertise
            && advertise.is_unreachable()
        {
            return Err(invalid(
                "grpc_advertise",
                format!("{advertise}: must be a reachable address and port"),
            ));
        }
        let health = &self.health;
        if health.report_interval_ms == 0 {
            return Err(invalid(
                "health.report_interval_ms",
                "must be at least 1".into(),
            ));
        }
        if health.missed_reports == 0 {
            return Err(invalid(
                "health.missed_reports",
                "must be at least 1".into(),
            ));
        }
        if health.rise == 0 {
            return Err(invalid("health.rise", "must be at least 1".into()));
        }
        if health.fall == 0 {
            return Err(invalid("health.fall", "must be at least 1".into()));
        }
        if let Some(tls) = &self.grpc_tls {
            let identity = &tls.peer_identity;
            let label = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if !identity.contains('.') || !identity.split('.').all(label) {
                return Err(invalid(
                    "grpc_tls.peer_identity",
                    format!(
                        "{identity:?} must be a lower-case DNS name with at least one dot \
                         (cluster names have none, so no agent certificate can pass for a hub's)"
                    ),
                ));
            }
            if identity.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(invalid(
                    "grpc_tls.peer_identity",
                    format!("{identity:?} must be lower case"),
                ));
            }
        }
        self.check_admin_exposure(self.admin_listen)?;
        if self.raft.tick_ms == Some(0) {
            return Err(invalid("raft.tick_ms", "must be at least 1".into()));
        }
        if self.raft.snapshot_threshold == Some(0) {
            return Err(invalid(
                "raft.snapshot_threshold",
                "must be at least 1".into(),
            ));
        }
        if self.raft.request_timeout_ms == Some(0) {
            return Err(invalid(
                "raft.request_timeout_ms",
                "must be at least 1".into(),
            ));
        }
        if self.raft.heartbeat_ticks == Some(0) {
            return Err(invalid("raft.heartbeat_ticks", "must be at least 1".into()));
        }
        // Compare the effective values: either side may be left at its default.
        let effective = self.raft_config(self.grpc_listen.into());
        let (election, heartbeat) = (effective.election_ticks, effective.heartbeat_ticks);
        if election <= heartbeat {
            return Err(invalid(
                "raft.election_ticks",
                format!("{election} must be larger than raft.heartbeat_ticks ({heartbeat})"),
            ));
        }
        Ok(())
    }

    /// Refuses an admin API without tokens on a non-loopback address, unless
    /// `admin_auth.insecure` (also checked on the address actually bound).
    pub fn check_admin_exposure(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        let auth = &self.admin_auth;
        if auth.token_file.is_none() && !auth.insecure && !addr.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                field: "admin_listen".into(),
                why: format!(
                    "{addr} is not a loopback address and no admin_auth.token_file is set; \
                     the admin API can change everything, so give it tokens \
                     (--admin-token-file) or accept the risk with --insecure-admin"
                ),
            });
        }
        Ok(())
    }

    /// Refuses gRPC without TLS on a non-loopback address, unless `grpc_insecure` (also
    /// checked on the address actually bound): the gRPC port carries Raft and the agents'
    /// health reports, so without mutual TLS anyone who reaches it can fail a cluster over.
    pub fn check_grpc_exposure(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        if self.grpc_tls.is_none() && !self.grpc_insecure && !addr.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                field: "grpc_listen".into(),
                why: format!(
                    "{addr} is not a loopback address and gRPC has no TLS; it carries Raft and the agents' health reports, so anyone who reaches it could report as any cluster: turn on mutual TLS (--tls-cert, --tls-key, --tls-ca; deploy/hub/tls) or accept the risk with --insecure-grpc"
                ),
            });
        }
        Ok(())
    }

    /// The Raft configuration for this node, given its advertised gRPC address.
    pub fn raft_config(&self, advertise: PeerAddr) -> RaftConfig {
        let mut config =
            RaftConfig::new(self.node_id, self.data_dir.join("raft"), advertise.clone());
        config.initial_members = if self.join {
            BTreeMap::new()
        } else if self.members.is_empty() {
            BTreeMap::from([(self.node_id, advertise)])
        } else {
            self.members.clone()
        };
        let tuning = &self.raft;
        if let Some(ms) = tuning.tick_ms {
            config.tick_interval = Duration::from_millis(ms);
        }
        if let Some(ticks) = tuning.election_ticks {
            config.election_ticks = ticks;
        }
        if let Some(ticks) = tuning.heartbeat_ticks {
            config.heartbeat_ticks = ticks;
        }
        if let Some(threshold) = tuning.snapshot_threshold {
            config.snapshot_threshold = threshold;
        }
        if let Some(ms) = tuning.request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        // A node told to listen on one specific address of a multi-homed host talks to its peers
        // from it too (firewall rules and peers' logs then see one address per node). The
        // transport ignores it for peers it cannot reach from there (another address family,
        // or a loopback source towards a non-loopback peer).
        let listen_ip = self.grpc_listen.ip();
        config.outbound_source_ip = tuning
            .outbound_source_ip
            .or_else(|| (!listen_ip.is_unspecified()).then_some(listen_ip));
        config
    }
}

// === impl HealthConfig ===

impl HealthConfig {
    /// The report interval.
    pub fn report_interval(&self) -> Duration {
        Duration::from_millis(self.report_interval_ms)
    }

    /// How old the last report may be before the cluster counts as silent.
    pub fn miss_timeout(&self) -> Duration {
        self.report_interval() * self.missed_reports
    }

    /// How long a new leader waits before declaring reports missed.
    pub fn leader_grace(&self) -> Duration {
        self.leader_grace_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| self.miss_timeout())
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            report_interval_ms: default_report_interval_ms(),
            missed_reports: default_missed_reports(),
            rise: default_rise(),
            fall: default_fall(),
            leader_grace_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_yaml_gets_defaults() {
        let config = HubConfig::from_yaml("node_id: 1\ndata_dir: /tmp/hub-1\n", "test").unwrap();
        assert_eq!(config, HubConfig::new(1, "/tmp/hub-1"));
        assert_eq!(config.health.miss_timeout(), Duration::from_secs(3));
        let raft = config.raft_config("127.0.0.1:7001".parse().unwrap());
        assert_eq!(raft.initial_members.len(), 1);
        assert_eq!(raft.data_dir, PathBuf::from("/tmp/hub-1/raft"));
    }

    #[test]
    fn full_yaml_parses() {
        let yaml = r#"
node_id: 2
data_dir: /var/lib/meridian/hub-2
grpc_listen: 127.0.0.1:7002
admin_listen: 127.0.0.1:4002
members:
  1: 127.0.0.1:7001
  2: 127.0.0.1:7002
  3: 127.0.0.1:7003
dns:
  listen: 127.0.0.1:5302
  zones:
    - origin: demo.meridian.test
  geo:
    networks:
      203.0.113.0/24: us
health:
  report_interval_ms: 500
  rise: 3
raft:
  tick_ms: 20
"#;
        let config = HubConfig::from_yaml(yaml, "test").unwrap();
        assert_eq!(config.members.len(), 3);
        assert_eq!(config.dns.zones[0].origin, "demo.meridian.test");
        assert_eq!(config.health.miss_timeout(), Duration::from_millis(1500));
        assert_eq!(
            config.raft_config(config.members[&2].clone()).tick_interval,
            Duration::from_millis(20)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "node_id: 1\ndata_dir: /x\nhealth:\n  rise: 0\n",
                "health.rise",
            ),
            ("node_id: 0\ndata_dir: /x\n", "node_id"),
            (
                "node_id: 1\ndata_dir: /x\nmembers:\n  2: 127.0.0.1:1\n",
                "members",
            ),
            ("node_id: 1\ndata_dir: /x\ncolour: blue\n", "colour"),
            (
                "node_id: 1\ndata_dir: /x\nadmin_listen: nowhere\n",
                "nowhere",
            ),
            ("node_id: 1\ndata_dir: /x\nhealth:\n  rise: many\n", "rise"),
            (
                "node_id: 1\ndata_dir: /x\njoin: true\nmembers:\n  1: 127.0.0.1:1\n",
                "members",
            ),
        ];
        for (yaml, field) in cases {
            let err = HubConfig::from_yaml(yaml, "hub.yaml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{yaml:?}: {err} does not name {field}");
        }
    }
}
