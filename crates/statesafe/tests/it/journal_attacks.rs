//! Red-team attacks on journal mode (issue 16, session 11). Each test states what it
//! attacks. An attack that succeeds is a test marked `#[ignore = "red11: ..."]` (it
//! fails on the code it was written against) with the bug in its doc comment; an
//! attack the code withstands is an ordinary test.
//!
//! Crash states are built by hand where a test needs one: the bytes a power loss can
//! leave (any subset of the pages written since the last flush, each whole), written
//! into the journal while no store has it open.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use statesafe::{Durability, Error, Format, Settings, Store};

use crate::common;

const PAGE: u64 = 4096;

pub(crate) fn journal_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    path.with_file_name(format!(".{name}.statesafe"))
        .join("journal")
}

pub(crate) fn create_journal(path: &Path, doc: Value) -> Store {
    create_journal_with(path, None, doc)
}

/// A journal-mode file at `path` holding `doc`, compacted whenever its journal passes
/// `max_bytes` (`None`: the default threshold). Returns the store that created it.
pub(crate) fn create_journal_with(path: &Path, max_bytes: Option<u64>, doc: Value) -> Store {
    let store: Store = Store::open(path).unwrap();
    let settings = Settings {
        format: Format::Journal,
        journal_max_bytes: max_bytes,
        ..Settings::default()
    };
    store.create_with(&settings, doc).unwrap();
    store
}

/// One record: where it starts, where it ends, and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) at: u64,
    pub(crate) end: u64,
    pub(crate) generation: u64,
}

/// The records of the journal, walked by their length fields from the header on (no
/// checksum is checked: call only on a journal a store has just written).
pub(crate) fn records(path: &Path) -> Vec<Rec> {
    let bytes = std::fs::read(journal_path(path)).unwrap();
    let mut at = 32usize;
    let mut found = Vec::new();
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let end = at + 16 + len.div_ceil(8) * 8 + 8;
        let generation = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        found.push(Rec {
            at: at as u64,
            end: end as u64,
            generation,
        });
        at = end;
    }
    found
}

fn read_range(path: &Path, from: u64, to: u64) -> Vec<u8> {
    let file = std::fs::File::open(journal_path(path)).unwrap();
    let mut buf = vec![0u8; (to - from) as usize];
    file.read_exact_at(&mut buf, from).unwrap();
    buf
}

