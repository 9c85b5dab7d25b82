//! Meridian's hub: the global control plane.
//!
//! - [`raft`]: replication of the state machine over a durable log.
//! - [`store`]: the deterministic state machine (clusters, health verdicts, hostname policies,
//!   shared routes, zone keys, audit log), its versioned encoding and the write path.
//! - [`health`]: the leader's health tracker, turning agents' reports into committed verdicts.
//! - [`dns`]: authoritative GeoDNS computed from the committed state.
//! - [`api`]: the admin HTTP API, the agents' gRPC API and the hub-to-hub `HubPeer` service.
//! - [`auth`]: admin API bearer tokens and gRPC mutual TLS with identity checks.
//! - [`config`]: [`HubConfig`], the static configuration of a node.
//! - [`node`]: [`Hub::spawn`], which wires all of the above into one running node.
//! - [`zone_keys`]: the leader duty that generates and commits DNSSEC zone keys.

pub mod api;
pub mod auth;
pub mod config;
pub mod dns;
pub mod health;
pub mod node;
pub mod raft;
pub mod store;
pub mod zone_keys;

pub use config::HubConfig;
pub use node::{Hub, HubError, HubHandle, HubListeners};
