//! Red team, session 13: attacks on journal mode (issue 16) and what session 12 added
//! around it. An `#[ignore = "red13: …"]` test is a bug (the comment says how it
//! happens; `--run-ignored all` runs it, to watch it fail); the others are attacks the
//! code withstands, kept because no other test makes them.

use std::path::Path;

use serde_json::{Value, json};
use statesafe::{Error, Event, Format, Settings, Store};

use crate::common;
use crate::journal_attacks::{
    create_journal, create_journal_with, journal_path, quarantined, read_committed_states_in_order,
};

/// A seal header's exact fields, well typed: with a second member `state`, the
/// document has a sealed envelope's shape.
fn seal_header() -> Value {
    json!({
        "format": 1,
        "generation": 7,
        "time": "2026-01-01T00:00:00Z",
        "writer": {"pid": 1, "host": "h", "user": "u"},
        "xxh3": "0000000000000000"
    })
}

/// `apply_patch`'s group commit sends a patch touching the root, `/statesafe` or
/// `/state` to the transaction path, which refuses a document of the envelope's shape.
/// But a `remove` of any other top-level member moves the object's LAST member into
/// its place (serde_json's `preserve_order` `swap_remove`, which `json_patch` and the
/// replay both use): `{"statesafe": HEADER, "a": 1, "state": 2}` minus `/a` is
/// `{"statesafe": HEADER, "state": 2}`, the exact envelope, committed by the group
/// commit and acknowledged. `update` refuses the same change (`Error::Invalid`), and so
/// does every compaction after it: the next commit that compacts (leaving journal mode,
/// `statesafe settings --format plain`, a journal past its threshold) fails forever,
/// and a plain reader of the snapshot it would write would serve only `state`.
#[test]
fn a_remove_that_swaps_state_into_second_place_is_refused_like_update() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let doc = json!({"statesafe": seal_header(), "a": 1, "state": 2});
    let store = create_journal(&path, doc.clone());
    // The transaction path refuses the envelope shape.
    let by_update = store.update(|s| {
        s.as_object_mut().unwrap().swap_remove("a");
    });
    assert!(
        matches!(by_update, Err(Error::Invalid { .. })),
        "update: {by_update:?}"
    );
    let by_patch = store.apply_patch(&json!([{"op": "remove", "path": "/a"}]));
    let now = store.get().unwrap();
    let leaving = by_patch
        .is_ok()
        .then(|| store.save_settings(&Settings::default()));
    assert!(
        by_patch.is_err(),
        "apply_patch committed generation {by_patch:?}, an envelope-shaped document {now}, which update refuses; leaving journal mode then: {leaving:?}"
    );
    assert_eq!(now, doc);
}

