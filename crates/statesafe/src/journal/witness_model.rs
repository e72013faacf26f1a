//! A pure model of journal commits flushed outside the writers' lock ("witness
//! descriptors", issue #16), under Linux's writeback-error semantics, checked by
//! proptest against the real record format and the real reader ([`encode_record`],
//! [`scan`], [`scan_at`]).
//!
//! **The protocol modelled.** Writers are processes. Each holds a descriptor F of the
//! journal, opened with the writers' lock held, and remembers `E_open(F)`, the
//! journal's end when it opened F. An append (under the lock) writes one record at
//! the end (found as a reader finds it, zeroing a torn tail first) claiming `durable`
//! = the largest published durable end D of this journal (D is the maximum of one slot
//! per writer, a new journal's slots holding its header's end). The flush
//! (`fdatasync(F)`) runs outside the lock, so it interleaves with other writers'
//! appends and flushes. The writer acknowledges its record iff its flush returned
//! success, F never reported an error (a failed flush poisons and closes F: the
//! commit is `OutcomeUnknown`, its record stays in the file) and D >= `E_open(F)`;
//! then it may publish its record's end in its slot. A writer may append again before
//! it flushes (threads sharing one descriptor: one flush covers all its records, a
//! failed one fails them all). A writer that gave up waiting
//! (or whose flush failed) takes the lock and compacts: a durable snapshot of what
//! the page cache reads (atomic here), acknowledged iff its own record is in it; the
//! journal then starts over (a new file, a new error sequence, new slots; writers
//! with a commit pending in the old file go on with it there).
//!
//! **What the model assumes of the kernel** (Linux >= 4.13 on ext4, xfs, btrfs;
//! sources: `/work/shared/PROTOCOL_NOTES.md` ("fsyncgate": a failed flush may have
//! dropped the pages), Linux's `Documentation/filesystems/vfs.rst` (writeback errors
//! are recorded in the mapping's `errseq_t` and reported by `fsync` to each open file
//! description once) and `lib/errseq.c`):
//!
//! - the file is pages, each with a cache copy (what reads return) and a durable copy
//!   (what a power loss leaves), and a dirty bit;
//! - a flush writes back every page dirty at its start; background writeback writes
//!   any dirty page at any moment. A successful write-back makes the page's durable
//!   copy the cache copy; a failed one marks the page clean WITHOUT updating its
//!   durable copy (the data is lost, the cache still shows it) and sets the file's
//!   `errseq_t`; a clean page whose write-back failed may later be evicted (memory
//!   pressure; xfs discards such a page at once when it cannot map it), and then
//!   reads return its durable copy;
//! - the `errseq_t` is `lib/errseq.c`'s: a counter, an error and a SEEN flag; `set`
//!   increments the counter only when the previous value was SEEN; a flush returns an
//!   error iff the value differs from the descriptor's sample
//!   (`errseq_check_and_advance`, which marks it SEEN and advances the sample: an
//!   error is reported once per descriptor). Two versions of `errseq_sample` at open:
//!   the first one ([`Kernel::V4_13`]: marks the value SEEN and returns it, so a
//!   descriptor opened after a failure is never told of it; also what any kernel does
//!   once the inode was evicted with no descriptor open) and today's
//!   ([`Kernel::Mainline`], "errseq: Always report a writeback error once": returns 0
//!   while the latest error is unseen, so the new descriptor is told);
//! - a flush is one step (write-back of its pages, then the error check); a real
//!   flush that overlaps other steps sees more errors, never fewer successes;
//! - a power loss leaves each clean page's durable copy, and each dirty page's durable
//!   copy, cache copy, or a mix of their 8-byte pieces (torn).
//!
//! **What is checked**, at every step (a power loss may come at any moment): the
//! reader's verdict on what the power loss leaves reports no damage, every record it
//! keeps is one that was appended there, and the snapshot plus the kept records holds
//! every acknowledged commit; the page cache (what a reader sees before any power
//! loss) reads without damage and holds every acknowledged commit too. At the end,
//! the long-lived store's check (`scan_at` from each kept record on) agrees. Three
//! wrong rules are each shown caught, by a fixed schedule and by the random search:
//! acknowledging without D >= `E_open(F)`, zeroing one's record after a failed
//! flush, and claiming one's own offset durable.
//!
//! **What it found.** The protocol as the brief states it (the witness condition
//! D >= `E_open(F)` checked after the flush) holds while the page cache keeps what
//! it was given. It does not when a page whose write-back failed is evicted: the
//! cache then reads a torn tail below records still pending, the next writer zeroes
//! that tail and appends over it, and a pending writer whose flush succeeds (its
//! pages were rewritten, by others, with the zeros) finds D >= `E_open(F)` met by
//! the new records at the same offsets, and acknowledges a record that no longer
//! exists (`EVICTION_SCHEDULE` in the tests). Either of two fixes closes it in the
//! model: compact instead of reusing a torn tail's offsets ([`COMPACT_ON_TORN_TAIL`]),
//! or read one's record back before acknowledging ([`REREAD_BEFORE_ACK`]). The rule
//! as built on `main` ([`AS_BUILT`]: the condition checked before the append, with
//! the lock held) is not affected: a descriptor appends only once everything before
//! its open is proven, and its flush then reports any loss after its open.
//!
//! Not modelled: a second power loss after the first (the next writer zeroing the
//! torn tail and appending, which the real tests cover), a process killed between
//! its steps other than by never taking the next one, a compaction's own steps
//! (atomic here; the ordinary protocol's tests cover them), slots shared by two
//! processes (a smaller end over a larger one: only more waiting), the lock file's
//! slots after a power loss, and `main`'s rule for kernels without errseq.

