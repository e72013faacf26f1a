//! Flushes after the writers' lock is released, and how a commit knows that every
//! record before its own is durable (issue 16; the argument is in `docs/design.md`,
//! "Journal mode", "Shared flushes").
//!
//! A journal commit appends its record with the writers' lock held, releases the lock,
//! and then flushes (`fdatasync`) through the descriptor that made the `pwrite`, so that
//! the flushes of several processes overlap and the device merges them. A commit is
//! acknowledged when
//!
//! - its own flush succeeded through a descriptor that never reported an error, and
//! - the journal is known durable up to the end it had when that descriptor was opened
//!   (`opened_end`): some flush published that end or a later one.
//!
//! Linux records a writeback error in the file's error sequence (errseq) and reports it
//! once to every open file description that sampled the sequence before it, at its next
//! flush. So a successful flush through a description opened when the journal ended at
//! `opened_end` proves durable every byte written after that open and before the flush
//! began (written back without error since the open, or written by this flush), and
//! the published end covers the bytes before. A description opened after another
//! process saw an error is never told of it: that is why a fresh descriptor first needs
//! the published end to reach its `opened_end` (with the writers' lock held, before it
//! appends: otherwise the commit compacts, and the new snapshot is durable whatever the
//! journal's pages hold).
//!
//! The published end lives in the lock file, past the lock record: [`SLOTS`] slots of
//! [`SLOT_LEN`] bytes, each naming the journal (device, inode, header checksum) and an
//! end, with a checksum; the durable end is the largest end any valid slot names for
//! this journal. A slot is only ever written after the flush that proves it; a torn or
//! foreign slot is ignored. Each lock-file description (each store) claims a slot of
//! its own ([`Slot::claim`]), so that no other process ever writes its slot: a smaller
//! end written over a larger one for the same journal would take away the only
//! witness of the later records. A description that finds none free publishes in the
//! shared slot, with the writers' lock held ([`Slot::Shared`]).

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{HEADER_LEN, Header, le64};
use crate::format;

/// Where the slots start in the lock file (the lock record takes the first 2,048
/// bytes; the slots start at the next page).
pub(crate) const REGION_AT: u64 = 4096;
/// How many slots: [`SHARED_SLOT`], and one for each of up to 63 lock-file
/// descriptions ([`Slot::claim`]).
pub(crate) const SLOTS: usize = 64;
/// The slot of the descriptions that could claim none ([`Slot::Shared`]).
const SHARED_SLOT: usize = 0;
/// One slot: magic, device, inode, header checksum, end, writer's pid, checksum.
pub(crate) const SLOT_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"SSDURAB1";

/// How long a writer with a fresh descriptor waits (with the lock held) for the
/// appenders before it to publish their flushes, before it compacts instead.
pub(crate) const PROVE_WAIT: Duration = Duration::from_millis(250);

/// Which journal a published end is for: its device and inode, and its header's
/// checksum (generations never repeat, so neither does a header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JournalId {
    pub dev: u64,
    pub ino: u64,
    pub header: u64,
}

impl JournalId {
    pub(crate) fn of(id: (u64, u64), header: &Header) -> JournalId {
        JournalId {
            dev: id.0,
            ino: id.1,
            header: le64(&header.encode()[24..32]),
        }
    }
}

/// Where a lock-file description publishes its journal's durable ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A slot this description holds an open file description lock on (Linux's
    /// `F_OFD_SETLK`, over the slot's bytes), for as long as it is open: no other
    /// description writes it, so its publications (made after the lock's release,
    /// one at a time in this process) never race another process's.
    Own(usize),
    /// Every slot taken (more than 63 stores of the file open at once, or a holder
    /// of other slots' locks), or no such locks here: [`SHARED_SLOT`], written only
    /// with the writers' lock held, so a commit flushes and publishes before it
    /// releases the lock.
    Shared,
}

impl Slot {
    /// Claims a free slot for the description `lock` (call once per description, with
    /// the writers' lock held: one `fstatfs` and one `fcntl`, more only when slots are
    /// taken), starting at one chosen by `pid` so that processes rarely try the same
    /// one. A
    /// lock another description holds (a live store's, or one a hostile holder of
    /// the lock file took) is passed over: the worst such a holder can do is leave
    /// every store [`Slot::Shared`], whose flushes are made with the lock held.
    ///
    /// On a network, cluster or user-space filesystem none is claimed: an NFS client
    /// (or Lustre's, or kAFS's) may send `flock` as a byte-range lock of the whole
    /// file, which a slot's lock held by another store would block (the writers' lock
    /// never taken while that store is open), and on some cluster filesystems
    /// byte-range locks are local to one node, so two nodes could claim the same slot
    /// (`sys::special_filesystem` lists them).
    pub(crate) fn claim(lock: &std::fs::File, pid: u32) -> Slot {
        if crate::sys::special_filesystem(lock).is_some() {
            return Slot::Shared;
        }
        let mine = SLOTS - 1;
        for i in 0..mine {
            let slot = 1 + (pid as usize + i) % mine;
            match crate::sys::try_lock_range(lock, slot_at(slot), SLOT_LEN as u64) {
                Ok(true) => return Slot::Own(slot),
                Ok(false) => {}
                Err(_) => break,
            }
        }
        Slot::Shared
    }

