//! [`Store`]: the handle to one state file, and its options.
//!
//! Reads live here; transactions and the commit path are in `transaction.rs`;
//! recovery, restore, check and info in `recover.rs`.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, LOST_JOURNAL, Op, Result};
use crate::events::{Event, Recorder, Stats};
use crate::format::{self, Layout};
use crate::lock::{Holder, LockFile};
use crate::paths::Target;
use crate::settings::{BackupPolicy, Format, HistoryPolicy, RecoveryPolicy, Settings};
use crate::sidecar::Sidecar;
use crate::sys;
use crate::validate::{self, Rule, Schema};
use crate::write::{self, Current, Durability};

/// The default time a writer waits for the lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

type EventHook = Arc<dyn Fn(&Event) + Send + Sync>;
type DefaultState<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// Options for opening a [`Store`]; start from [`Store::options`].
///
/// Options left unset come from the file's recorded [`Settings`] (see
/// [`Store::save_settings`]), then from the defaults.
pub struct StoreOptions<T> {
    lock_timeout: Option<Duration>,
    pub(crate) durability: Durability,
    pub(crate) private: bool,
    pub(crate) layout: Layout,
    pub(crate) rule: Option<Rule<T>>,
    format: Option<Format>,
    schema: Option<Value>,
    backups: Option<BackupPolicy>,
    history: Option<HistoryPolicy>,
    max_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    recovery: Option<RecoveryPolicy>,
    pub(crate) default_state: Option<DefaultState<T>>,
    on_event: Option<EventHook>,
}

impl<T> Clone for StoreOptions<T> {
    fn clone(&self) -> Self {
        StoreOptions {
            lock_timeout: self.lock_timeout,
            durability: self.durability,
            private: self.private,
            layout: self.layout,
            rule: self.rule.clone(),
            format: self.format,
            schema: self.schema.clone(),
            backups: self.backups,
            history: self.history,
            max_bytes: self.max_bytes,
            min_free_bytes: self.min_free_bytes,
            recovery: self.recovery,
            default_state: self.default_state.clone(),
            on_event: self.on_event.clone(),
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
            .field("rule", &self.rule.is_some())
            .field("format", &self.format)
            .field("schema", &self.schema.is_some())
            .field("backups", &self.backups)
            .field("history", &self.history)
            .field("max_bytes", &self.max_bytes)
            .field("min_free_bytes", &self.min_free_bytes)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl<T> Default for StoreOptions<T> {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: None,
            durability: Durability::Full,
            private: false,
            layout: Layout::Keep,
            rule: None,
            format: None,
            schema: None,
            backups: None,
            history: None,
            max_bytes: None,
            min_free_bytes: None,
            recovery: None,
            default_state: None,
            on_event: None,
        }
    }
}

impl<T> StoreOptions<T> {
    /// How long a writer waits for the lock before failing with
    /// [`Error::LockTimeout`]; zero tries once. Default 10 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// How hard commits work to survive power loss; default [`Durability::Full`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Create a new state file readable by its owner only (mode 0600) instead of
    /// 0644 less the umask. An existing file always keeps its own mode, and a deleted
    /// one put back by [`Store::recover`] or started over by [`Store::replace`] the
    /// mode its sidecar kept for it.
    pub fn private(mut self, private: bool) -> Self {
        self.private = private;
        self
    }

    /// How documents are laid out; default [`Layout::Keep`]: the layout the file
    /// already has (compact, or indented by its own width), pretty for a new file.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// A rule every state must pass, before each commit and on load, for example
    /// `|s: &Account| if s.balance >= 0 { Ok(()) } else { Err("balance must not be negative".into()) }`.
    /// A failing rule aborts the commit with [`Error::Invalid`]; nothing is written.
    /// A version on disk that fails it is not damage (the rule is this reader's):
    /// loading it gives [`Error::Mismatch`] and changes nothing.
    pub fn validate(
        mut self,
        rule: impl Fn(&T) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.rule = Some(Arc::new(rule));
        self
    }

    /// A JSON Schema every state must satisfy (overrides the recorded one). Like a
    /// rule, it is this reader's: a version on disk that fails it gives
    /// [`Error::Mismatch`] on load. (An external change that fails the schema
    /// recorded in the settings is damage; see `docs/design.md`.)
    pub fn schema(mut self, schema: Value) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The file layout for new versions (overrides the recorded one).
    pub fn format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }

    /// Backup retention (overrides the recorded one).
    pub fn backups(mut self, policy: BackupPolicy) -> Self {
        self.backups = Some(policy);
        self
    }

    /// History retention (overrides the recorded one).
    pub fn history(mut self, policy: HistoryPolicy) -> Self {
        self.history = Some(policy);
        self
    }

