//! Permissions and ownership across a write: an existing file keeps its exact mode
//! (set-id bits included) and, as root, its owner and group; a new file gets 0644 less
//! the umask, or 0600 when private; nothing is ever widened.
//!
//! Defends FAILURE_MODES.md row 9 (file mode or owner changed by a write).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::json;
use statesafe::{Error, Op, Store};

use crate::common::{self, ChildCmd};

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn existing_modes_are_kept_exactly() {
    let dir = common::test_dir();
    let mut modes = vec![0o600, 0o640, 0o604, 0o755, 0o400, 0o660];
    if common::is_root() {
        // Set-id bits on a file we own: only certain to stick for root (an ordinary
        // user's chmod drops setgid when the file's group is not one of theirs).
        modes.extend([0o2755, 0o2640, 0o4750]);
    } else {
        common::skipped(
            "existing_modes_are_kept_exactly (set-id modes)",
            "needs root to set set-id bits reliably",
        );
    }
    for mode in modes {
        let path = dir.path().join(format!("m{mode:o}.json"));
        std::fs::write(&path, "{\"n\": 0}\n").unwrap();
        set_mode(&path, mode);
        let store: Store = Store::open(&path).unwrap();
        store.update(|s| s["n"] = 1.into()).unwrap();
        assert_eq!(
            common::mode(&path),
            mode,
            "mode {mode:o} after the first write"
        );
        store.update(|s| s["n"] = 2.into()).unwrap();
        assert_eq!(
            common::mode(&path),
            mode,
            "mode {mode:o} after the second write"
        );
        // Private does not apply to an existing file either way.
        let private: Store = Store::options().private(true).open(&path).unwrap();
        private.update(|s| s["n"] = 3.into()).unwrap();
        assert_eq!(
            common::mode(&path),
            mode,
            "mode {mode:o} after a private store's write"
        );
        assert_eq!(store.get().unwrap(), json!({"n": 3}));
    }
}

#[test]
fn a_mode_changed_between_writes_is_followed_not_cached() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 0})).unwrap();
    set_mode(&path, 0o600);
    store.update(|s| s["n"] = 1.into()).unwrap();
    assert_eq!(common::mode(&path), 0o600, "a cached wider mode came back");
    set_mode(&path, 0o640);
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(common::mode(&path), 0o640);
}

#[test]
fn a_new_file_gets_0644_less_the_umask() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({})).unwrap();
    assert_eq!(common::mode(&path), 0o644 & !common::umask());
}

#[test]
fn a_new_private_file_gets_0600() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options().private(true).open(&path).unwrap();
    store.create(json!({"secret": 1})).unwrap();
    assert_eq!(common::mode(&path), 0o600);
}

/// Creates a new file under the umask the parent started this child with.
#[test]
fn child_create_under_umask() {
    if !common::child_role("create-under-umask") {
        return;
    }
    let private = common::child_arg("PRIVATE") == "yes";
    let store: Store = Store::options()
        .private(private)
        .open(common::child_arg("PATH"))
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    common::say(format!("umask {:o}", common::umask()));
}

/// New-file modes under umasks other than this process's own (in a child started by
/// `sh -c 'umask U; exec ...'`, since the umask is process-wide).
#[test]
fn new_file_modes_follow_the_umask_and_private_ignores_it() {
    let dir = common::test_dir();
    let cases = [
        // (umask, private, expected mode)
        (0o022, false, 0o644),
        (0o027, false, 0o640),
        (0o077, false, 0o600),
        (0o000, false, 0o644),
        (0o000, true, 0o600),
        (0o027, true, 0o600),
    ];
    for (i, (umask, private, expected)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("new{i}.json"));
        let script = format!("umask {umask:03o} && exec \"$0\" \"$@\"");
        let out = ChildCmd::wrapped(
            &["sh", "-c", &script],
            "perms::child_create_under_umask",
            "create-under-umask",
        )
        .arg("PATH", &path)
        .arg("PRIVATE", if private { "yes" } else { "no" })
        .run();
        assert_eq!(out, [format!("umask {umask:o}")]);
        assert_eq!(
            common::mode(&path),
            expected,
            "new file under umask {umask:03o}, private {private}"
        );
    }
}

#[test]
fn owner_and_group_are_kept_when_root() {
    if !common::is_root() {
        common::skipped("owner_and_group_are_kept_when_root", "needs root to chown");
        return;
    }
    let dir = common::test_dir();
    for (mode, uid, gid) in [
        (0o640, 65534, 65534),
        (0o2750, 65534, 65534),
        (0o600, 0, 65534),
    ] {
        let path = dir.path().join(format!("owned{mode:o}-{uid}.json"));
        std::fs::write(&path, "{\"n\": 0}\n").unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        // After chown, which clears set-id bits.
        set_mode(&path, mode);
        let store: Store = Store::open(&path).unwrap();
        store.update(|s| s["n"] = 1.into()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "owner of a {mode:o} file"
        );
        assert_eq!(
            meta.mode() & 0o7777,
            mode,
            "mode after chown to {uid}:{gid}"
        );
        assert_eq!(store.get().unwrap(), json!({"n": 1}));
    }
}

