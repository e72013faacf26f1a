//! Section 3: load latency (read, parse, verify) against a bare read + parse.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Result;
use crate::doc::{self, Doc};
use crate::stats::{median, quantile, round_order, secs};
use crate::update::Plan;

/// The load contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `Store<Value>::load`: read, read xattr, verify xxh3, parse.
    StatesafeValue,
    /// `Store<Doc>::load`.
    StatesafeTyped,
    /// `std::fs::read` + `serde_json::from_slice::<Value>`.
    BareValue,
    /// `std::fs::read` + `serde_json::from_slice::<Doc>`.
    BareTyped,
}

impl Loader {
    /// Report order.
    pub const ALL: [Loader; 4] = [
        Loader::BareTyped,
        Loader::StatesafeTyped,
        Loader::BareValue,
        Loader::StatesafeValue,
    ];

    /// Label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Loader::StatesafeValue => "statesafe load (Value)",
            Loader::StatesafeTyped => "statesafe load (typed)",
            Loader::BareValue => "read + from_slice (Value)",
            Loader::BareTyped => "read + from_slice (typed)",
        }
    }

    /// The bare contender this one is compared with.
    pub fn baseline(self) -> Loader {
        match self {
            Loader::StatesafeValue | Loader::BareValue => Loader::BareValue,
            Loader::StatesafeTyped | Loader::BareTyped => Loader::BareTyped,
        }
    }
}

/// Samples of one loader at one size.
#[derive(Debug, Clone)]
pub struct LoadRow {
    /// The loader.
    pub loader: Loader,
    /// Every timed load, in seconds.
    pub latencies: Vec<f64>,
}

impl LoadRow {
    /// Median (s).
    pub fn median(&self) -> f64 {
        median(&self.latencies)
    }
    /// 90th percentile (s).
    pub fn p90(&self) -> f64 {
        quantile(&self.latencies, 0.9)
    }
}

/// All loaders at one size.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// The asked size.
    pub size: usize,
    /// Loads per loader per round.
    pub ops_per_round: usize,
    /// One row per loader, in [`Loader::ALL`] order.
    pub rows: Vec<LoadRow>,
}

impl LoadResult {
    /// The row of `loader`.
    pub fn row(&self, loader: Loader) -> &LoadRow {
        self.rows
            .iter()
            .find(|r| r.loader == loader)
            .expect("invariant: every loader has a row")
    }
}

struct Files {
    path: PathBuf,
    value: statesafe::Store<serde_json::Value>,
    typed: statesafe::Store<Doc>,
}

fn load_once(f: &Files, loader: Loader) -> Result<f64> {
    let start = Instant::now();
    match loader {
        Loader::StatesafeValue => {
            black_box(f.value.load()?);
        }
        Loader::StatesafeTyped => {
            black_box(f.typed.load()?);
        }
        Loader::BareValue => {
            let bytes = std::fs::read(&f.path)?;
            black_box(serde_json::from_slice::<serde_json::Value>(&bytes)?);
        }
        Loader::BareTyped => {
            let bytes = std::fs::read(&f.path)?;
            black_box(serde_json::from_slice::<Doc>(&bytes)?);
        }
    }
    Ok(secs(start.elapsed()))
}

/// Measures every loader on one file of `size` in `dir`.
pub fn run(dir: &Path, size: usize, plan: Plan) -> Result<LoadResult> {
    let sub = dir.join(format!("load-{size}"));
    std::fs::create_dir_all(&sub)?;
    let path = sub.join("state.json");
    let typed = statesafe::Store::<Doc>::open(&path)?;
    typed.replace(doc::make(size))?;
    let files = Files {
        value: statesafe::Store::open(&path)?,
        typed,
        path,
    };
    let mut warm = Vec::new();
    let warm_rounds = if size >= 8 << 20 { 1 } else { 3 };
    for _ in 0..warm_rounds {
        for loader in Loader::ALL {
            let t = load_once(&files, loader)?;
            if loader == Loader::BareValue {
                warm.push(t);
            }
        }
    }
    let per_op = median(&warm).max(1e-7);
    let ops_per_round =
        ((secs(plan.slice) / per_op) as usize).clamp(plan.min_ops.max(1), plan.max_ops.max(1));
    let mut rows: Vec<LoadRow> = Loader::ALL
        .iter()
        .map(|&loader| LoadRow {
            loader,
            latencies: Vec::new(),
        })
        .collect();
    for round in 0..plan.rounds {
        let order = round_order(round, rows.len());
        for _ in 0..ops_per_round {
            for &i in &order {
                let t = load_once(&files, rows[i].loader)?;
                rows[i].latencies.push(t);
            }
        }
    }
    Ok(LoadResult {
        size,
        ops_per_round,
        rows,
    })
}
