//! Journal mode's cached document (issue 16): a long-lived store keeps the replayed
//! document and reads only the journal's new records. It must never roll back a
//! committed version nor miss another writer's commit: other stores in this process,
//! other processes, a forked child, compactions, files replaced by hand.

use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::{Value, json};
use statesafe::{Error, Format, Settings, Store};

use crate::common::{self, ChildCmd};

fn create(path: &Path, doc: Value, journal_max_bytes: Option<u64>) -> Store {
    let store: Store = Store::open(path).unwrap();
    let settings = Settings {
        format: Format::Journal,
        journal_max_bytes,
        ..Settings::default()
    };
    store.create_with(&settings, doc).unwrap();
    store
}

/// What a store that has never read the file sees.
fn fresh(path: &Path) -> (Value, u64) {
    let snap = Store::<Value>::open(path).unwrap().load().unwrap();
    (snap.state, snap.generation)
}

/// Loads twice: a store keeps the document from its second full read on.
fn warm(store: &Store) -> (Value, u64) {
    loaded(store);
    loaded(store)
}

fn loaded(store: &Store) -> (Value, u64) {
    let snap = store.load().unwrap();
    (snap.state, snap.generation)
}

fn increment(store: &Store) {
    store
        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
        .unwrap();
}

/// Increments `n` at PATH five times, with one store.
#[test]
fn child_cache_increments() {
    if !common::child_role("cache-increments") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    for _ in 0..5 {
        increment(&store);
    }
    common::say("done");
}

#[test]
fn stores_and_processes_interleaved_with_compactions_see_every_commit() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    // A small limit: the journal is compacted (new snapshot, new journal) every few
    // commits, in between the reads of the long-lived stores.
    let a = create(&path, json!({"n": 0}), Some(600));
    let b: Store = Store::open(&path).unwrap();
    // Held open: no later snapshot can be given its inode number, so any compaction
    // (a new snapshot renamed in) shows, even two within one step (the child's five
    // commits).
    let first = common::HeldInode::hold(&path);
    let mut compacted = false;
    let mut expect = json!({"n": 0});
    let mut generation = 1;
    for i in 0..60u64 {
        match i % 4 {
            0 => increment(&a),
            1 => {
                let key = format!("/k{}", i % 7);
                let patch = json!([{"op": "add", "path": key, "value": i}]);
                assert_eq!(b.apply_patch(&patch).unwrap(), generation + 1);
                expect[&key[1..]] = json!(i);
            }
            2 => increment(&b),
            _ => {
                let out =
                    ChildCmd::new("journal_cache::child_cache_increments", "cache-increments")
                        .arg("PATH", &path)
                        .run();
                assert_eq!(out, ["done"]);
                expect["n"] = json!(expect["n"].as_u64().unwrap() + 4);
                generation += 4;
            }
        }
        if i % 4 != 1 {
            expect["n"] = json!(expect["n"].as_u64().unwrap() + 1);
        }
        generation += 1;
        let newest = fresh(&path);
        assert_eq!(newest, (expect.clone(), generation), "step {i}");
        assert_eq!(loaded(&a), newest, "store a at step {i}");
        assert_eq!(loaded(&b), newest, "store b at step {i}");
        assert_eq!(a.generation().unwrap(), generation);
        compacted |= !first.is_at(&path);
    }
    assert!(compacted, "no compaction happened");
}

#[test]
fn threads_sharing_a_store_and_patching_lose_nothing() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create(&path, json!({"n": 0}), None);
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            s.spawn(move || {
                for i in 0..20 {
                    increment(store);
                    let patch = json!([{"op": "add", "path": format!("/t{t}"), "value": i}]);
                    store.apply_patch(&patch).unwrap();
                    assert!(store.load().unwrap().state["n"].as_u64().unwrap() > 0);
                }
            });
        }
    });
    let (doc, generation) = fresh(&path);
    assert_eq!(
        doc,
        json!({"n": 80, "t0": 19, "t1": 19, "t2": 19, "t3": 19})
    );
    assert_eq!(generation, 1 + 160);
    assert_eq!(loaded(&store), (doc, generation));
}

