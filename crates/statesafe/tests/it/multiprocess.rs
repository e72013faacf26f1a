//! Lost updates between writers: 8 processes x 500 increments, 8 threads sharing one
//! `&Store`, and 8 threads with a `Store` each, all on one counter, must end with the
//! exact count (any unlocked read-modify-write loses increments).
//!
//! Defends FAILURE_MODES.md rows 3 (lost update between processes), 5 and 6 (kernel
//! `flock` per open file description, which also excludes two stores in one process).

use serde::{Deserialize, Serialize};
use statesafe::{Durability, Store};

use crate::common::{self, ChildCmd};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Counter {
    n: u64,
}

const PROCESSES: u64 = 8;
const PER_PROCESS: u64 = 500;
const THREADS: u64 = 8;
const PER_THREAD: u64 = 200;

/// The durability of the counting stores. The lock is what these tests check, and it
/// does not depend on fsync; `Durability::None` keeps 4000 commits on a shared 2-core
/// machine quick. Full durability is exercised by the kill, fault and other tests.
fn counter_store(path: &std::path::Path) -> Store<Counter> {
    Store::options()
        .durability(Durability::None)
        .lock_timeout(std::time::Duration::from_secs(120))
        .open(path)
        .unwrap()
}

#[test]
fn child_increment() {
    if !common::child_role("increment") {
        return;
    }
    let store = counter_store(common::child_arg("PATH").as_ref());
    let times: u64 = common::child_arg("TIMES").parse().unwrap();
    for _ in 0..times {
        store.update(|c| c.n += 1).unwrap();
    }
    common::say("done");
}

#[test]
fn processes_never_lose_an_increment() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    let store = counter_store(&path);
    assert_eq!(store.create(Counter::default()).unwrap(), 1);

    let mut children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            ChildCmd::new("multiprocess::child_increment", "increment")
                .arg("PATH", &path)
                .arg("TIMES", PER_PROCESS.to_string())
                .spawn()
        })
        .collect();
    for child in &mut children {
        let reports = child.read_all();
        let status = child.wait();
        assert!(status.success(), "an incrementing child failed: {status}");
        assert_eq!(reports, ["done"]);
    }

    let snap = store.load().unwrap();
    assert_eq!(snap.state.n, PROCESSES * PER_PROCESS);
    assert_eq!(snap.generation, 1 + PROCESSES * PER_PROCESS);
    assert!(common::temp_files(dir.path(), "counter.json").is_empty());
}

#[test]
fn threads_sharing_one_store_never_lose_an_increment() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    let store = counter_store(&path);
    store.create(Counter::default()).unwrap();

    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..PER_THREAD {
                    store.update(|c| c.n += 1).unwrap();
                }
            });
        }
    });

    let snap = store.load().unwrap();
    assert_eq!(snap.state.n, THREADS * PER_THREAD);
    assert_eq!(snap.generation, 1 + THREADS * PER_THREAD);
}

#[test]
fn threads_with_their_own_stores_never_lose_an_increment() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    counter_store(&path).create(Counter::default()).unwrap();

    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                // One store per thread: separate lock descriptions in one process,
                // which only the kernel lock (not the store's mutex) can serialize.
                let store = counter_store(&path);
                for _ in 0..PER_THREAD {
                    store.update(|c| c.n += 1).unwrap();
                }
            });
        }
    });

    let snap = counter_store(&path).load().unwrap();
    assert_eq!(snap.state.n, THREADS * PER_THREAD);
    assert_eq!(snap.generation, 1 + THREADS * PER_THREAD);
}

#[test]
fn full_durability_writers_also_serialize() {
    // A smaller run with the default (full) durability: the fsyncs widen the window
    // between read and rename, where a missing lock shows up soonest.
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    Store::<Counter>::open(&path)
        .unwrap()
        .create(Counter::default())
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let store = Store::<Counter>::options()
                    .lock_timeout(std::time::Duration::from_secs(120))
                    .open(&path)
                    .unwrap();
                for _ in 0..25 {
                    store.update(|c| c.n += 1).unwrap();
                }
            });
        }
    });
    assert_eq!(Store::<Counter>::open(&path).unwrap().get().unwrap().n, 100);
}
