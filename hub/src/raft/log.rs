//! The bridge from raft-rs' `slog` logging to `tracing` (target `raft`).
//!
//! raft-rs logs elections, role changes and configuration switches at info level; they become
//! `tracing` events with the slog key-value pairs rendered into one `kv` field.

use std::fmt::{self, Write as _};

use slog::{Drain, KV, Level, OwnedKVList, Record};

/// A root logger for one raft node whose records go to `tracing`.
pub(crate) fn logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node_id))
}

/// A `slog` drain that re-emits every record as a `tracing` event.
struct TracingDrain;

/// Renders slog key-value pairs as `key=value` separated by spaces.
struct KvRenderer(String);

// === impl TracingDrain ===

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            Level::Critical | Level::Error => tracing::Level::ERROR,
            Level::Warning => tracing::Level::WARN,
            Level::Info => tracing::Level::INFO,
            Level::Debug => tracing::Level::DEBUG,
            Level::Trace => tracing::Level::TRACE,
        };
        // Formatting costs more than the check; skip records nobody listens to.
        let enabled = match level {
            tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
            tracing::Level::INFO => tracing::enabled!(target: "raft", tracing::Level::INFO),
            tracing::Level::DEBUG => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            _ => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvRenderer(String::new());
        // Rendering into a String cannot fail; a failing value just ends the list early.
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let message = record.msg();
        let kv = kv.0;
        match level {
            tracing::Level::ERROR => tracing::error!(target: "raft", kv = %kv, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "raft", kv = %kv, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "raft", kv = %kv, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "raft", kv = %kv, "{message}"),
            _ => tracing::trace!(target: "raft", kv = %kv, "{message}"),
        }
        Ok(())
    }
}

// === impl KvRenderer ===

impl slog::Serializer for KvRenderer {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{key}={val}");
        Ok(())
    }
}
