//! Section 5: whole-process CLI timings with hyperfine: `statesafe get` and
//! `statesafe update` against `jq` (with `mv` for the update).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;
use crate::doc::{self, Doc};
use crate::stats::median;

/// One command's medians over the hyperfine rounds.
#[derive(Debug, Clone)]
pub struct CliRow {
    /// Short label.
    pub label: &'static str,
    /// The command as run (with paths shortened).
    pub shown: String,
    /// Median of each round (s).
    pub medians: Vec<f64>,
}

impl CliRow {
    /// Median over rounds (s).
    pub fn median(&self) -> f64 {
        median(&self.medians)
    }
}

/// The section's outcome: figures, or why it was skipped.
#[derive(Debug, Clone)]
pub enum CliResult {
    /// Timings.
    Ran {
        /// Hyperfine's version.
        hyperfine: String,
        /// The `statesafe` binary measured.
        bin: PathBuf,
        /// Runs per command per round.
        runs: usize,
        /// Rounds.
        rounds: usize,
        /// Rows: get, jq get, update, jq update.
        rows: Vec<CliRow>,
    },
    /// Not measured, with the reason.
    Skipped(String),
}

fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Finds (building it if needed) a `statesafe` binary that has `get` and `update`.
pub fn statesafe_bin(given: Option<&Path>) -> std::result::Result<PathBuf, String> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let root = crate::run::workspace_root();
            eprintln!("  building the CLI: cargo build --release -p statesafe-cli");
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "--release", "--quiet", "-p", "statesafe-cli"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "`cargo build --release -p statesafe-cli` failed ({status}); the CLI is \
                     being written concurrently"
                ));
            }
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            exe.with_file_name("statesafe")
        }
    };
    if !bin.is_file() {
        return Err(format!("no CLI binary at `{}`", bin.display()));
    }
    for verb in ["get", "update"] {
        let ok = Command::new(&bin)
            .args([verb, "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "the `statesafe` CLI at `{}` has no `{verb}` command yet",
                bin.display()
            ));
        }
    }
    Ok(bin)
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Runs the section in `dir`.
pub fn run(dir: &Path, given_bin: Option<&Path>, runs: usize, rounds: usize) -> Result<CliResult> {
    let Some(hyperfine) = tool_version("hyperfine") else {
        return Ok(CliResult::Skipped("hyperfine is not installed".into()));
    };
    if tool_version("jq").is_none() {
        return Ok(CliResult::Skipped("jq is not installed".into()));
    }
    let bin = match statesafe_bin(given_bin) {
        Ok(bin) => bin,
        Err(reason) => return Ok(CliResult::Skipped(reason)),
    };
    // Building the CLI (when it was needed) leaves its output to be written back.
    rustix::fs::sync();
    let sub = dir.join("cli");
    std::fs::create_dir_all(&sub)?;
    let document = doc::make(1024);
    let ss = sub.join("ss.json");
    let jq = sub.join("jq.json");
    let tmp = sub.join("jq.json.tmp");
    statesafe::Store::<Doc>::open(&ss)?.replace(document.clone())?;
    std::fs::write(&jq, doc::encode(&document))?;
    let b = quote(&bin);
    // (label, command, as shown, needs a shell). Commands that need no shell run
    // without one (`hyperfine -N`): timing them through `sh -c` and subtracting
    // hyperfine's estimate of the shell's cost was off by up to ±0.5 ms from one run
    // to the next here. The jq pipeline needs the shell for `>` and `&&`.
    let commands: [(&'static str, String, String, bool); 4] = [
        (
            "statesafe get",
            format!("{b} get {}", quote(&ss)),
            "statesafe get f".into(),
            false,
        ),
        (
            "jq . (read only)",
            format!("jq . {}", quote(&jq)),
            "jq . f > /dev/null".into(),
            false,
        ),
        (
            "statesafe update",
            format!("{b} update {} '.n += 1'", quote(&ss)),
            "statesafe update f '.n += 1'".into(),
            false,
        ),
        (
            "jq + mv (unsafe)",
            format!(
                "jq '.n += 1' {j} > {t} && mv {t} {j}",
                j = quote(&jq),
                t = quote(&tmp)
            ),
            "jq '.n += 1' f > t && mv t f".into(),
            true,
        ),
    ];
    let mut rows: Vec<CliRow> = commands
        .iter()
        .map(|(label, _, shown, _)| CliRow {
            label,
            shown: shown.clone(),
            medians: Vec::new(),
        })
        .collect();
    let json = sub.join("hyperfine.json");
    for round in 0..rounds {
        // Alternate the order between rounds.
        let order: Vec<usize> = if round.is_multiple_of(2) {
            (0..commands.len()).collect()
        } else {
            (0..commands.len()).rev().collect()
        };
        // One hyperfine per kind of command, in the round's order.
        let mut groups: Vec<(bool, Vec<usize>)> = Vec::new();
        for &i in &order {
            let shell = commands[i].3;
            match groups.iter_mut().find(|(s, _)| *s == shell) {
                Some((_, members)) => members.push(i),
                None => groups.push((shell, vec![i])),
            }
        }
        for (shell, members) in groups {
            let mut cmd = Command::new("hyperfine");
            // `sync` before every timed run (not timed): the jq pipeline does not
            // sync, so its writes (and the discard of the file it replaced) would
            // otherwise be written back during, and charged to, whichever command
            // runs next.
            cmd.args([
                "--style",
                "none",
                "--warmup",
                "3",
                "--prepare",
                "sync",
                "--runs",
                &runs.to_string(),
            ])
            .arg("--export-json")
            .arg(&json);
            if !shell {
                cmd.arg("-N");
            }
            for &i in &members {
                cmd.arg("-n").arg(commands[i].0).arg(&commands[i].1);
            }
            let out = cmd.stdout(Stdio::null()).output()?;
            if !out.status.success() {
                return Ok(CliResult::Skipped(format!(
                    "hyperfine failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
            let results = report["results"]
                .as_array()
                .ok_or("hyperfine: no results")?;
            for (k, &i) in members.iter().enumerate() {
                let m = results
                    .get(k)
                    .and_then(|r| r["median"].as_f64())
                    .ok_or("hyperfine: no median")?;
                rows[i].medians.push(m);
            }
        }
    }
    // The update commands really updated.
    let n: Doc = statesafe::Store::open(&ss)?.get()?;
    if n.n <= doc::COUNTER_START {
        return Err("`statesafe update` ran but the counter did not move".into());
    }
    Ok(CliResult::Ran {
        hyperfine,
        bin,
        runs,
        rounds,
        rows,
    })
}
