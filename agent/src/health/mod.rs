//! Health: active probes with hysteresis ([`probe`]) and what the agent reports to the hub
//! ([`report`], and the shared routes' conditions in [`route_status`]).

pub mod probe;
pub mod report;
pub mod route_status;
