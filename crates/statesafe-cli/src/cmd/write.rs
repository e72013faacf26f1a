//! `statesafe write FILE`: the whole document from stdin.

use crate::cli::WriteArgs;
use crate::error::Result;
use crate::output::Output;

/// Reads and checks stdin completely before the file is touched, then replaces it.
pub fn run(args: WriteArgs, out: &Output) -> Result<()> {
    let input = super::read_stdin()?;
    let value = super::parse_json(&input, "stdin")?;
    let store = super::open(&args.file, Some(&args.write))?;
    let before = store.generation()?;
    let generation = match args.if_generation {
        Some(expected) => store.replace_if(expected, value)?,
        None => store.replace(value)?,
    };
    out.written(&args.file, generation, generation != before)
}
