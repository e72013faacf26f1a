//! The writers' lock: a kernel `flock` on a sidecar file that is never deleted.
//!
//! - `flock` belongs to the open file description, so the kernel frees it when the
//!   holder dies, however it dies: there are no stale locks and no lock-breaking by age.
//! - Each [`Store`](crate::Store) opens the lock file once and serializes its own
//!   threads with a mutex before taking the `flock`; two stores for the same file in one
//!   process have separate descriptions, so `flock` excludes them from each other too.
//! - The holder writes a one-line JSON [`Holder`] record into the lock file, so a writer
//!   that times out can say who holds the lock. The record also names the temporary file
//!   the holder is about to create and the last generation it committed: the next holder
//!   removes that temporary file if the previous holder died before cleaning up.
//! - Only a user who may write the state file takes the lock (the lock file is opened
//!   read-write, through the checked [`Sidecar`]), and a holder verifies that the inode
//!   it locked is still the lock file at its path, after locking and again right before
//!   a commit's rename: a lock file deleted while held cannot give two holders a commit
//!   each (`docs/design.md`, "The lock cannot split").

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::error::{Error, LockLoss, Op, Result};
use crate::paths::Target;
use crate::sidecar::{Sidecar, Use};
use crate::sys::{self, Access};
use crate::write::Perms;

/// Size of the record area at the start of the lock file. Records are padded with
/// spaces to this size so that each is written with one `pwrite`, never truncated.
const RECORD_SIZE: usize = 2048;

/// Longest command line kept in a record.
const MAX_COMMAND: usize = 1024;

/// Who holds (or last held) a state file's lock, as recorded by the holder itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// User name (or numeric id).
    pub user: String,
    /// Command line of the holding process.
    pub command: String,
    /// What it is doing (`update`, `replace`, `lock`, ...).
    pub operation: String,
    /// When it took the lock (RFC 3339, UTC).
    pub since: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (`{}`) on host {} as user {}, doing {} since {}",
            self.pid, self.command, self.host, self.user, self.operation, self.since
        )
    }
}

/// The record a holder writes into the lock file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
    /// The temporary file the holder may have created (removed by the next holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp: Option<String>,
    /// The last generation committed through this lock (a hint, not synced to disk).
    #[serde(default, deserialize_with = "crate::format::bounded_generation")]
    pub last_generation: u64,
    /// A generation the state is known to have reached, from a record whose
    /// `last_generation` could not be taken for the last one (it named its holder's
    /// temporary file, or came from another boot: see [`LockFile::acquire`]). Not the
    /// last generation (the put-back check never takes it for one), but evidence all
    /// the same: generations are counted past it, and a missing file with it above 0
    /// was deleted (review20, finding 5: zeroing it erased the only evidence).
    #[serde(
        default,
        deserialize_with = "crate::format::bounded_generation",
        skip_serializing_if = "is_zero"
    )]
    pub at_least: u64,
    /// The last generation recorded in the history by a holder (a hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u64>,
    /// The boot of the machine the record was written in ([`sys::boot_id`]): the
    /// record is never synced, so one from another boot may be older than the last
    /// commit (a power loss kept an earlier write of it).
    /// (Borrowed from [`sys::boot_id`] when this process writes it: no allocation
    /// per acquisition.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<std::borrow::Cow<'static, str>>,
}

/// For serde's `skip_serializing_if`.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    /// The highest generation it shows: its last one, or the bound it keeps.
    pub(crate) fn known_generation(&self) -> u64 {
        self.last_generation.max(self.at_least)
    }

    fn parse(raw: &[u8]) -> Option<Record> {
        let pad = |b: &u8| b.is_ascii_whitespace() || *b == 0;
        // The padding is spaces: passed over eight at a time (most of the 2 KiB), then
        // whatever other whitespace or zeros, one at a time.
        let mut end = raw.len();
        loop {
            while end >= 8 && raw[end - 8..end] == [b' '; 8] {
                end -= 8;
            }
            match raw[..end].last() {
                Some(b) if pad(b) => end -= 1,
                _ => break,
            }
        }
        if end == 0 {
            return None;
        }
        serde_json::from_slice(&raw[..end]).ok()
    }

    /// Its bytes, padded to [`RECORD_SIZE`], and whether they hold all of it (`false`:
    /// the holder was left out to fit).
    #[cfg(test)]
    fn encode(&self) -> (Vec<u8>, bool) {
        let mut bytes = Vec::new();
        let whole = self.encode_into(&mut bytes);
        (bytes, whole)
    }

    /// [`Record::encode`] into `bytes` (cleared first): a holder passes the buffer of
    /// its last record, so that an acquisition allocates no 2 KiB buffer (glibc's
    /// `malloc` of a block that size first merges its small free blocks: about 7,700
    /// instructions, more than encoding the record).
    fn encode_into(&self, bytes: &mut Vec<u8>) -> bool {
        bytes.clear();
        // Written where it ends up (padded to RECORD_SIZE): no growing and copying.
        bytes.reserve(RECORD_SIZE);
        self.write_json(bytes, self.holder.as_ref());
        let mut whole = true;
        if bytes.len() > RECORD_SIZE - 1 {
            // Only a huge host name could do this; drop the holder rather than tear.
            bytes.clear();
            self.write_json(bytes, None);
            whole = false;
        }
        bytes.resize(RECORD_SIZE - 1, b' ');
        bytes.push(b'\n');
        whole
    }
}

impl Record {
    /// The record with `holder` as its holder, as `serde_json::to_writer` writes it
    /// (the fields in their order, those that are `None` left out), appended to
    /// `out`. Written by hand: serde's machinery cost about 3,000 instructions at
    /// every acquisition (`docs/benchmarks.md`, "jperf16").
    fn write_json(&self, out: &mut Vec<u8>, holder: Option<&Holder>) {
        use crate::json_out::{push_decimal, push_string};
        out.push(b'{');
        if let Some(h) = holder {
            out.extend_from_slice(b"\"holder\":{\"pid\":");
            push_decimal(out, h.pid.into());
            for (key, value) in [
                (&b",\"host\":"[..], &h.host),
                (b",\"user\":", &h.user),
                (b",\"command\":", &h.command),
                (b",\"operation\":", &h.operation),
                (b",\"since\":", &h.since),
            ] {
                out.extend_from_slice(key);
                push_string(out, value);
            }
            out.extend_from_slice(b"},");
        }
        if let Some(temp) = &self.temp {
            out.extend_from_slice(b"\"temp\":");
            push_string(out, temp);
            out.push(b',');
        }
        out.extend_from_slice(b"\"last_generation\":");
        push_decimal(out, self.last_generation);
        if self.at_least != 0 {
            out.extend_from_slice(b",\"at_least\":");
            push_decimal(out, self.at_least);
        }
        if let Some(history) = self.history {
            out.extend_from_slice(b",\"history\":");
            push_decimal(out, history);
        }
        if let Some(boot) = &self.boot {
            out.extend_from_slice(b",\"boot\":");
            push_string(out, boot);
        }
        out.push(b'}');
    }
}

/// This process's identity for holder records, computed once.
pub(crate) fn identity() -> &'static (String, String, String) {
    static ID: OnceLock<(String, String, String)> = OnceLock::new();
    ID.get_or_init(|| {
        let uid = sys::real_uid();
        let user = sys::user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
        // Without passwords: the command is recorded where other users may read it.
        let args: Vec<String> = sys::command_args()
            .iter()
            .map(|a| crate::secret::redact_arg(a))
            .collect();
        let mut command = shell_quoted(&args);
        if command.len() > MAX_COMMAND {
            let mut cut = MAX_COMMAND;
            while !command.is_char_boundary(cut) {
                cut -= 1;
            }
            command.truncate(cut);
            command.push_str("...");
        }
        (sys::hostname(), user, command)
    })
}

