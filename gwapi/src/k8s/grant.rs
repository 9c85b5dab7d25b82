//! ReferenceGrant (gateway.networking.k8s.io/v1beta1 and v1).

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// A ReferenceGrant: lives in the target namespace and allows references into it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrant {
    /// API version.
    pub api_version: String,
    /// `ReferenceGrant`.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ReferenceGrantSpec,
}

/// `ReferenceGrantSpec`: any `from` may reference any `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantSpec {
    /// Who may refer (1..=16, ORed).
    pub from: Vec<ReferenceGrantFrom>,
    /// What may be referred to (1..=16, ORed).
    pub to: Vec<ReferenceGrantTo>,
}

/// `ReferenceGrantFrom`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantFrom {
    /// API group of the referrer (empty for core).
    pub group: String,
    /// Kind of the referrer.
    pub kind: String,
    /// Namespace of the referrer.
    pub namespace: String,
}

/// `ReferenceGrantTo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantTo {
    /// API group of the target (empty for core).
    pub group: String,
    /// Kind of the target.
    pub kind: String,
    /// Name of the target; absent grants every object of the kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
