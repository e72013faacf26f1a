//! The one error type of the library.
//!
//! Every variant names the file it concerns; I/O variants also name the operation and
//! carry the OS error as their `source`, so a message reads like
//! ``failed to rename `a` to `b` `` with the cause one level down, never repeated.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lock::Holder;

/// The operation that failed, for error messages and for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Reading the state file.
    Read,
    /// Creating the temporary file beside the state file.
    CreateTemp,
    /// Writing the new contents into the temporary file.
    Write,
    /// Copying permissions or ownership onto the temporary file.
    SetPermissions,
    /// Recording the generation and checksum (extended attribute or sidecar).
    WriteMeta,
    /// Flushing the temporary file to stable storage.
    SyncFile,
    /// Renaming the temporary file over the state file.
    Rename,
    /// Flushing the directory so the rename survives power loss.
    SyncDir,
    /// Opening or creating the lock file.
    OpenLock,
    /// Taking or releasing the lock.
    Lock,
    /// Creating the sidecar directory.
    CreateSidecar,
    /// Resolving the path (symlinks, parent directory).
    Resolve,
    /// Removing a temporary file.
    RemoveTemp,
    /// Keeping or pruning a backup.
    Backup,
    /// Moving a damaged file into quarantine.
    Quarantine,
    /// Appending to or reading the history.
    History,
    /// Reading or writing the settings.
    Settings,
    /// Giving the new version the group of the one it replaces (an ordinary user
    /// can only give a file a group they belong to).
    KeepGroup,
    /// Opening the sidecar directory.
    OpenSidecar,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::CreateTemp => "create temporary file for",
            Op::Write => "write temporary file for",
            Op::SetPermissions => "copy permissions onto temporary file for",
            Op::WriteMeta => "record generation for",
            Op::SyncFile => "fsync temporary file for",
            Op::Rename => "rename temporary file over",
            Op::SyncDir => "fsync directory of",
            Op::OpenLock => "open lock file",
            Op::Lock => "lock",
            Op::CreateSidecar => "create sidecar directory",
            Op::Resolve => "resolve path",
            Op::RemoveTemp => "remove temporary file",
            Op::Backup => "keep backup",
            Op::Quarantine => "quarantine damaged file",
            Op::History => "record history in",
            Op::Settings => "write settings",
            Op::KeepGroup => "keep the group of",
            Op::OpenSidecar => "open sidecar directory",
        })
    }
}

