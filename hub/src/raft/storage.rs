//! Durable Raft storage on redb: log entries, hard state, the latest snapshot (metadata and data)
//! and the compaction point; implements `raft::Storage`.
//!
//! **Invariant:** every change the Ready loop makes is one redb write transaction (fsync'd with
//! `Durability::Immediate` whenever raft says the Ready must be synced), and the in-memory mirror
//! is updated only after that transaction committed. The log tail since the compaction point is
//! mirrored in memory, so `raft::Storage` reads never touch the disk (except the snapshot data).
//!
//! Layout (format version 3):
//! - table `raft_log`: index → encoded `eraftpb::Entry`, for indexes `compacted + 1 ..= last`.
//! - table `raft_meta`: `hard_state` (encoded `HardState`), `snapshot_meta` (encoded
//!   `SnapshotMetadata`, its conf state is the configuration at the snapshot index),
//!   `snapshot_file` (the name of the file in `snapshots/` holding the payload of the snapshot
//!   `snapshot_meta` describes; absent: the payload is in `raft_snapshot`), `compacted` (index
//!   and term of the last compacted entry, 16 bytes big-endian), `format` (u32 big-endian),
//!   `node_id` (u64 big-endian: the node this log belongs to; written on first open, checked on
//!   every later one).
//! - table `raft_snapshot`: `data` (the payload of a snapshot received from the leader), in a
//!   table of its own so that the hard state written by every Ready shares no B-tree leaf with
//!   it: redb copies a leaf it changes, and a leaf holding a payload of a few megabytes made
//!   each Ready write all of it.
//! - directory `snapshots/`: the payload of a snapshot this node took itself, one file
//!   (`snapshot-<index>-<term>.bin`), written, fsync'd and renamed into place by a thread of its
//!   own ([`write_snapshot_file`]) while the Ready loop goes on. redb has one writer at a time
//!   and every commit's fsync flushes the whole file, so a payload written into redb would make
//!   the Ready loop's transactions wait for it.
//!
//! **Crash safety of local snapshots:** the payload file is complete and durable before the
//! transaction that names it (`snapshot_file`, `snapshot_meta`, the compaction) commits, and
//! the previous payload is removed only after that commit; a file no committed `snapshot_file`
//! names is left over from a crash (or a snapshot a newer one overtook) and is removed on open.
//! A crash at any point thus leaves the old snapshot and the whole log, or the new snapshot and
//! the compacted log.
//!
//! Format 1 kept the payload in `raft_meta` (`snapshot_data`); opening such a log moves it to
//! `raft_snapshot` in one transaction. Format 2 is format 3 without `snapshot_file` (a build that
//! reads only format 2 would look for a local snapshot's payload in the table, so the marker
//! becomes 3 with the first snapshot written).
//!
//! **The file** is redb's file backend with one change ([`WrittenFile`]): new file space is
//! written with zeros rather than left sparse, so commits overwrite allocated blocks and their
//! `fdatasync` rarely has to commit the filesystem's journal.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::backends::FileBackend;
use redb::{BackendError, Database, Durability, ReadableDatabase, StorageBackend, TableDefinition};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

const KEY_FORMAT: &str = "format";
const KEY_HARD_STATE: &str = "hard_state";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
/// The snapshot payload: in `raft_snapshot` since format 2, in `raft_meta` in format 1.
const KEY_SNAPSHOT_DATA: &str = "data";
const KEY_SNAPSHOT_DATA_V1: &str = "snapshot_data";
/// The file in [`SNAPSHOT_DIR`] holding the snapshot's payload, if it is not in the table.
const KEY_SNAPSHOT_FILE: &str = "snapshot_file";
const KEY_COMPACTED: &str = "compacted";
const KEY_NODE_ID: &str = "node_id";

const FORMAT_VERSION: u32 = 3;

/// The file inside the data directory.
const FILE_NAME: &str = "raft.redb";
/// The directory (inside the data directory) of local snapshots' payload files.
const SNAPSHOT_DIR: &str = "snapshots";

/// A storage failure. The node stops on any of these rather than risk diverging.
#[derive(Debug, thiserror::Error)]
#[error("raft storage {path}: {what}")]
pub(crate) struct StorageFailure {
    path: PathBuf,
    what: String,
}

