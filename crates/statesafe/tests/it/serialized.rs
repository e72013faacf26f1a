//! The entry points for language bindings that keep and make document text themselves
//! (`Store::begin_known`, `Transaction::commit_serialized`): a document known to be the
//! file's is not parsed again, and a text the binding serialized is written as it is,
//! with every other guarantee of a commit (depth and size limits, the checksum of the
//! bytes written, backups, history, validation where configured).

use serde_json::{Value, json};
use statesafe::{BackupPolicy, Error, Store};

use crate::common;

const TEXT: &str = "{\n  \"n\": 1,\n  \"items\": [\n    \"a\",\n    \"b\"\n  ]\n}";

fn store_with(dir: &tempfile::TempDir) -> Store<Value> {
    let store: Store<Value> = Store::open(dir.path().join("s.json")).unwrap();
    store.create(json!({"n": 0})).unwrap();
    store
}

#[test]
fn a_serialized_text_is_written_as_given_and_verifies_on_the_next_read() {
    let dir = common::test_dir();
    let store = store_with(&dir);
    let tx = store.begin().unwrap();
    assert_eq!(tx.commit_serialized(TEXT, 2).unwrap(), 2);
    let bytes = std::fs::read(store.path()).unwrap();
    assert_eq!(bytes, format!("{TEXT}\n").as_bytes());
    // The checksum recorded is of the bytes written: a fresh store reads them as
    // statesafe's own (no external change), at the generation committed.
    let fresh: Store<Value> = Store::open(store.path()).unwrap();
    let snap = fresh.load().unwrap();
    assert_eq!(snap.generation, 2);
    assert_eq!(snap.state, json!({"n": 1, "items": ["a", "b"]}));
    assert!(
        fresh.check().unwrap().is_ok(),
        "{:?}",
        fresh.check().unwrap()
    );
    // The outgoing version is a backup; the history has the commit with its patch.
    let backups = store.backups().unwrap().backups;
    assert_eq!(backups.first().map(|b| b.generation), Some(1));
    let history = store.history().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.generation, 2);
    let patch = last
        .patch
        .as_ref()
        .expect("a small document's commit has a patch");
    let mut old = json!({"n": 0});
    json_patch::patch(&mut old, patch).unwrap();
    assert_eq!(old, snap.state);
}

#[test]
fn limits_still_apply_to_a_serialized_text_and_nothing_is_written_past_them() {
    let dir = common::test_dir();
    let store = store_with(&dir);
    let before = std::fs::read(store.path()).unwrap();
    let err = store
        .begin()
        .unwrap()
        .commit_serialized(TEXT, 513)
        .unwrap_err();
    assert!(matches!(err, Error::TooDeep { depth: 513, .. }), "{err}");
    let small: Store<Value> = Store::options().max_bytes(16).open(store.path()).unwrap();
    let err = small
        .begin()
        .unwrap()
        .commit_serialized(TEXT, 2)
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert_eq!(std::fs::read(store.path()).unwrap(), before);
    assert_eq!(store.generation().unwrap(), 1);
}

