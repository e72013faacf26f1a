//! Where a state file really lives, and the names statesafe uses beside it.
//!
//! For a state file `dir/name`:
//! - `dir/.name.statesafe/` is the sidecar directory (lock file, metadata, later
//!   backups and history); it is never deleted by statesafe;
//! - `dir/.name.statesafe-tmp-*` are temporary files of writes in progress: only a
//!   writer holding the lock creates them, so the next lock holder may remove any it finds.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Op, Result};

/// The longest state file name: a temporary name adds 40 bytes
/// (`.` + `.statesafe-tmp-` + pid (at most 7 digits) + `-` + 16 hex digits), and
/// names are limited to 255 bytes.
const MAX_NAME: usize = 255 - 40;

/// How many symlinks we follow before giving up (as the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;

/// A resolved state file location.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The path as the caller gave it, for messages.
    pub given: PathBuf,
    /// The directory that really holds the file (symlinks resolved).
    pub dir: PathBuf,
    /// The file's name in `dir`.
    pub name: OsString,
}

/// The symbolic links followed to reach a state file from the path given, each as
/// the target a state file at the link's name would be (its real directory and its
/// name): a link put in place of a state file leaves that state's sidecar beside it
/// (`Store::refuse_replaced_by_link`). Kept by the store, not in [`Target`], which
/// every store and lock holds (and links are rare).
pub(crate) type Links = Box<[Target]>;

impl Target {
    /// [`Target::resolve_with_links`] without the links.
    #[cfg(test)]
    pub fn resolve(path: &Path) -> Result<Target> {
        Target::resolve_with_links(path).map(|(target, _)| target)
    }

