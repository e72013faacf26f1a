//! The writers' lock across processes: a waiting writer times out with
//! `Error::LockTimeout` naming the holder (pid, command, operation) in its fields and
//! its message; a zero timeout tries once; a holder killed with SIGKILL frees the lock
//! at once; reads never wait for the lock; the lock file is never deleted.
//!
//! Defends FAILURE_MODES.md rows 4 (sidecar lock file never deleted), 5 (no stale locks:
//! the kernel frees a dead holder's flock, and a live holder is never broken however old
//! or dead its record looks), 6 (no `fcntl` lock, which any `close()` of the file in the
//! holding process drops) and 14 ("state is locked" with no idea by whom).

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use statesafe::{Error, Store};

use crate::common::{self, ChildCmd, ChildGuard};

const HOLDER_TEST: &str = "lock::child_hold_lock";

/// Holds the lock inside a transaction until the parent closes stdin (or kills us).
#[test]
fn child_hold_lock() {
    if !common::child_role("hold-lock") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    let tx = store.begin().unwrap();
    common::say("locked");
    let mut sink = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink).unwrap();
    drop(tx);
}

/// Starts a child that holds the lock on `path`, and waits until it does.
fn spawn_holder(path: &Path) -> ChildGuard {
    let mut child = ChildCmd::new(HOLDER_TEST, "hold-lock")
        .arg("PATH", path)
        .piped_stdin()
        .spawn();
    child.wait_for("locked");
    child
}

#[test]
fn a_waiting_writer_times_out_naming_the_holder() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .lock_timeout(Duration::from_millis(200))
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut holder = spawn_holder(&path);
    let pid = holder.pid();
    let err = store.update(|s| s["n"] = 1.into()).unwrap_err();
    let Error::LockTimeout {
        holder: Some(h), ..
    } = &err
    else {
        panic!("expected a lock timeout naming the holder, got {err:?}");
    };
    assert_eq!(h.pid, pid);
    assert_eq!(h.operation, "update");
    assert!(h.command.contains(HOLDER_TEST), "command {:?}", h.command);
    assert!(
        !h.host.is_empty() && !h.user.is_empty() && !h.since.is_empty(),
        "{h:?}"
    );
    let message = err.to_string();
    for part in [
        format!("pid {pid}"),
        h.command.clone(),
        "update".to_string(),
    ] {
        assert!(
            message.contains(&part),
            "message {message:?} does not mention {part:?}"
        );
    }
    assert!(err.hint().unwrap().contains(&pid.to_string()));
    // The same holder is visible without trying to write.
    assert_eq!(store.lock_holder().as_ref(), Some(&**h));
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A holder that finishes normally releases the lock too.
    holder.close_stdin();
    assert!(holder.wait().success());
    assert!(store.lock_holder().is_none());
    store.update(|s| s["n"] = 1.into()).unwrap();
}

#[test]
fn a_zero_timeout_tries_once() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    let _holder = spawn_holder(&path);
    // Would block for ever (the holder waits on us) if zero meant "no timeout".
    let err = store.update(|s| s["n"] = 1.into()).unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    let err = store.replace(json!({"n": 2})).unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
}

#[test]
fn a_thread_of_the_same_process_times_out_naming_this_process() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .lock_timeout(Duration::from_millis(100))
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    let tx = store.begin().unwrap();
    std::thread::scope(|s| {
        // The same store from another thread, and a second store in this process.
        let shared = s.spawn(|| store.update(|s| s["n"] = 1.into()).unwrap_err());
        let own = s.spawn(|| {
            let other: Store = Store::options()
                .lock_timeout(Duration::from_millis(100))
                .open(&path)
                .unwrap();
            other.update(|s| s["n"] = 2.into()).unwrap_err()
        });
        for err in [shared.join().unwrap(), own.join().unwrap()] {
            let Error::LockTimeout {
                holder: Some(h), ..
            } = &err
            else {
                panic!("expected a lock timeout naming the holder, got {err:?}");
            };
            assert_eq!(h.pid, std::process::id(), "{err}");
            assert_eq!(h.operation, "update", "{err}");
        }
    });
    drop(tx);
    store.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
}

#[test]
fn reads_do_not_wait_for_the_lock() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 7})).unwrap();
    let _holder = spawn_holder(&path);
    // The holder never lets go while we run: a read that took the lock would hang.
    assert_eq!(store.get().unwrap(), json!({"n": 7}));
    assert_eq!(store.load().unwrap().generation, 1);
    assert_eq!(store.generation().unwrap(), 1);
}