fn write_range(path: &Path, at: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(journal_path(path))
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

pub(crate) fn fresh(path: &Path) -> (Value, u64) {
    let snap = Store::<Value>::open(path).unwrap().load().unwrap();
    (snap.state, snap.generation)
}

/// The bytes of every file in the quarantine of `path`'s sidecar.
pub(crate) fn quarantined(path: &Path) -> Vec<Vec<u8>> {
    let quarantine = journal_path(path).parent().unwrap().join("quarantine");
    std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

/// A reader racing the writers of `path` (whose state is `{"n": …}`, one increment a
/// commit) until `done`: by a fresh store each time (a full read: journal first, then
/// snapshot) or by one long-lived store (its cache's check of the journal and the
/// snapshot, then the journal's tail). No read may fail, every state must be a
/// committed one (`n` = generation - 1) and the generation must never go back.
/// Returns how many reads it made.
pub(crate) fn read_committed_states_in_order(
    path: &Path,
    long_lived: bool,
    done: &AtomicBool,
) -> u64 {
    let kept: Store = Store::open(path).unwrap();
    let mut last = 0u64;
    let mut reads = 0u64;
    while !done.load(Ordering::Acquire) {
        let snap = if long_lived {
            kept.load()
        } else {
            Store::<Value>::open(path).and_then(|s| s.load())
        }
        .unwrap_or_else(|e| panic!("a read failed after {reads} reads: {e}"));
        assert_eq!(
            snap.state["n"].as_u64(),
            Some(snap.generation - 1),
            "a state no commit made, at generation {}",
            snap.generation
        );
        assert!(
            snap.generation >= last,
            "the generation went back from {last} to {}",
            snap.generation
        );
        last = snap.generation;
        reads += 1;
    }
    reads
}

/// A long-lived journal store at generation 4: the snapshot `{"n": 0}` and three
/// commits in its journal (the document kept, `journal/cache.rs`).
fn journal_with_three_commits(path: &Path) -> Store {
    let store = create_journal(path, json!({"n": 0}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    assert_eq!(store.load().unwrap().generation, 4);
    assert_eq!(store.load().unwrap().generation, 4);
    assert_eq!(fresh(path), (json!({"n": 3}), 4));
    store
}

/// Asserts that `e` (from `what`) refuses the snapshot of [`journal_with_three_commits`]
/// whose journal was lost: `Error::Corrupt` naming the file, the lost generations and
/// each of `parts`.
fn assert_lost_journal(path: &Path, what: &str, e: Error, parts: &[&str]) {
    let text = e.to_string();
    assert!(matches!(e, Error::Corrupt { .. }), "{what}: {e:?}");
    let file = path.display().to_string();
    let named = [
        file.as_str(),
        "journal-mode snapshot of generation 1",
        "was deleted",
        "every commit made after generation 1 was in that journal and is lost",
    ];
    for part in named.iter().chain(parts) {
        assert!(text.contains(part), "{what}: `{part}` missing from: {text}");
    }
}

/// A writer opened after the loss: its update and check are `refused`, and the
/// snapshot keeps its bytes (`snapshot`). Returns it.
fn a_writer_refused(path: &Path, snapshot: &[u8], refused: impl Fn(&str, Error)) -> Store {
    let writer: Store = Store::open(path).unwrap();
    refused(
        "an update",
        writer
            .update(|s| s["n"] = 99.into())
            .map(|_| ())
            .unwrap_err(),
    );
    refused("a check", writer.check().map(|_| ()).unwrap_err());
    assert_eq!(
        std::fs::read(path).unwrap(),
        snapshot,
        "the snapshot was changed"
    );
    writer
}

/// What the torn-batch scenario below built, for one choice of lengths.
struct TornBatch {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The record that was torn (generation 3, by the unflushed batch).
    torn: Rec,
    /// The batch's later record that survived the power loss (generation 4).
    survivor: Rec,
    survivor_bytes: Vec<u8>,
}

/// Generation 1 is the snapshot `{"n": 0, "s": ""}`; generation 2 (`n` = 1) is appended
/// and flushed by a `Durability::Full` store, which publishes its end; then generations
/// 3 (`s` = `pad` x's) and 4 (`m` = 4) are appended and never flushed (a
/// `Durability::None` store: the same bytes as a group commit's batch whose flush the
/// power loss interrupted; both claim the journal durable only up to generation 3's
/// offset).
fn torn_batch(pad: usize) -> TornBatch {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let full = create_journal(&path, json!({"n": 0, "s": ""}));
    full.update(|s| s["n"] = 1.into()).unwrap();
    drop(full);
    let unflushed: Store = Store::options()
        .durability(Durability::None)
        .open(&path)
        .unwrap();
    unflushed
        .update(|s| s["s"] = "x".repeat(pad).into())
        .unwrap();
    unflushed.update(|s| s["m"] = 4.into()).unwrap();
    drop(unflushed);
    let recs = records(&path);
    assert_eq!(
        recs.iter().map(|r| r.generation).collect::<Vec<_>>(),
        [2, 3, 4],
        "the setup appended (no compaction)"
    );
    let survivor_bytes = read_range(&path, recs[2].at, recs[2].end);
    TornBatch {
        _dir: dir,
        path,
        torn: recs[1],
        survivor: recs[2],
        survivor_bytes,
    }
}

/// **Bug (red11): a record of a torn batch comes back to life after the next writer's
/// record, and the reader serves a state nobody committed.**
///
/// A power loss during a batch's flush can keep a later record of the batch and lose
/// an earlier one (design.md, "Journal mode": the torn batch is dropped whole, because
/// the survivor claims the journal durable only up to the batch's start). The next
/// writer, proven by the published end (the lock file's page with the end of the last
/// flushed record was written back before the power loss), appends its own generation
/// 3 at the torn record's offset, and `write_record` makes two `pwrite`s: zeros over
/// the rest of the torn tail (the survivor), then its record. Nothing orders them: a
/// second power loss before that writer's flush can keep the new record's pages and
/// lose the zeros'. When the new record has the torn one's length (same change shape,
/// same metadata length) and ends on a page boundary, the old survivor, generation 4,
/// follows it contiguously and verifies: the reader replays the new generation 3 and
/// then the old batch's patch made against the *old* generation 3, and serves
/// generation 4, `{"n": 1, "s": "yyy...", "m": 4}`: a state no writer ever committed
/// (the new writer's commit was never acknowledged, and the old batch's never was
/// either). Breaks "after a crash the state is old or new, never partial" and "nothing
/// silently changed"; every later writer builds on it.
///
/// A fix: flush the zeros over a torn tail before writing a record over its start
/// (once per torn tail, after a power loss only), or have a record name the checksum
/// of the record before it, so that a survivor of another lineage breaks the chain.
#[test]
fn a_torn_batchs_survivor_is_not_replayed_after_the_record_written_over_the_tear() {
    // Choose `pad` so that the survivor starts on a page boundary (the new record's
    // pages and the zeros' pages are then distinct, and a power loss may keep either).
    let mut pad = 5000usize;
    let mut setup = None;
    for _ in 0..8 {
        let t = torn_batch(pad);
        if t.survivor.at.is_multiple_of(PAGE) {
            setup = Some(t);
            break;
        }
        let want = t.survivor.at.div_ceil(PAGE) * PAGE;
        pad += (want - t.survivor.at) as usize;
    }
    let t = setup.expect("a length that puts the survivor on a page boundary");
    let path = &t.path;

    // The first power loss: generation 3's pages were not written back (the journal's
    // first pages hold what generation 2's flush wrote: zeros past it), generation 4's
    // page was. The lock file's published end (generation 2's) was written back too.
    write_range(
        path,
        t.torn.at,
        &vec![0; (t.survivor.at - t.torn.at) as usize],
    );
    assert_eq!(
        fresh(path),
        (json!({"n": 1, "s": ""}), 2),
        "the torn batch is dropped whole"
    );

    // The next writer appends its generation 3 in the torn record's place (same length:
    // same change shape and metadata). It writes zeros over the survivor, then its own
    // record, then (after the lock) flushes.
    let writer: Store = Store::open(path).unwrap();
    writer.update(|s| s["s"] = "y".repeat(pad).into()).unwrap();
    drop(writer);
    let recs = records(path);
    assert_eq!(
        recs[1].at, t.torn.at,
        "the writer appended in the torn record's place"
    );
    assert_eq!(recs[1].generation, 3);
    assert_eq!(
        recs[1].end, t.survivor.at,
        "the new record has the torn one's length"
    );
    assert_eq!(
        read_range(path, t.survivor.at, t.survivor.end),
        vec![0; t.survivor_bytes.len()],
        "the writer zeroed the survivor"
    );

    // The second power loss, before that flush completed: the new record's pages were
    // written back, the zeros' page (the survivor's, a page of its own) was not.
    write_range(path, t.survivor.at, &t.survivor_bytes);

    let (state, generation) = fresh(path);
    let old = (json!({"n": 1, "s": ""}), 2);
    let new = (json!({"n": 1, "s": "y".repeat(pad)}), 3);
    assert!(
        (state.clone(), generation) == old || (state.clone(), generation) == new,
        "the reader serves generation {generation}, a state nobody committed: m = {}, s starts with {:?}",
        state["m"],
        &state["s"].as_str().unwrap_or("")[..1.min(state["s"].as_str().unwrap_or("").len())]
    );
}

/// A `Durability::None` store creates the journal-mode file at PATH (its first commit
/// compacts: snapshot and new journal, neither synced), then a `Durability::Full`
/// store of the same process commits once and says so.
#[test]
fn child_none_creates_then_full_commits() {
    if !common::child_role("none-creates-then-full-commits") {
        return;
    }
    let path = PathBuf::from(common::child_arg("PATH"));
    let none: Store = Store::options()
        .durability(Durability::None)
        .open(&path)
        .unwrap();
    let settings = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    none.create_with(&settings, json!({"n": 0})).unwrap();
    let full: Store = Store::open(&path).unwrap();
    full.update(|s| s["n"] = 1.into()).unwrap();
    common::say("acknowledged");
}

/// **Bug (red11): a `Durability::Full` commit is acknowledged in a journal whose name
/// (and whose snapshot) a `Durability::None` store never made durable.**
///
/// A journal is started by `journal::start`, which syncs the new journal and its
/// sidecar folder only under `Durability::Full`. A descriptor opened on a journal with
/// no record is taken as proven at once (`Witness::new`: "a journal's header is
/// durable before its name is"), so a `Durability::Full` store (another process, or
/// another store of the same process) that next commits appends its record, flushes
/// the journal with `fdatasync` and acknowledges the commit. That flush writes the
/// record's blocks, not the directory entry: after a power loss the journal's rename
/// (and the unsynced snapshot's, here the file's creation) may be gone, and the
/// acknowledged commit with it. A plain-format `Durability::Full` commit after the
/// same `Durability::None` store's is durable (its own `fsync`, rename and directory
/// `fsync`), so this is journal mode's own. Breaks "every acknowledged write
/// survives" for the `Durability::Full` writer; the brief's attack "two stores on the
/// same file with different options".
///
/// Shown on the system calls (`strace -f -y`): between the rename that put the journal
/// in place and the `fdatasync` that acknowledges the `Durability::Full` commit, there
/// is no `fsync` of the sidecar folder (nor of the state file's folder after the
/// snapshot's rename). A fix: a `Durability::Full` writer treats a journal (and a
/// snapshot) it did not see synced as unproven (compacts, or syncs the sidecar folder
/// and the journal once per descriptor before its first acknowledgement).
///
/// Fixed: a journal with no record is proven only by a published end at its header,
/// which a `Durability::Full` `start` publishes after its syncs; otherwise the `Full`
/// writer compacts at once (its snapshot's rename and the state folder's `fsync` come
/// after the `None` store's journal, and its acknowledgement rests on them).
#[test]
fn a_full_commit_is_not_acknowledged_in_a_journal_a_none_store_left_unsynced() {
    let test = "journal_attacks::a_full_commit_is_not_acknowledged_in_a_journal_a_none_store_left_unsynced";
    let Some((_dir, real)) = common::strace_test_dir(test) else {
        return;
    };
    let path = real.join("state.json");
    let log = real.join("strace.log");
    let out = common::ChildCmd::traced(
        &log,
        "fsync,fdatasync,pwrite64,rename,renameat,renameat2",
        "journal_attacks::child_none_creates_then_full_commits",
        "none-creates-then-full-commits",
    )
    .arg("PATH", &path)
    .run();
    assert_eq!(out, ["acknowledged"], "{out:?}");
    assert_eq!(fresh(&path), (json!({"n": 1}), 2));
    let text = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<common::Call> = text.lines().filter_map(common::parse_call).collect();
    let sidecar = real.join(".state.json.statesafe");
    let journal = sidecar.join("journal");
    let (sidecar, journal) = (sidecar.to_str().unwrap(), journal.to_str().unwrap());
    // The acknowledgement: the Full store's flush of its appended record (the None
    // store flushes nothing), or, when it compacts, the `fsync` of the state's folder
    // after its snapshot's rename (that commit does not rest on the journal).
    let folder = real.to_str().unwrap();
    let ack = calls
        .iter()
        .rposition(|c| {
            (c.name == "fdatasync" && c.fd_path == journal)
                || (c.name == "fsync" && c.fd_path == folder)
        })
        .unwrap_or_else(|| panic!("the Full store made its commit durable:\n{text}"));
    if calls[ack].name == "fsync" {
        let snapshot = calls[..ack].iter().rposition(|c| {
            c.name.starts_with("rename") && c.quoted.last().is_some_and(|q| q == "state.json")
        });
        let started = calls[..ack]
            .iter()
            .position(|c| {
                c.name.starts_with("rename") && c.quoted.last().is_some_and(|q| q == "journal")
            })
            .unwrap_or_else(|| panic!("the None store started a journal:\n{text}"));
        assert!(
            snapshot > Some(started),
            "the Full store compacted after the None store's journal (call {started}): its snapshot's rename (call {snapshot:?}) comes before the folder's fsync (call {ack}):\n{text}"
        );
        return;
    }
    let renamed = calls[..ack]
        .iter()
        .rposition(|c| {
            c.name.starts_with("rename") && c.quoted.last().is_some_and(|q| q == "journal")
        })
        .unwrap_or_else(|| panic!("a journal was started before the commit:\n{text}"));
    let folder_synced = calls[renamed..ack]
        .iter()
        .any(|c| c.name == "fsync" && c.fd_path == sidecar);
    assert!(
        folder_synced,
        "the Full store's commit was acknowledged (call {ack}) in a journal whose rename (call {renamed}) no fsync of the sidecar folder made durable:\n{text}"
    );
}

/// **Bug (red11), fixed, in the threat model: a cleanup that deletes the sidecar loses
/// journal mode's commits since the last compaction; it must not do so silently.**
///
/// In journal mode the sidecar holds every commit since the last compaction
/// (`.NAME.statesafe/journal`) and the settings that say `journal`: deleting it
/// (`rm -rf .*`, `git clean -fdx`, a tmp reaper: the actors of that threat-model row)
/// takes them away, and nothing can bring them back. The next reader used to serve the
/// snapshot as if nothing had happened (the generation back from 4 to 1, the next
/// commit generation 2 again, with another content). Now the snapshot's metadata
/// record says that a journal follows it, so a reader or writer outside journal mode
/// refuses it (`Error::Corrupt` naming the file, the lost generations and what to do),
/// and no commit lands on it; leaving journal mode properly clears the note, so a plain
/// file is read as before.
#[test]
#[allow(unsafe_code)] // removexattr(2): no safe wrapper in the dependencies
fn a_cleanup_that_deletes_the_sidecar_loses_no_acknowledged_journal_commit() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = journal_with_three_commits(&path);
    let sidecar = journal_path(&path).parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&sidecar).unwrap();
    let snapshot = std::fs::read(&path).unwrap();
    let refused = |what: &str, e: Error| {
        assert_lost_journal(
            &path,
            what,
            e,
            &[
                ".state.json.statesafe",
                "restore the sidecar directory from a backup",
                "setfattr -x user.statesafe",
            ],
        );
    };
    match Store::<Value>::open(&path).and_then(|s| s.load()) {
        Ok(snap) => panic!(
            "the three commits after the snapshot were lost without an error: served {} at generation {}",
            snap.state, snap.generation
        ),
        Err(e) => refused("a load", e),
    }
    refused("the long-lived store's load", store.load().unwrap_err());
    refused(
        "the long-lived store's update",
        store.update(|s| s["n"] = 4.into()).map(|_| ()).unwrap_err(),
    );
    // A writer neither commits on the old snapshot nor re-creates the sidecar's settings.
    let writer = a_writer_refused(&path, &snapshot, refused);
    // Accepting the snapshot explicitly, as the error says: it is adopted.
    // (What `setfattr -x user.statesafe FILE` does.)
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: two NUL-terminated strings that live across the call.
    let removed = unsafe { libc::removexattr(c_path.as_ptr(), c"user.statesafe".as_ptr()) };
    assert_eq!(removed, 0, "{}", std::io::Error::last_os_error());
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state, json!({"n": 0}));
    writer.update(|s| s["n"] = 5.into()).unwrap();
    assert_eq!(fresh(&path).0, json!({"n": 5}));
}

/// Deleting the journal alone (the sidecar's settings, `meta` and lock file kept, as a
/// cleanup of `*journal*` or a hand "fix" leaves them) takes every commit since the
/// last compaction, and the snapshot's note alone cannot tell that from a compaction
/// whose new journal never started (both leave a noted snapshot, settings saying
/// `journal` and no journal). It used to serve the snapshot (generation 4 back to 1)
/// and commit on it. The lock file's published durable ends say that a journal
/// following this very snapshot held flushed records: the loss is refused loudly, as
/// for a deleted sidecar; a journal that never held a record is not mistaken for one.
#[test]
fn a_cleanup_that_deletes_only_the_journal_loses_no_acknowledged_journal_commit() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = journal_with_three_commits(&path);
    std::fs::remove_file(journal_path(&path)).unwrap();
    let snapshot = std::fs::read(&path).unwrap();
    let refused = |what: &str, e: Error| {
        assert_lost_journal(&path, what, e, &["statesafe recover", "--accept-snapshot"]);
    };
    match Store::<Value>::open(&path).and_then(|s| s.load()) {
        Ok(snap) => panic!(
            "the three commits after the snapshot were lost without an error: served {} at generation {}",
            snap.state, snap.generation
        ),
        Err(e) => refused("a load", e),
    }
    refused("the long-lived store's load", store.load().unwrap_err());
    refused(
        "the long-lived store's update",
        store.update(|s| s["n"] = 4.into()).map(|_| ()).unwrap_err(),
    );
    refused(
        "the long-lived store's group commit",
        store
            .apply_patch(&json!([{"op": "replace", "path": "/n", "value": 4}]))
            .map(|_| ())
            .unwrap_err(),
    );
    let writer = a_writer_refused(&path, &snapshot, refused);
    assert!(
        !journal_path(&path).exists(),
        "a journal was started over the loss"
    );
    // Accepting the snapshot, as the error says (`statesafe recover --accept-snapshot`):
    // the same bytes, at a generation past the lost ones (2 to 4), so that no
    // acknowledged generation number is used again.
    let accepted = writer.accept_snapshot().unwrap().expect("a loss to accept");
    assert!(accepted > 4, "{accepted}");
    assert_eq!(fresh(&path), (json!({"n": 0}), accepted));
    assert_eq!(std::fs::read(&path).unwrap(), snapshot);
    assert_eq!(writer.accept_snapshot().unwrap(), None, "accepted twice");
    writer.update(|s| s["n"] = 5.into()).unwrap();
    store.update(|s| s["n"] = 6.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 6}), accepted + 2));
}