/// The arguments joined for a shell: those with spaces or quotes are single-quoted, so
/// the recorded command line reads unambiguously.
fn shell_quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The lock file of one state file, opened once per [`Store`](crate::Store).
#[derive(Debug)]
pub(crate) struct LockFile {
    /// The state file.
    target: Target,
    /// The lock file's path, for messages.
    path: PathBuf,
    /// `None` until first needed; the mutex also serializes this process's threads.
    /// (Boxed: a `Store` holds this inline, and the open lock is made once per store.)
    file: Mutex<Option<Box<OpenLock>>>,
    /// How this store's lock is held (boxed too: a `Store` holds this inline).
    holds: Box<Holds>,
}

#[derive(Debug)]
struct Holds {
    /// How long this store's recent lock holds lasted (nanoseconds, a moving
    /// average; 0: none yet): what a wait for the lock polls by ([`wait_for_flock`]).
    ns: AtomicU64,
    /// The thread that holds this store's lock now, by its [`THREAD`] number (0:
    /// none; a release clears it), and the process it took it in (a child forked
    /// without exec has a copy of both, and of the thread's number, but holds
    /// nothing). See [`refuse_nested`].
    thread: AtomicU64,
    pid: AtomicU32,
}

thread_local! {
    /// This thread's number, unique in the process (from 1): what [`Holds::thread`]
    /// names a holder by.
    static THREAD: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// This thread's [`THREAD`] number; 0 (no thread's) while the thread is torn down.
fn this_thread() -> u64 {
    THREAD.try_with(|n| *n).unwrap_or(0)
}

/// [`Error::Nested`] when this thread already holds this store's lock: the lock is not
/// reentrant, and waiting for it would wait for this thread until the timeout. Other
/// threads wait, and so does another store of the same file in this thread (it gets
/// `LockTimeout` naming the holder and its operation, which programs report to their
/// users: examples/python, seed 002).
fn refuse_nested(lock: &LockFile, pid: u32, operation: &str) -> Result<()> {
    let thread = lock.holds.thread.load(Ordering::Relaxed);
    let nested =
        thread != 0 && thread == this_thread() && lock.holds.pid.load(Ordering::Relaxed) == pid;
    if nested {
        return Err(Error::Nested {
            path: lock.target.given.clone(),
            operation: operation.to_string(),
        });
    }
    Ok(())
}

#[derive(Debug)]
struct OpenLock {
    /// Opened read-write: only a user who may write the state file takes the lock.
    /// Shared with journal commits that publish their durable end in it after the
    /// lock is released ([`Guard::lock_file`]).
    file: Arc<File>,
    /// The sidecar it is in, checked when opened.
    sidecar: Arc<Sidecar>,
    /// The process that opened it. A child forked without exec inherits the
    /// descriptor: the same open file description, so the same `flock`, which it would
    /// take at once while the parent holds it (a lock never conflicts with itself) and
    /// whose release would free the parent's. The child closes its copy (that frees
    /// nothing while the parent's is open) and opens a description of its own.
    pid: u32,
    /// The locked inode's device and number, by `fstat` when opened (a descriptor's
    /// inode never changes): what the name must still lead to.
    id: (u64, u64),
    /// The record this descriptor last wrote, and its bytes: the next acquisition that
    /// reads exactly these bytes back (nobody wrote a record since) takes the record
    /// without parsing it. Any other bytes are parsed.
    written: Option<(Vec<u8>, Record)>,
    /// The slot this description publishes the journal's durable ends in, claimed
    /// by the first journal commit that needs it ([`Guard::slot`]) and held while the
    /// description is open (`journal/durable.rs`, [`crate::journal::durable::Slot`]).
    slot: OnceLock<crate::journal::durable::Slot>,
    /// The bytes the last acquisition read: the holder record and the journal's
    /// published ends after it (`journal/durable.rs`, [`Guard::published_for_header`]),
    /// and how many were read. Kept, so that each acquisition neither allocates nor
    /// zeroes a buffer.
    read: (Vec<u8>, usize),
    /// The lock file's wake-up page (`sys/wake.rs`), mapped at the first wait or
    /// release: waiters sleep on it, a releaser wakes one. `None` inside: no page
    /// could be mapped, and waiters poll.
    wake: OnceLock<Option<sys::wake::Wake>>,
}

impl OpenLock {
    /// The wake-up page, mapped on first use.
    ///
    /// Mapped through a second open of the lock file (the same inode, checked), never
    /// through the locked descriptor: a mapping holds its open file description, and
    /// so would hold the `flock` on it for as long as any copy of the mapping lives; a
    /// child forked while the lock is held keeps its copy of the mapping (closing the
    /// inherited descriptor does not unmap it), and the lock would outlive a holder
    /// that died (`lock::the_lock_dies_with_its_holder_even_with_a_forked_child_alive`).
    /// Nobody ever locks the second description.
    fn wake(&self) -> Option<&sys::wake::Wake> {
        self.wake
            .get_or_init(|| {
                let (file, st) = self
                    .sidecar
                    .root()
                    .open_stat(
                        OsStr::new(LOCK_FILE),
                        Access::ReadWrite,
                        0,
                        Use::Write,
                        Op::OpenLock,
                    )
                    .ok()??;
                if (st.dev, st.ino) != self.id {
                    return None;
                }
                sys::wake::Wake::map(&file)
            })
            .as_ref()
    }
}

impl OpenLock {
    /// Whether the descriptor we lock is still the lock file at its path, and the
    /// sidecar still the directory at its name: a cleanup that removed or replaced
    /// either would let another writer lock a different inode.
    fn in_place(&self, state_dir: &OwnedFd) -> io::Result<bool> {
        let at_path = match sys::stat_at(self.sidecar.root().fd(), OsStr::new(LOCK_FILE)) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(self.id == (at_path.dev, at_path.ino) && self.sidecar.in_place(state_dir)?)
    }
}

/// The lock file's name in the sidecar.
const LOCK_FILE: &str = "lock";

/// The next lock hold's key ([`Guard::key`]); 0 is never one.
static HOLD_KEYS: AtomicU64 = AtomicU64::new(1);

/// A held lock; dropping it releases the lock.
pub(crate) struct Guard<'a> {
    inner: MutexGuard<'a, Option<Box<OpenLock>>>,
    /// The record as we wrote it; `previous` is what the last holder left.
    pub record: Record,
    pub previous: Record,
    locked: bool,
    /// Whether another process held the lock when this one first tried.
    pub contended: bool,
    /// When it was taken, and where its holding time is averaged when released.
    acquired: Instant,
    hold_ns: &'a std::sync::atomic::AtomicU64,
    /// Where the holding thread is kept while it holds ([`Holds::thread`]).
    holder_thread: &'a AtomicU64,
    /// This hold's key ([`Guard::key`]).
    key: u64,
    state: PathBuf,
    lock: PathBuf,
    /// Let through by a pass (see [`PASS_ENV`]): the pass file we hold `flock` on,
    /// instead of the lock file, whose lock the pass's maker holds.
    through: Option<File>,
    /// The pass this holder made for the commands it runs ([`Guard::open_pass`]).
    pass: Option<Pass>,
    /// Set by a caller that releases the lock right after its commit: a journal
    /// append may then leave its flush for after the release ([`Guard::deferred`]).
    pub may_defer: bool,
    /// A journal append whose flush waits for the lock's release (see
    /// `journal::Pending`); the caller finishes it after [`Guard::release`].
    pub deferred: Option<crate::journal::Pending>,
    /// This process's id, asked for once per lock hold (see [`LockFile::acquire`]): the
    /// checks and records made before the caller's code runs take it from here. After
    /// that code (which may fork), [`Guard::check_process`] and the release ask the
    /// kernel again.
    pid: u32,
    /// The effective user id the lock's checks were made as ([`Guard::euid`]).
    euid: u32,
}

