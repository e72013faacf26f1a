//! `statesafe lock FILE -- CMD ARGS...`: hold the writers' lock while CMD runs.

use std::process::Command;

use serde_json::Value;
use statesafe::Store;

use super::exec::{shell_status, spawn_error};
use crate::cli::LockArgs;
use crate::error::Result;
use crate::output::Output;

/// Takes the same lock every statesafe writer takes, runs CMD with inherited stdio,
/// releases the lock when CMD ends, and returns CMD's status.
pub fn run(args: LockArgs, _out: &Output) -> Result<u8> {
    let store = Store::<Value>::options()
        .lock_timeout(args.timeout)
        .open(&args.file)?;
    let guard = store.lock("lock")?;
    let status = Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("STATESAFE_FILE", &args.file)
        .status()
        .map_err(|e| spawn_error(&args.command[0], e));
    drop(guard);
    let status = status?;
    Ok(shell_status(status))
}
