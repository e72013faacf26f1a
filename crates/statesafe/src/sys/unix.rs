//! Unix system calls, through `rustix` (no `unsafe` here but in [`try_lock_range`],
//! the one call `rustix` does not wrap).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

/// Name of the extended attribute that carries a plain file's generation and checksum.
pub(crate) const META_XATTR: &str = "user.statesafe";

/// Opens a directory for `fsync` and for `*at` calls.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens a directory for `*at` calls: for reading where we may (then it can also be
/// synced and listed: `true`), else with `O_PATH` (a directory we may only search).
pub(crate) fn open_dir_or_path(path: &Path) -> io::Result<(OwnedFd, bool)> {
    match open_dir(path) {
        Ok(fd) => Ok((fd, true)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok((
            rustix::fs::open(
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
            false,
        )),
        Err(e) => Err(e),
    }
}

/// Opens the directory at `path`, an absolute path that names no symbolic link (one
/// [`crate::paths::Target::resolve`] made canonical, after judging every link on the
/// way), as [`open_dir_or_path`] does, but one component at a time from `/` with
/// `O_NOFOLLOW`: the directory opened is reached through real directories only, so a
/// component swapped for a link after the links were judged (a user who owns a
/// directory on the way exchanges it with a link to another user's directory: red22
/// finding 1) is never followed. A link met on the way fails the open (`ELOOP`, or
/// `ENOTDIR` for an `O_PATH` open, as for a component that is a file): the caller
/// resolves the path again, judging the link.
pub(crate) fn open_dir_nofollow(path: &Path) -> io::Result<(OwnedFd, bool)> {
    use std::path::Component;
    let walk = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not an absolute canonical path", path.display()),
                ));
            }
        }
    }
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not an absolute canonical path", path.display()),
        ));
    }
    let Some((last, parents)) = names.split_last() else {
        return open_dir_or_path(path);
    };
    let mut dir = rustix::fs::open("/", walk, Mode::empty())?;
    for name in parents {
        dir = rustix::fs::openat(&dir, *name, walk, Mode::empty())?;
    }
    let read = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(&dir, *last, read, Mode::empty()) {
        Ok(fd) => Ok((fd, true)),
        Err(rustix::io::Errno::ACCESS) => {
            Ok((rustix::fs::openat(&dir, *last, walk, Mode::empty())?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates a new file `name` in `dir`: exclusive, never following a symlink, closed on exec.
pub(crate) fn create_exclusive(dir: impl AsFd, name: &OsStr, mode: u32) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    Ok(File::from(fd))
}

/// Sets the permission bits exactly (the umask does not apply to `fchmod`).
pub(crate) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(
        file,
        Mode::from_raw_mode(mode & 0o7777),
    )?)
}

/// Gives `file` the owner and group `uid`/`gid` where they differ from its own.
pub(crate) fn set_owner(file: &File, uid: u32, gid: u32) -> io::Result<()> {
    let meta = file.metadata()?;
    let owner = (meta.uid() != uid).then(|| rustix::fs::Uid::from_raw(uid));
    let group = (meta.gid() != gid).then(|| rustix::fs::Gid::from_raw(gid));
    if owner.is_none() && group.is_none() {
        return Ok(());
    }
    Ok(rustix::fs::fchown(file, owner, group)?)
}

/// `fsync` of a file or directory descriptor.
pub(crate) fn fsync(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// `fdatasync`: the file's data, and only the inode fields needed to read it back.
pub(crate) fn fdatasync(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fdatasync(fd)?)
}

/// Renames `from` to `to`, both in `dir`, replacing `to` atomically.
pub(crate) fn rename_in(dir: impl AsFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let dir = dir.as_fd();
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

/// Removes `name` from `dir` (not a directory).
pub(crate) fn unlink_in(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Sets the metadata attribute; `Ok(false)` when the filesystem has no user attributes.
pub(crate) fn set_meta_attr(file: &File, value: &[u8]) -> io::Result<bool> {
    match rustix::fs::fsetxattr(file, META_XATTR, value, XattrFlags::empty()) {
        Ok(()) => Ok(true),
        Err(e) if is_unsupported(e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes the metadata attribute (absent already, or unsupported: nothing to do).
pub(crate) fn remove_meta_attr(file: &File) -> io::Result<()> {
    match rustix::fs::fremovexattr(file, META_XATTR) {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) if is_unsupported(e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The extended attribute that holds a file's POSIX access ACL.
const ACL_XATTR: &str = "system.posix_acl_access";

/// The access ACL of the open file `file`, as the kernel stores it (`None`: it has
/// none, or the filesystem keeps no ACLs). Read through the descriptor, never a path:
/// a name swapped for a symbolic link cannot make it read another file's ACL.
pub(crate) fn access_acl(file: &File) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::fgetxattr(file, ACL_XATTR, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) => return Ok(None),
            Err(e) if is_unsupported(e) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 64 * 1024 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Gives `file` exactly the access ACL `acl`; `None` removes any it has (one a
/// directory's default ACL gave it when it was created).
pub(crate) fn set_access_acl(file: &File, acl: Option<&[u8]>) -> io::Result<()> {
    let result = match acl {
        Some(acl) => rustix::fs::fsetxattr(file, ACL_XATTR, acl, XattrFlags::empty()),
        None => rustix::fs::fremovexattr(file, ACL_XATTR),
    };
    match result {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) if acl.is_none() && is_unsupported(e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What reading the metadata attribute found.
pub(crate) enum MetaAttr {
    /// The attribute's bytes.
    Present(Vec<u8>),
    /// The file has no such attribute.
    Absent,
    /// The filesystem does not support user attributes.
    Unsupported,
}

/// Reads the metadata attribute of an open file.
pub(crate) fn get_meta_attr(file: &File) -> io::Result<MetaAttr> {
    let mut buf = vec![0u8; 512];
    loop {
        match rustix::fs::fgetxattr(file, META_XATTR, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(MetaAttr::Present(buf));
            }
            Err(Errno::NODATA) => return Ok(MetaAttr::Absent),
            Err(e) if is_unsupported(e) => return Ok(MetaAttr::Unsupported),
            Err(Errno::RANGE) if buf.len() < 64 * 1024 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// The effective user id.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective group id.
pub(crate) fn effective_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// The process id.
pub(crate) fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// The host name.
pub(crate) fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The user name of `uid` from the password database, when it has one.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read("/etc/passwd").ok()?;
    passwd.split(|b| *b == b'\n').find_map(|line| {
        let mut fields = line.split(|b| *b == b':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id = fields.next()?;
        (OsStr::from_bytes(id).to_str()?.parse::<u32>().ok()? == uid)
            .then(|| String::from_utf8_lossy(name).into_owned())
    })
}

/// Whether a directory of mode `mode` is sticky and others than its owner may create
/// entries there (its group or everyone: `/tmp`'s `1777`, a team's `1775` or `3770`).
/// There only an entry's owner, the directory's owner or root may rename or remove it,
/// and anyone who may write the directory may create an entry at a free name: the
/// directories where statesafe holds an entry's owner to account (`fs.protected_regular
/// = 2`'s reach).
pub(crate) fn sticky_shared(mode: u32) -> bool {
    mode & 0o1000 != 0 && mode & 0o022 != 0
}

/// Whether an entry's group `gid` says that its owner `owner` is a member of that group,
/// for an entry in the directory `dir`. It does unless the directory is set-group-ID,
/// the entry has the directory's group and others may create entries there: then every
/// new entry takes that group whoever makes it, and only the owner's real membership
/// (the group database: their primary group, `getgrouplist`) counts (review21rec,
/// findings 1 and 7).
pub(crate) fn group_vouches_for(owner: u32, gid: u32, dir: &Stat) -> bool {
    if dir.mode & 0o2000 == 0 || gid != dir.gid || dir.mode & 0o002 == 0 {
        return true;
    }
    owner == 0 || user_in_group(owner, gid)
}

/// Whether the user `uid` is a member of the group `gid` as `/etc/passwd` (their
/// primary group) and `/etc/group` (its member list) say; `false` for a user they do
/// not know. Read like [`user_name`], without `unsafe` and without the name service
/// switch: a user known only to a directory service (LDAP) counts as no member, which
/// refuses rather than trusts.
pub(crate) fn user_in_group(uid: u32, gid: u32) -> bool {
    let Ok(passwd) = std::fs::read("/etc/passwd") else {
        return false;
    };
    let Some((name, primary)) = passwd.split(|b| *b == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.split(|b| *b == b':').collect();
        let id = OsStr::from_bytes(f.get(2)?).to_str()?.parse::<u32>().ok()?;
        let group = OsStr::from_bytes(f.get(3)?).to_str()?.parse::<u32>().ok()?;
        (id == uid).then(|| (f[0].to_vec(), group))
    }) else {
        return false;
    };
    if primary == gid {
        return true;
    }
    let Ok(groups) = std::fs::read("/etc/group") else {
        return false;
    };
    groups.split(|b| *b == b'\n').any(|line| {
        let f: Vec<&[u8]> = line.split(|b| *b == b':').collect();
        f.len() >= 4
            && OsStr::from_bytes(f[2])
                .to_str()
                .and_then(|g| g.parse::<u32>().ok())
                == Some(gid)
            && f[3].split(|b| *b == b',').any(|m| m == name.as_slice())
    })
}

/// The real user id.
pub(crate) fn real_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The arguments of this process, for lock holder records: std's copy of `argv`
/// (no system calls), or `/proc/self/cmdline` where std has none (a library loaded
/// into a host that std did not start).
pub(crate) fn command_args() -> Vec<String> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !args.is_empty() {
        return args;
    }
    std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The filesystem type of the filesystem holding `fd`, as a name when it is one we
/// treat specially (network and user-space filesystems): [`special_kind`].
pub(crate) fn special_filesystem(fd: impl AsFd) -> Option<&'static str> {
    let stat = rustix::fs::fstatfs(fd).ok()?;
    // The magic numbers are 32-bit; `f_type` is a signed word (32 bits on 32-bit
    // systems, where 0xFF534D42 reads negative).
    special_kind(stat.f_type as u32)
}

/// The name of the special filesystem whose `statfs` magic number is `magic` (from
/// `linux/magic.h`, and the projects' own headers for those outside the kernel).
///
/// Network and cluster filesystems, whose locking is their server's or their lock
/// manager's, and whose `flock` (the writers' lock) may not be what it is locally:
/// - in the lock space of byte-range locks (a slot's lock another store holds would
///   block it, `journal/durable.rs`): NFS, which emulates `flock` with a byte-range
///   lock of the whole file, CIFS/SMB, FUSE and 9p (their daemon's choice); Lustre
///   mounted with `-o flock` (the default since 2.13: `ll_file_flock` sends `flock`
///   to the lock server as a byte-range lock of the whole file, beside `fcntl`'s);
///   AFS (kAFS sends `flock` to the server as a whole-file lock, and with
///   `-o flock=strict` or `write` byte-range locks too; OpenAFS's magic is the other);
/// - local to one node while the other kind spans the cluster, so that a slot (or
///   the writers' lock) two nodes both take is taken twice: GPFS (its `flock` is
///   node-local, its `fcntl` locks cluster-wide), OCFS2 on its own `o2cb` stack
///   (cluster-wide `flock`, node-local byte-range locks), Lustre mounted with
///   `localflock`, GFS2 and OCFS2 mounted with `localflocks`, BeeGFS (global or
///   local by its `tuneUseGlobalFileLocks`);
/// - CephFS keeps the two in separate cluster-wide spaces (as GFS2 and OCFS2 on a
///   DLM do), but its mount options vary as the others' do: listed so that a store
///   there claims no slot and says where it is.
///
/// On all of them no lock-file slot is claimed (a store's flushes are then made
/// with the writers' lock held, which costs concurrency only) and
/// `Event::SpecialFilesystem` says the guarantees depend on the cluster.
fn special_kind(magic: u32) -> Option<&'static str> {
    match magic {
        0x6969 => Some("nfs"),
        0xFF534D42 => Some("cifs"),
        0xFE534D42 => Some("smb2"),
        0x65735546 => Some("fuse"),
        0x01021997 => Some("9p"),
        0x0BD00BD0 => Some("lustre"),
        0x47504653 => Some("gpfs"),
        0x6B414653 | 0x5346414F => Some("afs"),
        0x00C36400 => Some("ceph"),
        0x01161970 => Some("gfs2"),
        0x7461636F => Some("ocfs2"),
        0x19830326 => Some("beegfs"),
        _ => None,
    }
}

/// Makes `to` in `to_dir` a new hard link to `from` in `from_dir` (no copy).
pub(crate) fn link_at(
    from_dir: impl AsFd,
    from: &OsStr,
    to_dir: impl AsFd,
    to: &OsStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        from_dir,
        from,
        to_dir,
        to,
        AtFlags::empty(),
    )?)
}

/// Bytes available to unprivileged users on the filesystem holding `fd`.
pub(crate) fn free_bytes(fd: impl AsFd) -> io::Result<u64> {
    let stat = rustix::fs::fstatvfs(fd)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// An `io::Error` for "no space left on device", for checks made before writing.
pub(crate) fn no_space_error() -> io::Error {
    io::Error::from_raw_os_error(Errno::NOSPC.raw_os_error())
}

/// This boot of the machine, as the kernel names it (`/proc/sys/kernel/random/boot_id`,
/// a random UUID drawn at each boot), read once; `None` where there is no such name.
/// A record written in another boot may have lost its last writes to a power loss.
pub(crate) fn boot_id() -> Option<&'static str> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_string())
    })
    .as_deref()
}

/// Takes, without waiting, an exclusive lock of the `len` bytes at `at` in `file`,
/// owned by its open file description (Linux's `F_OFD_SETLK`: kept until the last
/// descriptor of that description is closed, whatever other descriptors of the file
/// the process opens and closes, and never conflicting with the description itself).
/// `Ok(false)`: another description holds a lock over some of those bytes. `Err`:
/// the system or filesystem has no such locks (callers then do without).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn try_lock_range(file: &File, at: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let lock = ofd_range(at, len, libc::F_WRLCK)?;
    // SAFETY: `file` is an open descriptor for the duration of the call, and `lock`
    // a valid `flock` the kernel only reads for `F_OFD_SETLK`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &raw const lock) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match Errno::from_io_error(&e) {
        Some(Errno::AGAIN | Errno::ACCESS) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file description holds a lock (`F_OFD_GETLK`) over some of
/// the `len` bytes at `at` in `file` (`len` 0: to the end) that a read lock of `file`'s
/// own description would conflict with: asked, never taken, so that nothing is
/// released by the asking (a POSIX process-associated test lock, taken and unlocked in
/// the holder's own process, released the holder's lock: red22b finding 4).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn range_locked_by_other(file: &File, at: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut lock = ofd_range(at, len, libc::F_RDLCK)?;
    // SAFETY: `file` is an open descriptor for the duration of the call, and `lock` a
    // valid `flock` the kernel reads and writes back for `F_OFD_GETLK`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &raw mut lock) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i32::from(lock.l_type) != libc::F_UNLCK)
}

/// The `flock` of an open file description lock of type `kind` (`F_RDLCK`, `F_WRLCK`)
/// over the `len` bytes at `at` (`len` 0: to the end).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn ofd_range(at: u64, len: u64, kind: libc::c_int) -> io::Result<libc::flock> {
    let (Ok(start), Ok(len)) = (libc::off_t::try_from(at), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: `flock` is a plain C struct, for which all zeros is a valid value
    // (`l_pid` must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = start;
    lock.l_len = len;
    Ok(lock)
}

/// [`range_locked_by_other`] where open file description locks are not known.
#[cfg(not(target_os = "linux"))]
pub(crate) fn range_locked_by_other(_file: &File, _at: u64, _len: u64) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// [`try_lock_range`] where open file description locks are not known: none.
#[cfg(not(target_os = "linux"))]
pub(crate) fn try_lock_range(_file: &File, _at: u64, _len: u64) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The pids holding an exclusive `flock` on `file` right now, from `/proc/locks`
/// (`None` where that table cannot be read). flock records the pid that took the lock.
pub(crate) fn flock_holders(file: &File) -> Option<Vec<u32>> {
    let meta = file.metadata().ok()?;
    flock_holders_of(meta.dev(), meta.ino())
}

/// [`flock_holders`] of the inode `dev`/`ino` (a lock file this process may not open).
pub(crate) fn flock_holders_of(dev: u64, ino: u64) -> Option<Vec<u32>> {
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        ino
    );
    // The kernel hands `/proc/locks` out a page per `read`, each page a new walk of
    // lists that other processes' locks change meanwhile: under load a read can miss
    // lines, ours among them. Callers ask only about a lock they know to be held, so
    // an answer without a holder is read again (a few times: a lock released
    // meanwhile really has none).
    let mut pids = Vec::new();
    for _ in 0..8 {
        let table = std::fs::read_to_string("/proc/locks").ok()?;
        for line in table.lines() {
            // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->".
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 6
                && fields[1] == "FLOCK"
                && fields[3] == "WRITE"
                && fields[5] == wanted
                && let Ok(pid) = fields[4].parse()
            {
                pids.push(pid);
            }
        }
        if !pids.is_empty() {
            break;
        }
    }
    Some(pids)
}

/// What `/proc` says of process `pid`: its user name and command line.
pub(crate) fn process_identity(pid: u32) -> Option<(String, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let user = user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let command = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some((user, command))
}

/// The user id and primary group id of the local account `name`, from `/etc/passwd`
/// (`None`: no such line, or the file cannot be read; accounts of a directory service
/// are not looked up).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn account(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// `lstat` of a path (a symlink is described, not followed), without its times.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn lstat_path(path: &Path) -> io::Result<Stat> {
    Ok(stat_of(&rustix::fs::lstat(path)?))
}

/// What `fstat`/`fstatat` says of a file, in the terms statesafe's checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub kind: Kind,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Modification time: only from [`stat_at_timed`] (see [`untimed`] why not
    /// always).
    pub modified: Option<std::time::SystemTime>,
}

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

impl Kind {
    /// How a message names it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Special => "a FIFO, socket or device",
        }
    }
}

