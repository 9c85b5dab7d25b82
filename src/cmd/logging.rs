//! Process logging: tracing to stderr, through a non-blocking, lossy writer unless stderr is a
//! regular file.
//!
//! A pipe, socket or terminal can stop being read: there, events are formatted on the thread
//! that logs them and handed to a writer thread over a bounded channel. When stderr is not
//! drained the writer thread blocks, the channel fills, and further lines are dropped and
//! counted instead of blocking the thread that logs: a request never waits for its access log
//! line. A regular file (`meridian dev`, the tests, `> file`) is written directly, one write
//! per event: a write to a file does not wait for a reader, and a line is in the file before
//! the request it describes is answered.

use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Lines held for the writer thread before new ones are dropped (about 2-4 MB of text);
/// `MERIDIAN_LOG_BUFFER_LINES` overrides it.
const BUFFERED_LINES: usize = 16 * 1024;

/// How often dropped lines are reported in the log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// How long exiting waits for the writer thread to flush what it holds.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(3);

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread alive; dropping it (at the end of `main`) flushes the lines still
/// queued, waiting at most [`FLUSH_ON_EXIT`] so that an undrained stderr cannot hold up exit.
pub struct LogGuard(Option<WorkerGuard>);

/// The count of dropped log lines as a Prometheus counter (`meridian_log_dropped_lines`).
#[derive(Debug)]
pub struct DroppedLinesMetric;

/// Installs the global tracing subscriber: filter from `MERIDIAN_LOG` (default `info`), JSON
/// when `MERIDIAN_LOG_FORMAT=json`, colours only on a terminal, at most
/// `MERIDIAN_LOG_BUFFER_LINES` lines queued.
pub fn init() -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("MERIDIAN_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only on a terminal: `meridian dev` and tests send logs to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let buffered_lines = std::env::var("MERIDIAN_LOG_BUFFER_LINES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(BUFFERED_LINES);
    let (writer, guard) = if stderr_is_file() {
        (BoxMakeWriter::new(std::io::stderr), None)
    } else {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(buffered_lines)
            .thread_name("meridian-log")
            .finish(std::io::stderr());
        let _ = DROPPED.set(writer.error_counter());
        (BoxMakeWriter::new(writer), Some(guard))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    LogGuard(guard)
}

/// Whether stderr is a regular file (not a pipe, socket, terminal or device).
fn stderr_is_file() -> bool {
    use std::os::fd::AsFd;
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|file| file.metadata())
        .is_ok_and(|meta| meta.file_type().is_file())
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}

/// Warns (at most every [`DROP_REPORT_INTERVAL`]) when log lines were dropped since the last
/// report. The warning goes through the same writer, so it too is dropped while the writer is
/// stuck; the next report after it drains gives the total.
pub async fn report_dropped_lines() {
    let mut reported = 0;
    let mut ticks = tokio::time::interval(DROP_REPORT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let dropped = dropped_lines();
        if dropped > reported {
            tracing::warn!(
                dropped = dropped - reported,
                total = dropped,
                "log lines dropped: the log output (stderr) is not read fast enough"
            );
            reported = dropped;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else {
            return;
        };
        // The guard's own drop waits for the writer thread, and prints to stdout if that
        // times out: off this thread, bounded, so an undrained pipe cannot hang exit.
        let (done, wait) = mpsc::channel();
        let flush = std::thread::Builder::new()
            .name("meridian-log-flush".into())
            .spawn(move || {
                drop(guard);
                let _ = done.send(());
            });
        if flush.is_ok() {
            let _ = wait.recv_timeout(FLUSH_ON_EXIT);
        }
    }
}

impl EncodeMetric for DroppedLinesMetric {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&dropped_lines(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
