//! Layers a and b: a `SIGKILL`, or an error, injected by `strace` at every system call
//! of one operation, one run per injection point, each followed by the checks of
//! [`crate::check`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::check::{self, Version};
use crate::driver::{self, Op};
use crate::strace::{self, Call, Report};
use crate::tally::Tally;

/// The errors of the error layer, as strace names them.
pub const ERRNOS: &[&str] = &[
    "ENOSPC", "EIO", "EDQUOT", "EROFS", "EINTR", "EMFILE", "EACCES",
];

/// The error kind statesafe must report for an OS error (before the rename).
fn expected_kind(errno: &str) -> &'static str {
    match errno {
        "ENOSPC" | "EDQUOT" => "no_space",
        "EROFS" => "read_only",
        "EACCES" | "EPERM" => "permission_denied",
        _ => "io",
    }
}

/// One injection: which call, and what.
#[derive(Debug, Clone)]
struct Point {
    op: Op,
    call: Call,
    /// `None` for a kill; otherwise the errno and whether it persists (`when=K+`).
    error: Option<(&'static str, bool)>,
}

impl Point {
    fn inject(&self) -> String {
        match self.error {
            None => format!(
                "{}:signal=SIGKILL:when={}",
                self.call.name, self.call.ordinal
            ),
            // EINTR only ever comes from a signal, and retrying it is right, so its
            // "persistent" form is a storm of ten in a row, not forever.
            Some(("EINTR", true)) => format!(
                "{}:error=EINTR:when={}..{}",
                self.call.name,
                self.call.ordinal,
                self.call.ordinal + 9
            ),
            Some((errno, persistent)) => format!(
                "{}:error={errno}:when={}{}",
                self.call.name,
                self.call.ordinal,
                if persistent { "+" } else { "" }
            ),
        }
    }

    fn describe(&self) -> String {
        let what = match self.error {
            None => "SIGKILL".to_string(),
            Some(("EINTR", true)) => "EINTR (10 in a row)".to_string(),
            Some((errno, true)) => format!("{errno} (persistent)"),
            Some((errno, false)) => format!("{errno} (once)"),
        };
        format!(
            "{} / {what} at `{}` (#{} of {})",
            self.op.name(),
            self.call.short(),
            self.call.ordinal,
            self.call.name
        )
    }
}

/// The settings of an injection layer.
pub struct Injection<'a> {
    pub exe: &'a Path,
    /// Scratch space; each worker gets a subdirectory.
    pub base: &'a Path,
    pub ops: &'a [Op],
    /// Errnos of the error layer (unused by the kill layer).
    pub errnos: &'a [&'static str],
    pub jobs: usize,
    /// Kill only before the calls that change a file (and at the acknowledgement).
    pub at_changes: bool,
}

/// Layer a: kill at every system call of each operation.
pub fn kill_layer(cfg: &Injection<'_>, tally: &Tally) -> Result<(), String> {
    let mut points = Vec::new();
    for &op in cfg.ops {
        if op == Op::JournalGroup {
            return Err("journal-group is for the error layer only".into());
        }
        for call in probe(cfg, op)?.into_iter().filter(|c| {
            c.is_crash_point()
                && (!cfg.at_changes || c.changes_files() || c.line.starts_with("writev(1"))
        }) {
            points.push(Point {
                op,
                call,
                error: None,
            });
        }
    }
    run_points(cfg, points, tally)
}

/// Layer b: every errno at every I/O system call, once and persistently.
pub fn error_layer(cfg: &Injection<'_>, tally: &Tally) -> Result<(), String> {
    let mut points = Vec::new();
    for &op in cfg.ops {
        if op == Op::JournalGroup {
            group_layer(cfg, tally)?;
            continue;
        }
        for call in probe(cfg, op)?.into_iter().filter(Call::is_io) {
            for &errno in cfg.errnos {
                for persistent in [false, true] {
                    points.push(Point {
                        op,
                        call: call.clone(),
                        error: Some((errno, persistent)),
                    });
                }
            }
        }
    }
    run_points(cfg, points, tally)
}

/// Traces one clean run of `op` and returns the calls of the operation.
fn probe(cfg: &Injection<'_>, op: Op) -> Result<Vec<Call>, String> {
    let dir = worker_dir(cfg.base, 0);
    let file = driver::prepare(&dir, op)?;
    let (calls, outcome) =
        strace::trace(cfg.exe, op, &file, &strace::trace_path(&dir, "probe"), &[])?;
    if !matches!(outcome.report, Report::Ack(_)) {
        return Err(format!(
            "the driver failed without any injection ({:?}): {}",
            outcome.report, outcome.stderr
        ));
    }
    let window = strace::window(&calls);
    if window.is_empty() {
        return Err("the probe trace has no driver markers".into());
    }
    Ok(window)
}

