//! lost19: a state file deleted (a careless `rm`, a cleanup script, a sync tool) while
//! its sidecar shows committed generations is never served, or written over, as a new
//! life from defaults: every read and every transaction refuses it with
//! `Error::Deleted`, naming the last generation known, the newest backup and the way
//! out (`recover` puts the newest provable version back; `replace` starts over on
//! purpose). FAILURE_MODES.md row 13 ("recovery" that resets to defaults) in its
//! simplest form: the file is not damaged but gone, and the default took its place.
//! A state that never had a commit keeps serving the default.

use std::path::Path;

use serde_json::{Value, json};
use statesafe::{Error, Format, Store};

use crate::common;

/// A store at `path` that committed generations 1 to 3 (`{"n": 1}` .. `{"n": 3}`),
/// then the file deleted: its sidecar keeps backups of 1 and 2 and the history.
fn three_commits_then_rm(path: &Path, format: Format) -> Store {
    let store: Store = if format == Format::Journal {
        // Journal mode is recorded in the settings, not given as an option.
        let first: Store = Store::open(path).unwrap();
        first
            .save_settings(&statesafe::Settings {
                format,
                ..Default::default()
            })
            .unwrap();
        Store::open(path).unwrap()
    } else {
        Store::options().format(format).open(path).unwrap()
    };
    for _ in 0..3 {
        store
            .update_or_default(|s: &mut Value| {
                let n = s.get("n").and_then(Value::as_u64).unwrap_or(0);
                s["n"] = (n + 1).into();
            })
            .unwrap();
    }
    assert_eq!(store.load().unwrap().generation, 3);
    std::fs::remove_file(path).unwrap();
    store
}

/// Asserts `e` is the refusal of a deleted file with generation 3 known, naming the
/// file, that generation, and `statesafe recover`.
fn assert_deleted<T: std::fmt::Debug>(path: &Path, result: Result<T, Error>) {
    let e = result.expect_err("a deleted state file with committed generations was served");
    assert_eq!(e.kind(), "deleted", "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("generation 3"), "{text}");
    let hint = e.hint().unwrap_or_default();
    assert!(hint.contains("statesafe recover"), "{hint}");
    assert!(
        !path.exists(),
        "the refusal wrote a file: {:?}",
        std::fs::read(path)
    );
}

#[test]
fn deleted_a_load_of_a_deleted_file_is_refused_not_not_found() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    assert_deleted(&path, store.load());
    // A store opened afresh knows it from the sidecar alone.
    let again: Store = Store::open(&path).unwrap();
    assert_deleted(&path, again.load());
}

#[test]
fn deleted_load_or_default_does_not_serve_the_default() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    assert_deleted(&path, store.load_or_default());
}

#[test]
fn deleted_no_transaction_starts_a_new_life_from_the_default() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    assert_deleted(&path, store.update_or_default(|s| s["n"] = 100.into()));
    assert_deleted(&path, store.begin_or_insert_with(|| json!({})).map(|_| ()));
    assert_deleted(&path, store.update(|s| s["n"] = 100.into()));
    assert_deleted(&path, store.update_if(0, |s| s["n"] = 100.into()));
}

#[test]
fn deleted_create_and_replace_if_zero_are_refused() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    assert_deleted(&path, store.create(json!({"fresh": true})));
    assert_deleted(&path, store.replace_if(0, json!({"fresh": true})));
    assert_deleted(
        &path,
        store.create_with(&store.settings(), json!({"fresh": true})),
    );
}

