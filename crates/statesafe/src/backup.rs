//! Backups of replaced versions, and the quarantine of damaged ones.
//!
//! Both are hard links, never copies: just before a commit renames the new version
//! over the file, the outgoing file (which the transaction has just read and verified)
//! gets a second name, `.NAME.statesafe/backups/gen-G.json`. The rename then points the
//! live name at the new inode, so the backup keeps the old inode alone: later in-place
//! writes to the live name by other programs never touch it. A version that failed
//! verification is never linked into `backups/`, so damaged state can never push good
//! backups out; it goes to `quarantine/` instead, and nothing there is ever deleted.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Op, Result};
use crate::paths::Target;
use crate::settings::BackupPolicy;
use crate::sidecar::{Dir, Sidecar, Sub, Use};
use crate::sys::{self, Access, Kind};
use crate::write::{Perms, Poisoning};

/// One backup on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The generation it holds.
    pub generation: u64,
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// When that version was committed (the file's modification time).
    pub committed: SystemTime,
}

/// What is in the backups directory.
#[derive(Debug, Clone, Default)]
pub struct BackupList {
    /// statesafe's backups, newest generation first.
    pub backups: Vec<BackupInfo>,
    /// Files statesafe did not put there; listed, never touched.
    pub foreign: Vec<PathBuf>,
}

/// The backups folder's path, for messages.
#[cfg(test)]
pub(crate) fn backups_dir(target: &Target) -> PathBuf {
    target.sidecar().join("backups")
}

fn backup_name(generation: u64) -> OsString {
    OsString::from(format!("gen-{generation:020}.json"))
}

fn parse_backup_name(name: &OsStr) -> Option<u64> {
    let s = name.to_str()?;
    let digits = s.strip_prefix("gen-")?.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .filter(|g| *g <= crate::format::MAX_GENERATION)
}

/// What [`link_outgoing`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Linked {
    /// It made the backup (a commit that fails takes it back with [`unlink`]).
    Made,
    /// The backup was there already (a commit retried after a crash or a failure).
    Existed,
}

/// Gives the current file (generation `generation`, checksum `checksum`) a second
/// name in `backups/`. Runs on every commit: one `linkat`, and a `mkdir` only the
/// first time.
pub(crate) fn link_outgoing(
    sidecar: &Sidecar,
    target: &Target,
    dir: &OwnedFd,
    generation: u64,
    checksum: u64,
    perms: Perms,
) -> Result<Linked> {
    let backups = sidecar.sub_or_create(Sub::Backups, perms, Op::Backup)?;
    let name = backup_name(generation);
    let path = backups.join(&name);
    let link = || sys::link_at(dir, &target.name, backups.fd(), &name);
    let mut result = link();
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
        if holds(&backups, &name, checksum) {
            // Already backed up (a commit retried after a crash): same bytes.
            return Ok(Linked::Existed);
        }
        // Something else under this generation's name: never overwrite or delete it;
        // move it to the quarantine (a rename moves the name, whatever it is, and
        // follows nothing) and keep ours.
        let qdir = sidecar.sub_or_create(Sub::Quarantine, perms, Op::Backup)?;
        let stale = backups
            .read(&name, Op::Backup)
            .ok()
            .flatten()
            .unwrap_or_default();
        let aside = OsString::from(format!(
            "stale-backup-gen-{generation}-{:016x}",
            crate::format::checksum(&stale)
        ));
        sys::rename_at(backups.fd(), &name, qdir.fd(), &aside)
            .map_err(|e| Error::io(Op::Backup, &path, e))?;
        result = link();
    }
    result
        .map(|()| Linked::Made)
        .map_err(|e| Error::io(Op::Backup, path, e))
}

/// Takes back the backup of `generation` that a commit made and then failed: a write
/// that does not happen leaves no backup (and the live file no second name).
pub(crate) fn unlink(sidecar: &Sidecar, generation: u64) -> Result<()> {
    if let Some(dir) = sidecar.sub(Sub::Backups, Op::Backup)? {
        dir.remove_file(&backup_name(generation), Op::Backup)?;
    }
    Ok(())
}

