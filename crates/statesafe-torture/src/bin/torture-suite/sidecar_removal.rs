//! The sidecar-removal stress (issue 10): several processes each run
//! `statesafe update f.json '.n += 1'` many times while a loop removes the sidecar
//! (`rm -rf .f.json.statesafe`) or only its `lock` file at a fixed interval, as a
//! cleanup script would. Every update that exits 0 must be in the counter: the final
//! counter equals the number of successes, exactly, in every run. Failed updates are
//! allowed (and counted) if they say `error:` and `hint:`; a hang is not. No root
//! needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::adversarial::counter;
use crate::run::{Cli, User};
use crate::tally::Tally;

/// How long one update may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(60);

/// What the removal loop removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The whole sidecar directory (`rm -rf .f.json.statesafe`).
    Sidecar,
    /// Only the lock file (`rm .f.json.statesafe/lock`).
    Lock,
}

impl Target {
    fn describe(self) -> &'static str {
        match self {
            Target::Sidecar => "rm -rf .f.json.statesafe",
            Target::Lock => "rm .f.json.statesafe/lock",
        }
    }

    fn remove(self, sidecar: &Path) -> bool {
        match self {
            Target::Sidecar => std::fs::remove_dir_all(sidecar).is_ok(),
            Target::Lock => std::fs::remove_file(sidecar.join("lock")).is_ok(),
        }
    }
}

/// The settings of the stress.
pub struct Config<'a> {
    pub statesafe: &'a Path,
    pub base: &'a Path,
    pub targets: &'a [Target],
    pub processes: usize,
    pub updates: usize,
    pub interval: Duration,
    pub rounds: usize,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    /// Failed updates whose stderr lacks `error:` or `hint:`.
    unexplained: AtomicU64,
    /// The first few distinct error lines of failed updates.
    errors: Mutex<Vec<String>>,
}

/// Runs every round of every target.
pub fn layer(cfg: &Config<'_>, tally: &Tally) -> Result<(), String> {
    let logs = cfg.base.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| format!("cannot create `{}`: {e}", logs.display()))?;
    let cli = Cli::new(cfg.statesafe.to_path_buf(), logs);
    for &target in cfg.targets {
        for round in 1..=cfg.rounds {
            let dir = cfg.base.join(format!("{target:?}-{round}").to_lowercase());
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
            let label = format!(
                "sidecar-removal ({}, every {} ms), round {round}",
                target.describe(),
                cfg.interval.as_millis()
            );
            let problems = one_round(cfg, &cli, &dir, target, &label)?;
            tally.record(&label, problems);
        }
    }
    Ok(())
}

fn one_round(
    cfg: &Config<'_>,
    cli: &Cli,
    dir: &Path,
    target: Target,
    label: &str,
) -> Result<Vec<String>, String> {
    let init = cli.run(
        User::Root,
        dir,
        dir,
        &["init", "f.json", r#"{"n":0}"#],
        DEADLINE,
    )?;
    if !init.ok() {
        return Err(format!(
            "cannot create the state file: {}",
            init.stderr.trim()
        ));
    }
    let counts = Counts::default();
    let stop = AtomicBool::new(false);
    let removals = AtomicU64::new(0);
    let sidecar: PathBuf = dir.join(".f.json.statesafe");
    let start = Instant::now();
    let harness_error: Arc<Mutex<Option<String>>> = Arc::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(cfg.interval);
                if target.remove(&sidecar) {
                    removals.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let workers: Vec<_> = (0..cfg.processes)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..cfg.updates {
                        let args = ["update", "f.json", ".n += 1", "--lock-timeout", "30s"];
                        match cli.run(User::Root, dir, dir, &args, DEADLINE) {
                            Ok(o) if o.ok() => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(o) => {
                                let slot = if o.hung { &counts.hung } else { &counts.failed };
                                slot.fetch_add(1, Ordering::Relaxed);
                                if !o.hung && !o.explained() {
                                    counts.unexplained.fetch_add(1, Ordering::Relaxed);
                                }
                                let mut errors =
                                    counts.errors.lock().unwrap_or_else(|e| e.into_inner());
                                let line = if o.explained() {
                                    o.summary()
                                } else {
                                    format!(
                                        "{} (no hint: {})",
                                        o.summary(),
                                        o.stderr.trim().replace('\n', " / ")
                                    )
                                };
                                if errors.len() < 3 && !errors.contains(&line) {
                                    errors.push(line);
                                }
                            }
                            Err(e) => {
                                *harness_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    if let Some(e) = harness_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(e);
    }
    let (ok, failed, hung) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.hung.load(Ordering::Relaxed),
    );
    let mut problems = Vec::new();
    let final_counter = counter(&dir.join("f.json"));
    match &final_counter {
        Ok(n) if *n == ok => {}
        Ok(n) if *n < ok => problems.push(format!(
            "{} acknowledged updates lost ({ok} succeeded, counter {n})",
            ok - n
        )),
        Ok(n) => problems.push(format!("counter {n} above the {ok} updates that succeeded")),
        Err(e) => problems.push(e.clone()),
    }
    let unexplained = counts.unexplained.load(Ordering::Relaxed);
    if unexplained > 0 {
        problems.push(format!(
            "{unexplained} failed updates without `error:` and `hint:`"
        ));
    }
    if hung > 0 {
        problems.push(format!(
            "{hung} updates did not finish in {} s",
            DEADLINE.as_secs()
        ));
    }
    let verdict = if problems.is_empty() {
        "counter == successes".to_string()
    } else {
        format!("VIOLATION: {}", problems.join("; "))
    };
    println!(
        "{label}: {} updates, {ok} succeeded, {failed} failed, counter {}, {} removals, {:.1} s: {verdict}",
        cfg.processes * cfg.updates,
        final_counter.map_or_else(|e| e, |n| n.to_string()),
        removals.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    for e in counts
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("  a failed update: {e}");
    }
    Ok(problems)
}
