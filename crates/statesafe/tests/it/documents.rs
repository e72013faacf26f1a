//! Documents as JSON allows them (issue 11 items 1, 4 and 9; issue 12 item 6): numbers
//! keep their text, deep nesting is held and the limit is the same on write and read,
//! duplicate keys are refused, the file keeps its layout, and a torn history line does
//! not swallow the next entry.
//!
//! Defends FAILURE_MODES rows 21 (numbers silently rounded) and 26 (a torn last
//! record confused with the next).

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;
use statesafe::{Durability, Error, Layout, Store};

use crate::common;

fn store(path: &Path) -> Store<Value> {
    Store::<Value>::options()
        .durability(Durability::None)
        .open(path)
        .unwrap()
}

pub(crate) fn parse(text: &str) -> Value {
    statesafe::json::parse(text.as_bytes()).unwrap()
}

/// The number tokens of JSON text, in order (strings skipped).
fn number_tokens(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                tokens.push(&text[start..i]);
            }
            _ => i += 1,
        }
    }
    tokens
}

#[test]
fn numbers_keep_their_text_through_commits() {
    let dir = common::test_dir();
    let path = dir.path().join("n.json");
    let doc = r#"{"id":18446744073709551616,"big":12345678901234567890123,"e":1e2,"z":-0,"f":1.0,"d":0.10,"x":0}"#;
    let s = store(&path);
    s.replace(parse(doc)).unwrap();
    s.update(|v| v["x"] = Value::from(1)).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = s.load().unwrap().state;
    for key in ["id", "big", "e", "z", "f", "d"] {
        assert_eq!(
            loaded[key].to_string(),
            parse(doc)[key].to_string(),
            "{key}"
        );
    }
    assert_eq!(
        number_tokens(&text),
        [
            "18446744073709551616",
            "12345678901234567890123",
            "1e2",
            "-0",
            "1.0",
            "0.10",
            "1"
        ]
    );
    // A file written by another program, adopted: the same.
    std::fs::write(
        &path,
        "{\"n\": 123456789012345678901234567890, \"m\": -0.0}\n",
    )
    .unwrap();
    s.update(|v| v["x"] = Value::from(2)).unwrap();
    assert_eq!(
        number_tokens(&std::fs::read_to_string(&path).unwrap()),
        ["123456789012345678901234567890", "-0.0", "2"]
    );
}

#[test]
fn a_file_with_a_repeated_key_is_named_not_silently_last_wins() {
    let dir = common::test_dir();
    let path = dir.path().join("d.json");
    std::fs::write(&path, "{\"a\": 1,\n \"a\": 2}\n").unwrap();
    let err = Store::<Value>::options()
        .recovery(statesafe::RecoveryPolicy::Fail)
        .open(&path)
        .unwrap()
        .load()
        .unwrap_err();
    match &err {
        Error::Corrupt {
            line: Some(2),
            reason,
            ..
        } => assert!(reason.contains("duplicate key `a`"), "{err}"),
        other => panic!("expected Corrupt at line 2, got {other}"),
    }
}