/// An older journal put in place of the one that held the commits (a sidecar restored
/// from an old backup, a sync tool going back): it follows an earlier snapshot, which
/// is also what a crash between a compaction's snapshot and its new journal leaves, so
/// it used to be skipped as stale and the commits after the snapshot silently dropped.
/// The lock file's published ends for the snapshot's own journal tell: refused;
/// accepting quarantines the older journal (never removed) before going on.
#[test]
fn an_older_journal_put_back_in_place_of_the_current_one_is_refused() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    let older = std::fs::read(journal_path(&path)).unwrap();
    let compact_every_commit = Settings {
        format: Format::Journal,
        journal_max_bytes: Some(1),
        ..Settings::default()
    };
    store.save_settings(&compact_every_commit).unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    store
        .save_settings(&Settings {
            format: Format::Journal,
            ..Settings::default()
        })
        .unwrap();
    for n in 2..=4u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let (state, generation) = fresh(&path);
    assert_eq!(state, json!({"n": 4}));
    assert_eq!(records(&path).len(), 3, "{:?}", records(&path));
    std::fs::write(journal_path(&path), &older).unwrap();
    for e in [
        Store::<Value>::open(&path)
            .unwrap()
            .load()
            .map(|_| ())
            .unwrap_err(),
        store.update(|s| s["n"] = 9.into()).map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("an older copy put in its place") && text.contains("--accept-snapshot"),
            "{text}"
        );
    }
    let accepted = store.accept_snapshot().unwrap().expect("a loss to accept");
    assert!(accepted > generation, "{accepted} after {generation}");
    assert!(
        quarantined(&path).contains(&older),
        "the older journal was not quarantined"
    );
    assert_eq!(fresh(&path), (json!({"n": 1}), accepted));
    store.update(|s| s["n"] = 5.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 5}), accepted + 1));
}

