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
