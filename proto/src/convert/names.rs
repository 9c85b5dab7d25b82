//! Object keys on the wire. The other names (`ClusterName`, `Region`, `Fqdn`) are plain string
//! fields, decoded in place with their model constructors.

use super::ConvertError;
use crate::model::ObjectKey;
use crate::pb;

// === impl ObjectKey ===

impl From<&ObjectKey> for pb::ObjectKey {
    fn from(key: &ObjectKey) -> Self {
        Self {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

impl TryFrom<pb::ObjectKey> for ObjectKey {
    type Error = ConvertError;

    fn try_from(key: pb::ObjectKey) -> Result<Self, ConvertError> {
        ObjectKey::new(key.namespace, key.name).map_err(|err| {
            // `ObjectKey::new` says which part it rejected; point the path at that field.
            let field = if err.what == "namespace" {
                "namespace"
            } else {
                "name"
            };
            ConvertError::from(err).in_field(field)
        })
    }
}
