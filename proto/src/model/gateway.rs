//! The programmed configuration of one gateway: what an agent serves to the gateway instances
//! of one Gateway object, after attaching routes to listeners and resolving backends and
//! certificates.
//!
//! A gateway never sees unresolved references: every [`BackendRef`](super::route::BackendRef)
//! carries a [`Resolution`](super::route::Resolution), and every TLS listener carries its
//! certificates inline.

use std::net::{IpAddr, SocketAddr};

use super::names::ObjectKey;
use super::route::{GrpcRoute, HttpRoute, ServiceKey, TlsRoute};

/// A full, versioned snapshot for one gateway. Gateways replace their whole config with each
/// snapshot and answer with an ACK or a NACK naming the error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Increases with every snapshot an agent sends; ACK/NACK refer to it.
    pub version: u64,
    /// The Gateway object this config programs.
    pub gateway: Option<ObjectKey>,
    /// Listeners to bind.
    pub listeners: Vec<Listener>,
    /// HTTPRoutes with the listeners they attached to.
    pub http_routes: Vec<Attached<HttpRoute>>,
    /// GRPCRoutes with the listeners they attached to.
    pub grpc_routes: Vec<Attached<GrpcRoute>>,
    /// TLSRoutes with the listeners they attached to.
    pub tls_routes: Vec<Attached<TlsRoute>>,
    /// Every Service port a resolved reference points at.
    pub backends: Vec<Backend>,
    /// The client certificate presented on every TLS connection to a backend (Gateway
    /// `spec.tls.backend.clientCertificateRef`); `None` presents none.
    pub backend_client_certificate: Option<TlsCertificate>,
}

/// A Gateway listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Listener name, unique in the Gateway.
    pub name: String,
    /// Addresses to bind (`spec.addresses` of type IPAddress); empty binds all interfaces.
    pub addresses: Vec<IpAddr>,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: ListenerProtocol,
    /// Listener hostname (may start with `*.`); `None` matches every host.
    pub hostname: Option<String>,
    /// TLS settings; required for HTTPS and TLS listeners.
    pub tls: Option<ListenerTls>,
}

/// Listener protocols Meridian serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    /// Plain HTTP/1.1 and h2c.
    Http,
    /// TLS-terminated HTTP/1.1 and HTTP/2 (ALPN).
    Https,
    /// TLS passthrough (or termination) for TLSRoutes, by SNI.
    Tls,
}

/// Listener TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// Terminate or pass through.
    pub mode: TlsMode,
    /// Certificates to choose from by SNI (longest match wins).
    pub certificates: Vec<TlsCertificate>,
    /// Frontend client certificate validation (Gateway `spec.tls.frontend`); `None` asks for
    /// no client certificate. Every terminating listener of one port carries the same value,
    /// since validation happens in the one TLS handshake of that port.
    pub client_validation: Option<ClientValidation>,
}

/// How a terminating listener checks client certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientValidation {
    /// Trust anchors (at least one bundle).
    pub ca_certificates: Vec<CaCertificate>,
    /// What to do with a client that presents no certificate.
    pub mode: ClientValidationMode,
}

/// A PEM CA bundle from a ConfigMap's `ca.crt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaCertificate {
    /// The ConfigMap the bundle came from.
    pub config_map: ObjectKey,
    /// One or more PEM certificates.
    pub pem: String,
}

/// Frontend validation modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientValidationMode {
    /// Only clients with a certificate that chains to a CA complete the handshake.
    #[default]
    AllowValidOnly,
    /// Clients without a certificate are let through too; a certificate that is presented
    /// must still be valid.
    AllowInsecureFallback,
}

/// TLS modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// The gateway terminates TLS.
    Terminate,
    /// The gateway routes the raw TLS stream by SNI.
    Passthrough,
}

/// A certificate and its private key, from a `kubernetes.io/tls` Secret (or the hub).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TlsCertificate {
    /// The Secret the certificate came from.
    pub key: ObjectKey,
    /// PEM certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
}

impl std::fmt::Debug for TlsCertificate {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("key", &self.key)
            .field("cert_chain_pem_len", &self.cert_chain_pem.len())
            .finish_non_exhaustive()
    }
}

/// A route with the listeners it attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached<R> {
    /// The route, with resolved backend references.
    pub route: R,
    /// Where it attached.
    pub attachments: Vec<Attachment>,
}

/// A route's attachment to one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Listener name.
    pub listener: String,
    /// The effective hostnames: the intersection of the route's and the listener's hostnames.
    /// Empty means any host.
    pub hostnames: Vec<String>,
}

/// A Service port's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Which Service port.
    pub key: ServiceKey,
    /// The protocol to speak upstream.
    pub app_protocol: AppProtocol,
    /// Endpoint addresses with their readiness (EndpointSlice `conditions.ready`).
    pub endpoints: Vec<Endpoint>,
    /// TLS to the endpoints (a BackendTLSPolicy targets this Service port); `None` is
    /// cleartext.
    pub tls: Option<BackendTls>,
}

/// How a gateway speaks TLS to a backend's endpoints, from a valid BackendTLSPolicy.
///
/// Only a policy whose CA certificates all resolved becomes a `BackendTls`: a Service port
/// targeted by an invalid policy is an invalid backend instead, so it never gets cleartext.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// The trust anchors the backend's chain must lead to.
    pub ca: CaSource,
    /// The SNI sent, and the name the certificate must be valid for when
    /// `subject_alt_names` is empty (a DNS-1123 subdomain).
    pub hostname: String,
    /// When not empty, the certificate must be valid for at least one of these instead of
    /// `hostname`.
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// Where a backend's trust anchors come from (BackendTLSPolicy `validation`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CaSource {
    /// A PEM bundle from the policy's `caCertificateRefs` (one or more `CERTIFICATE` blocks;
    /// never empty).
    Pem(String),
    /// `wellKnownCACertificates: System`: the trust store of the gateway's host, loaded by the
    /// gateway (the agent's host may have another one).
    System,
}

/// A name a backend certificate may carry (BackendTLSPolicy `subjectAltNames`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name (`dNSName` SAN), wildcards in the certificate allowed.
    Hostname(String),
    /// A URI (`uniformResourceIdentifier` SAN), compared exactly (SPIFFE IDs and the like).
    Uri(String),
}

/// The upstream protocol of a backend (Service `appProtocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (`kubernetes.io/h2c`).
    H2c,
    /// HTTP/1.1 with WebSocket upgrades (`kubernetes.io/ws`).
    WebSocket,
}

/// One backend endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Address and target port.
    pub addr: SocketAddr,
    /// Whether the endpoint is ready to take traffic.
    pub ready: bool,
}
