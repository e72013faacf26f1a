//! Section 7: contended increments on PostgreSQL, statesafe against a bare
//! hand-written transaction (`BEGIN; SELECT … FOR UPDATE; UPDATE; COMMIT`), on a
//! throwaway local server started like the tests' (Debian's `postgresql` package).

use std::fmt::Write as _;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use postgres::types::Type;
use serde_json::{Value, json};
use statesafe::Store;

use crate::Result;
use crate::stats::fmt_ratio;

#[path = "../../statesafe/tests/postgres/cluster.rs"]
#[allow(dead_code, unreachable_pub, clippy::all)]
mod cluster;

/// The two contenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// `Store::update` on a PostgreSQL URL: checksum, backup, history, validation.
    Statesafe,
    /// The bare transaction, one statement per round trip.
    Bare,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Statesafe => "statesafe",
            Who::Bare => "bare transaction",
        }
    }
}

/// One client count's figures: increments per second, one per round.
#[derive(Debug, Clone)]
pub struct Cell {
    pub clients: usize,
    pub who: Who,
    pub rates: Vec<f64>,
    /// WAL bytes written per increment, one per round (`pg_stat_wal`).
    pub wal_bytes: Vec<f64>,
    /// WAL flushes (`wal_sync`) per increment, one per round.
    pub wal_syncs: Vec<f64>,
}

impl Cell {
    /// The median of the rounds.
    pub fn rate(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }
}

/// The server's version and the settings both contenders ran with.
#[derive(Debug, Clone)]
pub struct Server {
    pub version: String,
    pub synchronous_commit: String,
    pub fsync: String,
}

/// The section's results, or why it could not run.
#[derive(Debug, Clone)]
pub enum PgResult {
    Done {
        cells: Vec<Cell>,
        window: Duration,
        rounds: usize,
        server: Server,
    },
    Skipped(String),
}

impl PgResult {
    fn cell(cells: &[Cell], who: Who, clients: usize) -> Option<&Cell> {
        cells.iter().find(|c| c.who == who && c.clients == clients)
    }

    /// statesafe's throughput over the bare transaction's, by client count.
    pub fn ratios(&self) -> Vec<(usize, f64)> {
        let PgResult::Done { cells, .. } = self else {
            return Vec::new();
        };
        let mut clients: Vec<usize> = cells.iter().map(|c| c.clients).collect();
        clients.sort_unstable();
        clients.dedup();
        clients
            .into_iter()
            .filter_map(|n| {
                Some((
                    n,
                    Self::cell(cells, Who::Statesafe, n)?.rate()
                        / Self::cell(cells, Who::Bare, n)?.rate(),
                ))
            })
            .collect()
    }
}

/// Runs `rounds` rounds; in each, every client count, statesafe and the bare
/// transaction side by side (which goes first alternates), each for `window`.
pub fn run(clients: &[usize], window: Duration, rounds: usize) -> Result<PgResult> {
    let Some(pg) = cluster::cluster() else {
        return Ok(PgResult::Skipped(
            "no PostgreSQL server could be started (see the SKIPPED line above)".into(),
        ));
    };
    let mut admin = pg.client();
    let show = |c: &mut postgres::Client, what: &str| -> Result<String> {
        Ok(c.query_one(&format!("SHOW {what}"), &[])?.get(0))
    };
    if let Ok(mode) = std::env::var("STATESAFE_BENCH_PG_SYNCHRONOUS_COMMIT") {
        // Both contenders connect after this, so both get it.
        admin.batch_execute(&format!(
            "ALTER DATABASE {} SET synchronous_commit = '{}'",
            cluster::DATABASE,
            mode.replace('\'', "")
        ))?;
        admin = pg.client();
    }
    // statesafe raises `off` and `local` to `on` in each of its transactions; the bare
    // transaction runs with the same setting (`SET LOCAL`, in its `BEGIN`'s round trip).
    let database = show(&mut admin, "synchronous_commit")?;
    let pinned = match database.as_str() {
        "off" | "local" => "on".to_string(),
        other => other.to_string(),
    };
    let server = Server {
        version: show(&mut admin, "server_version")?,
        synchronous_commit: if pinned == database {
            pinned.clone()
        } else {
            format!("{pinned}` (the database's `{database}`, raised per transaction)")
        },
        fsync: show(&mut admin, "fsync")?,
    };
    let url = setup(&mut admin, &pg.url_with("counter", URL_OPTIONS))?;
    let mut cells: Vec<Cell> = Vec::new();
    let (mut ours, mut bare) = (0u64, 0u64);
    for round in 0..rounds {
        for &n in clients {
            let order = if round % 2 == 0 {
                [Who::Statesafe, Who::Bare]
            } else {
                [Who::Bare, Who::Statesafe]
            };
            for who in order {
                let before = wal(&mut admin)?;
                let (ops, elapsed) = contend(who, n, window, &url, &pg.base, &pinned)?;
                // The clients' backends report their WAL statistics as they exit.
                std::thread::sleep(Duration::from_millis(300));
                let after = wal(&mut admin)?;
                let per_op = |a: f64, b: f64| (a - b) / ops.max(1) as f64;
                let (bytes, syncs) = (per_op(after.0, before.0), per_op(after.1, before.1));
                match who {
                    Who::Statesafe => ours += ops,
                    Who::Bare => bare += ops,
                }
                let rate = ops as f64 / elapsed.as_secs_f64();
                match cells.iter_mut().find(|c| c.who == who && c.clients == n) {
                    Some(c) => {
                        c.rates.push(rate);
                        c.wal_bytes.push(bytes);
                        c.wal_syncs.push(syncs);
                    }
                    None => cells.push(Cell {
                        clients: n,
                        who,
                        rates: vec![rate],
                        wal_bytes: vec![bytes],
                        wal_syncs: vec![syncs],
                    }),
                }
            }
        }
    }
    // Nothing lost on either side.
    let store: Store = Store::options().open_url(&url)?;
    let n = store.load()?.state["n"].as_u64();
    if n != Some(ours) {
        return Err(format!("statesafe's counter is {n:?} after {ours} increments").into());
    }
    let doc: String = admin
        .query_one("SELECT doc FROM bench_bare WHERE id = 1", &[])?
        .get(0);
    let n = serde_json::from_str::<Value>(&doc)?["n"].as_u64();
    if n != Some(bare) {
        return Err(format!("the bare counter is {n:?} after {bare} increments").into());
    }
    Ok(PgResult::Done {
        cells,
        window,
        rounds,
        server,
    })
}

