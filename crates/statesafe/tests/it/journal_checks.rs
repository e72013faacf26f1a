//! What a journal-mode commit checks on its document's text. An append of a
//! `Store<Value>` does not make the text (`src/measure.rs`): it measures the tree. So
//! these pin, through the public API, that `max_bytes` still counts the text as the
//! snapshot would lay it out (to the byte, in every layout), that the depth limit
//! refuses the same document with the same depth, and that a text with a lone
//! surrogate is still refused, each with nothing written.

use std::path::Path;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use statesafe::{Error, Format, Layout, Settings, Store};

use crate::common;

fn sidecar_file(path: &Path, name: &str) -> std::path::PathBuf {
    let file = path.file_name().unwrap().to_str().unwrap();
    path.with_file_name(format!(".{file}.statesafe")).join(name)
}

/// The snapshot's and the journal's bytes.
fn files(path: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(path).unwrap(),
        std::fs::read(sidecar_file(path, "journal")).unwrap(),
    )
}

/// A document with every escape class, non-ASCII text, numbers kept as written
/// (`1E2`, `-0`, a big integer), empty containers; `pad` makes it longer.
fn doc(pad: &str) -> Value {
    let mut v: Value = serde_json::from_str(
        r#"{"n": 1E2, "z": -0, "big": 123456789012345678901234567890, "f": 0.1,
            "e": [], "o": {}, "a": [1, {"b": null, "t": true}]}"#,
    )
    .unwrap();
    v["s"] = json!(format!("q\"\\/\n\t\u{1}\u{1f}\u{7f}é😀{pad}"));
    v
}

/// The text of `v` in the layout indented by `indent` (`None`: compact), with the
/// final newline: what a snapshot holds.
fn text(v: &Value, indent: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    match indent {
        None => serde_json::to_writer(&mut out, v).unwrap(),
        Some(indent) => v
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(indent),
            ))
            .unwrap(),
    }
    out.push(b'\n');
    out
}

#[test]
fn max_bytes_counts_an_appended_document_as_its_snapshot_would_be_laid_out() {
    let dir = common::test_dir();
    // The file's name, the store's layout, the file's text before journal mode (if
    // any) and the indentation its snapshots have (`None`: compact).
    type Case = (
        &'static str,
        Layout,
        Option<&'static str>,
        Option<&'static [u8]>,
    );
    let cases: [Case; 5] = [
        ("compact.json", Layout::Compact, None, None),
        ("pretty.json", Layout::Pretty, None, Some(b"  ")),
        ("kept.json", Layout::Keep, None, Some(b"  ")),
        (
            "four.json",
            Layout::Keep,
            Some("{\n    \"a\": 0\n}\n"),
            Some(b"    "),
        ),
        (
            "tab.json",
            Layout::Keep,
            Some("{\n\t\"a\": 0\n}\n"),
            Some(b"\t"),
        ),
    ];
    for (name, layout, before, indent) in cases {
        let path = dir.path().join(name);
        let limit = text(&doc("xx"), indent).len() as u64;
        let settings = Settings {
            format: Format::Journal,
            max_bytes: Some(limit),
            ..Settings::default()
        };
        let store: Store = Store::options().layout(layout).open(&path).unwrap();
        match before {
            Some(before) => {
                std::fs::write(&path, before).unwrap();
                store.save_settings(&settings).unwrap();
                store.replace(doc("")).unwrap();
            }
            None => {
                store.create_with(&settings, doc("")).unwrap();
            }
        }
        store.replace(json!({"first": 1})).unwrap();
        let (snapshot, journal) = files(&path);
        // Exactly at the limit: appended (the snapshot untouched).
        store.update(|v| *v = doc("xx")).unwrap();
        let (snapshot_after, journal_after) = files(&path);
        assert_eq!(snapshot_after, snapshot, "{name}: compacted, not appended");
        assert_ne!(journal_after, journal, "{name}: nothing appended");
        // One byte more: refused, with the text's length, and nothing written.
        let err = store.update(|v| *v = doc("xxx")).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { size, limit: l, .. } if size == limit + 1 && l == limit),
            "{name}: {err:?}"
        );
        assert_eq!(files(&path), (snapshot_after, journal_after), "{name}");
        let fresh: Store = Store::open(&path).unwrap();
        assert_eq!(fresh.get().unwrap(), doc("xx"), "{name}");
        // The limit is the snapshot's length: a compaction writes exactly that.
        let mut compacting = settings.clone();
        compacting.journal_max_bytes = Some(1);
        store.save_settings(&compacting).unwrap();
        store.update(|v| *v = doc("xx")).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            text(&doc("xx"), indent),
            "{name}"
        );
    }
}

#[test]
fn the_depth_limit_refuses_an_appended_document_with_its_depth() {
    // As deep documents in every format: a document at the limit is held on a
    // default thread stack (docs/design.md, "Depth").
    let dir = common::test_dir();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for layout in [Layout::Compact, Layout::Pretty] {
                let path = dir.path().join(format!("{layout:?}.json"));
                let store: Store = Store::options().layout(layout).open(&path).unwrap();
                let settings = Settings {
                    format: Format::Journal,
                    ..Settings::default()
                };
                store.create_with(&settings, json!({"n": 0})).unwrap();
                // 512 levels with the top-level object: the limit, accepted.
                let mut deep = json!({});
                for _ in 0..statesafe::json::MAX_DEPTH - 2 {
                    deep = Value::Array(vec![deep]);
                }
                store.update(|v| v["deep"] = deep.clone()).unwrap();
                let before = files(&path);
                let err = store
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
                    "{layout:?}: {err:?}"
                );
                assert_eq!(files(&path), before, "{layout:?}");
                let fresh: Store = Store::open(&path).unwrap();
                assert_eq!(fresh.get().unwrap()["deep"], deep);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_lone_surrogate_is_refused_in_journal_mode_and_nothing_is_written() {
    let dir = common::test_dir();
    let path = dir.path().join("raw.json");
    let raw = |text: &str| RawValue::from_string(text.to_string()).unwrap();
    let store: Store<Box<RawValue>> = Store::open(&path).unwrap();
    let settings = Settings {
        format: Format::Journal,
        ..Settings::default()
    };
    store.create_with(&settings, raw(r#"{"x": 1}"#)).unwrap();
    store.replace(raw(r#"{"x": 2}"#)).unwrap();
    let before = files(&path);
    for text in [
        r#"{"x": "\ud800"}"#,
        r#"{"x": "a\uDC00b"}"#,
        r#"["\ud83d"]"#,
    ] {
        let err = store.replace(raw(text)).unwrap_err();
        assert!(matches!(err, Error::Serialize { .. }), "{text}: {err:?}");
        assert!(
            std::error::Error::source(&err).is_some_and(|s| s.to_string().contains("surrogate")),
            "{text}: {err:?}"
        );
        assert_eq!(files(&path), before, "{text}");
    }
    let fresh: Store = Store::open(&path).unwrap();
    assert_eq!(fresh.get().unwrap(), json!({"x": 2}));
}
