//! What a store tells its caller besides results: events and counters.
//!
//! Events are the things a caller must be able to see even when the call succeeded:
//! a damaged file was recovered, a file was changed outside statesafe. They go to the
//! callback set with [`crate::StoreOptions::on_event`], to `tracing` (warn level), and
//! into the counters. Counters and latency summaries are kept per store
//! ([`crate::Store::stats`]) and also sent through the `metrics` facade.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;

/// Something the caller should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The state file (in journal mode: its journal) was damaged; it was quarantined
    /// and replaced.
    Recovered {
        /// The state file.
        path: PathBuf,
        /// What was wrong with it.
        damage: String,
        /// Where the damaged file is kept (a damaged journal:
        /// `quarantine/journal-damaged-XXH3` in the sidecar).
        quarantined: PathBuf,
        /// The generation whose document was restored (`None`: the store's default
        /// state). A damaged journal: the generation kept, the snapshot plus the
        /// journal's records before the damage.
        restored_from: Option<u64>,
        /// When the history's patches rebuilt that generation: the backup generation
        /// they were applied to (`None`: it was restored from its own backup). A
        /// damaged journal: the snapshot's generation, when records were applied to it
        /// (`None`: the snapshot was kept as it is).
        rebuilt_from: Option<u64>,
        /// The generation now in place.
        generation: u64,
    },
    /// A write that replaces the whole document (`replace`, `restore`) found the
    /// state damaged: the damaged version was moved to quarantine (never into the
    /// backups, never dropped) before the new one was written, in the same commit.
    Quarantined {
        /// The state file.
        path: PathBuf,
        /// What was wrong with it.
        damage: String,
        /// Where the damaged version is kept.
        quarantined: PathBuf,
        /// The generation written over it.
        generation: u64,
    },
    /// A read met a damaged state file but could not repair it without waiting (the
    /// writers' lock was held) or at all (no write access): it returned the newest
    /// version it could prove instead, and wrote nothing. The next writer, or
    /// `recover`, repairs the file.
    DamageNotRepaired {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        damage: String,
        /// Why it was not repaired now.
        because: String,
        /// The generation returned instead.
        served: u64,
        /// When the history's patches rebuilt it: the backup generation they were
        /// applied to.
        rebuilt_from: Option<u64>,
    },
    /// The state file is on a network or user-space filesystem (NFS, SMB, FUSE, 9p),
    /// where atomic rename, `fsync` and `flock` are only as good as the server or the
    /// daemon. Reported once per store, at its first write.
    SpecialFilesystem {
        /// The state file.
        path: PathBuf,
        /// The kind of filesystem (`nfs`, `cifs`, `smb2`, `fuse`, `9p`, `lustre`, `gpfs`,
        /// `afs`, `ceph`, `gfs2`, `ocfs2`, `beegfs`).
        kind: &'static str,
    },
    /// The file was changed outside statesafe; the change was accepted (it is valid).
    /// Only for a file statesafe has written before: a first contact is
    /// [`Event::Adopted`].
    ExternalChange {
        /// The state file.
        path: PathBuf,
        /// The generation given to the changed file.
        generation: u64,
    },
    /// A commit is durable, but a step after it failed (recording the history,
    /// giving the sidecar the file's permissions): the commit stands and nothing is
    /// retried; the failure is also counted in [`Stats`] and logged through `tracing`.
    BookkeepingFailed {
        /// The state file.
        path: PathBuf,
        /// The generation committed.
        generation: u64,
        /// The step that failed ("recording history").
        what: String,
        /// The error, as text.
        error: String,
    },
    /// [`crate::Store::recover`] found the state file deleted while its sidecar
    /// showed committed generations ([`crate::Error::Deleted`]), and put back the
    /// newest version it could prove as the next generation.
    Undeleted {
        /// The state file.
        path: PathBuf,
        /// The last generation the sidecar knew when the file was found missing.
        known: u64,
        /// The generation whose document was put back.
        restored_from: u64,
        /// When changes (the history's patches, the journal's records) rebuilt it: the
        /// generation of the whole copy they were applied to (`None`: it was put back
        /// from its own whole copy).
        rebuilt_from: Option<u64>,
        /// Where that whole copy was kept: a backup, or the history (an entry that
        /// holds the whole document with its checksum, as the first commit's does).
        source: Source,
        /// Journal mode: the generations of the journal's records applied last (the
        /// commits since the last compaction), first and last.
        journal: Option<(u64, u64)>,
        /// Journal mode: where the journal was kept when it holds generations the
        /// version put back lacks (its records follow a version nothing proves, or one
        /// does not apply): in the sidecar's quarantine, before a new journal replaced
        /// it.
        quarantined: Option<PathBuf>,
        /// The generation now in place.
        generation: u64,
    },
    /// First contact with an existing file that statesafe has never written: no
    /// metadata of ours on it, no sidecar record, backup or history. It is taken as it
    /// is, as generation 1 (a valid document; anything else is damage as usual).
    /// Reported like an external change, once per store, but it is not one.
    Adopted {
        /// The state file.
        path: PathBuf,
        /// The generation given to the file (1).
        generation: u64,
    },
}

