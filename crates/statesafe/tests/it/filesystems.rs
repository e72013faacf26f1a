//! Filesystems without user extended attributes, and user-space filesystems.
//!
//! Where `user.statesafe` cannot be set (ramfs, FUSE mounts without xattr support,
//! some NFS), the generation and checksum live in `.NAME.statesafe/meta`; these tests
//! run the whole life of a state file there. FAILURE_MODES row 15: a state file on a
//! network or user-space filesystem is reported, not silently trusted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use statesafe::{Event, Store};

use crate::common;

/// A mount made by a command for one test, unmounted (lazily if busy) when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn with(path: &Path, program: &str, args: &[&str]) -> Result<Mounted, String> {
        if !common::is_root() {
            return Err("mounting a filesystem needs root".into());
        }
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new(program)
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mounted(path.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn supports_user_xattr(dir: &Path) -> bool {
    let probe = dir.join("xattr-probe");
    std::fs::write(&probe, "x").unwrap();
    let ok = Command::new("setfattr")
        .args(["-n", "user.probe", "-v", "1"])
        .arg(&probe)
        .status()
        .map(|s| s.success())
        .unwrap_or_else(|_| {
            // No setfattr: ask Python, which every machine here has.
            Command::new("python3")
                .args([
                    "-c",
                    "import os,sys; os.setxattr(sys.argv[1], 'user.probe', b'1')",
                ])
                .arg(&probe)
                .status()
                .is_ok_and(|s| s.success())
        });
    std::fs::remove_file(&probe).unwrap();
    ok
}

/// The whole life of a state file where the metadata record goes to the sidecar.
fn life_without_xattrs(dir: &Path) -> Vec<Event> {
    let path = dir.join("state.json");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let store: Store = Store::options()
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    for n in 1..=5 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(store.load().unwrap().generation, 6);
    let meta: Value = serde_json::from_slice(
        &std::fs::read(store.sidecar_path().join("meta")).expect("the sidecar metadata record"),
    )
    .unwrap();
    assert_eq!(meta["generation"], 6);
    // A fresh store reads the same generation (not an external change).
    let again: Store = Store::open(&path).unwrap();
    assert_eq!(again.load().unwrap().generation, 6);
    // An outside edit is seen as one.
    std::fs::write(&path, "{\"n\": 50}\n").unwrap();
    assert_eq!(store.load().unwrap().generation, 7);
    store.update(|s| s["n"] = 51.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 8);
    // Recovery from damage restores the newest generation it can prove: the backup
    // of the outside edit, and the history's patch after it.
    std::fs::write(&path, "{\"n\": ").unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 51}));
    assert_eq!(snap.generation, 10);
    // History and diff work the same.
    assert_eq!(store.document_at(6).unwrap(), json!({"n": 5}));
    seen.lock().unwrap().clone()
}

#[test]
fn ramfs_has_no_user_xattrs_and_the_sidecar_record_keeps_generations() {
    let dir = common::test_dir();
    let mnt = dir.path().join("ramfs");
    let _m = match Mounted::with(&mnt, "mount", &["-t", "ramfs", "ramfs"]) {
        Ok(m) => m,
        Err(why) => {
            return common::skipped(
                "ramfs_has_no_user_xattrs_and_the_sidecar_record_keeps_generations",
                &why,
            );
        }
    };
    assert!(
        !supports_user_xattr(&mnt),
        "ramfs unexpectedly supports user xattrs: this test would not test the fallback"
    );
    let events = life_without_xattrs(&mnt);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ExternalChange { generation: 7, .. })),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Recovered { .. })),
        "{events:?}"
    );
}

#[test]
fn a_fuse_filesystem_is_reported_and_works_without_xattrs() {
    let dir = common::test_dir();
    let src = dir.path().join("src");
    let mnt = dir.path().join("fuse");
    std::fs::create_dir_all(&src).unwrap();
    let src_arg = src.to_string_lossy().into_owned();
    let _m = match Mounted::with(&mnt, "bindfs", &["--xattr-none", &src_arg]) {
        Ok(m) => m,
        Err(why) => {
            return common::skipped(
                "a_fuse_filesystem_is_reported_and_works_without_xattrs",
                &format!(
                    "{why} (bindfs comes from Debian's bindfs package, which .ci/run installs)"
                ),
            );
        }
    };
    assert!(
        !supports_user_xattr(&mnt),
        "bindfs --xattr-none still stores user xattrs"
    );
    let events = life_without_xattrs(&mnt);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SpecialFilesystem { kind: "fuse", .. })),
        "{events:?}"
    );
}

/// Issue 11: where the record lives in the sidecar's `meta`, a commit whose `meta`
/// write fails (not a crash) used to record its generation in the lock record and the
/// history anyway; readers then counted one past it, so the generation the commit
/// returned was never seen and a compare-and-swap with it conflicted.
#[test]
fn a_failed_sidecar_record_never_makes_generations_skip() {
    let test = "filesystems::a_failed_sidecar_record_never_makes_generations_skip";
    let dir = common::test_dir();
    let mnt = dir.path().join("ramfs");
    let _m = match Mounted::with(&mnt, "mount", &["-t", "ramfs", "ramfs"]) {
        Ok(m) => m,
        Err(why) => return common::skipped(test, &why),
    };
    assert!(!supports_user_xattr(&mnt));
    let path = mnt.join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // The record's temporary name is taken, so writing `meta` fails after the commit.
    let blocker = store
        .sidecar_path()
        .join(format!("meta.tmp-{}", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    let committed = store.replace(json!({"n": 3})).unwrap();
    assert_eq!(
        store.load().unwrap().generation,
        committed,
        "the generation returned is not the one readers see"
    );
    std::fs::remove_dir(&blocker).unwrap();
    let next = store.replace_if(committed, json!({"n": 4})).unwrap();
    assert_eq!(next, committed + 1);
    assert_eq!(store.load().unwrap().generation, next);
    assert_eq!(store.get().unwrap(), json!({"n": 4}));
}
