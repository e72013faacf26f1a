//! The only place that names an operating system or calls a raw system call.
//!
//! Everything above this module speaks in terms of these few functions; a port to
//! another platform implements them again (see `docs/design.md`).
//!
//! `value.rs` is here for the other reason this module exists: it holds the crate's
//! only `unsafe` (the house style keeps all of it in `sys/`).

#[cfg(unix)]
pub(crate) mod unix;
#[cfg(unix)]
pub(crate) use unix as imp;

#[cfg(not(unix))]
compile_error!(
    "statesafe supports Unix-like systems so far; the Windows port (MoveFileEx with write-through) is planned"
);

pub(crate) use imp::*;

pub(crate) mod value;
