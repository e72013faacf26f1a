//! review20: red-team of lost19's "a deleted state file is never served as the
//! default" (`Store::refuse_deleted`, `Error::Deleted`, `recover` putting the newest
//! provable version back). Each test here fails on main at 42982e1 for the reason its
//! comment gives; all were fixed in session 20 (fix20a, fix20b, fix20c) and run as
//! ordinary tests.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{Value, json};
use statesafe::{Error, Format, HistoryPolicy, Settings, Store};

use crate::common::{self, ChildCmd};

/// Finding 1: the most common deletion (`init`, then `rm`) leaves the whole document in
/// the history (generation 1's entry is a full snapshot with its checksum), but
/// `recover` only starts from a backup, and a file replaced only once has none: it
/// answers `Unrecoverable` ("is damaged and could not be recovered; there are no
/// backups", hint "repair the file by hand") right after `Error::Deleted`'s hint sent
/// the user to it. The document is provable and nothing gives it back.
#[test]
fn review20_recover_puts_back_a_single_commit_from_the_history_snapshot() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"precious": 1})).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(store.load().unwrap_err().kind(), "deleted");
    let recovered = store.recover();
    assert!(
        matches!(recovered, Ok(Some(_))),
        "recover could not put back generation 1 though the history holds it whole: {recovered:?}"
    );
    assert_eq!(store.load().unwrap().state, json!({"precious": 1}));
}

/// Finding 1, the same with the backups gone (a cleanup of `backups/`): the history
/// still holds generation 1's snapshot and every patch after it, each with the
/// checksum of the document it produces.
#[test]
fn review20_recover_rebuilds_from_the_history_alone_when_the_backups_are_gone() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_dir_all(store.sidecar_path().join("backups")).unwrap();
    let recovered = store.recover();
    assert!(
        matches!(recovered, Ok(Some(_))),
        "recover gave up though the history rebuilds generation 3: {recovered:?}"
    );
    assert_eq!(store.load().unwrap().state, json!({"n": 3}));
}

/// Finding 2: `history()` (`statesafe log`) of a deleted file reads the history only up
/// to the current generation, 0 for a missing file, and so says there is none ("no
/// history recorded", exit 0) while it holds every commit: the one place a user
/// looks for what was lost shows nothing. (`diff` and `document_at` likewise.)
#[test]
fn review20_history_of_a_deleted_file_still_lists_its_commits() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let generations: Vec<u64> = store
        .history()
        .unwrap()
        .iter()
        .map(|e| e.generation)
        .collect();
    assert_eq!(generations, [1, 2, 3], "the history of a deleted file");
    assert_eq!(store.document_at(3).ok(), Some(json!({"n": 3})));
}