/// The environment variable through which a holder of the writers' lock (`statesafe
/// lock FILE -- CMD`) lets CMD's own writers of FILE through, while every other writer
/// waits: comma-separated `DEV:INO:TOKEN` entries, one per lock file held (by device
/// and inode), each naming a pass file `pass-TOKEN` in that lock file's sidecar.
///
/// A writer that finds its lock file here takes `flock` on the pass file instead of
/// the lock file: writers let through by one pass still exclude each other. The pass's
/// maker, before it releases its own lock, takes the pass file's lock (so it waits for
/// the writers inside) and removes it; a writer checks, once it holds the pass file's
/// lock, that the file is still linked. So a pass never outlives its maker's lock: a
/// process that inherited the variable and runs on after the lock was released (a
/// daemon started by CMD) finds the pass gone and waits like everyone else, and a
/// variable set by hand with a made-up token opens nothing. A maker killed before it
/// could remove its pass leaves it behind, but not the POSIX record lock it held on
/// it from the start: a writer checks that lock when it enters and again right before
/// its rename, and without it is refused ([`LockLoss::HolderDied`]): it is CMD's, and
/// CMD read the state under the lock that died, so waiting like everyone else would
/// commit on a stale read. Such a pass file is never removed by statesafe: it is the
/// record that refuses them.
pub(crate) const PASS_ENV: &str = "STATESAFE_LOCKS";

/// The prefix of a pass file's name in the sidecar.
const PASS_PREFIX: &str = "pass-";

/// A pass made by a holder of the lock ([`Guard::open_pass`]).
struct Pass {
    file: File,
    name: String,
    /// Its entry in [`PASS_ENV`].
    entry: String,
}

impl LockFile {
    pub fn new(target: &Target) -> LockFile {
        LockFile {
            target: target.clone(),
            path: target.sidecar().join(LOCK_FILE),
            file: Mutex::new(None),
            holds: Box::new(Holds {
                ns: AtomicU64::new(0),
                thread: AtomicU64::new(0),
                pid: AtomicU32::new(0),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The longest sleep between tries in the first 100 ms of a wait: half this
    /// store's recent lock holds, between 20 and 500 µs. Holds are as long as a
    /// commit's work under the lock: a whole-file commit's two `fsync`s (a
    /// millisecond or more, so 500 µs), or a journal commit's append without its
    /// flush (tens of microseconds: sleeping 500 µs there left the lock free most of
    /// the time under contention).
    fn poll_cap(&self) -> Duration {
        match self.holds.ns.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Duration::from_micros(500),
            ns => Duration::from_nanos(ns / 2)
                .clamp(Duration::from_micros(20), Duration::from_micros(500)),
        }
    }

    /// Takes the lock, waiting at most `timeout` (zero: try once).
    ///
    /// `state_dir` is the state file's directory; `fresh` the permissions a new state
    /// file would get, for a sidecar made before the file exists. Only a user who may
    /// write the state file (or create it) can take the lock. After `flock` succeeds
    /// the lock is checked to be the lock file at its path; if a cleanup removed or
    /// replaced it (or the sidecar), it is opened and locked again.
    ///
    /// `pid`: this process's id ([`sys::pid`]), asked for by the caller before this call
    /// and with none of its user's code run since. It stands for every check in this
    /// call: a fork in between is another thread's, and a child has only the thread
    /// that forked, so this call never goes on in one.
    #[allow(clippy::too_many_arguments)]
    pub fn acquire(
        &self,
        state_dir: &OwnedFd,
        timeout: Duration,
        operation: &str,
        temp: Option<String>,
        fresh: impl Fn() -> Perms,
        pid: u32,
    ) -> Result<Guard<'_>> {
        let state = &self.target.given;
        let start = Instant::now();
        let timed_out = |waited| Error::LockTimeout {
            path: state.clone(),
            waited,
            holder: self.read_holder(state_dir).map(Box::new),
        };
        // Another thread of this process holding it counts as contention too. A zero
        // timeout tries once, so it never waits for itself (a read recovering a file).
        // This thread's own hold is found only here: a guard keeps the mutex.
        let mut contended = false;
        let mut inner = match self.file.try_lock() {
            Some(inner) => inner,
            None => {
                if !timeout.is_zero() {
                    refuse_nested(self, pid, operation)?;
                }
                contended = true;
                match self.file.try_lock_for(timeout) {
                    Some(inner) => inner,
                    None => return Err(timed_out(start.elapsed())),
                }
            }
        };
        let euid = self.check_may_write(state_dir)?;
        if inner.as_ref().is_some_and(|open| open.pid != pid) {
            // Inherited across a fork: the parent's (see `OpenLock::pid`).
            *inner = None;
        }
        let mut through;
        loop {
            if inner.is_none() {
                *inner = self.open(state_dir, &fresh, pid)?.map(Box::new);
            }
            let Some(open) = inner.as_deref() else {
                // The sidecar vanished while we opened it (a cleanup is deleting it):
                // start again with whatever is at the path now.
                if start.elapsed() >= timeout {
                    return Err(timed_out(start.elapsed()));
                }
                continue;
            };
            through = None;
            if !cfg!(statesafe_mutation = "no-lock") {
                match enter_pass(open, start, timeout)
                    .map_err(|e| Error::io(Op::Lock, &self.path, e))?
                {
                    Entry::Through(file) => through = Some(file),
                    Entry::TimedOut => return Err(timed_out(start.elapsed())),
                    Entry::MakerDied => {
                        return Err(Error::LockLost {
                            path: state.clone(),
                            lock: self.path.clone(),
                            why: LockLoss::HolderDied,
                        });
                    }
                    Entry::NoPass => {
                        match wait_for_flock(
                            &open.file,
                            open.wake(),
                            start,
                            timeout,
                            self.poll_cap(),
                        )
                        .map_err(|e| Error::io(Op::Lock, &self.path, e))?
                        {
                            Some(tries) => contended |= tries > 0,
                            None => return Err(timed_out(start.elapsed())),
                        }
                    }
                }
            }
            if open
                .in_place(state_dir)
                .map_err(|e| Error::io(Op::Lock, &self.path, e))?
            {
                break;
            }
            // Locked an inode that is no longer the lock file: closing it frees that
            // lock; open whatever is at the path now and lock that. (A pass into a lock
            // file that is no longer in place is worth nothing either.)
            *inner = None;
            if start.elapsed() >= timeout {
                return Err(timed_out(start.elapsed()));
            }
        }
        let let_through = through.is_some();
        self.holds.pid.store(pid, Ordering::Relaxed);
        self.holds.thread.store(this_thread(), Ordering::Relaxed);
        let mut guard = Guard {
            inner,
            record: Record::default(),
            previous: Record::default(),
            locked: true,
            contended,
            acquired: Instant::now(),
            hold_ns: &self.holds.ns,
            holder_thread: &self.holds.thread,
            key: HOLD_KEYS.fetch_add(1, Ordering::Relaxed),
            state: state.clone(),
            lock: self.path.clone(),
            through,
            pass: None,
            may_defer: false,
            deferred: None,
            pid,
            euid,
        };
        guard.previous = guard.read_record().unwrap_or_default();
        // A record from another boot (or from before records named it) may be older
        // than the last commit: it is never synced, and a power loss keeps whatever
        // write of it reached the disk, while the commit after it did (synced). Its
        // generation is then no more than a lower bound, which the put-back check
        // must not take for the last one (`Store::older_version_put_back`): unknown
        // (0) here, so that check asks the backups, the history and the sidecar's
        // record, and so does the next holder until a commit records one again.
        //
        // So may one that still names its holder's temporary file (review17): a holder
        // clears that name in the record it writes after its commit, with the new
        // generation; one killed between its rename and that write (SIGKILL, the OOM
        // killer, a container stop) left the generation before its commit, in this boot.
        //
        // Either way it is still a generation the state reached: kept as `at_least`
        // in this holder's record, so that it goes on counting (a deleted file is
        // told by it, and generations never repeat). Zeroed, a holder that committed
        // nothing (a transaction refused as `Deleted`, a `statesafe lock`, a reboot)
        // erased the only evidence of a deleted file without backups or history, and
        // the next attempt served the default (review20, finding 5).
        let boot = sys::boot_id();
        if (boot.is_some() && guard.previous.boot.as_deref() != boot)
            || guard.previous.temp.is_some()
        {
            guard.previous.at_least = guard.previous.known_generation();
            guard.previous.last_generation = 0;
        }
        let (host, user, command) = identity();
        guard.record = Record {
            // Let through by a pass, the holder is still the pass's maker: others
            // waiting are told who holds the lock they wait for.
            holder: if let_through {
                guard.previous.holder.clone()
            } else {
                Some(Holder {
                    pid,
                    host: host.clone(),
                    user: user.clone(),
                    command: command.clone(),
                    operation: operation.to_string(),
                    since: now_rfc3339(),
                })
            },
            temp,
            last_generation: guard.previous.last_generation,
            at_least: guard.previous.at_least,
            history: guard.previous.history,
            boot: boot.map(std::borrow::Cow::Borrowed),
        };
        guard.write_record(&self.path)?;
        Ok(guard)
    }

    /// Refuses the writers' lock to a user who may not write the state file (or, when
    /// it does not exist, create it): otherwise anyone who can read a file could hold
    /// its writers off indefinitely.
    /// Returns the effective user id it checked as.
    fn check_may_write(&self, state_dir: &OwnedFd) -> Result<u32> {
        let result = match sys::may_write_at(state_dir, &self.target.name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                sys::may_write_at(state_dir, OsStr::new("."))
            }
            other => other,
        };
        result.map_err(|e| Error::io(Op::Lock, &self.target.given, e))?;
        self.check_not_planted(state_dir)
    }

    /// The kernel's `fs.protected_regular` rule, applied whatever the sysctl says: in
    /// a sticky, world-writable directory, a file that belongs neither to the caller
    /// nor to the directory's owner is not written (`echo > /tmp/x` is refused there
    /// too). Only root gets this far with such a file (the sticky bit stops everyone
    /// else at the rename); without the rule, another user could plant the name root
    /// means to use and receive whatever root writes, in a file that stays theirs.
    ///
    /// Returns the effective user id it checked as.
    /// And, for every user, [`Self::check_links_not_planted`].
    fn check_not_planted(&self, state_dir: &OwnedFd) -> Result<u32> {
        let euid = sys::effective_uid();
        let dir = sys::stat_fd(state_dir).map_err(|e| Error::io(Op::Lock, &self.target.dir, e))?;
        if !sys::sticky_shared(dir.mode) {
            return Ok(euid);
        }
        match sys::stat_at(state_dir, &self.target.name) {
            Ok(file) => self.check_owner_not_planted_as(state_dir, file.uid, euid)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(Op::Lock, &self.target.given, e)),
        }
        Ok(euid)
    }

