//! Red team, session 16: each finding shown by a test that failed before its fix.

use serde_json::{Value, json};
use statesafe::{Error, Store};

use crate::common::{self, four_generations, put_back_with_metadata, sidecar};

/// **Bug (red16): an older plain version put back with its metadata (`cp -a` of a
/// backup) takes its old generation again, and the next commits reuse generations
/// that committed versions had.**
///
/// The plain format accepts a change made outside statesafe as an external change at
/// the highest generation known + 1; but a copy that keeps the `user.statesafe`
/// attribute of the version it was taken from carries a record whose checksum matches
/// its bytes, so it was taken for that very version, generation 2, although the lock
/// record, the backups and the history all know generation 4. Readers then see the
/// generation go back from 4 to 2, and the next commit writes generation 3 a second
/// time: the history holds two different generation 3s, `log` no longer lists the
/// committed generation 4, `document_at(4)` has nothing, and `document_at(3)` is no
/// longer the version committed as 3. Breaks "nothing silently lost" (the history of
/// committed versions) and "generations never repeat" (`write::highest_known_generation`'s
/// promise). Sealed files treat the same copy as damage
/// (`correctness::an_older_sealed_version_put_back_is_damage`); the PostgreSQL backend
/// writes above every generation its history holds since session 15.
///
/// Fixed: a writer (under the lock) takes such a version, below the generation the
/// lock record names, as an external change at the highest generation known + 1
/// (`Store::older_version_put_back`).
#[test]
fn an_older_plain_version_put_back_with_its_metadata_takes_a_new_generation() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = four_generations(&path);
    put_back_with_metadata(&path, 2);

    // The version put back is the state now (plain files accept outside changes)...
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state, json!({"n": 2}));
    // ...but for a writer (who holds the lock and reads its record) as a new
    // generation: never one a committed version had. (A reader without the lock
    // still names it by its own record, generation 2, whose bytes it holds: see
    // "Formats" in docs/design.md.)
    let tx = store.begin().unwrap();
    assert_eq!(tx.state(), &json!({"n": 2}));
    let relabelled = tx.generation();
    assert!(
        relabelled > 4,
        "the version put back was taken as generation {relabelled} after generation 4"
    );
    drop(tx);
    let next = store.replace(json!({"n": 5})).unwrap();
    assert!(next > relabelled, "generation {next} written again");
    assert_eq!(
        Store::<Value>::open(&path)
            .unwrap()
            .load()
            .unwrap()
            .generation,
        next
    );
    // The version put back is in the history as the external change it was.
    assert_eq!(store.document_at(relabelled).unwrap(), json!({"n": 2}));
    // Every committed version stays where the history put it.
    assert_eq!(store.document_at(3).unwrap(), json!({"n": 3}));
    assert_eq!(store.document_at(4).unwrap(), json!({"n": 4}));
    let history = store.history().unwrap();
    let mut generations: Vec<u64> = history.iter().map(|e| e.generation).collect();
    generations.sort_unstable();
    let len = generations.len();
    generations.dedup();
    assert_eq!(generations.len(), len, "a generation twice in the history");
}

/// **Bug (red16), the lost update the repeated generation makes: a compare-and-swap
/// taken before an old backup was put back succeeds over commits it never saw.**
///
/// A tool reads generation 4 and will commit only if nobody wrote since
/// (`replace_if(4, …)`, as `statesafe edit` and `--if-generation` do). Meanwhile an
/// old backup is put back with its metadata (generation 2 again), and two commits of
/// another writer (a cron job) follow: they become generations 3 and 4 again. The
/// tool's compare-and-swap on generation 4 then succeeds, and the cron job's two
/// acknowledged commits are overwritten by a document built without them.
///
/// Fixed with the test above: the cron job's commits are generations 6 and 7.
#[test]
fn a_compare_and_swap_from_before_an_old_copy_was_put_back_does_not_overwrite_later_commits() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let tool = four_generations(&path);
    let seen = tool.load().unwrap();
    assert_eq!(seen.generation, 4);

    put_back_with_metadata(&path, 2);
    let cron: Store = Store::open(&path).unwrap();
    for _ in 0..2 {
        cron.update(|s| s["cron"] = json!(s["cron"].as_u64().unwrap_or(0) + 1))
            .unwrap();
    }

    let mut mine = seen.state.clone();
    mine["n"] = json!(100);
    match tool.replace_if(seen.generation, mine) {
        Err(Error::GenerationConflict { expected: 4, .. }) => {}
        other => panic!(
            "the stale compare-and-swap on generation 4 was not refused: {other:?}; the file now holds {}",
            Store::<Value>::open(&path).unwrap().get().unwrap()
        ),
    }
    assert_eq!(cron.get().unwrap()["cron"], json!(2));
}

/// **Bug (red16): a failure after the commit (here: recording the history) is
/// reported without its cause.**
///
/// `Event::BookkeepingFailed` carries the error as text, made with the error's
/// `Display`, which (as every error of the library, in the `fs-err` manner) names the
/// operation and the file and leaves the OS error to its `source`: the event, the
/// warning logged with it and the bindings' events (Python's `on_event`, Node's
/// `'event'`) said "failed to record history in `…/seg-….jsonl`" and never why
/// ("Is a directory", "No space left on device", "Permission denied"), which is what
/// tells the user what to fix.
#[test]
fn a_bookkeeping_failure_names_its_cause() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&events);
    let store: Store = Store::options()
        .on_event(move |e| seen.lock().unwrap().push(e.clone()))
        .open(&path)
        .unwrap();
    store.create(json!({"n": 1})).unwrap();
    // The history's segment replaced by a directory: the next append fails (EISDIR).
    let history = sidecar(&path).join("history");
    for entry in std::fs::read_dir(&history).unwrap() {
        let segment = entry.unwrap().path();
        std::fs::remove_file(&segment).unwrap();
        std::fs::create_dir(&segment).unwrap();
    }
    let generation = store.replace(json!({"n": 2})).unwrap();
    let events = events.lock().unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            statesafe::Event::BookkeepingFailed {
                generation: g,
                what,
                error,
                ..
            } => Some((*g, what.clone(), error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    let (g, what, error) = &failed[0];
    assert_eq!(*g, generation);
    assert_eq!(what, "recording history");
    let cause = "Is a directory";
    assert!(
        error.contains(cause),
        "the event's error does not say why: {error:?} (expected {cause:?})"
    );
}
