//! Journal mode (format `journal`): commits whose cost follows the size of the change.
//!
//! `NAME` stays a complete JSON snapshot, written with the ordinary protocol at each
//! compaction; each commit in between appends one record to `.NAME.statesafe/journal`
//! and flushes it once. The record format, the torn-tail rule, the ordering argument
//! and compaction are in `docs/design.md`, "Journal mode"; this file is that section
//! in code:
//!
//! - [`Header`], [`encode_record`], [`scan`]: the bytes, and where the records end;
//! - [`overlay`]: a reader's snapshot plus the journal's records after it;
//! - `Store::journal_commit`: append one record, or say that this commit compacts;
//! - [`start`]: a new journal after a compaction's snapshot is durable.
//!
//! Every file here is opened through the sidecar's directory descriptor
//! ([`crate::sidecar::Dir::open`]: `O_NOFOLLOW`, `O_CLOEXEC`, regular files only, and
//! for writing one link and an accepted owner).

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, JournalFlushFailed, Op, Result};
use crate::events::Event;
use crate::format::{self, MAX_GENERATION, Style};
use crate::history::{Change, HistoryEntry};
use crate::lock;
use crate::settings::Format;
use crate::sidecar::{Sidecar, Sub, Use};
use crate::store::{Snapshot, Store};
use crate::sys::{self, Access};
use crate::transaction::Base;
use crate::write::{Current, Durability, Perms, Poisoning};

pub(crate) mod cache;
pub(crate) mod durable;
#[cfg(test)]
mod witness_model;

pub(crate) use durable::Pending;

/// The journal's name in the sidecar.
pub(crate) const JOURNAL: &str = "journal";
/// The magic of a journal whose records carry their time, writer and kind of change
/// (kinds 3 and 4), which this build writes.
const MAGIC: &[u8; 8] = b"SSJOURN2";
/// The magic of a journal an earlier build wrote (records of kinds 1 and 2, without
/// time or writer): still read, never appended to (the next commit compacts).
const MAGIC_V1: &[u8; 8] = b"SSJOURN1";
/// Length of the header: magic, generation followed, snapshot checksum, own checksum.
pub(crate) const HEADER_LEN: usize = 32;
/// `len` (4), `kind` (1), three zero bytes, `generation` (8).
const RECORD_HEAD: usize = 16;
/// The smallest record: its head, a body padded to 8 bytes, its checksum. A journal
/// whose records reach byte E holds at most `(E - HEADER_LEN) / MIN_RECORD` of them.
pub(crate) const MIN_RECORD: u64 = (RECORD_HEAD + 8 + 8) as u64;
/// The first preallocation, and each growth: small, because every read (a long-lived
/// store's too, at each commit) reads the zeros after the last record to the end of
/// the file (about 100 µs per MiB here), and a growth (a flush that also writes the
/// inode) comes only once per 64 KiB of records (about 800 one-key records).
const FIRST_CHUNK: u64 = 64 << 10;
const MAX_CHUNK: u64 = 64 << 10;
/// Default `journal_max_bytes`.
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// A patch longer than this is compared with the whole document, which is then
/// serialized too; shorter patches are taken as they are (a document is never
/// shorter than a patch this small by much).
const PATCH_CHECK: usize = 4096;

/// Whether the deliberately broken build `name` of the mutation check is in effect:
/// built with `--cfg statesafe_mutation="NAME"`, or, in the one build made with
/// `statesafe_mutation="journal"`, chosen at run time by `STATESAFE_MUTATION=NAME`
/// (`scripts/test.d/50-mutation.sh` builds the three journal mutations once). Always
/// false in a normal build: the condition is a constant there.
fn mutation(name: &str) -> bool {
    let built = match name {
        "journal-trust-checksum" => cfg!(statesafe_mutation = "journal-trust-checksum"),
        "journal-skip-flush" => cfg!(statesafe_mutation = "journal-skip-flush"),
        "journal-compact-early" => cfg!(statesafe_mutation = "journal-compact-early"),
        _ => false,
    };
    built
        || (cfg!(statesafe_mutation = "journal")
            && std::env::var("STATESAFE_MUTATION").is_ok_and(|v| v == name))
}

/// The format a store uses: the options', unless journal mode is involved, which is a
/// property of the file (every reader must replay the journal, so one store may not
/// switch it on or off for itself).
pub(crate) fn effective_format(
    path: &Path,
    option: Option<Format>,
    recorded: Format,
) -> Result<Format> {
    match option {
        None => Ok(recorded),
        Some(f) if (f == Format::Journal) == (recorded == Format::Journal) => Ok(f),
        Some(f) => Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "the `{}` format as a store option on a `{}` file",
                f.name(),
                recorded.name()
            ),
            why: "journal mode is recorded in the file's settings, so that every reader replays the journal; change it there (`statesafe settings FILE --format ...`)".into(),
        }),
    }
}

/// What a record's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An RFC 6902 patch from the previous generation.
    Patch = 1,
    /// The whole document.
    Document = 2,
}

/// The kind byte of a record whose body starts with its metadata (time, writer,
/// change): the [`Kind`] plus this. Records of kinds 1 and 2 (an earlier build's)
/// have none.
const WITH_META: u8 = 2;

/// What a record says about its commit (kinds 3 and 4): compact JSON, the same fields
/// as a history entry's, so that the history is the records.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct RecordMeta {
    /// When it was committed (RFC 3339, UTC).
    pub time: String,
    /// The journal offset up to which its writer held every record durable when it
    /// wrote this one (every earlier record there was flushed by a flush that
    /// succeeded, or this record is acknowledged only after one that covers them).
    /// A bad record before that offset is damage; past it, a torn append (see
    /// [`scan`]). Left out by earlier builds: the record's own offset is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<u64>,
    /// The checksum of the record before it in the journal (of the journal's header
    /// for the first record): a record left past a torn batch by another lineage of
    /// appends names another record, so a scan stops there (see [`scan_at`]): 16 hex
    /// digits, so that a record's length does not vary with it. Left out by earlier
    /// builds: such a record follows any record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// Left out when the store that wrote this record wrote the one before it too
    /// (in this journal): the writer is that record's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<crate::format::Writer>,
    pub change: Change,
}

impl RecordMeta {
    /// This process's commit, now; `with_writer` false: the writer is the previous
    /// record's (this store wrote it); `durable`: see [`RecordMeta::durable`]; `pid`:
    /// this process's id, as the writers' lock's holder checked it
    /// ([`lock::Guard::check_process`]); `prev`: see [`RecordMeta::prev`].
    pub(crate) fn now(
        change: &Change,
        with_writer: bool,
        durable: u64,
        prev: u64,
        pid: u32,
    ) -> Vec<u8> {
        // Written piece by piece, not by `format!` (its argument machinery was most of
        // this function's 3,000 instructions per commit); the bytes are the same.
        let mut out = Vec::with_capacity(if with_writer { 256 } else { 112 });
        out.extend_from_slice(b"{\"time\":\"");
        {
            use std::io::Write as _;
            write!(
                out,
                "{}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now())
            )
            .expect("invariant: writing to a Vec succeeds");
        }
        out.extend_from_slice(b"\",\"durable\":");
        crate::json_out::push_decimal(&mut out, durable);
        out.extend_from_slice(b",\"prev\":\"");
        for i in 0..16 {
            out.push(b"0123456789abcdef"[((prev >> (60 - 4 * i)) & 15) as usize]);
        }
        out.push(b'"');
        if with_writer {
            // The writer's part is the same for every commit of a process: serialized
            // once per process id (a forked child is another writer).
            static WRITER: std::sync::Mutex<Option<(u32, String)>> = std::sync::Mutex::new(None);
            let mut kept = WRITER
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let writer = match kept.as_ref() {
                Some((p, w)) if *p == pid => w,
                _ => {
                    let w = serde_json::to_string(&crate::format::Writer::current(true))
                        .expect("invariant: a writer serializes");
                    &kept.insert((pid, w)).1
                }
            };
            out.extend_from_slice(b",\"writer\":");
            out.extend_from_slice(writer.as_bytes());
        }
        out.extend_from_slice(b",\"change\":");
        match change {
            Change::Commit => out.extend_from_slice(b"\"commit\""),
            other => {
                serde_json::to_writer(&mut out, other).expect("invariant: a change serializes")
            }
        }
        out.push(b'}');
        out
    }
}

/// The journal's header: which snapshot it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The generation of the snapshot; the first record is this + 1.
    pub follows: u64,
    /// The xxh3 of that snapshot's bytes.
    pub snapshot: u64,
    /// 2: this build's (records carry their metadata); 1: an earlier build's, read
    /// but never appended to.
    pub version: u8,
}

impl Header {
    /// The header of a new journal (this build's version).
    pub(crate) fn new(follows: u64, snapshot: u64) -> Header {
        Header {
            follows,
            snapshot,
            version: 2,
        }
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(if self.version == 1 { MAGIC_V1 } else { MAGIC });
        b[8..16].copy_from_slice(&self.follows.to_le_bytes());
        b[16..24].copy_from_slice(&self.snapshot.to_le_bytes());
        let sum = format::checksum(&b[..24]);
        b[24..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// The header's checksum: what the journal's first record names as the record
    /// before it ([`RecordMeta::prev`]).
    pub(crate) fn checksum(&self) -> u64 {
        le64(&self.encode()[24..])
    }

    /// `None` unless these are the bytes of a header statesafe wrote.
    pub(crate) fn decode(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_LEN)?;
        let version = match &b[..8] {
            m if m == MAGIC => 2,
            m if m == MAGIC_V1 => 1,
            _ => return None,
        };
        if format::checksum(&b[..24]) != le64(&b[24..32]) {
            return None;
        }
        let follows = le64(&b[8..16]);
        (follows <= MAX_GENERATION).then_some(Header {
            follows,
            snapshot: le64(&b[16..24]),
            version,
        })
    }
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("invariant: 8 bytes"))
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// One record's bytes: head, body, zero padding to 8, checksum of head and body.
/// With `meta` (this build's records, kinds 3 and 4) the body is the metadata's
/// length (u32 LE), the metadata ([`RecordMeta`], compact JSON), then the change;
/// without it (an earlier build's layout, kinds 1 and 2; tests only) the change alone.
/// `None` when the body is too long for the length field (the commit then compacts).
pub(crate) fn encode_record(
    generation: u64,
    kind: Kind,
    meta: Option<&[u8]>,
    body: &[u8],
) -> Option<Vec<u8>> {
    let meta_len = meta.map_or(0, |m| 4 + m.len());
    let total = meta_len.checked_add(body.len())?;
    let len = u32::try_from(total).ok().filter(|_| !body.is_empty())?;
    let kind = kind as u8 + if meta.is_some() { WITH_META } else { 0 };
    let mut r = Vec::with_capacity(RECORD_HEAD + padded(total) + 8);
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&[kind, 0, 0, 0]);
    r.extend_from_slice(&generation.to_le_bytes());
    if let Some(m) = meta {
        r.extend_from_slice(&u32::try_from(m.len()).ok()?.to_le_bytes());
        r.extend_from_slice(m);
    }
    r.extend_from_slice(body);
    let sum = format::checksum(&r);
    r.resize(RECORD_HEAD + padded(total), 0);
    r.extend_from_slice(&sum.to_le_bytes());
    Some(r)
}

/// A record that verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub generation: u64,
    pub kind: Kind,
    /// Where its metadata is in the bytes scanned (`None`: an earlier build's record).
    pub meta: Option<std::ops::Range<usize>>,
    /// Where its change (patch or document) is in the bytes scanned.
    pub body: std::ops::Range<usize>,
}

/// The record at `at`, if one verifies there: `(record, its length in bytes)`.
fn parse_at(bytes: &[u8], at: usize) -> Option<(Record, usize)> {
    let head = bytes.get(at..at.checked_add(RECORD_HEAD)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("invariant: 4 bytes")) as usize;
    let (kind, with_meta) = match head[4] {
        1 => (Kind::Patch, false),
        2 => (Kind::Document, false),
        3 => (Kind::Patch, true),
        4 => (Kind::Document, true),
        _ => return None,
    };
    if len == 0 || head[5..8] != [0, 0, 0] {
        return None;
    }
    let size = RECORD_HEAD + padded(len) + 8;
    let end = at.checked_add(size)?;
    let record = bytes.get(at..end)?;
    let body_end = RECORD_HEAD + len;
    let checksum_fails = !mutation("journal-trust-checksum")
        && format::checksum(&record[..body_end]) != le64(&record[size - 8..]);
    if record[body_end..size - 8].iter().any(|b| *b != 0) || checksum_fails {
        return None;
    }
    let generation = le64(&head[8..16]);
    let start = at + RECORD_HEAD;
    let (meta, body) = if with_meta {
        let meta_len = u32::from_le_bytes(bytes.get(start..start + 4)?.try_into().ok()?) as usize;
        let body = start.checked_add(4)?.checked_add(meta_len)?;
        if body >= at + body_end {
            return None;
        }
        (Some(start + 4..body), body..at + body_end)
    } else {
        (None, start..at + body_end)
    };
    Some((
        Record {
            generation,
            kind,
            meta,
            body,
        },
        size,
    ))
}

/// What a scan of the journal's bytes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The records that verify, in order, each the generation after the one before.
    pub records: Vec<Record>,
    /// Where the next record goes: just after the last of them.
    pub end: usize,
    /// The end of the bytes a torn append left after `end` (`end` when there are none):
    /// the next writer zeroes them before its own record.
    pub dirty_to: usize,
    /// Damage: a bad record with good ones after it, or a record out of sequence.
    pub damage: Option<String>,
    /// The highest generation of any record that verifies, past damage too (0: none).
    pub max_seen: u64,
}

/// Scans `bytes` (the whole journal) from offset `from`, expecting generation
/// `expect` first. See `docs/design.md` for the three ways a journal can end.
/// From the header on, the first record must name the header's checksum if it names
/// one ([`RecordMeta::prev`]).
pub(crate) fn scan(bytes: &[u8], from: usize, expect: u64) -> Scan {
    let header = (from == HEADER_LEN)
        .then(|| bytes.get(24..HEADER_LEN).map(le64))
        .flatten();
    scan_at(bytes, 0, from, expect, header)
}

