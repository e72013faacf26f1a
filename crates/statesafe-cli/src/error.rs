//! Errors of the command line and the exit codes they map to.
//!
//! Every failure becomes one [`CliError`]: a stable `kind` for scripts, a one-line
//! message, the chain of causes, an optional hint, and an exit code from
//! [`EXIT_CODES`]. The table is the contract with scripts: codes are never reused
//! for something else.

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;

/// An exit status of `statesafe`. The numbers are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any failure without a code of its own.
    Failure = 1,
    /// Bad flags or arguments (clap's usage errors).
    Usage = 2,
    /// The state file, or the value at a pointer, does not exist.
    NotFound = 3,
    /// Bad input: JSON, pointer, jq expression or its result, a path that cannot be a state file.
    InvalidInput = 4,
    /// Another writer held the lock for longer than the lock timeout.
    LockTimeout = 5,
    /// Someone else changed the state file since it was read.
    Conflict = 6,
    /// The state file is not a valid document.
    Corrupt = 7,
    /// Permission denied, or a read-only filesystem.
    Permission = 8,
    /// The filesystem is full or the quota is exhausted.
    NoSpace = 9,
    /// Any other I/O error.
    Io = 10,
    /// The new state is in place, but may not survive a power loss.
    OutcomeUnknown = 11,
    /// `init`: the state file already exists.
    Exists = 12,
    /// The command or editor failed, or the edit was abandoned; nothing written.
    Aborted = 13,
    /// statesafe refused an object beside the state file that it cannot trust (a
    /// symlink, FIFO or foreign-owned sidecar or entry, an untrusted symlink in a
    /// sticky directory); nothing followed, written or removed.
    Unsafe = 14,
    /// A jq expression or `exec`'s command ran out of time or memory; nothing written.
    EvalLimit = 15,
    /// The state file was deleted while its sidecar shows committed generations;
    /// nothing served or written.
    Deleted = 16,
    /// The command exists but cannot be run (shell convention).
    CannotRun = 126,
    /// The command was not found (shell convention).
    CommandNotFound = 127,
}

impl Exit {
    /// The numeric exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit-code table, as printed by `--help` and in `docs/cli.md`.
pub const EXIT_CODES: &[(Exit, &str)] = &[
    (Exit::Ok, "success"),
    (Exit::Failure, "other failure"),
    (
        Exit::Usage,
        "usage error: unknown flag, missing argument, missing `--`",
    ),
    (
        Exit::NotFound,
        "the state file, the value at POINTER, or the generation asked for does not exist",
    ),
    (
        Exit::InvalidInput,
        "invalid input: JSON, pointer, jq expression or output, schema, size limit, path",
    ),
    (
        Exit::LockTimeout,
        "timed out waiting for the writers' lock, or lost it while held (nothing written)",
    ),
    (
        Exit::Conflict,
        "generation conflict: the file changed since it was read",
    ),
    (
        Exit::Corrupt,
        "the state file is corrupt (and could not be recovered), or `check` found a problem",
    ),
    (
        Exit::Permission,
        "permission denied or read-only filesystem",
    ),
    (Exit::NoSpace, "no space left (ENOSPC, EDQUOT)"),
    (Exit::Io, "other I/O error"),
    (
        Exit::OutcomeUnknown,
        "outcome unknown: the new state is in place but the directory fsync failed",
    ),
    (Exit::Exists, "`init`: the state file already exists"),
    (
        Exit::Aborted,
        "aborted: the command or editor failed, or the edit was abandoned",
    ),
    (
        Exit::Unsafe,
        "refused an untrusted sidecar entry or link (symlink, FIFO, foreign owner)",
    ),
    (
        Exit::EvalLimit,
        "`update`, `exec`: the expression or command exceeded --eval-timeout or its memory allowance",
    ),
    (
        Exit::Deleted,
        "the state file was deleted but its sidecar shows committed generations (`statesafe recover FILE` puts it back)",
    ),
    (Exit::CannotRun, "`exec`, `lock`: the command cannot be run"),
    (
        Exit::CommandNotFound,
        "`exec`, `lock`: the command was not found",
    ),
];

/// The exit-code table as plain text, for `--help`.
pub fn exit_codes_help() -> String {
    let mut s = String::from("Exit codes:\n");
    for (exit, meaning) in EXIT_CODES {
        s.push_str(&format!("  {:>3}  {meaning}\n", exit.code()));
    }
    s.push_str("  `lock` exits with CMD's own status once it holds the lock.");
    s
}

/// A failure, ready to be printed as text or JSON (boxed: results stay small).
#[derive(Debug)]
pub struct CliError(Box<ErrorData>);

/// The contents of a [`CliError`].
#[derive(Debug)]
pub struct ErrorData {
    /// A short stable name (`not_found`, `invalid_json`, ...).
    pub kind: &'static str,
    /// One line saying what went wrong.
    pub message: String,
    /// Lines shown under the message in text mode only (a caret under an expression).
    pub snippet: Option<String>,
    /// The chain of underlying causes, outermost first.
    pub causes: Vec<String>,
    /// What the user can do about it.
    pub hint: Option<String>,
    /// The exit status.
    pub exit: Exit,
    /// Extra fields for `--json` output (the lock holder, generations).
    pub details: Option<serde_json::Value>,
    /// Exit without printing anything (stdout was closed under us).
    pub silent: bool,
}

impl CliError {
    /// An error of `kind` with `message`, exiting with `exit`.
    pub fn new(kind: &'static str, exit: Exit, message: impl Into<String>) -> CliError {
        CliError(Box::new(ErrorData {
            kind,
            message: message.into(),
            snippet: None,
            causes: Vec::new(),
            hint: None,
            exit,
            details: None,
            silent: false,
        }))
    }

