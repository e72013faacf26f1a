//! The sidecar directory `.NAME.statesafe/`: the one type that opens it and everything
//! in it, so that another user who can plant files or links beside a state file gains
//! nothing through statesafe (issue 10, `docs/design.md`, "Threat model").
//!
//! - The sidecar is opened once per use as a directory descriptor, relative to the
//!   state file's directory descriptor, with `O_DIRECTORY|O_NOFOLLOW`, and checked with
//!   `fstat`: a directory (never a symlink), owned by someone who may write the state
//!   file (its owner, the caller, or a member of the group or anyone when the file is
//!   group- or world-writable; with no state file, the caller or the directory's
//!   owner), and writable by group or others only where the state
//!   file is (the caller narrows its own sidecar; anyone else's is refused).
//! - Every entry (lock, meta, settings.json, backups/, history/, quarantine/ and their
//!   files) is opened relative to that descriptor with `O_NOFOLLOW|O_NONBLOCK` and
//!   checked with `fstat` before any byte is read or written: symlinks, FIFOs, sockets,
//!   devices and directories where a file is expected are refused with
//!   [`Error::Unsafe`] naming the entry; files statesafe writes must also have one link
//!   (a hard link to someone else's file is never written through) and, in a sidecar
//!   nobody else may write, belong to its owner, the state file's owner, the caller or
//!   root.
//! - Permissions follow the state file's: for each class of user, read on the file →
//!   read and search on the folders, write on the file → write on the folders and the
//!   lock file. A private (0600) state file gets a 0700 sidecar, so no copy of its
//!   contents is readable by anyone else; as root, ownership follows too, so root
//!   writing a user's file never locks the user out of it. Fix-ups are `fchmod` and
//!   `fchown` on descriptors opened as above, never on paths.
//!
//! Paths are kept for messages only.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::io::Errno;

use crate::error::{Error, Op, Result, Unsafety};
use crate::paths::Target;
use crate::sys::{self, Access, Kind, Stat};
use crate::write::Perms;

/// The mode for folders in the sidecar of a file with mode `file_mode`.
pub(crate) fn dir_mode(file_mode: u32) -> u32 {
    let mut mode = 0o700;
    for shift in [3, 0] {
        let class = (file_mode >> shift) & 0o7;
        let mut bits = 0;
        if class & 0o4 != 0 {
            bits |= 0o5;
        }
        if class & 0o2 != 0 {
            bits |= 0o3;
        }
        mode |= bits << shift;
    }
    mode
}

/// The mode for statesafe's own files (lock, settings, history) in that sidecar.
pub(crate) fn file_mode(file_mode: u32) -> u32 {
    (file_mode & 0o666) | 0o600
}

/// The folders statesafe keeps in the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Backups,
    History,
    Quarantine,
}

impl Sub {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sub::Backups => "backups",
            Sub::History => "history",
            Sub::Quarantine => "quarantine",
        }
    }
}

/// The mode for the lock file in that sidecar: read and write for each class that may
/// write the state file, nothing for the others. `flock` works on a read-only
/// descriptor, so a user who could merely open the lock file could hold every writer
/// off (with `flock(1)`, say); it holds nothing a reader needs.
pub(crate) fn lock_mode(file_mode: u32) -> u32 {
    let mut mode = 0o600;
    for shift in [3, 0] {
        if (file_mode >> shift) & 0o2 != 0 {
            mode |= 0o6 << shift;
        }
    }
    mode
}

/// The mode statesafe gives its own file `name` at the top of the sidecar.
fn own_file_mode(name: &OsStr, file_mode_: u32) -> u32 {
    if name == LOCK {
        lock_mode(file_mode_)
    } else {
        file_mode(file_mode_)
    }
}

/// The lock file's name.
pub(crate) const LOCK: &str = "lock";

/// The record that the state was committed at least once, and the generation it had
/// reached when this record was written ([`Sidecar::enforce`]): evidence of a deleted
/// state file for a reader who may not read the lock file (`write::highest_known_generation`).
pub(crate) const COMMITTED: &str = "committed";

/// statesafe's own files at the top of the sidecar.
const OWN_FILES: [&str; 4] = [LOCK, "settings.json", "meta", COMMITTED];

