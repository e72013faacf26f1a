//! `statesafe exec FILE -- CMD ARGS...`: a program in any language as a transactional
//! filter. The document goes to CMD's stdin while the lock is held; CMD's stdout
//! becomes the new document only if CMD exits 0 and prints exactly one JSON document.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::{Command, ExitStatus, Stdio};

use crate::cli::ExecArgs;
use crate::error::{CliError, Exit, Result};
use crate::output::Output;

/// Runs CMD under the lock and commits its output, or leaves the file unchanged.
pub fn run(args: ExecArgs, out: &Output) -> Result<()> {
    let store = super::open(&args.file, Some(&args.write), out)?;
    let mut tx = if args.create {
        store.begin_or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))?
    } else {
        store.begin()?
    };
    let before = tx.generation();
    let existed = tx.existed();
    let input = super::pretty(tx.state());
    let shown = display_command(&args.command);
    let file = args.file.display();

    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("STATESAFE_FILE", &args.file)
        .env("STATESAFE_GENERATION", before.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| spawn_error(&args.command[0], e))?;
    let stdin = child.stdin.take().expect("invariant: stdin is piped");
    let mut stdout = child.stdout.take().expect("invariant: stdout is piped");
    let (output, status) = std::thread::scope(|s| -> Result<(Vec<u8>, ExitStatus)> {
        // Feed stdin from another thread: CMD may write before it has read everything.
        let feeder = s.spawn(move || {
            let mut stdin = stdin;
            match stdin.write_all(&input) {
                // CMD need not read its input.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other,
            }
        });
        let mut output = Vec::new();
        let read = stdout.read_to_end(&mut output);
        let status = child.wait();
        let fed = feeder
            .join()
            .expect("invariant: the stdin feeder does not panic");
        read.map_err(|e| CliError::io(format_args!("read the output of `{shown}`"), e))?;
        fed.map_err(|e| CliError::io(format_args!("write the document to `{shown}`"), e))?;
        let status = status.map_err(|e| CliError::io(format_args!("wait for `{shown}`"), e))?;
        Ok((output, status))
    })?;

    if !status.success() {
        return Err(CliError::new(
            "command_failed",
            Exit::Aborted,
            format!("`{shown}` {}; `{file}` is unchanged", describe(status)),
        )
        .hint("the document is committed only when the command exits with status 0"));
    }
    let value =
        super::parse_json(&output, &format!("the output of `{shown}`")).map_err(|mut e| {
            e.kind = "invalid_output";
            e.message = format!("{}; `{file}` is unchanged", e.message);
            e.hint(
                "the command must print the whole new document, exactly one JSON value, on stdout",
            )
        })?;
    tx.set(value);
    let generation = tx.commit()?;
    out.written(&args.file, generation, generation != before || !existed)
}

/// The command line as shown in messages.
pub fn display_command(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| crate::error::shell_word(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The error for a command that could not be started (127 not found, 126 otherwise).
pub fn spawn_error(program: &OsString, err: io::Error) -> CliError {
    let program = program.to_string_lossy();
    if err.kind() == io::ErrorKind::NotFound {
        CliError::new(
            "command_not_found",
            Exit::CommandNotFound,
            format!("cannot run `{program}`: command not found"),
        )
        .hint("check the spelling and $PATH; the state file is unchanged")
    } else {
        CliError::new(
            "cannot_run",
            Exit::CannotRun,
            format!("cannot run `{program}`"),
        )
        .caused_by(&err)
        .hint("check that it is an executable file; the state file is unchanged")
    }
}

/// "exited with status 3" or "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("failed ({status})"),
    }
}

/// The status a shell would report: the exit code, or 128 + the signal.
pub fn shell_status(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => Exit::Failure.code(),
    }
}
