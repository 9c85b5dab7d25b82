//! `/v1/certificates`: TLS certificates the hub pushes to every cluster, where agents turn them
//! into `kubernetes.io/tls` Secrets that Gateway listeners reference.
//!
//! **Invariant:** no answer carries a private key: the JSON shapes here have no field for it,
//! and errors about the key never quote it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use meridian_proto::model::ObjectKey;
use meridian_proto::model::gateway::TlsCertificate;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::parse_json;
use super::error::ApiError;
use super::{AppState, Params, ReadQuery, path_route_key, read_view, submit};
use crate::store::{Action, CertificateInfo, certificate_info, check_certificate, unix_now_ms};

/// `PUT /v1/certificates/{namespace}/{name}` body.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateBody {
    /// Must equal the path's namespace when present.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Must equal the path's name when present.
    #[serde(default)]
    pub name: Option<String>,
    /// PEM certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
}

impl std::fmt::Debug for CertificateBody {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateBody")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A stored certificate as the API shows it: everything but the key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CertificateJson {
    /// Namespace of the Secret agents create.
    pub namespace: String,
    /// Name of the Secret agents create.
    pub name: String,
    /// The leaf's subject (`CN=*.demo.meridian.test`).
    pub subject: String,
    /// The leaf's DNS subject alternative names: the names it is valid for.
    pub dns_names: Vec<String>,
    /// The leaf's issuer.
    pub issuer: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// End of validity, Unix milliseconds.
    pub not_after_unix_ms: i64,
    /// Whether it has expired (by this node's clock, at the time of the answer).
    pub expired: bool,
    /// Certificates in the chain, leaf included.
    pub chain_length: usize,
    /// SHA-256 fingerprint of the leaf.
    pub sha256_fingerprint: String,
    /// The PEM chain (single-object answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain_pem: Option<String>,
    /// The listeners serving it, as their clusters last reported.
    #[serde(default)]
    pub used_by: Vec<CertificateUser>,
}

/// A listener that serves a shared certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CertificateUser {
    /// The cluster.
    pub cluster: String,
    /// The Gateway, `namespace/name`.
    pub gateway: String,
    /// The listener's name.
    pub listener: String,
}

/// Every listener serving certificate `key`, by cluster, as the clusters last reported.
fn users(state: &crate::store::State, key: &ObjectKey) -> Vec<CertificateUser> {
    state
        .clusters
        .values()
        .flat_map(|record| {
            let uses = record.shared.iter().flat_map(|s| s.certificates.iter());
            uses.filter(|u| &u.certificate == key)
                .map(|u| CertificateUser {
                    cluster: record.cluster.name.to_string(),
                    gateway: u.gateway.to_string(),
                    listener: u.listener.clone(),
                })
        })
        .collect()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

impl CertificateJson {
    /// The JSON of a stored certificate, with its chain when `with_chain`.
    pub fn new(cert: &TlsCertificate, with_chain: bool) -> Result<Self, ApiError> {
        // Stored certificates passed `check_certificate` when they were applied.
        let info = certificate_info(cert).map_err(|e| {
            ApiError::internal(format!("stored certificate {} is unusable: {e}", cert.key))
        })?;
        Ok(Self::from_info(cert, &info, with_chain))
    }

    fn from_info(cert: &TlsCertificate, info: &CertificateInfo, with_chain: bool) -> Self {
        let now_unix = i64::try_from(unix_now_ms() / 1000).unwrap_or(i64::MAX);
        Self {
            namespace: cert.key.namespace.clone(),
            name: cert.key.name.clone(),
            subject: info.subject.clone(),
            dns_names: info.dns_names.clone(),
            issuer: info.issuer.clone(),
            not_before: rfc3339(info.not_before_unix),
            not_after: rfc3339(info.not_after_unix),
            not_after_unix_ms: info.not_after_unix.saturating_mul(1000),
            expired: info.not_after_unix < now_unix,
            chain_length: info.chain_length,
            sha256_fingerprint: info.sha256_fingerprint.clone(),
            cert_chain_pem: with_chain.then(|| cert.cert_chain_pem.clone()),
            used_by: Vec::new(),
        }
    }
}

/// Validates a PUT body for the certificate at `key`: names match the path, the PEM parses,
/// the key belongs to the leaf, and the leaf is valid now (not expired, not yet to come).
pub fn parse_certificate(
    key: &ObjectKey,
    bytes: &[u8],
) -> Result<(TlsCertificate, CertificateInfo), ApiError> {
    let body: CertificateBody = parse_json(bytes)?;
    for (field, given, expected) in [
        ("namespace", &body.namespace, &key.namespace),
        ("name", &body.name, &key.name),
    ] {
        if let Some(given) = given
            && given != expected
        {
            return Err(ApiError::bad_request(
                Some(field.into()),
                format!("{given:?} does not match the path's {field} {expected:?}"),
            ));
        }
    }
    let cert = TlsCertificate {
        key: key.clone(),
        cert_chain_pem: body.cert_chain_pem,
        private_key_pem: body.private_key_pem,
    };
    let info = check_certificate(&cert)?;
    let now_unix = i64::try_from(unix_now_ms() / 1000).unwrap_or(i64::MAX);
    if info.not_after_unix < now_unix {
        return Err(ApiError::bad_request(
            Some("cert_chain_pem".into()),
            format!(
                "the leaf certificate expired at {}",
                rfc3339(info.not_after_unix)
            ),
        ));
    }
    // Gateway listeners pick certificates by the host a client asks for (SNI), and clients check
    // that host against the certificate's DNS names only (RFC 6125; the subject's CN is not
    // looked at): one without any would be refused by every client.
    if info.dns_names.is_empty() {
        return Err(ApiError::bad_request(
            Some("cert_chain_pem".into()),
            "the leaf certificate has no DNS name (subjectAltName dNSName): HTTPS clients check \
             the host they asked for against those alone, so none would accept it"
                .into(),
        ));
    }
    // Gateways serve what they are given at once, and clients refuse a certificate before its
    // notBefore: a pre-staged or clock-skewed one would break HTTPS everywhere. Five minutes
    // of slack for clocks a little apart.
    if info.not_before_unix > now_unix.saturating_add(300) {
        return Err(ApiError::bad_request(
            Some("cert_chain_pem".into()),
            format!(
                "the leaf certificate is not valid before {}: every gateway would serve it at \
                 once and clients would refuse it; apply it once it is valid",
                rfc3339(info.not_before_unix)
            ),
        ));
    }
    Ok((cert, info))
}

// === handlers ===

pub(super) async fn list(
    State(state): State<AppState>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    let view = read_view(&state, query.stale).await?;
    let items = view
        .state
        .certificates
        .values()
        .map(|cert| {
            let mut json = CertificateJson::new(cert, false)?;
            json.used_by = users(&view.state, &cert.key);
            Ok(json)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(json!({ "items": items })))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Params(query): Params<ReadQuery>,
) -> Result<Json<CertificateJson>, ApiError> {
    let key = path_route_key(&namespace, &name)?;
    let view = read_view(&state, query.stale).await?;
    let cert = view
        .state
        .certificates
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("certificate {key} does not exist")))?;
    let mut json = CertificateJson::new(cert, true)?;
    json.used_by = users(&view.state, &key);
    Ok(Json(json))
}