/// Everything that can go wrong with a state file.
///
/// Variants a caller can act on are their own; everything else is [`Error::Io`].
/// On every error raised before the rename, the state file is byte-for-byte unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state file does not exist.
    #[error("state file `{}` does not exist", path.display())]
    NotFound {
        /// The state file.
        path: PathBuf,
    },

    /// The state file does not exist, but its sidecar shows that statesafe committed
    /// generations of it (backups, history, the metadata or lock record): it was
    /// deleted (a careless `rm`, a cleanup script, a sync tool), not never created.
    /// Served as missing, a default would silently take the place of the state and the
    /// next commit would build on it; so every read and every transaction that would
    /// start from nothing refuses it, and nothing is written. [`crate::Store::recover`]
    /// puts the newest version it can prove back; [`crate::Store::replace`] (or
    /// removing the sidecar directory) starts over on purpose.
    #[error(
        "state file `{}` was deleted: its sidecar shows it was committed up to generation {generation}{}; refusing to serve a default or start a new state in its place",
        path.display(),
        newest_backup_suffix(newest_backup.as_deref())
    )]
    Deleted {
        /// The state file.
        path: PathBuf,
        /// The last generation its sidecar knows.
        generation: u64,
        /// The newest backup kept, if any (named as `sidecar` is).
        newest_backup: Option<PathBuf>,
        /// The sidecar directory that shows it, named as the user named the file
        /// (beside the path given, relative when it is; absolute when a symbolic
        /// link led to another directory).
        sidecar: PathBuf,
    },

    /// The state file exists but its contents are not a valid document.
    #[error("state file `{}` {}{}: {reason}", path.display(), corrupt_what(reason), location(*line, *column))]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// 1-based column of the problem, when known.
        column: Option<usize>,
        /// What was expected and what was found.
        reason: String,
    },

    /// Another writer held the lock for longer than the lock timeout.
    #[error(
        "timed out after {} waiting for the lock on `{}`{}",
        humantime::format_duration(Duration::from_millis(waited.as_millis() as u64)),
        path.display(),
        holder_suffix(holder.as_deref())
    )]
    LockTimeout {
        /// The state file.
        path: PathBuf,
        /// How long this call waited.
        waited: Duration,
        /// Who holds the lock, as the holder recorded it (if it could be read).
        holder: Option<Box<Holder>>,
    },

    /// A compare-and-swap write found another generation than the one expected.
    #[error(
        "state file `{}` changed: expected generation {expected}, found {found}",
        path.display()
    )]
    GenerationConflict {
        /// The state file.
        path: PathBuf,
        /// The generation the caller based its change on.
        expected: u64,
        /// The generation on disk.
        found: u64,
    },

    /// A new state was refused by a validation rule; nothing was written.
    #[error("new state for `{}` is invalid: {message}", path.display())]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// The rule that failed and where.
        message: String,
    },

    /// A sound version that this reader cannot take: one statesafe committed (its bytes
    /// match the recorded checksum), or a valid JSON document changed outside
    /// statesafe, refused by this reader's type, rule or schema. It is not damage:
    /// nothing was quarantined, restored or rewritten.
    #[error(
        "generation {generation} of `{}` ({}) does not fit this reader: {reason}",
        path.display(),
        if *committed { "committed by statesafe; its checksum verifies" } else { "changed outside statesafe; valid JSON" }
    )]
    Mismatch {
        /// The state file.
        path: PathBuf,
        /// The generation on disk.
        generation: u64,
        /// Whether statesafe committed it (else it was changed outside statesafe).
        committed: bool,
        /// What this reader expected and what it found.
        reason: String,
    },

    /// The new state could not be serialized; nothing was written.
    #[error("could not serialize the new state for `{}`", path.display())]
    Serialize {
        /// The state file.
        path: PathBuf,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// The transaction closure returned an error; nothing was written.
    #[error("update of `{}` aborted by the caller", path.display())]
    Aborted {
        /// The state file.
        path: PathBuf,
        /// The closure's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The filesystem is full or the quota is exhausted.
    #[error("no space left to {op} `{}`", path.display())]
    NoSpace {
        /// The file the operation was on.
        path: PathBuf,
        /// What was being done.
        op: Op,
        /// The OS error (ENOSPC or EDQUOT).
        #[source]
        source: io::Error,
    },

    /// The OS refused access.
    #[error("permission denied to {op} `{}`", path.display())]
    PermissionDenied {
        /// The file the operation was on.
        path: PathBuf,
        /// What was being done.
        op: Op,
        /// The OS error (EACCES or EPERM).
        #[source]
        source: io::Error,
    },

    /// The filesystem is mounted read-only.
    #[error("read-only filesystem: cannot {op} `{}`", path.display())]
    ReadOnly {
        /// The file the operation was on.
        path: PathBuf,
        /// What was being done.
        op: Op,
        /// The OS error (EROFS).
        #[source]
        source: io::Error,
    },

    /// The new state was renamed into place, but the directory could not be flushed:
    /// it is visible now and may or may not survive a power loss. For a remote store:
    /// the connection was lost while the server ran the `COMMIT`, so the new version
    /// may or may not have been committed (read the state to see which generation won).
    #[error("outcome unknown for `{}`: {}", path.display(), outcome_unknown_reason(source))]
    OutcomeUnknown {
        /// The state file.
        path: PathBuf,
        /// The generation that was written.
        generation: u64,
        /// The OS error from the directory fsync.
        #[source]
        source: io::Error,
    },

    /// An earlier fsync on this store failed; it refuses writes until reopened.
    #[error(
        "store for `{}` refuses writes after an earlier fsync failure; reopen it once the cause is fixed",
        path.display()
    )]
    Poisoned {
        /// The state file.
        path: PathBuf,
    },

    /// A path that cannot hold a state file (a directory, a name without a parent).
    #[error("`{}` cannot be used as a state file: {reason}", path.display())]
    BadPath {
        /// The path given.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// The new document is larger than the configured `max_bytes`; nothing was written.
    #[error("new state for `{}` is {size} bytes, over the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The state file.
        path: PathBuf,
        /// Size of the refused document.
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The document nests arrays and objects deeper than [`crate::json::MAX_DEPTH`]:
    /// refused on write, and on read of a file statesafe did not write (the same
    /// limit, so a read never refuses a committed version). Not damage: nothing is
    /// quarantined.
    #[error(
        "the document in `{}` is nested {depth} levels deep, over statesafe's limit of {limit}",
        path.display()
    )]
    TooDeep {
        /// The state file.
        path: PathBuf,
        /// How deep the document is.
        depth: usize,
        /// The limit.
        limit: usize,
    },

    /// The state file is damaged and no valid backup could replace it; or it was
    /// deleted ([`Error::Deleted`] as the damage) and nothing its sidecar keeps proves
    /// a version to put back.
    #[error(
        "state file `{}` {}{}",
        path.display(),
        unrecoverable_what(damage),
        tried_suffix(tried)
    )]
    Unrecoverable {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it ([`Error::Corrupt`] or [`Error::Invalid`];
        /// [`Error::Deleted`] for a deleted file).
        #[source]
        damage: Box<Error>,
        /// Where the damaged file was kept, if it could be.
        quarantined: Option<PathBuf>,
        /// Every backup tried, with why it was refused.
        tried: Vec<(PathBuf, String)>,
    },

    /// A JSON Schema given for validation is not itself a valid schema.
    #[error("the schema for `{}` is not a valid JSON Schema: {message}", path.display())]
    BadSchema {
        /// The state file.
        path: PathBuf,
        /// What is wrong with the schema.
        message: String,
    },

    /// A past generation that neither a backup nor the history can produce.
    #[error("generation {generation} of `{}` is not available: {reason}", path.display())]
    GenerationUnavailable {
        /// The state file.
        path: PathBuf,
        /// The generation asked for.
        generation: u64,
        /// Why it cannot be rebuilt.
        reason: String,
    },

    /// The file already exists (from [`crate::Store::create`]).
    #[error("state file `{}` already exists", path.display())]
    AlreadyExists {
        /// The state file.
        path: PathBuf,
    },

    /// Something beside the state file that statesafe must not trust: a sidecar or
    /// entry that is a symlink, FIFO, socket, device or hard link, belongs to someone
    /// who may not write the state file, or is writable by more users than the state
    /// file; or a symlinked state file that the kernel's `protected_symlinks` rule
    /// would not follow. For a PostgreSQL state: one of its tables belongs to a role
    /// the URL's user is neither nor a member of. Nothing was followed, written or
    /// removed.
    #[error("refusing to use `{}`: {reason}", path.display())]
    Unsafe {
        /// The object refused.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Which kind of refusal it is, where the way out differs (the hint).
        what: Unsafety,
    },
    /// The lock file (or the sidecar holding it) was removed or replaced while this
    /// process held the lock, so another writer may have taken a lock of its own (or
    /// the state file was replaced by a writer that did not hold the lock); or the
    /// `statesafe lock` whose pass let this writer through died without ending it
    /// ([`LockLoss::HolderDied`]): the commit was abandoned before the rename (or the
    /// lock refused) and nothing was written.
    #[error("lost the lock on `{}`: {}", path.display(), why.describe(lock))]
    LockLost {
        /// The state file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// How it was lost: the way out differs (the hint).
        why: LockLoss,
    },
    /// This thread already holds the writers' lock of this file (an open transaction or
    /// lock guard of this store or of another store of the same file, or the closure
    /// of an `update`): the lock is not reentrant, so the call would wait for this
    /// very thread until the lock timeout. Refused at once; nothing was written, and
    /// what holds the lock goes on. Other threads still wait for the lock as usual.
    #[error(
        "cannot {operation} `{}`: this thread already holds its writers' lock (an open transaction or lock guard of this file), so it would wait for itself",
        path.display()
    )]
    Nested {
        /// The state file.
        path: PathBuf,
        /// What the refused call was doing (`update`, `replace`, a lock's operation).
        operation: String,
    },

    /// The database server failed or refused an operation (PostgreSQL backend):
    /// unreachable, authentication, a missing database, a statement timeout, a
    /// connection lost before the commit. Nothing was committed by this call.
    #[error("failed to {op} `{}`: {reason}", path.display())]
    Remote {
        /// The state's URL (without any password).
        path: PathBuf,
        /// What was being done.
        op: String,
        /// What went wrong, in a few words.
        reason: String,
        /// What to do about it.
        hint: String,
        /// The client library's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An operation this kind of store does not offer (yet): nothing was done.
    #[error("`{}`: {what} is not supported {why}", path.display())]
    Unsupported {
        /// The state file or URL.
        path: PathBuf,
        /// The operation.
        what: String,
        /// Where, or why not.
        why: String,
    },
    /// Any other I/O failure.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// What was being done.
        op: Op,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Which kind of [`Error::Unsafe`] refusal, where the way out differs: told by type,
/// never by the words of its reason (which names paths, any of which may hold them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsafety {
    /// An object another user may have planted, or one set up by hand (a symlink, a
    /// FIFO, a hard link, a file or table of someone who may not write the state).
    Planted,
    /// A sidecar that belongs to another user, who is not the directory's owner, while
    /// there is no state file (never made, or deleted) to say who may write it. It may
    /// be a co-writer's, holding a deleted state's only backups and history: not to be
    /// removed on a guess.
    SidecarWithoutFile,
}