fn worker_dir(base: &Path, worker: usize) -> PathBuf {
    base.join(format!("w{worker}")).join("d")
}

fn run_points(cfg: &Injection<'_>, points: Vec<Point>, tally: &Tally) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    let fatal = Mutex::new(None);
    std::thread::scope(|s| {
        for worker in 0..cfg.jobs.max(1) {
            let (points, next, fatal) = (&points, &next, &fatal);
            s.spawn(move || {
                let dir = worker_dir(cfg.base, worker);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(point) = points.get(i) else { break };
                    match check_point(cfg.exe, &dir, point) {
                        Ok(problems) => tally.record(&point.describe(), problems),
                        Err(e) => {
                            *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    match fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs one injection and returns the violations found (empty: a legal state).
fn check_point(exe: &Path, dir: &Path, point: &Point) -> Result<Vec<String>, String> {
    let op = point.op;
    let file = driver::prepare(dir, op)?;
    let trace_file = strace::trace_path(dir, "run");
    let args = vec![
        "-y".to_string(),
        "-s".into(),
        "48".into(),
        "-o".into(),
        trace_file.display().to_string(),
        "-e".into(),
        format!("inject={}", point.inject()),
    ];
    let check_dir = dir.to_path_buf();
    let outcome = strace::run(&args, exe, op, &file, |_| check::lock_held(&check_dir))?;
    let mut problems = Vec::new();
    let trace = std::fs::read_to_string(&trace_file).unwrap_or_default();
    if let Some(mismatch) = replay_mismatch(&trace, point) {
        // The harness lost determinism: the injection hit another call than probed.
        return Err(format!("{}: {mismatch}", point.describe()));
    }
    if outcome.hung {
        problems.push("the operation hung (no report within 15 s)".into());
    }
    if let Some(p) = &outcome.while_alive {
        problems.push(format!("after the call returned, in the live process: {p}"));
    }
    let version = match check::version(&file, op) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    match (&point.error, &outcome.report) {
        (_, Report::Ack(_)) if version == Some(Version::Old) => {
            problems.push("acknowledged, but the old version is in place".into());
        }
        (Some((errno, _)), Report::Ack(_))
            if must_fail(&point.call, errno, op) && !committed_record_dir_sync(&trace, point) =>
        {
            problems.push(format!("the {errno} from `{}` was swallowed: the operation was acknowledged", point.call.name));
        }
        (Some((errno, _)), Report::Err(kind)) => match version {
            // A read that cannot take the lock at once (no write access, a read-only
            // filesystem, a failure while checking the lock file, which the lock
            // treats as "not the lock file any more, try again") repairs nothing and
            // serves what it can prove (issue 11): no error, nothing written.
            Some(Version::Old) if op == Op::Recover && kind == "not_repaired" => {}
            // A journal record whose flush failed may or may not survive a power loss
            // (it is zeroed again, but that cannot be flushed either): outcome unknown,
            // though a live reader sees the old version.
            Some(Version::Old)
                if kind == "outcome_unknown" && point.call.line.contains(JOURNAL_FD) => {}
            Some(Version::New) if kind != "outcome_unknown" => problems.push(format!(
                "the new version is in place but the error reported is `{kind}`, not `outcome_unknown`"
            )),
            Some(Version::Old) if kind != expected_kind(errno) => problems.push(format!(
                "reported `{kind}` for {errno}, expected `{}`",
                expected_kind(errno)
            )),
            _ => {}
        },
        (Some(_), Report::Nothing) if !outcome.hung => problems.push(format!(
            "the driver died without reporting: {}",
            outcome.stderr.trim()
        )),
        _ => {}
    }
    if point.error.is_some() && !matches!(outcome.report, Report::Ack(_)) {
        let left = check::temps(dir);
        let unlink_failed = point.call.name == "unlinkat" || point.call.name == "unlink";
        if !left.is_empty() && !unlink_failed {
            problems.push(format!("temporary files left after the error: {left:?}"));
        }
    }
    if let Some(p) = check::lock_held(dir) {
        problems.push(format!("after the process ended: {p}"));
    }
    if problems.is_empty()
        && op == Op::Recover
        && let Err(e) = check::recovery_settles(dir)
    {
        problems.push(e);
    }
    if problems.is_empty()
        && let Err(e) = check::recover(dir)
    {
        problems.push(e);
    }
    Ok(problems)
}

/// How a trace line names the journal's descriptor (`strace -y`).
const JOURNAL_FD: &str = ".statesafe/journal>";

/// Calls whose failure must fail the operation: the data and its durability.
fn must_fail(call: &Call, errno: &str, op: Op) -> bool {
    let temp = call.line.contains("statesafe-tmp-");
    // The sidecar's `committed` record (written once per sidecar, after the commit's
    // rename and directory sync): bookkeeping, whose failure is reported as such
    // (`bookkeeping_failed`), never the commit's (docs/design.md, "A deleted state
    // file"). Its folder's sync: [`committed_record_dir_sync`].
    if call.line.contains(".committed.tmp-") {
        return false;
    }
    // Journal mode: the append and its flush are the commit. Starting the new journal
    // after a compaction is not: the snapshot is durable by then, and a new journal
    // that is lost leaves the old one, which no longer follows the snapshot and is
    // skipped (docs/design.md, "Journal mode").
    if call.line.contains(".journal.tmp-")
        || (op == Op::JournalCompact && call.name == "fsync" && call.line.contains(".statesafe>"))
    {
        return false;
    }
    if call.line.contains(JOURNAL_FD) {
        return matches!(call.name.as_str(), "fdatasync" | "pwrite64" | "fallocate")
            && errno != "EINTR";
    }
    match call.name.as_str() {
        "fsync" | "fdatasync" | "rename" | "renameat" | "renameat2" => true,
        "write" | "pwrite64" | "writev" => temp && errno != "EINTR",
        // The temp file's exclusive create (history and backup files are bookkeeping
        // after the rename: their failures are logged, not returned, by design).
        "openat" | "open" => temp && call.line.contains("O_EXCL"),
        _ => false,
    }
}

/// Whether the injected call is the sync of the sidecar's folder right after the
/// `committed` record's rename (the nearest rename before it in the run's trace), which
/// is that record's bookkeeping, not the commit's.
fn committed_record_dir_sync(trace: &str, point: &Point) -> bool {
    if point.call.name != "fsync" || !point.call.line.contains(".statesafe>)") {
        return false;
    }
    let calls = strace::parse(trace);
    let Some(at) = calls
        .iter()
        .position(|c| c.name == point.call.name && c.ordinal == point.call.ordinal)
    else {
        return false;
    };
    calls[..at]
        .iter()
        .rev()
        .find(|c| c.name.starts_with("rename"))
        .is_some_and(|c| c.line.contains(".committed.tmp-"))
}

/// Checks that the injected call is the one the probe saw (same name, same target).
fn replay_mismatch(trace: &str, point: &Point) -> Option<String> {
    let calls = strace::parse(trace);
    let hit = calls
        .iter()
        .find(|c| c.name == point.call.name && c.ordinal == point.call.ordinal)?;
    let (a, b) = (normalize(&hit.line), normalize(&point.call.line));
    (a != b).then(|| format!("replay mismatch: probed `{b}`, injected `{a}`"))
}

/// The call's name and first argument, with every token holding a digit (pids,
/// random names, descriptor numbers, worker directories) blanked out.
fn normalize(line: &str) -> String {
    let head = line.split([',', ')']).next().unwrap_or(line);
    let mut out = String::new();
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in head.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// The calls of the journal that [`Op::JournalGroup`] fails.
const GROUP_CALLS: &[&str] = &["pwrite64", "fdatasync"];

/// The error layer for [`Op::JournalGroup`]: each errno at each call of
/// [`GROUP_CALLS`] on the journal (selected by path, `strace -P`, in every thread:
/// `strace` counts injections per thread, and which thread leads a batch varies), at
/// each thread's first such call and at every one.
fn group_layer(cfg: &Injection<'_>, tally: &Tally) -> Result<(), String> {
    let dir = worker_dir(cfg.base, 0);
    for &errno in cfg.errnos {
        for call in GROUP_CALLS {
            for persistent in [false, true] {
                let when = match (errno, persistent) {
                    (_, false) => "1".to_string(),
                    ("EINTR", true) => "1..10".to_string(),
                    (_, true) => "1+".to_string(),
                };
                let what = format!(
                    "{} / {errno}{} at every thread's `{call}` of the journal",
                    Op::JournalGroup.name(),
                    if persistent {
                        " (persistent)"
                    } else {
                        " (first)"
                    }
                );
                let problems = check_group(
                    cfg.exe,
                    &dir,
                    &format!("{call}:error={errno}:when={when}"),
                    errno,
                )?;
                tally.record(&what, problems);
            }
        }
    }
    Ok(())
}

/// Runs [`Op::JournalGroup`] with `inject` on the journal's calls and returns the
/// violations: a commit applied twice, an acknowledged one missing, one reported
/// failed (an error of `errno`'s kind, or the store refusing writes) that is in
/// place, an unexpected error kind, and the checks every operation gets.
fn check_group(exe: &Path, dir: &Path, inject: &str, errno: &str) -> Result<Vec<String>, String> {
    let op = Op::JournalGroup;
    let file = driver::prepare(dir, op)?;
    let results = driver::group_results(&file);
    let _ = std::fs::remove_file(&results);
    let journal = dir.join(".state.json.statesafe").join("journal");
    let args = vec![
        "-f".to_string(),
        "-qq".into(),
        "-o".into(),
        "/dev/null".into(),
        "-P".into(),
        journal.display().to_string(),
        "-e".into(),
        format!("inject={inject}"),
    ];
    let check_dir = dir.to_path_buf();
    let outcome = strace::run(&args, exe, op, &file, |_| check::lock_held(&check_dir))?;
    let mut problems = Vec::new();
    if outcome.hung {
        problems.push("the operation hung (no report within 15 s)".into());
    }
    if let Some(p) = &outcome.while_alive {
        problems.push(format!(
            "after the calls returned, in the live process: {p}"
        ));
    }
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let outcomes: Vec<(usize, String)> = text
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            Some((n.parse().ok()?, rest.to_string()))
        })
        .collect();
    if outcomes.len() != driver::GROUP {
        problems.push(format!(
            "{} of {} threads reported: {}",
            outcomes.len(),
            driver::GROUP,
            outcome.stderr.trim()
        ));
    }
    match group_values(&file) {
        Ok(values) => {
            for n in 0..driver::GROUP {
                let times = values.iter().filter(|v| **v == n as u64).count();
                if times > 1 {
                    problems.push(format!("thread {n}'s commit was applied {times} times"));
                }
                let Some((_, said)) = outcomes.iter().find(|(m, _)| *m == n) else {
                    continue;
                };
                let kind = said.strip_prefix("err ");
                match kind {
                    None if times == 0 => {
                        problems.push(format!(
                            "thread {n} was told `{said}`, but its commit is not in place"
                        ));
                    }
                    Some(k) if (k == expected_kind(errno) || k == "poisoned") && times > 0 => {
                        problems.push(format!(
                            "thread {n} was told `{k}`, but its commit is in place"
                        ));
                    }
                    Some(k)
                        if k != expected_kind(errno)
                            && k != "poisoned"
                            && k != "outcome_unknown" =>
                    {
                        problems.push(format!("thread {n} was told `{k}` for {errno}"));
                    }
                    _ => {}
                }
            }
        }
        Err(e) => problems.push(e),
    }
    if !check::temps(dir).is_empty() {
        problems.push(format!("temporary files left: {:?}", check::temps(dir)));
    }
    if let Some(p) = check::lock_held(dir) {
        problems.push(format!("after the process ended: {p}"));
    }
    if problems.is_empty()
        && let Err(e) = check::recover(dir)
    {
        problems.push(e);
    }
    Ok(problems)
}

/// The numbers in `/g` of the state, read through the library by a fresh store (a load
/// that found damage and repaired it is a violation).
fn group_values(file: &Path) -> Result<Vec<u64>, String> {
    let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::clone(&repaired);
    let state = statesafe::Store::<serde_json::Value>::options()
        .on_event(move |e| {
            if matches!(e, statesafe::Event::Recovered { .. }) {
                seen.store(true, Ordering::SeqCst);
            }
        })
        .open(file)
        .and_then(|s| s.get())
        .map_err(|e| format!("the library cannot load the state file: {e}"))?;
    if repaired.load(Ordering::SeqCst) {
        return Err("the library found damage and repaired it".into());
    }
    state["g"]
        .as_array()
        .and_then(|g| g.iter().map(serde_json::Value::as_u64).collect())
        .ok_or_else(|| format!("`/g` is not an array of numbers: {}", state["g"]))
}
