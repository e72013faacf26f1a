//! `statesafe edit FILE`: edit a copy in `$VISUAL`/`$EDITOR`, check it, commit it
//! with a compare-and-swap on the generation it was read at.
//!
//! No lock is held while the editor runs (that could be hours). Instead the copy
//! remembers its generation, and the commit is `replace_if(generation)`: if someone
//! else wrote meanwhile, the user chooses to edit again on top of their change or to
//! abandon (without a terminal to ask on: abandon). An invalid document reopens the
//! editor with the error in `//` lines at the top, as visudo does; without a terminal
//! (a script as `$EDITOR`, stdin not a terminal) nobody can fix it, so the edit is
//! abandoned at once with the edited text saved, as after a conflict.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use statesafe::Store;

use super::exec::describe;
use crate::cli::EditArgs;
use crate::error::{CliError, Exit, Result};
use crate::output::Output;

/// Lines starting with this at the top of the edited file are ours, and removed.
const MARK: &str = "// statesafe:";
/// Every header we write has exactly this many lines (for error positions).
const HEADER_LINES: usize = 3;
const RETRY: &str =
    "fix it and save; save an empty file, or quit the editor with an error, to abandon.";
const FOOTER: &str =
    "lines starting with // at the top are removed before the document is checked.";

/// What the editor is shown, and why.
enum Shown {
    /// The document as read.
    Fresh,
    /// The user's invalid document, with the error on top.
    Invalid,
    /// The other writer's new version, after a conflict.
    Rebased,
}

