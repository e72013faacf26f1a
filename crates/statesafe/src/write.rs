//! The write protocol, and the lock-free read it pairs with.
//!
//! A commit, with the writer's lock held (see `docs/design.md` for why each step):
//!
//! 1. create `.NAME.statesafe-tmp-PID-RANDOM` beside the file: `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`;
//! 2. copy owner and group (as root), then mode, onto it with `fchown`/`fchmod`;
//! 3. attach the metadata record (generation, checksum) as the `user.statesafe` attribute;
//! 4. write all bytes; 5. `fsync` it;
//! 6. `rename` it over the file; 7. `fsync` the directory.
//!
//! A failure in steps 1–6 removes the temporary file and leaves the file untouched; a
//! failed `fsync` also poisons the store. A failure in step 7 is "outcome unknown".

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Op, Result};
use crate::format::Meta;
use crate::lock::LockFile;
use crate::paths::Target;
use crate::sys;

/// How hard a commit works to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `fsync` the new file before the rename and the directory after it (default).
    /// A commit that returned `Ok` survives power loss.
    #[default]
    Full,
    /// No `fsync` at all. Still atomic against a crash of the process (readers and the
    /// next open see the old or the new version, never a mix), but a power loss or kernel
    /// crash may lose recent commits or, on some filesystems, leave an empty file. For
    /// tmpfs and throwaway data only.
    None,
}

/// Ownership and permissions of the file being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The state file as it is on disk now.
#[derive(Debug)]
pub(crate) struct Current {
    pub bytes: Vec<u8>,
    /// xxh3-64 of `bytes`, computed once.
    pub checksum: u64,
    pub generation: u64,
    /// The bytes were not written by statesafe (or not by this metadata): a hand edit,
    /// another program, or a file adopted for the first time.
    pub external: bool,
    pub perms: Perms,
}

/// Reads the state file without any lock: one `open`, so data and metadata come from
/// the same inode even if a writer renames a new version in meanwhile.
pub(crate) fn read_current(target: &Target, lock: &LockFile) -> Result<Option<Current>> {
    let path = target.real();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(Op::Read, &target.given, e)),
    };
    let stat = file
        .metadata()
        .map_err(|e| Error::io(Op::Read, &target.given, e))?;
    if !stat.is_file() {
        return Err(Error::BadPath {
            path: target.given.clone(),
            reason: "it is not a regular file".into(),
        });
    }
    let mut bytes = Vec::with_capacity(stat.len() as usize + 1);
    // Through a plain `Read`: `File`'s own `read_to_end` asks the kernel for the size
    // and position again (statx, lseek) though we just did.
    struct Plain<'a>(&'a File);
    impl Read for Plain<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            (&*self.0).read(buf)
        }
    }
    Plain(&file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(Op::Read, &target.given, e))?;
    let attr = sys::get_meta_attr(&file).map_err(|e| Error::io(Op::Read, &target.given, e))?;
    let sum = crate::format::checksum(&bytes);
    let (generation, external) = match attr {
        sys::MetaAttr::Present(raw) => {
            classify(Some(&raw), sum).unwrap_or_else(|| (fallback_generation(target, lock), true))
        }
        sys::MetaAttr::Absent | sys::MetaAttr::Unsupported => match read_sidecar_meta(target) {
            Some(m) if m.xxh3 == sum => (m.generation, false),
            _ => (fallback_generation(target, lock), true),
        },
    };
    Ok(Some(Current {
        bytes,
        checksum: sum,
        generation,
        external,
        perms: Perms {
            mode: stat.mode() & 0o7777,
            uid: stat.uid(),
            gid: stat.gid(),
        },
    }))
}

/// What a file's own metadata record says of bytes with checksum `sum`:
/// `(generation, external)`, or `None` when there is no usable record (then the
/// generation comes from [`fallback_generation`]). A record whose checksum differs
/// means the file was edited in place by another program after our last commit.
pub(crate) fn classify(attr: Option<&[u8]>, sum: u64) -> Option<(u64, bool)> {
    let m = Meta::decode(attr?)?;
    Some(if m.xxh3 == sum {
        (m.generation, false)
    } else {
        (m.generation + 1, true)
    })
}

/// The generation of a file whose own metadata does not describe it: one more than the
/// highest generation we know of (sidecar record, newest backup, lock record hint).
fn fallback_generation(target: &Target, lock: &LockFile) -> u64 {
    highest_known_generation(target, lock) + 1
}

/// The highest generation this state file is known to have had, from everything in
/// its sidecar: the metadata record, the newest backup, the newest history entry and
/// the lock record. A file deleted and created again continues after it, so
/// generations never repeat (a stale compare-and-swap cannot succeed, and a new
/// version can never collide with an old backup).
pub(crate) fn highest_known_generation(target: &Target, lock: &LockFile) -> u64 {
    let sidecar = read_sidecar_meta(target).map_or(0, |m| m.generation);
    let backups = crate::backup::list(target)
        .ok()
        .and_then(|l| l.backups.first().map(|b| b.generation))
        .unwrap_or(0);
    let history = crate::history::newest_generation(target).unwrap_or(0);
    sidecar
        .max(backups)
        .max(history)
        .max(lock.last_generation_hint())
}

