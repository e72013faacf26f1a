//! The driver: one statesafe operation on a prepared file, run under `strace` by the
//! kill and error layers.
//!
//! Its stderr carries two markers, `torture-driver: begin` and `torture-driver: end`,
//! around the operation, so a trace of it can be cut to the operation's own system
//! calls. Its stdout carries one line: `ack GENERATION` when the operation returned
//! `Ok`, or `err KIND` (from `statesafe::Error::kind`) when it failed. A load of the
//! damaged file that could not take the lock at once repairs nothing (a read never
//! waits): it reports `err not_repaired`, and the file must still be the damaged one. With `--hold` it
//! then waits for its stdin to close before exiting, so that the caller can check from
//! outside that no lock is held by a live process that has returned.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use statesafe::{Event, Store};
use statesafe_torture::Doc;

/// What the driver does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// `Store::create` on a missing file.
    Create,
    /// `Store::replace` on an existing file.
    Replace,
    /// `Store::update` on an existing file (read, increment, write).
    Update,
    /// Two `Store::update` calls on one store (for the order check).
    UpdateTwice,
    /// `Store::load` of a damaged file that has backups: the library quarantines it
    /// and restores the last committed version (backup 2 and the history's patch to
    /// 3, counter 3) as generation 5.
    Recover,
    /// Journal mode: `Store::update` that appends one record to the journal (the
    /// prepared file's counter is itself in the journal). Not in the default ops.
    JournalAppend,
    /// Journal mode: [`APPENDERS`] processes, each an [`Op::JournalAppend`] on the same
    /// prepared file, started together, so that their appends interleave with each
    /// other's opens, reads and flushes (one `strace -f` trace for the power-loss
    /// layer). Acknowledged with the highest generation once every one of them was.
    /// Not in the default ops.
    JournalAppendMany,
    /// Journal mode: [`GROUP`] threads of one store, each `Store::apply_patch`
    /// appending its number to `/g`, at once: group commit (a batch's leader writes
    /// its records with one `pwrite` and flushes them with one `fdatasync`). Each
    /// thread's outcome goes to [`group_results`]; the report is `ack` with the
    /// highest generation when every one was acknowledged, else the first error's
    /// kind. Error layer only (`strace` counts injections per thread and the leader
    /// varies: the layer injects at every call of a kind on the journal, by path). Not
    /// in the default ops.
    JournalGroup,
    /// Journal mode: `Store::update` that compacts (a new snapshot with the ordinary
    /// protocol, then a new journal). Not in the default ops.
    JournalCompact,
    /// Journal mode: `Store::update` whose record does not fit in the journal's
    /// preallocated space, so the append first grows it (writes zeros past its end).
    /// The prepared journal is nearly full (an 8 KiB document, its padding changed by
    /// each record); the update also lengthens the padding. Slower to prepare (about 7
    /// commits of 8 KiB): not in the kill or error layers' ops.
    JournalGrow,
    /// `Store::begin_streaming` and `Transaction::commit_streaming` (read, increment,
    /// write) on a document past the streaming threshold: parsed from the file and
    /// serialized straight into the temporary file. Not in the default ops.
    UpdateStreamed,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Replace => "replace",
            Op::Update => "update",
            Op::UpdateTwice => "update-twice",
            Op::Recover => "recover",
            Op::JournalAppend => "journal-append",
            Op::JournalAppendMany => "journal-append-many",
            Op::JournalGroup => "journal-group",
            Op::JournalCompact => "journal-compact",
            Op::JournalGrow => "journal-grow",
            Op::UpdateStreamed => "update-streamed",
        }
    }

    /// Whether the file exists before the operation.
    pub fn needs_file(self) -> bool {
        self != Op::Create
    }
}

/// The counter of the prepared file, and the one each operation writes.
pub const OLD_COUNTER: u64 = 1;
pub const NEW_COUNTER: u64 = 2;

