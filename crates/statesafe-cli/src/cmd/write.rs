//! `statesafe write FILE`: the whole document from stdin.

use crate::cli::WriteArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Reads and checks stdin completely before the file is touched, then replaces it.
pub fn run(args: WriteArgs, out: &Output) -> Result<()> {
    let input = super::read_stdin()?;
    let value = super::parse_json(&input, "stdin")?;
    let store = super::open(&args.file, Some(&args.write), out)?;
    let before = store.generation()?;
    let generation = match args.if_generation {
        Some(expected) => store.replace_if(expected, value).map_err(|e| {
            let conflict = matches!(e, statesafe::Error::GenerationConflict { .. });
            let e = CliError::from(e);
            if conflict {
                e.hint("someone else wrote it since you read it: `statesafe get FILE --json` shows the document and its generation; redo your change on that")
            } else {
                e
            }
        })?,
        None => store.replace(value)?,
    };
    out.written(&args.file, generation, generation != before)
}
