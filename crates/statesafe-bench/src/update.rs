//! Section 1: durable update latency and throughput, contenders in interleaved rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::Result;
use crate::contenders::{self, Kind, Updater};
use crate::doc::{self, COUNTER_START};
use crate::stats::{median, quantile, round_order, secs};

/// How long each contender runs per round, and how many rounds.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds; in each, every contender runs `ops_per_round` updates, alternating.
    pub rounds: usize,
    /// The wanted time per contender per round (sets `ops_per_round` from the floor).
    pub slice: Duration,
    /// Fewest updates per contender per round (documents under 8 MiB; above, a
    /// quarter of this, at least one).
    pub min_ops: usize,
    /// Most updates per contender per round.
    pub max_ops: usize,
}

/// One contender's samples at one size.
#[derive(Debug, Clone)]
pub struct Row {
    /// The contender.
    pub kind: Kind,
    /// Latency of every timed update, in seconds.
    pub latencies: Vec<f64>,
    /// Updates per second in each round (its updates over the time they took).
    pub round_rates: Vec<f64>,
}

impl Row {
    /// Median latency (s).
    pub fn median(&self) -> f64 {
        median(&self.latencies)
    }
    /// 90th percentile latency (s).
    pub fn p90(&self) -> f64 {
        quantile(&self.latencies, 0.9)
    }
    /// Median over rounds of updates per second.
    pub fn rate(&self) -> f64 {
        median(&self.round_rates)
    }
}

/// All contenders at one document size.
#[derive(Debug, Clone)]
pub struct SizeResult {
    /// The asked size.
    pub size: usize,
    /// The document's actual size in bytes.
    pub bytes: usize,
    /// Rounds run.
    pub rounds: usize,
    /// Updates per contender per round.
    pub ops_per_round: usize,
    /// One row per contender, in [`Kind::UPDATE`] order.
    pub rows: Vec<Row>,
}

impl SizeResult {
    /// The row of `kind`.
    pub fn row(&self, kind: Kind) -> &Row {
        self.rows
            .iter()
            .find(|r| r.kind == kind)
            .expect("invariant: every contender has a row")
    }
}

fn timed(u: &mut dyn Updater) -> Result<f64> {
    let start = Instant::now();
    u.op()?;
    Ok(secs(start.elapsed()))
}

/// Runs every contender at `size` in `dir`.
pub fn run(dir: &Path, size: usize, plan: Plan) -> Result<SizeResult> {
    let document = doc::make(size);
    let bytes = doc::encode(&document).len();
    let kinds = Kind::UPDATE;
    let mut updaters = Vec::new();
    for kind in kinds {
        let sub = dir.join(format!("update-{size}")).join(format!("{kind:?}"));
        updaters.push(contenders::setup(kind, &sub, &document)?);
    }
    let mut done = vec![0u64; kinds.len()];
    // Warm-up: page cache, SQLite's statement cache, the stores' lazy state.
    let warm = if bytes >= 8 << 20 { 1 } else { 3 };
    let mut floor_times = Vec::new();
    for _ in 0..warm {
        for (i, u) in updaters.iter_mut().enumerate() {
            let t = timed(u.as_mut())?;
            done[i] += 1;
            if kinds[i] == Kind::Floor {
                floor_times.push(t);
            }
        }
    }
    let per_op = median(&floor_times).max(1e-6);
    let min_ops = if bytes >= 8 << 20 {
        (plan.min_ops / 4).max(1)
    } else {
        plan.min_ops.max(1)
    };
    let ops_per_round =
        ((secs(plan.slice) / per_op) as usize).clamp(min_ops, plan.max_ops.max(min_ops));
    let mut rows: Vec<Row> = kinds
        .iter()
        .map(|&kind| Row {
            kind,
            latencies: Vec::new(),
            round_rates: Vec::new(),
        })
        .collect();
    for round in 0..plan.rounds {
        // Within a round the contenders alternate update by update (A B C … A B C …),
        // in an order drawn afresh for each round, so that bursts of background I/O
        // hit every contender alike and nobody always follows the same neighbour.
        let mut spent = vec![0f64; kinds.len()];
        let order = round_order(round, kinds.len());
        for _ in 0..ops_per_round {
            for &i in &order {
                let t = timed(updaters[i].as_mut())?;
                rows[i].latencies.push(t);
                spent[i] += t;
            }
        }
        for (i, row) in rows.iter_mut().enumerate() {
            done[i] += ops_per_round as u64;
            row.round_rates.push(ops_per_round as f64 / spent[i]);
        }
    }
    for (i, u) in updaters.iter().enumerate() {
        let found = u.on_disk()?;
        let want = COUNTER_START + done[i];
        if found != want {
            return Err(format!(
                "{}: the counter on disk is {found}, expected {want}: updates were lost",
                kinds[i].label()
            )
            .into());
        }
    }
    Ok(SizeResult {
        size,
        bytes,
        rounds: plan.rounds,
        ops_per_round,
        rows,
    })
}
