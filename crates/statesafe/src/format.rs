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

/// The highest generation statesafe writes: 2^53 - 1 (a commit every microsecond for
/// 285 years; also the largest integer JavaScript and JSON readers hold exactly). A
/// larger number read from a file (metadata, a sealed header, the lock record, a
/// backup name, a history entry) is not one statesafe wrote: it does not decode, so
/// a garbled or hostile record can never make the next generation wrap or overflow.
pub(crate) const MAX_GENERATION: u64 = (1 << 53) - 1;

/// Deserializes a generation, refusing one past [`MAX_GENERATION`].
pub(crate) fn bounded_generation<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let g = u64::deserialize(d)?;
    if g > MAX_GENERATION {
        return Err(serde::de::Error::custom(format!(
            "generation {g} is past the largest statesafe writes ({MAX_GENERATION})"
        )));
    }
    Ok(g)
}

/// The metadata of one committed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Format version of this record.
    pub v: u32,
    /// The generation: 1 for the first version written, +1 for each commit.
    #[serde(deserialize_with = "bounded_generation")]
    pub generation: u64,
    /// xxh3-64 of the file's bytes, in hex.
    #[serde(with = "hex64")]
    pub xxh3: u64,
    /// Journal mode wrote this version as a snapshot (a compaction): the commits after
    /// it are in the sidecar's journal, so a reader that finds no journal to replay
    /// must not serve it as the newest state (see "A deleted sidecar" in
    /// `docs/design.md`). Left out when false; earlier builds skip it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub journal: bool,
}

