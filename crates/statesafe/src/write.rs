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
use std::time::{Duration, Instant};

use crate::error::{Error, Op, Result};
use crate::format::Meta;
use crate::lock::LockFile;
use crate::paths::Target;
use crate::sidecar::Sidecar;
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
    /// `external`, and statesafe has never written this file: no metadata attribute,
    /// nothing in the sidecar (record, backup, history, lock hint). The first contact.
    pub adopted: bool,
    pub perms: Perms,
    /// Device and inode of the file read.
    pub id: (u64, u64),
    /// Its access ACL, read through the same descriptor when the caller asked for it
    /// (a writer keeps it on the next version); `None` otherwise, or when it has none.
    pub acl: Option<Vec<u8>>,
    /// Journal mode: the snapshot and journal this version was replayed from
    /// (`journal.rs`); `None` in the other formats.
    pub journal: Option<Box<crate::journal::Replayed>>,
    /// The file's own metadata record says journal mode wrote it as a snapshot (and
    /// describes these bytes): commits after it were in a journal.
    pub journal_follows: bool,
    /// The descriptor it was read through ([`read_current`]). A transaction keeps it
    /// until its rename: while it is open the inode read is not freed, so no other
    /// file can be given its number and pass [`unchanged_since_read`] as the file read
    /// (ext4 gives a freed number to the next new file).
    pub pin: Option<std::sync::Arc<File>>,
}

/// Reads the state file without any lock: one `open`, so data and metadata come from
/// the same inode even if a writer renames a new version in meanwhile.
///
/// The file is opened relative to its directory's descriptor, never following a link
/// (the path was resolved, under the symlink policy, when the store was opened) and
/// never blocking on a FIFO planted in its place.
pub(crate) fn read_current(
    target: &Target,
    dir: &OwnedFd,
    lock: &LockFile,
    want_acl: bool,
) -> Result<Option<Current>> {
    match open_current(target, dir)? {
        Some((file, stat)) => {
            let mut cur = read_opened(target, dir, lock, want_acl, &file, &stat)?;
            cur.pin = Some(std::sync::Arc::new(file));
            Ok(Some(cur))
        }
        None => Ok(None),
    }
}

/// The first step of [`read_current`]: the state file opened (as described there)
/// and its status; `None` when it does not exist.
pub(crate) fn open_current(
    target: &Target,
    dir: &OwnedFd,
) -> Result<Option<(File, std::fs::Metadata)>> {
    let file = match sys::open_at(dir, &target.name, sys::Access::Read, 0) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Error::BadPath {
                path: target.given.clone(),
                reason: format!(
                    "`{}` became a symbolic link after the store was opened; open it again",
                    target.real().display()
                ),
            });
        }
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
    Ok(Some((file, stat)))
}

/// The rest of [`read_current`], on a file [`open_current`] opened, read from its
/// current offset to the end.
pub(crate) fn read_opened(
    target: &Target,
    dir: &OwnedFd,
    lock: &LockFile,
    want_acl: bool,
    file: &File,
    stat: &std::fs::Metadata,
) -> Result<Current> {
    refuse_planted(target, dir, lock, stat)?;
    let mut bytes = Vec::with_capacity(stat.len() as usize + 1);
    // Through a plain `Read`: `File`'s own `read_to_end` asks the kernel for the size
    // and position again (statx, lseek) though we just did.
    struct Plain<'a>(&'a File);
    impl Read for Plain<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            (&*self.0).read(buf)
        }
    }
    Plain(file)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(Op::Read, &target.given, e))?;
    let attr = sys::get_meta_attr(file).map_err(|e| Error::io(Op::Read, &target.given, e))?;
    let sum = crate::format::checksum(&bytes);
    // The sidecar only when the file's own record does not settle the generation: the
    // common case (a record that matches) costs no more system calls.
    let sidecar = || Sidecar::open(target, dir, None).ok().flatten();
    let mut journal_follows =
        matches!(&attr, sys::MetaAttr::Present(raw) if journal_follows(raw, sum));
    let (generation, external, adopted) = match attr {
        sys::MetaAttr::Present(raw) => match classify(Some(&raw), sum) {
            Some((generation, external)) => (generation, external, false),
            None => adopted_generation(sidecar().as_ref(), lock, file, stat, sum)?,
        },
        sys::MetaAttr::Absent | sys::MetaAttr::Unsupported => {
            let sidecar = sidecar();
            let meta = match &sidecar {
                Some(s) => read_sidecar_meta(s)?,
                None => None,
            };
            match meta {
                Some(m) if m.xxh3 == sum => {
                    // Without user attributes the note is in the sidecar's record.
                    journal_follows = m.journal;
                    (m.generation, false, false)
                }
                _ => adopted_generation(sidecar.as_ref(), lock, file, stat, sum)?,
            }
        }
    };
    let acl = if want_acl {
        sys::access_acl(file).map_err(|e| Error::io(Op::SetPermissions, &target.given, e))?
    } else {
        None
    };
    Ok(Current {
        bytes,
        checksum: sum,
        generation,
        external,
        adopted,
        perms: Perms {
            mode: stat.mode() & 0o7777,
            uid: stat.uid(),
            gid: stat.gid(),
        },
        id: (stat.dev(), stat.ino()),
        acl,
        journal: None,
        journal_follows,
        pin: None,
    })
}

