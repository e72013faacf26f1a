//! Running the `statesafe` CLI under test as a given user, with a deadline: the
//! adversarial layer and the sidecar-removal stress attack the binary from outside,
//! as a shell script or a cron job would.
//!
//! Every command runs in its own process group, so a command that outlives its
//! deadline is killed together with anything it started (`statesafe lock -- sleep`).
//! Its stdout and stderr go to files, so a chatty or stuck command never blocks on a
//! full pipe.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Who runs a command: root, or an unprivileged uid (its gid is the same number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    Root,
    /// The attacker.
    A,
    /// The victim, an unprivileged user.
    B,
    /// A user with read-only access to the victim's file (`nobody`-like).
    C,
}

impl User {
    pub fn uid(self) -> u32 {
        match self {
            User::Root => 0,
            User::A => 64001,
            User::B => 64002,
            User::C => 64003,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            User::Root => "root",
            User::A => "A",
            User::B => "B",
            User::C => "C",
        }
    }
}

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    /// The command line, for messages.
    pub shown: String,
    /// The exit code; `None` when it was killed by a signal (ours at the deadline, or
    /// another).
    pub code: Option<i32>,
    /// Whether it was still running at the deadline (then it was killed).
    pub hung: bool,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The first `error:` line of stderr, or its first line.
    pub fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .or_else(|| self.stderr.lines().next())
            .unwrap_or("(no message)")
    }

    /// Whether a failure says what went wrong and what to do (`error:` and `hint:`).
    pub fn explained(&self) -> bool {
        self.stderr.lines().any(|l| l.starts_with("error:"))
            && self.stderr.lines().any(|l| l.starts_with("hint:"))
    }

    /// One line for a report: how it ended and its error.
    pub fn summary(&self) -> String {
        match (self.hung, self.code) {
            (true, _) => format!("`{}` did not finish and was killed", self.shown),
            (false, Some(0)) => format!("`{}` exited 0", self.shown),
            (false, Some(code)) => format!("exit {code}: {}", self.error_line()),
            (false, None) => format!("`{}` was killed by a signal", self.shown),
        }
    }
}

/// The `statesafe` binary under test, and where its commands' output goes.
#[derive(Debug)]
pub struct Cli {
    pub bin: PathBuf,
    logs: PathBuf,
    runs: AtomicU64,
}

/// A command started in the background.
pub struct Running {
    child: Child,
    shown: String,
    err: PathBuf,
}

impl Cli {
    /// `logs` must exist; each command's output lands there in two numbered files.
    pub fn new(bin: PathBuf, logs: PathBuf) -> Cli {
        Cli {
            bin,
            logs,
            runs: AtomicU64::new(0),
        }
    }

    /// Starts `statesafe ARGS` as `user` in `cwd`, with `HOME` set to `home`.
    pub fn start(
        &self,
        user: User,
        cwd: &Path,
        home: &Path,
        args: &[&str],
    ) -> Result<Running, String> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let out = self.logs.join(format!("{n}.out"));
        let err = self.logs.join(format!("{n}.err"));
        let open =
            |p: &Path| File::create(p).map_err(|e| format!("cannot create `{}`: {e}", p.display()));
        let mut cmd = if user == User::Root {
            Command::new(&self.bin)
        } else {
            let id = user.uid().to_string();
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
                .arg(&self.bin);
            c
        };
        cmd.args(args)
            .current_dir(cwd)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", home)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(open(&out)?)
            .stderr(open(&err)?)
            .process_group(0);
        let shown = format!("{} statesafe {}", user.name(), shown_args(args));
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run `{shown}` ({}): {e}", self.bin.display()))?;
        Ok(Running { child, shown, err })
    }

    /// Runs `statesafe ARGS` as `user` and waits at most `deadline`.
    pub fn run(
        &self,
        user: User,
        cwd: &Path,
        home: &Path,
        args: &[&str],
        deadline: Duration,
    ) -> Result<Outcome, String> {
        self.start(user, cwd, home, args)?.finish(deadline)
    }
}

/// The arguments as a reader of a report needs them: quoted where they have spaces,
/// and a long script shown as `'…'`.
fn shown_args(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 40 || a.contains('\n') {
                "'…'".to_string()
            } else if a.contains([' ', '\'', '"']) || a.is_empty() {
                format!("'{a}'")
            } else {
                (*a).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Running {
    /// Whether it has exited by now.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits at most `deadline` for it to exit; then kills its process group.
    pub fn finish(mut self, deadline: Duration) -> Result<Outcome, String> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut hung = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() >= deadline => {
                    hung = true;
                    self.kill();
                    break self
                        .child
                        .wait()
                        .map_err(|e| format!("cannot wait for `{}`: {e}", self.shown))?;
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("cannot wait for `{}`: {e}", self.shown)),
            }
        };
        // Whatever it started in its group (the CMD of `lock` or `exec`) goes too.
        self.kill();
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Ok(Outcome {
            shown: self.shown,
            code: if status.signal().is_some() {
                None
            } else {
                status.code()
            },
            hung,
            stderr: read(&self.err),
        })
    }

    fn kill(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}
