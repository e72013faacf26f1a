//! Layer e: many writers and readers on one file, writers killed at random; exclusion
//! checked from outside the library through `/proc/locks`, and no acknowledged
//! update lost.
//!
//! Each writer increments the counter with `Store::update` and prints the value it
//! committed. Under a working lock every committed value is unique and every
//! acknowledged one stays in the file, kills or not.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use statesafe::Store;
use statesafe_torture::Doc;

use crate::check;
use crate::tally::Tally;

/// The settings of the stress layer.
pub struct Stress<'a> {
    pub exe: &'a Path,
    pub base: &'a Path,
    pub writers: usize,
    pub readers: usize,
    pub duration: Duration,
}

struct Writer {
    child: Child,
    pump: JoinHandle<()>,
}

fn spawn_writer(exe: &Path, file: &Path, acks: &Arc<Mutex<Vec<u64>>>) -> Result<Writer, String> {
    let mut child = Command::new(exe)
        .args([
            "torture-child",
            "writer",
            "--approach",
            "statesafe",
            "--doc-size",
            "4096",
            "--file",
        ])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a writer: {e}"))?;
    let out = child.stdout.take().expect("invariant: piped");
    let acks = Arc::clone(acks);
    let pump = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ack ").and_then(|n| n.parse().ok()) {
                acks.lock().unwrap_or_else(|e| e.into_inner()).push(n);
            }
        }
    });
    Ok(Writer { child, pump })
}

/// Kills a writer; `Some(status)` when it had already exited by itself (an update
/// failed: its error is on stderr).
fn stop_writer(mut w: Writer) -> Option<std::process::ExitStatus> {
    let gone = w.child.try_wait().ok().flatten();
    let _ = w.child.kill();
    let _ = w.child.wait();
    let _ = w.pump.join();
    gone
}

