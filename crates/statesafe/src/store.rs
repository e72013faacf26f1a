//! [`Store`]: the handle to one state file, its options, and its transactions.

use std::ffi::OsString;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Op, Result};
use crate::format::{self, Layout, Meta};
use crate::lock::{self, Holder, LockFile};
use crate::paths::Target;
use crate::sys;
use crate::write::{self, Current, Durability};

/// The default time a writer waits for the lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

type Validator<T> = Arc<dyn Fn(&T) -> std::result::Result<(), String> + Send + Sync>;

/// Options for opening a [`Store`]; start from [`Store::options`].
pub struct StoreOptions<T> {
    lock_timeout: Duration,
    durability: Durability,
    private: bool,
    layout: Layout,
    validator: Option<Validator<T>>,
}

impl<T> Clone for StoreOptions<T> {
    fn clone(&self) -> Self {
        StoreOptions {
            lock_timeout: self.lock_timeout,
            durability: self.durability,
            private: self.private,
            layout: self.layout,
            validator: self.validator.clone(),
        }
    }
}

impl<T> fmt::Debug for StoreOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("lock_timeout", &self.lock_timeout)
            .field("durability", &self.durability)
            .field("private", &self.private)
            .field("layout", &self.layout)
            .field("validator", &self.validator.is_some())
            .finish()
    }
}

impl<T> Default for StoreOptions<T> {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            durability: Durability::Full,
            private: false,
            layout: Layout::Pretty,
            validator: None,
        }
    }
}

impl<T> StoreOptions<T> {
    /// How long a writer waits for the lock before failing with
    /// [`Error::LockTimeout`]; zero tries once. Default 10 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How hard commits work to survive power loss; default [`Durability::Full`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Create a new state file readable by its owner only (mode 0600) instead of
    /// 0644 less the umask. An existing file always keeps its own mode.
    pub fn private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }

    /// How documents are laid out; default [`Layout::Pretty`].
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// A rule every new state must pass before it is written, for example
    /// `|s: &Account| if s.balance >= 0 { Ok(()) } else { Err("balance must not be negative".into()) }`.
    /// A failing rule aborts the commit with [`Error::Invalid`]; nothing is written.
    pub fn validate(
        mut self,
        rule: impl Fn(&T) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validator = Some(Arc::new(rule));
        self
    }

    /// Opens the store for the state file at `path`. Nothing is created until the
    /// first write; symlinks are followed to the real file, which a write replaces
    /// while the link stays.
    ///
    /// # Errors
    /// [`Error::BadPath`] when `path` is a directory, or its directory does not exist.
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use std::time::Duration;
    /// let store = statesafe::Store::<serde_json::Value>::options()
    ///     .lock_timeout(Duration::from_secs(2))
    ///     .open(dir.path().join("state.json"))?;
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn open(self, path: impl AsRef<Path>) -> Result<Store<T>> {
        let target = Target::resolve(path.as_ref())?;
        let lock = LockFile::new(target.sidecar().join("lock"));
        Ok(Store {
            target,
            lock,
            dir: OnceLock::new(),
            opts: self,
            poisoned: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            _state: PhantomData,
        })
    }
}

/// A state document and the generation it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<T> {
    /// The document.
    pub state: T,
    /// Its generation: 0 when the file does not exist, then +1 for each commit.
    pub generation: u64,
}

/// One state file: lock-free reads, locked read-modify-write transactions, atomic
/// durable replace. Cheap to share between threads (`&Store` is enough).
///
/// `T` is the document type (any `Serialize + DeserializeOwned`); the default,
/// [`serde_json::Value`], is the untyped API.
pub struct Store<T = serde_json::Value> {
    target: Target,
    lock: LockFile,
    dir: OnceLock<OwnedFd>,
    opts: StoreOptions<T>,
    poisoned: AtomicBool,
    swept: AtomicBool,
    _state: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.target.given)
            .field("options", &self.opts)
            .finish()
    }
}

impl<T> Store<T> {
    /// Options for opening a store, starting from the defaults.
    pub fn options() -> StoreOptions<T> {
        StoreOptions::default()
    }

    /// The path this store was opened with.
    pub fn path(&self) -> &Path {
        &self.target.given
    }

    /// The real path of the state file (symlinks resolved).
    pub fn real_path(&self) -> PathBuf {
        self.target.real()
    }