    /// Whether its publications may be made without the writers' lock.
    pub(crate) fn own(self) -> bool {
        matches!(self, Slot::Own(_))
    }

    fn index(self) -> usize {
        match self {
            Slot::Own(slot) => slot,
            Slot::Shared => SHARED_SLOT,
        }
    }
}

/// Where slot number `slot` starts in the lock file.
fn slot_at(slot: usize) -> u64 {
    REGION_AT + (slot * SLOT_LEN) as u64
}

fn encode_slot(id: JournalId, end: u64, pid: u32) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&id.dev.to_le_bytes());
    b[16..24].copy_from_slice(&id.ino.to_le_bytes());
    b[24..32].copy_from_slice(&id.header.to_le_bytes());
    b[32..40].copy_from_slice(&end.to_le_bytes());
    b[40..48].copy_from_slice(&u64::from(pid).to_le_bytes());
    let sum = format::checksum(&b[..56]);
    b[56..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// The end a valid slot names for `id` (`None`: torn, empty or another journal's).
fn decode_slot(b: &[u8], id: JournalId) -> Option<u64> {
    if &b[..8] != MAGIC || format::checksum(&b[..56]) != le64(&b[56..64]) {
        return None;
    }
    let named = JournalId {
        dev: le64(&b[8..16]),
        ino: le64(&b[16..24]),
        header: le64(&b[24..32]),
    };
    (named == id).then(|| le64(&b[32..40]))
}

/// The largest end published for `id` (0: none, or the region cannot be read).
pub(crate) fn published(lock: &std::fs::File, id: JournalId) -> u64 {
    let mut buf = [0u8; SLOTS * SLOT_LEN];
    let Ok(n) = lock.read_at(&mut buf, REGION_AT) else {
        return 0;
    };
    buf[..n - n % SLOT_LEN]
        .chunks_exact(SLOT_LEN)
        .filter_map(|s| decode_slot(s, id))
        .max()
        .unwrap_or(0)
}

/// Gives the lock file the space of every slot (zeros past its end, never over a
/// slot), so that a publication overwrites blocks the file has and needs none on a
/// full disk. Called with the writers' lock held, before a journal is started. A
/// publisher extending the file at that moment may see its slot zeroed, which only
/// makes a later writer wait or compact.
pub(crate) fn reserve(lock: &std::fs::File) -> std::io::Result<()> {
    let len = lock.metadata()?.len();
    let end = REGION_AT + (SLOTS * SLOT_LEN) as u64;
    if len >= end {
        return Ok(());
    }
    let from = len.max(REGION_AT);
    lock.write_all_at(&vec![0; (end - from) as usize], from)
}

/// The largest end published for any journal whose header's checksum is `header`,
/// whatever its device and inode (0: none). A witness that such a journal held
/// flushed records even after it was deleted: `Store::refuse_lost_journal`.
pub(crate) fn published_for_header(lock: &std::fs::File, header: u64) -> u64 {
    let mut buf = [0u8; SLOTS * SLOT_LEN];
    let Ok(n) = lock.read_at(&mut buf, REGION_AT) else {
        return 0;
    };
    published_for_header_in(&buf[..n], header)
}

/// [`published_for_header`] from the slots' bytes as read (from [`REGION_AT`]; the
/// writers' lock reads them with its record: [`crate::lock::Guard::published_for_header`]).
pub(crate) fn published_for_header_in(slots: &[u8], header: u64) -> u64 {
    slots[..slots.len() - slots.len() % SLOT_LEN]
        .chunks_exact(SLOT_LEN)
        .filter(|b| &b[..8] == MAGIC && le64(&b[24..32]) == header)
        .filter(|b| format::checksum(&b[..56]) == le64(&b[56..64]))
        .map(|b| le64(&b[32..40]))
        .max()
        .unwrap_or(0)
}

/// Publishes that `id` is durable up to `end`, in `slot` (the lock-file description's:
/// [`Slot::Shared`] only with the writers' lock held), naming process `pid` (this one:
/// the flushing descriptor's opener, [`super::cache::KeptJournal::pid`]). A slot
/// that cannot be written (torn, or left as it was) is never taken as proof: it only
/// makes a later writer wait or compact; but until a later publication covers `end`,
/// nothing witnesses that the journal held those records (`Store::refuse_deleted_journal`),
/// so the caller reports the error (see [`Pending::finish`]).
pub(crate) fn publish(
    lock: &std::fs::File,
    id: JournalId,
    end: u64,
    slot: Slot,
    pid: u32,
) -> std::io::Result<()> {
    publish_for(lock, id, end, slot, pid, None)
}

/// [`publish`] for a record appended to the journal `id` named [`super::JOURNAL`] in
/// the directory `named_in`: nothing is published once that name leads to another
/// file (a compaction replaced the journal since the append; the old one may keep
/// another name, a hard link, so its link count proves nothing). Its end witnesses
/// nothing then (the snapshot that replaced it holds its records), and written in the
/// slot it would take the place of the new journal's end, published by another writer
/// of this description meanwhile.
pub(crate) fn publish_for(
    lock: &std::fs::File,
    id: JournalId,
    end: u64,
    slot: Slot,
    pid: u32,
    named_in: Option<&std::os::fd::OwnedFd>,
) -> std::io::Result<()> {
    if cfg!(test) && super::FAIL_PUBLISH.swap(false, Ordering::SeqCst) {
        return Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::IO.raw_os_error(),
        ));
    }
    let at = slot_at(slot.index());
    // Every writer of the description shares its slot (threads of one store), and each
    // publishes after its own flush, without the writers' lock: one that appended
    // first may flush last. So the process's publications are made one at a time, and
    // one never writes a smaller end over the larger one the slot holds for the same
    // journal: it would take away the only witness of the later records ("A deleted
    // sidecar" in `docs/design.md`). No other process writes the slot (`Slot::claim`),
    // or the shared slot's writers all hold the writers' lock: the read below and the
    // write after it are not split by another process's publication.
    static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::const_mutex(());
    let _one = ONE_AT_A_TIME.lock();
    if let Some(dir) = named_in {
        match crate::sys::stat_at(dir, std::ffi::OsStr::new(super::JOURNAL)) {
            Ok(st) if (st.dev, st.ino) == (id.dev, id.ino) => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Not known to be this journal's name still: publishing could hide the new
            // journal's end; not publishing is reported (as any failed publication).
            Err(e) => return Err(e),
        }
    }
    let mut held = [0u8; SLOT_LEN];
    if lock.read_exact_at(&mut held, at).is_ok() && decode_slot(&held, id).is_some_and(|e| e >= end)
    {
        return Ok(());
    }
    #[cfg(test)]
    {
        let mut hook = BETWEEN_READ_AND_WRITE.lock();
        if hook.as_ref().is_some_and(|(of, _)| *of == id)
            && let Some((_, run)) = hook.take()
        {
            drop(hook);
            run();
        }
    }
    lock.write_all_at(&encode_slot(id, end, pid), at)
}

