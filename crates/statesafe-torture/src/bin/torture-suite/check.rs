//! What a legal state is, checked from outside the library after each crash or error.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use statesafe::Store;
use statesafe_torture::Doc;

use crate::driver::{self, NEW_COUNTER, OLD_COUNTER, Op, RESTORED_COUNTER};

/// The counter in the state file: `None` when the file does not exist.
///
/// # Errors
/// A description of the damage when the file exists but is not a whole document, or
/// when the library's own read of it fails.
pub fn counter(file: &Path) -> Result<Option<u64>, String> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the state file: {e}")),
    };
    let doc: Doc = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "the state file is not a whole document ({} bytes): {e}",
            bytes.len()
        )
    })?;
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&repaired);
    let snapshot = Store::<Doc>::options()
        .on_event(move |e| {
            if matches!(e, statesafe::Event::Recovered { .. }) {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .open(file)
        .and_then(|s| s.load())
        .map_err(|e| format!("the library cannot load the state file: {e}"))?;
    if repaired.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("the library found damage and repaired it".into());
    }
    // In journal mode the file is a snapshot; the counter is the journal's.
    let journal = file.with_file_name(".state.json.statesafe").join("journal");
    if journal.exists() {
        return Ok(Some(snapshot.state.counter));
    }
    Ok(Some(doc.counter))
}

/// Which version of the file is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The version before the operation (or no file, before a create).
    Old,
    /// The version the operation writes.
    New,
}

/// Classifies the file after an interrupted `op`: old, new, or a violation.
pub fn version(file: &Path, op: Op) -> Result<Version, String> {
    if op == Op::Recover {
        return recovery_version(file);
    }
    match (counter(file)?, op) {
        (None, Op::Create) => Ok(Version::Old),
        (None, _) => Err("the state file is gone".into()),
        (Some(OLD_COUNTER), op) if op != Op::Create => Ok(Version::Old),
        (Some(NEW_COUNTER), _) => Ok(Version::New),
        (Some(n), _) => Err(format!(
            "the state file holds counter {n}, neither old nor new"
        )),
    }
}

/// After an interrupted recovery, without the library (whose read would recover): the
/// damaged bytes still in place (old) or the last committed version restored (new:
/// the newest backup and the history's patch after it); and once
/// the damaged version is gone from the primary, it must be in quarantine.
fn recovery_version(file: &Path) -> Result<Version, String> {
    let dir = file
        .parent()
        .expect("invariant: the state file has a directory");
    let damaged = std::fs::read(driver::damaged_copy(dir)).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read the state file: {e}"))?;
    if bytes == damaged {
        return Ok(Version::Old);
    }
    match serde_json::from_slice::<Doc>(&bytes) {
        Ok(doc) if doc.counter == RESTORED_COUNTER => {}
        Ok(doc) => {
            return Err(format!(
                "recovery put counter {} in place, not the last committed {RESTORED_COUNTER}",
                doc.counter
            ));
        }
        Err(e) => {
            return Err(format!(
                "the state file is neither the damaged one nor whole: {e}"
            ));
        }
    }
    if !quarantined(dir, &damaged) {
        return Err("the damaged file was replaced but is not in quarantine".into());
    }
    Ok(Version::New)
}

/// Whether the quarantine of `dir/state.json` holds exactly `damaged`.
fn quarantined(dir: &Path, damaged: &[u8]) -> bool {
    let q = dir.join(".state.json.statesafe").join("quarantine");
    std::fs::read_dir(q).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| std::fs::read(e.path()).is_ok_and(|b| b == damaged))
    })
}

/// After an interrupted recovery: a fresh store's `load` recovers (if still needed)
/// to the last committed version, and the damaged bytes are in quarantine.
pub fn recovery_settles(dir: &Path) -> Result<(), String> {
    let file = dir.join("state.json");
    let snapshot = Store::<Doc>::open(&file)
        .and_then(|s| s.load())
        .map_err(|e| format!("a fresh load after the interrupted recovery failed: {e}"))?;
    if snapshot.state.counter != RESTORED_COUNTER {
        return Err(format!(
            "a fresh load gave counter {}, not the last committed {RESTORED_COUNTER}",
            snapshot.state.counter
        ));
    }
    let damaged = std::fs::read(driver::damaged_copy(dir)).map_err(|e| e.to_string())?;
    if !quarantined(dir, &damaged) {
        return Err("after a fresh load, the damaged file is not in quarantine".into());
    }
    Ok(())
}

/// Temporary files of `state.json` left in `dir`.
pub fn temps(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| is_temp(n))
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

fn is_temp(name: &OsStr) -> bool {
    name.to_string_lossy()
        .starts_with(".state.json.statesafe-tmp-")
}

/// The lock file of `dir/state.json`.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(".state.json.statesafe").join("lock")
}

/// Checks with `flock -n` (util-linux), from outside the library, that nobody holds
/// the lock. `Some(problem)` when it is held or cannot be checked.
pub fn lock_held(dir: &Path) -> Option<String> {
    let lock = lock_path(dir);
    if !lock.exists() {
        return None;
    }
    match Command::new("flock")
        .args(["-n", "-E", "99"])
        .arg(&lock)
        .arg("true")
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) if s.code() == Some(99) => Some("the lock is still held".into()),
        Ok(s) => Some(format!("flock -n failed: {s}")),
        Err(e) => Some(format!("cannot run flock(1): {e}")),
    }
}

/// The next writer's view: a fresh store opens and commits an update, after which no
/// temporary file is left, the lock is free, and the counter went up by exactly one.
pub fn recover(dir: &Path) -> Result<(), String> {
    let file = dir.join("state.json");
    let before = counter(&file)?.unwrap_or(0);
    let store = Store::<Doc>::options()
        .lock_timeout(std::time::Duration::from_secs(5))
        .open(&file)
        .map_err(|e| format!("the next open failed: {e}"))?;
    store
        .update_or_default(|d| d.counter += 1)
        .map_err(|e| format!("the next update failed: {e}"))?;
    drop(store);
    let after = counter(&file)?.unwrap_or(0);
    if after != before + 1 {
        return Err(format!(
            "the next update took the counter from {before} to {after}"
        ));
    }
    let left = temps(dir);
    if !left.is_empty() {
        return Err(format!(
            "temporary files left after the next write: {left:?}"
        ));
    }
    if let Some(p) = lock_held(dir) {
        return Err(format!("after the next write: {p}"));
    }
    Ok(())
}
