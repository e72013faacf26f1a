//! JSON as statesafe accepts it: any text JSON allows, with two limits that keep a
//! document's meaning unambiguous and its handling safe. An object may not hold the
//! same key twice (parsers disagree on which value wins), and nesting may not go
//! deeper than [`MAX_DEPTH`] (every walk over a document recurses once per level).
//!
//! Numbers keep their value and their digits: with serde_json's
//! `arbitrary_precision`, which statesafe turns on, a [`serde_json::Value`] holds
//! `18446744073709551616`, `-0`, `1.0` and `0.10` exactly as written, and writes them
//! back so; exponents too (`1e2`, `1E2`, `1E+2` stay as written), through the
//! workspace's patched serde_json (`vendor/serde_json/STATESAFE.md`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

pub use crate::format::MAX_DEPTH;

/// Parses one JSON document, refusing duplicate keys and nesting deeper than
/// [`MAX_DEPTH`]. Numbers keep their text.
///
/// # Errors
/// A [`serde_json::Error`] with the line and column of the problem (for a duplicate
/// key, just after it).
///
/// # Examples
/// ```
/// let v = statesafe::json::parse(br#"{"id": 18446744073709551616, "x": 1.50, "e": 1e2}"#).unwrap();
/// assert_eq!(v.to_string(), r#"{"id":18446744073709551616,"x":1.50,"e":1e2}"#);
/// let e = statesafe::json::parse(br#"{"a": 1, "a": 2}"#).unwrap_err();
/// assert!(e.to_string().contains("duplicate key `a`"));
/// ```
pub fn parse(bytes: &[u8]) -> serde_json::Result<Value> {
    check(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = serde::Deserialize::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Checks that `bytes` are one JSON document without duplicate keys and at most
/// [`MAX_DEPTH`] deep, without building it.
///
/// # Errors
/// As [`parse`].
pub fn check(bytes: &[u8]) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The seed counts levels itself and stops at the limit, so the parser's own
    // recursion never goes deeper than that.
    de.disable_recursion_limit();
    Checked { depth: 0 }.deserialize(&mut de)?;
    de.end()
}

/// serde_json's message without its " at line L column C" suffix.
pub fn reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// A value `depth` levels down, checked as it is read.
#[derive(Clone, Copy)]
struct Checked {
    depth: usize,
}

impl Checked {
    fn enter<E: de::Error>(self) -> Result<Checked, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels, statesafe's limit"
            )));
        }
        Ok(Checked {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // With `arbitrary_precision`, serde_json hands a number over as a map of one
        // private key: let it through as a number.
        let Some(first) = map.next_key::<Key<'de>>()? else {
            return Ok(());
        };
        if first.0 == NUMBER_TOKEN {
            map.next_value::<IgnoredAny>()?;
            return Ok(());
        }
        let inner = self.enter()?;
        map.next_value_seed(inner)?;
        // Most objects are small: a linear scan beats hashing up to a few dozen keys.
        let mut keys: Vec<Key<'de>> = vec![first];
        let mut set: Option<std::collections::HashSet<Key<'de>>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let seen = match &mut set {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let seen = keys.contains(&key);
                    keys.push(key.clone());
                    if keys.len() > 32 {
                        set = Some(keys.drain(..).collect());
                    }
                    seen
                }
            };
            if seen {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}` in one object (JSON readers disagree on which value wins)",
                    key.0
                )));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// serde_json's private name for a number read with `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// An object key, borrowed from the input when it has no escapes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text() {
        for text in [
            "18446744073709551616",
            "-12345678901234567890123",
            "1e+2",
            "-0",
            "-0.0",
            "1.0",
            "0.10",
            "-1.5e-7",
            "1e+400",
            "123456789.123456789123456789",
        ] {
            let v = parse(text.as_bytes()).unwrap();
            assert_eq!(v.to_string(), text);
            let doc = format!(r#"{{"n":{text},"a":[{text}]}}"#);
            assert_eq!(parse(doc.as_bytes()).unwrap().to_string(), doc);
        }
        // Every spelling of an exponent is kept as written.
        for text in ["1e2", "1E2", "1E+2", "-1.5E-7", "0e0", "1.0e-0", "9E+400"] {
            assert_eq!(parse(text.as_bytes()).unwrap().to_string(), text);
            let doc = format!(r#"{{"n":{text},"a":[{text}]}}"#);
            assert_eq!(parse(doc.as_bytes()).unwrap().to_string(), doc);
        }
    }

    /// A `Value` decoded from a `Value` (how journal mode's kept document becomes each
    /// read's and each transaction's state, and how `apply_patch` reads the caller's
    /// patch) holds every number the text parser would: the same text.
    #[test]
    fn a_value_decoded_from_a_value_keeps_every_number() {
        use serde::Deserialize;
        for text in [
            "-0",
            "[-0]",
            r#"{"z": -0, "n": 0, "m": -1}"#,
            "18446744073709551615",
            "18446744073709551617",
            "-9223372036854775808",
            "-9223372036854775809",
            "100000000000000000000000",
            "-0.0",
            "0.0000001",
            "1e-7",
            "1E5",
            "1e+5",
            "1.50",
            "1e400",
            "0.100000000000000000000000000001",
            "5e-324",
        ] {
            let doc = parse(text.as_bytes()).unwrap();
            let by_ref = Value::deserialize(&doc).unwrap();
            let owned: Value = serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(by_ref.to_string(), doc.to_string(), "{text}");
            assert_eq!(owned.to_string(), doc.to_string(), "{text}");
            // Through serde's buffered `Content` too (json_patch's operations are an
            // internally tagged enum).
            let patch = format!(r#"[{{"op": "add", "path": "/k", "value": {text}}}]"#);
            let ops: json_patch::Patch =
                serde_json::from_value(parse(patch.as_bytes()).unwrap()).unwrap();
            let json_patch::PatchOperation::Add(add) = &ops.0[0] else {
                panic!("{ops:?}")
            };
            assert_eq!(add.value.to_string(), doc.to_string(), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_place() {
        let e = parse(b"{\"a\": 1,\n \"b\": {\"x\": 1, \"x\": 2}}").unwrap_err();
        assert!(e.to_string().contains("duplicate key `x`"), "{e}");
        assert_eq!(e.line(), 2);
        let e = parse(br#"{"a\u0062": 1, "ab": 2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `ab`"), "{e}");
        let many: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
        let doc = format!("{{{}, \"k77\": 0}}", many.join(", "));
        assert!(
            parse(doc.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("`k77`")
        );
        let doc = format!("{{{}}}", many.join(", "));
        assert_eq!(
            parse(doc.as_bytes()).unwrap().as_object().unwrap().len(),
            100
        );
        // The same key in different objects is fine.
        parse(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).unwrap();
    }

    #[test]
    fn depth_is_limited_exactly_at_the_limit() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // Deep walks need a deep stack (see `docs/design.md`): run on one.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let v = parse(deep(MAX_DEPTH).as_bytes()).unwrap();
                assert_eq!(crate::format::depth_of(v.to_string().as_bytes()), MAX_DEPTH);
                let e = parse(deep(MAX_DEPTH + 1).as_bytes()).unwrap_err();
                assert!(e.to_string().contains("deeper than 512"), "{e}");
                let e = parse(deep(1_000_000).as_bytes()).unwrap_err();
                assert!(e.to_string().contains("deeper than 512"), "{e}");
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(crate::format::depth_of(br#"{"a": "[[[", "b": ["\"]"]}"#), 2);
    }
}
