//! What only a server has: damaged rows, tables altered by hand, unreachable servers
//! and missing databases, a connection terminated mid-transaction or lost during
//! `COMMIT`, a holder killed mid-transaction.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use statesafe::{Change, Error, Event, RecoveryPolicy, Store};

use crate::cluster::{self, Cluster, open};

#[test]
fn a_row_whose_checksum_does_not_match_is_corrupt_and_nothing_is_written() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("damaged");
    // `Fail`: the damage is reported, nothing repaired (the default policy repairs:
    // `a_damaged_row_is_quarantined_and_the_newest_valid_backup_restored`).
    let store: Store = Store::options()
        .lock_timeout(Duration::from_secs(30))
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    pg.client()
        .execute(
            "UPDATE statesafe SET document = '{\"n\": 666}' WHERE state = 'damaged'",
            &[],
        )
        .unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { reason, .. } if reason.contains("checksum")),
        "{err}"
    );
    // The hint speaks of the row and names the command that repairs it, not a file.
    let hint = err.hint().unwrap();
    assert!(hint.contains("statesafe recover postgres://"), "{hint}");
    assert!(!hint.contains("file"), "{hint}");
    let err = store.update(|s| s["n"] = 3.into()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    let report = store.check().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(!report.is_ok());
    // Still the damaged row: nothing was written over it.
    let row = pg
        .client()
        .query_one(
            "SELECT generation, document FROM statesafe WHERE state = 'damaged'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "{\"n\": 666}");
    // A deliberate replace is allowed (the damaged version is not kept as a backup,
    // but in quarantine: `replacing_a_damaged_row_keeps_it_in_quarantine`).
    store.replace(json!({"n": 7})).unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 7}));
}

/// The quarantined rows of `state`: (generation, document, reason), oldest first.
fn quarantined_rows(pg: &Cluster, state: &str) -> Vec<(i64, i64, String, String)> {
    pg.client()
        .query(
            "SELECT id, generation, document, reason FROM statesafe_quarantine WHERE state = $1 ORDER BY id",
            &[&state],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// A replace or a restore over a damaged row writes a whole new document without
/// reading the old one; the damaged row is moved into the quarantine table first, in
/// the same transaction (a write that fails keeps nothing there), and an event names
/// where it went (`URL#quarantine=ID`), as a file's replace keeps the damaged file in
/// its quarantine. Nothing is silently lost, whatever the recovery policy.
#[test]
fn replacing_a_damaged_row_keeps_it_in_quarantine() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("replace_damaged");
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let store: Store = Store::options()
        .lock_timeout(Duration::from_secs(30))
        .recovery(RecoveryPolicy::Fail)
        .on_event(move |e| {
            if matches!(e, Event::Quarantined { .. }) {
                seen.lock().unwrap().push(e.clone());
            }
        })
        .open_url(&url)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    damage(pg, "replace_damaged");
    // A replace that fails after the damage was seen (too large here) quarantines
    // nothing: the move is part of the replace's transaction.
    let small: Store = Store::options()
        .lock_timeout(Duration::from_secs(30))
        .recovery(RecoveryPolicy::Fail)
        .max_bytes(16)
        .open_url(&url)
        .unwrap();
    let err = small
        .replace(json!({"n": "a document longer than sixteen bytes"}))
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert_eq!(quarantined_rows(pg, "replace_damaged"), vec![]);
    // A conflict is found before anything is moved.
    let err = store.replace_if(1, json!({"n": 7})).unwrap_err();
    assert!(matches!(err, Error::GenerationConflict { .. }), "{err}");
    assert_eq!(quarantined_rows(pg, "replace_damaged"), vec![]);

    assert_eq!(store.replace(json!({"n": 7})).unwrap(), 3);
    assert_eq!(store.load().unwrap().state, json!({"n": 7}));
    let rows = quarantined_rows(pg, "replace_damaged");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (id, generation, document, reason) = &rows[0];
    assert_eq!((*generation, document.as_str()), (2, "{\"n\": 666}"));
    assert!(reason.contains("checksum"), "{reason}");
    let events = |n: usize| {
        let got = events.lock().unwrap().clone();
        assert_eq!(got.len(), n, "{got:?}");
        got[n - 1].clone()
    };
    let Event::Quarantined {
        path,
        damage: why,
        quarantined,
        generation,
    } = events(1)
    else {
        unreachable!()
    };
    assert_eq!(
        quarantined.to_string_lossy(),
        format!("{url}#quarantine={id}")
    );
    assert_eq!(path.to_string_lossy(), url);
    assert_eq!(generation, 3);
    assert!(why.contains("checksum"), "{why}");
    // The damaged version is not among the backups.
    let backups = store.backups().unwrap().backups;
    assert!(backups.iter().all(|b| b.generation != 2), "{backups:?}");

    // A restore over a damaged row: the same.
    damage(pg, "replace_damaged");
    assert_eq!(store.restore(1).unwrap(), 4);
    assert_eq!(store.load().unwrap().state, json!({"n": 1}));
    let rows = quarantined_rows(pg, "replace_damaged");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[1].1, rows[1].2.as_str()), (3, "{\"n\": 666}"));
    let Event::Quarantined { quarantined, .. } = events(2) else {
        unreachable!()
    };
    assert_eq!(
        quarantined.to_string_lossy(),
        format!("{url}#quarantine={}", rows[1].0)
    );
    // A sound row replaced: nothing quarantined, no event.
    store.replace(json!({"n": 8})).unwrap();
    assert_eq!(quarantined_rows(pg, "replace_damaged").len(), 2);
    events(2);
}

/// Writes are sent as SQL text (one round trip): quotes, backslashes, `$$`, control
/// characters and non-ASCII text in the document and the state's name come back as
/// written, in the row, the backups and the history.
/// A replace over a row whose generation was lowered by hand (damage: the checksum
/// covers it) goes on above every generation the history and the backups hold, as
/// `recover` does: written at the row's generation + 1 it replaced the history entries
/// (and skipped the backups) of committed versions.
#[test]
fn replacing_a_row_whose_generation_was_lowered_keeps_the_history() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("replace_lowered");
    let store: Store = Store::options()
        .lock_timeout(Duration::from_secs(30))
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    let before = store.history().unwrap();
    pg.client()
        .execute(
            "UPDATE statesafe SET generation = 1 WHERE state = 'replace_lowered'",
            &[],
        )
        .unwrap();
    assert_eq!(store.replace(json!({"n": 9})).unwrap(), 4);
    let after = store.history().unwrap();
    assert_eq!(
        after.iter().map(|e| e.generation).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(after[..3], before[..], "committed versions' entries kept");
    assert_eq!(store.document_at(3).unwrap(), json!({"n": 3}));
    let rows = quarantined_rows(pg, "replace_lowered");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let kept: serde_json::Value = serde_json::from_str(&rows[0].2).unwrap();
    assert_eq!((rows[0].1, kept), (1, json!({"n": 3})));
}