/// The counter of the last commit before the damage, which a recovery restores: the
/// newest backup (counter 2) carried forward by the history's patch (issue 11).
pub const RESTORED_COUNTER: u64 = 3;

/// The document size the layers use.
pub const DOC_SIZE: usize = 4096;

/// The document size of [`Op::UpdateStreamed`]: past the library's streaming
/// threshold (1 MiB).
pub const STREAMED_DOC_SIZE: usize = (1 << 20) + (64 << 10);

/// Makes `dir/state.json` as an operation expects to find it (a fresh directory).
pub fn prepare(dir: &Path, op: Op) -> Result<PathBuf, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| format!("cannot clear `{}`: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let file = dir.join("state.json");
    if matches!(
        op,
        Op::JournalAppend | Op::JournalAppendMany | Op::JournalCompact | Op::JournalGroup
    ) {
        // Journal mode, with the old counter in the journal (a snapshot at 0 and one
        // appended record), and for a compaction a limit the next record passes.
        let store = Store::<Doc>::open(&file).map_err(|e| e.to_string())?;
        let mut settings = statesafe::Settings {
            format: statesafe::Format::Journal,
            ..statesafe::Settings::default()
        };
        store
            .create_with(&settings, Doc::new(OLD_COUNTER - 1, DOC_SIZE))
            .and_then(|_| store.update(|d| d.counter = OLD_COUNTER))
            .map_err(|e| format!("cannot prepare `{}`: {e}", file.display()))?;
        if op == Op::JournalCompact {
            settings.journal_max_bytes = Some(64);
            store.save_settings(&settings).map_err(|e| e.to_string())?;
        }
        if op == Op::JournalGroup {
            Store::<serde_json::Value>::open(&file)
                .and_then(|s| {
                    s.apply_patch(&serde_json::json!([{"op": "add", "path": "/g", "value": []}]))
                })
                .map_err(|e| format!("cannot prepare `{}`: {e}", file.display()))?;
        }
        return Ok(file);
    }
    if op == Op::JournalGrow {
        prepare_full_journal(&file)?;
        return Ok(file);
    }
    if op.needs_file() {
        let size = if op == Op::UpdateStreamed {
            STREAMED_DOC_SIZE
        } else {
            DOC_SIZE
        };
        Store::<Doc>::open(&file)
            .and_then(|s| s.create(Doc::new(OLD_COUNTER, size)))
            .map_err(|e| format!("cannot prepare `{}`: {e}", file.display()))?;
    }
    if op == Op::Recover {
        // Generations 2 and 3 (each commit keeps the outgoing version as a backup and
        // records its patch in the history), then the primary cut in half in place,
        // as a crash of a naive writer leaves it.
        let store = Store::<Doc>::open(&file).map_err(|e| e.to_string())?;
        for counter in [RESTORED_COUNTER - 1, RESTORED_COUNTER] {
            store
                .replace(Doc::new(counter, DOC_SIZE))
                .map_err(|e| format!("cannot prepare `{}`: {e}", file.display()))?;
        }
        drop(store);
        let bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
        let damaged = &bytes[..bytes.len() / 2];
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_len(damaged.len() as u64))
            .map_err(|e| format!("cannot damage `{}`: {e}", file.display()))?;
        std::fs::write(damaged_copy(dir), damaged).map_err(|e| e.to_string())?;
    }
    Ok(file)
}

/// The padding of the documents [`Op::JournalGrow`] fills the journal with; its own
/// record is [`GROW_EXTRA`] bytes longer, so that it does not fit. Small enough that
/// several records fit in the journal's first preallocation (64 KiB).
const GROW_PADDING: usize = 8 << 10;
const GROW_EXTRA: usize = 1024;

