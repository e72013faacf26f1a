//! The child processes of the torture: writers (killed at random) and readers.
//!
//! Protocol on stdout, one line each: a writer prints `ack N` after each update it
//! completed, N being the counter it wrote; a reader prints `reads R torn T` now and
//! then and once more when its stdin is closed, then exits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::args::Approach;
use crate::doc::{Doc, naive_read, naive_write, statesafe_read, statesafe_reader};

#[derive(Debug, Parser)]
#[command(
    name = "torture-child",
    about = "a child process of `statesafe torture` (internal)"
)]
enum ChildCmd {
    /// Update the file in a loop until killed, printing `ack N` after each update.
    Writer {
        #[arg(long, value_enum)]
        approach: Approach,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        doc_size: usize,
    },
    /// Read the file in a loop until stdin closes, counting documents that do not parse.
    Reader {
        #[arg(long)]
        file: PathBuf,
        /// Read through statesafe (a sealed or journal-mode file): a read that fails,
        /// or that repairs damage, counts as torn.
        #[arg(long)]
        through_statesafe: bool,
    },
}

/// Runs a hidden child role of the torture. `args` are the arguments after the
/// `torture-child` subcommand (the caller re-executes its own executable with them).
pub fn child_main(args: Vec<String>) -> ExitCode {
    let cmd =
        match ChildCmd::try_parse_from(std::iter::once("torture-child".to_string()).chain(args)) {
            Ok(cmd) => cmd,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(2);
            }
        };
    let result = match cmd {
        ChildCmd::Writer {
            approach,
            file,
            doc_size,
        } => writer(approach, &file, doc_size),
        ChildCmd::Reader {
            file,
            through_statesafe,
        } => reader(&file, through_statesafe),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: torture child: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn writer(approach: Approach, file: &Path, doc_size: usize) -> Result<(), BoxError> {
    let mut out = std::io::stdout().lock();
    match approach {
        Approach::Naive => loop {
            let mut doc = naive_read(file).unwrap_or_else(|| Doc::new(0, doc_size));
            doc.counter += 1;
            naive_write(file, &doc)?;
            if writeln!(out, "ack {}", doc.counter).is_err() {
                return Ok(());
            }
        },
        Approach::Statesafe => {
            let store = statesafe::Store::<Doc>::open(file)?;
            loop {
                let n = store.update(|d| {
                    d.counter += 1;
                    d.counter
                })?;
                if writeln!(out, "ack {n}").is_err() {
                    return Ok(());
                }
            }
        }
    }
}

fn reader(file: &Path, through_statesafe: bool) -> Result<(), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        watcher.store(true, Ordering::Release);
    });
    let mut out = std::io::stdout().lock();
    let (mut reads, mut torn) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let store = if through_statesafe {
        Some(statesafe_reader(file)?)
    } else {
        None
    };
    while !stop.load(Ordering::Acquire) {
        let whole = match &store {
            Some((store, repaired)) => statesafe_read(store, repaired).is_some(),
            None => std::fs::read(file)
                .ok()
                .is_some_and(|b| serde_json::from_slice::<Doc>(&b).is_ok()),
        };
        reads += 1;
        torn += u64::from(!whole);
        if last_report.elapsed() >= Duration::from_millis(50) {
            writeln!(out, "reads {reads} torn {torn}")?;
            last_report = Instant::now();
        }
    }
    writeln!(out, "reads {reads} torn {torn}")?;
    Ok(())
}
