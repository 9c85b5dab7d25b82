//! Who may talk to a hub node.
//!
//! - [`tokens`]: bearer tokens of the admin API ([`AdminTokens`]).
//! - [`tls`]: mutual TLS of the gRPC API ([`GrpcTls`]): certificates in, identities out; the
//!   agent API requires the cluster's name, hub-to-hub calls the peer identity.
//!
//! **Guarantees:** with tokens configured, every admin route but `/healthz`, `/ready` and `/metrics`
//! needs one; with gRPC TLS configured, every gRPC call comes from a certificate of the
//! configured CA, and an agent can only register and stream as the cluster its certificate
//! names.

pub mod tls;
pub mod tokens;

#[cfg(test)]
mod tests;

pub use tls::{GrpcTls, PeerAuth, PeerCerts, certificate_identities, check_cluster_identity};
pub use tokens::{AdminTokens, Principal};
