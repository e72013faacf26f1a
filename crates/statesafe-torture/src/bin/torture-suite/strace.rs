//! Running the driver under `strace`, with and without injections, and reading traces.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::driver::Op;

/// Longest a driver may take before it counts as hung.
const HANG: Duration = Duration::from_secs(15);

/// Syscalls that touch neither a file nor a descriptor: a kill there is the same crash
/// state as a kill at the next call, and an error there is not an I/O error.
const PURE: &[&str] = &[
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "uname",
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "madvise",
    "mprotect",
    "futex",
    "clock_gettime",
    "rt_sigaction",
    "rt_sigprocmask",
    "sigaltstack",
    "sched_yield",
    "getrandom",
    "clock_nanosleep",
    "nanosleep",
];

/// One system call of a trace.
#[derive(Debug, Clone)]
pub struct Call {
    /// The syscall name, as strace names it (and as `inject=` takes it).
    pub name: String,
    /// 1-based number of this call among the calls of the same name since exec.
    pub ordinal: usize,
    /// The whole line (with `-y`, descriptors show their paths).
    pub line: String,
}

impl Call {
    /// Whether the call is I/O on a file or descriptor (not the driver's stdout/stderr).
    ///
    /// `close` is left out: Linux frees the descriptor whatever close returns, and std
    /// panics on a failed `closedir` (reported to the library's author), so an error
    /// there tests std, not the protocol. Kills at `close` are still checked.
    pub fn is_io(&self) -> bool {
        !PURE.contains(&self.name.as_str())
            && self.name != "close"
            && !self.line.contains("(1<")
            && !self.line.contains("(2<")
            && !self.line.starts_with("write(1,")
            && !self.line.starts_with("write(2,")
    }

    /// Whether a kill before this call is a crash point worth checking (any call that
    /// is not pure, including the acknowledgement on stdout).
    pub fn is_crash_point(&self) -> bool {
        !PURE.contains(&self.name.as_str()) && !self.line.contains("torture-driver: end")
    }

    /// Whether the call changes a file or a directory, or makes a change durable (a
    /// kill between two such calls leaves the same files as a kill at the next one).
    pub fn changes_files(&self) -> bool {
        match self.name.as_str() {
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "ftruncate"
            | "fallocate" | "fsync" | "fdatasync" | "rename" | "renameat" | "renameat2"
            | "link" | "linkat" | "unlink" | "unlinkat" | "mkdir" | "mkdirat" | "rmdir"
            | "fsetxattr" | "setxattr" | "fremovexattr" | "removexattr" | "fchmod" | "fchown" => {
                true
            }
            "open" | "openat" => self.line.contains("O_CREAT"),
            _ => false,
        }
    }

    /// What the call operates on, shortened for messages.
    pub fn short(&self) -> String {
        let mut s = self.line.clone();
        if let Some(eq) = s.rfind(" = ") {
            s.truncate(eq);
        }
        if s.len() > 110 {
            let mut cut = 107;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }
}

/// Parses `strace -o FILE` output of one process into calls with their ordinals.
pub fn parse(text: &str) -> Vec<Call> {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some(open) = line.find('(') else { continue };
        let name = &line[..open];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let n = counts.entry(name.to_string()).or_default();
        *n += 1;
        calls.push(Call {
            name: name.to_string(),
            ordinal: *n,
            line: line.to_string(),
        });
    }
    calls
}

/// The calls of the operation itself: between the driver's begin and end markers.
pub fn window(calls: &[Call]) -> Vec<Call> {
    let begin = calls
        .iter()
        .position(|c| c.line.contains("torture-driver: begin"));
    let end = calls
        .iter()
        .position(|c| c.line.contains("torture-driver: end"));
    match (begin, end) {
        (Some(b), Some(e)) if b < e => calls[b + 1..e].to_vec(),
        (Some(b), None) => calls[b + 1..].to_vec(),
        _ => Vec::new(),
    }
}

/// The driver command line for `op` on `file`.
pub fn driver_args(exe: &Path, op: Op, file: &Path) -> Vec<String> {
    vec![
        exe.display().to_string(),
        "driver".into(),
        "--op".into(),
        op.name().into(),
        "--file".into(),
        file.display().to_string(),
        "--hold".into(),
    ]
}