/// An `fsync` failed in [`Dir::write_small_file`]: the caller must not try it again
/// (the kernel may have dropped what it failed to write), and poisons its store.
pub(crate) struct SyncFailed(pub io::Error);

/// An open, checked directory of the sidecar (the sidecar itself or one of its folders).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Who may own the files statesafe writes here; `None` when group or others may
    /// write the sidecar (because they may write the state file), so any of them.
    owners: Option<[u32; 4]>,
}

/// What the caller means to do with a file of the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Read it (a backup, a settings file): it must be a regular file.
    Read,
    /// Write it (lock, history): also one link and an accepted owner.
    Write,
}

fn unsafe_entry(path: PathBuf, reason: impl Into<String>) -> Error {
    Error::Unsafe {
        path,
        reason: reason.into(),
        what: Unsafety::Planted,
    }
}

/// Maps an `openat(O_NOFOLLOW)` failure: `ELOOP` means a symlink, never followed.
fn open_error(op: Op, path: PathBuf, e: io::Error) -> Error {
    if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
        unsafe_entry(
            path,
            "it is a symbolic link, which statesafe never follows here",
        )
    } else if e.raw_os_error() == Some(Errno::NXIO.raw_os_error()) {
        unsafe_entry(path, "it is a socket or device, not a regular file")
    } else {
        Error::io(op, path, e)
    }
}

/// The refusal of `name` in `dir` where a directory was expected (`O_DIRECTORY` with
/// `O_NOFOLLOW` says `ENOTDIR` for a symlink too): says what it is.
fn not_a_dir(dir: &OwnedFd, name: &OsStr, path: PathBuf) -> Error {
    match sys::stat_at(dir, name) {
        Ok(st) if st.kind == Kind::Symlink => unsafe_entry(
            path,
            "it is a symbolic link, which statesafe never follows here",
        ),
        Ok(st) => unsafe_entry(
            path,
            format!("it is {}, not a directory", st.kind.describe()),
        ),
        Err(_) => unsafe_entry(path, "it is not a directory"),
    }
}

impl Dir {
    /// Whether users other than its owner may write here now (they may write the
    /// state file), so plant entries: one `fstat` (the folder follows a `chmod` of the
    /// state file after it was opened).
    pub(crate) fn shared(&self) -> bool {
        self.owners.is_none() || sys::stat_fd(&self.fd).is_ok_and(|st| st.mode & 0o022 != 0)
    }