/// Watches `/proc/locks` for holders of the lock file's inode.
struct Monitor {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    max_holders: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Monitor {
    fn start(lock: &Path) -> Result<Monitor, String> {
        let ino = std::fs::metadata(lock)
            .map_err(|e| format!("cannot stat the lock file `{}`: {e}", lock.display()))?
            .ino();
        let needle = format!(":{ino} ");
        let stop = Arc::new(AtomicBool::new(false));
        let (samples, held, max_holders): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) =
            (Arc::default(), Arc::default(), Arc::default());
        let (s, sa, h, m) = (
            Arc::clone(&stop),
            Arc::clone(&samples),
            Arc::clone(&held),
            Arc::clone(&max_holders),
        );
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while !s.load(Ordering::Relaxed) {
                if let Some(text) = snapshot_locks(&mut buf) {
                    let holders = text
                        .lines()
                        .filter(|l| l.contains(&needle) && l.contains("FLOCK") && !l.contains("->"))
                        .count() as u64;
                    sa.fetch_add(1, Ordering::Relaxed);
                    if holders > 0 {
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                    m.fetch_max(holders, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        Ok(Monitor {
            stop,
            samples,
            held,
            max_holders,
            thread,
        })
    }
}

/// `/proc/locks` in one `read` call: the kernel fills one read from a consistent walk
/// of the lock list, while several small reads (as `read_to_string` makes) can see a
/// lock released in one and its successor taken in the next, i.e. two holders.
fn snapshot_locks(buf: &mut [u8]) -> Option<String> {
    use std::io::Read;
    let n = std::fs::File::open("/proc/locks").ok()?.read(buf).ok()?;
    (n < buf.len()).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A reader child, its stdin (closed to stop it) and the thread reading its reports.
type ReaderProc = (Child, Option<ChildStdin>, JoinHandle<(u64, u64)>);

/// Runs the stress layer.
pub fn layer(cfg: &Stress<'_>, tally: &Tally) -> Result<(), String> {
    let dir = cfg.base.join("stress");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let file = dir.join("state.json");
    let store = Store::<Doc>::open(&file).map_err(|e| e.to_string())?;
    store.create(Doc::new(0, 4096)).map_err(|e| e.to_string())?;
    drop(store);
    // The create took the lock, so the lock file exists for the monitor.
    let monitor = Monitor::start(&check::lock_path(&dir))?;

    let acks = Arc::new(Mutex::new(Vec::new()));
    let mut readers: Vec<ReaderProc> = Vec::new();
    for _ in 0..cfg.readers {
        let mut child = Command::new(cfg.exe)
            .args(["torture-child", "reader", "--file"])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a reader: {e}"))?;
        let out = child.stdout.take().expect("invariant: piped");
        let stdin = child.stdin.take();
        let pump = std::thread::spawn(move || {
            let mut last = (0, 0);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let w: Vec<&str> = line.split_whitespace().collect();
                if let [_, r, _, t] = w[..] {
                    last = (r.parse().unwrap_or(0), t.parse().unwrap_or(0));
                }
            }
            last
        });
        readers.push((child, stdin, pump));
    }
    let mut writers = Vec::new();
    for _ in 0..cfg.writers {
        writers.push(spawn_writer(cfg.exe, &file, &acks)?);
    }
    let start = Instant::now();
    while start.elapsed() < cfg.duration {
        std::thread::sleep(Duration::from_millis(fastrand::u64(2..=30)));
        let victim = fastrand::usize(..writers.len());
        let w = writers.swap_remove(victim);
        let failed = stop_writer(w);
        // Right after the kill, before the replacement starts: every acknowledged
        // update is in the file (the others keep writing, so it can only be higher).
        let highest = acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let mut problems = match check::counter(&file) {
            Ok(Some(c)) if c >= highest => Vec::new(),
            Ok(Some(c)) => vec![format!("counter {c} below the acknowledged {highest}")],
            Ok(None) => vec!["the state file is gone".to_string()],
            Err(e) => vec![e],
        };
        if let Some(status) = failed {
            problems.push(format!(
                "a writer's update failed ({status}; its error is above)"
            ));
        }
        tally.record("stress kill", problems);
        writers.push(spawn_writer(cfg.exe, &file, &acks)?);
    }
    let mut writer_failures = 0;
    for w in writers {
        writer_failures += usize::from(stop_writer(w).is_some());
    }
    let mut reads = 0;
    let mut torn = 0;
    for (mut child, stdin, pump) in readers {
        drop(stdin);
        let (r, t) = pump.join().unwrap_or((0, 0));
        let _ = child.wait();
        reads += r;
        torn += t;
    }
    monitor.stop.store(true, Ordering::Relaxed);
    let _ = monitor.thread.join();

    let acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut problems = Vec::new();
    let unique: HashSet<u64> = acks.iter().copied().collect();
    if unique.len() != acks.len() {
        problems.push(format!(
            "{} acknowledged updates lost: two writers committed the same counter value",
            acks.len() - unique.len()
        ));
    }
    match check::counter(&file) {
        Ok(Some(c)) if c >= acks.len() as u64 && c >= unique.iter().copied().max().unwrap_or(0) => {
        }
        Ok(c) => problems.push(format!(
            "final counter {c:?} below the {} acknowledged updates",
            acks.len()
        )),
        Err(e) => problems.push(e),
    }
    if writer_failures > 0 {
        problems.push(format!(
            "{writer_failures} writers' updates failed (errors above)"
        ));
    }
    if torn > 0 {
        problems.push(format!("{torn} torn reads out of {reads}"));
    }
    let (samples, held, max) = (
        monitor.samples.load(Ordering::Relaxed),
        monitor.held.load(Ordering::Relaxed),
        monitor.max_holders.load(Ordering::Relaxed),
    );
    if max > 1 {
        problems.push(format!(
            "/proc/locks showed {max} holders of the lock at once"
        ));
    }
    if held == 0 {
        problems.push(format!(
            "the lock was never seen held in {samples} samples of /proc/locks: writers are not locking"
        ));
    }
    if let Err(e) = check::recover(&dir) {
        problems.push(e);
    }
    println!(
        "stress: {} writers, {} readers, {:.1} s: {} updates acknowledged, {reads} reads ({torn} torn), lock seen held in {held} of {samples} samples, at most {max} holder(s)",
        cfg.writers,
        cfg.readers,
        start.elapsed().as_secs_f64(),
        acks.len()
    );
    tally.record("stress final", problems);
    Ok(())
}
