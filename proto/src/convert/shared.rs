//! The shared config snapshot (hub → agents) on the wire.

use super::{ConvertError, each, encode_all};
use crate::model::SharedConfig;
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
