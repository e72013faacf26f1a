//! Encoding state as bytes, decoding it back, and the per-version metadata.
//!
//! The state file holds the document exactly as the user's program expects it (plain
//! JSON). Its generation and a checksum of its bytes travel in a small JSON record:
//! in the `user.statesafe` extended attribute of the file itself where the filesystem
//! supports it, so the record is written, synced and renamed together with the data
//! at no extra cost; otherwise in `meta` in the sidecar directory (see `docs/design.md`).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The metadata of one committed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Format version of this record.
    pub v: u32,
    /// The generation: 1 for the first version written, +1 for each commit.
    pub generation: u64,
    /// xxh3-64 of the file's bytes, in hex.
    #[serde(with = "hex64")]
    pub xxh3: u64,
}

impl Meta {
    pub fn new(generation: u64, bytes: &[u8]) -> Meta {
        Meta {
            v: 1,
            generation,
            xxh3: checksum(bytes),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: metadata always serializes")
    }

    /// `None` for anything that is not a record we wrote (damaged, foreign, newer).
    pub fn decode(raw: &[u8]) -> Option<Meta> {
        serde_json::from_slice::<Meta>(raw)
            .ok()
            .filter(|m| m.v == 1)
    }

    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.xxh3 == checksum(bytes)
    }
}

/// The checksum used for committed bytes.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

/// How documents are laid out in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Indented with two spaces and ending in a newline: readable and diffable (default).
    #[default]
    Pretty,
    /// One line, ending in a newline: smallest and fastest.
    Compact,
}

/// Serializes `state` as the file's bytes.
pub(crate) fn encode<T: Serialize>(path: &Path, state: &T, layout: Layout) -> Result<Vec<u8>> {
    let mut bytes = match layout {
        Layout::Pretty => serde_json::to_vec_pretty(state),
        Layout::Compact => serde_json::to_vec(state),
    }
    .map_err(|source| Error::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parses the file's bytes, telling damage apart from a document of the wrong shape.
pub(crate) fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    let corrupt = |line, column, reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        line,
        column,
        reason,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(corrupt(
            None,
            None,
            "the file is empty (typical of a write that was cut short, or a crash before its data reached the disk)".into(),
        ));
    }
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        let (line, column) = line_column(bytes, at);
        return Err(corrupt(
            Some(line),
            Some(column),
            "it contains NUL bytes (typical of a crash before the data reached the disk)".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Eof => {
                format!("the document ends early, as if the write was cut short ({e})")
            }
            serde_json::error::Category::Data => {
                format!("the document does not have the expected shape: {e}")
            }
            _ => format!("it is not valid JSON: {e}"),
        };
        corrupt(Some(e.line()), Some(e.column()), reason)
    })
}

fn line_column(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn damage_is_corrupt_with_a_location() {
        let p = Path::new("s.json");
        let err = decode::<serde_json::Value>(p, b"{\"a\": [1, 2").unwrap_err();
        assert!(matches!(err, Error::Corrupt { line: Some(1), .. }), "{err}");
        let err = decode::<serde_json::Value>(p, b"").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = decode::<serde_json::Value>(p, b"{\n\0\0\0").unwrap_err();
        assert!(
            matches!(
                err,
                Error::Corrupt {
                    line: Some(2),
                    column: Some(1),
                    ..
                }
            ),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn meta_round_trips(generation in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let m = Meta::new(generation, &bytes);
            let back = Meta::decode(&m.encode()).unwrap();
            prop_assert_eq!(back, m);
            prop_assert!(back.matches(&bytes));
        }

        #[test]
        fn encode_decode_round_trips(v in proptest::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..16)) {
            let p = Path::new("s.json");
            for layout in [Layout::Pretty, Layout::Compact] {
                let bytes = encode(p, &v, layout).unwrap();
                let back: std::collections::BTreeMap<String, i64> = decode(p, &bytes).unwrap();
                prop_assert_eq!(&back, &v);
            }
        }
    }
}
