//! The history: an append-only audit trail of committed generations.
//!
//! Entries are JSON lines in segment files `.NAME.statesafe/history/seg-N.jsonl`,
//! segment `N` holding generations `N*S+1 ..= (N+1)*S` where `S = max(1, keep/4)`.
//! Each entry carries the writer and an RFC 6902 patch from the previous generation;
//! the first entry of each segment (and any entry after a gap) also carries a full
//! snapshot, so that any retained generation can be rebuilt after older segments are
//! pruned. Retention deletes whole segments once every generation in them is older
//! than the last `keep`.
//!
//! An entry is appended only after its commit is durable, so the history never names
//! a generation that was not committed. The append is not synced: a power loss may
//! drop the newest entries (never state); the next commit then starts a fresh snapshot.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Op, Result};
use crate::format::Writer;
use crate::settings::HistoryPolicy;
use crate::sidecar::{Dir, Sidecar, Sub, Use};
use crate::sys::Access;
use crate::write::Perms;

/// Why a generation came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Change {
    /// A commit through statesafe.
    Commit,
    /// A change made outside statesafe (a hand edit, another program), found on load.
    External,
    /// A backup brought back by `restore`.
    Restore {
        /// The generation restored.
        from: u64,
    },
    /// Automatic recovery from a damaged file.
    Recovery {
        /// Where the damaged file was kept.
        quarantined: Option<PathBuf>,
        /// The backup generation restored (`None`: the store's default state).
        from: Option<u64>,
    },
    /// An entry that could not be read, shown in its place (a PostgreSQL state's
    /// history row changed outside statesafe or damaged); never written by statesafe.
    /// It has no time, writer, patch or snapshot: rebuilding a version (`document_at`,
    /// a recovery's chain) stops at it.
    Damaged {
        /// Why it could not be read.
        reason: String,
    },
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The generation this entry describes.
    #[serde(deserialize_with = "crate::format::bounded_generation")]
    pub generation: u64,
    /// When it was recorded (RFC 3339, UTC).
    pub time: String,
    /// Who wrote it (`None` for external changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<Writer>,
    /// Why it came to be.
    pub change: Change,
    /// RFC 6902 patch from the previous generation, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<json_patch::Patch>,
    /// The whole document, on the first entry of a segment and after a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Value>,
    /// Why the patch or snapshot is missing, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn segment_size(policy: &HistoryPolicy) -> u64 {
    u64::from(policy.keep / 4).max(1)
}

fn segment_of(generation: u64, size: u64) -> u64 {
    generation.saturating_sub(1) / size
}

fn segment_name(segment: u64) -> String {
    format!("seg-{segment:020}.jsonl")
}

fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let s = name.to_str()?;
    s.strip_prefix("seg-")?.strip_suffix(".jsonl")?.parse().ok()
}

/// Whether the entry for `generation` must carry a snapshot: it opens a segment, or
/// the entry before it is not `generation - 1`.
pub(crate) fn needs_snapshot(
    policy: &HistoryPolicy,
    generation: u64,
    last_recorded: Option<u64>,
) -> bool {
    let size = segment_size(policy);
    (generation - 1).is_multiple_of(size) || last_recorded != Some(generation - 1)
}

/// Appends `entry`, then prunes segments the policy no longer keeps.
pub(crate) fn append(
    sidecar: &Sidecar,
    policy: &HistoryPolicy,
    entry: &HistoryEntry,
    perms: Perms,
) -> Result<()> {
    let dir = sidecar.sub_or_create(Sub::History, perms, Op::History)?;
    let size = segment_size(policy);
    let segment = segment_of(entry.generation, size);
    let name = OsString::from(segment_name(segment));
    let path = dir.join(&name);
    let mut line = serde_json::to_vec(entry).expect("invariant: history entries serialize");
    line.push(b'\n');
    let mut file = open_segment(&dir, &name, perms)?;
    // A power loss during an earlier append can leave that line torn (no newline at
    // the end of the segment): start on a fresh line, or this entry would be glued to
    // the torn one and skipped with it by every reader.
    if ends_torn(&file).map_err(|e| Error::io(Op::History, &path, e))? {
        line.insert(0, b'\n');
    }
    // One write of one line with O_APPEND: concurrent appends cannot interleave bytes.
    file.write_all(&line)
        .map_err(|e| Error::io(Op::History, &path, e))?;
    if (entry.generation - 1).is_multiple_of(size) {
        prune(&dir, policy, entry.generation)?;
    }
    Ok(())
}

