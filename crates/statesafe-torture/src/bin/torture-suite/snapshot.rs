//! What the adversarial layer guards: every file an attacker aims at, recorded before
//! the victim's command (type, mode, owner, content or link target, and for a directory
//! every entry, without following any symlink) and compared after it.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(PathBuf),
    Other(&'static str),
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The recorded state of some trees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot(BTreeMap<PathBuf, Entry>);

impl Snapshot {
    /// Records `roots` and, for directories, everything under them.
    pub fn take(roots: &[PathBuf]) -> Result<Snapshot, String> {
        let mut map = BTreeMap::new();
        for root in roots {
            record(root, &mut map)?;
        }
        Ok(Snapshot(map))
    }

    /// What changed since `self`, one description per path.
    pub fn changes(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (path, old) in &self.0 {
            let p = path.display();
            match after.0.get(path) {
                None => out.push(format!("`{p}` vanished from the listing")),
                Some(new) if new == old => {}
                Some(new) => out.push(format!("`{p}` {}", describe(old, new))),
            }
        }
        for (path, new) in &after.0 {
            if !self.0.contains_key(path) {
                out.push(format!(
                    "`{}` appeared ({})",
                    path.display(),
                    kind_name(&new.kind)
                ));
            }
        }
        out
    }
}

fn record(path: &Path, map: &mut BTreeMap<PathBuf, Entry>) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            map.insert(
                path.to_path_buf(),
                Entry {
                    kind: Kind::Missing,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                },
            );
            return Ok(());
        }
        Err(e) => return Err(format!("cannot stat `{}`: {e}", path.display())),
    };
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File(
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?,
        )
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink(
            std::fs::read_link(path)
                .map_err(|e| format!("cannot read link `{}`: {e}", path.display()))?,
        )
    } else if ft.is_fifo() {
        Kind::Other("a FIFO")
    } else if ft.is_socket() {
        Kind::Other("a socket")
    } else {
        Kind::Other("a device")
    };
    map.insert(
        path.to_path_buf(),
        Entry {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        },
    );
    if ft.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| format!("cannot list `{}`: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list `{}`: {e}", path.display()))?;
            record(&entry.path(), map)?;
        }
    }
    Ok(())
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::File(bytes) => format!("a file of {} bytes", bytes.len()),
        Kind::Dir => "a directory".into(),
        Kind::Symlink(to) => format!("a symlink to `{}`", to.display()),
        Kind::Other(what) => (*what).into(),
        Kind::Missing => "nothing".into(),
    }
}

fn describe(old: &Entry, new: &Entry) -> String {
    let mut what = Vec::new();
    if old.kind != new.kind {
        match (&old.kind, &new.kind) {
            (Kind::File(a), Kind::File(b)) => what.push(format!(
                "content changed ({} bytes, now {})",
                a.len(),
                b.len()
            )),
            (a, b) => what.push(format!("was {}, now {}", kind_name(a), kind_name(b))),
        }
    }
    if old.mode != new.mode && old.kind != Kind::Missing && new.kind != Kind::Missing {
        what.push(format!("mode {:04o}, now {:04o}", old.mode, new.mode));
    }
    if (old.uid, old.gid) != (new.uid, new.gid)
        && old.kind != Kind::Missing
        && new.kind != Kind::Missing
    {
        what.push(format!(
            "owner {}:{}, now {}:{}",
            old.uid, old.gid, new.uid, new.gid
        ));
    }
    what.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_changed_mode_content_and_a_new_entry_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"one").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o600)).unwrap();
        let before = Snapshot::take(&[dir.path().to_path_buf()]).unwrap();
        assert!(before.changes(&before).is_empty());
        std::fs::write(&file, b"two!").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o666)).unwrap();
        std::fs::write(dir.path().join("new"), b"").unwrap();
        let changes = before.changes(&Snapshot::take(&[dir.path().to_path_buf()]).unwrap());
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes[0].contains("content changed (3 bytes, now 4)"),
            "{changes:?}"
        );
        assert!(changes[0].contains("now 0666"), "{changes:?}");
        assert!(changes[1].contains("appeared"), "{changes:?}");
    }
}
