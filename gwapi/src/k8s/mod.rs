//! Serde types for the Kubernetes and Gateway API objects Meridian reads, in the exact JSON/YAML
//! shape Kubernetes uses (camelCase field names).
//!
//! These types are deliberately lenient so that one bad value never loses a whole object:
//! enums are plain strings (unknown values are reported as `UnsupportedValue` by validation),
//! and integers are `i64` so that an out-of-range port is reported with its field path instead
//! of failing the decode. Unknown fields are ignored, as the API server would for unknown but
//! harmless fields. A Kubernetes watcher can feed these types straight from `serde_json`.
//!
//! **Boundary:** these types never leave `meridian-gwapi`'s public API except through
//! [`crate::ObjectSet`], which the agent reads but does not construct by hand.

mod core;
mod gateway;
mod grant;
mod policy;
mod route;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::core::{
    ConfigMap, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Namespace, Secret,
    Service, ServicePort, ServiceSpec,
};
pub use self::gateway::{
    AllowedRoutes, FrontendTlsConfig, FrontendTlsValidation, Gateway, GatewayAddress,
    GatewayBackendTls, GatewayClass, GatewayClassSpec, GatewayInfrastructure, GatewaySpec,
    GatewayTlsConfig, GatewayTlsSettings, Listener, LocalParametersReference, ObjectReference,
    ParametersReference, RouteGroupKind, RouteNamespaces, SecretObjectReference, TlsConfigSettings,
    TlsPortConfig,
};
pub use self::grant::{ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo};
pub use self::policy::{
    BackendTlsPolicy, BackendTlsPolicySpec, BackendTlsPolicyValidation, CaCertificateReference,
    PolicyTargetReference, SubjectAltNameSpec,
};
pub use self::route::{
    BackendObjectReference, CookieConfig, Fraction, GrpcBackendRef, GrpcHeaderMatch,
    GrpcMethodMatch, GrpcRoute, GrpcRouteFilter, GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec,
    HeaderValue, HttpBackendRef, HttpCorsFilter, HttpHeaderFilter, HttpHeaderMatch, HttpPathMatch,
    HttpPathModifier, HttpQueryParamMatch, HttpRequestMirrorFilter, HttpRequestRedirectFilter,
    HttpRoute, HttpRouteFilter, HttpRouteMatch, HttpRouteRetry, HttpRouteRule, HttpRouteSpec,
    HttpRouteTimeouts, HttpUrlRewriteFilter, LocalObjectReference, ParentReference,
    SessionPersistence, TlsRoute, TlsRouteRule, TlsRouteSpec,
};

/// `metadata` of every object (the fields Meridian uses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace; empty means `default` for namespaced objects (as `kubectl apply` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels (used by Namespace selectors and EndpointSlice ownership).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations (kept for round trips; Meridian reads none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.generation`; status conditions echo it as `observedGeneration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339 creation time; route age is a precedence tie-break.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Resource version (kept for round trips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// UID (kept for round trips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A Kubernetes label selector (`matchLabels` AND `matchExpressions`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, ANDed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A Kubernetes `IntOrString` (Service `targetPort`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name.
    String(String),
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Whether `labels` satisfy this selector. An unknown operator matches nothing, so a typo
    /// never widens access. An empty selector matches everything (Kubernetes semantics).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let labels_ok = self
            .match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value));
        labels_ok
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }

    /// Checks the operators, returning a message naming the first bad one.
    pub fn check(&self) -> Result<(), String> {
        for (index, req) in self.match_expressions.iter().enumerate() {
            match req.operator.as_str() {
                "In" | "NotIn" if req.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{index}]: operator {} needs at least one value",
                        req.operator
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "matchExpressions[{index}].operator: unsupported value {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                    ));
                }
            }
        }
        Ok(())
    }
}