/// What a test runs in a publication for the journal it names, between the read of the
/// slot and the write: another process's publication at that instant.
#[cfg(test)]
type Between = Option<(JournalId, Box<dyn FnOnce() + Send>)>;
#[cfg(test)]
static BETWEEN_READ_AND_WRITE: parking_lot::Mutex<Between> = parking_lot::const_mutex(None);

/// What a journal descriptor knows of its own flushes, shared by the commits of one
/// store that append through it (threads of one process: one open file description,
/// whose flush error is reported once, to whichever flush comes first).
#[derive(Debug)]
pub(crate) struct Witness {
    /// The journal's end when the descriptor was opened (the writers' lock held).
    opened_end: u64,
    /// Whether the journal is known durable up to `opened_end` (see the module).
    proven: AtomicBool,
    /// An end up to which the journal is known durable (0: none yet).
    known: AtomicU64,
    /// Appends made through the descriptor, numbered from 1.
    appends: AtomicU64,
    flushed: parking_lot::Mutex<Flushed>,
}

#[derive(Debug, Default)]
struct Flushed {
    /// The number of appends made before the newest successful flush began.
    upto: u64,
    /// A flush through this descriptor failed: nothing it holds is proven again.
    failed: bool,
}

impl Witness {
    pub(crate) fn new(opened_end: u64) -> Witness {
        // Even a journal with no record needs a proof: a `Durability::None` writer
        // starts one without syncing it or its folder, so only a published end (a
        // `Durability::Full` `start` publishes the header's) vouches for its name.
        Witness {
            opened_end,
            proven: AtomicBool::new(false),
            known: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            flushed: parking_lot::Mutex::new(Flushed::default()),
        }
    }

