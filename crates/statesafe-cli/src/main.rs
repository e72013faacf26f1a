//! The `statesafe` command (placeholder until the CLI lands in this series).
fn main() {}