/// Records `meta` on the current file (best effort: where it cannot be written, a
/// backup of this version is refused by verification later, never trusted blindly).
pub(crate) fn stamp_meta(target: &Target, meta: Meta) {
    if let Ok(file) = File::open(target.real()) {
        let _ = sys::set_meta_attr(&file, &meta.encode());
    }
}

fn sidecar_meta_path(target: &Target) -> PathBuf {
    target.sidecar().join("meta")
}

fn read_sidecar_meta(target: &Target) -> Option<Meta> {
    let raw = std::fs::read(sidecar_meta_path(target)).ok()?;
    Meta::decode(&raw)
}

/// Everything a commit needs besides the bytes.
pub(crate) struct Commit<'a, D> {
    pub target: &'a Target,
    pub dir: &'a D,
    pub temp_name: &'a OsStr,
    pub durability: Durability,
    /// Permissions of the file being replaced; `None` for a new file.
    pub existing: Option<Perms>,
    /// Mode for a new file: `0o600` when private; otherwise `0o644`, less the umask.
    pub private: bool,
}

/// A failure that must poison the store: an `fsync` reported an error, so the kernel
/// may have dropped dirty pages and a retry could "succeed" with data lost.
pub(crate) struct Poisoning(pub Error);

/// Runs the write protocol through the filesystem seam `fs`. Errors come in two
/// kinds: ordinary (`Ok(Err(..))`) and poisoning (`Err(Poisoning)`). Returns the time
/// spent in `fsync`.
pub(crate) fn commit<F: Fs>(
    fs: &F,
    c: &Commit<'_, F::Dir>,
    bytes: &[u8],
    meta: Meta,
) -> Result<Result<Duration>, Poisoning> {
    let mut fsync_time = Duration::ZERO;
    let given = &c.target.given;
    let io_err = |op: Op| move |e: io::Error| Error::io(op, given, e);
    let fresh_mode = if c.private { 0o600 } else { 0o644 };
    let create_mode = if c.existing.is_some() {
        0o600
    } else {
        fresh_mode
    };
    let file = match fs.create_exclusive(c.dir, c.temp_name, create_mode) {
        Ok(f) => f,
        Err(e) => return Ok(Err(io_err(Op::CreateTemp)(e))),
    };
    let mut temp = TempFile {
        fs,
        dir: c.dir,
        name: c.temp_name,
        file: Some(file),
        armed: true,
    };
    let file = temp.file.as_mut().expect("invariant: just created");

    if let Some(p) = c.existing
        && let Err(e) = fs.copy_perms(file, p)
    {
        return Ok(Err(io_err(Op::SetPermissions)(e)));
    }
    let meta_in_attr = match fs.set_meta_attr(file, &meta.encode()) {
        Ok(supported) => supported,
        Err(e) => return Ok(Err(io_err(Op::WriteMeta)(e))),
    };
    if let Err(e) = fs.write_all(file, bytes) {
        return Ok(Err(io_err(Op::Write)(e)));
    }
    let sync = c.durability == Durability::Full;
    if sync && !cfg!(feature = "mutation-skip-file-fsync") {
        let start = Instant::now();
        let result = fs.sync_file(file);
        fsync_time += start.elapsed();
        if let Err(e) = result {
            return Err(Poisoning(io_err(Op::SyncFile)(e)));
        }
    }
    drop(temp.file.take());
    if let Err(e) = fs.rename(c.dir, c.temp_name, &c.target.name) {
        return Ok(Err(io_err(Op::Rename)(e)));
    }
    temp.armed = false;
    if sync && !cfg!(feature = "mutation-skip-dir-fsync") {
        let start = Instant::now();
        let result = fs.sync_dir(c.dir);
        fsync_time += start.elapsed();
        if let Err(source) = result {
            return Err(Poisoning(Error::OutcomeUnknown {
                path: given.clone(),
                generation: meta.generation,
                source,
            }));
        }
    }
    if !meta_in_attr {
        // Best effort by design: if this fails, the next read finds the sidecar record
        // one generation behind and a mismatched checksum, and derives exactly this
        // generation (old + 1), so nothing is lost; it is only reported as external.
        let _ = write_sidecar_meta(c.target, meta, c.durability);
    }
    Ok(Ok(fsync_time))
}

