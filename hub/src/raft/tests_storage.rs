//! Unit tests of the redb storage: persistence across reopen, truncation, compaction and the
//! `raft::Storage` error contract.

use raft::Storage as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, StorageError};

use super::{DiskStorage, ReadyWrite, write_snapshot_file};

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        data: data.to_vec().into(),
        ..Default::default()
    }
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn append(storage: &mut DiskStorage, entries: &[Entry], hs: Option<&HardState>) {
    storage
        .persist(ReadyWrite {
            snapshot: None,
            entries,
            hard_state: hs,
            sync: true,
        })
        .unwrap();
}

/// A local snapshot as the node takes one: the payload written, then recorded.
fn save_local_snapshot(
    storage: &mut DiskStorage,
    meta: SnapshotMetadata,
    data: &[u8],
    compact_to: u64,
) -> bool {
    let file = write_snapshot_file(storage.dir(), meta.index, meta.term, data).unwrap();
    storage
        .record_local_snapshot(meta, &file, compact_to)
        .unwrap()
}

fn snapshot_meta(index: u64, term: u64, conf: ConfState) -> SnapshotMetadata {
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    meta.set_conf_state(conf);
    meta
}

/// The payload files in the snapshot directory.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(super::SNAPSHOT_DIR))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn entries(storage: &DiskStorage, low: u64, high: u64) -> raft::Result<Vec<Entry>> {
    storage.entries(low, high, None, GetEntriesContext::empty(false))
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_fresh_directory_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert!(storage.is_empty());
    assert_eq!(storage.first_index().unwrap(), 1);
    assert_eq!(storage.last_index().unwrap(), 0);
    assert_eq!(storage.term(0).unwrap(), 0);
    let state = storage.initial_state().unwrap();
    assert_eq!(state.hard_state, HardState::default());
    assert!(state.conf_state.voters.is_empty());
    assert_eq!(
        storage.snapshot(0, 2).unwrap_err(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
}

#[test]
fn bootstrap_writes_a_snapshot_at_index_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage
            .bootstrap(voters(&[1, 2, 3]), b"init".to_vec())
            .unwrap();
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert!(!storage.is_empty());
    assert_eq!(storage.first_index().unwrap(), 2);
    assert_eq!(storage.last_index().unwrap(), 1);
    assert_eq!(storage.term(1).unwrap(), 1);
    let state = storage.initial_state().unwrap();
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(state.hard_state, hard_state(1, 0, 1));
    let snapshot = storage.snapshot(0, 2).unwrap();
    assert_eq!(snapshot.get_metadata().index, 1);
    assert_eq!(snapshot.get_data(), b"init");
    // A joining node with an empty log needs index 1: compacted here, so the leader sends this.
    assert_eq!(
        entries(&storage, 1, 2).unwrap_err(),
        raft::Error::Store(StorageError::Compacted)
    );
}

#[test]
fn entries_and_hard_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
        append(
            &mut storage,
            &[entry(2, 2, b"a"), entry(3, 2, b"b"), entry(4, 2, b"c")],
            Some(&hard_state(2, 1, 3)),
        );
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.last_index().unwrap(), 4);
    assert_eq!(
        storage.initial_state().unwrap().hard_state,
        hard_state(2, 1, 3)
    );
    let got = entries(&storage, 2, 5).unwrap();
    assert_eq!(
        got.iter().map(|e| e.data.to_vec()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(storage.term(4).unwrap(), 2);
    assert_eq!(
        storage.term(5).unwrap_err(),
        raft::Error::Store(StorageError::Unavailable)
    );
    assert_eq!(
        entries(&storage, 2, 6).unwrap_err(),
        raft::Error::Store(StorageError::Unavailable)
    );
}

#[test]
fn a_conflicting_append_truncates_the_suffix_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
        append(
            &mut storage,
            &[entry(2, 2, b"a"), entry(3, 2, b"b"), entry(4, 2, b"c")],
            None,
        );
        append(&mut storage, &[entry(3, 3, b"B")], None);
        assert_eq!(storage.last_index().unwrap(), 3);
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.last_index().unwrap(), 3);
    assert_eq!(storage.term(3).unwrap(), 3);
    assert_eq!(entries(&storage, 3, 4).unwrap()[0].data.as_ref(), b"B");
}