/// An older copy of the very journal put back (a backup tool, or a user restoring the
/// sidecar from yesterday): the same header, fewer records. It used to be read as the
/// journal's end, serving generation 2 where 4 was acknowledged (jfix13). The lock
/// file's published ends for this journal pass what the file holds: refused as a lost
/// journal, whether the copy was written over the journal in place (`cp`) or renamed in
/// (`rsync`), by a fresh reader, the long-lived store and a writer; accepting the
/// snapshot quarantines the copy and goes on past every lost generation.
#[test]
fn an_older_copy_of_the_same_journal_put_back_is_refused() {
    for in_place in [true, false] {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let store = create_journal(&path, json!({"n": 0}));
        store.update(|s| s["n"] = 1.into()).unwrap();
        let older = std::fs::read(journal_path(&path)).unwrap();
        for n in 2..=3u64 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        assert_eq!(fresh(&path), (json!({"n": 3}), 4));
        let snapshot = std::fs::read(&path).unwrap();
        if in_place {
            std::fs::write(journal_path(&path), &older).unwrap();
        } else {
            let copy = dir.path().join("journal.copy");
            std::fs::write(&copy, &older).unwrap();
            std::fs::rename(&copy, journal_path(&path)).unwrap();
        }
        let refused = |what: &str, e: Error| {
            let text = e.to_string();
            assert!(matches!(e, Error::Corrupt { .. }), "{what}: {e:?}");
            for part in [
                path.display().to_string().as_str(),
                "journal-mode snapshot of generation 1",
                "older copy",
                "lost",
                "statesafe recover",
                "--accept-snapshot",
            ] {
                assert!(text.contains(part), "{what}: `{part}` missing from: {text}");
            }
            assert!(
                e.hint().is_some_and(|h| h.contains("--accept-snapshot")),
                "{what}: the hint does not name the way out: {:?}",
                e.hint()
            );
        };
        match Store::<Value>::open(&path).and_then(|s| s.load()) {
            Ok(snap) => panic!(
                "in place {in_place}: commits 3 and 4 were lost without an error: served {} at generation {}",
                snap.state, snap.generation
            ),
            Err(e) => refused("a load", e),
        }
        refused("the long-lived store's load", store.load().unwrap_err());
        refused(
            "the long-lived store's update",
            store.update(|s| s["n"] = 9.into()).map(|_| ()).unwrap_err(),
        );
        let writer = a_writer_refused(&path, &snapshot, refused);
        let accepted = writer.accept_snapshot().unwrap().expect("a loss to accept");
        assert!(accepted > 4, "{accepted}");
        assert!(
            quarantined(&path).contains(&older),
            "the older copy was not quarantined"
        );
        // The copy's own record (generation 2) was committed and survives in it: the
        // acceptance keeps it (red14), only the records past the copy are lost.
        assert_eq!(fresh(&path), (json!({"n": 1}), accepted));
        assert_eq!(writer.accept_snapshot().unwrap(), None, "accepted twice");
        store.update(|s| s["n"] = 5.into()).unwrap();
        assert_eq!(fresh(&path), (json!({"n": 5}), accepted + 1));
    }
}

/// The older copy put back while a long-lived store lags behind other writers: its
/// cache still holds the copy's last record, so its refresh extends the copy without
/// a full read, and its commit used to append right after that record, over where the
/// other writers' acknowledged commits had been: their loss went silent once the new
/// record passed their published end, and their generations were given to other
/// contents. A writer holds the lock, so every published end is in the file it reads:
/// one that passes it is a loss, refused before the append.
#[test]
fn a_long_lived_writer_behind_others_does_not_commit_on_an_older_copy_of_the_journal() {
    for group in [false, true] {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let lagging = create_journal(&path, json!({"n": 0}));
        for _ in 0..3 {
            lagging.load().unwrap();
        }
        lagging.update(|s| s["n"] = 1.into()).unwrap();
        assert_eq!(lagging.load().unwrap().generation, 2);
        let older = std::fs::read(journal_path(&path)).unwrap();
        let other: Store = Store::open(&path).unwrap();
        for n in 2..=3u64 {
            other.update(|s| s["n"] = n.into()).unwrap();
        }
        std::fs::write(journal_path(&path), &older).unwrap();
        // A record longer than the two lost ones: appended after the copy's last
        // record, it would end past their published end.
        let big = "x".repeat(4000);
        let e = if group {
            lagging
                .apply_patch(&json!([{"op": "add", "path": "/big", "value": big}]))
                .map(|_| ())
                .unwrap_err()
        } else {
            lagging
                .update(|s| s["big"] = big.clone().into())
                .map(|_| ())
                .unwrap_err()
        };
        let text = e.to_string();
        assert!(
            matches!(e, Error::Corrupt { .. }) && text.contains("older copy"),
            "group {group}: {e:?}"
        );
        let e = Store::<Value>::open(&path).unwrap().load().unwrap_err();
        assert!(e.to_string().contains("older copy"), "group {group}: {e}");
        assert_eq!(std::fs::read(journal_path(&path)).unwrap(), older);
    }
}

/// `accept_snapshot` after the whole sidecar was deleted: the snapshot's bytes at the
/// next generation (nothing records the lost ones), and commits go on in journal mode
/// once the settings say so again.
#[test]
fn a_snapshot_whose_sidecar_was_deleted_can_be_accepted() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["n"] = 1.into()).unwrap();
    let snapshot = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(journal_path(&path).parent().unwrap()).unwrap();
    let e = Store::<Value>::open(&path).unwrap().load().unwrap_err();
    assert!(e.to_string().contains("--accept-snapshot"), "{e}");
    let writer: Store = Store::open(&path).unwrap();
    assert_eq!(writer.accept_snapshot().unwrap(), Some(2));
    assert_eq!(std::fs::read(&path).unwrap(), snapshot);
    assert_eq!(fresh(&path), (json!({"n": 0}), 2));
    assert_eq!(writer.accept_snapshot().unwrap(), None);
    writer.update(|s| s["n"] = 3.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 3}), 3));
}

/// The other side of the test above: a journal that held no record (a file just put in
/// journal mode, or a compaction's new journal) may go missing without a commit lost
/// (a compaction whose new journal failed to start leaves exactly that): the snapshot
/// is served and the next commit compacts, after a compaction too.
#[test]
fn a_missing_journal_that_never_held_a_record_is_not_taken_for_a_loss() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    std::fs::remove_file(journal_path(&path)).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 0}), 1));
    store.update(|s| s["n"] = 1.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 1}), 2));
    // Records, then a compaction (a settings change leaving and re-entering journal
    // mode is one; here the threshold): its new journal holds no record yet.
    for n in 2..=4u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let small = Settings {
        format: Format::Journal,
        journal_max_bytes: Some(1),
        ..Settings::default()
    };
    store.save_settings(&small).unwrap();
    store.update(|s| s["n"] = 5.into()).unwrap();
    let (state, generation) = fresh(&path);
    assert_eq!(state, json!({"n": 5}));
    assert!(records(&path).is_empty(), "{:?}", records(&path));
    std::fs::remove_file(journal_path(&path)).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 5}), generation));
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["n"] = 6.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 6}), generation + 1));
}

/// Leaving journal mode clears the snapshot's note that a journal follows it (before
/// the settings say `plain`), so the plain file reads and commits as before, and a
/// sidecar deleted after that loses nothing and raises nothing.
#[test]
fn a_file_that_left_journal_mode_reads_as_plain_even_without_its_sidecar() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["n"] = 1.into()).unwrap();
    let plain = Settings {
        format: Format::Plain,
        ..Settings::default()
    };
    store.save_settings(&plain).unwrap();
    drop(store);
    let (state, generation) = fresh(&path);
    assert_eq!(state, json!({"n": 1}));
    let sidecar = journal_path(&path).parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&sidecar).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 1}), generation));
    let store: Store = Store::open(&path).unwrap();
    store.update(|s| s["n"] = 2.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 2}), generation + 1));
}

