//! The test directory, running the binary, and snapshot normalisation.

use std::path::{Path, PathBuf};
use std::process::Output;

/// A fresh directory to run `statesafe` in. All test directories come from here:
/// set `STATESAFE_TEST_DIR` to run the suite on another filesystem (tmpfs, a loop mount).
pub struct Env {
    dir: tempfile::TempDir,
}

/// The outcome of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Env {
    pub fn new() -> Env {
        let mut builder = tempfile::Builder::new();
        builder.prefix("statesafe-cli-test-");
        let dir = match std::env::var_os("STATESAFE_TEST_DIR") {
            Some(base) => builder.tempdir_in(base),
            None => builder.tempdir(),
        }
        .expect("create test directory");
        Env { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), content).expect("write test file");
    }

    /// Creates a state file through `statesafe write`, as a statesafe user would
    /// (a file written by hand is reported as an external change by writers).
    pub fn state(&self, name: &str, content: &str) {
        let run = self.run_stdin(&["write", name, "--durability", "none"], content);
        assert_eq!(run.code, 0, "{}", run.snapshot());
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read test file")
    }

    pub fn read_string(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).expect("utf-8")
    }

    /// Writes an executable shell script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// The binary, in this directory, with a clean environment of our own variables.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(bin());
        cmd.current_dir(self.dir())
            .env_remove("STATESAFE_LOCK_TIMEOUT")
            .env_remove("STATESAFE_EVAL_TIMEOUT")
            .env_remove("VISUAL")
            .env_remove("EDITOR")
            .env_remove("NO_COLOR")
            .env("TMPDIR", self.dir());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().expect("run statesafe"))
    }

    /// Runs `args` in the subdirectory `dir` of this directory.
    pub fn run_in(&self, dir: &str, args: &[&str]) -> Run {
        Run::from(
            self.cmd()
                .current_dir(self.path(dir))
                .args(args)
                .output()
                .expect("run statesafe"),
        )
    }

    /// Runs `args` in this directory as user and group `id` (no other groups), through
    /// `setpriv`: see [`can_run_as_another_user`].
    pub fn run_as(&self, id: u32, args: &[&str]) -> Run {
        Run::from(
            std::process::Command::new("setpriv")
                .args([
                    &format!("--reuid={id}"),
                    &format!("--regid={id}"),
                    "--clear-groups",
                    "--",
                ])
                .arg(bin())
                .args(args)
                .current_dir(self.dir())
                .output()
                .expect("run statesafe through setpriv"),
        )
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        Run::from(
            self.cmd()
                .args(args)
                .write_stdin(stdin)
                .output()
                .expect("run statesafe"),
        )
    }

    /// Runs `args` and asserts it failed without touching `file`.
    pub fn run_unchanged(&self, file: &str, args: &[&str]) -> Run {
        let before = std::fs::read(self.path(file)).ok();
        let run = self.run(args);
        assert_ne!(run.code, 0, "expected a failure: {}", run.snapshot());
        assert_eq!(
            std::fs::read(self.path(file)).ok(),
            before,
            "`{file}` changed"
        );
        run
    }
}

/// Says loudly that `test` could not run here, and why: on stdout and stderr (shown
/// when the test runs alone) and in the closing summary of `scripts/test` (the file
/// `STATESAFE_SUMMARY` names), which nextest's capture of passing tests would hide.
pub fn skipped(test: &str, why: &str) {
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    if let Some(summary) = std::env::var_os("STATESAFE_SUMMARY") {
        use std::io::Write;
        let line = format!("SKIPPED statesafe-cli test {test}: {why}\n");
        // One append of one short line: lines of parallel tests never interleave.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&summary)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .expect("append to the STATESAFE_SUMMARY file");
    }
}

/// Whether `test` can run the binary as another user ([`Env::run_as`]: root, and
/// `setpriv`); says so loudly ([`skipped`]) when not.
pub fn can_run_as_another_user(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        skipped(test, "needs root to run the binary as another user");
        return false;
    }
    match std::process::Command::new("setpriv")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => true,
        _ => {
            skipped(test, "setpriv (util-linux) is not installed");
            false
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_statesafe")
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Exit code, stdout and stderr as one text, for snapshots.
    pub fn snapshot(&self) -> String {
        format!(
            "exit: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            self.code, self.stdout, self.stderr
        )
        .replace(bin(), "statesafe")
    }

    /// Asserts that the run of `args` exited with `code` and that its stderr contains
    /// `text`.
    pub fn assert_failed(&self, args: &[&str], code: i32, text: &str) {
        assert_eq!(self.code, code, "{args:?}: {}", self.snapshot());
        assert!(self.stderr.contains(text), "{args:?}: {}", self.snapshot());
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).expect("stdout is JSON")
    }
}

/// Filters that make snapshots independent of the machine and the run.
pub fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"/[^\s`']*/statesafe-cli-test-[A-Za-z0-9]+", "[DIR]"),
        (
            r"statesafe-edit-(kept-)?[A-Za-z0-9]+\.json",
            "statesafe-edit-${1}[RANDOM].json",
        ),
        (r"pid \d+ [^\s@]+@\S+", "pid [PID] [USER]@[HOST]"),
        (r"pid \d+", "pid [PID]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r#""(pid|host|user)":("[^"]*"|\d+)"#, r#""$1":"[$1]""#),
        (r"process \d+", "process [PID]"),
        (r"on host \S+ as user \S+", "on host [HOST] as user [USER]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
        (
            r"timed out after [^\s]+( [^\s]+)*? waiting",
            "timed out after [DURATION] waiting",
        ),
        (r"statesafe \d+\.\d+\.\d+", "statesafe [VERSION]"),
        // A journal's offsets: its records hold the writer's pid and command line.
        (r"byte \d+", "byte [OFFSET]"),
    ]
}

/// Snapshot of a [`Run`], normalised.
#[macro_export]
macro_rules! snap {
    ($name:expr, $run:expr) => {
        insta::with_settings!({filters => $crate::common::filters(), prepend_module_to_snapshot => true, omit_expression => true}, {
            insta::assert_snapshot!($name, $run.snapshot());
        })
    };
}
