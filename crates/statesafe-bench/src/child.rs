//! The child processes: this binary re-executed with the hidden `child` subcommand.
//!
//! - `contend`: set up, print `ready`, wait for a line on stdin (the parent's "go"),
//!   then increment the shared counter until the window closes and print
//!   `done COUNT NANOS`.
//! - `mem`: set up, reset the peak resident size, do one update, print
//!   `mem BASELINE PEAK` in bytes.
//! - `rusage`: run a command, print `rusage STATUS MAXRSS_KIB SECONDS`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Result;
use crate::cli::{ChildArgs, ChildWhat};
use crate::contenders::{self, Kind};
use crate::doc::{self, Doc};

/// Runs the child measurement named on the command line.
pub fn run(args: ChildArgs) -> Result<()> {
    match args.what {
        ChildWhat::Contend { kind, file, millis } => contend(kind, &file, millis),
        ChildWhat::Mem { kind, file } => mem(kind, &file),
        ChildWhat::Pair {
            dir,
            procs,
            millis,
            rounds,
            journal_only,
            settle,
        } => pair(&dir, procs, millis, rounds, journal_only, settle),
        ChildWhat::Group {
            dir,
            threads,
            millis,
            rounds,
            threads_only,
        } => crate::journal::group(&dir, threads, millis, rounds, threads_only),
        ChildWhat::Pg {
            base,
            who,
            clients,
            millis,
            rounds,
        } => crate::pg::child(&base, &who, clients, Duration::from_millis(millis), rounds),
        ChildWhat::Rusage { cmd } => rusage(&cmd),
        ChildWhat::Profile {
            kind,
            file,
            size,
            ops,
        } => profile(kind, &file, size, ops),
    }
}

/// Runs `cmd` (stdout discarded, stderr inherited) and prints its wait status, peak
/// resident size in KiB and wall time.
fn rusage(cmd: &[std::ffi::OsString]) -> Result<()> {
    let started = Instant::now();
    let child = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let (status, maxrss) = crate::large_cli::wait4(child.id())?;
    let secs = started.elapsed().as_secs_f64();
    println!("rusage {status} {maxrss} {secs}");
    Ok(())
}

/// One read-increment-write of the shared counter, correct under concurrency.
enum Incrementer {
    Typed(statesafe::Store<Doc>),
    Value(statesafe::Store<serde_json::Value>),
    Sqlite(rusqlite::Connection),
    Floor {
        lock: File,
        dir: File,
        path: PathBuf,
        temp: PathBuf,
    },
}

impl Incrementer {
    fn new(kind: Kind, file: &Path) -> Result<Incrementer> {
        Ok(match kind {
            Kind::StatesafeTyped => Incrementer::Typed(statesafe::Store::open(file)?),
            Kind::StatesafeLean => Incrementer::Typed(contenders::lean_store(file)?),
            // The file's settings say journal mode.
            Kind::StatesafeJournal => Incrementer::Typed(statesafe::Store::open(file)?),
            Kind::StatesafeValue => Incrementer::Value(statesafe::Store::open(file)?),
            Kind::SqliteWal | Kind::SqliteDelete => {
                Incrementer::Sqlite(contenders::sqlite_open(kind, file)?)
            }
            Kind::Floor => {
                let parent = file.parent().expect("invariant: a file in a directory");
                Incrementer::Floor {
                    lock: OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(parent.join("floor.lock"))?,
                    dir: File::open(parent)?,
                    path: file.to_path_buf(),
                    temp: parent.join(format!(".floor.tmp-{}", std::process::id())),
                }
            }
            other => return Err(format!("{} has no contended form", other.label()).into()),
        })
    }

    fn op(&mut self) -> Result<()> {
        match self {
            Incrementer::Typed(store) => {
                store.update(|d| d.n += 1)?;
            }
            Incrementer::Value(store) => {
                store.update(|v| {
                    let n = v["n"].as_u64().expect("invariant: the counter is a number");
                    v["n"] = (n + 1).into();
                })?;
            }
            Incrementer::Sqlite(conn) => {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut body: Vec<u8> =
                    tx.query_row("SELECT body FROM doc WHERE id = 1", [], |r| r.get(0))?;
                doc::bump_counter(&mut body).ok_or("no counter in the SQLite row")?;
                tx.execute("UPDATE doc SET body = ?1 WHERE id = 1", [&body[..]])?;
                tx.commit()?;
            }
            Incrementer::Floor {
                lock,
                dir,
                path,
                temp,
            } => {
                lock.lock()?;
                let result = (|| -> Result<()> {
                    let mut bytes = fs::read(&*path)?;
                    doc::bump_counter(&mut bytes).ok_or("no counter in the file")?;
                    contenders::durable_replace(dir, temp, path, &bytes)
                })();
                lock.unlock()?;
                result?;
            }
        }
        Ok(())
    }
}