/// `path` as one word of a command the user is told to type (`statesafe recover
/// PATH`): quoted for a POSIX shell only when it needs to be, and a name that starts
/// with `-` written `./-name`, which no command reads as an option (review22). The
/// CLI's `shell_quote` follows the same rules.
pub(crate) fn command_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    // Only a relative path starts with `-`: `./` names the same file.
    let s = if s.starts_with('-') {
        format!("./{s}")
    } else {
        s.into_owned()
    };
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+,:@%=".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How an [`Error::LockLost`] lock was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockLoss {
    /// The lock file or its sidecar was removed or replaced while the lock was held.
    Removed,
    /// The `statesafe lock FILE -- CMD` whose pass (in `STATESAFE_LOCKS`) let this
    /// writer through was killed before it could end its pass: its lock died with it,
    /// so another writer may have written since CMD read the state.
    HolderDied,
}

impl LockLoss {
    fn describe(self, lock: &Path) -> String {
        match self {
            LockLoss::Removed => format!(
                "`{}` was removed or replaced while it was held (or the file was replaced by a writer without the lock)",
                lock.display()
            ),
            LockLoss::HolderDied => "the `statesafe lock` this writer ran under died (killed) while its command ran on, and its lock died with it, so another writer may have written since the command read the state; nothing was written".into(),
        }
    }
}

