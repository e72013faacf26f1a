//! Journal mode (issue 16): commits append one record to `.NAME.statesafe/journal`;
//! readers replay it over the snapshot `NAME`; compaction rewrites the snapshot. The
//! record format and the crash argument are in `docs/design.md`, "Journal mode".

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use statesafe::{Error, Event, Format, RecoveryPolicy, Settings, Store};

use crate::common::{self, ChildCmd, sidecar};

fn journal_settings() -> Settings {
    Settings {
        format: Format::Journal,
        ..Settings::default()
    }
}

fn journal_path(path: &Path) -> PathBuf {
    sidecar(path).join("journal")
}

/// The offset after the last non-zero byte of the journal, rounded up to 8: where the
/// next record goes.
fn journal_end(path: &Path) -> u64 {
    let bytes = std::fs::read(journal_path(path)).unwrap();
    let last = bytes.iter().rposition(|b| *b != 0).unwrap();
    (last as u64 + 1).div_ceil(8) * 8
}

/// Offsets of the records in the journal, found by walking their length fields.
fn record_offsets(path: &Path) -> Vec<u64> {
    crate::journal_attacks::records(path)
        .iter()
        .map(|r| r.at)
        .collect()
}

fn events() -> (
    Arc<Mutex<Vec<Event>>>,
    impl Fn(&Event) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |e: &Event| sink.lock().unwrap().push(e.clone()))
}

pub(crate) fn create_journal(path: &Path, doc: Value) -> Store {
    let store: Store = Store::open(path).unwrap();
    store.create_with(&journal_settings(), doc).unwrap();
    store
}

#[test]
fn commits_append_to_the_journal_and_readers_replay_it() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0, "keep": "this"}));
    let snapshot = std::fs::read(&path).unwrap();
    let held = common::HeldInode::hold(&path);
    for n in 1..=20u64 {
        assert_eq!(store.update(|s| s["n"] = n.into()).unwrap(), ());
    }
    // No commit rewrote the snapshot: the same file (held open, so its inode number
    // cannot be given to a new one), the same bytes (what `cat` sees).
    assert!(held.is_at(&path), "a commit replaced the snapshot");
    assert_eq!(std::fs::read(&path).unwrap(), snapshot);
    assert_eq!(record_offsets(&path).len(), 20);
    // A fresh store, and the long-lived one, replay the journal.
    for reader in [&Store::<Value>::open(&path).unwrap(), &store] {
        let snap = reader.load().unwrap();
        assert_eq!(snap.state, json!({"n": 20, "keep": "this"}));
        assert_eq!(snap.generation, 21);
        assert_eq!(reader.generation().unwrap(), 21);
    }
    // A commit that changes nothing writes nothing and keeps the generation.
    let end = journal_end(&path);
    store.update(|s| s["n"] = 20.into()).unwrap();
    assert_eq!((journal_end(&path), store.generation().unwrap()), (end, 21));
    // Compare-and-swap sees the replayed generation.
    let err = store.update_if(20, |s| s["n"] = 0.into()).unwrap_err();
    assert!(
        matches!(err, Error::GenerationConflict { found: 21, .. }),
        "{err}"
    );
    store.update_if(21, |s| s["n"] = 99.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 22);
    // A whole replacement is a record too.
    let doc: Value = serde_json::from_str(r#"{"other": [1, 2.50, 1E2]}"#).unwrap();
    store.replace(doc).unwrap();
    let text = serde_json::to_string(&Store::<Value>::open(&path).unwrap().get().unwrap()).unwrap();
    assert_eq!(text, r#"{"other":[1,2.50,1E2]}"#, "numbers keep their text");
}

#[test]
fn threads_with_their_own_stores_lose_no_update() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    create_journal(&path, json!({"n": 0}));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store: Store = Store::open(&path).unwrap();
                for _ in 0..25 {
                    store
                        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state["n"], 100);
    assert_eq!(snap.generation, 101);
}

/// Increments the counter at PATH a few times (for the multi-process test).
#[test]
fn child_journal_increments() {
    if !common::child_role("journal-increments") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    for _ in 0..20 {
        store
            .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
            .unwrap();
    }
    common::say("done");
}

#[test]
fn threads_sharing_a_store_lose_no_update() {
    // Their flushes come after the lock's release, through the store's one descriptor:
    // serialized, and a flush that began after an append covers it.
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    let store = create_journal(&path, json!({"n": 0}));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    store
                        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                        .unwrap();
                }
            });
        }
    });
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state["n"], 200);
    assert_eq!(snap.generation, 201);
}

/// Runs `processes` children of [`child_journal_increments`] on `path` at once, each
/// adding 20 to its counter, and waits for them.
fn increment_in_processes(path: &Path, processes: usize) {
    let mut children: Vec<_> = (0..processes)
        .map(|_| {
            ChildCmd::new("journal::child_journal_increments", "journal-increments")
                .arg("PATH", path)
                .spawn()
        })
        .collect();
    for child in &mut children {
        assert_eq!(child.read_all(), ["done"]);
        assert!(child.wait().success());
    }
}

#[test]
fn processes_lose_no_update_across_compactions() {
    // A small journal: the processes compact often, and each then opens the new
    // journal with a fresh descriptor, which must see the appenders before it publish
    // their flushes (or compact) before it appends.
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    limited_journal_store(&path, 4096);
    increment_in_processes(&path, 4);
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state["n"], 80);
}

