//! Red team, session 13: attacks on journal mode (issue 16) and what session 12 added
//! around it. An `#[ignore = "red13: …"]` test is a bug (the comment says how it
//! happens; `--run-ignored all` runs it, to watch it fail); the others are attacks the
//! code withstands, kept because no other test makes them.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use statesafe::{Error, Format, Settings, Store};

use crate::common;

fn journal_settings() -> Settings {
    Settings {
        format: Format::Journal,
        ..Settings::default()
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    path.with_file_name(format!(".{name}.statesafe"))
}

fn create_journal(path: &Path, doc: Value) -> Store {
    let store: Store = Store::open(path).unwrap();
    store.create_with(&journal_settings(), doc).unwrap();
    store
}

/// A seal header's exact fields, well typed: with a second member `state`, the
/// document has a sealed envelope's shape.
fn seal_header() -> Value {
    json!({
        "format": 1,
        "generation": 7,
        "time": "2026-01-01T00:00:00Z",
        "writer": {"pid": 1, "host": "h", "user": "u"},
        "xxh3": "0000000000000000"
    })
}

/// `apply_patch`'s group commit sends a patch touching the root, `/statesafe` or
/// `/state` to the transaction path, which refuses a document of the envelope's shape.
/// But a `remove` of any other top-level member moves the object's LAST member into
/// its place (serde_json's `preserve_order` `swap_remove`, which `json_patch` and the
/// replay both use): `{"statesafe": HEADER, "a": 1, "state": 2}` minus `/a` is
/// `{"statesafe": HEADER, "state": 2}`, the exact envelope, committed by the group
/// commit and acknowledged. `update` refuses the same change (`Error::Invalid`), and so
/// does every compaction after it: the next commit that compacts (leaving journal mode,
/// `statesafe settings --format plain`, a journal past its threshold) fails forever,
/// and a plain reader of the snapshot it would write would serve only `state`.
#[test]
#[ignore = "red13: apply_patch's remove of /a swap-moves `state` second and commits an envelope-shaped plain document"]
fn a_remove_that_swaps_state_into_second_place_is_refused_like_update() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let doc = json!({"statesafe": seal_header(), "a": 1, "state": 2});
    let store = create_journal(&path, doc.clone());
    // The transaction path refuses the envelope shape.
    let by_update = store.update(|s| {
        s.as_object_mut().unwrap().swap_remove("a");
    });
    assert!(
        matches!(by_update, Err(Error::Invalid { .. })),
        "update: {by_update:?}"
    );
    let by_patch = store.apply_patch(&json!([{"op": "remove", "path": "/a"}]));
    let now = store.get().unwrap();
    let leaving = by_patch
        .is_ok()
        .then(|| store.save_settings(&Settings::default()));
    assert!(
        by_patch.is_err(),
        "apply_patch committed generation {by_patch:?}, an envelope-shaped document {now}, which update refuses; leaving journal mode then: {leaving:?}"
    );
    assert_eq!(now, doc);
}
