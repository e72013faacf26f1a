//! Another user who can plant files, links or FIFOs beside a state file gains nothing
//! through statesafe (issue 10): each attack of the review, at library level. The
//! planted object is refused (`Error::Unsafe`) or left harmless, and nothing outside
//! the sidecar changes. Tests that need a second user run as root and drop to `nobody`
//! with `setpriv`; without root they say so loudly and check nothing.
//!
//! Defends FAILURE_MODES.md rows 19 (planted symlinks, FIFOs, foreign files) and 20 (a
//! lock file deleted while held: two holders).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use statesafe::{Error, Store};

use crate::common::{self, ChildCmd, sidecar};

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Bytes and mode of a file that must not change.
fn snapshot(path: &Path) -> (Vec<u8>, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (std::fs::read(path).unwrap(), meta.mode() & 0o7777)
}

/// Runs `f` on a thread and fails the test if it has not returned within a minute (a
/// FIFO that blocks an `open` would hang forever; a minute is far beyond any write).
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the call blocked (a FIFO opened without O_NONBLOCK?)")
}

/// Attack 1: a history segment planted as a symlink to someone else's private file.
/// The permission fix-up never follows it, and the append never writes through it.
#[test]
fn a_planted_history_symlink_is_never_followed() {
    let dir = common::test_dir();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "secret").unwrap();
    set_mode(&victim, 0o600);
    let path = dir.path().join("a.json");
    std::fs::write(&path, "{\"a\": 1}\n").unwrap();
    let history = sidecar(&path).join("history");
    std::fs::create_dir_all(&history).unwrap();
    set_mode(&sidecar(&path), 0o755);
    std::os::unix::fs::symlink(&victim, history.join("seg-00000000000000000000.jsonl")).unwrap();
    // The file is made world-writable, so the sidecar's permissions must be widened:
    // the fix-up walks the history folder.
    set_mode(&path, 0o666);
    let before = snapshot(&victim);
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["a"] = 4.into()).unwrap();
    assert_eq!(snapshot(&victim), before, "the victim file changed");
    assert_eq!(store.get().unwrap(), json!({"a": 4}));
}

/// Attack 2: `lock` planted as a symlink to another file: refused, never written.
#[test]
fn a_planted_lock_symlink_is_refused() {
    let dir = common::test_dir();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes\n").unwrap();
    let path = dir.path().join("c.json");
    std::fs::create_dir(sidecar(&path)).unwrap();
    std::os::unix::fs::symlink(&notes, sidecar(&path).join("lock")).unwrap();
    let before = snapshot(&notes);
    let store: Store = Store::open(&path).unwrap();
    let err = store.create(json!({"c": 1})).unwrap_err();
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if p.ends_with("lock")),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(err.hint().is_some());
    assert_eq!(snapshot(&notes), before);
    assert!(!path.exists(), "the state file was written");
}

/// Attack 2 as two users: a sidecar pre-created by another user is refused.
#[test]
fn a_sidecar_owned_by_another_user_is_refused() {
    let test = "security::a_sidecar_owned_by_another_user_is_refused";
    if !common::is_root() {
        common::skipped(test, "needs root to give the sidecar to another user");
        return;
    }
    let dir = common::test_dir();
    let path = dir.path().join("c.json");
    let car = sidecar(&path);
    std::fs::create_dir(&car).unwrap();
    set_mode(&car, 0o777);
    std::os::unix::fs::chown(&car, Some(65534), Some(65534)).unwrap();
    // Refused as soon as the store reads its settings from it.
    let err = Store::<serde_json::Value>::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == car),
        "{err:?}"
    );
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(&car).unwrap().count(), 0, "wrote into it");
    // A sidecar of a file that user may write (world-writable) is theirs to keep.
    std::fs::write(&path, "{\"c\": 0}\n").unwrap();
    set_mode(&path, 0o666);
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["c"] = 1.into()).unwrap();
}

/// Attack 3: a lock record naming a "temporary file" that is a path out of the
/// directory: the name is never used, the file it points at survives.
#[test]
fn a_hostile_temp_name_in_the_lock_record_is_never_used() {
    let dir = common::test_dir();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let victim = other.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let path = state_dir.join("g.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"g": 1})).unwrap();
    // The directory that makes the hostile name resolve, and the record naming it.
    std::fs::create_dir(state_dir.join(".g.json.statesafe-tmp-")).unwrap();
    let hostile = ".g.json.statesafe-tmp-/../../other/victim.txt";
    assert!(state_dir.join(hostile).exists());
    let mut record = serde_json::to_vec(&json!({"temp": hostile, "last_generation": 1})).unwrap();
    record.resize(2047, b' ');
    record.push(b'\n');
    std::fs::write(store.lock_path(), record).unwrap();
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["g"] = 2.into()).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(state_dir.join(".g.json.statesafe-tmp-").is_dir());
}

