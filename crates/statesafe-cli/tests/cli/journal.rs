//! Journal mode from the command line: `init --format journal`, commits that leave the
//! file a snapshot, reads that replay the journal, and leaving journal mode.

use crate::common::Env;

#[test]
fn init_set_get_and_leave_journal_mode() {
    let env = Env::new();
    let run = env.run(&["init", "s.json", "{\"n\": 0}", "--format", "journal"]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    for n in 1..=3 {
        let run = env.run(&["set", "s.json", "/n", &n.to_string()]);
        assert_eq!(run.code, 0, "{}", run.snapshot());
    }
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
