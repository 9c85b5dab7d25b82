//! Hostname DNS policies on the wire.

use super::{
    Context, ConvertError, ConvertErrorKind, each, each_with, encode_all, enumeration, message,
};
use crate::model::{
    AllUnhealthy, ClusterName, Fqdn, HostnamePolicy, HostnameTarget, Region, Routing,
};
use crate::pb;

// === impl HostnamePolicy ===

impl From<&HostnamePolicy> for pb::HostnamePolicy {
    fn from(policy: &HostnamePolicy) -> Self {
        Self {
            fqdn: policy.fqdn.to_string(),
            ttl: policy.ttl,
            targets: encode_all(&policy.targets),
            routing: Some((&policy.routing).into()),
        }
    }
}

impl TryFrom<pb::HostnamePolicy> for HostnamePolicy {
    type Error = ConvertError;

    fn try_from(policy: pb::HostnamePolicy) -> Result<Self, ConvertError> {
        Ok(Self {
            fqdn: Fqdn::new(&policy.fqdn).field("fqdn")?,
            ttl: policy.ttl,
            targets: each(policy.targets, "targets")?,
            // Required: the model's defaults (geo on, one answer) differ from proto3's zero
            // values, so an absent message cannot be read as "default routing".
            routing: message(policy.routing, "routing")?,
        })
    }
}

// === impl HostnameTarget ===

impl From<&HostnameTarget> for pb::HostnameTarget {
    fn from(target: &HostnameTarget) -> Self {
        Self {
            cluster: target.cluster.to_string(),
            weight: target.weight,
        }
    }
}

impl TryFrom<pb::HostnameTarget> for HostnameTarget {
    type Error = ConvertError;

    fn try_from(target: pb::HostnameTarget) -> Result<Self, ConvertError> {
        Ok(Self {
            cluster: ClusterName::new(target.cluster).field("cluster")?,
            weight: target.weight,
        })
    }
}

// === impl AllUnhealthy ===

impl From<AllUnhealthy> for pb::AllUnhealthy {
    fn from(value: AllUnhealthy) -> Self {
        match value {
            AllUnhealthy::FailOpen => Self::FailOpen,
            AllUnhealthy::FailClosed => Self::FailClosed,
        }
    }
}

impl From<pb::AllUnhealthy> for AllUnhealthy {
    fn from(value: pb::AllUnhealthy) -> Self {
        match value {
            pb::AllUnhealthy::FailOpen => Self::FailOpen,
            pb::AllUnhealthy::FailClosed => Self::FailClosed,
        }
    }
}

// === impl Routing ===

impl From<&Routing> for pb::Routing {
    fn from(routing: &Routing) -> Self {
        Self {
            geo: routing.geo,
            region_order: routing
                .region_order
                .iter()
                .map(ToString::to_string)
                .collect(),
            max_answers: routing.max_answers,
            when_all_unhealthy: pb::AllUnhealthy::from(routing.when_all_unhealthy).into(),
            panic_threshold_percent: routing.panic_threshold_percent.into(),
            pinned: routing
                .pinned
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::Routing> for Routing {
    type Error = ConvertError;

    fn try_from(routing: pb::Routing) -> Result<Self, ConvertError> {
        let panic_threshold_percent = u8::try_from(routing.panic_threshold_percent)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| {
                ConvertError::new(ConvertErrorKind::OutOfRange {
                    value: routing.panic_threshold_percent.into(),
                    allowed: "0..=100",
                })
                .in_field("panic_threshold_percent")
            })?;
        let pinned = if routing.pinned.is_empty() {
            None
        } else {
            Some(ClusterName::new(routing.pinned).field("pinned")?)
        };
        Ok(Self {
            geo: routing.geo,
            region_order: each_with(routing.region_order, "region_order", |r| {
                Ok(Region::new(r)?)
            })?,
            max_answers: routing.max_answers,
            when_all_unhealthy: enumeration::<pb::AllUnhealthy>(
                routing.when_all_unhealthy,
                "when_all_unhealthy",
            )?
            .into(),
            panic_threshold_percent,
            pinned,
        })
    }
}
