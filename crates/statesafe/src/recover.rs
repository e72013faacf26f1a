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
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backup::{self, BackupInfo, BackupList};
use crate::error::{Error, Op, Result};
use crate::events::{Event, Source};
use crate::format::{self, Meta, Writer};
use crate::history::{self, Change, HistoryEntry};
use crate::lock::{self, Holder};
use crate::settings::{Format, RecoveryPolicy, Settings};
use crate::sidecar::Sidecar;
use crate::store::{Config, Snapshot, Store, is_damage};
use crate::sys;
use crate::transaction::{Base, Locked};
use crate::validate;
use crate::write;
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
    /// statesafe has never written it (`external` too): the first write adopts it.
    pub adopted: bool,
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
    /// Its generation; for a deleted file, the last one its sidecar knows
    /// ([`Info::deleted`]); 0 for a file never created.
    pub generation: u64,
    /// When the file is missing while its sidecar shows commits (it was deleted, and
    /// every read refuses it with [`Error::Deleted`]): the last generation the sidecar
    /// knows. `None` when the file exists or never had a commit.
    pub deleted: Option<u64>,
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

/// What [`Store::newest_provable`] found.
enum Found<T> {
    Provable(Provable<T>),
    /// Nothing verifies: every backup refused, with why.
    Nothing(Vec<(PathBuf, String)>),
}

/// The newest version recovery can prove, from [`Store::newest_provable`].
struct Provable<T> {
    state: T,
    /// Its generation.
    generation: u64,
    /// When the history's patches rebuilt it: the backup generation they started from.
    rebuilt_from: Option<u64>,
    /// Where the whole copy it was read or rebuilt from was kept.
    source: Source,
    /// Journal mode: the generations of the journal's records applied last, first and
    /// last (a deleted snapshot's commits since the last compaction).
    journal: Option<(u64, u64)>,
}

impl<T: Serialize + DeserializeOwned> Store<T> {
    /// A load met damage in `cur`. Repairs it if the writers' lock is free at once;
    /// otherwise (or where this process may not write) serves the newest version it
    /// can prove, read-only: a read never waits for the writers.
    pub(crate) fn recover_on_load(&self, cur: &Current, damage: Error) -> Result<Snapshot<T>> {
        if self.config().recovery == RecoveryPolicy::Fail {
            return Err(damage);
        }
        let damage = self.unless_never_written(cur, damage)?;
        let Locked {
            mut guard,
            temp_name,
            current,
        } = match self.lock_and_read_within("recover", true, Duration::ZERO) {
            Ok(locked) => locked,
            Err(
                e @ (Error::LockTimeout { .. }
                | Error::PermissionDenied { .. }
                | Error::ReadOnly { .. }
                | Error::Poisoned { .. }),
            ) => return self.serve_unrepaired(cur, damage, &e),
            Err(e) => return Err(e),
        };
        let Some(cur) = current else {
            // Deleted since the read: `Deleted` when the sidecar shows commits, as a
            // load that finds it missing says (review20, finding 4: a `NotFound` here
            // was served as the default by `load_or_default`).
            let refused = self.refuse_deleted(Some(guard.sidecar()));
            guard.release();
            refused?;
            return Err(Error::NotFound {
                path: self.local().target.given.clone(),
            });
        };
        // Someone may have recovered it since we read it.
        let result = match self.verify(&cur, false) {
            Ok(v) => Ok(Snapshot {
                state: v.state,
                generation: cur.generation,
            }),
            Err(damage) if is_damage(&damage) => self
                .recover_locked(&mut guard, &temp_name, &cur, damage, false)
                .map(|(state, base, _)| Snapshot {
                    state,
                    generation: base.generation,
                }),
            Err(e) => Err(e),
        };
        guard.release();
        result
    }

    /// The read-only answer to damage when the lock is not ours: the newest version
    /// that can be proven, with an [`Event::DamageNotRepaired`]. Nothing is written.
    fn serve_unrepaired(&self, cur: &Current, damage: Error, why: &Error) -> Result<Snapshot<T>> {
        let because = match why {
            Error::LockTimeout {
                holder: Some(h), ..
            } => format!("the writers' lock is held by {h}"),
            Error::LockTimeout { .. } => "the writers' lock is held by another writer".into(),
            other => format!("this process cannot take the writers' lock ({other})"),
        };
        match self.newest_provable(cur)? {
            Found::Provable(p) => {
                self.emit(Event::DamageNotRepaired {
                    path: self.local().target.given.clone(),
                    damage: damage.to_string(),
                    because,
                    served: p.generation,
                    rebuilt_from: p.rebuilt_from,
                });
                Ok(Snapshot {
                    state: p.state,
                    generation: p.generation,
                })
            }
            Found::Nothing(tried) => Err(Error::Unrecoverable {
                path: self.local().target.given.clone(),
                damage: Box::new(damage),
                quarantined: None,
                tried,
            }),
        }
    }

    /// A file statesafe has never written (no generation known anywhere) that does
    /// not parse is not a damaged state file: it is left exactly as it is, never
    /// quarantined. Returns `damage` for a file statesafe knows.
    fn unless_never_written(&self, cur: &Current, damage: Error) -> Result<Error> {
        let never_written = cur.external
            && cur.generation == 1
            && write::highest_known_generation(self.sidecar()?.as_ref(), &self.local().lock)? == 0;
        match damage {
            Error::Corrupt {
                path,
                line,
                column,
                reason,
            } if never_written => Err(Error::Corrupt {
                path,
                line,
                column,
                reason: format!(
                    "{reason}; statesafe has never written this file, so it was left as it is"
                ),
            }),
            damage => Ok(damage),
        }
    }

    /// Quarantines the damaged `cur` and commits a replacement; returns it, its base
    /// and the [`Event::Recovered`] reported. `force` restores even when the policy
    /// says `fail`.
    pub(crate) fn recover_locked(
        &self,
        guard: &mut lock::Guard<'_>,
        temp_name: &OsString,
        cur: &Current,
        damage: Error,
        force: bool,
    ) -> Result<(T, Base, Event)> {
        let config = self.config();
        let policy = match config.recovery {
            RecoveryPolicy::Fail if force => RecoveryPolicy::RestoreFromBackup,
            RecoveryPolicy::Fail => return Err(damage),
            p => p,
        };
        let damage = self.unless_never_written(cur, damage)?;
        let damage_text = damage.to_string();
        let quarantined = self.quarantine(guard.sidecar(), cur)?;
        let (state, from, rebuilt_from) = match (policy, &self.opts.default_state) {
            (RecoveryPolicy::UseDefault, Some(default)) => (default(), None, None),
            _ => match self.newest_provable(cur)? {
                Found::Provable(p) => (p.state, Some(p.generation), p.rebuilt_from),
                Found::Nothing(tried) => {
                    self.recorder.failure("unrecoverable");
                    return Err(Error::Unrecoverable {
                        path: self.local().target.given.clone(),
                        damage: Box::new(damage),
                        quarantined: Some(quarantined),
                        tried,
                    });
                }
            },
        };
        // The damaged version is neither a backup nor an external change to record.
        let mut outgoing = Base::of(cur, false, None);
        outgoing.external = false;
        let change = Change::Recovery {
            quarantined: Some(quarantined.clone()),
            from,
        };
        let base = self.write_version(guard, temp_name, &state, Some(&outgoing), change)?;
        let event = Event::Recovered {
            path: self.local().target.given.clone(),
            damage: damage_text,
            quarantined,
            restored_from: from,
            rebuilt_from,
            generation: base.generation,
        };
        self.emit(event.clone());
        Ok((state, base, event))
    }

