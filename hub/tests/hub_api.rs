//! Hub integration tests: real single-node and 3-node hubs in this process (real Raft on disk,
//! real gRPC and HTTP on loopback), driven through the admin API and the agent gRPC API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "hub_api/certificates.rs"]
mod certificates;
#[path = "hub_api/group.rs"]
mod group;
#[path = "hub_api/hostnames.rs"]
mod hostnames;
#[path = "hub_api/pki.rs"]
mod pki;
#[path = "hub_api/security.rs"]
mod security;
#[path = "hub_api/single.rs"]
mod single;
#[path = "hub_api/support.rs"]
mod support;
