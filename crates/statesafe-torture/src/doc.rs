//! The state document the writers update, and the naive way of writing it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// A state document: a counter, padded to the requested size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// Incremented by one by each acknowledged update.
    pub counter: u64,
    /// Filler, so the document has the requested size.
    pub padding: String,
}

impl Doc {
    /// A document with `counter`, about `size` bytes long once pretty-printed.
    pub fn new(counter: u64, size: usize) -> Doc {
        Doc {
            counter,
            padding: "x".repeat(size.saturating_sub(48)),
        }
    }
}

/// Reads the document the way programs in the wild do: `None` when it is missing or
/// does not parse (they then start afresh from defaults).
pub fn naive_read(path: &Path) -> Option<Doc> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads the document through statesafe, as a program must when the file is sealed or
/// in journal mode: `None` when the read fails, or when it found damage and repaired it
/// (`Event::Recovered`): a repair after a crash is a failure the demonstration counts,
/// never a silent success.
pub fn statesafe_read(store: &statesafe::Store<Doc>, repaired: &AtomicBool) -> Option<Doc> {
    let doc = store.load().ok().map(|s| s.state);
    if repaired.swap(false, Ordering::SeqCst) {
        return None;
    }
    doc
}

/// A store of `path` for [`statesafe_read`], and the flag its repairs set.
///
/// # Errors
/// What opening the store returns.
pub fn statesafe_reader(
    path: &Path,
) -> statesafe::Result<(statesafe::Store<Doc>, Arc<AtomicBool>)> {
    let repaired = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&repaired);
    let store = statesafe::Store::<Doc>::options()
        .on_event(move |e| {
            if matches!(e, statesafe::Event::Recovered { .. }) {
                seen.store(true, Ordering::SeqCst);
            }
        })
        .open(path)?;
    Ok((store, repaired))
}

/// Writes the document the way the programs in the seed reports do: truncate the file
/// and write the JSON into it through a buffer, with no fsync (Python's
/// `with open(path, 'w') as f: json.dump(state, f, indent=2)`).
///
/// # Errors
/// Any I/O error, with the path.
pub fn naive_write(path: &Path, doc: &Doc) -> std::io::Result<()> {
    let with_path =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("`{}`: {e}", path.display()));
    let file = File::create(path).map_err(with_path)?;
    let mut out = BufWriter::with_capacity(8192, file);
    serde_json::to_writer_pretty(&mut out, doc).map_err(std::io::Error::other)?;
    out.flush().map_err(with_path)
}
