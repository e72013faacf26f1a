//! The only place that names an operating system or calls a raw system call.
//!
//! Everything above this module speaks in terms of these few functions; a port to
//! another platform implements them again (see `docs/design.md`).
//!
//! `value.rs` and `wake.rs` are here for the other reason this module exists: they hold
//! the crate's `unsafe` (the house style keeps all of it in `sys/`).

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

/// The lock's wake-up page (a futex: Linux only; elsewhere waiters poll).
#[cfg(target_os = "linux")]
pub(crate) mod wake;

/// No wake-up page where there is no futex: [`wake::Wake::map`] gives none, and the
/// lock's waiters poll.
#[cfg(not(target_os = "linux"))]
pub(crate) mod wake {
    /// Never made.
    #[derive(Debug)]
    pub(crate) enum Wake {}

    impl Wake {
        pub(crate) fn map(_file: &std::fs::File) -> Option<Wake> {
            None
        }
        pub(crate) fn enter(&self, _file: &std::fs::File) -> Option<u32> {
            match *self {}
        }
        pub(crate) fn sleep(&self, _seen: Option<u32>, _limit: std::time::Duration) -> bool {
            match *self {}
        }
        pub(crate) fn released(&self) {
            match *self {}
        }
    }
}