#[test]
fn a_gap_in_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = DiskStorage::open(dir.path()).unwrap();
    storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
    let error = storage
        .persist(ReadyWrite {
            snapshot: None,
            entries: &[entry(5, 2, b"x")],
            hard_state: None,
            sync: true,
        })
        .unwrap_err();
    assert!(error.to_string().contains("gap"), "{error}");
    assert_eq!(storage.last_index().unwrap(), 1);
}

#[test]
fn a_local_snapshot_compacts_and_keeps_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
        let log: Vec<Entry> = (2..=10).map(|i| entry(i, 2, b"x")).collect();
        append(&mut storage, &log, Some(&hard_state(2, 1, 8)));
        let meta = snapshot_meta(8, 2, voters(&[1]));
        assert!(save_local_snapshot(&mut storage, meta, b"state@8", 6));
        assert_eq!(storage.first_index().unwrap(), 7);
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.first_index().unwrap(), 7);
    assert_eq!(storage.last_index().unwrap(), 10);
    assert_eq!(storage.term(6).unwrap(), 2);
    assert_eq!(
        storage.term(5).unwrap_err(),
        raft::Error::Store(StorageError::Compacted)
    );
    assert_eq!(
        entries(&storage, 6, 8).unwrap_err(),
        raft::Error::Store(StorageError::Compacted)
    );
    assert_eq!(entries(&storage, 7, 11).unwrap().len(), 4);
    // The snapshot names only node 1: a node added since would refuse it, so raft gets
    // "temporarily unavailable" and the node is asked for a fresh snapshot.
    assert_eq!(
        storage.snapshot(0, 2).unwrap_err(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
    );
    assert!(storage.take_snapshot_request());
    assert!(!storage.take_snapshot_request());
    let snapshot = storage.snapshot(0, 1).unwrap();
    assert_eq!(snapshot.get_metadata().index, 8);
    assert_eq!(snapshot.get_data(), b"state@8");
    // So is a request for a newer index than stored.
    assert!(storage.snapshot(9, 1).is_err());
    assert!(storage.take_snapshot_request());
    // The snapshot's index is recorded as committed.
    assert!(storage.hard_state().commit >= 8);
}

#[test]
fn a_received_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage.bootstrap(voters(&[1, 2]), Vec::new()).unwrap();
        append(&mut storage, &[entry(2, 2, b"old")], None);
        let mut snapshot = Snapshot::default();
        snapshot.set_data(b"leader state".to_vec().into());
        let meta = snapshot.mut_metadata();
        meta.index = 20;
        meta.term = 4;
        meta.set_conf_state(voters(&[1, 2, 3]));
        storage
            .persist(ReadyWrite {
                snapshot: Some(&snapshot),
                entries: &[entry(21, 4, b"next")],
                hard_state: Some(&hard_state(4, 0, 20)),
                sync: true,
            })
            .unwrap();
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.first_index().unwrap(), 21);
    assert_eq!(storage.last_index().unwrap(), 21);
    assert_eq!(storage.term(20).unwrap(), 4);
    assert_eq!(
        storage.initial_state().unwrap().conf_state.voters,
        vec![1, 2, 3]
    );
    assert_eq!(storage.snapshot_data().unwrap(), b"leader state");
}

#[test]
fn a_lazily_noted_commit_is_written_with_the_next_transaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
        append(
            &mut storage,
            &[entry(2, 2, b"a")],
            Some(&hard_state(2, 1, 1)),
        );
        storage.note_commit(2);
        append(&mut storage, &[entry(3, 2, b"b")], None);
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.hard_state().commit, 2);
}

