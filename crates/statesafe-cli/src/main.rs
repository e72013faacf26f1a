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

#[cfg(test)]
mod tests {
    /// build.rs links the static unwinder (libgcc_eh) in place of libgcc_s: a panic
    /// must still unwind, running destructors (the library's temp-file cleanup relies
    /// on that) and stopping at `catch_unwind`.
    #[test]
    fn panics_unwind_with_the_static_unwinder() {
        struct Flag<'a>(&'a std::cell::Cell<bool>);
        impl Drop for Flag<'_> {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = std::cell::Cell::new(false);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _flag = Flag(&dropped);
            panic!("unwinding through the static unwinder");
        }));
        assert!(caught.is_err());
        assert!(dropped.get(), "the destructor did not run during unwinding");
    }
}
