//! Session 14: how a transaction's statements are sent. Protocol-level prepared
//! statements (Parse once per connection, then Bind and Execute, pipelined) unless
//! the URL says `prepare=sql`, or a transaction finds its connection's statements
//! missing from its server session, as behind a pooler that resets sessions or moves
//! a client between them; then SQL-level `PREPARE` and `EXECUTE`, with no update lost.

use std::sync::Arc;

use serde_json::json;
use statesafe::Error;

use crate::cluster::{self, Cluster, increment_n, open};

/// Makes every connection of this process record, as it goes back to its store's
/// pool, which of its server session's prepared statements name `table`: in the
/// table `seen` (table name, made by SQL `PREPARE`, the statement's text).
fn record_prepared(pg: &Cluster, table: &str) {
    pg.client()
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS prepared14_seen (tab text, from_sql boolean, statement text)",
        )
        .unwrap();
    statesafe::postgres::set_release_query_for_tests(Some(&format!(
        "INSERT INTO prepared14_seen SELECT '{table}', from_sql, statement \
         FROM pg_prepared_statements WHERE statement LIKE '%\"{table}\"%'"
    )));
}

/// What [`record_prepared`] saw for `table`: (from SQL `PREPARE`, statement text).
fn seen(pg: &Cluster, table: &str) -> Vec<(bool, String)> {
    pg.client()
        .query(
            "SELECT DISTINCT from_sql, statement FROM prepared14_seen WHERE tab = $1",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn statements_are_prepared_at_the_protocol_level_unless_the_url_says_sql() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, extra, sql_level) in [
        ("prepared14_protocol", "table=prepared14_protocol", false),
        ("prepared14_sql", "table=prepared14_sql&prepare=sql", true),
    ] {
        let store = open(&pg.url_with("n", extra));
        store.create(json!({"n": 0})).unwrap();
        record_prepared(pg, table);
        for _ in 0..3 {
            store
                .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                .unwrap();
        }
        statesafe::postgres::set_release_query_for_tests(None);
        assert_eq!(store.load().unwrap().state, json!({"n": 3}));
        let seen = seen(pg, table);
        // The locking `SELECT` and the write among them, all of the one kind.
        assert!(
            seen.iter().any(|(_, s)| s.contains("FOR UPDATE")),
            "{table}: {seen:?}"
        );
        assert!(
            seen.iter().any(|(_, s)| s.contains("UPDATE \"")),
            "{table}: {seen:?}"
        );
        assert!(
            seen.iter().all(|(from_sql, _)| *from_sql == sql_level),
            "{table}: {seen:?}"
        );
    }
    // Any other value is refused, naming it and the two there are.
    match statesafe::Store::<serde_json::Value>::options()
        .open_url(&pg.url_with("n", "table=prepared14_protocol&prepare=maybe"))
    {
        Err(Error::BadPath { reason, .. }) => {
            assert!(reason.contains("prepare=maybe"), "{reason}");
            assert!(reason.contains("`sql`"), "{reason}");
        }
        Err(e) => panic!("refused, but not as a bad URL: {e}"),
        Ok(_) => panic!("`prepare=maybe` was taken"),
    }
}

/// A pooler's `server_reset_query` run on the server session between two of a
/// connection's transactions: `DISCARD ALL` (PgBouncer's default, in session mode)
/// resets the session's settings and drops its prepared statements, `DEALLOCATE ALL`
/// drops the statements only. Either way the next transaction finds that out before
/// it locks anything, and the store goes on with SQL-level statements: no error, no
/// update lost, no history entry missing.
#[test]
fn a_pooler_resetting_sessions_between_transactions_loses_no_update() {
    let Some(pg) = cluster::cluster() else { return };
    for (table, reset) in [
        ("prepared14_discard", "DISCARD ALL"),
        ("prepared14_deallocate", "DEALLOCATE ALL"),
    ] {
        let store = Arc::new(open(&pg.url_with("n", &format!("table={table}"))));
        store.create(json!({"n": 0})).unwrap();
        statesafe::postgres::set_release_query_for_tests(Some(reset));
        increment_n(2, 15, || store.clone());
        assert_eq!(store.load().unwrap().state, json!({"n": 30}), "{reset}");
        assert_eq!(store.generation().unwrap(), 31, "{reset}");
        let history = store.history().unwrap();
        assert_eq!(history.last().unwrap().generation, 31, "{reset}");
        // From then on the store sends SQL-level statements.
        record_prepared(pg, table);
        store
            .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
            .unwrap();
        statesafe::postgres::set_release_query_for_tests(None);
        let seen = seen(pg, table);
        assert!(
            seen.iter().any(|(_, s)| s.contains("UPDATE \"")),
            "{reset}: {seen:?}"
        );
        assert!(
            seen.iter().all(|(from_sql, _)| *from_sql),
            "{reset}: {seen:?}"
        );
        assert_eq!(store.load().unwrap().state, json!({"n": 31}), "{reset}");
    }
}