impl Unsafety {
    /// Its name, as the Python package (`Unsafe.what`) and the Node package
    /// (`err.what`) give it: `planted`, `sidecar_without_file`.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(statesafe::Unsafety::Planted.name(), "planted");
    /// ```
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Unsafety::Planted => "planted",
            Unsafety::SidecarWithoutFile => "sidecar_without_file",
        }
    }
}

/// How the reason of every [`Error::Corrupt`] that refuses a journal-mode snapshot
/// whose journal was lost begins (`Store::refuse_lost_journal`,
/// `Store::refuse_deleted_journal`, `Store::refuse_cut_journal`): its hint then names
/// the way out, and `Store::accept_snapshot` accepts only such a refusal.
pub(crate) const LOST_JOURNAL: &str = "it is a journal-mode snapshot of generation";

/// Whether a [`Error::Corrupt`]'s reason refuses a snapshot whose journal was lost.
pub(crate) fn is_lost_journal(reason: &str) -> bool {
    reason.starts_with(LOST_JOURNAL)
}

/// What a [`Error::Corrupt`]'s message says happened: a lost journal is not damage to
/// the file (its snapshot is intact), and says so.
fn corrupt_what(reason: &str) -> &'static str {
    if is_lost_journal(reason) {
        "lost the commits in its journal"
    } else {
        "is corrupt"
    }
}