/// A store opened as a plain file before the file entered journal mode (it read the
/// settings then) meets the first journal-mode snapshot's note and its settings saying
/// `journal`: it is told to open again, and neither serves the snapshot without the
/// journal's commits nor commits on it.
#[test]
fn a_store_opened_before_the_file_entered_journal_mode_is_told_to_open_again() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let early: Store = Store::open(&path).unwrap();
    early.create(json!({"n": 0})).unwrap();
    let store: Store = Store::open(&path).unwrap();
    let journal = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    store.save_settings(&journal).unwrap();
    let store: Store = Store::open(&path).unwrap();
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let (state, generation) = fresh(&path);
    assert_eq!(state, json!({"n": 3}));
    for e in [
        early.load().map(|_| ()).unwrap_err(),
        early
            .update(|s| s["n"] = 99.into())
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            matches!(&e, Error::Unsupported { .. })
                && e.to_string().contains("open the store again"),
            "{e:?}"
        );
    }
    assert_eq!(fresh(&path), (json!({"n": 3}), generation));
}

/// Attack (held): readers racing compactions. A writer commits increments with a
/// journal threshold so small that every few commits compact (a new snapshot renamed in,
/// then a new journal); readers with fresh stores (a full read each time: journal
/// first, then snapshot) and a long-lived store (its cache's check of the journal and
/// the snapshot, then the journal's tail) read all the while. No read may fail (an
/// out-of-order pair read as "a snapshot older than the journal" would be a false
/// `Corrupt`), every state must be a committed one (`n` = generation - 1), and no
/// reader may see the generation go back.
#[test]
fn readers_racing_compactions_see_committed_states_in_order() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal_with(&path, Some(1200), json!({"n": 0}));
    const COMMITS: u64 = 300;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (path, done) = (&path, &done);
        let readers: Vec<_> = [false, false, true, true]
            .into_iter()
            .map(|long_lived| {
                scope.spawn(move || read_committed_states_in_order(path, long_lived, done))
            })
            .collect();
        for _ in 0..COMMITS {
            store
                .update(|s| s["n"] = (s["n"].as_u64().unwrap() + 1).into())
                .unwrap();
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    assert_eq!(fresh(&path), (json!({"n": COMMITS}), COMMITS + 1));
}

/// **Bug (red11): a journal append never checks that its lock is still the lock file
/// at its path, so two holders (one whose lock file a cleanup removed) append at the
/// same offset and one acknowledged commit overwrites the other.**
///
/// "The lock cannot split" (design.md): a cleanup may remove the lock file while a
/// writer holds it; the next writer then locks a new lock file. The plain protocol
/// checks right before its rename that its lock is still the one at the path
/// (`Guard::verify`: `LockLost`, nothing written), leaving a gap of microseconds. A
/// journal commit appends without that check, so the whole read-modify-write is the
/// gap: holder A (its lock file removed) and holder B (the new lock file) both read
/// the journal's end E and both `pwrite` their generation at E; the later write wins
/// and both commits are acknowledged. Here A began a transaction on a journal with no
/// record (so B's fresh descriptor needs no published end: the lock file's slots went
/// with the removed file), B committed `n` = 10, then A committed `n` = 1 from the `n` = 0
/// it read: A's record lands over B's, the file says `n` = 1 at generation 2 and B's
/// acknowledged update is gone. (With records in the journal, B finds no published end
/// in the new lock file and compacts, and A's append is refused because the journal was
/// replaced: safe by accident; a long-lived B cannot take part, it waits on the removed
/// lock file it keeps open. An empty journal is what every compaction leaves.) Breaks "no lost updates between processes/threads";
/// `security::a_holder_whose_lock_file_was_removed_commits_nothing` is the plain-format
/// test of the same attack. A fix: `guard.verify(dir)` before the append's `pwrite`
/// (as before a rename). Fixed: the append checks the lock first; and since a writer
/// appends to a journal with no record only once its start was published durable (a
/// later fix of session 11), B compacts here instead, and A's commit finds the journal
/// replaced: either way A is refused with `LockLost` and nothing of it is written.
#[test]
fn a_journal_holder_whose_lock_file_was_removed_commits_nothing() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let a = create_journal(&path, json!({"n": 0}));
    let mut tx = a.begin().unwrap();
    let lock = journal_path(&path).with_file_name("lock");
    std::fs::remove_file(&lock).unwrap();
    let b: Store = Store::options()
        .lock_timeout(std::time::Duration::ZERO)
        .open(&path)
        .unwrap();
    // The lock file at the path is a new one, so B gets it at once.
    b.update(|s| s["n"] = 10.into()).unwrap();
    assert_eq!(
        fresh(&path),
        (json!({"n": 10}), 2),
        "B's commit is acknowledged"
    );
    tx.state_mut()["n"] = 1.into();
    let outcome = tx.commit();
    assert_eq!(
        fresh(&path),
        (json!({"n": 10}), 2),
        "A's commit ({outcome:?}) overwrote B's acknowledged one"
    );
    assert!(
        matches!(outcome, Err(statesafe::Error::LockLost { .. })),
        "{outcome:?}"
    );
}

/// The document's text as a fresh store reads it, and as `store` (the writer) has it.
fn texts(path: &Path, store: &Store) -> (String, String) {
    (
        fresh(path).0.to_string(),
        store.load().unwrap().state.to_string(),
    )
}

/// **Bug (red11): journal mode silently drops a commit's key order, and the writer's
/// own store then disagrees with every other reader.**
///
/// statesafe keeps a document's key order (serde_json's `preserve_order`; a plain
/// commit is written unless its bytes are the file's, so a reordering is a change). A
/// journal commit is a `json_patch::diff` of the two trees, and compares them with
/// `==`, which for objects ignores order: a commit that only reorders keys writes
/// nothing (`new == old`), and a key inserted between two others is replayed by its
/// `add` at the end. The writer's store keeps the committed tree in its cache
/// (`cache::appended`), in the caller's order, so it serves `{"a":1,"b":2,"c":3}` while
/// a fresh store, the CLI and the next compaction's snapshot serve `{"a":1,"c":3,"b":2}`:
/// two readers of one generation see different documents, and the order the caller
/// committed is lost at the next compaction. Plain mode keeps both orders (checked
/// first here). Breaks "nothing silently changed" (as plain mode defines it). A fix:
/// compare with order (or byte checksums) and write the whole document (kind 4) when
/// the order changed; or document that journal mode keeps keys in insertion order and
/// make the writer's cache hold the replayed order.
#[test]
fn a_journal_commit_keeps_key_order_as_plain_mode_does() {
    // A long value, so that the record is a patch (a tiny document is written whole).
    let pad = "p".repeat(300);
    for format in [Format::Plain, Format::Journal] {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let store: Store = Store::open(&path).unwrap();
        let settings = Settings {
            format,
            ..Settings::default()
        };
        store
            .create_with(&settings, json!({"pad": pad, "a": 1, "c": 3}))
            .unwrap();
        store.load().unwrap();
        let inserted = json!({"pad": pad, "a": 1, "b": 2, "c": 3});
        store.update(|s| *s = inserted.clone()).unwrap();
        let (other, own) = texts(&path, &store);
        assert_eq!(own, inserted.to_string(), "{format:?}: the writer's store");
        assert_eq!(
            other, own,
            "{format:?}: a fresh store reads another document than the writer's store serves"
        );
        let reordered = json!({"c": 3, "b": 2, "a": 1, "pad": pad});
        store.update(|s| *s = reordered.clone()).unwrap();
        let (other, own) = texts(&path, &store);
        assert_eq!(
            (other, own),
            (reordered.to_string(), reordered.to_string()),
            "{format:?}: the reordering was not written (a fresh store, then the writer's)"
        );
    }
}

