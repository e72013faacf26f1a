//! Session 17, fix17: loose ends of earlier sessions, each shown by a failing test.

use serde_json::{Value, json};
use statesafe::Store;

use crate::common;

/// A transaction checks right before its rename that the state file is still the one
/// it read, by device and inode. Another program that replaces the file twice while
/// the transaction runs (an editor saving twice: each save a new file renamed in)
/// frees the inode read at its first save, and ext4 gives its number to the second
/// save's new file: the check then passed and the commit overwrote the other
/// program's version without a word. The external version must survive and the
/// update be refused. (Where numbers are never reused, as on tmpfs, the loop below
/// runs to its end and the test checks the plain case.)
#[test]
fn a_file_replaced_twice_during_an_update_is_not_overwritten_when_its_inode_number_comes_back()
 {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    let mut reused = None;
    let result = store.update(|s| {
        let read = common::inode(&path);
        let other = dir.path().join("other.json");
        for i in 0..2000 {
            std::fs::write(&other, format!("{{\"external\": {i}}}\n")).unwrap();
            std::fs::rename(&other, &path).unwrap();
            if common::inode(&path) == read {
                reused = Some(i);
                break;
            }
        }
        s["n"] = 2.into();
    });
    eprintln!("the inode number read came back at save {reused:?}; the update: {result:?}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        on_disk.get("external").is_some(),
        "the update overwrote another program's version (inode number reused at save {reused:?}): {on_disk}"
    );
    assert!(result.is_err(), "{result:?}");
}