    /// Resolves `path`: follows a symlink chain to the real file (which need not exist
    /// yet), and canonicalizes its directory, so every writer of the same file, whatever
    /// path it was given, uses the same lock. Also returns the links it followed for
    /// the file's own name ([`Links`]).
    pub fn resolve_with_links(path: &Path) -> Result<(Target, Links)> {
        let given = path.to_path_buf();
        let bad = |reason: &str| Error::BadPath {
            path: given.clone(),
            reason: reason.into(),
        };
        if path.as_os_str().is_empty() {
            return Err(bad("the path is empty"));
        }
        if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(bad("the path ends with `/`, so it names a directory"));
        }
        let mut current = path.to_path_buf();
        let mut hops = 0;
        let mut links = Vec::new();
        // Links another user owns (not the caller, not root), on the way or for the
        // file's own name: see [`check_foreign_links`].
        let mut foreign = Vec::new();
        for _ in 0..MAX_LINKS {
            // The directories on the way are resolved by us too, one component at a
            // time, under the same symlink rule as the file's own name.
            if let (Some(parent), Some(name)) = (current.parent(), current.file_name())
                && !parent.as_os_str().is_empty()
            {
                let name = name.to_os_string();
                current = canonical_dir(parent, &mut hops, &mut foreign)
                    .map_err(|e| e.into_error(&given, parent))?
                    .join(name);
            }
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    check_link_owner(&current, meta.uid())?;
                    note_foreign(&mut foreign, &current, meta.uid());
                    let link = std::fs::read_link(&current)
                        .map_err(|e| Error::io(Op::Resolve, &current, e))?;
                    if let (Some(parent), Some(name)) = (current.parent(), current.file_name()) {
                        links.push(Target {
                            given: current.clone(),
                            dir: parent.to_path_buf(),
                            name: name.to_os_string(),
                        });
                    }
                    current = match current.parent() {
                        Some(parent) if link.is_relative() => parent.join(link),
                        _ => link,
                    };
                }
                Ok(meta) if meta.is_dir() => return Err(bad("it is a directory")),
                Ok(meta) if !meta.is_file() => {
                    return Err(bad("it is not a regular file (a device, socket or pipe)"));
                }
                Ok(_) => {
                    let target = Target::split(given, &current, &mut foreign)?;
                    check_foreign_links(&target, &foreign)?;
                    return Ok((target, links.into()));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let target = Target::split(given, &current, &mut foreign)?;
                    check_foreign_links(&target, &foreign)?;
                    return Ok((target, links.into()));
                }
                Err(e) => return Err(Error::io(Op::Resolve, &current, e)),
            }
        }
        Err(bad("too many levels of symbolic links"))
    }

    fn split(given: PathBuf, real: &Path, foreign: &mut Vec<(PathBuf, u32)>) -> Result<Target> {
        let name = real
            .file_name()
            .ok_or_else(|| Error::BadPath {
                path: given.clone(),
                reason: "it has no file name".into(),
            })?
            .to_os_string();
        let parent = match real.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir =
            canonical_dir(parent, &mut 0, foreign).map_err(|e| e.into_error(&given, parent))?;
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::BadPath {
                    path: given,
                    reason: format!("`{}` is not a directory", parent.display()),
                });
            }
            Err(e) => return Err(Error::io(Op::Resolve, &dir, e)),
        }
        if name.len() > MAX_NAME {
            return Err(Error::BadPath {
                path: given,
                reason: format!(
                    "its name is {} bytes long; statesafe needs names of at most {MAX_NAME} bytes to fit its temporary and sidecar names beside it (255 at most)",
                    name.len()
                ),
            });
        }
        Ok(Target { given, dir, name })
    }

    /// The real path of the state file.
    pub fn real(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The sidecar directory's name in `dir`.
    pub fn sidecar_name(&self) -> OsString {
        let mut s = OsString::from(".");
        s.push(&self.name);
        s.push(".statesafe");
        s
    }

    /// The sidecar directory's path.
    pub fn sidecar(&self) -> PathBuf {
        self.dir.join(self.sidecar_name())
    }

    /// The sidecar directory's path as the user named the state file, for messages:
    /// beside the path given (`.s.json.statesafe` for `s.json`, `../.s.json.statesafe`
    /// for `../s.json`) when that path's directory is the file's (no symbolic link
    /// followed to another directory), else [`Target::sidecar`], the absolute path.
    pub fn sidecar_as_given(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        if self.given.file_name() == Some(self.name.as_os_str()) {
            let parent = match self.given.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let same = match (std::fs::metadata(parent), std::fs::metadata(&self.dir)) {
                (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
                _ => false,
            };
            if same {
                return self.given.with_file_name(self.sidecar_name());
            }
        }
        self.sidecar()
    }

    /// The prefix shared by all temporary files of this state file.
    pub fn temp_prefix(&self) -> OsString {
        let mut s = OsString::from(".");
        s.push(&self.name);
        s.push(TEMP_INFIX);
        s
    }

    /// A fresh temporary file name, unique across processes and calls; `pid`: this
    /// process's id ([`crate::sys::pid`], which the caller has at hand).
    pub fn temp_name_of(&self, pid: u32) -> OsString {
        // Made at every lock (docs/benchmarks.md, "jperf15"): one allocation, no
        // formatting machinery.
        let mut s = OsString::with_capacity(1 + self.name.len() + TEMP_INFIX.len() + 27);
        s.push(".");
        s.push(&self.name);
        s.push(TEMP_INFIX);
        if cfg!(statesafe_mutation = "fixed-temp-name") {
            s.push("fixed");
            return s;
        }
        let mut suffix = [0u8; 27];
        s.push(unique_suffix(pid, &mut suffix));
        s
    }

    /// Whether `name` is exactly a temporary file name this state file's writers
    /// generate: the prefix, a pid, `-` and 16 lowercase hex digits, nothing else. So a
    /// name read from a file (the lock record) is only ever used when it is a single
    /// component of that form, never `..` or a path.
    pub fn is_temp(&self, name: &OsStr) -> bool {
        let Some(rest) = name
            .as_encoded_bytes()
            .strip_prefix(self.temp_prefix().as_encoded_bytes())
        else {
            return false;
        };
        if cfg!(statesafe_mutation = "fixed-temp-name") && rest == b"fixed" {
            return true;
        }
        let Some(dash) = rest.iter().position(|b| *b == b'-') else {
            return false;
        };
        let (pid, hex) = (&rest[..dash], &rest[dash + 1..]);
        (1..=10).contains(&pid.len())
            && pid.iter().all(u8::is_ascii_digit)
            && hex.len() == 16
            && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// Why [`canonical_dir`] failed.
enum DirError {
    /// A component does not exist.
    Missing,
    /// A link the symlink rule refuses, or another error already made.
    Refused(Error),
    /// An I/O error on this path.
    Io(PathBuf, io::Error),
}

impl DirError {
    fn into_error(self, given: &Path, parent: &Path) -> Error {
        match self {
            DirError::Missing => Error::BadPath {
                path: given.to_path_buf(),
                reason: format!("its directory `{}` does not exist", parent.display()),
            },
            DirError::Refused(e) => e,
            DirError::Io(path, e) => Error::io(Op::Resolve, path, e),
        }
    }
}

/// The real path of directory `dir` (like `std::fs::canonicalize`), resolved one
/// component at a time so that every symlink on the way is judged by
/// [`check_link_owner`]: a link another user planted in a sticky, world-writable
/// directory (`/tmp/d -> /root`) is refused wherever it stands in the path, as the
/// kernel's `protected_symlinks` would refuse it. `hops` counts the links followed
/// (at most [`MAX_LINKS`], shared with the caller's own chain).
fn canonical_dir(
    dir: &Path,
    hops: &mut usize,
    foreign: &mut Vec<(PathBuf, u32)>,
) -> std::result::Result<PathBuf, DirError> {
    use std::collections::VecDeque;
    use std::path::Component;
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| DirError::Io(dir.to_path_buf(), e))?
            .join(dir)
    };
    let mut out = PathBuf::from("/");
    let mut rest: VecDeque<OsString> = VecDeque::new();
    let push_front = |rest: &mut VecDeque<OsString>, out: &mut PathBuf, path: &Path| {
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => *out = PathBuf::from("/"),
                Component::CurDir => {}
                Component::ParentDir => parts.push(OsString::from("..")),
                Component::Normal(n) => parts.push(n.to_os_string()),
            }
        }
        for part in parts.into_iter().rev() {
            rest.push_front(part);
        }
    };
    push_front(&mut rest, &mut out, &absolute);
    while let Some(part) = rest.pop_front() {
        if part == ".." {
            // `out` holds no links, so stepping up by name is what the kernel does.
            out.pop();
            continue;
        }
        let next = out.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                check_link_owner(&next, meta.uid()).map_err(DirError::Refused)?;
                note_foreign(foreign, &next, meta.uid());
                *hops += 1;
                if *hops > MAX_LINKS {
                    return Err(DirError::Io(
                        next,
                        io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error()),
                    ));
                }
                let target =
                    std::fs::read_link(&next).map_err(|e| DirError::Io(next.clone(), e))?;
                push_front(&mut rest, &mut out, &target);
            }
            Ok(_) => out = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DirError::Missing),
            Err(e) => return Err(DirError::Io(next, e)),
        }
    }
    Ok(out)
}

