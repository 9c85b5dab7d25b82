//! Errors of the gateway: starting it ([`GatewayError`]) and applying a config
//! ([`ConfigError`], sent back to the agent as a NACK).

use std::net::SocketAddr;

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The admin port could not be bound.
    #[error("binding the admin address {addr}: {source}")]
    BindAdmin {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The serving threads could not be started.
    #[error("starting the serving threads: {0}")]
    Shards(std::io::Error),
    /// The gateway task is gone (it panicked or was shut down).
    #[error("the gateway has shut down")]
    Closed,
}

/// A config was rejected; the previous config keeps serving. The message names the bad field
/// (`listener "https": certificate default/web-cert: no private key found`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config is not internally consistent (duplicate listener names, a route attached to
    /// an unknown listener, a TLS listener without certificates, a bad regex...).
    #[error("{0}")]
    Invalid(String),
    /// A listener's address could not be bound.
    #[error("listener {listener:?}: binding {addr}: {error}")]
    Bind {
        /// The listener name.
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error text.
        error: String,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Closed,
}
