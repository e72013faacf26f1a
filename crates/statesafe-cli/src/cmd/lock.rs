//! `statesafe lock FILE -- CMD ARGS...`: hold the writers' lock while CMD runs.

use std::process::Command;

use serde_json::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::SignalsInfo;
use signal_hook::iterator::exfiltrator::WithOrigin;
use statesafe::Store;

use super::exec::{shell_status, spawn_error};
use crate::cli::LockArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// The signals passed on to CMD: those that ask a program to end.
const FORWARDED: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT];

/// Takes the same lock every statesafe writer takes (for a PostgreSQL URL: the
/// state's lock row, which every writer holds while it writes), runs CMD with
/// inherited stdio and a pass that lets CMD's own writers through (one at a time),
/// releases the lock when CMD ends, and returns CMD's status; or, if the lock file was
/// removed while CMD ran (so other writers may have got in), that error (exit 5).
///
/// SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to this process are passed on to CMD, and
/// the lock is released only once CMD has ended: a CMD still running after the lock
/// is gone could write beside the next writer. (A terminal's Ctrl-C reaches CMD
/// directly, from the kernel, so that one is not sent twice.)
pub fn run(args: LockArgs, _out: &Output) -> Result<u8> {
    let url = args.file.to_str().is_some_and(statesafe::postgres::is_url);
    let mut options = Store::<Value>::options();
    if let Some(timeout) = args.timeout {
        options = options.lock_timeout(timeout);
    }
    let store = super::open_at(options, &args.file)?;
    // The lock lives in the sidecar, which is never deleted: a file statesafe has
    // never seen gets none just for being named here.
    let missing = if url {
        store.generation()? == 0
    } else {
        !store.real_path().exists() && !store.sidecar_path().exists()
    };
    if missing {
        return Err(statesafe::Error::NotFound {
            path: args.file.clone(),
        }
        .into());
    }
    let guard = store.lock("lock")?;
    // Caught from before CMD starts, so none can end this process while CMD runs.
    let mut signals = SignalsInfo::<WithOrigin>::new(FORWARDED)
        .map_err(|e| CliError::io("set up signal forwarding to the command", e))?;
    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("STATESAFE_FILE", &args.file);
    // CMD's own writers are let through (lock.rs `PASS_ENV`; docs/remote.md).
    if let Some((name, value)) = guard.nested_env() {
        command.env(name, value);
    }
    // Killed with SIGKILL (nothing is passed on then), this process takes CMD with it
    // (Linux): CMD's reads were made under the lock that dies with us (review22).
    crate::sys::die_with_parent(&mut command);
    let child = command
        .spawn()
        .map_err(|e| spawn_error(&args.command[0], e));
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            drop(guard);
            return Err(e);
        }
    };
    let pid = rustix::process::Pid::from_child(&child);
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for origin in signals.forever() {
            // From another process (`kill`, a service manager): pass it on. From the
            // kernel (a terminal's Ctrl-C): CMD, in the same process group, has it.
            if origin.process.is_none() {
                continue;
            }
            if let Some(signal) = rustix::process::Signal::from_named_raw(origin.signal) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    });
    let status = child.wait();
    handle.close();
    let _ = forwarder.join();
    let held = guard.check();
    drop(guard);
    let status = status.map_err(|e| CliError::io("wait for the command", e))?;
    held?;
    Ok(shell_status(status))
}