/// The kernel's `fs.protected_symlinks` rule, applied whatever the sysctl says (and
/// needed because statesafe resolves links itself, so the kernel never gets to apply
/// it): a symlink in a sticky, world-writable directory (`/tmp`, a shared drop folder)
/// is followed only when it belongs to the caller or to the directory's owner.
/// Otherwise another user could point the name at any file the caller may write.
fn check_link_owner(link: &Path, link_uid: u32) -> Result<()> {
    let parent = match link.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::metadata(parent).map_err(|e| Error::io(Op::Resolve, parent, e))?;
    let sticky_shared = dir.mode() & 0o1002 == 0o1002;
    let euid = crate::sys::effective_uid();
    if sticky_shared && link_uid != euid && link_uid != dir.uid() {
        return Err(Error::Unsafe {
            path: link.to_path_buf(),
            reason: format!(
                "it is a symbolic link owned by uid {link_uid} in the sticky, world-writable directory `{}`; statesafe follows a link there only when it belongs to you or to the directory's owner (the kernel's protected_symlinks rule)",
                std::fs::canonicalize(parent)
                    .unwrap_or_else(|_| parent.to_path_buf())
                    .display()
            ),
            what: crate::error::Unsafety::Planted,
        });
    }
    Ok(())
}

/// Keeps `link` in `foreign` when another user owns it: neither the caller nor root
/// (a link of root's is trusted as root's files are).
fn note_foreign(foreign: &mut Vec<(PathBuf, u32)>, link: &Path, link_uid: u32) {
    if link_uid != 0 && link_uid != crate::sys::effective_uid() {
        foreign.push((link.to_path_buf(), link_uid));
    }
}

