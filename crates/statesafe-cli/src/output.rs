//! Where output goes and how it looks: data on stdout, diagnostics on stderr, plain
//! text or `--json`, colour only on a terminal without `NO_COLOR`, and a quiet exit
//! when the reader of stdout goes away.

use std::io::{self, IsTerminal, Write};
use std::path::Path;

use crate::error::{CliError, Result};

/// The output settings of one run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Machine-readable output (`--json`).
    pub json: bool,
    /// Colour on stderr.
    color: bool,
}

const RED_BOLD: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const CYAN_BOLD: &str = "\x1b[1;36m";
const RESET: &str = "\x1b[0m";

impl Output {
    /// Settings for this process: `json` from the flag, colour from the environment.
    pub fn new(json: bool) -> Output {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Output {
            json,
            color: !json && !no_color && !dumb && io::stderr().is_terminal(),
        }
    }

    /// Writes `bytes` to stdout and flushes; a closed pipe becomes a silent exit.
    pub fn data(&self, bytes: &[u8]) -> Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(|e| match e.kind() {
                io::ErrorKind::BrokenPipe => CliError::broken_pipe(),
                _ => CliError::io("write to stdout", e),
            })
    }

    /// Writes `value` as one line of JSON on stdout.
    pub fn json_line(&self, value: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(value).expect("invariant: a Value always serializes");
        line.push(b'\n');
        self.data(&line)
    }

    /// The result of a command that wrote (or would have written) the state file:
    /// nothing in text mode, an object in JSON mode.
    pub fn written(&self, file: &Path, generation: u64, changed: bool) -> Result<()> {
        if self.json {
            self.json_line(&serde_json::json!({
                "file": file.to_string_lossy(),
                "generation": generation,
                "changed": changed,
            }))?;
        }
        Ok(())
    }

    /// A note for a person on stderr (never in JSON mode).
    pub fn note(&self, message: &str) {
        if !self.json {
            let _ = writeln!(io::stderr().lock(), "{message}");
        }
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    /// Prints a warning on stderr: `warning: ...`, or a JSON object with `--json`.
    pub fn warning(&self, kind: &str, message: &str) {
        let mut stderr = io::stderr().lock();
        if self.json {
            let line = serde_json::json!({ "warning": kind, "message": message });
            let _ = writeln!(stderr, "{line}");
        } else {
            let _ = writeln!(stderr, "{} {message}", self.paint(YELLOW, "warning:"));
        }
    }

    /// Prints a lone `hint:` line on stderr (after clap's own usage errors).
    pub fn hint(&self, hint: &str) {
        let _ = writeln!(
            io::stderr().lock(),
            "{} {hint}",
            self.paint(CYAN_BOLD, "hint:")
        );
    }

    /// Prints `err` on stderr, as text or JSON.
    pub fn error(&self, err: &CliError) {
        if err.silent {
            return;
        }
        let mut stderr = io::stderr().lock();
        if self.json {
            let _ = writeln!(stderr, "{}", err.to_json());
            return;
        }
        let mut text = format!("{} {}\n", self.paint(RED_BOLD, "error:"), err.message);
        if let Some(snippet) = &err.snippet {
            for line in snippet.lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        for cause in &err.causes {
            text.push_str(&format!("{} {cause}\n", self.paint(YELLOW, "caused by:")));
        }
        if let Some(hint) = &err.hint {
            text.push_str(&format!("{} {hint}\n", self.paint(CYAN_BOLD, "hint:")));
        }
        let _ = stderr.write_all(text.as_bytes());
    }
}