#[test]
fn processes_lose_no_update() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    create_journal(&path, json!({"n": 0}));
    increment_in_processes(&path, 3);
    assert_eq!(Store::<Value>::open(&path).unwrap().get().unwrap()["n"], 60);
}

#[test]
fn a_torn_append_at_the_tail_is_dropped_and_written_over() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["n"] = 1.into()).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // A power loss in the middle of the next append: its head and part of its body
    // reached the disk, its checksum did not.
    let end = journal_end(&path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(journal_path(&path))
        .unwrap();
    let mut torn = vec![0u8; 16];
    torn[..4].copy_from_slice(&200u32.to_le_bytes());
    torn[4] = 2;
    torn[8..16].copy_from_slice(&4u64.to_le_bytes());
    // Longer than the next record (which carries its time and writer), so that its
    // zeroing of what is left shows.
    torn.extend_from_slice(b"{\"n\": 3, \"padding\": \"");
    torn.extend_from_slice(&[b'x'; 1200]);
    file.write_all_at(&torn, end).unwrap();
    drop(file);
    let (seen, hook) = events();
    let reader: Store = Store::options().on_event(hook).open(&path).unwrap();
    let snap = reader.load().unwrap();
    assert_eq!((snap.state["n"].clone(), snap.generation), (json!(2), 3));
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    // The next commit takes its place, and zeroes what the torn one left.
    reader.update(|s| s["n"] = 30.into()).unwrap();
    assert_eq!(record_offsets(&path).last(), Some(&end));
    let bytes = std::fs::read(journal_path(&path)).unwrap();
    let new_end = journal_end(&path) as usize;
    assert!(new_end < end as usize + torn.len());
    assert!(
        bytes[new_end..].iter().all(|b| *b == 0),
        "the torn bytes were zeroed"
    );
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!((snap.state["n"].clone(), snap.generation), (json!(30), 4));
}

/// Flips one bit in the body of the first record: a bad record with good ones after it.
pub(crate) fn damage_first_record(path: &Path) {
    let offsets = record_offsets(path);
    assert!(offsets.len() >= 2);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(journal_path(path))
        .unwrap();
    let mut byte = [0u8; 1];
    let at = offsets[0] + 16 + 2;
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x01;
    file.write_all_at(&byte, at).unwrap();
}

#[test]
fn a_bad_record_before_good_ones_is_quarantined_and_repaired_loudly() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    damage_first_record(&path);

    // With the `fail` policy: an error naming the journal, the damage and what to do.
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open(&path)
        .unwrap();
    let err = strict.load().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{text}");
    assert!(text.contains("journal"), "{text}");
    assert!(text.contains("does not verify"), "{text}");
    assert!(text.contains("statesafe recover"), "{text}");

    // By default: quarantined, and the snapshot (all that can be proven) committed as
    // a generation past every one the journal shows.
    let (seen, hook) = events();
    let reader: Store = Store::options().on_event(hook).open(&path).unwrap();
    let snap = reader.load().unwrap();
    assert_eq!(snap.state, json!({"n": 0}));
    assert_eq!(snap.generation, 5);
    let events = seen.lock().unwrap().clone();
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Recovered { generation: 5, quarantined, .. }
            if quarantined.to_string_lossy().contains("journal-damaged-"))
        ),
        "{events:?}"
    );
    let quarantine: Vec<_> = std::fs::read_dir(sidecar(&path).join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    // Repaired: a fresh journal, and commits go on.
    reader.update(|s| s["n"] = 7.into()).unwrap();
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!((snap.state["n"].clone(), snap.generation), (json!(7), 6));
}

#[test]
fn a_record_changed_into_another_valid_change_is_caught_by_its_checksum() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["n"] = 5.into()).unwrap();
    store.update(|s| s["m"] = 1.into()).unwrap();
    // `5` becomes `4` in the first record's patch: still a valid patch.
    let offsets = record_offsets(&path);
    let bytes = std::fs::read(journal_path(&path)).unwrap();
    let body = &bytes[offsets[0] as usize + 16..offsets[1] as usize];
    let five = body.iter().position(|b| *b == b'5').unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(journal_path(&path))
        .unwrap();
    file.write_all_at(b"4", offsets[0] + 16 + five as u64)
        .unwrap();
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open(&path)
        .unwrap();
    let err = strict.load().unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

/// A journal-mode file made at `path` with `{"n": 0}`, its journal limited to
/// `journal_max_bytes` of records (so that commits compact soon).
fn limited_journal_store(path: &Path, journal_max_bytes: u64) -> Store {
    let store: Store = Store::open(path).unwrap();
    let settings = Settings {
        journal_max_bytes: Some(journal_max_bytes),
        ..journal_settings()
    };
    store.create_with(&settings, json!({"n": 0})).unwrap();
    store
}

/// fix17 closed a lost update for plain files: another program replacing the file
/// twice during an `update` can get the freed inode number back (ext4 gives it to the
/// next new file), and a check of device and inode before the rename then takes its
/// version for the one read. A transaction keeps the descriptor it read open, which
/// holds the number. A journal-mode transaction served from the store's cache read no
/// descriptor: when its commit compacts (here, a change past the journal's limit), the
/// rename went over that program's version without a word. (Where numbers are never
/// reused, as on tmpfs, the loop runs to its end and the test checks the plain case.)
#[test]
fn a_compaction_from_the_stores_cache_does_not_overwrite_a_file_replaced_twice_when_its_inode_number_comes_back()
 {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = limited_journal_store(&path, 400);
    // The store keeps the document from its second full read on.
    for n in 1..=5 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let mut reused = None;
    let result = store.update(|s| {
        reused = common::save_until_inode_comes_back(&path);
        // Past the journal's 400 bytes: this commit writes a new snapshot.
        s["pad"] = "x".repeat(600).into();
    });
    eprintln!("the inode number read came back at save {reused:?}; the update: {result:?}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        on_disk.get("external").is_some(),
        "the compaction overwrote another program's version (inode number reused at save {reused:?}): {on_disk}"
    );
    assert!(result.is_err(), "{result:?}");
}

