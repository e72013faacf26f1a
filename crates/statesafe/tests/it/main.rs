//! The library's integration tests: one binary, one module per concern.
//!
//! Multi-process tests re-run this binary as the child (see [`common::ChildCmd`]); the
//! child "tests" do nothing unless started in their role. Every test directory comes
//! from [`common::test_dir`], which honours `STATESAFE_TEST_DIR`.
//!
//! Tests that need root (mounts, chown, another user) or `strace` print
//! `SKIPPED: <test>: <reason>` where they cannot run, and check nothing.
//!
//! Each defence is shown to matter by a deliberately broken build: with any one of the
//! library's mutations (skip-file-fsync, skip-dir-fsync, no-temp-cleanup,
//! fixed-temp-name, no-lock), `RUSTFLAGS='--cfg statesafe_mutation="NAME"' cargo nextest
//! run -p statesafe --test it` must fail at least one test here.
//!
//! Knobs: `STATESAFE_TEST_DIR` (where test directories go), `STATESAFE_IT_SEED` (repeat
//! a random run), `STATESAFE_IT_KILLS` (more SIGKILL rounds, default 200).

mod common;
mod correctness;
mod deleted;
mod documents;
mod durability;
mod faults;
mod filesystems;
mod fix17;
mod integrity;
mod journal;
mod journal_attacks;
mod journal_cache;
mod journal_checks;
mod journal_numbers;
mod kill;
mod lock;
mod model;
mod multiprocess;
mod nested;
mod perms;
mod red12;
mod red13;
mod red14;
mod red15;
mod red16;
mod review16;
mod review17;
mod review18;
mod review20;
mod review21;
mod review22;
mod review22b;
mod security;
mod serialized;
mod streaming;
mod symlink;
mod temps;
mod transactions;