    /// Invalid input of some `kind` (`invalid_json`, `invalid_pointer`, ...).
    pub fn invalid(kind: &'static str, message: impl Into<String>) -> CliError {
        CliError::new(kind, Exit::InvalidInput, message)
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a snippet shown under the message.
    pub fn snippet(mut self, snippet: impl Into<String>) -> CliError {
        self.snippet = Some(snippet.into());
        self
    }

    /// Adds the source chain of `err` as causes (`err` itself included).
    pub fn caused_by(mut self, err: &(dyn StdError + 'static)) -> CliError {
        let mut next = Some(err);
        while let Some(e) = next {
            self.causes.push(e.to_string());
            next = e.source();
        }
        self
    }

    /// The error for an I/O failure of the command line itself (reading stdin, the
    /// editor's file), classified like the library's own.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> CliError {
        let (kind, exit) = match err.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                ("permission_denied", Exit::Permission)
            }
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                ("no_space", Exit::NoSpace)
            }
            std::io::ErrorKind::NotFound => ("not_found", Exit::NotFound),
            _ => ("io", Exit::Io),
        };
        CliError::new(kind, exit, format!("failed to {what}")).caused_by(&err)
    }

    /// Stdout was closed by the reader (`statesafe get f | head -1`): exit quietly.
    pub fn broken_pipe() -> CliError {
        let mut e = CliError::new("broken_pipe", Exit::Ok, "stdout was closed");
        e.silent = true;
        e
    }

    /// Whether this error is a not-found from the library (the file is missing).
    pub fn is_not_found(&self) -> bool {
        self.kind == "not_found"
    }

    /// The error as the JSON object printed on stderr with `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::json!({
            "kind": self.kind,
            "message": self.message,
            "causes": self.causes,
            "hint": self.hint,
            "exit_code": self.exit.code(),
        });
        if let (Some(serde_json::Value::Object(extra)), Some(map)) =
            (&self.details, obj.as_object_mut())
        {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        obj
    }
}

impl std::ops::Deref for CliError {
    type Target = ErrorData;
    fn deref(&self) -> &ErrorData {
        &self.0
    }
}

impl std::ops::DerefMut for CliError {
    fn deref_mut(&mut self) -> &mut ErrorData {
        &mut self.0
    }
}

impl From<statesafe::Error> for CliError {
    fn from(err: statesafe::Error) -> CliError {
        use statesafe::Error as E;
        let exit = match &err {
            E::NotFound { .. } | E::GenerationUnavailable { .. } => Exit::NotFound,
            E::Deleted { .. } => Exit::Deleted,
            // A deleted file nothing proves a version of is still deleted, not damaged.
            E::Unrecoverable { damage, .. } if matches!(**damage, E::Deleted { .. }) => {
                Exit::Deleted
            }
            E::Corrupt { .. } | E::Unrecoverable { .. } => Exit::Corrupt,
            E::LockTimeout { .. } | E::LockLost { .. } => Exit::LockTimeout,
            E::Unsafe { .. } => Exit::Unsafe,
            E::GenerationConflict { .. } => Exit::Conflict,
            E::Invalid { .. }
            | E::Mismatch { .. }
            | E::BadPath { .. }
            | E::TooLarge { .. }
            | E::TooDeep { .. }
            | E::BadSchema { .. } => Exit::InvalidInput,
            E::NoSpace { .. } => Exit::NoSpace,
            E::PermissionDenied { .. } | E::ReadOnly { .. } => Exit::Permission,
            E::OutcomeUnknown { .. } => Exit::OutcomeUnknown,
            E::AlreadyExists { .. } => Exit::Exists,
            E::Poisoned { .. } | E::Io { .. } | E::Remote { .. } => Exit::Io,
            _ => Exit::Failure,
        };
        let details = match &err {
            E::LockTimeout {
                holder: Some(h), ..
            } => Some(serde_json::json!({ "holder": h })),
            E::GenerationConflict {
                expected, found, ..
            } => Some(
                serde_json::json!({ "expected_generation": expected, "found_generation": found }),
            ),
            E::OutcomeUnknown { generation, .. } => {
                Some(serde_json::json!({ "generation": generation }))
            }
            E::Unrecoverable {
                quarantined, tried, ..
            } => Some(serde_json::json!({
                "quarantined": quarantined.as_ref().map(|p| p.to_string_lossy()),
                "tried": tried.iter().map(|(p, why)| serde_json::json!({"backup": p.to_string_lossy(), "problem": why})).collect::<Vec<_>>(),
            })),
            _ => None,
        };
        let hint = match &err {
            E::NotFound { path } => Some(format!(
                "create it first with `statesafe init {}`, or check the path",
                shell_quote(path)
            )),
            // The library names the setting; on the command line it is a flag.
            E::TooLarge { path, size, .. } => Some(format!(
                "remove data from the state, or raise the limit: `statesafe settings {} --max-bytes BYTES` (this document needs at least {size})",
                shell_quote(path)
            )),
            _ => err.hint(),
        };
        let mut cli = CliError::new(err.kind(), exit, err.to_string());
        cli.hint = hint;
        cli.details = details;
        let mut next = err.source();
        while let Some(e) = next {
            cli.causes.push(e.to_string());
            next = e.source();
        }
        explain_damage(&err, &mut cli);
        cli
    }
}