/// [`limited_journal_store`] after 30 commits setting `/n` to 1..=30, at least one of
/// which compacted (the snapshot was replaced). Returns the directory, the file and
/// the store.
fn thirty_commits_through_a_compaction(
    journal_max_bytes: u64,
) -> (tempfile::TempDir, PathBuf, Store) {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = limited_journal_store(&path, journal_max_bytes);
    // The snapshot's text, not its inode: a second compaction's new file may be given
    // the inode the first one freed (seen in CI), so an inode compared proves nothing.
    let first = std::fs::read(&path).unwrap();
    for n in 1..=30u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_ne!(
        std::fs::read(&path).unwrap(),
        first,
        "no compaction happened"
    );
    (dir, path, store)
}

#[test]
fn compaction_rewrites_the_snapshot_and_starts_a_new_journal() {
    let (_dir, path, store) = thirty_commits_through_a_compaction(400);
    // The snapshot is a complete document as of the last compaction.
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let n_on_disk = on_disk["n"].as_u64().unwrap();
    assert!(n_on_disk > 0 && n_on_disk <= 30, "{on_disk}");
    assert!(
        journal_end(&path) <= 32 + 400,
        "the journal stays under its limit"
    );
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!((snap.state["n"].clone(), snap.generation), (json!(30), 31));
    // Outgoing snapshots are kept as backups, and verify.
    let backups = store.backups().unwrap();
    assert!(!backups.backups.is_empty());
    assert!(
        store.check().unwrap().is_ok(),
        "{:?}",
        store.check().unwrap()
    );
}

/// A journal-mode file (records up to `journal_max_bytes`) committed to until a commit
/// compacts, then the crash of that compaction right before the new journal's rename:
/// the snapshot (and the history) of generation n + 1 in place, the old journal
/// (records up to n) back. Returns the directory, the file and n.
fn crash_before_the_new_journal(journal_max_bytes: u64) -> (tempfile::TempDir, PathBuf, u64) {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = limited_journal_store(&path, journal_max_bytes);
    // Commit until the next commit compacts; keep the journal as it was just before.
    let mut old_journal;
    let mut n = 0u64;
    loop {
        old_journal = std::fs::read(journal_path(&path)).unwrap();
        let inode = common::inode(&path);
        n += 1;
        store.update(|s| s["n"] = n.into()).unwrap();
        if common::inode(&path) != inode {
            break;
        }
    }
    std::fs::write(journal_path(&path), &old_journal).unwrap();
    (dir, path, n)
}

#[test]
fn a_crash_between_the_snapshot_and_the_new_journal_is_safe() {
    // The snapshot of generation n + 1 is in place, the new journal's rename never
    // happened (the old journal is back).
    let (_dir, path, n) = crash_before_the_new_journal(300);
    let reader: Store = Store::open(&path).unwrap();
    let snap = reader.load().unwrap();
    assert_eq!(
        (snap.state["n"].clone(), snap.generation),
        (json!(n), n + 1)
    );
    // The journal does not follow the snapshot: the next commit compacts again.
    let inode = common::inode(&path);
    reader.update(|s| s["n"] = 1000.into()).unwrap();
    assert_ne!(common::inode(&path), inode);
    reader.update(|s| s["m"] = 1.into()).unwrap();
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state, json!({"n": 1000, "m": 1}));
    assert_eq!(snap.generation, n + 3);
}

#[test]
fn an_edit_of_a_snapshot_the_journal_has_moved_past_is_refused_not_merged() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["n"] = 1.into()).unwrap();
    std::fs::write(&path, b"{\"n\": 0, \"edited\": true}\n").unwrap();
    let err = Store::<Value>::open(&path).unwrap().load().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{text}");
    assert!(text.contains("changed outside statesafe"), "{text}");
    assert!(text.contains("journal"), "{text}");
    // Nothing was changed by the refusal.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"n\": 0, \"edited\": true}\n"
    );
}

#[test]
fn an_edit_right_after_a_compaction_is_an_ordinary_external_change() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    std::fs::write(&path, b"{\"n\": 5}\n").unwrap();
    let (seen, hook) = events();
    let reader: Store = Store::options().on_event(hook).open(&path).unwrap();
    let snap = reader.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 5}), 2));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::ExternalChange { .. }))
    );
    reader.update(|s| s["n"] = 6.into()).unwrap();
    reader.update(|s| s["n"] = 7.into()).unwrap();
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 7}), 4));
    drop(store);
}

#[test]
fn an_older_snapshot_put_back_is_refused() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    let settings = Settings {
        journal_max_bytes: Some(200),
        ..journal_settings()
    };
    store.create_with(&settings, json!({"n": 0})).unwrap();
    let backup_of_first = dir.path().join("copy");
    std::fs::hard_link(&path, &backup_of_first).unwrap();
    let first_inode = common::inode(&path);
    let mut n = 0;
    while common::inode(&path) == first_inode {
        n += 1;
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    // Put the first snapshot back, attributes and all (a rename keeps the inode).
    std::fs::rename(&backup_of_first, &path).unwrap();
    let err = Store::<Value>::open(&path).unwrap().load().unwrap_err();
    assert!(err.to_string().contains("older or different copy"), "{err}");
}

