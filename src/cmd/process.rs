//! What every long-running subcommand does the same way: ready files and stop signals.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing::warn;

/// Writes `contents` to `path` through a temporary file in the same directory and a rename, so
/// a reader (`meridian dev`, the tests, a probe script) sees either nothing or the whole file.
pub fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp.{}", std::process::id()));
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, contents).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Writes a ready file: `value` as one line of JSON, atomically.
pub fn write_ready_file(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    write_atomically(path, &value.to_string())
        .with_context(|| format!("writing the ready file {}", path.display()))
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (as Go programs and nginx's
/// `worker_rlimit_nofile` do): the soft default (often 1,024) would cap a gateway at a few
/// hundred connections, and the gateway's connection cap and the hub's DNS TCP cap are
/// derived from it.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one for open files (the kernel caps it at
    // `nr_open`); leave it then.
    let Some(hard) = limit.maximum else {
        return;
    };
    if limit.current.is_some_and(|soft| soft < hard) {
        limit.current = Some(hard);
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            warn!(%error, hard, "could not raise the open-file limit to its hard limit");
        }
    }
}
