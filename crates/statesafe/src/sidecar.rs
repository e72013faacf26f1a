//! The sidecar directory's permissions follow the state file's.
//!
//! Everything in `.NAME.statesafe/` either holds document contents (history, backups,
//! quarantine) or must be writable by everyone who may write the state (the lock file,
//! the folders commits write into). So the sidecar gets, for each class of user, the
//! access the state file gives it: read on the file → read and search on the folders,
//! write on the file → write on the folders and the lock file. A private (0600) state
//! file gets a 0700 sidecar, so no copy of its contents is readable by anyone else, and
//! a group-writable one lets the whole group commit. As root, ownership follows too, so
//! root writing a user's file never locks the user out of it.
//!
//! The sidecar is checked after every commit (one `stat`); the walk that fixes it runs
//! only when it differs, which happens on the first commit and after a `chmod`/`chown`
//! of the state file.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::paths::Target;
use crate::sys;
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

/// Creates folder `path` (if missing) with the sidecar's permissions for `perms`.
pub(crate) fn make_dir(path: &Path, perms: Option<Perms>) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(p) = perms {
        fix(path, dir_mode(p.mode), p)?;
    }
    Ok(())
}

/// Gives a file statesafe just created in the sidecar the sidecar's permissions.
pub(crate) fn fix_file(path: &Path, perms: Perms) -> io::Result<()> {
    fix(path, file_mode(perms.mode), perms)
}

fn fix(path: &Path, mode: u32, perms: Perms) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if sys::effective_uid() == 0 && (meta.uid() != perms.uid || meta.gid() != perms.gid) {
        std::os::unix::fs::lchown(path, Some(perms.uid), Some(perms.gid))?;
    }
    if meta.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Brings the sidecar in line with the state file's `perms` (call with the lock held,
/// after a commit). Cheap when nothing changed.
pub(crate) fn enforce(target: &Target, perms: Perms) -> io::Result<()> {
    let root = target.sidecar();
    let meta = match std::fs::symlink_metadata(&root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let owner_differs =
        sys::effective_uid() == 0 && (meta.uid() != perms.uid || meta.gid() != perms.gid);
    if meta.mode() & 0o7777 == dir_mode(perms.mode) && !owner_differs {
        return Ok(());
    }
    // Narrow the top folder first: from then on nothing inside is reachable by users
    // the state file does not admit.
    fix(&root, dir_mode(perms.mode), perms)?;
    for name in sys::dir_names(&root)? {
        let path = root.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            fix(&path, dir_mode(perms.mode), perms)?;
            // Backups and quarantined files are versions of the document: they keep
            // their own inode's permissions. Only our own files are adjusted.
            if name == "history" {
                for seg in sys::dir_names(&path)? {
                    fix(&path.join(seg), file_mode(perms.mode), perms)?;
                }
            }
        } else if meta.is_file() {
            fix(&path, file_mode(perms.mode), perms)?;
        }
    }
    Ok(())
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
    }
}