/// Attack 4: the sidecar itself a symlink to another directory (`~/.ssh`): refused,
/// and nothing in that directory changes.
#[test]
fn a_sidecar_symlink_is_refused() {
    let dir = common::test_dir();
    let ssh = dir.path().join("dot-ssh");
    std::fs::create_dir(&ssh).unwrap();
    set_mode(&ssh, 0o700);
    std::fs::write(ssh.join("id_rsa"), "KEY").unwrap();
    set_mode(&ssh.join("id_rsa"), 0o600);
    let path = dir.path().join("b.json");
    std::fs::write(&path, "{\"b\": 1}\n").unwrap();
    std::os::unix::fs::symlink(&ssh, sidecar(&path)).unwrap();
    let key = snapshot(&ssh.join("id_rsa"));
    let err = Store::<serde_json::Value>::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == sidecar(&path)),
        "{err:?}"
    );
    assert_eq!(common::mode(&ssh), 0o700);
    assert_eq!(snapshot(&ssh.join("id_rsa")), key);
    assert_eq!(std::fs::read_dir(&ssh).unwrap().count(), 1, "wrote into it");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"b\": 1}\n");
}

/// Attack 5: in a sticky, world-writable directory, a symlink planted by another user
/// is not followed (the kernel's protected_symlinks rule, applied by statesafe since
/// it resolves links itself); one of the caller's own is.
#[test]
fn a_foreign_symlink_in_a_sticky_directory_is_not_followed() {
    let test = "security::a_foreign_symlink_in_a_sticky_directory_is_not_followed";
    if !common::is_root() {
        common::skipped(test, "needs root to plant a link owned by another user");
        return;
    }
    let dir = common::test_dir();
    set_mode(dir.path(), 0o755);
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let victim = dir.path().join("root-owned.json");
    std::fs::write(&victim, "{\"root\": true}\n").unwrap();
    set_mode(&victim, 0o644);
    let link = shared.join("x.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let before = snapshot(&victim);
    let err = Store::<serde_json::Value>::open(&link).unwrap_err();
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == link),
        "{err:?}"
    );
    assert!(err.to_string().contains("protected_symlinks"), "{err}");
    assert_eq!(snapshot(&victim), before);
    // The caller's own link in the same directory is followed.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let store: Store = Store::open(&link).unwrap();
    store.update(|s| s["root"] = false.into()).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&victim).unwrap()).unwrap(),
        json!({"root": false})
    );
}

/// Attack 5 through a directory: `/tmp/d -> /root` planted by another user makes
/// `/tmp/d/x.json` name a file in root's directory. The kernel's protected_symlinks
/// refuses to follow `d` for anyone but its owner; statesafe resolves the path itself,
/// so it must refuse too, whatever the sysctl says.
#[test]
fn a_foreign_symlinked_directory_in_a_sticky_directory_is_not_followed() {
    let test = "security::a_foreign_symlinked_directory_in_a_sticky_directory_is_not_followed";
    if !common::is_root() {
        common::skipped(test, "needs root to plant a link owned by another user");
        return;
    }
    let dir = common::test_dir();
    set_mode(dir.path(), 0o755);
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let private = dir.path().join("root-private");
    std::fs::create_dir(&private).unwrap();
    set_mode(&private, 0o700);
    let victim = private.join("x.json");
    std::fs::write(&victim, "{\"root\": true}\n").unwrap();
    set_mode(&victim, 0o600);
    let link = shared.join("d");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let before = snapshot(&victim);
    for path in [
        link.join("x.json"),
        link.join("new.json"),
        link.join("../shared/d/x.json"),
    ] {
        let err = Store::<serde_json::Value>::open(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Unsafe { path: p, .. } if *p == link),
            "{}: {err:?}",
            path.display()
        );
    }
    assert_eq!(snapshot(&victim), before);
    assert!(!private.join("new.json").exists());
    // The caller's own link to the same directory is followed.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let store: Store = Store::open(link.join("x.json")).unwrap();
    store.update(|s| s["root"] = false.into()).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&victim).unwrap()).unwrap(),
        json!({"root": false})
    );
}