    /// The hard-link variant of the planted file, for every user: in a sticky,
    /// world-writable directory, a state file (`file`: its `lstat`) with more than one
    /// name may be another user's hard link (where `fs.protected_hardlinks` is 0) to a
    /// file of ours elsewhere, planted at the name we mean to use. Adopting it would
    /// stamp our metadata on that file, link it into the sidecar as a backup and read
    /// it as our state, so it is refused. The one second name a commit makes itself
    /// (the backup of the outgoing version, left by a writer killed between that link
    /// and its rename) is allowed: only the sidecar's owners can make it.
    fn check_links_not_planted(&self, state_dir: &OwnedFd, file: &sys::Stat) -> Result<()> {
        if file.nlink <= 1 {
            return Ok(());
        }
        if file.nlink == 2 {
            let sidecar = Sidecar::open(&self.target, state_dir, None).ok().flatten();
            if crate::backup::generation_of_inode(sidecar.as_ref(), file.dev, file.ino).is_some() {
                return Ok(());
            }
        }
        Err(Error::Unsafe {
            path: self.target.given.clone(),
            reason: format!(
                "it has {} hard links and lies in the sticky, world-writable directory `{}`: another user may have linked a file of yours from elsewhere at this name, and writing it would stamp and keep that file (nothing was read or written); list its other names with `find / -xdev -samefile {}`, remove the link that is not yours, or keep the state in a directory that is not world-writable",
                file.nlink,
                self.target.dir.display(),
                self.target.given.display()
            ),
            what: crate::error::Unsafety::Planted,
        })
    }

    /// [`Self::check_not_planted`] for a version owned by `owner`. Called again on the
    /// version read under the lock: a file created between the check at the lock and
    /// that read is held to the same rule (its owner is what a commit keeps), and to
    /// [`Self::check_links_not_planted`].
    pub(crate) fn check_owner_not_planted(&self, state_dir: &OwnedFd, owner: u32) -> Result<()> {
        self.check_owner_not_planted_as(state_dir, owner, sys::effective_uid())
    }

    /// [`Self::check_owner_not_planted`] for a caller that has asked for the effective
    /// user id `euid` in this lock hold, before any code of its user's ran (one
    /// `geteuid` per hold: [`Guard::euid`]).
    pub(crate) fn check_owner_not_planted_as(
        &self,
        state_dir: &OwnedFd,
        owner: u32,
        euid: u32,
    ) -> Result<()> {
        let dir = sys::stat_fd(state_dir).map_err(|e| Error::io(Op::Lock, &self.target.dir, e))?;
        if !sys::sticky_shared(dir.mode) {
            return Ok(());
        }
        if euid != 0 || owner == euid || owner == dir.uid {
            return match sys::stat_at(state_dir, &self.target.name) {
                Ok(file) => self.check_links_not_planted(state_dir, &file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(Op::Lock, &self.target.given, e)),
            };
        }
        Err(Error::Unsafe {
            path: self.target.given.clone(),
            reason: format!(
                "it belongs to uid {} and lies in the sticky, world-writable directory `{}`, where root writes only its own files or the directory owner's (the kernel's protected_regular rule): another user may have planted it to receive what you write; write it as its owner, or keep the state in a directory that is not world-writable",
                owner,
                self.target.dir.display()
            ),
            what: crate::error::Unsafety::Planted,
        })
    }

