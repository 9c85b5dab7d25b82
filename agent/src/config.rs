//! `AgentConfig`: everything an agent needs to start, as plain data (no channels, no sockets).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meridian_proto::model::ClusterName;

/// Configuration of one agent. Built by `meridian agent` from flags, or by tests directly.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The cluster this agent serves. Required when `hubs` is not empty (it is what the agent
    /// registers as); in standalone mode it only labels logs and `/status`.
    pub cluster: ClusterName,
    /// Directory of Gateway API YAML/JSON (Gateway, HTTPRoute, GRPCRoute, TLSRoute,
    /// ReferenceGrant, Service, EndpointSlice, Secret), read recursively; hidden entries
    /// (names starting with `.`, such as a ConfigMap mount's `..data`) are skipped.
    pub config_dir: PathBuf,
    /// Watch the Kubernetes API instead of reading `config_dir` (which is then ignored).
    pub kubernetes: Option<KubernetesSource>,
    /// Hub gRPC URLs (`http://127.0.0.1:7001`). Empty means standalone: the agent serves the
    /// directory's config alone and talks to no hub.
    pub hubs: Vec<String>,
    /// Where the `ConfigDiscovery` gRPC service for gateways listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Where the admin HTTP server (`/healthz`, `/ready`, `/metrics`, `/status`) listens.
    pub admin: SocketAddr,
    /// Where the agent keeps the last good `SharedConfig` from the hub, so that it can serve
    /// the hub's routes after a restart while the hub is unreachable. `None` keeps nothing.
    pub state_dir: Option<PathBuf>,
    /// How often the file source looks for changes.
    pub poll_interval: Duration,
    /// Probing of gateways and backends.
    pub probes: ProbeConfig,
    /// Hub connection and reporting.
    pub hub: HubClientConfig,
    /// TLS of the `ConfigDiscovery` server; `None`: plain text (development only: gateways
    /// receive their listeners' private keys over this channel).
    pub gateway_tls: Option<GatewayServerTls>,
}

/// Where the Kubernetes source finds the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesSource {
    /// A kubeconfig file (its current context); `None` infers the config like kubectl:
    /// `KUBECONFIG` or `~/.kube/config`, else the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Watch namespaced kinds in this namespace only; `None` watches all namespaces.
    pub namespace: Option<String>,
}

/// TLS of the `ConfigDiscovery` server (PEM files, read when the agent starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayServerTls {
    /// The agent's server certificate chain, as gateways will verify it.
    pub cert: PathBuf,
    /// The private key of `cert`.
    pub key: PathBuf,
    /// CA certificate(s) a gateway's client certificate must chain to; with it, a gateway
    /// without such a certificate cannot subscribe (and so never sees a private key).
    pub client_ca: Option<PathBuf>,
}

/// Active health checking: intervals, timeouts and hysteresis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// How often each subscribed gateway's admin `/ready` is fetched.
    pub gateway_interval: Duration,
    /// How long one gateway probe may take before it counts as failed.
    pub gateway_timeout: Duration,
    /// The gateway probe interval while a state change is pending (after a failure from up,
    /// or a success from down), like HAProxy's `fastinter`: it confirms a change sooner
    /// without probing faster all the time.
    pub gateway_recheck_interval: Duration,
    /// How often each backend endpoint gets a TCP connect.
    pub backend_interval: Duration,
    /// How long one backend connect may take before it counts as failed.
    pub backend_timeout: Duration,
    /// The backend probe interval while a state change is pending.
    pub backend_recheck_interval: Duration,
    /// Consecutive successes that turn a down target up.
    pub rise: u32,
    /// Consecutive failures that turn an up (or not yet judged) target down.
    pub fall: u32,
}

/// How the agent talks to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubClientConfig {
    /// Period of health reports on a healthy session (reports also go out at once when a
    /// gateway's readiness changes).
    pub report_interval: Duration,
    /// First reconnect delay; it doubles per consecutive failure.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Limit for establishing a TCP/HTTP2 connection to one hub.
    pub connect_timeout: Duration,
    /// Limit for the `Register` call.
    pub register_timeout: Duration,
    /// TLS towards the hub; `None`: plain text (`http://` hub URLs, development only).
    pub tls: Option<HubTlsConfig>,
}

/// TLS towards the hub (PEM files, read when the agent starts). With it, hub URLs are
/// `https://` (a bare `host:port` gets `https://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubTlsConfig {
    /// CA certificate(s) the hub's server certificate must chain to.
    pub ca: PathBuf,
    /// This agent's client certificate chain; its identity (a DNS SAN or the common name)
    /// must be the cluster name, or the hub answers PERMISSION_DENIED. Needed by hubs that
    /// require client certificates (every hub with TLS on).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
    /// Verify the hub's certificate against this name instead of the URL's host (for example
    /// the hubs' peer identity `hub.meridian`, so hub certificates need no IP SANs).
    pub server_name: Option<String>,
}

// === impl AgentConfig ===

impl AgentConfig {
    /// A config with the documented defaults: loopback port 0 for both servers, polling every
    /// 500 ms, no hub, no state directory.
    pub fn new(cluster: ClusterName, config_dir: impl Into<PathBuf>) -> Self {
        Self {
            cluster,
            config_dir: config_dir.into(),
            kubernetes: None,
            hubs: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            poll_interval: Duration::from_millis(500),
            probes: ProbeConfig::default(),
            hub: HubClientConfig::default(),
            gateway_tls: None,
        }
    }

    /// True when no hub is configured.
    pub fn is_standalone(&self) -> bool {
        self.hubs.is_empty()
    }
}

// === impl ProbeConfig ===

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            gateway_interval: Duration::from_millis(500),
            gateway_timeout: Duration::from_millis(300),
            gateway_recheck_interval: Duration::from_millis(100),
            backend_interval: Duration::from_secs(1),
            backend_timeout: Duration::from_millis(500),
            backend_recheck_interval: Duration::from_millis(250),
            rise: 2,
            fall: 2,
        }
    }
}

// === impl HubClientConfig ===

impl Default for HubClientConfig {
    fn default() -> Self {
        Self {
            report_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            register_timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}
