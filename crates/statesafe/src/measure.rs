//! The length of a document's text, told without making the text.
//!
//! A journal-mode append writes a patch, not the document: the document's text (what
//! [`format::encode`] makes) is needed only for its length (`max_bytes`, the
//! patch-or-document choice, whether to keep the tree) and for the checks made on
//! it (the depth limit, the envelope's shape, lone surrogates). For the default
//! `Store<Value>` the tree itself tells all of these: [`encoded_len`] walks it once
//! and counts the bytes serde_json would write, allocating nothing (the text cost a
//! 1 KiB commit about a third of its instructions, `docs/benchmarks.md`, "jperf16").
//!
//! It answers only when the text would pass every check: `None` sends the caller
//! to [`format::encode`], which makes the text and refuses it (or not) with the
//! usual error. So the errors are the text's own, word for word, and the walk need
//! only be exact where it answers:
//!
//! - **Length**: serde_json's output for a `Value` is fixed by the tree and the
//!   style (`vendor/serde_json/src/ser.rs`: `CompactFormatter`, `PrettyFormatter`
//!   and `ESCAPE`): the same sums, term by term.
//! - **Depth**: a text's depth ([`format::depth_of`]) is its tree's; a container
//!   deeper than [`MAX_DEPTH`] stops the walk (`None`: refused by the text).
//! - **Lone surrogates**: a `Value`'s strings are Rust strings (no surrogates), and
//!   serde_json escapes nothing as `\u` but the control characters (`\u0000` to
//!   `\u001f`); a number's text is checked to be number characters only (with
//!   `arbitrary_precision` a `Number` holds text, which the hidden
//!   `Number::from_string_unchecked` may make anything), else `None`.
//! - **The envelope's shape** ([`format::looks_sealed`]): only an object whose first
//!   key is `statesafe` can have it; such a document is left to the text (`None`).
//! - **Serialization errors**: serializing a `Value` into memory cannot fail.
//!
//! Other document types are serialized as before: their `Serialize` may do anything,
//! and only the text tells what it wrote.

use serde::Serialize;
use serde_json::Value;

use crate::format::{MAX_DEPTH, Style};

/// The length of [`format::encode`]`(state, style, …, 0)`'s bytes (the final newline
/// included) when `T` is `serde_json::Value` and that text would pass every check a
/// commit makes on it (the depth limit, the envelope's shape, lone surrogates);
/// `None` otherwise, when the text must be made to tell.
///
/// [`format::encode`]: crate::format::encode
pub(crate) fn encoded_len<T: Serialize>(state: &T, style: Style) -> Option<usize> {
    value_len(crate::sys::value::as_value(state)?, style)
}

/// [`encoded_len`] of a `Value`.
pub(crate) fn value_len(value: &Value, style: Style) -> Option<usize> {
    if let Value::Object(map) = value
        && map.keys().next().is_some_and(|k| k == "statesafe")
    {
        return None;
    }
    let indent = match style {
        Style::Compact => None,
        Style::Spaces(n) => Some(usize::from(n)),
        Style::Tabs => Some(1),
    };
    Some(len(value, 0, indent)? + 1)
}

/// The length of `value`'s text inside `level` containers, each level indented by
/// `indent` bytes (`None`: compact). `None` past the depth limit or for a number
/// whose text is not made of number characters.
fn len(value: &Value, level: usize, indent: Option<usize>) -> Option<usize> {
    let (items, keys) = match value {
        Value::Null | Value::Bool(true) => return Some(4),
        Value::Bool(false) => return Some(5),
        Value::Number(n) => {
            let text = n.as_str().as_bytes();
            let numeric = !text.is_empty()
                && text
                    .iter()
                    .all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
            return numeric.then_some(text.len());
        }
        Value::String(s) => return Some(string_len(s)),
        _ if level >= MAX_DEPTH => return None,
        Value::Array(a) => {
            let mut sum = 0;
            for item in a {
                sum += len(item, level + 1, indent)?;
            }
            (a.len(), sum)
        }
        Value::Object(m) => {
            let mut sum = 0;
            for (key, item) in m {
                sum += string_len(key) + len(item, level + 1, indent)?;
            }
            // The `:` after each key, and its space when indented.
            (m.len(), sum + m.len() * (1 + usize::from(indent.is_some())))
        }
    };
    // The brackets, and the `,` between items.
    let mut total = 2 + keys + items.saturating_sub(1);
    if let (Some(width), true) = (indent, items > 0) {
        // Each item on a line of its own, one level in; the closing bracket on a line
        // of its own at this level.
        total += items * (1 + width * (level + 1)) + 1 + width * level;
    }
    Some(total)
}