    /// Opens (creating where missing) the sidecar and the lock file in it; `None` when
    /// the sidecar was deleted under us.
    fn open(
        &self,
        state_dir: &OwnedFd,
        fresh: &dyn Fn() -> Perms,
        pid: u32,
    ) -> Result<Option<OpenLock>> {
        let perms = match sys::stat_at(state_dir, &self.target.name) {
            Ok(st) => Perms {
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
            },
            Err(_) => fresh(),
        };
        let Some(sidecar) = Sidecar::open(&self.target, state_dir, Some(perms))? else {
            return Ok(None);
        };
        let name = OsStr::new(LOCK_FILE);
        let existed = sidecar.root().stat(name, Op::OpenLock)?.is_some();
        let opened = sidecar.root().open_stat(
            name,
            Access::ReadWriteCreate,
            0o600,
            Use::Write,
            Op::OpenLock,
        );
        let (file, st) = match opened {
            Ok(Some(opened)) => opened,
            // O_CREAT in a directory that was removed meanwhile.
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !existed {
            // Everyone who may write the state file must be able to lock it; nobody
            // else may open it (`flock` needs no write access).
            sidecar
                .root()
                .fix_new_lock(&file, perms)
                .map_err(|e| Error::io(Op::OpenLock, &self.path, e))?;
        }
        Ok(Some(OpenLock {
            file: Arc::new(file),
            sidecar: Arc::new(sidecar),
            pid,
            id: (st.dev, st.ino),
            slot: OnceLock::new(),
            written: None,
            read: (Vec::new(), 0),
            wake: OnceLock::new(),
        }))
    }

    /// The lock file, opened for reading without taking the lock (`None`: none).
    fn open_for_reading(&self, state_dir: &OwnedFd) -> Option<File> {
        let sidecar = Sidecar::open(&self.target, state_dir, None).ok()??;
        sidecar
            .root()
            .open(
                OsStr::new(LOCK_FILE),
                Access::Read,
                0,
                Use::Read,
                Op::OpenLock,
            )
            .ok()?
    }

    /// The holder recorded in the lock file, if the lock is held right now.
    pub fn read_holder(&self, state_dir: &OwnedFd) -> Option<Holder> {
        let Some(file) = self.open_for_reading(state_dir) else {
            return self.holder_unseen(state_dir);
        };
        if file.try_lock_shared().is_ok() {
            // Nobody holds it (any more): the record is stale.
            return None;
        }
        let mut buf = vec![0u8; RECORD_SIZE];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        let recorded = Record::parse(&buf[..n]).and_then(|r| r.holder);
        // Trust the record only if its process really holds the lock: a record left by
        // an earlier holder must never be named.
        let Some(pids) = sys::flock_holders(&file) else {
            return recorded;
        };
        let (host, _, _) = identity();
        match recorded {
            Some(h) if pids.contains(&h.pid) && &h.host == host => Some(h),
            _ => {
                let pid = *pids.first()?;
                let (user, command) = sys::process_identity(pid)
                    .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
                Some(Holder {
                    pid,
                    host: host.clone(),
                    user,
                    command,
                    operation: "unknown (the holder could not write its record)".into(),
                    since: "unknown".into(),
                })
            }
        }
    }

    /// The holder of a lock file this user may not open (it is open only to those who
    /// may write the state file): named from `/proc/locks` by its inode, without the
    /// record.
    fn holder_unseen(&self, state_dir: &OwnedFd) -> Option<Holder> {
        let sidecar = Sidecar::open(&self.target, state_dir, None).ok()??;
        let st = sidecar
            .root()
            .stat(OsStr::new(LOCK_FILE), Op::OpenLock)
            .ok()??;
        let pid = *sys::flock_holders_of(st.dev, st.ino)?.first()?;
        let (host, _, _) = identity();
        let (user, command) =
            sys::process_identity(pid).unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        Some(Holder {
            pid,
            host: host.clone(),
            user,
            command,
            operation: "unknown (its record is readable only by those who may write the file)"
                .into(),
            since: "unknown".into(),
        })
    }

    /// The last generation recorded in the lock file without taking the lock, or the
    /// bound its record keeps when higher ([`Record::at_least`]; 0 when there is no
    /// lock file or no readable record). A hint for files whose
    /// generation cannot be read from their own metadata.
    ///
    /// # Errors
    /// An I/O error opening or reading the lock file.
    pub fn last_generation_hint(&self, sidecar: &Sidecar) -> Result<u64> {
        // The lock file is open only to those who may write the state file (see
        // `sidecar::lock_mode`). A reader who may not derives the generation from
        // the rest of the sidecar; it can never commit with it (that needs the
        // lock), and every writer, who can read the record, counts it.
        let Some(file) = Self::open_to_read(sidecar)? else {
            return Ok(0);
        };
        let mut buf = vec![0u8; RECORD_SIZE];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| Error::io(Op::OpenLock, sidecar.root().path().join(LOCK_FILE), e))?;
        Ok(Record::parse(&buf[..n]).map_or(0, |r| r.known_generation()))
    }
}