/// Appends `entries` (oldest first, consecutive generations after what the segments
/// hold) with one write per segment, then prunes; with `sync`, each segment written is
/// flushed (`fdatasync`), and the folder, before this returns. Journal mode's
/// compaction moves the journal's records here: once the journal is replaced, this is
/// where they are. `Err(Poisoning)`: a flush failed (never retried: the caller poisons
/// its store).
pub(crate) fn append_many(
    sidecar: &Sidecar,
    policy: &HistoryPolicy,
    entries: &[HistoryEntry],
    perms: Perms,
    sync: bool,
) -> std::result::Result<Result<()>, crate::write::Poisoning> {
    let Some(newest) = entries.last().map(|e| e.generation) else {
        return Ok(Ok(()));
    };
    let flushed = |r: io::Result<()>, path: &std::path::Path| {
        r.map_err(|e| crate::write::Poisoning(Error::io(Op::SyncFile, path, e)))
    };
    let dir = match sidecar.sub_or_create(Sub::History, perms, Op::History) {
        Ok(dir) => dir,
        Err(e) => return Ok(Err(e)),
    };
    let size = segment_size(policy);
    let mut at = 0;
    while at < entries.len() {
        let segment = segment_of(entries[at].generation, size);
        let n = entries[at..]
            .iter()
            .take_while(|e| segment_of(e.generation, size) == segment)
            .count();
        let name = OsString::from(segment_name(segment));
        let path = dir.join(&name);
        let mut lines = Vec::new();
        for entry in &entries[at..at + n] {
            serde_json::to_writer(&mut lines, entry).expect("invariant: history entries serialize");
            lines.push(b'\n');
        }
        let written = (|| {
            let mut file = open_segment(&dir, &name, perms)?;
            if ends_torn(&file).map_err(|e| Error::io(Op::History, &path, e))? {
                lines.insert(0, b'\n');
            }
            file.write_all(&lines)
                .map_err(|e| Error::io(Op::History, &path, e))?;
            Ok(file)
        })();
        let file = match written {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
        if sync {
            flushed(crate::sys::fdatasync(&file), &path)?;
        }
        at += n;
    }
    if sync {
        // A segment this created is named in the folder: made durable too.
        flushed(crate::sys::fsync(dir.fd()), dir.path())?;
    }
    Ok(prune(&dir, policy, newest))
}

/// Opens segment `name` for appending, creating it (exclusively, with the sidecar's
/// permissions before it holds anything) when it does not exist; if another writer
/// created it in between, appends to theirs.
fn open_segment(dir: &Dir, name: &OsStr, perms: Perms) -> Result<std::fs::File> {
    let path = dir.join(name);
    let open = |access| dir.open(name, access, 0o600, Use::Write, Op::History);
    match open(Access::Append)? {
        Some(file) => Ok(file),
        None => match open(Access::AppendCreate) {
            Ok(Some(file)) => {
                dir.fix_new_file(&file, perms)
                    .map_err(|e| Error::io(Op::History, &path, e))?;
                Ok(file)
            }
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                open(Access::Append)?
                    .ok_or_else(|| Error::io(Op::History, &path, io::ErrorKind::NotFound.into()))
            }
            Err(e) => Err(e),
            Ok(None) => Err(Error::io(
                Op::History,
                &path,
                io::ErrorKind::NotFound.into(),
            )),
        },
    }
}

/// Whether the segment's last byte is not a newline: an append was cut short.
fn ends_torn(file: &std::fs::File) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

/// Removes segments all of whose generations are older than the last `keep`.
fn prune(dir: &Dir, policy: &HistoryPolicy, newest: u64) -> Result<()> {
    let size = segment_size(policy);
    let oldest_kept = newest.saturating_sub(u64::from(policy.keep)) + 1;
    for name in dir.names(Op::History)? {
        if let Some(segment) = parse_segment_name(&name) {
            let last_in_segment = (segment + 1) * size;
            if last_in_segment < oldest_kept {
                dir.remove_file(&name, Op::History)?;
            }
        }
    }
    Ok(())
}

