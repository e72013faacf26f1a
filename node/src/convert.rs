//! Documents and results as JSON text for JavaScript, and back.
//!
//! A document travels as text, never as a tree: the store's document type is
//! [`Doc`] (a `Box<RawValue>`), so a read hands JavaScript the file's document text as
//! it is, and a commit writes the text `JSON.stringify` made (in the store's layout):
//! parsed here first to check that it is JSON, except the text of the update cache's
//! private copy, which is JSON by construction (see [`as_sent`] and `tx.rs`). Building
//! and walking a tree here would cost more than the rest of a large update together.
//! The exception is the rare document with integers that need the care below: those
//! go through a tree.
//!
//! A JavaScript number is a double: it holds every integer up to 2^53 exactly, and
//! beyond that only some. Integers a double cannot hold are listed with their JSON
//! Pointer tokens and exact digits beside the text (`big`), and `index.js` puts them in
//! place as `BigInt`s; on the way back, a `BigInt` arrives as its digits (a string) at
//! a listed place and becomes an exact JSON integer again. So a large integer in a file
//! keeps its value whether or not the program touches it, and a number JavaScript wrote
//! (always a double) comes back as a number.

use serde_json::value::RawValue;
use serde_json::{Number, Value, json};

use crate::error::Failure;
use crate::exact::{self, Served};
use crate::run::Outcome;

/// A document as the store holds it: its JSON text.
pub(crate) type Doc = Box<RawValue>;

