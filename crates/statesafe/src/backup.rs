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
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Op, Result};
use crate::paths::Target;
use crate::settings::BackupPolicy;
use crate::sidecar;
use crate::sys;
use crate::write::Perms;

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

pub(crate) fn backups_dir(target: &Target) -> PathBuf {
    target.sidecar().join("backups")
}

pub(crate) fn quarantine_dir(target: &Target) -> PathBuf {
    target.sidecar().join("quarantine")
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
}

/// Gives the current file (generation `generation`, checksum `checksum`) a second
/// name in `backups/`. Runs on every commit: one `linkat`, and a `mkdir` only the
/// first time.
pub(crate) fn link_outgoing(
    target: &Target,
    dir: &OwnedFd,
    generation: u64,
    checksum: u64,
    perms: Perms,
) -> Result<()> {
    let backups = backups_dir(target);
    let path = backups.join(backup_name(generation));
    let link = || sys::link_at(dir, &target.name, rustix::fs::CWD, path.as_os_str());
    let mut result = match link() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            sidecar::make_dir(&backups, Some(perms))
                .map_err(|e| Error::io(Op::Backup, &backups, e))?;
            link()
        }
        other => other,
    };
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
        if holds(&path, checksum) {
            // Already backed up (a commit retried after a crash): same bytes.
            return Ok(());
        }
        // A different version under this generation's name: never overwrite or
        // delete it; move it to the quarantine and keep ours.
        let qdir = quarantine_dir(target);
        let _ = sidecar::make_dir(&qdir, Some(perms));
        let aside = qdir.join(format!(
            "stale-backup-gen-{generation}-{:016x}",
            crate::format::checksum(&std::fs::read(&path).unwrap_or_default())
        ));
        std::fs::rename(&path, &aside).map_err(|e| Error::io(Op::Backup, &path, e))?;
        result = link();
    }
    result.map_err(|e| Error::io(Op::Backup, path, e))
}

/// Whether the file at `path` carries a metadata record for bytes with `checksum`.
fn holds(path: &std::path::Path, checksum: u64) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match sys::get_meta_attr(&file) {
        Ok(sys::MetaAttr::Present(raw)) => {
            crate::format::Meta::decode(&raw).is_some_and(|m| m.xxh3 == checksum)
        }
        _ => std::fs::read(path).is_ok_and(|b| crate::format::checksum(&b) == checksum),
    }
}

/// Lists the backups directory (an empty list when there is none).
pub(crate) fn list(target: &Target) -> Result<BackupList> {
    let dir = backups_dir(target);
    let names = match sys::dir_names(&dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BackupList::default()),
        Err(e) => return Err(Error::io(Op::Backup, &dir, e)),
    };
    let mut list = BackupList::default();
    for name in names {
        let path = dir.join(&name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(Op::Backup, &path, e)),
        };
        match parse_backup_name(&name) {
            Some(generation) if meta.is_file() => list.backups.push(BackupInfo {
                generation,
                path,
                size: meta.len(),
                committed: meta.modified().unwrap_or(UNIX_EPOCH),
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
/// Foreign files are never touched. Runs on every commit, so with count-only
/// retention it reads names only.
pub(crate) fn prune(target: &Target, policy: &BackupPolicy) -> Result<usize> {
    let doomed: Vec<PathBuf> = if policy.hourly == 0 && policy.daily == 0 {
        let dir = backups_dir(target);
        let names = match sys::dir_names(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(Op::Backup, &dir, e)),
        };
        let mut ours: Vec<(u64, PathBuf)> = names
            .iter()
            .filter_map(|n| parse_backup_name(n).map(|g| (g, dir.join(n))))
            .collect();
        if ours.len() <= policy.keep as usize {
            return Ok(0);
        }
        ours.sort_by_key(|(g, _)| std::cmp::Reverse(*g));
        ours.split_off(policy.keep as usize)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    } else {
        let list = list(target)?;
        let keep = keep_set(&list.backups, policy, SystemTime::now());
        list.backups
            .into_iter()
            .filter(|b| !keep.contains(&b.generation))
            .map(|b| b.path)
            .collect()
    };
    let mut removed = 0;
    for path in doomed {
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(Op::Backup, &path, e)),
        }
    }
    Ok(removed)
}

/// Pruning after an ordinary commit that backed up `outgoing`: with count-only
/// retention, the one backup that just left the window is removed by name (one
/// `unlink`, no listing). Every 64th generation, after a gap in the generations, and
/// with time-based retention, the folder is pruned in full.
pub(crate) fn prune_after(target: &Target, policy: &BackupPolicy, outgoing: u64) -> Result<usize> {
    if policy.hourly != 0 || policy.daily != 0 || outgoing.is_multiple_of(64) {
        return prune(target, policy);
    }
    let Some(leaving) = outgoing
        .checked_sub(u64::from(policy.keep))
        .filter(|g| *g > 0)
    else {
        return Ok(0);
    };
    let path = backups_dir(target).join(backup_name(leaving));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(1),
        // Not there: the generations have a gap (a damaged version that was not kept, a
        // re-created file), so the window cannot be found by name; prune in full.
        Err(e) if e.kind() == io::ErrorKind::NotFound => prune(target, policy),
        Err(e) => Err(Error::io(Op::Backup, &path, e)),
    }
}

/// Gives the damaged current file a second name in `quarantine/`, keyed by its
/// checksum so that repeating a recovery after a crash finds it there already.
pub(crate) fn quarantine(
    target: &Target,
    dir: &OwnedFd,
    checksum: u64,
    perms: Perms,
) -> Result<PathBuf> {
    let qdir = quarantine_dir(target);
    let qfd = sidecar::make_dir(&qdir, Some(perms))
        .and_then(|()| sys::open_dir(&qdir))
        .map_err(|e| Error::io(Op::Quarantine, &qdir, e))?;
    let name = OsString::from(format!("damaged-{checksum:016x}"));
    let path = qdir.join(&name);
    match sys::link_at(dir, &target.name, &qfd, &name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(Op::Quarantine, &path, e)),
    }
    // The quarantine must survive: the next step replaces the damaged file's name.
    sys::fsync(&qfd).map_err(|e| Error::io(Op::Quarantine, &qdir, e))?;
    Ok(path)
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
