//! `statesafe get FILE [POINTER]`: a lock-free read of the document or one value.

use serde_json::Value;

use crate::cli::GetArgs;
use crate::error::Result;
use crate::output::Output;
use crate::pointer::Pointer;

/// Prints the value; never takes the lock, so it never waits for a writer.
pub fn run(args: GetArgs, out: &Output) -> Result<()> {
    let pointer = Pointer::parse(&args.pointer)?;
    let store = super::open(&args.file, None, out)?;
    let snap = store.load()?;
    let value = pointer
        .get(&snap.state)
        .map_err(|miss| miss.into_error("read", &pointer, &args.file))?;
    if out.json {
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "pointer": pointer.as_str(),
            "generation": snap.generation,
            "value": value,
        }));
    }
    let mut bytes = match value {
        Value::String(s) if args.raw => s.clone().into_bytes(),
        _ if args.compact => {
            serde_json::to_vec(value).expect("invariant: a Value always serializes")
        }
        _ => serde_json::to_vec_pretty(value).expect("invariant: a Value always serializes"),
    };
    bytes.push(b'\n');
    out.data(&bytes)
}
