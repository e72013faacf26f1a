//! The library's integration tests: one binary, one module per concern.
//!
//! Multi-process tests re-run this binary as the child (see [`common::ChildCmd`]); the
//! child "tests" do nothing unless started in their role. Every test directory comes
//! from [`common::test_dir`], which honours `STATESAFE_TEST_DIR`.

mod common;
mod durability;
mod faults;
mod integrity;
mod kill;
mod lock;
mod model;
mod multiprocess;
mod perms;
mod symlink;
mod temps;
mod transactions;