/// The refusal names the newest backup, and `recover` puts back the newest version
/// it can prove: backup 2 carried forward by the history to generation 3's document,
/// as the next generation, with an event saying so.
#[test]
fn deleted_recover_puts_the_last_committed_document_back() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    let e = store.load().unwrap_err();
    let Error::Deleted {
        generation,
        newest_backup,
        ..
    } = &e
    else {
        panic!("not Deleted: {e:?}");
    };
    assert_eq!(*generation, 3);
    let newest = newest_backup.clone().expect("the newest backup is named");
    assert!(newest.exists(), "{}", newest.display());
    assert!(e.to_string().contains(&newest.display().to_string()), "{e}");
    let event = store.recover().unwrap().expect("recover says what it did");
    let text = event.to_string();
    assert!(text.contains("deleted"), "{text}");
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 3}), "{text}");
    assert_eq!(snap.generation, 4);
    // And the life goes on from there.
    store.update(|s| s["n"] = 4.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 5);
}

/// Without history, recover puts the newest backup back (generation 2's document).
#[test]
fn deleted_recover_without_history_restores_the_newest_backup() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .history(statesafe::HistoryPolicy {
            keep: 0,
            ..Default::default()
        })
        .open(&path)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.replace(json!({"n": 2})).unwrap();
    store.replace(json!({"n": 3})).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_deleted(&path, store.load());
    store.recover().unwrap().expect("recovered");
    let snap = store.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 2}), 4));
}

/// `replace` writes a whole document whatever is there: the explicit way to start
/// over, which continues after the generations known (never repeating one).
#[test]
fn deleted_replace_starts_over_on_purpose() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    assert_eq!(store.replace(json!({"fresh": true})).unwrap(), 4);
    assert_eq!(store.load().unwrap().state, json!({"fresh": true}));
}

/// fix20c (review20 finding 6): a state put back (`recover`) or started over
/// (`replace`) in place of a deleted file is that state's next version, with the
/// permissions its sidecar kept: a group-writable file stays group-writable (its
/// co-writers keep their access), a group-readable one group-readable, and neither
/// becomes readable by others. Before: every one came back 0644 (a new file's mode).
#[test]
fn deleted_recover_and_replace_keep_the_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o660, 0o640, 0o606, 0o644, 0o600] {
        for start_over in [false, true] {
            let dir = common::test_dir();
            let path = dir.path().join("state.json");
            let store: Store = Store::open(&path).unwrap();
            store.create(json!({"n": 1})).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            store.update(|s| s["n"] = 2.into()).unwrap();
            std::fs::remove_file(&path).unwrap();
            if start_over {
                store.replace(json!({"fresh": true})).unwrap();
            } else {
                store.recover().unwrap().expect("recovered");
            }
            assert_eq!(
                common::mode(&path),
                mode,
                "{mode:o}, start over {start_over}"
            );
            let sidecar = store.sidecar_path();
            let history = std::fs::read_dir(sidecar.join("history"))
                .unwrap()
                .map(|e| common::mode(&e.unwrap().path()));
            for got in history {
                assert_eq!(got, mode, "history of {mode:o}, start over {start_over}");
            }
        }
    }
}

/// fix20c (review20 finding 7): with the state file gone, nothing says who may write
/// it, so a sidecar is trusted only when it is the caller's or the directory's owner's
/// (who may create, rename and remove anything there anyway). Another user's sidecar
/// stays refused, even for root and even when it holds a plausible deleted state
/// (planted, or a co-writer's): `Unsafe`, nothing written, and a hint that does not
/// send anyone to remove what may be the state's only copies. Once that user owns the
/// directory, the same sidecar is theirs to keep, and root puts the file back for
/// them. Before: the second half failed with `Unsafe` ("who is not you, and there is
/// no state file yet"), and the hint said to remove the sidecar.
#[test]
fn deleted_with_no_file_only_the_directory_owners_sidecar_is_trusted() {
    let test = "deleted::deleted_with_no_file_only_the_directory_owners_sidecar_is_trusted";
    if !common::is_root() {
        common::skipped(test, "needs root to give the sidecar to another user");
        return;
    }
    let dir = common::test_dir();
    let home = dir.path().join("shared");
    std::fs::create_dir(&home).unwrap();
    let path = home.join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    let sidecar = store.sidecar_path();
    let chown_all = |uid: u32| {
        let mut stack = vec![sidecar.clone()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).unwrap();
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
    };
    chown_all(65534);
    let e = Store::<Value>::open(&path)
        .and_then(|s| s.recover())
        .unwrap_err();
    assert!(
        matches!(&e, Error::Unsafe { path: p, .. } if *p == sidecar),
        "{e:?}"
    );
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("statesafe recover") && !hint.contains("re-creates"),
        "{hint}"
    );
    assert!(!path.exists());
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let store: Store = Store::open(&path).unwrap();
    assert_deleted(&path, store.load());
    store.recover().unwrap().expect("recovered");
    assert_eq!(store.load().unwrap().state, json!({"n": 3}));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);
}

