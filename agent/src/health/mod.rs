//! Health: active probes with hysteresis ([`probe`]) and what the agent reports to the hub
//! ([`report`]).

pub mod probe;
pub mod report;