use super::{HEADER_LEN, Header, Kind, RECORD_HEAD, Scan, encode_record, padded, scan, scan_at};

/// The snapshot's generation when the model starts (the first record is this + 1).
const FOLLOWS: u64 = 4;
/// The journal's length in the model (preallocated zeros past the header).
const SIZE: usize = 4096;
/// At most this many appends in one schedule.
const MAX_APPENDS: usize = 12;

/// Which `errseq_sample` the kernel has (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// 4.13 to 4.15: a new descriptor is never told of an earlier error.
    V4_13,
    /// 4.16 and later: a new descriptor is told of an error nobody has seen.
    Mainline,
}

/// The rules a writer follows: the protocol's, one of two fixes of it, or one of
/// three wrong ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rules {
    /// Acknowledge only when a published durable end reaches `E_open(F)`.
    ack_needs_witness: bool,
    /// After a failed flush, zero one's record in the file (best effort, no flush).
    zero_after_failed_flush: bool,
    /// Claim one's own offset durable (the rule of flushing under the lock).
    claim_own_start: bool,
    /// Fix 1: a writer that finds a torn tail in the page cache compacts instead of
    /// zeroing it and appending in its place (offsets are never reused in a journal).
    compact_on_torn_tail: bool,
    /// Fix 2: before acknowledging, the writer reads its record back and finds it
    /// unchanged (its offsets may have been reused after the cache lost a record
    /// before it).
    ack_rereads_record: bool,
    /// As built on `main` (commit 736736b, `journal/durable.rs`): the witness
    /// condition D >= `E_open(F)` is checked before appending (with the lock held;
    /// an unproven descriptor waits, then its commit compacts), and a record claims
    /// the larger of D and the end its writer's last acknowledged flush through F
    /// proved.
    prove_before_append: bool,
}

/// The protocol as specified (issue #16).
const PROTOCOL: Rules = Rules {
    ack_needs_witness: true,
    zero_after_failed_flush: false,
    claim_own_start: false,
    compact_on_torn_tail: false,
    ack_rereads_record: false,
    prove_before_append: false,
};

/// The protocol with fix 1.
const COMPACT_ON_TORN_TAIL: Rules = Rules {
    compact_on_torn_tail: true,
    ..PROTOCOL
};

/// The protocol with fix 2.
const REREAD_BEFORE_ACK: Rules = Rules {
    ack_rereads_record: true,
    ..PROTOCOL
};

/// The protocol as built on `main`.
const AS_BUILT: Rules = Rules {
    prove_before_append: true,
    ..PROTOCOL
};

/// Linux's `errseq_t` (`lib/errseq.c`): counter, whether an error was ever set, and
/// whether the latest value was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Errseq {
    counter: u32,
    error: bool,
    seen: bool,
}

impl Errseq {
    /// `errseq_set`: records an error, counting it only if the previous one was seen.
    fn set(&mut self) {
        *self = Errseq {
            counter: self.counter + u32::from(self.seen),
            error: true,
            seen: false,
        };
    }