/// fix20c: the other side of trusting the directory owner's sidecar when there is no
/// file. In a directory another user (uid 1000) owns and everyone may write, that
/// user plants a sidecar that shows generations, with a lock file writable by all.
/// An ordinary user (nobody) who starts the state over there (`replace`) gets a file
/// of their own that is not writable by others: the planter's sidecar does not choose
/// who may write it. Without this rule the file came back 0666 (and, with the
/// sidecar in a group the caller is not in, the start-over failed: `KeepGroup`).
#[test]
fn deleted_another_users_sidecar_does_not_make_the_callers_file_writable_by_others() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let test =
        "deleted::deleted_another_users_sidecar_does_not_make_the_callers_file_writable_by_others";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let path = shared.join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    let sidecar = store.sidecar_path();
    drop(store);
    std::fs::set_permissions(sidecar.join("lock"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut stack = vec![sidecar.clone(), shared.clone()];
    while let Some(p) = stack.pop() {
        // In a group the caller is in too (nobody's), so only the mode can differ.
        std::os::unix::fs::lchown(&p, Some(1000), Some(65534)).unwrap();
        if p.is_dir() && p != shared {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = common::ChildCmd::wrapped(
        &common::AS_NOBODY,
        "deleted::deleted_child_starts_over",
        "deleted-start-over",
    )
    .arg("PATH", &path)
    .run();
    assert_eq!(out, vec!["replaced".to_string()], "{out:?}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.uid(), 65534);
    assert_eq!(
        meta.mode() & 0o022,
        0,
        "another user's sidecar made the caller's file writable by others: {:o}",
        meta.mode() & 0o7777
    );
}

#[test]
fn deleted_child_starts_over() {
    if !common::child_role("deleted-start-over") {
        return;
    }
    let path = std::path::PathBuf::from(common::child_arg("PATH"));
    let store: Store = Store::open(&path).unwrap();
    match store.replace(json!({"mine": 1})) {
        Ok(_) => common::say("replaced"),
        Err(e) => common::say(format!("error {e:?}")),
    }
}

/// The control: a state that never had a commit serves the default, and a plain
/// `load` says the file is not found.
#[test]
fn deleted_control_a_state_never_committed_serves_the_default() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    assert!(matches!(store.load(), Err(Error::NotFound { .. })));
    assert_eq!(store.load_or_default().unwrap().generation, 0);
    // A lock taken and released, and settings saved, are no commit.
    drop(store.lock("maintenance").unwrap());
    assert!(matches!(store.load(), Err(Error::NotFound { .. })));
    assert_eq!(store.update_or_default(|s| s["n"] = 1.into()).unwrap(), ());
    assert_eq!(store.load().unwrap().generation, 1);
}

/// Deleting the sidecar with the file discards the old life as a whole: nothing is
/// left to tell it existed, and the default is served (the documented way to start
/// over from nothing, besides `replace`).
#[test]
fn deleted_with_its_sidecar_the_state_starts_over() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    std::fs::remove_dir_all(store.sidecar_path()).unwrap();
    let store: Store = Store::open(&path).unwrap();
    assert!(matches!(store.load(), Err(Error::NotFound { .. })));
    assert_eq!(store.load_or_default().unwrap().generation, 0);
}

/// Another store of the same file (another process's commits) made the generations;
/// a store opened before them, which never committed, is refused as well.
#[test]
fn deleted_between_two_commits_of_another_store() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let early: Store = Store::open(&path).unwrap();
    let _writer = three_commits_then_rm(&path, Format::Plain);
    assert_deleted(&path, early.load_or_default());
    assert_deleted(&path, early.update_or_default(|s| s["n"] = 0.into()));
}

#[test]
fn deleted_sealed_file_is_refused() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Sealed);
    assert_deleted(&path, store.load_or_default());
    assert_deleted(&path, store.update_or_default(|s| s["n"] = 0.into()));
    store.recover().unwrap().expect("recovered");
    assert_eq!(store.load().unwrap().state, json!({"n": 3}));
}