#[test]
fn deep_documents_are_held_on_a_default_thread_stack_and_refused_past_the_limit() {
    let dir = common::test_dir();
    let path = dir.path().join("deep.json");
    // Every walk over a document recurses once per level (see "Depth" in
    // docs/design.md). The limit is chosen so that a document at it is safe on a
    // thread with Rust's default 2 MiB stack, even in a debug build: with the old
    // limit of 10,000 levels this thread overflowed its stack and aborted.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let s = Store::<Value>::options()
                .durability(Durability::None)
                .layout(Layout::Compact)
                .open(&path)
                .unwrap();
            let mut deep = Value::from(1);
            for _ in 0..statesafe::json::MAX_DEPTH - 1 {
                deep = Value::Array(vec![deep]);
            }
            s.replace(serde_json::json!({ "n": 0 })).unwrap();
            s.update(|v| v["deep"] = deep.clone()).unwrap();
            s.update(|v| v["n"] = Value::from(1)).unwrap();
            let loaded = s.load().unwrap();
            assert_eq!(loaded.state["deep"], deep);
            assert_eq!(loaded.generation, 3);
            // The history holds patches of deep documents too.
            assert_eq!(s.document_at(2).unwrap()["deep"], deep);
            // One level more: refused before anything is touched.
            let before = std::fs::read(&path).unwrap();
            let err = s
                .update(|v| v["deep"] = Value::Array(vec![deep.clone()]))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::TooDeep {
                        depth: 513,
                        limit: 512,
                        ..
                    }
                ),
                "{err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), before);
            // A deeper file made elsewhere is refused the same way, not quarantined.
            std::fs::write(&path, format!("{}{}", "[".repeat(513), "]".repeat(513))).unwrap();
            let err = s.load().unwrap_err();
            assert!(matches!(err, Error::TooDeep { .. }), "{err}");
            assert!(
                !path
                    .with_file_name(".deep.json.statesafe/quarantine")
                    .exists()
            );
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn the_file_keeps_its_layout_unless_told_otherwise() {
    let dir = common::test_dir();
    for (name, before, after) in [
        ("c.json", "{\"a\":[1,2]}", "{\"a\":[1,2],\"b\":1}\n"),
        (
            "four.json",
            "{\n    \"a\": 0\n}\n",
            "{\n    \"a\": 0,\n    \"b\": 1\n}\n",
        ),
        ("tab.json", "[\n\t1\n]", "[\n\t1,\n\t1\n]\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, before).unwrap();
        store(&path)
            .update(|v| match v {
                Value::Array(items) => items.push(Value::from(1)),
                _ => v["b"] = Value::from(1),
            })
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{name}");
    }
    // An explicit layout wins.
    let path = dir.path().join("c.json");
    Store::<Value>::options()
        .durability(Durability::None)
        .layout(Layout::Pretty)
        .open(&path)
        .unwrap()
        .update(|v| v["b"] = Value::from(2))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": 2\n}\n"
    );
}

#[test]
fn a_torn_history_line_does_not_swallow_the_next_entry() {
    let dir = common::test_dir();
    let path = dir.path().join("h.json");
    let s = store(&path);
    for n in 1..=3 {
        s.replace(serde_json::json!({ "n": n })).unwrap();
    }
    // Power loss in the middle of appending generation 3's entry.
    let history = dir.path().join(".h.json.statesafe/history");
    let segments: Vec<_> = std::fs::read_dir(&history)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let text = std::fs::read(&segments[0]).unwrap();
    let last_line_start = text[..text.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap()
        + 1;
    let torn = last_line_start + (text.len() - last_line_start) / 2;
    std::fs::write(&segments[0], &text[..torn]).unwrap();
    for n in 4..=5 {
        s.replace(serde_json::json!({ "n": n })).unwrap();
    }
    let generations: Vec<u64> = s.history().unwrap().iter().map(|e| e.generation).collect();
    assert_eq!(generations, [1, 2, 4, 5]);
    assert_eq!(s.document_at(5).unwrap(), serde_json::json!({ "n": 5 }));
}

#[test]
fn a_small_change_to_a_large_document_is_recorded_as_a_patch() {
    let dir = common::test_dir();
    let path = dir.path().join("big.json");
    let s = store(&path);
    // Larger than history.max_patch_bytes (64 KiB): too large to diff as trees.
    let big = serde_json::json!({"pad": "x".repeat(100_000), "n": 1, "l": [1, 2, 3]});
    s.replace(big).unwrap();
    s.update(|v| v["n"] = Value::from(2)).unwrap();
    s.update(|v| v["l"][1] = Value::from(20)).unwrap();
    // Changed outside statesafe by one byte, then committed again.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"n\": 2", "\"n\": 3")).unwrap();
    s.update(|v| v["l"][0] = Value::from(10)).unwrap();
    let entries = s.history().unwrap();
    let patches: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(&e.patch).unwrap())
        .collect();
    assert_eq!(
        patches,
        [
            "null",
            r#"[{"op":"replace","path":"/n","value":2}]"#,
            r#"[{"op":"replace","path":"/l/1","value":20}]"#,
            // The external version: diffed against generation 3, rebuilt from
            // backup 2 and the patch of 3.
            r#"[{"op":"replace","path":"/n","value":3}]"#,
            r#"[{"op":"replace","path":"/l/0","value":10}]"#,
        ]
    );
    // A document held only as bytes: no checksum of it either, and the note says so.
    for entry in &entries[1..] {
        assert!(
            entry.checksum.is_none()
                && entry
                    .note
                    .as_deref()
                    .is_some_and(|n| n.starts_with("no checksum")),
            "{entry:?}"
        );
    }
    assert_eq!(entries[3].change, statesafe::Change::External);
    let at_4 = s.document_at(4).unwrap();
    assert_eq!(
        (at_4["n"].clone(), at_4["l"].clone()),
        (3.into(), serde_json::json!([1, 20, 3]))
    );
    // Without backups there is no version to rebuild the one before from: said so.
    let bare = dir.path().join("bare.json");
    let s = Store::<Value>::options()
        .durability(Durability::None)
        .backups(statesafe::BackupPolicy {
            keep: 0,
            hourly: 0,
            daily: 0,
        })
        .open(&bare)
        .unwrap();
    s.replace(serde_json::json!({"pad": "x".repeat(100_000), "n": 1}))
        .unwrap();
    let text = std::fs::read_to_string(&bare).unwrap();
    std::fs::write(&bare, text.replace("\"n\": 1", "\"n\": 5")).unwrap();
    s.update(|v| v["n"] = Value::from(6)).unwrap();
    let bare_entries = s.history().unwrap();
    assert_eq!(bare_entries[1].change, statesafe::Change::External);
    assert!(bare_entries[1].patch.is_none());
    assert!(
        bare_entries[1]
            .note
            .as_deref()
            .unwrap()
            .contains("max_patch_bytes"),
        "{:?}",
        bare_entries[1].note
    );
    // Sealed: the bytes include the header, so no patch is taken from them.
    let sealed = dir.path().join("sealed.json");
    let s = Store::<Value>::options()
        .durability(Durability::None)
        .format(statesafe::Format::Sealed)
        .open(&sealed)
        .unwrap();
    s.replace(serde_json::json!({"pad": "x".repeat(100_000), "n": 1}))
        .unwrap();
    s.update(|v| v["n"] = Value::from(2)).unwrap();
    s.update(|_| ()).unwrap();
    for entry in s.history().unwrap() {
        assert!(entry.patch.is_none(), "{entry:?}");
    }
}

