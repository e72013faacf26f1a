//! `torture-suite`: the crash-consistency layers of statesafe, run by CI
//! (`scripts/test.d/40-torture.sh`, `scripts/test.d/50-mutation.sh`).
//!
//! Each layer prints a summary line `LAYER: crash states checked: N, violations: V`
//! and exits non-zero on any violation. See `docs/torture.md`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "torture-suite",
    about = "statesafe's crash and fault torture layers"
)]
enum Cmd {
    /// The side-by-side demonstration (what `statesafe torture` runs).
    Demo(statesafe_torture::TortureArgs),
    /// A child process of the demonstration or of the stress layer (internal).
    #[command(hide = true)]
    TortureChild {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match Cmd::parse() {
        Cmd::Demo(args) => statesafe_torture::run(&args),
        Cmd::TortureChild { args } => statesafe_torture::child_main(args),
    }
}
