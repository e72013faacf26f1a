//! Transactions and what a reader is told: aborted and panicking updates write nothing
//! and release the lock; generations count commits (create = 1, +1 per commit, a no-op
//! commit does not bump); compare-and-swap detects conflicts; a missing file is
//! `NotFound`, never `Corrupt`; damaged files are `Corrupt` with a location; edits made
//! by other programs are picked up.
//!
//! Defends FAILURE_MODES.md rows 1 (empty or NUL-filled file treated as corrupt, not as
//! a default), 3 (re-read under the lock, never trust an in-memory copy) and 17 (every
//! failure before the rename leaves the file byte-for-byte unchanged).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use statesafe::{Error, RecoveryPolicy, Store};

use crate::common;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

/// The error type of a fallible update closure.
#[derive(Debug)]
enum AppError {
    Store(Error),
    Refused(&'static str),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Store(e)
    }
}

fn store_at(path: &Path) -> Store {
    Store::options()
        .lock_timeout(Duration::ZERO)
        .open(path)
        .unwrap()
}

#[test]
fn a_closure_error_aborts_with_nothing_written() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_at(&path);
    store.create(json!({"balance": 10})).unwrap();
    store.update(|s| s["balance"] = 20.into()).unwrap();
    let before = std::fs::read(&path).unwrap();
    let held = common::HeldInode::hold(&path);

    let result: Result<(), AppError> = store.try_update(|s| {
        s["balance"] = (-5).into();
        Err(AppError::Refused("balance must not be negative"))
    });
    assert!(
        matches!(result, Err(AppError::Refused(m)) if m.contains("negative")),
        "{result:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "an aborted update changed the file"
    );
    assert!(held.is_at(&path), "an aborted update replaced the file");
    assert_eq!(store.generation().unwrap(), 2);
    assert!(common::temp_files(dir.path(), "state.json").is_empty());

    // The lock was released (zero timeout: one try).
    let value: Result<u64, AppError> = store.try_update(|s| {
        s["balance"] = 30.into();
        Ok(3)
    });
    assert_eq!(value.unwrap(), 3);
    assert_eq!(store.load().unwrap().generation, 3);

    // A store error comes back through `From`.
    let missing = store_at(&dir.path().join("missing.json"));
    let result: Result<(), AppError> = missing.try_update(|_| Ok(()));
    assert!(matches!(
        result,
        Err(AppError::Store(Error::NotFound { .. }))
    ));
}

#[test]
fn a_panic_inside_update_writes_nothing_and_releases_the_lock() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_at(&path);
    store.create(json!({"n": 1})).unwrap();
    let before = std::fs::read(&path).unwrap();

    let panicked = catch_unwind(AssertUnwindSafe(|| {
        store
            .update(|s| {
                s["n"] = 2.into();
                panic!("deliberate panic inside an update");
            })
            .unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(common::temp_files(dir.path(), "state.json").is_empty());
    // Next update with a zero lock timeout: succeeds only if the lock was released,
    // both for this store and for another one (the kernel lock, not just the mutex).
    store_at(&path).update(|s| s["n"] = 3.into()).unwrap();
    store.update(|s| s["n"] = 4.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 3);
}

/// A document whose serialization panics: the panic strikes inside the commit.
struct PanicsOnSave;

impl Serialize for PanicsOnSave {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("deliberate panic while serializing");
    }
}

impl<'de> Deserialize<'de> for PanicsOnSave {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| PanicsOnSave)
    }
}

#[test]
fn a_panic_inside_the_commit_leaves_no_temp_file_and_releases_the_lock() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    store_at(&path).create(json!({"n": 1})).unwrap();
    let before = std::fs::read(&path).unwrap();
    let store: Store<PanicsOnSave> = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| store.update(|_| ()))).is_err());
    assert!(catch_unwind(AssertUnwindSafe(|| store.replace(PanicsOnSave))).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(common::temp_files(dir.path(), "state.json").is_empty());
    store_at(&path).update(|s| s["n"] = 2.into()).unwrap();
}

#[test]
fn generations_count_commits() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    let store: Store<Counter> = Store::open(&path).unwrap();
    assert_eq!(store.generation().unwrap(), 0);
    assert_eq!(store.create(Counter { n: 0 }).unwrap(), 1);
    assert_eq!(store.load().unwrap().generation, 1);
    for expected in 2..=6 {
        store.update(|c| c.n += 1).unwrap();
        assert_eq!(store.load().unwrap().generation, expected);
    }
    assert_eq!(store.replace(Counter { n: 100 }).unwrap(), 7);

    // A commit that changes nothing writes nothing and does not bump.
    let held = common::HeldInode::hold(&path);
    store.update(|_| ()).unwrap();
    store.update(|c| c.n = 100).unwrap();
    assert_eq!(store.replace(Counter { n: 100 }).unwrap(), 7);
    let tx = store.begin().unwrap();
    assert_eq!(tx.generation(), 7);
    assert_eq!(tx.commit().unwrap(), 7);
    assert_eq!(store.load().unwrap().generation, 7);
    assert!(held.is_at(&path), "a no-op commit replaced the file");

    // Another store (another process, as far as the file knows) sees the same count.
    let other: Store<Counter> = Store::open(&path).unwrap();
    assert_eq!(
        other.load().unwrap(),
        statesafe::Snapshot {
            state: Counter { n: 100 },
            generation: 7
        }
    );
    other.update(|c| c.n += 1).unwrap();
    assert_eq!(store.load().unwrap().generation, 8);
}

