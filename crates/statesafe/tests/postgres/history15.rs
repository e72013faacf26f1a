//! Session 15: the history of a contended state. A write that fails records no
//! history entry (with either kind of statement), and writers contending for one
//! state leave every generation in the history, each rebuilt as committed. (Written
//! for a history recorded after the commit, pgperf15; that was measured slower and
//! not landed, and these hold for the history written under the lock as well.)

use serde_json::json;
use statesafe::Store;

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
