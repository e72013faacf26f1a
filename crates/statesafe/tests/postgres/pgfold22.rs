//! Session 22 (pgfold22): a write's first round trip no longer looks at the state's
//! lock row and its history's newest generation; the write's own statement does,
//! after the row lock was granted, and changes nothing when either is not as
//! assumed (the transaction is then done again, looking first). These hold with
//! either way of sending statements (protocol-level, and `prepare=sql`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use statesafe::Store;

use crate::cluster::{self, open};

/// The history's generations and whether each carries a snapshot, oldest first.
fn entries(store: &Store) -> Vec<(u64, bool)> {
    store
        .history()
        .unwrap()
        .iter()
        .map(|e| (e.generation, e.snapshot.is_some()))
        .collect()
}

/// Whether a backend of this process that names `table` in its statement waits
/// for a lock (PostgreSQL's own view: `pg_blocking_pids`, not a timing).
fn a_writer_waits(watcher: &mut postgres::Client, table: &str) -> bool {
    let row = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE cardinality(pg_blocking_pids(pid)) > 0 \
             AND application_name LIKE $1 AND query LIKE $2",
            &[
                &format!("statesafe {}@%", std::process::id()),
                &format!("%{table}%"),
            ],
        )
        .unwrap();
    row.get::<_, i64>(0) > 0
}

/// A writer waiting for the state's row (held by another transaction) when
/// `statesafe lock` takes the state must not write while the lock is held, though
/// its first round trip (sent before the lock was taken) did not look at the lock
/// row: it writes after the lock ends, on top of the version it read.
#[test]
fn a_lock_taken_while_a_writer_waits_for_the_row_keeps_the_writer_out_until_it_ends() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, extra) in [("lockwait22p", ""), ("lockwait22s", "&prepare=sql")] {
        let url = pg.url_with("s", &format!("table={table}{extra}"));
        let store = open(&url);
        store.create(json!({"n": 1})).unwrap();
        // Warm the writer's statements, and make the lock row (made under the
        // state's row lock, which the other transaction below will hold).
        store.update(|s| s["n"] = 2.into()).unwrap();
        drop(store.lock("make the lock row").unwrap());
        let mut other = pg.client();
        other
            .batch_execute(&format!(
                "BEGIN; SELECT 1 FROM {table} WHERE state = 's' FOR UPDATE"
            ))
            .unwrap();
        let mut watcher = pg.client();
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (url, done) = (url.clone(), done.clone());
            std::thread::spawn(move || {
                let store = open(&url);
                let r = store.update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into());
                done.store(true, Ordering::SeqCst);
                r
            })
        };
        while !a_writer_waits(&mut watcher, table) {
            std::thread::yield_now();
        }
        let held = store.lock("hold while a writer waits").unwrap();
        other.batch_execute("ROLLBACK").unwrap();
        // The writer gets the row, then finds the lock held: it waits for it (or, a
        // broken build, writes under it and ends).
        while !a_writer_waits(&mut watcher, table) && !done.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        if done.load(Ordering::SeqCst) {
            let ended = writer.join().unwrap();
            panic!(
                "{table}: the writer ended while the lock was held: {ended:?}, now at generation {}",
                store.load().unwrap().generation
            );
        }
        assert_eq!(store.load().unwrap().generation, 2, "{table}");
        drop(held);
        writer.join().unwrap().unwrap();
        let snap = store.load().unwrap();
        assert_eq!(
            (snap.generation, snap.state.clone()),
            (3, json!({"n": 3})),
            "{table}"
        );
        assert_eq!(
            entries(&store),
            [(1, true), (2, false), (3, false)],
            "{table}"
        );
        assert_eq!(store.document_at(3).unwrap(), json!({"n": 3}), "{table}");
    }
}

