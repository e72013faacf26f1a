//! Links the `statesafe` binary as a position-dependent executable on Linux.
//!
//! `statesafe` is started once per shell command, so its start-up is part of every
//! update. As a PIE, the dynamic loader had to apply about 20,000 relative
//! relocations at each start, writing to some 90 pages of the binary's data (one
//! copy-on-write page fault each): 0.6 ms of a 1 KiB `statesafe update` that takes
//! 2.8 ms in all (hyperfine, docs/cli.md). A position-dependent executable has those
//! addresses fixed at link time. What it gives up is address randomisation of the
//! executable's own image (libraries, heap and stack stay randomised), as Go binaries
//! do by default. Set `STATESAFE_PIE=1` when building to keep a PIE.

fn main() {
    println!("cargo:rerun-if-env-changed=STATESAFE_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let pie = std::env::var("STATESAFE_PIE").is_ok_and(|v| v == "1");
    if os == "linux" && !pie {
        println!("cargo:rustc-link-arg-bin=statesafe=-no-pie");
    }
}
