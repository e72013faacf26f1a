//! The Node.js binding of statesafe: a thin napi-rs layer over [`statesafe::Store`].
//!
//! JavaScript never waits here: every operation that touches the disk, waits for the
//! lock or parses a document runs on a thread of this addon (never the libuv pool,
//! which `fs`, `dns.lookup`, crypto and zlib share), and settles a promise when done.
//! The synchronous twins run the same code on the calling thread.
//!
//! Documents cross the boundary as JSON text (plus the JSON Pointers of integers that a
//! JavaScript number cannot hold, which the JavaScript side turns into `BigInt`), so
//! parsing, validation and serialization of the file happen here, off the JavaScript
//! thread. Results are JSON text too; errors are thrown with the code `STATESAFE` and a
//! JSON payload that `index.js` turns into a `StatesafeError`. See docs/node.md.

// The documented surface is the JavaScript API (index.d.ts, docs/node.md); these
// native methods are its private plumbing, each one line of `index.js`.
#![allow(missing_docs)]

mod convert;
mod error;
mod exact;
mod options;
mod run;
mod store;
mod tx;

pub use store::NativeStore;
pub use tx::NativeTx;
