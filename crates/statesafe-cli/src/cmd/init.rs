//! `statesafe init FILE [JSON]`: create a state file.

use crate::cli::InitArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Creates the file. An existing file is an error unless `--force` (replace it) or
/// `--exist-ok` (keep it, after checking it holds a valid document).
pub fn run(args: InitArgs, out: &Output) -> Result<()> {
    let value = if args.document == "-" {
        super::parse_json(&super::read_stdin()?, "stdin")?
    } else {
        super::parse_json(args.document.as_bytes(), "the initial document")?
    };
    let store = super::open(&args.file, Some(&args.write), out)?;
    // Settings to record: the flags given, plus `--schema`.
    let mut settings = store.settings();
    let mut record = super::settings::apply(&args.settings, &mut settings);
    if let Some(schema) = &args.write.schema {
        settings.schema = Some(super::read_schema(schema)?);
        record = true;
    }
    if args.force {
        if record {
            store.save_settings(&settings)?;
        }
        let before = store.generation()?;
        let generation = store.replace(value)?;
        return out.written(&args.file, generation, generation != before);
    }
    let created = if record {
        store.create_with(&settings, value)
    } else {
        store.create(value)
    };
    match created {
        Ok(generation) => out.written(&args.file, generation, true),
        Err(statesafe::Error::AlreadyExists { .. }) if args.exist_ok => {
            let snap = store.load()?;
            out.written(&args.file, snap.generation, false)
        }
        Err(e @ statesafe::Error::AlreadyExists { .. }) => Err(CliError::from(e).hint(
            "it was left as it is; pass --force to replace its document, or --exist-ok to accept the existing file",
        )),
        Err(e) => Err(e.into()),
    }
}
