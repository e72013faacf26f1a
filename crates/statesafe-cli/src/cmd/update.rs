//! `statesafe update FILE EXPR`: a jq expression as a read-modify-write transaction.

use serde_json::Value;

use crate::cli::UpdateArgs;
use crate::error::{CliError, Result};
use crate::jq::Program;
use crate::output::Output;
use crate::val::Doc;

/// Compiles the expression first (without the lock), then applies it under the lock.
pub fn run(args: UpdateArgs, out: &Output) -> Result<()> {
    let mut vars = Vec::new();
    for pair in args.arg.chunks(2) {
        vars.push((pair[0].clone(), Value::String(pair[1].clone())));
    }
    for pair in args.argjson.chunks(2) {
        let value = super::parse_json(pair[1].as_bytes(), &format!("--argjson {}", pair[0]))?;
        vars.push((pair[0].clone(), value));
    }
    let program = Program::compile(&args.expr, vars, args.eval_timeout)?;
    // The store reads the file straight into jq's values and writes from them: the
    // document is in memory once, not once per representation (see val.rs).
    let store = super::open_as::<Doc>(&args.file, Some(&args.write), out)?;
    let (generation, changed) = super::transact_as(&store, args.create, Doc::empty_object, |doc| {
        *doc = program.run_one(std::mem::take(doc)).map_err(|mut e| {
            if e.kind == "expression_limit" {
                e.message = format!("{}; `{}` is unchanged", e.message, args.file.display());
            }
            e
        })?;
        Ok(())
    })
    .map_err(|e: CliError| {
        if e.is_not_found() && !args.create {
            e.hint(
                "create it first with `statesafe init FILE`, or pass --create to start from `{}`",
            )
        } else {
            e
        }
    })?;
    out.written(&args.file, generation, changed)
}
