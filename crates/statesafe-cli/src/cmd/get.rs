//! `statesafe get FILE [POINTER]`: a lock-free read of the document or one value.

use serde_json::Value;

use crate::cli::GetArgs;
use crate::error::Result;
use crate::output::Output;
use crate::pick::{self, Picked};
use crate::pointer::{Miss, Pointer};

/// The value at `pointer` read without building the document (see pick.rs), with
/// the generation; `None` when that way does not apply (the whole document, a
/// recorded schema) or the read failed in any way: then the caller reads the whole
/// document, which reports or recovers damage exactly as it always did.
fn picked(
    args: &GetArgs,
    pointer: &Pointer,
    out: &Output,
) -> Option<(u64, std::result::Result<Value, Miss>)> {
    if pointer.is_root() {
        return None;
    }
    let store = statesafe::Store::<Picked>::options()
        .recovery(statesafe::RecoveryPolicy::Fail)
        .on_event(super::warn_on_event(out, false))
        .open(&args.file)
        .ok()?;
    if store.settings().schema.is_some() {
        return None;
    }
    let snap = pick::following(pointer, || store.load()).ok()?;
    Some((snap.generation, snap.state.0))
}

/// Prints the value; never takes the lock, so it never waits for a writer.
pub fn run(args: GetArgs, out: &Output) -> Result<()> {
    let pointer = Pointer::parse(&args.pointer)?;
    let (generation, picked) = match picked(&args, &pointer, out) {
        Some(found) => found,
        None => {
            let store = super::open(&args.file, None, out)?;
            let snap = store.load()?;
            let picked = if pointer.is_root() {
                Ok(snap.state)
            } else {
                pointer.get(&snap.state).cloned()
            };
            (snap.generation, picked)
        }
    };
    let value = &picked.map_err(|miss| miss.into_error("read", &pointer, &args.file))?;
    if out.json {
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "pointer": pointer.as_str(),
            "generation": generation,
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