// The field types of `struct stat` differ between architectures: the casts are
// no-ops only on some.
#[allow(clippy::unnecessary_cast)]
fn stat_of(st: &rustix::fs::Stat) -> Stat {
    use rustix::fs::FileType;
    let kind = match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Special,
    };
    Stat {
        kind,
        mode: st.st_mode as u32 & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink as u64,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        modified: Some(
            std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(st.st_mtime).unwrap_or(0),
                    u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                ),
        ),
    }
}

/// `fstat` of an open file or directory, without its times (see [`untimed`]).
pub(crate) fn stat_fd(fd: impl AsFd) -> io::Result<Stat> {
    match untimed(fd.as_fd(), c"", AtFlags::EMPTY_PATH) {
        Some(st) => st,
        None => Ok(stat_of(&rustix::fs::fstat(fd)?)),
    }
}

/// `fstatat` of `name` in `dir`, never following a symlink, without its times (see
/// [`untimed`]).
pub(crate) fn stat_at(dir: impl AsFd, name: &OsStr) -> io::Result<Stat> {
    match untimed(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
        Some(st) => st,
        None => stat_at_timed(dir, name),
    }
}

/// [`stat_at`] with the modification time.
pub(crate) fn stat_at_timed(dir: impl AsFd, name: &OsStr) -> io::Result<Stat> {
    Ok(stat_of(&rustix::fs::statat(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// A `statx` that asks for everything [`Stat`] holds but the times (`None`: no
/// `statx`, or it did not give every field asked for; the caller makes a plain
/// `stat`).
///
/// Why not the times: since Linux 6.13, ext4, xfs, btrfs and tmpfs keep coarse
/// (clock-tick) change times unless someone asked for a file's times since its last
/// change; then its next write takes a fine-grained time. A writer that `fstatat`s
/// the journal and the lock file at each commit (their identity checks) made every
/// append and every publication change the inode's times, and on ext4 without a
/// journal every `fdatasync` then also writes the inode table block, synchronously:
/// one more write and wait per commit (a block that holds the lock file's inode too).
/// None of the identity checks reads a time.
#[cfg(not(target_os = "linux"))]
fn untimed(
    _dir: BorrowedFd<'_>,
    _name: impl rustix::path::Arg,
    _flags: AtFlags,
) -> Option<io::Result<Stat>> {
    None
}

/// See above: Linux.
#[cfg(target_os = "linux")]
fn untimed(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
    flags: AtFlags,
) -> Option<io::Result<Stat>> {
    use rustix::fs::{FileType, StatxFlags};
    let want = StatxFlags::TYPE
        | StatxFlags::MODE
        | StatxFlags::NLINK
        | StatxFlags::UID
        | StatxFlags::GID
        | StatxFlags::INO
        | StatxFlags::SIZE;
    let st = match rustix::fs::statx(dir, name, flags, want) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOSYS) => return None,
        Err(e) => return Some(Err(e.into())),
    };
    if !StatxFlags::from_bits_retain(st.stx_mask).contains(want) {
        return None;
    }
    let kind = match FileType::from_raw_mode(u32::from(st.stx_mode)) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Special,
    };
    Some(Ok(Stat {
        kind,
        mode: u32::from(st.stx_mode) & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        nlink: u64::from(st.stx_nlink),
        dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor) as u64,
        ino: st.stx_ino,
        size: st.stx_size,
        modified: None,
    }))
}