fn contend(kind: Kind, file: &Path, millis: u64) -> Result<()> {
    let mut inc = Incrementer::new(kind, file)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    let window = Duration::from_millis(millis);
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < window {
        inc.op()?;
        count += 1;
    }
    writeln!(out, "done {count} {}", start.elapsed().as_nanos())?;
    Ok(())
}

fn pair(
    dir: &Path,
    procs: usize,
    millis: u64,
    rounds: usize,
    journal_only: bool,
    settle: bool,
) -> Result<()> {
    let window = Duration::from_millis(millis);
    let kinds: &[Kind] = if journal_only {
        &[Kind::StatesafeJournal]
    } else {
        &[Kind::StatesafeJournal, Kind::SqliteWal]
    };
    for round in 0..rounds {
        let mut rates = [0.0; 2];
        for i in crate::stats::round_order(round, kinds.len()) {
            let sub = dir.join(format!("{:?}", kinds[i]));
            let settle = if settle && kinds[i] == Kind::StatesafeJournal {
                Duration::from_millis(3500)
            } else {
                Duration::ZERO
            };
            rates[i] = crate::contended::measure_fresh(kinds[i], &sub, procs, window, settle)?;
        }
        if journal_only {
            println!("round {}: journal {:.0}/s", round + 1, rates[0]);
        } else {
            println!(
                "round {}: journal {:.0}/s, SQLite WAL {:.0}/s, {:.2}x",
                round + 1,
                rates[0],
                rates[1],
                rates[0] / rates[1]
            );
        }
    }
    Ok(())
}

fn profile(kind: Kind, file: &Path, size: usize, ops: usize) -> Result<()> {
    let dir = file.parent().expect("invariant: a file in a directory");
    let mut u = contenders::setup(kind, dir, &doc::make(size))?;
    let start = Instant::now();
    for _ in 0..ops {
        u.op()?;
    }
    let each = start.elapsed() / ops.max(1) as u32;
    println!("{} x {ops}: {each:?} per update", kind.label());
    Ok(())
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
pub fn proc_status_bytes(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

fn mem(kind: Kind, file: &Path) -> Result<()> {
    // One update of a small file first, so that code pages, the lock record and the
    // allocator's bookkeeping are in place; the measured update of `file` then shows
    // what grows with the document. (Warming up on `file` itself would hide its
    // peak: freed heap pages stay resident and the reset peak would start above them.)
    let parent = file.parent().expect("invariant: a file in a directory");
    let warm = parent.join(format!("warm-{}.json", std::process::id()));
    let small = doc::make(1024);
    match kind {
        Kind::StatesafeTyped | Kind::StatesafeValue | Kind::StatesafeLean => {
            statesafe::Store::<Doc>::open(&warm)?.replace(small)?;
        }
        Kind::Floor => {
            let template = doc::Template::new(&small);
            contenders::durable_replace(
                &File::open(parent)?,
                &parent.join(".warm.tmp"),
                &warm,
                &template.bytes,
            )?;
        }
        other => return Err(format!("{} has no memory measurement", other.label()).into()),
    }
    mem_update(kind, &warm)?;
    // Reset the peak ("5" resets VmHWM to the current VmRSS, Linux 4.0+).
    fs::write("/proc/self/clear_refs", "5")?;
    let baseline = proc_status_bytes("VmRSS")?;
    mem_update(kind, file)?;
    let peak = proc_status_bytes("VmHWM")?;
    println!("mem {baseline} {peak}");
    Ok(())
}

/// One update of `file` as `kind` does it, opening the store afresh.
fn mem_update(kind: Kind, file: &Path) -> Result<()> {
    match kind {
        Kind::StatesafeTyped => {
            statesafe::Store::<Doc>::open(file)?.update(|d| d.n += 1)?;
        }
        Kind::StatesafeLean => {
            contenders::lean_store(file)?.update(|d| d.n += 1)?;
        }
        Kind::StatesafeValue => {
            statesafe::Store::<serde_json::Value>::open(file)?.update(|v| {
                let n = v["n"].as_u64().expect("invariant: the counter is a number");
                v["n"] = (n + 1).into();
            })?;
        }
        Kind::Floor => {
            let parent = file.parent().expect("invariant: a file in a directory");
            let mut bytes = fs::read(file)?;
            doc::bump_counter(&mut bytes).ok_or("no counter in the file")?;
            contenders::durable_replace(
                &File::open(parent)?,
                &parent.join(".floor.tmp"),
                file,
                &bytes,
            )?;
        }
        other => return Err(format!("{} has no memory measurement", other.label()).into()),
    }
    Ok(())
}