#[test]
fn a_forked_child_and_its_parent_see_each_others_commits() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create(&path, json!({"n": 0}), None);
    increment(&store);
    assert_eq!(warm(&store), (json!({"n": 1}), 2));
    for round in 0..3u64 {
        // The child starts with a copy of the parent's cache.
        match common::fork() {
            None => {
                let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let before = loaded(&store);
                    increment(&store);
                    let after = loaded(&store);
                    after.1 == before.1 + 1
                        && after.0["n"].as_u64() == before.0["n"].as_u64().map(|n| n + 1)
                }))
                .unwrap_or(false);
                common::exit_now(if ok { 0 } else { 1 });
            }
            Some(pid) => assert_eq!(common::exit_code_of(pid), 0, "round {round}"),
        }
        let n = 2 + 2 * round;
        assert_eq!(loaded(&store), (json!({"n": n}), n + 1), "round {round}");
        increment(&store);
        assert_eq!(fresh(&path), (json!({"n": n + 1}), n + 2));
    }
}

#[test]
fn a_snapshot_replaced_or_edited_by_hand_is_seen() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    // No record after the snapshot: an edit of it is an ordinary external change.
    let store = create(&path, json!({"v": "aaaa"}), None);
    assert_eq!(warm(&store).0, json!({"v": "aaaa"}));
    // Edited in place at once, same length, same inode: likely within the clock tick
    // of the write before, so the change time may not move; the bytes are compared.
    let inode = common::inode(&path);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("aaaa").unwrap();
    file.write_all_at(b"bbbb", at as u64).unwrap();
    drop(file);
    assert_eq!(common::inode(&path), inode);
    assert_eq!(loaded(&store).0, json!({"v": "bbbb"}));
    // Replaced by rename.
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"v\": \"cccc\"}\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    assert_eq!(loaded(&store).0, json!({"v": "cccc"}));
    // A commit on top of the external change, then through the cache again.
    let patch = json!([{"op": "replace", "path": "/v", "value": "dddd"}]);
    let g = store.apply_patch(&patch).unwrap();
    assert_eq!(fresh(&path), (json!({"v": "dddd"}), g));
    assert_eq!(loaded(&store), (json!({"v": "dddd"}), g));
}

#[test]
fn a_snapshot_settled_in_the_cache_then_edited_in_place_is_seen() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create(&path, json!({"v": "aaaa"}), None);
    // Past the settling time, so that the cache trusts the snapshot's identity
    // alone; an edit now moves its change time.
    std::thread::sleep(std::time::Duration::from_millis(3200));
    assert_eq!(warm(&store).0, json!({"v": "aaaa"}));
    assert_eq!(loaded(&store).0, json!({"v": "aaaa"}));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    file.write_all_at(b"bbbb", text.find("aaaa").unwrap() as u64)
        .unwrap();
    drop(file);
    assert_eq!(loaded(&store).0, json!({"v": "bbbb"}));
}

#[test]
fn a_record_written_again_in_place_of_the_one_the_cache_applied_is_seen() {
    // A writer whose flush fails zeroes its record; the next writer writes its own
    // record, of the same generation, at the same offset. A store that read the
    // failed one (from the page cache) must not keep it.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create(&path, json!({"v": 0}), None);
    let journal = dir.path().join(".state.json.statesafe/journal");
    let before = std::fs::read(&journal).unwrap();
    let other: Store = Store::open(&path).unwrap();
    other
        .apply_patch(&json!([{"op": "replace", "path": "/v", "value": 1}]))
        .unwrap();
    assert_eq!(warm(&store), (json!({"v": 1}), 2));
    // The record taken back, in place (same inode), and another commit of
    // generation 2. A failed flush publishes no durable end: the slots in the lock
    // file (from byte 4096) go too, or the record taken back would be refused as a
    // lost commit (`journal_attacks::an_older_copy_of_the_same_journal_put_back_is_refused`).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.write_all_at(&before, 0).unwrap();
    drop(file);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(".state.json.statesafe/lock"))
        .unwrap();
    lock.write_all_at(&[0; 4096], 4096).unwrap();
    drop(lock);
    let third: Store = Store::open(&path).unwrap();
    third.update(|s| s["v"] = json!("two")).unwrap();
    assert_eq!(fresh(&path), (json!({"v": "two"}), 2));
    assert_eq!(loaded(&store), (json!({"v": "two"}), 2));
}

