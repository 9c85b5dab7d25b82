//! The programmed gateway config on the wire: listeners, attached routes, backends.

use super::net::{ip, port, socket_addr};
use super::{
    Context, ConvertError, ConvertErrorKind, each, each_with, encode_all, enumeration, message,
    optional, required,
};
use crate::model::ModelError;
use crate::model::gateway::{
    AppProtocol, Attached, Attachment, Backend, BackendTls, CaCertificate, CaSource,
    ClientValidation, ClientValidationMode, Endpoint, GatewayConfig, Listener, ListenerProtocol,
    ListenerTls, SubjectAltName, TlsCertificate, TlsMode,
};
use crate::model::names::check_subdomain;
use crate::model::route::{GrpcRoute, HttpRoute, TlsRoute};
use crate::pb;

// === impl GatewayConfig ===

impl From<&GatewayConfig> for pb::GatewayConfig {
    fn from(config: &GatewayConfig) -> Self {
        Self {
            version: config.version,
            gateway: config.gateway.as_ref().map(Into::into),
            listeners: encode_all(&config.listeners),
            http_routes: encode_all(&config.http_routes),
            grpc_routes: encode_all(&config.grpc_routes),
            tls_routes: encode_all(&config.tls_routes),
            backends: encode_all(&config.backends),
            backend_client_certificate: config.backend_client_certificate.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::GatewayConfig> for GatewayConfig {
    type Error = ConvertError;

    fn try_from(config: pb::GatewayConfig) -> Result<Self, ConvertError> {
        Ok(Self {
            version: config.version,
            gateway: optional(config.gateway, "gateway")?,
            listeners: each(config.listeners, "listeners")?,
            http_routes: each(config.http_routes, "http_routes")?,
            grpc_routes: each(config.grpc_routes, "grpc_routes")?,
            tls_routes: each(config.tls_routes, "tls_routes")?,
            backends: each(config.backends, "backends")?,
            backend_client_certificate: optional(
                config.backend_client_certificate,
                "backend_client_certificate",
            )?,
        })
    }
}

// === impl Listener ===

impl From<&Listener> for pb::Listener {
    fn from(listener: &Listener) -> Self {
        Self {
            name: listener.name.clone(),
            addresses: listener.addresses.iter().map(ToString::to_string).collect(),
            port: listener.port.into(),
            protocol: pb::ListenerProtocol::from(listener.protocol).into(),
            hostname: listener.hostname.clone(),
            tls: listener.tls.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::Listener> for Listener {
    type Error = ConvertError;

    fn try_from(listener: pb::Listener) -> Result<Self, ConvertError> {
        let protocol: ListenerProtocol =
            enumeration::<pb::ListenerProtocol>(listener.protocol, "protocol")?.into();
        let tls: Option<ListenerTls> = optional(listener.tls, "tls")?;
        if tls.is_none() && matches!(protocol, ListenerProtocol::Https | ListenerProtocol::Tls) {
            return Err(ConvertError::new(ConvertErrorKind::Constraint(
                "required for HTTPS and TLS listeners",
            ))
            .in_field("tls"));
        }
        Ok(Self {
            name: listener.name,
            addresses: each_with(listener.addresses, "addresses", ip)?,
            port: port(listener.port).field("port")?,
            protocol,
            hostname: listener.hostname,
            tls,
        })
    }
}

// === impl ListenerProtocol ===

impl From<ListenerProtocol> for pb::ListenerProtocol {
    fn from(protocol: ListenerProtocol) -> Self {
        match protocol {
            ListenerProtocol::Http => Self::Http,
            ListenerProtocol::Https => Self::Https,
            ListenerProtocol::Tls => Self::Tls,
        }
    }
}

impl From<pb::ListenerProtocol> for ListenerProtocol {
    fn from(protocol: pb::ListenerProtocol) -> Self {
        match protocol {
            pb::ListenerProtocol::Http => Self::Http,
            pb::ListenerProtocol::Https => Self::Https,
            pb::ListenerProtocol::Tls => Self::Tls,
        }
    }
}

// === impl ListenerTls ===

impl From<&ListenerTls> for pb::ListenerTls {
    fn from(tls: &ListenerTls) -> Self {
        Self {
            mode: pb::TlsMode::from(tls.mode).into(),
            certificates: encode_all(&tls.certificates),
            client_validation: tls.client_validation.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::ListenerTls> for ListenerTls {
    type Error = ConvertError;

    fn try_from(tls: pb::ListenerTls) -> Result<Self, ConvertError> {
        Ok(Self {
            mode: enumeration::<pb::TlsMode>(tls.mode, "mode")?.into(),
            certificates: each(tls.certificates, "certificates")?,
            client_validation: optional(tls.client_validation, "client_validation")?,
        })
    }
}

// === impl ClientValidation ===

impl From<&ClientValidation> for pb::ClientValidation {
    fn from(validation: &ClientValidation) -> Self {
        Self {
            ca_certificates: encode_all(&validation.ca_certificates),
            mode: pb::ClientValidationMode::from(validation.mode).into(),
        }
    }
}

impl TryFrom<pb::ClientValidation> for ClientValidation {
    type Error = ConvertError;

    fn try_from(validation: pb::ClientValidation) -> Result<Self, ConvertError> {
        // Validation without a trust anchor could only reject everyone or, worse, be read as
        // "no validation"; neither is what the sender meant.
        if validation.ca_certificates.is_empty() {
            return Err(ConvertError::new(ConvertErrorKind::Constraint(
                "at least one CA certificate is required",
            ))
            .in_field("ca_certificates"));
        }
        Ok(Self {
            ca_certificates: each(validation.ca_certificates, "ca_certificates")?,
            mode: enumeration::<pb::ClientValidationMode>(validation.mode, "mode")?.into(),
        })
    }
}

impl From<ClientValidationMode> for pb::ClientValidationMode {
    fn from(mode: ClientValidationMode) -> Self {
        match mode {
            ClientValidationMode::AllowValidOnly => Self::AllowValidOnly,
            ClientValidationMode::AllowInsecureFallback => Self::AllowInsecureFallback,
        }
    }
}

impl From<pb::ClientValidationMode> for ClientValidationMode {
    fn from(mode: pb::ClientValidationMode) -> Self {
        match mode {
            pb::ClientValidationMode::AllowValidOnly => Self::AllowValidOnly,
            pb::ClientValidationMode::AllowInsecureFallback => Self::AllowInsecureFallback,
        }
    }
}

// === impl CaCertificate ===

impl From<&CaCertificate> for pb::CaCertificate {
    fn from(ca: &CaCertificate) -> Self {
        Self {
            config_map: Some((&ca.config_map).into()),
            pem: ca.pem.clone(),
        }
    }
}

impl TryFrom<pb::CaCertificate> for CaCertificate {
    type Error = ConvertError;

    /// The PEM is not parsed here: the gateway loads it with rustls and reports a bad bundle
    /// against the listener and ConfigMap.
    fn try_from(ca: pb::CaCertificate) -> Result<Self, ConvertError> {
        Ok(Self {
            config_map: message(ca.config_map, "config_map")?,
            pem: ca.pem,
        })
    }
}

// === impl TlsMode ===

impl From<TlsMode> for pb::TlsMode {
    fn from(mode: TlsMode) -> Self {
        match mode {
            TlsMode::Terminate => Self::Terminate,
            TlsMode::Passthrough => Self::Passthrough,
        }
    }
}

impl From<pb::TlsMode> for TlsMode {
    fn from(mode: pb::TlsMode) -> Self {
        match mode {
            pb::TlsMode::Terminate => Self::Terminate,
            pb::TlsMode::Passthrough => Self::Passthrough,
        }
    }
}

// === impl TlsCertificate ===

impl From<&TlsCertificate> for pb::TlsCertificate {
    fn from(cert: &TlsCertificate) -> Self {
        Self {
            key: Some((&cert.key).into()),
            cert_chain_pem: cert.cert_chain_pem.clone(),
            private_key_pem: cert.private_key_pem.clone(),
        }
    }
}

impl TryFrom<pb::TlsCertificate> for TlsCertificate {
    type Error = ConvertError;

    /// The PEM blocks are not parsed here: the gateway loads them with rustls and reports a
    /// bad certificate against the listener that uses it.
    fn try_from(cert: pb::TlsCertificate) -> Result<Self, ConvertError> {
        Ok(Self {
            key: message(cert.key, "key")?,
            cert_chain_pem: cert.cert_chain_pem,
            private_key_pem: cert.private_key_pem,
        })
    }
}

// === impl Attached ===

/// `Attached<R>` is generic in the model but one message per route kind on the wire.
macro_rules! attached {
    ($pb:ty, $route:ty) => {
        impl From<&Attached<$route>> for $pb {
            fn from(attached: &Attached<$route>) -> Self {
                Self {
                    route: Some((&attached.route).into()),
                    attachments: encode_all(&attached.attachments),
                }
            }
        }

        impl TryFrom<$pb> for Attached<$route> {
            type Error = ConvertError;

            fn try_from(attached: $pb) -> Result<Self, ConvertError> {
                Ok(Self {
                    route: message(attached.route, "route")?,
                    attachments: each(attached.attachments, "attachments")?,
                })
            }
        }
    };
}

attached!(pb::AttachedHttpRoute, HttpRoute);
attached!(pb::AttachedGrpcRoute, GrpcRoute);
attached!(pb::AttachedTlsRoute, TlsRoute);

// === impl Attachment ===

impl From<&Attachment> for pb::Attachment {
    fn from(attachment: &Attachment) -> Self {
        Self {
            listener: attachment.listener.clone(),
            hostnames: attachment.hostnames.clone(),
        }
    }
}

impl TryFrom<pb::Attachment> for Attachment {
    type Error = ConvertError;

    fn try_from(attachment: pb::Attachment) -> Result<Self, ConvertError> {
        Ok(Self {
            listener: attachment.listener,
            hostnames: attachment.hostnames,
        })
    }
}

// === impl Backend ===

impl From<&Backend> for pb::Backend {
    fn from(backend: &Backend) -> Self {
        Self {
            key: Some((&backend.key).into()),
            app_protocol: pb::AppProtocol::from(backend.app_protocol).into(),
            endpoints: encode_all(&backend.endpoints),
            tls: backend.tls.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<pb::Backend> for Backend {
    type Error = ConvertError;

    fn try_from(backend: pb::Backend) -> Result<Self, ConvertError> {
        Ok(Self {
            key: message(backend.key, "key")?,
            app_protocol: enumeration::<pb::AppProtocol>(backend.app_protocol, "app_protocol")?
                .into(),
            endpoints: each(backend.endpoints, "endpoints")?,
            tls: optional(backend.tls, "tls")?,
        })
    }
}

// === impl BackendTls ===

impl From<&BackendTls> for pb::BackendTls {
    fn from(tls: &BackendTls) -> Self {
        use pb::backend_tls::Ca;
        Self {
            ca: Some(match &tls.ca {
                CaSource::Pem(pem) => Ca::CaPem(pem.clone()),
                CaSource::System => Ca::System(pb::SystemTrustStore {}),
            }),
            hostname: tls.hostname.clone(),
            subject_alt_names: encode_all(&tls.subject_alt_names),
        }
    }
}

impl TryFrom<pb::BackendTls> for BackendTls {
    type Error = ConvertError;

    /// The PEM bundle is only checked for presence here: the gateway parses it with rustls
    /// when it compiles the config (and the agent already checked it when programming).
    /// A missing trust source is an error, never "trust nothing" or "trust anything".
    fn try_from(tls: pb::BackendTls) -> Result<Self, ConvertError> {
        use pb::backend_tls::Ca;
        let ca = match required(tls.ca, "ca")? {
            Ca::CaPem(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => CaSource::Pem(pem),
            Ca::CaPem(_) => {
                return Err(ConvertError::new(ConvertErrorKind::Constraint(
                    "must hold at least one PEM CERTIFICATE block",
                ))
                .in_field("ca_pem"));
            }
            Ca::System(pb::SystemTrustStore {}) => CaSource::System,
        };
        Ok(Self {
            ca,
            hostname: dns_name(tls.hostname).field("hostname")?,
            subject_alt_names: each(tls.subject_alt_names, "subject_alt_names")?,
        })
    }
}

// === impl SubjectAltName ===

impl From<&SubjectAltName> for pb::SubjectAltName {
    fn from(san: &SubjectAltName) -> Self {
        use pb::subject_alt_name::Name;
        Self {
            name: Some(match san {
                SubjectAltName::Hostname(name) => Name::Hostname(name.clone()),
                SubjectAltName::Uri(uri) => Name::Uri(uri.clone()),
            }),
        }
    }
}

impl TryFrom<pb::SubjectAltName> for SubjectAltName {
    type Error = ConvertError;

    fn try_from(san: pb::SubjectAltName) -> Result<Self, ConvertError> {
        use pb::subject_alt_name::Name;
        match required(san.name, "name")? {
            Name::Hostname(name) => Ok(Self::Hostname(dns_name(name).field("hostname")?)),
            Name::Uri(uri) => {
                // An absolute URI: a scheme, a colon, something after it, and no spaces.
                let valid = uri.split_once(':').is_some_and(|(scheme, rest)| {
                    !scheme.is_empty()
                        && scheme
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                        && !rest.is_empty()
                }) && !uri.chars().any(char::is_whitespace);
                if valid {
                    Ok(Self::Uri(uri))
                } else {
                    Err(ConvertError::from(ModelError::invalid(
                        "URI",
                        &uri,
                        "expected an absolute URI (scheme:rest)",
                    ))
                    .in_field("uri"))
                }
            }
        }
    }
}

/// A precise DNS name (no wildcard, no IP address): lower-case DNS-1123 labels.
fn dns_name(name: String) -> Result<String, ConvertError> {
    match check_subdomain(&name) {
        Ok(()) if name.contains(|c: char| c.is_ascii_alphabetic()) => Ok(name),
        Ok(()) => {
            Err(ModelError::invalid("host name", &name, "an IP address is not a host name").into())
        }
        Err(why) => Err(ModelError::invalid("host name", &name, why).into()),
    }
}

// === impl AppProtocol ===

impl From<AppProtocol> for pb::AppProtocol {
    fn from(protocol: AppProtocol) -> Self {
        match protocol {
            AppProtocol::Http1 => Self::Http1,
            AppProtocol::H2c => Self::H2c,
            AppProtocol::WebSocket => Self::Websocket,
        }
    }
}

impl From<pb::AppProtocol> for AppProtocol {
    fn from(protocol: pb::AppProtocol) -> Self {
        match protocol {
            pb::AppProtocol::Http1 => Self::Http1,
            pb::AppProtocol::H2c => Self::H2c,
            pb::AppProtocol::Websocket => Self::WebSocket,
        }
    }
}

// === impl Endpoint ===

impl From<&Endpoint> for pb::Endpoint {
    fn from(endpoint: &Endpoint) -> Self {
        Self {
            addr: endpoint.addr.to_string(),
            ready: endpoint.ready,
        }
    }
}

impl TryFrom<pb::Endpoint> for Endpoint {
    type Error = ConvertError;

    fn try_from(endpoint: pb::Endpoint) -> Result<Self, ConvertError> {
        Ok(Self {
            addr: socket_addr(endpoint.addr).field("addr")?,
            ready: endpoint.ready,
        })
    }
}
