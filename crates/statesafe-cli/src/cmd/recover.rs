//! `statesafe recover FILE`: restore the newest valid backup of a damaged file.

use crate::cli::RecoverArgs;
use crate::error::Result;
use crate::output::Output;

/// Recovers now if the file is damaged; says so if it was sound.
pub fn run(args: RecoverArgs, out: &Output) -> Result<()> {
    // No event hook here: the recovery is the result, printed below.
    let store = super::open_quiet(&args.file, &args.write)?;
    let file = args.file.display();
    if args.accept_snapshot {
        let accepted = store.accept_snapshot()?;
        if out.json {
            return out.json_line(&serde_json::json!({
                "file": args.file.to_string_lossy(),
                "accepted": accepted.is_some(),
                "generation": accepted,
            }));
        }
        let text = match accepted {
            Some(g) => format!(
                "accepted: `{file}` is its snapshot, now generation {g}; the commits of the lost journal are gone\n"
            ),
            None => format!("`{file}` has lost no journal; nothing to accept\n"),
        };
        return out.data(text.as_bytes());
    }
    let event = store.recover()?;
    if out.json {
        let (recovered, message) = match &event {
            Some(e) => (true, Some(e.to_string())),
            None => (false, None),
        };
        let generation = store.generation()?;
        return out.json_line(&serde_json::json!({
            "file": args.file.to_string_lossy(),
            "recovered": recovered,
            "generation": generation,
            "message": message,
        }));
    }
    let text = match event {
        Some(e) => format!("recovered: {e}\n"),
        None => format!("`{file}` is sound; nothing to recover\n"),
    };
    out.data(text.as_bytes())
}
