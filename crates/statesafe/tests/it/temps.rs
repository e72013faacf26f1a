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

/// Makes the lock record of `path` look as if written before a reboot, as after a
/// power loss (the record's boot id is how a writer knows it may skip the sweep).
fn pretend_reboot(path: &Path) {
    let lock = common::sidecar(path).join("lock");
    let raw = std::fs::read(&lock).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert!(
        record.get("boot").is_some(),
        "the lock record names no boot: {text}"
    );
    record["boot"] = "00000000-0000-0000-0000-000000000000".into();
    let mut bytes = serde_json::to_vec(&record).unwrap();
    bytes.resize(raw.len() - 1, b' ');
    bytes.push(b'\n');
    std::fs::write(&lock, bytes).unwrap();
}

/// Leaves half-written temporary files of `state.json` in `dir`, as a writer leaves
/// them when the power fails mid-write.
fn fabricate_leftovers(dir: &Path) -> [&'static str; 3] {
    let leftovers = [
        ".state.json.statesafe-tmp-4242-00000000deadbeef",
        ".state.json.statesafe-tmp-1-0123456789abcdef",
        ".state.json.statesafe-tmp-99999-ffffffffffffffff",
    ];
    for name in leftovers {
        std::fs::write(dir.join(name), "{\"n\": 2, \"pad\": \"xxxx").unwrap();
    }
    leftovers
}

#[test]
fn fabricated_leftovers_are_swept_by_the_next_write() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(json!({"n": 1}))
        .unwrap();
    pretend_reboot(&path);

    let leftovers = fabricate_leftovers(dir.path());
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

#[test]
fn leftovers_no_record_names_are_swept_within_a_few_dozen_generations() {
    // Same boot, clean record: a new store's first write skips the listing, but the
    // periodic sweep still finds leftovers that no record could name.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(json!({"n": 0}))
        .unwrap();
    fabricate_leftovers(dir.path());
    let mut writes = 0;
    while !common::temp_files(dir.path(), "state.json").is_empty() {
        assert!(
            writes <= 32,
            "leftovers survived {writes} writes by new stores"
        );
        // A new store each time, as separate `statesafe` invocations are.
        let store: Store = Store::open(&path).unwrap();
        store.update(|s| s["n"] = (writes + 1).into()).unwrap();
        writes += 1;
    }
    assert!(writes >= 1);
}