#[test]
fn a_holder_killed_with_sigkill_frees_the_lock_at_once() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    let lock = store.lock_path().to_path_buf();
    let held = common::HeldInode::hold(&lock);

    for round in 1..=3 {
        let mut holder = spawn_holder(&path);
        assert!(matches!(
            store.update(|s| s["n"] = 0.into()),
            Err(Error::LockTimeout { .. })
        ));
        holder.kill();
        // No waiting, no stale-lock heuristics: one try succeeds.
        store.update(|s| s["n"] = round.into()).unwrap();
        assert!(lock.is_file(), "the lock file was deleted");
        assert!(held.is_at(&lock), "the lock file was replaced");
    }
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
}

#[test]
fn the_lock_file_is_never_deleted_or_replaced() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    let lock = store.lock_path().to_path_buf();
    assert!(lock.starts_with(dir.path().join(".state.json.statesafe")));
    let held = common::HeldInode::hold(&lock);
    for i in 1..=5 {
        store.update(|s| s["n"] = i.into()).unwrap();
        let other: Store = Store::open(&path).unwrap();
        other.replace(json!({"n": i * 10})).unwrap();
        drop(other);
        let tx = store.begin().unwrap();
        drop(tx);
        assert!(held.is_at(&lock), "the lock file was replaced");
    }
    drop(store);
    assert!(
        held.is_at(&lock),
        "dropping the store removed the lock file"
    );
}

fn store_for_fork(path: &Path) -> Store {
    let store: Store = Store::options()
        .lock_timeout(Duration::from_millis(300))
        .open(path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    store
}

/// A process that forks without exec (a pre-forking server, Python's
/// `multiprocessing`) gives the child a copy of every store, with the descriptor of
/// the lock file the store keeps open: the same open file description, so the same
/// `flock`. Locking it again in the child while the parent holds it would succeed at
/// once (a lock is never in conflict with itself), and both would commit: a lost
/// update. The child's store must lock through a description of its own.
#[test]
fn a_forked_child_does_not_share_the_parents_lock() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_for_fork(&path);
    // The store now keeps the lock file open (unlocked) for its next transaction.
    store.update(|s| s["n"] = 1.into()).unwrap();
    let (mut to_child, mut from_parent) = UnixStream::pair().unwrap();
    let Some(pid) = common::fork() else {
        let mut go = [0u8; 1];
        common::exit_now(match from_parent.read_exact(&mut go) {
            Err(_) => 3,
            Ok(()) => match store.update(|s| s["n"] = 100.into()) {
                Err(Error::LockTimeout { .. }) => 0,
                Ok(()) => 1,
                Err(_) => 2,
            },
        })
    };
    let mut tx = store.begin().unwrap();
    to_child.write_all(b"g").unwrap();
    let code = common::exit_code_of(pid);
    tx.state_mut()["n"] = 2.into();
    tx.commit().unwrap();
    assert_eq!(
        code, 0,
        "the child's update (exit code 1: it committed while the parent held the lock; 2: another error) must time out"
    );
    assert_eq!(store.get().unwrap()["n"], 2);
}

/// A transaction copied into a child by a fork (the fork happened inside it) belongs
/// to the parent: the child's copy may not commit, and dropping it there must not
/// release the parent's lock.
#[test]
fn a_transaction_copied_by_a_fork_neither_commits_nor_unlocks_in_the_child() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_for_fork(&path);
    let mut tx = store.begin().unwrap();
    let Some(pid) = common::fork() else {
        tx.state_mut()["n"] = 100.into();
        common::exit_now(match tx.commit() {
            Ok(_) => 1,
            Err(Error::Io { .. }) => 0,
            Err(_) => 2,
        })
    };
    assert_eq!(
        common::exit_code_of(pid),
        0,
        "the child's copy of the transaction must refuse to commit (1: it committed; 2: another error)"
    );
    // Still ours: another process times out on it.
    let other: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    let err = other.update(|s| s["n"] = 7.into()).unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    tx.state_mut()["n"] = 2.into();
    tx.commit().unwrap();
    assert_eq!(store.get().unwrap()["n"], 2);
}