/// Attack (held): numbers in every spelling JSON allows, through a group-commit
/// patch (the record is the caller's patch text), then a replay by a fresh store, a
/// compaction forced by a tiny `journal_max_bytes` (the snapshot is serialized from
/// the replayed tree) and a `cat` of the snapshot: each number keeps its text, so its
/// value, whoever reads it (`1e400` is not infinity, `-0.0` not `0`, `2**128` not
/// `3.4e38`, `0.1000000000000000055511151231257827` not `0.1`). (`-0` and integers
/// just past 64 bits: `apply_patch_keeps_every_number_it_is_given`, and every
/// spelling at random: `journal_numbers`.)
#[test]
fn numbers_through_journal_patches_keep_their_text_after_compaction() {
    let numbers = [
        "1e400",
        "-1E-400",
        "-0.0",
        "340282366920938463463374607431768211456",
        "0.1000000000000000055511151231257827",
        "1.50",
        "2E5",
        "9007199254740993",
    ];
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    for (i, text) in numbers.iter().enumerate() {
        let patch: Value = serde_json::from_str(&format!(
            r#"[{{"op": "add", "path": "/k{i}", "value": {text}}}, {{"op": "add", "path": "/a", "value": [{text}]}}]"#
        ))
        .unwrap();
        store.apply_patch(&patch).unwrap();
    }
    let expect = |doc: &Value| {
        for (i, text) in numbers.iter().enumerate() {
            assert_eq!(doc[format!("k{i}")].to_string(), *text, "k{i}");
        }
        assert_eq!(doc["a"][0].to_string(), numbers[numbers.len() - 1]);
    };
    // A fresh store replays the records.
    let fresh: Store = Store::open(&path).unwrap();
    expect(&fresh.get().unwrap());
    // Compaction at every commit from here on: the snapshot is the replayed tree.
    let mut settings = fresh.settings();
    settings.journal_max_bytes = Some(1);
    fresh.save_settings(&settings).unwrap();
    fresh.update(|s| s["n"] = 1.into()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for text_of in numbers {
        assert!(text.contains(text_of), "{text_of} in the snapshot {text}");
    }
    let from_file: Value = serde_json::from_str(&text).unwrap();
    expect(&from_file);
    expect(&Store::<Value>::open(&path).unwrap().get().unwrap());
}

/// The numbers of a document created from text (as the CLI, the bindings and
/// `serde_json::from_str` make them: each number keeps its text).
const NUMBERS: &str = r#"{"n": 0, "z": -0, "zf": -0.0, "big": 18446744073709551617, "neg": -9223372036854775809, "e": 1e400, "d": 1.50, "E": 2E5}"#;

/// A long-lived journal-mode store keeps the replayed document from its second full
/// read on (`journal/cache.rs`) and decodes each read's and each transaction's `T` from
/// that tree. That decoding turns the integer `-0` into `0`: from its third read on, a
/// reader serves `"z": 0` (the file says `-0`), and a writer's next commit's new document has `"z":
/// 0` although the caller's closure never touched `z`, the diff against the kept tree
/// sees the change, and the record (here the whole document, shorter than the patch)
/// commits it: every reader from then on gets `0`. A number changed by a commit that
/// did not touch it. (Plain and sealed files read the text afresh at each transaction
/// and keep `-0`; `docs/design.md`: numbers keep their value, `-0` included, as the
/// CLI's `large.rs` and `documents.rs`'s number strategy expect.)
#[test]
fn a_journal_commit_keeps_numbers_it_did_not_touch() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let doc: Value = serde_json::from_str(NUMBERS).unwrap();
    let store = create_journal(&path, doc.clone());
    let reader = Store::<Value>::open(&path).unwrap();
    for read in 0..3 {
        assert_eq!(
            reader.get().unwrap().to_string(),
            doc.to_string(),
            "read {read}"
        );
    }
    for i in 1..=4 {
        store.update(|s| s["n"] = i.into()).unwrap();
    }
    let mut expected = doc;
    expected["n"] = 4.into();
    let fresh = Store::<Value>::open(&path).unwrap().get().unwrap();
    assert_eq!(fresh.to_string(), expected.to_string());
}

/// `Store::apply_patch` converts the caller's patch (a `Value`) into a
/// `json_patch::Patch` with `serde_json::from_value`, which goes through serde's data
/// model: there an integer `-0` is `0` (the added value is `0`, in every format: a
/// number changed), and an integer past the 64-bit range (`18446744073709551617`,
/// `-9223372036854775809`, which the documents hold exactly) is refused as "the
/// patch is not an RFC 6902 patch: invalid type: integer ... as u128": a valid patch
/// refused with a wrong cause. `update` and `replace` keep both.
#[test]
fn apply_patch_keeps_every_number_it_is_given() {
    let dir = common::test_dir();
    for format in [Format::Plain, Format::Journal] {
        for text in ["-0", "18446744073709551617", "-9223372036854775809"] {
            let path = dir.path().join(format!("{format:?}{text}.json"));
            let store: Store = Store::open(&path).unwrap();
            let settings = Settings {
                format,
                ..Settings::default()
            };
            store.create_with(&settings, json!({"n": 0})).unwrap();
            let patch: Value = serde_json::from_str(&format!(
                r#"[{{"op": "add", "path": "/k", "value": {text}}}]"#
            ))
            .unwrap();
            let applied = store.apply_patch(&patch);
            assert!(applied.is_ok(), "{format:?} {text}: {applied:?}");
            let back = Store::<Value>::open(&path).unwrap().get().unwrap();
            assert_eq!(back["k"].to_string(), text, "{format:?}");
        }
    }
}

