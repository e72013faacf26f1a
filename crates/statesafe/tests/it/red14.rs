//! Red team, session 14: the suspicions session 13's red team left open. An
//! `#[ignore = "red14: …"]` test is a bug not fixed yet (the comment says how it
//! happens and the fix; `--run-ignored all` runs it, to watch it fail); the others
//! showed a bug that is fixed now, or are attacks the code withstands, kept because no
//! other test makes them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{Value, json};
use statesafe::{Error, Format, Settings, Store};

use crate::common::{self, sidecar};

fn create_journal(path: &Path, doc: Value) -> Store {
    let store: Store = Store::open(path).unwrap();
    let settings = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    store.create_with(&settings, doc).unwrap();
    store
}

fn fresh(path: &Path) -> statesafe::Result<(Value, u64)> {
    let snap = Store::<Value>::open(path)?.load()?;
    Ok((snap.state, snap.generation))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A store opened while the file was plain keeps writing plain text after another
/// process recorded the sealed format (`statesafe settings FILE --format sealed`,
/// `save_settings`): session 13's `refresh_settings` applied every recorded setting
/// under the lock except the format ("the format stays this store's"), so the file the
/// settings call sealed lost its envelope, and with it the detection of any change
/// made outside statesafe, silently, until some other store's commit sealed it again.
/// The other way round, a sealed store kept sealing a file recorded as plain. A store
/// whose own options name a format keeps it (the options override the settings).
#[test]
fn a_store_opened_before_the_format_changed_writes_the_recorded_format() {
    let dir = common::test_dir();
    for (from, to) in [
        (Format::Plain, Format::Sealed),
        (Format::Sealed, Format::Plain),
    ] {
        let path = dir.path().join(format!("{}.json", from.name()));
        let early: Store = Store::open(&path).unwrap();
        let settings = Settings {
            format: from,
            ..Settings::default()
        };
        early.create_with(&settings, json!({"n": 0})).unwrap();
        let pinned: Store = Store::options().format(from).open(&path).unwrap();
        let admin: Store = Store::open(&path).unwrap();
        let mut recorded = admin.settings();
        recorded.format = to;
        admin.save_settings(&recorded).unwrap();
        early.update(|d| d["n"] = 1.into()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let sealed = text.contains("\"statesafe\"");
        assert_eq!(
            sealed,
            to == Format::Sealed,
            "{} -> {}: the store opened before wrote {text}",
            from.name(),
            to.name()
        );
        assert_eq!(early.settings().format, to);
        pinned.update(|d| d["n"] = 2.into()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.contains("\"statesafe\""),
            from == Format::Sealed,
            "a store whose options say `{}` wrote {text}",
            from.name()
        );
        assert_eq!(fresh(&path).unwrap(), (json!({"n": 2}), 3));
    }
}

/// The journal holds every change since the last compaction, so it must admit exactly
/// whom the state file admits, as the rest of the sidecar does ("the sidecar gives
/// each class what the file gives it"). `Sidecar::enforce` fixed the folders, the lock
/// file, `settings.json`, `meta` and history segments, never the journal, and a
/// journal append (no snapshot written) never called it: after `chmod 0600 FILE` the
/// journal stayed readable by every user who could read it before (the sidecar folder
/// too, until a compaction), and after `chmod 0666 FILE` another user granted write to
/// the file could not open the journal (nor the lock file) to commit.
#[test]
fn the_journal_follows_the_state_files_permissions() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|d| d["n"] = 1.into()).unwrap();
    let journal = sidecar(&path).join("journal");
    let lock = sidecar(&path).join("lock");
    for (n, (mode, journal_mode, lock_mode, dir_mode)) in [
        (0o600, 0o600, 0o600, 0o700),
        (0o666, 0o666, 0o666, 0o777),
        (0o640, 0o640, 0o600, 0o750),
    ]
    .into_iter()
    .enumerate()
    {
        let held = common::HeldInode::hold(&journal);
        chmod(&path, mode);
        store.update(|d| d["n"] = (n as u64 + 2).into()).unwrap();
        let after_long_lived = common::mode(&journal);
        let fresh_commit: Store = Store::open(&path).unwrap();
        fresh_commit.update(|d| d["m"] = n.into()).unwrap();
        assert!(
            held.is_at(&journal),
            "the commits compacted; this test wants appends"
        );
        assert_eq!(
            after_long_lived, journal_mode,
            "after chmod {mode:o}, the long-lived store's append left the journal's mode"
        );
        let got = (
            common::mode(&journal),
            common::mode(&lock),
            common::mode(&sidecar(&path)) & 0o777,
        );
        assert_eq!(
            got,
            (journal_mode, lock_mode, dir_mode),
            "after chmod {mode:o} and two journal commits: (journal, lock file, sidecar) modes"
        );
    }
}

