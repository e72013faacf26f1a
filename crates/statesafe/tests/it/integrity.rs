//! Integrity (issue 3): sealed files, validation, backups, recovery, history.
//!
//! Defends FAILURE_MODES rows 1 (empty/NUL file treated as damage), 13 (recovery that
//! resets to defaults or rotates damage into backups) and 17 (limits checked before
//! anything is touched), and re-creates the scenario of seed 000: 100 tracked entries
//! and a crash mid-save must never become 100 duplicate notifications.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use statesafe::{
    BackupPolicy, Change, Error, Event, Format, HistoryPolicy, RecoveryPolicy, Settings, Store,
};

use crate::common;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tracker {
    grades: BTreeMap<String, String>,
    last_check: String,
}

fn events_of<T>(
    store_opts: statesafe::StoreOptions<T>,
) -> (statesafe::StoreOptions<T>, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (
        store_opts.on_event(move |e| sink.lock().unwrap().push(e.clone())),
        seen,
    )
}

/// The [`Event::Quarantined`] and [`Event::ExternalChange`] events a store of `path`
/// reports while `f` runs (a damaged version written over is quarantined, never an
/// external change "accepted").
fn quarantined_events(path: &Path, f: impl FnOnce(&Store)) -> Vec<Event> {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&events);
    let store: Store = Store::options()
        .on_event(move |e| {
            if matches!(e, Event::Quarantined { .. } | Event::ExternalChange { .. }) {
                seen.lock().unwrap().push(e.clone());
            }
        })
        .open(path)
        .unwrap();
    f(&store);
    events.lock().unwrap().clone()
}

fn quarantine_files(state: &Path) -> Vec<std::path::PathBuf> {
    let name = state.file_name().unwrap().to_string_lossy();
    let q = state
        .with_file_name(format!(".{name}.statesafe"))
        .join("quarantine");
    let mut files: Vec<_> = match std::fs::read_dir(&q) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn flipping_any_byte_of_a_sealed_file_is_detected() {
    let dir = common::test_dir();
    let path = dir.path().join("sealed.json");
    let store: Store = Store::options().format(Format::Sealed).open(&path).unwrap();
    store
        .create(json!({"balance": 10, "owner": "ann"}))
        .unwrap();
    let good = std::fs::read(&path).unwrap();
    assert!(String::from_utf8_lossy(&good).contains("\"statesafe\""));
    let strict: Store = Store::options()
        .format(Format::Sealed)
        .recovery(RecoveryPolicy::Fail)
        .open(&path)
        .unwrap();
    for (i, flip) in (0..good.len()).flat_map(|i| [(i, 0x01u8), (i, 0x20), (i, 0x80)]) {
        let mut bad = good.clone();
        bad[i] ^= flip;
        std::fs::write(&path, &bad).unwrap();
        let err = strict.load().expect_err("a changed byte must not load");
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::Invalid { .. }),
            "byte {i} ^ {flip:#x}: {err:?}"
        );
        let report = strict.check().unwrap();
        assert!(
            !report.is_ok(),
            "byte {i} ^ {flip:#x}: check passed a damaged file"
        );
        assert!(!report.problems.is_empty());
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(strict.load().unwrap().state["balance"], 10);
}

#[test]
fn a_truncated_primary_is_quarantined_and_the_newest_provable_generation_restored() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let (opts, events) = events_of(Store::<Value>::options());
    let store = opts.open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    for n in 2..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let backups = store.backups().unwrap().backups;
    assert_eq!(
        backups.iter().map(|b| b.generation).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    // A crash of some other writer (or a disk) leaves half a document.
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let damaged = std::fs::read(&path).unwrap();

    let snap = store.load().unwrap();
    assert_eq!(
        snap.state,
        json!({"n": 4}),
        "the newest valid backup is generation 3, and the history's patch rebuilds 4"
    );
    assert_eq!(
        snap.generation, 6,
        "damaged file counted as 5, restore committed as 6"
    );
    let events = events.lock().unwrap().clone();
    assert!(
        matches!(
            &events[..],
            [Event::Recovered {
                restored_from: Some(4),
                rebuilt_from: Some(3),
                generation: 6,
                ..
            }]
        ),
        "{events:?}"
    );
    let q = quarantine_files(&path);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        std::fs::read(&q[0]).unwrap(),
        damaged,
        "quarantine keeps the damaged bytes"
    );
    // The damaged version never becomes a backup.
    for b in store.backups().unwrap().backups {
        assert_ne!(std::fs::read(&b.path).unwrap(), damaged, "{b:?}");
    }
    assert_eq!(store.stats().recoveries, 1);
    // Recovery is recorded in the history.
    let last = store.history().unwrap().pop().unwrap();
    assert!(
        matches!(last.change, Change::Recovery { from: Some(4), .. }),
        "{last:?}"
    );
}