/// Traces one run of the driver (no injection unless `extra` adds one) and returns its
/// whole trace and its stdout line.
pub fn trace(
    exe: &Path,
    op: Op,
    file: &Path,
    trace_file: &Path,
    extra: &[String],
) -> Result<(Vec<Call>, Outcome), String> {
    let mut args: Vec<String> = vec![
        "-y".into(),
        "-s".into(),
        "48".into(),
        "-o".into(),
        trace_file.display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let outcome = run(&args, exe, op, file, |_| None)?;
    let text = std::fs::read_to_string(trace_file)
        .map_err(|e| format!("cannot read trace `{}`: {e}", trace_file.display()))?;
    Ok((parse(&text), outcome))
}

/// What a driver run reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `ack GENERATION`.
    Ack(u64),
    /// `err KIND`.
    Err(String),
    /// Nothing: killed, crashed or hung before reporting.
    Nothing,
}

/// How a driver run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Report,
    pub hung: bool,
    pub stderr: String,
    /// What the `while_held` callback found, while the driver was still alive.
    pub while_alive: Option<String>,
}

/// Runs the driver under `strace ARGS`. When it reports, `while_alive` runs before the
/// driver is let go (its result is kept in the outcome).
pub fn run(
    strace_args: &[String],
    exe: &Path,
    op: Op,
    file: &Path,
    while_alive: impl FnOnce(&Report) -> Option<String>,
) -> Result<Outcome, String> {
    let mut cmd = Command::new("strace");
    cmd.args(strace_args)
        .args(driver_args(exe, op, file))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run strace (is it installed?): {e}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("invariant: piped");
    let mut stderr = child.stderr.take().expect("invariant: piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let err_pump = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (report, hung) = match rx.recv_timeout(HANG) {
        Ok(line) => (parse_report(&line), false),
        Err(_) => (Report::Nothing, true),
    };
    let found = if hung {
        None
    } else {
        match report {
            Report::Nothing => None,
            _ => while_alive(&report),
        }
    };
    if hung {
        kill_group(child.id());
    }
    if let Some(mut stdin) = stdin {
        let _ = stdin.flush();
    }
    // Closing stdin lets a holding driver exit.
    let status = child.wait();
    let stderr = err_pump.join().unwrap_or_default();
    let _ = status;
    Ok(Outcome {
        report,
        hung,
        stderr,
        while_alive: found,
    })
}

fn kill_group(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

fn parse_report(line: &str) -> Report {
    let line = line.trim();
    if let Some(g) = line.strip_prefix("ack ") {
        return g.parse().map_or(Report::Nothing, Report::Ack);
    }
    if let Some(kind) = line.strip_prefix("err ") {
        return Report::Err(kind.to_string());
    }
    Report::Nothing
}

/// A scratch file path for traces, beside the test directory.
pub fn trace_path(dir: &Path, name: &str) -> PathBuf {
    let parent = dir.parent().unwrap_or(dir);
    parent.join(format!("{name}.trace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_that_change_files_are_kill_points_at_changes() {
        let calls = parse(
            "read(3</d/state.json>, \"{\"..., 10) = 10\n\
             openat(3</d>, \"journal\", O_RDWR|O_CLOEXEC) = 4</d/journal>\n\
             openat(3</d>, \".journal.tmp-1\", O_WRONLY|O_CREAT|O_EXCL, 0600) = 5</d/.journal.tmp-1>\n\
             pwrite64(4</d/journal>, \"x\", 1, 104) = 1\n\
             fdatasync(4</d/journal>) = 0\n\
             renameat(3</d>, \".journal.tmp-1\", 3</d>, \"journal\") = 0\n\
             flock(6</d/lock>, LOCK_UN) = 0\n",
        );
        let changes: Vec<&str> = calls
            .iter()
            .filter(|c| c.changes_files())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(changes, ["openat", "pwrite64", "fdatasync", "renameat"]);
        assert!(calls[2].line.contains("O_CREAT"));
    }
}
