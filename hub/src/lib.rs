//! Meridian's hub: the global control plane.
//!
//! - [`raft`]: replication of the state machine over a durable log.
//! - [`store`]: the deterministic state machine (clusters, health verdicts, hostname policies,
//!   shared routes) and its versioned command encoding.
//! - [`dns`]: authoritative GeoDNS computed from the committed state.
//! - [`api`]: the admin HTTP API and the agents' gRPC API.

pub mod api;
pub mod dns;
pub mod raft;
pub mod store;
