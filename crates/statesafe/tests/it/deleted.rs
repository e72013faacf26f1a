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
