//! Start-up of the `statesafe` binary on Linux: it is started once per shell
//! command, so its start-up is part of every update.
//!
//! - **Position-dependent.** As a PIE, the dynamic loader had to apply about 20,000
//!   relative relocations at each start, writing to some 90 pages of the binary's
//!   data (one copy-on-write page fault each): 0.6 ms of a 1 KiB `statesafe update`
//!   that takes 2.8 ms in all (hyperfine, docs/cli.md). A position-dependent
//!   executable has those addresses fixed at link time. What it gives up is address
//!   randomisation of the executable's own image (libraries, heap and stack stay
//!   randomised), as Go binaries do by default.
//! - **libgcc linked in.** Rust's std links the unwinder from `libgcc_s.so`, one more
//!   shared library to find, map and relocate at every start (0.1 ms on a hello
//!   world here). The static unwinder, `libgcc_eh.a`, is what `gcc -static-libgcc`
//!   and Rust's own `crt-static` builds use; it is offered to the linker under the
//!   name std asks for.
//!
//! Set `STATESAFE_PIE=1` when building to keep a PIE and the shared libgcc.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STATESAFE_PIE");
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let pie = std::env::var("STATESAFE_PIE").is_ok_and(|v| v == "1");
    if os != "linux" || pie {
        return;
    }
    println!("cargo:rustc-link-arg-bin=statesafe=-no-pie");
    if env == "gnu"
        && let Some(eh) = static_unwinder()
    {
        let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join("static-libgcc");
        let _ = std::fs::create_dir_all(&dir);
        let alias = dir.join("libgcc_s.a");
        let _ = std::fs::remove_file(&alias);
        if std::fs::copy(&eh, &alias).is_ok() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
}

/// The C compiler's `libgcc_eh.a`, if it has one.
fn static_unwinder() -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without it, the compiler prints the bare name back.
    path.is_absolute().then_some(path).filter(|p| p.is_file())
}