/// A journal-mode file whose journal has less room left than one more record of
/// [`GROW_PADDING`] bytes (and no growth yet: still its first preallocation).
fn prepare_full_journal(file: &Path) -> Result<(), String> {
    let fail = |e: String| format!("cannot prepare `{}`: {e}", file.display());
    let store = Store::<Doc>::open(file).map_err(|e| fail(e.to_string()))?;
    let settings = statesafe::Settings {
        format: statesafe::Format::Journal,
        ..statesafe::Settings::default()
    };
    let padded = |c: char, len: usize| Doc {
        counter: OLD_COUNTER,
        padding: c.to_string().repeat(len),
    };
    store
        .create_with(&settings, padded('a', GROW_PADDING))
        .map_err(|e| fail(e.to_string()))?;
    let journal = file.with_file_name(".state.json.statesafe").join("journal");
    // Where the records end (the last byte that is not a preallocated zero, rounded
    // up to a record's 8-byte alignment), and the journal's size.
    let end = || -> Result<(usize, u64), String> {
        let bytes = std::fs::read(&journal).map_err(|e| fail(e.to_string()))?;
        let last = bytes.iter().rposition(|b| *b != 0).unwrap_or(0);
        Ok(((last + 1).div_ceil(8) * 8, bytes.len() as u64))
    };
    let (mut at, size) = end()?;
    let mut record = 0;
    let mut c = b'b';
    loop {
        let doc = padded(c as char, GROW_PADDING);
        store.replace(doc).map_err(|e| fail(e.to_string()))?;
        c = if c == b'z' { b'b' } else { c + 1 };
        let (next, now) = end()?;
        if now != size {
            return Err(fail(format!(
                "the journal grew while being filled ({size} to {now} bytes)"
            )));
        }
        record = record.max(next - at);
        at = next;
        // Stop when one more record of this size (with room for a difference in its
        // length) would no longer fit.
        if at + record + 64 >= size as usize {
            return Ok(());
        }
    }
}

/// Where [`prepare`] keeps a copy of the damaged bytes (outside the directory).
pub fn damaged_copy(dir: &Path) -> PathBuf {
    dir.with_extension("damaged")
}

/// How many processes [`Op::JournalAppendMany`] starts.
pub const APPENDERS: usize = 3;

/// [`Op::JournalAppendMany`]: starts [`APPENDERS`] drivers of [`Op::JournalAppend`]
/// on `file` at once and waits for them; the highest generation when every one was
/// acknowledged, else the first failure (as the `err KIND` line's kind).
fn append_many(file: &Path) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let children = (0..APPENDERS)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["driver", "--op", Op::JournalAppend.name(), "--file"])
                .arg(file)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start an appender: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut newest = 0;
    let mut failed = None;
    for child in children {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("cannot wait for an appender: {e}"))?;
        let line = String::from_utf8_lossy(&out.stdout);
        match line.trim().strip_prefix("ack ").map(str::parse::<u64>) {
            Some(Ok(generation)) => newest = newest.max(generation),
            _ => {
                failed.get_or_insert_with(|| {
                    line.trim()
                        .strip_prefix("err ")
                        .unwrap_or("no_report")
                        .to_string()
                });
            }
        }
    }
    failed.map_or(Ok(newest), Err)
}

/// How many threads [`Op::JournalGroup`] starts.
pub const GROUP: usize = 3;

/// Where [`Op::JournalGroup`] writes each thread's outcome (outside the directory):
/// one line per thread, `N ack GENERATION` or `N err KIND`.
pub fn group_results(file: &Path) -> PathBuf {
    let dir = file
        .parent()
        .expect("invariant: the state file has a directory");
    dir.with_extension("group")
}

