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
    /// history row changed outside statesafe or damaged), or one whose document does
    /// not match the checksum it records (a file's line or a row edited by hand);
    /// never written by statesafe.
    /// It has no time, writer, patch or snapshot: rebuilding a version (`document_at`,
    /// a recovery's chain) stops at it.
    Damaged {
        /// Why it could not be read.
        reason: String,
    },
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// Why the patch, snapshot or checksum is missing, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The checksum of the document this generation holds (the xxh3-64 of its
    /// canonical JSON: compact, each object's members sorted by key), verified
    /// whenever the version is rebuilt from the history; written as 16 hex digits.
    /// `None` on entries written before statesafe recorded it, and on entries of a
    /// document too large to hold as a tree (their note says so).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "hex_checksum"
    )]
    pub checksum: Option<u64>,
}

impl HistoryEntry {
    /// The entry shown in place of one that could not be read or failed its checksum
    /// (`reason`): no time, writer, patch, snapshot or checksum.
    pub(crate) fn damaged(generation: u64, reason: String) -> HistoryEntry {
        HistoryEntry {
            generation,
            time: String::new(),
            writer: None,
            change: Change::Damaged { reason },
            patch: None,
            snapshot: None,
            note: None,
            checksum: None,
        }
    }
}

/// The checksum a history entry records of its document: the xxh3-64 of the
/// document's canonical JSON (compact, each object's members sorted by key, strings
/// and numbers as statesafe writes them). Canonical because a version rebuilt from a
/// snapshot and patches holds the same members as the one committed, not always in
/// the same order (a patch adds a member at the end).
pub(crate) fn checksum_of(document: &Value) -> u64 {
    fn canonical(out: &mut Vec<u8>, v: &Value) {
        let member = |out: &mut Vec<u8>, i: usize, key: &String, value: &Value| {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, key).expect("invariant: writing to memory");
            out.push(b':');
            canonical(out, value);
        };
        match v {
            Value::Object(map) => {
                out.push(b'{');
                if map.keys().is_sorted() {
                    for (i, (key, value)) in map.iter().enumerate() {
                        member(out, i, key, value);
                    }
                } else {
                    let mut members: Vec<(&String, &Value)> = map.iter().collect();
                    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    for (i, (key, value)) in members.into_iter().enumerate() {
                        member(out, i, key, value);
                    }
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    canonical(out, item);
                }
                out.push(b']');
            }
            scalar => {
                serde_json::to_writer(&mut *out, scalar).expect("invariant: writing to memory")
            }
        }
    }
    let mut text = Vec::new();
    canonical(&mut text, document);
    crate::format::checksum(&text)
}