/// Opens directory `name` in `dir`, never following a symlink (`ELOOP` if it is one,
/// `ENOTDIR` if it is not a directory).
pub(crate) fn open_dir_at(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates directory `name` in `dir` with `mode` (less the umask).
pub(crate) fn mkdir_at(dir: impl AsFd, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// How [`open_at`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    /// Appending (and reading, to check how the file ends), created exclusively if
    /// missing.
    AppendCreate,
    /// Appending to (and reading) an existing file.
    Append,
    /// Reading and writing, created if missing (never truncated).
    ReadWriteCreate,
    /// Reading and writing an existing file (never created or truncated).
    ReadWrite,
}

/// Opens `name` in `dir` never following a symlink (`ELOOP`) and never blocking on a
/// FIFO or device (`O_NONBLOCK`: the caller checks the type with `fstat` before any
/// read or write). Close-on-exec.
pub(crate) fn open_at(dir: impl AsFd, name: &OsStr, access: Access, mode: u32) -> io::Result<File> {
    let base = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let flags = match access {
        Access::Read => OFlags::RDONLY,
        Access::Append => OFlags::RDWR | OFlags::APPEND,
        Access::AppendCreate => OFlags::RDWR | OFlags::APPEND | OFlags::CREATE | OFlags::EXCL,
        Access::ReadWriteCreate => OFlags::RDWR | OFlags::CREATE,
        Access::ReadWrite => OFlags::RDWR,
    };
    // Reads and writes of regular files ignore O_NONBLOCK, so it stays set.
    let fd = rustix::fs::openat(dir, name, base | flags, Mode::from_raw_mode(mode))?;
    Ok(File::from(fd))
}

/// Sets the permission bits of any open descriptor exactly.
pub(crate) fn set_mode_fd(fd: impl AsFd, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

/// Sets the owner and group of any open descriptor.
pub(crate) fn set_owner_fd(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?)
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, replacing `to`.
pub(crate) fn rename_at(
    from_dir: impl AsFd,
    from: &OsStr,
    to_dir: impl AsFd,
    to: &OsStr,
) -> io::Result<()> {
    Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
}

/// Whether this process (by its effective ids) may write `name` in `dir`.
pub(crate) fn may_write_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::accessat(
        dir,
        name,
        rustix::fs::Access::WRITE_OK,
        AtFlags::EACCESS,
    )?)
}

