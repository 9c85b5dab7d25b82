//! `meridian agent`: one per cluster. Reads a directory of Gateway API YAML or watches the
//! Kubernetes API, serves the
//! programmed config to gateways (`ConfigDiscovery` gRPC), probes them and their backends and,
//! unless standalone, streams health to the hub and serves the hub's shared routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::process::{wait_for_signal, write_ready_file};
use meridian_agent::AgentConfig;
use meridian_proto::model::ClusterName;

/// Arguments of `meridian agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster this agent serves, as registered on the hub. Required with --hub;
    /// defaults to `standalone` without one.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Directory of Gateway API YAML/JSON (Gateway, HTTPRoute, GRPCRoute, TLSRoute,
    /// ReferenceGrant, Service, EndpointSlice, Secret); re-read when files change. Either
    /// this or --kubernetes.
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API (Gateway API kinds, Services, EndpointSlices, TLS Secrets,
    /// ConfigMaps, Namespaces) instead of a directory. Uses --kubeconfig, else `KUBECONFIG`
    /// or `~/.kube/config`, else the in-cluster service account.
    #[arg(long)]
    kubernetes: bool,
    /// Kubeconfig file for --kubernetes (its current context).
    #[arg(long, value_name = "PATH", requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// With --kubernetes, watch namespaced kinds in this namespace only (GatewayClasses and
    /// Namespaces are still watched cluster-wide).
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    namespace: Option<String>,
    /// Hub gRPC URLs, comma-separated or repeated (`http://10.0.0.1:7001`). Without any, the
    /// agent runs standalone and serves the directory's config alone.
    #[arg(long = "hub", value_name = "URL[,URL...]", value_delimiter = ',')]
    hubs: Vec<String>,
    /// Where gateways subscribe (`ConfigDiscovery` gRPC). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7600")]
    listen: SocketAddr,
    /// Admin HTTP address (`/healthz`, `/ready`, `/metrics`, `/status`). Port 0 picks one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7601")]
    admin: SocketAddr,
    /// Directory for the agent's state (the hub's last SharedConfig, served after a restart
    /// while the hub is unreachable).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How often the config directory is checked for changes, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    poll_interval_ms: u64,
    /// Once serving, write `{"grpc":..,"admin":..,"pid":..}` here (atomically: a temporary
    /// file renamed into place).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) of the hubs' gRPC TLS; turns on TLS (hub URLs become https://).
    #[arg(long, value_name = "FILE")]
    hub_ca: Option<PathBuf>,
    /// This agent's client certificate (PEM) for the hub; its DNS SAN or common name must be
    /// the cluster name.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "hub_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "hub_ca"])]
    tls_key: Option<PathBuf>,
    /// Verify the hubs' certificates against this name instead of the URL's host (for
    /// example their peer identity `hub.meridian`).
    #[arg(long, value_name = "NAME", requires = "hub_ca")]
    hub_server_name: Option<String>,
    /// Serve the gateways' ConfigDiscovery API over TLS with this certificate (PEM). Without
    /// it the API is plain text, and gateways receive their listeners' private keys over it:
    /// use plain text only on loopback.
    #[arg(long, value_name = "FILE", requires = "gateway_tls_key")]
    gateway_tls_cert: Option<PathBuf>,
    /// The private key of --gateway-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "gateway_tls_cert")]
    gateway_tls_key: Option<PathBuf>,
    /// Accept only gateways with a client certificate from this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "gateway_tls_cert")]
    gateway_client_ca: Option<PathBuf>,
}

