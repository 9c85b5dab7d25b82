//! Clusters, health reports and health verdicts on the wire.

use super::net::{ip, optional_port, optional_socket_addr};
use super::{
    Context, ConvertError, ConvertErrorKind, each, each_with, encode_all, enumeration, message,
};
use crate::model::{
    CertificateUse, Cluster, ClusterHealth, ClusterName, ConditionState, GatewayProbe,
    GatewayRejection, HealthReport, HealthVerdict, HostnameHealth, Region, RouteParentConditions,
    SharedObjectsStatus, SharedRouteStatus, SharedStatusBasis, StatusCondition,
};
use crate::pb;

// === impl Cluster ===

impl From<&Cluster> for pb::Cluster {
    fn from(cluster: &Cluster) -> Self {
        Self {
            name: cluster.name.to_string(),
            region: cluster.region.to_string(),
            addresses: cluster.addresses.iter().map(ToString::to_string).collect(),
            drained: cluster.drained,
        }
    }
}

impl TryFrom<pb::Cluster> for Cluster {
    type Error = ConvertError;

    fn try_from(cluster: pb::Cluster) -> Result<Self, ConvertError> {
        Ok(Self {
            name: ClusterName::new(cluster.name).field("name")?,
            region: Region::new(cluster.region).field("region")?,
            addresses: each_with(cluster.addresses, "addresses", ip)?,
            drained: cluster.drained,
        })
    }
}

// === impl HealthVerdict ===

impl From<HealthVerdict> for pb::HealthVerdict {
    fn from(verdict: HealthVerdict) -> Self {
        match verdict {
            HealthVerdict::Unknown => Self::Unknown,
            HealthVerdict::Healthy => Self::Healthy,
            HealthVerdict::Unhealthy => Self::Unhealthy,
        }
    }
}

impl From<pb::HealthVerdict> for HealthVerdict {
    fn from(verdict: pb::HealthVerdict) -> Self {
        match verdict {
            pb::HealthVerdict::Unknown => Self::Unknown,
            pb::HealthVerdict::Healthy => Self::Healthy,
            pb::HealthVerdict::Unhealthy => Self::Unhealthy,
        }
    }
}

// === impl ClusterHealth ===

impl From<&ClusterHealth> for pb::ClusterHealth {
    fn from(health: &ClusterHealth) -> Self {
        Self {
            verdict: pb::HealthVerdict::from(health.verdict).into(),
            reason: health.reason.clone(),
            since_unix_ms: health.since_unix_ms,
        }
    }
}

impl TryFrom<pb::ClusterHealth> for ClusterHealth {
    type Error = ConvertError;

    fn try_from(health: pb::ClusterHealth) -> Result<Self, ConvertError> {
        Ok(Self {
            verdict: enumeration::<pb::HealthVerdict>(health.verdict, "verdict")?.into(),
            reason: health.reason,
            since_unix_ms: health.since_unix_ms,
        })
    }
}

// === impl HealthReport ===

impl From<&HealthReport> for pb::HealthReport {
    fn from(report: &HealthReport) -> Self {
        Self {
            cluster: report.cluster.to_string(),
            seq: report.seq,
            gateways: encode_all(&report.gateways),
            hostnames: encode_all(&report.hostnames),
            shared: report
                .shared
                .as_ref()
                .filter(|_| matches!(report.shared_basis, SharedStatusBasis::Whole { .. }))
                .map(Into::into),
            shared_id: match report.shared_basis {
                SharedStatusBasis::Whole { id } => id,
                SharedStatusBasis::Delta { .. } => 0,
            },
            shared_base: match report.shared_basis {
                SharedStatusBasis::Whole { .. } => 0,
                SharedStatusBasis::Delta { base, .. } => base,
            },
            shared_removed: match &report.shared_basis {
                SharedStatusBasis::Whole { .. } => Vec::new(),
                SharedStatusBasis::Delta { removed, .. } => encode_all(removed),
            },
            shared_delta: report
                .shared
                .as_ref()
                .filter(|_| matches!(report.shared_basis, SharedStatusBasis::Delta { .. }))
                .map(Into::into),
        }
    }
}