fn newest_backup_suffix(newest: Option<&std::path::Path>) -> String {
    match newest {
        Some(b) => format!(" (newest backup `{}`)", b.display()),
        None => " (no backup is kept)".into(),
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// What [`Error::Unrecoverable`] says of its file: damaged, or deleted.
fn unrecoverable_what(damage: &Error) -> String {
    match damage {
        Error::Deleted { generation, .. } => format!(
            "was deleted and no version of it could be put back: its sidecar shows generation {generation} committed, but no backup, history entry or journal record it keeps proves any version"
        ),
        _ => "is damaged and could not be recovered".into(),
    }
}

fn tried_suffix(tried: &[(PathBuf, String)]) -> String {
    if tried.is_empty() {
        return "; there are no backups".into();
    }
    let mut s = String::from("; backups tried:");
    for (path, why) in tried {
        s.push_str(&format!(" `{}` ({why});", path.display()));
    }
    s.pop();
    s
}

/// The marker a remote store's [`Error::OutcomeUnknown`] carries as its source
/// (inside the `io::Error`): the connection was lost during `COMMIT`.
#[derive(Debug, thiserror::Error)]
///
/// `1`: where the damaged row the transaction replaced went (`URL#quarantine=ID`), if
/// it committed: the quarantine happened in the same transaction.
#[error("the connection to the database server was lost during COMMIT: {0}")]
pub(crate) struct CommitLost(pub String, pub Option<PathBuf>);

/// The marker a journal-mode [`Error::OutcomeUnknown`] carries as its source (inside
/// the `io::Error`): the record was written but its flush failed.
#[derive(Debug, thiserror::Error)]
#[error("the journal record was written but flushing it failed: {0}")]
pub(crate) struct JournalFlushFailed(pub io::Error);

/// The marker of a journal-mode [`Error::OutcomeUnknown`] whose record may be in the
/// journal although its commit did not finish (its group commit's leader panicked, or
/// a failed append could not be erased): it says what happened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct JournalRecordLeft(pub String);

/// The cause of the [`Error::Io`] of a load that found the state file missing, then
/// evidence of commits in its sidecar, then the file back, again and again
/// (`Store::load`): something keeps deleting it and creating it again.
#[derive(Debug, thiserror::Error)]
#[error(
    "it was deleted and created again {0} times in a row while it was being read (missing when read, there again after its sidecar showed commits): a program keeps replacing it by deleting it first, so no version of it could be read"
)]
pub(crate) struct KeptVanishing(pub u32);

fn outcome_unknown_reason(source: &io::Error) -> std::borrow::Cow<'static, str> {
    if let Some(CommitLost(_, quarantined)) = source
        .get_ref()
        .and_then(|e| e.downcast_ref::<CommitLost>())
    {
        let lost = "the connection to the database server was lost during COMMIT and the server could not be asked since, so the new version may or may not have been committed";
        return match quarantined {
            None => lost.into(),
            Some(q) => format!(
                "{lost}; if it was, the damaged row it replaced was moved as it was to the quarantine table, `{}` (the store reports it as quarantined at its next read or transaction, once the server can say), and if not, the damaged row is still in place",
                q.display()
            )
            .into(),
        };
    }
    if source
        .get_ref()
        .is_some_and(|e| e.is::<JournalFlushFailed>())
    {
        "the commit's journal record was written but flushing it (fdatasync) failed, so it may or may not survive a power loss".into()
    } else if source
        .get_ref()
        .is_some_and(|e| e.is::<JournalRecordLeft>())
    {
        "the commit's journal record may be in the journal but the commit did not finish, so it may or may not be in place".into()
    } else {
        "the new state is in place but the directory fsync failed, so it may not survive a power loss".into()
    }
}

fn holder_suffix(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => format!("; it is held by {h}"),
        None => String::new(),
    }
}

impl Error {
    /// Classifies an OS error into the variant a caller can act on.
    pub(crate) fn io(op: Op, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        match source.raw_os_error() {
            Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => {
                Error::NoSpace { path, op, source }
            }
            Some(code) if code == rustix::io::Errno::DQUOT.raw_os_error() => {
                Error::NoSpace { path, op, source }
            }
            Some(code) if code == rustix::io::Errno::ROFS.raw_os_error() => {
                Error::ReadOnly { path, op, source }
            }
            Some(code)
                if code == rustix::io::Errno::ACCESS.raw_os_error()
                    || code == rustix::io::Errno::PERM.raw_os_error() =>
            {
                Error::PermissionDenied { path, op, source }
            }
            _ => Error::Io { path, op, source },
        }
    }

