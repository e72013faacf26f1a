//! A history patch for a large document, taken from the bytes of the change itself.
//!
//! Diffing two `serde_json::Value` trees costs several times the document in memory
//! and time, so the history does it only for documents up to `max_patch_bytes`. Most
//! commits of a large document change one value in place, though: the old and the new
//! version share every byte before and after it. Then the change is the replacement of
//! the innermost value of the new version that covers the differing bytes, found by one
//! scan of the new bytes (no tree) and a streamed comparison with the old version's
//! backup (no second copy in memory). The patch is exact: with the bytes before and
//! after identical, the replaced value sits at the same path in both versions.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes of the old version compared per read (small: this buffer is the only
/// memory the comparison takes).
const CHUNK: usize = 64 << 10;

/// A patch turning the version in `old` into `new` when they differ inside one value
/// other than the whole document, and the values involved are at most `limit` bytes.
/// `None` otherwise (or when `old` cannot be read).
pub(crate) fn local_patch(old: &File, new: &[u8], limit: usize) -> Option<json_patch::Patch> {
    local_patch_of(Old::file(old)?, New::Bytes(new), limit)
}

/// [`local_patch`] of an old version whose bytes the caller holds (read under the
/// lock, and byte for byte the backup's): no read of the backup.
pub(crate) fn local_patch_bytes(old: &[u8], new: &[u8], limit: usize) -> Option<json_patch::Patch> {
    local_patch_of(Old::Bytes(old), New::Bytes(new), limit)
}

/// [`local_patch`] of a new version in a file of `len` bytes (`stream.rs`): compared
/// with the old one a chunk at a time, and read into memory only as far as a
/// covering value can reach (every one ends within `limit` bytes of the change's
/// start, so the scan finds the same ones in that window).
pub(crate) fn local_patch_file(
    old: &File,
    new: &File,
    len: usize,
    limit: usize,
) -> Option<json_patch::Patch> {
    local_patch_of(Old::file(old)?, New::File(new, len), limit)
}

