//! Crash-safe, concurrency-safe state files.
//!
//! A [`Store`] is one JSON state file. Every write is atomic and durable: after a
//! crash or power loss at any instant the file holds the old version or the new one,
//! never a mix, and a write that returned `Ok` survives. Writers take a kernel lock on
//! a sidecar file, so read-modify-write transactions from many processes and threads
//! never lose an update. Reads take no lock and never block.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! #[derive(serde::Serialize, serde::Deserialize, Default)]
//! struct Seen { grades: Vec<String> }
//!
//! let store = statesafe::Store::<Seen>::open(dir.path().join("seen.json"))?;
//! store.update_or_default(|s| s.grades.push("math: 8.5".into()))?;
//! assert_eq!(store.get()?.grades.len(), 1);
//! # Ok::<(), statesafe::Error>(())
//! ```
//!
//! The exact system calls of a commit, and why each is there, are in
//! `docs/design.md` and in the [`write`](crate::Durability) module's notes:
//! lock, create an exclusive temporary file beside the target, copy mode and owner,
//! write, `fsync`, `rename`, `fsync` the directory, unlock.

mod error;
mod format;
mod lock;
mod paths;
mod store;
mod sys;
mod write;

pub use error::{Error, Op, Result};
pub use format::Layout;
pub use lock::Holder;
pub use store::{DEFAULT_LOCK_TIMEOUT, LockGuard, Snapshot, Store, StoreOptions, Transaction};
pub use write::Durability;
