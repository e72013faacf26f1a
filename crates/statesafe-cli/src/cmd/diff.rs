//! `statesafe diff FILE FROM [TO]`: an RFC 6902 JSON Patch between two generations.

use serde_json::Value;
use statesafe::Store;

use crate::cli::DiffArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Prints the patch from FROM to TO (default: the current generation), one
/// operation per line.
pub fn run(args: DiffArgs, out: &Output) -> Result<()> {
    let store = Store::<Value>::options()
        .on_event(super::warn_on_event(out, false))
        .open(&args.file)?;
    let to = match args.to {
        Some(to) => to,
        None => store.generation()?,
    };
    let patch = store.diff(args.from, to).map_err(|e| match e {
        // The library reports an unknown generation as an invalid state; say it plainly.
        statesafe::Error::Invalid { message, .. } => CliError::new(
            "no_such_generation",
            crate::error::Exit::NotFound,
            format!("cannot compare generations of `{}`: {message}", args.file.display()),
        )
        .hint("only generations still in the backups or the history can be compared; see `statesafe log FILE`"),
        other => other.into(),
    })?;
    if out.json {
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "from": args.from,
            "to": to,
            "patch": patch,
        }));
    }
    let mut text = String::new();
    for op in &patch.0 {
        text.push_str(&serde_json::to_string(op).expect("invariant: patches serialize"));
        text.push('\n');
    }
    out.data(text.as_bytes())
}