/// The old version of [`local_patch`]: its backup file (and length), or its bytes.
#[derive(Clone, Copy)]
enum Old<'a> {
    File(&'a File, usize),
    Bytes(&'a [u8]),
}

impl<'a> Old<'a> {
    fn file(f: &'a File) -> Option<Old<'a>> {
        Some(Old::File(
            f,
            usize::try_from(f.metadata().ok()?.len()).ok()?,
        ))
    }

    fn len(self) -> usize {
        match self {
            Old::File(_, len) => len,
            Old::Bytes(b) => b.len(),
        }
    }

    /// Its `n` bytes at `at` (read into `buf` from a file).
    fn chunk<'b>(self, at: usize, n: usize, buf: &'b mut Vec<u8>) -> Option<&'b [u8]>
    where
        'a: 'b,
    {
        match self {
            Old::Bytes(b) => b.get(at..at.checked_add(n)?),
            Old::File(f, _) => {
                buf.resize(n, 0);
                f.read_exact_at(&mut buf[..n], at as u64).ok()?;
                Some(&buf[..n])
            }
        }
    }
}

/// The new version of [`local_patch`]: in memory, or in a file of that length.
#[derive(Clone, Copy)]
enum New<'a> {
    Bytes(&'a [u8]),
    File(&'a File, usize),
}

impl<'a> New<'a> {
    fn len(self) -> usize {
        match self {
            New::Bytes(b) => b.len(),
            New::File(_, len) => len,
        }
    }

    /// Its `n` bytes at `at` (read into `buf` from a file).
    fn chunk<'b>(self, at: usize, n: usize, buf: &'b mut Vec<u8>) -> Option<&'b [u8]>
    where
        'a: 'b,
    {
        match self {
            New::Bytes(b) => b.get(at..at + n),
            New::File(f, _) => {
                buf.resize(n, 0);
                f.read_exact_at(&mut buf[..n], at as u64).ok()?;
                Some(&buf[..n])
            }
        }
    }
}

fn local_patch_of(old: Old<'_>, new: New<'_>, limit: usize) -> Option<json_patch::Patch> {
    let old_len = old.len();
    let new_len = new.len();
    let prefix = common_prefix(old, new)?;
    if prefix == new_len && prefix == old_len {
        return Some(json_patch::Patch(Vec::new()));
    }
    let suffix = common_suffix(old, old_len, new, new_len.min(old_len) - prefix)?;
    let read;
    let new: &[u8] = match new {
        New::Bytes(b) => b,
        New::File(f, _) => {
            let mut window = vec![0u8; new_len.min(prefix.saturating_add(limit).saturating_add(1))];
            f.read_exact_at(&mut window, 0).ok()?;
            read = window;
            &read
        }
    };
    // The innermost value that covers the change and is one whole value in the old
    // version too (a shorter or longer neighbour may look like a cover in the new one).
    // The innermost cover alone first: finding it stops the scan there, where all of
    // them take a scan to the end of the document, needed only when it does not do.
    let covers = [true, false]
        .into_iter()
        .flat_map(|first| covering_values(new, prefix, new_len - suffix, limit, first));
    for (start, end, path) in covers {
        let Some(old_end) = (end + old_len).checked_sub(new_len) else {
            continue;
        };
        if old_end < start || old_end - start > limit {
            continue;
        }
        let mut buf = Vec::new();
        let old_value = old.chunk(start, old_end - start, &mut buf)?;
        if crate::json::parse(old_value).is_err() {
            continue;
        }
        let value = crate::json::parse(&new[start..end]).ok()?;
        let op = serde_json::json!([{ "op": "replace", "path": path, "value": value }]);
        return serde_json::from_value(op).ok();
    }
    None
}

/// How many leading bytes `old` and `new` share.
fn common_prefix(old: Old<'_>, new: New<'_>) -> Option<usize> {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut at = 0usize;
    loop {
        let want = CHUNK.min(old.len() - at).min(new.len() - at);
        if want == 0 {
            return Some(at);
        }
        let same = same_prefix(
            old.chunk(at, want, &mut ours)?,
            new.chunk(at, want, &mut theirs)?,
        );
        at += same;
        if same < want {
            return Some(at);
        }
    }
}

/// How many trailing bytes `old` (of `old_len` bytes) and `new` share, at most `most`.
fn common_suffix(old: Old<'_>, old_len: usize, new: New<'_>, most: usize) -> Option<usize> {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut done = 0usize;
    while done < most {
        let n = CHUNK.min(most - done);
        let old_at = old_len - done - n;
        let new_at = new.len() - done - n;
        let same = same_suffix(
            old.chunk(old_at, n, &mut ours)?,
            new.chunk(new_at, n, &mut theirs)?,
        );
        done += same;
        if same < n {
            break;
        }
    }
    Some(done)
}

/// Blocks compared with `==` (memcmp, vectorized) before the byte-by-byte search for
/// the first difference: most of a large document is the same in both versions.
const BLOCK: usize = 256;

/// How many leading bytes `a` and `b` (of equal length) share.
fn same_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut at = 0;
    for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        if x != y {
            return at + x.iter().zip(y).take_while(|(p, q)| p == q).count();
        }
        at += x.len();
    }
    at
}

/// How many trailing bytes `a` and `b` (of equal length) share.
fn same_suffix(a: &[u8], b: &[u8]) -> usize {
    let mut done = 0;
    for (x, y) in a.rchunks(BLOCK).zip(b.rchunks(BLOCK)) {
        if x != y {
            return done
                + x.iter()
                    .rev()
                    .zip(y.iter().rev())
                    .take_while(|(p, q)| p == q)
                    .count();
        }
        done += x.len();
    }
    done
}

/// A value's place in its parent: the span of its key, or its index.
#[derive(Clone, Copy)]
enum Segment {
    Key(usize, usize),
    Index(usize),
}