    /// The message and every cause after it, as one line (`failed to record history in
    /// `…`: Is a directory (os error 21)`): for reports that carry an error as text,
    /// where the `source` chain would otherwise be lost with the cause it names.
    pub(crate) fn with_causes(&self) -> String {
        chain_text(self)
    }

    /// A short, stable name for the kind of error, for logs, metrics and `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Deleted { .. } => "deleted",
            Error::Corrupt { .. } => "corrupt",
            Error::LockTimeout { .. } => "lock_timeout",
            Error::GenerationConflict { .. } => "generation_conflict",
            Error::Invalid { .. } => "invalid",
            Error::Mismatch { .. } => "mismatch",
            Error::Serialize { .. } => "serialize",
            Error::Aborted { .. } => "aborted",
            Error::NoSpace { .. } => "no_space",
            Error::PermissionDenied { .. } => "permission_denied",
            Error::ReadOnly { .. } => "read_only",
            Error::OutcomeUnknown { .. } => "outcome_unknown",
            Error::Poisoned { .. } => "poisoned",
            Error::BadPath { .. } => "bad_path",
            Error::AlreadyExists { .. } => "already_exists",
            Error::TooLarge { .. } => "too_large",
            Error::TooDeep { .. } => "too_deep",
            Error::Unrecoverable { .. } => "unrecoverable",
            Error::BadSchema { .. } => "bad_schema",
            Error::GenerationUnavailable { .. } => "generation_unavailable",
            Error::Unsafe { .. } => "unsafe",
            Error::LockLost { .. } => "lock_lost",
            Error::Remote { .. } => "remote",
            Error::Unsupported { .. } => "unsupported",
            Error::Nested { .. } => "usage",
            Error::Io { .. } => "io",
        }
    }

    /// What the user can do about it, when there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotFound { .. } => {
                "create it first (for example with `statesafe set FILE '' '{}'`), or check the path".into()
            }
            Error::Deleted { path, sidecar, .. } => format!(
                "run `statesafe recover {p}` to put back the newest version its backups, history and journal prove, as the next generation (when they prove none, it says so and writes nothing); or, to start over on purpose, write a whole new document (`statesafe init {p} DOCUMENT --force`, or `replace` in a program; the old generations' backups and history stay), or remove the sidecar directory `{s}` to discard the old state's backups, history and settings too",
                p = command_word(path),
                s = sidecar.display()
            ),
            Error::Corrupt { path, .. } if crate::postgres::is_url(&path.to_string_lossy())
                && path.to_string_lossy().ends_with("#settings") => format!(
                "the state's recorded settings (the `settings` column of its row) were changed outside statesafe or damaged: `statesafe recover {}` moves them as they are into the quarantine table, and the state goes on with the default settings until you record yours again (`statesafe settings URL …`; docs/remote.md, \"Damaged settings\")",
                path.to_string_lossy().trim_end_matches("#settings")
            ),
            Error::Corrupt { path, .. } if crate::postgres::is_url(&path.to_string_lossy()) => format!(
                "the state's row was changed outside statesafe (a hand edit, a trigger) or damaged: `statesafe recover {}` moves it into the quarantine table and restores the newest valid backup as the next generation (docs/remote.md, \"A damaged row\")",
                path.display()
            ),
            Error::Corrupt { path, reason, .. } if is_lost_journal(reason) => format!(
                "the commits after the snapshot were in its journal, which is gone or was replaced by an older copy, and nothing repairs that automatically: restore the sidecar directory `.{}.statesafe` from a backup that holds them, or accept the snapshot as the current state (the commits after it are then given up) with `statesafe recover {} --accept-snapshot`",
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned()),
                command_word(path)
            ),
            Error::Corrupt { .. } => {
                "the file was not written by statesafe or was damaged outside it; inspect it, fix it by hand or restore a backup".into()
            }
            Error::LockTimeout { holder, .. } => match holder {
                Some(h) => format!(
                    "wait for process {} to finish, or raise the lock timeout; the lock is freed automatically when that process exits",
                    h.pid
                ),
                None => "wait for the other writer to finish, or raise the lock timeout".into(),
            },
            Error::GenerationConflict { .. } => {
                "someone else wrote the state since you read it: read it again and redo your change".into()
            }
            Error::NoSpace { .. } => "free some space on that filesystem and try again; the state file is unchanged".into(),
            Error::PermissionDenied {
                op: Op::KeepGroup, ..
            } => {
                "the file belongs to a group this user is not in, and a new version would silently change its group: write it as a member of that group (`newgrp`, `sg`), as its owner after `chgrp` to a group of yours, or as root".into()
            }
            Error::PermissionDenied {
                op: Op::OpenLock, ..
            } => {
                "the sidecar's files admit whom the state file admitted at its last commit: after a `chmod` that grants you write access, one commit by the file's owner (or root) gives them the file's permissions; otherwise check the permissions of the state file and its directory".into()
            }
            Error::PermissionDenied { .. } => {
                "check the permissions of the state file and its directory (writing needs write access to the directory)".into()
            }
            Error::ReadOnly { .. } => "remount the filesystem read-write, or keep the state elsewhere".into(),
            Error::OutcomeUnknown { source, .. }
                if source.get_ref().is_some_and(|e| e.is::<CommitLost>()) =>
            {
                "the server could not be asked whether it committed, and the write was not sent again (that could apply it twice); once the server is reachable, a transaction on the state (for example `statesafe update URL .`) waits for that COMMIT to finish and shows which generation won".into()
            }
            Error::Remote { hint, .. } => hint.clone(),
            Error::Unsupported { .. } => {
                "see docs/remote.md for what a remote store does today".into()
            }
            Error::OutcomeUnknown { source, .. }
                if source.get_ref().is_some_and(|e| e.is::<JournalRecordLeft>()) =>
            {
                "the commit was not run again (that could apply it twice): read the state back (after opening the store again if it refuses writes) to see whether it is in place".into()
            }
            Error::OutcomeUnknown { .. } => {
                "check the storage for errors; read the state back to see which version is in place, and write it again once the storage is healthy".into()
            }
            Error::Poisoned { .. } => {
                "an fsync failed earlier, so data may have been lost by the kernel; check the storage, then reopen the store".into()
            }
            Error::Nested { .. } => {
                "commit or drop the open transaction (or lock guard) first, or make the change inside it (change its document, or return from the `update` closure)".into()
            }
            Error::BadPath { .. } => "give the path of a regular file in an existing directory".into(),
            Error::AlreadyExists { .. } => "use an update instead of create, or remove the file first".into(),
            Error::TooLarge { .. } => "remove data from the state, or raise the limit (`max_bytes` in the settings)".into(),
            Error::Unrecoverable { damage, .. } if matches!(**damage, Error::Deleted { .. }) => {
                let (path, sidecar) = match &**damage {
                    Error::Deleted { path, sidecar, .. } => (path, sidecar),
                    _ => unreachable!("invariant: matched just above"),
                };
                format!(
                    "nothing was written. If you have a copy of the state elsewhere (a backup of the directory, another machine), write it back as a new generation with `statesafe init {p} DOCUMENT --force` (`replace` in a program); otherwise start over on purpose the same way, or remove the sidecar directory `{s}` to discard what is left of the old state (settings, lock record) too",
                    p = command_word(path),
                    s = sidecar.display()
                )
            }
            Error::Unrecoverable { quarantined, .. } => match quarantined {
                Some(q) => format!(
                    "the damaged file is kept at `{}`; repair it by hand and write it back, or start afresh deliberately",
                    q.display()
                ),
                None => "repair the file by hand, or start afresh deliberately".into(),
            },
            Error::TooDeep { .. } => "flatten the document (an array of records instead of records inside records); statesafe holds documents up to that depth, on write and on read alike".into(),
            Error::BadSchema { .. } => "fix the schema (see https://json-schema.org)".into(),
            Error::GenerationUnavailable { generation, reason, .. }
                if reason.starts_with(crate::history::DAMAGED_ENTRY) =>
            {
                format!(
                    "a history entry was changed outside statesafe (a hand edit) or damaged, so statesafe serves no version rebuilt through it; the current state is not affected. A backup of generation {generation}, if one is kept (`statesafe backups`), still serves that version; the entry stays as it is for inspection (`statesafe log --patch`)"
                )
            }
            Error::GenerationUnavailable { .. } => {
                "list what is kept with `statesafe log` and `statesafe backups`; raise the history or backup retention to keep more".into()
            }
            Error::Mismatch { .. } => {
                "the file is not damaged and nothing was changed: read it with the type, rule or schema it was written with, or migrate it deliberately".into()
            }
            Error::Invalid { .. } => "change the update so that the new state satisfies the rule".into(),
            Error::Unsafe { path, .. } if path.to_str().is_some_and(crate::postgres::is_url) => {
                "another role may have made the tables first (in a schema several roles may create tables in, as `public` before PostgreSQL 15), or they were set up by hand: nothing was read or written there. If they are not yours, have their owner or an administrator look at them, and keep the state where only roles you trust may create tables (`schema=` a schema of your own, or another `table=`); an owner role of your own is set up by membership (docs/remote.md, \"Who owns the tables\")".into()
            }
            // A sidecar refused for want of a state file (never made, or deleted): it
            // may be a co-writer's, holding a deleted state's only backups and history
            // (review20, finding 7), so it is not to be removed on a guess.
            Error::Unsafe {
                what: Unsafety::SidecarWithoutFile,
                ..
            } => {
                "another user may have planted it, or it is the sidecar of a state file that was deleted, made by another writer of that file: then its backups and history are the state's only copies. Inspect it with `ls -la` and `ls -la` its `backups/`; if it holds a state you need, have its owner run `statesafe recover FILE`, which puts the file back; remove it only if it is not a state you need. In a sticky directory such as /tmp only its owner, the directory's owner or root can remove it: there, keep the state in a directory that other users cannot write, where no one can take its names first".into()
            }
            Error::Unsafe { .. } => {
                "another user may have planted it, or it was set up by hand: inspect it with `ls -la`; remove it if it is not yours (statesafe re-creates its own sidecar files), or have its owner fix it. In a sticky directory such as /tmp only its owner, the directory's owner or root can remove it: there, keep the state in a directory that other users cannot write, where no one can take its names first".into()
            }
            Error::LockLost {
                why: LockLoss::HolderDied,
                ..
            } => {
                "the lock the command ran under is gone: run the whole command again under a new `statesafe lock` (its reads are stale). A `statesafe lock` killed with SIGKILL takes its command with it on Linux; a program the command started may run on, and its writes are refused like this one".into()
            }
            Error::LockLost { .. } => {
                "something (a cleanup script, `rm -rf`, `git clean`) deleted statesafe's sidecar while it was in use, so another writer may have got in; a commit that fails this way wrote nothing. Stop the cleanup from doing that, then run the command again".into()
            }
            Error::Io { source, .. } if source.get_ref().is_some_and(|e| e.is::<KeptVanishing>()) => {
                "stop the program that deletes the file and writes it anew (a sync tool, a script that does `rm` then writes, an editor saving by deleting first): statesafe's writers rename a new version over the file and never delete it, so while it is deleted a reader cannot tell a deleted state from a new one. Then read it again; nothing was changed by this call".into()
            }
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                "a file statesafe was working on vanished under it: something (a cleanup job, `rm -rf` of the sidecar, another tool) removed statesafe's files meanwhile; nothing was committed by this call, so run it again".into()
            }
            // A rename or link the kernel refuses across mounts or over a mount point:
            // the state file is itself mounted (a container's single-file volume, `mount
            // --bind`), and no atomic replacement of it is possible there.
            Error::Io { source, .. }
                if matches!(source.raw_os_error(), Some(code) if code == rustix::io::Errno::XDEV.raw_os_error() || code == rustix::io::Errno::BUSY.raw_os_error()) =>
            {
                "the state file, or its directory's entry for it, is a mount point (a bind mount, a container's single-file volume such as `docker run -v host.json:/app/state.json`), so it cannot be replaced atomically: nothing was committed and it was not written in place. Mount the directory that holds it instead of the file, or keep the state in a directory of its own".into()
            }
            Error::Io { .. } => {
                "an unexpected system error: check the path, the permissions and the storage (`dmesg`); nothing was committed by this call".into()
            }
            _ => return None,
        })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e`'s message and every cause after it, as one line (`a: b: c`).
pub(crate) fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