/// Where the whole copy of a document that [`Event::Undeleted`] put back (or started
/// its rebuild from) was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A backup, verified by its own metadata record.
    Backup,
    /// A history entry holding the whole document, verified by the checksum it records.
    History,
}

impl Source {
    /// `backup` or `history`, for the bindings' events.
    pub fn name(self) -> &'static str {
        match self {
            Source::Backup => "backup",
            Source::History => "history",
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::BookkeepingFailed {
                path,
                generation,
                what,
                error,
            } => write!(
                f,
                "committed generation {generation} of `{}`, but {what} failed: {error}",
                path.display()
            ),
            Event::Recovered {
                path,
                damage,
                quarantined,
                restored_from,
                rebuilt_from,
                generation,
            } => {
                write!(
                    f,
                    "state file `{}` was damaged ({damage}); ",
                    path.display()
                )?;
                // A damaged journal (quarantined under this name, `journal.rs`) is
                // repaired to the snapshot plus the records before the damage.
                let journal = quarantined
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("journal-damaged-"));
                match (restored_from, rebuilt_from) {
                    (Some(g), Some(s)) if journal => write!(
                        f,
                        "kept generation {g} (the snapshot of generation {s} and the journal's records after it, up to the damage)"
                    )?,
                    (Some(g), None) if journal => write!(
                        f,
                        "kept the snapshot of generation {g} (no record of the journal before the damage)"
                    )?,
                    (Some(g), Some(b)) => write!(
                        f,
                        "restored generation {g} (backup {b} and the history's changes after it)"
                    )?,
                    (Some(g), None) => write!(f, "restored backup generation {g}")?,
                    (None, _) => write!(f, "replaced by the default state")?,
                }
                write!(
                    f,
                    " as generation {generation}; the damaged {} is kept at `{}`",
                    if journal { "journal" } else { "file" },
                    quarantined.display()
                )
            }
            Event::Undeleted {
                path,
                known,
                restored_from,
                rebuilt_from,
                source,
                journal,
                quarantined,
                generation,
            } => {
                write!(
                    f,
                    "state file `{}` was deleted (its sidecar knew generation {known}); put back generation {restored_from} (",
                    path.display()
                )?;
                let whole = rebuilt_from.unwrap_or(*restored_from);
                match source {
                    Source::Backup => write!(f, "backup {whole}")?,
                    Source::History => {
                        write!(f, "the history's whole copy of generation {whole}")?;
                    }
                }
                let history_to = journal.map_or(*restored_from, |(first, _)| first - 1);
                if history_to > whole {
                    write!(f, ", the history's changes up to generation {history_to}")?;
                }
                if let Some((first, last)) = journal {
                    write!(
                        f,
                        ", the journal's records of generations {first} to {last}"
                    )?;
                }
                write!(f, ")")?;
                if restored_from < known {
                    write!(
                        f,
                        "; the changes of generations {} to {known} are in nothing that proves them",
                        restored_from + 1
                    )?;
                    match quarantined {
                        Some(q) => write!(
                            f,
                            " (the journal that holds records of them is kept at `{}`)",
                            q.display()
                        )?,
                        None => write!(f, " and are lost")?,
                    }
                }
                write!(f, ", as generation {generation}")
            }
            Event::Quarantined {
                path,
                damage,
                quarantined,
                generation,
            } => write!(
                f,
                "state `{}` was damaged ({damage}) and replaced by generation {generation}; the damaged version is kept at `{}`",
                path.display(),
                quarantined.display()
            ),
            Event::DamageNotRepaired {
                path,
                damage,
                because,
                served,
                rebuilt_from,
            } => {
                write!(
                    f,
                    "state file `{}` is damaged ({damage}) and was not repaired now: {because}; this read returned generation {served}, the newest version that verifies (",
                    path.display()
                )?;
                match rebuilt_from {
                    Some(b) => write!(f, "backup {b} and the history's changes after it")?,
                    None => write!(f, "its backup")?,
                }
                write!(
                    f,
                    "); the next write, or `statesafe recover`, repairs the file"
                )
            }
            Event::SpecialFilesystem { path, kind } => write!(
                f,
                "state file `{}` is on a {kind} filesystem: atomicity, durability and locking depend on its server or daemon (see docs/design.md)",
                path.display()
            ),
            Event::ExternalChange { path, generation } => write!(
                f,
                "state file `{}` was changed outside statesafe; accepted as generation {generation}",
                path.display()
            ),
            Event::Adopted { path, generation } => write!(
                f,
                "adopted `{}` as generation {generation}: statesafe had not written it before",
                path.display()
            ),
        }
    }
}

