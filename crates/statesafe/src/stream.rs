//! Large documents read and written without their text in memory (issue #12, item 7):
//! [`Store::begin_streaming`] and [`Transaction::commit_streaming`].
//!
//! A transaction on a large document used to hold the file's bytes while it parsed
//! them (the bytes, then the tree: for a tree of jq values, 8x the document), and the
//! new text while it wrote it (the tree, then the text). Here:
//!
//! - **Read.** The file is parsed straight from its descriptor through a reader that
//!   hashes every byte as it passes and counts nesting as [`format::depth_of`] does
//!   (it stops the parse past the depth limit, so nothing recurses deeper than a
//!   normal read would). The hash is then checked against the file's own metadata
//!   record, read after the bytes through the same descriptor, exactly as a normal
//!   read does. Only a version statesafe committed in the plain format (the record
//!   matches) is taken this way, on a store with no rule and no schema: then
//!   `Store::verify` checks nothing but the parse. Anything else (an external
//!   change, an adoption, damage, a sealed file, a parse that fails, a layout the
//!   first 64 KiB do not tell) reads the file again from its start as
//!   [`Store::begin`] does, so every message, recovery and quarantine is the
//!   normal path's.
//! - **Write.** The document is serialized twice: once into a sink that hashes,
//!   counts bytes and depth and looks for lone surrogates (what [`format::encode`]
//!   and the commit check on the text), and, once every check passed, straight into
//!   the temporary file, hashed again: the commit fails (nothing renamed) unless both
//!   passes gave the same bytes. Anything the first pass finds wrong makes the text
//!   in memory as before, so errors read as always. The metadata record is made
//!   from the first pass, before the data, in the protocol's usual order.
//! - **History.** The tree is freed once the new version is durable; the history's
//!   patch from the change's bytes (`local_patch.rs`) compares the new version in its
//!   file with the old one's backup a chunk at a time, once it hashed to what was
//!   committed, and reads it only as far as a covering value can reach.
//!
//! Documents below [`STREAM_MIN`] take the normal path, system call for system call.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Op, Result};
use crate::format::{self, MAX_DEPTH, Style};
use crate::paths::Target;
use crate::settings::Format;
use crate::store::Store;
use crate::sys;
use crate::transaction::{Base, Locked, Transaction};
use crate::write;

/// Documents of at least this many bytes are streamed.
pub(crate) const STREAM_MIN: u64 = 1 << 20;