/// The write assumes the history ends at the outgoing version and writes a patch:
/// when it does not (entries deleted by hand, or a write that kept none), the
/// write's statement changes nothing and the write is done again with a snapshot.
/// Never a patch after a gap.
#[test]
fn a_write_after_a_gap_in_the_history_records_a_snapshot() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, extra) in [("gap22p", ""), ("gap22s", "&prepare=sql")] {
        let url = pg.url_with("s", &format!("table={table}{extra}"));
        let store = open(&url);
        store.create(json!({"n": 1})).unwrap();
        for n in 2..=4 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        assert_eq!(
            entries(&store),
            [(1, true), (2, false), (3, false), (4, false)],
            "{table}"
        );
        let mut client = pg.client();
        // The newest entry gone: the history ends at 3, the row is at 4.
        client
            .batch_execute(&format!(
                "DELETE FROM {table}_history WHERE state = 's' AND generation = 4"
            ))
            .unwrap();
        store.update(|s| s["n"] = 5.into()).unwrap();
        assert_eq!(
            entries(&store),
            [(1, true), (2, false), (3, false), (5, true)],
            "{table}"
        );
        assert_eq!(store.document_at(5).unwrap(), json!({"n": 5}), "{table}");
        // No history at all.
        client
            .batch_execute(&format!("DELETE FROM {table}_history WHERE state = 's'"))
            .unwrap();
        store.update(|s| s["n"] = 6.into()).unwrap();
        assert_eq!(entries(&store), [(6, true)], "{table}");
        store.update(|s| s["n"] = 7.into()).unwrap();
        assert_eq!(entries(&store), [(6, true), (7, false)], "{table}");
        assert_eq!(store.document_at(7).unwrap(), json!({"n": 7}), "{table}");
        assert_eq!(store.load().unwrap().generation, 7, "{table}");
    }
}

/// `restore` of a generation no backup row holds rebuilds it from the history rows,
/// as the file backend rebuilds it from its history (`Store::restore`); a generation
/// nothing holds, the current one, and generation 0 stay `GenerationUnavailable`.
#[test]
fn restore_of_a_generation_no_backup_row_holds_rebuilds_it_from_the_history() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("s", "table=restore22");
    let store = open(&url);
    store.create(json!({"n": 1, "tags": ["a"]})).unwrap();
    for n in 2..=5 {
        store
            .update(|s| {
                s["n"] = n.into();
                s["tags"].as_array_mut().unwrap().push(n.to_string().into());
            })
            .unwrap();
    }
    let mut client = pg.client();
    client
        .batch_execute("DELETE FROM restore22_backups WHERE state = 's' AND generation = 2")
        .unwrap();
    assert!(
        !store
            .backups()
            .unwrap()
            .backups
            .iter()
            .any(|b| b.generation == 2),
        "the backup row of generation 2 is gone"
    );
    let written = store.restore(2).unwrap();
    assert_eq!(written, 6);
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 2, "tags": ["a", "2"]}));
    assert_eq!(snap.generation, 6);
    let entry = store.history().unwrap().pop().unwrap();
    assert_eq!(entry.generation, 6);
    assert_eq!(entry.change, statesafe::Change::Restore { from: 2 });
    for unavailable in [0, 6, 7] {
        match store.restore(unavailable) {
            Err(statesafe::Error::GenerationUnavailable { generation, .. }) => {
                assert_eq!(generation, unavailable)
            }
            other => panic!("restore({unavailable}): {other:?}"),
        }
    }
    // Neither a backup row nor the history holds generation 3 any more.
    client
        .batch_execute(
            "DELETE FROM restore22_backups WHERE state = 's' AND generation = 3;
             DELETE FROM restore22_history WHERE state = 's' AND generation <= 3",
        )
        .unwrap();
    assert!(
        matches!(
            store.restore(3),
            Err(statesafe::Error::GenerationUnavailable { generation: 3, .. })
        ),
        "a generation nothing holds"
    );
    assert_eq!(store.load().unwrap().generation, 6, "nothing was written");
}
