//! Symlinks: a write through a link (relative, absolute, a chain, a linked directory)
//! replaces the file it points to and leaves the link a link; a dangling link creates
//! its target; stores opened through the link and through the real path share one lock.
//! Paths that cannot hold a state file (directories, loops, over-long names) are refused.
//!
//! Defends FAILURE_MODES.md rows 10 (symlink replaced by a regular file) and 3/4 (two
//! paths to one file must not mean two locks, or updates are lost).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use statesafe::{Error, Store};

use crate::common;

/// Writes through `link`, then checks the link is intact and `real` holds the data.
fn write_through(link: &Path, real: &Path, expected_link_text: &Path) {
    let store: Store = Store::open(link).unwrap();
    store
        .update_or_default(|s| s["via"] = "link".into())
        .unwrap();
    let meta = std::fs::symlink_metadata(link).unwrap();
    assert!(
        meta.file_type().is_symlink(),
        "`{}` is no longer a symlink",
        link.display()
    );
    assert_eq!(std::fs::read_link(link).unwrap(), expected_link_text);
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(real).unwrap()).unwrap();
    assert_eq!(on_disk["via"], "link");
    assert!(std::fs::symlink_metadata(real).unwrap().is_file());
    assert_eq!(store.get().unwrap()["via"], "link");
}

#[test]
fn relative_link_is_written_through_and_kept() {
    let dir = common::test_dir();
    let real = dir.path().join("real.json");
    std::fs::write(&real, "{\"old\": true}\n").unwrap();
    let link = dir.path().join("link.json");
    symlink("real.json", &link).unwrap();
    write_through(&link, &real, Path::new("real.json"));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(on_disk, json!({"old": true, "via": "link"}));
    assert!(common::temp_files(dir.path(), "link.json").is_empty());
    assert!(common::temp_files(dir.path(), "real.json").is_empty());
}

#[test]
fn absolute_link_into_another_directory_is_written_through() {
    let dir = common::test_dir();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let real = dir.path().join("data/real.json");
    std::fs::write(&real, "{}\n").unwrap();
    let link = dir.path().join("link.json");
    symlink(&real, &link).unwrap();
    write_through(&link, &real, &real);
    // The temporary file and the sidecar live beside the real file, not the link.
    assert!(dir.path().join("data/.real.json.statesafe").is_dir());
    assert!(!dir.path().join(".link.json.statesafe").exists());
}

#[test]
fn a_chain_of_links_is_followed_to_the_end() {
    let dir = common::test_dir();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let real = dir.path().join("sub/real.json");
    std::fs::write(&real, "{}\n").unwrap();
    // first -> (absolute) middle -> (relative) sub/real.json
    let middle = dir.path().join("middle.json");
    symlink("sub/real.json", &middle).unwrap();
    let first = dir.path().join("first.json");
    symlink(&middle, &first).unwrap();
    write_through(&first, &real, &middle);
    assert!(
        std::fs::symlink_metadata(&middle)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(&middle).unwrap(),
        Path::new("sub/real.json")
    );
}