/// A link another user owns leads only to a place that user controls: the directory the
/// state file it resolves to is in (where the sidecar and the temporary files go) is
/// theirs; or the file is theirs and they may create files in that directory (its
/// group's or everyone's write bit, as the kernel would grant it to them). Owning the
/// file alone is not enough: root's commit would create its temporary file and a sidecar
/// (given to the file's owner) in a directory they could not write (`~a/state.json ->
/// /var/mail/a`: red22's note). Nor is a directory they may write (a sticky `/tmp`)
/// enough for a file that is not theirs (red22b finding 1, where root then rewrote its
/// own file in `/tmp` through the user's link).
/// Otherwise the link's owner could make the caller
/// (root's cron job, a colleague) write, create, `chmod` or quarantine files of the
/// caller's own, or of a third user, by pointing a name they own at them
/// (`/home/a/state.json -> /etc/app.json` followed by root's `statesafe set`): the
/// threat model's "root is never redirected by a user's planted links", everywhere,
/// not only in sticky directories, where [`check_link_owner`] applies the kernel's
/// rule first. The caller gives the real path to use such a file on purpose.
fn check_foreign_links(target: &Target, foreign: &[(PathBuf, u32)]) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    if foreign.is_empty() {
        return Ok(());
    }
    let dir = std::fs::metadata(&target.dir).map_err(|e| Error::io(Op::Resolve, &target.dir, e))?;
    let dir_uid = dir.uid();
    // Whether `uid` may create files in the directory, by the class the kernel checks
    // first (owner, then group, then others).
    let may_write = |uid: u32| {
        if uid == dir_uid {
            true
        } else if crate::sys::user_in_group(uid, dir.gid()) {
            dir.mode() & 0o020 != 0
        } else {
            dir.mode() & 0o002 != 0
        }
    };
    let real = target.real();
    let file_uid = match std::fs::symlink_metadata(&real) {
        Ok(m) => Some(m.uid()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(Op::Resolve, &real, e)),
    };
    for (link, uid) in foreign {
        if *uid != dir_uid && !(file_uid == Some(*uid) && may_write(*uid)) {
            let whose = match file_uid {
                Some(f) => format!("`{}` (a file of uid {f}", real.display()),
                None => format!("`{}` (a new file", real.display()),
            };
            return Err(Error::Unsafe {
                path: link.clone(),
                reason: format!(
                    "it is a symbolic link owned by uid {uid}, who is not you, and it leads to {whose} in a directory of uid {dir_uid}); statesafe follows another user's link only into a directory that user owns, or to a file of theirs in a directory they may write, so that nobody can point a name at your files or have files made where they could not make them; use the real path `{}` if you mean that file",
                    real.display()
                ),
                what: crate::error::Unsafety::Planted,
            });
        }
    }
    Ok(())
}

/// A suffix unique to this process and call, and unpredictable enough that another
/// user cannot pre-create it (creation is exclusive anyway, so a clash is an error,
/// never a shared file).
/// What comes between the state file's name and the unique suffix in a temporary
/// file's name.
const TEMP_INFIX: &str = ".statesafe-tmp-";