/// A journal-mode store whose generations 1..=5 were compacted into the snapshot,
/// then 6..=8 appended to the journal only.
fn journal_compacted_at_5_then_three_records(path: &Path) -> Store {
    let first: Store = Store::open(path).unwrap();
    first
        .save_settings(&Settings {
            format: Format::Journal,
            ..Default::default()
        })
        .unwrap();
    let store: Store = Store::open(path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(move |s| s["n"] = n.into()).unwrap();
    }
    // One commit that compacts (threshold 1 byte), then records that do not.
    let mut settings = store.settings();
    settings.journal_max_bytes = Some(1);
    store.save_settings(&settings).unwrap();
    store.update(|s| s["n"] = 5.into()).unwrap();
    settings.journal_max_bytes = Some(1 << 20);
    store.save_settings(&settings).unwrap();
    for n in 6..=8 {
        store.update(move |s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(store.load().unwrap().generation, 8);
    store
}

/// Finding 3: journal mode after a compaction. The snapshot (generation 5) is
/// deleted; the journal still holds generations 6 to 8, records that apply to
/// generation 5's document, which `recover` itself proves (backup 1 and the
/// history's patches 2..=5). `recover` ignores the journal: it puts back generation 5,
/// its event says generations 6 to 8 "were neither in a backup nor in the history
/// and are lost", and its commit starts a new journal, destroying those records
/// for good (nothing is quarantined). Three acknowledged commits rolled back by
/// the repair meant to save them.
#[test]
fn review20_journal_recover_after_a_compaction_keeps_the_journals_records() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = journal_compacted_at_5_then_three_records(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(store.load().unwrap_err().kind(), "deleted");
    let event = store.recover().unwrap().expect("recover says what it did");
    let snap = store.load().unwrap();
    assert_eq!(
        snap.state,
        json!({"n": 8}),
        "recover rolled back acknowledged journal commits: {event}"
    );
}

/// Finding 3, the records kept as well as applied: after `recover`, the history lists
/// the journal's commits (moved into the log before the new journal replaced the old
/// one, as a compaction moves them), and the version put back is generation 8's.
#[test]
fn review20_journal_recover_after_a_compaction_keeps_the_records_in_the_history() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = journal_compacted_at_5_then_three_records(&path);
    std::fs::remove_file(&path).unwrap();
    let event = store.recover().unwrap().expect("recover says what it did");
    let text = event.to_string();
    assert!(
        text.contains("the journal's records of generations 6 to 8") && !text.contains("lost"),
        "{text}"
    );
    let generations: Vec<u64> = store
        .history()
        .unwrap()
        .iter()
        .map(|e| e.generation)
        .collect();
    assert_eq!(generations, (1..=9).collect::<Vec<_>>(), "{text}");
    assert_eq!(store.document_at(7).unwrap(), json!({"n": 7}));
    assert_eq!(store.load().unwrap().generation, 9);
}

/// Finding 3 where the journal's records cannot be applied: with the history off, the
/// version they follow (generation 5, compacted, never backed up) is proven by
/// nothing, so `recover` puts back the newest backup (generation 1). Its commit starts
/// a new journal: the old one, the only copy of generations 6 to 8, is kept in the
/// quarantine first (before the fix it was replaced, gone for good, and the event
/// said they "are lost").
#[test]
fn review20_journal_recover_keeps_a_journal_it_cannot_apply_in_the_quarantine() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let no_history = || HistoryPolicy {
        keep: 0,
        ..Default::default()
    };
    let first: Store = Store::open(&path).unwrap();
    first
        .save_settings(&Settings {
            format: Format::Journal,
            history: no_history(),
            ..Default::default()
        })
        .unwrap();
    let store: Store = Store::options().history(no_history()).open(&path).unwrap();
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
    let journal = std::fs::read(store.sidecar_path().join("journal")).unwrap();
    std::fs::remove_file(&path).unwrap();
    let event = store.recover().unwrap().expect("recover says what it did");
    assert_eq!(store.load().unwrap().state, json!({"n": 1}), "{event}");
    let kept: Vec<_> = std::fs::read_dir(store.sidecar_path().join("quarantine"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        kept.iter().any(|p| std::fs::read(p).unwrap() == journal),
        "the journal holding generations 6 to 8 was not kept: {kept:?} ({event})"
    );
}

/// Finding 1 in journal mode before its first compaction (documented as "nothing
/// proves a version"): the history's first entry is generation 1's whole document
/// with its checksum, and the journal's records 2..=4 are changes to exactly that
/// document, each with the checksum of the result. Generation 4 is provable; the
/// tests of lost19 assert `Unrecoverable` here
/// (`deleted::deleted_journal_snapshot_is_refused_by_a_store_with_a_cached_copy`).
#[test]
fn review20_journal_recover_before_a_compaction_uses_the_history_and_the_journal() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let first: Store = Store::open(&path).unwrap();
    first
        .save_settings(&Settings {
            format: Format::Journal,
            ..Default::default()
        })
        .unwrap();
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(move |s| s["n"] = n.into()).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    let recovered = store.recover();
    assert!(
        matches!(recovered, Ok(Some(_))),
        "recover gave up though the history and the journal prove generation 4: {recovered:?}"
    );
    assert_eq!(store.load().unwrap().state, json!({"n": 4}));
}

