//! Red team, session 12: attacks on the file backend found while attacking the
//! bindings. An `#[ignore = "red12: …"]` test is a bug (the comment says how it
//! happens; `--run-ignored all` runs it, to watch it fail).

use serde_json::{Value, json};
use statesafe::{Durability, Event, Format, Layout, Store};

use crate::common;

/// `Store::verify_bytes` decides that a version is sealed from its text alone
/// (`format::looks_sealed`: it starts `{` then `"statesafe"`), even in a store whose
/// format is plain. A document whose first key is `statesafe` (`{"statesafe": {"v": 2},
/// "x": 1}`, a program's own label or version block) is committed and acknowledged,
/// then every read decodes it as a sealed envelope, fails ("unknown field `v`, expected
/// one of `format`, `generation`…"), and, the checksum being sound, reports
/// `Mismatch` ("this reader's type refuses it", hint: read it with the type it was
/// written with): the version can never be read or updated again, by any reader
/// (Python, Node, the CLI; a PostgreSQL row the same).
#[test]
fn a_plain_document_whose_first_key_is_statesafe_reads_back() {
    let dir = common::test_dir();
    for (name, layout) in [
        ("pretty.json", Layout::Pretty),
        ("compact.json", Layout::Compact),
    ] {
        let path = dir.path().join(name);
        let store = Store::<Value>::options()
            .durability(Durability::None)
            .layout(layout)
            .open(&path)
            .unwrap();
        let doc = json!({"statesafe": {"v": 2}, "x": 1});
        store.create(doc.clone()).unwrap();
        match store.load() {
            Ok(snap) => assert_eq!(snap.state, doc, "{name}"),
            Err(e) => panic!("{name}: the committed version cannot be read back: {e}"),
        }
        store.update(|s| s["x"] = 2.into()).unwrap();
    }
}

/// The same test seen from an external change: the file, once statesafe has written
/// it, is rewritten by another program with valid JSON whose first key is `statesafe`.
/// docs/design.md ("What is damage"): an external change that parses is never damage;
/// it is adopted (`Event::ExternalChange`). Here the read takes it for a damaged sealed
/// file, quarantines it and rolls the file back to the previous version (generation
/// 2 restored as generation 4): the other program's valid version is undone by a
/// reader.
#[test]
fn an_external_change_whose_first_key_is_statesafe_is_adopted_not_rolled_back() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&events);
    let store = Store::<Value>::options()
        .durability(Durability::None)
        .on_event(move |e| seen.lock().unwrap().push(e.clone()))
        .open(&path)
        .unwrap();
    store.create(json!({"a": 1})).unwrap();
    store.update(|s| s["a"] = 2.into()).unwrap();
    std::fs::write(&path, "{\"statesafe\": \"my label\", \"a\": 3}\n").unwrap();
    let got = store.load().map(|s| s.state);
    let recovered = events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Recovered { .. }));
    assert!(
        !recovered,
        "the external change was quarantined as damage: {got:?}"
    );
    assert_eq!(got.unwrap(), json!({"statesafe": "my label", "a": 3}));
}

/// Control: a sealed store keeps its envelope, whatever the document's first key (the
/// document sits under `state`): the attack above is only on plain text.
#[test]
fn a_sealed_document_whose_first_key_is_statesafe_reads_back() {
    let dir = common::test_dir();
    let path = dir.path().join("sealed.json");
    let store = Store::<Value>::options()
        .durability(Durability::None)
        .format(Format::Sealed)
        .open(&path)
        .unwrap();
    let doc = json!({"statesafe": {"v": 2}, "x": 1});
    store.create(doc.clone()).unwrap();
    assert_eq!(store.load().unwrap().state, doc);
    store.update(|s| s["x"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().state["x"], json!(2));
}
