//! `statesafe get FILE POINTER` without building the document: the value the
//! pointer names is picked out while the file's bytes are parsed, and everything
//! off the pointer's path is skipped (serde's `IgnoredAny`: parsed, never kept).
//!
//! [`Picked`] is the document type of the store this opens, so the library reads,
//! checks and verifies the file exactly as for any read: the metadata checksum or
//! the seal, and for a file changed outside statesafe the full duplicate-key check.
//! What the library would do with the document beyond reading it is kept away:
//! the store is opened with the `fail` recovery policy (a damaged file is reported
//! to the caller, never repaired from here), a file with a recorded schema is not
//! read this way (the schema is about the whole document), and a `Picked` refuses
//! to be serialized, so it can never be written as a document. On any error the
//! caller reads the whole document as before, which reports or recovers damage
//! exactly as `get` always did.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pointer::{Index, Miss, Pointer, index};

/// serde_json's private name for a number read with `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

thread_local! {
    /// The pointer the next `Picked` read follows (a type cannot carry it).
    static WANTED: RefCell<Option<Pointer>> = const { RefCell::new(None) };
}

/// The value a pointer names in a document, or why there is none.
#[derive(Debug)]
pub struct Picked(pub Result<Value, Miss>);

/// Runs `read` with `pointer` as the one every `Picked` read on this thread follows.
pub fn following<R>(pointer: &Pointer, read: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            WANTED.with(|w| w.borrow_mut().take());
        }
    }
    WANTED.with(|w| *w.borrow_mut() = Some(pointer.clone()));
    let _reset = Reset;
    read()
}

impl<'de> Deserialize<'de> for Picked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Picked, D::Error> {
        let pointer = WANTED
            .with(|w| w.borrow().clone())
            .ok_or_else(|| de::Error::custom("invariant: a pick without a pointer"))?;
        Step {
            pointer: &pointer,
            at: 0,
        }
        .deserialize(deserializer)
        .map(Picked)
    }
}

impl Serialize for Picked {
    /// Always an error: a picked value is not the document and must never be
    /// written in its place.
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "a value picked out of a document cannot be written as the document",
        ))
    }
}

/// The value `at` tokens down the pointer.
struct Step<'p> {
    pointer: &'p Pointer,
    at: usize,
}

impl Step<'_> {
    fn token(&self) -> &str {
        &self.pointer.tokens()[self.at]
    }

    fn next(&self) -> Step<'_> {
        Step {
            pointer: self.pointer,
            at: self.at + 1,
        }
    }

    fn through(&self, what: &'static str) -> Result<Value, Miss> {
        Err(self.pointer.through_kind(self.at, what))
    }
}

impl<'de> DeserializeSeed<'de> for Step<'_> {
    type Value = Result<Value, Miss>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        if self.at == self.pointer.tokens().len() {
            return Value::deserialize(deserializer).map(Ok);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Result<Value, Miss>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.through("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.through("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.through("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.through("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.through("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.through("a string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = match index(self.token()) {
            Some(Index::At(n)) => Some(n),
            Some(Index::End) => None,
            None => {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(self.through("an array"));
            }
        };
        let mut found = None;
        let mut position = 0;
        loop {
            if Some(position) == wanted {
                match seq.next_element_seed(self.next())? {
                    Some(picked) => found = Some(picked),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            position += 1;
        }
        Ok(found.unwrap_or_else(|| Err(self.pointer.absent(self.at + 1))))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if first && key == NUMBER_TOKEN {
                map.next_value::<IgnoredAny>()?;
                return Ok(self.through("a number"));
            }
            first = false;
            if found.is_none() && key == self.token() {
                found = Some(map.next_value_seed(self.next())?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or_else(|| Err(self.pointer.absent(self.at + 1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(doc: &str, pointer: &str) -> Result<Value, Miss> {
        let pointer = Pointer::parse(pointer).unwrap();
        let picked: Picked = following(&pointer, || serde_json::from_str(doc)).unwrap();
        picked.0
    }

    #[test]
    fn picks_as_pointer_get_does() {
        let doc = r#"{"a":{"b":[10,{"c":1.50}],"n":null,"s":"x","t":true},"a~b":{"c/d":-0},"big":18446744073709551616}"#;
        let whole: Value = statesafe::json::parse(doc.as_bytes()).unwrap();
        for p in [
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/-",
            "/a/b/x",
            "/a/b/01",
            "/a/n/x",
            "/a/s/x",
            "/a/t/x",
            "/a/b/0/x",
            "/a~0b/c~1d",
            "/big",
            "/big/x",
            "/nothing/deeper",
            "/a/missing",
        ] {
            let pointer = Pointer::parse(p).unwrap();
            let expected = pointer.get(&whole).cloned();
            let got = pick(doc, p);
            assert_eq!(
                got.as_ref().map(Value::to_string),
                expected.as_ref().map(Value::to_string),
                "{p}"
            );
        }
    }

    #[test]
    fn damage_is_still_an_error_and_nothing_is_written() {
        let pointer = Pointer::parse("/a").unwrap();
        for damaged in [r#"{"a":1,"b":[1,2"#, r#"{"a":1,"b":"\x"}"#, r#"{"a":1} x"#] {
            let read = following(&pointer, || serde_json::from_str::<Picked>(damaged));
            assert!(read.is_err(), "{damaged}");
        }
        let picked = pick(r#"{"a":1}"#, "/a");
        assert!(serde_json::to_vec(&Picked(picked)).is_err());
    }

    proptest::proptest! {
        /// Picking while parsing finds what `Pointer::get` finds in the whole
        /// document, or misses it the same way.
        #[test]
        fn any_pick_is_what_get_finds(
            text in crate::val::tests::json_text(),
            tokens in proptest::collection::vec("a|b|c|0|1|2|00|-", 0..4),
        ) {
            let whole = statesafe::json::parse(text.as_bytes()).unwrap();
            let written: String = tokens.iter().map(|t| format!("/{t}")).collect();
            let pointer = Pointer::parse(&written).unwrap();
            let expected = pointer.get(&whole).map(Value::to_string);
            let got = pick(&text, &written).map(|v| v.to_string());
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
