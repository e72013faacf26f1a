//! Session 17, review17: findings of the red team, each shown by a test that failed
//! (fixed by the lead after the review).

use serde_json::json;
use statesafe::Store;

use crate::common::{self, put_back_with_metadata, sidecar};

/// Bug (review17): fix17 distrusts a lock record from another boot (a power loss may
/// have kept an older write of it), but the same stale record arises in the same boot
/// when a writer is killed (SIGKILL, the OOM killer, a container stop) after its
/// rename and before it writes its record again (transaction.rs writes
/// `last_generation` only after the rename): the record on disk then names its temp
/// file (written before the rename) and the generation before the one it committed
/// (3, with generation 4 in place). Its boot id is this boot's, so it is trusted; the
/// backup of generation 3 put back by hand (`cp -a`) passes "3 >= 3", keeps its
/// number, and the next commit writes generation 4 a second time, over the committed
/// generation 4 (its history entry hidden, a compare-and-swap at 4 succeeding over a
/// version it never saw).
/// Printed: "generation 4 written again after committed generation 4".
/// Expected: a generation above 4 (the put-back taken as an external change).
/// Fixed: a record that still names its holder's temporary file names no generation
/// (`LockFile::acquire`).
#[test]
fn an_older_version_put_back_after_a_writer_killed_past_its_rename_takes_a_new_generation() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let lock = sidecar(&path).join("lock");
    let mut held = None;
    {
        let store: Store = Store::open(&path).unwrap();
        store.create(json!({"n": 1})).unwrap();
        for n in 2..=3 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        // The record on disk while commit 4's writer holds the lock (naming its
        // temporary file): what a kill right after its rename leaves.
        store
            .update(|s| {
                held = Some(std::fs::read(&lock).unwrap());
                s["n"] = 4.into();
            })
            .unwrap();
        assert_eq!(store.generation().unwrap(), 4);
    }
    let held = held.unwrap();
    let text = String::from_utf8_lossy(&held).into_owned();
    assert!(text.contains("\"last_generation\":3"), "{text}");
    assert!(text.contains("\"temp\":"), "{text}");
    std::fs::write(&lock, &held).unwrap();
    put_back_with_metadata(&path, 3);

    common::replace_lands_above(&path, 4);
}
