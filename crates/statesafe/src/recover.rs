//! Recovery from damaged files, restore of backups, and the read-only views
//! (check, info, backups, history, diff).
//!
//! Recovery is crash-safe and idempotent: the damaged file first gets a second name in
//! the quarantine (a hard link, keyed by its checksum, synced), and only then is the
//! restored version committed over it with the ordinary write protocol. A crash between
//! the two leaves the damaged file in place and in quarantine; the next attempt finds
//! the quarantine entry already there and carries on. Readers see the damaged version
//! or the restored one, never a missing file.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backup::{self, BackupInfo, BackupList};
use crate::error::{Error, Op, Result};
use crate::events::Event;
use crate::format::{self, Meta, Writer};
use crate::history::{self, Change, HistoryEntry};
use crate::lock::{self, Holder};
use crate::settings::{Format, RecoveryPolicy, Settings};
use crate::store::{Config, Snapshot, Store, is_damage};
use crate::sys;
use crate::transaction::{Base, Locked};
use crate::write::Current;

/// The result of [`Store::check`]: what is wrong, if anything. Nothing is changed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The state file.
    pub path: PathBuf,
    /// Whether it exists.
    pub exists: bool,
    /// Its generation (0 when missing).
    pub generation: u64,
    /// Its layout as found on disk.
    pub format: Option<Format>,
    /// It was changed outside statesafe (valid, so accepted).
    pub external: bool,
    /// Problems with the state file itself (empty when it is sound).
    pub problems: Vec<String>,
    /// Valid backups.
    pub backups_valid: usize,
    /// Backups that failed verification, with why.
    pub backups_damaged: Vec<(PathBuf, String)>,
    /// Files in the backups folder that statesafe did not put there.
    pub foreign: Vec<PathBuf>,
    /// Files kept in quarantine.
    pub quarantined: Vec<PathBuf>,
}

impl CheckReport {
    /// Whether the state file is sound and every backup verifies.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.backups_damaged.is_empty()
    }
}

