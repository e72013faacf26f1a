//! The Markdown report and the short summary printed at the end of a run.

use std::fmt::Write as _;
use std::path::Path;

use crate::cli_timing::CliResult;
use crate::contended;
use crate::contenders::Kind;
use crate::large_cli::{self, LargeResult};
use crate::load::Loader;
use crate::memory;
use crate::run::Results;
use crate::stats::{fmt_bytes, fmt_ratio, fmt_secs, size_label};

/// The hand-written analysis (profiles, where the time goes, plans), kept beside the
/// code so that regenerating the figures does not erase it.
const ANALYSIS: &str = include_str!("analysis.md");

/// One target of issue 6 (or 4) and how this run did.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is aimed for.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// Met? `None`: not judged (the figure is not comparable, e.g. a debug build).
    pub met: Option<bool>,
}

/// Evaluates every target the run has figures for.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let small = r.update.iter().find(|s| s.size == 1024);
    if let Some(s) = small {
        for kind in [
            Kind::StatesafeTyped,
            Kind::StatesafeValue,
            Kind::StatesafeLean,
        ] {
            let ratio = s.row(kind).median() / s.row(Kind::Floor).median();
            out.push(Target {
                goal: format!(
                    "1 KiB update latency, {}: at most 1.25x the floor",
                    kind.label()
                ),
                measured: format!(
                    "{} ({} vs {})",
                    fmt_ratio(ratio),
                    fmt_secs(s.row(kind).median()),
                    fmt_secs(s.row(Kind::Floor).median())
                ),
                met: Some(ratio <= 1.25),
            });
        }
    }
    if let Some(s) = r.update.iter().find(|s| s.size == 16 << 20) {
        for kind in [
            Kind::StatesafeTyped,
            Kind::StatesafeValue,
            Kind::StatesafeLean,
        ] {
            let ratio = s.row(kind).rate() / s.row(Kind::Floor).rate();
            out.push(Target {
                goal: format!(
                    "16 MiB update throughput, {}: at least 0.67x the floor's",
                    kind.label()
                ),
                measured: format!(
                    "{} ({:.1} vs {:.1} updates/s)",
                    fmt_ratio(ratio),
                    s.row(kind).rate(),
                    s.row(Kind::Floor).rate()
                ),
                met: Some(ratio >= 0.67),
            });
        }
    }
    if let Some(j) = &r.journal {
        out.extend(j.targets());
    }
    if let Some(pg) = &r.pg {
        let ratios = pg.ratios();
        if !ratios.is_empty() {
            out.push(Target {
                goal: "PostgreSQL contended increments: at least 0.8x a bare transaction's throughput (every client count)".into(),
                measured: ratios
                    .iter()
                    .map(|(n, x)| format!("{n} clients {}", fmt_ratio(*x)))
                    .collect::<Vec<_>>()
                    .join(", "),
                met: Some(ratios.iter().all(|(_, x)| *x >= 0.8)),
            });
        }
    }
    if let Some(c) = &r.contended {
        let procs: Vec<usize> = {
            let mut p: Vec<usize> = c.cells.iter().map(|c| c.procs).collect();
            p.dedup();
            p.sort_unstable();
            p.dedup();
            p
        };
        for ours in [Kind::StatesafeTyped, Kind::StatesafeLean] {
            for peer in [Kind::SqliteWal, Kind::SqliteDelete] {
                let ratios: Vec<(usize, f64)> = procs
                    .iter()
                    .filter_map(|&p| Some((p, c.cell(ours, p)?.rate() / c.cell(peer, p)?.rate())))
                    .collect();
                if ratios.is_empty() {
                    continue;
                }
                out.push(Target {
                    goal: format!(
                        "contended increments, {}: at least {}'s throughput (every process count)",
                        ours.label(),
                        peer.label()
                    ),
                    measured: ratios
                        .iter()
                        .map(|(p, x)| format!("{p}p {}", fmt_ratio(*x)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    met: Some(ratios.iter().all(|(_, x)| *x >= 1.0)),
                });
            }
        }
    }
    for kind in [
        Kind::StatesafeTyped,
        Kind::StatesafeValue,
        Kind::StatesafeLean,
    ] {
        // Below 64 KiB one 4 KiB page is already several times the document: resident
        // memory cannot resolve the target there (the table still shows those sizes).
        let ratios: Vec<(usize, f64)> = r
            .memory
            .iter()
            .filter(|m| m.size >= 64 << 10)
            .map(|m| (m.size, m.row(kind).delta() / m.bytes as f64))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        out.push(Target {
            goal: format!(
                "peak extra memory of one update, {}: at most 3x the document (sizes from 64 KiB)",
                kind.label()
            ),
            measured: ratios
                .iter()
                .map(|(s, x)| format!("{} {}", size_label(*s), fmt_ratio(*x)))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(ratios.iter().all(|(_, x)| *x <= 3.0)),
        });
    }
    if let Some(CliResult::Ran { rows, bin, .. }) = &r.cli {
        let find = |l: &str| rows.iter().find(|x| x.label == l).map(|x| x.median());
        // CI's quick run times the test stage's debug build (a release build of the
        // CLI would cost minutes there): an absolute time of that says nothing.
        let debug_build = bin.components().any(|c| c.as_os_str() == "debug");
        if let (Some(ss), Some(jq)) = (find("statesafe update"), find("jq + mv (unsafe)")) {
            out.push(Target {
                goal: "CLI: 1 KiB `statesafe update` median at most 3 ms (issue 4)".into(),
                measured: if debug_build {
                    format!(
                        "{} with a debug build ({}); only a release build is judged",
                        fmt_secs(ss),
                        bin.display()
                    )
                } else {
                    fmt_secs(ss)
                },
                met: (!debug_build).then_some(ss <= 0.003),
            });
            out.push(Target {
                goal: "CLI: `statesafe update` within 1.5x of `jq … > t && mv t f` (issue 4)"
                    .into(),
                measured: format!(
                    "{} ({} vs {})",
                    fmt_ratio(ss / jq),
                    fmt_secs(ss),
                    fmt_secs(jq)
                ),
                met: Some(ss / jq <= 1.5),
            });
        }
    }
    large_cli_targets(r, &mut out);
    out
}

/// Issue 12, item 7: `update` peak memory at most 8x the document, for large
/// documents (16 MiB and more: at 1 MiB the process's fixed costs, jaq and a second
/// thread, are a tenth of the figure); `get POINTER` without building the document
/// tree (peak at most 2x the document: the bytes read and little more), at every
/// size, so that CI's quick run (1 MiB) judges it. Both on the memory beyond what
/// the process holds for a 1 KiB file.
fn large_cli_targets(r: &Results, out: &mut Vec<Target>) {
    let Some(LargeResult::Ran {
        sizes, baseline, ..
    }) = &r.large_cli
    else {
        return;
    };
    for (label, goal, limit, from) in [
        (
            large_cli::UPDATE,
            "large-document CLI: `statesafe update` peak memory at most 8x the document, from 16 MiB (issue 12)",
            8.0,
            16 << 20,
        ),
        (
            large_cli::GET_POINTER,
            "large-document CLI: `statesafe get FILE /items/5` without building the tree: peak memory at most 2x the document (issue 12)",
            2.0,
            0,
        ),
    ] {
        let ratios: Vec<(usize, f64)> = sizes
            .iter()
            .filter(|s| s.size >= from)
            .filter_map(|s| {
                s.row(label)
                    .map(|row| (s.size, (row.peak() - baseline).max(0.0) / s.bytes as f64))
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        out.push(Target {
            goal: goal.into(),
            measured: ratios
                .iter()
                .map(|(s, x)| format!("{} {}", size_label(*s), fmt_ratio(*x)))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(ratios.iter().all(|(_, x)| *x <= limit)),
        });
    }
}

/// The lines printed at the end of a run.
pub fn summary(r: &Results) -> String {
    let mut s = String::from("targets:\n");
    for t in targets(r) {
        let _ = writeln!(
            s,
            "  [{}] {}: {}",
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not judged",
            },
            t.goal,
            t.measured
        );
    }
    s
}

fn relative(from_md: &Path, svg: &Path) -> String {
    match (from_md.parent(), svg.parent()) {
        (Some(a), Some(b)) if a == b => svg.file_name().map_or_else(
            || svg.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        _ => svg.display().to_string(),
    }
}

/// The whole report.
pub fn markdown(r: &Results, svg: &Path, md_path: &Path) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Generated by `statesafe-bench` ({}) on {} in {:.0} s{}. Regenerate with \
         `cargo run --release -p statesafe-bench` (a few minutes on 2 cores; `-- --quick` \
         for a short run, `-- --dir DIR` to measure another filesystem, `-- --large` to add \
         100 MiB).\n",
        shown_args(&r.command),
        m.date,
        r.elapsed.as_secs_f64(),
        if r.quick {
            ", **quick mode: few samples, figures are rough**"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "![update latency, throughput and contention]({})\n",
        relative(md_path, svg)
    );
    let _ = writeln!(
        o,
        "**Noise.** This machine is shared: other engineers were compiling and testing on \
         the same 2 cores during the run (load average {} at the start, {} at the end). \
         Contenders therefore alternate operation by operation (A B C … A B C …, in an \
         order drawn afresh for each round), so that bursts of background load \
         hit all of them alike, and \
         the tables give medians (and 90th percentiles) over all samples. Before each \
         timed section the program calls `sync(2)`, so that other programs' pending \
         writeback is not flushed inside the first `fsync`s it times. Ratios between \
         contenders are more trustworthy than absolute figures.\n",
        m.load_start, r.load_end
    );

    // Machine.
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| CPU | {} ({} logical CPUs available) |",
        m.cpu, m.cores
    );
    let _ = writeln!(o, "| Memory | {} |", fmt_bytes(m.memory as f64));
    let _ = writeln!(o, "| OS, kernel | {}, Linux {} |", m.os, m.kernel);
    let _ = writeln!(o, "| rustc | {} |", m.rustc);
    match &m.mount {
        Some(mt) => {
            let _ = writeln!(
                o,
                "| Benchmark filesystem | `{}` on `{}` (mounted at `{}`), options `{}`{} |",
                mt.fstype,
                mt.source,
                mt.point.display(),
                mt.options,
                match mt.ext4_journal() {
                    Some(false) =>
                        "; **no journal** (no jbd2 instance for the device: \
                                    `fsync` costs a data write and an inode write, with no \
                                    journal commit)",
                    Some(true) => "; with a journal (jbd2)",
                    None => "",
                }
            );
        }
        None => {
            let _ = writeln!(o, "| Benchmark filesystem | unknown |");
        }
    }
    let _ = writeln!(
        o,
        "| Benchmark directory | `{}` (a temporary directory, removed after the run) |",
        m.dir.display()
    );
    let _ = writeln!(o, "| statesafe commit | {} |", m.commit);
    let _ = writeln!(o, "| Date | {} |\n", m.date);

    // Targets.
    let ts = targets(r);
    if !ts.is_empty() {
        let _ = writeln!(o, "## Targets\n");
        let _ = writeln!(o, "| target | measured | |\n|---|---|---|");
        for t in &ts {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                t.goal,
                t.measured,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "not judged",
                }
            );
        }
        let _ = writeln!(
            o,
            "\nFor each missed target, [where the time and memory go](#where-the-time-and-memory-go) gives the profile and the plan.\n"
        );
    }

    update_section(&mut o, r);
    contended_section(&mut o, r);
    load_section(&mut o, r);
    memory_section(&mut o, r);
    cli_section(&mut o, r);
    large_cli_section(&mut o, r);
    if let Some(pg) = &r.pg {
        crate::pg::section(&mut o, pg);
    }
    if let Some(j) = &r.journal {
        crate::journal::section(&mut o, j);
    }

    let _ = writeln!(o, "## Where the time and memory go\n");
    o.push_str(ANALYSIS);
    o
}