/// Finding 4, the role of [`review20_a_damaged_file_deleted_under_the_repairs_lock_is_not_served_as_the_default`]:
/// a fresh store's `load_or_default` of the damaged file; reports what it got.
#[test]
fn review20_child_load_or_default() {
    if !common::child_role("review20-load-or-default") {
        return;
    }
    let path = common::child_arg("PATH");
    std::fs::write(common::child_arg("PIDFILE"), std::process::id().to_string()).unwrap();
    let store: Store = Store::open(&path).unwrap();
    match store.load_or_default() {
        Ok(snap) => common::say(format!(
            "served {} generation {}",
            snap.state, snap.generation
        )),
        Err(e) => common::say(format!("error {}", e.kind())),
    }
}

/// Finding 4: the file is found damaged by a read (here an empty file in its place,
/// the classic power-loss damage), and deleted before the repair reads it again under
/// the writers' lock. `recover_on_load` (and `journal_repair_on_load`, journal.rs)
/// then return `Error::NotFound` without asking `refuse_deleted`, and
/// `load_or_default` (Python's and Node's `default` the same way) serves the default
/// at generation 0 for a file with 3 committed generations; the CLI's `get` says
/// "does not exist" (exit 3, "create it first with `statesafe init`"), not exit 16.
#[test]
fn review20_a_damaged_file_deleted_under_the_repairs_lock_is_not_served_as_the_default() {
    let test = "review20::review20_a_damaged_file_deleted_under_the_repairs_lock_is_not_served_as_the_default";
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    drop(store);
    std::fs::write(&path, b"").unwrap();
    deleted_under_the_repairs_lock(test, dir.path(), &path);
}

/// Finding 4 in journal mode (`journal_repair_on_load`): a journal found damaged by a
/// read (a bad record before good ones), and the snapshot deleted before the repair
/// reads it again under the writers' lock. Before the fix: "served null generation 0"
/// (by reading the code, the same `NotFound` as the plain file's).
#[test]
fn review20_a_damaged_journal_whose_snapshot_is_deleted_under_the_repairs_lock_is_not_served_as_the_default()
 {
    let test = "review20::review20_a_damaged_journal_whose_snapshot_is_deleted_under_the_repairs_lock_is_not_served_as_the_default";
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = crate::journal::create_journal(&path, json!({"n": 0}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    drop(store);
    crate::journal::damage_first_record(&path);
    deleted_under_the_repairs_lock(test, dir.path(), &path);
}

/// Runs [`review20_child_load_or_default`] on the damaged `path` and removes the file
/// while the child holds the repair's lock; the child must answer `Deleted`.
///
/// Made deterministic with strace: the child is stopped (SIGSTOP injected) right
/// after its first `flock`, the repair's writers' lock; the file is removed; the child
/// continued.
fn deleted_under_the_repairs_lock(test: &str, dir: &Path, path: &Path) {
    if let Err(reason) = common::strace_usable() {
        common::skipped(test, &reason);
        return;
    }
    let pidfile = dir.join("child.pid");
    let mut child = ChildCmd::wrapped(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=flock",
            "-e",
            "inject=flock:signal=SIGSTOP:when=1",
        ],
        "review20::review20_child_load_or_default",
        "review20-load-or-default",
    )
    .arg("PATH", path)
    .arg("PIDFILE", &pidfile)
    .spawn();
    // Until the child is stopped in its first flock (or has ended: then it never
    // stopped, and what it reported is checked below).
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = text.trim().parse::<u32>()
        {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => {
                    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
                    if matches!(state, Some('T' | 't')) {
                        break Some(pid);
                    }
                }
                Err(_) => break None,
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let pid = pid.expect("the child ended without stopping at its flock");
    std::fs::remove_file(path).unwrap();
    let cont = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(cont.success());
    let out = child.read_all();
    child.wait();
    assert_eq!(
        out,
        ["error deleted"],
        "a state file with 3 committed generations, deleted under the repair's lock"
    );
}

/// Finding 5: with the history off (`keep: 0`) the lock record's last generation is the
/// only evidence a file was committed (until its first replacement makes a backup,
/// or for ever with `keep_backups: 0`). A refused transaction leaves the record it
/// wrote at the lock naming its temporary file (it never committed, so it never
/// cleared it), and the next holder takes such a record for one left by a killed
/// writer and zeroes its generation (`lock.rs`, review17's rule): so the second
/// attempt of the very same call is let through and commits the default at
/// generation 1 in place of the deleted state (generations repeat as well). A
/// retry loop, a service restart, a user pressing up-arrow and Enter: the refusal
/// erases its own evidence.
#[test]
fn review20_a_refused_update_does_not_let_the_retry_start_from_the_default() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .history(HistoryPolicy {
            keep: 0,
            ..Default::default()
        })
        .open(&path)
        .unwrap();
    // One commit: nothing replaced, so no backup yet either (`keep_backups 0` does
    // the same for any number of commits).
    store.create(json!({"n": 1})).unwrap();
    drop(store);
    std::fs::remove_file(&path).unwrap();
    // Each attempt a store of its own, as each run of a program or a command has.
    let attempt = || {
        Store::<Value>::options()
            .history(HistoryPolicy {
                keep: 0,
                ..Default::default()
            })
            .open(&path)
            .unwrap()
            .update_or_default(|s: &mut Value| s["fresh"] = true.into())
    };
    assert_eq!(
        attempt().unwrap_err().kind(),
        "deleted",
        "the first attempt"
    );
    let second = attempt();
    assert!(
        matches!(&second, Err(Error::Deleted { .. })),
        "the retry was let through: {second:?}, the file now holds {:?}",
        std::fs::read_to_string(&path)
    );
}

/// Finding 5 through the way out the hint names: `recover` of that file (backups
/// kept, but a file replaced once has none) says `NotFound` ("create it first"), and
/// from then on the default is served.
#[test]
fn review20_recover_that_cannot_prove_a_version_leaves_the_file_deleted() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .history(HistoryPolicy {
            keep: 0,
            ..Default::default()
        })
        .open(&path)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(store.load().unwrap_err().kind(), "deleted");
    // A refused update first (as the user tried before reading the hint).
    assert_eq!(
        store.update(|s| s["n"] = 2.into()).unwrap_err().kind(),
        "deleted"
    );
    let recovered = store.recover();
    assert!(
        !matches!(recovered, Err(Error::NotFound { .. })),
        "recover of a deleted file said it was never created: {recovered:?}"
    );
    let after = store.load_or_default();
    assert!(
        matches!(&after, Err(Error::Deleted { .. })),
        "the default is served after recover: {after:?}"
    );
}

