//! The benchmark document: a counter and a list of records, laid out exactly as
//! statesafe writes it (pretty JSON and a newline), so every contender writes the
//! same bytes.

use serde::{Deserialize, Serialize};

/// The first counter value: 13 digits, so the counter keeps its width (and the
/// document its size) for every increment a benchmark can make.
pub const COUNTER_START: u64 = 1_000_000_000_000;

/// The typed form of the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// The counter every update increments.
    pub n: u64,
    /// Filler records that give the document its size.
    pub items: Vec<Item>,
}

/// One filler record: a mix of numbers, strings, arrays and booleans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Record number.
    pub id: u64,
    /// A short name.
    pub name: String,
    /// A few tags.
    pub tags: Vec<String>,
    /// A number with a fraction.
    pub value: f64,
    /// A flag.
    pub active: bool,
    /// A sentence.
    pub note: String,
}

/// Filler record number `id`.
pub fn item(id: u64) -> Item {
    const TAGS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
    Item {
        id,
        name: format!("item-{id:06}"),
        tags: (0..(id % 3 + 1))
            .map(|k| TAGS[((id + k) % 5) as usize].to_string())
            .collect(),
        value: id as f64 * 0.25 + 0.5,
        active: id.is_multiple_of(2),
        note: format!("record {id} of the benchmark document, written by statesafe-bench"),
    }
}

/// The bytes statesafe writes for `doc` with its default (pretty) layout.
pub fn encode(doc: &Doc) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("invariant: a Doc always serializes");
    bytes.push(b'\n');
    bytes
}

/// A document of at least `size` bytes (and at most one record more).
pub fn make(size: usize) -> Doc {
    let mut doc = Doc {
        n: COUNTER_START,
        items: Vec::new(),
    };
    loop {
        let len = encode(&doc).len();
        if len >= size {
            return doc;
        }
        // Records are ~250 bytes pretty-printed; grow by an estimate, then by one.
        let per = 250;
        let more = ((size - len) / per).max(1);
        let start = doc.items.len() as u64;
        doc.items.extend((start..start + more as u64).map(item));
    }
}

/// A document whose compact encoding (one line and a newline, as statesafe keeps a
/// compact file) is at least `size` bytes, with those bytes.
pub fn make_compact(size: usize) -> (Doc, Vec<u8>) {
    let compact = |doc: &Doc| {
        let mut bytes = serde_json::to_vec(doc).expect("invariant: a Doc always serializes");
        bytes.push(b'\n');
        bytes
    };
    let mut doc = Doc {
        n: COUNTER_START,
        items: Vec::new(),
    };
    loop {
        let bytes = compact(&doc);
        if bytes.len() >= size {
            return (doc, bytes);
        }
        // Records are ~190 bytes compact; grow by an estimate, then by one.
        let more = ((size - bytes.len()) / 190).max(1);
        let start = doc.items.len() as u64;
        doc.items.extend((start..start + more as u64).map(item));
    }
}

/// The document's bytes with the counter at a known place, so a contender that
/// does not parse can still change the document on every write.
#[derive(Debug, Clone)]
pub struct Template {
    /// The current bytes.
    pub bytes: Vec<u8>,
    at: usize,
}

/// The digits of the counter: 13 while it is below 10^13.
const DIGITS: usize = 13;

impl Template {
    /// The template for `doc` (whose counter must have 13 digits).
    pub fn new(doc: &Doc) -> Template {
        let bytes = encode(doc);
        let at = counter_offset(&bytes).expect("invariant: the document starts with its counter");
        Template { bytes, at }
    }

    /// Writes `n` into the bytes in place.
    pub fn set_counter(&mut self, n: u64) {
        write_counter(&mut self.bytes[self.at..self.at + DIGITS], n);
    }
}

/// Where the counter's digits start in `bytes` (`{\n  "n": 1000000000000,`).
pub fn counter_offset(bytes: &[u8]) -> Option<usize> {
    let key = b"\"n\": ";
    let head = &bytes[..bytes.len().min(64)];
    let at = head.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (digits == DIGITS).then_some(at)
}

/// Reads the counter from a document's bytes without parsing the rest.
pub fn read_counter(bytes: &[u8]) -> Option<u64> {
    let at = counter_offset(bytes)?;
    std::str::from_utf8(&bytes[at..at + DIGITS])
        .ok()?
        .parse()
        .ok()
}

/// Writes `n` as exactly 13 digits.
pub fn write_counter(out: &mut [u8], mut n: u64) {
    assert!(
        (COUNTER_START..10 * COUNTER_START).contains(&n),
        "counter out of its 13-digit range"
    );
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Increments the counter in a document's bytes in place; returns the new value.
pub fn bump_counter(bytes: &mut [u8]) -> Option<u64> {
    let at = counter_offset(bytes)?;
    let n = read_counter(bytes)? + 1;
    write_counter(&mut bytes[at..at + DIGITS], n);
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_the_asked_size_and_a_patchable_counter() {
        for size in [1 << 10, 64 << 10] {
            let doc = make(size);
            let mut t = Template::new(&doc);
            assert!(t.bytes.len() >= size && t.bytes.len() < size + 400);
            t.set_counter(COUNTER_START + 41);
            let back: Doc = serde_json::from_slice(&t.bytes).unwrap();
            assert_eq!(back.n, COUNTER_START + 41);
            assert_eq!(back.items, doc.items);
            assert_eq!(bump_counter(&mut t.bytes), Some(COUNTER_START + 42));
            assert_eq!(read_counter(&t.bytes), Some(COUNTER_START + 42));
        }
    }

    #[test]
    fn compact_documents_have_the_asked_size() {
        for size in [1 << 10, 64 << 10] {
            let (doc, bytes) = make_compact(size);
            assert!(bytes.len() >= size && bytes.len() < size + 400);
            assert_eq!(bytes.last(), Some(&b'\n'));
            let back: Doc = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, doc);
        }
    }

    #[test]
    fn statesafe_and_the_template_write_the_same_bytes() {
        let doc = make(4096);
        let value: serde_json::Value = serde_json::from_slice(&encode(&doc)).unwrap();
        let mut again = serde_json::to_vec_pretty(&value).unwrap();
        again.push(b'\n');
        assert_eq!(again, encode(&doc));
    }
}