    /// `errseq_sample`, at `open`.
    fn sample(&mut self, kernel: Kernel) -> Errseq {
        match kernel {
            Kernel::V4_13 => {
                if *self != Errseq::default() {
                    self.seen = true;
                }
                *self
            }
            Kernel::Mainline if self.seen => *self,
            Kernel::Mainline => Errseq::default(),
        }
    }

    /// `errseq_check_and_advance`, at the end of `fdatasync`: whether it fails.
    fn check_and_advance(&mut self, since: &mut Errseq) -> bool {
        if *self == *since {
            return false;
        }
        self.seen = true;
        *since = *self;
        true
    }
}

/// One journal file: the pages' two copies, and what was written where.
#[derive(Debug, Clone)]
struct Journal {
    cache: Vec<u8>,
    durable: Vec<u8>,
    dirty: Vec<bool>,
    errseq: Errseq,
    /// The generation of the snapshot this journal follows.
    follows: u64,
    /// Each writer's published durable end in this journal.
    slots: Vec<u64>,
    /// Every append: (record id, offset, bytes).
    appended: Vec<(usize, usize, Vec<u8>)>,
}

impl Journal {
    fn new(follows: u64, writers: usize, page: usize) -> Journal {
        let mut bytes = Header::new(follows, 9).encode().to_vec();
        bytes.resize(SIZE, 0);
        Journal {
            cache: bytes.clone(),
            durable: bytes,
            dirty: vec![false; SIZE / page],
            errseq: Errseq::default(),
            follows,
            slots: vec![HEADER_LEN as u64; writers],
            appended: Vec::new(),
        }
    }

    /// D: the largest published durable end.
    fn published(&self) -> u64 {
        self.slots
            .iter()
            .copied()
            .max()
            .unwrap_or(HEADER_LEN as u64)
    }

    /// A `pwrite` of `bytes` at `at`: the cache changes, its pages are dirty.
    fn write(&mut self, at: usize, bytes: &[u8], page: usize) {
        self.cache[at..at + bytes.len()].copy_from_slice(bytes);
        for p in at / page..(at + bytes.len()).div_ceil(page) {
            self.dirty[p] = true;
        }
    }

    /// The write-back of page `p`: its durable copy becomes the cache's, or (failed)
    /// it is lost and the error is recorded; either way the page is clean.
    fn write_back(&mut self, p: usize, page: usize, fails: bool) {
        let r = p * page..(p + 1) * page;
        if fails {
            self.errseq.set();
        } else {
            self.durable[r.clone()].copy_from_slice(&self.cache[r]);
        }
        self.dirty[p] = false;
    }

    /// The records that `bytes` (this journal's) hold from its start, as the reader
    /// keeps them, with their ids: an error if one was never appended there.
    fn kept(&self, bytes: &[u8], s: &Scan) -> Result<Vec<usize>, String> {
        let mut at = HEADER_LEN;
        let mut ids = Vec::new();
        for r in &s.records {
            let size = RECORD_HEAD + padded(r.body.end - at - RECORD_HEAD) + 8;
            let found = self
                .appended
                .iter()
                .find(|(_, a, b)| *a == at && b[..] == bytes[at..at + size]);
            match found {
                Some((id, _, _)) => ids.push(*id),
                None => {
                    return Err(format!(
                        "the reader kept a record at offset {at} that was never appended there"
                    ));
                }
            }
            at += size;
        }
        Ok(ids)
    }
}

/// A writer's descriptor of one journal (`epoch`: which one).
#[derive(Debug, Clone)]
struct Fd {
    epoch: usize,
    since: Errseq,
    e_open: u64,
    /// The end its writer's last acknowledged flush through it proved durable.
    proven: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Appended, not flushed yet.
    Appended,
    /// Its flush succeeded: acknowledged once D reaches `E_open`, or compacts.
    Flushed,
    /// Its flush failed: `OutcomeUnknown`, or it compacts.
    Failed,
}

/// A writer's commits in progress: their records, the journal they are in.
#[derive(Debug, Clone)]
struct Pending {
    /// Its records, in order: more than one when the writer appended again before
    /// flushing (threads sharing a descriptor: one flush covers them all).
    ids: Vec<usize>,
    epoch: usize,
    /// The end of its last record.
    end: u64,
    state: State,
}

