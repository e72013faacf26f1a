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

/// A ramfs (a filesystem without user extended attributes) mounted for one test in a
/// fresh test directory: unmounted, then the directory removed, when dropped.
struct Ramfs {
    // Fields drop in order: the mount before its directory.
    _mount: Mounted,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A ramfs for `test`, checked to keep no user extended attributes; `None` (the test
/// recorded as skipped, with why) where none can be mounted.
fn ramfs(test: &str) -> Option<Ramfs> {
    let dir = common::test_dir();
    let path = dir.path().join("ramfs");
    let mount = match Mounted::with(&path, "mount", &["-t", "ramfs", "ramfs"]) {
        Ok(m) => m,
        Err(why) => {
            common::skipped(test, &why);
            return None;
        }
    };
    assert!(
        !supports_user_xattr(&path),
        "ramfs unexpectedly supports user xattrs: {test} would not test the fallback"
    );
    Some(Ramfs {
        _mount: mount,
        path,
        _dir: dir,
    })
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
    let Some(ramfs) = ramfs("ramfs_has_no_user_xattrs_and_the_sidecar_record_keeps_generations")
    else {
        return;
    };
    let events = life_without_xattrs(&ramfs.path);
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
    let Some(ramfs) = ramfs(test) else {
        return;
    };
    let mnt = &ramfs.path;
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

/// Issue 16 (del12): journal mode where the filesystem keeps no user extended
/// attributes (ramfs here; tmpfs before Linux 6.6, some FUSE and network
/// filesystems). The snapshot's note that a journal follows it is in the sidecar's
/// `meta`: a journal deleted alone is still refused (the note and the lock file's
/// published ends survive), leaving journal mode clears the note there, and the one
/// loss nothing can detect, the whole sidecar deleted, is named by `check`'s notes
/// (`Store::undetected_deletions`) and shown here as the documented gap.
#[test]
fn journal_mode_without_user_xattrs_refuses_a_deleted_journal_and_names_the_gap() {
    use statesafe::{Error, Format, Settings};
    let test =
        "filesystems::journal_mode_without_user_xattrs_refuses_a_deleted_journal_and_names_the_gap";
    let Some(ramfs) = ramfs(test) else {
        return;
    };
    let mnt = &ramfs.path;
    let journal_mode = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    let path = mnt.join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create_with(&journal_mode, json!({"n": 0})).unwrap();
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let fresh = |path: &Path| {
        let snap = Store::<Value>::open(path).unwrap().load().unwrap();
        (snap.state, snap.generation)
    };
    assert_eq!(fresh(&path), (json!({"n": 3}), 4));
    // The gap is named, with the file and the way around it.
    let notes = Store::<Value>::open(&path)
        .unwrap()
        .undetected_deletions()
        .unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    for part in [
        path.display().to_string(),
        "without user extended attributes".into(),
        "deletes the whole sidecar".into(),
        "without any reader noticing".into(),
    ] {
        assert!(notes[0].contains(&part), "`{part}` missing from {notes:?}");
    }
    // The journal alone deleted: refused, as where attributes are kept.
    let journal = store.sidecar_path().join("journal");
    let kept = std::fs::read(&journal).unwrap();
    std::fs::remove_file(&journal).unwrap();
    for e in [
        Store::<Value>::open(&path)
            .unwrap()
            .load()
            .map(|_| ())
            .unwrap_err(),
        store.update(|s| s["n"] = 9.into()).map(|_| ()).unwrap_err(),
    ] {
        let text = e.to_string();
        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        assert!(
            text.contains("was deleted") && text.contains("--accept-snapshot"),
            "{text}"
        );
    }
    // Put back, nothing was lost.
    std::fs::write(&journal, &kept).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 3}), 4));
    // Deleted again and accepted: the sidecar's record takes the new generation.
    std::fs::remove_file(&journal).unwrap();
    let accepted = Store::<Value>::open(&path)
        .unwrap()
        .accept_snapshot()
        .unwrap()
        .expect("a loss to accept");
    assert!(accepted > 4, "{accepted}");
    assert_eq!(fresh(&path), (json!({"n": 0}), accepted));
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 3}), accepted + 1));
    // Leaving journal mode clears the note in the sidecar's record: the plain file
    // is read as before, with its sidecar and without it.
    store
        .save_settings(&Settings {
            format: Format::Plain,
            ..Settings::default()
        })
        .unwrap();
    assert_eq!(fresh(&path).0, json!({"n": 3}));
    assert!(
        Store::<Value>::open(&path)
            .unwrap()
            .undetected_deletions()
            .unwrap()
            .is_empty()
    );
    std::fs::remove_dir_all(store.sidecar_path()).unwrap();
    assert_eq!(fresh(&path).0, json!({"n": 3}));
    // The documented gap: a journal-mode file whose whole sidecar is deleted is served
    // as its snapshot (generation 1, the commits after it gone), since nothing outside
    // the sidecar says a journal followed it.
    let gap = mnt.join("gap.json");
    let store: Store = Store::open(&gap).unwrap();
    store.create_with(&journal_mode, json!({"n": 0})).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    std::fs::remove_dir_all(store.sidecar_path()).unwrap();
    assert_eq!(fresh(&gap).0, json!({"n": 0}));
}
