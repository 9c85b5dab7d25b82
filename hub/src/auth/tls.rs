//! [`GrpcTls`]: mutual TLS of a hub node's gRPC traffic, and the identity checks on top of it.
//!
//! - Server: every client must present a certificate chaining to the configured CA.
//! - Agents: [`check_cluster_identity`] requires the client certificate to name the cluster
//!   the agent registers or streams as (a DNS subject alternative name, a URI SAN or the
//!   subject common name equal to the cluster name).
//! - Hub peers: [`PeerAuth`] (an interceptor on the Raft and `HubPeer` services) requires the
//!   peer identity; this node's own connections to peers present its certificate and verify
//!   theirs against that same identity.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::{ConfigError, GrpcTlsConfig};

/// The loaded TLS material of one node.
#[derive(Clone)]
pub struct GrpcTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    peer_identity: String,
}

impl std::fmt::Debug for GrpcTls {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("peer_identity", &self.peer_identity)
            .finish_non_exhaustive()
    }
}

// === impl GrpcTls ===

impl GrpcTls {
    /// Reads and checks the files: the chain and key parse and match, the CA parses, and this
    /// node's certificate carries the peer identity (other nodes would refuse it otherwise).
    pub fn load(config: &GrpcTlsConfig) -> Result<Self, ConfigError> {
        let cert_pem = read(&config.cert)?;
        let key_pem = read(&config.key)?;
        let ca_pem = read(&config.ca)?;
        let invalid = |field: &str, why: String| ConfigError::Invalid {
            field: format!("grpc_tls.{field}"),
            why,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("cert", format!("{}: {e}", config.cert.display())))?;
        let Some(leaf) = chain.first() else {
            return Err(invalid(
                "cert",
                format!("{}: no PEM certificate", config.cert.display()),
            ));
        };
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            invalid(
                "key",
                format!("{}: not a PEM private key", config.key.display()),
            )
        })?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
            invalid(
                "key",
                format!("{}: unsupported key type", config.key.display()),
            )
        })?;
        rustls::sign::CertifiedKey::new(chain.clone(), signing)
            .keys_match()
            .map_err(|_| {
                invalid(
                    "key",
                    format!(
                        "{} does not belong to the certificate {}",
                        config.key.display(),
                        config.cert.display()
                    ),
                )
            })?;
        let cas = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("ca", format!("{}: {e}", config.ca.display())))?;
        if cas.is_empty() {
            return Err(invalid(
                "ca",
                format!("{}: no PEM certificate", config.ca.display()),
            ));
        }
        let identities = certificate_identities(leaf)
            .map_err(|e| invalid("cert", format!("{}: {e}", config.cert.display())))?;
        if !identities.contains(&config.peer_identity) {
            return Err(invalid(
                "cert",
                format!(
                    "{} names {identities:?} but not the peer identity {:?}; other hub nodes \
                     would refuse it (add it as a DNS subject alternative name)",
                    config.cert.display(),
                    config.peer_identity
                ),
            ));
        }
        Ok(Self {
            cert_pem,
            key_pem,
            ca_pem,
            peer_identity: config.peer_identity.clone(),
        })
    }

    /// The gRPC server's TLS: this node's certificate, client certificates required.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// TLS of this node's connections to other hub nodes: presents this node's certificate and
    /// verifies the peer's against the peer identity (not its address).
    pub fn peer_client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(self.peer_identity.clone())
    }

    /// The interceptor of the hub-to-hub services.
    pub fn peer_auth(&self) -> PeerAuth {
        PeerAuth {
            identity: Some(Arc::from(self.peer_identity.as_str())),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The identities a certificate (DER) asserts, lower-cased where they are names: its DNS and
/// URI subject alternative names, then its subject common names.
pub fn certificate_identities(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.push(dns.to_ascii_lowercase());
                }
                x509_parser::extensions::GeneralName::URI(uri) => names.push((*uri).to_string()),
                _ => {}
            }
        }
    }
    for cn in parsed.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(cn.to_ascii_lowercase());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

/// The client certificates of a gRPC request (`None` on a plain-text connection).
pub type PeerCerts = Option<Arc<Vec<CertificateDer<'static>>>>;

/// The identities of a connection's client certificate, `None` on a plain-text connection.
fn client_identities(certs: &PeerCerts) -> Option<Result<Vec<String>, String>> {
    let certs = certs.as_ref()?;
    Some(match certs.first() {
        Some(leaf) => certificate_identities(leaf),
        None => Err("the client presented no certificate".to_string()),
    })
}

/// With TLS on, checks that the client certificate (`request.peer_certs()`) names `cluster`;
/// otherwise `PERMISSION_DENIED` naming both. Plain-text requests pass (the node runs
/// without TLS).
pub fn check_cluster_identity(certs: &PeerCerts, cluster: &str) -> Result<(), Status> {
    match client_identities(certs) {
        None => Ok(()),
        Some(Ok(identities)) if identities.iter().any(|i| i == cluster) => Ok(()),
        Some(Ok(identities)) => Err(Status::permission_denied(format!(
            "the client certificate is for {identities:?}, not for cluster {cluster:?}: an \
             agent's certificate must name the cluster it registers as (DNS SAN or common name)"
        ))),
        Some(Err(why)) => Err(Status::permission_denied(format!(
            "cannot read the client certificate: {why}"
        ))),
    }
}

/// Admits hub-to-hub calls (Raft, `HubPeer`) only from certificates carrying the peer
/// identity. Without TLS it admits everything.
#[derive(Clone, Debug, Default)]
pub struct PeerAuth {
    identity: Option<Arc<str>>,
}

impl tonic::service::Interceptor for PeerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(required) = &self.identity else {
            return Ok(request);
        };
        match client_identities(&request.peer_certs()) {
            Some(Ok(identities)) if identities.iter().any(|i| **i == **required) => Ok(request),
            Some(Ok(identities)) => Err(Status::permission_denied(format!(
                "hub-to-hub call from a certificate for {identities:?}, which lacks the hub \
                 peer identity {required:?}"
            ))),
            Some(Err(why)) => Err(Status::permission_denied(format!(
                "cannot read the client certificate: {why}"
            ))),
            None => Err(Status::permission_denied(
                "hub-to-hub calls need a client certificate",
            )),
        }
    }
}