/// How much of the file is read first to tell its layout and whether it is sealed;
/// also the size of the buffers in between.
const CHUNK: usize = 64 << 10;

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// [`Store::begin`] (or, with `init`, [`Store::begin_or_insert_with`]) that reads
    /// a large document (1 MiB and more) straight from the file into the state,
    /// without holding its text in memory too. Commit with
    /// [`Transaction::commit_streaming`] to write it without its text in memory
    /// either. Every check of [`Store::begin`] holds: a version is taken this way
    /// only when it is a plain one statesafe committed, its bytes hash to its
    /// metadata record, and the store has no rule or schema; anything else is read
    /// as [`Store::begin`] reads it.
    ///
    /// # Errors
    /// As [`Store::begin`] (without [`Error::NotFound`] when `init` is given).
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// let mut tx = store.begin_streaming(Some(|| serde_json::json!({"n": 0})))?;
    /// tx.state_mut()["n"] = 1.into();
    /// assert_eq!(tx.commit_streaming()?, 1);
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn begin_streaming(&self, init: Option<impl FnOnce() -> T>) -> Result<Transaction<'_, T>> {
        let config = self.config();
        let eligible = self.remote().is_none()
            && config.format == Format::Plain
            && config.schema.is_none()
            && self.opts.rule.is_none();
        if !eligible {
            return self
                .begin_with("update", init, None::<(&[u8], fn() -> T)>)
                .map(|(tx, _)| tx);
        }
        let Locked {
            guard,
            temp_name,
            current: _,
        } = self.lock_and_read("update", false)?;
        let dir = self.dir()?;
        let local = self.local();
        let current = match write::open_current(&local.target, dir)? {
            None => None,
            Some((file, stat)) => {
                write::refuse_planted(&local.target, dir, &local.lock, &stat)?;
                if stat.len() >= STREAM_MIN
                    && let Some((state, base)) = self.read_streamed(&file, &stat)?
                    // An older version put back is relabelled by the full read below.
                    && self.known_above(&guard, base.generation)?.is_none()
                {
                    local.lock.check_owner_not_planted(dir, base.perms.uid)?;
                    let base = Base {
                        pin: Some(std::sync::Arc::new(file)),
                        ..base
                    };
                    return Ok(Transaction::local(
                        self,
                        guard,
                        temp_name,
                        Some(base),
                        state,
                    ));
                }
                // Not taken whole (or small): read as `Store::begin` does, from the start.
                if stat.len() >= STREAM_MIN {
                    (&file)
                        .rewind()
                        .map_err(|e| Error::io(Op::Read, &local.target.given, e))?;
                }
                let mut cur =
                    write::read_opened(&local.target, dir, &local.lock, true, &file, &stat)?;
                cur.pin = Some(std::sync::Arc::new(file));
                self.refuse_lost_journal(&cur, false)?;
                self.older_version_put_back(&guard, &mut cur)?;
                Some(cur)
            }
        };
        if let Some(cur) = &current {
            local.lock.check_owner_not_planted(dir, cur.perms.uid)?;
        }
        self.begin_locked(
            Locked {
                guard,
                temp_name,
                current,
            },
            init,
            None::<(&[u8], fn() -> T)>,
        )
        .map(|(tx, _)| tx)
    }

    /// Parses the open `file` into the state as it streams by; `None` when it is not
    /// a plain version statesafe committed that parses (then it is read again).
    fn read_streamed(&self, file: &File, stat: &std::fs::Metadata) -> Result<Option<(T, Base)>> {
        use std::os::unix::fs::MetadataExt;
        let target = &self.local().target;
        let io_err = |e| Error::io(Op::Read, &target.given, e);
        let mut prefix = Vec::with_capacity(CHUNK);
        (&mut Plain(file))
            .take(CHUNK as u64)
            .read_to_end(&mut prefix)
            .map_err(io_err)?;
        let (Some(false), Some(style)) = (sealed_in(&prefix), style_in(&prefix)) else {
            return Ok(None);
        };
        let mut reader = Hashing {
            inner: io::Cursor::new(&prefix[..]).chain(Plain(file)),
            hash: Xxh3::new(),
            len: 0,
            depth: Depth::default(),
            check_depth: true,
        };
        let parsed = {
            let mut de =
                serde_json::Deserializer::from_reader(BufReader::with_capacity(CHUNK, &mut reader));
            de.disable_recursion_limit();
            T::deserialize(&mut de).and_then(|t| de.end().map(|()| t))
        };
        let Ok(state) = parsed else {
            return Ok(None);
        };
        // Past the parse's end (only whitespace, which `end` read): every byte hashed.
        io::copy(&mut reader, &mut io::sink()).map_err(io_err)?;
        let sum = reader.hash.digest();
        let generation = match sys::get_meta_attr(file).map_err(io_err)? {
            // A journal-mode snapshot is read whole, where its lost journal is refused.
            sys::MetaAttr::Present(raw) if write::journal_follows(&raw, sum) => return Ok(None),
            sys::MetaAttr::Present(raw) => match write::classify(Some(&raw), sum) {
                Some((generation, false)) => generation,
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let acl =
            sys::access_acl(file).map_err(|e| Error::io(Op::SetPermissions, &target.given, e))?;
        let len = usize::try_from(reader.len).unwrap_or(usize::MAX);
        let value = self.history_value(len, &state);
        let base = Base {
            generation,
            perms: write::Perms {
                mode: stat.mode() & 0o7777,
                uid: stat.uid(),
                gid: stat.gid(),
            },
            checksum: sum,
            len,
            external: false,
            adopted: false,
            valid: true,
            value: value.map(std::sync::Arc::new),
            id: Some((stat.dev(), stat.ino())),
            // Set by the caller, which owns the descriptor.
            pin: None,
            style,
            acl,
            journal: None,
        };
        Ok(Some((state, base)))
    }
}

impl<T: Serialize + DeserializeOwned> Transaction<'_, T> {
    /// [`Transaction::commit`] that writes a large document (one that replaces a
    /// version of 1 MiB or more, in the plain format) straight into the new file,
    /// without its text in memory: it is serialized once to check and hash it, then
    /// again into the file, and the commit fails unless both gave the same bytes.
    /// The state is freed before the history reads the new version back for its
    /// patch. Anything else commits as [`Transaction::commit`]; the file written is
    /// byte for byte the same either way.
    ///
    /// # Errors
    /// As [`Transaction::commit`]; [`Error::Io`] when the state serialized
    /// differently the second time (nothing is written then).
    pub fn commit_streaming(self) -> Result<u64> {
        match self.streamable() {
            Some(()) => self.commit_streamed(),
            None => self.commit(),
        }
    }
}

