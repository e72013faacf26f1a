//! Red team, session 13: the CLI on a journal-mode state in a sticky, world-writable
//! directory (a `/tmp`), owned by another user. Each test that holds is an attack the
//! code withstands, kept because no other test makes it.

use crate::common::{Env, can_run_as_another_user};
use crate::journal::journal_file_with_three_commits;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The other user (uid and gid) who owns the state.
const OTHER: u32 = 4242;

/// An entry's bytes, mode, owner, link count and change time (seconds, nanoseconds).
type Entry = (Vec<u8>, u32, u32, u64, i64, i64);

/// Every entry under `dir`: its bytes (files), kind, mode, owner, link count and
/// change time: what any write, chmod, chown, link or unlink would change.
fn tree(dir: &Path) -> BTreeMap<String, Entry> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if m.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                stack.push(path.clone());
            }
            found.insert(
                path.strip_prefix(dir).unwrap().display().to_string(),
                (
                    bytes,
                    m.mode(),
                    m.uid(),
                    m.nlink(),
                    m.ctime(),
                    m.ctime_nsec(),
                ),
            );
        }
    }
    found
}

/// Attack (held): another user's journal-mode state in a sticky world-writable
/// directory, its journal deleted by its owner (so every read refuses and
/// `--accept-snapshot` has a loss to accept). Root runs every command on it: the
/// writes (`recover --accept-snapshot`, `recover`, `set`, `restore`, `settings
/// --format plain`, `lock`) are refused (exit 14: root writes only its own files or the
/// directory owner's there, the protected_regular rule), so are the reads of the
/// state (`get`, `check`, `log`, `info`: root reads no other user's file there
/// either, review21node finding 11), and nothing under the directory
/// changes: no byte, mode, owner, link or change time. Then the owner puts the journal
/// back, and root still reads and writes nothing.
#[test]
fn root_on_another_users_journal_state_in_a_sticky_directory_changes_nothing() {
    let test = "red13::root_on_another_users_journal_state_in_a_sticky_directory_changes_nothing";
    if !can_run_as_another_user(test) {
        return;
    }
    let env = Env::new();
    std::fs::set_permissions(env.dir(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let run = env.run_as(
        OTHER,
        &["init", "s.json", "{\"n\": 0}", "--format", "journal"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    for n in 1..=3 {
        let run = env.run_as(OTHER, &["set", "s.json", "/n", &n.to_string()]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let journal = env.path(".s.json.statesafe/journal");
    let kept = std::fs::read(&journal).unwrap();
    let run = env.run_as(OTHER, &["exec", "s.json", "--", "cat"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::remove_file(&journal).unwrap();
    let before = tree(env.dir());
    let writes: [&[&str]; 6] = [
        &["recover", "s.json", "--accept-snapshot"],
        &["recover", "s.json"],
        &["set", "s.json", "/n", "9"],
        &["restore", "s.json", "--generation", "2"],
        &["settings", "s.json", "--format", "plain"],
        &["lock", "s.json", "--", "true"],
    ];
    for args in writes {
        env.run(args).assert_failed(args, 14, "s.json");
    }
    for args in [&["get", "s.json"][..], &["check", "s.json"][..]] {
        env.run(args).assert_failed(args, 14, "s.json");
    }
    // (`backups` lists nothing and exits 0: the versions since the last compaction were
    // in the journal; it serves no state.)
    for args in [
        &["log", "s.json"][..],
        &["info", "s.json"][..],
        &["backups", "s.json"][..],
    ] {
        let run = env.run(args);
        if args[0] != "backups" {
            assert_eq!(
                run.code,
                14,
                "{args:?} served the snapshot: {}",
                run.snapshot()
            );
        }
    }
    assert_eq!(tree(env.dir()), before, "root changed something");
    // The owner puts the journal back: root still reads and writes nothing.
    let run = env.run_as(OTHER, &["exec", "s.json", "--", "cat"]);
    assert_ne!(
        run.code, 0,
        "the owner's commit went through the loss: {}",
        run.stderr
    );
    std::fs::write(&journal, &kept).unwrap();
    std::os::unix::fs::chown(&journal, Some(OTHER), Some(OTHER)).unwrap();
    let before = tree(env.dir());
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (14, ""),
        "{}",
        run.snapshot()
    );
    let run = env.run_as(OTHER, &["get", "s.json", "/n"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "3\n"),
        "its owner reads the newest commit: {}",
        run.snapshot()
    );
    for args in writes {
        let run = env.run(args);
        assert_eq!(run.code, 14, "{args:?}: {}", run.snapshot());
    }
    assert_eq!(tree(env.dir()), before, "root changed something");
}

/// A journal-mode file whose journal was deleted: every command refuses it with a
/// message that names the file, the journal, the lost generations and both ways out.
/// The `hint:` line under it is the generic one for a corrupt file: "the file was not
/// written by statesafe or was damaged outside it; inspect it, fix it by hand or
/// restore a backup". Both halves are wrong here: statesafe wrote the file and it is
/// intact (what is gone is the journal beside it); fixing it by hand or restoring a
/// backup of it does not bring the commits back, and the hint names neither way out
/// the message gives (restore the sidecar, `recover --accept-snapshot`). A reader of
/// the last line (a script's log, a notification) is sent the wrong way.
#[test]
fn a_lost_journals_hint_names_the_ways_out() {
    let env = journal_file_with_three_commits();
    std::fs::remove_file(env.path(".s.json.statesafe/journal")).unwrap();
    for args in [&["get", "s.json"][..], &["set", "s.json", "/n", "4"][..]] {
        let run = env.run(args);
        assert_eq!(run.code, 7, "{}", run.snapshot());
        let hint = run
            .stderr
            .lines()
            .find(|l| l.starts_with("hint:"))
            .unwrap_or_default();
        assert!(
            !hint.contains("not written by statesafe") && hint.contains("accept-snapshot"),
            "{args:?}: {hint}"
        );
    }
}
