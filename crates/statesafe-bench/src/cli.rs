//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use crate::contenders::Kind;

/// Benchmarks of statesafe against the bare system-call floor and its peers.
///
/// Writes a Markdown report and an SVG chart. Run it with `--release`.
#[derive(Debug, Parser)]
#[command(name = "statesafe-bench", version)]
pub struct Args {
    /// Internal: the child processes of the contention and memory sections.
    #[command(subcommand)]
    pub child: Option<Child>,

    /// Short run (under a minute): fewer rounds, shorter contention windows.
    #[arg(long)]
    pub quick: bool,

    /// Directory to benchmark in (it chooses the filesystem). Default: a temporary
    /// directory on the repository's filesystem.
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// Where to write the Markdown report.
    #[arg(long, default_value_os_t = crate::run::workspace_root().join("docs/benchmarks.md"))]
    pub out_md: PathBuf,

    /// Where to write the SVG chart.
    #[arg(long, default_value_os_t = crate::run::workspace_root().join("docs/benchmarks.svg"))]
    pub out_svg: PathBuf,

    /// Also measure a 100 MiB document (and 85 MiB in the large-document CLI section).
    #[arg(long)]
    pub large: bool,

    /// Document sizes, comma-separated, with K/M suffixes (KiB, MiB).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "1K,64K,1M,16M")]
    pub sizes: Vec<usize>,

    /// Process counts for the contention section, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub procs: Vec<usize>,

    /// Run only these sections (default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Section>,

    /// The `statesafe` binary for the CLI section (default: build it with cargo).
    #[arg(long)]
    pub statesafe_bin: Option<PathBuf>,
}

/// The sections of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Durable update latency and throughput.
    Update,
    /// Many processes incrementing one counter.
    Contended,
    /// Load latency.
    Load,
    /// Peak memory of one update.
    Memory,
    /// Whole-process CLI timings with hyperfine.
    Cli,
    /// Large documents through the CLI: time and peak memory.
    LargeCli,
    /// Contended increments on a throwaway local PostgreSQL server, statesafe vs a
    /// bare `SELECT … FOR UPDATE; UPDATE; COMMIT` (needs Debian's `postgresql`).
    Pg,
    /// Journal mode (issue 16): commits against the whole-file commit, the floor and
    /// the physical limit; contended increments against SQLite WAL; group commit.
    Journal,
}

/// The hidden subcommand.
#[derive(Debug, Subcommand)]
pub enum Child {
    /// Internal: run one child process of a measurement.
    #[command(hide = true)]
    Child(ChildArgs),
}

/// What a child process measures.
#[derive(Debug, ClapArgs)]
pub struct ChildArgs {
    /// The measurement.
    #[command(subcommand)]
    pub what: ChildWhat,
}

/// The child measurements.
#[derive(Debug, Subcommand)]
pub enum ChildWhat {
    /// Increment the counter in FILE until the window closes; print the count.
    Contend {
        /// Contender.
        #[arg(long)]
        kind: Kind,
        /// The shared file.
        #[arg(long)]
        file: PathBuf,
        /// Length of the window in milliseconds, from the parent's "go".
        #[arg(long)]
        millis: u64,
    },
    /// OPS updates of FILE (created with a SIZE-byte document) as KIND does them,
    /// for profilers: `perf record`, `strace -c`, `valgrind`.
    Profile {
        /// Contender.
        #[arg(long)]
        kind: Kind,
        /// A path in the directory to use (each contender names its own file there).
        #[arg(long)]
        file: PathBuf,
        /// Document size (K/M suffixes).
        #[arg(long, value_parser = parse_size, default_value = "16M")]
        size: usize,
        /// Number of updates.
        #[arg(long, default_value_t = 10)]
        ops: usize,
    },
    /// Run CMD with stdout discarded; print `rusage STATUS MAXRSS_KIB SECONDS`.
    /// A small process of its own, so that CMD's peak resident size is CMD's: a
    /// child's `ru_maxrss` also counts the memory of the process it was forked from
    /// (at `exec`, the kernel records the old image's peak), which for the
    /// benchmark's main process includes the documents it generated.
    Rusage {
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<std::ffi::OsString>,
    },
    /// The journal section's contended part alone, for profilers and quick
    /// comparisons: PROCS processes incrementing one counter for MILLIS, statesafe's
    /// journal mode and SQLite WAL alternating, ROUNDS times; prints each pair's rates.
    Pair {
        /// A directory to make the files in.
        #[arg(long)]
        dir: PathBuf,
        /// Processes.
        #[arg(long, default_value_t = 8)]
        procs: usize,
        /// Window in milliseconds.
        #[arg(long, default_value_t = 1000)]
        millis: u64,
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Measure statesafe's journal mode only.
        #[arg(long)]
        journal_only: bool,
        /// Let the journal-mode file settle 3.5 s before timing, as the journal
        /// section does.
        #[arg(long)]
        settle: bool,
    },
    /// The journal section's group-commit part alone, for profilers: THREADS threads
    /// of one process sharing a store in journal mode, each applying one-key patches
    /// for MILLIS, ROUNDS times, alternating with one thread; prints each pair's rates.
    Group {
        /// A directory to make the file in.
        #[arg(long)]
        dir: PathBuf,
        /// Threads.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Window in milliseconds.
        #[arg(long, default_value_t = 1000)]
        millis: u64,
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Measure THREADS threads only (no one-thread rounds).
        #[arg(long)]
        threads_only: bool,
    },
    /// The PostgreSQL section's contenders alone, for profilers (`perf record -a`
    /// sees one contender's server work): CLIENTS threads increment one counter on
    /// the server at BASE (a database URL, `postgres://USER@HOST:PORT/DB`, whose
    /// tables `bench*` it replaces) for MILLIS, ROUNDS times; prints each round's rate.
    /// `STATESAFE_BENCH_PG_URL_EXTRA` is appended to the state's URL (for example
    /// `&prepare=sql`), to compare a URL option side by side.
    Pg {
        /// The database, as a URL without `?state=`.
        #[arg(long)]
        base: String,
        /// Which contender: `statesafe`, `bare` or `both` (alternating).
        #[arg(long, default_value = "both")]
        who: String,
        /// Threads, each with its own connection.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Window in milliseconds.
        #[arg(long, default_value_t = 2000)]
        millis: u64,
        /// Rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One update of FILE; print the resident baseline and the peak, in bytes.
    Mem {
        /// Contender.
        #[arg(long)]
        kind: Kind,
        /// The file.
        #[arg(long)]
        file: PathBuf,
    },
}

/// Parses `1K`, `64K`, `16M`, `100M` or a plain byte count.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 1K, 64K, 16M"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("unknown unit in `{s}` (use K or M)")),
    };
    if n == 0 {
        return Err("a size must be positive".into());
    }
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3X").is_err());
        assert!(parse_size("K").is_err());
    }
}
