//! `statesafe log FILE`: the history of changes, newest first.

use serde_json::Value;
use statesafe::{Change, Store};

use crate::cli::LogArgs;
use crate::error::Result;
use crate::output::Output;

/// Prints history entries, newest first.
pub fn run(args: LogArgs, out: &Output) -> Result<()> {
    let store = super::open_at(
        Store::<Value>::options().on_event(super::warn_on_event(out, false)),
        &args.file,
    )?;
    let mut entries = store.history()?;
    entries.reverse();
    if let Some(limit) = args.limit {
        entries.truncate(limit);
    }
    if out.json {
        let mut list = Vec::with_capacity(entries.len());
        for entry in &entries {
            let mut v = serde_json::to_value(entry).expect("invariant: entries serialize");
            if !args.patch
                && let Some(obj) = v.as_object_mut()
            {
                obj.remove("patch");
                obj.remove("snapshot");
            }
            list.push(v);
        }
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "entries": list,
        }));
    }
    let mut text = String::new();
    for entry in &entries {
        let change = match &entry.change {
            Change::Commit => "commit".to_string(),
            Change::External => "changed outside statesafe".to_string(),
            Change::Restore { from } => format!("restore of generation {from}"),
            Change::Recovery { from: Some(g), .. } => {
                format!("recovery from backup generation {g}")
            }
            Change::Recovery { from: None, .. } => "recovery to the default state".to_string(),
            Change::Damaged { reason } => format!("DAMAGED ENTRY: {reason}"),
            _ => "change".to_string(),
        };
        text.push_str(&format!(
            "generation {}  {}  {change}",
            entry.generation, entry.time
        ));
        if let Some(w) = &entry.writer {
            text.push_str(&format!("  by pid {} {}@{}", w.pid, w.user, w.host));
            if !w.command.is_empty() {
                text.push_str(&format!(" (`{}`)", w.command));
            }
        }
        text.push('\n');
        if let Some(note) = &entry.note {
            text.push_str(&format!("    note: {note}\n"));
        }
        if args.patch {
            if let Some(patch) = &entry.patch {
                for op in &patch.0 {
                    let line = serde_json::to_string(op).expect("invariant: patches serialize");
                    text.push_str(&format!("    {line}\n"));
                }
            } else if entry.snapshot.is_some() {
                text.push_str("    (full snapshot)\n");
            }
        }
    }
    if entries.is_empty() {
        out.note(&format!(
            "no history recorded for `{}`",
            args.file.display()
        ));
    }
    out.data(text.as_bytes())
}