#[test]
fn journal_mode_is_a_property_of_the_file_not_of_one_store() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    create_journal(&path, json!({"n": 0}));
    let err = Store::<Value>::options()
        .format(Format::Plain)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let plain = dir.path().join("plain.json");
    let err = Store::<Value>::options()
        .format(Format::Journal)
        .open(&plain)
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[test]
fn a_file_deleted_and_created_again_continues_past_the_journal() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = Store::<Value>::options()
        .history(statesafe::HistoryPolicy {
            keep: 0,
            ..Default::default()
        })
        .backups(statesafe::BackupPolicy {
            keep: 0,
            hourly: 0,
            daily: 0,
        })
        .open(&path)
        .unwrap();
    store
        .create_with(&journal_settings(), json!({"n": 0}))
        .unwrap();
    for n in 1..=5u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    // The lock record's hint is lost too (as after a power loss).
    std::fs::write(sidecar(&path).join("lock"), b"").unwrap();
    let again: Store = Store::open(&path).unwrap();
    // Still known as deleted (the journal's records), so a create is refused
    // (lost19); starting over is a `replace`.
    assert!(matches!(
        again.create(json!({"fresh": true})),
        Err(Error::Deleted { .. })
    ));
    let generation = again.replace(json!({"fresh": true})).unwrap();
    assert!(
        generation > 6,
        "generation {generation} repeats one the journal used"
    );
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state, json!({"fresh": true}));
}

#[test]
fn a_damaged_journal_is_served_read_only_while_the_lock_is_held_then_recovered() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    damage_first_record(&path);
    let holder: Store = Store::open(&path).unwrap();
    let guard = holder.lock("maintenance").unwrap();
    let (seen, hook) = events();
    let reader: Store = Store::options().on_event(hook).open(&path).unwrap();
    let snap = reader.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 0}), 1));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::DamageNotRepaired { served: 1, .. })),
        "{:?}",
        seen.lock().unwrap()
    );
    let report = reader.check().unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.contains("journal")),
        "{report:?}"
    );
    drop(guard);
    let event = reader.recover().unwrap();
    assert!(
        matches!(event, Some(Event::Recovered { generation: 5, .. })),
        "{event:?}"
    );
    assert!(reader.check().unwrap().is_ok());
    assert_eq!(reader.recover().unwrap(), None);
}

#[test]
fn leaving_journal_mode_writes_the_newest_state_into_the_file() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    for n in 1..=4u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let settings = Settings {
        format: Format::Plain,
        ..store.settings()
    };
    store.save_settings(&settings).unwrap();
    assert!(!journal_path(&path).exists());
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, json!({"n": 4}));
    let plain: Store = Store::open(&path).unwrap();
    assert_eq!(plain.load().unwrap().generation, 6);
    // The journal's commits went into the history before it was removed.
    let history = plain.history().unwrap();
    assert_eq!(
        history.iter().map(|e| e.generation).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert!(history[1..].iter().all(|e| e.writer.is_some()));
    assert_eq!(plain.document_at(3).unwrap(), json!({"n": 2}));
    plain.update(|s| s["n"] = 5.into()).unwrap();
    // And back: the first commit in journal mode starts a journal.
    let settings = Settings {
        format: Format::Journal,
        ..plain.settings()
    };
    plain.save_settings(&settings).unwrap();
    plain.update(|s| s["n"] = 6.into()).unwrap();
    plain.update(|s| s["n"] = 7.into()).unwrap();
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 7}), 9));
}

