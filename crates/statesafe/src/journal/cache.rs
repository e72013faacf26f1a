//! The document a long-lived store keeps in journal mode, so that a read or a commit
//! costs the change, not the state.
//!
//! After a full read (snapshot plus journal) the store remembers the replayed
//! document, its generation, the snapshot's identity and the journal's identity and
//! the offset of the last record applied. The next read or transaction checks, in the
//! order a full read uses (journal first, then snapshot):
//!
//! - the journal is the same file (device and inode), its header is the same bytes,
//!   and the last record applied is still at its offset with the same generation
//!   and checksum (a record whose flush failed is zeroed by its writer, and another
//!   one written in its place);
//! - the snapshot is the same file: device, inode, size, modification and change
//!   times by one `fstatat`. statesafe never writes a snapshot in place (a new one is
//!   renamed in), but a program may; a change in place is seen by the change time,
//!   unless it falls in the same clock tick as the one before. So the identity is
//!   trusted only once it is *settled*: its change time was at least [`SETTLE`]
//!   in the past when a check found the bytes unchanged (read whole and compared by
//!   checksum). Any later change then gets a later change time.
//!
//! then reads the journal from the last record applied to its end and applies only
//! the records after it. Anything that does not match (a compaction renamed a new
//! snapshot and journal in, a file replaced by hand, damage, an I/O error) drops the
//! cache and does the full read, which also reports what it finds. A committed
//! version is never rolled back: records are applied in generation order from the
//! one the cache holds, and anything else is a full read.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{HEADER_LEN, JOURNAL, Kind, Replayed, encode_record, parse_at};
use crate::error::{Error, Op, Result};
use crate::format;
use crate::settings::Format;
use crate::sidecar::{Sidecar, Use};
use crate::store::{Store, Verified};
use crate::sys::{self, Access};
use crate::transaction::Locked;
use crate::write::Current;

/// How long ago a snapshot's change time must be before its identity alone (without
/// its bytes) proves it unchanged: more than any filesystem's timestamp granularity
/// (a clock tick; one second on some, two on FAT).
const SETTLE: Duration = Duration::from_secs(3);

/// A snapshot's identity by `fstatat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ident {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Ident {
    // The field types of `struct stat` differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &rustix::fs::Stat) -> Ident {
        Ident {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    /// Whether the change time was at least [`SETTLE`] before `now`.
    pub(crate) fn settled_at(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let Ok(secs) = u64::try_from(self.ctime.0) else {
            return false;
        };
        let ctime = Duration::new(secs, u32::try_from(self.ctime.1).unwrap_or(0));
        now >= ctime + SETTLE
    }
}

/// What a store keeps between operations in journal mode.
pub(crate) struct Cache {
    snapshot: Ident,
    /// The snapshot's checksum (to compare its bytes while not settled).
    snapshot_checksum: u64,
    settled: bool,
    /// The version: everything of the [`Current`] it came from but the bytes.
    generation: u64,
    perms: crate::write::Perms,
    acl: Option<Vec<u8>>,
    /// Whether `acl` was read (a transaction needs it; a load does not read it).
    acl_known: bool,
    replayed: Replayed,
    doc: Arc<Value>,
    /// An owned tree equal to `doc`, for the next decode of the state to move its
    /// strings out of instead of copying them ([`take_spare`]): the tree this store's
    /// own commit of `doc` replaced, with that commit's patch applied
    /// ([`make_spare`]). Stands for `doc` only while the generation is this one.
    spare: Option<(u64, Value)>,
    /// The patch of this store's last append, with the generations it went from and
    /// to, for [`make_spare`].
    spare_patch: Option<(u64, u64, json_patch::Patch)>,
    /// The journal, opened for writing by a refresh made with the writers' lock held
    /// (through the lock's sidecar descriptor, checked as any write open) and kept
    /// across lock holds: each locked refresh checks by one `fstatat` that the name
    /// is still this file, with the checks of a fresh open ([`Dir::recheck`]), or
    /// opens it again.
    ///
    /// [`Dir::recheck`]: crate::sidecar::Dir::recheck
    file: Option<Arc<KeptJournal>>,
    /// Whether `file` was checked by the locked refresh of the lock hold now under
    /// way: only then may that hold's append take it ([`take_file`]). Every refresh
    /// clears it first, so a check never outlives its lock hold.
    file_checked: bool,
    /// The storage of the journal bytes a refresh reads (about the same length each
    /// time), kept so that each check does not allocate and zero it again.
    buf: Vec<u8>,
}

/// The journal descriptor a store keeps between commits ([`Cache::file`]).
#[derive(Debug)]
pub(crate) struct KeptJournal {
    pub(crate) file: std::fs::File,
    /// Its `fstat` when opened: the file a later check of the name must find.
    opened: sys::Stat,
    /// The process that opened it: a child forked without exec shares the open file
    /// description (and its record of flush errors); it opens one of its own.
    pid: u32,
    /// What its flushes prove (`durable.rs`).
    pub(crate) witness: super::durable::Witness,
}

impl KeptJournal {
    /// A descriptor just opened for writing, with the writers' lock held, when the
    /// journal ended at `end`.
    pub(crate) fn new(file: std::fs::File, opened: sys::Stat, end: u64) -> KeptJournal {
        KeptJournal {
            file,
            opened,
            pid: sys::pid(),
            witness: super::durable::Witness::new(end),
        }
    }

    /// The process that opened it: this one whenever it is appended through (a
    /// forked child's refresh opens its own, and its copy of a transaction does not
    /// commit), so a flush after the lock's release names it in its publication
    /// without asking the kernel again.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Its device and inode.
    pub(crate) fn id(&self) -> (u64, u64) {
        (self.opened.dev, self.opened.ino)
    }
}

impl Cache {
    /// The [`Current`] this cache stands for (no bytes; the document in its journal part).
    fn current(&self) -> Current {
        let mut replayed = self.replayed.clone();
        replayed.doc = Some(Arc::clone(&self.doc));
        Current {
            bytes: Vec::new(),
            checksum: self.snapshot_checksum,
            generation: self.generation,
            external: false,
            adopted: false,
            perms: self.perms,
            id: (self.snapshot.dev, self.snapshot.ino),
            acl: self.acl.clone(),
            journal: Some(Box::new(replayed)),
            journal_follows: false,
            pin: None,
        }
    }
}

/// The state in journal mode for a load or a transaction: from the store's cache when
/// it is still the newest version, else by a full read (which refills the cache).
///
/// `locked`: the sidecar of the writers' lock this caller holds and the process id
/// asked for when it was taken ([`crate::lock::Guard::pid`]; `None`: a reader).
pub(crate) fn read_current<T>(
    store: &Store<T>,
    want_acl: bool,
    locked: Option<(&Sidecar, u32)>,
) -> Result<Option<Current>> {
    let mut slot = store.journal.cache.lock();
    if let Some(cache) = slot.as_mut()
        && (cache.acl_known || !want_acl)
    {
        if refresh(store, cache, locked).unwrap_or(false) {
            return Ok(Some(cache.current()));
        }
        *slot = None;
    }
    let now = SystemTime::now();
    let before = snapshot_ident(store);
    let cur = super::read_current(store, want_acl)?;
    // Kept from a store's second full read on: keeping costs a second parse, which a
    // store opened for one read (the CLI's `get`) would pay for nothing.
    let again = store
        .journal
        .full_reads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        > 0;
    if let (Some(cur), Some(before), true) = (&cur, before, again) {
        *slot = fill(store, cur, before, now, want_acl);
    }
    Ok(cur)
}

