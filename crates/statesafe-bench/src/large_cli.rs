//! Section 6: large documents through the CLI (issue #12, item 7). Wall time and
//! peak resident memory of whole `statesafe` processes on compact documents of
//! 1 MiB, 16 MiB and (with `--large`) 85 MiB, beside the `jq` pipelines that do the
//! same. The peak is the command's `ru_maxrss` as `wait4(2)` reports it to its
//! parent (as `/usr/bin/time` does), so nothing inside the measured process is
//! involved; for `sh -c` pipelines it covers the shell and what it waited for. That
//! parent is a small process of its own (`child rusage`): at `exec` the kernel
//! counts the peak of the image being replaced, so a command forked straight from
//! this process (which generated the documents) would be charged with its memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;
use crate::doc::{self, Doc};
use crate::stats::median;

/// One command at one size.
#[derive(Debug, Clone)]
pub struct Row {
    /// Short label, stable for the targets.
    pub label: &'static str,
    /// The command as shown in the report.
    pub shown: String,
    /// Wall time of each run (s).
    pub secs: Vec<f64>,
    /// Peak resident size of each run (bytes).
    pub peaks: Vec<f64>,
}

impl Row {
    /// Median wall time (s).
    pub fn secs(&self) -> f64 {
        median(&self.secs)
    }

    /// Median peak resident size (bytes).
    pub fn peak(&self) -> f64 {
        median(&self.peaks)
    }
}

/// All commands at one size.
#[derive(Debug, Clone)]
pub struct SizeRows {
    /// The asked size.
    pub size: usize,
    /// The document's size in bytes (compact).
    pub bytes: usize,
    /// One row per command.
    pub rows: Vec<Row>,
}

impl SizeRows {
    /// The row labelled `label`.
    pub fn row(&self, label: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.label == label)
    }
}

/// The section's outcome.
#[derive(Debug, Clone)]
pub enum LargeResult {
    /// Figures.
    Ran {
        /// The `statesafe` binary measured.
        bin: PathBuf,
        /// Runs per command.
        runs: usize,
        /// Peak resident size of `statesafe get` on a 1 KiB file: what the process
        /// holds whatever the document.
        baseline: f64,
        /// The same for `jq .n` on that file (0 without jq).
        jq_baseline: f64,
        /// Whether `jq` was there to compare with.
        jq: bool,
        /// One entry per size.
        sizes: Vec<SizeRows>,
    },
    /// Not measured, with the reason.
    Skipped(String),
}

/// The labels of the rows.
pub const UPDATE: &str = "statesafe update";
/// `get FILE POINTER`.
pub const GET_POINTER: &str = "statesafe get pointer";
/// `get FILE`.
pub const GET_WHOLE: &str = "statesafe get";
/// `diff FILE FROM`.
pub const DIFF: &str = "statesafe diff";
/// `jq` update pipeline.
pub const JQ_UPDATE: &str = "jq update";
/// `jq` read of one value.
pub const JQ_GET: &str = "jq get";

/// Runs `cmd` to completion under `child rusage`; returns its wall time (s) and
/// peak resident size (bytes). Its stdout is discarded; its stderr is kept for the
/// error message.
fn measure(cmd: Command, stderr_file: &Path) -> Result<(f64, f64)> {
    let err = std::fs::File::create(stderr_file)?;
    let out = Command::new(std::env::current_exe()?)
        .args(["child", "rusage", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stderr(err)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let failed = |why: String| -> crate::BoxError {
        format!(
            "{cmd:?} {why}: {}",
            std::fs::read_to_string(stderr_file)
                .unwrap_or_default()
                .trim()
        )
        .into()
    };
    match (out.status.success(), fields.as_slice()) {
        (true, ["rusage", "0", maxrss, secs]) => {
            Ok((secs.parse()?, maxrss.parse::<f64>()? * 1024.0))
        }
        (true, ["rusage", status, ..]) => Err(failed(format!("failed (wait status {status})"))),
        _ => Err(failed(format!("could not be measured ({})", out.status))),
    }
}

/// Waits for the child `pid` with `wait4(2)`: its raw wait status and its peak
/// resident size in KiB (`ru_maxrss`). std's `Child::wait` gives no resource usage,
/// and rustix has no `wait4`.
#[allow(unsafe_code)]
pub fn wait4(pid: u32) -> Result<(i32, i64)> {
    let pid = libc::pid_t::try_from(pid)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage.ru_maxrss));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
}