/// Damages `state`'s current row by hand, as an operator or a broken tool would.
fn damage(pg: &Cluster, state: &str) {
    let n = pg
        .client()
        .execute(
            "UPDATE statesafe SET document = '{\"n\": 666}' WHERE state = $1",
            &[&state],
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// `statesafe recover URL` and the automatic repair: the damaged row is moved as it
/// is into the quarantine table, the newest backup that verifies is written as the
/// next generation (never silently: an event, a history entry naming both), and
/// reads work again. With no valid backup: `Unrecoverable`, nothing changed.
#[test]
fn a_damaged_row_is_quarantined_and_the_newest_valid_backup_restored() {
    let Some(pg) = cluster::cluster() else { return };
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let opts = |policy: RecoveryPolicy| {
        let seen = Arc::clone(&events);
        Store::options()
            .lock_timeout(Duration::from_secs(30))
            .recovery(policy)
            .on_event(move |e| {
                if matches!(e, Event::Recovered { .. }) {
                    seen.lock().unwrap().push(e.clone());
                }
            })
    };
    let url = pg.url("repair");
    let strict: Store = opts(RecoveryPolicy::Fail).open_url(&url).unwrap();
    strict.create(json!({"n": 1})).unwrap();
    strict.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(strict.recover().unwrap(), None, "a sound row is left alone");
    damage(pg, "repair");
    // A read: a typed error naming the state, the cause and the next step.
    let err = strict.load().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        text.contains("state=repair") && text.contains("statesafe recover"),
        "{text}"
    );
    // recover: quarantined; generation 2 (the damaged generation's acknowledged
    // version: backup 1 carried forward by generation 2's history entry) restored as
    // generation 3.
    let event = strict.recover().unwrap().expect("it was damaged");
    let Event::Recovered {
        quarantined,
        restored_from,
        generation,
        damage: why,
        ..
    } = &event
    else {
        panic!("{event:?}")
    };
    assert_eq!((*restored_from, *generation), (Some(2), 3), "{event:?}");
    assert!(why.contains("checksum"), "{why}");
    let id: i64 = quarantined
        .to_string_lossy()
        .rsplit_once("#quarantine=")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let row = pg
        .client()
        .query_one(
            "SELECT state, generation, document, reason FROM statesafe_quarantine WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "repair");
    assert_eq!(row.get::<_, i64>(1), 2);
    assert_eq!(row.get::<_, String>(2), "{\"n\": 666}");
    assert!(row.get::<_, String>(3).contains("checksum"));
    let snap = strict.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 2}), 3));
    let last = strict.history().unwrap().pop().unwrap();
    assert_eq!(
        last.change,
        Change::Recovery {
            quarantined: Some(quarantined.clone()),
            from: Some(2)
        }
    );
    assert_eq!(events.lock().unwrap().len(), 1, "the recovery is reported");
    // The default policy repairs on a read, and before a write, on its own.
    let repairing: Store = opts(RecoveryPolicy::RestoreFromBackup)
        .open_url(&url)
        .unwrap();
    damage(pg, "repair");
    let snap = repairing.load().unwrap();
    // Generation 3 (the recovery) never became a backup; it is rebuilt from backup 1
    // by the history's entries of generations 2 and 3 (the damaged generation's own
    // entry included, as for a file): `{"n": 2}`, written as generation 4.
    assert_eq!((snap.state, snap.generation), (json!({"n": 2}), 4));
    damage(pg, "repair");
    repairing.update(|s| s["n"] = 10.into()).unwrap();
    let snap = repairing.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 10}), 6));
    assert_eq!(events.lock().unwrap().len(), 3);
    let kept: i64 = pg
        .client()
        .query_one(
            "SELECT count(*) FROM statesafe_quarantine WHERE state = 'repair'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 3, "every damaged version is kept");
    // The newest backup damaged too: the one before it, carried forward by the
    // history's patches up to the damaged generation's acknowledged version, as a
    // file's recovery does.
    let chain_url = pg.url("repair_chain");
    let chain = open(&chain_url);
    chain.create(json!({"n": 1})).unwrap();
    chain.update(|s| s["n"] = 2.into()).unwrap();
    chain.update(|s| s["n"] = 3.into()).unwrap();
    damage(pg, "repair_chain");
    pg.client()
        .execute(
            "UPDATE statesafe_backups SET document = '{\"n\": 667}' WHERE state = 'repair_chain' AND generation = 2",
            &[],
        )
        .unwrap();
    let event = chain.recover().unwrap().expect("it was damaged");
    let Event::Recovered {
        restored_from,
        rebuilt_from,
        generation,
        ..
    } = &event
    else {
        panic!("{event:?}")
    };
    assert_eq!(
        (*restored_from, *rebuilt_from, *generation),
        (Some(3), Some(1), 4),
        "{event:?}"
    );
    assert_eq!(chain.load().unwrap().state, json!({"n": 3}));
    // No valid backup: Unrecoverable, listing what was tried; the row is unchanged.
    let bare_url = pg.url("repair_none");
    let none: Store = Store::options()
        .backups(statesafe::BackupPolicy {
            keep: 0,
            ..Default::default()
        })
        .open_url(&bare_url)
        .unwrap();
    none.create(json!({"n": 1})).unwrap();
    none.update(|s| s["n"] = 2.into()).unwrap();
    damage(pg, "repair_none");
    let err = none.recover().unwrap_err();
    assert!(matches!(err, Error::Unrecoverable { .. }), "{err}");
    let row = pg
        .client()
        .query_one(
            "SELECT generation, document FROM statesafe WHERE state = 'repair_none'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "{\"n\": 666}");
}

#[test]
fn quotes_and_backslashes_survive_the_sql_text() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("it's%20a\\name");
    let store = open(&url);
    let nasty =
        json!({"q": "it's \\' \\\\ $$ $x$ E'\\n' \u{1} \n\t ünï 😀", "k'\\": [1E2, -0.5e-3]});
    store.create(json!({"n": 0})).unwrap();
    store.replace(nasty.clone()).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    let mut expected = nasty.clone();
    expected["n"] = 1.into();
    assert_eq!(store.load().unwrap().state, expected);
    assert_eq!(store.document_at(2).unwrap(), nasty);
    assert!(
        store
            .backups()
            .unwrap()
            .backups
            .iter()
            .any(|b| b.generation == 2)
    );
    assert!(store.check().unwrap().is_ok());
    let row = pg
        .client()
        .query_one(
            "SELECT document FROM statesafe WHERE state = $1",
            &[&"it's a\\name"],
        )
        .unwrap();
    assert!(row.get::<_, String>(0).contains("it's"));
}

