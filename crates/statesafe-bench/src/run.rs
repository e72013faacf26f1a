//! The whole benchmark: choose the directory, run the sections, write the report.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{Args, Section};
use crate::cli_timing::{self, CliResult};
use crate::contended::{self, ContendedResult};
use crate::large_cli::{self, LargeResult};
use crate::load::{self, LoadResult};
use crate::machine::{self, Machine};
use crate::memory::{self, MemResult};
use crate::update::{self, Plan, SizeResult};
use crate::{Result, chart, report};

/// The repository's root (where `docs/` lives).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The default benchmark directory: the system temp dir if it is on the same
/// filesystem as the repository (and not tmpfs), else the repository's `target/`.
fn default_base() -> PathBuf {
    let root = workspace_root();
    let tmp = std::env::temp_dir();
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let tmp_is_tmpfs = machine::mount_of(&tmp).is_some_and(|m| m.fstype == "tmpfs");
    if dev(&tmp).is_some() && dev(&tmp) == dev(&root) && !tmp_is_tmpfs {
        tmp
    } else {
        root.join("target")
    }
}

/// Everything measured, for the report and the chart.
#[derive(Debug)]
pub struct Results {
    /// The machine.
    pub machine: Machine,
    /// Quick mode?
    pub quick: bool,
    /// The command line that produced this.
    pub command: String,
    /// Section 1.
    pub update: Vec<SizeResult>,
    /// Section 2.
    pub contended: Option<ContendedResult>,
    /// Section 3.
    pub load: Vec<LoadResult>,
    /// Section 4.
    pub memory: Vec<MemResult>,
    /// Section 5.
    pub cli: Option<CliResult>,
    /// Section 6.
    pub large_cli: Option<LargeResult>,
    /// Section 7.
    pub pg: Option<crate::pg::PgResult>,
    /// Journal mode.
    pub journal: Option<crate::journal::JournalResult>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Load averages at the end.
    pub load_end: String,
}

