//! The hub's deterministic state machine: clusters, health verdicts, per-hostname serving
//! state, hostname policies, shared routes and certificates, DNSSEC zone keys and the audit log.
//!
//! - [`state`]: the [`State`] and the views built from it.
//! - [`command`]: [`Command`]s and their [`Outcome`]s.
//! - `apply`: [`State::apply`], the only way the state changes, and [`check_hostname`].
//! - [`certificate`]: [`check_certificate`], validation of distributed certificates.
//! - [`encoding`]: the versioned protobuf encodings of commands, outcomes and snapshots.
//! - [`machine`]: [`StoreMachine`], the `raft::StateMachine` that publishes views.
//! - [`dns_feed`]: [`DnsFeed`], which derives DNS views from them off the Raft thread.
//! - [`shared_feed`]: [`SharedFeed`], which derives what agents receive, off the Raft thread.
//!
//! **Invariant:** `State::apply` is deterministic: no clock, randomness or IO. Times come
//! inside the command, stamped by the proposer.

mod apply;
pub mod certificate;
pub mod command;
pub mod dns_feed;
pub mod encoding;
mod feed;
pub mod machine;
pub mod proposer;
pub mod shared_feed;
pub mod state;

#[cfg(test)]
mod tests;

pub use apply::{RECORD_TYPES, check_hostname, check_record_set};
pub use certificate::{CertificateInfo, certificate_info, check_certificate};
pub use command::{Action, Command, Outcome, RejectKind, Rejection, verdict_name};
pub use dns_feed::DnsFeed;
pub use machine::{Feeds, StoreMachine, StoreView, StoreWatches};
pub use proposer::{ProposeError, Proposer, unix_now_ms};
pub use shared_feed::SharedFeed;
pub use state::{
    AUDIT_CAPACITY, AuditEntry, ClusterRecord, HostnameServing, RecordSet, RouteStatusEntry,
    SharedObjectsRecord, State, ZoneKey,
};
