//! Meridian's per-cluster agent.
//!
//! Pipeline: a **source** ([`source`]: a directory of Gateway API YAML, or the Kubernetes
//! API's list+watch) emits kube-runtime-style events → the **index** merges the objects with
//! the HTTPRoutes the hub pushes and **programs** every Gateway with `meridian_gwapi::program`
//! → the **config server** serves versioned `GatewayConfig` snapshots to the gateways that
//! subscribe (`ConfigDiscovery` gRPC) and tracks their ACKs/NACKs. Alongside: the **prober**
//! checks each subscribed gateway's `/ready` and each backend endpoint, feeding endpoint
//! readiness back into the configs and gateway readiness into the health view, and the **hub
//! client** streams health reports to the hub and receives `SharedConfig` snapshots.
//!
//! Code map:
//! - [`config`]: [`AgentConfig`], plain data.
//! - [`source`]: the source interface ([`source::Event`], [`source::Source`]) and the
//!   directory ([`source::file`]) and Kubernetes ([`source::kube`]) sources.
//! - `index`: the single task that owns all state (source store, shared routes, programmed
//!   configs and versions, subscriptions, probe states) and publishes snapshots.
//! - `config_server`: the `ConfigDiscovery` service.
//! - [`health`]: probes with hysteresis ([`health::probe`]) and report building
//!   ([`health::report`]).
//! - `hub_client`: register, session, reports, SharedConfig, reconnect with backoff.
//! - [`state_dir`]: the persisted SharedConfig.
//! - `kube_status`: with `--kubernetes`, writes the computed conditions back to the objects'
//!   `status` (a task of its own, fed by the index and the kube source).
//! - `admin`: `/healthz`, `/ready`, `/metrics`, `/status` ([`status`] holds the JSON shape).
//!
//! **Invariant:** only the index task mutates agent state; everything else reads `Arc`
//! snapshots from `watch` channels or sends it messages.
//!
//! **Boundary:** Gateway API object shapes stay in `meridian-gwapi` (the agent handles its
//! `Object`/`ObjectSet` values without looking inside); prost types appear only at the gRPC
//! edges (`config_server`, `hub_client`) and in the state file encoding.

pub mod config;
pub mod health;
pub mod source;
pub mod state_dir;
pub mod status;

mod admin;
mod config_server;
mod hub_client;
mod index;
mod kube_status;
mod metrics;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::pb::config_discovery_server::ConfigDiscoveryServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{
    AgentConfig, GatewayServerTls, HubClientConfig, HubTlsConfig, KubernetesSource, ProbeConfig,
};
pub use hub_client::HubStatus;
/// The metrics registry type [`spawn`] takes (re-exported so callers need no direct
/// dependency on `prometheus-client`).
pub use prometheus_client::registry::Registry;
pub use status::AgentStatus;

use crate::source::Source;
use crate::source::file::FileSource;
use crate::source::kube::KubeSource;

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The config directory does not exist or is not a directory.
    #[error("config directory {path}: {message}")]
    ConfigDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The Kubernetes API client cannot be configured.
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    /// A hub URL is not a valid gRPC endpoint URL.
    #[error("hub URL {url:?}: {message}")]
    InvalidHubUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The TLS files for the hub connection cannot be used.
    #[error("hub TLS: {path}: {message}")]
    HubTls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The TLS files of the ConfigDiscovery server cannot be used.
    #[error("gateway TLS: {path}: {message}")]
    GatewayTls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        /// `gRPC` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running agent. Dropping it does not stop the agent; call [`AgentHandle::shutdown`].
