//! Counting checked crash states and violations, and the summary line of a layer.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many violations are printed in full per layer.
const SHOWN: usize = 12;

/// The results of one layer.
#[derive(Debug, Default)]
pub struct Tally {
    checked: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl Tally {
    /// Records one checked state and what was wrong with it.
    pub fn record(&self, what: &str, problems: Vec<String>) {
        let n = self.checked.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(250) {
            eprintln!("  ... {n} states checked");
        }
        if !problems.is_empty() {
            let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
            v.push(format!("{what}: {}", problems.join("; ")));
        }
    }

    pub fn checked(&self) -> u64 {
        self.checked.load(Ordering::Relaxed)
    }

    pub fn violations(&self) -> usize {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Prints the violations (the first few) and the summary line.
    pub fn print(&self, layer: &str, what: &str) {
        let v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        let shown = std::env::var("TORTURE_SHOW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(SHOWN);
        for line in v.iter().take(shown) {
            println!("  VIOLATION {layer}: {line}");
        }
        if v.len() > shown {
            println!("  ... and {} more violations", v.len() - shown);
        }
        println!(
            "{layer}: {what} checked: {}, violations: {}",
            self.checked(),
            v.len()
        );
    }
}
