//! The shared config snapshot (hub → agents) on the wire.

use super::{ConvertError, each, encode_all};
use crate::model::{SharedConfig, SharedConfigDelta};
use crate::pb;

impl From<&SharedConfig> for pb::SharedConfig {
    fn from(config: &SharedConfig) -> Self {
        Self {
            version: config.version,
            http_routes: encode_all(&config.http_routes),
            certificates: encode_all(&config.certificates),
        }
    }
}

impl TryFrom<pb::SharedConfig> for SharedConfig {
    type Error = ConvertError;

    fn try_from(config: pb::SharedConfig) -> Result<Self, ConvertError> {
        Ok(Self {
            version: config.version,
            http_routes: each(config.http_routes, "http_routes")?,
            certificates: each(config.certificates, "certificates")?,
        })
    }
}

impl From<&SharedConfigDelta> for pb::SharedConfigDelta {
    fn from(delta: &SharedConfigDelta) -> Self {
        Self {
            base_version: delta.base_version,
            version: delta.version,
            http_routes: encode_all(&delta.http_routes),
            removed_http_routes: encode_all(&delta.removed_http_routes),
            certificates: encode_all(&delta.certificates),
            removed_certificates: encode_all(&delta.removed_certificates),
        }
    }
}

impl TryFrom<pb::SharedConfigDelta> for SharedConfigDelta {
    type Error = ConvertError;

    fn try_from(delta: pb::SharedConfigDelta) -> Result<Self, ConvertError> {
        Ok(Self {
            base_version: delta.base_version,
            version: delta.version,
            http_routes: each(delta.http_routes, "http_routes")?,
            removed_http_routes: each(delta.removed_http_routes, "removed_http_routes")?,
            certificates: each(delta.certificates, "certificates")?,
            removed_certificates: each(delta.removed_certificates, "removed_certificates")?,
        })
    }
}
