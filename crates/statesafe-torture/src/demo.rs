//! `statesafe torture`: the naive approach and statesafe, side by side, under `SIGKILL`.
//!
//! For each approach a supervisor runs rounds: start the writers, wait for a first
//! acknowledged update, wait a random moment more, `SIGKILL` them all, then look at the
//! file before anything else touches it. Readers of each file run all the time.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::args::{Approach, DemoFormat, TortureArgs};
use crate::doc::{Doc, naive_read, naive_write, statesafe_read, statesafe_reader};

/// Counters of one approach, shared between its supervisor, its readers and the
/// progress bar.
#[derive(Debug, Default)]
struct Stats {
    rounds: AtomicU64,
    kills: AtomicU64,
    acks: AtomicU64,
    corrupt: AtomicU64,
    lost: AtomicU64,
    writer_errors: AtomicU64,
    reads: AtomicU64,
    torn: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Stats {
    fn failures(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
            + self.lost.load(Ordering::Relaxed)
            + self.torn.load(Ordering::Relaxed)
            + self.writer_errors.load(Ordering::Relaxed)
    }

    fn get(&self, field: &AtomicU64) -> u64 {
        field.load(Ordering::Relaxed)
    }
}

/// Runs the demonstration and prints its table. Exit status 0 when statesafe showed no
/// failure at all (the naive column is expected to fail), 1 otherwise.
pub fn run(args: &TortureArgs) -> ExitCode {
    match run_inner(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: torture: {e}");
            if let Some(hint) = hint_for(args) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What to do when DIR cannot be used.
fn hint_for(args: &TortureArgs) -> Option<String> {
    let dir = args.dir.as_ref()?;
    (!dir.is_dir()).then(|| {
        format!(
            "give an existing directory (create it first: `mkdir -p {}`), or leave DIR out to run under the current directory",
            dir.display()
        )
    })
}

fn run_inner(args: &TortureArgs) -> Result<bool, String> {
    // Everything happens in a fresh subdirectory of DIR (or of the current directory),
    // removed when `work` is dropped unless `--keep`: the run never touches what DIR
    // already holds and leaves nothing behind. DIR itself must exist: a mistyped path
    // is an error, not a new directory.
    let parent = match &args.dir {
        Some(dir) => {
            let meta = std::fs::metadata(dir).map_err(|e| {
                format!(
                    "cannot use `{}` as the directory to run in\ncaused by: {e}",
                    dir.display()
                )
            })?;
            if !meta.is_dir() {
                return Err(format!("`{}` is not a directory", dir.display()));
            }
            dir.clone()
        }
        None => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".statesafe-torture-")
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a directory in `{}`: {e}", parent.display()))?;
    let root = work
        .path()
        .canonicalize()
        .unwrap_or_else(|_| work.path().to_path_buf());
    let _work = if args.keep {
        let kept = work.keep();
        eprintln!("torture: the run's files are kept in `{}`", kept.display());
        None
    } else {
        Some(work)
    };
    let approaches = [Approach::Naive, Approach::Statesafe];
    let mut files = Vec::new();
    for approach in approaches {
        let dir = root.join(approach.name());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let file = dir.join("state.json");
        init_file(approach, &file, args.doc_size, args.format)?;
        files.push(file);
    }

    let stats: Vec<Arc<Stats>> = approaches.iter().map(|_| Arc::default()).collect();
    let mut readers = Vec::new();
    for ((file, stats), approach) in files.iter().zip(&stats).zip(approaches) {
        // Readers of a sealed or journal-mode file read it through statesafe.
        let through = approach == Approach::Statesafe && !args.format.raw_readable();
        for _ in 0..args.readers {
            readers.push(Reader::spawn(file, through, Arc::clone(stats))?);
        }
    }
    let deadline = Instant::now() + args.duration;
    let supervisors: Vec<JoinHandle<Result<(), String>>> = approaches
        .iter()
        .zip(&files)
        .zip(&stats)
        .map(|((&approach, file), stats)| {
            let (file, stats, args) = (file.clone(), Arc::clone(stats), args.clone());
            std::thread::spawn(move || supervise(approach, &file, &args, &stats, deadline))
        })
        .collect();

    let bar = indicatif::ProgressBar::with_draw_target(
        Some(args.duration.as_millis() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>3} [{bar:30}] {msg}")
            .expect("invariant: the template is valid")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    while supervisors.iter().any(|s| !s.is_finished()) {
        bar.set_position(start.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "naive: {} | statesafe: {}",
            brief(&stats[0]),
            brief(&stats[1])
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
    for s in supervisors {
        s.join().map_err(|_| "a supervisor thread panicked")??;
    }
    for r in readers {
        r.finish();
    }

    let report = Report {
        root: &root,
        args,
        elapsed: start.elapsed(),
        stats: &stats,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(stats[1].failures() == 0 && stats[1].get(&stats[1].kills) > 0)
}

fn brief(s: &Stats) -> String {
    format!(
        "{} kills, {} corrupt, {} lost, {} torn",
        s.get(&s.kills),
        s.get(&s.corrupt),
        s.get(&s.lost),
        s.get(&s.torn)
    )
}

fn init_file(
    approach: Approach,
    file: &Path,
    size: usize,
    format: DemoFormat,
) -> Result<(), String> {
    match approach {
        Approach::Naive => naive_write(file, &Doc::new(0, size)).map_err(|e| e.to_string()),
        Approach::Statesafe if format == DemoFormat::Plain || file.exists() => {
            statesafe::Store::<Doc>::open(file)
                .and_then(|s| s.replace(Doc::new(0, size)))
                .map(drop)
                .map_err(|e| e.to_string())
        }
        // The format is recorded in the file's settings, so the writers use it too.
        Approach::Statesafe => statesafe::Store::<Doc>::open(file)
            .and_then(|s| {
                let settings = statesafe::Settings {
                    format: format.format(),
                    ..statesafe::Settings::default()
                };
                s.create_with(&settings, Doc::new(0, size))
            })
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// The document as the next start of the program would find it: the file itself, or
/// for a sealed or journal-mode file statesafe's read (which must not have found
/// damage to repair).
fn read_after_kill(approach: Approach, format: DemoFormat, file: &Path) -> Option<Doc> {
    if approach == Approach::Naive || format.raw_readable() {
        return naive_read(file);
    }
    let (store, repaired) = statesafe_reader(file).ok()?;
    statesafe_read(&store, &repaired)
}

fn child_command() -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("torture-child");
    Ok(cmd)
}

/// A writer child and the thread that counts its acknowledgements.
struct Writer {
    child: Child,
    pump: JoinHandle<String>,
}

fn supervise(
    approach: Approach,
    file: &Path,
    args: &TortureArgs,
    stats: &Stats,
    deadline: Instant,
) -> Result<(), String> {
    let mut before = read_after_kill(approach, args.format, file).map_or(0, |d| d.counter);
    while Instant::now() < deadline {
        let round_acks = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for _ in 0..args.writers {
            let mut child = child_command()?
                .args(["writer", "--approach", approach.name(), "--file"])
                .arg(file)
                .args(["--doc-size", &args.doc_size.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start a writer: {e}"))?;
            let out = child.stdout.take().expect("invariant: piped");
            let mut err = child.stderr.take().expect("invariant: piped");
            let acks = Arc::clone(&round_acks);
            let pump = std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.starts_with("ack ") {
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            });
            writers.push(Writer { child, pump });
        }
        let waited = Instant::now();
        while round_acks.load(Ordering::Relaxed) == 0 && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_micros(500));
        }
        let max = args.max_kill_delay.as_micros() as u64;
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..=max)));
        let mut exited_alone = Vec::new();
        for w in &mut writers {
            match w.child.try_wait() {
                Ok(Some(status)) => exited_alone.push(status),
                _ => {
                    let _ = w.child.kill();
                }
            }
        }
        for mut w in writers {
            let _ = w.child.wait();
            let stderr = w.pump.join().unwrap_or_default();
            if !stderr.trim().is_empty() {
                *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(stderr.trim().to_string());
            }
        }
        let kills = u64::from(args.writers) - exited_alone.len() as u64;
        stats.kills.fetch_add(kills, Ordering::Relaxed);
        stats
            .writer_errors
            .fetch_add(exited_alone.len() as u64, Ordering::Relaxed);
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        let acks = round_acks.load(Ordering::Relaxed);
        stats.acks.fetch_add(acks, Ordering::Relaxed);

        // The file as the next start of the program would find it.
        match read_after_kill(approach, args.format, file) {
            Some(doc) => {
                // Every acknowledged increment of this round must be in the counter.
                let gained = i128::from(doc.counter) - i128::from(before);
                let lost = (i128::from(acks) - gained).max(0) as u64;
                stats.lost.fetch_add(lost, Ordering::Relaxed);
                before = doc.counter;
            }
            None => {
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                // The naive writers start afresh from defaults (as the seeds do); a
                // statesafe file would need repairing by hand, so repair it here.
                if approach == Approach::Statesafe {
                    init_file(approach, file, args.doc_size, args.format)?;
                }
                before = 0;
            }
        }
    }
    Ok(())
}

/// A reader child and the thread that follows its reports.
struct Reader {
    child: Child,
    stdin: Option<ChildStdin>,
    pump: JoinHandle<()>,
}

impl Reader {
    fn spawn(file: &Path, through: bool, stats: Arc<Stats>) -> Result<Reader, String> {
        let mut cmd = child_command()?;
        cmd.args(["reader", "--file"]).arg(file);
        if through {
            cmd.arg("--through-statesafe");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start a reader: {e}"))?;
        let out = child.stdout.take().expect("invariant: piped");
        let pump = std::thread::spawn(move || {
            let (mut reads, mut torn) = (0u64, 0u64);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                if let (Some("reads"), Some(r), Some("torn"), Some(t)) =
                    (words.next(), words.next(), words.next(), words.next())
                {
                    let (r, t) = (r.parse().unwrap_or(reads), t.parse().unwrap_or(torn));
                    stats.reads.fetch_add(r - reads, Ordering::Relaxed);
                    stats.torn.fetch_add(t - torn, Ordering::Relaxed);
                    (reads, torn) = (r, t);
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Reader { child, stdin, pump })
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.pump.join();
        let _ = self.child.wait();
    }
}

/// Picks one counter out of [`Stats`].
type Field = fn(&Stats) -> &AtomicU64;

struct Report<'a> {
    root: &'a PathBuf,
    args: &'a TortureArgs,
    elapsed: Duration,
    stats: &'a [Arc<Stats>],
}

impl Report<'_> {
    fn table(&self) -> String {
        let [naive, safe] = [&self.stats[0], &self.stats[1]];
        let mut t = String::new();
        let fs = filesystem_of(self.root).unwrap_or_else(|| "unknown filesystem".into());
        t += &format!(
            "statesafe torture: {} in `{}` ({fs}), {} writer(s) killed at random + {} reader(s) per approach, {}-byte documents, statesafe format `{}`\n\n",
            humantime::format_duration(Duration::from_secs(self.elapsed.as_secs())),
            self.root.display(),
            self.args.writers,
            self.args.readers,
            self.args.doc_size,
            self.args.format.name(),
        );
        let rows: [(&str, Field); 8] = [
            ("writer processes killed", |s| &s.kills),
            ("updates acknowledged", |s| &s.acks),
            ("reads", |s| &s.reads),
            ("corrupt files found after a kill", |s| &s.corrupt),
            ("acknowledged updates lost", |s| &s.lost),
            ("torn reads (partial documents)", |s| &s.torn),
            ("writer errors", |s| &s.writer_errors),
            ("rounds", |s| &s.rounds),
        ];
        t += &format!(
            "{:<34} {:>24} {:>26}\n",
            "", "naive (truncate + write)", "statesafe (Store::update)"
        );
        for (name, field) in rows {
            t += &format!(
                "{name:<34} {:>24} {:>26}\n",
                naive.get(field(naive)),
                safe.get(field(safe))
            );
        }
        t += &format!(
            "{:<34} {:>24} {:>26}\n\n",
            "FAILURES",
            naive.failures(),
            safe.failures()
        );
        if naive.failures() > 0 {
            t += &format!(
                "naive: {} failures, as expected: truncating a file and writing it in place loses it to a crash at the wrong moment, shows readers half-written documents, and lets concurrent writers overwrite each other's updates.\n",
                naive.failures()
            );
        } else {
            t += "naive: no failure this time. It is not safe, only lucky: the machine was quiet or the kills missed the write window; run longer or with a bigger --doc-size.\n";
        }
        if safe.failures() == 0 && safe.get(&safe.kills) > 0 {
            t += &format!(
                "statesafe: 0 failures in {} kills.\n",
                safe.get(&safe.kills)
            );
        } else if safe.get(&safe.kills) == 0 {
            t += "statesafe: FAILED to test anything: no writer was killed.\n";
        } else {
            t += &format!(
                "statesafe: {} FAILURES. This is a bug; please report it with this output.\n",
                safe.failures()
            );
            if let Some(e) = safe
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                t += &format!("last writer error: {e}\n");
            }
        }
        t
    }

    fn json(&self) -> serde_json::Value {
        let one = |s: &Stats| {
            serde_json::json!({
                "kills": s.get(&s.kills),
                "acks": s.get(&s.acks),
                "reads": s.get(&s.reads),
                "corrupt": s.get(&s.corrupt),
                "lost": s.get(&s.lost),
                "torn": s.get(&s.torn),
                "writer_errors": s.get(&s.writer_errors),
                "rounds": s.get(&s.rounds),
                "failures": s.failures(),
            })
        };
        serde_json::json!({
            "dir": self.root,
            "seconds": self.elapsed.as_secs_f64(),
            "writers": self.args.writers,
            "readers": self.args.readers,
            "doc_size": self.args.doc_size,
            "format": self.args.format.name(),
            "naive": one(&self.stats[0]),
            "statesafe": one(&self.stats[1]),
        })
    }
}

/// The filesystem type of `dir`, as `findmnt` names it (`stat -f` calls ext4
/// "ext2/ext3"), else as `stat -f` does.
fn filesystem_of(dir: &Path) -> Option<String> {
    let ask = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).arg(dir).output().ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !name.is_empty()).then_some(name)
    };
    ask("findmnt", &["-n", "-o", "FSTYPE", "-T"]).or_else(|| ask("stat", &["-f", "-c", "%T"]))
}
