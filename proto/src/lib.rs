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

/// Generated protobuf and gRPC types (package `meridian.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("meridian.v1");
}
