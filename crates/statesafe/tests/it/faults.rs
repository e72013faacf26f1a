//! Storage faults: a full filesystem (a tiny tmpfs), a read-only filesystem, and fsync
//! failures injected with `strace`. Each leaves the original file intact and no
//! temporary file; a failed file fsync poisons the store (no retry); a failed directory
//! fsync after the rename is "outcome unknown", not an ordinary failure.
//!
//! Needs root (mounts) and a working `strace`; where either is missing the test prints
//! `SKIPPED: <test>: <reason>` and passes without checking anything.
//!
//! Defends FAILURE_MODES.md rows 17 (disk full, read-only filesystem: typed errors,
//! original intact), 18 (fsync error then retry: poison the handle), 2 (a failed
//! directory fsync after the rename is reported as such) and 12 (a rename that fails
//! with `EXDEV` or `EBUSY` is an error, never a fallback that writes into the file).

use std::path::Path;

use serde_json::json;
use statesafe::{Error, Op, Store};

use crate::common::{self, ChildCmd, Mount};
use crate::kill::Doc;

/// Size of the tiny tmpfs: room for a small state file, not for a 1 MiB one.
const TINY: u64 = 256 * 1024;

fn mount_tiny(test: &str, dir: &Path) -> Option<Mount> {
    match Mount::tmpfs(&dir.join("tiny"), TINY) {
        Ok(m) => Some(m),
        Err(reason) => {
            common::skipped(test, &reason);
            None
        }
    }
}

/// The operation named by an error, for the variants that carry one.
fn op_of(err: &Error) -> Option<Op> {
    match err {
        Error::Io { op, .. }
        | Error::NoSpace { op, .. }
        | Error::ReadOnly { op, .. }
        | Error::PermissionDenied { op, .. } => Some(*op),
        _ => None,
    }
}

#[test]
fn a_full_filesystem_fails_cleanly_and_recovers() {
    let test = "faults::a_full_filesystem_fails_cleanly_and_recovers";
    let dir = common::test_dir();
    let Some(_mount) = mount_tiny(test, dir.path()) else {
        return;
    };
    let tiny = dir.path().join("tiny");
    let path = tiny.join("state.json");
    let store: Store<serde_json::Value> = Store::open(&path).unwrap();
    store.create(json!({"n": 1, "note": "small"})).unwrap();
    let before = std::fs::read(&path).unwrap();

    // A document that does not fit.
    let big: Store<Doc> = Store::open(&path).unwrap();
    let err = big.replace(Doc::new(7)).unwrap_err();
    assert!(
        matches!(err, Error::NoSpace { .. }),
        "expected NoSpace, got {err:?}"
    );
    assert_eq!(err.kind(), "no_space");
    assert!(err.to_string().contains("no space"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the original was touched"
    );
    assert_eq!(
        common::temp_files(&tiny, "state.json"),
        Vec::<String>::new()
    );
    assert_eq!(store.load().unwrap().generation, 1);

    // The same store is not poisoned (no fsync failed): a smaller write works.
    let medium = "m".repeat(64 * 1024);
    store.update(|s| s["note"] = medium.clone().into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 2);
    assert_eq!(store.get().unwrap()["note"], medium.as_str());

    // Filled to the brim by someone else: even a small write fails, then works again
    // once space is freed.
    let filler = tiny.join("filler");
    fill(&filler);
    let before = std::fs::read(&path).unwrap();
    let err = store
        .update(|s| s["note"] = "x".repeat(16 * 1024).into())
        .unwrap_err();
    assert!(
        matches!(err, Error::NoSpace { .. }),
        "expected NoSpace, got {err:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        common::temp_files(&tiny, "state.json"),
        Vec::<String>::new()
    );
    std::fs::remove_file(&filler).unwrap();
    store.update(|s| s["note"] = "freed".into()).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 1, "note": "freed"}));
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_read_only_filesystem_fails_cleanly() {
    let test = "faults::a_read_only_filesystem_fails_cleanly";
    let dir = common::test_dir();
    let Some(mount) = mount_tiny(test, dir.path()) else {
        return;
    };
    let tiny = dir.path().join("tiny");
    let path = tiny.join("state.json");
    {
        let store: Store = Store::open(&path).unwrap();
        store.create(json!({"n": 1})).unwrap();
        // Dropped here: the lock file, open for writing, would block the remount.
    }
    // Edited by another program just before: reading it must not need to write.
    std::fs::write(&path, "{\"n\": 1, \"edited\": true}\n").unwrap();
    let before = std::fs::read(&path).unwrap();
    if let Err(reason) = mount.remount_read_only() {
        common::skipped(test, &reason);
        return;
    }
    let store: Store = Store::open(&path).unwrap();
    let err = store.update(|s| s["n"] = 2.into()).unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly { .. }),
        "expected ReadOnly, got {err:?}"
    );
    assert_eq!(err.kind(), "read_only");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Reads still work, and a new file cannot be created.
    assert_eq!(store.get().unwrap(), json!({"n": 1, "edited": true}));
    let fresh: Store = Store::open(tiny.join("new.json")).unwrap();
    let err = fresh.update_or_default(|_| ()).unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly { .. }),
        "expected ReadOnly, got {err:?}"
    );
    assert!(!tiny.join("new.json").exists());
}

