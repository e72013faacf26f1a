//! Durability levels, seen through the system calls a commit makes (`strace -y`):
//! `Durability::Full` fsyncs the temporary file before the rename and the directory
//! after it; `Durability::None` makes no sync call at all but still replaces by rename,
//! so concurrent readers only ever see whole versions.
//!
//! Defends FAILURE_MODES.md rows 1 and 2 (the two fsyncs, in the right places), 16
//! (an explicit, still-atomic opt-out) and 7 (a write never goes into the file in place).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use statesafe::{Durability, Store};

use crate::common::{self, ChildCmd};
use crate::kill::Doc;

const COMMITS: u64 = 3;

/// Commits a few versions with the durability the parent asks for.
#[test]
fn child_commit_a_few() {
    if !common::child_role("commit-a-few") {
        return;
    }
    let durability = match common::child_arg("DURABILITY").as_str() {
        "full" => Durability::Full,
        _ => Durability::None,
    };
    let store: Store = Store::options()
        .durability(durability)
        .open(common::child_arg("PATH"))
        .unwrap();
    for n in 1..=COMMITS {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    common::say("done");
}

/// What the trace shows of one commit.
#[derive(Debug, PartialEq)]
enum Event {
    /// A sync call on the file or directory at this path.
    Sync(String),
    /// A rename from one name to another.
    Rename { from: String, to: String },
    /// A file created with `openat(.., O_CREAT ..)`, and its open flags.
    Create { name: String, flags: String },
}

/// Runs the child under `strace -y` and returns the sync and rename calls it made, or
/// `None` (after printing why) when strace cannot run here.
fn trace_commits(test: &str, durability: &str) -> Option<(PathBuf, Vec<Event>)> {
    let (dir, real_dir) = common::strace_test_dir(test)?;
    let path = real_dir.join("state.json");
    Store::<serde_json::Value>::open(&path)
        .unwrap()
        .create(serde_json::json!({"n": 0}))
        .unwrap();
    let log = real_dir.join("strace.log");
    let out = ChildCmd::traced(
        &log,
        "fsync,fdatasync,syncfs,sync,sync_file_range,msync,rename,renameat,renameat2,openat",
        "durability::child_commit_a_few",
        "commit-a-few",
    )
    .arg("PATH", &path)
    .arg("DURABILITY", durability)
    .run();
    assert_eq!(out, ["done"]);
    let text = std::fs::read_to_string(&log).unwrap();
    let events = text.lines().filter_map(parse_event).collect();
    // Keep the directory alive until the trace is read.
    drop(dir);
    Some((real_dir, events))
}

/// Parses one strace line such as `123 fsync(3</d/.state.json.statesafe-tmp-1-ab>) = 0`
/// or `123 renameat(4</d>, ".state.json.statesafe-tmp-1-ab", 4</d>, "state.json") = 0`.
fn parse_event(line: &str) -> Option<Event> {
    let call_start = line.find(|c: char| c.is_ascii_alphabetic())?;
    let call = &line[call_start..];
    let name = &call[..call.find('(')?];
    let args = &call[name.len() + 1..];
    if name.contains("sync") {
        let path = &args[args.find('<')? + 1..args.find('>')?];
        return Some(Event::Sync(path.to_string()));
    }
    if name == "openat" {
        let quoted: Vec<&str> = args.split('"').collect();
        let (name, rest) = (quoted.get(1)?, quoted.get(2)?);
        let flags = rest.trim_start_matches(", ").split(',').next()?;
        return flags.contains("O_CREAT").then(|| Event::Create {
            name: name.to_string(),
            flags: flags.to_string(),
        });
    }
    if name.starts_with("rename") {
        let quoted: Vec<&str> = args.split('"').skip(1).step_by(2).collect();
        if let [from, to, ..] = quoted.as_slice() {
            return Some(Event::Rename {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
    }
    None
}

fn name_of(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
}

#[test]
fn full_durability_syncs_the_file_before_the_rename_and_the_directory_after() {
    let test =
        "durability::full_durability_syncs_the_file_before_the_rename_and_the_directory_after";
    let Some((dir, events)) = trace_commits(test, "full") else {
        return;
    };
    let dir = dir.to_str().unwrap();
    let commits: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Rename { to, .. } if to == "state.json"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        commits.len() as u64,
        COMMITS,
        "one rename per commit: {events:?}"
    );
    for i in commits {
        let Event::Rename { from, .. } = &events[i] else {
            unreachable!()
        };
        assert!(from.starts_with(".state.json.statesafe-tmp-"), "{events:?}");
        let before = i.checked_sub(1).map(|j| &events[j]);
        assert!(
            matches!(before, Some(Event::Sync(p)) if name_of(p) == from),
            "the temporary file `{from}` must be fsynced just before its rename: {events:?}"
        );
        assert!(
            matches!(events.get(i + 1), Some(Event::Sync(p)) if p == dir),
            "the directory must be fsynced just after the rename: {events:?}"
        );
    }
}

#[test]
fn each_commit_creates_a_fresh_temp_file_exclusively() {
    let test = "durability::each_commit_creates_a_fresh_temp_file_exclusively";
    let Some((_dir, events)) = trace_commits(test, "full") else {
        return;
    };
    let temps: Vec<(&String, &String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Create { name, flags } if name.starts_with(".state.json.statesafe-tmp-") => {
                Some((name, flags))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        temps.len() as u64,
        COMMITS,
        "one temporary file per commit: {events:?}"
    );
    for (name, flags) in &temps {
        for flag in ["O_EXCL", "O_NOFOLLOW", "O_CLOEXEC"] {
            assert!(
                flags.contains(flag),
                "`{name}` created without {flag}: {flags}"
            );
        }
    }
    let mut names: Vec<&String> = temps.iter().map(|(n, _)| *n).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len() as u64,
        COMMITS,
        "temporary names repeat: {temps:?}"
    );
    // And nothing else is ever created in the state file's place.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Create { name, .. } if name == "state.json")),
        "the state file was opened for writing in place: {events:?}"
    );
}

#[test]
fn no_durability_makes_no_sync_call_but_still_renames() {
    let test = "durability::no_durability_makes_no_sync_call_but_still_renames";
    let Some((_dir, events)) = trace_commits(test, "none") else {
        return;
    };
    let syncs: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Sync(_)))
        .collect();
    assert!(syncs.is_empty(), "Durability::None synced: {syncs:?}");
    let renames = events
        .iter()
        .filter(|e| {
            matches!(e, Event::Rename { from, to }
                if to == "state.json" && from.starts_with(".state.json.statesafe-tmp-"))
        })
        .count();
    assert_eq!(
        renames as u64, COMMITS,
        "every commit must still be a rename: {events:?}"
    );
}

#[test]
fn no_durability_still_replaces_atomically_for_readers() {
    let dir = common::test_dir();
    let path = dir.path().join("doc.json");
    let store: Store<Doc> = Store::options()
        .durability(Durability::None)
        .open(&path)
        .unwrap();
    store.create(Doc::new(0)).unwrap();
    let done = AtomicBool::new(false);
    let started = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (mut last, mut reads) = (0, 0u64);
                    started.wait();
                    loop {
                        let finished = done.load(Ordering::Relaxed);
                        // A fresh open each time, as another process would read.
                        let doc: Doc = serde_json::from_slice(&std::fs::read(&path).unwrap())
                            .expect("a reader saw a partial document");
                        assert!(
                            doc.is_whole(),
                            "a reader saw a mix at version {}",
                            doc.version
                        );
                        assert!(
                            doc.version >= last,
                            "went back from {last} to {}",
                            doc.version
                        );
                        last = doc.version;
                        reads += 1;
                        if finished {
                            break;
                        }
                    }
                    reads
                })
            })
            .collect();
        // Start writing once both readers run, so reads and renames overlap.
        started.wait();
        for v in 1..=40 {
            store.replace(Doc::new(v)).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    assert_eq!(store.get().unwrap().version, 40);
}
