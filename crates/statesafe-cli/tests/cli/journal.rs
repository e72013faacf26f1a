//! Journal mode from the command line: `init --format journal`, commits that leave the
//! file a snapshot, reads that replay the journal, and leaving journal mode.

use crate::common::{Env, Run};
use crate::snap;

/// `s.json` made in journal mode with `{"n": 0}`, then `/n` set to 1, 2 and 3.
pub(crate) fn journal_file_with_three_commits() -> Env {
    let env = Env::new();
    let run = env.run(&["init", "s.json", "{\"n\": 0}", "--format", "journal"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    for n in 1..=3 {
        let run = env.run(&["set", "s.json", "/n", &n.to_string()]);
        assert_eq!(run.code, 0, "{}", run.snapshot());
    }
    env
}

#[test]
fn init_set_get_and_leave_journal_mode() {
    let env = journal_file_with_three_commits();
    // The file is the snapshot as of the last compaction; statesafe reads the journal.
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 0\n}\n");
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "3\n", "{}", run.snapshot());
    let info = env.run(&["info", "s.json", "--json"]).json();
    assert_eq!(info["generation"], 4, "{info}");
    assert_eq!(info["format"], "journal", "{info}");
    let run = env.run(&[
        "settings",
        "s.json",
        "--journal-max-bytes",
        "4096",
        "--json",
    ]);
    assert_eq!(
        run.json()["settings"]["journal_max_bytes"],
        4096,
        "{}",
        run.snapshot()
    );
    // Leaving journal mode writes the newest state into the file first.
    let run = env.run(&["settings", "s.json", "--format", "plain"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert_eq!(env.read_string("s.json"), "{\n  \"n\": 3\n}\n");
    assert!(!env.path(".s.json.statesafe/journal").exists());
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "3\n", "{}", run.snapshot());
}

#[test]
fn log_backups_restore_and_diff_reach_the_journals_commits() {
    let env = journal_file_with_three_commits();
    // Every commit is in the log, with its writer (the `set` that made it).
    let log = env.run(&["log", "s.json", "--json"]).json();
    let entries = log["entries"].as_array().unwrap();
    let generations: Vec<u64> = entries
        .iter()
        .map(|e| e["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations, vec![4, 3, 2, 1], "{log}");
    for e in &entries[..3] {
        assert!(
            e["writer"]["command"].as_str().unwrap().contains("set"),
            "{e}"
        );
        assert!(!e["time"].as_str().unwrap().is_empty(), "{e}");
    }
    // The versions the commits replaced are backups, from the journal.
    let backups = env.run(&["backups", "s.json", "--json"]).json();
    let listed: Vec<u64> = backups["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![3, 2, 1], "{backups}");
    let run = env.run(&["diff", "s.json", "2", "4"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(run.stdout.contains("\"value\":3"), "{}", run.snapshot());
    let run = env.run(&["restore", "s.json", "--generation", "2"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "1\n", "{}", run.snapshot());
    let log = env.run(&["log", "s.json"]);
    assert!(
        log.stdout.starts_with("generation 5 ") && log.stdout.contains("restore of generation 2"),
        "{}",
        log.snapshot()
    );
}

/// A journal deleted alone: every read refuses (exit 7, saying what was lost and the
/// way out); `recover --accept-snapshot` takes the snapshot as the current state at a
/// generation past the lost ones; without a loss it changes nothing.
#[test]
fn a_deleted_journal_is_refused_until_the_snapshot_is_accepted() {
    let env = journal_file_with_three_commits();
    let run = env.run(&["recover", "s.json", "--accept-snapshot"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    assert!(
        run.stdout.contains("nothing to accept"),
        "{}",
        run.snapshot()
    );
    std::fs::remove_file(env.path(".s.json.statesafe/journal")).unwrap();
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.code, 7, "{}", run.snapshot());
    // `backups` lists what exists, then reports the refusal as `get` does.
    let backups = env.run(&["backups", "s.json"]);
    assert_eq!(backups.code, 7, "{}", backups.snapshot());
    assert!(
        backups.stderr.contains("was deleted") && backups.stderr.contains("--accept-snapshot"),
        "{}",
        backups.snapshot()
    );
    for part in [
        "was deleted",
        "every commit made after generation 1",
        "statesafe recover",
        "--accept-snapshot",
    ] {
        assert!(run.stderr.contains(part), "`{part}`: {}", run.snapshot());
    }
    // The hint names the way out, not the generic one for a damaged file.
    assert_lost_journal_hint(&run);
    snap!("journal_deleted_refused", run);
    let run = env.run(&["recover", "s.json", "--accept-snapshot", "--json"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let accepted = run.json();
    assert_eq!(accepted["accepted"], true, "{accepted}");
    let generation = accepted["generation"].as_u64().unwrap();
    assert!(generation > 4, "{accepted}");
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "0\n", "{}", run.snapshot());
    let run = env.run(&["set", "s.json", "/n", "7"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let info = env.run(&["info", "s.json", "--json"]).json();
    assert_eq!(info["generation"], generation + 1, "{info}");
}

/// The `hint:` line of a refused lost journal names the exact command that accepts the
/// snapshot (it used to be the generic hint for a file damaged outside statesafe).
fn assert_lost_journal_hint(run: &Run) {
    let hint = run
        .stderr
        .lines()
        .find(|l| l.starts_with("hint:"))
        .unwrap_or_else(|| panic!("no hint: {}", run.snapshot()));
    assert!(
        hint.contains("statesafe recover") && hint.contains("s.json --accept-snapshot"),
        "{}",
        run.snapshot()
    );
    assert!(
        !hint.contains("not written by statesafe"),
        "{}",
        run.snapshot()
    );
}

/// An older copy of the same journal put back (a sidecar restored from yesterday):
/// refused with what happened and the way out, as a deleted journal is; accepting the
/// loss then keeps the newest version the copy still holds (generation 2, `n` = 1:
/// red14; it used to drop it for the bare snapshot).
#[test]
fn an_older_copy_of_the_journal_put_back_is_refused_with_the_way_out() {
    let env = Env::new();
    let run = env.run(&["init", "s.json", "{\"n\": 0}", "--format", "journal"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let run = env.run(&["set", "s.json", "/n", "1"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let older = std::fs::read(env.path(".s.json.statesafe/journal")).unwrap();
    for n in 2..=3 {
        let run = env.run(&["set", "s.json", "/n", &n.to_string()]);
        assert_eq!(run.code, 0, "{}", run.snapshot());
    }
    std::fs::write(env.path(".s.json.statesafe/journal"), &older).unwrap();
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.code, 7, "{}", run.snapshot());
    assert!(run.stderr.contains("older copy"), "{}", run.snapshot());
    assert_lost_journal_hint(&run);
    snap!("journal_older_copy_refused", run);
    let run = env.run(&["recover", "s.json", "--accept-snapshot"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let run = env.run(&["get", "s.json", "/n"]);
    assert_eq!(run.stdout, "1\n", "{}", run.snapshot());
}