fn snapshot_ident<T>(store: &Store<T>) -> Option<Ident> {
    let local = store.local();
    let st = rustix::fs::statat(
        store.dir().ok()?,
        local.target.name.as_os_str(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .ok()?;
    Some(Ident::of(&st))
}

/// A cache of `cur`, just read in full, if it is one the next read can extend: a
/// snapshot statesafe wrote (`before` its identity, taken before it was read), an
/// undamaged journal that follows it.
fn fill<T>(
    store: &Store<T>,
    cur: &Current,
    before: Ident,
    now: SystemTime,
    acl_known: bool,
) -> Option<Cache> {
    let replayed = cur.journal.as_deref()?;
    if cur.external
        || !replayed.appendable
        || replayed.damage.is_some()
        || replayed.journal.is_none()
        || cur.id != (before.dev, before.ino)
    {
        return None;
    }
    let doc = format::decode::<Value>(store.path(), &cur.bytes).ok()?;
    let mut replayed = replayed.clone();
    replayed.doc = None;
    Some(Cache {
        snapshot: before,
        snapshot_checksum: replayed.snapshot_checksum,
        // The bytes read may be newer than `before` (changed in place in between):
        // the next check compares them again unless the change time was long past.
        settled: before.settled_at(now) && snapshot_ident(store) == Some(before),
        generation: cur.generation,
        perms: cur.perms,
        acl: cur.acl.clone(),
        acl_known,
        replayed,
        doc: Arc::new(doc),
        spare: None,
        spare_patch: None,
        file: None,
        file_checked: false,
        buf: Vec::new(),
    })
}

/// The format the file's settings record, as a journal-mode commit checks it under
/// the lock (another store may have taken the file out of journal mode since this one
/// was opened). As [`Store::refresh_settings`] found it in this lock hold, when it
/// did ([`Store::recorded_format_in`]); otherwise the settings are read whole unless
/// one `fstatat` finds the very file a read found to say `journal`, with its identity
/// settled then (its change time [`SETTLE`] old: the settings are replaced by rename,
/// and any change since, by rename or in place, has a later change time or another
/// inode).
pub(crate) fn recorded_format<T>(
    store: &Store<T>,
    guard: &crate::lock::Guard<'_>,
) -> Result<Format> {
    if let Some(format) = store.recorded_format_in(guard) {
        return Ok(format);
    }
    let sidecar = guard.sidecar();
    let name = OsStr::new(crate::settings::SETTINGS_FILE);
    let ident = rustix::fs::statat(
        sidecar.root().fd(),
        name,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .ok()
    .map(|st| Ident::of(&st));
    let mut kept = store.journal.settings.lock();
    if ident.is_some() && *kept == ident {
        return Ok(Format::Journal);
    }
    *kept = None;
    let now = SystemTime::now();
    let format = crate::settings::Settings::read(Some(sidecar))?.format;
    if format == Format::Journal
        && let Some(ident) = ident
        && ident.settled_at(now)
    {
        *kept = Some(ident);
    }
    Ok(format)
}

/// The journal as the locked refresh of this lock hold opened or checked it for
/// writing, if it did (see [`Cache::file`]). Hand it back with [`keep_file`] once the
/// append is done.
pub(crate) fn take_file<T>(store: &Store<T>) -> Option<Arc<KeptJournal>> {
    store.journal.cache.lock().as_mut().and_then(|c| {
        std::mem::take(&mut c.file_checked)
            .then(|| c.file.take())
            .flatten()
    })
}

/// Keeps `kept` (taken with [`take_file`], appended through) for the next lock hold's
/// refresh to check, while the cache still stands for the journal it is (`id`).
pub(crate) fn keep_file<T>(store: &Store<T>, kept: Arc<KeptJournal>, id: (u64, u64)) {
    let mut slot = store.journal.cache.lock();
    if let Some(cache) = slot.as_mut()
        && cache.replayed.journal.as_ref().is_some_and(|p| p.id == id)
        && kept.id() == id
        && !kept.witness.failed()
    {
        cache.file = Some(kept);
        cache.file_checked = false;
    }
}

/// After this store appended `record_at` (offset of the last record, its checksum)
/// as `generation` on top of `base_generation` and flushed it: the kept document
/// becomes `doc` and the journal's end `pos`, so that the next commit does not read
/// and apply its own record again. Dropped instead unless the cache still stands for
/// `base_generation` in the same journal.
pub(crate) fn appended<T>(
    store: &Store<T>,
    base_generation: u64,
    generation: u64,
    doc: Arc<Value>,
    patch: json_patch::Patch,
    pos: &super::Pos,
) {
    let mut slot = store.journal.cache.lock();
    let Some(cache) = slot.as_mut() else {
        return;
    };
    let same_journal = cache
        .replayed
        .journal
        .as_ref()
        .is_some_and(|p| p.id == pos.id && p.header == pos.header);
    if cache.generation != base_generation || !same_journal {
        *slot = None;
        return;
    }
    cache.generation = generation;
    cache.doc = doc;
    cache.spare = None;
    cache.spare_patch = Some((base_generation, generation, patch));
    cache.replayed.max_seen = generation;
    cache.replayed.journal = Some(pos.clone());
}

/// After this store's transaction committed `generation` on top of `from` by an
/// append ([`appended`]): `old`, the tree of `from` (no longer shared),
/// becomes the kept document's spare by the patch of that append, unless the cache
/// has moved on since. Freeing `old` and copying every string of the kept document
/// at the next decode cost more than applying the patch (`docs/benchmarks.md`,
/// "jperf13").
pub(crate) fn make_spare<T>(store: &Store<T>, from: u64, generation: u64, mut old: Value) {
    let mut slot = store.journal.cache.lock();
    let Some(cache) = slot.as_mut() else {
        return;
    };
    let Some((f, g, patch)) = cache.spare_patch.take() else {
        return;
    };
    if (f, g) == (from, generation)
        && cache.generation == generation
        && json_patch::patch(&mut old, &patch).is_ok()
    {
        cache.spare = Some((generation, old));
    }
}

/// The spare of the kept document `doc` of `generation` ([`Cache::spare`]), taken:
/// `None` unless the cache still keeps that very tree.
pub(crate) fn take_spare<T>(store: &Store<T>, generation: u64, doc: &Arc<Value>) -> Option<Value> {
    let mut slot = store.journal.cache.lock();
    let cache = slot.as_mut()?;
    if cache.generation != generation || !Arc::ptr_eq(&cache.doc, doc) {
        return None;
    }
    match cache.spare.take() {
        Some((g, tree)) if g == generation => Some(tree),
        _ => None,
    }
}

/// Brings `cache` up to the newest version, reading only the journal's new records.
/// `Ok(false)` (or an error): it cannot, and a full read must be done.
/// `locked`: the writers' lock's sidecar and the process id asked for when it was
/// taken, when the caller holds it (the journal is then opened for writing and kept
/// for the commit's append).
fn refresh<T>(
    store: &Store<T>,
    cache: &mut Cache,
    locked: Option<(&Sidecar, u32)>,
) -> Result<bool> {
    cache.file_checked = false;
    let opened;
    let sidecar = match locked {
        Some((s, _)) => s,
        None => {
            let Some(s) = store.sidecar()? else {
                return Ok(false);
            };
            opened = s;
            &opened
        }
    };
    let (access, purpose) = match locked {
        Some(_) => (Access::ReadWrite, Use::Write),
        None => (Access::Read, Use::Read),
    };
    let name = OsStr::new(JOURNAL);
    // With the lock held, the descriptor kept from an earlier hold, if the name is
    // still that file (one `fstatat`); else, and for a reader, a fresh open.
    let mut reused = None;
    // The lock's process id stands for `getpid` here: no code of the caller's has run
    // in this hold yet (`LockFile::acquire`).
    if let Some((_, pid)) = locked
        && let Some(kept) = cache.file.take()
        && kept.pid == pid
        && !kept.witness.failed()
        && let Some(st) = sidecar
            .root()
            .recheck(name, &kept.opened, purpose, Op::Read)?
    {
        reused = Some((kept, st));
    }
    let (file, st) = match reused {
        Some((kept, st)) => (Held::Kept(kept), st),
        None => {
            let Some((file, st)) = sidecar
                .root()
                .open_stat(name, access, 0, purpose, Op::Read)?
            else {
                return Ok(false);
            };
            (Held::Opened(file), st)
        }
    };
    let opened_stat = st;
    let Some(pos) = cache.replayed.journal.clone() else {
        return Ok(false);
    };
    let io = |e| Error::io(Op::Read, store.path(), e);
    if (st.dev, st.ino) != pos.id {
        return Ok(false);
    }
    let now = SystemTime::now();
    if snapshot_ident(store) != Some(cache.snapshot) {
        return Ok(false);
    }
    if !cache.settled {
        // Read the snapshot whole and compare: the same bytes, through a descriptor
        // of the same file.
        let local = store.local();
        let snap = sys::open_at(store.dir()?, &local.target.name, Access::Read, 0).map_err(io)?;
        let sst = rustix::fs::fstat(&snap).map_err(|e| io(e.into()))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &snap, &mut bytes).map_err(io)?;
        if Ident::of(&sst) != cache.snapshot || format::checksum(&bytes) != cache.snapshot_checksum
        {
            return Ok(false);
        }
        cache.settled = cache.snapshot.settled_at(now);
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0).map_err(io)?;
    if header != pos.header.encode() {
        return Ok(false);
    }
    let start = pos.last_record.map_or(HEADER_LEN as u64, |(at, _)| at);
    let mut buf = std::mem::take(&mut cache.buf);
    let known = pos.end.saturating_sub(start);
    let len = super::read_journal_tail(&file, start, st.size, known, &mut buf).map_err(io)?;
    let bytes = &buf[..len];
    let from = match pos.last_record {
        Some((_, checksum)) => {
            let Some((record, size)) = parse_at(bytes, 0) else {
                return Ok(false);
            };
            if record.generation != cache.generation || super::last_of(&record, bytes).1 != checksum
            {
                return Ok(false);
            }
            size
        }
        None if cache.generation == pos.header.follows => 0,
        None => return Ok(false),
    };
    let found = super::scan_at(bytes, start, from, cache.generation + 1, Some(pos.prev()));
    if found.damage.is_some() {
        return Ok(false);
    }
    if !found.records.is_empty() {
        cache.spare = None;
        let doc = Arc::make_mut(&mut cache.doc);
        for record in &found.records {
            if super::apply(doc, record, bytes).is_err() {
                return Ok(false);
            }
        }
    }
    let mut pos = pos;
    if let Some(last) = found.records.last() {
        cache.generation = last.generation;
        let (at, checksum) = super::last_of(last, bytes);
        pos.last_record = Some((start + at, checksum));
        // Another store's records: the next record of this one names its writer.
        pos.last_ours = false;
    }
    pos.end = start + found.end as u64;
    // This read stops at a run of zeros: the full read's end of a torn tail (a gap a
    // power loss left between pages, a torn batch's survivor past it) stands.
    pos.dirty_to = pos.dirty_to.max(start + found.dirty_to as u64);
    pos.size = st.size;
    let pos_end = pos.end;
    cache.replayed.max_seen = cache.generation;
    cache.replayed.journal = Some(pos);
    // Kept unless a long run of other writers' records made it large.
    if buf.capacity() <= 1 << 20 {
        cache.buf = buf;
    }
    if locked.is_some() {
        cache.file = Some(match file {
            Held::Kept(kept) => kept,
            // Opened in this lock hold, after every append so far: it can vouch
            // for what is appended from the end just found.
            Held::Opened(file) => Arc::new(KeptJournal::new(file, opened_stat, pos_end)),
        });
        cache.file_checked = true;
    }
    Ok(true)
}

/// The journal descriptor a refresh reads through.
enum Held {
    /// Kept from an earlier lock hold, its name checked just now.
    Kept(Arc<KeptJournal>),
    /// Opened just now.
    Opened(std::fs::File),
}

impl std::ops::Deref for Held {
    type Target = std::fs::File;
    fn deref(&self) -> &std::fs::File {
        match self {
            Held::Kept(k) => &k.file,
            Held::Opened(f) => f,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// [`Store::verify`] of a document the cache holds: decoded from the tree, then
    /// checked as a committed version.
    pub(crate) fn verify_cached(
        &self,
        doc: &Arc<Value>,
        generation: u64,
        want_value: bool,
    ) -> Result<Verified<T>> {
        // From the spare when there is one: the same tree, owned, so that its strings
        // are moved into the state rather than copied. A `Store<Value>` takes the
        // tree itself as the state (`sys/value.rs`): no decode.
        let state = match take_spare(self, generation, doc) {
            Some(tree) => sys::value::from_value(tree).or_else(T::deserialize),
            None if sys::value::is_value::<T>() => {
                sys::value::from_value((**doc).clone()).or_else(T::deserialize)
            }
            None => T::deserialize(&**doc),
        }
        .map_err(|e| Error::Mismatch {
            path: self.path().to_path_buf(),
            generation,
            committed: true,
            reason: format!("this reader's type refuses it: {e}"),
        })?;
        let mut v = self.verify_state(state, None, generation, true, false)?;
        if want_value {
            v.value = Some(Arc::clone(doc));
        }
        Ok(v)
    }

    /// For a transaction in journal mode, with the lock held: the current version,
    /// from the cache when it can be, and the check a locked read makes of its owner.
    /// `sidecar`: the lock's.
    /// `guard`: the lock's (its process and effective user ids stand for the kernel's:
    /// no code of the caller's has run in this hold yet).
    pub(crate) fn journal_read_locked(
        &self,
        guard: &crate::lock::Guard<'_>,
    ) -> Result<Option<Current>> {
        let current = read_current(self, true, Some((guard.sidecar(), guard.pid())))?;
        if let Some(cur) = &current {
            self.local().lock.check_owner_not_planted_as(
                self.write_dir()?,
                cur.perms.uid,
                guard.euid(),
            )?;
        }
        Ok(current)
    }
}

impl Store<Value> {
    /// Applies an RFC 6902 JSON Patch (`patch`: the array of operations) to the
    /// document, under the writers' lock, as one commit; returns the new generation.
    ///
    /// Any format takes it (as a transaction that applies the patch). In journal mode,
    /// on a store that keeps the document (see `docs/design.md`, "Journal mode"), the
    /// patch is the record: the commit costs the patch, one `pwrite` and one
    /// `fdatasync`, not the size of the document. That holds while no validation
    /// rule, schema, size limit or free-space floor is set (each needs the whole
    /// document) and the patch has no `move` or `copy` (whose depth is not known
    /// from the patch); otherwise, and when the commit compacts, it is an ordinary
    /// transaction.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the patch is not an array of operations or does not
    /// apply (nothing is written); otherwise as [`crate::Transaction::commit`].
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// store.create(serde_json::json!({"n": 1}))?;
    /// let patch = serde_json::json!([{"op": "replace", "path": "/n", "value": 2}]);
    /// assert_eq!(store.apply_patch(&patch)?, 2);
    /// assert_eq!(store.get()?["n"], 2);
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn apply_patch(&self, patch: &Value) -> Result<u64> {
        let invalid = |message: String| Error::Invalid {
            path: self.path().to_path_buf(),
            message,
        };
        let ops: json_patch::Patch = serde_json::from_value(patch.clone())
            .map_err(|e| invalid(format!("the patch is not an RFC 6902 patch: {e}")))?;
        if self.remote().is_none()
            && self.config().format == Format::Journal
            && let Some(generation) = self.journal_patch(patch, ops.clone())?
        {
            return Ok(generation);
        }
        let mut tx = self.begin()?;
        json_patch::patch(tx.state_mut(), &ops)
            .map_err(|e| invalid(format!("the patch does not apply: {e}")))?;
        tx.commit()
    }

    /// [`Store::apply_patch`]'s journal-mode commit from the cache, by group commit:
    /// `Ok(None)` when this commit cannot be one (the caller runs a transaction).
    fn journal_patch(&self, patch: &Value, ops: json_patch::Patch) -> Result<Option<u64>> {
        let config = self.config();
        let plain_ops = ops.0.iter().all(|op| {
            !matches!(
                op,
                json_patch::PatchOperation::Move(_) | json_patch::PatchOperation::Copy(_)
            )
        });
        // A change at the root or of a top-level `statesafe` or `state` member could
        // give the document a sealed envelope's shape, which a transaction refuses
        // (`format::encode`): such a change goes that way. So does the removal of any
        // top-level member: a replayed `remove` moves the object's last member into
        // its place (`{"statesafe": H, "a": 1, "state": 2}` minus `/a` is the
        // envelope `{"statesafe": H, "state": 2}`).
        let envelope_keys = ops.0.iter().any(|op| {
            let top = op.path().count() <= 1;
            top && matches!(op, json_patch::PatchOperation::Remove(_))
                || op
                    .path()
                    .first()
                    .is_none_or(|key| matches!(key.decoded().as_ref(), "statesafe" | "state"))
        });
        if self.opts.rule.is_some()
            || config.schema.is_some()
            || config.max_bytes.is_some()
            || config.min_free_bytes.is_some()
            || !plain_ops
            || envelope_keys
        {
            return Ok(None);
        }
        let body = serde_json::to_vec(patch).map_err(|e| Error::Serialize {
            path: self.path().to_path_buf(),
            source: e,
        })?;
        // The depth of every value written, where it is written: under the limit
        // each document statesafe writes keeps.
        let deepest = ops
            .0
            .iter()
            .map(|op| {
                let (path, value) = match op {
                    json_patch::PatchOperation::Add(o) => (&o.path, Some(&o.value)),
                    json_patch::PatchOperation::Replace(o) => (&o.path, Some(&o.value)),
                    json_patch::PatchOperation::Test(o) => (&o.path, None),
                    json_patch::PatchOperation::Remove(o) => (&o.path, None),
                    _ => unreachable!("invariant: move and copy are refused above"),
                };
                let value = value.map_or(0, |v| {
                    format::depth_of(&serde_json::to_vec(v).unwrap_or_default())
                });
                path.count() + value
            })
            .max()
            .unwrap_or(0);
        if deepest > format::MAX_DEPTH || format::lone_surrogate(&body).is_some() {
            // The ordinary commit reports these exactly.
            return Ok(None);
        }
        let commit = |batch, unwound: &mut Vec<Outcome>| {
            // A leader that unwinds may leave the kept document changed by patches it
            // did not write: the document is dropped (the next read replays the file).
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_batch(batch, unwound)
            }))
            .unwrap_or_else(|panic| {
                *self.journal.cache.lock() = None;
                std::panic::resume_unwind(panic)
            })
        };
        match self.journal.group.submit(Request { ops, body }, commit) {
            Outcome::Done(generation) => Ok(Some(generation)),
            Outcome::Fallback => Ok(None),
            Outcome::Failed(e) => Err(e),
        }
    }

    /// The group leader's work: one lock, the patches applied in turn to the kept
    /// document, their records written with one `pwrite` and flushed with one
    /// `fdatasync`. Each request's outcome, in order. `unwound` receives, before the
    /// records are written, what each caller is told should this leader unwind.
    fn commit_batch(&self, batch: Vec<Request>, unwound: &mut Vec<Outcome>) -> Vec<Outcome> {
        let fallback = |n: usize| (0..n).map(|_| Outcome::Fallback).collect();
        let started = Instant::now();
        let Ok(Locked { guard, .. }) = self.lock_and_read("update", false) else {
            return fallback(batch.len());
        };
        // The settings as recorded now (`lock_and_read` applied them): a schema, size
        // limit or free-space floor recorded since the batch was queued needs the
        // whole document, so the transaction path.
        let config = self.config();
        if guard.check_process().is_err()
            || config.schema.is_some()
            || config.max_bytes.is_some()
            || config.min_free_bytes.is_some()
            || !matches!(recorded_format(self, &guard), Ok(Format::Journal))
        {
            return fallback(batch.len());
        }
        let mut slot = self.journal.cache.lock();
        let fresh = match slot.as_mut() {
            Some(cache) if cache.acl_known => {
                refresh(self, cache, Some((guard.sidecar(), guard.pid()))).unwrap_or(false)
            }
            _ => false,
        };
        if !fresh {
            *slot = None;
            drop(slot);
            // Fill the cache under this lock (a full read), then use it.
            if !matches!(self.journal_read_locked(&guard), Ok(Some(_))) {
                return fallback(batch.len());
            }
            slot = self.journal.cache.lock();
        }
        let Some(cache) = slot.as_mut() else {
            return fallback(batch.len());
        };
        let Some(pos) = cache.replayed.journal.clone() else {
            return fallback(batch.len());
        };
        if !cache.replayed.appendable {
            return fallback(batch.len());
        }
        // The descriptor, and whether its flush vouches for every record before the
        // batch (durable.rs); if not, each commit runs as a transaction, which compacts.
        let kept = std::mem::take(&mut cache.file_checked)
            .then(|| cache.file.take())
            .flatten();
        // No code of the callers' runs in a batch: the refresh's check just above stands.
        let Ok(kept) = super::writer(guard.sidecar(), kept, &pos, super::SinceCheck::NothingRan)
        else {
            return fallback(batch.len());
        };
        let id = super::durable::JournalId::of(pos.id, &pos.header);
        let lock_file = Arc::clone(guard.lock_file());
        if self.opts.durability == crate::write::Durability::Full
            && !kept
                .witness
                .prove(&lock_file, id, pos.end, super::durable::PROVE_WAIT, || {
                    super::record_time(&kept.file, pos.last_record?.0)
                })
        {
            return fallback(batch.len());
        }
        // An older copy of the journal put back (see `journal_commit`): each commit
        // runs as a transaction, which refuses it.
        if guard.published_for_header(pos.header.checksum()) > pos.end {
            return fallback(batch.len());
        }
        // The lock must still be the lock file at its path (see `journal_commit`): if a
        // cleanup removed it, each commit runs as a transaction, which says so.
        if self.write_dir().and_then(|dir| guard.verify(dir)).is_err() {
            return fallback(batch.len());
        }
        let claim = kept.witness.claim(&lock_file, id, pos.end);
        let limit = super::threshold(
            cache.replayed.snapshot_len,
            self.config().settings.journal_max_bytes,
        );
        let mut records = Vec::new();
        let mut last_len = 0;
        let mut generation = cache.generation;
        let mut outcomes = Vec::with_capacity(batch.len());
        cache.spare = None;
        let doc = Arc::make_mut(&mut cache.doc);
        let mut undone = false;
        // Every record of the batch is this store's commit, flushed now: the first
        // names its writer unless this store wrote the record before it, the others
        // are "the same as the record before".
        // Each record claims durable what the descriptor knew before the batch: the
        // records before it in the batch are flushed with it, by the same flush. Each
        // names the record before it, in the batch or the journal.
        let pid = guard.pid();
        let mut prev = pos.prev();
        for request in batch {
            if request.ops.0.is_empty() {
                outcomes.push(Outcome::Done(generation));
                continue;
            }
            let next = generation + 1;
            let record = (next <= format::MAX_GENERATION)
                .then(|| {
                    let meta = super::RecordMeta::now(
                        &crate::history::Change::Commit,
                        records.is_empty() && !pos.last_ours,
                        claim,
                        prev,
                        pid,
                    );
                    encode_record(next, Kind::Patch, Some(&meta), &request.body)
                })
                .flatten();
            let Some(record) = record.filter(|r| {
                pos.end + (records.len() + r.len()) as u64 - HEADER_LEN as u64 <= limit
            }) else {
                // Past the threshold (this commit compacts) or too long a record.
                outcomes.push(Outcome::Fallback);
                continue;
            };
            // A patch that does not apply changes nothing (json_patch undoes the
            // operations it applied) and writes nothing. An undone removal leaves
            // its object's keys in another order, though (the removal moved the last
            // key into the gap, the undo appends the key): past the first operation,
            // the kept document is dropped after the batch (the next read replays
            // the file's order).
            if let Err(e) = json_patch::patch(doc, &request.ops) {
                undone |= e.operation > 0;
                outcomes.push(Outcome::Failed(Error::Invalid {
                    path: self.path().to_path_buf(),
                    message: format!("the patch does not apply: {e}"),
                }));
                continue;
            }
            last_len = record.len();
            prev = super::le64(&record[record.len() - 8..]);
            records.extend_from_slice(&record);
            generation = next;
            outcomes.push(Outcome::Done(next));
        }
        if records.is_empty() {
            if undone {
                *slot = None;
            } else {
                cache.file = Some(kept);
            }
            return outcomes;
        }
        // From here the records may be in the journal: should this leader unwind (a
        // panic in code it calls, such as a metrics recorder or a tracing subscriber),
        // their callers are told that the outcome is unknown, and none is handed back
        // to run again, which could apply it twice.
        let journal = guard.sidecar().root().join(super::JOURNAL);
        *unwound = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Done(g) => Outcome::Failed(super::record_left(
                    self.path(),
                    *g,
                    format!(
                        "its record was written to the journal `{}`, and the group commit that wrote it panicked before reporting (see the panic's message)",
                        journal.display()
                    ),
                )),
                _ => Outcome::Fallback,
            })
            .collect();
        let seq = match super::write_record(&kept, &pos, &records) {
            Ok(seq) => seq,
            Err(failed) if failed.left.is_some() => {
                // Part of the records stays in the journal (whole ones among them,
                // which every reader replays): no commit of the batch is handed back
                // or reported not applied; each is unknown, and the store refuses
                // writes until it is opened again (a read then decides).
                *slot = None;
                self.poison();
                return outcomes
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Done(g) => {
                            self.recorder.failure("outcome_unknown");
                            Outcome::Failed(super::append_left(self.path(), g, &journal, &failed))
                        }
                        other => other,
                    })
                    .collect();
            }
            Err(super::AppendFailed { error: e, .. }) => {
                // Nothing reached the journal (the bytes were zeroed again): the
                // commits did not happen; each runs as a transaction, which reports
                // what it finds.
                tracing::debug!(target: "statesafe", "a group commit's write failed: {e}");
                *slot = None;
                return outcomes
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Done(_) => Outcome::Fallback,
                        other => other,
                    })
                    .collect();
            }
        };
        let end = pos.end + records.len() as u64;
        let mut pos = pos;
        if end > pos.size {
            pos.size = super::grown(pos.size, end);
        }
        pos.last_record = Some((
            end - last_len as u64,
            super::le64(&records[records.len() - 8..]),
        ));
        pos.end = end;
        pos.dirty_to = end;
        pos.last_ours = true;
        cache.generation = generation;
        cache.replayed.max_seen = generation;
        cache.replayed.journal = Some(pos);
        cache.file = Some(Arc::clone(&kept));
        let perms = cache.perms;
        if undone {
            *slot = None;
        }
        drop(slot);
        // As a transaction's append: a `chmod` of the state file reaches the sidecar
        // and the journal now.
        if let Err(e) = guard.sidecar().enforce(perms, generation) {
            self.bookkeeping_failed(generation, "giving the sidecar the file's permissions", &e);
        }
        let slot = guard.slot();
        let pending = super::Pending {
            kept,
            lock: lock_file,
            sidecar: Arc::clone(guard.sidecar()),
            slot,
            id,
            seq,
            end,
            generation,
            started: std::time::Instant::now(),
            contended: guard
                .contended
                .then(|| (end - records.len() as u64, records.clone())),
        };
        // Flushed once the lock is released: other processes append meanwhile. The
        // batch slot is kept until then, so this store's next batch appends after it.
        // (A lock-file description without a slot of its own publishes in the shared
        // one, with the lock held: it is released after the flush.)
        let held = if slot.own() {
            guard.release();
            None
        } else {
            Some(guard)
        };
        let fsync = if self.opts.durability == crate::write::Durability::None {
            std::time::Duration::ZERO
        } else {
            match self.finish_journal(pending) {
                Ok(fsync) => fsync,
                Err(e) => {
                    *self.journal.cache.lock() = None;
                    self.poison();
                    let cause = e.to_string();
                    return outcomes
                        .into_iter()
                        .map(|o| match o {
                            Outcome::Done(g) => {
                                let e = super::flush_failed(
                                    self.path(),
                                    g,
                                    std::io::Error::new(e.kind(), cause.clone()),
                                );
                                self.recorder.failure(e.kind());
                                Outcome::Failed(e)
                            }
                            other => other,
                        })
                        .collect();
                }
            }
        };
        drop(held);
        #[cfg(test)]
        DURABLE.fetch_max(generation, std::sync::atomic::Ordering::SeqCst);
        for o in &outcomes {
            if matches!(o, Outcome::Done(_)) {
                self.recorder.commit(started.elapsed(), fsync);
            }
        }
        outcomes
    }
}

