//! `statesafe recover FILE`: restore the newest valid backup of a damaged file.

use crate::cli::RecoverArgs;
use crate::error::Result;
use crate::output::Output;

/// Recovers now if the file is damaged; says so if it was sound.
pub fn run(args: RecoverArgs, out: &Output) -> Result<()> {
    let file = args.file.display();
    // A state in PostgreSQL whose recorded settings are damaged cannot be opened:
    // they are moved into the quarantine table first (said below, never silently).
    let mut settings_moved = None;
    if let Some(url) = args
        .file
        .to_str()
        .filter(|s| statesafe::postgres::is_url(s))
    {
        super::refuse_password(url)?;
        let timeout = args
            .write
            .lock_timeout
            .unwrap_or(statesafe::DEFAULT_LOCK_TIMEOUT);
        settings_moved = statesafe::postgres::quarantine_settings(url, timeout)?;
        if let (Some(place), false) = (&settings_moved, out.json) {
            out.data(format!("recovered: the recorded settings of `{file}` were not valid; moved as they were to `{}`; the state has the default settings now: record yours again with `statesafe settings {file} …`\n", place.display()).as_bytes())?;
        }
    }
    // No event hook here: the recovery is the result, printed below.
    let store = super::open_quiet(&args.file, &args.write)?;
    if args.accept_snapshot {
        let accepted = store.accept_snapshot()?;
        // Where an older copy of the journal was left in the lost one's place, the
        // newest version it still held is kept (its history entry says which).
        let kept = accepted.and_then(|g| {
            let history = store.history().ok()?;
            match history
                .into_iter()
                .rev()
                .find(|e| e.generation == g)?
                .change
            {
                statesafe::Change::Restore { from } => Some(from),
                _ => None,
            }
        });
        if out.json {
            return out.json_line(&serde_json::json!({
                "file": args.file.to_string_lossy(),
                "accepted": accepted.is_some(),
                "generation": accepted,
                "kept": kept,
            }));
        }
        let text = match (accepted, kept) {
            (Some(g), Some(k)) => format!(
                "accepted: `{file}` is now generation {g}, the document of generation {k}: the newest version the older journal left in the lost one's place still held (quarantined as it was); the acknowledged commits after generation {k} are gone\n"
            ),
            (Some(g), None) => format!(
                "accepted: `{file}` is its snapshot, now generation {g}; the commits of the lost journal are gone\n"
            ),
            (None, _) => format!("`{file}` has lost no journal; nothing to accept\n"),
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
        let mut line = serde_json::json!({
            "file": args.file.to_string_lossy(),
            "recovered": recovered,
            "generation": generation,
            "message": message,
        });
        if statesafe::postgres::is_url(&args.file.to_string_lossy()) {
            // Where damaged recorded settings went (PostgreSQL only), or null.
            line["settings_quarantined"] =
                serde_json::json!(settings_moved.map(|p| p.to_string_lossy().into_owned()));
        }
        return out.json_line(&line);
    }
    let text = match event {
        Some(e) => format!("recovered: {e}\n"),
        None => format!("`{file}` is sound; nothing to recover\n"),
    };
    out.data(text.as_bytes())
}