#[test]
fn seed_000_a_crash_mid_save_never_loses_the_100_tracked_grades() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = Store::<Tracker>::open(&path).unwrap();
    for i in 0..100 {
        store
            .update_or_default(|t| {
                t.grades.insert(format!("{i}"), format!("grade {i}"));
                t.last_check = format!("check {i}");
            })
            .unwrap();
    }
    // The seed's crash: `open(path, "w")` truncated the file and the process died
    // halfway through `json.dump` (here: another, naive writer of the same file).
    let full = std::fs::read(&path).unwrap();
    let cut = full
        .iter()
        .position(|b| *b == b'M')
        .unwrap_or(full.len() / 2);
    std::fs::write(&path, &full[..cut.min(full.len() / 2)]).unwrap();

    let restored = Store::<Tracker>::open(&path).unwrap().load().unwrap();
    assert!(
        restored.state.grades.len() >= 99,
        "only {} grades survived",
        restored.state.grades.len()
    );
    // The newest backup is the version before the last save: all but the 100th grade.
    // The next check adds the 100th again, as the program would: never 100 duplicates.
    store
        .update(|t| {
            t.grades.insert("99".into(), "grade 99".into());
        })
        .unwrap();
    assert_eq!(store.get().unwrap().grades.len(), 100);
    assert_eq!(quarantine_files(&path).len(), 1);
}

#[test]
fn without_a_valid_backup_recovery_fails_listing_what_was_tried() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // Damage the only backup too.
    let backup = store.backups().unwrap().backups[0].path.clone();
    std::fs::write(&backup, b"{\"n\": ").unwrap();
    std::fs::write(&path, b"garbage \x00\x01").unwrap();
    let err = store.load().unwrap_err();
    match &err {
        Error::Unrecoverable {
            damage,
            quarantined,
            tried,
            ..
        } => {
            assert!(matches!(**damage, Error::Corrupt { .. }), "{damage:?}");
            assert!(quarantined.as_ref().is_some_and(|q| q.exists()));
            assert_eq!(tried.len(), 1);
            assert_eq!(tried[0].0, backup);
        }
        other => panic!("expected Unrecoverable, got {other:?}"),
    }
    assert!(err.to_string().contains("backups tried"), "{err}");
    // Nothing was deleted: the damaged primary is still in place, and in quarantine.
    assert_eq!(std::fs::read(&path).unwrap(), b"garbage \x00\x01");
    // The fail policy reports the damage itself and changes nothing.
    let strict: Store = Store::options()
        .recovery(RecoveryPolicy::Fail)
        .open(&path)
        .unwrap();
    assert!(matches!(strict.load(), Err(Error::Corrupt { .. })));
}

#[test]
fn use_default_is_an_explicit_opt_in_and_still_quarantines() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    Store::<Tracker>::open(&path)
        .unwrap()
        .create(Tracker::default())
        .unwrap();
    std::fs::write(&path, b"{\"grades\": {\"1\": \"Mat").unwrap();
    let store = Store::<Tracker>::options()
        .on_corrupt_use_default(Tracker::default)
        .open(&path)
        .unwrap();
    assert_eq!(store.get().unwrap(), Tracker::default());
    assert_eq!(
        std::fs::read(&quarantine_files(&path)[0]).unwrap(),
        b"{\"grades\": {\"1\": \"Mat"
    );
}