    /// Whether a flush through this descriptor can vouch for every record before the
    /// next one, which goes at `end`: with the writers' lock held, waits up to `wait`
    /// for the appenders before to publish. `false`: the commit must compact.
    ///
    /// Where the kernel does not report a writeback error to every description opened
    /// before it ([`errors_reach_every_descriptor`]), no descriptor vouches for what
    /// another process wrote: the published end must reach `end` itself, every time.
    ///
    /// `last_append` tells when the newest record before `end` was written (its
    /// metadata's time; read only when the published end falls short): an appender
    /// publishes within its flush, so once that record is `wait` old nobody is still
    /// going to publish it (its writer died, after a crash or a power loss, or its
    /// flush failed), and waiting longer only delays the compaction. Either way the
    /// outcome is safe: the wait decides between appending with a proof and
    /// compacting, never whether to trust an unproven record.
    pub(crate) fn prove(
        &self,
        lock: &std::fs::File,
        id: JournalId,
        end: u64,
        wait: Duration,
        last_append: impl FnOnce() -> Option<std::time::SystemTime>,
    ) -> bool {
        let per_descriptor = errors_reach_every_descriptor();
        if (per_descriptor && self.proven.load(Ordering::Acquire))
            || super::mutation("journal-ack-unproven")
        {
            return true;
        }
        if self.flushed.lock().failed {
            return false;
        }
        let needed = if per_descriptor { self.opened_end } else { end };
        if needed <= self.known.load(Ordering::Acquire) {
            return true;
        }
        // No record before `end`: no appender to wait for, only `start`'s publication.
        let wait = if end <= HEADER_LEN as u64 {
            Duration::ZERO
        } else {
            wait
        };
        let started = Instant::now();
        let mut pause = Duration::from_micros(20);
        let mut give_up = None;
        let mut last_append = Some(last_append);
        loop {
            let published = published(lock, id);
            if published >= needed {
                self.known.fetch_max(published, Ordering::AcqRel);
                if per_descriptor {
                    self.proven.store(true, Ordering::Release);
                }
                return true;
            }
            let give_up = *give_up.get_or_insert_with(|| {
                let written = last_append.take().and_then(|f| f());
                started + wait_left(wait, written, std::time::SystemTime::now())
            });
            if Instant::now() >= give_up {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// The offset the next record claims durable: what this descriptor knows, or the
    /// published end when that is further (read only when another writer appended
    /// since: `end` is where the record goes).
    pub(crate) fn claim(&self, lock: &std::fs::File, id: JournalId, end: u64) -> u64 {
        let known = self.known.load(Ordering::Acquire);
        if known >= end {
            return end;
        }
        let published = published(lock, id).min(end);
        self.known.fetch_max(published, Ordering::AcqRel);
        known.max(published)
    }

    /// Numbers an append made through the descriptor (call after its `pwrite`).
    pub(crate) fn appended(&self) -> u64 {
        self.appends.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Makes append number `seq` durable: one flush of `file`, unless a flush that
    /// began after that append succeeded already (group commit among the threads that
    /// share the descriptor). `Err`: this or an earlier flush through the descriptor
    /// failed. Returns the time spent flushing.
    pub(crate) fn flush(
        &self,
        file: &std::fs::File,
        seq: u64,
        flush: impl FnOnce(&std::fs::File) -> std::io::Result<()>,
    ) -> std::io::Result<Duration> {
        let mut state = self.flushed.lock();
        if state.failed {
            return Err(std::io::Error::other(
                "an earlier flush of this journal descriptor failed, so this record's durability is unknown",
            ));
        }
        if state.upto >= seq {
            return Ok(Duration::ZERO);
        }
        let upto = self.appends.load(Ordering::Acquire);
        let started = Instant::now();
        match flush(file) {
            Ok(()) => {
                state.upto = upto;
                Ok(started.elapsed())
            }
            Err(e) => {
                state.failed = true;
                Err(e)
            }
        }
    }

    /// After an acknowledged flush that made the journal durable up to `end`.
    pub(crate) fn durable(&self, end: u64) {
        self.known.fetch_max(end, Ordering::AcqRel);
    }

    /// Whether a flush through the descriptor failed (it is then never used again).
    pub(crate) fn failed(&self) -> bool {
        self.flushed.lock().failed
    }
}

/// How much longer a writer waits for a publication: `wait`, but no longer than until
/// the newest record before its own (written at `last_append`, when known) is `wait`
/// old. A clock that went back (a record from the future) leaves the whole `wait`.
fn wait_left(
    wait: Duration,
    last_append: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
) -> Duration {
    match last_append.map(|t| now.duration_since(t)) {
        Some(Ok(age)) => wait.saturating_sub(age),
        Some(Err(_)) | None => wait,
    }
}

/// Whether the kernel reports a writeback error to every open file description that
/// sampled the file's error sequence before it (Linux's errseq, complete for ext4, xfs
/// and btrfs since 4.16), which the proof of a kept descriptor rests on. Elsewhere (an
/// older kernel reports an error to the first flush of any descriptor only, and other
/// systems are not known to do better) a commit appends only after every record
/// before it was published as flushed.
pub(crate) fn errors_reach_every_descriptor() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        cfg!(target_os = "linux")
            && linux_at_least(
                &rustix::system::uname().release().to_string_lossy(),
                (4, 16),
            )
    })
}

/// Whether a Linux release string (`6.1.0-18-amd64`) is at least `want`.
fn linux_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// A journal append whose flush is still to come: made with the writers' lock held,
/// finished ([`Pending::finish`]) after it is released, or at once by a caller that
/// keeps the lock.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) kept: Arc<super::cache::KeptJournal>,
    pub(crate) lock: Arc<std::fs::File>,
    /// The sidecar the journal is named in (its publication checks that the name
    /// still leads to the journal appended to: [`publish_for`]).
    pub(crate) sidecar: Arc<crate::sidecar::Sidecar>,
    /// The slot of that lock-file description ([`crate::lock::Guard::slot`]): with
    /// [`Slot::Shared`], `finish` is called with the writers' lock still held.
    pub(crate) slot: Slot,
    pub(crate) id: JournalId,
    /// The append's number through the descriptor.
    pub(crate) seq: u64,
    /// The end of the record (the last of a batch).
    pub(crate) end: u64,
    /// The commit's generation (the last of a batch), for its error.
    pub(crate) generation: u64,
    /// When the commit began (for its latency in the store's statistics).
    pub(crate) started: Instant,
    /// When this writer had to wait for the lock (others are then likely queued behind
    /// it, and one of them may flush this record before this writer does): where its
    /// records start and their bytes, to find them unchanged before taking another
    /// writer's flush for their proof. `None`: the published end is not read.
    pub(crate) contended: Option<(u64, Vec<u8>)>,
}