/// A write that does not land on the row read under the lock (here a trigger
/// swallows the `UPDATE`) is refused, and nothing of it is committed: not the
/// backup, not the history entry, sent in the same round trip.
/// The backups kept, newest first, as the server has them.
fn backup_rows(pg: &Cluster, state: &str) -> Vec<i64> {
    pg.client()
        .query(
            "SELECT generation FROM statesafe_backups WHERE state = $1 ORDER BY generation DESC",
            &[&state],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn the_backup_prune_looks_64_generations_down_and_catches_up_on_every_64th() {
    // A write prunes the backups within the 64 generations below the one it replaces
    // (so that it does not visit the index entries of every row deleted before, up
    // to the next vacuum); rows older than that are left only after the retention
    // shrank, and the write of every 64th generation prunes them all.
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("shrunk");
    let keeping = |keep: u32| -> Store {
        Store::options()
            .lock_timeout(Duration::from_secs(30))
            .backups(statesafe::BackupPolicy {
                keep,
                hourly: 0,
                daily: 0,
            })
            .open_url(&url)
            .unwrap()
    };
    let wide = keeping(200);
    wide.create(json!({"n": 0})).unwrap();
    for n in 1..100 {
        wide.update(|s| s["n"] = n.into()).unwrap();
    }
    // Generation 100; the 99 outgoing versions 1..=99 kept.
    assert_eq!(
        backup_rows(pg, "shrunk"),
        (1..=99).rev().collect::<Vec<i64>>()
    );
    let narrow = keeping(3);
    narrow.update(|s| s["n"] = 100.into()).unwrap();
    // Generation 101 replaced 100: the three newest kept, the others within the 64
    // generations below 100 pruned, the older ones (1..=34) still there.
    let mut expected: Vec<i64> = vec![100, 99, 98];
    expected.extend((1..=34).rev());
    assert_eq!(backup_rows(pg, "shrunk"), expected);
    for n in 101..127 {
        narrow.update(|s| s["n"] = n.into()).unwrap();
    }
    // Generation 127: still the leftovers below the window.
    assert_eq!(backup_rows(pg, "shrunk").len(), 3 + 34);
    narrow.update(|s| s["n"] = 127.into()).unwrap();
    // Generation 128, a multiple of 64: pruned without the bound.
    assert_eq!(backup_rows(pg, "shrunk"), vec![127, 126, 125]);
    assert_eq!(narrow.get().unwrap(), json!({"n": 127}));
}

#[test]
fn the_backup_prune_reads_the_states_own_backups_by_index_in_a_bloated_table() {
    // pg16: the prune's sub-`SELECT` (the `keep - 1`th newest backup other than the
    // outgoing one) had only `state = $1` and `generation <> $2` to go by, and its
    // generic plan, with the statistics of a table of few live rows in many pages
    // not yet vacuumed (the rows earlier writes deleted, or another state's), was a
    // sequential scan of the whole backups table, every state's rows live and dead,
    // in every write (a `pgbench` replay after an autovacuum: 65 buffers a write,
    // 18 without the prune). Bounded to the prune's window, it reads the state's
    // newest keys.
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("bloated", "table=bloated");
    let store = open(&url);
    store.create(json!({"n": 0})).unwrap();
    // Another state's rows first, this state's backups after them, then the others
    // deleted and the table analyzed, not vacuumed (no autovacuum either: a vacuum
    // marks the pages all-visible, and then an index-only scan is cheap enough).
    let mut admin = pg.client();
    admin
        .batch_execute(
            "ALTER TABLE bloated_backups SET (autovacuum_enabled = false);
             INSERT INTO bloated_backups SELECT 'other', g, '{}', 0, now() FROM generate_series(1, 20000) g",
        )
        .unwrap();
    for n in 1..=10 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    drop(store);
    admin
        .batch_execute("DELETE FROM bloated_backups WHERE state = 'other'; ANALYZE bloated_backups")
        .unwrap();
    drop(admin);
    // A backend reports its counters when it ends (or idle, within seconds): wait for
    // every insert so far to be counted, then read the scans.
    let scans = |inserted: i64| -> i64 {
        for _ in 0..600 {
            let row = pg
                .client()
                .query_one(
                    "SELECT n_tup_ins, seq_scan FROM pg_stat_user_tables WHERE relname = 'bloated_backups'",
                    &[],
                )
                .unwrap();
            if row.get::<_, i64>(0) >= inserted {
                return row.get(1);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server never counted {inserted} inserts into bloated_backups");
    };
    let before = scans(20_010);
    // One thread, so one connection: its first five writes are planned with their
    // values (a table of one state: every row matches, so a scan of it is fair);
    // the later ones run the generic plan.
    let store = open(&url);
    for n in 11..=30 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    drop(store);
    let seq = scans(20_030) - before;
    assert!(
        seq <= 5,
        "{seq} of 20 writes scanned the whole backups table"
    );
    // And the retention held (default: 5).
    let kept: Vec<i64> = pg
        .client()
        .query(
            "SELECT generation FROM bloated_backups WHERE state = 'bloated' ORDER BY generation DESC",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec![30, 29, 28, 27, 26]);
}

#[test]
fn a_write_reads_by_index_in_tables_that_grew_after_it_was_planned() {
    // pg16: a connection keeps the plans of its statements until a table's
    // statistics change (a vacuum or an analyze: autovacuum's, as in the bench, once
    // a minute), and plans them again at their next execution. Planned when the
    // backups table was a page after a vacuum, the prune's sub-`SELECT` was a
    // sequential scan, and stayed one as the table grew with the rows the writes
    // deleted, so every write read the whole table, every state's rows live and
    // dead. Write transactions now plan by index.
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("young", "table=young");
    let store = open(&url);
    store.create(json!({"n": 0})).unwrap();
    pg.client()
        .batch_execute("ALTER TABLE young_backups SET (autovacuum_enabled = false)")
        .unwrap();
    for n in 1..=10 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    // A page of five live rows: the connection plans its write again at the next.
    pg.client()
        .batch_execute("VACUUM ANALYZE young_backups")
        .unwrap();
    store.update(|s| s["n"] = 11.into()).unwrap();
    // The table grows (another state's rows) under the plan made; nothing plans it
    // again.
    pg.client()
        .batch_execute(
            "INSERT INTO young_backups SELECT 'other', g, '{}', 0, now() FROM generate_series(1, 20000) g",
        )
        .unwrap();
    for n in 12..=31 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    drop(store);
    // A backend reports its counters when it ends (or idle, within seconds). The
    // rows sequential scans read: none (the primary key's build on the empty table
    // counts as a scan, of no row).
    let mut read = None;
    for _ in 0..600 {
        let row = pg
            .client()
            .query_one(
                "SELECT n_tup_ins, seq_tup_read FROM pg_stat_user_tables WHERE relname = 'young_backups'",
                &[],
            )
            .unwrap();
        if row.get::<_, i64>(0) >= 20_031 {
            read = Some(row.get::<_, i64>(1));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = read.expect("the server never counted the inserts into young_backups");
    assert_eq!(read, 0, "the writes scanned the backups table, {read} rows");
    let kept: Vec<i64> = pg
        .client()
        .query(
            "SELECT generation FROM young_backups WHERE state = 'young' ORDER BY generation DESC",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, vec![31, 30, 29, 28, 27]);
}

/// A store of `state` keeping `keep` backups (count only).
fn keeping(pg: &Cluster, state: &str, keep: u32) -> Store {
    Store::options()
        .lock_timeout(Duration::from_secs(30))
        .backups(statesafe::BackupPolicy {
            keep,
            hourly: 0,
            daily: 0,
        })
        .open_url(&pg.url(state))
        .unwrap()
}

/// One increment through `store`, then the backups checked against the retention:
/// the newest `keep` of those there before and the outgoing version.
fn increment_and_check(pg: &Cluster, state: &str, store: &Store, keep: usize) {
    let mut expected = backup_rows(pg, state);
    let outgoing = store.load().unwrap().generation as i64;
    store
        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
        .unwrap();
    expected.push(outgoing);
    expected.sort_unstable_by(|a, b| b.cmp(a));
    expected.truncate(keep);
    assert_eq!(
        backup_rows(pg, state),
        expected,
        "after the write of generation {}",
        outgoing + 1
    );
}

#[test]
fn the_backup_prune_keeps_the_count_exact_across_gaps_and_retention_changes() {
    // After every write the backups are the newest `keep` of those there before and
    // the outgoing version, whatever came before: gaps (a backup deleted by hand,
    // writes that kept none), a retention raised and lowered, a restore. A cheaper
    // prune must keep this: deleting just `g - keep` (the one that falls out in the
    // steady state, tried in session 11) fails here, keeping a backup too many after
    // a gap and deleting one the retention keeps.
    let Some(pg) = cluster::cluster() else { return };
    let state = "exact";
    let three = keeping(pg, state, 3);
    three.create(json!({"n": 0})).unwrap();
    for _ in 0..8 {
        increment_and_check(pg, state, &three, 3);
    }
    // A gap in the middle (a backup deleted by hand).
    let current = three.load().unwrap().generation as i64;
    pg.client()
        .execute(
            "DELETE FROM statesafe_backups WHERE state = $1 AND generation = $2",
            &[&state, &(current - 2)],
        )
        .unwrap();
    for _ in 0..4 {
        increment_and_check(pg, state, &three, 3);
    }
    // Generations with no backup (a store that keeps none), then the retention back.
    let none = keeping(pg, state, 0);
    for _ in 0..2 {
        none.update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
            .unwrap();
    }
    for _ in 0..5 {
        increment_and_check(pg, state, &three, 3);
    }
    // Raised, then lowered by one and by more: exact from the first write.
    let five = keeping(pg, state, 5);
    for _ in 0..4 {
        increment_and_check(pg, state, &five, 5);
    }
    let four = keeping(pg, state, 4);
    increment_and_check(pg, state, &four, 4);
    increment_and_check(pg, state, &four, 4);
    let one = keeping(pg, state, 1);
    increment_and_check(pg, state, &one, 1);
    increment_and_check(pg, state, &one, 1);
    increment_and_check(pg, state, &three, 3);
    increment_and_check(pg, state, &three, 3);
    increment_and_check(pg, state, &three, 3);
    // A restore (a new generation whose outgoing version is kept like any other).
    let back_to = three.load().unwrap().generation - 2;
    let restored = three.restore(back_to).unwrap();
    assert_eq!(
        backup_rows(pg, state),
        vec![
            restored as i64 - 1,
            restored as i64 - 2,
            restored as i64 - 3
        ]
    );
    increment_and_check(pg, state, &three, 3);
    // Still below the first multiple of 64: none of this came from the full prune.
    assert!(three.load().unwrap().generation < 64);
}

#[test]
fn the_backup_retention_holds_under_writers_from_two_stores() {
    let Some(pg) = cluster::cluster() else { return };
    let state = "exact_two";
    keeping(pg, state, 4).create(json!({"n": 0})).unwrap();
    let url = pg.url(state);
    cluster::increment_n(2, 40, || {
        Arc::new(
            Store::options()
                .lock_timeout(Duration::from_secs(30))
                .backups(statesafe::BackupPolicy {
                    keep: 4,
                    hourly: 0,
                    daily: 0,
                })
                .open_url(&url)
                .unwrap(),
        )
    });
    let store = keeping(pg, state, 4);
    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, json!({"n": 80}));
    let g = loaded.generation as i64;
    assert_eq!(backup_rows(pg, state), vec![g - 1, g - 2, g - 3, g - 4]);
}

#[test]
fn a_write_that_misses_its_row_commits_nothing() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("swallowed", "table=swallowed");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    pg.client()
        .batch_execute(
            "CREATE FUNCTION swallow() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
             CREATE TRIGGER swallow BEFORE UPDATE ON swallowed FOR EACH ROW EXECUTE FUNCTION swallow()",
        )
        .unwrap();
    let err = store.update(|s| s["n"] = 2.into()).unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("not at generation 1")),
        "{err}"
    );
    let counts = pg
        .client()
        .query_one(
            "SELECT (SELECT count(*) FROM swallowed_backups), (SELECT count(*) FROM swallowed_history)",
            &[],
        )
        .unwrap();
    assert_eq!(counts.get::<_, i64>(0), 0, "a backup was committed");
    assert_eq!(counts.get::<_, i64>(1), 1, "a history entry was committed");
    pg.client()
        .batch_execute("DROP TRIGGER swallow ON swallowed")
        .unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 2);
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
}

#[test]
fn a_table_altered_by_hand_is_refused_on_open() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("altered", "table=altered");
    open(&url).create(json!({})).unwrap();
    pg.client()
        .batch_execute("ALTER TABLE altered DROP COLUMN checksum")
        .unwrap();
    let err = Store::<serde_json::Value>::options()
        .open_url(&url)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("no column `checksum`")),
        "{err}"
    );
    assert_eq!(err.kind(), "remote");
    assert!(err.hint().unwrap().contains("docs/remote.md"));
}

