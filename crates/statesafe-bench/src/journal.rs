//! The journal section (issue 16): journal-mode commits against the whole-file commit,
//! the floor and the physical limit, side by side in one run; contended increments
//! against SQLite WAL; group commit across threads.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Result;
use crate::contended;
use crate::contenders::{self, Kind};
use crate::doc;
use crate::report::Target;
use crate::stats::{fmt_ratio, fmt_secs, median, round_order, size_label};

/// How long the journal contenders wait after creating a file before timing: a
/// long-lived store trusts a snapshot's identity alone only once its change time is
/// 3 s old (until then it compares the bytes), see `journal/cache.rs`.
const SETTLE: Duration = Duration::from_millis(3500);

/// One latency row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What it is.
    pub label: String,
    /// Seconds of each commit.
    pub samples: Vec<f64>,
}

impl Row {
    /// Median over all commits.
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }
}

/// The whole section.
#[derive(Debug, Clone)]
pub struct JournalResult {
    /// The size of the large state (100 MiB, smaller in quick mode).
    pub big: usize,
    /// Rounds of the latency rows.
    pub rounds: usize,
    /// The latency rows, in [`LABELS`] order.
    pub rows: Vec<Row>,
    /// Contended increments, 8 processes: (journal, SQLite WAL) per round.
    pub contended: Vec<(f64, f64)>,
    /// Processes of the contended measurement.
    pub procs: usize,
    /// Group commit: (1 thread, 8 threads) commits per second, per round.
    pub group: Vec<(f64, f64)>,
    /// Load average at the start and the end.
    pub load: (String, String),
}

const WHOLE: usize = 0;
const FLOOR: usize = 1;
const JOURNAL_UPDATE: usize = 2;
const JOURNAL_PATCH: usize = 3;
const PHYSICAL: usize = 4;
const BIG: usize = 5;

/// The latency rows' labels.
const LABELS: [&str; 6] = [
    "whole-file commit, 1 KiB: `Store<Value>::update` (plain format, default options)",
    "floor, 1 KiB: temp + write + fsync + rename + dir fsync, bytes ready",
    "journal mode, 1 KiB: `Store<Value>::update` (long-lived store)",
    "journal mode, 1 KiB: `Store<Value>::apply_patch` of one key (long-lived store)",
    "physical limit: `pwrite` of 64 bytes + `fdatasync` into a preallocated file",
    "journal mode, large state: `apply_patch` of one key (long-lived store)",
];

/// A bare append and flush: 64 bytes at the next offset of a file of written zeros.
struct Physical {
    file: File,
    at: u64,
    size: u64,
}

impl Physical {
    fn new(path: &Path) -> Result<Physical> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let size = 4u64 << 20;
        file.write_all_at(&vec![0u8; size as usize], 0)?;
        file.sync_all()?;
        Ok(Physical { file, at: 0, size })
    }

    fn op(&mut self) -> Result<()> {
        let record = [0x5au8; 64];
        if self.at + 64 > self.size {
            self.at = 0;
        }
        self.file.write_all_at(&record, self.at)?;
        self.at += 64;
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }
}

/// A journal-mode `Store<Value>` in `dir` holding `doc`.
fn journal_store(dir: &Path, doc: Value) -> Result<statesafe::Store> {
    std::fs::create_dir_all(dir)?;
    let store: statesafe::Store = statesafe::Store::open(dir.join("state.json"))?;
    let settings = statesafe::Settings {
        format: statesafe::Format::Journal,
        ..statesafe::Settings::default()
    };
    store.create_with(&settings, doc)?;
    Ok(store)
}

fn bump(v: &mut Value) {
    let n = v["n"].as_u64().expect("invariant: the counter is a number");
    v["n"] = (n + 1).into();
}