/// The checksum a record of this build names as the record before it
/// ([`RecordMeta::prev`]; `None`: an earlier build's record, or one that names none).
/// Read from the metadata without parsing it whole (every record is scanned): our
/// compact JSON, where `"prev":` can only be a key (a quote inside a string is
/// escaped), and the metadata's own key comes before the writer and the change.
/// 16 hex digits, or `None` when they are not there.
fn chained_to(record: &Record, bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"prev\":\"";
    let meta = bytes.get(record.meta.clone()?)?;
    let at = meta.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = meta.get(at..at + 16)?;
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The journal offset up to which the writer of `record` (at `at`, an offset in the
/// journal) held the journal durable: its metadata's `durable`, or `at` itself for
/// a record that does not say (an earlier build's, which flushed every record
/// before releasing the writers' lock).
fn durable_claim(record: &Record, bytes: &[u8], at: u64) -> u64 {
    #[derive(serde::Deserialize)]
    struct Claim {
        durable: Option<u64>,
    }
    record
        .meta
        .as_ref()
        .and_then(|m| serde_json::from_slice::<Claim>(bytes.get(m.clone())?).ok())
        .and_then(|c| c.durable)
        .unwrap_or(at)
}

/// [`scan`] of `bytes` read from journal offset `base` on (offsets in the result are
/// into `bytes`; the records' durable claims are journal offsets). `prev`: the
/// checksum of the record before `from` (of the header when `from` is the first
/// record's offset; `None`: not known, any record may come first).
///
/// A record that names another record before it than the one it follows
/// ([`RecordMeta::prev`]) ends the records like one that does not verify: it was left
/// there by another lineage of appends (a torn batch's survivor, behind a record that
/// the next writer appended over the tear, whose zeros over it a power loss lost).
pub(crate) fn scan_at(
    bytes: &[u8],
    base: u64,
    from: usize,
    mut expect: u64,
    mut prev: Option<u64>,
) -> Scan {
    let mut records = Vec::new();
    let mut at = from;
    let mut max_seen = 0;
    let mut damage = None;
    while let Some((record, size)) = parse_at(bytes, at) {
        if prev.is_some_and(|p| chained_to(&record, bytes).is_some_and(|c| c != p))
            && !mutation("journal-ignore-chain")
        {
            break;
        }
        prev = Some(le64(&bytes[at + size - 8..at + size]));
        if record.generation != expect {
            damage = Some(format!(
                "the record at offset {at} is generation {}, where {expect} was expected",
                record.generation
            ));
            break;
        }
        max_seen = record.generation;
        records.push(record);
        at += size;
        expect += 1;
    }
    let end = at;
    let mut dirty_to = end;
    let tail = bytes.get(end..).unwrap_or_default();
    if let Some(last) = last_nonzero(tail) {
        let last = end + last;
        dirty_to = last + 1;
        // A record that verifies after one that does not is damage when its writer
        // held the journal durable past the bad one (its metadata's `durable`): the bad
        // record had been flushed, so it was not cut short by a power loss. Otherwise
        // both were in the same unflushed window (one batch of a group commit, whose
        // pages a power loss keeps in any order), none of whose records was
        // acknowledged: a torn tail, dropped whole. (`damage` is set already if the
        // record at `end` verified but was out of sequence; then it is the first one
        // counted here.)
        let mut y = if damage.is_some() { end } else { end + 8 };
        let mut past = Vec::new();
        while y <= last {
            match parse_at(bytes, y) {
                Some((record, size)) => {
                    let durable = durable_claim(&record, bytes, base + y as u64);
                    let claims_bad =
                        durable > base + end as u64 && !mutation("journal-ignore-durable-claim");
                    if damage.is_none() && claims_bad {
                        damage = Some(format!(
                            "the record at offset {} does not verify, but the one at offset {} (generation {}) does, and its writer held the journal durable up to offset {durable}, so this is damage, not an append cut short",
                            base + end as u64,
                            base + y as u64,
                            record.generation
                        ));
                    }
                    past.push(record.generation);
                    y += size;
                }
                None => y += 8,
            }
        }
        if damage.is_some() {
            max_seen = past.into_iter().fold(max_seen, u64::max);
        }
    }
    Scan {
        records,
        end,
        dirty_to,
        damage,
        max_seen,
    }
}

/// The position of the last byte of `bytes` that is not zero: a block of 64 bytes at
/// a time, read as eight words or-ed together (a byte at a time cost about 1.2
/// instructions per byte: 9,900 per commit for the 8 KiB a check of a 1 KiB journal
/// reads), since every read of the journal looks through its preallocated zeros (up
/// to 64 KiB at each check of a long-lived store, 1 MiB or more for a large journal).
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 64;
    let blocks = bytes.len() / BLOCK;
    let tail_start = blocks * BLOCK;
    if let Some(i) = bytes[tail_start..].iter().rposition(|b| *b != 0) {
        return Some(tail_start + i);
    }
    // Whole runs of eight blocks first (`zero_run`), back from the last: the zeros of
    // a preallocated journal are most of what is looked through.
    let mut blocks = blocks;
    while blocks >= 8 && zero_run(&bytes[(blocks - 8) * BLOCK..blocks * BLOCK]) {
        blocks -= 8;
    }
    let i = (0..blocks)
        .rev()
        .find(|&i| !zero_block(&bytes[i * BLOCK..i * BLOCK + BLOCK]))?;
    let at = i * BLOCK;
    bytes[at..at + BLOCK]
        .iter()
        .rposition(|b| *b != 0)
        .map(|j| at + j)
}

/// Whether every byte of `bytes` is zero, a block of 64 at a time (see
/// [`last_nonzero`]); a block that is not all zeros ends the search.
fn all_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    blocks.all(zero_block) && blocks.remainder().iter().all(|b| *b == 0)
}

/// Whether a run of 512 bytes is all zeros: its bytes or-ed together, over a
/// fixed-size array, which the compiler does with vector instructions (`zero_block`'s
/// words, one block at a time, cost about 48 instructions per 64 bytes:
/// `docs/benchmarks.md`, "jperf14").
fn zero_run(run: &[u8]) -> bool {
    let run: &[u8; 512] = run.try_into().expect("invariant: runs of 512 bytes");
    run.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Whether a block of 64 bytes is all zeros: its eight words or-ed together, read
/// at fixed offsets of a fixed-size array (no bounds check, no loop: about 17
/// instructions a block, where a fold over `chunks_exact(8)` took 48:
/// `docs/benchmarks.md`, "jperf14").
fn zero_block(block: &[u8]) -> bool {
    let block: &[u8; 64] = block.try_into().expect("invariant: blocks of 64 bytes");
    let word = |i: usize| {
        u64::from_ne_bytes(
            block[i * 8..i * 8 + 8]
                .try_into()
                .expect("invariant: 8 bytes"),
        )
    };
    (word(0) | word(1) | word(2) | word(3) | word(4) | word(5) | word(6) | word(7)) == 0
}

/// The journal as a writer finds it, to append to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pos {
    /// Device and inode of the journal read (the append checks it is still that file).
    pub id: (u64, u64),
    pub header: Header,
    /// Where the next record goes.
    pub end: u64,
    /// The end of a torn append's bytes after `end`.
    pub dirty_to: u64,
    /// The file's size (what was preallocated).
    pub size: u64,
    /// The offset and checksum of the last record that verifies (`None`: none).
    pub last_record: Option<(u64, u64)>,
    /// Whether this store appended that record (so its next record may leave out
    /// the writer: "the same as the record before").
    pub last_ours: bool,
}

impl Pos {
    /// What the next record names as the record before it ([`RecordMeta::prev`]): the
    /// last record's checksum, or the header's before the first record.
    pub(crate) fn prev(&self) -> u64 {
        self.last_record
            .map_or_else(|| self.header.checksum(), |(_, checksum)| checksum)
    }
}

/// What journal mode adds to a [`Current`]: the snapshot under the replayed document,
/// and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The snapshot's generation, checksum, length and layout, and whether it was
    /// changed outside statesafe (as `write::read_current` found it).
    pub snapshot_generation: u64,
    pub snapshot_checksum: u64,
    pub snapshot_len: usize,
    pub snapshot_external: bool,
    pub snapshot_adopted: bool,
    pub style: Option<Style>,
    /// The journal (`None`: there is none).
    pub journal: Option<Pos>,
    /// Whether the next commit may append (else it compacts).
    pub appendable: bool,
    /// Damage in the journal: what, and the journal's checksum (its quarantine name).
    pub damage: Option<(String, u64)>,
    /// The highest generation the journal shows: the next commit goes past it.
    pub max_seen: u64,
    /// The replayed document, when it comes from the store's cache (`cache.rs`):
    /// then the [`Current`]'s bytes are empty and [`Store::verify`] reads this.
    pub doc: Option<std::sync::Arc<Value>>,
}

impl Replayed {
    fn of_snapshot(cur: &Current) -> Replayed {
        Replayed {
            snapshot_generation: cur.generation,
            snapshot_checksum: cur.checksum,
            snapshot_len: cur.bytes.len(),
            snapshot_external: cur.external,
            snapshot_adopted: cur.adopted,
            style: Style::detect(&cur.bytes),
            journal: None,
            appendable: false,
            damage: None,
            max_seen: cur.generation,
            doc: None,
        }
    }
}

/// Reads the state in journal mode: the journal is opened first, then the snapshot
/// (so the journal always follows a generation at or below the snapshot's, see
/// `docs/design.md`), then the records after the snapshot are applied.
pub(crate) fn read_current<T>(store: &Store<T>, want_acl: bool) -> Result<Option<Current>> {
    read_current_after(store, want_acl, None)
}

/// [`read_current`]; `slots_first`: a journal header's checksum and the end the lock
/// file published for it, read before this read opened the journal (see the end).
fn read_current_after<T>(
    store: &Store<T>,
    want_acl: bool,
    slots_first: Option<(u64, u64)>,
) -> Result<Option<Current>> {
    let local = store.local();
    let sidecar = store.sidecar()?;
    let journal = match &sidecar {
        Some(s) => s
            .root()
            .open(OsStr::new(JOURNAL), Access::Read, 0, Use::Read, Op::Read)?,
        None => None,
    };
    let Some(mut cur) =
        crate::write::read_current(&local.target, store.dir()?, &local.lock, want_acl)?
    else {
        return Ok(None);
    };
    let journal_path = local.target.sidecar().join(JOURNAL);
    let journal = match journal {
        Some(file) => {
            let st = sys::stat_fd(&file).map_err(|e| Error::io(Op::Read, &journal_path, e))?;
            let bytes = read_journal_at(&file, 0, Some(st.size))
                .map_err(|e| Error::io(Op::Read, &journal_path, e))?;
            Some(((st.dev, st.ino, st.size), bytes))
        }
        None => {
            store.refuse_lost_journal(&cur, true)?;
            None
        }
    };
    let (noted, snapshot, checksum) = (cur.journal_follows, cur.generation, cur.checksum);
    let missing = journal.is_none();
    overlay(&local.target.given, &journal_path, &mut cur, journal)?;
    // A noted snapshot without its journal: none, or one that follows an earlier
    // generation. A compaction whose new journal is not started yet (or never was)
    // leaves that with nothing lost; a journal deleted, or an older copy put in its
    // place, with its records lost: `Store::refuse_deleted_journal` tells them apart.
    let stale = cur
        .journal
        .as_deref()
        .and_then(|r| r.journal.as_ref())
        .is_some_and(|p| p.header.follows < snapshot);
    // A journal whose header does not verify (damaged, or truncated to nothing) shows
    // no generation, but the lock file's slots may show that a journal following this
    // snapshot held acknowledged records: then it is a lost journal, refused as a
    // deleted one is (a repair would reuse their generations).
    let unreadable = cur
        .journal
        .as_deref()
        .and_then(|r| {
            r.damage
                .as_ref()
                .filter(|_| r.journal.is_none() && !missing)
        })
        .map(|(why, _)| why.clone());
    if noted
        && (missing || stale || unreadable.is_some())
        && let Err(e) = store.refuse_deleted_journal(snapshot, checksum, sidecar.as_ref())
    {
        let e = match (&unreadable, e) {
            (Some(why), Error::Corrupt { path, .. }) => Error::Corrupt {
                reason: damaged_header_reason(&path, &journal_path, snapshot, why),
                path,
                line: None,
                column: None,
            },
            (_, e) => e,
        };
        // The journal was opened before the snapshot was read: a compaction in between
        // (a newer snapshot, and its journal renamed in and appended to) looks the same.
        // Such a journal is renamed in before its first end is published, so after the
        // slots were read it is at the path: then read again.
        let now = match &sidecar {
            Some(s) => s
                .root()
                .open(OsStr::new(JOURNAL), Access::Read, 0, Use::Read, Op::Read)?,
            None => None,
        };
        let follows = now.is_some_and(|f| {
            let mut head = [0u8; HEADER_LEN];
            f.read_exact_at(&mut head, 0).is_ok()
                && Header::decode(&head).is_some_and(|h| h.follows >= snapshot)
        });
        if follows {
            return read_current(store, want_acl);
        }
        return Err(e);
    }
    // The journal that follows this very snapshot, whole: an older copy of it put
    // back (the same header, fewer records) ends before the end the lock file
    // published for its header (`Store::refuse_cut_journal`). Slots read after the
    // journal may name a record appended and flushed in between: then the slots are
    // read first and everything again, and only that read's journal, if it still has
    // this header, is held to them.
    let following = cur.journal.as_deref().and_then(|r| {
        r.journal
            .as_ref()
            .filter(|p| r.damage.is_none() && p.header.follows == snapshot)
            .map(|p| (p.header.checksum(), p.end))
    });
    if let (Some((header, end)), Some(sidecar)) = (following, sidecar.as_ref()) {
        match slots_first {
            None => {
                let published = local.lock.published_journal_end(sidecar, header)?;
                if published.is_some_and(|p| p > end) {
                    let before = local.lock.published_journal_end(sidecar, header)?;
                    return read_current_after(store, want_acl, before.map(|p| (header, p)));
                }
            }
            Some((h, published)) if h == header && published > end => {
                return Err(store.refuse_cut_journal(snapshot, end, published));
            }
            Some(_) => {}
        }
    }
    Ok(Some(cur))
}

/// Why a journal whose header does not verify (`why`), following the snapshot of
/// `generation` in the state file `path`, is refused: the lock file shows that it held
/// acknowledged records, lost with the header (see [`Store::refuse_deleted_journal`]).
fn damaged_header_reason(path: &Path, journal: &Path, generation: u64, why: &str) -> String {
    format!(
        "it is a journal-mode snapshot of generation {generation}, but {why}, and the sidecar's lock file shows that this journal held acknowledged records following the snapshot: every commit made after generation {generation} is unreadable, and serving the snapshot (or repairing to it) would roll the state back and use their generations again, so nothing was read or written; restore the journal `{journal}` from a backup of the sidecar directory, or accept the snapshot as the current state with `statesafe recover {path} --accept-snapshot` (the damaged journal is then quarantined, not deleted, and the generations continue past the lost ones)",
        journal = journal.display(),
        path = crate::error::command_word(path),
    )
}

/// Reads the journal, leaving out the preallocated zeros at its end but for the first
/// 64 KiB of them (more than a record's zero padding and checksum can hold), which
/// tell a scan everything the rest would. The zeros are still read (only they prove
/// that no record follows), a piece at a time, without being kept.
fn read_journal(file: &std::fs::File) -> io::Result<Vec<u8>> {
    read_journal_at(file, 0, None)
}

/// [`read_journal`] from offset `start`. `size`: the file's size, as an `fstat` of
/// this descriptor just found it: the read stops there rather than making one more
/// call to meet the end of the file (a journal only grows while the writers' lock is
/// held, so a reader stopping there reads what was there at the `fstat`, as if it had
/// read a moment earlier).
pub(crate) fn read_journal_at(
    file: &std::fs::File,
    start: u64,
    size: Option<u64>,
) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let len = read_journal_into(file, start, size, &mut bytes)?;
    bytes.truncate(len);
    Ok(bytes)
}

/// [`read_journal_at`] into `buf`, whose storage is reused (a long-lived store's check
/// reads about the same length each time): the bytes are `buf[..len]`, `len` the
/// value returned. What `buf` held before is overwritten or lies past `len`; nothing
/// is zeroed first that a read then overwrites.
pub(crate) fn read_journal_into(
    file: &std::fs::File,
    start: u64,
    size: Option<u64>,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    const PIECE: usize = 64 << 10;
    if buf.is_empty() {
        let left = size.map(|s| s.saturating_sub(start));
        buf.reserve(left.map_or(PIECE, |l| (l as usize).clamp(1, PIECE)));
    }
    // The bytes kept so far are `buf[..len]`; zeros read and not yet kept.
    let mut len = 0usize;
    let mut skipped = 0usize;
    let mut at = start;
    loop {
        if size.is_some_and(|s| at >= s) {
            break;
        }
        let want = size.map_or(PIECE, |s| ((s - at) as usize).min(PIECE));
        // Each piece is read straight into `buf` after the bytes kept (no buffer of
        // its own, no copy), and dropped again when it is all zeros.
        if buf.len() < len + want {
            buf.resize(len + want, 0);
        }
        let n = match file.read_at(&mut buf[len..len + want], at) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        at += n as u64;
        // A piece that holds a record shows it in its first bytes: look from the front.
        if !all_zero(&buf[len..len + n]) {
            if skipped > 0 {
                buf.truncate(len + n);
                buf.splice(len..len, std::iter::repeat_n(0, skipped));
            }
            len += skipped + n;
            skipped = 0;
        } else {
            skipped += n;
        }
    }
    let end = len + skipped.min(PIECE);
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[len..end].fill(0);
    Ok(end)
}

/// How many zero bytes after the last nonzero one end a long-lived store's check
/// ([`read_journal_tail`]). No record holds a run of zeros this long (a record's
/// zeros are a few bytes of its head and at most 7 of padding; its body is JSON text).
const TAIL_ZEROS: usize = 4096;