/// Runs every selected section and writes the report and the chart.
pub fn all(args: &Args) -> Result<()> {
    let started = Instant::now();
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => default_base(),
    };
    std::fs::create_dir_all(&base)?;
    let tempdir = tempfile::Builder::new()
        .prefix("statesafe-bench-")
        .tempdir_in(&base)?;
    let dir = tempdir.path();
    let machine = machine::describe(dir);
    eprintln!(
        "statesafe-bench: in {} ({}){}",
        dir.display(),
        machine
            .mount
            .as_ref()
            .map_or("unknown filesystem".into(), |m| format!(
                "{} {}",
                m.fstype, m.options
            )),
        if args.quick { ", quick mode" } else { "" }
    );
    let wants = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut sizes = args.sizes.clone();
    if args.large && !sizes.contains(&(100 << 20)) {
        sizes.push(100 << 20);
    }
    let (update_plan, load_plan) = if args.quick {
        (
            Plan {
                rounds: 3,
                slice: Duration::from_millis(25),
                min_ops: 2,
                max_ops: 20,
            },
            Plan {
                rounds: 3,
                slice: Duration::from_millis(10),
                min_ops: 1,
                max_ops: 50,
            },
        )
    } else {
        (
            Plan {
                rounds: 10,
                slice: Duration::from_millis(120),
                min_ops: 20,
                max_ops: 40,
            },
            Plan {
                rounds: 10,
                slice: Duration::from_millis(40),
                min_ops: 2,
                max_ops: 200,
            },
        )
    };

    let mut results = Results {
        machine,
        quick: args.quick,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        update: Vec::new(),
        contended: None,
        load: Vec::new(),
        memory: Vec::new(),
        cli: None,
        large_cli: None,
        pg: None,
        journal: None,
        elapsed: Duration::ZERO,
        load_end: String::new(),
    };

    if wants(Section::Update) {
        for &size in &sizes {
            let t = Instant::now();
            // The largest documents get fewer rounds: each op is already long.
            let mut plan = update_plan;
            if size >= 64 << 20 {
                plan.rounds = plan.rounds.min(3);
            }
            settle();
            let r = update::run(dir, size, plan)?;
            eprintln!(
                "update {:>7}: {} rounds x {} ops in {:.1?}",
                crate::stats::size_label(size),
                r.rounds,
                r.ops_per_round,
                t.elapsed()
            );
            results.update.push(r);
        }
    }
    if wants(Section::Contended) {
        let t = Instant::now();
        let (window, rounds) = if args.quick {
            (Duration::from_millis(250), 1)
        } else {
            (Duration::from_millis(300), 10)
        };
        settle();
        results.contended = Some(contended::run(dir, &args.procs, window, rounds)?);
        eprintln!("contended: done in {:.1?}", t.elapsed());
    }
    if wants(Section::Load) {
        for &size in &sizes {
            let t = Instant::now();
            results.load.push(load::run(dir, size, load_plan)?);
            eprintln!(
                "load {:>7}: done in {:.1?}",
                crate::stats::size_label(size),
                t.elapsed()
            );
        }
    }
    if wants(Section::Memory) {
        let runs = if args.quick { 1 } else { 3 };
        for &size in &sizes {
            let t = Instant::now();
            results.memory.push(memory::run(dir, size, runs)?);
            eprintln!(
                "memory {:>7}: done in {:.1?}",
                crate::stats::size_label(size),
                t.elapsed()
            );
        }
    }
    if wants(Section::Cli) {
        let t = Instant::now();
        let (runs, rounds) = if args.quick { (10, 1) } else { (40, 3) };
        settle();
        let r = cli_timing::run(dir, args.statesafe_bin.as_deref(), runs, rounds)?;
        if let CliResult::Skipped(why) = &r {
            eprintln!("cli: SKIPPED: {why}");
        } else {
            eprintln!("cli: done in {:.1?}", t.elapsed());
        }
        results.cli = Some(r);
    }
    if wants(Section::LargeCli) {
        let t = Instant::now();
        // CI's quick run uses the test stage's debug build: 1 MiB once. The 85 MiB
        // document (the 52 MB file as statesafe stored it) is opt-in.
        let (sizes, runs): (Vec<usize>, usize) = if args.quick {
            (vec![1 << 20], 1)
        } else if args.large {
            (vec![1 << 20, 16 << 20, 85 << 20], 3)
        } else {
            (vec![1 << 20, 16 << 20], 3)
        };
        let r = match cli_timing::statesafe_bin(args.statesafe_bin.as_deref()) {
            Ok(bin) => large_cli::run(dir, &bin, &sizes, runs)?,
            Err(why) => LargeResult::Skipped(why),
        };
        if let LargeResult::Skipped(why) = &r {
            eprintln!("large-cli: SKIPPED: {why}");
        } else {
            eprintln!("large-cli: done in {:.1?}", t.elapsed());
        }
        results.large_cli = Some(r);
    }
    if wants(Section::Pg) {
        let t = Instant::now();
        let (window, rounds) = if args.quick {
            (Duration::from_millis(250), 1)
        } else {
            (Duration::from_secs(2), 5)
        };
        let r = crate::pg::run(&args.procs, window, rounds)?;
        match &r {
            crate::pg::PgResult::Skipped(why) => eprintln!("pg: SKIPPED: {why}"),
            crate::pg::PgResult::Done { .. } => eprintln!("pg: done in {:.1?}", t.elapsed()),
        }
        results.pg = Some(r);
    }
    if wants(Section::Journal) {
        let t = Instant::now();
        settle();
        results.journal = Some(crate::journal::run(dir, args.quick)?);
        eprintln!("journal: done in {:.1?}", t.elapsed());
    }
    results.elapsed = started.elapsed();
    results.load_end = machine::loadavg();

    let md = report::markdown(&results, &args.out_svg, &args.out_md);
    if let Some(parent) = args.out_md.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out_md, md)?;
    chart::draw(&results, &args.out_svg)?;
    eprintln!(
        "wrote {} and {} in {:.1?}",
        args.out_md.display(),
        args.out_svg.display(),
        results.elapsed
    );
    println!("{}", report::summary(&results));
    tempdir.close()?;
    Ok(())
}

/// Writes back every dirty page on the machine before a timed section, so that other
/// programs' pending writeback (a build that just finished, say) is not flushed from
/// the device cache inside the first `fsync`s we time.
pub fn settle() {
    rustix::fs::sync();
}
