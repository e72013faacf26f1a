//! Session 15: the history entry is recorded in a transaction of its own right after
//! the write's `COMMIT` (pipelined in the same round trip), not under the row lock.
//! It is recorded only when the write committed; a failure to record it loses that
//! entry only, never the write; the entry after a missing one carries a snapshot, so
//! a lost entry makes at most its own and the next generation unrebuildable, and no
//! rebuilt version is ever a wrong one.

use serde_json::json;
use statesafe::{Error, Store};

use crate::cluster::{self, increment_n, open};

/// The history's generations and whether each carries a snapshot, oldest first.
fn entries(store: &Store) -> Vec<(u64, bool)> {
    store
        .history()
        .unwrap()
        .iter()
        .map(|e| (e.generation, e.snapshot.is_some()))
        .collect()
}

/// Every generation up to `last` is served as committed (`{"n": g - 1}`: from a
/// backup or rebuilt from the history), or, only those of `gap`, unavailable.
fn served_right_or_unavailable(store: &Store, last: u64, gap: &[u64]) {
    for g in 1..=last {
        match store.document_at(g) {
            Ok(doc) => assert_eq!(doc, json!({"n": g - 1}), "generation {g}"),
            Err(Error::GenerationUnavailable { .. }) if gap.contains(&g) => {}
            Err(e) => panic!("generation {g}: {e}"),
        }
    }
}

#[test]
fn a_failed_write_records_no_history_entry_with_either_kind_of_statement() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, extra) in [("failed15p", ""), ("failed15s", "&prepare=sql")] {
        let url = pg.url_with("s", &format!("table={table}{extra}"));
        let store = open(&url);
        store.create(json!({"n": 1})).unwrap();
        store.update(|s| s["n"] = 2.into()).unwrap();
        pg.client()
            .batch_execute(&format!(
                "CREATE FUNCTION {table}_swallow() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
                 CREATE TRIGGER swallow BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_swallow()"
            ))
            .unwrap();
        // The history's request goes out behind the failed write's, pipelined: it
        // must see that the write did not commit.
        store.update(|s| s["n"] = 3.into()).unwrap_err();
        store.update(|s| s["n"] = 3.into()).unwrap_err();
        assert_eq!(entries(&store), [(1, true), (2, false)], "{table}");
        pg.client()
            .batch_execute(&format!("DROP TRIGGER swallow ON {table}"))
            .unwrap();
        store.update(|s| s["n"] = 3.into()).unwrap();
        assert_eq!(
            entries(&store),
            [(1, true), (2, false), (3, false)],
            "{table}"
        );
        assert_eq!(store.document_at(3).unwrap(), json!({"n": 3}), "{table}");
    }
}

#[test]
fn an_error_recording_the_history_entry_loses_that_entry_never_the_write() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, extra) in [("refused15p", ""), ("refused15s", "&prepare=sql")] {
        let url = pg.url_with("s", &format!("table={table}{extra}"));
        let store = open(&url);
        store.create(json!({"n": 0})).unwrap();
        for n in 1..4 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        pg.client()
            .batch_execute(&format!(
                "CREATE FUNCTION {table}_refuse() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RAISE EXCEPTION ''no history''; END';
                 CREATE TRIGGER refuse BEFORE INSERT ON {table}_history FOR EACH ROW EXECUTE FUNCTION {table}_refuse()"
            ))
            .unwrap();
        // Generation 5: committed and acknowledged, its entry refused.
        store.update(|s| s["n"] = 4.into()).unwrap();
        assert_eq!(store.load().unwrap().generation, 5, "{table}");
        assert_eq!(store.load().unwrap().state, json!({"n": 4}), "{table}");
        pg.client()
            .batch_execute(&format!("DROP TRIGGER refuse ON {table}_history"))
            .unwrap();
        for n in 5..8 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        // 6 was written while 5's entry could still have been on its way (a patch
        // from 5); 7 found 5 missing below that patch: a snapshot.
        assert_eq!(
            entries(&store),
            [
                (1, true),
                (2, false),
                (3, false),
                (4, false),
                (6, false),
                (7, true),
                (8, false)
            ],
            "{table}"
        );
        served_right_or_unavailable(&store, 8, &[5, 6]);
    }
}

#[test]
fn a_history_entry_lost_in_a_crash_is_followed_by_a_snapshot() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("s", "table=lost15");
    let store = open(&url);
    store.create(json!({"n": 0})).unwrap();
    for n in 1..5 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    // The newest entry gone, as a crash between the commit and the history's own
    // (not waited for) commit leaves it.
    pg.client()
        .batch_execute("DELETE FROM lost15_history WHERE generation = 5")
        .unwrap();
    for n in 5..8 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let history = entries(&store);
    assert_eq!(
        history,
        [
            (1, true),
            (2, false),
            (3, false),
            (4, false),
            (6, false),
            (7, true),
            (8, false)
        ]
    );
    served_right_or_unavailable(&store, 8, &[5, 6]);
}

#[test]
fn contended_writers_leave_every_generation_in_the_history_and_rebuildable() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, extra) in [("contended15p", ""), ("contended15s", "&prepare=sql")] {
        let url = pg.url_with("s", &format!("table={table}{extra}"));
        let store = open(&url);
        store.create(json!({"n": 0})).unwrap();
        increment_n(4, 30, || std::sync::Arc::new(open(&url)));
        let generation = store.load().unwrap().generation;
        assert_eq!(generation, 121, "{table}");
        let history = entries(&store);
        let generations: Vec<u64> = history.iter().map(|e| e.0).collect();
        assert_eq!(generations, (1..=generation).collect::<Vec<_>>(), "{table}");
        for g in 1..=generation {
            assert_eq!(
                store.document_at(g).unwrap(),
                json!({"n": g - 1}),
                "{table} {g}"
            );
        }
    }
}
