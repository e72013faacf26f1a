//! `statesafe`: crash-safe, locked edits of JSON state files from the shell.
//!
//! `cli.rs` holds the clap types, `cmd/<verb>.rs` one subcommand each, `error.rs`
//! the exit codes and `output.rs` how results and errors are printed.

mod cli;
mod cmd;
mod error;
mod jq;
mod output;
mod pick;
mod pointer;
mod sys;
mod val;

use std::process::ExitCode;

/// The stack of the thread that runs the command. Every walk over a document (the
/// parser, the printer, jq, the schema check, the diff, dropping it) recurses once
/// per level, and statesafe holds documents up to `statesafe::json::MAX_DEPTH`
/// levels: the 8 MiB main stack is not enough for that in every build. Reserved,
/// not used: the kernel backs only the pages a deep document touches.
const STACK_BYTES: usize = 512 << 20;

fn main() -> ExitCode {
    let args = std::env::args_os().collect();
    match std::thread::Builder::new()
        .name("statesafe".into())
        .stack_size(STACK_BYTES)
        .spawn(move || cmd::main(args))
    {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        // No room for the reservation (a small address-space limit): run here.
        Err(_) => cmd::main(std::env::args_os().collect()),
    }
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