fn statesafe(bin: &Path, args: &[&str], file: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(args[0]).arg(file).args(&args[1..]);
    cmd
}

fn shell(script: String) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Measures every command `runs` times at each of `sizes`, with the CLI at `bin`.
pub fn run(dir: &Path, bin: &Path, sizes: &[usize], runs: usize) -> Result<LargeResult> {
    let jq = Command::new("jq")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let sub = dir.join("large-cli");
    std::fs::create_dir_all(&sub)?;
    let err = sub.join("stderr");
    // What a `statesafe` process holds whatever the document.
    let tiny = sub.join("tiny.json");
    std::fs::write(&tiny, "{\"n\":1}\n")?;
    let mut base = Vec::new();
    for _ in 0..runs.max(3) {
        base.push(measure(statesafe(bin, &["get", "/n"], &tiny), &err)?.1);
    }
    let mut jq_base = Vec::new();
    if jq {
        for _ in 0..runs.max(3) {
            let mut c = Command::new("jq");
            c.arg(".n").arg(&tiny);
            jq_base.push(measure(c, &err)?.1);
        }
    }
    let jq_baseline = if jq { median(&jq_base) } else { 0.0 };
    let mut out = Vec::new();
    for &size in sizes {
        let here = sub.join(size.to_string());
        std::fs::create_dir_all(&here)?;
        let (document, bytes) = doc::make_compact(size);
        let ss = here.join("ss.json");
        let jq_file = here.join("jq.json");
        let tmp = here.join("jq.json.tmp");
        // Generation 1, compact, as a user's compact file adopted and kept compact.
        statesafe::Store::<Doc>::options()
            .layout(statesafe::Layout::Compact)
            .open(&ss)?
            .replace(document)?;
        if std::fs::read(&ss)? != bytes {
            return Err("the statesafe file is not the compact document".into());
        }
        std::fs::write(&jq_file, &bytes)?;
        let mut rows: Vec<Row> = Vec::new();
        let mut add = |label: &'static str, shown: String, (secs, peak): (f64, f64)| match rows
            .iter_mut()
            .find(|r| r.label == label)
        {
            Some(r) => {
                r.secs.push(secs);
                r.peaks.push(peak);
            }
            None => rows.push(Row {
                label,
                shown,
                secs: vec![secs],
                peaks: vec![peak],
            }),
        };
        for _ in 0..runs {
            crate::run::settle();
            add(
                UPDATE,
                "statesafe update f '.n += 1'".into(),
                measure(statesafe(bin, &["update", ".n += 1"], &ss), &err)?,
            );
            if jq {
                crate::run::settle();
                add(
                    JQ_UPDATE,
                    "jq -c '.n += 1' f > t && mv t f".into(),
                    measure(
                        shell(format!(
                            "jq -c '.n += 1' {j} > {t} && mv {t} {j}",
                            j = quote(&jq_file),
                            t = quote(&tmp)
                        )),
                        &err,
                    )?,
                );
            }
            add(
                GET_POINTER,
                "statesafe get f /items/5".into(),
                measure(statesafe(bin, &["get", "/items/5"], &ss), &err)?,
            );
            if jq {
                add(
                    JQ_GET,
                    "jq '.items[5]' f".into(),
                    measure(
                        {
                            let mut c = Command::new("jq");
                            c.arg(".items[5]").arg(&jq_file);
                            c
                        },
                        &err,
                    )?,
                );
            }
            add(
                GET_WHOLE,
                "statesafe get f".into(),
                measure(statesafe(bin, &["get"], &ss), &err)?,
            );
            // The last commit's change: the generation before the current one.
            let current = statesafe::Store::<serde_json::Value>::open(&ss)?.generation()?;
            let from = (current - 1).to_string();
            add(
                DIFF,
                "statesafe diff f G-1 (the last commit)".into(),
                measure(statesafe(bin, &["diff", &from], &ss), &err)?,
            );
        }
        // Every update committed.
        let after: Doc = statesafe::Store::open(&ss)?.get()?;
        if after.n != doc::COUNTER_START + runs as u64 {
            return Err("`statesafe update` ran but the counter did not move".into());
        }
        out.push(SizeRows {
            size,
            bytes: bytes.len(),
            rows,
        });
        std::fs::remove_dir_all(&here)?;
    }
    Ok(LargeResult::Ran {
        bin: bin.to_path_buf(),
        runs,
        baseline: median(&base),
        jq_baseline,
        jq,
        sizes: out,
    })
}