/// JSON text for an integer, a decimal fraction or a number with an exponent, of any
/// length JSON allows (4 kinds, equally likely).
pub(crate) fn spelled_number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[1-9][0-9]{0,40}",
        "-?(0|[1-9][0-9]{0,20})\\.[0-9]{1,30}",
        "-?[1-9][0-9]{0,4}(\\.[0-9]{1,8})?[eE][+-]?[0-9]{1,3}",
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// JSON text for an object with `members` as values, named `{prefix}0`, `{prefix}1`, ….
pub(crate) fn object_text(prefix: &str, members: &[String]) -> String {
    let members: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| format!("\"{prefix}{i}\":{m}"))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// JSON text for an array or an object (equally likely) of up to `most` - 1 `inner`s.
pub(crate) fn array_or_object(
    inner: impl Strategy<Value = String> + Clone,
    most: usize,
) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(inner.clone(), 0..most)
            .prop_map(|v| format!("[{}]", v.join(","))),
        proptest::collection::vec(inner, 0..most).prop_map(|v| object_text("k", &v)),
    ]
}

/// JSON text for a number in any spelling JSON allows (statesafe keeps each as
/// written, exponents included).
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("0".to_string()),
        1 => Just("-0".to_string()),
        1 => Just("-0.0".to_string()),
        1 => Just("18446744073709551616".to_string()),
        4 => spelled_number(),
    ]
}

/// JSON text for a string: unicode escapes, surrogate pairs, control characters,
/// long runs.
fn string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9 ]{0,8}",
        Just("\\u00e9".to_string()),
        Just("\\ud83d\\ude00".to_string()),
        Just("\\\"\\\\\\n\\u0000".to_string()),
        Just("ü€".to_string()),
        "x{1000,3000}",
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
}

/// JSON text for a document: nested arrays and objects, and deep chains.
fn document() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        number(),
        number(),
        string(),
    ];
    let tree = leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            2 => array_or_object(inner.clone(), 6),
            // Up to 6 chains inside each other stay within MAX_DEPTH (512).
            1 => (1usize..80, inner).prop_map(|(n, v)| format!("{}{v}{}", "[".repeat(n), "]".repeat(n))),
        ]
    });
    proptest::collection::vec(tree, 1..4).prop_map(|members| object_text("m", &members))
}

