//! The hub's network APIs.
//!
//! - [`admin`]: the admin HTTP API (axum, JSON) operators and `meridian ctl` use.
//! - [`agent`]: the `Hub` gRPC service agents register with and stream to.
//! - [`peer`]: the `HubPeer` gRPC service followers pass agents' health reports to the leader with.
//!
//! **Boundary:** writes go through [`crate::store::Proposer`]; reads come from published
//! [`crate::store::StoreView`]s. No API touches the state machine directly.

pub mod admin;
pub mod agent;
pub mod peer;

/// Decodes an agent's health report, with its shared objects' status on its own: an invalid
/// status (a value a newer agent sends, more parents than any route may have) is dropped with
/// its error, and the readiness data the failover depends on is kept.
pub(crate) fn decode_report(
    mut report: meridian_proto::pb::HealthReport,
) -> Result<
    (
        meridian_proto::model::HealthReport,
        Option<meridian_proto::convert::ConvertError>,
    ),
    meridian_proto::convert::ConvertError,
> {
    let shared = meridian_proto::convert::SharedStatusFields::take(&mut report);
    let mut decoded = meridian_proto::model::HealthReport::try_from(report)?;
    let mut dropped = None;
    match shared.decode() {
        Ok(Some((status, basis))) => {
            decoded.shared = Some(status);
            decoded.shared_basis = basis;
        }
        Ok(None) => {}
        Err(err) => dropped = Some(err),
    }
    Ok((decoded, dropped))
}

#[cfg(test)]
mod tests {
    use meridian_proto::pb;

    #[test]
    fn an_invalid_shared_status_is_dropped_and_the_readiness_kept() {
        let report = pb::HealthReport {
            cluster: "eu-west".into(),
            seq: 3,
            gateways: vec![pb::GatewayProbe {
                name: "gw".into(),
                address: String::new(),
                ready: true,
                detail: String::new(),
            }],
            hostnames: vec![],
            shared: Some(pb::SharedObjectsStatus {
                shared_version: 1,
                routes: vec![pb::SharedRouteStatus {
                    route: Some(pb::ObjectKey {
                        namespace: "demo".into(),
                        name: "app".into(),
                    }),
                    parents: vec![pb::RouteParentConditions {
                        gateway: Some(pb::ObjectKey {
                            namespace: "infra".into(),
                            name: "edge".into(),
                        }),
                        section_name: None,
                        port: None,
                        // A condition state this build does not know (a newer agent).
                        conditions: vec![pb::StatusCondition {
                            r#type: "Accepted".into(),
                            status: 9,
                            reason: "Accepted".into(),
                            message: String::new(),
                        }],
                    }],
                }],
                certificates: vec![],
                rejected: vec![],
            }),
            shared_id: 1,
            ..Default::default()
        };
        let (decoded, dropped) = super::decode_report(report).unwrap();
        assert!(decoded.gateways[0].ready, "the readiness counts");
        assert_eq!(decoded.shared, None);
        let err = dropped.unwrap().to_string();
        assert!(
            err.starts_with("shared.routes[0].parents[0].conditions[0].status"),
            "{err}"
        );
    }
}
