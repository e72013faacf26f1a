//! Transactions: locked read-modify-write, compare-and-swap, and the commit path
//! shared by everything that writes a version (updates, restores, recoveries).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backup;
use crate::error::{Error, Result};
use crate::events::{Event, Recorder};
use crate::format::{self, Meta, Writer};
use crate::history::{self, Change, HistoryEntry};
use crate::lock;
use crate::settings::Format;
use crate::sidecar::Sidecar;
use crate::store::{Store, is_damage};
use crate::sys;
use crate::validate;
use crate::write::{self, Current, Perms};

/// What the writer knows of the version it replaces.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub generation: u64,
    pub perms: Perms,
    pub checksum: u64,
    pub len: usize,
    /// Changed outside statesafe (to be recorded in the history).
    pub external: bool,
    /// `external`, and statesafe's first contact with the file.
    pub adopted: bool,
    /// Verified valid, so it may become a backup.
    pub valid: bool,
    /// The document as JSON, when the history wants a patch from it (shared with the
    /// document a journal-mode store keeps: no copy per transaction).
    pub value: Option<Arc<Value>>,
    /// Device and inode of the file read, checked before the rename replaces it;
    /// `None` after a commit of this transaction (nothing to check).
    pub id: Option<(u64, u64)>,
    /// The file read, held open until the rename so that its inode number cannot be
    /// given to another file in between (`write::Current::pin`); `None` where the
    /// version came from a journal-mode store's cache.
    pub pin: Option<Arc<std::fs::File>>,
    /// Its layout, which [`crate::Layout::Keep`] keeps.
    pub style: Option<format::Style>,
    /// Its access ACL (`None`: it has none), read under the lock through the
    /// descriptor it was read from; the next version gets exactly this one.
    pub acl: Option<Vec<u8>>,
    /// Journal mode: the snapshot and journal under this version.
    pub journal: Option<Box<crate::journal::Replayed>>,
}

impl Base {
    pub fn of(cur: &Current, valid: bool, value: Option<Arc<Value>>) -> Base {
        Base {
            generation: cur.generation,
            perms: cur.perms,
            checksum: cur.checksum,
            len: cur.bytes.len(),
            external: cur.external,
            adopted: cur.adopted,
            valid,
            value,
            id: Some(cur.id),
            pin: cur.pin.clone(),
            acl: cur.acl.clone(),
            style: match &cur.journal {
                Some(j) => j.style,
                None => format::Style::detect(&cur.bytes),
            },
            journal: cur.journal.clone(),
        }
    }
}

/// The writers' lock on a state file, held until dropped; from [`Store::lock`].
pub struct LockGuard<'s> {
    held: Held<'s>,
}

// Without the `postgres` feature the remote variant is an empty stand-in; one guard
// per held lock, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Held<'s> {
    Local {
        guard: lock::Guard<'s>,
        dir: &'s std::os::fd::OwnedFd,
    },
    /// A PostgreSQL state's lock row, held by an open transaction.
    Remote(crate::postgres::Held<'s>),
}