/// Three commits that append, then one that compacts (the parent set a small limit).
#[test]
fn child_journal_appends_then_compacts() {
    if !common::child_role("journal-appends-then-compacts") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    let inode = common::inode(Path::new(&common::child_arg("PATH")));
    let mut n = 0u64;
    while common::inode(Path::new(&common::child_arg("PATH"))) == inode {
        n += 1;
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    common::say(format!("commits {n}"));
}

/// The order that makes journal mode durable, seen in the system calls of real
/// commits (`strace -y`): every append is followed by an `fdatasync` of the journal
/// before the next one, and a compaction replaces the journal only after the new
/// snapshot was renamed into place and its directory synced. Catches the mutations
/// `journal-skip-flush` and `journal-compact-early`.
#[test]
fn appends_are_flushed_and_compaction_replaces_the_journal_last() {
    let test = "journal::appends_are_flushed_and_compaction_replaces_the_journal_last";
    let Some((_dir, real)) = common::strace_test_dir(test) else {
        return;
    };
    let path = real.join("state.json");
    let store: Store = Store::open(&path).unwrap();
    let settings = Settings {
        // Room for a few records (each carries its time and writer).
        journal_max_bytes: Some(1500),
        ..journal_settings()
    };
    store.create_with(&settings, json!({"n": 0})).unwrap();
    drop(store);
    let log = real.join("strace.log");
    let out = ChildCmd::traced(
        &log,
        "fsync,fdatasync,pwrite64,rename,renameat,renameat2",
        "journal::child_journal_appends_then_compacts",
        "journal-appends-then-compacts",
    )
    .arg("PATH", &path)
    .run();
    let commits: u64 = out[0].strip_prefix("commits ").unwrap().parse().unwrap();
    assert!(commits >= 3, "{out:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<common::Call> = text.lines().filter_map(common::parse_call).collect();
    let journal = path.parent().unwrap().join(".state.json.statesafe/journal");
    let journal = journal.to_str().unwrap();
    // Appends: each pwrite to the journal is flushed before the next one.
    let mut pending = false;
    let mut appends = 0;
    for c in &calls {
        if c.fd_path == journal && c.name.starts_with("pwrite") {
            assert!(!pending, "a journal append was not flushed before the next");
            pending = true;
            appends += 1;
        }
        if c.fd_path == journal && c.name == "fdatasync" {
            pending = false;
        }
    }
    assert!(!pending, "the last journal append was not flushed");
    assert_eq!(appends as u64, commits - 1, "{text}");
    // Compaction: the snapshot's rename and the directory sync come before the new
    // journal's rename.
    let at = |pred: &dyn Fn(&common::Call) -> bool| calls.iter().position(pred);
    let snapshot =
        at(&|c| c.name.starts_with("rename") && c.quoted.last().is_some_and(|q| q == "state.json"))
            .expect("the compaction renamed a snapshot into place");
    let dir_sync = calls[snapshot..]
        .iter()
        .position(|c| c.name == "fsync" && c.fd_path == real.to_str().unwrap())
        .map(|i| i + snapshot)
        .expect("the directory was synced after the snapshot's rename");
    let new_journal =
        at(&|c| c.name.starts_with("rename") && c.quoted.last().is_some_and(|q| q == "journal"))
            .expect("the compaction started a new journal");
    assert!(
        new_journal > dir_sync,
        "the journal was replaced (call {new_journal}) before the snapshot was durable (call {dir_sync})"
    );
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state["n"], commits);
}

/// Commits of a long-lived store (the parent counts their system calls).
#[test]
fn child_journal_commits() {
    if !common::child_role("journal-commits") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    let n: u64 = common::child_arg("N").parse().unwrap();
    for i in 1..=n {
        store.update(|s| s["n"] = i.into()).unwrap();
    }
    common::say(format!("commits {n}"));
}

/// A journal-mode file made in a directory `strace` can trace, then `n` settled commits
/// of one long-lived store in a child traced for `calls`: the directory, the file and
/// the trace (`None`: strace cannot run here, which `strace_test_dir` reports).
fn traced_commits(
    test: &str,
    calls: &str,
    n: impl std::fmt::Display,
) -> Option<(tempfile::TempDir, PathBuf, String)> {
    let (dir, real) = common::strace_test_dir(test)?;
    let path = real.join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store
        .create_with(&journal_settings(), json!({"n": 0}))
        .unwrap();
    drop(store);
    let log = real.join("strace.log");
    let out = ChildCmd::traced(
        &log,
        calls,
        "journal::child_journal_commits",
        "journal-commits",
    )
    .arg("PATH", &path)
    .arg("N", n.to_string())
    .run();
    assert_eq!(out[0], format!("commits {n}"), "{out:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    Some((dir, path, text))
}

/// A long-lived store keeps its journal open between commits: once its cache holds
/// the document, a commit checks the journal's name with one `fstatat` (the same
/// file, one link, the owner and mode it had) instead of opening it again, and the
/// lock file's identity is the one taken when it was opened (no `fstat` of it per
/// commit). Pins the count: a change that opens the journal, or `fstat`s a kept
/// descriptor, once per commit again shows here.
#[test]
fn a_long_lived_store_opens_its_journal_once_not_once_per_commit() {
    let test = "journal::a_long_lived_store_opens_its_journal_once_not_once_per_commit";
    let n = 20u64;
    let Some((_dir, path, text)) = traced_commits(test, "openat,fstat,fdatasync", n) else {
        return;
    };
    let calls: Vec<common::Call> = text.lines().filter_map(common::parse_call).collect();
    let sidecar = sidecar(&path);
    let journal = sidecar.join("journal");
    let journal = journal.to_str().unwrap();
    let lock = sidecar.join("lock");
    let lock = lock.to_str().unwrap();
    let flushes = calls
        .iter()
        .filter(|c| c.name == "fdatasync" && c.fd_path == journal)
        .count();
    assert_eq!(flushes as u64, n, "{text}");
    // The first two commits read the file in full (the cache is filled from a
    // store's second full read on) and open the journal to append; the third's
    // check opens it and keeps it. None after that.
    let opens = calls
        .iter()
        .filter(|c| c.name == "openat" && c.quoted.first().is_some_and(|q| q == "journal"))
        .count();
    assert!(
        (1..=6).contains(&opens),
        "the journal was opened {opens} times in {n} commits:\n{text}"
    );
    let lock_fstats = calls
        .iter()
        .filter(|c| c.name == "fstat" && c.fd_path == lock)
        .count();
    // Once at the start, and once per full read (the first two commits), which reads
    // the slots through a descriptor of its own (`Store::refuse_cut_journal`).
    assert!(
        lock_fstats <= 3,
        "the lock file was fstat'ed {lock_fstats} times in {n} commits:\n{text}"
    );
}

/// The fixed system calls of a settled `update`, pinned where they were cut (lean11):
/// the process id is asked for at most four times per commit (once before the lock is
/// taken, for everything up to the caller's code; by the commit's fork check after it;
/// by the check right before the append that the lock is still in place, which also
/// catches a fork in a validation rule; at the release), where it was seven; and the journal's name is looked up twice per
/// lock hold (the refresh's check of the kept descriptor, and the append's after the
/// caller's code), never more.
#[test]
fn a_settled_commit_asks_for_its_pid_at_most_four_times() {
    let test = "journal::a_settled_commit_asks_for_its_pid_at_most_four_times";
    let n = 40usize;
    let Some((_dir, path, text)) = traced_commits(test, "getpid,%stat,fdatasync", n) else {
        return;
    };
    let calls: Vec<common::Call> = text.lines().filter_map(common::parse_call).collect();
    let journal = sidecar(&path).join("journal");
    let journal = journal.to_str().unwrap();
    let flushes = calls
        .iter()
        .filter(|c| c.name == "fdatasync" && c.fd_path == journal)
        .count();
    assert_eq!(flushes, n, "{text}");
    // Allowance for the first commits (full reads, the cache filled) and the store's
    // opening.
    let pids = calls.iter().filter(|c| c.name == "getpid").count();
    assert!(
        pids <= 4 * n + 12,
        "{pids} getpid calls in {n} commits:\n{text}"
    );
    let journal_stats = calls
        .iter()
        .filter(|c| c.name.contains("stat") && c.quoted.first().is_some_and(|q| q == "journal"))
        .count();
    assert!(
        journal_stats <= 2 * n + 6,
        "the journal's name was looked up {journal_stats} times in {n} commits:\n{text}"
    );
}

#[test]
fn deep_documents_replay_like_any_other() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    // Deeper than serde_json's default limit of 128, within statesafe's 512.
    let mut deep = json!(0);
    for _ in 0..300 {
        deep = json!({ "d": deep });
    }
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["deep"] = deep.clone()).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    let (seen, hook) = events();
    let reader: Store = Store::options().on_event(hook).open(&path).unwrap();
    let snap = reader.load().unwrap();
    assert_eq!(snap.generation, 3);
    assert_eq!(snap.state["deep"], deep);
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn a_store_that_missed_the_switch_out_of_journal_mode_writes_nothing() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let old = create_journal(&path, json!({"n": 0}));
    old.update(|s| s["n"] = 1.into()).unwrap();
    let other: Store = Store::open(&path).unwrap();
    let settings = Settings {
        format: Format::Plain,
        ..other.settings()
    };
    other.save_settings(&settings).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = old.update(|s| s["n"] = 2.into()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("open the store again"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!journal_path(&path).exists());
    assert_eq!(Store::<Value>::open(&path).unwrap().get().unwrap()["n"], 1);
}

/// The generations of the history log's lines, as written (duplicates included).
fn logged_generations(path: &Path) -> Vec<u64> {
    let dir = sidecar(path).join("history");
    let mut names: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    let mut out = Vec::new();
    for name in names {
        for line in std::fs::read_to_string(name).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            out.push(v["generation"].as_u64().unwrap());
        }
    }
    out
}

