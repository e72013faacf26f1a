//! Session 17, fix17: loose ends of earlier sessions, each shown by a failing test.

use serde_json::{Value, json};
use statesafe::Store;

use crate::common::{self, put_back_with_metadata, sidecar};

/// The lock record is never synced: after a power loss it holds whatever of it was
/// written back, which can be the record of a commit before the last one, while the
/// last commit itself (synced) survived. Here: the record as it was after commit 3,
/// commit 4 in place, and the reboot that follows (the record names the boot it was
/// written in, when it does: another one now). Then generation 3's backup is put
/// back by hand. Before, `older_version_put_back` took the record's 3 for the last
/// committed generation (3 >= 3: nothing to relabel), and the next commit wrote
/// generation 4 a second time, over a committed generation 4.
#[test]
fn an_older_version_put_back_after_a_power_loss_that_kept_an_older_lock_record_takes_a_new_generation()
 {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let lock = sidecar(&path).join("lock");
    let stale = {
        let store: Store = Store::open(&path).unwrap();
        store.create(json!({"n": 1})).unwrap();
        for n in 2..=3 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        let stale = std::fs::read(&lock).unwrap();
        store.update(|s| s["n"] = 4.into()).unwrap();
        assert_eq!(store.generation().unwrap(), 4);
        stale
    };
    let text = String::from_utf8(stale).unwrap();
    assert!(text.contains("\"last_generation\":3"), "{text}");
    // The power loss kept the record of commit 3; the reboot gave another boot id.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default();
    let text = if boot.is_empty() {
        text
    } else {
        text.replace(&boot, "00000000-0000-4000-8000-000000000000")
    };
    std::fs::write(&lock, text).unwrap();
    put_back_with_metadata(&path, 3);

    common::replace_lands_above(&path, 4);
}

/// A transaction checks right before its rename that the state file is still the one
/// it read, by device and inode. Another program that replaces the file twice while
/// the transaction runs (an editor saving twice: each save a new file renamed in)
/// frees the inode read at its first save, and ext4 gives its number to the second
/// save's new file: the check then passed and the commit overwrote the other
/// program's version without a word. The external version must survive and the
/// update be refused. (Where numbers are never reused, as on tmpfs, the loop below
/// runs to its end and the test checks the plain case.)
#[test]
fn a_file_replaced_twice_during_an_update_is_not_overwritten_when_its_inode_number_comes_back() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    let mut reused = None;
    let result = store.update(|s| {
        reused = common::save_until_inode_comes_back(&path);
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