/// Recorded entries, oldest first, at most one per generation (the last one written
/// wins), none newer than `current`; with `retained_only`, none older than the last
/// `keep` either (without it, also the older entries still on disk, which rebuilding
/// a document may need for its snapshot).
pub(crate) fn read(
    sidecar: Option<&Sidecar>,
    policy: &HistoryPolicy,
    current: u64,
    retained_only: bool,
) -> Result<Vec<HistoryEntry>> {
    let Some(sidecar) = sidecar else {
        return Ok(Vec::new());
    };
    let Some(dir) = sidecar.sub(Sub::History, Op::History)? else {
        return Ok(Vec::new());
    };
    let mut segments: Vec<(u64, OsString)> = dir
        .names(Op::History)?
        .into_iter()
        .filter_map(|n| parse_segment_name(&n).map(|s| (s, n)))
        .collect();
    segments.sort();
    let mut by_generation = BTreeMap::new();
    for (_, name) in segments {
        let Some(bytes) = dir.read(&name, Op::History)? else {
            continue;
        };
        // A torn last line (power loss during an append) is skipped, not fatal.
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(entry) = parse_entry(line) {
                by_generation.insert(entry.generation, entry);
            }
        }
    }
    let oldest = if retained_only {
        current.saturating_sub(u64::from(policy.keep)) + 1
    } else {
        0
    };
    Ok(by_generation
        .into_values()
        .filter(|e| e.generation <= current && e.generation >= oldest)
        .collect())
}

/// Levels an entry adds around a document: the entry, its patch list, an operation.
const ENTRY_LEVELS: usize = 3;