// ---------------------------------------------------------------------------------------
// fsync failures, injected by strace into a child process

/// One line describing a write's outcome: `ok`, or the error's kind, operation and message.
fn outcome<T>(result: &Result<T, Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("{} {:?} | {e}", e.kind(), op_of(e)),
    }
}

/// Under strace: one update (which meets the injected fault), a second on the same
/// store, then one on a reopened store; reports each, and the file's state in between.
#[test]
fn child_fsync_fault() {
    if !common::child_role("fsync-fault") {
        return;
    }
    let path = common::child_arg("PATH");
    let dir = Path::new(&path).parent().unwrap().to_path_buf();
    let before = std::fs::read(&path).unwrap();
    let store: Store = Store::open(&path).unwrap();
    let first = store.update(|s| s["n"] = 2.into());
    common::say(format!("first {}", outcome(&first)));
    if let Err(Error::OutcomeUnknown { generation, .. }) = &first {
        common::say(format!("unknown-generation {generation}"));
    }
    let unchanged = std::fs::read(&path).unwrap() == before;
    common::say(format!("unchanged {unchanged}"));
    common::say(format!(
        "temps {}",
        common::temp_files(&dir, "state.json").len()
    ));
    let second = store.update(|s| s["n"] = 3.into());
    common::say(format!("second {}", outcome(&second)));
    let reopened: Store = Store::open(&path).unwrap();
    let third = reopened.update(|s| s["n"] = 4.into());
    common::say(format!("reopened {}", outcome(&third)));
}

/// Runs the fsync-fault child under `strace` with `strace_args`, on a file at {"n": 1}.
fn run_under_strace(test: &str, strace_args: &[&str]) -> Option<(tempfile::TempDir, Vec<String>)> {
    if let Err(reason) = common::strace_usable() {
        common::skipped(test, &reason);
        return None;
    }
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(json!({"n": 1}))
        .unwrap();
    let mut wrapper = vec!["strace", "-f", "-qq", "-o", "/dev/null"];
    wrapper.extend_from_slice(strace_args);
    let out = ChildCmd::wrapped(&wrapper, "faults::child_fsync_fault", "fsync-fault")
        .arg("PATH", &path)
        .run();
    Some((dir, out))
}

#[test]
fn a_failed_file_fsync_poisons_the_store_and_leaves_the_original() {
    let test = "faults::a_failed_file_fsync_poisons_the_store_and_leaves_the_original";
    // The first fsync of a commit is the temporary file's (step 5 of the protocol).
    let Some((dir, out)) = run_under_strace(test, &["-e", "inject=fsync:error=EIO:when=1"]) else {
        return;
    };
    assert!(
        out[0].starts_with("first io Some(SyncFile) | ") && out[0].contains("fsync"),
        "the injected EIO should fail the temp file's fsync, naming it: {out:?}"
    );
    assert_eq!(out[1], "unchanged true", "{out:?}");
    assert_eq!(out[2], "temps 0", "{out:?}");
    assert!(
        out[3].starts_with("second poisoned "),
        "no refusal after a failed fsync: {out:?}"
    );
    assert_eq!(out[4], "reopened ok", "{out:?}");
    let store: Store = Store::open(dir.path().join("state.json")).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 4}));
    assert_eq!(
        common::temp_files(dir.path(), "state.json"),
        Vec::<String>::new()
    );
}

