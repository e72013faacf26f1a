//! review21rec: red-team of session 20's recovery and shared-directory code (fix20a's
//! `recover` of a deleted file from the history, fix20b's `write::refuse_planted`,
//! fix20c's `Sidecar::former_perms` and the directory owner's sidecar trusted when
//! there is no file). Each test here fails on main at 8768d4b for the reason its
//! comment gives, and is ignored until fixed (`--run-ignored only` runs them).
//!
//! The tests that need a second user run as root and act through `setpriv`; where they
//! cannot, they print `SKIPPED: …` (see `common::skipped`) and check nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use serde_json::json;
use statesafe::{Error, Store};

use crate::common::{self, ChildCmd};

/// A second ordinary user besides `nobody` (65534): uid and gid 1000, no other group.
/// `setpriv` takes numbers, so the user need not exist in `/etc/passwd`.
const AS_UID_1000: [&str; 5] = [
    "setpriv",
    "--reuid=1000",
    "--regid=1000",
    "--clear-groups",
    "--",
];

/// Runs `script` with `sh -c` under `wrapper` (another user) and checks that it worked.
fn sh_as(wrapper: &[&str], script: &str) {
    let (program, rest) = wrapper.split_first().unwrap();
    let status = Command::new(program)
        .args(rest)
        .args(["sh", "-c", script])
        .status()
        .unwrap();
    assert!(status.success(), "`{script}` as {wrapper:?}: {status}");
}

/// The user's side of the tests below, in role `review21-user` (run under `setpriv` as
/// the victim): `STEP` says what to do with the state file `PATH`.
/// - `make`: create it (`{"balance": 100}`), update it to 90, delete it (a careless
///   `rm`, a tmp cleaner);
/// - `make-shared`: the same, with the file made writable by its group (`chmod 664`)
///   before the update, so that the sidecar follows (shared with the group);
/// - `load`: `load_or_default`, reporting `served DOC generation G` or `error KIND`;
/// - `update`: set `balance` to 90 in a transaction, reporting `committed G` or
///   `error KIND`.
#[test]
fn review21_child_user() {
    if !common::child_role("review21-user") {
        return;
    }
    let path = common::child_arg("PATH");
    let store: Store = match Store::open(&path) {
        Ok(store) => store,
        // Refused at once (a sidecar it may not trust): reported like a refused step.
        Err(e) => return common::say(format!("error {}", e.kind())),
    };
    match common::child_arg("STEP").as_str() {
        step @ ("make" | "make-shared") => {
            store.create(json!({"balance": 100})).unwrap();
            if step == "make-shared" {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
            }
            store.update(|s| s["balance"] = 90.into()).unwrap();
            std::fs::remove_file(&path).unwrap();
            common::say("made");
        }
        "load" => match store.load_or_default() {
            Ok(snap) => common::say(format!(
                "served {} generation {}",
                snap.state, snap.generation
            )),
            Err(e) => common::say(format!("error {}", e.kind())),
        },
        "update" => match store.update(|s| s["balance"] = 90.into()) {
            Ok(()) => common::say(format!("committed {}", store.load().unwrap().generation)),
            Err(e) => common::say(format!("error {}", e.kind())),
        },
        other => panic!("unknown step {other}"),
    }
}

/// Runs one step of [`review21_child_user`] as the user `wrapper` starts.
fn user_step(wrapper: &[&str], step: &str, path: &Path) -> Vec<String> {
    ChildCmd::wrapped(wrapper, "review21::review21_child_user", "review21-user")
        .arg("PATH", path)
        .arg("STEP", step)
        .run()
}