#[derive(Debug, Clone, Default)]
struct Writer {
    /// `None`: closed (never opened, poisoned by a failed flush, or its journal was
    /// replaced by this writer's compaction).
    fd: Option<Fd>,
    pending: Option<Pending>,
}

/// One step of a schedule; a step that does not apply in the state reached is skipped.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Writer opens a descriptor of the journal (with the lock held), closing its
    /// previous one (a commit whose flush failed is abandoned: `OutcomeUnknown`).
    Open(usize),
    /// Writer appends a record with a body of this length (under the lock).
    Append(usize, usize),
    /// Writer's `fdatasync`: the k-th page dirty at its start fails if bit k is set.
    Flush(usize, u16),
    /// Writer acknowledges if its rule allows, and publishes its end if `true`.
    Ack(usize, bool),
    /// Writer gives up waiting (or its flush failed) and compacts.
    Compact(usize),
    /// Writer, its descriptor unproven after a wait, commits by compacting.
    CommitByCompacting(usize),
    /// Background write-back of the (n mod count)-th dirty page of any journal,
    /// failing if `true`.
    WriteBack(u8, bool),
    /// Eviction of the (n mod count)-th clean page whose cache differs from disk.
    Evict(u8),
    /// Writer's next step in its commit: open if it has no descriptor (or its flush
    /// failed and it does not compact), else append (body length), flush (failing
    /// pages), acknowledge (publishing or not) or compact (`true`: it gives up).
    Next(usize, usize, u16, bool, bool),
}

/// The whole system: journals (the last is current), the snapshot, the writers.
#[derive(Debug, Clone)]
struct Model {
    rules: Rules,
    kernel: Kernel,
    page: usize,
    journals: Vec<Journal>,
    /// The ids of the records the snapshot holds, in generation order.
    snapshot: Vec<usize>,
    writers: Vec<Writer>,
    acked: Vec<usize>,
    appends: usize,
    /// What happened, for a failure's message.
    log: Vec<String>,
}

impl Model {
    fn new(rules: Rules, kernel: Kernel, page: usize, writers: usize) -> Model {
        Model {
            rules,
            kernel,
            page,
            journals: vec![Journal::new(FOLLOWS, writers, page)],
            snapshot: Vec::new(),
            writers: vec![Writer::default(); writers],
            acked: Vec::new(),
            appends: 0,
            log: Vec::new(),
        }
    }

    fn current(&self) -> usize {
        self.journals.len() - 1
    }

    /// What a writer holding the lock reads of the current journal (the page cache):
    /// an error if the reader's rule calls it damaged.
    fn read(&self) -> Result<Scan, String> {
        let j = &self.journals[self.current()];
        let s = scan(&j.cache, HEADER_LEN, j.follows + 1);
        match &s.damage {
            Some(why) => Err(format!("the page cache reads as damaged: {why}")),
            None => Ok(s),
        }
    }

    /// A compaction (with the lock held, `s` the page cache's scan): a snapshot of what
    /// the cache reads, plus the commit `id` if given, then a new journal. Returns the
    /// snapshot's generation.
    fn compact(&mut self, s: &Scan, id: Option<usize>) -> Result<u64, String> {
        let j = &self.journals[self.current()];
        let ids = j.kept(&j.cache, s)?;
        self.snapshot.extend(ids);
        self.snapshot.extend(id);
        let follows = FOLLOWS + self.snapshot.len() as u64;
        let (n, page) = (self.writers.len(), self.page);
        self.journals.push(Journal::new(follows, n, page));
        Ok(follows)
    }

