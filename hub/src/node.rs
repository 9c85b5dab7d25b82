//! [`Hub::spawn`]: one running hub node, wired from its parts.
//!
//! ```text
//!  admin API ──propose──▶ raft ──apply──▶ StoreMachine ──watch──▶ DnsView ─▶ dns
//!  agents ──reports──▶ health ─(leader)─propose─▶ raft        ├──▶ SharedConfig ─▶ agent sessions
//!          (follower)──HubPeer──▶ leader's health             └──▶ StoreView ─▶ admin reads, health
//! ```
//!
//! One tonic server per node serves the agents' `Hub` service, the Raft peer service and the
//! `HubPeer` service on the node's gRPC address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::model::Fqdn;
use meridian_proto::pb::hub_peer_server::HubPeerServer;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::admin::{self, AdminDeps};
use crate::api::agent::{AgentDeps, AgentService};
use crate::api::peer::PeerService;
use crate::auth::{AdminTokens, GrpcTls};
use crate::config::{ConfigError, HubConfig};
use crate::dns::{self, DnsError, DnsHandle};
use crate::health::{self, HealthDeps};
use crate::raft::{self, RaftError, RaftFault, RaftHandle};
use crate::store::{Proposer, StoreMachine, StoreWatches};
use crate::zone_keys;

/// How long shutdown waits for the servers to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts hub nodes.
pub struct Hub;

/// Sockets bound by the caller before the node starts (tests and `meridian dev` pre-bind ports
/// so every node knows the others' addresses). `None` binds the configured address.
#[derive(Debug, Default)]
pub struct HubListeners {
    /// For the gRPC server.
    pub grpc: Option<std::net::TcpListener>,
    /// For the admin API.
    pub admin: Option<std::net::TcpListener>,
}

/// A running hub node.
pub struct HubHandle {
    node_id: u64,
    admin_addr: SocketAddr,
    grpc_addr: SocketAddr,
    dns_addr: SocketAddr,
    raft: RaftHandle,
    watches: StoreWatches,
    shutdown: CancellationToken,
    dns: DnsHandle,
    tasks: Vec<JoinHandle<()>>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The configuration is invalid.
    #[error("hub config: {0}")]
    Config(#[from] ConfigError),
    /// A socket or directory could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`binding the admin API on 127.0.0.1:4001`).
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Raft did not start.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// DNS did not start.
    #[error(transparent)]
    Dns(#[from] DnsError),
}

// === impl Hub ===

impl Hub {
    /// Starts a node, binding the configured addresses.
    pub async fn spawn(config: HubConfig) -> Result<HubHandle, HubError> {
        Self::spawn_with(config, HubListeners::default()).await
    }

    /// Starts a node on pre-bound listeners where given.
    pub async fn spawn_with(
        config: HubConfig,
        listeners: HubListeners,
    ) -> Result<HubHandle, HubError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| HubError::Io {
            what: format!("creating data directory {}", config.data_dir.display()),
            source,
        })?;
        let grpc_listener = listen(listeners.grpc, config.grpc_listen, "the gRPC server").await?;
        let grpc_addr = local_addr(&grpc_listener, "the gRPC server")?;
        config.check_grpc_exposure(grpc_addr)?;
        let advertise = match &config.grpc_advertise {
            Some(advertise) => advertise.clone(),
            None if grpc_addr.ip().is_unspecified() => {
                return Err(HubError::Config(ConfigError::Invalid {
                    field: "grpc_advertise".into(),
                    why: format!(
                        "required when the gRPC server listens on {grpc_addr} (other nodes \
                         and agents need a reachable address)"
                    ),
                }));
            }
            None => grpc_addr.into(),
        };
        let admin_listener = listen(listeners.admin, config.admin_listen, "the admin API").await?;
        let admin_addr = local_addr(&admin_listener, "the admin API")?;
        // The address actually bound counts (a pre-bound listener may differ from the config).
        config.check_admin_exposure(admin_addr)?;
        let admin_tokens = config
            .admin_auth
            .token_file
            .as_deref()
            .map(AdminTokens::load)
            .transpose()?;
        let tls = config.grpc_tls.as_ref().map(GrpcTls::load).transpose()?;
        let admin_tls = config
            .admin_tls
            .as_ref()
            .map(|t| admin::tls::server_config(&t.cert, &t.key))
            .transpose()?;
        if tls.is_none() {
            tracing::warn!(
                "gRPC without TLS: agents and hub peers are not authenticated (development only; \
                 see --tls-cert/--tls-key/--tls-ca)"
            );
        }

        let mut registry = Registry::default();
        let certificate_expiry = admin::register_certificate_expiry(&mut registry);
        let shutdown = CancellationToken::new();
        let (machine, watches, feeds) = StoreMachine::new(&mut registry);
        let (mut dns_feed, mut shared_feed) = (feeds.dns, feeds.shared);
        let mut raft_config = config.raft_config(advertise.clone());
        raft_config.client_tls = tls.as_ref().map(GrpcTls::peer_client_config);
        let raft = raft::spawn(raft_config, machine, &mut registry).await?;
        // DNS starts from the replayed state, then follows changes off the Raft thread.
        dns_feed.publish_now();
        let dns_feed_task = tokio::spawn(dns_feed.run(shutdown.child_token()));
        // Agents too: a session never starts on the empty config of a state not replayed yet.
        shared_feed.publish_now();
        let shared_feed_task = tokio::spawn(shared_feed.run(shutdown.child_token()));
        let proposer = Proposer::new(raft.clone(), watches.view.clone());

        let health = health::spawn(
            config.health.clone(),
            HealthDeps {
                node_id: config.node_id,
                raft: raft.clone(),
                proposer: proposer.clone(),
                view: watches.view.clone(),
                peer_tls: tls.as_ref().map(GrpcTls::peer_client_config),
            },
            &mut registry,
            shutdown.child_token(),
        );
        let dns = dns::spawn(config.dns.clone(), watches.dns.clone(), &mut registry).await?;
        let dns_addr = dns.local_addr();

        let mut tasks = vec![dns_feed_task, shared_feed_task];
        let dnssec_zones: Vec<Fqdn> = config
            .dns
            .zones
            .iter()
            .filter(|zone| zone.dnssec)
            .filter_map(|zone| Fqdn::new(&zone.origin).ok())
            .collect();
        tasks.push(tokio::spawn(zone_keys::run(
            dnssec_zones,
            format!("hub/{}", config.node_id),
            raft.status(),
            watches.view.clone(),
            proposer.clone(),
            shutdown.child_token(),
        )));

        let agent_service = AgentService::new(
            AgentDeps {
                node_id: config.node_id,
                raft: raft.clone(),
                proposer: proposer.clone(),
                view: watches.view.clone(),
                shared: watches.shared.clone(),
                health: health.clone(),
                shutdown: shutdown.child_token(),
            },
            &mut registry,
        );
        let peer_service = PeerService::new(raft.status(), health);
        let peer_auth = tls.as_ref().map(GrpcTls::peer_auth).unwrap_or_default();
        let grpc_shutdown = shutdown.child_token();
        let mut grpc = tonic::transport::Server::builder().tcp_nodelay(true);
        if let Some(tls) = &tls {
            grpc = grpc.tls_config(tls.server_config()).map_err(|e| {
                HubError::Config(ConfigError::Invalid {
                    field: "grpc_tls".into(),
                    why: e.to_string(),
                })
            })?;
        }
        let grpc = grpc
            .add_service(tonic::service::interceptor::InterceptedService::new(
                raft.peer_service(),
                peer_auth.clone(),
            ))
            .add_service(agent_service.into_server())
            .add_service(tonic::service::interceptor::InterceptedService::new(
                HubPeerServer::new(peer_service)
                    .max_decoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(meridian_proto::MAX_GRPC_MESSAGE_BYTES),
                peer_auth,
            ))
            .serve_with_incoming_shutdown(
                // Nagle must be off on accepted sockets too: a forwarded write's reply is written in
                // several HTTP/2 frames, and Nagle plus delayed ACKs held one for 40 ms.
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                grpc_shutdown.cancelled_owned(),
            );
        tasks.push(tokio::spawn(async move {
            if let Err(err) = grpc.await {
                tracing::error!(error = %err, "gRPC server failed");
            }
        }));

        let router = admin::router(AdminDeps {
            node_id: config.node_id,
            raft: raft.clone(),
            proposer,
            view: watches.view.clone(),
            dns_view: watches.dns.clone(),
            dns_config: config.dns.clone(),
            dns_explainer: dns.explainer(),
            registry: Arc::new(registry),
            certificate_expiry,
            tokens: admin_tokens.map(Arc::new),
        });
        let admin_shutdown = shutdown.child_token();
        tasks.push(tokio::spawn(async move {
            if let Err(err) = admin::serve(admin_listener, admin_tls, router, admin_shutdown).await
            {
                tracing::error!(error = %err, "admin API failed");
            }
        }));

        tracing::info!(
            node = config.node_id,
            admin = %admin_addr,
            grpc = %grpc_addr,
            advertise = %advertise,
            dns = %dns_addr,
            grpc_tls = tls.is_some(),
            admin_tokens = config.admin_auth.token_file.is_some(),
            admin_tls = config.admin_tls.is_some(),
            "hub node serving"
        );
        Ok(HubHandle {
            node_id: config.node_id,
            admin_addr,
            grpc_addr,
            dns_addr,
            raft,
            watches,
            shutdown,
            dns,
            tasks,
        })
    }
}