/// A long-lived store's check of the journal from `start` (its last record applied):
/// like [`read_journal_into`], but it stops once the bytes read end in [`TAIL_ZEROS`]
/// zeros instead of reading the preallocated space to its end (a check of a 1 KiB
/// commit read about 60 KiB of zeros). Within one boot the journal's bytes are
/// written in order from its end (appends are contiguous, one `pwrite` each, with the
/// writers' lock held; a killed writer leaves a prefix of its write), so nothing is
/// ever written past a run of zeros; the runs of zeros a power loss leaves between
/// pages are found by the full read every store makes first, which reads everything.
///
/// `known`: how many bytes from `start` the store knows are in use (its last record,
/// up to its `Pos::end`). The first read asks for those and [`TAIL_ZEROS`] more, which
/// is all a check reads when no other store appended meanwhile (a 1 KiB commit's
/// record is about 200 bytes: 4.3 KiB instead of 8); the reads after it double. Only
/// the size of the reads depends on it, never where the check stops.
pub(crate) fn read_journal_tail(
    file: &std::fs::File,
    start: u64,
    size: u64,
    known: u64,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    let mut len = 0usize;
    let mut piece = (known as usize).saturating_add(TAIL_ZEROS);
    let mut at = start;
    while at < size {
        let want = ((size - at) as usize).min(piece);
        if buf.len() < len + want {
            buf.resize(len + want, 0);
        }
        let n = match file.read_at(&mut buf[len..len + want], at) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        len += n;
        at += n as u64;
        let zeros = last_nonzero(&buf[..len]).map_or(len, |i| len - i - 1);
        if zeros >= TAIL_ZEROS {
            break;
        }
        piece = (piece * 2).min(MAX_CHUNK as usize);
    }
    Ok(len)
}

/// Applies the journal (`journal`: its device, inode and size, and its bytes) to the
/// snapshot `cur`, in place: afterwards `cur` is the newest version the two prove,
/// with its [`Replayed`] attached.
///
/// # Errors
/// [`Error::Corrupt`] naming the state file when the snapshot is not one this journal
/// can follow (an older one put back, or one changed outside statesafe while the
/// journal holds newer commits): nothing is repaired automatically then. Damage in
/// the journal itself is not an error here: it is in [`Replayed::damage`], and `cur`
/// is the snapshot plus the records before it.
pub(crate) fn overlay(
    path: &Path,
    journal_path: &Path,
    cur: &mut Current,
    journal: Option<((u64, u64, u64), Vec<u8>)>,
) -> Result<()> {
    let mut replayed = Replayed::of_snapshot(cur);
    let Some(((dev, ino, size), bytes)) = journal else {
        cur.journal = Some(Box::new(replayed));
        return Ok(());
    };
    let damaged = |replayed: &mut Replayed, why: String, bytes: &[u8]| {
        replayed.damage = Some((
            format!("journal `{}`: {why}", journal_path.display()),
            format::checksum(bytes),
        ));
    };
    let Some(header) = Header::decode(&bytes) else {
        damaged(
            &mut replayed,
            "its header does not verify (it is written whole, synced and renamed into place, so this is damage)".into(),
            &bytes,
        );
        cur.journal = Some(Box::new(replayed));
        return Ok(());
    };
    let found = scan(&bytes, HEADER_LEN, header.follows + 1);
    replayed.journal = Some(Pos {
        id: (dev, ino),
        header,
        end: found.end as u64,
        dirty_to: found.dirty_to as u64,
        size,
        last_record: found.records.last().map(|r| last_of(r, &bytes)),
        last_ours: false,
    });
    replayed.max_seen = replayed.max_seen.max(found.max_seen);
    if let Some(why) = &found.damage {
        damaged(&mut replayed, why.clone(), &bytes);
    }
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        line: None,
        column: None,
        reason,
    };
    let snapshot = cur.generation;
    let newest = found
        .records
        .last()
        .map_or(header.follows, |r| r.generation);
    if cur.external {
        // Changed outside statesafe. Accepted as any external change when the journal
        // holds nothing past the version it was made from; otherwise taking it would
        // drop those commits and ignoring it would drop the change.
        if newest >= snapshot {
            return Err(corrupt(format!(
                "it was changed outside statesafe, but its journal `{}` holds commits up to generation {newest} that the change did not see (in journal mode the file is a snapshot; change it through statesafe). Nothing was repaired: put back the snapshot statesafe wrote, or move the journal aside to accept the change and lose those commits",
                journal_path.display()
            )));
        }
        cur.journal = Some(Box::new(replayed));
        return Ok(());
    }
    if snapshot < header.follows || (snapshot == header.follows && cur.checksum != header.snapshot)
    {
        return Err(corrupt(format!(
            "it is generation {snapshot}, but its journal `{}` follows {} generation {}: an older or different copy was put in its place. Nothing was repaired: put back the newest snapshot, or restore a backup with `statesafe restore`",
            journal_path.display(),
            if snapshot == header.follows {
                "another version of"
            } else {
                "the later"
            },
            header.follows
        )));
    }
    // An earlier build's journal is read, never appended to: the next commit compacts
    // and starts one whose records carry their time and writer.
    replayed.appendable = replayed.damage.is_none()
        && snapshot == header.follows
        && cur.checksum == header.snapshot
        && header.version == 2;
    let pending: Vec<&Record> = found
        .records
        .iter()
        .filter(|r| r.generation > snapshot)
        .collect();
    if pending.is_empty() {
        cur.journal = Some(Box::new(replayed));
        return Ok(());
    }
    // A snapshot that does not parse is left as it is, for verification to report as
    // damage (the records cannot be applied to it).
    let Ok(mut doc) = format::decode::<Value>(path, &cur.bytes) else {
        replayed.appendable = false;
        cur.journal = Some(Box::new(replayed));
        return Ok(());
    };
    let mut generation = snapshot;
    for record in pending {
        match apply(&mut doc, record, &bytes) {
            Ok(()) => generation = record.generation,
            Err(why) => {
                damaged(
                    &mut replayed,
                    format!("record {} does not apply: {why}", record.generation),
                    &bytes,
                );
                replayed.appendable = false;
                break;
            }
        }
    }
    let out = format::encode(path, &doc, Style::Compact, cur.bytes.len(), 0)?;
    cur.checksum = format::checksum(&out);
    cur.bytes = out;
    cur.generation = generation;
    cur.journal = Some(Box::new(replayed));
    Ok(())
}

/// The offset and checksum of `record`, found in `bytes`.
/// When the record at journal offset `at` was written (its metadata's `time`), read
/// through `file`; `None` when it cannot be read or says nothing (an earlier build's
/// record). For a writer deciding how long to wait for that record's flush to be
/// published ([`durable::Witness::prove`]): the record verified when the journal was
/// scanned and the writers' lock has been held since, so it is not verified again.
pub(crate) fn record_time(file: &std::fs::File, at: u64) -> Option<std::time::SystemTime> {
    use std::os::unix::fs::FileExt;
    #[derive(serde::Deserialize)]
    struct Time {
        time: String,
    }
    let mut head = [0u8; RECORD_HEAD + 4];
    file.read_exact_at(&mut head, at).ok()?;
    if !matches!(head[4], 3 | 4) {
        return None;
    }
    let meta_len = u32::from_le_bytes(head[RECORD_HEAD..].try_into().ok()?) as usize;
    let mut meta = vec![0u8; meta_len.min(64 * 1024)];
    file.read_exact_at(&mut meta, at + head.len() as u64).ok()?;
    let time = serde_json::from_slice::<Time>(&meta).ok()?.time;
    humantime::parse_rfc3339(&time).ok()
}

/// A new empty file at `path`, open for reading and writing (tests).
#[cfg(test)]
pub(crate) fn test_file(path: impl AsRef<std::path::Path>) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

pub(crate) fn last_of(record: &Record, bytes: &[u8]) -> (u64, u64) {
    let start = record
        .meta
        .as_ref()
        .map_or(record.body.start, |m| m.start - 4);
    let at = start - RECORD_HEAD;
    let end = start + padded(record.body.end - start) + 8;
    (at as u64, le64(&bytes[end - 8..end]))
}

pub(crate) fn apply(
    doc: &mut Value,
    record: &Record,
    bytes: &[u8],
) -> std::result::Result<(), String> {
    let body = &bytes[record.body.clone()];
    match record.kind {
        Kind::Patch => {
            // Without serde_json's limit of 128 levels: a patch holds values as deep
            // as the documents statesafe writes (format::MAX_DEPTH, checked on write).
            let mut de = serde_json::Deserializer::from_slice(body);
            de.disable_recursion_limit();
            let patch = <json_patch::Patch as serde::Deserialize>::deserialize(&mut de)
                .and_then(|p| de.end().map(|()| p))
                .map_err(|e| format!("its patch does not parse: {e}"))?;
            json_patch::patch(doc, &patch).map_err(|e| e.to_string())
        }
        Kind::Document => {
            *doc = format::decode::<Value>(Path::new(""), body)
                .map_err(|e| format!("its document does not parse: {e}"))?;
            Ok(())
        }
    }
}

/// The highest generation the journal in `sidecar` shows (0: none, or no journal).
/// For a new file, whose generation must go past every one used before.
pub(crate) fn newest_generation(sidecar: &Sidecar) -> Result<u64> {
    let Some(bytes) = sidecar.root().read(OsStr::new(JOURNAL), Op::Read)? else {
        return Ok(0);
    };
    let Some(header) = Header::decode(&bytes) else {
        return Ok(0);
    };
    Ok(header
        .follows
        .max(scan(&bytes, HEADER_LEN, header.follows + 1).max_seen))
}

/// The compaction threshold for a snapshot of `snapshot_len` bytes.
fn threshold(snapshot_len: usize, setting: Option<u64>) -> u64 {
    let by_size = (snapshot_len as u64)
        .saturating_mul(4)
        .saturating_add(1 << 20);
    by_size.min(setting.unwrap_or(DEFAULT_MAX_BYTES))
}

/// How the next preallocation grows a journal of `size` bytes.
fn grown(size: u64, needed: u64) -> u64 {
    let chunk = size.clamp(FIRST_CHUNK, MAX_CHUNK);
    needed.max(size + chunk)
}

/// Writes zeros over `from..to` of `file`. Space is preallocated by writing it, not
/// with `fallocate`: an extent `fallocate` reserves is "unwritten", and the first
/// write into it converts it, a metadata change every later `fdatasync` has to commit
/// (measured on ext4: a 1 KiB journal commit took 1.9 ms, against 0.8 ms for the
/// whole-file replace). Blocks written once are overwritten in place with no metadata.
fn write_zeros(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// What ran since the refresh of this lock hold checked the kept journal's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinceCheck {
    /// The caller's code (a transaction's closure, or the time between `begin` and
    /// `commit`, which can be long): the name is checked again before the append.
    CallerRan,
    /// Only the commit's own work, microseconds: the check stands (see [`writer`]).
    NothingRan,
}

/// The descriptor to append through, with the writers' lock held: `kept`, the journal
/// as the cache's refresh opened or checked it for writing in this lock hold (its name
/// checked here to be that same file still, with one link, when the caller's code ran
/// since), or one opened now (`pos`, read in this lock hold, says where the journal
/// ends: what the new descriptor can vouch for starts there).
///
/// With [`SinceCheck::NothingRan`] (a group commit's batch) `kept`'s name is not looked
/// up again: the refresh a few microseconds before found it to be that very file, with
/// one link and an accepted owner and mode, and since then only a process that ignores
/// the writers' lock can have replaced or linked it (statesafe replaces a journal only
/// with the lock held). Such a process could as well do it right after a second look,
/// before the append's `pwrite` or its flush, so a second `fstatat` there closes
/// nothing. After the caller's code it does: a journal replaced or linked while a
/// transaction was open is refused at its commit instead of written to a file nobody
/// reads.
pub(crate) fn writer(
    sidecar: &Sidecar,
    kept: Option<std::sync::Arc<cache::KeptJournal>>,
    pos: &Pos,
    since: SinceCheck,
) -> Result<std::sync::Arc<cache::KeptJournal>> {
    let root = sidecar.root();
    let path = root.join(JOURNAL);
    let io = |e: io::Error| Error::io(Op::Write, &path, e);
    let replaced = |what: &str| Error::Corrupt {
        path: path.clone(),
        line: None,
        column: None,
        reason: format!("the journal was {what} while the writers' lock was held"),
    };
    if let Some(kept) = kept {
        if since == SinceCheck::NothingRan {
            // The refresh that checked it compared it with `pos` (the same device and
            // inode).
            return if kept.id() == pos.id {
                Ok(kept)
            } else {
                Err(replaced("replaced"))
            };
        }
        // Without the times (`sys::stat_at`): asking for them would make the append's
        // write change the journal's times, which each flush then writes too.
        return match sys::stat_at(root.fd(), OsStr::new(JOURNAL)) {
            Ok(st) if (st.dev, st.ino) == pos.id && st.nlink == 1 => Ok(kept),
            Ok(_) => Err(replaced("replaced or linked elsewhere")),
            Err(e) => Err(io(e)),
        };
    }
    let file = match root.open(
        OsStr::new(JOURNAL),
        Access::ReadWrite,
        0,
        Use::Write,
        Op::Write,
    )? {
        Some(f) => f,
        None => return Err(Error::io(Op::Write, path, io::ErrorKind::NotFound.into())),
    };
    let st = sys::stat_fd(&file).map_err(io)?;
    if (st.dev, st.ino) != pos.id {
        return Err(replaced("replaced"));
    }
    Ok(std::sync::Arc::new(cache::KeptJournal::new(
        file, st, pos.end,
    )))
}

/// A failed append ([`write_record`]): its error, and the error of zeroing again the
/// part of the record(s) that reached the file (`None`: nothing of them is left).
pub(crate) struct AppendFailed {
    pub(crate) error: io::Error,
    pub(crate) left: Option<io::Error>,
}

/// Writes `record` at `pos.end` through `kept` (zeroing a torn append's leftovers
/// past it, growing the preallocated space when needed). Returns the append's number
/// through the descriptor, for its flush ([`Pending`]). On failure a torn first
/// record (all that reached the file) is zeroed again: nothing was flushed, and no
/// reader serves a torn record. The bytes stay ([`AppendFailed::left`]) when that
/// zeroing fails too, and when a write cut short (`ENOSPC` on a copy-on-write
/// filesystem, `EIO`) wrote whole records of a batch, which every reader replays
/// from that instant: their commits are neither done nor undone.
fn write_record(
    kept: &cache::KeptJournal,
    pos: &Pos,
    record: &[u8],
) -> std::result::Result<u64, AppendFailed> {
    let file = &kept.file;
    let end = pos.end + record.len() as u64;
    let failed = |error| AppendFailed { error, left: None };
    if end > pos.size {
        write_zeros(file, pos.size, grown(pos.size, end)).map_err(failed)?;
    }
    if pos.dirty_to > end {
        file.write_all_at(&vec![0; (pos.dirty_to - end) as usize], end)
            .map_err(failed)?;
    }
    // Call by call, to know how much of it reached the file.
    let (cut, erase_fails) = append_faults();
    let upto = record.len() - cut.min(record.len());
    let mut written = 0;
    let result = loop {
        if written == record.len() {
            break Ok(());
        }
        if written == upto {
            break Err(io::Error::from_raw_os_error(
                rustix::io::Errno::NOSPC.raw_os_error(),
            ));
        }
        match file.write_at(&record[written..upto], pos.end + written as u64) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if let Err(error) = result {
        #[cfg(test)]
        if let Some(reader) = BEFORE_ERASE.with(|r| r.borrow_mut().take()) {
            reader();
        }
        // A whole record that reached the file is replayed by every reader from that
        // instant (flushed or not): erasing it would take back a version a reader may
        // have served, and its generation would be given again to other contents.
        // It stays, like bytes that cannot be erased; only a torn first record (no
        // reader replays it) is erased and the append handed back as never made.
        if parse_at(&record[..written], 0).is_some() {
            return Err(AppendFailed {
                error,
                left: Some(io::Error::other(
                    "whole records reached the journal, where readers may have served them already, so they are not erased",
                )),
            });
        }
        let left = (written > 0)
            .then(|| {
                if erase_fails {
                    Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::IO.raw_os_error(),
                    ))
                } else {
                    file.write_all_at(&vec![0; written], pos.end)
                }
            })
            .and_then(|erased| erased.err());
        return Err(AppendFailed { error, left });
    }
    Ok(kept.witness.appended())
}

#[cfg(test)]
thread_local! {
    /// Faults for this thread's next append (tests only): its write stops this many
    /// bytes short of the record's end and fails with `ENOSPC` (0: off), and zeroing
    /// what it wrote fails with `EIO`.
    pub(crate) static APPEND_FAULTS: std::cell::Cell<(usize, bool)> =
        const { std::cell::Cell::new((0, false)) };
}

#[cfg(test)]
fn append_faults() -> (usize, bool) {
    APPEND_FAULTS.with(std::cell::Cell::take)
}

#[cfg(test)]
thread_local! {
    /// Runs once on this thread after its next append failed and before what it wrote
    /// is erased (tests only): a reader racing the failed append, at the instant when
    /// the bytes that reached the file are there for every reader to see.
    pub(crate) static BEFORE_ERASE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(not(test))]
