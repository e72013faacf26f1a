//! `statesafe info FILE`: a summary of the state file.

use serde_json::Value;
use statesafe::Store;

use super::backups::time;
use crate::cli::FileArgs;
use crate::error::Result;
use crate::output::Output;

/// Prints the summary as `key: value` lines, or one JSON object.
pub fn run(args: FileArgs, out: &Output) -> Result<()> {
    let store = super::open_at(Store::<Value>::options(), &args.file)?;
    let info = store.info()?;
    let settings = serde_json::to_value(&info.settings).expect("invariant: settings serialize");
    let writer = info.last_writer.as_ref().map(|(w, at)| {
        serde_json::json!({"pid": w.pid, "host": w.host, "user": w.user, "command": w.command, "time": at})
    });
    if out.json {
        return out.json_line(&serde_json::json!({
            "file": info.path.to_string_lossy(),
            "real_path": info.real_path.to_string_lossy(),
            "exists": info.exists,
            "deleted": info.deleted.is_some(),
            "generation": info.generation,
            "format": info.format.map(|f| f.name()),
            "size": info.size,
            "modified": info.modified.map(time),
            "last_writer": writer,
            "backups": info.backups.iter().map(|b| b.generation).collect::<Vec<_>>(),
            "lock_holder": info.lock_holder,
            "settings": settings,
        }));
    }
    let mut text = String::new();
    let mut line = |k: &str, v: String| text.push_str(&format!("{k:<12} {v}\n"));
    line("file:", info.path.display().to_string());
    if info.real_path != info.path {
        line("real path:", info.real_path.display().to_string());
    }
    // A deleted file: what its sidecar knows, and the way back.
    line(
        "exists:",
        match (info.exists, info.deleted) {
            (true, _) => "yes".into(),
            (false, None) => "no".into(),
            (false, Some(_)) => format!(
                "no: deleted (its sidecar shows commits; `statesafe recover {}` puts it back)",
                crate::error::shell_quote(&info.path)
            ),
        },
    );
    line(
        "generation:",
        match info.deleted {
            None => info.generation.to_string(),
            Some(g) => format!("{g} (the last its sidecar knows)"),
        },
    );
    line("format:", info.format.map_or("-", |f| f.name()).into());
    line("size:", format!("{} bytes", info.size));
    line("modified:", info.modified.map_or("-".into(), time));
    line(
        "last writer:",
        info.last_writer.as_ref().map_or("-".into(), |(w, at)| {
            format!("pid {} {}@{} at {at}", w.pid, w.user, w.host)
        }),
    );
    line(
        "backups:",
        if info.backups.is_empty() {
            "none".into()
        } else {
            let gens: Vec<_> = info
                .backups
                .iter()
                .map(|b| b.generation.to_string())
                .collect();
            format!("{} (generations {})", info.backups.len(), gens.join(", "))
        },
    );
    line(
        "locked by:",
        info.lock_holder
            .as_ref()
            .map_or("nobody".into(), |h| h.to_string()),
    );
    line(
        "settings:",
        serde_json::to_string(&settings).expect("invariant: settings serialize"),
    );
    out.data(text.as_bytes())
}