/// Finding 1 (fix20b, `write::refuse_planted`): in a sticky, world-writable directory
/// that is also set-group-ID (`chmod 3777`, group G: a shared drop folder whose files
/// should all belong to the team's group), every new file takes the directory's group,
/// whoever makes it. The victim (`nobody`, in G) keeps a state shared with G
/// (`chmod 664`: its sidecar becomes writable by G). The state file is deleted; uid
/// 1000, who is not in G, plants a file under its name (mode 664, as anyone can). It
/// lands in group G without its planter choosing or being able to choose it, and
/// `refuse_planted` counts "the file's group is the sidecar's, and the group may write
/// the sidecar" as a writer of the state: the victim is served the planted document
/// (`served {"balance":1000000} generation 3`) instead of `Error::Unsafe`.
/// Cause: crates/statesafe/src/write.rs:244-246 trusts `stat.gid()`, which in a
/// set-group-ID directory is the directory's group, not the owner's membership.
#[test]
fn review21_a_file_planted_in_a_sticky_setgid_directory_is_not_served() {
    let test = "review21::review21_a_file_planted_in_a_sticky_setgid_directory_is_not_served";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    // Group G = 65534, the victim's; uid 1000 is not a member.
    std::os::unix::fs::chown(&shared, Some(0), Some(65534)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o3777)).unwrap();
    let path = shared.join("state.json");
    assert_eq!(
        user_step(&common::AS_NOBODY, "make-shared", &path),
        ["made"]
    );
    let sidecar = common::sidecar(&path);
    assert_eq!(
        common::mode(&sidecar) & 0o020,
        0o020,
        "the shared state's sidecar is writable by its group"
    );
    // Uid 1000, not in group 65534, plants a file under the deleted state's name.
    sh_as(
        &AS_UID_1000,
        &format!(
            "printf '{{\"balance\": 1000000}}\\n' > '{p}' && chmod 664 '{p}'",
            p = path.display()
        ),
    );
    let planted = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (planted.uid(), planted.gid()),
        (1000, 65534),
        "the planted file is uid 1000's, in the directory's group"
    );
    let out = user_step(&common::AS_NOBODY, "load", &path);
    assert!(
        out.len() == 1 && out[0].starts_with("error "),
        "the victim was served a file that a user outside its group planted in place of its deleted state: {out:?}"
    );
}

/// Finding 2 (fix20b, `write::refuse_planted`): a sticky directory writable by a group,
/// not by everyone (`chmod 1775`, or a team's `3770`), protects its members' files from
/// each other exactly as `/tmp` does: only a file's owner, the directory's owner or root
/// may delete or rename over it. `refuse_planted` looks only at sticky *world*-writable
/// directories (`folder.mode & 0o1002 != 0o1002` returns early), so once the victim's
/// (`nobody`'s, 0644) state file is deleted, a member of the directory's group (uid
/// 1000) who may only read the state plants a file in its place and the victim is
/// served it (`served {"balance":1000000} generation 3`): review20's finding 11 again,
/// one kind of shared directory over. Cause: crates/statesafe/src/write.rs:235.
#[test]
fn review21_a_file_planted_in_a_sticky_group_writable_directory_is_not_served() {
    let test =
        "review21::review21_a_file_planted_in_a_sticky_group_writable_directory_is_not_served";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    // The team's group is 1000: uid 1000 (primary group 1000) and the victim, nobody,
    // with 1000 as a supplementary group.
    std::os::unix::fs::chown(&shared, Some(0), Some(1000)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1775)).unwrap();
    let victim = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--groups=1000",
        "--",
    ];
    let path = shared.join("state.json");
    assert_eq!(user_step(&victim, "make", &path), ["made"]);
    assert_eq!(
        common::mode(&common::sidecar(&path)) & 0o022,
        0,
        "the sidecar of the victim's 0644 state admits no other writer"
    );
    sh_as(
        &AS_UID_1000,
        &format!(
            "printf '{{\"balance\": 1000000}}\\n' > '{}'",
            path.display()
        ),
    );
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 1000);
    let out = user_step(&victim, "load", &path);
    assert!(
        out.len() == 1 && out[0].starts_with("error "),
        "the victim was served a file another member of the directory's group planted in place of its deleted state: {out:?}"
    );
}