fn append_faults() -> (usize, bool) {
    (0, false)
}

/// The error of a commit whose append failed after part of it reached the journal
/// (`journal`) and could not be erased (`failed`): its outcome is unknown.
pub(crate) fn append_left(
    state_path: &Path,
    generation: u64,
    journal: &Path,
    failed: &AppendFailed,
) -> Error {
    let erase = failed
        .left
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    record_left(
        state_path,
        generation,
        format!(
            "writing its record to the journal `{}` failed part way ({}), and the part written was left there ({erase}); the store refuses writes until it is opened again",
            journal.display(),
            failed.error
        ),
    )
}

impl<T> Store<T> {
    /// [`durable::Pending::finish`], for a commit of this store: the time spent
    /// flushing. A publication of the durable end that failed after a successful flush
    /// does not fail the commit (it is durable; an error would invite running it again)
    /// but is reported as [`crate::Event::BookkeepingFailed`] (with a `tracing`
    /// warning and a failure counted): until a later publication covers the record,
    /// nothing witnesses it if the journal is deleted or an older copy put back, and
    /// other processes' writers wait for it and compact ("Shared flushes" in
    /// `docs/design.md`).
    pub(crate) fn finish_journal(&self, pending: durable::Pending) -> io::Result<Duration> {
        let generation = pending.generation;
        let finished = pending.finish()?;
        if let Some(e) = finished.unpublished {
            // The path is made only to tell of a failure (about 1,500 instructions).
            let lock = self.local().target.sidecar().join(crate::sidecar::LOCK);
            let what = format!(
                "publishing the journal's durable end in the lock file `{}` (the commit is durable; until a later commit publishes, a deletion of the journal would go unnoticed, and other processes' writers compact)",
                lock.display()
            );
            let e = Error::io(Op::Write, &lock, e);
            let path = &self.local().target.given;
            self.recorder.failure(e.kind());
            let error = e.with_causes();
            tracing::warn!(target: "statesafe", "committed `{}`, but {what} failed: {error}", path.display());
            self.emit(Event::BookkeepingFailed {
                path: path.clone(),
                generation,
                what,
                error,
            });
        }
        Ok(finished.flushed)
    }
}

/// The error of a commit whose flush failed: its record is in the journal and may or
/// may not survive a power loss.
pub(crate) fn flush_failed(state_path: &Path, generation: u64, e: io::Error) -> Error {
    Error::OutcomeUnknown {
        path: state_path.to_path_buf(),
        generation,
        source: io::Error::other(JournalFlushFailed(e)),
    }
}

/// The error of a commit whose record may be in the journal although the commit did
/// not finish (`what` happened): it must not be run again, which could apply it twice.
pub(crate) fn record_left(state_path: &Path, generation: u64, what: String) -> Error {
    Error::OutcomeUnknown {
        path: state_path.to_path_buf(),
        generation,
        source: io::Error::other(crate::error::JournalRecordLeft(what)),
    }
}