/// Refuses the state file `stat` describes when another user may have planted it in
/// place of a deleted state: it lies in a sticky directory others than its owner may
/// write (`/tmp`, a team's `1775` drop folder: [`sys::sticky_shared`]), its sidecar
/// shows committed generations, and its owner is none of those who could have put it
/// there as the state: the caller, the directory's owner (not root: anyone may move a
/// root-owned file from a directory of theirs, `rename` keeps the owner), or a writer
/// of the state as the sidecar admits them (its owner, root included; a member of its
/// group, the file's group, where the group may write it, membership not taken from a
/// group the file inherited from a set-group-ID directory: [`sys::group_vouches_for`];
/// anyone, where others may). In such a directory only a file's owner (or the
/// directory's owner, or root) may delete or rename over it, so the state's own file
/// never changes hands; a file of someone else's at its name was made after it was
/// deleted (review20, finding 11; review21rec, findings 1, 2 and 6). Its metadata
/// record proves nothing: its owner may write any user attribute on it.
///
/// Root, which writes there only its own files or the directory owner's
/// ([`crate::lock::LockFile`]'s `check_not_planted`, the kernel's `protected_regular`
/// rule), reads no other file there either, sidecar or not: a lock-free read served
/// what the writer refused (review21node, finding 11). The common case, the caller's
/// own file, costs one `geteuid`.
pub(crate) fn refuse_planted(
    target: &Target,
    dir: &OwnedFd,
    lock: &LockFile,
    stat: &std::fs::Metadata,
) -> Result<()> {
    let owner = stat.uid();
    let euid = sys::effective_uid();
    if owner == euid {
        return Ok(());
    }
    let folder = sys::stat_fd(dir).map_err(|e| Error::io(Op::Read, &target.dir, e))?;
    if !sys::sticky_shared(folder.mode) || (owner == folder.uid && owner != 0) {
        return Ok(());
    }
    if euid == 0 && owner != folder.uid {
        return Err(Error::Unsafe {
            path: target.given.clone(),
            reason: format!(
                "it belongs to uid {owner} and lies in the sticky directory `{}`, which others may write, where root reads and writes only its own files or the directory owner's (the kernel's protected_regular rule): another user may have planted it, so it was neither read nor written; read it as its owner, or keep the state in a directory other users cannot write",
                target.dir.display(),
            ),
            what: crate::error::Unsafety::Planted,
        });
    }
    // A sidecar that cannot be opened or is refused says nothing about who may write
    // the state: its error is the answer (a planted file narrower than a shared
    // sidecar made a co-writer's open refuse the sidecar, which let the file through).
    let Some(sidecar) = Sidecar::open(target, dir, None)? else {
        return Ok(());
    };
    let side = sys::stat_fd(sidecar.root().fd())
        .map_err(|e| Error::io(Op::Read, sidecar.root().path(), e))?;
    let writer = owner == side.uid
        || side.mode & 0o002 != 0
        || side.mode & 0o020 != 0
            && stat.gid() == side.gid
            && sys::group_vouches_for(owner, stat.gid(), &folder);
    if writer {
        return Ok(());
    }
    let known = highest_known_generation(Some(&sidecar), lock)?;
    if known == 0 {
        return Ok(());
    }
    Err(Error::Unsafe {
        path: target.given.clone(),
        reason: format!(
            "it belongs to uid {owner}, who may not write this state, and lies in the sticky directory `{}`, which others may write, while its sidecar `{}` (uid {}) shows {known} committed generations: the state file was deleted and another user may have planted this one in its place, so it was neither read nor written; have its owner, the directory's owner or root remove it, then put the state back with `statesafe recover {}`; better, keep the state in a directory other users cannot write",
            target.dir.display(),
            sidecar.root().path().display(),
            side.uid,
            crate::error::command_word(&target.given),
        ),
        what: crate::error::Unsafety::Planted,
    })
}