/// A holder that forks a long-lived child (which closes its inherited descriptors, as
/// Python's fork hook closes the lock file's) and then dies holding the lock: the lock
/// is free at once. The lock file's wake-up page (`sys/wake.rs`) is mapped shared, and a
/// mapping keeps its open file description alive: mapped from the locked description,
/// the child's inherited copy of the mapping kept the `flock` held after its holder died
/// (found by the Python test
/// `test_the_lock_dies_with_its_holder_even_with_a_forked_child_alive`).
#[test]
fn the_lock_dies_with_its_holder_even_with_a_forked_child_alive() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = store_for_fork(&path);
    let (mut from_holder, mut to_parent) = UnixStream::pair().unwrap();
    let Some(holder) = common::fork() else {
        // A release maps the page; then the lock is held while a child is forked.
        store.update(|s| s["n"] = 1.into()).unwrap();
        let guard = store.lock("hold").unwrap();
        let Some(child) = common::fork() else {
            #[allow(unsafe_code)]
            // SAFETY: closes this forked child's descriptors from 3 up; it then only
            // sleeps and exits.
            unsafe {
                libc::close_range(3, libc::c_uint::MAX, 0);
            }
            std::thread::sleep(Duration::from_secs(120));
            common::exit_now(0)
        };
        to_parent.write_all(&child.to_ne_bytes()).unwrap();
        std::mem::forget(guard);
        // Dies holding the lock.
        common::exit_now(0)
    };
    let mut pid = [0u8; 4];
    from_holder.read_exact(&mut pid).unwrap();
    let child = libc::pid_t::from_ne_bytes(pid);
    assert_eq!(common::exit_code_of(holder), 0);
    let other: Store = Store::options()
        .lock_timeout(Duration::from_secs(5))
        .open(&path)
        .unwrap();
    let locked = other.update(|s| s["n"] = 2.into());
    #[allow(unsafe_code)]
    // SAFETY: ends the sleeping grandchild (reparented; not waited for here).
    unsafe {
        libc::kill(child, libc::SIGKILL);
    }
    locked.expect("the lock must be free once its holder died, whatever its children hold");
}

/// FAILURE_MODES.md row 5: "stale lock" takeover. The record in the lock file is
/// written by the holder and readable (and, for whoever may write the sidecar,
/// writable) by others: it says who holds the lock, never whether it is held. A live
/// holder whose record claims a process that cannot exist, on another host, since
/// 1970 (what an age or liveness heuristic would break) keeps the lock: a writer times
/// out, and writes once the holder really lets go. Each writer's increment counts.
#[test]
fn a_live_holder_is_never_broken_however_stale_its_record_looks() {
    use std::os::unix::fs::FileExt;
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .lock_timeout(Duration::from_millis(300))
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    let lock = store.lock_path().to_path_buf();
    let held = common::HeldInode::hold(&lock);
    let mut holder = spawn_holder(&path);
    // pid_max is at most 2^22: this pid cannot exist.
    let forged = json!({
        "holder": {
            "pid": 4_194_305,
            "host": "decommissioned.example",
            "user": "nobody",
            "command": "a job that died in 1970",
            "operation": "update",
            "since": "1970-01-01T00:00:00.000Z",
        },
        "boot": "00000000-0000-0000-0000-000000000000",
    })
    .to_string();
    let mut record = forged.into_bytes();
    record.resize(2048, b' ');
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lock)
        .unwrap()
        .write_all_at(&record, 0)
        .unwrap();
    for _ in 0..3 {
        let err = store.update(|s| s["n"] = 1.into()).unwrap_err();
        assert!(
            matches!(err, Error::LockTimeout { .. }),
            "a live holder's lock was taken over because of its record: {err:?}"
        );
    }
    assert!(held.is_at(&lock), "the lock file was replaced");
    assert_eq!(store.get().unwrap(), json!({"n": 0}));
    holder.close_stdin();
    assert!(holder.wait().success());
    store
        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
        .unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 1}));
    assert!(held.is_at(&lock), "the lock file was replaced");
}

/// FAILURE_MODES.md row 6: a POSIX `fcntl` lock is dropped by any `close()` of any
/// descriptor of the file in the holding process: a library that opens the lock file
/// to read the holder, a second store of the same file opened and dropped, a
/// `std::fs::read` of it. The lock is a `flock` on the open file description, so none
/// of those lets another process in while this one holds it.
#[test]
fn closing_other_descriptors_of_the_lock_file_keeps_the_lock() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    let lock = store.lock_path().to_path_buf();
    let tx = store.begin().unwrap();
    // Everything a program might do in the holder's process, each closing a
    // descriptor of the lock file.
    drop(std::fs::File::open(&lock).unwrap());
    std::fs::read(&lock).unwrap();
    let other: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    assert!(other.lock_holder().is_some());
    assert!(matches!(
        other.update(|s| s["n"] = 9.into()),
        Err(Error::LockTimeout { .. })
    ));
    drop(other);
    // Another process, with a zero timeout, must still find the lock held.
    let out = ChildCmd::new("lock::child_try_update", "try-update")
        .arg("PATH", &path)
        .run();
    assert_eq!(
        out,
        ["lock_timeout"],
        "another process got the lock: {out:?}"
    );
    let mut tx = tx;
    tx.state_mut()["n"] = 1.into();
    tx.commit().unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 1}));
}

/// Tries one update with a zero lock timeout; reports `ok` or the error's kind.
#[test]
fn child_try_update() {
    if !common::child_role("try-update") {
        return;
    }
    let store: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(common::child_arg("PATH"))
        .unwrap();
    match store.update(|s| s["n"] = 7.into()) {
        Ok(_) => common::say("ok"),
        Err(e) => common::say(e.kind()),
    }
}
