//! The document as jq's values: read from the file's bytes straight into jaq's
//! [`Val`], and written from it, with no `serde_json::Value` tree in between.
//!
//! [`Doc`] is the document type of the store that `statesafe update` opens, so the
//! library parses the file into it, verifies, validates (a schema check builds its
//! own JSON from it), backs up and records history exactly as for any other type;
//! only the tree is jq's. A large document then exists once in memory during an
//! update (plus the bytes read and written), where it used to exist three times.
//!
//! What `statesafe::json` promises holds here too: numbers keep their text (an
//! integer is a jaq integer, exact at any size; any other number a decimal that is
//! written back as it was read), keys keep their order, an object may not hold the
//! same key twice, and nesting stops at [`MAX_DEPTH`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use jaq_json::{Map, Num, Rc, Val};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use statesafe::json::MAX_DEPTH;

/// A JSON document held as jq's value.
#[derive(Debug, Clone, Default)]
pub struct Doc(pub Val);

impl Doc {
    /// An empty object, `{}`.
    pub fn empty_object() -> Doc {
        Doc(Val::obj(Map::default()))
    }
}

/// serde_json's private name for a number read or written with
/// `arbitrary_precision` (which the workspace turns on): a number arrives as a map
/// of this one key, with the number's text as its value.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Doc, D::Error> {
        let keys = RefCell::new(Keys::default());
        Level {
            depth: 0,
            keys: &keys,
        }
        .deserialize(deserializer)
        .map(Doc)
    }
}

/// Object keys and short strings read so far: documents repeat the same few keys
/// in every record, and often the same short values (tags, states, codes), and
/// each copy would cost two allocations (about 80 bytes with the allocator's
/// overhead). One seen before shares the first one's bytes. Bounded, so that a
/// document of unique strings does not also fill a cache.
#[derive(Default)]
struct Keys {
    seen: HashMap<Box<str>, Val>,
}

/// How many distinct keys and strings are shared.
const MAX_SHARED_KEYS: usize = 4096;

/// Strings up to this long are shared like keys.
const MAX_SHARED_STRING: usize = 16;

impl Keys {
    fn get(&mut self, key: &str) -> Val {
        if let Some(v) = self.seen.get(key) {
            return v.clone();
        }
        let v = Val::utf8_str(key.as_bytes().to_vec());
        if self.seen.len() < MAX_SHARED_KEYS {
            self.seen.insert(key.into(), v.clone());
        }
        v
    }
}

/// A value `depth` levels down, read into a [`Val`].
#[derive(Clone, Copy)]
struct Level<'k> {
    depth: usize,
    keys: &'k RefCell<Keys>,
}

impl Level<'_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels, statesafe's limit"
            )));
        }
        Ok(Level {
            depth: self.depth + 1,
            ..self
        })
    }
}

/// An object key, shared through [`Keys`], or the number marker.
struct Key<'k>(&'k RefCell<Keys>);