/// Whether the file's own metadata record (`attr`, the attribute) describes bytes with checksum `sum`
/// as a journal-mode snapshot (`Meta::journal`).
pub(crate) fn journal_follows(attr: &[u8], sum: u64) -> bool {
    Meta::decode(attr).is_some_and(|m| m.journal && m.xxh3 == sum)
}

/// Whether the state file is still the one a transaction read (`expected`: its device
/// and inode, `None` when it did not exist). Checked right before the rename, with the
/// lock checked too: see "The lock cannot split" in `docs/design.md`. Sound only while
/// the file read is held open ([`Current::pin`]): a freed inode's number is given to
/// new files.
pub(crate) fn unchanged_since_read(
    target: &Target,
    dir: &OwnedFd,
    expected: Option<(u64, u64)>,
) -> io::Result<bool> {
    match (sys::stat_at(dir, &target.name), expected) {
        (Ok(st), Some(id)) => Ok((st.dev, st.ino) == id),
        (Ok(_), None) => Ok(false),
        (Err(e), expected) if e.kind() == io::ErrorKind::NotFound => Ok(expected.is_none()),
        (Err(e), _) => Err(e),
    }
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

/// The generation of the open `file` (checksum `sum`), whose own metadata does not
/// describe it: one more than the highest generation known (sidecar record, backups,
/// history, lock record hint), and flagged external.
///
/// A writer adopting this very version meanwhile stamps it with its generation G and
/// links it as backup G before its rename, and records G + 1 after. Whatever of that
/// the count saw, the stamp or the backup was there before it; so they are looked
/// for after the count, and a version is never labelled with the generation of the
/// commit that replaced it (a compare-and-swap with that label would overwrite it).
///
/// Returns `(generation, external, adopted)`: `adopted` when nothing in the sidecar
/// knows any generation (statesafe's first contact with the file).
fn adopted_generation(
    sidecar: Option<&Sidecar>,
    lock: &LockFile,
    file: &File,
    stat: &std::fs::Metadata,
    sum: u64,
) -> Result<(u64, bool, bool)> {
    let known = highest_known_generation(sidecar, lock)?;
    if let Ok(sys::MetaAttr::Present(raw)) = sys::get_meta_attr(file)
        && let Some((generation, false)) = classify(Some(&raw), sum)
    {
        return Ok((generation, false, false));
    }
    if let Some(generation) = crate::backup::generation_of_inode(sidecar, stat.dev(), stat.ino()) {
        return Ok((generation, true, false));
    }
    Ok((known + 1, true, known == 0))
}

/// The highest generation this state file is known to have had, from everything in
/// its sidecar: the metadata record, the newest backup, the newest history entry and
/// the lock record (0 without a sidecar), and, when none of them shows one, the
/// `committed` record (`sidecar::COMMITTED`: the generation reached when it was
/// written, which is all a reader who may not read the lock file may find of a
/// state deleted with no backups and no history). A file deleted and created again continues
/// after it, so generations never repeat (a stale compare-and-swap cannot succeed, and
/// a new version can never collide with an old backup).
///
/// # Errors
/// An I/O error reading any of them: a count that skipped one could label a new
/// version with a generation already used, so it is never guessed.
pub(crate) fn highest_known_generation(sidecar: Option<&Sidecar>, lock: &LockFile) -> Result<u64> {
    let Some(sidecar) = sidecar else {
        return Ok(0);
    };
    let meta = read_sidecar_meta(sidecar)?.map_or(0, |m| m.generation);
    let backups = crate::backup::list(Some(sidecar))?
        .backups
        .first()
        .map_or(0, |b| b.generation);
    let history = crate::history::newest_generation(sidecar)?.unwrap_or(0);
    let known = meta
        .max(backups)
        .max(history)
        .max(lock.last_generation_hint(sidecar)?);
    if known > 0 {
        return Ok(known);
    }
    read_committed(sidecar)
}

/// The generation the sidecar's `committed` record names (`sidecar::COMMITTED`; 0 when
/// there is none). One that does not read as a generation still proves a commit: 1.
fn read_committed(sidecar: &Sidecar) -> Result<u64> {
    let raw = sidecar
        .root()
        .read(OsStr::new(crate::sidecar::COMMITTED), Op::Read)?;
    Ok(raw.map_or(0, |raw| {
        std::str::from_utf8(&raw)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|g| *g <= crate::format::MAX_GENERATION)
            .unwrap_or(1)
            .max(1)
    }))
}