/// A latency summary: count, total, maximum and a log2 histogram (microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Sum of all samples.
    pub total: Duration,
    /// Largest sample.
    pub max: Duration,
    /// `buckets[i]` counts samples in `[2^i, 2^(i+1))` microseconds (bucket 0 also
    /// holds samples under 1 µs).
    pub buckets: [u64; 32],
}

impl Latency {
    fn record(&mut self, d: Duration) {
        self.count += 1;
        self.total += d;
        self.max = self.max.max(d);
        let us = d.as_micros().max(1) as u64;
        let i = (63 - us.leading_zeros()) as usize;
        self.buckets[i.min(31)] += 1;
    }

    /// The mean, or zero without samples.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.total / self.count as u32
        }
    }

    /// An upper bound of the `q` quantile (0.0–1.0) from the histogram.
    pub fn quantile(&self, q: f64) -> Duration {
        let want = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want && *n > 0 {
                return Duration::from_micros(1u64 << (i + 1)).min(self.max);
            }
        }
        self.max
    }
}

/// Counters of one store since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful commits (including recoveries and restores).
    pub commits: u64,
    /// Failed writes by [`crate::Error::kind`].
    pub failures: BTreeMap<&'static str, u64>,
    /// Automatic recoveries from damaged files.
    pub recoveries: u64,
    /// Changes made outside statesafe that were found and accepted.
    pub external_changes: u64,
    /// Times a writer had to wait for the lock, and for how long.
    pub lock_waits: Latency,
    /// Time spent in `fsync` (file and directory) per commit.
    pub fsync: Latency,
    /// Whole commit latency (lock to unlock).
    pub commit: Latency,
}

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    stats: Mutex<Stats>,
}

impl Recorder {
    pub fn snapshot(&self) -> Stats {
        self.stats.lock().clone()
    }

    pub fn commit(&self, total: Duration, fsync: Duration) {
        let mut s = self.stats.lock();
        s.commits += 1;
        s.commit.record(total);
        s.fsync.record(fsync);
        drop(s);
        metrics::counter!("statesafe_commits_total").increment(1);
        metrics::histogram!("statesafe_commit_seconds").record(total.as_secs_f64());
        metrics::histogram!("statesafe_fsync_seconds").record(fsync.as_secs_f64());
    }

    pub fn failure(&self, kind: &'static str) {
        *self.stats.lock().failures.entry(kind).or_default() += 1;
        metrics::counter!("statesafe_failures_total", "kind" => kind).increment(1);
    }

    pub fn lock_wait(&self, waited: Duration) {
        self.stats.lock().lock_waits.record(waited);
        metrics::histogram!("statesafe_lock_wait_seconds").record(waited.as_secs_f64());
    }

    pub fn event(&self, event: &Event) {
        match event {
            Event::Recovered { .. } | Event::Undeleted { .. } => {
                self.stats.lock().recoveries += 1;
                metrics::counter!("statesafe_recoveries_total").increment(1);
                tracing::warn!(target: "statesafe", "{event}");
            }
            Event::Quarantined { .. } => {
                metrics::counter!("statesafe_quarantined_total").increment(1);
                tracing::warn!(target: "statesafe", "{event}");
            }
            Event::DamageNotRepaired { .. } => {
                metrics::counter!("statesafe_damage_not_repaired_total").increment(1);
                tracing::warn!(target: "statesafe", "{event}");
            }
            Event::SpecialFilesystem { .. } => {
                tracing::warn!(target: "statesafe", "{event}");
            }
            Event::ExternalChange { .. } => {
                self.stats.lock().external_changes += 1;
                metrics::counter!("statesafe_external_changes_total").increment(1);
                tracing::warn!(target: "statesafe", "{event}");
            }
            // Counted and logged where it happened (`transaction.rs`).
            Event::BookkeepingFailed { .. } => {}
            // The normal first contact, not a warning (and not an external change).
            Event::Adopted { .. } => {
                tracing::info!(target: "statesafe", "{event}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summaries_bound_their_quantiles() {
        let mut l = Latency::default();
        for us in [10u64, 20, 30, 1000] {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.count, 4);
        assert_eq!(l.max, Duration::from_micros(1000));
        assert!(l.quantile(0.5) >= Duration::from_micros(20));
        assert!(l.quantile(0.5) <= Duration::from_micros(64));
        assert_eq!(l.quantile(1.0), Duration::from_micros(1000));
    }
}
