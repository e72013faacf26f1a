//! `statesafe del FILE POINTER`: delete one value under the lock.

use crate::cli::DelArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::pointer::{Miss, Pointer};

/// Deletes the value; with `--missing-ok` an absent value is not an error.
pub fn run(args: DelArgs, out: &Output) -> Result<()> {
    let pointer = Pointer::parse(&args.pointer)?;
    if pointer.is_root() {
        return Err(CliError::invalid(
            "invalid_pointer",
            "`del` needs a pointer to a value inside the document; '' is the whole document",
        )
        .hint(
            "to empty the document use `statesafe set FILE '' '{}'`; to remove the file use `rm`",
        ));
    }
    let store = super::open(&args.file, Some(&args.write), out)?;
    let mut tx = store.begin()?;
    let before = tx.generation();
    match pointer.remove(tx.state_mut()) {
        Ok(_) => {}
        Err(Miss::Absent { .. }) if args.missing_ok => {
            drop(tx);
            return out.written(&args.file, before, false);
        }
        Err(miss) => return Err(miss.into_error("delete", &pointer, &args.file)),
    }
    let generation = tx.commit()?;
    out.written(&args.file, generation, generation != before)
}
