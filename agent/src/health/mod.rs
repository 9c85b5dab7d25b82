//! Health: active probes with hysteresis ([`probe`]) and what the agent reports to the hub
//! ([`report`], and the shared routes' conditions in [`shared_status`]).

pub mod probe;
pub mod report;
pub mod shared_status;