/// The wire fields of a report's shared status, taken out of it (`shared`, `shared_id`,
/// `shared_base`, `shared_removed`, `shared_delta`), so a hub can decode them apart from the
/// readiness data.
#[derive(Debug, Default)]
pub struct SharedStatusFields {
    whole: Option<pb::SharedObjectsStatus>,
    id: u64,
    base: u64,
    removed: Vec<pb::ObjectKey>,
    delta: Option<pb::SharedObjectsStatus>,
}

impl SharedStatusFields {
    /// Moves the shared status fields out of `report`.
    pub fn take(report: &mut pb::HealthReport) -> Self {
        Self {
            whole: report.shared.take(),
            id: std::mem::take(&mut report.shared_id),
            base: std::mem::take(&mut report.shared_base),
            removed: std::mem::take(&mut report.shared_removed),
            delta: report.shared_delta.take(),
        }
    }

    /// The status and what it is relative to (`None`: the report carries none).
    pub fn decode(self) -> Result<Option<(SharedObjectsStatus, SharedStatusBasis)>, ConvertError> {
        match (self.whole, self.delta) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConvertError::new(ConvertErrorKind::Constraint(
                "both a whole status and a delta",
            ))
            .in_field("shared_delta")),
            (Some(whole), None) => {
                if self.base != 0 || !self.removed.is_empty() {
                    return Err(ConvertError::new(ConvertErrorKind::Constraint(
                        "a base or removed routes with a whole status",
                    ))
                    .in_field("shared_base"));
                }
                let status = SharedObjectsStatus::try_from(whole).field("shared")?;
                Ok(Some((status, SharedStatusBasis::Whole { id: self.id })))
            }
            (None, Some(delta)) => {
                if self.base == 0 {
                    return Err(ConvertError::new(ConvertErrorKind::Constraint(
                        "a delta needs a base",
                    ))
                    .in_field("shared_base"));
                }
                at_most(
                    &self.removed,
                    MAX_REMOVED_ROUTES,
                    "more than 65536 removed routes",
                )
                .field("shared_removed")?;
                let status = SharedObjectsStatus::try_from(delta).field("shared_delta")?;
                let removed = each(self.removed, "shared_removed")?;
                Ok(Some((
                    status,
                    SharedStatusBasis::Delta {
                        base: self.base,
                        removed,
                    },
                )))
            }
        }
    }
}

impl TryFrom<pb::HealthReport> for HealthReport {
    type Error = ConvertError;

    fn try_from(mut report: pb::HealthReport) -> Result<Self, ConvertError> {
        let (shared, shared_basis) = match SharedStatusFields::take(&mut report).decode()? {
            Some((status, basis)) => (Some(status), basis),
            None => (None, SharedStatusBasis::default()),
        };
        Ok(Self {
            cluster: ClusterName::new(report.cluster).field("cluster")?,
            seq: report.seq,
            gateways: each(report.gateways, "gateways")?,
            hostnames: each(report.hostnames, "hostnames")?,
            shared,
            shared_basis,
        })
    }
}

// === impl GatewayProbe ===

impl From<&GatewayProbe> for pb::GatewayProbe {
    fn from(probe: &GatewayProbe) -> Self {
        Self {
            name: probe.name.clone(),
            address: probe.address.map(|a| a.to_string()).unwrap_or_default(),
            ready: probe.ready,
            detail: probe.detail.clone(),
        }
    }
}

impl TryFrom<pb::GatewayProbe> for GatewayProbe {
    type Error = ConvertError;

    fn try_from(probe: pb::GatewayProbe) -> Result<Self, ConvertError> {
        Ok(Self {
            name: probe.name,
            address: optional_socket_addr(probe.address).field("address")?,
            ready: probe.ready,
            detail: probe.detail,
        })
    }
}

// === impl HostnameHealth ===