/// Finding 3 (fix20c, root putting back a user's deleted file): root runs `statesafe
/// recover` on a user's file in the user's own directory (the case fix20c made work).
/// The user has moved a root-owned file that lay in a directory of theirs (here
/// `secret`, 0600, as `sudo vim` leaves `~/.viminfo` or `sudo` leaves a build output)
/// into the sidecar's `history/` under any name, and made the lock file's mode one
/// `lock_mode` never gives (0640), so that `Sidecar::enforce` does its full fix-up.
/// After the recover commits, `enforce` gives every regular file in `history/` the
/// sidecar's owner and mode: the root file becomes the user's and readable by all
/// (uid 65534, mode 0644), and the user reads it. The threat model says root cannot
/// "have a root file's mode widened" through a user's planted names; here it is
/// handed over. The same happens
/// at root's ordinary commit of the user's file once its permissions changed (the
/// cause is not specific to recover). Cause: crates/statesafe/src/sidecar.rs:555
/// (`owners` admits root as the owner of the files statesafe writes, so
/// `fix_own_file`'s `Use::Write` check at :753 passes) and :724-725 (every name in
/// `history/` is fixed up, not only segments statesafe made).
#[test]
fn review21_root_recover_never_hands_a_root_file_to_the_user() {
    let test = "review21::review21_root_recover_never_hands_a_root_file_to_the_user";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let path = home.join("state.json");
    assert_eq!(user_step(&common::AS_NOBODY, "make", &path), ["made"]);
    // A root-owned private file in the user's directory.
    let secret = home.join("secret");
    std::fs::write(&secret, "root's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sidecar = common::sidecar(&path);
    // All the user does: two renames' worth of `mv` in their own directory, a chmod.
    sh_as(
        &common::AS_NOBODY,
        &format!(
            "mv '{}' '{}' && chmod 0640 '{}'",
            secret.display(),
            sidecar.join("history/zz").display(),
            sidecar.join("lock").display()
        ),
    );
    let moved = sidecar.join("history/zz");
    assert_eq!(std::fs::metadata(&moved).unwrap().uid(), 0);
    let store: Store = Store::open(&path).unwrap();
    let recovered = store.recover();
    assert!(
        matches!(recovered, Ok(Some(_))),
        "root's recover of the user's deleted file: {recovered:?}"
    );
    assert_eq!(store.load().unwrap().state, json!({"balance": 90}));
    let after = std::fs::metadata(&moved).unwrap();
    assert_eq!(
        after.uid(),
        0,
        "root's recover gave a root-owned file ({} bytes, mode {:o}) to the user (uid {})",
        after.len(),
        after.mode() & 0o7777,
        after.uid()
    );
}

/// Finding 4 (fix20a, `recover` rebuilding a deleted file from the history alone):
/// `provable_from_history` starts from an entry that holds the whole document with a
/// checksum it matches, then hands the chain to `apply_chain`, whose rule is to stop
/// before "an entry without a checksum or a note saying why it has none once an entry
/// of the chain had one (its checksum was removed)". But `apply_chain` starts with
/// `checksummed = false` and never learns that its starting entry was checksummed, so
/// the entry right after it is applied unverified when its checksum is missing. A
/// history edited or damaged in that entry (its patch changed, its checksum gone)
/// makes `recover` write a document that was never committed (`{"n": 999}`), with an
/// event saying generation 2 was put back. Cause: crates/statesafe/src/recover.rs:379
/// (the start's checksum is not passed on) and :437-440. (A backup start is treated
/// the same way, deliberately, for entries older builds wrote without checksums.)
#[test]
fn review21_recover_from_the_history_never_writes_an_unverified_entry() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let sidecar = store.sidecar_path();
    std::fs::remove_dir_all(sidecar.join("backups")).unwrap();
    // Generation 2's entry changed outside statesafe: another value, no checksum.
    let segment = std::fs::read_dir(sidecar.join("history"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("a history segment");
    let text = std::fs::read_to_string(&segment).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
            if entry["generation"] == 2 {
                entry["patch"][0]["value"] = 999.into();
                entry.as_object_mut().unwrap().remove("checksum");
            }
            entry.to_string()
        })
        .collect();
    std::fs::write(&segment, edited.join("\n") + "\n").unwrap();
    let recovered = store.recover();
    let got = store.load().map(|s| s.state);
    assert!(
        !matches!(&got, Ok(doc) if *doc == json!({"n": 999})),
        "recover wrote a document that was never committed: {got:?} (recover said {recovered:?})"
    );
    // Either generation 1 (the chain stops before the unverified entry) or a refusal
    // that writes nothing; never the unverified version.
    assert!(
        matches!(&got, Ok(doc) if *doc == json!({"n": 1}))
            || matches!(&got, Err(Error::Deleted { .. })),
        "{got:?}"
    );
}