#[test]
fn backups_keep_the_last_n_and_never_a_damaged_version() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .backups(BackupPolicy {
            keep: 3,
            hourly: 0,
            daily: 0,
        })
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    for n in 1..20 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let gens: Vec<u64> = store
        .backups()
        .unwrap()
        .backups
        .iter()
        .map(|b| b.generation)
        .collect();
    assert_eq!(gens, vec![19, 18, 17]);
    for b in store.backups().unwrap().backups {
        let doc: Value = serde_json::from_slice(&std::fs::read(&b.path).unwrap()).unwrap();
        assert_eq!(doc["n"], b.generation - 1);
    }
    // A foreign file in the folder is listed and never removed.
    let foreign = store.sidecar_path().join("backups").join("notes.txt");
    std::fs::write(&foreign, "mine").unwrap();
    // Damage the primary, then replace it: the damaged version goes to quarantine,
    // not into the backups.
    std::fs::write(&path, b"{ broken").unwrap();
    store.replace(json!({"n": 100})).unwrap();
    let list = store.backups().unwrap();
    assert_eq!(list.foreign, vec![foreign.clone()]);
    assert!(
        list.backups
            .iter()
            .all(|b| std::fs::read(&b.path).unwrap() != b"{ broken")
    );
    assert_eq!(quarantine_files(&path).len(), 1);
    // Said, with where it went (the event the PostgreSQL backend gives too).
    let mut written = Vec::new();
    let quarantined = quarantined_events(&path, |store| {
        std::fs::write(store.path(), b"{ broken 2").unwrap();
        written.push(store.replace(json!({"n": 101})).unwrap());
        std::fs::write(store.path(), b"{ broken 3").unwrap();
        let newest = store.backups().unwrap().backups[0].generation;
        written.push(store.restore(newest).unwrap());
    });
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    for (event, generation) in quarantined.iter().zip(written) {
        let Event::Quarantined {
            quarantined,
            generation: g,
            ..
        } = event
        else {
            panic!("only Quarantined events, got {event}");
        };
        assert_eq!(*g, generation);
        assert!(quarantine_files(&path).contains(quarantined), "{event}");
    }
    assert_eq!(quarantine_files(&path).len(), 3);
    for n in 0..5 {
        store.update(|s| s["n"] = (200 + n).into()).unwrap();
    }
    assert!(foreign.exists());
    assert_eq!(store.backups().unwrap().backups.len(), 3);
}

#[test]
fn restore_brings_a_backup_back_as_a_new_generation() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"v": "one"})).unwrap();
    store.update(|s| s["v"] = "two".into()).unwrap();
    store.update(|s| s["v"] = "three".into()).unwrap();
    let g = store.restore(1).unwrap();
    assert_eq!(g, 4);
    assert_eq!(store.get().unwrap(), json!({"v": "one"}));
    // The version it replaced is itself backed up.
    let gens: Vec<u64> = store
        .backups()
        .unwrap()
        .backups
        .iter()
        .map(|b| b.generation)
        .collect();
    assert!(gens.contains(&3), "{gens:?}");
    // A generation not yet committed is unavailable, not a missing state file.
    assert!(matches!(
        store.restore(42),
        Err(Error::GenerationUnavailable { generation: 42, .. })
    ));
}

/// `restore` of a generation no backup holds any more rebuilds it from the history,
/// as `document_at` does; one nothing can rebuild is `GenerationUnavailable`. Before,
/// both were `Error::NotFound` naming `backups/gen-….json` as a state file that "does
/// not exist" with the hint to create it (review21node, finding 5: a program treating
/// ENOENT as "no state yet" would have created a fresh state over the real one).
#[test]
fn restore_rebuilds_from_the_history_what_no_backup_holds() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let one = BackupPolicy {
        keep: 1,
        hourly: 0,
        daily: 0,
    };
    let store: Store = Store::options().backups(one).open(&path).unwrap();
    store.create(json!({"v": 1})).unwrap();
    for v in 2..=5 {
        store.update(|s| s["v"] = v.into()).unwrap();
    }
    let kept: Vec<u64> = store
        .backups()
        .unwrap()
        .backups
        .iter()
        .map(|b| b.generation)
        .collect();
    assert_eq!(kept, [4]);
    assert_eq!(store.document_at(2).unwrap(), json!({"v": 2}));
    assert_eq!(store.restore(2).unwrap(), 6);
    assert_eq!(store.get().unwrap(), json!({"v": 2}));
    for g in [0, 6, 7] {
        let e = store.restore(g).unwrap_err();
        assert!(
            matches!(e, Error::GenerationUnavailable { generation, .. } if generation == g),
            "restore({g}): {e:?}"
        );
    }
    // Without a history, a generation no backup holds is unavailable, not NotFound.
    let bare = dir.path().join("bare.json");
    let store: Store = Store::options()
        .backups(one)
        .history(statesafe::HistoryPolicy {
            keep: 0,
            ..Default::default()
        })
        .open(&bare)
        .unwrap();
    store.create(json!({"v": 1})).unwrap();
    for v in 2..=4 {
        store.update(|s| s["v"] = v.into()).unwrap();
    }
    let e = store.restore(1).unwrap_err();
    assert!(
        matches!(e, Error::GenerationUnavailable { generation: 1, .. }),
        "restore(1) with no history: {e:?}"
    );
    assert_eq!(store.get().unwrap(), json!({"v": 4}));
}