#[test]
fn a_patch_that_does_not_apply_writes_nothing_and_changes_no_cache() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create(&path, json!({"a": 1}), None);
    let journal = dir.path().join(".state.json.statesafe/journal");
    let before = std::fs::read(&journal).unwrap();
    // The first operation applies, the second does not: neither is kept.
    let patch = json!([
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "remove", "path": "/missing"}
    ]);
    let err = store.apply_patch(&patch).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = store.apply_patch(&json!({"op": "add"})).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(std::fs::read(&journal).unwrap(), before);
    assert_eq!(loaded(&store), (json!({"a": 1}), 1));
    // A `test` that fails is the patch's own precondition: nothing written either.
    let guarded = json!([
        {"op": "test", "path": "/a", "value": 5},
        {"op": "replace", "path": "/a", "value": 3}
    ]);
    assert!(store.apply_patch(&guarded).is_err());
    assert_eq!(fresh(&path), (json!({"a": 1}), 1));
}

#[test]
fn apply_patch_works_in_every_format() {
    let dir = common::test_dir();
    let path = dir.path().join("plain.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"a": [1]})).unwrap();
    let g = store
        .apply_patch(&json!([{"op": "add", "path": "/a/-", "value": 2}]))
        .unwrap();
    assert_eq!(fresh(&path), (json!({"a": [1, 2]}), g));
}

#[test]
fn a_journal_replaced_or_linked_during_a_transaction_is_refused_at_commit() {
    // A transaction's locked read keeps the journal open for its append: the name
    // must still be that file, with one link, when the record is written.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create(&path, json!({"n": 0}), None);
    let journal = dir.path().join(".state.json.statesafe/journal");
    warm(&store);
    increment(&store);
    increment(&store);
    assert_eq!(fresh(&path), (json!({"n": 2}), 3));

    // A second link made while the lock is held.
    let mut tx = store.begin().unwrap();
    tx.state_mut()["n"] = 10.into();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::hard_link(&journal, &elsewhere).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    assert_eq!(fresh(&path), (json!({"n": 2}), 3));
    std::fs::remove_file(&elsewhere).unwrap();

    // Replaced by a copy renamed over it while the lock is held.
    let mut tx = store.begin().unwrap();
    tx.state_mut()["n"] = 20.into();
    let copy = dir.path().join(".state.json.statesafe/copy");
    std::fs::copy(&journal, &copy).unwrap();
    std::fs::rename(&copy, &journal).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    assert_eq!(fresh(&path), (json!({"n": 2}), 3));

    // The store goes on from what is there.
    increment(&store);
    assert_eq!(fresh(&path), (json!({"n": 3}), 4));
    assert_eq!(loaded(&store), (json!({"n": 3}), 4));
}

#[test]
fn a_stores_own_commits_and_another_stores_interleave_through_the_cache() {
    // A store's own append moves its kept document forward without reading the
    // record back; another store's commits in between are still read.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let a = create(&path, json!({"n": 0}), None);
    let b: Store = Store::open(&path).unwrap();
    warm(&a);
    warm(&b);
    let mut want = 0;
    for round in 0..20 {
        let (first, second) = if round % 3 == 0 { (&b, &a) } else { (&a, &b) };
        increment(first);
        increment(first);
        increment(second);
        first
            .apply_patch(&json!([{"op": "add", "path": format!("/r{round}"), "value": round}]))
            .unwrap();
        want += 3;
        let (doc, generation) = fresh(&path);
        assert_eq!(doc["n"], json!(want), "round {round}");
        assert_eq!(doc[format!("r{round}")], json!(round));
        assert_eq!(loaded(&a), (doc.clone(), generation), "round {round}");
        assert_eq!(loaded(&b), (doc, generation), "round {round}");
    }
}

#[test]
fn a_store_that_settled_the_settings_still_sees_another_leave_journal_mode() {
    // A commit checks under the lock that the file is still in journal mode; once the
    // settings file is settled, by its identity alone. Another store leaving journal
    // mode replaces it, and a journal left behind must not take a record nobody reads.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let a = create(&path, json!({"n": 0}), None);
    std::thread::sleep(std::time::Duration::from_millis(3200));
    warm(&a);
    for _ in 0..3 {
        increment(&a);
    }
    let journal = dir.path().join(".state.json.statesafe/journal");
    let kept = std::fs::read(&journal).unwrap();
    let b: Store = Store::open(&path).unwrap();
    let settings = Settings {
        format: Format::Plain,
        ..b.settings()
    };
    b.save_settings(&settings).unwrap();
    assert!(!journal.exists());
    // Put back, as if its removal had failed.
    std::fs::write(&journal, &kept).unwrap();
    let err = a
        .update(|s| s["n"] = json!("lost"))
        .expect_err("a journal-mode commit on a file that left journal mode");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let plain: Store = Store::open(&path).unwrap();
    assert_eq!(plain.load().unwrap().state, json!({"n": 3}));
    // A patch takes the same check.
    assert!(
        a.apply_patch(&json!([{"op": "replace", "path": "/n", "value": "lost"}]))
            .is_err()
    );
    assert_eq!(fresh(&path).0, json!({"n": 3}));
}

/// A `Store<Value>` takes the kept tree (or its spare) as a transaction's state and
/// the committed state as the new kept tree, by move (`sys/value.rs`): the state is
/// still the transaction's own (a change left uncommitted or refused changes nothing
/// kept), a commit that compacts or changes nothing still has it, and every version
/// reads back, number text included, as a fresh store replays it and as a typed
/// store decodes it.
#[test]
fn a_value_stores_state_moved_to_and_from_the_kept_tree_is_its_own() {
    let dir = common::test_dir();
    let path = dir.path().join("s.json");
    let doc: Value = serde_json::from_str(
        r#"{"n": 0, "x": [1E2, -0, 123456789012345678901234567890, 0.0000001], "s": "a"}"#,
    )
    .unwrap();
    // Small enough that some commits compact.
    let store = create(&path, doc, Some(600));
    let ruled: Store = Store::options()
        .validate(|s: &Value| {
            if s["s"] == "refused" {
                Err("no".into())
            } else {
                Ok(())
            }
        })
        .open(&path)
        .unwrap();
    let text = |v: &Value| serde_json::to_string(v).unwrap();
    warm(&store);
    for i in 0..40u64 {
        let before = loaded(&store);
        // Left uncommitted: the kept document is not the state that was changed.
        let mut tx = store.begin().unwrap();
        tx.state_mut()["n"] = json!("uncommitted");
        tx.state_mut()["x"] = json!(null);
        drop(tx);
        assert_eq!(text(&loaded(&store).0), text(&before.0));
        // Refused by a rule: nothing kept changes either.
        warm(&ruled);
        let refused = ruled.update(|s| s["s"] = json!("refused"));
        assert!(matches!(refused, Err(Error::Invalid { .. })), "{refused:?}");
        assert_eq!(text(&loaded(&ruled).0), text(&before.0));
        match i % 4 {
            // A commit that changes nothing (it appends nothing; it may compact).
            0 => {
                store.update(|_| ()).unwrap();
                assert_eq!(text(&loaded(&store).0), text(&before.0));
            }
            1 => store
                .update(|s| s["s"] = json!("a".repeat(i as usize)))
                .unwrap(),
            _ => increment(&store),
        }
        let (kept, generation) = loaded(&store);
        let (replayed, replayed_generation) = fresh(&path);
        assert_eq!(generation, replayed_generation);
        assert_eq!(text(&kept), text(&replayed));
        assert!(text(&kept).contains("[1E2,-0,123456789012345678901234567890,0.0000001]"));
        let typed: Store<std::collections::BTreeMap<String, Value>> = Store::open(&path).unwrap();
        assert_eq!(typed.load().unwrap().state["x"], kept["x"]);
    }
    assert_eq!(loaded(&store).0["n"], json!(20));
}
