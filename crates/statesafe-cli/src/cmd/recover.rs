//! `statesafe recover FILE`: restore the newest valid backup of a damaged file.

use crate::cli::RecoverArgs;
use crate::error::Result;
use crate::output::Output;

/// Recovers now if the file is damaged; says so if it was sound.
pub fn run(args: RecoverArgs, out: &Output) -> Result<()> {
    // No event hook here: the recovery is the result, printed below.
    let store = super::open_quiet(&args.file, &args.write)?;
    let event = store.recover()?;
    let file = args.file.display();
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
