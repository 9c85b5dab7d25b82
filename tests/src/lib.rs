//! Harness for Meridian's end-to-end tests: real `meridian` processes on loopback.
//!
//! Layout:
//! - this crate (`meridian-tests`, `tests/src/`) is the harness library: process control,
//!   readiness, ports, DNS and HTTP clients, polling;
//! - the tests themselves are in `tests/e2e/` and compile as ONE integration-test binary of the
//!   root package (`[[test]] name = "e2e"` in the root `Cargo.toml`), so Cargo builds the
//!   `meridian` binary first and passes its path as `env!("CARGO_BIN_EXE_meridian")`. Add a test
//!   module there with one `mod` line in `tests/e2e/main.rs`.
//!
//! Rules: bind port 0 or pick free ephemeral ports, wait on ready files (never sleep), and let
//! [`process::Proc`]'s `Drop` kill every child.

// Test harness: panicking on a broken fixture is the desired failure mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dev;
pub mod dns;
pub mod faultproxy;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod kubeapi;
pub mod linearizability;
pub mod net;
pub mod pki;
pub mod process;
pub mod tls;
pub mod wait;

pub use process::{Proc, ProcSpec};
pub use wait::eventually;

/// Installs the ring crypto provider for rustls (idempotent). Call before any TLS client.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
