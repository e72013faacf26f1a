//! Crash-safe, concurrency-safe state files.
//!
//! A [`Store`] is one JSON state file. Every write is atomic and durable: after a
//! crash or power loss at any instant the file holds the old version or the new one,
//! never a mix, and a write that returned `Ok` survives. Writers take a kernel lock on
//! a sidecar file, so read-modify-write transactions from many processes and threads
//! never lose an update. Reads take no lock and never block.
//!
//! Beyond that: validation (a rule in code or a JSON Schema) before every commit and on
//! load; the last versions kept as backups (hard links, no copies); a damaged file is
//! quarantined and the newest valid backup restored, loudly, never replaced by empty
//! defaults; an audit history with a JSON Patch per generation.
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
//! With the `postgres` feature, [`StoreOptions::open_url`] keeps the state in a
//! PostgreSQL table instead, shared by many machines, with the same API and guarantees
//! (a transaction holds the state's row lock; see `docs/remote.md`).
//!
//! The exact system calls of a commit, and why each is there, are in
//! `docs/design.md`: lock, create an exclusive temporary file beside the target, copy
//! mode and owner, attach the metadata attribute, write, `fsync`, `rename`, `fsync` the
//! directory, unlock.

mod backup;
mod error;
mod events;
pub mod exact;
mod format;
mod history;
mod janitor;
mod journal;
pub mod json;
mod json_out;
mod local_patch;
mod lock;
mod measure;
mod paths;
pub mod postgres;
mod recover;
mod secret;
mod settings;
mod sidecar;
#[cfg(test)]
mod sim;
mod store;
mod stream;
mod sys;
mod transaction;
mod validate;
mod write;

pub use backup::{BackupInfo, BackupList};
pub use error::{Error, LockLoss, Op, Result, Unsafety};
pub use events::{Event, Latency, Source, Stats};
pub use format::{Layout, Writer};
pub use history::{Change, HistoryEntry};
pub use lock::Holder;
pub use recover::{CheckReport, Info};
pub use settings::{BackupPolicy, Format, HistoryPolicy, RecoveryPolicy, Settings};
pub use store::{DEFAULT_LOCK_TIMEOUT, Snapshot, Store, StoreOptions};
pub use transaction::{LockGuard, Transaction};
pub use write::Durability;

/// The JSON Patch type used by [`HistoryEntry::patch`] and [`Store::diff`].
pub use json_patch::Patch;