/// Finding 6: `recover` of a deleted private (0600) file writes it back as a new file
/// with the default mode (0644 less the umask), and the sidecar follows the file's
/// mode: its folders become 0755 and the history segment (generation 1's whole
/// document and every change) 0644. The secret in the state is then readable by
/// every local user, through the file and through the history. The old mode is in
/// plain sight: the sidecar (0700) and the backups (0600).
#[test]
fn review20_recover_keeps_a_private_file_private() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"token": "hunter2"})).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    let sidecar = store.sidecar_path();
    assert_eq!(
        common::mode(&sidecar) & 0o077,
        0,
        "a private file's sidecar"
    );
    std::fs::remove_file(&path).unwrap();
    store.recover().unwrap().expect("recovered");
    assert_eq!(store.load().unwrap().state["token"], "hunter2");
    let segments: Vec<_> = std::fs::read_dir(sidecar.join("history"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut opened = vec![(path.clone(), common::mode(&path))];
    opened.push((sidecar.clone(), common::mode(&sidecar)));
    opened.extend(segments.iter().map(|s| (s.clone(), common::mode(s))));
    assert!(
        opened.iter().all(|(_, mode)| mode & 0o077 == 0),
        "a private state came back readable by others: {opened:?}"
    );
}

/// Finding 7: root (`sudo statesafe recover FILE`, a cron job, an admin) cannot put back
/// a user's deleted file in that user's own directory: with the file gone, the
/// sidecar, which belongs to the user (who also owns the directory), is refused as
/// `Unsafe` ("it belongs to nobody (uid 65534), who is not you, and there is no state
/// file yet"), whose hint says to remove it "if it is not yours", which discards the
/// only copies. `load` says `Unsafe` too, not `Deleted`. The same refusal meets a
/// co-writer of a group-writable file whose sidecar another member made.
#[test]
fn review20_root_recovers_a_users_deleted_file_for_the_user() {
    let test = "review20::review20_root_recovers_a_users_deleted_file_for_the_user";
    if !common::is_root() {
        common::skipped(test, "needs root to act for another user");
        return;
    }
    let dir = common::test_dir();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = home.join("state.json");
    std::fs::write(&path, "{\"n\": 0}\n").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(
        std::fs::metadata(store.sidecar_path()).unwrap().uid(),
        65534,
        "the sidecar is the user's"
    );
    std::fs::remove_file(&path).unwrap();
    let load = store.load();
    assert!(
        matches!(&load, Err(Error::Deleted { .. })),
        "load of the user's deleted file: {load:?}"
    );
    let recovered = store.recover();
    assert!(
        matches!(recovered, Ok(Some(_))),
        "root could not put the user's file back: {recovered:?}"
    );
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), 65534);
}