/// The generation of the backup that is the inode `(dev, ino)`, among the newest
/// few: a version being adopted by a writer right now is linked there under its
/// generation.
pub(crate) fn generation_of_inode(sidecar: Option<&Sidecar>, dev: u64, ino: u64) -> Option<u64> {
    let dir = sidecar?.sub(Sub::Backups, Op::Backup).ok()??;
    let list = list(sidecar).ok()?;
    list.backups.iter().take(3).find_map(|b| {
        dir.stat(&backup_name(b.generation), Op::Backup)
            .ok()
            .flatten()
            .filter(|st| st.dev == dev && st.ino == ino)
            .map(|_| b.generation)
    })
}

/// Whether backup `name` is a regular file carrying a metadata record for bytes with
/// `checksum`.
fn holds(backups: &Dir, name: &OsStr, checksum: u64) -> bool {
    let Ok(Some(mut file)) = backups.open(name, Access::Read, 0, Use::Read, Op::Backup) else {
        return false;
    };
    match sys::get_meta_attr(&file) {
        Ok(sys::MetaAttr::Present(raw)) => {
            crate::format::Meta::decode(&raw).is_some_and(|m| m.xxh3 == checksum)
        }
        _ => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut file, &mut bytes).is_ok()
                && crate::format::checksum(&bytes) == checksum
        }
    }
}

/// Opens backup `b` for reading (`None`: it is gone, pruned since the listing).
pub(crate) fn open(sidecar: &Sidecar, b: &BackupInfo) -> Result<Option<File>> {
    open_generation(sidecar, b.generation)
}

/// Opens the backup of `generation` through the sidecar's descriptor (never through
/// a planted link, FIFO or directory); `None` when there is none.
pub(crate) fn open_generation(sidecar: &Sidecar, generation: u64) -> Result<Option<File>> {
    let Some(backups) = sidecar.sub(Sub::Backups, Op::Read)? else {
        return Ok(None);
    };
    backups.open(
        &backup_name(generation),
        Access::Read,
        0,
        Use::Read,
        Op::Read,
    )
}

/// Lists the backups directory (an empty list when there is none).
pub(crate) fn list(sidecar: Option<&Sidecar>) -> Result<BackupList> {
    let Some(sidecar) = sidecar else {
        return Ok(BackupList::default());
    };
    let Some(dir) = sidecar.sub(Sub::Backups, Op::Backup)? else {
        return Ok(BackupList::default());
    };
    let mut list = BackupList::default();
    for name in dir.names(Op::Backup)? {
        // With its time, unlike `Dir::stat` (see `sys::stat_at`).
        let st = match crate::sys::stat_at_timed(dir.fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(Op::Backup, dir.join(&name), e)),
        };
        let path = dir.join(&name);
        match parse_backup_name(&name) {
            Some(generation) if st.kind == Kind::File => list.backups.push(BackupInfo {
                generation,
                path,
                size: st.size,
                committed: st.modified.unwrap_or(SystemTime::UNIX_EPOCH),
            }),
            _ => list.foreign.push(path),
        }
    }
    list.backups
        .sort_by_key(|b| std::cmp::Reverse(b.generation));
    list.foreign.sort();
    Ok(list)
}