/// Attack: a group commit (`apply_patch` on a long-lived journal-mode store, which
/// applies each patch to its kept document) whose patch removes a key and then fails.
/// `json_patch::patch` undoes what it applied, but a removal moves the object's last
/// key into the gap and its undo appends the key again: the writer's kept document
/// comes back in another order than the file's, which every other reader replays.
/// The writer's store must serve what a fresh store reads, order included, after a
/// failed patch and after the commits that follow it (plain mode is checked first).
#[test]
fn a_failed_group_commit_leaves_the_writers_key_order_as_the_file_has_it() {
    let pad = "p".repeat(300);
    for format in [Format::Plain, Format::Journal] {
        let dir = common::test_dir();
        let path = dir.path().join("state.json");
        let store: Store = Store::open(&path).unwrap();
        let settings = Settings {
            format,
            ..Settings::default()
        };
        store
            .create_with(&settings, json!({"pad": pad, "a": 1, "b": 2, "c": 3}))
            .unwrap();
        // Two full reads: the store keeps the document from the second on.
        store.load().unwrap();
        store.load().unwrap();
        let failed = store.apply_patch(&json!([
            {"op": "remove", "path": "/a"},
            {"op": "test", "path": "/b", "value": 9}
        ]));
        assert!(
            matches!(failed, Err(statesafe::Error::Invalid { .. })),
            "{format:?}: {failed:?}"
        );
        let (other, own) = texts(&path, &store);
        assert_eq!(
            (other, own),
            (
                json!({"pad": pad, "a": 1, "b": 2, "c": 3}).to_string(),
                json!({"pad": pad, "a": 1, "b": 2, "c": 3}).to_string()
            ),
            "{format:?}: after a failed patch (a fresh store, then the writer's)"
        );
        store
            .apply_patch(&json!([{"op": "replace", "path": "/b", "value": 5}]))
            .unwrap();
        let (other, own) = texts(&path, &store);
        assert_eq!(
            other, own,
            "{format:?}: a fresh store reads another document than the writer's store serves"
        );
        assert_eq!(
            own,
            json!({"pad": pad, "a": 1, "b": 5, "c": 3}).to_string(),
            "{format:?}"
        );
    }
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// Attack (held): ENOSPC while the journal grows its preallocation. On a full tmpfs,
/// commits append inside the preallocated 64 KiB until one needs the journal to grow;
/// that one fails (no space, nothing written), and no reader (a fresh store, a
/// long-lived one, the writer itself) ever sees its record; once space is freed, the
/// next commit appends after the last acknowledged one.
#[test]
fn enospc_while_the_journal_grows_loses_and_shows_nothing() {
    let test = "journal_attacks::enospc_while_the_journal_grows_loses_and_shows_nothing";
    let dir = common::test_dir();
    let tiny = dir.path().join("tiny");
    let _mount = match common::Mount::tmpfs(&tiny, 1024 * 1024) {
        Ok(m) => m,
        Err(reason) => {
            common::skipped(test, &reason);
            return;
        }
    };
    let path = tiny.join("state.json");
    let store = create_journal(&path, json!({"n": 0, "pad": ""}));
    let reader: Store = Store::open(&path).unwrap();
    reader.load().unwrap();
    reader.load().unwrap();
    // One commit first: its published end grows the lock file to its slots' page (on a
    // full filesystem a publication fails, silently, and a fresh descriptor then finds
    // nothing to prove it and compacts, which needs space). The writer keeps its
    // descriptor from its second full read on.
    store.update(|s| s["n"] = 1.into()).unwrap();
    store.load().unwrap();
    store.load().unwrap();
    let filler = tiny.join("filler");
    fill(&filler);
    let mut acked = 1u64;
    let failure = loop {
        let next = acked + 1;
        let pad = format!("{next:0>2048}");
        match store.update(|s| {
            s["n"] = next.into();
            s["pad"] = pad.clone().into();
        }) {
            Ok(()) => acked = next,
            Err(e) => break e,
        }
        assert!(acked < 200, "the journal never needed to grow");
        assert_eq!(reader.load().unwrap().state["n"], acked);
    };
    assert!(
        acked >= 20,
        "commits appended inside the preallocation first: {acked}, then {failure:?}"
    );
    assert!(
        matches!(&failure, statesafe::Error::NoSpace { path, .. } if path.ends_with("journal")),
        "the growth of the journal failed: {failure:?}"
    );
    for (who, snap) in [
        (
            "a fresh store",
            Store::<Value>::open(&path).unwrap().load().unwrap(),
        ),
        ("a long-lived store", reader.load().unwrap()),
        ("the writer", store.load().unwrap()),
    ] {
        assert_eq!(
            (snap.state["n"].as_u64(), snap.generation),
            (Some(acked), acked + 1),
            "{who}"
        );
    }
    std::fs::remove_file(&filler).unwrap();
    store.update(|s| s["n"] = (acked + 1).into()).unwrap();
    for (who, snap) in [
        (
            "a fresh store",
            Store::<Value>::open(&path).unwrap().load().unwrap(),
        ),
        ("a long-lived store", reader.load().unwrap()),
        ("the writer", store.load().unwrap()),
    ] {
        assert_eq!(
            (snap.state["n"].as_u64(), snap.generation),
            (Some(acked + 1), acked + 2),
            "{who}"
        );
    }
}

/// **Bug (red11): after a single power loss, a long-lived store's commit leaves a torn
/// batch's survivor in place behind its own record, and readers replay it.**
///
/// The same end as the test above, without the second power loss. A long-lived store
/// (its document kept from its second locked full read on: here two transactions that
/// change nothing, as a service's store runs all day) checks the journal under the lock
/// with `read_journal_tail`, which stops at the first 4 KiB of zeros after its last
/// record, and takes that read's `dirty_to` as the end of the torn tail
/// (`cache::refresh`: `pos.dirty_to = start + found.dirty_to`), replacing the full
/// read's. design.md holds the shortcut sound "within one boot ... The gaps a power
/// loss leaves between pages are found by the full read, which every store makes
/// first", but the full read's finding is not what the append uses. After a power loss
/// that lost a torn batch's first pages (more than 4 KiB of zeros) and kept a later
/// record, the store appends at the tear and writes no zeros over the survivor; when its
/// record has the torn one's length (commits of one shape, a counter's, often do), the
/// survivor follows it contiguously with the next generation and verifies, and every
/// reader serves the new generation 3 with the old batch's generation 4 patched on top:
/// a state nobody committed, at once (no second crash needed). Breaks "after a crash the
/// state is old or new, never partial" and "nothing silently changed". A fix: keep the
/// full read's `dirty_to` when the tail read finds less, or zero to the end of the
/// preallocated space past a torn tail; and the chain check suggested above.
#[test]
fn a_long_lived_stores_append_at_a_tear_does_not_leave_the_batchs_survivor_behind() {
    // The survivor on a page boundary past the tail read's first piece (8 KiB from the
    // last record applied, generation 2's) whose last 4 KiB are then all zeros.
    let mut pad = 12000usize;
    let mut setup = None;
    for _ in 0..8 {
        let t = torn_batch(pad);
        let want = (t.torn.at + 8192 + 64).div_ceil(PAGE) * PAGE;
        if t.survivor.at == want {
            setup = Some(t);
            break;
        }
        pad = (pad as i64 + want as i64 - t.survivor.at as i64) as usize;
    }
    let t = setup.expect("a length that puts the survivor where the tail read stops short");
    let path = &t.path;
    // The power loss: generation 3's pages lost, generation 4's kept.
    write_range(
        path,
        t.torn.at,
        &vec![0; (t.survivor.at - t.torn.at) as usize],
    );
    // A store starting after the power loss: its full reads find the torn batch and
    // drop it whole.
    let store: Store = Store::open(path).unwrap();
    assert_eq!(
        (
            store.load().unwrap().state,
            store.load().unwrap().generation
        ),
        (json!({"n": 1, "s": ""}), 2)
    );
    // Two transactions that change nothing (a transaction's check needs the cache
    // filled by a locked read, which knows the file's ACL).
    store.update(|_| {}).unwrap();
    store.update(|_| {}).unwrap();
    store.update(|s| s["s"] = "y".repeat(pad).into()).unwrap();
    let recs = records(path);
    assert_eq!(
        (recs[1].at, recs[1].generation, recs[1].end),
        (t.torn.at, 3, t.survivor.at),
        "the store appended its generation 3 in the torn record's place, with its length"
    );
    let (state, generation) = fresh(path);
    let new = (json!({"n": 1, "s": "y".repeat(pad)}), 3);
    assert!(
        (state.clone(), generation) == new,
        "the reader serves generation {generation}, a state nobody committed: m = {}",
        state["m"]
    );
}

/// Flips one bit in the body of the first record: a bad record with good ones after it
/// that claim it durable (damage, not a torn tail).
fn damage_first_record(path: &Path) {
    let first = records(path)[0];
    let at = first.at + 16 + 2;
    let mut byte = read_range(path, at, at + 1);
    byte[0] ^= 0x01;
    write_range(path, at, &byte);
}

/// **Bug (red11): under the `fail` recovery policy, a journal-mode transaction on a
/// damaged journal quarantines it and commits on the state before the damage.**
///
/// `RecoveryPolicy::Fail` is "fail with `Error::Corrupt`; change nothing", and a plain
/// file under it does so for an `update` (checked in this test's first lines). In journal
/// mode a load fails as it should
/// (`journal::a_bad_record_before_good_ones_is_quarantined_and_repaired_loudly`), but
/// an `update` runs its closure on the snapshot plus the records before the damage
/// (`{"n": 0}`, where the commits after it had made `n` = 3), and `journal_commit`
/// quarantines the journal and compacts (`j.damage` is handled without looking at the
/// policy): the update returns `Ok`, the file says `{"n": 10}` at generation 5, and the
/// three acknowledged commits are only in `quarantine/`. Breaks "damage ... never
/// replaced" under the policy that promises it, and makes the caller's
/// read-modify-write start from a state that drops acknowledged commits. A fix: the
/// locked read reports the damage as `Corrupt` unless the policy allows a repair (as
/// `verify` does for plain files).
#[test]
fn a_writer_under_the_fail_policy_repairs_no_damaged_journal() {
    // Plain: a damaged file under `fail` is an error for an update.
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let plain: Store = Store::open(&path).unwrap();
    plain.create(json!({"n": 0})).unwrap();
    std::fs::write(&path, b"{\"n\": 1").unwrap();
    let strict: Store = Store::options()
        .recovery(statesafe::RecoveryPolicy::Fail)
        .open(&path)
        .unwrap();
    let err = strict.update(|s| s["n"] = 10.into()).unwrap_err();
    assert!(matches!(err, statesafe::Error::Corrupt { .. }), "{err:?}");

    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    drop(store);
    damage_first_record(&path);
    let journal = std::fs::read(journal_path(&path)).unwrap();
    let strict: Store = Store::options()
        .recovery(statesafe::RecoveryPolicy::Fail)
        .open(&path)
        .unwrap();
    let outcome = strict.update(|s| s["n"] = 10.into());
    assert!(
        matches!(outcome, Err(statesafe::Error::Corrupt { .. })),
        "{outcome:?}: the file now says {:?}",
        fresh(&path)
    );
    let err = strict
        .apply_patch(&json!([{"op": "replace", "path": "/n", "value": 11}]))
        .unwrap_err();
    assert!(matches!(err, statesafe::Error::Corrupt { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(journal_path(&path)).unwrap(),
        journal,
        "the damaged journal was changed"
    );
    let quarantine = journal_path(&path).with_file_name("quarantine");
    assert!(
        std::fs::read_dir(&quarantine).map_or(true, |mut d| d.next().is_none()),
        "something was quarantined"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()).unwrap(),
        json!({"n": 0}),
        "the snapshot was replaced"
    );
}

/// Attack (held): maintenance commands between a long-lived store's commits, on a
/// healthy journal with a torn tail (a writer killed mid-append): `check`, `recover`,
/// `restore` of a version from the journal, and leaving and re-entering journal mode
/// (each by another store, as the CLI does). No acknowledged commit is lost, none is
/// applied twice, the torn tail is never taken for a commit, and the long-lived store's
/// next commit builds on the newest state.
#[test]
fn maintenance_between_a_long_lived_stores_commits_loses_nothing() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0, "log": []}));
    let push = |store: &Store, n: u64| {
        store
            .update(|s| {
                s["n"] = n.into();
                s["log"].as_array_mut().unwrap().push(n.into());
            })
            .unwrap();
    };
    for n in 1..=3 {
        push(&store, n);
    }
    // A writer killed mid-append: half a record past the last one.
    let end = records(&path).last().unwrap().end;
    write_range(&path, end, &[0x55; 40]);
    let other: Store = Store::open(&path).unwrap();
    assert!(other.check().unwrap().is_ok());
    assert!(other.recover().unwrap().is_none(), "nothing to recover");
    push(&store, 4);
    // Restore generation 3 (n = 2), a version that only the journal holds.
    let restored = Store::<Value>::open(&path).unwrap().restore(3).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 2, "log": [1, 2]}), restored));
    push(&store, 5);
    let settings = |format| Settings {
        format,
        ..Settings::default()
    };
    Store::<Value>::open(&path)
        .unwrap()
        .save_settings(&settings(Format::Plain))
        .unwrap();
    let commit = store.update(|s| s["n"] = 99.into());
    assert!(
        commit.is_err(),
        "a journal-mode store after the switch: {commit:?}"
    );
    let plain: Store = Store::open(&path).unwrap();
    push(&plain, 6);
    plain.save_settings(&settings(Format::Journal)).unwrap();
    let again: Store = Store::open(&path).unwrap();
    push(&again, 7);
    push(&again, 8);
    // The first long-lived store, back in journal mode: it builds on the newest state.
    push(&store, 9);
    push(&again, 10);
    assert_eq!(
        fresh(&path).0,
        json!({"n": 10, "log": [1, 2, 5, 6, 7, 8, 9, 10]}),
        "every acknowledged commit, once, on the restored version"
    );
    assert_eq!(store.load().unwrap().state, fresh(&path).0);
}

