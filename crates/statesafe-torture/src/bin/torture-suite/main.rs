//! `torture-suite`: the crash-consistency layers of statesafe, run by CI
//! (`scripts/test.d/40-torture.sh`, `scripts/test.d/50-mutation.sh`).
//!
//! Each layer prints a summary line `LAYER: crash states checked: N, violations: V`
//! and exits non-zero on any violation. See `docs/torture.md`.

mod adversarial;
mod check;
mod driver;
mod fs;
mod inject;
mod order;
mod powerloss;
mod run;
mod sidecar_removal;
mod snapshot;
mod strace;
mod stress;
mod tally;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "torture-suite",
    about = "statesafe's crash and fault torture layers"
)]
enum Cmd {
    /// The side-by-side demonstration (what `statesafe torture` runs).
    Demo {
        #[command(flatten)]
        args: statesafe_torture::TortureArgs,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A child process of the demonstration or of the stress layer (internal).
    #[command(hide = true)]
    TortureChild {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Layer a: SIGKILL at every system call of create, replace and update.
    Kill {
        #[command(flatten)]
        common: Common,
    },
    /// Layer b: ENOSPC, EIO, EDQUOT, EROFS, EINTR, EMFILE, EACCES at every I/O system
    /// call, once and persistently.
    Errors {
        #[command(flatten)]
        common: Common,
        /// The errors to inject.
        #[arg(long, value_delimiter = ',', default_values_t = inject::ERRNOS.iter().map(|s| s.to_string()))]
        errnos: Vec<String>,
    },
    /// The system-call order check (ALICE-style): fsync before rename, directory fsync
    /// before the acknowledgement, lock held, temp names never reused.
    Order {
        #[command(flatten)]
        common: Common,
        /// Fake every fsync as libeatmydata does (strace retval=0): the check must FAIL.
        #[arg(long)]
        eatmydata: bool,
    },
    /// Layer c in journal mode: trace the operation's system calls, replay them into a
    /// model of what is durable, and check every state a power loss may leave (torn
    /// appends, lost flushes, directory changes cut short) through the library.
    Powerloss {
        /// Where to make scratch directories.
        #[arg(long, env = "STATESAFE_TEST_DIR")]
        dir: Option<PathBuf>,
        /// Operations to trace.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = powerloss::OPS.to_vec())]
        ops: Vec<driver::Op>,
        /// A label for the summary line.
        #[arg(long)]
        label: Option<String>,
    },
    /// Layer e: many writers and readers, random SIGKILL, exclusion watched in
    /// /proc/locks, no acknowledged update lost.
    Stress {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 6)]
        writers: usize,
        #[arg(long, default_value_t = 2)]
        readers: usize,
        #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
    },
    /// Layer d: the kill and error layers on loop-mounted ext4 (data=ordered, and
    /// noauto_da_alloc), xfs, btrfs and tmpfs.
    Fs {
        #[command(flatten)]
        common: Common,
        /// The errors injected on each filesystem (a subset keeps CI short).
        #[arg(long, value_delimiter = ',', default_values_t = ["ENOSPC".to_string(), "EIO".to_string()])]
        errnos: Vec<String>,
        /// Journal-mode operations run on each filesystem too, by the kill layer at
        /// the calls that change a file (`--at-changes`), which keeps the pass to a
        /// few dozen crash points per filesystem.
        #[arg(long, value_enum, value_delimiter = ',')]
        journal_ops: Vec<driver::Op>,
    },
    /// Issue 10's attacks 1-8, by two unprivileged users and root in a sticky shared
    /// directory, with fs.protected_symlinks 0 and 1: every one must be refused or
    /// harmless. Needs root; otherwise it says SKIPPED and exits 77.
    Adversarial {
        #[command(flatten)]
        attacked: Attacked,
    },
    /// Concurrent `statesafe update`s while a loop removes the sidecar (or its lock
    /// file): the counter must equal the number of successful updates.
    SidecarRemoval {
        #[command(flatten)]
        attacked: Attacked,
        /// What the loop removes.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [sidecar_removal::Target::Sidecar, sidecar_removal::Target::Lock])]
        remove: Vec<sidecar_removal::Target>,
        /// Concurrent updating processes.
        #[arg(long, default_value_t = 6)]
        processes: usize,
        /// Updates each process runs, one after the other.
        #[arg(long, default_value_t = 200)]
        updates: usize,
        /// How often the loop removes.
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Runs of each removal target.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// One operation on a prepared file, for strace (internal).
    #[command(hide = true)]
    Driver {
        #[arg(long, value_enum)]
        op: driver::Op,
        #[arg(long)]
        file: PathBuf,
        /// Wait for stdin to close before exiting.
        #[arg(long)]
        hold: bool,
    },
    /// Prepare a directory for the driver (internal, for debugging).
    #[command(hide = true)]
    Prepare {
        #[arg(long, value_enum)]
        op: driver::Op,
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Options every layer takes.
#[derive(Debug, Clone, clap::Args)]
struct Common {
    /// Where to make scratch directories (a tmpfs or loop mount to test another
    /// filesystem). Default: the system temporary directory.
    #[arg(long, env = "STATESAFE_TEST_DIR")]
    dir: Option<PathBuf>,
    /// Operations to torture.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [driver::Op::Create, driver::Op::Replace, driver::Op::Update, driver::Op::Recover])]
    ops: Vec<driver::Op>,
    /// Injection runs in parallel.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// A label for the summary line (for example the filesystem).
    #[arg(long)]
    label: Option<String>,
    /// Kill layer: kill only before the system calls that change a file or make a
    /// change durable, and at the acknowledgement (the files between two such calls
    /// are the same; the checks of a live process holding the lock are what is left
    /// out). For the real-filesystem layer's journal pass and the mutation check.
    #[arg(long)]
    at_changes: bool,
}

/// Options of the layers that attack the `statesafe` binary from outside.
#[derive(Debug, Clone, clap::Args)]
struct Attacked {
    /// The `statesafe` binary to attack. Default: the one built next to torture-suite.
    #[arg(long)]
    statesafe: Option<PathBuf>,
    /// Where to make the scratch directory. Default: the system temporary directory.
    #[arg(long, env = "STATESAFE_TEST_DIR")]
    dir: Option<PathBuf>,
}

impl Attacked {
    fn statesafe(&self) -> Result<PathBuf, String> {
        let bin = match &self.statesafe {
            Some(bin) => bin.clone(),
            None => exe()?.with_file_name("statesafe"),
        };
        if bin.is_file() {
            // Absolute: the commands run in other directories.
            std::fs::canonicalize(&bin)
                .map_err(|e| format!("cannot resolve `{}`: {e}", bin.display()))
        } else {
            Err(format!(
                "no statesafe binary at `{}` (build it with `cargo build --release -p statesafe-cli`, or pass --statesafe)",
                bin.display()
            ))
        }
    }
}

/// A fresh scratch directory in `dir`, or in the system temporary directory.
fn scratch(dir: Option<&std::path::Path>) -> Result<tempfile::TempDir, String> {
    let parent = dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
    tempfile::Builder::new()
        .prefix("statesafe-torture-")
        .tempdir_in(&parent)
        .map_err(|e| {
            format!(
                "cannot make a scratch directory in `{}`: {e}",
                parent.display()
            )
        })
}

impl Common {
    fn scratch(&self) -> Result<tempfile::TempDir, String> {
        scratch(self.dir.as_deref())
    }

    fn layer(&self, name: &str) -> String {
        match &self.label {
            Some(label) => format!("{name} [{label}]"),
            None => name.to_string(),
        }
    }
}

fn exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))
}