    /// Refuse commits larger than `bytes` with [`Error::TooLarge`].
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Refuse commits that would leave less than `bytes` free on the filesystem,
    /// with [`Error::NoSpace`], before anything is written.
    pub fn min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = Some(bytes);
        self
    }

    /// What to do when the file is damaged (overrides the recorded policy).
    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = Some(policy);
        self
    }

    /// Explicit opt-in: when the file is damaged, quarantine it and start again from
    /// `default()` instead of a backup. Without this, damage never becomes defaults.
    pub fn on_corrupt_use_default(
        mut self,
        default: impl Fn() -> T + Send + Sync + 'static,
    ) -> Self {
        self.default_state = Some(Arc::new(default));
        self.recovery = Some(RecoveryPolicy::UseDefault);
        self
    }

    /// Called for every [`Event`] (recoveries, external changes), in the thread that
    /// noticed it. Events also go to `tracing` at warn level.
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }

    /// Opens the store for the state file at `path`. Nothing is created until the
    /// first write; symlinks are followed to the real file, which a write replaces
    /// while the link stays. Recorded settings are read now.
    ///
    /// # Errors
    /// [`Error::BadPath`] when `path` is a directory, or its directory does not exist;
    /// [`Error::BadSchema`] for an invalid schema; [`Error::Corrupt`] for unreadable
    /// recorded settings.
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
        let (target, links, dir, dir_readable) = open_resolved(path.as_ref())?;
        let lock = LockFile::new(&target);
        let settings = Settings::read(Sidecar::open(&target, &dir, None)?.as_ref())?;
        let config = Config::new_for(&target, &self, &settings)?;
        let mut store = Store::with_backend(
            Backend::Local(Local {
                target,
                lock,
                dir,
                dir_readable,
                swept: AtomicBool::new(false),
                janitor: Arc::default(),
            }),
            self,
            config,
        );
        store.links = links;
        Ok(store)
    }

    /// Opens the store for the state named in a PostgreSQL URL,
    /// `postgres://USER@HOST:PORT/DATABASE?state=NAME[&table=T][&schema=S]` (see
    /// `docs/remote.md`). Connects at once; creates the tables on first use.
    ///
    /// # Errors
    /// [`Error::BadPath`] for a URL that is not of that form; [`Error::Remote`] when
    /// the server cannot be reached or refuses; [`Error::Corrupt`] when the tables
    /// exist with another layout; [`Error::Unsupported`] in a build without the
    /// `postgres` feature.
    ///
    /// # Example
    /// ```no_run
    /// let store = statesafe::Store::<serde_json::Value>::options()
    ///     .open_url("postgres://bot@db.internal:5432/ops?state=grades")?;
    /// store.update(|s| s["n"] = 1.into())?;
    /// # Ok::<(), statesafe::Error>(())
    /// ```
    pub fn open_url(self, url: &str) -> Result<Store<T>> {
        let (remote, settings) = crate::postgres::Remote::open(url)?;
        let config = Config::new_at(remote.display(), &self, &settings)?;
        Ok(Store::with_backend(
            Backend::Postgres(Box::new(remote)),
            self,
            config,
        ))
    }
}

/// How many times [`open_resolved`] resolves a path again when a directory on it was
/// replaced by a link between the resolution and the open.
const RESOLVE_TRIES: usize = 8;

/// Resolves `path` ([`Target::resolve_with_links`], which judges every link on the
/// way) and opens the state file's directory without following any link
/// ([`sys::open_dir_nofollow`]), so that the directory opened is the one judged. A
/// link that appeared on the way since the resolution (a user who owns a directory on
/// the way swapped it for a link to another user's directory: red22 finding 1, where
/// root's update of a user's file wrote root's own) fails the open; the path is then
/// resolved again, and the link judged, up to [`RESOLVE_TRIES`] times: a path that
/// keeps changing under us is [`Error::Unsafe`].
fn open_resolved(path: &Path) -> Result<(Target, crate::paths::Links, OwnedFd, bool)> {
    let mut tries = 0;
    loop {
        let (target, links) = Target::resolve_with_links(path)?;
        match sys::open_dir_nofollow(&target.dir) {
            Ok((dir, readable)) => return Ok((target, links, dir, readable)),
            Err(e)
                if [rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR]
                    .iter()
                    .any(|errno| e.raw_os_error() == Some(errno.raw_os_error())) =>
            {
                tries += 1;
                if tries >= RESOLVE_TRIES {
                    return Err(Error::Unsafe {
                        path: target.given.clone(),
                        reason: format!(
                            "a directory on the way to `{}` was replaced by a symbolic link or a file each time it was opened ({RESOLVE_TRIES} times) after its links were checked: someone who may write a directory on the path is changing it under us, so nothing was read or written; keep the state in a directory only its users may write",
                            target.dir.display(),
                        ),
                        what: crate::error::Unsafety::Planted,
                    });
                }
            }
            Err(e) => return Err(Error::io(Op::Resolve, &target.dir, e)),
        }
    }
}

impl<T> Store<T> {
    fn with_backend(backend: Backend, opts: StoreOptions<T>, config: Config) -> Store<T> {
        Store {
            backend,
            opts,
            config: RwLock::new(Arc::new(config)),
            poisoned: AtomicBool::new(false),
            reported_external: AtomicU64::new(0),
            recorder: Arc::new(Recorder::default()),
            journal: Default::default(),
            settings_seen: parking_lot::Mutex::new(None),
            settings_checked: parking_lot::Mutex::new(None),
            links: Box::default(),
            _state: PhantomData,
        }
    }

    /// The local backend. Every public operation branches on the backend before it
    /// reaches local code, so a remote store never gets here.
    pub(crate) fn local(&self) -> &Local {
        match &self.backend {
            Backend::Local(local) => local,
            Backend::Postgres(_) => {
                unreachable!("invariant: a remote store's operations branch before local code")
            }
        }
    }

    /// The PostgreSQL backend, when this store is remote (never without the
    /// `postgres` feature, where its type has no values).
    pub(crate) fn remote(&self) -> Option<&crate::postgres::Remote> {
        match &self.backend {
            Backend::Postgres(r) => Some(r),
            Backend::Local(_) => None,
        }
    }
}

/// The effective configuration: options over recorded settings over defaults.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub settings: Settings,
    pub lock_timeout: Duration,
    pub format: Format,
    pub schema: Option<Schema>,
    pub backups: BackupPolicy,
    pub history: HistoryPolicy,
    pub max_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    pub recovery: RecoveryPolicy,
}

impl Config {
    pub(crate) fn new_for<T>(
        target: &Target,
        opts: &StoreOptions<T>,
        settings: &Settings,
    ) -> Result<Config> {
        Config::new_at(&target.given, opts, settings)
    }