#[test]
fn a_second_open_of_the_same_directory_fails_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let _first = DiskStorage::open(dir.path()).unwrap();
    assert!(DiskStorage::open(dir.path()).is_err());
}

#[test]
fn a_format_1_log_moves_its_snapshot_payload_to_its_own_table() {
    use protobuf::Message as _;
    use redb::ReadableDatabase;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(super::FILE_NAME);
    {
        // A log as format 1 wrote it: the payload in `raft_meta`.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(super::META).unwrap();
            let mut log = txn.open_table(super::LOG).unwrap();
            let mut snapshot_meta = SnapshotMetadata {
                index: 1,
                term: 1,
                ..Default::default()
            };
            snapshot_meta.set_conf_state(voters(&[1]));
            let put = |meta: &mut redb::Table<&str, &[u8]>, key: &str, value: &[u8]| {
                meta.insert(key, value).unwrap();
            };
            put(&mut meta, super::KEY_FORMAT, &1u32.to_be_bytes());
            put(&mut meta, super::KEY_NODE_ID, &1u64.to_be_bytes());
            put(
                &mut meta,
                super::KEY_HARD_STATE,
                &hard_state(2, 1, 2).write_to_bytes().unwrap(),
            );
            put(
                &mut meta,
                super::KEY_SNAPSHOT_META,
                &snapshot_meta.write_to_bytes().unwrap(),
            );
            put(&mut meta, super::KEY_SNAPSHOT_DATA_V1, b"old state");
            put(
                &mut meta,
                super::KEY_COMPACTED,
                &super::encode_compacted(1, 1),
            );
            log.insert(2, entry(2, 2, b"a").write_to_bytes().unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    for _ in 0..2 {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        storage.claim(1).unwrap();
        assert_eq!(storage.snapshot_data().unwrap(), b"old state");
        assert_eq!(storage.snapshot(1, 1).unwrap().get_data(), b"old state");
        assert_eq!(storage.last_index().unwrap(), 2);
        assert_eq!(storage.hard_state(), &hard_state(2, 1, 2));
    }
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(super::META).unwrap();
    assert!(meta.get(super::KEY_SNAPSHOT_DATA_V1).unwrap().is_none());
    assert_eq!(
        meta.get(super::KEY_FORMAT).unwrap().unwrap().value(),
        super::FORMAT_VERSION.to_be_bytes()
    );
}

#[test]
fn a_snapshot_payload_is_not_rewritten_by_later_readys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(super::FILE_NAME);
    let mut storage = DiskStorage::open(dir.path()).unwrap();
    storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
    for index in 2..12 {
        append(
            &mut storage,
            &[entry(index, 1, b"x")],
            Some(&hard_state(1, 1, index)),
        );
    }
    // A payload received from the leader lives in redb, in a table of its own.
    let mut snapshot = Snapshot::default();
    snapshot.set_data(vec![7; 4 << 20].into());
    *snapshot.mut_metadata() = snapshot_meta(11, 1, voters(&[1]));
    storage
        .persist(ReadyWrite {
            snapshot: Some(&snapshot),
            entries: &[],
            hard_state: Some(&hard_state(1, 1, 11)),
            sync: true,
        })
        .unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    // Were the hard state in the payload's B-tree leaf, each Ready would copy the 4 MiB leaf,
    // and redb frees a copy only after the next commit: the file would grow by payloads.
    for index in 12..40 {
        append(
            &mut storage,
            &[entry(index, 1, b"x")],
            Some(&hard_state(1, 1, index)),
        );
    }
    let grown = std::fs::metadata(&file).unwrap().len();
    assert!(grown < size + (4 << 20), "{size} -> {grown}");
    assert_eq!(storage.snapshot_data().unwrap(), vec![7; 4 << 20]);
}

#[test]
fn new_file_space_is_allocated_not_sparse() {
    use std::os::unix::fs::MetadataExt as _;

    let dir = tempfile::tempdir().unwrap();
    let mut storage = DiskStorage::open(dir.path()).unwrap();
    storage.bootstrap(voters(&[1]), Vec::new()).unwrap();
    for index in 2..300 {
        append(
            &mut storage,
            &[entry(index, 1, &[1; 4096])],
            Some(&hard_state(1, 1, index - 1)),
        );
    }
    let meta = std::fs::metadata(dir.path().join(super::FILE_NAME)).unwrap();
    assert!(
        meta.len() > 1 << 20,
        "the log grew the file: {}",
        meta.len()
    );
    // Every byte of the file is backed by an allocated block (no holes).
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "{} bytes in {} blocks",
        meta.len(),
        meta.blocks()
    );
}