/// Finding 8: when nothing proves a version (backups and history cleaned away, the
/// lock record still counting 2 generations), `recover` answers as for a damaged
/// file: "state file `…` is damaged and could not be recovered; there are no backups",
/// hint "repair the file by hand, or start afresh deliberately". There is no file to
/// repair; the way out (`replace`, `init --force`, removing the sidecar) is not named.
#[test]
fn review20_recover_that_proves_nothing_says_deleted_and_what_to_do() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_dir_all(store.sidecar_path().join("backups")).unwrap();
    std::fs::remove_dir_all(store.sidecar_path().join("history")).unwrap();
    let e = store.recover().unwrap_err();
    let text = e.to_string();
    let hint = e.hint().unwrap_or_default();
    assert!(
        !text.contains("is damaged") && !hint.contains("repair the file by hand"),
        "the answer speaks of a damaged file to repair: {text} / hint: {hint}"
    );
    assert!(
        hint.contains("--force") || hint.contains("replace"),
        "the way to start over is not named: {hint}"
    );
}

/// Finding 6, through the documented way to start over: `replace` (`statesafe init
/// FILE DOC --force`) after a private file was deleted writes a new file with the
/// default mode, and the old life's history, which lost19 keeps on purpose ("the old
/// generations' backups and history stay"), is widened with it: the deleted state's
/// secrets become readable by every local user.
#[test]
fn review20_starting_over_keeps_the_old_history_private() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"token": "hunter2"})).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    store.replace(json!({"fresh": true})).unwrap();
    let sidecar = store.sidecar_path();
    let readable: Vec<_> = std::fs::read_dir(sidecar.join("history"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([sidecar.clone(), sidecar.join("history")])
        .filter(|p| common::mode(p) & 0o077 != 0 && common::mode(p) & 0o004 != 0)
        .map(|p| (p.clone(), common::mode(&p)))
        .collect();
    assert!(
        readable.is_empty(),
        "the deleted private state's history is readable by others: {readable:?}"
    );
}

/// Finding 9: `Store::check()` (Python's `store.check()`, Node's) of a deleted file
/// reports it sound: `is_ok()` true, no problem listed, `exists: false`, exactly as for
/// a file never created. Only the CLI's `check` turns it into `Deleted` (exit 16); a
/// health check written against the library (the report's `ok`) never notices that
/// the state is gone while every read fails.
#[test]
fn review20_check_reports_a_deleted_file_as_a_problem() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(store.load().unwrap_err().kind(), "deleted");
    let report = store.check();
    assert!(
        !matches!(&report, Ok(r) if r.is_ok()),
        "check() says a deleted state is sound: {:?}",
        report.map(|r| (r.is_ok(), r.exists, r.problems))
    );
    let report = report.unwrap();
    assert!(!report.exists);
    assert!(
        report.problems.iter().any(|p| p.contains("was deleted")),
        "{:?}",
        report.problems
    );
    // A file never created is no problem.
    let fresh: Store = Store::open(dir.path().join("never.json")).unwrap();
    let report = fresh.check().unwrap();
    assert!(report.is_ok() && !report.exists, "{:?}", report.problems);
}