#[test]
fn compare_and_swap_detects_conflicts() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_at(&path);
    store.create(json!({"serial": 1})).unwrap();
    let seen = store.load().unwrap();
    assert_eq!(seen.generation, 1);

    // Someone else commits in between.
    store_at(&path).update(|s| s["serial"] = 2.into()).unwrap();
    let before = std::fs::read(&path).unwrap();

    let err = store
        .update_if(seen.generation, |s| s["serial"] = 3.into())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::GenerationConflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .replace_if(seen.generation, json!({"serial": 3}))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::GenerationConflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "a conflicting write changed the file"
    );

    // With the current generation both succeed, and the lock was released.
    store.update_if(2, |s| s["serial"] = 3.into()).unwrap();
    assert_eq!(store.replace_if(3, json!({"serial": 4})).unwrap(), 4);

    // 0 means "only if it does not exist".
    let err = store.replace_if(0, json!({})).unwrap_err();
    assert!(
        matches!(
            err,
            Error::GenerationConflict {
                expected: 0,
                found: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let fresh = store_at(&dir.path().join("fresh.json"));
    assert_eq!(fresh.replace_if(0, json!({"a": 1})).unwrap(), 1);
    assert!(matches!(
        fresh.update_if(0, |_| ()),
        Err(Error::GenerationConflict { .. })
    ));
}

#[test]
fn create_refuses_an_existing_file() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_at(&path);
    store.create(json!({"n": 1})).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = store.create(json!({"n": 2})).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Also a file statesafe did not write.
    let foreign = dir.path().join("foreign.json");
    std::fs::write(&foreign, "{}").unwrap();
    let err = store_at(&foreign).create(json!({"n": 2})).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&foreign).unwrap(), b"{}");
}

