//! The Gateway API conformance suite, mirroring the upstream tests by name, run against a real
//! `meridian gateway --config-dir` process and real `meridian echo` backends over sockets.
//!
//! Each test starts its own echo backends and gateway (so tests are independent and run in
//! parallel), writes the upstream-style manifests (with free ports substituted) into the config
//! directory, and checks requests the way the upstream suite does: status, the backend that
//! answered (`pod` prefix), the path/host/headers the backend saw, response headers, redirect
//! `Location`s. Requests are retried until they match (eventual consistency, like upstream).

mod attach_tests;
mod backend_tls_tests;
mod connection_tests;
mod frontend_mtls_tests;
mod grpc_tests;
mod harness;
mod http_tests;
mod reload_tests;
mod request_target_tests;
mod session_tests;
mod tls_tests;