/// Finding 10: the state file replaced by a symbolic link to a file that does not
/// exist (`ln -sf`, a dotfile manager, a sync tool that links into a repository).
/// `Store::open` follows the link to the missing target and looks only at the
/// target's sidecar, which has never seen a commit: the default is served and the
/// first update starts a new life there, while the path's own sidecar beside the link
/// still shows generation 2 committed. The CLI's `get` says "does not exist … create it
/// first with `statesafe init`" (exit 3).
#[test]
fn review20_a_state_file_replaced_by_a_dangling_symlink_is_not_served_as_the_default() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    drop(store);
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("elsewhere.json", &path).unwrap();
    let store: Store = Store::open(&path).unwrap();
    let got = store.load_or_default();
    assert!(
        got.is_err(),
        "the default was served at a path whose sidecar shows generation 2: {:?}",
        got.map(|s| (s.state, s.generation))
    );
    let update = store.update_or_default(|s| s["fresh"] = true.into());
    assert!(
        update.is_err(),
        "an update started a new state at the link's target: {update:?}"
    );
    assert!(
        !dir.path().join("elsewhere.json").exists(),
        "something was written at the link's target"
    );
    // Removing the link gives the state back to `recover`, as the refusal says.
    let text = got.unwrap_err().to_string();
    assert!(text.contains("recover"), "{text}");
    std::fs::remove_file(&path).unwrap();
    let store: Store = Store::open(&path).unwrap();
    store.recover().unwrap().expect("recovered");
    assert_eq!(store.load().unwrap().state, json!({"n": 2}));
}

/// Finding 11, the role of
/// [`review20_a_file_planted_in_place_of_a_deleted_state_is_not_served`], run as
/// `nobody`: commits two generations, deletes the file (a careless `rm`, a tmp
/// cleaner), waits for the parent to plant its file, then reads.
#[test]
fn review20_child_victim_in_a_sticky_directory() {
    if !common::child_role("review20-victim") {
        return;
    }
    let path = common::child_arg("PATH");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"balance": 100})).unwrap();
    store.update(|s| s["balance"] = 90.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    common::say("deleted");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest).unwrap();
    match store.load_or_default() {
        Ok(snap) => common::say(format!(
            "served {} generation {}",
            snap.state, snap.generation
        )),
        Err(e) => common::say(format!("error {}", e.kind())),
    }
}

/// Finding 11: in a sticky world-writable directory (`/tmp`, a shared drop folder), once
/// the victim's state file is deleted (by the victim, or by a tmp cleaner such as
/// systemd-tmpfiles, which ages files out), another user plants a regular file under
/// its name. The victim's sidecar shows generations 1 and 2 committed; the planted file
/// belongs to another user and carries no statesafe metadata. Yet every read serves it
/// as the state (exit 0 from `statesafe get`, no event the CLI shows), while `recover`
/// and every write are refused (permission denied: the victim may not write it).
/// lost19 taught the reads that a missing file with committed generations is
/// `Deleted`; a foreign file in its place, which the victim's writers could never
/// have produced, is served without a word. (In a sticky directory root already
/// refuses to write such a file: `security::root_never_writes_into_a_file_another_user_planted_in_a_sticky_directory`.)
#[test]
fn review20_a_file_planted_in_place_of_a_deleted_state_is_not_served() {
    let test = "review20::review20_a_file_planted_in_place_of_a_deleted_state_is_not_served";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = shared.join("state.json");
    let mut victim = ChildCmd::wrapped(
        &common::AS_NOBODY,
        "review20::review20_child_victim_in_a_sticky_directory",
        "review20-victim",
    )
    .arg("PATH", &path)
    .piped_stdin()
    .spawn();
    victim.wait_for("deleted");
    // Another user (uid 1000 here; root only makes the file and gives it away).
    std::fs::write(&path, "{\"balance\": 1000000}\n").unwrap();
    std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
    victim.close_stdin();
    let out = victim.read_all();
    victim.wait();
    assert!(
        out.len() == 1 && out[0].starts_with("error "),
        "the victim was served another user's file in place of its deleted state: {out:?}"
    );
}