/// Attack 6: the sidecar removed while a transaction holds the lock. Another writer
/// may then take a lock of its own, so the first holder's commit is abandoned before
/// its rename and writes nothing.
#[test]
fn a_holder_whose_lock_file_was_removed_commits_nothing() {
    let dir = common::test_dir();
    let path = dir.path().join("f.json");
    let a: Store = Store::open(&path).unwrap();
    a.create(json!({"n": 0})).unwrap();
    let mut tx = a.begin().unwrap();
    std::fs::remove_dir_all(sidecar(&path)).unwrap();
    let b: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&path)
        .unwrap();
    // The lock file at the path is a new one, so B gets it at once.
    b.update(|s| s["n"] = 10.into()).unwrap();
    assert_eq!(b.generation().unwrap(), 2);
    tx.state_mut()["n"] = 1.into();
    let err = tx.commit().unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err:?}");
    assert!(err.hint().is_some());
    assert_eq!(
        a.get().unwrap(),
        json!({"n": 10}),
        "A's commit overwrote B's"
    );
    assert_eq!(
        common::temp_files(dir.path(), "f.json"),
        Vec::<String>::new()
    );
    // Replacing only the lock file has the same effect.
    let mut tx = a.begin().unwrap();
    let lock = a.lock_path().to_path_buf();
    std::fs::remove_file(&lock).unwrap();
    std::fs::write(&lock, "").unwrap();
    tx.state_mut()["n"] = 11.into();
    assert!(matches!(tx.commit(), Err(Error::LockLost { .. })));
    // The generation sequence continues in the re-created sidecar.
    a.update(|s| s["n"] = 12.into()).unwrap();
    assert_eq!(a.generation().unwrap(), 3);
}

/// Attack 6 with `Store::lock` (what `statesafe lock -- CMD` holds): the holder can
/// tell that its lock was lost.
#[test]
fn a_lock_guard_knows_when_its_lock_file_was_removed() {
    let dir = common::test_dir();
    let path = dir.path().join("l.json");
    let store: Store = Store::open(&path).unwrap();
    let guard = store.lock("maintenance").unwrap();
    guard.check().unwrap();
    std::fs::remove_dir_all(sidecar(&path)).unwrap();
    assert!(matches!(guard.check(), Err(Error::LockLost { .. })));
}