/// Whether `text` from `JSON.stringify` has a run of 16 or more digits or an `e+`: only
/// such a number can be an integer a double cannot hold (2^53 has 16 digits), or an
/// integral double that `JSON.stringify` prints in exponent form (from 1e21 up). A
/// string holding either is a false alarm that costs one parse. (A file's text is
/// scanned by [`exact::may_hold_inexact`], which also finds the numbers of other
/// spellings that a double does not hold.)
fn may_hold_big(text: &str) -> bool {
    let mut run = 0;
    let mut e = false;
    for b in text.bytes() {
        if b == b'+' && e {
            return true;
        }
        e = b == b'e' || b == b'E';
        if b.is_ascii_digit() {
            run += 1;
            if run >= 16 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// `{"generation":G,"big":[...],"value":DOC}` for `index.js`, with `"kept":[...]` and
/// `"refused":[...]` when there are such numbers (see [`Found`]).
pub(crate) fn snapshot(doc: &RawValue, generation: u64) -> String {
    let text = doc.get();
    let mut found = Found::default();
    if exact::may_hold_inexact(text.as_bytes()) {
        let value: Value =
            serde_json::from_str(text).expect("invariant: the library parsed this document");
        found.walk(&value, &mut Vec::new());
    }
    envelope(text, &found, generation)
}

/// [`snapshot`] of a document the library returns as a tree (a past generation).
pub(crate) fn snapshot_value(value: &Value, generation: u64) -> String {
    let mut found = Found::default();
    found.walk(value, &mut Vec::new());
    let doc = serde_json::to_string(value).expect("invariant: a Value always serializes");
    envelope(&doc, &found, generation)
}

fn envelope(doc: &str, found: &Found, generation: u64) -> String {
    let big = Value::Array(found.big.clone()).to_string();
    let mut out = String::with_capacity(doc.len() + big.len() + 48);
    out.push_str("{\"generation\":");
    out.push_str(&generation.to_string());
    out.push_str(",\"big\":");
    out.push_str(&big);
    for (key, list) in [("kept", &found.kept), ("refused", &found.refused)] {
        if !list.is_empty() {
            out.push_str(&format!(",\"{key}\":"));
            out.push_str(&Value::Array(list.clone()).to_string());
        }
    }
    out.push_str(",\"value\":");
    out.push_str(doc);
    out.push('}');
    out
}

/// The numbers of a document that `JSON.parse` would not serve as their value (see
/// [`exact`]), each with its JSON Pointer tokens.
#[derive(Default)]
struct Found {
    /// `[tokens, digits]`, or `[tokens, digits, text]` when the file spells the
    /// integer otherwise (`1e400`): served as a `BigInt`; the text is written back
    /// while the program's value there is still that `BigInt`.
    big: Vec<Value>,
    /// `[tokens, text]`: served as the nearest double; the text is written back where
    /// that number is after the program ran (`follow` in `index.js`).
    kept: Vec<Value>,
    /// `[tokens, text, why]`: not served (`index.js` refuses the read).
    refused: Vec<Value>,
}

impl Found {
    fn walk(&mut self, value: &Value, path: &mut Vec<Value>) {
        match value {
            // An integer literal within 64 bits: big unless a double holds it.
            Value::Number(n) if within_64_bits(n) && is_big(n) => {
                self.big.push(json!([path.clone(), n.to_string()]));
            }
            Value::Number(n) if within_64_bits(n) => {}
            Value::Number(n) => {
                let text = n.to_string();
                match exact::classify(text.as_bytes()) {
                    Some(Served::Big(digits)) if digits == text => {
                        self.big.push(json!([path.clone(), digits]));
                    }
                    Some(Served::Big(digits)) => {
                        self.big.push(json!([path.clone(), digits, text]));
                    }
                    Some(Served::Nearest) => self.kept.push(json!([path.clone(), text])),
                    Some(Served::Refused(why)) => {
                        self.refused.push(json!([path.clone(), text, why]));
                    }
                    Some(Served::Double) | None => {}
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(json!(i));
                    self.walk(item, path);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(Value::String(k.clone()));
                    self.walk(item, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
}

/// An integer literal of at most 64 bits (signed or unsigned).
fn within_64_bits(n: &Number) -> bool {
    n.as_i64().is_some() || n.as_u64().is_some()
}

/// An integer a JavaScript number (a double) would round.
fn is_big(n: &Number) -> bool {
    // 2^64: `as u64` saturates there, so it is compared first.
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    if let Some(u) = n.as_u64() {
        let d = u as f64;
        return d >= TWO_TO_64 || d as u64 != u;
    }
    if let Some(i) = n.as_i64() {
        // Negative here (a non-negative one is a u64); no double below -2^63 is reached.
        return i as f64 as i64 != i;
    }
    // Beyond 64 bits: only with serde_json's `arbitrary_precision` does the text survive.
    // Big unless a double holds exactly that integer (2^70 is one; 2^70 + 1 is not).
    let text = n.to_string();
    let digits = text.strip_prefix('-').unwrap_or(&text);
    digits.len() > 16
        && digits.bytes().all(|b| b.is_ascii_digit())
        && text
            .parse::<f64>()
            .map_or(true, |d| format!("{d:.0}") != text)
}

/// A number in exponent form whose double is an integer (`1e+21`, `1.5e+300`):
/// from `JSON.stringify`, every finite double of magnitude 1e21 or more. (One below
/// 2^53 in exponent form, `1e+5` from another source, is left as it is.)
fn is_exponent_integer(n: &Number) -> bool {
    let text = n.to_string();
    text.bytes().any(|b| b == b'e' || b == b'E')
        && n.as_f64().is_some_and(|d| {
            d.is_finite() && d.fract() == 0.0 && d.abs() >= 9_007_199_254_740_992.0
        })
}

/// How a document's text is laid out in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextLayout {
    /// One line.
    Compact,
    /// Indented by two spaces (`JSON.stringify(v, null, 2)`).
    Pretty,
    /// Indented, and nested one level inside the sealed envelope's `"state": `.
    PrettySealed,
}

impl TextLayout {
    /// Whether `index.js` sends indented text.
    pub fn indented(self) -> bool {
        self != TextLayout::Compact
    }
}

/// Whether `json` from `index.js` is written as it came: no `BigInt` places, no
/// number a double may have rounded, and a layout that needs no re-indenting (see
/// [`document`], which makes the same decision for text it parses).
pub(crate) fn as_sent(json: &str, big: &str, large: bool, layout: TextLayout) -> bool {
    (big.is_empty() || big == "[]")
        && !(large && may_hold_big(json))
        && layout != TextLayout::PrettySealed
}

/// A stand-in document for a transaction whose real one JavaScript holds (an update
/// cache hit): never committed, every commit sends its document.
pub(crate) fn placeholder() -> Doc {
    RawValue::from_string("null".into()).expect("invariant: `null` is JSON")
}

/// A document from `index.js`: `json` is its text (indented when the layout is),
/// `big` the list of `[pointer tokens, digits]` where a `BigInt` stood (empty when
/// none did), `large` whether the value held a number of magnitude 2^53 or more
/// (`index.js` saw every number while checking the value, so a document without one
/// skips the scan for long digit runs).
///
/// Also says whether the text was kept as it came (so that `JSON.parse` of it is the
/// document the file holds, which the update cache relies on).
pub(crate) fn document(
    json: String,
    big: &str,
    large: bool,
    layout: TextLayout,
) -> Outcome<(Doc, bool)> {
    let no_big = big.is_empty() || big == "[]";
    let as_sent = no_big && !(large && may_hold_big(&json));
    let text = if as_sent {
        json
    } else {
        let value = document_value(&json, big)?;
        if layout.indented() {
            serde_json::to_string_pretty(&value)
        } else {
            serde_json::to_string(&value)
        }
        .expect("invariant: a Value always serializes")
    };
    // JSON text has raw newlines only between tokens (a string's are escaped), so
    // indenting every line after the first nests it safely.
    let text = if layout == TextLayout::PrettySealed {
        text.replace('\n', "\n  ")
    } else {
        text
    };
    let doc = RawValue::from_string(text)
        .map_err(|e| Failure::type_error(format!("the document is not JSON: {e}")))?;
    Ok((doc, as_sent))
}

/// [`document`] as a tree: large doubles made exact, `BigInt`s put in place.
fn document_value(json: &str, big: &str) -> Outcome<Value> {
    let mut value: Value = serde_json::from_str(json)
        .map_err(|e| Failure::type_error(format!("the document is not JSON: {e}")))?;
    as_doubles(&mut value);
    if big.is_empty() || big == "[]" {
        return Ok(value);
    }
    let places: Vec<(Vec<Value>, String)> = serde_json::from_str(big)
        .map_err(|e| Failure::type_error(format!("bad BigInt list: {e}")))?;
    for (tokens, digits) in places {
        let pointer = pointer_text(&tokens);
        let slot = tokens
            .iter()
            .try_fold(&mut value, |v, t| match (v, t) {
                (Value::Object(m), Value::String(k)) => m.get_mut(k),
                (Value::Array(a), Value::Number(i)) => a.get_mut(i.as_u64()? as usize),
                _ => None,
            })
            .ok_or_else(|| Failure::type_error(format!("no BigInt place at {pointer}")))?;
        *slot = Value::Number(exact_integer(&digits, &pointer)?);
    }
    Ok(value)
}

/// Every number JavaScript wrote is a double, but `JSON.stringify` prints a large one
/// with its shortest digits (2^60 as `1152921504606847000`), which as an integer is
/// another number, and from 1e21 up in exponent form (2^70 as
/// `1.1805916207174113e+21`), which a reader that keeps integers exact (Python, or
/// statesafe's own CLI) takes for a float with other digits. Each such number becomes
/// the exact integer value of its double (`1152921504606846976`,
/// `1180591620717411303424`), so the file holds what the program held, and an integer
/// another program wrote, which a double holds exactly and the program did not touch,
/// keeps its text.
fn as_doubles(value: &mut Value) {
    match value {
        Value::Number(n) if is_big(n) || is_exponent_integer(n) => {
            if let Some(d) = n.as_f64() {
                // `{:.0}` prints an integral double's exact decimal value, also beyond
                // 64 bits (where `as u64`/`as i64` would saturate to another number).
                if let Ok(exact) = format!("{d:.0}").parse::<Number>() {
                    *n = exact;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_doubles),
        Value::Object(map) => map.values_mut().for_each(as_doubles),
        _ => {}
    }
}

fn exact_integer(digits: &str, pointer: &str) -> Outcome<Number> {
    if let Ok(u) = digits.parse::<u64>() {
        return Ok(u.into());
    }
    if let Ok(i) = digits.parse::<i64>() {
        return Ok(i.into());
    }
    // Kept exactly only when serde_json keeps number text (`arbitrary_precision`).
    match serde_json::from_str::<Number>(digits) {
        Ok(n) if n.to_string() == digits => Ok(n),
        _ => Err(Failure::range_error(format!(
            "the BigInt at {pointer} ({digits}) does not fit in 64 bits, and a JSON number beyond that would be rounded; store it as a string"
        ))),
    }
}

/// A JSON Pointer (RFC 6901) from its tokens.
pub(crate) fn pointer_text(tokens: &[Value]) -> String {
    if tokens.is_empty() {
        return "/".into();
    }
    let mut s = String::new();
    for t in tokens {
        s.push('/');
        match t {
            Value::String(k) => s.push_str(&k.replace('~', "~0").replace('/', "~1")),
            other => s.push_str(&other.to_string()),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_integers_are_listed_with_their_place_and_come_back_exact() {
        let v: Value =
            serde_json::from_str(r#"{"a":[1,9007199254740993],"b":{"c/d":-9223372036854775807}}"#)
                .unwrap();
        let s = snapshot_value(&v, 7);
        let parsed: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(parsed["generation"], 7);
        assert_eq!(
            parsed["big"],
            json!([
                [["a", 1], "9007199254740993"],
                [["b", "c/d"], "-9223372036854775807"]
            ])
        );
        let back = document(
            r#"{"a":[1,"9007199254740993"],"b":{"c/d":"-9223372036854775807"}}"#.into(),
            &parsed["big"].to_string(),
            false,
            TextLayout::Compact,
        )
        .unwrap()
        .0;
        assert_eq!(back.get(), v.to_string());
        // Read back from the text, the places are found again.
        assert_eq!(
            serde_json::from_str::<Value>(&snapshot(&back, 7)).unwrap(),
            parsed
        );
    }

    #[test]
    fn integers_a_double_holds_and_floats_are_not_big() {
        let text = r#"[9007199254740991, -9007199254740992, 9007199254740994, 18446744073709549568, 1e21, 0.1]"#;
        let v: Value = serde_json::from_str(text).unwrap();
        let parsed: Value = serde_json::from_str(&snapshot_value(&v, 1)).unwrap();
        assert_eq!(parsed["big"], json!([]));
        let doc = RawValue::from_string(text.into()).unwrap();
        assert_eq!(
            snapshot(&doc, 1),
            format!(r#"{{"generation":1,"big":[],"value":{text}}}"#)
        );
    }

    #[test]
    fn numbers_of_other_spellings_no_double_holds_are_found() {
        let text = r#"{"a":[1e300,9007199254740993.0,12345678901234567890],"b":1e-400,"c":0.1,"d":1e99999999999}"#;
        let doc = RawValue::from_string(text.into()).unwrap();
        let parsed: Value = serde_json::from_str(&snapshot(&doc, 3)).unwrap();
        assert_eq!(
            parsed["big"],
            json!([
                [["a", 0], format!("1{}", "0".repeat(300)), "1e300"],
                [["a", 1], "9007199254740993", "9007199254740993.0"],
                [["a", 2], "12345678901234567890"]
            ])
        );
        assert_eq!(parsed["kept"], json!([[["b"], "1e-400"]]));
        assert_eq!(parsed["refused"][0][0], json!(["d"]));
        assert_eq!(parsed["refused"][0][1], json!("1e99999999999"));
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_without_arbitrary_precision() {
        let digits = "123456789012345678901234567890";
        let kept = serde_json::from_str::<Number>(digits).is_ok_and(|n| n.to_string() == digits);
        let back = document(
            format!(r#"{{"x":"{digits}"}}"#),
            &format!(r#"[[["x"],"{digits}"]]"#),
            false,
            TextLayout::Compact,
        );
        match back {
            Ok((v, _)) => assert!(kept && v.get() == format!(r#"{{"x":{digits}}}"#)),
            Err(_) => assert!(!kept),
        }
    }

    #[test]
    fn large_numbers_from_javascript_are_the_exact_value_of_their_double() {
        // JSON.stringify(2 ** 60) and JSON.stringify(-(2 ** 56) - 8).
        let v = document(
            "[1152921504606847000, -72057594037927940]".into(),
            "",
            true,
            TextLayout::Compact,
        )
        .unwrap();
        assert!(!v.1, "rewritten, not kept as sent");
        let v = v.0;
        assert_eq!(v.get(), "[1152921504606846976,-72057594037927936]");
        assert_eq!(
            snapshot(&v, 1),
            r#"{"generation":1,"big":[],"value":[1152921504606846976,-72057594037927936]}"#
        );
    }

    #[test]
    fn the_largest_u64_is_big() {
        let v = json!([u64::MAX, i64::MAX]);
        let parsed: Value = serde_json::from_str(&snapshot_value(&v, 1)).unwrap();
        assert_eq!(parsed["big"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn plain_documents_pass_through_as_text() {
        let text = "{\n  \"a\": [\n    1,\n    2.5\n  ]\n}";
        let (doc, as_sent) = document(text.into(), "", false, TextLayout::Pretty).unwrap();
        assert_eq!(doc.get(), text);
        assert!(as_sent);
        assert_eq!(
            document(text.into(), "", false, TextLayout::PrettySealed)
                .unwrap()
                .0
                .get(),
            "{\n    \"a\": [\n      1,\n      2.5\n    ]\n  }"
        );
        assert!(document("{\"a\": }".into(), "", false, TextLayout::Compact).is_err());
        // Digits in a string, with no large number: no scan, no rewrite.
        let (doc, as_sent) = document(
            r#"{"id":"12345678901234567890"}"#.into(),
            "",
            false,
            TextLayout::Compact,
        )
        .unwrap();
        assert!(as_sent && doc.get() == r#"{"id":"12345678901234567890"}"#);
        assert!(!may_hold_big(r#"{"a": 900719925474099, "b": "x"}"#));
        assert!(may_hold_big(r#"{"a": 9007199254740993}"#));
        assert!(may_hold_big(r#"{"a": 1e+21}"#));
        assert!(!may_hold_big(r#"{"a": 1.5e-7, "b": "e", "c": "+"}"#));
    }

    #[test]
    fn integral_doubles_in_exponent_form_become_their_exact_integers() {
        for (sent, written) in [
            ("1e+21", "1000000000000000000000"),
            ("1.1805916207174113e+21", "1180591620717411303424"),
            ("-1.2089258196146292e+24", "-1208925819614629174706176"),
            ("1152921504606847000", "1152921504606846976"),
            ("1.5e-7", "1.5e-7"),
            ("0.1", "0.1"),
            ("12", "12"),
        ] {
            let (doc, _) = document(format!("[{sent}]"), "", true, TextLayout::Compact).unwrap();
            assert_eq!(doc.get(), format!("[{written}]"), "{sent}");
        }
    }

    #[test]
    fn pointers_escape_their_tokens() {
        assert_eq!(
            pointer_text(&[json!("a/b"), json!("c~d"), json!(3)]),
            "/a~1b/c~0d/3"
        );
        assert_eq!(pointer_text(&[]), "/");
    }
}