/// Makes the next journal flush fail with `EIO` (tests only).
pub(crate) static FAIL_FLUSH: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Makes the next publication of a journal's durable end fail with `EIO` (tests only).
pub(crate) static FAIL_PUBLISH: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Starts a new journal following the snapshot just committed (generation
/// `follows`, checksum `snapshot`): a temporary file in the sidecar with the header
/// and preallocated zeros, `fsync`, `rename` over `journal`, `fsync` of the sidecar.
/// Call only once that snapshot is durable (see the crash argument in the design).
/// Under `Durability::Full` it then publishes the journal durable up to its header
/// (in `guard`'s lock file): a `Full` writer appends to a journal with no record only
/// after that publication, and compacts otherwise ("Shared flushes" in the design).
pub(crate) fn start(
    sidecar: &Sidecar,
    header: Header,
    perms: Perms,
    durability: Durability,
    guard: &lock::Guard<'_>,
) -> std::result::Result<Result<()>, Poisoning> {
    let root = sidecar.root();
    let temp = format!(".{JOURNAL}.tmp-{}", sys::pid());
    let temp = OsStr::new(&temp);
    let path = root.join(temp);
    // Leftovers of writers killed while starting a journal (the lock is held, so none
    // is in progress): names of this exact pattern only, regular files only.
    if let Ok(names) = root.names(Op::RemoveTemp) {
        for name in names {
            let leftover = name.to_str().and_then(|n| n.strip_prefix(".journal.tmp-"));
            if leftover
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            {
                let _ = root.remove_file(&name, Op::RemoveTemp);
            }
        }
    }
    // The space of the published ends first (once per lock file): on a full disk a
    // publication must not need a block, or every writer after it compacts, which a
    // full disk refuses. Without it no journal is started (the next commit compacts).
    if durability == Durability::Full
        && let Err(e) = durable::reserve(guard.lock_file())
    {
        return Ok(Err(Error::io(
            Op::Write,
            root.join(crate::sidecar::LOCK),
            e,
        )));
    }
    let file = match sys::create_exclusive(root.fd(), temp, 0o600) {
        Ok(f) => f,
        Err(e) => return Ok(Err(Error::io(Op::Write, path, e))),
    };
    // `Err(Ok(e))`: an ordinary failure; `Err(Err(e))`: a failed `fsync`.
    let result = (|| {
        root.fix_new_file(&file, perms).map_err(Ok)?;
        write_zeros(&file, 0, FIRST_CHUNK).map_err(Ok)?;
        file.write_all_at(&header.encode(), 0).map_err(Ok)?;
        if durability == Durability::Full {
            sys::fsync(&file).map_err(Err)?;
        }
        sys::rename_in(root.fd(), temp, OsStr::new(JOURNAL)).map_err(Ok)?;
        if durability == Durability::Full {
            sys::fsync(root.fd()).map_err(Err)?;
            // With the lock held: the next writer finds it without waiting.
            // (Best effort, as every publication: without it a writer compacts.)
            if let Ok(st) = sys::stat_fd(&file) {
                let id = durable::JournalId::of((st.dev, st.ino), &header);
                let _ = durable::publish(
                    guard.lock_file(),
                    id,
                    HEADER_LEN as u64,
                    guard.slot(),
                    guard.pid(),
                );
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(Ok(())),
        Err(failure) => {
            let _ = sys::unlink_in(root.fd(), temp);
            match failure {
                Ok(e) => Ok(Err(Error::io(Op::Write, root.join(JOURNAL), e))),
                Err(e) => Err(Poisoning(Error::io(Op::SyncFile, root.join(JOURNAL), e))),
            }
        }
    }
}

/// Gives the damaged journal a second name in the quarantine, keyed by its checksum
/// (a repeated attempt finds it there), and makes that durable before anything
/// replaces it.
pub(crate) fn quarantine(
    sidecar: &Sidecar,
    checksum: u64,
    perms: Perms,
) -> std::result::Result<Result<PathBuf>, Poisoning> {
    quarantine_as(sidecar, "journal-damaged", checksum, perms)
}

/// [`quarantine`] under `prefix-XXH3`: `journal-unapplied` for a journal that
/// `recover` of a deleted state file could not carry over whole (its records follow a
/// version nothing proves, or one does not apply): not damaged, but the only copy of
/// those commits.
pub(crate) fn quarantine_as(
    sidecar: &Sidecar,
    prefix: &str,
    checksum: u64,
    perms: Perms,
) -> std::result::Result<Result<PathBuf>, Poisoning> {
    let name = format!("{prefix}-{checksum:016x}");
    crate::backup::quarantine_link(
        sidecar,
        sidecar.root().fd(),
        OsStr::new(JOURNAL),
        OsStr::new(&name),
        perms,
    )
}

/// The note of a history entry made from a record of an earlier build (no metadata).
const NO_META: &str = "recorded in the journal by an earlier build of statesafe, whose records carry no time or writer";

/// The journal and the snapshot it follows, read whole for the history, the backups
/// and the versions since the last compaction (the current state is
/// [`read_current`]'s: this is not kept, and costs the journal and the snapshot).
pub(crate) struct View {
    pub header: Header,
    bytes: Vec<u8>,
    /// The records that verify, in sequence, before any damage.
    records: Vec<Record>,
    /// Each record's metadata, with the writer of a record that left it out (the
    /// same as the record before) filled in; `None`: an earlier build's record.
    metas: Vec<Option<RecordMeta>>,
    /// The snapshot, when the file in place is the one the journal follows: its bytes
    /// and modification time.
    snapshot: Option<(Vec<u8>, std::time::SystemTime)>,
    pub journal_path: PathBuf,
}

impl View {
    /// The newest generation the journal holds a record of (the generation it
    /// follows when it holds none).
    pub(crate) fn newest_generation(&self) -> u64 {
        self.records
            .last()
            .map_or(self.header.follows, |r| r.generation)
    }

    /// Reads the journal, then the snapshot (a full read's order, so the journal
    /// follows a generation at or below the snapshot's). `sidecar`: the writers'
    /// lock's, when the caller holds it. `None`: no journal, or not one statesafe
    /// wrote.
    /// `with_snapshot`: read the snapshot too (else [`View::document`] and
    /// [`View::versions`] find nothing).
    pub(crate) fn read<T>(
        store: &Store<T>,
        sidecar: Option<&Sidecar>,
        with_snapshot: bool,
    ) -> Result<Option<View>> {
        let opened;
        let sidecar = match sidecar {
            Some(s) => s,
            None => match store.sidecar()? {
                Some(s) => {
                    opened = s;
                    &opened
                }
                None => return Ok(None),
            },
        };
        let journal_path = sidecar.root().join(OsStr::new(JOURNAL));
        let Some(file) =
            sidecar
                .root()
                .open(OsStr::new(JOURNAL), Access::Read, 0, Use::Read, Op::History)?
        else {
            return Ok(None);
        };
        let bytes = read_journal(&file).map_err(|e| Error::io(Op::History, &journal_path, e))?;
        let Some(header) = Header::decode(&bytes) else {
            return Ok(None);
        };
        let records = scan(&bytes, HEADER_LEN, header.follows + 1).records;
        let mut writer = None;
        let metas = records
            .iter()
            .map(|r| {
                let mut m = r
                    .meta
                    .as_ref()
                    .and_then(|m| serde_json::from_slice::<RecordMeta>(&bytes[m.clone()]).ok())?;
                match &m.writer {
                    Some(w) => writer = Some(w.clone()),
                    None => m.writer.clone_from(&writer),
                }
                Some(m)
            })
            .collect();
        if !with_snapshot {
            return Ok(Some(View {
                header,
                bytes,
                records,
                metas,
                snapshot: None,
                journal_path,
            }));
        }
        let local = store.local();
        let dir = store.dir()?;
        let snapshot = crate::write::read_current(&local.target, dir, &local.lock, false)?
            .filter(|cur| {
                !cur.external && cur.generation == header.follows && cur.checksum == header.snapshot
            })
            .map(|cur| {
                let modified = rustix::fs::statat(
                    dir,
                    local.target.name.as_os_str(),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .ok()
                .and_then(|st| {
                    let secs = u64::try_from(st.st_mtime).ok()?;
                    let nanos = u32::try_from(st.st_mtime_nsec).ok()?;
                    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
                })
                .unwrap_or(std::time::UNIX_EPOCH);
                (cur.bytes, modified)
            });
        Ok(Some(View {
            header,
            bytes,
            records,
            metas,
            snapshot,
            journal_path,
        }))
    }

    /// Applies the records, in order, to `doc`, the document of the generation the
    /// journal follows (the caller proved it: the snapshot itself is gone when a
    /// deleted state file is put back): the generation reached, the header's when no
    /// record applies. A record that does not apply ends the replay, `doc` left as
    /// the record before it made it (a patch that fails changes nothing).
    pub(crate) fn replay(&self, doc: &mut Value) -> u64 {
        let mut at = self.header.follows;
        for r in &self.records {
            if apply(doc, r, &self.bytes).is_err() {
                break;
            }
            at = r.generation;
        }
        at
    }

    /// The journal from generation `at` on, when the history's `entries` prove that
    /// its records up to `at` are the ones the history holds (a compaction moved them
    /// there, then failed before its rename: review21rec, finding 5): each record
    /// after the header's generation, up to `at`, has the history entry it makes (the
    /// same patch, or the same document). A view whose header follows `at` and which
    /// holds only the records after it, to [`View::replay`] onto generation `at`'s
    /// document and to record in the history; `None` when the journal does not reach
    /// past `at`, or a record up to `at` has no such entry (another lineage, or pruned).
    pub(crate) fn after(&self, at: u64, entries: &[HistoryEntry]) -> Option<View> {
        if at <= self.header.follows || self.newest() <= at {
            return None;
        }
        for (i, r) in self.records.iter().enumerate() {
            if r.generation > at {
                break;
            }
            let mine = self.entry(i, u64::MAX);
            let theirs = entries
                .iter()
                .rev()
                .find(|e| e.generation == r.generation)?;
            let same = match r.kind {
                Kind::Patch => mine.patch.is_some() && mine.patch == theirs.patch,
                Kind::Document => mine.snapshot.is_some() && mine.snapshot == theirs.snapshot,
            };
            if !same {
                return None;
            }
        }
        let keep: Vec<usize> = (0..self.records.len())
            .filter(|&i| self.records[i].generation > at)
            .collect();
        Some(View {
            header: Header {
                follows: at,
                ..self.header
            },
            bytes: self.bytes.clone(),
            records: keep.iter().map(|&i| self.records[i].clone()).collect(),
            metas: keep.iter().map(|&i| self.metas[i].clone()).collect(),
            snapshot: None,
            journal_path: self.journal_path.clone(),
        })
    }

    /// The newest generation the journal holds (its header's when it has no record).
    pub(crate) fn newest(&self) -> u64 {
        self.records
            .last()
            .map_or(self.header.follows, |r| r.generation)
    }

    /// The history entry of `record`: its time, writer and change from its metadata,
    /// its patch, or its document as the snapshot (when at most `max_patch_bytes`).
    fn entry(&self, i: usize, max_patch_bytes: u64) -> HistoryEntry {
        let record = &self.records[i];
        let (time, writer, change, mut note) = match self.metas[i].clone() {
            Some(m) => (m.time, m.writer, m.change, None),
            None => (
                String::new(),
                None,
                Change::Commit,
                Some(NO_META.to_string()),
            ),
        };
        let body = &self.bytes[record.body.clone()];
        let (patch, snapshot) = match record.kind {
            Kind::Patch => {
                let mut de = serde_json::Deserializer::from_slice(body);
                de.disable_recursion_limit();
                let patch = <json_patch::Patch as serde::Deserialize>::deserialize(&mut de).ok();
                (patch, None)
            }
            Kind::Document if body.len() as u64 <= max_patch_bytes => {
                (None, format::decode::<Value>(Path::new(""), body).ok())
            }
            Kind::Document => {
                note.get_or_insert_with(|| {
                    "no snapshot: the document is larger than history.max_patch_bytes".into()
                });
                (None, None)
            }
        };
        HistoryEntry {
            generation: record.generation,
            time,
            writer,
            change,
            patch,
            snapshot,
            note,
            // The journal's records carry checksums of their own (verified on read);
            // a compaction gives the log's entry the document's.
            checksum: None,
        }
    }

    /// `entries` (the history log's, oldest first) with the entries of the journal's
    /// records up to `current` that the log does not hold, none older than the last
    /// `keep` generations.
    pub(crate) fn merge(
        &self,
        entries: Vec<HistoryEntry>,
        current: u64,
        policy: &crate::settings::HistoryPolicy,
    ) -> Vec<HistoryEntry> {
        let oldest = current.saturating_sub(u64::from(policy.keep)) + 1;
        let mut by_generation: std::collections::BTreeMap<u64, HistoryEntry> =
            entries.into_iter().map(|e| (e.generation, e)).collect();
        for (i, r) in self.records.iter().enumerate() {
            if r.generation >= oldest && r.generation <= current {
                by_generation
                    .entry(r.generation)
                    .or_insert_with(|| self.entry(i, policy.max_patch_bytes));
            }
        }
        by_generation.into_values().collect()
    }

    /// The document at `generation`, replayed from the snapshot and the records up to
    /// it; `None` when it is not between the snapshot and the newest record (or the
    /// snapshot in place is not the one the journal follows).
    pub(crate) fn document(&self, path: &Path, generation: u64) -> Result<Option<Value>> {
        let Some((bytes, _)) = &self.snapshot else {
            return Ok(None);
        };
        if generation < self.header.follows || generation > self.newest() {
            return Ok(None);
        }
        let mut doc = format::decode::<Value>(path, bytes)?;
        for r in self
            .records
            .iter()
            .take_while(|r| r.generation <= generation)
        {
            apply(&mut doc, r, &self.bytes).map_err(|why| Error::Corrupt {
                path: self.journal_path.clone(),
                line: None,
                column: None,
                reason: format!("record {} does not apply: {why}", r.generation),
            })?;
        }
        Ok(Some(doc))
    }

    /// The versions since the last compaction that the current one replaced, as
    /// backups (newest first): the snapshot (the file itself) and each record's
    /// version before the newest. `size` is the bytes that hold each: the file's, or
    /// the record's.
    pub(crate) fn versions(&self, state_path: &Path) -> Vec<crate::BackupInfo> {
        let Some((bytes, modified)) = &self.snapshot else {
            return Vec::new();
        };
        let newest = self.newest();
        let mut out = Vec::new();
        if self.header.follows < newest {
            out.push(crate::BackupInfo {
                generation: self.header.follows,
                path: state_path.to_path_buf(),
                size: bytes.len() as u64,
                committed: *modified,
            });
        }
        for r in self.records.iter().filter(|r| r.generation < newest) {
            let committed = r
                .meta
                .as_ref()
                .and_then(|m| serde_json::from_slice::<RecordMeta>(&self.bytes[m.clone()]).ok())
                .and_then(|m| humantime::parse_rfc3339(&m.time).ok())
                .unwrap_or(*modified);
            let start = r.meta.as_ref().map_or(r.body.start, |m| m.start - 4);
            out.push(crate::BackupInfo {
                generation: r.generation,
                path: self.journal_path.clone(),
                size: (RECORD_HEAD + padded(r.body.end - start) + 8) as u64,
                committed,
            });
        }
        out.reverse();
        out
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Before a compaction replaces the journal (the lock held, the new snapshot not
    /// renamed in yet): appends the history entries of the journal's records up to
    /// the replayed version `b` that the log does not hold yet and its retention keeps,
    /// one write per segment, flushed: once the journal is replaced, the log is where
    /// they are. Idempotent: a compaction after a crash here starts after the last
    /// generation the log holds.
    fn move_history(
        &self,
        sidecar: &Sidecar,
        b: &Base,
        j: &Replayed,
    ) -> std::result::Result<Result<()>, Poisoning> {
        let config = self.config();
        let policy = &config.history;
        if policy.keep == 0 {
            return Ok(Ok(()));
        }
        // The snapshot is read only when the history keeps documents its size.
        let small = j.snapshot_len as u64 <= policy.max_patch_bytes;
        let view = match View::read(self, Some(sidecar), small) {
            Ok(Some(view)) => view,
            Ok(None) => return Ok(Ok(())),
            Err(e) => return Ok(Err(e)),
        };
        // As for plain files, an entry that opens a segment or follows a gap carries
        // the whole document, when the history keeps documents that size: replayed
        // from the snapshot.
        let doc = match &view.snapshot {
            Some((bytes, _)) if small => format::decode::<Value>(self.path(), bytes).ok(),
            _ => None,
        };
        self.record_journal_history(sidecar, &view, doc, b.generation, b.perms)
    }

    /// The history entries of `view`'s records up to generation `upto` that the log
    /// does not hold yet and its retention keeps, appended and flushed (one write per
    /// segment). `doc`: the document of the generation the journal follows, when
    /// known, to give each entry the checksum of the version it produces (and the
    /// whole document where one is due).
    pub(crate) fn record_journal_history(
        &self,
        sidecar: &Sidecar,
        view: &View,
        doc: Option<Value>,
        upto: u64,
        perms: Perms,
    ) -> std::result::Result<Result<()>, Poisoning> {
        let config = self.config();
        let policy = &config.history;
        if policy.keep == 0 {
            return Ok(Ok(()));
        }
        let oldest = (upto + 1).saturating_sub(u64::from(policy.keep)) + 1;
        let last = crate::history::last_recorded(sidecar, policy, upto);
        let from = last.map_or(0, |l| l + 1).max(oldest);
        if !view
            .records
            .iter()
            .any(|r| r.generation >= from && r.generation <= upto)
        {
            return Ok(Ok(()));
        }
        let mut doc = doc;
        let mut previous = last;
        let mut entries = Vec::new();
        for (i, r) in view
            .records
            .iter()
            .enumerate()
            .take_while(|(_, r)| r.generation <= upto)
        {
            if let Some(d) = doc.as_mut()
                && apply(d, r, &view.bytes).is_err()
            {
                doc = None;
            }
            if r.generation < from {
                continue;
            }
            let mut entry = view.entry(i, policy.max_patch_bytes);
            // The log's entry records the checksum of the version it produces (the
            // journal's records carry their own; the log's lines would not).
            entry.checksum = doc.as_ref().map(crate::history::checksum_of);
            if entry.checksum.is_none() && entry.note.is_none() {
                entry.note = Some(crate::history::NO_CHECKSUM.into());
            }
            if entry.snapshot.is_none()
                && crate::history::needs_snapshot(policy, r.generation, previous)
            {
                let whole = doc.as_ref().filter(|d| {
                    serde_json::to_vec(d).is_ok_and(|v| v.len() as u64 <= policy.max_patch_bytes)
                });
                match whole {
                    Some(d) => entry.snapshot = Some(d.clone()),
                    None if entry.note.is_none() => {
                        entry.note = Some(
                            "no snapshot: the document is larger than history.max_patch_bytes"
                                .into(),
                        );
                    }
                    None => {}
                }
            }
            previous = Some(r.generation);
            entries.push(entry);
        }
        crate::history::append_many(
            sidecar,
            policy,
            &entries,
            perms,
            self.opts.durability == Durability::Full,
        )
    }

    /// The journal's view, for a journal-mode store (`None` otherwise).
    /// `with_snapshot`: also read the snapshot (to replay versions from it; the
    /// history needs only the records).
    pub(crate) fn journal_view(
        &self,
        sidecar: Option<&Sidecar>,
        with_snapshot: bool,
    ) -> Result<Option<View>> {
        if self.config().format != Format::Journal {
            return Ok(None);
        }
        View::read(self, sidecar, with_snapshot)
    }
}

/// What a commit in journal mode does.
pub(crate) enum Step {
    /// The change was appended and flushed: the new base, and the time in `fdatasync`.
    Appended(Base, Duration),
    /// This commit writes a snapshot with the ordinary protocol (compaction): its
    /// generation, the base that protocol sees (the snapshot in place, to keep as a
    /// backup), and a quarantined damaged journal to report once it is done (what was
    /// wrong, where it is kept, the generation kept and its snapshot's generation).
    Compact {
        generation: u64,
        base: Option<Base>,
        repaired: Option<(String, PathBuf, u64, u64)>,
    },
}

/// The state a journal commit writes.
pub(crate) enum NewState<'a, T> {
    /// Borrowed from the caller: the kept tree is made from it.
    Borrowed(&'a T),
    /// In a cell the append takes it from when it is the tree itself (a
    /// `Store<Value>`'s, `sys/value.rs`): kept as the new tree, neither copied nor
    /// freed. It stays in the cell when this commit compacts or changes nothing.
    Cell(&'a std::cell::RefCell<Option<T>>),
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Journal mode's part of a commit of `state` (`encoded_len` bytes as a snapshot)
    /// after `base` as `generation`:
    /// appends one record when the journal allows it, or says that this commit
    /// compacts. Call with the lock held, after validation.
    pub(crate) fn journal_commit(
        &self,
        guard: &mut lock::Guard<'_>,
        state: NewState<'_, T>,
        encoded_len: usize,
        base: Option<&Base>,
        generation: u64,
        change: &Change,
    ) -> Result<Step> {
        let sidecar = guard.sidecar().clone();
        // A store reads the settings when it is opened. If another one has taken the
        // file out of journal mode since, readers ignore the journal: a record here
        // would be a commit nobody sees. (As the lock's `refresh_settings` found them
        // in this hold: no system call.)
        let recorded = cache::recorded_format(self, guard)?;
        if recorded != Format::Journal {
            return Err(Error::Unsupported {
                path: self.path().to_path_buf(),
                what: "a commit in journal mode".into(),
                why: format!(
                    "the file's settings were changed to `{}` since this store was opened; nothing was written: open the store again",
                    recorded.name()
                ),
            });
        }
        let replayed = base.and_then(|b| b.journal.as_deref());
        // Past every generation the journal shows (a damaged one's too; for a new
        // file, a journal left from before it was deleted).
        let floor = match (base, replayed) {
            (Some(_), Some(j)) => j.max_seen,
            (Some(_), None) => 0,
            (None, _) => newest_generation(&sidecar)?,
        };
        let generation = generation.max(floor + 1);
        if generation > MAX_GENERATION {
            return Err(Error::Invalid {
                path: self.path().to_path_buf(),
                message: format!(
                    "it would be generation {generation}, past the largest statesafe writes ({MAX_GENERATION})"
                ),
            });
        }
        let compact = |repaired| {
            // The journal's records go into the history log before anything replaces
            // the journal (the new snapshot's rename comes after this).
            // A failed write is bookkeeping (as a history append is for plain files); a
            // failed flush is never retried: it poisons the store, and this commit fails
            // with nothing written.
            if let (Some(b), Some(j)) = (base, replayed)
                && j.journal.is_some()
            {
                match self.move_history(&sidecar, b, j) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        self.bookkeeping_failed(b.generation, "moving the journal's history", &e);
                    }
                    Err(Poisoning(e)) => {
                        self.poison();
                        return Err(e);
                    }
                }
            }
            if mutation("journal-compact-early") {
                // The broken order: the old journal replaced before the snapshot that
                // holds its commits is durable.
                let header = Header::new(generation, 0);
                let perms = base.map_or(
                    Perms {
                        mode: 0o644,
                        uid: sys::effective_uid(),
                        gid: sys::effective_gid(),
                    },
                    |b| b.perms,
                );
                if let Ok(result) = start(&sidecar, header, perms, self.opts.durability, guard) {
                    result?;
                }
            }
            Ok(Step::Compact {
                generation,
                base: base.map(snapshot_base),
                repaired,
            })
        };
        let (Some(b), Some(j)) = (base, replayed) else {
            return compact(None);
        };
        if let Some((damage, checksum)) = &j.damage {
            let quarantined = match quarantine(&sidecar, *checksum, b.perms) {
                Ok(result) => result?,
                Err(Poisoning(e)) => {
                    self.poison();
                    return Err(e);
                }
            };
            return compact(Some((
                damage.clone(),
                quarantined,
                b.generation,
                j.snapshot_generation,
            )));
        }
        let (Some(pos), true, Some(old)) = (&j.journal, j.appendable, &b.value) else {
            return compact(None);
        };
        // The descriptor to append through, and whether its flush will vouch for every
        // record before this one (durable.rs): a descriptor opened after records whose
        // flushes are not known to have succeeded waits for their writers to publish
        // them, and otherwise this commit compacts (the new snapshot is durable whatever
        // the journal's pages hold).
        // A journal replaced while this transaction was open is most often another
        // holder's compaction after a cleanup removed this holder's lock file: then the
        // lock was lost, and the error says so.
        let kept =
            writer(&sidecar, cache::take_file(self), pos, SinceCheck::CallerRan).map_err(|e| {
                match self.write_dir() {
                    Ok(dir) => guard.verify(dir).err().unwrap_or(e),
                    Err(_) => e,
                }
            })?;
        let id = durable::JournalId::of(pos.id, &pos.header);
        let lock_file = std::sync::Arc::clone(guard.lock_file());
        if self.opts.durability == Durability::Full
            && !kept
                .witness
                .prove(&lock_file, id, pos.end, durable::PROVE_WAIT, || {
                    record_time(&kept.file, pos.last_record?.0)
                })
        {
            return compact(None);
        }
        // Every append before this lock hold came before the lock's read of the
        // published ends: one past this journal's end means an older copy of it was put
        // back (`refuse_cut_journal`), which a refresh that extends its cache does not
        // see (docs/design.md: the ends read when the lock was taken, no second read).
        let published = guard.published_for_header(pos.header.checksum());
        if published > pos.end {
            return Err(self.refuse_cut_journal(pos.header.follows, pos.end, published));
        }
        // A `Store<Value>`'s state is the new tree already (`sys/value.rs`): it is
        // read in place, and taken (or copied) only once the append is done.
        let held = match &state {
            NewState::Borrowed(_) => None,
            NewState::Cell(cell) => Some(cell.borrow()),
        };
        let state_ref = match (&state, &held) {
            (NewState::Borrowed(s), _) => *s,
            (NewState::Cell(_), h) => h
                .as_ref()
                .and_then(|h| h.as_ref())
                .expect("invariant: taken only by the append, below"),
        };
        let converted = if crate::sys::value::is_value::<T>() {
            None
        } else {
            Some(
                serde_json::to_value(state_ref).map_err(|e| Error::Serialize {
                    path: self.path().to_path_buf(),
                    source: e,
                })?,
            )
        };
        let new_ref = match &converted {
            Some(v) => v,
            None => crate::sys::value::as_value(state_ref)
                .expect("invariant: converted unless it is a Value"),
        };
        let patch = ordered_diff(old, new_ref);
        let (kind, body) = change_body(&patch, new_ref, encoded_len);
        drop(held);
        // What this writer knows durable: a later record's claim tells a reader that a
        // bad record before it is damage, not a torn append.
        let meta = RecordMeta::now(
            change,
            !pos.last_ours,
            kept.witness.claim(&lock_file, id, pos.end),
            pos.prev(),
            guard.pid(),
        );
        let Some(record) = encode_record(generation, kind, Some(&meta), &body) else {
            return compact(None);
        };
        let config = self.config();
        let limit = threshold(j.snapshot_len, config.settings.journal_max_bytes);
        if pos.end + record.len() as u64 - HEADER_LEN as u64 > limit {
            return compact(None);
        }
        if patch.0.is_empty() {
            // As in the other formats: a commit that changes nothing (key order
            // included) writes nothing
            // and keeps the generation (unless it is due to compact, which leaving
            // journal mode relies on).
            cache::keep_file(self, kept, pos.id);
            return Ok(Step::Appended(b.clone(), Duration::ZERO));
        }
        // The lock must still be the lock file at its path, as before the whole-file
        // protocol's rename: a cleanup may have removed it since it was taken, and a
        // writer that locked the new one may be appending at this very offset.
        guard.verify(self.write_dir()?)?;
        let seq = write_record(&kept, pos, &record).map_err(|f| {
            let journal = sidecar.root().join(JOURNAL);
            if f.left.is_none() {
                return Error::io(Op::Write, journal, f.error);
            }
            // Part of the record stays in the journal: the commit is not reported
            // as not applied.
            self.poison();
            append_left(self.path(), generation, &journal, &f)
        })?;
        let end = pos.end + record.len() as u64;
        let slot = guard.slot();
        let pending = Pending {
            kept: std::sync::Arc::clone(&kept),
            lock: lock_file,
            sidecar: std::sync::Arc::clone(&sidecar),
            slot,
            id,
            seq,
            end,
            generation,
            started: std::time::Instant::now(),
            contended: guard.contended.then(|| (pos.end, record.clone())),
        };
        // The flush: after the lock is released when the caller releases it right after
        // this commit (so that other writers append meanwhile and flushes overlap),
        // else now; and now when the lock file's description has no slot of its own
        // (the shared one is written with the lock held).
        let fsync = if self.opts.durability == Durability::None {
            Duration::ZERO
        } else if guard.may_defer && slot.own() {
            guard.deferred = Some(pending);
            Duration::ZERO
        } else {
            match self.finish_journal(pending) {
                Ok(d) => d,
                Err(e) => {
                    self.poison();
                    return Err(flush_failed(self.path(), generation, e));
                }
            }
        };
        // The lock record is left as written at acquire: it names no temporary file
        // (see `lock_and_read_within`), and a journal needs no generation hint there
        // (`newest_generation` reads the journal).
        let new = std::sync::Arc::new(match converted {
            Some(v) => v,
            None => take_tree(&state),
        });
        let mut j = j.clone();
        j.max_seen = generation;
        j.doc = None;
        if let Some(p) = j.journal.as_mut() {
            if end > p.size {
                p.size = grown(p.size, end);
            }
            p.end = end;
            p.dirty_to = end;
            p.last_record = Some((pos.end, le64(&record[record.len() - 8..])));
            p.last_ours = true;
        }
        // The kept document follows without reading this record back; a large one is
        // not copied for it (the next refresh applies the record instead).
        if let (Some(p), true) = (j.journal.as_ref(), encoded_len <= 1 << 20) {
            cache::appended(
                self,
                b.generation,
                generation,
                std::sync::Arc::clone(&new),
                patch,
                p,
            );
        }
        cache::keep_file(self, kept, pos.id);
        // The new base: `b` but for what this commit changed (built field by field:
        // a clone of `b` would copy the old document only to drop it).
        let next = Base {
            generation,
            perms: b.perms,
            checksum: b.checksum,
            len: b.len,
            external: false,
            adopted: false,
            valid: true,
            value: Some(new),
            id: b.id,
            pin: b.pin.clone(),
            style: b.style,
            acl: b.acl.clone(),
            journal: Some(Box::new(j)),
        };
        Ok(Step::Appended(next, fsync))
    }

    /// After a compaction's snapshot (generation `generation`, checksum `checksum`) is
    /// durable: starts the new journal and reports a repaired journal. Failures here
    /// leave the commit standing (the next commit compacts again).
    pub(crate) fn journal_compacted(
        &self,
        guard: &lock::Guard<'_>,
        sidecar: &Sidecar,
        generation: u64,
        checksum: u64,
        perms: Perms,
        repaired: Option<(String, PathBuf, u64, u64)>,
    ) -> Result<()> {
        let header = Header::new(generation, checksum);
        let started = match start(sidecar, header, perms, self.opts.durability, guard) {
            Ok(result) => result,
            Err(Poisoning(e)) => {
                self.poison();
                Err(e)
            }
        };
        if let Some((damage, quarantined, kept, snapshot)) = repaired {
            self.emit(Event::Recovered {
                path: self.path().to_path_buf(),
                damage,
                quarantined,
                restored_from: Some(kept),
                rebuilt_from: (kept > snapshot).then_some(snapshot),
                generation,
            });
        }
        started
    }

    /// Before the settings leave journal mode (the lock held): writes the newest state
    /// as the snapshot, so that a reader that ignores the journal misses nothing.
    pub(crate) fn journal_flatten(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &std::ffi::OsString,
    ) -> Result<()> {
        let Some(cur) = self.read_current()? else {
            return Ok(());
        };
        let Some(j) = cur.journal.as_deref() else {
            return Ok(());
        };
        if j.journal.is_none() || (cur.generation == j.snapshot_generation && j.damage.is_none()) {
            return Ok(());
        }
        self.journal_damage_refused(&cur, "the settings were not changed")?;
        let v = self.verify(&cur, true)?;
        let config = self.config();
        let mut forced = (*config).clone();
        // A threshold of 0: this commit compacts.
        forced.settings.journal_max_bytes = Some(0);
        self.set_config(forced);
        let base = Base::of(&cur, true, v.value);
        let written = self.write_version(guard, temp_name, &v.state, Some(&base), Change::Commit);
        self.set_config((*config).clone());
        written.map(|_| ())
    }

    /// Under [`crate::RecoveryPolicy::Fail`], a damaged journal in `cur` is
    /// [`Error::Corrupt`] (`outcome`: what the caller did not do): a writer that went on
    /// would quarantine the journal and build on the state before the damage, which
    /// is the repair that policy forbids (plain files: [`Store::recover_locked`]).
    pub(crate) fn journal_damage_refused(&self, cur: &Current, outcome: &str) -> Result<()> {
        let damage = cur.journal.as_ref().and_then(|j| j.damage.as_ref());
        match damage {
            Some((damage, _))
                if self.config().recovery == crate::settings::RecoveryPolicy::Fail =>
            {
                Err(Error::Corrupt {
                    path: self.path().to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!(
                        "{damage}; the recovery policy is `fail`, so {outcome} (run `statesafe recover` to repair it)"
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// A load that found the journal damaged: repairs it if the writers' lock is free
    /// at once (quarantine, then the newest state it proves committed as a new
    /// generation with a new snapshot and journal); otherwise serves that state
    /// without writing, with an [`Event::DamageNotRepaired`].
    pub(crate) fn journal_repair_on_load(&self, cur: Current) -> Result<Snapshot<T>> {
        self.journal_damage_refused(&cur, "nothing was repaired")?;
        let damage = cur
            .journal
            .as_ref()
            .and_then(|j| j.damage.clone())
            .map_or_else(String::new, |(d, _)| d);
        let locked = match self.lock_and_read_within("recover", true, Duration::ZERO) {
            Ok(locked) => locked,
            Err(
                e @ (Error::LockTimeout { .. }
                | Error::PermissionDenied { .. }
                | Error::ReadOnly { .. }
                | Error::Poisoned { .. }),
            ) => {
                let v = self.verify(&cur, false)?;
                self.emit(Event::DamageNotRepaired {
                    path: self.path().to_path_buf(),
                    damage,
                    because: format!("this process cannot take the writers' lock now ({e})"),
                    served: cur.generation,
                    rebuilt_from: None,
                });
                return Ok(Snapshot {
                    state: v.state,
                    generation: cur.generation,
                });
            }
            Err(e) => return Err(e),
        };
        let crate::transaction::Locked {
            mut guard,
            temp_name,
            current,
        } = locked;
        let Some(cur) = current else {
            // Deleted since the read (review20, finding 4): as in `recover_on_load`.
            let refused = self.refuse_deleted(Some(guard.sidecar()));
            guard.release();
            refused?;
            return Err(Error::NotFound {
                path: self.path().to_path_buf(),
            });
        };
        let v = self.verify(&cur, false)?;
        let still_damaged = cur.journal.as_ref().is_some_and(|j| j.damage.is_some());
        if !still_damaged {
            guard.release();
            return Ok(Snapshot {
                state: v.state,
                generation: cur.generation,
            });
        }
        let event = self.journal_repair(&mut guard, &temp_name, &cur, &v.state)?;
        guard.release();
        let Event::Recovered { generation, .. } = event else {
            unreachable!("invariant: a repair reports Recovered")
        };
        Ok(Snapshot {
            state: v.state,
            generation,
        })
    }

    /// Repairs a damaged journal under the lock: quarantines it and commits `state`
    /// (the newest version it proves, `cur`) as a new generation past every one it
    /// shows, with a new snapshot and journal. Returns the [`Event::Recovered`] (also
    /// reported to the store's hook).
    pub(crate) fn journal_repair(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &std::ffi::OsString,
        cur: &Current,
        state: &T,
    ) -> Result<Event> {
        let (damage, checksum) = cur
            .journal
            .as_ref()
            .and_then(|j| j.damage.clone())
            .expect("invariant: called for a damaged journal");
        let base = Base::of(cur, true, None);
        let new = self.write_version(guard, temp_name, state, Some(&base), Change::Commit)?;
        let snapshot = cur
            .journal
            .as_ref()
            .map_or(cur.generation, |j| j.snapshot_generation);
        Ok(Event::Recovered {
            path: self.path().to_path_buf(),
            damage,
            quarantined: self
                .local()
                .target
                .sidecar()
                .join(Sub::Quarantine.name())
                .join(format!("journal-damaged-{checksum:016x}")),
            restored_from: Some(cur.generation),
            rebuilt_from: (cur.generation > snapshot).then_some(snapshot),
            generation: new.generation,
        })
    }
}

/// Removes the journal once the settings have left journal mode (best effort: a
/// journal left behind is stale, and skipped, if the file ever returns to journal
/// mode, because the snapshot written on leaving is newer than all its records).
pub(crate) fn remove(sidecar: &Sidecar) {
    if let Err(e) = sidecar
        .root()
        .remove_file(OsStr::new(JOURNAL), Op::Settings)
    {
        tracing::warn!(target: "statesafe", "could not remove the journal after leaving journal mode: {e}");
    }
}

/// A `Store<Value>`'s state as the new tree: taken from its cell, or copied when
/// borrowed.
fn take_tree<T>(state: &NewState<'_, T>) -> Value {
    match state {
        NewState::Cell(cell) => {
            let taken = cell
                .borrow_mut()
                .take()
                .expect("invariant: taken once, by the append");
            crate::sys::value::into_value(taken)
                .unwrap_or_else(|_| unreachable!("invariant: called only for a Value"))
        }
        NewState::Borrowed(s) => crate::sys::value::as_value(*s)
            .expect("invariant: called only for a Value")
            .clone(),
    }
}

/// The base the ordinary protocol sees when a journal-mode commit compacts: the
/// snapshot in place (its generation and checksum, kept as a backup under its own
/// attribute), with the replayed document as the history's previous value.
fn snapshot_base(b: &Base) -> Base {
    let mut s = b.clone();
    if let Some(j) = b.journal.as_deref() {
        s.generation = j.snapshot_generation;
        s.checksum = j.snapshot_checksum;
        s.len = j.snapshot_len;
        s.external = j.snapshot_external;
        s.adopted = j.snapshot_adopted;
        s.style = j.style;
    }
    s.journal = None;
    s
}

/// The record body for the change `patch` (from [`ordered_diff`]) to `new`: the patch,
/// unless the whole document is shorter.
/// `encoded_len` is the length of the document as the snapshot would lay it out (at
/// least its compact length): the compact document is serialized only when the patch
/// is longer than that or than [`PATCH_CHECK`].
fn change_body(patch: &json_patch::Patch, new: &Value, encoded_len: usize) -> (Kind, Vec<u8>) {
    let patch = serde_json::to_vec(patch).expect("invariant: a patch serializes");
    if patch.len() <= PATCH_CHECK && patch.len() < encoded_len {
        return (Kind::Patch, patch);
    }
    let doc = serde_json::to_vec(new).expect("invariant: a Value serializes");
    if doc.len() < patch.len() {
        (Kind::Document, doc)
    } else {
        (Kind::Patch, patch)
    }
}

/// The patch from `old` to `new` whose replay gives `new` exactly, key order included
/// (a document keeps its key order, as a plain commit writes it). `json_patch::diff`
/// compares objects without their order, and on replay an `add` appends a new key and
/// a `remove` moves the object's last key into the gap; so here an object is patched
/// key by key up to its first key out of place, and from there on its old keys are
/// removed from the end and its new ones appended (or, when no key is in place, it is
/// replaced whole). One walk of both trees, as `json_patch::diff`'s; empty exactly
/// when the two are the same, order included.
fn ordered_diff(old: &Value, new: &Value) -> json_patch::Patch {
    let mut ops = Vec::new();
    diff_into(old, new, &mut Vec::new(), &mut ops);
    json_patch::Patch(ops)
}

/// One step of the walk's place in the trees: an object's key or an array's index.
/// The walk keeps its place as these (a push and a pop at every key and element of
/// both trees) and writes a pointer only for an operation it emits: writing the
/// pointer at every step (`PointerBuf::pop_back`, later a `String` cut back to its
/// length) cost a tenth, then a twelfth of a 1 KiB commit's instructions
/// (`docs/benchmarks.md`, "jperf16").
#[derive(Clone, Copy)]
enum Place<'a> {
    Key(&'a str),
    Index(usize),
}

/// Appends `token` to the JSON pointer `at` (`~` written `~0`, `/` written `~1`).
fn push_token(at: &mut String, token: &str) {
    at.push('/');
    // By bytes: a `char` pattern decodes the key's characters one by one.
    if !token.bytes().any(|b| b == b'~' || b == b'/') {
        at.push_str(token);
        return;
    }
    for c in token.chars() {
        match c {
            '~' => at.push_str("~0"),
            '/' => at.push_str("~1"),
            c => at.push(c),
        }
    }
}

/// Appends the array index `i` to the JSON pointer `at`: its digits written by hand
/// (`write!` went through the formatting machinery at every element of both trees,
/// about a quarter of the diff's instructions: `docs/benchmarks.md`, "jperf16").
fn push_index(at: &mut String, i: usize) {
    at.push('/');
    for &digit in crate::json_out::decimal(i as u64, &mut [0; 20]) {
        at.push(char::from(digit));
    }
}

/// The pointer to the place `at` of an operation (made only for the operations
/// written).
fn pointer(at: &[Place<'_>]) -> json_patch::jsonptr::PointerBuf {
    let mut text = String::new();
    for step in at {
        match *step {
            Place::Key(key) => push_token(&mut text, key),
            Place::Index(i) => push_index(&mut text, i),
        }
    }
    json_patch::jsonptr::PointerBuf::parse(&text)
        .expect("invariant: made of tokens escaped by `push_token`")
}

fn diff_into<'a>(
    old: &'a Value,
    new: &'a Value,
    at: &mut Vec<Place<'a>>,
    ops: &mut Vec<json_patch::PatchOperation>,
) {
    use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
    let replace = |at: &[Place<'_>]| {
        PatchOperation::Replace(ReplaceOperation {
            path: pointer(at),
            value: new.clone(),
        })
    };
    let len = at.len();
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            // The keys at the same places up to the first difference are patched in
            // place. Past it, a replayed removal is exact only of the last key, and an
            // `add` of a new key appends: the old keys from there are removed, last
            // first, and the new ones added in order (a key in both is removed and
            // added again). When that is every key, the object is replaced whole.
            let same = o.keys().zip(n.keys()).take_while(|(a, b)| a == b).count();
            if same == 0 && !o.is_empty() {
                ops.push(replace(at));
                return;
            }
            for ((key, was), value) in o.iter().zip(n.values()).take(same) {
                at.push(Place::Key(key));
                diff_into(was, value, at, ops);
                at.truncate(len);
            }
            for key in o.keys().skip(same).rev() {
                at.push(Place::Key(key));
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(at),
                }));
                at.truncate(len);
            }
            for (key, value) in n.iter().skip(same) {
                at.push(Place::Key(key));
                ops.push(PatchOperation::Add(AddOperation {
                    path: pointer(at),
                    value: value.clone(),
                }));
                at.truncate(len);
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            // Element by element; the elements past the shorter end are added at (or
            // removed from, last first) the end, which a replay does exactly.
            for (i, (was, value)) in o.iter().zip(n).enumerate() {
                at.push(Place::Index(i));
                diff_into(was, value, at, ops);
                at.truncate(len);
            }
            for (i, value) in n.iter().enumerate().skip(o.len()) {
                at.push(Place::Index(i));
                ops.push(PatchOperation::Add(AddOperation {
                    path: pointer(at),
                    value: value.clone(),
                }));
                at.truncate(len);
            }
            for i in (n.len()..o.len()).rev() {
                at.push(Place::Index(i));
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: pointer(at),
                }));
                at.truncate(len);
            }
        }
        _ if old == new => {}
        _ => ops.push(replace(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(records: &[(u64, Kind, &str)]) -> Vec<u8> {
        let mut b = Header::new(4, 9).encode().to_vec();
        for (g, k, body) in records {
            b.extend(encode_record(*g, *k, Some(b"{}"), body.as_bytes()).unwrap());
        }
        b
    }

    #[test]
    fn headers_round_trip_and_any_changed_byte_is_refused() {
        let h = Header::new(7, 0xdead_beef);
        let b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        // An earlier build's header still reads, as version 1.
        let old = Header { version: 1, ..h };
        assert_eq!(Header::decode(&old.encode()), Some(old));
        for i in 0..HEADER_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert_eq!(Header::decode(&c), None, "byte {i}");
        }
        assert_eq!(Header::decode(&b[..31]), None);
    }

    #[test]
    fn a_clean_journal_ends_at_its_zeroed_tail() {
        let mut b = journal(&[(5, Kind::Patch, "[]"), (6, Kind::Document, "{\"a\":1}")]);
        let end = b.len();
        b.resize(end + 4096, 0);
        let s = scan(&b, HEADER_LEN, 5);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.records[1].generation, 6);
        assert_eq!(&b[s.records[1].body.clone()], b"{\"a\":1}");
        assert_eq!(
            (s.end, s.dirty_to, s.damage, s.max_seen),
            (end, end, None, 6)
        );
        // No zeroed tail at all (a full file) is a clean end too.
        let s = scan(&b[..end], HEADER_LEN, 5);
        assert_eq!((s.records.len(), s.damage), (2, None));
    }

    #[test]
    fn a_torn_last_record_is_dropped_whatever_part_of_it_was_written() {
        let good = journal(&[(5, Kind::Patch, "[]")]);
        let torn = encode_record(6, Kind::Document, Some(b"{}"), &[b'7'; 300]).unwrap();
        // Every way a power loss can leave the last append: each 8-byte piece of it
        // written or not (sampled), and cut at every length.
        for cut in 1..torn.len() {
            for mask in [u64::MAX, 0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa, 1] {
                let mut b = good.clone();
                let mut t = torn[..cut].to_vec();
                for (i, chunk) in t.chunks_mut(8).enumerate() {
                    if mask >> (i % 64) & 1 == 0 {
                        chunk.fill(0);
                    }
                }
                b.extend(&t);
                b.resize(b.len() + 1000, 0);
                let s = scan(&b, HEADER_LEN, 5);
                assert_eq!(s.records.len(), 1, "cut {cut}");
                assert_eq!(s.damage, None, "cut {cut} mask {mask:x}");
                assert_eq!(s.end, good.len());
                assert!(s.dirty_to <= good.len() + cut);
            }
        }
    }

    /// Each record of this build names the record before it (the header, for the
    /// first): one that verifies but names another record (a torn batch's survivor
    /// behind the record the next writer wrote over the tear) ends the records like a
    /// torn tail; one that names none (an earlier build's) follows any record.
    #[test]
    fn a_record_that_names_another_record_before_it_ends_the_records() {
        let header = Header::new(4, 9);
        let record = |g: u64, prev: Option<u64>, body: &str| {
            let meta = match prev {
                Some(p) => format!("{{\"durable\":32,\"prev\":\"{p:016x}\"}}"),
                None => "{}".to_string(),
            };
            encode_record(g, Kind::Patch, Some(meta.as_bytes()), body.as_bytes()).unwrap()
        };
        let sum = |r: &[u8]| le64(&r[r.len() - 8..]);
        let r5 = record(5, Some(header.checksum()), "[]");
        let old6 = record(6, Some(sum(&r5)), "[1]");
        let new6 = record(6, Some(sum(&r5)), "[2]");
        let journal = |records: &[&[u8]]| {
            let mut b = header.encode().to_vec();
            for r in records {
                b.extend_from_slice(r);
            }
            b.resize(b.len() + 4096, 0);
            b
        };
        let upto = |records: &[&[u8]]| HEADER_LEN + records.iter().map(|r| r.len()).sum::<usize>();
        // The old batch's 7 behind the new 6: dropped, not replayed, not damage.
        let survivor = record(7, Some(sum(&old6)), "[3]");
        let b = journal(&[&r5, &new6, &survivor]);
        let s = scan(&b, HEADER_LEN, 5);
        assert_eq!(
            (s.records.len(), s.end, s.dirty_to, s.damage),
            (2, upto(&[&r5, &new6]), upto(&[&r5, &new6, &survivor]), None)
        );
        // The long-lived store's read from its last record on agrees.
        let from = upto(&[&r5]);
        let t = scan_at(&b[from..], from as u64, new6.len(), 7, Some(sum(&new6)));
        assert_eq!((t.records.len(), t.damage), (0, None));
        // The new 6's own 7, and an earlier build's 7 (naming none), follow it.
        for next in [record(7, Some(sum(&new6)), "[3]"), record(7, None, "[3]")] {
            let s = scan(&journal(&[&r5, &new6, &next]), HEADER_LEN, 5);
            assert_eq!((s.records.len(), s.damage), (3, None));
        }
        // A first record that names another header than the journal's.
        let stray = record(5, Some(header.checksum() ^ 1), "[]");
        let s = scan(&journal(&[&stray]), HEADER_LEN, 5);
        assert_eq!((s.records.len(), s.end, s.damage), (0, HEADER_LEN, None));
    }

    #[test]
    fn a_bad_record_followed_by_a_good_one_is_damage() {
        let b0 = journal(&[
            (5, Kind::Patch, "[]"),
            (6, Kind::Patch, "[]"),
            (7, Kind::Patch, "[]"),
        ]);
        let second = HEADER_LEN + RECORD_HEAD + 8 + 8;
        for i in second..second + 32 {
            let mut b = b0.clone();
            b[i] ^= 0x01;
            let s = scan(&b, HEADER_LEN, 5);
            assert_eq!(s.records.len(), 1, "byte {i}");
            let damage = s
                .damage
                .unwrap_or_else(|| panic!("byte {i} went unnoticed"));
            assert!(damage.contains("damage"), "{damage}");
            assert_eq!(s.max_seen, 7);
        }
        // Zeroed in the middle (a lost block) is damage too, not the end.
        let mut b = b0.clone();
        b[second..second + 32].fill(0);
        assert!(scan(&b, HEADER_LEN, 5).damage.is_some());
        // A record that verifies but breaks the chain.
        let b = journal(&[(5, Kind::Patch, "[]"), (7, Kind::Patch, "[]")]);
        let s = scan(&b, HEADER_LEN, 5);
        assert!(s.damage.unwrap().contains("generation 7, where 6"));
        assert_eq!(s.max_seen, 7);
    }

    /// One patch record of `generation` whose metadata claims the journal durable up
    /// to `durable`.
    fn claiming_record(generation: u64, durable: usize, body: &str) -> Vec<u8> {
        let meta = format!("{{\"durable\":{durable}}}");
        encode_record(
            generation,
            Kind::Patch,
            Some(meta.as_bytes()),
            body.as_bytes(),
        )
        .unwrap()
    }

    /// A journal following generation 4 whose records (generations 5, 6, ...) claim
    /// the durable offsets `claims` gives, from the offsets of the records
    /// (`claims(i, offsets so far)`); returns it and the records' offsets.
    fn claiming(n: usize, claims: impl Fn(usize, &[usize]) -> usize) -> (Vec<u8>, Vec<usize>) {
        let mut b = Header::new(4, 9).encode().to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(b.len());
            let body = format!(
                "[{{\"op\":\"add\",\"path\":\"/k{i}\",\"value\":\"{}\"}}]",
                "v".repeat(40)
            );
            b.extend(claiming_record(5 + i as u64, claims(i, &offsets), &body));
        }
        let end = b.len();
        b.resize(end + 512, 0);
        (b, offsets)
    }

    #[test]
    fn a_torn_batch_is_dropped_whole_even_when_a_later_record_of_it_survived() {
        // Record 5 alone, then 6, 7 and 8 written by one `pwrite` and one flush (a
        // group commit): each of them holds the journal durable up to 6's offset.
        let (b0, at) = claiming(4, |i, at| at[i.min(1)]);
        let ends = [at[1], at[2], at[3], b0.len() - 512];
        // A power loss keeps the batch's pages in any order: any one of 6, 7 and 8
        // may be torn (a piece never written: zeros) while a later one survived.
        for torn in 1..4 {
            for piece in (ends[torn - 1]..ends[torn]).step_by(16) {
                let mut b = b0.clone();
                b[piece..(piece + 16).min(ends[torn])].fill(0);
                let s = scan(&b, HEADER_LEN, 5);
                assert_eq!(s.damage, None, "record {torn} torn at {piece}");
                assert_eq!(s.records.len(), torn, "record {torn} torn at {piece}");
                assert_eq!(s.end, at[torn]);
                // The next writer zeroes all of what followed, and goes on from the
                // last record kept (the dropped generations were never acknowledged).
                assert!(s.dirty_to > at[torn] && s.dirty_to <= ends[3]);
                if torn < 3 {
                    assert!(s.dirty_to > at[3] + RECORD_HEAD, "8 survived: zeroed too");
                }
                assert_eq!(s.max_seen, 4 + torn as u64);
                // Read from the last record kept on (the long-lived store's check), the
                // claims are still journal offsets.
                let from = at[torn - 1];
                let t = scan_at(
                    &b[from..],
                    from as u64,
                    ends[torn - 1] - from,
                    5 + torn as u64,
                    None,
                );
                assert_eq!(
                    (t.damage, t.records.len()),
                    (None, 0),
                    "record {torn}, from {from}"
                );
                assert_eq!(t.end + from, at[torn]);
            }
        }
    }

    #[test]
    fn a_bad_record_before_one_whose_writer_held_it_durable_is_damage() {
        // Each record holds durable everything before it (flushed under the lock),
        // except that 8 claims exactly 7's offset (7 itself was not flushed yet).
        let (b0, at) = claiming(4, |i, at| at[i.min(3).saturating_sub(usize::from(i == 3))]);
        let corrupt = |r: usize| {
            let mut b = b0.clone();
            b[at[r] + RECORD_HEAD + 8] ^= 0x04;
            scan(&b, HEADER_LEN, 5)
        };
        // 6 bad: 7 claims 7's offset, past it: damage, reported with the later
        // generations counted.
        let s = corrupt(1);
        let why = s.damage.expect("6 bad before 7, which held 6 durable");
        assert!(why.contains(&format!("up to offset {}", at[2])), "{why}");
        assert_eq!((s.records.len(), s.max_seen), (1, 8));
        // 7 bad: 8 claims 7's offset, not past it: 7 and 8 were one unflushed window.
        let s = corrupt(2);
        assert_eq!((s.damage, s.records.len(), s.max_seen), (None, 2, 6));
        // The long-lived store's check, reading from 6 on, finds the same.
        let mut b = b0.clone();
        b[at[1] + RECORD_HEAD + 8] ^= 0x04;
        let t = scan_at(&b[at[0]..], at[0] as u64, at[1] - at[0], 6, None);
        assert!(t.damage.is_some());
        // A claim one word past the bad record's offset is damage too.
        let (b1, at1) = claiming(3, |i, at| if i == 2 { at[1] + 8 } else { at[i] });
        let mut b = b1.clone();
        b[at1[1] + RECORD_HEAD + 8] ^= 0x04;
        assert!(scan(&b, HEADER_LEN, 5).damage.is_some());
        // Records without the claim (an earlier build's, or metadata without it)
        // claim their own offset: a good one after a bad one is damage, as before.
        let b2 = journal(&[
            (5, Kind::Patch, "[]"),
            (6, Kind::Patch, "[]"),
            (7, Kind::Patch, "[]"),
        ]);
        let mut b = b2.clone();
        b[HEADER_LEN + 32 + RECORD_HEAD + 8] ^= 0x04;
        assert!(scan(&b, HEADER_LEN, 5).damage.is_some());
    }

    #[test]
    fn a_records_time_is_read_back_from_the_file_for_the_wait_for_its_flush() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = test_file(dir.path().join("journal"));
        let before = std::time::SystemTime::now() - std::time::Duration::from_millis(1);
        let meta = RecordMeta::now(&Change::Commit, true, 4096, 7, sys::pid());
        let after = std::time::SystemTime::now();
        let r = encode_record(5, Kind::Patch, Some(&meta), b"[]").unwrap();
        file.write_all_at(&r, 4096).unwrap();
        let t = record_time(&file, 4096).expect("the record's time");
        assert!(
            before <= t && t <= after,
            "{t:?} not in {before:?}..{after:?}"
        );
        // An earlier build's record says nothing; nor does an offset past the end, or
        // bytes that are not a record.
        let old = encode_record(6, Kind::Patch, None, b"[]").unwrap();
        file.write_all_at(&old, 8192).unwrap();
        assert_eq!(record_time(&file, 8192), None);
        assert_eq!(record_time(&file, 1 << 20), None);
        assert_eq!(record_time(&file, 0), None);
    }

    #[test]
    fn record_metadata_bytes_are_the_ones_format_wrote() {
        // `RecordMeta::now` writes its bytes piece by piece; they are what the earlier
        // `format!` wrote, for every change, with and without the writer.
        let writer = serde_json::to_string(&crate::format::Writer::current(true)).unwrap();
        for change in [Change::Commit, Change::Restore { from: 3 }] {
            for with_writer in [false, true] {
                for (durable, prev) in [(0, 0), (72, 7), (u64::MAX, u64::MAX), (4096, 0xabc)] {
                    let got = RecordMeta::now(&change, with_writer, durable, prev, sys::pid());
                    let got = String::from_utf8(got).unwrap();
                    let time = got
                        .strip_prefix("{\"time\":\"")
                        .and_then(|rest| rest.split('"').next())
                        .unwrap()
                        .to_owned();
                    assert!(humantime::parse_rfc3339(&time).is_ok(), "{time}");
                    let change = serde_json::to_string(&change).unwrap();
                    let want = if with_writer {
                        format!(
                            "{{\"time\":\"{time}\",\"durable\":{durable},\"prev\":\"{prev:016x}\",\"writer\":{writer},\"change\":{change}}}"
                        )
                    } else {
                        format!(
                            "{{\"time\":\"{time}\",\"durable\":{durable},\"prev\":\"{prev:016x}\",\"change\":{change}}}"
                        )
                    };
                    assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn records_carry_their_metadata_and_an_earlier_builds_records_still_read() {
        let meta = RecordMeta::now(
            &Change::Restore { from: 3 },
            true,
            4096,
            u64::MAX,
            sys::pid(),
        );
        let r = encode_record(5, Kind::Patch, Some(&meta), b"[]").unwrap();
        let (record, size) = parse_at(&r, 0).unwrap();
        assert_eq!(size, r.len());
        assert_eq!(&r[record.body.clone()], b"[]");
        let m: RecordMeta = serde_json::from_slice(&r[record.meta.clone().unwrap()]).unwrap();
        assert_eq!(m.change, Change::Restore { from: 3 });
        assert_eq!(m.writer.unwrap().pid, sys::pid());
        assert_eq!(m.durable, Some(4096));
        assert_eq!(durable_claim(&record, &r, 0), 4096);
        assert_eq!(m.prev.as_deref(), Some("ffffffffffffffff"));
        assert_eq!(chained_to(&record, &r), Some(u64::MAX));
        let same: RecordMeta =
            serde_json::from_slice(&RecordMeta::now(&Change::Commit, false, 72, 0, sys::pid()))
                .unwrap();
        assert_eq!(
            (same.writer, same.change, same.durable, same.prev.as_deref()),
            (None, Change::Commit, Some(72), Some("0000000000000000"))
        );
        assert!(humantime::parse_rfc3339(&m.time).is_ok(), "{}", m.time);
        assert_eq!(last_of(&record, &r), (0, le64(&r[r.len() - 8..])));
        // A metadata length that runs past the body never verifies.
        let mut bad = r.clone();
        bad[RECORD_HEAD..RECORD_HEAD + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(parse_at(&bad, 0), None);
        // Kinds 1 and 2: no metadata.
        let old = encode_record(5, Kind::Document, None, b"{}").unwrap();
        let (record, _) = parse_at(&old, 0).unwrap();
        assert_eq!(
            (record.kind, record.meta, &old[record.body]),
            (Kind::Document, None, &b"{}"[..])
        );
    }

    /// A journal as an earlier build wrote it (magic `SSJOURN1`, records without
    /// metadata) is read, listed in the history with a note, never appended to: the
    /// next commit compacts and moves its entries into the log.
    #[test]
    fn an_earlier_builds_journal_is_read_and_compacted_into_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store: Store = Store::open(&path).unwrap();
        let settings = crate::settings::Settings {
            format: Format::Journal,
            ..crate::settings::Settings::default()
        };
        store
            .create_with(&settings, serde_json::json!({"n": 0}))
            .unwrap();
        let journal = dir.path().join(".state.json.statesafe").join(JOURNAL);
        let bytes = std::fs::read(&journal).unwrap();
        let header = Header::decode(&bytes).unwrap();
        let mut old = Header {
            version: 1,
            ..header
        }
        .encode()
        .to_vec();
        for (g, n) in [(2u64, 1), (3, 2)] {
            let patch = format!(r#"[{{"op":"replace","path":"/n","value":{n}}}]"#);
            old.extend(encode_record(g, Kind::Patch, None, patch.as_bytes()).unwrap());
        }
        old.resize(bytes.len(), 0);
        std::fs::write(&journal, &old).unwrap();
        let reader: Store = Store::open(&path).unwrap();
        let snap = reader.load().unwrap();
        assert_eq!(
            (snap.state, snap.generation),
            (serde_json::json!({"n": 2}), 3)
        );
        let history = reader.history().unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[2].note.as_deref(), Some(NO_META));
        assert!(history[2].writer.is_none() && history[2].patch.is_some());
        // The next commit compacts (a new snapshot) and starts this build's journal.
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&path);
        reader.update(|s| s["n"] = 3.into()).unwrap();
        assert_ne!(inode(&path), before);
        assert_eq!(&std::fs::read(&journal).unwrap()[..8], MAGIC);
        let history = Store::<Value>::open(&path).unwrap().history().unwrap();
        let generations: Vec<u64> = history.iter().map(|e| e.generation).collect();
        assert_eq!(generations, vec![1, 2, 3, 4]);
        assert_eq!(history[1].note.as_deref(), Some(NO_META));
        assert!(history[3].writer.is_some());
        assert_eq!(reader.document_at(2).unwrap(), serde_json::json!({"n": 1}));
    }

    #[test]
    fn the_body_is_the_patch_unless_the_document_is_smaller() {
        let old = serde_json::json!({"a": 1, "big": "x".repeat(10_000)});
        let mut new = old.clone();
        new["a"] = 2.into();
        let (kind, body) = change_body(&ordered_diff(&old, &new), &new, 10_020);
        assert_eq!(kind, Kind::Patch);
        let mut doc = old.clone();
        let patch: json_patch::Patch = serde_json::from_slice(&body).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, new);
        let small = serde_json::json!({"b": 1});
        let (kind, body) = change_body(&ordered_diff(&old, &small), &small, 8);
        assert_eq!(kind, Kind::Document);
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), small);
    }

    #[test]
    fn the_change_replays_to_the_new_document_key_order_included() {
        use serde_json::json;
        let old = json!({"a": 1, "o": {"x": 1, "y": 2, "z": 3}, "l": [1, {"p": 1, "q": 2}, 3]});
        for new in [
            json!({"a": 1, "o": {"x": 1, "y": 2, "z": 3}, "l": [1, {"p": 1, "q": 2}, 3]}),
            json!({"a": 2, "o": {"x": 1, "y": 2, "z": 3, "w": 4}, "l": [1, {"p": 1, "q": 2}, 3, 4]}),
            json!({"a": 1, "o": {"x": 1, "w": 4, "y": 2, "z": 3}, "l": [1, {"p": 1, "q": 2}, 3]}),
            json!({"a": 1, "o": {"y": 2, "z": 3}, "l": [1, {"q": 2, "p": 1}]}),
            json!({"a": 1, "o": {"x": 1, "z": 3}, "l": [1]}),
            json!({"l": [1, {"p": 1, "q": 2}, 3], "o": {"x": 1, "y": 2, "z": 3}, "a": 1}),
            json!({"a": 1, "o": {"x": 1, "y": 2, "z": 3}}),
            json!([1, 2]),
        ] {
            let patch = ordered_diff(&old, &new);
            let same = serde_json::to_vec(&old).unwrap() == serde_json::to_vec(&new).unwrap();
            assert_eq!(patch.0.is_empty(), same);
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &patch).unwrap();
            assert_eq!(doc.to_string(), new.to_string(), "{patch:?}");
        }
        // A value changed in a large object is one operation, not the object.
        let mut new = old.clone();
        new["o"]["y"] = 5.into();
        let patch = serde_json::to_value(ordered_diff(&old, &new)).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "replace", "path": "/o/y", "value": 5}])
        );
        // A key removed costs the keys after it, not the object.
        let old = json!({"a": 1, "b": 2, "c": 3, "d": 4});
        let new = json!({"a": 1, "c": 3, "d": 4});
        let patch = ordered_diff(&old, &new);
        let mut doc = old.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc.to_string(), new.to_string());
        assert_eq!(
            serde_json::to_value(patch).unwrap(),
            json!([
                {"op": "remove", "path": "/d"},
                {"op": "remove", "path": "/c"},
                {"op": "remove", "path": "/b"},
                {"op": "add", "path": "/c", "value": 3},
                {"op": "add", "path": "/d", "value": 4}
            ])
        );
    }

    #[test]
    fn the_change_escapes_keys_as_json_pointer_tokens() {
        use serde_json::json;
        // `~` and `/` in keys (the pointer's escapes), an empty key, a key that looks
        // like an escape, and array indexes past 9, nested.
        let old = json!({"a/b": {"~x": 1, "": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}, "~1": 1});
        let mut new = old.clone();
        new["a/b"]["~x"] = 2.into();
        new["a/b"][""][11] = 12.into();
        new["~1"] = json!({"/": true});
        let patch = ordered_diff(&old, &new);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "replace", "path": "/a~1b/~0x", "value": 2},
                {"op": "replace", "path": "/a~1b//11", "value": 12},
                {"op": "replace", "path": "/~01", "value": {"/": true}}
            ])
        );
        let mut doc = old.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc.to_string(), new.to_string());
        // Keys removed and added past the first one out of place, escaped alike.
        let old = json!({"p": {"k": 0, "a~b": 1, "c/d": 2}});
        let new = json!({"p": {"k": 0, "c/d": 2, "a~b": 1}});
        let patch = ordered_diff(&old, &new);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "remove", "path": "/p/c~1d"},
                {"op": "remove", "path": "/p/a~0b"},
                {"op": "add", "path": "/p/c~1d", "value": 2},
                {"op": "add", "path": "/p/a~0b", "value": 1}
            ])
        );
        let mut doc = old.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc.to_string(), new.to_string());
    }

    /// An object with keys from `a`.. in the order given (the first of a repeated key
    /// wins): numbers, and objects with their own keys in two orders.
    fn object_of(entries: &[(u8, u8)]) -> Value {
        let mut map = serde_json::Map::new();
        for &(k, v) in entries {
            let value = match v {
                0 | 1 => v.into(),
                2 => serde_json::json!({"x": 1, "y": 2}),
                _ => serde_json::json!({"y": 2, "x": 1}),
            };
            map.entry(char::from(b'a' + k).to_string()).or_insert(value);
        }
        Value::Object(map)
    }

    proptest::proptest! {
        #[test]
        fn any_change_replays_to_the_new_document_key_order_included(
            old in proptest::collection::vec((0u8..6, 0u8..4), 0..8),
            new in proptest::collection::vec((0u8..6, 0u8..4), 0..8),
        ) {
            let (old, new) = (object_of(&old), object_of(&new));
            let patch = ordered_diff(&old, &new);
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &patch).unwrap();
            proptest::prop_assert_eq!(doc.to_string(), new.to_string());
            let same = serde_json::to_vec(&old).unwrap() == serde_json::to_vec(&new).unwrap();
            proptest::prop_assert_eq!(patch.0.is_empty(), same);
        }
    }

    #[test]
    fn a_check_reads_up_to_a_run_of_zeros_not_the_whole_preallocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let size = 256u64 << 10;
        let file = test_file(&path);
        file.set_len(size).unwrap();
        // Data at 100..300, then zeros: one first piece, ending in zeros.
        file.write_all_at(&[7u8; 200], 100).unwrap();
        let mut buf = Vec::new();
        let len = read_journal_tail(&file, 100, size, 200, &mut buf).unwrap();
        assert_eq!(len, 200 + TAIL_ZEROS);
        assert!(buf[..200].iter().all(|b| *b == 7) && all_zero(&buf[200..len]));
        // Less known than is there (another store appended): read on, the same stop.
        let len = read_journal_tail(&file, 100, size, 0, &mut buf).unwrap();
        assert_eq!(len, TAIL_ZEROS + 2 * TAIL_ZEROS);
        assert!(buf[..200].iter().all(|b| *b == 7) && all_zero(&buf[200..len]));
        // 20 KiB of data: read on until it ends in enough zeros.
        file.write_all_at(&[9u8; 20 << 10], 100).unwrap();
        let len = read_journal_tail(&file, 100, size, 200, &mut buf).unwrap();
        assert!(len >= (20 << 10) + TAIL_ZEROS, "{len}");
        assert!(len < 96 << 10, "{len}");
        assert!(buf[..20 << 10].iter().all(|b| *b == 9));
        // Data up to the end of the file: read to the end.
        file.write_all_at(&[5u8; 100], size - 100).unwrap();
        let len = read_journal_tail(&file, size - 300, size, 200, &mut buf).unwrap();
        assert_eq!(len, 300);
        assert!(buf[200..300].iter().all(|b| *b == 5));
    }

    #[test]
    fn the_last_nonzero_byte_is_found_at_any_position() {
        // Past 512 bytes too: whole runs of eight blocks are looked through first.
        for len in [
            0usize, 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 200, 300, 511, 512, 513, 1023, 1024,
            1100, 4160,
        ] {
            assert_eq!(last_nonzero(&vec![0; len]), None);
            assert!(all_zero(&vec![0; len]));
            for at in 0..len {
                let mut b = vec![0u8; len];
                b[at] = 1;
                if at > 0 {
                    b[at / 2] = 7;
                }
                assert_eq!(last_nonzero(&b), Some(at), "len {len} at {at}");
                let mut one = vec![0u8; len];
                one[at] = 0x80;
                assert!(!all_zero(&one), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn a_read_keeps_every_byte_up_to_the_last_piece_with_data_and_one_piece_of_zeros() {
        const PIECE: usize = 64 << 10;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        // Data at the start, in the third piece, and nothing after it for two pieces
        // and a half.
        let mut content = vec![0u8; 5 * PIECE + PIECE / 2];
        content[..100].fill(7);
        content[2 * PIECE + 5] = 1;
        std::fs::write(&path, &content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        for start in [0usize, 8, 96, PIECE + 8, 2 * PIECE, 3 * PIECE] {
            for size in [None, Some(content.len() as u64)] {
                let got = read_journal_at(&file, start as u64, size).unwrap();
                let from = &content[start..];
                // Pieces start at `start`; the last one with data is kept whole, and the
                // zeros read after it are kept up to one piece.
                let last_piece_end =
                    last_nonzero(from).map_or(0, |i| ((i / PIECE + 1) * PIECE).min(from.len()));
                let want = (last_piece_end + PIECE).min(from.len());
                assert_eq!(got.len(), want, "start {start} size {size:?}");
                assert_eq!(got[..], from[..want], "start {start} size {size:?}");
            }
        }
    }

    #[test]
    fn thresholds_and_growth() {
        assert_eq!(threshold(0, None), 1 << 20);
        assert_eq!(threshold(100 << 20, None), DEFAULT_MAX_BYTES);
        assert_eq!(threshold(100 << 20, Some(10)), 10);
        assert_eq!(grown(FIRST_CHUNK, FIRST_CHUNK + 1), 2 * FIRST_CHUNK);
        assert_eq!(grown(64 << 20, (64 << 20) + 1), (64 << 20) + MAX_CHUNK);
        assert_eq!(grown(FIRST_CHUNK, 10 * FIRST_CHUNK), 10 * FIRST_CHUNK);
    }

    /// A journal of appends under the protocol in which writers append under the
    /// writers' lock and flush after releasing it (docs/design.md, "Journal mode"):
    /// record `i` claims the durable end published when it was appended, and a
    /// record is acknowledged only once a published durable end covers it.
    struct Window {
        /// The journal as the page cache holds it after all the appends.
        bytes: Vec<u8>,
        /// `bounds[i]`: the offset of record `i` (generation 5 + i); the last is the end.
        bounds: Vec<usize>,
        /// The journal after the first `v` appends, for each `v` (a page's older versions).
        versions: Vec<Vec<u8>>,
    }

    impl Window {
        /// `lens`: the bodies' lengths; `claims[i]`: the record index whose offset
        /// record `i` claims durable (at most `i`).
        fn new(lens: &[usize], claims: &[usize]) -> Window {
            let mut bytes = Header::new(4, 9).encode().to_vec();
            let mut bounds = vec![HEADER_LEN];
            for (i, len) in lens.iter().enumerate() {
                bytes.extend(claiming_record(
                    5 + i as u64,
                    bounds[claims[i]],
                    &"x".repeat(*len),
                ));
                bounds.push(bytes.len());
            }
            let size = bytes.len() + 512;
            let versions = bounds
                .iter()
                .map(|&b| {
                    let mut v = bytes[..b].to_vec();
                    v.resize(size, 0);
                    v
                })
                .collect();
            bytes.resize(size, 0);
            Window {
                bytes,
                bounds,
                versions,
            }
        }

        /// What a power loss leaves when everything before `durable` had been
        /// flushed: each page from there on as of some append (`page_versions`,
        /// taken modulo the number of versions; the bytes before `durable` are those
        /// flushed).
        fn crash(&self, durable: usize, page: usize, page_versions: &[u8]) -> Vec<u8> {
            let mut disk = self.bytes.clone();
            let first = durable / page;
            for (j, p) in (first..self.bytes.len().div_ceil(page)).enumerate() {
                let v = page_versions[j % page_versions.len()] as usize % self.versions.len();
                let from = (p * page).max(durable);
                let to = ((p + 1) * page).min(disk.len());
                disk[from..to].copy_from_slice(&self.versions[v][from..to]);
            }
            disk
        }

        /// The reader's verdict on `disk` must keep every one of the first `acked`
        /// records, report no damage, and keep only records that were written, in
        /// order; the long-lived store's check from each kept record on agrees.
        fn check(&self, disk: &[u8], acked: usize) -> Result<usize, String> {
            let s = scan(disk, HEADER_LEN, 5);
            if let Some(why) = s.damage {
                return Err(format!("damage reported: {why}"));
            }
            let kept = s.records.len();
            if kept < acked {
                return Err(format!("{kept} records kept, {acked} acknowledged"));
            }
            if disk[HEADER_LEN..self.bounds[kept]] != self.bytes[HEADER_LEN..self.bounds[kept]] {
                return Err("a kept record differs from the one written".into());
            }
            for from in 0..kept {
                let at = self.bounds[from];
                let t = scan_at(
                    &disk[at..],
                    at as u64,
                    self.bounds[from + 1] - at,
                    6 + from as u64,
                    None,
                );
                if t.damage.is_some() || from + 1 + t.records.len() != kept {
                    return Err(format!(
                        "read from record {from} on: {:?}, {} more records",
                        t.damage,
                        t.records.len()
                    ));
                }
            }
            Ok(kept)
        }
    }

    #[test]
    fn the_window_model_catches_an_acknowledgement_past_a_lost_record() {
        // Record 6's flush failed (its page stayed as before: zeros) and record 7 was
        // acknowledged anyway, claiming 7's offset (a writer that did not wait for its
        // predecessor's durable end): the reader reports damage, and 7 is lost.
        let w = Window::new(&[40, 40, 40], &[0, 1, 2]);
        let mut disk = w.bytes.clone();
        disk[w.bounds[1]..w.bounds[2]].fill(0);
        assert!(w.check(&disk, 3).is_err());
        // Claiming only 6's offset (what it knew durable), it was never acknowledged
        // (the durable end stopped before 6): a torn tail, 6 and 7 dropped.
        let w = Window::new(&[40, 40, 40], &[0, 1, 1]);
        let mut disk = w.bytes.clone();
        disk[w.bounds[1]..w.bounds[2]].fill(0);
        assert_eq!(w.check(&disk, 1), Ok(1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Appends whose flushes complete later and in any grouping (the durable end
        /// published after each append moves forward by any number of records, never
        /// past the append), a power loss at the end that keeps every page past the
        /// published durable end as of any append (none of it, all of it, an older
        /// version; a failed flush's pages, marked clean unwritten, are one case): the
        /// reader keeps every acknowledged record and reports no damage.
        #[test]
        fn a_power_loss_over_unflushed_appends_keeps_every_acknowledged_record(
            lens in proptest::collection::vec(1usize..300, 1..8),
            moves in proptest::collection::vec(0usize..3, 8),
            last_move in 0usize..3,
            page_versions in proptest::collection::vec(proptest::num::u8::ANY, 1..48),
            page in proptest::prop_oneof![proptest::strategy::Just(16usize), proptest::strategy::Just(64), proptest::strategy::Just(512)],
        ) {
            let mut published = 0;
            let mut claims = Vec::new();
            for (i, m) in moves.iter().take(lens.len()).enumerate() {
                claims.push(published);
                published = (published + m).min(i + 1);
            }
            let acked = (published + last_move).min(lens.len());
            let w = Window::new(&lens, &claims);
            let disk = w.crash(w.bounds[acked], page, &page_versions);
            let kept = w.check(&disk, acked);
            proptest::prop_assert!(kept.is_ok(), "{kept:?}");
        }
    }

    /// The pointer tokens are the ones the formatting machinery and a `char` search
    /// wrote: indices in decimal, `~` and `/` escaped, everything else as it is.
    #[test]
    fn pointer_tokens_are_written_as_before() {
        for i in [0, 1, 9, 10, 99, 100, 12_345, u32::MAX as usize, usize::MAX] {
            let mut at = String::from("/a");
            push_index(&mut at, i);
            assert_eq!(at, format!("/a/{i}"));
        }
        for token in [
            "",
            "k",
            "~",
            "/",
            "a~b/c",
            "~0~1",
            "é/😀~",
            "no escapes at all, long",
        ] {
            let mut at = String::from("/x");
            push_token(&mut at, token);
            assert_eq!(
                at,
                format!("/x/{}", token.replace('~', "~0").replace('/', "~1"))
            );
        }
    }
}