#[test]
fn the_quarantine_table_is_made_with_the_others_and_checked_when_there() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("q", "table=quar");
    open(&url).create(json!({})).unwrap();
    let mut admin = pg.client();
    let exists = |admin: &mut postgres::Client| -> bool {
        admin
            .query_one("SELECT to_regclass('quar_quarantine') IS NOT NULL", &[])
            .unwrap()
            .get(0)
    };
    assert!(
        exists(&mut admin),
        "made on first use, with the other tables"
    );
    // Tables made by an earlier build have no quarantine table: they still open,
    // and it is made when a recovery needs it.
    admin.batch_execute("DROP TABLE quar_quarantine").unwrap();
    let store = open(&url);
    store.update(|s| s["n"] = 1.into()).unwrap();
    assert!(!exists(&mut admin));
    // The others dropped and the quarantine left: the others are made again.
    admin
        .batch_execute(
            "CREATE TABLE quar_quarantine (LIKE quar_backups); DROP TABLE quar, quar_backups, quar_history",
        )
        .unwrap();
    drop(store);
    let err = Store::<serde_json::Value>::options()
        .open_url(&url)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("quar_quarantine") && !reason.contains("missing")),
        "only the quarantine table's layout is wrong: {err}"
    );
    admin.batch_execute("DROP TABLE quar_quarantine").unwrap();
    // One altered by hand is refused, as the others are.
    admin
        .batch_execute(
            "CREATE TABLE quar_quarantine (id bigserial PRIMARY KEY, state text NOT NULL, \
             generation bigint NOT NULL, document text, checksum bigint, written_at timestamptz, \
             writer text, quarantined_at timestamptz NOT NULL DEFAULT now())",
        )
        .unwrap();
    let err = Store::<serde_json::Value>::options()
        .open_url(&url)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("no column `reason`")),
        "{err}"
    );
}

#[test]
fn prepared_statements_follow_tables_altered_or_made_again_and_sessions_without_them() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("prep", "table=prep");
    let store = open(&url);
    store.create(json!({"n": 0})).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    let mut admin = pg.client();
    // The store's pooled connection has them now; columns added by hand (which the
    // layout check allows) make the server plan them again, with no error.
    admin
        .batch_execute(
            "ALTER TABLE prep ADD COLUMN note text; ALTER TABLE prep_history ADD COLUMN note text",
        )
        .unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // The tables dropped and made again (another state's open makes them), the same
    // connection's statements run against the new tables.
    admin
        .batch_execute("DROP TABLE prep, prep_backups, prep_history")
        .unwrap();
    let other = open(&url);
    other.create(json!({"n": 10})).unwrap();
    store
        .update(|s| s["n"] = s["n"].as_u64().unwrap().into())
        .unwrap();
    store.update(|s| s["n"] = 11.into()).unwrap();
    assert_eq!(other.load().unwrap().state, json!({"n": 11}));
    assert_eq!(store.generation().unwrap(), 2);
    // A server session without them (the backend terminated: the pool connects
    // again, `idle_connections_the_server_ended_are_replaced_without_an_error`)
    // prepares them in the transaction.
    terminate_idle_sessions(pg);
    for n in 12..15 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(store.load().unwrap().state, json!({"n": 14}));
    let last = store.history().unwrap().last().unwrap().generation;
    assert_eq!(last, store.generation().unwrap());
    assert_eq!(last, 5);
}

