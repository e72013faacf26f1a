//! `statesafe restore FILE --generation N`: bring back a backup as a new generation.

use crate::cli::RestoreArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Restores the backup of the generation; the version it replaces is backed up.
pub fn run(args: RestoreArgs, out: &Output) -> Result<()> {
    let store = super::open(&args.file, Some(&args.write), out)?;
    let generation = store.restore(args.generation).map_err(|e| {
        let missing = matches!(e, statesafe::Error::NotFound { .. });
        let e = CliError::from(e);
        if missing {
            let mut e = e;
            e.message = format!(
                "there is no backup of generation {} of `{}`",
                args.generation,
                args.file.display()
            );
            e.hint("`statesafe backups FILE` lists the generations kept")
        } else {
            e
        }
    })?;
    // Like every writing command: nothing in text mode, an object with `--json`.
    if out.json {
        out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "generation": generation,
            "restored_from": args.generation,
            "changed": true,
        }))?;
    }
    Ok(())
}
