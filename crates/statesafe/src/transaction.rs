//! Transactions: locked read-modify-write, compare-and-swap, and the commit path
//! shared by everything that writes a version (updates, restores, recoveries).

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backup;
use crate::error::{Error, Result};
use crate::events::Recorder;
use crate::format::{self, Meta, Writer};
use crate::history::{self, Change, HistoryEntry};
use crate::lock;
use crate::settings::Format;
use crate::sidecar;
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
    /// Verified valid, so it may become a backup.
    pub valid: bool,
    /// The document as JSON, when the history wants a patch from it.
    pub value: Option<Value>,
}

impl Base {
    pub fn of(cur: &Current, valid: bool, value: Option<Value>) -> Base {
        Base {
            generation: cur.generation,
            perms: cur.perms,
            checksum: cur.checksum,
            len: cur.bytes.len(),
            external: cur.external,
            valid,
            value,
        }
    }
}

/// The writers' lock on a state file, held until dropped; from [`Store::lock`].
pub struct LockGuard<'s> {
    _guard: lock::Guard<'s>,
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
        let locked = self.lock_and_read(operation, false)?;
        Ok(LockGuard {
            _guard: locked.guard,
        })
    }

    /// Takes the lock, cleans up after dead writers, and (if `read`) reads the file.
    pub(crate) fn lock_and_read(&self, operation: &str, read: bool) -> Result<Locked<'_>> {
        if self.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Poisoned {
                path: self.target.given.clone(),
            });
        }
        let temp_name = self.target.temp_name();
        let dir = self.dir()?;
        let start = Instant::now();
        let guard = self.lock.acquire(
            &self.target.given,
            self.config().lock_timeout,
            operation,
            Some(temp_name.to_string_lossy().into_owned()),
            || self.make_sidecar(),
        );
        let waited = start.elapsed();
        let guard = guard.inspect_err(|e| self.recorder.failure(e.kind()))?;
        self.recorder.lock_wait(waited);
        if let Some(stale) = &guard.previous.temp {
            write::remove_stale_temp(&self.target, dir, stale)?;
        }
        if self.take_first_sweep() {
            write::sweep_temps(&self.target, dir)?;
            if let Some(kind) = sys::special_filesystem(dir) {
                self.emit(crate::events::Event::SpecialFilesystem {
                    path: self.target.given.clone(),
                    kind,
                });
            }
        }
        let current = if read { self.read_current()? } else { None };
        Ok(Locked {
            guard,
            temp_name,
            current,
        })
    }

    /// Starts a transaction on an existing file: takes the lock, then reads the file
    /// afresh (never trusting an earlier copy). Commit with [`Transaction::commit`];
    /// dropping the transaction writes nothing and releases the lock. A damaged file
    /// is recovered first, as in [`Store::load`].
    ///
    /// # Errors
    /// [`Error::LockTimeout`], [`Error::NotFound`], [`Error::Unrecoverable`],
    /// [`Error::Poisoned`], I/O.
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
        self.begin_with("update", None::<fn() -> T>)
    }

    /// Like [`Store::begin`], but a missing file starts from `init()` (generation 0).
    ///
    /// # Errors
    /// As [`Store::begin`], without [`Error::NotFound`].
    pub fn begin_or_insert_with(&self, init: impl FnOnce() -> T) -> Result<Transaction<'_, T>> {
        self.begin_with("update", Some(init))
    }

    fn begin_with(
        &self,
        operation: &str,
        init: Option<impl FnOnce() -> T>,
    ) -> Result<Transaction<'_, T>> {
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read(operation, true)?;
        let (state, base) = match current {
            Some(cur) => match self.verify(&cur, true) {
                Ok(v) => {
                    self.note_external(&cur);
                    (v.state, Some(Base::of(&cur, true, v.value)))
                }
                Err(damage) if is_damage(&damage) => {
                    let (state, base) =
                        self.recover_locked(&mut guard, &temp_name, &cur, damage, false)?;
                    (state, Some(base))
                }
                Err(e) => return Err(e),
            },
            None => match init {
                Some(init) => (init(), None),
                None => {
                    return Err(Error::NotFound {
                        path: self.target.given.clone(),
                    });
                }
            },
        };
        Ok(Transaction {
            store: self,
            guard,
            temp_name,
            base,
            state,
        })
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
        let mut tx = self.begin_with("update_if", None::<fn() -> T>)?;
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

    /// Creates the file with `state`: generation 1 for a new state file; a file that
    /// was deleted and is created again continues after the last generation its
    /// sidecar knows, so generations never repeat.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when it exists, or as [`Transaction::commit`].
    pub fn create(&self, state: T) -> Result<u64> {
        match self.replace_checked(Some(0), state, "create") {
            Err(Error::GenerationConflict { path, .. }) => Err(Error::AlreadyExists { path }),
            other => other,
        }
    }

    fn replace_checked(&self, expected: Option<u64>, state: T, operation: &str) -> Result<u64> {
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read(operation, true)?;
        let base = match &current {
            Some(cur) => Some(match self.verify(cur, true) {
                Ok(v) => Base::of(cur, true, v.value),
                // Replacing a damaged file: keep it in quarantine, never in the backups.
                Err(damage) if is_damage(&damage) => {
                    backup::quarantine(&self.target, self.dir()?, cur.checksum, cur.perms)?;
                    Base::of(cur, false, None)
                }
                Err(e) => return Err(e),
            }),
            None => None,
        };
        if let Some(expected) = expected {
            let found = base.as_ref().map_or(0, |b| b.generation);
            if found != expected {
                return Err(Error::GenerationConflict {
                    path: self.target.given.clone(),
                    expected,
                    found,
                });
            }
        }
        let new = self.write_version(
            &mut guard,
            &temp_name,
            &state,
            base.as_ref(),
            Change::Commit,
        )?;
        guard.release();
        Ok(new.generation)
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
        let started = Instant::now();
        let result = self.write_version_inner(guard, temp_name, state, base, change);
        match &result {
            Ok((_, fsync)) => self.recorder.commit(started.elapsed(), *fsync),
            Err(e) => self.recorder.failure(e.kind()),
        }
        result.map(|(b, _)| b)
    }

    fn write_version_inner(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &OsString,
        state: &T,
        base: Option<&Base>,
        change: Change,
    ) -> Result<(Base, std::time::Duration)> {
        let config = self.config();
        let path = &self.target.given;
        validate::check(path, state, self.opts.rule.as_ref(), config.schema.as_ref())?;
        let generation = match base {
            Some(b) => b.generation + 1,
            None => write::highest_known_generation(&self.target, &self.lock) + 1,
        };
        // The new version is usually about as long as the one it replaces: for a large
        // document, start the buffer there (with a little room) rather than doubling
        // up to it, which left the abandoned halves resident (peak memory 3.5x the
        // document; 2.5x with the hint). Small buffers keep growing from nothing:
        // they fit in heap chunks just freed (the read buffer), which a buffer sized
        // at once would not.
        let size_hint = base
            .filter(|b| b.len >= 128 << 10)
            .map_or(0, |b| b.len + b.len / 64 + 256);
        let bytes = match config.format {
            Format::Plain => format::encode(path, state, self.opts.layout, size_hint)?,
            Format::Sealed => format::encode_sealed(
                path,
                state,
                self.opts.layout,
                generation,
                now_rfc3339(),
                size_hint,
            )?,
        };
        if let Some(limit) = config.max_bytes
            && bytes.len() as u64 > limit
        {
            return Err(Error::TooLarge {
                path: path.clone(),
                size: bytes.len() as u64,
                limit,
            });
        }
        let new_sum = format::checksum(&bytes);
        if let Some(b) = base {
            let unchanged = change == Change::Commit
                && config.format == Format::Plain
                && b.valid
                && !b.external
                && b.len == bytes.len()
                && b.checksum == new_sum;
            if unchanged {
                return Ok((b.clone(), std::time::Duration::ZERO));
            }
        }
        let dir = self.dir()?;
        if let Some(min_free) = config.min_free_bytes {
            let free = sys::free_bytes(dir).map_err(|e| Error::io(crate::Op::Write, path, e))?;
            if free < min_free.saturating_add(bytes.len() as u64) {
                return Err(Error::NoSpace {
                    path: path.clone(),
                    op: crate::Op::Write,
                    source: sys::no_space_error(),
                });
            }
        }
        let keep_backup = config.backups.enabled() && base.is_some_and(|b| b.valid);
        if keep_backup {
            let b = base.expect("invariant: checked above");
            if b.external {
                // The outgoing version was made outside statesafe: its metadata record
                // is stale or missing. Stamp it with what we verified, so the backup
                // vouches for its own bytes like any other.
                write::stamp_meta(
                    &self.target,
                    Meta {
                        v: 1,
                        generation: b.generation,
                        xxh3: b.checksum,
                    },
                );
            }
            backup::link_outgoing(&self.target, dir, b.generation, b.checksum, b.perms)?;
        }
        let commit = write::Commit {
            target: &self.target,
            dir,
            temp_name,
            durability: self.opts.durability,
            existing: base.map(|b| b.perms),
            private: self.opts.private,
        };
        let fsync = match write::commit(
            &write::RealFs,
            &commit,
            &bytes,
            Meta {
                v: 1,
                generation,
                xxh3: new_sum,
            },
        ) {
            Ok(Ok(fsync)) => fsync,
            Ok(Err(e)) => return Err(e),
            Err(write::Poisoning(e)) => {
                self.poisoned
                    .store(true, std::sync::atomic::Ordering::Release);
                return Err(e);
            }
        };
        // The commit is durable. What follows is bookkeeping: a failure there must not
        // turn a committed write into a reported failure, so it is logged and counted.
        guard.record.last_generation = generation;
        guard.record.temp = None;
        let perms = base.map_or_else(|| current_perms(self), |b| b.perms);
        if let Err(e) = sidecar::enforce(&self.target, perms) {
            self.bookkeeping_failed(
                "giving the sidecar the file's permissions",
                &Error::io(crate::Op::Settings, self.target.sidecar(), e),
            );
        }
        if keep_backup {
            // Freeing the oldest backup's blocks can be slow and nothing waits for it:
            // the janitor thread does it while we go on (see janitor.rs).
            let b = base.expect("invariant: checked above");
            let by_name = change == Change::Commit && !b.external;
            let (target, policy, outgoing) = (self.target.clone(), config.backups, b.generation);
            let recorder = Arc::clone(&self.recorder);
            crate::janitor::defer(&self.janitor, move || {
                let pruned = if by_name {
                    backup::prune_after(&target, &policy, outgoing)
                } else {
                    backup::prune(&target, &policy)
                };
                if let Err(e) = pruned {
                    bookkeeping_failed(&recorder, &target.given, "pruning backups", &e);
                }
            });
        }
        let value =
            if config.history.keep > 0 && bytes.len() as u64 <= config.history.max_patch_bytes {
                serde_json::to_value(state).ok()
            } else {
                None
            };
        if config.history.keep > 0 {
            let hint = guard.previous.history;
            match self.record_history(base, generation, &value, change, perms, hint) {
                Ok(()) => guard.record.history = Some(generation),
                Err(e) => self.bookkeeping_failed("recording history", &e),
            }
        }
        // Hints for the next holder (not synced; a lost update only costs a lookup).
        let _ = guard.write_record(path);
        Ok((
            Base {
                generation,
                perms,
                checksum: new_sum,
                len: bytes.len(),
                external: false,
                valid: true,
                value,
            },
            fsync,
        ))
    }

    fn bookkeeping_failed(&self, what: &str, e: &Error) {
        bookkeeping_failed(&self.recorder, &self.target.given, what, e);
    }

    fn record_history(
        &self,
        base: Option<&Base>,
        generation: u64,
        value: &Option<Value>,
        change: Change,
        perms: Perms,
        hint: Option<u64>,
    ) -> Result<()> {
        let config = self.config();
        let policy = &config.history;
        // The previous holder's record says which generation it last recorded; when
        // that is the one we replace, the chain is intact without reading the segment.
        let previous = base.map(|b| b.generation);
        let mut last = match hint {
            Some(h) if Some(h) == previous => Some(h),
            _ => history::last_recorded(&self.target, policy, generation),
        };
        if let Some(b) = base.filter(|b| b.external) {
            // The version we replace was made outside statesafe: record it first.
            let entry = HistoryEntry {
                generation: b.generation,
                time: now_rfc3339(),
                writer: None,
                change: Change::External,
                patch: None,
                snapshot: b.value.clone(),
                note: b
                    .value
                    .is_none()
                    .then(|| "document too large for the history".to_string()),
            };
            history::append(&self.target, policy, &entry, perms)?;
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
            (None, _) => (
                None,
                None,
                Some("document too large for the history".to_string()),
            ),
        };
        let entry = HistoryEntry {
            generation,
            time: now_rfc3339(),
            writer: Some(Writer::current(true)),
            change,
            patch,
            snapshot,
            note,
        };
        history::append(&self.target, policy, &entry, perms)
    }
}

