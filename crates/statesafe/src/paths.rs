//! Where a state file really lives, and the names statesafe uses beside it.
//!
//! For a state file `dir/name`:
//! - `dir/.name.statesafe/` is the sidecar directory (lock file, metadata, later
//!   backups and history); it is never deleted by statesafe;
//! - `dir/.name.statesafe-tmp-*` are temporary files of writes in progress: only a
//!   writer holding the lock creates them, so the next lock holder may remove any it finds.

use std::ffi::{OsStr, OsString};
use std::io;
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

impl Target {
    /// Resolves `path`: follows a symlink chain to the real file (which need not exist
    /// yet), and canonicalizes its directory, so every writer of the same file, whatever
    /// path it was given, uses the same lock.
    pub fn resolve(path: &Path) -> Result<Target> {
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
        for _ in 0..MAX_LINKS {
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = std::fs::read_link(&current)
                        .map_err(|e| Error::io(Op::Resolve, &current, e))?;
                    current = match current.parent() {
                        Some(parent) if link.is_relative() => parent.join(link),
                        _ => link,
                    };
                }
                Ok(meta) if meta.is_dir() => return Err(bad("it is a directory")),
                Ok(meta) if !meta.is_file() => {
                    return Err(bad("it is not a regular file (a device, socket or pipe)"));
                }
                Ok(_) => return Target::split(given, &current),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Target::split(given, &current);
                }
                Err(e) => return Err(Error::io(Op::Resolve, &current, e)),
            }
        }
        Err(bad("too many levels of symbolic links"))
    }

    fn split(given: PathBuf, real: &Path) -> Result<Target> {
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
        let dir = match std::fs::canonicalize(parent) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BadPath {
                    path: given,
                    reason: format!("its directory `{}` does not exist", parent.display()),
                });
            }
            Err(e) => return Err(Error::io(Op::Resolve, parent, e)),
        };
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

    /// The prefix shared by all temporary files of this state file.
    pub fn temp_prefix(&self) -> OsString {
        let mut s = OsString::from(".");
        s.push(&self.name);
        s.push(".statesafe-tmp-");
        s
    }

    /// A fresh temporary file name, unique across processes and calls.
    pub fn temp_name(&self) -> OsString {
        let mut s = self.temp_prefix();
        if cfg!(feature = "mutation-fixed-temp-name") {
            s.push("fixed");
            return s;
        }
        s.push(unique_suffix());
        s
    }

    /// Whether `name` is one of our temporary files.
    pub fn is_temp(&self, name: &OsStr) -> bool {
        name.as_encoded_bytes()
            .starts_with(self.temp_prefix().as_encoded_bytes())
    }
}

/// A suffix unique to this process and call, and unpredictable enough that another
/// user cannot pre-create it (creation is exclusive anyway, so a clash is an error,
/// never a shared file).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let pid = crate::sys::pid();
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..24].copy_from_slice(&n.to_le_bytes());
    seed[24..28].copy_from_slice(&pid.to_le_bytes());
    let stack_addr = &seed as *const _ as usize as u32;
    seed[28..32].copy_from_slice(&stack_addr.to_le_bytes());
    let h = xxhash_rust::xxh3::xxh3_64(&seed);
    format!("{pid}-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_and_recognized() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::resolve(&dir.path().join("s.json")).unwrap();
        let a = t.temp_name();
        let b = t.temp_name();
        assert_ne!(a, b);
        assert!(t.is_temp(&a));
        assert!(!t.is_temp(OsStr::new("s.json")));
        assert!(!t.is_temp(OsStr::new(".s.json.statesafe")));
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
        assert!(t.temp_name().len() <= 255);
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