/// Finding 5 (fix20a, `recover` of a deleted journal-mode snapshot): a compaction moves
/// the journal's records into the history log before its new snapshot's rename; when
/// the commit then fails (here the snapshot's temporary file cannot be made: the
/// directory was briefly read-only; a full disk or a failed write do the same), the
/// history holds generations 6 to 8 while the snapshot still holds 5 and the journal
/// still follows 5. The next commit appends generation 9 to that journal
/// (acknowledged). The snapshot is then deleted. `recover` finds the newest provable
/// version in the history, generation 8, which is not the one the journal follows
/// (5), so `replay_deleted` applies nothing and `keep_unapplied_journal` moves the
/// journal to the quarantine: the state comes back as generation 8 (`{"n": 8}`), the
/// acknowledged commit 9 rolled back into the quarantine, though its record chains
/// onto generation 8, which recover itself just proved. Cause:
/// crates/statesafe/src/recover.rs:791 (`p.generation != follows`: records past a
/// version the history carried beyond the journal's start are never applied). Run as
/// `nobody` (root ignores a read-only directory's mode).
#[test]
fn review21_journal_recover_applies_records_past_a_failed_compactions_history() {
    let test =
        "review21::review21_journal_recover_applies_records_past_a_failed_compactions_history";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let out = ChildCmd::wrapped(
        &common::AS_NOBODY,
        "review21::review21_child_journal_after_a_failed_compaction",
        "review21-journal",
    )
    .arg("PATH", home.join("state.json"))
    .run();
    assert_eq!(
        out.first().map(String::as_str),
        Some("recovered {\"n\":9}"),
        "recover rolled back acknowledged generation 9: {out:?}"
    );
}

/// The role of [`review21_journal_recover_applies_records_past_a_failed_compactions_history`].
#[test]
fn review21_child_journal_after_a_failed_compaction() {
    if !common::child_role("review21-journal") {
        return;
    }
    let path = std::path::PathBuf::from(common::child_arg("PATH"));
    let home = path.parent().unwrap().to_path_buf();
    let first: Store = Store::open(&path).unwrap();
    first
        .save_settings(&statesafe::Settings {
            format: statesafe::Format::Journal,
            ..Default::default()
        })
        .unwrap();
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(move |s| s["n"] = n.into()).unwrap();
    }
    let mut settings = store.settings();
    settings.journal_max_bytes = Some(1);
    store.save_settings(&settings).unwrap();
    store.update(|s| s["n"] = 5.into()).unwrap();
    settings.journal_max_bytes = Some(1 << 20);
    store.save_settings(&settings).unwrap();
    for n in 6..=8 {
        store.update(move |s| s["n"] = n.into()).unwrap();
    }
    // A compaction that fails after moving the records into the history.
    settings.journal_max_bytes = Some(1);
    store.save_settings(&settings).unwrap();
    let failed = store.update(|s| {
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o555)).unwrap();
        s["n"] = 100.into();
    });
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(failed.is_err(), "the compaction should fail: {failed:?}");
    settings.journal_max_bytes = Some(1 << 20);
    store.save_settings(&settings).unwrap();
    store.update(|s| s["n"] = 9.into()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!((snap.state, snap.generation), (json!({"n": 9}), 9));
    let journal = std::fs::read(store.sidecar_path().join("journal")).unwrap();
    eprintln!(
        "journal after generation 9: {} bytes; history: {:?}",
        journal.len(),
        store
            .history()
            .unwrap()
            .iter()
            .map(|e| e.generation)
            .collect::<Vec<_>>()
    );
    std::fs::remove_file(&path).unwrap();
    let event = store.recover().unwrap().expect("recover says what it did");
    common::say(format!("recovered {}", store.load().unwrap().state));
    common::say(format!("event: {event}"));
}

/// Finding 6 (fix20b, `write::refuse_planted`): a file owned by root is always taken as
/// the state (`owner == 0` returns early), but in a sticky, world-writable directory
/// another user can put a root-owned file under the deleted state's name without
/// root's help: `rename(2)` keeps a file's owner, and a user may move any file out of
/// a directory of their own (same filesystem) into one they may write. Root-owned
/// files with content a user chose are common in users' directories (`sudo tee`,
/// `sudo cp`, `sudo curl -o`, a root job's output). Here root writes
/// `{"balance": 1000000}` into `nobody`'s directory; `nobody` moves it in place of
/// uid 1000's deleted state, and uid 1000 is served it (`served
/// {"balance":1000000} generation 3`). A root-owned file in place of a state whose
/// sidecar is not root's is not one root wrote as that state either: root's
/// `recover` and `replace` give the file the sidecar's owner. Cause:
/// crates/statesafe/src/write.rs:231.
#[test]
fn review21_a_root_owned_file_moved_in_place_of_a_deleted_state_is_not_served() {
    let test =
        "review21::review21_a_root_owned_file_moved_in_place_of_a_deleted_state_is_not_served";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planter_home = dir.path().join("nobody");
    std::fs::create_dir(&planter_home).unwrap();
    std::os::unix::fs::chown(&planter_home, Some(65534), Some(65534)).unwrap();
    let path = shared.join("state.json");
    assert_eq!(user_step(&AS_UID_1000, "make", &path), ["made"]);
    // Root writes a file with content `nobody` chose, in `nobody`'s directory.
    let out = planter_home.join("out.json");
    std::fs::write(&out, "{\"balance\": 1000000}\n").unwrap();
    sh_as(
        &common::AS_NOBODY,
        &format!("mv '{}' '{}'", out.display(), path.display()),
    );
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0);
    let got = user_step(&AS_UID_1000, "load", &path);
    assert!(
        got.len() == 1 && got[0].starts_with("error "),
        "the victim was served a root-owned file another user moved in place of its deleted state: {got:?}"
    );
}