pub struct AgentHandle {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    status: watch::Receiver<Arc<AgentStatus>>,
    hub: watch::Receiver<Arc<HubStatus>>,
    ready: watch::Receiver<bool>,
    servers: Vec<(&'static str, JoinHandle<()>)>,
    tasks: Vec<JoinHandle<()>>,
    _prober: health::probe::Prober,
}

/// Starts an agent: binds its gRPC (`ConfigDiscovery`) and admin listeners, reads the source
/// once in the background and starts serving, probing and (unless standalone) talking to the
/// hub. Returns once both listeners are bound.
///
/// The agent registers its metrics in `registry` and serves the whole registry on its admin
/// `/metrics` (so a process can add its own metrics before calling this).
///
/// With `state_dir` set and hubs configured, a SharedConfig persisted by a previous run is
/// loaded and used until the hub sends a newer one; a corrupt file is logged and ignored.
pub async fn spawn(config: AgentConfig, mut registry: Registry) -> Result<AgentHandle, AgentError> {
    let kube_client = match &config.kubernetes {
        Some(kubernetes) => Some(kube_client(kubernetes).await?),
        None => None,
    };
    match std::fs::metadata(&config.config_dir) {
        _ if kube_client.is_some() => {}
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(AgentError::ConfigDir {
                path: config.config_dir.clone(),
                message: "not a directory".to_string(),
            });
        }
        Err(error) => {
            return Err(AgentError::ConfigDir {
                path: config.config_dir.clone(),
                message: error.to_string(),
            });
        }
    }
    let hubs = config
        .hubs
        .iter()
        .map(|url| hub_endpoint(url, &config.hub))
        .collect::<Result<Vec<_>, _>>()?;

    let metrics = metrics::Metrics::new(&mut registry);
    let registry = Arc::new(registry);