impl Meta {
    #[cfg(test)]
    pub fn new(generation: u64, bytes: &[u8]) -> Meta {
        Meta {
            v: 1,
            generation,
            xxh3: checksum(bytes),
            journal: false,
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
    /// The layout of the version being replaced (default): a compact file stays
    /// compact, an indented one keeps its indentation (two or four spaces, a tab...).
    /// A new file, or one whose layout cannot be told (`{}`), is [`Layout::Pretty`].
    #[default]
    Keep,
    /// Indented with two spaces and ending in a newline: readable and diffable.
    Pretty,
    /// One line, ending in a newline: smallest and fastest.
    Compact,
}

/// The layout a version was found in, or is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// One line.
    Compact,
    /// Indented by this many spaces per level.
    Spaces(u8),
    /// Indented by one tab per level.
    Tabs,
}

/// Indentation wider than this is not kept (a hand-aligned file, not a style).
const MAX_INDENT: usize = 16;

impl Style {
    /// How `bytes` are laid out: told by what follows the first `{` or `[` that has
    /// content. `None` when nothing tells (a scalar, `{}`, an odd indentation).
    pub(crate) fn detect(bytes: &[u8]) -> Option<Style> {
        let open = bytes.iter().position(|b| *b == b'{' || *b == b'[')?;
        let rest = &bytes[open + 1..];
        let ws = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
        match rest.get(ws) {
            None | Some(b'}' | b']') => return None,
            Some(_) => {}
        }
        let gap = &rest[..ws];
        let Some(newline) = gap.iter().rposition(|b| *b == b'\n') else {
            return Some(Style::Compact);
        };
        let indent = &gap[newline + 1..];
        match indent {
            [] => None,
            _ if indent.len() <= MAX_INDENT && indent.iter().all(|b| *b == b' ') => {
                Some(Style::Spaces(indent.len() as u8))
            }
            [b'\t'] => Some(Style::Tabs),
            _ => None,
        }
    }
}

impl Layout {
    /// The style to write in, given the style of the version being replaced.
    pub(crate) fn style(self, replaced: Option<Style>) -> Style {
        match self {
            Layout::Keep => replaced.unwrap_or(Style::Spaces(2)),
            Layout::Pretty => Style::Spaces(2),
            Layout::Compact => Style::Compact,
        }
    }
}

/// How deeply documents may nest: arrays and objects inside each other.
///
/// Enforced identically when a document is written and when a file is read, so a
/// read never refuses what a write accepted. serde_json's own limit (128) is lifted;
/// 512 levels are safe on any thread's stack, even Rust's default 2 MiB in a debug
/// build (see "Depth" in `docs/design.md`).
pub const MAX_DEPTH: usize = 512;

/// Where the JSON text `bytes` holds a `\u` escape of a lone UTF-16 surrogate (a high
/// one not followed by an escaped low one, or a low one alone): the byte offset of
/// the escape. Such a string is valid JSON syntax that readers disagree on (serde_json's
/// `Value`, jq and strict decoders refuse it; `JSON.parse` and raw-text readers take
/// it), so no commit writes one. One `memchr` pass: backslashes occur only in strings.
pub(crate) fn lone_surrogate(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(found) = memchr::memchr(b'\\', &bytes[i..]) {
        let at = i + found;
        match escape_len(bytes, at) {
            Some(n) => i = at + n,
            None => return Some(at),
        }
        if i >= bytes.len() {
            break;
        }
    }
    None
}

/// The length of the escape at `bytes[at]` (a backslash) as [`lone_surrogate`]
/// steps over it; `None` when it is a lone surrogate. Looks at most 12 bytes ahead.
pub(crate) fn escape_len(bytes: &[u8], at: usize) -> Option<usize> {
    let hex = |at: usize| -> Option<u32> {
        let digits = bytes.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let unit = |at: usize| -> Option<u32> {
        (bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'u'))
            .then(|| hex(at + 2))
            .flatten()
    };
    match unit(at) {
        Some(0xD800..=0xDBFF) => match unit(at + 6) {
            Some(0xDC00..=0xDFFF) => Some(12),
            _ => None,
        },
        Some(0xDC00..=0xDFFF) => None,
        // Any other escape: two bytes (`\\`, `\"`, `\n`...) or six (`\u0041`).
        Some(_) => Some(6),
        None => Some(2),
    }
}

/// The nesting depth of the JSON text `bytes` (0 for a scalar), by a scan that
/// skips strings; for text that is not JSON, some number.
pub(crate) fn depth_of(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip to the closing quote, over escapes (memchr: strings are most
                // of a document's bytes, and this runs on every read and write).
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
                        None => return deepest,
                        Some(n) if bytes[i + n] == b'\\' => i += n + 2,
                        Some(n) => {
                            i += n;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The depth of `bytes` ([`depth_of`]) when it is more than `limit`, else `None`.
/// A document with no more than `limit` opening brackets (counted in its strings
/// too) cannot be deeper than `limit`: that count, a pass the compiler vectorizes,
/// spares the scan for every document but the few with that many brackets (a 1 KiB
/// journal commit: about 10,000 instructions of the scan, `docs/benchmarks.md`,
/// "jperf14").
pub(crate) fn depth_past(bytes: &[u8], limit: usize) -> Option<usize> {
    // `[` is `{` but for the 0x20 bit. Counted 64 bytes at a time into a byte, which
    // the compiler turns into vector compares.
    let opening_in = |bytes: &[u8]| bytes.iter().filter(|&&b| b | 0x20 == b'{').count();
    let mut blocks = bytes.chunks_exact(64);
    let mut opening = opening_in(blocks.remainder());
    for block in &mut blocks {
        let block: &[u8; 64] = block.try_into().expect("invariant: chunks of 64 bytes");
        opening += usize::from(
            block
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{')),
        );
    }
    if opening <= limit {
        return None;
    }
    Some(depth_of(bytes)).filter(|&depth| depth > limit)
}

/// Serializes `state` as the file's bytes, in `style`.
///
/// `size_hint` is the expected length (the version being replaced is a good guess):
/// the buffer starts there instead of growing by doubling, which left abandoned
/// halves resident and made a large update's peak memory 3.5x the document.
/// `envelope` is the number of levels statesafe adds around the state (1 in a
/// sealed file): the depth limit applies to the state.
pub(crate) fn encode<T: Serialize>(
    path: &Path,
    state: &T,
    style: Style,
    size_hint: usize,
    envelope: usize,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(size_hint);
    serialize_styled(state, style, &mut bytes).map_err(|source| Error::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(depth) = depth_past(&bytes, MAX_DEPTH + envelope) {
        return Err(Error::TooDeep {
            path: path.to_path_buf(),
            depth: depth - envelope,
            limit: MAX_DEPTH,
        });
    }
    if envelope == 0 && looks_sealed(&bytes) {
        return Err(envelope_refused(path));
    }
    bytes.push(b'\n');
    Ok(bytes)
}

/// The refusal of a plain document shaped as a sealed envelope (see [`envelope_in`]):
/// every reader would take a file or row holding it for a sealed one and serve only
/// its `state` member.
pub(crate) fn envelope_refused(path: &Path) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        message: "it has the exact shape of a statesafe sealed envelope (a first member `statesafe` holding a seal header, a second member `state`), so every reader would take it for a sealed version and serve only its `state`; nothing was written: rename its top-level `statesafe` member, or keep such documents in a sealed file (`statesafe settings FILE --format sealed`), which wraps them".into(),
    }
}

/// Serializes `state` into `out` in `style` (no final newline): the text
/// [`encode`] makes, wherever it goes.
pub(crate) fn serialize_styled<T: Serialize, W: std::io::Write>(
    state: &T,
    style: Style,
    out: W,
) -> serde_json::Result<()> {
    use serde_json::ser::{CompactFormatter, PrettyFormatter, Serializer};
    match style {
        Style::Compact => state.serialize(&mut Serializer::with_formatter(out, CompactFormatter)),
        Style::Spaces(n) => {
            let indent = vec![b' '; usize::from(n)];
            state.serialize(&mut Serializer::with_formatter(
                out,
                PrettyFormatter::with_indent(&indent),
            ))
        }
        Style::Tabs => state.serialize(&mut Serializer::with_formatter(
            out,
            PrettyFormatter::with_indent(b"\t"),
        )),
    }
}

/// Refuses what a file statesafe did not write may hold and a file it wrote never
/// does: an object with the same key twice (JSON parsers disagree on which value
/// wins, so the document has no one meaning). Also refuses text that is not JSON,
/// as [`decode`] would. Checked on files adopted or changed outside statesafe.
pub(crate) fn check_unique_keys(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::json::check(bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        line: Some(e.line()),
        column: Some(e.column()),
        reason: crate::json::reason(&e),
    })
}

/// Parses the file's bytes, telling damage apart from a document of the wrong shape.
pub(crate) fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    decode_within(path, bytes, 0)
}

/// [`decode`] for a document inside `envelope` levels that statesafe added.
fn decode_within<T: DeserializeOwned>(path: &Path, bytes: &[u8], envelope: usize) -> Result<T> {
    let corrupt = |line, column, reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        line,
        column,
        reason,
    };
    // Deeper than any version statesafe writes: not damage (the JSON may be valid),
    // a document this statesafe will not hold. Checked before parsing, so nothing
    // below recurses deeper than the limit.
    if let Some(depth) = depth_past(bytes, MAX_DEPTH + envelope) {
        return Err(Error::TooDeep {
            path: path.to_path_buf(),
            depth: depth - envelope,
            limit: MAX_DEPTH,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    T::deserialize(&mut de).and_then(|t| de.end().map(|()| t)).map_err(|e| {
        // Name the classic power-loss damage (only now: scanning every good document
        // for it would cost a pass over the bytes on every load).
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return corrupt(
                None,
                None,
                "the file is empty (typical of a write that was cut short, or a crash before its data reached the disk)".into(),
            );
        }
        if let Some(at) = bytes.iter().position(|b| *b == 0) {
            let (line, column) = line_column(bytes, at);
            return corrupt(
                Some(line),
                Some(column),
                "it contains NUL bytes (typical of a crash before the data reached the disk)".into(),
            );
        }
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

pub(crate) fn line_column(bytes: &[u8], at: usize) -> (usize, usize) {
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

/// Who wrote a version (in sealed files and history entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// Command line (history entries only; empty in sealed headers).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
}

impl Writer {
    /// This process.
    pub(crate) fn current(with_command: bool) -> Writer {
        let (host, user, command) = crate::lock::identity();
        Writer {
            pid: crate::sys::pid(),
            host: host.clone(),
            user: user.clone(),
            command: if with_command {
                command.clone()
            } else {
                String::new()
            },
        }
    }
}

/// The header of a sealed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealHeader {
    pub format: u32,
    #[serde(deserialize_with = "bounded_generation")]
    pub generation: u64,
    pub time: String,
    pub writer: Writer,
    /// xxh3-64 of the whole file with these 16 hex digits read as zeros.
    pub xxh3: String,
}

const PLACEHOLDER: &str = "0000000000000000";

#[derive(Serialize)]
struct SealedOut<'a, T> {
    statesafe: &'a SealHeader,
    state: &'a T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedIn<T> {
    statesafe: SealHeader,
    state: T,
}

/// Whether `bytes` (a whole file) are a sealed file's text: see [`envelope_in`]. A
/// plain document may begin with a `statesafe` member of its own (a program's label
/// or version block): only the envelope's exact shape makes a file sealed.
pub(crate) fn looks_sealed(bytes: &[u8]) -> bool {
    envelope_in(bytes) == Some(true)
}

/// Whether `bytes` begin as a sealed file does: an object whose first key is
/// `statesafe`. Where only sealed files are written (and the metadata record does not
/// vouch for the bytes), such a file is read as sealed and its damage named exactly.
pub(crate) fn starts_sealed(bytes: &[u8]) -> bool {
    let rest = trim_start(bytes);
    let Some(rest) = rest.strip_prefix(b"{") else {
        return false;
    };
    trim_start(rest).starts_with(b"\"statesafe\"")
}

/// Whether `bytes`, a whole file or its start, are a sealed envelope: an object whose
/// first member is `"statesafe"` holding a seal header (exactly its fields, well
/// typed) and whose second member's key is `"state"`. `None` when the bytes end
/// before that is told. Only the header is parsed, never the state.
pub(crate) fn envelope_in(bytes: &[u8]) -> Option<bool> {
    use serde::de::{MapAccess, Visitor};

    /// Decides from the first two members, and says so in `decided` (the parser's
    /// own result is an error once the visitor stops early).
    struct Probe<'a>(&'a mut Option<bool>);
    impl<'de> Visitor<'de> for Probe<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sealed envelope")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            if map.next_key::<String>()?.as_deref() != Some("statesafe") {
                *self.0 = Some(false);
                return Ok(());
            }
            map.next_value::<SealHeader>()?;
            *self.0 = Some(map.next_key::<String>()?.as_deref() == Some("state"));
            Ok(())
        }
    }

