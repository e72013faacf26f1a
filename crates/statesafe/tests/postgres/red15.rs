//! Red team, session 15: the remote holes session 14 left open.

use serde_json::json;
use statesafe::{Error, RecoveryPolicy, Settings, Store};

use crate::cluster::{self, open};

/// A committed row edited by hand to look like a row that holds only settings: its
/// document, checksum and writer NULL and its generation 0 (hist14 refuses the same
/// row at a generation above 0). It was served as a state never committed (`load`:
/// `NotFound`; a binding's `default`), and the next write began a new life from the
/// default above the kept generations, dropping the committed version. What tells it
/// from a real settings-only row: the state's history and backups, which a state that
/// never had a version has none of. Damage, recovered as a damaged row is.
#[test]
fn a_committed_row_made_to_look_settings_only_is_damage() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "red15-settings-only";
    let url = pg.url(name);
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let edited = pg
        .client()
        .execute(
            "UPDATE statesafe SET document = NULL, checksum = NULL, writer = NULL, generation = 0 WHERE state = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    let got = strict.load();
    assert!(
        matches!(&got, Err(Error::Corrupt { .. })),
        "a row made to look settings-only was served as {got:?}"
    );
    let wrote = strict.update(|s| s["n"] = 9.into());
    assert!(
        matches!(&wrote, Err(Error::Corrupt { .. })),
        "a write over a row made to look settings-only: {wrote:?}"
    );
    // Recovered as a damaged row is: the acknowledged generation 2, above it.
    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, json!({"n": 2}));
    assert!(loaded.generation > 2, "{}", loaded.generation);
}

/// A state that never had a version but has settings recorded (`statesafe settings
/// URL …` before the first write) is still no state: `NotFound`, and `create` makes
/// it.
#[test]
fn a_settings_only_row_is_still_a_state_not_yet_written() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("red15-settings-first");
    let store = open(&url);
    store.save_settings(&Settings::default()).unwrap();
    assert!(
        matches!(store.load(), Err(Error::NotFound { .. })),
        "{:?}",
        store.load()
    );
    store.create(json!({"n": 1})).unwrap();
    assert_eq!(store.load().unwrap().state, json!({"n": 1}));
}