#[test]
fn a_missing_file_is_not_found_never_corrupt() {
    let dir = common::test_dir();
    let path = dir.path().join("missing.json");
    let store = store_at(&path);
    assert!(matches!(store.load(), Err(Error::NotFound { .. })));
    assert!(matches!(store.get(), Err(Error::NotFound { .. })));
    assert!(matches!(store.update(|_| ()), Err(Error::NotFound { .. })));
    assert!(matches!(store.begin(), Err(Error::NotFound { .. })));
    assert!(matches!(
        store.update_if(1, |_| ()),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(store.generation().unwrap(), 0);
    assert!(!path.exists(), "a failed read or update created the file");
    let err = store.load().unwrap_err();
    assert_eq!(err.kind(), "not_found");
    assert!(err.to_string().contains("missing.json"), "{err}");

    // Asking for a default is explicit.
    let typed: Store<Counter> = Store::open(&path).unwrap();
    typed.update_or_default(|c| c.n += 1).unwrap();
    assert_eq!(typed.load().unwrap().generation, 1);
}

/// A store that reports damage as it is (`RecoveryPolicy::Fail`), changing nothing.
fn failing_store<T: Serialize + serde::de::DeserializeOwned>(path: &Path) -> Store<T> {
    Store::options()
        .recovery(RecoveryPolicy::Fail)
        .lock_timeout(Duration::ZERO)
        .open(path)
        .unwrap()
}

/// The location in a `Corrupt` error.
fn corrupt_location(err: &Error) -> Option<(Option<usize>, Option<usize>)> {
    match err {
        Error::Corrupt { line, column, .. } => Some((*line, *column)),
        _ => None,
    }
}

/// Writes `bytes` as the file, then checks every way of reading it says `Corrupt` with
/// the given location (also under the default recovery policy: statesafe never wrote
/// this file, so it is left as it is, never quarantined), and that nothing touched it.
fn assert_corrupt(bytes: &[u8], line: Option<usize>, column: Option<usize>) {
    let shown = String::from_utf8_lossy(bytes).into_owned();
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    std::fs::write(&path, bytes).unwrap();
    let held = common::HeldInode::hold(&path);
    let store: Store = failing_store(&path);
    let err = store.load().unwrap_err();
    assert_eq!(
        corrupt_location(&err),
        Some((line, column)),
        "{shown:?} should be Corrupt at {line:?}:{column:?}, got {err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("state.json") && message.contains("corrupt"),
        "{message}"
    );
    if let Some(line) = line {
        assert!(message.contains(&format!("line {line}")), "{message}");
    }
    assert!(matches!(store.update(|_| ()), Err(Error::Corrupt { .. })));
    assert!(matches!(store.begin(), Err(Error::Corrupt { .. })));
    let typed: Store<Counter> = failing_store(&path);
    // Never mistaken for a missing file and replaced by the default.
    assert!(matches!(
        typed.update_or_default(|c| c.n += 1),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a failed update touched the file"
    );

    // The default policy: a file statesafe never wrote is not its to repair.
    let default: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    for err in [
        default.load().unwrap_err(),
        default.update(|_| ()).unwrap_err(),
    ] {
        assert_eq!(corrupt_location(&err), Some((line, column)), "{err:?}");
        assert!(err.to_string().contains("never written"), "{err}");
    }
    let sidecar = dir.path().join(".state.json.statesafe");
    assert!(
        !sidecar.join("quarantine").exists(),
        "a file statesafe never wrote was quarantined"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "recovery touched the damaged file"
    );
    assert!(held.is_at(&path), "the damaged file was replaced");
    assert!(common::temp_files(dir.path(), "state.json").is_empty());
}

#[test]
fn damaged_files_are_corrupt_with_a_location() {
    // Truncated mid-document, on the first and on a later line.
    assert_corrupt(b"{\"a\": [1, 2", Some(1), Some(11));
    assert_corrupt(b"{\n  \"a\": 1,\n  \"b\": [", Some(3), Some(8));
    // Not JSON at all, and trailing garbage.
    assert_corrupt(b"hello", Some(1), Some(1));
    assert_corrupt(b"{}\n}", Some(2), Some(1));
    // Empty, whitespace only: no location to give.
    assert_corrupt(b"", None, None);
    assert_corrupt(b"  \n\n", None, None);
    // NUL-filled (a crash before the data reached the disk), whole or after a prefix.
    assert_corrupt(&[0u8; 4096], Some(1), Some(1));
    assert_corrupt(b"{\n  \"a\": 1\0\0\0\0", Some(2), Some(9));
}

#[test]
fn a_document_of_the_wrong_shape_is_a_mismatch_for_a_typed_store_not_damage() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    std::fs::write(&path, "{\n  \"n\": \"three\"\n}\n").unwrap();
    let store: Store<Counter> = Store::open(&path).unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, Error::Mismatch { committed: false, reason, .. } if reason.contains("line 2")),
        "{err:?}"
    );
    // The untyped store reads it fine.
    assert_eq!(store_at(&path).get().unwrap(), json!({"n": "three"}));
}

#[test]
fn edits_by_other_programs_are_picked_up() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_at(&path);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 2);

    // In place (same inode: truncate and write, as an editor without safe-write does).
    std::fs::write(&path, "{\"n\": 50, \"edited\": \"in place\"}\n").unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 50, "edited": "in place"}));
    let after_edit = snap.generation;
    assert!(
        after_edit > 2,
        "generation {after_edit} did not move past 2 after an edit"
    );
    // Repeated reads agree.
    assert_eq!(store.load().unwrap().generation, after_edit);

    // An update starts from the edited content, not from a cached copy.
    store
        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
        .unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 51, "edited": "in place"}));
    assert!(snap.generation > after_edit);
    let after_update = snap.generation;

    // Replaced by another program (new inode, no statesafe metadata).
    let other = dir.path().join("elsewhere.json");
    std::fs::write(&other, "{\"n\": 7, \"edited\": \"replaced\"}\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 7, "edited": "replaced"}));
    assert!(
        snap.generation > after_update,
        "generation went from {after_update} to {}",
        snap.generation
    );
    let after_replace = snap.generation;

    // A compare-and-swap based on the pre-edit generation must fail.
    let err = store
        .update_if(after_update, |s| s["n"] = 0.into())
        .unwrap_err();
    assert!(matches!(err, Error::GenerationConflict { .. }), "{err:?}");

    // Even a no-op commit on foreign content records it: the generation is ours again.
    store.update(|_| ()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 7, "edited": "replaced"}));
    assert!(snap.generation >= after_replace);
    store.update(|s| s["n"] = 8.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, snap.generation + 1);
}

#[test]
fn a_validation_rule_refuses_with_nothing_written() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    let store: Store<Counter> = Store::options()
        .validate(|c: &Counter| {
            if c.n <= 10 {
                Ok(())
            } else {
                Err("n must be at most 10".into())
            }
        })
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    store.create(Counter { n: 10 }).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = store.update(|c| c.n = 11).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("n must be at most 10"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(common::temp_files(dir.path(), "counter.json").is_empty());
    store.update(|c| c.n = 9).unwrap();
}