/// The arguments the run was given, for the report's first line.
fn shown_args(command: &str) -> String {
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    if args.is_empty() {
        "default options".into()
    } else {
        format!("arguments `{}`", args.join(" "))
    }
}

fn update_section(o: &mut String, r: &Results) {
    if r.update.is_empty() {
        return;
    }
    let _ = writeln!(o, "## 1. Durable update: latency and throughput\n");
    let _ = writeln!(
        o,
        "Each update raises the counter `n` in the document by one and writes the whole \
         document durably (except *naive*). Documents are pretty-printed JSON (statesafe's \
         default layout): `{{\"n\": …, \"items\": [{{\"id\", \"name\", \"tags\", \"value\", \
         \"active\", \"note\"}}, …]}}`, all contenders writing the same bytes. Every contender \
         has its own file in its own directory of the same filesystem. After the run each \
         file's counter is checked against the number of updates made.\n"
    );
    let _ = writeln!(o, "What one update includes, per contender:\n");
    for kind in Kind::UPDATE {
        let _ = writeln!(o, "- **{}**: {}.", kind.label(), kind.describes());
    }
    let _ = writeln!(
        o,
        "\nThe floor and the peers get the document bytes ready-made, so the gap between \
         them and statesafe includes statesafe's JSON parse and serialize, its lock, its \
         metadata (xattr, holder record) and its read of the current version.\n"
    );
    for s in &r.update {
        let floor = s.row(Kind::Floor);
        let _ = writeln!(
            o,
            "### {} (document {} bytes; {} rounds x {} updates per contender)\n",
            size_label(s.size),
            s.bytes,
            s.rounds,
            s.ops_per_round
        );
        let _ = writeln!(
            o,
            "| contender | median | p90 | updates/s | MiB/s | latency vs floor | throughput vs floor |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for row in &s.rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1} | {:.1} | {} | {} |",
                row.kind.label(),
                fmt_secs(row.median()),
                fmt_secs(row.p90()),
                row.rate(),
                row.rate() * s.bytes as f64 / (1 << 20) as f64,
                fmt_ratio(row.median() / floor.median()),
                fmt_ratio(row.rate() / floor.rate()),
            );
        }
        let _ = writeln!(o);
    }
    // Ratios to each peer.
    let _ = writeln!(
        o,
        "### statesafe against each contender (median latency ratio; below 1 means statesafe is faster)\n"
    );
    let mut header = String::from("| statesafe | vs |");
    let mut rule = String::from("|---|---|");
    for s in &r.update {
        let _ = write!(header, " {} |", size_label(s.size));
        rule.push_str("---:|");
    }
    let _ = writeln!(o, "{header}\n{rule}");
    for ours in [
        Kind::StatesafeTyped,
        Kind::StatesafeValue,
        Kind::StatesafeLean,
    ] {
        for peer in Kind::UPDATE {
            if matches!(
                peer,
                Kind::StatesafeTyped | Kind::StatesafeValue | Kind::StatesafeLean
            ) {
                continue;
            }
            let _ = write!(o, "| {} | {} |", ours.label(), peer.label());
            for s in &r.update {
                let _ = write!(
                    o,
                    " {} |",
                    fmt_ratio(s.row(ours).median() / s.row(peer).median())
                );
            }
            let _ = writeln!(o);
        }
    }
    let _ = writeln!(o);
}