    /// The lock file (inside the sidecar directory).
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }

    /// Who holds the writers' lock right now, if anyone does.
    pub fn lock_holder(&self) -> Option<Holder> {
        self.lock.read_holder()
    }

    /// The special filesystem the state file is on (`nfs`, `fuse`, ...), if any: on
    /// those, the guarantees depend on the server or the file system daemon.
    pub fn special_filesystem(&self) -> Option<&'static str> {
        self.dir().ok().and_then(sys::special_filesystem)
    }

    fn dir(&self) -> Result<&OwnedFd> {
        if let Some(fd) = self.dir.get() {
            return Ok(fd);
        }
        let fd = sys::open_dir(&self.target.dir)
            .map_err(|e| Error::io(Op::Resolve, &self.target.dir, e))?;
        Ok(self.dir.get_or_init(|| fd))
    }

    fn make_sidecar(&self) -> Result<()> {
        let sidecar = self.target.sidecar();
        match std::fs::create_dir(&sidecar) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(Op::CreateSidecar, sidecar, e)),
        }
    }

    fn read_current(&self) -> Result<Option<Current>> {
        write::read_current(&self.target, &self.lock)
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Opens the store at `path` with default options.
    ///
    /// # Errors
    /// See [`StoreOptions::open`].
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("state.json"))?;
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Store<T>> {
        Store::options().open(path)
    }

    /// Reads the document and its generation. Takes no lock and never blocks: a
    /// concurrent writer's rename is atomic, so this sees the old or the new version.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the file does not exist; [`Error::Corrupt`] when it is
    /// not a valid document (never confused with a missing file).
    ///
    /// # Example
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("state.json");
    /// let store: statesafe::Store = statesafe::Store::open(&path)?;
    /// store.create(serde_json::json!({"n": 1}))?;
    /// let snap = store.load()?;
    /// assert_eq!(snap.state["n"], 1);
    /// assert_eq!(snap.generation, 1);
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn load(&self) -> Result<Snapshot<T>> {
        match self.read_current()? {
            Some(cur) => Ok(Snapshot {
                state: format::decode(&self.target.given, &cur.bytes)?,
                generation: cur.generation,
            }),
            None => Err(Error::NotFound {
                path: self.target.given.clone(),
            }),
        }
    }

    /// The document alone; see [`Store::load`].
    ///
    /// # Errors
    /// As [`Store::load`].
    pub fn get(&self) -> Result<T> {
        self.load().map(|s| s.state)
    }

    /// The current generation without parsing the document (0 when missing).
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.read_current()?.map_or(0, |c| c.generation))
    }

    /// Starts a transaction on an existing file: takes the lock, then reads the file
    /// afresh (never trusting an earlier copy). Commit with [`Transaction::commit`];
    /// dropping the transaction writes nothing and releases the lock.
    ///
    /// # Errors
    /// [`Error::LockTimeout`], [`Error::NotFound`], [`Error::Corrupt`], [`Error::Poisoned`], I/O.
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
        let (guard, temp_name, current) = self.lock_and_read(operation)?;
        let (state, base) = match current {
            Some(cur) => {
                let state = format::decode(&self.target.given, &cur.bytes)?;
                (state, Some(Base::from(&cur)))
            }
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
        let dir = self.dir()?;
        let guard = self.lock.acquire(
            &self.target.given,
            self.opts.lock_timeout,
            operation,
            None,
            || self.make_sidecar(),
        )?;
        if let Some(stale) = &guard.previous.temp {
            write::remove_stale_temp(&self.target, dir, stale)?;
        }
        Ok(LockGuard { _guard: guard })
    }

    /// Takes the lock, cleans up after dead writers, and reads the file.
    fn lock_and_read(
        &self,
        operation: &str,
    ) -> Result<(lock::Guard<'_>, OsString, Option<Current>)> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned {
                path: self.target.given.clone(),
            });
        }
        let temp_name = self.target.temp_name();
        let dir = self.dir()?;
        let guard = self.lock.acquire(
            &self.target.given,
            self.opts.lock_timeout,
            operation,
            Some(temp_name.to_string_lossy().into_owned()),
            || self.make_sidecar(),
        )?;
        if let Some(stale) = &guard.previous.temp {
            write::remove_stale_temp(&self.target, dir, stale)?;
        }
        if !self.swept.swap(true, Ordering::AcqRel) {
            write::sweep_temps(&self.target, dir)?;
        }
        let current = self.read_current()?;
        Ok((guard, temp_name, current))
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

    /// Creates the file with `state` as generation 1.
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
        let (guard, temp_name, current) = self.lock_and_read(operation)?;
        let tx = Transaction {
            store: self,
            guard,
            temp_name,
            base: current.as_ref().map(Base::from),
            state,
        };
        if let Some(expected) = expected {
            tx.expect_generation(expected)?;
        }
        tx.commit()
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

/// What a transaction remembers of the version it started from.
#[derive(Debug, Clone, Copy)]
struct Base {
    generation: u64,
    perms: write::Perms,
    checksum: u64,
    len: usize,
    external: bool,
}

impl From<&Current> for Base {
    fn from(cur: &Current) -> Base {
        Base {
            generation: cur.generation,
            perms: cur.perms,
            checksum: format::checksum(&cur.bytes),
            len: cur.bytes.len(),
            external: cur.external,
        }
    }
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
        self.base.map_or(0, |b| b.generation)
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
    /// [`Error::Invalid`] and [`Error::Serialize`] before anything is touched;
    /// [`Error::NoSpace`], [`Error::PermissionDenied`], [`Error::ReadOnly`],
    /// [`Error::Io`] with the file unchanged; [`Error::OutcomeUnknown`] when the
    /// directory fsync failed after the rename. After a failed fsync the store is
    /// poisoned: later writes fail with [`Error::Poisoned`] until it is reopened.
    pub fn commit(mut self) -> Result<u64> {
        let store = self.store;
        let path = &store.target.given;
        if let Some(rule) = &store.opts.validator {
            rule(&self.state).map_err(|message| Error::Invalid {
                path: path.clone(),
                message,
            })?;
        }
        let bytes = format::encode(path, &self.state, store.opts.layout)?;
        if let Some(base) = self.base
            && !base.external
            && base.len == bytes.len()
            && base.checksum == format::checksum(&bytes)
        {
            return Ok(base.generation);
        }
        let generation = self.generation() + 1;
        let meta = Meta::new(generation, &bytes);
        let commit = write::Commit {
            target: &store.target,
            dir: store.dir()?,
            temp_name: &self.temp_name,
            durability: store.opts.durability,
            existing: self.base.map(|b| b.perms),
            private: store.opts.private,
        };
        match write::commit(&commit, &bytes, meta) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(write::Poisoning(e)) => {
                store.poisoned.store(true, Ordering::Release);
                return Err(e);
            }
        }
        self.guard.record.last_generation = generation;
        self.guard.record.temp = None;
        // The record is a hint for later readers; failing to update it loses nothing.
        let _ = self.guard.write_record(path);
        self.guard.release(path)?;
        Ok(generation)
    }
}