#[test]
fn generated_documents_round_trip_through_commit_and_reload() {
    // Deep chains, with proptest's own frames: the 8 MiB of a main thread.
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let dir = common::test_dir();
            let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
                cases: 64,
                ..ProptestConfig::default()
            });
            let round = std::sync::atomic::AtomicU32::new(0);
            runner
                .run(&document(), |text| {
                    let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let path = dir.path().join(format!("p{n}.json"));
                    let s = store(&path);
                    let doc = parse(&text);
                    s.replace(doc.clone()).unwrap();
                    // An unrelated change, then a reload by a fresh store.
                    s.update(|v| v["unrelated"] = Value::from(1)).unwrap();
                    let back = store(&path).load().unwrap().state;
                    let mut expected = doc;
                    expected["unrelated"] = Value::from(1);
                    prop_assert_eq!(&back, &expected);
                    let mut tokens = number_tokens(&text);
                    tokens.push("1");
                    let printed = back.to_string();
                    prop_assert_eq!(number_tokens(&printed), tokens);
                    let stored = std::fs::read_to_string(&path).unwrap();
                    prop_assert_eq!(number_tokens(&stored), number_tokens(&printed));
                    Ok(())
                })
                .unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A plain document with the exact shape of a sealed envelope (a first member
/// `statesafe` holding a seal header, a second member `state`) would be read back by
/// every reader as a sealed version and served only its `state`: a changed document.
/// Every format but sealed refuses to write it, by every write path (a transaction, a
/// streamed commit of a large document, a journal commit, a group-commit patch), and
/// the file keeps its version; a sealed file wraps it and gives it back whole.
#[test]
fn a_plain_document_shaped_as_a_sealed_envelope_is_refused_and_a_sealed_file_keeps_it() {
    use statesafe::{Format, Settings};
    let dir = common::test_dir();
    // A real envelope: a sealed file's text, read as plain JSON.
    let sealed_path = dir.path().join("sealed.json");
    let sealed: Store<Value> = Store::options()
        .durability(Durability::None)
        .format(Format::Sealed)
        .open(&sealed_path)
        .unwrap();
    sealed.create(serde_json::json!({"n": 1})).unwrap();
    let envelope = parse(&std::fs::read_to_string(&sealed_path).unwrap());
    assert!(envelope.get("statesafe").is_some() && envelope.get("state").is_some());
    // The sealed format keeps it whole, inside its own envelope.
    sealed.replace(envelope.clone()).unwrap();
    assert_eq!(store(&sealed_path).get().unwrap(), envelope);

    let refused = |e: Error, what: &str| {
        assert!(matches!(e, Error::Invalid { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains("sealed envelope"), "{what}: {e}");
    };
    for format in [Format::Plain, Format::Journal] {
        let path = dir.path().join(format!("{format:?}.json"));
        let plain = store(&path);
        let settings = Settings {
            format,
            ..Settings::default()
        };
        plain
            .create_with(&settings, serde_json::json!({"n": 0}))
            .unwrap();
        refused(plain.replace(envelope.clone()).unwrap_err(), "replace");
        refused(
            plain.update(|s| *s = envelope.clone()).unwrap_err(),
            "update",
        );
        for patch in [
            serde_json::json!([{"op": "replace", "path": "", "value": envelope}]),
            serde_json::json!([
                {"op": "add", "path": "/statesafe", "value": envelope["statesafe"]},
                {"op": "remove", "path": "/n"},
                {"op": "add", "path": "/state", "value": 1},
            ]),
        ] {
            refused(plain.apply_patch(&patch).unwrap_err(), "apply_patch");
        }
        assert_eq!(store(&path).get().unwrap(), serde_json::json!({"n": 0}));
        // A document's own `statesafe` member of another shape is plain data.
        let own = serde_json::json!({"statesafe": {"v": 2}, "state": 1});
        plain.replace(own.clone()).unwrap();
        assert_eq!(store(&path).get().unwrap(), own, "{format:?}");
    }

    // A large plain version is replaced by streaming it into the file: the same.
    let path = dir.path().join("large.json");
    let large = store(&path);
    let big = "x".repeat(2 << 20);
    large.create(serde_json::json!({"big": big})).unwrap();
    let mut shaped = envelope.clone();
    shaped["state"] = serde_json::json!({"big": big});
    let mut tx = large.begin().unwrap();
    *tx.state_mut() = shaped;
    refused(tx.commit_streaming().unwrap_err(), "commit_streaming");
    assert_eq!(store(&path).get().unwrap(), serde_json::json!({"big": big}));
}
