//! One `meridian dev` per state directory: an advisory lock on `dev.lock` inside it.
//!
//! A second run in the same directory would wipe the first one's hub data and overwrite its
//! `dev.json`, so it must refuse before it touches anything. The lock is `flock(LOCK_EX |
//! LOCK_NB)` (std's `File::try_lock`) on a file that is never removed: the kernel releases it
//! when the holder's file descriptor closes, which happens however the process ends (Ctrl-C,
//! `kill -9`, a crash), so a dead run never leaves a stale lock behind. Children do not inherit
//! it: std opens files close-on-exec.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};

/// The lock file's name inside the state directory; the wipe at start keeps it.
pub const LOCK_FILE: &str = "dev.lock";

/// The held lock on a state directory. Keep it for the life of the run: dropping it (or the
/// process ending) releases it.
#[derive(Debug)]
pub struct StateDirLock {
    _file: File,
}

/// Locks `dir` (created if missing) for this process, and writes this process's pid into the
/// lock file so another run can name it.
///
/// Fails at once, without changing anything in `dir`, when another process holds the lock:
/// "meridian dev is already running in DIR (pid N); stop it first".
pub fn lock_state_dir(dir: &Path) -> anyhow::Result<StateDirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create the state directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    // No truncate: opening must not change a file another run holds.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            // The holder writes its pid right after locking; it can be missing for that instant.
            let mut text = String::new();
            let holder = match file.read_to_string(&mut text) {
                Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
                _ => "pid unknown".to_string(),
            };
            bail!(
                "meridian dev is already running in {} ({holder}); stop it first",
                shown.display()
            );
        }
        Err(TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("lock {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(StateDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_fails_naming_the_holder_and_changes_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("state");
        let first = lock_state_dir(&dir).unwrap();
        std::fs::write(dir.join("dev.json"), "{\"first\": true}").unwrap();
        let lock_before = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(lock_before.trim(), std::process::id().to_string());

        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just as another process's would.
        let error = lock_state_dir(&dir).unwrap_err().to_string();
        let canonical = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(
            error,
            format!(
                "meridian dev is already running in {} (pid {}); stop it first",
                canonical.display(),
                std::process::id()
            )
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("dev.json")).unwrap(),
            "{\"first\": true}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap(),
            lock_before
        );

        // Released with its holder: the next run gets it.
        drop(first);
        let _again = lock_state_dir(&dir).unwrap();
    }
}