/// A value that makes the document longer than a one-key patch.
const KEEP: &str = "a value long enough that a one-key patch is shorter than the document";

#[test]
fn every_journal_commit_is_in_the_history_with_its_time_writer_and_patch() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0, "keep": KEEP}));
    for n in 1..=5u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    // A whole replacement shorter than its patch: a record holding the document.
    store.replace(json!({"n": 6})).unwrap();
    // The commits since the compaction wrote nothing but their records.
    assert_eq!(logged_generations(&path), vec![1]);
    // A record of the store that wrote the one before it leaves its writer out.
    let bytes = std::fs::read(journal_path(&path)).unwrap();
    let named = bytes.windows(9).filter(|w| w == b"\"writer\":").count();
    assert!(named < 6, "{named} of 6 records name their writer");
    for reader in [&store, &Store::<Value>::open(&path).unwrap()] {
        let history = reader.history().unwrap();
        let generations: Vec<u64> = history.iter().map(|e| e.generation).collect();
        assert_eq!(generations, (1..=7).collect::<Vec<_>>());
        for entry in &history[1..] {
            assert_eq!(entry.change, statesafe::Change::Commit);
            let writer = entry
                .writer
                .as_ref()
                .expect("a journal commit names its writer");
            assert_eq!(writer.pid, std::process::id());
            assert!(!writer.command.is_empty());
            assert!(
                humantime::parse_rfc3339(&entry.time).is_ok(),
                "{}",
                entry.time
            );
            assert!(entry.note.is_none(), "{:?}", entry.note);
        }
        // Patches for the updates, the document for the replacement.
        assert!(history[2].patch.is_some());
        assert_eq!(history[6].snapshot, Some(json!({"n": 6})));
        // Every generation since the history began can be rebuilt, and diffed.
        for g in 1..=5u64 {
            assert_eq!(
                reader.document_at(g).unwrap(),
                json!({"n": g - 1, "keep": KEEP}),
                "generation {g}"
            );
        }
        let diff = serde_json::to_value(reader.diff(2, 4).unwrap()).unwrap();
        assert_eq!(diff, json!([{"op": "replace", "path": "/n", "value": 3}]));
    }
}

