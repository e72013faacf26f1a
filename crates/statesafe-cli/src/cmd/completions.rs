//! `statesafe completions SHELL`: a completion script on stdout.

use crate::cli::CompletionsArgs;
use crate::error::Result;
use crate::output::Output;

/// Prints the completion script for the shell.
pub fn run(args: CompletionsArgs, out: &Output) -> Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::cli::command(),
        "statesafe",
        &mut buf,
    );
    out.data(&buf)
}