    /// [`Config::new_for`] a store named `path` in messages.
    pub(crate) fn new_at<T>(
        path: &Path,
        opts: &StoreOptions<T>,
        settings: &Settings,
    ) -> Result<Config> {
        let schema = opts.schema.as_ref().or(settings.schema.as_ref());
        let format = crate::journal::effective_format(path, opts.format, settings.format)?;
        Ok(Config {
            settings: settings.clone(),
            lock_timeout: opts.lock_timeout.unwrap_or(
                settings
                    .lock_timeout_ms
                    .map_or(DEFAULT_LOCK_TIMEOUT, Duration::from_millis),
            ),
            format,
            schema: schema.map(|s| Schema::compile(path, s)).transpose()?,
            backups: opts.backups.unwrap_or(settings.backups),
            history: opts.history.unwrap_or(settings.history),
            max_bytes: opts.max_bytes.or(settings.max_bytes),
            min_free_bytes: opts.min_free_bytes.or(settings.min_free_bytes),
            recovery: opts.recovery.unwrap_or(match settings.recovery {
                // Only code can supply the default state.
                RecoveryPolicy::UseDefault => RecoveryPolicy::RestoreFromBackup,
                p => p,
            }),
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
/// durable replace, validation, backups, recovery and history. Cheap to share between
/// threads (`&Store` is enough).
///
/// `T` is the document type (any `Serialize + DeserializeOwned`); the default,
/// [`serde_json::Value`], is the untyped API.
pub struct Store<T = Value> {
    /// Where the state lives: a file (the local protocol) or a database row.
    backend: Backend,
    pub(crate) opts: StoreOptions<T>,
    config: RwLock<Arc<Config>>,
    pub(crate) poisoned: AtomicBool,
    reported_external: AtomicU64,
    pub(crate) recorder: Arc<Recorder>,
    /// Journal mode: the document as this store last read or wrote it (`journal/cache.rs`).
    pub(crate) journal: crate::journal::cache::Kept,
    /// Local files: the identity of the settings file whose settings this store
    /// applies, once settled (`Some(None)`: there was none), and the format they
    /// record: see [`Store::refresh_settings`].
    settings_seen: parking_lot::Mutex<Option<(Option<crate::journal::cache::Ident>, Format)>>,
    /// The lock hold ([`crate::lock::Guard::key`]) in which
    /// [`Store::refresh_settings`] last found the settings, and the format they
    /// recorded then: [`Store::recorded_format_in`].
    settings_checked: parking_lot::Mutex<Option<(u64, Format)>>,
    /// Local files: the symbolic links followed to the file (`paths::Links`).
    links: crate::paths::Links,
    _state: PhantomData<fn() -> T>,
}

/// The two places a state can live. Every public operation of [`Store`] that the
/// PostgreSQL backend implements branches here first (see `postgres/`); the rest of
/// this module, `transaction.rs` and `recover.rs` is the local file protocol alone.
enum Backend {
    Local(Local),
    Postgres(Box<crate::postgres::Remote>),
}

/// The local file backend's part of a store.
pub(crate) struct Local {
    pub(crate) target: Target,
    pub(crate) lock: LockFile,
    /// The state file's directory: every name in it is used relative to this.
    dir: OwnedFd,
    /// Whether `dir` was opened for reading (so it can be synced and listed); a
    /// directory we may only search gets an `O_PATH` descriptor, enough for reading.
    dir_readable: bool,
    swept: AtomicBool,
    /// Backup prunes handed to the janitor thread and not yet done.
    pub(crate) janitor: Arc<crate::janitor::Pending>,
}

impl<T> fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path())
            .field("options", &self.opts)
            .finish()
    }
}

impl<T> Drop for Store<T> {
    /// Waits for this store's backup prunes (see `janitor.rs`), so that what it leaves
    /// on disk is exactly what the retention policy keeps.
    fn drop(&mut self) {
        if let Backend::Local(local) = &self.backend {
            local.janitor.drain();
        }
    }
}

/// A verified version: the state, and what the transaction needs to know about it.
pub(crate) struct Verified<T> {
    pub state: T,
    /// The state as JSON, kept when the history needs a patch from it.
    pub value: Option<std::sync::Arc<Value>>,
    /// The generation in a sealed file's header.
    pub sealed_generation: Option<u64>,
}

impl<T> Store<T> {
    /// Options for opening a store, starting from the defaults.
    pub fn options() -> StoreOptions<T> {
        StoreOptions::default()
    }

