//! Gateway API and Kubernetes object formats for Meridian: parse YAML/JSON, validate like the
//! CRDs and their CEL rules would, translate routes to `meridian_proto::model`, attach routes to
//! a Gateway's listeners, resolve backends, certificates and ReferenceGrants into a
//! `model::gateway::GatewayConfig`, and compute the status conditions the spec names.
//!
//! **Boundary:** this is the only crate that knows the Kubernetes / Gateway API object shapes
//! ([`k8s`]). Everything it hands out is either a model type or one of its own plain types
//! ([`ObjectSet`], [`Problem`], [`status`]).
//!
//! Entry points:
//! - files: [`load_dir`] / [`load_file`] / [`parse_documents`], then [`ObjectSet::from_objects`];
//! - a cluster watcher: [`parse_value`] per object, then [`ObjectSet::from_objects`];
//! - the hub admin API: [`http_route_from_json`] and [`http_route_to_json`];
//! - the agent: [`gateways`] and [`program`] per Gateway.

pub mod k8s;
pub mod status;

mod document;
mod hostname;
mod json;
mod problem;
mod program;
mod set;
mod validate;

pub use document::{
    CheckedPolicy, Object, Rejection, Resource, Validated, parse_documents, parse_value,
};
pub use hostname::{hostname_matches, intersect_hostnames};
pub use json::{http_route_from_json, http_route_to_json};
pub use problem::{Origin, Problem};
pub use program::{CONTROLLER_NAME, Programmed, gateway_class_conditions, gateways, program};
pub use set::{ObjectSet, config_files, load_dir, load_file};
