//! Crash and fault torture for statesafe.
//!
//! Two things live here:
//!
//! - the `statesafe torture [DIR]` demonstration ([`TortureArgs`], [`run`]): writer
//!   processes update a state file continuously and are killed with `SIGKILL` at random
//!   moments while reader processes read it, once with the naive approach (truncate and
//!   write in place, as most programs do) and once with [`statesafe::Store::update`],
//!   side by side; it ends with a table of kills, corrupt files, lost acknowledged
//!   updates and torn reads for each;
//! - the `torture-suite` binary (`src/bin/torture-suite/`), the project's own
//!   crash-consistency layers run in CI: kill at every system call, error injection at
//!   every I/O system call, a system-call order check, real filesystems and a
//!   multi-process stress test. See `docs/torture.md`.
//!
//! Child processes are started by re-executing the current executable with the
//! `torture-child` subcommand, which must call [`child_main`].

mod args;
mod child;
mod demo;
mod doc;

pub use args::{Approach, DemoFormat, TortureArgs};
pub use child::child_main;
pub use demo::run;
pub use doc::{Doc, naive_read, naive_write, statesafe_read, statesafe_reader};