/// Journal mode: a store that keeps the document in memory (`journal/cache.rs`)
/// does not serve its cached copy or the default once the snapshot is deleted.
#[test]
fn deleted_journal_snapshot_is_refused_by_a_store_with_a_cached_copy() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Journal);
    assert_deleted(&path, store.load());
    assert_deleted(&path, store.load_or_default());
    assert_deleted(&path, store.update_or_default(|s| s["n"] = 0.into()));
    // The first snapshot has no backup, but the history holds it whole (generation 1's
    // entry, with its checksum) and the journal's records are changes to exactly that
    // document: recover puts back generation 3 (before review20 it said
    // `Unrecoverable`, as if nothing proved a version).
    let event = store.recover().unwrap().expect("recover says what it did");
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 3}), "{event}");
    assert_eq!(snap.generation, 4, "{event}");
}

/// An empty file in its place is damage, not a missing file: recovered from the
/// backups as before, never the default.
#[test]
fn deleted_control_an_empty_file_in_its_place_is_recovered_not_defaulted() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    std::fs::write(&path, b"").unwrap();
    let snap = store.load_or_default().unwrap();
    assert_eq!(snap.state, json!({"n": 3}));
}

/// The child for [`deleted_a_reader_who_may_not_write_is_refused_not_served_the_default`]:
/// loads the state at `PATH` with a default and says what it got.
#[test]
fn deleted_child_reads_with_a_default() {
    if !common::child_role("read-with-default") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    match store.load_or_default() {
        Ok(snap) => common::say(format!(
            "served generation {} {}",
            snap.generation, snap.state
        )),
        Err(Error::Deleted { generation, .. }) => common::say(format!("deleted {generation}")),
        Err(e) => common::say(format!("other {} {e}", e.kind())),
    }
}

/// fix21rs (1): a user who may read the state file but not write it cannot open its
/// lock file (`sidecar::lock_mode`), so the lock record's generation is unseen; with
/// no backups, no history and the metadata record in the file's own attribute (gone
/// with it), such a reader found nothing in the sidecar and was served the default
/// for a deleted file (it printed `served generation 0 null`). The sidecar's
/// `committed` record, readable by whoever may read the file, proves commits.
#[test]
fn deleted_a_reader_who_may_not_write_is_refused_not_served_the_default() {
    let test = "deleted::deleted_a_reader_who_may_not_write_is_refused_not_served_the_default";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .backups(statesafe::BackupPolicy {
            keep: 0,
            ..Default::default()
        })
        .history(statesafe::HistoryPolicy {
            keep: 0,
            ..Default::default()
        })
        .open(&path)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.replace(json!({"n": 2})).unwrap();
    store.replace(json!({"n": 3})).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let read_as_nobody = || {
        common::ChildCmd::wrapped(
            &common::AS_NOBODY,
            "deleted::deleted_child_reads_with_a_default",
            "read-with-default",
        )
        .arg("PATH", &path)
        .run()
    };
    // The control: the reader can read the file while it is there.
    assert_eq!(read_as_nobody(), [r#"served generation 3 {"n":3}"#]);
    std::fs::remove_file(&path).unwrap();
    let said = read_as_nobody();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("deleted "), "{said:?}");
    // The writer, who reads the lock record, still knows generation 3.
    assert_deleted(&path, store.load_or_default());
}

/// fix21rs (3): `restore(G)` of a deleted file puts a version back in its place, as
/// `recover` does, and says so with the same event (`Event::Undeleted`: the last
/// generation known, the generation restored, from a backup). Before, it committed
/// with no event at all (the test found `[]`).
#[test]
fn deleted_restore_of_a_deleted_file_says_it_was_put_back() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let format = Format::Plain;
    three_commits_then_rm(&path, format);
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&events);
    let store: Store = Store::options()
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .open(&path)
        .unwrap();
    assert_eq!(store.restore(1).unwrap(), 4);
    assert_eq!(store.load().unwrap().state, json!({"n": 1}));
    let undeleted: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            statesafe::Event::Undeleted {
                known,
                restored_from,
                rebuilt_from,
                source,
                generation,
                ..
            } => Some((*known, *restored_from, *rebuilt_from, *source, *generation)),
            _ => None,
        })
        .collect();
    assert_eq!(
        undeleted,
        [(3, 1, None, statesafe::Source::Backup, 4)],
        "{:?}",
        events.lock().unwrap()
    );
}

