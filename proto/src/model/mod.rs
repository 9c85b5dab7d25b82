//! The domain model: plain Rust types with no IO, no async runtime and no wire format.
//!
//! **Invariant:** values of these types are valid by construction where a constructor exists
//! (`ClusterName::new`, `Fqdn::new`, ...). Wire conversions (`crate::convert`) and the Gateway
//! API parser (`meridian-gwapi`) are the only places strings become model values.

pub mod cluster;
pub mod dns;
pub mod gateway;
pub mod names;
pub mod route;
pub mod shared;

pub use cluster::{
    CertificateUse, Cluster, ClusterHealth, ConditionState, GatewayProbe, GatewayRejection,
    HealthReport, HealthVerdict, HostnameHealth, RouteParentConditions, SharedObjectsStatus,
    SharedRouteStatus, SharedStatusBasis, StatusCondition,
};
pub use dns::{AllUnhealthy, DnsRecord, HostnamePolicy, HostnameTarget, RecordData, Routing};
pub use names::{ClusterName, Fqdn, ObjectKey, Region};
pub use shared::{BaseMismatch, SharedConfig, SharedConfigDelta};

/// A value that does not satisfy the model's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct ModelError {
    /// What kind of value (`"cluster name"`, `"domain name"`).
    pub what: &'static str,
    /// The offending input.
    pub value: String,
    /// Why it is invalid.
    pub why: String,
}

impl ModelError {
    /// Builds an error for `value`.
    pub fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> Self {
        Self {
            what,
            value: value.to_string(),
            why: why.into(),
        }
    }
}