/// The highest generation a group commit has flushed (tests check that no caller is
/// acknowledged before it).
#[cfg(test)]
pub(crate) static DURABLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a store keeps for journal mode: the cached document and the group commit.
#[derive(Default)]
pub(crate) struct Kept {
    pub(crate) cache: parking_lot::Mutex<Option<Cache>>,
    /// The settings file last read as saying `journal`, once settled
    /// ([`recorded_format`]).
    settings: parking_lot::Mutex<Option<Ident>>,
    /// Full reads this store has made (the cache is filled from the second on).
    full_reads: std::sync::atomic::AtomicU64,
    pub(crate) group: Group,
}

/// One commit waiting for a group: the patch and its encoding.
pub(crate) struct Request {
    ops: json_patch::Patch,
    body: Vec<u8>,
}

/// How a commit of a group ended.
pub(crate) enum Outcome {
    /// Durable, as this generation.
    Done(u64),
    /// Not written: the caller commits it as a transaction.
    Fallback,
    Failed(Error),
}

/// Group commit: commits that arrive while a batch is being written and flushed wait,
/// and are written together by the next leader with one flush. A caller returns only
/// with its own outcome, so only after the flush that covered its record.
#[derive(Default)]
pub(crate) struct Group {
    state: parking_lot::Mutex<GroupState>,
    turn: parking_lot::Condvar,
    /// Signalled when a request joins the queue while a leader gathers.
    joined: parking_lot::Condvar,
}