/// Runs a layer, prints its summary, and turns the result into an exit status.
fn finish(layer: &str, what: &str, tally: &tally::Tally, result: Result<(), String>) -> ExitCode {
    tally.print(layer, what);
    match result {
        Err(e) => {
            println!("{layer}: HARNESS ERROR: {e}");
            ExitCode::from(2)
        }
        Ok(()) if tally.violations() > 0 => ExitCode::FAILURE,
        Ok(()) => ExitCode::SUCCESS,
    }
}

fn injection(common: &Common, errnos: Vec<&'static str>, kill: bool) -> ExitCode {
    let layer = common.layer(if kill { "kill" } else { "errors" });
    let tally = tally::Tally::default();
    let result = (|| {
        let exe = exe()?;
        let scratch = common.scratch()?;
        let cfg = inject::Injection {
            exe: &exe,
            base: scratch.path(),
            ops: &common.ops,
            errnos: &errnos,
            jobs: common.jobs,
            at_changes: common.at_changes,
        };
        if kill {
            inject::kill_layer(&cfg, &tally)
        } else {
            inject::error_layer(&cfg, &tally)
        }
    })();
    finish(&layer, "crash states", &tally, result)
}

fn known_errnos(names: &[String]) -> Result<Vec<&'static str>, ExitCode> {
    let mut known = Vec::new();
    for e in names {
        match inject::ERRNOS.iter().find(|k| k.eq_ignore_ascii_case(e)) {
            Some(k) => known.push(*k),
            None => {
                eprintln!(
                    "error: unknown errno `{e}` (known: {})",
                    inject::ERRNOS.join(", ")
                );
                return Err(ExitCode::from(2));
            }
        }
    }
    Ok(known)
}

