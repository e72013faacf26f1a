//! Session 14: the red team's suspicions about the PostgreSQL backend, each a test. An
//! `#[ignore = "red14: …"]` test is a bug not fixed yet (the comment says how it
//! happens and the fix; `--run-ignored all` runs it).

use std::time::Duration;

use serde_json::json;
use statesafe::{Error, Store};

use crate::cluster;

fn store(url: &str, timeout: Duration) -> Store {
    Store::options()
        .lock_timeout(timeout)
        .open_url(url)
        .unwrap()
}

/// A transaction (or lock guard) of a PostgreSQL state's store, begun while the same
/// thread holds one of the same store: as for a file (`nested.rs`), it is refused at
/// once with `Error::Nested` (the row lock is not reentrant: a second connection's
/// `SELECT … FOR UPDATE` would wait for this thread's own transaction until the lock
/// timeout, then blame it). Another store of the same state in the same thread waits
/// and gets `LockTimeout` naming the holder; the first transaction's update is never
/// lost either way.
#[test]
fn a_nested_begin_on_a_postgres_state_is_refused_at_once() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("red14-nested");
    // A long timeout: a wait for itself would show as this test taking that long.
    let own = store(&url, Duration::from_secs(30));
    own.create(json!({"n": 0})).unwrap();
    let mut tx = own.begin().unwrap();
    tx.state_mut()["n"] = 1.into();
    for (what, nested) in [
        ("begin", own.begin().map(|_| ())),
        ("update", own.update(|s| s["n"] = 9.into())),
        ("replace", own.replace(json!({"n": 9})).map(|_| ())),
        ("lock", own.lock("nested").map(|_| ())),
    ] {
        match nested {
            Err(Error::Nested { path, operation }) => {
                assert!(
                    path.to_string_lossy().contains("red14-nested"),
                    "{what}: {path:?}"
                );
                assert!(!operation.is_empty(), "{what}");
            }
            other => panic!("{what} inside an open transaction of the same store: {other:?}"),
        }
    }
    let other = store(&url, Duration::from_millis(300));
    match other.update(|s| s["n"] = 7.into()) {
        Err(Error::LockTimeout { .. }) => {}
        other => panic!("another store of the same state in the same thread: {other:?}"),
    }
    assert_eq!(tx.commit().unwrap(), 2);
    assert_eq!(other.load().unwrap().state, json!({"n": 1}));
    // Once released, the same thread begins again.
    own.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(other.get().unwrap(), json!({"n": 2}));
}