/// A summary of a state file, from [`Store::info`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Info {
    /// The path given.
    pub path: PathBuf,
    /// The real file (symlinks resolved).
    pub real_path: PathBuf,
    /// Whether it exists.
    pub exists: bool,
    /// Its generation.
    pub generation: u64,
    /// Its layout on disk.
    pub format: Option<Format>,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: Option<SystemTime>,
    /// Who wrote the current generation and when (from the history), if recorded.
    pub last_writer: Option<(Writer, String)>,
    /// Backups on disk.
    pub backups: Vec<BackupInfo>,
    /// Who holds the lock now.
    pub lock_holder: Option<Holder>,
    /// The recorded settings.
    pub settings: Settings,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    pub(crate) fn recover_on_load(&self, damage: Error) -> Result<Snapshot<T>> {
        if self.config().recovery == RecoveryPolicy::Fail {
            return Err(damage);
        }
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("recover", true)?;
        let Some(cur) = current else {
            return Err(Error::NotFound {
                path: self.target.given.clone(),
            });
        };
        // Someone may have recovered it while we waited for the lock.
        let result = match self.verify(&cur, false) {
            Ok(v) => Ok(Snapshot {
                state: v.state,
                generation: cur.generation,
            }),
            Err(damage) if is_damage(&damage) => self
                .recover_locked(&mut guard, &temp_name, &cur, damage, false)
                .map(|(state, base)| Snapshot {
                    state,
                    generation: base.generation,
                }),
            Err(e) => Err(e),
        };
        guard.release();
        result
    }

    /// Quarantines the damaged `cur` and commits a replacement; returns it and its base.
    /// `force` restores from backups even when the policy says `fail`.
    pub(crate) fn recover_locked(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &OsString,
        cur: &Current,
        damage: Error,
        force: bool,
    ) -> Result<(T, Base)> {
        let config = self.config();
        let policy = match config.recovery {
            RecoveryPolicy::Fail if force => RecoveryPolicy::RestoreFromBackup,
            RecoveryPolicy::Fail => return Err(damage),
            p => p,
        };
        let damage_text = damage.to_string();
        let quarantined = backup::quarantine(&self.target, self.dir()?, cur.checksum, cur.perms)?;
        let (state, from) = match (policy, &self.opts.default_state) {
            (RecoveryPolicy::UseDefault, Some(default)) => (default(), None),
            _ => {
                let mut tried = Vec::new();
                let mut found = None;
                for b in self.list_backups()?.backups {
                    match self.verify_backup(&b) {
                        Ok(state) => {
                            found = Some((state, b.generation));
                            break;
                        }
                        // Only a backup read completely and found wrong is passed over. An
                        // I/O error proves nothing about it: skipping it would restore an
                        // older version and lose this one for good, so the recovery stops
                        // here (the damaged file stays in place) and can be retried.
                        Err(e) if is_damage(&e) => tried.push((b.path.clone(), e.to_string())),
                        // Pruned since the listing (by another process's janitor): it
                        // was past the retention window anyway.
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                match found {
                    Some((state, g)) => (state, Some(g)),
                    None => {
                        self.recorder.failure("unrecoverable");
                        return Err(Error::Unrecoverable {
                            path: self.target.given.clone(),
                            damage: Box::new(damage),
                            quarantined: Some(quarantined),
                            tried,
                        });
                    }
                }
            }
        };
        let outgoing = Base::of(cur, false, None);
        let change = Change::Recovery {
            quarantined: Some(quarantined.clone()),
            from,
        };
        let base = self.write_version(guard, temp_name, &state, Some(&outgoing), change)?;
        self.emit(Event::Recovered {
            path: self.target.given.clone(),
            damage: damage_text,
            quarantined,
            restored_from: from,
            generation: base.generation,
        });
        Ok((state, base))
    }

    /// Reads and verifies one backup: it parses, its own metadata (if any) vouches for
    /// its bytes, and it passes validation.
    fn verify_backup(&self, b: &BackupInfo) -> Result<T> {
        let (bytes, vouched) = read_with_meta(&b.path)?;
        if vouched == Some(false) {
            return Err(Error::Corrupt {
                path: b.path.clone(),
                line: None,
                column: None,
                reason: "its checksum does not match its contents (changed or damaged after it was kept)".into(),
            });
        }
        Ok(self
            .verify_bytes(&bytes, vouched.unwrap_or(true), false)?
            .state)
    }

    /// Checks the state file and its backups without changing anything.
    ///
    /// # Errors
    /// I/O errors reading them (damage is reported in the [`CheckReport`], not as an error).
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport {
            path: self.target.given.clone(),
            exists: false,
            generation: 0,
            format: None,
            external: false,
            problems: Vec::new(),
            backups_valid: 0,
            backups_damaged: Vec::new(),
            foreign: Vec::new(),
            quarantined: Vec::new(),
        };
        if let Some(cur) = self.read_current()? {
            report.exists = true;
            report.generation = cur.generation;
            report.external = cur.external;
            report.format = Some(detect_format(&cur.bytes));
            if let Err(e) = self.verify(&cur, false) {
                if !is_damage(&e) {
                    return Err(e);
                }
                report.problems.push(e.to_string());
            }
        }
        let BackupList { backups, foreign } = self.list_backups()?;
        for b in &backups {
            match self.verify_backup(b) {
                Ok(_) => report.backups_valid += 1,
                Err(e) if is_damage(&e) => {
                    report.backups_damaged.push((b.path.clone(), e.to_string()))
                }
                // Pruned since the listing: no longer a backup.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        report.foreign = foreign;
        if let Ok(entries) = std::fs::read_dir(backup::quarantine_dir(&self.target)) {
            report.quarantined = entries.flatten().map(|e| e.path()).collect();
            report.quarantined.sort();
        }
        Ok(report)
    }

    /// Recovers a damaged state file now, restoring the newest valid backup (or the
    /// default state, where [`crate::StoreOptions::on_corrupt_use_default`] is set),
    /// whatever the recovery policy. Returns the recovery event, or `None` when the
    /// file was sound.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unrecoverable`], lock and I/O errors.
    pub fn recover(&self) -> Result<Option<Event>> {
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("recover", true)?;
        let Some(cur) = current else {
            return Err(Error::NotFound {
                path: self.target.given.clone(),
            });
        };
        let outcome = match self.verify(&cur, false) {
            Ok(_) => None,
            Err(damage) if is_damage(&damage) => {
                let damage_text = damage.to_string();
                let (_, base) = self.recover_locked(&mut guard, &temp_name, &cur, damage, true)?;
                Some(Event::Recovered {
                    path: self.target.given.clone(),
                    damage: damage_text,
                    quarantined: backup::quarantine_dir(&self.target)
                        .join(format!("damaged-{:016x}", cur.checksum)),
                    restored_from: self
                        .list_backups()?
                        .backups
                        .iter()
                        .map(|b| b.generation)
                        .find(|g| *g < base.generation),
                    generation: base.generation,
                })
            }
            Err(e) => return Err(e),
        };
        guard.release();
        Ok(outcome)
    }

    /// Brings back the backup of `generation` as a new generation (the version it
    /// replaces is itself backed up, if valid). Returns the new generation.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such backup; [`Error::Corrupt`] or
    /// [`Error::Invalid`] when it fails verification; lock and write errors.
    pub fn restore(&self, generation: u64) -> Result<u64> {
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("restore", true)?;
        let list = self.list_backups()?;
        let Some(info) = list.backups.iter().find(|b| b.generation == generation) else {
            return Err(Error::NotFound {
                path: backup::backups_dir(&self.target).join(format!("gen-{generation:020}.json")),
            });
        };
        let state = self.verify_backup(info)?;
        let base = match &current {
            Some(cur) => match self.verify(cur, true) {
                Ok(v) => Some(Base::of(cur, true, v.value)),
                Err(damage) if is_damage(&damage) => {
                    backup::quarantine(&self.target, self.dir()?, cur.checksum, cur.perms)?;
                    Some(Base::of(cur, false, None))
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        let new = self.write_version(
            &mut guard,
            &temp_name,
            &state,
            base.as_ref(),
            Change::Restore { from: generation },
        )?;
        guard.release();
        Ok(new.generation)
    }

    /// The backups on disk, newest first, and any foreign files among them.
    ///
    /// # Errors
    /// I/O errors listing the folder.
    pub fn backups(&self) -> Result<BackupList> {
        self.list_backups()
    }

    /// Lists the backups once this store's own pending prunes are done, so that it
    /// sees what the retention policy keeps.
    fn list_backups(&self) -> Result<BackupList> {
        self.janitor.drain();
        backup::list(&self.target)
    }

    /// The retained history, oldest first. A change made outside statesafe that no
    /// commit has recorded yet is included as a pending external entry.
    ///
    /// # Errors
    /// I/O errors reading the history.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let config = self.config();
        let cur = self.read_current()?;
        let current = cur.as_ref().map_or(0, |c| c.generation);
        let mut entries = history::read(&self.target, &config.history, current, true)?;
        if let Some(cur) = cur.filter(|c| c.external)
            && entries.last().map(|e| e.generation) != Some(cur.generation)
        {
            let value = self.verify(&cur, true).ok().and_then(|v| v.value);
            entries.push(HistoryEntry {
                generation: cur.generation,
                time: crate::transaction::now_rfc3339(),
                writer: None,
                change: Change::External,
                patch: None,
                snapshot: value,
                note: Some("found on load; recorded at the next commit".into()),
            });
        }
        Ok(entries)
    }

    /// The document as it was at `generation`: the current file, a backup, or rebuilt
    /// from the history.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming why it cannot be rebuilt; I/O errors.
    pub fn document_at(&self, generation: u64) -> Result<Value> {
        if let Some(cur) = self.read_current()?
            && cur.generation == generation
        {
            let state = self.verify(&cur, false)?.state;
            return serde_json::to_value(&state).map_err(|source| Error::Serialize {
                path: self.target.given.clone(),
                source,
            });
        }
        if let Some(b) = self
            .list_backups()?
            .backups
            .iter()
            .find(|b| b.generation == generation)
            && let Ok(state) = self.verify_backup(b)
        {
            return serde_json::to_value(&state).map_err(|source| Error::Serialize {
                path: self.target.given.clone(),
                source,
            });
        }
        let config = self.config();
        let current = self.generation()?;
        let entries = history::read(&self.target, &config.history, current, false)?;
        history::document_at(&self.target.given, &entries, generation)
    }

    /// An RFC 6902 patch from the document at `from` to the document at `to`.
    ///
    /// # Errors
    /// As [`Store::document_at`].
    pub fn diff(&self, from: u64, to: u64) -> Result<json_patch::Patch> {
        let a = self.document_at(from)?;
        let b = self.document_at(to)?;
        Ok(json_patch::diff(&a, &b))
    }

    /// A summary of the file: generation, format, size, last writer, backups, lock holder.
    ///
    /// # Errors
    /// I/O errors.
    pub fn info(&self) -> Result<Info> {
        let config = self.config();
        let cur = self.read_current()?;
        let stat = std::fs::metadata(self.target.real()).ok();
        let generation = cur.as_ref().map_or(0, |c| c.generation);
        let last_writer = history::read(&self.target, &config.history, generation, false)?
            .into_iter()
            .rev()
            .find(|e| e.generation == generation)
            .and_then(|e| e.writer.map(|w| (w, e.time)));
        Ok(Info {
            path: self.target.given.clone(),
            real_path: self.target.real(),
            exists: cur.is_some(),
            generation,
            format: cur.as_ref().map(|c| detect_format(&c.bytes)),
            size: stat.as_ref().map_or(0, |m| m.len()),
            modified: stat.and_then(|m| m.modified().ok()),
            last_writer,
            backups: self.list_backups()?.backups,
            lock_holder: self.lock_holder(),
            settings: config.settings.clone(),
        })
    }

    /// Records `settings` with the file (atomically, under the lock) so that every
    /// writer that opens it from now on applies them; this store applies them at once.
    ///
    /// # Errors
    /// [`Error::BadSchema`] for an invalid schema; lock and I/O errors.
    pub fn save_settings(&self, settings: &Settings) -> Result<()> {
        let config = Config::new_for(&self.target, &self.opts, settings)?;
        let locked = self.lock_and_read("save settings", false)?;
        settings.write(&self.target.sidecar())?;
        self.set_config(config);
        locked.guard.release();
        Ok(())
    }

    /// Creates the file with `state` and records `settings` with it, under one lock.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the file exists; otherwise as
    /// [`Store::save_settings`] and [`Store::create`].
    pub fn create_with(&self, settings: &Settings, state: T) -> Result<u64> {
        let config = Config::new_for(&self.target, &self.opts, settings)?;
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("create", true)?;
        if current.is_some() {
            return Err(Error::AlreadyExists {
                path: self.target.given.clone(),
            });
        }
        settings.write(&self.target.sidecar())?;
        self.set_config(config);
        let new = self.write_version(&mut guard, &temp_name, &state, None, Change::Commit)?;
        guard.release();
        Ok(new.generation)
    }
}

fn detect_format(bytes: &[u8]) -> Format {
    if format::looks_sealed(bytes) {
        Format::Sealed
    } else {
        Format::Plain
    }
}

/// Reads a file and says whether its metadata record vouches for its bytes
/// (`None`: it has no record).
fn read_with_meta(path: &PathBuf) -> Result<(Vec<u8>, Option<bool>)> {
    let mut file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path: path.clone() }
        } else {
            Error::io(Op::Read, path, e)
        }
    })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(Op::Read, path, e))?;
    let vouched = match sys::get_meta_attr(&file) {
        Ok(sys::MetaAttr::Present(raw)) => Meta::decode(&raw).map(|m| m.matches(&bytes)),
        _ => None,
    };
    Ok((bytes, vouched))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_gone_since_the_listing_reads_as_not_found() {
        // Another process's janitor can prune a listed backup before we read it; the
        // recovery and `check` loops pass over `NotFound` as "pruned", so it must not
        // come back as an I/O error (which aborts a recovery).
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gen-00000000000000000001.json");
        match read_with_meta(&gone) {
            Err(Error::NotFound { path }) => assert_eq!(path, gone),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}
