//! [`Proposer`]: the write path into the state machine: stamp, encode, replicate, decode.

use std::time::{SystemTime, UNIX_EPOCH};

use super::command::{Action, Command, Outcome};
use super::encoding::{DecodeError, decode_outcome, encode_command};
use crate::raft::{RaftError, RaftHandle};

/// Submits commands through Raft from any node (followers forward to the leader).
#[derive(Clone)]
pub struct Proposer {
    raft: RaftHandle,
}

/// Why a command could not be submitted (its outcome is unknown or it never reached the log).
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Raft could not commit it.
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// The outcome came back in a form this node cannot read (a newer leader).
    #[error("reading the outcome: {0}")]
    Outcome(#[from] DecodeError),
}

// === impl Proposer ===

impl Proposer {
    /// A proposer over `raft`.
    pub fn new(raft: RaftHandle) -> Self {
        Self { raft }
    }

    /// Stamps `action` with `actor` and the current time, replicates it, and returns its
    /// outcome once it is applied on this node.
    pub async fn submit(&self, actor: &str, action: Action) -> Result<Outcome, ProposeError> {
        let command = Command {
            actor: actor.to_string(),
            unix_ms: unix_now_ms(),
            action,
        };
        let outcome = self.raft.propose(encode_command(&command)).await?;
        Ok(decode_outcome(&outcome)?)
    }
}

/// The current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