    /// Where it is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in it, for messages.
    pub fn join(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// The descriptor, for `*at` calls.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The names in it.
    pub fn names(&self, op: Op) -> Result<Vec<OsString>> {
        sys::names_in(&self.fd).map_err(|e| Error::io(op, &self.path, e))
    }

    /// `fstatat` of `name`, never following a link (`None`: not there).
    pub fn stat(&self, name: &OsStr, op: Op) -> Result<Option<Stat>> {
        match sys::stat_at(&self.fd, name) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(op, self.join(name), e)),
        }
    }

    /// Opens file `name` (`None`: it does not exist), refusing anything but a regular
    /// file, and for [`Use::Write`] also hard-linked and foreign files.
    pub fn open(
        &self,
        name: &OsStr,
        access: Access,
        create_mode: u32,
        purpose: Use,
        op: Op,
    ) -> Result<Option<File>> {
        Ok(self
            .open_stat(name, access, create_mode, purpose, op)?
            .map(|(file, _)| file))
    }

    /// [`Sidecar::open`], with the `fstat` of the descriptor the check was made on
    /// (so that a caller needing its size or identity makes no second one).
    pub fn open_stat(
        &self,
        name: &OsStr,
        access: Access,
        create_mode: u32,
        purpose: Use,
        op: Op,
    ) -> Result<Option<(File, Stat)>> {
        let file = match sys::open_at(&self.fd, name, access, create_mode) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(open_error(op, self.join(name), e)),
        };
        let st = sys::stat_fd(&file).map_err(|e| Error::io(op, self.join(name), e))?;
        self.check_file(name, &st, purpose)?;
        Ok(Some((file, st)))
    }

    /// For a descriptor [`Dir::open_stat`] gave earlier (`opened`: its `fstat` then):
    /// whether `name` is still that very file, with the same owner and mode, passing
    /// the same checks as an open for `purpose` would. `Some` with its `fstatat`
    /// (size included) when it is; `None` when anything differs (not there, another
    /// file, a symlink, changed owner or mode): open it again. One `fstatat` instead of
    /// an `openat`, an `fstat` and a `close`; the checks are made on the inode the
    /// name leads to now, exactly as on a fresh open's.
    pub fn recheck(
        &self,
        name: &OsStr,
        opened: &Stat,
        purpose: Use,
        op: Op,
    ) -> Result<Option<Stat>> {
        let Some(st) = self.stat(name, op)? else {
            return Ok(None);
        };
        let same = (st.dev, st.ino, st.kind, st.mode, st.uid, st.gid)
            == (
                opened.dev,
                opened.ino,
                opened.kind,
                opened.mode,
                opened.uid,
                opened.gid,
            );
        if !same {
            return Ok(None);
        }
        self.check_file(name, &st, purpose)?;
        Ok(Some(st))
    }

    fn check_file(&self, name: &OsStr, st: &Stat, purpose: Use) -> Result<()> {
        if st.kind != Kind::File {
            return Err(unsafe_entry(
                self.join(name),
                format!("it is {}, not a regular file", st.kind.describe()),
            ));
        }
        if purpose == Use::Write {
            if st.nlink > 1 {
                return Err(unsafe_entry(
                    self.join(name),
                    format!(
                        "it has {} hard links, so writing it could change a file elsewhere",
                        st.nlink
                    ),
                ));
            }
            if let Some(owners) = self.owners
                && !owners.contains(&st.uid)
            {
                return Err(unsafe_entry(
                    self.join(name),
                    format!(
                        "it belongs to {}, who may not write the state file",
                        user(st.uid)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads the whole of file `name` (`None`: it does not exist).
    pub fn read(&self, name: &OsStr, op: Op) -> Result<Option<Vec<u8>>> {
        let Some(mut file) = self.open(name, Access::Read, 0, Use::Read, op)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(op, self.join(name), e))?;
        Ok(Some(bytes))
    }

    /// Removes `name` if it is a regular file (`false`: it was not there).
    pub fn remove_file(&self, name: &OsStr, op: Op) -> Result<bool> {
        match self.stat(name, op)? {
            None => return Ok(false),
            Some(st) if st.kind != Kind::File => {
                return Err(unsafe_entry(
                    self.join(name),
                    format!("it is {}, not a file statesafe made", st.kind.describe()),
                ));
            }
            Some(_) => {}
        }
        match sys::unlink_in(&self.fd, name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(op, self.join(name), e)),
        }
    }

    /// Atomically and durably replaces the small file `name`: temp file, fsync,
    /// rename, directory fsync (with `sync`). For statesafe's own bookkeeping files.
    pub fn write_small_file(
        &self,
        name: &str,
        bytes: &[u8],
        sync: bool,
    ) -> std::result::Result<io::Result<()>, SyncFailed> {
        self.write_small_file_as(name, bytes, sync, None)
    }

    /// [`Self::write_small_file`], the new file given the sidecar's owner and mode for
    /// `perms` (when given) on its own descriptor before the rename: never a name
    /// that may have been swapped since.
    pub fn write_small_file_as(
        &self,
        name: &str,
        bytes: &[u8],
        sync: bool,
        perms: Option<Perms>,
    ) -> std::result::Result<io::Result<()>, SyncFailed> {
        let temp = format!(".{name}.tmp-{}", sys::pid());
        let temp = OsStr::new(&temp);
        // A leftover of ours, or anything planted under that name: unlinking a name
        // never touches what a link points to.
        let _ = sys::unlink_in(&self.fd, temp);
        let mut file = match sys::create_exclusive(&self.fd, temp, 0o644) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        // `Err(Ok(e))`: an ordinary failure; `Err(Err(e))`: a failed `fsync`.
        let result = (|| {
            if let Some(perms) = perms {
                self.fix_new_file(&file, perms).map_err(Ok)?;
            }
            file.write_all(bytes).map_err(Ok)?;
            if sync {
                sys::fsync(&file).map_err(Err)?;
            }
            sys::rename_in(&self.fd, temp, OsStr::new(name)).map_err(Ok)?;
            if sync {
                sys::fsync(&self.fd).map_err(Err)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(Ok(())),
            Err(failure) => {
                let _ = sys::unlink_in(&self.fd, temp);
                match failure {
                    Ok(e) => Ok(Err(e)),
                    Err(sync) => Err(SyncFailed(sync)),
                }
            }
        }
    }

    /// Gives a file statesafe just created here the sidecar's permissions for `perms`.
    pub fn fix_new_file(&self, file: &File, perms: Perms) -> io::Result<()> {
        let st = sys::stat_fd(file)?;
        fix(file, &st, file_mode(perms.mode), perms)
    }

    /// Gives the lock file statesafe just created here its permissions for `perms`.
    pub fn fix_new_lock(&self, file: &File, perms: Perms) -> io::Result<()> {
        let st = sys::stat_fd(file)?;
        fix(file, &st, lock_mode(perms.mode), perms)
    }

    /// Opens (or with `create`, creates) folder `name`, checked as the sidecar's own.
    fn subdir(&self, name: &str, create: Option<Perms>, op: Op) -> Result<Option<Dir>> {
        let path = self.join(name);
        let name = OsStr::new(name);
        let mut tried = false;
        let mut created = false;
        let fd = loop {
            match sys::open_dir_at(&self.fd, name) {
                Ok(fd) => break fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if create.is_none() || tried {
                        return Ok(None);
                    }
                }
                Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
                    return Err(not_a_dir(&self.fd, name, path));
                }
                Err(e) => return Err(open_error(op, path, e)),
            }
            tried = true;
            match sys::mkdir_at(&self.fd, name, 0o700) {
                Ok(()) => created = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(op, path, e)),
            }
        };
        let st = sys::stat_fd(&fd).map_err(|e| Error::io(op, &path, e))?;
        if let Some(owners) = self.owners
            && !owners.contains(&st.uid)
        {
            return Err(unsafe_entry(
                path,
                format!(
                    "it belongs to {}, who may not write the state file",
                    user(st.uid)
                ),
            ));
        }
        if created && let Some(perms) = create {
            fix(&fd, &st, dir_mode(perms.mode), perms).map_err(|e| Error::io(op, &path, e))?;
        }
        Ok(Some(Dir {
            fd,
            path,
            owners: self.owners,
        }))
    }
}

/// The sidecar of one state file, open and checked.
#[derive(Debug)]
pub(crate) struct Sidecar {
    dir: Dir,
    name: OsString,
    dev: u64,
    ino: u64,
    /// `backups` and `history`, once opened and checked: a writer's sidecar lives as
    /// long as its lock file stays open (checked in place at every lock), and statesafe
    /// never removes or replaces these folders, so each commit need not open them again.
    /// Only a user who may write the sidecar (a writer of the state file) could swap
    /// one, and such a user can change the state itself.
    cached: [std::sync::OnceLock<Arc<Dir>>; 2],
    /// The permissions [`Self::enforce`] last found (or made) right, so that a commit
    /// that changes nothing about them checks nothing.
    enforced: std::sync::Mutex<Option<Perms>>,
    /// Whether this handle found the [`COMMITTED`] record in place (or wrote it), so
    /// that a commit looks for it once per handle.
    committed: std::sync::atomic::AtomicBool,
}

impl Sidecar {
    /// Opens the sidecar of `target` in its directory `state_dir` and checks it
    /// (`None`: there is none). With `create`, a missing sidecar is made, with the
    /// permissions that `create` (the state file's, or a new file's) call for.
    pub fn open(
        target: &Target,
        state_dir: &OwnedFd,
        create: Option<Perms>,
    ) -> Result<Option<Sidecar>> {
        let name = target.sidecar_name();
        let path = target.sidecar();
        let mut tried = false;
        let mut made = false;
        let fd = loop {
            match sys::open_dir_at(state_dir, &name) {
                Ok(fd) => break fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if create.is_none() || tried {
                        return Ok(None);
                    }
                }
                Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => {
                    return Err(not_a_dir(state_dir, &name, path));
                }
                Err(e) => return Err(open_error(Op::OpenSidecar, path, e)),
            }
            tried = true;
            match sys::mkdir_at(state_dir, &name, 0o700) {
                Ok(()) => made = true,
                // Made by another writer in between: checked like any other.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(Op::CreateSidecar, path, e)),
            }
        };
        let st = sys::stat_fd(&fd).map_err(|e| Error::io(Op::OpenSidecar, &path, e))?;
        let file = match sys::stat_at(state_dir, &target.name) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(Op::OpenSidecar, target.real(), e)),
        };
        let euid = sys::effective_uid();
        let owner_may_write = st.uid == euid
            || match file {
                // The sidecar's group vouches for its owner only where the owner
                // chose it: in a set-group-ID directory others may write, every new
                // entry takes the directory's group (review21rec, finding 7).
                Some(f) => {
                    st.uid == f.uid
                        || f.mode & 0o002 != 0
                        || (f.mode & 0o020 != 0
                            && st.gid == f.gid
                            && sys::stat_fd(state_dir)
                                .is_ok_and(|d| sys::group_vouches_for(st.uid, st.gid, &d)))
                }
                // No state file to say who may write it (never made, or deleted: then
                // this sidecar holds its only copies). Its directory's owner may
                // create, rename and remove anything there, this sidecar and the file
                // included, so trusting their sidecar gives them nothing: root putting
                // back a user's deleted file in the user's own directory (review20,
                // finding 7). Anyone else's, in a directory others may write, may be
                // planted: refused.
                None => sys::stat_fd(state_dir).is_ok_and(|d| d.uid == st.uid),
            };
        if !owner_may_write {
            let (who, what) = if file.is_some() {
                ("may not write the state file", Unsafety::Planted)
            } else {
                (
                    "is neither you nor the directory's owner, and there is no state file to say who may write it",
                    Unsafety::SidecarWithoutFile,
                )
            };
            return Err(Error::Unsafe {
                path,
                reason: format!("it belongs to {}, who {who}", user(st.uid)),
                what,
            });
        }
        let mut mode = st.mode;
        let allowed = file.map_or(0, |f| f.mode & 0o022);
        let extra = mode & 0o022 & !allowed;
        if extra != 0 {
            if st.uid != euid && euid != 0 {
                return Err(unsafe_entry(
                    path,
                    format!(
                        "it is writable by {}, but the state file is not",
                        classes(extra)
                    ),
                ));
            }
            // Ours (or we are root): narrow it, as the state file's mode says. Anything
            // planted while it was open is checked entry by entry anyway.
            mode &= !extra;
            sys::set_mode_fd(&fd, mode).map_err(|e| Error::io(Op::OpenSidecar, &path, e))?;
            tracing::warn!(target: "statesafe", "narrowed `{}`: it was writable by {}, but the state file is not", path.display(), classes(extra));
        }
        if made && let Some(perms) = create {
            fix(&fd, &st, dir_mode(perms.mode), perms)
                .map_err(|e| Error::io(Op::CreateSidecar, &path, e))?;
            mode = dir_mode(perms.mode);
        }
        let shared = mode & 0o022 != 0;
        let owners = (!shared).then(|| [st.uid, euid, file.map_or(euid, |f| f.uid), 0]);
        Ok(Some(Sidecar {
            dir: Dir { fd, path, owners },
            name,
            dev: st.dev,
            ino: st.ino,
            cached: Default::default(),
            enforced: std::sync::Mutex::new(None),
            committed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The sidecar directory itself.
    pub fn root(&self) -> &Dir {
        &self.dir
    }

    /// Opens one of statesafe's folders in it (`None`: it does not exist).
    pub fn sub(&self, sub: Sub, op: Op) -> Result<Option<Arc<Dir>>> {
        self.sub_with(sub, None, op)
    }

    /// Opens one of statesafe's folders, creating it with the permissions `perms` call
    /// for if it is missing.
    pub fn sub_or_create(&self, sub: Sub, perms: Perms, op: Op) -> Result<Arc<Dir>> {
        self.sub_with(sub, Some(perms), op)?.ok_or_else(|| {
            // Removed again as soon as it was made: the sidecar is being deleted.
            Error::io(
                op,
                self.dir.join(sub.name()),
                io::ErrorKind::NotFound.into(),
            )
        })
    }

    fn sub_with(&self, sub: Sub, create: Option<Perms>, op: Op) -> Result<Option<Arc<Dir>>> {
        let slot = match sub {
            Sub::Backups => Some(&self.cached[0]),
            Sub::History => Some(&self.cached[1]),
            Sub::Quarantine => None,
        };
        if let Some(dir) = slot.and_then(|s| s.get()) {
            return Ok(Some(Arc::clone(dir)));
        }
        let Some(dir) = self.dir.subdir(sub.name(), create, op)? else {
            return Ok(None);
        };
        let dir = Arc::new(dir);
        match slot {
            // Another thread may have opened it meanwhile: either is the folder.
            Some(slot) => Ok(Some(Arc::clone(slot.get_or_init(|| dir)))),
            None => Ok(Some(dir)),
        }
    }

    /// Whether this is still the directory at the sidecar's name in `state_dir` (not
    /// removed or replaced since it was opened).
    pub fn in_place(&self, state_dir: &OwnedFd) -> io::Result<bool> {
        match sys::stat_at(state_dir, &self.name) {
            Ok(st) => Ok(st.dev == self.dev && st.ino == self.ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The permissions of the state file this sidecar was kept for, as the sidecar
    /// tells them once the file is gone (a deleted state put back or started over):
    /// its owner and group are the folder's (which follow the file's as root), and
    /// each of group and others may read it only if the folder lets them read (which
    /// [`Self::open`] never widens) and write it only if the lock file lets them write
    /// ([`lock_mode`]); the owner may read and write. Never wider than the file the
    /// sidecar's permissions were last made for (execute bits and an access ACL are
    /// not kept: an ACL's named entries lose their access). An ordinary user's file
    /// is writable by group or others, and in the sidecar's group, only if the
    /// sidecar is theirs: another user's (the directory owner's, trusted with no
    /// file; a co-writer's) does not choose who may write the caller's file, and its
    /// group may be one the caller cannot give a file.
    pub fn former_perms(&self) -> Result<Perms> {
        let st = sys::stat_fd(&self.dir.fd)
            .map_err(|e| Error::io(Op::OpenSidecar, &self.dir.path, e))?;
        let lock = self
            .dir
            .stat(OsStr::new(LOCK), Op::OpenSidecar)?
            .filter(|lock| lock.kind == Kind::File);
        let mut mode = 0o600;
        for shift in [3, 0] {
            if (st.mode >> shift) & 0o4 != 0 {
                mode |= 0o4 << shift;
            }
            if lock.is_some_and(|lock| (lock.mode >> shift) & 0o2 != 0) {
                mode |= 0o2 << shift;
            }
        }
        let euid = sys::effective_uid();
        if euid != 0 && st.uid != euid {
            // Not ours: the file is the caller's, in the caller's group, and nobody
            // else's sidecar lets others write it.
            return Ok(Perms {
                mode: mode & !0o022,
                uid: euid,
                gid: sys::effective_gid(),
            });
        }
        Ok(Perms {
            mode,
            uid: st.uid,
            gid: st.gid,
        })
    }

    /// Brings the sidecar in line with the state file's `perms` (call with the lock
    /// held, after a commit). Cheap when nothing changed: no system call at all when
    /// `perms` are the ones this handle last applied (it remembers them); otherwise an
    /// `fstat` of the folder and a `stat` of the lock file and of the journal, and
    /// changes only where they differ. Only statesafe's
    /// own entries are adjusted; backups and quarantined files keep their own inode's
    /// permissions (they are versions of the document), and anything else is left alone.
    ///
    /// And, once per handle, makes sure the [`COMMITTED`] record is there (written
    /// with `generation`, the commit's, when it is not): the only evidence of a
    /// commit that a reader who may not read the lock file is sure to find once the
    /// state file is deleted (no backups, no history, the metadata record in the
    /// file's own attribute).
    pub fn enforce(&self, perms: Perms, generation: u64) -> Result<()> {
        let mut enforced = self
            .enforced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *enforced != Some(perms) {
            self.enforce_now(perms)?;
            *enforced = Some(perms);
        }
        drop(enforced);
        if !self
            .committed
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.note_committed(generation, perms)?;
        }
        Ok(())
    }

    /// Writes the [`COMMITTED`] record (`generation` in decimal) unless there is one,
    /// with the sidecar's permissions for `perms` (its owner's, as root writing a
    /// user's file; readable by whoever may read the file), given on the new file's
    /// own descriptor before its rename. Written after the
    /// commit's rename, so it never claims a commit that failed; a crash before it
    /// leaves it to the next writer's handle. Synced (once in the sidecar's life); a
    /// failed `fsync` is reported, never retried: this handle does not write it again.
    fn note_committed(&self, generation: u64, perms: Perms) -> Result<()> {
        let name = OsStr::new(COMMITTED);
        if self.dir.stat(name, Op::WriteMeta)?.is_some() {
            return Ok(());
        }
        let failed = |e: io::Error| Error::io(Op::WriteMeta, self.dir.join(name), e);
        let bytes = format!("{generation}\n");
        match self
            .dir
            .write_small_file_as(COMMITTED, bytes.as_bytes(), true, Some(perms))
        {
            Ok(written) => written.map_err(failed),
            Err(SyncFailed(e)) => Err(failed(e)),
        }
    }

    fn enforce_now(&self, perms: Perms) -> Result<()> {
        let root = &self.dir;
        let err = |path: PathBuf| move |e: io::Error| Error::io(Op::Settings, path, e);
        let st = sys::stat_fd(&root.fd).map_err(err(root.path.clone()))?;
        let owner_differs =
            sys::effective_uid() == 0 && (st.uid != perms.uid || st.gid != perms.gid);
        // The lock file too: `Sidecar::open` narrows the top folder by itself (so its
        // mode alone cannot tell that the folders inside are still wider), and lock
        // files made before `lock_mode` were readable by every reader.
        let lock_right = match root.stat(OsStr::new(LOCK), Op::Settings)? {
            Some(lock) if lock.kind == Kind::File => {
                lock.mode & 0o7777 == lock_mode(perms.mode)
                    && (sys::effective_uid() != 0 || (lock.uid, lock.gid) == (perms.uid, perms.gid))
            }
            _ => true,
        };
        // The journal holds every change since the last compaction: it admits whom the
        // state file admits, like the snapshot (a narrowing must not leave it readable
        // by users the file no longer admits; a widening must let the new writers in).
        let journal = OsStr::new(crate::journal::JOURNAL);
        let journal_right = match root.stat(journal, Op::Settings)? {
            Some(j) if j.kind == Kind::File && j.nlink == 1 => {
                j.mode & 0o7777 == file_mode(perms.mode)
                    && (sys::effective_uid() != 0 || (j.uid, j.gid) == (perms.uid, perms.gid))
            }
            _ => true,
        };
        if st.mode == dir_mode(perms.mode) && !owner_differs && lock_right && journal_right {
            return Ok(());
        }
        // As root, only entries that already belong to the state's owner or to the
        // sidecar's (as it was before this fix-up) are changed: a root-owned file a
        // user moved into their sidecar (rename keeps the owner) is not one statesafe
        // made for this state, and handing it over would give the user root's file
        // (review21rec, finding 3).
        let mine = Mine {
            state: perms.uid,
            sidecar: st.uid,
        };
        // Narrow the top folder first: from then on nothing inside is reachable by users
        // the state file does not admit.
        fix(&root.fd, &st, dir_mode(perms.mode), perms).map_err(err(root.path.clone()))?;
        for sub in [Sub::Backups, Sub::History, Sub::Quarantine] {
            let Some(dir) = self.sub(sub, Op::Settings)? else {
                continue;
            };
            let dst = sys::stat_fd(&dir.fd).map_err(err(dir.path.clone()))?;
            if mine.admits(&dst) {
                fix(&dir.fd, &dst, dir_mode(perms.mode), perms).map_err(err(dir.path.clone()))?;
            }
            if sub == Sub::History {
                // Only the segments statesafe writes there, never another name.
                for name in dir.names(Op::Settings)? {
                    if crate::history::is_segment_name(&name) {
                        fix_own_file(&dir, &name, perms, mine)?;
                    }
                }
            }
        }
        for name in OWN_FILES {
            fix_own_file(root, OsStr::new(name), perms, mine)?;
        }
        // A journal with a second name (a quarantine's hard link, until the compaction
        // that follows replaces it) is left as it is: a `chmod` would change the
        // quarantined copy too.
        if root
            .stat(journal, Op::Settings)?
            .is_some_and(|j| j.kind == Kind::File && j.nlink == 1)
        {
            fix_own_file(root, journal, perms, mine)?;
        }
        Ok(())
    }
}

/// Whose entries [`Sidecar::enforce`] may change as root: the state file's owner's and
/// the sidecar's owner's (before the fix-up). Anyone else's (root's own, in a user's
/// sidecar) is left as it is. For an ordinary user the kernel already allows changes
/// to their own entries only.
#[derive(Clone, Copy)]
struct Mine {
    state: u32,
    sidecar: u32,
}

impl Mine {
    fn admits(self, st: &Stat) -> bool {
        sys::effective_uid() != 0 || st.uid == self.state || st.uid == self.sidecar
    }
}

/// Gives one of statesafe's own files in `dir` the sidecar's permissions, if it is
/// there and is what statesafe would have made (a regular file with one link).
fn fix_own_file(dir: &Dir, name: &OsStr, perms: Perms, mine: Mine) -> Result<()> {
    match dir.stat(name, Op::Settings)? {
        Some(st) if st.kind == Kind::File && mine.admits(&st) => {}
        // Not statesafe's: never touched (it is refused when statesafe needs it).
        Some(st) if st.kind == Kind::File => {
            tracing::warn!(target: "statesafe", "left `{}` as it is: it belongs to uid {}, neither the state file's owner nor the sidecar's, so statesafe did not make it for this state", dir.join(name).display(), st.uid);
            return Ok(());
        }
        _ => return Ok(()),
    }
    let Some(file) = dir.open(name, Access::Read, 0, Use::Write, Op::Settings)? else {
        return Ok(());
    };
    let st = sys::stat_fd(&file).map_err(|e| Error::io(Op::Settings, dir.join(name), e))?;
    // Checked again on the descriptor: the name may have been swapped since the stat.
    if !mine.admits(&st) {
        return Ok(());
    }
    fix(&file, &st, own_file_mode(name, perms.mode), perms)
        .map_err(|e| Error::io(Op::Settings, dir.join(name), e))
}

/// Sets owner (as root; otherwise the group where we may) and mode on a descriptor.
fn fix(fd: impl AsFd, st: &Stat, mode: u32, perms: Perms) -> io::Result<()> {
    let fd = fd.as_fd();
    if sys::effective_uid() == 0 {
        if st.uid != perms.uid || st.gid != perms.gid {
            sys::set_owner_fd(fd, perms.uid, perms.gid)?;
        }
    } else if st.gid != perms.gid {
        // An ordinary user may hand the group over if they belong to it (a shared
        // group-writable file); if not, ours stays, which never widens access.
        let _ = sys::set_owner_fd(fd, st.uid, perms.gid);
    }
    // After fchown, which may clear set-id bits (ours have none).
    if st.mode != mode {
        sys::set_mode_fd(fd, mode)?;
    }
    Ok(())
}

/// How a message names a user.
fn user(uid: u32) -> String {
    match sys::user_name(uid) {
        Some(name) => format!("user {name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn classes(bits: u32) -> &'static str {
    match (bits & 0o020 != 0, bits & 0o002 != 0) {
        (true, true) => "its group and others",
        (true, false) => "its group",
        _ => "others",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_modes_give_each_class_what_the_file_gives_it() {
        assert_eq!(dir_mode(0o600), 0o700);
        assert_eq!(dir_mode(0o644), 0o755);
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o660), 0o770);
        assert_eq!(dir_mode(0o666), 0o777);
        assert_eq!(dir_mode(0o400), 0o700);
        assert_eq!(file_mode(0o600), 0o600);
        assert_eq!(file_mode(0o4755), 0o644);
        assert_eq!(file_mode(0o440), 0o640);
        assert_eq!(lock_mode(0o644), 0o600);
        assert_eq!(lock_mode(0o664), 0o660);
        assert_eq!(lock_mode(0o666), 0o666);
        assert_eq!(lock_mode(0o646), 0o606);
        assert_eq!(lock_mode(0o444), 0o600);
    }
}
