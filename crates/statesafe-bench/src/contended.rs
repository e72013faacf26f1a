//! Section 2: 1, 2, 4, 8 processes incrementing one counter.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::ValueEnum;

use crate::Result;
use crate::contenders::{self, Kind};
use crate::doc::{self, COUNTER_START, Doc, Template};
use crate::stats::{median, round_order};

/// The contenders of this section.
pub const KINDS: [Kind; 5] = [
    Kind::Floor,
    Kind::StatesafeLean,
    Kind::StatesafeTyped,
    Kind::SqliteWal,
    Kind::SqliteDelete,
];

/// What each contender does per increment, for the report.
pub fn describes(kind: Kind) -> &'static str {
    match kind {
        Kind::Floor => {
            "`flock` a lock file, read the file, bump the counter digits (no parse), temp \
             write + fsync + rename + dir fsync, unlock"
        }
        Kind::StatesafeTyped => {
            "`Store<Doc>::update(|d| d.n += 1)` (parse + serialize), default options \
             (backups and history on)"
        }
        Kind::StatesafeLean => "the same with backups and history turned off",
        Kind::SqliteWal | Kind::SqliteDelete => {
            "`BEGIN IMMEDIATE` (busy_timeout 60 s), `SELECT body`, bump the counter \
             digits, `UPDATE`, `COMMIT`; synchronous=FULL"
        }
        _ => "",
    }
}

/// Throughput samples of one contender at one process count.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The contender.
    pub kind: Kind,
    /// Number of processes.
    pub procs: usize,
    /// Increments per second (all processes together), one per round.
    pub rates: Vec<f64>,
}

impl Cell {
    /// Median over rounds.
    pub fn rate(&self) -> f64 {
        median(&self.rates)
    }
}

/// The whole section.
#[derive(Debug, Clone)]
pub struct ContendedResult {
    /// The document size used.
    pub bytes: usize,
    /// Window per measurement.
    pub window: Duration,
    /// Rounds.
    pub rounds: usize,
    /// One cell per contender and process count.
    pub cells: Vec<Cell>,
}

impl ContendedResult {
    /// The cell of `kind` at `procs`.
    pub fn cell(&self, kind: Kind, procs: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.kind == kind && c.procs == procs)
    }
}

fn kind_arg(kind: Kind) -> String {
    kind.to_possible_value()
        .expect("invariant: no skipped variants")
        .get_name()
        .to_string()
}

/// Puts the counter back to its start value; returns the file to contend on.
fn reset(kind: Kind, dir: &Path, document: &Doc) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(kind.file_name());
    let template = Template::new(document);
    match kind {
        Kind::StatesafeTyped => {
            statesafe::Store::<Doc>::open(&path)?.replace(document.clone())?;
        }
        Kind::StatesafeLean => {
            contenders::lean_store(&path)?.replace(document.clone())?;
        }
        Kind::StatesafeJournal => {
            // A new file each time: journal mode is chosen when it is created.
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)?;
            let settings = statesafe::Settings {
                format: statesafe::Format::Journal,
                ..statesafe::Settings::default()
            };
            statesafe::Store::<Doc>::open(&path)?.create_with(&settings, document.clone())?;
        }
        Kind::SqliteWal | Kind::SqliteDelete => {
            let conn = contenders::sqlite_open(kind, &path)?;
            contenders::sqlite_reset(&conn, &template.bytes)?;
        }
        Kind::Floor => {
            let dir_file = std::fs::File::open(dir)?;
            contenders::durable_replace(
                &dir_file,
                &dir.join(".floor.reset"),
                &path,
                &template.bytes,
            )?;
        }
        other => return Err(format!("{} has no contended form", other.label()).into()),
    }
    Ok(path)
}

fn counter(kind: Kind, path: &Path) -> Result<u64> {
    match kind {
        Kind::SqliteWal | Kind::SqliteDelete => {
            contenders::sqlite_counter(&contenders::sqlite_open(kind, path)?)
        }
        // The file is a snapshot: the newest counter is in the journal too.
        Kind::StatesafeJournal => Ok(statesafe::Store::<Doc>::open(path)?.get()?.n),
        _ => doc::read_counter(&std::fs::read(path)?).ok_or_else(|| "no counter".into()),
    }
}

/// One measurement: `procs` children on one file for `window`; increments per second.
fn measure(kind: Kind, path: &Path, procs: usize, window: Duration) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = Vec::new();
    for _ in 0..procs {
        let mut child = Command::new(&exe)
            .args(["child", "contend", "--kind", &kind_arg(kind), "--file"])
            .arg(path)
            .args(["--millis", &window.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().expect("invariant: piped"));
        children.push((child, stdout));
    }
    for (_, out) in &mut children {
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("a contention child failed to start (said {line:?})").into());
        }
    }
    for (child, _) in &mut children {
        child
            .stdin
            .as_mut()
            .expect("invariant: piped")
            .write_all(b"go\n")?;
    }
    let (mut total, mut longest) = (0u64, 0f64);
    for (mut child, mut out) in children {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let status = child.wait()?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next(), status.success()) {
            (Some("done"), Some(count), Some(nanos), true) => {
                total += count.parse::<u64>()?;
                longest = longest.max(nanos.parse::<f64>()? / 1e9);
            }
            _ => return Err(format!("a contention child failed ({status}, said {line:?})").into()),
        }
    }
    let found = counter(kind, path)?;
    if found != COUNTER_START + total {
        return Err(format!(
            "{} with {procs} processes: counter is {found}, expected {}: lost updates",
            kind.label(),
            COUNTER_START + total
        )
        .into());
    }
    Ok(total as f64 / longest)
}

/// One measurement on a file of `kind` made afresh in `dir` (a 1 KiB document):
/// increments per second of `procs` processes in `window`, started `settle` after the
/// file was made.
pub fn measure_fresh(
    kind: Kind,
    dir: &Path,
    procs: usize,
    window: Duration,
    settle: Duration,
) -> Result<f64> {
    let document = doc::make(1024);
    let path = reset(kind, dir, &document)?;
    std::thread::sleep(settle);
    measure(kind, &path, procs, window)
}

/// Runs the section: every contender at every process count, `rounds` times,
/// interleaved.
pub fn run(
    dir: &Path,
    procs: &[usize],
    window: Duration,
    rounds: usize,
) -> Result<ContendedResult> {
    let document = doc::make(1024);
    let bytes = doc::encode(&document).len();
    let mut cells: Vec<Cell> = Vec::new();
    for &p in procs {
        for kind in KINDS {
            cells.push(Cell {
                kind,
                procs: p,
                rates: Vec::new(),
            });
        }
    }
    for round in 0..rounds {
        for &p in procs {
            for i in round_order(round * 31 + p, KINDS.len()) {
                let kind = KINDS[i];
                let sub = dir.join("contended").join(format!("{kind:?}"));
                let path = reset(kind, &sub, &document)?;
                let rate = measure(kind, &path, p, window)?;
                eprintln!(
                    "  contended {:<20} {p} procs: {rate:.0} increments/s",
                    kind.label()
                );
                cells
                    .iter_mut()
                    .find(|c| c.kind == kind && c.procs == p)
                    .expect("invariant: all cells made above")
                    .rates
                    .push(rate);
            }
        }
    }
    Ok(ContendedResult {
        bytes,
        window,
        rounds,
        cells,
    })
}