    if !starts_sealed(bytes) {
        // Told by the first bytes, unless they end first.
        let rest = trim_start(bytes);
        let undecided = rest.is_empty()
            || rest == b"{"
            || rest.strip_prefix(b"{").is_some_and(|r| {
                let r = trim_start(r);
                b"\"statesafe\"".starts_with(r)
            });
        return if undecided { None } else { Some(false) };
    }
    let mut decided = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde::Deserializer::deserialize_map(&mut de, Probe(&mut decided)) {
        _ if decided.is_some() => decided,
        Err(e) if e.is_eof() => None,
        _ => Some(false),
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

/// Serializes `state` in a sealed envelope for `generation`.
pub(crate) fn encode_sealed<T: Serialize>(
    path: &Path,
    state: &T,
    style: Style,
    generation: u64,
    time: String,
    size_hint: usize,
) -> Result<Vec<u8>> {
    let header = SealHeader {
        format: 1,
        generation,
        time,
        writer: Writer::current(false),
        xxh3: PLACEHOLDER.to_string(),
    };
    let mut bytes = encode(
        path,
        &SealedOut {
            statesafe: &header,
            state,
        },
        style,
        size_hint,
        1,
    )?;
    let at =
        checksum_position(&bytes, PLACEHOLDER).expect("invariant: the header was just written");
    let sum = format!("{:016x}", checksum(&bytes));
    bytes[at..at + 16].copy_from_slice(sum.as_bytes());
    Ok(bytes)
}

/// Where the header's checksum digits are: the first `"xxh3"` key, which is the
/// header's because the header is written first.
fn checksum_position(bytes: &[u8], digits: &str) -> Option<usize> {
    for pattern in [
        format!("\"xxh3\": \"{digits}\""),
        format!("\"xxh3\":\"{digits}\""),
    ] {
        if let Some(i) = find(bytes, pattern.as_bytes()) {
            return Some(i + pattern.len() - 17);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes and verifies a sealed file: the state and its header.
pub(crate) fn decode_sealed<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<(T, SealHeader)> {
    let sealed: SealedIn<T> = decode_within(path, bytes, 1)?;
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        line: None,
        column: None,
        reason,
    };
    let header = sealed.statesafe;
    if header.format != 1 {
        return Err(corrupt(format!(
            "sealed format version {} is not supported by this statesafe",
            header.format
        )));
    }
    // Exactly 16 lowercase hex digits, as written: `from_str_radix` alone would also
    // accept an upper-case digit, so a changed byte in the checksum could go unseen.
    let well_formed = header.xxh3.len() == 16
        && header
            .xxh3
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let expected = u64::from_str_radix(&header.xxh3, 16)
        .ok()
        .filter(|_| well_formed)
        .ok_or_else(|| {
            corrupt(format!(
                "the checksum `{}` is not 16 hex digits",
                header.xxh3
            ))
        })?;
    let at = checksum_position(bytes, &header.xxh3)
        .ok_or_else(|| corrupt("the checksum field is not where statesafe writes it".into()))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&bytes[..at]);
    hasher.update(PLACEHOLDER.as_bytes());
    hasher.update(&bytes[at + 16..]);
    let found = hasher.digest();
    if found != expected {
        return Err(corrupt(format!(
            "checksum mismatch: the header says {expected:016x} but the file hashes to {found:016x}, so it was changed outside statesafe or damaged"
        )));
    }
    Ok((sealed.state, header))
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

    #[test]
    fn sealed_files_detect_any_changed_byte() {
        let p = Path::new("s.json");
        let doc = serde_json::json!({"grades": [1, 2, 3], "name": "x"});
        for style in [Style::Spaces(2), Style::Compact, Style::Tabs] {
            let bytes = encode_sealed(p, &doc, style, 7, "2026-01-01T00:00:00Z".into(), 0).unwrap();
            assert!(looks_sealed(&bytes));
            let (back, header) = decode_sealed::<serde_json::Value>(p, &bytes).unwrap();
            assert_eq!(back, doc);
            assert_eq!(header.generation, 7);
            for i in 0..bytes.len() {
                for flip in [0x01, 0x20, 0x80] {
                    let mut broken = bytes.clone();
                    broken[i] ^= flip;
                    assert!(
                        decode_sealed::<serde_json::Value>(p, &broken).is_err(),
                        "flipping byte {i} ({:?}) by {flip:#x} went unnoticed",
                        bytes[i] as char
                    );
                }
            }
        }
        assert!(!looks_sealed(br#"{"grades": []}"#));
        // A `statesafe` member of the document's own, or a header with a field too
        // many, or no `state` after it: plain.
        assert!(!looks_sealed(br#"{"statesafe": {"v": 2}, "state": 1}"#));
        let sealed = encode_sealed(p, &1, Style::Compact, 7, String::new(), 0).unwrap();
        assert!(looks_sealed(&sealed));
        let text = String::from_utf8(sealed).unwrap();
        let extra = text.replacen("\"format\"", "\"extra\":1,\"format\"", 1);
        assert!(!looks_sealed(extra.as_bytes()), "{extra}");
        let renamed = text.replacen("\"state\":", "\"status\":", 1);
        assert!(!looks_sealed(renamed.as_bytes()), "{renamed}");
        assert!(!looks_sealed(&text.as_bytes()[..text.len() / 2]));
    }

    #[test]
    fn layouts_are_told_from_the_bytes_and_kept() {
        let doc = serde_json::json!({"a": [1, {"b": 2}], "c": "x"});
        let p = Path::new("s.json");
        for style in [
            Style::Compact,
            Style::Spaces(2),
            Style::Spaces(4),
            Style::Tabs,
        ] {
            let bytes = encode(p, &doc, style, 0, 0).unwrap();
            assert_eq!(
                Style::detect(&bytes),
                Some(style),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(Layout::Keep.style(Style::detect(&bytes)), style);
            assert_eq!(
                Layout::Pretty.style(Style::detect(&bytes)),
                Style::Spaces(2)
            );
            assert_eq!(Layout::Compact.style(Style::detect(&bytes)), Style::Compact);
        }
        // Nothing to tell by: a new file's default.
        for bytes in [
            &b"{}\n"[..],
            b"[ ]",
            b"12",
            b"",
            b"{\n\"a\": 1}",
            b"{\n \t\"a\": 1}",
        ] {
            assert_eq!(
                Style::detect(bytes),
                None,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(Layout::Keep.style(None), Style::Spaces(2));
        assert_eq!(Style::detect(b"  [ 1, 2]"), Some(Style::Compact));
        assert_eq!(
            Style::detect(b"{\"a\": {\n   \"b\": 1}}"),
            Some(Style::Compact)
        );
    }

    proptest::proptest! {
        #[test]
        fn depth_past_is_the_depth_when_it_passes_the_limit(
            text in "[\\[\\]{}\"\\\\a ]{0,60}",
            limit in 0usize..12,
        ) {
            let depth = depth_of(text.as_bytes());
            proptest::prop_assert_eq!(
                depth_past(text.as_bytes(), limit),
                (depth > limit).then_some(depth)
            );
        }

        #[test]
        fn depth_of_matches_a_byte_by_byte_scan(text in "[\\[\\]{}\"\\\\a ]{0,60}") {
            // The plain scan it replaced: skips strings over escapes byte by byte.
            fn reference(bytes: &[u8]) -> usize {
                let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0);
                while i < bytes.len() {
                    match bytes[i] {
                        b'"' => {
                            i += 1;
                            while i < bytes.len() {
                                match bytes[i] {
                                    b'\\' => i += 2,
                                    b'"' => break,
                                    _ => i += 1,
                                }
                            }
                        }
                        b'[' | b'{' => {
                            depth += 1;
                            deepest = deepest.max(depth);
                        }
                        b']' | b'}' => depth = depth.saturating_sub(1),
                        _ => {}
                    }
                    i += 1;
                }
                deepest
            }
            proptest::prop_assert_eq!(depth_of(text.as_bytes()), reference(text.as_bytes()));
        }
    }

    #[test]
    fn depth_is_refused_identically_on_write_and_read() {
        let p = Path::new("s.json");
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || {
                let mut v = serde_json::json!(1);
                for _ in 0..MAX_DEPTH {
                    v = serde_json::Value::Array(vec![v]);
                }
                // Compact here; the pretty printer is covered below.
                let bytes = encode(p, &v, Style::Compact, 0, 0).unwrap();
                assert_eq!(decode::<serde_json::Value>(p, &bytes).unwrap(), v);
                let sealed = encode_sealed(p, &v, Style::Compact, 1, String::new(), 0).unwrap();
                assert_eq!(decode_sealed::<serde_json::Value>(p, &sealed).unwrap().0, v);
                let deeper = serde_json::Value::Array(vec![v.clone()]);
                let e = encode(p, &deeper, Style::Compact, 0, 0).unwrap_err();
                assert!(matches!(e, Error::TooDeep { depth: 513, .. }), "{e}");
                let e = encode_sealed(p, &deeper, Style::Compact, 1, String::new(), 0).unwrap_err();
                assert!(matches!(e, Error::TooDeep { depth: 513, .. }), "{e}");
                let text = deeper.to_string();
                let e = decode::<serde_json::Value>(p, text.as_bytes()).unwrap_err();
                assert!(matches!(e, Error::TooDeep { depth: 513, .. }), "{e}");
                // serde_json's own drop is recursive: dropped here, on the deep stack.
                drop((v, deeper));
                let mut v = serde_json::json!({"a": 1});
                for _ in 0..300 {
                    v = serde_json::Value::Array(vec![v]);
                }
                for style in [Style::Spaces(2), Style::Tabs] {
                    let bytes = encode(p, &v, style, 0, 0).unwrap();
                    assert_eq!(decode::<serde_json::Value>(p, &bytes).unwrap(), v);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A journal-mode snapshot's note is one more field: a record without it is the
    /// earlier builds' (byte for byte), and one with it still decodes where the field
    /// is unknown (earlier builds skip it, as `Meta` skips unknown fields).
    #[test]
    fn the_journal_note_is_left_out_when_false_and_round_trips_when_true() {
        let plain = Meta::new(4, b"{}");
        assert_eq!(
            plain.encode(),
            format!(
                r#"{{"v":1,"generation":4,"xxh3":"{:016x}"}}"#,
                checksum(b"{}")
            )
            .into_bytes()
        );
        let noted = Meta {
            journal: true,
            ..plain
        };
        let raw = noted.encode();
        assert!(String::from_utf8_lossy(&raw).ends_with(r#","journal":true}"#));
        assert_eq!(Meta::decode(&raw), Some(noted));
        #[derive(Deserialize)]
        struct Earlier {
            generation: u64,
        }
        assert_eq!(
            serde_json::from_slice::<Earlier>(&raw).unwrap().generation,
            4
        );
    }

    proptest! {
        #[test]
        fn meta_round_trips(generation in 0..=MAX_GENERATION, bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let m = Meta::new(generation, &bytes);
            let back = Meta::decode(&m.encode()).unwrap();
            prop_assert_eq!(back, m);
            prop_assert!(back.matches(&bytes));
        }

        #[test]
        fn encode_decode_round_trips(v in proptest::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..16)) {
            let p = Path::new("s.json");
            for style in [Style::Spaces(2), Style::Compact, Style::Spaces(4), Style::Tabs] {
                let bytes = encode(p, &v, style, 0, 0).unwrap();
                let back: std::collections::BTreeMap<String, i64> = decode(p, &bytes).unwrap();
                prop_assert_eq!(&back, &v);
            }
        }
    }
}
