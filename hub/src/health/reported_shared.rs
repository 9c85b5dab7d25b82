//! [`ReportedShared`]: a cluster's shared objects' status as its agent last reported it,
//! rebuilt from a whole status and the latest delta against it.
//!
//! Agents send the whole status rarely (when a session starts, when a hub node sees a new
//! leader, and every 30 s; each in three reports) and in between only the routes changed since
//! that whole one (`SharedStatusBasis::Delta`), cumulatively: the latest delta replaces the
//! previous one, so a dropped report loses nothing.

use std::collections::BTreeSet;

use meridian_proto::model::{
    CertificateUse, GatewayRejection, ObjectKey, SharedObjectsStatus, SharedRouteStatus,
    SharedStatusBasis,
};

/// A whole status, numbered, and the latest delta the same agent process sent against it.
#[derive(Debug)]
pub(super) struct ReportedShared {
    /// The whole status's number (0: the agent does not number them, and sends no deltas).
    id: u64,
    whole: SharedObjectsStatus,
    delta: Option<Delta>,
}

#[derive(Debug)]
struct Delta {
    /// The version, certificates and rejections (whole), and the routes added or changed.
    status: SharedObjectsStatus,
    changed: BTreeSet<ObjectKey>,
    removed: BTreeSet<ObjectKey>,
}

/// What became of a report's shared status.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Merged {
    /// It is now the cluster's reported status.
    Yes,
    /// A delta against a whole status this node does not hold (it became leader after the
    /// agent sent it, or the report carrying it was lost): ignored until the next whole one.
    UnknownBase,
}

impl ReportedShared {
    /// Takes a report's shared status into `reported`, the cluster's current one (same agent
    /// process).
    pub(super) fn merge(
        reported: &mut Option<ReportedShared>,
        status: &SharedObjectsStatus,
        basis: &SharedStatusBasis,
    ) -> Merged {
        match basis {
            SharedStatusBasis::Whole { id } => {
                // The same whole status again (agents send each in three reports): nothing to
                // copy; at 10,000 routes a copy is megabytes.
                if *id != 0 && reported.as_ref().is_some_and(|r| r.id == *id) {
                    return Merged::Yes;
                }
                *reported = Some(ReportedShared {
                    id: *id,
                    whole: status.clone(),
                    delta: None,
                });
                Merged::Yes
            }
            SharedStatusBasis::Delta { base, removed } => {
                let Some(current) = reported.as_mut().filter(|r| r.id != 0 && r.id == *base) else {
                    return Merged::UnknownBase;
                };
                current.delta = Some(Delta {
                    changed: status.routes.iter().map(|r| r.route.clone()).collect(),
                    removed: removed.iter().cloned().collect(),
                    status: status.clone(),
                });
                Merged::Yes
            }
        }
    }

    /// The latest part that carries the version, certificates and rejections.
    fn head(&self) -> &SharedObjectsStatus {
        self.delta
            .as_ref()
            .map_or(&self.whole, |delta| &delta.status)
    }

    /// The shared config version the cluster programmed.
    pub(super) fn shared_version(&self) -> u64 {
        self.head().shared_version
    }

    /// Each listener serving a shared certificate.
    pub(super) fn certificates(&self) -> &[CertificateUse] {
        &self.head().certificates
    }

    /// The Gateways whose config an instance rejected.
    pub(super) fn rejected(&self) -> &[GatewayRejection] {
        &self.head().rejected
    }

    /// Every route as of the latest delta: the whole status's routes that it neither changed
    /// nor removed, then the ones it added or changed.
    pub(super) fn routes(&self) -> impl Iterator<Item = &SharedRouteStatus> {
        let delta = self.delta.as_ref();
        let kept = self.whole.routes.iter().filter(move |route| {
            delta.is_none_or(|d| {
                !d.changed.contains(&route.route) && !d.removed.contains(&route.route)
            })
        });
        kept.chain(delta.into_iter().flat_map(|d| d.status.routes.iter()))
    }

    /// The routes as a map, for tests.
    #[cfg(test)]
    pub(super) fn route_map(&self) -> std::collections::BTreeMap<&ObjectKey, &SharedRouteStatus> {
        self.routes().map(|route| (&route.route, route)).collect()
    }
}

#[cfg(test)]
mod tests {
    use meridian_proto::model::RouteParentConditions;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("demo", name).unwrap()
    }

    fn route(name: &str, parents: usize) -> SharedRouteStatus {
        SharedRouteStatus {
            route: key(name),
            parents: vec![
                RouteParentConditions {
                    gateway: key("edge"),
                    section_name: None,
                    port: None,
                    conditions: Vec::new(),
                };
                parents
            ],
        }
    }

    fn status(version: u64, routes: Vec<SharedRouteStatus>) -> SharedObjectsStatus {
        SharedObjectsStatus {
            shared_version: version,
            routes,
            ..Default::default()
        }
    }

    #[test]
    fn deltas_replace_each_other_on_top_of_the_whole_status() {
        let mut reported = None;
        let whole = status(1, vec![route("a", 1), route("b", 1), route("c", 1)]);
        let merged =
            ReportedShared::merge(&mut reported, &whole, &SharedStatusBasis::Whole { id: 5 });
        assert_eq!(merged, Merged::Yes);

        // b changed, d added, c removed.
        let delta_without_c = |version: u64, routes: Vec<SharedRouteStatus>| {
            (
                status(version, routes),
                SharedStatusBasis::Delta {
                    base: 5,
                    removed: vec![key("c")],
                },
            )
        };
        let (delta, basis) = delta_without_c(2, vec![route("b", 2), route("d", 0)]);
        assert_eq!(
            ReportedShared::merge(&mut reported, &delta, &basis),
            Merged::Yes
        );
        let current = reported.as_ref().unwrap();
        assert_eq!(current.shared_version(), 2);
        let routes = current.route_map();
        let names: Vec<&str> = routes.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"]);
        assert_eq!(routes[&key("b")].parents.len(), 2);

        // The next delta is cumulative: b is back as it was, c still gone.
        let (delta, basis) = delta_without_c(3, vec![route("d", 0)]);
        assert_eq!(
            ReportedShared::merge(&mut reported, &delta, &basis),
            Merged::Yes
        );
        let current = reported.as_ref().unwrap();
        let routes = current.route_map();
        assert_eq!(routes[&key("b")].parents.len(), 1);
        assert_eq!(routes.len(), 3);
    }

    #[test]
    fn a_delta_against_another_whole_status_is_ignored() {
        let mut reported = None;
        let delta = status(2, vec![route("b", 2)]);
        let basis = SharedStatusBasis::Delta {
            base: 5,
            removed: Vec::new(),
        };
        assert_eq!(
            ReportedShared::merge(&mut reported, &delta, &basis),
            Merged::UnknownBase,
            "a new leader that holds no whole status"
        );
        assert!(reported.is_none());

        let whole = status(1, vec![route("a", 1)]);
        ReportedShared::merge(&mut reported, &whole, &SharedStatusBasis::Whole { id: 6 });
        assert_eq!(
            ReportedShared::merge(&mut reported, &delta, &basis),
            Merged::UnknownBase
        );
        assert_eq!(reported.as_ref().unwrap().shared_version(), 1, "kept");

        // An agent that does not number its whole statuses sends no deltas either.
        ReportedShared::merge(&mut reported, &whole, &SharedStatusBasis::Whole { id: 0 });
        let basis = SharedStatusBasis::Delta {
            base: 0,
            removed: Vec::new(),
        };
        assert_eq!(
            ReportedShared::merge(&mut reported, &delta, &basis),
            Merged::UnknownBase
        );
    }
}