#[test]
fn an_unreachable_server_and_a_missing_database_are_typed_errors_with_hints() {
    let Some(pg) = cluster::cluster() else { return };
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = Store::<serde_json::Value>::options()
        .open_url(&format!(
            "postgres://{}@127.0.0.1:{port}/x?state=a",
            pg.user
        ))
        .unwrap_err();
    assert!(matches!(&err, Error::Remote { .. }), "{err}");
    assert!(err.hint().unwrap().contains("reachable"), "{err:?}");
    let err = Store::<serde_json::Value>::options()
        .open_url(&format!(
            "postgres://{}@127.0.0.1:{}/no_such_db?state=a",
            pg.user, pg.port
        ))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { reason, .. } if reason.contains("does not exist")),
        "{err}"
    );
}

#[test]
fn a_connection_terminated_mid_transaction_leaves_the_old_version_and_the_store_recovers() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("terminated");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    let mut tx = store.begin().unwrap();
    tx.state_mut()["n"] = 2.into();
    let killed: i64 = pg
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name LIKE 'statesafe %' AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let err = tx.commit().unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err}");
    assert_eq!(store.load().unwrap().state, json!({"n": 1}));
    // The next write uses a new connection, on its own.
    store.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: json!({"n": 3}),
            generation: 2
        }
    );
}

/// A TCP proxy in front of the server that, once armed, interferes with the next
/// `COMMIT`: it forwards it, then either cuts both connections before the server's
/// answer reaches the client, or (with `fatal`) hides the answer and tells the client
/// `FATAL: terminating connection due to administrator command` instead, as a backend
/// terminated right after its commit does.
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    /// While set, new connections are closed at once (a network partition).
    partitioned: Arc<AtomicBool>,
    /// While set, `txid_status($1)` is answered NULL, as a server answers for a
    /// transaction id older than its commit log keeps: the query is rewritten, in
    /// place and at the same length, to `text(NULL+$1)  `.
    forgotten: Arc<AtomicBool>,
    /// How many `txid_status($1)` queries went through.
    asked: Arc<AtomicUsize>,
}

impl CommitCutter {
    fn start(server_port: u16, fatal: bool) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let partitioned = Arc::new(AtomicBool::new(false));
        let forgotten = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let flag = Arc::clone(&armed);
        let cut_off = Arc::clone(&partitioned);
        let (forget, count) = (Arc::clone(&forgotten), Arc::clone(&asked));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut_off.load(Ordering::SeqCst) {
                    continue;
                }
                let server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let muted = Arc::new(AtomicBool::new(false));
                let cut = Cut {
                    armed: Arc::clone(&flag),
                    muted: Arc::clone(&muted),
                    fatal,
                    forgotten: Arc::clone(&forget),
                    asked: Arc::clone(&count),
                };
                std::thread::spawn(move || pump(client, server, Some(cut), None));
                std::thread::spawn(move || pump(s2, c2, None, Some(muted)));
            }
        });
        CommitCutter {
            port,
            armed,
            partitioned,
            forgotten,
            asked,
        }
    }
}

/// The client-to-server side's part in [`CommitCutter`].
struct Cut {
    armed: Arc<AtomicBool>,
    muted: Arc<AtomicBool>,
    fatal: bool,
    forgotten: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
}

/// The question [`CommitCutter`] counts, and what it asks instead while `forgotten`.
const TXID_STATUS: &[u8] = b"txid_status($1)";
const TXID_FORGOTTEN: &[u8] = b"text(NULL+$1)  ";

fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<Cut>, muted: Option<Arc<AtomicBool>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if muted.as_ref().is_some_and(|m| m.load(Ordering::SeqCst)) {
            continue;
        }
        if let Some(c) = &cut {
            let mut at = 0;
            while let Some(i) = buf[at..n]
                .windows(TXID_STATUS.len())
                .position(|w| w == TXID_STATUS)
            {
                c.asked.fetch_add(1, Ordering::SeqCst);
                if c.forgotten.load(Ordering::SeqCst) {
                    buf[at + i..at + i + TXID_STATUS.len()].copy_from_slice(TXID_FORGOTTEN);
                }
                at += i + TXID_STATUS.len();
            }
        }
        let commit = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
        let cutting = commit
            && cut
                .as_ref()
                .is_some_and(|c| c.armed.swap(false, Ordering::SeqCst));
        if cutting && cut.as_ref().is_some_and(|c| c.fatal) {
            cut.as_ref().unwrap().muted.store(true, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if cutting {
            if cut.as_ref().is_some_and(|c| c.fatal) {
                let _ = from.write_all(&fatal_response());
                // Give the server time to read the COMMIT before it sees the close.
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// An `ErrorResponse` message: FATAL 57P01, as a terminated backend sends.
fn fatal_response() -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P01"),
        (b'M', "terminating connection due to administrator command"),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}

fn cutter_store(pg: &Cluster, fatal: bool, state: &str) -> (CommitCutter, Store) {
    let cutter = CommitCutter::start(pg.port, fatal);
    let url = format!(
        // Plain: the proxy must see the protocol to find the COMMIT.
        "postgres://{}@127.0.0.1:{}/{}?state={state}&sslmode=disable",
        pg.user,
        cutter.port,
        cluster::DATABASE
    );
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    (cutter, store)
}

impl CommitCutter {
    /// Fails the test unless the armed cut happened.
    fn assert_cut(&self) {
        assert!(
            !self.armed.load(Ordering::SeqCst),
            "the proxy never saw the COMMIT: nothing was tested"
        );
    }
}

#[test]
fn a_commit_whose_answer_is_lost_is_settled_by_asking_the_server() {
    let Some(pg) = cluster::cluster() else { return };
    let (cutter, store) = cutter_store(pg, false, "cut");
    cutter.armed.store(true, Ordering::SeqCst);
    // The COMMIT reached the server; its answer did not reach us. A new connection
    // asks `txid_status`: committed, so the update succeeded (it is not sent again).
    store.update(|s| s["n"] = 2.into()).unwrap();
    cutter.assert_cut();
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: json!({"n": 2}),
            generation: 2
        }
    );
}

#[test]
fn a_fatal_answer_to_commit_is_not_reported_as_nothing_committed() {
    let Some(pg) = cluster::cluster() else { return };
    let (cutter, store) = cutter_store(pg, true, "fatal");
    cutter.armed.store(true, Ordering::SeqCst);
    // The server committed, then (as far as the client can tell) its backend was
    // terminated: "nothing was committed" would be false.
    let result = store.update(|s| s["n"] = 2.into());
    cutter.assert_cut();
    let snap = store.load().unwrap();
    assert_eq!((snap.generation, &snap.state), (2, &json!({"n": 2})));
    assert!(
        result.is_ok(),
        "a commit that happened was reported as {result:?}"
    );
}

#[test]
fn a_commit_lost_with_the_server_out_of_reach_is_outcome_unknown_and_settled_under_the_lock() {
    let Some(pg) = cluster::cluster() else { return };
    let (cutter, store) = cutter_store(pg, false, "partition");
    cutter.armed.store(true, Ordering::SeqCst);
    cutter.partitioned.store(true, Ordering::SeqCst);
    let err = store.update(|s| s["n"] = 2.into()).unwrap_err();
    cutter.assert_cut();
    match &err {
        Error::OutcomeUnknown { generation: 2, .. } => {}
        other => panic!("expected OutcomeUnknown for generation 2, got {other:?}"),
    }
    assert!(err.to_string().contains("lost during COMMIT"), "{err}");
    cutter.partitioned.store(false, Ordering::SeqCst);
    // Never sent again. The next transaction waits for the row lock, so for the
    // server to finish that COMMIT either way, and sees one whole version.
    let tx = store.begin().unwrap();
    match tx.generation() {
        1 => assert_eq!(tx.state(), &json!({"n": 1})),
        2 => assert_eq!(tx.state(), &json!({"n": 2})),
        g => panic!("generation {g} after one lost commit"),
    }
    let generation = tx.generation();
    drop(tx);
    store.update(|s| s["after"] = true.into()).unwrap();
    assert_eq!(store.generation().unwrap(), generation + 1);
}

/// A `replace` over a damaged row (its checksum bumped by hand) of state `name`, made
/// through a [`CommitCutter`] that loses its `COMMIT`'s answer with the server out of
/// reach (still partitioned on return): the `OutcomeUnknown` it gave, and what the
/// tests of its follow-up need.
struct LostCommit {
    cutter: CommitCutter,
    store: Store,
    events: Arc<std::sync::Mutex<Vec<Event>>>,
    admin: postgres::Client,
    err: Error,
}

fn replace_over_damage_losing_its_commit(pg: &Cluster, name: &str) -> LostCommit {
    let cutter = CommitCutter::start(pg.port, false);
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}?state={name}&sslmode=disable",
        pg.user,
        cutter.port,
        cluster::DATABASE
    );
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let store: Store = Store::options()
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .open_url(&url)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let mut admin = pg.client();
    let damaged = admin
        .execute(
            "UPDATE statesafe SET checksum = checksum + 1 WHERE state = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(damaged, 1);
    cutter.armed.store(true, Ordering::SeqCst);
    cutter.partitioned.store(true, Ordering::SeqCst);
    let err = store.replace(json!({"n": 3})).unwrap_err();
    cutter.assert_cut();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    LostCommit {
        cutter,
        store,
        events,
        admin,
        err,
    }
}

