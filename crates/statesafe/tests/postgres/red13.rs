//! Session 13: the red team's suspicions about the PostgreSQL backend, each a test. An
//! `#[ignore = "red13: …"]` test is a bug not fixed yet (the comment says how it
//! happens; `--run-ignored all` runs it).

use serde_json::json;
use statesafe::{Error, Format, RecoveryPolicy, Settings, Store};

use crate::cluster::{self, open};

/// `URL#backup=N` is how statesafe names a backup in its messages (and
/// `URL#quarantine=ID`, `URL#settings`), so a user may pass one back: the `#…` was
/// taken as part of the state's name (`state=a#backup=1`), and a write made a new
/// state of that name. A fragment names nothing statesafe can open: refused, naming
/// it, with nothing created.
#[test]
fn a_url_with_a_fragment_is_refused_and_creates_nothing() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("red13-fragment");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let with_fragment = format!("{url}#backup=1");
    match Store::<serde_json::Value>::options().open_url(&with_fragment) {
        Err(Error::BadPath { reason, .. }) => assert!(reason.contains("#backup=1"), "{reason}"),
        Err(e) => panic!("refused, but not as a bad URL: {e}"),
        Ok(s) => {
            let written = s.update(|v| *v = json!({"new": true}));
            panic!("`{with_fragment}` opened (a write gave {written:?})")
        }
    }
    let rows: i64 = pg
        .client()
        .query_one(
            "SELECT count(*) FROM statesafe WHERE state LIKE 'red13-fragment%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

/// A URL parameter neither statesafe nor the client library knows (`format=sealed`,
/// meant as the store's format) is refused, naming it, never ignored. (It was refused
/// as "invalid connection string", which names nothing: the client library's cause,
/// "unknown option `format`", was left out.)
#[test]
fn an_unknown_url_parameter_is_refused_naming_it() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url_with("red13-unknown-parameter", "format=sealed");
    match Store::<serde_json::Value>::options().open_url(&url) {
        Err(Error::BadPath { reason, .. }) => assert!(reason.contains("format"), "{reason}"),
        Err(e) => panic!("refused, but not as a bad URL: {e}"),
        Ok(_) => panic!("`{url}` opened: `format=sealed` was ignored"),
    }
}

/// A PostgreSQL state is always stored plain (the row's checksum covers its
/// document): a sealed or journal format asked for (an option, or recorded settings
/// given to `create_with`/`save_settings`) is refused loudly, never silently written
/// plain.
#[test]
fn a_format_other_than_plain_is_refused_for_a_postgres_state() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("red13-sealed");
    let sealed: Store = Store::options()
        .format(Format::Sealed)
        .open_url(&url)
        .unwrap();
    let err = sealed.create(json!({"n": 1})).unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { .. }) && err.to_string().contains("sealed"),
        "{err}"
    );
    let store = open(&url);
    let settings = Settings {
        format: Format::Sealed,
        ..Settings::default()
    };
    let err = store.create_with(&settings, json!({"n": 1})).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    store.create(json!({"n": 1})).unwrap();
    let err = store.save_settings(&settings).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert_eq!(open(&url).settings().format, Format::Plain);
}

/// The state `name` committed at generations 1 and 2 (`{"n": 1}`, `{"n": 2}`), then its
/// row changed by hand (`UPDATE statesafe SET {set}`): a store (default recovery) and
/// one that fails on damage instead of recovering it.
fn two_commits_then_edited(pg: &cluster::Cluster, name: &str, set: &str) -> (Store, Store) {
    let url = pg.url(name);
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let edited = pg
        .client()
        .execute(
            &format!("UPDATE statesafe SET {set} WHERE state = $1"),
            &[&name],
        )
        .unwrap();
    assert_eq!(edited, 1, "the row of `{name}` was not found to edit");
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    (store, strict)
}

/// A state's row whose document and checksum were set to NULL by hand after commits
/// (a row with a writer: statesafe only leaves the document NULL on a row it made
/// before the state's first commit) was served as a missing state: `load` said
/// `NotFound` (`load_or_default` and a binding's `default` served the default at
/// generation 0), and the next `update` started from the default, dropping every
/// committed version. A damaged row, as a damaged file is.
#[test]
fn a_committed_row_whose_document_was_nulled_is_damage_not_a_missing_state() {
    let Some(pg) = cluster::cluster() else { return };
    let (store, strict) = two_commits_then_edited(
        pg,
        "red13-null-document",
        "document = NULL, checksum = NULL",
    );
    let got = strict.load();
    assert!(
        matches!(got, Err(Error::Corrupt { .. })),
        "a nulled document was served as {got:?}"
    );
    // Recovered as a damaged row is: the acknowledged generation 2 rebuilt.
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
}