#[test]
fn fifty_updates_give_fifty_history_entries_with_correct_patches() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    let mut versions = vec![Value::Null];
    store.create(json!({"n": 0, "items": []})).unwrap();
    versions.push(store.get().unwrap());
    for n in 1..50 {
        store
            .update(|s| {
                s["n"] = n.into();
                s["items"].as_array_mut().unwrap().push(json!(n));
                if n % 7 == 0 {
                    s.as_object_mut().unwrap().remove("extra");
                } else {
                    s["extra"] = json!({"k": n});
                }
            })
            .unwrap();
        versions.push(store.get().unwrap());
    }
    let history = store.history().unwrap();
    assert_eq!(history.len(), 50);
    assert_eq!(
        history.iter().map(|e| e.generation).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    // Replaying the patches from the first snapshot rebuilds every version.
    let mut doc = history[0]
        .snapshot
        .clone()
        .expect("the first entry holds a snapshot");
    assert_eq!(doc, versions[1]);
    for e in &history[1..] {
        json_patch::patch(
            &mut doc,
            e.patch.as_ref().expect("every commit has a patch"),
        )
        .unwrap();
        assert_eq!(
            doc, versions[e.generation as usize],
            "generation {}",
            e.generation
        );
        let w = e.writer.as_ref().unwrap();
        assert_eq!(w.pid, std::process::id());
    }
    // diff between two generations.
    let patch = store.diff(10, 20).unwrap();
    let mut d = versions[10].clone();
    json_patch::patch(&mut d, &patch).unwrap();
    assert_eq!(d, versions[20]);
    assert_eq!(store.document_at(5).unwrap(), versions[5]);
}

#[test]
fn history_retention_holds_and_old_generations_stay_rebuildable() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .history(HistoryPolicy {
            keep: 10,
            max_patch_bytes: 1 << 20,
        })
        .backups(BackupPolicy {
            keep: 0,
            hourly: 0,
            daily: 0,
        })
        .open(&path)
        .unwrap();
    store.create(json!({"n": 0})).unwrap();
    for n in 1..50 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let history = store.history().unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history[0].generation, 41);
    // The oldest retained generation can still be rebuilt (its segment's snapshot).
    assert_eq!(store.document_at(41).unwrap(), json!({"n": 40}));
    // And the files on disk are bounded: whole segments are pruned.
    let segs = std::fs::read_dir(store.sidecar_path().join("history"))
        .unwrap()
        .count();
    assert!(segs <= 10 / 2 + 2, "{segs} segments");
}

/// Rewrites the history line of `generation` in the segment files with `edit`; the
/// number of lines changed.
fn edit_history_line(store: &Store, generation: u64, edit: impl Fn(&str) -> String) -> usize {
    let mut edited = 0;
    for seg in std::fs::read_dir(store.sidecar_path().join("history")).unwrap() {
        let seg = seg.unwrap().path();
        let text = std::fs::read_to_string(&seg).unwrap();
        let prefix = format!("{{\"generation\":{generation},");
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    edited += 1;
                    edit(l)
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&seg, out.join("\n") + "\n").unwrap();
    }
    edited
}

/// A store whose generations 1..=4 hold `{"n": g, "m": 0}`, with one backup kept
/// (generation 3): generations 1 and 2 come from the history alone.
fn four_generations(path: &Path) -> Store {
    let store: Store = Store::options()
        .backups(BackupPolicy {
            keep: 1,
            hourly: 0,
            daily: 0,
        })
        .open(path)
        .unwrap();
    store.create(json!({"n": 1, "m": 0})).unwrap();
    for n in 2..=4 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    store
}