/// A step after a durable commit failed: counted and logged, never returned (the
/// commit stands).
fn bookkeeping_failed(recorder: &Recorder, path: &Path, what: &str, e: &Error) {
    recorder.failure(e.kind());
    tracing::warn!(target: "statesafe", "committed `{}`, but {what} failed: {e}", path.display());
}

fn current_perms<T>(store: &Store<T>) -> Perms {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(store.real_path()) {
        Ok(m) => Perms {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        },
        Err(_) => Perms {
            mode: 0o644,
            uid: 0,
            gid: 0,
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
    guard: lock::Guard<'s>,
    temp_name: OsString,
    base: Option<Base>,
    state: T,
}

impl<T: Serialize + DeserializeOwned> fmt::Debug for Transaction<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("path", &self.store.target.given)
            .field("generation", &self.generation())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Transaction<'_, T> {
    /// The generation this transaction started from (0 for a new file).
    pub fn generation(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.generation)
    }

    /// Whether the file existed when the transaction started.
    pub fn existed(&self) -> bool {
        self.base.is_some()
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
                path: self.store.target.given.clone(),
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
    pub fn commit(mut self) -> Result<u64> {
        let store = self.store;
        let new = store.write_version(
            &mut self.guard,
            &self.temp_name,
            &self.state,
            self.base.as_ref(),
            Change::Commit,
        )?;
        self.guard.release();
        Ok(new.generation)
    }
}