/// review15 item 6: a `replace` over a damaged row (which it copies into the
/// quarantine table in its own transaction) whose `COMMIT` lost its answer with the
/// server out of reach gave `OutcomeUnknown` and nothing else: no word that the row
/// may have been quarantined, nor where, and no `Quarantined` event even when the
/// replace had landed. The error now names where the row went if it committed, and
/// the store asks the server at its next transaction or read (as `txid_status`
/// settles a lost `COMMIT` at once when the server can be reached): `Quarantined`
/// when it landed, nothing when it did not.
#[test]
fn review15_a_replace_over_damage_whose_commit_is_lost_says_where_the_row_went() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "review15-lost-quarantine";
    let LostCommit {
        cutter,
        store,
        events,
        mut admin,
        err,
    } = replace_over_damage_losing_its_commit(pg, name);
    let text = err.to_string();
    let named = text
        .split('`')
        .find(|p| p.contains("#quarantine="))
        .map(std::path::PathBuf::from);
    assert!(
        named.is_some() && text.contains("quarantine table"),
        "the error does not say where the damaged row went: {text}"
    );
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, statesafe::Event::Quarantined { .. })),
        "reported as quarantined before anyone knew"
    );
    cutter.partitioned.store(false, Ordering::SeqCst);
    // Wait for the server to finish that COMMIT either way (it holds the row lock).
    let mut settle = admin.transaction().unwrap();
    settle
        .query(
            "SELECT 1 FROM statesafe WHERE state = $1 FOR UPDATE",
            &[&name],
        )
        .unwrap();
    settle.commit().unwrap();
    let kept: Vec<i64> = admin
        .query(
            "SELECT id FROM statesafe_quarantine WHERE state = $1",
            &[&name],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let strict: Store = Store::options()
        .recovery(statesafe::RecoveryPolicy::Fail)
        .open_url(&pg.url(name))
        .unwrap();
    let landed = strict.load().is_ok();
    eprintln!("landed: {landed}; quarantine rows {kept:?}; error: {text}");
    // The next read asks the server.
    let _ = store.load();
    let seen: Vec<statesafe::Event> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, statesafe::Event::Quarantined { .. }))
        .cloned()
        .collect();
    if landed {
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(
            named
                .as_ref()
                .unwrap()
                .to_string_lossy()
                .ends_with(&format!("#quarantine={}", kept[0])),
            "{named:?} is not quarantine row {}",
            kept[0]
        );
        assert_eq!(strict.load().unwrap().state, json!({"n": 3}));
        match seen.as_slice() {
            [
                statesafe::Event::Quarantined {
                    quarantined,
                    generation,
                    ..
                },
            ] => {
                assert_eq!(Some(quarantined), named.as_ref());
                assert_eq!(*generation, strict.load().unwrap().generation);
            }
            other => panic!("the replace landed, and the store said {other:?}"),
        }
    } else {
        assert!(kept.is_empty(), "{kept:?}");
        assert!(seen.is_empty(), "the replace did not land: {seen:?}");
    }
}

/// fix17: the follow-up of a lost `COMMIT` over a damaged row stayed pending forever
/// when `txid_status` answered NULL (the transaction id older than the server's commit
/// log keeps: a store that was not used for long, or a busy server): every read and
/// transaction asked again, and the user never learned whether the row went to the
/// quarantine. The proxy answers NULL here. The quarantined copy is now looked up by
/// the id its insert returned: there, the write committed (`Quarantined`); not there,
/// it did not (nothing). Either way the store stops asking.
#[test]
fn fix17_a_lost_commit_the_server_no_longer_knows_is_settled_by_its_quarantine_row() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "fix17-forgotten-xid";
    let LostCommit {
        cutter,
        store,
        events,
        mut admin,
        err,
    } = replace_over_damage_losing_its_commit(pg, name);
    let named = err
        .to_string()
        .split('`')
        .find(|p| p.contains("#quarantine="))
        .map(std::path::PathBuf::from);
    cutter.partitioned.store(false, Ordering::SeqCst);
    // Wait for the server to finish that COMMIT either way (it holds the row lock).
    let mut settle = admin.transaction().unwrap();
    settle
        .query(
            "SELECT 1 FROM statesafe WHERE state = $1 FOR UPDATE",
            &[&name],
        )
        .unwrap();
    settle.commit().unwrap();
    let landed = !admin
        .query(
            "SELECT id FROM statesafe_quarantine WHERE state = $1",
            &[&name],
        )
        .unwrap()
        .is_empty();
    cutter.forgotten.store(true, Ordering::SeqCst);
    let asked = cutter.asked.load(Ordering::SeqCst);
    // The next read asks the server, which no longer knows the transaction.
    let _ = store.load();
    let asked_then = cutter.asked.load(Ordering::SeqCst);
    assert!(
        asked_then > asked,
        "the read did not ask about the lost COMMIT: nothing was tested"
    );
    let quarantined = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Quarantined { quarantined, .. } => Some(quarantined.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let seen = quarantined(&events.lock().unwrap());
    eprintln!("landed: {landed}; asked {asked} then {asked_then}; seen {seen:?}");
    if landed {
        assert!(named.is_some());
        assert_eq!(
            seen,
            named.into_iter().collect::<Vec<_>>(),
            "the replace landed, and the store did not say where the row went"
        );
    } else {
        assert!(seen.is_empty(), "the replace did not land: {seen:?}");
    }
    // Settled: the reads and transactions after it ask nothing more.
    let _ = store.load();
    let _ = store.update(|s| s["after"] = true.into());
    assert_eq!(
        cutter.asked.load(Ordering::SeqCst),
        asked_then,
        "the store asks again and again about a transaction the server no longer knows"
    );
}