/// A history line edited by hand into another valid entry (generation 2's patch made
/// to set `n` to 999) was served by `document_at` and `diff` as the version a writer
/// committed: the lines carried no checksum. Each entry records the checksum of the
/// document it produces, verified when the version is rebuilt; a mismatch is an error
/// naming the entry, never a version nobody committed.
#[test]
fn a_history_line_edited_by_hand_is_never_served_as_a_committed_version() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = four_generations(&path);
    assert_eq!(store.document_at(2).unwrap(), json!({"n": 2, "m": 0}));
    let edited = edit_history_line(&store, 2, |l| l.replace("\"value\":2", "\"value\":999"));
    assert_eq!(edited, 1, "generation 2's line was not found");
    for got in [
        store.document_at(2).map(|d| d.to_string()),
        store.diff(2, 3).map(|p| serde_json::to_string(&p).unwrap()),
    ] {
        match got {
            Err(Error::GenerationUnavailable {
                generation, reason, ..
            }) => {
                assert_eq!(generation, 2);
                assert!(
                    reason.contains("history entry of generation 2")
                        && reason.contains("changed outside statesafe"),
                    "{reason}"
                );
            }
            other => panic!("a version nobody committed was served: {other:?}"),
        }
    }
    let err = store.document_at(2).unwrap_err();
    assert!(err.hint().unwrap().contains("backup"), "{:?}", err.hint());
    // Listed as damaged, in its place; the entries around it as recorded.
    let listed = store.history().unwrap();
    let changes: Vec<(u64, bool)> = listed
        .iter()
        .map(|e| (e.generation, matches!(e.change, Change::Damaged { .. })))
        .collect();
    assert_eq!(changes, [(1, false), (2, true), (3, false), (4, false)]);
    // Generation 3 replaced `n` whole: what its entry records is what the chain gives.
    assert_eq!(store.document_at(3).unwrap(), json!({"n": 3, "m": 0}));
    // The same edit with the entry's checksum taken out is refused too.
    edit_history_line(&store, 2, |l| {
        let at = l
            .find(",\"checksum\":")
            .expect("the entry records a checksum");
        format!("{}{}", &l[..at], &l[at + 30..])
    });
    let err = store.document_at(2).unwrap_err();
    assert!(err.to_string().contains("records no checksum"), "{err}");
}

/// Entries written before statesafe recorded checksums stay readable; one whose
/// change survives to a later entry that records a checksum is checked by it.
#[test]
fn history_lines_without_a_checksum_stay_readable_and_a_later_checksum_covers_them() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = four_generations(&path);
    let strip = |l: &str| match l.find(",\"checksum\":") {
        Some(at) => format!("{}{}", &l[..at], &l[at + 30..]),
        None => l.to_string(),
    };
    for g in 1..=3 {
        assert_eq!(edit_history_line(&store, g, strip), 1);
    }
    assert_eq!(store.document_at(1).unwrap(), json!({"n": 1, "m": 0}));
    assert_eq!(store.document_at(2).unwrap(), json!({"n": 2, "m": 0}));
    // Generation 2's entry made to set `m` too: generation 4's checksum covers `m`.
    edit_history_line(&store, 2, |l| {
        l.replace(
            "\"patch\":[",
            "\"patch\":[{\"op\":\"replace\",\"path\":\"/m\",\"value\":7},",
        )
    });
    let err = store.document_at(2).unwrap_err();
    assert!(
        err.to_string().contains("history entry of generation 4"),
        "{err}"
    );
}

/// Recovery carries a backup forward through the history's patches: it stops before
/// an entry that does not produce the document it records, never restoring a version
/// nobody committed.
#[test]
fn recovery_stops_before_a_history_line_edited_by_hand() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = four_generations(&path);
    edit_history_line(&store, 4, |l| l.replace("\"value\":4", "\"value\":999"));
    std::fs::write(&path, b"{\"n\": 4, \"m\"").unwrap();
    let fresh: Store = Store::open(&path).unwrap();
    let got = fresh.load().unwrap();
    assert_eq!(got.state, json!({"n": 3, "m": 0}));
}