/// rfix13b re-reads `settings.json` under the lock when its identity changed. In a
/// sticky world-writable directory, with the state file writable by everyone (so the
/// sidecar is too), a symlink to a private file of root's, a FIFO, or a hard link to
/// it is planted in its place between two commits of a long-lived store run by root.
/// The symlink and the FIFO held: the re-read goes through the sidecar's checked open,
/// as the first read does (no link followed, no FIFO waited on). The hard link did
/// not: both reads took any regular file, so root's private file was read and applied
/// as the file's settings (its keys even quoted in the error when it does not parse).
/// Now a settings file with a second name in a sidecar others may write is refused:
/// the commit fails with `Error::Unsafe` naming it, and nothing is read from or
/// written to the planted target.
#[test]
fn settings_planted_between_two_commits_are_refused_not_followed() {
    let test = "red14::settings_planted_between_two_commits_are_refused_not_followed";
    if !common::is_root() {
        return common::skipped(test, "needs root (a file owned by another user)");
    }
    let dir = common::test_dir();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(dir.path(), 0o755);
    chmod(&shared, 0o1777);
    let private = dir.path().join("private.json");
    std::fs::write(
        &private,
        "{\"format\": \"plain\", \"backups\": {\"keep\": 0}}\n",
    )
    .unwrap();
    chmod(&private, 0o600);
    for plant in ["symlink", "fifo", "hardlink"] {
        let path = shared.join(format!("{plant}.json"));
        let store: Store = Store::open(&path).unwrap();
        store.create(json!({"n": 0})).unwrap();
        chmod(&path, 0o666);
        store.update(|d| d["n"] = 1.into()).unwrap();
        let settings = sidecar(&path).join("settings.json");
        let _ = std::fs::remove_file(&settings);
        match plant {
            "symlink" => std::os::unix::fs::symlink(&private, &settings).unwrap(),
            "fifo" => assert!(
                std::process::Command::new("mkfifo")
                    .arg(&settings)
                    .status()
                    .unwrap()
                    .success()
            ),
            _ => std::fs::hard_link(&private, &settings).unwrap(),
        }
        if plant != "hardlink" {
            std::os::unix::fs::lchown(&settings, Some(4242), Some(4242)).unwrap();
        }
        let before = std::fs::metadata(&private).unwrap();
        let committed = store.update(|d| d["n"] = 2.into());
        match &committed {
            Err(Error::Unsafe { path: named, .. }) => assert_eq!(named, &settings, "{plant}"),
            other => panic!("{plant}: the commit with a planted settings file: {other:?}"),
        }
        let after = std::fs::metadata(&private).unwrap();
        assert_eq!(
            (after.mode(), after.uid(), after.ctime_nsec(), after.ctime()),
            (
                before.mode(),
                before.uid(),
                before.ctime_nsec(),
                before.ctime()
            ),
            "{plant}: the planted target was changed"
        );
        let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk, json!({"n": 1}), "{plant}");
        std::fs::remove_file(&settings).unwrap();
    }
}