/// [`HistoryEntry::checksum`] as 16 hex digits (a JSON number that large loses digits
/// in JavaScript and in many other readers).
mod hex_checksum {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(sum: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match sum {
            Some(sum) => s.serialize_str(&format!("{sum:016x}")),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 16 {
            return Err(serde::de::Error::custom("a checksum is 16 hex digits"));
        }
        u64::from_str_radix(&text, 16)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
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

/// Whether `name` is one statesafe gives a history segment.
pub(crate) fn is_segment_name(name: &OsStr) -> bool {
    parse_segment_name(name).is_some()
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

/// The note of an entry with a patch but no checksum: statesafe held the document
/// only as bytes.
pub(crate) const NO_CHECKSUM: &str = "no checksum: the document is larger than history.max_patch_bytes (held as bytes, not as a tree)";

/// How the reason of an [`Error::GenerationUnavailable`] begins when a history entry
/// does not produce the document it records (its hint then says what to do).
pub(crate) const DAMAGED_ENTRY: &str = "the history entry of generation";

/// Rebuilds the document at `generation` from the nearest snapshot and the patches
/// after it, and verifies it against the checksum its entry records. An entry that
/// records none (written before statesafe recorded them, or of a document too large
/// to hold as a tree) is not verified: the chain is carried on to the next later
/// entry that records one, which catches an edit only while the edited value
/// survives to it (a damage check, not a proof: `docs/design.md`, "History"). A
/// mismatch is an error naming the entry that does not produce what it records.
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
    let chain = &upto[start..];
    let doc = rebuild(chain, None).map_err(unavailable)?;
    let target = chain
        .last()
        .expect("invariant: the chain ends at `generation`");
    let damaged = |chain: &[&HistoryEntry]| unavailable(culprit(chain));
    if let Some(sum) = target.checksum {
        if checksum_of(&doc) != sum {
            return Err(damaged(chain));
        }
        return Ok(doc);
    }
    // No checksum of its own. An entry statesafe writes without one says why (its
    // note); one without a note after an entry that has a checksum had it removed (or
    // was written by an older statesafe after a newer one): not vouched for.
    if target.note.is_none() && chain.iter().any(|e| e.checksum.is_some()) {
        return Err(unavailable(format!(
            "{DAMAGED_ENTRY} {generation} records no checksum, though an entry before it does: it was changed outside statesafe (or written by an older statesafe after a newer one), and statesafe cannot vouch for the version it rebuilds"
        )));
    }
    // Checked by the next entry that records a checksum, when the chain reaches it
    // (a later change that overwrote an edited value hides that edit from this check:
    // entries written before checksums were recorded are vouched for no further).
    let mut later: Vec<&HistoryEntry> = chain.to_vec();
    let mut next = doc.clone();
    for entry in entries.iter().filter(|e| e.generation > generation) {
        if entry.generation != later.last().expect("invariant: not empty").generation + 1 {
            break;
        }
        let Ok(rebuilt) = rebuild(&[entry], Some(next)) else {
            break;
        };
        next = rebuilt;
        later.push(entry);
        if let Some(sum) = entry.checksum {
            if checksum_of(&next) != sum {
                return Err(damaged(&later));
            }
            break;
        }
    }
    Ok(doc)
}

/// Shows each entry of `entries` (a listing, oldest first) whose document does not
/// match the checksum it records as [`Change::Damaged`], naming it: the history's
/// consecutive entries are rebuilt from each snapshot on, as `document_at` rebuilds
/// them. An entry the rebuild cannot reach (no snapshot before it, a gap, an entry
/// already damaged) is shown as recorded; one without a checksum too.
pub(crate) fn mark_damaged(entries: &mut [HistoryEntry]) {
    let mut doc: Option<Value> = None;
    let mut at = 0;
    for entry in entries.iter_mut() {
        let candidate = match (&entry.snapshot, &entry.patch, doc.take()) {
            (Some(snapshot), _, _) => Some(snapshot.clone()),
            (None, Some(patch), Some(mut d)) if entry.generation == at + 1 => {
                json_patch::patch(&mut d, patch).ok().map(|()| d)
            }
            _ => None,
        };
        at = entry.generation;
        let Some(candidate) = candidate else { continue };
        match entry.checksum {
            Some(sum) if checksum_of(&candidate) != sum => {
                let reason = format!(
                    "{DAMAGED_ENTRY} {} was changed outside statesafe or damaged: the document it produces does not match the checksum it records ({sum:016x}); no version is rebuilt through it",
                    entry.generation
                );
                *entry = HistoryEntry::damaged(entry.generation, reason);
            }
            _ => doc = Some(candidate),
        }
    }
}

/// The document `chain` (a snapshot, then consecutive entries with patches; or, from
/// `doc`, consecutive entries with patches) produces; `Err` says why it cannot be
/// rebuilt.
fn rebuild(chain: &[&HistoryEntry], doc: Option<Value>) -> std::result::Result<Value, String> {
    let (mut doc, mut at, rest) = match doc {
        Some(doc) => (doc, chain[0].generation - 1, chain),
        None => (
            chain[0]
                .snapshot
                .clone()
                .expect("invariant: a chain starts at a snapshot"),
            chain[0].generation,
            &chain[1..],
        ),
    };
    for entry in rest {
        let patch = match (&entry.patch, entry.generation == at + 1) {
            (Some(p), true) => p,
            _ => {
                return Err(format!(
                    "the entry for generation {} has no patch from {at}",
                    entry.generation
                ));
            }
        };
        json_patch::patch(&mut doc, patch).map_err(|e| {
            format!(
                "the patch of generation {} does not apply: {e}",
                entry.generation
            )
        })?;
        at = entry.generation;
    }
    Ok(doc)
}

/// Why `chain` (which rebuilds, but whose last checksum does not match) cannot be
/// served: the first entry whose recorded checksum its document fails, or the last.
fn culprit(chain: &[&HistoryEntry]) -> String {
    let mut doc = None;
    let mut found = chain.last().expect("invariant: not empty");
    for (i, entry) in chain.iter().enumerate() {
        doc = match doc {
            None => entry.snapshot.clone(),
            Some(d) => rebuild(&chain[i..=i], Some(d)).ok(),
        };
        let Some(d) = &doc else { break };
        if entry.checksum.is_some_and(|sum| checksum_of(d) != sum) {
            found = entry;
            break;
        }
    }
    format!(
        "{DAMAGED_ENTRY} {} was changed outside statesafe or damaged: the document rebuilt through it does not match the checksum it records{}, so statesafe does not serve the version",
        found.generation,
        match found.checksum {
            Some(sum) => format!(" ({sum:016x})"),
            None => String::new(),
        }
    )
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
            checksum: None,
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
    fn the_checksum_is_of_the_canonical_document() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2, "x": 1.50}], "a": "é"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":"é","b":[1,{"x":1.50,"y":2}]}"#).unwrap();
        assert_eq!(checksum_of(&a), checksum_of(&b));
        // The xxh3-64 of the compact text, members sorted: checkable with other tools.
        assert_eq!(
            checksum_of(&a),
            crate::format::checksum(r#"{"a":"é","b":[1,{"x":1.50,"y":2}]}"#.as_bytes())
        );
        let c: Value = serde_json::from_str(r#"{"a":"é","b":[1,{"x":1.5,"y":2}]}"#).unwrap();
        assert_ne!(
            checksum_of(&a),
            checksum_of(&c),
            "numbers keep their digits"
        );
        let d: Value = serde_json::from_str(r#"{"a":"é","b":[{"x":1.50,"y":2},1]}"#).unwrap();
        assert_ne!(checksum_of(&a), checksum_of(&d), "arrays keep their order");
    }

    fn checksummed(entries: &mut [HistoryEntry]) {
        let mut doc = Value::Null;
        for e in entries {
            match (&e.snapshot, &e.patch) {
                (Some(s), _) => doc = s.clone(),
                (None, Some(p)) => json_patch::patch(&mut doc, p).unwrap(),
                (None, None) => unreachable!(),
            }
            e.checksum = Some(checksum_of(&doc));
        }
    }

    #[test]
    fn a_rebuilt_version_is_verified_against_the_checksums_entries_record() {
        let v1 = serde_json::json!({"n": 1, "m": 0});
        let v2 = serde_json::json!({"n": 2, "m": 0});
        let v3 = serde_json::json!({"n": 3, "m": 0});
        let p = std::path::Path::new("s.json");
        let mut entries = vec![
            entry(1, Some(v1.clone()), None),
            entry(2, None, Some(json_patch::diff(&v1, &v2))),
            entry(3, None, Some(json_patch::diff(&v2, &v3))),
        ];
        checksummed(&mut entries);
        assert_eq!(document_at(p, &entries, 2).unwrap(), v2);
        // Members added by a patch come last: the checksum does not depend on order.
        let v4 = serde_json::json!({"a": 1, "m": 0, "n": 3});
        entries.push(entry(4, None, Some(json_patch::diff(&v3, &v4))));
        entries[3].checksum = Some(checksum_of(&v4));
        assert_eq!(document_at(p, &entries, 4).unwrap(), v4);
        let edited = {
            let mut e = entries.clone();
            e[1].patch = Some(json_patch::diff(
                &v1,
                &serde_json::json!({"n": 999, "m": 0}),
            ));
            e
        };
        let why = document_at(p, &edited, 2).unwrap_err().to_string();
        assert!(why.contains("history entry of generation 2"), "{why}");
        // Generation 3 replaces `n`: it is what generation 3's entry records.
        assert_eq!(document_at(p, &edited, 3).unwrap(), v3);
        // An edited snapshot is named as the entry that does not match.
        let mut snap = entries.clone();
        snap[0].snapshot = Some(serde_json::json!({"n": 1, "m": 5}));
        let why = document_at(p, &snap, 3).unwrap_err().to_string();
        assert!(why.contains("history entry of generation 1 "), "{why}");
        // Without checksums (entries written before they were recorded): served as
        // rebuilt, but checked by a later entry's checksum when the chain reaches one.
        let mut legacy = entries.clone();
        for e in &mut legacy[..3] {
            e.checksum = None;
        }
        assert_eq!(document_at(p, &legacy, 2).unwrap(), v2);
        legacy[1].patch = Some(json_patch::diff(&v1, &serde_json::json!({"n": 2, "m": 7})));
        let why = document_at(p, &legacy, 2).unwrap_err().to_string();
        assert!(why.contains("history entry of generation 4"), "{why}");
        // One without a checksum after entries with one had it removed.
        let mut stripped = entries.clone();
        stripped[1].checksum = None;
        let why = document_at(p, &stripped, 2).unwrap_err().to_string();
        assert!(why.contains("records no checksum"), "{why}");
        stripped[1].note = Some(NO_CHECKSUM.into());
        assert_eq!(document_at(p, &stripped, 2).unwrap(), v2);
    }

    #[test]
    fn the_checksum_is_written_as_hex_and_read_back() {
        let mut e = entry(7, Some(serde_json::json!({"n": 1})), None);
        e.checksum = Some(0x00ab_cdef_0123_4567);
        let line = serde_json::to_string(&e).unwrap();
        assert!(
            line.ends_with(r#","checksum":"00abcdef01234567"}"#),
            "{line}"
        );
        assert_eq!(parse_entry(line.as_bytes()), Some(e));
        assert!(parse_entry(line.replace("00abcdef", "00abcdeg").as_bytes()).is_none());
        let legacy = r#"{"generation":7,"time":"","change":"commit","snapshot":{"n":1}}"#;
        assert_eq!(parse_entry(legacy.as_bytes()).unwrap().checksum, None);
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
