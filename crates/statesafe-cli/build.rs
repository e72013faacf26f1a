//! Start-up of the `statesafe` binary on Linux: it is started once per shell
//! command, so its start-up is part of every update (docs/cli.md, Performance).
//!
//! - **Position-dependent.** As a PIE, the dynamic loader had to apply about 20,000
//!   relative relocations at each start, writing to some 90 pages of the binary's
//!   data (one copy-on-write page fault each): 0.6 ms of a 1 KiB `statesafe update`.
//!   A position-dependent executable has those addresses fixed at link time. What it
//!   gives up is address randomisation of the executable's own image (heap and stack
//!   stay randomised), as Go binaries do by default.
//! - **Statically linked** (glibc targets): no dynamic loader, no shared libraries to
//!   find, map and relocate at each start: 0.4 ms less on a hello world here (1.2 to
//!   0.8 ms). Rust's `crt-static` does this, but as a flag for the whole build it
//!   would also apply to proc-macros, which cannot be static; so the static archives
//!   are offered to this binary's link alone, under the names std asks for (the
//!   unwinder `libgcc_eh.a` as `libgcc_s`, as `gcc -static-libgcc` does). statesafe
//!   uses nothing that needs glibc's dynamic loading at run time (no name service
//!   lookups: user names come from reading `/etc/passwd`; no `dlopen`).
//!
//! Set `STATESAFE_PIE=1` when building to get an ordinary dynamically linked PIE.
//! Anything missing (a C compiler without `libgcc_eh.a`, no `libc.a`) also falls
//! back to dynamic linking, non-PIE.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STATESAFE_PIE");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let pie = std::env::var("STATESAFE_PIE").is_ok_and(|v| v == "1");
    if os != "linux" || pie {
        return;
    }
    println!("cargo:rustc-link-arg-bin=statesafe=-no-pie");
    if env != "gnu" {
        return;
    }
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("static");
    if offer_static_archives(&dir).is_some() {
        // `-L` applies to every `-l` wherever it stands, so it can come last, and as a
        // link argument of this binary only: the crate's test binaries stay dynamic.
        println!("cargo:rustc-link-arg-bin=statesafe=-L{}", dir.display());
        println!("cargo:rustc-link-arg-bin=statesafe=-static");
    }
}

/// Puts the static archive of every library std links into `dir`, under the name it
/// is linked by; `None` (and nothing usable) if one is missing.
fn offer_static_archives(dir: &Path) -> Option<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).ok()?;
    let wanted = [
        ("libgcc_s.a", "libgcc_eh.a"),
        ("libc.a", "libc.a"),
        ("libm.a", "libm.a"),
        ("libpthread.a", "libpthread.a"),
        ("librt.a", "librt.a"),
        ("libdl.a", "libdl.a"),
        ("libutil.a", "libutil.a"),
    ];
    for (name, archive) in wanted {
        let found = compiler_file(archive)?;
        std::os::unix::fs::symlink(&found, dir.join(name)).ok()?;
    }
    Some(())
}

/// Where the C compiler finds `name`, if it does.
fn compiler_file(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without it, the compiler prints the bare name back.
    path.is_absolute().then_some(path).filter(|p| p.is_file())
}
