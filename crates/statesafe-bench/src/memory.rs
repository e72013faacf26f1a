//! Section 4: peak memory of one update, each in a fresh child process.

use std::path::Path;
use std::process::Command;

use clap::ValueEnum;

use crate::Result;
use crate::contenders::{self, Kind};
use crate::doc::{self, Doc, Template};
use crate::stats::median;

/// The contenders of this section.
pub const KINDS: [Kind; 4] = [
    Kind::Floor,
    Kind::StatesafeLean,
    Kind::StatesafeTyped,
    Kind::StatesafeValue,
];

/// One contender at one size.
#[derive(Debug, Clone)]
pub struct MemRow {
    /// The contender.
    pub kind: Kind,
    /// Peak resident size minus the resident size just before the update, per run.
    pub deltas: Vec<f64>,
}

impl MemRow {
    /// Median extra memory (bytes).
    pub fn delta(&self) -> f64 {
        median(&self.deltas)
    }
}

/// All contenders at one size.
#[derive(Debug, Clone)]
pub struct MemResult {
    /// The asked size.
    pub size: usize,
    /// The document's size in bytes.
    pub bytes: usize,
    /// One row per contender.
    pub rows: Vec<MemRow>,
}

impl MemResult {
    /// The row of `kind`.
    pub fn row(&self, kind: Kind) -> &MemRow {
        self.rows
            .iter()
            .find(|r| r.kind == kind)
            .expect("invariant: every contender has a row")
    }
}

fn one(kind: Kind, file: &Path) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args(["child", "mem", "--kind"])
        .arg(kind.to_possible_value().expect("invariant").get_name())
        .arg("--file")
        .arg(file)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        out.status.success(),
    ) {
        (Some("mem"), Some(base), Some(peak), true) => {
            Ok(peak.parse::<f64>()? - base.parse::<f64>()?)
        }
        _ => Err(format!(
            "memory child failed ({}): {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into()),
    }
}

/// Measures each contender `runs` times at `size`.
pub fn run(dir: &Path, size: usize, runs: usize) -> Result<MemResult> {
    let document = doc::make(size);
    let bytes = doc::encode(&document).len();
    let mut rows = Vec::new();
    let mut files = Vec::new();
    for kind in KINDS {
        let sub = dir.join(format!("memory-{size}")).join(format!("{kind:?}"));
        std::fs::create_dir_all(&sub)?;
        let path = sub.join("state.json");
        if kind == Kind::Floor {
            let template = Template::new(&document);
            contenders::durable_replace(
                &std::fs::File::open(&sub)?,
                &sub.join(".floor.tmp"),
                &path,
                &template.bytes,
            )?;
        } else {
            statesafe::Store::<Doc>::open(&path)?.replace(document.clone())?;
        }
        files.push(path);
        rows.push(MemRow {
            kind,
            deltas: Vec::new(),
        });
    }
    drop(document);
    for _ in 0..runs {
        for (i, kind) in KINDS.into_iter().enumerate() {
            rows[i].deltas.push(one(kind, &files[i])?);
        }
    }
    Ok(MemResult { size, bytes, rows })
}