/// The child role of the SIGKILL test: holds the row lock and waits to be killed.
#[test]
fn child_holds_the_lock_until_killed() {
    let Ok(url) = std::env::var("STATESAFE_PG_CHILD_URL") else {
        return;
    };
    let store = open(&url);
    let tx = store.begin().unwrap();
    println!("@@held");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
    drop(tx);
}

#[test]
fn a_holder_killed_mid_transaction_frees_the_lock_at_once() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("killed");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    let mut child = spawn_holder(pg, &url);
    let holder = store.lock_holder().expect("the child holds the lock");
    assert_eq!(holder.pid, child.id());
    assert_eq!(holder.operation, "update");
    child.kill().unwrap();
    child.wait().unwrap();
    // No lease to expire: the server ended the child's transaction when its
    // connection closed. (Without that, this would wait forever: the server's
    // idle_in_transaction_session_timeout is off.)
    let waiting: Store = Store::options()
        .lock_timeout(Duration::from_secs(600))
        .open_url(&url)
        .unwrap();
    waiting.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
    assert!(store.lock_holder().is_none());
}

fn spawn_holder(pg: &Cluster, url: &str) -> std::process::Child {
    let _ = pg;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "remote::child_holds_the_lock_until_killed",
            "--nocapture",
        ])
        .env("STATESAFE_PG_CHILD_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let held = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("@@held"));
    assert!(held, "the child did not take the lock");
    child
}

/// What one writer of the crash loop saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Updates that returned `Ok`: each must be in the state.
    acked: u64,
    /// `OutcomeUnknown`: each may or may not be in the state.
    unknown: u64,
    /// Other errors (the server was down): none may be in the state.
    failed: u64,
}

