//! A transaction of a store begun in a thread that already holds that file's lock (an
//! open transaction or lock guard, or the closure of an `update`): the lock is not
//! reentrant, so waiting would wait for this very thread until the lock timeout and
//! then blame this process as the holder. It is refused at once with
//! [`Error::Nested`], naming the file and the operation; nothing is written, and the
//! outer transaction goes on. Other threads still wait for each other.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use statesafe::{Error, Format, Settings, Store};

use crate::common;

/// A store whose lock timeout is long enough that a wait could never pass for a
/// refusal: a nested call that waited would fail with `LockTimeout`, not `Nested`.
fn store_at(path: &std::path::Path) -> Store {
    Store::options()
        .lock_timeout(Duration::from_secs(3))
        .open(path)
        .unwrap()
}

/// A fresh test directory with `state.json` created as `{"n": 0}` with `settings`.
fn created(settings: Settings) -> (tempfile::TempDir, PathBuf, Store) {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_at(&path);
    store.create_with(&settings, json!({"n": 0})).unwrap();
    (dir, path, store)
}

fn assert_nested(err: &Error, path: &std::path::Path, operation: &str) {
    let Error::Nested {
        path: p,
        operation: op,
    } = err
    else {
        panic!("expected Error::Nested, got {err:?}: {err}");
    };
    assert_eq!(p, path, "{err}");
    assert_eq!(op, operation, "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(operation), "{text}");
    assert_eq!(err.kind(), "usage");
    assert!(err.hint().is_some_and(|h| h.contains("commit")), "{err:?}");
}

fn nested_calls_are_refused(format: Format) {
    let (_dir, path, store) = created(Settings {
        format,
        ..Settings::default()
    });

    // A second transaction while one is open.
    let mut tx = store.begin().unwrap();
    assert_nested(&store.begin().unwrap_err(), &path, "update");
    assert_nested(
        &store.update(|s| s["n"] = 9.into()).unwrap_err(),
        &path,
        "update",
    );
    assert_nested(
        &store.replace(json!({"n": 9})).unwrap_err(),
        &path,
        "replace",
    );
    assert_nested(
        &store.lock("maintenance").unwrap_err(),
        &path,
        "maintenance",
    );
    // The outer transaction is unharmed and commits.
    tx.state_mut()["n"] = 1.into();
    assert_eq!(tx.commit().unwrap(), 2);

    // `update` from inside an `update` closure of the same store.
    let inner = store
        .update(|s| {
            s["n"] = 2.into();
            store.update(|s| s["n"] = 99.into())
        })
        .unwrap();
    assert_nested(&inner.unwrap_err(), &path, "update");
    assert_eq!(store.get().unwrap(), json!({"n": 2}));

    // A held lock guard counts too.
    let guard = store.lock("maintenance").unwrap();
    assert_nested(&store.begin().unwrap_err(), &path, "update");
    drop(guard);

    // Once it is over, the thread takes the lock again as usual.
    store.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
    assert_eq!(store.load().unwrap().generation, 4);
}

#[test]
fn a_nested_transaction_of_one_store_in_one_thread_is_refused_at_once() {
    nested_calls_are_refused(Format::Plain);
}

#[test]
fn a_nested_transaction_in_journal_mode_is_refused_at_once() {
    nested_calls_are_refused(Format::Journal);
}

/// Two stores of one file in one process have separate descriptions of its lock file,
/// and `flock` excludes them from each other; the second store is not refused as
/// nested: it waits its timeout and gets `LockTimeout` naming the holder (this process
/// and the holder's operation), which is what a program holding a maintenance lock in
/// one part and writing in another must be told (python/tests/test_api.py,
/// examples/python, seed 002).
#[test]
fn a_second_store_of_the_same_file_in_the_same_thread_times_out_naming_the_holder() {
    let (dir, path, store) = created(Settings::default());
    let other: Store = Store::options()
        .lock_timeout(Duration::from_millis(200))
        .open(&path)
        .unwrap();
    let guard = store.lock("maintenance").unwrap();
    let err = other
        .update(|s| s["n"] = 9.into())
        .expect_err("a second store of the same file");
    let Error::LockTimeout { holder, .. } = &err else {
        panic!("expected LockTimeout, got {err:?}: {err}");
    };
    let holder = holder.as_ref().expect("the holder is named");
    assert_eq!(holder.pid, std::process::id(), "{err}");
    assert!(err.to_string().contains("maintenance"), "{err}");
    drop(guard);
    other.update(|s| s["n"] = 1.into()).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 1}));
    // A store of another file is another lock.
    let elsewhere = store_at(&dir.path().join("other.json"));
    let tx = store.begin().unwrap();
    elsewhere.create(json!({"m": 1})).unwrap();
    elsewhere.update(|s| s["m"] = 2.into()).unwrap();
    drop(tx);
}

/// Other threads are not refused: they wait for the holder, as ever.
#[test]
fn other_threads_still_wait_for_the_holder() {
    let (_dir, path, store) = created(Settings::default());
    let (started, waiting) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let mut tx = store.begin().unwrap();
        let same = s.spawn(|| {
            started.send(()).unwrap();
            store.update(|s| s["n"] = (s["n"].as_u64().unwrap() + 10).into())
        });
        let other = s.spawn(|| {
            let other = store_at(&path);
            other.update(|s| s["n"] = (s["n"].as_u64().unwrap() + 100).into())
        });
        waiting.recv().unwrap();
        tx.state_mut()["n"] = 1.into();
        tx.commit().unwrap();
        same.join().unwrap().unwrap();
        other.join().unwrap().unwrap();
    });
    assert_eq!(store.get().unwrap(), json!({"n": 111}));
}