// === impl StorageFailure ===

impl StorageFailure {
    /// A failure about the storage under `dir`.
    pub(crate) fn new(dir: &Path, what: String) -> Self {
        Self {
            path: dir.to_path_buf(),
            what,
        }
    }
}

/// The durable log of one node.
pub(crate) struct DiskStorage {
    db: Database,
    path: PathBuf,
    /// The data directory (holding `path` and [`SNAPSHOT_DIR`]).
    dir: PathBuf,
    hard_state: HardState,
    /// The latest snapshot (index 0: none).
    snapshot_meta: SnapshotMetadata,
    /// The file in [`SNAPSHOT_DIR`] holding its payload; `None`: the payload is in the table.
    snapshot_file: Option<String>,
    /// The last entry removed from the log (0, 0 if none).
    compacted_index: u64,
    compacted_term: u64,
    /// Entries `compacted_index + 1 ..= last_index`, in order and contiguous.
    entries: VecDeque<Entry>,
    /// A commit index learned from a `LightReady`, written with the next transaction: losing it
    /// in a crash only means re-learning it from the leader.
    pending_commit: Option<u64>,
    /// Set when raft asked for a snapshot the stored one cannot serve (too old, or taken before
    /// the receiver joined the configuration, which it would refuse); the node then takes a
    /// fresh one and raft asks again on its next attempt.
    snapshot_wanted: Cell<bool>,
    /// The node this log belongs to, once recorded.
    node_id: Option<u64>,
}

/// What one Ready asks to persist, written in one transaction.
pub(crate) struct ReadyWrite<'a> {
    /// A snapshot received from the leader (replaces the whole log).
    pub(crate) snapshot: Option<&'a Snapshot>,
    /// New log entries; an entry at an existing index truncates the log from there.
    pub(crate) entries: &'a [Entry],
    /// A changed hard state.
    pub(crate) hard_state: Option<&'a HardState>,
    /// Whether the write must be fsync'd before returning (raft's `must_sync`).
    pub(crate) sync: bool,
}

/// What a format 1 log needs to become format 2.
struct UpgradeV1 {
    /// The snapshot payload stored in `raft_meta`, if any.
    payload: Option<Vec<u8>>,
}

// === impl DiskStorage ===

