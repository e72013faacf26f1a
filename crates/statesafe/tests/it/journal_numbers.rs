//! Numbers in journal mode (red13): a long-lived writer's kept document, a long-lived
//! reader's, a fresh reader's replay of the records and the snapshot a compaction
//! writes are the same text, number for number, whatever the numbers' spelling.
//!
//! The rule (`docs/design.md`, "What a document may be"): a number is kept as written,
//! and two numbers are the same when their texts are. A kept document that differs
//! from the replay by one number's text is not cosmetic: a later group-commit patch
//! whose `test` passes on the writer's document fails in the replay, and the reader
//! takes the record for damage and rolls the acknowledged commit back
//! (`red13::a_group_commit_acknowledged_after_a_minus_zero_is_not_rolled_back_by_a_reader`).

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value;
use statesafe::{Format, Settings, Store};

use crate::common;
use crate::documents::{array_or_object, object_text, parse, spelled_number};

/// JSON text for a number in any spelling JSON allows, with the ones a conversion
/// through `i64`, `u64`, `u128` or `f64` would change (`-0`, integers past 64 bits,
/// digits past an `f64`'s, values past its range, a float an `f64` prints otherwise).
fn number() -> impl Strategy<Value = String> {
    const FIXED: &[&str] = &[
        "0",
        "-0",
        "0.0",
        "-0.0",
        "1e400",
        "-1E-400",
        "18446744073709551615",
        "18446744073709551617",
        "-9223372036854775808",
        "-9223372036854775809",
        "340282366920938463463374607431768211457",
        "0.100000000000000000000000000001",
        "1E5",
        "1e5",
        "1e+5",
        "1E-5",
        "0.0000001",
        "1e-7",
        "1.50",
        "5e-324",
        "9007199254740993",
    ];
    prop_oneof![
        1 => proptest::sample::select(FIXED).prop_map(str::to_string),
        4 => spelled_number(),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
    ]
}

/// JSON text for an object of numbers, strings, arrays and objects.
fn document() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => number(),
        1 => Just("null".to_string()),
        1 => "\"[a-z]{0,6}\"",
    ];
    let tree = leaf.prop_recursive(4, 32, 5, |inner| array_or_object(inner, 5));
    proptest::collection::vec(tree, 0..5).prop_map(|members| object_text("m", &members))
}

/// One commit of the writer's.
#[derive(Debug, Clone)]
enum Step {
    /// `update` to a whole new document (the record is a diff of the kept tree, or
    /// the whole document).
    Replace(String),
    /// `update` of one member the numbers are not in.
    Touch,
    /// `apply_patch` (a group commit; the record is the patch's text): a `test` of
    /// each top-level number the document holds, as it is written, then these
    /// numbers added, at top level and into an array.
    Patch(Vec<String>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        document().prop_map(Step::Replace),
        Just(Step::Touch),
        proptest::collection::vec(number(), 1..4).prop_map(Step::Patch),
    ]
}

/// The patch of a `Step::Patch` on `doc`, as text.
fn patch_text(doc: &Value, numbers: &[String]) -> String {
    let mut ops: Vec<String> = doc
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_number())
        .map(|(k, v)| format!(r#"{{"op":"test","path":"/{k}","value":{v}}}"#))
        .collect();
    ops.push(r#"{"op":"add","path":"/added","value":[]}"#.to_string());
    for (i, n) in numbers.iter().enumerate() {
        ops.push(format!(r#"{{"op":"add","path":"/p{i}","value":{n}}}"#));
        ops.push(format!(r#"{{"op":"add","path":"/added/-","value":{n}}}"#));
    }
    format!("[{}]", ops.join(","))
}

/// The writer's document, the long-lived reader's, a fresh reader's and the model's,
/// all one text.
fn agree(path: &Path, writer: &Store, reader: &Store, model: &Value, what: &str) {
    let expected = model.to_string();
    let kept = writer.get().unwrap().to_string();
    let long_lived = reader.get().unwrap().to_string();
    let replayed = Store::<Value>::open(path)
        .unwrap()
        .get()
        .unwrap()
        .to_string();
    assert!(
        kept == expected && long_lived == expected && replayed == expected,
        "{what}:\nexpected    {expected}\nwriter      {kept}\nlong-lived  {long_lived}\nfresh       {replayed}"
    );
}

#[test]
fn every_reader_and_the_snapshot_keep_every_number_the_writer_kept() {
    let dir = common::test_dir();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let round = std::sync::atomic::AtomicU32::new(0);
    let strategy = (document(), proptest::collection::vec(step(), 1..6));
    runner
        .run(&strategy, |(first, steps)| {
            let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.path().join(format!("n{n}.json"));
            let mut model = parse(&first);
            let writer: Store = Store::open(&path).unwrap();
            let settings = Settings {
                format: Format::Journal,
                ..Settings::default()
            };
            writer.create_with(&settings, model.clone()).unwrap();
            let reader: Store = Store::open(&path).unwrap();
            // From its second full read on, a store keeps the replayed document and
            // decodes each read and transaction from it.
            for store in [&writer, &reader] {
                store.get().unwrap();
                store.get().unwrap();
            }
            agree(&path, &writer, &reader, &model, "created");
            for (i, step) in steps.iter().enumerate() {
                match step {
                    Step::Replace(text) => {
                        let next = parse(text);
                        writer.update(|d| *d = next.clone()).unwrap();
                        model = next;
                    }
                    Step::Touch => {
                        writer.update(|d| d["touched"] = i.into()).unwrap();
                        model["touched"] = i.into();
                    }
                    Step::Patch(numbers) => {
                        let text = patch_text(&model, numbers);
                        writer.apply_patch(&parse(&text)).unwrap();
                        // The model applies the patch as parsed from its text.
                        let ops: json_patch::Patch = serde_json::from_str(&text).unwrap();
                        json_patch::patch(&mut model, &ops).unwrap();
                    }
                }
                agree(
                    &path,
                    &writer,
                    &reader,
                    &model,
                    &format!("step {i}: {step:?}"),
                );
            }
            // A compaction at the next commit: the snapshot is the whole document.
            let mut compacting = writer.settings();
            compacting.journal_max_bytes = Some(1);
            writer.save_settings(&compacting).unwrap();
            writer.update(|d| d["touched"] = "last".into()).unwrap();
            model["touched"] = "last".into();
            let snapshot = std::fs::read_to_string(&path).unwrap();
            prop_assert_eq!(parse(&snapshot).to_string(), model.to_string());
            agree(&path, &writer, &reader, &model, "compacted");
            Ok(())
        })
        .unwrap();
}
