//! `statesafe settings FILE [--format ...]`: the settings stored with a state file.

use serde_json::Value;
use statesafe::{Format, RecoveryPolicy, Settings, Store};

use crate::cli::{FormatArg, RecoveryArg, SettingsArgs, SettingsCmdArgs};
use crate::error::Result;
use crate::output::Output;

/// Prints the settings; with any setting flag, changes and records them first.
pub fn run(args: SettingsCmdArgs, out: &Output) -> Result<()> {
    let mut options = Store::<Value>::options();
    if let Some(timeout) = args.lock_timeout {
        options = options.lock_timeout(timeout);
    }
    let store = super::open_at(
        options.on_event(super::warn_on_event(out, false)),
        &args.file,
    )?;
    let mut settings = store.settings();
    let mut changed = apply(&args.settings, &mut settings);
    if let Some(path) = &args.schema {
        settings.schema = Some(super::read_schema(path)?);
        changed = true;
    }
    if args.no_schema && settings.schema.is_some() {
        settings.schema = None;
        changed = true;
    }
    if changed {
        store.save_settings(&settings)?;
    }
    let value = serde_json::to_value(&settings).expect("invariant: settings serialize");
    if out.json {
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "changed": changed,
            "settings": value,
        }));
    }
    out.data(&super::pretty(&value))
}

/// Applies the flags that were given to `settings`; whether any was.
pub fn apply(args: &SettingsArgs, settings: &mut Settings) -> bool {
    let mut changed = false;
    if let Some(format) = args.format {
        settings.format = match format {
            FormatArg::Plain => Format::Plain,
            FormatArg::Sealed => Format::Sealed,
            FormatArg::Journal => Format::Journal,
        };
        changed = true;
    }
    if let Some(bytes) = args.journal_max_bytes {
        settings.journal_max_bytes = Some(bytes);
        changed = true;
    }
    if let Some(keep) = args.keep_backups {
        settings.backups.keep = keep;
        changed = true;
    }
    if let Some(keep) = args.keep_history {
        settings.history.keep = keep;
        changed = true;
    }
    if let Some(bytes) = args.max_bytes {
        settings.max_bytes = Some(bytes);
        changed = true;
    }
    if let Some(bytes) = args.min_free_bytes {
        settings.min_free_bytes = Some(bytes);
        changed = true;
    }
    if let Some(timeout) = args.default_lock_timeout {
        settings.lock_timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        changed = true;
    }
    if let Some(policy) = args.recovery {
        settings.recovery = match policy {
            RecoveryArg::RestoreFromBackup => RecoveryPolicy::RestoreFromBackup,
            RecoveryArg::Fail => RecoveryPolicy::Fail,
        };
        changed = true;
    }
    changed
}