/// `{pid}-{h:016x}` for a fresh `h`, written into `buf` (27 bytes: 10 digits, `-`,
/// 16 hex digits).
fn unique_suffix(pid: u32, buf: &mut [u8; 27]) -> &str {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..24].copy_from_slice(&n.to_le_bytes());
    seed[24..28].copy_from_slice(&pid.to_le_bytes());
    let stack_addr = &seed as *const _ as usize as u32;
    seed[28..32].copy_from_slice(&stack_addr.to_le_bytes());
    let h = xxhash_rust::xxh3::xxh3_64(&seed);
    let mut at = 10;
    let mut rest = pid;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    buf[10] = b'-';
    for (i, b) in buf[11..].iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 15) as usize];
    }
    std::str::from_utf8(&buf[at..]).expect("invariant: ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unique_suffix_is_the_pid_a_dash_and_16_hex_digits() {
        for pid in [0, 7, 10, 4_194_304, u32::MAX] {
            let mut buf = [0u8; 27];
            let suffix = unique_suffix(pid, &mut buf).to_owned();
            let (p, h) = suffix.split_once('-').unwrap();
            assert_eq!(p, pid.to_string());
            assert_eq!(h.len(), 16);
            let parsed = u64::from_str_radix(h, 16).unwrap();
            assert_eq!(format!("{parsed:016x}"), h);
        }
    }

    #[test]
    fn directories_resolve_like_canonicalize() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::os::unix::fs::symlink("a/b", base.join("l")).unwrap();
        std::os::unix::fs::symlink(base.join("l"), base.join("m")).unwrap();
        std::fs::write(base.join("a/b/s.json"), "{}").unwrap();
        for p in [
            "m/s.json",
            "l/../b/s.json",
            "a/./b/s.json",
            "m/../../a/b/s.json",
        ] {
            let t = Target::resolve(&base.join(p)).unwrap();
            assert_eq!(t.dir, base.join("a/b"), "{p}");
            assert_eq!(t.name, OsStr::new("s.json"), "{p}");
        }
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        assert!(Target::resolve(&base.join("loop/s.json")).is_err());
        assert!(matches!(
            Target::resolve(&base.join("nope/s.json")),
            Err(Error::BadPath { .. })
        ));
    }

    #[test]
    fn temp_names_are_unique_and_recognized() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::resolve(&dir.path().join("s.json")).unwrap();
        let a = t.temp_name_of(crate::sys::pid());
        let b = t.temp_name_of(crate::sys::pid());
        assert_ne!(a, b);
        assert!(t.is_temp(&a));
        assert!(!t.is_temp(OsStr::new("s.json")));
        assert!(!t.is_temp(OsStr::new(".s.json.statesafe")));
        assert!(t.is_temp(OsStr::new(".s.json.statesafe-tmp-1-0123456789abcdef")));
        // Hostile names from a lock record: never a path, never a near miss.
        for bad in [
            ".s.json.statesafe-tmp-/../../other/victim.txt",
            ".s.json.statesafe-tmp-1-0123456789abcdef/x",
            ".s.json.statesafe-tmp-1-0123456789abcde",
            ".s.json.statesafe-tmp-1-0123456789ABCDEF",
            ".s.json.statesafe-tmp-x",
            ".s.json.statesafe-tmp--0123456789abcdef",
            ".s.json.statesafe-tmp-12345678901-0123456789abcdef",
            ".s.json.statesafe-tmp-1-0123456789abcdef\0",
        ] {
            assert!(!t.is_temp(OsStr::new(bad)), "{bad}");
        }
        assert!(!t.is_temp(OsStr::new(&format!(
            ".s.json.statesafe-tmp-1-{}",
            "a".repeat(300)
        ))));
    }

    #[test]
    fn symlink_chain_resolves_to_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        std::fs::write(&real, "{}").unwrap();
        std::os::unix::fs::symlink("real.json", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("b")).unwrap();
        let t = Target::resolve(&dir.path().join("b")).unwrap();
        assert_eq!(t.real(), std::fs::canonicalize(&real).unwrap());
    }

    #[test]
    fn names_too_long_for_a_temp_name_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Target::resolve(&dir.path().join("a".repeat(MAX_NAME))).is_ok());
        let err = Target::resolve(&dir.path().join("a".repeat(MAX_NAME + 1))).unwrap_err();
        assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
        let t = Target::resolve(&dir.path().join("a".repeat(MAX_NAME))).unwrap();
        assert!(t.temp_name_of(crate::sys::pid()).len() <= 255);
    }

    #[test]
    fn directories_and_missing_parents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Target::resolve(dir.path()),
            Err(Error::BadPath { .. })
        ));
        assert!(matches!(
            Target::resolve(&dir.path().join("nope/s.json")),
            Err(Error::BadPath { .. })
        ));
    }
}