/// The length of `s` as a JSON string, quotes included, escaped as serde_json
/// escapes (`ESCAPE` in its `ser.rs`): `"` and `\` and the control characters
/// with a short escape (`\b`, `\t`, `\n`, `\f`, `\r`) take two bytes, the other
/// control characters six (`\u001f`), everything else itself.
fn string_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if !crate::json_out::has_escapes(bytes) {
        return bytes.len() + 2;
    }
    bytes.len()
        + 2
        + bytes
            .iter()
            .map(|&b| match b {
                0x08 | 0x09 | 0x0a | 0x0c | 0x0d | b'"' | b'\\' => 1,
                0x00..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::format;
    use proptest::prelude::*;
    use serde_json::{Map, Number};
    use std::path::Path;

    /// What a commit makes of `value` in `style`: the text [`format::encode`] makes,
    /// or its refusal, and the lone-surrogate check the commit makes on the text.
    fn encoded(value: &Value, style: Style) -> Result<Vec<u8>, String> {
        let bytes = format::encode(Path::new("s.json"), value, style, 0, 0)
            .map_err(|e| format!("{e:?}"))?;
        match format::lone_surrogate(&bytes) {
            Some(at) => Err(format!("lone surrogate at {at}")),
            None => Ok(bytes),
        }
    }

    /// Where the walk does not answer though the text may pass: a first key
    /// `statesafe`, or a number whose text is not number characters.
    fn left_to_the_text(value: &Value) -> bool {
        fn odd_number(v: &Value) -> bool {
            match v {
                Value::Number(n) => {
                    n.as_str().is_empty()
                        || !n
                            .as_str()
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                }
                Value::Array(a) => a.iter().any(odd_number),
                Value::Object(m) => m.values().any(odd_number),
                _ => false,
            }
        }
        let statesafe_first = value
            .as_object()
            .and_then(|m| m.keys().next())
            .is_some_and(|k| k == "statesafe");
        statesafe_first || odd_number(value)
    }

    /// The walk's answer against the text's: the same length where it answers, and
    /// it answers exactly when the text passes, except where it leaves it to the text.
    fn agree(value: &Value, style: Style) -> Result<(), TestCaseError> {
        let text = encoded(value, style);
        match value_len(value, style) {
            Some(len) => {
                let bytes = text.map_err(|e| {
                    TestCaseError::fail(format!("measured {len} but the text is refused: {e}"))
                })?;
                prop_assert_eq!(len, bytes.len(), "{}", String::from_utf8_lossy(&bytes));
            }
            None => prop_assert!(
                text.is_err() || left_to_the_text(value),
                "not measured, but the text passes: {:?}",
                text
            ),
        }
        Ok(())
    }

    fn style() -> impl Strategy<Value = Style> {
        prop_oneof![
            Just(Style::Compact),
            (0u8..=16).prop_map(Style::Spaces),
            Just(Style::Tabs),
        ]
    }

    /// Strings with every class serde_json escapes differently: plain ASCII, `"`
    /// and `\`, the five short escapes, the other control characters (`\u00XX`),
    /// DEL and the line separators (not escaped), non-ASCII of every width, and the
    /// text of a surrogate's escape (which is a backslash, escaped, then letters).
    fn string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zA-Z0-9 ]{0,6}",
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\u{8}\t\n\u{c}\r".to_string()),
            (0u8..0x20).prop_map(|b| char::from(b).to_string()),
            Just("\u{7f}\u{2028}\u{2029}".to_string()),
            Just("é€😀".to_string()),
            Just("\\ud800".to_string()),
            Just("/ ~ < > &".to_string()),
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..5).prop_map(|p| p.concat())
    }

    /// Numbers as a `Value` holds them (`arbitrary_precision`: their text):
    /// integers of every range, floats (negative zero, exponents, the shortest
    /// digits), texts parsed as written (big integers, `1E2`, `-0`), and texts
    /// `Number::from_string_unchecked` makes of anything.
    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            Just(Value::from(-0.0)),
            Just(Value::from(1e300)),
            Just(Value::from(5e-324)),
            "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?"
                .prop_map(|t| serde_json::from_str::<Value>(&t).unwrap()),
            prop_oneof![
                Just(String::new()),
                Just("[[[".to_string()),
                Just("\"\\ud800\"".to_string()),
                Just("1 2".to_string()),
                "[0-9]{1,3}",
            ]
            .prop_map(|t| Value::Number(Number::from_string_unchecked(t))),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            3 => number(),
            3 => string().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 96, 8, |inner| {
            let key = prop_oneof![4 => string(), 1 => Just("statesafe".to_string())];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((key, inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn the_measured_length_is_the_texts_and_measured_iff_the_text_passes(
            v in value(),
            style in style(),
        ) {
            agree(&v, style)?;
        }
    }

    /// A chain `depth` containers deep (arrays and objects as `kinds` says, with
    /// siblings), ending in `bottom`.
    fn chain(depth: usize, kinds: &[bool], bottom: Value) -> Value {
        let mut v = bottom;
        for level in 0..depth {
            let object = kinds[level % kinds.len()];
            let wide = level % 7 == 3;
            v = match (object, wide) {
                (false, false) => Value::Array(vec![v]),
                (false, true) => Value::Array(vec![Value::from(1), v, Value::from("x")]),
                (true, false) => serde_json::json!({ "k": v }),
                (true, true) => serde_json::json!({ "a": [], "k": v, "z": {} }),
            };
        }
        v
    }

    #[test]
    fn past_the_depth_limit_nothing_is_measured_and_the_text_refuses_with_the_depth() {
        // serde_json's serializer and drop recurse once per level: a big stack.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(|| {
                let kinds_of = [
                    vec![false],
                    vec![true],
                    vec![true, false, false],
                    vec![false, true],
                ];
                for depth in (MAX_DEPTH - 3)..=(MAX_DEPTH + 3) {
                    for kinds in &kinds_of {
                        // The bottom is a scalar, or an empty container (one level more).
                        for bottom in [Value::from(1), Value::Array(vec![]), serde_json::json!({})]
                        {
                            let deepest = depth + usize::from(!bottom.is_number());
                            let v = chain(depth, kinds, bottom);
                            for style in [Style::Compact, Style::Spaces(2), Style::Tabs] {
                                let measured = value_len(&v, style);
                                let text = format::encode(Path::new("s.json"), &v, style, 0, 0);
                                match (measured, text) {
                                    (Some(len), Ok(bytes)) => {
                                        assert!(deepest <= MAX_DEPTH);
                                        assert_eq!(len, bytes.len());
                                    }
                                    (None, Err(Error::TooDeep { depth, limit, .. })) => {
                                        assert!(deepest > MAX_DEPTH);
                                        assert_eq!((depth, limit), (deepest, MAX_DEPTH));
                                    }
                                    (m, t) => panic!("depth {deepest}: measured {m:?}, text {t:?}"),
                                }
                            }
                        }
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn an_envelopes_shape_and_odd_number_texts_are_left_to_the_text() {
        let p = Path::new("s.json");
        // A sealed file's text read as a document: refused by the text.
        let sealed = format::encode_sealed(
            p,
            &serde_json::json!({"n": 1}),
            Style::Compact,
            3,
            "t".into(),
            0,
        )
        .unwrap();
        let envelope: Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(value_len(&envelope, Style::Compact), None);
        assert!(matches!(
            format::encode(p, &envelope, Style::Compact, 0, 0),
            Err(Error::Invalid { .. })
        ));
        // A document's own `statesafe` member: not measured, and the text passes.
        let own = serde_json::json!({"statesafe": {"v": 2}, "state": 1});
        assert_eq!(value_len(&own, Style::Spaces(2)), None);
        assert!(format::encode(p, &own, Style::Spaces(2), 0, 0).is_ok());
        // Not first: measured.
        let later = serde_json::json!({"a": 1, "statesafe": {"v": 2}});
        assert_eq!(
            value_len(&later, Style::Compact),
            Some(
                format::encode(p, &later, Style::Compact, 0, 0)
                    .unwrap()
                    .len()
            )
        );
        // A number's text that is not a number's: whatever the text holds, the text
        // tells (here a lone surrogate's escape, and brackets).
        for odd in ["\"\\ud800\"", "[[", ""] {
            let v = Value::Array(vec![Value::Number(Number::from_string_unchecked(
                odd.into(),
            ))]);
            assert_eq!(value_len(&v, Style::Compact), None, "{odd}");
        }
        // Another type than `Value`: never measured.
        assert_eq!(
            encoded_len(
                &std::collections::BTreeMap::from([("a", 1)]),
                Style::Compact
            ),
            None
        );
        assert_eq!(encoded_len(&own, Style::Compact), None);
        assert_eq!(
            encoded_len(&later, Style::Compact),
            value_len(&later, Style::Compact)
        );
    }
}