/// Runs `meridian agent` until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    if let Some(path) = &args.ready_file {
        // A stale file from an earlier run must not look like this run being ready.
        let _ = std::fs::remove_file(path);
    }
    let registry = meridian_agent::Registry::default();
    let mut agent = meridian_agent::spawn(config, registry)
        .await
        .context("starting the agent")?;
    // "Ready" means serving: the listeners are bound and the source has been read once, so
    // a gateway that subscribes now gets its config at once.
    tokio::select! {
        () = agent.ready() => {}
        signal = wait_for_signal() => {
            agent.shutdown().await;
            return signal;
        }
    }
    if let Some(path) = &args.ready_file {
        let ready = serde_json::json!({
            "grpc": agent.grpc_addr().to_string(),
            "admin": agent.admin_addr().to_string(),
            "pid": std::process::id(),
        });
        write_ready_file(path, &ready)?;
    }
    let outcome = tokio::select! {
        signal = wait_for_signal() => signal,
        server = agent.failed() => Err(anyhow::anyhow!("the agent's {server} server stopped unexpectedly")),
    };
    tracing::info!("shutting down");
    agent.shutdown().await;
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// The agent configuration from the flags.
fn build_config(args: &Args) -> anyhow::Result<AgentConfig> {
    let hubs: Vec<String> = args
        .hubs
        .iter()
        .map(|hub| hub.trim().to_string())
        .filter(|hub| !hub.is_empty())
        .collect();
    let cluster = match (&args.cluster, hubs.is_empty()) {
        (Some(name), _) => name.clone(),
        (None, true) => "standalone".to_string(),
        (None, false) => {
            bail!("--cluster is required with --hub (the name the hub knows this cluster by)")
        }
    };
    let cluster = ClusterName::new(cluster).context("--cluster")?;
    if args.poll_interval_ms == 0 {
        bail!("--poll-interval-ms must be at least 1");
    }
    let mut config = match (&args.config_dir, args.kubernetes) {
        (Some(dir), false) => AgentConfig::new(cluster, dir),
        (None, true) => {
            let mut config = AgentConfig::new(cluster, PathBuf::new());
            config.kubernetes = Some(meridian_agent::KubernetesSource {
                kubeconfig: args.kubeconfig.clone(),
                namespace: args.namespace.clone(),
            });
            config
        }
        (Some(_), true) => bail!(
            "--config-dir and --kubernetes are alternatives: read objects from a directory or from the Kubernetes API, not both"
        ),
        (None, false) => bail!(
            "where do the objects come from? Give --config-dir DIR (a directory of YAML) or --kubernetes (the Kubernetes API)"
        ),
    };
    config.hubs = hubs;
    config.listen = args.listen;
    config.admin = args.admin;
    config.state_dir = args.state_dir.clone();
    config.poll_interval = Duration::from_millis(args.poll_interval_ms);
    if let Some(ca) = &args.hub_ca {
        config.hub.tls = Some(meridian_agent::HubTlsConfig {
            ca: ca.clone(),
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
            server_name: args.hub_server_name.clone(),
        });
    }
    if let (Some(cert), Some(key)) = (&args.gateway_tls_cert, &args.gateway_tls_key) {
        config.gateway_tls = Some(meridian_agent::GatewayServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.gateway_client_ca.clone(),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(argv: &[&str]) -> anyhow::Result<AgentConfig> {
        let cli = Cli::try_parse_from(std::iter::once("agent").chain(argv.iter().copied()))?;
        build_config(&cli.args)
    }

    #[test]
    fn flags_build_the_config() {
        let config = config(&[
            "--cluster",
            "us-east",
            "--config-dir",
            "/etc/meridian",
            "--hub",
            "http://127.0.0.1:7001, http://127.0.0.1:7002",
            "--hub",
            "http://127.0.0.1:7003",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--state-dir",
            "/var/lib/meridian",
        ])
        .unwrap();
        assert_eq!(config.cluster.as_str(), "us-east");
        assert_eq!(
            config.hubs,
            [
                "http://127.0.0.1:7001",
                "http://127.0.0.1:7002",
                "http://127.0.0.1:7003"
            ]
        );
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.state_dir, Some(PathBuf::from("/var/lib/meridian")));
    }

    #[test]
    fn tls_flags_fill_the_hub_config() {
        let built = config(&[
            "--cluster",
            "us-east",
            "--config-dir",
            "d",
            "--hub",
            "https://127.0.0.1:7001",
            "--hub-ca",
            "ca.pem",
            "--tls-cert",
            "us-east.pem",
            "--tls-key",
            "us-east.key",
            "--hub-server-name",
            "hub.meridian",
        ])
        .unwrap();
        let tls = built.hub.tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("ca.pem"));
        assert_eq!(tls.cert, Some(PathBuf::from("us-east.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("hub.meridian"));
        // A client certificate without the CA is refused by the parser.
        assert!(config(&["--config-dir", "d", "--tls-cert", "a", "--tls-key", "b"]).is_err());
    }

    #[test]
    fn standalone_needs_no_cluster_but_a_hub_does() {
        let standalone = config(&["--config-dir", "/etc/meridian"]).unwrap();
        assert!(standalone.is_standalone());
        assert_eq!(standalone.cluster.as_str(), "standalone");

        let error = config(&["--config-dir", "d", "--hub", "http://127.0.0.1:7001"]).unwrap_err();
        assert!(
            error.to_string().contains("--cluster is required"),
            "{error}"
        );
        let error = config(&["--config-dir", "d", "--cluster", "Bad_Name"]).unwrap_err();
        assert!(format!("{error:#}").contains("cluster name"), "{error:#}");
    }

    #[test]
    fn the_source_is_a_directory_or_kubernetes() {
        let built = config(&[
            "--kubernetes",
            "--kubeconfig",
            "kc.yaml",
            "--namespace",
            "web",
        ])
        .unwrap();
        assert_eq!(
            built.kubernetes,
            Some(meridian_agent::KubernetesSource {
                kubeconfig: Some(PathBuf::from("kc.yaml")),
                namespace: Some("web".to_string()),
            })
        );
        assert_eq!(config(&["--config-dir", "d"]).unwrap().kubernetes, None);

        let both = config(&["--config-dir", "d", "--kubernetes"]).unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let neither = config(&[]).unwrap_err();
        assert!(
            neither.to_string().contains("--config-dir DIR"),
            "{neither}"
        );
        // --kubeconfig and --namespace only go with --kubernetes.
        assert!(config(&["--config-dir", "d", "--namespace", "web"]).is_err());
    }
}
