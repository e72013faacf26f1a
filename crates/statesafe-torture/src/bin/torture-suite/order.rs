//! The system-call order check, in the style of ALICE (OSDI'14): trace real commits
//! with `strace -y` and check the order of the calls that make them durable.
//!
//! Kills and errors on a live kernel cannot see a missing `fsync` (the page cache
//! survives a killed process), so this is the layer that catches the protocol's
//! durability steps being skipped. Rules, for every commit in every trace:
//!
//! 1. the temporary file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`;
//! 2. the rename of a temporary file over the state file is preceded by a successful
//!    `fsync`/`fdatasync` of that temporary file after its last write;
//! 3. it is followed by a successful `fsync` of the directory before the operation is
//!    acknowledged;
//! 4. the writer holds the `flock` on the lock file at the rename;
//! 5. no temporary name is ever used twice (across commits and processes).
//!
//! An `fsync` that strace made a no-op (`retval=0`, shown as `(INJECTED)`) does not
//! count: `--eatmydata` runs the same commits with every `fsync` faked that way, as
//! libeatmydata would, and the check must then fail.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::driver::{self, Op};
use crate::strace::{self, Call, Report};
use crate::tally::Tally;

/// Runs the commits, traces them, and checks every rename.
pub fn layer(exe: &Path, base: &Path, eatmydata: bool, tally: &Tally) -> Result<(), String> {
    let mut extra = Vec::new();
    if eatmydata {
        extra.extend([
            "-e".to_string(),
            "inject=fsync,fdatasync,syncfs,sync:retval=0".into(),
        ]);
    }
    let mut names = HashSet::new();
    let runs = [
        Op::Create,
        Op::Replace,
        Op::Update,
        Op::UpdateTwice,
        Op::UpdateTwice,
    ];
    let dir = base.join("order").join("d");
    let mut prepared = false;
    for (i, op) in runs.into_iter().enumerate() {
        // The update runs share one directory, so their temp names must differ too.
        let file = if op == Op::Create || op == Op::Replace || !prepared {
            prepared = op != Op::Create;
            driver::prepare(
                &dir,
                if op == Op::Create {
                    Op::Create
                } else {
                    Op::Update
                },
            )?
        } else {
            dir.join("state.json")
        };
        let trace_file = strace::trace_path(&dir, &format!("order-{i}"));
        let (calls, outcome) = strace::trace(exe, op, &file, &trace_file, &extra)?;
        if !matches!(outcome.report, Report::Ack(_)) {
            return Err(format!(
                "{} failed without any fault ({:?}): {}",
                op.name(),
                outcome.report,
                outcome.stderr.trim()
            ));
        }
        let commits = check_trace(&calls, &mut names);
        if commits.is_empty() {
            return Err(format!("no commit found in the trace of {}", op.name()));
        }
        for (n, problems) in commits.into_iter().enumerate() {
            tally.record(&format!("{} commit {}", op.name(), n + 1), problems);
        }
    }
    Ok(())
}

/// The path a `-y` descriptor argument names: `5</dir/file>` → `/dir/file`.
fn fd_path(arg: &str) -> Option<&str> {
    let start = arg.find('<')? + 1;
    let end = start + arg[start..].find('>')?;
    Some(&arg[start..end])
}

