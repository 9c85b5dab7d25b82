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