/// fix21rs (6): the hint of an `Unsafe` refusal was chosen by looking for the words
/// "there is no state file" in its reason, which names paths: a file planted in place
/// of a deleted state, in a sticky directory whose name holds those words, got the
/// hint for another user's sidecar ("its backups and history are the state's only
/// copies"). The distinction is typed now (`Unsafety`).
#[test]
fn deleted_unsafe_hint_is_not_chosen_by_words_in_a_path() {
    let test = "deleted::deleted_unsafe_hint_is_not_chosen_by_words_in_a_path";
    if !common::is_root() {
        common::skipped(test, "needs root to give a planted file to another user");
        return;
    }
    let dir = common::test_dir();
    let shared = dir.path().join("there is no state file");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let path = shared.join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.replace(json!({"n": 2})).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "{\"n\": 1000}\n").unwrap();
    std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
    let e = store.load().unwrap_err();
    assert_eq!(e.kind(), "unsafe", "{e:?}");
    let hint = e.hint().unwrap_or_default();
    assert!(!hint.contains("only copies"), "{hint}");
}

/// fix21rs (4): `info()` of a deleted file reports what its sidecar knows: the file is
/// missing, its last generation known, who committed that generation (from the
/// history), and that it was deleted. Before: generation 0 and no writer, as for a
/// file never created.
#[test]
fn deleted_info_reports_the_last_generation_known_and_its_writer() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = three_commits_then_rm(&path, Format::Plain);
    let info = store.info().unwrap();
    assert!(!info.exists);
    assert_eq!(info.generation, 3, "{info:?}");
    assert!(info.last_writer.is_some(), "{info:?}");
    assert_eq!(info.deleted, Some(3), "{info:?}");
    // The control: a file never created is not deleted, generation 0.
    let fresh: Store = Store::open(dir.path().join("fresh.json")).unwrap();
    let info = fresh.info().unwrap();
    assert_eq!(
        (info.exists, info.generation, info.deleted),
        (false, 0, None)
    );
}

/// fix21rs (1): the sidecar's `committed` record is written once, after a commit, with
/// the sidecar's permissions: root committing a user's file (whose sidecar predates
/// the record) leaves it the user's, and readable as the file is.
#[test]
fn deleted_the_committed_record_is_the_sidecar_owners_and_readable_as_the_file() {
    use std::os::unix::fs::MetadataExt;
    let test =
        "deleted::deleted_the_committed_record_is_the_sidecar_owners_and_readable_as_the_file";
    if !common::is_root() {
        common::skipped(test, "needs root to give the file to another user");
        return;
    }
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    let record = store.sidecar_path().join("committed");
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "1\n");
    // A sidecar made before the record: the next handle's commit writes it.
    std::fs::remove_file(&record).unwrap();
    let mut stack = vec![path.clone(), store.sidecar_path()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(65534), Some(65534)).unwrap();
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let again: Store = Store::open(&path).unwrap();
    again.replace(json!({"n": 2})).unwrap();
    again.replace(json!({"n": 3})).unwrap();
    let st = std::fs::metadata(&record).unwrap();
    assert_eq!((st.uid(), st.gid()), (65534, 65534));
    assert_eq!(st.mode() & 0o777, 0o640);
    // Written once per handle and once in the sidecar's life: still the first.
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "2\n");
}