/// The arguments between the outer parentheses, split at top-level commas.
fn args(line: &str) -> Vec<&str> {
    let Some(open) = line.find('(') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, open + 1);
    let bytes = line.as_bytes();
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'(' | b'{' | b'[' | b'<' if !quoted => depth += 1,
            b'>' | b']' | b'}' if !quoted => depth -= 1,
            b')' if !quoted && depth == 0 => {
                out.push(line[start..i].trim());
                return out;
            }
            b')' if !quoted => depth -= 1,
            b',' if !quoted && depth == 0 => {
                out.push(line[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn succeeded(call: &Call) -> bool {
    call.line.contains(") = 0") && !call.line.contains("(INJECTED)")
}

fn is_temp(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with(".state.json.statesafe-tmp-"))
}

/// Checks one trace; returns the problems of each commit (rename over the state file).
fn check_trace(calls: &[Call], names: &mut HashSet<String>) -> Vec<Vec<String>> {
    let mut commits = Vec::new();
    // Per temp name: index of its last write, index of its last good sync.
    let mut last_write: HashMap<String, usize> = HashMap::new();
    let mut last_sync: HashMap<String, usize> = HashMap::new();
    let mut lock_held = false;
    let mut pending: Option<(usize, Vec<String>)> = None;
    let mut dir_path: Option<String> = None;
    for (i, call) in calls.iter().enumerate() {
        let a = args(&call.line);
        match call.name.as_str() {
            "openat" | "open" => {
                let name_arg = if call.name == "openat" {
                    a.get(1)
                } else {
                    a.first()
                };
                let flags = if call.name == "openat" {
                    a.get(2)
                } else {
                    a.get(1)
                };
                if let (Some(name), Some(flags)) = (name_arg, flags)
                    && is_temp(name.trim_matches('"'))
                {
                    let name = name
                        .trim_matches('"')
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let mut problems = Vec::new();
                    if !(flags.contains("O_CREAT")
                        && flags.contains("O_EXCL")
                        && flags.contains("O_NOFOLLOW"))
                    {
                        problems.push(format!("temporary file `{name}` opened with {flags}, not O_CREAT|O_EXCL|O_NOFOLLOW"));
                    }
                    if !names.insert(name.clone()) {
                        problems.push(format!("temporary name `{name}` used twice"));
                    }
                    if !problems.is_empty() {
                        commits.push(problems);
                    }
                }
            }
            "write" | "pwrite64" | "writev" | "pwritev" | "pwritev2" | "ftruncate"
            | "fallocate" => {
                if let Some(p) = a.first().and_then(|f| fd_path(f))
                    && is_temp(p)
                {
                    last_write.insert(base(p), i);
                }
            }
            "fsync" | "fdatasync" => {
                let Some(p) = a.first().and_then(|f| fd_path(f)) else {
                    continue;
                };
                if !succeeded(call) {
                    continue;
                }
                if is_temp(p) {
                    last_sync.insert(base(p), i);
                } else if dir_path.as_deref() == Some(p)
                    && let Some((_, problems)) = pending.take()
                {
                    commits.push(problems);
                }
            }
            "flock" => {
                if let Some(p) = a.first().and_then(|f| fd_path(f))
                    && p.ends_with("/lock")
                    && succeeded(call)
                {
                    let op = a.get(1).copied().unwrap_or("");
                    if op.contains("LOCK_EX") {
                        lock_held = true;
                    } else if op.contains("LOCK_UN") {
                        lock_held = false;
                    }
                }
            }
            "rename" | "renameat" | "renameat2" => {
                let strings: Vec<&str> = a
                    .iter()
                    .filter(|s| s.starts_with('"'))
                    .map(|s| s.trim_matches('"'))
                    .collect();
                let (Some(from), Some(to)) = (strings.first(), strings.get(1)) else {
                    continue;
                };
                if !is_temp(from) || !to.ends_with("state.json") || !succeeded(call) {
                    continue;
                }
                let from = from.rsplit('/').next().unwrap_or(from).to_string();
                let mut problems = Vec::new();
                match (last_write.get(&from), last_sync.get(&from)) {
                    (Some(w), Some(s)) if s > w => {}
                    (None, _) => {
                        problems.push(format!("`{from}` renamed without ever being written"))
                    }
                    _ => problems.push(format!(
                        "`{from}` renamed over the state file without an fsync after its last write"
                    )),
                }
                if !lock_held {
                    problems.push("renamed over the state file without holding the lock".into());
                }
                if let Some((_, earlier)) = pending.take() {
                    let mut earlier = earlier;
                    earlier.push("no directory fsync before the next commit".into());
                    commits.push(earlier);
                }
                dir_path = a.first().and_then(|f| fd_path(f)).map(str::to_string);
                pending = Some((i, problems));
            }
            _ => {}
        }
        let acked = (call.name == "writev" || call.name == "write")
            && call.line.contains("(1<")
            && call.line.contains("\"ack ");
        if acked && let Some((_, mut problems)) = pending.take() {
            problems.push("acknowledged without an fsync of the directory after the rename".into());
            commits.push(problems);
        }
    }
    if let Some((_, mut problems)) = pending.take() {
        problems.push("no fsync of the directory after the rename".into());
        commits.push(problems);
    }
    commits
}

fn base(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "/d/.state.json.statesafe-tmp-1-ab";

    fn trace(lines: &[&str]) -> Vec<Call> {
        strace::parse(&lines.join("\n"))
    }

    fn good() -> Vec<String> {
        vec![
            "flock(4</d/.state.json.statesafe/lock>, LOCK_EX|LOCK_NB) = 0".into(),
            format!(
                "openat(3</d>, \".state.json.statesafe-tmp-1-ab\", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, 0600) = 5<{T}>"
            ),
            format!("write(5<{T}>, \"{{}}\", 2) = 2"),
            format!("fsync(5<{T}>) = 0"),
            "renameat(3</d>, \".state.json.statesafe-tmp-1-ab\", 3</d>, \"state.json\") = 0".into(),
            "fsync(3</d>) = 0".into(),
            "flock(4</d/.state.json.statesafe/lock>, LOCK_UN) = 0".into(),
            "writev(1<pipe:[7]>, [{iov_base=\"ack 2\\n\", iov_len=6}], 1) = 6".into(),
        ]
    }

    fn check(lines: &[String]) -> Vec<Vec<String>> {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        check_trace(&trace(&refs), &mut HashSet::new())
    }

    #[test]
    fn a_correct_commit_passes() {
        assert_eq!(check(&good()), vec![Vec::<String>::new()]);
    }

    #[test]
    fn each_missing_step_is_a_violation() {
        let without = |needle: &str| -> Vec<String> {
            good()
                .into_iter()
                .filter(|l| !l.starts_with(needle))
                .collect()
        };
        let problems = check(&without(&format!("fsync(5<{T}>)")))
            .concat()
            .join("; ");
        assert!(
            problems.contains("without an fsync after its last write"),
            "{problems}"
        );
        let problems = check(&without("fsync(3</d>)")).concat().join("; ");
        assert!(
            problems.contains("acknowledged without an fsync of the directory"),
            "{problems}"
        );
        let problems = check(&without("flock(4</d/.state.json.statesafe/lock>, LOCK_EX"))
            .concat()
            .join("; ");
        assert!(problems.contains("without holding the lock"), "{problems}");
    }

    #[test]
    fn a_faked_fsync_does_not_count() {
        let lines: Vec<String> = good()
            .into_iter()
            .map(|l| {
                if l.starts_with("fsync(") {
                    l.replace(" = 0", " = 0 (INJECTED)")
                } else {
                    l
                }
            })
            .collect();
        let problems = check(&lines).concat().join("; ");
        assert!(
            problems.contains("without an fsync after its last write"),
            "{problems}"
        );
        assert!(
            problems.contains("without an fsync of the directory"),
            "{problems}"
        );
    }

    #[test]
    fn a_reused_temp_name_is_a_violation() {
        let mut names = HashSet::new();
        let refs: Vec<String> = good();
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        assert!(check_trace(&trace(&refs), &mut names).concat().is_empty());
        let again = check_trace(&trace(&refs), &mut names).concat().join("; ");
        assert!(again.contains("used twice"), "{again}");
    }
}
