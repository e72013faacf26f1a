//! `statesafe-bench`: measures statesafe against the bare system-call floor and its
//! peers, and writes `docs/benchmarks.md` and `docs/benchmarks.svg`.
//!
//! Run `cargo run --release -p statesafe-bench` (a few minutes on 2 cores) or add
//! `--quick` (under a minute). Every section runs in one directory (`--dir`), and the
//! contenders of a section take turns in rounds so that noise from other processes on
//! the machine hits them all alike. Child processes (contention, peak memory) are this
//! same binary re-executed with a hidden subcommand.

mod chart;
mod child;
mod cli;
mod cli_timing;
mod contended;
mod contenders;
mod doc;
mod journal;
mod large_cli;
mod load;
mod machine;
mod memory;
mod pg;
mod report;
mod run;
mod stats;
mod update;

use std::process::ExitCode;

use clap::Parser;

/// The error type of the whole program: a benchmark reports and stops.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`BoxError`].
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let outcome = match args.child {
        Some(cli::Child::Child(child)) => child::run(child),
        None => run::all(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