#[test]
fn an_invalid_update_is_refused_naming_rule_and_place() {
    let dir = common::test_dir();
    let path = dir.path().join("account.json");
    let store: Store = Store::options()
        .schema(json!({
            "type": "object",
            "properties": {"balance": {"type": "integer", "minimum": 0}},
            "required": ["balance"]
        }))
        .open(&path)
        .unwrap();
    store.create(json!({"balance": 5})).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = store.update(|s| s["balance"] = (-3).into()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(
        text.contains("/balance") && text.contains("minimum"),
        "{text}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(store.generation().unwrap(), 1);

    #[derive(Serialize, Deserialize)]
    struct Account {
        balance: i64,
    }
    let typed = Store::<Account>::options()
        .validate(|a| {
            if a.balance >= 0 {
                Ok(())
            } else {
                Err(format!("balance must not be negative, got {}", a.balance))
            }
        })
        .open(dir.path().join("typed.json"))
        .unwrap();
    typed.create(Account { balance: 1 }).unwrap();
    let err = typed.update(|a| a.balance -= 2).unwrap_err();
    assert!(
        err.to_string()
            .contains("balance must not be negative, got -1"),
        "{err}"
    );
    assert_eq!(typed.get().unwrap().balance, 1);
}

#[test]
fn recorded_settings_apply_to_every_later_writer() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let first: Store = Store::open(&path).unwrap();
    let settings = Settings {
        format: Format::Sealed,
        schema: Some(json!({"type": "object", "required": ["id"]})),
        max_bytes: Some(400),
        ..Settings::default()
    };
    first.create_with(&settings, json!({"id": 1})).unwrap();
    let later: Store = Store::open(&path).unwrap();
    assert_eq!(later.settings(), settings);
    assert!(matches!(
        later.replace(json!({"no": "id"})),
        Err(Error::Invalid { .. })
    ));
    let big = json!({"id": 2, "pad": "x".repeat(500)});
    assert!(matches!(
        later.replace(big),
        Err(Error::TooLarge { limit: 400, .. })
    ));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"statesafe\"")
    );
    assert!(matches!(
        first.create_with(&settings, json!({"id": 3})),
        Err(Error::AlreadyExists { .. })
    ));
    let bad = Settings {
        schema: Some(json!({"type": 12})),
        ..Settings::default()
    };
    assert!(matches!(
        later.save_settings(&bad),
        Err(Error::BadSchema { .. })
    ));
}

#[test]
fn a_free_space_floor_refuses_the_commit_before_anything_is_touched() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::options()
        .min_free_bytes(u64::MAX / 2)
        .open(&path)
        .unwrap();
    std::fs::write(&path, "{\"n\": 1}\n").unwrap();
    let err = store.replace(json!({"n": 2})).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\": 1}\n");
    assert!(common::temp_files(dir.path(), "state.json").is_empty());
}

/// Issue 12 item 1: the first contact with a JSON file statesafe never wrote is an
/// adoption, not an external change; a change made behind statesafe's back after it
/// has written the file is one. A file replaced after statesafe wrote it (sidecar
/// history, no attribute on the new inode) is a change too, never a fresh adoption.
#[test]
fn first_contact_is_an_adoption_not_an_external_change() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    std::fs::write(&path, "{\"n\": 1}\n").unwrap();
    let (opts, events) = events_of(Store::<Value>::options());
    let store = opts.open(&path).unwrap();
    assert!(store.check().unwrap().adopted);
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [Event::Adopted { generation: 1, .. }]
    ));
    assert_eq!(store.stats().external_changes, 0);
    assert!(!store.check().unwrap().adopted);
    // Replaced by another program (a new inode, without our attribute).
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"n\": 7}\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    store.update(|s| s["n"] = 8.into()).unwrap();
    let seen = events.lock().unwrap().clone();
    assert!(
        matches!(
            seen.as_slice(),
            [
                Event::Adopted { .. },
                Event::ExternalChange { generation: 3, .. }
            ]
        ),
        "{seen:?}"
    );
    assert_eq!(store.stats().external_changes, 1);
}