/// Sets `fs.protected_hardlinks` for the life of the value, then restores it.
struct HardlinkSysctl(String);

impl HardlinkSysctl {
    const PATH: &'static str = "/proc/sys/fs/protected_hardlinks";
    fn set(value: &str) -> std::io::Result<HardlinkSysctl> {
        let old = std::fs::read_to_string(Self::PATH)?;
        std::fs::write(Self::PATH, value)?;
        Ok(HardlinkSysctl(old.trim().to_string()))
    }
}

impl Drop for HardlinkSysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// What a write to an inode's metadata changes: its change time, and its link count.
fn inode_marks(path: &Path) -> (i64, i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.ctime(), m.ctime_nsec(), m.nlink())
}

/// Another user (uid 4242) plants, in a sticky world-writable directory, the name
/// root means to use as a HARD LINK to a root-owned 0600 file elsewhere
/// (`/var/lib/app/secret.json`; the kernel lets them where `fs.protected_hardlinks` is
/// 0, which the torture suite's adversarial notes call the kernel's default). The
/// planted name is root's own file, so the protected_regular rule statesafe applies
/// (root writes only its own files or the directory owner's there) lets it through,
/// and root's first commit adopts it: it stamps the victim inode with a
/// `user.statesafe` attribute (a write to a file the attacker could not touch, which
/// also changes its ctime) and links the victim inode into the sidecar as backup 1 (a
/// root-only file now kept alive under `/tmp`, whoever deletes the original). The
/// symlink variant is refused (adversarial attack "state file symlinked by A to
/// root's file"); a link count above 1 on a file in a sticky world-writable directory
/// says the same thing and is not looked at.
#[test]
fn a_hard_link_planted_in_a_sticky_directory_gains_its_planter_nothing() {
    let test = "red13::a_hard_link_planted_in_a_sticky_directory_gains_its_planter_nothing";
    if !common::is_root() {
        return common::skipped(test, "needs root to act as two users and set a sysctl");
    }
    let dir = common::test_dir();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let victim = private.join("secret.json");
    std::fs::write(&victim, "{\"secret\": \"root only\", \"n\": 0}\n").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let path = shared.join("app.json");
    let planted = {
        let _sysctl = match HardlinkSysctl::set("0") {
            Ok(s) => s,
            Err(e) => return common::skipped(test, &format!("cannot set the sysctl: {e}")),
        };
        std::process::Command::new("setpriv")
            .args(["--reuid=4242", "--regid=4242", "--clear-groups", "--", "ln"])
            .arg(&victim)
            .arg(&path)
            .status()
    };
    match planted {
        Ok(s) if s.success() => {}
        other => return common::skipped(test, &format!("uid 4242 could not link: {other:?}")),
    }
    let before = inode_marks(&victim);
    let store: Store = Store::open(&path).unwrap();
    let committed = store.update(|s| s["n"] = 1.into());
    let after = inode_marks(&victim);
    // Root's commit is refused (a second name in a sticky world-writable directory is
    // what a planted hard link looks like), and nothing was written on the victim:
    // no stamp (change time), no link kept in a sidecar (link count).
    assert_eq!(
        after, before,
        "root's commit ({committed:?}) through the planted hard link wrote on the victim inode (change time) or kept a link to it (link count); (ctime s, ns, links) before {before:?}, after {after:?}"
    );
    match committed {
        Err(Error::Unsafe {
            path: refused,
            reason,
            ..
        }) => {
            assert_eq!(refused, path);
            assert!(reason.contains("hard links"), "{reason}");
        }
        other => panic!("root's commit through the planted hard link: {other:?}"),
    }
    assert!(
        !shared.join(".app.json.statesafe").exists(),
        "a sidecar was made for the planted file"
    );
}