#[test]
fn a_failed_directory_fsync_is_outcome_unknown() {
    let test = "faults::a_failed_directory_fsync_is_outcome_unknown";
    let Some((_dir, real_dir)) = common::strace_test_dir(test) else {
        return;
    };
    // Fail the first fsync of the state file's directory: the one after the rename.
    let path = real_dir.join("state.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(json!({"n": 1}))
        .unwrap();
    let out = ChildCmd::wrapped(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-P",
            real_dir.to_str().unwrap(),
            "-e",
            "trace=fsync",
            "-e",
            "inject=fsync:error=EIO:when=1",
        ],
        "faults::child_fsync_fault",
        "fsync-fault",
    )
    .arg("PATH", &path)
    .run();
    assert!(
        out[0].starts_with("first outcome_unknown "),
        "a failed directory fsync after the rename must be outcome unknown: {out:?}"
    );
    assert_eq!(out[1], "unknown-generation 2", "{out:?}");
    // The rename happened: the new version is visible.
    assert_eq!(out[2], "unchanged false", "{out:?}");
    assert_eq!(out[3], "temps 0", "{out:?}");
    assert!(out[4].starts_with("second poisoned "), "{out:?}");
    assert_eq!(out[5], "reopened ok", "{out:?}");
    let snap = Store::<serde_json::Value>::open(&path)
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(snap.state, json!({"n": 4}));
    assert_eq!(snap.generation, 3);
}

/// `strace` really injects here: without the fault, the same child succeeds throughout
/// (so the failures above come from the injection, not from the setup).
#[test]
fn the_fsync_fault_child_succeeds_without_a_fault() {
    let test = "faults::the_fsync_fault_child_succeeds_without_a_fault";
    let Some((_dir, out)) = run_under_strace(test, &["-e", "trace=fsync"]) else {
        return;
    };
    assert_eq!(
        out,
        [
            "first ok",
            "unchanged false",
            "temps 0",
            "second ok",
            "reopened ok"
        ]
    );
}