/// Runs the edit loop until the document is committed or the edit is abandoned.
pub fn run(args: EditArgs, out: &Output) -> Result<()> {
    let file = args.file.display().to_string();
    let store = super::open(&args.file, Some(&args.write), out)?;
    let (mut base, mut generation) = load(&store, args.create)?;
    let editor = editor();
    let temp = tempfile::Builder::new()
        .prefix("statesafe-edit-")
        .suffix(".json")
        .tempfile()
        .map_err(|e| CliError::io("create a temporary file to edit", e))?;
    let path = temp.path().to_path_buf();
    let mut shown = super::pretty(&base);
    let mut why = Shown::Fresh;
    let mut last_error = String::new();
    loop {
        std::fs::write(&path, &shown)
            .map_err(|e| CliError::io(format_args!("write `{}`", path.display()), e))?;
        run_editor(&editor, &path, &file)?;
        let edited = std::fs::read(&path)
            .map_err(|e| CliError::io(format_args!("read `{}`", path.display()), e))?;
        if matches!(why, Shown::Invalid) && edited == shown {
            return Err(CliError::invalid(
                "invalid_json",
                format!(
                    "the edited document is still invalid ({last_error}); the edit was abandoned and `{file}` is unchanged"
                ),
            )
            .hint("run `statesafe edit` again to start over"));
        }
        let (body, removed) = strip_header(&edited);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(CliError::new(
                "abandoned",
                Exit::Aborted,
                format!("the document is empty, so the edit was abandoned; `{file}` is unchanged"),
            ));
        }
        let value: Value = match statesafe::json::parse(body) {
            Ok(value) => value,
            Err(e) => {
                let reason = statesafe::json::reason(&e);
                last_error = format!(
                    "not valid JSON: {reason} at line {}, column {}",
                    e.line() + removed,
                    e.column()
                );
                if !io::stdin().is_terminal() {
                    return Err(abandon(
                        "invalid_json",
                        &format!("the edited document is {last_error}"),
                        &file,
                        body,
                    )?);
                }
                out.note(&format!(
                    "statesafe: the edited document is {last_error}; reopening the editor"
                ));
                let header = [
                    format!(
                        "this is not valid JSON: {reason} at line {}, column {}.",
                        e.line() + HEADER_LINES,
                        e.column()
                    ),
                    RETRY.into(),
                    FOOTER.into(),
                ];
                shown = with_header(&header, body);
                why = Shown::Invalid;
                continue;
            }
        };
        if value == base {
            out.note(&format!("statesafe: no changes; `{file}` is unchanged"));
            return out.written(&args.file, generation, false);
        }
        match store.replace_if(generation, value) {
            Ok(new) => return out.written(&args.file, new, true),
            Err(e @ (statesafe::Error::Invalid { .. } | statesafe::Error::TooLarge { .. })) => {
                last_error = e.to_string();
                if !io::stdin().is_terminal() {
                    return Err(abandon(
                        e.kind(),
                        &format!("the edited document was refused ({last_error})"),
                        &file,
                        body,
                    )?);
                }
                out.note(&format!("statesafe: {last_error}; reopening the editor"));
                let header = [
                    format!("refused: {last_error}."),
                    RETRY.into(),
                    FOOTER.into(),
                ];
                shown = with_header(&header, body);
                why = Shown::Invalid;
            }
            Err(statesafe::Error::GenerationConflict { found, .. }) => {
                let kept = keep(body)?;
                let message = format!(
                    "`{file}` was changed by someone else while you were editing (generation {generation}, now {found})"
                );
                if !ask_retry(&message, &kept, out)? {
                    let mut e = CliError::new(
                        "generation_conflict",
                        Exit::Conflict,
                        format!("{message}; your edit was not committed"),
                    )
                    .hint(format!(
                        "your version is saved in `{}`; run `statesafe edit` again to redo your change on top of the new version",
                        kept.display()
                    ));
                    e.details = Some(serde_json::json!({
                        "expected_generation": generation,
                        "found_generation": found,
                        "kept": kept.to_string_lossy(),
                    }));
                    return Err(e);
                }
                (base, generation) = load(&store, args.create)?;
                let header = [
                    format!(
                        "`{file}` changed while you were editing; this is its new version (generation {generation})."
                    ),
                    format!(
                        "your version is saved in {}; redo your change here.",
                        kept.display()
                    ),
                    FOOTER.into(),
                ];
                shown = with_header(&header, &super::pretty(&base));
                why = Shown::Rebased;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The document and its generation; a missing file starts from `{}` with `--create`.
fn load(store: &Store, create: bool) -> Result<(Value, u64)> {
    match store.load() {
        Ok(snap) => Ok((snap.state, snap.generation)),
        Err(statesafe::Error::NotFound { .. }) if create => {
            Ok((Value::Object(serde_json::Map::new()), 0))
        }
        Err(e @ statesafe::Error::NotFound { .. }) => Err(CliError::from(e).hint(
            "create it first with `statesafe init FILE`, or pass --create to start from `{}`",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `$VISUAL`, else `$EDITOR`, else `vi`.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".into())
}

/// Runs the editor through `sh -c`, so `code --wait` and the like work.
fn run_editor(editor: &str, path: &Path, file: &str) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(editor)
        .arg(path)
        .status()
        .map_err(|e| CliError::io(format_args!("run the editor `{editor}`"), e))?;
    if status.success() {
        return Ok(());
    }
    if status.code() == Some(127) {
        return Err(CliError::new(
            "editor_failed",
            Exit::Aborted,
            format!("the editor `{editor}` was not found (the shell exited with status 127); `{file}` is unchanged"),
        )
        .hint("set $VISUAL or $EDITOR to an installed editor, for example `EDITOR=nano`"));
    }
    Err(CliError::new(
        "editor_failed",
        Exit::Aborted,
        format!("the editor `{editor}` {}; `{file}` is unchanged", describe(status)),
    )
    .hint("the edit is committed only when the editor exits with status 0; set $VISUAL or $EDITOR to change the editor"))
}

/// Splits off our `// statesafe:` lines at the top; returns the rest and how many
/// lines were removed.
fn strip_header(text: &[u8]) -> (&[u8], usize) {
    let mut rest = text;
    let mut removed = 0;
    while rest.starts_with(b"//") {
        match rest.iter().position(|b| *b == b'\n') {
            Some(end) => rest = &rest[end + 1..],
            None => rest = &[],
        }
        removed += 1;
    }
    (rest, removed)
}

fn with_header(lines: &[String; HEADER_LINES], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(format!("{MARK} {line}\n").as_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// The error for an invalid edit without a terminal: reopening the editor would only
/// run the same script again (forever, if its output changes each time), so the
/// edit is abandoned and the user's version kept for them to fix.
fn abandon(kind: &'static str, problem: &str, file: &str, body: &[u8]) -> Result<CliError> {
    let kept = keep(body)?;
    let mut e = CliError::invalid(
        kind,
        format!(
            "{problem}; without a terminal the editor is not reopened, so the edit was abandoned and `{file}` is unchanged"
        ),
    )
    .hint(format!(
        "your version is saved in `{}`; fix it there and commit it with `statesafe write {} < {}`",
        kept.display(),
        crate::error::shell_quote(std::path::Path::new(file)),
        crate::error::shell_quote(&kept),
    ));
    e.details = Some(serde_json::json!({ "kept": kept.to_string_lossy() }));
    Ok(e)
}

/// Saves the user's version where it survives this process.
fn keep(body: &[u8]) -> Result<std::path::PathBuf> {
    let (mut f, path) = tempfile::Builder::new()
        .prefix("statesafe-edit-kept-")
        .suffix(".json")
        .tempfile()
        .and_then(|t| t.keep().map_err(|e| e.error))
        .map_err(|e| CliError::io("save your edited version", e))?;
    f.write_all(body)
        .map_err(|e| CliError::io(format_args!("write `{}`", path.display()), e))?;
    Ok(path)
}

/// Asks on the terminal whether to edit again on top of the new version. Without a
/// terminal (or in `--json` mode) there is nobody to ask: abandon.
fn ask_retry(message: &str, kept: &Path, out: &Output) -> Result<bool> {
    if out.json || !io::stdin().is_terminal() || !io::stderr().is_terminal() {
        return Ok(false);
    }
    let mut stderr = io::stderr().lock();
    let mut answer = String::new();
    loop {
        let _ = write!(
            stderr,
            "statesafe: {message}.\nYour version is saved in `{}`.\nEdit again on top of the new version? [r]etry / [a]bandon: ",
            kept.display()
        );
        let _ = stderr.flush();
        answer.clear();
        let n = io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| CliError::io("read the answer", e))?;
        match answer.trim().to_ascii_lowercase().as_str() {
            _ if n == 0 => return Ok(false),
            "r" | "retry" | "y" | "yes" => return Ok(true),
            "a" | "abandon" | "n" | "no" | "q" => return Ok(false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let lines = ["a".to_string(), "b".to_string(), "c".to_string()];
        let text = with_header(&lines, b"{\n}\n");
        let (body, removed) = strip_header(&text);
        assert_eq!(body, b"{\n}\n");
        assert_eq!(removed, HEADER_LINES);
        assert_eq!(strip_header(b"{}"), (&b"{}"[..], 0));
        assert_eq!(strip_header(b"// only"), (&b""[..], 1));
    }
}
