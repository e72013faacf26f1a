//! The state document the writers update, and the naive way of writing it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

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