/// The filesystem seam: the operations of a commit, nothing more. [`RealFs`] runs
/// them as system calls; the tests' power-loss simulator (`sim.rs`) keeps unsynced
/// writes and directory operations aside to enumerate what a crash could leave.
pub(crate) trait Fs {
    /// An open, writable file.
    type File;
    /// An open directory.
    type Dir;
    fn create_exclusive(&self, dir: &Self::Dir, name: &OsStr, mode: u32) -> io::Result<Self::File>;
    fn copy_perms(&self, file: &Self::File, perms: Perms) -> io::Result<()>;
    /// `Ok(false)`: the filesystem has no user extended attributes.
    fn set_meta_attr(&self, file: &Self::File, value: &[u8]) -> io::Result<bool>;
    fn write_all(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<()>;
    fn sync_file(&self, file: &Self::File) -> io::Result<()>;
    fn rename(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> io::Result<()>;
    fn sync_dir(&self, dir: &Self::Dir) -> io::Result<()>;
    fn unlink(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<()>;
}

/// The real filesystem.
pub(crate) struct RealFs;

impl Fs for RealFs {
    type File = File;
    type Dir = OwnedFd;

    fn create_exclusive(&self, dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<File> {
        sys::create_exclusive(dir, name, mode)
    }

    fn copy_perms(&self, file: &File, perms: Perms) -> io::Result<()> {
        copy_perms(file, perms)
    }

    fn set_meta_attr(&self, file: &File, value: &[u8]) -> io::Result<bool> {
        sys::set_meta_attr(file, value)
    }

    fn write_all(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        sys::fsync(file)
    }

    fn rename(&self, dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
        sys::rename_in(dir, from, to)
    }

    fn sync_dir(&self, dir: &OwnedFd) -> io::Result<()> {
        sys::fsync(dir)
    }

    fn unlink(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        sys::unlink_in(dir, name)
    }
}

fn copy_perms(file: &File, p: Perms) -> io::Result<()> {
    if sys::effective_uid() == 0 {
        sys::set_owner(file, p.uid, p.gid)?;
    } else if file.metadata()?.gid() != p.gid {
        // An ordinary user may keep the group if they belong to it; if not, the file
        // keeps our group, which never widens access (the mode below still applies).
        let _ = sys::set_owner(file, file.metadata()?.uid(), p.gid);
    }
    // After fchown, which clears set-id bits.
    sys::set_mode(file, p.mode)
}

/// Writes the metadata record into the sidecar directory (filesystems without user
/// extended attributes): its own temp file, fsync, rename, directory fsync.
fn write_sidecar_meta(target: &Target, meta: Meta, durability: Durability) -> io::Result<()> {
    let dir_path = target.sidecar();
    let dir = sys::open_dir(&dir_path)?;
    let temp_name = format!("meta.tmp-{}", sys::pid());
    let _ = sys::unlink_in(&dir, OsStr::new(&temp_name));
    let mut file = sys::create_exclusive(&dir, OsStr::new(&temp_name), 0o644)?;
    let result = (|| {
        file.write_all(&meta.encode())?;
        if durability == Durability::Full {
            sys::fsync(&file)?;
        }
        sys::rename_in(&dir, OsStr::new(&temp_name), OsStr::new("meta"))?;
        if durability == Durability::Full {
            sys::fsync(&dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = sys::unlink_in(&dir, OsStr::new(&temp_name));
    }
    result
}

/// Removes every leftover temporary file of `target` (call with the lock held: any
/// temp file of this state file then belongs to a writer that died).
pub(crate) fn sweep_temps(target: &Target, dir: &OwnedFd) -> Result<usize> {
    if cfg!(feature = "mutation-no-temp-cleanup") {
        return Ok(0);
    }
    let names =
        sys::dir_names(&target.dir).map_err(|e| Error::io(Op::RemoveTemp, &target.dir, e))?;
    let mut removed = 0;
    for name in names.into_iter().filter(|n| target.is_temp(n)) {
        match sys::unlink_in(dir, &name) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(Op::RemoveTemp, target.dir.join(&name), e)),
        }
    }
    Ok(removed)
}

/// Removes one temp file a dead holder named in its lock record, if it is still there.
pub(crate) fn remove_stale_temp(target: &Target, dir: &OwnedFd, name: &str) -> Result<()> {
    if cfg!(feature = "mutation-no-temp-cleanup") || !target.is_temp(OsStr::new(name)) {
        return Ok(());
    }
    match sys::unlink_in(dir, OsStr::new(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(Op::RemoveTemp, target.dir.join(name), e)),
    }
}

/// A temporary file that removes itself unless it was renamed into place: on every
/// error path and on panic.
struct TempFile<'a, F: Fs> {
    fs: &'a F,
    dir: &'a F::Dir,
    name: &'a OsStr,
    file: Option<F::File>,
    armed: bool,
}

impl<F: Fs> Drop for TempFile<'_, F> {
    fn drop(&mut self) {
        drop(self.file.take());
        if self.armed && !cfg!(feature = "mutation-no-temp-cleanup") {
            // If this fails, the next writer's sweep removes the file: it is named as
            // ours, and the lock record names it.
            let _ = self.fs.unlink(self.dir, self.name);
        }
    }
}
