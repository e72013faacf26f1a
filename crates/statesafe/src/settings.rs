//! Per-file settings, stored with the state so that every writer agrees.
//!
//! They live in `.NAME.statesafe/settings.json`, written atomically and durably under
//! the writers' lock. A store reads them when it is opened; options given in code
//! ([`crate::StoreOptions`]) override them for that store.

use std::ffi::OsStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Op, Result};
use crate::sidecar::{Sidecar, SyncFailed};
use crate::write::Poisoning;

/// The on-disk layout of a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// The document exactly as the user's program expects it; statesafe's metadata
    /// (generation, checksum) travels beside it. Existing files are adopted as they are.
    #[default]
    Plain,
    /// A JSON envelope `{"statesafe": {format, generation, time, writer, xxh3}, "state": …}`
    /// whose checksum covers every byte of the file: any change made outside
    /// statesafe is detected as corruption on load.
    Sealed,
    /// `NAME` is a plain JSON snapshot as of the last compaction; each commit appends
    /// one record (the change, or the whole document when smaller) to the sidecar's
    /// journal and flushes it once. Readers through statesafe see snapshot plus
    /// journal; a program reading `NAME` directly sees the last compaction. See
    /// `docs/design.md`, "Journal mode". Chosen in the recorded settings only.
    Journal,
}

impl Format {
    /// The name used in settings and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Sealed => "sealed",
            Format::Journal => "journal",
        }
    }
}

/// Which committed versions to keep as backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupPolicy {
    /// Keep the last `keep` replaced versions (0 disables backups). Default 5.
    pub keep: u32,
    /// Also keep the newest backup of each of the last `hourly` hours.
    pub hourly: u32,
    /// Also keep the newest backup of each of the last `daily` days.
    pub daily: u32,
}

impl Default for BackupPolicy {
    fn default() -> Self {
        BackupPolicy {
            keep: 5,
            hourly: 0,
            daily: 0,
        }
    }
}

impl BackupPolicy {
    /// Whether any backup is ever kept.
    pub fn enabled(&self) -> bool {
        self.keep > 0 || self.hourly > 0 || self.daily > 0
    }
}

/// How much history (the audit trail of commits) to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryPolicy {
    /// Keep entries for the last `keep` generations (0 disables history). Default 1000.
    pub keep: u32,
    /// Documents larger than this are recorded without a patch (the diff and the JSON
    /// trees it needs would cost more time and memory than the commit). Default 64 KiB.
    pub max_patch_bytes: u64,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        HistoryPolicy {
            keep: 1000,
            max_patch_bytes: 64 << 10,
        }
    }
}

/// What a load does when the state file is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecoveryPolicy {
    /// Move the damaged file into quarantine, restore the newest valid backup as a
    /// new generation, and report it (default). Fails, listing what was tried, when no
    /// valid backup exists.
    #[default]
    RestoreFromBackup,
    /// Fail with [`Error::Corrupt`]; change nothing.
    Fail,
    /// Quarantine the damaged file and start again from the store's default state.
    /// Only in code, with [`crate::StoreOptions::on_corrupt_use_default`].
    UseDefault,
}

/// The settings recorded with a state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// File layout for new versions.
    pub format: Format,
    /// A JSON Schema every version must satisfy (checked before each commit and on load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Backup retention.
    pub backups: BackupPolicy,
    /// History retention.
    pub history: HistoryPolicy,
    /// Lock timeout in milliseconds for writers that do not set their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_timeout_ms: Option<u64>,
    /// Refuse commits whose document is larger than this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Refuse commits that would leave less than this many bytes free on the filesystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_bytes: Option<u64>,
    /// Recovery policy for damaged files (`use-default` is accepted only from code).
    pub recovery: RecoveryPolicy,
    /// Journal mode: compact (write a new snapshot, start a new journal) once the
    /// journal's records would pass this many bytes, or 4x the snapshot's size plus
    /// 1 MiB if that is less. Default 64 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_max_bytes: Option<u64>,
}

/// Name of the settings file in the sidecar directory.
pub(crate) const SETTINGS_FILE: &str = "settings.json";

impl Settings {
    /// Reads the settings in `sidecar`; the defaults when there is no sidecar or no
    /// settings file.
    pub(crate) fn read(sidecar: Option<&Sidecar>) -> Result<Settings> {
        let Some(sidecar) = sidecar else {
            return Ok(Settings::default());
        };
        let path = sidecar.root().join(SETTINGS_FILE);
        let name = OsStr::new(SETTINGS_FILE);
        let opened = sidecar.root().open_stat(
            name,
            crate::sys::Access::Read,
            0,
            crate::sidecar::Use::Read,
            Op::Read,
        )?;
        let bytes = match opened {
            // statesafe replaces the settings by rename, so they have one name. A
            // second one, where other users may plant entries, is a hard link someone
            // made to a file elsewhere (where `fs.protected_hardlinks` is 0, to a file
            // of the caller's they may not read): never read as the settings.
            Some((_, st)) if st.nlink > 1 && sidecar.root().shared() => {
                return Err(Error::Unsafe {
                    path,
                    reason: format!(
                        "it has {} hard links in a sidecar other users may write, so it may be a link to a file elsewhere; remove it and record the settings again (`statesafe settings FILE ...`)",
                        st.nlink
                    ),
                    what: crate::error::Unsafety::Planted,
                });
            }
            Some((mut file, _)) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes)
                    .map_err(|e| Error::io(Op::Read, &path, e))?;
                Some(bytes)
            }
            None => None,
        };
        match bytes {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path,
                line: Some(e.line()),
                column: Some(e.column()),
                reason: format!("the settings are not valid: {e}"),
            }),
            None => Ok(Settings::default()),
        }
    }

    /// Writes the settings into `sidecar` atomically and durably (call with the lock).
    /// A failed `fsync` comes back as [`Poisoning`]: the caller's store refuses
    /// further writes, and nothing tries that `fsync` again.
    pub(crate) fn write(&self, sidecar: &Sidecar) -> Result<Result<()>, Poisoning> {
        let mut bytes =
            serde_json::to_vec_pretty(self).expect("invariant: settings always serialize");
        bytes.push(b'\n');
        let path = sidecar.root().join(SETTINGS_FILE);
        match sidecar.root().write_small_file(SETTINGS_FILE, &bytes, true) {
            Ok(result) => Ok(result.map_err(|e| Error::io(Op::Write, path, e))),
            Err(SyncFailed(e)) => Err(Poisoning(Error::io(Op::Write, path, e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_unknown_fields_are_refused() {
        let s = Settings::default();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Settings>(&text).unwrap(), s);
        assert_eq!(serde_json::from_str::<Settings>("{}").unwrap(), s);
        assert!(serde_json::from_str::<Settings>(r#"{"formatt": "plain"}"#).is_err());
        let sealed: Settings =
            serde_json::from_str(r#"{"format": "sealed", "backups": {"keep": 2}}"#).unwrap();
        assert_eq!(sealed.format, Format::Sealed);
        assert_eq!(sealed.backups.keep, 2);
        assert_eq!(sealed.history.keep, 1000);
    }
}
