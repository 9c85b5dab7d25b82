//! Files the agent keeps in its state directory: the last good `SharedConfig` from the hub.
//!
//! Format: `shared-config.binpb` holds one protobuf-encoded `meridian.v1.SharedConfig`, the
//! same message the hub sends. Protobuf is the versioned format here: fields are only ever
//! added, so a newer agent reads an older file and the reverse.
//!
//! Writes are atomic (temporary file in the same directory, fsync, rename, fsync of the
//! directory), so a crash mid-write leaves either the old or the new file, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_proto::model::SharedConfig;
use meridian_proto::pb;
use prost::Message;

/// The file name of the persisted SharedConfig inside the state directory.
pub const SHARED_CONFIG_FILE: &str = "shared-config.binpb";

/// Why a persisted SharedConfig could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a protobuf `SharedConfig`.
    #[error("{path}: not a protobuf SharedConfig: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// The file decodes but holds an invalid value.
    #[error("{path}: invalid SharedConfig: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is invalid, with its field path.
        source: meridian_proto::convert::ConvertError,
    },
}

/// Loads the persisted SharedConfig; `Ok(None)` when there is none yet.
pub fn load_shared_config(dir: &Path) -> Result<Option<SharedConfig>, StateError> {
    let path = dir.join(SHARED_CONFIG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let message = match pb::SharedConfig::decode(bytes.as_slice()) {
        Ok(message) => message,
        Err(source) => return Err(StateError::Decode { path, source }),
    };
    match SharedConfig::try_from(message) {
        Ok(config) => Ok(Some(config)),
        Err(source) => Err(StateError::Invalid { path, source }),
    }
}

/// Atomically replaces the persisted SharedConfig, creating the directory if needed.
pub fn store_shared_config(dir: &Path, config: &SharedConfig) -> Result<(), StateError> {
    let bytes = pb::SharedConfig::from(config).encode_to_vec();
    write_atomically(dir, SHARED_CONFIG_FILE, &bytes)
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    drop(file);
    std::fs::rename(&temporary, &target).map_err(io(&target))?;
    // The rename is durable only once the directory entry is.
    if let Ok(directory) = std::fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_shared_config(dir.path()).unwrap().is_none());

        let config = SharedConfig {
            version: 42,
            ..SharedConfig::default()
        };
        store_shared_config(dir.path(), &config).unwrap();
        assert_eq!(load_shared_config(dir.path()).unwrap(), Some(config));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SHARED_CONFIG_FILE)]);

        std::fs::write(dir.path().join(SHARED_CONFIG_FILE), b"\xff\xff\xff").unwrap();
        let error = load_shared_config(dir.path()).unwrap_err().to_string();
        assert!(error.contains(SHARED_CONFIG_FILE), "{error}");
        assert!(error.contains("not a protobuf SharedConfig"), "{error}");
    }
}