    let initial_shared = match (&config.state_dir, config.is_standalone()) {
        (Some(dir), false) => match state_dir::load_shared_config(dir) {
            Ok(Some(shared)) => {
                tracing::info!(version = shared.version, routes = shared.http_routes.len(), dir = %dir.display(), "serving the SharedConfig saved by a previous run until the hub sends one");
                metrics
                    .shared_config_version
                    .set(i64::try_from(shared.version).unwrap_or(i64::MAX));
                Some(shared)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, "ignoring the saved SharedConfig");
                None
            }
        },
        _ => None,
    };
    let initial_shared = initial_shared.map(Arc::new);

    let grpc_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            what: "gRPC",
            addr: config.listen,
            source,
        })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .map_err(|source| AgentError::Bind {
            what: "admin",
            addr: config.admin,
            source,
        })?;
    let bound = |listener: &tokio::net::TcpListener, what, addr| {
        listener
            .local_addr()
            .map_err(|source| AgentError::Bind { what, addr, source })
    };
    let grpc_addr = bound(&grpc_listener, "gRPC", config.listen)?;
    let admin_addr = bound(&admin_listener, "admin", config.admin)?;

    let (shutdown_tx, shutdown) = watch::channel(false);
    let (source_tx, source_rx) = mpsc::channel(64);
    let (probe_tx, probe_rx) = mpsc::channel(1024);

    let mut status_writer = None;
    let (location, source_task) = match kube_client {
        Some(client) => {
            let (feed_tx, feed_rx) = mpsc::unbounded_channel();
            status_writer = Some((client.clone(), feed_rx));
            let source = KubeSource::new(
                client,
                config.kubernetes.as_ref().and_then(|k| k.namespace.clone()),
            )
            .with_metrics(metrics.clone())
            .with_status_feed(feed_tx);
            (
                source.location(),
                tokio::spawn(source.run(source_tx, shutdown.clone())),
            )
        }
        None => {
            let source = FileSource::new(&config.config_dir, config.poll_interval)
                .with_metrics(metrics.clone());
            (
                source.location(),
                tokio::spawn(source.run(source_tx, shutdown.clone())),
            )
        }
    };
    let (index, outputs, index_task) = index::spawn(
        index::IndexParts {
            cluster: config.cluster.clone(),
            standalone: config.is_standalone(),
            location: location.clone(),
            probes: config.probes.clone(),
            metrics: metrics.clone(),
            initial_shared: initial_shared.clone(),
        },
        source_rx,
        probe_rx,
        shutdown.clone(),
    );
    let prober =
        health::probe::Prober::spawn(config.probes.clone(), outputs.targets.clone(), probe_tx);

    let (hub_status_tx, hub_status) = watch::channel(Arc::new(HubStatus {
        state: if hubs.is_empty() {
            "standalone"
        } else {
            "connecting"
        }
        .to_string(),
        shared_source: "none".to_string(),
        ..HubStatus::default()
    }));
    let mut tasks = vec![index_task, source_task];
    if let Some((client, feed)) = status_writer {
        tasks.push(kube_status::spawn(
            client,
            config.cluster.as_str(),
            outputs.programmed.clone(),
            feed,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    if !hubs.is_empty() {
        let parts = hub_client::HubClientParts {
            hubs,
            cluster: config.cluster.clone(),
            config: config.hub.clone(),
            state_dir: config.state_dir.clone(),
            health: outputs.health.clone(),
            index: index.clone(),
            ready: outputs.ready.clone(),
            status: hub_status_tx,
            initial: initial_shared.clone(),
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(hub_client::run(parts, shutdown.clone())));
    }

    let config_server =
        config_server::ConfigServer::new(index, outputs.configs.clone(), shutdown.clone());
    let mut grpc_shutdown = shutdown.clone();
    let mut grpc = tonic::transport::Server::builder();
    if let Some(tls) = &config.gateway_tls {
        grpc = grpc
            .tls_config(gateway_tls(tls)?)
            .map_err(|error| AgentError::GatewayTls {
                path: tls.cert.clone(),
                message: error.to_string(),
            })?;
    }
    let grpc = grpc
        .tcp_nodelay(true)
        // A gateway whose host vanished without closing the connection is noticed by the
        // keepalive; its readiness probe marks it down sooner anyway.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(
            ConfigDiscoveryServer::new(config_server)
                .max_decoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            async move {
                let _ = grpc_shutdown.wait_for(|stop| *stop).await;
            },
        );
    let grpc_task = tokio::spawn(async move {
        if let Err(error) = grpc.await {
            tracing::error!(%error, "the ConfigDiscovery gRPC server failed");
        }
    });

    let admin_state = admin::AdminState {
        registry,
        status: outputs.status.clone(),
        hub: hub_status.clone(),
        ready: outputs.ready.clone(),
    };
    let mut admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(async move {
        let served = axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(async move {
                let _ = admin_shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the admin server failed");
        }
    });

    tracing::info!(
        cluster = %config.cluster,
        grpc = %grpc_addr,
        admin = %admin_addr,
        source = %location,
        hubs = ?config.hubs,
        "agent started"
    );
    Ok(AgentHandle {
        grpc_addr,
        admin_addr,
        shutdown: shutdown_tx,
        status: outputs.status,
        hub: hub_status,
        ready: outputs.ready,
        servers: vec![("gRPC", grpc_task), ("admin", admin_task)],
        tasks,
        _prober: prober,
    })
}

/// Builds a tonic endpoint for a hub URL (`http://host:port`; a bare `host:port` gets
/// `http://`, or `https://` with TLS configured).
fn hub_endpoint(
    url: &str,
    config: &HubClientConfig,
) -> Result<tonic::transport::Endpoint, AgentError> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("{scheme}://{url}")
    };
    let invalid = |message: String| AgentError::InvalidHubUrl {
        url: url.to_string(),
        message,
    };
    let uri: http::Uri = full
        .parse()
        .map_err(|error: http::uri::InvalidUri| invalid(error.to_string()))?;
    match (uri.scheme_str(), config.tls.is_some()) {
        (Some("http"), false) | (Some("https"), true) => {}
        (Some("http"), true) => {
            return Err(invalid(
                "an http:// URL with hub TLS configured; use https://".to_string(),
            ));
        }
        (Some("https"), false) => {
            return Err(invalid(
                "https:// needs the hub's CA (--hub-ca); without it only http:// hub URLs are \
                 supported"
                    .to_string(),
            ));
        }
        _ => {
            return Err(invalid(
                "only http:// and https:// hub URLs are supported".to_string(),
            ));
        }
    }
    if uri.host().is_none() {
        return Err(invalid("missing host".to_string()));
    }
    let mut endpoint = tonic::transport::Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        // A hub that stops answering without closing the connection (frozen, or cut off) is
        // detected in about interval + timeout, then the client moves to the next hub. That
        // must fit well inside the hub's miss timeout (3 reports, 3 s by default; the leader
        // adds one more when the node the reports came through went silent too).
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(hub_tls(tls)?)
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(endpoint)
}

