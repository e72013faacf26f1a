//! Medians, percentiles and human-readable units.

use std::time::Duration;

/// The `q` quantile (0..=1) of `xs` by the nearest-rank method; NaN when empty.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The median of `xs` (the mean of the two middle values for an even count).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// The order in which `n` contenders take turns in round `round`: a permutation
/// drawn afresh for each round (deterministic, seeded by the round), so no contender
/// always follows the same neighbour (for instance the naive write's dirty pages).
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut state = (round as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Seconds as a float.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A duration in seconds, shown with a unit that keeps 3 significant digits.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// A byte count with a binary unit.
pub fn fmt_bytes(b: f64) -> String {
    if b >= (1 << 20) as f64 {
        format!("{:.1} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A document size label: `1 KiB`, `16 MiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// A ratio such as `1.07x`.
pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "n/a".into()
    } else if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.2}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.9), 9.0);
        assert_eq!(quantile(&xs, 1.0), 10.0);
        assert_eq!(quantile(&xs, 0.0), 1.0);
    }

    #[test]
    fn round_orders_are_permutations_that_vary() {
        let mut seen = std::collections::HashSet::new();
        for round in 0..20 {
            let mut o = round_order(round, 10);
            seen.insert(o.clone());
            o.sort_unstable();
            assert_eq!(o, (0..10).collect::<Vec<_>>());
        }
        assert!(seen.len() > 15);
    }

    #[test]
    fn units() {
        assert_eq!(fmt_secs(0.0015), "1.500 ms");
        assert_eq!(fmt_secs(0.0000123), "12.3 µs");
        assert_eq!(size_label(16 << 20), "16 MiB");
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(fmt_bytes(3.0 * 1048576.0), "3.0 MiB");
    }
}
