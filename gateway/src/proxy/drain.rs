//! The drain signal of a port's connections, in two stages: first they are asked to finish
//! (HTTP connections stop taking requests once the ones in flight are answered; raw TLSRoute
//! and WebSocket streams, which have no graceful way to finish, close), then, once the drain
//! timeout has passed, the HTTP connections still open are closed with whatever they still
//! carry, and their cut requests are logged with `outcome="drain_timeout"`.
//!
//! A port drains when it is removed from the config or its addresses change, when the
//! gateway shuts down, and when its connections are rotated (its client certificate
//! validation changed).

use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

/// How far a drain has got; the stages only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Serving as usual.
    Serving,
    /// Connections are asked to finish.
    Draining,
    /// The drain timeout passed: connections still open close now.
    Closing,
}

/// How long connections have to close once told to, before a drain stops waiting for them
/// (each only needs to be polled once).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sends the stages to a group of connections.
pub(crate) type DrainSender = watch::Sender<Stage>;

/// What one connection watches.
pub(crate) type DrainReceiver = watch::Receiver<Stage>;

/// A signal for a new group of connections, at [`Stage::Serving`].
pub(crate) fn signal() -> DrainSender {
    watch::channel(Stage::Serving).0
}

/// Resolves once the drain reached `stage`, or once its sender is gone (the connections'
/// port is gone: they close then too).
pub(crate) async fn reached(mut drain: DrainReceiver, stage: Stage) {
    let _ = drain.wait_for(|now| *now >= stage).await;
}

/// `work`'s output, or `None` if the drain starts first: a connection that has not sent a
/// request yet (waiting for its first byte, or in its TLS handshake) has nothing to finish.
pub(crate) async fn unless_draining<F: Future>(
    drain: &DrainReceiver,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        output = work => Some(output),
        () = reached(drain.clone(), Stage::Draining) => None,
    }
}

/// Drains the connections that watch `drain`: asks them to finish and waits for them at most
/// `timeout`, then closes those still open and waits (briefly) until they have.
pub(crate) async fn run(drain: &DrainSender, timeout: Duration, port: u16) {
    drain.send_replace(Stage::Draining);
    if tokio::time::timeout(timeout, drain.closed()).await.is_ok() {
        return;
    }
    // Each open connection holds a few receivers (its serving task, its requests' bodies), so
    // this counts receivers, not connections: zero means none is left.
    let watchers = drain.receiver_count();
    warn!(
        port,
        watchers, "drain timed out; closing the connections still open"
    );
    drain.send_replace(Stage::Closing);
    if tokio::time::timeout(CLOSE_GRACE, drain.closed())
        .await
        .is_err()
    {
        warn!(
            port,
            watchers = drain.receiver_count(),
            "connections did not close after the drain timeout"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_asks_first_and_closes_at_the_timeout() {
        let drain = signal();
        let rx = drain.subscribe();
        let asked = tokio::spawn(reached(rx.clone(), Stage::Draining));
        let closed = tokio::spawn(reached(rx.clone(), Stage::Closing));
        let run = tokio::spawn(async move { run(&drain, Duration::from_secs(10), 80).await });
        asked.await.unwrap();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!closed.is_finished(), "closed before the drain timeout");
        closed.await.unwrap();
        // The drain ends once the connections are gone.
        drop(rx);
        run.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_whose_connections_finish_never_closes_them() {
        let drain = signal();
        let rx = drain.subscribe();
        let finished = tokio::spawn(async move {
            reached(rx, Stage::Draining).await;
            // The connection finished: its receiver is dropped.
        });
        run(&drain, Duration::from_secs(10), 80).await;
        finished.await.unwrap();
        assert_eq!(*drain.borrow(), Stage::Draining);
    }
}
