//! TLS: client connections to backends under a BackendTLSPolicy ([`backend`]) and the host's
//! trust store for `wellKnownCACertificates: System` ([`system_roots`]), certificates
//! from PEM ([`certs`]), the SNI certificate resolver ([`sni`]), client certificate validation
//! ([`client_auth`]) and the validated certificate told to backends ([`client_cert`]), ClientHello
//! parsing for passthrough ([`client_hello`]) and a stream that replays already-read bytes
//! ([`prefixed`]).

pub(crate) mod backend;
pub(crate) mod certs;
pub(crate) mod client_auth;
pub(crate) mod client_cert;
pub(crate) mod client_hello;
pub(crate) mod prefixed;
pub(crate) mod sni;
pub(crate) mod system_roots;
