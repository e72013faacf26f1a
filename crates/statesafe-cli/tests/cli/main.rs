//! Integration tests of the `statesafe` binary: one test binary, one module per
//! subcommand. Each test runs the real binary in a fresh directory and pins its
//! stdout, stderr and exit code with an insta snapshot (temporary paths, pids, hosts
//! and times normalised), and checks that failures leave the state file's bytes as
//! they were.

mod common;

mod concurrency;
mod del;
mod deleted;
mod documents;
mod edit;
mod exec;
mod filesystem;
mod get;
mod init;
mod integrity;
mod journal;
mod large;
mod lock;
mod meta;
mod postgres;
mod reads;
mod red13;
mod red14;
mod review19;
mod review19c;
mod review22;
mod review22b;
mod scripts;
mod set;
mod torture;
mod update;
mod usage;
mod write;