pub(super) async fn put(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CertificateJson>, ApiError> {
    let key = path_route_key(&namespace, &name)?;
    let (cert, info) = parse_certificate(&key, &body)?;
    let json = CertificateJson::from_info(&cert, &info, true);
    submit(&state, &headers, Action::PutCertificate(Box::new(cert))).await?;
    Ok(Json(json))
}

/// `?force=true` on `DELETE`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

/// Clusters whose listeners' use of certificates is not known: they never reported it (an
/// agent not connected since it started, or one older than this report), or they are not
/// healthy now (their agent may be silent, and what it said may be stale).
fn unknown_users(state: &crate::store::State) -> Vec<String> {
    state
        .clusters
        .values()
        .filter(|record| {
            record.shared.is_none()
                || record.health.verdict != meridian_proto::model::HealthVerdict::Healthy
        })
        .map(|record| record.cluster.name.to_string())
        .collect()
}

/// Deletes a certificate, unless a cluster reported a listener serving it: every such
/// listener would lose the certificate at once and stop serving HTTPS (`?force=true` deletes
/// all the same). Clusters whose use is unknown are named: in the refusal, and as warnings
/// of a delete that goes through. The check reads a linearizable view; a listener a cluster
/// starts serving it with between that read and the commit is not seen, as with any
/// check-then-act over an API.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Params(query): Params<DeleteQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = path_route_key(&namespace, &name)?;
    let view = read_view(&state, false).await?;
    let unknown = unknown_users(&view.state);
    let unknown_note = if unknown.is_empty() {
        String::new()
    } else {
        format!(
            "; whether cluster{} {} serve{} it is not known (not reporting)",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            if unknown.len() == 1 { "s" } else { "" }
        )
    };
    if !query.force {
        let users = users(&view.state, &key);
        if !users.is_empty() {
            let listed: Vec<String> = users
                .iter()
                .map(|u| {
                    format!(
                        "{} (Gateway {} listener {})",
                        u.cluster, u.gateway, u.listener
                    )
                })
                .collect();
            return Err(ApiError::conflict(format!(
                "certificate {key} is served by {} listener{}: {}{unknown_note}. Deleting it \
                 stops HTTPS on them (unless a local Secret of the same name takes over): point \
                 them at another certificate first, or delete with ?force=true \
                 (meridian ctl delete certificate {key} --force)",
                users.len(),
                if users.len() == 1 { "" } else { "s" },
                listed.join(", "),
            )));
        }
    }
    let warnings: Vec<String> = unknown
        .iter()
        .map(|cluster| {
            format!(
                "cluster {cluster} is not reporting which listeners serve certificates; it may \
                 have served {key}"
            )
        })
        .collect();
    submit(&state, &headers, Action::DeleteCertificate(key.clone())).await?;
    Ok(Json(
        json!({ "deleted": key.to_string(), "warnings": warnings }),
    ))
}
