//! `statesafe backups FILE`: the backups kept in the sidecar directory.

use std::time::SystemTime;

use serde_json::Value;
use statesafe::Store;

use crate::cli::FileArgs;
use crate::error::Result;
use crate::output::Output;

/// Lists backups, newest first. A file whose reads are refused (a journal-mode file
/// whose journal was lost: `statesafe recover --accept-snapshot`, or restoring one of
/// these backups, is the way out) still has its backups listed, then the refusal is
/// reported as `get` reports it (its error and exit code): an empty list with exit 0
/// would hide that the commits after the snapshot are gone.
pub fn run(args: FileArgs, out: &Output) -> Result<()> {
    let store = super::open_at(Store::<Value>::options(), &args.file)?;
    let list = store.backups()?;
    // Reads the file as every read does, without repairing or writing anything.
    let refused = store.generation().err();
    list_backups(&args, out, &list)?;
    match refused {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn list_backups(args: &FileArgs, out: &Output, list: &statesafe::BackupList) -> Result<()> {
    if out.json {
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "backups": list.backups.iter().map(|b| serde_json::json!({
                "generation": b.generation,
                "path": b.path.to_string_lossy(),
                "size": b.size,
                "committed": time(b.committed),
            })).collect::<Vec<_>>(),
            "foreign": list.foreign.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
        }));
    }
    let mut text = String::new();
    if list.backups.is_empty() {
        out.note(&format!("no backups of `{}`", args.file.display()));
    } else {
        text.push_str("GENERATION  BYTES     COMMITTED             PATH\n");
    }
    for b in &list.backups {
        text.push_str(&format!(
            "{:<10}  {:<8}  {:<20}  {}\n",
            b.generation,
            b.size,
            time(b.committed),
            b.path.display()
        ));
    }
    for path in &list.foreign {
        text.push_str(&format!("foreign file (ignored): {}\n", path.display()));
    }
    out.data(text.as_bytes())
}

/// A time as RFC 3339 UTC, to the second.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