/// As an ordinary user: tries to write and to read the file, and reports both.
#[test]
fn child_as_ordinary_user() {
    if !common::child_role("ordinary-user") {
        return;
    }
    let store: Store = Store::open(common::child_arg("PATH")).unwrap();
    let outcome = |r: Result<(), Error>| match r {
        Ok(()) => "ok".to_string(),
        Err(Error::PermissionDenied { op, .. }) => format!("denied {op:?}"),
        Err(e) => format!("other {e:?}"),
    };
    common::say(format!(
        "write {}",
        outcome(store.update(|s| s["n"] = 2.into()))
    ));
    common::say(format!("read {}", outcome(store.get().map(drop))));
}

/// Runs the ordinary-user child as `nobody` on `path`.
fn as_nobody(path: &Path) -> Vec<String> {
    ChildCmd::wrapped(
        &common::AS_NOBODY,
        "perms::child_as_ordinary_user",
        "ordinary-user",
    )
    .arg("PATH", path)
    .run()
}

#[test]
fn permission_denied_is_typed_and_changes_nothing() {
    let test = "perms::permission_denied_is_typed_and_changes_nothing";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    // The test directory must be reachable by `nobody`; its contents are root's.
    set_mode(dir.path(), 0o755);
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    let before = std::fs::read(&path).unwrap();

    // Readable but in a directory `nobody` cannot write: no write, reads still work.
    let out = as_nobody(&path);
    assert!(out[0].starts_with("write denied "), "{out:?}");
    assert_eq!(out[1], "read ok", "{out:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        common::temp_files(dir.path(), "state.json"),
        Vec::<String>::new()
    );

    // Private to root: even reading is refused, as permission denied (never NotFound).
    set_mode(&path, 0o600);
    let out = as_nobody(&path);
    assert_eq!(out[1], format!("read denied {:?}", Op::Read), "{out:?}");
    assert!(out[0].starts_with("write denied "), "{out:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(common::mode(&path), 0o600);
}

#[test]
fn root_writing_a_users_file_does_not_lock_the_user_out() {
    let test = "perms::root_writing_a_users_file_does_not_lock_the_user_out";
    if !common::is_root() {
        common::skipped(test, "needs root to act for another user");
        return;
    }
    let dir = common::test_dir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    set_mode(dir.path(), 0o755);
    let path = home.join("state.json");
    std::fs::write(&path, "{\"n\": 0}\n").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    // `sudo statesafe set ...` on the user's file: the first write, made by root.
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    drop(store);
    let out = as_nobody(&path);
    assert_eq!(
        out,
        ["write ok", "read ok"],
        "the owner can no longer write their own file"
    );
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file()
            && String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(needle)
        {
            found.push(path);
        }
    }
    found
}

/// The read access `path` really grants: its own mode, less the classes (group, other)
/// that cannot search every folder between `root` and it.
fn effective_mode(path: &Path, root: &Path) -> u32 {
    let mut mode = common::mode(path);
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        let dmode = common::mode(d);
        if dmode & 0o010 == 0 {
            mode &= !0o070;
        }
        if dmode & 0o001 == 0 {
            mode &= !0o007;
        }
        dir = d.parent();
    }
    mode
}

/// Copies of a document (history, backups, quarantine, anything in the sidecar) never
/// give anyone access the state file itself does not: a 0600 file's history must not be
/// world-readable. Row 9 again, for the files statesafe keeps beside the state.
#[test]
fn no_copy_of_a_private_document_is_more_readable_than_the_file() {
    let dir = common::test_dir();
    for (name, private, chmod) in [
        ("private.json", true, None),
        ("narrowed.json", false, Some(0o600)),
        ("group.json", false, Some(0o640)),
    ] {
        let path = dir.path().join(name);
        let store: Store = Store::options().private(private).open(&path).unwrap();
        store
            .create(json!({"password": format!("{name}-secret-1")}))
            .unwrap();
        if let Some(mode) = chmod {
            set_mode(&path, mode);
        }
        for i in 2..=4 {
            store
                .update(|s| s["password"] = format!("{name}-secret-{i}").into())
                .unwrap();
        }
        let file_mode = common::mode(&path);
        let copies = files_containing(dir.path(), &format!("{name}-secret-"));
        assert!(copies.len() > 1, "{copies:?}");
        for copy in copies {
            let mode = effective_mode(&copy, dir.path());
            assert_eq!(
                mode & !file_mode & 0o777,
                0,
                "`{}` (reachable as {mode:o}) holds the contents of a {file_mode:o} file and is more readable",
                copy.display()
            );
        }
    }
}