/// Reads the TLS files of the ConfigDiscovery server.
fn gateway_tls(config: &GatewayServerTls) -> Result<tonic::transport::ServerTlsConfig, AgentError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |path: &PathBuf, marker: &str| {
        read_pem(path, Some(marker)).map_err(|message| AgentError::GatewayTls {
            path: path.clone(),
            message,
        })
    };
    let cert = read(&config.cert, CERTIFICATE)?;
    let key = read(&config.key, PRIVATE_KEY)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &config.client_ca {
        let ca = read(ca, CERTIFICATE)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(tls)
}

/// Reads the TLS files of the hub connection.
fn hub_tls(config: &HubTlsConfig) -> Result<tonic::transport::ClientTlsConfig, AgentError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |path: &PathBuf, marker: Option<&str>| {
        read_pem(path, marker).map_err(|message| AgentError::HubTls {
            path: path.clone(),
            message,
        })
    };
    let ca = read(&config.ca, Some(CERTIFICATE))?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read(cert, None)?, read(key, None)?));
        }
        (None, None) => {}
        (Some(path), None) | (None, Some(path)) => {
            return Err(AgentError::HubTls {
                path: path.clone(),
                message: "a client certificate needs both --tls-cert and --tls-key".to_string(),
            });
        }
    }
    if let Some(name) = &config.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
const PRIVATE_KEY: &str = "PRIVATE KEY-----";

/// Reads a PEM file, checking that it holds `marker` (a certificate or key block) when given;
/// the error says what is wrong, for the caller to pair with the path.
fn read_pem(path: &PathBuf, marker: Option<&str>) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|error| error.to_string())?;
    match marker {
        Some(marker) if !String::from_utf8_lossy(&bytes).contains(marker) => Err(format!(
            "no PEM {}",
            marker
                .trim_matches('-')
                .trim_start_matches("BEGIN ")
                .to_lowercase()
        )),
        _ => Ok(bytes),
    }
}

// === impl AgentHandle ===

impl AgentHandle {
    /// The bound address of the `ConfigDiscovery` gRPC server.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound address of the admin HTTP server.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The current `/status` document (hub part included).
    pub fn status(&self) -> AgentStatus {
        let mut status = AgentStatus::clone(&self.status.borrow());
        status.hub = Some(HubStatus::clone(&self.hub.borrow()));
        status
    }

    /// Resolves once the source has been read completely and the first configs are
    /// programmed (what the admin `/ready` reports).
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Resolves when one of the servers stops on its own (it failed), naming it.
    pub async fn failed(&mut self) -> &'static str {
        let (names, handles): (Vec<_>, Vec<_>) =
            self.servers.iter_mut().map(|(n, h)| (*n, h)).unzip();
        let (_, index, _) = futures::future::select_all(handles).await;
        names[index]
    }

    /// Stops the agent: ends every gateway stream cleanly, closes the hub session, stops the
    /// servers and waits (at most 5 s) for them.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = self
            .servers
            .into_iter()
            .map(|(_, handle)| handle)
            .chain(self.tasks);
        let joined = futures::future::join_all(all);
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            tracing::warn!("agent tasks did not stop within 5 s");
        }
        tracing::info!("agent stopped");
    }
}

/// A Kubernetes API client from a kubeconfig file, or inferred like kubectl (`KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account).
async fn kube_client(source: &KubernetesSource) -> Result<kube::Client, AgentError> {
    let config = match &source.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|error| AgentError::Kubernetes(format!("{}: {error}", path.display())))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|error| AgentError::Kubernetes(format!("{}: {error}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|error| {
            AgentError::Kubernetes(format!("no kubeconfig and not in a cluster: {error}"))
        })?,
    };
    kube::Client::try_from(config).map_err(|error| AgentError::Kubernetes(error.to_string()))
}