impl DiskStorage {
    /// Opens (or creates) the storage in `dir` and loads the log tail into memory.
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageFailure> {
        let path = dir.join(FILE_NAME);
        let fail = |what: String| StorageFailure {
            path: path.clone(),
            what,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating directory: {e}")))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(format!("opening {}: {e}", path.display())))?;
        let backend = FileBackend::new(file).map_err(|e| fail(format!("opening database: {e}")))?;
        let db = Database::builder()
            .create_with_backend(WrittenFile { inner: backend })
            .map_err(|e| fail(format!("opening database: {e}")))?;
        let mut storage = Self {
            db,
            path: path.clone(),
            dir: dir.to_path_buf(),
            hard_state: HardState::default(),
            snapshot_meta: SnapshotMetadata::default(),
            snapshot_file: None,
            compacted_index: 0,
            compacted_term: 0,
            entries: VecDeque::new(),
            pending_commit: None,
            snapshot_wanted: Cell::new(false),
            node_id: None,
        };
        storage.load()?;
        storage.remove_stray_snapshot_files();
        Ok(storage)
    }

    fn load(&mut self) -> Result<(), StorageFailure> {
        if let Some(upgrade) = self.read_all()? {
            self.upgrade_v1(upgrade)?;
        }
        Ok(())
    }

    /// Removes the payload files no committed snapshot names: left by a crash before (or while)
    /// their snapshot was recorded, or after a newer one replaced theirs.
    fn remove_stray_snapshot_files(&self) {
        let dir = self.dir.join(SNAPSHOT_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // No local snapshot was ever written.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list snapshot files");
                return;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Only this module's names: never remove a file someone else put there.
            if !name.starts_with("snapshot-") || self.snapshot_file.as_deref() == Some(name) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a snapshot file no snapshot uses")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unused snapshot file")
                }
            }
        }
    }

    /// Removes a payload file the committed state no longer names (best effort: a file left
    /// behind is removed on the next open).
    fn remove_snapshot_file(&self, name: &str) {
        let path = self.dir.join(SNAPSHOT_DIR).join(name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove an unused snapshot file");
        }
    }

    /// Reads the whole log into memory; returns what a format 1 log needs to become format 2.
    fn read_all(&mut self) -> Result<Option<UpgradeV1>, StorageFailure> {
        let path = self.path.clone();
        let fail = |what: &dyn std::fmt::Display| StorageFailure::new(&path, what.to_string());
        let txn = self.db.begin_read().map_err(|e| fail(&e))?;
        let meta = match txn.open_table(META) {
            Ok(table) => table,
            // A fresh database.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(fail(&e)),
        };
        let get = |key: &str| -> Result<Option<Vec<u8>>, StorageFailure> {
            Ok(meta
                .get(key)
                .map_err(|e| fail(&e))?
                .map(|v| v.value().to_vec()))
        };
        if let Some(format) = get(KEY_FORMAT)? {
            let version = <[u8; 4]>::try_from(format.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| fail(&"format marker is not 4 bytes"))?;
            if !(1..=FORMAT_VERSION).contains(&version) {
                return Err(fail(&format!(
                    "unsupported format version {version} (this build reads 1 to {FORMAT_VERSION})"
                )));
            }
        }
        // Format 1 (or a log written before the marker existed) holds the payload in `raft_meta`.
        let payload_v1 = get(KEY_SNAPSHOT_DATA_V1)?;
        let upgrade = match get(KEY_FORMAT)? {
            Some(format) if format != 1u32.to_be_bytes() => None,
            _ => Some(UpgradeV1 {
                payload: payload_v1,
            }),
        };
        if let Some(bytes) = get(KEY_NODE_ID)? {
            let id = <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| fail(&"node id marker is not 8 bytes"))?;
            self.node_id = Some(id);
        }
        if let Some(bytes) = get(KEY_HARD_STATE)? {
            self.hard_state = HardState::parse_from_bytes(&bytes)
                .map_err(|e| fail(&format!("decoding hard state: {e}")))?;
        }
        if let Some(bytes) = get(KEY_SNAPSHOT_META)? {
            self.snapshot_meta = SnapshotMetadata::parse_from_bytes(&bytes)
                .map_err(|e| fail(&format!("decoding snapshot metadata: {e}")))?;
        }
        if let Some(bytes) = get(KEY_SNAPSHOT_FILE)? {
            let name =
                String::from_utf8(bytes).map_err(|_| fail(&"snapshot file name is not UTF-8"))?;
            self.snapshot_file = Some(name);
        }
        if let Some(bytes) = get(KEY_COMPACTED)? {
            let (index, term) = decode_compacted(&bytes)
                .ok_or_else(|| fail(&"compaction marker is not 16 bytes"))?;
            self.compacted_index = index;
            self.compacted_term = term;
        }
        let log = match txn.open_table(LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(upgrade),
            Err(e) => return Err(fail(&e)),
        };
        let first = self.compacted_index + 1;
        for (expected, row) in (first..).zip(log.range(first..).map_err(|e| fail(&e))?) {
            let (key, value) = row.map_err(|e| fail(&e))?;
            let entry = Entry::parse_from_bytes(value.value())
                .map_err(|e| fail(&format!("decoding entry {}: {e}", key.value())))?;
            if key.value() != expected || entry.index != expected {
                return Err(fail(&format!(
                    "log is not contiguous: expected index {expected}, found key {} entry {}",
                    key.value(),
                    entry.index
                )));
            }
            self.entries.push_back(entry);
        }
        Ok(upgrade)
    }

    /// Makes a format 1 log format 2: moves the snapshot payload from `raft_meta` to
    /// `raft_snapshot` and sets the marker, in one durable transaction (a crash leaves the
    /// format 1 log as it was).
    fn upgrade_v1(&mut self, upgrade: UpgradeV1) -> Result<(), StorageFailure> {
        let mut txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.fail(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            if let Some(payload) = &upgrade.payload {
                txn.open_table(SNAPSHOT)
                    .map_err(|e| self.fail(e))?
                    .insert(KEY_SNAPSHOT_DATA, payload.as_slice())
                    .map_err(|e| self.fail(e))?;
                meta.remove(KEY_SNAPSHOT_DATA_V1)
                    .map_err(|e| self.fail(e))?;
            }
            meta.insert(KEY_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))?;
        if let Some(payload) = &upgrade.payload {
            tracing::info!(
                path = %self.path.display(),
                bytes = payload.len(),
                "moved the snapshot payload to its own table (raft storage format 2)"
            );
        }
        Ok(())
    }

    /// Records that this log belongs to node `id`, or refuses a log that belongs to another
    /// node (a data directory given to the wrong `--id`: its votes and acknowledgements were
    /// another member's, and reusing them could lose committed writes).
    pub(crate) fn claim(&mut self, id: u64) -> Result<(), StorageFailure> {
        match self.node_id {
            Some(owner) if owner == id => Ok(()),
            Some(owner) => Err(self.fail(format!(
                "this data directory holds the raft log of node {owner}, not node {id}; start \
                 node {owner} with it, or give node {id} its own data directory"
            ))),
            None => {
                let mut txn = self.db.begin_write().map_err(|e| self.fail(e))?;
                txn.set_durability(Durability::Immediate)
                    .map_err(|e| self.fail(e))?;
                {
                    let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
                    meta.insert(KEY_NODE_ID, id.to_be_bytes().as_slice())
                        .map_err(|e| self.fail(e))?;
                    meta.insert(KEY_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                        .map_err(|e| self.fail(e))?;
                }
                txn.commit().map_err(|e| self.fail(e))?;
                self.node_id = Some(id);
                Ok(())
            }
        }
    }

    /// Whether nothing was ever written (a new node).
    pub(crate) fn is_empty(&self) -> bool {
        self.snapshot_meta.index == 0
            && self.entries.is_empty()
            && self.hard_state == HardState::default()
    }

    /// Initializes a new group's first node state: a snapshot at index 1, term 1 holding the
    /// initial configuration and `data` (the initial members and state machine). Every initial
    /// member writes the same snapshot, so their logs agree; a node that joins later has nothing
    /// at index 1 and therefore receives this (or a later) snapshot from the leader.
    pub(crate) fn bootstrap(
        &mut self,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), StorageFailure> {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(conf_state);
        let hard_state = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        self.persist(ReadyWrite {
            snapshot: Some(&snapshot),
            entries: &[],
            hard_state: Some(&hard_state),
            sync: true,
        })
    }

    /// The latest snapshot's metadata (index 0: none).
    pub(crate) fn snapshot_meta(&self) -> &SnapshotMetadata {
        &self.snapshot_meta
    }

    /// The latest snapshot's payload (empty if none).
    pub(crate) fn snapshot_data(&self) -> Result<Vec<u8>, StorageFailure> {
        if let Some(name) = &self.snapshot_file {
            let path = self.dir.join(SNAPSHOT_DIR).join(name);
            return std::fs::read(&path).map_err(|e| {
                self.fail(format!(
                    "reading the snapshot payload {}: {e}",
                    path.display()
                ))
            });
        }
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = match txn.open_table(SNAPSHOT) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(e)),
        };
        Ok(table
            .get(KEY_SNAPSHOT_DATA)
            .map_err(|e| self.fail(e))?
            .map(|v| v.value().to_vec())
            .unwrap_or_default())
    }

    /// The persisted hard state.
    #[cfg(test)]
    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Whether raft asked for a newer snapshot than the stored one since the last call.
    pub(crate) fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Remembers a commit index from a `LightReady`; it is written with the next transaction.
    pub(crate) fn note_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.pending_commit = Some(commit.max(self.pending_commit.unwrap_or(0)));
        }
    }

    /// Writes one Ready in one transaction: the snapshot first (it replaces the log), then the
    /// entries, then the hard state.
    pub(crate) fn persist(&mut self, write: ReadyWrite<'_>) -> Result<(), StorageFailure> {
        if write.snapshot.is_none()
            && write.entries.is_empty()
            && write.hard_state.is_none()
            && self.pending_commit.is_none()
        {
            return Ok(());
        }
        // The mirror after this write, computed first and installed only after the commit.
        let mut hard_state = write
            .hard_state
            .cloned()
            .unwrap_or_else(|| self.hard_state.clone());
        if let Some(commit) = self.pending_commit {
            hard_state.commit = hard_state.commit.max(commit);
        }
        let mut snapshot_meta = None;
        let mut compacted = (self.compacted_index, self.compacted_term);
        let mut clear_log = false;
        if let Some(snapshot) = write.snapshot {
            let meta = snapshot.get_metadata();
            if meta.index < self.compacted_index {
                return Err(self.fail(format!(
                    "snapshot at index {} is older than the compaction point {}",
                    meta.index, self.compacted_index
                )));
            }
            hard_state.term = hard_state.term.max(meta.term);
            hard_state.commit = hard_state.commit.max(meta.index);
            compacted = (meta.index, meta.term);
            snapshot_meta = Some(meta.clone());
            clear_log = true;
        }
        let last_index = if clear_log {
            compacted.0
        } else {
            self.last_index_inner()
        };
        let first_new = write.entries.first().map(|e| e.index);
        if let Some(first_new) = first_new {
            if first_new <= compacted.0 {
                return Err(self.fail(format!(
                    "appending at index {first_new}, at or below the compaction point {}",
                    compacted.0
                )));
            }
            if first_new > last_index + 1 {
                return Err(self.fail(format!(
                    "appending at index {first_new} leaves a gap after the last index {last_index}"
                )));
            }
        }

        let mut txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let durability = if write.sync {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| self.fail(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let mut log = txn.open_table(LOG).map_err(|e| self.fail(e))?;
            if let Some(snapshot) = write.snapshot {
                let meta_bytes = encode(snapshot.get_metadata(), &self.path)?;
                meta.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())
                    .map_err(|e| self.fail(e))?;
                txn.open_table(SNAPSHOT)
                    .map_err(|e| self.fail(e))?
                    .insert(KEY_SNAPSHOT_DATA, snapshot.get_data())
                    .map_err(|e| self.fail(e))?;
                meta.remove(KEY_SNAPSHOT_FILE).map_err(|e| self.fail(e))?;
                // Where the payload is depends on the format: never leave it unmarked.
                meta.insert(KEY_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                    .map_err(|e| self.fail(e))?;
                meta.insert(
                    KEY_COMPACTED,
                    encode_compacted(compacted.0, compacted.1).as_slice(),
                )
                .map_err(|e| self.fail(e))?;
                log.retain(|_, _| false).map_err(|e| self.fail(e))?;
            }
            if let Some(first_new) = first_new {
                // Raft overwrites a conflicting suffix: drop everything from the first new index.
                log.retain_in(first_new.., |_, _| false)
                    .map_err(|e| self.fail(e))?;
                for entry in write.entries {
                    let bytes = encode(entry, &self.path)?;
                    log.insert(entry.index, bytes.as_slice())
                        .map_err(|e| self.fail(e))?;
                }
            }
            let hard_state_bytes = encode(&hard_state, &self.path)?;
            meta.insert(KEY_HARD_STATE, hard_state_bytes.as_slice())
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))?;

        // Committed: install the new state in the mirror.
        self.hard_state = hard_state;
        self.pending_commit = None;
        if let Some(meta) = snapshot_meta {
            self.snapshot_meta = meta;
            self.compacted_index = compacted.0;
            self.compacted_term = compacted.1;
            self.entries.clear();
            // The received payload replaced a local one: its file is unused now.
            if let Some(old) = self.snapshot_file.take() {
                self.remove_snapshot_file(&old);
            }
        }
        if let Some(first_new) = first_new {
            let keep = (first_new - self.compacted_index - 1) as usize;
            self.entries.truncate(keep);
            self.entries.extend(write.entries.iter().cloned());
        }
        Ok(())
    }

    /// The data directory, where [`write_snapshot_file`] puts payloads.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records a snapshot this node took of its own state machine at `meta.index` (applied,
    /// hence committed and in the log), whose payload [`write_snapshot_file`] wrote to `file`,
    /// and compacts the log through `compact_to` (at most the snapshot index), in one fsync'd
    /// transaction; then removes the previous payload.
    ///
    /// Returns `false`, and removes `file`, when the snapshot is stale: the stored snapshot is
    /// as new (one from the leader was installed while this one was written), or the log no
    /// longer holds the snapshot's entry with its term. A stale snapshot never replaces a newer
    /// one nor compacts past what the stored snapshot covers.
    pub(crate) fn record_local_snapshot(
        &mut self,
        meta: SnapshotMetadata,
        file: &str,
        compact_to: u64,
    ) -> Result<bool, StorageFailure> {
        let covered = meta.index <= self.snapshot_meta.index || meta.index <= self.compacted_index;
        let in_log = self.entry(meta.index).map(|e| e.term) == Some(meta.term);
        if covered || !in_log || self.snapshot_file.as_deref() == Some(file) {
            if self.snapshot_file.as_deref() != Some(file) {
                self.remove_snapshot_file(file);
            }
            return Ok(false);
        }
        let compact_to = compact_to.min(meta.index).max(self.compacted_index);
        let compact_term = if compact_to == self.compacted_index {
            self.compacted_term
        } else {
            self.entry(compact_to)
                .map(|e| e.term)
                .ok_or_else(|| self.fail(format!("compacting to missing index {compact_to}")))?
        };
        // The snapshot's index is committed; record that so a restart never sees applied state
        // ahead of the commit index (raft-rs' warning about persisting the commit index).
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state
            .commit
            .max(meta.index)
            .max(self.pending_commit.unwrap_or(0));

        let mut txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.fail(e))?;
        {
            let mut meta_table = txn.open_table(META).map_err(|e| self.fail(e))?;
            let mut log = txn.open_table(LOG).map_err(|e| self.fail(e))?;
            let meta_bytes = encode(&meta, &self.path)?;
            meta_table
                .insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(|e| self.fail(e))?;
            meta_table
                .insert(KEY_SNAPSHOT_FILE, file.as_bytes())
                .map_err(|e| self.fail(e))?;
            // A received snapshot's payload, replaced by the file.
            txn.open_table(SNAPSHOT)
                .map_err(|e| self.fail(e))?
                .remove(KEY_SNAPSHOT_DATA)
                .map_err(|e| self.fail(e))?;
            meta_table
                .insert(KEY_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())
                .map_err(|e| self.fail(e))?;
            meta_table
                .insert(
                    KEY_COMPACTED,
                    encode_compacted(compact_to, compact_term).as_slice(),
                )
                .map_err(|e| self.fail(e))?;
            let hard_state_bytes = encode(&hard_state, &self.path)?;
            meta_table
                .insert(KEY_HARD_STATE, hard_state_bytes.as_slice())
                .map_err(|e| self.fail(e))?;
            log.retain_in(..=compact_to, |_, _| false)
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))?;

        self.hard_state = hard_state;
        self.pending_commit = None;
        self.snapshot_meta = meta;
        let n_removed = (compact_to - self.compacted_index) as usize;
        self.entries.drain(..n_removed.min(self.entries.len()));
        self.compacted_index = compact_to;
        self.compacted_term = compact_term;
        if let Some(old) = self.snapshot_file.replace(file.to_string()) {
            self.remove_snapshot_file(&old);
        }
        Ok(true)
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.compacted_index {
            return None;
        }
        self.entries
            .get(usize::try_from(index - self.compacted_index - 1).ok()?)
    }

    fn last_index_inner(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.compacted_index, |entry| entry.index)
    }

    fn fail(&self, what: impl ToString) -> StorageFailure {
        StorageFailure {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }
}