    /// The newest version committed before the damaged `cur` that can be proven: the newest
    /// backup that verifies, carried forward by the history's patches while they form
    /// an unbroken chain (each the next generation, each applying cleanly, the result
    /// passing verification like any version). `Err` lists every backup refused.
    ///
    /// Only a backup read completely and found wrong is passed over. An I/O error
    /// proves nothing about it: skipping it would restore an older version and lose
    /// this one for good, so the error is returned (the damaged file stays in place)
    /// and the recovery can be retried.
    fn newest_provable(&self, cur: &Current) -> Result<Found<T>> {
        // The newest generation committed before the damage: one less than the
        // damaged file's, or than the newest known (a sealed copy put back claims
        // an old generation).
        let below = cur.generation.max(
            write::highest_known_generation(self.sidecar()?.as_ref(), &self.local().lock)? + 1,
        );
        self.newest_provable_below(below)
    }

    /// [`Store::newest_provable`] up to generation `below - 1`.
    fn newest_provable_below(&self, below: u64) -> Result<Found<T>> {
        let mut tried = Vec::new();
        for b in self.list_backups()?.backups {
            match self.verify_backup(&b) {
                Ok(state) => {
                    return Ok(Found::Provable(
                        match self.carry_forward(&state, b.generation, below)? {
                            Some((state, generation)) => Provable {
                                state,
                                generation,
                                rebuilt_from: Some(b.generation),
                                source: Source::Backup,
                                journal: None,
                            },
                            None => Provable {
                                state,
                                generation: b.generation,
                                rebuilt_from: None,
                                source: Source::Backup,
                                journal: None,
                            },
                        },
                    ));
                }
                Err(e) if is_damage(&e) => tried.push((b.path.clone(), e.to_string())),
                // Pruned since the listing (by another process's janitor): it was
                // past the retention window anyway.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Found::Nothing(tried))
    }

    /// The newest version below generation `below` that a deleted file's backups or
    /// history prove: [`Store::newest_provable_below`], or the history alone where it
    /// reaches further (review20 finding 1: a file committed once, or whose backups
    /// were cleaned away, has no backup, but the history's first entry, and the first
    /// of each segment, holds the whole document with its checksum).
    fn newest_provable_deleted(&self, below: u64) -> Result<Found<T>> {
        let found = self.newest_provable_below(below)?;
        let history = self.provable_from_history(below)?;
        Ok(match (found, history) {
            (Found::Provable(p), Some(h)) if h.generation > p.generation => Found::Provable(h),
            (Found::Nothing(_), Some(h)) => Found::Provable(h),
            (found, _) => found,
        })
    }

    /// The history's newest entry below `below` that holds the whole document with a
    /// checksum it matches (and that passes this store's type, rule and schema),
    /// carried forward by the entries after it as [`Store::apply_chain`] carries a
    /// backup; `None` when there is no such entry. An entry whose document does not
    /// match its checksum (changed outside statesafe, damaged) is passed over for an
    /// older one. An I/O error reading the history is returned (see
    /// [`Store::carry_forward`]).
    fn provable_from_history(&self, below: u64) -> Result<Option<Provable<T>>> {
        let config = self.config();
        if config.history.keep == 0 || below == 0 {
            return Ok(None);
        }
        let sidecar = self.sidecar()?;
        let entries = history::read(sidecar.as_ref(), &config.history, below - 1, false)?;
        for start in entries.iter().rev() {
            let (Some(doc), Some(sum)) = (&start.snapshot, start.checksum) else {
                continue;
            };
            if history::checksum_of(doc) != sum {
                continue;
            }
            let Ok(state) = serde_json::from_value::<T>(doc.clone()) else {
                continue;
            };
            if let Some((state, generation)) =
                self.apply_chain_from(&state, start.generation, &entries, true)
            {
                return Ok(Some(Provable {
                    state,
                    generation,
                    rebuilt_from: Some(start.generation),
                    source: Source::History,
                    journal: None,
                }));
            }
            let valid = validate::check(
                self.path(),
                &state,
                self.opts.rule.as_ref(),
                config.schema.as_ref(),
            );
            if valid.is_ok() {
                return Ok(Some(Provable {
                    state,
                    generation: start.generation,
                    rebuilt_from: None,
                    source: Source::History,
                    journal: None,
                }));
            }
        }
        Ok(None)
    }

    /// Applies the history's entries after generation `from` to `state`, up to the
    /// newest generation before `below` that the chain reaches; `None` when it
    /// reaches none, or the result does not verify. An I/O error reading the history
    /// is returned, not taken for a broken chain: that would restore an older version
    /// than the one the history holds (the recovery stops and can be retried).
    fn carry_forward(&self, state: &T, from: u64, below: u64) -> Result<Option<(T, u64)>> {
        let config = self.config();
        if config.history.keep == 0 {
            return Ok(None);
        }
        let sidecar = self.sidecar()?;
        let entries = history::read(sidecar.as_ref(), &config.history, below - 1, false)?;
        Ok(self.apply_chain(state, from, &entries))
    }

    /// The chain of `entries` after `from`, applied to `state`, verified: it stops
    /// before an entry whose document does not match the checksum it records (changed
    /// outside statesafe or damaged), and before an entry without a checksum or a note
    /// saying why it has none once an entry of the chain had one (its checksum was
    /// removed); entries written before checksums were recorded are applied as they are.
    /// A start with no checksum of its own (a backup, whose file verifies otherwise):
    /// see [`Store::apply_chain_from`] for one that has one.
    pub(crate) fn apply_chain(
        &self,
        state: &T,
        from: u64,
        entries: &[HistoryEntry],
    ) -> Option<(T, u64)> {
        self.apply_chain_from(state, from, entries, false)
    }

    /// [`Store::apply_chain`] from a start that `checksummed` says was verified by
    /// a history checksum of its own (a history entry's snapshot): then the entries
    /// after it must carry one too, or a note saying why not, from the first on
    /// (review21rec, finding 4: the entry right after such a start was applied
    /// unverified once its checksum was removed).
    pub(crate) fn apply_chain_from(
        &self,
        state: &T,
        from: u64,
        entries: &[HistoryEntry],
        checksummed: bool,
    ) -> Option<(T, u64)> {
        let config = self.config();
        let mut doc = serde_json::to_value(state).ok()?;
        let mut at = from;
        let mut checksummed = checksummed;
        for entry in entries.iter().filter(|e| e.generation > from) {
            if entry.generation != at + 1
                || (checksummed && entry.checksum.is_none() && entry.note.is_none())
            {
                break;
            }
            let next = match (&entry.patch, &entry.snapshot) {
                (Some(patch), _) => {
                    let mut next = doc.clone();
                    if json_patch::patch(&mut next, patch).is_err() {
                        break;
                    }
                    next
                }
                (None, Some(snapshot)) => snapshot.clone(),
                (None, None) => break,
            };
            if let Some(sum) = entry.checksum {
                if history::checksum_of(&next) != sum {
                    tracing::warn!(target: "statesafe", "`{}`: {} {} does not produce the document it records (changed outside statesafe or damaged): recovery stops before it", self.path().display(), history::DAMAGED_ENTRY, entry.generation);
                    break;
                }
                checksummed = true;
            }
            doc = next;
            at = entry.generation;
        }
        if at == from {
            return None;
        }
        // The rebuilt document passes what any version must: this reader's type,
        // rule and schema.
        let state: T = serde_json::from_value(doc).ok()?;
        validate::check(
            self.path(),
            &state,
            self.opts.rule.as_ref(),
            config.schema.as_ref(),
        )
        .ok()?;
        Some((state, at))
    }

    /// For the history entry of a version made outside statesafe (`external`, already
    /// kept as a backup) whose document is too large to be kept as a snapshot: the
    /// patch from the version before it, rebuilt from the newest older backup and the
    /// history's patches, when that chain reaches it and the patch is at most
    /// `history.max_patch_bytes`. `None` otherwise (the entry then says why). This
    /// holds both documents as trees once, on the first commit after the change.
    pub(crate) fn external_patch(&self, external: u64) -> Option<json_patch::Patch> {
        let config = self.config();
        let before = external.checked_sub(1).filter(|g| *g > 0)?;
        let backups = self.list_backups().ok()?.backups;
        let outside = backups.iter().find(|b| b.generation == external)?;
        let older = backups.iter().find(|b| b.generation <= before)?;
        let kept = self.verify_backup(older).ok()?;
        let old = if older.generation < before {
            let sidecar = self.sidecar().ok()??;
            let entries = history::read(Some(&sidecar), &config.history, before, false).ok()?;
            let (state, at) = self.apply_chain(&kept, older.generation, &entries)?;
            if at != before {
                return None;
            }
            serde_json::to_value(state).ok()?
        } else {
            serde_json::to_value(kept).ok()?
        };
        let new = serde_json::to_value(self.verify_backup(outside).ok()?).ok()?;
        let patch = json_patch::diff(&old, &new);
        drop((old, new));
        let size = serde_json::to_vec(&patch).ok()?.len() as u64;
        (size <= config.history.max_patch_bytes).then_some(patch)
    }

    /// Gives the damaged `cur` a second name in the quarantine; a failed `fsync`
    /// there poisons the store, like one in a commit.
    pub(crate) fn quarantine(&self, sidecar: &Sidecar, cur: &Current) -> Result<PathBuf> {
        match backup::quarantine(
            sidecar,
            &self.local().target,
            self.dir()?,
            cur.checksum,
            cur.perms,
        ) {
            Ok(result) => result,
            Err(write::Poisoning(e)) => {
                self.poison();
                Err(e)
            }
        }
    }

    /// Reads and verifies one backup: it parses, its own metadata vouches for its
    /// bytes, and it passes validation. A backup without a metadata record, on a
    /// filesystem that keeps them, is refused: statesafe stamps every backup it makes,
    /// so that file is not one of them. Where the filesystem keeps no extended
    /// attributes, a backup is verified like a change made outside statesafe.
    fn verify_backup(&self, b: &BackupInfo) -> Result<T> {
        let file = match self.sidecar()? {
            Some(sidecar) => backup::open(&sidecar, b)?,
            None => None,
        };
        let Some(file) = file else {
            return Err(Error::NotFound {
                path: b.path.clone(),
            });
        };
        let (bytes, vouched) = read_with_meta(file, &b.path)?;
        let corrupt = |reason: &str| Error::Corrupt {
            path: b.path.clone(),
            line: None,
            column: None,
            reason: reason.into(),
        };
        let committed_by_us = match vouched {
            Vouched::Yes => true,
            Vouched::Unsupported => false,
            Vouched::No => {
                return Err(corrupt(
                    "its checksum does not match its contents (changed or damaged after it was kept)",
                ));
            }
            Vouched::Absent => {
                return Err(corrupt(
                    "it has no statesafe metadata record, so statesafe did not keep it (or could not vouch for it)",
                ));
            }
        };
        Ok(self
            .verify_bytes(&bytes, b.generation, committed_by_us, false)?
            .state)
    }

    /// Checks the state file and its backups without changing anything. A missing
    /// file whose sidecar shows committed generations (deleted: every read fails with
    /// [`Error::Deleted`]) is a problem, so the report is not [`CheckReport::is_ok`];
    /// a file never created is not.
    ///
    /// # Errors
    /// I/O errors reading them (damage is reported in the [`CheckReport`], not as an
    /// error); [`Error::Mismatch`] when a sound version does not fit this store's
    /// type, rule or schema (it is not damage, so this store cannot judge it).
    pub fn check(&self) -> Result<CheckReport> {
        if let Some(remote) = self.remote() {
            return remote.check(self);
        }
        let mut report = CheckReport {
            path: self.local().target.given.clone(),
            exists: false,
            generation: 0,
            format: None,
            external: false,
            adopted: false,
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
            report.adopted = cur.adopted;
            report.format = Some(detect_format(&cur));
            if let Some((damage, _)) = cur.journal.as_ref().and_then(|j| j.damage.as_ref()) {
                report.problems.push(damage.clone());
            }
            if let Err(e) = self.verify(&cur, false) {
                if !is_damage(&e) {
                    return Err(e);
                }
                report.problems.push(e.to_string());
            }
        } else {
            // A deleted file is a problem, not a state never created (review20,
            // finding 9: the report said it was sound while every read failed). A
            // first commit racing this look leaves the file as well as its evidence.
            match self.refuse_deleted(self.sidecar()?.as_ref()) {
                Ok(()) => {}
                Err(e @ (Error::Deleted { .. } | Error::BadPath { .. })) => {
                    if write::open_current(&self.local().target, self.dir()?)?.is_none() {
                        report.problems.push(e.to_string());
                    }
                }
                Err(e) => return Err(e),
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
        report.quarantined = backup::quarantined(self.sidecar()?.as_ref())?;
        Ok(report)
    }

    /// What a deletion in the file's sidecar could take without any reader noticing,
    /// as sentences naming the file, the cause and what to do (`statesafe check`
    /// prints them as notes): empty outside journal mode, and where every such loss is
    /// refused ("A deleted sidecar" in `docs/design.md`). In journal mode on a
    /// filesystem without user extended attributes, the snapshot's note that a journal
    /// follows it lives in the sidecar's `meta`, so deleting the whole sidecar loses
    /// the commits since the last compaction silently.
    ///
    /// # Errors
    /// An I/O error reading the state file's attribute.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// store.create(serde_json::json!({"n": 1}))?;
    /// assert!(store.undetected_deletions()?.is_empty()); // not in journal mode
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn undetected_deletions(&self) -> Result<Vec<String>> {
        if self.remote().is_some() || self.config().format != Format::Journal {
            return Ok(Vec::new());
        }
        let local = self.local();
        let Some((file, _)) = write::open_current(&local.target, self.dir()?)? else {
            return Ok(Vec::new());
        };
        let attr =
            sys::get_meta_attr(&file).map_err(|e| Error::io(Op::Read, &local.target.given, e))?;
        if !matches!(attr, sys::MetaAttr::Unsupported) {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "`{}` is in journal mode on a filesystem without user extended attributes: the snapshot's note that a journal follows it is kept in the sidecar `{}`, so a cleanup that deletes the whole sidecar would lose every commit since the last compaction without any reader noticing (deleting the journal alone is still refused); keep the file on a filesystem with user extended attributes, or keep cleanups away from the sidecar",
            local.target.given.display(),
            local.target.sidecar().display()
        )])
    }

    /// Recovers a damaged state file now, restoring the newest valid backup (or the
    /// default state, where [`crate::StoreOptions::on_corrupt_use_default`] is set),
    /// whatever the recovery policy. Returns the recovery event, or `None` when the
    /// file was sound.
    ///
    /// A state file that was deleted while its sidecar shows committed generations
    /// ([`Error::Deleted`]) is put back: the newest version the backups and the
    /// history prove, as the next generation ([`Event::Undeleted`]), with the
    /// permissions its sidecar kept for the file (a private file comes back private).
    ///
    /// # Errors
    /// [`Error::NotFound`] for a file that never had a commit, [`Error::Unrecoverable`]
    /// when no backup verifies, lock and I/O errors.
    pub fn recover(&self) -> Result<Option<Event>> {
        if let Some(remote) = self.remote() {
            return remote.recover(self);
        }
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("recover", true)?;
        let Some(cur) = current else {
            let event = self.undelete(&mut guard, &temp_name)?;
            guard.release();
            return Ok(Some(event));
        };
        let outcome = match self.verify(&cur, false) {
            Ok(v) if cur.journal.as_ref().is_some_and(|j| j.damage.is_some()) => {
                Some(self.journal_repair(&mut guard, &temp_name, &cur, &v.state)?)
            }
            Ok(_) => None,
            Err(damage) if is_damage(&damage) => Some(
                self.recover_locked(&mut guard, &temp_name, &cur, damage, true)?
                    .2,
            ),
            Err(e) => return Err(e),
        };
        guard.release();
        Ok(outcome)
    }

    /// [`Store::recover`] of a missing state file, with the lock held: refused with
    /// [`Error::NotFound`] when its sidecar shows no commit; otherwise the newest
    /// version [`Store::newest_provable`] finds below the last generation known is
    /// committed as the next generation. In journal mode the journal's records (the
    /// commits since the last compaction, changes to the snapshot deleted) are applied
    /// to that version when it is the one the journal follows; a journal holding
    /// generations the version put back lacks is kept in the quarantine before the
    /// commit starts a new one, never dropped.
    fn undelete(&self, guard: &mut lock::Guard<'_>, temp_name: &OsString) -> Result<Event> {
        let known = match self.refuse_deleted(Some(guard.sidecar())) {
            Ok(()) => {
                return Err(Error::NotFound {
                    path: self.local().target.given.clone(),
                });
            }
            Err(Error::Deleted { generation, .. }) => generation,
            Err(e) => return Err(e),
        };
        let p = match self.newest_provable_deleted(known + 1)? {
            Found::Provable(p) => p,
            Found::Nothing(tried) => {
                self.recorder.failure("unrecoverable");
                let damage = self
                    .refuse_deleted(Some(guard.sidecar()))
                    .expect_err("invariant: refused just above, under the same lock");
                return Err(Error::Unrecoverable {
                    path: self.local().target.given.clone(),
                    damage: Box::new(damage),
                    quarantined: None,
                    tried,
                });
            }
        };
        let sidecar = Arc::clone(guard.sidecar());
        let view = self.journal_view(Some(&sidecar), false)?;
        let p = match &view {
            Some(view) => self.replay_deleted(p, view, &sidecar)?,
            None => p,
        };
        let quarantined = self.keep_unapplied_journal(&sidecar, p.generation)?;
        let change = Change::Restore { from: p.generation };
        let base = self.write_version(guard, temp_name, &p.state, None, change)?;
        let event = Event::Undeleted {
            path: self.local().target.given.clone(),
            known,
            restored_from: p.generation,
            rebuilt_from: p.rebuilt_from,
            source: p.source,
            journal: p.journal,
            quarantined,
            generation: base.generation,
        };
        self.emit(event.clone());
        Ok(event)
    }

    /// Journal mode, a deleted snapshot: `p` carried forward by the journal's records
    /// when it is the version the journal follows (their history entries are written
    /// first, as a compaction writes them), with the generations of the records
    /// applied in [`Provable::journal`]; `p` as it is otherwise. The result passes what any version must.
    fn replay_deleted(
        &self,
        p: Provable<T>,
        view: &crate::journal::View,
        sidecar: &Sidecar,
    ) -> Result<Provable<T>> {
        // A version the history carried past the journal's start (a compaction that
        // moved the records there and failed before its rename, then commits appended
        // to the same journal): the records after it, once the history shows it is
        // their lineage (review21rec, finding 5: they were quarantined, acknowledged
        // commits rolled back).
        let later;
        let view = if p.generation > view.header.follows {
            let config = self.config();
            let entries = history::read(Some(sidecar), &config.history, p.generation, false)?;
            match view.after(p.generation, &entries) {
                Some(v) => {
                    later = v;
                    &later
                }
                None => return Ok(p),
            }
        } else {
            view
        };
        let follows = view.header.follows;
        if p.generation != follows || view.newest() <= follows {
            return Ok(p);
        }
        let start = serde_json::to_value(&p.state).map_err(|source| Error::Serialize {
            path: self.path().to_path_buf(),
            source,
        })?;
        let mut doc = start.clone();
        let reached = view.replay(&mut doc);
        if reached == follows {
            return Ok(p);
        }
        let Ok(state) = serde_json::from_value::<T>(doc) else {
            return Ok(p);
        };
        let config = self.config();
        if validate::check(
            self.path(),
            &state,
            self.opts.rule.as_ref(),
            config.schema.as_ref(),
        )
        .is_err()
        {
            return Ok(p);
        }
        // The records' history entries, before the commit replaces the journal (a
        // failure is bookkeeping, as in a compaction: the records are in the version
        // put back, and the journal is quarantined below if it is not all there).
        match self.record_journal_history(
            sidecar,
            view,
            Some(start),
            reached,
            self.journal_perms(sidecar),
        ) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "statesafe", "`{}`: recording the journal's records in the history failed: {}", self.path().display(), e.with_causes());
            }
            Err(write::Poisoning(e)) => {
                self.poison();
                return Err(e);
            }
        }
        Ok(Provable {
            state,
            generation: reached,
            rebuilt_from: Some(p.rebuilt_from.unwrap_or(p.generation)),
            source: p.source,
            journal: Some((follows + 1, reached)),
        })
    }

    /// The permissions of the journal in `sidecar` (it follows the state file's at
    /// every commit), for what is written from it once the state file is gone, when
    /// the journal is the sidecar owner's; else the sidecar's own owner, group and
    /// mode (its file bits). A journal of another owner says nothing about who the
    /// state's files belong to: whoever may write the sidecar can put a hard link to a
    /// third user's file in its place, and root would make the new files that user's.
    /// A private mode and the caller's ids when neither can be read.
    fn journal_perms(&self, sidecar: &Sidecar) -> write::Perms {
        let root = sidecar.root();
        let journal = sys::stat_at(root.fd(), std::ffi::OsStr::new(crate::journal::JOURNAL));
        match (journal, sys::stat_fd(root.fd())) {
            (Ok(st), Ok(side)) if st.uid == side.uid => write::Perms {
                mode: st.mode & 0o666,
                uid: st.uid,
                gid: st.gid,
            },
            (_, Ok(side)) => write::Perms {
                mode: side.mode & 0o666,
                uid: side.uid,
                gid: side.gid,
            },
            (_, Err(_)) => write::Perms {
                mode: 0o600,
                uid: sys::effective_uid(),
                gid: sys::effective_gid(),
            },
        }
    }

    /// Before a deleted state file is put back at generation `upto`: a journal in
    /// `sidecar` that holds a generation past it (or whose header does not verify)
    /// gets a second name in the quarantine (`journal-unapplied-XXH3`), synced, since
    /// the commit that follows starts a new journal in its place. Its path, or `None`
    /// when there is no journal or nothing in it is past `upto`.
    fn keep_unapplied_journal(&self, sidecar: &Sidecar, upto: u64) -> Result<Option<PathBuf>> {
        let name = std::ffi::OsStr::new(crate::journal::JOURNAL);
        let Some(bytes) = sidecar.root().read(name, Op::Read)? else {
            return Ok(None);
        };
        let past = match crate::journal::Header::decode(&bytes) {
            Some(header) => {
                let scan =
                    crate::journal::scan(&bytes, crate::journal::HEADER_LEN, header.follows + 1);
                let newest = scan.records.last().map_or(header.follows, |r| r.generation);
                newest.max(scan.max_seen) > upto || scan.damage.is_some()
            }
            None => bytes.iter().any(|b| *b != 0),
        };
        if !past {
            return Ok(None);
        }
        let perms = self.journal_perms(sidecar);
        match crate::journal::quarantine_as(
            sidecar,
            "journal-unapplied",
            format::checksum(&bytes),
            perms,
        ) {
            Ok(result) => result.map(Some),
            Err(write::Poisoning(e)) => {
                self.poison();
                Err(e)
            }
        }
    }

    /// Brings back the backup of `generation` as a new generation (the version it
    /// replaces is itself backed up, if valid). Returns the new generation.
    ///
    /// # Errors
    /// [`Error::GenerationUnavailable`] when neither a backup nor the history (nor, in
    /// journal mode, the journal) can produce that generation, or it is not older than
    /// the current one; [`Error::Corrupt`] or
    /// [`Error::Invalid`] when it fails verification; lock and write errors.
    pub fn restore(&self, generation: u64) -> Result<u64> {
        if let Some(remote) = self.remote() {
            return remote.restore(self, generation);
        }
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("restore", true)?;
        let list = self.list_backups()?;
        let state = match list.backups.iter().find(|b| b.generation == generation) {
            Some(info) => self.verify_backup(info)?,
            None => {
                // Journal mode: a version since the last compaction, replayed from the
                // snapshot and the records up to it.
                let current_generation = current.as_ref().map_or(0, |c| c.generation);
                let doc = match self.journal_view(Some(guard.sidecar()), true)? {
                    Some(view) if generation < current_generation => {
                        view.document(self.path(), generation)?
                    }
                    _ => None,
                };
                // Else the history, as `document_at` rebuilds it (its checksums
                // verified); a generation nothing can rebuild is
                // `GenerationUnavailable`, never `NotFound`, which says the state file
                // does not exist and invites creating it afresh (review21node,
                // finding 5).
                let doc = match doc {
                    Some(doc) => doc,
                    None if generation == 0 || generation >= current_generation => {
                        return Err(Error::GenerationUnavailable {
                            path: self.path().to_path_buf(),
                            generation,
                            reason: if generation == 0 {
                                "generation 0 is the state before its first commit".to_owned()
                            } else {
                                format!(
                                    "it is not older than the current generation ({current_generation}); restore brings back an earlier one"
                                )
                            },
                        });
                    }
                    None => {
                        let view = self.journal_view(Some(guard.sidecar()), false)?;
                        self.rebuild_from_history(
                            Some(guard.sidecar()),
                            view.as_ref(),
                            current_generation,
                            generation,
                        )?
                    }
                };
                self.verify_cached(&Arc::new(doc), generation, false)?.state
            }
        };
        let mut quarantined = None;
        let base = match &current {
            Some(cur) => match self.verify(cur, true) {
                Ok(v) => Some(Base::of(cur, true, v.value)),
                Err(Error::Mismatch { .. }) => Some(Base::of(cur, true, None)),
                Err(damage) if is_damage(&damage) => {
                    let kept = self.quarantine(guard.sidecar(), cur)?;
                    quarantined = Some((kept, damage.to_string()));
                    Some(Base::of(cur, false, None))
                }
                Err(e) => return Err(e),
            },
            None => None,
        };
        // A deleted file (its sidecar shows commits) is put back, as `recover` puts
        // it back: said with the same event, and, in journal mode, a journal holding
        // generations past the version restored kept in the quarantine before the
        // commit starts a new one.
        let deleted = match &current {
            Some(_) => None,
            None => match self.refuse_deleted(Some(guard.sidecar())) {
                Ok(()) => None,
                Err(Error::Deleted {
                    generation: known, ..
                }) => {
                    let sidecar = Arc::clone(guard.sidecar());
                    Some((known, self.keep_unapplied_journal(&sidecar, generation)?))
                }
                Err(e) => return Err(e),
            },
        };
        let new = self.write_version(
            &mut guard,
            &temp_name,
            &state,
            base.as_ref(),
            Change::Restore { from: generation },
        )?;
        guard.release();
        self.report_quarantined(quarantined, new.generation);
        if let Some((known, journal)) = deleted {
            self.emit(Event::Undeleted {
                path: self.local().target.given.clone(),
                known,
                restored_from: generation,
                rebuilt_from: None,
                source: Source::Backup,
                journal: None,
                quarantined: journal,
                generation: new.generation,
            });
        }
        Ok(new.generation)
    }

    /// The backups on disk, newest first, and any foreign files among them.
    ///
    /// # Errors
    /// I/O errors listing the folder.
    pub fn backups(&self) -> Result<BackupList> {
        if let Some(remote) = self.remote() {
            return remote.backups(self);
        }
        let view = self.journal_view(None, true)?;
        let mut list = self.list_backups()?;
        if let Some(view) = view {
            // Journal mode: the versions since the last compaction are the snapshot
            // and the records (at no extra write), under the same retention as the
            // files, counted together with them.
            let policy = self.config().backups;
            let versions = view.versions(self.path());
            let files: std::collections::BTreeSet<u64> =
                list.backups.iter().map(|b| b.generation).collect();
            let mut all: Vec<BackupInfo> = list
                .backups
                .iter()
                .cloned()
                .chain(
                    versions
                        .into_iter()
                        .filter(|v| !files.contains(&v.generation)),
                )
                .collect();
            all.sort_by_key(|b| std::cmp::Reverse(b.generation));
            let keep = backup::keep_set(&all, &policy, std::time::SystemTime::now());
            list.backups = all
                .into_iter()
                .filter(|b| files.contains(&b.generation) || keep.contains(&b.generation))
                .collect();
        }
        Ok(list)
    }

    /// Lists the backups once this store's own pending prunes are done, so that it
    /// sees what the retention policy keeps.
    fn list_backups(&self) -> Result<BackupList> {
        self.local().janitor.drain();
        backup::list(self.sidecar()?.as_ref())
    }

    /// The retained history, oldest first. A change made outside statesafe that no
    /// commit has recorded yet is included as a pending external entry; an entry
    /// whose document does not match the checksum it records (changed outside
    /// statesafe, or damaged) is shown as [`Change::Damaged`].
    ///
    /// # Errors
    /// I/O errors reading the history.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        if let Some(remote) = self.remote() {
            return remote.history(self);
        }
        let config = self.config();
        // Journal mode: the commits since the last compaction are the journal's
        // records. Read first: a compaction moves them into the log before it replaces
        // the journal, so the log read after it holds whatever this journal lacks.
        let view = self.journal_view(None, false)?;
        let cur = self.read_current()?;
        let current = match &cur {
            Some(c) => c.generation,
            None => self.newest_known(view.as_ref())?,
        };
        // Read with the entries before the retention still on disk: the snapshot the
        // retained ones are rebuilt from, to verify them (shown as damaged when they
        // do not produce the document they record).
        let mut entries = history::read(self.sidecar()?.as_ref(), &config.history, current, false)?;
        if let Some(view) = &view {
            entries = view.merge(entries, current, &config.history);
        }
        history::mark_damaged(&mut entries);
        let oldest = current.saturating_sub(u64::from(config.history.keep)) + 1;
        entries.retain(|e| e.generation >= oldest);
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
                checksum: value.as_deref().map(history::checksum_of),
                snapshot: value.map(Arc::unwrap_or_clone),
                note: Some("found on load; recorded at the next commit".into()),
            });
        }
        Ok(entries)
    }

    /// For a missing state file: the newest generation its sidecar knows (0 when it
    /// knows none), as `Store::refuse_deleted` counts it, so that the history of a
    /// deleted file still shows every commit it holds (review20 finding 2: read up to
    /// generation 0, it showed none, and `statesafe log` said "no history recorded").
    fn newest_known(&self, view: Option<&crate::journal::View>) -> Result<u64> {
        let sidecar = self.sidecar()?;
        let known = write::highest_known_generation(sidecar.as_ref(), &self.local().lock)?;
        Ok(known.max(view.map_or(0, crate::journal::View::newest_generation)))
    }

    /// The document as it was at `generation`: the current file, a backup, or rebuilt
    /// from the history.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming why it cannot be rebuilt; I/O errors.
    pub fn document_at(&self, generation: u64) -> Result<Value>
    where
        T: 'static,
    {
        if let Some(remote) = self.remote() {
            return remote.document_at(self, generation);
        }
        if let Some(cur) = self.read_current()?
            && cur.generation == generation
        {
            let state = self.verify(&cur, false)?.state;
            drop(cur);
            return self.value_of(state);
        }
        // Journal mode: a generation since the last compaction, replayed.
        if let Some(view) = self.journal_view(None, true)?
            && let Some(doc) = view.document(self.path(), generation)?
        {
            return Ok(doc);
        }
        if let Some(b) = self
            .list_backups()?
            .backups
            .iter()
            .find(|b| b.generation == generation)
            && let Ok(state) = self.verify_backup(b)
        {
            return self.value_of(state);
        }
        let view = self.journal_view(None, false)?;
        let current = match self.generation()? {
            0 => self.newest_known(view.as_ref())?,
            g => g,
        };
        self.rebuild_from_history(self.sidecar()?.as_ref(), view.as_ref(), current, generation)
    }

    /// The document at `generation` rebuilt from the history (its checksums verified)
    /// read from `sidecar` up to `current`, with a journal-mode store's records since
    /// the last compaction (`view`) merged in: what `document_at` and `restore` fall
    /// back on when neither the file, the journal's replay nor a backup holds it.
    fn rebuild_from_history(
        &self,
        sidecar: Option<&Sidecar>,
        view: Option<&crate::journal::View>,
        current: u64,
        generation: u64,
    ) -> Result<Value> {
        let config = self.config();
        let mut entries = history::read(sidecar, &config.history, current, false)?;
        if let Some(view) = view {
            entries = view.merge(entries, current, &config.history);
        }
        history::document_at(&self.local().target.given, &entries, generation)
    }

    /// An RFC 6902 patch from the document at `from` to the document at `to`.
    ///
    /// # Errors
    /// As [`Store::document_at`].
    pub fn diff(&self, from: u64, to: u64) -> Result<json_patch::Patch>
    where
        T: 'static,
    {
        let a = self.document_at(from)?;
        let b = self.document_at(to)?;
        Ok(json_patch::diff(&a, &b))
    }

    /// The document as JSON. For the untyped store the state already is: it is
    /// moved, not copied, so that `diff` of a large document holds its two trees
    /// and no third.
    fn value_of(&self, state: T) -> Result<Value>
    where
        T: 'static,
    {
        let state: Box<dyn std::any::Any> = Box::new(state);
        match state.downcast::<Value>() {
            Ok(value) => Ok(*value),
            Err(other) => {
                let state = other.downcast::<T>().expect("invariant: the box holds a T");
                serde_json::to_value(&*state).map_err(|source| Error::Serialize {
                    path: self.path().to_path_buf(),
                    source,
                })
            }
        }
    }

    /// A summary of the file: generation, format, size, last writer, backups, lock holder.
    /// A deleted file (missing while its sidecar shows commits) is described by what
    /// the sidecar knows: [`Info::deleted`], the last generation known and its writer.
    ///
    /// # Errors
    /// I/O errors; [`Error::Unsafe`] for a sidecar refused.
    pub fn info(&self) -> Result<Info> {
        if let Some(remote) = self.remote() {
            return remote.info(self);
        }
        let config = self.config();
        let cur = self.read_current()?;
        let stat = std::fs::metadata(self.local().target.real()).ok();
        // A deleted file is described by what its sidecar knows (fix21rs: it was
        // reported as generation 0 with no writer, as a file never created).
        let deleted = match &cur {
            Some(_) => None,
            None => match self.refuse_deleted(self.sidecar()?.as_ref()) {
                Err(Error::Deleted { generation, .. }) => Some(generation),
                Ok(()) | Err(Error::BadPath { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        let generation = cur.as_ref().map_or(deleted.unwrap_or(0), |c| c.generation);
        let mut entries =
            history::read(self.sidecar()?.as_ref(), &config.history, generation, false)?;
        if let Some(view) = self.journal_view(None, false)? {
            entries = view.merge(entries, generation, &config.history);
        }
        let last_writer = entries
            .into_iter()
            .rev()
            .find(|e| e.generation == generation)
            .and_then(|e| e.writer.map(|w| (w, e.time)));
        Ok(Info {
            path: self.local().target.given.clone(),
            real_path: self.local().target.real(),
            exists: cur.is_some(),
            generation,
            deleted,
            format: cur.as_ref().map(detect_format),
            size: stat.as_ref().map_or(0, |m| m.len()),
            modified: stat.and_then(|m| m.modified().ok()),
            last_writer,
            backups: self.list_backups()?.backups,
            lock_holder: self.lock_holder(),
            settings: config.settings.clone(),
        })
    }

    /// Writes `settings` into the sidecar (call with the lock); a failed `fsync`
    /// poisons the store.
    fn write_settings(&self, sidecar: &Sidecar, settings: &Settings) -> Result<()> {
        self.settings_written();
        match settings.write(sidecar) {
            Ok(result) => result,
            Err(write::Poisoning(e)) => {
                self.poison();
                Err(e)
            }
        }
    }

    /// Leaving journal mode (the lock held, the newest state in the snapshot): takes
    /// the snapshot's note that a journal follows it out of its metadata record, durably,
    /// before the settings say `plain`; otherwise plain readers would take it for a
    /// snapshot whose sidecar was deleted (`store::refuse_lost_journal`).
    fn clear_journal_follows(&self) -> Result<()> {
        let local = self.local();
        let dir = self.dir()?;
        let Some(cur) = write::read_current(&local.target, dir, &local.lock, false)? else {
            return Ok(());
        };
        if !cur.journal_follows {
            return Ok(());
        }
        self.restamp_snapshot(&cur, cur.generation)
    }

    /// Rewrites the snapshot `cur`'s metadata record in place, under the lock: its
    /// generation becomes `generation`, without the note that a journal follows it
    /// (the attribute, one `fsetxattr` and an `fsync`; where the filesystem has no
    /// user attributes, the sidecar's record).
    fn restamp_snapshot(&self, cur: &Current, generation: u64) -> Result<()> {
        let local = self.local();
        let dir = self.dir()?;
        let meta = Meta {
            v: 1,
            generation,
            xxh3: cur.checksum,
            journal: false,
        };
        let unwritten = |what: &str| {
            Error::io(
                Op::WriteMeta,
                &local.target.given,
                std::io::Error::other(format!("the snapshot's {what} could not be rewritten")),
            )
        };
        let Some(stamped) = write::stamp_meta(&local.target, dir, meta) else {
            // No user attributes here: the note is in the sidecar's record. (With the
            // note in the attribute, the attribute must change: else it still says so.)
            let in_attribute = sys::open_at(dir, &local.target.name, sys::Access::Read, 0)
                .ok()
                .and_then(|f| sys::get_meta_attr(&f).ok())
                .is_some_and(|a| matches!(a, sys::MetaAttr::Present(_)));
            if in_attribute {
                return Err(unwritten("metadata attribute"));
            }
            let sidecar = self
                .sidecar()?
                .ok_or_else(|| unwritten("metadata attribute"))?;
            return match write::write_sidecar_meta(&sidecar, meta, self.opts.durability) {
                Ok(true) => Ok(()),
                Ok(false) => Err(unwritten("metadata record in the sidecar")),
                Err(e) => {
                    self.poison();
                    Err(Error::io(Op::SyncFile, sidecar.root().join("meta"), e))
                }
            };
        };
        if self.opts.durability == write::Durability::Full
            && let Err(e) = stamped.sync_all()
        {
            self.poison();
            return Err(Error::io(Op::SyncFile, &local.target.given, e));
        }
        Ok(())
    }

    /// Accepts the snapshot of a journal-mode file whose journal is lost as the current
    /// state: the loss that every read and commit refuses (`Error::Corrupt`, "A deleted
    /// sidecar" in `docs/design.md`: the sidecar deleted, or the journal alone). Under
    /// the writers' lock, the snapshot's metadata record is rewritten in place (its
    /// bytes are not touched) with a generation past every generation the sidecar
    /// records (the metadata record, backups, history, lock record) and past every
    /// record the lost journal could have held up to its furthest published durable
    /// end (one per 32 bytes, the smallest record), without the note that a
    /// journal follows it; the next commit compacts and starts a new journal. So no
    /// acknowledged generation number is used again for other contents (a stale
    /// compare-and-swap fails). Nothing is deleted: the lost journal is gone already,
    /// and what is left of the sidecar (settings, backups, history, the lock file's
    /// slots naming the lost journal) stays as it is. Where an older copy of the
    /// snapshot's own journal was left in its place, its records are committed
    /// versions nothing lost: the newest document they replay to is accepted instead
    /// of the bare snapshot (written as a new snapshot, and recorded in the history as
    /// a restore of the copy's last generation).
    ///
    /// Returns the snapshot's new generation, or `None` when no loss is detected (the
    /// file is then left alone: accepting is only ever the way out of that refusal).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] for a PostgreSQL state, lock and
    /// I/O errors.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store: statesafe::Store = statesafe::Store::open(dir.path().join("s.json"))?;
    /// store.create(serde_json::json!({"n": 1}))?;
    /// assert_eq!(store.accept_snapshot()?, None); // nothing was lost
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_snapshot(&self) -> Result<Option<u64>> {
        if self.remote().is_some() {
            return Err(Error::Unsupported {
                path: self.path().to_path_buf(),
                what: "accepting a snapshot".into(),
                why: "a PostgreSQL state has no journal to lose".into(),
            });
        }
        let Locked {
            mut guard,
            temp_name,
            ..
        } = self.lock_and_read("accept-snapshot", false)?;
        let local = self.local();
        let dir = self.dir()?;
        let Some(cur) = write::read_current(&local.target, dir, &local.lock, true)? else {
            return Err(Error::NotFound {
                path: local.target.given.clone(),
            });
        };
        let sidecar = self.sidecar()?;
        let header = crate::journal::Header::new(cur.generation, cur.checksum);
        // What is left in the journal's place: nothing, a journal that follows an
        // earlier generation, or an older copy of this snapshot's own journal (fewer
        // records than the lock file published): quarantined below, never removed.
        let journal_path = local.target.sidecar().join(crate::journal::JOURNAL);
        let left = match &sidecar {
            Some(s) => s.root().open(
                std::ffi::OsStr::new(crate::journal::JOURNAL),
                sys::Access::Read,
                0,
                crate::sidecar::Use::Read,
                Op::Read,
            )?,
            None => None,
        };
        let left = match left {
            Some(file) => {
                let mut bytes = Vec::new();
                (&file)
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::io(Op::Read, &journal_path, e))?;
                Some(bytes)
            }
            None => None,
        };
        // Only the refusal of a lost journal is accepted: a noted snapshot and a read
        // that refuses it as such (not damage, which `recover` handles).
        let refused = matches!(
            self.read_current(),
            Err(Error::Corrupt { reason, .. }) if crate::error::is_lost_journal(&reason)
        );
        if !cur.journal_follows || !refused {
            return Ok(None);
        }
        if let (Some(s), Some(bytes)) = (&sidecar, &left) {
            match crate::journal::quarantine(s, format::checksum(bytes), cur.perms) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(write::Poisoning(e)) => {
                    self.poison();
                    return Err(e);
                }
            }
        }
        let header = header.checksum();
        let published = match &sidecar {
            Some(s) => local.lock.published_journal_end(s, header)?.unwrap_or(0),
            None => 0,
        };
        let lost = published.saturating_sub(crate::journal::HEADER_LEN as u64)
            / crate::journal::MIN_RECORD;
        let generation = write::highest_known_generation(sidecar.as_ref(), &local.lock)?
            .max(cur.generation + lost)
            + 1;
        if generation > format::MAX_GENERATION {
            return Err(Error::Unsupported {
                path: self.path().to_path_buf(),
                what: "accepting the snapshot".into(),
                why: format!("its generation would pass {}", format::MAX_GENERATION),
            });
        }
        // An older copy of this snapshot's own journal holds committed versions that
        // nothing lost: the newest of them is accepted, not the bare snapshot.
        if let Some((state, kept)) = match &left {
            Some(bytes) => self.survivors_of_copy(&cur, &journal_path, bytes),
            None => None,
        } {
            // Written as a new snapshot at `generation` with the ordinary protocol (the
            // journal step compacts: the base has no journal). The outgoing snapshot is
            // not linked as a backup: it would be named after a generation it never
            // had, and its own generation's version is in the history already.
            // (`valid: false` also means no `ExternalChange` for it: none is due. This
            // path needs the snapshot's record to note a journal and to match its
            // bytes, `journal_follows`, so it was not changed outside statesafe; a
            // change by hand beside a journal is refused as such before it, review15:
            // `red15::review15_a_snapshot_changed_by_hand_beside_an_older_journal_copy_is_reported`.)
            debug_assert!(
                !cur.external,
                "invariant: a noted snapshot matches its record"
            );
            let mut base = Base::of(&cur, false, None);
            base.generation = generation - 1;
            base.journal = None;
            let new = self.write_version(
                &mut guard,
                &temp_name,
                &state,
                Some(&base),
                Change::Restore { from: kept },
            )?;
            guard.release();
            return Ok(Some(new.generation));
        }
        self.restamp_snapshot(&cur, generation)?;
        guard.record.last_generation = generation;
        let _ = guard.write_record(&local.target.sidecar().join("lock"));
        guard.release();
        Ok(Some(generation))
    }

    /// The newest version the journal `bytes` left in the lost one's place holds past
    /// the snapshot `cur`, and its generation: `None` unless it is a copy of the
    /// snapshot's own journal (the same header) with at least one record that replays
    /// (records up to any damage in it are kept, as a repair keeps them).
    fn survivors_of_copy(
        &self,
        cur: &Current,
        journal_path: &std::path::Path,
        bytes: &[u8],
    ) -> Option<(T, u64)> {
        let header = crate::journal::Header::decode(bytes)?;
        if header.follows != cur.generation || header.snapshot != cur.checksum {
            return None;
        }
        let mut replayed = Current {
            bytes: cur.bytes.clone(),
            checksum: cur.checksum,
            generation: cur.generation,
            external: false,
            adopted: false,
            perms: cur.perms,
            id: cur.id,
            acl: None,
            journal: None,
            journal_follows: cur.journal_follows,
            pin: None,
        };
        let size = bytes.len() as u64;
        crate::journal::overlay(
            self.path(),
            journal_path,
            &mut replayed,
            Some(((0, 0, size), bytes.to_vec())),
        )
        .ok()?;
        if replayed.generation <= cur.generation {
            return None;
        }
        let state = format::decode::<T>(self.path(), &replayed.bytes).ok()?;
        Some((state, replayed.generation))
    }

    /// Records `settings` with the file (atomically, under the lock) so that every
    /// writer applies them: this store at once, every other store at its next commit
    /// (it reads them under the lock), and every store opened from now on.
    ///
    /// # Errors
    /// [`Error::BadSchema`] for an invalid schema; lock and I/O errors.
    pub fn save_settings(&self, settings: &Settings) -> Result<()> {
        if let Some(remote) = self.remote() {
            return remote.save_settings(self, settings);
        }
        let config = Config::new_for(&self.local().target, &self.opts, settings)?;
        let mut locked = self.lock_and_read("save settings", false)?;
        let leaving_journal =
            self.config().format == Format::Journal && settings.format != Format::Journal;
        if leaving_journal {
            self.journal_flatten(&mut locked.guard, &locked.temp_name)?;
            self.clear_journal_follows()?;
        }
        self.write_settings(locked.guard.sidecar(), settings)?;
        self.set_config(config);
        if leaving_journal {
            crate::journal::remove(locked.guard.sidecar());
        }
        locked.guard.release();
        Ok(())
    }

    /// Creates the file with `state` and records `settings` with it, under one lock.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the file exists; otherwise as
    /// [`Store::save_settings`] and [`Store::create`].
    pub fn create_with(&self, settings: &Settings, state: T) -> Result<u64> {
        if let Some(remote) = self.remote() {
            return remote.create_with(self, settings, &state);
        }
        let config = Config::new_for(&self.local().target, &self.opts, settings)?;
        let Locked {
            mut guard,
            temp_name,
            current,
        } = self.lock_and_read("create", true)?;
        if current.is_some() {
            return Err(Error::AlreadyExists {
                path: self.local().target.given.clone(),
            });
        }
        self.refuse_deleted(Some(guard.sidecar()))?;
        self.write_settings(guard.sidecar(), settings)?;
        self.set_config(config);
        let new = self.write_version(&mut guard, &temp_name, &state, None, Change::Commit)?;
        guard.release();
        Ok(new.generation)
    }
}

/// The format of version `cur`: journal when it was read through a journal, else as
/// its bytes say.
fn detect_format(cur: &Current) -> Format {
    if cur.journal.is_some() {
        return Format::Journal;
    }
    detect_bytes_format(&cur.bytes)
}

fn detect_bytes_format(bytes: &[u8]) -> Format {
    if format::looks_sealed(bytes) {
        Format::Sealed
    } else {
        Format::Plain
    }
}

/// What a file's metadata record says of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vouched {
    /// A record whose checksum matches.
    Yes,
    /// A record whose checksum differs, or an unreadable one.
    No,
    /// No record, on a filesystem that keeps them.
    Absent,
    /// The filesystem keeps no user extended attributes.
    Unsupported,
}

/// Reads a file and says whether its metadata record vouches for its bytes.
fn read_with_meta(mut file: File, path: &PathBuf) -> Result<(Vec<u8>, Vouched)> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(Op::Read, path, e))?;
    let vouched = match sys::get_meta_attr(&file) {
        Ok(sys::MetaAttr::Present(raw)) => match Meta::decode(&raw) {
            Some(m) if m.matches(&bytes) => Vouched::Yes,
            _ => Vouched::No,
        },
        Ok(sys::MetaAttr::Absent) => Vouched::Absent,
        Ok(sys::MetaAttr::Unsupported) => Vouched::Unsupported,
        Err(e) => return Err(Error::io(Op::Read, path, e)),
    };
    Ok((bytes, vouched))
}