#[test]
fn server_crashes_and_restarts_lose_no_acknowledged_update() {
    let Some(pg) = cluster::cluster() else { return };
    let restarts: u32 = std::env::var("STATESAFE_PG_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    const WRITERS: usize = 8;
    let url = pg.url("crashes");
    let keys: Vec<String> = (0..WRITERS).map(|i| format!("w{i}")).collect();
    let initial: serde_json::Map<String, serde_json::Value> =
        keys.iter().map(|k| (k.clone(), json!(0))).collect();
    open(&url)
        .create(serde_json::Value::Object(initial))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<Vec<std::sync::Mutex<Tally>>> =
        Arc::new((0..WRITERS).map(|_| Default::default()).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (url, key, stop, tallies) = (
                url.clone(),
                keys[i].clone(),
                Arc::clone(&stop),
                Arc::clone(&tallies),
            );
            // Its own store: its own connections, like another machine. Opened
            // before the first crash (opening needs the server).
            let store: Store = Store::options()
                .lock_timeout(Duration::from_secs(30))
                .open_url(&url)
                .unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let r = store.update(|s| s[&key] = (s[&key].as_u64().unwrap() + 1).into());
                    let mut t = tallies[i].lock().unwrap();
                    match r {
                        Ok(()) => t.acked += 1,
                        Err(Error::OutcomeUnknown { .. }) => t.unknown += 1,
                        Err(Error::Remote { .. }) => {
                            t.failed += 1;
                            drop(t);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("writer {i}: unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let snapshot = |t: &Arc<Vec<std::sync::Mutex<Tally>>>| -> Vec<Tally> {
        t.iter().map(|m| *m.lock().unwrap()).collect()
    };
    for _ in 0..restarts {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 300));
        assert!(pg.crash_and_restart(), "not our server: cannot crash it");
    }
    // Every writer recovers on its own: each gets updates through after the last restart.
    let at_last = snapshot(&tallies);
    let mut recovered = false;
    for _ in 0..600 {
        let now = snapshot(&tallies);
        if now.iter().zip(&at_last).all(|(n, l)| n.acked > l.acked) {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        recovered,
        "writers did not recover after the server came back"
    );
    let state = open(&url).load().unwrap().state;
    let tallies = snapshot(&tallies);
    println!("{tallies:?}");
    for (key, t) in keys.iter().zip(&tallies) {
        let v = state[key].as_u64().unwrap();
        assert!(
            t.acked <= v && v <= t.acked + t.unknown,
            "{key} = {v}, but {t:?}: an acknowledged update was lost, or a failed one was applied"
        );
    }
    assert!(
        tallies.iter().map(|t| t.failed + t.unknown).sum::<u64>() > 0,
        "no write ever met a crash"
    );
}

#[test]
fn tls_is_used_and_the_certificate_checked_as_sslmode_says() {
    let Some(pg) = cluster::cluster() else { return };
    if !pg.ours() {
        cluster::skipped(
            "TLS tests: STATESAFE_PG_URL names a server whose certificates the tests do not have",
        );
        return;
    }
    let ca = pg.cert("ca.crt").unwrap();
    let other = pg.cert("other-ca.crt").unwrap();
    let url = |extra: &str| {
        format!(
            "postgres://{}@127.0.0.1:{}/{}?state=tls&{extra}",
            cluster::TLS_USER,
            pg.port,
            cluster::DATABASE
        )
    };
    let open = |extra: &str| Store::<serde_json::Value>::options().open_url(&url(extra));
    // The role may only connect over TLS: without it the server refuses.
    let err = open("sslmode=disable").unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err}");
    // require: encrypted, the certificate not checked (as libpq).
    open("sslmode=require")
        .unwrap()
        .create(json!({"n": 1}))
        .unwrap();
    // The default, prefer, takes TLS when the server offers it.
    assert_eq!(open("").unwrap().load().unwrap().generation, 1);
    // verify-ca: the chain is checked, the name is not.
    let ca_arg = format!("sslrootcert={}", ca.display());
    open(&format!("sslmode=verify-ca&{ca_arg}"))
        .unwrap()
        .update(|s| s["n"] = 2.into())
        .unwrap();
    // verify-full: the certificate names statesafe-test.invalid, not 127.0.0.1.
    let err = open(&format!("sslmode=verify-full&{ca_arg}")).unwrap_err();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
    // A root that did not sign it: refused in both verifying modes.
    for mode in ["verify-ca", "verify-full"] {
        let err = open(&format!("sslmode={mode}&sslrootcert={}", other.display())).unwrap_err();
        assert!(
            format!("{err:?}").contains("UnknownIssuer"),
            "{mode}: {err:?}"
        );
    }
    // require with a root given checks the chain, as libpq does.
    let err = open(&format!("sslmode=require&sslrootcert={}", other.display())).unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    assert_eq!(
        open("sslmode=require").unwrap().load().unwrap().state,
        json!({"n": 2})
    );
}

/// A statement the server's `statement_timeout` cancels (here the write itself, slowed
/// by a trigger; the wait for the row lock is no longer cut short by it: see
/// `red12::a_short_statement_timeout_does_not_cut_the_lock_wait_short`) is a typed
/// error naming the URL, the operation and the cause, with a hint; nothing is written.
#[test]
fn a_statement_timeout_is_a_typed_error_with_nothing_written() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("statement_timeout");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    pg.client()
        .batch_execute(
            "CREATE FUNCTION statesafe_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$;
             CREATE TRIGGER statesafe_test_slow BEFORE UPDATE ON statesafe FOR EACH ROW
               WHEN (NEW.state = 'statement_timeout') EXECUTE FUNCTION statesafe_test_slow();",
        )
        .unwrap();
    // 200 ms for the statement's own work, plus the 1 s lock timeout: cancelled
    // after 1.2 s, long before the trigger's 5 s.
    let impatient: Store = Store::options()
        .lock_timeout(Duration::from_secs(1))
        .open_url(&format!("{url}&options=-c%20statement_timeout%3D200"))
        .unwrap();
    let err = impatient.update(|s| s["n"] = 2.into()).unwrap_err();
    pg.client()
        .batch_execute(
            "DROP TRIGGER statesafe_test_slow ON statesafe; DROP FUNCTION statesafe_test_slow()",
        )
        .unwrap();
    assert!(
        matches!(&err, Error::Remote { reason, op, .. } if reason.contains("statement_timeout") && op == "write"),
        "{err:?}"
    );
    assert!(err.to_string().contains("state=statement_timeout"), "{err}");
    let hint = err.hint().unwrap();
    assert!(
        hint.contains("nothing was committed") && hint.contains("statement_timeout"),
        "{hint}"
    );
    assert_eq!(
        store.load().unwrap(),
        statesafe::Snapshot {
            state: json!({"n": 1}),
            generation: 1
        }
    );
}

/// A document over PostgreSQL's limits (1 GB for a value and for a query message):
/// refused before anything is sent when the statement would be over the limit (the
/// limit lowered here by the test hook: a 1 GB document is more than a test can
/// build), and, when the server itself refuses the statement (here a row that may
/// not be moved out of line, `STORAGE PLAIN`, fails the `UPDATE` after the backup
/// and history parts of the same statement ran), a typed error with a hint and no
/// partial state: the row, its backups and its history are as they were.
#[test]
fn a_document_over_the_servers_limits_is_a_typed_error_with_nothing_written() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("big", "table=big");
    let store = open(&url);
    store.create(json!({"n": 1, "pad": ""})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let rows = || {
        let mut c = pg.client();
        let main = c
            .query_one(
                "SELECT generation, document FROM big WHERE state = 'big'",
                &[],
            )
            .unwrap();
        let count = |c: &mut postgres::Client, t: &str| -> i64 {
            c.query_one(
                &format!("SELECT count(*) FROM {t} WHERE state = 'big'"),
                &[],
            )
            .unwrap()
            .get(0)
        };
        (
            main.get::<_, i64>(0),
            main.get::<_, String>(1),
            count(&mut c, "big_backups"),
            count(&mut c, "big_history"),
        )
    };
    let before = rows();
    assert_eq!((before.0, before.2, before.3), (2, 1, 2));
    let is_over_the_limits = |err: &Error| {
        matches!(err, Error::Remote { reason, .. } if reason.contains("over the server's limits") || reason.contains("over PostgreSQL's limits"))
            && err.hint().unwrap().contains("nothing was committed")
    };
    // Over the statement limit: refused on the client.
    statesafe::postgres::set_statement_limit_for_tests(4096);
    let err = store
        .update(|s| s["pad"] = "x".repeat(5000).into())
        .unwrap_err();
    statesafe::postgres::set_statement_limit_for_tests(0);
    assert!(is_over_the_limits(&err), "{err:?}");
    assert_eq!(rows(), before);
    // Refused by the server, mid-statement.
    pg.client()
        .batch_execute("ALTER TABLE big ALTER COLUMN document SET STORAGE PLAIN")
        .unwrap();
    let err = store
        .update(|s| s["pad"] = "x".repeat(20_000).into())
        .unwrap_err();
    assert!(is_over_the_limits(&err), "{err:?}");
    assert!(err.to_string().contains("54000"), "{err}");
    assert_eq!(rows(), before, "no part of the refused write is left");
    // The store goes on once the document fits.
    store.update(|s| s["pad"] = "y".into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 3);
}

/// Through PgBouncer in transaction pooling mode (4 server connections for 8
/// clients, so consecutive transactions of one client run on different server
/// sessions): 8 threads, each with its own store, increment one state; none is
/// lost, and the checksums verify. Nothing statesafe does outlives a transaction
/// (no session `SET`, no advisory lock, no prepared statement), or this would fail.
#[test]
fn pgbouncer_in_transaction_mode_loses_no_update() {
    let Some(pg) = cluster::cluster() else { return };
    let Some(bouncer) = pg.bouncer() else { return };
    let url = bouncer.url("bounced");
    open(&url).create(json!({"n": 0})).unwrap();
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 50;
    // A store (and so a connection pool) per thread.
    cluster::increment_n(THREADS, ROUNDS, || {
        Arc::new(
            Store::options()
                .lock_timeout(Duration::from_secs(120))
                .open_url(&url)
                .unwrap(),
        )
    });
    let store = open(&url);
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": THREADS * ROUNDS}));
    assert_eq!(snap.generation, 1 + THREADS * ROUNDS);
    assert!(store.check().unwrap().is_ok());
    // Compare-and-swap through it too.
    let err = store.replace_if(1, json!({"n": -1})).unwrap_err();
    assert!(matches!(err, Error::GenerationConflict { .. }), "{err}");
    assert_eq!(store.load().unwrap().state, json!({"n": THREADS * ROUNDS}));
}

/// Terminates every client session of the test database but the caller's (this
/// process's cluster is its own), and waits until the server has ended them.
fn terminate_idle_sessions(pg: &Cluster) {
    let mut admin = pg.client();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND datname = current_database() \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "no session to terminate");
    for _ in 0..500 {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND datname = current_database() \
             AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the terminated sessions did not end within 5 s");
}

/// A long-lived store whose idle pooled connections the server ended (an
/// administrator's `pg_terminate_backend`, a restart, an idle timeout) carries on:
/// the server's goodbye (`57P01`, read before anything is sent on that connection)
/// means nothing was done there, so the next read and the next write connect again
/// on their own instead of failing once.
#[test]
fn idle_connections_the_server_ended_are_replaced_without_an_error() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("idle_terminated");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    terminate_idle_sessions(pg);
    store.update(|s| s["n"] = 3.into()).unwrap();
    terminate_idle_sessions(pg);
    assert_eq!(store.load().unwrap().state, json!({"n": 3}));
    terminate_idle_sessions(pg);
    assert_eq!(store.generation().unwrap(), 3);
    terminate_idle_sessions(pg);
    let mut tx = store.begin().unwrap();
    tx.state_mut()["n"] = 4.into();
    tx.commit().unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 4}));
    assert_eq!(store.history().unwrap().len(), 4);
}
