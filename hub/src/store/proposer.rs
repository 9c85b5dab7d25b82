//! [`Proposer`]: the write path into the state machine: stamp, encode, replicate, decode.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::command::{Action, Command, Outcome};
use super::encoding::{DecodeError, decode_outcome, encode_command};
use super::machine::StoreView;
use crate::raft::{RaftError, RaftHandle};

/// How long `submit` waits for this node's published view to include an applied command.
const VIEW_WAIT: Duration = Duration::from_secs(5);

/// Submits commands through Raft from any node (followers forward to the leader).
///
/// **Guarantee:** read-your-writes: when `submit` returns, this node's published
/// [`StoreView`] includes the command.
#[derive(Clone)]
pub struct Proposer {
    raft: RaftHandle,
    view: watch::Receiver<Arc<StoreView>>,
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
    /// A proposer over `raft`, whose state machine publishes `view`.
    pub fn new(raft: RaftHandle, view: watch::Receiver<Arc<StoreView>>) -> Self {
        Self { raft, view }
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
        let (outcome, index) = decode_outcome(&outcome)?;
        // Raft answers as soon as the entry is applied, which may be just before the state
        // machine publishes the batch's view.
        let mut view = self.view.clone();
        let published = view.wait_for(|v| v.applied_index >= index);
        if tokio::time::timeout(VIEW_WAIT, published).await.is_err() {
            tracing::warn!(
                index,
                "the applied command is not in the published view yet"
            );
        }
        Ok(outcome)
    }
}

/// The current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
