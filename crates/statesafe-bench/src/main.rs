//! Benchmarks of statesafe against the bare system-call floor and its peers (being written).
fn main() {}
