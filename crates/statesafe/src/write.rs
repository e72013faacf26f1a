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
    let mut file = match File::open(&path) {
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
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(Op::Read, &target.given, e))?;
    let attr = sys::get_meta_attr(&file).map_err(|e| Error::io(Op::Read, &target.given, e))?;
    let (generation, external) = match attr {
        sys::MetaAttr::Present(raw) => match Meta::decode(&raw) {
            Some(m) if m.matches(&bytes) => (m.generation, false),
            // Edited in place by another program after our last commit.
            Some(m) => (m.generation + 1, true),
            None => (fallback_generation(target, lock, &bytes), true),
        },
        sys::MetaAttr::Absent | sys::MetaAttr::Unsupported => match read_sidecar_meta(target) {
            Some(m) if m.matches(&bytes) => (m.generation, false),
            _ => (fallback_generation(target, lock, &bytes), true),
        },
    };
    Ok(Some(Current {
        bytes,
        generation,
        external,
        perms: Perms {
            mode: stat.mode() & 0o7777,
            uid: stat.uid(),
            gid: stat.gid(),
        },
    }))
}

/// The generation of a file whose own metadata does not describe it: one more than the
/// highest generation we know of (sidecar record, newest backup, lock record hint).
fn fallback_generation(target: &Target, lock: &LockFile, _bytes: &[u8]) -> u64 {
    let sidecar = read_sidecar_meta(target).map_or(0, |m| m.generation);
    let backups = crate::backup::list(target)
        .ok()
        .and_then(|l| l.backups.first().map(|b| b.generation))
        .unwrap_or(0);
    sidecar.max(backups).max(lock.last_generation_hint()) + 1
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
pub(crate) struct Commit<'a> {
    pub target: &'a Target,
    pub dir: &'a OwnedFd,
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

/// Runs the write protocol. Errors come in two kinds: ordinary (`Ok(Err(..))`) and
/// poisoning (`Err(Poisoning)`).
pub(crate) fn commit(
    c: &Commit<'_>,
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
    let file = match sys::create_exclusive(c.dir, c.temp_name, create_mode) {
        Ok(f) => f,
        Err(e) => return Ok(Err(io_err(Op::CreateTemp)(e))),
    };
    let mut temp = TempFile {
        dir: c.dir,
        name: c.temp_name,
        file: Some(file),
        armed: true,
    };
    let file = temp.file.as_mut().expect("invariant: just created");

    if let Some(p) = c.existing {
        let result = copy_perms(file, p);
        if let Err(e) = result {
            return Ok(Err(io_err(Op::SetPermissions)(e)));
        }
    }
    let meta_in_attr = match sys::set_meta_attr(file, &meta.encode()) {
        Ok(supported) => supported,
        Err(e) => return Ok(Err(io_err(Op::WriteMeta)(e))),
    };
    if let Err(e) = file.write_all(bytes) {
        return Ok(Err(io_err(Op::Write)(e)));
    }
    let sync = c.durability == Durability::Full;
    if sync && !cfg!(feature = "mutation-skip-file-fsync") {
        let start = Instant::now();
        let result = sys::fsync(&*file);
        fsync_time += start.elapsed();
        if let Err(e) = result {
            return Err(Poisoning(io_err(Op::SyncFile)(e)));
        }
    }
    drop(temp.file.take());
    if let Err(e) = sys::rename_in(c.dir, c.temp_name, &c.target.name) {
        return Ok(Err(io_err(Op::Rename)(e)));
    }
    temp.armed = false;
    if sync && !cfg!(feature = "mutation-skip-dir-fsync") {
        let start = Instant::now();
        let result = sys::fsync(c.dir);
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
    let entries =
        std::fs::read_dir(&target.dir).map_err(|e| Error::io(Op::RemoveTemp, &target.dir, e))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if target.is_temp(&name) {
            match sys::unlink_in(dir, &name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(Op::RemoveTemp, target.dir.join(&name), e)),
            }
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
struct TempFile<'a> {
    dir: &'a OwnedFd,
    name: &'a OsStr,
    file: Option<File>,
    armed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        drop(self.file.take());
        if self.armed && !cfg!(feature = "mutation-no-temp-cleanup") {
            // If this fails, the next writer's sweep removes the file: it is named as
            // ours, and the lock record names it.
            let _ = sys::unlink_in(self.dir, self.name);
        }
    }
}