/// `accept_snapshot` after an older copy of the journal was put back: the copy still
/// holds committed, acknowledged records (here generation 2), and only the records
/// after its end are lost. The acceptance used to restamp the snapshot (generation 1's
/// document) past the lost generations and quarantine the copy: generation 2's
/// document, which nothing had lost, was dropped from the state without a word (the
/// CLI said "the commits of the lost journal are gone"). Accepting the loss the reads
/// refused must keep every version that survives: the copy's records are replayed onto
/// the snapshot, and the state accepted is the newest of them.
#[test]
fn accepting_after_an_older_copy_keeps_the_copys_records() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    store.update(|s| s["n"] = 1.into()).unwrap();
    store.update(|s| s["kept"] = true.into()).unwrap();
    let older = std::fs::read(sidecar(&path).join("journal")).unwrap();
    for n in 2..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    std::fs::write(sidecar(&path).join("journal"), &older).unwrap();
    assert!(fresh(&path).is_err(), "the older copy was not refused");
    let writer: Store = Store::open(&path).unwrap();
    let accepted = writer.accept_snapshot().unwrap().expect("a loss to accept");
    assert!(accepted > 5, "generation {accepted} reuses a lost one");
    let (state, generation) = fresh(&path).unwrap();
    assert_eq!(
        state,
        json!({"n": 1, "kept": true}),
        "the accepted state dropped the older copy's committed records"
    );
    assert_eq!(generation, accepted);
    store.update(|s| s["n"] = 9.into()).unwrap();
    assert_eq!(
        fresh(&path).unwrap(),
        (json!({"n": 9, "kept": true}), accepted + 1)
    );
}

/// Reads the largest end any slot of the lock file publishes (`journal/durable.rs`:
/// 64 slots of 64 bytes from offset 4096, the end at bytes 32..40 of a slot).
fn published_end(lock: &Path) -> u64 {
    let bytes = std::fs::read(lock).unwrap();
    bytes
        .get(4096..)
        .unwrap_or_default()
        .chunks_exact(64)
        .filter(|s| &s[..8] == b"SSDURAB1")
        .map(|s| u64::from_le_bytes(s[32..40].try_into().unwrap()))
        .max()
        .unwrap_or(0)
}

/// Two writers whose process ids are equal modulo 64 publish their durable ends in the
/// same slot of the lock file (two stores of one process, the simplest such pair, or
/// threads of one store). Each publishes after its flush, without the lock: a writer
/// that appended first and flushed last wrote its smaller end over the larger one its
/// neighbour had published, so the lock file no longer witnessed the neighbour's
/// acknowledged record. An older copy of the journal, cut where the slots end, was
/// then read as the whole journal and a committed version rolled back silently
/// (`docs/design.md`, "A deleted sidecar"). Each round: both commit at once, then a
/// fresh reader of a copy cut at the published end must serve the last acknowledged
/// generation or refuse.
#[test]
fn a_late_publication_in_a_shared_slot_never_hides_an_acknowledged_record() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let a = create_journal(&path, json!({"a": 0, "b": 0}));
    let b: Store = Store::open(&path).unwrap();
    let journal = sidecar(&path).join("journal");
    let lock = sidecar(&path).join("lock");
    for round in 0..300u64 {
        std::thread::scope(|s| {
            s.spawn(|| a.update(|d| d["a"] = round.into()).unwrap());
            s.spawn(|| b.update(|d| d["b"] = round.into()).unwrap());
        });
        let acknowledged = a.generation().unwrap().max(b.generation().unwrap());
        let whole = std::fs::read(&journal).unwrap();
        let end = published_end(&lock) as usize;
        if end >= whole.len() {
            continue;
        }
        let mut cut = whole.clone();
        cut[end..].fill(0);
        if cut == whole {
            continue;
        }
        std::fs::write(&journal, &cut).unwrap();
        let read = fresh(&path);
        std::fs::write(&journal, &whole).unwrap();
        if let Ok((state, generation)) = read {
            assert!(
                generation >= acknowledged,
                "round {round}: the lock file witnesses the journal only up to byte {end}; the journal cut there was served as generation {generation} ({state}), older than the acknowledged {acknowledged}"
            );
        }
    }
}
