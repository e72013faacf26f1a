//! Leftover temporary files: ones fabricated as a killed writer would leave them, and a
//! real one from a writer killed with SIGKILL mid-write, are removed by the next write;
//! files that merely look similar are left alone.
//!
//! Defends FAILURE_MODES.md row 8 (orphaned temp files pile up) and row 7 (temp names
//! are per write and recognizable).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use statesafe::Store;

use crate::common::{self, Rng};
use crate::kill::{self, Doc};

#[test]
fn fabricated_leftovers_are_swept_by_the_next_write() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(json!({"n": 1}))
        .unwrap();

    let leftovers = [
        ".state.json.statesafe-tmp-4242-00000000deadbeef",
        ".state.json.statesafe-tmp-1-0123456789abcdef",
        ".state.json.statesafe-tmp-99999-ffffffffffffffff",
    ];
    for name in leftovers {
        // A half-written document, as a killed writer leaves it.
        std::fs::write(dir.path().join(name), "{\"n\": 2, \"pad\": \"xxxx").unwrap();
    }
    // Not ours: another state file's temp, a backup, the file's own sidecar.
    let bystanders = [
        ".other.json.statesafe-tmp-4242-00000000deadbeef",
        "state.json.statesafe-tmp-1-0",
        ".state.json.bak",
        "state.json~",
    ];
    for name in bystanders {
        std::fs::write(dir.path().join(name), "keep").unwrap();
    }
    assert_eq!(
        common::temp_files(dir.path(), "state.json").len(),
        leftovers.len()
    );

    // The next writer: a fresh store, as a new process would open.
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(
        common::temp_files(dir.path(), "state.json"),
        Vec::<String>::new()
    );
    for name in bystanders {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            "keep",
            "`{name}` is not a temporary file of state.json but was touched"
        );
    }
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
}

/// Kills a rewriting child on `path` while its temporary file exists; returns that
/// file's name, left behind.
fn kill_mid_write(dir: &Path, path: &Path, rng: &mut Rng) -> String {
    for _ in 0..100 {
        let mut child = kill::spawn_writer(path, "full");
        child.wait_for("ready");
        // Kill as soon as a temporary file is seen: the writer is then mid-write (the
        // file may still be renamed before the kill lands; then try again).
        while common::temp_files(dir, "doc.json").is_empty() {
            std::thread::sleep(Duration::from_micros(rng.below(500)));
        }
        child.kill();
        let found = common::temp_files(dir, "doc.json");
        match found.as_slice() {
            [] => continue,
            [one] => return one.clone(),
            more => panic!("more than one temporary file: {more:?}"),
        }
    }
    panic!("no kill in 100 landed while a temporary file existed");
}

#[test]
fn a_real_leftover_from_a_killed_writer_is_removed_by_the_next_write() {
    let mut rng =
        Rng::for_test("a_real_leftover_from_a_killed_writer_is_removed_by_the_next_write");
    let dir = common::test_dir();
    let path = dir.path().join("doc.json");
    // Opened (and used) before the kill: this store has already swept once, so it must
    // find the dead writer's temp file through the lock record.
    let survivor: Store<Doc> = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    survivor.create(Doc::new(0)).unwrap();

    let leftover = kill_mid_write(dir.path(), &path, &mut rng);
    let version = kill::version_on_disk(&path);
    survivor.replace(Doc::new(version + 1)).unwrap();
    assert!(
        !dir.path().join(&leftover).exists(),
        "`{leftover}` survived the next write"
    );
    assert_eq!(
        common::temp_files(dir.path(), "doc.json"),
        Vec::<String>::new()
    );
    assert_eq!(kill::version_on_disk(&path), version + 1);
}

#[test]
fn a_fresh_writer_sweeps_a_real_leftover_too() {
    let mut rng = Rng::for_test("a_fresh_writer_sweeps_a_real_leftover_too");
    let dir = common::test_dir();
    let path = dir.path().join("doc.json");
    Store::<Doc>::open(&path)
        .unwrap()
        .create(Doc::new(0))
        .unwrap();
    let leftover = kill_mid_write(dir.path(), &path, &mut rng);
    let version = kill::version_on_disk(&path);
    // A new process's first write: the sweep (not the lock record) must find it.
    let fresh: Store<Doc> = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    fresh.replace(Doc::new(version + 1)).unwrap();
    assert!(
        !dir.path().join(&leftover).exists(),
        "`{leftover}` survived the next write"
    );
    assert_eq!(
        common::temp_files(dir.path(), "doc.json"),
        Vec::<String>::new()
    );
}