/// Finding 7 (the rule fix20b's finding 1 relies on, in `Sidecar::open`): a sidecar
/// owned by someone else is accepted when "the state file is group-writable and the
/// sidecar is in the file's group" (crates/statesafe/src/sidecar.rs:505), taken to
/// mean that its owner is a member of that group. In a set-group-ID directory every
/// new entry takes the directory's group, whoever makes it. The victim (`nobody`,
/// group 65534) keeps a group-shared state (`chmod 664`) in a sticky, world-writable,
/// set-group-ID directory (`chmod 3777`, group 65534) and has no sidecar there yet (the
/// file was made by another program, or a cleanup removed the sidecar: the threat
/// model's "a cleanup that deletes the sidecar"). Uid 1000, not in group 65534, makes
/// `.state.json.statesafe` (mode 775, group 65534 by inheritance). The victim's next
/// update accepts it and commits (`committed 2`), putting its lock file, backups and
/// history in a folder uid 1000 owns, where uid 1000 may rename, replace or remove any
/// of them (a lock file swapped to split the lock, backups and history forged for the
/// next `recover`). The threat model lists "get a foreign sidecar … accepted for a
/// file they may not write" as refused (`Error::Unsafe`, exit 14).
#[test]
fn review21_a_sidecar_planted_in_a_setgid_directory_is_refused() {
    let test = "review21::review21_a_sidecar_planted_in_a_setgid_directory_is_refused";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(0), Some(65534)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o3777)).unwrap();
    let path = shared.join("state.json");
    sh_as(
        &common::AS_NOBODY,
        &format!(
            "printf '{{\"balance\": 100}}\\n' > '{p}' && chmod 664 '{p}'",
            p = path.display()
        ),
    );
    let sidecar = common::sidecar(&path);
    sh_as(
        &AS_UID_1000,
        &format!("mkdir '{s}' && chmod 775 '{s}'", s = sidecar.display()),
    );
    let planted = std::fs::metadata(&sidecar).unwrap();
    assert_eq!((planted.uid(), planted.gid()), (1000, 65534));
    let got = user_step(&common::AS_NOBODY, "update", &path);
    assert!(
        got.len() == 1 && got[0] == "error unsafe",
        "the victim committed into a sidecar that a user outside its group planted: {got:?} (the sidecar, uid {}, now holds {:?})",
        planted.uid(),
        std::fs::read_dir(&sidecar)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}

/// review21node, finding 11, in Rust: in a sticky, world-writable directory, a state
/// file another user (`nobody`) planted before the state was ever made is refused by
/// root's `update` (the `protected_regular` rule of `LockFile::check_not_planted`,
/// `Error::Unsafe`), but a lock-free read served it (`{"admin": true}` in place of the
/// caller's default): the reader trusted what the writer refuses. Both now refuse it.
#[test]
fn review21_a_file_planted_in_a_sticky_directory_is_not_read_by_root() {
    let test = "review21::review21_a_file_planted_in_a_sticky_directory_is_not_read_by_root";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = shared.join("state.json");
    sh_as(
        &common::AS_NOBODY,
        &format!("printf '{{\"admin\": true}}\\n' > '{}'", path.display()),
    );
    let store: Store = Store::open(&path).unwrap();
    let update = store.update(|s| s["seen"] = true.into());
    assert!(matches!(update, Err(Error::Unsafe { .. })), "{update:?}");
    let read = store.load_or_default();
    assert!(
        matches!(read, Err(Error::Unsafe { .. })),
        "root was served a file another user planted in a sticky directory: {:?}",
        read.map(|s| s.state)
    );
    let read = store.load();
    assert!(
        matches!(read, Err(Error::Unsafe { .. })),
        "{:?}",
        read.map(|s| s.state)
    );
}