/// One entry line, or `None` for a torn or foreign line. Documents nest up to
/// [`crate::json::MAX_DEPTH`] levels, beyond serde_json's default limit of 128: the
/// limit is lifted for lines no deeper than that (checked first, so a planted line
/// cannot make the parser recurse without bound).
fn parse_entry(line: &[u8]) -> Option<HistoryEntry> {
    if crate::format::depth_of(line) > crate::json::MAX_DEPTH + ENTRY_LEVELS {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    de.disable_recursion_limit();
    let entry = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(entry)
}

/// The last generation recorded (to detect gaps), reading only the newest segment.
pub(crate) fn last_recorded(
    sidecar: &Sidecar,
    policy: &HistoryPolicy,
    generation: u64,
) -> Option<u64> {
    let size = segment_size(policy);
    let dir = sidecar.sub(Sub::History, Op::History).ok()??;
    let segment = segment_of(generation, size);
    [Some(segment), segment.checked_sub(1)]
        .into_iter()
        .flatten()
        .find_map(|s| last_generation_in(&dir, &segment_name(s), generation).ok()?)
}

/// The generation of the last complete entry (at most `limit`) in one segment file,
/// reading only its tail: this runs on every commit.
/// `Ok(None)` when the segment is missing or holds no such entry, or when what has
/// its name is not statesafe's (a symbolic link or another user's file planted in
/// the sidecar: never read, and no record of ours).
fn last_generation_in(dir: &Dir, name: &str, limit: u64) -> Result<Option<u64>> {
    let file = match dir.open(OsStr::new(name), Access::Read, 0, Use::Read, Op::History) {
        Ok(Some(file)) => file,
        Ok(None) | Err(Error::Unsafe { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    last_generation_of(&file, limit).map_err(|e| Error::io(Op::History, dir.path().join(name), e))
}

/// [`last_generation_in`] of an open segment.
fn last_generation_of(file: &std::fs::File, limit: u64) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut window = 8192u64;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; (len - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        let mut lines: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        if start > 0 {
            // The first piece may be the end of a line that starts before the window.
            lines.remove(0);
        }
        if let Some(g) = lines
            .iter()
            .rev()
            .filter_map(|l| leading_generation(l))
            .find(|g| *g <= limit)
        {
            return Ok(Some(g));
        }
        if start == 0 {
            return Ok(None);
        }
        window *= 4;
    }
}

/// The generation of a complete entry line, without parsing the rest of it (entries
/// are serialized with `generation` first). A torn line does not count.
fn leading_generation(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"generation\":")?;
    if !line.ends_with(b"}") {
        return None;
    }
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

/// The newest generation recorded in any segment (for files re-created after deletion).
pub(crate) fn newest_generation(sidecar: &Sidecar) -> Result<Option<u64>> {
    let Some(dir) = sidecar.sub(Sub::History, Op::History)? else {
        return Ok(None);
    };
    let mut segments: Vec<u64> = dir
        .names(Op::History)?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    segments.sort_unstable();
    for s in segments.iter().rev() {
        if let Some(g) = last_generation_in(&dir, &segment_name(*s), u64::MAX)? {
            return Ok(Some(g));
        }
    }
    Ok(None)
}

/// Rebuilds the document at `generation` from the nearest snapshot and the patches
/// after it.
pub(crate) fn document_at(
    path: &std::path::Path,
    entries: &[HistoryEntry],
    generation: u64,
) -> Result<Value> {
    let unavailable = |reason: String| Error::GenerationUnavailable {
        path: path.to_path_buf(),
        generation,
        reason,
    };
    let upto: Vec<&HistoryEntry> = entries
        .iter()
        .filter(|e| e.generation <= generation)
        .collect();
    if upto.last().map(|e| e.generation) != Some(generation) {
        return Err(unavailable(
            "it is not in the history (older than the retention, or never recorded)".into(),
        ));
    }
    let start = upto
        .iter()
        .rposition(|e| e.snapshot.is_some())
        .ok_or_else(|| unavailable("no snapshot at or before it".into()))?;
    let mut doc = upto[start]
        .snapshot
        .clone()
        .expect("invariant: found by position");
    let mut at = upto[start].generation;
    for entry in &upto[start + 1..] {
        let patch = match (&entry.patch, entry.generation == at + 1) {
            (Some(p), true) => p,
            _ => {
                return Err(unavailable(format!(
                    "the entry for generation {} has no patch from {at}",
                    entry.generation
                )));
            }
        };
        json_patch::patch(&mut doc, patch).map_err(|e| {
            unavailable(format!(
                "the patch of generation {} does not apply: {e}",
                entry.generation
            ))
        })?;
        at = entry.generation;
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        generation: u64,
        snapshot: Option<Value>,
        patch: Option<json_patch::Patch>,
    ) -> HistoryEntry {
        HistoryEntry {
            generation,
            time: String::new(),
            writer: None,
            change: Change::Commit,
            patch,
            snapshot,
            note: None,
        }
    }

    #[test]
    fn documents_are_rebuilt_from_snapshot_and_patches() {
        let v1 = serde_json::json!({"n": 1});
        let v2 = serde_json::json!({"n": 2, "a": [1]});
        let v3 = serde_json::json!({"a": [1, 2]});
        let entries = vec![
            entry(1, Some(v1.clone()), None),
            entry(2, None, Some(json_patch::diff(&v1, &v2))),
            entry(3, None, Some(json_patch::diff(&v2, &v3))),
        ];
        let p = std::path::Path::new("s.json");
        assert_eq!(document_at(p, &entries, 1).unwrap(), v1);
        assert_eq!(document_at(p, &entries, 2).unwrap(), v2);
        assert_eq!(document_at(p, &entries, 3).unwrap(), v3);
        assert!(document_at(p, &entries, 4).is_err());
        assert!(document_at(p, &entries[1..], 3).is_err());
    }

    #[test]
    fn the_last_generation_is_read_from_the_tail_and_torn_lines_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.jsonl");
        let mut text = String::new();
        for g in 1..=300u64 {
            let e = entry(g, Some(serde_json::json!({"pad": "x".repeat(100)})), None);
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            last_generation_of(&std::fs::File::open(&path).unwrap(), u64::MAX).unwrap(),
            Some(300)
        );
        assert_eq!(
            last_generation_of(&std::fs::File::open(&path).unwrap(), 120).unwrap(),
            Some(120)
        );
        text.push_str("{\"generation\":301,\"time\":\"");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            last_generation_of(&std::fs::File::open(&path).unwrap(), u64::MAX).unwrap(),
            Some(300)
        );
    }

    #[test]
    fn snapshots_open_segments_and_follow_gaps() {
        let policy = HistoryPolicy {
            keep: 8,
            max_patch_bytes: 1 << 20,
        };
        assert!(needs_snapshot(&policy, 1, None));
        assert!(!needs_snapshot(&policy, 2, Some(1)));
        assert!(needs_snapshot(&policy, 3, Some(2)));
        assert!(needs_snapshot(&policy, 4, Some(2)));
    }
}