/// Attack (held): fork after a store has its journal descriptor kept and proven and its
/// document cached; then the child and the parent append through their copies of the
/// store at the same time, by `apply_patch` (group commit, the cache, the kept
/// descriptor the child must not use) and by transactions. Every append lands exactly
/// once.
#[test]
fn a_forked_child_and_its_parent_appending_at_once_lose_and_repeat_nothing() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"log": []}));
    let append = |store: &Store, v: u64, patch: bool| {
        if patch {
            store
                .apply_patch(&json!([{"op": "add", "path": "/log/-", "value": v}]))
                .map(|_| ())
        } else {
            store.update(|s| s["log"].as_array_mut().unwrap().push(v.into()))
        }
    };
    for v in 0..3 {
        append(&store, v, true).unwrap();
    }
    store.load().unwrap();
    const EACH: u64 = 40;
    match common::fork() {
        None => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (0..EACH).all(|i| append(&store, 1000 + i, i % 2 == 0).is_ok())
            }))
            .unwrap_or(false);
            common::exit_now(if ok { 0 } else { 1 });
        }
        Some(pid) => {
            for i in 0..EACH {
                append(&store, 2000 + i, i % 3 != 0).unwrap();
            }
            assert_eq!(common::exit_code_of(pid), 0, "the child's appends failed");
        }
    }
    let mut log: Vec<u64> = fresh(&path).0["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    log.sort_unstable();
    let mut want: Vec<u64> = (0..3)
        .chain(1000..1000 + EACH)
        .chain(2000..2000 + EACH)
        .collect();
    want.sort_unstable();
    assert_eq!(log, want);
    assert_eq!(store.load().unwrap().state, fresh(&path).0);
}

const FULL_DISK_CHILD: &str = "journal_attacks::child_commits_once_on_a_full_disk";

/// Waits for its stdin to close, then appends `"child"` to `/l` of the journal-mode
/// file at PATH with a fresh store and reports `ack GENERATION` or `err KIND`.
#[test]
fn child_commits_once_on_a_full_disk() {
    if !common::child_role("commit-on-full-disk") {
        return;
    }
    let path = PathBuf::from(common::child_arg("PATH"));
    let mut sink = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink).unwrap();
    let store: Store = Store::open(&path).unwrap();
    match store.apply_patch(&json!([{"op": "add", "path": "/l/-", "value": "child"}])) {
        Ok(generation) => common::say(format!("ack {generation}")),
        Err(e) => common::say(format!("err {}: {e}", e.kind())),
    }
}