impl LockFile {
    /// The lock file, opened to read without taking the lock; `None` when there is
    /// none or the caller may not read it (only those who may write the state file
    /// may: `sidecar::lock_mode`).
    fn open_to_read(sidecar: &Sidecar) -> Result<Option<File>> {
        let opened = sidecar.root().open(
            OsStr::new(LOCK_FILE),
            Access::Read,
            0,
            Use::Read,
            Op::OpenLock,
        );
        match opened {
            Ok(file) => Ok(file),
            Err(Error::PermissionDenied { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The furthest journal end the lock file publishes as flushed for a journal whose
    /// header's checksum is `header` (`journal/durable.rs`), read without the lock;
    /// `None` when the caller may not read the lock file or there is none (nothing can
    /// be told then), `Some(0)` when no slot names such a journal.
    ///
    /// # Errors
    /// An I/O error opening the lock file.
    pub(crate) fn published_journal_end(
        &self,
        sidecar: &Sidecar,
        header: u64,
    ) -> Result<Option<u64>> {
        Ok(Self::open_to_read(sidecar)?
            .map(|file| crate::journal::durable::published_for_header(&file, header)))
    }
}

/// What [`enter_pass`] found.
enum Entry {
    /// No pass for this lock file: take the lock file's own lock.
    NoPass,
    /// Let through: this pass file's lock is held.
    Through(File),
    /// A pass is there, but the writers it lets through held it until `timeout`.
    TimedOut,
    /// A pass is there, still linked, but its maker died (killed) without ending it:
    /// the lock it let writers through died with its maker, and the command that
    /// inherited it may hold stale reads. Refused, never let through or made to wait.
    MakerDied,
}

/// Looks in [`PASS_ENV`] for a pass into `open`'s lock file and, if one is still
/// there, takes its lock (waiting at most until `timeout` after `start`).
fn enter_pass(open: &OpenLock, start: Instant, timeout: Duration) -> io::Result<Entry> {
    let Some(value) = std::env::var_os(PASS_ENV) else {
        return Ok(Entry::NoPass);
    };
    let Some(value) = value.to_str() else {
        return Ok(Entry::NoPass);
    };
    for entry in value.split(',') {
        let Some((dev, ino, token)) = parse_pass(entry) else {
            continue;
        };
        if (dev, ino) != open.id {
            continue;
        }
        let name = format!("{PASS_PREFIX}{token}");
        let opened =
            open.sidecar
                .root()
                .open(OsStr::new(&name), Access::Read, 0, Use::Read, Op::Lock);
        let file = match opened {
            Ok(Some(file)) => file,
            // Its lock ended (or it was never there): wait like everyone else.
            Ok(None) => continue,
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        if wait_for_flock(&file, None, start, timeout, Duration::from_micros(500))?.is_none() {
            return Ok(Entry::TimedOut);
        }
        // Removed while we waited: its maker released its lock (see `PASS_ENV`); a
        // program CMD left behind waits like everyone else.
        if sys::stat_fd(&file)?.nlink == 0 {
            let _ = file.unlock();
            continue;
        }
        // Its maker died without removing it (killed): its lock died with it, and
        // the command it ran (whose writer this is) read the state under that lock.
        // Waiting like everyone else would commit on that read over whatever the next
        // holder wrote (review22, finding 4): refused.
        if !maker_alive(&file)? {
            let _ = file.unlock();
            return Ok(Entry::MakerDied);
        }
        return Ok(Entry::Through(file));
    }
    Ok(Entry::NoPass)
}

/// Whether the process that made the pass `file` is still alive (and so still holds
/// the lock it lets writers through): it holds a write lock of its own open file
/// description on the pass file from its making to its end (released when its last
/// descriptor closes: at the latest when the process dies). Asked with `F_OFD_GETLK`,
/// never taken: a POSIX record lock belongs to the whole process, so a writer in the
/// maker's own process took the test lock, and its unlock (or any close of a
/// descriptor of the pass file there) released the maker's own: its command's writers
/// were then refused as under a dead holder (red22b finding 4).
fn maker_alive(file: &File) -> io::Result<bool> {
    sys::range_locked_by_other(file, 0, 0)
}

/// One `DEV:INO:TOKEN` entry of [`PASS_ENV`]; the token is 32 lowercase hex digits
/// (so the pass file's name is one plain component, whatever the variable says).
fn parse_pass(entry: &str) -> Option<(u64, u64, &str)> {
    let mut parts = entry.splitn(3, ':');
    let dev = parts.next()?.parse().ok()?;
    let ino = parts.next()?.parse().ok()?;
    let token = parts.next()?;
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (token.len() == 32 && token.bytes().all(hex)).then_some((dev, ino, token))
}

/// A fresh token for a pass: unique across processes and calls.
fn pass_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..24].copy_from_slice(&n.to_le_bytes());
    seed[24..28].copy_from_slice(&sys::pid().to_le_bytes());
    let stack = &seed as *const _ as usize as u32;
    seed[28..32].copy_from_slice(&stack.to_le_bytes());
    let a = xxhash_rust::xxh3::xxh3_64(&seed);
    let b = xxhash_rust::xxh3::xxh3_64_with_seed(&seed, a);
    format!("{a:016x}{b:016x}")
}

/// Polls `try_lock` with a growing sleep until `timeout`: the number of failed tries
/// once locked, `None` when the time ran out.
///
/// `flock` has no timed wait, and a blocked `flock` cannot be abandoned, so we poll.
/// Threads of this process never reach here together (the store's mutex), so the
/// polling is only between processes. For the first 100 ms the sleep stays at most
/// `short_cap` (at most 500 µs), so that under contention the lock passes on within a
/// fraction of one commit; a longer wait (someone holds the lock for a while, as
/// `statesafe lock` does) backs off to 10 ms between tries.
///
/// With the lock file's wake-up page (`wake`, `sys/wake.rs`) the sleep between tries
/// ends as soon as a releaser wakes this waiter; the poll is only the backstop (for a
/// releaser that was killed, or one of a build without the page), so it sleeps at
/// least [`WOKEN_BACKSTOP`] between tries and does not wake to poll while the lock is
/// passed on from holder to holder.
fn wait_for_flock(
    file: &File,
    wake: Option<&sys::wake::Wake>,
    start: Instant,
    timeout: Duration,
    short_cap: Duration,
) -> io::Result<Option<u32>> {
    let mut pause = Duration::from_micros(20);
    let mut tries = 0;
    loop {
        let seen = wake.map(|wake| wake.enter(file));
        let tried = file.try_lock();
        let elapsed = start.elapsed();
        let outcome = match tried {
            Ok(()) => Some(Ok(Some(tries))),
            Err(std::fs::TryLockError::WouldBlock) if elapsed >= timeout => Some(Ok(None)),
            Err(std::fs::TryLockError::WouldBlock) => None,
            Err(std::fs::TryLockError::Error(e)) => Some(Err(e)),
        };
        if let Some(outcome) = outcome {
            return outcome;
        }
        tries += 1;
        let left = timeout - elapsed;
        match (wake, seen.flatten()) {
            (Some(wake), Some(seen)) => {
                wake.sleep(Some(seen), pause.max(WOKEN_BACKSTOP).min(left));
            }
            _ => std::thread::sleep(pause.min(left)),
        }
        let cap = if elapsed < Duration::from_millis(100) {
            short_cap
        } else {
            Duration::from_millis(10)
        };
        pause = (pause * 2).min(cap);
    }
}

/// The least sleep between tries of a waiter woken by releases ([`wait_for_flock`]).
const WOKEN_BACKSTOP: Duration = Duration::from_millis(2);

impl Guard<'_> {
    fn open(&self) -> &OpenLock {
        self.inner
            .as_deref()
            .expect("invariant: a guard exists only for an open lock")
    }

    /// The lock file's descriptor (a journal commit publishes its durable end there).
    pub fn lock_file(&self) -> &Arc<File> {
        &self.open().file
    }

    /// The slot of the lock file's description for the journal's published ends
    /// (claimed by the first call, with this lock held: one `fcntl`).
    pub fn slot(&self) -> crate::journal::durable::Slot {
        let open = self.open();
        *open
            .slot
            .get_or_init(|| crate::journal::durable::Slot::claim(&open.file, open.pid))
    }

    /// This process's id as asked for when the lock was taken: for the checks made
    /// before the caller's code runs in this hold (after it, [`Self::check_process`]).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// This hold's key: unique among the holds of every lock in this process.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The effective user id the lock's checks were made as (`geteuid` when it was
    /// taken): for the planted-file check of the version read in this hold before the
    /// caller's code runs.
    pub fn euid(&self) -> u32 {
        self.euid
    }

    /// The sidecar the lock file is in.
    pub fn sidecar(&self) -> &Arc<Sidecar> {
        &self.open().sidecar
    }

    /// Checks that the lock we hold is still the lock file at its path (call right
    /// before the rename of a commit): if it was removed or replaced, another writer may
    /// hold a lock of its own, and the commit must not happen.
    pub fn verify(&self, state_dir: &OwnedFd) -> Result<()> {
        self.check_process()?;
        if let Some(pass) = &self.through {
            // Let through: the lock is the pass maker's, held only while it lives.
            match maker_alive(pass) {
                Ok(true) => {}
                Ok(false) => return Err(self.lost_as(LockLoss::HolderDied)),
                Err(e) => return Err(Error::io(Op::Lock, &self.lock, e)),
            }
        }
        match self.open().in_place(state_dir) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost()),
            Err(e) => Err(Error::io(Op::Lock, &self.lock, e)),
        }
    }

    /// Checks that this process took the lock: a guard copied into a child by a fork
    /// during a transaction is the parent's, and the child's copy may not commit.
    pub fn check_process(&self) -> Result<()> {
        let pid = self.open().pid;
        if pid == sys::pid() {
            return Ok(());
        }
        Err(Error::io(
            Op::Lock,
            &self.lock,
            io::Error::other(format!(
                "this lock was taken by process {pid}, which forked this one during the transaction: the lock is that process's, and this copy of the transaction may not commit; begin a new transaction in this process"
            )),
        ))
    }

    /// The error for a lock found lost (or the state file replaced under it).
    pub fn lost(&self) -> Error {
        self.lost_as(LockLoss::Removed)
    }