/// The first pass over a streamed document: what it will be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// Its length in bytes, the final newline included.
    pub len: usize,
    /// Its checksum ([`format::checksum`] of those bytes).
    pub checksum: u64,
}

/// Serializes `state` in `style` into nothing but counters: `None` when the text
/// would not be committed as it is (a serialization error, deeper than the limit,
/// a lone surrogate), so that the caller makes it in memory and reports that as
/// the normal path does.
pub(crate) fn measure<T: Serialize>(state: &T, style: Style) -> Option<Encoded> {
    let mut sink = Sink {
        out: None,
        hash: Xxh3::new(),
        len: 0,
        depth: Some(Depth::default()),
        surrogates: Some(Surrogates::default()),
        start: Some(Vec::new()),
    };
    let mut w = BufWriter::with_capacity(CHUNK, &mut sink);
    format::serialize_styled(state, style, &mut w).ok()?;
    w.write_all(b"\n").ok()?;
    w.flush().ok()?;
    drop(w);
    let deepest = sink.depth.map_or(0, |d| d.deepest);
    let lone = sink.surrogates.as_mut().is_some_and(Surrogates::finish);
    // A text that may be an envelope's shape is made in memory, where it is told and
    // refused (`format::encode`).
    let plain = sink
        .start
        .as_deref()
        .is_some_and(|start| format::envelope_in(start) == Some(false));
    (deepest <= MAX_DEPTH && !lone && plain).then(|| Encoded {
        len: sink.len,
        checksum: sink.hash.digest(),
    })
}

/// Serializes `state` in `style` into `out`, as [`measure`] measured it; an error
/// unless the bytes are the same (a type whose serialization changes between two
/// calls).
pub(crate) fn write_into<T: Serialize>(
    state: &T,
    style: Style,
    expected: Encoded,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut sink = Sink {
        out: Some(out),
        hash: Xxh3::new(),
        len: 0,
        depth: None,
        surrogates: None,
        start: None,
    };
    let mut w = BufWriter::with_capacity(CHUNK, &mut sink);
    format::serialize_styled(state, style, &mut w).map_err(io::Error::from)?;
    w.write_all(b"\n")?;
    w.flush()?;
    drop(w);
    if sink.len != expected.len || sink.hash.digest() != expected.checksum {
        return Err(io::Error::other(
            "the document serialized differently the second time (its type's serialization changes between calls), so nothing was committed",
        ));
    }
    Ok(())
}

/// The version just committed, opened again for the history's patch, when its bytes
/// hash to what was committed (checked a chunk at a time: the text is never whole in
/// memory); `None` otherwise, or when it cannot be read. Also whether it looks sealed
/// ([`format::looks_sealed`]; a plain document can begin so), told from its start.
pub(crate) fn reopen(target: &Target, dir: &OwnedFd, expected: Encoded) -> Option<(File, bool)> {
    let file = sys::open_at(dir, &target.name, sys::Access::Read, 0).ok()?;
    let mut reader = Hashing {
        inner: Plain(&file),
        hash: Xxh3::new(),
        len: 0,
        depth: Depth::default(),
        check_depth: false,
    };
    let mut start = Vec::with_capacity(CHUNK);
    (&mut reader)
        .take(CHUNK as u64)
        .read_to_end(&mut start)
        .ok()?;
    io::copy(&mut reader, &mut io::sink()).ok()?;
    let same = reader.len == expected.len as u64 && reader.hash.digest() == expected.checksum;
    // A document this large is not all whitespace: its start tells.
    let sealed = sealed_in(&start)?;
    same.then_some((file, sealed))
}