/// A journal whose first record is damaged while a later record's writer held it
/// durable is repaired by the next load under the default policy: the journal is
/// quarantined and the snapshot (plus the records before the damage, none here) is
/// committed as a new generation (`docs/design.md`, "Journal mode"). The event that
/// reports it (`Event::Recovered`, printed by the CLI as a `warning:` and logged) says
/// "replaced by the default state": its `restored_from` is `None`, which means "the
/// store's default state". The state served is the snapshot of generation 1, with the
/// caller's data, not a default: the message misstates what was done to the file (a
/// reader told their state was reset to a default, or one who trusts it and does not
/// look at what the snapshot kept), and names no generation it came from.
#[test]
fn a_repaired_journal_is_reported_as_the_snapshot_it_kept() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0, "kept": "from the snapshot"}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let journal = path.with_file_name(".state.json.statesafe").join("journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[32 + 16 + 2] ^= 0x01;
    std::fs::write(&journal, &bytes).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    let reader: Store = Store::options()
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .open(&path)
        .unwrap();
    let snap = reader.load().unwrap();
    assert_eq!(snap.state, json!({"n": 0, "kept": "from the snapshot"}));
    let events = seen.lock().unwrap().clone();
    let recovered: Vec<String> = events
        .iter()
        .filter(|e| matches!(e, Event::Recovered { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(recovered.len(), 1, "{events:?}");
    assert!(
        !recovered[0].contains("default state") && recovered[0].contains("generation 1"),
        "{}",
        recovered[0]
    );
}

/// `docs/design.md` ("What is damage"): "the schema *recorded in the settings* binds
/// every writer of the file". A store reads the settings when it is opened, and
/// `save_settings` applies them only to "every writer that opens it from now on": a
/// long-lived store opened before another process recorded a schema (`statesafe
/// settings FILE --schema S`) keeps committing documents the schema refuses, in a
/// transaction and by `apply_patch`'s group commit alike, in every format (the
/// journal-mode writer re-reads the settings under the lock before each commit, but
/// only for the format). Every reader opened since then (the CLI's `get` included) is
/// refused the committed version (`Error::Mismatch`: "the recorded schema (changed
/// since it was committed) refuses it"), so the state can no longer be read by a
/// newly started program until someone replaces it.
#[test]
fn a_schema_recorded_by_another_process_binds_a_store_opened_before() {
    let dir = common::test_dir();
    for format in [Format::Plain, Format::Journal] {
        let path = dir.path().join(format!("{format:?}.json"));
        let early: Store = Store::open(&path).unwrap();
        let settings = Settings {
            format,
            ..Settings::default()
        };
        early.create_with(&settings, json!({"n": 0})).unwrap();
        early.get().unwrap();
        early.get().unwrap();
        let admin: Store = Store::open(&path).unwrap();
        let mut recorded = admin.settings();
        recorded.schema = Some(json!({"type": "object", "properties": {"n": {"type": "integer"}}}));
        admin.save_settings(&recorded).unwrap();
        assert!(matches!(
            admin.update(|d| d["n"] = json!("x")),
            Err(Error::Invalid { .. })
        ));
        let by_update = early.update(|d| d["n"] = json!("y"));
        let by_patch = early.apply_patch(&json!([{"op": "replace", "path": "/n", "value": "z"}]));
        let later = Store::<Value>::open(&path).unwrap().get();
        assert!(
            by_update.is_err() && by_patch.is_err(),
            "{format:?}: update {by_update:?}, apply_patch {by_patch:?}; a reader opened now: {later:?}"
        );
    }
}

/// Attack (held): a file leaves journal mode for the sealed format while long-lived
/// journal-mode stores (one keeping the replayed document, one not yet) are open. The
/// snapshot is then a sealed envelope: a journal-mode reader must not serve the
/// envelope (`{"statesafe": …, "state": …}`) as the document, nor the document it kept
/// from before; its commits must not append to the journal left behind.
#[test]
fn leaving_journal_mode_for_sealed_under_long_lived_journal_stores() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let kept = create_journal(&path, json!({"n": 0}));
    kept.update(|d| d["n"] = 1.into()).unwrap();
    kept.get().unwrap();
    kept.get().unwrap();
    let fresh: Store = Store::open(&path).unwrap();
    fresh.get().unwrap();
    let admin: Store = Store::open(&path).unwrap();
    let mut settings = admin.settings();
    settings.format = Format::Sealed;
    admin.save_settings(&settings).unwrap();
    admin.update(|d| d["n"] = 2.into()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"statesafe\""), "{text}");
    assert_eq!(kept.get().unwrap(), json!({"n": 2}));
    assert_eq!(fresh.get().unwrap(), json!({"n": 2}));
    for store in [&kept, &fresh] {
        assert!(matches!(
            store.update(|d| d["n"] = 3.into()),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            store.apply_patch(&json!([{"op": "replace", "path": "/n", "value": 4}])),
            Err(Error::Unsupported { .. })
        ));
    }
    let last = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(last.state, json!({"n": 2}));
    assert_eq!(last.generation, 4);
}

/// Attack (held): `readers_racing_compactions_see_committed_states_in_order`
/// (journal_attacks.rs) with group commits as the writers: 4 threads share one store
/// and each commits `n` + 1 by `apply_patch` with a `test` of the `n` it read (a
/// patch whose test fails writes nothing and fails alone), batches of them share one
/// `pwrite` and one flush, and a tiny `journal_max_bytes` makes the batches fall back
/// to compactions again and again. Readers (fresh stores, and long-lived ones that
/// keep the replayed document and read only the journal's tail) must never fail, never
/// see a state no commit made (`n` = generation - 1) and never see the generation go
/// back; at the end every acknowledged patch is in the file once.
#[test]
fn readers_racing_group_commits_and_compactions_see_committed_states_in_order() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal_with(&path, Some(1500), json!({"n": 0}));
    const PER_WRITER: u64 = 60;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (path, done, store) = (&path, &done, &store);
        let readers: Vec<_> = [false, true, true]
            .into_iter()
            .map(|long_lived| {
                scope.spawn(move || read_committed_states_in_order(path, long_lived, done))
            })
            .collect();
        let writers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut acked = 0u64;
                    while acked < PER_WRITER {
                        let n = store.get().unwrap()["n"].as_u64().unwrap();
                        let patch = json!([
                            {"op": "test", "path": "/n", "value": n},
                            {"op": "replace", "path": "/n", "value": n + 1},
                        ]);
                        match store.apply_patch(&patch) {
                            Ok(g) => {
                                assert_eq!(g, n + 2, "generation of n = {}", n + 1);
                                acked += 1;
                            }
                            Err(Error::Invalid { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    let last = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(last.state, json!({"n": 4 * PER_WRITER}));
    assert_eq!(last.generation, 4 * PER_WRITER + 1);
}

/// **An acknowledged group commit is rolled back by the next reader.** `apply_patch`
/// applies `serde_json::from_value(patch)` to the long-lived store's kept document, and
/// that conversion turns an integer `-0` into `0` (see
/// `apply_patch_keeps_every_number_it_is_given`), while the record it appends is the
/// caller's patch text, `-0` included. So after `add /k -0` the writer keeps `"k": 0`
/// and the file replays `"k": -0` (two numbers that `json_patch`'s `test` tells
/// apart). A later patch `[test /k 0, replace /n 1]` passes on the writer's kept
/// document and is appended and acknowledged as generation 3. Every other reader
/// replays it on `"k": -0`, where the `test` fails: the record does not apply, which
/// the reader takes for damage (a record that verifies but does not apply), and under
/// the default policy the *reader* quarantines the journal and commits the snapshot
/// plus the records before it as generation 4: `n` is back to 0, and the writer itself
/// sees that on its next read. Breaks "every acknowledged write survives" and "a
/// committed version never rolled back by a reader". (Any other difference between
/// the kept document and the replayed one would do the same; `-0` is the one found.)
#[test]
fn a_group_commit_acknowledged_after_a_minus_zero_is_not_rolled_back_by_a_reader() {
    let dir = common::test_dir();
    let path = dir.path().join("state.json");
    let store = create_journal(&path, json!({"n": 0}));
    // From its second full read on the store keeps the replayed document.
    store.get().unwrap();
    store.get().unwrap();
    let add: Value = serde_json::from_str(r#"[{"op": "add", "path": "/k", "value": -0}]"#).unwrap();
    assert_eq!(store.apply_patch(&add).unwrap(), 2);
    let guarded: Value = serde_json::from_str(
        r#"[{"op": "test", "path": "/k", "value": 0}, {"op": "replace", "path": "/n", "value": 1}]"#,
    )
    .unwrap();
    let acknowledged = store.apply_patch(&guarded);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    let reader: Store = Store::options()
        .on_event(move |e| sink.lock().unwrap().push(e.to_string()))
        .open(&path)
        .unwrap();
    let read = reader.load().map(|s| (s.generation, s.state["n"].clone()));
    if let Ok(generation) = acknowledged {
        assert_eq!(
            read.as_ref().ok(),
            Some(&(generation, json!(1))),
            "generation {generation} (n = 1) was acknowledged; a reader then got {read:?}, events {:?}",
            seen.lock().unwrap()
        );
    }
}

/// Attack (held): the invariant whose break rolls back acknowledged commits
/// (`a_group_commit_acknowledged_after_a_minus_zero_is_not_rolled_back_by_a_reader`):
/// a long-lived writer's kept document must be exactly what every other reader
/// replays from the file. Random documents (objects with keys inserted in random
/// orders and repeated, arrays, nesting) replace each other by `update`; each record is
/// a diff of the kept tree against the new one, and after each commit the writer's
/// document, a fresh reader's replay and the caller's document must be the same text,
/// key order included. `STATESAFE_IT_SEED` repeats a run.
#[test]
fn a_long_lived_writers_document_is_what_every_reader_replays() {
    let dir = common::test_dir();
    let mut seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1234_5678_9abc_def1);
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    fn make(rnd: &mut dyn FnMut(u64) -> u64, depth: u32) -> Value {
        match if depth > 2 { rnd(3) } else { rnd(6) } {
            0 => json!(rnd(5)),
            1 => json!(format!("s{}", rnd(4))),
            2 => Value::Null,
            3 | 4 => {
                let mut m = serde_json::Map::new();
                for _ in 0..rnd(5) {
                    m.insert(format!("k{}", rnd(6)), make(rnd, depth + 1));
                }
                Value::Object(m)
            }
            _ => Value::Array((0..rnd(4)).map(|_| make(rnd, depth + 1)).collect()),
        }
    }
    for round in 0..12 {
        let path = dir.path().join(format!("s{round}.json"));
        let store = create_journal(&path, json!({"n": 0}));
        store.get().unwrap();
        store.get().unwrap();
        for step in 0..30 {
            let mut next = make(&mut rnd, 0);
            if !next.is_object() {
                next = json!({"v": next});
            }
            store.update(|d| *d = next.clone()).unwrap();
            let w = store.get().unwrap().to_string();
            let f = Store::<Value>::open(&path)
                .unwrap()
                .get()
                .unwrap()
                .to_string();
            let committed = next.to_string();
            assert!(
                w == f && w == committed,
                "round {round} step {step}: committed {committed}\nwriter keeps {w}\nreaders replay {f}"
            );
        }
    }
}

/// **A journal whose header is damaged is repaired to the snapshot under a generation
/// the lost records already used.** Three commits (generations 2, 3 and 4, each
/// acknowledged and published in the lock file's slots) follow the snapshot of
/// generation 1; then the journal's 32-byte header is damaged (a bit flip, or the
/// file truncated to zero by a cleanup's `copytruncate`). The next load takes it for
/// damage (right) and, under the default policy, quarantines the journal and commits
/// the snapshot as "a new generation past every generation the journal shows": with an
/// unreadable header the journal shows none, so that is generation 2, the generation
/// of the acknowledged `{"n": 1}`. The lock file's slots, which the path for a
/// deleted journal reads (`published_for_header`) and `accept_snapshot` counts lost
/// records from, are not consulted. So generation 2 now names `{"n": 0}`, and a
/// compare-and-swap made by a client that read `{"n": 1}` at generation 2 succeeds on
/// a document it never saw: a lost update. (A deleted journal at the same point is
/// refused, and accepting it moves the generation past 4.)
#[test]
fn a_journal_with_a_damaged_header_is_repaired_past_every_generation_it_held() {
    let dir = common::test_dir();
    for truncate in [false, true] {
        let path = dir.path().join(format!("s{truncate}.json"));
        let store = create_journal(&path, json!({"n": 0}));
        for n in 1..=3u64 {
            store.update(|s| s["n"] = n.into()).unwrap();
        }
        let client = Store::<Value>::open(&path).unwrap().load().unwrap();
        let at_two = 2;
        assert_eq!(client.generation, 4);
        let journal = journal_path(&path);
        let mut bytes = std::fs::read(&journal).unwrap();
        if truncate {
            bytes.clear();
        } else {
            bytes[9] ^= 0x01;
        }
        std::fs::write(&journal, &bytes).unwrap();
        let reader: Store = Store::open(&path).unwrap();
        let read = reader.load().map(|s| (s.generation, s.state));
        // A client that read `{"n": 1}` at generation 2 compares and swaps.
        let stale = Store::<Value>::open(&path)
            .unwrap()
            .update_if(at_two, |s| s["n"] = 100.into());
        match &read {
            Err(Error::Corrupt { .. }) => {}
            Ok((generation, _)) => assert!(
                *generation > 4 && stale.is_err(),
                "truncated {truncate}: the repair gave {read:?} (generations 2..=4 were acknowledged); a compare-and-swap expecting generation 2 then: {stale:?}"
            ),
            Err(e) => panic!("{e}"),
        }
    }
}

/// The way out of the refusal above: `accept_snapshot` quarantines the journal with
/// the damaged header (never deleting it) and gives the snapshot a generation past
/// every one the lost records could have used, so the stale compare-and-swap fails;
/// the store then commits again. A journal whose header is damaged while the lock
/// file shows no acknowledged record after it (a journal that held none) is no loss:
/// the load repairs it quietly, as before, past the snapshot's generation.
#[test]
fn a_damaged_journal_header_is_accepted_past_its_lost_generations_or_repaired_when_it_held_nothing()
{
    let dir = common::test_dir();
    let path = dir.path().join("s.json");
    let store = create_journal(&path, json!({"n": 0}));
    for n in 1..=3u64 {
        store.update(|s| s["n"] = n.into()).unwrap();
    }
    let journal = journal_path(&path);
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[9] ^= 0x01;
    std::fs::write(&journal, &bytes).unwrap();
    let reader: Store = Store::open(&path).unwrap();
    match reader.load() {
        Err(Error::Corrupt { reason, .. }) => assert!(
            reason.contains("--accept-snapshot") && reason.contains("header"),
            "{reason}"
        ),
        other => panic!("the lost journal was served: {other:?}"),
    }
    assert!(matches!(
        reader.update(|s| s["n"] = 9.into()),
        Err(Error::Corrupt { .. })
    ));
    let accepted = reader.accept_snapshot().unwrap().expect("a loss to accept");
    assert!(accepted > 4, "accepted as generation {accepted}");
    assert!(
        quarantined(&path).contains(&bytes),
        "the damaged journal was not quarantined"
    );
    assert!(
        Store::<Value>::open(&path)
            .unwrap()
            .update_if(2, |s| s["n"] = 100.into())
            .is_err()
    );
    let snap = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert_eq!(snap.state, json!({"n": 0}));
    assert!(snap.generation >= accepted, "{snap:?}");
    reader.update(|s| s["n"] = 5.into()).unwrap();
    let next = Store::<Value>::open(&path).unwrap().load().unwrap();
    assert!(next.generation > snap.generation, "{next:?}");
    assert_eq!(next.state, json!({"n": 5}));

    // Nothing acknowledged after the snapshot: repaired on load, no refusal.
    let empty = dir.path().join("e.json");
    create_journal(&empty, json!({"n": 0}));
    let journal = journal_path(&empty);
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[9] ^= 0x01;
    std::fs::write(&journal, &bytes).unwrap();
    let snap = Store::<Value>::open(&empty).unwrap().load().unwrap();
    assert_eq!(snap.state, json!({"n": 0}));
    assert!(snap.generation > 1, "{snap:?}");
}