/// review15: the same damaged row, met by a writer that first finds the state held by
/// `statesafe lock` (its lock row taken). The writer's first transaction (whose
/// `INSERT … ON CONFLICT` tells the damage, `kept_versions`) rolls back, and the
/// one that waits for the lock re-reads the row as a plain settings-only row: the
/// write is not refused, and goes at generation 1 over committed history entries.
#[test]
fn review15_a_writer_that_waited_for_statesafe_lock_still_refuses_the_damaged_row() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "review15-settings-only-waited";
    let url = pg.url(name);
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // The lock row exists (as after any `statesafe lock` of the state).
    drop(store.lock("make the lock row").unwrap());
    let mut admin = pg.client();
    let edited = admin
        .execute(
            "UPDATE statesafe SET document = NULL, checksum = NULL, writer = NULL, generation = 0 WHERE state = $1",
            &[&name],
        )
        .unwrap();
    assert_eq!(edited, 1);
    // Hold the state's lock row, as `statesafe lock URL -- CMD` does.
    let mut holder = pg.client();
    let mut held = holder.transaction().unwrap();
    let key = format!("\u{1}lock\u{1}{name}");
    held.query(
        "SELECT 1 FROM statesafe WHERE state = $1 FOR UPDATE",
        &[&key],
    )
    .unwrap();
    let writer_url = url.clone();
    let writer = std::thread::spawn(move || {
        let strict: Store = Store::options()
            .recovery(RecoveryPolicy::Fail)
            .lock_timeout(std::time::Duration::from_secs(600))
            .open_url(&writer_url)
            .unwrap();
        strict.replace(json!({"n": 9}))
    });
    // Until the writer waits for the lock row (in its second transaction).
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
                &[&name],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    held.commit().unwrap();
    let wrote = writer.join().unwrap();
    let history: Vec<(i64, String)> = admin
        .query(
            "SELECT generation, entry FROM statesafe_history WHERE state = $1 ORDER BY generation",
            &[&name],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let row: (i64, Option<String>) = {
        let r = admin
            .query_one(
                "SELECT generation, document FROM statesafe WHERE state = $1",
                &[&name],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    eprintln!("wrote: {wrote:?}\nrow: {row:?}\nhistory: {history:#?}");
    // A replace over damage quarantines it and writes above every kept generation
    // (as the replace without the wait does): never at generation 1 over entry 1.
    let g = wrote.expect("the replace");
    assert!(
        g > 2,
        "the replace over the damaged row wrote generation {g}"
    );
    assert_eq!(history.first().map(|h| h.0), Some(1));
    // The damaged row itself is kept, as by the replace that did not wait.
    let kept: i64 = admin
        .query_one(
            "SELECT count(*) FROM statesafe_quarantine WHERE state = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "the damaged row was not quarantined");
}

/// review15: an operator resets a state (deletes its row by hand: the "earlier life"
/// remote.md supports), then records settings before the first write of the new life
/// (`statesafe settings URL …`). The settings-only row read as damage (the earlier
/// life's history and backups exist), and a store with the default recovery policy
/// brought the deleted life's newest version back as the current state. The row is
/// now marked as the start of a new life: no state yet, and the first write goes on
/// above the earlier life's generations.
#[test]
fn review15_a_reset_state_given_settings_is_not_brought_back_by_a_load() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "review15-reset-then-settings";
    let url = pg.url(name);
    let store = open(&url);
    store.create(json!({"old": 1})).unwrap();
    store.update(|s| s["old"] = 2.into()).unwrap();
    let deleted = pg
        .client()
        .execute("DELETE FROM statesafe WHERE state = $1", &[&name])
        .unwrap();
    assert_eq!(deleted, 1);
    let fresh = open(&url);
    fresh.save_settings(&Settings::default()).unwrap();
    let got = fresh.load();
    eprintln!("load after the reset and settings: {got:?}");
    assert!(
        matches!(&got, Err(Error::NotFound { .. })),
        "the reset state read as {got:?}"
    );
    // Recording settings again, and a strict store, see the same.
    fresh.save_settings(&Settings::default()).unwrap();
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    assert!(
        matches!(strict.load(), Err(Error::NotFound { .. })),
        "{:?}",
        strict.load()
    );
    assert_eq!(strict.check().unwrap().problems, Vec::<String>::new());
    // Nothing was quarantined, and the new life's first version goes on above the
    // earlier life's generations.
    let kept: i64 = pg
        .client()
        .query_one(
            "SELECT count(*) FROM statesafe_quarantine WHERE state = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);
    let g = strict.create(json!({"new": 1})).unwrap();
    assert_eq!(g, 3);
    let loaded = strict.load().unwrap();
    assert_eq!((loaded.state, loaded.generation), (json!({"new": 1}), 3));
    assert_eq!(strict.document_at(3).unwrap(), json!({"new": 1}));
}

/// review15's fix, against an attacker who can only set columns to NULL: the new
/// life's committed row with its document, checksum and writer NULLed is damage (the
/// mark of a row not yet written is a value only statesafe writes, which a commit
/// writes over), repaired from the new life's own version.
#[test]
fn review15_a_new_lifes_committed_row_nulled_is_still_damage() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "review15-reset-then-nulled";
    let url = pg.url(name);
    let store = open(&url);
    store.create(json!({"old": 1})).unwrap();
    store.update(|s| s["old"] = 2.into()).unwrap();
    let mut admin = pg.client();
    admin
        .execute("DELETE FROM statesafe WHERE state = $1", &[&name])
        .unwrap();
    let fresh = open(&url);
    fresh.save_settings(&Settings::default()).unwrap();
    fresh.create(json!({"new": 1})).unwrap();
    fresh.update(|s| s["new"] = 2.into()).unwrap();
    for nulled in [
        "document = NULL, checksum = NULL",
        "document = NULL, checksum = NULL, writer = NULL",
    ] {
        let edited = admin
            .execute(
                &format!("UPDATE statesafe SET {nulled} WHERE state = $1"),
                &[&name],
            )
            .unwrap();
        assert_eq!(edited, 1);
        let strict: Store = Store::options()
            .recovery(RecoveryPolicy::Fail)
            .open_url(&url)
            .unwrap();
        let got = strict.load();
        assert!(
            matches!(&got, Err(Error::Corrupt { .. })),
            "the new life's row with {nulled} read as {got:?}"
        );
        let wrote = strict.update(|s| s["new"] = 9.into());
        assert!(
            matches!(&wrote, Err(Error::Corrupt { .. })),
            "a write over it: {wrote:?}"
        );
        // Recovered to the new life's acknowledged version, never the old life's.
        let loaded = store.load().unwrap();
        assert_eq!(loaded.state, json!({"new": 2}), "after {nulled}");
    }
}

/// review15's fix: a row marked as not yet written, brought back (from an older copy
/// of the table) after versions of the new life were committed above it, is damage:
/// the versions kept above its generation say so.
#[test]
fn review15_a_new_life_mark_brought_back_over_committed_versions_is_damage() {
    let Some(pg) = cluster::cluster() else { return };
    let name = "review15-mark-brought-back";
    let url = pg.url(name);
    let store = open(&url);
    store.create(json!({"old": 1})).unwrap();
    store.update(|s| s["old"] = 2.into()).unwrap();
    let mut admin = pg.client();
    admin
        .execute("DELETE FROM statesafe WHERE state = $1", &[&name])
        .unwrap();
    let fresh = open(&url);
    fresh.save_settings(&Settings::default()).unwrap();
    let (generation, writer): (i64, Option<String>) = {
        let r = admin
            .query_one(
                "SELECT generation, writer FROM statesafe WHERE state = $1",
                &[&name],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(generation, 2);
    fresh.create(json!({"new": 1})).unwrap();
    fresh.update(|s| s["new"] = 2.into()).unwrap();
    let edited = admin
        .execute(
            "UPDATE statesafe SET document = NULL, checksum = NULL, writer = $2, generation = $3 WHERE state = $1",
            &[&name, &writer, &generation],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    let got = strict.load();
    assert!(
        matches!(&got, Err(Error::Corrupt { .. })),
        "the mark brought back read as {got:?}"
    );
    let created = strict.create(json!({"x": 1}));
    assert!(
        matches!(&created, Err(Error::AlreadyExists { .. })),
        "a create over it: {created:?}"
    );
    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, json!({"new": 2}));
    assert!(loaded.generation > 4, "{}", loaded.generation);
}
