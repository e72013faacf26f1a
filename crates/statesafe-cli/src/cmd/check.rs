//! `statesafe check FILE`: verify the file and its backups, changing nothing.

use serde_json::Value;
use statesafe::{RecoveryPolicy, Store};

use crate::cli::FileArgs;
use crate::error::{CliError, Exit, Result};
use crate::output::Output;

/// Reports problems; exits with the corrupt-state code when there are any, and
/// with the not-found code when the file does not exist.
pub fn run(args: FileArgs, out: &Output) -> Result<()> {
    // Fail instead of recovering: a check must never repair by itself.
    let store = super::open_at(
        Store::<Value>::options().recovery(RecoveryPolicy::Fail),
        &args.file,
    )?;
    let report = store.check()?;
    // Not problems (the file is sound): what a deletion could take unnoticed here.
    let notes = store.undetected_deletions()?;
    let file = args.file.display();
    if out.json {
        out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "ok": report.exists && report.is_ok(),
            "exists": report.exists,
            "generation": report.generation,
            "format": report.format.map(|f| f.name()),
            "external": report.external,
            "adopted": report.adopted,
            "problems": report.problems,
            "backups_valid": report.backups_valid,
            "backups_damaged": report.backups_damaged.iter().map(|(p, why)| serde_json::json!({"backup": p.to_string_lossy(), "problem": why})).collect::<Vec<_>>(),
            "foreign": report.foreign.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
            "quarantined": report.quarantined.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
            "notes": notes,
        }))?;
    } else if report.exists {
        let mut text = String::new();
        let status = if report.problems.is_empty() {
            "ok"
        } else {
            "DAMAGED"
        };
        text.push_str(&format!(
            "{file}: {status}, generation {}, format {}{}\n",
            report.generation,
            report.format.map_or("unknown", |f| f.name()),
            if report.adopted {
                ", not written by statesafe yet (its first write adopts it)"
            } else if report.external {
                ", changed outside statesafe"
            } else {
                ""
            }
        ));
        for problem in &report.problems {
            text.push_str(&format!("  problem: {problem}\n"));
        }
        text.push_str(&format!("  backups: {} valid", report.backups_valid));
        text.push_str(&format!(", {} damaged\n", report.backups_damaged.len()));
        for (path, why) in &report.backups_damaged {
            text.push_str(&format!("  damaged backup `{}`: {why}\n", path.display()));
        }
        for path in &report.foreign {
            text.push_str(&format!(
                "  foreign file among the backups: `{}`\n",
                path.display()
            ));
        }
        for path in &report.quarantined {
            text.push_str(&format!("  quarantined: `{}`\n", path.display()));
        }
        for note in &notes {
            text.push_str(&format!("  note: {note}\n"));
        }
        out.data(text.as_bytes())?;
    }
    if !report.exists {
        // Deleted (its sidecar shows commits: exit 16) or never created (exit 3), as
        // a read says it.
        let missing = match store.load() {
            Err(e @ (statesafe::Error::Deleted { .. } | statesafe::Error::BadPath { .. })) => e,
            _ => statesafe::Error::NotFound {
                path: args.file.clone(),
            },
        };
        return Err(missing.into());
    }
    if !report.is_ok() {
        let count = report.problems.len() + report.backups_damaged.len() + report.foreign.len();
        return Err(CliError::new(
            "check_failed",
            Exit::Corrupt,
            format!("`{file}` failed the check ({count} problem{})", if count == 1 { "" } else { "s" }),
        )
        .hint("`statesafe recover FILE` restores the newest valid backup; `statesafe backups FILE` lists them"));
    }
    Ok(())
}