/// The names in the directory open as `fd` (without `.` and `..`).
pub(crate) fn names_in(fd: impl AsFd) -> io::Result<Vec<std::ffi::OsString>> {
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filesystems on which no store claims a lock-file slot of its own
    /// (`journal/durable.rs`) and whose stores report `Event::SpecialFilesystem`: the
    /// network and cluster filesystems whose `flock` may share the lock space of
    /// byte-range locks, or whose byte-range locks or `flock` may not span the
    /// cluster's nodes (review15 item 4; see `special_kind`), and not the local ones.
    #[test]
    fn the_special_filesystems_are_the_network_and_cluster_ones() {
        for (magic, kind) in [
            (0x6969, "nfs"),
            (0xFF534D42, "cifs"),
            (0xFE534D42, "smb2"),
            (0x65735546, "fuse"),
            (0x01021997, "9p"),
            (0x0BD00BD0, "lustre"),
            (0x47504653, "gpfs"),
            (0x6B414653, "afs"),
            (0x5346414F, "afs"),
            (0x00C36400, "ceph"),
            (0x01161970, "gfs2"),
            (0x7461636F, "ocfs2"),
            (0x19830326, "beegfs"),
        ] {
            assert_eq!(special_kind(magic), Some(kind), "{magic:#x}");
        }
        // ext4, xfs, btrfs, tmpfs, overlayfs, zfs, f2fs.
        for magic in [
            0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0x794C7630, 0x2FC12FC1, 0xF2F52010,
        ] {
            assert_eq!(special_kind(magic), None, "{magic:#x}");
        }
        // `f_type` as a 32-bit system gives it (signed): the same name.
        assert_eq!(special_kind(0xFF534D42u32 as i32 as u32), Some("cifs"));
    }

    /// The identity checks compare what [`stat_at`] and [`stat_fd`] give (no times)
    /// with what other calls gave (`fstat` of a fresh descriptor, `std`'s metadata, a
    /// published end's device and inode): every field must be the same, the device's
    /// encoding included.
    #[test]
    fn an_untimed_stat_is_the_plain_stat_without_its_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"12345").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        let root = File::open(dir.path()).unwrap();
        for name in ["f", "d", "l"] {
            let timed = stat_at_timed(&root, OsStr::new(name)).unwrap();
            let untimed = stat_at(&root, OsStr::new(name)).unwrap();
            assert!(timed.modified.is_some(), "{name}");
            assert_eq!(
                Stat {
                    modified: None,
                    ..untimed
                },
                Stat {
                    modified: None,
                    ..timed
                },
                "{name}"
            );
            let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert_eq!(
                (untimed.dev, untimed.ino),
                (meta.dev(), meta.ino()),
                "{name}"
            );
        }
        let file = File::open(dir.path().join("f")).unwrap();
        let by_fd = stat_fd(&file).unwrap();
        let plain = stat_of(&rustix::fs::fstat(&file).unwrap());
        assert_eq!(
            Stat {
                modified: None,
                ..plain
            },
            by_fd
        );
        assert_eq!((by_fd.kind, by_fd.size, by_fd.nlink), (Kind::File, 5, 1));
        assert!(matches!(
            stat_at(&root, OsStr::new("missing")),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        ));
    }
}
