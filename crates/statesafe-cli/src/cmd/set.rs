//! `statesafe set FILE POINTER VALUE`: set one value under the lock.

use serde_json::Value;

use crate::cli::SetArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::pointer::Pointer;

/// Sets the value, creating the file and missing parent objects as needed.
pub fn run(args: SetArgs, out: &Output) -> Result<()> {
    let pointer = Pointer::parse(&args.pointer)?;
    let value = if args.string {
        Value::String(args.value.clone())
    } else {
        super::parse_json(args.value.as_bytes(), "VALUE").map_err(|e| not_json(e, &args.value))?
    };
    let store = super::open(&args.file, Some(&args.write), out)?;
    let (generation, changed) = super::transact(&store, true, |doc| {
        pointer
            .set(doc, value)
            .map_err(|miss| miss.into_error("set", &pointer, &args.file))
    })?;
    out.written(&args.file, generation, changed)
}

/// A value that is not JSON is usually a string someone forgot to quote.
fn not_json(err: CliError, raw: &str) -> CliError {
    let structured = raw
        .trim_start()
        .starts_with(|c: char| "{[\"-0123456789".contains(c));
    if err.kind != "invalid_json" || structured {
        return err;
    }
    let quoted = crate::error::shell_word(&format!("\"{raw}\""));
    err.hint(format!(
        "the state file is unchanged; VALUE is JSON, so a string needs quotes: {quoted}, or pass --string"
    ))
}