    /// The error for a lock lost as `why` says.
    fn lost_as(&self, why: LockLoss) -> Error {
        Error::LockLost {
            path: self.state.clone(),
            lock: self.lock.clone(),
            why,
        }
    }

    /// Reads the holder record, and with it the journal's published ends that follow
    /// it in the file (one read: a journal commit checks them before its append,
    /// [`Guard::published_for_header`]).
    fn read_record(&mut self) -> Option<Record> {
        const END: usize = crate::journal::durable::REGION_AT as usize
            + crate::journal::durable::SLOTS * crate::journal::durable::SLOT_LEN;
        let open = self
            .inner
            .as_deref_mut()
            .expect("invariant: a guard exists only for an open lock");
        let (buf, len) = &mut open.read;
        buf.resize(END, 0);
        *len = 0;
        *len = open.file.read_at(buf, 0).ok()?;
        let n = (*len).min(RECORD_SIZE);
        if let Some((bytes, record)) = &open.written
            && bytes[..] == buf[..n]
        {
            // The bytes this holder's last record was encoded to: that record.
            return Some(record.clone());
        }
        Record::parse(&buf[..n])
    }

    /// The largest end published for a journal whose header's checksum is `header`
    /// (`journal/durable.rs`, [`crate::journal::durable::published_for_header`]), as
    /// read when this lock was taken (0: none): every append before this hold was
    /// made before that read; see docs/design.md ("Journal mode", "An older copy of
    /// the journal put back") for what a publication made during the hold means.
    pub fn published_for_header(&self, header: u64) -> u64 {
        let (buf, len) = &self.open().read;
        let at = crate::journal::durable::REGION_AT as usize;
        buf.get(at..*len).map_or(0, |slots| {
            crate::journal::durable::published_for_header_in(slots, header)
        })
    }

    /// Rewrites our record (for example after a commit, with the new generation).
    /// The record is informational: it is never synced, and a failure to write it is
    /// reported only when we cannot write the lock file at all.
    pub fn write_record(&mut self, path: &Path) -> Result<()> {
        let open = self
            .inner
            .as_deref_mut()
            .expect("invariant: a guard exists only for an open lock");
        // Forgotten first: after a failed or partial write the bytes are unknown.
        let mut bytes = open.written.take().map(|(b, _)| b).unwrap_or_default();
        let whole = self.record.encode_into(&mut bytes);
        open.file
            .write_all_at(&bytes, 0)
            .map_err(|e| Error::io(Op::Lock, path, e))?;
        if whole {
            open.written = Some((bytes, self.record.clone()));
        }
        Ok(())
    }

    /// Makes a pass for the commands this holder runs (`statesafe lock FILE -- CMD`):
    /// writers of this file that find it in their environment ([`Guard::pass_env`])
    /// are let through, one at a time, while every other writer waits (see
    /// [`PASS_ENV`]). It ends when the guard is released, after the writers inside.
    /// The pass file gets the lock file's owner and mode: those who may write the
    /// state file may open it.
    pub fn open_pass(&mut self) -> Result<()> {
        if self.pass.is_some() {
            return Ok(());
        }
        // The passes of makers that died without removing them stay: each is the
        // record that its lock was lost, which refuses the writers of the command it
        // ran (`enter_pass`), however long they run on (review22, finding 4).
        let root = self.open().sidecar.root();
        let name = format!("{PASS_PREFIX}{}", pass_token());
        let lock =
            sys::stat_fd(&self.open().file).map_err(|e| Error::io(Op::OpenLock, &self.lock, e))?;
        let file = sys::create_exclusive(root.fd(), OsStr::new(&name), 0o600)
            .map_err(|e| Error::io(Op::OpenLock, root.join(&name), e))?;
        let perms = Perms {
            mode: lock.mode,
            uid: lock.uid,
            gid: lock.gid,
        };
        // The maker's liveness, for the writers it lets through: a write lock of this
        // open file description (independent of `flock`), which ends with this process
        // however it ends (the descriptor is close-on-exec: CMD does not keep it), and
        // which no open or close of the pass file by this process's own writers touches
        // (a POSIX record lock did: red22b finding 4).
        let made = root.fix_new_lock(&file, perms).and_then(|()| {
            match sys::try_lock_range(&file, 0, 0)? {
                true => Ok(()),
                false => Err(io::Error::other("a new pass file was already locked")),
            }
        });
        match made {
            Ok(()) => {}
            Err(e) => {
                let _ = root.remove_file(OsStr::new(&name), Op::OpenLock);
                return Err(Error::io(Op::OpenLock, root.join(&name), e));
            }
        }
        let entry = format!("{}:{}:{}", lock.dev, lock.ino, &name[PASS_PREFIX.len()..]);
        self.pass = Some(Pass { file, name, entry });
        Ok(())
    }

    /// The variable and value that let a command's writers through this holder's
    /// pass ([`Guard::open_pass`]): the entries this process was given for other
    /// lock files, and this pass for this one (a pass of our own replaces the one we
    /// were let through by: its writers would wait for us).
    pub fn pass_env(&self) -> Option<(&'static str, String)> {
        let pass = self.pass.as_ref()?;
        let ours = pass.entry.rsplit_once(':').map(|(file, _)| file)?;
        let inherited = std::env::var(PASS_ENV).unwrap_or_default();
        let mut entries: Vec<&str> = inherited
            .split(',')
            .filter(|e| parse_pass(e).is_some())
            .filter(|e| e.rsplit_once(':').map(|(file, _)| file) != Some(ours))
            .collect();
        entries.push(&pass.entry);
        Some((PASS_ENV, entries.join(",")))
    }