/// Records `meta` on the current file (best effort: where it cannot be written, a
/// backup of this version is refused by verification later, never trusted blindly).
/// Returns the file stamped, so that a commit that then fails can take the stamp back.
pub(crate) fn stamp_meta(target: &Target, dir: &OwnedFd, meta: Meta) -> Option<File> {
    let file = sys::open_at(dir, &target.name, sys::Access::Read, 0).ok()?;
    if !sys::stat_fd(&file).is_ok_and(|st| st.kind == sys::Kind::File) {
        return None;
    }
    sys::set_meta_attr(&file, &meta.encode())
        .ok()
        .filter(|stamped| *stamped)
        .map(|_| file)
}

/// The metadata record's name in the sidecar.
const META_FILE: &str = "meta";

/// Replaces the sidecar's metadata record (where the file's own attribute cannot be
/// written): `Ok(false)` when it could not be written; `Err` when its `fsync` failed.
pub(crate) fn write_sidecar_meta(
    sidecar: &Sidecar,
    meta: Meta,
    durability: Durability,
) -> std::result::Result<bool, io::Error> {
    match sidecar
        .root()
        .write_small_file(META_FILE, &meta.encode(), durability == Durability::Full)
    {
        Ok(written) => Ok(written.is_ok()),
        Err(failed) => Err(failed.0),
    }
}

/// The sidecar's metadata record; `Ok(None)` when there is none or it does not decode.
fn read_sidecar_meta(sidecar: &Sidecar) -> Result<Option<Meta>> {
    let raw = sidecar.root().read(OsStr::new(META_FILE), Op::Read)?;
    Ok(raw.and_then(|raw| Meta::decode(&raw)))
}

/// The POSIX access ACL the new version gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acl<'a> {
    /// Whatever the directory's default ACL gives a new file (a new, shared file).
    Inherit,
    /// None at all: a private new file, or a replaced file that had none (a
    /// directory's default ACL must not widen what the file allowed).
    Nothing,
    /// The replaced file's own, copied exactly.
    Copy(&'a [u8]),
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
    /// The access ACL to give it (set before the mode, which then applies exactly).
    pub acl: Acl<'a>,
    /// The sidecar, for the metadata record on filesystems without user attributes.
    pub sidecar: Option<&'a Sidecar>,
    /// Called right before the rename: an error abandons the commit (the writers' lock
    /// was lost, see `lock.rs`), leaving the file untouched.
    pub before_rename: &'a dyn Fn() -> Result<()>,
}

/// A failure that must poison the store: an `fsync` reported an error, so the kernel
/// may have dropped dirty pages and a retry could "succeed" with data lost.
pub(crate) struct Poisoning(pub Error);

/// A commit that is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Time spent in `fsync`.
    pub fsync: Duration,
    /// Where the metadata record went.
    pub meta: MetaRecord,
}

/// Where a commit's metadata record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaRecord {
    /// On the file itself, published with it by the same `fsync` and `rename`.
    Attribute,
    /// Into the sidecar's `meta` (no user extended attributes here).
    Sidecar,
    /// Nowhere: writing the sidecar's `meta` failed after the data commit. Readers
    /// then find the previous record, so the commit must look like one cut short by
    /// a crash at that point (see `Store::write_version`).
    Missing,
}