/// The generations `policy` keeps out of `backups` (newest first) at time `now`.
pub(crate) fn keep_set(
    backups: &[BackupInfo],
    policy: &BackupPolicy,
    now: SystemTime,
) -> BTreeSet<u64> {
    let mut keep: BTreeSet<u64> = backups
        .iter()
        .take(policy.keep as usize)
        .map(|b| b.generation)
        .collect();
    for (count, width) in [(policy.hourly, 3600u64), (policy.daily, 86_400u64)] {
        if count == 0 {
            continue;
        }
        let now_bucket = secs(now) / width;
        let oldest = now_bucket.saturating_sub(u64::from(count) - 1);
        let mut seen = BTreeSet::new();
        // Newest first, so the first backup met in each bucket is that bucket's newest.
        for b in backups {
            let bucket = secs(b.committed) / width;
            if bucket >= oldest && bucket <= now_bucket && seen.insert(bucket) {
                keep.insert(b.generation);
            }
        }
    }
    keep
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Removes statesafe's backups that `policy` no longer keeps; returns how many.
/// Foreign files are never touched. Runs after every commit (on the janitor thread),
/// so with count-only retention it reads names only. It always lists the folder:
/// finding the backup that left the window by its name (outgoing generation less
/// `keep`) deletes newer backups and keeps older ones once the generations have a gap.
pub(crate) fn prune(sidecar: &Sidecar, policy: &BackupPolicy) -> Result<usize> {
    let Some(dir) = sidecar.sub(Sub::Backups, Op::Backup)? else {
        return Ok(0);
    };
    let doomed: Vec<u64> = if policy.hourly == 0 && policy.daily == 0 {
        let mut ours: Vec<u64> = dir
            .names(Op::Backup)?
            .iter()
            .filter_map(|n| parse_backup_name(n))
            .collect();
        if ours.len() <= policy.keep as usize {
            return Ok(0);
        }
        ours.sort_by_key(|g| std::cmp::Reverse(*g));
        ours.split_off(policy.keep as usize)
    } else {
        let list = list(Some(sidecar))?;
        let keep = keep_set(&list.backups, policy, SystemTime::now());
        list.backups
            .into_iter()
            .filter(|b| !keep.contains(&b.generation))
            .map(|b| b.generation)
            .collect()
    };
    let mut removed = 0;
    for generation in doomed {
        if dir.remove_file(&backup_name(generation), Op::Backup)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Gives the damaged current file a second name in `quarantine/`, keyed by its
/// checksum so that repeating a recovery after a crash finds it there already.
///
/// The link is made durable before anything replaces the damaged file's name: the
/// quarantine directory is synced, and when this call created it, the sidecar
/// directory that holds its name too. A failed `fsync` poisons the store (it is never
/// tried again: the kernel may have dropped what it failed to write).
pub(crate) fn quarantine(
    sidecar: &Sidecar,
    target: &Target,
    dir: &OwnedFd,
    checksum: u64,
    perms: Perms,
) -> Result<Result<PathBuf>, Poisoning> {
    let name = OsString::from(format!("damaged-{checksum:016x}"));
    quarantine_link(sidecar, dir, &target.name, &name, perms)
}

/// Gives the file `from_name` in the directory `from_dir` the second name `name` in the
/// sidecar's quarantine (creating that folder with `perms`), durably, as
/// [`quarantine`] describes. An existing `name` that is the very file (the same
/// device and inode), or a regular file with the very same bytes (the same damage
/// quarantined before from another inode: a recovery renames a new file in), keeps
/// it already; anything else there (the name is known in advance: another writer of a
/// shared sidecar may plant a symlink or another file under it) is left alone, and the
/// file gets `name-2`, `name-3`, … instead: otherwise the planted entry would stand in
/// for it, and the next step would replace the only copy.
pub(crate) fn quarantine_link(
    sidecar: &Sidecar,
    from_dir: &OwnedFd,
    from_name: &OsStr,
    name: &OsStr,
    perms: Perms,
) -> Result<Result<PathBuf>, Poisoning> {
    let created = match sidecar.sub(Sub::Quarantine, Op::Quarantine) {
        Ok(found) => found.is_none(),
        Err(e) => return Ok(Err(e)),
    };
    let qdir = match sidecar.sub_or_create(Sub::Quarantine, perms, Op::Quarantine) {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    let mut path = qdir.join(name);
    let source = match sys::stat_at(from_dir, from_name) {
        Ok(st) => (st.dev, st.ino),
        Err(e) => return Ok(Err(Error::io(Op::Quarantine, &path, e))),
    };
    for n in 1..=QUARANTINE_TRIES {
        let mut named = name.to_os_string();
        if n > 1 {
            named.push(format!("-{n}"));
        }
        path = qdir.join(&named);
        match sys::link_at(from_dir, from_name, qdir.fd(), &named) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if sys::stat_at(qdir.fd(), &named).is_ok_and(|st| (st.dev, st.ino) == source)
                    || read_regular(qdir.fd(), &named)
                        .is_some_and(|kept| Some(kept) == read_regular(from_dir, from_name))
                {
                    break;
                }
                if n == QUARANTINE_TRIES {
                    return Ok(Err(Error::io(
                        Op::Quarantine,
                        &path,
                        io::Error::other(format!(
                            "this name and {} others were taken by other files, none of them the one to keep",
                            QUARANTINE_TRIES - 1
                        )),
                    )));
                }
            }
            Err(e) => return Ok(Err(Error::io(Op::Quarantine, &path, e))),
        }
    }
    // The quarantine must survive: the next step replaces the damaged file's name.
    sys::fsync(qdir.fd()).map_err(|e| Poisoning(Error::io(Op::Quarantine, qdir.path(), e)))?;
    if created {
        let root = sidecar.root();
        sys::fsync(root.fd()).map_err(|e| Poisoning(Error::io(Op::Quarantine, root.path(), e)))?;
    }
    Ok(Ok(path))
}

/// The bytes of the regular file `name` in `dir` (never through a symlink; `None`
/// for anything else, or when it cannot be read).
fn read_regular(dir: impl std::os::fd::AsFd, name: &OsStr) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = sys::open_at(dir, name, Access::Read, 0).ok()?;
    if sys::stat_fd(&file).ok()?.kind != Kind::File {
        return None;
    }
    let mut bytes = Vec::new();
    (&file).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// How many names [`quarantine_link`] tries for one file (`name`, `name-2`, …).
const QUARANTINE_TRIES: u32 = 16;

/// The names in the quarantine (none without a sidecar or quarantine).
pub(crate) fn quarantined(sidecar: Option<&Sidecar>) -> Result<Vec<PathBuf>> {
    let Some(sidecar) = sidecar else {
        return Ok(Vec::new());
    };
    let Some(dir) = sidecar.sub(Sub::Quarantine, Op::Quarantine)? else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = dir
        .names(Op::Quarantine)?
        .iter()
        .map(|n| dir.join(n))
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(generation: u64, secs_ago: u64, now: SystemTime) -> BackupInfo {
        BackupInfo {
            generation,
            path: PathBuf::from(format!("gen-{generation}")),
            size: 1,
            committed: now - Duration::from_secs(secs_ago),
        }
    }

    #[test]
    fn a_backup_gone_since_the_listing_reads_as_gone() {
        // Another process's janitor can prune a listed backup before we read it; the
        // recovery and `check` loops pass over it as "pruned", so it must not come back
        // as an I/O error (which aborts a recovery).
        let dir = tempfile::tempdir().unwrap();
        let target = Target::resolve(&dir.path().join("s.json")).unwrap();
        let fd = sys::open_dir(&target.dir).unwrap();
        let perms = Perms {
            mode: 0o644,
            uid: sys::effective_uid(),
            gid: sys::effective_gid(),
        };
        let sidecar = Sidecar::open(&target, &fd, Some(perms)).unwrap().unwrap();
        sidecar
            .sub_or_create(Sub::Backups, perms, Op::Backup)
            .unwrap();
        let gone = BackupInfo {
            generation: 1,
            path: backups_dir(&target).join(backup_name(1)),
            size: 1,
            committed: UNIX_EPOCH,
        };
        assert!(open(&sidecar, &gone).unwrap().is_none());
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_rejected() {
        assert_eq!(parse_backup_name(&backup_name(42)), Some(42));
        assert_eq!(parse_backup_name(OsStr::new("gen-42.json")), None);
        assert_eq!(parse_backup_name(OsStr::new("notes.txt")), None);
    }

    #[test]
    fn retention_keeps_the_newest_and_one_per_bucket() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000 * 3600);
        // Ten backups, one every 30 minutes, newest first.
        let backups: Vec<_> = (0..10).map(|i| at(100 - i, i * 1800, now)).collect();
        let count_only = BackupPolicy {
            keep: 3,
            hourly: 0,
            daily: 0,
        };
        assert_eq!(
            keep_set(&backups, &count_only, now),
            BTreeSet::from([100, 99, 98])
        );
        let hourly = BackupPolicy {
            keep: 1,
            hourly: 3,
            daily: 0,
        };
        // `now` is on the hour, so the hour buckets are {100}, {99, 98}, {97, 96}:
        // the newest of each of the last three hours.
        assert_eq!(
            keep_set(&backups, &hourly, now),
            BTreeSet::from([100, 99, 97])
        );
        let none = BackupPolicy {
            keep: 0,
            hourly: 0,
            daily: 0,
        };
        assert!(keep_set(&backups, &none, now).is_empty());
    }
}