    /// Ends this holder's pass: waits until no writer is inside, then removes it.
    fn end_pass(&mut self) {
        let Some(pass) = self.pass.take() else {
            return;
        };
        // Blocking: a writer inside is committing under our lock, and must finish
        // before anyone else may write.
        loop {
            match pass.file.lock() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => break,
            }
        }
        let _ = self
            .open()
            .sidecar
            .root()
            .remove_file(OsStr::new(&pass.name), Op::Lock);
    }

    /// Releases the lock now (dropping the guard does the same).
    ///
    /// Infallible by design: it runs after commits that are already durable, which must
    /// not be reported as failed. If `flock(LOCK_UN)` ever fails, the descriptor is
    /// closed instead, which frees the lock just as surely; the store reopens the lock
    /// file on its next write.
    pub fn release(mut self) {
        self.unlock();
    }

    fn unlock(&mut self) {
        if !self.locked {
            return;
        }
        self.locked = false;
        // No longer held by the thread that took it, wherever this runs.
        self.holder_thread.store(0, Ordering::Relaxed);
        let held = u64::try_from(self.acquired.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let old = self.hold_ns.load(std::sync::atomic::Ordering::Relaxed);
        let avg = if old == 0 {
            held
        } else {
            (old / 4).saturating_mul(3).saturating_add(held / 4)
        };
        self.hold_ns
            .store(avg, std::sync::atomic::Ordering::Relaxed);
        if cfg!(statesafe_mutation = "no-lock") {
            return;
        }
        if self.open().pid != sys::pid() {
            // A guard copied into a forked child: the lock is the parent's, and
            // unlocking the shared description would free it under the parent. Close
            // our copy of the descriptor only.
            self.pass = None;
            self.through = None;
            *self.inner = None;
            return;
        }
        self.end_pass();
        if let Some(pass) = self.through.take() {
            // Let through: the lock file's lock is the pass maker's.
            let _ = pass.unlock();
            return;
        }
        let open = self.open();
        // Mapped before the unlock (its first use may map it), so that the wake-up
        // follows the unlock as closely as it can.
        let wake = open.wake();
        if open.file.unlock().is_err() {
            // Closing the descriptor frees the lock as surely (the page's mapping,
            // dropped with it, is not needed for the wake-up: it is called first).
            if let Some(wake) = wake {
                wake.released();
            }
            *self.inner = None;
            return;
        }
        if let Some(wake) = wake {
            wake.released();
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The record written by hand is the one serde_json wrote, byte for byte, with
        /// a holder or without, escapes or none, each optional field there or not.
        #[test]
        fn a_record_is_written_as_serde_json_wrote_it(
            holder in proptest::option::of((
                any::<u32>(),
                proptest::collection::vec("(\\PC|[\\x00-\\x1f\"\\\\])*", 5),
            )),
            temp in proptest::option::of("(\\PC|[\\x00-\\x1f\"\\\\])*"),
            last_generation in any::<u64>(),
            at_least in any::<u64>(),
            history in proptest::option::of(any::<u64>()),
            boot in proptest::option::of("(\\PC|[\\x00-\\x1f\"\\\\])*"),
        ) {
            let record = Record {
                holder: holder.map(|(pid, s)| Holder {
                    pid,
                    host: s[0].clone(),
                    user: s[1].clone(),
                    command: s[2].clone(),
                    operation: s[3].clone(),
                    since: s[4].clone(),
                }),
                temp,
                last_generation,
                at_least,
                history,
                boot: boot.map(std::borrow::Cow::Owned),
            };
            let mut out = Vec::new();
            record.write_json(&mut out, record.holder.as_ref());
            prop_assert_eq!(&out, &serde_json::to_vec(&record).unwrap());
            let mut out = Vec::new();
            record.write_json(&mut out, None);
            let without = Record { holder: None, ..record.clone() };
            prop_assert_eq!(&out, &serde_json::to_vec(&without).unwrap());
        }
    }

    /// The record read at an acquisition is taken without parsing only when its bytes
    /// are the ones this descriptor last wrote: a record another writer wrote since
    /// (another description of the lock file, as another process has) is parsed, never
    /// replaced by the remembered one.
    #[test]
    fn a_record_another_holder_wrote_since_is_read_not_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let target = Target::resolve(&tmp.path().join("app.json")).unwrap();
        let dir = sys::open_dir(tmp.path()).unwrap();
        let fresh = || Perms {
            mode: 0o644,
            uid: sys::effective_uid(),
            gid: sys::effective_gid(),
        };
        let ours = LockFile::new(&target);
        let theirs = LockFile::new(&target);
        let take = |lock: &LockFile, temp: Option<&str>, generation: u64| {
            let mut guard = lock
                .acquire(
                    &dir,
                    Duration::ZERO,
                    "update",
                    temp.map(str::to_string),
                    fresh,
                    sys::pid(),
                )
                .unwrap();
            let previous = guard.previous.clone();
            guard.record.last_generation = generation;
            guard.write_record(&target.given).unwrap();
            (previous, guard.record.clone())
        };
        let (_, first) = take(&ours, Some(".app.json.statesafe-tmp-1-a"), 5);
        assert!(ours.file.lock().as_ref().unwrap().written.is_some());
        // Read back unchanged: the record this descriptor wrote, field for field.
        let (previous, _) = take(&ours, None, 6);
        assert_eq!(previous.holder, first.holder);
        assert_eq!(previous.temp, first.temp);
        // A record that still names its holder's temporary file names no generation
        // (its holder may have been killed past its rename: review17), but keeps it
        // as a bound the state reached (review20), in the record this holder wrote too.
        assert_eq!(previous.last_generation, 0);
        assert_eq!(previous.at_least, 5);
        // Another description writes a record; ours must read that one.
        let (previous, _) = take(&theirs, Some(".app.json.statesafe-tmp-2-b"), 9);
        assert_eq!(previous.last_generation, 6);
        let (previous, _) = take(&ours, None, 10);
        assert_eq!(previous.last_generation, 0);
        assert_eq!(
            previous.temp.as_deref(),
            Some(".app.json.statesafe-tmp-2-b")
        );
    }

    #[test]
    fn a_version_read_under_the_lock_is_held_to_the_planted_file_rule() {
        // The rule is checked when the lock is taken and again on the version read
        // under it (a file created in between); this is the check of that read.
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let sticky = tmp.path().join("shared");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let target = Target::resolve(&sticky.join("app.json")).unwrap();
        let lock = LockFile::new(&target);
        let dir = sys::open_dir(&sticky).unwrap();
        let root = sys::effective_uid() == 0;
        let dir_owner = sys::stat_fd(&dir).unwrap().uid;
        let another = dir_owner + 4242;
        let planted = lock.check_owner_not_planted(&dir, another);
        if root {
            let err = planted.unwrap_err();
            assert!(matches!(err, Error::Unsafe { .. }), "{err}");
            assert!(err.to_string().contains("protected_regular"), "{err}");
        } else {
            // Only root gets this far with another user's file: the rule is root's.
            eprintln!("not root: only the non-root side of the rule is checked here");
            assert!(planted.is_ok());
        }
        assert!(
            lock.check_owner_not_planted(&dir, sys::effective_uid())
                .is_ok()
        );
        assert!(lock.check_owner_not_planted(&dir, dir_owner).is_ok());
        // Not sticky: not this rule's business (the sidecar checks apply there).
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o0777)).unwrap();
        assert!(lock.check_owner_not_planted(&dir, another).is_ok());
    }

    #[test]
    fn command_lines_are_quoted_for_a_shell() {
        let args: Vec<String> = ["sh", "-c", "touch ready; sleep 1", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_quoted(&args),
            "sh -c 'touch ready; sleep 1' 'it'\\''s'"
        );
    }

    #[test]
    fn records_round_trip_at_fixed_size() {
        let r = Record {
            holder: Some(Holder {
                pid: 7,
                host: "h".into(),
                user: "u".into(),
                command: "c".into(),
                operation: "update".into(),
                since: now_rfc3339(),
            }),
            temp: Some(".x.statesafe-tmp-1".into()),
            last_generation: 42,
            at_least: 40,
            history: Some(41),
            boot: sys::boot_id().map(std::borrow::Cow::Borrowed),
        };
        let (bytes, whole) = r.encode();
        assert!(whole);
        assert_eq!(bytes.len(), RECORD_SIZE);
        let back = Record::parse(&bytes).unwrap();
        assert_eq!(back.holder, r.holder);
        assert_eq!(back.last_generation, 42);
        assert!(Record::parse(b"").is_none());
        assert!(Record::parse(&[0u8; 64]).is_none());
        assert!(Record::parse(&[b' '; RECORD_SIZE]).is_none());
        // Any mix of whitespace and zeros after the record (a shorter record over a
        // longer one's padding, a file extended with zeros), at any alignment.
        let json = serde_json::to_vec(&r).unwrap();
        for pad in 0..20 {
            let mut raw = json.clone();
            raw.extend(std::iter::repeat_n(b' ', pad));
            raw.extend_from_slice(b"\n\t\r\0 ");
            raw.extend(std::iter::repeat_n(b' ', 3 * pad));
            raw.push(b'\n');
            assert_eq!(
                Record::parse(&raw).unwrap().last_generation,
                42,
                "pad {pad}"
            );
            // Anything else after it is not a record (a torn write).
            let mut torn = raw.clone();
            torn[json.len() + pad + 2] = b'x';
            assert!(Record::parse(&torn).is_none(), "pad {pad}");
        }
    }
}