fn encode(message: &impl protobuf::Message, path: &Path) -> Result<Vec<u8>, StorageFailure> {
    message.write_to_bytes().map_err(|e| StorageFailure {
        path: path.to_path_buf(),
        what: format!("encoding: {e}"),
    })
}

fn encode_compacted(index: u64, term: u64) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&index.to_be_bytes());
    bytes[8..].copy_from_slice(&term.to_be_bytes());
    bytes
}

fn decode_compacted(bytes: &[u8]) -> Option<(u64, u64)> {
    let index = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let term = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((index, term))
}

/// Writes the payload of a local snapshot at `index`/`term` into the snapshot directory of the
/// data directory `dir`, durably, and returns its file name for
/// [`DiskStorage::record_local_snapshot`]. Runs on any thread; touches no redb state.
///
/// The payload goes to a temporary name, is fsync'd, renamed to its final name, and the
/// directory is fsync'd: once this returns, the file survives a crash whole. Until the
/// snapshot is recorded, no committed state names the file, so a crash leaves it unused (and
/// the next open removes it).
/// The name of the file holding the snapshot at `index` of `term` (zero-padded, so names sort
/// by index).
pub(crate) fn snapshot_file_name(index: u64, term: u64) -> String {
    format!("snapshot-{index:020}-{term:020}.bin")
}