async fn listen(
    pre_bound: Option<std::net::TcpListener>,
    addr: SocketAddr,
    what: &str,
) -> Result<tokio::net::TcpListener, HubError> {
    match pre_bound {
        Some(listener) => listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|source| HubError::Io {
                what: format!("adopting the pre-bound listener for {what}"),
                source,
            }),
        None => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HubError::Io {
                what: format!("binding {what} on {addr}"),
                source,
            }),
    }
}

fn local_addr(listener: &tokio::net::TcpListener, what: &str) -> Result<SocketAddr, HubError> {
    listener.local_addr().map_err(|source| HubError::Io {
        what: format!("reading the address of {what}"),
        source,
    })
}

// === impl HubHandle ===

impl HubHandle {
    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The bound admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound gRPC address (agents, Raft peers, HubPeer).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound DNS address (UDP and TCP).
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The node's Raft handle.
    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// The views the state machine publishes.
    pub fn watches(&self) -> &StoreWatches {
        &self.watches
    }

    /// Resolves when the node can no longer serve consistent state: its raft node stopped on
    /// its own (storage failure, a data directory that lost acknowledged entries, a panic).
    /// Never resolves while the node works or after [`HubHandle::shutdown`]. Until the process
    /// acts on it, `/healthz` answers 503.
    pub async fn failed(&self) -> RaftFault {
        self.raft.failed().await
    }

    /// A token cancelled when the node shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops serving: closes the APIs (agents see their sessions end), stops DNS and Raft
    /// (the durable state stays on disk) and waits for the tasks, at most a few seconds.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.raft.shutdown().await;
        self.dns.shutdown().await;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!(
                    node = self.node_id,
                    "a hub task did not stop in time; aborting it"
                );
                abort.abort();
            }
        }
    }
}
