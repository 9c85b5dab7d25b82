//! Meridian's end-to-end tests: one integration-test binary of the root package, so Cargo
//! builds `meridian` first and exposes it as `CARGO_BIN_EXE_meridian`. Harness: `meridian-tests`.

// Tests may panic on broken fixtures; that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backend_health;
mod certificates;
mod conformance;
mod ctl_output;
mod deploy;
mod dev_process;
mod frozen_hub;
mod kube_source;
mod kube_status;
mod large_config;
mod raft;
mod security;
mod skeleton;
mod tidy;

/// Path of the `meridian` binary under test.
pub fn meridian_bin() -> &'static str {
    env!("CARGO_BIN_EXE_meridian")
}
