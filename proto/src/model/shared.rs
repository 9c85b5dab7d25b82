//! What the hub pushes to every cluster: the shared routes (and, later, certificates).

use super::gateway::TlsCertificate;
use super::route::HttpRoute;

/// A full, versioned snapshot of the state the hub shares with every agent.
///
/// The version is the hub's Raft index of the last change to shared state, so every hub node
/// sends the same version for the same content and an agent that reconnects to another node
/// can tell whether it is behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// Monotonic version (the hub's applied index of the last change to this content).
    pub version: u64,
    /// Global HTTPRoutes, in key order.
    pub http_routes: Vec<HttpRoute>,
    /// Certificates the hub distributes, in key order.
    pub certificates: Vec<TlsCertificate>,
}