/// Entries 2..=10 of term 2 after the bootstrap snapshot, all committed.
fn ten_entries(dir: &std::path::Path) -> DiskStorage {
    let mut storage = DiskStorage::open(dir).unwrap();
    storage.bootstrap(voters(&[1, 2]), Vec::new()).unwrap();
    let log: Vec<Entry> = (2..=10).map(|i| entry(i, 2, b"x")).collect();
    append(&mut storage, &log, Some(&hard_state(2, 1, 10)));
    storage
}

#[test]
fn a_local_snapshot_payload_is_a_file_until_a_newer_snapshot_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = ten_entries(dir.path());
        assert!(save_local_snapshot(
            &mut storage,
            snapshot_meta(5, 2, voters(&[1, 2])),
            b"state@5",
            5
        ));
        assert_eq!(snapshot_files(dir.path()).len(), 1);
        assert!(save_local_snapshot(
            &mut storage,
            snapshot_meta(8, 2, voters(&[1, 2])),
            b"state@8",
            7
        ));
        // The previous payload went with the transaction that replaced it.
        assert_eq!(
            snapshot_files(dir.path()),
            vec![super::snapshot_file_name(8, 2)]
        );
        assert_eq!(storage.snapshot(8, 2).unwrap().get_data(), b"state@8");
    }
    {
        let mut storage = DiskStorage::open(dir.path()).unwrap();
        assert_eq!(storage.snapshot_meta().index, 8);
        assert_eq!(storage.snapshot_data().unwrap(), b"state@8");
        assert_eq!(storage.first_index().unwrap(), 8);
        // A snapshot from the leader goes into redb and replaces the file.
        let mut snapshot = Snapshot::default();
        snapshot.set_data(b"leader state".to_vec().into());
        *snapshot.mut_metadata() = snapshot_meta(20, 4, voters(&[1, 2]));
        storage
            .persist(ReadyWrite {
                snapshot: Some(&snapshot),
                entries: &[],
                hard_state: Some(&hard_state(4, 0, 20)),
                sync: true,
            })
            .unwrap();
        assert!(snapshot_files(dir.path()).is_empty());
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.snapshot_meta().index, 20);
    assert_eq!(storage.snapshot_data().unwrap(), b"leader state");
}

#[test]
fn a_local_snapshot_finishing_after_a_leader_snapshot_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = ten_entries(dir.path());
        // The node captured its state at 8 and its thread is writing the payload...
        let file = write_snapshot_file(storage.dir(), 8, 2, b"state@8").unwrap();
        // ...when the leader's snapshot at 20 arrives and is stored.
        let mut snapshot = Snapshot::default();
        snapshot.set_data(b"leader state".to_vec().into());
        *snapshot.mut_metadata() = snapshot_meta(20, 4, voters(&[1, 2, 3]));
        storage
            .persist(ReadyWrite {
                snapshot: Some(&snapshot),
                entries: &[entry(21, 4, b"next")],
                hard_state: Some(&hard_state(4, 0, 20)),
                sync: true,
            })
            .unwrap();
        let stale = snapshot_meta(8, 2, voters(&[1, 2]));
        assert!(!storage.record_local_snapshot(stale, &file, 6).unwrap());
        assert_eq!(storage.snapshot_meta().index, 20);
        assert_eq!(storage.first_index().unwrap(), 21);
        assert_eq!(storage.last_index().unwrap(), 21);
        assert_eq!(storage.snapshot_data().unwrap(), b"leader state");
        assert!(snapshot_files(dir.path()).is_empty());
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.snapshot_meta().index, 20);
    assert_eq!(
        storage.snapshot_meta().get_conf_state().voters,
        vec![1, 2, 3]
    );
    assert_eq!(storage.snapshot_data().unwrap(), b"leader state");
    assert_eq!(storage.last_index().unwrap(), 21);
}