pub(crate) fn write_snapshot_file(
    dir: &Path,
    index: u64,
    term: u64,
    data: &[u8],
) -> Result<String, StorageFailure> {
    use std::io::Write as _;

    let snapshots = dir.join(SNAPSHOT_DIR);
    let fail = |what: &str, e: io::Error| {
        StorageFailure::new(dir, format!("{what} in {}: {e}", snapshots.display()))
    };
    std::fs::create_dir_all(&snapshots).map_err(|e| fail("creating the snapshot directory", e))?;
    // The directory's own entry must be durable before a file in it is relied upon; every
    // time, not only when this call created it: a crash after an earlier creation could have
    // left it unsynced (one fsync per snapshot).
    sync_dir(dir).map_err(|e| fail("syncing the data directory", e))?;
    let name = snapshot_file_name(index, term);
    // A unique temporary name: a writer left over from an earlier run of the node (in the same
    // process) could still be writing one for the same index.
    let temporary = snapshots.join(format!("{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temporary, snapshots.join(&name))?;
        sync_dir(&snapshots)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail(&format!("writing {name}"), e));
    }
    Ok(name)
}

/// Makes a directory's entries (a created or renamed file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// redb's file backend, except that the file never has holes: where redb extends the file
/// (`set_len`), the new range is written with zeros instead of left sparse.
///
/// **Why:** a commit that writes into a hole (or into a preallocated, unwritten extent) makes
/// the filesystem allocate blocks, so its `fdatasync` must also commit the filesystem journal,
/// which it shares with every other writer on the disk: measured on ext4, those commits took
/// 2-10x longer than overwrites under load, and were the largest part of the commit latency
/// tail. redb reuses its pages, so after this every log write is an overwrite of allocated
/// blocks, like an etcd WAL in its preallocated segment. The growth itself is made durable by
/// the `fdatasync` redb issues right after every `set_len` that grows the file.
#[derive(Debug)]
struct WrittenFile {
    inner: FileBackend,
}

