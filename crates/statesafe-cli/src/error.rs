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
    (Exit::LockTimeout, "timed out waiting for the writers' lock"),
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
            E::Corrupt { .. } | E::Unrecoverable { .. } => Exit::Corrupt,
            E::LockTimeout { .. } => Exit::LockTimeout,
            E::GenerationConflict { .. } => Exit::Conflict,
            E::Invalid { .. } | E::BadPath { .. } | E::TooLarge { .. } | E::BadSchema { .. } => {
                Exit::InvalidInput
            }
            E::NoSpace { .. } => Exit::NoSpace,
            E::PermissionDenied { .. } | E::ReadOnly { .. } => Exit::Permission,
            E::OutcomeUnknown { .. } => Exit::OutcomeUnknown,
            E::AlreadyExists { .. } => Exit::Exists,
            E::Poisoned { .. } | E::Io { .. } => Exit::Io,
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
        cli
    }
}

/// `path` as it would be typed in a shell (quoted only when it needs to be).
pub fn shell_quote(path: &Path) -> String {
    shell_word(&path.to_string_lossy())
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
    fn quoting() {
        assert_eq!(shell_quote(Path::new("a/b.json")), "a/b.json");
        assert_eq!(shell_quote(Path::new("it's.json")), r"'it'\''s.json'");
    }
}