/// Whether the first bytes `prefix` of a file say it is sealed
/// ([`format::looks_sealed`] of the whole file); `None` when they do not tell.
fn sealed_in(prefix: &[u8]) -> Option<bool> {
    format::envelope_in(prefix)
}

/// [`Style::detect`] of a whole file from its first bytes `prefix`; `None` when
/// they do not tell (the outer `Option` is whether it could be told).
fn style_in(prefix: &[u8]) -> Option<Option<Style>> {
    let open = prefix.iter().position(|b| *b == b'{' || *b == b'[')?;
    let rest = &prefix[open + 1..];
    let ws = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
    // Detection looks no further than the first byte after the whitespace.
    (ws < rest.len()).then(|| Style::detect(prefix))
}

/// Reads a file through `&File` without `File::read_to_end`'s extra `statx` and
/// `lseek` (as `write::read_current` does).
struct Plain<'a>(&'a File);

impl Read for Plain<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// A reader that hashes and measures what passes through it, and (with
/// `check_depth`) fails once the text nests deeper than [`MAX_DEPTH`].
struct Hashing<R> {
    inner: R,
    hash: Xxh3,
    len: u64,
    depth: Depth,
    check_depth: bool,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        self.hash.update(got);
        self.len += n as u64;
        if self.check_depth {
            self.depth.feed(got);
            if self.depth.deepest > MAX_DEPTH {
                return Err(io::Error::other("nested deeper than the limit"));
            }
        }
        Ok(n)
    }
}

/// A writer that hashes and measures what passes through it (and checks its depth
/// and escapes, in the first pass), then hands it to `out`, if any.
struct Sink<'a> {
    out: Option<&'a mut dyn Write>,
    hash: Xxh3,
    len: usize,
    depth: Option<Depth>,
    surrogates: Option<Surrogates>,
    /// The text's first [`CHUNK`] bytes, when kept (to tell an envelope's shape).
    start: Option<Vec<u8>>,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.out {
            Some(out) => out.write(buf)?,
            None => buf.len(),
        };
        let done = &buf[..n];
        self.hash.update(done);
        self.len += n;
        if let Some(d) = &mut self.depth {
            d.feed(done);
        }
        if let Some(s) = &mut self.surrogates {
            s.feed(done);
        }
        if let Some(start) = &mut self.start {
            let room = CHUNK.saturating_sub(start.len()).min(done.len());
            start.extend_from_slice(&done[..room]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

/// [`format::depth_of`], a piece at a time.
#[derive(Debug, Default, Clone, Copy)]
struct Depth {
    in_string: bool,
    escaped: bool,
    depth: usize,
    deepest: usize,
}

impl Depth {
    fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    None => return,
                    Some(n) => {
                        if bytes[i + n] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        i += n + 1;
                    }
                }
                continue;
            }
            match bytes[i] {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    self.deepest = self.deepest.max(self.depth);
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
    }
}

/// [`format::lone_surrogate`], a piece at a time: an escape whose 12 bytes of
/// look-ahead are not all there yet is kept (`carry`) until they are, or until
/// [`Surrogates::finish`].
#[derive(Debug, Default)]
struct Surrogates {
    /// Unscanned bytes from a backslash on.
    carry: Vec<u8>,
    /// Bytes of the next piece that an escape already took.
    skip: usize,
    found: bool,
}

impl Surrogates {
    fn feed(&mut self, piece: &[u8]) {
        if self.found {
            return;
        }
        if self.carry.is_empty() {
            self.scan(piece);
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(piece);
            self.scan(&data);
        }
    }

    fn scan(&mut self, data: &[u8]) {
        let mut i = std::mem::take(&mut self.skip);
        if i >= data.len() {
            self.skip = i - data.len();
            return;
        }
        while let Some(found) = memchr::memchr(b'\\', &data[i..]) {
            let at = i + found;
            if at + 12 > data.len() {
                self.carry = data[at..].to_vec();
                return;
            }
            match format::escape_len(data, at) {
                Some(n) => i = at + n,
                None => {
                    self.found = true;
                    return;
                }
            }
            if i >= data.len() {
                self.skip = i - data.len();
                return;
            }
        }
    }

