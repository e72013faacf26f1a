//! `statesafe diff FILE FROM [TO]`: an RFC 6902 JSON Patch between two generations.

use serde_json::Value;
use statesafe::Store;

use crate::cli::DiffArgs;
use crate::error::Result;
use crate::output::Output;

/// Prints the patch from FROM to TO (default: the current generation), one
/// operation per line.
pub fn run(args: DiffArgs, out: &Output) -> Result<()> {
    let store = super::open_at(
        Store::<Value>::options().on_event(super::warn_on_event(out, false)),
        &args.file,
    )?;
    let to = match args.to {
        Some(to) => to,
        None => store.generation()?,
    };
    let patch = store.diff(args.from, to)?;
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