#[test]
fn outside_changes_are_accepted_when_valid_and_quarantined_when_not() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let (opts, events) = events_of(Store::<Value>::options());
    let store = opts.open(&path).unwrap();
    // The recorded schema binds every writer (a schema given to one store only is
    // that store's own: it never makes another's version damaged).
    let settings = Settings {
        schema: Some(json!({"type": "object", "required": ["n"]})),
        ..Settings::default()
    };
    store.create_with(&settings, json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    // A hand edit, in place.
    std::fs::write(&path, "{\"n\": 40, \"by\": \"hand\"}\n").unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state["n"], 40);
    assert_eq!(snap.generation, 3);
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [Event::ExternalChange { generation: 3, .. }]
    ));
    store.update(|s| s["n"] = 41.into()).unwrap();
    let history = store.history().unwrap();
    let external = history.iter().find(|e| e.generation == 3).unwrap();
    assert_eq!(external.change, Change::External);
    assert_eq!(external.snapshot.as_ref().unwrap()["by"], "hand");
    assert_eq!(store.generation().unwrap(), 4);
    // An outside change that fails the recorded schema counts as damage: the newest
    // generation that can be proven comes back (backup 3 and the history's patch).
    std::fs::write(&path, "{\"m\": 1}\n").unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.state, json!({"n": 41, "by": "hand"}));
    assert_eq!(quarantine_files(&path).len(), 1);
}

#[test]
fn recovery_is_idempotent() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    for _ in 0..3 {
        std::fs::write(&path, b"\0\0\0\0").unwrap();
        assert!(store.recover().unwrap().is_some());
        assert_eq!(store.get().unwrap(), json!({"n": 2}));
    }
    // The same damaged bytes are quarantined once.
    assert_eq!(quarantine_files(&path).len(), 1);
    assert!(
        store.recover().unwrap().is_none(),
        "a sound file needs no recovery"
    );
}

/// Found by the library test suite: a deleted and re-created file used to restart at
/// generation 1, so its backups collided with the old life's, a stale compare-and-swap
/// succeeded, and recovery restored the old file's content.
#[test]
fn generations_never_restart_when_the_file_is_deleted_and_recreated() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"life": "old", "n": 1})).unwrap();
    let stale = store.load().unwrap().generation;
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    std::fs::remove_file(&path).unwrap();
    // A create is refused in the place of a deleted state (lost19, `deleted::*`);
    // starting over is a `replace`, on purpose.
    assert!(matches!(
        store.create(json!({"life": "new", "n": 1})),
        Err(Error::Deleted { .. })
    ));
    let g = store.replace(json!({"life": "new", "n": 1})).unwrap();
    assert!(
        g > 3,
        "generation went back to {g} after the file was re-created"
    );
    assert!(matches!(
        store.update_if(stale, |s| s["n"] = 9.into()),
        Err(Error::GenerationConflict { .. })
    ));
    store.update(|s| s["n"] = 2.into()).unwrap();
    store.update(|s| s["n"] = 3.into()).unwrap();
    std::fs::write(&path, "{\"life\": \"new\", \"n\": ").unwrap();
    let back = store.get().unwrap();
    assert_eq!(
        back["life"], "new",
        "recovery restored the old file's content"
    );
    assert_eq!(
        back["n"], 3,
        "backup of n = 2 and the history's patch after it"
    );
}

/// A backup name already taken by different bytes is moved to the quarantine, never
/// overwritten, deleted or mistaken for this version.
#[test]
fn a_foreign_version_under_a_backup_name_is_set_aside() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store: Store = Store::open(&path).unwrap();
    store.create(json!({"n": 1})).unwrap();
    let squatter = store.sidecar_path().join("backups");
    std::fs::create_dir_all(&squatter).unwrap();
    let squatter = squatter.join(format!("gen-{:020}.json", 1));
    std::fs::write(&squatter, "{\"not\": \"ours\"}").unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(&squatter).unwrap()).unwrap(),
        json!({"n": 1})
    );
    let q = quarantine_files(&path);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        std::fs::read_to_string(&q[0]).unwrap(),
        "{\"not\": \"ours\"}"
    );
}

#[test]
fn a_dropped_store_leaves_exactly_the_backups_the_policy_keeps() {
    // Pruning runs on a worker thread; dropping the store waits for it, so what another
    // process sees right after (a one-shot CLI call exiting) is the policy, exactly.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let backups_dir = {
        let store: Store = Store::open(&path).unwrap();
        store.create(json!({"n": 0})).unwrap();
        // Generations 2..=41: the backups are the last five outgoing, 36..=40.
        for n in 1..=40 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        store.sidecar_path().join("backups")
    };
    let mut on_disk: Vec<String> = std::fs::read_dir(&backups_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let expected: Vec<String> = (36..=40).map(|g| format!("gen-{g:020}.json")).collect();
    assert_eq!(on_disk, expected);
}