/// Runs the section. `quick`: fewer rounds and a 8 MiB large state instead of
/// 100 MiB.
pub fn run(dir: &Path, quick: bool) -> Result<JournalResult> {
    let load_start = crate::machine::loadavg();
    let dir = dir.join("journal");
    let big = if quick { 8 << 20 } else { 100 << 20 };
    let (rounds, ops, big_ops) = if quick { (3, 10, 5) } else { (9, 40, 20) };
    let small = doc::make(1024);
    let small_value = serde_json::to_value(&small)?;

    let mut whole = contenders::setup(Kind::StatesafeValue, &dir.join("whole"), &small)?;
    let mut floor = contenders::setup(Kind::Floor, &dir.join("floor"), &small)?;
    let journal_update = journal_store(&dir.join("journal-update"), small_value.clone())?;
    let journal_patch = journal_store(&dir.join("journal-patch"), small_value.clone())?;
    let mut physical = Physical::new(&dir.join("physical.bin"))?;
    eprintln!(
        "  journal: building the {} state (quick mode uses a smaller one than 100 MiB)",
        size_label(big)
    );
    let big_store = {
        let v = serde_json::to_value(doc::make(big))?;
        journal_store(&dir.join("big"), v)?
    };
    std::thread::sleep(SETTLE);
    // The first commit of each long-lived store reads the file in full.
    journal_update.update(bump)?;
    journal_patch.apply_patch(&json!([{"op": "replace", "path": "/n", "value": 0}]))?;
    big_store.apply_patch(&json!([{"op": "replace", "path": "/n", "value": 0}]))?;
    let mut patch_n = 0u64;
    let mut big_n = 0u64;

    let mut rows: Vec<Row> = LABELS
        .iter()
        .map(|l| Row {
            label: (*l).to_string(),
            samples: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        crate::run::settle();
        // Operation by operation, in an order drawn afresh for each round, so that
        // bursts of load from other programs hit every contender alike.
        let order = round_order(round * 7 + 3, LABELS.len());
        for k in 0..ops.max(big_ops) {
            for &i in &order {
                if k >= if i == BIG { big_ops } else { ops } {
                    continue;
                }
                let started = Instant::now();
                match i {
                    WHOLE => whole.op()?,
                    FLOOR => floor.op()?,
                    JOURNAL_UPDATE => journal_update.update(bump)?,
                    JOURNAL_PATCH => {
                        patch_n += 1;
                        journal_patch.apply_patch(
                            &json!([{"op": "replace", "path": "/n", "value": patch_n}]),
                        )?;
                    }
                    PHYSICAL => physical.op()?,
                    _ => {
                        big_n += 1;
                        big_store.apply_patch(
                            &json!([{"op": "replace", "path": "/n", "value": big_n}]),
                        )?;
                    }
                }
                rows[i].samples.push(started.elapsed().as_secs_f64());
            }
        }
        eprintln!(
            "  journal round {}: medians so far {}",
            round + 1,
            rows.iter()
                .map(|r| fmt_secs(r.median()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Every commit is there, read by a store that never saw the file.
    let check: statesafe::Store = statesafe::Store::open(dir.join("big/state.json"))?;
    if check.get()?["n"] != json!(big_n) {
        return Err("the large journal-mode state lost a commit".into());
    }
    drop(check);
    drop(big_store);
    std::fs::remove_dir_all(dir.join("big"))?;

    // Contended increments: 8 processes, journal mode against SQLite WAL.
    let procs = 8;
    let window = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    };
    let mut contended_rates = Vec::new();
    for round in 0..if quick { 1 } else { 5 } {
        let mut pair = (0.0, 0.0);
        for i in round_order(round + 11, 2) {
            let kind = [Kind::StatesafeJournal, Kind::SqliteWal][i];
            let sub = dir.join("contended").join(format!("{kind:?}"));
            // Timed once the fresh file has settled, as the rows above are: in its
            // first 3 s each commit also reads the snapshot and the settings again.
            let settle = if kind == Kind::StatesafeJournal {
                SETTLE
            } else {
                Duration::ZERO
            };
            let rate = contended::measure_fresh(kind, &sub, procs, window, settle)?;
            if i == 0 {
                pair.0 = rate;
            } else {
                pair.1 = rate;
            }
        }
        eprintln!(
            "  journal contended, {procs} processes: journal {:.0}/s, SQLite WAL {:.0}/s",
            pair.0, pair.1
        );
        contended_rates.push(pair);
    }

    // Group commit: 8 threads sharing one store, against one thread.
    let group_store = journal_store(&dir.join("group"), json!({"n": 0}))?;
    group_store.apply_patch(&json!([{"op": "replace", "path": "/n", "value": 1}]))?;
    let mut group = Vec::new();
    for round in 0..if quick { 1 } else { 5 } {
        let mut pair = (0.0, 0.0);
        for i in round_order(round + 5, 2) {
            let threads = [1usize, 8][i];
            let rate = threads_rate(&group_store, threads, window)?;
            if i == 0 {
                pair.0 = rate;
            } else {
                pair.1 = rate;
            }
        }
        eprintln!(
            "  journal group commit: 1 thread {:.0}/s, 8 threads {:.0}/s",
            pair.0, pair.1
        );
        group.push(pair);
    }
    Ok(JournalResult {
        big,
        rounds,
        rows,
        contended: contended_rates,
        procs,
        group,
        load: (load_start, crate::machine::loadavg()),
    })
}

/// `child group`: the group-commit measurement alone, on a fresh store in `dir`.
pub fn group(
    dir: &Path,
    threads: usize,
    millis: u64,
    rounds: usize,
    threads_only: bool,
) -> Result<()> {
    let store = journal_store(&dir.join("group"), json!({"n": 0}))?;
    store.apply_patch(&json!([{"op": "replace", "path": "/n", "value": 1}]))?;
    let window = Duration::from_millis(millis);
    for round in 0..rounds {
        if threads_only {
            let rate = threads_rate(&store, threads, window)?;
            println!("round {}: {threads} threads {rate:.0}/s", round + 1);
            continue;
        }
        let mut pair = [0.0; 2];
        for i in round_order(round + 5, 2) {
            pair[i] = threads_rate(&store, [1, threads][i], window)?;
        }
        println!(
            "round {}: 1 thread {:.0}/s, {threads} threads {:.0}/s, {:.2}x",
            round + 1,
            pair[0],
            pair[1],
            pair[1] / pair[0]
        );
    }
    Ok(())
}

/// Commits per second of `threads` threads each applying one-key patches to the
/// shared `store` for `window`.
fn threads_rate(store: &statesafe::Store, threads: usize, window: Duration) -> Result<f64> {
    let started = Instant::now();
    let counts: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<u64> {
                    let mut n = 0u64;
                    while started.elapsed() < window {
                        n += 1;
                        store.apply_patch(
                            &json!([{"op": "add", "path": format!("/t{t}"), "value": n}]),
                        )?;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    Ok(total as f64 / elapsed)
}

impl JournalResult {
    fn row(&self, i: usize) -> f64 {
        self.rows[i].median()
    }

    fn contended_ratio(&self) -> f64 {
        median(
            &self
                .contended
                .iter()
                .map(|(j, s)| j / s)
                .collect::<Vec<_>>(),
        )
    }

    fn group_ratio(&self) -> f64 {
        median(
            &self
                .group
                .iter()
                .map(|(one, eight)| eight / one)
                .collect::<Vec<_>>(),
        )
    }

    /// The section's targets.
    pub fn targets(&self) -> Vec<Target> {
        let big = self.row(BIG) / self.row(WHOLE);
        let floor = self.row(JOURNAL_UPDATE) / self.row(FLOOR);
        let physical = self.row(JOURNAL_UPDATE) / self.row(PHYSICAL);
        let contended = self.contended_ratio();
        let group = self.group_ratio();
        vec![
            Target {
                goal: format!(
                    "journal: one-key change to a {} state (long-lived store): at most 2x the 1 KiB whole-file commit{}",
                    size_label(self.big),
                    if self.big < 100 << 20 {
                        " (a smaller state than the 100 MiB target: quick mode)"
                    } else {
                        ""
                    }
                ),
                measured: format!(
                    "{} ({} vs {})",
                    fmt_ratio(big),
                    fmt_secs(self.row(BIG)),
                    fmt_secs(self.row(WHOLE))
                ),
                met: Some(big <= 2.0),
            },
            Target {
                goal: "journal: 1 KiB commit (update) at most 0.6x the whole-file floor".into(),
                measured: format!(
                    "{} ({} vs {})",
                    fmt_ratio(floor),
                    fmt_secs(self.row(JOURNAL_UPDATE)),
                    fmt_secs(self.row(FLOOR))
                ),
                met: Some(floor <= 0.6),
            },
            Target {
                goal: "journal: 1 KiB commit (update) at most 1.3x the physical limit (append + fdatasync)".into(),
                measured: format!(
                    "{} ({} vs {})",
                    fmt_ratio(physical),
                    fmt_secs(self.row(JOURNAL_UPDATE)),
                    fmt_secs(self.row(PHYSICAL))
                ),
                met: Some(physical <= 1.3),
            },
            Target {
                goal: format!(
                    "journal: contended increments, {} processes, at least 1.5x SQLite WAL (synchronous=FULL)",
                    self.procs
                ),
                measured: format!(
                    "{} (median of {} rounds, each on a journal-mode file made {} s before: {})",
                    fmt_ratio(contended),
                    self.contended.len(),
                    SETTLE.as_secs_f64(),
                    self.contended
                        .iter()
                        .map(|(j, s)| format!("{j:.0} vs {s:.0}/s"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                met: Some(contended >= 1.5),
            },
            Target {
                goal: "journal: 8 threads sharing a store (group commit, apply_patch) at least 3x one thread's commit rate".into(),
                measured: format!(
                    "{} (median of {} rounds: {})",
                    fmt_ratio(group),
                    self.group.len(),
                    self.group
                        .iter()
                        .map(|(one, eight)| format!("{eight:.0} vs {one:.0}/s"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                met: Some(group >= 3.0),
            },
        ]
    }
}

/// The section of the report.
pub fn section(o: &mut String, r: &JournalResult) {
    let _ = writeln!(o, "## Journal mode (issue 16)\n");
    let _ = writeln!(
        o,
        "Side by side in one run ({} rounds; the contenders alternate commit by commit, in a new order each round; medians over all commits). Load average {} at the start, {} at the end. The large state is {}.\n",
        r.rounds,
        r.load.0,
        r.load.1,
        size_label(r.big)
    );
    let _ = writeln!(
        o,
        "| commit | median | ratio to the whole-file 1 KiB commit |"
    );
    let _ = writeln!(o, "|---|---:|---:|");
    for (i, row) in r.rows.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            row.label,
            fmt_secs(row.median()),
            fmt_ratio(row.median() / r.row(WHOLE))
        );
        let _ = i;
    }
    let _ = writeln!(o);
    for t in r.targets() {
        let _ = writeln!(
            o,
            "- **{}** {}: {}",
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not judged",
            },
            t.goal,
            t.measured
        );
    }
    let _ = writeln!(o);
}
