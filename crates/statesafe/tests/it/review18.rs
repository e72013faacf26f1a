//! review18: paths that replace a version while the base they check carries no
//! descriptor of the file read (`pin: None`) or no identity at all (`id: None`), so that
//! another program's version, written without the lock (an editor, `cp`), is
//! overwritten without a word.

use serde_json::{Value, json};
use statesafe::Store;

use crate::common;

/// Another program's save: a new file renamed over `path` (as an editor does).
fn save_by_hand(dir: &std::path::Path, path: &std::path::Path) {
    let other = dir.join("other.json");
    std::fs::write(&other, "{\"external\": true}\n").unwrap();
    std::fs::rename(&other, path).unwrap();
}

/// The control: an update whose file another program replaces inside the closure
/// does not overwrite it (the check before the rename, `LockLost`).
#[test]
fn review18_control_an_update_does_not_overwrite_a_file_saved_by_hand_meanwhile() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let result = store.update(|s| {
        save_by_hand(dir.path(), &path);
        s["n"] = 3.into();
    });
    eprintln!("the update: {result:?}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, json!({"external": true}));
    assert!(result.is_err(), "{result:?}");
}

/// An update that finds the file damaged first recovers it (`recover_locked` commits
/// the newest provable version), and the transaction goes on from the base that commit
/// returned, which has `id: None` ("after a commit of this transaction: nothing to
/// check"): the check before the transaction's own rename is skipped, and a file
/// another program saved during the closure is overwritten silently, where the
/// control above refuses (`LockLost`).
/// Path: `Store::begin_locked` (transaction.rs) -> `recover_locked` (recover.rs) ->
/// `write_version_inner`'s `Base { id: None, pin: None, .. }` -> `before_rename`
/// returns `Ok(())` for `id: None`.
#[test]
fn review18_an_update_that_recovers_a_damaged_file_does_not_overwrite_a_file_saved_by_hand_meanwhile()
 {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    // Damage (written in place): the next update recovers generation 4 first.
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let result = store.update(|s| {
        assert_eq!(s["n"], json!(4), "recovered: {s}");
        save_by_hand(dir.path(), &path);
        s["n"] = 5.into();
    });
    eprintln!("the update: {result:?}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({"external": true}),
        "the update overwrote another program's version saved after the recovery"
    );
    assert!(result.is_err(), "{result:?}");
}
