//! `statesafe torture`: what it refuses, and that it leaves nothing behind.

use crate::common::Env;
use crate::snap;

/// Issue 12 item 10: a missing DIR is refused with a hint, and not created.
#[test]
fn missing_directory_is_refused_not_created() {
    let env = Env::new();
    snap!(
        "torture_missing_dir",
        env.run(&["torture", "no/such/dir", "--duration", "1s"])
    );
    assert!(!env.path("no").exists());
    env.write("plain-file", "");
    let run = env.run(&["torture", "plain-file", "--duration", "1s"]);
    assert_eq!(run.code, 1, "{}", run.snapshot());
    assert!(
        run.stderr.contains("is not a directory"),
        "{}",
        run.snapshot()
    );
}

/// Issue 12 item 10: a zero duration is a usage error, not a run that tests nothing.
#[test]
fn zero_duration_is_a_usage_error() {
    let env = Env::new();
    snap!(
        "torture_zero_duration",
        env.run(&["torture", ".", "--duration", "0s"])
    );
    assert_eq!(std::fs::read_dir(env.dir()).unwrap().count(), 0);
}

/// Issue 12 item 10: a run in DIR (or in the current directory) removes everything it
/// made, and leaves what DIR held alone; `--keep` keeps the run's files and says where.
#[test]
fn runs_leave_nothing_behind_unless_kept() {
    let env = Env::new();
    std::fs::create_dir(env.path("scratch")).unwrap();
    env.write("scratch/mine.txt", "not the torture's");
    let quick = [
        "--duration",
        "1s",
        "--writers",
        "1",
        "--readers",
        "1",
        "--doc-size",
        "4KiB",
    ];
    let entries = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(env.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };

    let mut args = vec!["torture", "scratch"];
    args.extend(quick);
    let run = env.run(&args);
    assert!(run.stdout.contains("FAILURES"), "{}", run.snapshot());
    assert_eq!(entries("scratch"), ["mine.txt"], "{}", run.snapshot());

    // No DIR: the current directory, cleaned up the same way.
    let mut args = vec!["torture"];
    args.extend(quick);
    let run = env.run_in("scratch", &args);
    assert!(run.stdout.contains("FAILURES"), "{}", run.snapshot());
    assert_eq!(entries("scratch"), ["mine.txt"], "{}", run.snapshot());

    let mut args = vec!["torture", "scratch", "--keep"];
    args.extend(quick);
    let run = env.run(&args);
    let names = entries("scratch");
    assert_eq!(names.len(), 2, "{names:?}");
    let kept = names.iter().find(|n| *n != "mine.txt").unwrap();
    assert!(run.stderr.contains(kept.as_str()), "{}", run.snapshot());
    let inside = entries(&format!("scratch/{kept}"));
    assert_eq!(inside, ["naive", "statesafe"]);
}

/// Issue 16: `--format journal` runs the same demonstration on a journal-mode file
/// (each commit one appended record and one flush), with the same report and verdict:
/// writers killed, every acknowledged update kept, no torn read through statesafe, and
/// the journal really in use.
#[test]
fn journal_format_runs_the_demonstration() {
    let env = Env::new();
    std::fs::create_dir(env.path("scratch")).unwrap();
    let run = env.run(&[
        "--json",
        "torture",
        "scratch",
        "--format",
        "journal",
        "--duration",
        "2s",
        "--writers",
        "2",
        "--readers",
        "1",
        "--doc-size",
        "4KiB",
        "--keep",
    ]);
    assert_eq!(run.code, 0, "{}", run.snapshot());
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(report["format"], "journal", "{report}");
    let safe = &report["statesafe"];
    assert!(safe["kills"].as_u64().unwrap() > 0, "{report}");
    assert!(safe["acks"].as_u64().unwrap() > 0, "{report}");
    assert!(safe["reads"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(safe["failures"], 0, "{report}");
    // The commits went to the journal: the snapshot alone is behind the counter.
    let dir = std::path::Path::new(report["dir"].as_str().unwrap()).join("statesafe");
    let journal = dir.join(".state.json.statesafe").join("journal");
    assert!(journal.is_file(), "{}", journal.display());
    let settings =
        std::fs::read_to_string(dir.join(".state.json.statesafe/settings.json")).unwrap();
    assert!(settings.contains("journal"), "{settings}");
}