impl From<&HostnameHealth> for pb::HostnameHealth {
    fn from(health: &HostnameHealth) -> Self {
        Self {
            hostname: health.hostname.clone(),
            ready_endpoints: health.ready_endpoints,
            total_endpoints: health.total_endpoints,
            detail: health.detail.clone(),
        }
    }
}

impl TryFrom<pb::HostnameHealth> for HostnameHealth {
    type Error = ConvertError;

    fn try_from(health: pb::HostnameHealth) -> Result<Self, ConvertError> {
        Ok(Self {
            hostname: health.hostname,
            ready_endpoints: health.ready_endpoints,
            total_endpoints: health.total_endpoints,
            detail: health.detail,
        })
    }
}

// === impl SharedObjectsStatus ===

impl From<&SharedObjectsStatus> for pb::SharedObjectsStatus {
    fn from(status: &SharedObjectsStatus) -> Self {
        Self {
            shared_version: status.shared_version,
            routes: encode_all(&status.routes),
            certificates: encode_all(&status.certificates),
            rejected: encode_all(&status.rejected),
        }
    }
}

/// Bounds on what one cluster's report may hold, so a buggy or hostile agent cannot bloat the
/// hub's replicated state: the Gateway API allows 32 parentRefs per route, a route condition
/// list has 3 types, Kubernetes condition reasons are short.
const MAX_PARENTS: usize = 32;
const MAX_CONDITIONS: usize = 8;
const MAX_CONDITION_TYPE: usize = 64;
const MAX_REASON: usize = 128;
const MAX_MESSAGE: usize = 1024;
const MAX_CERTIFICATE_USES: usize = 4096;
/// More than any cluster programs; a delta removing more is sent whole anyway.
const MAX_REMOVED_ROUTES: usize = 65536;

fn at_most<T>(items: &[T], max: usize, why: &'static str) -> Result<(), ConvertError> {
    if items.len() > max {
        return Err(ConvertError::new(ConvertErrorKind::Constraint(why)));
    }
    Ok(())
}

fn short(text: &str, max: usize, why: &'static str) -> Result<(), ConvertError> {
    if text.len() > max {
        return Err(ConvertError::new(ConvertErrorKind::Constraint(why)));
    }
    Ok(())
}

impl TryFrom<pb::SharedObjectsStatus> for SharedObjectsStatus {
    type Error = ConvertError;

    fn try_from(status: pb::SharedObjectsStatus) -> Result<Self, ConvertError> {
        at_most(
            &status.certificates,
            MAX_CERTIFICATE_USES,
            "more than 4096 certificate uses",
        )
        .field("certificates")?;
        at_most(
            &status.rejected,
            MAX_CERTIFICATE_USES,
            "more than 4096 Gateways",
        )
        .field("rejected")?;
        Ok(Self {
            shared_version: status.shared_version,
            routes: each(status.routes, "routes")?,
            certificates: each(status.certificates, "certificates")?,
            rejected: each(status.rejected, "rejected")?,
        })
    }
}

// === impl GatewayRejection ===

impl From<&GatewayRejection> for pb::GatewayRejection {
    fn from(rejection: &GatewayRejection) -> Self {
        Self {
            gateway: Some((&rejection.gateway).into()),
            error: rejection.error.clone(),
        }
    }
}

impl TryFrom<pb::GatewayRejection> for GatewayRejection {
    type Error = ConvertError;

    fn try_from(rejection: pb::GatewayRejection) -> Result<Self, ConvertError> {
        short(&rejection.error, MAX_MESSAGE, "longer than 1024 bytes").field("error")?;
        Ok(Self {
            gateway: message(rejection.gateway, "gateway")?,
            error: rejection.error,
        })
    }
}

// === impl CertificateUse ===

impl From<&CertificateUse> for pb::CertificateUse {
    fn from(usage: &CertificateUse) -> Self {
        Self {
            certificate: Some((&usage.certificate).into()),
            gateway: Some((&usage.gateway).into()),
            listener: usage.listener.clone(),
        }
    }
}