fn contended_section(o: &mut String, r: &Results) {
    let Some(c) = &r.contended else { return };
    let mut procs: Vec<usize> = c.cells.iter().map(|c| c.procs).collect();
    procs.sort_unstable();
    procs.dedup();
    let _ = writeln!(
        o,
        "## 2. Contended updates: processes incrementing one counter\n"
    );
    let _ = writeln!(
        o,
        "N processes (this binary, re-executed) increment the counter of one {}-byte \
         document for {:.1} s each, started together; the figure is the total increments \
         per second, median of {} rounds (contenders take turns in a fresh random order \
         each round), with the lowest and highest round in brackets: the spread shows how \
         much the shared disk's `fsync` latency moved during the run. After each window the \
         counter is checked: no increment was lost. All at equal durability (fsync of \
         data before the commit returns).\n",
        c.bytes,
        c.window.as_secs_f64(),
        c.rounds
    );
    for kind in contended::KINDS {
        let _ = writeln!(o, "- **{}**: {}.", kind.label(), contended::describes(kind));
    }
    let _ = writeln!(o);
    let mut header = String::from("| processes |");
    let mut rule = String::from("|---:|");
    for kind in contended::KINDS {
        let _ = write!(header, " {} |", kind.label());
        rule.push_str("---:|");
    }
    header.push_str(" statesafe vs floor | vs SQLite WAL | vs SQLite DELETE |");
    rule.push_str("---:|---:|---:|");
    let _ = writeln!(o, "{header}\n{rule}");
    for &p in &procs {
        let _ = write!(o, "| {p} |");
        for kind in contended::KINDS {
            match c.cell(kind, p) {
                Some(cell) => {
                    let lo = cell.rates.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = cell.rates.iter().copied().fold(0.0, f64::max);
                    let _ = write!(o, " **{:.0}**/s ({lo:.0}–{hi:.0}) |", cell.rate());
                }
                None => {
                    let _ = write!(o, " n/a |");
                }
            }
        }
        let ours = c
            .cell(Kind::StatesafeTyped, p)
            .map_or(f64::NAN, |c| c.rate());
        for peer in [Kind::Floor, Kind::SqliteWal, Kind::SqliteDelete] {
            let theirs = c.cell(peer, p).map_or(f64::NAN, |c| c.rate());
            let _ = write!(o, " {} |", fmt_ratio(ours / theirs));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o);
}

fn load_section(o: &mut String, r: &Results) {
    if r.load.is_empty() {
        return;
    }
    let _ = writeln!(o, "## 3. Load latency (read, parse, verify)\n");
    let _ = writeln!(
        o,
        "`Store::load` opens the file, reads it, reads the `user.statesafe` xattr, checks \
         the xxh3 checksum and generation, and parses. The baseline is `std::fs::read` + \
         `serde_json::from_slice` into the same type. Warm page cache; loaders interleaved \
         in rounds ({} loads per loader per round).\n",
        r.load.first().map_or(0, |l| l.ops_per_round)
    );
    let _ = writeln!(
        o,
        "| size | loader | median | p90 | vs bare read + parse |\n|---|---|---:|---:|---:|"
    );
    for l in &r.load {
        for row in &l.rows {
            let base = l.row(row.loader.baseline()).median();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                size_label(l.size),
                row.loader.label(),
                fmt_secs(row.median()),
                fmt_secs(row.p90()),
                if row.loader == row.loader.baseline() {
                    "1 (baseline)".to_string()
                } else {
                    fmt_ratio(row.median() / base)
                }
            );
        }
    }
    let _ = writeln!(o);
    let _ = Loader::ALL;
}