/// Zeros written per call while filling new file space.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

// === impl WrittenFile ===

impl StorageBackend for WrittenFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let old = self.inner.len()?;
        self.inner.set_len(len)?;
        let mut offset = old;
        while offset < len {
            let n = usize::try_from(len - offset).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.inner.write(offset, &ZEROS[..n])?;
            offset += n as u64;
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

// === impl raft::Storage for DiskStorage ===

impl raft::Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.snapshot_meta.get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_inner() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let start = (low - self.compacted_index - 1) as usize;
        let end = (high - self.compacted_index - 1) as usize;
        let mut entries: Vec<Entry> = self.entries.range(start..end).cloned().collect();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if index == self.snapshot_meta.index {
            return Ok(self.snapshot_meta.term);
        }
        if index < self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entry(index) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.compacted_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // Snapshots are taken by the node after applying (it owns the state machine), so only the
        // stored one can be handed out. A follower refuses a snapshot whose configuration does
        // not name it (a node added after the snapshot was taken): ask the node for a fresh one.
        let conf = self.snapshot_meta.get_conf_state();
        let names_receiver = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .chain(&conf.voters_outgoing)
            .any(|id| *id == to);
        if self.snapshot_meta.index == 0
            || self.snapshot_meta.index < request_index
            || !names_receiver
        {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // An unreadable payload (its file removed or damaged) must not stop the leader: raft-rs
        // treats any other error here as fatal. Ask for a fresh snapshot instead, which the
        // node takes once it has applied past the stored one.
        let data = match self.snapshot_data() {
            Ok(data) => data,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    index = self.snapshot_meta.index,
                    "the stored snapshot cannot be read to send to a follower; a new one will be taken"
                );
                self.snapshot_wanted.set(true);
                return Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ));
            }
        };
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(self.snapshot_meta.clone());
        snapshot.set_data(data.into());
        Ok(snapshot)
    }
}

#[cfg(test)]
#[path = "tests_storage.rs"]
mod tests;