#[derive(Default)]
struct GroupState {
    leading: bool,
    /// A leader is waiting for the queue to fill ([`GATHER`]).
    gathering: bool,
    next_ticket: u64,
    queue: Vec<(u64, Request)>,
    done: std::collections::HashMap<u64, Outcome>,
    /// How many requests the last batches held: the callers committing now.
    expect: usize,
}

/// How long a new leader waits at most for the callers of the batch before it (just
/// acknowledged, coming back with their next commit) to join its queue: a batch then
/// holds every committing thread instead of about half of them (the others are
/// still being woken when the leader takes the queue), for one flush.
const GATHER: Duration = Duration::from_micros(100);

impl Group {
    /// Queues `request`; the first caller that finds no leader leads: it takes the
    /// whole queue and runs `commit` on it, publishes every outcome, and hands over.
    /// Should `commit` unwind, each caller is told what `commit` last put in its second
    /// argument for it (by default [`Outcome::Fallback`]), and the leader's panic goes
    /// on.
    fn submit(
        &self,
        request: Request,
        commit: impl Fn(Vec<Request>, &mut Vec<Outcome>) -> Vec<Outcome>,
    ) -> Outcome {
        let mut st = self.state.lock();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, request));
        if st.gathering {
            self.joined.notify_one();
        }
        loop {
            if let Some(outcome) = st.done.remove(&ticket) {
                return outcome;
            }
            if st.leading {
                self.turn.wait(&mut st);
                continue;
            }
            st.leading = true;
            if st.queue.len() < st.expect {
                let until = Instant::now() + GATHER;
                st.gathering = true;
                while st.queue.len() < st.expect {
                    if self.joined.wait_until(&mut st, until).timed_out() {
                        break;
                    }
                }
                st.gathering = false;
            }
            // What to wait for next time: this many, or one fewer when fewer came (a
            // caller stopped committing: one wait of `GATHER` at most per caller gone).
            let gathered = st.queue.len();
            st.expect = gathered.max(st.expect.saturating_sub(1));
            let (tickets, batch): (Vec<u64>, Vec<Request>) =
                std::mem::take(&mut st.queue).into_iter().unzip();
            drop(st);
            let mut unwound = Vec::new();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                commit(batch, &mut unwound)
            }));
            st = self.state.lock();
            st.leading = false;
            let (outcomes, panic) = match ran {
                Ok(outcomes) => (outcomes, None),
                Err(panic) => (unwound, Some(panic)),
            };
            let mut outcomes = outcomes.into_iter();
            for t in tickets {
                st.done
                    .insert(t, outcomes.next().unwrap_or(Outcome::Fallback));
            }
            self.turn.notify_all();
            if let Some(panic) = panic {
                drop(st);
                std::panic::resume_unwind(panic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;
    use crate::settings::Settings;

    fn journal_store(dir: &std::path::Path) -> Store {
        let store: Store = Store::open(dir.join("state.json")).unwrap();
        let settings = Settings {
            format: Format::Journal,
            ..Settings::default()
        };
        store.create_with(&settings, json!({})).unwrap();
        store
    }

    fn request(patch: Value) -> Request {
        Request {
            ops: serde_json::from_value(patch.clone()).unwrap(),
            body: serde_json::to_vec(&patch).unwrap(),
        }
    }

    #[test]
    fn threads_sharing_a_store_are_acknowledged_only_once_flushed_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        const THREADS: usize = 8;
        const EACH: usize = 25;
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let store = &store;
                s.spawn(move || {
                    store
                        .apply_patch(&json!([{"op": "add", "path": format!("/t{t}"), "value": []}]))
                        .unwrap();
                    for i in 0..EACH {
                        let patch = json!([{"op": "add", "path": format!("/t{t}/-"), "value": i}]);
                        let generation = store.apply_patch(&patch).unwrap();
                        // Acknowledged only after a flush that covered this record.
                        assert!(DURABLE.load(Ordering::SeqCst) >= generation);
                    }
                });
            }
        });
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        let snap = other.load().unwrap();
        assert_eq!(snap.generation, 1 + (THREADS * (EACH + 1)) as u64);
        for t in 0..THREADS {
            let want: Vec<usize> = (0..EACH).collect();
            assert_eq!(snap.state[format!("t{t}")], json!(want), "thread {t}");
        }
        assert_eq!(store.load().unwrap().state, snap.state);
    }

    #[test]
    fn a_failed_flush_fails_every_commit_of_its_batch_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        store
            .apply_patch(&json!([{"op": "add", "path": "/a", "value": 0}]))
            .unwrap();
        let batch: Vec<Request> = (1..=5)
            .map(|i| request(json!([{"op": "replace", "path": "/a", "value": i}])))
            .collect();
        crate::journal::FAIL_FLUSH.store(true, Ordering::SeqCst);
        let outcomes = store.commit_batch(batch, &mut Vec::new());
        assert_eq!(outcomes.len(), 5);
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Outcome::Failed(Error::OutcomeUnknown { generation, .. }) => {
                    assert_eq!(generation, 3 + i as u64);
                }
                Outcome::Failed(e) => panic!("commit {i}: {e}"),
                Outcome::Done(g) => panic!("commit {i} acknowledged as {g}"),
                Outcome::Fallback => panic!("commit {i} fell back"),
            }
        }
        // The store is poisoned. The records stay in the journal: flushed after the
        // lock is released, they may have later records after them, which zeroing
        // would cut off; their commits are unknown, not failed, and a reader may see
        // them (here the kernel really holds them, so every reader does).
        assert!(matches!(
            store.apply_patch(&json!([{"op": "replace", "path": "/a", "value": 9}])),
            Err(Error::Poisoned { .. })
        ));
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        assert_eq!(other.load().unwrap().state, json!({"a": 5}));
        assert_eq!(other.load().unwrap().generation, 7);
    }

    /// A publication of the durable end that fails (`EIO` on the lock file's slot)
    /// used to be ignored: the commit stood, but nothing said that its record had no
    /// witness, so a journal deleted or put back older before the next publication
    /// lost it silently (`Store::refuse_deleted_journal` reads the slots). The commit
    /// still stands (its flush succeeded; failing it would invite a second run of a
    /// durable change), and the failure is reported as bookkeeping that failed, for a
    /// transaction and for a group commit.
    #[test]
    fn a_failed_publication_is_reported_and_its_commit_stands() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let store: Store = Store::options()
            .on_event(move |e| sink.lock().push(e.clone()))
            .open(dir.path().join("state.json"))
            .unwrap();
        let settings = Settings {
            format: Format::Journal,
            ..Settings::default()
        };
        store.create_with(&settings, json!({"a": 0})).unwrap();
        store.update(|s| s["a"] = json!(1)).unwrap();
        assert!(seen.lock().is_empty(), "{:?}", seen.lock());
        let publication_failed = |generation: u64| {
            let events = std::mem::take(&mut *seen.lock());
            assert!(
                events.iter().any(|e| matches!(
                    e,
                    crate::Event::BookkeepingFailed { generation: g, what, .. }
                        if *g == generation && what.contains("durable end") && what.contains("lock")
                )),
                "generation {generation}: {events:?}"
            );
        };
        crate::journal::FAIL_PUBLISH.store(true, Ordering::SeqCst);
        store.update(|s| s["a"] = json!(2)).unwrap();
        publication_failed(3);
        crate::journal::FAIL_PUBLISH.store(true, Ordering::SeqCst);
        assert_eq!(
            store
                .apply_patch(&json!([{"op": "replace", "path": "/a", "value": 3}]))
                .unwrap(),
            4
        );
        publication_failed(4);
        assert!(store.stats().failures.values().sum::<u64>() >= 2);
        // Nothing is poisoned, and every commit stands.
        store.update(|s| s["a"] = json!(4)).unwrap();
        assert!(seen.lock().is_empty(), "{:?}", seen.lock());
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        assert_eq!(other.load().unwrap().state, json!({"a": 4}));
        assert_eq!(other.load().unwrap().generation, 5);
    }

    #[test]
    fn a_batch_write_cut_short_whose_bytes_cannot_be_erased_is_unknown_not_handed_back() {
        // The batch's `pwrite` stops one byte short (ENOSPC) after its first records
        // reached the file whole, and zeroing them again fails: those records are in
        // the journal, and every reader replays them. Handing the batch back would run
        // each commit again as a transaction (applied twice); reporting it failed would
        // be contradicted by the next read. The outcome is unknown, and the store
        // refuses writes until opened again.
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        store
            .apply_patch(&json!([{"op": "add", "path": "/l", "value": []}]))
            .unwrap();
        let batch: Vec<Request> = (0..3)
            .map(|i| request(json!([{"op": "add", "path": "/l/-", "value": i}])))
            .collect();
        crate::journal::APPEND_FAULTS.with(|f| f.set((1, true)));
        let outcomes = store.commit_batch(batch, &mut Vec::new());
        assert_eq!(outcomes.len(), 3);
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Outcome::Failed(e @ Error::OutcomeUnknown { .. }) => {
                    let cause = std::error::Error::source(&e).unwrap().to_string();
                    assert!(cause.contains("left there"), "{cause}");
                }
                Outcome::Failed(e) => panic!("commit {i} failed: {e}"),
                Outcome::Done(g) => panic!("commit {i} acknowledged as {g}"),
                Outcome::Fallback => panic!("commit {i} was handed back to run again"),
            }
        }
        assert!(matches!(
            store.apply_patch(&json!([{"op": "add", "path": "/l/-", "value": 9}])),
            Err(Error::Poisoned { .. })
        ));
        // What a reader finds: the records that reached the file whole, each once.
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        assert_eq!(other.get().unwrap(), json!({"l": [0, 1]}));
    }

    /// A batch's write cut short after whole records reached the file, erased again:
    /// it used to be handed back as never written, each commit to run again as a
    /// transaction. But a lock-free reader replays every whole record the file holds
    /// (flushed or not), so one reading in that instant served a version that then
    /// went away: generation 4 with `[0, 1]`, then generation 2 again, and the handed
    /// back commits (or another writer's) gave generation 3 and 4 other contents. Whole
    /// records that reached the file are not erased: each commit's outcome is unknown
    /// (as when they cannot be erased), and no reader sees the state go back.
    #[test]
    fn a_reader_racing_a_batch_cut_short_never_sees_its_records_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = journal_store(dir.path());
        store
            .apply_patch(&json!([{"op": "add", "path": "/l", "value": []}]))
            .unwrap();
        let batch: Vec<Request> = (0..3)
            .map(|i| request(json!([{"op": "add", "path": "/l/-", "value": i}])))
            .collect();
        let seen = Arc::new(parking_lot::Mutex::new(None));
        let sink = Arc::clone(&seen);
        let reader_path = path.clone();
        crate::journal::BEFORE_ERASE.with(|r| {
            *r.borrow_mut() = Some(Box::new(move || {
                let reader: Store = Store::open(&reader_path).unwrap();
                let snap = reader.load().unwrap();
                *sink.lock() = Some((snap.state, snap.generation));
            }));
        });
        crate::journal::APPEND_FAULTS.with(|f| f.set((1, false)));
        let outcomes = store.commit_batch(batch, &mut Vec::new());
        let (seen_state, seen_generation) = seen.lock().take().expect("the reader ran");
        assert_eq!((&seen_state, seen_generation), (&json!({"l": [0, 1]}), 4));
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Outcome::Failed(Error::OutcomeUnknown { .. }) => {}
                Outcome::Failed(e) => panic!("commit {i} failed: {e}"),
                Outcome::Done(g) => panic!("commit {i} acknowledged as {g}"),
                Outcome::Fallback => {
                    panic!("commit {i} was handed back to run again, after a reader served it")
                }
            }
        }
        let other: Store = Store::open(&path).unwrap();
        let now = other.load().unwrap();
        assert_eq!((now.state, now.generation), (seen_state, seen_generation));
        other
            .apply_patch(&json!([{"op": "add", "path": "/l/-", "value": 9}]))
            .unwrap();
        assert_eq!(other.load().unwrap().state, json!({"l": [0, 1, 9]}));
        assert_eq!(other.load().unwrap().generation, 5);
    }

    #[test]
    fn a_write_cut_short_whose_bytes_are_erased_hands_the_batch_back_once() {
        // A write cut short inside the batch's first record (torn: no reader replays
        // it), whose bytes are zeroed again: nothing of the batch is in the journal,
        // each commit runs once more as a transaction, and each is applied once. (Cut
        // after whole records, see the test above.)
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        store
            .apply_patch(&json!([{"op": "add", "path": "/l", "value": []}]))
            .unwrap();
        let long = "x".repeat(4000);
        let batch: Vec<Request> = [json!(long), json!(1), json!(2)]
            .into_iter()
            .map(|v| request(json!([{"op": "add", "path": "/l/-", "value": v}])))
            .collect();
        // The two short records are far shorter than 2,000 bytes: the cut tears the
        // first.
        crate::journal::APPEND_FAULTS.with(|f| f.set((2000, false)));
        let outcomes = store.commit_batch(batch, &mut Vec::new());
        assert_eq!(
            crate::journal::APPEND_FAULTS.with(std::cell::Cell::get),
            (0, false),
            "the batch was not written"
        );
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Fallback)));
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        assert_eq!(other.get().unwrap(), json!({"l": []}));
    }

    #[test]
    fn a_transactions_append_cut_short_is_unknown_unless_its_bytes_are_erased() {
        // One record: a prefix of it is never read as a commit (a torn tail), but the
        // rule is the batch's: bytes that could not be erased make the outcome
        // unknown, never "not applied".
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        store.update(|s| s["n"] = 1.into()).unwrap();
        crate::journal::APPEND_FAULTS.with(|f| f.set((1, false)));
        let err = store.update(|s| s["n"] = 2.into()).unwrap_err();
        assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
        // Eight bytes short, not one: the journal's space past its end is zeros, so
        // a record whose missing last byte is 0 (its checksum's, one run in 256) is in
        // the file whole, and reading it as the commit it is made this test fail by
        // chance. Its last eight bytes all 0: one run in 2^64.
        crate::journal::APPEND_FAULTS.with(|f| f.set((8, true)));
        let err = store.update(|s| s["n"] = 3.into()).unwrap_err();
        assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
        assert!(matches!(
            store.update(|s| s["n"] = 4.into()),
            Err(Error::Poisoned { .. })
        ));
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        assert_eq!(other.get().unwrap(), json!({"n": 1}));
        other.update(|s| s["n"] = 5.into()).unwrap();
        assert_eq!(other.get().unwrap(), json!({"n": 5}));
    }

    /// A metrics recorder that panics when a commit is counted (user code the library
    /// calls after a batch's records are written and flushed).
    struct PanicsOnCommit;

    impl metrics::Recorder for PanicsOnCommit {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            assert_ne!(key.name(), "statesafe_commits_total", "the recorder panics");
            metrics::Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn a_leader_that_panics_after_writing_its_batch_hands_no_commit_back_to_run_again() {
        // Three callers queue while a leader is marked as running; the one that leads
        // next takes all three, writes and flushes their records, and then panics in
        // the user's metrics recorder. The two others must not run their commits again
        // (as transactions: each element would be appended twice); they are told the
        // outcome is unknown.
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        store
            .apply_patch(&json!([{"op": "add", "path": "/l", "value": []}]))
            .unwrap();
        store.journal.group.state.lock().leading = true;
        let results = std::thread::scope(|s| {
            let callers: Vec<_> = (0..3)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        let patch = json!([{"op": "add", "path": "/l/-", "value": t}]);
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            metrics::with_local_recorder(&PanicsOnCommit, || {
                                store.apply_patch(&patch)
                            })
                        }))
                    })
                })
                .collect();
            while store.journal.group.state.lock().queue.len() < 3 {
                std::thread::yield_now();
            }
            let mut st = store.journal.group.state.lock();
            st.leading = false;
            store.journal.group.turn.notify_all();
            drop(st);
            callers
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>()
        });
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        let mut list: Vec<u64> = serde_json::from_value(other.get().unwrap()["l"].clone()).unwrap();
        list.sort_unstable();
        assert_eq!(list, vec![0, 1, 2], "a commit was applied twice (or lost)");
        assert_eq!(
            results.iter().filter(|r| r.is_err()).count(),
            1,
            "the leader panicked"
        );
        for r in results.into_iter().flatten() {
            match r {
                Err(e @ Error::OutcomeUnknown { .. }) => {
                    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
                    assert!(text.contains("journal"), "{text}");
                    assert!(e.hint().unwrap().contains("read"), "{e}");
                }
                other => panic!("a follower was told {other:?}"),
            }
        }
    }

    #[test]
    fn the_next_transaction_decodes_a_spare_equal_to_the_kept_document() {
        let dir = tempfile::tempdir().unwrap();
        let store = journal_store(dir.path());
        let other: Store = Store::open(dir.path().join("state.json")).unwrap();
        store
            .update(|s| *s = json!({"z": [1, {"x": "y"}], "a": 2.5, "m": "é\n"}))
            .unwrap();
        let spare = |store: &Store| {
            let slot = store.journal.cache.lock();
            let c = slot.as_ref().expect("the store keeps its document");
            c.spare.as_ref().map(|(g, tree)| {
                assert_eq!(
                    (*g, tree),
                    (c.generation, &*c.doc),
                    "a spare unlike the document"
                );
                serde_json::to_string(tree).unwrap()
            })
        };
        for i in 0..4 {
            store
                .update(|s| {
                    s["n"] = i.into();
                    s["z"][1]["x"] = format!("y{i}").into();
                })
                .unwrap();
        }
        // Key order included: the next transaction's state is the document as committed.
        let kept = spare(&store).expect("no spare after this store's own append");
        let seen = store.update(|s| serde_json::to_string(s).unwrap()).unwrap();
        assert_eq!(seen, kept);
        assert_eq!(seen, r#"{"z":[1,{"x":"y3"}],"a":2.5,"m":"é\n","n":3}"#);
        // Taken by that transaction (which changed nothing, so made no other).
        assert_eq!(spare(&store), None);
        // Another store's commit since: the spare stands for an older version and is
        // not used; the transaction sees the other store's commit.
        store.update(|s| s["n"] = 4.into()).unwrap();
        assert!(spare(&store).is_some());
        other.update(|s| s["n"] = 10.into()).unwrap();
        assert_eq!(store.update(|s| s["n"].clone()).unwrap(), 10);
        assert_eq!(store.get().unwrap()["n"], 10);
    }

    #[test]
    fn a_fresh_descriptor_compacts_after_records_nobody_published() {
        // The records' writers died before publishing their flushes (here: the
        // published ends are wiped). A store with a descriptor opened after them cannot
        // vouch for them: it compacts (the snapshot gets its commit) instead of
        // appending. The mutation check runs this test on `journal-ack-unproven`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = journal_store(dir.path());
        for i in 0..3 {
            store
                .apply_patch(&json!([{"op": "add", "path": "/a", "value": i}]))
                .unwrap();
        }
        let lock = store.local().target.sidecar().join("lock");
        let len = std::fs::metadata(&lock).unwrap().len();
        assert!(len > 4096, "nothing was published");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&lock)
            .unwrap()
            .write_all_at(&vec![0; (len - 4096) as usize], 4096)
            .unwrap();
        let fresh: Store = Store::open(&path).unwrap();
        fresh.update(|s| s["a"] = 7.into()).unwrap();
        let snapshot: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            snapshot,
            json!({"a": 7}),
            "the commit was appended after records no flush vouched for"
        );
    }

    #[test]
    fn each_caller_gets_its_own_outcome_after_its_batch_ran() {
        let group = Group::default();
        let ran = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (group, ran) = (&group, &ran);
                s.spawn(move || {
                    let commit = |batch: Vec<Request>, _: &mut Vec<Outcome>| {
                        let mut ran = ran.lock().unwrap();
                        batch
                            .into_iter()
                            .map(|r| {
                                let n: u64 = serde_json::from_slice(&r.body).unwrap();
                                ran.push(n);
                                if n.is_multiple_of(3) {
                                    Outcome::Failed(Error::Poisoned {
                                        path: n.to_string().into(),
                                    })
                                } else {
                                    Outcome::Done(n)
                                }
                            })
                            .collect()
                    };
                    let out = group.submit(
                        Request {
                            ops: json_patch::Patch(Vec::new()),
                            body: t.to_string().into_bytes(),
                        },
                        commit,
                    );
                    // Its own outcome, and only once its batch ran.
                    assert!(ran.lock().unwrap().contains(&t));
                    match out {
                        Outcome::Done(n) => assert_eq!(n, t),
                        Outcome::Failed(Error::Poisoned { path }) => {
                            assert_eq!(path, std::path::PathBuf::from(t.to_string()))
                        }
                        _ => panic!("unexpected outcome for {t}"),
                    }
                });
            }
        });
        let mut ran = ran.into_inner().unwrap();
        ran.sort_unstable();
        assert_eq!(ran, (0..8).collect::<Vec<_>>(), "each request ran once");
    }
}