#[test]
fn a_store_with_a_rule_parses_the_text_and_refuses_what_is_not_json() {
    let dir = common::test_dir();
    let path = dir.path().join("s.json");
    let store: Store<Value> = Store::options()
        .validate(|v: &Value| {
            if v["n"].as_i64().unwrap_or(0) >= 0 {
                Ok(())
            } else {
                Err("n must not be negative".into())
            }
        })
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = store
        .begin()
        .unwrap()
        .commit_serialized("{\"n\": -1}", 1)
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = store
        .begin()
        .unwrap()
        .commit_serialized("{\"n\": ", 1)
        .unwrap_err();
    assert!(matches!(err, Error::Serialize { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        store
            .begin()
            .unwrap()
            .commit_serialized("{\"n\": 5}", 1)
            .unwrap(),
        2
    );
    assert_eq!(store.get().unwrap(), json!({"n": 5}));
}

#[test]
fn a_known_text_is_reused_only_while_the_file_is_exactly_it() {
    let dir = common::test_dir();
    let store = store_with(&dir);
    let tx = store.begin().unwrap();
    tx.commit_serialized(TEXT, 2).unwrap();
    let reused = || json!("the caller's copy");
    // Unchanged since: the caller's copy, no parse.
    let (tx, hit) = store
        .begin_known(TEXT.as_bytes(), reused, None::<fn() -> Value>)
        .unwrap();
    assert!(hit);
    assert_eq!(tx.state(), &json!("the caller's copy"));
    assert_eq!(tx.generation(), 2);
    drop(tx);
    // Another store commits: the file is read and parsed.
    let other: Store<Value> = Store::open(store.path()).unwrap();
    other.update(|v| v["n"] = json!(2)).unwrap();
    let (tx, hit) = store
        .begin_known(TEXT.as_bytes(), reused, None::<fn() -> Value>)
        .unwrap();
    assert!(!hit);
    assert_eq!(tx.state()["n"], json!(2));
    drop(tx);
    // Another program writes the known text back by hand: not statesafe's version
    // (its checksum is not recorded), so it is read and checked as an outside change.
    std::fs::write(store.path(), format!("{TEXT}\n")).unwrap();
    let (tx, hit) = store
        .begin_known(TEXT.as_bytes(), reused, None::<fn() -> Value>)
        .unwrap();
    assert!(!hit);
    assert_eq!(tx.state(), &json!({"n": 1, "items": ["a", "b"]}));
    drop(tx);
    // A file deleted after commits is refused, the known text never reused (lost19,
    // `deleted::*`); with its sidecar gone too (a state discarded on purpose), a
    // missing file starts from `init`.
    std::fs::remove_file(store.path()).unwrap();
    assert!(matches!(
        store.begin_known(TEXT.as_bytes(), reused, Some(|| json!({"new": true}))),
        Err(statesafe::Error::Deleted { .. })
    ));
    std::fs::remove_dir_all(store.sidecar_path()).unwrap();
    let (tx, hit) = store
        .begin_known(TEXT.as_bytes(), reused, Some(|| json!({"new": true})))
        .unwrap();
    assert!(!hit);
    assert_eq!(tx.state(), &json!({"new": true}));
}

#[test]
fn a_store_that_checks_what_it_reads_never_reuses_a_known_text() {
    let dir = common::test_dir();
    let path = dir.path().join("s.json");
    let plain = store_with(&dir);
    plain.begin().unwrap().commit_serialized(TEXT, 2).unwrap();
    let schema: Store<Value> = Store::options()
        .schema(json!({"type": "object", "required": ["n"]}))
        .backups(BackupPolicy::default())
        .open(&path)
        .unwrap();
    let (tx, hit) = schema
        .begin_known(TEXT.as_bytes(), || json!("copy"), None::<fn() -> Value>)
        .unwrap();
    assert!(!hit);
    assert_eq!(tx.state()["n"], json!(1));
    drop(tx);
    let ruled: Store<Value> = Store::options()
        .validate(|_: &Value| Ok(()))
        .open(&path)
        .unwrap();
    let (_tx, hit) = ruled
        .begin_known(TEXT.as_bytes(), || json!("copy"), None::<fn() -> Value>)
        .unwrap();
    assert!(!hit);
}

/// A string holding a lone UTF-16 surrogate (`"\ud800"`: half of a character, as
/// `JSON.stringify` writes a JavaScript string cut in the middle of an emoji) is
/// valid JSON syntax that readers disagree on: serde_json's `Value`, Python's strict
/// decoders and jq refuse it, `JSON.parse` and a raw-text reader take it. Committed, it
/// would be a version that the CLI, the Rust library and other languages cannot
/// read. So no commit writes one, whatever the document's type or entry point; nothing
/// is written and the error names the place.
#[test]
fn a_lone_surrogate_is_never_committed() {
    use serde_json::value::RawValue;
    let dir = common::test_dir();
    let store = store_with(&dir);
    let before = std::fs::read(store.path()).unwrap();
    for text in [
        "{\"x\": \"\\ud800\"}",
        "{\"x\": \"a\\uDC00b\"}",
        "{\"\\ud83d\": 1}",
        "[\"\\ud83d\\u0041\"]",
        "[\"\\ud83d\"]",
    ] {
        let tx = store.begin().unwrap();
        let err = tx.commit_serialized(text, 2).unwrap_err();
        assert!(matches!(err, Error::Serialize { .. }), "{text}: {err:?}");
        assert!(
            err.to_string()
                .contains(&store.path().display().to_string()),
            "{err}"
        );
        assert!(
            std::error::Error::source(&err).is_some_and(|s| s.to_string().contains("surrogate")),
            "{text}: {err:?}"
        );
        let raw: Store<Box<RawValue>> = Store::open(store.path()).unwrap();
        let err = raw
            .replace(RawValue::from_string(text.to_string()).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::Serialize { .. }), "{text}: {err:?}");
        assert_eq!(std::fs::read(store.path()).unwrap(), before, "{text}");
    }
    // A pair, escaped or not, is a character: fine.
    for text in [
        "{\"x\": \"\\ud83d\\ude00\"}",
        "{\"x\": \"\u{1F600}\"}",
        "{\"x\": \"\\\\ud800\"}",
    ] {
        let tx = store.begin().unwrap();
        tx.commit_serialized(text, 1).unwrap();
        let fresh: Store<Value> = Store::open(store.path()).unwrap();
        fresh.load().unwrap();
    }
}

#[test]
fn a_large_document_reused_from_known_text_still_gets_its_history_patch() {
    // Past history.max_patch_bytes (64 KiB): the patch is taken from the bytes of the
    // change, here against the outgoing version's bytes the transaction read (no
    // second read of its backup); the history and the backup are as for any commit.
    let dir = common::test_dir();
    let store = store_with(&dir);
    let items: Vec<String> = (0..4000).map(|i| format!("item number {i}")).collect();
    let old_doc = json!({"n": 1, "items": items});
    let old_text = serde_json::to_string_pretty(&old_doc).unwrap();
    assert!(old_text.len() > 64 << 10);
    store
        .begin()
        .unwrap()
        .commit_serialized(&old_text, 2)
        .unwrap();
    let (tx, hit) = store
        .begin_known(old_text.as_bytes(), || json!(null), None::<fn() -> Value>)
        .unwrap();
    assert!(hit);
    let mut new_doc = old_doc.clone();
    new_doc["items"][2500] = json!("changed");
    let new_text = serde_json::to_string_pretty(&new_doc).unwrap();
    assert_eq!(tx.commit_serialized(&new_text, 2).unwrap(), 3);
    let last = store.history().unwrap().pop().unwrap();
    assert_eq!(last.generation, 3);
    let patch = last.patch.expect("a change inside one value has a patch");
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "replace", "path": "/items/2500", "value": "changed"}])
    );
    let mut rebuilt = old_doc;
    json_patch::patch(&mut rebuilt, &patch).unwrap();
    assert_eq!(rebuilt, new_doc);
    let backups = store.backups().unwrap().backups;
    assert_eq!(backups.first().map(|b| b.generation), Some(2));
}
