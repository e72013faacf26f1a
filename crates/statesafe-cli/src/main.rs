//! `statesafe`: crash-safe, locked edits of JSON state files from the shell.
//!
//! `cli.rs` holds the clap types, `cmd/<verb>.rs` one subcommand each, `error.rs`
//! the exit codes and `output.rs` how results and errors are printed.

mod cli;
mod cmd;
mod error;
mod jq;
mod output;
mod pointer;

use std::process::ExitCode;

fn main() -> ExitCode {
    cmd::main(std::env::args_os().collect())
}