impl TryFrom<pb::CertificateUse> for CertificateUse {
    type Error = ConvertError;

    fn try_from(usage: pb::CertificateUse) -> Result<Self, ConvertError> {
        short(&usage.listener, 253, "longer than 253 bytes").field("listener")?;
        Ok(Self {
            certificate: message(usage.certificate, "certificate")?,
            gateway: message(usage.gateway, "gateway")?,
            listener: usage.listener,
        })
    }
}

// === impl SharedRouteStatus ===

impl From<&SharedRouteStatus> for pb::SharedRouteStatus {
    fn from(status: &SharedRouteStatus) -> Self {
        Self {
            route: Some((&status.route).into()),
            parents: encode_all(&status.parents),
        }
    }
}

impl TryFrom<pb::SharedRouteStatus> for SharedRouteStatus {
    type Error = ConvertError;

    fn try_from(status: pb::SharedRouteStatus) -> Result<Self, ConvertError> {
        at_most(&status.parents, MAX_PARENTS, "more than 32 parents").field("parents")?;
        Ok(Self {
            route: message(status.route, "route")?,
            parents: each(status.parents, "parents")?,
        })
    }
}

// === impl RouteParentConditions ===

impl From<&RouteParentConditions> for pb::RouteParentConditions {
    fn from(parent: &RouteParentConditions) -> Self {
        Self {
            gateway: Some((&parent.gateway).into()),
            section_name: parent.section_name.clone(),
            port: parent.port.map(u32::from),
            conditions: encode_all(&parent.conditions),
        }
    }
}

impl TryFrom<pb::RouteParentConditions> for RouteParentConditions {
    type Error = ConvertError;

    fn try_from(parent: pb::RouteParentConditions) -> Result<Self, ConvertError> {
        at_most(&parent.conditions, MAX_CONDITIONS, "more than 8 conditions")
            .field("conditions")?;
        if let Some(section) = &parent.section_name {
            short(section, 253, "longer than 253 bytes").field("section_name")?;
        }
        Ok(Self {
            gateway: message(parent.gateway, "gateway")?,
            section_name: parent.section_name,
            port: optional_port(parent.port).field("port")?,
            conditions: each(parent.conditions, "conditions")?,
        })
    }
}

// === impl StatusCondition ===

impl From<&StatusCondition> for pb::StatusCondition {
    fn from(condition: &StatusCondition) -> Self {
        Self {
            r#type: condition.type_.clone(),
            status: pb::ConditionState::from(condition.status).into(),
            reason: condition.reason.clone(),
            message: condition.message.clone(),
        }
    }
}

impl TryFrom<pb::StatusCondition> for StatusCondition {
    type Error = ConvertError;

    fn try_from(condition: pb::StatusCondition) -> Result<Self, ConvertError> {
        short(
            &condition.r#type,
            MAX_CONDITION_TYPE,
            "longer than 64 bytes",
        )
        .field("type")?;
        short(&condition.reason, MAX_REASON, "longer than 128 bytes").field("reason")?;
        short(&condition.message, MAX_MESSAGE, "longer than 1024 bytes").field("message")?;
        Ok(Self {
            type_: condition.r#type,
            status: enumeration::<pb::ConditionState>(condition.status, "status")?.into(),
            reason: condition.reason,
            message: condition.message,
        })
    }
}

// === impl ConditionState ===

impl From<ConditionState> for pb::ConditionState {
    fn from(state: ConditionState) -> Self {
        match state {
            ConditionState::True => Self::True,
            ConditionState::False => Self::False,
            ConditionState::Unknown => Self::Unknown,
        }
    }
}

impl From<pb::ConditionState> for ConditionState {
    fn from(state: pb::ConditionState) -> Self {
        match state {
            pb::ConditionState::True => Self::True,
            pb::ConditionState::False => Self::False,
            pb::ConditionState::Unknown => Self::Unknown,
        }
    }
}
