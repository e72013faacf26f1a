//! `statesafe exec FILE -- CMD ARGS...`: a program in any language as a transactional
//! filter. The document goes to CMD's stdin while the lock is held; CMD's stdout
//! becomes the new document only if CMD exits 0 and prints exactly one JSON document.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::{Command, ExitStatus, Stdio};

use crate::cli::ExecArgs;
use crate::error::{CliError, Exit, Result};
use crate::output::Output;

/// The output CMD may print: this, or four times the document, whichever is larger
/// (as `jq.rs` allows an expression).
const OUTPUT_ALLOWANCE: u64 = 1 << 30;

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
    // What CMD may print, as a jq expression may add to the process's memory: its
    // output is gathered whole, so a runaway printer (`yes`) would otherwise take all
    // the machine's memory before --eval-timeout.
    let allowance = OUTPUT_ALLOWANCE.max(4 * input.len() as u64);
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
    // Feed stdin and read stdout on threads of their own (CMD may write before it
    // has read everything), while this thread watches the clock: CMD runs with the
    // writers' lock held, so it gets --eval-timeout, then it is killed. The threads
    // are not waited for after a kill: a grandchild may hold the pipes open.
    let feeder = std::thread::spawn(move || {
        let mut stdin = stdin;
        match stdin.write_all(&input) {
            // CMD need not read its input.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    });
    let (output_tx, output_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut output = Vec::new();
        let read = (&mut stdout)
            .take(allowance + 1)
            .read_to_end(&mut output)
            .map(|_| output);
        let _ = output_tx.send(read);
    });
    let deadline = std::time::Instant::now() + args.eval_timeout;
    let timed_out = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        CliError::new(
            "expression_limit",
            Exit::EvalLimit,
            format!(
                "`{shown}` did not finish within {} and was killed; `{file}` is unchanged",
                humantime::format_duration(args.eval_timeout)
            ),
        )
        .hint("the command runs while the writers' lock is held; give it more time with --eval-timeout if it is merely slow")
    };
    // Its output ends when it exits (or closes stdout), then its status follows.
    let output = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(timed_out(&mut child));
        }
        match output_rx.recv_timeout(left) {
            Ok(read) => {
                break read
                    .map_err(|e| CliError::io(format_args!("read the output of `{shown}`"), e))?;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("invariant: the stdout reader sends before it ends")
            }
        }
    };
    if output.len() as u64 > allowance {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CliError::new(
            "expression_limit",
            Exit::EvalLimit,
            format!(
                "`{shown}` printed more than {} MiB, its memory allowance, and was killed; `{file}` is unchanged",
                allowance >> 20
            ),
        )
        .hint("the command must print the new document once; one that prints without end (`yes`, a loop) never finishes"));
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() >= deadline => {
                return Err(timed_out(&mut child));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(e) => return Err(CliError::io(format_args!("wait for `{shown}`"), e)),
        }
    };
    feeder
        .join()
        .expect("invariant: the stdin feeder does not panic")
        .map_err(|e| CliError::io(format_args!("write the document to `{shown}`"), e))?;

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