#[test]
fn a_file_in_a_linked_directory_is_written_in_the_real_directory() {
    let dir = common::test_dir();
    std::fs::create_dir(dir.path().join("realdir")).unwrap();
    symlink("realdir", dir.path().join("linkdir")).unwrap();
    let via_link = dir.path().join("linkdir/state.json");
    let store: Store = Store::open(&via_link).unwrap();
    store.create(json!({"n": 1})).unwrap();
    assert!(
        std::fs::symlink_metadata(dir.path().join("linkdir"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let real = dir.path().join("realdir/state.json");
    assert_eq!(
        std::fs::read_to_string(&real).unwrap().trim_end(),
        "{\n  \"n\": 1\n}"
    );
    let other: Store = Store::open(&real).unwrap();
    assert_eq!(store.lock_path(), other.lock_path());
}

#[test]
fn a_dangling_link_creates_its_target() {
    let dir = common::test_dir();
    let link = dir.path().join("link.json");
    symlink("missing.json", &link).unwrap();
    let store: Store = Store::open(&link).unwrap();
    assert!(matches!(store.load(), Err(Error::NotFound { .. })));
    assert_eq!(store.create(json!({"n": 1})).unwrap(), 1);
    let real = dir.path().join("missing.json");
    assert!(std::fs::symlink_metadata(&real).unwrap().is_file());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(store.get().unwrap(), json!({"n": 1}));
}

#[test]
fn link_and_real_path_share_one_lock() {
    let dir = common::test_dir();
    let real = dir.path().join("real.json");
    let link = dir.path().join("link.json");
    symlink("real.json", &link).unwrap();
    let via_link: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&link)
        .unwrap();
    let via_real: Store = Store::options()
        .lock_timeout(Duration::ZERO)
        .open(&real)
        .unwrap();
    via_real.create(json!({"n": 0})).unwrap();
    assert_eq!(via_link.lock_path(), via_real.lock_path());

    // While one holds a transaction, the other cannot take the lock.
    let tx = via_link.begin().unwrap();
    let err = via_real.update(|s| s["n"] = 9.into()).unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    drop(tx);

    // And concurrent increments through both paths all count.
    std::thread::scope(|s| {
        for path in [&link, &real, &link, &real] {
            s.spawn(move || {
                let store: Store = Store::options()
                    .lock_timeout(Duration::from_secs(60))
                    .durability(statesafe::Durability::None)
                    .open(path)
                    .unwrap();
                for _ in 0..100 {
                    store
                        .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(via_link.get().unwrap(), json!({"n": 400}));
}

#[test]
fn paths_that_cannot_hold_a_state_file_are_refused() {
    let dir = common::test_dir();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    symlink("sub", dir.path().join("to-dir")).unwrap();
    symlink("loop-b", dir.path().join("loop-a")).unwrap();
    symlink("loop-a", dir.path().join("loop-b")).unwrap();
    for (name, why) in [
        ("sub", "a directory"),
        ("to-dir", "a link to a directory"),
        ("missing/state.json", "a missing parent directory"),
        ("loop-a", "a symlink loop"),
    ] {
        let err = Store::<serde_json::Value>::open(dir.path().join(name))
            .and_then(|s| s.create(json!({})))
            .unwrap_err();
        assert!(matches!(err, Error::BadPath { .. }), "{why}: {err:?}");
    }
    assert!(
        std::fs::symlink_metadata(dir.path().join("loop-a"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn names_too_long_for_the_temp_and_sidecar_names_are_refused_up_front() {
    let dir = common::test_dir();
    // 215 bytes leave room for `.NAME.statesafe-tmp-PID-HEX` within NAME_MAX (255).
    let fits = dir.path().join("n".repeat(215));
    let store: Store = Store::open(&fits).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.load().unwrap().generation, 2);

    let too_long = dir.path().join("n".repeat(216));
    let err = Store::<serde_json::Value>::open(&too_long).unwrap_err();
    assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
    assert!(
        err.to_string().contains("215"),
        "the message should name the limit: {err}"
    );
    assert!(!too_long.exists());
}

/// A link another user owns leads only to what that user controls (paths.rs,
/// `check_foreign_links`). As root in a directory of `nobody`'s (a home directory,
/// not a sticky one, where the kernel's rule already applied): `nobody`'s links to a
/// file of root's, to a new file in a directory of root's, and a directory link to
/// one of root's, are refused (`Error::Unsafe`) and nothing of root's is written or
/// created; `nobody`'s link to `nobody`'s own file is followed. Before: root's commit
/// through the first link rewrote root's private file, and the second created one in
/// root's directory (review21rec's note; the threat model claimed this refused).
#[test]
fn another_users_link_never_leads_root_to_its_own_files() {
    use std::os::unix::fs::lchown;
    let test = "symlink::another_users_link_never_leads_root_to_its_own_files";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    let home = dir.path().join("home");
    let roots = dir.path().join("root-only");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&roots).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let secret = roots.join("secret.json");
    std::fs::write(&secret, "{\"root\": 1}\n").unwrap();
    let plant = |name: &str, to: &Path| {
        let link = home.join(name);
        symlink(to, &link).unwrap();
        lchown(&link, Some(65534), Some(65534)).unwrap();
        link
    };
    let to_root_file = plant("state.json", &secret);
    let dangling = plant("new.json", &roots.join("new.json"));
    let dir_link = plant("data", &roots);
    for path in [to_root_file, dangling, dir_link.join("x.json")] {
        // Refused where the path is resolved: at the open.
        let refused = Store::<serde_json::Value>::open(&path)
            .and_then(|store| store.update(|s| s["x"] = 5.into()));
        assert!(
            matches!(refused, Err(Error::Unsafe { .. })),
            "root's update through {path:?} gave {refused:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "{\"root\": 1}\n");
    let mut left: Vec<_> = std::fs::read_dir(&roots)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["secret.json"], "root's directory gained files");
    // nobody's link to nobody's own file: root writes nobody's file, as `echo >` would.
    let own = home.join("own.json");
    std::fs::write(&own, "{}\n").unwrap();
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
    let link = plant("link.json", Path::new("own.json"));
    let store: Store = Store::open(&link).unwrap();
    store.update(|s| s["x"] = 1.into()).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&own).unwrap()).unwrap();
    assert_eq!(back, json!({"x": 1}));
}

/// red22's note: another user's link may lead to a file that user owns in a directory
/// they cannot write (`~a/state.json -> /var/mail/a`, `/etc/app/a.json` chowned to
/// `a`). Following it, root's commit creates its temporary file and the sidecar in that
/// directory, and gives the sidecar to the file's owner: `a` gains a directory of their
/// own where they could create nothing. The link is followed only where its owner may
/// write the directory the file is in (they own it, or its group or everyone may
/// write it); else `Unsafe`, and nothing is created there. A link to a file of the
/// owner's in a directory they may write is still followed.
#[test]
fn another_users_link_to_their_file_in_a_directory_they_cannot_write_is_refused() {
    use std::os::unix::fs::{PermissionsExt, lchown};
    let test =
        "symlink::another_users_link_to_their_file_in_a_directory_they_cannot_write_is_refused";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    // Root's directory, 0755: nobody may not create anything in it; a file of
    // nobody's inside (an admin's chown).
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail = spool.join("nobody.json");
    std::fs::write(&mail, "{\"n\": 1}\n").unwrap();
    std::os::unix::fs::chown(&mail, Some(65534), Some(65534)).unwrap();
    let link = home.join("state.json");
    std::os::unix::fs::symlink(&mail, &link).unwrap();
    lchown(&link, Some(65534), Some(65534)).unwrap();
    let refused = Store::<serde_json::Value>::open(&link)
        .and_then(|store| store.update(|s| s["n"] = 2.into()));
    assert!(
        matches!(refused, Err(Error::Unsafe { .. })),
        "root's update through nobody's link into root's directory gave {refused:?}"
    );
    let mut left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["nobody.json"],
        "root created files in its own directory for nobody"
    );
    assert_eq!(std::fs::read_to_string(&mail).unwrap(), "{\"n\": 1}\n");
    // The same directory writable by nobody's group: nobody could create there, so the
    // link is followed.
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o775)).unwrap();
    std::os::unix::fs::chown(&spool, Some(0), Some(65534)).unwrap();
    let store: Store = Store::open(&link).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(store.get().unwrap(), json!({"n": 2}));
}
