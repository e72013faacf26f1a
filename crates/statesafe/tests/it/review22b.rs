//! red22b: second red team of session 22 (this session's changes: `paths.rs`'s new
//! rule for another user's links, `open_dir_nofollow`, the lock pass, copy, the
//! packages). Each test here fails on main at 94fab82 for the reason its comment gives,
//! and is ignored until fixed (`--run-ignored only` runs them).
//!
//! The tests that need a second user run as root and plant files owned by `nobody`
//! (uid 65534); where they cannot, they print `SKIPPED: …` and check nothing.

use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;

use statesafe::{Error, Store};

use crate::common;

/// Plants `home/name` -> `to`, owned by `nobody` (the attacker's link).
fn plant(home: &Path, name: &str, to: &Path) -> std::path::PathBuf {
    let link = home.join(name);
    symlink(to, &link).unwrap();
    lchown(&link, Some(65534), Some(65534)).unwrap();
    link
}

/// a3c0658 replaced the rule "another user's link is followed only to a file or a
/// directory that user owns" by "only into a directory that user may write" (owner,
/// group or others' write bit). A sticky world-writable directory (`/tmp`, `/var/tmp`,
/// `/dev/shm`) passes that test for everyone, but the sticky bit is exactly what stops
/// `nobody` from replacing or removing root's file there. So `nobody` plants
/// `~nobody/state.json -> /tmp/rootapp.json` (root's 0644 file in a 1777 directory),
/// and root's `update` of `~nobody/state.json` (a cron job tending users' files)
/// rewrites root's own file, which `nobody` could not touch. At 83a2a55 this was
/// refused (`Unsafe`: link owner neither the directory's nor the file's owner).
/// Seen by hand with the CLI as root: `statesafe update home/state.json '.n = 99'`
/// exited 0 and root's `sticky/rootapp.json` became `{"root":"secret","n":99}`.
#[test]
fn review22b_another_users_link_into_a_sticky_directory_never_leads_root_to_its_own_file() {
    let test = "review22b::review22b_another_users_link_into_a_sticky_directory_never_leads_root_to_its_own_file";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let roots = tmp.join("rootapp.json");
    std::fs::write(&roots, "{\"root\": \"secret\", \"n\": 1}\n").unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = plant(&home, "state.json", &roots);
    let result = Store::<serde_json::Value>::open(&link)
        .and_then(|store| store.update(|s| s["n"] = 99.into()));
    let now = std::fs::read_to_string(&roots).unwrap();
    assert!(
        matches!(result, Err(Error::Unsafe { .. })),
        "root's update through nobody's link to root's file in a sticky directory gave {result:?}; root's file now reads {now}"
    );
    assert_eq!(now, "{\"root\": \"secret\", \"n\": 1}\n");
}

/// The same rule asks only for the write bit of the file's own directory, not whether
/// the link's owner can reach it: a world-writable directory inside root's private one
/// (`/root/private` 0700, `/root/private/drop` 0777, as a tool left it) is one `nobody`
/// can never enter, yet `nobody`'s link `~nobody/state.json ->
/// /root/private/drop/app.json` is followed, and root's update rewrites root's file
/// there (which `nobody` could neither read nor replace).
#[test]
fn review22b_another_users_link_into_a_directory_they_cannot_reach_never_leads_root_to_its_own_file()
 {
    let test = "review22b::review22b_another_users_link_into_a_directory_they_cannot_reach_never_leads_root_to_its_own_file";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let drop = private.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o777)).unwrap();
    let roots = drop.join("app.json");
    std::fs::write(&roots, "{\"root\": \"secret\", \"n\": 1}\n").unwrap();
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = plant(&home, "state.json", &roots);
    let result = Store::<serde_json::Value>::open(&link)
        .and_then(|store| store.update(|s| s["n"] = 99.into()));
    let now = std::fs::read_to_string(&roots).unwrap();
    assert!(
        matches!(result, Err(Error::Unsafe { .. })),
        "root's update through nobody's link into root's private directory gave {result:?}; root's file now reads {now}"
    );
    assert_eq!(now, "{\"root\": \"secret\", \"n\": 1}\n");
}

/// The writer's side of `review22b_a_writer_in_the_makers_own_process_...`, in role
/// `review22b-pass-writer`: one `n += 1` on `PATH` under the pass the parent put in
/// its environment; says `ok` or the error's `Debug`.
#[test]
fn review22b_child_pass_writer() {
    if !common::child_role("review22b-pass-writer") {
        return;
    }
    let path = std::path::PathBuf::from(common::child_arg("PATH"));
    let store: Store = Store::open(&path).unwrap();
    match store.update(|s| s["n"] = (s["n"].as_i64().unwrap() + 1).into()) {
        Ok(()) => common::say("ok"),
        Err(e) => common::say(format!("{e:?}")),
    }
}

/// The lock pass (dd7b6b6) tells a dead maker by a POSIX record lock it holds on the
/// pass file, which a writer tests with `F_SETLK F_RDLCK` then `F_UNLCK` (lock.rs,
/// `maker_alive`). POSIX record locks belong to the process, not the descriptor: a
/// writer in the maker's own process (a program that holds `Store::lock`, puts
/// `nested_env()` in its environment for the commands it runs, and writes the file
/// through a second `Store` itself) is granted the test lock, taken for proof that the
/// maker died, and its `F_UNLCK` (and the close of its descriptor) drops the maker's
/// own record. That writer is refused `LockLost { HolderDied }` although its holder is
/// alive, and from then on every writer of the command's is refused too: the maker,
/// alive and holding the lock, looks dead for good.
#[test]
#[allow(unsafe_code)]
fn review22b_a_writer_in_the_makers_own_process_does_not_make_a_live_pass_look_dead() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(serde_json::json!({"n": 0})).unwrap();
    let guard = store.lock("maker").unwrap();
    let (name, value) = guard.nested_env().expect("a local lock makes a pass");
    // SAFETY: set before any other thread of this test reads the environment (the
    // harness runs this test alone in its process under nextest).
    unsafe { std::env::set_var(name, &value) };
    let writer = || {
        common::ChildCmd::new(
            "review22b::review22b_child_pass_writer",
            "review22b-pass-writer",
        )
        .arg("PATH", &path)
        .run()
    };
    assert_eq!(writer(), ["ok"], "the command's writer before");
    let second: Store = Store::open(&path).unwrap();
    let own = second.update(|s| s["n"] = (s["n"].as_i64().unwrap() + 10).into());
    let after = writer();
    drop(guard);
    assert_eq!(
        after,
        ["ok"],
        "the command's writer, after a writer in the maker's own process (which got {own:?}), while the maker still holds the lock"
    );
    assert!(
        !matches!(own, Err(Error::LockLost { .. })),
        "a writer in the live maker's own process was told its holder died: {own:?}"
    );
}
