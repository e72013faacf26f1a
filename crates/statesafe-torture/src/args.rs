//! The options of `statesafe torture`.

use std::path::PathBuf;
use std::time::Duration;

/// Options of the `statesafe torture [DIR]` demonstration.
#[derive(Debug, Clone, clap::Args)]
pub struct TortureArgs {
    /// An existing directory to run in (your own filesystem or network mount): the run
    /// works in a fresh subdirectory of it, removed afterwards. Default: the current
    /// directory.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep the run's files (the naive and the statesafe state files and their
    /// sidecars) instead of removing them; their directory is printed.
    #[arg(long)]
    pub keep: bool,

    /// How long to torture each approach (both run side by side); more than 0.
    #[arg(long, default_value = "20s", value_parser = parse_run_time)]
    pub duration: Duration,

    /// Writer processes per approach, all killed together at a random moment.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub writers: u32,

    /// Reader processes per approach, reading the file continuously.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub readers: u32,

    /// Size of the state document, in bytes (suffixes KiB and MiB allowed).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    pub doc_size: usize,

    /// Longest wait between a round's first acknowledged write and the kill.
    #[arg(long, default_value = "25ms", value_parser = humantime::parse_duration)]
    pub max_kill_delay: Duration,

    /// The format of statesafe's file: `plain`, `sealed`, or `journal` (each commit
    /// appends one record to a journal and flushes it once; see `docs/design.md`).
    /// In `sealed` and `journal` mode the file is read through statesafe, as a program
    /// must read it, after each kill and by the readers.
    #[arg(long, value_enum, default_value_t = DemoFormat::Plain)]
    pub format: DemoFormat,

    /// Print the results as one JSON object on stdout instead of a table. Not an
    /// option of its own: the host command sets it from its global `--json`.
    #[arg(skip)]
    pub json: bool,
}

/// The format of statesafe's state file in the demonstration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoFormat {
    /// Plain JSON, replaced whole by each commit (temp file, fsync, rename).
    Plain,
    /// A JSON envelope whose checksum covers every byte.
    Sealed,
    /// A plain snapshot plus a journal: each commit appends one record and flushes once.
    Journal,
}

impl DemoFormat {
    /// The library's format.
    pub fn format(self) -> statesafe::Format {
        match self {
            DemoFormat::Plain => statesafe::Format::Plain,
            DemoFormat::Sealed => statesafe::Format::Sealed,
            DemoFormat::Journal => statesafe::Format::Journal,
        }
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        self.format().name()
    }

    /// Whether the state file itself is the newest document (else only statesafe's
    /// read shows it: a sealed envelope, or a snapshot plus a journal).
    pub fn raw_readable(self) -> bool {
        self == DemoFormat::Plain
    }
}

/// How a writer updates the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Approach {
    /// Truncate the file and write the new document in place (`open(path, 'w')`,
    /// `json.dump`), reading it back first; a document that does not parse starts
    /// afresh from defaults, as the programs in the wild do.
    Naive,
    /// `statesafe::Store::update`: lock, read, modify, write a temporary file, fsync,
    /// rename, fsync the directory, unlock.
    Statesafe,
}

impl Approach {
    /// The name used in tables and directories.
    pub fn name(self) -> &'static str {
        match self {
            Approach::Naive => "naive",
            Approach::Statesafe => "statesafe",
        }
    }
}

/// Parses a duration that is more than zero: a zero-length run tests nothing.
fn parse_run_time(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: `20s`, `2m`)"))?;
    if d.is_zero() {
        return Err(
            "must be more than 0: a run of no time kills no writer (for example `20s`)".into(),
        );
    }
    Ok(d)
}

/// Parses `65536`, `64KiB`, `64K`, `1MiB`, `1M`.
fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |at| s.split_at(at));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64KiB, 1MiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit `{other}` (use KiB or MiB)")),
    };
    let size = n * scale;
    if !(64..=64 * 1024 * 1024).contains(&size) {
        return Err("the document size must be between 64 bytes and 64 MiB".into());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_takes_some_time() {
        assert_eq!(parse_run_time("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_run_time("0s").unwrap_err().contains("more than 0"));
        assert!(parse_run_time("0").is_err());
        assert!(parse_run_time("soon").is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("12").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