/// Root (`sudo statesafe recover`, an admin's cron job) putting back a user's deleted
/// journal-mode file creates files in the user's sidecar: the history entries of the
/// journal's records, the quarantined copy of a journal past the version put back. They
/// must be the sidecar owner's. The journal's own owner says nothing: the user can
/// replace it by a hard link to another user's world-writable file (the kernel's
/// `protected_hardlinks` allows a link to a file one may read and write), and root then
/// made the new files that third user's, giving them a way into the victim's history.
/// Simulated here by giving the journal to uid 1000, after the user's cleanup took the
/// history too (so that recover quarantines the journal, making the quarantine folder).
#[test]
fn deleted_root_recovering_a_users_journal_makes_files_only_the_sidecar_owners() {
    use std::os::unix::fs::MetadataExt;
    let test =
        "deleted::deleted_root_recovering_a_users_journal_makes_files_only_the_sidecar_owners";
    if !common::is_root() {
        common::skipped(test, "needs root to act for another user");
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let path = home.join("state.json");
    std::fs::write(&path, "{\"n\": 0}\n").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let first: Store = Store::open(&path).unwrap();
    first
        .save_settings(&statesafe::Settings {
            format: Format::Journal,
            ..Default::default()
        })
        .unwrap();
    let store: Store = Store::open(&path).unwrap();
    for n in 1..=3 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let sidecar = store.sidecar_path();
    assert_eq!(std::fs::metadata(&sidecar).unwrap().uid(), 65534);
    let journal = sidecar.join("journal");
    assert!(journal.exists(), "journal mode keeps a journal");
    std::fs::remove_file(&path).unwrap();
    // The user's cleanup took the history too.
    std::fs::remove_dir_all(sidecar.join("history")).unwrap();
    let before: std::collections::BTreeSet<std::path::PathBuf> =
        walk(&sidecar).into_iter().collect();
    std::os::unix::fs::chown(&journal, Some(1000), Some(1000)).unwrap();
    let journal_ino = std::fs::metadata(&journal).map(|m| m.ino()).ok();
    let recovered = Store::<Value>::open(&path).unwrap().recover();
    assert!(
        matches!(recovered, Ok(Some(_))),
        "root's recover of the user's deleted journal-mode file: {recovered:?}"
    );
    // The snapshot and the history gone, the journal's records follow a version
    // nothing proves: generation 1 (the backup) is put back and the journal is kept in
    // the quarantine under a second name (a hard link: the journal itself, not a file
    // root made).
    assert_eq!(
        Store::<Value>::open(&path).unwrap().load().unwrap().state,
        json!({"n": 0})
    );
    let made: Vec<(std::path::PathBuf, u32)> = walk(&sidecar)
        .into_iter()
        .filter(|p| !before.contains(p) && p != &journal)
        .filter(|p| std::fs::symlink_metadata(p).map(|m| m.ino()).ok() != journal_ino)
        .map(|p| {
            let uid = std::fs::symlink_metadata(&p).unwrap().uid();
            (p, uid)
        })
        .collect();
    assert!(!made.is_empty(), "recover made no file in the sidecar");
    let foreign: Vec<_> = made.iter().filter(|(_, uid)| *uid != 65534).collect();
    assert!(
        foreign.is_empty(),
        "root's recover made files in the user's sidecar owned by another uid: {foreign:?}"
    );
}

/// Every path under `dir`, itself excluded.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if std::fs::symlink_metadata(&e).unwrap().is_dir() {
                stack.push(e.clone());
            }
            out.push(e);
        }
    }
    out
}