/// One open array or object while scanning.
struct Frame {
    start: usize,
    object: bool,
    /// Elements seen (arrays) or whether a key is expected next (objects).
    count: usize,
    expect_key: bool,
    /// Where the last key read is in the bytes, quotes included (objects).
    key: (usize, usize),
    /// This container's own place in its parent (`None` for the document).
    segment: Option<Segment>,
}

/// The values of `json` (valid JSON) whose bytes cover `from..to`, innermost first,
/// up to `limit` bytes each and without the whole document: start, end, JSON Pointer.
/// With `first`, only the innermost one (found without scanning further).
fn covering_values(
    json: &[u8],
    from: usize,
    to: usize,
    limit: usize,
    first: bool,
) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    let pointer = |stack: &[Frame], last: Option<Segment>| {
        let mut p = String::new();
        for segment in stack.iter().filter_map(|f| f.segment).chain(last) {
            let text = match segment {
                Segment::Key(start, end) => {
                    serde_json::from_slice::<String>(&json[start..end]).unwrap_or_default()
                }
                Segment::Index(i) => i.to_string(),
            };
            p.push('/');
            p.push_str(&text.replace('~', "~0").replace('/', "~1"));
        }
        p
    };
    while i < json.len() {
        let c = json[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' => {
                if c == b','
                    && let Some(top) = stack.last_mut()
                {
                    top.expect_key = top.object;
                }
                i += 1;
                continue;
            }
            b'}' | b']' => {
                let Some(frame) = stack.pop() else {
                    return found;
                };
                let end = i + 1;
                if frame.start <= from && end >= to {
                    if stack.is_empty() || end - frame.start > limit {
                        // The whole document, or too large: nothing further out helps.
                        return found;
                    }
                    found.push((frame.start, end, pointer(&stack, frame.segment)));
                    if first {
                        return found;
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        let end = match c {
            b'"' => match string_end(json, i) {
                Some(end) => end,
                None => return found,
            },
            b'{' | b'[' => i,
            _ => {
                let mut j = i;
                while j < json.len()
                    && !matches!(json[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                {
                    j += 1;
                }
                j
            }
        };
        if let Some(top) = stack.last_mut()
            && top.object
            && top.expect_key
        {
            top.key = (i, end);
            top.expect_key = false;
            i = end;
            continue;
        }
        // A value starts at `i`: its place in the parent.
        let segment = stack.last_mut().map(|top| {
            if top.object {
                Segment::Key(top.key.0, top.key.1)
            } else {
                top.count += 1;
                Segment::Index(top.count - 1)
            }
        });
        if c == b'{' || c == b'[' {
            stack.push(Frame {
                start: i,
                object: c == b'{',
                count: 0,
                expect_key: c == b'{',
                key: (0, 0),
                segment,
            });
            i += 1;
            continue;
        }
        if i <= from
            && end >= to
            && end - i <= limit
            && let Some(segment) = segment
        {
            found.push((i, end, pointer(&stack, Some(segment))));
            if first {
                return found;
            }
        }
        i = end;
    }
    found
}

/// The index just after the string that starts at `at`.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        let n = memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[i + n] == b'"' {
            return Some(i + n + 1);
        }
        i += n + 2;
    }
}

/// Applies `patch` to `old` (for tests and callers that want to check one).
#[cfg(test)]
fn apply(old: &serde_json::Value, patch: &json_patch::Patch) -> serde_json::Value {
    let mut doc = old.clone();
    json_patch::patch(&mut doc, patch).unwrap();
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The patch from bytes in memory, checked to be the one from the new version in
    /// a file (at this limit and at small ones, where the window read is cut short).
    fn patch_of(old: &str, new: &str) -> Option<json_patch::Patch> {
        let old_text = old;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        std::fs::write(&path, old).unwrap();
        let new_path = dir.path().join("new.json");
        std::fs::write(&new_path, new).unwrap();
        let old = File::open(&path).unwrap();
        let new_file = File::open(&new_path).unwrap();
        let text = |p: &Option<json_patch::Patch>| serde_json::to_string(p).unwrap();
        for limit in [1 << 16, 1, 4, 9, 24] {
            let in_memory = local_patch(&old, new.as_bytes(), limit);
            let from_file = local_patch_file(&old, &new_file, new.len(), limit);
            assert_eq!(text(&in_memory), text(&from_file), "limit {limit}");
            let both_in_memory = local_patch_bytes(old_text.as_bytes(), new.as_bytes(), limit);
            assert_eq!(text(&in_memory), text(&both_in_memory), "limit {limit}");
        }
        local_patch(&old, new.as_bytes(), 1 << 16)
    }

    proptest! {
        #[test]
        fn shared_ends_match_a_byte_by_byte_count(
            a in proptest::collection::vec(0u8..3, 0..1200),
            flips in proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
        ) {
            let mut b = a.clone();
            for f in &flips {
                if !b.is_empty() {
                    let i = f.index(b.len());
                    b[i] = b[i].wrapping_add(1);
                }
            }
            let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let suffix = a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count();
            prop_assert_eq!(same_prefix(&a, &b), prefix);
            prop_assert_eq!(same_suffix(&a, &b), suffix);
        }
    }

    #[test]
    fn a_change_inside_one_value_is_a_replace_at_its_path() {
        // Longer than a chunk on either side, to cross the reads of the old version.
        let pad = "x".repeat(CHUNK + 1000);
        let old = format!(
            "{{\"pad\": \"{pad}\",\n \"a/b\": {{\"n\": 1, \"l\": [1, 2, 3]}}, \"z\": \"{pad}\"}}\n"
        );
        for (new, path) in [
            (old.replace("\"n\": 1", "\"n\": 2"), "/a~1b/n"),
            (old.replace("[1, 2, 3]", "[1, 20, 3]"), "/a~1b/l/1"),
            (old.replace("[1, 2, 3]", "[1, 2]"), "/a~1b/l"),
            (
                old.replace("\"n\": 1", "\"n\": {\"deep\": true}"),
                "/a~1b/n",
            ),
        ] {
            let patch = patch_of(&old, &new).unwrap();
            let text = serde_json::to_string(&patch).unwrap();
            assert!(text.contains(&format!("\"path\":\"{path}\"")), "{text}");
            assert!(text.len() < 200, "{text}");
            assert_eq!(
                apply(&crate::json::parse(old.as_bytes()).unwrap(), &patch),
                crate::json::parse(new.as_bytes()).unwrap()
            );
        }
        assert_eq!(patch_of(&old, &old).unwrap().0.len(), 0);
        // Keys are decoded for the path: escapes, `~`.
        let patch = patch_of(
            r#"{"k\u00e9~": {"n": 1}, "z": 0}"#,
            r#"{"k\u00e9~": {"n": 2}, "z": 0}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"replace","path":"/ké~0/n","value":2}]"#
        );
        // A new key in the document itself changes the document: no local patch.
        assert!(patch_of("{\"a\": 1}", "{\"a\": 1, \"b\": 2}").is_none());
        let patch = patch_of("[1]", "[2]").unwrap();
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"[{"op":"replace","path":"/0","value":2}]"#
        );
    }

    proptest! {
        #[test]
        fn local_patches_are_exact(
            old in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..4), 0..6),
            new in proptest::collection::vec(proptest::collection::vec(0u32..1000, 0..4), 0..6),
        ) {
            let old = serde_json::json!({ "a": old, "b": {"c": 1} });
            let new = serde_json::json!({ "a": new, "b": {"c": 1} });
            for text in [serde_json::to_string(&old).unwrap(), serde_json::to_string_pretty(&old).unwrap()] {
                let new_text = if text.contains('\n') { serde_json::to_string_pretty(&new).unwrap() } else { serde_json::to_string(&new).unwrap() };
                if let Some(patch) = patch_of(&text, &new_text) {
                    prop_assert_eq!(apply(&old, &patch), new.clone());
                }
            }
        }
    }
}