/// [`Op::JournalGroup`]: the highest generation when every thread was acknowledged,
/// else the first failure's kind.
fn group(file: &Path) -> Result<u64, String> {
    let store = Store::<serde_json::Value>::open(file).map_err(|e| e.kind().to_string())?;
    let results: Vec<statesafe::Result<u64>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..GROUP)
            .map(|n| {
                let store = &store;
                s.spawn(move || {
                    store.apply_patch(
                        &serde_json::json!([{"op": "add", "path": "/g/-", "value": n}]),
                    )
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a group thread panicked"))
            .collect()
    });
    let lines: String = results
        .iter()
        .enumerate()
        .map(|(n, r)| match r {
            Ok(generation) => format!("{n} ack {generation}\n"),
            Err(e) => format!("{n} err {}\n", e.kind()),
        })
        .collect();
    std::fs::write(group_results(file), lines).map_err(|e| format!("io cannot record: {e}"))?;
    let mut newest = 0;
    for r in results {
        newest = newest.max(r.map_err(|e| e.kind().to_string())?);
    }
    Ok(newest)
}

/// `Store::update` that returns the new generation.
fn increment(store: &Store<Doc>) -> statesafe::Result<u64> {
    let mut tx = store.begin()?;
    tx.state_mut().counter += 1;
    tx.commit()
}

pub fn main(op: Op, file: &Path, hold: bool) -> std::process::ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"torture-driver: begin\n");
    if matches!(op, Op::JournalAppendMany | Op::JournalGroup) {
        let ran = if op == Op::JournalGroup {
            group(file)
        } else {
            append_many(file)
        };
        let line = match ran {
            Ok(generation) => format!("ack {generation}\n"),
            Err(kind) => {
                let _ = writeln!(err, "torture-driver: {kind}");
                format!("err {}\n", kind.split_whitespace().next().unwrap_or("io"))
            }
        };
        let stdout = std::io::stdout();
        let _ = rustix::io::writev(stdout.as_fd(), &[std::io::IoSlice::new(line.as_bytes())]);
        let _ = err.write_all(b"torture-driver: end\n");
        if hold {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        return std::process::ExitCode::SUCCESS;
    }
    // Whether the load repaired the file (it says so with `Event::Recovered`).
    let repaired = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&repaired);
    let result = Store::<Doc>::options()
        .on_event(move |e| {
            if matches!(e, Event::Recovered { .. }) {
                seen.store(true, Ordering::SeqCst);
            }
        })
        .open(file)
        .and_then(|store| match op {
            Op::Create => store.create(Doc::new(NEW_COUNTER, DOC_SIZE)),
            Op::Replace => store.replace(Doc::new(NEW_COUNTER, DOC_SIZE)),
            // `JournalAppendMany` and `JournalGroup` returned above; as a single process
            // each would be one append.
            Op::Update
            | Op::JournalAppend
            | Op::JournalAppendMany
            | Op::JournalGroup
            | Op::JournalCompact => increment(&store),
            Op::JournalGrow => store.begin().and_then(|mut tx| {
                let doc = tx.state_mut();
                doc.counter += 1;
                doc.padding = "g".repeat(GROW_PADDING + GROW_EXTRA);
                tx.commit()
            }),
            Op::UpdateTwice => increment(&store).and_then(|_| increment(&store)),
            Op::Recover => store.load().map(|snapshot| snapshot.generation),
            Op::UpdateStreamed => {
                let mut tx = store.begin_streaming(None::<fn() -> Doc>)?;
                tx.state_mut().counter += 1;
                tx.commit_streaming()
            }
        });
    let line = match &result {
        Ok(_) if op == Op::Recover && !repaired.load(Ordering::SeqCst) => {
            "err not_repaired\n".to_string()
        }
        Ok(generation) => format!("ack {generation}\n"),
        Err(e) => format!("err {}\n", e.kind()),
    };
    // Through writev, a call the operation itself never makes, so that an injection
    // into every later `write` cannot silence the report.
    let stdout = std::io::stdout();
    let _ = rustix::io::writev(stdout.as_fd(), &[std::io::IoSlice::new(line.as_bytes())]);
    if let Err(e) = &result {
        let _ = writeln!(err, "torture-driver: {e}");
    }
    let _ = err.write_all(b"torture-driver: end\n");
    if hold {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
    std::process::ExitCode::SUCCESS
}
