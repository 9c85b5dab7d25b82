//! Meridian's contracts between hub, agents and gateways.
//!
//! - [`model`]: the domain model as plain Rust types (clusters, health, hostname policy, routes,
//!   programmed gateway config). Everything else in Meridian works on these.
//! - [`pb`]: the protobuf/gRPC wire form, generated at build time by protox + tonic-prost-build.
//! - [`convert`]: conversions between the two; the only code that touches both.
//!
//! **Boundary:** prost types never leave this crate's `pb` and `convert` modules except as
//! tonic service traits and clients.

pub mod convert;
pub mod model;

/// The largest gRPC message hub, agents and gateways accept from each other (tonic's default
/// is 4 MiB). A `SharedConfig` with some 20,000 routes, or a few dozen certificates with long
/// chains, and a Gateway's programmed config are single messages; at 4 MiB they would be
/// refused and the receiver would keep its old config (or, for an agent's report, lose its
/// session and its cluster's health). Every peer is authenticated (mutual TLS in production).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 << 20;

/// Generated protobuf and gRPC types (package `meridian.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("meridian.v1");
}