    /// The path this store was opened with (for a remote store, its URL without
    /// any password).
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::Local(local) => &local.target.given,
            Backend::Postgres(remote) => remote.display(),
        }
    }

    /// The real path of the state file (symlinks resolved); a remote store's URL.
    pub fn real_path(&self) -> PathBuf {
        match &self.backend {
            Backend::Local(local) => local.target.real(),
            Backend::Postgres(remote) => remote.display().to_path_buf(),
        }
    }

    /// The sidecar directory (lock, settings, backups, history, quarantine); a
    /// remote store has none and gives its URL.
    pub fn sidecar_path(&self) -> PathBuf {
        match &self.backend {
            Backend::Local(local) => local.target.sidecar(),
            Backend::Postgres(remote) => remote.display().to_path_buf(),
        }
    }

    /// The lock file (inside the sidecar directory); a remote store (whose lock is
    /// the row's) gives its URL.
    pub fn lock_path(&self) -> &Path {
        match &self.backend {
            Backend::Local(local) => local.lock.path(),
            Backend::Postgres(remote) => remote.display(),
        }
    }

    /// Who holds the writers' lock right now, if anyone does.
    pub fn lock_holder(&self) -> Option<Holder> {
        match &self.backend {
            Backend::Local(local) => local.lock.read_holder(self.dir().ok()?),
            Backend::Postgres(remote) => remote.lock_holder(),
        }
    }

    /// The settings recorded with the file (as read when the store was opened, at its
    /// last commit, or as last saved through it).
    pub fn settings(&self) -> Settings {
        self.config().settings.clone()
    }

    /// Counters and latency summaries since the store was opened.
    pub fn stats(&self) -> Stats {
        self.recorder.snapshot()
    }

    /// The special filesystem the state file is on (`nfs`, `fuse`, ...), if any: on
    /// those, the guarantees depend on the server or the file system daemon.
    pub fn special_filesystem(&self) -> Option<&'static str> {
        if self.remote().is_some() {
            return None;
        }
        self.dir().ok().and_then(sys::special_filesystem)
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    pub(crate) fn set_config(&self, config: Config) {
        *self.config.write() = Arc::new(config);
    }

    /// With the writers' lock held (`guard`): applies the settings recorded now, so
    /// that settings another store saved since this one read them (a schema recorded
    /// by `statesafe settings FILE --schema S`) bind this store's next commit too.
    /// One `fstatat` while the settings file is the one last read and settled; read
    /// whole otherwise. A change between plain and sealed binds the next commit too
    /// (unless the store's options name a format); entering or leaving journal mode
    /// leaves the store's format as it was: the commit notices it from the format
    /// found here ([`Store::recorded_format_in`]: the settings are written only under
    /// the lock), and the read notices it too.
    pub(crate) fn refresh_settings(&self, guard: &crate::lock::Guard<'_>) -> Result<()> {
        let sidecar = guard.sidecar();
        let name = std::ffi::OsStr::new(crate::settings::SETTINGS_FILE);
        let ident = match rustix::fs::statat(
            sidecar.root().fd(),
            name,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Some(crate::journal::cache::Ident::of(&st)),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => {
                return Err(Error::io(
                    Op::Read,
                    sidecar.root().join(name),
                    std::io::Error::from(e),
                ));
            }
        };
        let local = self.local();
        let mut seen = self.settings_seen.lock();
        if let Some((i, format)) = *seen
            && i == ident
        {
            *self.settings_checked.lock() = Some((guard.key(), format));
            return Ok(());
        }
        *seen = None;
        *self.settings_checked.lock() = None;
        let now = std::time::SystemTime::now();
        let settings = Settings::read(Some(sidecar))?;
        let format = settings.format;
        let config = self.config();
        if settings != config.settings {
            let mut fresh = Config::new_for(&local.target, &self.opts, &settings)?;
            // Plain and sealed are layouts of the same file: the recorded one binds
            // this store's next commit as a schema does (unless its options name
            // one). Entering or leaving journal mode is not a layout: the commit and
            // the read notice it and refuse (open the store again).
            if (fresh.format == Format::Journal) != (config.format == Format::Journal) {
                fresh.format = config.format;
            }
            self.set_config(fresh);
        }
        if ident.is_none_or(|i| i.settled_at(now)) {
            *seen = Some((ident, format));
        }
        *self.settings_checked.lock() = Some((guard.key(), format));
        Ok(())
    }

    /// The format the settings record, as [`Store::refresh_settings`] found it in the
    /// lock hold `guard` (`None`: it did not check them in this hold, or this store
    /// wrote settings since). The settings are written only with the writers' lock
    /// held, so in one hold they stay as found at its start (docs/design.md,
    /// "Journal mode").
    pub(crate) fn recorded_format_in(&self, guard: &crate::lock::Guard<'_>) -> Option<Format> {
        match *self.settings_checked.lock() {
            Some((key, format)) if key == guard.key() => Some(format),
            _ => None,
        }
    }

    /// Forgets what [`Store::refresh_settings`] found: called before this store
    /// writes the settings.
    pub(crate) fn settings_written(&self) {
        *self.settings_checked.lock() = None;
        *self.settings_seen.lock() = None;
    }

    pub(crate) fn dir(&self) -> Result<&OwnedFd> {
        Ok(&self.local().dir)
    }

    /// The directory, for a writer: it must be readable, to be synced after a rename.
    pub(crate) fn write_dir(&self) -> Result<&OwnedFd> {
        let local = self.local();
        if local.dir_readable {
            return Ok(&local.dir);
        }
        Err(Error::io(
            Op::SyncDir,
            self.path(),
            std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error()),
        ))
    }

    /// The sidecar as it is now, opened and checked (`None`: there is none yet). For
    /// reads that take no lock; writers use the one their lock is in.
    pub(crate) fn sidecar(&self) -> Result<Option<Sidecar>> {
        Sidecar::open(&self.local().target, self.dir()?, None)
    }

    pub(crate) fn read_current(&self) -> Result<Option<Current>> {
        read_current(self, false)
    }

    /// [`Self::read_current`] for a load or a transaction, which in journal mode may
    /// serve the document this store keeps (`journal/cache.rs`): then the `Current`
    /// has no bytes, and [`Store::verify`] takes the document from its journal part.
    pub(crate) fn read_current_cached(&self, want_acl: bool) -> Result<Option<Current>> {
        if self.config().format == Format::Journal {
            return crate::journal::cache::read_current(self, want_acl, None);
        }
        read_current(self, want_acl)
    }

    /// [`Self::read_current`] for a writer holding the lock: also the file's access
    /// ACL, which the next version keeps.
    pub(crate) fn read_current_for_write(&self) -> Result<Option<Current>> {
        read_current(self, true)
    }

    pub(crate) fn emit(&self, event: Event) {
        self.recorder.event(&event);
        if let Some(hook) = &self.opts.on_event {
            hook(&event);
        }
    }

    /// Reports an accepted external change (or the adoption of a file statesafe never
    /// wrote) once per generation per store.
    pub(crate) fn note_external(&self, generation: u64, how: Outside) {
        if self.reported_external.swap(generation, Ordering::AcqRel) != generation {
            let path = self.path().to_path_buf();
            self.emit(match how {
                Outside::Adopted => Event::Adopted { path, generation },
                Outside::Changed => Event::ExternalChange { path, generation },
            });
        }
    }

    /// Refuses every later write of this store: an `fsync` failed, so the kernel may
    /// have dropped what it could not write, and a second `fsync` could succeed with
    /// it gone.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Whether this store's first write has swept the directory for old temp files.
    pub(crate) fn take_first_sweep(&self) -> bool {
        !self.local().swept.swap(true, Ordering::AcqRel)
    }
}