    /// Applies one step; `Err` when the reader finds damage in the page cache.
    fn apply(&mut self, op: Op) -> Result<(), String> {
        let n = self.writers.len();
        let page = self.page;
        match op {
            Op::Next(w, len, fails, publish, give_up) => {
                let w = w % n;
                let writer = &self.writers[w];
                let op = match (&writer.fd, writer.pending.as_ref().map(|p| p.state)) {
                    (_, Some(State::Failed)) if !give_up => Op::Open(w),
                    (None, None) => Op::Open(w),
                    (Some(fd), None) if self.rules.prove_before_append && give_up => {
                        if self.journals[self.current()].published() < fd.e_open {
                            Op::CommitByCompacting(w)
                        } else {
                            Op::Append(w, len)
                        }
                    }
                    (Some(_), None) => Op::Append(w, len),
                    (_, Some(State::Appended)) if give_up => Op::Append(w, len),
                    (_, Some(State::Appended)) => Op::Flush(w, fails),
                    (_, Some(State::Flushed)) if !give_up => Op::Ack(w, publish),
                    (_, Some(_)) => Op::Compact(w),
                };
                return self.apply(op);
            }
            Op::Open(w) => {
                let w = w % n;
                if matches!(&self.writers[w].pending, Some(p) if p.state != State::Failed) {
                    return Ok(());
                }
                let e_open = self.read()?.end as u64;
                let cur = self.current();
                let since = self.journals[cur].errseq.sample(self.kernel);
                self.writers[w] = Writer {
                    fd: Some(Fd {
                        epoch: cur,
                        since,
                        e_open,
                        proven: e_open,
                    }),
                    pending: None,
                };
                self.log.push(format!("w{w} opens F (E_open {e_open})"));
            }
            Op::Append(w, len) => {
                let w = w % n;
                let cur = self.current();
                let writer = &self.writers[w];
                let open_here = writer.fd.as_ref().is_some_and(|f| f.epoch == cur);
                let busy = writer
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.state != State::Appended);
                if busy || !open_here || self.appends == MAX_APPENDS {
                    return Ok(());
                }
                let fd = writer.fd.as_ref().expect("invariant: open here");
                if self.rules.prove_before_append && self.journals[cur].published() < fd.e_open {
                    return Ok(());
                }
                let own = if self.rules.prove_before_append {
                    fd.proven
                } else {
                    0
                };
                let s = self.read()?;
                if self.rules.compact_on_torn_tail && s.dirty_to > s.end {
                    // The commit is the compaction's snapshot: acknowledged with it.
                    let id = self.appends;
                    self.appends += 1;
                    self.compact(&s, Some(id))?;
                    self.acked.push(id);
                    if self.writers[w].pending.is_none() {
                        self.writers[w] = Writer::default();
                    }
                    self.log.push(format!(
                        "w{w} finds a torn tail at [{}, {}) and commits r{id} by compacting",
                        s.end, s.dirty_to
                    ));
                    return Ok(());
                }
                let j = &mut self.journals[cur];
                let generation = j.follows + s.records.len() as u64 + 1;
                let claim = if self.rules.claim_own_start {
                    s.end as u64
                } else {
                    j.published().max(own)
                };
                let meta = format!("{{\"durable\":{claim}}}");
                // Each record's bytes are its own (a real one has its time and writer).
                let body = format!("r{}:{}", self.appends, "x".repeat(len));
                let record = encode_record(
                    generation,
                    Kind::Patch,
                    Some(meta.as_bytes()),
                    body.as_bytes(),
                )
                .expect("invariant: a short body encodes");
                if s.dirty_to > s.end {
                    j.write(s.end, &vec![0; s.dirty_to - s.end], page);
                }
                j.write(s.end, &record, page);
                let id = self.appends;
                self.appends += 1;
                j.appended.push((id, s.end, record.clone()));
                let end = (s.end + record.len()) as u64;
                let p = self.writers[w].pending.get_or_insert(Pending {
                    ids: Vec::new(),
                    epoch: cur,
                    end,
                    state: State::Appended,
                });
                p.ids.push(id);
                p.end = end;
                self.log.push(format!(
                    "w{w} appends r{id} (generation {generation}) at [{}, {end}) claiming {claim}",
                    s.end
                ));
            }
            Op::Flush(w, fails) => {
                let w = w % n;
                let writer = &mut self.writers[w];
                let (Some(fd), Some(p)) = (writer.fd.as_mut(), writer.pending.as_mut()) else {
                    return Ok(());
                };
                if p.state != State::Appended {
                    return Ok(());
                }
                let j = &mut self.journals[fd.epoch];
                let dirty: Vec<usize> = (0..j.dirty.len()).filter(|&q| j.dirty[q]).collect();
                let mut failed = Vec::new();
                for (k, &q) in dirty.iter().enumerate() {
                    let fail = (fails >> (k % 16)) & 1 == 1;
                    if fail {
                        failed.push(q);
                    }
                    j.write_back(q, page, fail);
                }
                let error = j.errseq.check_and_advance(&mut fd.since);
                self.log.push(format!(
                    "w{w} flushes {:?}: pages {dirty:?} written, {failed:?} failed: {}",
                    p.ids,
                    if error { "error" } else { "success" }
                ));
                if error {
                    p.state = State::Failed;
                    let (ids, epoch) = (p.ids.clone(), p.epoch);
                    writer.fd = None;
                    if self.rules.zero_after_failed_flush {
                        let j = &mut self.journals[epoch];
                        for id in ids {
                            let (_, at, bytes) = j
                                .appended
                                .iter()
                                .find(|a| a.0 == id)
                                .cloned()
                                .expect("invariant: a pending record was appended");
                            j.write(at, &vec![0; bytes.len()], page);
                            self.log.push(format!("w{w} zeroes r{id}"));
                        }
                    }
                } else {
                    p.state = State::Flushed;
                }
            }
            Op::Ack(w, publish) => {
                let w = w % n;
                let writer = &mut self.writers[w];
                let (Some(fd), Some(p)) = (writer.fd.as_mut(), writer.pending.as_ref()) else {
                    return Ok(());
                };
                let j = &mut self.journals[p.epoch];
                let d = j.published();
                if p.state != State::Flushed || (self.rules.ack_needs_witness && d < fd.e_open) {
                    return Ok(());
                }
                let changed = |id: &usize| {
                    let (_, at, bytes) = j
                        .appended
                        .iter()
                        .find(|a| a.0 == *id)
                        .expect("invariant: a pending record was appended");
                    j.cache[*at..*at + bytes.len()] != bytes[..]
                };
                if self.rules.ack_rereads_record && p.ids.iter().any(changed) {
                    self.log.push(format!(
                        "w{w} reads {:?} back changed: no acknowledgement",
                        p.ids
                    ));
                    return Ok(());
                }
                if publish {
                    j.slots[w] = j.slots[w].max(p.end);
                }
                fd.proven = p.end;
                self.acked.extend(&p.ids);
                self.log.push(format!(
                    "w{w} acknowledges {:?} (D {d}, E_open {}){}",
                    p.ids,
                    fd.e_open,
                    if publish { ", publishes its end" } else { "" }
                ));
                writer.pending = None;
            }
            Op::CommitByCompacting(w) => {
                let w = w % n;
                if self.writers[w].pending.is_some() || self.appends == MAX_APPENDS {
                    return Ok(());
                }
                let s = self.read()?;
                let id = self.appends;
                self.appends += 1;
                let follows = self.compact(&s, Some(id))?;
                self.acked.push(id);
                self.writers[w] = Writer::default();
                self.log.push(format!(
                    "w{w} commits r{id} by compacting (snapshot of generation {follows})"
                ));
            }
            Op::Compact(w) => {
                let w = w % n;
                let Some(p) = self.writers[w].pending.clone() else {
                    return Ok(());
                };
                if p.state == State::Appended {
                    return Ok(());
                }
                let s = self.read()?;
                let follows = self.compact(&s, None)?;
                let (kept, lost): (Vec<usize>, Vec<usize>) =
                    p.ids.iter().partition(|id| self.snapshot.contains(id));
                self.acked.extend(&kept);
                self.writers[w] = Writer::default();
                self.log.push(format!(
                    "w{w} compacts: snapshot of generation {follows}, acknowledging {kept:?} in it, not {lost:?}"
                ));
            }
            Op::WriteBack(pick, fails) => {
                let dirty: Vec<(usize, usize)> = (0..self.journals.len())
                    .flat_map(|e| {
                        let d = &self.journals[e].dirty;
                        (0..d.len()).filter(|&q| d[q]).map(move |q| (e, q))
                    })
                    .collect();
                if dirty.is_empty() {
                    return Ok(());
                }
                let (e, q) = dirty[pick as usize % dirty.len()];
                self.journals[e].write_back(q, page, fails);
                self.log.push(format!(
                    "background write-back of page {q} of journal {e} {}",
                    if fails { "fails" } else { "succeeds" }
                ));
            }
            Op::Evict(pick) => {
                let cur = self.current();
                let j = &mut self.journals[cur];
                let stale: Vec<usize> = (0..j.dirty.len())
                    .filter(|&q| {
                        let r = q * page..(q + 1) * page;
                        !j.dirty[q] && j.cache[r.clone()] != j.durable[r]
                    })
                    .collect();
                if stale.is_empty() {
                    return Ok(());
                }
                let q = stale[pick as usize % stale.len()];
                let r = q * page..(q + 1) * page;
                let old = j.durable[r.clone()].to_vec();
                j.cache[r].copy_from_slice(&old);
                self.log
                    .push(format!("page {q} (write-back failed) is evicted"));
            }
        }
        Ok(())
    }

    /// What a power loss now leaves of the current journal: `choice(page)` picks,
    /// for each dirty page, its durable copy (0), its cache copy (1) or a mix of their
    /// 8-byte pieces (any other value, its bits picking the pieces).
    fn power_loss(&self, choice: impl Fn(usize) -> u64) -> Vec<u8> {
        let j = &self.journals[self.current()];
        let mut disk = j.durable.clone();
        for (q, _) in j.dirty.iter().enumerate().filter(|(_, d)| **d) {
            let c = choice(q);
            for (k, piece) in (q * self.page..(q + 1) * self.page).step_by(8).enumerate() {
                let from_cache = match c {
                    0 => false,
                    1 => true,
                    _ => c.rotate_left(k as u32 % 64) & 1 == 1,
                };
                if from_cache {
                    disk[piece..piece + 8].copy_from_slice(&j.cache[piece..piece + 8]);
                }
            }
        }
        disk
    }

    /// The reader's verdict on `disk` (the current journal after a power loss): no
    /// damage, only records appended there, every acknowledged one in the snapshot or
    /// kept; and the same of the page cache (a reader before the power loss). With
    /// `long_lived`, also the check from each kept record on. Returns how many
    /// records it keeps.
    fn check(&self, disk: &[u8], long_lived: bool) -> Result<usize, String> {
        let j = &self.journals[self.current()];
        let live = j.kept(&j.cache, &self.read()?)?;
        if let Some(id) = self
            .acked
            .iter()
            .find(|id| !self.snapshot.contains(id) && !live.contains(id))
        {
            return Err(format!(
                "acknowledged r{id} is not in what the page cache reads: {live:?}"
            ));
        }
        let s = scan(disk, HEADER_LEN, j.follows + 1);
        if let Some(why) = &s.damage {
            return Err(format!("the reader reports damage: {why}"));
        }
        let kept = j.kept(disk, &s)?;
        for id in &self.acked {
            if !self.snapshot.contains(id) && !kept.contains(id) {
                return Err(format!(
                    "acknowledged r{id} lost: the reader keeps {kept:?} after the snapshot's {:?}",
                    self.snapshot
                ));
            }
        }
        if long_lived {
            let mut at = HEADER_LEN;
            for (i, r) in s.records.iter().enumerate() {
                let next = at + RECORD_HEAD + padded(r.body.end - at - RECORD_HEAD) + 8;
                let t = scan_at(&disk[at..], at as u64, next - at, r.generation + 1, None);
                if t.damage.is_some() || i + 1 + t.records.len() != kept.len() {
                    return Err(format!(
                        "read from the record at {at} on: {:?}, {} more records",
                        t.damage,
                        t.records.len()
                    ));
                }
                at = next;
            }
        }
        Ok(kept.len())
    }
}

/// Runs `ops` from a fresh model, checking a power loss after every step (dirty
/// pages resolved by `crash`, cycled); the model reached, or what went wrong with
/// the steps that led there.
fn run(
    rules: Rules,
    kernel: Kernel,
    page: usize,
    writers: usize,
    ops: &[Op],
    crash: &[u64],
) -> Result<Model, String> {
    let mut m = Model::new(rules, kernel, page, writers);
    let fail = |m: &Model, why: String| {
        Err(format!(
            "{why}\n{kernel:?}, {page}-byte pages, {writers} writers, {rules:?}; the steps:\n  {}",
            m.log.join("\n  ")
        ))
    };
    for (step, op) in ops.iter().enumerate() {
        if let Err(why) = m.apply(*op) {
            return fail(&m, why);
        }
        let disk = m.power_loss(|q| crash[(step * 7 + q) % crash.len()]);
        if let Err(why) = m.check(&disk, step + 1 == ops.len()) {
            return fail(&m, format!("power loss after step {}: {why}", step + 1));
        }
    }
    Ok(m)
}

mod tests;
