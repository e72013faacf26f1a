//! `statesafe copy SRC DST`: a state with its history, between files and PostgreSQL
//! states in any direction.

use serde_json::Value;
use statesafe::{Error, Store};

use crate::cli::CopyArgs;
use crate::error::{CliError, Exit, Result};
use crate::output::Output;

/// Replays the source's versions (those it can rebuild from its history, oldest
/// first, then the current one) onto the destination, each commit a compare-and-swap
/// on the generation the copy wrote before it, then records the source's settings (on
/// an existing destination, with the larger retention of the two).
pub fn run(args: CopyArgs, out: &Output) -> Result<()> {
    let source: Store<Value> = super::open(&args.source, None, out)?;
    // The copy's own versions go in without the destination's recorded schema and
    // size limit (an older version may predate the schema or be larger: review19c):
    // options of this store alone, never recorded, so every other writer of the
    // destination stays bound by them throughout (review22, findings 2 and 3). A
    // schema given with --schema still binds the copy's versions.
    let mut options = super::options(Some(&args.write))?
        .max_bytes(u64::MAX)
        .on_event(super::warn_on_event(out, true));
    if args.write.schema.is_none() {
        // `true`: the JSON Schema every document satisfies.
        options = options.schema(Value::Bool(true));
    }
    let destination: Store<Value> = super::open_at(options, &args.destination)?;
    let current = source.load()?;
    let mut versions: Vec<(u64, Value)> = Vec::new();
    let mut unrebuildable = 0usize;
    if !args.no_history {
        let mut generations: Vec<u64> = source
            .history()?
            .iter()
            .map(|e| e.generation)
            .filter(|g| *g < current.generation)
            .collect();
        generations.sort_unstable();
        generations.dedup();
        for generation in generations {
            match source.document_at(generation) {
                Ok(doc) => versions.push((generation, doc)),
                Err(_) => unrebuildable += 1,
            }
        }
    }
    versions.push((current.generation, current.state));
    let mut settings = source.settings();

    let found = destination.generation()?;
    let expected = match (args.if_generation, args.replace) {
        (Some(n), _) => n,
        (None, true) => found,
        (None, false) => 0,
    };
    if found != expected {
        let e: CliError = Error::GenerationConflict {
            path: args.destination.clone(),
            expected,
            found,
        }
        .into();
        return Err(if args.if_generation.is_some() || found == 0 {
            e
        } else {
            let mut e = CliError::new(
                "already_exists",
                Exit::Exists,
                format!(
                    "`{}` already exists (generation {found}); nothing was copied",
                    args.destination.display()
                ),
            );
            e = e.hint(format!(
                "to copy on top of it, add --replace, or --if-generation {found} to do so only if nobody writes it first"
            ));
            e
        });
    }

    // On an existing destination (`--replace`, `--if-generation N`), whose own versions
    // stay in its history, the retention is the larger of the two, field by field,
    // and the counts of kept backups and history entries are raised by the number of
    // versions copied (each is a commit, which would push out as many of the
    // destination's own): the source's alone pruned the destination's versions during
    // the copy itself (review19), the larger alone did when the destination's history
    // was full (review19c: nothing of its data was left), and the destination's alone
    // would prune the copied ones. A retention of none stays none.
    let original = (expected != 0).then(|| destination.settings());
    if let Some(own) = &original {
        let copies = u32::try_from(versions.len()).unwrap_or(u32::MAX);
        let raised = |keep: u32| {
            if keep == 0 {
                0
            } else {
                keep.saturating_add(copies)
            }
        };
        let (b, h) = (&mut settings.backups, &mut settings.history);
        b.keep = raised(b.keep.max(own.backups.keep));
        b.hourly = b.hourly.max(own.backups.hourly);
        b.daily = b.daily.max(own.backups.daily);
        h.keep = raised(h.keep.max(own.history.keep));
        h.max_patch_bytes = h.max_patch_bytes.max(own.history.max_patch_bytes);
    }
    // The versions go in under the source's settings (with the retention above), but
    // with the schema and size limit the destination is under, which bind every other
    // writer while the copy runs: an existing destination's own (which another
    // writer's commit meanwhile satisfies, and which a copy killed at any instant
    // leaves in force: review22, findings 2 and 3); a new one has none until the copy
    // ends. The copy's own versions are not checked against them (this store's options
    // above), so a new destination gets the source's schema and size limit only with
    // the whole source settings once the last version is in: recorded with the first
    // version, a copy killed midway left an older version under a schema that refuses
    // it, and every read and write of the destination failed (red22b finding 6).
    let staging = match &original {
        Some(own) => statesafe::Settings {
            schema: own.schema.clone(),
            max_bytes: own.max_bytes,
            ..settings.clone()
        },
        None => statesafe::Settings {
            schema: None,
            max_bytes: None,
            ..settings.clone()
        },
    };
    // On an existing destination the staging settings go in before the first version,
    // so that its retention holds for every copied commit (after the first, the first
    // was pruned under the destination's own: review19c).
    if original.is_some() {
        destination.save_settings(&staging)?;
    }
    let total = versions.len();
    let mut written = expected;
    let mut copied = 0usize;
    let mut last_from = 0;
    for (from, doc) in versions {
        let result = if written == 0 {
            destination.create_with(&staging, doc)
        } else {
            destination.replace_if(written, doc)
        };
        match result {
            Ok(generation) => {
                written = generation;
                copied += 1;
                last_from = from;
            }
            Err(e) => {
                let conflict = matches!(
                    e,
                    Error::GenerationConflict { .. } | Error::AlreadyExists { .. }
                );
                // A destination that had its own settings gets them back (review19c),
                // its retention included.
                let restored = original.as_ref().map(|own| destination.save_settings(own));
                let mut e = CliError::from(e);
                if let Some(Err(r)) = restored {
                    e.message = format!(
                        "{}; and the destination's own settings could not be put back ({r}): check them with `statesafe settings DST`",
                        e.message
                    );
                }
                let so_far = if copied == 0 {
                    "nothing was copied".to_string()
                } else {
                    format!(
                        "the copy stopped after {copied} of {total} versions: `{}` is at generation {written}, a whole copy of the source's generation {}",
                        args.destination.display(),
                        last_from
                    )
                };
                e.message = format!("{}; {so_far}", e.message);
                if conflict {
                    e = e.hint("someone else wrote the destination meanwhile; look at it (`statesafe log DST`), then copy again with --replace or --if-generation N");
                }
                return Err(e);
            }
        }
    }
    destination.save_settings(&settings)?;
    if unrebuildable > 0 {
        out.note(&format!(
            "note: {unrebuildable} older generation(s) of `{}` could not be rebuilt from its history and were not copied",
            args.source.display()
        ));
    }
    if out.json {
        out.json_line(&serde_json::json!({
            "source": args.source.to_string_lossy(),
            "destination": args.destination.to_string_lossy(),
            "source_generation": current.generation,
            "generation": written,
            "versions": copied,
            "not_rebuildable": unrebuildable,
            "changed": true,
        }))?;
    }
    Ok(())
}