/// How a version not written by statesafe came to be: see [`Store::note_external`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outside {
    /// statesafe committed this file before; another program changed it since.
    Changed,
    /// statesafe's first contact with a file it never wrote.
    Adopted,
}

impl Outside {
    pub(crate) fn of(adopted: bool) -> Outside {
        if adopted {
            Outside::Adopted
        } else {
            Outside::Changed
        }
    }
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// Opens the store at `path` with default options (and the recorded settings).
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
    /// Damage means bytes that cannot be what statesafe committed: unparseable or
    /// truncated, a seal that does not verify, an older sealed version put back, an
    /// external change that fails the recorded schema. Then the recovery policy
    /// applies: by default, if the writers' lock is free at once, the damaged file is
    /// quarantined and the newest version that can be proven (a backup, plus the
    /// history's patches after it) is restored, with an [`Event::Recovered`]. If the
    /// lock is held, the read does not wait: it returns that newest proven version
    /// without writing anything, with an [`Event::DamageNotRepaired`]; the next writer
    /// (or [`Store::recover`]) repairs the file.
    ///
    /// A sound version that this reader's type, rule or schema refuses is not damage:
    /// that is [`Error::Mismatch`], and nothing is changed.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the file does not exist; [`Error::Deleted`] when it
    /// does not but its sidecar shows committed generations; [`Error::Mismatch`];
    /// [`Error::Corrupt`] or [`Error::Invalid`] when it is damaged and the policy is
    /// `fail`, or when statesafe never wrote the file (it is left as it is);
    /// [`Error::Unrecoverable`] when nothing verifies. A damaged file is never
    /// confused with a missing one, and never silently replaced by defaults.
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
        if let Some(remote) = self.remote() {
            return remote.load(self);
        }
        // A file found missing, then evidence of commits, then the file back, is read
        // again (see `missing_on_load`); a file that keeps vanishing that way fails.
        let mut attempt = 0;
        let cur = loop {
            #[cfg(test)]
            run_load_hook();
            if let Some(cur) = self.read_current_cached(false)? {
                break cur;
            }
            if let Some(refused) = self.missing_on_load() {
                return Err(refused);
            }
            attempt += 1;
            if attempt == LOAD_ATTEMPTS {
                return Err(Error::Io {
                    path: self.path().to_path_buf(),
                    op: Op::Read,
                    source: std::io::Error::other(crate::error::KeptVanishing(attempt)),
                });
            }
        };
        if cur.journal.as_ref().is_some_and(|j| j.damage.is_some()) {
            return self.journal_repair_on_load(cur);
        }
        match self.verify(&cur, false) {
            Ok(v) => {
                if cur.external {
                    self.note_external(cur.generation, Outside::of(cur.adopted));
                }
                Ok(Snapshot {
                    state: v.state,
                    generation: cur.generation,
                })
            }
            Err(damage) if is_damage(&damage) => self.recover_on_load(&cur, damage),
            Err(e) => Err(e),
        }
    }

    /// A load found no state file: what it fails with, [`Error::Deleted`] when the
    /// sidecar shows committed generations, else [`Error::NotFound`]; `None` when the
    /// file is there again. A first commit by another writer between the read and the
    /// look at the sidecar leaves evidence and the file: then the load is done again
    /// (the evidence is written after the rename, so a file still missing once it is
    /// seen was deleted), up to [`LOAD_ATTEMPTS`] times.
    fn missing_on_load(&self) -> Option<Error> {
        let sidecar = match self.sidecar() {
            Ok(sidecar) => sidecar,
            Err(e) => return Some(e),
        };
        let refused = self.refuse_deleted(sidecar.as_ref());
        #[cfg(test)]
        run_load_hook();
        match refused {
            Err(e @ (Error::Deleted { .. } | Error::BadPath { .. })) => {
                let back = self
                    .dir()
                    .and_then(|dir| write::open_current(&self.local().target, dir));
                match back {
                    Ok(Some(_)) => None,
                    Ok(None) => Some(e),
                    Err(io) => Some(io),
                }
            }
            Err(e) => Some(e),
            Ok(()) => Some(Error::NotFound {
                path: self.path().to_path_buf(),
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

    /// [`Store::load`], or `T::default()` at generation 0 when the file does not
    /// exist. Never used for a damaged file, nor for a deleted one
    /// ([`Error::Deleted`]: its sidecar shows committed generations).
    ///
    /// # Errors
    /// As [`Store::load`], without [`Error::NotFound`].
    pub fn load_or_default(&self) -> Result<Snapshot<T>>
    where
        T: Default,
    {
        match self.load() {
            Err(Error::NotFound { .. }) => Ok(Snapshot {
                state: T::default(),
                generation: 0,
            }),
            other => other,
        }
    }

    /// The current generation without parsing the document (0 when missing).
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn generation(&self) -> Result<u64> {
        if let Some(remote) = self.remote() {
            return remote.generation(self);
        }
        Ok(self.read_current_cached(false)?.map_or(0, |c| c.generation))
    }

    /// Decodes and validates the current version. Damage ([`Error::Corrupt`], or
    /// [`Error::Invalid`] for an external change that fails the recorded schema) is
    /// told apart from a sound version this reader cannot take ([`Error::Mismatch`]).
    /// A sealed version older than the newest generation known is damage: an old
    /// copy put back in place of a newer one.
    pub(crate) fn verify(&self, cur: &Current, want_value: bool) -> Result<Verified<T>> {
        if let Some(doc) = cur.journal.as_ref().and_then(|j| j.doc.as_ref()) {
            return self.verify_cached(doc, cur.generation, want_value);
        }
        let v = self.verify_bytes(&cur.bytes, cur.generation, !cur.external, want_value)?;
        if let Some(sealed) = v.sealed_generation {
            let known =
                write::highest_known_generation(self.sidecar()?.as_ref(), &self.local().lock)?;
            if sealed < known {
                return Err(Error::Corrupt {
                    path: self.path().to_path_buf(),
                    line: None,
                    column: None,
                    reason: format!(
                        "it is an older sealed version (generation {sealed}) put back in place of generation {known}: a sealed file never goes back"
                    ),
                });
            }
        }
        Ok(v)
    }

    /// Decodes and validates `bytes` (generation `generation`, for messages);
    /// `committed_by_us` says the metadata record vouches for them, so whatever this
    /// reader makes of them they are not damage (and a plain file is acceptable even
    /// where sealed is configured).
    ///
    /// Damage is decided by the bytes alone: unparseable, a seal that does not
    /// verify, a plain file where only sealed ones are written. The reader's type and
    /// rule, and a schema given to this store only, never make a version damaged. The
    /// schema recorded in the settings binds every writer: an external change that
    /// fails it is damage; a committed version that fails it is not.
    pub(crate) fn verify_bytes(
        &self,
        bytes: &[u8],
        generation: u64,
        committed_by_us: bool,
        want_value: bool,
    ) -> Result<Verified<T>> {
        let config = self.config();
        let path = &self.path().to_path_buf();
        let mismatch = |reason: String| Error::Mismatch {
            path: path.clone(),
            generation,
            committed: committed_by_us,
            reason,
        };
        // Where only sealed files are written, bytes not vouched for that begin as one
        // are read as one, so that a damaged header is named; elsewhere only an
        // envelope's exact shape is sealed (a plain document may have a `statesafe`
        // member of its own).
        let sealed = format::looks_sealed(bytes)
            || config.format == Format::Sealed && !committed_by_us && format::starts_sealed(bytes);
        if !sealed && config.format == Format::Sealed && !committed_by_us {
            return Err(Error::Corrupt {
                path: path.clone(),
                line: None,
                column: None,
                reason: "the file should be sealed but has no statesafe envelope: it was replaced outside statesafe".into(),
            });
        }
        let decoded = if sealed {
            format::decode_sealed(path, bytes).map(|(s, h)| (s, Some(h.generation)))
        } else {
            format::decode(path, bytes).map(|s| (s, None))
        };
        let (state, sealed_generation): (T, _) = match decoded {
            Ok(d) => d,
            Err(Error::Corrupt { reason, .. }) if self.sound(bytes, sealed, committed_by_us) => {
                return Err(mismatch(format!("this reader's type refuses it: {reason}")));
            }
            Err(e) => return Err(e),
        };
        if !committed_by_us {
            // A file statesafe did not write may repeat a key, which no committed
            // version does (and which would lose one of the values silently).
            format::check_unique_keys(path, bytes)?;
        }
        let wants = want_value
            && (config.format == Format::Journal
                || config.history.keep > 0 && bytes.len() as u64 <= config.history.max_patch_bytes);
        self.verify_state(state, sealed_generation, generation, committed_by_us, wants)
    }

    /// The checks of [`Store::verify_bytes`] after decoding: this reader's rule, the
    /// schemas, and the document as JSON when `want_value`.
    pub(crate) fn verify_state(
        &self,
        state: T,
        sealed_generation: Option<u64>,
        generation: u64,
        committed_by_us: bool,
        want_value: bool,
    ) -> Result<Verified<T>> {
        let config = self.config();
        let path = &self.path().to_path_buf();
        let mismatch = |reason: String| Error::Mismatch {
            path: path.clone(),
            generation,
            committed: committed_by_us,
            reason,
        };
        if let Some(rule) = self.opts.rule.as_ref()
            && let Err(Error::Invalid { message, .. }) =
                validate::check(path, &state, Some(rule), None)
        {
            return Err(mismatch(format!(
                "this reader's rule refuses it: {message}"
            )));
        }
        if let Some(schema) = config.schema.as_ref() {
            match validate::check(path, &state, None, Some(schema)) {
                Ok(()) => {}
                Err(e) if self.opts.schema.is_none() && !committed_by_us => return Err(e),
                Err(Error::Invalid { message, .. }) => {
                    let whose = if self.opts.schema.is_some() {
                        "this reader's schema"
                    } else {
                        "the recorded schema (changed since it was committed)"
                    };
                    return Err(mismatch(format!("{whose} refuses it: {message}")));
                }
                Err(e) => return Err(e),
            }
        }
        // Journal mode diffs every commit against the version it replaces.
        let value = if want_value {
            serde_json::to_value(&state).ok().map(std::sync::Arc::new)
        } else {
            None
        };
        Ok(Verified {
            state,
            value,
            sealed_generation,
        })
    }

    /// Whether `bytes`, which this reader's type refused, are nevertheless a sound
    /// version: committed by statesafe, or JSON (with a seal that verifies, if sealed).
    fn sound(&self, bytes: &[u8], sealed: bool, committed_by_us: bool) -> bool {
        use serde::de::IgnoredAny;
        let path = &self.path().to_path_buf();
        if sealed {
            committed_by_us || format::decode_sealed::<IgnoredAny>(path, bytes).is_ok()
        } else {
            committed_by_us || format::decode::<IgnoredAny>(path, bytes).is_ok()
        }
    }
}

/// Whether an error from [`Store::verify`] means the file is damaged (as opposed to
/// an I/O failure while reading it).
pub(crate) fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::Invalid { .. })
}

/// The current version of a local store's file (`want_acl`: with its access ACL, for a
/// writer holding the lock): in journal mode the snapshot with the journal replayed.
fn read_current<T>(store: &Store<T>, want_acl: bool) -> Result<Option<Current>> {
    if store.config().format == Format::Journal {
        return crate::journal::read_current(store, want_acl);
    }
    let local = store.local();
    let cur = write::read_current(&local.target, store.dir()?, &local.lock, want_acl)?;
    if let Some(cur) = &cur {
        store.refuse_lost_journal(cur, false)?;
    }
    Ok(cur)
}

impl<T> Store<T> {
    /// Refuses a missing state file whose `sidecar` shows committed generations (its
    /// metadata record, a backup, the history, the lock record: anything
    /// [`write::highest_known_generation`] counts) with [`Error::Deleted`]: it was
    /// deleted, and serving a default or committing a new document in its place would
    /// silently replace the state ("A deleted state file" in `docs/design.md`). A
    /// state that never had a commit passes.
    pub(crate) fn refuse_deleted(&self, sidecar: Option<&Sidecar>) -> Result<()> {
        let local = self.local();
        // In journal mode the commits after the snapshot are the journal's records.
        let journal = if self.config().format == Format::Journal {
            crate::journal::View::read(self, sidecar, false)?.map_or(0, |v| v.newest_generation())
        } else {
            0
        };
        let known = write::highest_known_generation(sidecar, &local.lock)?.max(journal);
        if known == 0 {
            return self.refuse_replaced_by_link();
        }
        // Both named as the user named the file (fix21rs: a relative file's hint
        // named its sidecar by an absolute path).
        let (absolute, named) = (local.target.sidecar(), local.target.sidecar_as_given());
        let newest_backup = crate::backup::list(sidecar)?.backups.first().map(|b| {
            match b.path.strip_prefix(&absolute) {
                Ok(inside) => named.join(inside),
                Err(_) => b.path.clone(),
            }
        });
        Err(Error::Deleted {
            path: self.path().to_path_buf(),
            generation: known,
            newest_backup,
            sidecar: named,
        })
    }

    /// [`Store::refuse_deleted`] for a path that is a symbolic link to a missing file:
    /// refused ([`Error::BadPath`]) when the sidecar beside a link followed (the one a
    /// state file at the link's name had) shows committed generations. The state file
    /// was replaced by the link (`ln -sf`, a dotfile manager, a sync tool), and
    /// serving a default, or starting a new state at the link's target, would take
    /// its place unseen: the target's own sidecar knows nothing of it (review20,
    /// finding 10). A link to an existing file is followed as ever.
    fn refuse_replaced_by_link(&self) -> Result<()> {
        let target = &self.local().target;
        for link in &self.links {
            let Ok((dir, _)) = sys::open_dir_nofollow(&link.dir) else {
                continue;
            };
            // A sidecar refused as foreign (another user's, in a shared directory)
            // is no evidence of a state of the caller's.
            let Some(sidecar) = Sidecar::open(link, &dir, None).ok().flatten() else {
                continue;
            };
            let known = write::highest_known_generation(Some(&sidecar), &LockFile::new(link))?;
            if known == 0 {
                continue;
            }
            return Err(Error::BadPath {
                path: target.given.clone(),
                reason: format!(
                    "`{link}` is a symbolic link to `{real}`, which does not exist, while the sidecar `{side}` beside the link shows a state committed at that name up to generation {known}: the state file was replaced by the link, and serving a default (or starting a new state at the link's target) would take its place, so nothing was read or written; remove the link and run `statesafe recover {command}` to put the state back, point the link at the state's file, or remove that sidecar directory to discard the old state",
                    link = link.given.display(),
                    command = crate::error::command_word(&link.given),
                    real = target.real().display(),
                    side = link.sidecar().display(),
                ),
            });
        }
        Ok(())
    }

    /// Refuses to serve, or commit on, a journal-mode snapshot (its own metadata record
    /// says a journal follows it, `write::Current::journal_follows`) that is read
    /// without its journal: outside journal mode (`in_journal_mode` false), or in it
    /// with no journal to replay. Only a call that may refuse reads the settings.
    ///
    /// When the file's settings (in the sidecar) still say `journal`, it is not lost:
    /// a journal-mode reader goes on (the journal was never started, or a start failed:
    /// the next commit compacts), and a store opened in another format before the file
    /// entered journal mode is told to open again. Otherwise (leaving journal mode
    /// clears the record first, `Store::save_settings`) the sidecar was deleted with
    /// its settings and journal, by a cleanup script: the commits after this snapshot
    /// are gone, and serving it would silently roll the state back to it. See "A
    /// deleted sidecar" in `docs/design.md`. With the settings kept and the journal
    /// gone, [`Store::refuse_deleted_journal`] (called by `journal::read_current`)
    /// tells a deleted journal from one that never held a record.
    pub(crate) fn refuse_lost_journal(&self, cur: &Current, in_journal_mode: bool) -> Result<()> {
        if !cur.journal_follows {
            return Ok(());
        }
        let path = self.path();
        let sidecar = self.sidecar()?;
        if Settings::read(sidecar.as_ref())?.format == Format::Journal {
            if in_journal_mode {
                return Ok(());
            }
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                what: "a read or commit that ignores the journal".into(),
                why: "the file entered journal mode after this store was opened, so its newest commits are in the journal; nothing was read or written: open the store again".into(),
            });
        }
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!(
                "{LOST_JOURNAL} {g}, but its sidecar `.{name}.statesafe` (with the file's settings and journal) was deleted: every commit made after generation {g} was in that journal and is lost, and serving this snapshot would roll the state back to it, so nothing was read or written; restore the sidecar directory from a backup, or accept this snapshot as the current state with `statesafe recover {path} --accept-snapshot` (or by removing its metadata attribute, `setfattr -x user.statesafe {path}`: it is then adopted like a file statesafe never wrote; either way its generations start again after {g}, since the record of the lost ones went with the sidecar)",
                g = cur.generation,
                path = crate::error::command_word(path),
            ),
        })
    }

    /// In journal mode, a noted snapshot (of `generation`, with `checksum`) with the
    /// settings still saying `journal` and no journal following it (none, or an
    /// earlier generation's): a compaction whose new journal failed to start, or a
    /// journal that held no record, leaves exactly that (the next commit compacts);
    /// so does a cleanup that deleted the journal alone (or put an older copy in its
    /// place), taking every commit after the snapshot. The lock file tells them apart:
    /// a writer publishes each flush of a record there, naming the journal's header,
    /// which names this snapshot's generation and checksum (`journal/durable.rs`). A published end past the header
    /// proves that a journal following this very snapshot held acknowledged records:
    /// refused, as a deleted sidecar is. (A reader who may not read the lock file, a
    /// `Durability::None` writer's records, and a lock file deleted too leave nothing
    /// to tell: "A deleted sidecar" in `docs/design.md`.)
    pub(crate) fn refuse_deleted_journal(
        &self,
        generation: u64,
        checksum: u64,
        sidecar: Option<&Sidecar>,
    ) -> Result<()> {
        let Some(sidecar) = sidecar else {
            return Ok(());
        };
        let header = crate::journal::Header::new(generation, checksum).checksum();
        let end = match self.local().lock.published_journal_end(sidecar, header)? {
            Some(end) if end > crate::journal::HEADER_LEN as u64 => end,
            _ => return Ok(()),
        };
        let path = self.path();
        let journal = self.local().target.sidecar().join(crate::journal::JOURNAL);
        Err(Error::Corrupt {
            path: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!(
                "{LOST_JOURNAL} {g}, but its journal `{journal}` was deleted (or an older copy put in its place; the sidecar's lock file shows that a journal following this snapshot held records flushed up to byte {end}): every commit made after generation {g} was in that journal and is lost, and serving this snapshot would roll the state back to it, so nothing was read or written; restore the journal from a backup of the sidecar directory, or accept this snapshot as the current state with `statesafe recover {path} --accept-snapshot` (its generations then continue past the lost ones)",
                g = generation,
                journal = journal.display(),
                path = crate::error::command_word(path),
            ),
        })
    }

    /// The journal that follows the snapshot of `generation` ends at byte `end`, but
    /// the lock file published it flushed up to `published` (read before the journal):
    /// an older copy of the very journal was put back (a backup tool, a sidecar restored
    /// from yesterday), or it was cut short, taking the acknowledged commits past `end`.
    /// Refused as a deleted journal is ("A deleted sidecar" in `docs/design.md`).
    pub(crate) fn refuse_cut_journal(&self, generation: u64, end: u64, published: u64) -> Error {
        let path = self.path();
        let journal = self.local().target.sidecar().join(crate::journal::JOURNAL);
        Error::Corrupt {
            path: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!(
                "{LOST_JOURNAL} {generation}, but its journal `{journal}` holds records only up to byte {end} while the sidecar's lock file shows them flushed up to byte {published}: an older copy of the journal was put in its place (a backup restored, a sync tool going back) or it was cut short, and every commit it held past byte {end} is lost; serving it would roll the state back, so nothing was read or written; restore the newest journal from a backup of the sidecar directory, or accept the snapshot of generation {generation} as the current state with `statesafe recover {path} --accept-snapshot` (the journal left in place is quarantined, and generations continue past the lost ones)",
                journal = journal.display(),
                path = crate::error::command_word(path),
            ),
        }
    }
}