/// Runs the write protocol through the filesystem seam `fs`. Errors come in two
/// kinds: ordinary (`Ok(Err(..))`) and poisoning (`Err(Poisoning)`).
pub(crate) fn commit<F: Fs>(
    fs: &F,
    c: &Commit<'_, F::Dir>,
    bytes: &[u8],
    meta: Meta,
) -> Result<Result<Committed>, Poisoning> {
    commit_content(fs, c, Content::Bytes(bytes), meta)
}

/// What a commit writes into the temporary file (step 4).
#[derive(Clone, Copy)]
pub(crate) enum Content<'a> {
    /// These bytes.
    Bytes(&'a [u8]),
    /// Whatever this writes, straight into the file (`stream.rs`: a large document
    /// serialized without its text in memory). Its error abandons the commit.
    Stream(&'a dyn Fn(&mut dyn Write) -> io::Result<()>),
}

/// [`commit`] of `content`.
pub(crate) fn commit_content<F: Fs>(
    fs: &F,
    c: &Commit<'_, F::Dir>,
    content: Content<'_>,
    meta: Meta,
) -> Result<Result<Committed>, Poisoning> {
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

    if let Err(e) = fs.set_acl(file, c.acl) {
        return Ok(Err(io_err(Op::SetPermissions)(e)));
    }
    if let Some(p) = c.existing
        && let Err(e) = fs.copy_perms(file, p)
    {
        let (op, e) = perms_failure(e);
        return Ok(Err(io_err(op)(e)));
    }
    let meta_in_attr = match fs.set_meta_attr(file, &meta.encode()) {
        Ok(supported) => supported,
        Err(e) => return Ok(Err(io_err(Op::WriteMeta)(e))),
    };
    let written = match content {
        Content::Bytes(bytes) => fs.write_all(file, bytes),
        Content::Stream(write) => fs.write_stream(file, write),
    };
    if let Err(e) = written {
        return Ok(Err(io_err(Op::Write)(e)));
    }
    let sync = c.durability == Durability::Full;
    if sync && !cfg!(statesafe_mutation = "skip-file-fsync") {
        let start = Instant::now();
        let result = fs.sync_file(file);
        fsync_time += start.elapsed();
        if let Err(e) = result {
            return Err(Poisoning(io_err(Op::SyncFile)(e)));
        }
    }
    drop(temp.file.take());
    if let Err(e) = (c.before_rename)() {
        return Ok(Err(e));
    }
    if let Err(e) = fs.rename(c.dir, c.temp_name, &c.target.name) {
        return Ok(Err(io_err(Op::Rename)(e)));
    }
    temp.armed = false;
    if sync && !cfg!(statesafe_mutation = "skip-dir-fsync") {
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
    let record = if meta_in_attr {
        MetaRecord::Attribute
    } else {
        // If this fails, the next read finds the sidecar record one generation behind
        // and a mismatched checksum, exactly as after a crash right here; the caller
        // then leaves everything else as that crash would (see `MetaRecord::Missing`).
        // A failed fsync here is not retried either: the record counts as missing.
        let written = c.sidecar.map(|sidecar| {
            sidecar.root().write_small_file(
                META_FILE,
                &meta.encode(),
                c.durability == Durability::Full,
            )
        });
        match written {
            Some(Ok(Ok(()))) => MetaRecord::Sidecar,
            _ => MetaRecord::Missing,
        }
    };
    Ok(Ok(Committed {
        fsync: fsync_time,
        meta: record,
    }))
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
    /// Gives the new file the access ACL `acl` calls for.
    fn set_acl(&self, file: &Self::File, acl: Acl<'_>) -> io::Result<()>;
    /// `Ok(false)`: the filesystem has no user extended attributes.
    fn set_meta_attr(&self, file: &Self::File, value: &[u8]) -> io::Result<bool>;
    fn write_all(&self, file: &mut Self::File, bytes: &[u8]) -> io::Result<()>;
    /// Runs `write` on a writer into `file`.
    fn write_stream(
        &self,
        file: &mut Self::File,
        write: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()>;
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

    fn set_acl(&self, file: &File, acl: Acl<'_>) -> io::Result<()> {
        match acl {
            Acl::Inherit => Ok(()),
            Acl::Nothing => sys::set_access_acl(file, None),
            Acl::Copy(acl) => sys::set_access_acl(file, Some(acl)),
        }
    }

    fn set_meta_attr(&self, file: &File, value: &[u8]) -> io::Result<bool> {
        sys::set_meta_attr(file, value)
    }

    fn write_all(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn write_stream(
        &self,
        file: &mut File,
        write: &dyn Fn(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        write(file)
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
        // An ordinary user may keep the group only if they belong to it; if not, the
        // new version would belong to another group than the file it replaces, which
        // nobody asked for: refused (EPERM, reported as `Op::KeepGroup`).
        sys::set_owner(file, file.metadata()?.uid(), p.gid).map_err(KeepGroup)?;
    }
    // After fchown, which clears set-id bits.
    sys::set_mode(file, p.mode)
}

/// Marks the failure to keep the file's group, so the commit reports it as such.
#[derive(Debug)]
struct KeepGroup(io::Error);

impl std::fmt::Display for KeepGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for KeepGroup {}

impl From<KeepGroup> for io::Error {
    fn from(e: KeepGroup) -> io::Error {
        io::Error::new(e.0.kind(), e)
    }
}

/// The operation a failure to copy permissions is reported as, and its OS error.
fn perms_failure(e: io::Error) -> (Op, io::Error) {
    if !e.get_ref().is_some_and(|inner| inner.is::<KeepGroup>()) {
        return (Op::SetPermissions, e);
    }
    match e.into_inner().map(|inner| inner.downcast::<KeepGroup>()) {
        Some(Ok(keep)) => (Op::KeepGroup, keep.0),
        _ => unreachable!("invariant: checked to hold a KeepGroup above"),
    }
}

/// Removes every leftover temporary file of `target` (call with the lock held: any
/// temp file of this state file then belongs to a writer that died). Only regular
/// files whose name is exactly of the generated form and that belong to the state
/// file's owner or to us are removed; anything else is left alone (and noted in
/// `tracing`), and never stops the write.
pub(crate) fn sweep_temps(target: &Target, dir: &OwnedFd) -> Result<usize> {
    if cfg!(statesafe_mutation = "no-temp-cleanup") {
        return Ok(0);
    }
    let names = sys::names_in(dir).map_err(|e| Error::io(Op::RemoveTemp, &target.dir, e))?;
    let owner = sys::stat_at(dir, &target.name).ok().map(|st| st.uid);
    let mut removed = 0;
    for name in names.into_iter().filter(|n| target.is_temp(n)) {
        if remove_temp(target, dir, &name, owner) {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes one temp file a dead holder named in its lock record, if it is still there
/// and is one of ours (the name is read from a file, so it is used only when it is a
/// single component of exactly the generated form).
pub(crate) fn remove_stale_temp(target: &Target, dir: &OwnedFd, name: &str) {
    if cfg!(statesafe_mutation = "no-temp-cleanup") || !target.is_temp(OsStr::new(name)) {
        return;
    }
    let owner = sys::stat_at(dir, &target.name).ok().map(|st| st.uid);
    remove_temp(target, dir, OsStr::new(name), owner);
}

/// Removes temp file `name` if it is a regular file of the state file's owner or ours.
fn remove_temp(target: &Target, dir: &OwnedFd, name: &OsStr, owner: Option<u32>) -> bool {
    let path = || target.dir.join(name);
    let st = match sys::stat_at(dir, name) {
        Ok(st) => st,
        Err(_) => return false,
    };
    let ours = st.uid == sys::effective_uid() || Some(st.uid) == owner;
    if st.kind != sys::Kind::File || !ours {
        tracing::info!(target: "statesafe", "left `{}` alone: it is named like a temporary file of this state file, but it is {} of uid {}", path().display(), st.kind.describe(), st.uid);
        return false;
    }
    match sys::unlink_in(dir, name) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(target: "statesafe", "could not remove the leftover temporary file `{}`: {e}", path().display());
            false
        }
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
        if self.armed && !cfg!(statesafe_mutation = "no-temp-cleanup") {
            // If this fails, the next writer's sweep removes the file: it is named as
            // ours, and the lock record names it.
            let _ = self.fs.unlink(self.dir, self.name);
        }
    }
}