/// Writes into `path` until the filesystem has no block left (chunks of a page, then
/// of a 1 KiB block).
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [4096, 1024] {
        let block = vec![1u8; chunk];
        loop {
            match f.write(&block) {
                Ok(n) if n == chunk => {}
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    f.sync_all().unwrap();
}

/// **Bug (session 12, fixed): on a full disk, a process's publication of its flush
/// failed silently, and every process after it compacted, which a full disk refuses.**
///
/// A `Durability::Full` commit publishes the end it flushed in its slot of the lock
/// file (the slot of its process id modulo 64; "Shared flushes" in the design). The
/// first publication in a slot's block allocated that block; a failed one was
/// ignored. On a filesystem with 1 KiB blocks the 64 slots lie in four blocks, so a
/// second process's slot was often in a block no publication had written: on a full
/// disk its commit was appended (in the journal's preallocated space) and flushed, and
/// its publication failed with `ENOSPC`. A store opened after that record then found
/// no published end covering it, waited, and compacted: a whole snapshot written on a
/// full disk, which fails (`no_space`), although the journal had room. Now a journal
/// is started only once the lock file holds every slot's space, so a publication
/// overwrites blocks the file has.
#[test]
fn on_a_full_disk_every_process_appends_and_publishes_without_compacting() {
    let test =
        "journal_attacks::on_a_full_disk_every_process_appends_and_publishes_without_compacting";
    let dir = common::test_dir();
    let fs = dir.path().join("fs");
    let _mount = match common::Mount::ext4(&fs, &dir.path().join("fs.img"), 4 << 20, 1024) {
        Ok(m) => m,
        Err(reason) => {
            common::skipped(test, &reason);
            return;
        }
    };
    let path = fs.join("state.json");
    let store = create_journal(&path, json!({"l": []}));
    store
        .apply_patch(&json!([{"op": "add", "path": "/l/-", "value": "parent"}]))
        .unwrap();
    // A child whose slot lies in another 1 KiB block of the lock file than this
    // process's slot (the one block a publication had written).
    let block_of = |pid: u32| (4096 + u64::from(pid % 64) * 64) / 1024;
    let own = block_of(std::process::id());
    let mut child = loop {
        let child = common::ChildCmd::new(FULL_DISK_CHILD, "commit-on-full-disk")
            .arg("PATH", &path)
            .piped_stdin()
            .spawn();
        if block_of(child.pid()) != own {
            break child;
        }
    };
    fill_up(&fs.join("filler"));
    child.close_stdin();
    let out = child.read_all();
    assert!(child.wait().success(), "{out:?}");
    assert_eq!(out, vec!["ack 3".to_string()], "the child's append");
    // A store opened now: only the child's publication proves its record durable.
    let fresh: Store = Store::open(&path).unwrap();
    let appended = fresh.apply_patch(&json!([{"op": "add", "path": "/l/-", "value": "fresh"}]));
    assert!(
        matches!(appended, Ok(4)),
        "a commit after the child's compacted on the full disk: {appended:?}"
    );
    assert_eq!(
        fresh.get().unwrap(),
        json!({"l": ["parent", "child", "fresh"]})
    );
}

/// Runs the shell `script` as `nobody` (uid and gid 65534, no groups) and asserts that
/// it succeeded.
fn as_nobody(script: &str) {
    let (setpriv, to_nobody) = common::AS_NOBODY.split_first().unwrap();
    let out = std::process::Command::new(setpriv)
        .args(to_nobody)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A journal-mode state file that `nobody` may write (0666, so its sidecar is
/// world-writable too: another writer may plant anything in it), owned by root in a
/// sticky world-writable directory, with the snapshot `{"n": 0}`, then `/n` set to 1
/// (the journal's bytes then are returned), 2 and 3.
fn shared_journal(dir: &Path) -> (PathBuf, Store, Vec<u8>) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let path = dir.join("state.json");
    std::fs::write(&path, "{\"n\": 0}\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let store: Store = Store::open(&path).unwrap();
    store
        .save_settings(&Settings {
            format: Format::Journal,
            ..Settings::default()
        })
        .unwrap();
    store.update(|s| s["n"] = 1.into()).unwrap();
    let older = std::fs::read(journal_path(&path)).unwrap();
    for n in 2..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let sidecar = journal_path(&path).parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::metadata(&sidecar).unwrap().mode() & 0o777,
        0o777,
        "the sidecar of a world-writable file is world-writable"
    );
    (path, store, older)
}

/// Attack on `accept_snapshot`'s quarantine: the quarantine's name for the journal left
/// in the lost one's place (`journal-damaged-XXH3` of its bytes) is known in advance
/// to another writer, who plants there a symlink to root's private file before the
/// owner accepts. The planted entry used to be taken for the journal "quarantined
/// before", and the next compaction replaced the journal, so nothing kept it. Now the
/// journal gets a name of its own beside it; nothing is written, linked or changed
/// through the planted link, and the planted entry stays as it was.
#[test]
fn a_quarantine_name_planted_in_advance_does_not_stand_in_for_the_journal() {
    let test =
        "journal_attacks::a_quarantine_name_planted_in_advance_does_not_stand_in_for_the_journal";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    let (path, store, older) = shared_journal(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(journal_path(&path), &older).unwrap();
    let quarantine = journal_path(&path).parent().unwrap().join("quarantine");
    let name = format!(
        "journal-damaged-{:016x}",
        xxhash_rust::xxh3::xxh3_64(&older)
    );
    as_nobody(&format!(
        "mkdir -p '{q}' && ln -s '{secret}' '{q}/{name}'",
        q = quarantine.display(),
        secret = secret.display(),
    ));
    let accepted = store.accept_snapshot().unwrap().expect("a loss to accept");
    store.update(|s| s["n"] = 5.into()).unwrap();
    assert_eq!(fresh(&path), (json!({"n": 5}), accepted + 1));
    // The secret is untouched: its bytes, mode, owner and link count.
    let meta = std::fs::metadata(&secret).unwrap();
    assert_eq!(std::fs::read(&secret).unwrap(), b"root's secret\n");
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.nlink()),
        (0o600, 0, 1)
    );
    // The planted link is as it was, and the journal is kept under another name.
    let planted = quarantine.join(&name);
    assert!(
        std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_link(&planted).unwrap(), secret);
    let kept: Vec<_> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::symlink_metadata(p).unwrap().is_file())
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        kept.contains(&older),
        "the journal left in place is nowhere in the quarantine (the planted name stood in for it)"
    );
}

/// Attack on the journal start's reservation of the lock file's slot space (it writes
/// zeros past the lock file's end): another writer replaces the lock file with a hard
/// link to a file of root's it may write, or a symlink to root's private file, hoping
/// that the reservation (or the publication) extends or overwrites it. The lock file is
/// opened with the checks of a file statesafe writes (no symlink, one link), and the
/// reservation writes through that descriptor only: refused, nothing written.
#[test]
fn a_planted_lock_file_is_never_extended_by_a_journal_start() {
    let test = "journal_attacks::a_planted_lock_file_is_never_extended_by_a_journal_start";
    if !common::can_act_as_nobody(test) {
        return;
    }
    let dir = common::test_dir();
    let (path, store, _) = shared_journal(dir.path());
    let lock = journal_path(&path).parent().unwrap().join("lock");
    // A file of root's that nobody may write (so may hard-link, where the kernel
    // protects hard links), and one that is private (only a symlink can name it).
    let shared = dir.path().join("shared.txt");
    std::fs::write(&shared, "shared notes\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Every commit compacts and starts a new journal (which reserves the slots).
    let compact_every_commit = Settings {
        format: Format::Journal,
        journal_max_bytes: Some(1),
        ..Settings::default()
    };
    store.save_settings(&compact_every_commit).unwrap();
    for (planted, how) in [
        (
            &shared,
            format!("ln -f '{}' '{}'", shared.display(), lock.display()),
        ),
        (
            &secret,
            format!("ln -sf '{}' '{}'", secret.display(), lock.display()),
        ),
    ] {
        as_nobody(&how);
        let before = std::fs::read(planted).unwrap();
        for attempt in [
            store.update(|s| s["n"] = 7.into()).map(|_| ()),
            Store::<Value>::open(&path)
                .unwrap()
                .update(|s| s["n"] = 8.into())
                .map(|_| ()),
        ] {
            let e = attempt.expect_err("a commit through a planted lock file");
            assert!(matches!(e, Error::Unsafe { .. }), "{how}: {e:?}");
        }
        assert_eq!(std::fs::read(planted).unwrap(), before, "{how}: written");
        std::fs::remove_file(&lock).unwrap();
    }
}