impl LockGuard<'_> {
    /// Checks that the lock is still the lock file at its path: a cleanup that removed
    /// the sidecar (or the lock file) while it was held lets other writers in, and
    /// whoever held it should know (`statesafe lock -- CMD` reports it after CMD).
    ///
    /// # Errors
    /// [`Error::LockLost`] when it was removed or replaced; I/O errors checking it.
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// let guard = store.lock("maintenance")?;
    /// guard.check()?;
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn check(&self) -> Result<()> {
        match &self.held {
            Held::Local { guard, dir } => guard.verify(dir),
            Held::Remote(held) => held.check(),
        }
    }

    /// The environment variable and value that let a command's own statesafe writers
    /// through this lock, one at a time, while every other writer waits (`statesafe
    /// lock FILE -- CMD` sets it for CMD): for a file, `STATESAFE_LOCKS` naming a pass
    /// file in the sidecar that ends with this guard; for a PostgreSQL state,
    /// `STATESAFE_PG_LOCKS` naming the lock's transaction. `None` only if the pass
    /// could not be made.
    pub fn nested_env(&self) -> Option<(&'static str, String)> {
        match &self.held {
            Held::Local { guard, .. } => guard.pass_env(),
            Held::Remote(held) => Some(held.nested_env()),
        }
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// A held lock with the file read afresh under it.
pub(crate) struct Locked<'s> {
    pub guard: lock::Guard<'s>,
    pub temp_name: OsString,
    pub current: Option<Current>,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Holds the writers' lock without a transaction, for example while an external
    /// program edits the file (`statesafe lock FILE -- CMD`). `operation` is what the
    /// holder record says this process is doing. Dropping the guard releases the lock.
    ///
    /// Writers whose environment carries [`LockGuard::nested_env`] (a command this
    /// process runs) are let through, one at a time, while every other writer waits;
    /// the lock is released only after the last of them has finished.
    ///
    /// For a PostgreSQL state it is a transaction holding the state's lock row, which
    /// every writer holds while it writes; writers whose `STATESAFE_PG_LOCKS` names it
    /// ([`LockGuard::nested_env`]) are let through, and it ends when this process or
    /// its connection dies (`docs/remote.md`).
    ///
    /// # Errors
    /// [`Error::LockTimeout`], I/O errors creating the sidecar directory or lock file.
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// let guard = store.lock("maintenance")?;
    /// assert_eq!(store.lock_holder().unwrap().operation, "maintenance");
    /// drop(guard);
    /// assert!(store.lock_holder().is_none());
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn lock(&self, operation: &str) -> Result<LockGuard<'_>> {
        if let Some(remote) = self.remote() {
            return Ok(LockGuard {
                held: Held::Remote(remote.hold(self, operation)?),
            });
        }
        let mut locked = self.lock_and_read(operation, false)?;
        locked.guard.open_pass()?;
        Ok(LockGuard {
            held: Held::Local {
                guard: locked.guard,
                dir: self.dir()?,
            },
        })
    }

    /// Takes the lock, cleans up after dead writers, and (if `read`) reads the file.
    pub(crate) fn lock_and_read(&self, operation: &str, read: bool) -> Result<Locked<'_>> {
        self.lock_and_read_within(operation, read, self.config().lock_timeout)
    }

    /// [`Store::lock_and_read`], waiting at most `timeout` for the lock (zero: only if
    /// it is free at once).
    pub(crate) fn lock_and_read_within(
        &self,
        operation: &str,
        read: bool,
        timeout: std::time::Duration,
    ) -> Result<Locked<'_>> {
        if self.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Poisoned {
                path: self.local().target.given.clone(),
            });
        }
        // One `getpid` for the temporary name and the lock's checks and record: no
        // code of the caller's runs before the lock is taken (see `LockFile::acquire`).
        let pid = sys::pid();
        let temp_name = self.local().target.temp_name_of(pid);
        let dir = self.write_dir()?;
        let start = Instant::now();
        // Asked for only when the lock file is opened (not at every commit).
        let fresh = || Perms {
            mode: if self.opts.private { 0o600 } else { 0o644 },
            uid: sys::effective_uid(),
            gid: sys::effective_gid(),
        };
        let guard = self.local().lock.acquire(
            dir,
            timeout,
            operation,
            // The temporary file this holder may make, recorded for the next holder
            // to remove should this one be killed; a journal-mode commit usually
            // appends and makes none: it records it when it compacts instead, and its
            // append leaves the record alone (one write of the record less).
            (self.config().format != Format::Journal)
                .then(|| temp_name.to_string_lossy().into_owned()),
            fresh,
            pid,
        );
        let waited = start.elapsed();
        let guard = guard.inspect_err(|e| self.recorder.failure(e.kind()))?;
        self.recorder.lock_wait(waited);
        self.refresh_settings(&guard)?;
        if let Some(stale) = &guard.previous.temp {
            write::remove_stale_temp(&self.local().target, dir, stale);
        }
        if self.take_first_sweep() {
            write::sweep_temps(&self.local().target, dir)?;
            if let Some(kind) = sys::special_filesystem(dir) {
                self.emit(crate::events::Event::SpecialFilesystem {
                    path: self.local().target.given.clone(),
                    kind,
                });
            }
        }
        let mut current = if read {
            self.read_current_for_write()?
        } else {
            None
        };
        if let Some(cur) = &mut current {
            self.local()
                .lock
                .check_owner_not_planted(dir, cur.perms.uid)?;
            self.older_version_put_back(&guard, cur)?;
        }
        Ok(Locked {
            guard,
            temp_name,
            current,
        })
    }

    /// Relabels `cur`, read under the lock `guard`, when it is an older version put
    /// back with its own metadata record (`cp -a` of a backup, a backup tool that
    /// keeps extended attributes): its record matches its bytes, so it reads as the
    /// generation it had, below the one the last holder recorded. Taken as that
    /// generation, the next commit would write generations that committed versions
    /// had (their history entries hidden behind new ones, a stale compare-and-swap
    /// succeeding over commits it never saw). A plain file accepts outside changes,
    /// so it is one: generation highest known + 1, external (stamped, kept as a
    /// backup and recorded in the history by the commit, as any external change).
    /// Sealed files (where it is damage, [`Store::verify`]) and journal snapshots
    /// (whose journal is checked against them) are left to their own checks.
    pub(crate) fn older_version_put_back(
        &self,
        guard: &lock::Guard<'_>,
        cur: &mut Current,
    ) -> Result<()> {
        if cur.external
            || cur.journal.is_some()
            || cur.journal_follows
            || (guard.previous.last_generation != 0
                && cur.generation >= guard.previous.last_generation)
            || format::looks_sealed(&cur.bytes)
        {
            return Ok(());
        }
        let Some(known) = self.known_above(guard, cur.generation)? else {
            return Ok(());
        };
        cur.generation = known + 1;
        cur.external = true;
        Ok(())
    }

    /// The highest generation known for this state (the lock record's, the sidecar's
    /// record, the backups, the history) when it is above `generation`; `None`
    /// otherwise. The lock record alone answers when it names a generation: it is
    /// written after every commit. Without one (the lock file removed, or its record
    /// unreadable: `acquire` then starts from an empty record) the others are read,
    /// so that losing the lock file does not switch off the check of an older
    /// version put back (review16).
    pub(crate) fn known_above(
        &self,
        guard: &lock::Guard<'_>,
        generation: u64,
    ) -> Result<Option<u64>> {
        let last = guard.previous.last_generation;
        if last != 0 && generation >= last {
            return Ok(None);
        }
        let known =
            write::highest_known_generation(Some(guard.sidecar()), &self.local().lock)?.max(last);
        Ok((known > generation).then_some(known))
    }

    /// Starts a transaction on an existing file: takes the lock, then reads the file
    /// afresh (never trusting an earlier copy). Commit with [`Transaction::commit`];
    /// dropping the transaction writes nothing and releases the lock. A damaged file
    /// is recovered first, as in [`Store::load`].
    ///
    /// # Errors
    /// [`Error::LockTimeout`], [`Error::NotFound`], [`Error::Unrecoverable`],
    /// [`Error::Poisoned`], I/O; [`Error::Nested`] at once when this thread already
    /// holds the file's lock (a transaction or lock guard still open here: the lock is
    /// not reentrant).
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// # store.create(serde_json::json!({"n": 1}))?;
    /// let mut tx = store.begin()?;
    /// tx.state_mut()["n"] = 2.into();
    /// let generation = tx.commit()?;
    /// assert_eq!(generation, 2);
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn begin(&self) -> Result<Transaction<'_, T>> {
        self.begin_with("update", None::<fn() -> T>, None::<(&[u8], fn() -> T)>)
            .map(|(tx, _)| tx)
    }

    /// [`Store::begin`] (or, with `init`, [`Store::begin_or_insert_with`]) for a caller
    /// that keeps the text of the document it last committed (a language binding's
    /// update cache): when the file read under the lock is a plain version statesafe
    /// committed (its checksum matches its metadata record) and is exactly `known`
    /// and the final newline, the document is not parsed again: the transaction's
    /// state is `reuse()` (what the caller holds for that text), and the second value
    /// is `true`. Anything else, and any store with a validation rule or a schema
    /// (which must see the document as the file holds it), reads and verifies the
    /// file as [`Store::begin`] does, and the second value is `false`.
    ///
    /// # Errors
    /// As [`Store::begin`] (without [`Error::NotFound`] when `init` is given).
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// store.create(serde_json::json!({"n": 1}))?;
    /// let known = b"{\n  \"n\": 1\n}";
    /// let (tx, hit) = store.begin_known(known, || serde_json::json!({"n": 1}), None::<fn() -> _>)?;
    /// assert!(hit);
    /// drop(tx);
    /// let (_tx, hit) = store.begin_known(b"{}", || serde_json::json!({}), None::<fn() -> _>)?;
    /// assert!(!hit);
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn begin_known(
        &self,
        known: &[u8],
        reuse: impl FnOnce() -> T,
        init: Option<impl FnOnce() -> T>,
    ) -> Result<(Transaction<'_, T>, bool)> {
        self.begin_with("update", init, Some((known, reuse)))
    }

    /// Like [`Store::begin`], but a missing file starts from `init()` (generation 0),
    /// unless its sidecar shows committed generations ([`Error::Deleted`]).
    ///
    /// # Errors
    /// As [`Store::begin`], without [`Error::NotFound`].
    pub fn begin_or_insert_with(&self, init: impl FnOnce() -> T) -> Result<Transaction<'_, T>> {
        self.begin_with("update", Some(init), None::<(&[u8], fn() -> T)>)
            .map(|(tx, _)| tx)
    }

    pub(crate) fn begin_with(
        &self,
        operation: &str,
        init: Option<impl FnOnce() -> T>,
        known: Option<(&[u8], impl FnOnce() -> T)>,
    ) -> Result<(Transaction<'_, T>, bool)> {
        if let Some(remote) = self.remote() {
            let (tx, state) = remote.begin(self, operation, init)?;
            let tx = Transaction {
                store: self,
                imp: Imp::Remote(tx),
                state,
            };
            return Ok((tx, false));
        }
        let journal = self.config().format == Format::Journal;
        let mut locked = self.lock_and_read(operation, !journal)?;
        if journal {
            locked.current = self.journal_read_locked(&locked.guard)?;
            if let Some(cur) = &locked.current {
                self.journal_damage_refused(cur, &format!("the {operation} wrote nothing"))?;
            }
        }
        self.begin_locked(locked, init, known)
    }

    /// The rest of [`Store::begin_with`], once the lock is held and the file read.
    pub(crate) fn begin_locked<'s>(
        &'s self,
        locked: Locked<'s>,
        init: Option<impl FnOnce() -> T>,
        known: Option<(&[u8], impl FnOnce() -> T)>,
    ) -> Result<(Transaction<'s, T>, bool)> {
        let Locked {
            mut guard,
            temp_name,
            current,
        } = locked;
        if let (Some(cur), Some((text, reuse))) = (&current, known)
            && self.is_known(cur, text)
        {
            let state = reuse();
            let value = self.history_value(cur.bytes.len(), &state);
            let base = Base::of(cur, true, value.map(Arc::new));
            // Too large for the history's tree diff: its patch is taken from the bytes
            // of the change, against these (the outgoing version, byte for byte its
            // backup) rather than a second read of the backup.
            let config = self.config();
            let keep_bytes =
                base.value.is_none() && config.history.keep > 0 && config.backups.enabled();
            let outgoing = current.filter(|_| keep_bytes).map(|cur| cur.bytes);
            let tx = Transaction {
                store: self,
                imp: Imp::Local {
                    guard,
                    temp_name,
                    base: Some(base),
                    outgoing,
                },
                state,
            };
            return Ok((tx, true));
        }
        let (state, base) = match current {
            Some(cur) => match self.verify(&cur, true) {
                // An external change is reported once the commit that records it is
                // done: a write that fails reports nothing.
                Ok(v) => (v.state, Some(Base::of(&cur, true, v.value))),
                Err(damage) if is_damage(&damage) => {
                    let (state, mut base, _) =
                        self.recover_locked(&mut guard, &temp_name, &cur, damage, false)?;
                    // The version the recovery just wrote is this transaction's base.
                    // A commit returns no descriptor of its file (`id: None`), which
                    // would leave nothing to check before this transaction's rename,
                    // and another program's save during the update would be
                    // overwritten (review18): the file is opened now, and must hold
                    // the bytes the recovery wrote.
                    let (pin, id) = self.pin_version(&guard, self.dir()?, None, base.checksum)?;
                    base.id = Some(id);
                    base.pin = Some(pin);
                    (state, Some(base))
                }
                Err(e) => return Err(e),
            },
            None => match init {
                Some(init) => {
                    self.refuse_deleted(Some(guard.sidecar()))?;
                    (init(), None)
                }
                None => {
                    self.refuse_deleted(Some(guard.sidecar()))?;
                    return Err(Error::NotFound {
                        path: self.local().target.given.clone(),
                    });
                }
            },
        };
        let tx = Transaction {
            store: self,
            imp: Imp::Local {
                guard,
                temp_name,
                base,
                outgoing: None,
            },
            state,
        };
        Ok((tx, false))
    }

    /// Whether `cur`, read under the lock, is a plain version statesafe committed whose
    /// bytes are `text` and the final newline, on a store whose reads check nothing
    /// but the bytes (no rule, no schema): see [`Store::begin_known`]. Such a version
    /// was checked when it was committed, and its checksum says it is unchanged since.
    fn is_known(&self, cur: &Current, text: &[u8]) -> bool {
        let config = self.config();
        !cur.external
            && config.format == Format::Plain
            && config.schema.is_none()
            && self.opts.rule.is_none()
            && cur.bytes.len() == text.len() + 1
            && cur.bytes.strip_suffix(b"\n") == Some(text)
            && !format::looks_sealed(&cur.bytes)
    }

    /// The document as a tree for the history's patch, when the history wants one
    /// for a version of `len` bytes (as [`Store::verify`] gives it).
    pub(crate) fn history_value(&self, len: usize, state: &T) -> Option<Value> {
        let history = &self.config().history;
        (history.keep > 0 && len as u64 <= history.max_patch_bytes)
            .then(|| serde_json::to_value(state).ok())
            .flatten()
    }

    /// The read-modify-write transaction: under the lock, reads the file, applies `f`,
    /// validates and writes the result. Returns what `f` returned.
    ///
    /// # Errors
    /// As [`Transaction::commit`] and [`Store::begin`].
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// #[derive(serde::Serialize, serde::Deserialize, Default)]
    /// struct Counter { n: u64 }
    /// let store = statesafe::Store::<Counter>::open(dir.path().join("counter.json"))?;
    /// let n = store.update_or_default(|c| { c.n += 1; c.n })?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut tx = self.begin()?;
        let r = f(tx.state_mut());
        tx.commit()?;
        Ok(r)
    }

    /// [`Store::update`], starting from `T::default()` when the file does not exist.
    ///
    /// # Errors
    /// As [`Store::update`], without [`Error::NotFound`].
    pub fn update_or_default<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R>
    where
        T: Default,
    {
        let mut tx = self.begin_or_insert_with(T::default)?;
        let r = f(tx.state_mut());
        tx.commit()?;
        Ok(r)
    }

    /// [`Store::update`] with a closure that can fail: its error aborts the
    /// transaction, nothing is written, and the error is returned as it is.
    ///
    /// # Errors
    /// The closure's error, or a store error converted with `E: From<Error>`.
    pub fn try_update<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut T) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let mut tx = self.begin()?;
        let r = f(tx.state_mut())?;
        tx.commit()?;
        Ok(r)
    }

    /// Compare-and-swap: like [`Store::update`], but only if the file is still at
    /// generation `expected` (the one the caller read earlier without the lock).
    ///
    /// # Errors
    /// [`Error::GenerationConflict`] when someone else committed in between; then
    /// nothing is written. [`Error::NotFound`] when the file does not exist (use
    /// [`Store::replace_if`] with generation 0 to create it). Otherwise as [`Store::update`].
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// store.create(serde_json::json!({"serial": 1}))?;
    /// let snap = store.load()?;
    /// store.update(|s| s["serial"] = 2.into())?; // someone else
    /// let err = store.update_if(snap.generation, |s| s["serial"] = 3.into()).unwrap_err();
    /// assert!(matches!(err, statesafe::Error::GenerationConflict { .. }));
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn update_if<R>(&self, expected: u64, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let (mut tx, _) =
            self.begin_with("update_if", None::<fn() -> T>, None::<(&[u8], fn() -> T)>)?;
        tx.expect_generation(expected)?;
        let r = f(tx.state_mut());
        tx.commit()?;
        Ok(r)
    }

    /// Replaces the whole document under the lock; returns the new generation.
    ///
    /// # Errors
    /// As [`Transaction::commit`].
    pub fn replace(&self, state: T) -> Result<u64> {
        self.replace_checked(None, state, "replace")
    }

    /// Replaces the whole document only if the file is at generation `expected`
    /// (0: only if it does not exist).
    ///
    /// # Errors
    /// [`Error::GenerationConflict`], or as [`Transaction::commit`].
    pub fn replace_if(&self, expected: u64, state: T) -> Result<u64> {
        self.replace_checked(Some(expected), state, "replace_if")
    }

    /// Creates the file with `state`: generation 1 for a new state file. A file
    /// deleted while its sidecar shows committed generations is refused
    /// ([`Error::Deleted`]): [`Store::recover`] puts it back, and [`Store::replace`]
    /// starts over on purpose, continuing after the last generation the sidecar
    /// knows (generations never repeat).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when it exists, [`Error::Deleted`], or as
    /// [`Transaction::commit`].
    pub fn create(&self, state: T) -> Result<u64> {
        match self.replace_checked(Some(0), state, "create") {
            Err(Error::GenerationConflict { path, .. }) => Err(Error::AlreadyExists { path }),
            other => other,
        }
    }

    fn replace_checked(&self, expected: Option<u64>, state: T, operation: &str) -> Result<u64> {
        if let Some(remote) = self.remote() {
            return remote.replace(self, expected, &state, operation);
        }
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read(operation, true)?;
        // Where a damaged file went and why: said once the replace committed.
        let mut quarantined = None;
        let base = match &current {
            Some(cur) => Some(match self.verify(cur, true) {
                Ok(v) => Base::of(cur, true, v.value),
                // A sound version this store's type or rule refuses: replacing it
                // needs no reading of it, and it is kept as a backup like any other.
                Err(Error::Mismatch { .. }) => Base::of(cur, true, None),
                // Replacing a damaged file: keep it in quarantine, never in the backups.
                Err(damage) if is_damage(&damage) => {
                    let kept = self.quarantine(guard.sidecar(), cur)?;
                    quarantined = Some((kept, damage.to_string()));
                    Base::of(cur, false, None)
                }
                Err(e) => return Err(e),
            }),
            // A create (expected generation 0) starts from nothing: not in the place
            // of a deleted state (`replace`, unconditional, may: a whole document).
            None if expected == Some(0) => {
                self.refuse_deleted(Some(guard.sidecar()))?;
                None
            }
            None => None,
        };
        if let Some(expected) = expected {
            let found = base.as_ref().map_or(0, |b| b.generation);
            if found != expected {
                return Err(Error::GenerationConflict {
                    path: self.local().target.given.clone(),
                    expected,
                    found,
                });
            }
        }
        guard.may_defer = true;
        let new = self.write_version(
            &mut guard,
            &temp_name,
            &state,
            base.as_ref(),
            Change::Commit,
        )?;
        self.release_and_finish(guard)?;
        self.report_quarantined(quarantined, new.generation);
        Ok(new.generation)
    }

    /// Says, once a write that replaced a damaged file committed as `generation`,
    /// where the damaged version went ([`Event::Quarantined`]): never silently.
    pub(crate) fn report_quarantined(
        &self,
        quarantined: Option<(PathBuf, String)>,
        generation: u64,
    ) {
        if let Some((quarantined, damage)) = quarantined {
            self.emit(Event::Quarantined {
                path: self.local().target.given.clone(),
                damage,
                quarantined,
                generation,
            });
        }
    }

    /// Releases the writers' lock after a commit, then flushes the journal append it
    /// left for after the release (`journal::Pending`): the commit is acknowledged only
    /// once that flush proved it durable. A failed flush poisons the store and is
    /// [`Error::OutcomeUnknown`].
    pub(crate) fn release_and_finish(&self, mut guard: lock::Guard<'_>) -> Result<()> {
        let pending = guard.deferred.take();
        guard.release();
        let Some(pending) = pending else {
            return Ok(());
        };
        let generation = pending.generation;
        let started = pending.started;
        match self.finish_journal(pending) {
            Ok(fsync) => {
                self.recorder.commit(started.elapsed(), fsync);
                Ok(())
            }
            Err(e) => {
                self.poison();
                let e = crate::journal::flush_failed(self.path(), generation, e);
                self.recorder.failure(e.kind());
                Err(e)
            }
        }
    }

    /// Validates, encodes and commits `state` as the version after `base`, keeps the
    /// outgoing version as a backup, records the history. Returns the new base.
    pub(crate) fn write_version(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &OsString,
        state: &T,
        base: Option<&Base>,
        change: Change,
    ) -> Result<Base> {
        self.write_doc(guard, temp_name, NewDoc::State(state), base, change)
    }

    /// [`Store::write_version`] of a document given as the state or as its text.
    fn write_doc(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &OsString,
        doc: NewDoc<'_, T>,
        base: Option<&Base>,
        change: Change,
    ) -> Result<Base> {
        let started = Instant::now();
        let result = self.write_version_inner(guard, temp_name, doc, base, change);
        match (&result, guard.deferred.as_mut()) {
            // Counted once its flush is done (`release_and_finish`).
            (Ok(_), Some(pending)) => pending.started = started,
            (Ok((_, fsync)), None) => self.recorder.commit(started.elapsed(), *fsync),
            (Err(e), _) => self.recorder.failure(e.kind()),
        }
        result.map(|(b, _)| b)
    }

    fn write_version_inner(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &OsString,
        doc: NewDoc<'_, T>,
        base: Option<&Base>,
        change: Change,
    ) -> Result<(Base, std::time::Duration)> {
        guard.check_process()?;
        let config = self.config();
        let path = &self.local().target.given;
        if let NewDoc::State(state) = doc {
            validate::check(path, state, self.opts.rule.as_ref(), config.schema.as_ref())?;
        }
        if let NewDoc::Streamed(held) = doc
            && let Some(state) = held.borrow().as_ref()
        {
            validate::check(path, state, self.opts.rule.as_ref(), config.schema.as_ref())?;
        }
        let sidecar = Arc::clone(guard.sidecar());
        let generation = match base {
            Some(b) => b.generation + 1,
            None => write::highest_known_generation(Some(&sidecar), &self.local().lock)? + 1,
        };
        // No file, but the sidecar knows generations: a deleted state put back
        // (`recover`) or started over (`replace`). The new file is that state's next
        // version, and takes the permissions its sidecar kept for it, never a new
        // file's: those would widen the file and then (`Sidecar::enforce`, which
        // follows the file) the old history and backups folders with it ("A deleted
        // state file" in docs/design.md).
        let former = match base {
            None if generation > 1 => Some(sidecar.former_perms()?),
            _ => None,
        };
        if generation > crate::format::MAX_GENERATION {
            return Err(Error::Invalid {
                path: path.clone(),
                message: format!(
                    "it would be generation {generation}, past the largest statesafe writes ({})",
                    crate::format::MAX_GENERATION
                ),
            });
        }
        // The new version is usually about as long as the one it replaces: for a large
        // document, start the buffer there (with a little room) rather than doubling
        // up to it, which left the abandoned halves resident (peak memory 3.5x the
        // document; 2.5x with the hint). Small buffers keep growing from nothing:
        // they fit in heap chunks just freed (the read buffer), which a buffer sized
        // at once would not.
        let size_hint = base
            .filter(|b| b.len >= 128 << 10)
            .map_or(0, |b| b.len + b.len / 64 + 256);
        let style = self.opts.layout.style(base.and_then(|b| b.style));
        // A streamed document's first pass (`stream.rs`): its length and checksum,
        // with `bytes` left empty.
        let mut streamed = None;
        // Journal mode: the length of a text that passes every check, told without
        // making it (`measure.rs`), with `bytes` left empty: only a compaction
        // (below) writes the text.
        let mut measured = None;
        let mut bytes = match (doc, config.format) {
            (NewDoc::Streamed(held), format) => {
                let held = held.borrow();
                let state = held
                    .as_ref()
                    .expect("invariant: taken only once the commit is durable");
                match format {
                    Format::Plain => match crate::stream::measure(state, style) {
                        Some(encoded) => {
                            streamed = Some(encoded);
                            Vec::new()
                        }
                        None => format::encode(path, state, style, size_hint, 0)?,
                    },
                    Format::Sealed => format::encode_sealed(
                        path,
                        state,
                        style,
                        generation,
                        now_rfc3339(),
                        size_hint,
                    )?,
                    Format::Journal => match crate::measure::encoded_len(state, style) {
                        Some(len) => {
                            measured = Some(len);
                            Vec::new()
                        }
                        None => format::encode(path, state, style, size_hint, 0)?,
                    },
                }
            }
            (NewDoc::State(state), Format::Plain) => {
                format::encode(path, state, style, size_hint, 0)?
            }
            (NewDoc::State(state), Format::Sealed) => {
                format::encode_sealed(path, state, style, generation, now_rfc3339(), size_hint)?
            }
            (NewDoc::Serialized { text, depth, .. }, _) => {
                if depth > format::MAX_DEPTH {
                    return Err(Error::TooDeep {
                        path: path.clone(),
                        depth,
                        limit: format::MAX_DEPTH,
                    });
                }
                if config.format != Format::Sealed && format::looks_sealed(text.as_bytes()) {
                    return Err(format::envelope_refused(path));
                }
                let mut bytes = Vec::with_capacity(text.len() + 1);
                bytes.extend_from_slice(text.as_bytes());
                bytes.push(b'\n');
                bytes
            }
            // The snapshot, when this commit compacts; otherwise, what `max_bytes` counts.
            (NewDoc::State(state), Format::Journal) => {
                match crate::measure::encoded_len(state, style) {
                    Some(len) => {
                        measured = Some(len);
                        Vec::new()
                    }
                    None => format::encode(path, state, style, size_hint, 0)?,
                }
            }
        };
        refuse_lone_surrogate(path, &bytes)?;
        let len = streamed.map_or(
            measured.unwrap_or(bytes.len()),
            |e: crate::stream::Encoded| e.len,
        );
        if let Some(limit) = config.max_bytes
            && len as u64 > limit
        {
            return Err(Error::TooLarge {
                path: path.clone(),
                size: len as u64,
                limit,
            });
        }
        // Not for a journal append, which records no checksum of the document (its
        // base keeps the snapshot's).
        let new_sum =
            |bytes: &[u8]| streamed.map_or_else(|| format::checksum(bytes), |e| e.checksum);
        if let Some(b) = base {
            let unchanged = change == Change::Commit
                && config.format == Format::Plain
                && b.valid
                && !b.external
                && b.len == len
                && b.checksum == new_sum(&bytes);
            if unchanged {
                return Ok((b.clone(), std::time::Duration::ZERO));
            }
        }
        let dir = self.dir()?;
        if let Some(min_free) = config.min_free_bytes {
            let free = sys::free_bytes(dir).map_err(|e| Error::io(crate::Op::Write, path, e))?;
            if free < min_free.saturating_add(len as u64) {
                return Err(Error::NoSpace {
                    path: path.clone(),
                    op: crate::Op::Write,
                    source: sys::no_space_error(),
                });
            }
        }
        // Journal mode: append one record, or compact (the ordinary protocol below
        // writes the snapshot, from the snapshot's base).
        let mut repaired = None;
        let snapshot_base;
        let (generation, base) = if config.format == Format::Journal {
            let state = match doc {
                NewDoc::State(state) => crate::journal::NewState::Borrowed(state),
                NewDoc::Streamed(cell) => crate::journal::NewState::Cell(cell),
                NewDoc::Serialized { .. } => unreachable!(
                    "invariant: commit_serialized parses the text unless the format is plain"
                ),
            };
            match self.journal_commit(guard, state, len, base, generation, &change)? {
                crate::journal::Step::Appended(b, fsync) => {
                    // A `chmod` of the state file since the last commit reaches the
                    // sidecar and the journal now, not at the next compaction (one
                    // `fstat` when nothing changed).
                    if let Err(e) = guard.sidecar().enforce(b.perms, b.generation) {
                        self.bookkeeping_failed(
                            b.generation,
                            "giving the sidecar the file's permissions",
                            &e,
                        );
                    }
                    return Ok((b, fsync));
                }
                crate::journal::Step::Compact {
                    generation,
                    base,
                    repaired: r,
                } => {
                    // The journal's records were just moved into the history: the
                    // last holder's hint of what it recorded is out of date.
                    guard.previous.history = None;
                    // A journal-mode holder records its temporary file only when it
                    // is about to make one (an append makes none; see
                    // `lock_and_read_within`), so that a writer killed now has it
                    // removed by the next holder.
                    if guard.record.temp.is_none() {
                        guard.record.temp = Some(temp_name.to_string_lossy().into_owned());
                        guard.write_record(path)?;
                    }
                    repaired = r;
                    snapshot_base = base;
                    // The snapshot's text, with every check the text's (the measure
                    // answered only for a text that passes them).
                    if measured.is_some() {
                        bytes = match doc {
                            NewDoc::State(state) => {
                                format::encode(path, state, style, size_hint, 0)?
                            }
                            NewDoc::Streamed(held) => format::encode(
                                path,
                                held.borrow()
                                    .as_ref()
                                    .expect("invariant: taken only once the commit is durable"),
                                style,
                                size_hint,
                                0,
                            )?,
                            NewDoc::Serialized { .. } => {
                                unreachable!("invariant: measured only in journal mode")
                            }
                        };
                        refuse_lone_surrogate(path, &bytes)?;
                    }
                    (generation, snapshot_base.as_ref())
                }
            }
        } else {
            (generation, base)
        };
        // A version known without a descriptor of its file (a journal-mode store's
        // cache; a version served otherwise) kept nothing from giving its inode number
        // to another file since (see `write::Current::pin`): the file is read now,
        // through a descriptor kept to the rename, and must still be the device, inode
        // and bytes the version stood for.
        let _pinned = match base {
            Some(b) if b.pin.is_none() => match b.id {
                Some(id) => Some(self.pin_version(guard, dir, Some(id), b.checksum)?.0),
                None => None,
            },
            _ => None,
        };
        let new_sum = new_sum(&bytes);
        // A replaced file keeps exactly its own ACL (or none); a directory's default
        // ACL never widens it. Read now, under the lock, like the mode was.
        let existing_acl = base.and_then(|b| b.acl.as_deref());
        let acl = match (
            &existing_acl,
            base.is_some() || former.is_some() || self.opts.private,
        ) {
            (Some(acl), _) => write::Acl::Copy(acl),
            (None, true) => write::Acl::Nothing,
            (None, false) => write::Acl::Inherit,
        };
        let keep_backup = config.backups.enabled() && base.is_some_and(|b| b.valid);
        // What this commit did before the rename, to take back if it fails: a write
        // that does not happen leaves no backup, no stamp, no generation used up.
        let mut stamped = None;
        let mut linked = None;
        if keep_backup {
            let b = base.expect("invariant: checked above");
            if b.external {
                // The outgoing version was made outside statesafe: its metadata record
                // is stale or missing. Stamp it with what we verified, so the backup
                // vouches for its own bytes like any other.
                stamped = write::stamp_meta(
                    &self.local().target,
                    dir,
                    Meta {
                        v: 1,
                        generation: b.generation,
                        xxh3: b.checksum,
                        journal: false,
                    },
                );
            }
            match backup::link_outgoing(
                &sidecar,
                &self.local().target,
                dir,
                b.generation,
                b.checksum,
                b.perms,
            ) {
                Ok(l) => linked = Some((l, b.generation)),
                Err(e) => {
                    take_back(&sidecar, None, stamped.as_ref());
                    // A sidecar deleted under us fails here first: say why.
                    return Err(guard.verify(dir).err().unwrap_or(e));
                }
            }
        }
        let guard_ref: &lock::Guard<'_> = guard;
        let commit = write::Commit {
            target: &self.local().target,
            dir,
            temp_name,
            durability: self.opts.durability,
            existing: base.map(|b| b.perms).or(former),
            private: self.opts.private,
            acl,
            sidecar: Some(&sidecar),
            before_rename: &|| {
                guard_ref.verify(dir)?;
                let expected = match base {
                    Some(b) => match b.id {
                        Some(id) => Some(id),
                        None => return Ok(()),
                    },
                    None => None,
                };
                match write::unchanged_since_read(&self.local().target, dir, expected) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(guard_ref.lost()),
                    Err(e) => Err(Error::io(crate::Op::Rename, &self.local().target.given, e)),
                }
            },
        };
        let meta = Meta {
            v: 1,
            generation,
            xxh3: new_sum,
            journal: config.format == Format::Journal,
        };
        // A large document's history patch, taken from the bytes of the change
        // (local_patch.rs), is a scan of the whole new version: done on a second
        // thread while this one writes and waits for the `fsync`s, not after them.
        // Only what the history would compute anyway (see `record_history`): a
        // serialized text past `max_patch_bytes` whose outgoing version the
        // transaction kept and backs up, in a plain file.
        let early_old = match doc {
            NewDoc::Serialized {
                outgoing: Some(old),
                ..
            } if config.history.keep > 0
                && bytes.len() as u64 > config.history.max_patch_bytes
                && keep_backup
                && config.format == Format::Plain
                && !format::looks_sealed(&bytes) =>
            {
                Some(old)
            }
            _ => None,
        };
        let patch_limit = usize::try_from(config.history.max_patch_bytes).unwrap_or(usize::MAX);
        let (outcome, early_patch) = std::thread::scope(|scope| {
            let worker = early_old.and_then(|old| {
                let bytes = &bytes;
                std::thread::Builder::new()
                    .name("statesafe-patch".into())
                    .spawn_scoped(scope, move || {
                        crate::local_patch::local_patch_bytes(old, bytes, patch_limit)
                    })
                    .ok()
            });
            let outcome = match (doc, streamed) {
                (NewDoc::Streamed(held), Some(encoded)) => {
                    let held = held.borrow();
                    let state = held
                        .as_ref()
                        .expect("invariant: taken only once the commit is durable");
                    let write = |out: &mut dyn std::io::Write| {
                        crate::stream::write_into(state, style, encoded, out)
                    };
                    write::commit_content(
                        &write::RealFs,
                        &commit,
                        write::Content::Stream(&write),
                        meta,
                    )
                }
                _ => write::commit(&write::RealFs, &commit, &bytes, meta),
            };
            // A worker that panicked gives no patch (the entry then says so).
            (outcome, worker.map(|w| w.join().ok().flatten()))
        });
        let failed = match &outcome {
            Ok(Ok(_)) | Err(write::Poisoning(Error::OutcomeUnknown { .. })) => false,
            Ok(Err(_)) | Err(_) => true,
        };
        if failed {
            take_back(&sidecar, linked, stamped.as_ref());
        }
        let committed = match outcome {
            Ok(Ok(committed)) => committed,
            Ok(Err(e)) => return Err(e),
            Err(write::Poisoning(e)) => {
                self.poison();
                return Err(e);
            }
        };
        // A damaged version written over was not accepted: its event is `Quarantined`
        // (sent by the replace), not an external change "accepted as generation N".
        if let Some(b) = base.filter(|b| b.external && b.valid) {
            self.note_external(b.generation, crate::store::Outside::of(b.adopted));
        }
        // The commit is durable. What follows is bookkeeping: a failure there must not
        // turn a committed write into a reported failure, so it is logged and counted.
        guard.record.temp = None;
        // Without its metadata record (no extended attributes, and the sidecar's
        // `meta` could not be written), readers derive this version's generation as
        // after a crash right after the rename: one more than the last generation
        // recorded anywhere. So nothing may record this one: not the lock record, not
        // the history (the next writer records it, as an external change).
        let recorded = committed.meta != write::MetaRecord::Missing;
        if recorded {
            guard.record.last_generation = generation;
        } else {
            self.bookkeeping_failed(
                generation,
                "recording its generation",
                &Error::io(
                    crate::Op::WriteMeta,
                    self.local().target.sidecar().join("meta"),
                    std::io::Error::other("the sidecar metadata record could not be written"),
                ),
            );
        }
        let perms = base
            .map(|b| b.perms)
            .or(former)
            .unwrap_or_else(|| current_perms(self));
        if config.format == Format::Journal
            && recorded
            && let Err(e) =
                self.journal_compacted(guard, &sidecar, generation, new_sum, perms, repaired)
        {
            self.bookkeeping_failed(generation, "starting a new journal", &e);
        }
        if let Err(e) = sidecar.enforce(perms, generation) {
            self.bookkeeping_failed(generation, "giving the sidecar the file's permissions", &e);
        }
        if keep_backup {
            // Freeing the oldest backup's blocks can be slow and nothing waits for it:
            // the janitor thread does it while we go on (see janitor.rs).
            let (target, policy) = (self.local().target.clone(), config.backups);
            let recorder = Arc::clone(&self.recorder);
            let sidecar = Arc::clone(&sidecar);
            crate::janitor::defer(&self.local().janitor, move || {
                let pruned = backup::prune(&sidecar, &policy);
                if let Err(e) = pruned {
                    bookkeeping_failed(&recorder, &target.given, "pruning backups", &e);
                }
            });
        }
        let value = match doc {
            NewDoc::State(state) => self.history_value(bytes.len(), state),
            NewDoc::Streamed(held) => {
                let value = held
                    .borrow()
                    .as_ref()
                    .and_then(|state| self.history_value(len, state));
                // The tree is not needed any more: freed before the history reads
                // the new version back.
                drop(held.borrow_mut().take());
                value
            }
            NewDoc::Serialized { text, .. } => (config.history.keep > 0
                && bytes.len() as u64 <= config.history.max_patch_bytes)
                .then(|| serde_json::from_str(text).ok())
                .flatten(),
        };
        if config.history.keep > 0 && recorded {
            let hint = guard.previous.history;
            // A streamed version's file, for the patch taken from its bytes.
            let file = streamed
                .filter(|_| value.is_none())
                .and_then(|e| crate::stream::reopen(&self.local().target, dir, e));
            let new = NewVersion {
                generation,
                bytes: &bytes,
                file: file.as_ref().map(|(f, sealed)| (f, len, *sealed)),
                value: &value,
                backed_up: keep_backup,
                outgoing: match doc {
                    NewDoc::Serialized { outgoing, .. } => outgoing,
                    _ => None,
                },
                early_patch: early_patch.as_ref(),
            };
            match self.record_history(&sidecar, base, &new, change, perms, hint) {
                Ok(()) => guard.record.history = Some(generation),
                Err(e) => self.bookkeeping_failed(generation, "recording history", &e),
            }
        }
        // Hints for the next holder (not synced; a lost update only costs a lookup).
        let _ = guard.write_record(path);
        Ok((
            Base {
                generation,
                perms,
                checksum: new_sum,
                len,
                // Readers will take it for an external change (see above).
                external: !recorded,
                adopted: false,
                valid: true,
                value: value.map(Arc::new),
                id: None,
                pin: None,
                style: Some(style),
                // What the new version was given (a directory's default ACL that a
                // new file inherited is not known here: nothing reuses this for that).
                acl: existing_acl.map(<[u8]>::to_vec),
                journal: None,
            },
            committed.fsync,
        ))
    }

    /// The state file as a commit is about to replace it, opened to keep its inode
    /// (and so its number) until the rename, with its device and inode: `LockLost`,
    /// as for the check before the rename, unless it still holds the bytes of
    /// checksum `checksum` (and, given `id`, is still that device and inode). So a
    /// version known without a descriptor (a journal-mode store's cache; a version
    /// this transaction wrote) is never taken for a file another program put in its
    /// place, even one given the same inode number.
    fn pin_version(
        &self,
        guard: &lock::Guard<'_>,
        dir: &std::os::fd::OwnedFd,
        id: Option<(u64, u64)>,
        checksum: u64,
    ) -> Result<(Arc<std::fs::File>, (u64, u64))> {
        let target = &self.local().target;
        let io = |e| Error::io(crate::Op::Read, &target.given, e);
        let file = match sys::open_at(dir, &target.name, sys::Access::Read, 0) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(guard.lost()),
            Err(e) => return Err(io(e)),
        };
        let st = sys::stat_fd(&file).map_err(io)?;
        if id.is_some_and(|id| (st.dev, st.ino) != id) {
            return Err(guard.lost());
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(io)?;
        if format::checksum(&bytes) != checksum {
            return Err(guard.lost());
        }
        Ok((Arc::new(file), (st.dev, st.ino)))
    }

    pub(crate) fn bookkeeping_failed(&self, generation: u64, what: &str, e: &Error) {
        bookkeeping_failed(&self.recorder, &self.local().target.given, what, e);
        self.emit(Event::BookkeepingFailed {
            path: self.local().target.given.clone(),
            generation,
            what: what.to_string(),
            error: e.with_causes(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn record_history(
        &self,
        sidecar: &Sidecar,
        base: Option<&Base>,
        new: &NewVersion<'_>,
        change: Change,
        perms: Perms,
        hint: Option<u64>,
    ) -> Result<()> {
        let (generation, value) = (new.generation, new.value);
        let config = self.config();
        let policy = &config.history;
        // The previous holder's record says which generation it last recorded; when
        // that is the one we replace, the chain is intact without reading the segment.
        let previous = base.map(|b| b.generation);
        let mut last = match hint {
            Some(h) if Some(h) == previous => Some(h),
            _ => history::last_recorded(sidecar, policy, generation),
        };
        if let Some(b) = base.filter(|b| b.external) {
            // The version we replace was made outside statesafe: record it first. Too
            // large for a snapshot, it gets a patch from the version before it, when
            // the backups and the history can rebuild that one.
            let patch = match (&b.value, new.backed_up, last) {
                (None, true, Some(l)) if l + 1 == b.generation => self.external_patch(b.generation),
                _ => None,
            };
            let note = match (&b.value, &patch) {
                (None, None) => Some(
                    "no snapshot or patch: the document is larger than history.max_patch_bytes \
                     and the version before it could not be rebuilt from a backup and the history"
                        .to_string(),
                ),
                (None, Some(_)) => Some(history::NO_CHECKSUM.to_string()),
                (Some(_), _) => None,
            };
            let entry = HistoryEntry {
                generation: b.generation,
                time: now_rfc3339(),
                writer: None,
                change: Change::External,
                patch,
                snapshot: b.value.as_deref().cloned(),
                note,
                checksum: b.value.as_deref().map(history::checksum_of),
            };
            history::append(sidecar, policy, &entry, perms)?;
            last = Some(b.generation);
        }
        let previous = base.and_then(|b| b.value.as_ref());
        let snapshot_needed = history::needs_snapshot(policy, generation, last);
        let (patch, snapshot, note) = match (value, previous) {
            (Some(new), Some(old)) if !snapshot_needed => {
                (Some(json_patch::diff(old, new)), None, None)
            }
            (Some(new), Some(old)) => (Some(json_patch::diff(old, new)), Some(new.clone()), None),
            (Some(new), None) => (None, Some(new.clone()), None),
            // Too large to diff as trees: the patch taken from the bytes of the
            // change, against the outgoing version's backup (see local_patch.rs).
            (None, _) => {
                // Plain files only: in a sealed file the bytes include the header,
                // whose change is no change of the document.
                let patch = base
                    .filter(|_| new.backed_up && config.format == Format::Plain)
                    .filter(|_| match new.file {
                        Some((_, _, sealed)) => !sealed,
                        None => !format::looks_sealed(new.bytes),
                    })
                    .and_then(|b| {
                        let limit = usize::try_from(policy.max_patch_bytes).unwrap_or(usize::MAX);
                        if let Some(patch) = new.early_patch {
                            return patch.clone();
                        }
                        if let (Some(old), None) = (new.outgoing, new.file) {
                            return crate::local_patch::local_patch_bytes(old, new.bytes, limit);
                        }
                        let old = backup::open_generation(sidecar, b.generation)
                            .ok()
                            .flatten()?;
                        match new.file {
                            Some((file, len, _)) => {
                                crate::local_patch::local_patch_file(&old, file, len, limit)
                            }
                            None => crate::local_patch::local_patch(&old, new.bytes, limit),
                        }
                    });
                let note = match &patch {
                    Some(_) if !snapshot_needed => Some(history::NO_CHECKSUM),
                    Some(_) => {
                        Some("no snapshot: the document is larger than history.max_patch_bytes")
                    }
                    None => Some(
                        "no snapshot or patch: the document is larger than history.max_patch_bytes and the change is not within one small value",
                    ),
                };
                (patch, None, note.map(str::to_string))
            }
        };
        let entry = HistoryEntry {
            generation,
            time: now_rfc3339(),
            writer: Some(Writer::current(true)),
            change,
            patch,
            snapshot,
            note,
            checksum: value.as_ref().map(history::checksum_of),
        };
        history::append(sidecar, policy, &entry, perms)
    }
}

/// Refuses a text that holds a `\u` escape of a lone UTF-16 surrogate: a string
/// JSON readers disagree on ([`format::lone_surrogate`]).
fn refuse_lone_surrogate(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(at) = format::lone_surrogate(bytes) else {
        return Ok(());
    };
    let (line, column) = format::line_column(bytes, at);
    Err(Error::Serialize {
        path: path.to_path_buf(),
        source: serde::ser::Error::custom(format!(
            "a string holds half of a character (a lone UTF-16 surrogate, `{}`) at line {line}, column {column}: JSON readers disagree on it (the CLI, Rust and Python refuse it), so it is not written; a string cut in the middle of a character (an emoji sliced by index) is the usual cause: cut it at a character boundary",
            String::from_utf8_lossy(&bytes[at..(at + 6).min(bytes.len())])
        )),
    })
}

/// Undoes what a commit that failed before its rename did to the outgoing version:
/// the backup it linked (not one that was there already) and the stamp it set. Best
/// effort: what remains is harmless (a backup that verifies, a stamp that is true).
fn take_back(
    sidecar: &Sidecar,
    linked: Option<(backup::Linked, u64)>,
    stamped: Option<&std::fs::File>,
) {
    if let Some((backup::Linked::Made, generation)) = linked {
        let _ = backup::unlink(sidecar, generation);
    }
    if let Some(file) = stamped {
        let _ = sys::remove_meta_attr(file);
    }
}

/// The document a commit writes: the state, serialized here, or the text a caller
/// serialized itself ([`Transaction::commit_serialized`]).
enum NewDoc<'a, T> {
    State(&'a T),
    Serialized {
        text: &'a str,
        depth: usize,
        /// The outgoing version's bytes, when the transaction kept them.
        outgoing: Option<&'a [u8]>,
    },
    /// The state, written straight into the file when large (`stream.rs`), and
    /// taken (freed) once the commit is durable and the history has its tree. In
    /// journal mode, a `Store<Value>`'s state, which an append takes as the new
    /// kept tree (`journal::NewState::Cell`).
    Streamed(&'a std::cell::RefCell<Option<T>>),
}

impl<T> Clone for NewDoc<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for NewDoc<'_, T> {}

/// The version just committed, as the history sees it.
struct NewVersion<'a> {
    generation: u64,
    bytes: &'a [u8],
    /// A streamed version (with `bytes` empty): its file, length, and whether it
    /// looks sealed.
    file: Option<(&'a std::fs::File, usize, bool)>,
    /// As JSON, when small enough to diff as a tree.
    value: &'a Option<Value>,
    /// Whether the version it replaced was kept as a backup (to diff bytes against).
    backed_up: bool,
    /// The bytes of the version it replaced, when the transaction kept them (the
    /// backup's, without reading it).
    outgoing: Option<&'a [u8]>,
    /// The patch from `outgoing` taken while the commit was written, when it was
    /// (`None` inside: the change is not within one small value).
    early_patch: Option<&'a Option<json_patch::Patch>>,
}

/// A step after a durable commit failed: counted and logged, never returned (the
/// commit stands).
fn bookkeeping_failed(recorder: &Recorder, path: &Path, what: &str, e: &Error) {
    recorder.failure(e.kind());
    tracing::warn!(
        target: "statesafe",
        "committed `{}`, but {what} failed: {}",
        path.display(),
        e.with_causes()
    );
}

/// The permissions of the file just committed, read through the store's directory
/// descriptor (never by path: a directory on the path may have been swapped for a link
/// to another user's directory since the store was opened, red22 finding 1); the
/// caller's own ids and `0644` when it cannot be read.
fn current_perms<T>(store: &Store<T>) -> Perms {
    let target = &store.local().target;
    match store.dir().and_then(|dir| {
        sys::stat_at(dir, &target.name).map_err(|e| Error::io(crate::Op::Read, target.real(), e))
    }) {
        Ok(st) => Perms {
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
        },
        Err(_) => Perms {
            mode: 0o644,
            uid: sys::effective_uid(),
            gid: sys::effective_gid(),
        },
    }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A read-modify-write transaction holding the writers' lock. [`commit`](Self::commit)
/// writes; dropping it writes nothing and releases the lock.
pub struct Transaction<'s, T: Serialize + DeserializeOwned> {
    store: &'s Store<T>,
    imp: Imp<'s>,
    state: T,
}

/// What a transaction holds, by backend. The local variant is the large one and the
/// common one: boxing it would cost every local transaction an allocation.
#[allow(clippy::large_enum_variant)]
enum Imp<'s> {
    /// The lock file's lock, and what the writer knows of the version it replaces.
    Local {
        guard: lock::Guard<'s>,
        temp_name: OsString,
        base: Option<Base>,
        /// The outgoing version's bytes, when [`Store::begin_known`] found them to be
        /// the caller's text and the history will want a patch taken from them.
        outgoing: Option<Vec<u8>>,
    },
    /// A database transaction holding the row lock.
    Remote(crate::postgres::Tx<'s>),
}

impl<T: Serialize + DeserializeOwned> fmt::Debug for Transaction<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("path", &self.store.path())
            .field("generation", &self.generation())
            .finish()
    }
}

impl<'s, T: Serialize + DeserializeOwned> Transaction<'s, T> {
    /// A local transaction holding `guard`, on `state`, replacing `base`.
    pub(crate) fn local(
        store: &'s Store<T>,
        guard: lock::Guard<'s>,
        temp_name: OsString,
        base: Option<Base>,
        state: T,
    ) -> Transaction<'s, T> {
        Transaction {
            store,
            imp: Imp::Local {
                guard,
                temp_name,
                base,
                outgoing: None,
            },
            state,
        }
    }

    /// `Some` when [`Transaction::commit_streaming`] streams this commit: a local
    /// one replacing a version of at least `stream::STREAM_MIN` bytes, in the plain
    /// format.
    pub(crate) fn streamable(&self) -> Option<()> {
        let large = matches!(&self.imp, Imp::Local { base: Some(b), .. }
            if b.len as u64 >= crate::stream::STREAM_MIN);
        (large && self.store.config().format == Format::Plain).then_some(())
    }

    /// [`Transaction::commit`], writing the state as `stream.rs` does.
    pub(crate) fn commit_streamed(self) -> Result<u64> {
        let store = self.store;
        match self.imp {
            Imp::Local {
                mut guard,
                temp_name,
                base,
                ..
            } => {
                let held = std::cell::RefCell::new(Some(self.state));
                let doc = NewDoc::Streamed(&held);
                guard.may_defer = true;
                let new =
                    store.write_doc(&mut guard, &temp_name, doc, base.as_ref(), Change::Commit)?;
                store.release_and_finish(guard)?;
                Ok(new.generation)
            }
            Imp::Remote(tx) => tx.commit(store, &self.state),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Transaction<'_, T> {
    /// The generation this transaction started from (0 for a new file).
    pub fn generation(&self) -> u64 {
        match &self.imp {
            Imp::Local { base, .. } => base.as_ref().map_or(0, |b| b.generation),
            Imp::Remote(tx) => tx.generation(),
        }
    }

    /// Whether the file existed when the transaction started.
    pub fn existed(&self) -> bool {
        match &self.imp {
            Imp::Local { base, .. } => base.is_some(),
            Imp::Remote(tx) => tx.existed(),
        }
    }

    /// The document as it is in this transaction.
    pub fn state(&self) -> &T {
        &self.state
    }

    /// The document, to change it.
    pub fn state_mut(&mut self) -> &mut T {
        &mut self.state
    }

    /// Replaces the document in this transaction.
    pub fn set(&mut self, state: T) {
        self.state = state;
    }

    /// Fails with [`Error::GenerationConflict`] unless the file is at `expected`.
    ///
    /// # Errors
    /// As above.
    pub fn expect_generation(&self, expected: u64) -> Result<()> {
        let found = self.generation();
        if found == expected {
            Ok(())
        } else {
            Err(Error::GenerationConflict {
                path: self.store.path().to_path_buf(),
                expected,
                found,
            })
        }
    }

    /// Validates, writes and syncs the document, then releases the lock. Returns the
    /// new generation. If the document is byte-for-byte what is on disk already,
    /// nothing is written and the generation stays.
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::TooLarge`] and [`Error::Serialize`] before
    /// anything is touched; [`Error::NoSpace`], [`Error::PermissionDenied`],
    /// [`Error::ReadOnly`], [`Error::Io`] with the file unchanged;
    /// [`Error::OutcomeUnknown`] when the directory fsync failed after the rename.
    /// After a failed fsync the store is poisoned: later writes fail with
    /// [`Error::Poisoned`] until it is reopened.
    pub fn commit(self) -> Result<u64> {
        let store = self.store;
        match self.imp {
            Imp::Local {
                mut guard,
                temp_name,
                base,
                ..
            } => {
                guard.may_defer = true;
                // In journal mode a `Store<Value>` hands its state over: an append
                // keeps it as the new tree, neither copied nor freed (`sys/value.rs`).
                let held = std::cell::RefCell::new(Some(self.state));
                let borrowed;
                let doc = if store.config().format == Format::Journal
                    && crate::sys::value::is_value::<T>()
                {
                    NewDoc::Streamed(&held)
                } else {
                    borrowed = held.borrow();
                    NewDoc::State(borrowed.as_ref().expect("invariant: just put there"))
                };
                let new =
                    store.write_doc(&mut guard, &temp_name, doc, base.as_ref(), Change::Commit)?;
                store.release_and_finish(guard)?;
                // Journal mode: the replaced version's tree, now shared with nobody,
                // becomes the kept document's spare (`journal/cache.rs`, `make_spare`)
                // instead of being freed.
                if let Some(mut b) = base
                    && store.config().format == Format::Journal
                {
                    b.journal = None;
                    if let Some(old) = b.value.take().and_then(|v| Arc::try_unwrap(v).ok()) {
                        crate::journal::cache::make_spare(store, b.generation, new.generation, old);
                    }
                }
                Ok(new.generation)
            }
            Imp::Remote(tx) => tx.commit(store, &self.state),
        }
    }

    /// [`Transaction::commit`] of a document the caller serialized itself: `text`, the
    /// output of a JSON serializer (`JSON.stringify`, a binding's own writer) run on
    /// a document the caller checked, laid out as the file should hold it, and
    /// `depth`, its nesting depth as that serializer counted it. The text is trusted
    /// to be one JSON value and is not parsed again (parsing a large document costs
    /// more than writing it); everything else is as in [`Transaction::commit`]:
    /// the depth and size limits, the checksum of the bytes written, the backup and
    /// the history. A store with a validation rule or a schema, a sealed store, and
    /// a remote one parse `text` into the state and commit that (a text that does
    /// not parse is then [`Error::Serialize`], and nothing is written).
    ///
    /// # Errors
    /// As [`Transaction::commit`]; [`Error::TooDeep`] when `depth` is past the
    /// depth limit (512 levels).
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// store.create(serde_json::json!({"n": 1}))?;
    /// let tx = store.begin()?;
    /// assert_eq!(tx.commit_serialized("{\"n\": 2}", 1)?, 2);
    /// assert_eq!(store.get()?, serde_json::json!({"n": 2}));
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn commit_serialized(mut self, text: &str, depth: usize) -> Result<u64> {
        let store = self.store;
        let config = store.config();
        let parse = config.format != Format::Plain
            || config.schema.is_some()
            || store.opts.rule.is_some()
            || matches!(self.imp, Imp::Remote(_));
        if parse {
            let state = format::decode(store.path(), text.as_bytes()).map_err(|e| match e {
                Error::Corrupt { .. } => Error::Serialize {
                    path: store.path().to_path_buf(),
                    source: serde_json::from_str::<serde::de::IgnoredAny>(text)
                        .err()
                        .unwrap_or_else(|| serde::de::Error::custom(e.to_string())),
                },
                other => other,
            })?;
            self.state = state;
            return self.commit();
        }
        let (mut guard, temp_name, base, outgoing) = match self.imp {
            Imp::Local {
                guard,
                temp_name,
                base,
                outgoing,
            } => (guard, temp_name, base, outgoing),
            Imp::Remote(_) => unreachable!("invariant: a remote transaction parses above"),
        };
        let doc = NewDoc::Serialized {
            text,
            depth,
            outgoing: outgoing.as_deref(),
        };
        guard.may_defer = true;
        let new = store.write_doc(&mut guard, &temp_name, doc, base.as_ref(), Change::Commit)?;
        store.release_and_finish(guard)?;
        Ok(new.generation)
    }
}