/// What [`Key`] read.
enum KeyOrNumber {
    Key(Val),
    Number,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = KeyOrNumber;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<KeyOrNumber, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = KeyOrNumber;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<KeyOrNumber, E> {
        if key == NUMBER_TOKEN {
            return Ok(KeyOrNumber::Number);
        }
        Ok(KeyOrNumber::Key(self.0.borrow_mut().get(key)))
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = Val;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Val, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_none<E>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Val, E> {
        Ok(Val::Bool(b))
    }
    // Without `arbitrary_precision` (or from another deserializer) numbers come as
    // these; with it, as the map below.
    fn visit_i64<E>(self, n: i64) -> Result<Val, E> {
        Ok(Val::Num(Num::from_integral(n)))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Val, E> {
        Ok(Val::Num(Num::from_integral(n)))
    }
    fn visit_i128<E>(self, n: i128) -> Result<Val, E> {
        Ok(Val::Num(Num::from_integral(n)))
    }
    fn visit_u128<E>(self, n: u128) -> Result<Val, E> {
        Ok(Val::Num(Num::from_integral(n)))
    }
    // serde_json's `Value` hands a number over as a float only when the float
    // prints back as the number's text.
    fn visit_f64<E>(self, n: f64) -> Result<Val, E> {
        Ok(Val::Num(Num::Float(n)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Val, E> {
        if s.len() <= MAX_SHARED_STRING {
            return Ok(self.keys.borrow_mut().get(s));
        }
        Ok(Val::utf8_str(s.as_bytes().to_vec()))
    }
    fn visit_string<E>(self, s: String) -> Result<Val, E> {
        Ok(Val::utf8_str(s.into_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        items.shrink_to_fit();
        Ok(Val::Arr(Rc::new(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let first = match map.next_key_seed(Key(self.keys))? {
            None => return Ok(Val::obj(Map::default())),
            Some(KeyOrNumber::Number) => {
                let text: String = map.next_value()?;
                return Ok(Val::Num(number_read(text)));
            }
            Some(KeyOrNumber::Key(key)) => key,
        };
        let inner = self.enter()?;
        let mut out = Map::default();
        let mut key = first;
        loop {
            let value = map.next_value_seed(inner)?;
            let (at, previous) = out.insert_full(key, value);
            if previous.is_some() {
                let (k, _) = out
                    .get_index(at)
                    .expect("invariant: an entry was just inserted");
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}` in one object (JSON readers disagree on which value wins)",
                    text_of(k).unwrap_or_default()
                )));
            }
            match map.next_key_seed(Key(self.keys))? {
                Some(KeyOrNumber::Key(next)) => key = next,
                Some(KeyOrNumber::Number) => {
                    return Err(de::Error::custom("a number marker as an object key"));
                }
                None => break,
            }
        }
        out.shrink_to_fit();
        Ok(Val::obj(out))
    }
}

/// A number read from a document: as [`number_of`], except that a number whose
/// text is exactly how a float prints (`0.5`, `1.75`, `-0.0`) is held as that float,
/// which needs no allocation (a decimal needs two) and is written back as the same
/// text (serde_json's own `Value` makes the same choice).
fn number_read(text: String) -> Num {
    exact_float(&text).map_or_else(|| number_of(text), Num::Float)
}

/// The float that serde_json writes as exactly `text`, if there is one. Only plain
/// fractions qualify: integers stay exact integers, exponents keep their form.
fn exact_float(text: &str) -> Option<f64> {
    if !text.contains('.') || text.contains(['e', 'E']) || text.len() > 24 {
        return None;
    }
    let f: f64 = text.parse().ok().filter(|f: &f64| f.is_finite())?;
    let mut buf = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    serde_json::to_writer(&mut cursor, &f).ok()?;
    let written = usize::try_from(cursor.position()).ok()?;
    (&buf[..written] == text.as_bytes()).then_some(f)
}

/// A JSON number as jaq keeps it: integers as integers (exact at any size), anything
/// else (`1.0`, `1e+2`, `-0`) as a decimal that prints back as written.
pub fn number_of(text: String) -> Num {
    let integer = text
        .strip_prefix('-')
        .unwrap_or(&text)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if integer
        && text != "-0"
        && let Some(n) = Num::from_str_radix(&text, 10)
    {
        return n;
    }
    Num::Dec(Rc::new(text))
}

/// The text of a string value, if it is one.
fn text_of(v: &Val) -> Option<String> {
    match v {
        Val::TStr(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Out(&self.0).serialize(serializer)
    }
}

/// A value written as JSON, as jq prints it: NaN as `null`, infinities as the
/// largest finite numbers; numbers jaq did not compute keep their text. What JSON
/// cannot hold (a byte string, a key that is not a string) is an error; `check`
/// finds it first, with a better message.
struct Out<'a>(&'a Val);

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Num(Num::Int(i)) => s.serialize_i64(*i as i64),
            Val::Num(Num::Float(f)) => float(*f, s),
            Val::Num(Num::Dec(text)) => decimal(text, s),
            Val::Num(n @ Num::BigInt(_)) => decimal(&n.to_string(), s),
            Val::TStr(bytes) => s.serialize_str(&String::from_utf8_lossy(bytes)),
            Val::BStr(_) => Err(S::Error::custom("a byte string, which JSON cannot hold")),
            Val::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(&Out(item))?;
                }
                seq.end()
            }
            Val::Obj(map) => {
                let mut out = s.serialize_map(Some(map.len()))?;
                for (k, v) in map.iter() {
                    let Val::TStr(key) = k else {
                        return Err(S::Error::custom("an object key that is not a string"));
                    };
                    out.serialize_entry(&String::from_utf8_lossy(key), &Out(v))?;
                }
                out.end()
            }
        }
    }
}

fn float<S: Serializer>(f: f64, s: S) -> Result<S::Ok, S::Error> {
    if f.is_nan() {
        s.serialize_unit()
    } else if f.is_infinite() {
        s.serialize_f64(if f > 0.0 { f64::MAX } else { f64::MIN })
    } else {
        s.serialize_f64(f)
    }
}

/// A number's text, as written, when it is a JSON number (a decimal read from the
/// document or written in the expression); else the nearest float.
fn decimal<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    match text.parse::<serde_json::Number>() {
        Ok(n) => n.serialize(s),
        Err(_) => match text.parse::<f64>() {
            Ok(f) => float(f, s),
            Err(_) => s.serialize_unit(),
        },
    }
}

/// Why a value cannot be committed as a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A byte string somewhere.
    ByteString,
    /// An object key that is not a string (shown as jq prints it).
    Key(String),
}

/// Checks that `val` is something a state file can hold, before it is written:
/// at most [`MAX_DEPTH`] deep, no byte strings, string keys only. Recurses once per
/// level (run it on a deep stack, as every walk over a document).
pub fn check(val: &Val) -> Result<(), Unfit> {
    fn walk(val: &Val, depth: usize) -> Result<(), Unfit> {
        match val {
            Val::BStr(_) => Err(Unfit::ByteString),
            Val::Arr(items) => {
                if depth >= MAX_DEPTH {
                    return Err(Unfit::TooDeep);
                }
                items.iter().try_for_each(|v| walk(v, depth + 1))
            }
            Val::Obj(map) => {
                if depth >= MAX_DEPTH {
                    return Err(Unfit::TooDeep);
                }
                for (k, v) in map.iter() {
                    if !matches!(k, Val::TStr(_)) {
                        return Err(Unfit::Key(k.to_string()));
                    }
                    walk(v, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(val, 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let doc: Doc = serde_json::from_str(text).unwrap();
        serde_json::to_string(&doc).unwrap()
    }

    #[test]
    fn numbers_and_key_order_are_kept() {
        for text in [
            r#"{"z":1,"a":2,"m":[3,4]}"#,
            "18446744073709551616",
            "-12345678901234567890123",
            "-0",
            "-0.0",
            "1.50",
            "0.10",
            "1e+400",
            "-1.5e-7",
            "0.5",
            "1.75",
            "100.0",
            "0.1",
            "123456.789",
            "1.7976931348623157e+308",
            "0.30000000000000004",
            "1.0000000000000001",
            r#"{"id":18446744073709551616,"x":1.50,"s":"é\n","n":null,"t":true}"#,
        ] {
            assert_eq!(round_trip(text), text);
        }
        // As statesafe::json reads them: exponents as written too.
        for text in ["1E2", "1e2", "2E+3", "3e-0"] {
            assert_eq!(round_trip(text), text);
        }
    }

    #[test]
    fn plain_fractions_are_floats_only_when_they_print_back_the_same() {
        assert_eq!(exact_float("0.5"), Some(0.5));
        assert_eq!(
            exact_float("-0.0").map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        for text in [
            "1.50",
            "1",
            "-0",
            "1e2",
            "1.0000000000000001",
            "00.5",
            "0.10",
        ] {
            assert_eq!(exact_float(text), None, "{text}");
        }
    }

    #[test]
    fn duplicate_keys_and_depth_are_refused() {
        let e = serde_json::from_str::<Doc>(r#"{"a":1,"b":{"x":1,"x":2}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `x`"), "{e}");
        let e = serde_json::from_str::<Doc>(r#"{"a\u0062":1,"ab":2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `ab`"), "{e}");
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(|| {
                let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
                let text = deep(MAX_DEPTH);
                let mut de = serde_json::Deserializer::from_str(&text);
                de.disable_recursion_limit();
                let doc = Doc::deserialize(&mut de).unwrap();
                assert_eq!(check(&doc.0), Ok(()));
                let text = deep(MAX_DEPTH + 1);
                let mut de = serde_json::Deserializer::from_str(&text);
                de.disable_recursion_limit();
                let e = Doc::deserialize(&mut de).unwrap_err();
                assert!(e.to_string().contains("deeper than 512"), "{e}");
                let deeper = Val::Arr(Rc::new(vec![doc.0]));
                assert_eq!(check(&deeper), Err(Unfit::TooDeep));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn what_json_cannot_hold_is_found() {
        let bytes = Val::byte_str(b"x".to_vec());
        assert_eq!(
            check(&Val::Arr(Rc::new(vec![bytes.clone()]))),
            Err(Unfit::ByteString)
        );
        assert!(serde_json::to_string(&Doc(bytes)).is_err());
        let mut map = Map::default();
        map.insert(Val::Num(Num::Int(1)), Val::Null);
        assert_eq!(check(&Val::obj(map)), Err(Unfit::Key("1".into())));
        assert_eq!(
            serde_json::to_string(&Doc(Val::Num(Num::Float(f64::NAN)))).unwrap(),
            "null"
        );
    }

    /// JSON texts with numbers in every form, escapes, and nesting.
    pub fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,18})?([eE][+-]?[0-9]{1,3})?",
            "[a-c\u{e9}\"\\\\\n]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::btree_map("[a-c0-2]{1,2}", inner, 0..5).prop_map(|entries| {
                    let fields: Vec<String> = entries
                        .into_iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap()))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Read into jq's values and written back, any document is what
        /// `statesafe::json` reads and writes: every number's text, every key in
        /// its place.
        #[test]
        fn any_document_round_trips_as_statesafe_json_does(text in json_text()) {
            let expected = statesafe::json::parse(text.as_bytes()).unwrap().to_string();
            let doc: Doc = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(serde_json::to_string(&doc).unwrap(), expected);
        }
    }
}