#[test]
fn compaction_moves_the_records_history_into_the_log_once() {
    let (_dir, path, store) = thirty_commits_through_a_compaction(1500);
    let logged = logged_generations(&path);
    let mut unique = logged.clone();
    unique.dedup();
    assert_eq!(logged, unique, "an entry was written twice");
    let snapshot_generation = Store::<Value>::open(&path)
        .unwrap()
        .backups()
        .unwrap()
        .backups
        .iter()
        .map(|b| b.generation)
        .max()
        .unwrap();
    assert!(snapshot_generation > 1);
    // Everything up to the last compaction is in the log, each generation once.
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let compacted = on_disk["n"].as_u64().unwrap() + 1;
    assert_eq!(logged, (1..=compacted).collect::<Vec<_>>());
    let history = Store::<Value>::open(&path).unwrap().history().unwrap();
    assert_eq!(
        history.iter().map(|e| e.generation).collect::<Vec<_>>(),
        (1..=31).collect::<Vec<_>>()
    );
    assert!(history[1..].iter().all(|e| e.writer.is_some()));
    for g in 1..=31u64 {
        assert_eq!(store.document_at(g).unwrap(), json!({"n": g - 1}), "{g}");
    }
}

/// Journal mode's history: the commits since the last compaction are its journal's
/// records (checksummed, verified on read); a compaction moves them into the log,
/// each entry with the checksum of the version it produces, so a log line edited by
/// hand is never served as a committed version.
#[test]
fn a_compacted_history_line_edited_by_hand_is_never_served() {
    let (_dir, path, store) = thirty_commits_through_a_compaction(1500);
    let seg_dir = sidecar(&path).join("history");
    let mut segs: Vec<_> = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let lines: Vec<String> = segs
        .iter()
        .flat_map(|s| {
            std::fs::read_to_string(s)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(lines.len() > 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("\"checksum\":\"")),
        "a compacted entry without its checksum: {lines:?}"
    );
    assert_eq!(store.document_at(3).unwrap(), json!({"n": 2}));
    let mut edited = 0;
    for seg in &segs {
        let text = std::fs::read_to_string(seg).unwrap();
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("{\"generation\":3,") {
                    // A record of the whole document is the entry's snapshot; a patch
                    // record its patch.
                    let edit = l
                        .replace("\"snapshot\":{\"n\":2}", "\"snapshot\":{\"n\":999}")
                        .replace("\"value\":2", "\"value\":999");
                    edited += usize::from(edit != l);
                    edit
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(seg, out.join("\n") + "\n").unwrap();
    }
    assert_eq!(
        edited, 1,
        "generation 3's entry was not found to edit: {lines:?}"
    );
    let reader = Store::<Value>::open(&path).unwrap();
    match reader.document_at(3) {
        Err(Error::GenerationUnavailable { reason, .. }) => {
            assert!(reason.contains("history entry of generation 3"), "{reason}")
        }
        other => panic!("a version nobody committed was served: {other:?}"),
    }
}

#[test]
fn a_crash_before_the_new_journal_neither_loses_nor_duplicates_history() {
    // The history and the snapshot of generation n + 1 are in place, the new
    // journal's rename never happened (the old journal, records up to n, is back).
    let (_dir, path, n) = crash_before_the_new_journal(1500);
    let reader: Store = Store::open(&path).unwrap();
    let generations =
        |s: &Store| -> Vec<u64> { s.history().unwrap().iter().map(|e| e.generation).collect() };
    assert_eq!(generations(&reader), (1..=n + 1).collect::<Vec<_>>());
    // The next commit compacts again: the stale records are in the log already.
    reader.update(|s| s["n"] = 1000.into()).unwrap();
    reader.update(|s| s["m"] = 1.into()).unwrap();
    let logged = logged_generations(&path);
    assert_eq!(
        logged,
        (1..=n + 2).collect::<Vec<_>>(),
        "lost or duplicated"
    );
    assert_eq!(generations(&reader), (1..=n + 3).collect::<Vec<_>>());
    assert_eq!(reader.document_at(n).unwrap(), json!({"n": n - 1}));
}

#[test]
fn versions_since_the_last_compaction_are_backups_and_can_be_restored() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    for n in 1..=6u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    // The five newest replaced versions (the default retention), from the records.
    let list = store.backups().unwrap();
    let generations: Vec<u64> = list.backups.iter().map(|b| b.generation).collect();
    assert_eq!(generations, vec![6, 5, 4, 3, 2]);
    assert!(list.backups.iter().all(|b| b.path == journal_path(&path)));
    // Nothing was written for them.
    assert!(!sidecar(&path).join("backups").exists());
    // Restore one: a new generation, recorded as a restore.
    let restored = store.restore(3).unwrap();
    assert_eq!(restored, 8);
    let reader: Store = Store::open(&path).unwrap();
    assert_eq!(reader.load().unwrap().state, json!({"n": 2}));
    let last = reader.history().unwrap().pop().unwrap();
    assert_eq!(
        (last.generation, last.change),
        (8, statesafe::Change::Restore { from: 3 })
    );
    // The snapshot itself, once it falls in the window, is the file.
    let store = create_journal(&dir.path().join("b.json"), json!({"n": 0}));
    store.update(|s| s["n"] = 1.into()).unwrap();
    let list = store.backups().unwrap();
    assert_eq!(list.backups.len(), 1);
    assert_eq!(
        (list.backups[0].generation, list.backups[0].path.clone()),
        (1, dir.path().join("b.json"))
    );
    // A generation that is neither kept nor in the journal is unavailable.
    assert!(matches!(
        store.restore(7),
        Err(Error::GenerationUnavailable { generation: 7, .. })
    ));
}

#[test]
fn group_committed_patches_are_in_the_history_too() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0, "keep": KEEP}));
    // The kept document comes from a store's second full read on.
    store.load().unwrap();
    for n in 1..=3u64 {
        store
            .apply_patch(&json!([{"op": "replace", "path": "/n", "value": n}]))
            .unwrap();
    }
    let history = Store::<Value>::open(&path).unwrap().history().unwrap();
    assert_eq!(
        history.iter().map(|e| e.generation).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for entry in &history[1..] {
        assert_eq!(entry.writer.as_ref().unwrap().pid, std::process::id());
        assert_eq!(
            serde_json::to_value(entry.patch.as_ref().unwrap()).unwrap(),
            json!([{"op": "replace", "path": "/n", "value": entry.generation - 1}])
        );
    }
}