/// The state's URL options: its own tables, and the same transport as the bare
/// transaction's (plain TCP: the tests' server also offers TLS, which the URL's
/// default `sslmode=prefer` would take, and the bare client, `NoTls`, does not).
const URL_OPTIONS: &str = "table=bench&sslmode=disable";

/// Makes both contenders' tables afresh, each counter at 0; the state's URL.
fn setup(admin: &mut postgres::Client, url: &str) -> Result<String> {
    admin.batch_execute(
        "DROP TABLE IF EXISTS bench_bare;
         CREATE TABLE bench_bare (id int PRIMARY KEY, doc text NOT NULL);
         INSERT INTO bench_bare VALUES (1, '{\"n\": 0}');
         DROP TABLE IF EXISTS bench, bench_backups, bench_history, bench_quarantine",
    )?;
    let store: Store = Store::options().open_url(url)?;
    store.create(json!({"n": 0}))?;
    drop(store);
    Ok(url.to_string())
}

/// `child pg`: one contender (or both, alternating) alone on the server at `base`.
pub fn child(base: &str, who: &str, clients: usize, window: Duration, rounds: usize) -> Result<()> {
    let mut admin = postgres::Client::connect(base, postgres::NoTls)?;
    let extra = std::env::var("STATESAFE_BENCH_PG_URL_EXTRA").unwrap_or_default();
    let url = setup(
        &mut admin,
        &format!("{base}?state=counter&{URL_OPTIONS}{extra}"),
    )?;
    let pinned = match admin
        .query_one("SHOW synchronous_commit", &[])?
        .get::<_, String>(0)
    {
        s if s == "off" || s == "local" => "on".to_string(),
        s => s,
    };
    let order: &[Who] = match who {
        "statesafe" => &[Who::Statesafe],
        "bare" => &[Who::Bare],
        "both" => &[Who::Statesafe, Who::Bare],
        other => return Err(format!("--who {other}: statesafe, bare or both").into()),
    };
    for round in 0..rounds {
        for &w in order {
            let (ops, elapsed) = contend(w, clients, window, &url, base, &pinned)?;
            println!(
                "round {round} {}: {clients} clients, {ops} increments, {:.0}/s",
                w.label(),
                ops as f64 / elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// The server's WAL bytes and flushes so far.
fn wal(admin: &mut postgres::Client) -> Result<(f64, f64)> {
    let row = admin.query_one(
        "SELECT wal_bytes::float8, wal_sync::float8 FROM pg_stat_wal",
        &[],
    )?;
    Ok((row.get(0), row.get(1)))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `n` clients, each on its own connection, increment for `window`; the increments
/// done and the time they took. The bare transaction runs with `synchronous_commit`
/// set to `pinned`, as statesafe's do.
fn contend(
    who: Who,
    n: usize,
    window: Duration,
    url: &str,
    base: &str,
    pinned: &str,
) -> Result<(u64, Duration)> {
    let begin = format!("BEGIN; SET LOCAL synchronous_commit = '{pinned}'");
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let (url, base, begin) = (url.to_string(), base.to_string(), begin.clone());
            std::thread::spawn(move || -> Result<u64> {
                let mut ops = 0u64;
                match who {
                    Who::Statesafe => {
                        let store: Store = Store::options()
                            .lock_timeout(Duration::from_secs(120))
                            .open_url(&url)?;
                        store.load()?;
                        barrier.wait();
                        let end = Instant::now() + window;
                        while Instant::now() < end {
                            store.update(|s| s["n"] = (s["n"].as_u64().unwrap_or(0) + 1).into())?;
                            ops += 1;
                        }
                    }
                    Who::Bare => {
                        let mut c = postgres::Client::connect(&base, postgres::NoTls)?;
                        barrier.wait();
                        let end = Instant::now() + window;
                        while Instant::now() < end {
                            c.batch_execute(&begin)?;
                            let doc: String = c
                                .query_typed_one(
                                    "SELECT doc FROM bench_bare WHERE id = $1 FOR UPDATE",
                                    &[(&1i32, Type::INT4)],
                                )?
                                .get(0);
                            let mut v: Value = serde_json::from_str(&doc)?;
                            v["n"] = (v["n"].as_u64().unwrap_or(0) + 1).into();
                            let doc = serde_json::to_string(&v)?;
                            c.execute_typed(
                                "UPDATE bench_bare SET doc = $1 WHERE id = $2",
                                &[(&doc, Type::TEXT), (&1i32, Type::INT4)],
                            )?;
                            c.batch_execute("COMMIT")?;
                            ops += 1;
                        }
                    }
                }
                Ok(ops)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| "a benchmark thread panicked")??;
    }
    Ok((total, start.elapsed()))
}

/// The report's section.
pub fn section(o: &mut String, r: &PgResult) {
    let _ = writeln!(
        o,
        "## 7. PostgreSQL: contended increments, statesafe vs a bare transaction\n"
    );
    let PgResult::Done {
        cells,
        window,
        rounds,
        server:
            Server {
                version,
                synchronous_commit,
                fsync,
            },
    } = r
    else {
        if let PgResult::Skipped(why) = r {
            let _ = writeln!(o, "SKIPPED: {why}\n");
        }
        return;
    };
    let _ = writeln!(
        o,
        "N threads, each with its own connection, increment one counter on a throwaway \
         local PostgreSQL {version} server (plain TCP on 127.0.0.1, no TLS, `synchronous_commit = \
         {synchronous_commit}`, `fsync = {fsync}`, the same for both) for {:.1} s; \
         median of {rounds} rounds (which goes first alternates), lowest and highest \
         round in brackets. Both counters are checked afterwards: no increment lost.\n\n\
         - **statesafe**: `Store::update` on `postgres://…?state=counter&table=bench&sslmode=disable` \
         (row lock, checksum verified, the outgoing version kept as a backup row, a \
         history row with a JSON Patch, the prunes), two round trips.\n\
         - **bare transaction**: `BEGIN; SET LOCAL synchronous_commit`; `SELECT doc … \
         FOR UPDATE`; parse, increment, serialize; `UPDATE … SET doc`; `COMMIT`: four \
         round trips, unnamed statements.\n",
        window.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "| clients | {} | {} | statesafe / bare | WAL bytes per increment (statesafe, bare) | WAL flushes per increment (statesafe, bare) |\n|---:|---:|---:|---:|---:|---:|",
        Who::Statesafe.label(),
        Who::Bare.label()
    );
    for (n, ratio) in r.ratios() {
        let _ = write!(o, "| {n} |");
        for who in [Who::Statesafe, Who::Bare] {
            if let Some(c) = PgResult::cell(cells, who, n) {
                let lo = c.rates.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = c.rates.iter().copied().fold(0.0, f64::max);
                let _ = write!(o, " **{:.0}**/s ({lo:.0}–{hi:.0}) |", c.rate());
            }
        }
        let _ = write!(o, " {} |", fmt_ratio(ratio));
        let both = |f: fn(&Cell) -> f64| {
            [Who::Statesafe, Who::Bare].map(|who| PgResult::cell(cells, who, n).map_or(f64::NAN, f))
        };
        let [ours, bare] = both(|c| median(&c.wal_bytes));
        let _ = write!(o, " {ours:.0}, {bare:.0} |");
        let [ours, bare] = both(|c| median(&c.wal_syncs));
        let _ = writeln!(o, " {ours:.2}, {bare:.2} |");
    }
    let _ = writeln!(o);
}
