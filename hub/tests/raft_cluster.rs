//! Multi-node raft tests: real nodes in one process, each with its own redb data directory, its
//! own tonic server on a loopback port and a fault-injecting TCP proxy in front.
//!
//! Everything lives in the `raft` module so `cargo nextest run -p meridian-hub raft` selects it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "raft_cluster/mod.rs"]
mod raft;