    /// Whether the text held a lone surrogate.
    fn finish(&mut self) -> bool {
        if !self.found && !self.carry.is_empty() {
            self.found = format::lone_surrogate(&self.carry).is_some();
        }
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split of `text` into pieces of `size` bytes.
    fn pieces(text: &[u8], size: usize) -> impl Iterator<Item = &[u8]> {
        text.chunks(size.max(1))
    }

    #[test]
    fn depth_and_surrogates_in_pieces_are_what_the_whole_text_gives() {
        let texts: [&[u8]; 8] = [
            br#"{"a":[1,{"b":"x\\\"y[["}],"c":"\ud83d\ude00"}"#,
            br#"["\ud800"]"#,
            br#"["\udc00x"]"#,
            br#"["\ud800\u0041"]"#,
            br#"["\\ud800", "\\\ud800"]"#,
            br#"[[[[["\"]]]]]"]]]]]"#,
            br#""abc\u+123\ud83d\ude00\n""#,
            br#"["\ud83d\ude00\ud83d"#,
        ];
        for text in texts {
            for size in 1..=text.len() {
                let mut d = Depth::default();
                let mut s = Surrogates::default();
                for p in pieces(text, size) {
                    d.feed(p);
                    s.feed(p);
                }
                let t = String::from_utf8_lossy(text);
                assert_eq!(d.deepest, format::depth_of(text), "{t} by {size}");
                assert_eq!(
                    s.finish(),
                    format::lone_surrogate(text).is_some(),
                    "{t} by {size}"
                );
            }
        }
    }

    #[test]
    fn sealed_and_layout_are_told_only_when_the_prefix_tells() {
        assert_eq!(sealed_in(b"  {\n  \"statesafe\": {"), None);
        let sealed = format::encode_sealed(
            std::path::Path::new("s.json"),
            &serde_json::json!({"n": 1}),
            Style::Spaces(2),
            3,
            "2026-01-01T00:00:00Z".into(),
            0,
        )
        .unwrap();
        let header_end = sealed.windows(7).position(|w| w == b"\"state\"").unwrap();
        assert_eq!(sealed_in(&sealed[..header_end]), None);
        assert_eq!(sealed_in(&sealed[..header_end + 7]), Some(true));
        // A plain document's own `statesafe` member is no envelope.
        assert_eq!(
            sealed_in(b"{\"statesafe\": {\"v\": 2}, \"x\": 1}"),
            Some(false)
        );
        assert_eq!(sealed_in(b"{\"statesafe\": 1"), Some(false));
        assert_eq!(sealed_in(b"{\"state"), None);
        assert_eq!(sealed_in(b"{\"items\":[]}"), Some(false));
        assert_eq!(sealed_in(b"[1]"), Some(false));
        assert_eq!(sealed_in(b"   "), None);
        assert_eq!(sealed_in(b"{   "), None);
        assert_eq!(style_in(b"{\"a\":1"), Some(Some(Style::Compact)));
        assert_eq!(style_in(b"{\n    \"a\""), Some(Some(Style::Spaces(4))));
        assert_eq!(style_in(b"{\n   "), None);
        assert_eq!(style_in(b"\"no bracket yet"), None);
        assert_eq!(style_in(b"{}"), Some(None));
    }

    proptest::proptest! {
        #[test]
        fn pieces_of_any_text_scan_as_the_whole(
            text in proptest::collection::vec(proptest::sample::select(b"\\u\"[]{}d8Dc0a1 ".to_vec()), 0..64),
            size in 1usize..16,
        ) {
            let mut d = Depth::default();
            let mut s = Surrogates::default();
            for p in pieces(&text, size) {
                d.feed(p);
                s.feed(p);
            }
            proptest::prop_assert_eq!(d.deepest, format::depth_of(&text));
            proptest::prop_assert_eq!(s.finish(), format::lone_surrogate(&text).is_some());
        }
    }
}
