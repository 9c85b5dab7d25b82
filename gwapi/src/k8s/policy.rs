//! BackendTLSPolicy (gateway.networking.k8s.io/v1, Gateway API v1.4 shape).

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// A BackendTLSPolicy: how a Gateway speaks TLS to the Service ports it targets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendTlsPolicy {
    /// API version.
    pub api_version: String,
    /// `BackendTLSPolicy`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: BackendTlsPolicySpec,
}

/// `BackendTLSPolicySpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendTlsPolicySpec {
    /// The Services (and optionally their named ports) the policy applies to (1..=16), all in
    /// the policy's namespace.
    pub target_refs: Vec<PolicyTargetReference>,
    /// How the backend's certificate is verified.
    pub validation: BackendTlsPolicyValidation,
    /// Implementation-specific TLS options (Meridian reads none).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// `LocalPolicyTargetReferenceWithSectionName`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyTargetReference {
    /// API group (empty for core).
    pub group: String,
    /// Kind (`Service`).
    pub kind: String,
    /// Name.
    pub name: String,
    /// For a Service: the name of one of its ports; absent means every port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// `BackendTLSPolicyValidation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendTlsPolicyValidation {
    /// ConfigMaps (key `ca.crt`, PEM) holding the trusted CA certificates (at most 8).
    /// Exactly one of this and `wellKnownCACertificates` is set.
    #[serde(rename = "caCertificateRefs", skip_serializing_if = "Vec::is_empty")]
    pub ca_certificate_refs: Vec<CaCertificateReference>,
    /// `System`: the platform's trust store.
    #[serde(
        rename = "wellKnownCACertificates",
        skip_serializing_if = "Option::is_none"
    )]
    pub well_known_ca_certificates: Option<String>,
    /// The SNI sent to the backend, and the name its certificate must be valid for unless
    /// `subjectAltNames` is set.
    pub hostname: String,
    /// Names the certificate must carry one of, instead of `hostname` (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltNameSpec>,
}

/// `LocalObjectReference` to a CA certificate holder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CaCertificateReference {
    /// API group (empty for core).
    pub group: String,
    /// Kind (`ConfigMap`).
    pub kind: String,
    /// Name, in the policy's namespace.
    pub name: String,
}

/// `SubjectAltName`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubjectAltNameSpec {
    /// `Hostname` or `URI`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Set when `type` is `Hostname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Set when `type` is `URI`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}