/// How many times a load reads a file found missing and then there again
/// (`Store::load`): a first commit racing a load makes one more read; only a file
/// that something keeps deleting and creating again needs more.
const LOAD_ATTEMPTS: u32 = 8;

#[cfg(test)]
thread_local! {
    /// Runs on this thread before a load reads the file and after a load that found
    /// it missing looked at the sidecar (tests only): a file deleted and created
    /// again at those instants, over and over.
    static LOAD_HOOK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn run_load_hook() {
    let hook = LOAD_HOOK.with(|h| h.borrow_mut().take());
    if let Some(mut hook) = hook {
        hook();
        LOAD_HOOK.with(|h| *h.borrow_mut() = Some(hook));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fix21rs (2): a load that finds the file missing, then evidence of commits,
    /// then the file back, loads again; a file that another program keeps deleting
    /// and creating again at exactly those instants made that an unbounded
    /// recursion. It is a bounded loop that fails naming the file, what was done,
    /// why and what to do.
    #[test]
    fn a_file_that_keeps_vanishing_under_a_load_fails_after_a_few_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store: Store = Store::open(&path).unwrap();
        store.create(serde_json::json!({"n": 1})).unwrap();
        store.replace(serde_json::json!({"n": 2})).unwrap();
        let flips = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let (p, f) = (path.clone(), std::rc::Rc::clone(&flips));
        // Deletes the file before each read and puts it back after each look at the
        // sidecar, 400 times (then leaves it there), so an unbounded retry ends too.
        LOAD_HOOK.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                if f.get() >= 400 {
                    return;
                }
                f.set(f.get() + 1);
                if p.exists() {
                    std::fs::remove_file(&p).unwrap();
                } else {
                    std::fs::write(&p, b"{\"n\": 2}\n").unwrap();
                }
            }));
        });
        let result = store.load();
        LOAD_HOOK.with(|h| h.borrow_mut().take());
        let e = result.expect_err("a load of a file that kept vanishing succeeded");
        assert!(flips.get() < 400, "{} flips before {e}", flips.get());
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("read"),
            "{text}"
        );
        let cause = crate::error::chain_text(&e);
        assert!(cause.contains("deleted and created again"), "{cause}");
        let hint = e.hint().unwrap_or_default();
        assert!(hint.contains("stop"), "{hint}");
    }
}