/// What [`Pending::finish`] did: the time spent flushing, and the error of a
/// publication that failed after the flush (the commit stands; the caller reports it,
/// `Store::finish_journal`).
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) flushed: Duration,
    pub(crate) unpublished: Option<std::io::Error>,
}

impl Pending {
    /// Flushes (or finds flushed) the append and publishes its end. `Err`: the flush
    /// failed; the commit's outcome is unknown and the caller poisons its store.
    pub(crate) fn finish(self) -> std::io::Result<Finished> {
        let witness = &self.kept.witness;
        // A writer that appended after this record and has flushed since published an
        // end past it: that flush began after this record was written, and proved
        // durable the bytes then at its offset, with everything before them. They are
        // this record's unless another writer found it torn meanwhile (a failed
        // write-back, the page evicted: the cache then reads the disk's old bytes) and
        // wrote over its offset, which this writer's own flush would have reported:
        // the record is read back and compared first. (The descriptor's own count of
        // what its flushes covered is left alone: this proves this record only.)
        if let Some((at, bytes)) = &self.contended
            && !witness.failed()
            && published(&self.lock, self.id) >= self.end
        {
            let mut now = vec![0u8; bytes.len()];
            if self.kept.file.read_exact_at(&mut now, *at).is_ok() && now == *bytes {
                witness.durable(self.end);
                return Ok(Finished {
                    flushed: Duration::ZERO,
                    unpublished: None,
                });
            }
        }
        let flushed = witness.flush(&self.kept.file, self.seq, |file| {
            if super::mutation("journal-skip-flush") {
                Ok(())
            } else if cfg!(test) && super::FAIL_FLUSH.swap(false, Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::IO.raw_os_error(),
                ))
            } else {
                crate::sys::fdatasync(file)
            }
        })?;
        witness.durable(self.end);
        let unpublished = publish_for(
            &self.lock,
            self.id,
            self.end,
            self.slot,
            self.kept.pid(),
            Some(self.sidecar.root().fd()),
        )
        .err();
        Ok(Finished {
            flushed,
            unpublished,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file's sidecar in `dir`, made as a store makes it.
    fn test_sidecar(dir: &std::path::Path) -> Arc<crate::sidecar::Sidecar> {
        let target = crate::paths::Target::resolve(&dir.join("s.json")).unwrap();
        let fd = crate::sys::open_dir(&target.dir).unwrap();
        let perms = crate::write::Perms {
            mode: 0o644,
            uid: crate::sys::effective_uid(),
            gid: crate::sys::effective_gid(),
        };
        Arc::new(
            crate::sidecar::Sidecar::open(&target, &fd, Some(perms))
                .unwrap()
                .unwrap(),
        )
    }

    #[test]
    fn slots_round_trip_and_a_torn_or_foreign_slot_is_ignored() {
        let id = JournalId {
            dev: 1,
            ino: 2,
            header: 3,
        };
        let slot = encode_slot(id, 4096, 1);
        assert_eq!(decode_slot(&slot, id), Some(4096));
        assert_eq!(decode_slot(&slot, JournalId { ino: 9, ..id }), None);
        for at in 0..SLOT_LEN {
            let mut torn = slot;
            torn[at] ^= 0x40;
            assert_eq!(decode_slot(&torn, id), None, "byte {at}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = super::super::test_file(dir.path().join("lock"));
        assert_eq!(published(&file, id), 0);
        publish(&file, id, 100, Slot::Own(1), crate::sys::pid()).unwrap();
        assert_eq!(published(&file, id), 100);
        file.write_all_at(&encode_slot(id, 300, 1), REGION_AT + 5 * SLOT_LEN as u64)
            .unwrap();
        file.write_all_at(
            &encode_slot(JournalId { header: 4, ..id }, 900, 1),
            REGION_AT + 6 * SLOT_LEN as u64,
        )
        .unwrap();
        assert_eq!(published(&file, id), 300);
        // A descriptor opened at 200 can vouch from 200 on; one opened at 400 cannot
        // until someone publishes 400 (where errors reach every descriptor).
        assert!(
            errors_reach_every_descriptor(),
            "the tests run on Linux 4.16 or later"
        );
        let w = Witness::new(200);
        assert!(w.prove(&file, id, 350, Duration::ZERO, || None));
        let w = Witness::new(400);
        assert!(!w.prove(&file, id, 450, Duration::from_millis(5), || None));
        // The newest record is older than the wait: nobody is going to publish it, so
        // there is nothing to wait for (the wait here would outlast any test run).
        let old = std::time::SystemTime::now() - Duration::from_secs(7200);
        assert!(!w.prove(&file, id, 450, Duration::from_secs(3600), || Some(old)));
        assert!(Witness::new(HEADER_LEN as u64).prove(&file, id, 450, Duration::ZERO, || None));
        // A journal with no record is proven only by a publication of its header (a
        // `Durability::Full` start's), and nothing is waited for (the wait here would
        // outlast any test run).
        let empty = JournalId { header: 5, ..id };
        let w = Witness::new(HEADER_LEN as u64);
        let hour = Duration::from_secs(3600);
        assert!(!w.prove(&file, empty, HEADER_LEN as u64, hour, || None));
        publish(
            &file,
            empty,
            HEADER_LEN as u64,
            Slot::Own(1),
            crate::sys::pid(),
        )
        .unwrap();
        assert!(w.prove(&file, empty, HEADER_LEN as u64, hour, || None));
        assert!(linux_at_least("6.1.0-18-amd64", (4, 16)));
        assert!(linux_at_least("4.16.0", (4, 16)));
        assert!(!linux_at_least("4.15.18-generic", (4, 16)));
        assert!(!linux_at_least("3.10.0-1160.el7.x86_64", (4, 16)));
        assert!(!linux_at_least("garbage", (4, 16)));
    }

    #[test]
    fn the_wait_for_a_publication_ends_when_the_newest_record_is_that_old() {
        let wait = Duration::from_millis(250);
        let now = std::time::SystemTime::now();
        // Unknown (an earlier build's record, unreadable): the whole wait.
        assert_eq!(wait_left(wait, None, now), wait);
        // Written just now: its writer is flushing; the whole wait.
        assert_eq!(wait_left(wait, Some(now), now), wait);
        // Written 100 ms ago: 150 ms more at most.
        assert_eq!(
            wait_left(wait, Some(now - Duration::from_millis(100)), now),
            Duration::from_millis(150)
        );
        // Written before the last power loss, or by a writer that died: none.
        assert_eq!(
            wait_left(wait, Some(now - Duration::from_secs(60)), now),
            Duration::ZERO
        );
        // A clock that went back: the record seems to come from the future; the whole
        // wait, as without a time.
        assert_eq!(
            wait_left(wait, Some(now + Duration::from_secs(60)), now),
            wait
        );
    }

    #[test]
    fn a_record_a_later_writers_published_flush_covers_is_not_flushed_again() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = test_sidecar(dir.path());
        let journal = super::super::test_file(sidecar.root().join(super::super::JOURNAL));
        let lock = Arc::new(super::super::test_file(dir.path().join("lock")));
        let st = crate::sys::stat_fd(&journal).unwrap();
        let kept = Arc::new(super::super::cache::KeptJournal::new(
            journal,
            st,
            HEADER_LEN as u64,
        ));
        let id = JournalId {
            dev: st.dev,
            ino: st.ino,
            header: 1,
        };
        let pending = |seq, end| Pending {
            kept: Arc::clone(&kept),
            lock: Arc::clone(&lock),
            sidecar: Arc::clone(&sidecar),
            slot: Slot::Own(1),
            id,
            seq,
            end,
            generation: 2,
            started: Instant::now(),
            contended: Some((end - 10, vec![b'r'; 10])),
        };
        // Another writer published 1000: a record ending at 500, still there, is
        // durable.
        kept.file.write_all_at(&[b'r'; 10], 490).unwrap();
        let one = kept.witness.appended();
        publish(&lock, id, 1000, Slot::Own(2), crate::sys::pid()).unwrap();
        assert_eq!(pending(one, 500).finish().unwrap().flushed, Duration::ZERO);
        assert_eq!(kept.witness.flushed.lock().upto, 0, "no flush was made");
        // One whose offset another writer wrote over (it found it torn: a failed
        // write-back, the page evicted) is not: this writer flushes (and its own
        // flush would report that failure).
        kept.file.write_all_at(&[b'q'; 10], 590).unwrap();
        let two = kept.witness.appended();
        pending(two, 600).finish().unwrap();
        assert_eq!(kept.witness.flushed.lock().upto, 2, "a flush was made");
        // A record past the published end is flushed (and its end published).
        kept.file.write_all_at(&[b'r'; 10], 1490).unwrap();
        let three = kept.witness.appended();
        pending(three, 1500).finish().unwrap();
        assert_eq!(kept.witness.flushed.lock().upto, 3);
        assert_eq!(published(&lock, id), 1500);
    }

    /// Two writers of one process share its slot: a late publication never lowers
    /// the slot's end for the same journal, and one for a journal a compaction
    /// replaced since (unlinked) never takes the place of the new journal's end.
    #[test]
    fn a_late_publication_never_takes_the_place_of_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let named_in = crate::sys::open_dir(dir.path()).unwrap();
        let lock = super::super::test_file(dir.path().join("lock"));
        let name = dir.path().join(super::super::JOURNAL);
        let old = super::super::test_file(&name);
        let new = super::super::test_file(dir.path().join("new"));
        let id_of = |file: &std::fs::File, header| {
            let st = crate::sys::stat_fd(file).unwrap();
            JournalId {
                dev: st.dev,
                ino: st.ino,
                header,
            }
        };
        let (old_id, new_id) = (id_of(&old, 1), id_of(&new, 2));
        let pid = crate::sys::pid();
        let publish = |id, end| publish_for(&lock, id, end, Slot::Own(1), pid, Some(&named_in));
        publish(old_id, 1000).unwrap();
        publish(old_id, 900).unwrap();
        assert_eq!(
            published(&lock, old_id),
            1000,
            "a smaller end was written over"
        );
        std::fs::rename(dir.path().join("new"), &name).unwrap();
        publish(new_id, 200).unwrap();
        publish(old_id, 1100).unwrap();
        assert_eq!(
            published(&lock, new_id),
            200,
            "a replaced journal's end took the new journal's place"
        );
    }

    /// A compaction replaced the journal, but the old one keeps a second name (a
    /// hard link: a quarantine, a backup tool's snapshot made with `cp -al`), so its
    /// link count never reaches 0. A thread that appended to it and flushes last must
    /// still not write its end over the new journal's, published meanwhile by another
    /// thread of the store: the publication checks that the journal's name still
    /// leads to the journal it appended to.
    #[test]
    fn a_replaced_journal_with_a_second_name_never_takes_the_place_of_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let lock = super::super::test_file(dir.path().join("lock"));
        let name = dir.path().join(super::super::JOURNAL);
        let old = super::super::test_file(&name);
        std::fs::hard_link(&name, dir.path().join("kept")).unwrap();
        let new = super::super::test_file(dir.path().join("new"));
        std::fs::rename(dir.path().join("new"), &name).unwrap();
        let id_of = |file: &std::fs::File, header| {
            let st = crate::sys::stat_fd(file).unwrap();
            JournalId {
                dev: st.dev,
                ino: st.ino,
                header,
            }
        };
        let (old_id, new_id) = (id_of(&old, 1), id_of(&new, 2));
        let pid = crate::sys::pid();
        let named_in = crate::sys::open_dir(dir.path()).unwrap();
        publish_for(&lock, new_id, 200, Slot::Own(1), pid, Some(&named_in)).unwrap();
        publish_for(&lock, old_id, 1100, Slot::Own(1), pid, Some(&named_in)).unwrap();
        assert_eq!(
            published(&lock, new_id),
            200,
            "the replaced journal's end took the new journal's place"
        );
    }

    /// Two processes whose ids are equal modulo 64 published in one slot (by their
    /// id), each after its flush and without the writers' lock: one that read the slot
    /// before the other's publication and wrote after it (it appended first and
    /// flushed last) wrote its smaller end over the other's, and a journal later cut
    /// back between the two ends was served as an older generation. Each lock-file
    /// description (`a` and `b` stand for two processes' stores, `pid` and `pid + 64`)
    /// now holds a slot of its own: `b`'s publication, made between `a`'s read of its
    /// slot and its write, is in another slot and stays.
    #[test]
    fn two_processes_whose_ids_are_equal_modulo_64_never_share_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let a = super::super::test_file(dir.path().join("lock"));
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("lock"))
            .unwrap();
        let id = JournalId {
            dev: 1,
            ino: 2,
            header: 0x5107,
        };
        let pid = crate::sys::pid();
        let (slot_a, slot_b) = (Slot::claim(&a, pid), Slot::claim(&b, pid + 64));
        assert!(slot_a.own() && slot_b.own(), "{slot_a:?} {slot_b:?}");
        assert_ne!(slot_a, slot_b);
        // A description keeps its slot: claiming again through it finds it free (a
        // lock never conflicts with its own description), another does not.
        assert!(crate::sys::try_lock_range(&a, slot_at(slot_a.index()), SLOT_LEN as u64).unwrap());
        assert!(!crate::sys::try_lock_range(&b, slot_at(slot_a.index()), SLOT_LEN as u64).unwrap());
        *BETWEEN_READ_AND_WRITE.lock() = Some((
            id,
            Box::new(move || {
                b.write_all_at(&encode_slot(id, 1000, pid + 64), slot_at(slot_b.index()))
                    .unwrap();
            }),
        ));
        publish(&a, id, 900, slot_a, pid).unwrap();
        assert_eq!(
            published(&a, id),
            1000,
            "a late publication hid another process's larger end"
        );
    }

    /// With every slot but the shared one held by other descriptions (63 stores open,
    /// or a hostile holder of the lock file), a description publishes in the shared
    /// slot; closing a description frees its slot for the next one.
    #[test]
    fn with_every_slot_taken_a_description_publishes_in_the_shared_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = super::super::test_file(&path);
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let mut holders = vec![first];
        holders.extend((1..SLOTS - 1).map(|_| open()));
        let mut claimed: Vec<usize> = holders
            .iter()
            .map(|h| match Slot::claim(h, 7) {
                Slot::Own(n) => n,
                Slot::Shared => panic!("a slot was free"),
            })
            .collect();
        claimed.sort_unstable();
        assert_eq!(claimed, (1..SLOTS).collect::<Vec<_>>());
        let late = open();
        assert_eq!(Slot::claim(&late, 7), Slot::Shared);
        let id = JournalId {
            dev: 1,
            ino: 2,
            header: 3,
        };
        publish(&late, id, 500, Slot::Shared, 7).unwrap();
        assert_eq!(published(&late, id), 500);
        let mut at = [0u8; SLOT_LEN];
        late.read_exact_at(&mut at, slot_at(SHARED_SLOT)).unwrap();
        assert_eq!(decode_slot(&at, id), Some(500));
        drop(holders.pop());
        assert!(Slot::claim(&open(), 7).own());
    }

    #[test]
    fn a_failed_flush_fails_every_later_flush_of_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("j")).unwrap();
        let w = Witness::new(HEADER_LEN as u64);
        let one = w.appended();
        let two = w.appended();
        // The flush for the second append covers the first: no second flush.
        assert!(w.flush(&file, two, |_| Ok(())).is_ok());
        let mut called = false;
        assert!(
            w.flush(&file, one, |_| {
                called = true;
                Ok(())
            })
            .is_ok()
        );
        assert!(
            !called,
            "the first append was covered by the flush after it"
        );
        let three = w.appended();
        assert!(
            w.flush(&file, three, |_| Err(std::io::Error::other("EIO")))
                .is_err()
        );
        // The kernel reports the error to this description once; every later flush
        // through it (which the kernel would let succeed) fails here.
        let four = w.appended();
        assert!(w.flush(&file, four, |_| Ok(())).is_err());
        assert!(w.failed());
    }
}