/// What the bytes of a state file that did not parse begin with, for the two cases
/// a newcomer meets first and the library reports only as corrupt.
#[derive(Debug, PartialEq, Eq)]
enum Damage {
    /// Nothing but whitespace: nothing was ever written, or a write was cut short.
    Empty,
    /// A UTF-8 byte-order mark (EF BB BF), as some Windows editors save JSON.
    Bom,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Looks at a file reported as corrupt (directly or as the damage of an unrecoverable
/// one) and, when it is empty or starts with a BOM, says so and what to do. The
/// file's own bytes decide (at most 64 KiB are read); anything else is left as the
/// library reported it.
fn explain_damage(err: &statesafe::Error, cli: &mut CliError) {
    use statesafe::Error as E;
    // The file itself stays where it is (a quarantined copy is only a copy), so the
    // hints below speak of it alone.
    let path = match err {
        E::Corrupt { path, .. } => path,
        E::Unrecoverable { path, damage, .. } if matches!(**damage, E::Corrupt { .. }) => path,
        _ => return,
    };
    let Some(damage) = damage_of(path) else {
        return;
    };
    let file = shell_quote(path);
    match damage {
        Damage::Empty => {
            cli.hint = Some(format!(
                "the file holds no document, so there is nothing to recover; to start afresh deliberately: `statesafe init {file} '{{}}' --force`"
            ));
        }
        Damage::Bom => {
            cli.message = format!(
                "state file `{}` starts with a UTF-8 byte-order mark (BOM), which JSON does not allow",
                path.display()
            );
            cli.causes.push(
                "the first three bytes are EF BB BF, as some editors (Windows Notepad) save UTF-8"
                    .into(),
            );
            cli.hint = Some(format!(
                "statesafe does not change a file it did not write; remove the BOM and the document is adopted as it is: `sed -i '1s/^\\xEF\\xBB\\xBF//' {file}`"
            ));
        }
    }
}

fn damage_of(path: &Path) -> Option<Damage> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    if head.starts_with(BOM) {
        Some(Damage::Bom)
    } else if head.iter().all(u8::is_ascii_whitespace)
        && std::fs::metadata(path).is_ok_and(|m| m.len() <= head.len() as u64)
    {
        Some(Damage::Empty)
    } else {
        None
    }
}

/// `path` as it would be typed in a shell (quoted only when it needs to be), as an
/// argument of a command: a name that starts with `-` is written `./-name`, which no
/// command reads as an option (review22). The library's hints follow the same rules
/// (`statesafe::error::command_word`).
pub fn shell_quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    // Only a relative path starts with `-`: `./` names the same file.
    if s.starts_with('-') {
        shell_word(&format!("./{s}"))
    } else {
        shell_word(&s)
    }
}

/// `s` as one shell word (quoted only when it needs to be).
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+,:@%=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Shorthand for results of the command line.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for (exit, _) in EXIT_CODES {
            assert!(seen.insert(exit.code()), "code {} twice", exit.code());
        }
        let docs = include_str!("../../../docs/cli.md");
        for (exit, meaning) in EXIT_CODES {
            let row = format!("| {} | {} |", exit.code(), meaning);
            assert!(docs.contains(&row), "docs/cli.md lacks the row `{row}`");
        }
    }

    #[test]
    fn damage_is_named_from_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert_eq!(damage_of(&file("empty", b"")), Some(Damage::Empty));
        assert_eq!(damage_of(&file("blank", b" \n\t")), Some(Damage::Empty));
        assert_eq!(
            damage_of(&file("bom", b"\xEF\xBB\xBF{}")),
            Some(Damage::Bom)
        );
        assert_eq!(damage_of(&file("torn", b"{\"a\":")), None);
        assert_eq!(damage_of(&dir.path().join("missing")), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(Path::new("a/b.json")), "a/b.json");
        assert_eq!(shell_quote(Path::new("it's.json")), r"'it'\''s.json'");
        assert_eq!(shell_quote(Path::new("-x.json")), "./-x.json");
        assert_eq!(shell_quote(Path::new("-x y.json")), "'./-x y.json'");
        assert_eq!(shell_quote(Path::new("/a/-x.json")), "/a/-x.json");
    }
}