/// Layer d: mounts each filesystem and runs the kill and error layers on it.
fn filesystems(common: &Common, errnos: Vec<&'static str>, journal_ops: &[driver::Op]) -> ExitCode {
    let scratch = match common.scratch() {
        Ok(s) => s,
        Err(e) => {
            println!("fs: HARNESS ERROR: {e}");
            return ExitCode::from(2);
        }
    };
    let mut worst = ExitCode::SUCCESS;
    let mut skipped = 0;
    for fs in fs::FILESYSTEMS {
        let mount = match fs::mount(fs, scratch.path()) {
            Ok(m) => m,
            Err(reason) => {
                println!("fs [{}]: SKIPPED (not run, not passed): {reason}", fs.label);
                skipped += 1;
                continue;
            }
        };
        let on_fs = Common {
            dir: Some(mount.point.clone()),
            label: Some(fs.label.to_string()),
            ..common.clone()
        };
        for (kill, errnos) in [(true, Vec::new()), (false, errnos.clone())] {
            let code = injection(&on_fs, errnos, kill);
            if code != ExitCode::SUCCESS {
                worst = code;
            }
        }
        if !journal_ops.is_empty() {
            let journal = Common {
                ops: journal_ops.to_vec(),
                at_changes: true,
                label: Some(format!("{} journal", fs.label)),
                ..on_fs.clone()
            };
            let code = injection(&journal, Vec::new(), true);
            if code != ExitCode::SUCCESS {
                worst = code;
            }
        }
        drop(mount);
    }
    if skipped > 0 {
        println!(
            "fs: {skipped} of {} filesystems SKIPPED",
            fs::FILESYSTEMS.len()
        );
    }
    worst
}

fn main() -> ExitCode {
    match Cmd::parse() {
        Cmd::Order { common, eatmydata } => {
            let layer = common.layer(if eatmydata {
                "order (eatmydata)"
            } else {
                "order"
            });
            let tally = tally::Tally::default();
            let result = (|| {
                let scratch = common.scratch()?;
                order::layer(&exe()?, scratch.path(), eatmydata, &tally)
            })();
            finish(&layer, "commits", &tally, result)
        }
        Cmd::Stress {
            common,
            writers,
            readers,
            duration,
        } => {
            let layer = common.layer("stress");
            let tally = tally::Tally::default();
            let result = (|| {
                let scratch = common.scratch()?;
                let exe = exe()?;
                let cfg = stress::Stress {
                    exe: &exe,
                    base: scratch.path(),
                    writers: writers.max(1),
                    readers,
                    duration,
                };
                stress::layer(&cfg, &tally)
            })();
            finish(&layer, "crash states", &tally, result)
        }
        Cmd::Adversarial { attacked } => {
            if let Some(why) = adversarial::cannot_run() {
                println!("adversarial: SKIPPED (not run, not passed): {why}");
                return ExitCode::from(adversarial::SKIPPED);
            }
            let tally = tally::Tally::default();
            let result = (|| {
                let bin = attacked.statesafe()?;
                let scratch = scratch(attacked.dir.as_deref())?;
                adversarial::layer(&bin, scratch.path(), &tally)
            })();
            finish("adversarial", "crash states", &tally, result)
        }
        Cmd::SidecarRemoval {
            attacked,
            remove,
            processes,
            updates,
            interval,
            rounds,
        } => {
            let tally = tally::Tally::default();
            let result = (|| {
                let bin = attacked.statesafe()?;
                let scratch = scratch(attacked.dir.as_deref())?;
                let cfg = sidecar_removal::Config {
                    statesafe: &bin,
                    base: scratch.path(),
                    targets: &remove,
                    processes: processes.max(1),
                    updates,
                    interval,
                    rounds,
                };
                sidecar_removal::layer(&cfg, &tally)
            })();
            finish("sidecar-removal", "crash states", &tally, result)
        }
        Cmd::Powerloss { dir, ops, label } => {
            let layer = match label {
                Some(l) => format!("powerloss [{l}]"),
                None => "powerloss".to_string(),
            };
            let tally = tally::Tally::default();
            let result = (|| {
                // The files are a model's, so the filesystem under them does not
                // matter: a tmpfs when there is one (no real flush on each check).
                let shm = std::path::Path::new("/dev/shm");
                let dir = dir.or_else(|| {
                    rustix::fs::access(shm, rustix::fs::Access::WRITE_OK)
                        .is_ok()
                        .then(|| shm.to_path_buf())
                });
                let scratch = scratch(dir.as_deref())?;
                let cfg = powerloss::PowerLoss {
                    exe: &exe()?,
                    base: scratch.path(),
                    ops: &ops,
                };
                powerloss::layer(&cfg, &tally)
            })();
            finish(&layer, "crash states", &tally, result)
        }
        Cmd::Kill { common } => injection(&common, Vec::new(), true),
        Cmd::Errors { common, errnos } => match known_errnos(&errnos) {
            Ok(known) => injection(&common, known, false),
            Err(code) => code,
        },
        Cmd::Fs {
            common,
            errnos,
            journal_ops,
        } => match known_errnos(&errnos) {
            Ok(known) => filesystems(&common, known, &journal_ops),
            Err(code) => code,
        },
        Cmd::Demo { args, json } => {
            statesafe_torture::run(&statesafe_torture::TortureArgs { json, ..args })
        }
        Cmd::TortureChild { args } => statesafe_torture::child_main(args),
        Cmd::Driver { op, file, hold } => driver::main(op, &file, hold),
        Cmd::Prepare { op, dir } => match driver::prepare(&dir, op) {
            Ok(file) => {
                println!("{}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