/// The `durable` field of the metadata of the record at `at` in the journal's bytes.
fn durable_claim(bytes: &[u8], at: usize) -> Option<u64> {
    let meta_len = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()) as usize;
    let meta: Value = serde_json::from_slice(&bytes[at + 20..at + 20 + meta_len]).unwrap();
    meta["durable"].as_u64()
}

#[test]
fn each_record_says_the_journal_was_durable_up_to_its_own_offset() {
    // Every append is flushed before the writers' lock is released, so the writer of
    // a record holds every record before it durable: a bad record before it is damage,
    // never a torn append (the reader's rule, docs/design.md "Journal mode").
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0, "keep": KEEP}));
    store.load().unwrap();
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
        Store::<Value>::open(&path)
            .unwrap()
            .update(|s| s["m"] = n.into())
            .unwrap();
        store
            .apply_patch(&json!([{"op": "replace", "path": "/n", "value": n + 10}]))
            .unwrap();
    }
    let bytes = std::fs::read(journal_path(&path)).unwrap();
    let offsets = record_offsets(&path);
    assert_eq!(offsets.len(), 9);
    for at in offsets {
        assert_eq!(
            durable_claim(&bytes, at as usize),
            Some(at),
            "record at {at}"
        );
    }
}

#[test]
fn a_group_commits_records_say_the_journal_was_durable_up_to_their_batch() {
    // The records of one batch are written by one `pwrite` and flushed by one
    // `fdatasync`: each holds durable what was before the batch (the offset of its
    // first record), so a power loss that keeps a later record of the batch and not
    // an earlier one leaves a torn tail, not damage.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = Arc::new(create_journal(&path, json!({"keep": KEEP})));
    store.load().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for n in 0..10u64 {
                    store
                        .apply_patch(&json!([{"op": "add", "path": format!("/t{t}"), "value": n}]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let bytes = std::fs::read(journal_path(&path)).unwrap();
    let offsets = record_offsets(&path);
    assert_eq!(offsets.len(), 40);
    for (i, &at) in offsets.iter().enumerate() {
        let claim = durable_claim(&bytes, at as usize).unwrap();
        // The first record of its batch: this one or one before it.
        assert!(
            offsets[..=i].contains(&claim),
            "record at {at} claims {claim}"
        );
    }
}

/// Forgets every durable end published in the lock file (past its 4 KiB lock record
/// page), as after the writer of the journal's last records died between its append
/// and its flush, or its flush failed.
fn forget_published(path: &Path) {
    let lock = sidecar(path).join("lock");
    let len = std::fs::metadata(&lock).unwrap().len();
    assert!(len > 4096, "no durable end was published in the lock file");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lock)
        .unwrap()
        .write_all_at(&vec![0; (len - 4096) as usize], 4096)
        .unwrap();
}

#[test]
fn records_no_flush_vouches_for_are_compacted_not_appended_after() {
    // A writer appends with the writers' lock held and flushes after releasing it. A
    // writer whose `fdatasync` failed (the kernel then marks the pages clean,
    // unwritten, and tells no descriptor opened later), or that was killed before
    // flushing, leaves records that may be only in the page cache. A descriptor opened
    // before them reports such a failure at its own flush, so a store that kept one
    // appends; a descriptor opened after them cannot, so a store with a fresh one waits
    // for their writers to publish their flushes and, when none does, compacts: the new
    // snapshot is durable whatever the journal's pages hold.
    for group in [false, true] {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let store = create_journal(&path, json!({"n": 0, "keep": KEEP}));
        store.load().unwrap();
        store.update(|s| s["n"] = 1.into()).unwrap();
        store.update(|s| s["n"] = 2.into()).unwrap();
        assert_eq!(record_offsets(&path).len(), 2);
        forget_published(&path);
        // The store's own descriptor was opened before the records: its flush vouches.
        store.update(|s| s["n"] = 3.into()).unwrap();
        assert_eq!(record_offsets(&path).len(), 3, "group commit: {group}");
        forget_published(&path);
        let fresh: Store = Store::open(&path).unwrap();
        if group {
            fresh
                .apply_patch(&json!([{"op": "replace", "path": "/n", "value": 4}]))
                .unwrap();
        } else {
            fresh.update(|s| s["n"] = 4.into()).unwrap();
        }
        let snapshot: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(snapshot["n"], 4, "group commit: {group}");
        assert!(record_offsets(&path).is_empty(), "group commit: {group}");
        // Published again: a store opening the journal now appends.
        store.update(|s| s["n"] = 5.into()).unwrap();
        let another: Store = Store::open(&path).unwrap();
        another.update(|s| s["n"] = 6.into()).unwrap();
        assert_eq!(record_offsets(&path).len(), 2, "group commit: {group}");
        assert_eq!(
            Store::<Value>::open(&path).unwrap().load().unwrap().state["n"],
            6
        );
    }
}