#[test]
fn a_local_snapshot_whose_entry_the_log_no_longer_holds_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = ten_entries(dir.path());
    // Not the term of entry 8: the capture does not describe this log.
    let file = write_snapshot_file(storage.dir(), 8, 3, b"other").unwrap();
    let wrong_term = snapshot_meta(8, 3, voters(&[1, 2]));
    assert!(!storage.record_local_snapshot(wrong_term, &file, 8).unwrap());
    // Beyond the log.
    let file = write_snapshot_file(storage.dir(), 12, 2, b"ahead").unwrap();
    let ahead = snapshot_meta(12, 2, voters(&[1, 2]));
    assert!(!storage.record_local_snapshot(ahead, &file, 12).unwrap());
    assert_eq!(storage.snapshot_meta().index, 1);
    assert_eq!(storage.first_index().unwrap(), 2);
    assert!(snapshot_files(dir.path()).is_empty());
}

#[test]
fn a_crash_before_a_local_snapshot_is_recorded_keeps_the_old_snapshot_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let kept = super::snapshot_file_name(5, 2);
    {
        let mut storage = ten_entries(dir.path());
        assert!(save_local_snapshot(
            &mut storage,
            snapshot_meta(5, 2, voters(&[1, 2])),
            b"state@5",
            4
        ));
        // The next payload is written (and renamed into place) but the node dies before the
        // transaction that names it; another dies mid-write, leaving its temporary file.
        write_snapshot_file(storage.dir(), 9, 2, b"state@9").unwrap();
        let snapshots = dir.path().join(super::SNAPSHOT_DIR);
        std::fs::write(
            snapshots.join(format!("{}.0123.tmp", super::snapshot_file_name(10, 2))),
            b"sta",
        )
        .unwrap();
        assert_eq!(snapshot_files(dir.path()).len(), 3);
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.snapshot_meta().index, 5);
    assert_eq!(storage.snapshot_data().unwrap(), b"state@5");
    assert_eq!(storage.first_index().unwrap(), 5);
    assert_eq!(storage.last_index().unwrap(), 10);
    assert_eq!(entries(&storage, 5, 11).unwrap().len(), 6);
    // The files no committed snapshot names are gone.
    assert_eq!(snapshot_files(dir.path()), vec![kept]);
}

#[test]
fn a_crash_after_a_local_snapshot_is_recorded_keeps_the_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let old = super::snapshot_file_name(5, 2);
    {
        let mut storage = ten_entries(dir.path());
        assert!(save_local_snapshot(
            &mut storage,
            snapshot_meta(5, 2, voters(&[1, 2])),
            b"state@5",
            4
        ));
        assert!(save_local_snapshot(
            &mut storage,
            snapshot_meta(9, 2, voters(&[1, 2])),
            b"state@9",
            8
        ));
        // A crash between the commit and the removal of the old payload leaves it behind.
        std::fs::write(dir.path().join(super::SNAPSHOT_DIR).join(&old), b"state@5").unwrap();
    }
    let storage = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(storage.snapshot_meta().index, 9);
    assert_eq!(storage.snapshot_data().unwrap(), b"state@9");
    assert_eq!(storage.first_index().unwrap(), 9);
    assert_eq!(storage.last_index().unwrap(), 10);
    assert!(storage.hard_state().commit >= 9);
    assert_eq!(
        snapshot_files(dir.path()),
        vec![super::snapshot_file_name(9, 2)]
    );
}
