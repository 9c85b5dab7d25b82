//! Polling for a condition with a deadline (tests never sleep to synchronise).

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Ok(value)` or `timeout` passes; then panics with
/// `what` and the last error.
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(error) => {
                if start.elapsed() > timeout {
                    panic!("timed out after {timeout:?} waiting for {what}: {error}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`] but returns how long it took, for tests that also report latency.
pub async fn time_until<T, E, F, Fut>(what: &str, timeout: Duration, check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let value = eventually(what, timeout, check).await;
    (value, start.elapsed())
}