fn memory_section(o: &mut String, r: &Results) {
    if r.memory.is_empty() {
        return;
    }
    let _ = writeln!(o, "## 4. Peak memory of one update\n");
    let _ = writeln!(
        o,
        "Each measurement is a fresh child process: it first updates a small (1 KiB) file \
         the same way (so code pages, the lock record and the allocator are warm), then \
         resets its peak resident size (`echo 5 > /proc/self/clear_refs`), reads `VmRSS`, \
         performs the update of the measured document, and reads `VmHWM`. The figure is the peak minus the resident size just \
         before the update (median of the runs), and that as a multiple of the document \
         size. The floor reads the file, bumps the counter in the bytes, and writes them \
         durably (one copy of the document).\n"
    );
    let mut header = String::from("| size | document |");
    let mut rule = String::from("|---|---:|");
    for kind in memory::KINDS {
        let _ = write!(header, " {} |", kind.label());
        rule.push_str("---:|");
    }
    let _ = writeln!(o, "{header}\n{rule}");
    for m in &r.memory {
        let _ = write!(
            o,
            "| {} | {} |",
            size_label(m.size),
            fmt_bytes(m.bytes as f64)
        );
        for kind in memory::KINDS {
            let d = m.row(kind).delta();
            let _ = write!(o, " {} ({}) |", fmt_bytes(d), fmt_ratio(d / m.bytes as f64));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "\nAt 1 KiB the figures are dominated by page granularity (4 KiB) and the \
         allocator, not by the document.\n"
    );
}

fn cli_section(o: &mut String, r: &Results) {
    let Some(cli) = &r.cli else { return };
    let _ = writeln!(o, "## 5. Whole-process CLI timings\n");
    match cli {
        CliResult::Skipped(why) => {
            let _ = writeln!(o, "**Skipped in this run:** {why}.\n");
        }
        CliResult::Ran {
            hyperfine,
            bin,
            runs,
            rounds,
            rows,
        } => {
            let _ = writeln!(
                o,
                "{hyperfine}, {runs} runs per command (3 warm-up) in each of {rounds} \
                 round(s), the command order reversed every other round; medians of the \
                 rounds' medians. The 1 KiB benchmark document; `statesafe` is `{}`. Commands that need no shell run without one (`hyperfine -N`); the jq pipeline runs through `sh -c`, and hyperfine subtracts its estimate of the shell's cost. `sync` runs (untimed) before every timed run, so that no command pays for another's writeback (the jq pipeline never syncs). The jq pipeline \
                 is not crash-safe (no fsync) and not concurrency-safe (no lock).\n",
                bin.display()
            );
            let _ = writeln!(o, "| command | median |\n|---|---:|");
            for row in rows {
                let _ = writeln!(o, "| `{}` | {} |", row.shown, fmt_secs(row.median()));
            }
            let find = |l: &str| rows.iter().find(|x| x.label == l).map(|x| x.median());
            if let (Some(a), Some(b), Some(c), Some(d)) = (
                find("statesafe get"),
                find("jq . (read only)"),
                find("statesafe update"),
                find("jq + mv (unsafe)"),
            ) {
                let _ = writeln!(
                    o,
                    "\n`statesafe get` is {} of `jq .`; `statesafe update` is {} of the jq \
                     pipeline.\n",
                    fmt_ratio(a / b),
                    fmt_ratio(c / d)
                );
            }
        }
    }
}

fn large_cli_section(o: &mut String, r: &Results) {
    let Some(large) = &r.large_cli else { return };
    let _ = writeln!(o, "## 6. Large documents through the CLI\n");
    let LargeResult::Ran {
        bin,
        runs,
        baseline,
        jq_baseline,
        jq,
        sizes,
    } = large
    else {
        if let LargeResult::Skipped(why) = large {
            let _ = writeln!(o, "**Skipped in this run:** {why}.\n");
        }
        return;
    };
    let _ = writeln!(
        o,
        "Issue 12, item 7. Whole processes on compact documents (the benchmark records on \
         one line, as statesafe keeps a compact file compact), {runs} run(s) per command, \
         medians. Time is wall time from spawn to exit; *peak* is the process's peak \
         resident size (`ru_maxrss` from `wait4(2)`, as `/usr/bin/time` reports it, \
         taken by a small parent process of its own, since at `exec` the kernel also \
         counts the peak of the image being replaced; for the jq pipeline, that of \
         `sh` and what it waited for). *x doc* is \
         the peak beyond what the same program holds for a 1 KiB file (`statesafe get`: \
         {}; `jq .n`: {}), as a multiple of the document. `statesafe update` uses `.n += 1`, so that every run commits a \
         new generation (`.n = 1` would commit once, then find nothing to write); it \
         syncs, keeps a backup and records the history, while the jq pipeline does \
         none of that (and holds no lock). `diff` prints the patch of the last commit \
         (the document at the generation before the current one, from its backup, \
         against the current one). `statesafe` is `{}`.\n",
        fmt_bytes(*baseline),
        fmt_bytes(*jq_baseline),
        bin.display()
    );
    let _ = writeln!(
        o,
        "Targets: `update` peak memory at most 8x the document; `get FILE POINTER` \
         without building the document's tree, judged as a peak of at most 2x the \
         document (the bytes read, and the value picked).\n"
    );
    let _ = writeln!(
        o,
        "| size | document | command | time | peak | x doc |\n|---|---:|---|---:|---:|---:|"
    );
    for s in sizes {
        for row in &s.rows {
            let _ = writeln!(
                o,
                "| {} | {} | `{}` | {} | {} | {} |",
                size_label(s.size),
                fmt_bytes(s.bytes as f64),
                row.shown,
                fmt_secs(row.secs()),
                fmt_bytes(row.peak()),
                fmt_ratio(
                    (row.peak()
                        - if row.label.starts_with("jq") {
                            jq_baseline
                        } else {
                            baseline
                        })
                    .max(0.0)
                        / s.bytes as f64
                )
            );
        }
    }
    if !jq {
        let _ = writeln!(o, "\n`jq` is not installed: no jq rows in this run.");
    }
    let _ = writeln!(o);
}