/// Attack 6 under load: writers (each its own store, so its own lock description)
/// increment a counter while another thread removes the whole sidecar in a loop. Every
/// update that returned `Ok` is in the final count, and no other.
#[test]
fn removing_the_sidecar_under_load_loses_no_acknowledged_update() {
    let dir = common::test_dir();
    let path = dir.path().join("counter.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(json!({"n": 0}))
        .unwrap();
    /// Counts a writer as done however it ends (a panic included), so the remover
    /// stops and the scope ends.
    struct Done<'a>(&'a AtomicU64);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    const WRITERS: u64 = 4;
    let acked = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let removals = AtomicU64::new(0);
    let kinds = std::sync::Mutex::new(std::collections::BTreeMap::new());
    std::thread::scope(|scope| {
        let car = sidecar(&path);
        let (done, removals) = (&done, &removals);
        scope.spawn(move || {
            while done.load(Ordering::Relaxed) < WRITERS {
                if std::fs::remove_dir_all(&car).is_ok() {
                    removals.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        for _ in 0..WRITERS {
            let (path, acked, failed, kinds) = (&path, &acked, &failed, &kinds);
            scope.spawn(move || {
                let _done = Done(done);
                for _ in 0..100 {
                    // Opening may fail too, with the sidecar half-deleted.
                    let outcome = Store::<serde_json::Value>::open(path).and_then(|store| {
                        store.update(|s| {
                            s["n"] = (s["n"].as_u64().unwrap() + 1).into();
                        })
                    });
                    match outcome {
                        Ok(()) => acked.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            *kinds.lock().unwrap().entry(e.kind()).or_insert(0) += 1;
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    });
    let n = Store::<serde_json::Value>::open(&path)
        .unwrap()
        .get()
        .unwrap()["n"]
        .as_u64()
        .unwrap();
    let (acked, failed) = (acked.into_inner(), failed.into_inner());
    eprintln!(
        "sidecar removed {} times: {acked} updates acknowledged, {failed} failed ({:?}), counter {n}",
        removals.into_inner(),
        kinds.into_inner().unwrap()
    );
    assert_eq!(
        n, acked,
        "acknowledged updates lost (or unacknowledged ones kept)"
    );
    assert!(acked > 0);
}

/// Attack 8: a FIFO planted where statesafe opens a file never blocks it, and a
/// directory named like a temporary file never blocks a write.
#[test]
fn planted_fifos_and_directories_never_block_a_write() {
    let dir = common::test_dir();
    let path = dir.path().join("f.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // The next commit backs generation 2 up under this name.
    let fifo = sidecar(&path).join("backups/gen-00000000000000000002.json");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    for name in [
        ".f.json.statesafe-tmp-x",
        ".f.json.statesafe-tmp-1-0123456789abcdef",
    ] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    let p = path.clone();
    within_a_minute(move || {
        let store: Store = Store::open(&p).unwrap();
        store.update(|s| s["n"] = 3.into()).unwrap();
    });
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
    for name in [
        ".f.json.statesafe-tmp-x",
        ".f.json.statesafe-tmp-1-0123456789abcdef",
    ] {
        assert!(dir.path().join(name).is_dir(), "{name} was removed");
    }
    // A FIFO as the lock file or the settings is refused at once.
    let lock = store.lock_path().to_path_buf();
    std::fs::remove_file(&lock).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &lock,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let p = path.clone();
    let err = within_a_minute(move || {
        Store::<serde_json::Value>::open(&p)
            .unwrap()
            .update(|s| s["n"] = 4.into())
            .unwrap_err()
    });
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == lock),
        "{err:?}"
    );
    std::fs::remove_file(&lock).unwrap();
    let settings = sidecar(&path).join("settings.json");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &settings,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let p = path.clone();
    let err = within_a_minute(move || Store::<serde_json::Value>::open(&p).unwrap_err());
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == settings),
        "{err:?}"
    );
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
}

/// A hard link planted as the lock file (to a file the caller may write) is never
/// written through.
#[test]
fn a_hard_linked_lock_file_is_refused() {
    let dir = common::test_dir();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes\n").unwrap();
    let path = dir.path().join("h.json");
    std::fs::create_dir(sidecar(&path)).unwrap();
    std::fs::hard_link(&notes, sidecar(&path).join("lock")).unwrap();
    let store: Store = Store::open(&path).unwrap();
    let err = store.create(json!({"h": 1})).unwrap_err();
    assert!(matches!(err, Error::Unsafe { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
}

/// Tries to take the writers' lock as whoever runs it, and reports the outcome.
#[test]
fn child_try_lock() {
    if !common::child_role("try-lock") {
        return;
    }
    let store: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(common::child_arg("PATH"))
        .unwrap();
    match store.lock("hold") {
        Ok(_guard) => common::say("locked"),
        Err(Error::PermissionDenied { op, .. }) => common::say(format!("denied {op:?}")),
        Err(e) => common::say(format!("other {e:?}")),
    }
}

fn try_lock_as_nobody(path: &Path) -> Vec<String> {
    ChildCmd::wrapped(&common::AS_NOBODY, "security::child_try_lock", "try-lock")
        .arg("PATH", path)
        .run()
}

/// Attack 7: a user who may only read the state file cannot take the writers' lock
/// (so cannot hold writers off); neither can one who may write the file but not the
/// lock file (no read-only fallback).
#[test]
fn only_a_user_who_may_write_the_file_takes_the_lock() {
    let test = "security::only_a_user_who_may_write_the_file_takes_the_lock";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    set_mode(dir.path(), 0o777);
    let path = dir.path().join("r.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    assert_eq!(common::mode(&path), 0o644 & !common::umask());
    set_mode(&path, 0o644);
    assert_eq!(try_lock_as_nobody(&path), ["denied Lock"]);
    // World-writable file, but the lock file left root's and read-only.
    set_mode(&path, 0o666);
    store.update(|s| s["n"] = 1.into()).unwrap();
    set_mode(store.lock_path(), 0o644);
    assert_eq!(try_lock_as_nobody(&path), ["denied OpenLock"]);
    set_mode(store.lock_path(), 0o666);
    assert_eq!(try_lock_as_nobody(&path), ["locked"]);
}

/// The other half of the lock-split defence: a commit never renames over a file that
/// is not the one its transaction read (replaced by a writer that held another lock
/// inode, or none); the replacing version stays.
#[test]
fn a_file_replaced_under_the_lock_is_not_overwritten() {
    let dir = common::test_dir();
    let path = dir.path().join("r.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    let mut tx = store.begin().unwrap();
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"n\": 7}\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    tx.state_mut()["n"] = 1.into();
    assert!(matches!(tx.commit(), Err(Error::LockLost { .. })));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\": 7}\n");
    // A file created under the lock of a transaction that found none is kept too
    // (a state never committed: one deleted after commits is refused outright,
    // `deleted::*`).
    let fresh_path = dir.path().join("f.json");
    let fresh: Store = Store::open(&fresh_path).unwrap();
    let mut tx = fresh.begin_or_insert_with(|| json!({})).unwrap();
    std::fs::write(&fresh_path, "{\"n\": 8}\n").unwrap();
    tx.set(json!({"n": 2}));
    assert!(matches!(tx.commit(), Err(Error::LockLost { .. })));
    assert_eq!(
        std::fs::read_to_string(&fresh_path).unwrap(),
        "{\"n\": 8}\n"
    );
    assert_eq!(
        common::temp_files(dir.path(), "f.json"),
        Vec::<String>::new()
    );
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        store.begin_or_insert_with(|| json!({})),
        Err(Error::Deleted { .. })
    ));
}

/// Takes `flock` on the lock file directly, as any program could (`flock(1)`, Python's
/// `fcntl.flock`): opened read-only, since a shared or exclusive `flock` needs no write
/// access. Reports whether the lock file could be opened and locked.
#[test]
fn child_flock_directly() {
    if !common::child_role("flock-directly") {
        return;
    }
    match std::fs::File::open(common::child_arg("LOCK")) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            common::say("denied open");
        }
        Err(e) => common::say(format!("other {e:?}")),
        Ok(file) => match file.try_lock() {
            Ok(()) => common::say("locked"),
            Err(e) => common::say(format!("not locked {e:?}")),
        },
    }
}

fn flock_directly_as_nobody(lock: &Path) -> Vec<String> {
    ChildCmd::wrapped(
        &common::AS_NOBODY,
        "security::child_flock_directly",
        "flock-directly",
    )
    .arg("LOCK", lock)
    .run()
}

/// Attack 7 without statesafe: a user who may only read the state file cannot hold
/// the writers off with `flock(1)` on the lock file either. The lock file is readable
/// only by those who may write the state file (`flock` works on a read-only
/// descriptor, so read access to the lock file is the power to block every writer).
#[test]
fn a_reader_cannot_flock_the_lock_file_directly() {
    let test = "security::a_reader_cannot_flock_the_lock_file_directly";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    set_mode(dir.path(), 0o777);
    let path = dir.path().join("r.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    set_mode(&path, 0o644);
    store.update(|s| s["n"] = 1.into()).unwrap();
    assert_eq!(flock_directly_as_nobody(store.lock_path()), ["denied open"]);
    // A reader still reads the file and its generation, also one that must be derived
    // from the sidecar (the file replaced by another program, without metadata).
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"n\": 9}\n").unwrap();
    set_mode(&other, 0o644);
    std::fs::rename(&other, &path).unwrap();
    let out = ChildCmd::wrapped(
        &common::AS_NOBODY,
        "security::child_read_generation",
        "read-generation",
    )
    .arg("PATH", &path)
    .run();
    assert_eq!(out, ["generation 3"]);
    // And still sees who holds the lock, though it may not read the record.
    let held = store.lock("hold").unwrap();
    let out = ChildCmd::wrapped(
        &common::AS_NOBODY,
        "security::child_lock_holder",
        "lock-holder",
    )
    .arg("PATH", &path)
    .run();
    assert_eq!(out, [format!("held by pid {}", std::process::id())]);
    drop(held);
    // Who may write it may lock it.
    set_mode(&path, 0o666);
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(flock_directly_as_nobody(store.lock_path()), ["locked"]);
}

/// Reads the state file as whoever runs it and reports its generation.
#[test]
fn child_read_generation() {
    if !common::child_role("read-generation") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    match store.load() {
        Ok(doc) => common::say(format!("generation {}", doc.generation)),
        Err(e) => common::say(format!("error {e}")),
    }
}

/// A state file narrowed from world-writable (`chmod 664` after `chmod 666`) narrows
/// its whole sidecar at the next commit: the folders and the lock file too, not only
/// the top folder; otherwise anyone could still plant backups or history there (and,
/// the sidecar being group-writable, their files would be accepted).
#[test]
fn narrowing_the_file_narrows_the_whole_sidecar() {
    let dir = common::test_dir();
    let path = dir.path().join("n.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    set_mode(&path, 0o666);
    store.update(|s| s["n"] = 1.into()).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    let side = sidecar(&path);
    assert_eq!(common::mode(&side.join("backups")), 0o777);
    set_mode(&path, 0o664);
    store.update(|s| s["n"] = 3.into()).unwrap();
    for sub in ["", "backups", "history"] {
        assert_eq!(
            common::mode(&side.join(sub)),
            0o775,
            "`{sub}` keeps the old, wider mode"
        );
    }
    assert_eq!(common::mode(&side.join("lock")), 0o660);
}

/// Reports who holds the writers' lock, as whoever runs it sees it.
#[test]
fn child_lock_holder() {
    if !common::child_role("lock-holder") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    match store.lock_holder() {
        Some(h) => common::say(format!("held by pid {}", h.pid)),
        None => common::say("nobody"),
    }
}

/// The kernel's `protected_regular` rule, applied by statesafe whatever the sysctl
/// says: in a sticky, world-writable directory (`/tmp`), root never writes into a file
/// another user planted under the name it meant to use (the shell's `echo secret >
/// /tmp/app.json` is refused there too). The planted file would otherwise receive
/// what root writes and stay its planter's, readable by them. Ordinary users cannot
/// replace another's file there anyway (the sticky bit).
#[test]
fn root_never_writes_into_a_file_another_user_planted_in_a_sticky_directory() {
    let test = "security::root_never_writes_into_a_file_another_user_planted_in_a_sticky_directory";
    if !common::is_root() {
        common::skipped(test, "needs root to plant a file owned by another user");
        return;
    }
    let dir = common::test_dir();
    set_mode(dir.path(), 0o755);
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let planted = shared.join("app.json");
    std::fs::write(&planted, "{}\n").unwrap();
    set_mode(&planted, 0o666);
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
    let before = snapshot(&planted);
    let store: Store = Store::open(&planted).unwrap();
    let err = store.update(|s| s["token"] = "s3cret".into()).unwrap_err();
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == planted),
        "{err:?}"
    );
    assert!(err.to_string().contains("protected_regular"), "{err}");
    assert_eq!(snapshot(&planted), before);
    assert!(!sidecar(&planted).exists());
    // Nor read as the state: what the writer refuses, a lock-free read does not serve
    // (review21node, finding 11: `get` served a planted `{"admin": true}`).
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, Error::Unsafe { path: p, .. } if *p == planted),
        "{err:?}"
    );
    // A file of root's own (the directory's owner) there is written as usual.
    let own = shared.join("own.json");
    let store: Store = Store::open(&own).unwrap();
    store.create(json!({"n": 0})).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
}

/// The hard-link check of `a_hard_link_planted_in_a_sticky_directory_gains_its_planter_nothing`
/// (red13.rs) for any user, and the one second name it lets through: in a sticky,
/// world-writable directory, a state file with another name elsewhere is refused
/// (nothing read or written), but the backup link a commit makes of the outgoing
/// version before its rename (left as the second name by a writer killed between the
/// two) is the writer's own, and the next commit goes ahead.
#[test]
fn a_second_name_in_a_sticky_directory_is_refused_unless_it_is_our_backup() {
    let dir = common::test_dir();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let path = shared.join("app.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    store.update(|d| d["n"] = 1.into()).unwrap();
    // A writer killed after linking generation 2 as its backup, before its rename.
    let backup = sidecar(&path).join("backups/gen-00000000000000000002.json");
    std::fs::hard_link(&path, &backup).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 2);
    store.update(|d| d["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 3);
    // A second name anywhere else.
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::hard_link(&path, &elsewhere).unwrap();
    let before = snapshot(&path);
    let refused = store.update(|d| d["n"] = 3.into());
    match &refused {
        Err(Error::Unsafe {
            path: p, reason, ..
        }) => {
            assert_eq!(p, &path);
            assert!(reason.contains("2 hard links"), "{reason}");
        }
        other => panic!("a commit on a state file with a second name: {other:?}"),
    }
    assert_eq!(snapshot(&path), before);
    assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 2);
    // Its owner removes the other name: commits go on.
    std::fs::remove_file(&elsewhere).unwrap();
    store.update(|d| d["n"] = 3.into()).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 3}));
}