/// A committed row whose document, checksum and writer were all set to NULL by hand
/// (nothing left saying a writer committed it) was served as a state never committed:
/// `load` said `NotFound`, and the next write created over it. A row with a
/// generation above 0 was committed (statesafe makes a row without a document only at
/// generation 0, or in the transaction that writes its first version): damage, as a
/// damaged file is, never "not found".
#[test]
fn a_committed_row_whose_document_checksum_and_writer_were_nulled_is_damage() {
    let Some(pg) = cluster::cluster() else { return };
    let (store, strict) = two_commits_then_edited(
        pg,
        "hist14-null-row",
        "document = NULL, checksum = NULL, writer = NULL",
    );
    let got = strict.load();
    assert!(
        matches!(&got, Err(Error::Corrupt { reason, .. }) if reason.contains("generation 2")),
        "a nulled row was served as {got:?}"
    );
    assert!(strict.info().unwrap().exists);
    // Recovered as a damaged row is: the acknowledged generation 2 rebuilt, above it.
    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, json!({"n": 2}));
    assert_eq!(loaded.generation, 3);
}

/// A committed row whose generation was lowered by hand (its document and checksum
/// left as they were) was served as that older generation: the next write then took
/// generations the history and the backups already hold (a history entry of a
/// committed version silently replaced), and a reader saw the generation go back.
/// The row's checksum covers its generation: damage, repaired above every generation
/// kept, with the acknowledged version rebuilt.
#[test]
fn a_row_whose_generation_was_lowered_is_damage_not_an_older_version() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("hist14-lowered");
    let store = open(&url);
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    pg.client()
        .execute(
            "UPDATE statesafe SET generation = 2 WHERE state = 'hist14-lowered'",
            &[],
        )
        .unwrap();
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open_url(&url)
        .unwrap();
    let got = strict.load();
    assert!(
        matches!(got, Err(Error::Corrupt { .. })),
        "a lowered generation was served as {got:?}"
    );
    let loaded = store.load().unwrap();
    assert_eq!(loaded.state, json!({"n": 4}));
    assert_eq!(loaded.generation, 5);
    // The history of the generations the lowered row claimed to be below is intact.
    assert_eq!(store.document_at(3).unwrap(), json!({"n": 3}));
    assert_eq!(store.document_at(4).unwrap(), json!({"n": 4}));
}

/// A history row edited by hand into another valid entry (here generation 2's patch
/// made to set `n` to 999) is served as the version a writer committed: history
/// entries carry no checksum (a row's document and a backup's do), so `document_at`,
/// `diff` and `copy` rebuild a version nobody wrote, silently. A file's history lines
/// have no checksum either; the fix (a checksum of the rebuilt document in each entry,
/// verified when a version is rebuilt) touches the history format both backends share
/// (history.rs), which is more than this session could do.
#[test]
fn a_history_entry_edited_by_hand_is_never_served_as_a_committed_version() {
    let Some(pg) = cluster::cluster() else { return };
    let url = pg.url("red13-history-edited");
    // One backup kept: generation 2 is rebuilt from the history alone.
    let store: Store = Store::options()
        .backups(statesafe::BackupPolicy {
            keep: 1,
            ..Default::default()
        })
        .open_url(&url)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(store.document_at(2).unwrap(), json!({"n": 2}));
    let edited = pg
        .client()
        .execute(
            "UPDATE statesafe_history SET entry = replace(entry, '\"value\":2', '\"value\":999') \
             WHERE state = 'red13-history-edited' AND generation = 2 AND entry LIKE '%\"value\":2%'",
            &[],
        )
        .unwrap();
    assert_eq!(edited, 1, "the entry's patch was not found to edit");
    match store.document_at(2) {
        Ok(doc) => assert_eq!(
            doc,
            json!({"n": 2}),
            "a version nobody committed was served"
        ),
        Err(e) => assert!(e.to_string().contains("generation 2"), "{e}"),
    }
}