/// FAILURE_MODES.md row 12: where the atomic rename is refused (`EXDEV` when the
/// temporary file and the target are on two filesystems, as with a bind-mounted file
/// or an overlay; `EBUSY` when the target is a mount point or busy in a sandbox), the
/// well-meant fallback of copying into the target (`open(path, O_TRUNC)`, then write)
/// is exactly the non-atomic write statesafe exists to prevent. The commit must fail
/// with a typed error naming the rename, leave the file as it was and no temporary file
/// behind, and never open the state file for writing; the next commit works. The
/// fault is injected with `strace` into the first `renameat` of the child's update
/// (the commit's: the sidecar's `committed` record was written by the first commit,
/// in this process, so the update's rename is its only one).
#[test]
fn a_refused_rename_is_an_error_never_a_copy_into_the_file() {
    let test = "faults::a_refused_rename_is_an_error_never_a_copy_into_the_file";
    for errno in ["EXDEV", "EBUSY"] {
        let Some((_dir, real_dir)) = common::strace_test_dir(test) else {
            return;
        };
        let path = real_dir.join("state.json");
        Store::<serde_json::Value>::open(&path)
            .unwrap()
            .create(json!({"n": 1}))
            .unwrap();
        let trace = real_dir.join("trace.txt");
        let inject = format!("inject=renameat,renameat2,rename:error={errno}:when=1");
        let out = ChildCmd::wrapped(
            &[
                "strace",
                "-f",
                "-qq",
                "-o",
                trace.to_str().unwrap(),
                "-e",
                "trace=openat,open,creat,renameat,renameat2,rename,copy_file_range,sendfile",
                "-e",
                &inject,
            ],
            "faults::child_fsync_fault",
            "fsync-fault",
        )
        .arg("PATH", &path)
        .run();
        assert!(
            out[0].starts_with("first io Some(Rename) | ") && out[0].contains("rename"),
            "{errno}: the refused rename must fail the commit, naming the rename: {out:?}"
        );
        assert_eq!(out[1], "unchanged true", "{errno}: {out:?}");
        assert_eq!(out[2], "temps 0", "{errno}: {out:?}");
        assert_eq!(out[3], "second ok", "{errno}: {out:?}");
        assert_eq!(out[4], "reopened ok", "{errno}: {out:?}");
        let trace = std::fs::read_to_string(&trace).unwrap();
        let injected: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains(errno) && l.contains("INJECTED"))
            .collect();
        assert_eq!(injected.len(), 1, "{errno}: one rename refused: {trace}");
        // Every open of the state file itself (not its temporary files or sidecar)
        // is read-only: nothing was copied into it.
        let written: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("\"state.json\"") || l.contains("/state.json\""))
            .filter(|l| {
                l.contains("open")
                    && (l.contains("O_WRONLY") || l.contains("O_RDWR") || l.contains("O_TRUNC"))
            })
            .collect();
        assert!(
            written.is_empty(),
            "{errno}: the state file was opened for writing: {written:?}"
        );
        let snap = Store::<serde_json::Value>::open(&path)
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(snap.state, json!({"n": 4}), "{errno}");
        assert_eq!(
            snap.generation, 3,
            "{errno}: the refused commit took no generation"
        );
    }
}

/// FAILURE_MODES.md row 12 on the kernel's real path: a state file bind-mounted from
/// another file (a container's single-file volume, `docker run -v host.json:/app/state.json`)
/// cannot be replaced by a rename (`EBUSY` over a mount point, `EXDEV` for a link
/// across it). Every commit must fail with a typed error and change neither the mounted
/// file nor the one underneath, leaving no temporary file: never a copy into the file,
/// which is what a program falling back to `open(path, "w")` would do.
#[test]
fn a_bind_mounted_state_file_is_never_written_in_place() {
    let test = "faults::a_bind_mounted_state_file_is_never_written_in_place";
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let host = dir.path().join("host.json");
    std::fs::write(&path, b"{\"n\": 1}\n").unwrap();
    std::fs::write(&host, b"{\"n\": 100}\n").unwrap();
    let mount = match Mount::bind(&host, &path) {
        Ok(m) => m,
        Err(reason) => return common::skipped(test, &reason),
    };
    for backups in [true, false] {
        let store: Store = if backups {
            Store::open(&path).unwrap()
        } else {
            Store::options()
                .backups(statesafe::BackupPolicy {
                    keep: 0,
                    ..Default::default()
                })
                .open(&path)
                .unwrap()
        };
        let err = store
            .update(|s| s["n"] = 101.into())
            .expect_err("a commit over a bind-mounted file succeeded");
        assert!(
            matches!(err, Error::Io { .. }),
            "backups {backups}: expected a typed I/O error, got {err:?}"
        );
        if !backups {
            // With no backup to link first, the rename itself is refused.
            assert_eq!(op_of(&err), Some(Op::Rename), "{err:?}");
        }
        let text = err.to_string();
        assert!(text.contains("state.json"), "backups {backups}: {text}");
        let hint = err.hint().unwrap_or_default();
        assert!(
            hint.contains("mount point") && hint.contains("Mount the directory"),
            "backups {backups}: the hint does not say what is wrong and what to do: {hint}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"n\": 100}\n");
        assert_eq!(
            common::temp_files(dir.path(), "state.json"),
            Vec::<String>::new(),
            "backups {backups}"
        );
    }
    drop(mount);
    assert_eq!(std::fs::read(&host).unwrap(), b"{\"n\": 100}\n");
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"n\": 1}\n");
}
